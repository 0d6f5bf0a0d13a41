//! Per-partition acknowledgement state of a Consume stream: which
//! delivered offsets are still unacknowledged, and how far the group's
//! commit position may advance (only over contiguous acknowledgements).

use std::collections::BTreeSet;

/// Delivered-but-unacknowledged offsets of one partition.
#[derive(Debug, Default)]
pub(crate) struct Track {
    outstanding: BTreeSet<i64>,
    /// Last delivered offset + 1.
    next: i64,
    /// Position last stored for commit.
    stored: i64,
}

impl Track {
    /// Records a delivery. An offset below the last one means the partition
    /// was re-read (rebalance): deliveries at or after it will come again.
    /// True for such a redelivery.
    pub(crate) fn deliver(&mut self, offset: i64) -> bool {
        let again = offset < self.next;
        if again {
            self.outstanding.retain(|&o| o < offset);
        }
        self.outstanding.insert(offset);
        self.next = offset + 1;
        again
    }

    /// [`Track::ack`], counting a first acknowledgement in the metrics.
    pub(crate) fn ack_counted(&mut self, offset: i64, topic: &str) -> Option<i64> {
        let known = self.outstanding.contains(&offset);
        let position = self.ack(offset);
        if known {
            prism_plugin_core::backend_metrics::get().acknowledged(topic);
        }
        position
    }

    /// Records an acknowledgement; returns the new commit position if it
    /// advanced: the lowest unacknowledged delivery, or everything delivered.
    pub(crate) fn ack(&mut self, offset: i64) -> Option<i64> {
        if !self.outstanding.remove(&offset) {
            return None;
        }
        let position = self.outstanding.first().copied().unwrap_or(self.next);
        (position > self.stored).then(|| {
            self.stored = position;
            position
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_contiguous_acknowledgements_advance_the_commit_position() {
        let mut track = Track::default();
        for offset in 0..5 {
            track.deliver(offset);
        }
        assert_eq!(track.ack(1), None, "0 is still outstanding");
        assert_eq!(track.ack(3), None);
        assert_eq!(track.ack(0), Some(2), "0 and 1 done, 2 outstanding");
        assert_eq!(track.ack(0), None, "duplicate ack");
        assert_eq!(track.ack(2), Some(4), "3 was acked earlier");
        assert_eq!(track.ack(4), Some(5), "everything delivered is acked");
        assert_eq!(track.ack(7), None, "never delivered");
    }

    #[test]
    fn a_rewound_partition_forgets_redelivered_offsets() {
        let mut track = Track::default();
        for offset in 10..15 {
            track.deliver(offset);
        }
        assert_eq!(track.ack(10), Some(11));
        // Rebalance: the partition is read again from the committed 11.
        track.deliver(11);
        assert_eq!(track.ack(11), Some(12));
        assert_eq!(track.ack(13), None, "13 will be delivered again");
        track.deliver(12);
        assert_eq!(track.ack(12), Some(13));
    }
}
