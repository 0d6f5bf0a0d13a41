//! Core's control plane over real gRPC: lifecycle as the gateway drives it,
//! health (liveness vs readiness across a real backend outage), drain and
//! SIGTERM with calls in flight, config errors naming their key, secret
//! redaction, reflection via grpcurl, and the metrics endpoint. The plugin is
//! `examples/test_plugin.rs`; its backend probe points at a harness Redis.

mod common;

use std::time::{Duration, Instant};

use common::test_plugin;
use prism_plugin_core::proto::keyvalue::{
    GetRequest, GetResponse, SetRequest,
    key_value_basic_interface_client::KeyValueBasicInterfaceClient,
};
use prism_plugin_core::proto::lifecycle::{
    DrainRequest, HealthCheckRequest, HealthStatus, InitializeRequest, StartRequest, StopRequest,
    lifecycle_interface_client::LifecycleInterfaceClient,
};
use prism_testkit::lifecycle::{expect_not_serving, expect_serving};
use prism_testkit::{
    PluginProcess, Redis, ServingStatus, connect, free_port, health_status, wait_for_health,
};
use tonic::transport::Channel;

const STARTUP: Duration = Duration::from_secs(20);

struct Running {
    process: PluginProcess,
    port: u16,
    channel: Channel,
}

async fn start(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let port = free_port();
    let port_arg = port.to_string();
    let mut all_args = vec!["--grpc-port", port_arg.as_str()];
    all_args.extend_from_slice(args);
    let process = PluginProcess::spawn(test_plugin(), &all_args, envs)
        .await
        .expect("spawn");
    expect_serving(port, "liveness", STARTUP).await;
    let channel = connect(port, STARTUP).await.expect("connect");
    Running {
        process,
        port,
        channel,
    }
}

fn lifecycle(r: &Running) -> LifecycleInterfaceClient<Channel> {
    LifecycleInterfaceClient::new(r.channel.clone())
}

fn kv(r: &Running) -> KeyValueBasicInterfaceClient<Channel> {
    KeyValueBasicInterfaceClient::new(r.channel.clone())
}

/// A Get the test plugin answers after `ms` milliseconds, in flight in a task.
fn slow_get(
    r: &Running,
    ms: u64,
) -> tokio::task::JoinHandle<Result<tonic::Response<GetResponse>, tonic::Status>> {
    let mut client = kv(r);
    let key = format!("sleep:{ms}");
    tokio::spawn(async move { client.get(GetRequest { key }).await })
}

fn init_request(pairs: &[(&str, &str)]) -> InitializeRequest {
    let fields = pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(v.to_string())),
                },
            )
        })
        .collect();
    InitializeRequest {
        name: "test".into(),
        version: String::new(),
        config: Some(prost_types::Struct { fields }),
    }
}

#[tokio::test]
async fn gateway_lifecycle_initialize_start_health_drain_stop() {
    let mut r = start(&[], &[]).await;
    let mut lc = lifecycle(&r);

    // The gateway sends an empty Struct and version "": file/env config is used.
    let init = lc.initialize(init_request(&[])).await.unwrap().into_inner();
    assert!(
        init.success,
        "empty-Struct Initialize failed: {}",
        init.error
    );
    assert!(init.error.is_empty());
    let md = init.metadata.expect("metadata");
    assert_eq!(md.name, "test");
    assert_eq!(md.version, "0.0.1");
    let iface = &md.interfaces[0];
    assert_eq!(iface.name, "KeyValueBasicInterface");
    assert_eq!(
        iface.proto_file,
        "prism/interfaces/keyvalue/keyvalue_basic.proto"
    );
    let on_disk = std::fs::read(
        prism_testkit::workspace_root()
            .join("proto")
            .join(&iface.proto_file),
    )
    .unwrap();
    use sha2::Digest;
    assert_eq!(
        iface.proto_hash,
        hex::encode(sha2::Sha256::digest(&on_disk)),
        "proto_hash is the file's sha-256"
    );

    let started = Instant::now();
    let start_reply = lc.start(StartRequest {}).await.unwrap().into_inner();
    assert!(start_reply.success, "{}", start_reply.error);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "Start must return promptly"
    );
    assert_eq!(start_reply.data_endpoint, format!("localhost:{}", r.port));

    let hc = lc
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hc.status, HealthStatus::Healthy as i32, "{}", hc.message);
    expect_serving(r.port, "", STARTUP).await;

    // Drain with one call in flight: it completes; a new call is UNAVAILABLE.
    let slow = slow_get(&r, 1500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut drain_client = lifecycle(&r);
    let drain = tokio::spawn(async move {
        drain_client
            .drain(DrainRequest {
                timeout_seconds: 10,
                reason: "test".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rejected = kv(&r)
        .get(GetRequest { key: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), tonic::Code::Unavailable, "{rejected:?}");
    assert_eq!(
        health_status(&r.channel, "").await.unwrap(),
        ServingStatus::NotServing,
        "\"\" goes NOT_SERVING while draining"
    );
    assert_eq!(
        health_status(&r.channel, "liveness").await.unwrap(),
        ServingStatus::Serving
    );

    let slow = slow
        .await
        .unwrap()
        .expect("in-flight call completes during drain");
    assert!(!slow.into_inner().found);
    let drained = drain.await.unwrap().unwrap().into_inner();
    assert!(drained.success, "{}", drained.error);
    assert_eq!(
        (drained.drained_operations, drained.aborted_operations),
        (1, 0)
    );

    let stop = lc
        .stop(StopRequest { timeout_seconds: 5 })
        .await
        .unwrap()
        .into_inner();
    assert!(stop.success, "{}", stop.error);
    let exit = r.process.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(exit.success(), "exit status after Stop: {exit:?}");
}

#[tokio::test]
async fn initialize_overrides_backend_keys_and_reports_errors_in_band() {
    let mut redis = Redis::start().await.unwrap();
    let r = start(&[], &[]).await;
    let mut lc = lifecycle(&r);

    // Point the backend at Redis through the Initialize Struct.
    let init = lc
        .initialize(init_request(&[("probe_address", &redis.addr())]))
        .await
        .unwrap()
        .into_inner();
    assert!(init.success, "{}", init.error);
    expect_serving(r.port, "readiness", STARTUP).await;
    redis.stop().await.unwrap();
    expect_not_serving(r.port, "readiness", Duration::from_secs(5)).await;

    // A misspelt key is an in-band error naming it; gRPC status stays OK.
    let bad = lc
        .initialize(init_request(&[("probe_adress", "x:1")]))
        .await
        .expect("lifecycle errors are in-band, not gRPC errors")
        .into_inner();
    assert!(!bad.success);
    assert!(
        bad.error.contains("`backend.probe_adress`"),
        "{}",
        bad.error
    );
    assert!(
        bad.error.contains("Initialize request config"),
        "{}",
        bad.error
    );

    // Unreachable backend: in-band failure, process keeps running.
    let down = lc
        .initialize(init_request(&[("probe_address", &redis.addr())]))
        .await
        .unwrap()
        .into_inner();
    assert!(!down.success);
    assert!(down.error.contains("unavailable"), "{}", down.error);
    assert_eq!(
        health_status(&r.channel, "liveness").await.unwrap(),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn readiness_follows_the_backend_and_liveness_does_not() {
    let mut redis = Redis::start().await.unwrap();
    let addr = redis.addr();
    let r = start(&[], &[("TEST_PROBE_ADDRESS", &addr)]).await;
    for svc in [
        "",
        "readiness",
        "test",
        "prism.interfaces.keyvalue.KeyValueBasicInterface",
    ] {
        wait_for_health(r.port, svc, ServingStatus::Serving, STARTUP)
            .await
            .unwrap();
    }

    redis.stop().await.unwrap();
    let lost = Instant::now();
    expect_not_serving(r.port, "readiness", Duration::from_secs(3)).await;
    let lost = lost.elapsed();
    eprintln!("readiness NOT_SERVING {lost:?} after the backend stopped");
    for svc in [
        "",
        "test",
        "prism.interfaces.keyvalue.KeyValueBasicInterface",
    ] {
        assert_eq!(
            health_status(&r.channel, svc).await.unwrap(),
            ServingStatus::NotServing,
            "{svc:?}"
        );
    }
    assert_eq!(
        health_status(&r.channel, "liveness").await.unwrap(),
        ServingStatus::Serving
    );
    let hc = lifecycle(&r)
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hc.status, HealthStatus::Unhealthy as i32);

    redis.start_again().await.unwrap();
    let back = Instant::now();
    expect_serving(r.port, "", Duration::from_secs(3)).await;
    let back = back.elapsed();
    eprintln!("\"\" SERVING {back:?} after the backend returned");
}

#[tokio::test]
async fn backend_down_at_startup_keeps_process_alive_until_it_appears() {
    let mut redis = Redis::start().await.unwrap();
    let addr = redis.addr();
    redis.stop().await.unwrap();
    let mut r = start(&[], &[("TEST_PROBE_ADDRESS", &addr)]).await;
    // No NOT_FOUND window: every status exists as soon as the port answers.
    assert_eq!(
        health_status(&r.channel, "").await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(
        health_status(&r.channel, "readiness").await.unwrap(),
        ServingStatus::NotServing
    );
    let call = kv(&r)
        .get(GetRequest { key: "k".into() })
        .await
        .unwrap_err();
    assert_eq!(call.code(), tonic::Code::Unavailable);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        r.process.try_status().unwrap().is_none(),
        "process must not exit for a backend outage"
    );

    redis.start_again().await.unwrap();
    expect_serving(r.port, "", Duration::from_secs(10)).await;
    kv(&r)
        .set(SetRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_with_calls_in_flight_completes_them_and_exits_zero() {
    let mut r = start(&[], &[]).await;
    let mut calls = Vec::new();
    for _ in 0..5 {
        calls.push(slow_get(&r, 1000));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.process.sigterm().unwrap();
    for call in calls {
        call.await
            .unwrap()
            .expect("in-flight call completes after SIGTERM");
    }
    let exit = r.process.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(exit.code(), Some(0), "{}", r.process.logs());
    assert!(r.process.logs().contains("drained"), "{}", r.process.logs());
}

#[tokio::test]
async fn second_signal_exits_at_once() {
    let mut r = start(&[], &[]).await;
    let _slow = slow_get(&r, 20000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.process.sigterm().unwrap();
    r.process
        .wait_for_log("shutting down gracefully", Duration::from_secs(5))
        .await
        .unwrap();
    let sent = Instant::now();
    r.process.sigterm().unwrap();
    let exit = r.process.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert_eq!(exit.code(), Some(130));
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn drain_timeout_reports_aborted_calls() {
    let r = start(&["--log-level", "warn"], &[]).await;
    let slow = slow_get(&r, 4000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = lifecycle(&r)
        .drain(DrainRequest {
            timeout_seconds: 1,
            reason: "short".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.success);
    assert_eq!((reply.drained_operations, reply.aborted_operations), (0, 1));
    assert!(reply.error.contains("still in flight"), "{}", reply.error);
    slow.abort();
}

async fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut p = PluginProcess::spawn(test_plugin(), args, envs)
        .await
        .unwrap();
    let status = p.wait_exit(Duration::from_secs(10)).await.unwrap();
    (status.code().unwrap_or(-1), p.logs())
}

#[tokio::test]
async fn misspelt_keys_in_yaml_and_env_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.yaml");
    std::fs::write(&file, "backend:\n  probe_adress: 127.0.0.1:1\n").unwrap();
    let (code, out) = run_to_exit(&["--config", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("`backend.probe_adress`") && out.contains("YAML file"),
        "{out}"
    );

    let (code, out) = run_to_exit(&[], &[("PRISM_CONTROL_PLANE__PORTT", "1")]).await;
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("`control_plane.portt`") && out.contains("PRISM_CONTROL_PLANE__PORTT"),
        "{out}"
    );

    let (code, out) = run_to_exit(&[], &[("PRISM_CONTROL_PLANE__DRAIN_TIMEOUT", "soon")]).await;
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("`control_plane.drain_timeout`"), "{out}");

    let (code, out) = run_to_exit(&["--config", "/nonexistent/plugin.yaml"], &[]).await;
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("/nonexistent/plugin.yaml"), "{out}");
}

#[tokio::test]
async fn grpc_port_flag_overrides_file_and_check_config_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.yaml");
    std::fs::write(
        &file,
        "control_plane:\n  port: 1111\nbackend:\n  password: s3cr3t-file-pw\n  url: postgres://app:s3cr3t-url-pw@db:5432/x\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out) = run_to_exit(
        &["--config", path, "--grpc-port", "2222", "--check-config"],
        &[("PRISM_CONTROL_PLANE__PORT", "3333")],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("port: 2222"), "flag beats env and file: {out}");
    assert!(!out.contains("s3cr3t"), "secret leaked: {out}");
    assert!(out.contains("postgres://app:<redacted>@db:5432/x"), "{out}");

    // Env beats file when no flag is given.
    let (_, out) = run_to_exit(
        &["--config", path, "--check-config"],
        &[("PRISM_CONTROL_PLANE__PORT", "3333")],
    )
    .await;
    assert!(out.contains("port: 3333"), "{out}");

    // A running plugin never logs the secrets either (JSON logs by default).
    let mut r = start(
        &["--config", path, "--log-level", "debug"],
        &[("PRISM_BACKEND__PASSWORD", "s3cr3t-env-pw")],
    )
    .await;
    lifecycle(&r)
        .initialize(init_request(&[("password", "s3cr3t-init-pw")]))
        .await
        .unwrap();
    r.process.sigterm().unwrap();
    r.process.wait_exit(Duration::from_secs(10)).await.unwrap();
    let logs = r.process.logs();
    assert!(!logs.contains("s3cr3t"), "secret in logs: {logs}");
    let first = logs
        .lines()
        .find(|l| l.contains('{'))
        .expect("JSON log lines");
    let json = &first[first.find('{').unwrap()..];
    let parsed: serde_json::Value = serde_json::from_str(json).expect("log line is JSON");
    assert!(
        parsed.get("level").is_some() && parsed.get("message").is_some(),
        "{first}"
    );
}

#[tokio::test]
async fn grpcurl_lists_services_and_checks_health() {
    let r = start(&[], &[]).await;
    expect_serving(r.port, "", STARTUP).await;
    let grpcurl = prism_testkit::grpcurl().unwrap();
    let target = format!("localhost:{}", r.port);
    let out = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &target, "list"])
        .output()
        .await
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for svc in [
        "prism.interfaces.LifecycleInterface",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "prism.interfaces.keyvalue.KeyValueBasicInterface",
    ] {
        assert!(
            list.lines().any(|l| l == svc),
            "{svc} missing from:\n{list}"
        );
    }
    let out = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"service":""}"#,
            &target,
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"SERVING\""), "{text}");
}

#[tokio::test]
async fn metrics_endpoint_counts_calls_by_method_and_status() {
    let metrics_port = free_port();
    let r = start(&[], &[("PRISM_METRICS_PORT", &metrics_port.to_string())]).await;
    expect_serving(r.port, "", STARTUP).await;
    kv(&r).get(GetRequest { key: "a".into() }).await.unwrap();
    let err = kv(&r).set(SetRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let body = http_get(metrics_port, "/metrics").await;
    assert!(
        body.contains(r#"prism_grpc_requests_total{plugin="test",method="/prism.interfaces.keyvalue.KeyValueBasicInterface/Get",code="Ok"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"method="/prism.interfaces.keyvalue.KeyValueBasicInterface/Set",code="InvalidArgument"} 1"#),
        "{body}"
    );
    assert!(
        body.contains("prism_backend_up{plugin=\"test\"} 1"),
        "{body}"
    );
    assert!(
        http_get(metrics_port, "/health/ready")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(metrics_port, "/health/live")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn dual_stack_port_and_16_mib_values() {
    let r = start(&[], &[]).await;
    // The port is bound on [::]: IPv6 and IPv4 loopback clients both reach it.
    let v6 = tonic::transport::Endpoint::from_shared(format!("http://[::1]:{}", r.port))
        .unwrap()
        .connect()
        .await;
    if let Ok(v6) = v6 {
        assert_eq!(
            health_status(&v6, "liveness").await.unwrap(),
            ServingStatus::Serving
        );
    } else {
        eprintln!("no IPv6 loopback on this machine; IPv4 checked only");
    }

    // A 16 MiB value fits the default message limit, both ways.
    let value = bytes::Bytes::from(vec![0xA5u8; 16 * 1024 * 1024]);
    let mut client = kv(&r)
        .max_decoding_message_size(128 * 1024 * 1024)
        .max_encoding_message_size(128 * 1024 * 1024);
    client
        .set(SetRequest {
            key: "big".into(),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = client
        .get(GetRequest { key: "big".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value.len(), value.len());
    assert!(got.value == value);

    // Over the configured limit: a clean error, and the server keeps serving.
    let too_big = bytes::Bytes::from(vec![0u8; 65 * 1024 * 1024]);
    let err = client
        .set(SetRequest {
            key: "huge".into(),
            value: too_big,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{err:?}"
    );
    assert!(
        kv(&r)
            .get(GetRequest {
                key: "small".into()
            })
            .await
            .is_ok()
    );
}
