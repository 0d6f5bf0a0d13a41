//! The gRPC data services: `KeyValueBasicInterface`, `KeyValueBatchInterface`
//! and `KeyValueTTLInterface`. Each call reads the namespace header,
//! validates the request with core's shared KV rules, calls the backend and
//! maps the result. Backend failures are gRPC statuses (see `error.rs`), never
//! in-band `error` strings, so clients can branch on the code.

use std::future::Future;
use std::sync::Arc;

use prism_plugin_core::Slot;
use prism_plugin_core::kv::{Limits, check_key, check_keys, check_ttl, check_value};
use prism_plugin_core::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterface;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterface;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterface;
use prism_plugin_core::proto::keyvalue::{
    BatchDeleteRequest, BatchDeleteResponse, BatchGetRequest, BatchGetResponse, BatchSetRequest,
    BatchSetResponse, DeleteRequest, DeleteResponse, ExistsRequest, ExistsResponse, ExpireRequest,
    ExpireResponse, GetRequest, GetResponse, GetTtlRequest, GetTtlResponse, PersistRequest,
    PersistResponse, SetRequest, SetResponse,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, SetItem};
use crate::error::Error;

/// Serves the three KeyValue interfaces from the current backend.
#[derive(Clone)]
pub(crate) struct KvService {
    backend: Arc<Slot<Backend>>,
}

impl KvService {
    /// A service reading the backend from `backend` on every call (so a
    /// re-initialize takes effect for the next request).
    pub(crate) fn new(backend: Arc<Slot<Backend>>) -> Self {
        KvService { backend }
    }

    /// The call's namespace header, the current backend and the client's deadline.
    #[allow(clippy::result_large_err)]
    fn begin<T>(&self, request: &Request<T>) -> Result<Call, Status> {
        Ok(Call {
            namespace: prism_plugin_core::namespace(request)?,
            backend: self.backend.get()?,
            deadline: prism_plugin_core::deadline(request),
        })
    }
}

/// What one call needs besides its message.
struct Call {
    namespace: String,
    backend: Arc<Backend>,
    deadline: Option<Instant>,
}

impl Call {
    /// Awaits a backend operation, but no longer than the client's deadline: the
    /// backend's own bound (`connection_timeout` + `response_timeout`) may be
    /// longer, and tonic would then answer CANCELLED at the deadline instead of
    /// DEADLINE_EXCEEDED. Dropping the operation cancels it.
    async fn run<T>(&self, op: impl Future<Output = Result<T, Error>>) -> Result<T, Status> {
        let started = Instant::now();
        match prism_plugin_core::within(self.deadline, op).await {
            Some(result) => result.map_err(Status::from),
            None => Err(Error::Timeout {
                address: self.backend.address().to_owned(),
                timeout: started.elapsed(),
            }
            .into()),
        }
    }
}

/// A validated TTL: `check_ttl` rejects negatives, so the conversion is exact.
#[allow(clippy::result_large_err)]
fn ttl(ttl_seconds: i64) -> Result<u64, Status> {
    check_ttl(ttl_seconds)?;
    Ok(ttl_seconds.unsigned_abs())
}

/// Validates one write (key, value size, TTL).
#[allow(clippy::result_large_err)]
fn check_set(request: &SetRequest, limits: &Limits) -> Result<u64, Status> {
    check_key(&request.key, limits)?;
    check_value(request.value.len(), limits)?;
    ttl(request.ttl_seconds)
}

#[tonic::async_trait]
impl KeyValueBasicInterface for KvService {
    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        let ttl = check_set(&request, backend.limits())?;
        call.run(backend.set(namespace, &request.key, &request.value, ttl))
            .await?;
        Ok(Response::new(SetResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_key(&request.key, backend.limits())?;
        let value = call.run(backend.get(namespace, &request.key)).await?;
        Ok(Response::new(GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            error: String::new(),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_key(&request.key, backend.limits())?;
        call.run(backend.delete(namespace, &request.key)).await?;
        Ok(Response::new(DeleteResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn exists(
        &self,
        request: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_key(&request.key, backend.limits())?;
        let exists = call.run(backend.exists(namespace, &request.key)).await?;
        Ok(Response::new(ExistsResponse {
            exists,
            error: String::new(),
        }))
    }
}

#[tonic::async_trait]
impl KeyValueBatchInterface for KvService {
    async fn batch_set(
        &self,
        request: Request<BatchSetRequest>,
    ) -> Result<Response<BatchSetResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        let limits = backend.limits();
        let items = request
            .requests
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let ttl_seconds = check_set(set, limits).map_err(|s| {
                    Status::new(s.code(), format!("requests[{i}]: {}", s.message()))
                })?;
                Ok(SetItem {
                    key: &set.key,
                    value: &set.value,
                    ttl_seconds,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        call.run(backend.batch_set(namespace, &items)).await?;
        Ok(Response::new(prism_plugin_core::kv::batch_set_ok(
            items.len(),
        )))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_keys(request.keys.iter().map(String::as_str), backend.limits())?;
        let values = call
            .run(backend.batch_get(namespace, &request.keys))
            .await?;
        Ok(Response::new(prism_plugin_core::kv::batch_get_response(
            values,
        )))
    }

    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_keys(request.keys.iter().map(String::as_str), backend.limits())?;
        call.run(backend.batch_delete(namespace, &request.keys))
            .await?;
        Ok(Response::new(prism_plugin_core::kv::batch_delete_ok(
            request.keys.len(),
        )))
    }
}

#[tonic::async_trait]
impl KeyValueTtlInterface for KvService {
    async fn expire(
        &self,
        request: Request<ExpireRequest>,
    ) -> Result<Response<ExpireResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_key(&request.key, backend.limits())?;
        let ttl = ttl(request.ttl_seconds)?;
        let key_existed = call
            .run(backend.expire(namespace, &request.key, ttl))
            .await?;
        Ok(Response::new(ExpireResponse {
            success: true,
            error: String::new(),
            key_existed,
        }))
    }

    async fn get_ttl(
        &self,
        request: Request<GetTtlRequest>,
    ) -> Result<Response<GetTtlResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_key(&request.key, backend.limits())?;
        let ttl_seconds = call.run(backend.ttl(namespace, &request.key)).await?;
        Ok(Response::new(GetTtlResponse {
            ttl_seconds,
            error: String::new(),
        }))
    }

    async fn persist(
        &self,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let call = self.begin(&request)?;
        let (namespace, backend) = (&call.namespace, &call.backend);
        let request = request.into_inner();
        check_key(&request.key, backend.limits())?;
        let expiration_removed = call.run(backend.persist(namespace, &request.key)).await?;
        Ok(Response::new(PersistResponse {
            success: true,
            error: String::new(),
            expiration_removed,
        }))
    }
}
