//! Kafka partitions and lag against real brokers: partitions follow the
//! workers (never shrinking) on a broker that can add them (noida-db), and
//! a broker that cannot (tansu) is detected, not fatal.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cluster::{config, namespace, Private, Servers};
use std::time::Duration;

use kumulus_autoscaler::policy::{partitions_for, PolicyConfig};
use kumulus_core::job::{JobId, QueuedJob};
use kumulus_core::ports::{JobQueue, JobSource};
use kumulus_kafka::admin::{ensure_topics, grow_partitions, partition_count, queue_state, Grow};

#[tokio::test]
async fn partitions_follow_workers_times_factor() {
    let servers = Servers::load();
    let broker = Private::start(&servers, "kafka", &[("KUMULUS_KAFKA_SERVER", "noida")]);
    let mut cfg = config(&servers, &namespace()).kafka;
    cfg.brokers = broker.addr();
    cfg.jobs_partitions = 1;
    ensure_topics(&cfg).await.unwrap();
    let policy = PolicyConfig {
        partition_factor: 2,
        max_workers: 1,
        ..PolicyConfig::default()
    };
    let mut current = partition_count(&cfg, &cfg.jobs_topic).unwrap();
    assert_eq!(current, 1);
    for (workers, want) in [(1, 2), (3, 6), (2, 6), (5, 10)] {
        let target = partitions_for(&policy, workers, current);
        assert_eq!(target, want, "{workers} workers");
        match grow_partitions(&cfg, target).await.unwrap() {
            Grow::Grown { to, .. } => assert_eq!(to, want),
            Grow::AlreadyEnough(n) => assert_eq!(n, want),
            Grow::Unsupported(e) => panic!("noida-db supports CreatePartitions: {e}"),
        }
        current = partition_count(&cfg, &cfg.jobs_topic).unwrap();
        assert_eq!(current, want, "{workers} workers");
    }
}

#[tokio::test]
async fn a_broker_without_create_partitions_is_detected() {
    let servers = Servers::load();
    if servers.get("KAFKA_SERVER") != "tansu" {
        // The shared broker is the one without CreatePartitions only with tansu.
        return;
    }
    let mut cfg = config(&servers, &namespace()).kafka;
    cfg.jobs_partitions = 2;
    ensure_topics(&cfg).await.unwrap();
    match grow_partitions(&cfg, 8).await {
        // Told apart from a failure: the autoscaler then caps the workers at
        // the partition count instead of retrying every period.
        Ok(Grow::Unsupported(_)) => {}
        other => panic!("tansu cannot add partitions, yet: {other:?}"),
    }
    assert_eq!(
        partition_count(&cfg, &cfg.jobs_topic).unwrap(),
        2,
        "nothing changed"
    );
}

#[tokio::test]
async fn lag_is_high_watermark_minus_the_workers_commits() {
    let servers = Servers::load();
    let cfg = config(&servers, &namespace()).kafka;
    ensure_topics(&cfg).await.unwrap();
    let producer = kumulus_kafka::producer::KafkaProducer::new(&cfg).unwrap();
    for _ in 0..3 {
        producer.enqueue(&queued(None)).await.unwrap();
    }
    let c = cfg.clone();
    let state = tokio::task::spawn_blocking(move || queue_state(&c))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.partitions, cfg.jobs_partitions as u32);
    assert_eq!(state.lag.iter().sum::<u64>(), 3, "{state:?}");
    // A worker takes and finishes all three: the lag drops to zero.
    let source = kumulus_kafka::source::KafkaJobSource::new(&cfg).unwrap();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(60), source.next())
            .await
            .unwrap()
            .unwrap();
        source.ack(&d).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = cfg.clone();
        let state = tokio::task::spawn_blocking(move || queue_state(&c))
            .await
            .unwrap()
            .unwrap();
        if state.lag.iter().sum::<u64>() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag never reached 0: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    source.close().await;
}

fn queued(partition: Option<i32>) -> QueuedJob {
    QueuedJob {
        id: JobId::new(),
        owner: "ana".into(),
        url: "/srv/x".into(),
        args: vec![],
        config: None,
        timeout_secs: 5,
        limits: Default::default(),
        submitted_at: chrono::Utc::now(),
        attempt: 1,
        not_before: None,
        partition,
    }
}

/// `kafka.placement = "least-backlog"`: the frontend's producer places new
/// jobs on the partitions with the fewest jobs waiting, from the lag it
/// samples off the real broker plus what it placed since, where a hash
/// would put some behind the backlog.
#[tokio::test]
async fn least_backlog_placement_fills_the_emptiest_partitions() {
    let servers = Servers::load();
    let mut cfg = config(&servers, &namespace()).kafka;
    cfg.jobs_partitions = 4;
    cfg.placement = "least-backlog".into();
    ensure_topics(&cfg).await.unwrap();
    let producer = kumulus_kafka::producer::KafkaProducer::new(&cfg).unwrap();
    // Six jobs already wait on partition 0 (nobody consumes the topic).
    for _ in 0..6 {
        producer.enqueue(&queued(Some(0))).await.unwrap();
    }
    // The watch samples at once, then every 20 s: the nine below are
    // placed from that first sample (which holds the six) and their own count.
    let shutdown = tokio_util::sync::CancellationToken::new();
    producer.watch_partitions(
        Duration::from_secs(20),
        Duration::from_secs(600),
        shutdown.clone(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while producer.sampled_at().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the topic was never sampled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nine new jobs: none behind the six, three on each other partition.
    let mut placed = Vec::new();
    for _ in 0..9 {
        let mut job = queued(None);
        producer.place(&mut job).await;
        placed.push(job.partition);
        producer.enqueue(&job).await.unwrap();
    }
    shutdown.cancel();
    let mut count = [0; 4];
    for p in &placed {
        count[p.expect("placed") as usize] += 1;
    }
    assert_eq!(count, [0, 3, 3, 3], "{placed:?}");
    let c = cfg.clone();
    let state = tokio::task::spawn_blocking(move || queue_state(&c))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.lag, vec![6, 3, 3, 3], "{state:?}");
}
