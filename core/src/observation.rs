//! The seed's observation of the system's load over one period.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::PortResult;

/// Counts over one period, as the seed defines them (its names kept):
/// arrivals (jobs submitted), services (jobs that went from queued to
/// running), finished (jobs that ended), and the mean response time in
/// seconds of the jobs that ended in the period (from submission to end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub avg_rate_of_arrival: f64,
    pub avg_rate_of_service: f64,
    pub avg_rate_of_finished: f64,
    pub avg_response_time: f64,
    /// End of the period, in milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// Where the frontend reads the latest observations from.
#[async_trait]
pub trait ObservationFeed: Send + Sync {
    /// Up to `n` observations, newest first.
    async fn recent(&self, n: usize) -> PortResult<Vec<Observation>>;
}

/// Where the autoscaler publishes its observations.
#[async_trait]
pub trait ObservationSink: Send + Sync {
    async fn publish(&self, observation: &Observation) -> PortResult<()>;
}
