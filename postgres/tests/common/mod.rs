//! Shared helpers for the `prism-postgres` integration tests: a real
//! PostgreSQL plus the plugin binary (a `prism_testkit::kv::KvPlugin` with
//! clients for the four KeyValue services), request builders and polling.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

pub(crate) use prism_testkit::kv::{
    KvPlugin as Plugin, code, get, poll_until, read, req, scan, set, timed,
};
use prism_testkit::{PgTls, Postgres, ServingStatus, TestCa, health_status};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_prism-postgres");
/// First SERVING after spawn (process start, first connect, table creation).
pub(crate) const STARTUP: Duration = Duration::from_secs(20);

/// Spawns the plugin against `pg` with extra `envs`, waits for SERVING.
pub(crate) async fn start_plugin(pg: &Postgres, envs: &[(&str, &str)]) -> Plugin {
    let plugin = spawn_plugin(pg, envs).await;
    plugin.wait("", STARTUP).await;
    plugin
}

/// Spawns the plugin against `pg` (`envs` win) without waiting.
pub(crate) async fn spawn_plugin(pg: &Postgres, envs: &[(&str, &str)]) -> Plugin {
    let url = pg.url();
    let mut all = vec![("DATABASE_URL", url.as_str())];
    all.extend_from_slice(envs);
    Plugin::spawn(BIN, &all).await
}

/// A real PostgreSQL and one plugin on it.
pub(crate) async fn pg_and_plugin(envs: &[(&str, &str)]) -> (Postgres, Plugin) {
    let pg = Postgres::start().await.expect("postgres starts");
    let plugin = start_plugin(&pg, envs).await;
    (pg, plugin)
}

/// PostgreSQL with TLS (a certificate from `server_ca` for localhost and
/// 127.0.0.1) where `user` logs in by a client certificate only, one signed
/// by `client_ca` (PEM) and not revoked by `crl`.
pub(crate) async fn cert_login_postgres(
    server_ca: &TestCa,
    client_ca: &str,
    crl: Option<&str>,
    user: &str,
) -> Postgres {
    let server = server_ca
        .server(&["localhost", "127.0.0.1"])
        .expect("server cert");
    let pg = Postgres::start_with_tls(PgTls {
        server: &server,
        client_ca: Some(client_ca),
        crl,
    })
    .await
    .expect("postgres with client certificates");
    pg.add_cert_user(user).await.expect("certificate user");
    pg
}

/// `columns` (an SQL text expression over `a`, the session's
/// `pg_stat_activity` row, and `s`, its `pg_stat_ssl` row) of each of the
/// plugin's TLS sessions (by application_name).
pub(crate) async fn plugin_tls_sessions(pg: &Postgres, columns: &str) -> Vec<String> {
    let out = pg
        .psql(&format!(
            "SELECT string_agg({columns}, ',') \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'prism-postgres' AND s.ssl"
        ))
        .await
        .expect("psql");
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits until `plugin` logged a refused connection with `reason`, then
/// checks it stays alive and honest: liveness SERVING, readiness
/// NOT_SERVING, calls UNAVAILABLE, no panic, and none of `secrets` in its
/// output.
pub(crate) async fn assert_refused(plugin: &mut Plugin, reason: &str, secrets: &[&str]) {
    plugin
        .process
        .wait_for_log(reason, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.process.logs()));
    plugin.assert_running();
    for (service, want) in [
        ("liveness", ServingStatus::Serving),
        ("readiness", ServingStatus::NotServing),
    ] {
        let status = health_status(&plugin.channel, service).await;
        assert_eq!(status.expect("health"), want, "{service}");
    }
    assert_eq!(
        code(plugin.basic().get(req(None, get("k"))).await),
        tonic::Code::Unavailable
    );
    let logs = plugin.process.logs();
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret logged:\n{logs}");
    }
    assert!(!logs.contains("panicked"), "{logs}");
    let line = logs.lines().find(|l| l.contains(reason)).unwrap_or("");
    eprintln!("[refused] {line}");
}

/// Deterministic pseudo-random numbers (xorshift64*), so failures reproduce.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random non-NUL character of 1-4 UTF-8 bytes, evenly over the widths.
    pub(crate) fn char(&mut self) -> char {
        loop {
            let code = match self.next() % 4 {
                0 => 1 + self.next() % 0x7F,
                1 => 0x80 + self.next() % (0x800 - 0x80),
                2 => 0x800 + self.next() % (0x1_0000 - 0x800),
                _ => 0x1_0000 + self.next() % (0x11_0000 - 0x1_0000),
            };
            if let Some(c) = u32::try_from(code).ok().and_then(char::from_u32) {
                return c;
            }
        }
    }

    /// Random (incompressible) valid UTF-8 of exactly `bytes` bytes.
    pub(crate) fn utf8(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes);
        while s.len() < bytes {
            let c = self.char();
            if s.len() + c.len_utf8() <= bytes {
                s.push(c);
            } else {
                // Fill the tail with ASCII so the length is exact.
                s.push(char::from(b'!' + (self.next() % 90) as u8));
            }
        }
        s
    }
}
