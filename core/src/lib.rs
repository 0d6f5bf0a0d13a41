//! `prism-plugin-core`: everything a Prism backend plugin shares.
//!
//! A plugin implements [`Plugin`] and hands itself to [`run`], which owns the
//! process: CLI flags, layered config, JSON logs, the one gRPC port (lifecycle,
//! `grpc.health.v1`, reflection and the plugin's data services), the request
//! gate that drains on SIGTERM or the Drain RPC, the health loop, and metrics.
//!
//! What two plugins do alike is here too, so a plugin holds only its backend:
//! [`Rotated`] (the backend slot, its Vault rotation and swap, the expired
//! credentials health overlay), [`Call::begin`] (the request preamble),
//! [`ServiceRegistry::add`] (message size limits), [`secret`] (redacting
//! config types) and [`kv::KvService`] (the KeyValue services over a
//! [`kv::Store`]).
#![forbid(unsafe_code)]

mod admission;
mod around;
pub mod authz;
pub mod backend_metrics;
mod call;
mod cli;
pub mod config;
mod connections;
pub mod deadline;
mod error;
mod gate;
mod health;
pub mod kv;
pub mod kv_plugin;
mod lifecycle;
pub mod manifest;
pub mod metrics;
pub mod otel;
mod plugin;
pub mod probe;
pub mod proto;
mod reload;
mod rotated;
pub mod rotation;
mod runtime;
pub mod secret;
mod server;
mod telemetry;
pub mod tls;
mod tls_expiry;
pub mod vault;

pub use admission::AdmissionConfig;
pub use call::{
    Call, DEFAULT_NAMESPACE, NAMESPACE_HEADER, Scope, deadline, namespace, parse_grpc_timeout,
    within,
};
pub use cli::Cli;
pub use connections::ConnectionConfig;
pub use error::{BadSetting, Error};
pub use gate::DrainOutcome;
pub use health::{LIVENESS, READINESS};
pub use manifest::{Manifest, ManifestSource};
pub use plugin::{
    BackendConfig, Context, DataService, HealthReport, HealthStatus, Interface, Plugin,
    ServiceRegistry, Slot,
};
pub use rotated::{Rotated, Stopped};
pub use server::{EXIT_CONFIG, EXIT_FAILURE, run, run_with};

/// Re-exported so plugins implement `Plugin` without naming async-trait.
pub use tonic::async_trait;
