//! Request validation shared by the KeyValue plugins (PostgreSQL, Redis), so
//! both answer bad input with the same gRPC status and wording.

use tonic::Status;

/// Limits a KeyValue plugin enforces on every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest key in bytes.
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    pub max_value_bytes: usize,
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
    limits: &Limits,
) -> Result<(), Status> {
    for (i, key) in keys.into_iter().enumerate() {
        check_key(key, limits)
            .map_err(|s| Status::invalid_argument(format!("keys[{i}]: {}", s.message())))?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
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
    }
}
