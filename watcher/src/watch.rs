//! File watching: `notify` watches (inotify on Linux; recursive watches pick up
//! new directories) feed a channel, and [`Watcher::next_burst`] turns the events
//! into bursts: a burst ends after a quiet period of `debounce` with no relevant
//! event. A trailing-edge debounce rather than notify-debouncer-mini's fixed
//! ticks, so a burst of edits is never split in two by a tick boundary — the
//! guarantee "one build per burst" rests on this.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// A burst never waits longer than this many debounce periods, so a file that is
/// rewritten continuously cannot postpone the build forever.
const MAX_BURST_PERIODS: u32 = 20;

/// Watches directories and yields bursts of changed paths.
#[derive(Debug)]
pub struct Watcher {
    // Dropping the notify watcher stops its thread and closes the channel.
    _inner: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    pending: Pending,
}

impl Watcher {
    /// Watches each of `recursive` recursively and `flat` non-recursively.
    pub fn start(recursive: &[PathBuf], flat: &[PathBuf]) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        // notify calls this from its own thread; an unbounded send never blocks it.
        let mut inner = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|source| Error::Watch {
            path: PathBuf::new(),
            source,
        })?;
        for (dirs, mode) in [
            (recursive, RecursiveMode::Recursive),
            (flat, RecursiveMode::NonRecursive),
        ] {
            for dir in dirs {
                inner.watch(dir, mode).map_err(|source| Error::Watch {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        Ok(Watcher {
            _inner: inner,
            rx,
            pending: Pending::default(),
        })
    }

    /// Waits for the first relevant change (`relevant(path)`), then collects every
    /// further relevant change until `debounce` passes without one. Returns `None`
    /// when `cancel` fires or the watch ends. Events queued while the caller was
    /// busy (e.g. building) join the next burst.
    ///
    /// Cancel-safe: the burst in progress is kept in `self`, so dropping this
    /// future (e.g. in a `select!` with a timer) loses no change and does not
    /// restart the quiet period.
    ///
    /// A new directory (not `ignored_dir`) is scanned for relevant files when the
    /// quiet period ends: files written into it before notify added its watch
    /// produce no event of their own.
    pub async fn next_burst(
        &mut self,
        debounce: Duration,
        relevant: impl Fn(&Path) -> bool,
        ignored_dir: impl Fn(&Path) -> bool,
        cancel: &CancellationToken,
    ) -> Option<Vec<PathBuf>> {
        loop {
            while self.pending.is_empty() {
                let event = tokio::select! {
                    _ = cancel.cancelled() => return None,
                    event = self.rx.recv() => event?,
                };
                self.pending
                    .collect(event, &relevant, &ignored_dir, debounce);
            }
            loop {
                let wake = self.pending.wake_at();
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep_until(wake) => break,
                    event = self.rx.recv() => {
                        self.pending.collect(event?, &relevant, &ignored_dir, debounce);
                    }
                }
            }
            let mut burst = std::mem::take(&mut self.pending);
            for dir in burst.new_dirs.drain(..) {
                files_under(&dir, &relevant, &mut burst.paths);
            }
            if !burst.paths.is_empty() {
                burst.paths.sort();
                burst.paths.dedup();
                return Some(burst.paths);
            }
        }
    }
}

/// The burst being collected.
#[derive(Debug, Default)]
struct Pending {
    paths: Vec<PathBuf>,
    new_dirs: Vec<PathBuf>,
    /// Set by the first change: when the burst ends at the latest.
    deadline: Option<tokio::time::Instant>,
    /// Moved on by every change.
    quiet_until: Option<tokio::time::Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.new_dirs.is_empty()
    }

    fn wake_at(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        self.quiet_until
            .unwrap_or(now)
            .min(self.deadline.unwrap_or(now))
    }

    /// Adds the relevant paths of one notify event (reads and errors are skipped;
    /// an error is logged, as a lost event at worst delays a rebuild to the next
    /// edit); a relevant change extends the quiet period.
    fn collect(
        &mut self,
        event: notify::Result<notify::Event>,
        relevant: &impl Fn(&Path) -> bool,
        ignored_dir: &impl Fn(&Path) -> bool,
        debounce: Duration,
    ) {
        let event = match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => event,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, "file watch error");
                return;
            }
        };
        let mut changed = false;
        for path in event.paths {
            if path.is_dir() {
                if matches!(event.kind, EventKind::Create(_)) && !ignored_dir(&path) {
                    self.new_dirs.push(path);
                    changed = true;
                }
            } else if relevant(&path) {
                self.paths.push(path);
                changed = true;
            }
        }
        if changed {
            let now = tokio::time::Instant::now();
            self.deadline
                .get_or_insert(now + debounce * MAX_BURST_PERIODS);
            self.quiet_until = Some(now + debounce);
        }
    }
}

/// Adds the relevant files under `dir` (recursively; symlinks not followed).
fn files_under(dir: &Path, relevant: &impl Fn(&Path) -> bool, paths: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(&path, relevant, paths),
            Ok(t) if t.is_file() && relevant(&path) => paths.push(path),
            _ => {}
        }
    }
}
