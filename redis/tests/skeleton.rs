//! `prism-redis` against a real `redis-server`: health follows the backend
//! (outage and recovery without restarting the plugin), liveness never does,
//! a plugin started before Redis catches up, and a misspelt key is fatal (the
//! shared suite, `prism_testkit::skeleton`), plus recovery from a password
//! that stops working and works again.

use std::time::{Duration, Instant};

use prism_testkit::lifecycle::{health_check, spawn_plugin, text, wait_all_health};
use prism_testkit::skeleton::{self, Subject, Swap};
use prism_testkit::{Redis, ServingStatus, free_port};

const PLUGIN: Subject<Redis> = Subject::new(env!("CARGO_BIN_EXE_prism-redis"), "redis", |redis| {
    vec![("REDIS_ADDRESS", redis.addr())]
});
const BIN: &str = PLUGIN.bin;
/// Statuses that follow the backend.
const READY: &[&str] = &["", "readiness", "redis"];
/// First SERVING after spawn (process start plus first connect).
const STARTUP: Duration = PLUGIN.startup;

prism_testkit::skeleton_tests!(PLUGIN;
    outage_turns_readiness_off_and_recovery_turns_it_back_on => outage,
    started_before_redis_it_stays_up_and_catches_up => late_start,
);

#[tokio::test]
async fn serves_all_health_statuses_and_details_with_a_password_that_never_leaks() {
    const PASSWORD: &str = "redis-test-secret-4711";
    let redis = Redis::start_with_args(&["--requirepass", PASSWORD]).await;
    let redis = redis.expect("redis starts");
    let envs = [
        ("REDIS_ADDRESS", &*redis.addr()),
        ("REDIS_PASSWORD", PASSWORD),
    ];
    skeleton::serves_all_health_statuses(&PLUGIN, &envs, PASSWORD).await;
}

#[tokio::test]
async fn misspelt_key_in_the_config_file_exits_64_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plugin.yaml");
    std::fs::write(&path, "backend: { adress: x }\n").expect("write config");
    let args = ["--config", &*path.to_string_lossy()];
    skeleton::bad_config_exits_64_naming_the_key(&PLUGIN, &args, &[], "backend.adress").await;
}

#[tokio::test]
async fn reinitialize_swaps_the_connection_and_a_failed_one_keeps_the_old() {
    let (first, second) = skeleton::two_backends::<Redis>().await;
    let dead = format!("redis://:pw-in-url@127.0.0.1:{}", free_port());
    let swap = Swap {
        detail: "address",
        before: first.addr(),
        to: vec![("address", text(&second.url()))],
        after: second.addr(),
        unreachable: vec![("address", text(&dead))],
        secret: Some("pw-in-url"),
        invalid: vec![("address", text("http://cache:6380"))],
        invalid_key: "backend.address",
    };
    skeleton::reinitialize_swaps_and_a_failed_one_keeps_the_old(&PLUGIN, &first, swap).await;
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
