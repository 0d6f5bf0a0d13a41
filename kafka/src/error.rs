//! The crate's one error type and its mapping onto core's lifecycle error.
//!
//! Brokers are named by the configured bootstrap list only; no SASL secret is
//! ever part of a message.

use rdkafka::error::KafkaError;

/// Everything the Kafka backend can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// librdkafka rejected the client configuration built from `backend`.
    #[error("invalid Kafka client settings: {0}")]
    Client(#[source] KafkaError),
    /// No broker answered a metadata request.
    #[error("kafka brokers {brokers}: {source}")]
    Unreachable {
        /// The bootstrap list.
        brokers: String,
        /// The client error.
        #[source]
        source: KafkaError,
    },
    /// The producer hit a fatal error and must be re-created (re-initialize).
    #[error("kafka producer failed fatally ({code}): {reason}")]
    Fatal {
        /// librdkafka's error code name.
        code: String,
        /// librdkafka's explanation.
        reason: String,
    },
    /// The client was already closed.
    #[error("kafka client is closed")]
    Closed,
    /// A blocking librdkafka call could not be run or was cancelled.
    #[error("kafka metadata task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl From<Error> for prism_plugin_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Client(_) => prism_plugin_core::Error::config(err.to_string()),
            // A broker that is down now may be up later; a fatal producer is
            // replaced by the next initialize.
            Error::Unreachable { .. } | Error::Fatal { .. } => {
                prism_plugin_core::Error::Unavailable(err.to_string())
            }
            Error::Closed | Error::Task(_) => prism_plugin_core::Error::Internal(err.to_string()),
        }
    }
}
