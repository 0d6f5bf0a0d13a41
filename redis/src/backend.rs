//! The Redis connection and every Redis command the plugin sends. One
//! standalone server goes through `connections` `ConnectionManager`s (each a
//! multiplexed connection that re-dials by itself after I/O errors), used in
//! turn; a Redis Cluster goes
//! through redis-rs's async cluster connection (slot map, MOVED/ASK handling,
//! per-node reconnects). Both sit behind the same API, so the gRPC layer never
//! knows which one it talks to. Knows nothing about gRPC.
//!
//! Key layout: `<key_prefix><namespace>:<key>` (see the crate README).
//!
//! Beside this file: `atomic` (CompareAndSwap and Increment as Lua
//! scripts) and `scan` (prefix scans over every node).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::try_join_all;
use prism_plugin_core::BadSetting;
use prism_plugin_core::kv::Limits;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, FromRedisValue, RedisFuture, Value};

use crate::config::RedisConfig;
use crate::error::{Error, is_auth_error};
use key::Key;
use prism_plugin_core::rotation::{AuthHook, Drain};

mod atomic;
mod key;
mod scan;

pub use atomic::{INCREMENT_SCRIPT_SOURCE, SWAP_SCRIPT_SOURCE};
pub(crate) use scan::{decode_cursor, encode_cursor};

/// Reconnect attempts per (re)connect round. Kept small so an initial connect to
/// a server that is down fails fast (core retries `initialize` with its own
/// backoff) and a dead server is noticed by the next health check.
const CONNECT_RETRIES: usize = 2;
/// First delay between reconnect attempts.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
/// Cap on the delay between reconnect attempts, so a returning server is used
/// within about a second.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);
/// Longest a health `PING` may take: core gives the whole health check 1.5 s.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Retries of one cluster request (MOVED/ASK redirects, TRYAGAIN, a node being
/// re-dialled). Few and short, so a request against a dead node fails with a
/// connection error (UNAVAILABLE) instead of sitting out the whole deadline.
const CLUSTER_RETRIES: u32 = 3;
/// Bounds (ms) of the wait between cluster retries.
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 50;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 500;

/// One configured Redis deployment (a server or a cluster) and the connection to it.
pub(crate) struct Backend {
    target: Target,
    /// `host:port`, or `cluster host:port,...`, for messages (never with credentials).
    address: String,
    key_prefix: String,
    limits: Limits,
    /// Bound on one data operation, including a re-dial the connection may
    /// need first: `connection_timeout + response_timeout`.
    op_timeout: Duration,
    degraded_latency: Duration,
    /// Set for Vault credentials: reports rejected credentials.
    auth: Option<AuthHook>,
}

/// Vault-minted credentials replacing `username`/`password` of the config.
pub(crate) struct Login<'a> {
    /// ACL user name.
    pub(crate) username: &'a str,
    /// Password (never logged).
    pub(crate) password: &'a str,
    /// Raised when the server rejects them.
    pub(crate) hook: AuthHook,
}

/// Standalone server or cluster.
enum Target {
    Single {
        client: redis::Client,
        manager_config: ConnectionManagerConfig,
        /// Replaced (see [`Backend::ping`]) when a manager is stuck on an
        /// error it does not recover from by itself. Never empty.
        managers: RwLock<Vec<ConnectionManager>>,
        /// Round-robin position over `managers`.
        next: AtomicUsize,
    },
    Cluster {
        client: redis::cluster::ClusterClient,
        /// Reconnects nodes and refreshes the slot map by itself, but can get
        /// stuck after a node restart (its slot refresh never completes, every
        /// request times out); then [`Backend::health_ping`] replaces it.
        connection: RwLock<ClusterConnection>,
        /// Set when a health `PING` failed: the next health check builds a
        /// fresh connection, and timeouts meanwhile are reported as UNAVAILABLE.
        broken: AtomicBool,
        nodes: usize,
    },
}

/// A cheap handle on whichever connection the backend uses; implements the
/// client's `ConnectionLike` so commands are written once for both modes.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// One item of a batch write: key, value, TTL in seconds (0 = none).
pub(crate) struct SetItem<'a> {
    /// Key as the client gave it (without prefix and namespace).
    pub(crate) key: &'a str,
    /// Value bytes.
    pub(crate) value: &'a [u8],
    /// Seconds until expiry; 0 = no expiry.
    pub(crate) ttl_seconds: u64,
}

impl Backend {
    /// Connects (standalone or cluster, per `cluster_nodes`) and checks the
    /// deployment answers `PING` within `connection_timeout + response_timeout`.
    /// `Error::Config` ([`BadSetting`]) for settings that can never work, anything else is retriable.
    /// With a `login` (Vault), its user and password replace the configured ones.
    pub(crate) async fn connect(
        config: &RedisConfig,
        login: Option<Login<'_>>,
    ) -> Result<Self, Error> {
        let mut with_login;
        let (config, auth) = match login {
            Some(login) => {
                with_login = config.clone();
                with_login.username = login.username.to_string();
                with_login.password = login.password.into();
                (&with_login, Some(login.hook))
            }
            None => (config, None),
        };
        let op_timeout = config.connection_timeout + config.response_timeout;
        let limits = Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
        };
        let (target, address) = if config.cluster_nodes.is_empty() {
            Self::connect_single(config)?
        } else {
            Self::connect_cluster(config, op_timeout).await?
        };
        let backend = Backend {
            target,
            address,
            key_prefix: config.key_prefix.clone(),
            limits,
            op_timeout,
            degraded_latency: config.degraded_latency,
            auth,
        };
        // The whole first connect (including the manager's retries) is bounded
        // so `initialize` answers promptly when the server is unreachable.
        backend.ping(op_timeout).await?;
        tracing::info!(address = %backend.address, mode = backend.mode(), "connected to redis");
        Ok(backend)
    }

    fn connect_single(config: &RedisConfig) -> Result<(Target, String), Error> {
        let info = config
            .connection_info()
            .map_err(|(key, problem)| BadSetting { key, problem })?;
        let address = info.addr().to_string();
        let client = match tls_certificates(config)? {
            Some(certs) => redis::Client::build_with_tls(info, certs),
            None => redis::Client::open(info),
        }
        .map_err(|e| BadSetting {
            key: "address",
            problem: e.to_string(),
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connection_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_min_delay(RETRY_MIN_DELAY)
            .set_max_delay(RETRY_MAX_DELAY);
        let managers = (0..config.connections.max(1))
            .map(|_| new_manager(&client, &manager_config, &address))
            .collect::<Result<Vec<_>, _>>()?;
        let target = Target::Single {
            client,
            manager_config,
            managers: RwLock::new(managers),
            next: AtomicUsize::new(0),
        };
        Ok((target, address))
    }

    async fn connect_cluster(
        config: &RedisConfig,
        op_timeout: Duration,
    ) -> Result<(Target, String), Error> {
        let nodes = config.cluster_node_infos().map_err(|problem| BadSetting {
            key: "cluster_nodes",
            problem,
        })?;
        let address = format!(
            "cluster {}",
            nodes
                .iter()
                .map(|n| n.addr().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let count = nodes.len();
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes);
        if let Some(certs) = tls_certificates(config)? {
            builder = builder.certs(certs);
        }
        let client = builder
            .connection_timeout(config.connection_timeout)
            .response_timeout(config.response_timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
            .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
            .build()
            .map_err(|e| BadSetting {
                key: "cluster_nodes",
                problem: e.to_string(),
            })?;
        // Unlike the standalone manager, the cluster connection dials the seeds
        // (and reads the slot map) up front; bound that like any first connect.
        let connection = match timed(&address, op_timeout, client.get_async_connection()).await? {
            Ok(connection) => connection,
            Err(source) => return Err(Error::Redis { address, source }),
        };
        let target = Target::Cluster {
            client,
            connection: RwLock::new(connection),
            broken: AtomicBool::new(false),
            nodes: count,
        };
        Ok((target, address))
    }

    /// `host:port` of the server, or `cluster <seed nodes>`.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// `standalone` or `cluster`.
    pub(crate) fn mode(&self) -> &'static str {
        match self.target {
            Target::Single { .. } => "standalone",
            Target::Cluster { .. } => "cluster",
        }
    }

    /// Multiplexed connections: the standalone managers, or one per cluster node.
    pub(crate) fn connections(&self) -> usize {
        match &self.target {
            Target::Single { managers, .. } => managers.read().map_or(1, |m| m.len()),
            Target::Cluster { nodes, .. } => *nodes,
        }
    }

    /// Number of configured cluster seed nodes (0 for a standalone server).
    pub(crate) fn cluster_nodes(&self) -> usize {
        match self.target {
            Target::Single { .. } => 0,
            Target::Cluster { nodes, .. } => nodes,
        }
    }

    /// Key and value size limits from the config.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// A handle on a shared connection (cheap clone; the next one in turn).
    fn connection(&self) -> Conn {
        match &self.target {
            Target::Single { managers, next, .. } => {
                let managers = managers.read().unwrap_or_else(|e| e.into_inner());
                let i = next.fetch_add(1, Ordering::Relaxed) % managers.len().max(1);
                Conn::Single(managers[i].clone())
            }
            Target::Cluster { connection, .. } => {
                Conn::Cluster(connection.read().unwrap_or_else(|e| e.into_inner()).clone())
            }
        }
    }

    /// `<key_prefix><namespace>:<key>`.
    fn key<'a>(&'a self, namespace: &'a str, key: &'a str) -> Key<'a> {
        Key {
            prefix: &self.key_prefix,
            namespace,
            key,
        }
    }

    /// `<key_prefix><namespace>:<key>` as bytes.
    fn redis_key(&self, namespace: &str, key: &str) -> Vec<u8> {
        self.key(namespace, key).to_vec()
    }

    /// `name <key>`, its buffer sized once for `extra` more bytes of arguments.
    fn key_command(&self, name: &str, namespace: &str, key: &str, extra: usize) -> Cmd {
        let key = self.key(namespace, key);
        let mut cmd = Cmd::with_capacity(4, name.len() + key.len() + extra);
        cmd.arg(name).arg(key);
        cmd
    }

    /// Runs one command under the operation deadline.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let mut conn = self.connection();
        self.bounded(cmd.query_async::<T>(&mut conn)).await
    }

    /// Applies the operation deadline and attaches the address to errors.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let result = timed(&self.address, self.op_timeout, fut).await;
        let timed_out = match &result {
            Ok(Err(source)) => source.is_timeout(),
            Err(_) => true,
            Ok(Ok(_)) => false,
        };
        if timed_out && self.cluster_broken() {
            // Not a slow command: part of the cluster is unreachable and the
            // connection is being rebuilt. Clients should retry later.
            return Err(Error::Unavailable {
                address: self.address.clone(),
                reason: "a cluster node is unreachable; the connection is being rebuilt",
            });
        }
        result?.map_err(|source| self.redis_error(self.check_auth(source)))
    }

    /// A client error, naming the server.
    fn redis_error(&self, source: redis::RedisError) -> Error {
        Error::Redis {
            address: self.address.clone(),
            source,
        }
    }

    /// Reports rejected credentials (Vault) and passes the error on.
    fn check_auth(&self, source: redis::RedisError) -> redis::RedisError {
        if let Some(auth) = &self.auth
            && is_auth_error(&source)
        {
            auth.raise();
        }
        source
    }

    fn cluster_broken(&self) -> bool {
        match &self.target {
            Target::Cluster { broken, .. } => broken.load(Ordering::Relaxed),
            Target::Single { .. } => false,
        }
    }

    /// `SET key value [EX ttl]`: one command, so value and expiry are applied
    /// atomically; without a TTL any previous expiry is cleared (Redis `SET`).
    pub(crate) async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_seconds: u64,
    ) -> Result<(), Error> {
        // Room for the value and `EX <ttl>`.
        let mut cmd = self.key_command("SET", namespace, key, value.len() + 24);
        cmd.arg(value);
        if ttl_seconds > 0 {
            cmd.arg("EX").arg(ttl_seconds);
        }
        self.query::<()>(&cmd).await
    }

    /// `GET key`; `None` when the key does not exist.
    pub(crate) async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error> {
        self.query(&self.key_command("GET", namespace, key, 0))
            .await
    }

    /// `UNLINK key` (the value is freed off the main thread); a missing key is fine.
    pub(crate) async fn delete(&self, namespace: &str, key: &str) -> Result<(), Error> {
        self.query::<i64>(&self.key_command("UNLINK", namespace, key, 0))
            .await
            .map(drop)
    }

    /// `EXISTS key`.
    pub(crate) async fn exists(&self, namespace: &str, key: &str) -> Result<bool, Error> {
        self.query::<i64>(&self.key_command("EXISTS", namespace, key, 0))
            .await
            .map(|n| n > 0)
    }

    /// `EXPIRE key ttl`; 0 deletes the key at once (Redis treats a non-positive
    /// timeout as "expire now"). Returns whether the key existed.
    pub(crate) async fn expire(
        &self,
        namespace: &str,
        key: &str,
        ttl_seconds: u64,
    ) -> Result<bool, Error> {
        let mut cmd = self.key_command("EXPIRE", namespace, key, 20);
        cmd.arg(ttl_seconds);
        self.query::<i64>(&cmd).await.map(|n| n == 1)
    }

    /// `TTL key`: seconds left, -1 = no expiry, -2 = no such key.
    pub(crate) async fn ttl(&self, namespace: &str, key: &str) -> Result<i64, Error> {
        self.query(&self.key_command("TTL", namespace, key, 0))
            .await
    }

    /// `PERSIST key`; returns whether an expiry was removed.
    pub(crate) async fn persist(&self, namespace: &str, key: &str) -> Result<bool, Error> {
        self.query::<i64>(&self.key_command("PERSIST", namespace, key, 0))
            .await
            .map(|n| n == 1)
    }

    /// Groups request positions so each group may go into one multi-key
    /// command: everything in one group on a standalone server; per hash slot
    /// in a cluster (a multi-key command spanning slots fails with CROSSSLOT).
    fn groups(&self, keys: &[Vec<u8>]) -> Vec<Vec<usize>> {
        match self.target {
            Target::Single { .. } => vec![(0..keys.len()).collect()],
            Target::Cluster { .. } => {
                let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
                for (i, key) in keys.iter().enumerate() {
                    by_slot.entry(Slot::for_key(key)).or_default().push(i);
                }
                by_slot.into_values().collect()
            }
        }
    }

    /// `MGET` (one per slot in a cluster, sent concurrently); values in
    /// request order, `None` for missing keys.
    pub(crate) async fn batch_get(
        &self,
        namespace: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Bytes>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| self.redis_key(namespace, k)).collect();
        let groups = self.groups(&keys);
        let replies = self
            .per_group::<Vec<Option<Bytes>>>("MGET", &keys, &groups)
            .await?;
        let mut out = vec![None; keys.len()];
        for (group, values) in groups.iter().zip(replies) {
            if values.len() != group.len() {
                return Err(Error::Protocol {
                    address: self.address.clone(),
                    problem: format!(
                        "MGET of {} keys returned {} values",
                        group.len(),
                        values.len()
                    ),
                });
            }
            for (&i, value) in group.iter().zip(values) {
                out[i] = value;
            }
        }
        Ok(out)
    }

    /// `command` over each group's keys (one group per slot in a cluster),
    /// the groups concurrently, within the operation timeout: a reply per group.
    async fn per_group<T: redis::FromRedisValue>(
        &self,
        command: &str,
        keys: &[Vec<u8>],
        groups: &[Vec<usize>],
    ) -> Result<Vec<T>, Error> {
        let conn = self.connection();
        let replies = try_join_all(groups.iter().map(|group| {
            let mut cmd = redis::cmd(command);
            for &i in group {
                cmd.arg(&keys[i]);
            }
            let mut conn = conn.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        }));
        self.bounded(replies).await
    }

    /// One pipeline of `SET key value [EX ttl]` (one per slot in a cluster):
    /// a single round trip, each item atomic with its own expiry. Not a
    /// transaction: if Redis fails mid-way some items may be written.
    pub(crate) async fn batch_set(
        &self,
        namespace: &str,
        items: &[SetItem<'_>],
    ) -> Result<(), Error> {
        if items.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = items
            .iter()
            .map(|item| self.redis_key(namespace, item.key))
            .collect();
        let groups = self.groups(&keys);
        let conn = self.connection();
        let writes = try_join_all(groups.iter().map(|group| {
            let mut pipe = redis::pipe();
            for &i in group {
                let item = &items[i];
                let cmd = pipe.cmd("SET").arg(&keys[i]).arg(item.value);
                if item.ttl_seconds > 0 {
                    cmd.arg("EX").arg(item.ttl_seconds);
                }
                cmd.ignore();
            }
            let mut conn = conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        }));
        self.bounded(writes).await.map(drop)
    }

    /// `UNLINK` of every key (one per slot in a cluster); missing keys are fine.
    pub(crate) async fn batch_delete(&self, namespace: &str, keys: &[String]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| self.redis_key(namespace, k)).collect();
        let groups = self.groups(&keys);
        self.per_group::<i64>("UNLINK", &keys, &groups)
            .await
            .map(drop)
    }

    /// Health probe: one `PING` round trip (after rebuilding a broken cluster
    /// connection), bounded well inside core's limit.
    pub(crate) async fn health_ping(&self) -> Result<Duration, Error> {
        let timeout = HEALTH_TIMEOUT.min(self.op_timeout);
        let started = Instant::now();
        self.rebuild_broken_cluster(timeout).await?;
        let mut result = self.ping(timeout.saturating_sub(started.elapsed())).await;
        if result.is_ok() && matches!(self.target, Target::Cluster { .. }) {
            // PING reaches only the primaries the connection knows; a node
            // that is gone (or was never re-found) only shows in the
            // cluster's own view of itself.
            let left = timeout.saturating_sub(started.elapsed());
            if let Err(err) = self.check_cluster_state(left).await {
                result = Err(err);
            }
        }
        if let Target::Cluster { broken, .. } = &self.target {
            broken.store(result.is_err(), Ordering::Relaxed);
        }
        result
    }

    /// `PING` with a deadline (every primary in a cluster); returns the
    /// round-trip time.
    async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let conns: Vec<Conn> = match &self.target {
            // Every connection of the pool, so none goes bad unnoticed.
            Target::Single { managers, .. } => managers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|m| Conn::Single(m.clone()))
                .collect(),
            Target::Cluster { .. } => vec![self.connection()],
        };
        let started = Instant::now();
        let pings = try_join_all(conns.into_iter().map(|mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        }));
        match timed(&self.address, timeout, pings).await? {
            Ok(_) => Ok(started.elapsed()),
            // An ACL user limited to data commands (e.g. `+@read ~prism:*`) may
            // not run PING; the refusal still proves the server is up and
            // answering, and its round trip is the latency we want.
            Err(source) if crate::error::is_noperm(&source) => Ok(started.elapsed()),
            Err(source) => {
                // The manager re-dials only after I/O errors; after anything else
                // (e.g. an auth failure while reconnecting, once credentials were
                // rotated) it would keep returning that error forever. A fresh
                // manager (no I/O until used) makes the next check dial again.
                if !source.is_io_error() {
                    self.renew_manager();
                }
                Err(self.redis_error(self.check_auth(source)))
            }
        }
    }

    /// `CLUSTER INFO` on any node must say `cluster_state:ok` (otherwise some
    /// slots are unserved). A user whose ACL forbids `CLUSTER` passes.
    async fn check_cluster_state(&self, timeout: Duration) -> Result<(), Error> {
        let mut conn = self.connection();
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("INFO");
        match timed(&self.address, timeout, cmd.query_async::<String>(&mut conn)).await? {
            Ok(info) if info.contains("cluster_state:ok") => Ok(()),
            Ok(_) => Err(Error::Unavailable {
                address: self.address.clone(),
                reason: "CLUSTER INFO does not report cluster_state:ok",
            }),
            Err(source) if crate::error::is_noperm(&source) => Ok(()),
            Err(source) => Err(self.redis_error(source)),
        }
    }

    /// Replaces a cluster connection that failed the last health check.
    async fn rebuild_broken_cluster(&self, timeout: Duration) -> Result<(), Error> {
        let Target::Cluster {
            client,
            connection,
            broken,
            ..
        } = &self.target
        else {
            return Ok(());
        };
        if !broken.load(Ordering::Relaxed) {
            return Ok(());
        }
        let fresh = timed(&self.address, timeout, client.get_async_connection())
            .await?
            .map_err(|source| self.redis_error(source))?;
        *connection.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        tracing::info!(address = %self.address, "rebuilt the redis cluster connection");
        Ok(())
    }

    fn renew_manager(&self) {
        let Target::Single {
            client,
            manager_config,
            managers,
            ..
        } = &self.target
        else {
            // The cluster connection re-dials nodes and re-reads the slot map
            // by itself.
            return;
        };
        let mut managers = managers.write().unwrap_or_else(|e| e.into_inner());
        for manager in managers.iter_mut() {
            match new_manager(client, manager_config, &self.address) {
                Ok(fresh) => *manager = fresh,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot renew the redis connection manager");
                }
            }
        }
    }
}

impl Drain for Backend {
    /// Dropping the last handle closes the connection; nothing to wait for.
    async fn close(&self) {}
}

/// `fut` for at most `timeout`: its own result, or [`Error::Timeout`]
/// naming `address` when the time ran out first.
async fn timed<T>(
    address: &str,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<redis::RedisResult<T>, Error> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout {
            address: address.to_string(),
            timeout,
        })
}

/// For `rediss://`: makes sure rustls has its crypto provider (ring) and
/// loads `tls_ca_file` if set. `None` = plain TCP, or TLS with the system's
/// trusted roots (the client's default).
fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>, Error> {
    if !config.uses_tls() {
        return Ok(None);
    }
    // Another part of the process may have installed one already; either way
    // a provider is in place afterwards.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if config.tls_ca_file.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(&config.tls_ca_file).map_err(|e| BadSetting {
        key: "tls_ca_file",
        problem: format!("cannot read {}: {e}", config.tls_ca_file),
    })?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

/// A manager that connects on first use (so building one never blocks).
fn new_manager(
    client: &redis::Client,
    config: &ConnectionManagerConfig,
    address: &str,
) -> Result<ConnectionManager, Error> {
    ConnectionManager::new_lazy_with_config(client.clone(), config.clone()).map_err(|source| {
        Error::Redis {
            address: address.to_string(),
            source,
        }
    })
}
