//! `prism-kafka` with client certificates issued by Vault's PKI engine
//! (`vault.secret.engine: pki`, real OpenBao) through the test proxy that
//! requires a client certificate signed by that engine's root (real tansu
//! behind it): with a 30 s certificate TTL and steady publishes for 90 s,
//! the certificate is re-issued at about 2/3 of its life and swapped in at
//! least 3 times with 0 failed publishes, the broker sees every new
//! certificate, and no private key Vault handed out is ever logged.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::pubsub::PublishLoad;
use common::secured::Secured;
use common::{assert_no_key_in, ready_channel, stop};
use prism_testkit::lifecycle::health_check;
use prism_testkit::{Tee, Vault};

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
    let mut secured = Secured::trusting(vault_ca).await;

    // Through a recording pass-through, so the test knows every key Vault
    // handed out.
    let tee = Tee::start(vault.port()).await;
    secured
        .set("VAULT_ADDR", tee.addr())
        .set("VAULT_TOKEN", vault.root_token())
        .set("PRISM_VAULT__SECRET__ENGINE", "pki")
        .set("PRISM_VAULT__SECRET__ROLE", "prism-kafka")
        .set("PRISM_VAULT__SECRET__COMMON_NAME", IDENTITY)
        .set("PRISM_VAULT__SECRET__TTL", "30s");
    let (mut plugin, port) = secured
        .spawn(&[("PRISM_BACKEND__DEFAULT_PARTITIONS", "1")])
        .await;
    let channel = ready_channel(&plugin, port).await;

    // Steady publishes for 90 s: three or more re-issues at ~20 s each.
    let load = PublishLoad::start(&channel, "pki-load", Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(90)).await;
    load.finish("kafka pki re-issues", 101).await;
    let details = health_check(port).await.details;
    let presented: BTreeSet<Vec<u8>> = secured.proxy.client_certificates().into_iter().collect();
    eprintln!(
        "[kafka pki] {} certificates presented; {details:?}",
        presented.len()
    );
    let swaps: u64 = details["vault_pool_swaps"].parse().expect("a number");
    assert!(swaps >= 3, "at least 3 re-issues swapped in: {details:?}");
    assert!(
        presented.len() >= 4,
        "the broker saw 4+ certificates: {}",
        presented.len()
    );
    assert_eq!(details["vault_reachable"], "true", "{details:?}");

    let logs = stop(&mut plugin).await;
    let keys = tee.json_strings("private_key");
    assert!(keys.len() >= 4, "Vault issued the keys: {}", keys.len());
    assert_no_key_in(&logs, "logs", keys.iter().map(String::as_str));
}
