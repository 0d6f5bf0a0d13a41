//! `backend.timeseries`: the TimeSeries abstraction's settings, their
//! defaults and their pure validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `backend.timeseries`. Every key has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TimeSeriesConfig {
    /// Partitions of a series topic that Insert creates (with
    /// `auto_create_topics`). More partitions spread writes; a query reads
    /// every one of them.
    pub(crate) partitions: i32,
    /// Events a Query holds in its ordered look-ahead at most. A partition
    /// whose events are out of time order by more than this makes the query
    /// read the series again (see the README); memory is about this many
    /// events.
    pub(crate) lookahead: usize,
    /// Longest `end_ms - start_ms` a Query may ask for; unset = any.
    #[serde(with = "humantime_serde")]
    pub(crate) max_range: Option<Duration>,
    /// Longest a Query waits for the next record of a partition it has not
    /// finished; then it ends `UNAVAILABLE` (with a resume cursor).
    #[serde(with = "humantime_serde")]
    pub(crate) stall_timeout: Duration,
    /// Most events one Insert may carry.
    pub(crate) max_batch: usize,
}

impl Default for TimeSeriesConfig {
    fn default() -> Self {
        TimeSeriesConfig {
            partitions: 6,
            lookahead: 10_000,
            max_range: None,
            stall_timeout: Duration::from_secs(10),
            max_batch: 10_000,
        }
    }
}

impl TimeSeriesConfig {
    /// Every problem, each starting with its key. Pure.
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.partitions) {
            problems.push("`backend.timeseries.partitions`: must be between 1 and 10000".into());
        }
        if !(1..=10_000_000).contains(&self.lookahead) {
            problems.push("`backend.timeseries.lookahead`: must be between 1 and 10000000".into());
        }
        if self.max_range.is_some_and(|r| r < Duration::from_millis(1)) {
            problems.push("`backend.timeseries.max_range`: must be at least 1ms".into());
        }
        if self.stall_timeout < Duration::from_millis(100) {
            problems.push("`backend.timeseries.stall_timeout`: must be at least 100ms".into());
        }
        if !(1..=1_000_000).contains(&self.max_batch) {
            problems.push("`backend.timeseries.max_batch`: must be between 1 and 1000000".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_rejects_unknown_ones() {
        let config: TimeSeriesConfig = serde_yaml::from_str(
            "partitions: 12\nlookahead: 500\nmax_range: 7days\nstall_timeout: 3s\nmax_batch: 100\n",
        )
        .expect("parses");
        assert_eq!(config.partitions, 12);
        assert_eq!(config.lookahead, 500);
        assert_eq!(config.max_range, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(config.stall_timeout, Duration::from_secs(3));
        assert_eq!(config.max_batch, 100);
        assert!(config.validate().is_empty());
        assert!(serde_yaml::from_str::<TimeSeriesConfig>("look_ahead: 5").is_err());
        let bad = TimeSeriesConfig {
            lookahead: 0,
            ..TimeSeriesConfig::default()
        };
        assert!(bad.validate()[0].starts_with("`backend.timeseries.lookahead`"));
    }
}
