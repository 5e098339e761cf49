//! The client-side subcommands, a file each: `kumulus sim` (the simulator),
//! `kumulus load` (a load generator against a running Kumulus) and
//! `kumulus trace` (a store's job history as a trace). The services
//! (`up`, `frontend`, `worker`, `autoscaler`) are in `up.rs` and
//! `services.rs`.

pub mod load;
pub mod sim;
pub mod trace;
