//! `prism-kafka` taking its TLS client certificate from a rotated secret
//! (real OpenBao, KV v2 fields `certificate` and `private_key`, the names
//! Vault PKI's `issue` returns) in front of a real broker (tansu behind the
//! test proxy, which requires a client certificate from the test CA and
//! records every one it accepts). A new version with a new certificate is
//! swapped in like rotated SASL credentials: publishes keep succeeding
//! throughout (0 failures), an open Subscribe stream carries on, new
//! connections present the new certificate, a later version with a
//! certificate the broker refuses is abandoned while the working one stays
//! in use, and no line of any private key is ever logged. Certificates
//! issued by OpenBao's PKI engine (RSA, PKCS#1 keys, `pki/issue/<role>`'s
//! fields carried over unchanged) work the same way.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{RECV, STARTUP, Secured, publish_request, ready_channel, round_trip, spawn};
use prism_plugin_core::proto::lifecycle::HealthCheckRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::pubsub::SubscribeRequest;
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_testkit::{IssuedCert, SaslMechanism, TestCa, Vault};
use tonic::transport::Channel;

const SECRET: &str = "secret/prism/kafka-cert";

async fn put_certificate(vault: &Vault, secured: &Secured, name: &str, cert: &IssuedCert) {
    let cert_file = secured.write(&format!("{name}.pem"), &cert.cert_pem);
    let key_file = secured.write(&format!("{name}-key.pem"), &cert.key_pem);
    vault
        .bao(&[
            "kv",
            "put",
            SECRET,
            &format!("certificate=@{}", cert_file.display()),
            &format!("private_key=@{}", key_file.display()),
        ])
        .await
        .expect("bao kv put");
}

async fn details(channel: &Channel) -> HashMap<String, String> {
    LifecycleInterfaceClient::new(channel.clone())
        .health_check(HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner()
        .details
}

/// Publishes every 10 ms until `stop`; counts successes and failures.
fn publish_load(
    channel: &Channel,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut client = PubSubBasicInterfaceClient::new(channel.clone());
    let task = tokio::spawn({
        let (ok, failed) = (ok.clone(), failed.clone());
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let request = publish_request("cert-load", &i.to_string());
                match client.publish(request).await {
                    Ok(reply) if reply.get_ref().success => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("publish failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    (task, ok, failed)
}

fn key_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 8)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_certificate_version_is_swapped_in_under_load_without_a_failed_publish() {
    let secured = Secured::start_with(true, true, None, SaslMechanism::Plain).await;
    let vault = Vault::start().await.expect("OpenBao starts");
    let first = secured.ca.client("prism-kafka-1").expect("cert 1");
    let second = secured.ca.client("prism-kafka-2").expect("cert 2");
    let foreign = TestCa::new("not-the-brokers-ca")
        .and_then(|ca| ca.client("prism-kafka-3"))
        .expect("foreign cert");
    put_certificate(&vault, &secured, "first", &first).await;
    let brokers = secured.proxy.bootstrap();
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let vault_addr = vault.addr();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &ca_file),
        ("PRISM_BACKEND__DEFAULT_PARTITIONS", "1"),
        ("VAULT_ADDR", &vault_addr),
        ("VAULT_TOKEN", vault.root_token()),
        ("PRISM_VAULT__SECRET__ENGINE", "kv2"),
        ("PRISM_VAULT__SECRET__PATH", "prism/kafka-cert"),
        ("PRISM_VAULT__SECRET__POLL_INTERVAL", "300ms"),
        ("PRISM_LOG_LEVEL", "debug"),
    ])
    .await;
    let channel = ready_channel(&plugin, port).await;
    let before = details(&channel).await;
    let source = before.get("client_certificate").map(String::as_str);
    assert_eq!(source, Some("rotated-pem"), "{before:?}");
    assert!(
        secured
            .proxy
            .client_certificates()
            .iter()
            .all(|der| *der == first.cert_der())
    );

    // A Subscribe stream that has received one message.
    let mut publisher = PubSubBasicInterfaceClient::new(channel.clone());
    let mut subscription = publisher
        .subscribe(SubscribeRequest {
            topic: "cert-sub".into(),
            subscriber_id: "cert-group".into(),
            options: HashMap::from([("start".to_string(), "earliest".to_string())]),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let reply = publisher.publish(publish_request("cert-sub", "before"));
    assert!(reply.await.expect("publish").into_inner().success);
    let got = tokio::time::timeout(RECV, subscription.message()).await;
    let got = got.expect("in time").expect("ok").expect("open");
    assert_eq!(got.payload.as_ref(), b"before");

    // Steady publishes while the certificate changes.
    let stop = Arc::new(AtomicBool::new(false));
    let (load, ok, failed) = publish_load(&channel, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    put_certificate(&vault, &secured, "second", &second).await;
    plugin
        .wait_for_log("subscription switched to the rotated credentials", STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    let after = details(&channel).await;
    assert_eq!(after.get("vault_generation").map(String::as_str), Some("2"));
    let shown = format!("{after:?}");
    for line in key_lines(&first.key_pem)
        .into_iter()
        .chain(key_lines(&second.key_pem))
    {
        assert!(!shown.contains(line), "a private key in the health details");
    }

    // The subscription goes on; new connections present the new certificate.
    let reply = publisher.publish(publish_request("cert-sub", "after"));
    assert!(reply.await.expect("publish").into_inner().success);
    let got = tokio::time::timeout(RECV, subscription.message()).await;
    let got = got.expect("in time").expect("ok").expect("open");
    assert_eq!(got.payload.as_ref(), b"after");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("[vault cert] publishes during the swap: {ok} ok, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok >= 20, "only {ok} publishes ran");
    let got = round_trip(&channel, "cert-after", "after-group", "with cert two").await;
    assert_eq!(got, "with cert two");
    let presented = secured.proxy.client_certificates();
    let with_second = presented
        .iter()
        .filter(|der| **der == second.cert_der())
        .count();
    // Producer, admin client, the rebuilt subscription and the new group.
    assert!(with_second >= 3, "{with_second} of {}", presented.len());

    // Version 3: a certificate the broker refuses is abandoned; the working
    // one stays in use.
    put_certificate(&vault, &secured, "foreign", &foreign).await;
    plugin
        .wait_for_log("cannot connect with the new Vault credentials", STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    assert!(secured.proxy.failed_handshakes() > 0);
    let reply = publisher.publish(publish_request("cert-load", "still cert two"));
    assert!(reply.await.expect("publish").into_inner().success);
    let kept = details(&channel).await;
    assert_eq!(kept.get("vault_generation").map(String::as_str), Some("2"));

    plugin.sigterm().expect("sigterm");
    plugin
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    let logs = plugin.logs();
    for cert in [&first, &second, &foreign] {
        for line in key_lines(&cert.key_pem) {
            assert!(!logs.contains(line), "a private key leaked into the logs");
        }
    }
}

/// Enables OpenBao's PKI engine with a root CA and a client role (30 s
/// TTL); returns the CA certificate (PEM).
async fn enable_pki(vault: &Vault) -> String {
    vault
        .bao(&["secrets", "enable", "pki"])
        .await
        .expect("enable pki");
    let root = vault
        .bao_json(&[
            "write",
            "-format=json",
            "pki/root/generate/internal",
            "common_name=prism-test-root",
            "ttl=1h",
        ])
        .await
        .expect("root CA");
    vault
        .bao(&[
            "write",
            "pki/roles/kafka-client",
            "allow_any_name=true",
            "client_flag=true",
            "server_flag=false",
            "ttl=30s",
            "max_ttl=30s",
        ])
        .await
        .expect("role");
    root["data"]["certificate"]
        .as_str()
        .expect("CA PEM")
        .to_string()
}

/// Issues a certificate from the PKI role and stores its `certificate` and
/// `private_key` (as issued) as a new KV v2 version; returns the issued cert.
async fn issue_into_kv(vault: &Vault, secured: &Secured, name: &str) -> IssuedCert {
    let issued = vault
        .bao_json(&[
            "write",
            "-format=json",
            "pki/issue/kafka-client",
            &format!("common_name={name}"),
        ])
        .await
        .expect("issue");
    let data = &issued["data"];
    let cert = IssuedCert {
        cert_pem: data["certificate"]
            .as_str()
            .expect("certificate")
            .to_string(),
        key_pem: data["private_key"]
            .as_str()
            .expect("private_key")
            .to_string(),
    };
    put_certificate(vault, secured, name, &cert).await;
    cert
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_issued_by_vault_pki_authenticate_through_the_mtls_proxy_and_swap() {
    let vault = Vault::start().await.expect("OpenBao starts");
    let pki_ca = enable_pki(&vault).await;
    // The proxy trusts only clients signed by Vault's PKI root.
    let secured = Secured::start_trusting(pki_ca).await;
    let first = issue_into_kv(&vault, &secured, "prism-kafka-a").await;
    assert!(first.key_pem.contains("PRIVATE KEY"), "PEM key as issued");
    let brokers = secured.proxy.bootstrap();
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let vault_addr = vault.addr();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &ca_file),
        ("VAULT_ADDR", &vault_addr),
        ("VAULT_TOKEN", vault.root_token()),
        ("PRISM_VAULT__SECRET__ENGINE", "kv2"),
        ("PRISM_VAULT__SECRET__PATH", "prism/kafka-cert"),
        ("PRISM_VAULT__SECRET__POLL_INTERVAL", "300ms"),
    ])
    .await;
    let channel = ready_channel(&plugin, port).await;
    let got = round_trip(&channel, "pki-topic", "pki-group", "pki cert one").await;
    assert_eq!(got, "pki cert one");
    assert!(
        secured
            .proxy
            .client_certificates()
            .contains(&first.cert_der())
    );

    let second = issue_into_kv(&vault, &secured, "prism-kafka-b").await;
    plugin
        .wait_for_log("switched to the rotated credentials", STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    let got = round_trip(&channel, "pki-topic-2", "pki-group-2", "pki cert two").await;
    assert_eq!(got, "pki cert two");
    assert!(
        secured
            .proxy
            .client_certificates()
            .contains(&second.cert_der())
    );
    plugin.sigterm().expect("sigterm");
    plugin
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    let logs = plugin.logs();
    for cert in [&first, &second] {
        for line in key_lines(&cert.key_pem) {
            assert!(!logs.contains(line), "a private key leaked into the logs");
        }
    }
}
