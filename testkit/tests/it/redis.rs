//! Redis: SET/GET via redis-cli, outage, extra args (auth, cluster), parallel
//! instances.

use prism_testkit::Redis;

use crate::{start, start_again, stop, two_at_once};

#[tokio::test]
async fn starts_answers_and_survives_restart() {
    let mut redis = start(Redis::start()).await;
    let port = redis.port();
    assert_eq!(redis.addr(), format!("127.0.0.1:{port}"));
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis.cli(&["SET", "k", "v"]).await.expect("set"), "OK");
    assert_eq!(redis.cli(&["GET", "k"]).await.expect("get"), "v");

    stop(&mut redis).await;
    assert!(redis.cli(&["PING"]).await.is_err(), "server is down");

    start_again(&mut redis).await;
    assert_eq!(
        redis.cli(&["GET", "k"]).await.expect("get"),
        "",
        "no persistence"
    );
    assert_eq!(redis.cli(&["PING"]).await.expect("ping"), "PONG");
}

#[tokio::test]
async fn extra_args_configure_auth() {
    let alice = ["--user", "alice", "on", ">alice-pw", "~app:*", "+@all"];
    let args = [&["--requirepass", "admin-pw"][..], &alice].concat();
    let redis = Redis::start_with_args(&args).await;
    let redis = redis.expect("redis with ACL starts");
    let denied = redis.cli(&["GET", "app:x"]).await.expect("runs");
    assert!(denied.contains("NOAUTH"), "{denied}");
    let alice = ["--user", "alice", "--pass", "alice-pw"];
    assert_eq!(
        redis
            .cli(&[&alice[..], &["SET", "app:x", "1"]].concat())
            .await
            .expect("alice set"),
        "OK"
    );
    let forbidden = redis
        .cli(&[&alice[..], &["SET", "other", "1"]].concat())
        .await
        .expect("runs");
    assert!(forbidden.contains("NOPERM"), "{forbidden}");
}

#[tokio::test]
async fn cluster_mode_via_args() {
    let cluster = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ];
    let redis = Redis::start_with_args(&cluster).await;
    let redis = redis.expect("cluster-mode redis starts");
    let info = redis.cli(&["CLUSTER", "INFO"]).await.expect("cluster info");
    assert!(
        info.contains("cluster_enabled:1") || info.contains("cluster_state"),
        "{info}"
    );
    assert!(redis.dir().join("nodes.conf").exists());
}

#[tokio::test]
async fn two_instances_run_at_once() {
    let (a, b) = two_at_once(Redis::start).await;
    a.cli(&["SET", "k", "a"]).await.expect("set a");
    b.cli(&["SET", "k", "b"]).await.expect("set b");
    assert_eq!(a.cli(&["GET", "k"]).await.expect("get a"), "a");
    assert_eq!(b.cli(&["GET", "k"]).await.expect("get b"), "b");
}

#[tokio::test]
async fn start_failure_reports_log_tail() {
    let err = Redis::start_with_args(&["--no-such-directive", "1"])
        .await
        .expect_err("bad config must fail");
    let msg = err.to_string();
    assert!(
        matches!(err, prism_testkit::Error::ExitedEarly { .. }),
        "{msg}"
    );
    assert!(msg.contains("redis-server exited during startup"), "{msg}");
    assert!(msg.contains("no-such-directive"), "log tail quoted: {msg}");
}
