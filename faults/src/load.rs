//! [`Load`]: a steady client load of a few concurrent callers, each calling an
//! async operation in a loop. Every call is bounded by a hang limit (well
//! above the deadline the call carries), so a call that never answers is
//! counted as hung instead of stalling the test; every call leaves a
//! [`CallRecord`] (when it started and ended, its outcome, what it
//! acknowledged) from which tests count outcomes per phase of a fault.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tonic::{Code, Status};

/// How a load runs.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Concurrent callers.
    pub callers: usize,
    /// Pause after a successful call (keeps the load steady rather than
    /// saturating a 2-core machine).
    pub pace: Duration,
    /// Pause after a failed call.
    pub backoff: Duration,
    /// A call still unanswered after this long is recorded as hung (and
    /// abandoned). Keep it well above the call's own deadline.
    pub hang_limit: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            callers: 4,
            pace: Duration::from_millis(10),
            backoff: Duration::from_millis(50),
            hang_limit: Duration::from_secs(10),
        }
    }
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The call succeeded.
    Ok,
    /// The call failed with a gRPC status.
    Failed {
        /// The status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// No answer within the hang limit.
    Hung,
}

/// One call made by a [`Load`].
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Which caller made it (0-based).
    pub caller: usize,
    /// The caller's sequence number (1-based).
    pub seq: u64,
    /// When the call started.
    pub started: Instant,
    /// When it ended (answer, or the hang limit).
    pub finished: Instant,
    /// How it ended.
    pub outcome: CallOutcome,
    /// What a successful call acknowledged (a key written, a message id), if
    /// the operation reports one.
    pub ack: Option<String>,
}

impl CallRecord {
    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.outcome == CallOutcome::Ok
    }

    /// The failure's code, if the call failed with a status.
    pub fn code(&self) -> Option<Code> {
        match &self.outcome {
            CallOutcome::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The failure's message, if the call failed with a status.
    pub fn message(&self) -> Option<&str> {
        match &self.outcome {
            CallOutcome::Failed { message, .. } => Some(message),
            _ => None,
        }
    }

    /// How long the call took.
    pub fn elapsed(&self) -> Duration {
        self.finished.saturating_duration_since(self.started)
    }
}

type Records = Arc<Mutex<Vec<CallRecord>>>;

fn lock(records: &Records) -> std::sync::MutexGuard<'_, Vec<CallRecord>> {
    records.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running load; [`finish`](Load::finish) stops it and returns the records.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    records: Records,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `options.callers` callers, each calling `op(caller, seq)` in a
    /// loop until [`finish`](Load::finish). `op` returns what a successful
    /// call acknowledged (or `None`).
    pub fn start<F, Fut>(options: LoadOptions, op: F) -> Load
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<String>, Status>> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let records: Records = Arc::default();
        let op = Arc::new(op);
        let tasks = (0..options.callers)
            .map(|caller| {
                let (stop, records, op) = (stop.clone(), records.clone(), op.clone());
                tokio::spawn(async move {
                    let mut seq = 0;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let started = Instant::now();
                        let (outcome, ack) =
                            match tokio::time::timeout(options.hang_limit, op(caller, seq)).await {
                                Ok(Ok(ack)) => (CallOutcome::Ok, ack),
                                Ok(Err(status)) => (
                                    CallOutcome::Failed {
                                        code: status.code(),
                                        message: status.message().to_string(),
                                    },
                                    None,
                                ),
                                Err(_) => (CallOutcome::Hung, None),
                            };
                        let pause = if outcome == CallOutcome::Ok {
                            options.pace
                        } else {
                            options.backoff
                        };
                        lock(&records).push(CallRecord {
                            caller,
                            seq,
                            started,
                            finished: Instant::now(),
                            outcome,
                            ack,
                        });
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            records,
            tasks,
        }
    }

    /// A snapshot of the records so far.
    pub fn records(&self) -> Vec<CallRecord> {
        lock(&self.records).clone()
    }

    /// Counts of the calls so far that match `filter`.
    pub fn counts(&self, filter: impl Fn(&CallRecord) -> bool) -> Counts {
        Counts::of(lock(&self.records).iter().filter(|r| filter(r)))
    }

    /// Waits until at least `n` calls that *started* at or after `since`
    /// satisfy `want`; false if `timeout` passed first.
    pub async fn wait_calls(
        &self,
        since: Instant,
        n: usize,
        timeout: Duration,
        want: impl Fn(&CallRecord) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = lock(&self.records)
                .iter()
                .filter(|r| r.started >= since && want(r))
                .count();
            if seen >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the callers (each finishes its current call, bounded by the hang
    /// limit) and returns every record.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load caller panicked");
        }
        let records = std::mem::take(&mut *lock(&self.records));
        Report { records }
    }
}

/// Every call of a finished [`Load`].
#[derive(Debug, Clone)]
pub struct Report {
    /// The calls, in the order they ended.
    pub records: Vec<CallRecord>,
}

impl Report {
    /// Counts of every call.
    pub fn all(&self) -> Counts {
        Counts::of(self.records.iter())
    }

    /// Counts of the calls matching `filter`.
    pub fn counts(&self, filter: impl Fn(&CallRecord) -> bool) -> Counts {
        Counts::of(self.records.iter().filter(|r| filter(r)))
    }

    /// Counts of the calls that started in `[from, to)`.
    pub fn started_between(&self, from: Instant, to: Instant) -> Counts {
        self.counts(|r| r.started >= from && r.started < to)
    }

    /// When the first successful call ended: calls started earlier met a
    /// cold plugin (first connections, logins) and are not steady state.
    pub fn warm_since(&self) -> Instant {
        self.records
            .iter()
            .filter(|r| r.is_ok())
            .map(|r| r.finished)
            .min()
            .unwrap_or_else(Instant::now)
    }

    /// The acknowledgements of successful calls matching `filter`.
    pub fn acked(&self, filter: impl Fn(&CallRecord) -> bool) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| r.is_ok() && filter(r))
            .filter_map(|r| r.ack.clone())
            .collect()
    }

    /// The last `n` calls of every caller (fewer if it made fewer).
    pub fn last_per_caller(&self, n: usize) -> Vec<&CallRecord> {
        let mut per: BTreeMap<usize, Vec<&CallRecord>> = BTreeMap::new();
        for r in &self.records {
            per.entry(r.caller).or_default().push(r);
        }
        per.into_values()
            .flat_map(|calls| {
                let skip = calls.len().saturating_sub(n);
                calls.into_iter().skip(skip)
            })
            .collect()
    }

    /// Up to `n` distinct failure descriptions (`Code: message`), for assertion
    /// messages.
    pub fn sample_failures(&self, n: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.records {
            let text = match &r.outcome {
                CallOutcome::Ok => continue,
                CallOutcome::Failed { code, message } => format!("{code:?}: {message}"),
                CallOutcome::Hung => format!("hung for {:?}", r.elapsed()),
            };
            if !out.contains(&text) {
                out.push(text);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }
}

/// Outcome counts of a set of calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls made.
    pub sent: u64,
    /// Calls that succeeded (acknowledged).
    pub ok: u64,
    /// Calls without an answer within the hang limit.
    pub hung: u64,
    /// Failed calls by status code.
    pub failed: BTreeMap<String, u64>,
}

impl Counts {
    fn of<'a>(records: impl Iterator<Item = &'a CallRecord>) -> Counts {
        let mut counts = Counts::default();
        for r in records {
            counts.sent += 1;
            match &r.outcome {
                CallOutcome::Ok => counts.ok += 1,
                CallOutcome::Hung => counts.hung += 1,
                CallOutcome::Failed { code, .. } => {
                    *counts.failed.entry(format!("{code:?}")).or_default() += 1;
                }
            }
        }
        counts
    }

    /// Failed calls of any code.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Failed calls with `code`.
    pub fn failed_with(&self, code: Code) -> u64 {
        self.failed
            .get(&format!("{code:?}"))
            .copied()
            .unwrap_or_default()
    }

    /// Failed calls whose code is not in `allowed`.
    pub fn failed_other_than(&self, allowed: &[Code]) -> u64 {
        self.failed_total() - allowed.iter().map(|c| self.failed_with(*c)).sum::<u64>()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {}, acknowledged {}, hung {}, failed {}",
            self.sent,
            self.ok,
            self.hung,
            self.failed_total()
        )?;
        if !self.failed.is_empty() {
            let by: Vec<String> = self
                .failed
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            write!(f, " ({})", by.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(caller: usize, seq: u64, outcome: CallOutcome) -> CallRecord {
        let now = Instant::now();
        CallRecord {
            caller,
            seq,
            started: now,
            finished: now,
            outcome,
            ack: Some(format!("{caller}-{seq}")),
        }
    }

    #[test]
    fn counts_by_code_and_display() {
        let failed = |code| CallOutcome::Failed {
            code,
            message: "x".into(),
        };
        let report = Report {
            records: vec![
                record(0, 1, CallOutcome::Ok),
                record(0, 2, failed(Code::Unavailable)),
                record(1, 1, failed(Code::Unavailable)),
                record(1, 2, failed(Code::DeadlineExceeded)),
                record(1, 3, CallOutcome::Hung),
                record(1, 4, CallOutcome::Ok),
            ],
        };
        let all = report.all();
        assert_eq!(
            (all.sent, all.ok, all.hung, all.failed_total()),
            (6, 2, 1, 3)
        );
        assert_eq!(all.failed_with(Code::Unavailable), 2);
        assert_eq!(all.failed_other_than(&[Code::Unavailable]), 1);
        assert_eq!(
            all.to_string(),
            "sent 6, acknowledged 2, hung 1, failed 3 (DeadlineExceeded 1, Unavailable 2)"
        );
        assert_eq!(report.acked(|_| true), ["0-1", "1-4"]);
        let last: Vec<(usize, u64)> = report
            .last_per_caller(1)
            .iter()
            .map(|r| (r.caller, r.seq))
            .collect();
        assert_eq!(last, [(0, 2), (1, 4)]);
    }
}
