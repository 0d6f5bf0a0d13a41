//! gRPC health helpers against a real tonic-health server.

use std::time::Duration;

use prism_testkit::{Error, ServingStatus, connect, free_port, health_status, wait_for_health};

use crate::WAIT;

/// Serves the health service on a free port; returns the port and the reporter.
async fn serve_health() -> (u16, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let port = free_port();
    let addr = ([127, 0, 0, 1], port).into();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(addr),
    );
    (port, reporter)
}

#[tokio::test]
async fn reports_status_and_waits_for_transitions() {
    let (port, reporter) = serve_health().await;
    reporter
        .set_service_status("prism.Plugin", tonic_health::ServingStatus::NotServing)
        .await;

    let channel = connect(port, WAIT).await.expect("connect");
    assert_eq!(
        health_status(&channel, "prism.Plugin")
            .await
            .expect("status"),
        ServingStatus::NotServing
    );
    assert_eq!(
        health_status(&channel, "").await.expect("server status"),
        ServingStatus::Serving
    );
    assert_eq!(
        health_status(&channel, "no.Such").await.expect("not found"),
        ServingStatus::ServiceUnknown
    );

    let err = wait_for_health(
        port,
        "prism.Plugin",
        ServingStatus::Serving,
        Duration::from_millis(500),
    )
    .await
    .expect_err("still NOT_SERVING");
    let msg = err.to_string();
    assert!(msg.contains("prism.Plugin"), "{msg}");
    assert!(msg.contains("last seen: NOT_SERVING"), "{msg}");

    let flip = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        reporter
            .set_service_status("prism.Plugin", tonic_health::ServingStatus::Serving)
            .await;
        reporter
    });
    wait_for_health(port, "prism.Plugin", ServingStatus::Serving, WAIT)
        .await
        .expect("becomes SERVING");
    drop(flip.await);
}

#[tokio::test]
async fn connect_gives_up_on_a_closed_port() {
    let port = free_port();
    let err = connect(port, Duration::from_millis(200))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}
