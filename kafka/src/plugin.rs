//! The `Plugin` implementation: wires the Kafka backend, the data services,
//! the producer rebuilder and (with Vault) the SASL credential rotation into
//! core's lifecycle (initialize, start, health, drain, stop).

use std::sync::Arc;
use std::time::Duration;

use prism_plugin_core::probe;
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_server::PubSubBasicInterfaceServer;
use prism_plugin_core::proto::pubsub::stream_interface_server::StreamInterfaceServer;
use prism_plugin_core::proto::timeseries::time_series_basic_interface_server::TimeSeriesBasicInterfaceServer;
use prism_plugin_core::proto::{PUBSUB_BASIC_PROTO, PUBSUB_STREAM_PROTO, TIMESERIES_BASIC_PROTO};
use prism_plugin_core::rotation::Connect;
use prism_plugin_core::vault::{Credentials, SecretEngine};
use prism_plugin_core::{
    BackendConfig, Context, Error as CoreError, HealthReport, HealthStatus, Interface,
    ManifestSource, Plugin, Rotated, ServiceRegistry,
};

use crate::backend::Backend;
use crate::config::{KafkaConfig, SecurityProtocol};
use crate::identity::ClientIdentity;
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

/// Builds a backend whose credentials come from one Vault KV v2 version:
/// SASL (`username`, `password`, optional `mechanism`) when the protocol uses
/// SASL, and/or a TLS client certificate (`certificate` + `private_key` PEM,
/// or `cert_file` + `key_file`; see [`ClientIdentity`]); connecting checks
/// them with a metadata round trip. On success the group streams are told to
/// rebuild their consumers with them (the rotation swaps the backend in
/// right after this returns; streams wait for it).
fn connector(config: KafkaConfig, streams: Arc<StreamSet>) -> Connect<Backend> {
    Arc::new(move |creds, hook| {
        let mut config = config.clone();
        let streams = streams.clone();
        Box::pin(async move {
            apply_credentials(&mut config, &creds)?;
            let generation = creds.generation;
            let backend = Backend::connect(&config, Some((generation, hook))).await?;
            streams.credentials_changed(generation);
            Ok(backend)
        })
    })
}

/// Puts one credential set into `config`; every problem names its field,
/// never a value.
fn apply_credentials(config: &mut KafkaConfig, creds: &Credentials) -> Result<(), CoreError> {
    let protocol = config.security_protocol;
    let mut problems = Vec::new();
    if protocol.uses_sasl() {
        config.sasl.username = creds.username.clone();
        config.sasl.password = creds.password.clone();
        if let Some(mechanism) = creds.extra.get("mechanism") {
            config.sasl.mechanism = mechanism.clone();
        }
        if config.sasl.username.is_empty() {
            problems.push("`vault.secret`: the KV v2 secret has no `username` field".to_string());
        }
    }
    match ClientIdentity::of(creds) {
        Ok(Some(_)) if !protocol.uses_tls() => problems.push(format!(
            "`vault.secret`: the secret carries a client certificate, but \
             `backend.security_protocol` is {} (use ssl or sasl_ssl)",
            protocol.as_str()
        )),
        Ok(Some(identity)) => config.client_identity = Some(identity),
        Ok(None) if !protocol.uses_sasl() => problems.push(
            "`vault.secret`: with security_protocol ssl the secret must carry a client \
             certificate (`certificate` and `private_key`)"
                .to_string(),
        ),
        Ok(None) => {}
        Err(problem) => problems.push(format!("`vault.secret`: {problem}")),
    }
    problems.extend(
        config
            .validate()
            .into_iter()
            .map(|p| format!("from the Vault secret: {p}")),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Config(problems))
    }
}

/// Vault-specific configuration problems.
fn check_vault(config: &KafkaConfig, ctx: &Context) -> Result<(), CoreError> {
    let Some(secret) = &ctx.vault.secret else {
        return Ok(());
    };
    let mut problems = Vec::new();
    match secret.engine {
        SecretEngine::Kv2 => {}
        // A PKI certificate is a TLS identity only: no SASL user comes with it.
        SecretEngine::Pki if config.security_protocol == SecurityProtocol::Ssl => {}
        SecretEngine::Pki => problems.push(
            "`vault.secret.engine`: a pki certificate needs `backend.security_protocol: ssl` \
             (SASL credentials come from a kv2 secret)"
                .into(),
        ),
        SecretEngine::Database => problems.push(
            "`vault.secret.engine`: prism-kafka reads SASL credentials or a client \
             certificate from a kv2 secret, or a certificate from the pki engine"
                .into(),
        ),
    }
    // SASL credentials need a SASL protocol; with `ssl` the secret must
    // carry a client certificate instead.
    if config.security_protocol == SecurityProtocol::Plaintext {
        problems.push(
            "`backend.security_protocol`: plaintext uses no credentials from Vault; \
             use sasl_plaintext, sasl_ssl, or ssl with a client certificate in the secret"
                .to_string(),
        );
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
            .detail("client_certificate", backend.client_certificate())
    }
}

/// Health of a working backend: a metadata round trip, its latency and the
/// producer queue.
async fn cluster_health(backend: &Backend) -> HealthReport {
    let health = backend.health().await;
    backend.broker_answers(health.is_ok());
    match health {
        Ok(info) => {
            let queued = (info.queued > backend.queue_degraded()).then(|| {
                format!(
                    "{} messages wait in the producer queue (over {})",
                    info.queued,
                    backend.queue_degraded()
                )
            });
            let (latency, limit) = (info.latency, backend.degraded_latency());
            probe::answered(
                "kafka metadata",
                latency,
                limit,
                queued,
                "kafka cluster answers",
            )
            .detail("brokers", info.brokers)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(username: &str, extra: &[(&str, &str)]) -> Credentials {
        Credentials {
            username: username.into(),
            password: "pw-never-shown-81c3".into(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            generation: 1,
            lease: None,
            certificate: None,
        }
    }

    fn config(protocol: SecurityProtocol) -> KafkaConfig {
        KafkaConfig {
            security_protocol: protocol,
            ..KafkaConfig::default()
        }
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nkey-body-never-shown\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_secret_sets_sasl_and_or_a_client_certificate_by_protocol() {
        let mut sasl = config(SecurityProtocol::SaslSsl);
        let set = creds("alice", &[("mechanism", "SCRAM-SHA-256")]);
        apply_credentials(&mut sasl, &set).expect("sasl");
        assert_eq!(sasl.sasl.username, "alice");
        assert_eq!(sasl.sasl.mechanism, "SCRAM-SHA-256");
        assert!(sasl.client_identity.is_none());

        let mut ssl = config(SecurityProtocol::Ssl);
        let set = creds("", &[("certificate", CERT), ("private_key", KEY)]);
        apply_credentials(&mut ssl, &set).expect("certificate");
        assert!(ssl.client_identity.is_some());
        assert!(ssl.sasl.username.is_empty(), "ssl takes no SASL user");
    }

    #[test]
    fn a_secret_that_does_not_fit_the_protocol_is_refused_by_field_name() {
        let cases = [
            (SecurityProtocol::Ssl, creds("u", &[])),
            (SecurityProtocol::SaslPlaintext, creds("", &[])),
            (
                SecurityProtocol::SaslPlaintext,
                creds("u", &[("certificate", CERT), ("private_key", KEY)]),
            ),
            (SecurityProtocol::Ssl, creds("", &[("certificate", CERT)])),
        ];
        for (protocol, set) in cases {
            let err = apply_credentials(&mut config(protocol), &set).expect_err("refused");
            let text = err.to_string();
            assert!(text.contains("`vault.secret`"), "{text}");
            assert!(!text.contains("never-shown"), "{text}");
        }
    }
}
