//! The Kafka baseline (a librdkafka producer, and consumer, in this process:
//! see `prism_bench::kafka`) and the check that prism-kafka serves Publish.

use std::time::Duration;

use anyhow::Context;
use prism_plugin_core::proto::pubsub::{
    PublishRequest, pub_sub_basic_interface_client::PubSubBasicInterfaceClient,
};

use crate::args::{Args, TOPIC};
use crate::results::Measure;

/// The direct librdkafka baseline for `publish` (send → ack) or
/// `publish-subscribe` (send → delivery), on the plugin's topic.
pub(crate) async fn direct(
    args: &Args,
    bootstrap: &str,
    extra: &[(String, String)],
    in_flight: usize,
    end_to_end: bool,
) -> anyhow::Result<Measure> {
    let report = prism_bench::kafka::run(prism_bench::kafka::Direct {
        bootstrap,
        topic: TOPIC,
        in_flight,
        value_size: args.value_size,
        warmup: Duration::from_secs(1),
        duration: args.duration(),
        end_to_end,
        extra,
    })
    .await
    .context("librdkafka")?;
    Ok(Measure::direct(
        report.ops_per_sec,
        [report.p50_us, report.p99_us, report.p999_us],
        report.errors,
        // The client is this process (producer, consumer, librdkafka threads).
        report.cpu.map(|w| (w, w.own_us)),
    ))
}

/// Whether prism-kafka serves Publish yet (its data services are optional).
pub(crate) async fn publish_served(port: u16) -> Result<(), String> {
    let channel = prism_testkit::connect(port, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = PubSubBasicInterfaceClient::new(channel);
    match client
        .publish(PublishRequest {
            topic: TOPIC.to_string(),
            payload: bytes::Bytes::from_static(b"probe"),
            ..Default::default()
        })
        .await
    {
        Ok(r) if r.get_ref().success => Ok(()),
        Ok(r) => Err(format!("Publish failed: {}", r.get_ref().error)),
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            Err("Publish not served by this prism-kafka build".to_string())
        }
        Err(s) => Err(format!("Publish failed: {:?} {}", s.code(), s.message())),
    }
}
