//! The key-value statements other than the point Get and Set (see point.rs):
//! one statement each, on a connection of its own, bounded by the call's
//! deadline; and the expiry sweep.

use std::collections::HashSet;

use bytes::Bytes;
use prism_plugin_core::deadline::Deadline;
use sqlx::Row;
use sqlx::postgres::{PgArguments, Postgres};

use super::{Backend, Item, Page};
use crate::error::Error;
use crate::schema::{ordinal_slot, scan_index};

/// A statement with its arguments bound.
type Statement<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

impl Backend {
    /// Runs `query` (no rows back) on a connection of its own, bounded by
    /// the call's deadline; how many rows it changed.
    async fn execute(&self, query: Statement<'_>, deadline: Deadline) -> Result<u64, Error> {
        let done = self
            .run(deadline, async |conn| query.execute(conn).await)
            .await?;
        Ok(done.rows_affected())
    }

    /// Whether `key` holds a live value.
    pub(crate) async fn exists(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<bool, Error> {
        let query = sqlx::query(&self.sql.exists).bind(ns).bind(key);
        let done = self
            .run(deadline, async |conn| query.fetch_optional(conn).await)
            .await?;
        Ok(done.is_some())
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub(crate) async fn delete(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let query = sqlx::query(&self.sql.delete).bind(ns).bind(key);
        self.execute(query, deadline).await.map(drop)
    }

    /// Upserts every item in one statement. A key given twice keeps its last
    /// value (one statement may not update a row twice, so earlier
    /// duplicates are dropped here).
    pub(crate) async fn batch_set(
        &self,
        ns: &str,
        items: &[Item<'_>],
        deadline: Deadline,
    ) -> Result<(), Error> {
        if items.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        let mut values = Vec::with_capacity(items.len());
        let mut ttls = Vec::with_capacity(items.len());
        for item in items.iter().rev() {
            if seen.insert(item.key) {
                keys.push(item.key);
                values.push(item.value);
                ttls.push(item.ttl_seconds);
            }
        }
        let query = sqlx::query(&self.sql.batch_set)
            .bind(ns)
            .bind(keys)
            .bind(values)
            .bind(ttls);
        self.execute(query, deadline).await.map(drop)
    }

    /// The live values of `keys`, in the order asked (duplicates included),
    /// in one statement.
    pub(crate) async fn batch_get(
        &self,
        ns: &str,
        keys: &[String],
        deadline: Deadline,
    ) -> Result<Vec<Option<Bytes>>, Error> {
        let mut found = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(found);
        }
        let query = sqlx::query_as::<_, (i64, Vec<u8>)>(&self.sql.batch_get)
            .bind(ns)
            .bind(keys);
        let done = self
            .run(deadline, async |conn| query.fetch_all(conn).await)
            .await;
        for (ordinal, value) in done? {
            if let Some(slot) = ordinal_slot(&mut found, ordinal) {
                *slot = Some(Bytes::from(value));
            }
        }
        Ok(found)
    }

    /// Deletes every key in one statement; missing keys are fine.
    pub(crate) async fn batch_delete(
        &self,
        ns: &str,
        keys: &[String],
        deadline: Deadline,
    ) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let query = sqlx::query(&self.sql.batch_delete).bind(ns).bind(keys);
        self.execute(query, deadline).await.map(drop)
    }

    /// Sets a live key to expire `ttl_seconds` from now (0 = remove it now);
    /// returns whether a live key existed.
    pub(crate) async fn expire(
        &self,
        ns: &str,
        key: &str,
        ttl_seconds: i64,
        deadline: Deadline,
    ) -> Result<bool, Error> {
        if ttl_seconds == 0 {
            // Expiring now is deleting: the row would be invisible anyway, and
            // this spares the reaper. An already-expired row is removed but
            // did not "exist".
            let query = sqlx::query_scalar::<_, bool>(&self.sql.expire_now)
                .bind(ns)
                .bind(key);
            let done = self
                .run(deadline, async |conn| query.fetch_optional(conn).await)
                .await?;
            return Ok(done.unwrap_or(false));
        }
        let query = sqlx::query(&self.sql.expire)
            .bind(ns)
            .bind(key)
            .bind(ttl_seconds);
        Ok(self.execute(query, deadline).await? > 0)
    }

    /// Remaining seconds to live (rounded up): -1 = no expiry, -2 = no such key.
    pub(crate) async fn ttl(&self, ns: &str, key: &str, deadline: Deadline) -> Result<i64, Error> {
        let query = sqlx::query_scalar::<_, i64>(&self.sql.get_ttl)
            .bind(ns)
            .bind(key);
        let done = self
            .run(deadline, async |conn| query.fetch_optional(conn).await)
            .await?;
        Ok(done.unwrap_or(-2))
    }

    /// Removes the expiry of a live key; returns whether it had one.
    pub(crate) async fn persist(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<bool, Error> {
        let query = sqlx::query(&self.sql.persist).bind(ns).bind(key);
        Ok(self.execute(query, deadline).await? > 0)
    }

    /// One page of live keys starting with `prefix`, in byte order, strictly
    /// after `after` when given (the cursor's key, which starts with `prefix`).
    pub(crate) async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        keys_only: bool,
        deadline: Deadline,
    ) -> Result<Page, Error> {
        let upper = prefix_successor(prefix);
        let sql = &self.sql.scan[scan_index(keys_only, after.is_some(), upper.is_some())];
        // Unnamed statement: planned with the actual bounds each time. A cached
        // generic plan cannot see how narrow the range is and may sort every
        // key under the prefix instead of walking the index.
        let query = sqlx::query(sql)
            .persistent(false)
            .bind(ns)
            .bind(after.unwrap_or(prefix))
            .bind(upper.as_deref().unwrap_or(""))
            // One more than asked, to learn whether more follow.
            .bind(i64::from(limit) + 1);
        let done = self
            .run(deadline, async |conn| query.fetch_all(conn).await)
            .await;
        let rows = done?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let has_more = rows.len() > limit;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        for row in rows.into_iter().take(limit) {
            let key: String = row.try_get(0).map_err(|e| self.fail(e))?;
            let value = if keys_only {
                Bytes::new()
            } else {
                Bytes::from(row.try_get::<Vec<u8>, _>(1).map_err(|e| self.fail(e))?)
            };
            items.push((key, value));
        }
        Ok(Page { items, has_more })
    }

    /// Deletes up to `batch` expired rows (oldest first); returns how many.
    pub(crate) async fn reap(&self, batch: i64) -> Result<u64, Error> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.fail(e))?;
        let done = sqlx::query(&self.sql.reap)
            .bind(batch)
            .execute(&mut *conn)
            .await;
        Ok(self.settle(conn, Some(done))?.rows_affected())
    }
}

/// The smallest string greater than every string starting with `prefix`, in
/// byte (= code point) order: the last character that can be incremented is,
/// and everything after it dropped. `None` when there is none (empty prefix,
/// or only U+10FFFF characters): then the range has no upper bound.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) {
            // Skip the surrogate gap, which no `char` can hold.
            0xD7FF => Some('\u{E000}'),
            code => char::from_u32(code + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_successor("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_successor("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(prefix_successor("é").as_deref(), Some("ê"));
        // Byte order of UTF-8 is code point order, so the bound holds bytewise.
        let upper = prefix_successor("ab\u{7F}").unwrap_or_default();
        for key in ["ab\u{7F}", "ab\u{7F}\u{10FFFF}", "ab\u{7F}zzz"] {
            assert!(key.as_bytes() < upper.as_bytes(), "{key:?}");
        }
        assert!("ab\u{80}".as_bytes() >= upper.as_bytes());
    }
}
