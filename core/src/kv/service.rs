//! The KeyValue gRPC services (basic, batch, TTL) over any [`Store`]: each
//! call takes its preamble ([`Call::begin`]), validates the request with
//! the store's [`Rules`], runs the store's operation and builds the reply.
//! A KV plugin implements [`Store`] for its backend and registers
//! [`KvService`]; it writes no tonic code for these interfaces.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::{
    Rules, batch_delete_ok, batch_get_response, batch_set_ok, check_batch_set, check_keys,
    check_set, delete_ok, exists_response, expire_response, get_response, persist_response, set_ok,
    ttl, ttl_response,
};
use crate::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterface;
use crate::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterface;
use crate::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterface;
use crate::proto::keyvalue::{
    BatchDeleteRequest, BatchDeleteResponse, BatchGetRequest, BatchGetResponse, BatchSetRequest,
    BatchSetResponse, DeleteRequest, DeleteResponse, ExistsRequest, ExistsResponse, ExpireRequest,
    ExpireResponse, GetRequest, GetResponse, GetTtlRequest, GetTtlResponse, PersistRequest,
    PersistResponse, SetRequest, SetResponse,
};
use crate::{Call, Scope, Slot};

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

/// `KeyValueBasicInterface`, `KeyValueBatchInterface` and
/// `KeyValueTTLInterface` served from the store current in a [`Slot`] (so a
/// re-initialize or a Vault rotation takes effect for the next request).
pub struct KvService<S> {
    backend: Arc<Slot<S>>,
}

impl<S> Clone for KvService<S> {
    fn clone(&self) -> Self {
        KvService {
            backend: self.backend.clone(),
        }
    }
}

impl<S> KvService<S> {
    /// A service reading the store from `backend` on every call.
    pub fn new(backend: Arc<Slot<S>>) -> Self {
        KvService { backend }
    }
}

#[tonic::async_trait]
impl<S: Store> KeyValueBasicInterface for KvService<S> {
    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        let ttl_seconds = check_set(&req, &*backend)?;
        let entry = Entry {
            key: req.key,
            value: req.value,
            ttl_seconds,
        };
        traced(&*backend, "set", backend.set(scope, entry)).await?;
        Ok(Response::new(set_ok()))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        backend.check_key(&req.key)?;
        let value = traced(&*backend, "get", backend.get(scope, req.key)).await?;
        Ok(Response::new(get_response(value)))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        backend.check_key(&req.key)?;
        traced(&*backend, "delete", backend.delete(scope, req.key)).await?;
        Ok(Response::new(delete_ok()))
    }

    async fn exists(
        &self,
        request: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        backend.check_key(&req.key)?;
        let exists = traced(&*backend, "exists", backend.exists(scope, req.key)).await?;
        Ok(Response::new(exists_response(exists)))
    }
}

#[tonic::async_trait]
impl<S: Store> KeyValueBatchInterface for KvService<S> {
    async fn batch_set(
        &self,
        request: Request<BatchSetRequest>,
    ) -> Result<Response<BatchSetResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        // All or nothing: one bad item rejects the batch before anything is written.
        let ttls = check_batch_set(&req.requests, &*backend)?;
        let items: Vec<Item<'_>> = req
            .requests
            .iter()
            .zip(ttls)
            .map(|(set, ttl_seconds)| Item {
                key: &set.key,
                value: &set.value,
                ttl_seconds,
            })
            .collect();
        traced(&*backend, "batch_set", backend.batch_set(scope, &items)).await?;
        Ok(Response::new(batch_set_ok(items.len())))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        check_keys(req.keys.iter().map(String::as_str), &*backend)?;
        let values = traced(&*backend, "batch_get", backend.batch_get(scope, &req.keys)).await?;
        Ok(Response::new(batch_get_response(values)))
    }

    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        check_keys(req.keys.iter().map(String::as_str), &*backend)?;
        traced(
            &*backend,
            "batch_delete",
            backend.batch_delete(scope, &req.keys),
        )
        .await?;
        Ok(Response::new(batch_delete_ok(req.keys.len())))
    }
}

#[tonic::async_trait]
impl<S: Store> KeyValueTtlInterface for KvService<S> {
    async fn expire(
        &self,
        request: Request<ExpireRequest>,
    ) -> Result<Response<ExpireResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        backend.check_key(&req.key)?;
        let ttl_seconds = ttl(req.ttl_seconds)?;
        let key_existed = traced(
            &*backend,
            "expire",
            backend.expire(scope, req.key, ttl_seconds),
        )
        .await?;
        Ok(Response::new(expire_response(key_existed)))
    }

    async fn get_ttl(
        &self,
        request: Request<GetTtlRequest>,
    ) -> Result<Response<GetTtlResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        backend.check_key(&req.key)?;
        let ttl_seconds = traced(&*backend, "ttl", backend.ttl(scope, req.key)).await?;
        Ok(Response::new(ttl_response(ttl_seconds)))
    }

    async fn persist(
        &self,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        backend.check_key(&req.key)?;
        let removed = traced(&*backend, "persist", backend.persist(scope, req.key)).await?;
        Ok(Response::new(persist_response(removed)))
    }
}
