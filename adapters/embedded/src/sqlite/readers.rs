//! Reads on connections of their own. In WAL mode readers never wait for
//! the writer nor for each other, so a slow query (a listing, an export)
//! holds up no submit and no other read.
//!
//! A busy moment opens up to [`MAX_READERS`] connections, each with its
//! page cache; one left unused for [`IDLE_CLOSE`] is closed at a later
//! read (the reaper's and the autoscaler's come every few seconds), and
//! the one kept lets its cache go then, so that memory goes back once the
//! load has passed.

use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use kumulus_core::ports::PortResult;

/// Reads under way at once, at most (each holds a connection and a
/// blocking thread).
const MAX_READERS: usize = 8;
/// A connection unused this long is closed (all but the last one).
const IDLE_CLOSE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Readers {
    path: PathBuf,
    /// Connections not in use, with when each was last used; the most
    /// recently used last.
    idle: Arc<Mutex<Vec<(Connection, Instant)>>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Arc::default(),
            permits: Arc::new(Semaphore::new(MAX_READERS)),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Runs `f` on a reading connection, off the async threads.
    pub(crate) async fn read<R, F>(&self, f: F) -> PortResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(super::internal)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = this.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match taken {
                Some((conn, _)) => conn,
                None => this.open().map_err(super::sql_error)?,
            };
            let out = f(&conn).map_err(super::sql_error);
            let stale = this.idle.lock().map(|mut idle| {
                idle.push((conn, Instant::now()));
                let keep = idle
                    .iter()
                    .position(|(_, used)| used.elapsed() < IDLE_CLOSE)
                    .unwrap_or(idle.len() - 1);
                idle.drain(..keep).collect::<Vec<_>>()
            });
            if let Ok(stale) = stale {
                if !stale.is_empty() {
                    // The load has passed: the connections it opened close
                    // (here, outside the lock), and the one kept lets its
                    // cache go.
                    drop(stale);
                    if let Some((kept, _)) = this.idle.lock().ok().as_ref().and_then(|i| i.last()) {
                        let _ = kept.release_memory();
                    }
                }
            }
            out
        })
        .await
        .map_err(super::internal)?
    }
}
