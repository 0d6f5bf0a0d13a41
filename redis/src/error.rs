//! The crate's one error type, its single mapping to a gRPC status and its
//! mapping onto core's lifecycle error.
//!
//! No variant carries a password: addresses are shown as `host:port` only and
//! the Redis client's own errors never echo credentials.

use std::time::Duration;

use prism_plugin_core::BadSetting;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Everything the Redis backend can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A setting cannot be turned into a connection (bad address, unsupported TLS).
    #[error(transparent)]
    Config(#[from] BadSetting),
    /// Redis refused or failed the connection or the command.
    #[error("redis at {address}: {source}")]
    Redis {
        /// `host:port` of the server (never with credentials).
        address: String,
        /// The client error.
        #[source]
        source: RedisError,
    },
    /// Redis did not answer in time.
    #[error("redis at {address} did not answer within {} ms", .timeout.as_millis())]
    Timeout {
        /// `host:port` of the server.
        address: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The backend cannot serve now for a reason the plugin knows better than
    /// the client library (e.g. a cluster connection being rebuilt).
    #[error("redis at {address} is unavailable: {reason}")]
    Unavailable {
        /// `host:port` of the server, or the cluster seeds.
        address: String,
        /// Why.
        reason: &'static str,
    },
    /// Redis answered something the plugin cannot interpret.
    #[error("redis at {address} sent an unexpected reply: {problem}")]
    Protocol {
        /// `host:port` of the server.
        address: String,
        /// What was wrong with the reply.
        problem: String,
    },
}

/// The error codes a Redis reply carries (`NOPERM`, `OOM`, ...): one for a
/// single command, one per failed command for a pipeline.
fn server_codes(source: &RedisError) -> Vec<String> {
    // Cheap: the error's payload is behind an `Arc`.
    match source.clone().into_server_errors() {
        Some(errors) => errors.iter().map(|(_, e)| e.code().to_string()).collect(),
        None => source.code().map(str::to_string).into_iter().collect(),
    }
}

/// True when Redis rejected the credentials (`WRONGPASS`, `NOAUTH`, or a
/// failed `AUTH` while the connection re-dialled), e.g. a revoked Vault user.
pub(crate) fn is_auth_error(source: &RedisError) -> bool {
    source.kind() == ErrorKind::AuthenticationFailed
        || server_codes(source)
            .iter()
            .any(|c| c == "WRONGPASS" || c == "NOAUTH")
}

/// True when Redis refused a command because of an ACL rule.
pub(crate) fn is_noperm(source: &RedisError) -> bool {
    source.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
        || server_codes(source).iter().any(|c| c == "NOPERM")
}

/// The gRPC code for a Redis client error. Order matters: the most specific
/// cause wins when a pipeline failed in several ways.
fn redis_code(source: &RedisError) -> tonic::Code {
    use tonic::Code;
    if source.is_timeout() {
        return Code::DeadlineExceeded;
    }
    let codes = server_codes(source);
    let has = |code: &str| codes.iter().any(|c| c == code);
    if has("NOPERM") {
        return Code::PermissionDenied;
    }
    if has("OOM") {
        return Code::ResourceExhausted;
    }
    // The server (or part of the cluster) cannot serve now; retrying later may work.
    if [
        "CLUSTERDOWN",
        "TRYAGAIN",
        "MASTERDOWN",
        "LOADING",
        "BUSY",
        "MOVED",
        "ASK",
    ]
    .iter()
    .any(|c| has(c))
        || has("READONLY")
        || has("NOAUTH")
        || has("WRONGPASS")
    {
        return Code::Unavailable;
    }
    if has("WRONGTYPE") {
        // Someone stored a non-string under the plugin's prefix.
        return Code::FailedPrecondition;
    }
    match source.kind() {
        ErrorKind::Io
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::AuthenticationFailed
        | ErrorKind::Server(
            ServerErrorKind::ClusterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading,
        ) => Code::Unavailable,
        _ => Code::Internal,
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::Config(_) => tonic::Code::FailedPrecondition,
            Error::Redis { source, .. } => redis_code(source),
            Error::Timeout { .. } => tonic::Code::DeadlineExceeded,
            Error::Unavailable { .. } => tonic::Code::Unavailable,
            Error::Protocol { .. } => tonic::Code::Internal,
        };
        tonic::Status::new(code, err.to_string())
    }
}

impl From<Error> for prism_plugin_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Config(setting) => setting.into(),
            // Refused connections, auth failures (credentials may be provisioned
            // later, e.g. by Vault) and timeouts are all worth retrying: the
            // process stays up and NOT_SERVING instead of crash-looping.
            Error::Redis { .. }
            | Error::Timeout { .. }
            | Error::Unavailable { .. }
            | Error::Protocol { .. } => prism_plugin_core::Error::Unavailable(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_string(), Some(detail.to_string()))
    }

    fn status(source: RedisError) -> tonic::Status {
        Error::Redis {
            address: "127.0.0.1:6379".into(),
            source,
        }
        .into()
    }

    #[test]
    fn redis_errors_map_to_the_documented_codes() {
        use tonic::Code;
        let cases = [
            (
                server("OOM", "command not allowed when used memory > 'maxmemory'"),
                Code::ResourceExhausted,
            ),
            (
                server(
                    "NOPERM",
                    "User ro has no permissions to run the 'set' command",
                ),
                Code::PermissionDenied,
            ),
            (
                server("CLUSTERDOWN", "The cluster is down"),
                Code::Unavailable,
            ),
            (
                server(
                    "WRONGTYPE",
                    "Operation against a key holding the wrong kind of value",
                ),
                Code::FailedPrecondition,
            ),
            (server("ERR", "syntax error"), Code::Internal),
            (
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                Code::Unavailable,
            ),
            (
                std::io::Error::from(std::io::ErrorKind::TimedOut).into(),
                Code::DeadlineExceeded,
            ),
        ];
        for (source, code) in cases {
            let text = source.to_string();
            let status = status(source);
            assert_eq!(status.code(), code, "{text}");
            assert!(
                status.message().contains("127.0.0.1:6379"),
                "{}",
                status.message()
            );
        }
        let timeout: tonic::Status = Error::Timeout {
            address: "a:1".into(),
            timeout: Duration::from_secs(2),
        }
        .into();
        assert_eq!(timeout.code(), Code::DeadlineExceeded);
    }
}
