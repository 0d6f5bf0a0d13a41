//! Fault: SIGKILL to prism-kafka while a client consumes with
//! acknowledgements (Consume) and publishers keep publishing through a
//! second plugin instance. The killed plugin is started again on the same
//! port and the client reconnects to the same group. Asserted:
//! - 0 acknowledged-then-lost: every acknowledged Publish is delivered to
//!   the consumer before the kill or after the restart;
//! - every message delivered but not acknowledged at the kill is delivered
//!   again after the restart;
//! - nothing covered by a `committed` notice before the kill is delivered
//!   again (acknowledged but not yet committed messages may be: at-least-once,
//!   counted as duplicates).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use prism_faults::{Kind, Load, LoadOptions, Plugin, publish_request, with_deadline};
use prism_plugin_core::proto::pubsub::{
    Ack, ConsumeRequest, Credit, MessageRef, consume_request, consume_response,
};
use prism_testkit::pubsub::open_from_earliest;
use prism_testkit::{Kafka, ServingStatus};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const TOPIC: &str = "faults-jobs";
const GROUP: &str = "faults-workers";
/// Generous bound for waits (a restarted consumer waits for the old
/// member's session, 6 s, to expire before it gets partitions).
const WAIT: Duration = Duration::from_secs(40);

fn envs(brokers: &str) -> Vec<(&str, &str)> {
    vec![
        ("KAFKA_BROKERS", brokers),
        ("PRISM_BACKEND__COMMIT_INTERVAL", "100ms"),
        ("PRISM_BACKEND__DEFAULT_PARTITIONS", "3"),
    ]
}

/// What one consumer session saw.
#[derive(Debug, Default)]
struct Session {
    /// Payload and (partition, offset) of every delivery, in order.
    delivered: Vec<(String, i32, i64)>,
    /// Payloads acknowledged.
    acked: BTreeSet<String>,
    /// Highest committed position per partition (next offset to read).
    committed: BTreeMap<i32, i64>,
}

/// A Consume stream: grants one credit per message and acknowledges each
/// delivery while `ack` is true.
struct Consumer {
    tx: mpsc::Sender<ConsumeRequest>,
    rx: tonic::Streaming<prism_plugin_core::proto::pubsub::ConsumeResponse>,
    session: Session,
}

impl Consumer {
    async fn open(plugin: &Plugin) -> Consumer {
        let (tx, rx) = mpsc::channel(64);
        tx.send(open_from_earliest(TOPIC, GROUP, 20))
            .await
            .expect("send open");
        let rx = plugin
            .streams()
            .consume(ReceiverStream::new(rx))
            .await
            .expect("Consume opens")
            .into_inner();
        Consumer {
            tx,
            rx,
            session: Session::default(),
        }
    }

    /// Receives until `n` messages arrived (acknowledging each when `ack`),
    /// or `timeout`, or the stream ended; returns the count received.
    async fn receive(&mut self, n: usize, ack: bool, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = 0;
        while got < n {
            let next = match tokio::time::timeout_at(deadline, self.rx.message()).await {
                Ok(Ok(Some(reply))) => reply.response,
                _ => break,
            };
            match next {
                Some(consume_response::Response::Message(m)) => {
                    got += 1;
                    let payload = String::from_utf8_lossy(&m.payload).into_owned();
                    self.session
                        .delivered
                        .push((payload.clone(), m.partition, m.offset));
                    let mut requests = vec![ConsumeRequest {
                        request: Some(consume_request::Request::Credit(Credit { messages: 1 })),
                    }];
                    if ack {
                        requests.push(ConsumeRequest {
                            request: Some(consume_request::Request::Ack(Ack {
                                messages: vec![MessageRef {
                                    partition: m.partition,
                                    offset: m.offset,
                                }],
                            })),
                        });
                        self.session.acked.insert(payload);
                    }
                    for request in requests {
                        if self.tx.send(request).await.is_err() {
                            return got;
                        }
                    }
                }
                Some(consume_response::Response::Committed(c)) => {
                    for r in c.offsets {
                        let at = self.session.committed.entry(r.partition).or_default();
                        *at = (*at).max(r.offset);
                    }
                }
                None => {}
            }
        }
        got
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_acknowledged_consume_loses_nothing_and_redelivers_the_unacknowledged() {
    let kafka = Kafka::start().await.expect("tansu starts");
    let brokers = kafka.bootstrap();
    let env = envs(&brokers);
    let publisher = Plugin::start(Kind::Kafka, &env).await;
    let port = prism_testkit::free_port();
    let mut consumer_plugin = Plugin::spawn_on(Kind::Kafka, port, &env).await;
    consumer_plugin.wait_for(ServingStatus::Serving, WAIT).await;

    // Two publishers through the other plugin instance, all along.
    let pubsub = publisher.pubsub();
    let load = Load::start(
        LoadOptions {
            callers: 2,
            pace: Duration::from_millis(20),
            ..LoadOptions::default()
        },
        move |caller, seq| {
            let mut pubsub = pubsub.clone();
            async move {
                let payload = format!("m{caller}-{seq}");
                let request = publish_request(TOPIC, payload.clone(), &format!("k{}", seq % 7));
                pubsub
                    .publish(with_deadline(request, Duration::from_secs(5)))
                    .await?;
                Ok(Some(payload))
            }
        },
    );

    // Consume and acknowledge 60, then keep receiving without acknowledging.
    let mut first = Consumer::open(&consumer_plugin).await;
    let acked_n = first.receive(60, true, WAIT).await;
    assert_eq!(acked_n, 60, "60 messages consumed before the kill");
    // Keep consuming (and acknowledging) until a commit was confirmed, then
    // take 10 more without acknowledging them.
    let deadline = Instant::now() + WAIT;
    while first.session.committed.is_empty() && Instant::now() < deadline {
        first.receive(1, true, Duration::from_millis(200)).await;
    }
    let unacked_n = first.receive(10, false, WAIT).await;
    assert_eq!(unacked_n, 10);
    consumer_plugin
        .process
        .signal(Signal::SIGKILL)
        .expect("SIGKILL");
    let killed = Instant::now();
    consumer_plugin
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("killed plugin exits");
    // The stream ends with an error (or closes) now.
    first.receive(1000, false, Duration::from_secs(2)).await;
    let before = first.session;

    // Restart on the same port; the client reopens in the same group.
    let consumer_plugin = Plugin::spawn_on(Kind::Kafka, port, &env).await;
    consumer_plugin.wait_for(ServingStatus::Serving, WAIT).await;
    let mut second = Consumer::open(&consumer_plugin).await;
    // Publish a little longer after the restart, then stop publishing.
    second.receive(20, true, WAIT).await;
    let report = load.finish().await;
    let published: BTreeSet<String> = report.acked(|_| true).into_iter().collect();
    // Receive until every acknowledged Publish was seen by either session.
    let seen_before: BTreeSet<String> = before.delivered.iter().map(|d| d.0.clone()).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen_after: BTreeSet<String> = second
            .session
            .delivered
            .iter()
            .map(|d| d.0.clone())
            .collect();
        let missing = published
            .iter()
            .filter(|p| !seen_before.contains(*p) && !seen_after.contains(*p))
            .count();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        second.receive(missing, true, Duration::from_secs(2)).await;
    }
    // Anything still in flight shows up within a short quiet period.
    second.receive(10_000, true, Duration::from_secs(2)).await;
    let after = second.session;

    let seen_after: BTreeSet<String> = after.delivered.iter().map(|d| d.0.clone()).collect();
    let lost: Vec<&String> = published
        .iter()
        .filter(|p| !seen_before.contains(*p) && !seen_after.contains(*p))
        .collect();
    let unacked: BTreeSet<String> = seen_before.difference(&before.acked).cloned().collect();
    let not_redelivered: Vec<&String> = unacked.difference(&seen_after).collect();
    let committed_redelivered: Vec<&(String, i32, i64)> = after
        .delivered
        .iter()
        .filter(|(_, partition, offset)| {
            before
                .committed
                .get(partition)
                .is_some_and(|committed| offset < committed)
        })
        .collect();
    let duplicates = before.acked.intersection(&seen_after).count();
    let publish = report.all();
    eprintln!("[kafka-sigkill] publishes: {publish}");
    eprintln!(
        "[kafka-sigkill] before the kill: delivered {}, acknowledged {}, unacknowledged {}, committed {:?}",
        before.delivered.len(),
        before.acked.len(),
        unacked.len(),
        before.committed
    );
    eprintln!(
        "[kafka-sigkill] after the restart ({:?} after the kill): delivered {}; unacknowledged redelivered {}/{}; \
         acknowledged delivered again (not yet committed at the kill) {duplicates}; committed delivered again {}; lost {}",
        killed.elapsed(),
        after.delivered.len(),
        unacked.len() - not_redelivered.len(),
        unacked.len(),
        committed_redelivered.len(),
        lost.len()
    );
    assert_eq!(publish.hung, 0);
    assert_eq!(publish.failed_other_than(&[Code::Unavailable]), 0);
    assert!(published.len() >= 70, "publishers ran: {}", published.len());
    assert!(
        !before.committed.is_empty(),
        "commits landed before the kill"
    );
    assert!(
        lost.is_empty(),
        "acknowledged Publishes never delivered: {lost:?}"
    );
    assert!(
        not_redelivered.is_empty(),
        "unacknowledged at the kill but not delivered again: {not_redelivered:?}"
    );
    assert!(
        committed_redelivered.is_empty(),
        "committed before the kill yet delivered again: {committed_redelivered:?}"
    );
}
