//! The plugin skeleton every plugin shares, as one suite each plugin's
//! `tests/skeleton.rs` calls with its specifics: health follows the backend
//! (an outage and the recovery without restarting the plugin), liveness never
//! does, a plugin started before its backend catches up, a bad setting exits 64
//! naming its key, and `Initialize` swaps the backend connection while a failed
//! one keeps the old.

use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::{HealthCheckResponse, HealthStatus};

use crate::lifecycle::{health_check, health_detail, initialize, spawn_plugin, wait_all_health};
use crate::{PluginProcess, Server, ServingStatus};

/// The plugin under test.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    /// Its binary (`env!("CARGO_BIN_EXE_prism-…")`).
    pub bin: &'static str,
    /// The health status named after its backend ("postgres", "redis", "kafka").
    pub backend: &'static str,
    /// How long its first SERVING may take (process start plus first connect).
    pub startup: Duration,
}

impl Subject {
    /// The statuses that follow the backend.
    fn ready(&self) -> [&'static str; 3] {
        ["", "readiness", self.backend]
    }
}

/// With `envs` (which carry `secret`, the backend's password) the plugin
/// serves "", readiness, liveness and the backend status; the lifecycle report
/// is Healthy or Degraded with `latency_ms`; SIGTERM exits 0; `secret` is in
/// neither the report nor the debug-level logs. Returns the report, for the
/// details only this plugin has.
pub async fn serves_all_health_statuses(
    plugin: &Subject,
    envs: &[(&str, &str)],
    secret: &str,
) -> HealthCheckResponse {
    let started = Instant::now();
    let mut all = envs.to_vec();
    all.push(("PRISM_LOG_LEVEL", "debug"));
    let (mut process, port) = spawn_plugin(plugin.bin, &all).await;
    let statuses = ["", "readiness", "liveness", plugin.backend];
    wait_all_health(port, &statuses, ServingStatus::Serving, plugin.startup).await;
    eprintln!(
        "[timing] {} plugin SERVING after {:?}",
        plugin.backend,
        started.elapsed()
    );

    let report = health_check(port).await;
    assert!(
        report.status == HealthStatus::Healthy as i32
            || report.status == HealthStatus::Degraded as i32,
        "{report:?}"
    );
    assert!(report.details.contains_key("latency_ms"), "{report:?}");
    assert!(!format!("{report:?}").contains(secret));

    process.sigterm().expect("sigterm");
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", process.logs());
    assert!(
        !process.logs().contains(secret),
        "password leaked into logs"
    );
    report
}

/// Stopping the backend turns "" and readiness NOT_SERVING within 3 s while
/// liveness stays SERVING and the plugin runs; restarting it turns every
/// status back on within 5 s, without restarting the plugin. Returns the
/// plugin, for checks of its logs.
pub async fn outage_turns_readiness_off_and_recovery_turns_it_back_on(
    plugin: &Subject,
    mut backend: impl Server,
    envs: &[(&str, &str)],
) -> PluginProcess {
    let ready = plugin.ready();
    let (mut process, port) = spawn_plugin(plugin.bin, envs).await;
    wait_all_health(port, &ready, ServingStatus::Serving, plugin.startup).await;

    backend.stop().await.expect("backend stops");
    let down = wait_all_health(
        port,
        &["readiness", ""],
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("[timing] {} outage noticed after {down:?}", plugin.backend);
    wait_all_health(
        port,
        &["liveness"],
        ServingStatus::Serving,
        Duration::from_secs(1),
    )
    .await;
    process.assert_running();

    backend.start_again().await.expect("backend restarts");
    let up = wait_all_health(port, &ready, ServingStatus::Serving, Duration::from_secs(5)).await;
    eprintln!("[timing] {} recovery noticed after {up:?}", plugin.backend);
    process.assert_running();
    process
}

/// Started while its (stopped) backend is down, the plugin is live but not
/// ready, keeps retrying without exiting or flipping, and turns ready within
/// 10 s of the backend starting.
pub async fn started_before_the_backend_it_stays_up_and_catches_up(
    plugin: &Subject,
    mut backend: impl Server,
    envs: &[(&str, &str)],
) {
    let ready = plugin.ready();
    backend.stop().await.expect("backend stops");
    let (mut process, port) = spawn_plugin(plugin.bin, envs).await;
    wait_all_health(port, &["liveness"], ServingStatus::Serving, plugin.startup).await;
    wait_all_health(
        port,
        &ready,
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;
    // Give the initialize retry loop a few rounds: it must neither exit nor flip.
    tokio::time::sleep(Duration::from_secs(1)).await;
    process.assert_running();
    wait_all_health(
        port,
        &["readiness"],
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;

    backend.start_again().await.expect("backend starts");
    let up = wait_all_health(
        port,
        &ready,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "[timing] {} late start noticed after {up:?}",
        plugin.backend
    );
    process.assert_running();
}

/// Started with `args` (before `--grpc-port 0`) and `envs` carrying a bad
/// setting, the plugin exits 64 within 10 s and its logs name `key`.
pub async fn bad_config_exits_64_naming_the_key(
    plugin: &Subject,
    args: &[&str],
    envs: &[(&str, &str)],
    key: &str,
) {
    let mut all = args.to_vec();
    all.extend(["--grpc-port", "0"]);
    let mut process = PluginProcess::spawn(plugin.bin, &all, envs)
        .await
        .expect("spawn");
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(64), "{}", process.logs());
    assert!(process.logs().contains(key), "{}", process.logs());
}

/// What a re-`Initialize` changes, for
/// [`reinitialize_swaps_and_a_failed_one_keeps_the_old`].
#[derive(Debug)]
pub struct Swap<'a> {
    /// The health detail that shows which backend connection is in use.
    pub detail: &'a str,
    /// Its value with the plugin's start settings.
    pub before: String,
    /// `Initialize` fields that make a new, working connection.
    pub to: Vec<(&'a str, prost_types::Value)>,
    /// The detail's value after the swap.
    pub after: String,
    /// `Initialize` fields naming an unreachable backend.
    pub unreachable: Vec<(&'a str, prost_types::Value)>,
    /// A secret inside `unreachable` the error must not quote.
    pub secret: Option<&'a str>,
    /// `Initialize` fields with an invalid setting.
    pub invalid: Vec<(&'a str, prost_types::Value)>,
    /// The config key the invalid setting's error names (`backend.…`).
    pub invalid_key: &'a str,
}

/// `Initialize` with `swap.to` replaces the backend connection (the detail
/// changes); an unreachable backend fails retriably ("unavailable", no secret
/// quoted) and an invalid setting fails naming its key, and after both the
/// plugin still serves on the swapped-in connection.
pub async fn reinitialize_swaps_and_a_failed_one_keeps_the_old(
    plugin: &Subject,
    envs: &[(&str, &str)],
    swap: Swap<'_>,
) {
    let ready = plugin.ready();
    let (_process, port) = spawn_plugin(plugin.bin, envs).await;
    wait_all_health(port, &ready, ServingStatus::Serving, plugin.startup).await;
    assert_eq!(health_detail(port, swap.detail).await, swap.before);

    let reply = initialize(port, swap.to).await;
    assert!(reply.success, "{reply:?}");
    assert_eq!(
        health_detail(port, swap.detail).await,
        swap.after,
        "new connection in use"
    );

    // Unreachable backend: retriable failure, the previous connection stays.
    let reply = initialize(port, swap.unreachable).await;
    assert!(
        !reply.success && reply.error.contains("unavailable"),
        "{reply:?}"
    );
    if let Some(secret) = swap.secret {
        assert!(!reply.error.contains(secret), "{}", reply.error);
    }
    // Bad setting: a configuration error naming the key.
    let reply = initialize(port, swap.invalid).await;
    assert!(
        !reply.success && reply.error.contains(swap.invalid_key),
        "{reply:?}"
    );
    wait_all_health(port, &ready, ServingStatus::Serving, Duration::from_secs(1)).await;
    assert_eq!(
        health_detail(port, swap.detail).await,
        swap.after,
        "old connection kept"
    );
}
