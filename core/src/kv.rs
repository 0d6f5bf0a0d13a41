//! Request validation and replies shared by the KeyValue plugins (PostgreSQL,
//! Redis), so both answer bad input with the same gRPC status and wording and
//! build their replies the same way (in-band `error` always empty: failures
//! are gRPC statuses). [`KvService`] serves the KeyValue interfaces over
//! any [`Store`] with these; [`ScanService`] and [`AtomicService`] serve the
//! optional Scan and atomic capabilities of a store that has them
//! ([`ScanStore`], [`AtomicStore`]).

mod atomic;
mod rpc;
mod scan;
mod service;

use tonic::Status;

use crate::proto::keyvalue::{
    BatchDeleteResponse, BatchGetResponse, BatchSetResponse, DeleteResponse, ExistsResponse,
    ExpireResponse, GetResponse, GetTtlResponse, PersistResponse, SetRequest, SetResponse,
};

pub use atomic::{
    AtomicStore, Counted, Counter, Expect, Swap, Swapped, Write, check_increment, check_swap,
    not_a_counter, swap_response,
};
pub use rpc::{AtomicService, KvService, ScanService};
pub use scan::{
    DEFAULT_SCAN_LIMIT, DEFAULT_SCAN_MAX_LIMIT, ScanPage, ScanQuery, ScanStore, invalid_cursor,
    page_limit,
};
pub use service::{Entry, Item, Store};

/// Limits a KeyValue plugin enforces on every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest key in bytes.
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    pub max_value_bytes: usize,
}

/// The rules a KV plugin checks requests against: core's [`Limits`], plus
/// whatever its backend cannot store in a key (PostgreSQL `text` cannot hold
/// U+0000). [`Limits`] alone is core's rules.
pub trait Rules {
    /// The size limits.
    fn limits(&self) -> &Limits;

    /// Checks one key; the default is core's [`check_key`]. A backend with
    /// stricter keys calls that first, so the size errors read the same.
    #[allow(clippy::result_large_err)]
    fn check_key(&self, key: &str) -> Result<(), Status> {
        check_key(key, self.limits())
    }
}

impl Rules for Limits {
    fn limits(&self) -> &Limits {
        self
    }
}

/// Empty key or key over the limit → `INVALID_ARGUMENT`.
#[allow(clippy::result_large_err)]
pub fn check_key(key: &str, limits: &Limits) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("key must not be empty"));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Status::invalid_argument(format!(
            "key is {} bytes; the limit is {} (backend.max_key_bytes)",
            key.len(),
            limits.max_key_bytes
        )));
    }
    Ok(())
}

/// Every key of a batch, naming the position of the first bad one.
#[allow(clippy::result_large_err)]
pub fn check_keys<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    rules: &impl Rules,
) -> Result<(), Status> {
    for (i, key) in keys.into_iter().enumerate() {
        rules.check_key(key).map_err(|s| at("keys", i, s))?;
    }
    Ok(())
}

/// Prefixes an error with the position of the batch item at fault
/// (`keys[3]: ...`), keeping its code.
fn at(field: &str, index: usize, status: Status) -> Status {
    Status::new(
        status.code(),
        format!("{field}[{index}]: {}", status.message()),
    )
}

/// Value over the limit → `RESOURCE_EXHAUSTED` (an empty value is valid).
#[allow(clippy::result_large_err)]
pub fn check_value(len: usize, limits: &Limits) -> Result<(), Status> {
    if len > limits.max_value_bytes {
        return Err(Status::resource_exhausted(format!(
            "value is {len} bytes; the limit is {} (backend.max_value_bytes)",
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// Negative TTL → `INVALID_ARGUMENT`; TTLs beyond ~100 years are refused too
/// (they overflow timestamp arithmetic in backends).
#[allow(clippy::result_large_err)]
pub fn check_ttl(ttl_seconds: i64) -> Result<(), Status> {
    const MAX_TTL: i64 = 100 * 365 * 24 * 3600;
    if ttl_seconds < 0 {
        return Err(Status::invalid_argument(format!(
            "ttl_seconds must not be negative (got {ttl_seconds})"
        )));
    }
    if ttl_seconds > MAX_TTL {
        return Err(Status::invalid_argument(format!(
            "ttl_seconds {ttl_seconds} is over the maximum of {MAX_TTL}"
        )));
    }
    Ok(())
}

/// A checked TTL in seconds (0 = no expiry): [`check_ttl`] refuses
/// negatives, so the conversion is exact.
#[allow(clippy::result_large_err)]
pub fn ttl(ttl_seconds: i64) -> Result<u64, Status> {
    check_ttl(ttl_seconds)?;
    Ok(ttl_seconds.unsigned_abs())
}

/// Validates one Set (key, value size, TTL, in that order); `Ok` carries the
/// TTL in seconds (0 = no expiry).
#[allow(clippy::result_large_err)]
pub fn check_set(request: &SetRequest, rules: &impl Rules) -> Result<u64, Status> {
    rules.check_key(&request.key)?;
    check_value(request.value.len(), rules.limits())?;
    ttl(request.ttl_seconds)
}

/// Validates every Set of a batch before anything is written; an error names
/// the position (`requests[i]: ...`) and fails the whole batch. `Ok` carries
/// each item's TTL in seconds, in request order.
#[allow(clippy::result_large_err)]
pub fn check_batch_set(requests: &[SetRequest], rules: &impl Rules) -> Result<Vec<u64>, Status> {
    requests
        .iter()
        .enumerate()
        .map(|(i, request)| check_set(request, rules).map_err(|s| at("requests", i, s)))
        .collect()
}

/// The reply to a successful Set (in-band `error` empty).
pub fn set_ok() -> SetResponse {
    SetResponse {
        success: true,
        error: String::new(),
    }
}

/// The reply to a Get: `found=false` with an empty `error` for a missing key.
pub fn get_response(value: Option<bytes::Bytes>) -> GetResponse {
    GetResponse {
        found: value.is_some(),
        value: value.unwrap_or_default(),
        error: String::new(),
    }
}

/// The reply to a Delete (deleting a missing key succeeds too).
pub fn delete_ok() -> DeleteResponse {
    DeleteResponse {
        success: true,
        error: String::new(),
    }
}

/// The reply to an Exists.
pub fn exists_response(exists: bool) -> ExistsResponse {
    ExistsResponse {
        exists,
        error: String::new(),
    }
}

/// The reply to an Expire; `key_existed` false when there was nothing to expire.
pub fn expire_response(key_existed: bool) -> ExpireResponse {
    ExpireResponse {
        success: true,
        error: String::new(),
        key_existed,
    }
}

/// The reply to a GetTTL (-1 no expiry, -2 no such key).
pub fn ttl_response(ttl_seconds: i64) -> GetTtlResponse {
    GetTtlResponse {
        ttl_seconds,
        error: String::new(),
    }
}

/// The reply to a Persist; `expiration_removed` false when the key had none.
pub fn persist_response(expiration_removed: bool) -> PersistResponse {
    PersistResponse {
        success: true,
        error: String::new(),
        expiration_removed,
    }
}

/// BatchGet reply in request order, with `found_count`.
pub fn batch_get_response(values: Vec<Option<bytes::Bytes>>) -> BatchGetResponse {
    let found_count = values.iter().filter(|v| v.is_some()).count() as i32;
    BatchGetResponse {
        results: values.into_iter().map(get_response).collect(),
        found_count,
    }
}

/// BatchSet reply after all `n` items were written.
pub fn batch_set_ok(n: usize) -> BatchSetResponse {
    BatchSetResponse {
        results: (0..n).map(|_| set_ok()).collect(),
        all_success: true,
    }
}

/// BatchDelete reply after all `n` keys were deleted (missing keys count as
/// deleted, as a single Delete of a missing key succeeds).
pub fn batch_delete_ok(n: usize) -> BatchDeleteResponse {
    BatchDeleteResponse {
        results: (0..n).map(|_| delete_ok()).collect(),
        all_success: true,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Small limits, for the unit tests of every KV module.
    pub(crate) const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 4,
    };

    #[test]
    fn keys_values_and_ttls_map_to_the_right_codes() {
        assert_eq!(
            check_key("", &LIMITS).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            check_key("123456789", &LIMITS).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(check_key("12345678", &LIMITS).is_ok());
        assert!(check_value(0, &LIMITS).is_ok());
        assert_eq!(
            check_value(5, &LIMITS).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            check_ttl(-1).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(check_ttl(0).is_ok());
        let err = check_keys(["a", ""], &LIMITS).unwrap_err();
        assert!(err.message().starts_with("keys[1]"), "{}", err.message());
        let batch = [
            SetRequest {
                key: "a".into(),
                ..Default::default()
            },
            SetRequest {
                key: "b".into(),
                ttl_seconds: -5,
                ..Default::default()
            },
        ];
        let err = check_batch_set(&batch, &LIMITS).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("requests[1]"),
            "{}",
            err.message()
        );
    }

    /// Core's rules plus a backend's own, as PostgreSQL adds U+0000.
    struct NoDots(Limits);

    impl Rules for NoDots {
        fn limits(&self) -> &Limits {
            &self.0
        }

        fn check_key(&self, key: &str) -> Result<(), Status> {
            check_key(key, &self.0)?;
            match key.contains('.') {
                true => Err(Status::invalid_argument("no dots")),
                false => Ok(()),
            }
        }
    }

    #[test]
    fn a_backend_rule_applies_after_the_size_checks_and_names_the_position() {
        let rules = NoDots(LIMITS);
        let set = |key: &str, ttl_seconds| SetRequest {
            key: key.into(),
            ttl_seconds,
            ..Default::default()
        };
        assert_eq!(check_set(&set("a", 7), &rules).ok(), Some(7));
        let err = check_set(&set("a.b", 0), &rules).unwrap_err();
        assert_eq!(err.message(), "no dots");
        let err = check_set(&set("123456789.", 0), &rules).unwrap_err();
        assert!(
            err.message().contains("the limit is 8"),
            "{}",
            err.message()
        );
        assert_eq!(
            check_batch_set(&[set("a", 1), set("b", 0)], &rules).ok(),
            Some(vec![1, 0])
        );
        let err = check_batch_set(&[set("a", 1), set("b.", 0)], &rules).unwrap_err();
        assert_eq!(err.message(), "requests[1]: no dots");
        let err = check_keys(["a", "b", "."], &rules).unwrap_err();
        assert_eq!(err.message(), "keys[2]: no dots");
    }

    #[test]
    fn batch_replies_keep_order_and_count() {
        let reply = batch_get_response(vec![Some("x".into()), None, Some(bytes::Bytes::new())]);
        assert_eq!(reply.found_count, 2);
        assert_eq!(
            reply.results.iter().map(|r| r.found).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert!(reply.results.iter().all(|r| r.error.is_empty()));
        assert_eq!(batch_delete_ok(3).results.len(), 3);
        assert!(batch_set_ok(2).all_success);
    }
}
