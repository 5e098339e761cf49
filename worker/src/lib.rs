//! The Kumulus worker: takes jobs from the queue, runs each one
//! ([`runner::run_job`]), stores its files and publishes its status.
//!
//! - [`runner`] - one job, start to end (the step).
//! - [`slot`] - the loop around it: claim, events, uploads, shutdown.
//! - [`git`], [`process`]: cloning and running untrusted code.

pub mod cgroup;
pub mod git;
pub mod identity;
pub mod limits;
pub mod live;
pub mod process;
pub mod runner;
pub mod sandbox;
pub mod slot;

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::config::Config;
use kumulus_core::ports::{BlobStore, CancelBus, JobQueue, JobSource, LogBus, StatusBus};

use limits::{Enforcer, Limits};
pub use runner::RunSettings;
use slot::{Running, Shared};

/// The ports a worker talks through.
pub struct WorkerPorts {
    pub source: Arc<dyn JobSource>,
    /// Where new attempts of a job go (retries of infrastructure failures).
    pub queue: Arc<dyn JobQueue>,
    pub status: Arc<dyn StatusBus>,
    pub cancels: Arc<dyn CancelBus>,
    pub blobs: Arc<dyn BlobStore>,
    /// Where running jobs' output goes live.
    pub logs: Arc<dyn LogBus>,
}

/// The sandbox `worker.sandbox` asks for: `bwrap`, `none`, or `auto`
/// (bubblewrap where it works, with a warning where it does not).
fn choose_sandbox(
    cfg: &Config,
    work_dir: &std::path::Path,
    user: Option<identity::JobUser>,
) -> std::io::Result<sandbox::Sandbox> {
    let mut wanted: Vec<std::path::PathBuf> =
        vec![work_dir.to_path_buf(), "/root".into(), "/home".into()];
    if let Ok(data) = std::fs::canonicalize(&cfg.data_dir) {
        wanted.insert(0, data);
    }
    // The configuration file, wherever it is (it may hold credentials).
    if let Some(file) = &cfg.file {
        wanted.push(file.clone());
    }
    // What the job's user cannot reach is hidden at its first barrier:
    // bubblewrap, running as that user, could not reach the path itself.
    let mut hide: Vec<std::path::PathBuf> = Vec::new();
    for path in wanted {
        let path = match user {
            Some(u) => u.first_barrier(&path).unwrap_or(path),
            None => path,
        };
        if !hide.iter().any(|dir| path.starts_with(dir)) {
            hide.retain(|dir| !dir.starts_with(&path));
            hide.push(path);
        }
    }
    let bwrap = sandbox::Sandbox::Bwrap {
        hide,
        network: cfg.worker.network,
    };
    match cfg.worker.sandbox.as_str() {
        "none" => {
            tracing::warn!("worker.sandbox = none: jobs run unconfined (as worker.job_uid when the worker is root)");
            Ok(sandbox::Sandbox::None)
        }
        "bwrap" if sandbox::bwrap_works(user) => Ok(bwrap),
        "bwrap" => Err(std::io::Error::other(
            "worker.sandbox = bwrap, but bubblewrap does not work here (install the bubblewrap package; a root worker also needs unprivileged user namespaces for worker.job_uid)",
        )),
        _ if sandbox::bwrap_works(user) => Ok(bwrap),
        _ => {
            tracing::warn!("bubblewrap is not usable here: jobs run unconfined (as worker.job_uid when the worker is root; install bubblewrap)");
            Ok(sandbox::Sandbox::None)
        }
    }
}

/// The parent of the jobs' work folders: `worker.work_dir`, or
/// `<data_dir>/work`; where the jobs' user cannot reach that default, a
/// folder of this data folder's own under the system's temporary folder.
fn work_root(cfg: &Config, user: Option<identity::JobUser>) -> std::io::Result<std::path::PathBuf> {
    let reachable = |dir: &std::path::Path| user.is_none_or(|u| u.reaches(&dir.join("job")));
    let dir = cfg.work_dir();
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    if reachable(&dir) {
        return Ok(dir);
    }
    if cfg.worker.work_dir.is_some() {
        return Err(std::io::Error::other(format!(
            "worker.work_dir: jobs run as uid {} and cannot reach {}; choose a folder they can search, or open its parents' permissions",
            cfg.worker.job_uid,
            dir.display()
        )));
    }
    use sha2::Digest;
    let key = hex::encode(sha2::Sha256::digest(
        std::fs::canonicalize(&cfg.data_dir)
            .unwrap_or_else(|_| cfg.data_dir.clone())
            .as_os_str()
            .as_encoded_bytes(),
    ));
    let fallback = std::env::temp_dir().join(format!("kumulus-work-{}", &key[..16]));
    std::fs::create_dir_all(&fallback)?;
    let fallback = std::fs::canonicalize(&fallback)?;
    if !reachable(&fallback) {
        return Err(std::io::Error::other(format!(
            "jobs run as uid {} and can reach neither {} nor {}; set worker.work_dir",
            cfg.worker.job_uid,
            dir.display(),
            fallback.display()
        )));
    }
    tracing::info!(work_dir = %fallback.display(), "jobs cannot reach the data folder: their work folders go here");
    Ok(fallback)
}

/// `worker.id`, or `<host>-<pid>`.
fn worker_id(cfg: &Config) -> String {
    if let Some(id) = cfg.worker.id.as_ref().filter(|s| !s.is_empty()) {
        return id.clone();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

pub struct Worker {
    shared: Arc<Shared>,
    cancels: Arc<dyn CancelBus>,
    target: Arc<tokio::sync::watch::Sender<usize>>,
}

/// Changes a running worker's number of slots.
#[derive(Clone)]
pub struct SlotControl(Arc<tokio::sync::watch::Sender<usize>>);

impl SlotControl {
    pub fn set(&self, slots: usize) {
        self.0.send_replace(slots);
    }

    pub fn get(&self) -> usize {
        *self.0.borrow()
    }
}

impl Worker {
    pub fn new(cfg: &Config, ports: WorkerPorts) -> std::io::Result<Self> {
        let job_user = identity::JobUser::for_worker(cfg.worker.job_uid, cfg.worker.job_gid);
        let work_dir = work_root(cfg, job_user)?;
        let sandbox = choose_sandbox(cfg, &work_dir, job_user)?;
        let settings = RunSettings {
            job_user,
            repos: cfg.repo_policy(),
            limits: Limits::from_config(cfg),
            enforcer: Enforcer::choose(&cfg.worker.limit_by).map_err(std::io::Error::other)?,
            clone: git::CloneLimits {
                timeout: Duration::from_secs(cfg.worker.clone_timeout_secs),
                max_bytes: cfg.worker.clone_limit_bytes,
            },
            git_cache: if cfg.worker.git_cache {
                Some(Arc::new(git::GitCache::new(
                    cfg.cache_dir().join("git"),
                    cfg.worker.git_cache_limit_bytes,
                )?))
            } else {
                None
            },
            npm_cache: cfg
                .worker
                .npm_cache
                .then(|| work_dir.join(runner::NPM_CACHES)),
            sandbox,
            fast_start: cfg.worker.fast_start,
            live_logs: (cfg.worker.live_logs_rate_bytes > 0).then(|| live::LiveLogs {
                bus: ports.logs.clone(),
                rate: cfg.worker.live_logs_rate_bytes,
            }),
            work_dir,
        };
        runner::clean_interrupted(&settings);
        Ok(Self {
            shared: Arc::new(Shared {
                source: ports.source,
                status: ports.status,
                blobs: ports.blobs,
                queue: ports.queue,
                leases: slot::LeaseSettings {
                    heartbeat: Duration::from_secs(cfg.worker.heartbeat_secs),
                    lease: cfg.lease(),
                    max_attempts: cfg.worker.max_attempts,
                },
                settings,
                shutdown_grace: Duration::from_secs(cfg.worker.shutdown_grace_secs),
                running: Running::default(),
                id: worker_id(cfg),
            }),
            cancels: ports.cancels,
            target: Arc::new(tokio::sync::watch::channel(cfg.worker.slots).0),
        })
    }

    /// A handle to change the number of slots while the worker runs (the
    /// `local` platform driver of `kumulus up`).
    pub fn slots(&self) -> SlotControl {
        SlotControl(self.target.clone())
    }

    /// Runs the worker's slots until `shutdown`; returns when every slot has
    /// finished or handed back its job.
    pub async fn run(self, shutdown: CancellationToken) {
        // Subscribe before taking jobs, so no cancellation slips in between.
        let mut cancels = self.cancels.subscribe();
        // And to the status events: which attempts other workers run.
        let mut events = self.shared.status.subscribe();
        let shared = self.shared.clone();
        let stop_listening = CancellationToken::new();
        let listening = stop_listening.clone();
        let listener = tokio::spawn(async move {
            let mut events_open = true;
            loop {
                tokio::select! {
                    _ = listening.cancelled() => return,
                    req = cancels.next() => match req {
                        Some(req) => shared.running.cancel(&req),
                        None => return,
                    },
                    ev = events.next(), if events_open => match ev {
                        Some(ev) => shared.running.observe(&ev, &shared.id),
                        None => events_open = false,
                    },
                }
            }
        });
        let mut target = self.target.subscribe();
        let mut slots: Vec<(tokio::task::JoinHandle<()>, CancellationToken)> = Vec::new();
        let mut retired: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        tracing::info!(slots = *target.borrow(), "worker started");
        loop {
            let want = *target.borrow_and_update();
            while slots.len() < want {
                let retire = CancellationToken::new();
                let handle = tokio::spawn(slot::slot_loop(
                    self.shared.clone(),
                    shutdown.clone(),
                    retire.clone(),
                ));
                slots.push((handle, retire));
            }
            while slots.len() > want {
                if let Some((handle, retire)) = slots.pop() {
                    retire.cancel();
                    retired.push(handle);
                }
            }
            retired.retain(|h| !h.is_finished());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = target.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tracing::info!(slots = *target.borrow(), "worker slots changed");
                }
            }
        }
        for (s, _) in slots {
            let _ = s.await;
        }
        for s in retired {
            let _ = s.await;
        }
        stop_listening.cancel();
        let _ = listener.await;
        self.shared.source.close().await;
        tracing::info!("worker stopped");
    }
}
