//! Topic management.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;

use kumulus_core::config::KafkaConfig;
use kumulus_core::ports::PortResult;

use crate::{client_config, unavailable};

pub fn admin_client(cfg: &KafkaConfig) -> PortResult<AdminClient<DefaultClientContext>> {
    client_config(cfg).create().map_err(unavailable)
}

/// Creates the topics that are missing: `jobs_topic` with
/// `cfg.jobs_partitions` partitions, the others with one (cancellations and
/// status events keep their order; they are small).
pub async fn ensure_topics(cfg: &KafkaConfig) -> PortResult<()> {
    let admin = admin_client(cfg)?;
    let topics = [
        NewTopic::new(
            &cfg.jobs_topic,
            cfg.jobs_partitions,
            TopicReplication::Fixed(1),
        ),
        NewTopic::new(&cfg.results_topic, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.cancel_topic, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.observer_topic, 1, TopicReplication::Fixed(1)),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(topics.iter(), &opts)
        .await
        .map_err(unavailable)?;
    for r in results {
        match r {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(unavailable(format!("cannot create topic {topic}: {code}")))
            }
        }
    }
    Ok(())
}
