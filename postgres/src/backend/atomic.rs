//! CompareAndSwap and Increment: one statement each (see
//! `schema/atomic.rs` for why each is atomic), on a connection of its own,
//! bounded by the call's deadline like every other statement.
//!
//! Why calls on one key also queue in the plugin ([`KeyLocks`]): the
//! statements alone are atomic, but N of them on one hot key (a counter)
//! hold N connections that wait on one row lock, and PostgreSQL hands that
//! lock from process to process (measured on 2 cores: 64 clients × 500
//! Increments of one key, 16 connections, 250/s). Queued here, one
//! statement per key runs at a time and the others keep their connections
//! free. Other plugin replicas still meet at the row lock, which keeps it
//! correct; the queue only saves the convoy within one process.

use std::hash::BuildHasher;

use bytes::Bytes;
use prism_plugin_core::deadline::Deadline;
use prism_plugin_core::kv::{Counted, Counter, Expect, Swap, Swapped, Write};

use super::Backend;
use crate::error::Error;

/// Rounds of a swap from "absent" that lost to an insert its snapshot
/// could not see (see [`Backend::compare_and_swap`]).
const ABSENT_ROUNDS: usize = 3;

/// A TTL checked by core (at most ~100 years), as the `int8` bound.
fn seconds(ttl_seconds: u64) -> i64 {
    i64::try_from(ttl_seconds).unwrap_or(i64::MAX)
}

/// Striped locks over (namespace, key): an atomic call holds its stripe
/// while its statement runs.
pub(crate) struct KeyLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Stripes: enough that unrelated hot keys rarely share one.
const STRIPES: usize = 256;

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks {
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }
}

impl KeyLocks {
    fn stripe(&self, ns: &str, key: &str) -> &tokio::sync::Mutex<()> {
        let hash = self.hasher.hash_one((ns, key));
        let i = usize::try_from(hash % STRIPES as u64).unwrap_or(0);
        &self.stripes[i]
    }
}

impl Backend {
    /// Waits for the stripe of `key` (see [`KeyLocks`]), no longer than the deadline.
    async fn lock_key(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, Error> {
        let lock = self.key_locks.stripe(ns, key).lock();
        prism_plugin_core::within(deadline, lock)
            .await
            .ok_or_else(|| Error::Deadline {
                target: self.target.clone(),
                what: "waiting for another call on the same key",
            })
    }

    /// Does `swap.write` when `swap.expect` holds on the live row of `key`.
    ///
    /// A swap from "absent" that loses to a concurrent insert committed
    /// after its statement began cannot read that row in the same statement
    /// (it is not in the snapshot): then the current value is read by a
    /// second statement, and should the key be gone again by then, the swap
    /// is simply tried again.
    pub(crate) async fn compare_and_swap(
        &self,
        ns: &str,
        swap: &Swap,
        deadline: Deadline,
    ) -> Result<Swapped, Error> {
        let _key = self.lock_key(ns, &swap.key, deadline).await?;
        match (&swap.expect, &swap.write) {
            (Expect::Value(expected), write) => {
                self.swap_value(ns, &swap.key, expected, write, deadline)
                    .await
            }
            // Deleting an absent key: nothing to write, only to check.
            (Expect::Absent, Write::Delete) => {
                let current = self.get_live(ns, &swap.key, deadline).await?;
                Ok(match current {
                    None => Swapped::Yes,
                    current => Swapped::No(current),
                })
            }
            (Expect::Absent, Write::Value { value, ttl_seconds }) => {
                let mut rounds = 0;
                loop {
                    rounds += 1;
                    let (swapped, current) = self
                        .insert_absent(ns, &swap.key, value, *ttl_seconds, deadline)
                        .await?;
                    if swapped {
                        return Ok(Swapped::Yes);
                    }
                    if current.is_some() {
                        return Ok(Swapped::No(current));
                    }
                    let current = self.get_live(ns, &swap.key, deadline).await?;
                    if current.is_some() || rounds == ABSENT_ROUNDS {
                        return Ok(Swapped::No(current));
                    }
                }
            }
        }
    }

    /// The swap (or delete) from an expected value, in one statement.
    async fn swap_value(
        &self,
        ns: &str,
        key: &str,
        expected: &Bytes,
        write: &Write,
        deadline: Deadline,
    ) -> Result<Swapped, Error> {
        let sql = &self.sql.atomic;
        let query = match write {
            Write::Value { value, ttl_seconds } => {
                sqlx::query_as::<_, (bool, Option<Vec<u8>>)>(&sql.swap_value)
                    .bind(ns)
                    .bind(key)
                    .bind(&expected[..])
                    .bind(&value[..])
                    .bind(seconds(*ttl_seconds))
            }
            Write::Delete => sqlx::query_as::<_, (bool, Option<Vec<u8>>)>(&sql.delete_value)
                .bind(ns)
                .bind(key)
                .bind(&expected[..]),
        };
        let (swapped, current) = self
            .run(deadline, async |conn| query.fetch_one(conn).await)
            .await?;
        Ok(match swapped {
            true => Swapped::Yes,
            false => Swapped::No(current.map(Bytes::from)),
        })
    }

    /// Inserts unless a live row exists: (swapped, the live value in the
    /// statement's snapshot).
    async fn insert_absent(
        &self,
        ns: &str,
        key: &str,
        value: &Bytes,
        ttl_seconds: u64,
        deadline: Deadline,
    ) -> Result<(bool, Option<Bytes>), Error> {
        let query = sqlx::query_as::<_, (bool, Option<Vec<u8>>)>(&self.sql.atomic.insert_absent)
            .bind(ns)
            .bind(key)
            .bind(&value[..])
            .bind(seconds(ttl_seconds));
        let (swapped, current) = self
            .run(deadline, async |conn| query.fetch_one(conn).await)
            .await?;
        Ok((swapped, current.map(Bytes::from)))
    }

    /// The live value of `key` on a connection of its own (not through the
    /// coalescing queue: a swap's follow-up read must see the latest commit).
    async fn get_live(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<Bytes>, Error> {
        let query = sqlx::query_scalar::<_, Vec<u8>>(&self.sql.get)
            .bind(ns)
            .bind(key);
        let found = self
            .run(deadline, async |conn| query.fetch_optional(conn).await)
            .await?;
        Ok(found.map(Bytes::from))
    }

    /// Adds `counter.delta` in one upsert; `Refused` when the live value is
    /// not a counter or would overflow (nothing written).
    pub(crate) async fn increment(
        &self,
        ns: &str,
        counter: &Counter,
        deadline: Deadline,
    ) -> Result<Counted, Error> {
        let _key = self.lock_key(ns, &counter.key, deadline).await?;
        let query = sqlx::query_scalar::<_, i64>(&self.sql.atomic.increment)
            .bind(ns)
            .bind(&counter.key)
            .bind(counter.delta)
            .bind(seconds(counter.ttl_seconds));
        let done = self
            .run(deadline, async |conn| query.fetch_optional(conn).await)
            .await?;
        Ok(match done {
            Some(value) => Counted::Value(value),
            None => Counted::Refused,
        })
    }
}
