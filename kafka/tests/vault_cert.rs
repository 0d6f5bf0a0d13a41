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

use common::pubsub::{AcrossChange, publish, publish_request, round_trip};
use common::secured::Secured;
use common::{STARTUP, assert_no_key_in, ready_channel, stop};
use prism_testkit::lifecycle::health_check;
use prism_testkit::{IssuedCert, PluginProcess, TestCa, Vault};
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

/// The plugin over TLS to the mTLS proxy, its client certificate from
/// `vault`'s KV secret [`SECRET`], ready: it, its port and a channel.
async fn spawn_from_vault(
    secured: &mut Secured,
    vault: &Vault,
    extra: &[(&str, &str)],
) -> (PluginProcess, u16, Channel) {
    secured.credentials_in_vault_kv(vault, "prism/kafka-cert");
    let (plugin, port) = secured.spawn(extra).await;
    let channel = ready_channel(&plugin, port).await;
    (plugin, port, channel)
}

/// Waits until `plugin` logs `line`; panics with its logs otherwise.
async fn logged(plugin: &PluginProcess, line: &str) {
    let seen = plugin.wait_for_log(line, STARTUP).await;
    seen.unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_certificate_version_is_swapped_in_under_load_without_a_failed_publish() {
    let mut secured = Secured::mtls().await;
    let vault = Vault::start().await.expect("OpenBao starts");
    let first = secured.ca.client("prism-kafka-1").expect("cert 1");
    let second = secured.ca.client("prism-kafka-2").expect("cert 2");
    let foreign = TestCa::new("not-the-brokers-ca")
        .and_then(|ca| ca.client("prism-kafka-3"))
        .expect("foreign cert");
    put_certificate(&vault, &secured, "first", &first).await;
    let extra = [
        ("PRISM_BACKEND__DEFAULT_PARTITIONS", "1"),
        ("PRISM_LOG_LEVEL", "debug"),
    ];
    let (mut plugin, port, channel) = spawn_from_vault(&mut secured, &vault, &extra).await;
    let before = health_check(port).await.details;
    let source = before.get("client_certificate").map(String::as_str);
    assert_eq!(source, Some("rotated-pem"), "{before:?}");
    let presented = secured.proxy.client_certificates();
    assert!(presented.iter().all(|der| *der == first.cert_der()));

    // A Subscribe stream that has received one message, and steady
    // publishes while the certificate changes.
    let traffic = AcrossChange::start(&channel, "cert").await;
    put_certificate(&vault, &secured, "second", &second).await;
    logged(&plugin, "subscription switched to the rotated credentials").await;
    let after = health_check(port).await.details;
    assert_eq!(after.get("vault_generation").map(String::as_str), Some("2"));
    let keys = [first.key_pem.as_str(), second.key_pem.as_str()];
    assert_no_key_in(&format!("{after:?}"), "health details", keys);

    // The subscription goes on, publishes never failed; new connections
    // present the new certificate.
    traffic.finish(&channel).await;
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
    logged(&plugin, "cannot connect with the new Vault credentials").await;
    assert!(secured.proxy.failed_handshakes() > 0);
    publish(&channel, publish_request("cert-load", "still cert two")).await;
    let kept = health_check(port).await.details;
    assert_eq!(kept.get("vault_generation").map(String::as_str), Some("2"));

    let logs = stop(&mut plugin).await;
    let keys = [&first, &second, &foreign].map(|cert| cert.key_pem.as_str());
    assert_no_key_in(&logs, "logs", keys);
}

/// Enables OpenBao's PKI engine with a root CA and a client role (30 s
/// TTL) for any name; returns the CA certificate (PEM). Not testkit's
/// `Vault::setup_pki`: that issues EC keys for one name, and this test is
/// about RSA PKCS#1 keys as `pki/issue` hands them out by default.
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
    let field = |name: &str| issued["data"][name].as_str().expect(name).to_string();
    let cert = IssuedCert {
        cert_pem: field("certificate"),
        key_pem: field("private_key"),
    };
    put_certificate(vault, secured, name, &cert).await;
    cert
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_issued_by_vault_pki_authenticate_through_the_mtls_proxy_and_swap() {
    let vault = Vault::start().await.expect("OpenBao starts");
    let pki_ca = enable_pki(&vault).await;
    // The proxy trusts only clients signed by Vault's PKI root.
    let mut secured = Secured::trusting(pki_ca).await;
    let first = issue_into_kv(&vault, &secured, "prism-kafka-a").await;
    assert!(first.key_pem.contains("PRIVATE KEY"), "PEM key as issued");
    let (mut plugin, _, channel) = spawn_from_vault(&mut secured, &vault, &[]).await;
    round_trip(&channel, "pki-topic", "pki-group", "pki cert one").await;
    let presented = secured.proxy.client_certificates();
    assert!(presented.contains(&first.cert_der()));

    let second = issue_into_kv(&vault, &secured, "prism-kafka-b").await;
    logged(&plugin, "switched to the rotated credentials").await;
    round_trip(&channel, "pki-topic-2", "pki-group-2", "pki cert two").await;
    let presented = secured.proxy.client_certificates();
    assert!(presented.contains(&second.cert_der()));
    let logs = stop(&mut plugin).await;
    assert_no_key_in(&logs, "logs", [&first, &second].map(|c| c.key_pem.as_str()));
}
