//! A Query's task: reads the series' partitions between the offsets
//! captured when the query started and sends the matching events in
//! (timestamp, partition, offset) order, once each, with bounded memory
//! (see [`super::merge`] and the README's "TimeSeries" section).
//!
//! A query is one or more *passes*, each a read of the partitions from
//! their start offsets to the high-water marks:
//! 1. the first pass reads every partition concurrently into the
//!    [`Lookahead`] and sends it, in order, once all are read. A query
//!    matching at most `lookahead` events is done: one read. Otherwise the
//!    look-ahead kept the smallest `lookahead` events (everything below its
//!    *ceiling*), and the events it had to leave are noted as the smallest
//!    timestamp per run of offsets ([`Segments`]);
//! 2. each further pass is a k-way merge: it reads, always from the
//!    partition whose next event may be the earliest (its bound from the
//!    runs), and sends an event as soon as no partition can still produce
//!    an earlier one. For events inserted in time order it holds about one
//!    run per partition, so it ends the query; events far out of order make
//!    the look-ahead overflow again and another pass follow.
//!
//! Correctness never depends on insertion order, only the number of passes
//! (reads of the series) does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::try_join_all;
use prism_plugin_core::proto::timeseries::{Event, QueryEnd, QueryResponse, query_response};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::cursor::{Cursor, Key};
use super::merge::{Dedup, Held, Lookahead, Segments};
use crate::backend::{Backend, SeriesReader, Span, header_strings};
use crate::error::Error;

/// Trailer carrying the resume cursor when a Query ends with an error.
pub(crate) const CURSOR_TRAILER: &str = "x-prism-cursor";

/// A validated Query.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The series topic.
    pub(crate) topic: String,
    /// Inclusive start, epoch ms.
    pub(crate) start_ms: i64,
    /// Exclusive end, epoch ms.
    pub(crate) end_ms: i64,
    /// Events to send at most; 0 = all.
    pub(crate) limit: u64,
    /// Tags every event must carry.
    pub(crate) tags: BTreeMap<String, String>,
    /// Identity of the query, for cursors.
    pub(crate) fingerprint: u64,
    /// Where a previous page ended.
    pub(crate) resume: Option<Key>,
}

/// The response channel of a Query.
pub(crate) type Reply = mpsc::Sender<Result<QueryResponse, Status>>;

/// Why a query ended before its range was exhausted.
enum Stop {
    /// The client cancelled, went away or its deadline passed.
    ClientGone,
    /// `limit` events were sent.
    Limit,
    /// The broker or the plugin ended it.
    Failed(Error),
}

/// How a pass ended.
enum PassEnd {
    /// Everything in range was sent.
    Done,
    /// Events above the ceiling are left, in these runs.
    Again(Vec<Segments>),
}

/// Runs a Query to its end, then sends `end` (or an error status whose
/// trailer holds a cursor to resume from).
pub(crate) async fn run(
    backend: Arc<Backend>,
    plan: Plan,
    spans: Vec<Span>,
    tx: Reply,
    cancel: CancellationToken,
) {
    let config = backend.timeseries().clone();
    let readers = i64::try_from(spans.len().max(1)).unwrap_or(1);
    let lookahead = config.lookahead;
    let mut run = Run {
        backend: &backend,
        ends: spans.iter().map(|s| (s.partition, s.end)).collect(),
        processed: plan.resume,
        last_sent: plan.resume,
        plan: &plan,
        tx: &tx,
        cancel: &cancel,
        sent: 0,
        dedup: Dedup::default(),
        lookahead,
        run_size: (i64::try_from(lookahead).unwrap_or(i64::MAX) / (2 * readers)).max(1),
        stall: config.stall_timeout,
        passes: 1,
    };
    let outcome = run.execute(spans).await;
    let (sent, cursor, passes) = (run.sent, run.cursor(), run.passes);
    tracing::debug!(series = %plan.topic, sent, passes, "query ended");
    let end = |next_cursor: String| QueryResponse {
        item: Some(query_response::Item::End(QueryEnd {
            next_cursor,
            returned: i64::try_from(sent).unwrap_or(i64::MAX),
        })),
    };
    match outcome {
        Ok(()) => {
            let _ = tx.send(Ok(end(String::new()))).await;
        }
        Err(Stop::Limit) => {
            let _ = tx.send(Ok(end(cursor.unwrap_or_default()))).await;
        }
        Err(Stop::ClientGone) => {
            tracing::debug!(series = %plan.topic, sent, "query ended: client gone");
        }
        Err(Stop::Failed(err)) => {
            tracing::debug!(series = %plan.topic, sent, error = %err, "query failed");
            let mut status = Status::from(err);
            if let Some(value) = cursor.and_then(|c| c.parse().ok()) {
                status.metadata_mut().insert(CURSOR_TRAILER, value);
            }
            let _ = tx.send(Err(status)).await;
        }
    }
}

/// One Query's state across its passes.
struct Run<'a> {
    backend: &'a Backend,
    plan: &'a Plan,
    tx: &'a Reply,
    cancel: &'a CancellationToken,
    /// High-water marks captured at the first page.
    ends: BTreeMap<i32, i64>,
    /// The last event taken from the look-ahead (sent or a dropped copy).
    processed: Option<Key>,
    /// The last event sent (or the resumed cursor's).
    last_sent: Option<Key>,
    sent: u64,
    dedup: Dedup,
    lookahead: usize,
    /// Offsets per run of [`Segments`]: a pass in time order holds about
    /// one run per partition, half the look-ahead in all.
    run_size: i64,
    stall: std::time::Duration,
    /// Passes run so far (reads of the series).
    passes: u32,
}

impl Run<'_> {
    /// The cursor after the last event sent, if any.
    fn cursor(&self) -> Option<String> {
        self.last_sent.map(|after| {
            Cursor {
                fingerprint: self.plan.fingerprint,
                after,
                ends: self.ends.clone(),
            }
            .encode()
        })
    }

    async fn execute(&mut self, mut spans: Vec<Span>) -> Result<(), Stop> {
        let mut segments = match self.first_pass(&spans).await? {
            PassEnd::Done => return Ok(()),
            PassEnd::Again(next) => next,
        };
        loop {
            for (span, runs) in spans.iter_mut().zip(&mut segments) {
                span.start = runs.first_noted().unwrap_or(span.end);
                runs.finish();
            }
            tracing::debug!(series = %self.plan.topic, sent = self.sent, "query look-ahead overflowed; reading again");
            self.passes += 1;
            match self.pass(&spans, &segments).await? {
                PassEnd::Done => return Ok(()),
                PassEnd::Again(next) => segments = next,
            }
        }
    }

    fn readers(&self, spans: &[Span]) -> Result<Vec<Option<SeriesReader>>, Stop> {
        spans
            .iter()
            .map(|span| {
                (span.start < span.end)
                    .then(|| {
                        let (topic, readers) = (&self.plan.topic, spans.len());
                        self.backend
                            .series_reader(topic, *span, self.stall, readers)
                    })
                    .transpose()
            })
            .collect::<Result<_, _>>()
            .map_err(Stop::Failed)
    }

    /// Waits for `fut` unless the client goes away or the plugin drains.
    async fn guarded<T>(&self, fut: impl Future<Output = Result<T, Error>>) -> Result<T, Stop> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Stop::Failed(Error::Draining)),
            () = self.tx.closed() => Err(Stop::ClientGone),
            result = fut => result.map_err(Stop::Failed),
        }
    }

    /// The first pass reads every partition concurrently into the
    /// look-ahead and sends it when all are read: a query matching at most
    /// `lookahead` events costs one read of the series. What overflowed is
    /// noted per run of offsets, for the merge passes that follow.
    async fn first_pass(&mut self, spans: &[Span]) -> Result<PassEnd, Stop> {
        let readers = self.readers(spans)?;
        let shared = std::sync::Mutex::new(First {
            look: Lookahead::new(self.lookahead),
            next: spans
                .iter()
                .map(|s| Segments::new(s.start, s.end, self.run_size))
                .collect(),
            seeds: Vec::new(),
        });
        let after = self.plan.resume;
        let this = &*self;
        let index = partition_index(spans);
        let scans = readers.into_iter().map(|reader| {
            let (shared, index) = (&shared, &index);
            async move {
                let Some(mut reader) = reader else {
                    return Ok(());
                };
                while let Some(message) = reader.next().await? {
                    let Some(key) = this.key(&message) else {
                        continue;
                    };
                    let mut first = shared.lock().unwrap_or_else(|e| e.into_inner());
                    if after.is_some_and(|a| key <= a) {
                        // Ids already sent at the cursor's timestamp.
                        if after.is_some_and(|a| a.ts == key.ts) {
                            first.seeds.push(event_id(&message));
                        }
                        continue;
                    }
                    // What is left may be another partition's (evicted).
                    if let Some(left) = first.admit(key, &message)
                        && let Some(&j) = index.get(&left.partition)
                    {
                        first.next[j].note(left.offset, left.ts);
                    }
                }
                Ok::<_, Error>(())
            }
        });
        this.guarded(try_join_all(scans)).await?;
        let First {
            mut look,
            next,
            seeds,
        } = shared.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(after) = after {
            for id in seeds {
                self.dedup.first(after.ts, &id);
            }
        }
        self.send_below(&mut look, i64::MAX).await?;
        Ok(if look.overflowed() {
            PassEnd::Again(next)
        } else {
            PassEnd::Done
        })
    }

    /// Sends, in order, every held event whose timestamp is below `bound`
    /// (the first copy of each).
    async fn send_below(&mut self, look: &mut Lookahead, bound: i64) -> Result<(), Stop> {
        while let Some((key, held)) = look.pop_below(bound) {
            self.processed = Some(key);
            if self.dedup.first(key.ts, &held.event_id) {
                self.send(key, held).await?;
            }
        }
        Ok(())
    }

    /// The order key of `message` if it is in range and carries the tags.
    fn key(&self, message: &BorrowedMessage<'_>) -> Option<Key> {
        self.matching(message).map(|ts| Key {
            ts,
            partition: message.partition(),
            offset: message.offset(),
        })
    }

    /// The timestamp of `message` if it is in range and carries the tags.
    fn matching(&self, message: &BorrowedMessage<'_>) -> Option<i64> {
        let ts = message.timestamp().to_millis()?;
        if ts < self.plan.start_ms || ts >= self.plan.end_ms {
            return None;
        }
        if !self.plan.tags.is_empty() {
            let headers = message.headers()?;
            let has = |name: &str, value: &str| {
                headers
                    .iter()
                    .any(|h| h.key == name && h.value == Some(value.as_bytes()))
            };
            if !self.plan.tags.iter().all(|(k, v)| has(k, v)) {
                return None;
            }
        }
        Some(ts)
    }

    /// A merge pass: sends, in order, every unsent matching event below the
    /// pass's ceiling, each as soon as no partition can produce an earlier one.
    async fn pass(&mut self, spans: &[Span], bounds: &[Segments]) -> Result<PassEnd, Stop> {
        let mut readers = self.readers(spans)?;
        let mut next: Vec<Segments> = spans
            .iter()
            .map(|s| Segments::new(s.start, s.end, self.run_size))
            .collect();
        let index = partition_index(spans);
        let mut look = Lookahead::new(self.lookahead);
        let after = self.processed;
        loop {
            // The lowest bound over the partitions left, and whose it is.
            let laggard = readers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().filter(|r| !r.done()).map(|r| (i, r)))
                .map(|(i, r)| (bounds[i].bound(r.position()), i))
                .min();
            let bound = laggard.map_or(i64::MAX, |(b, _)| b);
            self.send_below(&mut look, bound).await?;
            let Some((_, i)) = laggard else { break };
            let Some(reader) = readers[i].as_mut() else {
                break;
            };
            let Some(message) = self.guarded(reader.next()).await? else {
                continue;
            };
            let Some(key) = self.key(&message) else {
                continue;
            };
            // Sent (or dropped as a copy) by an earlier pass.
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            if let Some(left) = admit(&mut look, key, &message)
                && let Some(&j) = index.get(&left.partition)
            {
                next[j].note(left.offset, left.ts);
            }
        }
        Ok(if look.overflowed() {
            PassEnd::Again(next)
        } else {
            PassEnd::Done
        })
    }

    async fn send(&mut self, key: Key, held: Held) -> Result<(), Stop> {
        // The inserter's trace context travels in the record headers: the
        // delivery continues that trace; the headers are not tags.
        let mut tags = held.tags;
        prism_plugin_core::otel::delivered(&self.plan.topic, &tags);
        tags.retain(|name, _| !prism_plugin_core::otel::is_trace_header(name));
        let event = Event {
            series: self.plan.topic.clone(),
            timestamp_ms: key.ts,
            event_id: held.event_id,
            payload: held.payload,
            tags,
        };
        let item = QueryResponse {
            item: Some(query_response::Item::Event(event)),
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(Stop::Failed(Error::Draining)),
            sent = self.tx.send(Ok(item)) => sent.map_err(|_| Stop::ClientGone)?,
        }
        self.sent += 1;
        self.last_sent = Some(key);
        if self.plan.limit > 0 && self.sent >= self.plan.limit {
            return Err(Stop::Limit);
        }
        Ok(())
    }
}

/// Partition → its index in `spans`.
fn partition_index(spans: &[Span]) -> HashMap<i32, usize> {
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.partition, i))
        .collect()
}

/// What the first pass's concurrent readers share.
struct First {
    look: Lookahead,
    /// Runs of what overflowed, per partition.
    next: Vec<Segments>,
    /// Ids of events at the resumed cursor's timestamp, sent by earlier pages.
    seeds: Vec<String>,
}

impl First {
    fn admit(&mut self, key: Key, message: &BorrowedMessage<'_>) -> Option<Key> {
        admit(&mut self.look, key, message)
    }
}

/// Offers `message` to `look` (copying it only if it may be kept); returns
/// the key the pass leaves for the next one, if any.
fn admit(look: &mut Lookahead, key: Key, message: &BorrowedMessage<'_>) -> Option<Key> {
    if look.refuses(&key) {
        return Some(key);
    }
    let held = Held {
        event_id: event_id(message),
        payload: message
            .payload()
            .map(bytes::Bytes::copy_from_slice)
            .unwrap_or_default(),
        tags: tags(message),
    };
    look.admit(key, held)
}

/// The record key as the event id (UTF-8, invalid bytes replaced). A record
/// without a key (written by Publish or another producer) gets
/// `partition-offset`, so such records never pass for copies of each other.
fn event_id(message: &BorrowedMessage<'_>) -> String {
    match message.key() {
        Some(key) if !key.is_empty() => String::from_utf8_lossy(key).into_owned(),
        _ => format!("{}-{}", message.partition(), message.offset()),
    }
}

/// The headers as tags (values UTF-8, invalid bytes replaced).
fn tags(message: &BorrowedMessage<'_>) -> HashMap<String, String> {
    header_strings(message)
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}
