//! The `Plugin` implementation: wires the PostgreSQL backend, its five
//! KeyValue services, the expiry reaper and (with Vault) the credential
//! rotation into core's lifecycle (initialize, health, stop).

use std::sync::Arc;

use prism_plugin_core::probe;
use prism_plugin_core::rotation::Connect;
use prism_plugin_core::{
    Context, Error as CoreError, HealthReport, HealthStatus, Interface, ManifestSource, Plugin,
    Rotated, ServiceRegistry, Slot,
};

use crate::backend::{Backend, Login};
use crate::config::PostgresConfig;
use crate::reaper::Reaper;
use crate::tls::ClientPem;

/// The PostgreSQL plugin: the current backend, which `initialize` (and a
/// Vault rotation) replaces, shared with the services; the reaper sweeping it.
#[derive(Default)]
pub struct PostgresPlugin {
    backend: Rotated<Backend>,
    /// Serialises initialize and stop; the reaper, `None` before the first
    /// initialize and after stop.
    reaper: tokio::sync::Mutex<Option<Reaper>>,
}

/// Connections a rotated-in pool opens (and checks) before it is swapped in.
const WARM_CONNECTIONS: u32 = 2;

/// Builds a backend logged in with one Vault credential set (a database
/// user, or a PKI client certificate), with a couple of connections open and
/// checked with `SELECT 1`.
fn connector(config: PostgresConfig, ctx: Context, slot: Arc<Slot<Backend>>) -> Connect<Backend> {
    Arc::new(move |creds, hook| {
        let config = config.clone();
        let ctx = ctx.clone();
        let slot = slot.clone();
        Box::pin(async move {
            // A PKI certificate (cert authentication) or a database user.
            let chain = creds.certificate.as_ref().map(|c| c.cert_chain_pem());
            let login = match (&creds.certificate, &chain) {
                (Some(cert), Some(chain)) => Login::Certificate {
                    username: &creds.username,
                    pem: ClientPem {
                        cert_chain: chain,
                        key: cert.key_pem.expose(),
                    },
                    hook,
                },
                _ => Login::Password {
                    username: &creds.username,
                    password: creds.password.expose(),
                    hook,
                },
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

    fn interfaces(&self) -> Vec<Interface> {
        prism_plugin_core::kv_plugin::interfaces()
    }

    fn register(&self, services: &mut ServiceRegistry) {
        prism_plugin_core::kv_plugin::register(services, &self.backend.slot());
    }

    fn interface_metadata(&self, name: &str) -> Vec<(&'static str, &'static str)> {
        prism_plugin_core::kv_plugin::interface_metadata::<Backend>(name)
    }

    async fn initialize(&self, config: PostgresConfig, ctx: &Context) -> Result<(), CoreError> {
        let mut reaper = self.reaper.lock().await;
        let connect = connector(config.clone(), ctx.clone(), self.backend.slot());
        let plain = async { Ok(Backend::connect(&config, ctx, None).await?) };
        self.backend.initialize(ctx, connect, plain).await?;
        // The old reaper stops before the new one starts: at most one reaper
        // per process sweeps.
        if let Some(old) = reaper.take() {
            old.stop().await;
        }
        *reaper = Some(Reaper::spawn(
            self.backend.slot(),
            config.reaper_interval,
            &ctx.shutdown,
        ));
        Ok(())
    }

    async fn health(&self) -> HealthReport {
        self.backend.health(backend_health).await
    }

    async fn stop(&self) -> Result<(), CoreError> {
        let mut reaper = self.reaper.lock().await;
        if let Some(reaper) = reaper.take() {
            reaper.stop().await;
        }
        // Closes the pool, then revokes the lease (which drops the database user).
        if !self.backend.stop().await.close().await {
            tracing::warn!("postgres connections still busy at stop; closing anyway");
        }
        Ok(())
    }
}

/// The backend's own health: a `SELECT 1` round trip and the pool's use.
async fn backend_health(backend: Arc<Backend>) -> HealthReport {
    // Stats before the probe, so the probe's own connection is not counted as busy.
    let pool = backend.pool_stats();
    let report = match backend.ping().await {
        Ok(latency) => {
            let busy = pool.nearly_exhausted().then(|| {
                format!(
                    "postgres pool nearly exhausted: {} of {} connections busy",
                    pool.busy(),
                    pool.max
                )
            });
            let (limit, healthy) = (backend.degraded_latency(), "postgres answers SELECT 1");
            probe::answered("postgres SELECT 1", latency, limit, busy, healthy)
        }
        Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
    };
    report
        .detail("target", backend.target())
        .detail("pool_size", pool.size)
        .detail("pool_idle", pool.idle)
        .detail("pool_max", pool.max)
}
