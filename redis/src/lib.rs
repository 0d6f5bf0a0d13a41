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

pub use config::RedisConfig;
pub use plugin::RedisPlugin;
