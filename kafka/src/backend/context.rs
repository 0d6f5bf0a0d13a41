//! The librdkafka client contexts: [`LogContext`] routes librdkafka's own log
//! lines and errors into `tracing` without flooding while a broker is down
//! (and keeps the latest error reason for messages); [`StreamContext`] adds
//! the commit results a stream's consumer reports to its stream task
//! ([`CommitReports`]). Knows nothing of the backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

/// How often the same kind of librdkafka warning is logged at WARN; repeats in
/// between go to DEBUG (a broker that is down is reported every ~100 ms otherwise).
const LOG_REPEAT_INTERVAL: Duration = Duration::from_secs(60);

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
    /// The consumer group, for the lag metric (from librdkafka's statistics).
    group: Option<String>,
}

impl StreamContext {
    /// A context reporting into `reports`.
    pub(crate) fn new(reports: Arc<CommitReports>) -> Self {
        StreamContext {
            log: LogContext::default(),
            reports,
            group: None,
        }
    }

    /// Reports the consumer lag of `group` from librdkafka's statistics.
    pub(crate) fn with_group(mut self, group: &str) -> Self {
        self.group = Some(group.to_string());
        self
    }
}

impl ClientContext for StreamContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A query reader asks for end-of-partition events; they are not errors.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            tracing::trace!(target: "librdkafka", reason, "end of partition");
            return;
        }
        self.log.error(error, reason);
    }

    /// Per-partition lag (high watermark minus the group's committed
    /// offset); librdkafka reports -1 (and partition -1) where unknown.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(group) = &self.group else { return };
        let metrics = prism_plugin_core::backend_metrics::get();
        for (name, topic) in &statistics.topics {
            for partition in topic.partitions.values() {
                if partition.partition >= 0 && partition.consumer_lag >= 0 {
                    metrics.consumer_lag(name, partition.partition, group, partition.consumer_lag);
                }
            }
        }
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
    /// and initialize messages; shared with the backend.
    last_error: Arc<Mutex<Option<(Instant, String)>>>,
}

/// How long a recorded error reason is reported.
const RECENT_ERROR: Duration = Duration::from_secs(30);

impl LogContext {
    /// A new context that records errors into the same place as this one.
    pub(super) fn sharing_errors(&self) -> Self {
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
    fn repeated_warnings_are_rate_limited_per_kind() {
        let context = LogContext::default();
        assert!(context.should_warn("FAIL"));
        assert!(!context.should_warn("FAIL"));
        assert!(context.should_warn("error:Some(AllBrokersDown)"));
    }
}
