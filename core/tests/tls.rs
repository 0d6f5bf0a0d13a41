//! TLS and mTLS on the plugin port with a CA generated at test time: health,
//! lifecycle and data calls over TLS; clients without a certificate, with one
//! from another CA, or in plaintext are refused; the plaintext probe port
//! serves health only; rotated certificates are picked up without dropping
//! open connections; unreadable certificate files are a config error (64).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::test_plugin;
use prism_plugin_core::proto::keyvalue::{
    GetRequest, key_value_basic_interface_client::KeyValueBasicInterfaceClient,
};
use prism_testkit::lifecycle::expect_serving;
use prism_testkit::{PluginProcess, ServingStatus, TestCa, free_port};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Pki {
    fn new() -> Self {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: TestCa::new("prism test ca").unwrap(),
        };
        pki.write_server(&pki.ca);
        std::fs::write(pki.path("client-ca.pem"), pki.ca.ca_pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a server certificate from `ca` to the files the plugin watches.
    fn write_server(&self, ca: &TestCa) {
        let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
        // Write to temp names and rename, as cert-manager's atomic writer does.
        write_atomic(&self.path("server.key"), &server.key_pem);
        write_atomic(&self.path("server.pem"), &server.cert_pem);
    }
}

fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn tls_channel(
    port: u16,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

async fn health(channel: &Channel, service: &str) -> Result<i32, String> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|e| e.to_string())
}

async fn start_tls_plugin(pki: &Pki, mtls: bool) -> (PluginProcess, u16, u16) {
    let port = free_port();
    let probe = free_port();
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let ca = pki.path("client-ca.pem");
    let mut envs = vec![
        (
            "PRISM_CONTROL_PLANE__TLS__CERT_FILE",
            cert.to_str().unwrap().to_string(),
        ),
        (
            "PRISM_CONTROL_PLANE__TLS__KEY_FILE",
            key.to_str().unwrap().to_string(),
        ),
        (
            "PRISM_CONTROL_PLANE__TLS__RELOAD_INTERVAL",
            "200ms".to_string(),
        ),
        ("PRISM_CONTROL_PLANE__PROBE_PORT", probe.to_string()),
    ];
    if mtls {
        envs.push((
            "PRISM_CONTROL_PLANE__TLS__CLIENT_CA_FILE",
            ca.to_str().unwrap().to_string(),
        ));
    }
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = PluginProcess::spawn(test_plugin(), &["--grpc-port", &port.to_string()], &envs)
        .await
        .unwrap();
    // Probes use the plaintext probe port.
    expect_serving(probe, "", Duration::from_secs(20)).await;
    (process, port, probe)
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let pki = Pki::new();
    let (_process, port, probe) = start_tls_plugin(&pki, true).await;
    let client = pki.ca.client("gateway").unwrap();
    let channel = tls_channel(
        port,
        &pki.ca.ca_pem(),
        Some((&client.cert_pem, &client.key_pem)),
    )
    .await
    .expect("a client with a certificate from the CA connects");
    assert_eq!(
        health(&channel, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    let reply = KeyValueBasicInterfaceClient::new(channel.clone())
        .get(GetRequest { key: "k".into() })
        .await
        .expect("data calls work over mTLS");
    assert!(!reply.into_inner().found);

    // No client certificate: refused (at connect or at the first call).
    let refused = match tls_channel(port, &pki.ca.ca_pem(), None).await {
        Ok(ch) => health(&ch, "").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate must be refused");

    // A certificate from another CA: refused.
    let other = TestCa::new("other").unwrap().client("intruder").unwrap();
    let refused = match tls_channel(
        port,
        &pki.ca.ca_pem(),
        Some((&other.cert_pem, &other.key_pem)),
    )
    .await
    {
        Ok(ch) => health(&ch, "").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a certificate from a foreign CA must be refused");

    // Plaintext to the TLS port: refused; the probe port answers health only.
    assert!(
        prism_testkit::health_status(
            &prism_testkit::connect(port, Duration::from_secs(1))
                .await
                .unwrap(),
            ""
        )
        .await
        .is_err()
    );
    let probe_channel = prism_testkit::connect(probe, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        health(&probe_channel, "liveness").await.unwrap(),
        ServingStatus::Serving as i32
    );
    let not_served = KeyValueBasicInterfaceClient::new(probe_channel)
        .get(GetRequest { key: "k".into() })
        .await
        .unwrap_err();
    assert_eq!(
        not_served.code(),
        tonic::Code::Unimplemented,
        "probe port serves health only"
    );
}

#[tokio::test]
async fn rotated_certificates_are_reloaded_without_dropping_connections() {
    let pki = Pki::new();
    let (process, port, _probe) = start_tls_plugin(&pki, false).await;
    let old = tls_channel(port, &pki.ca.ca_pem(), None).await.unwrap();
    assert_eq!(
        health(&old, "").await.unwrap(),
        ServingStatus::Serving as i32
    );

    // Rotate to a certificate from a new CA.
    let new_ca = TestCa::new("rotated ca").unwrap();
    pki.write_server(&new_ca);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ch) = tls_channel(port, &new_ca.ca_pem(), None).await
            && health(&ch, "").await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served: {}",
            process.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the rotation keeps working.
    assert_eq!(
        health(&old, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    assert!(process.logs().contains("reloaded TLS certificates"));
}

#[tokio::test]
async fn unreadable_certificate_is_a_config_error() {
    let pki = Pki::new();
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let mut process = PluginProcess::spawn(
        test_plugin(),
        &["--grpc-port", &free_port().to_string()],
        &[
            (
                "PRISM_CONTROL_PLANE__TLS__CERT_FILE",
                cert.to_str().unwrap(),
            ),
            ("PRISM_CONTROL_PLANE__TLS__KEY_FILE", key.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    let status = process.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(status.code(), Some(64), "{}", process.logs());
    assert!(
        process.logs().contains("control_plane.tls.cert_file"),
        "{}",
        process.logs()
    );
}
