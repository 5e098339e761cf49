//! The queue's ports on SQLite: taking a job in (record and queue entry in
//! one transaction), claiming, acknowledging and finishing.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Duration;

use kumulus_core::event::StatusEvent;
use kumulus_core::job::{JobId, JobRecord, QueuedJob};
use kumulus_core::ports::{Delivery, Intake, JobQueue, JobSource, PortResult, StatusBus};

use super::store::{apply_in, insert_in};
use super::writer::Task;
use super::{internal, now_ms, sql_error, Sqlite};

/// Puts `job` in the queue; a new attempt of a job still in the queue (its
/// stalled attempt's claim) takes that entry over, claim and all.
fn enqueue_in(tx: &Connection, job: &QueuedJob) -> PortResult<()> {
    let text = serde_json::to_string(job).map_err(internal)?;
    let available = job.not_before.map_or(0, |t| t.timestamp_millis());
    tx.prepare_cached(
        "INSERT INTO queue (id, job, attempt, available_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET job = excluded.job, attempt = excluded.attempt,
             available_ms = excluded.available_ms, claimed_by = NULL, claimed_at = NULL
         WHERE excluded.attempt > queue.attempt",
    )
    .and_then(|mut st| st.execute(params![job.id.to_string(), text, job.attempt, available]))
    .map_err(sql_error)?;
    Ok(())
}

/// Claims the job first in line, on the partial index `queue_ready`.
pub(super) const CLAIM: &str = "UPDATE queue SET claimed_by = ?1, claimed_at = ?2
     WHERE seq = (SELECT seq FROM queue
                  WHERE claimed_by IS NULL AND available_ms <= ?3
                  ORDER BY available_ms, seq LIMIT 1)
     RETURNING seq, job";

/// A delivery's queue entry and attempt, from its handle.
fn entry(delivery: &Delivery) -> PortResult<(i64, u32)> {
    let seq = delivery.handle.parse().map_err(internal)?;
    Ok((seq, delivery.job.attempt))
}

/// Removes a delivered attempt from the queue (a newer attempt that took
/// its entry over stays).
fn ack_in(tx: &Connection, seq: i64, attempt: u32) -> PortResult<()> {
    tx.execute(
        "DELETE FROM queue WHERE seq = ?1 AND attempt = ?2",
        params![seq, attempt],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// Hands a claimed attempt back to the queue.
fn release_in(tx: &Connection, seq: i64, attempt: u32) -> PortResult<()> {
    tx.execute(
        "UPDATE queue SET claimed_by = NULL, claimed_at = NULL WHERE seq = ?1 AND attempt = ?2",
        params![seq, attempt],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// The write that takes back a claim nobody received (its caller stopped
/// waiting): the job goes back to the queue.
fn unclaim(claimed: Option<Delivery>) -> Option<Box<dyn Task>> {
    let (seq, attempt) = entry(&claimed?).ok()?;
    Some(super::writer::detached(move |tx| {
        release_in(tx, seq, attempt)
    }))
}

impl Sqlite {
    /// Takes a job out of the queue if nobody has claimed it yet; returns
    /// whether it did. Used to cancel a queued job.
    pub async fn withdraw(&self, id: JobId) -> PortResult<bool> {
        let id = id.to_string();
        self.write(move |c| {
            c.execute(
                "DELETE FROM queue WHERE id = ?1 AND claimed_by IS NULL",
                params![id],
            )
            .map_err(sql_error)
        })
        .await
        .map(|n| n > 0)
    }

    /// Claims the job first in line, if one is there.
    async fn try_claim(&self) -> PortResult<Option<Delivery>> {
        let claimer = self.claimer.clone();
        let claim = move |c: &Connection| -> PortResult<Option<Delivery>> {
            let row: Option<(i64, String)> = c
                .prepare_cached(CLAIM)
                .and_then(|mut st| {
                    st.query_row(
                        params![&*claimer, chrono::Utc::now().to_rfc3339(), now_ms()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                })
                .map_err(sql_error)?;
            row.map(|(seq, text)| {
                let job: QueuedJob = serde_json::from_str(&text).map_err(internal)?;
                Ok(Delivery {
                    job,
                    handle: seq.to_string(),
                })
            })
            .transpose()
        };
        self.writer.write_or_undo(claim, unclaim).await
    }
}

#[async_trait]
impl Intake for Sqlite {
    /// The record and the queue entry in one transaction: a submit cut
    /// off anywhere leaves both or neither.
    async fn accept(&self, record: &JobRecord, job: &QueuedJob) -> PortResult<()> {
        let (record, job) = (record.clone(), job.clone());
        self.write(move |tx| {
            insert_in(tx, &record, &job)?;
            enqueue_in(tx, &job)
        })
        .await?;
        self.ready.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl JobQueue for Sqlite {
    async fn enqueue(&self, job: &QueuedJob) -> PortResult<()> {
        let job = job.clone();
        self.write(move |tx| enqueue_in(tx, &job)).await?;
        self.ready.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl JobSource for Sqlite {
    async fn next(&self) -> PortResult<Delivery> {
        loop {
            // Register interest before looking, so a job queued in between
            // still wakes us.
            let notified = self.ready.notified();
            // A caller that stops waiting (shutdown, a retired slot) while
            // the claim is under way leaves it to the writer, which hands
            // the job back ([`unclaim`]): never a job claimed by nobody.
            if let Some(delivery) = self.try_claim().await? {
                return Ok(delivery);
            }
            // The poll is a safety net; enqueue and release wake us at once.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    async fn ack(&self, delivery: &Delivery) -> PortResult<()> {
        let (seq, attempt) = entry(delivery)?;
        self.write(move |c| ack_in(c, seq, attempt)).await
    }

    async fn release(&self, delivery: &Delivery) -> PortResult<()> {
        let (seq, attempt) = entry(delivery)?;
        self.write(move |c| release_in(c, seq, attempt)).await?;
        self.ready.notify_waiters();
        Ok(())
    }

    /// The final state and the removal from the queue, in one transaction;
    /// then the event goes to the bus's subscribers (re-applying it there
    /// changes nothing).
    async fn finish(
        &self,
        delivery: &Delivery,
        event: &StatusEvent,
        status: &dyn StatusBus,
    ) -> PortResult<()> {
        let (seq, attempt) = entry(delivery)?;
        let ev = event.clone();
        self.write(move |tx| {
            apply_in(tx, &ev)?;
            ack_in(tx, seq, attempt)
        })
        .await?;
        if let Err(e) = status.publish(event).await {
            tracing::warn!(error = %e, "a final state was stored but not announced");
        }
        Ok(())
    }
}
