//! The PostgreSQL backend: one configured database, its pool and the API
//! the service, the plugin and the reaper call (connect, health probe with
//! pool statistics, key-value operations, expiry sweep). Knows nothing about
//! gRPC.
//!
//! Failing fast during an outage: the pool would retry a refused connection
//! until `acquire_timeout` for every call. Instead the backend keeps a "link"
//! state — down from the moment a health probe fails or a statement loses its
//! connection, up again at the next successful probe (core probes every
//! 500 ms, and at once when told the health changed). While it is down, calls
//! fail with [`crate::error::Error::Unreachable`] without touching the pool, and calls
//! already waiting for a connection give up as soon as it goes down. So data
//! calls fail fast exactly when readiness is NOT_SERVING.
//!
//! Deadlines: a call carrying the client's deadline is bounded by it; when it
//! passes, the statement's future is dropped and its connection is closed
//! (Terminate + FIN) instead of returned to the pool. On PostgreSQL 14+ the
//! sessions run with `client_connection_check_interval`, so the server notices
//! the closed socket within a second and aborts the statement (lock waits
//! included); older servers run it to completion or `statement_timeout`.
//!
//! The backend's files, each an `impl Backend` block or a piece it holds:
//! `connect` (options, first session and DDL, pool, warm-up), `link` (the
//! reachability state), `call` (a data call's connection and its outcome),
//! `probe` (health), `point` (Get and Set through the coalescing queues of
//! `crate::coalesce`), `kv` (the other statements and the expiry sweep) and
//! `atomic` (CompareAndSwap and Increment).

use std::time::Duration;

use bytes::Bytes;
use prism_plugin_core::Context;
use prism_plugin_core::kv::Limits;
use prism_plugin_core::rotation::{AuthHook, Drain};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::coalesce::Queues;
use crate::pool::Pool;
use crate::schema::Statements;
use link::Link;

mod atomic;
mod call;
mod connect;
mod kv;
mod link;
mod point;
mod probe;

/// One item of a batch write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    /// The key (already validated).
    pub(crate) key: &'a str,
    /// The value (may be empty).
    pub(crate) value: &'a [u8],
    /// Seconds until expiry; 0 = never.
    pub(crate) ttl_seconds: i64,
}

/// One page of a prefix scan.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Keys in byte order with their values (empty when keys only).
    pub(crate) items: Vec<(String, Bytes)>,
    /// More keys follow the last one.
    pub(crate) has_more: bool,
}

/// Per-backend request limits (from config; replaced with the backend).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Key and value size limits.
    pub(crate) limits: Limits,
    /// Largest scan page.
    pub(crate) scan_max_limit: u32,
}

/// One configured database and the pool connected to it.
pub(crate) struct Backend {
    pool: Pool,
    /// The health probe's own session, outside the pool: a probe queued
    /// behind busy data calls would time out and report a healthy but busy
    /// server as down.
    probe: tokio::sync::Mutex<Option<PgConnection>>,
    /// `host:port/database`, for messages (never with credentials).
    target: String,
    degraded_latency: Duration,
    sql: Statements,
    settings: Settings,
    /// Whether the server is reachable (see the module docs).
    link: Link,
    ctx: Context,
    /// Set for Vault credentials: reports a rejected login or session.
    auth: Option<AuthHook>,
    /// Point Gets and Sets waiting for a connection (see coalesce.rs).
    queues: Queues,
    /// One atomic call per key at a time from this process (see atomic.rs).
    key_locks: atomic::KeyLocks,
}

/// Vault-issued credentials replacing the ones in `database_url`.
pub(crate) enum Login<'a> {
    /// A database-engine user and password.
    Password {
        /// User name.
        username: &'a str,
        /// Password (never logged).
        password: &'a str,
        /// Raised when the server rejects them.
        hook: AuthHook,
    },
    /// A PKI-engine client certificate (`cert` authentication).
    Certificate {
        /// The certificate's common name: the user unless the URL names one.
        username: &'a str,
        /// The certificate, its chain and key.
        pem: crate::tls::ClientPem<'a>,
        /// Raised when the server rejects it.
        hook: AuthHook,
    },
}

/// A snapshot of the pool's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolStats {
    /// Connections open now (idle or in use).
    pub(crate) size: u32,
    /// Open connections not in use.
    pub(crate) idle: u32,
    /// The configured maximum.
    pub(crate) max: u32,
}

impl PoolStats {
    /// Connections in use.
    pub(crate) fn busy(&self) -> u32 {
        self.size.saturating_sub(self.idle)
    }

    /// True when at least 90 % of the maximum is in use (requests start to queue).
    pub(crate) fn nearly_exhausted(&self) -> bool {
        self.max > 0 && u64::from(self.busy()) * 10 >= u64::from(self.max) * 9
    }
}

impl Backend {
    /// `host:port/database` of the server.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Request limits of this backend's configuration.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// The pool's connections right now.
    pub(crate) fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.max(),
        }
    }

    /// True while the server is believed reachable.
    pub(crate) fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// Closes the pool: waits for borrowed connections to come back, closes idle ones.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
        if let Some(probe) = self.probe.lock().await.take() {
            let _ = probe.close().await;
        }
    }

    /// Connections open now (for sizing the warm-up of a successor pool).
    pub(crate) fn open_connections(&self) -> u32 {
        self.pool.size()
    }
}

impl Drain for Backend {
    async fn close(&self) {
        Backend::close(self).await;
    }
}
