//! In-process buses. Status events are projected into the job store as they
//! are published (there is no queue between worker and store to lose them),
//! then fanned out to subscribers such as the autoscaler. Cancellations take
//! a queued job out of the queue and reach every worker slot.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use kumulus_core::event::StatusEvent;
use kumulus_core::logs::LogChunk;
use kumulus_core::ports::{CancelBus, CancelRequest, JobStore, LogBus, PortResult, StatusBus};

use crate::sqlite::Sqlite;

const FANOUT: usize = 4096;

fn stream_of<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                // A slow subscriber misses items rather than stalling publishers.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

/// Status events applied straight to the job store.
pub struct LocalStatusBus {
    store: Arc<dyn JobStore>,
    tx: broadcast::Sender<StatusEvent>,
}

impl LocalStatusBus {
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        Self {
            store,
            tx: broadcast::channel(FANOUT).0,
        }
    }
}

#[async_trait]
impl StatusBus for LocalStatusBus {
    async fn publish(&self, event: &StatusEvent) -> PortResult<()> {
        self.store.apply(event).await?;
        let _ = self.tx.send(event.clone());
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, StatusEvent> {
        stream_of(self.tx.subscribe())
    }
}

/// Cancellations for one process: a queued job leaves the queue, a running
/// one is stopped by the worker slot that holds it.
pub struct LocalCancelBus {
    queue: Sqlite,
    tx: broadcast::Sender<CancelRequest>,
}

impl LocalCancelBus {
    pub fn new(queue: Sqlite) -> Self {
        Self {
            queue,
            tx: broadcast::channel(FANOUT).0,
        }
    }
}

#[async_trait]
impl CancelBus for LocalCancelBus {
    async fn cancel(&self, request: &CancelRequest) -> PortResult<()> {
        // A fence only stops an old attempt; the job stays queued.
        if request.superseded.is_none() {
            self.queue.withdraw(request.job_id).await?;
        }
        let _ = self.tx.send(request.clone());
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, CancelRequest> {
        stream_of(self.tx.subscribe())
    }
}

/// Live logs within one process.
pub struct LocalLogBus {
    tx: broadcast::Sender<LogChunk>,
}

impl Default for LocalLogBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(FANOUT).0,
        }
    }
}

#[async_trait]
impl LogBus for LocalLogBus {
    async fn publish(&self, chunk: &LogChunk) -> PortResult<()> {
        // No subscriber is not an error: nobody is following.
        let _ = self.tx.send(chunk.clone());
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, LogChunk> {
        stream_of(self.tx.subscribe())
    }
}

/// Ends a stream when `token` is cancelled (for loops that read subscriptions).
pub fn until_cancelled<T: Send + 'static>(
    stream: BoxStream<'static, T>,
    token: CancellationToken,
) -> BoxStream<'static, T> {
    stream
        .take_until(async move { token.cancelled().await })
        .boxed()
}

/// The latest observations and decisions, kept in memory (the autoscaler
/// writes, the frontend reads).
#[derive(Default)]
pub struct ObservationBoard {
    items: Kept<kumulus_core::observation::Observation>,
    decisions: Kept<kumulus_core::observation::ScalingDecision>,
}

const OBSERVATIONS_KEPT: usize = 100;

/// Newest first, at most a bound.
type Kept<T> = std::sync::Mutex<std::collections::VecDeque<T>>;

fn keep<T>(kept: &Kept<T>, item: T, bound: usize) {
    if let Ok(mut items) = kept.lock() {
        items.push_front(item);
        items.truncate(bound);
    }
}

fn newest<T: Clone>(kept: &Kept<T>, n: usize) -> Vec<T> {
    kept.lock()
        .map(|items| items.iter().take(n).cloned().collect())
        .unwrap_or_default()
}

impl ObservationBoard {
    pub fn push(&self, obs: kumulus_core::observation::Observation) {
        keep(&self.items, obs, OBSERVATIONS_KEPT);
    }
}

#[async_trait]
impl kumulus_core::observation::ObservationSink for ObservationBoard {
    async fn publish(
        &self,
        observation: &kumulus_core::observation::Observation,
    ) -> PortResult<()> {
        self.push(observation.clone());
        Ok(())
    }

    async fn decided(
        &self,
        decision: &kumulus_core::observation::ScalingDecision,
    ) -> PortResult<()> {
        keep(
            &self.decisions,
            decision.clone(),
            kumulus_core::observation::DECISIONS_KEPT,
        );
        Ok(())
    }
}

#[async_trait]
impl kumulus_core::observation::ObservationFeed for ObservationBoard {
    async fn recent(&self, n: usize) -> PortResult<Vec<kumulus_core::observation::Observation>> {
        Ok(newest(&self.items, n))
    }

    async fn decisions(
        &self,
        n: usize,
    ) -> PortResult<Vec<kumulus_core::observation::ScalingDecision>> {
        Ok(newest(&self.decisions, n))
    }
}
