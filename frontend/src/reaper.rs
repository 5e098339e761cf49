//! The reaper: finds running jobs whose lease ran out ([`kumulus_core::lease`])
//! and gives their attempt up: the next attempt is queued where a live
//! worker takes it, the record moves to it, and the workers are told to
//! stop the old one (a fence); after the last attempt the job fails as an
//! infrastructure failure. One replica at a time does this (a lead taken
//! through [`Leadership`]).

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::lease::{self, Verdict};
use kumulus_core::ports::{
    CancelBus, CancelRequest, JobQueue, JobStore, Leadership, PortResult, StatusBus,
};

/// Jobs looked at per sweep.
const BATCH: usize = 100;

pub struct Reaper {
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub status: Arc<dyn StatusBus>,
    pub cancels: Arc<dyn CancelBus>,
    pub leader: Arc<dyn Leadership>,
    /// This replica's name for the lead.
    pub holder: String,
    pub lease: Duration,
    /// Time between sweeps.
    pub period: Duration,
    pub max_attempts: u32,
}

impl Reaper {
    /// Sweeps every period until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.period) => {}
            }
            match self.leader.lead(&self.holder, self.period * 3).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the reaper's lead");
                    continue;
                }
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "the reaper's sweep failed; retrying next period");
            }
        }
    }

    /// One sweep (the step): returns how many attempts it gave up.
    pub async fn sweep(&self) -> PortResult<usize> {
        let now = chrono::Utc::now();
        let cutoff = now - chrono::Duration::from_std(self.lease).unwrap_or_default();
        let mut given_up = 0;
        for rec in self.store.stalled(cutoff, BATCH).await? {
            let mut verdict = lease::judge(&rec, now, self.lease, self.max_attempts);
            if let Verdict::Requeue { reason } = &verdict {
                match self.store.payload(rec.id).await? {
                    Some(mut next) => {
                        next.attempt = rec.attempt + 1;
                        next.not_before = None;
                        // Queued first: if what follows fails, the new
                        // attempt's own events still make it current.
                        self.queue.requeue(&next).await?;
                        tracing::warn!(job_id = %rec.id, attempt = rec.attempt, %reason, "stalled job queued again");
                    }
                    None => {
                        verdict = Verdict::Fail {
                            error: format!(
                                "{reason}; the job cannot be queued again (no stored copy)"
                            ),
                        }
                    }
                }
            }
            let Some(event) = lease::event_for(&rec, &verdict) else {
                continue;
            };
            if let Verdict::Fail { error } = &verdict {
                tracing::warn!(job_id = %rec.id, %error, "stalled job failed");
            }
            self.store.apply(&event).await?;
            if let Err(e) = self.status.publish(&event).await {
                tracing::warn!(job_id = %rec.id, error = %e, "could not announce a stalled job");
            }
            let fence = CancelRequest {
                job_id: rec.id,
                owner: rec.owner.clone(),
                superseded: Some(rec.attempt),
            };
            if let Err(e) = self.cancels.cancel(&fence).await {
                tracing::warn!(job_id = %rec.id, error = %e, "could not fence a stalled attempt");
            }
            given_up += 1;
        }
        Ok(given_up)
    }
}
