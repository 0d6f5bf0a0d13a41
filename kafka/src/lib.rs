//! `prism-kafka`: the Prism pub/sub and streaming plugin backed by Apache Kafka
//! (or any Kafka-protocol broker).
//!
//! Everything process-level (flags, config, gRPC server, health, drain) lives in
//! `prism-plugin-core`; this crate only supplies the Kafka plugin.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod error;
mod identity;
mod plugin;
mod rebuilder;
mod service;
mod stream;
mod timeseries;
mod track;

pub use config::KafkaConfig;
pub use plugin::KafkaPlugin;
