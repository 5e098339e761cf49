//! The client-side subcommands, a file each: `kumulus sim` (the simulator),
//! `kumulus load` (a load generator against a running Kumulus),
//! `kumulus trace` (a store's job history as a trace) and `kumulus scale`
//! (an operator's worker count, through the platform driver). The services
//! (`up`, `frontend`, `worker`, `autoscaler`) are in `up.rs` and
//! `services.rs`.

pub mod load;
pub mod scale;
pub mod sim;
pub mod trace;
