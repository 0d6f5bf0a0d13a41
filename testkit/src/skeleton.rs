//! The plugin skeleton every plugin shares, as one suite each plugin's
//! `tests/skeleton.rs` calls with its specifics (a [`Subject`]): health follows
//! the backend (an outage and the recovery without restarting the plugin),
//! liveness never does, a plugin started before its backend catches up, a bad
//! setting exits 64 naming its key, and `Initialize` swaps the backend
//! connection while a failed one keeps the old. [`skeleton_tests!`](crate::skeleton_tests)
//! writes the tests that need nothing but the [`Subject`].

use std::time::{Duration, Instant};

use ServingStatus::{NotServing, Serving};
use prism_plugin_core::proto::lifecycle::{HealthCheckResponse, HealthStatus};

use crate::lifecycle::{health_check, health_detail, initialize, spawn_plugin, wait_all_health};
use crate::{PluginProcess, Result, Server, ServingStatus};

const SECOND: Duration = Duration::from_secs(1);

/// The plugin under test and how it reaches a backend of type `S`.
#[derive(Debug, Clone, Copy)]
pub struct Subject<S> {
    /// Its binary (`env!("CARGO_BIN_EXE_prism-…")`).
    pub bin: &'static str,
    /// The health status named after its backend ("postgres", "redis", "kafka").
    pub backend: &'static str,
    /// How long its first SERVING may take (process start plus first connect).
    pub startup: Duration,
    /// The env settings pointing the plugin at a backend.
    pub envs: fn(&S) -> Vec<(&'static str, String)>,
}

impl<S: Server> Subject<S> {
    /// A plugin whose first SERVING may take 15 s.
    pub const fn new(
        bin: &'static str,
        backend: &'static str,
        envs: fn(&S) -> Vec<(&'static str, String)>,
    ) -> Self {
        Subject {
            bin,
            backend,
            startup: Duration::from_secs(15),
            envs,
        }
    }

    /// The statuses that follow the backend.
    fn ready(&self) -> [&'static str; 3] {
        ["", "readiness", self.backend]
    }

    /// The plugin spawned on `backend` (not waited for).
    async fn spawn_on(&self, backend: &S) -> (PluginProcess, u16) {
        let envs = (self.envs)(backend);
        spawn_plugin(self.bin, &crate::borrowed_env(&envs)).await
    }

    /// A fresh backend and the plugin spawned on it (not waited for).
    async fn spawn_on_a_backend(&self, stopped: bool) -> (S, PluginProcess, u16) {
        let mut backend = started(S::start().await);
        if stopped {
            backend.stop().await.expect("backend stops");
        }
        let (process, port) = self.spawn_on(&backend).await;
        (backend, process, port)
    }
}

/// Writes `#[tokio::test]`s named as given, each running a suite check that
/// needs nothing but the [`Subject`]:
/// `skeleton_tests!(PLUGIN; outage_turns_… => outage, started_before_… => late_start);`
#[macro_export]
macro_rules! skeleton_tests {
    ($subject:expr; $($name:ident => $check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::skeleton::$check(&$subject).await;
            }
        )*
    };
}

/// With `envs` (which carry `secret`, the backend's password) the plugin
/// serves "", readiness, liveness and the backend status; the lifecycle report
/// is Healthy or Degraded with `latency_ms`; SIGTERM exits 0; `secret` is in
/// neither the report nor the debug-level logs. Returns the report, for the
/// details only this plugin has.
pub async fn serves_all_health_statuses<S: Server>(
    plugin: &Subject<S>,
    envs: &[(&str, &str)],
    secret: &str,
) -> HealthCheckResponse {
    let started = Instant::now();
    let mut all = envs.to_vec();
    all.push(("PRISM_LOG_LEVEL", "debug"));
    let (mut process, port) = spawn_plugin(plugin.bin, &all).await;
    let statuses = ["", "readiness", "liveness", plugin.backend];
    wait_all_health(port, &statuses, Serving, plugin.startup).await;
    eprintln!(
        "[timing] {} plugin SERVING after {:?}",
        plugin.backend,
        started.elapsed()
    );

    let report = health_check(port).await;
    let healthy = [HealthStatus::Healthy as i32, HealthStatus::Degraded as i32];
    assert!(healthy.contains(&report.status), "{report:?}");
    assert!(report.details.contains_key("latency_ms"), "{report:?}");
    assert!(!format!("{report:?}").contains(secret));

    let status = process.terminate(10 * SECOND).await;
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
pub async fn outage<S: Server>(plugin: &Subject<S>) -> PluginProcess {
    let ready = plugin.ready();
    let (mut backend, mut process, port) = plugin.spawn_on_a_backend(false).await;
    wait_all_health(port, &ready, Serving, plugin.startup).await;

    backend.stop().await.expect("backend stops");
    let down = wait_all_health(port, &["readiness", ""], NotServing, 3 * SECOND).await;
    eprintln!("[timing] {} outage noticed after {down:?}", plugin.backend);
    wait_all_health(port, &["liveness"], Serving, SECOND).await;
    process.assert_running();

    backend.start_again().await.expect("backend restarts");
    let up = wait_all_health(port, &ready, Serving, 5 * SECOND).await;
    eprintln!("[timing] {} recovery noticed after {up:?}", plugin.backend);
    process.assert_running();
    process
}

/// Started while its (stopped) backend is down, the plugin is live but not
/// ready, keeps retrying without exiting or flipping, and turns ready within
/// 10 s of the backend starting.
pub async fn late_start<S: Server>(plugin: &Subject<S>) {
    let ready = plugin.ready();
    let (mut backend, mut process, port) = plugin.spawn_on_a_backend(true).await;
    wait_all_health(port, &["liveness"], Serving, plugin.startup).await;
    wait_all_health(port, &ready, NotServing, SECOND).await;
    // Give the initialize retry loop a few rounds: it must neither exit nor flip.
    tokio::time::sleep(SECOND).await;
    process.assert_running();
    wait_all_health(port, &["readiness"], NotServing, SECOND).await;

    backend.start_again().await.expect("backend starts");
    let up = wait_all_health(port, &ready, Serving, 10 * SECOND).await;
    eprintln!(
        "[timing] {} late start noticed after {up:?}",
        plugin.backend
    );
    process.assert_running();
}

/// Started with `args` (before `--grpc-port 0`) and `envs` carrying a bad
/// setting, the plugin exits 64 within 10 s and its logs name `key`.
pub async fn bad_config_exits_64_naming_the_key<S>(
    plugin: &Subject<S>,
    args: &[&str],
    envs: &[(&str, &str)],
    key: &str,
) {
    let mut all = args.to_vec();
    all.extend(["--grpc-port", "0"]);
    let spawned = PluginProcess::spawn(plugin.bin, &all, envs).await;
    let mut process = spawned.expect("spawn");
    let status = process.wait_exit(10 * SECOND).await.expect("exits");
    assert_eq!(status.code(), Some(64), "{}", process.logs());
    assert!(process.logs().contains(key), "{}", process.logs());
}

/// What a re-`Initialize` changes, for [`reinitialize_swaps_and_a_failed_one_keeps_the_old`].
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

/// Two fresh backends, started together (a plugin starts on the first and
/// is re-`Initialize`d onto the second).
pub async fn two_backends<S: Server>() -> (S, S) {
    let (first, second) = tokio::join!(S::start(), S::start());
    (started(first), started(second))
}

/// The started backend, or a panic naming the server and why.
fn started<S: Server>(backend: Result<S>) -> S {
    backend.unwrap_or_else(|e| panic!("{} starts: {e}", S::NAME))
}

/// Started on `backend`, the plugin serves; `Initialize` with `swap.to`
/// replaces the backend connection (the detail changes); an unreachable
/// backend fails retriably ("unavailable", no secret quoted) and an invalid
/// setting fails naming its key, and after both the plugin still serves on
/// the swapped-in connection.
pub async fn reinitialize_swaps_and_a_failed_one_keeps_the_old<S: Server>(
    plugin: &Subject<S>,
    backend: &S,
    swap: Swap<'_>,
) {
    let ready = plugin.ready();
    let (_process, port) = plugin.spawn_on(backend).await;
    wait_all_health(port, &ready, Serving, plugin.startup).await;
    let in_use = || health_detail(port, swap.detail);
    assert_eq!(in_use().await, swap.before);

    let reply = initialize(port, swap.to).await;
    assert!(reply.success, "{reply:?}");
    assert_eq!(in_use().await, swap.after, "new connection in use");

    // Unreachable backend: retriable failure, the previous connection stays.
    let reply = initialize(port, swap.unreachable).await;
    let quoted = swap.secret.is_some_and(|s| reply.error.contains(s));
    assert!(
        !reply.success && reply.error.contains("unavailable"),
        "{reply:?}"
    );
    assert!(!quoted, "{}", reply.error);
    // Bad setting: a configuration error naming the key.
    let reply = initialize(port, swap.invalid).await;
    let named = reply.error.contains(swap.invalid_key);
    assert!(!reply.success && named, "{reply:?}");
    wait_all_health(port, &ready, Serving, SECOND).await;
    assert_eq!(in_use().await, swap.after, "old connection kept");
}
