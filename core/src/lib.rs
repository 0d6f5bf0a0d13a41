//! `prism-plugin-core`: everything a Prism backend plugin shares.
//!
//! A plugin implements [`Plugin`] and hands itself to [`run`], which owns the
//! process: CLI flags, layered config, JSON logs, the one gRPC port (lifecycle,
//! `grpc.health.v1`, reflection and the plugin's data services), the request
//! gate that drains on SIGTERM or the Drain RPC, the health loop, and metrics.
#![forbid(unsafe_code)]

mod cli;
pub mod config;
pub mod deadline;
mod error;
mod gate;
mod health;
pub mod kv;
mod lifecycle;
pub mod manifest;
pub mod metrics;
mod plugin;
pub mod proto;
pub mod rotation;
mod runtime;
mod server;
mod telemetry;
pub mod tls;
pub mod vault;

pub use cli::Cli;
pub use error::Error;
pub use gate::DrainOutcome;
pub use health::{LIVENESS, READINESS};
pub use manifest::{Manifest, ManifestSource};
pub use plugin::{Context, HealthReport, HealthStatus, Interface, Plugin, ServiceRegistry, Slot};
pub use server::{EXIT_CONFIG, EXIT_FAILURE, run, run_with};

/// Re-exported so plugins implement `Plugin` without naming async-trait.
pub use tonic::async_trait;

/// Request header selecting a key space; absent means [`DEFAULT_NAMESPACE`].
pub const NAMESPACE_HEADER: &str = "x-prism-namespace";
/// Namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Reads and validates the `x-prism-namespace` header: 1–128 bytes of
/// `[A-Za-z0-9._-]`, default `default`. Anything else is `INVALID_ARGUMENT`.
#[allow(clippy::result_large_err)]
pub fn namespace<T>(request: &tonic::Request<T>) -> Result<String, tonic::Status> {
    let Some(value) = request.metadata().get(NAMESPACE_HEADER) else {
        return Ok(DEFAULT_NAMESPACE.to_string());
    };
    let ns = value.to_str().map_err(|_| {
        tonic::Status::invalid_argument(format!("{NAMESPACE_HEADER} must be ASCII"))
    })?;
    let valid = !ns.is_empty()
        && ns.len() <= 128
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(ns.to_string())
    } else {
        Err(tonic::Status::invalid_argument(format!(
            "{NAMESPACE_HEADER} {ns:?} is invalid: use 1-128 characters from [A-Za-z0-9._-]"
        )))
    }
}

/// The client's gRPC deadline (`grpc-timeout` header) as an instant, slightly
/// early: tonic's own timer for the same header answers CANCELLED when it
/// fires first, so a plugin that bounds its backend call with this deadline
/// answers DEADLINE_EXCEEDED (and cancels the backend work) instead.
pub fn deadline<T>(request: &tonic::Request<T>) -> Option<tokio::time::Instant> {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)?;
    // 10 % of the budget, at most 100 ms: enough to win the race against the
    // client's own timer even on a loaded machine.
    let margin = (timeout / 10).min(std::time::Duration::from_millis(100));
    Some(tokio::time::Instant::now() + (timeout - margin))
}

/// Runs `fut` until `deadline` (from [`deadline`]; `None` = no deadline).
/// `None` when the deadline came first: `fut` is dropped, which cancels the
/// backend work it was doing. Every plugin bounds its backend calls with this
/// and maps `None` to its DEADLINE_EXCEEDED error.
pub async fn within<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    fut: F,
) -> Option<F::Output> {
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
