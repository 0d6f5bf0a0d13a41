//! Helpers shared by the `prism-redis` integration tests: spawning the real
//! plugin binary (a `prism_testkit::kv::KvPlugin`) against a real Redis,
//! request builders and polling.
#![allow(dead_code, unused_imports, unreachable_pub)]

use std::time::Duration;

use prism_testkit::Redis;
pub use prism_testkit::kv::{KvPlugin as Plugin, code, get, poll_until, read, req, set, timed};

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

/// Starts one cluster-enabled node (its `nodes.conf` lives in its own dir and
/// survives `stop`/`start_again`, so a restarted node rejoins with its slots).
pub async fn cluster_node() -> Redis {
    Redis::start_with_args(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    ])
    .await
    .expect("cluster node starts")
}

/// Polls until every node reports `cluster_state:ok`; returns how long it took.
pub async fn wait_cluster_ok(nodes: &[Redis], timeout: Duration) -> Duration {
    poll_until(timeout, "cluster_state:ok on every node", || async {
        for node in nodes {
            let info = node.cli(&["CLUSTER", "INFO"]).await.unwrap_or_default();
            if !info.contains("cluster_state:ok") {
                return false;
            }
        }
        true
    })
    .await
}

/// A three-node Redis Cluster (no replicas), every slot covered and
/// `cluster_state:ok` on every node, and the `cluster_nodes` setting naming
/// its nodes.
pub async fn start_cluster() -> (Vec<Redis>, String) {
    let (a, b, c) = tokio::join!(cluster_node(), cluster_node(), cluster_node());
    let nodes = vec![a, b, c];
    let addrs: Vec<String> = nodes.iter().map(Redis::addr).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = nodes[0]
        .cli(&create)
        .await
        .expect("redis-cli --cluster create");
    assert!(out.contains("All 16384 slots covered"), "{out}");
    let formed = wait_cluster_ok(&nodes, Duration::from_secs(30)).await;
    eprintln!("[timing] cluster_state:ok {formed:?} after create");
    (nodes, format!("[{}]", addrs.join(", ")))
}

/// The plugin on a fresh three-node cluster (with its nodes).
pub async fn cluster_and_plugin() -> (Vec<Redis>, Plugin) {
    let (nodes, seeds) = start_cluster().await;
    let plugin = start_plugin(&[
        ("PRISM_BACKEND__CLUSTER_NODES", &seeds),
        ("PRISM_BACKEND__RESPONSE_TIMEOUT", "5s"),
        ("PRISM_BACKEND__CONNECTION_TIMEOUT", "2s"),
    ])
    .await;
    (nodes, plugin)
}
