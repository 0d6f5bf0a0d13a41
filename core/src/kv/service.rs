//! The KeyValue gRPC services (basic, batch, TTL) over any [`Store`]: each
//! call takes its preamble, validates the request with the store's
//! [`Rules`], runs the store's operation and builds the reply (the shape
//! all KV RPCs share, `rpc`); here is what each RPC checks and runs.
//! A KV plugin implements [`Store`] for its backend and registers
//! [`KvService`]; it writes no tonic code for these interfaces.

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::rpc::{KvService, checked_key};
use super::{
    Rules, batch_delete_ok, batch_get_response, batch_set_ok, check_batch_set, check_keys,
    check_set, delete_ok, exists_response, expire_response, get_response, persist_response, set_ok,
    ttl, ttl_response,
};
use crate::Scope;
use crate::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterface;
use crate::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterface;
use crate::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterface;
use crate::proto::keyvalue::{
    BatchDeleteRequest, BatchDeleteResponse, BatchGetRequest, BatchGetResponse, BatchSetRequest,
    BatchSetResponse, DeleteRequest, DeleteResponse, ExistsRequest, ExistsResponse, ExpireRequest,
    ExpireResponse, GetRequest, GetResponse, GetTtlRequest, GetTtlResponse, PersistRequest,
    PersistResponse, SetRequest, SetResponse,
};

/// What a Set stores, already validated.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value (may be empty).
    pub value: Bytes,
    /// Seconds until expiry; 0 = never.
    pub ttl_seconds: u64,
}

/// One item of a BatchSet, already validated.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The key.
    pub key: &'a str,
    /// The value (may be empty).
    pub value: &'a [u8],
    /// Seconds until expiry; 0 = never.
    pub ttl_seconds: u64,
}

/// A key-value backend [`KvService`] serves from. Every operation gets the
/// call's [`Scope`] (namespace, deadline) and a request that already passed
/// the store's [`Rules`]; it answers a gRPC status on failure (a missing key
/// is not one: `None`, `false` or `-2`).
#[tonic::async_trait]
pub trait Store: Rules + Send + Sync + 'static {
    /// Stores the entry (insert or overwrite).
    async fn set(&self, scope: Scope, entry: Entry) -> Result<(), Status>;

    /// The value under `key`.
    async fn get(&self, scope: Scope, key: String) -> Result<Option<Bytes>, Status>;

    /// Deletes `key`; a missing key is no error.
    async fn delete(&self, scope: Scope, key: String) -> Result<(), Status>;

    /// True when `key` exists.
    async fn exists(&self, scope: Scope, key: String) -> Result<bool, Status>;

    /// Stores every item, all or nothing.
    async fn batch_set(&self, scope: Scope, items: &[Item<'_>]) -> Result<(), Status>;

    /// The values of `keys`, in request order.
    async fn batch_get(&self, scope: Scope, keys: &[String]) -> Result<Vec<Option<Bytes>>, Status>;

    /// Deletes every key of `keys`.
    async fn batch_delete(&self, scope: Scope, keys: &[String]) -> Result<(), Status>;

    /// Sets the expiry of `key` (0 = expire now); false when there is no such key.
    async fn expire(&self, scope: Scope, key: String, ttl_seconds: u64) -> Result<bool, Status>;

    /// Seconds left on `key`: -1 no expiry, -2 no such key.
    async fn ttl(&self, scope: Scope, key: String) -> Result<i64, Status>;

    /// Removes the expiry of `key`; false when it had none (or does not exist).
    async fn persist(&self, scope: Scope, key: String) -> Result<bool, Status>;

    /// `db.system.name` of the trace span around each call (`postgresql`,
    /// `redis`); `None` (the default) opens none.
    fn db_system(&self) -> Option<&'static str> {
        None
    }

    /// `db.operation.name` of an operation (`get`, `set`, `delete`, `exists`,
    /// `batch_set`, `batch_get`, `batch_delete`, `expire`, `ttl`, `persist`)
    /// in the backend's own terms (`GET`, `SELECT`, ...); default: unchanged.
    fn db_operation(&self, operation: &'static str) -> &'static str {
        operation
    }
}

/// Runs one store call inside its database span (when tracing is on) and
/// records its latency by operation.
async fn traced<S: Store + ?Sized, T>(
    store: &S,
    operation: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let Some(system) = store.db_system() else {
        return call.await;
    };
    let operation = store.db_operation(operation);
    let started = std::time::Instant::now();
    let result = if crate::otel::enabled() {
        crate::otel::traced(crate::otel::db_span(system, operation), call).await
    } else {
        call.await
    };
    let seconds = started.elapsed().as_secs_f64();
    crate::backend_metrics::get().operation(system, operation, seconds);
    result
}

impl<S: Store> KvService<S> {
    /// One RPC over a [`Store`]: [`KvService::rpc`] with the operation
    /// inside its database span and latency metric ([`traced`]).
    async fn op<Req, Checked, Out, Reply>(
        &self,
        operation: &'static str,
        request: Request<Req>,
        check: impl FnOnce(Req, &S) -> Result<Checked, Status>,
        run: impl AsyncFnOnce(&S, Scope, Checked) -> Result<Out, Status>,
        reply: impl FnOnce(Out) -> Reply,
    ) -> Result<Response<Reply>, Status> {
        let run = async |store: &S, scope, checked| {
            traced(store, operation, run(store, scope, checked)).await
        };
        self.rpc(request, check, run, reply).await
    }
}

/// A Set as the store receives it: key, value size and TTL checked.
#[allow(clippy::result_large_err)]
fn entry(req: SetRequest, rules: &impl Rules) -> Result<Entry, Status> {
    Ok(Entry {
        ttl_seconds: check_set(&req, rules)?,
        key: req.key,
        value: req.value,
    })
}

/// The keys of a batch, each checked (an error names the position).
#[allow(clippy::result_large_err)]
fn checked_keys(keys: Vec<String>, rules: &impl Rules) -> Result<Vec<String>, Status> {
    check_keys(keys.iter().map(String::as_str), rules)?;
    Ok(keys)
}

#[tonic::async_trait]
impl<S: Store> KeyValueBasicInterface for KvService<S> {
    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let run = async |store: &S, scope, entry| store.set(scope, entry).await;
        self.op("set", request, entry, run, |()| set_ok()).await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let check = |req: GetRequest, store: &S| checked_key(req.key, store);
        let run = async |store: &S, scope, key| store.get(scope, key).await;
        self.op("get", request, check, run, get_response).await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let check = |req: DeleteRequest, store: &S| checked_key(req.key, store);
        let run = async |store: &S, scope, key| store.delete(scope, key).await;
        self.op("delete", request, check, run, |()| delete_ok())
            .await
    }

    async fn exists(
        &self,
        request: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let check = |req: ExistsRequest, store: &S| checked_key(req.key, store);
        let run = async |store: &S, scope, key| store.exists(scope, key).await;
        self.op("exists", request, check, run, exists_response)
            .await
    }
}

#[tonic::async_trait]
impl<S: Store> KeyValueBatchInterface for KvService<S> {
    async fn batch_set(
        &self,
        request: Request<BatchSetRequest>,
    ) -> Result<Response<BatchSetResponse>, Status> {
        // All or nothing: one bad item rejects the batch before anything is written.
        let check = |req: BatchSetRequest, store: &S| {
            let ttls = check_batch_set(&req.requests, store)?;
            Ok((req.requests, ttls))
        };
        let run = async |store: &S, scope, (sets, ttls): (Vec<SetRequest>, Vec<u64>)| {
            let items: Vec<Item<'_>> = sets
                .iter()
                .zip(ttls)
                .map(|(set, ttl_seconds)| Item {
                    key: &set.key,
                    value: &set.value,
                    ttl_seconds,
                })
                .collect();
            store.batch_set(scope, &items).await.map(|()| items.len())
        };
        self.op("batch_set", request, check, run, batch_set_ok)
            .await
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let check = |req: BatchGetRequest, store: &S| checked_keys(req.keys, store);
        let run = async |store: &S, scope, keys: Vec<String>| store.batch_get(scope, &keys).await;
        self.op("batch_get", request, check, run, batch_get_response)
            .await
    }

    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let check = |req: BatchDeleteRequest, store: &S| checked_keys(req.keys, store);
        let run = async |store: &S, scope, keys: Vec<String>| {
            store.batch_delete(scope, &keys).await.map(|()| keys.len())
        };
        self.op("batch_delete", request, check, run, batch_delete_ok)
            .await
    }
}

#[tonic::async_trait]
impl<S: Store> KeyValueTtlInterface for KvService<S> {
    async fn expire(
        &self,
        request: Request<ExpireRequest>,
    ) -> Result<Response<ExpireResponse>, Status> {
        let check = |req: ExpireRequest, store: &S| {
            Ok((checked_key(req.key, store)?, ttl(req.ttl_seconds)?))
        };
        let run = async |store: &S, scope, (key, ttl_seconds)| {
            store.expire(scope, key, ttl_seconds).await
        };
        self.op("expire", request, check, run, expire_response)
            .await
    }

    async fn get_ttl(
        &self,
        request: Request<GetTtlRequest>,
    ) -> Result<Response<GetTtlResponse>, Status> {
        let check = |req: GetTtlRequest, store: &S| checked_key(req.key, store);
        let run = async |store: &S, scope, key| store.ttl(scope, key).await;
        self.op("ttl", request, check, run, ttl_response).await
    }

    async fn persist(
        &self,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let check = |req: PersistRequest, store: &S| checked_key(req.key, store);
        let run = async |store: &S, scope, key| store.persist(scope, key).await;
        self.op("persist", request, check, run, persist_response)
            .await
    }
}
