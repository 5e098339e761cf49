//! One worker slot: claim a job, say it started, run it, store its files,
//! say how it ended, acknowledge it. On shutdown a running job gets a grace
//! period; past it the job is stopped and handed back to the queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::event::{EventKind, Outcome, StatusEvent};
use kumulus_core::job::{JobId, JobState};
use kumulus_core::ports::{BlobStore, CancelRequest, Delivery, JobSource, PortError, StatusBus};

use crate::runner::{run_job, RunSettings};

/// What every slot of a worker shares.
pub struct Shared {
    pub source: Arc<dyn JobSource>,
    pub status: Arc<dyn StatusBus>,
    pub blobs: Arc<dyn BlobStore>,
    pub settings: RunSettings,
    pub shutdown_grace: Duration,
    pub running: Running,
    /// This worker's name in status events.
    pub id: String,
}

/// Jobs running now (to stop them on cancel) and jobs cancelled lately (to
/// skip them if they are claimed after the cancellation arrived).
#[derive(Default)]
pub struct Running {
    jobs: Mutex<HashMap<JobId, (String, CancellationToken)>>,
    cancelled: Mutex<(HashSet<JobId>, VecDeque<JobId>)>,
}

const REMEMBERED_CANCELLATIONS: usize = 100_000;

impl Running {
    /// Records a cancellation and stops the job if it runs here.
    pub fn cancel(&self, req: &CancelRequest) {
        if let Ok(mut c) = self.cancelled.lock() {
            if c.0.insert(req.job_id) {
                c.1.push_back(req.job_id);
                if c.1.len() > REMEMBERED_CANCELLATIONS {
                    if let Some(old) = c.1.pop_front() {
                        c.0.remove(&old);
                    }
                }
            }
        }
        if let Ok(jobs) = self.jobs.lock() {
            if let Some((owner, token)) = jobs.get(&req.job_id) {
                if owner == &req.owner {
                    token.cancel();
                }
            }
        }
    }

    fn was_cancelled(&self, id: JobId) -> bool {
        self.cancelled
            .lock()
            .map(|c| c.0.contains(&id))
            .unwrap_or(false)
    }

    fn register(&self, id: JobId, owner: &str) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id, (owner.to_string(), token.clone()));
        }
        token
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

#[tracing::instrument(skip_all, fields(job_id = %delivery.job.id))]
async fn handle(shared: &Shared, delivery: Delivery, shutdown: &CancellationToken) {
    let job = &delivery.job;
    if shared.running.was_cancelled(job.id) {
        tracing::info!("skipping a cancelled job");
        let outcome = Outcome {
            state: JobState::Cancelled,
            started_at: None,
            elapsed_secs: None,
            exit_code: None,
            error: Some("cancelled before it started".into()),
            files: Vec::new(),
        };
        finish(shared, &delivery, outcome).await;
        return;
    }
    let token = shared.running.register(job.id, &job.owner);
    let started =
        StatusEvent::new(job.id, job.owner.clone(), EventKind::Started).from_worker(&shared.id);
    let started_at = started.at;
    if let Err(e) = publish(shared.status.as_ref(), &started).await {
        tracing::warn!(error = %e, "could not announce the start; handing the job back");
        shared.running.unregister(job.id);
        release(shared, &delivery).await;
        return;
    }
    tracing::info!("job started");

    let run = run_job(job, &shared.settings, &token);
    tokio::pin!(run);
    let (result, dir) = tokio::select! {
        r = &mut run => r,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(shared.shutdown_grace, &mut run).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!("shutting down: stopping the job and handing it back");
                    token.cancel();
                    let _ = run.await;
                    shared.running.unregister(job.id);
                    release(shared, &delivery).await;
                    return;
                }
            }
        }
    };
    shared.running.unregister(job.id);

    let mut error = result.error;
    let mut state = result.state;
    let mut names = Vec::with_capacity(result.files.len());
    for (name, path) in &result.files {
        match store(shared.blobs.as_ref(), job.id, name, path).await {
            Ok(()) => names.push(name.clone()),
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "could not store a job file");
                if state == JobState::Succeeded {
                    state = JobState::Failed;
                }
                error.get_or_insert_with(|| format!("could not store the file {name}: {e}"));
            }
        }
    }
    drop(dir);
    let outcome = Outcome {
        state,
        started_at: Some(started_at),
        elapsed_secs: Some(result.elapsed.as_secs_f64()),
        exit_code: result.exit_code,
        error,
        files: names,
    };
    tracing::info!(state = %outcome.state, exit_code = ?outcome.exit_code, "job ended");
    finish(shared, &delivery, outcome).await;
}

/// Publishes the final event, then acknowledges the job; if the event cannot
/// be published the job goes back to the queue rather than be lost.
async fn finish(shared: &Shared, delivery: &Delivery, outcome: Outcome) {
    let job = &delivery.job;
    let event = StatusEvent::new(job.id, job.owner.clone(), EventKind::Finished(outcome))
        .from_worker(&shared.id);
    match publish(shared.status.as_ref(), &event).await {
        Ok(()) => {
            if let Err(e) = shared.source.ack(delivery).await {
                tracing::warn!(error = %e, "could not acknowledge a finished job");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not publish the final status; handing the job back");
            release(shared, delivery).await;
        }
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
