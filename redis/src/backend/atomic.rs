//! CompareAndSwap and Increment as Lua scripts: each runs atomically on the
//! server (Redis runs a script to completion before any other command),
//! touches exactly one key (so it is cluster-safe: the script goes to the
//! key's node) and uses the namespaced key like every other command.
//!
//! A script is sent by its SHA-1 (`EVALSHA`); when the server does not know
//! it yet (first use, restart, `SCRIPT FLUSH`, failover) the reply is
//! `NOSCRIPT`, and the script is loaded (`SCRIPT LOAD`, on every primary of
//! a cluster) and the call repeated once.

use std::sync::LazyLock;

use bytes::Bytes;
use prism_plugin_core::kv::{Counted, Counter, Expect, Swap, Swapped, Write};
use redis::{ErrorKind, ServerErrorKind, Value};
use sha1::{Digest, Sha1};

use super::Backend;
use crate::error::Error;

/// `KEYS[1]` the key; `ARGV`: `absent` or `value`, the expected value,
/// `delete` or `write`, the new value, its TTL in seconds (`0` = none).
/// Returns `{1}` when swapped, `{0}` or `{0, current}` when not.
pub const SWAP_SCRIPT_SOURCE: &str = r"
local cur = redis.call('GET', KEYS[1])
local hit
if ARGV[1] == 'absent' then hit = (cur == false) else hit = (cur == ARGV[2]) end
if not hit then
  if cur == false then return {0} end
  return {0, cur}
end
if ARGV[3] == 'delete' then
  redis.call('UNLINK', KEYS[1])
elseif ARGV[5] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return {1}
";

/// `KEYS[1]` the key; `ARGV`: the delta, the TTL when this call creates the
/// key (`0` = none). Returns `{1, value}` (the value as stored, decimal
/// text: a Lua number would round counters above 2^53), or `{0, reason}`
/// when `INCRBY` refuses (not an integer, overflow, not a string); any
/// other error (e.g. OOM) is raised as it came.
pub const INCREMENT_SCRIPT_SOURCE: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
local r = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(r) == 'table' and r.err then
  if string.find(r.err, 'not an integer', 1, true) or string.find(r.err, 'overflow', 1, true)
     or string.find(r.err, 'WRONGTYPE', 1, true) then
    return {0, r.err}
  end
  return redis.error_reply(r.err)
end
if existed == 0 and ARGV[2] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {1, redis.call('GET', KEYS[1])}
";

/// A script and its SHA-1 (hex), computed once.
struct Script {
    code: &'static str,
    sha: String,
}

impl Script {
    fn new(code: &'static str) -> Self {
        let digest = Sha1::digest(code.as_bytes());
        let sha = digest.iter().map(|b| format!("{b:02x}")).collect();
        Script { code, sha }
    }
}

static SWAP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SWAP_SCRIPT_SOURCE));
static INCREMENT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INCREMENT_SCRIPT_SOURCE));

impl Backend {
    /// Runs `script` on `key` with `args`: `EVALSHA`, and on `NOSCRIPT`
    /// `SCRIPT LOAD` plus one more `EVALSHA`, all under the operation bound.
    async fn eval(&self, script: &Script, key: Vec<u8>, args: &[&[u8]]) -> Result<Value, Error> {
        let mut call = redis::cmd("EVALSHA");
        call.arg(&script.sha).arg(1).arg(key);
        for arg in args {
            call.arg(*arg);
        }
        let mut conn = self.connection();
        self.bounded(async {
            match call.query_async::<Value>(&mut conn).await {
                Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(script.code)
                        .query_async::<Value>(&mut conn)
                        .await?;
                    call.query_async::<Value>(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    /// Compare-and-swap on the namespaced key, in one script.
    pub(crate) async fn compare_and_swap(
        &self,
        namespace: &str,
        swap: &Swap,
    ) -> Result<Swapped, Error> {
        let (mode, expected): (&[u8], &[u8]) = match &swap.expect {
            Expect::Absent => (b"absent", b""),
            Expect::Value(expected) => (b"value", expected),
        };
        let ttl;
        let (action, value, ttl): (&[u8], &[u8], &[u8]) = match &swap.write {
            Write::Delete => (b"delete", b"", b"0"),
            Write::Value { value, ttl_seconds } => {
                ttl = ttl_seconds.to_string();
                (b"write", value, ttl.as_bytes())
            }
        };
        let key = self.redis_key(namespace, &swap.key);
        let args = [mode, expected, action, value, ttl];
        let reply = self.eval(&SWAP_SCRIPT, key, &args).await?;
        match as_items(reply).as_deref() {
            Some([Value::Int(1)]) => Ok(Swapped::Yes),
            Some([Value::Int(0)]) => Ok(Swapped::No(None)),
            Some([Value::Int(0), Value::BulkString(current)]) => {
                Ok(Swapped::No(Some(Bytes::copy_from_slice(current))))
            }
            other => Err(self.unexpected("the compare-and-swap script", other)),
        }
    }

    /// `INCRBY` on the namespaced key with the TTL on create, in one script.
    pub(crate) async fn increment(
        &self,
        namespace: &str,
        counter: &Counter,
    ) -> Result<Counted, Error> {
        let key = self.redis_key(namespace, &counter.key);
        let delta = counter.delta.to_string();
        let ttl = counter.ttl_seconds.to_string();
        let args = [delta.as_bytes(), ttl.as_bytes()];
        let reply = self.eval(&INCREMENT_SCRIPT, key, &args).await?;
        match as_items(reply).as_deref() {
            Some([Value::Int(1), Value::BulkString(text)]) => std::str::from_utf8(text)
                .ok()
                .and_then(|text| text.parse().ok())
                .map(Counted::Value)
                .ok_or_else(|| self.unexpected("the increment script", None)),
            Some([Value::Int(0), _]) => Ok(Counted::Refused),
            other => Err(self.unexpected("the increment script", other)),
        }
    }

    fn unexpected(&self, what: &str, reply: Option<&[Value]>) -> Error {
        Error::Protocol {
            address: self.address.clone(),
            problem: format!("{what} answered {reply:?}"),
        }
    }
}

/// The items of an array reply.
fn as_items(reply: Value) -> Option<Vec<Value>> {
    match reply {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_shas_are_the_sha1_redis_computes() {
        // `redis-cli SCRIPT LOAD "return 1"` answers this SHA.
        assert_eq!(
            Script::new("return 1").sha,
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        assert_eq!(SWAP_SCRIPT.sha.len(), 40);
        assert_ne!(SWAP_SCRIPT.sha, INCREMENT_SCRIPT.sha);
    }
}
