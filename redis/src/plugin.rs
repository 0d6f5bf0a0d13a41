//! The `Plugin` implementation: wires the Redis backend, the KeyValue data
//! services and (with Vault) the credential rotation into core's lifecycle
//! (initialize, health, stop).

use std::sync::{Arc, RwLock};

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterfaceServer;
use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, ManifestSource, Plugin,
    ServiceRegistry, Slot,
};

use crate::backend::{Backend, Login};
use crate::config::RedisConfig;
use crate::service::KvService;
use prism_plugin_core::rotation::{self, Connect, Rotator, View};

/// Version of the declared KeyValue interfaces.
const INTERFACE_VERSION: &str = "1.0.0";

/// The Redis plugin: the current backend in a [`Slot`] that `initialize`
/// (and a Vault rotation) replaces, and the rotation task.
#[derive(Default)]
pub struct RedisPlugin {
    backend: Arc<Slot<Backend>>,
    /// Serialises initialize and stop; the rotation, `None` without Vault.
    rotator: tokio::sync::Mutex<Option<Rotator>>,
    /// What health reports about Vault; `None` without Vault.
    vault: RwLock<Option<Arc<View>>>,
}

/// Builds a backend logged in with one Vault credential set; connecting
/// includes a `PING` round trip, the check that the ACL user works.
fn connector(config: RedisConfig) -> Connect<Backend> {
    Arc::new(move |creds, hook| {
        let config = config.clone();
        Box::pin(async move {
            let login = Login {
                username: &creds.username,
                password: creds.password.expose(),
                hook,
            };
            Ok(Backend::connect(&config, Some(login)).await?)
        })
    })
}

#[prism_plugin_core::async_trait]
impl Plugin for RedisPlugin {
    type Config = RedisConfig;

    const MANIFEST: ManifestSource = prism_plugin_core::manifest!();

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

    async fn initialize(&self, config: RedisConfig, ctx: &Context) -> Result<(), CoreError> {
        let mut rotator = self.rotator.lock().await;
        let (backend, rotation) = if ctx.vault.enabled() {
            let connect = connector(config.clone());
            let first = Rotator::first(&ctx.vault, &ctx.shutdown, &connect).await?;
            (first.backend, Some((first.source, first.alarm, connect)))
        } else {
            (Backend::connect(&config, None).await?, None)
        };
        // The old rotation stops first, so it cannot swap in a backend built
        // from the previous config after this one.
        let old_source = match rotator.take() {
            Some(old) => Some(old.stop().await),
            None => None,
        };
        let old = self.backend.replace(Arc::new(backend));
        let view = rotation.map(|(source, alarm, connect)| {
            let started =
                Rotator::spawn(source, alarm, self.backend.clone(), connect, &ctx.shutdown);
            let view = started.view();
            *rotator = Some(started);
            view
        });
        *self.vault.write().unwrap_or_else(|e| e.into_inner()) = view;
        // Requests still holding the previous backend finish on it; its
        // connection closes with the last of them, and only then is its
        // lease revoked (which deletes its ACL user and kills its connections).
        if let Some(old) = old {
            tokio::spawn(async move {
                rotation::retire(old).await;
                if let Some(source) = old_source {
                    source.shutdown().await;
                }
            });
        } else if let Some(source) = old_source {
            source.shutdown().await;
        }
        Ok(())
    }

    async fn health(&self) -> HealthReport {
        let backend = match self.backend.get() {
            Ok(backend) => backend,
            Err(err) => return HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        };
        let vault = self.vault.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut report = self.backend_health(&backend).await;
        if let Some(vault) = vault {
            report.details.extend(vault.details());
            // Vault being unreachable alone changes nothing: the current
            // credentials keep working until they expire.
            if vault.expired() {
                report.status = HealthStatus::Unhealthy;
                report.message =
                    "the Vault credentials expired without renewal (Vault unreachable?)".into();
            }
        }
        report
    }

    async fn stop(&self) -> Result<(), CoreError> {
        let mut rotator = self.rotator.lock().await;
        let source = match rotator.take() {
            Some(rotator) => Some(rotator.stop().await),
            None => None,
        };
        *self.vault.write().unwrap_or_else(|e| e.into_inner()) = None;
        drop(self.backend.take());
        // Last: revoking the lease deletes the ACL user.
        if let Some(source) = source {
            source.shutdown().await;
        }
        Ok(())
    }
}

impl RedisPlugin {
    /// The backend's own health: a `PING` round trip.
    async fn backend_health(&self, backend: &Backend) -> HealthReport {
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
}
