//! Shared helpers for the `prism-postgres` integration tests: a real
//! PostgreSQL plus the plugin binary, gRPC clients for the four KeyValue
//! services, request builders and polling.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_client::KeyValueBatchInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_scan_interface_client::KeyValueScanInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_client::KeyValueTtlInterfaceClient;
use prism_plugin_core::proto::keyvalue::{GetRequest, ScanRequest, SetRequest};
use prism_testkit::{PluginProcess, Postgres, ServingStatus, free_port, wait_for_health};
use tonic::transport::Channel;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_prism-postgres");
/// First SERVING after spawn (process start, first connect, table creation).
pub(crate) const STARTUP: Duration = Duration::from_secs(20);
/// Big enough for the 8 MiB values and the 10,000-item batches.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A running plugin process and a channel to it.
pub(crate) struct Plugin {
    pub(crate) process: PluginProcess,
    pub(crate) port: u16,
    pub(crate) channel: Channel,
}

impl Plugin {
    /// Spawns the plugin against `pg` with extra `envs`, waits for SERVING.
    pub(crate) async fn start(pg: &Postgres, envs: &[(&str, &str)]) -> Plugin {
        let plugin = Plugin::spawn(pg, envs).await;
        plugin.wait_serving().await;
        plugin
    }

    /// Spawns without waiting.
    pub(crate) async fn spawn(pg: &Postgres, envs: &[(&str, &str)]) -> Plugin {
        let port = free_port();
        let url = pg.url();
        let mut all = vec![("PRISM_LOG_FORMAT", "text"), ("DATABASE_URL", url.as_str())];
        all.extend_from_slice(envs);
        let process = PluginProcess::spawn(BIN, &["--grpc-port", &port.to_string()], &all)
            .await
            .expect("plugin spawns");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_lazy();
        Plugin {
            process,
            port,
            channel,
        }
    }

    pub(crate) async fn wait_serving(&self) {
        wait_for_health(self.port, "", ServingStatus::Serving, STARTUP)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.process.logs()));
    }

    pub(crate) fn basic(&self) -> KeyValueBasicInterfaceClient<Channel> {
        KeyValueBasicInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn batch(&self) -> KeyValueBatchInterfaceClient<Channel> {
        KeyValueBatchInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn ttl(&self) -> KeyValueTtlInterfaceClient<Channel> {
        KeyValueTtlInterfaceClient::new(self.channel.clone())
    }

    pub(crate) fn scan(&self) -> KeyValueScanInterfaceClient<Channel> {
        KeyValueScanInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// Panics (with the logs) if the process has exited.
    pub(crate) fn assert_running(&mut self) {
        let status = self.process.try_status().expect("status");
        assert!(
            status.is_none(),
            "plugin exited: {status:?}\n{}",
            self.process.logs()
        );
    }
}

/// A real PostgreSQL and one plugin on it.
pub(crate) async fn pg_and_plugin(envs: &[(&str, &str)]) -> (Postgres, Plugin) {
    let pg = Postgres::start().await.expect("postgres starts");
    let plugin = Plugin::start(&pg, envs).await;
    (pg, plugin)
}

/// `msg` with the `x-prism-namespace` header when `ns` is given.
pub(crate) fn req<T>(ns: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    if let Some(ns) = ns {
        request
            .metadata_mut()
            .insert("x-prism-namespace", ns.parse().expect("ascii namespace"));
    }
    request
}

pub(crate) fn set(key: &str, value: impl Into<Vec<u8>>, ttl_seconds: i64) -> SetRequest {
    SetRequest {
        key: key.to_string(),
        value: value.into().into(),
        tags: None,
        ttl_seconds,
    }
}

pub(crate) fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_string(),
    }
}

pub(crate) fn scan(prefix: &str, limit: i32, cursor: &str) -> ScanRequest {
    ScanRequest {
        prefix: prefix.to_string(),
        limit,
        cursor: cursor.to_string(),
        keys_only: false,
    }
}

/// The status code of a call expected to fail.
pub(crate) fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Code {
    match result {
        Ok(reply) => panic!("call succeeded with {reply:?}; expected an error"),
        Err(status) => status.code(),
    }
}

/// Polls `check` every 50 ms until it returns true; returns the time it took.
pub(crate) async fn poll_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
