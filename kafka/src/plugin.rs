//! The `Plugin` implementation: wires the Kafka backend into core's lifecycle
//! (initialize, health, stop). Data services come later.

use std::sync::Arc;

use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, Plugin, ServiceRegistry,
    Slot,
};

use crate::backend::Backend;
use crate::config::KafkaConfig;

/// The Kafka plugin: the current backend in a [`Slot`] that `initialize` replaces.
#[derive(Default)]
pub(crate) struct KafkaPlugin {
    backend: Slot<Backend>,
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
        ("KAFKA_SASL_USERNAME", "backend.sasl_username"),
        ("KAFKA_SASL_PASSWORD", "backend.sasl_password"),
    ];

    fn default_config() -> KafkaConfig {
        KafkaConfig::default()
    }

    fn validate(config: &KafkaConfig) -> Vec<String> {
        config.validate()
    }

    fn interfaces(&self) -> Vec<Interface> {
        Vec::new()
    }

    fn register(&self, _services: &mut ServiceRegistry) {}

    async fn initialize(&self, config: KafkaConfig, _ctx: &Context) -> Result<(), CoreError> {
        let backend = Backend::connect(&config).await?;
        // The old producer (if any) is closed on a blocking thread once the
        // last in-flight user releases it (see `Backend`'s `Drop`).
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
                } else {
                    (HealthStatus::Healthy, "kafka cluster answers".to_string())
                };
                HealthReport::new(status, message)
                    .detail("brokers", info.brokers)
                    .detail("latency_ms", info.latency.as_millis())
            }
            Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        };
        report.detail("bootstrap", backend.bootstrap())
    }

    async fn stop(&self) -> Result<(), CoreError> {
        if let Some(backend) = self.backend.take() {
            // Closing flushes and joins librdkafka's threads: blocking work.
            // If a health check still holds a reference, the last holder
            // closes it instead (see `Backend`'s `Drop`).
            let closed = tokio::task::spawn_blocking(move || drop(backend));
            if closed.await.is_err() {
                tracing::warn!("closing the kafka producer failed");
            }
        }
        Ok(())
    }
}
