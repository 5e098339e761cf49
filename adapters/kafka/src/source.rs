//! The workers' side of `jobs-queue`: one consumer in the workers' group,
//! owned by a pump task. It reads one job ahead on each partition
//! ([`read_ahead_split`]) and hands out the oldest when a slot asks. A
//! partition holding a job read ahead is paused, and the pump keeps
//! polling, so a job longer than `max.poll.interval.ms` never gets the
//! worker thrown out of its group. Offsets are committed by hand, after a
//! job's start is published, and never past a job still in flight.

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap, VecDeque};
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
    /// Assignments so far (a rebalance may reset what was paused).
    assignments: u64,
}

impl PauseClock {
    fn revoked(&mut self, now: Instant) {
        self.revoked_at.get_or_insert(now);
    }

    fn assigned(&mut self, now: Instant) {
        self.assignments += 1;
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
    /// How long leaving may wait for the group to settle.
    settle: Duration,
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
            resumed: None,
            rejoin: Rejoin::new(session),
            pending: VecDeque::new(),
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
            settle: session,
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
    let consumer = group_consumer(cfg, pauses)?;
    consumer
        .subscribe(&[&cfg.jobs_topic])
        .map_err(unavailable)?;
    Ok(consumer)
}

/// A consumer of the workers' group, not subscribed yet (not a member).
fn group_consumer(
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
        // A fetch waiting for new jobs is answered within this long on a
        // broker that does not answer it as soon as a job lands (librdkafka
        // waits up to 500 ms by default).
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create_with_context(GroupLog {
            group: cfg.worker_group.clone(),
            pauses,
        })
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
        let job = jobs.recv().await;
        // The pump reads the next one ahead now.
        self.wake.notify_one();
        job.ok_or_else(|| unavailable("the job consumer has stopped"))
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
            // The pump leaves the group once it is settled (at most a
            // session timeout), then closes the consumer.
            let _ = tokio::time::timeout(self.settle + Duration::from_secs(15), done).await;
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

/// Whether a group in `state` (as DescribeGroups names it) is between
/// generations. tansu names a group that is forming around a leader
/// `Unknown`; a group that does not exist is `Dead` (Kafka) or absent.
fn rebalancing(state: &str) -> bool {
    matches!(
        state,
        "PreparingRebalance" | "CompletingRebalance" | "Assigning" | "Reconciling" | "Unknown"
    )
}

/// Leaves the group once it is not rebalancing, waiting at most `settle`
/// (then it leaves anyway), and serving the consumer meanwhile so that
/// this member still takes part in the rebalance. tansu 0.6 keeps a
/// departed leader as the leader of a group that was forming when it
/// left, and that group never forms again: every member, old or new, is
/// refused its assignment for good (RELIABILITY.md). A leave while the
/// group is stable is safe there, as it is everywhere. Members told to
/// stop together look twice, a random moment apart, and leave right after
/// the second look: a leave by one of them is then seen by the others.
async fn leave_settled(consumer: StreamConsumer<GroupLog>, cfg: &KafkaConfig, settle: Duration) {
    let deadline = Instant::now() + settle;
    let serve = |d: Duration| {
        let consumer = &consumer;
        async move {
            let until = Instant::now() + d;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                // Messages read now are not handed out nor committed: the
                // next owner reads them again.
                let _ = tokio::time::timeout(left, consumer.recv()).await;
            }
        }
    };
    let mut settled_once = false;
    loop {
        // Asked through this member's own client, so that the answer is
        // as fresh as can be when the leave follows it.
        let state = consumer
            .fetch_group_list(Some(&cfg.worker_group), Duration::from_secs(2))
            .ok()
            .and_then(|list| {
                list.groups()
                    .iter()
                    .find(|g| g.name() == cfg.worker_group)
                    .map(|g| g.state().to_string())
            });
        let busy = state.as_deref().is_some_and(rebalancing);
        if busy && Instant::now() >= deadline {
            tracing::warn!(group = %cfg.worker_group, state = ?state, "the group is still rebalancing: leaving anyway");
            break;
        }
        if busy {
            tracing::debug!(group = %cfg.worker_group, state = ?state, "the group is rebalancing: leaving once it is done");
            settled_once = false;
            serve(Duration::from_millis(250)).await;
        } else if settled_once {
            break;
        } else {
            settled_once = true;
            // A random moment, up to a second.
            serve(Duration::from_millis(
                (uuid::Uuid::new_v4().as_u128() % 1000) as u64,
            ))
            .await;
        }
    }
    let _ = leave(consumer).await;
}

/// Which assigned partitions to pause and which to read on: a worker
/// reads one job ahead on each of its partitions, and pauses a partition
/// while its job read ahead waits for a slot. When a slot frees, the next
/// job is already here, not one fetch away (a resumed partition is fetched
/// anew, since pausing drops what the client had read ahead); and the slot
/// can take the oldest of them ([`oldest`]), as it would from one queue. A
/// job read ahead waits on this worker, but it would wait on it anyway:
/// its partition has this one owner.
fn read_ahead_split(assigned: &[i32], holding: &BTreeSet<i32>) -> (Vec<i32>, Vec<i32>) {
    assigned.iter().partition(|p| holding.contains(p))
}

/// The job read ahead to hand out first: the one submitted first (a
/// partition's own jobs come in order), so that no partition of a busy
/// worker starves behind another.
fn oldest<T: Ord>(submitted: impl IntoIterator<Item = T>) -> Option<usize> {
    submitted
        .into_iter()
        .enumerate()
        // The first of equals: the one read first.
        .min_by(|(_, a), (_, b)| a.cmp(b))
        .map(|(i, _)| i)
}

struct Pump {
    consumer: StreamConsumer<GroupLog>,
    cfg: KafkaConfig,
    demand: Arc<AtomicUsize>,
    wake: Arc<tokio::sync::Notify>,
    in_flight: HashMap<i32, PartitionState>,
    pauses: Arc<std::sync::Mutex<PauseClock>>,
    /// The partitions last resumed, and after which assignment.
    resumed: Option<(Vec<i32>, u64)>,
    rejoin: Rejoin,
    /// Jobs read ahead that no slot has asked for yet (see
    /// [`read_ahead`]), with their partitions.
    pending: VecDeque<(i32, Delivery)>,
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
            let assigned = self.assigned();
            if self.demand.load(Ordering::SeqCst) > 0 && !self.hand_over(&jobs, &assigned) {
                break;
            }
            self.read_ahead(&assigned);
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
                                // Handed to a slot at the loop's top, now or
                                // as soon as one is free.
                                self.pending.push_back((partition, Delivery { job, handle: format!("{partition}:{offset}") }));
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
        let settle = self.settle();
        leave_settled(self.consumer, &self.cfg, settle).await;
        let _ = done.send(());
    }

    /// How long a leave waits for a rebalance to end ([`leave_settled`]):
    /// a session timeout, in which the members still in the group notice
    /// the rebalance (they heartbeat four times in it) and its leader
    /// hands the partitions out.
    fn settle(&self) -> Duration {
        Duration::from_millis(self.cfg.session_timeout_ms.into())
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
        match group_consumer(&self.cfg, self.pauses.clone()) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.consumer, fresh);
                self.resumed = None;
                // The new member reads from the group's commits: what the
                // old one held comes again, maybe to another worker.
                for (partition, d) in std::mem::take(&mut self.pending) {
                    self.forget(partition, &d);
                }
                // The old member leaves first, once the group is settled
                // ([`leave_settled`]), bounded (leaving may wait on the
                // wedged join). A new member that joined beside it would
                // get a share of the partitions only, and lose it at the
                // rebalance the old one's leave starts.
                let bound = self.settle() * 2;
                let _ =
                    tokio::time::timeout(bound, leave_settled(old, &self.cfg, self.settle())).await;
                if let Err(e) = self.consumer.subscribe(&[&self.cfg.jobs_topic]) {
                    tracing::warn!(error = %e, "could not join the workers' group as a new member");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not join the workers' group as a new member")
            }
        }
    }

    /// Gives the oldest pending job to the slot that waits, unless its
    /// partition has moved to another member meanwhile (that member reads
    /// it from the last commit; this one forgets it). False when the worker
    /// has stopped taking jobs.
    fn hand_over(&mut self, jobs: &mpsc::Sender<Delivery>, assigned: &[i32]) -> bool {
        for (p, d) in std::mem::take(&mut self.pending) {
            if assigned.contains(&p) {
                self.pending.push_back((p, d));
            } else {
                tracing::debug!(
                    partition = p,
                    "a job read ahead is on a partition moved elsewhere: left to its new owner"
                );
                self.forget(p, &d);
            }
        }
        let Some(first) = oldest(self.pending.iter().map(|(_, d)| d.job.submitted_at)) else {
            return true;
        };
        match jobs.try_reserve() {
            Ok(permit) => {
                if let Some((_, d)) = self.pending.remove(first) {
                    permit.send(d);
                }
                true
            }
            // The slot has not taken the last one yet: it wakes the pump
            // when it does.
            Err(mpsc::error::TrySendError::Full(())) => true,
            Err(mpsc::error::TrySendError::Closed(())) => false,
        }
    }

    /// This member's partitions of the jobs topic.
    fn assigned(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .filter(|e| e.topic() == self.cfg.jobs_topic)
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops a job this member will not hand out: its offset no longer
    /// holds the partition's commit back.
    fn forget(&mut self, partition: i32, delivery: &Delivery) {
        if let (Some(st), Ok((_, offset))) = (
            self.in_flight.get_mut(&partition),
            KafkaJobSource::handle(delivery),
        ) {
            st.in_flight.remove(&offset);
        }
    }

    /// Pauses the partitions holding a job read ahead and reads on from the
    /// others ([`read_ahead_split`]). Partitions assigned by a rebalance may
    /// start unpaused, so the pauses are made each time; librdkafka keeps a
    /// partition's pause across a rebalance that revokes and assigns it
    /// again, so the others are resumed again after each assignment.
    fn read_ahead(&mut self, assigned: &[i32]) {
        if assigned.is_empty() {
            return;
        }
        let holding: BTreeSet<i32> = self.pending.iter().map(|(p, _)| *p).collect();
        let (pause, read) = read_ahead_split(assigned, &holding);
        let list = |ps: &[i32]| {
            let mut tpl = TopicPartitionList::new();
            for &p in ps {
                tpl.add_partition(&self.cfg.jobs_topic, p);
            }
            tpl
        };
        if !pause.is_empty() {
            let _ = self.consumer.pause(&list(&pause));
        }
        let generation = self.pauses.lock().map(|p| p.assignments).unwrap_or(0);
        let now = Some((read, generation));
        if now != self.resumed {
            if let Some((read, _)) = &now {
                if !read.is_empty() && self.consumer.resume(&list(read)).is_err() {
                    return;
                }
            }
            self.resumed = now;
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
    use super::{
        apply_to, rebalancing, Ask, Command, PartitionState, PauseClock, Rejoin, MAX_REJOIN_WAIT,
    };
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
    fn a_leave_waits_while_the_group_is_between_generations() {
        // (the state DescribeGroups gives, whether a leave waits)
        for (state, waits) in [
            ("Stable", false),
            ("Empty", false),
            ("Dead", false),
            ("", false),
            ("PreparingRebalance", true),
            ("CompletingRebalance", true),
            // tansu: forming with no leader yet, and around a leader.
            ("Assigning", true),
            ("Unknown", true),
        ] {
            assert_eq!(rebalancing(state), waits, "{state}");
        }
    }

    #[test]
    fn a_worker_reads_one_job_ahead_on_each_partition() {
        use super::read_ahead_split;
        use std::collections::BTreeSet;
        // (assigned, partitions holding a job read ahead) -> (paused, read on)
        for (assigned, holding, paused, read) in [
            (vec![0, 4, 8], vec![], vec![], vec![0, 4, 8]),
            (vec![0, 4, 8], vec![4], vec![4], vec![0, 8]),
            (vec![0, 4, 8], vec![0, 4, 8], vec![0, 4, 8], vec![]),
            // A job read ahead on a partition moved away pauses nothing.
            (vec![0, 8], vec![4], vec![], vec![0, 8]),
        ] {
            let holding: BTreeSet<i32> = holding.into_iter().collect();
            assert_eq!(read_ahead_split(&assigned, &holding), (paused, read));
        }
    }

    #[test]
    fn the_oldest_job_read_ahead_goes_first() {
        use super::oldest;
        assert_eq!(oldest(Vec::<i64>::new()), None);
        // (submitted at, in the order read) -> the one handed out.
        // Partition 0 keeps a backlog of newer jobs; 4's waits longest.
        assert_eq!(oldest([30, 10, 20]), Some(1));
        // Ties go in the order read.
        assert_eq!(oldest([10, 10]), Some(0));
        assert_eq!(oldest([20, 10, 10]), Some(1));
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
