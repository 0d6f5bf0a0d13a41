//! tansu behind the test [`KafkaProxy`] in one security mode (TLS, mTLS,
//! SASL with a mechanism, or a client CA of the test's choosing), and the
//! plugin environment that reaches it: every security test starts one
//! [`Secured`], adds what it varies (a client certificate, Vault, a wrong
//! password) and spawns the plugin with [`Secured::spawn`].

use std::path::PathBuf;

use prism_testkit::{
    IssuedCert, Kafka, KafkaProxy, PluginProcess, ProxyOptions, SaslMechanism, TestCa, Vault,
    free_port,
};

/// tansu behind a proxy, the CA that signed the proxy's certificate, and
/// the environment a plugin needs to reach it.
pub struct Secured {
    pub kafka: Kafka,
    pub proxy: KafkaProxy,
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM) as a file, for `backend.tls.ca_file`.
    pub ca_file: PathBuf,
    /// The plugin's environment so far (see [`Secured::plugin_env`]).
    env: Vec<(&'static str, String)>,
}

impl Secured {
    /// A TLS-terminating proxy, no client certificate, no SASL.
    pub async fn tls() -> Self {
        Self::start(true, None, SaslMechanism::Plain, |_| None).await
    }

    /// TLS with a required client certificate signed by [`Secured::ca`].
    pub async fn mtls() -> Self {
        Self::start(true, None, SaslMechanism::Plain, |ca| Some(ca.ca_pem())).await
    }

    /// TLS and a required client certificate signed by `client_ca` (PEM;
    /// e.g. the root of Vault's PKI engine) instead of [`Secured::ca`].
    pub async fn trusting(client_ca: String) -> Self {
        Self::start(true, None, SaslMechanism::Plain, |_| Some(client_ca)).await
    }

    /// SASL with `mechanism` knowing `users` (user, password), over TLS when
    /// `tls`.
    pub async fn sasl(tls: bool, mechanism: SaslMechanism, users: &[(&str, &str)]) -> Self {
        Self::start(tls, Some(users), mechanism, |_| None).await
    }

    async fn start(
        tls: bool,
        users: Option<&[(&str, &str)]>,
        mechanism: SaslMechanism,
        client_ca: impl FnOnce(&TestCa) -> Option<String>,
    ) -> Self {
        let ca = TestCa::new("prism-kafka-test-ca").expect("CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.ca_pem()).expect("write CA");
        let proxy_port = free_port();
        let kafka = Kafka::start_advertising(proxy_port)
            .await
            .expect("tansu starts");
        let options = ProxyOptions {
            tls: tls.then(|| ca.server(&["127.0.0.1", "localhost"]).expect("server cert")),
            client_ca: client_ca(&ca),
            sasl_users: users.map(|users| {
                users
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect()
            }),
            sasl_mechanism: mechanism,
        };
        let proxy = KafkaProxy::start(proxy_port, kafka.port(), options)
            .await
            .expect("proxy starts");
        let protocol = match (tls, users.is_some()) {
            (true, true) => "sasl_ssl",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (false, false) => "plaintext",
        };
        let mut env = vec![
            ("KAFKA_BROKERS", proxy.bootstrap()),
            ("PRISM_BACKEND__SECURITY_PROTOCOL", protocol.to_string()),
        ];
        if tls {
            let ca_file = ca_file.to_string_lossy().into_owned();
            env.push(("PRISM_BACKEND__TLS__CA_FILE", ca_file));
        }
        Secured {
            kafka,
            proxy,
            ca,
            dir,
            ca_file,
            env,
        }
    }

    /// The security protocol the plugin uses for this proxy.
    pub fn protocol(&self) -> &str {
        self.get("PRISM_BACKEND__SECURITY_PROTOCOL")
            .expect("always set")
    }

    fn get(&self, key: &str) -> Option<&str> {
        let found = self.env.iter().find(|(k, _)| *k == key);
        found.map(|(_, v)| v.as_str())
    }

    /// Sets `key` in the plugin's environment (replacing an earlier value).
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) -> &mut Self {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Writes a PEM file into the temp dir and returns its path.
    pub fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    }

    /// The plugin presents `cert` (written to files) as its client certificate.
    pub fn present(&mut self, cert: &IssuedCert) -> &mut Self {
        let cert_file = self.write("client.pem", &cert.cert_pem);
        let key_file = self.write("client-key.pem", &cert.key_pem);
        self.set("PRISM_BACKEND__TLS__CERT_FILE", path(cert_file));
        self.set("PRISM_BACKEND__TLS__KEY_FILE", path(key_file))
    }

    /// The plugin authenticates with `mechanism` as `user` with `password`.
    pub fn login(&mut self, mechanism: SaslMechanism, user: &str, password: &str) -> &mut Self {
        self.set("PRISM_BACKEND__SASL__MECHANISM", mechanism.name());
        self.set("KAFKA_SASL_USERNAME", user);
        self.set("KAFKA_SASL_PASSWORD", password)
    }

    /// The plugin reads its credentials from `vault`'s KV v2 secret at
    /// `path` (below `secret/`), polled every 300 ms.
    pub fn credentials_in_vault_kv(&mut self, vault: &Vault, path: &str) -> &mut Self {
        self.set("VAULT_ADDR", vault.addr());
        self.set("VAULT_TOKEN", vault.root_token());
        self.set("PRISM_VAULT__SECRET__ENGINE", "kv2");
        self.set("PRISM_VAULT__SECRET__PATH", path);
        self.set("PRISM_VAULT__SECRET__POLL_INTERVAL", "300ms")
    }

    /// The plugin's environment: the proxy's address, the security protocol
    /// of its mode, the CA file when it speaks TLS, and whatever was added.
    pub fn plugin_env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// Spawns the plugin with [`Secured::plugin_env`] and `extra` (which
    /// wins over it); returns it and its port.
    pub async fn spawn(&self, extra: &[(&str, &str)]) -> (PluginProcess, u16) {
        let mut env = self.plugin_env();
        env.retain(|(k, _)| extra.iter().all(|(e, _)| e != k));
        env.extend_from_slice(extra);
        super::spawn(&env).await
    }

    /// Spawns the plugin (debug logs): its TLS handshake with the proxy
    /// fails with `reason` on every attempt, which is logged and reported
    /// while every status that follows the backend is off and liveness on;
    /// the proxy accepted no client certificate. Returns the logs after a
    /// clean stop.
    pub async fn handshake_refused(&self, reason: &str) -> String {
        let (mut plugin, port) = self.spawn(&[("PRISM_LOG_LEVEL", "debug")]).await;
        super::refused_with(&mut plugin, port, reason, &["readiness", "", "kafka"]).await;
        assert!(self.proxy.client_certificates().is_empty());
        assert!(self.proxy.failed_handshakes() > 0);
        super::stop(&mut plugin).await
    }
}

fn path(path: PathBuf) -> String {
    path.to_string_lossy().into_owned()
}
