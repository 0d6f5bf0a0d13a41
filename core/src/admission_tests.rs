//! Tests of admission control (`super`): limits, refusals and their messages,
//! the FIFO queue and its deadline, permits held until a body ends.

use std::convert::Infallible;

use tower::{Service, ServiceExt};

use super::*;

const GET: &str = "/prism.interfaces.keyvalue.KeyValueBasicInterface/Get";
const SUBSCRIBE: &str = "/prism.interfaces.pubsub.PubSubBasicInterface/Subscribe";

#[test]
fn streaming_methods_come_from_the_descriptors() {
    let paths = streaming_methods(&[crate::proto::FILE_DESCRIPTOR_SET]);
    for streaming in [
        SUBSCRIBE,
        "/prism.interfaces.pubsub.StreamInterface/Tail",
        "/prism.interfaces.pubsub.StreamInterface/Consume",
    ] {
        assert!(
            paths.contains(streaming),
            "{streaming} missing from {paths:?}"
        );
    }
    assert!(!paths.contains(GET));
    assert!(!paths.contains("/prism.interfaces.pubsub.PubSubBasicInterface/Publish"));
}

/// A layered service whose handler waits until `release` says true.
fn service(
    config: &AdmissionConfig,
    release: tokio::sync::watch::Receiver<bool>,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ use<> {
    let admission = Admission::new(
        config,
        &[crate::proto::FILE_DESCRIPTOR_SET],
        &AdmissionMetrics::default(),
    );
    let handler = tower::service_fn(move |_req: http::Request<()>| {
        let mut release = release.clone();
        async move {
            let _ = release.wait_for(|go| *go).await;
            Ok::<_, Infallible>(http::Response::new(Body::new("x".to_string())))
        }
    });
    tower::Layer::layer(&AdmissionLayer::new(admission), handler)
}

fn request(path: &str) -> http::Request<()> {
    http::Request::builder().uri(path).body(()).unwrap()
}

fn status(response: &http::Response<Body>) -> Option<String> {
    response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn beyond_in_flight_and_queue_calls_are_refused_at_once() {
    let config = AdmissionConfig {
        max_in_flight: 2,
        max_queue: 1,
        max_queue_wait: Duration::ZERO,
        max_streams: 1,
        max_concurrent_streams_per_connection: 0,
    };
    let (release, rx) = tokio::sync::watch::channel(false);
    let svc = service(&config, rx);
    // Two run, one waits: all three pending.
    let mut pending: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot(request(GET))))
        .collect();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(pending.iter().all(|p| !p.is_finished()));

    // The fourth is refused without waiting, naming the limits.
    let refused = svc.clone().oneshot(request(GET)).await.unwrap();
    assert_eq!(status(&refused).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    let message = refused.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("max_in_flight"), "{message}");

    // A stream draws from its own budget; health is never refused.
    let stream = tokio::spawn(svc.clone().oneshot(request(SUBSCRIBE)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!stream.is_finished(), "the stream budget is separate");
    let second_stream = svc.clone().oneshot(request(SUBSCRIBE)).await.unwrap();
    let message = second_stream.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("max_streams"), "{message}");
    let health = tokio::spawn(svc.clone().oneshot(request("/grpc.health.v1.Health/Check")));

    // Released: every admitted call (the queued one too) completes OK.
    release.send(true).unwrap();
    pending.push(stream);
    pending.push(health);
    for call in pending {
        let response = call.await.unwrap().unwrap();
        assert_eq!(status(&response), None, "admitted calls run");
    }
}

#[tokio::test]
async fn a_call_queued_past_max_queue_wait_is_refused_and_the_queue_is_fifo() {
    let config = AdmissionConfig {
        max_in_flight: 1,
        max_queue: 2,
        max_queue_wait: Duration::from_millis(200),
        ..AdmissionConfig::default()
    };
    let (release, rx) = tokio::sync::watch::channel(false);
    let svc = service(&config, rx);
    let running = tokio::spawn(svc.clone().oneshot(request(GET)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    let late = svc.clone().oneshot(request(GET)).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(status(&late).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    let message = late.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("max_queue_wait"), "{message}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");

    // Two queued calls get the slot in the order they came.
    let first = tokio::spawn(svc.clone().oneshot(request(GET)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = tokio::spawn(svc.clone().oneshot(request(GET)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    release.send(true).unwrap();
    let running = running.await.unwrap().unwrap();
    assert_eq!(status(&running), None);
    drop(running); // its body ends: the slot goes to the first in line
    let first = first.await.unwrap().unwrap();
    assert_eq!(status(&first), None, "the first queued call ran");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !second.is_finished(),
        "the second waits for the first's slot"
    );
    drop(first);
    assert_eq!(status(&second.await.unwrap().unwrap()), None);
}

#[tokio::test]
async fn a_permit_is_held_until_the_response_body_ends() {
    let config = AdmissionConfig {
        max_in_flight: 1,
        max_queue: 0,
        ..AdmissionConfig::default()
    };
    let (_release, rx) = tokio::sync::watch::channel(true);
    let svc = service(&config, rx);
    let first = svc.clone().oneshot(request(GET)).await.unwrap();
    let refused = svc.clone().oneshot(request(GET)).await.unwrap();
    assert_eq!(status(&refused).as_deref(), Some("8"));
    drop(first);
    let after = svc.clone().oneshot(request(GET)).await.unwrap();
    assert_eq!(status(&after), None);
}
