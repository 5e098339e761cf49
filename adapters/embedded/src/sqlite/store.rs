//! The job store's port on SQLite: records, idempotency keys, webhooks'
//! progress and the sweeps' queries.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use kumulus_core::event::{self, StatusEvent};
use kumulus_core::job::{JobId, JobRecord, QueuedJob};
use kumulus_core::ports::{JobStore, KeyClaim, ListQuery, PortResult};

use super::{internal, parse_record, sql_error, write_record, Sqlite};

/// Applies `ev` to its record; returns the record after it.
pub(super) fn apply_in(tx: &Connection, ev: &StatusEvent) -> PortResult<Option<JobRecord>> {
    let current: Option<JobRecord> = tx
        .prepare_cached("SELECT record FROM jobs WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row(params![ev.job_id.to_string()], |r| parse_record(r.get(0)?))
                .optional()
        })
        .map_err(sql_error)?;
    let Some(mut rec) = current else {
        return Ok(None);
    };
    if event::apply(&mut rec, ev) {
        write_record(tx, &rec)?;
    }
    Ok(Some(rec))
}

/// Stores a new record with the job it holds.
pub(super) fn insert_in(tx: &Connection, record: &JobRecord, job: &QueuedJob) -> PortResult<()> {
    let text = serde_json::to_string(record).map_err(internal)?;
    let payload = serde_json::to_string(job).map_err(internal)?;
    tx.prepare_cached(
        "INSERT INTO jobs (id, owner, state, record, job) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            record.id.to_string(),
            record.owner,
            record.state.as_str(),
            text,
            payload
        ])
    })
    .map_err(sql_error)?;
    Ok(())
}

/// A page of an owner's jobs, and of an owner's jobs in one state: each
/// walks its index, (owner, id) or (owner, state, id), down from the
/// cursor, and never scans.
pub(super) const LIST: &str = "SELECT record FROM jobs WHERE owner = ?1 AND id < ?2
     ORDER BY id DESC LIMIT ?3";
pub(super) const LIST_IN_STATE: &str =
    "SELECT record FROM jobs WHERE owner = ?1 AND state = ?2 AND id < ?3
     ORDER BY id DESC LIMIT ?4";
/// The retention sweep, on the index of ended jobs.
pub(super) const ENDED_BEFORE: &str =
    "SELECT record FROM jobs WHERE ended_ms < ?1 ORDER BY ended_ms ASC LIMIT ?2";
/// The webhooks due, on the partial index `jobs_webhook_pending`, which
/// holds just the jobs with a webhook still to deliver.
pub(super) const WEBHOOKS_DUE: &str = "SELECT record FROM jobs
     WHERE json_extract(record, '$.webhook.state') = 'pending'
       AND state NOT IN ('queued', 'running')
       AND (json_extract(record, '$.webhook.next_at') IS NULL
            OR julianday(json_extract(record, '$.webhook.next_at')) <= julianday(?1))
     ORDER BY id ASC LIMIT ?2";
/// Running jobs silent since a time.
pub(super) const STALLED: &str =
    "SELECT record FROM jobs WHERE state = 'running' AND alive_ms < ?1 LIMIT ?2";

#[async_trait]
impl JobStore for Sqlite {
    async fn insert(&self, record: &JobRecord, job: &QueuedJob) -> PortResult<()> {
        let (record, job) = (record.clone(), job.clone());
        self.write(move |c| insert_in(c, &record, &job)).await
    }

    async fn payload(&self, id: JobId) -> PortResult<Option<QueuedJob>> {
        let id = id.to_string();
        let text: Option<Option<String>> = self
            .read(move |c| {
                c.prepare_cached("SELECT job FROM jobs WHERE id = ?1")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()
            })
            .await?;
        text.flatten()
            .map(|t| serde_json::from_str(&t).map_err(internal))
            .transpose()
    }

    async fn set_payload(&self, job: &QueuedJob) -> PortResult<()> {
        let text = serde_json::to_string(job).map_err(internal)?;
        let id = job.id.to_string();
        self.write(move |c| {
            c.execute("UPDATE jobs SET job = ?2 WHERE id = ?1", params![id, text])
                .map_err(sql_error)
        })
        .await
        .map(|_| ())
    }

    async fn stalled(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let (cutoff, limit) = (cutoff.timestamp_millis(), limit as i64);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(STALLED)?;
            let rows = stmt.query_map(params![cutoff, limit], |r| parse_record(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn remove(&self, id: JobId) -> PortResult<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM jobs WHERE id = ?1", params![id])
                .map_err(sql_error)
        })
        .await
        .map(|_| ())
    }

    async fn claim_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        job: JobId,
        expired_before: chrono::DateTime<chrono::Utc>,
    ) -> PortResult<KeyClaim> {
        let (owner, key, fingerprint) =
            (owner.to_string(), key.to_string(), fingerprint.to_string());
        let (job, cutoff) = (job.to_string(), expired_before.timestamp_millis());
        let now = chrono::Utc::now().timestamp_millis();
        // One write, atomic in its savepoint.
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM idempotency WHERE created_ms < ?1",
                params![cutoff],
            )
            .map_err(sql_error)?;
            let claimed = tx
                .execute(
                    "INSERT OR IGNORE INTO idempotency (owner, key, fingerprint, job, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![owner, key, fingerprint, job, now],
                )
                .map_err(sql_error)?;
            if claimed == 1 {
                return Ok(KeyClaim::Claimed);
            }
            let (held, fingerprint): (String, String) = tx
                .query_row(
                    "SELECT job, fingerprint FROM idempotency WHERE owner = ?1 AND key = ?2",
                    params![owner, key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql_error)?;
            let job = held
                .parse()
                .map_err(|_| internal(format!("an idempotency key holds a bad job id {held:?}")))?;
            Ok(KeyClaim::Held { job, fingerprint })
        })
        .await
    }

    async fn release_key(&self, owner: &str, key: &str, job: JobId) -> PortResult<()> {
        let (owner, key, job) = (owner.to_string(), key.to_string(), job.to_string());
        self.write(move |c| {
            c.execute(
                "DELETE FROM idempotency WHERE owner = ?1 AND key = ?2 AND job = ?3",
                params![owner, key, job],
            )
            .map_err(sql_error)
        })
        .await
        .map(|_| ())
    }

    async fn webhooks_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let now = now.to_rfc3339();
        let limit = limit as i64;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(WEBHOOKS_DUE)?;
            let rows = stmt.query_map(params![now, limit], |r| parse_record(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn set_webhook(
        &self,
        id: JobId,
        delivery: &kumulus_core::webhook::Delivery,
    ) -> PortResult<()> {
        let id = id.to_string();
        let delivery = serde_json::to_string(delivery).map_err(internal)?;
        self.write(move |c| {
            c.execute(
                "UPDATE jobs SET record = json_set(record, '$.webhook', json(?2)) WHERE id = ?1",
                params![id, delivery],
            )
            .map_err(sql_error)
        })
        .await
        .map(|_| ())
    }

    async fn ended_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let cutoff = cutoff.timestamp_millis();
        let limit = limit as i64;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(ENDED_BEFORE)?;
            let rows = stmt.query_map(params![cutoff, limit], |r| parse_record(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn get(&self, id: JobId) -> PortResult<Option<JobRecord>> {
        let id = id.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT record FROM jobs WHERE id = ?1")?
                .query_row(params![id], |r| parse_record(r.get(0)?))
                .optional()
        })
        .await
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> PortResult<Vec<JobRecord>> {
        let owner = owner.to_string();
        let state = query.state.map(|s| s.as_str());
        // Ids are UUID v7 in canonical form: their text order is their age.
        let before = query
            .before
            .map(|id| id.to_string())
            .unwrap_or_else(|| "~".into());
        let limit = query.limit as i64;
        self.read(move |c| match state {
            None => c
                .prepare_cached(LIST)?
                .query_map(params![owner, before, limit], |r| parse_record(r.get(0)?))?
                .collect(),
            Some(state) => c
                .prepare_cached(LIST_IN_STATE)?
                .query_map(params![owner, state, before, limit], |r| {
                    parse_record(r.get(0)?)
                })?
                .collect(),
        })
        .await
    }

    async fn history(&self, after: Option<JobId>, limit: usize) -> PortResult<Vec<JobRecord>> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let limit = limit as i64;
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT record FROM jobs WHERE id > ?1 ORDER BY id ASC LIMIT ?2")?;
            let rows = stmt.query_map(params![after, limit], |r| parse_record(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn apply(&self, ev: &StatusEvent) -> PortResult<Option<JobRecord>> {
        let ev = ev.clone();
        self.write(move |tx| apply_in(tx, &ev)).await
    }

    async fn ping(&self) -> PortResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}
