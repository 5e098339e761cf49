//! Reads on connections of their own. In WAL mode readers never wait for
//! the writer nor for each other, so a slow query (a listing, an export)
//! holds up no submit and no other read.

use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

use kumulus_core::ports::PortResult;

/// Reads under way at once, at most (each holds a connection and a
/// blocking thread).
const MAX_READERS: usize = 8;

#[derive(Clone)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
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
                Some(conn) => conn,
                None => this.open().map_err(super::sql_error)?,
            };
            let out = f(&conn).map_err(super::sql_error);
            if let Ok(mut idle) = this.idle.lock() {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(super::internal)?
    }
}
