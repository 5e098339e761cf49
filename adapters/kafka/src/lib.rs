//! Kafka adapters (rdkafka), the seed's topics:
//!
//! - [`producer::KafkaProducer`] - jobs to `jobs-queue` (idempotent, acks=all),
//!   status events to `results-queue`, cancellations to `ignore-jobs`,
//!   observations to `observer-queue`.
//! - [`source::KafkaJobSource`] - the workers' side of `jobs-queue`: a consumer
//!   group, manual commits after the final status, paused partitions while busy.
//! - [`tail`] - every replica reads a whole topic from its end (cancellations,
//!   status events for the autoscaler, observations).
//! - [`projector`] - the frontends project `results-queue` into the job store.
//! - [`admin`] - topics at start.

pub mod admin;
pub mod liveness;
pub mod observations;
pub mod producer;
pub mod projector;
pub mod source;
pub mod tail;

use kumulus_core::config::KafkaConfig;
use kumulus_core::ports::PortError;
use rdkafka::ClientConfig;

pub(crate) const BACKEND: &str = "kafka";

pub(crate) fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::unavailable(BACKEND, e)
}

/// The settings every client shares.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "kumulus")
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "2000")
        .set("log_level", "4");
    if !cfg.debug.is_empty() {
        c.set("debug", &cfg.debug).set("log_level", "7");
    }
    c
}
