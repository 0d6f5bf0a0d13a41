//! The `Plugin` implementation: wires the PostgreSQL backend into core's
//! lifecycle (initialize, health, stop). Data services come later.

use std::sync::Arc;
use std::time::Duration;

use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, Plugin, ServiceRegistry,
    Slot,
};

use crate::backend::Backend;
use crate::config::PostgresConfig;

/// How long closing a pool waits for borrowed connections (statements are
/// bounded by `statement_timeout`, but a stop must not hang on one).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL plugin: the current backend in a [`Slot`] that `initialize` replaces.
#[derive(Default)]
pub(crate) struct PostgresPlugin {
    backend: Slot<Backend>,
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
        Vec::new()
    }

    fn register(&self, _services: &mut ServiceRegistry) {}

    async fn initialize(&self, config: PostgresConfig, _ctx: &Context) -> Result<(), CoreError> {
        let backend = Backend::connect(&config).await?;
        if let Some(old) = self.backend.replace(Arc::new(backend)) {
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
