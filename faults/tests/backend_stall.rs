//! Fault: a network stall to the backend, made by freezing it with SIGSTOP
//! (`pause`) while four callers keep calling with a `grpc-timeout`. The
//! TCP connections stay open and nothing answers, the worst case for a
//! client library. Asserted for each plugin: every call ends by its
//! deadline with DEADLINE_EXCEEDED (or UNAVAILABLE once the plugin knows the
//! backend is unreachable: postgres fails fast then), no call hangs,
//! health keeps answering and reports NOT_SERVING, and after SIGCONT calls
//! succeed again without restarting the plugin.

use std::time::{Duration, Instant};

use prism_faults::{Kind, Load, LoadOptions, Plugin, Report, kv_set, with_deadline};
use prism_plugin_core::proto::pubsub::PublishRequest;
use prism_testkit::freeze::FrozenTree;
use prism_testkit::{Kafka, Postgres, Redis, ServingStatus};
use tonic::Code;

/// The deadline of the KeyValue load calls.
const DEADLINE: Duration = Duration::from_secs(1);
/// A call unanswered this long after its deadline is hung.
const HANG_SLACK: Duration = Duration::from_secs(4);
/// Generous bound for waiting on health transitions and recovery.
const WAIT: Duration = Duration::from_secs(20);
/// How long the stall is held after readiness reported it.
const STALL: Duration = Duration::from_millis(1500);

/// A backend the test can freeze and thaw.
trait Pausable {
    fn pause(&mut self);
    fn resume(&mut self);
}

macro_rules! pausable {
    ($t:ty) => {
        impl Pausable for $t {
            fn pause(&mut self) {
                <$t>::pause(self).expect("SIGSTOP the backend");
            }
            fn resume(&mut self) {
                <$t>::resume(self).expect("SIGCONT the backend");
            }
        }
    };
}
pausable!(Redis);
pausable!(Kafka);

/// PostgreSQL forks a backend process per connection, and the plugin's pool
/// keeps its connections open: the whole process tree is frozen (stopping
/// only the postmaster, as `Postgres::pause` does, leaves them answering).
struct FrozenPostgres {
    pg: Postgres,
    frozen: Option<FrozenTree>,
}

impl Pausable for FrozenPostgres {
    fn pause(&mut self) {
        let tree = FrozenTree::freeze_postgres(self.pg.data_dir()).expect("SIGSTOP postgres");
        eprintln!("[postgres] froze {} processes", tree.pids().len());
        self.frozen = Some(tree);
    }
    fn resume(&mut self) {
        if let Some(tree) = self.frozen.take() {
            tree.thaw().expect("SIGCONT postgres");
        }
    }
}

fn options(deadline: Duration) -> LoadOptions {
    LoadOptions {
        callers: 4,
        hang_limit: deadline + HANG_SLACK,
        ..LoadOptions::default()
    }
}

/// Warm-up, SIGSTOP, wait for failures and readiness NOT_SERVING, hold,
/// SIGCONT, wait for 40 successful calls; prints the counts per phase and
/// asserts the guarantees common to every plugin.
async fn stall(
    name: &str,
    plugin: &mut Plugin,
    backend: &mut impl Pausable,
    load: Load,
    allowed: &[Code],
    tolerate_tonic_timeout: bool,
    expect_not_serving: bool,
) -> Report {
    let pid = plugin.process.pid();
    let begin = Instant::now();
    assert!(
        load.wait_calls(begin, 20, WAIT, |r| r.is_ok()).await,
        "warm-up: 20 successful calls"
    );
    let paused = Instant::now();
    backend.pause();
    let frozen = Instant::now();
    let stalled_calls = load.wait_calls(paused, 8, WAIT, |r| !r.is_ok()).await;
    // The control plane keeps answering while the backend is frozen.
    let readiness = tokio::time::timeout(WAIT, plugin.health("readiness"))
        .await
        .expect("health answers during the stall")
        .expect("health check");
    eprintln!("[{name}] readiness during the stall: {readiness:?}");
    if expect_not_serving {
        plugin.wait_for(ServingStatus::NotServing, WAIT).await;
    }
    plugin
        .wait_for_service("liveness", ServingStatus::Serving, WAIT)
        .await;
    tokio::time::sleep(STALL).await;
    let resuming = Instant::now();
    backend.resume();
    plugin.wait_for(ServingStatus::Serving, WAIT).await;
    let recovered = load.wait_calls(resuming, 40, WAIT, |r| r.is_ok()).await;
    let report = load.finish().await;
    plugin.assert_running();

    let warm = report.warm_since();
    let before = report.counts(|r| r.started >= warm && r.finished < paused);
    let during = report.counts(|r| r.started >= frozen && r.finished < resuming);
    let after = report.counts(|r| r.started >= resuming);
    let all = report.all();
    // Codes are checked from the first success on (a cold start on a loaded
    // machine is not the fault under test); hangs never pass.
    let steady = report.counts(|r| r.started >= warm);
    let slowest = report.records.iter().map(|r| r.elapsed()).max();
    eprintln!("[{name}] before the stall: {before}");
    eprintln!("[{name}] during the stall: {during}");
    eprintln!("[{name}] after SIGCONT: {after}");
    eprintln!("[{name}] all calls: {all}; slowest call {slowest:?}");
    eprintln!("[{name}] failures seen: {:?}", report.sample_failures(6));

    assert!(stalled_calls, "calls end (fail) during the stall");
    assert!(recovered, "calls succeed again after SIGCONT");
    // tonic's own server timer answers CANCELLED "Timeout expired" when the
    // plugin did not end the call by its deadline first.
    let tonic_timeouts = report
        .records
        .iter()
        .filter(|r| r.started >= warm)
        .filter(|r| r.code() == Some(Code::Cancelled) && r.message() == Some("Timeout expired"))
        .count() as u64;
    eprintln!("[{name}] calls ended by tonic's timer instead of the plugin: {tonic_timeouts}");
    let tolerated = if tolerate_tonic_timeout {
        tonic_timeouts
    } else {
        0
    };
    assert_eq!(
        all.hung, 0,
        "no call outlives its deadline by {HANG_SLACK:?}"
    );
    assert_eq!(
        steady.failed_other_than(allowed) - tolerated,
        0,
        "failures are {allowed:?} only: {:?}",
        report.sample_failures(10)
    );
    assert_eq!(
        before.failed_total() - before.failed_with(Code::Cancelled).min(tolerated),
        0,
        "no failures before the stall"
    );
    assert!(during.sent >= 8, "calls were answered during the stall");
    assert_eq!(during.ok, 0, "nothing succeeds while the backend is frozen");
    let tail = report.last_per_caller(5);
    assert!(
        tail.iter().all(|r| r.is_ok()),
        "every caller's last 5 calls succeeded: {:?}",
        tail.iter().map(|r| &r.outcome).collect::<Vec<_>>()
    );
    assert_eq!(
        plugin.process.pid(),
        pid,
        "the same plugin process throughout"
    );
    report
}

fn kv_load(plugin: &Plugin, deadline: Duration) -> Load {
    let kv = plugin.kv();
    Load::start(options(deadline), move |caller, seq| {
        let mut kv = kv.clone();
        async move {
            let key = format!("c{caller}-{seq}");
            kv.set(with_deadline(kv_set(&key, "stall"), deadline))
                .await?;
            Ok(Some(key))
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stall_ends_calls_by_their_deadline_and_recovers_after_sigcont() {
    let pg = Postgres::start().await.expect("postgres starts");
    let url = pg.url();
    let mut plugin = Plugin::start(Kind::Postgres, &[("DATABASE_URL", url.as_str())]).await;
    let load = kv_load(&plugin, DEADLINE);
    let mut pg = FrozenPostgres { pg, frozen: None };
    let report = stall(
        "postgres",
        &mut plugin,
        &mut pg,
        load,
        // DEADLINE_EXCEEDED until the health probe marks the link down,
        // then UNAVAILABLE at once (README: failing fast).
        &[Code::DeadlineExceeded, Code::Unavailable],
        // The plugin answers 100 ms before the deadline (core's deadline());
        // on an overloaded 2-core machine (a debug build doing SCRAM logins
        // while other tests run) tonic's timer can still win that race.
        true,
        // Readiness NOT_SERVING during the stall: a probe that times out
        // while no data statement is answered means down, even though the
        // frozen server's kernel still completes TCP handshakes.
        true,
    )
    .await;
    assert!(
        report.all().failed_with(Code::DeadlineExceeded) > 0,
        "calls caught in the stall end with DEADLINE_EXCEEDED"
    );
}

/// The plugin's own bound (`connection_timeout + response_timeout`, here
/// 1 s) is shorter than the call's 3 s deadline: DEADLINE_EXCEEDED from it.
#[tokio::test(flavor = "multi_thread")]
async fn redis_stall_ends_calls_by_response_timeout_and_recovers_after_sigcont() {
    let mut redis = Redis::start().await.expect("redis starts");
    let addr = redis.addr();
    let mut plugin = Plugin::start(
        Kind::Redis,
        &[
            ("REDIS_ADDRESS", addr.as_str()),
            ("PRISM_BACKEND__CONNECTION_TIMEOUT", "500ms"),
            ("PRISM_BACKEND__RESPONSE_TIMEOUT", "500ms"),
        ],
    )
    .await;
    let load = kv_load(&plugin, Duration::from_secs(3));
    let report = stall(
        "redis",
        &mut plugin,
        &mut redis,
        load,
        &[Code::DeadlineExceeded, Code::Unavailable],
        false,
        true,
    )
    .await;
    assert!(
        report.all().failed_with(Code::DeadlineExceeded) > 0,
        "calls caught in the stall end with DEADLINE_EXCEEDED"
    );
}

fn publish_load(plugin: &Plugin, topic: &'static str, deadline: Duration) -> Load {
    let pubsub = plugin.pubsub();
    Load::start(options(deadline), move |caller, seq| {
        let mut pubsub = pubsub.clone();
        async move {
            let payload = format!("c{caller}-{seq}");
            let request = PublishRequest {
                topic: topic.to_string(),
                payload: payload.clone().into_bytes().into(),
                metadata: Default::default(),
                partition_key: format!("c{caller}"),
            };
            pubsub.publish(with_deadline(request, deadline)).await?;
            Ok(Some(payload))
        }
    })
}

async fn kafka_and_plugin(extra: &[(&str, &str)]) -> (Kafka, Plugin) {
    let kafka = Kafka::start().await.expect("tansu starts");
    let brokers = kafka.bootstrap();
    let mut envs = vec![("KAFKA_BROKERS", brokers.as_str())];
    envs.extend_from_slice(extra);
    let plugin = Plugin::start(Kind::Kafka, &envs).await;
    (kafka, plugin)
}

/// The call's `grpc-timeout` is shorter than prism-redis's own bound
/// (`connection_timeout + response_timeout`): calls caught in the stall end
/// DEADLINE_EXCEEDED from the plugin (core's `deadline()`), not CANCELLED
/// "Timeout expired" from tonic's server timer.
#[tokio::test(flavor = "multi_thread")]
async fn redis_stall_ends_calls_by_their_deadline_with_deadline_exceeded() {
    let mut redis = Redis::start().await.expect("redis starts");
    let addr = redis.addr();
    let mut plugin = Plugin::start(Kind::Redis, &[("REDIS_ADDRESS", addr.as_str())]).await;
    let load = kv_load(&plugin, DEADLINE);
    let report = stall(
        "redis-deadline",
        &mut plugin,
        &mut redis,
        load,
        &[Code::DeadlineExceeded, Code::Unavailable],
        false,
        true,
    )
    .await;
    assert!(report.all().failed_with(Code::DeadlineExceeded) > 0);
}

/// The plugin's own bound (`produce_timeout` 1.5 s) is shorter than the
/// call's 5 s deadline: every Publish caught in the stall ends UNAVAILABLE,
/// and publishing resumes after SIGCONT. `acks: 1`: see the known bug below
/// for the idempotent producer.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_stall_fails_publishes_by_produce_timeout_and_recovers_after_sigcont() {
    let (mut kafka, mut plugin) = kafka_and_plugin(&[
        ("PRISM_BACKEND__PRODUCE_TIMEOUT", "1500ms"),
        ("PRISM_BACKEND__ACKS", "1"),
    ])
    .await;
    let deadline = Duration::from_secs(5);
    let load = publish_load(&plugin, "faults-stall", deadline);
    let report = stall(
        "kafka",
        &mut plugin,
        &mut kafka,
        load,
        &[Code::Unavailable, Code::DeadlineExceeded],
        false,
        true,
    )
    .await;
    // Everything acknowledged is in the topic (the broker was frozen, not
    // restarted, so nothing was lost).
    let acked = report.acked(|_| true);
    let missing = plugin.tail_missing("faults-stall", &acked, WAIT).await;
    eprintln!(
        "[kafka] {} acknowledged Publishes, {} not consumable",
        acked.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not consumable: {missing:?}"
    );
}

/// The call's 1 s deadline is shorter than `produce_timeout` (10 s): the
/// plugin bounds Publish by the deadline (core's `deadline()`) and answers
/// DEADLINE_EXCEEDED before tonic's server timer (CANCELLED "Timeout
/// expired") does. Before the fix every Publish caught in the stall ended
/// CANCELLED, so the DEADLINE_EXCEEDED count below was 0.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_stall_ends_publishes_by_their_deadline_with_deadline_exceeded() {
    let (mut kafka, mut plugin) = kafka_and_plugin(&[]).await;
    let load = publish_load(&plugin, "faults-stall-deadline", DEADLINE);
    let report = stall(
        "kafka-deadline",
        &mut plugin,
        &mut kafka,
        load,
        &[Code::DeadlineExceeded, Code::Unavailable],
        // The plugin answers 100 ms before the deadline, counted from when
        // its handler starts; tonic's timer counts from the request's
        // arrival, so on an overloaded 2-core machine (four stall tests in
        // parallel) it can still win that race for a few calls (seen: 5 of
        // 15). Counted and printed, like the postgres test.
        true,
        true,
    )
    .await;
    assert!(
        report.all().failed_with(Code::DeadlineExceeded) > 0,
        "Publishes caught in the stall end with DEADLINE_EXCEEDED from the plugin"
    );
}

/// With the default idempotent producer (`acks: all`), Publishes that time
/// out during a broker stall leave librdkafka's producer fenced against
/// tansu ("ProducerFenced ... newer producer with the same
/// transactionalId"): every later send fails. The plugin reports the
/// producer broken (readiness NOT_SERVING) and its health probe replaces it
/// with a new one, so publishing resumes after SIGCONT without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_stall_with_the_idempotent_producer_recovers_after_sigcont() {
    let (mut kafka, mut plugin) =
        kafka_and_plugin(&[("PRISM_BACKEND__PRODUCE_TIMEOUT", "1500ms")]).await;
    let load = publish_load(&plugin, "faults-stall-idempotent", Duration::from_secs(5));
    let report = stall(
        "kafka-idempotent",
        &mut plugin,
        &mut kafka,
        load,
        &[Code::Unavailable, Code::DeadlineExceeded],
        false,
        true,
    )
    .await;
    // Printed, not asserted: whether tansu fences the producer depends on
    // which sends timed out during the stall.
    let details = plugin.health_details().await;
    eprintln!(
        "[kafka-idempotent] producer_rebuilds: {:?}",
        details.get("producer_rebuilds")
    );
    // Replacing the producer loses nothing it acknowledged.
    let acked = report.acked(|_| true);
    let missing = plugin
        .tail_missing("faults-stall-idempotent", &acked, WAIT)
        .await;
    eprintln!(
        "[kafka-idempotent] {} acknowledged Publishes, {} not consumable",
        acked.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not consumable: {missing:?}"
    );
}
