//! The `Plugin` implementation: wires the PostgreSQL backend, its four
//! KeyValue services and the expiry reaper into core's lifecycle
//! (initialize, health, stop).

use std::sync::Arc;
use std::time::Duration;

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_scan_interface_server::KeyValueScanInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterfaceServer;
use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, Plugin, ServiceRegistry,
    Slot, proto,
};

use crate::backend::Backend;
use crate::config::PostgresConfig;
use crate::reaper::Reaper;
use crate::service::KvService;

/// How long closing a pool waits for borrowed connections (statements are
/// bounded by `statement_timeout`, but a stop must not hang on one).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL plugin: the current backend in a [`Slot`] that `initialize`
/// replaces (shared with the services), and the reaper sweeping it.
#[derive(Default)]
pub(crate) struct PostgresPlugin {
    backend: Arc<Slot<Backend>>,
    /// Serialises reaper swaps; `None` before the first initialize and after stop.
    reaper: tokio::sync::Mutex<Option<Reaper>>,
}

#[prism_plugin_core::async_trait]
impl Plugin for PostgresPlugin {
    type Config = PostgresConfig;

    const NAME: &'static str = "postgres";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DEFAULT_PORT: u16 = 9090;
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[
        ("DATABASE_URL", "backend.database_url"),
        ("POSTGRES_POOL_SIZE", "backend.pool_size"),
    ];

    fn default_config() -> PostgresConfig {
        PostgresConfig::default()
    }

    fn validate(config: &PostgresConfig) -> Vec<String> {
        config.validate()
    }

    fn interfaces(&self) -> Vec<Interface> {
        [
            ("KeyValueBasicInterface", proto::KEYVALUE_BASIC_PROTO),
            ("KeyValueBatchInterface", proto::KEYVALUE_BATCH_PROTO),
            ("KeyValueTTLInterface", proto::KEYVALUE_TTL_PROTO),
            ("KeyValueScanInterface", proto::KEYVALUE_SCAN_PROTO),
        ]
        .into_iter()
        .map(|(name, proto)| Interface {
            name,
            proto,
            version: "1.0.0",
        })
        .collect()
    }

    fn register(&self, services: &mut ServiceRegistry) {
        let svc = KvService::new(self.backend.clone());
        let max = services.max_message_bytes();
        services
            .add(
                KeyValueBasicInterfaceServer::new(svc.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add(
                KeyValueBatchInterfaceServer::new(svc.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add(
                KeyValueTtlInterfaceServer::new(svc.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add(
                KeyValueScanInterfaceServer::new(svc)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            );
    }

    async fn initialize(&self, config: PostgresConfig, ctx: &Context) -> Result<(), CoreError> {
        let backend = Arc::new(Backend::connect(&config, ctx).await?);
        // The old reaper goes before the new one starts, so at most one per
        // process sweeps; it is awaited, so it never outlives its backend.
        {
            let mut reaper = self.reaper.lock().await;
            if let Some(old) = reaper.take() {
                old.stop().await;
            }
            *reaper = Some(Reaper::spawn(backend.clone(), &ctx.shutdown));
        }
        if let Some(old) = self.backend.replace(backend) {
            // Requests still holding the old backend finish on it; closing waits
            // for their connections, so it runs off the lifecycle call. Nothing
            // awaits it: it is bounded, and if the process exits first the
            // sockets close with it.
            tokio::spawn(async move {
                if tokio::time::timeout(CLOSE_TIMEOUT, old.close())
                    .await
                    .is_err()
                {
                    tracing::warn!("previous postgres pool still busy; dropping it");
                }
            });
        }
        Ok(())
    }

    async fn health(&self) -> HealthReport {
        let backend = match self.backend.get() {
            Ok(backend) => backend,
            Err(err) => return HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        };
        // Stats before the probe, so the probe's own connection is not counted as busy.
        let pool = backend.pool_stats();
        let report = match backend.ping().await {
            Ok(latency) => {
                let slow = latency > backend.degraded_latency();
                let (status, message) = if slow {
                    (
                        HealthStatus::Degraded,
                        format!(
                            "postgres SELECT 1 took {} ms (over {} ms)",
                            latency.as_millis(),
                            backend.degraded_latency().as_millis()
                        ),
                    )
                } else if pool.nearly_exhausted() {
                    (
                        HealthStatus::Degraded,
                        format!(
                            "postgres pool nearly exhausted: {} of {} connections busy",
                            pool.busy(),
                            pool.max
                        ),
                    )
                } else {
                    (
                        HealthStatus::Healthy,
                        "postgres answers SELECT 1".to_string(),
                    )
                };
                HealthReport::new(status, message).detail("latency_ms", latency.as_millis())
            }
            Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        };
        report
            .detail("target", backend.target())
            .detail("pool_size", pool.size)
            .detail("pool_idle", pool.idle)
            .detail("pool_max", pool.max)
    }

    async fn stop(&self) -> Result<(), CoreError> {
        if let Some(reaper) = self.reaper.lock().await.take() {
            reaper.stop().await;
        }
        if let Some(backend) = self.backend.take()
            && tokio::time::timeout(CLOSE_TIMEOUT, backend.close())
                .await
                .is_err()
        {
            tracing::warn!("postgres connections still busy at stop; closing anyway");
        }
        Ok(())
    }
}
