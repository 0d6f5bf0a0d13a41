//! The backend as core's KeyValue [`Store`] (core's `KvService` serves the
//! basic, batch and TTL interfaces: preamble, validation, replies) with
//! PostgreSQL's own key rule, and as core's [`ScanStore`] with this plugin's
//! cursor (the last key returned). No SQL here.
//!
//! Failures are gRPC statuses (see `error.rs`); the in-band `error` strings
//! stay empty, on success and on "not found" alike.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use prism_plugin_core::Scope;
use prism_plugin_core::kv::{self, Entry, Limits, Rules, ScanPage, ScanQuery, ScanStore, Store};
use tonic::Status;

use crate::backend::{Backend, Item};

/// First byte of every cursor, so the format can change compatibly.
const CURSOR_VERSION: u8 = 1;

/// Core's KV rules plus PostgreSQL's own: `text` cannot hold U+0000.
impl Rules for Backend {
    fn limits(&self) -> &Limits {
        &self.settings().limits
    }

    fn check_key(&self, key: &str) -> Result<(), Status> {
        kv::check_key(key, self.limits())?;
        if key.contains('\0') {
            return Err(Status::invalid_argument(
                "key must not contain U+0000 (PostgreSQL text cannot store it)",
            ));
        }
        Ok(())
    }
}

/// A TTL checked by core (at most ~100 years), so it fits an `i64`.
fn seconds(ttl_seconds: u64) -> i64 {
    i64::try_from(ttl_seconds).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl Store for Backend {
    fn db_system(&self) -> Option<&'static str> {
        Some("postgresql")
    }

    /// The statement kind each operation runs (upserts are INSERTs).
    fn db_operation(&self, operation: &'static str) -> &'static str {
        match operation {
            "set" | "batch_set" => "INSERT",
            "get" | "batch_get" | "exists" | "ttl" => "SELECT",
            "delete" | "batch_delete" => "DELETE",
            "expire" | "persist" => "UPDATE",
            other => other,
        }
    }

    async fn set(&self, scope: Scope, entry: Entry) -> Result<(), Status> {
        let (key, value, ttl_seconds) = (entry.key, entry.value, seconds(entry.ttl_seconds));
        let set = Backend::set(
            self,
            scope.namespace,
            key,
            value,
            ttl_seconds,
            scope.deadline,
        );
        Ok(set.await?)
    }

    async fn get(&self, scope: Scope, key: String) -> Result<Option<Bytes>, Status> {
        Ok(Backend::get(self, scope.namespace, key, scope.deadline).await?)
    }

    async fn delete(&self, scope: Scope, key: String) -> Result<(), Status> {
        Ok(Backend::delete(self, &scope.namespace, &key, scope.deadline).await?)
    }

    async fn exists(&self, scope: Scope, key: String) -> Result<bool, Status> {
        Ok(Backend::exists(self, &scope.namespace, &key, scope.deadline).await?)
    }

    async fn batch_set(&self, scope: Scope, items: &[kv::Item<'_>]) -> Result<(), Status> {
        let items: Vec<Item<'_>> = items
            .iter()
            .map(|item| Item {
                key: item.key,
                value: item.value,
                ttl_seconds: seconds(item.ttl_seconds),
            })
            .collect();
        Ok(Backend::batch_set(self, &scope.namespace, &items, scope.deadline).await?)
    }

    async fn batch_get(&self, scope: Scope, keys: &[String]) -> Result<Vec<Option<Bytes>>, Status> {
        Ok(Backend::batch_get(self, &scope.namespace, keys, scope.deadline).await?)
    }

    async fn batch_delete(&self, scope: Scope, keys: &[String]) -> Result<(), Status> {
        Ok(Backend::batch_delete(self, &scope.namespace, keys, scope.deadline).await?)
    }

    async fn expire(&self, scope: Scope, key: String, ttl_seconds: u64) -> Result<bool, Status> {
        let ttl_seconds = seconds(ttl_seconds);
        let expire = Backend::expire(self, &scope.namespace, &key, ttl_seconds, scope.deadline);
        Ok(expire.await?)
    }

    async fn ttl(&self, scope: Scope, key: String) -> Result<i64, Status> {
        Ok(Backend::ttl(self, &scope.namespace, &key, scope.deadline).await?)
    }

    async fn persist(&self, scope: Scope, key: String) -> Result<bool, Status> {
        Ok(Backend::persist(self, &scope.namespace, &key, scope.deadline).await?)
    }
}

/// Scan for core's `ScanService`: pages in byte order (declared as
/// `ordered=true`), the cursor being the last key returned.
#[tonic::async_trait]
impl ScanStore for Backend {
    /// Pages in byte order; every key present for the whole scan exactly once.
    const ORDERED: bool = true;

    fn scan_max_limit(&self) -> u32 {
        self.settings().scan_max_limit
    }

    fn check_prefix(&self, prefix: &str) -> Result<(), Status> {
        let max = self.limits().max_key_bytes;
        if prefix.len() > max || prefix.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "prefix must be at most {max} bytes (backend.max_key_bytes) without U+0000"
            )));
        }
        Ok(())
    }

    async fn scan(&self, scope: Scope, query: ScanQuery) -> Result<ScanPage, Status> {
        let after = decode_cursor(&query.cursor, &query.prefix)?;
        let scan = Backend::scan(
            self,
            &scope.namespace,
            &query.prefix,
            after.as_deref(),
            query.limit,
            query.keys_only,
            scope.deadline,
        );
        let span = prism_plugin_core::otel::db_span("postgresql", "SELECT");
        let page = prism_plugin_core::otel::traced(span, scan).await?;
        let next_cursor = match page.items.last() {
            Some((key, _)) if page.has_more => encode_cursor(key),
            _ => String::new(),
        };
        Ok(ScanPage {
            items: page.items,
            next_cursor,
        })
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
    let invalid = kv::invalid_cursor;
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
