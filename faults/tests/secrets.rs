//! Secrets never leak: each plugin runs with known secret values (backend
//! passwords, a password inside a URL, a Kafka SASL password, a Kafka
//! SCRAM-SHA-512 password and TLS client private keys, a Vault token,
//! Vault-minted passwords) through a normal startup and calls, a failing
//! connection (wrong password, unreachable backend), an Initialize override
//! carrying a secret, `--check-config`, and (postgres) Vault rotations. All
//! of its stdout and stderr (at `debug` level), the HealthCheck messages and
//! details, and Initialize errors are captured and searched for every
//! secret. Failure messages name the output and the secret's label, never
//! the secret.

use std::time::{Duration, Instant};

use prism_faults::{Kind, Plugin, binary, kv_get, kv_set, publish_request, vault};
use prism_plugin_core::proto::lifecycle::HealthCheckRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_testkit::Tee;
use prism_testkit::lifecycle::{self, health_check, text};
use prism_testkit::{
    Kafka, KafkaProxy, PluginProcess, Postgres, ProxyOptions, Redis, SaslMechanism, ServingStatus,
    TestCa, Vault, free_port,
};

const WAIT: Duration = Duration::from_secs(30);

/// Everything a plugin printed or answered, labelled by where it came from.
#[derive(Default)]
struct Output {
    texts: Vec<(String, String)>,
}

impl Output {
    fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        self.texts.push((source.into(), text.into()));
    }

    /// Panics naming the output and the secret's label if any secret occurs.
    fn assert_free_of(&self, name: &str, secrets: &[(&str, &str)]) {
        let bytes: usize = self.texts.iter().map(|(_, t)| t.len()).sum();
        eprintln!(
            "[{name}] searched {} outputs ({bytes} bytes) for {} secrets",
            self.texts.len(),
            secrets.len()
        );
        for (label, secret) in secrets {
            assert!(secret.len() >= 8, "secret {label} is distinctive");
            for (source, text) in &self.texts {
                assert!(
                    !text.contains(secret),
                    "[{name}] secret {label} appears in {source}"
                );
            }
        }
    }
}

/// Runs `kind` with `envs` (debug logs) until `ready` (readiness SERVING) or,
/// when `ready` is false, until HealthCheck reports the failure; records
/// HealthCheck, runs `exercise`, optionally sends an Initialize overriding
/// `backend` keys, then SIGTERMs it and records everything it printed.
async fn observe<F, Fut>(
    out: &mut Output,
    label: &str,
    kind: Kind,
    envs: &[(&str, &str)],
    ready: bool,
    initialize: &[(&str, &str)],
    exercise: F,
) where
    F: FnOnce(Plugin) -> Fut,
    Fut: std::future::Future<Output = Plugin>,
{
    let mut all = vec![("PRISM_LOG_LEVEL", "debug")];
    all.extend_from_slice(envs);
    let plugin = Plugin::spawn(kind, &all).await;
    plugin
        .wait_for_service("liveness", ServingStatus::Serving, WAIT)
        .await;
    if ready {
        plugin.wait_for(ServingStatus::Serving, WAIT).await;
    } else {
        // Let it try (and log) a few times: the initial retries back off
        // from 100 ms.
        let client = LifecycleInterfaceClient::new(plugin.channel.clone());
        let started = Instant::now();
        let failing = prism_faults::poll_until(WAIT, || {
            let mut client = client.clone();
            async move {
                started.elapsed() > Duration::from_millis(1500)
                    && client
                        .health_check(HealthCheckRequest {})
                        .await
                        .is_ok_and(|r| r.into_inner().status != 1)
            }
        })
        .await;
        assert!(failing, "{label}: health reports the failure");
    }
    let health = health_check(plugin.port).await;
    out.add(format!("{label}: HealthCheck message"), health.message);
    out.add(
        format!("{label}: HealthCheck details"),
        format!("{:?}", health.details),
    );
    let mut plugin = exercise(plugin).await;
    if !initialize.is_empty() {
        let fields = initialize.iter().map(|(k, v)| (*k, text(v))).collect();
        let reply = lifecycle::initialize(plugin.port, fields).await;
        eprintln!("[{label}] Initialize override: success {}", reply.success);
        out.add(format!("{label}: Initialize error"), reply.error);
        let health = health_check(plugin.port).await;
        out.add(
            format!("{label}: HealthCheck after Initialize"),
            format!("{} {:?}", health.message, health.details),
        );
    }
    plugin.process.sigterm().expect("SIGTERM");
    let status = plugin
        .process
        .wait_exit(WAIT)
        .await
        .expect("the plugin exits");
    eprintln!("[{label}] exit {status:?}");
    out.add(format!("{label}: stdout+stderr"), plugin.process.logs());
}

/// `--check-config` with `envs`: records its output.
/// [`observe`] without an `Initialize` and without exercising the plugin.
async fn observe_plain(
    out: &mut Output,
    label: &str,
    kind: Kind,
    envs: &[(&str, &str)],
    ready: bool,
) {
    observe(out, label, kind, envs, ready, &[], |p| async { p }).await;
}

async fn check_config(out: &mut Output, label: &str, kind: Kind, envs: &[(&str, &str)]) {
    let mut process = PluginProcess::spawn(binary(kind.binary_name()), &["--check-config"], envs)
        .await
        .expect("spawn --check-config");
    let status = process.wait_exit(WAIT).await.expect("--check-config exits");
    let logs = process.logs();
    eprintln!(
        "[{label}] --check-config exit {status:?}, {} bytes",
        logs.len()
    );
    assert!(logs.contains("backend"), "{label}: prints the config");
    out.add(format!("{label}: --check-config output"), logs);
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

async fn kv_round_trip(plugin: Plugin) -> Plugin {
    let mut kv = plugin.kv();
    kv.set(kv_set("secret-test", "value")).await.expect("Set");
    kv.get(kv_get("secret-test")).await.expect("Get");
    plugin
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_never_prints_or_reports_a_password() {
    const WRONG: &str = "Wr0ng-pg-S3cret-7e1f";
    const UNREACHABLE: &str = "Unreach-pg-S3cret-29ab";
    const INIT: &str = "Init-override-pg-S3cret-5c2d";
    let pg = Postgres::start().await.expect("postgres starts");
    let mut out = Output::default();
    let good = pg.url();
    observe(
        &mut out,
        "postgres good password",
        Kind::Postgres,
        &[("DATABASE_URL", good.as_str())],
        true,
        // Re-initialize with a URL whose password is wrong.
        &[(
            "database_url",
            &format!("postgres://prism:{INIT}@127.0.0.1:{}/prism", pg.port()),
        )],
        kv_round_trip,
    )
    .await;
    let wrong = format!("postgres://prism:{WRONG}@127.0.0.1:{}/prism", pg.port());
    let case = [("DATABASE_URL", wrong.as_str())];
    observe_plain(
        &mut out,
        "postgres wrong password",
        Kind::Postgres,
        &case,
        false,
    )
    .await;
    let unreachable = format!(
        "postgres://prism:{UNREACHABLE}@127.0.0.1:{}/prism",
        closed_port()
    );
    let case = [
        ("DATABASE_URL", unreachable.as_str()),
        ("PRISM_BACKEND__CONNECT_TIMEOUT", "1s"),
    ];
    observe_plain(
        &mut out,
        "postgres unreachable",
        Kind::Postgres,
        &case,
        false,
    )
    .await;
    let case = [("DATABASE_URL", good.as_str())];
    check_config(&mut out, "postgres", Kind::Postgres, &case).await;
    out.assert_free_of(
        "postgres",
        &[
            ("the PostgreSQL password", pg.password()),
            ("a wrong password", WRONG),
            ("the password of an unreachable server", UNREACHABLE),
            ("a password in an Initialize override", INIT),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_never_prints_or_reports_a_password() {
    const PASSWORD: &str = "R3dis-S3cret-a8c4";
    const WRONG: &str = "Wr0ng-redis-S3cret-61d0";
    const IN_URL: &str = "Url-redis-S3cret-0b9e";
    const UNREACHABLE: &str = "Unreach-redis-S3cret-4d2a";
    const INIT: &str = "Init-override-redis-S3cret-93ee";
    let redis = Redis::start_with_args(&["--requirepass", PASSWORD])
        .await
        .expect("redis starts");
    let addr = redis.addr();
    let mut out = Output::default();
    observe(
        &mut out,
        "redis good password",
        Kind::Redis,
        &[
            ("REDIS_ADDRESS", addr.as_str()),
            ("REDIS_PASSWORD", PASSWORD),
        ],
        true,
        &[("password", INIT)],
        kv_round_trip,
    )
    .await;
    let case = [("REDIS_ADDRESS", addr.as_str()), ("REDIS_PASSWORD", WRONG)];
    observe_plain(&mut out, "redis wrong password", Kind::Redis, &case, false).await;
    let url = format!("redis://:{IN_URL}@{addr}");
    let case = [("REDIS_ADDRESS", url.as_str())];
    observe_plain(
        &mut out,
        "redis wrong password in the URL",
        Kind::Redis,
        &case,
        false,
    )
    .await;
    let unreachable = format!("127.0.0.1:{}", closed_port());
    let case = [
        ("REDIS_ADDRESS", unreachable.as_str()),
        ("REDIS_PASSWORD", UNREACHABLE),
        ("PRISM_BACKEND__CONNECTION_TIMEOUT", "1s"),
    ];
    observe_plain(&mut out, "redis unreachable", Kind::Redis, &case, false).await;
    let case = [
        ("REDIS_ADDRESS", url.as_str()),
        ("REDIS_PASSWORD", PASSWORD),
    ];
    check_config(&mut out, "redis", Kind::Redis, &case).await;
    out.assert_free_of(
        "redis",
        &[
            ("the Redis password", PASSWORD),
            ("a wrong password", WRONG),
            ("a password inside the URL", IN_URL),
            ("the password of an unreachable server", UNREACHABLE),
            ("a password in an Initialize override", INIT),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_never_prints_or_reports_the_sasl_password() {
    const PASSWORD: &str = "Kafka-sasl-S3cret-3f7a";
    const UNREACHABLE: &str = "Unreach-kafka-S3cret-c5e8";
    let kafka = Kafka::start().await.expect("tansu starts");
    let brokers = kafka.bootstrap();
    let mut out = Output::default();
    // The broker is plaintext: with security_protocol plaintext the SASL
    // settings are configured but unused, and publishing works.
    observe(
        &mut out,
        "kafka plaintext with a SASL password",
        Kind::Kafka,
        &[
            ("KAFKA_BROKERS", brokers.as_str()),
            ("KAFKA_SASL_USERNAME", "prism"),
            ("KAFKA_SASL_PASSWORD", PASSWORD),
        ],
        true,
        &[],
        |plugin| async move {
            plugin
                .pubsub()
                .publish(publish_request("faults-secrets", "x", ""))
                .await
                .expect("Publish");
            plugin
        },
    )
    .await;
    // SASL against the plaintext broker: the handshake fails.
    let sasl = [
        ("KAFKA_BROKERS", brokers.as_str()),
        ("KAFKA_SASL_USERNAME", "prism"),
        ("KAFKA_SASL_PASSWORD", PASSWORD),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "sasl_plaintext"),
        ("PRISM_BACKEND__SASL__MECHANISM", "PLAIN"),
    ];
    let mut probe = PluginProcess::spawn(binary("prism-kafka"), &["--check-config"], &sasl)
        .await
        .expect("spawn");
    let sasl_supported = probe.wait_exit(WAIT).await.expect("exits").success();
    out.add("kafka sasl_plaintext --check-config", probe.logs());
    if sasl_supported {
        observe_plain(
            &mut out,
            "kafka sasl_plaintext against a plaintext broker",
            Kind::Kafka,
            &sasl,
            false,
        )
        .await;
    } else {
        eprintln!("[kafka] this build refuses sasl_plaintext; its refusal output was checked");
    }
    let unreachable = format!("127.0.0.1:{}", closed_port());
    let case = [
        ("KAFKA_BROKERS", unreachable.as_str()),
        ("KAFKA_SASL_USERNAME", "prism"),
        ("KAFKA_SASL_PASSWORD", UNREACHABLE),
    ];
    observe_plain(&mut out, "kafka unreachable", Kind::Kafka, &case, false).await;
    let case = [
        ("KAFKA_BROKERS", brokers.as_str()),
        ("KAFKA_SASL_PASSWORD", PASSWORD),
    ];
    check_config(&mut out, "kafka", Kind::Kafka, &case).await;
    out.assert_free_of(
        "kafka",
        &[
            ("the SASL password", PASSWORD),
            ("the SASL password for an unreachable broker", UNREACHABLE),
        ],
    );
}

/// The lines of key material in a PEM private key (each is distinctive;
/// a log that quoted any of them would leak part of the key).
fn key_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 8)
        .collect()
}

/// prism-kafka authenticating with SCRAM-SHA-512 over mTLS (client
/// certificate and key from files) through the test proxy: neither the
/// SCRAM password, nor a wrong one, nor any line of a client private key
/// (the accepted one, and one from another CA that the proxy refuses)
/// appears in its logs, health or `--check-config` output.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_never_prints_a_scram_password_or_a_client_private_key() {
    const USER: &str = "prism-scram-user";
    const PASSWORD: &str = "Scram-kafka-S3cret-8e2b";
    const WRONG: &str = "Wr0ng-scram-S3cret-4a7c";
    let ca = TestCa::new("faults-kafka-ca").expect("CA");
    let proxy_port = free_port();
    let kafka = Kafka::start_advertising(proxy_port)
        .await
        .expect("tansu starts");
    let options = ProxyOptions {
        tls: Some(ca.server(&["127.0.0.1"]).expect("server cert")),
        client_ca: Some(ca.ca_pem()),
        sasl_users: Some(vec![(USER.to_string(), PASSWORD.to_string())]),
        sasl_mechanism: SaslMechanism::ScramSha512,
    };
    let proxy = KafkaProxy::start(proxy_port, kafka.port(), options)
        .await
        .expect("proxy starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path.to_string_lossy().into_owned()
    };
    let client = ca.client("prism-kafka").expect("client cert");
    let foreign = TestCa::new("faults-other-ca")
        .and_then(|other| other.client("prism-kafka"))
        .expect("foreign client cert");
    let ca_file = write("ca.pem", &ca.ca_pem());
    let cert_file = write("client.pem", &client.cert_pem);
    let key_file = write("client-key.pem", &client.key_pem);
    let foreign_cert = write("foreign.pem", &foreign.cert_pem);
    let foreign_key = write("foreign-key.pem", &foreign.key_pem);
    let brokers = proxy.bootstrap();
    let envs = |password: &'static str, cert: &str, key: &str| {
        vec![
            ("KAFKA_BROKERS", brokers.clone()),
            ("PRISM_BACKEND__SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("PRISM_BACKEND__SASL__MECHANISM", "SCRAM-SHA-512".into()),
            ("KAFKA_SASL_USERNAME", USER.into()),
            ("KAFKA_SASL_PASSWORD", password.into()),
            ("PRISM_BACKEND__TLS__CA_FILE", ca_file.clone()),
            ("PRISM_BACKEND__TLS__CERT_FILE", cert.to_string()),
            ("PRISM_BACKEND__TLS__KEY_FILE", key.to_string()),
        ]
    };
    let good = envs(PASSWORD, &cert_file, &key_file);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut out = Output::default();
    observe(
        &mut out,
        "kafka scram over mtls",
        Kind::Kafka,
        &good,
        true,
        &[],
        |plugin| async move {
            plugin
                .pubsub()
                .publish(publish_request("faults-scram", "x", ""))
                .await
                .expect("Publish");
            plugin
        },
    )
    .await;
    assert!(proxy.authenticated().iter().any(|u| u == USER));
    assert!(proxy.client_certificates().contains(&client.cert_der()));
    let wrong = envs(WRONG, &cert_file, &key_file);
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let label = "kafka wrong scram password";
    observe_plain(&mut out, label, Kind::Kafka, &wrong, false).await;
    assert!(proxy.rejected().iter().any(|u| u == USER));
    let refused = envs(PASSWORD, &foreign_cert, &foreign_key);
    let refused: Vec<(&str, &str)> = refused.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let label = "kafka client certificate from another CA";
    observe_plain(&mut out, label, Kind::Kafka, &refused, false).await;
    assert!(proxy.failed_handshakes() > 0);
    check_config(&mut out, "kafka scram over mtls", Kind::Kafka, &good).await;
    let mut secrets = vec![
        ("the SCRAM password", PASSWORD),
        ("a wrong SCRAM password", WRONG),
    ];
    for line in key_lines(&client.key_pem) {
        secrets.push(("a line of the client private key", line));
    }
    for line in key_lines(&foreign.key_pem) {
        secrets.push(("a line of the refused client's private key", line));
    }
    out.assert_free_of("kafka scram over mtls", &secrets);
}

/// prism-postgres on Vault credentials rotated every ~4 s: neither the Vault
/// token nor any minted password (learned from the recorded Vault traffic)
/// nor the admin password appears, through startup, two rotations, and a
/// `--check-config` with the token in the environment.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_on_vault_never_prints_the_token_or_a_minted_password_across_rotations() {
    let (pg, vault) = tokio::join!(Postgres::start(), Vault::start());
    let (pg, vault) = (pg.expect("postgres starts"), vault.expect("vault starts"));
    vault::setup_postgres_role(&pg, &vault, "6s", "6s").await;
    let tee = Tee::start(vault.port()).await;
    let url = format!("postgres://127.0.0.1:{}/{}", pg.port(), pg.database());
    let tee_addr = tee.addr();
    let envs = [
        ("DATABASE_URL", url.as_str()),
        ("VAULT_ADDR", tee_addr.as_str()),
        ("VAULT_TOKEN", vault.root_token()),
        ("PRISM_VAULT__SECRET__ENGINE", "database"),
        ("PRISM_VAULT__SECRET__ROLE", "prism-postgres"),
    ];
    let mut out = Output::default();
    observe(
        &mut out,
        "postgres on vault",
        Kind::Postgres,
        &envs,
        true,
        &[],
        |plugin| async move {
            let swapped = prism_faults::poll_until(WAIT, || async {
                plugin
                    .health_details()
                    .await
                    .get("vault_pool_swaps")
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|n| n >= 2)
            })
            .await;
            assert!(swapped, "two rotations");
            kv_round_trip(plugin).await
        },
    )
    .await;
    check_config(&mut out, "postgres on vault", Kind::Postgres, &envs).await;
    let minted = tee.json_strings("password");
    assert!(
        minted.len() >= 3,
        "Vault minted 3 passwords: {}",
        minted.len()
    );
    let mut secrets = vec![
        ("the Vault token", vault.root_token()),
        ("the admin password", pg.password()),
    ];
    let labels: Vec<String> = (0..minted.len())
        .map(|i| format!("minted password #{i}"))
        .collect();
    for (label, password) in labels.iter().zip(&minted) {
        secrets.push((label.as_str(), password.as_str()));
    }
    out.assert_free_of("postgres on vault", &secrets);
}

/// prism-postgres logging in by client certificate (`backend.tls` files,
/// `hostssl … cert`): neither the accepted key nor the key of an expired
/// certificate the server refuses appears in any output — debug logs,
/// HealthCheck, `--check-config` — nor does a key a Vault PKI engine issued
/// across re-issues.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_never_prints_a_client_certificate_key_from_a_file_or_vault_pki() {
    use prism_testkit::{ClientOptions, PgTls, TestCa};
    let (vault, ca) = (
        Vault::start().await.expect("vault starts"),
        TestCa::new("faults CA").unwrap(),
    );
    let vault_ca = vault
        .setup_pki("pki", "prism-postgres", "prism_cert", "6s")
        .await
        .expect("PKI engine");
    let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
    // Client certificates from the test CA or from Vault's PKI are trusted.
    let client_ca = format!("{}\n{vault_ca}", ca.ca_pem());
    let pg = Postgres::start_with_tls(PgTls {
        server: &server,
        client_ca: Some(&client_ca),
        crl: None,
    })
    .await
    .expect("postgres starts");
    pg.add_cert_user("prism_cert").await.expect("cert user");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good = ca.client("prism_cert").unwrap();
    let expired = ca
        .client_with(
            "prism_cert",
            ClientOptions {
                expired: true,
                ..ClientOptions::default()
            },
        )
        .unwrap();
    let ca_file = file("ca.pem", &ca.ca_pem());
    // Files: the URL names the user; Vault PKI: the certificate's CN is the user.
    let url = format!(
        "postgres://prism_cert@localhost:{}/{}",
        pg.port(),
        pg.database()
    );
    let pki_url = format!("postgres://localhost:{}/{}", pg.port(), pg.database());
    let mut out = Output::default();
    for (label, cert, ready) in [("good", &good, true), ("expired", &expired, false)] {
        let (cert_file, key_file) = (
            file(&format!("{label}.pem"), &cert.cert_pem),
            file(&format!("{label}.key"), &cert.key_pem),
        );
        let envs = [
            ("DATABASE_URL", url.as_str()),
            ("PRISM_BACKEND__TLS__CA_FILE", ca_file.as_str()),
            ("PRISM_BACKEND__TLS__CERT_FILE", cert_file.as_str()),
            ("PRISM_BACKEND__TLS__KEY_FILE", key_file.as_str()),
        ];
        let name = format!("postgres {label} client certificate");
        if ready {
            observe(
                &mut out,
                &name,
                Kind::Postgres,
                &envs,
                true,
                &[],
                kv_round_trip,
            )
            .await;
            check_config(&mut out, &name, Kind::Postgres, &envs).await;
        } else {
            observe_plain(&mut out, &name, Kind::Postgres, &envs, false).await;
        }
    }

    let tee = Tee::start(vault.port()).await;
    let tee_addr = tee.addr();
    let envs = [
        ("DATABASE_URL", pki_url.as_str()),
        ("PRISM_BACKEND__TLS__CA_FILE", ca_file.as_str()),
        ("VAULT_ADDR", tee_addr.as_str()),
        ("VAULT_TOKEN", vault.root_token()),
        ("PRISM_VAULT__SECRET__ENGINE", "pki"),
        ("PRISM_VAULT__SECRET__ROLE", "prism-postgres"),
        ("PRISM_VAULT__SECRET__COMMON_NAME", "prism_cert"),
    ];
    observe(
        &mut out,
        "postgres on Vault PKI",
        Kind::Postgres,
        &envs,
        true,
        &[],
        |plugin| async move {
            let swapped = prism_faults::poll_until(WAIT, || async {
                plugin
                    .health_details()
                    .await
                    .get("vault_pool_swaps")
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|n| n >= 2)
            })
            .await;
            assert!(swapped, "two re-issues");
            kv_round_trip(plugin).await
        },
    )
    .await;
    let issued = tee.json_strings("private_key");
    assert!(issued.len() >= 3, "Vault issued 3 keys: {}", issued.len());
    let mut lines: Vec<(String, String)> = Vec::new();
    for (name, pem) in [
        ("the file key", &good.key_pem),
        ("the expired certificate's key", &expired.key_pem),
    ] {
        lines.extend(
            key_lines(pem)
                .into_iter()
                .map(|l| (name.to_string(), l.to_string())),
        );
    }
    for (i, pem) in issued.iter().enumerate() {
        lines.extend(
            key_lines(pem)
                .into_iter()
                .map(|l| (format!("issued key #{i}"), l.to_string())),
        );
    }
    let secrets: Vec<(&str, &str)> = lines
        .iter()
        .map(|(n, l)| (n.as_str(), l.as_str()))
        .collect();
    out.assert_free_of("postgres client certificates", &secrets);
}
