//! The crate's one error type, its single mapping to `tonic::Status`, and its
//! conversion to core's lifecycle error.
//!
//! Brokers are named by the configured bootstrap list only; no SASL secret is
//! ever part of a message.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Everything the Kafka plugin can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// librdkafka rejected the client configuration built from `backend`.
    #[error("invalid Kafka client settings: {0}")]
    Client(#[source] KafkaError),
    /// No broker answered a metadata request.
    #[error("kafka brokers {brokers}: {source}{}", cause_suffix(.cause))]
    Unreachable {
        /// The bootstrap list.
        brokers: String,
        /// The client error.
        #[source]
        source: KafkaError,
        /// librdkafka's latest connection error (e.g. a TLS handshake or SASL
        /// failure), which says *why* no broker answered.
        cause: Option<Box<str>>,
    },
    /// The producer hit a fatal error; the plugin's rebuilder replaces it.
    #[error("kafka producer failed fatally ({reason}); a new one is being built")]
    Fatal {
        /// librdkafka's error code and explanation.
        reason: String,
    },
    /// The client was already closed.
    #[error("kafka client is closed")]
    Closed,
    /// A blocking librdkafka call could not be run or was cancelled.
    #[error("kafka metadata task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// The request itself is malformed (topic name, options, offsets, sizes).
    #[error("{0}")]
    InvalidArgument(String),
    /// The record is over `backend.max_payload_bytes`.
    #[error(
        "message is {size} bytes (payload + partition key + metadata); the limit is {limit} \
         (backend.max_payload_bytes)"
    )]
    TooLarge {
        /// Size of the record.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The topic does not exist and `auto_create_topics` is off.
    #[error("topic {0:?} does not exist (backend.auto_create_topics is off)")]
    TopicNotFound(String),
    /// Creating a topic failed.
    #[error("creating topic {topic:?} failed: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's or client's reason.
        reason: String,
    },
    /// The broker did not acknowledge a record.
    #[error("publishing to {topic:?} failed: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// The delivery error.
        #[source]
        source: KafkaError,
    },
    /// A consumer operation failed.
    #[error("kafka consumer: {0}")]
    Consumer(#[source] KafkaError),
    /// A Query named a series (topic) the cluster does not know.
    #[error("series {0:?} does not exist (Insert creates it)")]
    SeriesNotFound(String),
    /// A Query's partition reader got no record within
    /// `backend.timeseries.stall_timeout` while it had more to read.
    #[error(
        "series {topic:?} partition {partition}: no record within {} ms (backend.timeseries.stall_timeout); broker unreachable?{}; resume with the cursor in the `x-prism-cursor` trailer",
        .waited.as_millis(),
        .cause.as_ref().map(|c| format!(" (last broker error: {c})")).unwrap_or_default()
    )]
    Stalled {
        /// The series topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// How long it waited.
        waited: std::time::Duration,
        /// The consumer's latest error, if any.
        cause: Option<String>,
    },
    /// The plugin is draining: a running Query ends so it can stop.
    #[error("the plugin is draining; resume with the cursor in the `x-prism-cursor` trailer")]
    Draining,
    /// The call's deadline (`grpc-timeout`) came before the broker answered.
    #[error("deadline exceeded: the broker did not answer {0} within the call's deadline")]
    Deadline(&'static str),
}

impl From<Error> for prism_plugin_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Client(_) => prism_plugin_core::Error::config(err.to_string()),
            // A broker that is down now may be up later; a fatal producer is
            // replaced by the plugin's rebuilder.
            Error::Unreachable { .. } | Error::Fatal { .. } => {
                prism_plugin_core::Error::Unavailable(err.to_string())
            }
            _ => prism_plugin_core::Error::Internal(err.to_string()),
        }
    }
}

fn cause_suffix(cause: &Option<Box<str>>) -> String {
    cause
        .as_ref()
        .map(|c| format!(" (last broker error: {c})"))
        .unwrap_or_default()
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Status;
        let message = err.to_string();
        match &err {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::TooLarge { .. } => Status::resource_exhausted(message),
            Error::TopicNotFound(_) | Error::SeriesNotFound(_) => Status::not_found(message),
            Error::Stalled { .. } | Error::Draining => Status::unavailable(message),
            Error::Produce { source, .. } => match source.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize,
                ) => Status::resource_exhausted(message),
                Some(RDKafkaErrorCode::InvalidTopic) => Status::invalid_argument(message),
                Some(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed,
                ) => Status::permission_denied(message),
                // Timeouts, transport failures, leader changes, a full
                // queue: the broker may take it later.
                _ => Status::unavailable(message),
            },
            Error::CreateTopic { reason, .. } if reason.contains("nvalid topic") => {
                Status::invalid_argument(message)
            }
            Error::Unreachable { .. }
            | Error::Fatal { .. }
            | Error::CreateTopic { .. }
            | Error::Consumer(_) => Status::unavailable(message),
            Error::Deadline(_) => Status::deadline_exceeded(message),
            Error::Client(_) => Status::failed_precondition(message),
            Error::Closed | Error::Task(_) => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_map_by_cause() {
        for (cause, code) in [
            (RDKafkaErrorCode::MessageTimedOut, tonic::Code::Unavailable),
            (
                RDKafkaErrorCode::MessageSizeTooLarge,
                tonic::Code::ResourceExhausted,
            ),
        ] {
            let err = Error::Produce {
                topic: "t".into(),
                source: KafkaError::MessageProduction(cause),
            };
            assert_eq!(tonic::Status::from(err).code(), code, "{cause:?}");
        }
        let late = tonic::Status::from(Error::Deadline("the Publish"));
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
        let status = tonic::Status::from(Error::TooLarge { size: 10, limit: 5 });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("max_payload_bytes"));
    }
}
