//! Group commit: one thread owns the database's only writing connection.
//!
//! Every write is a [`Task`] sent to it. The thread takes every task
//! waiting, runs each in a savepoint of its own inside one transaction,
//! commits once (with `synchronous = FULL`, one fsync of the WAL for the
//! whole batch), and only then answers each task. While it waits on a
//! commit, new tasks pile up and make the next batch: the busier the
//! database, the more writes share an fsync, and no write is ever answered
//! before it is durable. A task that fails rolls back to its savepoint and
//! leaves the others' writes in place.

use rusqlite::Connection;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

use kumulus_core::ports::{PortError, PortResult};

/// Tasks in one transaction, at most, so that a flood still gets answers
/// in steady slices.
const MAX_BATCH: usize = 1024;
/// Idle this long, the writer lets its page cache go (memory back after a
/// load; the pages it needs next come from the system's file cache).
const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// A write to run in the writer's transaction.
pub(crate) trait Task: Send {
    /// Runs the write, inside its own savepoint.
    fn run(&mut self, conn: &Connection);
    /// Answers the caller once the batch's commit has ended (`commit` is
    /// its error, if it failed). A caller that is gone may leave a write
    /// to undo: it is returned, and runs in the next batch.
    fn answer(self: Box<Self>, commit: Option<&PortError>) -> Option<Box<dyn Task>>;
}

/// The sending side: cheap to clone, one per database.
#[derive(Clone)]
pub(crate) struct Writer {
    // Unbounded, so that sending never blocks (async callers send from the
    // runtime's threads, and a drop can still send an undo): every caller
    // waits for its answer, so the tasks waiting are at most the requests
    // and loops under way, which the server already bounds.
    tx: mpsc::Sender<Box<dyn Task>>,
}

impl Writer {
    /// Starts the writer thread on `conn`. It ends when every [`Writer`]
    /// is dropped, after answering what it was sent.
    pub(crate) fn start(conn: Connection) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("kumulus-sqlite-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Self { tx })
    }

    /// Runs `f` in the next batch; answers once it is committed.
    pub(crate) async fn write<R, F>(&self, f: F) -> PortResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<R> + Send + 'static,
    {
        let answer = self.queue(f, None)?;
        answer.await.map_err(|_| stopped())?
    }

    /// Like [`Writer::write`]; if the caller stops waiting before the
    /// answer (a cancelled future), `undo` makes the write's result into a
    /// write that takes it back (a claim nobody received is released).
    pub(crate) async fn write_or_undo<R, F>(&self, f: F, undo: Undo<R>) -> PortResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<R> + Send + 'static,
    {
        let mut pending = Unanswered {
            answer: self.queue(f, Some(undo))?,
            undo,
            writer: self,
            done: false,
        };
        let out = (&mut pending.answer).await;
        pending.done = true;
        out.map_err(|_| stopped())?
    }

    /// Sends `f` to the writer; its answer comes on the receiver.
    fn queue<R, F>(
        &self,
        f: F,
        undo: Option<Undo<R>>,
    ) -> PortResult<oneshot::Receiver<PortResult<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Box::new(Call {
            f: Some(f),
            out: None,
            reply,
            undo,
        }))?;
        Ok(answer)
    }

    fn send(&self, task: Box<dyn Task>) -> PortResult<()> {
        self.tx.send(task).map_err(|_| stopped())
    }
}

/// An answer still awaited. Dropped unread (its caller gone), it closes
/// the answer, so that a write not yet answered is undone by the writer,
/// and undoes itself one that was answered already.
struct Unanswered<'w, R> {
    answer: oneshot::Receiver<PortResult<R>>,
    undo: Undo<R>,
    writer: &'w Writer,
    done: bool,
}

impl<R> Drop for Unanswered<'_, R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.answer.close();
        if let Ok(Ok(value)) = self.answer.try_recv() {
            if let Some(task) = (self.undo)(value) {
                let _ = self.writer.send(task);
            }
        }
    }
}

/// Turns a write's result, which its caller never received, into a task
/// that takes the write back.
pub(crate) type Undo<R> = fn(R) -> Option<Box<dyn Task>>;

fn stopped() -> PortError {
    PortError::Internal("sqlite: the writer thread stopped".into())
}

/// The same error again, for each task of a batch whose commit failed.
fn again(e: &PortError) -> PortError {
    match e {
        PortError::Full(m) => PortError::Full(m.clone()),
        other => PortError::Internal(other.to_string()),
    }
}

struct Call<R, F> {
    f: Option<F>,
    out: Option<PortResult<R>>,
    reply: oneshot::Sender<PortResult<R>>,
    undo: Option<Undo<R>>,
}

impl<R, F> Task for Call<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> PortResult<R> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(f) = self.f.take() {
            self.out = Some(in_savepoint(conn, f));
        }
    }

    fn answer(self: Box<Self>, commit: Option<&PortError>) -> Option<Box<dyn Task>> {
        let Call {
            out, reply, undo, ..
        } = *self;
        let out = match commit {
            Some(e) => Err(again(e)),
            None => out.unwrap_or_else(|| Err(stopped())),
        };
        match reply.send(out) {
            Ok(()) => None,
            Err(Ok(value)) => undo.and_then(|undo| undo(value)),
            Err(Err(_)) => None,
        }
    }
}

fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> PortResult<R>,
) -> PortResult<R> {
    conn.execute_batch("SAVEPOINT task")
        .map_err(super::sql_error)?;
    let out = f(conn);
    let end = if out.is_ok() {
        "RELEASE task"
    } else {
        "ROLLBACK TO task; RELEASE task"
    };
    conn.execute_batch(end).map_err(super::sql_error)?;
    out
}

fn run(conn: Connection, rx: mpsc::Receiver<Box<dyn Task>>) {
    let mut pending: Vec<Box<dyn Task>> = Vec::new();
    loop {
        if pending.is_empty() {
            let first = match rx.recv_timeout(IDLE_RELEASE) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = conn.release_memory();
                    rx.recv().ok()
                }
                other => other.ok(),
            };
            match first {
                Some(task) => pending.push(task),
                None => return,
            }
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(task) => pending.push(task),
                Err(_) => break,
            }
        }
        let mut batch = std::mem::take(&mut pending);
        let commit = match conn.execute_batch("BEGIN IMMEDIATE") {
            Err(e) => Some(super::sql_error(e)),
            Ok(()) => {
                for task in &mut batch {
                    task.run(&conn);
                }
                match conn.execute_batch("COMMIT") {
                    Ok(()) => None,
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        Some(super::sql_error(e))
                    }
                }
            }
        };
        if let Some(e) = &commit {
            tracing::error!(error = %e, tasks = batch.len(), "a batch of writes could not be committed");
        }
        for task in batch {
            if let Some(undo) = task.answer(commit.as_ref()) {
                pending.push(undo);
            }
        }
    }
}

/// A write nobody waits for (an undo).
struct Detached<F>(Option<F>);

impl<F> Task for Detached<F>
where
    F: FnOnce(&Connection) -> PortResult<()> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(f) = self.0.take() {
            if let Err(e) = in_savepoint(conn, f) {
                tracing::error!(error = %e, "a write that undoes another failed");
            }
        }
    }

    fn answer(self: Box<Self>, commit: Option<&PortError>) -> Option<Box<dyn Task>> {
        if let Some(e) = commit {
            tracing::error!(error = %e, "a write that undoes another was not committed");
        }
        None
    }
}

/// `f` as a task with no caller to answer.
pub(crate) fn detached(
    f: impl FnOnce(&Connection) -> PortResult<()> + Send + 'static,
) -> Box<dyn Task> {
    Box::new(Detached(Some(f)))
}
