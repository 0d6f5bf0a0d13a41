//! The producer's health: the metadata round trip the health probe (and
//! connect) runs, whether the producer can still publish, and the broker's
//! latest error reason for messages.

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer};

use super::context::LogContext;
use super::{Backend, ClusterInfo};
use crate::error::Error;

/// Longest a health metadata request may take: core gives the whole health
/// check 1.5 s, and the request runs on a blocking thread it cannot cancel.
pub(super) const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Messages waiting in the producer queue above which health is DEGRADED.
const QUEUE_DEGRADED: i32 = 10_000;

impl Backend {
    /// Producer queue depth above which health is DEGRADED.
    pub(crate) fn queue_degraded(&self) -> i32 {
        QUEUE_DEGRADED
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
    pub(super) fn producer(&self) -> Result<&FutureProducer<LogContext>, Error> {
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
        if let Some(reason) = self.state.broken() {
            return Some(reason);
        }
        let producer = self.producer.as_ref()?;
        producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Called by the plugin's health check with the outcome of its metadata
    /// round trip: a producer whose sends keep timing out while the broker
    /// answers is marked broken (see `ProducerState::broker_answers`).
    pub(crate) fn broker_answers(&self, answers: bool) {
        self.state
            .broker_answers(answers, self.config.idempotent(), &self.brokers);
    }

    /// The producer's latest broker connection error, if recent.
    pub(super) fn recent_error(&self) -> Option<String> {
        self.producer_log.recent_error()
    }

    /// Fetches cluster metadata (brokers and topics) on a blocking thread:
    /// librdkafka's call blocks until the answer or the timeout.
    pub(super) async fn metadata(&self, timeout: Duration) -> Result<ClusterInfo, Error> {
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
}

/// True for librdkafka's SASL authentication failures (as reported in its
/// error reasons, e.g. "SASL authentication error: Authentication failed").
fn is_auth_failure(message: &str) -> bool {
    message.contains("SASL authentication error") || message.contains("Authentication failed")
}
