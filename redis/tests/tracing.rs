//! OpenTelemetry traces of `prism-redis` reach a real OTLP receiver: a call
//! carrying a `traceparent` yields the plugin's server span as the caller's
//! child and the Redis command span as the server span's child, and no
//! exported attribute holds a key or value; log lines inside the call carry
//! its trace id.

mod common;

use common::{get, redis_and_plugin, req, set};
use prism_testkit::otlp::{self, OtlpReceiver};

#[tokio::test]
async fn a_traced_call_exports_server_and_redis_spans_under_the_callers_span() {
    let receiver = OtlpReceiver::start().await;
    let env = otlp::tracing_env(receiver.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_redis, plugin) = redis_and_plugin(&env).await;
    let mut kv = plugin.basic();
    kv.set(otlp::traced(req(
        None,
        set("trace-key-7", "trace-value-7", 0),
    )))
    .await
    .expect("set");
    let got = kv
        .get(otlp::traced(req(None, get("trace-key-7"))))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got.value[..], b"trace-value-7");

    let (server, backend) = otlp::expect_call_trace(
        &receiver,
        "prism.interfaces.keyvalue.KeyValueBasicInterface/Set",
        "redis",
    )
    .await;
    assert_eq!(server.attr("rpc.system"), Some("grpc"));
    assert_eq!(server.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(server.service, "prism-redis");
    assert_eq!(backend.attr("db.operation.name"), Some("SET"));
    let (_, get_span) = otlp::expect_call_trace(
        &receiver,
        "prism.interfaces.keyvalue.KeyValueBasicInterface/Get",
        "redis",
    )
    .await;
    assert_eq!(get_span.attr("db.operation.name"), Some("GET"));
    otlp::assert_no_attribute_contains(&receiver, &["trace-key-7", "trace-value-7"]);
}
