//! `prism-postgres` when things go wrong, against a real PostgreSQL: an
//! outage mid-test (UNAVAILABLE fast, readiness NOT_SERVING, recovery without
//! a restart), replicas racing to create the table, and deadlines (the
//! client's and `statement_timeout`) ending blocked statements.

mod common;

use std::time::{Duration, Instant};

use common::{code, get, poll_until, read, req, set, spawn_plugin, start_plugin};
use prism_plugin_core::proto::keyvalue::GetRequest;
use prism_testkit::lifecycle::{expect_not_serving, expect_serving};
use prism_testkit::{POSTGRES_PASSWORD, Postgres, ServingStatus, wait_for_health};
use tonic::Code;

#[tokio::test]
async fn outage_fails_calls_fast_with_unavailable_and_recovery_needs_no_restart() {
    let mut pg = Postgres::start().await.expect("postgres starts");
    let mut plugin = start_plugin(&pg, &[]).await;
    let mut kv = plugin.basic();
    kv.set(req(None, set("before", "x", 0))).await.expect("set");

    pg.stop().await.expect("postgres stops");
    let stopped = Instant::now();
    // The first call may be the one that discovers the outage; all fail UNAVAILABLE.
    for _ in 0..3 {
        let status = kv
            .get(req(None, get("before")))
            .await
            .expect_err("postgres is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(!status.message().contains(POSTGRES_PASSWORD), "{status:?}");
        assert!(
            !status.message().contains("SELECT"),
            "no SQL in errors: {status:?}"
        );
    }
    eprintln!(
        "[timing] first three calls after the stop: {:?}",
        stopped.elapsed()
    );
    expect_not_serving(plugin.port, "readiness", Duration::from_secs(3)).await;
    expect_serving(plugin.port, "liveness", Duration::from_secs(1)).await;
    // Known down: calls fail at once instead of waiting for acquire_timeout.
    for _ in 0..5 {
        let started = Instant::now();
        let status = kv
            .set(req(None, set("during", "x", 0)))
            .await
            .expect_err("down");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "took {:?}",
            started.elapsed()
        );
        assert!(status.message().contains("unreachable"), "{status:?}");
    }
    plugin.assert_running();

    pg.start_again().await.expect("postgres restarts");
    let back = poll_until(Duration::from_secs(5), "calls succeed again", || {
        let mut kv = kv.clone();
        async move { kv.get(req(None, get("before"))).await.is_ok() }
    })
    .await;
    eprintln!("[timing] calls succeed {back:?} after postgres restarted");
    let got = read(&mut kv, None, "before").await;
    assert!(got.found, "data survived the restart");
    kv.set(req(None, set("after", "y", 0)))
        .await
        .expect("set after recovery");
    expect_serving(plugin.port, "readiness", Duration::from_secs(2)).await;
    plugin.assert_running();
}

#[tokio::test]
async fn replicas_starting_together_on_an_empty_database_all_come_up() {
    let pg = Postgres::start().await.expect("postgres starts");
    let envs = [
        ("PRISM_BACKEND__SCHEMA", "race"),
        ("PRISM_BACKEND__TABLE", "items"),
    ];
    let (a, b, c) = tokio::join!(
        spawn_plugin(&pg, &envs),
        spawn_plugin(&pg, &envs),
        spawn_plugin(&pg, &envs)
    );
    let started = Instant::now();
    tokio::join!(
        a.wait("", common::STARTUP),
        b.wait("", common::STARTUP),
        c.wait("", common::STARTUP)
    );
    eprintln!(
        "[timing] three replicas SERVING after {:?}",
        started.elapsed()
    );
    for p in [&a, &b, &c] {
        assert!(
            !p.process.logs().to_lowercase().contains("error"),
            "{}",
            p.process.logs()
        );
    }
    let created = [&a, &b, &c]
        .iter()
        .filter(|p| p.process.logs().contains("created the key-value table"))
        .count();
    assert_eq!(created, 1, "exactly one replica created the table");
    a.basic()
        .set(req(None, set("shared", "from-a", 0)))
        .await
        .expect("set via a");
    let got = c.read(None, "shared").await;
    assert_eq!(&got.value[..], b"from-a");
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'race' AND tablename = 'items'"
        )
        .await
        .unwrap(),
        "3",
        "primary key, scan and expiry indexes"
    );
    // A table this plugin did not create is refused, naming the key.
    pg.psql("CREATE TABLE public.foreign_items (id int)")
        .await
        .unwrap();
    let mut foreign = spawn_plugin(&pg, &[("PRISM_BACKEND__TABLE", "foreign_items")]).await;
    let status = foreign
        .process
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(64), "{}", foreign.process.logs());
    assert!(
        foreign.process.logs().contains("backend.table"),
        "{}",
        foreign.process.logs()
    );
}

#[tokio::test]
async fn deadlines_end_blocked_statements_with_deadline_exceeded_and_free_the_server() {
    let pg = Postgres::start().await.expect("postgres starts");
    let plugin = start_plugin(&pg, &[]).await;
    let tiny = start_plugin(&pg, &[("PRISM_BACKEND__STATEMENT_TIMEOUT", "200ms")]).await;
    let mut kv = plugin.basic();
    kv.set(req(None, set("locked", "x", 0))).await.expect("set");
    let mut tiny_kv = tiny.basic();
    tiny_kv
        .get(req(None, get("locked")))
        .await
        .expect("tiny statement_timeout still serves");

    // psql holds an exclusive lock on the table for 4 s; every statement on
    // it blocks meanwhile.
    let holder =
        pg.psql("BEGIN; LOCK TABLE prism_kv IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;");
    let checks = async {
        let locked = || pg.exclusively_locked("prism_kv");
        poll_until(Duration::from_secs(3), "the lock", locked).await;

        // The client's deadline: DEADLINE_EXCEEDED close to it, not CANCELLED.
        // The header alone (no client-side timer): the server must answer
        // DEADLINE_EXCEEDED itself, however loaded the machine is.
        let mut request = req(None, get("locked"));
        request
            .metadata_mut()
            .insert("grpc-timeout", "1S".parse().expect("header"));
        let started = Instant::now();
        let status = kv.get(request).await.expect_err("blocked");
        let took = started.elapsed();
        eprintln!("[timing] 1 s deadline answered after {took:?}");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(took < Duration::from_millis(2000), "{took:?}");

        // Cancelled on the server too: the blocked backend goes away while
        // the lock is still held (client_connection_check_interval = 1 s).
        let waiting = "SELECT count(*) FROM pg_stat_activity \
                       WHERE application_name = 'prism-postgres' AND wait_event_type = 'Lock'";
        let gone = poll_until(
            Duration::from_millis(2500),
            "the blocked statement to end",
            || async { pg.psql(waiting).await.unwrap() == "0" },
        )
        .await;
        eprintln!("[timing] server-side statement ended {gone:?} after the deadline");

        // statement_timeout: DEADLINE_EXCEEDED as well.
        let started = Instant::now();
        let status = tiny_kv
            .get(req(None, get("locked")))
            .await
            .expect_err("statement_timeout");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("57014"), "{status:?}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        // A deadline while waiting for a pooled connection counts too; the
        // pool still works afterwards.
        let mut request = req(
            None,
            GetRequest {
                key: "locked".into(),
            },
        );
        request
            .metadata_mut()
            .insert("grpc-timeout", "500m".parse().expect("header"));
        assert_eq!(code(kv.get(request).await), Code::DeadlineExceeded);
    };
    let (held, ()) = tokio::join!(holder, checks);
    held.expect("lock holder");
    let got = read(&mut kv, None, "locked").await;
    assert!(got.found);
}

#[tokio::test]
async fn a_frozen_server_turns_readiness_off_and_thawing_turns_it_back_on() {
    // A stall, not a refusal: the whole server tree is SIGSTOPped, so its
    // kernel still accepts TCP connections but nothing answers. The health
    // probe must call that down (no statement was answered while it waited),
    // not "slow".
    let pg = Postgres::start().await.expect("postgres starts");
    let mut plugin = start_plugin(&pg, &[]).await;
    let mut kv = plugin.basic();
    kv.set(req(None, set("k", "v", 0))).await.expect("set");
    let frozen = prism_testkit::freeze::FrozenTree::freeze_postgres(pg.data_dir())
        .expect("SIGSTOP postgres");
    let outcome = wait_for_health(
        plugin.port,
        "readiness",
        ServingStatus::NotServing,
        Duration::from_secs(10),
    )
    .await;
    frozen.thaw().expect("SIGCONT postgres");
    outcome.expect("readiness NOT_SERVING while frozen");
    expect_serving(plugin.port, "readiness", Duration::from_secs(10)).await;
    poll_until(Duration::from_secs(10), "calls succeed again", || {
        let mut kv = kv.clone();
        async move { kv.get(req(None, get("k"))).await.is_ok() }
    })
    .await;
    plugin.assert_running();
}
