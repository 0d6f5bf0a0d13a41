//! The `Plugin` implementation: wires the Redis backend into core's lifecycle
//! (initialize, health, stop). Data services come later.

use std::sync::Arc;

use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, Plugin, ServiceRegistry,
    Slot,
};

use crate::backend::Backend;
use crate::config::RedisConfig;

/// The Redis plugin: the current backend in a [`Slot`] that `initialize` replaces.
#[derive(Default)]
pub(crate) struct RedisPlugin {
    backend: Slot<Backend>,
}

#[prism_plugin_core::async_trait]
impl Plugin for RedisPlugin {
    type Config = RedisConfig;

    const NAME: &'static str = "redis";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DEFAULT_PORT: u16 = 9092;
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[
        ("REDIS_ADDRESS", "backend.address"),
        ("REDIS_USERNAME", "backend.username"),
        ("REDIS_PASSWORD", "backend.password"),
    ];

    fn default_config() -> RedisConfig {
        RedisConfig::default()
    }

    fn validate(config: &RedisConfig) -> Vec<String> {
        config.validate()
    }

    fn interfaces(&self) -> Vec<Interface> {
        Vec::new()
    }

    fn register(&self, _services: &mut ServiceRegistry) {}

    async fn initialize(&self, config: RedisConfig, _ctx: &Context) -> Result<(), CoreError> {
        if !config.cluster_nodes.is_empty() {
            tracing::warn!(
                nodes = config.cluster_nodes.len(),
                "`backend.cluster_nodes` is set but cluster mode is not implemented yet; \
                 connecting to `backend.address` only"
            );
        }
        let backend = Backend::connect(&config).await?;
        // The previous backend (if any) is dropped once in-flight users release
        // it; dropping the last manager handle closes its connection.
        drop(self.backend.replace(Arc::new(backend)));
        Ok(())
    }

    async fn health(&self) -> HealthReport {
        let backend = match self.backend.get() {
            Ok(backend) => backend,
            Err(err) => return HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        };
        let degraded_latency = backend.degraded_latency();
        match backend.health_ping().await {
            Ok(latency) => {
                let (status, message) = if latency > degraded_latency {
                    (
                        HealthStatus::Degraded,
                        format!(
                            "redis PING took {} ms (over {} ms)",
                            latency.as_millis(),
                            degraded_latency.as_millis()
                        ),
                    )
                } else {
                    (HealthStatus::Healthy, "redis answers PING".to_string())
                };
                HealthReport::new(status, message)
                    .detail("latency_ms", latency.as_millis())
                    .detail("address", backend.address())
            }
            Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string())
                .detail("address", backend.address()),
        }
    }

    async fn stop(&self) -> Result<(), CoreError> {
        drop(self.backend.take());
        Ok(())
    }
}
