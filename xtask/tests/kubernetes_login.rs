//! The Kubernetes manifests' Vault login against a real OpenBao: its
//! `kubernetes` auth method is configured with the public key of a key pair
//! made here (`pem_keys`) and pointed at a stand-in for the API server's
//! TokenReview endpoint, which accepts exactly the service-account JWT this test
//! signed (claims as a projected token of service account `prism-plugin` in
//! namespace `prism`, audience `vault`). `prism-redis` then runs with exactly
//! the ConfigMap environment of `deploy/kubernetes/redis.yaml` (only Vault's
//! address, the token file, the Redis address and the metrics port mapped to
//! this test's servers) and must serve as a Redis user Vault minted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use prism_testkit::lifecycle::spawn_plugin_on;
use prism_testkit::{Redis, ServingStatus, Vault, free_port, grpcurl, wait_for_health};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_PASSWORD: &str = "k8s-login-test-admin";
const SA_UID: &str = "6f1c2a4e-0c55-4a57-9a3e-2f1d9b8e7c10";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A P-256 key pair; its public key as PEM (SubjectPublicKeyInfo).
fn key_pair() -> (EcdsaKeyPair, String) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // SPKI for an uncompressed P-256 point: the fixed algorithm header + the point.
    let mut spki = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.extend_from_slice(pair.public_key().as_ref());
    let b64 = STANDARD.encode(&spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    (pair, pem)
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// An ES256 JWT shaped like a projected service-account token.
fn service_account_jwt(pair: &EcdsaKeyPair) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "prism-test"});
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:prism:prism-plugin",
        "aud": ["vault"],
        "iat": now, "nbf": now, "exp": now + 600,
        "kubernetes.io": {
            "namespace": "prism",
            "serviceaccount": {"name": "prism-plugin", "uid": SA_UID},
            "pod": {"name": "prism-redis-0", "uid": "0b0c6e8e-1111-4222-8333-944455556666"}
        }
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = pair
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

/// The API server's TokenReview, standing in for Kubernetes: authenticated
/// exactly for `token`. Returns its port and the verdicts it gave.
async fn token_review(token: String) -> (u16, Arc<Mutex<Vec<bool>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&verdicts);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (token, seen) = (token.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break buf[end + 4..end + 4 + length].to_vec();
                        }
                    }
                };
                let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let ok = review["spec"]["token"].as_str() == Some(token.as_str());
                seen.lock().unwrap().push(ok);
                let status = if ok {
                    json!({"authenticated": true, "audiences": ["vault"], "user": {
                        "username": "system:serviceaccount:prism:prism-plugin", "uid": SA_UID,
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:prism", "system:authenticated"]}})
                } else {
                    json!({"authenticated": false, "error": "invalid token"})
                };
                let reply = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
                    .to_string();
                let response = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, verdicts)
}

/// The ConfigMap `data` of a generated plugin manifest.
fn config_map(file: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if value.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
            let data = value.get("data").and_then(|d| d.as_mapping()).unwrap();
            return data
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        }
    }
    panic!("{file} has no ConfigMap")
}

#[tokio::test]
async fn a_plugin_logs_in_to_vault_with_the_kubernetes_auth_method_of_its_manifest() {
    let admin = format!(">{ADMIN_PASSWORD}");
    let args = [
        "--user",
        "vault-admin",
        "on",
        admin.as_str(),
        "~*",
        "&*",
        "+@all",
    ];
    let (redis, vault) = tokio::join!(Redis::start_with_args(&args), Vault::start());
    let (redis, vault) = (redis.unwrap(), vault.unwrap());
    let redis_port = redis.port().to_string();
    vault
        .dev_setup(
            &["--redis-port", &redis_port],
            &[
                ("REDIS_ADMIN_USER", "vault-admin"),
                ("REDIS_ADMIN_PASSWORD", ADMIN_PASSWORD),
                ("SKIP_POSTGRES", "1"),
                ("SKIP_KAFKA", "1"),
            ],
        )
        .await
        .unwrap();

    let (pair, public_pem) = key_pair();
    let jwt = service_account_jwt(&pair);
    let (review_port, verdicts) = token_review(jwt.clone()).await;
    let dir = vault.dir().to_path_buf();
    let pem_file = dir.join("sa-signer.pem");
    let jwt_file = dir.join("sa-token");
    std::fs::write(&pem_file, &public_pem).unwrap();
    // Required with disable_local_ca_jwt (the API server's CA); unused over http.
    let ca_file = dir.join("k8s-ca.pem");
    std::fs::write(
        &ca_file,
        prism_testkit::TestCa::new("k8s-test-ca").unwrap().ca_pem(),
    )
    .unwrap();
    std::fs::write(&jwt_file, &jwt).unwrap();

    let env = config_map("deploy/kubernetes/redis.yaml");
    assert_eq!(env["PRISM_VAULT__AUTH__METHOD"], "kubernetes", "{env:?}");
    let role = env["PRISM_VAULT__AUTH__ROLE"].clone();
    vault.bao(&["auth", "enable", "kubernetes"]).await.unwrap();
    vault
        .bao(&[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host=http://127.0.0.1:{review_port}"),
            &format!("pem_keys=@{}", pem_file.display()),
            "disable_local_ca_jwt=true",
            &format!("kubernetes_ca_cert=@{}", ca_file.display()),
        ])
        .await
        .unwrap();
    // What an operator writes for each plugin (Containerfiles/README.md).
    vault
        .bao(&[
            "write",
            &format!("auth/kubernetes/role/{role}"),
            "bound_service_account_names=prism-plugin",
            "bound_service_account_namespaces=prism",
            "audience=vault",
            "token_policies=prism",
            "token_ttl=1h",
        ])
        .await
        .unwrap();

    // The manifest's environment, with only the addresses and files mapped here.
    let port = free_port();
    let metrics = free_port().to_string();
    let (vault_addr, redis_addr) = (vault.addr(), redis.addr());
    let jwt_path = jwt_file.display().to_string();
    let mut envs: Vec<(&str, &str)> = Vec::new();
    for (key, value) in &env {
        let value = match key.as_str() {
            "VAULT_ADDR" => vault_addr.as_str(),
            "PRISM_VAULT__AUTH__JWT_FILE" => jwt_path.as_str(),
            "REDIS_ADDRESS" => redis_addr.as_str(),
            "PRISM_METRICS_PORT" => metrics.as_str(),
            _ => value.as_str(),
        };
        envs.push((key.as_str(), value));
    }
    // Built by `cargo build --bins` (the spawn fails naming the path otherwise).
    let binary = root().join("target/debug/prism-redis");
    let plugin = spawn_plugin_on(&binary, port, &[], &envs).await;
    wait_for_health(
        port,
        "readiness",
        ServingStatus::Serving,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));

    let out = tokio::process::Command::new(grpcurl().unwrap())
        .args([
            "-plaintext",
            &format!("127.0.0.1:{port}"),
            "prism.interfaces.LifecycleInterface/HealthCheck",
        ])
        .output()
        .await
        .unwrap();
    let health = String::from_utf8_lossy(&out.stdout).into_owned();
    let user = health
        .split("\"vault_user\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_lowercase();
    // Minted for the token of the Kubernetes login (display name kubernetes-…).
    assert!(
        user.starts_with("v_kubernetes"),
        "not a Vault user from the Kubernetes login: {health}"
    );
    let verdicts = verdicts.lock().unwrap().clone();
    assert!(
        !verdicts.is_empty() && verdicts.iter().all(|ok| *ok),
        "TokenReview verdicts: {verdicts:?}"
    );
    assert!(
        !plugin.logs().contains(&jwt),
        "the service-account token was logged"
    );
    eprintln!(
        "prism-redis logged in with role {role} (TokenReview calls: {}), serves as {user}",
        verdicts.len()
    );
}
