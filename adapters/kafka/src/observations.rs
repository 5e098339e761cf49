//! The frontend's view of the autoscaler's observations: the tail of
//! `observer-queue`, kept in memory.

use async_trait::async_trait;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kumulus_core::config::KafkaConfig;
use kumulus_core::observation::{Observation, ObservationFeed};
use kumulus_core::ports::PortResult;

use crate::tail::{follow, Start};

const KEPT: usize = 100;

#[derive(Default)]
pub struct KafkaObservations {
    latest: Arc<Mutex<VecDeque<Observation>>>,
}

impl KafkaObservations {
    /// Starts following the observations topic (the last few first).
    pub fn start(cfg: &KafkaConfig) -> Self {
        let latest: Arc<Mutex<VecDeque<Observation>>> = Arc::default();
        let mut stream = follow::<Observation>(cfg, &cfg.observer_topic, Start::Last(KEPT as i64));
        let sink = latest.clone();
        tokio::spawn(async move {
            while let Some(obs) = stream.next().await {
                if let Ok(mut l) = sink.lock() {
                    l.push_front(obs);
                    l.truncate(KEPT);
                }
            }
        });
        Self { latest }
    }
}

#[async_trait]
impl ObservationFeed for KafkaObservations {
    async fn recent(&self, n: usize) -> PortResult<Vec<Observation>> {
        let mut items: Vec<Observation> = self
            .latest
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        // Replayed tails arrive oldest first; order by time, newest first.
        items.sort_by_key(|o| std::cmp::Reverse(o.timestamp));
        items.truncate(n);
        Ok(items)
    }
}
