//! Fault: SIGTERM to the plugin under a steady load, with calls held in
//! flight by the backend at that moment (a table lock for postgres, a
//! frozen Redis or broker for the others, released shortly after the
//! signal). Asserted for each plugin: every call in flight at SIGTERM
//! completes OK (0 failed in-flight calls); calls that arrive later are
//! refused cleanly: UNAVAILABLE "draining" from the plugin, a refused
//! connection once it closed its port, or cut off unanswered by that close
//! (each counted separately);
//! nothing else fails; the process exits 0 within the drain timeout and
//! logs that it drained.

use std::time::{Duration, Instant};

use prism_faults::{
    CallRecord, Kind, Load, LoadOptions, Plugin, Report, kv_get, publish_request, with_deadline,
};
use prism_testkit::{Kafka, Postgres, Redis};
use tokio::task::JoinHandle;
use tonic::Code;

/// The plugin's drain timeout in these tests.
const DRAIN_TIMEOUT: &str = "15s";
/// Longest wait for the exit (the drain timeout plus slack for a loaded machine).
const EXIT_WAIT: Duration = Duration::from_secs(40);
/// Deadline of every call (above how long calls are held).
const DEADLINE: Duration = Duration::from_secs(10);
/// Generous bound for waits.
const WAIT: Duration = Duration::from_secs(20);

fn options() -> LoadOptions {
    LoadOptions {
        callers: 4,
        hang_limit: DEADLINE + Duration::from_secs(5),
        ..LoadOptions::default()
    }
}

/// How a failed call after SIGTERM was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// UNAVAILABLE from the plugin's gate: it is draining.
    Draining,
    /// The connection was refused or closed before the call reached a
    /// service (the server had stopped): UNAVAILABLE from the client.
    Connection,
    /// A call started after SIGTERM that the server's connection close cut
    /// off before any answer: the client library reports it CANCELLED
    /// ("operation was canceled") or, when the close races the stream's
    /// opening (GOAWAY, then the socket closed), INTERNAL "h2 protocol
    /// error". Such a call got no answer from a service.
    Closed,
    /// Anything else: a failed call.
    Failed,
}

fn refusal(r: &CallRecord, sigterm: Instant) -> Option<Refusal> {
    let (code, message) = (r.code(), r.message().unwrap_or_default());
    if r.is_ok() {
        return None;
    }
    Some(match code {
        Some(Code::Unavailable) if message.contains("draining") => Refusal::Draining,
        Some(Code::Unavailable)
            if [
                "tcp connect error",
                "Connection refused",
                "transport error",
                "connection",
            ]
            .iter()
            .any(|m| message.contains(m)) =>
        {
            Refusal::Connection
        }
        Some(Code::Cancelled) if r.started >= sigterm && message == "operation was canceled" => {
            Refusal::Closed
        }
        Some(Code::Internal) if r.started >= sigterm && message.contains("h2 protocol error") => {
            Refusal::Closed
        }
        _ => Refusal::Failed,
    })
}

/// Calls held in flight, spawned before SIGTERM.
type Held = Vec<JoinHandle<Result<(), tonic::Status>>>;

/// SIGTERM with `held` calls in flight (asserted unfinished), `release`
/// lets the backend answer them, then waits for the exit; prints the counts
/// and asserts the guarantees.
async fn sigterm_under_load(
    name: &str,
    plugin: &mut Plugin,
    load: Load,
    held: Held,
    release: impl std::future::Future<Output = ()>,
) -> Report {
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "setup: the held calls are in flight"
    );
    let sent = Instant::now();
    plugin.process.sigterm().expect("SIGTERM");
    release.await;
    let mut held_ok = 0;
    let mut held_failed = Vec::new();
    for call in held {
        match call.await.expect("held call task") {
            Ok(()) => held_ok += 1,
            Err(status) => held_failed.push(format!("{:?}: {}", status.code(), status.message())),
        }
    }
    let status = plugin
        .process
        .wait_exit(EXIT_WAIT)
        .await
        .expect("the plugin exits after SIGTERM");
    let exited = sent.elapsed();
    // A few more calls against the closed port.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = load.finish().await;
    let logs = plugin.process.logs();

    let warm = report.warm_since();
    let before = report.counts(|r| r.started >= warm && r.finished < sent);
    let all = report.all();
    let count = |want: Refusal| {
        report
            .records
            .iter()
            .filter(|r| r.started >= sent && refusal(r, sent).as_ref() == Some(&want))
            .count()
    };
    let in_flight = report.counts(|r| r.started < sent && r.finished >= sent);
    eprintln!("[{name}] before SIGTERM: {before}");
    eprintln!("[{name}] in flight at SIGTERM (load): {in_flight}");
    eprintln!(
        "[{name}] held calls: {held_ok} completed OK, {} failed {held_failed:?}",
        held_failed.len()
    );
    eprintln!(
        "[{name}] all calls: {all}; calls after SIGTERM refused: {} draining, {} connection, {} cut by the connection close; failed otherwise: {}",
        count(Refusal::Draining),
        count(Refusal::Connection),
        count(Refusal::Closed),
        count(Refusal::Failed)
    );
    eprintln!("[{name}] exit {status:?} {exited:?} after SIGTERM");
    eprintln!("[{name}] failures seen: {:?}", report.sample_failures(6));

    assert!(
        held_failed.is_empty(),
        "held in-flight calls failed: {held_failed:?}"
    );
    assert_eq!(
        in_flight.ok,
        in_flight.sent,
        "every load call in flight at SIGTERM completed OK: {:?}",
        report.sample_failures(10)
    );
    assert_eq!(
        count(Refusal::Failed),
        0,
        "no call failed other than by refusal: {:?}",
        report.sample_failures(10)
    );
    assert_eq!(all.hung, 0);
    assert_eq!(
        before.failed_total(),
        0,
        "no failures before SIGTERM: {:?}",
        report.sample_failures(10)
    );
    assert!(
        count(Refusal::Draining) + count(Refusal::Connection) + count(Refusal::Closed) > 0,
        "calls after SIGTERM are refused"
    );
    assert_eq!(status.code(), Some(0), "exit code 0:\n{logs}");
    assert!(logs.contains("drained"), "{logs}");
    assert!(!logs.contains("drain timeout expired"), "{logs}");
    report
}

async fn spawn_plugin(kind: Kind, envs: &[(&str, &str)]) -> Plugin {
    let mut all = vec![("PRISM_CONTROL_PLANE__DRAIN_TIMEOUT", DRAIN_TIMEOUT)];
    all.extend_from_slice(envs);
    Plugin::start(kind, &all).await
}

fn kv_load(plugin: &Plugin) -> Load {
    plugin.set_load(options(), DEADLINE, |_| "v".into())
}

fn held_gets(plugin: &Plugin, n: usize) -> Held {
    (0..n)
        .map(|i| {
            let mut kv = plugin.kv();
            tokio::spawn(async move {
                kv.get(with_deadline(kv_get(&format!("held-{i}")), DEADLINE))
                    .await
                    .map(drop)
            })
        })
        .collect()
}

async fn warm_up(load: &Load) {
    assert!(
        load.wait_calls(Instant::now(), 20, WAIT, |r| r.is_ok())
            .await,
        "warm-up: 20 successful calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_sigterm_completes_in_flight_calls_and_exits_zero() {
    let pg = Postgres::start().await.expect("postgres starts");
    let url = pg.url();
    let mut plugin = spawn_plugin(Kind::Postgres, &[("DATABASE_URL", url.as_str())]).await;
    let load = kv_load(&plugin);
    warm_up(&load).await;
    // psql holds an exclusive lock on the table: every call blocks on it
    // (the health probe's SELECT 1 does not) until it commits.
    let holder =
        pg.psql("BEGIN; LOCK TABLE prism_kv IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;");
    let test = async {
        let locked = prism_faults::poll_until(WAIT, || pg.exclusively_locked("prism_kv")).await;
        assert!(locked, "the lock is taken");
        let held = held_gets(&plugin, 3);
        let waiting = prism_faults::poll_until(WAIT, || async {
            let n: usize = pg
                .psql(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'prism-postgres' AND wait_event_type = 'Lock'",
                )
                .await
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            n >= 3
        })
        .await;
        assert!(waiting, "the held calls wait for the lock in postgres");
        // The lock holder commits after its pg_sleep: that is the release.
        sigterm_under_load("postgres", &mut plugin, load, held, async {}).await
    };
    let (held_lock, _report) = tokio::join!(holder, test);
    held_lock.expect("lock holder");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sigterm_completes_in_flight_calls_and_exits_zero() {
    let mut redis = Redis::start().await.expect("redis starts");
    let addr = redis.addr();
    let mut plugin = spawn_plugin(
        Kind::Redis,
        &[
            ("REDIS_ADDRESS", addr.as_str()),
            ("PRISM_BACKEND__RESPONSE_TIMEOUT", "8s"),
        ],
    )
    .await;
    let load = kv_load(&plugin);
    warm_up(&load).await;
    // Frozen Redis: calls wait for replies until it is resumed.
    redis.pause().expect("SIGSTOP redis");
    let held = held_gets(&plugin, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.resume().expect("SIGCONT redis");
    };
    sigterm_under_load("redis", &mut plugin, load, held, release).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_sigterm_completes_in_flight_publishes_and_exits_zero() {
    let mut kafka = Kafka::start().await.expect("tansu starts");
    let brokers = kafka.bootstrap();
    let mut plugin = spawn_plugin(Kind::Kafka, &[("KAFKA_BROKERS", brokers.as_str())]).await;
    let pubsub = plugin.pubsub();
    let publish = move |payload: String| {
        let mut pubsub = pubsub.clone();
        async move {
            let request = publish_request("faults-sigterm", payload.clone(), "");
            pubsub.publish(with_deadline(request, DEADLINE)).await?;
            Ok::<_, tonic::Status>(Some(payload))
        }
    };
    let load = {
        let publish = publish.clone();
        Load::start(options(), move |caller, seq| {
            publish(format!("c{caller}-{seq}"))
        })
    };
    warm_up(&load).await;
    // Frozen broker: Publishes wait for their acknowledgement until it is resumed.
    kafka.pause().expect("SIGSTOP tansu");
    let held: Held = (0..3)
        .map(|i| {
            let publish = publish.clone();
            tokio::spawn(async move { publish(format!("held-{i}")).await.map(drop) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        kafka.resume().expect("SIGCONT tansu");
    };
    sigterm_under_load("kafka", &mut plugin, load, held, release).await;
}
