//! The ports: what the services need from the outside world. Each has an
//! embedded adapter (for `kumulus up`) and a production one.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use std::path::Path;

use crate::event::StatusEvent;
use crate::job::{JobId, JobRecord, JobState, QueuedJob};

/// Why a port could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The backend is down or unreachable; the request may be retried.
    #[error("{backend} is unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// A disk is full; it may be retried once there is room.
    #[error("{0}")]
    Full(String),
    /// Anything else: a bug or corrupt data.
    #[error("{0}")]
    Internal(String),
}

impl PortError {
    pub fn unavailable(backend: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            backend,
            detail: detail.to_string(),
        }
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// The answer to claiming an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyClaim {
    /// The key is this request's now: create the job.
    Claimed,
    /// An earlier request (within the time the key is kept) holds it: its
    /// job, and the fingerprint of its body.
    Held { job: JobId, fingerprint: String },
}

/// A page of a user's jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub state: Option<JobState>,
    /// Jobs older than this one (the previous page's last id).
    pub before: Option<JobId>,
    pub limit: usize,
}

/// Where job records live (the frontend's own store).
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores the record of a job just accepted, and the job itself (never
    /// shown: it holds the URL's credentials and the config) so that it can
    /// be queued again as a new attempt.
    async fn insert(&self, record: &JobRecord, job: &QueuedJob) -> PortResult<()>;
    /// The job as it was queued (see [`JobStore::insert`]).
    async fn payload(&self, id: JobId) -> PortResult<Option<QueuedJob>>;
    /// Running jobs whose last heartbeat (or start) is older than `cutoff`,
    /// at most `limit`.
    async fn stalled(&self, cutoff: DateTime<Utc>, limit: usize) -> PortResult<Vec<JobRecord>>;
    /// Queued jobs placed on `partition` before `cutoff`, at most `limit`.
    async fn queued_on(
        &self,
        _partition: i32,
        _cutoff: DateTime<Utc>,
        _limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        Ok(Vec::new())
    }
    /// Whether a job placed on `partition` (on any, for None) runs with a
    /// lease renewed since `cutoff`: a worker is alive there, only busy.
    async fn alive_on(&self, _partition: Option<i32>, _cutoff: DateTime<Utc>) -> PortResult<bool> {
        Ok(false)
    }
    /// How far each partition of a feed (the status events) has been
    /// applied: the next offset to read, per partition.
    async fn positions(&self, _feed: &str) -> PortResult<Vec<(i32, i64)>> {
        Ok(Vec::new())
    }
    /// Moves a feed's position forward (never back: replicas race).
    async fn advance(&self, _feed: &str, _partition: i32, _offset: i64) -> PortResult<()> {
        Ok(())
    }
    /// Replaces the stored job (its new attempt, its new place).
    async fn set_payload(&self, job: &QueuedJob) -> PortResult<()>;
    /// Removes a record and the job it holds (a job that could not be
    /// queued after all, or one deleted or expired); removing one that is
    /// gone already is not an error.
    async fn remove(&self, id: JobId) -> PortResult<()>;
    /// Claims `owner`'s idempotency `key` for `job`, whose request body has
    /// `fingerprint`, atomically (two requests racing get one `Claimed`). A
    /// key claimed before `expired_before` is forgotten first.
    async fn claim_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        job: JobId,
        expired_before: DateTime<Utc>,
    ) -> PortResult<KeyClaim>;
    /// Gives a claim up (its job could not be created), if `job` holds it.
    async fn release_key(&self, owner: &str, key: &str, job: JobId) -> PortResult<()>;
    /// Ended jobs whose webhook is pending and due by `now` (its next try
    /// at or before it, or none yet), at most `limit`.
    async fn webhooks_due(&self, now: DateTime<Utc>, limit: usize) -> PortResult<Vec<JobRecord>>;
    /// Records how a job's webhook went.
    async fn set_webhook(&self, id: JobId, delivery: &crate::webhook::Delivery) -> PortResult<()>;
    /// Jobs of any owner that ended before `cutoff`, oldest first, at most
    /// `limit` (the retention sweep).
    async fn ended_before(&self, cutoff: DateTime<Utc>, limit: usize)
        -> PortResult<Vec<JobRecord>>;
    async fn get(&self, id: JobId) -> PortResult<Option<JobRecord>>;
    /// The owner's jobs, newest first, at most `query.limit`.
    async fn list(&self, owner: &str, query: &ListQuery) -> PortResult<Vec<JobRecord>>;
    /// Every owner's jobs, oldest first, from after `after` (`kumulus trace
    /// export`): up to `limit` of them.
    async fn history(&self, after: Option<JobId>, limit: usize) -> PortResult<Vec<JobRecord>>;
    /// Projects an event into its record with [`crate::event::apply`]; safe to
    /// call from several replicas and with repeated events. Returns the
    /// record after the event, if the job exists.
    async fn apply(&self, event: &StatusEvent) -> PortResult<Option<JobRecord>>;
    /// Whether the store answers.
    async fn ping(&self) -> PortResult<()>;
}

/// Taking a new job in: its record stored and the job queued.
#[async_trait]
pub trait Intake: Send + Sync {
    /// Stores `record` and queues `job`. Once this returns Ok both are
    /// durable; on an error neither stays (nothing half-accepted).
    async fn accept(&self, record: &JobRecord, job: &QueuedJob) -> PortResult<()>;
}

/// [`Intake`] over a store and a queue that cannot share a transaction
/// (MongoDB and Kafka): the record first, then the queue entry; a record
/// whose job could not be queued is removed again.
pub struct StoreThenQueue {
    pub store: std::sync::Arc<dyn JobStore>,
    pub queue: std::sync::Arc<dyn JobQueue>,
}

#[async_trait]
impl Intake for StoreThenQueue {
    async fn accept(&self, record: &JobRecord, job: &QueuedJob) -> PortResult<()> {
        self.store.insert(record, job).await?;
        if let Err(e) = self.queue.enqueue(job).await {
            if let Err(cleanup) = self.store.remove(job.id).await {
                tracing::error!(job_id = %job.id, error = %cleanup, "could not remove the record of a job that was not queued");
            }
            return Err(e);
        }
        Ok(())
    }
}

/// The submission side of the job queue.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Durably queues a job; once this returns Ok the job is never lost.
    async fn enqueue(&self, job: &QueuedJob) -> PortResult<()>;
    /// Queues a new attempt of a job, where a live worker will take it;
    /// returns where it went (see [`JobQueue::place`]).
    async fn requeue(&self, job: &QueuedJob) -> PortResult<Option<i32>> {
        self.enqueue(job).await.map(|()| job.partition)
    }
    /// Says where `job` will go before it is stored, where the queue has
    /// places (partitions); the job then keeps its place.
    async fn place(&self, _job: &mut QueuedJob) {}
    /// Places whose jobs nobody takes: work has waited there for `after`
    /// while nothing was consumed (a member the broker never let go of).
    async fn stuck(&self, _after: std::time::Duration) -> Vec<i32> {
        Vec::new()
    }
    /// Places where every job put there has been taken, and has been for
    /// `after` (see [`Drained`]). A job the store still holds queued on one,
    /// placed well before, is not in the queue any more: the queue lost it
    /// (a broker that dropped acknowledged messages in a restart).
    async fn drained(&self, _after: std::time::Duration) -> Option<Drained> {
        None
    }
}

/// Places of a queue with nothing waiting, as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Drained {
    pub partitions: Vec<i32>,
    /// When they were seen so.
    pub seen: DateTime<Utc>,
    /// Where the status feed ([`STATUS_FEED`]) ended, per partition, read
    /// after they were seen so: the start of every job taken from them was
    /// published before these offsets. The store's record of such a job is
    /// current once the projection has applied the feed up to here.
    pub status_end: Vec<(i32, i64)>,
}

/// The feed of status events, as [`JobStore::positions`] names it.
pub const STATUS_FEED: &str = "results";

/// One holder at a time for a background duty (the reaper), among replicas.
#[async_trait]
pub trait Leadership: Send + Sync {
    /// Takes or renews the lead for `ttl`; false while someone else holds it.
    async fn lead(&self, holder: &str, ttl: std::time::Duration) -> PortResult<bool>;
}

/// A single process leads always.
pub struct SoleLeader;

#[async_trait]
impl Leadership for SoleLeader {
    async fn lead(&self, _holder: &str, _ttl: std::time::Duration) -> PortResult<bool> {
        Ok(true)
    }
}

/// A job handed to a worker; it stays the worker's until acknowledged or released.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job: QueuedJob,
    /// Adapter-specific handle (a lease id, a partition and offset).
    pub handle: String,
}

/// The worker side of the job queue.
#[async_trait]
pub trait JobSource: Send + Sync {
    /// Waits for the next job and claims it; no other worker gets it while claimed.
    async fn next(&self) -> PortResult<Delivery>;
    /// The job's final status is published: it is done with for good.
    async fn ack(&self, delivery: &Delivery) -> PortResult<()>;
    /// Hands the job back to be delivered again (shutdown in the middle of
    /// it). Not after [`JobSource::started`] has let go of it.
    async fn release(&self, delivery: &Delivery) -> PortResult<()>;
    /// The job's start is published. A source whose claims can move to
    /// another worker while the job runs (a Kafka partition handed to
    /// another member in a rebalance) lets go of it here and answers true:
    /// from now on the job's lease alone keeps it, and a stalled attempt is
    /// queued again by the reaper. A source that holds its claim until the
    /// end (a database lease) answers false.
    async fn started(&self, _delivery: &Delivery) -> PortResult<bool> {
        Ok(false)
    }
    /// Publishes the job's final event and acknowledges the job: in one
    /// transaction where the adapter can, so that a job that ended is never
    /// delivered again.
    async fn finish(
        &self,
        delivery: &Delivery,
        event: &StatusEvent,
        status: &dyn StatusBus,
    ) -> PortResult<()> {
        status.publish(event).await?;
        self.ack(delivery).await
    }
    /// How long the last rebalance kept this worker from consuming, once
    /// (the next call answers None until another one). Sources without
    /// rebalances have none.
    fn take_rebalance_pause(&self) -> Option<f64> {
        None
    }
    /// The worker is stopping: finish acknowledgements and let go (leave the group).
    async fn close(&self) {}
}

/// Where status events go (workers publish; the store's projector and the
/// autoscaler read).
#[async_trait]
pub trait StatusBus: Send + Sync {
    async fn publish(&self, event: &StatusEvent) -> PortResult<()>;
    /// Events from now on.
    fn subscribe(&self) -> BoxStream<'static, StatusEvent>;
}

/// A request to stop a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CancelRequest {
    pub job_id: JobId,
    pub owner: String,
    /// Not a cancellation but a fence: attempts up to this one were
    /// superseded (the job was queued again); workers stop and skip them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<u32>,
}

/// Cancellations, from the frontend to every worker.
#[async_trait]
pub trait CancelBus: Send + Sync {
    async fn cancel(&self, request: &CancelRequest) -> PortResult<()>;
    /// Cancellations from now on.
    fn subscribe(&self) -> BoxStream<'static, CancelRequest>;
}

/// Running jobs' output, from the workers to every frontend, as it is
/// written ([`crate::logs`]). Best effort: a publisher never waits long, and
/// a slow subscriber misses chunks rather than slowing anyone.
#[async_trait]
pub trait LogBus: Send + Sync {
    async fn publish(&self, chunk: &crate::logs::LogChunk) -> PortResult<()>;
    /// Chunks published from now on, by every worker.
    fn subscribe(&self) -> BoxStream<'static, crate::logs::LogChunk>;
}

/// A stored file, as a stream of chunks.
pub struct Blob {
    pub len: u64,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

/// Whether `name` is a safe relative file name: `/`-separated parts, none
/// empty, `.` or `..`, no backslashes or control characters. Every blob store
/// and every download checks names with this.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The name a job file of attempt `attempt` is stored under: the first
/// attempt's as they are, later ones' under `attempts/<n>/`, so that a
/// superseded attempt that wakes up never overwrites the files of the
/// attempt the record shows.
pub fn blob_name(attempt: u32, name: &str) -> String {
    if attempt <= 1 {
        name.to_string()
    } else {
        format!("attempts/{attempt}/{name}")
    }
}

/// Where job files live, under `<job id>/<name>`.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores the file at `path` as `name` of job `job`.
    async fn put_file(&self, job: JobId, name: &str, path: &Path) -> PortResult<()>;
    /// Opens a stored file; None if there is none.
    async fn get(&self, job: JobId, name: &str) -> PortResult<Option<Blob>>;
    /// Removes every file of job `job` (all its attempts'); returns how
    /// many it removed. Removing a job that has none is not an error.
    async fn remove_job(&self, job: JobId) -> PortResult<u64>;
    /// A URL that serves the file directly for a while, where the store can
    /// make one and is configured to; None means "stream it through".
    async fn presign(&self, _job: JobId, _name: &str) -> PortResult<Option<String>> {
        Ok(None)
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: String,
}

/// A token issued at login.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
}

/// Logs users in and checks their tokens.
#[async_trait]
pub trait Authenticator: Send + Sync {
    async fn login(&self, username: &str, password: &str) -> Result<IssuedToken, AuthError>;
    async fn verify(&self, token: &str) -> Result<Principal, AuthError>;
}

/// The platform that runs worker instances (Kumori, local processes).
#[async_trait]
pub trait ScalingPlatform: Send + Sync {
    /// How many workers the platform runs now (or, where it cannot see
    /// them, how many it was last asked for: see `counts_running`).
    async fn current(&self) -> PortResult<u32>;
    /// Asks the platform to run `desired` workers.
    async fn apply(&self, desired: u32) -> PortResult<()>;
    /// Whether `current` counts the workers that run, rather than repeat
    /// the count last asked for.
    fn counts_running(&self) -> bool {
        true
    }
    /// The autoscaler stops.
    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::is_safe_file_name;

    #[test]
    fn file_names_stay_inside_their_job() {
        for ok in ["stdout.log", "output/a.txt", "output/sub/b c.json"] {
            assert!(is_safe_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "output/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\nb",
        ] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }
}
