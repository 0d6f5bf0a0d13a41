//! OpenTelemetry traces of `prism-postgres` reach a real OTLP receiver: a call
//! carrying a `traceparent` yields the plugin's server span as the caller's
//! child and the SQL statement span as the server span's child, and no
//! exported attribute holds a key, value or the database password.

mod common;

use common::{get, pg_and_plugin, req, set};
use prism_testkit::otlp::{self, OtlpReceiver};

#[tokio::test]
async fn a_traced_call_exports_server_and_postgresql_spans_under_the_callers_span() {
    let receiver = OtlpReceiver::start().await;
    let env = otlp::tracing_env(receiver.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (pg, plugin) = pg_and_plugin(&env).await;
    let mut kv = plugin.basic();
    kv.set(otlp::traced(req(
        None,
        set("trace-key-5", "trace-value-5", 0),
    )))
    .await
    .expect("set");
    let got = kv
        .get(otlp::traced(req(None, get("trace-key-5"))))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got.value[..], b"trace-value-5");

    let (server, backend) = otlp::expect_call_trace(
        &receiver,
        "prism.interfaces.keyvalue.KeyValueBasicInterface/Set",
        "postgresql",
    )
    .await;
    assert_eq!(server.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(server.service, "prism-postgres");
    assert_eq!(backend.attr("db.operation.name"), Some("INSERT"));
    let (_, get_span) = otlp::expect_call_trace(
        &receiver,
        "prism.interfaces.keyvalue.KeyValueBasicInterface/Get",
        "postgresql",
    )
    .await;
    assert_eq!(get_span.attr("db.operation.name"), Some("SELECT"));
    let url = pg.url();
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
        .map(|(_, password)| password.to_string());
    let mut secrets = vec!["trace-key-5", "trace-value-5", url.as_str()];
    secrets.extend(password.as_deref().filter(|p| !p.is_empty()));
    otlp::assert_no_attribute_contains(&receiver, &secrets);
}
