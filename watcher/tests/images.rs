//! The plugin images, run for real: each image (built `FROM scratch` by
//! `scripts/test-images.sh`, so everything it needs is inside it) runs read-only
//! as user 65532 on the host network against real backends started by the
//! harness, must reach SERVING on gRPC health, answer the lifecycle HealthCheck
//! and a data call, and exit 0 on `podman stop` (SIGTERM to PID 1).
//!
//! Ignored in the plain test run because it needs the images; the script runs it
//! with `--ignored` after building them. Image reference:
//! `$PRISM_IMAGE_REGISTRY/<plugin>-plugin:$PRISM_IMAGE_TAG`.

use std::time::Duration;

use prism_testkit::grpcurl_cmd::call as grpcurl;
use prism_testkit::{Kafka, Postgres, Redis, ServingStatus, free_port, wait_for_health};
use tokio::process::Command;

const UP_TIMEOUT: Duration = Duration::from_secs(60);

fn podman() -> Command {
    // crun (podman's default runtime) fails on setrlimit on these machines.
    let runtime = std::env::var("PRISM_PODMAN_RUNTIME").unwrap_or_else(|_| "runc".to_owned());
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", &runtime]);
    cmd
}

fn image(plugin: &str) -> String {
    let registry = std::env::var("PRISM_IMAGE_REGISTRY").unwrap_or_else(|_| "prism".to_owned());
    let tag = std::env::var("PRISM_IMAGE_TAG").unwrap_or_else(|_| "latest".to_owned());
    format!("{registry}/{plugin}-plugin:{tag}")
}

/// A container removed on drop (also when the test fails half-way).
struct Container {
    name: String,
}

impl Container {
    async fn run(plugin: &str, port: u16, env: &[(&str, String)]) -> Container {
        let name = format!("prism-image-test-{plugin}-{}", std::process::id());
        let mut cmd = podman();
        cmd.args(["run", "--detach", "--name", &name, "--read-only"])
            .args(["--user", "65532:65532", "--network", "host"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(["--env", "PRISM_LOG_FORMAT=text"]);
        for (key, value) in env {
            cmd.args(["--env", &format!("{key}={value}")]);
        }
        cmd.arg(image(plugin))
            .args(["--grpc-port", &port.to_string()]);
        let out = cmd.output().await.expect("podman run");
        assert!(
            out.status.success(),
            "podman run {}: {}",
            image(plugin),
            String::from_utf8_lossy(&out.stderr)
        );
        Container { name }
    }

    async fn logs(&self) -> String {
        let out = podman()
            .args(["logs", &self.name])
            .output()
            .await
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `podman stop` (SIGTERM, 20 s grace) and the container's exit code.
    async fn stop(&self) -> i32 {
        let out = podman()
            .args(["stop", "--time", "20", &self.name])
            .output()
            .await
            .expect("podman stop");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let out = podman()
            .args(["inspect", "--format", "{{.State.ExitCode}}", &self.name])
            .output()
            .await
            .expect("podman inspect");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(-1)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rm", "--force", "--ignore", &self.name])
            .output();
    }
}

/// Starts `plugin`'s image, checks health, lifecycle, `data_call`, and a clean stop.
async fn check_image(plugin: &str, env: &[(&str, String)], data_call: &[&str], expect: &str) {
    let port = free_port();
    let container = Container::run(plugin, port, env).await;
    for service in ["liveness", "readiness", ""] {
        if let Err(err) = wait_for_health(port, service, ServingStatus::Serving, UP_TIMEOUT).await {
            panic!(
                "{plugin} image: {err}\ncontainer log:\n{}",
                container.logs().await
            );
        }
    }
    // The probe compose and podman healthchecks run inside the image.
    let probe = podman()
        .args(["exec", &container.name, "/usr/local/bin/prism-probe"])
        .args(["--port", &port.to_string(), "--service", "readiness"])
        .output()
        .await
        .expect("podman exec prism-probe");
    let said = String::from_utf8_lossy(&probe.stdout);
    let ok = probe.status.success();
    assert!(ok, "{plugin}: prism-probe in the image: {said}");
    let health = grpcurl(port, &["prism.interfaces.LifecycleInterface/HealthCheck"]).await;
    assert!(
        health.contains("HEALTH_STATUS_HEALTHY"),
        "{plugin}: {health}"
    );

    let services = grpcurl(port, &["list"]).await;
    let data_service = data_call
        .last()
        .and_then(|m| m.rsplit_once('/'))
        .map(|(service, _)| service)
        .unwrap_or_default();
    // The data services land plugin by plugin; until one does, the lifecycle
    // HealthCheck above is the call that proves the image works.
    if services.contains(data_service) {
        let reply = grpcurl(port, data_call).await;
        assert!(
            reply.contains(expect),
            "{plugin} data call {data_call:?}: {reply}"
        );
        eprintln!("{plugin} image: {data_service} answered");
    } else {
        eprintln!("NOTE: {plugin} image has no {data_service} yet; checked lifecycle only");
    }

    let code = container.stop().await;
    assert_eq!(
        code,
        0,
        "{plugin} exits 0 on SIGTERM; log:\n{}",
        container.logs().await
    );
}

/// The grpcurl arguments of a KeyValue Set ("aGVsbG8=" is base64 for "hello").
const KV_SET: [&str; 3] = [
    "-d",
    r#"{"key":"image-test","value":"aGVsbG8="}"#,
    "prism.interfaces.keyvalue.KeyValueBasicInterface/Set",
];
/// The grpcurl arguments of a PubSub Publish.
const PUBLISH: [&str; 3] = [
    "-d",
    r#"{"topic":"image-test","payload":"aGVsbG8="}"#,
    "prism.interfaces.pubsub.PubSubBasicInterface/Publish",
];
/// What the data call's reply must contain.
const SUCCESS: &str = "\"success\": true";

#[tokio::test]
#[ignore = "needs the plugin images: run `make test-images`"]
async fn redis_image_serves_from_scratch_read_only_as_nonroot() {
    let redis = Redis::start().await.expect("redis-server");
    // `localhost`, not an IP: name resolution works in the static binary.
    let addr = format!("localhost:{}", redis.port());
    check_image("redis", &[("REDIS_ADDRESS", addr)], &KV_SET, SUCCESS).await;
}

#[tokio::test]
#[ignore = "needs the plugin images: run `make test-images`"]
async fn postgres_image_serves_from_scratch_read_only_as_nonroot() {
    let pg = Postgres::start().await.expect("PostgreSQL");
    check_image("postgres", &[("DATABASE_URL", pg.url())], &KV_SET, SUCCESS).await;
}

#[tokio::test]
#[ignore = "needs the plugin images: run `make test-images`"]
async fn kafka_image_serves_from_scratch_read_only_as_nonroot() {
    let kafka = Kafka::start().await.expect("tansu broker");
    let envs = [("KAFKA_BROKERS", kafka.bootstrap())];
    check_image("kafka", &envs, &PUBLISH, SUCCESS).await;
}
