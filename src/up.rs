//! `kumulus up`: the frontend, a pool of worker slots and the autoscaler's
//! observer in one process, on embedded backends. Build, then run:
//! [`Standalone::build`] binds the port and opens the data folder,
//! [`Standalone::run_until_stopped`] serves until the token is cancelled.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kumulus_autoscaler::metrics::Metrics;
use kumulus_autoscaler::scaler::{QueueProbe, QueueSnapshot, Scaler};
use kumulus_core::config::{Config, ConfigError, DEFAULT_PASSWORD};
use kumulus_core::observation::{ObservationFeed, ObservationSink};
use kumulus_core::ports::SoleLeader;
use kumulus_core::ports::{
    Authenticator, BlobStore, CancelBus, JobQueue, JobSource, JobStore, StatusBus,
};
use kumulus_core::ports::{PortResult, ScalingPlatform};
use kumulus_embedded::blobs::LocalBlobs;
use kumulus_embedded::bus::{LocalCancelBus, LocalStatusBus, ObservationBoard};
use kumulus_embedded::sqlite::Sqlite;
use kumulus_embedded::users::{load_or_create_key, BuiltinUsers};
use kumulus_frontend::reaper::Reaper;
use kumulus_frontend::{AppState, FrontendPorts};
use kumulus_worker::{SlotControl, Worker, WorkerPorts};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Backend(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpError {
    let what = what.into();
    move |source| UpError::Io { what, source }
}

pub struct Standalone {
    cfg: Config,
    listener: TcpListener,
    frontend: Arc<AppState>,
    worker: Worker,
    status: Arc<LocalStatusBus>,
    board: Arc<ObservationBoard>,
    db: Sqlite,
    reaper: Reaper,
    example: Option<PathBuf>,
    /// Held for the life of the process: one `kumulus up` per data folder.
    _lock: File,
}

impl Standalone {
    pub async fn build(mut cfg: Config) -> Result<Self, UpError> {
        // Jobs' sandboxes bind folders by path: a relative one would be
        // read against the wrong folder there.
        cfg.absolutize_paths()
            .map_err(io("cannot resolve the data folder"))?;
        let data = &cfg.data_dir;
        std::fs::create_dir_all(data).map_err(io(format!("cannot make {}", data.display())))?;
        let lock = File::create(data.join("kumulus.lock"))
            .map_err(io(format!("cannot write in {}", data.display())))?;
        lock.try_lock().map_err(|_| {
            UpError::Backend(format!(
                "another kumulus is already using {}; stop it or choose another --data-dir",
                data.display()
            ))
        })?;

        let key = load_or_create_key(&data.join("token.key"))
            .map_err(io("cannot read or make the token signing key"))?;
        let users = BuiltinUsers::new(&cfg.auth.users, &key, cfg.auth.token_ttl_secs)
            .map_err(|m| ConfigError::new("auth.users", m))?;
        if !cfg.listen.ip().is_loopback() && users.any_has_password(DEFAULT_PASSWORD) {
            return Err(ConfigError::new(
                "listen",
                format!(
                    "refusing to listen on {} while a user has the default password; set auth.users first",
                    cfg.listen
                ),
            )
            .into());
        }

        let db =
            Sqlite::open(&data.join("kumulus.db")).map_err(|e| UpError::Backend(e.to_string()))?;
        let blobs: Arc<dyn BlobStore> = Arc::new(
            LocalBlobs::new(data.join("files")).map_err(io("cannot make the files folder"))?,
        );
        let store: Arc<dyn JobStore> = Arc::new(db.clone());
        let status = Arc::new(LocalStatusBus::new(store.clone()));
        let cancels: Arc<dyn CancelBus> = Arc::new(LocalCancelBus::new(db.clone()));
        let logs: Arc<dyn kumulus_core::ports::LogBus> =
            Arc::new(kumulus_embedded::bus::LocalLogBus::default());
        let board = Arc::new(ObservationBoard::default());

        let frontend = Arc::new(
            AppState::new(
                &cfg,
                FrontendPorts {
                    store,
                    queue: Arc::new(db.clone()) as Arc<dyn JobQueue>,
                    intake: Arc::new(db.clone()),
                    status: status.clone() as Arc<dyn StatusBus>,
                    cancels: cancels.clone(),
                    blobs: blobs.clone(),
                    auth: Arc::new(users) as Arc<dyn Authenticator>,
                    observations: board.clone() as Arc<dyn ObservationFeed>,
                    logs: logs.clone(),
                },
            )
            .map_err(|e| UpError::Backend(format!("metrics: {e}")))?,
        );
        let db_handle = db.clone();
        let reaper = Reaper {
            store: Arc::new(db.clone()) as Arc<dyn JobStore>,
            queue: Arc::new(db.clone()) as Arc<dyn JobQueue>,
            status: status.clone() as Arc<dyn StatusBus>,
            cancels: cancels.clone(),
            leader: Arc::new(SoleLeader),
            holder: "kumulus-up".into(),
            lease: cfg.lease(),
            unconsumed_after: cfg.unconsumed_after(),
            lost_after: cfg.lost_after(),
            period: Duration::from_secs(cfg.worker.heartbeat_secs),
            max_attempts: cfg.worker.max_attempts,
            dead: Default::default(),
        };
        // Making the worker kills what an earlier run left in its jobs'
        // cgroups and removes their folders; only then do their jobs go
        // back to the queue.
        let worker = Worker::new(
            &cfg,
            WorkerPorts {
                source: Arc::new(db.clone()) as Arc<dyn JobSource>,
                queue: Arc::new(db.clone()) as Arc<dyn JobQueue>,
                status: status.clone() as Arc<dyn StatusBus>,
                cancels,
                blobs,
                logs,
            },
        )
        .map_err(io("cannot make the work folder"))?;
        let recovered = db
            .recover_interrupted(cfg.worker.max_attempts)
            .await
            .map_err(|e| UpError::Backend(e.to_string()))?;
        if recovered > 0 {
            tracing::warn!(
                jobs = recovered,
                "jobs interrupted by the last stop were queued again"
            );
        }

        let example = match crate::example::prepare(data) {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, "could not prepare the example repository");
                None
            }
        };
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(io(format!("cannot listen on {}", cfg.listen)))?;
        Ok(Self {
            cfg,
            listener,
            frontend,
            worker,
            status,
            board,
            db: db_handle,
            reaper,
            example,
            _lock: lock,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Says where the API listens and how to run the example job.
    pub fn print_banner(&self) {
        let addr = match self.local_addr() {
            Ok(a) => a,
            Err(_) => self.cfg.listen,
        };
        println!("kumulus is listening on http://{addr}");
        println!("data folder: {}", self.cfg.data_dir.display());
        if let Some(example) = &self.example {
            let (user, password) = match self.cfg.auth.users.first() {
                // Only the well-known default is printed; real passwords never are.
                Some(u) if u.password == DEFAULT_PASSWORD => {
                    (u.username.as_str(), DEFAULT_PASSWORD)
                }
                Some(u) => (u.username.as_str(), "PASSWORD"),
                None => ("USER", "PASSWORD"),
            };
            println!("run the example job:");
            println!(
                "  TOKEN=$(curl -s -X POST http://{addr}/auth/token -H 'content-type: application/json' \\\n    -d '{{\"username\":\"{user}\",\"password\":\"{password}\"}}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')"
            );
            println!(
                "  curl -s -X POST http://{addr}/api/jobs -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\\n    -d '{{\"url\":\"{}\",\"args\":\"hello world\",\"config\":{{\"greeting\":\"hi\"}}}}'",
                example.display()
            );
            println!("  curl -s http://{addr}/api/jobs -H \"authorization: Bearer $TOKEN\"");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }

    /// Serves until `shutdown`; then stops taking jobs, lets running ones
    /// finish within the grace period (or hands them back to the queue),
    /// and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), UpError> {
        // Here a "worker" is one slot of the in-process pool.
        let policy = kumulus_autoscaler::policy::PolicyConfig {
            slots: 1,
            ..kumulus_autoscaler::policy::from_config(&self.cfg)?
        };
        let metrics = Arc::new(
            Metrics::new_in(self.frontend.metrics.registry.clone())
                .map_err(|e| UpError::Backend(format!("metrics: {e}")))?,
        );
        let slots = self.worker.slots();
        let scaler = Scaler {
            policy,
            platform: Arc::new(LocalSlots(slots)),
            queue: Arc::new(LocalQueue(self.db.clone())),
            observations: self.board.clone() as Arc<dyn ObservationSink>,
            metrics,
        };
        let autoscaler = tokio::spawn(scaler.run(self.status.subscribe(), shutdown.clone()));
        let reaper = tokio::spawn(self.reaper.run(shutdown.clone()));
        let relay = tokio::spawn(kumulus_frontend::logs::relay(
            self.frontend.clone(),
            shutdown.clone(),
        ));
        let deliverer = tokio::spawn(
            kumulus_frontend::webhooks::Deliverer {
                state: self.frontend.clone(),
                leader: Arc::new(SoleLeader),
                holder: "kumulus-up".into(),
                lead_ttl: Duration::from_secs(60),
            }
            .run(shutdown.clone()),
        );
        let retention = self.cfg.retention.keep().map(|keep| {
            tokio::spawn(
                kumulus_frontend::retention::Retention {
                    state: self.frontend.clone(),
                    keep,
                    period: Duration::from_secs(self.cfg.retention.sweep_secs),
                    leader: Arc::new(SoleLeader),
                    holder: "kumulus-up".into(),
                    lead_ttl: Duration::from_secs(60),
                }
                .run(shutdown.clone()),
            )
        });
        let worker = tokio::spawn(self.worker.run(shutdown.clone()));
        let served = kumulus_frontend::serve(self.listener, self.frontend, shutdown.clone()).await;
        shutdown.cancel();
        let _ = worker.await;
        let _ = autoscaler.await;
        let _ = reaper.await;
        let _ = deliverer.await;
        let _ = relay.await;
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        served.map_err(io("the API server failed"))
    }
}

/// The `local` platform: the worker pool's slots in this process.
struct LocalSlots(SlotControl);

#[async_trait::async_trait]
impl ScalingPlatform for LocalSlots {
    async fn current(&self) -> PortResult<u32> {
        Ok(self.0.get() as u32)
    }

    async fn apply(&self, desired: u32) -> PortResult<()> {
        tracing::info!(
            from = self.0.get(),
            to = desired,
            "changing the worker slots"
        );
        self.0.set(desired as usize);
        Ok(())
    }
}

/// The SQLite queue has no partitions: one queue, read by every slot.
struct LocalQueue(Sqlite);

#[async_trait::async_trait]
impl QueueProbe for LocalQueue {
    async fn snapshot(&self) -> PortResult<QueueSnapshot> {
        // The jobs not started yet, as a Kafka lag is (a Kafka worker
        // commits past a job at its start); running ones are counted from
        // the status events.
        let waiting = self.0.waiting().await?;
        Ok(QueueSnapshot {
            partitions: 0,
            lag: vec![waiting],
            members: None,
            stuck: Vec::new(),
        })
    }

    async fn grow_partitions(&self, _total: u32) -> PortResult<bool> {
        Ok(true)
    }
}
