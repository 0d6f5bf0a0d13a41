//! The crate's one error type and its mapping onto core's lifecycle error.
//!
//! No variant carries the connection URL: servers are named as
//! `host:port/database`, and sqlx's errors never echo the password.

use std::time::Duration;

/// Everything the PostgreSQL backend can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A setting cannot be turned into a connection (e.g. an unparsable URL).
    #[error("`backend.{key}`: {problem}")]
    Config {
        /// The `backend` key at fault.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Connecting or running a statement failed.
    #[error("postgres at {target}: {source}")]
    Postgres {
        /// `host:port/database` (never with credentials).
        target: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The server did not answer in time.
    #[error("postgres at {target}: no answer to {what} within {} ms", .timeout.as_millis())]
    Timeout {
        /// `host:port/database`.
        target: String,
        /// What was attempted (`connect`, `SELECT 1`).
        what: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
}

impl From<Error> for prism_plugin_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Config { .. } => prism_plugin_core::Error::config(err.to_string()),
            // Refused connections, missing databases and failed logins may all
            // be fixed outside this process (server starting, Vault provisioning
            // the role): retriable, so the plugin stays up and NOT_SERVING.
            Error::Postgres { .. } | Error::Timeout { .. } => {
                prism_plugin_core::Error::Unavailable(err.to_string())
            }
        }
    }
}
