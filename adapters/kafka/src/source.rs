//! The workers' side of `jobs-queue`: one consumer in the workers' group,
//! owned by a pump task. Jobs are handed out only while a slot asks for one;
//! otherwise the assigned partitions are paused and the pump keeps polling,
//! so a job longer than `max.poll.interval.ms` never gets the worker thrown
//! out of its group. Offsets are committed by hand, after a job's final
//! status is published, and never past a job still in flight.

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

use kumulus_core::config::KafkaConfig;
use kumulus_core::job::QueuedJob;
use kumulus_core::ports::{Delivery, JobSource, PortError, PortResult};

use crate::{client_config, unavailable};

/// Logs the group's decisions about this worker.
struct GroupLog {
    group: String,
}

impl ClientContext for GroupLog {}

impl ConsumerContext for GroupLog {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, partitions = ?parts, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, partitions = ?parts, "partitions revoked");
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance failed")
            }
        }
    }
}

enum Command {
    Ack { partition: i32, offset: i64 },
    Release { partition: i32, offset: i64 },
}

pub struct KafkaJobSource {
    jobs: Mutex<mpsc::Receiver<Delivery>>,
    demand: Arc<AtomicUsize>,
    commands: mpsc::UnboundedSender<Command>,
    stop: CancellationToken,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl KafkaJobSource {
    /// Joins the workers' group on the jobs topic.
    pub fn new(cfg: &KafkaConfig) -> PortResult<Self> {
        let consumer: StreamConsumer<GroupLog> = client_config(cfg)
            .set("group.id", &cfg.worker_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout_ms / 4).max(250).to_string(),
            )
            .set("partition.assignment.strategy", "roundrobin")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create_with_context(GroupLog {
                group: cfg.worker_group.clone(),
            })
            .map_err(unavailable)?;
        consumer
            .subscribe(&[&cfg.jobs_topic])
            .map_err(unavailable)?;
        let (jobs_tx, jobs_rx) = mpsc::channel(1);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let demand = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (done_tx, done_rx) = oneshot::channel();
        let pump = Pump {
            consumer,
            topic: cfg.jobs_topic.clone(),
            demand: demand.clone(),
            in_flight: HashMap::new(),
            paused: false,
        };
        tokio::spawn(pump.run(jobs_tx, cmd_rx, stop.clone(), done_tx));
        Ok(Self {
            jobs: Mutex::new(jobs_rx),
            demand,
            commands: cmd_tx,
            stop,
            stopped: Mutex::new(Some(done_rx)),
        })
    }

    fn handle(delivery: &Delivery) -> PortResult<(i32, i64)> {
        let (p, o) = delivery.handle.split_once(':').ok_or_else(|| {
            PortError::Internal(format!("bad delivery handle {}", delivery.handle))
        })?;
        let p = p
            .parse()
            .map_err(|_| PortError::Internal("bad partition".into()))?;
        let o = o
            .parse()
            .map_err(|_| PortError::Internal("bad offset".into()))?;
        Ok((p, o))
    }
}

/// Decrements the demand when a waiting `next()` ends, however it ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl JobSource for KafkaJobSource {
    async fn next(&self) -> PortResult<Delivery> {
        self.demand.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(self.demand.clone());
        let mut jobs = self.jobs.lock().await;
        jobs.recv()
            .await
            .ok_or_else(|| unavailable("the job consumer has stopped"))
    }

    async fn ack(&self, delivery: &Delivery) -> PortResult<()> {
        let (partition, offset) = Self::handle(delivery)?;
        self.commands
            .send(Command::Ack { partition, offset })
            .map_err(|_| unavailable("the job consumer has stopped"))
    }

    async fn release(&self, delivery: &Delivery) -> PortResult<()> {
        let (partition, offset) = Self::handle(delivery)?;
        self.commands
            .send(Command::Release { partition, offset })
            .map_err(|_| unavailable("the job consumer has stopped"))
    }

    async fn close(&self) {
        self.stop.cancel();
        if let Some(done) = self.stopped.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), done).await;
        }
    }
}

/// Offsets handed out and not yet acknowledged, per partition; and the
/// highest acknowledged one.
#[derive(Default)]
struct PartitionState {
    in_flight: BTreeSet<i64>,
    /// Released jobs: never committed past, so they are delivered again
    /// after a restart or a rebalance.
    held: BTreeSet<i64>,
    highest_done: Option<i64>,
}

impl PartitionState {
    /// The offset to commit (the next one to read), if any.
    fn commit_point(&self) -> Option<i64> {
        let lowest_open = self.in_flight.iter().chain(self.held.iter()).min().copied();
        match (lowest_open, self.highest_done) {
            (Some(open), Some(done)) if open <= done => Some(open),
            (_, Some(done)) => Some(done + 1),
            (Some(_), None) => None,
            (None, None) => None,
        }
    }
}

struct Pump {
    consumer: StreamConsumer<GroupLog>,
    topic: String,
    demand: Arc<AtomicUsize>,
    in_flight: HashMap<i32, PartitionState>,
    paused: bool,
}

impl Pump {
    async fn run(
        mut self,
        jobs: mpsc::Sender<Delivery>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
        done: oneshot::Sender<()>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let wanted = self.demand.load(Ordering::SeqCst) > 0;
            self.set_paused(!wanted);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => break,
                },
                msg = self.consumer.recv() => match msg {
                    Ok(m) => {
                        let (partition, offset) = (m.partition(), m.offset());
                        match m.payload().map(serde_json::from_slice::<QueuedJob>) {
                            Some(Ok(job)) => {
                                self.in_flight.entry(partition).or_default().in_flight.insert(offset);
                                let delivery = Delivery { job, handle: format!("{partition}:{offset}") };
                                if jobs.send(delivery).await.is_err() {
                                    break;
                                }
                            }
                            _ => {
                                tracing::warn!(partition, offset, "skipping a message that is not a job");
                                let st = self.in_flight.entry(partition).or_default();
                                st.highest_done = Some(st.highest_done.map_or(offset, |d| d.max(offset)));
                                self.commit(partition);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "kafka error on the job consumer");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                // Wake up to re-check demand and keep polling while paused.
                _ = tick.tick() => {}
            }
        }
        // Commit what is done, then leave the group (the consumer's drop).
        while let Ok(cmd) = commands.try_recv() {
            self.apply(cmd);
        }
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
        let _ = done.send(());
    }

    fn set_paused(&mut self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        if assignment.count() == 0 {
            self.paused = false;
            return;
        }
        // Partitions assigned by a rebalance start unpaused: pause again each time.
        if pause {
            let _ = self.consumer.pause(&assignment);
        } else if self.paused {
            let _ = self.consumer.resume(&assignment);
        }
        self.paused = pause;
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Ack { partition, offset } => {
                let st = self.in_flight.entry(partition).or_default();
                st.in_flight.remove(&offset);
                st.highest_done = Some(st.highest_done.map_or(offset, |d| d.max(offset)));
                self.commit(partition);
            }
            Command::Release { partition, offset } => {
                let st = self.in_flight.entry(partition).or_default();
                st.in_flight.remove(&offset);
                st.held.insert(offset);
            }
        }
    }

    fn commit(&mut self, partition: i32) {
        let Some(point) = self
            .in_flight
            .get(&partition)
            .and_then(PartitionState::commit_point)
        else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&self.topic, partition, Offset::Offset(point))
            .is_err()
        {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(partition, offset = point, error = %e, "could not commit a job's offset");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PartitionState;

    #[test]
    fn commits_never_pass_a_job_in_flight() {
        let mut st = PartitionState::default();
        assert_eq!(st.commit_point(), None);
        st.in_flight.extend([4, 5, 6]);
        assert_eq!(st.commit_point(), None);
        // 5 ends first: 4 is still running, so nothing past it is committed.
        st.in_flight.remove(&5);
        st.highest_done = Some(5);
        assert_eq!(st.commit_point(), Some(4));
        st.in_flight.remove(&4);
        assert_eq!(st.commit_point(), Some(6));
        st.in_flight.remove(&6);
        st.highest_done = Some(6);
        assert_eq!(st.commit_point(), Some(7));
        // A released job holds the commit point back.
        st.held.insert(7);
        st.highest_done = Some(9);
        assert_eq!(st.commit_point(), Some(7));
    }
}
