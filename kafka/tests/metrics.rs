//! `/metrics` of a real `prism-kafka`, scraped while the test drives it: the
//! group's lag grows while its Consume client holds deliveries without
//! acknowledging them and drops to 0 once it acknowledges; delivered and
//! acknowledged counters and send latency count every record.

mod common;

use std::time::Duration;

use common::pubsub::publish_request;
use common::{ready_channel, spawn};
use futures::StreamExt;
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_plugin_core::proto::pubsub::stream_interface_client::StreamInterfaceClient;
use prism_plugin_core::proto::pubsub::{
    Ack, ConsumeRequest, ConsumeResponse, Credit, MessageRef, consume_request, consume_response,
};
use prism_testkit::scrape::{sample, scrape, wait_for_sample};
use prism_testkit::{Kafka, free_port};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const MOVES: Duration = Duration::from_secs(30);

#[tokio::test]
async fn lag_grows_while_a_consumer_holds_deliveries_and_drops_after_acks() {
    let kafka = Kafka::start().await.expect("tansu starts");
    let metrics = free_port().to_string();
    let brokers = kafka.bootstrap();
    let env = [
        ("KAFKA_BROKERS", brokers.as_str()),
        ("PRISM_METRICS_PORT", metrics.as_str()),
        ("PRISM_BACKEND__COMMIT_INTERVAL", "200ms"),
    ];
    let (plugin, port) = spawn(&env).await;
    let channel = ready_channel(&plugin, port).await;
    let metrics: u16 = metrics.parse().expect("port");
    let publisher = PubSubBasicInterfaceClient::new(channel.clone());
    let publish = |n: usize| {
        let mut publisher = publisher.clone();
        async move {
            for i in 0..n {
                let reply = publisher
                    .publish(publish_request("lagging", &format!("m{i}")))
                    .await;
                assert!(reply.expect("publish").into_inner().success);
            }
        }
    };
    publish(1).await;

    // Consume with credit 1: the first record is delivered and acknowledged,
    // so the group has a committed position to measure lag from.
    let (tx, rx) = mpsc::channel(16);
    tx.send(prism_testkit::pubsub::open_from_earliest(
        "lagging",
        "lag-group",
        1,
    ))
    .await
    .expect("open");
    let mut stream = StreamInterfaceClient::new(channel)
        .consume(ReceiverStream::new(rx))
        .await
        .expect("consume")
        .into_inner();
    let first = next_message(&mut stream).await;
    // Every record has the same key, so the same partition.
    let partition = first.partition.to_string();
    ack(&tx, vec![first]).await;
    let lag = [
        ("topic", "lagging"),
        ("group", "lag-group"),
        ("partition", partition.as_str()),
    ];
    let name = "prism_kafka_consumer_lag";
    wait_for_sample(metrics, name, &lag, "nothing left", MOVES, |v| v == 0.0).await;

    // The client takes five more and holds them unacknowledged: nothing is
    // committed, so the group lags by five.
    let credit = consume_request::Request::Credit(Credit { messages: 5 });
    tx.send(ConsumeRequest {
        request: Some(credit),
    })
    .await
    .expect("credit");
    publish(5).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(next_message(&mut stream).await);
    }
    wait_for_sample(metrics, name, &lag, "lag grows", MOVES, |v| v == 5.0).await;
    ack(&tx, held).await;
    wait_for_sample(metrics, name, &lag, "lag drops", MOVES, |v| v == 0.0).await;
    let text = scrape(metrics).await;
    let topic = [("topic", "lagging")];
    assert_eq!(
        sample(&text, "prism_kafka_messages_delivered_total", &topic),
        Some(6.0)
    );
    assert_eq!(
        sample(&text, "prism_kafka_messages_acknowledged_total", &topic),
        Some(6.0)
    );
    let send = [("backend", "kafka"), ("operation", "send")];
    let sends = sample(
        &text,
        "prism_backend_operation_duration_seconds_count",
        &send,
    );
    assert_eq!(sends, Some(6.0), "{text}");
    assert_eq!(
        sample(&text, "prism_kafka_producer_queue_depth", &[]),
        Some(0.0)
    );
}

/// The next delivery on `stream`.
async fn next_message(stream: &mut tonic::Streaming<ConsumeResponse>) -> MessageRef {
    loop {
        let event = tokio::time::timeout(MOVES, stream.next())
            .await
            .expect("in time");
        let event = event.expect("stream open").expect("stream ok");
        if let Some(consume_response::Response::Message(m)) = event.response {
            return MessageRef {
                partition: m.partition,
                offset: m.offset,
            };
        }
    }
}

/// Acknowledges `messages`.
async fn ack(tx: &mpsc::Sender<ConsumeRequest>, messages: Vec<MessageRef>) {
    let ack = consume_request::Request::Ack(Ack { messages });
    tx.send(ConsumeRequest { request: Some(ack) })
        .await
        .expect("ack");
}
