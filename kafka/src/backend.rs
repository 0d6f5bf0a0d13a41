//! The Kafka client: an idempotent `FutureProducer`, the initial connect and
//! the metadata health probe, and the routing of librdkafka's own log lines
//! into `tracing` without flooding while a broker is down. Knows nothing about
//! gRPC.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};

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

/// One configured cluster and the producer connected to it.
pub(crate) struct Backend {
    /// `Some` until dropped; see the `Drop` impl for why it is an `Option`.
    producer: Option<FutureProducer<LogContext>>,
    /// The bootstrap list, for messages.
    brokers: String,
    /// `metadata_timeout`, capped at [`HEALTH_TIMEOUT`].
    health_timeout: Duration,
    degraded_latency: Duration,
}

/// The outcome of a successful metadata round trip.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterInfo {
    /// Brokers the cluster reported.
    pub(crate) brokers: usize,
    /// How long the request took.
    pub(crate) latency: Duration,
}

impl Backend {
    /// Creates the producer and waits (up to `metadata_timeout`) for the cluster
    /// to answer a metadata request. `Error::Client` for settings librdkafka
    /// rejects; `Error::Unreachable` when no broker answers.
    pub(crate) async fn connect(config: &KafkaConfig) -> Result<Self, Error> {
        let brokers = config.brokers.join(",");
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &brokers)
            .set("client.id", &config.client_id)
            // `validate` admits only plaintext until TLS/SASL are built in.
            .set("security.protocol", "plaintext")
            .set("acks", &config.acks)
            .set("enable.idempotence", config.idempotent().to_string())
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            // The broker may be down at startup; the producer comes up anyway
            // and connects when it can.
            .set_log_level(
                if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
                    RDKafkaLogLevel::Debug
                } else {
                    RDKafkaLogLevel::Warning
                },
            );
        let producer: FutureProducer<LogContext> = client
            .create_with_context(LogContext::default())
            .map_err(Error::Client)?;
        let backend = Backend {
            producer: Some(producer),
            brokers,
            health_timeout: config.metadata_timeout.min(HEALTH_TIMEOUT),
            degraded_latency: config.degraded_latency,
        };
        let info = backend.metadata(config.metadata_timeout).await?;
        tracing::info!(
            bootstrap = %backend.brokers,
            brokers = info.brokers,
            idempotent = config.idempotent(),
            "connected to kafka"
        );
        Ok(backend)
    }

    /// The configured bootstrap list.
    pub(crate) fn bootstrap(&self) -> &str {
        &self.brokers
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// Health probe: a metadata round trip bounded well inside core's limit.
    pub(crate) async fn health(&self) -> Result<ClusterInfo, Error> {
        self.metadata(self.health_timeout).await
    }

    /// Fetches cluster metadata (brokers and topics) on a blocking thread:
    /// librdkafka's call blocks until the answer or the timeout.
    async fn metadata(&self, timeout: Duration) -> Result<ClusterInfo, Error> {
        let Some(producer) = self.producer.clone() else {
            return Err(Error::Closed);
        };
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(Error::Fatal {
                code: format!("{code:?}"),
                reason,
            });
        }
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len())
        })
        .await
        .map_err(Error::Task)?;
        match result {
            Ok(brokers) => Ok(ClusterInfo {
                brokers,
                latency: started.elapsed(),
            }),
            Err(source) => Err(Error::Unreachable {
                brokers: self.brokers.clone(),
                source,
            }),
        }
    }
}

/// Dropping a producer blocks: it purges and flushes (up to 500 ms), joins its
/// polling thread and destroys the librdkafka handle. That must not happen on
/// an async worker thread, so the last owner hands it to a blocking thread.
impl Drop for Backend {
    fn drop(&mut self) {
        let Some(producer) = self.producer.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(producer));
            }
            Err(_) => drop(producer),
        }
    }
}

/// librdkafka client context: forwards its log lines and global errors to
/// `tracing` (target `librdkafka`), warning at most once a minute per kind and
/// demoting repeats to DEBUG. librdkafka never logs SASL passwords.
#[derive(Default)]
pub(crate) struct LogContext {
    last_warned: Mutex<HashMap<String, Instant>>,
}

impl LogContext {
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
    fn repeated_warnings_are_rate_limited_per_kind() {
        let context = LogContext::default();
        assert!(context.should_warn("FAIL"));
        assert!(!context.should_warn("FAIL"));
        assert!(context.should_warn("error:Some(AllBrokersDown)"));
    }
}
