//! [`Deadline`]: when a call must be answered by, as a plugin carries it from
//! the request (see [`crate::deadline()`]) down to its backend calls, and the
//! two operations on it that more than one module needs: waiting for it to
//! pass ([`expired`]) and bounding several calls served by one backend
//! statement ([`latest`]).
//!
//! It lives in core rather than in a plugin's backend because a plugin's
//! modules share it (postgres: the backend that bounds statements with it and
//! the coalescing queue that stores it per queued call); a module that
//! defines it would be imported by every other, in a circle.

use tokio::time::Instant;

/// When a call must be answered by (the client's `grpc-timeout`, made a bit
/// earlier by [`crate::deadline()`]); `None` when the client set no deadline.
pub type Deadline = Option<Instant>;

/// When the server took a call in (a request extension the drain gate, the
/// outermost layer, sets): the client's `grpc-timeout` runs from there, as
/// tonic's own timer for it does, not from when a handler first ran.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

/// Completes when `deadline` passes; never when there is none. For
/// `tokio::select!` next to the work the deadline bounds.
pub async fn expired(deadline: Deadline) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The latest of `deadlines`, for work that serves every one of the calls
/// (each caller still stops waiting at its own): `None` (unbounded) when any
/// of them has no deadline, or when there are none.
pub fn latest(deadlines: impl IntoIterator<Item = Deadline>) -> Deadline {
    let mut latest = None;
    for deadline in deadlines {
        let deadline = deadline?;
        latest = Some(latest.map_or(deadline, |l: Instant| l.max(deadline)));
    }
    latest
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expired_completes_exactly_when_the_deadline_passes() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(250);
        let early = tokio::time::timeout(Duration::from_millis(249), expired(Some(deadline)));
        assert!(early.await.is_err(), "completed before the deadline");
        expired(Some(deadline)).await;
        assert_eq!(Instant::now(), deadline);
        // A deadline already passed completes at once.
        expired(Some(start)).await;
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_never_expires() {
        let waited = tokio::time::timeout(Duration::from_secs(3600), expired(None));
        assert!(waited.await.is_err(), "an absent deadline expired");
    }

    #[test]
    fn the_latest_deadline_bounds_shared_work_and_none_means_unbounded() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert_eq!(latest([Some(later), Some(now)]), Some(later));
        assert_eq!(latest([Some(now)]), Some(now));
        assert_eq!(latest([Some(now), None, Some(later)]), None);
        assert_eq!(latest([]), None);
    }
}
