//! The `Plugin` implementation: wires the PostgreSQL backend, its four
//! KeyValue services, the expiry reaper and (with Vault) the credential
//! rotation into core's lifecycle (initialize, health, stop).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_scan_interface_server::KeyValueScanInterfaceServer;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterfaceServer;
use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, ManifestSource, Plugin,
    ServiceRegistry, Slot, proto,
};

use crate::backend::{Backend, Login};
use crate::config::PostgresConfig;
use crate::reaper::Reaper;
use crate::service::KvService;
use prism_plugin_core::rotation::{self, Connect, Rotator, View};

/// How long closing a pool waits for borrowed connections (statements are
/// bounded by `statement_timeout`, but a stop must not hang on one).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL plugin: the current backend in a [`Slot`] that `initialize`
/// (and a Vault rotation) replaces, shared with the services; the reaper
/// sweeping it; the rotation task.
#[derive(Default)]
pub struct PostgresPlugin {
    backend: Arc<Slot<Backend>>,
    /// Serialises initialize and stop; the tasks they own.
    tasks: tokio::sync::Mutex<Tasks>,
    /// What health reports about Vault; `None` without Vault.
    vault: RwLock<Option<Arc<View>>>,
}

/// Background tasks owned by the plugin; `None` before the first initialize
/// and after stop.
#[derive(Default)]
struct Tasks {
    reaper: Option<Reaper>,
    rotator: Option<Rotator>,
}

/// Connections a rotated-in pool opens (and checks) before it is swapped in.
const WARM_CONNECTIONS: u32 = 2;

/// Builds a backend logged in with one Vault credential set, with a couple
/// of connections open and checked with `SELECT 1`.
fn connector(config: PostgresConfig, ctx: Context, slot: Arc<Slot<Backend>>) -> Connect<Backend> {
    Arc::new(move |creds, hook| {
        let config = config.clone();
        let ctx = ctx.clone();
        let slot = slot.clone();
        Box::pin(async move {
            let login = Login {
                username: &creds.username,
                password: creds.password.expose(),
                hook,
            };
            let backend = Backend::connect(&config, &ctx, Some(login)).await?;
            // Each login costs a SCRAM exchange (~100 ms unoptimised), so only
            // a few are made before the swap; requests open the rest.
            let open = slot.get().map_or(1, |current| current.open_connections());
            backend.warm(open.min(WARM_CONNECTIONS)).await?;
            Ok(backend)
        })
    })
}

#[prism_plugin_core::async_trait]
impl Plugin for PostgresPlugin {
    type Config = PostgresConfig;

    const MANIFEST: ManifestSource = prism_plugin_core::manifest!();

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
        let mut tasks = self.tasks.lock().await;
        let (backend, rotation) = if ctx.vault.enabled() {
            let connect = connector(config.clone(), ctx.clone(), self.backend.clone());
            let first = Rotator::first(&ctx.vault, &ctx.shutdown, &connect).await?;
            (first.backend, Some((first.source, first.alarm, connect)))
        } else {
            (Backend::connect(&config, ctx, None).await?, None)
        };
        // The old reaper and rotation stop before the new ones start: at most
        // one reaper per process sweeps, and an old rotation cannot swap in a
        // backend built from the previous config after this one.
        if let Some(old) = tasks.reaper.take() {
            old.stop().await;
        }
        let old_source = match tasks.rotator.take() {
            Some(old) => Some(old.stop().await),
            None => None,
        };
        let old = self.backend.replace(Arc::new(backend));
        tasks.reaper = Some(Reaper::spawn(
            self.backend.clone(),
            config.reaper_interval,
            &ctx.shutdown,
        ));
        let view = rotation.map(|(source, alarm, connect)| {
            let rotator =
                Rotator::spawn(source, alarm, self.backend.clone(), connect, &ctx.shutdown);
            let view = rotator.view();
            tasks.rotator = Some(rotator);
            view
        });
        *self.vault.write().unwrap_or_else(|e| e.into_inner()) = view;
        // Requests still holding the old backend finish on it; it is closed
        // once none does, off the lifecycle call, and only then is its lease
        // revoked. Nothing awaits it: it is bounded, and if the process exits
        // first the sockets close with it.
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
        let mut report = report
            .detail("target", backend.target())
            .detail("pool_size", pool.size)
            .detail("pool_idle", pool.idle)
            .detail("pool_max", pool.max);
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
        let mut tasks = self.tasks.lock().await;
        if let Some(reaper) = tasks.reaper.take() {
            reaper.stop().await;
        }
        let source = match tasks.rotator.take() {
            Some(rotator) => Some(rotator.stop().await),
            None => None,
        };
        *self.vault.write().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(backend) = self.backend.take()
            && tokio::time::timeout(CLOSE_TIMEOUT, backend.close())
                .await
                .is_err()
        {
            tracing::warn!("postgres connections still busy at stop; closing anyway");
        }
        // Last: revoking the lease drops the database user.
        if let Some(source) = source {
            source.shutdown().await;
        }
        Ok(())
    }
}
