//! The `kumulus` command: `kumulus up` (everything in one process on
//! embedded backends) and its helpers. The services themselves live in
//! their own crates: `kumulus-frontend`, `kumulus-worker`,
//! `kumulus-autoscaler`, over the ports of `kumulus-core`.

pub mod cli;
pub mod cmd;
pub mod example;
pub mod services;
pub mod up;
