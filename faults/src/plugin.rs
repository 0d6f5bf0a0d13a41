//! [`Plugin`]: one built plugin binary (postgres, redis or kafka) spawned by
//! `prism_testkit::lifecycle` with text logs and a short health interval, a lazily
//! (re)connecting gRPC channel to it, and helpers to read its health; plus
//! small request builders shared by the fault tests.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_client::KeyValueBatchInterfaceClient;
use prism_plugin_core::proto::keyvalue::{BatchGetRequest, GetRequest, SetRequest};
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_plugin_core::proto::pubsub::stream_interface_client::StreamInterfaceClient;
use prism_plugin_core::proto::pubsub::{PublishRequest, StartPosition, TailRequest, tail_request};
use prism_testkit::lifecycle::{health_check, spawn_plugin_on, wait_plugin_health};
use prism_testkit::{PluginProcess, ServingStatus, free_port, health_status};
use tonic::transport::{Channel, Endpoint};

use crate::{Backend, Load, LoadOptions};

/// How long a plugin may take from spawn to readiness SERVING (a loaded
/// 2-core machine runs several test servers at once).
const STARTUP: Duration = Duration::from_secs(30);

/// Which plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `prism-postgres`.
    Postgres,
    /// `prism-redis`.
    Redis,
    /// `prism-kafka`.
    Kafka,
}

impl Kind {
    /// The short name the tests print (`postgres`, `redis`, `kafka`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::Kafka => "kafka",
        }
    }

    /// The binary's name.
    pub fn binary_name(self) -> &'static str {
        match self {
            Kind::Postgres => "prism-postgres",
            Kind::Redis => "prism-redis",
            Kind::Kafka => "prism-kafka",
        }
    }
}

/// The path of a workspace binary built next to the running test
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). Panics with
/// the command that builds it if it is missing: this crate cannot name
/// another package's binaries through `CARGO_BIN_EXE_*`, so `make test` and
/// `make test-faults` build them first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --bins -p prism-postgres -p prism-redis -p prism-kafka` \
         (make test-faults does)",
        path.display()
    );
    path
}

/// A running plugin process and a channel to it.
#[derive(Debug)]
pub struct Plugin {
    /// Which plugin.
    pub kind: Kind,
    /// The process (captured logs, signals, exit status).
    pub process: PluginProcess,
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
    /// A channel that connects lazily and reconnects by itself.
    pub channel: Channel,
}

impl Plugin {
    /// Spawns `kind` on a free port with text logs, a 200 ms health interval
    /// and `envs` (applied last, so they win), without waiting for it.
    pub async fn spawn(kind: Kind, envs: &[(&str, &str)]) -> Plugin {
        Self::spawn_on(kind, free_port(), envs).await
    }

    /// Like [`spawn`](Self::spawn) on a given `port` (a restarted plugin on
    /// the address its clients know).
    pub async fn spawn_on(kind: Kind, port: u16, envs: &[(&str, &str)]) -> Plugin {
        let process = spawn_plugin_on(
            binary(kind.binary_name()),
            port,
            &[],
            &with_health_interval(envs),
        )
        .await;
        Self::connect(kind, process, port)
    }

    /// The handle for `process` listening on `port`, with a lazy channel.
    fn connect(kind: Kind, process: PluginProcess, port: u16) -> Plugin {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        Plugin {
            kind,
            process,
            port,
            channel,
        }
    }

    /// Spawns and waits for readiness SERVING.
    pub async fn start(kind: Kind, envs: &[(&str, &str)]) -> Plugin {
        let plugin = Self::spawn(kind, envs).await;
        plugin.wait_for(ServingStatus::Serving, STARTUP).await;
        plugin
    }

    /// Spawns the plugin for `backend` (its address, then `envs`) and waits
    /// for readiness SERVING.
    pub async fn start_for(backend: &Backend, envs: &[(&str, &str)]) -> Plugin {
        let (var, address) = backend.address();
        let mut all = vec![(var, address.as_str())];
        all.extend_from_slice(envs);
        Self::start(backend.kind(), &all).await
    }

    /// Waits until readiness is `want`; panics with the plugin's log tail.
    pub async fn wait_for(&self, want: ServingStatus, timeout: Duration) {
        self.wait_for_service("readiness", want, timeout).await;
    }

    /// Waits until the health of `service` is `want`; panics with the
    /// plugin's log tail.
    pub async fn wait_for_service(&self, service: &str, want: ServingStatus, timeout: Duration) {
        wait_plugin_health(&self.process, self.port, &[service], want, timeout).await;
    }

    /// The health of `service` now (an error if the plugin did not answer).
    pub async fn health(&self, service: &str) -> prism_testkit::Result<ServingStatus> {
        health_status(&self.channel, service).await
    }

    /// The lifecycle `HealthCheck` details.
    pub async fn health_details(&self) -> BTreeMap<String, String> {
        health_check(self.port).await.details.into_iter().collect()
    }

    /// A KeyValue basic client.
    pub fn kv(&self) -> KeyValueBasicInterfaceClient<Channel> {
        KeyValueBasicInterfaceClient::new(self.channel.clone())
    }

    /// Reads every key back with BatchGet (chunks of 200) and returns the
    /// keys that are missing or whose value is not `value_of(key)`.
    pub async fn missing_or_wrong(
        &self,
        keys: &[String],
        value_of: impl Fn(&str) -> String,
    ) -> Vec<String> {
        let mut batch = KeyValueBatchInterfaceClient::new(self.channel.clone());
        let mut bad = Vec::new();
        for chunk in keys.chunks(200) {
            let reply = batch
                .batch_get(BatchGetRequest {
                    keys: chunk.to_vec(),
                })
                .await
                .expect("BatchGet of the acknowledged keys")
                .into_inner();
            assert_eq!(reply.results.len(), chunk.len(), "one result per key");
            for (key, got) in chunk.iter().zip(reply.results) {
                if !got.found || got.value.as_ref() != value_of(key).as_bytes() {
                    bad.push(key.clone());
                }
            }
        }
        bad
    }

    /// Tails `topic` from the earliest offset until every payload in `wanted`
    /// was read or `timeout` passed; returns the payloads of `wanted` that
    /// were not read.
    pub async fn tail_missing(
        &self,
        topic: &str,
        wanted: &[String],
        timeout: Duration,
    ) -> BTreeSet<String> {
        let mut missing: BTreeSet<String> = wanted.iter().cloned().collect();
        let deadline = tokio::time::Instant::now() + timeout;
        while !missing.is_empty() && tokio::time::Instant::now() < deadline {
            let request = TailRequest {
                topic: topic.to_string(),
                start: Some(tail_request::Start::Position(
                    StartPosition::Earliest as i32,
                )),
                max_messages: 0,
            };
            let mut stream = match self.streams().tail(request).await {
                Ok(reply) => reply.into_inner(),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while !missing.is_empty() {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Ok(Ok(Some(message))) => {
                        missing.remove(String::from_utf8_lossy(&message.payload).as_ref());
                    }
                    // Stream ended or failed: tail again (until the deadline).
                    Ok(_) => break,
                    Err(_) => return missing,
                }
            }
        }
        missing
    }

    /// A KeyValue load: caller `c` Sets the new key `c<c>-<seq>` to
    /// `value_of(key)` with a `grpc-timeout` of `deadline`, and acknowledges
    /// the key.
    pub fn set_load(
        &self,
        options: LoadOptions,
        deadline: Duration,
        value_of: fn(&str) -> String,
    ) -> Load {
        load_on(options, self.kv(), move |mut kv, caller, seq| async move {
            let key = format!("c{caller}-{seq}");
            kv.set(with_deadline(kv_set(&key, &value_of(&key)), deadline))
                .await?;
            Ok(Some(key))
        })
    }

    /// A pub/sub load: caller `c` Publishes the payload `c<c>-<seq>` to
    /// `topic` (partition key `c<c>`) with a `grpc-timeout` of `deadline`,
    /// and acknowledges the payload.
    pub fn publish_load(
        &self,
        options: LoadOptions,
        topic: &'static str,
        deadline: Duration,
    ) -> Load {
        load_on(
            options,
            self.pubsub(),
            move |mut pubsub, caller, seq| async move {
                let payload = format!("c{caller}-{seq}");
                let request = publish_request(topic, payload.clone(), &format!("c{caller}"));
                pubsub.publish(with_deadline(request, deadline)).await?;
                Ok(Some(payload))
            },
        )
    }

    /// A pub/sub client.
    pub fn pubsub(&self) -> PubSubBasicInterfaceClient<Channel> {
        PubSubBasicInterfaceClient::new(self.channel.clone())
    }

    /// A stream (Tail, Consume) client.
    pub fn streams(&self) -> StreamInterfaceClient<Channel> {
        StreamInterfaceClient::new(self.channel.clone())
    }
}

/// A [`Load`] whose calls each get their own clone of `client`: caller
/// `c`'s call `seq` is `call(client, c, seq)`.
fn load_on<C, F, Fut>(options: LoadOptions, client: C, call: F) -> Load
where
    C: Clone + Send + Sync + 'static,
    F: Fn(C, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<String>, tonic::Status>> + Send + 'static,
{
    Load::start(options, move |caller, seq| {
        call(client.clone(), caller, seq)
    })
}

/// `envs` after a 200 ms health interval (so `envs` may override it): the
/// fault tests wait on health transitions.
fn with_health_interval<'a>(envs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("PRISM_CONTROL_PLANE__HEALTH_INTERVAL", "200ms")];
    all.extend_from_slice(envs);
    all
}

/// `message` as a request carrying a `grpc-timeout` of `deadline`: the
/// plugin, not the client, must end the call when it expires.
pub fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// A Set of `key` to `value` without expiry.
pub fn kv_set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.to_string(),
        value: value.as_bytes().to_vec().into(),
        tags: None,
        ttl_seconds: 0,
    }
}

/// A Publish of `payload` to `topic` with `partition_key` and no metadata.
pub fn publish_request(
    topic: &str,
    payload: impl Into<Vec<u8>>,
    partition_key: &str,
) -> PublishRequest {
    PublishRequest {
        topic: topic.to_string(),
        payload: payload.into().into(),
        metadata: Default::default(),
        partition_key: partition_key.to_string(),
    }
}

/// A Get of `key`.
pub fn kv_get(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_string(),
    }
}

/// Polls `check` every 50 ms until it is true; false if `timeout` passed.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
