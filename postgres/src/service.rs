//! The four KeyValue gRPC services (basic, batch, TTL, scan): read the
//! namespace and deadline, validate the request, call the backend, map the
//! result. No SQL here.
//!
//! Failures are gRPC statuses (see `error.rs`); the in-band `error` strings
//! stay empty, on success and on "not found" alike.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prism_plugin_core::Slot;
use prism_plugin_core::kv::{Limits, check_ttl, check_value};
use prism_plugin_core::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterface;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterface;
use prism_plugin_core::proto::keyvalue::key_value_scan_interface_server::KeyValueScanInterface;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterface;
use prism_plugin_core::proto::keyvalue::{
    BatchDeleteRequest, BatchDeleteResponse, BatchGetRequest, BatchGetResponse, BatchSetRequest,
    BatchSetResponse, DeleteRequest, DeleteResponse, ExistsRequest, ExistsResponse, ExpireRequest,
    ExpireResponse, GetRequest, GetResponse, GetTtlRequest, GetTtlResponse, PersistRequest,
    PersistResponse, ScanItem, ScanRequest, ScanResponse, SetRequest, SetResponse,
};
use tonic::{Request, Response, Status};

use crate::backend::{Backend, Deadline, Item};

/// Page size when a Scan asks for none.
const DEFAULT_SCAN_LIMIT: u32 = 100;
/// First byte of every cursor, so the format can change compatibly.
const CURSOR_VERSION: u8 = 1;

/// Serves all four KeyValue interfaces from the current backend.
#[derive(Clone)]
pub(crate) struct KvService {
    backend: Arc<Slot<Backend>>,
}

impl KvService {
    /// A service reading the backend from `backend` on every call.
    pub(crate) fn new(backend: Arc<Slot<Backend>>) -> Self {
        KvService { backend }
    }
}

/// What every call needs before touching its message: the backend, the
/// namespace (`x-prism-namespace`) and the deadline (`grpc-timeout`).
struct Call {
    backend: Arc<Backend>,
    ns: String,
    deadline: Deadline,
}

impl KvService {
    #[allow(clippy::result_large_err)]
    fn call<T>(&self, request: &Request<T>) -> Result<Call, Status> {
        let ns = prism_plugin_core::namespace(request)?;
        let deadline = prism_plugin_core::deadline(request);
        let backend = self.backend.get()?;
        Ok(Call {
            backend,
            ns,
            deadline,
        })
    }
}

/// Core's key check plus PostgreSQL's own rule: `text` cannot hold U+0000.
#[allow(clippy::result_large_err)]
fn check_key(key: &str, limits: &Limits) -> Result<(), Status> {
    prism_plugin_core::kv::check_key(key, limits)?;
    if key.contains('\0') {
        return Err(Status::invalid_argument(
            "key must not contain U+0000 (PostgreSQL text cannot store it)",
        ));
    }
    Ok(())
}

/// Prefixes a validation error with the offending position of a batch.
fn at(field: &str, index: usize, status: Status) -> Status {
    Status::new(
        status.code(),
        format!("{field}[{index}]: {}", status.message()),
    )
}

#[allow(clippy::result_large_err)]
fn check_keys(keys: &[String], limits: &Limits) -> Result<(), Status> {
    for (i, key) in keys.iter().enumerate() {
        check_key(key, limits).map_err(|s| at("keys", i, s))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl KeyValueBasicInterface for KvService {
    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        let limits = call.backend.settings().limits;
        check_key(&req.key, &limits)?;
        check_value(req.value.len(), &limits)?;
        check_ttl(req.ttl_seconds)?;
        call.backend
            .set(call.ns, req.key, req.value, req.ttl_seconds, call.deadline)
            .await?;
        Ok(Response::new(SetResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_key(&req.key, &call.backend.settings().limits)?;
        let value = call.backend.get(call.ns, req.key, call.deadline).await?;
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
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_key(&req.key, &call.backend.settings().limits)?;
        call.backend
            .delete(&call.ns, &req.key, call.deadline)
            .await?;
        Ok(Response::new(DeleteResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn exists(
        &self,
        request: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_key(&req.key, &call.backend.settings().limits)?;
        let exists = call
            .backend
            .exists(&call.ns, &req.key, call.deadline)
            .await?;
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
        let call = self.call(&request)?;
        let req = request.into_inner();
        let limits = call.backend.settings().limits;
        // All or nothing: one bad item rejects the batch before anything is written.
        let mut items = Vec::with_capacity(req.requests.len());
        for (i, set) in req.requests.iter().enumerate() {
            check_key(&set.key, &limits).map_err(|s| at("requests", i, s))?;
            check_value(set.value.len(), &limits).map_err(|s| at("requests", i, s))?;
            check_ttl(set.ttl_seconds).map_err(|s| at("requests", i, s))?;
            items.push(Item {
                key: &set.key,
                value: &set.value,
                ttl_seconds: set.ttl_seconds,
            });
        }
        call.backend
            .batch_set(&call.ns, &items, call.deadline)
            .await?;
        Ok(Response::new(prism_plugin_core::kv::batch_set_ok(
            items.len(),
        )))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_keys(&req.keys, &call.backend.settings().limits)?;
        let values = call
            .backend
            .batch_get(&call.ns, &req.keys, call.deadline)
            .await?;
        Ok(Response::new(prism_plugin_core::kv::batch_get_response(
            values,
        )))
    }

    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_keys(&req.keys, &call.backend.settings().limits)?;
        call.backend
            .batch_delete(&call.ns, &req.keys, call.deadline)
            .await?;
        Ok(Response::new(prism_plugin_core::kv::batch_delete_ok(
            req.keys.len(),
        )))
    }
}

#[tonic::async_trait]
impl KeyValueTtlInterface for KvService {
    async fn expire(
        &self,
        request: Request<ExpireRequest>,
    ) -> Result<Response<ExpireResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_key(&req.key, &call.backend.settings().limits)?;
        check_ttl(req.ttl_seconds)?;
        let key_existed = call
            .backend
            .expire(&call.ns, &req.key, req.ttl_seconds, call.deadline)
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
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_key(&req.key, &call.backend.settings().limits)?;
        let ttl_seconds = call.backend.ttl(&call.ns, &req.key, call.deadline).await?;
        Ok(Response::new(GetTtlResponse {
            ttl_seconds,
            error: String::new(),
        }))
    }

    async fn persist(
        &self,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        check_key(&req.key, &call.backend.settings().limits)?;
        let expiration_removed = call
            .backend
            .persist(&call.ns, &req.key, call.deadline)
            .await?;
        Ok(Response::new(PersistResponse {
            success: true,
            error: String::new(),
            expiration_removed,
        }))
    }
}

#[tonic::async_trait]
impl KeyValueScanInterface for KvService {
    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let call = self.call(&request)?;
        let req = request.into_inner();
        let settings = call.backend.settings();
        if req.prefix.len() > settings.limits.max_key_bytes || req.prefix.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "prefix must be at most {} bytes (backend.max_key_bytes) without U+0000",
                settings.limits.max_key_bytes
            )));
        }
        let limit = match u32::try_from(req.limit) {
            Ok(0) => DEFAULT_SCAN_LIMIT.min(settings.scan_max_limit),
            Ok(n) => n.min(settings.scan_max_limit),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "limit must not be negative (got {})",
                    req.limit
                )));
            }
        };
        let after = decode_cursor(&req.cursor, &req.prefix)?;
        let page = call
            .backend
            .scan(
                &call.ns,
                &req.prefix,
                after.as_deref(),
                limit,
                req.keys_only,
                call.deadline,
            )
            .await?;
        let next_cursor = match page.items.last() {
            Some((key, _)) if page.has_more => encode_cursor(key),
            _ => String::new(),
        };
        let items = page
            .items
            .into_iter()
            .map(|(key, value)| ScanItem { key, value })
            .collect();
        Ok(Response::new(ScanResponse {
            items,
            next_cursor,
            has_more: page.has_more,
            error: String::new(),
        }))
    }
}

/// A cursor is the last key returned, versioned and base64url-encoded. It
/// holds a position, not a snapshot: the next page starts strictly after
/// that key, whatever was inserted or deleted in between.
fn encode_cursor(last_key: &str) -> String {
    let mut raw = Vec::with_capacity(1 + last_key.len());
    raw.push(CURSOR_VERSION);
    raw.extend_from_slice(last_key.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// The key a cursor continues after; `None` for "" (from the start).
#[allow(clippy::result_large_err)]
fn decode_cursor(cursor: &str, prefix: &str) -> Result<Option<String>, Status> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Status::invalid_argument(
            "cursor was not issued by this plugin for this prefix; pass next_cursor unchanged",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let (version, key) = raw.split_first().ok_or_else(invalid)?;
    if *version != CURSOR_VERSION {
        return Err(invalid());
    }
    let key = String::from_utf8(key.to_vec()).map_err(|_| invalid())?;
    if key.is_empty() || key.contains('\0') || !key.starts_with(prefix) {
        return Err(invalid());
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_prefix() {
        let cursor = encode_cursor("user/ü%_\\");
        assert_eq!(
            decode_cursor(&cursor, "user/").ok().flatten().as_deref(),
            Some("user/ü%_\\")
        );
        assert_eq!(decode_cursor("", "x").ok(), Some(None));
        for (bad, prefix) in [(cursor.as_str(), "other/"), ("!!", ""), ("AA", "")] {
            let err = decode_cursor(bad, prefix).expect_err("rejected");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
    }
}
