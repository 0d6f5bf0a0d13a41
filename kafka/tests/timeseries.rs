//! `prism.interfaces.timeseries.TimeSeriesBasicInterface` against a real
//! Kafka-protocol broker (tansu): events inserted in random time order (and
//! retried) come back from random range queries exactly once and in order;
//! tag filters, paging with cursors, empty and outlying ranges, validation;
//! bounded memory on a large query and prompt cancel; a broker outage in
//! the middle of a query and the resume from its cursor; the README's
//! grpcurl examples.
//!
//! Every test starts its own broker and plugin, so they run in parallel.
//! `TS_BIG_EVENTS` sets the size of the large query (default 1,000,000:
//! inserting them took 68-131 s here, the query about a minute; nextest gives
//! that test 6 minutes, see .config/nextest.toml).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::STARTUP;
use common::harness::{Harness, serving};
use prism_plugin_core::proto::timeseries::time_series_basic_interface_client::TimeSeriesBasicInterfaceClient;
use prism_plugin_core::proto::timeseries::{
    Event, InsertRequest, QueryEnd, QueryRequest, query_response,
};
use prism_testkit::{Kafka, KafkaProxy, ProxyOptions, ServingStatus, free_port};
use tonic::Code;
use tonic::transport::Channel;

type Client = TimeSeriesBasicInterfaceClient<Channel>;

/// This suite's client on the shared harness.
impl Harness {
    fn client(&self) -> Client {
        TimeSeriesBasicInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }
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

/// `n` events of `series` (ids `{series}-{i}`) with the timestamp and tags
/// `of(rng, i)` picks, in random order.
fn shuffled(
    rng: &mut fastrand::Rng,
    series: &str,
    n: usize,
    of: impl Fn(&mut fastrand::Rng, usize) -> (i64, Vec<(&'static str, String)>),
) -> Vec<Event> {
    let mut events: Vec<Event> = (0..n)
        .map(|i| {
            let (ts, tags) = of(rng, i);
            let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
            event(series, ts, &format!("{series}-{i}"), &tags)
        })
        .collect();
    rng.shuffle(&mut events);
    events
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
    let events = shuffled(&mut rng, "metrics", 20_000, |rng, i| {
        let host = format!("h{}", i % 5);
        (BASE + rng.i64(0..60_000), vec![("host", host)])
    });
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
        let (got, end) = call(&mut client, query("metrics", a, b)).await;
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

/// The reference's events with timestamps in `[a, b)` and every tag of
/// `tags`, as a set.
fn expected(
    events: &[Event],
    a: i64,
    b: i64,
    tags: &[(&str, &str)],
) -> BTreeMap<(i64, String), ()> {
    events
        .iter()
        .filter(|e| e.timestamp_ms >= a && e.timestamp_ms < b)
        .filter(|e| {
            tags.iter()
                .all(|(k, v)| e.tags.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|e| ((e.timestamp_ms, e.event_id.clone()), ()))
        .collect()
}

/// Tag filter, `limit` + `cursor` paging across partitions (pages
/// concatenated equal the unpaged result), an empty range in the middle,
/// ranges before the first and after the last event, a generated event id,
/// and the validation errors.
#[tokio::test(flavor = "multi_thread")]
async fn tags_paging_empty_and_outlying_ranges_and_validation() {
    let h = Harness::start(&[("PRISM_BACKEND__TIMESERIES__LOOKAHEAD", "500")]).await;
    let mut client = h.client();
    let mut rng = fastrand::Rng::with_seed(5);
    // 3,000 events over 10 s, none in [BASE+4000, BASE+4100), random order.
    let mut events = shuffled(&mut rng, "paging", 3000, |rng, i| {
        let mut ts = BASE + rng.i64(0..9_900);
        if ts >= BASE + 4000 {
            ts += 100;
        }
        let host = ["a", "b", "c"][i % 3].to_string();
        (ts, vec![("host", host), ("dc", "eu".to_string())])
    });
    insert_all(&mut client, &events, 500).await;
    let reply = client
        .insert(InsertRequest {
            events: vec![event("paging", BASE + 5000, "", &[("host", "a")])],
        })
        .await
        .expect("insert")
        .into_inner();
    assert_eq!((reply.inserted, reply.event_ids.len()), (1, 1), "{reply:?}");
    let generated = reply.event_ids[0].clone();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    events.push(event("paging", BASE + 5000, &generated, &[("host", "a")]));

    let (all, end) = call(&mut client, query("paging", BASE, BASE + 10_000)).await;
    assert_eq!(end.expect("end").next_cursor, "");
    assert_matches(
        &all,
        &expected(&events, BASE, BASE + 10_000, &[]),
        "unpaged",
    );
    let (pages, count) = paged(&mut client, query("paging", BASE, BASE + 10_000), 97).await;
    assert_eq!(ids(&pages), ids(&all), "97 per page equals unpaged");
    assert!(count >= 31, "{count} pages");

    let mut tagged = query("paging", BASE, BASE + 10_000);
    tagged.tags = HashMap::from([("host".to_string(), "b".to_string())]);
    let (b_events, _) = call(&mut client, tagged.clone()).await;
    assert_matches(
        &b_events,
        &expected(&events, BASE, BASE + 10_000, &[("host", "b")]),
        "host=b",
    );
    assert!(
        b_events
            .iter()
            .all(|e| e.tags.get("dc").map(String::as_str) == Some("eu"))
    );
    let (b_pages, _) = paged(&mut client, tagged.clone(), 50).await;
    assert_eq!(ids(&b_pages), ids(&b_events), "tag filter paged");

    // Page boundaries inside runs of equal timestamps, every event twice.
    let ties: Vec<Event> = (0..300)
        .map(|i| event("ties", BASE + i % 10, &format!("t{i}"), &[]))
        .collect();
    insert_all(&mut client, &ties, 300).await;
    insert_all(&mut client, &ties, 300).await;
    let (all_ties, _) = call(&mut client, query("ties", BASE, BASE + 10)).await;
    assert_matches(&all_ties, &expected(&ties, BASE, BASE + 10, &[]), "ties");
    let (paged_ties, _) = paged(&mut client, query("ties", BASE, BASE + 10), 7).await;
    assert_eq!(
        ids(&paged_ties),
        ids(&all_ties),
        "pages of 7 across equal timestamps"
    );

    for (what, a, b) in [
        ("empty range in the middle", BASE + 4000, BASE + 4100),
        ("before the first", BASE - 50_000, BASE),
        ("after the last", BASE + 10_000, BASE + 10_000_000),
    ] {
        let (got, end) = call(&mut client, query("paging", a, b)).await;
        let end = end.unwrap_or_else(|s| panic!("{what}: {s:?}"));
        assert!(got.is_empty(), "{what}: {} events", got.len());
        assert_eq!((end.next_cursor.as_str(), end.returned), ("", 0), "{what}");
    }

    // Validation.
    let page = {
        let mut q = query("paging", BASE, BASE + 10_000);
        q.limit = 10;
        call(&mut client, q).await.1.expect("page").next_cursor
    };
    let invalid = [
        ("empty series", query("", BASE, BASE + 1)),
        ("bad series", query("bad series!", BASE, BASE + 1)),
        ("end = start", query("paging", BASE, BASE)),
        ("end < start", query("paging", BASE, BASE - 1)),
        (
            "negative limit",
            QueryRequest {
                limit: -1,
                ..query("paging", BASE, BASE + 1)
            },
        ),
        (
            "garbage cursor",
            QueryRequest {
                cursor: "zz".into(),
                ..query("paging", BASE, BASE + 1)
            },
        ),
        (
            "another query's cursor",
            QueryRequest {
                cursor: page.clone(),
                ..query("paging", BASE, BASE + 9_999)
            },
        ),
        (
            "another filter's cursor",
            QueryRequest {
                cursor: page,
                ..tagged
            },
        ),
    ];
    for (what, req) in invalid {
        let status = call(&mut client, req).await.1.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(!status.message().is_empty());
    }
    let status = call(&mut client, query("no-such-series", 0, 1))
        .await
        .1
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let bad = client
        .insert(InsertRequest {
            events: vec![
                event("paging", BASE, "ok", &[]),
                event("paging", -5, "neg", &[]),
            ],
        })
        .await
        .expect_err("negative timestamp");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("events[1]"), "{bad:?}");
    let (after, _) = call(&mut client, query("paging", BASE, BASE + 1)).await;
    assert!(
        after.iter().all(|e| e.event_id != "ok"),
        "an invalid Insert writes nothing"
    );
}

/// Resident set size of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The bound the large query's RSS growth must stay under (MiB).
const RSS_GROWTH_BOUND_MIB: u64 = 96;

/// A query over `TS_BIG_EVENTS` (default 1,000,000) events streams them all
/// in order while the plugin's RSS grows by less than
/// [`RSS_GROWTH_BOUND_MIB`]; a client that goes away mid-query ends it
/// within a second (the plugin's running streams drop to 0).
#[tokio::test(flavor = "multi_thread")]
async fn a_large_query_streams_in_bounded_memory_and_ends_within_a_second_when_the_client_goes() {
    let n: usize = std::env::var("TS_BIG_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let h = Harness::start(&[]).await;
    let mut client = h.client();
    let mut rng = fastrand::Rng::with_seed(3);
    let payload = vec![b'x'; 100];
    let started = Instant::now();
    let mut batch = Vec::with_capacity(5000);
    for i in 0..n {
        // In time order, with 1 % up to 1 s (1,000 events) late.
        let late = if rng.u8(0..100) == 0 {
            rng.i64(0..1_000)
        } else {
            0
        };
        let mut e = event(
            "big",
            BASE + i as i64 - late,
            &format!("b{i}"),
            &[("k", "v")],
        );
        e.payload = payload.clone().into();
        batch.push(e);
        if batch.len() == 5000 || i + 1 == n {
            insert_all(&mut client, &batch, 5000).await;
            batch.clear();
        }
    }
    let took = started.elapsed();
    eprintln!(
        "[numbers] inserted {n} events in {took:?} ({:.0} events/s)",
        n as f64 / took.as_secs_f64()
    );
    let pid = h.plugin.pid();
    let baseline = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let mut stream = client
        .query(query("big", 0, i64::MAX))
        .await
        .expect("query")
        .into_inner();
    let (mut count, mut last_ts) = (0usize, i64::MIN);
    loop {
        match stream.message().await.expect("ok").expect("end comes").item {
            Some(query_response::Item::Event(e)) => {
                assert!(e.timestamp_ms >= last_ts, "in order");
                last_ts = e.timestamp_ms;
                count += 1;
            }
            Some(query_response::Item::End(end)) => {
                assert_eq!((end.returned as usize, end.next_cursor.as_str()), (n, ""));
                break;
            }
            None => panic!("empty reply"),
        }
    }
    sampler.abort();
    let took = started.elapsed();
    assert_eq!(count, n);
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "[numbers] query of {n} events in {took:?} ({:.0} events/s); plugin RSS {} -> peak {} MiB (+{growth_mib} MiB, bound {RSS_GROWTH_BOUND_MIB} MiB)",
        n as f64 / took.as_secs_f64(),
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < RSS_GROWTH_BOUND_MIB,
        "RSS grew {growth_mib} MiB"
    );

    // A client that goes away: the query task ends within a second.
    let mut stream = client
        .query(query("big", 0, i64::MAX))
        .await
        .expect("query")
        .into_inner();
    for _ in 0..10 {
        stream.message().await.expect("ok").expect("an event");
    }
    assert_eq!(
        prism_testkit::lifecycle::health_detail(h.port, "streams").await,
        "1"
    );
    drop(stream);
    let gone = Instant::now();
    loop {
        if prism_testkit::lifecycle::health_detail(h.port, "streams").await == "0" {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(1),
            "the query still runs after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "[timing] query ended {:?} after the client went away",
        gone.elapsed()
    );
}

/// The broker goes away in the middle of a page: the stream ends
/// `UNAVAILABLE` (with a resume cursor in its `x-prism-cursor` trailer),
/// the plugin stays alive, and once the broker is back a re-query from the
/// last page's cursor — or from the trailer's — completes the series with
/// nothing lost or repeated.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_mid_query_ends_unavailable_and_the_cursor_resumes_exactly() {
    let proxy_port = free_port();
    let kafka = Kafka::start_advertising(proxy_port).await.expect("tansu");
    let proxy = KafkaProxy::start(proxy_port, kafka.port(), ProxyOptions::default())
        .await
        .expect("proxy");
    let port = free_port();
    let (plugin, channel) = serving(
        &proxy.bootstrap(),
        port,
        &[
            ("PRISM_BACKEND__TIMESERIES__STALL_TIMEOUT", "2s"),
            ("PRISM_BACKEND__TIMESERIES__LOOKAHEAD", "1000"),
            // A small prefetch, so the query needs the broker as it goes.
            ("PRISM_BACKEND__FETCH_BUFFER_KBYTES", "16"),
        ],
    )
    .await;
    let mut client = TimeSeriesBasicInterfaceClient::new(channel);
    let events: Vec<Event> = (0..20_000)
        .map(|i| {
            let mut e = event("outage", BASE + i, &format!("o{i}"), &[]);
            e.payload = vec![b'p'; 200].into();
            e
        })
        .collect();
    insert_all(&mut client, &events, 2000).await;
    let want: Vec<(String, i64)> = events
        .iter()
        .map(|e| (e.event_id.clone(), e.timestamp_ms))
        .collect();

    let mut req = query("outage", BASE, BASE + 20_000);
    req.limit = 8000;
    let (page1, end) = call(&mut client, req.clone()).await;
    let last_cursor = end.expect("page 1").next_cursor;
    assert_eq!(page1.len(), 8000);
    req.cursor = last_cursor.clone();
    let mut stream = client
        .query(req.clone())
        .await
        .expect("page 2")
        .into_inner();
    let mut partial = Vec::new();
    let mut proxy = Some(proxy);
    let status = loop {
        match stream.message().await {
            Ok(Some(reply)) => match reply.item {
                Some(query_response::Item::Event(e)) => {
                    partial.push(e);
                    if partial.len() == 500 {
                        drop(proxy.take()); // the broker is unreachable from here on
                    }
                }
                other => panic!("the page ended normally during the outage: {other:?}"),
            },
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    eprintln!(
        "[outage] page 2 ended after {} events: {:?} {}",
        partial.len(),
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let trailer = status
        .metadata()
        .get("x-prism-cursor")
        .expect("a resume cursor")
        .to_str()
        .expect("ascii")
        .to_string();
    prism_testkit::wait_for_health(port, "liveness", ServingStatus::Serving, STARTUP)
        .await
        .expect("the plugin is alive");
    let mut plugin = plugin;
    assert!(
        plugin.try_status().expect("status").is_none(),
        "plugin exited"
    );

    let _proxy = KafkaProxy::start(proxy_port, kafka.port(), ProxyOptions::default())
        .await
        .expect("proxy again");
    prism_testkit::wait_for_health(port, "readiness", ServingStatus::Serving, STARTUP)
        .await
        .expect("ready again");
    // From the last page's cursor (the partial page is dropped).
    let (rest, pages) = paged(
        &mut client,
        QueryRequest {
            cursor: last_cursor,
            ..req.clone()
        },
        8000,
    )
    .await;
    let mut got = ids(&page1);
    got.extend(ids(&rest));
    assert_eq!(
        got, want,
        "page 1 + re-query from its cursor ({pages} pages)"
    );
    // From the trailer's cursor (the partial page is kept).
    let (rest, _) = paged(
        &mut client,
        QueryRequest {
            cursor: trailer,
            ..req
        },
        8000,
    )
    .await;
    let mut got = ids(&page1);
    got.extend(ids(&partial));
    got.extend(ids(&rest));
    assert_eq!(
        got, want,
        "page 1 + partial page 2 + re-query from the trailer"
    );
}

/// The `grpcurl` commands of the README's "TimeSeries" section, run as
/// written (only `localhost:9091` becomes the test plugin's address):
/// reflection serves the service, Insert writes both events, Query returns
/// the one with host=a. Initialize declares the interface with its proto hash.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_grpcurl_examples_work_and_initialize_declares_the_interface() {
    let h = Harness::start(&[]).await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = readme
        .split("\n## TimeSeries")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a TimeSeries section");
    let commands: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("grpcurl "))
        .collect();
    assert_eq!(commands.len(), 2, "an Insert and a Query example");
    let mut outputs = Vec::new();
    for command in commands {
        let command = command.replace("localhost:9091", &format!("127.0.0.1:{}", h.port));
        let stdout = prism_testkit::grpcurl_cmd::run_shell(&command).await;
        eprintln!("[grpcurl] {stdout}");
        outputs.push(stdout);
    }
    let compact = |s: &str| s.split_whitespace().collect::<String>();
    assert!(
        compact(&outputs[0]).contains(r#""inserted":2"#),
        "{}",
        outputs[0]
    );
    assert!(
        compact(&outputs[1]).contains(r#""eventId":"e1""#),
        "{}",
        outputs[1]
    );
    assert!(
        compact(&outputs[1]).contains(r#""returned":"1""#),
        "{}",
        outputs[1]
    );

    let reply = prism_testkit::lifecycle::initialize(h.port, vec![]).await;
    assert!(reply.success, "{}", reply.error);
    let metadata = reply.metadata.expect("metadata");
    let declared = metadata
        .interfaces
        .iter()
        .find(|i| i.name == "TimeSeriesBasicInterface")
        .expect("TimeSeriesBasicInterface declared");
    let proto = prism_plugin_core::proto::TIMESERIES_BASIC_PROTO;
    assert_eq!(declared.proto_file, proto.path);
    assert_eq!(declared.proto_hash, proto.sha256());
    assert_eq!(declared.proto_hash.len(), 64);
}
