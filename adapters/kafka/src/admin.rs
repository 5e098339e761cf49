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
        NewTopic::new(&cfg.logs_topic, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.decisions_topic, 1, TopicReplication::Fixed(1)),
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

/// What the broker says about the jobs topic and the workers' group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueState {
    pub partitions: u32,
    /// Per partition: high watermark minus the group's committed offset.
    pub lag: Vec<u64>,
    /// Per partition: the group's committed offset (the log start where
    /// it has none).
    pub committed: Vec<i64>,
    /// Members of the workers' group, where the broker tells.
    pub members: Option<u32>,
}

/// Outcome of asking for more partitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Grow {
    Grown {
        from: u32,
        to: u32,
    },
    AlreadyEnough(u32),
    /// The broker cannot add partitions (some Kafka-compatible brokers).
    Unsupported(String),
}

/// Partitions of `topic`.
pub fn partition_count(cfg: &KafkaConfig, topic: &str) -> PortResult<u32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client_config(cfg).create().map_err(unavailable)?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(unavailable)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len() as u32)
        .unwrap_or(0))
}

/// Where `topic` ends, read with `consumer`: each partition's high
/// watermark (the next offset to be written).
fn topic_end(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
) -> PortResult<Vec<(i32, i64)>> {
    use rdkafka::consumer::Consumer;
    let timeout = Duration::from_secs(5);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(unavailable)?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| (p, high))
                .map_err(unavailable)
        })
        .collect()
}

/// Grows the jobs topic to `total` partitions (never shrinks it).
pub async fn grow_partitions(cfg: &KafkaConfig, total: u32) -> PortResult<Grow> {
    let (c, topic) = (cfg.clone(), cfg.jobs_topic.clone());
    let current = tokio::task::spawn_blocking(move || partition_count(&c, &topic))
        .await
        .map_err(unavailable)??;
    if current >= total {
        return Ok(Grow::AlreadyEnough(current));
    }
    let admin = admin_client(cfg)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let req = rdkafka::admin::NewPartitions::new(&cfg.jobs_topic, total as usize);
    let results = match admin.create_partitions(&[req], &opts).await {
        Ok(results) => results,
        // librdkafka's own verdict, before asking: the broker did not
        // advertise CreatePartitions.
        Err(rdkafka::error::KafkaError::AdminOp(code)) if cannot_grow(code) => {
            return Ok(Grow::Unsupported(code.to_string()))
        }
        Err(e) => return Err(unavailable(e)),
    };
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(Grow::Grown {
            from: current,
            to: total,
        }),
        Some(Err((_, code))) => match code {
            RDKafkaErrorCode::InvalidPartitions => Ok(Grow::AlreadyEnough(current)),
            code if cannot_grow(code) => Ok(Grow::Unsupported(code.to_string())),
            other => Err(unavailable(format!("cannot add partitions: {other}"))),
        },
        None => Err(unavailable("no answer to CreatePartitions")),
    }
}

/// Answers that mean this broker will never add partitions for us.
fn cannot_grow(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::InvalidRequest
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
    )
}

/// Lag per partition of the jobs topic for the workers' group, and the
/// group's members.
pub fn queue_state(cfg: &KafkaConfig) -> PortResult<QueueState> {
    queue_state_on(&group_reader(cfg)?, cfg)
}

/// The queue's state, then when it was read and where the status events
/// (`results_topic`) ended just after: every start published before the
/// committed offsets were read lies before that end.
pub struct QueueSample {
    pub state: QueueState,
    pub at: std::time::Instant,
    pub seen: chrono::DateTime<chrono::Utc>,
    pub status_end: PortResult<Vec<(i32, i64)>>,
}

/// [`queue_state`] and the status feed's end, through one client.
pub fn queue_sample(cfg: &KafkaConfig) -> PortResult<QueueSample> {
    let consumer = group_reader(cfg)?;
    let state = queue_state_on(&consumer, cfg)?;
    let (at, seen) = (std::time::Instant::now(), chrono::Utc::now());
    let status_end = topic_end(&consumer, &cfg.results_topic);
    Ok(QueueSample {
        state,
        at,
        seen,
        status_end,
    })
}

/// A consumer with the workers' group id that never subscribes: it can
/// read the group's committed offsets without joining the group.
fn group_reader(cfg: &KafkaConfig) -> PortResult<rdkafka::consumer::BaseConsumer> {
    client_config(cfg)
        .set("group.id", &cfg.worker_group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(unavailable)
}

fn queue_state_on(
    consumer: &rdkafka::consumer::BaseConsumer,
    cfg: &KafkaConfig,
) -> PortResult<QueueState> {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(5);
    let partitions = {
        let md = consumer
            .fetch_metadata(Some(&cfg.jobs_topic), timeout)
            .map_err(unavailable)?;
        md.topics()
            .iter()
            .find(|t| t.name() == cfg.jobs_topic)
            .map(|t| t.partitions().len() as u32)
            .unwrap_or(0)
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(&cfg.jobs_topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(unavailable)?;
    let mut lag = Vec::with_capacity(partitions as usize);
    let mut committed_at = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(&cfg.jobs_topic, p, timeout)
            .map_err(unavailable)?;
        let from = match committed
            .find_partition(&cfg.jobs_topic, p)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        lag.push((high - from).max(0) as u64);
        committed_at.push(from);
    }
    let members = consumer
        .fetch_group_list(Some(&cfg.worker_group), timeout)
        .ok()
        .and_then(|list| {
            list.groups()
                .iter()
                .find(|g| g.name() == cfg.worker_group)
                .map(|g| g.members().len() as u32)
        })
        // Some brokers answer with no members at all: they cannot tell.
        .filter(|&n| n > 0);
    Ok(QueueState {
        partitions,
        lag,
        committed: committed_at,
        members,
    })
}
