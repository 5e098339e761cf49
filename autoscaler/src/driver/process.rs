//! The `process` driver: real worker processes on this machine.
//!
//! - Scaling up starts the configured command (`kumulus worker ...` by
//!   default), each process with its own worker id (`KUMULUS_WORKER__ID`)
//!   and its own log file, in a process group of its own (a Ctrl-C on the
//!   autoscaler's terminal does not reach the workers; the autoscaler
//!   decides when they stop).
//! - Scaling down stops the newest workers with SIGTERM: they drain as
//!   `kumulus worker` does on shutdown (a running job finishes within its
//!   grace, or is queued again), and no longer count.
//! - A worker that dies no longer counts: the next decision replaces it.
//! - When the autoscaler stops, its workers are stopped too (`on_stop =
//!   "stop"`, the default: a later autoscaler would not adopt them, count
//!   from zero and start as many again), or left running (`"leave"`).
//!
//! Nothing goes through a shell.

use async_trait::async_trait;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::process::{Child, Command};

use kumulus_core::ports::{PortError, PortResult, ScalingPlatform};

/// What happens to the workers when the autoscaler stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    Stop,
    Leave,
}

impl std::str::FromStr for OnStop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stop" => Ok(Self::Stop),
            "leave" => Ok(Self::Leave),
            other => Err(format!("unknown `{other}`; expected stop or leave")),
        }
    }
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Extra environment of every worker (on top of the autoscaler's own).
    pub env: Vec<(String, String)>,
    /// Each worker's log is `<log_dir>/<id>.log`.
    pub log_dir: PathBuf,
    /// Worker ids are `<id_prefix>-<n>`.
    pub id_prefix: String,
    pub on_stop: OnStop,
    /// How long a stopping worker may drain before it is killed, when the
    /// autoscaler itself stops.
    pub drain: Duration,
}

struct Worker {
    id: String,
    child: Child,
}

#[derive(Default)]
struct Pool {
    /// Running, oldest first.
    running: Vec<Worker>,
    /// Stopped with SIGTERM, draining.
    draining: Vec<Worker>,
    started: u64,
}

impl Pool {
    /// Drops the workers that exited, logging the ones that were not asked to.
    fn reap(&mut self) {
        self.running.retain_mut(|w| match w.child.try_wait() {
            Ok(Some(status)) => {
                tracing::warn!(worker = %w.id, %status, "a worker exited; it is replaced at the next decision");
                false
            }
            _ => true,
        });
        self.draining.retain_mut(|w| match w.child.try_wait() {
            Ok(Some(status)) => {
                tracing::info!(worker = %w.id, %status, "a stopped worker has drained");
                false
            }
            _ => true,
        });
    }
}

pub struct ProcessDriver {
    settings: ProcessSettings,
    pool: Mutex<Pool>,
}

impl ProcessDriver {
    pub fn new(settings: ProcessSettings) -> std::io::Result<Self> {
        std::fs::create_dir_all(&settings.log_dir)?;
        Ok(Self {
            settings,
            pool: Mutex::default(),
        })
    }

    fn start(&self, pool: &mut Pool) -> PortResult<()> {
        pool.started += 1;
        let id = format!("{}-{}", self.settings.id_prefix, pool.started);
        let log_path = self.settings.log_dir.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| unavailable(format!("cannot open {}: {e}", log_path.display())))?;
        let mut cmd = Command::new(&self.settings.program);
        cmd.args(&self.settings.args)
            .envs(self.settings.env.iter().map(|(k, v)| (k, v)))
            .env("KUMULUS_WORKER__ID", &id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            unavailable(format!(
                "cannot start {}: {e}",
                self.settings.program.display()
            ))
        })?;
        tracing::info!(worker = %id, pid = ?child.id(), log = %log_path.display(), "started a worker");
        pool.running.push(Worker { id, child });
        Ok(())
    }

    /// The ids of the workers that run (not draining), oldest first.
    pub fn running(&self) -> Vec<String> {
        let mut pool = self.lock();
        pool.reap();
        pool.running.iter().map(|w| w.id.clone()).collect()
    }

    /// Process ids of the running workers, oldest first.
    pub fn pids(&self) -> Vec<u32> {
        let mut pool = self.lock();
        pool.reap();
        pool.running.iter().filter_map(|w| w.child.id()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::unavailable("platform", e)
}

/// SIGTERM to a child that has not been reaped yet (we hold its `Child`,
/// so its pid is not reused).
fn terminate(w: &Worker) {
    if let Some(pid) = w.child.id() {
        use nix::sys::signal::{kill, Signal};
        let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
}

/// A driver dropped without `close` (its autoscaler panicked, a test
/// failed) still stops its workers, if so configured: SIGTERM, no wait.
impl Drop for ProcessDriver {
    fn drop(&mut self) {
        if self.settings.on_stop != OnStop::Stop {
            return;
        }
        let pool = self.lock();
        for w in pool.running.iter().chain(pool.draining.iter()) {
            terminate(w);
        }
    }
}

#[async_trait]
impl ScalingPlatform for ProcessDriver {
    async fn current(&self) -> PortResult<u32> {
        let mut pool = self.lock();
        pool.reap();
        Ok(pool.running.len() as u32)
    }

    async fn apply(&self, desired: u32) -> PortResult<()> {
        let mut pool = self.lock();
        pool.reap();
        while (pool.running.len() as u32) < desired {
            self.start(&mut pool)?;
        }
        while (pool.running.len() as u32) > desired {
            let Some(w) = pool.running.pop() else { break };
            tracing::info!(worker = %w.id, "stopping a worker (it drains)");
            terminate(&w);
            pool.draining.push(w);
        }
        Ok(())
    }

    async fn close(&self) {
        let mut all = {
            let mut pool = self.lock();
            pool.reap();
            if self.settings.on_stop == OnStop::Leave {
                let ids: Vec<&str> = pool.running.iter().map(|w| w.id.as_str()).collect();
                tracing::info!(workers = ?ids, "leaving the workers running");
                return;
            }
            let mut all = std::mem::take(&mut pool.running);
            all.append(&mut pool.draining);
            all
        };
        for w in &all {
            terminate(w);
        }
        let drain = self.settings.drain;
        for w in &mut all {
            match tokio::time::timeout(drain, w.child.wait()).await {
                Ok(_) => tracing::info!(worker = %w.id, "worker stopped"),
                Err(_) => {
                    tracing::warn!(worker = %w.id, "a worker did not drain in time; killing it");
                    let _ = w.child.kill().await;
                }
            }
        }
    }
}
