//! The crate's one error type and its mapping onto core's lifecycle error.
//!
//! No variant carries a password: addresses are shown as `host:port` only and
//! the Redis client's own errors never echo credentials.

use std::time::Duration;

/// Everything the Redis backend can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A setting cannot be turned into a connection (bad address, unsupported TLS).
    #[error("`backend.{key}`: {problem}")]
    Config {
        /// The `backend` key at fault.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Redis refused or failed the connection or the command.
    #[error("redis at {address}: {source}")]
    Redis {
        /// `host:port` of the server (never with credentials).
        address: String,
        /// The client error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer in time.
    #[error("redis at {address} did not answer within {} ms", .timeout.as_millis())]
    Timeout {
        /// `host:port` of the server.
        address: String,
        /// How long we waited.
        timeout: Duration,
    },
}

impl From<Error> for prism_plugin_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Config { .. } => prism_plugin_core::Error::config(err.to_string()),
            // Refused connections, auth failures (credentials may be provisioned
            // later, e.g. by Vault) and timeouts are all worth retrying: the
            // process stays up and NOT_SERVING instead of crash-looping.
            Error::Redis { .. } | Error::Timeout { .. } => {
                prism_plugin_core::Error::Unavailable(err.to_string())
            }
        }
    }
}
