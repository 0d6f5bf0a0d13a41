//! The `Plugin` implementation: wires the Kafka backend, the data services,
//! the producer rebuilder and (with Vault) the SASL credential rotation into
//! core's lifecycle (initialize, start, health, drain, stop).

use std::sync::Arc;
use std::time::Duration;

use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_server::PubSubBasicInterfaceServer;
use prism_plugin_core::proto::pubsub::stream_interface_server::StreamInterfaceServer;
use prism_plugin_core::proto::timeseries::time_series_basic_interface_server::TimeSeriesBasicInterfaceServer;
use prism_plugin_core::proto::{PUBSUB_BASIC_PROTO, PUBSUB_STREAM_PROTO, TIMESERIES_BASIC_PROTO};
use prism_plugin_core::rotation::Connect;
use prism_plugin_core::vault::SecretEngine;
use prism_plugin_core::{
    BackendConfig, Context, Error as CoreError, HealthReport, HealthStatus, Interface,
    ManifestSource, Plugin, Rotated, ServiceRegistry,
};

use crate::backend::Backend;
use crate::config::KafkaConfig;
use crate::rebuilder::{Rebuilder, Rebuilds};
use crate::service::KafkaService;
use crate::stream::StreamSet;
use crate::timeseries::TimeSeriesService;

/// How long `drain` waits for streams to store their offsets and leave their
/// groups (each needs a broker round trip or two).
const STREAM_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The Kafka plugin: the current backend, which `initialize` (and a Vault
/// rotation, and the rebuilder) replaces, the running streams, and the
/// background tasks.
#[derive(Default)]
pub struct KafkaPlugin {
    backend: Rotated<Backend>,
    streams: Arc<StreamSet>,
    /// Serialises initialize, start and stop; the tasks they own.
    tasks: tokio::sync::Mutex<Tasks>,
    /// What the rebuilder reports to health.
    rebuilds: Arc<Rebuilds>,
}

/// Background tasks owned by the plugin; `None` before they are started and
/// after stop.
#[derive(Default)]
struct Tasks {
    /// Replaces a producer that failed fatally; started by `start`.
    rebuilder: Option<Rebuilder>,
    /// The context of the latest `initialize` (the plugin's cancellation
    /// token), for the tasks `start` spawns.
    context: Option<Context>,
}

/// Builds a backend whose SASL credentials come from one Vault KV v2
/// version (`username`, `password`, optional `mechanism`); connecting checks
/// them with a metadata round trip. On success the group streams are told to
/// rebuild their consumers with them (the rotation swaps the backend in
/// right after this returns; streams wait for it).
fn connector(config: KafkaConfig, streams: Arc<StreamSet>) -> Connect<Backend> {
    Arc::new(move |creds, hook| {
        let mut config = config.clone();
        let streams = streams.clone();
        Box::pin(async move {
            config.sasl.username = creds.username.clone();
            config.sasl.password = creds.password.clone();
            if let Some(mechanism) = creds.extra.get("mechanism") {
                config.sasl.mechanism = mechanism.clone();
            }
            let problems = config.validate();
            if !problems.is_empty() {
                return Err(CoreError::Config(
                    problems
                        .into_iter()
                        .map(|p| format!("from the Vault secret: {p}"))
                        .collect(),
                ));
            }
            if config.sasl.username.is_empty() {
                return Err(CoreError::config(
                    "`vault.secret`: the KV v2 secret has no `username` field",
                ));
            }
            let generation = creds.generation;
            let backend = Backend::connect(&config, Some((generation, hook))).await?;
            streams.credentials_changed(generation);
            Ok(backend)
        })
    })
}

/// Vault-specific configuration problems.
fn check_vault(config: &KafkaConfig, ctx: &Context) -> Result<(), CoreError> {
    let Some(secret) = &ctx.vault.secret else {
        return Ok(());
    };
    let mut problems = Vec::new();
    if secret.engine != SecretEngine::Kv2 {
        problems.push(
            "`vault.secret.engine`: prism-kafka reads SASL credentials from a kv2 secret".into(),
        );
    }
    if !config.security_protocol.uses_sasl() {
        problems.push(format!(
            "`backend.security_protocol`: {} does not use the SASL credentials from Vault; \
             use sasl_plaintext or sasl_ssl",
            config.security_protocol.as_str()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Config(problems))
    }
}

impl KafkaPlugin {
    /// The backend's own health: a broken producer, or a metadata round trip.
    async fn backend_health(&self, backend: Arc<Backend>) -> HealthReport {
        let report = if let Some(reason) = backend.broken() {
            // Not serving while publishes cannot succeed; the rebuilder
            // replaces the producer and asks for a new probe when it has.
            HealthReport::new(
                HealthStatus::Unhealthy,
                format!(
                    "kafka producer failed fatally ({reason}); {}",
                    self.rebuilds.progress()
                ),
            )
        } else {
            cluster_health(&backend).await
        };
        report
            .detail("bootstrap", backend.bootstrap())
            .detail("streams", self.streams.len())
            .detail("producer_rebuilds", self.rebuilds.count())
    }
}

/// Health of a working backend: a metadata round trip, its latency and the
/// producer queue.
async fn cluster_health(backend: &Backend) -> HealthReport {
    let health = backend.health().await;
    backend.broker_answers(health.is_ok());
    match health {
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
            } else if info.queued > backend.queue_degraded() {
                (
                    HealthStatus::Degraded,
                    format!(
                        "{} messages wait in the producer queue (over {})",
                        info.queued,
                        backend.queue_degraded()
                    ),
                )
            } else {
                (HealthStatus::Healthy, "kafka cluster answers".to_string())
            };
            HealthReport::new(status, message)
                .detail("brokers", info.brokers)
                .detail("latency_ms", info.latency.as_millis())
                .detail("producer_queue", info.queued)
        }
        Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
    }
}

#[prism_plugin_core::async_trait]
impl Plugin for KafkaPlugin {
    type Config = KafkaConfig;

    const MANIFEST: ManifestSource = prism_plugin_core::manifest!();

    fn interfaces(&self) -> Vec<Interface> {
        vec![
            Interface {
                name: "PubSubBasicInterface",
                proto: PUBSUB_BASIC_PROTO,
                version: "1.0.0",
            },
            Interface {
                name: "StreamInterface",
                proto: PUBSUB_STREAM_PROTO,
                version: "1.0.0",
            },
            Interface {
                name: "TimeSeriesBasicInterface",
                proto: TIMESERIES_BASIC_PROTO,
                version: "1.0.0",
            },
        ]
    }

    fn register(&self, services: &mut ServiceRegistry) {
        let service = KafkaService::new(self.backend.slot(), self.streams.clone());
        let timeseries = TimeSeriesService::new(self.backend.slot(), self.streams.clone());
        services
            .add(PubSubBasicInterfaceServer::new(service.clone()))
            .add(StreamInterfaceServer::new(service))
            .add(TimeSeriesBasicInterfaceServer::new(timeseries));
    }

    async fn initialize(&self, config: KafkaConfig, ctx: &Context) -> Result<(), CoreError> {
        check_vault(&config, ctx)?;
        if !ctx.vault.enabled()
            && config.security_protocol.uses_sasl()
            && config.sasl.username.is_empty()
        {
            return Err(CoreError::config(format!(
                "`backend.sasl.username`: required with security_protocol {} \
                 (or take it from Vault: a `vault.secret` of engine kv2)",
                config.security_protocol.as_str()
            )));
        }
        let mut tasks = self.tasks.lock().await;
        let connect = connector(config.clone(), self.streams.clone());
        let plain = async { Ok(Backend::connect(&config, None).await?) };
        // The old producer (if any) is closed on a blocking thread once the
        // last in-flight user releases it (see `Backend`'s `Drop`). Running
        // streams keep their own consumers (a rotation rebuilds them).
        self.backend.initialize(ctx, connect, plain).await?;
        self.streams.attach(&ctx.shutdown);
        tasks.context = Some(ctx.clone());
        Ok(())
    }

    /// Starts the producer rebuilder (once: Start may come again after a
    /// re-initialize; the rebuilder follows whatever backend is current).
    async fn start(&self) -> Result<(), CoreError> {
        let mut tasks = self.tasks.lock().await;
        if tasks.rebuilder.is_none()
            && let Some(ctx) = &tasks.context
        {
            let rebuilder = Rebuilder::spawn(self.backend.slot(), self.rebuilds.clone(), ctx);
            tasks.rebuilder = Some(rebuilder);
        }
        Ok(())
    }

    async fn health(&self) -> HealthReport {
        self.backend
            .health(|backend| self.backend_health(backend))
            .await
    }

    /// Ends every Subscribe, Tail and Consume stream cleanly: each stores the
    /// offsets it handed over (Subscribe) or that were acknowledged (Consume),
    /// leaves its group (which commits them) and closes its response with OK.
    async fn drain(&self) -> Result<(), CoreError> {
        let running = self.streams.len();
        let left = self.streams.drain(STREAM_DRAIN_TIMEOUT).await;
        if left > 0 {
            tracing::warn!(
                running,
                left,
                "streams still closing after the drain timeout"
            );
        } else {
            tracing::info!(closed = running, "streams closed");
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), CoreError> {
        let mut tasks = self.tasks.lock().await;
        // The rebuilder first, so it cannot swap a new producer in after
        // the backend is taken below.
        if let Some(rebuilder) = tasks.rebuilder.take() {
            rebuilder.stop().await;
        }
        tasks.context = None;
        let stopped = self.backend.stop().await;
        // Streams first (they commit through their own consumers), then the
        // producer: closing it flushes and joins librdkafka's threads, which
        // the last holder does on a blocking thread (see `Backend`'s `Drop`).
        self.streams.drain(STREAM_DRAIN_TIMEOUT).await;
        stopped.close().await;
        Ok(())
    }
}
