//! The autoscaler's Prometheus metrics (`kumulus_` prefix).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub jobs_submitted: IntCounter,
    pub jobs_started: IntCounter,
    pub jobs_finished: IntCounterVec,
    pub job_wait: Histogram,
    pub job_run: Histogram,
    pub queue_waiting: IntGauge,
    pub consumer_lag: IntGauge,
    pub kafka_partitions: IntGauge,
    pub partitions_stuck: IntGauge,
    pub workers_current: IntGauge,
    pub workers_desired: IntGauge,
    pub workers_requested: IntGauge,
    pub scale_decisions: IntCounterVec,
    pub arrival_rate: Gauge,
    pub worker_startup: Histogram,
    pub rebalance_pause: Histogram,
    pub policy_startup: Gauge,
    pub policy_rebalance: Gauge,
    pub last_decision: Gauge,
}

const BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::new_in(Registry::new())
    }

    /// The metrics, registered in `registry` (to share one `/metrics` with
    /// the API in `kumulus up`).
    /// `kumulus_workers_current` is exported only where the platform counts
    /// the workers that run: a driver that only knows what it asked for
    /// must not pass that off as the current count.
    pub fn count_running_workers(&self) -> Result<(), prometheus::Error> {
        self.registry
            .register(Box::new(self.workers_current.clone()))
    }

    pub fn new_in(registry: Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let hist = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
        };
        let m = Self {
            jobs_submitted: counter("kumulus_jobs_submitted_total", "Jobs accepted")?,
            jobs_started: counter("kumulus_jobs_started_total", "Jobs a worker started")?,
            jobs_finished: IntCounterVec::new(
                Opts::new(
                    "kumulus_jobs_finished_total",
                    "Jobs that ended, by final state",
                ),
                &["state"],
            )?,
            job_wait: hist("kumulus_job_wait_seconds", "Time from submission to start")?,
            job_run: hist("kumulus_job_run_seconds", "Time a job ran")?,
            queue_waiting: gauge("kumulus_queue_waiting", "Jobs waiting to start")?,
            consumer_lag: gauge(
                "kumulus_consumer_lag",
                "Kafka lag of the workers' group on the jobs topic",
            )?,
            kafka_partitions: gauge("kumulus_kafka_partitions", "Partitions of the jobs topic")?,
            partitions_stuck: gauge(
                "kumulus_partitions_stuck",
                "Partitions of the jobs topic whose lag waits while their committed offset stands still",
            )?,
            workers_current: gauge(
                "kumulus_workers_current",
                "Workers running now (only where the platform driver can see them)",
            )?,
            workers_requested: gauge(
                "kumulus_workers_requested",
                "Workers last asked of the platform",
            )?,
            workers_desired: gauge("kumulus_workers_desired", "Workers the policy wants")?,
            scale_decisions: IntCounterVec::new(
                Opts::new(
                    "kumulus_scale_decisions_total",
                    "Scaling decisions, by direction and by the rule that set the count",
                ),
                &["direction", "rule"],
            )?,
            arrival_rate: Gauge::new(
                "kumulus_arrival_rate",
                "Jobs arriving per second (smoothed)",
            )?,
            worker_startup: hist(
                "kumulus_worker_startup_seconds",
                "Time from asking the platform for a worker to that worker's first job",
            )?,
            rebalance_pause: hist(
                "kumulus_rebalance_pause_seconds",
                "How long a rebalance kept a worker from consuming (partitions revoked to assigned)",
            )?,
            policy_startup: Gauge::new(
                "kumulus_policy_startup_seconds",
                "The start-up time the policy assumes (measured or configured)",
            )?,
            policy_rebalance: Gauge::new(
                "kumulus_policy_rebalance_seconds",
                "The rebalance pause the policy assumes (measured or configured)",
            )?,
            last_decision: Gauge::new(
                "kumulus_last_decision_timestamp_seconds",
                "When the last scaling decision was taken (Unix time)",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.jobs_submitted.clone()))?;
        m.registry.register(Box::new(m.jobs_started.clone()))?;
        m.registry.register(Box::new(m.jobs_finished.clone()))?;
        m.registry.register(Box::new(m.job_wait.clone()))?;
        m.registry.register(Box::new(m.job_run.clone()))?;
        m.registry.register(Box::new(m.queue_waiting.clone()))?;
        m.registry.register(Box::new(m.consumer_lag.clone()))?;
        m.registry.register(Box::new(m.kafka_partitions.clone()))?;
        m.registry.register(Box::new(m.partitions_stuck.clone()))?;
        m.registry.register(Box::new(m.workers_requested.clone()))?;
        m.registry.register(Box::new(m.workers_desired.clone()))?;
        m.registry.register(Box::new(m.scale_decisions.clone()))?;
        m.registry.register(Box::new(m.arrival_rate.clone()))?;
        m.registry.register(Box::new(m.worker_startup.clone()))?;
        m.registry.register(Box::new(m.rebalance_pause.clone()))?;
        m.registry.register(Box::new(m.policy_startup.clone()))?;
        m.registry.register(Box::new(m.policy_rebalance.clone()))?;
        m.registry.register(Box::new(m.last_decision.clone()))?;
        Ok(m)
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
