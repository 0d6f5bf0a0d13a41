//! Helpers shared by the `prism-redis` integration tests: spawning the real
//! plugin binary (a `prism_testkit::kv::KvPlugin`) against a real Redis,
//! request builders and polling.
#![allow(dead_code, unused_imports, unreachable_pub)]

use std::time::Duration;

use prism_testkit::Redis;
pub use prism_testkit::kv::{KvPlugin as Plugin, code, get, poll_until, read, req, set};

pub const BIN: &str = env!("CARGO_BIN_EXE_prism-redis");
/// First SERVING after spawn (process start plus first connect).
pub const STARTUP: Duration = Duration::from_secs(15);

/// Spawns the plugin with `envs` (plus text logs) and waits for readiness.
pub async fn start_plugin(envs: &[(&str, &str)]) -> Plugin {
    let plugin = spawn_plugin(envs).await;
    plugin.wait("readiness", STARTUP).await;
    plugin
}

/// Spawns the plugin without waiting for readiness (liveness only).
pub async fn spawn_plugin(envs: &[(&str, &str)]) -> Plugin {
    let plugin = Plugin::spawn(BIN, envs).await;
    plugin.wait("liveness", STARTUP).await;
    plugin
}

/// A real Redis and one plugin on it (`envs` after its address).
pub async fn redis_and_plugin(envs: &[(&str, &str)]) -> (Redis, Plugin) {
    let redis = Redis::start().await.expect("redis starts");
    let addr = redis.addr();
    let mut all = vec![("REDIS_ADDRESS", addr.as_str())];
    all.extend_from_slice(envs);
    let plugin = start_plugin(&all).await;
    (redis, plugin)
}

/// `redis-cli <args>` against `redis`: its output (Redis errors included).
pub async fn cli(redis: &Redis, args: &[&str]) -> String {
    redis.cli(args).await.expect("redis-cli runs")
}
