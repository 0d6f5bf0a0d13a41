//! The table layout, its creation at initialize and the text of every
//! statement the backend runs. Knows nothing about gRPC.
//!
//! Layout (one table, `backend.schema`.`backend.table`):
//!
//! ```sql
//! namespace  text COLLATE "C" NOT NULL,
//! key        text COLLATE "C" NOT NULL,             -- byte order, whatever the database locale
//! key_md5    uuid GENERATED ALWAYS AS (md5(key)::uuid) STORED,
//! value      bytea NOT NULL,
//! expires_at timestamptz,                           -- NULL = no expiry
//! created_at timestamptz NOT NULL DEFAULT now(),
//! updated_at timestamptz NOT NULL DEFAULT now(),
//! PRIMARY KEY (namespace, key_md5)
//! -- <table>_scan:   (namespace, left(key, 512))              prefix scans
//! -- <table>_expiry: (expires_at) WHERE expires_at IS NOT NULL  the reaper
//! ```
//!
//! Why a hash in the primary key: a btree entry is limited to ~2.7 KB, and
//! keys may be up to `max_key_bytes` (4096 by default) of incompressible
//! UTF-8, so neither a primary key nor a plain index on `key` could hold them.
//! Uniqueness therefore rests on a 16-byte MD5 of the key (a generated column,
//! so rows written by hand stay consistent; MD5 is the only immutable hash
//! PostgreSQL offers for text, and every lookup also compares `key` itself).
//! Ordered scans use an index on the first 512 characters (at most 2 KB): the
//! truncation is monotone in byte order, so `ORDER BY left(key, 512), key`
//! equals `ORDER BY key`, the index delivers the first part and an incremental
//! sort orders the (rare) keys sharing 512 leading characters.
//!
//! Why runtime DDL rather than sqlx's embedded migrations: table and schema
//! names are configuration, and embedded migrations are fixed SQL recorded in
//! one `_sqlx_migrations` table per database, so two deployments with
//! different tables in one database would trip over each other. The DDL is
//! idempotent (`IF NOT EXISTS`) and runs in one transaction under a
//! session-level advisory lock keyed by the qualified table name (taken on a
//! direct connection, never through a transaction-mode pooler):
//! concurrent `CREATE TABLE IF NOT EXISTS` can otherwise fail with a
//! duplicate-key error on the catalog when replicas start together. The
//! identifiers are validated lowercase names (see `config.rs`) and quoted.

use prism_plugin_core::BadSetting;
use sqlx::{Connection, Executor, PgConnection};

use crate::error::Error;

mod atomic;

pub(crate) use atomic::AtomicStatements;
pub use atomic::{increment_statement, swap_statement};

/// Characters of the key held by the scan index. 4 bytes per character at
/// most, plus a namespace of at most 128 bytes, stays under the 2704-byte
/// btree entry limit.
pub(crate) const SCAN_INDEX_CHARS: usize = 512;
/// Marks a table as created by this plugin, in this layout. Written last in
/// the creating transaction, so its presence means the whole layout exists.
const LAYOUT_COMMENT: &str = "prism-postgres key-value items, layout v1";
/// Longest index-name suffix (`_expiry`); `config.rs` keeps the table name
/// short enough for it within PostgreSQL's 63-byte identifiers.
pub(crate) const INDEX_SUFFIX_MAX: usize = "_expiry".len();
/// Rows are live while this holds; every read filters on it, so expired rows
/// are invisible at once, before the reaper deletes them.
const LIVE: &str = "(expires_at IS NULL OR expires_at > now())";

/// Creates the schema, table and indexes unless they exist (see module docs).
pub(crate) async fn ensure(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    target: &str,
) -> Result<(), Error> {
    match create(conn, schema, table).await {
        Ok(result) => result,
        Err(source) => Err(Error::Postgres {
            target: target.to_string(),
            source,
        }),
    }
}

/// [`ensure`] with driver errors apart (the outer `Result`), so `?` works.
async fn create(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Result<(), Error>, sqlx::Error> {
    let qualified = format!("{schema}.{table}");
    if layout_comment(conn, &qualified).await?.as_deref() == Some(LAYOUT_COMMENT) {
        // The common case (every start after the first): no lock, no DDL, so
        // replicas need no CREATE privilege once the table exists.
        return Ok(Ok(()));
    }
    let lock_key = format!("prism-postgres:{qualified}");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(&lock_key)
        .execute(&mut *conn)
        .await?;
    let created = create_locked(conn, schema, table, &qualified).await;
    // Best effort: closing the connection (right after this) releases it too.
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&lock_key)
        .execute(&mut *conn)
        .await;
    created
}

/// The creating transaction, run while holding the session-level lock. It
/// starts after the lock is granted, so it sees the winner's committed
/// catalog. (Observed with a transaction-scoped lock taken inside the already
/// open transaction: under load a racing replica saw the new table but not
/// its comment, and refused it as foreign.)
async fn create_locked(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    qualified: &str,
) -> Result<Result<(), Error>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    // Re-check under the lock: another replica may just have finished.
    if layout_comment(&mut tx, qualified).await?.as_deref() == Some(LAYOUT_COMMENT) {
        return Ok(Ok(()));
    }
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("\"{schema}\".\"{table}\""))
        .fetch_one(&mut *tx)
        .await?;
    if exists {
        return Ok(Err(Error::Config(BadSetting {
            key: "table",
            problem: format!(
                "{qualified} exists but was not created by prism-postgres (no layout v1 \
                 comment); choose another backend.table or backend.schema"
            ),
        })));
    }
    let schema_exists: bool = sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
        .bind(format!("\"{schema}\""))
        .fetch_one(&mut *tx)
        .await?;
    if !schema_exists {
        let create_schema = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        (&mut *tx).execute(create_schema.as_str()).await?;
    }
    // `Executor::execute` rather than `raw_sql`, whose generic async fn trips
    // the higher-ranked `Send` check of the async-trait `initialize`.
    // Without arguments sqlx sends the simple-query protocol, which takes
    // several statements at once.
    (&mut *tx).execute(ddl(schema, table).as_str()).await?;
    tx.commit().await?;
    tracing::info!(table = %qualified, "created the key-value table");
    Ok(Ok(()))
}

/// The table's comment, if the table exists.
async fn layout_comment(
    conn: &mut PgConnection,
    qualified: &str,
) -> Result<Option<String>, sqlx::Error> {
    let comment: Option<String> =
        sqlx::query_scalar("SELECT obj_description(to_regclass($1), 'pg_class')")
            .bind(qualified)
            .fetch_one(conn)
            .await?;
    Ok(comment)
}

/// Table, indexes and marker comment, as one multi-statement string.
fn ddl(schema: &str, table: &str) -> String {
    let t = quoted_table(schema, table);
    let n = SCAN_INDEX_CHARS;
    format!(
        r#"CREATE TABLE IF NOT EXISTS {t} (
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    key_md5    uuid GENERATED ALWAYS AS (md5(key)::uuid) STORED,
    value      bytea NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key_md5)
);
CREATE INDEX IF NOT EXISTS "{table}_scan" ON {t} (namespace, left(key, {n}));
CREATE INDEX IF NOT EXISTS "{table}_expiry" ON {t} (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON TABLE {t} IS '{LAYOUT_COMMENT}';"#
    )
}

/// The text of every data statement, built once per backend (the table name
/// is configuration). sqlx prepares each once per connection and caches it.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) set: String,
    pub(crate) get: String,
    pub(crate) exists: String,
    pub(crate) delete: String,
    pub(crate) batch_set: String,
    pub(crate) batch_get: String,
    /// Point Sets of several callers (any namespaces) in one upsert.
    pub(crate) coalesced_set: String,
    /// Point Gets of several callers (any namespaces) in one select.
    pub(crate) coalesced_get: String,
    pub(crate) batch_delete: String,
    pub(crate) expire: String,
    pub(crate) expire_now: String,
    pub(crate) get_ttl: String,
    pub(crate) persist: String,
    /// Indexed by [`scan_index`].
    pub(crate) scan: [String; 8],
    pub(crate) reap: String,
    /// CompareAndSwap and Increment (see `schema/atomic.rs`).
    pub(crate) atomic: AtomicStatements,
}

/// Which of the eight scan statements fits a page request.
pub(crate) fn scan_index(keys_only: bool, after_cursor: bool, has_upper: bool) -> usize {
    usize::from(keys_only) << 2 | usize::from(after_cursor) << 1 | usize::from(has_upper)
}

/// One key: the primary-key lookup plus the comparison that makes an MD5
/// collision harmless for reads.
const ONE_KEY: &str = "namespace = $1 AND key_md5 = md5($2)::uuid AND key = $2";
/// The tail of every insert: an upsert; a row that had expired (but was not
/// reaped yet) counts as new, so its created_at restarts.
const UPSERT: &str = "ON CONFLICT (namespace, key_md5) DO UPDATE SET \
    key = EXCLUDED.key, value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, \
    created_at = CASE WHEN t.expires_at <= now() THEN now() ELSE t.created_at END, \
    updated_at = now()";

/// `"schema"."table"`.
fn quoted_table(schema: &str, table: &str) -> String {
    format!("\"{schema}\".\"{table}\"")
}

/// The `expires_at` of a row written with a TTL of `seconds` (an SQL
/// expression; 0 = no expiry).
fn expiry(seconds: &str) -> String {
    format!("CASE WHEN {seconds} > 0 THEN now() + {seconds} * interval '1 second' END")
}

/// The statement of a point Get on `schema`.`table`, exactly as the plugin
/// prepares it: binds `$1` namespace and `$2` key (text), returns the live
/// value (bytea) if any. Public so that tools measuring or checking the
/// plugin (the pgbench baseline of `bench-suite`) run what it runs instead
/// of a copy.
pub fn get_statement(schema: &str, table: &str) -> String {
    let t = quoted_table(schema, table);
    format!("SELECT value FROM {t} WHERE {ONE_KEY} AND {LIVE}")
}

/// The statement of a point Set on `schema`.`table` (an upsert), exactly as
/// the plugin prepares it: binds `$1` namespace and `$2` key (text), `$3`
/// value (bytea) and `$4` seconds to live (int8, 0 = none). Public for the
/// same reason as [`get_statement`].
pub fn set_statement(schema: &str, table: &str) -> String {
    let t = quoted_table(schema, table);
    format!(
        "INSERT INTO {t} AS t (namespace, key, value, expires_at) \
         VALUES ($1, $2, $3, {}) {UPSERT}",
        expiry("$4::int8")
    )
}

/// The slot of a `WITH ORDINALITY` row (counted from 1) in `found`; `None`
/// for anything else, which cannot come back.
pub(crate) fn ordinal_slot<T>(found: &mut [T], ordinal: i64) -> Option<&mut T> {
    usize::try_from(ordinal - 1)
        .ok()
        .and_then(|i| found.get_mut(i))
}

impl Statements {
    pub(crate) fn new(schema: &str, table: &str) -> Self {
        let t = quoted_table(schema, table);
        let n = SCAN_INDEX_CHARS;
        let scan = std::array::from_fn(|i| {
            let (keys_only, after, upper) = (i & 4 != 0, i & 2 != 0, i & 1 != 0);
            let columns = if keys_only { "key" } else { "key, value" };
            let lower = if after { ">" } else { ">=" };
            // Range predicates, not LIKE: `%`, `_` and `\` in a prefix stay
            // literal, and the bounds on left(key, n) are index conditions.
            let mut sql = format!(
                "SELECT {columns} FROM {t} WHERE namespace = $1 \
                 AND left(key, {n}) >= left($2 COLLATE \"C\", {n}) AND key {lower} $2 COLLATE \"C\""
            );
            if upper {
                sql.push_str(&format!(
                    " AND left(key, {n}) <= left($3 COLLATE \"C\", {n}) AND key < $3 COLLATE \"C\""
                ));
            }
            sql.push_str(&format!(
                " AND {LIVE} ORDER BY left(key, {n}), key LIMIT $4"
            ));
            sql
        });
        Statements {
            set: set_statement(schema, table),
            get: get_statement(schema, table),
            exists: format!("SELECT 1 FROM {t} WHERE {ONE_KEY} AND {LIVE}"),
            delete: format!("DELETE FROM {t} WHERE {ONE_KEY}"),
            batch_set: format!(
                "INSERT INTO {t} AS t (namespace, key, value, expires_at) \
                 SELECT $1, i.key, i.value, {} \
                 FROM unnest($2::text[], $3::bytea[], $4::int8[]) AS i(key, value, ttl) {UPSERT}",
                expiry("i.ttl")
            ),
            batch_get: format!(
                "SELECT k.ord, t.value \
                 FROM unnest($2::text[]) WITH ORDINALITY AS k(key, ord) \
                 JOIN {t} t ON t.namespace = $1 AND t.key_md5 = md5(k.key)::uuid AND t.key = k.key \
                 WHERE (t.expires_at IS NULL OR t.expires_at > now())"
            ),
            coalesced_set: format!(
                "INSERT INTO {t} AS t (namespace, key, value, expires_at) \
                 SELECT i.ns, i.key, i.value, {} \
                 FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[]) AS i(ns, key, value, ttl) {UPSERT}",
                expiry("i.ttl")
            ),
            coalesced_get: format!(
                "SELECT k.ord, t.value \
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(ns, key, ord) \
                 JOIN {t} t ON t.namespace = k.ns AND t.key_md5 = md5(k.key)::uuid AND t.key = k.key \
                 WHERE (t.expires_at IS NULL OR t.expires_at > now())"
            ),
            batch_delete: format!(
                "DELETE FROM {t} t USING unnest($2::text[]) AS k(key) \
                 WHERE t.namespace = $1 AND t.key_md5 = md5(k.key)::uuid AND t.key = k.key"
            ),
            expire: format!(
                "UPDATE {t} SET expires_at = now() + $3::int8 * interval '1 second', \
                 updated_at = now() WHERE {ONE_KEY} AND {LIVE}"
            ),
            expire_now: format!("DELETE FROM {t} WHERE {ONE_KEY} RETURNING {LIVE}"),
            // Rounded up, so a live key never reports 0 (or the -1/-2 markers).
            get_ttl: format!(
                "SELECT CASE WHEN expires_at IS NULL THEN -1 \
                 ELSE greatest(1, ceil(extract(epoch FROM expires_at - now())))::int8 END \
                 FROM {t} WHERE {ONE_KEY} AND {LIVE}"
            ),
            persist: format!(
                "UPDATE {t} SET expires_at = NULL, updated_at = now() \
                 WHERE {ONE_KEY} AND expires_at > now()"
            ),
            scan,
            atomic: AtomicStatements::new(&t),
            // Oldest first through the partial index; SKIP LOCKED lets several
            // replicas reap side by side without waiting on each other or on
            // writers, and the row locks keep a concurrent Set from being undone.
            reap: format!(
                "DELETE FROM {t} WHERE ctid = ANY(ARRAY(\
                 SELECT ctid FROM {t} WHERE expires_at <= now() \
                 ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED))"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_the_configured_names() {
        let sql = Statements::new("prism", "items");
        assert!(sql.get.contains("\"prism\".\"items\""), "{}", sql.get);
        assert!(sql.scan[scan_index(true, true, true)].starts_with("SELECT key FROM"));
        assert!(sql.scan[scan_index(false, false, false)].contains("key >= $2"));
        assert!(!sql.scan[scan_index(false, false, false)].contains("$3"));
        assert!(sql.scan[scan_index(false, true, true)].contains("key < $3"));
        assert!(ddl("prism", "items").contains("\"items_expiry\""));
    }
}
