//! Job records and the job queue in SQLite.
//!
//! Two tables: `jobs` (one JSON record per job, with owner and state
//! columns for the listing, the queued job itself for new attempts, and
//! when its running attempt last showed life) and `queue` (the full queued
//! job, its attempt, and who claimed it).
//!
//! Every write goes through one writer thread ([`writer`]), which commits
//! the writes waiting together (group commit: one fsync for many, each
//! answered only once durable); reads go through a pool of their own
//! connections ([`readers`]), which WAL lets run beside the writer.
//! - A job's record and its queue entry are written in one transaction
//!   ([`Intake::accept`]), so a submit leaves both or neither.
//! - A claim is one `UPDATE ... RETURNING`, so two workers can never take
//!   the same job.
//! - A job's final state and its removal from the queue are one
//!   transaction ([`JobSource::finish`]), so a job that ended never runs
//!   again.
//!
//! Durability: WAL with `synchronous = FULL`, so a commit is on disk (the
//! WAL fsynced) before its write is answered, and a power cut loses
//! nothing acknowledged. `NORMAL` would skip that fsync and could lose the
//! last commits; group commit makes `FULL` cheap instead.

mod queue;
mod readers;
mod store;
#[cfg(test)]
mod tests;
mod writer;

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use kumulus_core::event;
use kumulus_core::job::{JobRecord, JobState, QueuedJob};
use kumulus_core::lease::{self, Verdict};
use kumulus_core::ports::{PortError, PortResult};

use readers::Readers;
use writer::Writer;

const BACKEND: &str = "sqlite";

/// A SQLite database holding job records and the queue.
#[derive(Clone)]
pub struct Sqlite {
    writer: Writer,
    readers: Readers,
    ready: Arc<Notify>,
    claimer: Arc<str>,
    /// The folder of a [`Sqlite::temporary`] database, removed with the last clone.
    _temp: Option<Arc<tempfile::TempDir>>,
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

/// The tables and their indexes. Every listing and sweep has an index that
/// answers it without a scan: a page costs the same with a thousand jobs
/// in the store as with a million.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        record TEXT NOT NULL
    );
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
    );";

/// Columns added since the first release (with what fills one in for the
/// rows it finds), and the indexes over them.
const COLUMNS: [(&str, &str, &str, &str); 5] = [
    ("jobs", "job", "TEXT", ""),
    ("jobs", "alive_ms", "INTEGER", ""),
    // When an ended job ended (its submission, if it never started), in
    // milliseconds since the epoch; NULL while it is active.
    (
        "jobs",
        "ended_ms",
        "INTEGER",
        "UPDATE jobs SET ended_ms = CAST(ROUND((julianday(COALESCE(
             json_extract(record, '$.finished_at'), json_extract(record, '$.submitted_at')))
             - 2440587.5) * 86400000) AS INTEGER)
         WHERE state NOT IN ('queued', 'running')",
    ),
    ("queue", "attempt", "INTEGER NOT NULL DEFAULT 1", ""),
    ("queue", "available_ms", "INTEGER NOT NULL DEFAULT 0", ""),
];
const INDEXES: &str = "
    -- The first release's index on state alone: every query on state has one of its own now.
    DROP INDEX IF EXISTS jobs_by_state;
    CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, id);
    CREATE INDEX IF NOT EXISTS jobs_by_owner_state ON jobs (owner, state, id);
    CREATE INDEX IF NOT EXISTS jobs_alive ON jobs (state, alive_ms);
    CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (ended_ms) WHERE ended_ms IS NOT NULL;
    CREATE INDEX IF NOT EXISTS jobs_webhook_pending ON jobs (id)
        WHERE json_extract(record, '$.webhook.state') = 'pending';
    CREATE INDEX IF NOT EXISTS queue_ready ON queue (available_ms, seq) WHERE claimed_by IS NULL;
    CREATE INDEX IF NOT EXISTS queue_claimed ON queue (claimed_by) WHERE claimed_by IS NOT NULL;";

impl Sqlite {
    /// Opens (or creates) the database at `path`. Records left `queued`
    /// with no queue entry by an older release are failed; claims left by
    /// an earlier process stay until [`Sqlite::recover_interrupted`].
    pub fn open(path: &Path) -> PortResult<Self> {
        Self::open_in(path, None)
    }

    /// A database of its own in a temporary folder, gone with the last
    /// clone (tests).
    pub fn temporary() -> PortResult<Self> {
        let dir = tempfile::tempdir().map_err(internal)?;
        let path = dir.path().join("kumulus.db");
        Self::open_in(&path, Some(Arc::new(dir)))
    }

    fn open_in(path: &Path, temp: Option<Arc<tempfile::TempDir>>) -> PortResult<Self> {
        let conn = Connection::open(path).map_err(|e| PortError::unavailable(BACKEND, e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(internal)?;
        // A journal mode that is not WAL (a file system without shared
        // memory) would make readers wait for the writer: say so.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(internal)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                mode,
                "the job store could not use WAL; reads will wait for writes"
            );
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(internal)?;
        conn.execute_batch(SCHEMA).map_err(internal)?;
        for (table, column, decl, fill) in COLUMNS {
            let has: bool = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
                ))
                .and_then(|mut st| st.exists(params![column]))
                .map_err(internal)?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                    .map_err(internal)?;
                conn.execute_batch(fill).map_err(internal)?;
            }
        }
        conn.execute_batch(INDEXES).map_err(internal)?;
        fail_orphans(&conn)?;
        Ok(Self {
            writer: Writer::start(conn).map_err(internal)?,
            readers: Readers::new(path.to_path_buf()),
            ready: Arc::new(Notify::new()),
            claimer: uuid::Uuid::now_v7().to_string().into(),
            _temp: temp,
        })
    }

    /// Runs a read on a connection of the pool.
    async fn read<R, F>(&self, f: F) -> PortResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        self.readers.read(f).await
    }

    /// Runs a write in the writer's next batch: atomic on its own (a
    /// savepoint), answered once committed.
    async fn write<R, F>(&self, f: F) -> PortResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<R> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// Hands back the jobs an earlier process claimed (it died with them;
    /// call this once whatever it left running is gone): each becomes a new
    /// attempt, or, past `max_attempts`, fails as an infrastructure
    /// failure. A claimed job whose record already ended is just removed.
    /// Returns how many went back to the queue.
    pub async fn recover_interrupted(&self, max_attempts: u32) -> PortResult<usize> {
        let me = self.claimer.clone();
        let requeued = self
            .write(move |c| recover_claims(c, &me, max_attempts))
            .await?;
        if requeued > 0 {
            self.ready.notify_waiters();
        }
        Ok(requeued)
    }

    /// Jobs waiting in the queue (not claimed).
    pub async fn waiting(&self) -> PortResult<u64> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM queue WHERE claimed_by IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n.max(0) as u64)
    }
}

/// A record left `queued` with no queue entry can never run: end it. (A
/// release before record and queue entry were one transaction could leave
/// one when it died between the two writes, before answering the client.)
fn fail_orphans(conn: &Connection) -> PortResult<()> {
    let orphans: Vec<String> = {
        let mut stmt = conn
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
        write_record(conn, &rec)?;
    }
    Ok(())
}

/// See [`Sqlite::recover_interrupted`]: every claim but `me`'s.
fn recover_claims(tx: &Connection, me: &str, max_attempts: u32) -> PortResult<usize> {
    let claimed: Vec<(i64, String, u32, String)> = {
        let mut stmt = tx
            .prepare(
                "SELECT seq, id, attempt, job FROM queue
                 WHERE claimed_by IS NOT NULL AND claimed_by <> ?1",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map(params![me], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
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
        write_record(tx, &rec)?;
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
    Ok(requeued)
}

/// When a job ended, for the retention sweep's index (`ended_ms`).
fn ended_ms(rec: &JobRecord) -> Option<i64> {
    rec.state.is_terminal().then(|| {
        rec.finished_at
            .unwrap_or(rec.submitted_at)
            .timestamp_millis()
    })
}

fn write_record(conn: &Connection, rec: &JobRecord) -> PortResult<()> {
    let text = serde_json::to_string(rec).map_err(internal)?;
    let alive = rec.last_sign_of_life().map(|t| t.timestamp_millis());
    conn.prepare_cached(
        "INSERT INTO jobs (id, owner, state, record, alive_ms, ended_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record,
             alive_ms = excluded.alive_ms, ended_ms = excluded.ended_ms",
    )
    .and_then(|mut st| {
        st.execute(params![
            rec.id.to_string(),
            rec.owner,
            rec.state.as_str(),
            text,
            alive,
            ended_ms(rec)
        ])
    })
    .map_err(sql_error)?;
    Ok(())
}

fn parse_record(text: String) -> rusqlite::Result<JobRecord> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}
