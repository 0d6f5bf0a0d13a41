//! `prism-kafka` with client certificates issued by Vault's PKI engine
//! (`vault.secret.engine: pki`, real OpenBao) through the test proxy that
//! requires a client certificate signed by that engine's root (real tansu
//! behind it): with a 30 s certificate TTL and steady publishes for 90 s,
//! the certificate is re-issued at about 2/3 of its life and swapped in at
//! least 3 times with 0 failed publishes, the broker sees every new
//! certificate, and no private key Vault handed out is ever logged.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Secured, publish_request, ready_channel, spawn};
use prism_plugin_core::proto::lifecycle::HealthCheckRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_testkit::{Tee, Vault, json_strings};

/// The certificate's common name.
const IDENTITY: &str = "prism-kafka";

#[tokio::test(flavor = "multi_thread")]
async fn pki_certificates_with_a_30s_ttl_are_reissued_under_load_with_no_failed_publish() {
    let vault = Vault::start().await.expect("OpenBao starts");
    let vault_ca = vault
        .setup_pki("pki", "prism-kafka", IDENTITY, "30s")
        .await
        .expect("PKI engine");
    // The proxy trusts only clients signed by Vault's PKI root.
    let secured = Secured::start_trusting(vault_ca).await;

    // Through a recording pass-through, so the test knows every key Vault
    // handed out.
    let tee = Tee::start(vault.port()).await;
    let brokers = secured.proxy.bootstrap();
    let ca_path = secured.ca_file.to_string_lossy().into_owned();
    let vault_addr = tee.addr();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &ca_path),
        ("PRISM_BACKEND__DEFAULT_PARTITIONS", "1"),
        ("VAULT_ADDR", &vault_addr),
        ("VAULT_TOKEN", vault.root_token()),
        ("PRISM_VAULT__SECRET__ENGINE", "pki"),
        ("PRISM_VAULT__SECRET__ROLE", "prism-kafka"),
        ("PRISM_VAULT__SECRET__COMMON_NAME", IDENTITY),
        ("PRISM_VAULT__SECRET__TTL", "30s"),
    ])
    .await;
    let channel = ready_channel(&plugin, port).await;

    // Steady publishes for 90 s: three or more re-issues at ~20 s each.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = PubSubBasicInterfaceClient::new(channel.clone());
    let load = tokio::spawn({
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .publish(publish_request("pki-load", &i.to_string()))
                    .await
                {
                    Ok(reply) if reply.get_ref().success => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("publish failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let details: HashMap<String, String> = LifecycleInterfaceClient::new(channel.clone())
        .health_check(HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner()
        .details;
    let presented: BTreeSet<Vec<u8>> = secured.proxy.client_certificates().into_iter().collect();
    eprintln!(
        "[kafka pki] publishes: {ok} ok, {failed} failed; {} certificates presented; {details:?}",
        presented.len()
    );
    assert_eq!(failed, 0, "no publish fails across re-issues");
    assert!(ok > 100, "load ran: {ok}");
    let swaps: u64 = details["vault_pool_swaps"].parse().expect("a number");
    assert!(swaps >= 3, "at least 3 re-issues swapped in: {details:?}");
    assert!(
        presented.len() >= 4,
        "the broker saw 4+ certificates: {}",
        presented.len()
    );
    assert_eq!(details["vault_reachable"], "true", "{details:?}");

    plugin.sigterm().expect("sigterm");
    plugin
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    let logs = plugin.logs();
    let keys = json_strings(&tee.traffic(), "private_key");
    assert!(keys.len() >= 4, "Vault issued the keys: {}", keys.len());
    for key in &keys {
        for line in key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 8)
        {
            assert!(!logs.contains(line), "private key material in the logs");
        }
    }
}
