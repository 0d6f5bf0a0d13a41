//! OpenTelemetry traces of `prism-postgres` reach a real OTLP receiver: a call
//! carrying a `traceparent` yields the plugin's server span as the caller's
//! child and the SQL statement span as the server span's child, and no
//! exported attribute holds a key, value or the database password.

mod common;

use common::pg_and_plugin;
use prism_testkit::otlp::{self, OtlpReceiver};

#[tokio::test]
async fn a_traced_call_exports_server_and_postgresql_spans_under_the_callers_span() {
    let receiver = OtlpReceiver::start().await;
    let (pg, plugin) = pg_and_plugin(&receiver.env()).await;
    let url = pg.url();
    let secrets = [url.as_str(), pg.password()];
    let (set, get) = otlp::trace_set_and_get(
        &receiver,
        &plugin.channel,
        "postgresql",
        ("trace-key-5", "trace-value-5"),
        &secrets,
    )
    .await;
    assert_eq!(set.server.service, "prism-postgres");
    assert_eq!(set.backend.attr("db.operation.name"), Some("INSERT"));
    assert_eq!(get.backend.attr("db.operation.name"), Some("SELECT"));
}
