//! `prism-plugin-core`: everything a Prism backend plugin shares.
//!
//! A plugin implements [`Plugin`] and hands itself to [`run`], which owns the
//! process: CLI flags, layered config, JSON logs, the one gRPC port (lifecycle,
//! `grpc.health.v1`, reflection and the plugin's data services), the request
//! gate that drains on SIGTERM or the Drain RPC, the health loop, and metrics.
#![forbid(unsafe_code)]

mod cli;
pub mod config;
mod error;
mod gate;
mod health;
pub mod kv;
mod lifecycle;
pub mod metrics;
mod plugin;
pub mod proto;
mod runtime;
mod server;
mod telemetry;
pub mod tls;
pub mod vault;

pub use cli::Cli;
pub use error::Error;
pub use gate::DrainOutcome;
pub use health::{LIVENESS, READINESS};
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
