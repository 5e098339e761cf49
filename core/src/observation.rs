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

/// One of the autoscaler's decisions and what it saw, as the web UI's
/// autoscaler page shows it (`GET /api/autoscaler`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScalingDecision {
    /// When, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Workers the platform ran (or was starting).
    pub workers: u32,
    /// Workers decided on.
    pub desired: u32,
    /// What the policy's own rule asked for, before stabilization and bounds.
    pub recommended: u32,
    /// Jobs waiting in the queue.
    pub waiting: u64,
    /// Jobs running.
    pub running: u64,
    /// Jobs submitted over the last period.
    pub arrivals: u64,
    /// Partitions of the jobs topic (0 for `kumulus up`'s single queue).
    pub partitions: u32,
    /// Which rule set the count (`policy`, `hold`, `idle`, `woken`,
    /// `min_workers`, `max_workers`, `budget` or `partitions`).
    pub rule: String,
    /// Why, in words.
    pub reason: String,
}

/// How many decisions the frontends keep for the autoscaler page: an hour
/// at the default period of 10 s.
pub const DECISIONS_KEPT: usize = 360;

/// Where the frontend reads the latest observations from.
#[async_trait]
pub trait ObservationFeed: Send + Sync {
    /// Up to `n` observations, newest first.
    async fn recent(&self, n: usize) -> PortResult<Vec<Observation>>;
    /// Up to `n` of the autoscaler's decisions, newest first.
    async fn decisions(&self, n: usize) -> PortResult<Vec<ScalingDecision>>;
}

/// Where the autoscaler publishes its observations and decisions.
#[async_trait]
pub trait ObservationSink: Send + Sync {
    async fn publish(&self, observation: &Observation) -> PortResult<()>;
    async fn decided(&self, decision: &ScalingDecision) -> PortResult<()>;
}
