//! The frontend's view of the autoscaler: the tails of `observer-queue`
//! (its observations) and `autoscaler-decisions` (its decisions), kept in
//! memory.

use async_trait::async_trait;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kumulus_core::config::KafkaConfig;
use kumulus_core::observation::{Observation, ObservationFeed, ScalingDecision, DECISIONS_KEPT};
use kumulus_core::ports::PortResult;

use crate::tail::{follow, Start};

const KEPT: usize = 100;

type Kept<T> = Arc<Mutex<VecDeque<T>>>;

#[derive(Default)]
pub struct KafkaObservations {
    latest: Kept<Observation>,
    decisions: Kept<ScalingDecision>,
}

impl KafkaObservations {
    /// Starts following both topics (the last few of each first).
    pub fn start(cfg: &KafkaConfig) -> Self {
        Self {
            latest: keep(cfg, &cfg.observer_topic, KEPT),
            decisions: keep(cfg, &cfg.decisions_topic, DECISIONS_KEPT),
        }
    }
}

/// The last `n` records of `topic`, kept up to date by a task.
fn keep<T: DeserializeOwned + Send + 'static>(cfg: &KafkaConfig, topic: &str, n: usize) -> Kept<T> {
    let kept: Kept<T> = Arc::default();
    let mut stream = follow::<T>(cfg, topic, Start::Last(n as i64));
    let sink = kept.clone();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            if let Ok(mut l) = sink.lock() {
                l.push_front(item);
                l.truncate(n);
            }
        }
    });
    kept
}

/// Up to `n` of `kept`, newest first by `time`: replayed tails arrive
/// oldest first.
fn newest<T: Clone>(kept: &Kept<T>, n: usize, time: impl Fn(&T) -> i64) -> Vec<T> {
    let mut items: Vec<T> = kept
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    items.sort_by_key(|o| std::cmp::Reverse(time(o)));
    items.truncate(n);
    items
}

#[async_trait]
impl ObservationFeed for KafkaObservations {
    async fn recent(&self, n: usize) -> PortResult<Vec<Observation>> {
        Ok(newest(&self.latest, n, |o| o.timestamp))
    }

    async fn decisions(&self, n: usize) -> PortResult<Vec<ScalingDecision>> {
        Ok(newest(&self.decisions, n, |d| d.timestamp))
    }
}
