//! `KeyValueAtomicInterface` (compare-and-swap and counters) over any
//! [`AtomicStore`]: the optional atomic capability of a KV backend. Core does
//! the preamble, the validation (core's key, value and TTL rules) and the
//! replies, and maps a refused counter to `FAILED_PRECONDITION` with one
//! wording, so every plugin answers alike; the store only makes each call
//! atomic on its backend (one statement, one script).

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::rpc::KvService;
use super::{Rules, check_value, ttl};
use crate::Scope;
use crate::proto::keyvalue::key_value_atomic_interface_server::KeyValueAtomicInterface;
use crate::proto::keyvalue::{
    CompareAndSwapRequest, CompareAndSwapResponse, IncrementRequest, IncrementResponse,
};

/// What a compare-and-swap requires of the key's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A live value equal to this one, byte for byte.
    Value(Bytes),
    /// No live value (missing or expired).
    Absent,
}

/// What a compare-and-swap does when its expectation holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Stores `value` (expiring after `ttl_seconds`; 0 = never), as Set does.
    Value {
        /// The new value (may be empty).
        value: Bytes,
        /// Seconds until expiry; 0 = never.
        ttl_seconds: u64,
    },
    /// Deletes the key.
    Delete,
}

/// One validated CompareAndSwap.
#[derive(Debug, Clone)]
pub struct Swap {
    /// The key.
    pub key: String,
    /// The condition.
    pub expect: Expect,
    /// The write done when the condition holds.
    pub write: Write,
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swapped {
    /// The expectation held and the write was done.
    Yes,
    /// It did not: the live value found instead (`None`: no live value).
    No(Option<Bytes>),
}

/// One validated Increment.
#[derive(Debug, Clone)]
pub struct Counter {
    /// The key.
    pub key: String,
    /// Added to the counter (negative to decrement).
    pub delta: i64,
    /// Seconds until expiry when this call creates the key; 0 = never.
    pub ttl_seconds: u64,
}

/// The outcome of an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// The counter after the increment.
    Value(i64),
    /// The live value is not a 64-bit decimal integer, or adding the delta
    /// would overflow one; nothing was changed.
    Refused,
}

/// A KV backend's atomic operations, served by [`AtomicService`]. Each call
/// must be atomic against every other call on the same key (concurrent
/// increments lose no update; of concurrent swaps from one expected value
/// exactly one succeeds), honour the namespace of its [`Scope`] and treat
/// an expired key as absent, as Get does. A counter is stored as decimal
/// ASCII text (what Get returns), a missing key counting as 0.
#[tonic::async_trait]
pub trait AtomicStore: Rules + Send + Sync + 'static {
    /// Does `swap.write` if and only if `swap.expect` holds, atomically.
    async fn compare_and_swap(&self, scope: Scope, swap: Swap) -> Result<Swapped, Status>;

    /// Adds `counter.delta` to the counter under `counter.key`, atomically.
    async fn increment(&self, scope: Scope, counter: Counter) -> Result<Counted, Status>;
}

/// Validates a CompareAndSwap with the store's rules: key, then the sizes of
/// `expected` and `value`, then the TTL.
#[allow(clippy::result_large_err)]
pub fn check_swap(request: CompareAndSwapRequest, rules: &impl Rules) -> Result<Swap, Status> {
    rules.check_key(&request.key)?;
    let expect = if request.expect_absent {
        Expect::Absent
    } else {
        check_value(request.expected.len(), rules.limits())
            .map_err(|s| Status::new(s.code(), format!("expected: {}", s.message())))?;
        Expect::Value(request.expected)
    };
    let write = if request.delete {
        Write::Delete
    } else {
        check_value(request.value.len(), rules.limits())?;
        Write::Value {
            value: request.value,
            ttl_seconds: ttl(request.ttl_seconds)?,
        }
    };
    Ok(Swap {
        key: request.key,
        expect,
        write,
    })
}

/// Validates an Increment with the store's rules (key, TTL).
#[allow(clippy::result_large_err)]
pub fn check_increment(request: IncrementRequest, rules: &impl Rules) -> Result<Counter, Status> {
    rules.check_key(&request.key)?;
    Ok(Counter {
        ttl_seconds: ttl(request.ttl_seconds)?,
        key: request.key,
        delta: request.delta,
    })
}

/// The reply to a compare-and-swap (in-band `error` empty).
pub fn swap_response(outcome: Swapped) -> CompareAndSwapResponse {
    let (swapped, current) = match outcome {
        Swapped::Yes => (true, None),
        Swapped::No(current) => (false, current),
    };
    CompareAndSwapResponse {
        swapped,
        error: String::new(),
        current_found: current.is_some(),
        current: current.unwrap_or_default(),
    }
}

/// The status of a refused increment: `FAILED_PRECONDITION`, naming the key.
pub fn not_a_counter(key: &str, delta: i64) -> Status {
    Status::failed_precondition(format!(
        "the value of key {key:?} is not a 64-bit decimal integer, or adding {delta} would \
         overflow one; nothing was changed"
    ))
}

#[tonic::async_trait]
impl<S: AtomicStore> KeyValueAtomicInterface for KvService<S> {
    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let run = async |store: &S, scope, swap| store.compare_and_swap(scope, swap).await;
        self.rpc(request, check_swap, run, swap_response).await
    }

    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        let run = async |store: &S, scope, counter: Counter| {
            let (key, delta) = (counter.key.clone(), counter.delta);
            match store.increment(scope, counter).await? {
                Counted::Value(value) => Ok(value),
                Counted::Refused => Err(not_a_counter(&key, delta)),
            }
        };
        let reply = |value| IncrementResponse {
            value,
            error: String::new(),
        };
        self.rpc(request, check_increment, run, reply).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::tests::LIMITS;

    #[test]
    fn swaps_are_validated_in_order_and_ignore_what_they_do_not_use() {
        let swap = |expected: &str, absent: bool, value: &str, ttl: i64, delete: bool| {
            CompareAndSwapRequest {
                key: "k".into(),
                expected: Bytes::copy_from_slice(expected.as_bytes()),
                expect_absent: absent,
                value: Bytes::copy_from_slice(value.as_bytes()),
                ttl_seconds: ttl,
                delete,
            }
        };
        let ok = check_swap(swap("a", false, "b", 5, false), &LIMITS).expect("valid");
        assert_eq!(ok.expect, Expect::Value("a".into()));
        assert_eq!(
            ok.write,
            Write::Value {
                value: "b".into(),
                ttl_seconds: 5
            }
        );
        // `expected` is ignored with expect_absent, `value` and the TTL with delete.
        let ok = check_swap(swap("too long", true, "too long", -1, true), &LIMITS);
        let ok = ok.expect("valid");
        assert_eq!((ok.expect, ok.write), (Expect::Absent, Write::Delete));
        let err = check_swap(swap("too long", false, "", 0, false), &LIMITS).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().starts_with("expected: "), "{}", err.message());
        let err = check_swap(swap("", false, "", -1, false), &LIMITS).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let mut empty_key = swap("", false, "", 0, false);
        empty_key.key.clear();
        assert_eq!(
            check_swap(empty_key, &LIMITS).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn replies_carry_the_current_value_only_when_not_swapped() {
        let yes = swap_response(Swapped::Yes);
        assert!(yes.swapped && !yes.current_found && yes.current.is_empty());
        let no = swap_response(Swapped::No(Some(Bytes::new())));
        assert!(!no.swapped && no.current_found);
        let none = swap_response(Swapped::No(None));
        assert!(!none.swapped && !none.current_found);
        let counter = IncrementRequest {
            key: "c".into(),
            delta: -3,
            ttl_seconds: -1,
        };
        assert_eq!(
            check_increment(counter, &LIMITS).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            not_a_counter("c", 1).code(),
            tonic::Code::FailedPrecondition
        );
    }
}
