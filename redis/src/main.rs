//! `prism-redis`: the Prism cache plugin backed by Redis.
//!
//! Everything process-level (flags, config, gRPC server, health, drain) lives in
//! `prism-plugin-core`; this binary only supplies the Redis plugin.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod error;
mod plugin;
mod service;

fn main() -> std::process::ExitCode {
    prism_plugin_core::run(plugin::RedisPlugin::default())
}
