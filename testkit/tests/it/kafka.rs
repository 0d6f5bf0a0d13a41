//! Kafka (tansu): metadata via kcat, outage, parallel instances.

use prism_testkit::{Kafka, tool};
use tokio::process::Command;

use crate::{start, start_again, stop, two_at_once};

/// `kcat -L` against the broker. tansu 0.6's ApiVersions v3 response is not parsed
/// by kcat's bundled librdkafka 2.0.2, so version probing is disabled.
async fn kcat_metadata(kafka: &Kafka) -> std::process::Output {
    Command::new(tool("kcat").expect("kcat installed"))
        .args(["-b", &kafka.bootstrap(), "-L", "-m", "5"])
        .args([
            "-X",
            "api.version.request=false",
            "-X",
            "broker.version.fallback=0.9.0",
        ])
        .output()
        .await
        .expect("run kcat")
}

fn assert_lists_broker(kafka: &Kafka, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kcat failed: {stderr}{stdout}");
    assert!(stdout.contains("1 brokers"), "{stdout}");
    assert!(stdout.contains(&kafka.bootstrap()), "{stdout}");
}

#[tokio::test]
async fn starts_answers_and_survives_restart() {
    let mut kafka = start(Kafka::start()).await;
    let port = kafka.port();
    assert_eq!(kafka.bootstrap(), format!("127.0.0.1:{port}"));
    assert_lists_broker(&kafka, &kcat_metadata(&kafka).await);

    stop(&mut kafka).await;
    start_again(&mut kafka).await;
    assert_lists_broker(&kafka, &kcat_metadata(&kafka).await);
}

#[tokio::test]
async fn two_instances_run_at_once() {
    let (a, b) = two_at_once(Kafka::start).await;
    assert_lists_broker(&a, &kcat_metadata(&a).await);
    assert_lists_broker(&b, &kcat_metadata(&b).await);
}
