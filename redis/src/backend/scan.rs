//! Prefix scans with `SCAN … MATCH`: the pattern is the namespaced prefix
//! with its glob characters escaped (so `*`, `?`, `[`, `]`, `\` in a prefix
//! are literal) plus `*`. In a cluster each primary is scanned in turn (the
//! command is routed by a slot that primary owns); standalone there is one.
//!
//! The cursor a client gets back names a position, not a snapshot: the
//! node (the lowest slot of its primary), the Redis cursor of the `SCAN`
//! batch being read and, when a page ended inside that batch, a fingerprint
//! of each key of the batch already returned. `SCAN` batches cannot be
//! split (their cursor points past the whole batch), so the next page reads
//! the same batch again and skips those keys. Guarantee: every key present
//! for the whole scan is returned at least once (`SCAN`'s own guarantee,
//! kept because a re-read batch still holds every key it held that is still
//! present); a key may come back twice across pages (Redis rehashing), never
//! within one page; there is no order. Declared as `ordered=false`.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::Value;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use sha1::{Digest, Sha1};

use super::{Backend, Conn};
use crate::error::Error;

/// First byte of every cursor, so the format can change compatibly.
const CURSOR_VERSION: u8 = 1;
/// `SCAN` calls one page may make before it returns what it has (possibly
/// nothing, with a cursor): bounds a page's time on a sparse key space.
const MAX_STEPS: usize = 64;

/// Where a scan stands (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    /// The lowest slot of the primary being scanned (0 standalone).
    node: u16,
    /// The Redis cursor of the batch being read.
    batch: u64,
    /// Fingerprints of the keys of that batch already returned.
    seen: Vec<u64>,
}

/// One page of keys (client keys, without prefix and namespace).
#[derive(Debug, Default)]
pub(crate) struct KeyPage {
    /// Keys, none twice.
    pub(crate) keys: Vec<String>,
    /// Where the next page starts; `None` when the scan is done.
    pub(crate) next: Option<Position>,
}

/// Binds a cursor to the scan it belongs to.
fn scope_tag(namespace: &str, prefix: &str) -> u64 {
    fingerprint(format!("{namespace}\0{prefix}").as_bytes())
}

/// A stable 64-bit fingerprint (the same in every replica of the plugin).
fn fingerprint(bytes: &[u8]) -> u64 {
    let digest = Sha1::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The opaque cursor of `position` in the scan of (`namespace`, `prefix`).
pub(crate) fn encode_cursor(namespace: &str, prefix: &str, position: &Position) -> String {
    let mut raw = Vec::with_capacity(19 + 8 * position.seen.len());
    raw.push(CURSOR_VERSION);
    raw.extend_from_slice(&scope_tag(namespace, prefix).to_be_bytes());
    raw.extend_from_slice(&position.node.to_be_bytes());
    raw.extend_from_slice(&position.batch.to_be_bytes());
    for seen in &position.seen {
        raw.extend_from_slice(&seen.to_be_bytes());
    }
    URL_SAFE_NO_PAD.encode(raw)
}

/// The position of a cursor from [`encode_cursor`] for the same scan;
/// `Ok(None)` for "" (from the start), `Err(())` for anything else.
#[allow(clippy::result_unit_err)]
pub(crate) fn decode_cursor(
    namespace: &str,
    prefix: &str,
    cursor: &str,
) -> Result<Option<Position>, ()> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(drop)?;
    let (head, seen) = raw.split_at_checked(19).ok_or(())?;
    let tag = u64::from_be_bytes(head[1..9].try_into().map_err(drop)?);
    if head[0] != CURSOR_VERSION || tag != scope_tag(namespace, prefix) || seen.len() % 8 != 0 {
        return Err(());
    }
    let node = u16::from_be_bytes(head[9..11].try_into().map_err(drop)?);
    let batch = u64::from_be_bytes(head[11..19].try_into().map_err(drop)?);
    let seen = seen
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Ok(Some(Position { node, batch, seen }))
}

/// `text` with Redis glob characters escaped, so `MATCH` takes it literally.
fn escape_glob(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    for &b in text {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

impl Backend {
    /// One page of at most `limit` keys of `namespace` starting with
    /// `prefix`, from `from` (`None`: the start).
    pub(crate) async fn scan_keys(
        &self,
        namespace: &str,
        prefix: &str,
        from: Option<Position>,
        limit: usize,
    ) -> Result<KeyPage, Error> {
        let strip = self.redis_key(namespace, "");
        let mut pattern = escape_glob(&self.redis_key(namespace, prefix));
        pattern.push(b'*');
        let count = limit.clamp(10, 1000);
        let mut pos = match from {
            Some(pos) => pos,
            None => Position {
                node: self.next_node(None).await?.unwrap_or(0),
                batch: 0,
                seen: Vec::new(),
            },
        };
        let mut page = KeyPage::default();
        let mut in_page = HashSet::new();
        for _ in 0..MAX_STEPS {
            let (next_batch, keys) = self.scan_step(&pos, &pattern, count).await?;
            let fresh: Vec<(String, u64)> = keys
                .into_iter()
                .filter_map(|key| {
                    let print = fingerprint(&key);
                    let client = key.strip_prefix(strip.as_slice())?;
                    let client = String::from_utf8(client.to_vec()).ok()?;
                    let new = !pos.seen.contains(&print) && !in_page.contains(&client);
                    new.then_some((client, print))
                })
                .collect();
            let room = limit - page.keys.len();
            if fresh.len() > room {
                // The page ends inside this batch: read it again next time.
                for (key, print) in fresh.into_iter().take(room) {
                    pos.seen.push(print);
                    page.keys.push(key);
                }
                page.next = Some(pos);
                return Ok(page);
            }
            for (key, _) in fresh {
                in_page.insert(key.clone());
                page.keys.push(key);
            }
            pos = if next_batch != 0 {
                Position {
                    node: pos.node,
                    batch: next_batch,
                    seen: Vec::new(),
                }
            } else {
                match self.next_node(Some(pos.node)).await? {
                    Some(node) => Position {
                        node,
                        batch: 0,
                        seen: Vec::new(),
                    },
                    None => return Ok(page),
                }
            };
            if page.keys.len() == limit {
                break;
            }
        }
        page.next = Some(pos);
        Ok(page)
    }

    /// One `SCAN` on the node of `pos`: the next Redis cursor and the keys.
    async fn scan_step(
        &self,
        pos: &Position,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), Error> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(pos.batch)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let reply = match self.connection() {
            Conn::Single(mut conn) => self.bounded(cmd.query_async::<Value>(&mut conn)).await?,
            Conn::Cluster(mut conn) => {
                let node = Route::new(pos.node, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(node));
                self.bounded(conn.route_command(cmd, routing)).await?
            }
        };
        redis::from_redis_value::<(u64, Vec<Vec<u8>>)>(reply).map_err(|e| Error::Protocol {
            address: self.address.clone(),
            problem: format!("SCAN answered {e}"),
        })
    }

    /// The primary after the one whose lowest slot is `after` (`None`: the
    /// first), by lowest slot, as `CLUSTER SLOTS` lists them now; `None`
    /// when there is none (always, standalone, after the first).
    async fn next_node(&self, after: Option<u16>) -> Result<Option<u16>, Error> {
        let Conn::Cluster(_) = self.connection() else {
            return Ok(match after {
                None => Some(0),
                Some(_) => None,
            });
        };
        let reply: Value = self
            .query(&redis::cmd("CLUSTER").arg("SLOTS").clone())
            .await?;
        let lowest = primaries_lowest_slots(reply).ok_or_else(|| Error::Protocol {
            address: self.address.clone(),
            problem: "CLUSTER SLOTS answered an unexpected shape".into(),
        })?;
        Ok(match after {
            None => lowest.first().copied(),
            Some(after) => lowest.into_iter().find(|&slot| slot > after),
        })
    }
}

/// The lowest slot of each primary in a `CLUSTER SLOTS` reply, ascending.
fn primaries_lowest_slots(reply: Value) -> Option<Vec<u16>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut lowest: Vec<(Vec<u8>, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let start = match fields.first()? {
            Value::Int(start) => u16::try_from(*start).ok()?,
            _ => return None,
        };
        // The primary: [host, port, id, ...]; its id names it.
        let Value::Array(primary) = fields.get(2)? else {
            return None;
        };
        let id = match primary.get(2).or(primary.first())? {
            Value::BulkString(id) => id.clone(),
            _ => return None,
        };
        match lowest.iter_mut().find(|(known, _)| *known == id) {
            Some((_, slot)) => *slot = (*slot).min(start),
            None => lowest.push((id, start)),
        }
    }
    let mut slots: Vec<u16> = lowest.into_iter().map(|(_, slot)| slot).collect();
    slots.sort_unstable();
    Some(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(
            escape_glob(b"a*b?c[d]e\\f"),
            b"a\\*b\\?c\\[d\\]e\\\\f".to_vec()
        );
        assert_eq!(escape_glob(b"plain:key"), b"plain:key".to_vec());
    }

    #[test]
    fn cursors_round_trip_and_belong_to_their_scan() {
        let pos = Position {
            node: 5461,
            batch: 1 << 40,
            seen: vec![1, u64::MAX],
        };
        let cursor = encode_cursor("ns", "p*", &pos);
        assert_eq!(decode_cursor("ns", "p*", &cursor), Ok(Some(pos)));
        assert_eq!(decode_cursor("ns", "p", &cursor), Err(()));
        assert_eq!(decode_cursor("other", "p*", &cursor), Err(()));
        assert_eq!(decode_cursor("ns", "", ""), Ok(None));
        for bad in ["!!", "AA", &cursor[..cursor.len() - 3]] {
            assert_eq!(decode_cursor("ns", "p*", bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn cluster_slots_give_each_primary_once_by_its_lowest_slot() {
        let node = |id: &str| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(7000),
                Value::BulkString(id.as_bytes().to_vec()),
            ])
        };
        let range =
            |start, end, id| Value::Array(vec![Value::Int(start), Value::Int(end), node(id)]);
        let reply = Value::Array(vec![
            range(10923, 16383, "c"),
            range(0, 5460, "a"),
            range(5461, 10922, "b"),
            range(16000, 16001, "a"),
        ]);
        assert_eq!(primaries_lowest_slots(reply), Some(vec![0, 5461, 10923]));
    }
}
