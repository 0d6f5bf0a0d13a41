//! Backend metrics every plugin shares (Prometheus names and units):
//! connection pools, per-operation backend latency, Vault leases, Kafka
//! consumer lag and delivery counts, producer queue depth, TLS certificate
//! expiry. One set per process ([`get`]), registered into the plugin's
//! `/metrics` registry by [`crate::metrics::Metrics`]: the recording sites
//! sit deep in pools, the Vault worker and stream tasks, which a handle
//! threaded through every constructor would only clutter. Labels are names
//! (backend, operation, topic, group, partition), never keys or values.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// `backend` label: `postgresql`, `redis`, `kafka`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// The backend system.
    pub backend: &'static str,
}

/// `backend` and `operation` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The backend system.
    pub backend: &'static str,
    /// The command or statement kind (`GET`, `SELECT`, `send`).
    pub operation: &'static str,
}

/// `topic` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The Kafka topic.
    pub topic: String,
}

/// Consumer lag labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    /// The Kafka topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The consumer group.
    pub group: String,
}

/// `certificate` label (`server`, `client_ca`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    /// Which certificate.
    pub certificate: &'static str,
}

/// Seconds left on the Vault lease, computed at scrape time so the value
/// falls between renewals; absent before the first lease.
#[derive(Clone, Debug, Default)]
struct LeaseRemaining(Arc<Mutex<Option<Instant>>>);

impl TypedMetric for LeaseRemaining {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for LeaseRemaining {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let at = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        match at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now()).as_secs_f64();
                encoder.encode_gauge(&left)
            }
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }
}

type IntGauge = Gauge<i64, AtomicI64>;

/// One call waiting for a pool connection (see [`BackendMetrics::pool_wait`]).
pub struct PoolWait(IntGauge);

impl Drop for PoolWait {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The process's backend metric families.
pub struct BackendMetrics {
    pool_size: Family<BackendLabel, IntGauge>,
    pool_in_use: Family<BackendLabel, IntGauge>,
    pool_waiting: Family<BackendLabel, IntGauge>,
    pool_acquire: Family<BackendLabel, Histogram>,
    operation: Family<OperationLabels, Histogram>,
    lease_remaining: LeaseRemaining,
    lease_renewals: Counter,
    rotations: Counter,
    vault_failures: Counter,
    lag: Family<LagLabels, IntGauge>,
    delivered: Family<TopicLabel, Counter>,
    acknowledged: Family<TopicLabel, Counter>,
    redelivered: Family<TopicLabel, Counter>,
    producer_queue: IntGauge,
    cert_expiry: Family<CertificateLabel, Gauge<f64, AtomicU64>>,
}

static METRICS: LazyLock<BackendMetrics> = LazyLock::new(BackendMetrics::new);

/// The process's backend metrics.
pub fn get() -> &'static BackendMetrics {
    &METRICS
}

fn latency() -> Histogram {
    // 50 µs .. ~13 s, as the gRPC latency histogram.
    Histogram::new(exponential_buckets(0.00005, 2.0, 19))
}

impl BackendMetrics {
    fn new() -> Self {
        BackendMetrics {
            pool_size: Family::default(),
            pool_in_use: Family::default(),
            pool_waiting: Family::default(),
            pool_acquire: Family::new_with_constructor(latency),
            operation: Family::new_with_constructor(latency),
            lease_remaining: LeaseRemaining::default(),
            lease_renewals: Counter::default(),
            rotations: Counter::default(),
            vault_failures: Counter::default(),
            lag: Family::default(),
            delivered: Family::default(),
            acknowledged: Family::default(),
            redelivered: Family::default(),
            producer_queue: IntGauge::default(),
            cert_expiry: Family::default(),
        }
    }

    /// Adds every family to `registry` (names get its `prism_` prefix).
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "pool_connections",
            "Backend connections open, idle or in use",
            self.pool_size.clone(),
        );
        r.register(
            "pool_connections_in_use",
            "Backend connections serving a call now",
            self.pool_in_use.clone(),
        );
        r.register(
            "pool_waiting",
            "Calls waiting for a backend connection",
            self.pool_waiting.clone(),
        );
        r.register(
            "pool_acquire_duration_seconds",
            "Time to get a backend connection from the pool",
            self.pool_acquire.clone(),
        );
        r.register(
            "backend_operation_duration_seconds",
            "Backend call latency by operation, errors included",
            self.operation.clone(),
        );
        r.register(
            "vault_lease_remaining_seconds",
            "Seconds until the current Vault credential lease runs out",
            self.lease_remaining.clone(),
        );
        r.register(
            "vault_lease_renewals",
            "Vault credential lease renewals",
            self.lease_renewals.clone(),
        );
        r.register(
            "vault_credential_rotations",
            "New Vault credential sets taken into use",
            self.rotations.clone(),
        );
        r.register(
            "vault_failures",
            "Vault rounds (login, read, renewal) that failed",
            self.vault_failures.clone(),
        );
        r.register(
            "kafka_consumer_lag",
            "Records in the partition not yet committed by the group (librdkafka statistics)",
            self.lag.clone(),
        );
        r.register(
            "kafka_messages_delivered",
            "Records delivered to clients (Subscribe, Tail, Consume)",
            self.delivered.clone(),
        );
        r.register(
            "kafka_messages_acknowledged",
            "Consume deliveries acknowledged by clients",
            self.acknowledged.clone(),
        );
        r.register(
            "kafka_messages_redelivered",
            "Records delivered again by a stream after a rebalance or credential rotation",
            self.redelivered.clone(),
        );
        r.register(
            "kafka_producer_queue_depth",
            "Records handed to the producer and not yet acknowledged by the broker",
            self.producer_queue.clone(),
        );
        r.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the served TLS certificate, Unix seconds",
            self.cert_expiry.clone(),
        );
    }

    /// The pool gauges of `backend`: connections open, and in use.
    pub fn pool_state(&self, backend: &'static str, open: i64, in_use: i64) {
        let label = BackendLabel { backend };
        self.pool_size.get_or_create(&label).set(open);
        self.pool_in_use.get_or_create(&label).set(in_use);
    }

    /// Counts one call waiting for a `backend` connection until the
    /// returned guard drops (a cancelled wait counts down too).
    pub fn pool_wait(&self, backend: &'static str) -> PoolWait {
        let gauge = self
            .pool_waiting
            .get_or_create(&BackendLabel { backend })
            .clone();
        gauge.inc();
        PoolWait(gauge)
    }

    /// A connection of `backend` was acquired (or given up on) after `seconds`.
    pub fn pool_acquired(&self, backend: &'static str, seconds: f64) {
        self.pool_acquire
            .get_or_create(&BackendLabel { backend })
            .observe(seconds);
    }

    /// One backend call of `operation` took `seconds`.
    pub fn operation(&self, backend: &'static str, operation: &'static str, seconds: f64) {
        self.operation
            .get_or_create(&OperationLabels { backend, operation })
            .observe(seconds);
    }

    /// A Vault lease renewal; the lease now runs out at `expires_at`.
    pub(crate) fn lease_renewed(&self, expires_at: Instant) {
        self.lease_renewals.inc();
        self.set_lease(Some(expires_at));
    }

    /// A new credential set (leased until `expires_at`, if leased).
    pub(crate) fn rotated(&self, expires_at: Option<Instant>) {
        self.rotations.inc();
        self.set_lease(expires_at);
    }

    fn set_lease(&self, expires_at: Option<Instant>) {
        *self
            .lease_remaining
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = expires_at;
    }

    /// A failed Vault round.
    pub(crate) fn vault_failed(&self) {
        self.vault_failures.inc();
    }

    /// The group's lag on one partition.
    pub fn consumer_lag(&self, topic: &str, partition: i32, group: &str, lag: i64) {
        let labels = LagLabels {
            topic: topic.to_string(),
            partition,
            group: group.to_string(),
        };
        self.lag.get_or_create(&labels).set(lag);
    }

    /// One record of `topic` delivered to a client.
    pub fn delivered(&self, topic: &str) {
        self.topic_counter(&self.delivered, topic).inc();
    }

    /// One Consume delivery of `topic` acknowledged.
    pub fn acknowledged(&self, topic: &str) {
        self.topic_counter(&self.acknowledged, topic).inc();
    }

    /// One record of `topic` delivered again.
    pub fn redelivered(&self, topic: &str) {
        self.topic_counter(&self.redelivered, topic).inc();
    }

    fn topic_counter(&self, family: &Family<TopicLabel, Counter>, topic: &str) -> Counter {
        family
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .clone()
    }

    /// Records waiting in the producer for the broker's acknowledgement.
    pub fn producer_queue_depth(&self, depth: i64) {
        self.producer_queue.set(depth);
    }

    /// The served certificate's notAfter, Unix seconds.
    pub(crate) fn certificate_expiry(&self, certificate: &'static str, unix_seconds: f64) {
        self.cert_expiry
            .get_or_create(&CertificateLabel { certificate })
            .set(unix_seconds);
    }
}
