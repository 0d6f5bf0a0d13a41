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
