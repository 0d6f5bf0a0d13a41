//! `prism-postgres`: the Prism key-value plugin backed by PostgreSQL.
//!
//! Everything process-level (flags, config, gRPC server, health, drain) lives in
//! `prism-plugin-core`; this crate only supplies the PostgreSQL plugin.
#![forbid(unsafe_code)]

mod atomic;
mod backend;
mod coalesce;
mod config;
mod error;
mod plugin;
mod pool;
mod reaper;
mod schema;
mod service;
mod tls;

pub use config::PostgresConfig;
pub use plugin::PostgresPlugin;
/// The plugin's point Get and Set statements, for tools that must run
/// exactly what it runs (the benchmark's pgbench baseline).
pub use schema::{get_statement, increment_statement, set_statement, swap_statement};
