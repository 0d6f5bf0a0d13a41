//! What the TimeSeries abstraction needs from Kafka: writing one event as a
//! record (timestamp = event time, key = event id, tags as headers), the
//! partitions of a series topic without creating it, each partition's start
//! offset for a time and its high-water mark, and a reader of one partition
//! between two offsets. Knows nothing about gRPC or query order (see
//! `crate::timeseries`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::context::StreamContext;
use super::produce::new_message_id;
use super::{Backend, KafkaConsumer};
use crate::config::TimeSeriesConfig;
use crate::error::Error;

/// How long a query reader's fetch waits at the end of a partition. tansu
/// answers a fetch only when this wait expires (DESIGN §6), so the librdkafka
/// default (500 ms) would cost half a second per fetch there; Kafka answers
/// at once when data is available, so a short wait costs nothing while a
/// query reads (it stops at the high-water mark).
const READER_FETCH_WAIT_MS: &str = "1";

/// Least prefetch (KiB) a query reader gets, however many partitions share
/// `backend.fetch_buffer_kbytes`.
const MIN_READER_PREFETCH_KB: usize = 64;

/// One partition's place in a query: where reading starts and the
/// high-water mark (first offset not to read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The partition.
    pub(crate) partition: i32,
    /// First offset to read.
    pub(crate) start: i64,
    /// High-water mark: offsets at or past it are not read.
    pub(crate) end: i64,
}

impl Backend {
    /// `backend.timeseries`.
    pub(crate) fn timeseries(&self) -> &TimeSeriesConfig {
        &self.config.timeseries
    }

    /// The partitions of an existing series topic; `Error::SeriesNotFound`
    /// if the cluster does not know it (a query never creates a series).
    pub(crate) async fn series_partitions(&self, topic: &str) -> Result<Vec<i32>, Error> {
        self.partitions(topic)
            .await?
            .ok_or_else(|| Error::SeriesNotFound(topic.to_string()))
    }

    /// Writes one event and waits for the broker's acknowledgement (at most
    /// `produce_timeout`): the record's timestamp is the event time
    /// (CreateTime), its key the event id, its headers the tags.
    pub(crate) async fn write_event(
        &self,
        topic: &str,
        timestamp_ms: i64,
        event_id: &str,
        payload: &[u8],
        tags: &HashMap<String, String>,
    ) -> Result<(), Error> {
        // The caller's trace context rides in the headers (as for Publish), so
        // a Query delivering the event continues the inserter's trace; a
        // tag of the same name gives way to it.
        let headers = super::produce::traced_headers(tags, 0);
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(payload)
            .key(event_id.as_bytes())
            .timestamp(timestamp_ms)
            .headers(headers);
        let queued = Instant::now();
        let sent = self.producer()?.send(record, self.produce_timeout).await;
        self.state.send_outcome(&self.brokers, queued, &sent);
        match sent {
            Ok(_) => Ok(()),
            Err((source, _)) => {
                // A restarted broker or a deleted topic: look it up next time.
                self.forget_topic(topic);
                Err(Error::Produce {
                    topic: topic.to_string(),
                    source,
                })
            }
        }
    }

    /// Settings of a series reader: outside any group (`prism-ts-<id>`),
    /// told the end of each partition, and with a short fetch wait unless
    /// `backend.librdkafka` sets one.
    fn reader_config(&self) -> ClientConfig {
        let mut config = self.ungrouped_config("ts");
        config.set("enable.partition.eof", "true");
        if config.get("fetch.wait.max.ms").is_none() {
            config.set("fetch.wait.max.ms", READER_FETCH_WAIT_MS);
        }
        config
    }

    /// For each of `partitions`: the first offset whose timestamp is at or
    /// after `at_ms` (the broker's time index; tansu answers 0 for every
    /// time, which is merely slower: readers filter by time anyway) and the
    /// high-water mark now.
    pub(crate) async fn series_spans(
        &self,
        topic: &str,
        partitions: &[i32],
        at_ms: i64,
    ) -> Result<Vec<Span>, Error> {
        let config = self.reader_config();
        let consumer: BaseConsumer<StreamContext> = config
            .create_with_context(StreamContext::default())
            .map_err(Error::Client)?;
        let timeout = self.metadata_timeout.max(Duration::from_secs(5));
        let (topic, partitions) = (topic.to_string(), partitions.to_vec());
        let spans = tokio::task::spawn_blocking(move || -> Result<Vec<Span>, KafkaError> {
            let mut query = TopicPartitionList::new();
            for &partition in &partitions {
                query.add_partition_offset(&topic, partition, Offset::Offset(at_ms.max(0)))?;
            }
            let found = consumer.offsets_for_times(query, timeout)?;
            let highs = high_water_marks(&consumer, &topic, &partitions, timeout)?;
            let mut spans = Vec::new();
            for element in found.elements() {
                let end = highs.get(&element.partition()).copied().unwrap_or(0);
                // No record at or after the time: nothing to read there.
                let start = match element.offset() {
                    Offset::Offset(o) if o >= 0 => o.min(end),
                    _ => end,
                };
                spans.push(Span {
                    partition: element.partition(),
                    start,
                    end,
                });
            }
            spans.sort_by_key(|s| s.partition);
            Ok(spans)
        })
        .await
        .map_err(Error::Task)?;
        spans.map_err(Error::Consumer)
    }

    /// A reader of `topic`/`span.partition` from `span.start` up to (not
    /// including) `span.end`; it gives up with `Error::Stalled` when no
    /// record arrives within `stall` while it has more to read.
    pub(crate) fn series_reader(
        &self,
        topic: &str,
        span: Span,
        stall: Duration,
        readers: usize,
    ) -> Result<SeriesReader, Error> {
        let mut config = self.reader_config();
        // The readers of one query share `fetch_buffer_kbytes` of prefetch.
        let share = (self.config.fetch_buffer_kbytes / readers.max(1)).max(MIN_READER_PREFETCH_KB);
        config
            .set("queued.max.messages.kbytes", share.to_string())
            .set("auto.offset.reset", "earliest");
        let consumer: KafkaConsumer = config
            .create_with_context(StreamContext::default())
            .map_err(Error::Client)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, span.partition, Offset::Offset(span.start))
            .map_err(Error::Consumer)?;
        consumer.assign(&tpl).map_err(Error::Consumer)?;
        Ok(SeriesReader {
            consumer: Some(consumer),
            topic: topic.to_string(),
            partition: span.partition,
            next: span.start,
            end: span.end,
            stall,
        })
    }
}

/// The high-water mark of each partition as a fetch reports it. tansu
/// answers ListOffsets(latest) with the base offset of the partition's last
/// record batch, not the offset after its last record (measured: 413 where
/// fetches report 504), so the listed offset is only where a fetch starts:
/// `consumer` reads from there to the end of every partition (for Kafka, at
/// once: nothing is after it); the end is the offset after the last record
/// read there (or the listed offset when there was none).
fn high_water_marks(
    consumer: &BaseConsumer<StreamContext>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    let mut highs = HashMap::new();
    for &partition in partitions {
        let (_, listed) = consumer.fetch_watermarks(topic, partition, timeout)?;
        tpl.add_partition_offset(topic, partition, Offset::Offset(listed.max(0)))?;
        highs.insert(partition, listed.max(0));
    }
    consumer.assign(&tpl)?;
    let mut open: std::collections::HashSet<i32> = partitions.iter().copied().collect();
    let deadline = Instant::now() + timeout;
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(err)) => tracing::debug!(topic, error = %err, "watermark probe error"),
            // A record between the listed offset and the end.
            Some(Ok(message)) => {
                let high = highs.entry(message.partition()).or_insert(0);
                *high = (*high).max(message.offset() + 1);
            }
            None => {}
        }
    }
    Ok(highs)
}

/// Reads one partition in offset order between two offsets.
pub(crate) struct SeriesReader {
    /// `Some` until dropped (destroying a consumer blocks; see `Drop`).
    consumer: Option<KafkaConsumer>,
    topic: String,
    partition: i32,
    /// The next offset to read.
    next: i64,
    /// The high-water mark captured when the query started.
    end: i64,
    stall: Duration,
}

impl SeriesReader {
    /// The next offset to be read (the end once done).
    pub(crate) fn position(&self) -> i64 {
        self.next
    }

    /// True once every offset up to the high-water mark was read.
    pub(crate) fn done(&self) -> bool {
        self.next >= self.end
    }

    /// The next record, or `None` at the high-water mark. Transport errors
    /// are retried by librdkafka; when no record comes within the stall
    /// timeout the reader gives up (`Error::Stalled`, UNAVAILABLE).
    pub(crate) async fn next(&mut self) -> Result<Option<BorrowedMessage<'_>>, Error> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Err(Error::Closed);
        };
        let deadline = tokio::time::Instant::now() + self.stall;
        let mut last_error = None;
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => {
                    return Err(Error::Stalled {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        waited: self.stall,
                        cause: last_error,
                    });
                }
                // The partition ends before the captured mark (e.g. the
                // topic was recreated): nothing more to read.
                Ok(Err(KafkaError::PartitionEOF(_))) => {
                    self.end = self.next;
                    return Ok(None);
                }
                Ok(Err(err)) => {
                    tracing::debug!(topic = %self.topic, partition = self.partition, error = %err, "query reader error");
                    last_error = Some(err.to_string());
                }
                Ok(Ok(message)) => {
                    let offset = message.offset();
                    if offset >= self.end {
                        self.next = self.end;
                        return Ok(None);
                    }
                    self.next = offset + 1;
                    return Ok(Some(message));
                }
            }
        }
    }
}

/// Destroying a consumer blocks (it closes its broker connections and joins
/// its threads): done on a blocking thread.
impl Drop for SeriesReader {
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(consumer));
            }
            Err(_) => drop(consumer),
        }
    }
}

/// A new event id: a random (version 4) UUID, like Publish's message ids.
pub(crate) fn new_event_id() -> String {
    new_message_id()
}
