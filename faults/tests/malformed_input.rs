//! Fault: malformed input on the wire against each running plugin. Valid
//! HTTP/2 carrying broken gRPC framing (a length prefix longer than the
//! body, the compressed flag without `grpc-encoding`, an unknown flag,
//! undecodable protobuf, a declared length over the server's limit), a real
//! message over `control_plane.max_message_bytes`, and raw bytes that are
//! not HTTP/2 at all. Asserted: each call ends with a clean gRPC status
//! (INTERNAL, RESOURCE_EXHAUSTED/OUT_OF_RANGE for sizes, INVALID_ARGUMENT),
//! never a hang or a dead process, and the plugin stays SERVING and answers
//! a well-formed call afterwards.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use prism_faults::{Backend, Kind, Plugin, kv_get, kv_set, publish_request, with_deadline};
use prism_testkit::ServingStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tower::ServiceExt;

/// The smallest limit core accepts; the oversized message is twice it.
const MAX_MESSAGE: &str = "1048576";
/// Bound for one raw exchange.
const CALL: Duration = Duration::from_secs(10);

/// A request body of one fixed chunk.
struct Once(Option<Bytes>);

impl http_body::Body for Once {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// Sends `body` as the request body of a unary gRPC call to `path` (with
/// `extra` headers) and returns the grpc-status code and message, from the
/// headers (trailers-only) or the trailers.
async fn raw_call(
    plugin: &Plugin,
    path: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (Code, String) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{}{path}", plugin.port))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let request = request
        .body(tonic::body::Body::new(Once(Some(Bytes::from(body)))))
        .expect("request");
    let exchange =
        async {
            let response = plugin
                .channel
                .clone()
                .oneshot(request)
                .await
                .expect("an HTTP/2 response");
            let (parts, mut body) = response.into_parts();
            let mut fields: BTreeMap<String, String> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            if !fields.contains_key("grpc-status") {
                while let Some(frame) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    if let Ok(Some(trailers)) = frame.map(|f| f.into_trailers().ok()) {
                        fields.extend(trailers.iter().map(|(k, v)| {
                            (k.to_string(), v.to_str().unwrap_or_default().to_string())
                        }));
                    }
                }
            }
            let code: i32 = fields
                .get("grpc-status")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no grpc-status in {fields:?}"));
            (
                Code::from_i32(code),
                fields.get("grpc-message").cloned().unwrap_or_default(),
            )
        };
    tokio::time::timeout(CALL, exchange)
        .await
        .expect("the plugin answers malformed input")
}

/// A gRPC frame: flag, 4-byte big-endian declared length, payload.
fn frame(flag: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Raw bytes to the plugin's port; returns what came back before it closed
/// the connection (or the read timed out).
async fn raw_tcp(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut reply)).await;
    reply
}

/// What is sent, extra headers, and the statuses that count as clean.
type Case = (
    &'static str,
    Vec<u8>,
    Vec<(&'static str, &'static str)>,
    &'static [Code],
);

/// Runs every malformed case against `path` (a unary method of `plugin`)
/// and asserts clean statuses, then that the plugin still serves.
async fn malformed_cases(name: &str, plugin: &mut Plugin, path: &str) {
    let cases: Vec<Case> = vec![
        (
            "length prefix longer than the body",
            frame(0, 1000, b"short"),
            vec![],
            &[Code::Internal],
        ),
        (
            "compressed flag without grpc-encoding",
            frame(1, 3, b"abc"),
            vec![],
            &[Code::Internal],
        ),
        (
            "unknown flag byte",
            frame(7, 3, b"abc"),
            vec![],
            &[Code::Internal],
        ),
        (
            "undecodable protobuf",
            frame(0, 8, &[0xff; 8]),
            vec![],
            &[Code::Internal, Code::InvalidArgument],
        ),
        (
            "declared length over the limit",
            frame(0, 0xffff_fff0, b"x"),
            vec![],
            &[Code::OutOfRange, Code::ResourceExhausted],
        ),
        (
            "unsupported grpc-encoding",
            frame(1, 3, b"abc"),
            vec![("grpc-encoding", "snappy-bogus")],
            &[Code::Unimplemented, Code::Internal],
        ),
        ("truncated header", vec![0, 0, 0], vec![], &[Code::Internal]),
    ];
    for (what, body, headers, allowed) in cases {
        let (code, message) = raw_call(plugin, path, body, &headers).await;
        eprintln!("[{name}] {what}: {code:?} {message:?}");
        assert!(
            allowed.contains(&code),
            "{what}: {code:?} {message:?} (expected one of {allowed:?})"
        );
    }
    // Not HTTP/2 at all, and an HTTP/2 preface followed by garbage frames:
    // the plugin closes those connections and keeps serving others.
    let http1 = raw_tcp(plugin.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    eprintln!("[{name}] HTTP/1.1 request: {} bytes back", http1.len());
    let mut garbage = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    garbage.extend_from_slice(&[0xff; 64]);
    let h2 = raw_tcp(plugin.port, &garbage).await;
    eprintln!("[{name}] HTTP/2 preface + garbage: {} bytes back", h2.len());

    plugin.process.assert_running();
    plugin
        .wait_for(ServingStatus::Serving, Duration::from_secs(10))
        .await;
}

/// Starts the backend of `kind` and the plugin on it with the message limit.
async fn start(kind: Kind) -> (Backend, Plugin) {
    let backend = Backend::start(kind).await;
    let envs = [("PRISM_CONTROL_PLANE__MAX_MESSAGE_BYTES", MAX_MESSAGE)];
    let plugin = Plugin::start_for(&backend, &envs).await;
    (backend, plugin)
}

/// A well-formed Set just over the message limit, then a normal Set/Get.
async fn oversized_then_normal_kv(name: &str, plugin: &Plugin) {
    let mut kv = plugin.kv().max_encoding_message_size(8 * 1024 * 1024);
    let big = "x".repeat(2 * 1024 * 1024);
    let err = kv
        .set(kv_set("big", &big))
        .await
        .expect_err("over max_message_bytes");
    too_big(name, &err);
    kv.set(with_deadline(
        kv_set("after", "fine"),
        Duration::from_secs(5),
    ))
    .await
    .expect("a normal Set afterwards");
    let got = kv
        .get(with_deadline(kv_get("after"), Duration::from_secs(5)))
        .await
        .expect("a normal Get afterwards")
        .into_inner();
    assert_eq!(got.value.as_ref(), b"fine");
}

const KV_GET: &str = "/prism.interfaces.keyvalue.KeyValueBasicInterface/Get";

#[tokio::test(flavor = "multi_thread")]
async fn postgres_answers_malformed_frames_with_clean_errors_and_keeps_serving() {
    let (_pg, mut plugin) = start(Kind::Postgres).await;
    malformed_cases("postgres", &mut plugin, KV_GET).await;
    oversized_then_normal_kv("postgres", &plugin).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_answers_malformed_frames_with_clean_errors_and_keeps_serving() {
    let (_redis, mut plugin) = start(Kind::Redis).await;
    malformed_cases("redis", &mut plugin, KV_GET).await;
    oversized_then_normal_kv("redis", &plugin).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_answers_malformed_frames_with_clean_errors_and_keeps_serving() {
    let (_kafka, mut plugin) = start(Kind::Kafka).await;
    malformed_cases(
        "kafka",
        &mut plugin,
        "/prism.interfaces.pubsub.PubSubBasicInterface/Publish",
    )
    .await;
    let mut pubsub = plugin.pubsub().max_encoding_message_size(8 * 1024 * 1024);
    let publish = |payload: Vec<u8>| publish_request("faults-malformed", payload, "");
    let err = pubsub
        .publish(publish(vec![0; 2 * 1024 * 1024]))
        .await
        .expect_err("over max_message_bytes");
    too_big("kafka", &err);
    pubsub
        .publish(with_deadline(
            publish(b"fine".to_vec()),
            Duration::from_secs(10),
        ))
        .await
        .expect("a normal Publish afterwards");
}

/// A message over `max_message_bytes` is refused cleanly: OUT_OF_RANGE or
/// RESOURCE_EXHAUSTED (printed with the plugin `name`).
fn too_big(name: &str, err: &tonic::Status) {
    let (code, message) = (err.code(), err.message());
    eprintln!("[{name}] 2 MiB message: {code:?} {message:?}");
    assert!(
        matches!(code, Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
}
