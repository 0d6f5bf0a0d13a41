//! Helpers shared by the Kafka test binaries: the plugin spawned and
//! waited for, a refused backend seen from outside, a clean stop, and no
//! key material in logs. [`harness`] starts tansu and a
//! ready plugin; [`secured`] starts tansu behind the TLS/mTLS/SASL test
//! proxy (`tests/sasl.rs` runs the SASL suite on it); [`pubsub`] publishes
//! and subscribes.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

pub mod harness;
pub mod pubsub;
pub mod secured;

use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::{HealthCheckResponse, HealthStatus};
use prism_testkit::lifecycle::{spawn_plugin_on, wait_all_health};
use prism_testkit::{PluginProcess, ServingStatus, free_port};
use tonic::transport::Channel;

/// One multi-threaded `#[tokio::test]` per `name => call;` row, for suites
/// whose tests differ only in their parameters (`call` is a future).
#[allow(unused_macros)] // each test binary uses a different subset
macro_rules! cases {
    ($($(#[$meta:meta])* $name:ident => $call:expr;)+) => {
        $(
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                $call.await;
            }
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use cases;

pub const BIN: &str = env!("CARGO_BIN_EXE_prism-kafka");
pub const STARTUP: Duration = Duration::from_secs(20);
/// Longest wait for one expected message (a new group member first waits
/// for its partitions: about half the session timeout with tansu).
pub const RECV: Duration = Duration::from_secs(20);

/// Test session timeout (the default): tansu holds a JoinGroup for half of
/// it, and under load answers heartbeats late enough that 2 s sessions expire.
pub const SESSION: &str = "6s";

/// Spawns the plugin with text logs and `envs`; returns it and its port.
pub async fn spawn(envs: &[(&str, &str)]) -> (PluginProcess, u16) {
    let port = free_port();
    (spawn_on(port, envs).await, port)
}

/// Spawns the plugin on `port` (e.g. a restarted plugin on the address its
/// clients know) with text logs, [`SESSION`] and `envs` (which win).
pub async fn spawn_on(port: u16, envs: &[(&str, &str)]) -> PluginProcess {
    let mut all = vec![("PRISM_BACKEND__SESSION_TIMEOUT", SESSION)];
    all.extend_from_slice(envs);
    spawn_plugin_on(BIN, port, &[], &all).await
}

/// Waits until `plugin` (on `port`) is ready and returns a channel to it;
/// panics with its logs if it never is.
pub async fn ready_channel(plugin: &PluginProcess, port: u16) -> Channel {
    prism_testkit::wait_for_health(port, "readiness", ServingStatus::Serving, STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    prism_testkit::connect(port, STARTUP)
        .await
        .expect("connect")
}

/// `plugin` (on `port`) comes up live, logs `reason` for every backend
/// attempt, and a probe reports it: Unhealthy naming `reason`, `not_ready`
/// statuses NOT_SERVING while liveness stays SERVING and the process runs.
pub async fn refused_with(plugin: &mut PluginProcess, port: u16, reason: &str, not_ready: &[&str]) {
    let logs = |e: prism_testkit::Error, plugin: &PluginProcess| panic!("{e}\n{}", plugin.logs());
    let live = prism_testkit::wait_for_health(port, "liveness", ServingStatus::Serving, STARTUP);
    live.await.unwrap_or_else(|e| logs(e, plugin));
    let logged = plugin.wait_for_log(reason, STARTUP).await;
    logged.unwrap_or_else(|e| logs(e, plugin));
    wait_for_report(port, HealthStatus::Unhealthy, reason, STARTUP).await;
    wait_all_health(port, not_ready, ServingStatus::NotServing, STARTUP).await;
    wait_all_health(port, &["liveness"], ServingStatus::Serving, STARTUP).await;
    let status = plugin.try_status().expect("status");
    assert!(status.is_none(), "plugin exited: {status:?}");
}

/// SIGTERMs `plugin`, waits up to 20 s for it to exit 0, returns its logs.
pub async fn stop(plugin: &mut PluginProcess) -> String {
    plugin.sigterm().expect("sigterm");
    let exited = plugin.wait_exit(Duration::from_secs(20)).await;
    let status = exited.expect("exits");
    assert_eq!(status.code(), Some(0), "{}", plugin.logs());
    plugin.logs()
}

/// Polls the lifecycle `HealthCheck` of the plugin at `port` until it
/// reports `status` with a message containing `reason` (so a probe has run
/// and seen it) and returns that report; panics with the last one after
/// `timeout`.
pub async fn wait_for_report(
    port: u16,
    status: HealthStatus,
    reason: &str,
    timeout: Duration,
) -> HealthCheckResponse {
    let deadline = Instant::now() + timeout;
    loop {
        let report = prism_testkit::lifecycle::health_check(port).await;
        if report.status == status as i32 && report.message.contains(reason) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "no {status:?} report mentioning {reason:?} within {timeout:?}; last: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No line of any of the PEM private `keys` appears in `text` (`what` names it).
pub fn assert_no_key_in<'a>(text: &str, what: &str, keys: impl IntoIterator<Item = &'a str>) {
    for key in keys {
        for line in prism_testkit::key_lines(key) {
            assert!(!text.contains(line), "private key material in the {what}");
        }
    }
}
