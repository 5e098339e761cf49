//! The autoscaler's loop: read the status events, and every period publish
//! the seed's observation, gather what the policy needs (lag per partition,
//! partitions, workers), decide, keep the partitions ahead of the workers,
//! and have the platform driver apply the decision (retried with backoff, one
//! change in flight at a time). Every decision is logged with its reason and
//! counted.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use kumulus_core::event::{EventKind, StatusEvent};
use kumulus_core::job::JobId;
use kumulus_core::observation::ObservationSink;
use kumulus_core::ports::{PortResult, ScalingPlatform};

use crate::measure::Measurements;
use crate::metrics::Metrics;
use crate::observe::observe;
use crate::policy::{cap_to_partitions, decide, partitions_for, History, Observed, PolicyConfig};

/// What the queue tells about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSnapshot {
    pub partitions: u32,
    /// Jobs not yet committed, per partition: the jobs waiting. A worker
    /// commits past a job when it starts, so running jobs are not in it.
    pub lag: Vec<u64>,
    /// Members of the workers' group, where the broker tells.
    pub members: Option<u32>,
    /// Partitions whose work waits while their committed offset stands still.
    pub stuck: Vec<i32>,
}

/// The job queue as the autoscaler sees it.
#[async_trait]
pub trait QueueProbe: Send + Sync {
    async fn snapshot(&self) -> PortResult<QueueSnapshot>;
    /// Grows the jobs topic to `total` partitions; false if the broker cannot.
    async fn grow_partitions(&self, total: u32) -> PortResult<bool>;
}

pub struct Scaler {
    pub policy: PolicyConfig,
    pub platform: Arc<dyn ScalingPlatform>,
    pub queue: Arc<dyn QueueProbe>,
    pub observations: Arc<dyn ObservationSink>,
    pub metrics: Arc<Metrics>,
}

/// What the loop learns from the status events.
#[derive(Default)]
struct Tally {
    events: Vec<StatusEvent>,
    submitted: HashMap<JobId, chrono::DateTime<chrono::Utc>>,
    /// Running jobs, with when they started (their `started` event).
    running: HashMap<JobId, chrono::DateTime<chrono::Utc>>,
    /// The time each job that ended this period held its worker.
    held_secs: Vec<f64>,
    measured: Measurements,
}

/// How long a job held its worker: from its `started` event to its final
/// one (both sent by the one worker, so on one clock), which is what the
/// job records show and what a worker cannot spend on another job. The
/// job's own `elapsed_secs` misses the files' upload and the final event
/// after the run, about a third of a short job's time on its worker; it
/// stands in only where the start was not seen (the autoscaler started
/// mid-job).
fn time_held(
    started: Option<chrono::DateTime<chrono::Utc>>,
    finished: chrono::DateTime<chrono::Utc>,
    elapsed_secs: Option<f64>,
) -> Option<f64> {
    started
        .map(|s| (finished - s).num_milliseconds() as f64 / 1000.0)
        .filter(|h| *h >= 0.0)
        .or(elapsed_secs)
}

/// Jobs waiting (and running) whose times are kept, at most: the memory
/// this takes follows the backlog (about 50 bytes a job) and is bounded.
const REMEMBERED: usize = 100_000;

/// Gives back a map's room once a backlog that grew it has drained.
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

impl Tally {
    fn see(&mut self, ev: StatusEvent, m: &Metrics) {
        let learnt = self.measured.saw(&ev);
        if let Some(s) = learnt.startup_secs {
            m.worker_startup.observe(s);
        }
        if let Some(s) = learnt.rebalance_secs {
            m.rebalance_pause.observe(s);
        }
        match &ev.kind {
            EventKind::Queued { submitted_at } => {
                m.jobs_submitted.inc();
                if self.submitted.len() < REMEMBERED {
                    self.submitted.insert(ev.job_id, *submitted_at);
                }
            }
            EventKind::Heartbeat => {}
            EventKind::Requeued { .. } => {
                self.running.remove(&ev.job_id);
                if self.submitted.len() < REMEMBERED {
                    self.submitted.insert(ev.job_id, ev.at);
                }
            }
            EventKind::Started => {
                m.jobs_started.inc();
                if let Some(at) = self.submitted.remove(&ev.job_id) {
                    m.job_wait
                        .observe((ev.at - at).num_milliseconds().max(0) as f64 / 1000.0);
                }
                if self.running.len() < REMEMBERED {
                    self.running.insert(ev.job_id, ev.at);
                }
            }
            EventKind::Finished(o) => {
                m.jobs_finished.with_label_values(&[o.state.as_str()]).inc();
                if let Some(s) = o.elapsed_secs {
                    m.job_run.observe(s);
                }
                self.submitted.remove(&ev.job_id);
                let started = self.running.remove(&ev.job_id);
                if let Some(h) = time_held(started, ev.at, o.elapsed_secs) {
                    self.held_secs.push(h);
                }
            }
        }
        shrink(&mut self.submitted);
        shrink(&mut self.running);
        self.events.push(ev);
    }
}

impl Scaler {
    /// Runs until `shutdown`.
    pub async fn run(
        self,
        mut events: BoxStream<'static, StatusEvent>,
        shutdown: CancellationToken,
    ) {
        let period = Duration::from_secs_f64(self.policy.period_secs.max(1.0));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let counts = self.platform.counts_running();
        if counts {
            if let Err(e) = self.metrics.count_running_workers() {
                tracing::warn!(error = %e, "cannot export the current worker count");
            }
        } else {
            tracing::info!("this platform driver cannot see the workers that run: kumulus_workers_requested says what it asked for, and there is no kumulus_workers_current");
        }
        if let Ok(n) = self.platform.current().await {
            self.metrics.workers_requested.set(n as i64);
            if counts {
                self.metrics.workers_current.set(n as i64);
            }
        }
        self.metrics.policy_startup.set(self.policy.startup_secs);
        self.metrics
            .policy_rebalance
            .set(self.policy.rebalance_secs);
        let started = Instant::now();
        let mut tally = Tally::default();
        let mut history = History::default();
        let in_flight = Arc::new(AtomicBool::new(false));
        let mut can_grow = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.next() => match ev {
                    Some(ev) => tally.see(ev, &self.metrics),
                    None => return,
                },
                _ = tick.tick() => {
                    let seen = std::mem::take(&mut tally.events);
                    self.step(&seen, &mut tally, started.elapsed().as_secs_f64(), &mut history, &in_flight, &mut can_grow).await;
                }
            }
        }
    }

    async fn step(
        &self,
        seen: &[StatusEvent],
        tally: &mut Tally,
        now_secs: f64,
        history: &mut History,
        in_flight: &Arc<AtomicBool>,
        can_grow: &mut bool,
    ) {
        let observation = observe(seen, chrono::Utc::now());
        if let Err(e) = self.observations.publish(&observation).await {
            tracing::warn!(error = %e, "could not publish an observation");
        }
        let snapshot = match self.queue.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue; no decision this period");
                return;
            }
        };
        let platform_workers = match self.platform.current().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the platform's worker count; no decision this period");
                return;
            }
        };
        let running = tally.running.len() as u64;
        let service_secs = std::mem::take(&mut tally.held_secs);
        let obs = Observed {
            now_secs,
            workers: platform_workers,
            partitions: snapshot.partitions,
            waiting_per_partition: snapshot.lag.clone(),
            running,
            arrivals: observation.avg_rate_of_arrival as u64,
            services: observation.avg_rate_of_service as u64,
            finished: observation.avg_rate_of_finished as u64,
            service_secs,
        };
        // Where the policy is to use measured times, the latest measures.
        let mut policy = self.policy.clone();
        if policy.measure_startup {
            if let Some(v) = tally.measured.startup_secs() {
                policy.startup_secs = v;
            }
        }
        if policy.measure_rebalance {
            if let Some(v) = tally.measured.rebalance_secs() {
                policy.rebalance_secs = v;
            }
        }
        let mut decision = decide(&policy, history, &obs);
        let capped = cap_to_partitions(decision.desired, snapshot.partitions, *can_grow);
        if capped < decision.desired {
            decision.reason = format!(
                "{}; capped at {} partitions",
                decision.reason, snapshot.partitions
            );
            decision.desired = capped;
            decision.rule = "partitions".into();
        }
        let m = &self.metrics;
        m.policy_startup.set(policy.startup_secs);
        m.policy_rebalance.set(policy.rebalance_secs);
        m.last_decision
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        m.queue_waiting.set(obs.waiting() as i64);
        m.consumer_lag.set(snapshot.lag.iter().sum::<u64>() as i64);
        m.kafka_partitions.set(snapshot.partitions as i64);
        m.partitions_stuck.set(snapshot.stuck.len() as i64);
        if !snapshot.stuck.is_empty() {
            tracing::warn!(partitions = ?snapshot.stuck, "partitions hold work while their committed offset stands still (a dead or hung worker the broker keeps)");
        }
        if self.platform.counts_running() {
            m.workers_current.set(platform_workers as i64);
        }
        m.workers_desired.set(decision.desired as i64);
        m.arrival_rate
            .set(history.arrival_rate(&obs, self.policy.period_secs));
        let direction = match decision.desired.cmp(&platform_workers) {
            std::cmp::Ordering::Greater => "up",
            std::cmp::Ordering::Less => "down",
            std::cmp::Ordering::Equal => "none",
        };
        m.scale_decisions
            .with_label_values(&[direction, decision.rule.as_str()])
            .inc();
        tracing::info!(
            workers = platform_workers,
            desired = decision.desired,
            members = ?snapshot.members,
            direction,
            rule = %decision.rule,
            reason = %decision.reason,
            "scaling decision"
        );
        let record = crate::decisions::record(
            &obs,
            &decision,
            platform_workers,
            chrono::Utc::now().timestamp_millis(),
        );
        if let Err(e) = self.observations.decided(&record).await {
            tracing::warn!(error = %e, "could not publish a decision");
        }
        history.record(obs, &decision);

        if decision.desired == platform_workers {
            return;
        }
        if in_flight.swap(true, Ordering::SeqCst) {
            tracing::info!("a change is still being applied; not piling up another");
            return;
        }
        // Partitions first: a worker without one would sit idle.
        if decision.desired > platform_workers && *can_grow {
            let want = partitions_for(&self.policy, decision.desired, snapshot.partitions);
            if want > snapshot.partitions {
                match self.queue.grow_partitions(want).await {
                    Ok(true) => {
                        tracing::info!(from = snapshot.partitions, to = want, "added partitions")
                    }
                    Ok(false) => {
                        tracing::warn!(
                            partitions = snapshot.partitions,
                            "the broker cannot add partitions; workers are capped at the partition count"
                        );
                        *can_grow = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not add partitions"),
                }
            }
        }
        tally
            .measured
            .asked(platform_workers, decision.desired, chrono::Utc::now());
        let platform = self.platform.clone();
        let metrics = self.metrics.clone();
        let flag = in_flight.clone();
        let desired = decision.desired;
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            for attempt in 1..=5 {
                match platform.apply(desired).await {
                    Ok(()) => {
                        // The count after the change, not the one before it.
                        metrics.workers_requested.set(desired as i64);
                        if platform.counts_running() {
                            if let Ok(n) = platform.current().await {
                                metrics.workers_current.set(n as i64);
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "the platform refused the change; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
            flag.store(false, Ordering::SeqCst);
        });
    }
}

/// Serves `/metrics` and `/health` until `shutdown`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::time_held;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_job_holds_its_worker_from_its_start_to_its_final_event() {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        let cases = [
            // (started seen, finished, elapsed_secs, held)
            (Some(at(1_000)), at(2_750), Some(1.2), Some(1.75)),
            // The start not seen: the job's own run time.
            (None, at(2_750), Some(1.2), Some(1.2)),
            (None, at(2_750), None, None),
            // A start after the end (a clock stepped back): the run time.
            (Some(at(3_000)), at(2_750), Some(1.2), Some(1.2)),
            (Some(at(2_750)), at(2_750), None, Some(0.0)),
        ];
        for (started, finished, elapsed, held) in cases {
            assert_eq!(
                time_held(started, finished, elapsed),
                held,
                "{started:?} {finished} {elapsed:?}"
            );
        }
    }
}
