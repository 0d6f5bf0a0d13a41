//! The crate's one error type, its mapping onto gRPC statuses for the data
//! services and onto core's lifecycle error.
//!
//! No variant carries the connection URL or SQL text: servers are named as
//! `host:port/database`, database errors by their SQLSTATE and server message,
//! and sqlx's errors never echo the password.

use std::time::Duration;

use prism_plugin_core::BadSetting;
use tonic::Status;

/// Everything the PostgreSQL backend can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A setting cannot be turned into a connection (e.g. an unparsable URL),
    /// or the configured table belongs to something else: core's one way to
    /// report a bad setting.
    #[error(transparent)]
    Config(#[from] BadSetting),
    /// Connecting or running a statement failed.
    #[error("postgres at {target}: {}", describe_sqlx(.source))]
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
    /// The backend is known to be down (the last health probe or a data call
    /// failed to reach it); calls fail at once instead of queueing for a
    /// connection until the health probe sees it back.
    #[error("postgres at {target} is unreachable ({reason}); retry later")]
    Unreachable {
        /// `host:port/database`.
        target: String,
        /// The last failure seen, already free of secrets.
        reason: String,
    },
    /// The caller's gRPC deadline passed before the statement finished; the
    /// statement was abandoned and its connection closed (which cancels it).
    #[error("postgres at {target}: the request deadline passed before {what} finished")]
    Deadline {
        /// `host:port/database`.
        target: String,
        /// `waiting for a connection` or `the statement`.
        what: &'static str,
    },
}

/// How a failure should be reported and whether it says the server is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Server unreachable or the connection broke: `UNAVAILABLE`, and the
    /// backend is marked down until the next successful health probe.
    Connection,
    /// Retriable without any sign that the server is gone (pool exhausted,
    /// server in recovery): `UNAVAILABLE`.
    Busy,
    /// `statement_timeout` or the caller's deadline: `DEADLINE_EXCEEDED`.
    Deadline,
    /// Input the database cannot store (encoding, size): `INVALID_ARGUMENT`.
    Input,
    /// Serialization failure or deadlock: `ABORTED` (retry the call).
    Conflict,
    /// Out of server resources (disk, memory): `RESOURCE_EXHAUSTED`.
    Exhausted,
    /// The table or privileges changed underneath: `FAILED_PRECONDITION`.
    Setup,
    /// The server rejected the login or the session's credentials
    /// (SQLSTATE class 28, e.g. a Vault lease revoked): `UNAVAILABLE`, and
    /// with Vault new credentials are fetched at once.
    Auth,
    /// Anything else: `INTERNAL`.
    Internal,
}

impl Error {
    /// The category of this failure.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Error::Config(_) => Kind::Setup,
            Error::Timeout { .. } | Error::Unreachable { .. } => Kind::Connection,
            Error::Deadline { .. } => Kind::Deadline,
            Error::Postgres { source, .. } => sqlx_kind(source),
        }
    }
}

/// Classifies a driver error; database errors by SQLSTATE class.
fn sqlx_kind(err: &sqlx::Error) -> Kind {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => Kind::Connection,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Kind::Busy
        }
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match code {
                // query_canceled: statement_timeout (we never send cancel requests).
                "57014" => Kind::Deadline,
                // admin_shutdown, crash_shutdown: the server is going away.
                "57P01" | "57P02" => Kind::Connection,
                // cannot_connect_now (starting up / recovery), too_many_connections.
                "57P03" | "53300" => Kind::Busy,
                "40001" | "40P01" => Kind::Conflict,
                // program_limit_exceeded (e.g. a row too large for an index).
                "54000" => Kind::Input,
                // undefined_table/column, insufficient_privilege, read-only transaction.
                "42P01" | "42703" | "42501" | "25006" => Kind::Setup,
                // invalid_authorization_specification, invalid_password.
                _ if code.starts_with("28") => Kind::Auth,
                _ if code.starts_with("08") => Kind::Connection,
                _ if code.starts_with("22") => Kind::Input,
                _ if code.starts_with("53") => Kind::Exhausted,
                _ => Kind::Internal,
            }
        }
        _ => Kind::Internal,
    }
}

/// Driver errors in words an operator can act on. Database errors keep
/// SQLSTATE and the server's message (which names no SQL text or password).
fn describe_sqlx(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::PoolTimedOut => {
            "no pooled connection became free within backend.acquire_timeout \
             (server unreachable or pool exhausted)"
                .to_string()
        }
        sqlx::Error::PoolClosed => "the connection pool is closed (shutting down)".to_string(),
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("error {code}: {}", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err.kind() {
            Kind::Connection | Kind::Busy | Kind::Auth => Status::unavailable(message),
            Kind::Deadline => Status::deadline_exceeded(message),
            Kind::Input => Status::invalid_argument(message),
            Kind::Conflict => Status::aborted(message),
            Kind::Exhausted => Status::resource_exhausted(message),
            Kind::Setup => Status::failed_precondition(message),
            Kind::Internal => Status::internal(message),
        }
    }
}

impl From<Error> for prism_plugin_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Config(setting) => setting.into(),
            // Refused connections, missing databases and failed logins may all
            // be fixed outside this process (server starting, Vault provisioning
            // the role): retriable, so the plugin stays up and NOT_SERVING.
            _ => prism_plugin_core::Error::Unavailable(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_and_unreachable_map_to_their_codes_without_secrets() {
        let down = Error::Unreachable {
            target: "db:5432/kv".into(),
            reason: "connection refused".into(),
        };
        let status = Status::from(down);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("db:5432/kv"), "{status:?}");
        let late = Status::from(Error::Deadline {
            target: "db:5432/kv".into(),
            what: "the statement",
        });
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
        let pool = Status::from(Error::Postgres {
            target: "db:5432/kv".into(),
            source: sqlx::Error::PoolTimedOut,
        });
        assert_eq!(pool.code(), tonic::Code::Unavailable);
        assert!(pool.message().contains("acquire_timeout"), "{pool:?}");
    }
}
