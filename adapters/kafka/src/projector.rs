//! The frontends' projector: status events from `results-queue` into the
//! job store. Every frontend replica reads every partition (no consumer
//! group: a broker that never lets go of a dead member's partitions would
//! stall the projection of those), starting where the store says the
//! projection got to, and moves that position forward after the store took
//! the events. Replays and several replicas projecting the same event are
//! harmless: the projection only moves jobs forward. A store outage delays
//! the projection but loses nothing.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use kumulus_core::config::KafkaConfig;
use kumulus_core::event::StatusEvent;
use kumulus_core::ports::{JobStore, PortResult};

use crate::{client_config, unavailable};

/// The feed's name in the store's positions.
const FEED: &str = kumulus_core::ports::STATUS_FEED;

/// How often applied positions are saved.
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// A consumer assigned every partition of the results topic, each from
/// its saved position (the start where there is none).
async fn consumer(cfg: &KafkaConfig, store: &dyn JobStore) -> PortResult<StreamConsumer> {
    let saved: HashMap<i32, i64> = store.positions(FEED).await?.into_iter().collect();
    let c = cfg.clone();
    let consumer = tokio::task::spawn_blocking(move || -> PortResult<StreamConsumer> {
        let consumer: StreamConsumer = client_config(&c)
            .set("group.id", &c.projector_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(unavailable)?;
        let md = consumer
            .fetch_metadata(Some(&c.results_topic), Duration::from_secs(5))
            .map_err(unavailable)?;
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == c.results_topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            return Err(unavailable(format!(
                "topic {} has no partitions",
                c.results_topic
            )));
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            let from = saved
                .get(&p)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            tpl.add_partition_offset(&c.results_topic, p, from)
                .map_err(unavailable)?;
        }
        consumer.assign(&tpl).map_err(unavailable)?;
        Ok(consumer)
    })
    .await
    .map_err(unavailable)??;
    Ok(consumer)
}

/// Projects status events into `store` until `shutdown`.
pub async fn run_projector(
    cfg: KafkaConfig,
    store: Arc<dyn JobStore>,
    shutdown: CancellationToken,
) {
    let consumer = loop {
        match consumer(&cfg, store.as_ref()).await {
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
    project(&consumer, store.as_ref(), &shutdown).await;
}

async fn project(consumer: &StreamConsumer, store: &dyn JobStore, shutdown: &CancellationToken) {
    // Applied but not yet saved: the next offset per partition.
    let mut applied: HashMap<i32, i64> = HashMap::new();
    let mut saved_at = Instant::now();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SAVE_EVERY) => None,
            msg = consumer.recv() => Some(msg),
        };
        if let Some(msg) = msg {
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
                    while let Err(e) = store.apply(&event).await {
                        tracing::warn!(job_id = %event.job_id, error = %e, "cannot project a status event; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
                _ => tracing::warn!(
                    offset = msg.offset(),
                    "skipping a message that is not a status event"
                ),
            }
            applied.insert(msg.partition(), msg.offset() + 1);
        }
        if saved_at.elapsed() >= SAVE_EVERY && !applied.is_empty() {
            save(store, &mut applied).await;
            saved_at = Instant::now();
        }
    }
    save(store, &mut applied).await;
}

/// Saves the applied positions; what fails to save is kept for next time.
async fn save(store: &dyn JobStore, applied: &mut HashMap<i32, i64>) {
    let pending: Vec<(i32, i64)> = applied.iter().map(|(&p, &o)| (p, o)).collect();
    for (p, o) in pending {
        match store.advance(FEED, p, o).await {
            Ok(()) => {
                applied.remove(&p);
            }
            Err(e) => tracing::debug!(error = %e, "cannot save the projector's position"),
        }
    }
}
