//! The `Plugin` implementation: wires the Redis backend, the KeyValue data
//! services and (with Vault) the credential rotation into core's lifecycle
//! (initialize, health, stop).

use std::sync::Arc;

use prism_plugin_core::probe;
use prism_plugin_core::rotation::Connect;
use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, ManifestSource, Plugin,
    Rotated, ServiceRegistry,
};

use crate::backend::{Backend, Login};
use crate::config::RedisConfig;

/// The Redis plugin: the current backend, which `initialize` (and a Vault
/// rotation) replaces.
#[derive(Default)]
pub struct RedisPlugin {
    backend: Rotated<Backend>,
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

    fn interfaces(&self) -> Vec<Interface> {
        prism_plugin_core::kv_plugin::interfaces()
    }

    fn interface_metadata(&self, name: &str) -> Vec<(&'static str, &'static str)> {
        prism_plugin_core::kv_plugin::interface_metadata::<Backend>(name)
    }

    fn register(&self, services: &mut ServiceRegistry) {
        prism_plugin_core::kv_plugin::register(services, &self.backend.slot());
    }

    async fn initialize(&self, config: RedisConfig, ctx: &Context) -> Result<(), CoreError> {
        let plain = async { Ok(Backend::connect(&config, None).await?) };
        self.backend
            .initialize(ctx, connector(config.clone()), plain)
            .await
    }

    async fn health(&self) -> HealthReport {
        self.backend.health(backend_health).await
    }

    async fn stop(&self) -> Result<(), CoreError> {
        // Revoking the lease last deletes the ACL user.
        self.backend.stop().await.close().await;
        Ok(())
    }
}

/// The backend's own health: a `PING` round trip.
async fn backend_health(backend: Arc<Backend>) -> HealthReport {
    let degraded_latency = backend.degraded_latency();
    match backend.health_ping().await {
        Ok(latency) => {
            let healthy = "redis answers PING";
            let report = probe::answered("redis PING", latency, degraded_latency, None, healthy)
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
