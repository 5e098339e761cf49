//! Configuration of the production backends: Kafka, MongoDB, S3 and the
//! OpenID provider. Secrets are [`Secret`]s: never printed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A configuration value that must never appear in logs or debug output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Jobs, from the frontend to the workers.
    pub jobs_topic: String,
    /// Status events, from the workers (and the frontend) to the projector and the autoscaler.
    pub results_topic: String,
    /// Cancellations, from the frontend to every worker.
    pub cancel_topic: String,
    /// The autoscaler's observations.
    pub observer_topic: String,
    /// Running jobs' live logs, from the workers to every frontend.
    pub logs_topic: String,
    /// The autoscaler's decisions, for the web UI's autoscaler page.
    pub decisions_topic: String,
    /// The workers' consumer group.
    pub worker_group: String,
    /// The frontends' group for projecting status events into MongoDB.
    pub projector_group: String,
    /// The autoscaler's group for reading status events.
    pub autoscaler_group: String,
    /// Partitions of the jobs topic when it is created.
    pub jobs_partitions: i32,
    /// A consumer that stops heartbeating for this long leaves its group.
    pub session_timeout_ms: u32,
    /// How long the frontend waits for the broker to take a job before answering 503.
    pub message_timeout_ms: u32,
    /// How the frontend picks a new job's partition: `hash` (of the job's
    /// id) or `least-backlog` (the partition whose worker has the fewest
    /// jobs waiting, from the topic's lag sampled every heartbeat period
    /// and the jobs placed since; by a hash while no sample is fresh).
    pub placement: String,
    /// librdkafka debug contexts to log (for example `cgrp,fetch`), for
    /// troubleshooting a broker; empty for none.
    pub debug: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            jobs_topic: "jobs-queue".into(),
            results_topic: "results-queue".into(),
            cancel_topic: "ignore-jobs".into(),
            observer_topic: "observer-queue".into(),
            logs_topic: "job-logs".into(),
            decisions_topic: "autoscaler-decisions".into(),
            worker_group: "worker-group".into(),
            projector_group: "frontend-projector".into(),
            autoscaler_group: "autoscaler".into(),
            jobs_partitions: 2,
            session_timeout_ms: 10_000,
            message_timeout_ms: 5_000,
            placement: "hash".into(),
            debug: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// A MongoDB connection string (it may hold credentials).
    pub uri: Secret,
    pub database: String,
    /// How long to wait for the server before a request fails with 503.
    pub timeout_ms: u64,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: Secret::new("mongodb://127.0.0.1:27017"),
            database: "kumulus".into(),
            timeout_ms: 3_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Custom endpoint (MinIO); empty for AWS.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: Secret,
    pub secret_key: Secret,
    /// Path-style addressing (MinIO and most S3 servers other than AWS).
    pub path_style: bool,
    /// When above 0, downloads redirect to a presigned URL valid this long
    /// instead of streaming through the frontend.
    pub presign_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            bucket: "kumulus".into(),
            access_key: Secret::default(),
            secret_key: Secret::default(),
            path_style: true,
            presign_secs: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The realm's issuer, e.g. `https://keycloak.example.com/realms/kumulus`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// The claim that names the user.
    pub username_claim: String,
    /// Time limit of a request to the provider.
    pub timeout_ms: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8081/realms/kumulus".into(),
            client_id: "kumulus".into(),
            client_secret: Secret::default(),
            audience: "kumulus".into(),
            username_claim: "preferred_username".into(),
            timeout_ms: 5_000,
        }
    }
}
