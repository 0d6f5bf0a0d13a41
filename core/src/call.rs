//! The preamble of every data call, in one place so every plugin reads a
//! request the same way: the key space (`x-prism-namespace`), the client's
//! deadline (`grpc-timeout`) and the backend in use ([`Call::begin`]). The
//! drain gate needs nothing here: core's request gate rejects new calls
//! with `UNAVAILABLE` before they reach a service.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;
use tonic::{Request, Status};

use crate::Slot;

/// What a data call reads before its message: the backend it runs on (held
/// for the whole call, so a swap fails no call) and its [`Scope`].
#[derive(Debug)]
pub struct Call<B> {
    /// The backend current when the call began.
    pub backend: Arc<B>,
    /// The call's namespace and deadline.
    pub scope: Scope,
}

/// Where a data call acts and until when: what a backend operation needs
/// from the request besides the message.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The validated `x-prism-namespace` (default [`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// The client's deadline, a little early (see [`deadline`]); `None`
    /// when the client set none.
    pub deadline: Option<Instant>,
}

impl<B> Call<B> {
    /// Reads the namespace (`INVALID_ARGUMENT` when malformed;
    /// `PERMISSION_DENIED` when the client's identity may not use it, see
    /// [`crate::authz`]), the deadline
    /// and the current backend from `slot` (`UNAVAILABLE` before initialize),
    /// and hands back the message.
    #[allow(clippy::result_large_err)]
    pub fn begin<T>(slot: &Slot<B>, request: Request<T>) -> Result<(Self, T), Status> {
        let namespace = namespace(&request)?;
        crate::authz::permit(request.extensions().get(), &namespace)?;
        let deadline = deadline(&request);
        let backend = slot.get()?;
        let call = Call {
            backend,
            scope: Scope {
                namespace,
                deadline,
            },
        };
        Ok((call, request.into_inner()))
    }
}

impl Scope {
    /// Runs `fut` until the call's deadline; `None` when the deadline came
    /// first (see [`within`]).
    pub async fn within<F: Future>(&self, fut: F) -> Option<F::Output> {
        within(self.deadline, fut).await
    }
}

/// Request header selecting a key space; absent means [`DEFAULT_NAMESPACE`].
pub const NAMESPACE_HEADER: &str = "x-prism-namespace";
/// Namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Reads and validates the `x-prism-namespace` header: 1–128 bytes of
/// `[A-Za-z0-9._-]`, default `default`. Anything else is `INVALID_ARGUMENT`.
#[allow(clippy::result_large_err)]
pub fn namespace<T>(request: &Request<T>) -> Result<String, Status> {
    let Some(value) = request.metadata().get(NAMESPACE_HEADER) else {
        return Ok(DEFAULT_NAMESPACE.to_string());
    };
    let ns = value
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("{NAMESPACE_HEADER} must be ASCII")))?;
    let valid = !ns.is_empty()
        && ns.len() <= 128
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(ns.to_string())
    } else {
        Err(Status::invalid_argument(format!(
            "{NAMESPACE_HEADER} {ns:?} is invalid: use 1-128 characters from [A-Za-z0-9._-]"
        )))
    }
}

/// The client's gRPC deadline (`grpc-timeout` header) as an instant, slightly
/// early: tonic's own timer for the same header answers CANCELLED when it
/// fires first, so a plugin that bounds its backend call with this deadline
/// answers DEADLINE_EXCEEDED (and cancels the backend work) instead.
pub fn deadline<T>(request: &Request<T>) -> Option<Instant> {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)?;
    // 10 % of the budget, at most 100 ms: enough to win the race against the
    // client's own timer even on a loaded machine.
    let margin = (timeout / 10).min(std::time::Duration::from_millis(100));
    let arrived = request
        .extensions()
        .get::<crate::deadline::Arrived>()
        .map_or_else(Instant::now, |arrived| arrived.0);
    Some(arrived + (timeout - margin))
}

/// Runs `fut` until `deadline` (from [`deadline`]; `None` = no deadline).
/// `None` when the deadline came first: `fut` is dropped, which cancels the
/// backend work it was doing. Every plugin bounds its backend calls with this
/// and maps `None` to its DEADLINE_EXCEEDED error.
pub async fn within<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    // ASCII only: splitting off the unit byte must not cut a UTF-8 character
    // (found by the request_validation fuzz target).
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_header_is_validated_and_defaults() {
        let req = tonic::Request::new(());
        assert_eq!(namespace(&req).unwrap(), DEFAULT_NAMESPACE);
        let mut req = tonic::Request::new(());
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, "tenant-a.prod_1".parse().unwrap());
        assert_eq!(namespace(&req).unwrap(), "tenant-a.prod_1");
        for bad in ["", "a b", "x/y", &"n".repeat(129)] {
            let mut req = tonic::Request::new(());
            req.metadata_mut()
                .insert(NAMESPACE_HEADER, bad.parse().unwrap());
            assert_eq!(
                namespace(&req).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grpc_timeout_values_parse() {
        use std::time::Duration;
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("1\u{e9}"), None);
    }
}
