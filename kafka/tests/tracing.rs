//! OpenTelemetry traces of `prism-kafka` reach a real OTLP receiver: a traced
//! Publish yields the plugin's server span as the caller's child and the
//! producer span as its child; the record carries the trace context in its
//! headers, so the Subscribe delivery's consumer span continues the
//! publisher's trace (child of, and linked to, the producer span). TimeSeries
//! Insert and Query do the same. No exported attribute holds the payload, key
//! or metadata.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::pubsub::{next_message, publish, publish_request, subscribe};
use common::{ready_channel, spawn};
use prism_plugin_core::proto::timeseries::time_series_basic_interface_client::TimeSeriesBasicInterfaceClient;
use prism_plugin_core::proto::timeseries::{Event, InsertRequest, QueryRequest, query_response};
use prism_testkit::otlp::{self, OtlpReceiver, ReceivedSpan};
use prism_testkit::{Kafka, PluginProcess};
use tonic::transport::Channel;

/// How long spans may take to reach the receiver.
const EXPORTED: Duration = Duration::from_secs(20);

/// tansu and the plugin exporting its traces to a fresh OTLP receiver.
struct Traced {
    receiver: OtlpReceiver,
    _kafka: Kafka,
    _plugin: PluginProcess,
    channel: Channel,
}

impl Traced {
    async fn start() -> Self {
        let receiver = OtlpReceiver::start().await;
        let kafka = Kafka::start().await.expect("tansu starts");
        let mut env = otlp::tracing_env(receiver.endpoint());
        env.push(("KAFKA_BROKERS", kafka.bootstrap()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (plugin, port) = spawn(&env).await;
        let channel = ready_channel(&plugin, port).await;
        Traced {
            receiver,
            _kafka: kafka,
            _plugin: plugin,
            channel,
        }
    }

    /// The plugin's server span of `method` as the caller's child, and the
    /// producer span sending to `topic` as its child.
    async fn server_and_producer(&self, method: &str, topic: &str) -> (ReceivedSpan, ReceivedSpan) {
        let what = format!("{method} server and producer spans");
        self.receiver
            .wait_for(&what, EXPORTED, |spans| {
                let server = otlp::child_of(spans, otlp::TEST_PARENT_SPAN_ID, otlp::SERVER, |s| {
                    s.attr("rpc.method") == Some(method)
                })?;
                let producer = otlp::child_of(spans, &server.span_id, otlp::PRODUCER, |s| {
                    s.attr("messaging.system") == Some("kafka")
                        && s.attr("messaging.destination.name") == Some(topic)
                })?;
                Some((server.clone(), producer.clone()))
            })
            .await
    }

    /// A delivery (consumer) span from `topic` continuing the trace as the
    /// child of `producer`.
    async fn delivery(&self, producer: &ReceivedSpan, topic: &str) -> ReceivedSpan {
        let what = format!("a {topic} delivery span in the producer's trace");
        self.receiver
            .wait_for(&what, EXPORTED, |spans| {
                otlp::child_of(spans, &producer.span_id, otlp::CONSUMER, |s| {
                    s.attr("messaging.destination.name") == Some(topic)
                })
                .cloned()
            })
            .await
    }
}

#[tokio::test]
async fn publish_and_subscribe_continue_the_callers_trace() {
    let traced = Traced::start().await;
    let mut request = publish_request("traced-topic", "trace-payload-3");
    request.partition_key = "trace-pkey-3".to_string();
    publish(&traced.channel, otlp::traced(tonic::Request::new(request))).await;
    let mut stream = subscribe(&traced.channel, "traced-topic", "traced-group").await;
    let message = next_message(&mut stream).await;
    assert_eq!(&message.payload[..], b"trace-payload-3");
    assert!(
        message
            .metadata
            .get("traceparent")
            .is_some_and(|t| t.contains(otlp::TEST_TRACE_ID)),
        "the record carries the trace context: {:?}",
        message.metadata
    );

    let (server, producer) = traced.server_and_producer("Publish", "traced-topic").await;
    assert_eq!(server.service, "prism-kafka");
    let consumer = traced.delivery(&producer, "traced-topic").await;
    assert!(
        consumer
            .links
            .contains(&(otlp::TEST_TRACE_ID.to_string(), producer.span_id.clone())),
        "linked to the producer span: {consumer:?}"
    );
    let secrets = ["trace-payload-3", "trace-pkey-3", "proxy"];
    otlp::assert_no_attribute_contains(&traced.receiver, &secrets);
}

/// TimeSeries: a traced Insert writes the trace context into each record's
/// headers; the Query that delivers the event starts a consumer span
/// continuing the inserter's trace, and the headers do not come back as tags.
#[tokio::test]
async fn timeseries_insert_and_query_continue_the_callers_trace() {
    let traced = Traced::start().await;
    let mut client = TimeSeriesBasicInterfaceClient::new(traced.channel.clone());
    let tags = HashMap::from([("host".to_string(), "trace-tag-7".to_string())]);
    let event = Event {
        series: "traced-series".to_string(),
        timestamp_ms: 1_700_000_000_000,
        event_id: "trace-event-7".to_string(),
        payload: b"trace-ts-payload-7".to_vec().into(),
        tags: tags.clone(),
    };
    let insert = InsertRequest {
        events: vec![event],
    };
    let reply = client
        .insert(otlp::traced(tonic::Request::new(insert)))
        .await
        .expect("insert")
        .into_inner();
    assert_eq!(reply.inserted, 1, "{reply:?}");
    let mut stream = client
        .query(QueryRequest {
            series: "traced-series".to_string(),
            start_ms: 1_600_000_000_000,
            end_ms: 1_800_000_000_000,
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner();
    let first = tokio::time::timeout(common::RECV, stream.message())
        .await
        .expect("an event within the timeout")
        .expect("stream ok")
        .expect("stream open");
    let Some(query_response::Item::Event(got)) = first.item else {
        panic!("an event first: {first:?}");
    };
    assert_eq!(&got.payload[..], b"trace-ts-payload-7");
    assert_eq!(got.tags, tags, "trace headers are not tags");

    let (_, producer) = traced.server_and_producer("Insert", "traced-series").await;
    traced.delivery(&producer, "traced-series").await;
    let secrets = ["trace-ts-payload-7", "trace-tag-7", "trace-event-7"];
    otlp::assert_no_attribute_contains(&traced.receiver, &secrets);
}
