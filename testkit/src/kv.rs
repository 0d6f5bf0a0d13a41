//! Talking KeyValue to a spawned plugin the way the gateway does: a
//! [`KvPlugin`] (the process, its port and one channel) with clients for the four
//! KeyValue services, request builders carrying `x-prism-namespace`, the status
//! code of a failing call, and polling a condition until it holds.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_client::KeyValueBatchInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_scan_interface_client::KeyValueScanInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_client::KeyValueTtlInterfaceClient;
use prism_plugin_core::proto::keyvalue::{
    BatchGetRequest, BatchGetResponse, GetRequest, GetResponse, ScanRequest, SetRequest,
};
use tonic::transport::Channel;

use crate::{PluginProcess, ServingStatus, free_port, wait_for_health};

/// Large enough for the 16 MiB + 1 values and the 10,000-item batches tests send.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A running plugin process and a (lazily connected) channel to it.
pub struct KvPlugin {
    /// The plugin process (logs, signals, exit status).
    pub process: PluginProcess,
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
    /// One channel every client of this handle shares.
    pub channel: Channel,
}

impl KvPlugin {
    /// Spawns `bin` on a free port with text logs and `envs`, without waiting.
    pub async fn spawn(bin: impl AsRef<Path>, envs: &[(&str, &str)]) -> KvPlugin {
        let port = free_port();
        let mut all = vec![("PRISM_LOG_FORMAT", "text")];
        all.extend_from_slice(envs);
        let process = PluginProcess::spawn(bin, &["--grpc-port", &port.to_string()], &all)
            .await
            .expect("plugin spawns");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_lazy();
        KvPlugin {
            process,
            port,
            channel,
        }
    }

    /// Waits until health `service` is SERVING; panics with the plugin's logs.
    pub async fn wait(&self, service: &str, timeout: Duration) {
        wait_for_health(self.port, service, ServingStatus::Serving, timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.process.logs()));
    }

    /// A KeyValueBasic client.
    pub fn basic(&self) -> KeyValueBasicInterfaceClient<Channel> {
        basic(&self.channel)
    }

    /// A KeyValueBatch client.
    pub fn batch(&self) -> KeyValueBatchInterfaceClient<Channel> {
        batch(&self.channel)
    }

    /// A KeyValueTTL client.
    pub fn ttl(&self) -> KeyValueTtlInterfaceClient<Channel> {
        KeyValueTtlInterfaceClient::new(self.channel.clone())
    }

    /// A KeyValueScan client.
    pub fn scan(&self) -> KeyValueScanInterfaceClient<Channel> {
        KeyValueScanInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// Get's reply for `key` in namespace `ns`.
    pub async fn read(&self, ns: Option<&str>, key: &str) -> GetResponse {
        read(&mut self.basic(), ns, key).await
    }

    /// The lifecycle `HealthCheck` details, sorted by key.
    pub async fn health_details(&self) -> BTreeMap<String, String> {
        crate::lifecycle::health_check(self.port)
            .await
            .details
            .into_iter()
            .collect()
    }

    /// Panics (with the logs) if the process has exited.
    pub fn assert_running(&mut self) {
        let status = self.process.try_status().expect("status");
        assert!(
            status.is_none(),
            "plugin exited: {status:?}\n{}",
            self.process.logs()
        );
    }
}

/// A KeyValueBasic client on `channel` taking and returning big messages.
pub fn basic(channel: &Channel) -> KeyValueBasicInterfaceClient<Channel> {
    KeyValueBasicInterfaceClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A KeyValueBatch client on `channel` taking and returning big messages.
pub fn batch(channel: &Channel) -> KeyValueBatchInterfaceClient<Channel> {
    KeyValueBatchInterfaceClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Get's reply for `key` in namespace `ns` through `kv`.
pub async fn read(
    kv: &mut KeyValueBasicInterfaceClient<Channel>,
    ns: Option<&str>,
    key: &str,
) -> GetResponse {
    kv.get(req(ns, get(key))).await.expect("get").into_inner()
}

/// BatchGet's reply for `keys` in namespace `ns` through `batch`, timed.
pub async fn batch_get(
    batch: &mut KeyValueBatchInterfaceClient<Channel>,
    ns: Option<&str>,
    keys: &[String],
) -> BatchGetResponse {
    let request = BatchGetRequest {
        keys: keys.to_vec(),
    };
    let what = format!("BatchGet of {}", keys.len());
    timed(&what, batch.batch_get(req(ns, request))).await
}

/// Awaits the gRPC `call`, printing `[timing] <what>: <elapsed>` (the tests'
/// measurements); returns its reply. Panics naming `what` when it fails.
pub async fn timed<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    let started = Instant::now();
    let reply = call.await.unwrap_or_else(|e| panic!("{what}: {e:?}"));
    eprintln!("[timing] {what}: {:?}", started.elapsed());
    reply.into_inner()
}

/// `msg` with the `x-prism-namespace` header when `ns` is given.
pub fn req<T>(ns: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    if let Some(ns) = ns {
        request
            .metadata_mut()
            .insert("x-prism-namespace", ns.parse().expect("ascii namespace"));
    }
    request
}

/// A Set of `value` under `key`, expiring after `ttl_seconds` (0: never).
pub fn set(key: &str, value: impl Into<Vec<u8>>, ttl_seconds: i64) -> SetRequest {
    SetRequest {
        key: key.to_owned(),
        value: value.into().into(),
        tags: None,
        ttl_seconds,
    }
}

/// A Get of `key`.
pub fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_owned(),
    }
}

/// A Scan page of at most `limit` items under `prefix` from `cursor`.
pub fn scan(prefix: &str, limit: i32, cursor: &str) -> ScanRequest {
    ScanRequest {
        prefix: prefix.to_owned(),
        limit,
        cursor: cursor.to_owned(),
        keys_only: false,
    }
}

/// The status code of a call expected to fail.
pub fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Code {
    match result {
        Ok(reply) => panic!("call succeeded with {reply:?}; expected an error"),
        Err(status) => status.code(),
    }
}

/// Polls `check` every 50 ms until it returns true; returns the time it took.
/// Panics naming `what` after `timeout`.
pub async fn poll_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
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
