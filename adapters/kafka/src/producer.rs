//! Everything Kumulus writes to Kafka goes through one idempotent producer.

use async_trait::async_trait;
use futures::stream::BoxStream;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::liveness::PartitionWatch;

use kumulus_core::config::KafkaConfig;
use kumulus_core::event::StatusEvent;
use kumulus_core::job::QueuedJob;
use kumulus_core::logs::LogChunk;
use kumulus_core::observation::{Observation, ObservationSink, ScalingDecision};
use kumulus_core::placement::Placer;
use kumulus_core::ports::{
    CancelBus, CancelRequest, Drained, JobQueue, LogBus, PortError, PortResult, StatusBus,
};

use crate::{client_config, tail, unavailable};

/// A failing producer is replaced at most this often.
const REBUILD_EVERY: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct KafkaProducer {
    producer: Arc<RwLock<Arc<FutureProducer>>>,
    last_rebuild: Arc<Mutex<Instant>>,
    cfg: KafkaConfig,
    /// The jobs topic's partitions and which of them are consumed, where
    /// [`KafkaProducer::watch_partitions`] runs (the frontends).
    watch: Arc<Mutex<PartitionWatch>>,
    partitions: Arc<AtomicU32>,
    stuck_after: Arc<Mutex<Duration>>,
    /// The last sample's time, and where the status feed ended just after
    /// it (for [`JobQueue::drained`]).
    sampled: Arc<Mutex<Option<Sample>>>,
    /// `kafka.placement = "least-backlog"`: the placement by backlog, from
    /// samples used for three sampling periods.
    placer: Option<Arc<Mutex<Placer>>>,
    last_sample: Arc<Mutex<Option<Instant>>>,
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    seen: chrono::DateTime<chrono::Utc>,
    status_end: Vec<(i32, i64)>,
}

fn build(cfg: &KafkaConfig) -> PortResult<FutureProducer> {
    client_config(cfg)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
        .set("linger.ms", "2")
        .create()
        .map_err(unavailable)
}

impl KafkaProducer {
    pub fn new(cfg: &KafkaConfig) -> PortResult<Self> {
        Ok(Self {
            producer: Arc::new(RwLock::new(Arc::new(build(cfg)?))),
            last_rebuild: Arc::new(Mutex::new(Instant::now())),
            cfg: cfg.clone(),
            watch: Arc::default(),
            partitions: Arc::new(AtomicU32::new(0)),
            stuck_after: Arc::new(Mutex::new(Duration::from_secs(30))),
            sampled: Arc::default(),
            placer: (cfg.placement == "least-backlog")
                .then(|| Arc::new(Mutex::new(Placer::new(std::process::id() as usize)))),
            last_sample: Arc::default(),
        })
    }

    /// Samples the jobs topic every `period` until `shutdown`: its
    /// partitions (to place jobs) and their consumption (a partition whose
    /// work waits unconsumed for `stuck_after` is stuck; new attempts avoid
    /// it, and the reaper moves its jobs).
    pub fn watch_partitions(
        &self,
        period: Duration,
        stuck_after: Duration,
        shutdown: CancellationToken,
    ) {
        if let Ok(mut s) = self.stuck_after.lock() {
            *s = stuck_after;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut reported: Vec<i32> = Vec::new();
            loop {
                let cfg = me.cfg.clone();
                match tokio::task::spawn_blocking(move || crate::admin::queue_sample(&cfg)).await {
                    Ok(Ok(sample)) => {
                        let state = sample.state;
                        me.partitions.store(state.partitions, Ordering::SeqCst);
                        let now = sample.at;
                        if let Some(Ok(mut p)) = me.placer.as_ref().map(|p| p.lock()) {
                            p.sampled(&state.lag, state.members, now, period * 3);
                        }
                        if let Ok(mut last) = me.last_sample.lock() {
                            *last = Some(now);
                        }
                        if let Ok(mut sampled) = me.sampled.lock() {
                            *sampled = sample.status_end.ok().map(|status_end| Sample {
                                at: now,
                                seen: sample.seen,
                                status_end,
                            });
                        }
                        if let Ok(mut w) = me.watch.lock() {
                            w.observe(&state.committed, &state.lag, now);
                            let stuck = w.stuck(now, stuck_after);
                            if stuck != reported && !stuck.is_empty() {
                                tracing::warn!(partitions = ?stuck, "partitions of the jobs topic hold work that nobody consumes");
                            }
                            reported = stuck;
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the jobs topic's state"),
                    Err(e) => tracing::debug!(error = %e, "cannot read the jobs topic's state"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
            }
        });
    }

    /// When the jobs topic was last sampled (by [`Self::watch_partitions`]).
    pub fn sampled_at(&self) -> Option<Instant> {
        *self.last_sample.lock().ok()?
    }

    fn stuck_after(&self) -> Duration {
        self.stuck_after
            .lock()
            .map(|d| *d)
            .unwrap_or(Duration::from_secs(30))
    }

    /// An idempotent producer can be left unusable by its broker (a broker
    /// that lost or restarted its producer state answers UNKNOWN_PRODUCER_ID
    /// for good). After a failed send, a fresh producer takes over; what the
    /// old one held had already failed and was reported as such.
    fn rebuild(&self) {
        let Ok(mut last) = self.last_rebuild.lock() else {
            return;
        };
        if last.elapsed() < REBUILD_EVERY {
            return;
        }
        *last = Instant::now();
        match build(&self.cfg) {
            Ok(fresh) => {
                if let Ok(mut p) = self.producer.write() {
                    *p = Arc::new(fresh);
                    tracing::info!("replaced the Kafka producer after a failed send");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot make a new Kafka producer"),
        }
    }

    /// Sends `value` as JSON to `topic` with `key`; returns once the broker
    /// has it (all in-sync replicas) or fails within the message timeout.
    async fn send<T: Serialize>(&self, topic: &str, key: &str, value: &T) -> PortResult<()> {
        self.send_to(topic, None, key, value).await
    }

    async fn send_to<T: Serialize>(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        value: &T,
    ) -> PortResult<()> {
        let payload = serde_json::to_vec(value).map_err(|e| PortError::Internal(e.to_string()))?;
        let wait = Duration::from_millis(self.cfg.message_timeout_ms as u64);
        // A partition added moments ago (the autoscaler grows the topic) may
        // be unknown to this producer until its metadata is refreshed: it is
        // refreshed and the send tried once more.
        let mut refreshed = false;
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(&payload);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            let producer = self
                .producer
                .read()
                .map(|p| p.clone())
                .map_err(|_| PortError::Internal("producer lock poisoned".into()))?;
            // The delivery report comes within the message timeout, by
            // librdkafka's word; a broker that restarted mid-send can leave it
            // pending for good, so the wait is bounded here too.
            let bound = wait * 2 + Duration::from_secs(1);
            match tokio::time::timeout(bound, producer.send(record, Timeout::After(wait))).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err((e, _)))
                    if !refreshed
                        && partition.is_some()
                        && e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::UnknownPartition) =>
                {
                    refreshed = true;
                    let topic = topic.to_string();
                    let _ = tokio::task::spawn_blocking(move || {
                        rdkafka::producer::Producer::client(producer.as_ref())
                            .fetch_metadata(Some(&topic), Timeout::After(wait))
                            .map(|_| ())
                    })
                    .await;
                }
                Ok(Err((e, _))) => {
                    self.rebuild();
                    return Err(unavailable(format!("cannot write to {topic}: {e}")));
                }
                Err(_) => {
                    self.rebuild();
                    return Err(unavailable(format!(
                        "cannot write to {topic}: no delivery report in {} s",
                        bound.as_secs()
                    )));
                }
            }
        }
    }
}

#[async_trait]
impl JobQueue for KafkaProducer {
    async fn enqueue(&self, job: &QueuedJob) -> PortResult<()> {
        self.send_to(
            &self.cfg.jobs_topic,
            job.partition,
            &job.id.to_string(),
            job,
        )
        .await
    }

    /// On a partition that is consumed (the least lagging of those), never
    /// on a stuck one; where nothing is known, where the key puts it.
    async fn requeue(&self, job: &QueuedJob) -> PortResult<Option<i32>> {
        let chosen = self
            .watch
            .lock()
            .ok()
            .and_then(|w| w.choose(Instant::now(), self.stuck_after()));
        let mut job = job.clone();
        job.partition = chosen;
        if chosen.is_none() {
            self.place(&mut job).await;
        }
        self.enqueue(&job).await.map(|()| job.partition)
    }

    /// With `kafka.placement = "least-backlog"`, on the partition whose
    /// worker has the least backlog, from a fresh sample of the topic;
    /// otherwise (or with no fresh sample) spread by the job's id over the
    /// partitions, as the key would. Either way known before the job is
    /// stored (so the reaper can find the jobs of a stuck partition); the
    /// key stays the job's id.
    async fn place(&self, job: &mut QueuedJob) {
        if let Some(Ok(mut p)) = self.placer.as_ref().map(|p| p.lock()) {
            if let Some(q) = p.place(Instant::now()) {
                job.partition = Some(q);
                return;
            }
        }
        let mut n = self.partitions.load(Ordering::SeqCst);
        if n == 0 {
            // Not sampled yet: ask once (the topic may not exist yet either).
            let (cfg, topic) = (self.cfg.clone(), self.cfg.jobs_topic.clone());
            if let Ok(Ok(count)) =
                tokio::task::spawn_blocking(move || crate::admin::partition_count(&cfg, &topic))
                    .await
            {
                n = count;
                self.partitions.store(count, Ordering::SeqCst);
            }
        }
        if n > 0 {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            job.id.hash(&mut h);
            job.partition = Some((h.finish() % u64::from(n)) as i32);
        }
    }

    async fn stuck(&self, after: Duration) -> Vec<i32> {
        self.watch
            .lock()
            .map(|w| w.stranded(Instant::now(), after))
            .unwrap_or_default()
    }

    /// As of the last sample of the jobs topic.
    async fn drained(&self, after: Duration) -> Option<Drained> {
        let sample = self.sampled.lock().ok()?.clone()?;
        let partitions = self.watch.lock().ok()?.drained(sample.at, after);
        Some(Drained {
            partitions,
            seen: sample.seen,
            status_end: sample.status_end,
        })
    }
}

#[async_trait]
impl StatusBus for KafkaProducer {
    async fn publish(&self, event: &StatusEvent) -> PortResult<()> {
        self.send(&self.cfg.results_topic, &event.job_id.to_string(), event)
            .await
    }

    fn subscribe(&self) -> BoxStream<'static, StatusEvent> {
        tail::follow(&self.cfg, &self.cfg.results_topic, tail::Start::End)
    }
}

#[async_trait]
impl CancelBus for KafkaProducer {
    async fn cancel(&self, request: &CancelRequest) -> PortResult<()> {
        self.send(&self.cfg.cancel_topic, &request.job_id.to_string(), request)
            .await
    }

    /// Recent cancellations too, so a worker that starts late still skips
    /// jobs cancelled while they waited.
    fn subscribe(&self) -> BoxStream<'static, CancelRequest> {
        tail::follow(&self.cfg, &self.cfg.cancel_topic, tail::Start::Last(10_000))
    }
}

#[async_trait]
impl LogBus for KafkaProducer {
    async fn publish(&self, chunk: &LogChunk) -> PortResult<()> {
        self.send(&self.cfg.logs_topic, &chunk.job.to_string(), chunk)
            .await
    }

    fn subscribe(&self) -> BoxStream<'static, LogChunk> {
        tail::follow(&self.cfg, &self.cfg.logs_topic, tail::Start::End)
    }
}

#[async_trait]
impl ObservationSink for KafkaProducer {
    async fn publish(&self, observation: &Observation) -> PortResult<()> {
        self.send(&self.cfg.observer_topic, "observation", observation)
            .await
    }

    async fn decided(&self, decision: &ScalingDecision) -> PortResult<()> {
        self.send(&self.cfg.decisions_topic, "decision", decision)
            .await
    }
}
