//! `prism-redis`: the Prism cache plugin backed by Redis.
//!
//! Everything process-level (flags, config, gRPC server, health, drain) lives in
//! `prism-plugin-core`; this crate only supplies the Redis plugin.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod error;
mod plugin;
mod service;

/// The Lua scripts behind CompareAndSwap and Increment, for tools that must
/// run exactly what the plugin runs (the benchmark's `redis-benchmark EVAL`).
pub use backend::{INCREMENT_SCRIPT_SOURCE, SWAP_SCRIPT_SOURCE};
pub use config::RedisConfig;
pub use plugin::RedisPlugin;
