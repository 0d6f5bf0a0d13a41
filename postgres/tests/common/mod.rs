//! Shared helpers for the `prism-postgres` integration tests: a real
//! PostgreSQL plus the plugin binary (a `prism_testkit::kv::KvPlugin` with
//! clients for the four KeyValue services), request builders and polling.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use prism_testkit::Postgres;
pub(crate) use prism_testkit::kv::{
    KvPlugin as Plugin, code, get, poll_until, read, req, scan, set,
};

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
