//! The reaper: finds running jobs whose lease ran out ([`kumulus_core::lease`])
//! and gives their attempt up: the next attempt is queued where a live
//! worker takes it, the record moves to it, and the workers are told to
//! stop the old one (a fence); after the last attempt the job fails as an
//! infrastructure failure. Jobs still queued on a partition that nobody
//! consumes are moved the same way, once that partition's owner is known
//! dead (an attempt from it stalled) and the broker kept it assigned: a
//! partition that is merely behind a busy worker is never touched. Jobs
//! the store holds queued on a partition where every job was taken are
//! jobs the queue lost (a broker that dropped acknowledged messages, a
//! frontend that died between storing a job and queueing it): they are
//! queued again, once the projection shows that they never started. One
//! replica at a time does this (a lead taken through [`Leadership`]).

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::job::JobRecord;
use kumulus_core::lease::{self, Verdict};
use kumulus_core::ports::{
    CancelBus, CancelRequest, Drained, JobQueue, JobStore, Leadership, PortResult, StatusBus,
    STATUS_FEED,
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
    /// How long work must wait unconsumed on a partition whose owner is not
    /// known dead before it is moved: longer than a rebalance
    /// ([`kumulus_core::config::Config::unconsumed_after`]). Where an
    /// attempt stalled (its worker is known dead), the lease is enough.
    pub unconsumed_after: Duration,
    /// How long a job must have been placed before a partition where
    /// nothing waits counts it lost: longer than its message can take to
    /// reach the queue ([`kumulus_core::config::Config::lost_after`]).
    pub lost_after: Duration,
    /// Time between sweeps.
    pub period: Duration,
    pub max_attempts: u32,
    /// Partitions whose jobs' workers stalled lately, and when.
    pub dead: std::sync::Mutex<std::collections::HashMap<i32, std::time::Instant>>,
}

/// How long a partition stays suspect after an attempt from it stalled.
const SUSPECT_FOR: Duration = Duration::from_secs(600);

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
            let verdict = lease::judge(&rec, now, self.lease, self.max_attempts);
            if verdict != Verdict::Alive {
                if let Some(p) = self.store.payload(rec.id).await?.and_then(|j| j.partition) {
                    if let Ok(mut dead) = self.dead.lock() {
                        dead.insert(p, std::time::Instant::now());
                    }
                }
            }
            given_up += usize::from(self.give_up(&rec, verdict).await?);
        }
        let suspects: Vec<i32> = match self.dead.lock() {
            Ok(mut dead) => {
                dead.retain(|_, at| at.elapsed() < SUSPECT_FOR);
                dead.keys().copied().collect()
            }
            Err(_) => Vec::new(),
        };
        // Stuck for a lease: moved where its owner is known dead; for a
        // rebalance's length: moved wherever.
        let long_stuck = self.queue.stuck(self.unconsumed_after).await;
        for partition in self.queue.stuck(self.lease).await {
            let suspect = suspects.contains(&partition);
            if !suspect && !long_stuck.contains(&partition) {
                continue;
            }
            // A partition whose owner runs a long job commits nothing
            // meanwhile: never touched while a job there renews its lease.
            if self.store.alive_on(Some(partition), cutoff).await? {
                continue;
            }
            // Where a worker is known to have died, everything waiting is
            // moved. Elsewhere, only while no worker anywhere is busy: an
            // idle live owner would have taken the work, a busy one may
            // simply not have got to it yet.
            if !suspect && self.store.alive_on(None, cutoff).await? {
                continue;
            }
            for rec in self.store.queued_on(partition, cutoff, BATCH).await? {
                let reason = format!(
                    "it waited on partition {partition}, which nobody consumes (its worker is gone)"
                );
                // It never ran there: moving it costs none of its tries.
                let verdict = Verdict::Requeue { reason };
                given_up += usize::from(self.give_up(&rec, verdict).await?);
            }
        }
        given_up += self.requeue_lost().await?;
        Ok(given_up)
    }

    /// Queues again the jobs the queue lost: still queued in the store,
    /// placed on a partition where nothing has waited for a lease, and
    /// placed long enough before that their message had reached it. A
    /// worker publishes a job's start before it lets the queue forget the
    /// job, so once the projection has applied the status feed as far as
    /// it went when the partition was seen drained, a job still queued
    /// never started.
    async fn requeue_lost(&self) -> PortResult<usize> {
        let Some(drained) = self.queue.drained(self.lease).await else {
            return Ok(0);
        };
        if drained.partitions.is_empty() || !self.projected(&drained).await? {
            return Ok(0);
        }
        let cutoff = drained.seen - chrono::Duration::from_std(self.lost_after).unwrap_or_default();
        let mut given_up = 0;
        for &partition in &drained.partitions {
            for rec in self.store.queued_on(partition, cutoff, BATCH).await? {
                // Its newest attempt was queued by a worker (a retry), which
                // does not record where: the stored place is not its place.
                let placed = self.store.payload(rec.id).await?;
                if placed.is_none_or(|job| job.attempt != rec.attempt) {
                    continue;
                }
                let reason = format!(
                    "it was no longer on partition {partition}, where every job had been taken (the queue lost it)"
                );
                tracing::warn!(job_id = %rec.id, partition, "a queued job is missing from the queue");
                let verdict = Verdict::Requeue { reason };
                given_up += usize::from(self.give_up(&rec, verdict).await?);
            }
        }
        Ok(given_up)
    }

    /// Whether the store has every status event published before the
    /// partitions were seen drained.
    async fn projected(&self, drained: &Drained) -> PortResult<bool> {
        let applied = self.store.positions(STATUS_FEED).await?;
        Ok(drained
            .status_end
            .iter()
            .all(|&(p, end)| end <= 0 || applied.iter().any(|&(q, at)| q == p && at >= end)))
    }

    /// Carries out `verdict` on `rec`'s current attempt; whether it did anything.
    async fn give_up(&self, rec: &JobRecord, mut verdict: Verdict) -> PortResult<bool> {
        if let Verdict::Requeue { reason } = &verdict {
            match self.store.payload(rec.id).await? {
                Some(mut next) => {
                    next.attempt = rec.attempt + 1;
                    next.not_before = None;
                    // Queued first: if what follows fails, the new
                    // attempt's own events still make it current.
                    next.partition = self.queue.requeue(&next).await?;
                    self.store.set_payload(&next).await?;
                    tracing::warn!(job_id = %rec.id, attempt = rec.attempt, partition = ?next.partition, %reason, "job queued again");
                }
                None => {
                    verdict = Verdict::Fail {
                        error: format!("{reason}; the job cannot be queued again (no stored copy)"),
                    }
                }
            }
        }
        let Some(event) = lease::event_for(rec, &verdict) else {
            return Ok(false);
        };
        if let Verdict::Fail { error } = &verdict {
            tracing::warn!(job_id = %rec.id, %error, "job failed by the infrastructure");
        }
        self.store.apply(&event).await?;
        if let Err(e) = self.status.publish(&event).await {
            tracing::warn!(job_id = %rec.id, error = %e, "could not announce a job given up");
        }
        let fence = CancelRequest {
            job_id: rec.id,
            owner: rec.owner.clone(),
            superseded: Some(rec.attempt),
        };
        if let Err(e) = self.cancels.cancel(&fence).await {
            tracing::warn!(job_id = %rec.id, error = %e, "could not fence an attempt given up");
        }
        Ok(true)
    }
}
