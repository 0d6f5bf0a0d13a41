//! [`ProducerState`]: whether the producer can still publish, as its sends
//! and the health probe reveal it. A producer that a send error fenced, or
//! whose sends keep timing out while the broker answers, is marked broken
//! for good; only a new producer helps (see [`crate::rebuilder`]). Knows
//! nothing of the producer itself.

use std::sync::Mutex;
use std::time::Instant;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Timed-out sends (queued while the broker answered metadata, with no
/// successful send in between) after which an idempotent producer counts as
/// broken: see [`ProducerState::broker_answers`].
const STUCK_TIMEOUTS: u32 = 3;

/// Why the producer can no longer publish, and the evidence that it is stuck.
#[derive(Default)]
pub(super) struct ProducerState {
    /// Why the producer can no longer publish (a fencing or sequence error
    /// a send reported, or a stuck producer); `None` while it works.
    broken: Mutex<Option<String>>,
    /// Sends that time out although the broker answers.
    stuck: Mutex<Stuck>,
}

/// Evidence of an idempotent producer the broker no longer accepts, though
/// it answers: sends queued while metadata round trips succeed keep timing out.
#[derive(Default)]
struct Stuck {
    /// Since when health round trips have succeeded without a failure.
    answering_since: Option<Instant>,
    /// Sends queued after `answering_since` that timed out since the last
    /// acknowledged one.
    timeouts: u32,
}

impl ProducerState {
    /// Why the producer was marked broken, if it was.
    pub(super) fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a send's outcome for [`broker_answers`](Self::broker_answers):
    /// an ack resets the count, a timeout of a send queued while the broker
    /// answered adds to it, other errors leave it. An error that leaves the
    /// producer unusable marks it broken (logged with `bootstrap`).
    pub(super) fn send_outcome<T, U>(
        &self,
        bootstrap: &str,
        queued: Instant,
        sent: &Result<T, (KafkaError, U)>,
    ) {
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        match sent {
            Ok(_) => stuck.timeouts = 0,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _))
                if stuck.answering_since.is_some_and(|since| queued >= since) =>
            {
                stuck.timeouts += 1;
            }
            Err(_) => {}
        }
        drop(stuck);
        if let Err((error, _)) = sent
            && error.rdkafka_error_code().is_some_and(is_producer_fatal)
        {
            self.mark_broken(bootstrap, error);
        }
    }

    /// Records a send error that leaves the producer unusable.
    fn mark_broken(&self, bootstrap: &str, error: &KafkaError) {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if broken.is_none() {
            tracing::error!(
                bootstrap = %bootstrap,
                error = %error,
                "the kafka producer failed fatally; publishes fail UNAVAILABLE until it is rebuilt"
            );
            *broken = Some(error.to_string());
        }
    }

    /// Called by the health probe with the outcome of its metadata round
    /// trip. A broker that answers metadata while every send queued since
    /// then times out ([`STUCK_TIMEOUTS`] in a row) has forgotten the
    /// idempotent producer's id: a restarted tansu answers
    /// `UNKNOWN_PRODUCER_ID`, on which librdkafka bumps the epoch and retries
    /// until `produce_timeout`, forever, reporting only `MessageTimedOut`.
    /// Such a producer (when `idempotent`) is marked broken (and so replaced
    /// by the rebuilder, see [`crate::rebuilder`]). Sends queued before the
    /// broker answered again are not counted: after an ordinary outage they
    /// are delivered or time out as usual.
    pub(super) fn broker_answers(&self, answers: bool, idempotent: bool, bootstrap: &str) {
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        if !answers {
            *stuck = Stuck::default();
            return;
        }
        stuck.answering_since.get_or_insert_with(Instant::now);
        if idempotent && stuck.timeouts >= STUCK_TIMEOUTS {
            let timeouts = stuck.timeouts;
            drop(stuck);
            let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
            if broken.is_none() {
                tracing::error!(
                    bootstrap = %bootstrap,
                    timeouts,
                    "kafka sends keep timing out while the broker answers (it no longer \
                     knows the idempotent producer's id); publishes fail UNAVAILABLE until \
                     the producer is rebuilt"
                );
                *broken = Some(format!(
                    "{timeouts} sends timed out in a row while the broker answered metadata"
                ));
            }
        }
    }
}

/// Send errors after which an (idempotent) producer never delivers again:
/// librdkafka's own fatal error, a fenced producer id, a broken sequence.
/// (`InvalidProducerEpoch` and `UnknownProducerId` are left to librdkafka,
/// which bumps the epoch and retries.)
fn is_producer_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_and_sequence_errors_break_the_producer_timeouts_do_not() {
        assert!(is_producer_fatal(RDKafkaErrorCode::ProducerFenced));
        assert!(is_producer_fatal(
            RDKafkaErrorCode::OutOfOrderSequenceNumber
        ));
        assert!(is_producer_fatal(RDKafkaErrorCode::Fatal));
        assert!(!is_producer_fatal(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_producer_fatal(RDKafkaErrorCode::UnknownProducerId));
    }
}
