//! Job records and the job queue in SQLite.
//!
//! Two tables: `jobs` (one JSON record per job, with owner and state
//! columns for the listing, the queued job itself for new attempts, and
//! when its running attempt last showed life) and `queue` (the full queued
//! job, its attempt, and who claimed it). A claim is one `UPDATE ...
//! RETURNING`, so two workers can never take the same job. A job's final
//! state and its removal from the queue are one transaction
//! ([`JobSource::finish`]), so a job that ended never runs again.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

use kumulus_core::event::{self, StatusEvent};
use kumulus_core::job::{JobId, JobRecord, JobState, QueuedJob};
use kumulus_core::lease::{self, Verdict};
use kumulus_core::ports::{
    Delivery, JobQueue, JobSource, JobStore, KeyClaim, ListQuery, PortError, PortResult, StatusBus,
};

const BACKEND: &str = "sqlite";

/// A SQLite database holding job records and the queue.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    ready: Arc<Notify>,
    claimer: String,
}

fn internal(e: impl std::fmt::Display) -> PortError {
    PortError::Internal(format!("sqlite: {e}"))
}

/// A failed SQLite call: a full disk is the disk's fault, not ours.
fn sql_error(e: rusqlite::Error) -> PortError {
    let full = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
    );
    if full {
        PortError::Full(format!("the job store's disk is full: {e}"))
    } else {
        internal(e)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Sqlite {
    /// Opens (or creates) the database at `path`. The caller must be its only
    /// user: claims left by an earlier process are handed back to the queue.
    pub fn open(path: &Path) -> PortResult<Self> {
        let conn = Connection::open(path).map_err(|e| PortError::unavailable(BACKEND, e))?;
        Self::init(conn)
    }

    /// A database in memory (tests).
    pub fn in_memory() -> PortResult<Self> {
        Self::init(Connection::open_in_memory().map_err(internal)?)
    }

    fn init(conn: Connection) -> PortResult<Self> {
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(internal)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS jobs (
                 id TEXT PRIMARY KEY,
                 owner TEXT NOT NULL,
                 state TEXT NOT NULL,
                 record TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, id);
             CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
             CREATE TABLE IF NOT EXISTS idempotency (
                 owner TEXT NOT NULL,
                 key TEXT NOT NULL,
                 fingerprint TEXT NOT NULL,
                 job TEXT NOT NULL,
                 created_ms INTEGER NOT NULL,
                 PRIMARY KEY (owner, key)
             );
             CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_ms);
             CREATE TABLE IF NOT EXISTS queue (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 job TEXT NOT NULL,
                 claimed_by TEXT,
                 claimed_at TEXT
             );",
        )
        .map_err(internal)?;
        // Columns added since the first release.
        for (table, column, decl) in [
            ("jobs", "job", "TEXT"),
            ("jobs", "alive_ms", "INTEGER"),
            ("queue", "attempt", "INTEGER NOT NULL DEFAULT 1"),
            ("queue", "available_ms", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            let has: bool = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
                ))
                .and_then(|mut st| st.exists(params![column]))
                .map_err(internal)?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                    .map_err(internal)?;
            }
        }
        conn.execute_batch("CREATE INDEX IF NOT EXISTS jobs_alive ON jobs (state, alive_ms);")
            .map_err(internal)?;
        let db = Self {
            conn: Arc::new(Mutex::new(conn)),
            ready: Arc::new(Notify::new()),
            claimer: uuid::Uuid::now_v7().to_string(),
        };
        db.fail_orphans()?;
        Ok(db)
    }

    /// Runs `f` on the connection, off the async threads (a full disk is
    /// reported as such).
    async fn call<R, F>(&self, f: F) -> PortResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| internal("connection lock poisoned"))?;
            f(&mut guard).map_err(sql_error)
        })
        .await
        .map_err(internal)?
    }

    /// Runs `f` in one transaction, off the async threads; committed if it
    /// returns Ok.
    async fn transaction<R, F>(&self, f: F) -> PortResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> PortResult<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| internal("lock poisoned"))?;
            let tx = conn.transaction().map_err(sql_error)?;
            let out = f(&tx)?;
            tx.commit().map_err(sql_error)?;
            Ok(out)
        })
        .await
        .map_err(internal)?
    }

    /// A record left `queued` with no queue entry (the process died between
    /// the two writes, before answering the client) can never run: end it.
    fn fail_orphans(&self) -> PortResult<()> {
        let mut conn = self.conn.lock().map_err(|_| internal("lock poisoned"))?;
        let tx = conn.transaction().map_err(internal)?;
        let orphans: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT record FROM jobs WHERE state = 'queued'
                     AND id NOT IN (SELECT id FROM queue)",
                )
                .map_err(internal)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)?
        };
        for text in orphans {
            let mut rec: JobRecord = serde_json::from_str(&text).map_err(internal)?;
            rec.state = JobState::Failed;
            rec.error = Some("the job was lost before it was queued".into());
            rec.finished_at = Some(chrono::Utc::now());
            write_record(&tx, &rec)?;
        }
        tx.commit().map_err(internal)
    }

    /// Hands back the jobs an earlier process claimed (it died with them;
    /// call this once whatever it left running is gone): each becomes a new
    /// attempt, or, past `max_attempts`, fails as an infrastructure
    /// failure. A claimed job whose record already ended is just removed.
    /// Returns how many went back to the queue.
    pub fn recover_interrupted(&self, max_attempts: u32) -> PortResult<usize> {
        let mut conn = self.conn.lock().map_err(|_| internal("lock poisoned"))?;
        let tx = conn.transaction().map_err(internal)?;
        let claimed: Vec<(i64, String, u32, String)> = {
            let mut stmt = tx
                .prepare("SELECT seq, id, attempt, job FROM queue WHERE claimed_by IS NOT NULL")
                .map_err(internal)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)?
        };
        let mut requeued = 0;
        for (seq, id, attempt, text) in claimed {
            let record: Option<JobRecord> = tx
                .query_row("SELECT record FROM jobs WHERE id = ?1", params![id], |r| {
                    parse_record(r.get(0)?)
                })
                .optional()
                .map_err(internal)?;
            let Some(mut rec) = record.filter(|r| !r.state.is_terminal()) else {
                tx.execute("DELETE FROM queue WHERE seq = ?1", params![seq])
                    .map_err(internal)?;
                continue;
            };
            let reason = "the process running it stopped (kumulus up restarted)".to_string();
            let verdict = if attempt >= max_attempts {
                Verdict::Fail {
                    error: format!("infrastructure failure after {attempt} attempts: {reason}"),
                }
            } else {
                Verdict::Requeue { reason }
            };
            let Some(ev) = lease::event_for(&rec, &verdict) else {
                continue;
            };
            let ev = ev.for_attempt(attempt);
            event::apply(&mut rec, &ev);
            write_record(&tx, &rec)?;
            if rec.state.is_terminal() {
                tx.execute("DELETE FROM queue WHERE seq = ?1", params![seq])
                    .map_err(internal)?;
            } else {
                let mut job: QueuedJob = serde_json::from_str(&text).map_err(internal)?;
                job.attempt = rec.attempt;
                let text = serde_json::to_string(&job).map_err(internal)?;
                tx.execute(
                    "UPDATE queue SET job = ?2, attempt = ?3, claimed_by = NULL, claimed_at = NULL
                     WHERE seq = ?1",
                    params![seq, text, rec.attempt],
                )
                .map_err(internal)?;
                requeued += 1;
            }
        }
        tx.commit().map_err(internal)?;
        Ok(requeued)
    }

    /// Jobs waiting in the queue (not claimed).
    pub async fn waiting(&self) -> PortResult<u64> {
        self.call(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM queue WHERE claimed_by IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n.max(0) as u64)
    }

    /// Takes a job out of the queue if nobody has claimed it yet; returns
    /// whether it did. Used to cancel a queued job.
    pub async fn withdraw(&self, id: JobId) -> PortResult<bool> {
        let id = id.to_string();
        self.call(move |c| {
            c.execute(
                "DELETE FROM queue WHERE id = ?1 AND claimed_by IS NULL",
                params![id],
            )
        })
        .await
        .map(|n| n > 0)
    }

    fn try_claim(&self) -> PortResult<Option<Delivery>> {
        let conn = self.conn.lock().map_err(|_| internal("lock poisoned"))?;
        let row: Option<(i64, String)> = conn
            .query_row(
                "UPDATE queue SET claimed_by = ?1, claimed_at = ?2
                 WHERE seq = (SELECT seq FROM queue WHERE claimed_by IS NULL AND available_ms <= ?3
                              ORDER BY available_ms, seq LIMIT 1)
                 RETURNING seq, job",
                params![self.claimer, chrono::Utc::now().to_rfc3339(), now_ms()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(internal)?;
        row.map(|(seq, text)| {
            let job: QueuedJob = serde_json::from_str(&text).map_err(internal)?;
            Ok(Delivery {
                job,
                handle: seq.to_string(),
            })
        })
        .transpose()
    }
}

fn write_record(conn: &Connection, rec: &JobRecord) -> PortResult<()> {
    let text = serde_json::to_string(rec).map_err(internal)?;
    let alive = rec.last_sign_of_life().map(|t| t.timestamp_millis());
    conn.execute(
        "INSERT INTO jobs (id, owner, state, record, alive_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record,
             alive_ms = excluded.alive_ms",
        params![
            rec.id.to_string(),
            rec.owner,
            rec.state.as_str(),
            text,
            alive
        ],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// Applies `ev` to its record inside `tx`; returns the record after it.
fn apply_in(tx: &rusqlite::Transaction, ev: &StatusEvent) -> PortResult<Option<JobRecord>> {
    let current: Option<JobRecord> = tx
        .query_row(
            "SELECT record FROM jobs WHERE id = ?1",
            params![ev.job_id.to_string()],
            |r| parse_record(r.get(0)?),
        )
        .optional()
        .map_err(internal)?;
    let Some(mut rec) = current else {
        return Ok(None);
    };
    if event::apply(&mut rec, ev) {
        write_record(tx, &rec)?;
    }
    Ok(Some(rec))
}

fn parse_record(text: String) -> rusqlite::Result<JobRecord> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

#[async_trait]
impl JobStore for Sqlite {
    async fn insert(&self, record: &JobRecord, job: &QueuedJob) -> PortResult<()> {
        let text = serde_json::to_string(record).map_err(internal)?;
        let payload = serde_json::to_string(job).map_err(internal)?;
        let (id, owner, state) = (
            record.id.to_string(),
            record.owner.clone(),
            record.state.as_str(),
        );
        self.call(move |c| {
            c.execute(
                "INSERT INTO jobs (id, owner, state, record, job) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, owner, state, text, payload],
            )
        })
        .await
        .map(|_| ())
    }

    async fn payload(&self, id: JobId) -> PortResult<Option<QueuedJob>> {
        let id = id.to_string();
        let text: Option<Option<String>> = self
            .call(move |c| {
                c.query_row("SELECT job FROM jobs WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
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
        self.call(move |c| c.execute("UPDATE jobs SET job = ?2 WHERE id = ?1", params![id, text]))
            .await
            .map(|_| ())
    }

    async fn stalled(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let (cutoff, limit) = (cutoff.timestamp_millis(), limit as i64);
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record FROM jobs WHERE state = 'running' AND alive_ms < ?1 LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![cutoff, limit], |r| parse_record(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn remove(&self, id: JobId) -> PortResult<()> {
        let id = id.to_string();
        self.call(move |c| c.execute("DELETE FROM jobs WHERE id = ?1", params![id]))
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
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM idempotency WHERE created_ms < ?1",
                params![cutoff],
            )?;
            let claimed = tx.execute(
                "INSERT OR IGNORE INTO idempotency (owner, key, fingerprint, job, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![owner, key, fingerprint, job, now],
            )?;
            let answer = if claimed == 1 {
                KeyClaim::Claimed
            } else {
                let (held, fingerprint): (String, String) = tx.query_row(
                    "SELECT job, fingerprint FROM idempotency WHERE owner = ?1 AND key = ?2",
                    params![owner, key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let job = held.parse().map_err(|_| {
                    rusqlite::Error::InvalidColumnType(0, "job".into(), rusqlite::types::Type::Text)
                })?;
                KeyClaim::Held { job, fingerprint }
            };
            tx.commit()?;
            Ok(answer)
        })
        .await
    }

    async fn release_key(&self, owner: &str, key: &str, job: JobId) -> PortResult<()> {
        let (owner, key, job) = (owner.to_string(), key.to_string(), job.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM idempotency WHERE owner = ?1 AND key = ?2 AND job = ?3",
                params![owner, key, job],
            )
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
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record FROM jobs
                 WHERE state NOT IN ('queued', 'running')
                   AND json_extract(record, '$.webhook.state') = 'pending'
                   AND (json_extract(record, '$.webhook.next_at') IS NULL
                        OR julianday(json_extract(record, '$.webhook.next_at')) <= julianday(?1))
                 ORDER BY id ASC LIMIT ?2",
            )?;
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
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET record = json_set(record, '$.webhook', json(?2)) WHERE id = ?1",
                params![id, delivery],
            )
        })
        .await
        .map(|_| ())
    }

    async fn ended_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let cutoff = cutoff.to_rfc3339();
        let limit = limit as i64;
        self.call(move |c| {
            // A job that ended without starting has its submission for an end.
            let mut stmt = c.prepare_cached(
                "SELECT record FROM jobs
                 WHERE state NOT IN ('queued', 'running')
                   AND julianday(COALESCE(json_extract(record, '$.finished_at'),
                                          json_extract(record, '$.submitted_at')))
                       < julianday(?1)
                 ORDER BY id ASC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![cutoff, limit], |r| parse_record(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn get(&self, id: JobId) -> PortResult<Option<JobRecord>> {
        let id = id.to_string();
        self.call(move |c| {
            c.query_row("SELECT record FROM jobs WHERE id = ?1", params![id], |r| {
                parse_record(r.get(0)?)
            })
            .optional()
        })
        .await
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> PortResult<Vec<JobRecord>> {
        let owner = owner.to_string();
        let state = query.state.map(|s| s.as_str().to_string());
        // Ids are UUID v7 in canonical form: their text order is their age.
        let before = query
            .before
            .map(|id| id.to_string())
            .unwrap_or_else(|| "~".into());
        let limit = query.limit as i64;
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record FROM jobs
                 WHERE owner = ?1 AND id < ?2 AND (?3 IS NULL OR state = ?3)
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![owner, before, state, limit], |r| {
                parse_record(r.get(0)?)
            })?;
            rows.collect()
        })
        .await
    }

    async fn history(&self, after: Option<JobId>, limit: usize) -> PortResult<Vec<JobRecord>> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let limit = limit as i64;
        self.call(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT record FROM jobs WHERE id > ?1 ORDER BY id ASC LIMIT ?2")?;
            let rows = stmt.query_map(params![after, limit], |r| parse_record(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn apply(&self, ev: &StatusEvent) -> PortResult<Option<JobRecord>> {
        let ev = ev.clone();
        self.transaction(move |tx| apply_in(tx, &ev)).await
    }

    async fn ping(&self) -> PortResult<()> {
        self.call(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}

#[async_trait]
impl JobQueue for Sqlite {
    /// Queues the job; a new attempt of a job still in the queue (its
    /// stalled attempt's claim) takes that entry over, claim and all.
    async fn enqueue(&self, job: &QueuedJob) -> PortResult<()> {
        let text = serde_json::to_string(job).map_err(internal)?;
        let id = job.id.to_string();
        let (attempt, available) = (
            job.attempt,
            job.not_before.map_or(0, |t| t.timestamp_millis()),
        );
        self.call(move |c| {
            c.execute(
                "INSERT INTO queue (id, job, attempt, available_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET job = excluded.job, attempt = excluded.attempt,
                     available_ms = excluded.available_ms, claimed_by = NULL, claimed_at = NULL
                 WHERE excluded.attempt > queue.attempt",
                params![id, text, attempt, available],
            )
        })
        .await?;
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
            // The claim runs here, not on another thread: nothing awaits
            // between claiming and returning, so a caller that stops waiting
            // (shutdown, a retired slot) can never leave a job claimed by nobody.
            if let Some(delivery) = self.try_claim()? {
                return Ok(delivery);
            }
            // The poll is a safety net; enqueue and release wake us at once.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    /// Removes the delivered attempt from the queue (a newer attempt that
    /// took its entry over stays).
    async fn ack(&self, delivery: &Delivery) -> PortResult<()> {
        let seq: i64 = delivery.handle.parse().map_err(internal)?;
        let attempt = delivery.job.attempt;
        self.call(move |c| {
            c.execute(
                "DELETE FROM queue WHERE seq = ?1 AND attempt = ?2",
                params![seq, attempt],
            )
        })
        .await
        .map(|_| ())
    }

    async fn release(&self, delivery: &Delivery) -> PortResult<()> {
        let seq: i64 = delivery.handle.parse().map_err(internal)?;
        let attempt = delivery.job.attempt;
        self.call(move |c| {
            c.execute(
                "UPDATE queue SET claimed_by = NULL, claimed_at = NULL WHERE seq = ?1 AND attempt = ?2",
                params![seq, attempt],
            )
        })
        .await?;
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
        let seq: i64 = delivery.handle.parse().map_err(internal)?;
        let attempt = delivery.job.attempt;
        let ev = event.clone();
        self.transaction(move |tx| {
            apply_in(tx, &ev)?;
            tx.execute(
                "DELETE FROM queue WHERE seq = ?1 AND attempt = ?2",
                params![seq, attempt],
            )
            .map_err(sql_error)?;
            Ok(())
        })
        .await?;
        if let Err(e) = status.publish(event).await {
            tracing::warn!(error = %e, "a final state was stored but not announced");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumulus_core::event::EventKind;

    fn job(owner: &str) -> QueuedJob {
        QueuedJob {
            id: JobId::new(),
            owner: owner.into(),
            url: "/srv/r".into(),
            args: vec![],
            config: None,
            timeout_secs: 10,
            limits: Default::default(),
            submitted_at: chrono::Utc::now(),
            attempt: 1,
            not_before: None,
            partition: None,
        }
    }

    #[tokio::test]
    async fn claims_are_exclusive_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let db = Sqlite::open(&path).unwrap();
        let jobs: Vec<QueuedJob> = (0..20).map(|_| job("ana")).collect();
        for j in &jobs {
            db.insert(&JobRecord::queued(j), j).await.unwrap();
            db.enqueue(j).await.unwrap();
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..5 {
                    got.push(db.next().await.unwrap());
                }
                got
            }));
        }
        let mut ids = Vec::new();
        let mut deliveries = Vec::new();
        for t in tasks {
            for d in t.await.unwrap() {
                ids.push(d.job.id);
                deliveries.push(d);
            }
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20, "every job claimed exactly once");
        assert_eq!(db.waiting().await.unwrap(), 0);
        // Ack half; the other claims belong to a process that "died".
        for d in &deliveries[..10] {
            db.ack(d).await.unwrap();
        }
        drop(db);
        let db = Sqlite::open(&path).unwrap();
        assert_eq!(
            db.waiting().await.unwrap(),
            0,
            "claims stand until recovered"
        );
        assert_eq!(db.recover_interrupted(3).unwrap(), 10);
        assert_eq!(db.waiting().await.unwrap(), 10);
        // Each comes back as its second attempt.
        let again = db.next().await.unwrap();
        assert_eq!(again.job.attempt, 2);
        assert_eq!(db.get(again.job.id).await.unwrap().unwrap().attempt, 2);
    }

    #[tokio::test]
    async fn listing_is_per_owner_newest_first_with_cursor() {
        let db = Sqlite::in_memory().unwrap();
        let mut mine = Vec::new();
        for i in 0..5 {
            let j = job(if i % 2 == 0 { "ana" } else { "bob" });
            db.insert(&JobRecord::queued(&j), &j).await.unwrap();
            if i % 2 == 0 {
                mine.push(j.id);
            }
        }
        mine.reverse();
        let page = db
            .list(
                "ana",
                &ListQuery {
                    state: None,
                    before: None,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), mine[..2]);
        let rest = db
            .list(
                "ana",
                &ListQuery {
                    state: None,
                    before: Some(mine[1]),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), mine[2..]);
        let running = db
            .list(
                "ana",
                &ListQuery {
                    state: Some(JobState::Running),
                    before: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert!(running.is_empty());
    }

    #[tokio::test]
    async fn apply_projects_forward_only() {
        let db = Sqlite::in_memory().unwrap();
        let j = job("ana");
        db.insert(&JobRecord::queued(&j), &j).await.unwrap();
        let started = StatusEvent::new(j.id, "ana", EventKind::Started);
        let rec = db.apply(&started).await.unwrap().unwrap();
        assert_eq!(rec.state, JobState::Running);
        let unknown = StatusEvent::new(JobId::new(), "ana", EventKind::Started);
        assert!(db.apply(&unknown).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn queued_records_without_a_queue_entry_are_failed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let j = job("ana");
        {
            let db = Sqlite::open(&path).unwrap();
            db.insert(&JobRecord::queued(&j), &j).await.unwrap();
        }
        let db = Sqlite::open(&path).unwrap();
        let rec = db.get(j.id).await.unwrap().unwrap();
        assert_eq!(rec.state, JobState::Failed);
        assert!(rec.error.unwrap().contains("lost"));
    }
}
