//! `prism-redis` against a real `redis-server`: health follows the backend
//! (outage and recovery without restarting the plugin), liveness never does,
//! a plugin started before Redis catches up, and a misspelt key is fatal.

use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::{HealthStatus, InitializeResponse};
use prism_testkit::lifecycle::{
    health_check, health_detail, initialize, spawn_plugin, text, wait_all_health,
};
use prism_testkit::{PluginProcess, Redis, ServingStatus, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_prism-redis");
/// Statuses that follow the backend.
const READY: &[&str] = &["", "readiness", "redis"];
/// First SERVING after spawn (process start plus first connect).
const STARTUP: Duration = Duration::from_secs(15);

#[tokio::test]
async fn serves_all_health_statuses_and_details_with_a_password_that_never_leaks() {
    const PASSWORD: &str = "redis-test-secret-4711";
    let redis = Redis::start_with_args(&["--requirepass", PASSWORD])
        .await
        .expect("redis starts");
    let started = Instant::now();
    let (mut plugin, port) = spawn_plugin(
        BIN,
        &[
            ("REDIS_ADDRESS", &redis.addr()),
            ("REDIS_PASSWORD", PASSWORD),
            ("PRISM_LOG_LEVEL", "debug"),
        ],
    )
    .await;
    wait_all_health(
        port,
        &["", "readiness", "liveness", "redis"],
        ServingStatus::Serving,
        STARTUP,
    )
    .await;
    eprintln!(
        "[timing] redis plugin SERVING after {:?}",
        started.elapsed()
    );

    let report = health_check(port).await;
    assert!(
        report.status == HealthStatus::Healthy as i32
            || report.status == HealthStatus::Degraded as i32,
        "{report:?}"
    );
    assert!(report.details.contains_key("latency_ms"), "{report:?}");
    assert!(!format!("{report:?}").contains(PASSWORD));

    plugin.sigterm().expect("sigterm");
    let status = plugin
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", plugin.logs());
    assert!(
        !plugin.logs().contains(PASSWORD),
        "password leaked into logs"
    );
}

#[tokio::test]
async fn outage_turns_readiness_off_and_recovery_turns_it_back_on() {
    let mut redis = Redis::start().await.expect("redis starts");
    let (mut plugin, port) = spawn_plugin(BIN, &[("REDIS_ADDRESS", &redis.addr())]).await;
    wait_all_health(port, READY, ServingStatus::Serving, STARTUP).await;

    redis.stop().await.expect("redis stops");
    let down = wait_all_health(
        port,
        &["readiness", ""],
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("[timing] redis outage noticed after {down:?}");
    wait_all_health(
        port,
        &["liveness"],
        ServingStatus::Serving,
        Duration::from_secs(1),
    )
    .await;
    plugin.assert_running();

    redis.start_again().await.expect("redis restarts");
    let up = wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(5)).await;
    eprintln!("[timing] redis recovery noticed after {up:?}");
    plugin.assert_running();
}

#[tokio::test]
async fn started_before_redis_it_stays_up_and_catches_up() {
    let mut redis = Redis::start().await.expect("redis starts");
    redis.stop().await.expect("redis stops");
    let (mut plugin, port) = spawn_plugin(BIN, &[("REDIS_ADDRESS", &redis.addr())]).await;
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

    redis.start_again().await.expect("redis starts");
    let up = wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(10)).await;
    eprintln!("[timing] redis late start noticed after {up:?}");
    plugin.assert_running();
}

#[tokio::test]
async fn misspelt_key_in_the_config_file_exits_64_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plugin.yaml");
    std::fs::write(&path, "backend: { adress: x }\n").expect("write config");
    let path = path.to_string_lossy().into_owned();
    let mut plugin = PluginProcess::spawn(BIN, &["--config", &path, "--grpc-port", "0"], &[])
        .await
        .expect("spawn");
    let status = plugin
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(64), "{}", plugin.logs());
    assert!(
        plugin.logs().contains("backend.adress"),
        "{}",
        plugin.logs()
    );
}

#[tokio::test]
async fn reinitialize_swaps_the_connection_and_a_failed_one_keeps_the_old() {
    let (first, second) = tokio::join!(Redis::start(), Redis::start());
    let (first, second) = (first.expect("redis starts"), second.expect("redis starts"));
    let (_plugin, port) = spawn_plugin(BIN, &[("REDIS_ADDRESS", &first.addr())]).await;
    wait_all_health(port, READY, ServingStatus::Serving, STARTUP).await;
    assert_eq!(health_detail(port, "address").await, first.addr());

    let InitializeResponse {
        success: ok, error, ..
    } = initialize(port, vec![("address", text(&second.url()))]).await;
    assert!(ok, "{error}");
    assert_eq!(
        health_detail(port, "address").await,
        second.addr(),
        "new connection in use"
    );

    // Unreachable server: retriable failure, the previous connection stays.
    let dead = format!("redis://:pw-in-url@127.0.0.1:{}", free_port());
    let InitializeResponse {
        success: ok, error, ..
    } = initialize(port, vec![("address", text(&dead))]).await;
    assert!(!ok && error.contains("unavailable"), "{error}");
    assert!(!error.contains("pw-in-url"), "{error}");
    // Bad setting: a configuration error naming the key.
    let InitializeResponse {
        success: ok, error, ..
    } = initialize(port, vec![("address", text("http://cache:6380"))]).await;
    assert!(!ok && error.contains("backend.address"), "{error}");
    wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(1)).await;
    assert_eq!(
        health_detail(port, "address").await,
        second.addr(),
        "old connection kept"
    );
}

#[tokio::test]
async fn auth_failure_while_reconnecting_recovers_once_the_password_works_again() {
    const GOOD: &str = "first-password";
    const OTHER: &str = "second-password";
    let redis = Redis::start_with_args(&["--requirepass", GOOD])
        .await
        .expect("redis starts");
    let (mut plugin, port) = spawn_plugin(
        BIN,
        &[("REDIS_ADDRESS", &redis.addr()), ("REDIS_PASSWORD", GOOD)],
    )
    .await;
    wait_all_health(port, READY, ServingStatus::Serving, STARTUP).await;

    // Rotate the server password and drop the plugin's connection: its
    // reconnect now fails authentication (not an I/O error).
    let rotate = |from: &'static str, to: &'static str| {
        let redis = &redis;
        async move {
            let set = redis
                .cli(&["--pass", from, "CONFIG", "SET", "requirepass", to])
                .await
                .expect("config set");
            assert_eq!(set, "OK");
            redis
                .cli(&[
                    "--pass", to, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes",
                ])
                .await
                .expect("client kill");
        }
    };
    rotate(GOOD, OTHER).await;
    wait_all_health(
        port,
        &["readiness"],
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let message = health_check(port).await.message;
        if message.to_ascii_lowercase().contains("auth") || message.contains("WRONGPASS") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no auth failure reported; last: {message}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more health rounds on the failing credentials.
    tokio::time::sleep(Duration::from_secs(1)).await;
    plugin.assert_running();

    // Once the configured password works again the plugin must recover by
    // itself: the connection manager alone would keep the auth error forever.
    rotate(OTHER, GOOD).await;
    let up = wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(5)).await;
    eprintln!("[timing] redis auth recovery noticed after {up:?}");
    assert!(!plugin.logs().contains(GOOD) && !plugin.logs().contains(OTHER));
}
