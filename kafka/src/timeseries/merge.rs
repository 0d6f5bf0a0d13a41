//! The pieces that put a query's events in order with bounded memory,
//! whatever order they were inserted in. Pure: no Kafka, no gRPC.
//!
//! - [`Segments`]: per partition, the smallest matching timestamp in each
//!   run of `size` offsets. From it, the *bound* of a partition at a read
//!   position is the smallest timestamp it can still produce; an event whose
//!   timestamp is below every partition's bound can be sent: nothing read
//!   later can come before it.
//! - [`Lookahead`]: the events read but not yet sent, in (timestamp,
//!   partition, offset) order, at most `capacity` of them. When full, the
//!   largest is dropped and becomes the pass's *ceiling*: nothing at or
//!   above it is sent in this pass; the next pass reads the series again
//!   for those.
//! - [`Dedup`]: the event ids already sent at the current timestamp;
//!   copies of an event (a retried Insert) share its timestamp, so they meet
//!   there.

use std::collections::{BTreeMap, HashSet};

use super::cursor::Key;

/// Smallest matching timestamp per run of `size` offsets of one partition.
#[derive(Debug, Clone)]
pub(crate) struct Segments {
    start: i64,
    end: i64,
    size: i64,
    mins: Vec<i64>,
    /// `mins` turned into suffix minimums (see [`Segments::finish`]).
    finished: bool,
}

impl Segments {
    /// Segments covering offsets `start..end`, `size` offsets each.
    pub(crate) fn new(start: i64, end: i64, size: i64) -> Self {
        let size = size.max(1);
        let count = usize::try_from(((end - start).max(0) + size - 1) / size).unwrap_or(0);
        Segments {
            start,
            end,
            size,
            mins: vec![i64::MAX; count],
            finished: false,
        }
    }

    fn index(&self, offset: i64) -> Option<usize> {
        usize::try_from((offset - self.start) / self.size)
            .ok()
            .filter(|&i| offset >= self.start && offset < self.end && i < self.mins.len())
    }

    /// Records a matching event at `offset` with time `ts`.
    pub(crate) fn note(&mut self, offset: i64, ts: i64) {
        debug_assert!(!self.finished);
        if let Some(i) = self.index(offset) {
            self.mins[i] = self.mins[i].min(ts);
        }
    }

    /// The first offset of the first segment holding a noted event
    /// (`None`: none), before [`finish`](Self::finish).
    pub(crate) fn first_noted(&self) -> Option<i64> {
        let i = self.mins.iter().position(|&m| m < i64::MAX)?;
        Some(self.start + i as i64 * self.size)
    }

    /// Turns per-segment minimums into suffix minimums: entry `i` becomes
    /// the smallest timestamp from segment `i` to the end.
    pub(crate) fn finish(&mut self) {
        let mut min = i64::MAX;
        for m in self.mins.iter_mut().rev() {
            min = min.min(*m);
            *m = min;
        }
        self.finished = true;
    }

    /// The smallest timestamp the partition can still produce when its next
    /// offset to read is `next` (conservative: the current segment's events
    /// already read count too); `i64::MAX` past the last segment.
    pub(crate) fn bound(&self, next: i64) -> i64 {
        debug_assert!(self.finished);
        match self.index(next.max(self.start)) {
            Some(i) => self.mins[i],
            None => i64::MAX,
        }
    }
}

/// What a query keeps of one event until it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The event id (the record key).
    pub(crate) event_id: String,
    /// The payload.
    pub(crate) payload: bytes::Bytes,
    /// The tags (headers).
    pub(crate) tags: std::collections::HashMap<String, String>,
}

/// Events read but not yet sent, ordered, bounded.
#[derive(Debug)]
pub(crate) struct Lookahead {
    items: BTreeMap<Key, Held>,
    capacity: usize,
    ceiling: Option<Key>,
}

impl Lookahead {
    /// An empty look-ahead of at most `capacity` (≥ 1) events.
    pub(crate) fn new(capacity: usize) -> Self {
        Lookahead {
            items: BTreeMap::new(),
            capacity: capacity.max(1),
            ceiling: None,
        }
    }

    /// Keeps an event; returns the key of the event this pass will *not*
    /// send because of it (the event itself when at or above the ceiling,
    /// else the largest held one when full), which the next pass must read.
    pub(crate) fn admit(&mut self, key: Key, held: Held) -> Option<Key> {
        if self.ceiling.is_some_and(|c| key >= c) {
            return Some(key);
        }
        self.items.insert(key, held);
        if self.items.len() > self.capacity {
            let (largest, _) = self.items.pop_last()?;
            self.ceiling = Some(largest);
            return Some(largest);
        }
        None
    }

    /// True when `key` is at or above the ceiling (it would not be kept).
    pub(crate) fn refuses(&self, key: &Key) -> bool {
        self.ceiling.is_some_and(|c| *key >= c)
    }

    /// The smallest held event if its timestamp is below `bound`.
    pub(crate) fn pop_below(&mut self, bound: i64) -> Option<(Key, Held)> {
        let first = self.items.first_key_value()?.0;
        if first.ts < bound {
            self.items.pop_first()
        } else {
            None
        }
    }

    /// True when the pass had to leave events for another one.
    pub(crate) fn overflowed(&self) -> bool {
        self.ceiling.is_some()
    }

    /// Events held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// Event ids seen at the current timestamp.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    ts: Option<i64>,
    seen: HashSet<String>,
}

impl Dedup {
    /// True the first time (`event_id`, `ts`) is offered, in key order.
    pub(crate) fn first(&mut self, ts: i64, event_id: &str) -> bool {
        if self.ts != Some(ts) {
            self.ts = Some(ts);
            self.seen.clear();
        }
        if self.seen.contains(event_id) {
            return false;
        }
        self.seen.insert(event_id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ts: i64, partition: i32, offset: i64) -> Key {
        Key {
            ts,
            partition,
            offset,
        }
    }

    fn held(id: &str) -> Held {
        Held {
            event_id: id.to_string(),
            payload: bytes::Bytes::new(),
            tags: Default::default(),
        }
    }

    #[test]
    fn the_bound_is_the_smallest_time_left_to_read() {
        let mut s = Segments::new(10, 20, 4); // segments 10-13, 14-17, 18-19
        s.note(11, 50);
        s.note(15, 30);
        s.note(19, 40);
        s.note(25, 1); // outside: ignored
        assert_eq!(s.first_noted(), Some(10));
        s.finish();
        assert_eq!(s.bound(10), 30);
        assert_eq!(s.bound(14), 30);
        assert_eq!(s.bound(18), 40);
        assert_eq!(s.bound(20), i64::MAX);
        let empty = Segments::new(5, 5, 4);
        assert_eq!(empty.first_noted(), None);
    }

    #[test]
    fn a_full_lookahead_drops_its_largest_and_refuses_what_is_above() {
        let mut l = Lookahead::new(2);
        assert_eq!(l.admit(key(5, 0, 0), held("a")), None);
        assert_eq!(l.admit(key(3, 1, 0), held("b")), None);
        assert_eq!(l.admit(key(4, 0, 1), held("c")), Some(key(5, 0, 0)));
        assert!(l.overflowed());
        assert_eq!(l.admit(key(6, 0, 2), held("d")), Some(key(6, 0, 2)));
        assert_eq!(l.pop_below(4).map(|(k, _)| k), Some(key(3, 1, 0)));
        assert!(l.pop_below(4).is_none());
        assert_eq!(l.pop_below(i64::MAX).map(|(k, _)| k), Some(key(4, 0, 1)));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn copies_of_an_event_meet_at_its_timestamp() {
        let mut d = Dedup::default();
        assert!(d.first(1, "a"));
        assert!(d.first(1, "b"));
        assert!(!d.first(1, "a"));
        assert!(d.first(2, "a"));
    }
}
