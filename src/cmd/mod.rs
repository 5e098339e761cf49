//! The client-side subcommands, a file each:
//! - a user's, against any Kumulus over its REST API (the client crate):
//!   `login`, `submit`, `jobs`, `status`, `logs`, `download`, `cancel`,
//!   `rm` (what they share is in [`remote`]), and `completions`;
//! - `kumulus sim` (the simulator), `kumulus load` (a load generator against
//!   a running Kumulus), `kumulus trace` (a store's job history as a trace)
//!   and `kumulus scale` (an operator's worker count, through the platform
//!   driver).
//!
//! The services (`up`, `frontend`, `worker`, `autoscaler`) are in `up.rs`
//! and `services.rs`.

pub mod cancel;
pub mod completions;
pub mod download;
pub mod jobs;
pub mod load;
pub mod login;
pub mod logs;
pub mod remote;
pub mod rm;
pub mod scale;
pub mod sim;
pub mod status;
pub mod submit;
pub mod trace;
