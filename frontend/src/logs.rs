//! `GET /api/jobs/{id}/logs`: a job's stdout and stderr as Server-Sent
//! Events, from the start. A running job's come live from the workers
//! ([`kumulus_core::ports::LogBus`]) through this frontend's [`Relay`]; when
//! the job ends, the rest comes from its stored logs, so a follower ends with
//! exactly what was stored. An ended job gets its stored logs at once.
//!
//! Events: `stdout` and `stderr` (a [`LogChunk`]), `gap` (live chunks were
//! missed: the job wrote faster than `worker.live_logs_rate_bytes`, or this
//! client read too slowly), `attempt` (the job started over on another
//! worker; its logs start again) and last `end` (the job's record).
//!
//! Bounds: the relay keeps `api.live_logs_buffer_bytes` per running job for
//! late followers, and each connection queues at most [`QUEUED`] events; a
//! slow client gets a `gap` and never slows the job or the others.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use kumulus_core::job::{JobId, JobRecord};
use kumulus_core::logs::{next_chunk, LogChunk, LogStream, MAX_CHUNK};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Events queued per connection, at most.
const QUEUED: usize = 64;
/// Chunks a follower may fall behind the relay before it gets a `gap`.
const FANOUT: usize = 256;
/// Jobs the relay keeps logs of, at most (the least recent go first).
const MAX_JOBS: usize = 256;
/// A job with no chunk for this long is forgotten by the relay (its
/// followers keep following; the end fills in from the stored logs).
const IDLE: Duration = Duration::from_secs(120);
/// How often a follower checks whether its job has ended.
const CHECK: Duration = Duration::from_secs(1);

/// The live logs of running jobs, as this frontend has seen them.
pub struct Relay {
    per_job: usize,
    jobs: Mutex<HashMap<JobId, Entry>>,
}

struct Entry {
    attempt: u32,
    chunks: VecDeque<LogChunk>,
    bytes: usize,
    tx: broadcast::Sender<LogChunk>,
    touched: Instant,
}

impl Entry {
    fn new(attempt: u32) -> Self {
        Self {
            attempt,
            chunks: VecDeque::new(),
            bytes: 0,
            tx: broadcast::channel(FANOUT).0,
            touched: Instant::now(),
        }
    }
}

impl Relay {
    pub fn new(per_job_bytes: usize) -> Self {
        Self {
            per_job: per_job_bytes,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a chunk from a worker: kept for late followers (within the
    /// bounds) and passed to the current ones.
    pub fn accept(&self, chunk: LogChunk) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if !jobs.contains_key(&chunk.job) && jobs.len() >= MAX_JOBS {
            jobs.retain(|_, e| e.touched.elapsed() < IDLE || e.tx.receiver_count() > 0);
            if jobs.len() >= MAX_JOBS {
                if let Some(oldest) = jobs.iter().min_by_key(|(_, e)| e.touched).map(|(k, _)| *k) {
                    jobs.remove(&oldest);
                }
            }
        }
        let entry = jobs
            .entry(chunk.job)
            .or_insert_with(|| Entry::new(chunk.attempt));
        if chunk.attempt < entry.attempt {
            return; // a superseded attempt's last words
        }
        if chunk.attempt > entry.attempt {
            let tx = entry.tx.clone();
            *entry = Entry::new(chunk.attempt);
            entry.tx = tx;
        }
        entry.touched = Instant::now();
        entry.bytes += chunk.text.len();
        entry.chunks.push_back(chunk.clone());
        while entry.bytes > self.per_job && entry.chunks.len() > 1 {
            if let Some(c) = entry.chunks.pop_front() {
                entry.bytes -= c.text.len();
            }
        }
        let _ = entry.tx.send(chunk);
    }

    /// What is kept of `job`'s logs, and what comes after it.
    fn subscribe(&self, job: JobId) -> (Vec<LogChunk>, broadcast::Receiver<LogChunk>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = jobs.entry(job).or_insert_with(|| Entry::new(0));
        (entry.chunks.iter().cloned().collect(), entry.tx.subscribe())
    }

    /// Forgets an ended job.
    fn forget(&self, job: JobId) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.get(&job).is_some_and(|e| e.tx.receiver_count() == 0) {
            jobs.remove(&job);
        }
    }
}

/// Feeds `state`'s relay from its log bus until `shutdown`.
pub async fn relay(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut chunks = state.ports.logs.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            c = chunks.next() => match c {
                Some(c) => state.live_logs.accept(c),
                None => return,
            },
        }
    }
}

/// One event of the stream. Its `data` is JSON: a [`LogChunk`] for
/// `stdout` and `stderr`, `{"stream", "from", "to"}` for `gap`,
/// `{"attempt"}` for `attempt`, and the job's record for `end`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: events are written by `json_event`
pub struct LogEvent {
    event: LogEventKind,
    data: String,
}

/// The events' names.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogEventKind {
    Stdout,
    Stderr,
    Gap,
    Attempt,
    End,
}

impl LogEventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Gap => "gap",
            Self::Attempt => "attempt",
            Self::End => "end",
        }
    }

    fn of(stream: LogStream) -> Self {
        match stream {
            LogStream::Stdout => Self::Stdout,
            LogStream::Stderr => Self::Stderr,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/jobs/{id}/logs",
    operation_id = "getLogs",
    tag = "files",
    summary = "The job's stdout and stderr, as Server-Sent Events",
    description = "From the start of the current attempt. With `follow=true`, a running job's output comes as it is written and the stream ends with an `end` event when the job ends; without it, what there is now. An ended job gets its stored logs, then `end`.\n\nEvents: `stdout` and `stderr` (data: a `LogChunk`), `gap` (data: `{\"stream\", \"from\", \"to\"}`: bytes missed live, at most `worker.live_logs_rate_bytes` a second are sent), `attempt` (data: `{\"attempt\"}`: the job started over; its logs start again), `end` (data: the job's record).",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job's id"),
        ("follow" = Option<bool>, Query, description = "Keep the stream open until the job ends")
    ),
    responses(
        (status = 200, description = "The event stream (the schema is each event's)", content_type = "text/event-stream", body = LogEvent),
        (status = 404, description = "No such job of yours", body = crate::openapi::ErrorBody),
        (status = 422, description = "An unknown parameter, or `follow` not true or false", body = crate::openapi::ErrorBody)
    )
)]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = crate::query::params(query, &["follow"])?;
    let follow = match params.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(ApiError::Invalid("follow: must be true or false".into())),
    };
    let rec = crate::jobs::own_job(&state, &caller, &id).await?;
    let (tx, rx) = mpsc::channel::<Event>(QUEUED);
    tokio::spawn(async move {
        let mut out = Out {
            tx,
            seen: [0, 0],
            attempt: rec.attempt,
        };
        if rec.state.is_terminal() {
            let _ = out.finish(&state, &rec).await;
        } else {
            let _ = out.live(&state, rec.id, follow).await;
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The client gone.
struct Gone;

/// One follower's stream: what it has been sent of each stream so far.
struct Out {
    tx: mpsc::Sender<Event>,
    seen: [u64; 2],
    attempt: u32,
}

impl Out {
    async fn send(&self, event: Event) -> Result<(), Gone> {
        self.tx.send(event).await.map_err(|_| Gone)
    }

    async fn chunk(&mut self, c: &LogChunk) -> Result<(), Gone> {
        if c.attempt > self.attempt {
            self.attempt = c.attempt;
            self.seen = [0, 0];
            self.send(json_event(
                LogEventKind::Attempt,
                &json!({ "attempt": c.attempt }),
            ))
            .await?;
        }
        if c.attempt < self.attempt {
            return Ok(());
        }
        let seen = self.seen[c.stream as usize];
        let end = c.offset + c.text.len() as u64;
        if end <= seen {
            return Ok(()); // sent already (from the relay's backlog)
        }
        if c.offset > seen {
            self.send(json_event(
                LogEventKind::Gap,
                &json!({"stream": c.stream, "from": seen, "to": c.offset}),
            ))
            .await?;
        }
        self.seen[c.stream as usize] = end;
        self.send(json_event(LogEventKind::of(c.stream), c)).await
    }

    /// A running job's logs: the relay's backlog, then live chunks until
    /// the job ends (with `follow`), then the rest from the stored logs.
    async fn live(&mut self, state: &AppState, job: JobId, follow: bool) -> Result<(), Gone> {
        let (backlog, mut rx) = state.live_logs.subscribe(job);
        for c in &backlog {
            self.chunk(c).await?;
        }
        if !follow {
            return Ok(());
        }
        let mut check = tokio::time::interval(CHECK);
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Ok(c) => self.chunk(&c).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed: the next chunk's offset shows how much.
                    }
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = check.tick() => {
                    match state.ports.store.get(job).await {
                        Ok(Some(rec)) if rec.state.is_terminal() => {
                            drop(rx);
                            state.live_logs.forget(job);
                            return self.finish(state, &rec).await;
                        }
                        Ok(Some(_)) => {}
                        // Removed meanwhile.
                        Ok(None) => return Ok(()),
                        Err(e) => tracing::debug!(error = %e, "cannot read a followed job"),
                    }
                    if self.tx.is_closed() {
                        return Err(Gone);
                    }
                }
            }
        }
    }

    /// An ended job: what the client has not had of its stored logs, then
    /// `end` with its record.
    async fn finish(&mut self, state: &AppState, rec: &JobRecord) -> Result<(), Gone> {
        if rec.attempt > self.attempt {
            self.attempt = rec.attempt;
            self.seen = [0, 0];
            self.send(json_event(
                LogEventKind::Attempt,
                &json!({ "attempt": rec.attempt }),
            ))
            .await?;
        }
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            if rec.files.iter().any(|f| f == stream.file_name()) {
                self.stored(state, rec, stream).await?;
            }
        }
        self.send(json_event(LogEventKind::End, rec)).await
    }

    async fn stored(
        &mut self,
        state: &AppState,
        rec: &JobRecord,
        stream: LogStream,
    ) -> Result<(), Gone> {
        let name = kumulus_core::ports::blob_name(rec.attempt, stream.file_name());
        let blob = match state.ports.blobs.get(rec.id, &name).await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a job's stored log");
                return Ok(());
            }
        };
        let skip = self.seen[stream as usize];
        let mut at = 0u64;
        let mut buf: Vec<u8> = Vec::new();
        let mut body = blob.body;
        let mut done = false;
        while !done {
            match body.next().await {
                Some(Ok(bytes)) => {
                    let end = at + bytes.len() as u64;
                    if end > skip {
                        let from = skip.saturating_sub(at) as usize;
                        buf.extend_from_slice(&bytes[from..]);
                    }
                    at = end;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "a job's stored log broke off");
                    done = true;
                }
                None => done = true,
            }
            while buf.len() >= MAX_CHUNK || done {
                let Some((text, used)) = next_chunk(&mut buf, done) else {
                    break;
                };
                let chunk = LogChunk {
                    job: rec.id,
                    attempt: rec.attempt,
                    stream,
                    offset: self.seen[stream as usize],
                    text,
                };
                self.seen[stream as usize] += used as u64;
                self.send(json_event(LogEventKind::of(stream), &chunk))
                    .await?;
            }
        }
        Ok(())
    }
}

fn json_event<T: serde::Serialize>(kind: LogEventKind, data: &T) -> Event {
    Event::default()
        .event(kind.as_str())
        .data(serde_json::to_string(data).unwrap_or_default())
}
