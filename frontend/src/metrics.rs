//! The frontend's Prometheus metrics (`kumulus_` prefix), one registry per
//! application so that several can live in one process.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub jobs_submitted: IntCounter,
    pub jobs_cancelled: IntCounter,
    pub jobs_removed: IntCounterVec,
}

impl Metrics {
    /// `placement`: how this replica picks a job's partition
    /// (`kafka.placement`), exported for `kumulus load`'s simulation.
    pub fn new(placement: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let placement_info = IntGaugeVec::new(
            Opts::new(
                "kumulus_api_placement_info",
                "How this API replica places jobs on the jobs topic's partitions (kafka.placement; a queue without partitions has no use for it)",
            ),
            &["placement"],
        )?;
        placement_info.with_label_values(&[placement]).set(1);
        registry.register(Box::new(placement_info))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "kumulus_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "method", "status"],
        )?;
        let jobs_submitted = IntCounter::new(
            "kumulus_api_jobs_accepted_total",
            "Jobs accepted by this API replica",
        )?;
        let jobs_cancelled = IntCounter::new(
            "kumulus_api_jobs_cancelled_total",
            "Jobs cancelled by their owners",
        )?;
        let jobs_removed = IntCounterVec::new(
            Opts::new(
                "kumulus_jobs_removed_total",
                "Ended jobs removed with their files, by reason (deleted by the owner, or expired by retention.days)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(jobs_removed.clone()))?;
        registry.register(Box::new(jobs_submitted.clone()))?;
        registry.register(Box::new(jobs_cancelled.clone()))?;
        Ok(Self {
            registry,
            requests,
            jobs_submitted,
            jobs_cancelled,
            jobs_removed,
        })
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
