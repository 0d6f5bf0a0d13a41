//! The backend as core's KeyValue [`Store`], [`AtomicStore`] and
//! [`ScanStore`]: core's `KvService`, `AtomicService` and `ScanService` serve
//! the basic, batch, TTL, atomic and scan interfaces (preamble, validation
//! with core's shared KV rules, replies); this maps each operation onto the
//! backend, bounded by the client's deadline. Backend failures are gRPC statuses (see `error.rs`),
//! never in-band `error` strings, so clients can branch on the code.

use std::future::Future;

use bytes::Bytes;
use prism_plugin_core::Scope;
use prism_plugin_core::kv::{
    AtomicStore, Counted, Counter, Entry, Item, Limits, Rules, ScanPage, ScanQuery, ScanStore,
    Store, Swap, Swapped, invalid_cursor,
};
use tokio::time::Instant;
use tonic::Status;

use crate::backend::{Backend, SetItem, decode_cursor, encode_cursor};
use crate::error::Error;

/// Core's KV rules as they are: Redis keys are binary-safe.
impl Rules for Backend {
    fn limits(&self) -> &Limits {
        Backend::limits(self)
    }
}

impl Backend {
    /// Awaits a backend operation, but no longer than the client's deadline:
    /// the backend's own bound (`connection_timeout` + `response_timeout`)
    /// may be longer, and tonic would then answer CANCELLED at the deadline
    /// instead of DEADLINE_EXCEEDED. Dropping the operation cancels it.
    async fn run<T>(
        &self,
        scope: &Scope,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let _in_use = InUse::start(self.connections());
        match scope.within(op).await {
            Some(result) => result.map_err(Status::from),
            None => Err(Error::Timeout {
                address: self.address().to_owned(),
                timeout: started.elapsed(),
            }
            .into()),
        }
    }
}

/// Redis connections are multiplexed: "in use" counts the commands in
/// flight on them, and no call ever waits for a connection.
struct InUse {
    open: i64,
}

static IN_FLIGHT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

impl InUse {
    fn start(open: usize) -> InUse {
        let now = IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let open = i64::try_from(open).unwrap_or(i64::MAX);
        prism_plugin_core::backend_metrics::get().pool_state("redis", open, now);
        InUse { open }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        let now = IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) - 1;
        prism_plugin_core::backend_metrics::get().pool_state("redis", self.open, now);
    }
}

#[tonic::async_trait]
impl Store for Backend {
    fn db_system(&self) -> Option<&'static str> {
        Some("redis")
    }

    /// The command each operation sends (a batch set is a pipeline of SETs).
    fn db_operation(&self, operation: &'static str) -> &'static str {
        match operation {
            "set" | "batch_set" => "SET",
            "get" => "GET",
            "batch_get" => "MGET",
            "delete" | "batch_delete" => "UNLINK",
            "exists" => "EXISTS",
            "expire" => "EXPIRE",
            "ttl" => "TTL",
            "persist" => "PERSIST",
            other => other,
        }
    }

    async fn set(&self, scope: Scope, entry: Entry) -> Result<(), Status> {
        let Entry {
            key,
            value,
            ttl_seconds,
        } = entry;
        let op = Backend::set(self, &scope.namespace, &key, &value, ttl_seconds);
        self.run(&scope, op).await
    }

    async fn get(&self, scope: Scope, key: String) -> Result<Option<Bytes>, Status> {
        let op = Backend::get(self, &scope.namespace, &key);
        self.run(&scope, op).await
    }

    async fn delete(&self, scope: Scope, key: String) -> Result<(), Status> {
        let op = Backend::delete(self, &scope.namespace, &key);
        self.run(&scope, op).await
    }

    async fn exists(&self, scope: Scope, key: String) -> Result<bool, Status> {
        let op = Backend::exists(self, &scope.namespace, &key);
        self.run(&scope, op).await
    }

    async fn batch_set(&self, scope: Scope, items: &[Item<'_>]) -> Result<(), Status> {
        let items: Vec<SetItem<'_>> = items
            .iter()
            .map(|item| SetItem {
                key: item.key,
                value: item.value,
                ttl_seconds: item.ttl_seconds,
            })
            .collect();
        let op = Backend::batch_set(self, &scope.namespace, &items);
        self.run(&scope, op).await
    }

    async fn batch_get(&self, scope: Scope, keys: &[String]) -> Result<Vec<Option<Bytes>>, Status> {
        let op = Backend::batch_get(self, &scope.namespace, keys);
        self.run(&scope, op).await
    }

    async fn batch_delete(&self, scope: Scope, keys: &[String]) -> Result<(), Status> {
        let op = Backend::batch_delete(self, &scope.namespace, keys);
        self.run(&scope, op).await
    }

    async fn expire(&self, scope: Scope, key: String, ttl_seconds: u64) -> Result<bool, Status> {
        let op = Backend::expire(self, &scope.namespace, &key, ttl_seconds);
        self.run(&scope, op).await
    }

    async fn ttl(&self, scope: Scope, key: String) -> Result<i64, Status> {
        let op = Backend::ttl(self, &scope.namespace, &key);
        self.run(&scope, op).await
    }

    async fn persist(&self, scope: Scope, key: String) -> Result<bool, Status> {
        let op = Backend::persist(self, &scope.namespace, &key);
        self.run(&scope, op).await
    }
}

/// Atomics for core's `AtomicService`: each call one Lua script.
#[tonic::async_trait]
impl AtomicStore for Backend {
    async fn compare_and_swap(&self, scope: Scope, swap: Swap) -> Result<Swapped, Status> {
        let op = Backend::compare_and_swap(self, &scope.namespace, &swap);
        self.run(&scope, op).await
    }

    async fn increment(&self, scope: Scope, counter: Counter) -> Result<Counted, Status> {
        let op = Backend::increment(self, &scope.namespace, &counter);
        self.run(&scope, op).await
    }
}

/// Scan for core's `ScanService`: `SCAN` pages in no order (declared as
/// `ordered=false`; see `backend/scan.rs` for the guarantee), values read
/// with one `MGET` per page (a key deleted in between is left out).
#[tonic::async_trait]
impl ScanStore for Backend {
    /// SCAN: no order; every key present for the whole scan at least once,
    /// never twice within one page.
    const ORDERED: bool = false;

    async fn scan(&self, scope: Scope, query: ScanQuery) -> Result<ScanPage, Status> {
        let ns = scope.namespace.as_str();
        let from =
            decode_cursor(ns, &query.prefix, &query.cursor).map_err(|()| invalid_cursor())?;
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let op = async {
            let page = self.scan_keys(ns, &query.prefix, from, limit).await?;
            let items = if query.keys_only {
                page.keys
                    .into_iter()
                    .map(|key| (key, Bytes::new()))
                    .collect()
            } else {
                let values = Backend::batch_get(self, ns, &page.keys).await?;
                page.keys
                    .into_iter()
                    .zip(values)
                    .filter_map(|(key, value)| Some((key, value?)))
                    .collect()
            };
            let next_cursor = page
                .next
                .map(|next| encode_cursor(ns, &query.prefix, &next))
                .unwrap_or_default();
            Ok(ScanPage { items, next_cursor })
        };
        self.run(&scope, op).await
    }
}
