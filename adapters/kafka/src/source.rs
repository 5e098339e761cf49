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
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

use kumulus_core::config::KafkaConfig;
use kumulus_core::job::QueuedJob;
use kumulus_core::ports::{Delivery, JobSource, PortError, PortResult};

use crate::{client_config, unavailable};

/// Logs the group's decisions about this worker, and times how long a
/// rebalance keeps it from consuming.
struct GroupLog {
    group: String,
    pauses: Arc<std::sync::Mutex<PauseClock>>,
}

/// Partitions revoked to partitions assigned, measured once per rebalance.
#[derive(Debug, Default)]
struct PauseClock {
    revoked_at: Option<Instant>,
    /// The last pause, not yet reported.
    unreported: Option<f64>,
}

impl PauseClock {
    fn revoked(&mut self, now: Instant) {
        self.revoked_at.get_or_insert(now);
    }

    fn assigned(&mut self, now: Instant) {
        if let Some(at) = self.revoked_at.take() {
            self.unreported = Some(now.duration_since(at).as_secs_f64());
        }
    }
}

impl ClientContext for GroupLog {}

impl ConsumerContext for GroupLog {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, partitions = ?parts, "partitions assigned");
                if let Ok(mut p) = self.pauses.lock() {
                    p.assigned(Instant::now());
                }
            }
            Rebalance::Revoke(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, partitions = ?parts, "partitions revoked");
                if !parts.is_empty() {
                    if let Ok(mut p) = self.pauses.lock() {
                        p.revoked(Instant::now());
                    }
                }
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

/// What the pump does with a command on a partition's offsets.
fn apply_to(st: &mut PartitionState, cmd: &Command) {
    match *cmd {
        Command::Ack { offset, .. } => {
            st.in_flight.remove(&offset);
            st.held.remove(&offset);
            st.highest_done = Some(st.highest_done.map_or(offset, |d| d.max(offset)));
        }
        // Only a job still in flight goes back: one let go of at its start
        // is committed past, and holding it would move the commit back.
        Command::Release { offset, .. } => {
            if st.in_flight.remove(&offset) {
                st.held.insert(offset);
            }
        }
    }
}

pub struct KafkaJobSource {
    jobs: Mutex<mpsc::Receiver<Delivery>>,
    pauses: Arc<std::sync::Mutex<PauseClock>>,
    demand: Arc<AtomicUsize>,
    /// Tells the pump at once that a slot is free (it resumes the partitions).
    wake: Arc<tokio::sync::Notify>,
    commands: mpsc::UnboundedSender<Command>,
    stop: CancellationToken,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl KafkaJobSource {
    /// Joins the workers' group on the jobs topic.
    pub fn new(cfg: &KafkaConfig) -> PortResult<Self> {
        let pauses: Arc<std::sync::Mutex<PauseClock>> = Arc::default();
        let consumer = group_member(cfg, pauses.clone())?;
        let (jobs_tx, jobs_rx) = mpsc::channel(1);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let demand = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let stop = CancellationToken::new();
        let (done_tx, done_rx) = oneshot::channel();
        let session = Duration::from_millis(cfg.session_timeout_ms as u64);
        let pump = Pump {
            consumer,
            cfg: cfg.clone(),
            demand: demand.clone(),
            wake: wake.clone(),
            in_flight: HashMap::new(),
            pauses: pauses.clone(),
            paused: false,
            resumed: Vec::new(),
            rejoin: Rejoin::new(session),
        };
        tokio::spawn(pump.run(jobs_tx, cmd_rx, stop.clone(), done_tx));
        Ok(Self {
            jobs: Mutex::new(jobs_rx),
            pauses,
            demand,
            wake,
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

/// A new member of the workers' group, subscribed to the jobs topic.
fn group_member(
    cfg: &KafkaConfig,
    pauses: Arc<std::sync::Mutex<PauseClock>>,
) -> PortResult<StreamConsumer<GroupLog>> {
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
        // The pump polls at least every 500 ms, paused or not, so a long
        // poll interval buys nothing; a short one bounds how long a
        // rebalance can wait for a member that died (some brokers wait
        // the rebalance timeout, not the session timeout).
        .set(
            "max.poll.interval.ms",
            (cfg.session_timeout_ms * 2).to_string(),
        )
        .set("partition.assignment.strategy", "roundrobin")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create_with_context(GroupLog {
            group: cfg.worker_group.clone(),
            pauses,
        })
        .map_err(unavailable)?;
    consumer
        .subscribe(&[&cfg.jobs_topic])
        .map_err(unavailable)?;
    Ok(consumer)
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
        self.wake.notify_one();
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

    /// Commits past the job once its start is published: a rebalance that
    /// moves its partition then never hands it to a second worker while it
    /// runs. Its lease keeps it from here.
    async fn started(&self, delivery: &Delivery) -> PortResult<bool> {
        self.ack(delivery).await?;
        Ok(true)
    }

    fn take_rebalance_pause(&self) -> Option<f64> {
        self.pauses.lock().ok()?.unreported.take()
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

/// When a worker with free slots asks the group again. A broker may leave
/// a dead or departed member holding partitions (tansu) or a rebalance
/// hanging (noida-db, tansu); asking again makes it hand them out. A worker
/// with free slots looks at the jobs topic every session timeout; when a
/// partition holds work whose committed offset has not moved for four (its
/// owner is dead, hung, or busy while this worker idles, and the broker did
/// not sort it out), it rejoins as the same member. If the work is still
/// stuck at the next look, the member itself may be wedged (a join the
/// broker never answers): it leaves and joins as a new member, with a new
/// consumer. It waits longer each time (up to [`MAX_REJOIN_WAIT`]) while
/// that lasts. A rebalance is cheap here: running jobs were let go of at
/// their start, so none moves.
#[derive(Debug)]
struct Rejoin {
    watch: crate::liveness::PartitionWatch,
    last: Option<Instant>,
    wait: Duration,
    first_wait: Duration,
    /// How long a partition's work must wait unconsumed: longer than the
    /// broker's own recovery (a session timeout to notice a dead member,
    /// then the rebalance timeout, twice that) by one more session
    /// timeout, so that a rejoin never interrupts a rebalance that would
    /// have ended by itself on a slow machine.
    stuck_after: Duration,
    /// Rejoins since the work last moved.
    in_a_row: u32,
}

/// What a look at the jobs topic calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Nothing,
    /// Join again as the same member.
    Rejoin,
    /// Leave, and join as a new member.
    NewMember,
}

/// The longest wait between two rejoins.
const MAX_REJOIN_WAIT: Duration = Duration::from_secs(300);

impl Rejoin {
    fn new(session: Duration) -> Self {
        Self {
            watch: Default::default(),
            last: None,
            wait: session,
            first_wait: session,
            stuck_after: session * 4,
            in_a_row: 0,
        }
    }

    /// Whether to look at the topic now.
    fn due(&self, free_slots: bool, now: Instant) -> bool {
        free_slots && self.last.is_none_or(|l| now.duration_since(l) >= self.wait)
    }

    /// A look at the topic (each partition's committed offset and lag, if
    /// it could be read): what to ask of the group.
    fn looked(&mut self, state: Option<(&[i64], &[u64])>, now: Instant) -> Ask {
        self.last = Some(now);
        let Some((committed, lag)) = state else {
            return Ask::Nothing;
        };
        self.watch.observe(committed, lag, now);
        if self.watch.stuck(now, self.stuck_after).is_empty() {
            self.wait = self.first_wait;
            self.in_a_row = 0;
            return Ask::Nothing;
        }
        self.wait = (self.wait * 2).min(MAX_REJOIN_WAIT);
        self.in_a_row += 1;
        if self.in_a_row == 1 {
            Ask::Rejoin
        } else {
            Ask::NewMember
        }
    }
}

/// Leaves the group and closes the consumer, off the runtime's threads
/// (closing blocks until librdkafka is done).
fn leave(consumer: StreamConsumer<GroupLog>) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        drop(consumer);
    })
}

struct Pump {
    consumer: StreamConsumer<GroupLog>,
    cfg: KafkaConfig,
    demand: Arc<AtomicUsize>,
    wake: Arc<tokio::sync::Notify>,
    in_flight: HashMap<i32, PartitionState>,
    pauses: Arc<std::sync::Mutex<PauseClock>>,
    paused: bool,
    /// The assignment last resumed.
    resumed: Vec<i32>,
    rejoin: Rejoin,
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
        let wake = self.wake.clone();
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
                // A slot became free: resume now, not at the next tick (a
                // job that waits on its paused partition waits this long).
                _ = wake.notified() => {}
                // Wake up to re-check demand and keep polling while paused.
                _ = tick.tick() => self.rejoin_if_stranded().await,
            }
        }
        // Commit what is done, then leave the group (the consumer's drop).
        while let Ok(cmd) = commands.try_recv() {
            self.apply(cmd);
        }
        let _ = leave(self.consumer).await;
        let _ = done.send(());
    }

    /// Leaves and rejoins the group when this worker has free slots while
    /// work waits unconsumed (see [`Rejoin`]).
    async fn rejoin_if_stranded(&mut self) {
        let free = self.demand.load(Ordering::SeqCst) > 0;
        if !self.rejoin.due(free, Instant::now()) {
            return;
        }
        let cfg = self.cfg.clone();
        let state = tokio::task::spawn_blocking(move || crate::admin::queue_state(&cfg))
            .await
            .ok()
            .and_then(Result::ok);
        let now = Instant::now();
        let ask = self
            .rejoin
            .looked(state.as_ref().map(|s| (&s.committed[..], &s.lag[..])), now);
        if ask == Ask::Nothing {
            return;
        }
        let waiting: u64 = state.map(|s| s.lag.iter().sum()).unwrap_or(0);
        let group = &self.cfg.worker_group;
        if ask == Ask::Rejoin {
            tracing::warn!(%group, waiting, "jobs wait unconsumed while this worker has free slots: rejoining the group");
            // Subscribing again without unsubscribing first rejoins as the
            // same member (librdkafka sends no LeaveGroup): a broker that
            // still counts a dead member is not also handed a new one.
            if let Err(e) = self.consumer.subscribe(&[&self.cfg.jobs_topic]) {
                tracing::warn!(error = %e, "could not rejoin the workers' group");
            }
            return;
        }
        tracing::warn!(%group, waiting, "jobs still wait unconsumed after a rejoin: joining the group as a new member");
        match group_member(&self.cfg, self.pauses.clone()) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.consumer, fresh);
                self.resumed.clear();
                self.paused = false;
                // Leaving may wait on the wedged join: not awaited.
                drop(leave(old));
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not join the workers' group as a new member")
            }
        }
    }

    /// Pauses the assigned partitions while no slot is free, and resumes
    /// them when one is. librdkafka keeps a partition's pause across a
    /// rebalance that revokes and assigns it again, so a new assignment is
    /// resumed explicitly, whatever was paused before.
    fn set_paused(&mut self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let parts: Vec<i32> = assignment
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        if parts.is_empty() {
            return;
        }
        if pause {
            // Partitions assigned by a rebalance may start unpaused: pause each time.
            let _ = self.consumer.pause(&assignment);
        } else if (self.paused || parts != self.resumed)
            && self.consumer.resume(&assignment).is_ok()
        {
            self.resumed = parts;
        }
        self.paused = pause;
        if pause {
            self.resumed.clear();
        }
    }

    fn apply(&mut self, cmd: Command) {
        let (Command::Ack { partition, .. } | Command::Release { partition, .. }) = cmd;
        apply_to(self.in_flight.entry(partition).or_default(), &cmd);
        if matches!(cmd, Command::Ack { .. }) {
            self.commit(partition);
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
            .add_partition_offset(&self.cfg.jobs_topic, partition, Offset::Offset(point))
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
    use super::{apply_to, Ask, Command, PartitionState, PauseClock, Rejoin, MAX_REJOIN_WAIT};
    use std::time::{Duration, Instant};

    #[test]
    fn a_rebalance_pause_runs_from_the_revoke_to_the_next_assignment() {
        let t0 = Instant::now();
        let mut c = PauseClock::default();
        // The first assignment ends no pause.
        c.assigned(t0);
        assert_eq!(c.unreported.take(), None);
        // Revoked (twice: the first counts), then assigned 2.5 s later.
        c.revoked(t0 + Duration::from_secs(10));
        c.revoked(t0 + Duration::from_secs(11));
        c.assigned(t0 + Duration::from_millis(12_500));
        assert_eq!(c.unreported.take(), Some(2.5));
        assert_eq!(c.unreported.take(), None);
    }

    #[test]
    fn a_free_worker_rejoins_while_work_waits_unconsumed() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Rejoin::new(s(6));
        // Busy: it does not look.
        assert!(!r.due(false, t0));
        assert!(r.due(true, t0));
        // Partition 0 holds 2 jobs and its committed offset stands still;
        // partition 1 is drained.
        let (committed, lag) = ([3i64, 5], [2u64, 0]);
        let stuck = Some((&committed[..], &lag[..]));
        assert_eq!(r.looked(stuck, t0), Ask::Nothing, "not for long yet");
        assert!(!r.due(true, t0 + s(5)));
        assert!(r.due(true, t0 + s(6)));
        // The broker may still sort it out (a rebalance waits out the dead
        // member): not before four session timeouts.
        assert_eq!(r.looked(stuck, t0 + s(6)), Ask::Nothing);
        assert_eq!(r.looked(stuck, t0 + s(12)), Ask::Nothing);
        assert_eq!(r.looked(stuck, t0 + s(18)), Ask::Nothing);
        assert_eq!(r.looked(stuck, t0 + s(24)), Ask::Rejoin, "stuck for 24 s");
        // It waits twice as long before the next look; still stuck, this
        // member may be the wedged one: a new member.
        assert!(!r.due(true, t0 + s(35)));
        assert!(r.due(true, t0 + s(36)));
        assert_eq!(r.looked(stuck, t0 + s(36)), Ask::NewMember);
        assert_eq!(r.wait, s(24));
        assert_eq!(r.looked(stuck, t0 + s(60)), Ask::NewMember);
        // The work is taken: nothing, and the wait is back to the first.
        assert_eq!(
            r.looked(Some((&[5, 5], &[0, 0])), t0 + s(108)),
            Ask::Nothing
        );
        assert_eq!(r.wait, s(6));
        // Stuck again later: a rejoin first again.
        let later = ([5i64, 5], [1u64, 0]);
        let later = Some((&later.0[..], &later.1[..]));
        assert_eq!(r.looked(later, t0 + s(120)), Ask::Nothing);
        assert_eq!(r.looked(later, t0 + s(144)), Ask::Rejoin);
        // A topic it cannot read: nothing.
        assert_eq!(r.looked(None, t0 + s(150)), Ask::Nothing);
        // The wait is capped.
        for i in 0..20 {
            r.looked(later, t0 + s(200 + 20 * i));
        }
        assert_eq!(r.wait, MAX_REJOIN_WAIT);
    }

    #[test]
    fn a_job_let_go_of_at_its_start_is_never_held_back() {
        let mut st = PartitionState::default();
        st.in_flight.extend([3, 4]);
        // 3 starts: let go of (acknowledged), so the commit moves past it.
        apply_to(
            &mut st,
            &Command::Ack {
                partition: 0,
                offset: 3,
            },
        );
        assert_eq!(st.commit_point(), Some(4));
        // Its worker shuts down mid-job: releasing it must not hold the
        // commit back to 3 (it is queued again as a new attempt instead).
        apply_to(
            &mut st,
            &Command::Release {
                partition: 0,
                offset: 3,
            },
        );
        assert_eq!(st.commit_point(), Some(4));
        // 4 has not started: released, it holds the commit and comes back.
        apply_to(
            &mut st,
            &Command::Release {
                partition: 0,
                offset: 4,
            },
        );
        assert_eq!(st.commit_point(), Some(4));
        assert!(st.held.contains(&4));
        // Its final acknowledgement clears the hold.
        apply_to(
            &mut st,
            &Command::Ack {
                partition: 0,
                offset: 4,
            },
        );
        assert_eq!(st.commit_point(), Some(5));
    }

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
