//! The running plugin: effective config, (re-)initialization, the health loop,
//! drain and stop. Shared by the lifecycle service, the signal handler and the
//! serve loop, so every path through shutdown runs the same steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use figment::Figment;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::{self, Config};
use crate::gate::{DrainOutcome, Gate};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::plugin::{Context, HealthReport, HealthStatus, Plugin};
use crate::proto::lifecycle as pb;

/// Bound on one backend health check, so a stalled backend reads as unhealthy
/// within the ~2 s DESIGN.md §3.4 allows rather than hanging the loop.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

pub(crate) struct Runtime<P: Plugin> {
    pub(crate) plugin: Arc<P>,
    /// Defaults ← file ← env ← flags; Initialize overrides go on top of this.
    base: Figment,
    config: std::sync::RwLock<Config<P::Config>>,
    initialized: AtomicBool,
    last_error: std::sync::Mutex<Option<String>>,
    init_lock: tokio::sync::Mutex<()>,
    pub(crate) gate: Gate,
    pub(crate) health: Health,
    pub(crate) metrics: Metrics,
    pub(crate) ctx: Context,
    /// Cancelled to begin the shutdown sequence (signal or Stop).
    pub(crate) shutdown_requested: CancellationToken,
    stopped: AtomicBool,
    pub(crate) endpoint: String,
}

/// What the serve loop wires into a [`Runtime`] besides the plugin and its config.
pub(crate) struct Wiring {
    pub(crate) gate: Gate,
    pub(crate) health: Health,
    pub(crate) metrics: Metrics,
    pub(crate) ctx: Context,
    /// `localhost:<bound port>`, returned by Start.
    pub(crate) endpoint: String,
}

impl<P: Plugin> Runtime<P> {
    pub(crate) fn new(
        plugin: Arc<P>,
        base: Figment,
        config: Config<P::Config>,
        wiring: Wiring,
    ) -> Self {
        let Wiring {
            gate,
            health,
            metrics,
            ctx,
            endpoint,
        } = wiring;
        Runtime {
            plugin,
            base,
            config: std::sync::RwLock::new(config),
            initialized: AtomicBool::new(false),
            last_error: std::sync::Mutex::new(None),
            init_lock: tokio::sync::Mutex::new(()),
            gate,
            health,
            metrics,
            ctx,
            shutdown_requested: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            endpoint,
        }
    }

    pub(crate) fn config(&self) -> Config<P::Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        self.config().control_plane.drain_timeout
    }

    pub(crate) fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::SeqCst)
    }

    /// Loads config (with optional Initialize overrides), validates it, and
    /// (re)connects the plugin's backend. On failure the previous backend stays.
    pub(crate) async fn initialize(
        &self,
        overrides: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let _serialised = self.init_lock.lock().await;
        let figment = match overrides {
            Some(v) => config::with_initialize_overrides(self.base.clone(), v),
            None => self.base.clone(),
        };
        let config: Config<P::Config> = config::extract(&figment)?;
        validate::<P>(&config)?;
        let ctx = Context {
            vault: config.vault.clone(),
            ..self.ctx.clone()
        };
        let result = self.plugin.initialize(config.backend.clone(), &ctx).await;
        match result {
            Ok(()) => {
                *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.initialized.store(true, Ordering::SeqCst);
                if !self.shutdown_requested.is_cancelled() {
                    self.gate.open();
                    self.health.set_draining(false).await;
                }
                self.ctx.health_changed();
                tracing::info!(plugin = %crate::manifest::of::<P>().name, "backend initialized");
                Ok(())
            }
            Err(err) => {
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Initializes from file/env config at startup, retrying with backoff while
    /// the backend is unreachable (the process never exits for an outage).
    /// Returns an error only for configuration the plugin rejects.
    pub(crate) async fn auto_initialize(self: Arc<Self>) -> Result<(), Error> {
        let mut delay = Duration::from_millis(100);
        let mut warned = false;
        loop {
            if self.is_initialized() || self.shutdown_requested.is_cancelled() {
                return Ok(());
            }
            match self.initialize(None).await {
                Ok(()) => {
                    if let Err(err) = self.start().await {
                        tracing::warn!(error = %err, "plugin start failed");
                    }
                    return Ok(());
                }
                Err(err) if err.is_retriable() => {
                    if !warned {
                        tracing::warn!(error = %err, "backend not reachable; retrying with backoff");
                        warned = true;
                    } else {
                        tracing::debug!(error = %err, retry_in_ms = delay.as_millis() as u64, "backend still not reachable");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown_requested.cancelled() => return Ok(()),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err),
            }
        }
    }

    pub(crate) async fn start(&self) -> Result<(), Error> {
        if !self.is_initialized() {
            return Err(Error::NotInitialized);
        }
        self.plugin.start().await
    }

    /// The backend's health now (what HealthCheck returns and probes follow).
    pub(crate) async fn health_report(&self) -> HealthReport {
        if !self.is_initialized() {
            let reason = self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "initializing".to_string());
            return HealthReport::new(
                HealthStatus::Unhealthy,
                format!("not initialized: {reason}"),
            );
        }
        match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, self.plugin.health()).await {
            Ok(report) => report,
            Err(_) => HealthReport::new(
                HealthStatus::Unhealthy,
                format!(
                    "backend health check timed out after {} ms",
                    HEALTH_CHECK_TIMEOUT.as_millis()
                ),
            ),
        }
    }

    /// Re-checks backend health every `interval` (or at once when the plugin
    /// signals a change) and publishes it to the health statuses and metrics.
    pub(crate) async fn health_loop(self: Arc<Self>, interval: Duration) {
        let mut last: Option<bool> = None;
        loop {
            let report = self.health_report().await;
            let ok = report.is_serving();
            self.metrics.backend_up.set(i64::from(ok));
            self.health.set_backend_ok(ok).await;
            if last != Some(ok) {
                if ok {
                    tracing::info!(status = ?report.status, detail = %report.message, "backend healthy");
                } else if last.is_some() || self.is_initialized() {
                    tracing::warn!(reason = %report.message, "backend unhealthy");
                }
                last = Some(ok);
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.ctx.health_changed.notified() => {}
                _ = self.ctx.shutdown.cancelled() => return,
            }
        }
    }

    /// Turns readiness off and closes intake (new data calls get
    /// UNAVAILABLE), then lets the plugin wind down backend-side work (end
    /// open streams, commit what was acknowledged) while in-flight calls
    /// finish, all bounded by `timeout`.
    pub(crate) async fn drain(&self, timeout: Duration) -> DrainOutcome {
        self.health.set_draining(true).await;
        let in_flight = self.gate.close();
        tracing::info!(
            in_flight,
            timeout_ms = timeout.as_millis() as u64,
            "draining"
        );
        let plugin_drain = async {
            if !self.is_initialized() {
                return;
            }
            match tokio::time::timeout(timeout, self.plugin.drain()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "plugin drain failed"),
                Err(_) => tracing::warn!("plugin drain did not finish within the drain timeout"),
            }
        };
        let (outcome, ()) = tokio::join!(self.gate.wait_idle(in_flight, timeout), plugin_drain);
        if outcome.aborted > 0 {
            tracing::warn!(
                drained = outcome.drained,
                aborted = outcome.aborted,
                "drain timeout expired with calls still in flight"
            );
        } else {
            tracing::info!(drained = outcome.drained, "drained");
        }
        outcome
    }

    /// Drains if not yet drained, then releases the backend. Idempotent.
    pub(crate) async fn stop(&self, timeout: Duration) -> Result<(), Error> {
        if self.gate.is_open() {
            self.drain(timeout).await;
        }
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = if self.is_initialized() {
            self.plugin.stop().await
        } else {
            Ok(())
        };
        self.health.set_stopped().await;
        tracing::info!("plugin stopped");
        result
    }

    pub(crate) fn request_shutdown(&self) {
        self.shutdown_requested.cancel();
    }

    /// `InitializeResponse.metadata`.
    pub(crate) fn metadata(&self) -> pb::PatternMetadata {
        let config = self.config();
        let interfaces = self
            .plugin
            .interfaces()
            .into_iter()
            .map(|i| pb::InterfaceDeclaration {
                name: i.name.to_string(),
                proto_file: i.proto.path.to_string(),
                version: i.version.to_string(),
                proto_hash: i.proto.sha256(),
                metadata: self
                    .plugin
                    .interface_metadata(i.name)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect();
        let mut extra = std::collections::HashMap::new();
        extra.insert("data_endpoint".to_string(), self.endpoint.clone());
        extra.insert(
            "plugin".to_string(),
            crate::manifest::of::<P>().name.clone(),
        );
        // Empty (as in the shipped <plugin>/config.yaml) = the binary's own identity.
        let manifest = crate::manifest::of::<P>();
        let or_own =
            |value: String, own: &String| if value.is_empty() { own.clone() } else { value };
        pb::PatternMetadata {
            name: or_own(config.plugin.name, &manifest.name),
            version: or_own(config.plugin.version, &manifest.version),
            interfaces,
            extra,
        }
    }
}

/// Core's checks plus the plugin's, all problems reported together.
pub(crate) fn validate<P: Plugin>(config: &Config<P::Config>) -> Result<(), Error> {
    let mut problems = Vec::new();
    let cp = &config.control_plane;
    if cp.max_message_bytes < 1024 * 1024 {
        problems.push(format!(
            "`control_plane.max_message_bytes`: {} is below the 1 MiB minimum",
            cp.max_message_bytes
        ));
    }
    if cp.drain_timeout.is_zero() {
        problems.push("`control_plane.drain_timeout`: must be greater than 0".to_string());
    }
    if cp.health_interval < Duration::from_millis(50) {
        problems.push("`control_plane.health_interval`: must be at least 50ms".to_string());
    }
    if cp.bind_address.parse::<std::net::IpAddr>().is_err() {
        problems.push(format!(
            "`control_plane.bind_address`: {:?} is not an IP address",
            cp.bind_address
        ));
    }
    if let Some(tls) = &cp.tls {
        problems.extend(tls.validate());
    }
    if let Some(authorization) = &cp.authorization {
        problems.extend(authorization.validate(cp.tls.as_ref()));
    }
    if cp.probe_port.is_some_and(|p| p != 0 && p == cp.port) {
        problems
            .push("`control_plane.probe_port`: must differ from `control_plane.port`".to_string());
    }
    if config.metrics.port.is_some_and(|p| p != 0 && p == cp.port) {
        problems.push("`metrics.port`: must differ from `control_plane.port`".to_string());
    }
    problems.extend(config.vault.validate());
    problems.extend(config.telemetry.validate());
    problems.extend(crate::plugin::BackendConfig::validate(&config.backend));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(problems))
    }
}
