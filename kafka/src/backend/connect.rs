//! Creating the clients: the settings every client shares (bootstrap,
//! security, backoff, the `librdkafka` passthrough), the producer's and the
//! consumers' own, the producer and admin client themselves, and the
//! metadata round trip that proves a broker answers. Also the rebuild of a
//! backend whose producer failed for good.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::producer::FutureProducer;

use prism_plugin_core::rotation::AuthHook;

use super::Backend;
use super::context::LogContext;
use super::health::HEALTH_TIMEOUT;
use crate::config::KafkaConfig;
use crate::error::Error;

/// librdkafka backs off reconnects exponentially up to 10 s by default; capped
/// lower so a broker that comes back is used (and reported) within about a second.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";
/// Room for the record framing, key and headers on top of `max_payload_bytes`
/// in librdkafka's `message.max.bytes`.
const FRAMING_ROOM: usize = 64 * 1024;
/// A stream's consumer must be polled within this interval or it leaves its
/// group; paused streams poll for events well within it.
const MAX_POLL_INTERVAL_MS: &str = "60000";

/// The client settings of one backend: shared (the admin client's), the
/// producer's and the base every consumer starts from.
struct Clients {
    common: ClientConfig,
    producer: ClientConfig,
    consumer_base: ClientConfig,
}

impl Backend {
    /// Creates the producer and admin client and waits (up to
    /// `metadata_timeout`) for the cluster to answer a metadata request.
    /// `Error::Client` for settings librdkafka rejects; `Error::Unreachable`
    /// when no broker answers.
    pub(crate) async fn connect(
        config: &KafkaConfig,
        vault: Option<(u64, AuthHook)>,
    ) -> Result<Self, Error> {
        Self::connect_within(config, vault, config.metadata_timeout).await
    }

    /// A new backend (new producer and admin client, same settings and
    /// credentials) to replace this one after a fatal producer error;
    /// checked with a metadata round trip like [`Backend::connect`], but
    /// within the health probe's bound (at most 1 s) so the rebuilder's
    /// attempts stay short and it retries soon when the broker is not back.
    pub(crate) async fn rebuild(&self) -> Result<Backend, Error> {
        let vault = self.auth_hook.clone().map(|hook| (self.generation, hook));
        Backend::connect_within(&self.config, vault, self.health_timeout).await
    }

    /// [`connect`](Self::connect) with the first metadata round trip bounded
    /// by `check` instead of `metadata_timeout`.
    async fn connect_within(
        config: &KafkaConfig,
        vault: Option<(u64, AuthHook)>,
        check: Duration,
    ) -> Result<Self, Error> {
        let (generation, auth_hook) = match vault {
            Some((generation, hook)) => (generation, Some(hook)),
            None => (0, None),
        };
        let brokers = config.brokers.join(",");
        let clients = Clients::new(config, &brokers);
        let producer_log = LogContext::default();
        let producer: FutureProducer<LogContext> = clients
            .producer
            .create_with_context(producer_log.sharing_errors())
            .map_err(Error::Client)?;
        let admin: AdminClient<LogContext> = clients
            .common
            .create_with_context(LogContext::default())
            .map_err(Error::Client)?;
        let backend = Backend {
            producer: Some(producer),
            producer_log,
            admin: Some(admin),
            consumer_base: clients.consumer_base,
            brokers,
            health_timeout: config.metadata_timeout.min(HEALTH_TIMEOUT),
            metadata_timeout: config.metadata_timeout,
            degraded_latency: config.degraded_latency,
            produce_timeout: config.produce_timeout,
            max_payload_bytes: config.max_payload_bytes,
            auto_create_topics: config.auto_create_topics,
            default_partitions: config.default_partitions,
            replication_factor: config.replication_factor,
            default_topic: config.topic.clone(),
            consumer_group: config.consumer_group.clone(),
            stream_buffer: config.stream_buffer,
            known_topics: Mutex::new(HashSet::new()),
            generation,
            auth_hook,
            config: config.clone(),
            state: Default::default(),
        };
        let info = backend.metadata(check).await?;
        tracing::info!(
            bootstrap = %backend.brokers,
            brokers = info.brokers,
            idempotent = config.idempotent(),
            "connected to kafka"
        );
        Ok(backend)
    }
}

impl Clients {
    /// The settings `config` asks for, with `brokers` as the bootstrap list;
    /// the `librdkafka` passthrough is applied last, to every client.
    fn new(config: &KafkaConfig, brokers: &str) -> Self {
        let mut common = ClientConfig::new();
        common
            .set("bootstrap.servers", brokers)
            .set("client.id", &config.client_id)
            .set("security.protocol", config.security_protocol.librdkafka())
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            .set_log_level(
                if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
                    RDKafkaLogLevel::Debug
                } else {
                    RDKafkaLogLevel::Warning
                },
            );
        apply_security(config, &mut common);
        let mut producer = common.clone();
        producer
            .set("acks", &config.acks)
            .set("enable.idempotence", config.idempotent().to_string())
            .set("compression.type", &config.compression)
            .set(
                "message.timeout.ms",
                config.produce_timeout.as_millis().max(1).to_string(),
            )
            .set(
                "message.max.bytes",
                (config.max_payload_bytes + FRAMING_ROOM).to_string(),
            )
            // Topics are created by the admin client with the configured
            // partitions, never implicitly by a metadata request.
            .set("allow.auto.create.topics", "false");
        let mut consumer_base = common.clone();
        consumer_base
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().max(1).to_string(),
            )
            .set(
                "queued.max.messages.kbytes",
                config.fetch_buffer_kbytes.to_string(),
            )
            .set("max.poll.interval.ms", MAX_POLL_INTERVAL_MS)
            .set(
                "auto.commit.interval.ms",
                config.commit_interval.as_millis().max(1).to_string(),
            )
            .set("allow.auto.create.topics", "false");
        for (key, value) in &config.librdkafka {
            producer.set(key, value);
            consumer_base.set(key, value);
            common.set(key, value);
        }
        Clients {
            common,
            producer,
            consumer_base,
        }
    }
}

/// TLS and SASL settings of every client (`backend.tls`, `backend.sasl`).
/// With Vault, the plugin has already put the Vault credentials into
/// `config.sasl` and a rotated client certificate into `config.client_identity`.
fn apply_security(config: &KafkaConfig, client: &mut ClientConfig) {
    let protocol = config.security_protocol;
    if protocol.uses_tls() {
        let tls = &config.tls;
        if let Some(ca) = &tls.ca_file {
            client.set("ssl.ca.location", ca.to_string_lossy());
        }
        // A certificate from a rotation replaces the configured files.
        if let Some(identity) = &config.client_identity {
            identity.apply(client);
        } else {
            if let Some(cert) = &tls.cert_file {
                client.set("ssl.certificate.location", cert.to_string_lossy());
            }
            if let Some(key) = &tls.key_file {
                client.set("ssl.key.location", key.to_string_lossy());
            }
        }
        if !tls.key_password.is_empty() {
            client.set("ssl.key.password", &tls.key_password);
        }
        client.set(
            "ssl.endpoint.identification.algorithm",
            if tls.verify_hostname { "https" } else { "none" },
        );
    }
    if protocol.uses_sasl() {
        client
            .set("sasl.mechanism", &config.sasl.mechanism)
            .set("sasl.username", &config.sasl.username)
            .set("sasl.password", &config.sasl.password);
    }
}
