//! OpenTelemetry traces of `prism-kafka` reach a real OTLP receiver: a traced
//! Publish yields the plugin's server span as the caller's child and the
//! producer span as its child; the record carries the trace context in its
//! headers, so the Subscribe delivery's consumer span continues the
//! publisher's trace (child of, and linked to, the producer span). No
//! exported attribute holds the payload, key or metadata.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{publish_request, ready_channel, spawn};
use prism_plugin_core::proto::pubsub::SubscribeRequest;
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_testkit::Kafka;
use prism_testkit::otlp::{self, OtlpReceiver};

#[tokio::test]
async fn publish_and_subscribe_continue_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let kafka = Kafka::start().await.expect("tansu starts");
    let mut env = otlp::tracing_env(receiver.endpoint());
    env.push(("KAFKA_BROKERS", kafka.bootstrap()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (plugin, port) = spawn(&env).await;
    let channel = ready_channel(&plugin, port).await;
    let mut client = PubSubBasicInterfaceClient::new(channel);

    let mut publish = publish_request("traced-topic", "trace-payload-3");
    publish.partition_key = "trace-pkey-3".to_string();
    let reply = client
        .publish(otlp::traced(tonic::Request::new(publish)))
        .await
        .expect("publish")
        .into_inner();
    assert!(reply.success, "{reply:?}");
    let mut stream = client
        .subscribe(SubscribeRequest {
            topic: "traced-topic".to_string(),
            subscriber_id: "traced-group".to_string(),
            options: HashMap::from([("start".to_string(), "earliest".to_string())]),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a message within the timeout")
        .expect("stream ok")
        .expect("stream open");
    assert_eq!(&message.payload[..], b"trace-payload-3");
    assert!(
        message
            .metadata
            .get("traceparent")
            .is_some_and(|t| t.contains(otlp::TEST_TRACE_ID)),
        "the record carries the trace context: {:?}",
        message.metadata
    );

    let (server, producer) = receiver
        .wait_for(
            "Publish server and producer spans",
            Duration::from_secs(20),
            |spans| {
                let server = otlp::child_of(spans, otlp::TEST_PARENT_SPAN_ID, otlp::SERVER, |s| {
                    s.attr("rpc.method") == Some("Publish")
                })?;
                let producer = otlp::child_of(spans, &server.span_id, otlp::PRODUCER, |s| {
                    s.attr("messaging.system") == Some("kafka")
                        && s.attr("messaging.destination.name") == Some("traced-topic")
                })?;
                Some((server.clone(), producer.clone()))
            },
        )
        .await;
    assert_eq!(server.service, "prism-kafka");
    let consumer = receiver
        .wait_for(
            "a delivery span in the publisher's trace",
            Duration::from_secs(20),
            |spans| {
                otlp::child_of(spans, &producer.span_id, otlp::CONSUMER, |s| {
                    s.attr("messaging.destination.name") == Some("traced-topic")
                })
                .cloned()
            },
        )
        .await;
    assert!(
        consumer
            .links
            .contains(&(otlp::TEST_TRACE_ID.to_string(), producer.span_id.clone())),
        "linked to the producer span: {consumer:?}"
    );
    otlp::assert_no_attribute_contains(&receiver, &["trace-payload-3", "trace-pkey-3", "proxy"]);
}

/// TimeSeries: a traced Insert writes the trace context into each record's
/// headers; the Query that delivers the event starts a consumer span
/// continuing the inserter's trace, and the headers do not come back as tags.
#[tokio::test]
async fn timeseries_insert_and_query_continue_the_callers_trace() {
    use prism_plugin_core::proto::timeseries::time_series_basic_interface_client::TimeSeriesBasicInterfaceClient;
    use prism_plugin_core::proto::timeseries::{
        Event, InsertRequest, QueryRequest, query_response,
    };

    let receiver = OtlpReceiver::start().await;
    let kafka = Kafka::start().await.expect("tansu starts");
    let mut env = otlp::tracing_env(receiver.endpoint());
    env.push(("KAFKA_BROKERS", kafka.bootstrap()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (plugin, port) = spawn(&env).await;
    let channel = ready_channel(&plugin, port).await;
    let mut client = TimeSeriesBasicInterfaceClient::new(channel);

    let event = Event {
        series: "traced-series".to_string(),
        timestamp_ms: 1_700_000_000_000,
        event_id: "trace-event-7".to_string(),
        payload: b"trace-ts-payload-7".to_vec().into(),
        tags: HashMap::from([("host".to_string(), "trace-tag-7".to_string())]),
    };
    let reply = client
        .insert(otlp::traced(tonic::Request::new(InsertRequest {
            events: vec![event],
        })))
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
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("an event within the timeout")
        .expect("stream ok")
        .expect("stream open");
    let Some(query_response::Item::Event(got)) = first.item else {
        panic!("an event first: {first:?}");
    };
    assert_eq!(&got.payload[..], b"trace-ts-payload-7");
    assert_eq!(
        got.tags,
        HashMap::from([("host".to_string(), "trace-tag-7".to_string())]),
        "trace headers are not tags"
    );

    let producer = receiver
        .wait_for("Insert's producer span", Duration::from_secs(20), |spans| {
            let server = otlp::child_of(spans, otlp::TEST_PARENT_SPAN_ID, otlp::SERVER, |s| {
                s.attr("rpc.method") == Some("Insert")
            })?;
            otlp::child_of(spans, &server.span_id, otlp::PRODUCER, |s| {
                s.attr("messaging.destination.name") == Some("traced-series")
            })
            .cloned()
        })
        .await;
    receiver
        .wait_for(
            "a Query delivery span in the inserter's trace",
            Duration::from_secs(20),
            |spans| {
                otlp::child_of(spans, &producer.span_id, otlp::CONSUMER, |s| {
                    s.attr("messaging.destination.name") == Some("traced-series")
                })
                .cloned()
            },
        )
        .await;
    otlp::assert_no_attribute_contains(
        &receiver,
        &["trace-ts-payload-7", "trace-tag-7", "trace-event-7"],
    );
}
