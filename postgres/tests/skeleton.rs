//! `prism-postgres` against a real PostgreSQL server: health follows the
//! backend (outage and recovery without restarting the plugin), liveness never
//! does, a plugin started before the database catches up, and a misspelt key is
//! fatal.

use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::HealthStatus;
use prism_testkit::lifecycle::{
    health_check, health_detail, initialize, number, spawn_plugin, text, wait_all_health,
};
use prism_testkit::{POSTGRES_PASSWORD, PluginProcess, Postgres, ServingStatus, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_prism-postgres");
/// Statuses that follow the backend.
const READY: &[&str] = &["", "readiness", "postgres"];
/// First SERVING after spawn (process start plus first connect).
const STARTUP: Duration = Duration::from_secs(15);

#[tokio::test]
async fn serves_all_health_statuses_and_pool_details_without_leaking_the_password() {
    let pg = Postgres::start().await.expect("postgres starts");
    let started = Instant::now();
    let (mut plugin, port) = spawn_plugin(
        BIN,
        &[
            ("DATABASE_URL", &pg.url()),
            ("POSTGRES_POOL_SIZE", "4"),
            ("PRISM_LOG_LEVEL", "debug"),
        ],
    )
    .await;
    wait_all_health(
        port,
        &["", "readiness", "liveness", "postgres"],
        ServingStatus::Serving,
        STARTUP,
    )
    .await;
    eprintln!(
        "[timing] postgres plugin SERVING after {:?}",
        started.elapsed()
    );

    let report = health_check(port).await;
    assert!(
        report.status == HealthStatus::Healthy as i32
            || report.status == HealthStatus::Degraded as i32,
        "{report:?}"
    );
    for key in ["latency_ms", "pool_size", "pool_idle", "pool_max"] {
        assert!(
            report.details.contains_key(key),
            "{key} missing: {report:?}"
        );
    }
    assert_eq!(
        report.details.get("pool_max").map(String::as_str),
        Some("4"),
        "POSTGRES_POOL_SIZE applies"
    );
    assert!(!format!("{report:?}").contains(POSTGRES_PASSWORD));

    plugin.sigterm().expect("sigterm");
    let status = plugin
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", plugin.logs());
    assert!(
        !plugin.logs().contains(POSTGRES_PASSWORD),
        "password leaked into logs"
    );
}

#[tokio::test]
async fn outage_turns_readiness_off_and_recovery_turns_it_back_on() {
    let mut pg = Postgres::start().await.expect("postgres starts");
    let (mut plugin, port) = spawn_plugin(BIN, &[("DATABASE_URL", &pg.url())]).await;
    wait_all_health(port, READY, ServingStatus::Serving, STARTUP).await;

    pg.stop().await.expect("postgres stops");
    let down = wait_all_health(
        port,
        &["readiness", ""],
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("[timing] postgres outage noticed after {down:?}");
    wait_all_health(
        port,
        &["liveness"],
        ServingStatus::Serving,
        Duration::from_secs(1),
    )
    .await;
    plugin.assert_running();

    pg.start_again().await.expect("postgres restarts");
    let up = wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(5)).await;
    eprintln!("[timing] postgres recovery noticed after {up:?}");
    plugin.assert_running();
}

#[tokio::test]
async fn started_before_postgres_it_stays_up_and_catches_up() {
    let mut pg = Postgres::start().await.expect("postgres starts");
    pg.stop().await.expect("postgres stops");
    let (mut plugin, port) = spawn_plugin(BIN, &[("DATABASE_URL", &pg.url())]).await;
    wait_all_health(port, &["liveness"], ServingStatus::Serving, STARTUP).await;
    wait_all_health(
        port,
        READY,
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;
    // Give the initialize retry loop a few rounds: it must neither exit nor flip.
    tokio::time::sleep(Duration::from_secs(1)).await;
    plugin.assert_running();
    wait_all_health(
        port,
        &["readiness"],
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;

    pg.start_again().await.expect("postgres starts");
    let up = wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(10)).await;
    eprintln!("[timing] postgres late start noticed after {up:?}");
    plugin.assert_running();
}

#[tokio::test]
async fn misspelt_env_key_exits_64_naming_it() {
    let mut plugin = PluginProcess::spawn(
        BIN,
        &["--grpc-port", "0"],
        &[("PRISM_BACKEND__POOL_SISE", "3")],
    )
    .await
    .expect("spawn");
    let status = plugin
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(64), "{}", plugin.logs());
    assert!(
        plugin.logs().contains("backend.pool_sise"),
        "{}",
        plugin.logs()
    );
}

#[tokio::test]
async fn reinitialize_swaps_the_pool_and_a_failed_one_keeps_the_old() {
    let pg = Postgres::start().await.expect("postgres starts");
    let (_plugin, port) = spawn_plugin(BIN, &[("DATABASE_URL", &pg.url())]).await;
    wait_all_health(port, READY, ServingStatus::Serving, STARTUP).await;
    let pool_max = || health_detail(port, "pool_max");
    assert_eq!(pool_max().await, "10", "default pool_size");

    let reply = initialize(port, vec![("pool_size", number(2.0))]).await;
    assert!(reply.success, "{reply:?}");
    assert_eq!(pool_max().await, "2", "new pool in use");

    // Unreachable server: retriable failure, the previous pool stays in use.
    let dead = format!(
        "postgres://prism:{POSTGRES_PASSWORD}@127.0.0.1:{}/prism",
        free_port()
    );
    let reply = initialize(port, vec![("database_url", text(&dead))]).await;
    assert!(!reply.success, "{reply:?}");
    assert!(reply.error.contains("unavailable"), "{}", reply.error);
    assert!(!reply.error.contains(POSTGRES_PASSWORD), "{}", reply.error);
    // Bad setting: a configuration error naming the key.
    let reply = initialize(port, vec![("database_url", text("mysql://u:pw@h/db"))]).await;
    assert!(
        !reply.success && reply.error.contains("backend.database_url"),
        "{reply:?}"
    );
    wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(1)).await;
    assert_eq!(pool_max().await, "2", "old pool kept");
}
