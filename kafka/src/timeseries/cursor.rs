//! The position of an event in a query's order ([`Key`]) and the opaque
//! resume cursor: which query it belongs to (a fingerprint of series, range
//! and tag filter), the last event returned, and the high-water marks the
//! first page captured, so every page reads the same snapshot.

use std::collections::BTreeMap;

/// An event's place in query order: timestamp, then partition, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    /// Event time, epoch ms.
    pub(crate) ts: i64,
    /// Partition.
    pub(crate) partition: i32,
    /// Offset in the partition.
    pub(crate) offset: i64,
}

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// [`fingerprint`] of the query that made it.
    pub(crate) fingerprint: u64,
    /// The last event returned; the next page starts after it.
    pub(crate) after: Key,
    /// High-water mark per partition, captured by the first page.
    pub(crate) ends: BTreeMap<i32, i64>,
}

const VERSION: &str = "ts1";

/// FNV-1a (64 bit) of the query's identity: series, range and tag filter
/// (sorted). Not the limit: pages may differ in size. Stable across builds,
/// so a cursor outlives a plugin restart.
pub(crate) fn fingerprint(
    series: &str,
    start_ms: i64,
    end_ms: i64,
    tags: &BTreeMap<String, String>,
) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator no string contains keeps ("ab","c") apart from ("a","bc").
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    feed(series.as_bytes());
    feed(&start_ms.to_be_bytes());
    feed(&end_ms.to_be_bytes());
    for (k, v) in tags {
        feed(k.as_bytes());
        feed(v.as_bytes());
    }
    hash
}

impl Cursor {
    /// The opaque text form (hex of a small text record).
    pub(crate) fn encode(&self) -> String {
        let ends: Vec<String> = self.ends.iter().map(|(p, e)| format!("{p}:{e}")).collect();
        let text = format!(
            "{VERSION}|{:016x}|{}|{}|{}|{}",
            self.fingerprint,
            self.after.ts,
            self.after.partition,
            self.after.offset,
            ends.join(",")
        );
        hex::encode(text)
    }

    /// Parses `cursor` and checks it belongs to the query of `fingerprint`.
    /// The error text is for an INVALID_ARGUMENT status.
    pub(crate) fn decode(cursor: &str, fingerprint: u64) -> Result<Cursor, String> {
        let malformed = || "cursor is not one this plugin returned (malformed)".to_string();
        let bytes = hex::decode(cursor).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let parts: Vec<&str> = text.split('|').collect();
        let [version, fp, ts, partition, offset, ends] = parts[..] else {
            return Err(malformed());
        };
        if version != VERSION {
            return Err(malformed());
        }
        let fp = u64::from_str_radix(fp, 16).map_err(|_| malformed())?;
        if fp != fingerprint {
            return Err("cursor belongs to another query (series, range or tags differ)".into());
        }
        let after = Key {
            ts: ts.parse().map_err(|_| malformed())?,
            partition: partition.parse().map_err(|_| malformed())?,
            offset: offset.parse().map_err(|_| malformed())?,
        };
        let mut map = BTreeMap::new();
        for entry in ends.split(',').filter(|e| !e.is_empty()) {
            let (p, e) = entry.split_once(':').ok_or_else(malformed)?;
            map.insert(
                p.parse().map_err(|_| malformed())?,
                e.parse().map_err(|_| malformed())?,
            );
        }
        Ok(Cursor {
            fingerprint,
            after,
            ends: map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_only_fits_its_own_query() {
        let tags = BTreeMap::from([("host".to_string(), "a".to_string())]);
        let fp = fingerprint("cpu", 0, 100, &tags);
        let cursor = Cursor {
            fingerprint: fp,
            after: Key {
                ts: 42,
                partition: 3,
                offset: 7,
            },
            ends: BTreeMap::from([(0, 10), (3, 99)]),
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text, fp), Ok(cursor));
        let other = fingerprint("cpu", 0, 101, &tags);
        assert!(
            Cursor::decode(&text, other)
                .unwrap_err()
                .contains("another query")
        );
        assert_ne!(fp, fingerprint("cpu", 0, 100, &BTreeMap::new()));
        assert!(Cursor::decode("zz", fp).unwrap_err().contains("malformed"));
        assert!(Cursor::decode(&hex::encode("ts1|x"), fp).is_err());
    }
}
