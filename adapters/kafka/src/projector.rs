//! The frontends' projector: status events from `results-queue` into the
//! job store, in one consumer group (replicas share the partitions). An
//! event's offset is stored only after the store took it, so a store outage
//! delays the projection but loses nothing; replays are harmless because the
//! projection only moves jobs forward.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::config::KafkaConfig;
use kumulus_core::event::StatusEvent;
use kumulus_core::ports::{JobStore, PortResult};

use crate::{client_config, unavailable};

fn consumer(cfg: &KafkaConfig) -> PortResult<StreamConsumer> {
    let consumer: StreamConsumer = client_config(cfg)
        .set("group.id", &cfg.projector_group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .create()
        .map_err(unavailable)?;
    consumer
        .subscribe(&[&cfg.results_topic])
        .map_err(unavailable)?;
    Ok(consumer)
}

/// Projects status events into `store` until `shutdown`.
pub async fn run_projector(
    cfg: KafkaConfig,
    store: Arc<dyn JobStore>,
    shutdown: CancellationToken,
) {
    let consumer = loop {
        match consumer(&cfg) {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the projector; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "kafka error on the projector");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match msg.payload().map(serde_json::from_slice::<StatusEvent>) {
            Some(Ok(event)) => {
                let mut delay = Duration::from_millis(200);
                loop {
                    match store.apply(&event).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(job_id = %event.job_id, error = %e, "cannot project a status event; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(delay) => {}
                            }
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
            _ => tracing::warn!(
                offset = msg.offset(),
                "skipping a message that is not a status event"
            ),
        }
        if let Err(e) = consumer.store_offset_from_message(&msg) {
            tracing::warn!(error = %e, "cannot store the projector's offset");
        }
    }
    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
}
