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

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use prism_faults::{Kind, Plugin, binary, kv_get, kv_set, publish_request};
use prism_plugin_core::proto::lifecycle::HealthCheckRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_testkit::Tee;
use prism_testkit::lifecycle::{self, health_check, text};
use prism_testkit::{
    Kafka, KafkaProxy, PluginProcess, Postgres, ProxyOptions, Redis, SaslMechanism, ServingStatus,
    TestCa, Vault, borrowed_env, free_port,
};

const WAIT: Duration = Duration::from_secs(30);

/// One test's plugin runs: the kind, a name for messages, everything the
/// plugin printed or answered, labelled by where it came from, and the
/// secrets (`(label, value)`) none of it may contain.
struct Output {
    name: &'static str,
    kind: Kind,
    texts: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
}

impl Output {
    fn new(name: &'static str, kind: Kind) -> Output {
        Output {
            name,
            kind,
            texts: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// A new secret labelled `label`, distinctive (derived from the test's
    /// name and the label) and URL-safe, that the output must never contain.
    fn secret(&mut self, label: &str) -> String {
        let mut hash = DefaultHasher::new();
        (self.name, label).hash(&mut hash);
        let value = format!("S3cret-{:016x}", hash.finish());
        self.known([(label, &value)]);
        value
    }

    /// Secrets from elsewhere (`(label, value)`: a server's password, a
    /// private key's lines, minted credentials) the output must not contain.
    fn known<L: Into<String>, S: Into<String>>(
        &mut self,
        secrets: impl IntoIterator<Item = (L, S)>,
    ) {
        let secrets = secrets.into_iter().map(|(l, s)| (l.into(), s.into()));
        self.secrets.extend(secrets);
    }

    fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        self.texts.push((source.into(), text.into()));
    }

    /// Runs the plugin with `envs` until readiness SERVING; records
    /// HealthCheck, runs `exercise`, optionally sends an Initialize
    /// overriding `backend` keys, then stops it and records its output.
    async fn serving<F, Fut>(
        &mut self,
        label: &str,
        envs: &[(&str, &str)],
        initialize: &[(&str, &str)],
        exercise: F,
    ) where
        F: FnOnce(Plugin) -> Fut,
        Fut: std::future::Future<Output = Plugin>,
    {
        let label = format!("{} {label}", self.name);
        let plugin = self.start(envs).await;
        plugin.wait_for(ServingStatus::Serving, WAIT).await;
        self.record_health(&label, &plugin).await;
        let plugin = exercise(plugin).await;
        if !initialize.is_empty() {
            let fields = initialize.iter().map(|(k, v)| (*k, text(v))).collect();
            let reply = lifecycle::initialize(plugin.port, fields).await;
            eprintln!("[{label}] Initialize override: success {}", reply.success);
            self.add(format!("{label}: Initialize error"), reply.error);
            self.record_health(&format!("{label} after Initialize"), &plugin)
                .await;
        }
        self.stop(&label, plugin).await;
    }

    /// Runs the plugin with `envs` until HealthCheck reports the failure
    /// (after a few tries, each logged), records HealthCheck, then stops it
    /// and records its output.
    async fn failing(&mut self, label: &str, envs: &[(&str, &str)]) {
        let label = format!("{} {label}", self.name);
        let plugin = self.start(envs).await;
        // The initial retries back off from 100 ms.
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
        self.record_health(&label, &plugin).await;
        self.stop(&label, plugin).await;
    }

    /// `--check-config` with `envs`: records its output.
    async fn check_config(&mut self, envs: &[(&str, &str)]) {
        let binary = binary(self.kind.binary_name());
        let mut process = PluginProcess::spawn(binary, &["--check-config"], envs)
            .await
            .expect("spawn --check-config");
        let status = process.wait_exit(WAIT).await.expect("--check-config exits");
        let (name, logs) = (self.name, process.logs());
        eprintln!(
            "[{name}] --check-config exit {status:?}, {} bytes",
            logs.len()
        );
        assert!(logs.contains("backend"), "{name}: prints the config");
        self.add(format!("{name}: --check-config output"), logs);
    }

    /// The plugin with `envs` at `debug` level, its liveness SERVING.
    async fn start(&self, envs: &[(&str, &str)]) -> Plugin {
        let mut all = vec![("PRISM_LOG_LEVEL", "debug")];
        all.extend_from_slice(envs);
        let plugin = Plugin::spawn(self.kind, &all).await;
        plugin
            .wait_for_service("liveness", ServingStatus::Serving, WAIT)
            .await;
        plugin
    }

    /// Records the HealthCheck message and details.
    async fn record_health(&mut self, label: &str, plugin: &Plugin) {
        let health = health_check(plugin.port).await;
        self.add(format!("{label}: HealthCheck message"), health.message);
        let details = format!("{:?}", health.details);
        self.add(format!("{label}: HealthCheck details"), details);
    }

    /// SIGTERMs the plugin and records everything it printed.
    async fn stop(&mut self, label: &str, mut plugin: Plugin) {
        plugin.process.sigterm().expect("SIGTERM");
        let exit = plugin.process.wait_exit(WAIT).await;
        eprintln!("[{label}] exit {:?}", exit.expect("the plugin exits"));
        self.add(format!("{label}: stdout+stderr"), plugin.process.logs());
    }

    /// Panics naming the output and the secret's label if any secret occurs.
    fn assert_no_secret(&self) {
        let (name, secrets) = (self.name, &self.secrets);
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

async fn publish_once(plugin: Plugin) -> Plugin {
    let request = publish_request("faults-secrets", "x", "");
    plugin.pubsub().publish(request).await.expect("Publish");
    plugin
}

/// Waits until the plugin has swapped its pool twice (two Vault rotations
/// or re-issues), then does a KV round trip.
async fn two_swaps_then_kv(plugin: Plugin) -> Plugin {
    let swapped = prism_faults::poll_until(WAIT, || async {
        plugin
            .health_details()
            .await
            .get("vault_pool_swaps")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n >= 2)
    })
    .await;
    assert!(swapped, "two pool swaps");
    kv_round_trip(plugin).await
}

/// `(label, line)` for each line of key material in a PEM private key.
fn key_lines(label: &str, pem: &str) -> Vec<(String, String)> {
    let lines = prism_testkit::key_lines(pem).into_iter();
    lines.map(|line| (label.into(), line.into())).collect()
}

/// `(label #i, value)` for each of `values`.
fn numbered(label: &str, values: &[String]) -> Vec<(String, String)> {
    let each = values.iter().enumerate();
    each.map(|(i, v)| (format!("{label} #{i}"), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_never_prints_or_reports_a_password() {
    let pg = Postgres::start().await.expect("postgres starts");
    let url =
        |password: &str, port: u16| format!("postgres://prism:{password}@127.0.0.1:{port}/prism");
    let mut out = Output::new("postgres", Kind::Postgres);
    out.known([("the PostgreSQL password", pg.password())]);
    let good = pg.url();
    let good = [("DATABASE_URL", good.as_str())];
    // Re-initialized with a URL whose password is wrong.
    let init = out.secret("a password in an Initialize override");
    let init = [("database_url", url(&init, pg.port()))];
    out.serving("good password", &good, &borrowed_env(&init), kv_round_trip)
        .await;
    let wrong = url(&out.secret("a wrong password"), pg.port());
    out.failing("wrong password", &[("DATABASE_URL", &wrong)])
        .await;
    let unreachable = out.secret("the password of an unreachable server");
    let unreachable = url(&unreachable, closed_port());
    let case = [
        ("DATABASE_URL", unreachable.as_str()),
        ("PRISM_BACKEND__CONNECT_TIMEOUT", "1s"),
    ];
    out.failing("unreachable", &case).await;
    out.check_config(&good).await;
    out.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_never_prints_or_reports_a_password() {
    let mut out = Output::new("redis", Kind::Redis);
    let password = out.secret("the Redis password");
    let redis = Redis::start_with_args(&["--requirepass", &password])
        .await
        .expect("redis starts");
    let addr = redis.addr();
    let good = [
        ("REDIS_ADDRESS", addr.as_str()),
        ("REDIS_PASSWORD", &password),
    ];
    let init = [(
        "password",
        out.secret("a password in an Initialize override"),
    )];
    out.serving("good password", &good, &borrowed_env(&init), kv_round_trip)
        .await;
    let wrong = out.secret("a wrong password");
    let case = [("REDIS_ADDRESS", addr.as_str()), ("REDIS_PASSWORD", &wrong)];
    out.failing("wrong password", &case).await;
    let url = format!(
        "redis://:{}@{addr}",
        out.secret("a password inside the URL")
    );
    out.failing("wrong password in the URL", &[("REDIS_ADDRESS", &url)])
        .await;
    let unreachable = format!("127.0.0.1:{}", closed_port());
    let unreachable_password = out.secret("the password of an unreachable server");
    let case = [
        ("REDIS_ADDRESS", unreachable.as_str()),
        ("REDIS_PASSWORD", &unreachable_password),
        ("PRISM_BACKEND__CONNECTION_TIMEOUT", "1s"),
    ];
    out.failing("unreachable", &case).await;
    out.check_config(&[("REDIS_ADDRESS", &url), ("REDIS_PASSWORD", &password)])
        .await;
    out.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_never_prints_or_reports_the_sasl_password() {
    let kafka = Kafka::start().await.expect("tansu starts");
    let brokers = kafka.bootstrap();
    let mut out = Output::new("kafka", Kind::Kafka);
    let password = out.secret("the SASL password");
    let sasl = |brokers: &str, password: &str| {
        vec![
            ("KAFKA_BROKERS", brokers.to_string()),
            ("KAFKA_SASL_USERNAME", "prism".to_string()),
            ("KAFKA_SASL_PASSWORD", password.to_string()),
        ]
    };
    // The broker is plaintext: with security_protocol plaintext the SASL
    // settings are configured but unused, and publishing works.
    let plain = sasl(&brokers, &password);
    let label = "plaintext with a SASL password";
    out.serving(label, &borrowed_env(&plain), &[], publish_once)
        .await;
    // SASL against the plaintext broker: the handshake fails.
    let mut handshake = borrowed_env(&plain);
    handshake.push(("PRISM_BACKEND__SECURITY_PROTOCOL", "sasl_plaintext"));
    handshake.push(("PRISM_BACKEND__SASL__MECHANISM", "PLAIN"));
    let mut probe = PluginProcess::spawn(binary("prism-kafka"), &["--check-config"], &handshake)
        .await
        .expect("spawn");
    let sasl_supported = probe.wait_exit(WAIT).await.expect("exits").success();
    out.add("kafka sasl_plaintext --check-config", probe.logs());
    if sasl_supported {
        let label = "sasl_plaintext against a plaintext broker";
        out.failing(label, &handshake).await;
    } else {
        eprintln!("[kafka] this build refuses sasl_plaintext; its refusal output was checked");
    }
    let unreachable = out.secret("the SASL password for an unreachable broker");
    let unreachable = sasl(&format!("127.0.0.1:{}", closed_port()), &unreachable);
    out.failing("unreachable", &borrowed_env(&unreachable))
        .await;
    out.check_config(&[
        ("KAFKA_BROKERS", &brokers),
        ("KAFKA_SASL_PASSWORD", &password),
    ])
    .await;
    out.assert_no_secret();
}

/// prism-kafka authenticating with SCRAM-SHA-512 over mTLS (client
/// certificate and key from files) through the test proxy: neither the
/// SCRAM password, nor a wrong one, nor any line of a client private key
/// (the accepted one, and one from another CA that the proxy refuses)
/// appears in its logs, health or `--check-config` output.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_never_prints_a_scram_password_or_a_client_private_key() {
    const USER: &str = "prism-scram-user";
    let mut out = Output::new("kafka scram over mtls", Kind::Kafka);
    let password = out.secret("the SCRAM password");
    let ca = TestCa::new("faults-kafka-ca").expect("CA");
    let proxy_port = free_port();
    let kafka = Kafka::start_advertising(proxy_port)
        .await
        .expect("tansu starts");
    let options = ProxyOptions {
        tls: Some(ca.server(&["127.0.0.1"]).expect("server cert")),
        client_ca: Some(ca.ca_pem()),
        sasl_users: Some(vec![(USER.to_string(), password.clone())]),
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
    let envs = |password: &str, cert: &str, key: &str| {
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
    let good = envs(&password, &cert_file, &key_file);
    let good = borrowed_env(&good);
    out.serving("as configured", &good, &[], publish_once).await;
    assert!(proxy.authenticated().iter().any(|u| u == USER));
    assert!(proxy.client_certificates().contains(&client.cert_der()));
    let wrong = envs(&out.secret("a wrong SCRAM password"), &cert_file, &key_file);
    out.failing("wrong password", &borrowed_env(&wrong)).await;
    assert!(proxy.rejected().iter().any(|u| u == USER));
    let refused = envs(&password, &foreign_cert, &foreign_key);
    let label = "client certificate from another CA";
    out.failing(label, &borrowed_env(&refused)).await;
    assert!(proxy.failed_handshakes() > 0);
    out.check_config(&good).await;
    out.known(key_lines(
        "a line of the client private key",
        &client.key_pem,
    ));
    let refused_key = "a line of the refused client's private key";
    out.known(key_lines(refused_key, &foreign.key_pem));
    out.assert_no_secret();
}

/// prism-postgres on Vault credentials rotated every ~4 s: neither the Vault
/// token nor any minted password (learned from the recorded Vault traffic)
/// nor the admin password appears, through startup, two rotations, and a
/// `--check-config` with the token in the environment.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_on_vault_never_prints_the_token_or_a_minted_password_across_rotations() {
    let (pg, vault, _) = Vault::start_with_postgres("6s", "6s", &[])
        .await
        .unwrap_or_else(|e| panic!("postgres and vault: {e}"));
    let tee = Tee::start(vault.port()).await;
    let envs = vault.postgres_plugin_env(&pg, &tee.addr());
    let envs = borrowed_env(&envs);
    let mut out = Output::new("postgres on vault", Kind::Postgres);
    out.serving("across rotations", &envs, &[], two_swaps_then_kv)
        .await;
    out.check_config(&envs).await;
    let minted = tee.json_strings("password");
    assert!(
        minted.len() >= 3,
        "Vault minted 3 passwords: {}",
        minted.len()
    );
    out.known(numbered("minted password", &minted));
    out.known([
        ("the Vault token", vault.root_token()),
        ("the admin password", pg.password()),
    ]);
    out.assert_no_secret();
}

/// prism-postgres logging in by client certificate (`backend.tls` files,
/// `hostssl … cert`): neither the accepted key nor the key of an expired
/// certificate the server refuses appears in any output — debug logs,
/// HealthCheck, `--check-config` — nor does a key a Vault PKI engine issued
/// across re-issues.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_never_prints_a_client_certificate_key_from_a_file_or_vault_pki() {
    use prism_testkit::{ClientOptions, IssuedCert, PgTls, TestCa};
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
    let mut out = Output::new("postgres client certificates", Kind::Postgres);
    let cert_env = |label: &str, cert: &IssuedCert| {
        vec![
            ("DATABASE_URL", url.clone()),
            ("PRISM_BACKEND__TLS__CA_FILE", ca_file.clone()),
            (
                "PRISM_BACKEND__TLS__CERT_FILE",
                file(&format!("{label}.pem"), &cert.cert_pem),
            ),
            (
                "PRISM_BACKEND__TLS__KEY_FILE",
                file(&format!("{label}.key"), &cert.key_pem),
            ),
        ]
    };
    let good_env = cert_env("good", &good);
    let label = "good client certificate";
    out.serving(label, &borrowed_env(&good_env), &[], kv_round_trip)
        .await;
    out.check_config(&borrowed_env(&good_env)).await;
    let expired_env = cert_env("expired", &expired);
    out.failing("expired client certificate", &borrowed_env(&expired_env))
        .await;

    let tee = Tee::start(vault.port()).await;
    let mut envs = vault.pki_plugin_env(&tee.addr(), "prism-postgres", "prism_cert");
    envs.extend([
        ("DATABASE_URL", pki_url),
        ("PRISM_BACKEND__TLS__CA_FILE", ca_file),
    ]);
    out.serving("on Vault PKI", &borrowed_env(&envs), &[], two_swaps_then_kv)
        .await;
    let issued = tee.json_strings("private_key");
    assert!(issued.len() >= 3, "Vault issued 3 keys: {}", issued.len());
    out.known(key_lines("the file key", &good.key_pem));
    out.known(key_lines("the expired certificate's key", &expired.key_pem));
    for (label, pem) in numbered("issued key", &issued) {
        out.known(key_lines(&label, &pem));
    }
    out.assert_no_secret();
}
