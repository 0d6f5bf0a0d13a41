//! The text of the atomic statements (CompareAndSwap, Increment): one
//! statement per call, atomic under PostgreSQL's default READ COMMITTED
//! isolation through row locks. Knows nothing about gRPC.
//!
//! Why each is atomic:
//! - a swap from an expected value first locks the live row (`FOR UPDATE`
//!   in a CTE). A concurrent writer's lock makes it wait; once granted,
//!   `FOR UPDATE` returns the row's *latest* committed version, which is the
//!   `current` reported when not swapped (so of N swaps from one value, the
//!   losers see the winner's value). The `UPDATE`/`DELETE` then re-checks
//!   `value = expected` on that latest version (PostgreSQL re-evaluates the
//!   condition of a row updated since the snapshot), so exactly one swaps;
//! - a swap from "absent" is `INSERT … ON CONFLICT DO UPDATE … WHERE` the
//!   row has expired: the unique index serialises concurrent inserts, and an
//!   expired row (not reaped yet) is overwritten as if absent;
//! - an increment is one upsert that adds in its `DO UPDATE`; the row lock
//!   of `ON CONFLICT` serialises concurrent increments of one key. Its
//!   `WHERE` refuses (no row back, nothing written) a live value that is not
//!   a canonical 64-bit decimal (`0`, `-?[1-9][0-9]*`, as Redis `INCRBY`
//!   accepts) or that the delta would overflow, evaluated in order by `CASE`
//!   so no cast can fail. `encode(…, 'escape')` turns any bytes into text
//!   without failing (digits stay digits).

use super::{LIVE, ONE_KEY, expiry};

/// Matches a counter as Redis `INCRBY` parses one: no sign on zero, no
/// leading zeros, at most 19 digits (the range check follows in numeric).
const COUNTER: &str = "'^(0|-?[1-9][0-9]{0,18})$'";
/// The existing row has expired (NULL, i.e. false, when it never expires).
const EXPIRED: &str = "t.expires_at <= now()";

/// The atomic statements for one table.
#[derive(Debug)]
pub(crate) struct AtomicStatements {
    /// `$1` ns, `$2` key, `$3` expected, `$4` value, `$5` ttl → (swapped, current).
    pub(crate) swap_value: String,
    /// `$1` ns, `$2` key, `$3` expected → (swapped, current).
    pub(crate) delete_value: String,
    /// `$1` ns, `$2` key, `$3` value, `$4` ttl → (swapped, current in the snapshot).
    pub(crate) insert_absent: String,
    /// `$1` ns, `$2` key, `$3` delta, `$4` ttl on create → the new value, or
    /// no row when refused.
    pub(crate) increment: String,
}

/// The statement of an Increment on `schema`.`table`, exactly as the plugin
/// prepares it: binds `$1` namespace, `$2` key, `$3` delta (int8), `$4`
/// seconds to live on create (int8, 0 = none); returns the new value, or no
/// row when refused. Public for tools that run what the plugin runs (the
/// benchmark's pgbench baseline).
pub fn increment_statement(schema: &str, table: &str) -> String {
    AtomicStatements::new(&super::quoted_table(schema, table)).increment
}

/// The statement of a CompareAndSwap from an expected value on
/// `schema`.`table`, exactly as the plugin prepares it: binds `$1`
/// namespace, `$2` key, `$3` expected and `$4` new value (bytea), `$5`
/// seconds to live (int8); returns (swapped, current). Public like
/// [`increment_statement`].
pub fn swap_statement(schema: &str, table: &str) -> String {
    AtomicStatements::new(&super::quoted_table(schema, table)).swap_value
}

impl AtomicStatements {
    /// The statements on `t` (already quoted `"schema"."table"`).
    pub(crate) fn new(t: &str) -> Self {
        // The live row, locked; its latest version once the lock is granted.
        let locked = format!(
            "WITH cur AS (SELECT value AS found FROM {t} WHERE {ONE_KEY} AND {LIVE} FOR UPDATE)"
        );
        let same_row = "t.namespace = $1 AND t.key_md5 = md5($2)::uuid AND t.key = $2 \
             AND (t.expires_at IS NULL OR t.expires_at > now()) AND t.value = $3";
        let outcome = "SELECT EXISTS (SELECT 1 FROM done), (SELECT found FROM cur)";
        AtomicStatements {
            swap_value: format!(
                "{locked}, done AS (UPDATE {t} AS t SET value = $4, expires_at = {}, \
                 updated_at = now() FROM cur WHERE {same_row} RETURNING 1) {outcome}",
                expiry("$5::int8")
            ),
            delete_value: format!(
                "{locked}, done AS (DELETE FROM {t} AS t USING cur WHERE {same_row} \
                 RETURNING 1) {outcome}"
            ),
            insert_absent: format!(
                "WITH done AS (INSERT INTO {t} AS t (namespace, key, value, expires_at) \
                 VALUES ($1, $2, $3, {}) ON CONFLICT (namespace, key_md5) DO UPDATE SET \
                 key = EXCLUDED.key, value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, \
                 created_at = now(), updated_at = now() WHERE {EXPIRED} RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM done), \
                 (SELECT value FROM {t} WHERE {ONE_KEY} AND {LIVE})",
                expiry("$4::int8")
            ),
            increment: format!(
                "INSERT INTO {t} AS t (namespace, key, value, expires_at) \
                 VALUES ($1, $2, convert_to($3::int8::text, 'UTF8'), {}) \
                 ON CONFLICT (namespace, key_md5) DO UPDATE SET key = EXCLUDED.key, \
                 value = CASE WHEN {EXPIRED} THEN EXCLUDED.value ELSE \
                 convert_to((encode(t.value, 'escape')::int8 + $3::int8)::text, 'UTF8') END, \
                 expires_at = CASE WHEN {EXPIRED} THEN EXCLUDED.expires_at ELSE t.expires_at END, \
                 created_at = CASE WHEN {EXPIRED} THEN now() ELSE t.created_at END, \
                 updated_at = now() \
                 WHERE CASE WHEN {EXPIRED} THEN true \
                 WHEN encode(t.value, 'escape') ~ {COUNTER} \
                 THEN (encode(t.value, 'escape')::numeric + $3::int8) \
                 BETWEEN -9223372036854775808 AND 9223372036854775807 \
                 ELSE false END \
                 RETURNING convert_from(value, 'UTF8')::int8",
                expiry("$4::int8")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_names_the_table_and_keeps_expired_rows_absent() {
        let sql = AtomicStatements::new("\"prism\".\"items\"");
        for text in [
            &sql.swap_value,
            &sql.delete_value,
            &sql.insert_absent,
            &sql.increment,
        ] {
            assert!(text.contains("\"prism\".\"items\""), "{text}");
            assert!(text.contains("now()"), "{text}");
        }
        assert!(sql.swap_value.contains("FOR UPDATE"));
        assert!(sql.delete_value.starts_with("WITH cur"));
        assert!(sql.increment.contains("ON CONFLICT"));
    }
}
