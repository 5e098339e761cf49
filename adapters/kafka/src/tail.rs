//! Following a whole topic from every replica (not as a consumer group):
//! each reader gets every message from where it starts on.

use futures::stream::BoxStream;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::mpsc;

use kumulus_core::config::KafkaConfig;
use kumulus_core::ports::PortResult;

use crate::{client_config, unavailable};

/// Where a reader starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// New messages only.
    End,
    /// The last `n` messages of each partition, then new ones.
    Last(i64),
}

/// Follows `topic`, decoding each message as JSON (undecodable ones are
/// skipped with a warning). The reader stops when the stream is dropped; it
/// reconnects by itself after errors.
pub fn follow<T>(cfg: &KafkaConfig, topic: &str, start: Start) -> BoxStream<'static, T>
where
    T: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1024);
    let cfg = cfg.clone();
    let topic = topic.to_string();
    tokio::spawn(async move {
        loop {
            match read(&cfg, &topic, start, &tx).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "reading a topic failed; retrying");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}

pub(crate) fn consumer_for(
    cfg: &KafkaConfig,
    topic: &str,
    start: Start,
) -> PortResult<StreamConsumer> {
    let consumer: StreamConsumer = client_config(cfg)
        .set("group.id", format!("kumulus-tail-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(unavailable)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(unavailable)?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        return Err(unavailable(format!("topic {topic} has no partitions")));
    }
    let offset = match start {
        Start::End => Offset::End,
        Start::Last(n) => Offset::OffsetTail(n),
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, offset)
            .map_err(unavailable)?;
    }
    consumer.assign(&tpl).map_err(unavailable)?;
    Ok(consumer)
}

async fn read<T: DeserializeOwned + Send + 'static>(
    cfg: &KafkaConfig,
    topic: &str,
    start: Start,
    tx: &mpsc::Sender<T>,
) -> PortResult<()> {
    let (c, t) = (cfg.clone(), topic.to_string());
    let consumer = tokio::task::spawn_blocking(move || consumer_for(&c, &t, start))
        .await
        .map_err(unavailable)??;
    loop {
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    let Some(payload) = m.payload() else { continue };
                    match serde_json::from_slice::<T>(payload) {
                        Ok(v) => {
                            if tx.send(v).await.is_err() {
                                return Ok(());
                            }
                        }
                        Err(e) => tracing::warn!(topic, error = %e, "skipping a message that does not decode"),
                    }
                }
                Err(e) => {
                    tracing::debug!(topic, error = %e, "kafka error while following a topic");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
