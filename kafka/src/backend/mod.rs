//! The Kafka client: one configured cluster's producer, admin client and
//! consumer settings, and the API the service, streams, plugin and
//! rebuilder call. Knows nothing about gRPC.
//!
//! Its files, each an `impl Backend` block or a piece it holds: `connect`
//! (client settings, the clients, rebuild), `health` (metadata probe, whether
//! the producer can publish), `state` (the evidence that it cannot), `topics`
//! (lookup and creation), `produce` (publish), `consumer` (group members and
//! tails), `series` (TimeSeries records, offsets and partition readers) and
//! `context` (librdkafka's callbacks: logs, errors, commits).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;

use prism_plugin_core::rotation::{AuthHook, Drain};

use crate::config::KafkaConfig;
use context::LogContext;
use state::ProducerState;

mod connect;
mod consumer;
mod context;
mod health;
mod produce;
mod series;
mod state;
mod topics;

pub(crate) use consumer::header_strings;
pub(crate) use context::{CommitReports, StreamContext};
pub(crate) use produce::check_record_size;
pub(crate) use series::{SeriesReader, Span, new_event_id};

/// Header carrying the plugin-assigned message id; stripped from `metadata`
/// on the way out.
pub(crate) const MESSAGE_ID_HEADER: &str = "prism-message-id";

/// One configured cluster: the producer, the admin client, and the settings
/// every consumer is created with.
pub(crate) struct Backend {
    /// `Some` until dropped; see the `Drop` impl for why it is an `Option`.
    producer: Option<FutureProducer<LogContext>>,
    /// Reads the producer's recorded errors (same shared state as its context).
    producer_log: LogContext,
    /// Creates topics when `auto_create_topics` is on; dropped like the producer.
    admin: Option<AdminClient<LogContext>>,
    /// Shared client settings (bootstrap, security, passthrough) for consumers.
    consumer_base: ClientConfig,
    /// The bootstrap list, for messages.
    brokers: String,
    /// `metadata_timeout`, capped at the health probe's bound (1 s).
    health_timeout: Duration,
    metadata_timeout: Duration,
    degraded_latency: Duration,
    produce_timeout: Duration,
    max_payload_bytes: usize,
    auto_create_topics: bool,
    default_partitions: i32,
    replication_factor: i16,
    default_topic: String,
    consumer_group: String,
    stream_buffer: usize,
    /// Topics known to exist, so a publish costs no metadata round trip.
    known_topics: Mutex<HashSet<String>>,
    /// Generation of the Vault credentials this backend was built with (0
    /// without Vault); streams rebuild their consumers from a backend of at
    /// least the generation they were told about.
    generation: u64,
    /// Reports rejected Vault credentials to the rotation task.
    auth_hook: Option<AuthHook>,
    /// What this backend was built from (Vault credentials included), so a
    /// producer that failed fatally can be replaced by an identical one.
    config: KafkaConfig,
    /// Whether the producer can still publish; see [`Backend::broken`].
    state: ProducerState,
}

/// The outcome of a successful metadata round trip.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterInfo {
    /// Brokers the cluster reported.
    pub(crate) brokers: usize,
    /// How long the request took.
    pub(crate) latency: Duration,
    /// Messages in the producer queue not yet acknowledged.
    pub(crate) queued: i32,
}

/// Where a stream starts reading.
#[derive(Debug, Clone)]
pub(crate) enum Start {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// The first message at or after this time (epoch ms), per partition.
    Timestamp(i64),
    /// Explicit first offsets; unlisted partitions are not read.
    Offsets(Vec<(i32, i64)>),
}

/// A published message's coordinates.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// The id assigned by the plugin (also in the `prism-message-id` header).
    pub(crate) message_id: String,
}

/// A consumer for one stream, with the context its callbacks report into.
pub(crate) type KafkaConsumer = StreamConsumer<StreamContext>;

impl Backend {
    /// Generation of the Vault credentials in use (0 without Vault).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The configured bootstrap list.
    pub(crate) fn bootstrap(&self) -> &str {
        &self.brokers
    }

    /// Where the TLS client certificate comes from (health detail
    /// `client_certificate`): `rotated-pem`/`rotated-files` (from a
    /// credential rotation), `files` (`backend.tls`), `none`.
    pub(crate) fn client_certificate(&self) -> &'static str {
        match &self.config.client_identity {
            Some(identity) if identity.kind() == "pem" => "rotated-pem",
            Some(_) => "rotated-files",
            None if self.config.tls.cert_file.is_some() => "files",
            None => "none",
        }
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// `backend.topic`: used when a request names no topic.
    pub(crate) fn default_topic(&self) -> &str {
        &self.default_topic
    }

    /// `backend.consumer_group`: the group of a subscription that names none.
    pub(crate) fn default_group(&self) -> &str {
        &self.consumer_group
    }

    /// `backend.max_payload_bytes`.
    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// `backend.stream_buffer`: channel capacity between a consumer and its client.
    pub(crate) fn stream_buffer(&self) -> usize {
        self.stream_buffer
    }
}

/// A backend replaced by a Vault rotation: the rotation hands it over once no
/// request holds it; the producer has nothing in flight then, and dropping it
/// (see `Drop`) flushes and closes on a blocking thread.
impl Drain for Backend {
    async fn close(&self) {}
}

/// Dropping a producer blocks: it purges and flushes (up to 500 ms), joins its
/// polling thread and destroys the librdkafka handle. That must not happen on
/// an async worker thread, so the last owner hands it to a blocking thread.
impl Drop for Backend {
    fn drop(&mut self) {
        let producer = self.producer.take();
        let admin = self.admin.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop((producer, admin)));
            }
            Err(_) => drop((producer, admin)),
        }
    }
}
