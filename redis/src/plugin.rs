//! The `Plugin` implementation: wires the Redis backend and the KeyValue data
//! services into core's lifecycle (initialize, health, stop).

use std::sync::Arc;

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterfaceServer;
use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, Plugin, ServiceRegistry,
    Slot,
};

use crate::backend::Backend;
use crate::config::RedisConfig;
use crate::service::KvService;

/// Version of the declared KeyValue interfaces.
const INTERFACE_VERSION: &str = "1.0.0";

/// The Redis plugin: the current backend in a [`Slot`] that `initialize` replaces.
#[derive(Default)]
pub(crate) struct RedisPlugin {
    backend: Arc<Slot<Backend>>,
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
        use prism_plugin_core::proto::{
            KEYVALUE_BASIC_PROTO, KEYVALUE_BATCH_PROTO, KEYVALUE_TTL_PROTO,
        };
        vec![
            Interface {
                name: "KeyValueBasicInterface",
                proto: KEYVALUE_BASIC_PROTO,
                version: INTERFACE_VERSION,
            },
            Interface {
                name: "KeyValueBatchInterface",
                proto: KEYVALUE_BATCH_PROTO,
                version: INTERFACE_VERSION,
            },
            Interface {
                name: "KeyValueTTLInterface",
                proto: KEYVALUE_TTL_PROTO,
                version: INTERFACE_VERSION,
            },
        ]
    }

    fn register(&self, services: &mut ServiceRegistry) {
        let service = KvService::new(Arc::clone(&self.backend));
        let max = services.max_message_bytes();
        services
            .add(
                KeyValueBasicInterfaceServer::new(service.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add(
                KeyValueBatchInterfaceServer::new(service.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add(
                KeyValueTtlInterfaceServer::new(service)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            );
    }

    async fn initialize(&self, config: RedisConfig, _ctx: &Context) -> Result<(), CoreError> {
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
                let report = HealthReport::new(status, message)
                    .detail("latency_ms", latency.as_millis())
                    .detail("latency_us", latency.as_micros())
                    .detail("degraded_latency_ms", degraded_latency.as_millis())
                    .detail("address", backend.address())
                    .detail("mode", backend.mode());
                match backend.cluster_nodes() {
                    0 => report,
                    n => report.detail("cluster_seed_nodes", n),
                }
            }
            Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string())
                .detail("address", backend.address())
                .detail("mode", backend.mode()),
        }
    }

    async fn stop(&self) -> Result<(), CoreError> {
        drop(self.backend.take());
        Ok(())
    }
}
