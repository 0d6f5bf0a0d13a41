//! The `backend:` section of `prism-kafka`'s configuration, its defaults and its
//! pure validation (no I/O).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use prism_plugin_core::BackendConfig;
use prism_plugin_core::secret::SecretString;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::identity::ClientIdentity;

mod timeseries;

pub(crate) use timeseries::TimeSeriesConfig;

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;
/// librdkafka refuses a `message.max.bytes` above 1e9; framing room is added to ours.
const MAX_PAYLOAD_LIMIT: usize = 900_000_000;

/// How the client talks to the brokers (`security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The config-file spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// librdkafka's `security.protocol` value.
    pub(crate) fn librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// True for `ssl` and `sasl_ssl`.
    pub(crate) fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// True for `sasl_plaintext` and `sasl_ssl`.
    pub(crate) fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `backend:` for Kafka. Every key has a default, so a partial file works.
/// `Debug` shows no password (see [`SaslConfig`] and [`TlsConfig`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers as `host:port`: a list, or one comma-separated string
    /// (`KAFKA_BROKERS`).
    #[serde(deserialize_with = "string_or_list")]
    pub(crate) brokers: Vec<String>,
    /// Default topic for requests that name none; empty means requests must name one (`KAFKA_TOPIC`).
    pub(crate) topic: String,
    /// Consumer group of subscriptions (`KAFKA_CONSUMER_GROUP`).
    pub(crate) consumer_group: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub(crate) security_protocol: SecurityProtocol,
    /// TLS settings (used with `ssl` / `sasl_ssl`).
    pub(crate) tls: TlsConfig,
    /// SASL credentials (used with `sasl_plaintext` / `sasl_ssl`).
    pub(crate) sasl: SaslConfig,
    /// Not a config key: a client certificate handed over by a credential
    /// rotation (the Vault secret's `certificate`/`private_key`), used
    /// instead of `tls.cert_file`/`key_file` while set.
    #[serde(skip)]
    pub(crate) client_identity: Option<ClientIdentity>,
    /// `client.id` the brokers see in their logs and quotas.
    pub(crate) client_id: String,
    /// Producer acknowledgements: `all` (or `-1`), `1` or `0`. Only `all` keeps
    /// the producer idempotent (no duplicates on retry).
    #[serde(deserialize_with = "string_or_number")]
    pub(crate) acks: String,
    /// Consumer group session timeout. Keep it short: some brokers (tansu) hold
    /// a JoinGroup reply for half of it, delaying every new subscriber.
    #[serde(with = "humantime_serde")]
    pub(crate) session_timeout: Duration,
    /// Create a missing topic on first use.
    pub(crate) auto_create_topics: bool,
    /// Partitions of topics the plugin creates.
    pub(crate) default_partitions: i32,
    /// Replication factor of topics the plugin creates.
    pub(crate) replication_factor: i16,
    /// Longest wait for cluster metadata when connecting; health checks use at
    /// most 1s of it so they stay inside core's 1.5 s limit.
    #[serde(with = "humantime_serde")]
    pub(crate) metadata_timeout: Duration,
    /// Health is DEGRADED when a metadata round trip takes longer than this.
    #[serde(with = "humantime_serde")]
    pub(crate) degraded_latency: Duration,
    /// Longest a Publish waits for the broker's acknowledgement (librdkafka
    /// `message.timeout.ms`); past it the Publish fails with UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub(crate) produce_timeout: Duration,
    /// Largest record a Publish may send: payload + partition key + metadata
    /// (also librdkafka's `message.max.bytes`, plus room for framing).
    pub(crate) max_payload_bytes: usize,
    /// Producer compression: `none`, `gzip`, `snappy` or `lz4`.
    pub(crate) compression: String,
    /// Messages a stream holds between Kafka and its gRPC client; when full,
    /// the consumer pauses (backpressure).
    pub(crate) stream_buffer: usize,
    /// Per-consumer prefetch limit in KiB (librdkafka `queued.max.messages.kbytes`):
    /// bounds what a paused stream can hold in memory.
    pub(crate) fetch_buffer_kbytes: usize,
    /// How often Subscribe commits the offsets of messages handed to its
    /// client (librdkafka `auto.commit.interval.ms`); a stream that ends
    /// commits at once.
    #[serde(with = "humantime_serde")]
    pub(crate) commit_interval: Duration,
    /// Extra librdkafka properties for every client (producer and consumers),
    /// applied last, e.g. `{"socket.keepalive.enable": "true"}`. Keys the plugin
    /// owns (group and commit handling, bootstrap, credentials) are refused.
    pub(crate) librdkafka: BTreeMap<String, String>,
    /// The TimeSeries abstraction (Insert, Query); see its README section.
    pub(crate) timeseries: TimeSeriesConfig,
}

/// librdkafka properties the plugin sets itself because its guarantees depend
/// on them; `backend.librdkafka` may not override them.
const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
];

/// `backend.tls`: how the client verifies the brokers (and, optionally,
/// authenticates itself with a certificate). Files are PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// CA bundle that signs the brokers' certificates (librdkafka
    /// `ssl.ca.location`); unset = the system trust store.
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    /// Client certificate for TLS client authentication (`ssl.certificate.location`).
    #[serde(default)]
    pub(crate) cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (`ssl.key.location`).
    #[serde(default)]
    pub(crate) key_file: Option<PathBuf>,
    /// Password of an encrypted `key_file` (`ssl.key.password`); never logged.
    #[serde(default)]
    pub(crate) key_password: SecretString,
    /// Check that the broker's certificate names the host dialled
    /// (`ssl.endpoint.identification.algorithm=https`). Default on.
    #[serde(default = "default_true")]
    pub(crate) verify_hostname: bool,
}

fn default_true() -> bool {
    true
}

// By hand, not derived: the built-in defaults layer serialises this, and a derived
// `bool` default would turn hostname verification off where the docs promise on.
impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_password: SecretString::default(),
            verify_hostname: default_true(),
        }
    }
}

impl TlsConfig {
    /// True when any key of the section was set (a TLS section with a
    /// plaintext protocol is a mistake worth reporting).
    fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || !self.key_password.is_empty()
    }
}

/// `backend.sasl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub(crate) mechanism: String,
    /// User name (`KAFKA_SASL_USERNAME`).
    pub(crate) username: String,
    /// Password (`KAFKA_SASL_PASSWORD`). Never logged.
    pub(crate) password: SecretString,
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig {
            mechanism: "SCRAM-SHA-512".to_string(),
            username: String::new(),
            password: SecretString::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["localhost:9092".to_string()],
            topic: String::new(),
            consumer_group: "prism".to_string(),
            security_protocol: SecurityProtocol::default(),
            tls: TlsConfig::default(),
            sasl: SaslConfig::default(),
            client_identity: None,
            client_id: "prism-kafka".to_string(),
            acks: "all".to_string(),
            session_timeout: Duration::from_secs(6),
            auto_create_topics: true,
            default_partitions: 3,
            replication_factor: 1,
            metadata_timeout: Duration::from_secs(1),
            degraded_latency: Duration::from_millis(200),
            produce_timeout: Duration::from_secs(10),
            max_payload_bytes: 1_000_000,
            compression: "none".to_string(),
            stream_buffer: 64,
            fetch_buffer_kbytes: 2048,
            commit_interval: Duration::from_secs(1),
            librdkafka: BTreeMap::new(),
            timeseries: Default::default(),
        }
    }
}

impl BackendConfig for KafkaConfig {
    /// Every problem with this config, each starting with its key. Pure: no I/O.
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.brokers.is_empty() {
            problems.push("`backend.brokers`: name at least one `host:port`".to_string());
        }
        for (i, broker) in self.brokers.iter().enumerate() {
            if let Err(problem) = check_broker(broker) {
                problems.push(format!("`backend.brokers[{i}]`: {problem}"));
            }
        }
        if !self.topic.is_empty()
            && let Err(problem) = check_topic(&self.topic)
        {
            problems.push(format!("`backend.topic`: {problem}"));
        }
        if self.consumer_group.trim().is_empty() {
            problems.push("`backend.consumer_group`: must not be empty".to_string());
        }
        if self.tls.is_set() && !self.security_protocol.uses_tls() {
            problems.push(format!(
                "`backend.tls`: set, but `backend.security_protocol` is {} (use ssl or sasl_ssl)",
                self.security_protocol.as_str()
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            problems.push(
                "`backend.tls.cert_file`: cert_file and key_file must be set together".to_string(),
            );
        }
        if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&self.sasl.mechanism.as_str()) {
            problems.push(format!(
                "`backend.sasl.mechanism`: {:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
                self.sasl.mechanism
            ));
        }
        if self.client_id.is_empty() || !self.client_id.chars().all(|c| c.is_ascii_graphic()) {
            problems.push(
                "`backend.client_id`: must be non-empty printable ASCII without spaces".to_string(),
            );
        }
        if !["all", "-1", "0", "1"].contains(&self.acks.as_str()) {
            problems.push(format!(
                "`backend.acks`: {:?} is not one of all, -1, 1, 0",
                self.acks
            ));
        }
        if self.session_timeout < Duration::from_millis(1)
            || self.session_timeout > Duration::from_secs(3600)
        {
            problems.push("`backend.session_timeout`: must be between 1ms and 1h".to_string());
        }
        if self.default_partitions < 1 {
            problems.push("`backend.default_partitions`: must be at least 1".to_string());
        }
        if self.replication_factor < 1 {
            problems.push("`backend.replication_factor`: must be at least 1".to_string());
        }
        for (key, value) in [
            ("metadata_timeout", self.metadata_timeout),
            ("degraded_latency", self.degraded_latency),
            ("produce_timeout", self.produce_timeout),
            ("commit_interval", self.commit_interval),
        ] {
            if value < Duration::from_millis(1) {
                problems.push(format!("`backend.{key}`: must be at least 1ms"));
            }
        }
        // librdkafka's own bounds (message.max.bytes ≤ 1e9, ms values fit i32).
        if !(1..=MAX_PAYLOAD_LIMIT).contains(&self.max_payload_bytes) {
            problems.push(format!(
                "`backend.max_payload_bytes`: must be between 1 and {MAX_PAYLOAD_LIMIT}"
            ));
        }
        if !["none", "gzip", "snappy", "lz4"].contains(&self.compression.as_str()) {
            problems.push(format!(
                "`backend.compression`: {:?} is not one of none, gzip, snappy, lz4 \
                 (zstd is not built in)",
                self.compression
            ));
        }
        if !(1..=100_000).contains(&self.stream_buffer) {
            problems.push("`backend.stream_buffer`: must be between 1 and 100000".to_string());
        }
        if !(1..=2_097_151).contains(&self.fetch_buffer_kbytes) {
            problems
                .push("`backend.fetch_buffer_kbytes`: must be between 1 and 2097151".to_string());
        }
        problems.extend(self.timeseries.validate());
        for key in self.librdkafka.keys() {
            if key.trim().is_empty() {
                problems.push("`backend.librdkafka`: property names must not be empty".to_string());
            } else if OWNED_PROPERTIES.contains(&key.as_str()) {
                problems.push(format!(
                    "`backend.librdkafka.{key}`: set by the plugin itself; use the matching \
                     `backend` key instead"
                ));
            }
        }
        problems
    }
}

impl KafkaConfig {
    /// True when the producer can be idempotent: librdkafka requires `acks=all`.
    pub(crate) fn idempotent(&self) -> bool {
        matches!(self.acks.as_str(), "all" | "-1")
    }
}

/// `host:port` with a non-empty host and a port from 1 to 65535.
fn check_broker(broker: &str) -> Result<(), String> {
    let Some((host, port)) = broker.rsplit_once(':') else {
        return Err(format!("{broker:?} is not `host:port`"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@,".contains(c)) {
        return Err(format!("{broker:?} is not `host:port`"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("{broker:?}: port must be a number from 1 to 65535")),
    }
}

/// Kafka's topic name rules: 1-249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    let legal = topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !legal || topic == "." || topic == ".." || topic.len() > MAX_TOPIC_LEN {
        Err(format!(
            "{topic:?} is not a valid topic name (1-{MAX_TOPIC_LEN} of [A-Za-z0-9._-], not `.` or `..`)"
        ))
    } else {
        Ok(())
    }
}

/// Splits `a:1, b:2` into trimmed, non-empty entries.
fn split_brokers(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
}

/// `brokers` as a list (`[a:1, b:2]`) or as the comma-separated string the
/// `KAFKA_BROKERS` convention uses (`a:1,b:2`).
fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct BrokersVisitor;

    impl<'de> Visitor<'de> for BrokersVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of `host:port` strings or one comma-separated string")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(split_brokers(s).collect())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut brokers = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                brokers.extend(split_brokers(&item));
            }
            Ok(brokers)
        }
    }

    deserializer.deserialize_any(BrokersVisitor)
}

/// `acks` as a string or a bare number (`acks: 1` in YAML is an integer).
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct AcksVisitor;

    impl Visitor<'_> for AcksVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("`all`, -1, 1 or 0")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(s.trim().to_ascii_lowercase())
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Ok(n.to_string())
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(n.to_string())
        }
    }

    deserializer.deserialize_any(AcksVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL_EXAMPLE: &str = r#"
brokers: ["kafka-0.kafka:9092", "kafka-1.kafka:9092"]
topic: events
consumer_group: billing
security_protocol: plaintext
sasl:
  mechanism: SCRAM-SHA-256
  username: prism
  password: s3cret
client_id: prism-kafka-eu
acks: 1
session_timeout: 10s
auto_create_topics: false
default_partitions: 6
replication_factor: 3
metadata_timeout: 2s
degraded_latency: 100ms
produce_timeout: 3s
max_payload_bytes: 2000000
compression: lz4
stream_buffer: 16
fetch_buffer_kbytes: 512
commit_interval: 250ms
librdkafka:
  socket.keepalive.enable: "true"
"#;

    #[test]
    fn parses_a_full_example() {
        let config: KafkaConfig = serde_yaml::from_str(FULL_EXAMPLE).expect("parses");
        assert_eq!(config.brokers, ["kafka-0.kafka:9092", "kafka-1.kafka:9092"]);
        assert_eq!(config.topic, "events");
        assert_eq!(config.consumer_group, "billing");
        assert_eq!(config.security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(config.acks, "1");
        assert!(!config.idempotent());
        assert_eq!(config.session_timeout, Duration::from_secs(10));
        assert!(!config.auto_create_topics);
        assert_eq!(config.default_partitions, 6);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.metadata_timeout, Duration::from_secs(2));
        assert_eq!(config.degraded_latency, Duration::from_millis(100));
        assert_eq!(config.produce_timeout, Duration::from_secs(3));
        assert_eq!(config.max_payload_bytes, 2_000_000);
        assert_eq!(config.compression, "lz4");
        assert_eq!(config.stream_buffer, 16);
        assert_eq!(config.fetch_buffer_kbytes, 512);
        assert_eq!(config.commit_interval, Duration::from_millis(250));
        assert_eq!(
            config
                .librdkafka
                .get("socket.keepalive.enable")
                .map(String::as_str),
            Some("true")
        );
        assert!(config.validate().is_empty(), "{:?}", config.validate());
    }

    #[test]
    fn partial_yaml_gets_defaults() {
        let config: KafkaConfig = serde_yaml::from_str("topic: t").expect("parses");
        assert_eq!(config.brokers, ["localhost:9092"]);
        assert_eq!(config.acks, "all");
        assert!(config.idempotent());
        assert_eq!(config.session_timeout, Duration::from_secs(6));
        assert!(config.validate().is_empty());
    }

    #[test]
    fn brokers_accept_a_comma_separated_string() {
        let config: KafkaConfig = serde_yaml::from_str("brokers: 'a:1, b:2,,'").expect("parses");
        assert_eq!(config.brokers, ["a:1", "b:2"]);
        assert!(config.validate().is_empty());
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_yaml::from_str::<KafkaConfig>("broker: x:1").expect_err("rejected");
        assert!(err.to_string().contains("broker"), "{err}");
    }

    #[test]
    fn unknown_security_protocol_is_a_type_error() {
        assert!(serde_yaml::from_str::<KafkaConfig>("security_protocol: tls").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config = KafkaConfig {
            brokers: vec!["nohost".into()],
            topic: "bad topic".into(),
            tls: TlsConfig {
                ca_file: Some("/ca.pem".into()),
                ..TlsConfig::default()
            },
            acks: "most".into(),
            default_partitions: 0,
            metadata_timeout: Duration::ZERO,
            compression: "zstd".into(),
            librdkafka: [("group.id".to_string(), "x".to_string())].into(),
            ..KafkaConfig::default()
        };
        let problems = config.validate();
        let keys = [
            "`backend.brokers[0]`",
            "`backend.topic`",
            "`backend.tls`",
            "`backend.acks`",
            "`backend.default_partitions`",
            "`backend.metadata_timeout`",
            "`backend.compression`",
            "`backend.librdkafka.group.id`",
        ];
        assert_eq!(problems.len(), keys.len(), "{problems:?}");
        for (problem, key) in problems.iter().zip(keys) {
            assert!(problem.starts_with(key), "{problem}");
        }
        assert!(
            problems[2].contains("use ssl or sasl_ssl"),
            "{}",
            problems[2]
        );
    }

    #[test]
    fn hostname_verification_is_on_by_default() {
        // The defaults layer is built from `Default`, not from serde's field defaults.
        assert!(KafkaConfig::default().tls.verify_hostname);
        assert!(TlsConfig::default().verify_hostname);
    }

    #[test]
    fn tls_section_parses_and_needs_cert_and_key_together() {
        let config: KafkaConfig = serde_yaml::from_str(
            "security_protocol: sasl_ssl\ntls: {ca_file: /ca.pem, cert_file: /c.pem, key_password: kp}\n",
        )
        .expect("parses");
        assert_eq!(config.security_protocol, SecurityProtocol::SaslSsl);
        assert!(config.tls.verify_hostname);
        let problems = config.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("`backend.tls.cert_file`"),
            "{problems:?}"
        );
        assert!(!format!("{config:?}").contains("kp\""));
        assert!(serde_yaml::from_str::<KafkaConfig>("tls: {ca: /x}").is_err());
    }

    #[test]
    fn password_never_reaches_debug_output() {
        let config = KafkaConfig {
            sasl: SaslConfig {
                password: "kafka-secret".into(),
                ..SaslConfig::default()
            },
            ..KafkaConfig::default()
        };
        assert!(!format!("{config:?}").contains("kafka-secret"));
    }
}
