//! The health verdict of a backend probe that answered (PostgreSQL's
//! `SELECT 1`, Redis' `PING`, Kafka's metadata request), alike in every
//! plugin: DEGRADED when the answer was slow, else when the plugin sees
//! pressure of its own (a nearly exhausted pool, a long producer queue),
//! else HEALTHY.

use std::time::Duration;

use crate::{HealthReport, HealthStatus};

/// The report of `probe` (as the message names it, e.g. `postgres SELECT 1`)
/// answered in `latency`: DEGRADED "`<probe>` took N ms (over M ms)" past
/// `degraded_latency`, else DEGRADED with `pressure` when there is one, else
/// HEALTHY with `healthy`. Carries the `latency_ms` detail.
pub fn answered(
    probe: &str,
    latency: Duration,
    degraded_latency: Duration,
    pressure: Option<String>,
    healthy: &str,
) -> HealthReport {
    let (status, message) = if latency > degraded_latency {
        let (took, limit) = (latency.as_millis(), degraded_latency.as_millis());
        let slow = format!("{probe} took {took} ms (over {limit} ms)");
        (HealthStatus::Degraded, slow)
    } else if let Some(pressure) = pressure {
        (HealthStatus::Degraded, pressure)
    } else {
        (HealthStatus::Healthy, healthy.to_string())
    };
    HealthReport::new(status, message).detail("latency_ms", latency.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(100);

    #[test]
    fn a_slow_answer_outranks_pressure_and_pressure_outranks_healthy() {
        let busy = || Some("pool nearly exhausted".to_string());
        let slow = answered(
            "db PING",
            Duration::from_millis(250),
            LIMIT,
            busy(),
            "db answers",
        );
        assert_eq!(slow.status, HealthStatus::Degraded);
        assert_eq!(slow.message, "db PING took 250 ms (over 100 ms)");
        assert_eq!(slow.details["latency_ms"], "250");

        let pressed = answered("db PING", LIMIT, LIMIT, busy(), "db answers");
        assert_eq!(pressed.status, HealthStatus::Degraded);
        assert_eq!(pressed.message, "pool nearly exhausted");

        let fine = answered(
            "db PING",
            Duration::from_millis(3),
            LIMIT,
            None,
            "db answers",
        );
        assert_eq!(fine.status, HealthStatus::Healthy);
        assert_eq!(fine.message, "db answers");
        assert_eq!(fine.details["latency_ms"], "3");
    }
}
