//! The Kumulus autoscaler (the seed's "observer", made real).
//!
//! - [`observe`] - the seed's observation of one period, a pure function of
//!   the status events seen in it, and the loop that publishes one every period.

pub mod decisions;
pub mod driver;
pub mod measure;
pub mod metrics;
pub mod observe;
pub mod plot;
pub mod policy;
pub mod scaler;
pub mod sim;
