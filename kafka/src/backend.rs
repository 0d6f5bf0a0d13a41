//! The Kafka client: an idempotent `FutureProducer` (publish with headers and
//! a message id), the admin client (topic creation), the consumers streams
//! read from (group members with handoff-driven commits, and group-less
//! tails), the metadata health probe, and the routing of librdkafka's own log
//! lines into `tracing` without flooding while a broker is down. Knows nothing
//! about gRPC.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

use prism_plugin_core::rotation::{AuthHook, Drain};

use crate::config::KafkaConfig;
use crate::error::Error;

/// Longest a health metadata request may take: core gives the whole health
/// check 1.5 s, and the request runs on a blocking thread it cannot cancel.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// librdkafka backs off reconnects exponentially up to 10 s by default; capped
/// lower so a broker that comes back is used (and reported) within about a second.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";
/// How often the same kind of librdkafka warning is logged at WARN; repeats in
/// between go to DEBUG (a broker that is down is reported every ~100 ms otherwise).
const LOG_REPEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Header carrying the plugin-assigned message id; stripped from `metadata`
/// on the way out.
pub(crate) const MESSAGE_ID_HEADER: &str = "prism-message-id";
/// Room for the record framing, key and headers on top of `max_payload_bytes`
/// in librdkafka's `message.max.bytes`.
const FRAMING_ROOM: usize = 64 * 1024;
/// Messages waiting in the producer queue above which health is DEGRADED.
const QUEUE_DEGRADED: i32 = 10_000;
/// Timed-out sends (queued while the broker answered metadata, with no
/// successful send in between) after which an idempotent producer counts as
/// broken: see [`Backend::broker_answers`].
const STUCK_TIMEOUTS: u32 = 3;
/// A stream's consumer must be polled within this interval or it leaves its
/// group; paused streams poll for events well within it.
const MAX_POLL_INTERVAL_MS: &str = "60000";

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
    /// `metadata_timeout`, capped at [`HEALTH_TIMEOUT`].
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
    /// Why the producer can no longer publish (a fencing or sequence error
    /// a send reported); `None` while it works. See [`Backend::broken`].
    broken: Mutex<Option<String>>,
    /// Sends that time out although the broker answers; see
    /// [`Backend::broker_answers`].
    stuck: Mutex<Stuck>,
}

/// Evidence of an idempotent producer the broker no longer accepts, though
/// it answers: sends queued while metadata round trips succeed keep timing out.
#[derive(Default)]
struct Stuck {
    /// Since when health round trips have succeeded without a failure.
    answering_since: Option<Instant>,
    /// Sends queued after `answering_since` that timed out since the last
    /// acknowledged one.
    timeouts: u32,
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
        let mut common = ClientConfig::new();
        common
            .set("bootstrap.servers", &brokers)
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
        let mut producer_config = common.clone();
        producer_config
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
            producer_config.set(key, value);
            consumer_base.set(key, value);
            common.set(key, value);
        }
        let producer_log = LogContext::default();
        let producer: FutureProducer<LogContext> = producer_config
            .create_with_context(producer_log.sharing_errors())
            .map_err(Error::Client)?;
        let admin: AdminClient<LogContext> = common
            .create_with_context(LogContext::default())
            .map_err(Error::Client)?;
        let backend = Backend {
            producer: Some(producer),
            producer_log,
            admin: Some(admin),
            consumer_base,
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
            broken: Mutex::new(None),
            stuck: Mutex::new(Stuck::default()),
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

    /// Generation of the Vault credentials in use (0 without Vault).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The configured bootstrap list.
    pub(crate) fn bootstrap(&self) -> &str {
        &self.brokers
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// Producer queue depth above which health is DEGRADED.
    pub(crate) fn queue_degraded(&self) -> i32 {
        QUEUE_DEGRADED
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

    /// Health probe: a metadata round trip bounded well inside core's limit.
    /// With Vault credentials, a broker that rejects them (revoked, or a
    /// new secret version not picked up yet) asks the rotation for new ones.
    pub(crate) async fn health(&self) -> Result<ClusterInfo, Error> {
        let result = self.metadata(self.health_timeout).await;
        if let (Err(err), Some(hook)) = (&result, &self.auth_hook)
            && is_auth_failure(&err.to_string())
        {
            hook.raise();
        }
        result
    }

    /// The producer, unless it failed fatally: then `Error::Fatal` at once
    /// (UNAVAILABLE), so nothing more is queued on a producer that can
    /// never deliver it.
    fn producer(&self) -> Result<&FutureProducer<LogContext>, Error> {
        let producer = self.producer.as_ref().ok_or(Error::Closed)?;
        if let Some(reason) = self.broken() {
            return Err(Error::Fatal { reason });
        }
        Ok(producer)
    }

    /// Why the producer can no longer publish, if it cannot: librdkafka
    /// raised a fatal error, or a send failed with an error that fences
    /// the idempotent producer for good (seen with tansu after a broker
    /// stall: every later send fails `ProducerFenced`, yet librdkafka does
    /// not flag it fatal). Only a new producer (a new producer id) helps;
    /// the plugin's rebuilder task builds one ([`Backend::rebuild`]).
    pub(crate) fn broken(&self) -> Option<String> {
        if let Some(reason) = self
            .broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(reason);
        }
        let producer = self.producer.as_ref()?;
        producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Records a send error that leaves the producer unusable.
    fn mark_broken(&self, error: &KafkaError) {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if broken.is_none() {
            tracing::error!(
                bootstrap = %self.brokers,
                error = %error,
                "the kafka producer failed fatally; publishes fail UNAVAILABLE until it is rebuilt"
            );
            *broken = Some(error.to_string());
        }
    }

    /// Called by the health probe with the outcome of its metadata round
    /// trip. A broker that answers metadata while every send queued since
    /// then times out ([`STUCK_TIMEOUTS`] in a row) has forgotten the
    /// idempotent producer's id: a restarted tansu answers
    /// `UNKNOWN_PRODUCER_ID`, on which librdkafka bumps the epoch and retries
    /// until `produce_timeout`, forever, reporting only `MessageTimedOut`.
    /// Such a producer is marked broken (and so replaced by the rebuilder,
    /// see [`crate::rebuilder`]). Sends queued before the broker answered
    /// again are not counted: after an ordinary outage they are delivered
    /// or time out as usual.
    pub(crate) fn broker_answers(&self, answers: bool) {
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        if !answers {
            *stuck = Stuck::default();
            return;
        }
        stuck.answering_since.get_or_insert_with(Instant::now);
        if self.config.idempotent() && stuck.timeouts >= STUCK_TIMEOUTS {
            let timeouts = stuck.timeouts;
            drop(stuck);
            let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
            if broken.is_none() {
                tracing::error!(
                    bootstrap = %self.brokers,
                    timeouts,
                    "kafka sends keep timing out while the broker answers (it no longer \
                     knows the idempotent producer's id); publishes fail UNAVAILABLE until \
                     the producer is rebuilt"
                );
                *broken = Some(format!(
                    "{timeouts} sends timed out in a row while the broker answered metadata"
                ));
            }
        }
    }

    /// Counts a send's outcome for [`Backend::broker_answers`]: an ack
    /// resets the count, a timeout of a send queued while the broker
    /// answered adds to it, other errors leave it.
    fn send_outcome<T, U>(&self, queued: Instant, sent: &Result<T, (KafkaError, U)>) {
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        match sent {
            Ok(_) => stuck.timeouts = 0,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _))
                if stuck.answering_since.is_some_and(|since| queued >= since) =>
            {
                stuck.timeouts += 1;
            }
            Err(_) => {}
        }
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

    /// The producer's latest broker connection error, if recent.
    fn recent_error(&self) -> Option<String> {
        self.producer_log.recent_error()
    }

    /// Fetches cluster metadata (brokers and topics) on a blocking thread:
    /// librdkafka's call blocks until the answer or the timeout.
    async fn metadata(&self, timeout: Duration) -> Result<ClusterInfo, Error> {
        let producer = self.producer()?.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let queued = producer.in_flight_count();
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| (metadata.brokers().len(), queued))
        })
        .await
        .map_err(Error::Task)?;
        match result {
            Ok((brokers, queued)) => Ok(ClusterInfo {
                brokers,
                latency: started.elapsed(),
                queued,
            }),
            Err(source) => Err(Error::Unreachable {
                brokers: self.brokers.clone(),
                source,
                cause: self.recent_error().map(String::into_boxed_str),
            }),
        }
    }

    /// The partitions of `topic`, or `None` if the cluster does not know it.
    async fn partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, Error> {
        let producer = self.producer()?.clone();
        let name = topic.to_string();
        let timeout = self.metadata_timeout;
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&name), timeout)
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name)
                        .and_then(|t| {
                            let missing = matches!(
                                t.error().map(RDKafkaErrorCode::from),
                                Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                            );
                            (!missing && !t.partitions().is_empty())
                                .then(|| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                        })
                })
        })
        .await
        .map_err(Error::Task)?;
        result.map_err(|source| Error::Unreachable {
            brokers: self.brokers.clone(),
            source,
            cause: self.recent_error().map(String::into_boxed_str),
        })
    }

    /// Makes sure `topic` exists: known already, found in metadata, or created
    /// (with `default_partitions`/`replication_factor`) when
    /// `auto_create_topics` is on. Returns its partitions when looked up.
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<Option<Vec<i32>>, Error> {
        if self.is_known(topic) {
            return Ok(None);
        }
        self.lookup_or_create(topic).await.map(Some)
    }

    /// Like [`ensure_topic`](Self::ensure_topic) but always returns the partitions.
    pub(crate) async fn topic_partitions(&self, topic: &str) -> Result<Vec<i32>, Error> {
        self.lookup_or_create(topic).await
    }

    fn is_known(&self, topic: &str) -> bool {
        self.known_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic)
    }

    fn forget_topic(&self, topic: &str) {
        self.known_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
    }

    async fn lookup_or_create(&self, topic: &str) -> Result<Vec<i32>, Error> {
        let partitions = match self.partitions(topic).await? {
            Some(partitions) => partitions,
            None if !self.auto_create_topics => {
                return Err(Error::TopicNotFound(topic.to_string()));
            }
            None => {
                self.create_topic(topic).await?;
                // The new topic's partitions become visible once its leader
                // is elected; poll briefly instead of assuming the count.
                let deadline = Instant::now() + self.metadata_timeout.max(Duration::from_secs(2));
                loop {
                    if let Some(partitions) = self.partitions(topic).await? {
                        break partitions;
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::TopicNotFound(topic.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.known_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string());
        Ok(partitions)
    }

    async fn create_topic(&self, topic: &str) -> Result<(), Error> {
        let admin = self.admin.as_ref().ok_or(Error::Closed)?;
        let new = NewTopic::new(
            topic,
            self.default_partitions,
            TopicReplication::Fixed(i32::from(self.replication_factor)),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.metadata_timeout));
        let results = admin
            .create_topics([&new], &options)
            .await
            .map_err(|source| Error::CreateTopic {
                topic: topic.to_string(),
                reason: source.to_string(),
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::CreateTopic {
                        topic: topic.to_string(),
                        reason: code.to_string(),
                    });
                }
            }
        }
        tracing::info!(
            topic,
            partitions = self.default_partitions,
            replication_factor = self.replication_factor,
            "created topic"
        );
        Ok(())
    }

    /// Produces one record and waits for the broker's acknowledgement (as
    /// configured by `acks`), at most `produce_timeout`.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &Bytes,
        metadata: &HashMap<String, String>,
    ) -> Result<Published, Error> {
        self.ensure_topic(topic).await?;
        let message_id = new_message_id();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut headers = OwnedHeaders::new_with_capacity(metadata.len() + 1);
            for (name, value) in metadata {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            headers = headers.insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(message_id.as_bytes()),
            });
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .payload(payload.as_ref())
                .headers(headers);
            if let Some(key) = key {
                record = record.key(key);
            }
            let queued = Instant::now();
            let sent = self.producer()?.send(record, self.produce_timeout).await;
            self.send_outcome(queued, &sent);
            match sent {
                Ok(delivery) => {
                    tracing::trace!(
                        topic,
                        partition = delivery.partition,
                        offset = delivery.offset,
                        "published"
                    );
                    return Ok(Published { message_id });
                }
                Err((KafkaError::MessageProduction(code), _)) if is_unknown_topic(code) => {
                    // The cluster lost the topic (or a restarted broker forgot
                    // it): look it up (and create it) once more.
                    self.forget_topic(topic);
                    if attempt > 1 {
                        return Err(Error::TopicNotFound(topic.to_string()));
                    }
                    self.ensure_topic(topic).await?;
                }
                Err((source, _)) => {
                    if source.rdkafka_error_code().is_some_and(is_producer_fatal) {
                        self.mark_broken(&source);
                    }
                    // A broker that restarted empty, or a deleted topic, shows
                    // up as a timeout: check (and create) the topic next time.
                    self.forget_topic(topic);
                    return Err(Error::Produce {
                        topic: topic.to_string(),
                        source,
                    });
                }
            }
        }
    }

    /// A consumer in `group` subscribed to `topic`. Offsets are committed
    /// automatically every `commit_interval`, but only those the stream
    /// stored (see [`crate::stream`]); `start` applies when the group has
    /// no committed offset.
    pub(crate) fn group_consumer(
        &self,
        topic: &str,
        group: &str,
        start: &Start,
        context: StreamContext,
    ) -> Result<KafkaConsumer, Error> {
        let reset = match start {
            Start::Earliest => "earliest",
            _ => "latest",
        };
        let mut config = self.consumer_base.clone();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset);
        let consumer: KafkaConsumer = config.create_with_context(context).map_err(Error::Client)?;
        consumer.subscribe(&[topic]).map_err(Error::Consumer)?;
        Ok(consumer)
    }

    /// A consumer outside any group reading `partitions` of `topic` from
    /// `start`: no group membership, no commits. (A timestamp start is also
    /// filtered by the stream, see [`crate::stream`].)
    pub(crate) async fn tail_consumer(
        &self,
        topic: &str,
        start: &Start,
        partitions: &[i32],
    ) -> Result<KafkaConsumer, Error> {
        let mut config = self.consumer_base.clone();
        // librdkafka needs a group id for its offset APIs even when nothing
        // joins or commits; a unique one keeps tails from meeting.
        config
            .set("group.id", format!("prism-tail-{}", new_message_id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: KafkaConsumer = config
            .create_with_context(StreamContext::default())
            .map_err(Error::Client)?;
        let mut tpl = TopicPartitionList::new();
        match start {
            Start::Earliest | Start::Latest => {
                let offset = if matches!(start, Start::Earliest) {
                    Offset::Beginning
                } else {
                    Offset::End
                };
                for &partition in partitions {
                    tpl.add_partition_offset(topic, partition, offset)
                        .map_err(Error::Consumer)?;
                }
            }
            Start::Offsets(offsets) => {
                for &(partition, offset) in offsets {
                    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                        .map_err(Error::Consumer)?;
                }
            }
            Start::Timestamp(ms) => {
                let mut query = TopicPartitionList::new();
                for &partition in partitions {
                    query
                        .add_partition_offset(topic, partition, Offset::Offset(*ms))
                        .map_err(Error::Consumer)?;
                }
                let timeout = self.metadata_timeout.max(Duration::from_secs(5));
                let (consumer, found) = tokio::task::spawn_blocking(move || {
                    let found = consumer.offsets_for_times(query, timeout);
                    (consumer, found)
                })
                .await
                .map_err(Error::Task)?;
                let found = found.map_err(Error::Consumer)?;
                for element in found.elements() {
                    // No message at or after the time: start at the end.
                    let offset = match element.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        _ => Offset::End,
                    };
                    tpl.add_partition_offset(topic, element.partition(), offset)
                        .map_err(Error::Consumer)?;
                }
                consumer.assign(&tpl).map_err(Error::Consumer)?;
                return Ok(consumer);
            }
        }
        consumer.assign(&tpl).map_err(Error::Consumer)?;
        Ok(consumer)
    }
}

/// TLS and SASL settings of every client (`backend.tls`, `backend.sasl`).
/// With Vault, the plugin has already put the Vault credentials into `config.sasl`.
fn apply_security(config: &KafkaConfig, client: &mut ClientConfig) {
    let protocol = config.security_protocol;
    if protocol.uses_tls() {
        let tls = &config.tls;
        if let Some(ca) = &tls.ca_file {
            client.set("ssl.ca.location", ca.to_string_lossy());
        }
        if let Some(cert) = &tls.cert_file {
            client.set("ssl.certificate.location", cert.to_string_lossy());
        }
        if let Some(key) = &tls.key_file {
            client.set("ssl.key.location", key.to_string_lossy());
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

/// True for librdkafka's SASL authentication failures (as reported in its
/// error reasons, e.g. "SASL authentication error: Authentication failed").
fn is_auth_failure(message: &str) -> bool {
    message.contains("SASL authentication error") || message.contains("Authentication failed")
}

/// Send errors after which an (idempotent) producer never delivers again:
/// librdkafka's own fatal error, a fenced producer id, a broken sequence.
/// (`InvalidProducerEpoch` and `UnknownProducerId` are left to librdkafka,
/// which bumps the epoch and retries.)
fn is_producer_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
    )
}

fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
    )
}

/// A random (version 4) UUID string: unique without coordination between
/// plugin instances.
pub(crate) fn new_message_id() -> String {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex_lower(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
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

/// Commit results a consumer's callbacks hand to its stream task.
#[derive(Default)]
pub(crate) struct CommitReports {
    committed: Mutex<Vec<(i32, i64)>>,
    changed: Notify,
}

impl CommitReports {
    /// Waits until a commit result arrives.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Takes the (partition, offset) pairs committed since the last call.
    pub(crate) fn take(&self) -> Vec<(i32, i64)> {
        std::mem::take(&mut *self.committed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Context of a stream's consumer: logs like [`LogContext`] and reports
/// successful commits to the stream task.
#[derive(Default)]
pub(crate) struct StreamContext {
    log: LogContext,
    reports: Arc<CommitReports>,
}

impl StreamContext {
    /// A context reporting into `reports`.
    pub(crate) fn new(reports: Arc<CommitReports>) -> Self {
        StreamContext {
            log: LogContext::default(),
            reports,
        }
    }
}

impl ClientContext for StreamContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for StreamContext {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => {
                let mut committed = self
                    .reports
                    .committed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                for element in offsets.elements() {
                    if let (Offset::Offset(offset), Ok(())) = (element.offset(), element.error()) {
                        committed.push((element.partition(), offset));
                    }
                }
                drop(committed);
                self.reports.changed.notify_one();
            }
            // Nothing new to commit is not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                tracing::debug!(error = %err, "offset commit failed; retried on the next interval")
            }
        }
    }
}

/// librdkafka client context: forwards its log lines and global errors to
/// `tracing` (target `librdkafka`), warning at most once a minute per kind and
/// demoting repeats to DEBUG. librdkafka never logs SASL passwords.
#[derive(Default)]
pub(crate) struct LogContext {
    last_warned: Mutex<HashMap<String, Instant>>,
    /// The latest specific error reason (TLS, SASL, transport), for health
    /// and initialize messages; shared with the [`Backend`].
    last_error: Arc<Mutex<Option<(Instant, String)>>>,
}

/// How long a recorded error reason is reported.
const RECENT_ERROR: Duration = Duration::from_secs(30);

impl LogContext {
    /// A new context that records errors into the same place as this one.
    fn sharing_errors(&self) -> Self {
        LogContext {
            last_warned: Mutex::default(),
            last_error: self.last_error.clone(),
        }
    }

    /// The latest specific error reason, if it is recent.
    pub(crate) fn recent_error(&self) -> Option<String> {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < RECENT_ERROR)
            .map(|(_, reason)| reason.clone())
    }

    /// True if `kind` was not warned about within [`LOG_REPEAT_INTERVAL`].
    fn should_warn(&self, kind: &str) -> bool {
        let mut last = self.last_warned.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get(kind) {
            Some(at) if now.duration_since(*at) < LOG_REPEAT_INTERVAL => false,
            _ => {
                last.insert(kind.to_string(), now);
                true
            }
        }
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
                if self.should_warn(facility) =>
            {
                tracing::warn!(target: "librdkafka", facility, "{message}");
            }
            _ => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // "n/m brokers are down" says nothing new; the reason before it does.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), reason.to_string()));
        }
        let kind = format!("error:{:?}", error.rdkafka_error_code());
        if self.should_warn(&kind) {
            tracing::warn!(target: "librdkafka", error = %error, reason, "kafka client error");
        } else {
            tracing::debug!(target: "librdkafka", error = %error, reason, "kafka client error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_and_sequence_errors_break_the_producer_timeouts_do_not() {
        assert!(is_producer_fatal(RDKafkaErrorCode::ProducerFenced));
        assert!(is_producer_fatal(
            RDKafkaErrorCode::OutOfOrderSequenceNumber
        ));
        assert!(is_producer_fatal(RDKafkaErrorCode::Fatal));
        assert!(!is_producer_fatal(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_producer_fatal(RDKafkaErrorCode::UnknownProducerId));
    }

    #[test]
    fn repeated_warnings_are_rate_limited_per_kind() {
        let context = LogContext::default();
        assert!(context.should_warn("FAIL"));
        assert!(!context.should_warn("FAIL"));
        assert!(context.should_warn("error:Some(AllBrokersDown)"));
    }
}
