//! The Kumulus job contract, its configuration and the ports (traits) that
//! every service talks through. Services depend on this crate, never on each
//! other; adapters (embedded, Kafka, MongoDB, S3, OpenID Connect) implement
//! the ports.

pub mod config;
pub mod event;
pub mod job;
pub mod lease;
pub mod logs;
pub mod observation;
pub mod placement;
pub mod ports;
pub mod redact;
pub mod submission;
pub mod webhook;

pub use event::{EventKind, StatusEvent};
pub use job::{JobId, JobRecord, JobState, QueuedJob};
pub use submission::{JobSpec, Limits, SubmissionError};
