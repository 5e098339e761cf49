//! The Kumulus worker: takes jobs from the queue, runs each one
//! ([`runner::run_job`]), stores its files and publishes its status.
//!
//! - [`runner`] - one job, start to end (the step).
//! - [`slot`] - the loop around it: claim, events, uploads, shutdown.
//! - [`git`], [`process`]: cloning and running untrusted code.

pub mod cgroup;
pub mod git;
pub mod limits;
pub mod process;
pub mod runner;
pub mod sandbox;
pub mod slot;

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::config::Config;
use kumulus_core::ports::{BlobStore, CancelBus, JobSource, StatusBus};

use limits::{Enforcer, Limits};
pub use runner::RunSettings;
use slot::{Running, Shared};

/// The ports a worker talks through.
pub struct WorkerPorts {
    pub source: Arc<dyn JobSource>,
    pub status: Arc<dyn StatusBus>,
    pub cancels: Arc<dyn CancelBus>,
    pub blobs: Arc<dyn BlobStore>,
}

/// The sandbox `worker.sandbox` asks for: `bwrap`, `none`, or `auto`
/// (bubblewrap where it works, with a warning where it does not).
fn choose_sandbox(cfg: &Config, work_dir: &std::path::Path) -> std::io::Result<sandbox::Sandbox> {
    let mut hide: Vec<std::path::PathBuf> =
        vec![work_dir.to_path_buf(), "/root".into(), "/home".into()];
    if let Ok(data) = std::fs::canonicalize(&cfg.data_dir) {
        hide.insert(0, data);
    }
    // The configuration file, wherever it is (it may hold credentials).
    if let Some(file) = &cfg.file {
        if !hide.iter().any(|dir| file.starts_with(dir)) {
            hide.push(file.clone());
        }
    }
    let bwrap = sandbox::Sandbox::Bwrap {
        hide,
        network: cfg.worker.network,
    };
    match cfg.worker.sandbox.as_str() {
        "none" => {
            tracing::warn!("worker.sandbox = none: jobs run unconfined as the worker's user");
            Ok(sandbox::Sandbox::None)
        }
        "bwrap" if sandbox::bwrap_works() => Ok(bwrap),
        "bwrap" => Err(std::io::Error::other(
            "worker.sandbox = bwrap, but bubblewrap does not work here (install the bubblewrap package)",
        )),
        _ if sandbox::bwrap_works() => Ok(bwrap),
        _ => {
            tracing::warn!("bubblewrap is not usable here: jobs run unconfined as the worker's user (install bubblewrap)");
            Ok(sandbox::Sandbox::None)
        }
    }
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
        let work_dir = cfg.work_dir();
        std::fs::create_dir_all(&work_dir)?;
        let work_dir = std::fs::canonicalize(&work_dir)?;
        let sandbox = choose_sandbox(cfg, &work_dir)?;
        let settings = RunSettings {
            work_dir,
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
            npm_cache: cfg.worker.npm_cache.then(|| cfg.cache_dir().join("npm")),
            sandbox,
            fast_start: cfg.worker.fast_start,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                source: ports.source,
                status: ports.status,
                blobs: ports.blobs,
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
        let shared = self.shared.clone();
        let stop_listening = CancellationToken::new();
        let listening = stop_listening.clone();
        let listener = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = listening.cancelled() => return,
                    req = cancels.next() => match req {
                        Some(req) => shared.running.cancel(&req),
                        None => return,
                    }
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
