//! Promises of the three real plugins that were tested on the example plugin
//! only: each starts from a config file named by `PRISM_PLUGIN_CONFIG` alone (no
//! backend environment variable), `grpc.health.v1.Health/Watch` streams
//! SERVING then NOT_SERVING when the gateway's `Drain` RPC starts, new data calls
//! get UNAVAILABLE while draining, and the `Stop` RPC makes the process exit 0.
//! For Kafka, `KAFKA_TOPIC` is the topic of a Publish that names none, and a
//! Subscribe stream open during Drain ends by the plugin's drain and counts as
//! drained, not aborted (kafka/README.md "Drain / shutdown").

use std::time::Duration;

use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::lifecycle::{DrainRequest, StopRequest};
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_plugin_core::proto::pubsub::{PublishRequest, SubscribeRequest};
use prism_testkit::{
    Kafka, PluginProcess, Postgres, Redis, ServingStatus, free_port, plugin_binary, wait_for_health,
};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const STARTUP: Duration = Duration::from_secs(60);

fn channel(port: u16) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy()
}

/// Starts `prism-<plugin>` whose only configuration is the YAML file `config`,
/// named by PRISM_PLUGIN_CONFIG; waits for readiness.
async fn start_from_config_file(
    plugin: &str,
    config: &str,
    extra: &[(&str, &str)],
) -> (PluginProcess, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.yaml");
    std::fs::write(&file, config).unwrap();
    let port = free_port();
    let file = file.display().to_string();
    let mut envs = vec![
        ("PRISM_PLUGIN_CONFIG", file.as_str()),
        ("PRISM_LOG_FORMAT", "text"),
    ];
    envs.extend_from_slice(extra);
    let process = PluginProcess::spawn(
        plugin_binary(plugin),
        &["--grpc-port", &port.to_string()],
        &envs,
    )
    .await
    .unwrap();
    wait_for_health(port, "readiness", ServingStatus::Serving, STARTUP)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "prism-{plugin} from PRISM_PLUGIN_CONFIG: {e}\n{}",
                process.logs()
            )
        });
    (process, port, dir)
}

/// Watch(readiness) says SERVING, Drain flips it to NOT_SERVING, a data call is
/// then UNAVAILABLE, Stop ends the process with 0. Returns the Drain reply.
async fn watch_drain_stop<F, Fut>(
    plugin: &str,
    mut process: PluginProcess,
    port: u16,
    data_call: F,
) -> (i64, i64)
where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let ch = channel(port);
    data_call(ch.clone())
        .await
        .unwrap_or_else(|e| panic!("prism-{plugin} data call before drain: {e}"));
    let mut watch = HealthClient::new(ch.clone())
        .watch(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch
        .message()
        .await
        .unwrap()
        .expect("a first Watch message");
    assert_eq!(
        first.status,
        ServingStatus::Serving as i32,
        "prism-{plugin} Watch starts SERVING"
    );

    let mut lc = LifecycleInterfaceClient::new(ch.clone());
    let drain = tokio::spawn(async move {
        lc.drain(DrainRequest {
            timeout_seconds: 10,
            reason: "test".into(),
        })
        .await
    });
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("Watch reports the drain within 10 s")
        .unwrap()
        .expect("Watch stream open");
    assert_eq!(
        next.status,
        ServingStatus::NotServing as i32,
        "prism-{plugin} Watch after Drain"
    );
    let drained = drain.await.unwrap().unwrap().into_inner();
    assert!(drained.success, "prism-{plugin} Drain: {}", drained.error);
    let refused = data_call(ch.clone())
        .await
        .expect_err("a data call while drained");
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "prism-{plugin}: {refused:?}"
    );

    let stop = LifecycleInterfaceClient::new(ch)
        .stop(StopRequest { timeout_seconds: 5 })
        .await
        .unwrap()
        .into_inner();
    assert!(stop.success, "prism-{plugin} Stop: {}", stop.error);
    let exit = process.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(
        exit.success(),
        "prism-{plugin} exit after Stop: {exit:?}\n{}",
        process.logs()
    );
    (drained.drained_operations, drained.aborted_operations)
}

async fn kv_set(ch: Channel) -> Result<(), tonic::Status> {
    let mut client = prism_testkit::kv::basic(&ch);
    client
        .set(prism_testkit::kv::set("lifecycle", b"v".to_vec(), 0))
        .await
        .map(|_| ())
}

/// KeyValue plugin `prism-<plugin>` started from a config file holding
/// `config`, then watched, drained (with a Set in flight) and stopped.
async fn kv_from_config_watch_drain_stop(plugin: &str, config: &str) {
    let (process, port, _dir) = start_from_config_file(plugin, config, &[]).await;
    watch_drain_stop(plugin, process, port, kv_set).await;
}

#[tokio::test]
async fn postgres_from_plugin_config_watch_drain_stop() {
    let pg = Postgres::start().await.unwrap();
    let config = format!("backend:\n  database_url: {}\n", pg.url());
    kv_from_config_watch_drain_stop("postgres", &config).await;
}

#[tokio::test]
async fn redis_from_plugin_config_watch_drain_stop() {
    let redis = Redis::start().await.unwrap();
    let config = format!("backend:\n  address: {}\n", redis.addr());
    kv_from_config_watch_drain_stop("redis", &config).await;
}

#[tokio::test]
async fn kafka_from_plugin_config_with_kafka_topic_watch_drain_stop() {
    let kafka = Kafka::start().await.unwrap();
    let config = format!("backend:\n  brokers: {}\n", kafka.bootstrap());
    let (process, port, _dir) =
        start_from_config_file("kafka", &config, &[("KAFKA_TOPIC", "lifecycle-default")]).await;
    let ch = channel(port);
    // KAFKA_TOPIC: a Publish naming no topic goes there, and a subscriber of
    // that topic receives it.
    let mut client = PubSubBasicInterfaceClient::new(ch.clone());
    let mut options = std::collections::HashMap::new();
    options.insert("start".to_owned(), "earliest".to_owned());
    let mut stream = client
        .subscribe(SubscribeRequest {
            topic: "lifecycle-default".into(),
            subscriber_id: "lc".into(),
            options,
        })
        .await
        .unwrap()
        .into_inner();
    let published = client
        .publish(PublishRequest {
            topic: String::new(),
            payload: b"via KAFKA_TOPIC".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(published.success, "{}", published.error);
    let got = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the subscriber gets the message within 30 s")
        .unwrap()
        .expect("a message");
    assert_eq!(got.payload.as_ref(), b"via KAFKA_TOPIC");
    assert_eq!(got.topic, "lifecycle-default");

    // The Subscribe stays open through Drain: the plugin's drain ends it.
    let publish = |ch: Channel| async move {
        PubSubBasicInterfaceClient::new(ch)
            .publish(PublishRequest {
                topic: String::new(),
                payload: b"x".to_vec().into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    };
    let (drained, aborted) = watch_drain_stop("kafka", process, port, publish).await;
    assert_eq!(
        aborted, 0,
        "the open Subscribe counts as drained, not aborted (drained {drained})"
    );
    assert!(
        drained >= 1,
        "the open Subscribe is among the drained calls"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the Subscribe stream ends");
    assert!(
        end.is_ok(),
        "the Subscribe stream ends with OK at drain: {end:?}"
    );
}
