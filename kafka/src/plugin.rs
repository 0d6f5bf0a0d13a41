//! The `Plugin` implementation: wires the Kafka backend and the data services
//! into core's lifecycle (initialize, health, drain, stop).

use std::sync::Arc;
use std::time::Duration;

use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_server::PubSubBasicInterfaceServer;
use prism_plugin_core::proto::pubsub::stream_interface_server::StreamInterfaceServer;
use prism_plugin_core::proto::{PUBSUB_BASIC_PROTO, PUBSUB_STREAM_PROTO};
use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, Plugin, ServiceRegistry,
    Slot,
};

use crate::backend::Backend;
use crate::config::KafkaConfig;
use crate::service::KafkaService;
use crate::stream::StreamSet;

/// How long `drain` waits for streams to store their offsets and leave their
/// groups (each needs a broker round trip or two).
const STREAM_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The Kafka plugin: the current backend in a [`Slot`] that `initialize`
/// replaces, and the running streams.
#[derive(Default)]
pub(crate) struct KafkaPlugin {
    backend: Arc<Slot<Backend>>,
    streams: Arc<StreamSet>,
}

#[prism_plugin_core::async_trait]
impl Plugin for KafkaPlugin {
    type Config = KafkaConfig;

    const NAME: &'static str = "kafka";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DEFAULT_PORT: u16 = 9091;
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[
        ("KAFKA_BROKERS", "backend.brokers"),
        ("KAFKA_TOPIC", "backend.topic"),
        ("KAFKA_CONSUMER_GROUP", "backend.consumer_group"),
        ("KAFKA_SASL_USERNAME", "backend.sasl.username"),
        ("KAFKA_SASL_PASSWORD", "backend.sasl.password"),
    ];

    fn default_config() -> KafkaConfig {
        KafkaConfig::default()
    }

    fn validate(config: &KafkaConfig) -> Vec<String> {
        config.validate()
    }

    fn interfaces(&self) -> Vec<Interface> {
        vec![
            Interface {
                name: "PubSubBasicInterface",
                proto: PUBSUB_BASIC_PROTO,
                version: "1.0.0",
            },
            Interface {
                name: "StreamInterface",
                proto: PUBSUB_STREAM_PROTO,
                version: "1.0.0",
            },
        ]
    }

    fn register(&self, services: &mut ServiceRegistry) {
        let service = KafkaService::new(self.backend.clone(), self.streams.clone());
        let limit = services.max_message_bytes();
        services.add(
            PubSubBasicInterfaceServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
        services.add(
            StreamInterfaceServer::new(service)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
    }

    async fn initialize(&self, config: KafkaConfig, ctx: &Context) -> Result<(), CoreError> {
        if config.security_protocol.uses_sasl() && config.sasl.username.is_empty() {
            return Err(CoreError::config(format!(
                "`backend.sasl.username`: required with security_protocol {} \
                 (or take it from Vault: a `vault.secret` of engine kv2)",
                config.security_protocol.as_str()
            )));
        }
        let backend = Backend::connect(&config).await?;
        self.streams.attach(&ctx.shutdown);
        // The old producer (if any) is closed on a blocking thread once the
        // last in-flight user releases it (see `Backend`'s `Drop`). Running
        // streams keep their own consumers.
        drop(self.backend.replace(Arc::new(backend)));
        Ok(())
    }

    async fn health(&self) -> HealthReport {
        let backend = match self.backend.get() {
            Ok(backend) => backend,
            Err(err) => return HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        };
        let report = match backend.health().await {
            Ok(info) => {
                let (status, message) = if info.latency > backend.degraded_latency() {
                    (
                        HealthStatus::Degraded,
                        format!(
                            "kafka metadata took {} ms (over {} ms)",
                            info.latency.as_millis(),
                            backend.degraded_latency().as_millis()
                        ),
                    )
                } else if info.queued > backend.queue_degraded() {
                    (
                        HealthStatus::Degraded,
                        format!(
                            "{} messages wait in the producer queue (over {})",
                            info.queued,
                            backend.queue_degraded()
                        ),
                    )
                } else {
                    (HealthStatus::Healthy, "kafka cluster answers".to_string())
                };
                HealthReport::new(status, message)
                    .detail("brokers", info.brokers)
                    .detail("latency_ms", info.latency.as_millis())
                    .detail("producer_queue", info.queued)
            }
            Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        };
        report
            .detail("bootstrap", backend.bootstrap())
            .detail("streams", self.streams.len())
    }

    /// Ends every Subscribe, Tail and Consume stream cleanly: each stores the
    /// offsets it handed over (Subscribe) or that were acknowledged (Consume),
    /// leaves its group (which commits them) and closes its response with OK.
    async fn drain(&self) -> Result<(), CoreError> {
        let running = self.streams.len();
        let left = self.streams.drain(STREAM_DRAIN_TIMEOUT).await;
        if left > 0 {
            tracing::warn!(
                running,
                left,
                "streams still closing after the drain timeout"
            );
        } else {
            tracing::info!(closed = running, "streams closed");
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), CoreError> {
        // Streams first (they commit through their own consumers), then the producer.
        self.streams.drain(STREAM_DRAIN_TIMEOUT).await;
        if let Some(backend) = self.backend.take() {
            // Closing flushes and joins librdkafka's threads: blocking work.
            // If a request still holds a reference, the last holder closes
            // it instead (see `Backend`'s `Drop`).
            let closed = tokio::task::spawn_blocking(move || drop(backend));
            if closed.await.is_err() {
                tracing::warn!("closing the kafka producer failed");
            }
        }
        Ok(())
    }
}
