//! `prism.interfaces.timeseries.TimeSeriesBasicInterface` against a real
//! Kafka-protocol broker (tansu): events inserted in random time order (and
//! retried) come back from random range queries exactly once and in order;
//! tag filters, paging with cursors, empty and outlying ranges, validation;
//! bounded memory on a large query and prompt cancel; a broker outage in
//! the middle of a query and the resume from its cursor; the README's
//! grpcurl examples.
//!
//! Every test starts its own broker and plugin, so they run in parallel.
//! `TS_BIG_EVENTS` sets the size of the large query (default 200,000;
//! `make bench` notes how long 1,000,000 take).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use prism_plugin_core::proto::timeseries::time_series_basic_interface_client::TimeSeriesBasicInterfaceClient;
use prism_plugin_core::proto::timeseries::{
    Event, InsertRequest, QueryEnd, QueryRequest, query_response,
};
use prism_testkit::lifecycle::{spawn_plugin_on, wait_plugin_health};
use prism_testkit::{Kafka, KafkaProxy, PluginProcess, ProxyOptions, ServingStatus, free_port};
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_prism-kafka");
const STARTUP: Duration = Duration::from_secs(20);

type Client = TimeSeriesBasicInterfaceClient<Channel>;

struct Harness {
    _kafka: Kafka,
    plugin: PluginProcess,
    port: u16,
    channel: Channel,
}

impl Harness {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let kafka = Kafka::start().await.expect("tansu starts");
        let (plugin, port, channel) = spawn(&kafka.bootstrap(), extra).await;
        Harness {
            _kafka: kafka,
            plugin,
            port,
            channel,
        }
    }

    fn client(&self) -> Client {
        TimeSeriesBasicInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }
}

async fn spawn(brokers: &str, extra: &[(&str, &str)]) -> (PluginProcess, u16, Channel) {
    let port = free_port();
    let mut envs = vec![("KAFKA_BROKERS", brokers)];
    envs.extend_from_slice(extra);
    let plugin = spawn_plugin_on(BIN, port, &[], &envs).await;
    wait_plugin_health(
        &plugin,
        port,
        &["readiness"],
        ServingStatus::Serving,
        STARTUP,
    )
    .await;
    let channel = prism_testkit::connect(port, STARTUP)
        .await
        .expect("connect");
    (plugin, port, channel)
}

fn event(series: &str, ts: i64, id: &str, tags: &[(&str, &str)]) -> Event {
    Event {
        series: series.to_string(),
        timestamp_ms: ts,
        event_id: id.to_string(),
        payload: format!("payload of {id}").into_bytes().into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Inserts `events` in batches of `batch`; every batch must be written whole.
async fn insert_all(client: &mut Client, events: &[Event], batch: usize) {
    for chunk in events.chunks(batch) {
        let reply = client
            .insert(InsertRequest {
                events: chunk.to_vec(),
            })
            .await
            .expect("insert")
            .into_inner();
        assert!(reply.success, "{}", reply.error);
        assert_eq!(reply.inserted as usize, chunk.len());
    }
}

fn query(series: &str, start_ms: i64, end_ms: i64) -> QueryRequest {
    QueryRequest {
        series: series.to_string(),
        start_ms,
        end_ms,
        ..Default::default()
    }
}

/// One call: its events and its `end`, or the status it ended with (and
/// the events before it).
async fn call(
    client: &mut Client,
    req: QueryRequest,
) -> (Vec<Event>, Result<QueryEnd, tonic::Status>) {
    let mut stream = match client.query(req).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut events = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(reply)) => match reply.item {
                Some(query_response::Item::Event(e)) => events.push(e),
                Some(query_response::Item::End(end)) => {
                    assert!(stream.message().await.expect("ok").is_none(), "end is last");
                    return (events, Ok(end));
                }
                None => panic!("empty QueryResponse"),
            },
            Ok(None) => panic!("the stream ended without `end`"),
            Err(status) => return (events, Err(status)),
        }
    }
}

/// Every page of a query with `limit`, concatenated; also the page count.
async fn paged(client: &mut Client, mut req: QueryRequest, limit: i64) -> (Vec<Event>, usize) {
    req.limit = limit;
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let (events, end) = call(client, req.clone()).await;
        let end = end.expect("page ends with `end`");
        assert!(events.len() as i64 <= limit);
        assert_eq!(end.returned, events.len() as i64);
        pages += 1;
        all.extend(events);
        if end.next_cursor.is_empty() {
            return (all, pages);
        }
        req.cursor = end.next_cursor;
    }
}

/// (id, timestamp) of each event, in order.
fn ids(events: &[Event]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|e| (e.event_id.clone(), e.timestamp_ms))
        .collect()
}

/// `got` is exactly `want` (a set of (id, ts)) in timestamp order, once each.
fn assert_matches(got: &[Event], want: &BTreeMap<(i64, String), ()>, what: &str) {
    let mut seen = HashSet::new();
    for pair in got.windows(2) {
        assert!(
            pair[0].timestamp_ms <= pair[1].timestamp_ms,
            "{what}: out of order: {} then {}",
            pair[0].timestamp_ms,
            pair[1].timestamp_ms
        );
    }
    for e in got {
        assert!(
            seen.insert((e.timestamp_ms, e.event_id.clone())),
            "{what}: duplicate {} at {}",
            e.event_id,
            e.timestamp_ms
        );
        assert!(
            want.contains_key(&(e.timestamp_ms, e.event_id.clone())),
            "{what}: unexpected {} at {}",
            e.event_id,
            e.timestamp_ms
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: count");
}

/// Base of the test timestamps (2026-01-01T00:00:00Z).
const BASE: i64 = 1_767_225_600_000;

/// 20,000 events over 6 partitions, inserted in random time order in
/// batches that are each sent twice (a retried Insert), some three times;
/// 50 random range queries each return exactly the reference's events, in
/// order, once.
#[tokio::test(flavor = "multi_thread")]
async fn random_order_inserts_come_back_in_order_once_for_50_random_ranges() {
    let h = Harness::start(&[("PRISM_BACKEND__TIMESERIES__LOOKAHEAD", "5000")]).await;
    let mut client = h.client();
    let mut rng = fastrand::Rng::with_seed(16);
    // 20,000 events over 60 s: many share a millisecond.
    let mut events: Vec<Event> = (0..20_000)
        .map(|i| {
            let host = format!("h{}", i % 5);
            event(
                "metrics",
                BASE + rng.i64(0..60_000),
                &format!("e{i}"),
                &[("host", &host)],
            )
        })
        .collect();
    rng.shuffle(&mut events);
    let started = Instant::now();
    for (n, chunk) in events.chunks(1000).enumerate() {
        let times = if n % 4 == 0 { 3 } else { 2 };
        for _ in 0..times {
            insert_all(&mut client, chunk, 1000).await;
        }
    }
    eprintln!(
        "[numbers] 20,000 events (x2-3 retries) inserted in {:?}",
        started.elapsed()
    );
    let reference: BTreeMap<i64, Vec<String>> = events.iter().fold(BTreeMap::new(), |mut m, e| {
        m.entry(e.timestamp_ms)
            .or_default()
            .push(e.event_id.clone());
        m
    });
    let started = Instant::now();
    let mut returned = 0;
    for q in 0..50 {
        let a = BASE - 1000 + rng.i64(0..62_000);
        let b = a + 1 + rng.i64(0..(BASE + 61_000 - a).max(2));
        let want: BTreeMap<(i64, String), ()> = reference
            .range(a..b)
            .flat_map(|(ts, ids)| ids.iter().map(|id| ((*ts, id.clone()), ())))
            .collect();
        let t = Instant::now();
        let (got, end) = call(&mut client, query("metrics", a, b)).await;
        if q < 8 {
            eprintln!(
                "[timing] query {q}: {} events in {:?}",
                got.len(),
                t.elapsed()
            );
        }
        let end = end.unwrap_or_else(|s| panic!("query {q}: {s:?}\n{}", h.plugin.log_tail()));
        assert_eq!(end.next_cursor, "");
        assert_eq!(end.returned, got.len() as i64);
        assert_matches(&got, &want, &format!("query {q} [{a}, {b})"));
        returned += got.len();
    }
    eprintln!(
        "[numbers] 50 range queries returned {returned} events in {:?}",
        started.elapsed()
    );
}
