//! One worker slot: claim a job, say it started, run it while renewing its
//! lease, store its files, say how it ended, acknowledge it. On shutdown a
//! running job gets a grace period; past it the job is stopped and handed
//! back to the queue. An attempt whose lease was lost (the worker was
//! paused past it, or could not renew it) or that was fenced (queued again
//! elsewhere) is stopped and says nothing more. The infrastructure's
//! failures (an unreachable remote, a failed upload) are tried again as a
//! new attempt, up to `worker.max_attempts`; the job's own never are.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use kumulus_core::event::{EventKind, MemberNote, Outcome, StatusEvent};
use kumulus_core::job::{JobId, JobState, QueuedJob};
use kumulus_core::ports::{
    blob_name, BlobStore, CancelRequest, Delivery, JobQueue, JobSource, PortError, StatusBus,
};

use crate::runner::{run_job, RunSettings};

/// What every slot of a worker shares.
pub struct Shared {
    pub source: Arc<dyn JobSource>,
    pub status: Arc<dyn StatusBus>,
    pub blobs: Arc<dyn BlobStore>,
    /// Where new attempts of a job go.
    pub queue: Arc<dyn JobQueue>,
    pub leases: LeaseSettings,
    pub settings: RunSettings,
    pub shutdown_grace: Duration,
    pub running: Running,
    /// This worker's name in status events.
    pub id: String,
}

/// How a worker keeps its leases, and how often a job is tried.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub heartbeat: Duration,
    pub lease: Duration,
    pub max_attempts: u32,
}

/// A job running here.
struct Entry {
    owner: String,
    attempt: u32,
    token: CancellationToken,
    /// Set when the attempt was superseded: it stops and says nothing more.
    fenced: Arc<AtomicBool>,
}

/// Jobs running now (to stop them on cancel) and jobs cancelled or
/// superseded lately (to skip them if they are claimed afterwards).
#[derive(Default)]
pub struct Running {
    jobs: Mutex<HashMap<JobId, Entry>>,
    cancelled: Mutex<Recent<JobId>>,
    superseded: Mutex<HashMap<JobId, u32>>,
    /// Attempts this worker ended lately: the broker may deliver one again
    /// (a rebalance before its offset was committed); it is not run twice.
    ended: Mutex<Recent<(JobId, u32)>>,
    /// Attempts other workers were seen running (their `started` and
    /// heartbeat events), and when last.
    elsewhere: Mutex<HashMap<(JobId, u32), (String, Instant)>>,
    /// A job has started here since the worker started.
    started_any: AtomicBool,
}

/// Attempts of other workers remembered at most.
const REMEMBERED_ELSEWHERE: usize = 10_000;

/// A set that keeps the last [`REMEMBERED_CANCELLATIONS`] items it was given.
struct Recent<T> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Copy> Recent<T> {
    fn insert(&mut self, item: T) {
        if self.set.insert(item) {
            self.order.push_back(item);
            if self.order.len() > REMEMBERED_CANCELLATIONS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, item: &T) -> bool {
        self.set.contains(item)
    }
}

const REMEMBERED_CANCELLATIONS: usize = 100_000;

impl Running {
    /// Learns from a status event which attempts other workers run.
    pub fn observe(&self, ev: &StatusEvent, me: &str) {
        let Ok(mut seen) = self.elsewhere.lock() else {
            return;
        };
        match (&ev.kind, ev.worker.as_deref()) {
            (EventKind::Started | EventKind::Heartbeat, Some(w)) if w != me => {
                if seen.len() >= REMEMBERED_ELSEWHERE {
                    let horizon = Duration::from_secs(600);
                    seen.retain(|_, (_, at)| at.elapsed() < horizon);
                    if seen.len() >= REMEMBERED_ELSEWHERE {
                        seen.clear();
                    }
                }
                seen.insert((ev.job_id, ev.attempt), (w.to_string(), Instant::now()));
            }
            (EventKind::Finished(_) | EventKind::Requeued { .. }, _) => {
                seen.retain(|(job, attempt), _| *job != ev.job_id || *attempt > ev.attempt);
            }
            _ => {}
        }
    }

    /// The worker that runs `attempt` of `job` elsewhere, if one was seen
    /// doing so within `lease`.
    pub fn held_elsewhere(&self, job: JobId, attempt: u32, lease: Duration) -> Option<String> {
        let seen = self.elsewhere.lock().ok()?;
        seen.get(&(job, attempt))
            .filter(|(_, at)| at.elapsed() <= lease)
            .map(|(w, _)| w.clone())
    }

    /// Records a cancellation and stops the job if it runs here; or, for a
    /// fence, stops the superseded attempt.
    pub fn cancel(&self, req: &CancelRequest) {
        if let Some(upto) = req.superseded {
            if let Ok(mut s) = self.superseded.lock() {
                if s.len() >= REMEMBERED_CANCELLATIONS {
                    s.clear();
                }
                let e = s.entry(req.job_id).or_insert(upto);
                *e = (*e).max(upto);
            }
            if let Ok(jobs) = self.jobs.lock() {
                if let Some(entry) = jobs.get(&req.job_id).filter(|e| e.attempt <= upto) {
                    entry.fenced.store(true, Ordering::SeqCst);
                    entry.token.cancel();
                }
            }
            return;
        }
        if let Ok(mut c) = self.cancelled.lock() {
            c.insert(req.job_id);
        }
        if let Ok(jobs) = self.jobs.lock() {
            if let Some(entry) = jobs.get(&req.job_id) {
                if entry.owner == req.owner {
                    entry.token.cancel();
                }
            }
        }
    }

    fn ended_here(&self, id: JobId, attempt: u32) -> bool {
        self.ended
            .lock()
            .map(|e| e.contains(&(id, attempt)))
            .unwrap_or(false)
    }

    /// Whether this is the worker's first start of a job (asked once per start).
    fn first_start(&self) -> bool {
        !self.started_any.swap(true, Ordering::SeqCst)
    }

    /// Whether `attempt` of `id` runs on this worker now.
    fn runs_here(&self, id: JobId, attempt: u32) -> bool {
        self.jobs
            .lock()
            .map(|j| j.get(&id).is_some_and(|e| e.attempt == attempt))
            .unwrap_or(false)
    }

    fn remember_ended(&self, id: JobId, attempt: u32) {
        if let Ok(mut e) = self.ended.lock() {
            e.insert((id, attempt));
        }
    }

    fn was_superseded(&self, id: JobId, attempt: u32) -> bool {
        self.superseded
            .lock()
            .map(|s| s.get(&id).is_some_and(|&upto| attempt <= upto))
            .unwrap_or(false)
    }

    fn was_cancelled(&self, id: JobId) -> bool {
        self.cancelled
            .lock()
            .map(|c| c.contains(&id))
            .unwrap_or(false)
    }

    fn register(&self, job: &QueuedJob) -> (CancellationToken, Arc<AtomicBool>) {
        let token = CancellationToken::new();
        let fenced = Arc::new(AtomicBool::new(false));
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(
                job.id,
                Entry {
                    owner: job.owner.clone(),
                    attempt: job.attempt,
                    token: token.clone(),
                    fenced: fenced.clone(),
                },
            );
        }
        (token, fenced)
    }

    fn unregister(&self, id: JobId) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(&id);
        }
    }

    /// How many jobs run now.
    pub fn count(&self) -> usize {
        self.jobs.lock().map(|j| j.len()).unwrap_or(0)
    }
}

/// Claims and runs jobs until `shutdown`, or until `retire` (the pool
/// shrinks: the slot takes no new job but finishes the one it runs).
pub async fn slot_loop(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    retire: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = retire.cancelled() => return,
            next = shared.source.next() => next,
        };
        match next {
            Ok(delivery) => handle(&shared, delivery, &shutdown).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not take a job; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

#[tracing::instrument(skip_all, fields(job_id = %delivery.job.id, attempt = delivery.job.attempt))]
async fn handle(shared: &Shared, delivery: Delivery, shutdown: &CancellationToken) {
    let job = &delivery.job;
    if shared.running.was_superseded(job.id, job.attempt) {
        tracing::info!("skipping a superseded attempt");
        ack(shared, &delivery).await;
        return;
    }
    if shared.running.ended_here(job.id, job.attempt) {
        tracing::info!("skipping an attempt this worker already ended (delivered again)");
        ack(shared, &delivery).await;
        return;
    }
    // Delivered again while it runs here (a new group member reads from
    // the last commit): the run under way keeps it.
    if shared.running.runs_here(job.id, job.attempt) {
        tracing::info!("skipping an attempt this worker runs now (delivered again)");
        ack(shared, &delivery).await;
        return;
    }
    // Delivered again while another worker runs it (a rebalance moved its
    // partition before the start's commit landed): that worker keeps it,
    // and if it dies the reaper queues a new attempt.
    if let Some(other) = shared
        .running
        .held_elsewhere(job.id, job.attempt, shared.leases.lease)
    {
        tracing::info!(%other, "skipping an attempt another worker runs");
        ack(shared, &delivery).await;
        return;
    }
    if shared.running.was_cancelled(job.id) {
        tracing::info!("skipping a cancelled job");
        let outcome = Outcome {
            state: JobState::Cancelled,
            started_at: None,
            elapsed_secs: None,
            exit_code: None,
            error: Some("cancelled before it started".into()),
            files: Vec::new(),
            infrastructure: false,
        };
        finish(shared, &delivery, outcome).await;
        return;
    }
    // A retry waits out its backoff.
    if let Some(wait) = job
        .not_before
        .and_then(|t| (t - chrono::Utc::now()).to_std().ok())
    {
        tokio::select! {
            _ = shutdown.cancelled() => {
                release(shared, &delivery).await;
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    let (token, fenced) = shared.running.register(job);
    let started = StatusEvent::new(job.id, job.owner.clone(), EventKind::Started)
        .from_worker(&shared.id)
        .for_attempt(job.attempt)
        .with_member(MemberNote {
            first_job: shared.running.first_start(),
            rebalance_paused_secs: shared.source.take_rebalance_pause(),
        });
    let started_at = started.at;
    if let Err(e) = publish(shared.status.as_ref(), &started).await {
        tracing::warn!(error = %e, "could not announce the start; handing the job back");
        shared.running.unregister(job.id);
        release(shared, &delivery).await;
        return;
    }
    tracing::info!("job started");
    // Where the queue lets go of the job now, its lease alone keeps it.
    let let_go = match shared.source.started(&delivery).await {
        Ok(let_go) => let_go,
        Err(e) => {
            tracing::warn!(error = %e, "could not let the queue know the job started");
            false
        }
    };
    let beating = CancellationToken::new();
    let renewed = Arc::new(Mutex::new(Instant::now()));
    let heart = tokio::spawn(heartbeats(
        shared.status.clone(),
        job.clone(),
        shared.id.clone(),
        shared.leases,
        Lease {
            token: token.clone(),
            fenced: fenced.clone(),
            renewed: renewed.clone(),
        },
        beating.clone(),
    ));

    let run = run_job(job, &shared.settings, &token);
    tokio::pin!(run);
    let ran = tokio::select! {
        r = &mut run => Some(r),
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(shared.shutdown_grace, &mut run).await {
                Ok(r) => Some(r),
                Err(_) => {
                    tracing::info!("shutting down: stopping the job and handing it back");
                    token.cancel();
                    let _ = run.await;
                    None
                }
            }
        }
    };
    shared.running.unregister(job.id);
    // The lease is kept until the job's end is reported: storing its files
    // can take longer than a lease, and the attempt is alive meanwhile.
    let stop_beating = || async {
        beating.cancel();
        let _ = heart.await;
    };
    let Some((result, dir)) = ran else {
        stop_beating().await;
        if let_go {
            hand_back(shared, &delivery).await;
        } else {
            release(shared, &delivery).await;
        }
        return;
    };
    // Woken after a pause, with the job done meanwhile: the lease may be
    // another attempt's by now, whatever the heartbeat task saw.
    if renewed
        .lock()
        .map(|r| r.elapsed() > shared.leases.lease)
        .unwrap_or(false)
    {
        fenced.store(true, Ordering::SeqCst);
    }
    if fenced.load(Ordering::SeqCst) {
        // Another attempt owns the job now: this one leaves no trace.
        stop_beating().await;
        tracing::warn!("the attempt was superseded (its lease ran out): stopped, nothing reported");
        ack(shared, &delivery).await;
        return;
    }

    let mut error = result.error;
    let mut state = result.state;
    let mut infrastructure = result.infrastructure;
    let mut names = Vec::with_capacity(result.files.len());
    for (name, path) in &result.files {
        let stored_as = blob_name(job.attempt, name);
        match store(shared.blobs.as_ref(), job.id, &stored_as, path).await {
            Ok(()) => names.push(name.clone()),
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "could not store a job file");
                if state == JobState::Succeeded {
                    state = JobState::Failed;
                    infrastructure = true;
                }
                error.get_or_insert_with(|| format!("could not store the file {name}: {e}"));
            }
        }
    }
    drop(dir);
    if fenced.load(Ordering::SeqCst) {
        // The lease ran out while the files were stored (the worker was
        // paused): another attempt may own the job now.
        stop_beating().await;
        tracing::warn!("the attempt was superseded while its files were stored: nothing reported");
        ack(shared, &delivery).await;
        return;
    }
    if infrastructure && job.attempt < shared.leases.max_attempts {
        let reason = error
            .clone()
            .unwrap_or_else(|| "infrastructure failure".into());
        let retried = retry(shared, &delivery, reason).await;
        if retried {
            stop_beating().await;
            return;
        }
    }
    let outcome = Outcome {
        state,
        started_at: Some(started_at),
        elapsed_secs: Some(result.elapsed.as_secs_f64()),
        exit_code: result.exit_code,
        error: if infrastructure {
            error.map(|e| format!("infrastructure failure after {} attempts: {e}", job.attempt))
        } else {
            error
        },
        files: names,
        infrastructure,
    };
    tracing::info!(state = %outcome.state, exit_code = ?outcome.exit_code, "job ended");
    finish(shared, &delivery, outcome).await;
    stop_beating().await;
}

/// A running job's hold on its lease.
struct Lease {
    token: CancellationToken,
    fenced: Arc<AtomicBool>,
    /// When the lease was last renewed.
    renewed: Arc<Mutex<Instant>>,
}

/// Renews the lease on `job` every heartbeat until `stop`. A lease that ran
/// out (the worker was paused, or could not renew it for that long) may be
/// another attempt's by now: the job is fenced and stopped.
async fn heartbeats(
    status: Arc<dyn StatusBus>,
    job: QueuedJob,
    worker: String,
    leases: LeaseSettings,
    lease: Lease,
    stop: CancellationToken,
) {
    let since = |l: &Lease| l.renewed.lock().map(|r| r.elapsed()).unwrap_or_default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(leases.heartbeat) => {}
        }
        // The monotonic clock counts time spent stopped too.
        if since(&lease) > leases.lease {
            tracing::warn!(job_id = %job.id, attempt = job.attempt, "the job's lease ran out: stopping it");
            lease.fenced.store(true, Ordering::SeqCst);
            lease.token.cancel();
            return;
        }
        let beat = StatusEvent::new(job.id, job.owner.clone(), EventKind::Heartbeat)
            .from_worker(&worker)
            .for_attempt(job.attempt);
        match status.publish(&beat).await {
            Ok(()) => {
                if let Ok(mut r) = lease.renewed.lock() {
                    *r = Instant::now();
                }
            }
            Err(e) => tracing::warn!(job_id = %job.id, error = %e, "could not renew a job's lease"),
        }
    }
}

/// Queues the next attempt of a job the infrastructure failed, after a
/// backoff, and lets this one go. False if it could not be queued (the job
/// then ends as it is).
async fn retry(shared: &Shared, delivery: &Delivery, reason: String) -> bool {
    let job = &delivery.job;
    let mut next = job.clone();
    next.attempt += 1;
    next.not_before = Some(
        chrono::Utc::now()
            + chrono::Duration::from_std(kumulus_core::lease::backoff(job.attempt))
                .unwrap_or_default(),
    );
    if let Err(e) = shared.queue.requeue(&next).await {
        tracing::warn!(error = %e, "could not queue the next attempt");
        return false;
    }
    tracing::warn!(%reason, next = next.attempt, "infrastructure failure: trying the job again");
    announce_next_attempt(shared, job, reason, false).await;
    ack(shared, delivery).await;
    true
}

/// The worker stops in the middle of a job the queue let go of at its
/// start: it is queued again at once as a new attempt, rather than wait for
/// the reaper to find its lease lapsed.
async fn hand_back(shared: &Shared, delivery: &Delivery) {
    let job = &delivery.job;
    let mut next = job.clone();
    next.attempt += 1;
    next.not_before = None;
    if let Err(e) = shared.queue.requeue(&next).await {
        tracing::warn!(error = %e, "could not hand the job back; the reaper queues it again when its lease lapses");
        return;
    }
    let reason = format!("{} shut down during the attempt", shared.id);
    announce_next_attempt(shared, job, reason, true).await;
}

/// Says that `job`'s attempt was given up for `reason` and the next one is
/// queued; `handed_back` where this worker gave it back as it stopped.
async fn announce_next_attempt(
    shared: &Shared,
    job: &QueuedJob,
    reason: String,
    handed_back: bool,
) {
    let event = StatusEvent::new(
        job.id,
        job.owner.clone(),
        EventKind::Requeued {
            reason,
            handed_back,
        },
    )
    .from_worker(&shared.id)
    .for_attempt(job.attempt);
    if let Err(e) = publish(shared.status.as_ref(), &event).await {
        // The next attempt's own events make it current.
        tracing::warn!(error = %e, "could not announce the next attempt");
    }
}

/// Publishes the final event and acknowledges the job (one transaction
/// where the queue can); if that fails the job goes back to the queue
/// rather than be lost.
async fn finish(shared: &Shared, delivery: &Delivery, outcome: Outcome) {
    let job = &delivery.job;
    let event = StatusEvent::new(job.id, job.owner.clone(), EventKind::Finished(outcome))
        .from_worker(&shared.id)
        .for_attempt(job.attempt);
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=ATTEMPTS {
        match shared
            .source
            .finish(delivery, &event, shared.status.as_ref())
            .await
        {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(attempt, "final status recorded");
                }
                shared.running.remember_ended(job.id, job.attempt);
                return;
            }
            Err(e) if attempt == ATTEMPTS => {
                tracing::error!(error = %e, "could not record the final status; handing the job back");
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "recording the final status failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
    }
    release(shared, delivery).await;
}

async fn ack(shared: &Shared, delivery: &Delivery) {
    if let Err(e) = shared.source.ack(delivery).await {
        tracing::warn!(error = %e, "could not acknowledge a job");
    }
}

async fn release(shared: &Shared, delivery: &Delivery) {
    if let Err(e) = shared.source.release(delivery).await {
        tracing::warn!(error = %e, "could not hand a job back; it returns when its claim lapses");
    }
}

const ATTEMPTS: u32 = 8;

/// Publishes with retries and backoff (about 30 s in all).
async fn publish(bus: &dyn StatusBus, event: &StatusEvent) -> Result<(), PortError> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match bus.publish(event).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "publishing a status event failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
                attempt += 1;
            }
        }
    }
}

async fn store(
    blobs: &dyn BlobStore,
    job: JobId,
    name: &str,
    path: &std::path::Path,
) -> Result<(), PortError> {
    let mut attempt = 1;
    loop {
        match blobs.put_file(job, name, path).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 3 => return Err(e),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500 * attempt as u64)).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_running_here_is_known_until_it_ends() {
        let running = Running::default();
        let job = QueuedJob {
            id: JobId::new(),
            owner: "ana".into(),
            url: "https://example.com/r.git".into(),
            args: Vec::new(),
            config: None,
            timeout_secs: 60,
            limits: Default::default(),
            submitted_at: chrono::Utc::now(),
            attempt: 2,
            not_before: None,
            partition: None,
        };
        assert!(!running.runs_here(job.id, 2));
        running.register(&job);
        assert!(running.runs_here(job.id, 2));
        // Another attempt of the same job is not this run.
        assert!(!running.runs_here(job.id, 3));
        running.unregister(job.id);
        assert!(!running.runs_here(job.id, 2));
    }

    #[test]
    fn an_attempt_seen_running_elsewhere_is_left_to_that_worker() {
        let running = Running::default();
        let job = JobId::new();
        let lease = Duration::from_secs(3);
        let ev = |kind: EventKind, worker: &str, attempt: u32| {
            StatusEvent::new(job, "ana", kind)
                .from_worker(worker)
                .for_attempt(attempt)
        };
        assert_eq!(running.held_elsewhere(job, 1, lease), None);
        // Our own start is not "elsewhere".
        running.observe(&ev(EventKind::Started, "me", 1), "me");
        assert_eq!(running.held_elsewhere(job, 1, lease), None);
        running.observe(&ev(EventKind::Heartbeat, "w2", 1), "me");
        assert_eq!(running.held_elsewhere(job, 1, lease).as_deref(), Some("w2"));
        // Another attempt is not held.
        assert_eq!(running.held_elsewhere(job, 2, lease), None);
        // Past its lease, it is no longer held.
        assert_eq!(running.held_elsewhere(job, 1, Duration::ZERO), None);
        // Given up (queued again): forgotten.
        running.observe(
            &ev(
                EventKind::Requeued {
                    reason: "gone".into(),
                    handed_back: false,
                },
                "w2",
                1,
            ),
            "me",
        );
        assert_eq!(running.held_elsewhere(job, 1, lease), None);
    }
}
