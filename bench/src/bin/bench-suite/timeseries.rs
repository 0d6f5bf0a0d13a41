//! prism-kafka's TimeSeries (Insert, Query) against librdkafka doing the
//! same work in the same run, in events per second:
//!
//! - **Insert**: the plugin writes N events (100-byte payload, one tag, in
//!   time order) in Inserts of [`BATCH`] events, [`IN_FLIGHT`] Inserts at
//!   once; the direct side produces the same N records (key = event id,
//!   timestamp = event time, the tag as a header) to a topic of the same
//!   partition count with `acks=all` and idempotence (prism-kafka's
//!   defaults), `BATCH × IN_FLIGHT` sends in flight.
//! - **Query**: the plugin streams all N events of its series in time order
//!   (one Query); the direct side reads the same records from every
//!   partition to the high-water mark with one consumer — no ordering
//!   across partitions, no de-duplication, one read: the floor the
//!   plugin's passes (two reads when the look-ahead overflows) build on.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prism_plugin_core::proto::timeseries::time_series_basic_interface_client::TimeSeriesBasicInterfaceClient;
use prism_plugin_core::proto::timeseries::{Event, InsertRequest, QueryRequest, query_response};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::grid::Grid;

/// Events per Insert.
const BATCH: usize = 1000;
/// Inserts in flight.
const IN_FLIGHT: usize = 4;
/// Partitions of both topics (`backend.timeseries.partitions`' default).
const PARTITIONS: i32 = 6;
/// First event time (2026-01-01T00:00:00Z).
const BASE: i64 = 1_767_225_600_000;

/// One operation measured on both sides.
pub(crate) struct TsRow {
    pub(crate) op: &'static str,
    pub(crate) events: usize,
    pub(crate) plugin: Result<f64, String>,
    pub(crate) direct: Result<f64, String>,
}

fn event(i: usize, series: &str) -> Event {
    Event {
        series: series.to_string(),
        timestamp_ms: BASE + i as i64,
        event_id: format!("e{i}"),
        payload: vec![b'x'; 100].into(),
        tags: HashMap::from([("host".to_string(), format!("h{}", i % 8))]),
    }
}

/// Runs both operations on both sides with `events` events.
pub(crate) async fn run(
    port: u16,
    bootstrap: &str,
    extra: &[(String, String)],
    events: usize,
) -> Vec<TsRow> {
    let series = format!("bench-ts-{}", std::process::id());
    let direct_topic = format!("{series}-direct");
    let plugin_insert = plugin_insert(port, &series, events).await;
    let direct_insert = direct_insert(bootstrap, &direct_topic, events).await;
    let plugin_query = plugin_query(port, &series, events).await;
    let direct_query = direct_query(bootstrap, extra, &direct_topic, events).await;
    let text = |r: anyhow::Result<f64>| r.map_err(|e| format!("{e:#}"));
    let rows = vec![
        TsRow {
            op: "Insert",
            events,
            plugin: text(plugin_insert),
            direct: text(direct_insert),
        },
        TsRow {
            op: "Query",
            events,
            plugin: text(plugin_query),
            direct: text(direct_query),
        },
    ];
    print!("{}", grid(&rows).text());
    rows
}

/// Both operations' events/s on both sides, and their ratio.
fn grid(rows: &[TsRow]) -> Grid {
    let mut grid = Grid::new(
        "| op | events | prism-kafka events/s | librdkafka events/s | ratio |",
        "|---|---|---|---|---|",
    );
    for row in rows {
        let events = row.events.to_string();
        grid.row([
            row.op.to_string(),
            events,
            eps(&row.plugin),
            eps(&row.direct),
            ratio(row),
        ]);
    }
    grid
}

fn eps(r: &Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:.0}"),
        Err(e) => format!("failed ({e})"),
    }
}

fn ratio(row: &TsRow) -> String {
    match (&row.plugin, &row.direct) {
        (Ok(p), Ok(d)) if *d > 0.0 => format!("{:.2}×", p / d),
        _ => "–".to_string(),
    }
}

async fn client(
    port: u16,
) -> anyhow::Result<TimeSeriesBasicInterfaceClient<tonic::transport::Channel>> {
    let channel = prism_testkit::connect(port, Duration::from_secs(5)).await?;
    Ok(TimeSeriesBasicInterfaceClient::new(channel).max_decoding_message_size(64 << 20))
}

async fn plugin_insert(port: u16, series: &str, events: usize) -> anyhow::Result<f64> {
    let client = client(port).await?;
    let batches: Vec<Vec<Event>> = (0..events)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| c.iter().map(|&i| event(i, series)).collect())
        .collect();
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for batch in batches {
        if pending.len() >= IN_FLIGHT {
            pending.next().await.expect("pending")?;
        }
        let mut client = client.clone();
        pending.push(async move {
            let reply = client
                .insert(InsertRequest { events: batch })
                .await?
                .into_inner();
            anyhow::ensure!(reply.success, "Insert: {}", reply.error);
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = pending.next().await {
        done?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn plugin_query(port: u16, series: &str, events: usize) -> anyhow::Result<f64> {
    let mut client = client(port).await?;
    let started = Instant::now();
    let request = QueryRequest {
        series: series.to_string(),
        start_ms: 0,
        end_ms: i64::MAX,
        ..Default::default()
    };
    let mut stream = client.query(request).await?.into_inner();
    let mut count = 0;
    while let Some(reply) = stream.message().await? {
        match reply.item {
            Some(query_response::Item::Event(_)) => count += 1,
            Some(query_response::Item::End(_)) => break,
            None => anyhow::bail!("empty QueryResponse"),
        }
    }
    anyhow::ensure!(count == events, "Query returned {count} of {events} events");
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

fn config(bootstrap: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in extra {
        config.set(k, v);
    }
    config
}

async fn direct_insert(bootstrap: &str, topic: &str, events: usize) -> anyhow::Result<f64> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    admin.create_topics([&new], &AdminOptions::new()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Producer settings only (the extra settings are the consumers').
    let producer: FutureProducer = config(bootstrap, &[])
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for i in 0..events {
        if pending.len() >= BATCH * IN_FLIGHT {
            pending.next().await.expect("pending")?;
        }
        let e = event(i, topic);
        let producer = &producer;
        pending.push(async move {
            let headers = OwnedHeaders::new().insert(Header {
                key: "host",
                value: e.tags.get("host").map(String::as_bytes),
            });
            let record = FutureRecord::to(topic)
                .key(e.event_id.as_bytes())
                .payload(e.payload.as_ref())
                .timestamp(e.timestamp_ms)
                .headers(headers);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(err, _)| anyhow::anyhow!("send: {err}"))
        });
    }
    while let Some(done) = pending.next().await {
        done?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn direct_query(
    bootstrap: &str,
    extra: &[(String, String)],
    topic: &str,
    events: usize,
) -> anyhow::Result<f64> {
    let topic = topic.to_string();
    let mut config = config(bootstrap, extra);
    config
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let consumer: BaseConsumer = config.create()?;
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let (mut count, mut ended) = (0usize, 0);
        let deadline = Instant::now() + Duration::from_secs(300);
        while ended < PARTITIONS && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => count += 1,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
                Some(Err(e)) => anyhow::bail!("consumer: {e}"),
                None => {}
            }
        }
        anyhow::ensure!(count >= events, "read {count} of {events} records");
        Ok(count as f64 / started.elapsed().as_secs_f64())
    })
    .await
    .context("direct query task")?
}

/// The report's "TimeSeries" section.
pub(crate) fn section(md: &mut String, rows: &[TsRow], note: &str) {
    let _ = writeln!(
        md,
        "## TimeSeries (prism-kafka Insert / Query vs librdkafka)\n"
    );
    if rows.is_empty() {
        let _ = writeln!(
            md,
            "Not measured ({}).\n",
            if note.is_empty() {
                "prism-kafka not running"
            } else {
                note
            }
        );
        return;
    }
    let _ = writeln!(
        md,
        "Same run, same broker. Insert: Inserts of {BATCH} events, {IN_FLIGHT} in flight, vs a librdkafka \
         producer (`acks=all`, idempotent; key, timestamp, one header) with {} sends in flight. Query: one \
         Query streaming every event of the series in time order vs one librdkafka consumer reading the \
         same records from all {PARTITIONS} partitions to the end, unordered. Events: 100-byte payload, \
         one tag, in time order (one pass plus the look-ahead's first read when they exceed it).\n",
        BATCH * IN_FLIGHT
    );
    grid(rows).markdown(md);
    let _ = writeln!(md);
}
