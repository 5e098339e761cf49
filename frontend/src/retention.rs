//! Removing ended jobs: on their owner's request (`DELETE /api/jobs/{id}`)
//! and, with `retention.days` set, by a sweep that removes the jobs that
//! ended longer ago than that. Files go first, then the record: a removal
//! cut short leaves a record that the next sweep (or request) finishes.
//! Every removal is counted (`kumulus_jobs_removed_total{reason}`). With
//! several frontends one sweeps at a time (the lead the reaper takes), and
//! removing twice is harmless.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::job::{JobId, JobRecord};
use kumulus_core::ports::{Leadership, PortResult};

use crate::AppState;

/// Jobs removed per round of a sweep.
const BATCH: usize = 200;

/// Why a job was removed (the metric's label).
#[derive(Debug, Clone, Copy)]
pub enum Reason {
    Deleted,
    Expired,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Expired => "expired",
        }
    }
}

/// Removes an ended job's files, then its record.
pub async fn remove(state: &AppState, rec: &JobRecord, why: Reason) -> PortResult<()> {
    let files = state.ports.blobs.remove_job(rec.id).await?;
    state.ports.store.remove(rec.id).await?;
    state
        .metrics
        .jobs_removed
        .with_label_values(&[why.label()])
        .inc();
    tracing::info!(job_id = %rec.id, files, reason = why.label(), "job removed");
    Ok(())
}

/// After a running job is deleted, its worker may still upload its logs as
/// it stops (the cancel reaches it within a lease): sweep the job's files
/// again a few times, until well past the time a worker takes to stop.
pub fn sweep_late_files(blobs: Arc<dyn kumulus_core::ports::BlobStore>, id: JobId) {
    tokio::spawn(async move {
        for wait in [5, 25, 90] {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match blobs.remove_job(id).await {
                Ok(0) => {}
                Ok(files) => {
                    tracing::info!(job_id = %id, files, "removed the files a deleted job's worker uploaded as it stopped")
                }
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "could not sweep a deleted job's late files")
                }
            }
        }
    });
}

pub struct Retention {
    pub state: Arc<AppState>,
    pub keep: Duration,
    pub period: Duration,
    /// The lead the reaper takes, with the reaper's name for this replica
    /// and its time to live (the lead is one, shared by both sweeps).
    pub leader: Arc<dyn Leadership>,
    pub holder: String,
    pub lead_ttl: Duration,
}

impl Retention {
    /// Sweeps every period until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.period) => {}
            }
            match self.leader.lead(&self.holder, self.lead_ttl).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the retention sweep's lead");
                    continue;
                }
            }
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "retention sweep"),
                Err(e) => {
                    tracing::warn!(error = %e, "the retention sweep failed; retrying next period")
                }
            }
        }
    }

    /// One sweep: removes every job that ended before the cutoff; returns
    /// how many.
    pub async fn sweep(&self) -> PortResult<usize> {
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(self.keep).unwrap_or_default();
        let mut removed = 0;
        loop {
            let batch = self.state.ports.store.ended_before(cutoff, BATCH).await?;
            for rec in &batch {
                remove(&self.state, rec, Reason::Expired).await?;
            }
            removed += batch.len();
            if batch.len() < BATCH {
                return Ok(removed);
            }
        }
    }
}
