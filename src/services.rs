//! The three production services, each its own process with production
//! backends: `kumulus frontend` (REST API + projector), `kumulus worker`,
//! `kumulus autoscaler`. Any number of each may run; they share nothing but
//! Kafka, MongoDB, S3 and the OpenID provider.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kumulus_core::config::Config;
use kumulus_core::observation::{ObservationFeed, ObservationSink};
use kumulus_core::ports::{
    Authenticator, BlobStore, CancelBus, JobQueue, JobSource, JobStore, PortResult, StatusBus,
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
    let auth = kumulus_oidc::OidcAuth::new(&cfg.oidc).map_err(backend)?;
    let observations = kumulus_kafka::observations::KafkaObservations::start(&cfg.kafka);
    let state = Arc::new(
        AppState::new(
            &cfg,
            FrontendPorts {
                store: store.clone() as Arc<dyn JobStore>,
                queue: producer.clone() as Arc<dyn JobQueue>,
                status: producer.clone() as Arc<dyn StatusBus>,
                cancels: producer as Arc<dyn CancelBus>,
                blobs: s3(&cfg, &shutdown) as Arc<dyn BlobStore>,
                auth: Arc::new(auth) as Arc<dyn Authenticator>,
                observations: Arc::new(observations) as Arc<dyn ObservationFeed>,
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
    let projector = tokio::spawn(kumulus_kafka::projector::run_projector(
        cfg.kafka.clone(),
        store,
        shutdown.clone(),
    ));
    let served = kumulus_frontend::serve(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    let _ = projector.await;
    served.map_err(backend)
}

/// `kumulus worker`: takes jobs from Kafka, stores files in S3, publishes
/// status events. It holds no MongoDB credentials.
pub async fn worker(cfg: Config, shutdown: CancellationToken) -> Result<(), UpError> {
    topics(&cfg, &shutdown);
    let producer = Arc::new(KafkaProducer::new(&cfg.kafka).map_err(backend)?);
    let source = kumulus_kafka::source::KafkaJobSource::new(&cfg.kafka).map_err(backend)?;
    let worker = Worker::new(
        &cfg,
        WorkerPorts {
            source: Arc::new(source) as Arc<dyn JobSource>,
            status: producer.clone() as Arc<dyn StatusBus>,
            cancels: producer as Arc<dyn CancelBus>,
            blobs: s3(&cfg, &shutdown) as Arc<dyn BlobStore>,
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

/// `kumulus autoscaler`: observes the status events and publishes an
/// observation every period.
pub async fn autoscaler(cfg: Config, shutdown: CancellationToken) -> Result<(), UpError> {
    topics(&cfg, &shutdown);
    let producer = Arc::new(KafkaProducer::new(&cfg.kafka).map_err(backend)?);
    println!("kumulus autoscaler is running");
    kumulus_autoscaler::observe::run_observer(
        StatusBus::subscribe(producer.as_ref()),
        producer.clone() as Arc<dyn ObservationSink>,
        Duration::from_secs(cfg.autoscaler.period_secs),
        shutdown,
    )
    .await;
    Ok(())
}
