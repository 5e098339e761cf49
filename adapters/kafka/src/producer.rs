//! Everything Kumulus writes to Kafka goes through one idempotent producer.

use async_trait::async_trait;
use futures::stream::BoxStream;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kumulus_core::config::KafkaConfig;
use kumulus_core::event::StatusEvent;
use kumulus_core::job::QueuedJob;
use kumulus_core::observation::{Observation, ObservationSink};
use kumulus_core::ports::{CancelBus, CancelRequest, JobQueue, PortError, PortResult, StatusBus};

use crate::{client_config, tail, unavailable};

/// A failing producer is replaced at most this often.
const REBUILD_EVERY: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct KafkaProducer {
    producer: Arc<RwLock<Arc<FutureProducer>>>,
    last_rebuild: Arc<Mutex<Instant>>,
    cfg: KafkaConfig,
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
        })
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
        let payload = serde_json::to_vec(value).map_err(|e| PortError::Internal(e.to_string()))?;
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        let wait = Duration::from_millis(self.cfg.message_timeout_ms as u64);
        let producer = self
            .producer
            .read()
            .map(|p| p.clone())
            .map_err(|_| PortError::Internal("producer lock poisoned".into()))?;
        let result = producer.send(record, Timeout::After(wait)).await;
        match result {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                self.rebuild();
                Err(unavailable(format!("cannot write to {topic}: {e}")))
            }
        }
    }
}

#[async_trait]
impl JobQueue for KafkaProducer {
    async fn enqueue(&self, job: &QueuedJob) -> PortResult<()> {
        self.send(&self.cfg.jobs_topic, &job.id.to_string(), job)
            .await
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
impl ObservationSink for KafkaProducer {
    async fn publish(&self, observation: &Observation) -> PortResult<()> {
        self.send(&self.cfg.observer_topic, "observation", observation)
            .await
    }
}
