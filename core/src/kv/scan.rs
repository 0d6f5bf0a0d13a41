//! `KeyValueScanInterface` over any [`ScanStore`]: core reads the request
//! (preamble, prefix rule, page size: 0 = the default, clamped to the
//! store's maximum) and builds the reply; the store reads one page and owns
//! its cursor format (a key for PostgreSQL, a node and a Redis cursor for
//! Redis), which stays opaque to clients.
//!
//! What a page guarantees differs by backend: each store says which
//! ([`ScanStore::ORDERED`]) and `kv_plugin` declares it in the interface
//! metadata as `ordered=true` (byte order, every key present for the whole
//! scan exactly once) or `ordered=false` (no order; every key present for
//! the whole scan at least once, never twice within one page).

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::Rules;
use super::rpc::KvService;
use crate::Scope;
use crate::proto::keyvalue::key_value_scan_interface_server::KeyValueScanInterface;
use crate::proto::keyvalue::{ScanItem, ScanRequest, ScanResponse};

/// Page size when a Scan asks for none.
pub const DEFAULT_SCAN_LIMIT: u32 = 100;
/// Largest page a store serves unless it says otherwise.
pub const DEFAULT_SCAN_MAX_LIMIT: u32 = 1000;

/// One validated page request.
#[derive(Debug, Clone)]
pub struct ScanQuery {
    /// Only keys starting with this ("" = every key of the namespace); every
    /// character is literal.
    pub prefix: String,
    /// The client's cursor ("" = from the start), not yet decoded.
    pub cursor: String,
    /// At most this many items (at least 1).
    pub limit: u32,
    /// Keys without values.
    pub keys_only: bool,
}

/// One page as a store returns it.
#[derive(Debug, Default)]
pub struct ScanPage {
    /// Keys with their values (empty when keys only).
    pub items: Vec<(String, Bytes)>,
    /// Where the next page starts; "" when the scan is done.
    pub next_cursor: String,
}

/// A KV backend that can list a namespace's keys by prefix, page by page.
#[tonic::async_trait]
pub trait ScanStore: Rules + Send + Sync + 'static {
    /// True when pages come in byte order with every key present for the
    /// whole scan exactly once; false when in no order, every such key at
    /// least once and never twice within one page. Declared to clients as
    /// the interface's `ordered` metadata.
    const ORDERED: bool;

    /// Largest page; larger limits are clamped to it.
    fn scan_max_limit(&self) -> u32 {
        DEFAULT_SCAN_MAX_LIMIT
    }

    /// Checks a prefix: by default at most `max_key_bytes` (it may be empty).
    #[allow(clippy::result_large_err)]
    fn check_prefix(&self, prefix: &str) -> Result<(), Status> {
        let max = self.limits().max_key_bytes;
        if prefix.len() > max {
            return Err(Status::invalid_argument(format!(
                "prefix is {} bytes; the limit is {max} (backend.max_key_bytes)",
                prefix.len()
            )));
        }
        Ok(())
    }

    /// One page of `query`; a cursor this store did not issue for this
    /// prefix is [`invalid_cursor`].
    async fn scan(&self, scope: Scope, query: ScanQuery) -> Result<ScanPage, Status>;
}

/// The status of a cursor that cannot be continued: `INVALID_ARGUMENT`.
pub fn invalid_cursor() -> Status {
    Status::invalid_argument(
        "cursor was not issued by this plugin for this prefix; pass next_cursor unchanged",
    )
}

/// The page size to use for a request's `limit`: 0 = the default, clamped
/// to `max`; negative → `INVALID_ARGUMENT`.
#[allow(clippy::result_large_err)]
pub fn page_limit(limit: i32, max: u32) -> Result<u32, Status> {
    match u32::try_from(limit) {
        Ok(0) => Ok(DEFAULT_SCAN_LIMIT.min(max).max(1)),
        Ok(n) => Ok(n.min(max).max(1)),
        Err(_) => Err(Status::invalid_argument(format!(
            "limit must not be negative (got {limit})"
        ))),
    }
}

/// A page request as the store receives it: prefix checked, page size set.
#[allow(clippy::result_large_err)]
fn query(req: ScanRequest, store: &impl ScanStore) -> Result<ScanQuery, Status> {
    store.check_prefix(&req.prefix)?;
    Ok(ScanQuery {
        limit: page_limit(req.limit, store.scan_max_limit())?,
        prefix: req.prefix,
        cursor: req.cursor,
        keys_only: req.keys_only,
    })
}

/// The reply carrying `page` (`has_more` while there is a next cursor).
fn scan_response(page: ScanPage) -> ScanResponse {
    let items = page
        .items
        .into_iter()
        .map(|(key, value)| ScanItem { key, value })
        .collect();
    ScanResponse {
        items,
        has_more: !page.next_cursor.is_empty(),
        next_cursor: page.next_cursor,
        error: String::new(),
    }
}

#[tonic::async_trait]
impl<S: ScanStore> KeyValueScanInterface for KvService<S> {
    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let run = async |store: &S, scope, query| store.scan(scope, query).await;
        self.rpc(request, query, run, scan_response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits_default_clamp_and_refuse_negatives() {
        assert_eq!(page_limit(0, 1000).ok(), Some(DEFAULT_SCAN_LIMIT));
        assert_eq!(page_limit(0, 10).ok(), Some(10));
        assert_eq!(page_limit(7, 1000).ok(), Some(7));
        assert_eq!(page_limit(5000, 1000).ok(), Some(1000));
        assert_eq!(
            page_limit(-1, 1000).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
