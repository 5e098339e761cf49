//! The three production services, each its own process with production
//! backends: `kumulus frontend` (REST API + projector), `kumulus worker`,
//! `kumulus autoscaler`. Any number of each may run; they share nothing but
//! Kafka, MongoDB, S3 and the OpenID provider.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kumulus_autoscaler::driver::kumori::{Cli, Login};
use kumulus_autoscaler::driver::process::{OnStop, ProcessDriver, ProcessSettings};
use kumulus_autoscaler::driver::{CommandDriver, DryRun, KumoriDriver};
use kumulus_autoscaler::metrics::Metrics;
use kumulus_autoscaler::scaler::{serve_metrics, QueueProbe, QueueSnapshot, Scaler};
use kumulus_core::config::Config;
use kumulus_core::observation::{ObservationFeed, ObservationSink};
use kumulus_core::ports::ScalingPlatform;
use kumulus_core::ports::{
    Authenticator, BlobStore, CancelBus, JobQueue, JobSource, JobStore, PortResult, StatusBus,
    StoreThenQueue,
};
use kumulus_frontend::{AppState, FrontendPorts};
use kumulus_kafka::producer::KafkaProducer;
use kumulus_worker::{Worker, WorkerPorts};

use crate::up::UpError;

fn backend(e: impl std::fmt::Display) -> UpError {
    UpError::Backend(e.to_string())
}

/// Runs `setup` until it succeeds (a dependency may come up after us), in
/// the background, logging each failure.
fn keep_trying<F, Fut>(what: &'static str, shutdown: CancellationToken, setup: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = PortResult<()>> + Send,
{
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            match setup().await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "{what} failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    });
}

fn topics(cfg: &Config, shutdown: &CancellationToken) {
    let kafka = cfg.kafka.clone();
    keep_trying("creating the Kafka topics", shutdown.clone(), move || {
        let kafka = kafka.clone();
        async move { kumulus_kafka::admin::ensure_topics(&kafka).await }
    });
}

fn s3(cfg: &Config, shutdown: &CancellationToken) -> Arc<kumulus_s3::S3Blobs> {
    let blobs = Arc::new(kumulus_s3::S3Blobs::new(&cfg.s3));
    let b = blobs.clone();
    keep_trying("checking the S3 bucket", shutdown.clone(), move || {
        let b = b.clone();
        async move { b.ensure_bucket().await }
    });
    blobs
}

/// `kumulus frontend`: the REST API over MongoDB, Kafka, S3 and OpenID Connect,
/// and the projector of status events into MongoDB.
pub async fn frontend(cfg: Config, shutdown: CancellationToken) -> Result<(), UpError> {
    topics(&cfg, &shutdown);
    let store = Arc::new(
        kumulus_mongo::MongoStore::connect(&cfg.mongo)
            .await
            .map_err(backend)?,
    );
    let s = store.clone();
    keep_trying("making the MongoDB indexes", shutdown.clone(), move || {
        let s = s.clone();
        async move { s.ensure_indexes().await }
    });
    let producer = Arc::new(KafkaProducer::new(&cfg.kafka).map_err(backend)?);
    producer.watch_partitions(
        Duration::from_secs(cfg.worker.heartbeat_secs),
        cfg.unconsumed_after(),
        shutdown.clone(),
    );
    let auth = kumulus_oidc::OidcAuth::new(&cfg.oidc).map_err(backend)?;
    let observations = kumulus_kafka::observations::KafkaObservations::start(&cfg.kafka);
    let state = Arc::new(
        AppState::new(
            &cfg,
            FrontendPorts {
                store: store.clone() as Arc<dyn JobStore>,
                queue: producer.clone() as Arc<dyn JobQueue>,
                intake: Arc::new(StoreThenQueue {
                    store: store.clone() as Arc<dyn JobStore>,
                    queue: producer.clone() as Arc<dyn JobQueue>,
                }),
                status: producer.clone() as Arc<dyn StatusBus>,
                cancels: producer.clone() as Arc<dyn CancelBus>,
                blobs: s3(&cfg, &shutdown) as Arc<dyn BlobStore>,
                auth: Arc::new(auth) as Arc<dyn Authenticator>,
                observations: Arc::new(observations) as Arc<dyn ObservationFeed>,
                logs: producer.clone() as Arc<dyn kumulus_core::ports::LogBus>,
            },
        )
        .map_err(backend)?,
    );
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| UpError::Io {
            what: format!("cannot listen on {}", cfg.listen),
            source,
        })?;
    println!(
        "kumulus frontend is listening on http://{}",
        listener.local_addr().map_err(backend)?
    );
    let holder = format!("frontend-{}", uuid_like());
    let period = Duration::from_secs(cfg.worker.heartbeat_secs);
    let retention = cfg.retention.keep().map(|keep| {
        tokio::spawn(
            kumulus_frontend::retention::Retention {
                state: state.clone(),
                keep,
                period: Duration::from_secs(cfg.retention.sweep_secs),
                leader: store.clone() as Arc<dyn kumulus_core::ports::Leadership>,
                holder: holder.clone(),
                lead_ttl: period * 3,
            }
            .run(shutdown.clone()),
        )
    });
    let relay = tokio::spawn(kumulus_frontend::logs::relay(
        state.clone(),
        shutdown.clone(),
    ));
    let deliverer = tokio::spawn(
        kumulus_frontend::webhooks::Deliverer {
            state: state.clone(),
            leader: store.clone() as Arc<dyn kumulus_core::ports::Leadership>,
            holder: holder.clone(),
            lead_ttl: period * 3,
        }
        .run(shutdown.clone()),
    );
    let reaper = kumulus_frontend::reaper::Reaper {
        store: store.clone() as Arc<dyn JobStore>,
        queue: producer.clone() as Arc<dyn JobQueue>,
        status: producer.clone() as Arc<dyn StatusBus>,
        cancels: producer.clone() as Arc<dyn CancelBus>,
        leader: store.clone() as Arc<dyn kumulus_core::ports::Leadership>,
        holder,
        lease: cfg.lease(),
        unconsumed_after: cfg.unconsumed_after(),
        lost_after: cfg.lost_after(),
        period,
        max_attempts: cfg.worker.max_attempts,
        dead: Default::default(),
    };
    let reaper = tokio::spawn(reaper.run(shutdown.clone()));
    let projector = tokio::spawn(kumulus_kafka::projector::run_projector(
        cfg.kafka.clone(),
        store,
        shutdown.clone(),
    ));
    let served = kumulus_frontend::serve(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    let _ = projector.await;
    let _ = reaper.await;
    let _ = deliverer.await;
    let _ = relay.await;
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    served.map_err(backend)
}

/// `kumulus worker`: takes jobs from Kafka, stores files in S3, publishes
/// status events. It holds no MongoDB credentials.
pub async fn worker(mut cfg: Config, shutdown: CancellationToken) -> Result<(), UpError> {
    cfg.absolutize_paths().map_err(|source| UpError::Io {
        what: "cannot resolve the data folder".into(),
        source,
    })?;
    topics(&cfg, &shutdown);
    let producer = Arc::new(KafkaProducer::new(&cfg.kafka).map_err(backend)?);
    let source = kumulus_kafka::source::KafkaJobSource::new(&cfg.kafka).map_err(backend)?;
    let worker = Worker::new(
        &cfg,
        WorkerPorts {
            source: Arc::new(source) as Arc<dyn JobSource>,
            queue: producer.clone() as Arc<dyn JobQueue>,
            status: producer.clone() as Arc<dyn StatusBus>,
            cancels: producer.clone() as Arc<dyn CancelBus>,
            blobs: s3(&cfg, &shutdown) as Arc<dyn BlobStore>,
            logs: producer as Arc<dyn kumulus_core::ports::LogBus>,
        },
    )
    .map_err(|source| UpError::Io {
        what: "cannot make the work folder".into(),
        source,
    })?;
    println!("kumulus worker is running with {} slots", cfg.worker.slots);
    worker.run(shutdown).await;
    Ok(())
}

/// A name for this process among its replicas: host and pid.
fn uuid_like() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// The jobs topic, through Kafka's admin API, and a watch of which of its
/// partitions are consumed.
struct KafkaQueue {
    cfg: kumulus_core::config::KafkaConfig,
    watch: std::sync::Mutex<kumulus_kafka::liveness::PartitionWatch>,
    /// Work unconsumed this long on a partition marks it stuck.
    stuck_after: Duration,
}

#[async_trait::async_trait]
impl QueueProbe for KafkaQueue {
    async fn snapshot(&self) -> PortResult<QueueSnapshot> {
        let cfg = self.cfg.clone();
        let state = tokio::task::spawn_blocking(move || kumulus_kafka::admin::queue_state(&cfg))
            .await
            .map_err(|e| kumulus_core::ports::PortError::Internal(e.to_string()))??;
        let now = std::time::Instant::now();
        let stuck = match self.watch.lock() {
            Ok(mut w) => {
                w.observe(&state.committed, &state.lag, now);
                w.stuck(now, self.stuck_after)
            }
            Err(_) => Vec::new(),
        };
        Ok(QueueSnapshot {
            partitions: state.partitions,
            lag: state.lag,
            members: state.members,
            stuck,
        })
    }

    async fn grow_partitions(&self, total: u32) -> PortResult<bool> {
        use kumulus_kafka::admin::Grow;
        Ok(!matches!(
            kumulus_kafka::admin::grow_partitions(&self.cfg, total).await?,
            Grow::Unsupported(_)
        ))
    }
}

/// The `kumori` driver the configuration describes.
pub fn kumori_driver(cfg: &Config) -> KumoriDriver {
    let a = &cfg.autoscaler;
    KumoriDriver::new(
        // Checked when the configuration was loaded.
        Cli::parse(&a.kumori_cli).unwrap_or(Cli::Kam),
        a.kumori_program.clone(),
        a.kumori_manifest.clone(),
        a.kumori_deployment.clone(),
        a.kumori_role.clone(),
        a.kumori_wait.clone(),
        (!a.kumori_user.is_empty()).then(|| Login {
            user: a.kumori_user.clone(),
            password: a.kumori_password.clone(),
        }),
        Duration::from_secs(a.driver_timeout_secs),
        (a.min_workers, a.max_workers),
    )
}

/// The platform driver the configuration names.
pub fn driver(cfg: &Config) -> Arc<dyn ScalingPlatform> {
    let a = &cfg.autoscaler;
    let timeout = Duration::from_secs(a.driver_timeout_secs);
    match a.driver.as_str() {
        "kumori" => Arc::new(kumori_driver(cfg)),
        "command" => {
            let (program, args) = a
                .command
                .split_first()
                .map(|(p, r)| (p.clone(), r.to_vec()))
                .unwrap_or_default();
            Arc::new(CommandDriver::new(
                program.into(),
                args,
                timeout,
                a.min_workers.max(1),
            ))
        }
        "process" => match process_driver(cfg) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                tracing::error!(error = %e, "cannot use the process driver; only logging the decisions");
                Arc::new(DryRun::new(a.min_workers.max(1)))
            }
        },
        _ => Arc::new(DryRun::new(a.min_workers.max(1))),
    }
}

/// The `process` driver: `autoscaler.process_command`, or this executable's
/// `worker` with the autoscaler's own configuration file.
fn process_driver(cfg: &Config) -> std::io::Result<ProcessDriver> {
    let a = &cfg.autoscaler;
    let (program, args) = match a.process_command.split_first() {
        Some((p, rest)) => (PathBuf::from(p), rest.to_vec()),
        None => {
            let mut args = vec!["worker".to_string()];
            if let Some(file) = &cfg.file {
                args.push("--config".into());
                args.push(file.display().to_string());
            }
            (std::env::current_exe()?, args)
        }
    };
    let log_dir = if a.process_log_dir.as_os_str().is_empty() {
        cfg.data_dir.join("workers")
    } else {
        a.process_log_dir.clone()
    };
    let log_dir = std::path::absolute(log_dir)?;
    ProcessDriver::new(ProcessSettings {
        program,
        args,
        env: Vec::new(),
        log_dir,
        id_prefix: format!("worker-{}", std::process::id()),
        on_stop: a.process_on_stop.parse::<OnStop>().unwrap_or(OnStop::Stop),
        // The jobs' grace, then leaving the group once it is settled (at
        // most a session timeout), with room to spare.
        drain: Duration::from_secs(cfg.worker.shutdown_grace_secs + 20)
            + Duration::from_millis(cfg.kafka.session_timeout_ms.into()),
    })
}

/// `kumulus autoscaler`: observes the status events, publishes the seed's
/// observations, decides how many workers run, keeps the partitions ahead,
/// applies the decision through the configured driver, and serves its metrics.
pub async fn autoscaler(cfg: Config, shutdown: CancellationToken) -> Result<(), UpError> {
    topics(&cfg, &shutdown);
    let policy = kumulus_autoscaler::policy::from_config(&cfg)?;
    let producer = Arc::new(KafkaProducer::new(&cfg.kafka).map_err(backend)?);
    let metrics = Arc::new(Metrics::new().map_err(backend)?);
    let listener = TcpListener::bind(cfg.autoscaler.listen)
        .await
        .map_err(|source| UpError::Io {
            what: format!("cannot listen on {}", cfg.autoscaler.listen),
            source,
        })?;
    println!(
        "kumulus autoscaler is running; metrics on http://{}/metrics",
        listener.local_addr().map_err(backend)?
    );
    let server = tokio::spawn(serve_metrics(listener, metrics.clone(), shutdown.clone()));
    let platform = driver(&cfg);
    let scaler = Scaler {
        policy,
        platform: platform.clone(),
        queue: Arc::new(KafkaQueue {
            cfg: cfg.kafka.clone(),
            watch: Default::default(),
            stuck_after: cfg.unconsumed_after(),
        }),
        observations: producer.clone() as Arc<dyn ObservationSink>,
        metrics,
    };
    scaler
        .run(StatusBus::subscribe(producer.as_ref()), shutdown.clone())
        .await;
    shutdown.cancel();
    platform.close().await;
    let _ = server.await;
    Ok(())
}
