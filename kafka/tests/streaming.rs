//! `prism-kafka`'s data services over real gRPC against a real
//! Kafka-protocol broker (tansu): Publish/Subscribe semantics (metadata,
//! ordering, fan-out, shared groups, backpressure with bounded memory, commits
//! after handoff), Tail positions, acknowledged Consume with redelivery after a
//! client drop and after SIGKILL, outage behaviour and input validation.
//!
//! Every test starts its own broker and plugin, so they run in parallel.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::harness::Harness;
use common::pubsub::next_within;
use futures::StreamExt;
use nix::sys::signal::Signal;
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_plugin_core::proto::pubsub::stream_interface_client::StreamInterfaceClient;
use prism_plugin_core::proto::pubsub::{
    Ack, ConsumeRequest, ConsumeResponse, Credit, Message, MessageRef, PartitionOffsets,
    PublishRequest, StartPosition, SubscribeRequest, TailRequest, UnsubscribeRequest,
    consume_request, consume_response, tail_request,
};
use prism_testkit::lifecycle::{expect_not_serving, expect_serving};
use prism_testkit::otlp::rss_kib;
use prism_testkit::pubsub::open_from_earliest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Longest wait for one expected message (a new group member first waits
/// for its partitions: about half the session timeout with tansu).
const RECV: Duration = Duration::from_secs(15);

/// Group `g`, from the earliest offset.
const GROUP_G: &[(&str, &str)] = &[("group", "g"), ("start", "earliest")];

/// This suite's clients and restart on the shared harness.
impl Harness {
    fn pubsub(&self) -> PubSubBasicInterfaceClient<Channel> {
        PubSubBasicInterfaceClient::new(self.channel.clone())
    }

    fn streams(&self) -> StreamInterfaceClient<Channel> {
        StreamInterfaceClient::new(self.channel.clone())
    }

    /// Kills the plugin with SIGKILL and starts a new one on the same port.
    async fn kill_and_restart(&mut self, extra: &[(&str, &str)]) {
        self.plugin.signal(Signal::SIGKILL).expect("SIGKILL");
        self.plugin
            .wait_exit(Duration::from_secs(5))
            .await
            .expect("killed plugin exits");
        self.respawn(extra).await;
    }
}

fn publish_request(topic: &str, payload: impl Into<Vec<u8>>, key: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.to_string(),
        payload: payload.into().into(),
        metadata: HashMap::new(),
        partition_key: key.to_string(),
    }
}

async fn publish(client: &mut PubSubBasicInterfaceClient<Channel>, req: PublishRequest) -> String {
    let reply = client.publish(req).await.expect("publish").into_inner();
    assert!(reply.success, "{reply:?}");
    assert!(!reply.message_id.is_empty());
    reply.message_id
}

/// Publishes `payloads` with up to 32 requests in flight; returns the ids.
async fn publish_many(
    channel: &Channel,
    topic: &str,
    payloads: Vec<(String, Vec<u8>)>,
) -> Vec<String> {
    futures::stream::iter(payloads)
        .map(|(key, payload)| {
            let mut client = PubSubBasicInterfaceClient::new(channel.clone());
            let req = publish_request(topic, payload, &key);
            async move { publish(&mut client, req).await }
        })
        .buffered(32)
        .collect()
        .await
}

/// Publishes `0..n` (as text) one after another with one key, so the
/// partition holds them in this order.
async fn publish_seq(channel: &Channel, topic: &str, n: usize) {
    let mut client = PubSubBasicInterfaceClient::new(channel.clone());
    for i in 0..n {
        publish(&mut client, publish_request(topic, format!("{i}"), "k")).await;
    }
}

async fn subscribe(
    client: &mut PubSubBasicInterfaceClient<Channel>,
    topic: &str,
    subscriber: &str,
    options: &[(&str, &str)],
) -> Streaming<Message> {
    client
        .subscribe(SubscribeRequest {
            topic: topic.to_string(),
            subscriber_id: subscriber.to_string(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// `message` with a `grpc-timeout` of `timeout`.
fn within<T>(timeout: Duration, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Unsubscribes `subscriber` from `topic`; returns the reply.
async fn unsubscribe(
    client: &mut PubSubBasicInterfaceClient<Channel>,
    topic: &str,
    subscriber: &str,
) -> prism_plugin_core::proto::pubsub::UnsubscribeResponse {
    let request = UnsubscribeRequest {
        topic: topic.into(),
        subscriber_id: subscriber.into(),
    };
    client
        .unsubscribe(request)
        .await
        .expect("unsubscribe")
        .into_inner()
}

async fn collect(stream: &mut Streaming<Message>, n: usize, timeout: Duration) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        out.push(next_within(stream, left.max(Duration::from_millis(1))).await);
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_keeps_metadata_ids_keys_and_millisecond_timestamps() {
    let h = Harness::start(&[]).await;
    let mut client = h.pubsub();
    let mut sub = subscribe(&mut client, "orders", "auditor", &[("start", "earliest")]).await;
    let before = now_ms();
    let mut req = publish_request("orders", b"\x00binary\xffpayload".to_vec(), "customer-7");
    req.metadata = [
        ("trace-id", "abc123"),
        ("content-type", "application/octet-stream"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let id = publish(&mut client, req.clone()).await;
    let after = now_ms();
    let got = next_within(&mut sub, RECV).await;
    assert_eq!(got.topic, "orders");
    assert_eq!(got.payload, req.payload);
    assert_eq!(
        got.metadata, req.metadata,
        "metadata intact, internal headers removed"
    );
    assert_eq!(got.message_id, id);
    assert_eq!(got.partition_key, "customer-7");
    assert!(
        (before - 5..=after + 5).contains(&got.timestamp),
        "timestamp {} is epoch milliseconds within [{before}, {after}]",
        got.timestamp
    );
    assert!(got.offset >= 0 && got.partition >= 0);

    // grpcurl (the gateway's smoke tool) can publish; the subscriber sees it.
    let grpcurl = prism_testkit::grpcurl().expect("grpcurl installed");
    let out = tokio::process::Command::new(grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"topic":"orders","payload":"aGVsbG8=","metadata":{"via":"grpcurl"}}"#,
            &format!("127.0.0.1:{}", h.port),
            "prism.interfaces.pubsub.PubSubBasicInterface/Publish",
        ])
        .output()
        .await
        .expect("grpcurl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("messageId"), "{stdout}");
    let got = next_within(&mut sub, RECV).await;
    assert_eq!(&got.payload[..], b"hello");
    assert_eq!(got.metadata.get("via").map(String::as_str), Some("grpcurl"));
    assert!(stdout.contains(&got.message_id), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_messages_with_one_key_arrive_in_publish_order() {
    let h = Harness::start(&[]).await;
    let mut client = h.pubsub();
    let mut sub = subscribe(&mut client, "ordered", "reader", &[("start", "earliest")]).await;
    // Sequential publishes: each is acknowledged before the next is sent.
    let mut ids = Vec::new();
    for i in 0..500 {
        ids.push(
            publish(
                &mut client,
                publish_request("ordered", format!("{i}"), "same-key"),
            )
            .await,
        );
    }
    let got = collect(&mut sub, 500, Duration::from_secs(30)).await;
    let payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
    let got_ids: Vec<&String> = got.iter().map(|m| &m.message_id).collect();
    assert_eq!(got_ids, ids.iter().collect::<Vec<_>>());
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        500,
        "ids are unique"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_groups_each_get_every_message_and_a_shared_group_splits_partitions() {
    let h = Harness::start(&[("PRISM_BACKEND__DEFAULT_PARTITIONS", "4")]).await;
    let mut client = h.pubsub();
    // Fan-out: two groups.
    let mut a = subscribe(&mut client, "fan", "a", &[("start", "earliest")]).await;
    let mut b = subscribe(&mut client, "fan", "b", &[("start", "earliest")]).await;
    let sent: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("k{i}"), format!("m{i}").into_bytes()))
        .collect();
    publish_many(&h.channel, "fan", sent).await;
    for sub in [&mut a, &mut b] {
        let got = collect(sub, 40, RECV).await;
        let set: HashSet<Vec<u8>> = got.iter().map(|m| m.payload.to_vec()).collect();
        assert_eq!(set.len(), 40, "every message once per group");
    }

    // Shared group: both members join before anything is published, then
    // messages trickle in until each member has received some.
    let workers = [("group", "workers"), ("start", "earliest")];
    let mut x = subscribe(&mut client, "shared", "x", &workers).await;
    let mut y = subscribe(&mut client, "shared", "y", &workers).await;
    let mut seen_x = Vec::new();
    let mut seen_y = Vec::new();
    let mut published = 0;
    let deadline = Instant::now() + Duration::from_secs(25);
    while (seen_x.is_empty() || seen_y.is_empty() || seen_x.len() + seen_y.len() < published)
        && Instant::now() < deadline
    {
        if seen_x.is_empty() || seen_y.is_empty() {
            let batch: Vec<(String, Vec<u8>)> = (published..published + 8)
                .map(|i| (format!("k{i}"), format!("s{i}").into_bytes()))
                .collect();
            publish_many(&h.channel, "shared", batch).await;
            published += 8;
        }
        tokio::select! {
            Ok(Some(m)) = x.message() => seen_x.push(m.payload.to_vec()),
            Ok(Some(m)) = y.message() => seen_y.push(m.payload.to_vec()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    assert!(
        !seen_x.is_empty() && !seen_y.is_empty(),
        "both members got partitions: {} / {}",
        seen_x.len(),
        seen_y.len()
    );
    let all: Vec<&Vec<u8>> = seen_x.iter().chain(&seen_y).collect();
    let unique: HashSet<&Vec<u8>> = all.iter().copied().collect();
    assert_eq!(unique.len(), published, "nothing lost");
    assert_eq!(all.len(), published, "no duplicates across the group");
    eprintln!(
        "[numbers] shared group split {published} messages {} / {}",
        seen_x.len(),
        seen_y.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_subscriber_gets_backpressure_bounded_memory_and_every_message_once() {
    const COUNT: usize = 5000;
    const SIZE: usize = 8 * 1024;
    let h = Harness::start(&[]).await;
    let mut client = h.pubsub();
    let mut sub = subscribe(&mut client, "firehose", "slow", &[("start", "earliest")]).await;
    // Warm up (group join, first fetch) before measuring.
    publish(
        &mut client,
        publish_request("firehose", vec![b'w'; SIZE], ""),
    )
    .await;
    next_within(&mut sub, RECV).await;
    let baseline = rss_kib(h.plugin.pid());

    let channel = h.channel.clone();
    let publisher = tokio::spawn(async move {
        let payloads = (0..COUNT)
            .map(|i| {
                (
                    format!("k{}", i % 16),
                    format!("{i:08}")
                        .into_bytes()
                        .into_iter()
                        .chain(std::iter::repeat_n(b'x', SIZE - 8))
                        .collect(),
                )
            })
            .collect();
        publish_many(&channel, "firehose", payloads).await
    });
    // The slow phase: one message per 100 ms while everything is published.
    let mut got = Vec::new();
    let mut peak = baseline;
    let started = Instant::now();
    while !publisher.is_finished() || started.elapsed() < Duration::from_secs(3) {
        got.push(next_within(&mut sub, RECV).await);
        peak = peak.max(rss_kib(h.plugin.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = publisher.await.expect("publisher");
    assert_eq!(ids.len(), COUNT);
    let slow = got.len();
    let published_mib = COUNT * SIZE / (1024 * 1024);
    let growth_mib = (peak.saturating_sub(baseline)) / 1024;
    eprintln!(
        "[numbers] slow subscriber read {slow} while {COUNT} x {SIZE} B ({published_mib} MiB) were published; plugin RSS {} -> {} MiB (+{growth_mib} MiB)",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < (published_mib as u64) / 2,
        "plugin RSS grew {growth_mib} MiB while {published_mib} MiB were published: not bounded"
    );
    // Then read the rest at full speed: none lost, none duplicated.
    got.extend(collect(&mut sub, COUNT - slow, Duration::from_secs(30)).await);
    let seqs: HashSet<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload[..8]).into_owned())
        .collect();
    if seqs.len() != COUNT {
        let mut by_seq: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
        for m in &got {
            by_seq
                .entry(String::from_utf8_lossy(&m.payload[..8]).into_owned())
                .or_default()
                .push((m.partition, m.offset));
        }
        let dups: Vec<_> = by_seq
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .take(10)
            .collect();
        eprintln!("[debug] duplicates: {dups:?}");
    }
    assert_eq!(seqs.len(), COUNT, "every message exactly once");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.message())
            .await
            .is_err(),
        "no extra messages"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsubscribe_and_client_cancel_end_the_stream_and_commit_what_was_handed_over() {
    let h = Harness::start(&[("PRISM_BACKEND__COMMIT_INTERVAL", "100ms")]).await;
    let mut client = h.pubsub();
    let mut sub = subscribe(&mut client, "events", "s1", GROUP_G).await;
    publish_seq(&h.channel, "events", 10).await;
    let first = collect(&mut sub, 10, RECV).await;
    assert_eq!(first.len(), 10);

    let reply = unsubscribe(&mut client, "events", "s1").await;
    assert!(reply.success, "{reply:?}");
    let end = tokio::time::timeout(Duration::from_secs(10), sub.message())
        .await
        .expect("stream ends");
    assert!(matches!(end, Ok(None)), "clean end of stream: {end:?}");
    let again = unsubscribe(&mut client, "events", "s1").await;
    assert!(
        !again.success && again.error.contains("no active subscription"),
        "{again:?}"
    );

    // The group resumes after the 10 handed-over messages.
    let mut sub = subscribe(&mut client, "events", "s2", GROUP_G).await;
    publish(&mut client, publish_request("events", "10", "k")).await;
    let m = next_within(&mut sub, RECV).await;
    assert_eq!(
        &m.payload[..],
        b"10",
        "nothing handed over before is delivered again"
    );
    // A client that just drops its stream also leaves the group.
    drop(sub);
    publish(&mut client, publish_request("events", "11", "k")).await;
    let mut sub = subscribe(&mut client, "events", "s3", GROUP_G).await;
    let m = next_within(&mut sub, RECV).await;
    assert_eq!(&m.payload[..], b"11");
}

/// A Consume client: sends on `tx`, reads `rx`.
struct Consumer {
    tx: mpsc::Sender<ConsumeRequest>,
    rx: Streaming<ConsumeResponse>,
}

impl Consumer {
    /// Asserts that no message arrives within 700 ms (`why` says why none may).
    async fn assert_no_message(&mut self, why: &str) {
        let event = self.next_event(Duration::from_millis(700)).await;
        let message = matches!(event, Some(consume_response::Response::Message(_)));
        assert!(!message, "{why}");
    }

    async fn open(h: &Harness, topic: &str, group: &str, credit: i32) -> Self {
        let (tx, rx) = mpsc::channel(16);
        tx.send(open_from_earliest(topic, group, credit))
            .await
            .expect("send open");
        let opened = h.streams().consume(ReceiverStream::new(rx)).await;
        let rx = opened.expect("consume").into_inner();
        Consumer { tx, rx }
    }

    /// Next delivery, skipping Committed notices (returned separately).
    async fn next_event(&mut self, timeout: Duration) -> Option<consume_response::Response> {
        tokio::time::timeout(timeout, self.rx.message())
            .await
            .ok()
            .and_then(|r| r.expect("consume stream ok"))
            .and_then(|r| r.response)
    }

    async fn messages(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(consume_response::Response::Message(m)) => out.push(m),
                Some(consume_response::Response::Committed(_)) => {}
                None => panic!("only {} of {n} messages arrived", out.len()),
            }
        }
        out
    }

    async fn ack(&self, messages: &[Message]) {
        self.tx
            .send(ConsumeRequest {
                request: Some(consume_request::Request::Ack(Ack {
                    messages: messages
                        .iter()
                        .map(|m| MessageRef {
                            partition: m.partition,
                            offset: m.offset,
                        })
                        .collect(),
                })),
            })
            .await
            .expect("send ack");
    }

    async fn credit(&self, n: i32) {
        self.tx
            .send(ConsumeRequest {
                request: Some(consume_request::Request::Credit(Credit { messages: n })),
            })
            .await
            .expect("send credit");
    }

    /// Waits for a Committed notice covering `partition` up to `offset`.
    async fn committed(&mut self, partition: i32, offset: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(consume_response::Response::Committed(c))
                    if c.offsets
                        .iter()
                        .any(|r| r.partition == partition && r.offset >= offset) =>
                {
                    return;
                }
                Some(_) => {}
                None => panic!("no Committed notice for {partition}@{offset}"),
            }
        }
    }
}

fn payloads(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

const ONE_PARTITION: &[(&str, &str)] = &[
    ("PRISM_BACKEND__DEFAULT_PARTITIONS", "1"),
    ("PRISM_BACKEND__COMMIT_INTERVAL", "100ms"),
];

#[tokio::test(flavor = "multi_thread")]
async fn consume_honours_credit_and_redelivers_exactly_the_unacknowledged_after_a_client_drop() {
    let h = Harness::start(ONE_PARTITION).await;
    publish_seq(&h.channel, "jobs", 20).await;

    let mut c = Consumer::open(&h, "jobs", "workers", 5).await;
    let first = c.messages(5, RECV).await;
    assert_eq!(payloads(&first), ["0", "1", "2", "3", "4"]);
    // No more than the credit: nothing else arrives until credit is granted.
    c.assert_no_message("a message beyond the granted credit")
        .await;
    c.credit(15).await;
    let rest = c.messages(15, RECV).await;
    let all: Vec<Message> = first.into_iter().chain(rest).collect();
    assert_eq!(
        payloads(&all),
        (0..20).map(|i| i.to_string()).collect::<Vec<_>>()
    );

    // Acknowledge 0..=9 and 12: only the contiguous prefix (up to 10) commits.
    c.ack(&all[..10]).await;
    c.ack(&all[12..13]).await;
    c.committed(all[0].partition, all[10].offset, Duration::from_secs(5))
        .await;
    drop(c);

    let mut again = Consumer::open(&h, "jobs", "workers", 100).await;
    let redelivered = again.messages(10, RECV).await;
    assert_eq!(
        payloads(&redelivered),
        (10..20).map(|i| i.to_string()).collect::<Vec<_>>(),
        "exactly the unacknowledged ones (12 was acked past a gap, so it comes again)"
    );
    let why = "nothing acknowledged is delivered again";
    again.assert_no_message(why).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigkill_a_restarted_plugin_redelivers_exactly_the_unacknowledged() {
    let mut h = Harness::start(ONE_PARTITION).await;
    publish_seq(&h.channel, "crashy", 10).await;
    let mut c = Consumer::open(&h, "crashy", "g", 10).await;
    let got = c.messages(10, RECV).await;
    c.ack(&got[..5]).await;
    c.committed(got[0].partition, got[5].offset, Duration::from_secs(5))
        .await;

    h.kill_and_restart(ONE_PARTITION).await;
    let mut again = Consumer::open(&h, "crashy", "g", 100).await;
    let redelivered = again.messages(5, RECV).await;
    assert_eq!(payloads(&redelivered), ["5", "6", "7", "8", "9"]);
    again
        .assert_no_message("acknowledged messages are not delivered again")
        .await;
}

async fn tail(h: &Harness, topic: &str, start: tail_request::Start, max: i64) -> Vec<Message> {
    let mut stream = h
        .streams()
        .tail(TailRequest {
            topic: topic.into(),
            start: Some(start),
            max_messages: max,
        })
        .await
        .expect("tail")
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = tokio::time::timeout(RECV, stream.message())
        .await
        .expect("tail answers")
        .expect("tail ok")
    {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_reads_from_earliest_an_offset_and_a_timestamp_without_a_group() {
    let h = Harness::start(&[("PRISM_BACKEND__DEFAULT_PARTITIONS", "1")]).await;
    let mut client = h.pubsub();
    for i in 0..5 {
        publish(&mut client, publish_request("log", format!("{i}"), "")).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 5..10 {
        publish(&mut client, publish_request("log", format!("{i}"), "")).await;
    }
    let from_start = tail(
        &h,
        "log",
        tail_request::Start::Position(StartPosition::Earliest as i32),
        10,
    )
    .await;
    assert_eq!(
        payloads(&from_start),
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    // Tails commit nothing: a second tail from earliest sees the same.
    let again = tail(
        &h,
        "log",
        tail_request::Start::Position(StartPosition::Earliest as i32),
        3,
    )
    .await;
    assert_eq!(payloads(&again), ["0", "1", "2"]);

    let offsets = PartitionOffsets {
        offsets: [(0, 7)].into_iter().collect(),
    };
    let from_offset = tail(&h, "log", tail_request::Start::Offsets(offsets), 3).await;
    assert_eq!(payloads(&from_offset), ["7", "8", "9"]);
    assert_eq!(from_offset[0].offset, 7);

    let from_time = tail(&h, "log", tail_request::Start::TimestampMs(cut), 5).await;
    assert_eq!(payloads(&from_time), ["5", "6", "7", "8", "9"]);
    assert!(from_time.iter().all(|m| m.timestamp >= cut));

    // Latest: only what is published after the tail started.
    let mut live = h
        .streams()
        .tail(TailRequest {
            topic: "log".into(),
            start: Some(tail_request::Start::Position(StartPosition::Latest as i32)),
            max_messages: 1,
        })
        .await
        .expect("tail")
        .into_inner();
    let deadline = Instant::now() + RECV;
    let mut n = 10;
    let got = loop {
        publish(&mut client, publish_request("log", format!("{n}"), "")).await;
        n += 1;
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), live.message()).await {
            break m.expect("ok").expect("a message");
        }
        assert!(Instant::now() < deadline, "latest tail got nothing");
    };
    let v: i32 = String::from_utf8_lossy(&got.payload)
        .parse()
        .expect("number");
    assert!(v >= 10, "latest tail started at the end, got {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_fails_publishes_unavailable_and_recovers_without_restart() {
    // acks=1 (non-idempotent): a restarted tansu forgets producer ids and an
    // idempotent librdkafka producer then retries UNKNOWN_PRODUCER_ID forever
    // (a broker limitation, see the README); real Kafka keeps that state.
    let mut h = Harness::start(&[
        ("PRISM_BACKEND__PRODUCE_TIMEOUT", "2s"),
        ("PRISM_BACKEND__ACKS", "1"),
    ])
    .await;
    let mut client = h.pubsub();
    publish(&mut client, publish_request("ops", "before", "")).await;
    h.kafka.stop().await.expect("tansu stops");
    let started = Instant::now();
    let err = client
        .publish(publish_request("ops", "during", ""))
        .await
        .expect_err("fails");
    let took = started.elapsed();
    eprintln!(
        "[timing] publish during outage failed after {took:?}: {}",
        err.message()
    );
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        took < Duration::from_secs(6),
        "bounded by the produce timeout: {took:?}"
    );
    expect_not_serving(h.port, "readiness", Duration::from_secs(5)).await;
    expect_serving(h.port, "liveness", Duration::from_secs(1)).await;

    h.kafka.start_again().await.expect("tansu restarts");
    expect_serving(h.port, "readiness", Duration::from_secs(10)).await;
    // The restarted (in-memory) broker lost the topic; the plugin recreates it.
    let request = publish_request("ops", "after", "");
    let failures = publish_until_acked(&h, &mut client, request, Duration::from_secs(15)).await;
    eprintln!("[recovery] failed publishes after restart: {failures:?}");
    let m = first_from_earliest(&mut client, "ops", "after-outage").await;
    assert_eq!(&m.payload[..], b"after");
}

/// Publishes `request` until it is acknowledged, every 250 ms for at most
/// `timeout` (then panics with the plugin's logs); returns the failures.
async fn publish_until_acked(
    h: &Harness,
    client: &mut PubSubBasicInterfaceClient<Channel>,
    request: PublishRequest,
    timeout: Duration,
) -> Vec<tonic::Status> {
    let deadline = Instant::now() + timeout;
    let mut failures = Vec::new();
    loop {
        match client.publish(request.clone()).await {
            Ok(reply) => {
                assert!(reply.into_inner().success);
                return failures;
            }
            Err(err) if Instant::now() < deadline => {
                failures.push(err);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => panic!("publishing never recovered: {err:?}\n{}", h.plugin.logs()),
        }
    }
}

/// The first message a new group `group` reads from the start of `topic`.
async fn first_from_earliest(
    client: &mut PubSubBasicInterfaceClient<Channel>,
    topic: &str,
    group: &str,
) -> Message {
    let mut sub = subscribe(client, topic, group, &[("start", "earliest")]).await;
    next_within(&mut sub, RECV).await
}

/// With the default idempotent producer, a restarted tansu (in memory: it
/// forgot the producer id) answers every send UNKNOWN_PRODUCER_ID and
/// librdkafka retries until `produce_timeout`, forever. The plugin sees
/// sends time out while the broker answers metadata, reports the producer
/// broken and replaces it; publishing recovers without a plugin restart.
/// (Before, every Publish failed `MessageTimedOut` for as long as one
/// cared to wait.)
#[tokio::test(flavor = "multi_thread")]
async fn after_a_broker_restart_the_idempotent_producer_is_replaced_and_publishing_recovers() {
    let mut h = Harness::start(&[("PRISM_BACKEND__PRODUCE_TIMEOUT", "2s")]).await;
    let mut client = h.pubsub();
    publish(&mut client, publish_request("idem", "before", "k")).await;
    h.kafka.stop().await.expect("tansu stops");
    h.kafka.start_again().await.expect("tansu restarts");
    let request = publish_request("idem", "after", "k");
    let failures = publish_until_acked(&h, &mut client, request, Duration::from_secs(40)).await;
    eprintln!(
        "[recovery] {} failed Publishes before the first ack; last: {:?}",
        failures.len(),
        failures.last()
    );
    for err in &failures {
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    assert!(
        h.plugin
            .logs()
            .contains("replaced the failed kafka producer with a new one"),
        "the producer was replaced:\n{}",
        h.plugin.logs()
    );
    let m = first_from_earliest(&mut client, "idem", "after-restart").await;
    assert_eq!(&m.payload[..], b"after");
}

/// A call's `grpc-timeout` bounds its wait on a frozen broker: Publish,
/// and the topic lookup of Subscribe and Tail, end DEADLINE_EXCEEDED from
/// the plugin (not tonic's CANCELLED "Timeout expired"), well before
/// `produce_timeout`; publishing works again after SIGCONT.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_broker_ends_calls_at_their_deadline_with_deadline_exceeded() {
    let mut h = Harness::start(&[("PRISM_BACKEND__PRODUCE_TIMEOUT", "30s")]).await;
    let mut client = h.pubsub();
    publish(&mut client, publish_request("frozen", "before", "k")).await;
    h.kafka.pause().expect("SIGSTOP tansu");
    let short = Duration::from_millis(800);
    let request = within(short, publish_request("frozen", "during", "k"));
    let err = client
        .publish(request)
        .await
        .expect_err("no ack while frozen");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("deadline"), "{err:?}");
    let subscribe = SubscribeRequest {
        topic: "frozen-new".to_string(),
        subscriber_id: "g".to_string(),
        options: HashMap::new(),
    };
    let err = client
        .subscribe(within(short, subscribe))
        .await
        .expect_err("no topic lookup");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let tail = TailRequest {
        topic: "frozen-other".to_string(),
        start: None,
        max_messages: 0,
    };
    let err = h
        .streams()
        .tail(within(short, tail))
        .await
        .expect_err("no metadata");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    h.kafka.resume().expect("SIGCONT tansu");
    // The record queued during the stall may be written now (the README's
    // ambiguity); a new Publish is acknowledged.
    publish(&mut client, publish_request("frozen", "after", "k")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let h = Harness::start(&[("PRISM_BACKEND__MAX_PAYLOAD_BYTES", "1000")]).await;
    let mut client = h.pubsub();
    for (topic, want) in [
        ("", "must not be empty"),
        ("bad topic!", "not a valid topic name"),
        ("..", "not a valid topic name"),
    ] {
        let err = client
            .publish(publish_request(topic, "x", ""))
            .await
            .expect_err(topic);
        assert_eq!(err.code(), Code::InvalidArgument, "{topic:?}: {err:?}");
        assert!(err.message().contains(want), "{topic:?}: {}", err.message());
    }
    let err = client
        .publish(publish_request("fine", vec![0u8; 1001], ""))
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("max_payload_bytes"),
        "{}",
        err.message()
    );
    let mut reserved = publish_request("fine", "x", "");
    reserved
        .metadata
        .insert("prism-message-id".into(), "forged".into());
    let err = client.publish(reserved).await.expect_err("reserved header");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = client
        .subscribe(SubscribeRequest {
            topic: "fine".into(),
            subscriber_id: "s".into(),
            options: [("start".to_string(), "yesterday".to_string())].into(),
        })
        .await
        .expect_err("bad start");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = h
        .streams()
        .tail(TailRequest {
            topic: "fine".into(),
            start: Some(tail_request::Start::Offsets(PartitionOffsets {
                offsets: [(99, 0)].into(),
            })),
            max_messages: 1,
        })
        .await
        .expect_err("no such partition");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Still serving.
    publish(&mut client, publish_request("fine", vec![0u8; 900], "")).await;
}

/// SIGTERM with a Subscribe stream and a Consume stream open: the streams end
/// cleanly (no error status), what was handed over / acknowledged is
/// committed, and the process exits 0 well inside the drain timeout.
#[tokio::test]
async fn sigterm_ends_open_streams_cleanly_and_exits_zero_quickly() {
    let mut h = Harness::start(&[("PRISM_BACKEND__COMMIT_INTERVAL", "100ms")]).await;
    let mut client = h.pubsub();
    let options = [("group", "drain-g"), ("start", "earliest")];
    let mut sub = subscribe(&mut client, "drain-events", "d1", &options).await;
    publish_seq(&h.channel, "drain-events", 5).await;
    assert_eq!(collect(&mut sub, 5, RECV).await.len(), 5);

    let started = std::time::Instant::now();
    h.plugin.sigterm().expect("SIGTERM");
    let end = tokio::time::timeout(Duration::from_secs(15), sub.message())
        .await
        .expect("the stream ends during the drain");
    assert!(matches!(end, Ok(None)), "clean end of stream: {end:?}");
    let status = h
        .plugin
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("plugin exits");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", h.plugin.logs());
    assert!(
        took < Duration::from_secs(15),
        "drain took {took:?}: streams must not wait out the 30 s drain timeout"
    );
    assert!(
        !h.plugin.logs().contains("drain timeout expired"),
        "{}",
        h.plugin.logs()
    );

    // The five handed-over messages were committed: a restarted plugin in the
    // same group sees only new ones.
    h.respawn(&[]).await;
    let mut client = h.pubsub();
    let options = [("group", "drain-g"), ("start", "earliest")];
    let mut sub = subscribe(&mut client, "drain-events", "d1", &options).await;
    let mut publisher = h.pubsub();
    publish(
        &mut publisher,
        publish_request("drain-events", "after", "k"),
    )
    .await;
    let next_message = next_within(&mut sub, RECV).await;
    assert_eq!(next_message.payload.as_ref(), b"after");
}
