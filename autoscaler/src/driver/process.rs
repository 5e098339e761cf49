//! The `process` driver: real worker processes on this machine.
//!
//! - Scaling up starts the configured command (`kumulus worker ...` by
//!   default), each process with its own worker id (`KUMULUS_WORKER__ID`)
//!   and its own log file, in a process group of its own (a Ctrl-C on the
//!   autoscaler's terminal does not reach the workers; the autoscaler
//!   decides when they stop).
//! - Scaling down stops the newest workers with SIGTERM: they drain as
//!   `kumulus worker` does on shutdown (a running job finishes within its
//!   grace, or is queued again), and no longer count. They are stopped one
//!   at a time, the next once the last has exited: each leaves the
//!   workers' group when the group is stable, so the group never sees two
//!   members leave in one rebalance (a broker may never finish such a
//!   rebalance: tansu, RELIABILITY.md). Until its turn, a worker asked to
//!   stop runs on as before, and a scale-up takes it back before it starts
//!   a new one.
//! - A worker that dies no longer counts: the next decision replaces it.
//!   When workers keep dying soon after they start (a bad configuration, a
//!   broker they cannot reach), from the second such round on they are
//!   replaced after a growing pause instead ([`restart_hold`]: 1 s, 2 s,
//!   4 s, ... up to 5 min), as Kubernetes backs off a crash loop, so that a
//!   worker that cannot run is not restarted every period for ever. One
//!   early death alone (a worker killed) is replaced at once.
//! - When the autoscaler stops, its workers are stopped too (`on_stop =
//!   "stop"`, the default: a later autoscaler would not adopt them, count
//!   from zero and start as many again), or left running (`"leave"`).
//!
//! Nothing goes through a shell.

use async_trait::async_trait;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// A worker that exits within this long of its start has not really run:
/// its exit counts towards a crash loop.
pub const EARLY_EXIT: Duration = Duration::from_secs(30);
const LONGEST_HOLD: Duration = Duration::from_secs(300);

/// How long to hold further starts after `early_exits` rounds in a row in
/// which workers exited soon after they started: none after one round (a
/// worker killed is replaced at the next decision), then 1 s, doubling
/// each round, up to 5 min.
pub fn restart_hold(early_exits: u32) -> Duration {
    match early_exits {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(16)).min(LONGEST_HOLD),
    }
}

struct Worker {
    id: String,
    child: Child,
    since: Instant,
    /// The `apply` that started it (workers started together are a round).
    batch: u64,
}

#[derive(Default)]
struct Pool {
    /// Running, oldest first.
    running: Vec<Worker>,
    /// Stopped with SIGTERM, draining.
    draining: Vec<Worker>,
    /// To be stopped once no other one drains, the next first.
    to_stop: std::collections::VecDeque<Worker>,
    started: u64,
    /// Rounds in a row (batches started together) in which workers exited
    /// soon after their start, and the last such batch.
    early_exits: u32,
    last_early_batch: Option<u64>,
    batch: u64,
    /// No worker starts before this (a crash loop's pause).
    hold_until: Option<Instant>,
}

impl Pool {
    /// Drops the workers that exited, logging the ones that were not asked
    /// to, and holds further starts when they exit as soon as they start.
    fn reap(&mut self) {
        let now = Instant::now();
        let mut exited = Vec::new();
        self.running.retain_mut(|w| match w.child.try_wait() {
            Ok(Some(status)) => {
                exited.push((w.id.clone(), status, now.duration_since(w.since), w.batch));
                false
            }
            _ => true,
        });
        for (_, _, lived, batch) in &exited {
            if *lived >= EARLY_EXIT {
                self.early_exits = 0;
                self.last_early_batch = None;
            } else if self.last_early_batch != Some(*batch) {
                // One more round of the loop, however many die in it.
                self.early_exits += 1;
                self.last_early_batch = Some(*batch);
                self.hold_until = Some(now + restart_hold(self.early_exits));
            }
        }
        for (id, status, lived, _) in exited {
            if lived < EARLY_EXIT {
                tracing::warn!(
                    worker = %id, %status, lived_secs = lived.as_secs_f64(),
                    rounds_in_a_row = self.early_exits,
                    hold_secs = restart_hold(self.early_exits).as_secs(),
                    "a worker exited soon after it started (see its log); new starts wait"
                );
            } else {
                tracing::warn!(worker = %id, %status, "a worker exited; it is replaced at the next decision");
            }
        }
        self.draining.retain_mut(|w| match w.child.try_wait() {
            Ok(Some(status)) => {
                tracing::info!(worker = %w.id, %status, "a stopped worker has drained");
                false
            }
            _ => true,
        });
        self.to_stop
            .retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_))));
        if self.draining.is_empty() {
            if let Some(w) = self.to_stop.pop_front() {
                tracing::info!(worker = %w.id, "stopping a worker (it drains)");
                terminate(&w);
                self.draining.push(w);
            }
        }
    }
}

pub struct ProcessDriver {
    settings: ProcessSettings,
    pool: Arc<Mutex<Pool>>,
}

impl ProcessDriver {
    pub fn new(settings: ProcessSettings) -> std::io::Result<Self> {
        std::fs::create_dir_all(&settings.log_dir)?;
        Ok(Self {
            settings,
            pool: Arc::default(),
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
        pool.running.push(Worker {
            id,
            child,
            since: Instant::now(),
            batch: pool.batch,
        });
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
        lock(&self.pool)
    }

    /// Stops the workers waiting their turn, one after the other, in the
    /// background ([`Pool::reap`] starts the next one's stop).
    fn stop_in_turn(&self) {
        let pool = Arc::downgrade(&self.pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut pool = lock(&pool);
                pool.reap();
                if pool.to_stop.is_empty() {
                    return;
                }
            }
        });
    }
}

fn lock(pool: &Mutex<Pool>) -> std::sync::MutexGuard<'_, Pool> {
    pool.lock().unwrap_or_else(|p| p.into_inner())
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
        for w in pool
            .running
            .iter()
            .chain(&pool.draining)
            .chain(&pool.to_stop)
        {
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
        // A worker asked to stop that has not been stopped yet runs on,
        // rather than a new one start.
        while (pool.running.len() as u32) < desired {
            let Some(w) = pool.to_stop.pop_back() else {
                break;
            };
            tracing::info!(worker = %w.id, "a worker asked to stop runs on (its turn had not come)");
            pool.running.push(w);
        }
        if (pool.running.len() as u32) < desired {
            if let Some(until) = pool.hold_until.filter(|t| *t > Instant::now()) {
                tracing::info!(
                    wait_secs = until.duration_since(Instant::now()).as_secs_f64(),
                    "workers keep exiting as they start; holding new starts"
                );
                return Ok(());
            }
        }
        if (pool.running.len() as u32) < desired {
            pool.batch += 1;
        }
        while (pool.running.len() as u32) < desired {
            self.start(&mut pool)?;
        }
        // A worker that has lived past the early-exit window ends the loop.
        if pool.running.iter().any(|w| w.since.elapsed() >= EARLY_EXIT) {
            pool.early_exits = 0;
            pool.last_early_batch = None;
        }
        let mut stopping = false;
        while (pool.running.len() as u32) > desired {
            let Some(w) = pool.running.pop() else { break };
            pool.to_stop.push_back(w);
            stopping = true;
        }
        if stopping {
            pool.reap();
            drop(pool);
            self.stop_in_turn();
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
            all.extend(std::mem::take(&mut pool.to_stop));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loop_is_held_longer_each_time_up_to_five_minutes() {
        for (exits, secs) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 4),
            (7, 32),
            (10, 256),
            (11, 300),
            (40, 300),
        ] {
            assert_eq!(
                restart_hold(exits),
                Duration::from_secs(secs),
                "{exits} exits"
            );
        }
    }

    /// Waits until every worker started has exited (`false` exits at once).
    async fn all_exited(driver: &ProcessDriver) {
        for _ in 0..100 {
            if driver.current().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the workers did not exit");
    }

    #[tokio::test]
    async fn workers_that_keep_exiting_as_they_start_are_restarted_after_a_pause() {
        let logs = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(ProcessSettings {
            program: "false".into(),
            args: vec![],
            env: vec![],
            log_dir: logs.path().into(),
            id_prefix: "crash".into(),
            on_stop: OnStop::Stop,
            drain: Duration::from_secs(1),
        })
        .unwrap();
        driver.apply(3).await.unwrap();
        assert_eq!(driver.lock().started, 3);
        all_exited(&driver).await;
        // One round of early deaths is replaced at once (a worker killed).
        driver.apply(3).await.unwrap();
        assert_eq!(driver.lock().started, 6, "one round is replaced at once");
        all_exited(&driver).await;
        // A second round: a crash loop. Asking again starts nobody.
        driver.apply(3).await.unwrap();
        assert_eq!(driver.lock().started, 6, "restarted during the hold");
        // After the hold (1 s) they start again, and a third round of
        // exits holds longer (2 s).
        tokio::time::sleep(restart_hold(2) + Duration::from_millis(100)).await;
        driver.apply(3).await.unwrap();
        assert_eq!(driver.lock().started, 9);
        all_exited(&driver).await;
        assert_eq!(driver.lock().early_exits, 3);
        tokio::time::sleep(restart_hold(2) + Duration::from_millis(100)).await;
        driver.apply(3).await.unwrap();
        assert_eq!(driver.lock().started, 9, "the next hold is longer");
    }

    /// A driver of workers that take half a second to drain, and write to
    /// `<logs>/journal` when they are told to stop ("w-N term") and when
    /// they are done ("w-N exit"), with three of them started (a test
    /// fixture: the product never runs a shell).
    async fn three_draining_workers(logs: &std::path::Path) -> (ProcessDriver, PathBuf) {
        let journal = logs.join("journal");
        let script = format!(
            "trap 'echo \"$KUMULUS_WORKER__ID term\" >> {j}; sleep 0.5; \
             echo \"$KUMULUS_WORKER__ID exit\" >> {j}; exit 0' TERM; \
             while :; do sleep 0.05; done",
            j = journal.display()
        );
        let driver = ProcessDriver::new(ProcessSettings {
            program: "sh".into(),
            args: vec!["-c".into(), script],
            env: vec![],
            log_dir: logs.into(),
            id_prefix: "w".into(),
            on_stop: OnStop::Stop,
            drain: Duration::from_secs(5),
        })
        .unwrap();
        driver.apply(3).await.unwrap();
        // Let the shells set their traps.
        tokio::time::sleep(Duration::from_millis(300)).await;
        (driver, journal)
    }

    #[tokio::test]
    async fn workers_scaled_down_together_are_stopped_one_after_the_other() {
        let logs = tempfile::tempdir().unwrap();
        let (driver, journal) = three_draining_workers(logs.path()).await;
        driver.apply(1).await.unwrap();
        // The two stopping no longer count, at once.
        assert_eq!(driver.current().await.unwrap(), 1);
        assert_eq!(driver.running(), ["w-1"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&journal).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= 4 {
                break lines;
            }
            assert!(
                Instant::now() < deadline,
                "the workers did not stop: {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The newest first, and the next only once it has exited.
        assert_eq!(lines, ["w-3 term", "w-3 exit", "w-2 term", "w-2 exit"]);
        driver.close().await;
    }

    #[tokio::test]
    async fn a_worker_whose_stop_has_not_come_yet_runs_on_when_scaled_up_again() {
        let logs = tempfile::tempdir().unwrap();
        let (driver, journal) = three_draining_workers(logs.path()).await;
        // w-3 drains; w-2 waits its turn, and is wanted again before it.
        driver.apply(1).await.unwrap();
        driver.apply(2).await.unwrap();
        assert_eq!(driver.running(), ["w-1", "w-2"]);
        assert_eq!(driver.lock().started, 3, "no new worker started");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        assert_eq!(text.lines().collect::<Vec<_>>(), ["w-3 term", "w-3 exit"]);
        assert_eq!(driver.running(), ["w-1", "w-2"]);
        driver.close().await;
    }
}
