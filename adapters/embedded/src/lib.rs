//! Embedded backends for `kumulus up`: everything on one machine, no servers.
//!
//! - [`sqlite::Sqlite`]: job records and the job queue in one SQLite file;
//!   jobs are claimed atomically, so a restart loses nothing and no job runs
//!   twice at once.
//! - [`bus`] - in-process status and cancellation buses.
//! - [`blobs::LocalBlobs`]: job files in a local folder.
//! - [`users::BuiltinUsers`]: users from the configuration, tokens signed by
//!   the process.

pub mod blobs;
pub mod bus;
pub mod sqlite;
pub mod users;
