//! Publishing: one record with the caller's headers and a plugin-assigned
//! message id, waited for until the broker acknowledges it.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};

use super::{Backend, MESSAGE_ID_HEADER, Published};
use crate::error::Error;

/// The headers of a record: `fields` (a Publish's metadata, an event's tags)
/// and the current span's trace context, which replaces any trace header of
/// the caller's own (a field of the same name gives way to it); `room` more
/// headers can follow without reallocating.
pub(super) fn traced_headers(fields: &HashMap<String, String>, room: usize) -> OwnedHeaders {
    let trace = prism_plugin_core::otel::inject(&tracing::Span::current());
    let mut headers = OwnedHeaders::new_with_capacity(fields.len() + trace.len() + room);
    for (name, value) in fields {
        if !trace.is_empty() && prism_plugin_core::otel::is_trace_header(name) {
            continue;
        }
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    for (name, value) in &trace {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// Checks a record against `backend.max_payload_bytes` (`limit`), counted
/// as its `body` (payload and key) plus every header name and value:
/// `Error::TooLarge` when over.
pub(crate) fn check_record_size(
    body: usize,
    headers: &HashMap<String, String>,
    limit: usize,
) -> Result<(), Error> {
    let size = body
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > limit {
        return Err(Error::TooLarge { size, limit });
    }
    Ok(())
}

impl Backend {
    /// Produces one record and waits for the broker's acknowledgement (as
    /// configured by `acks`), at most `produce_timeout`.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &Bytes,
        metadata: &HashMap<String, String>,
    ) -> Result<Published, Error> {
        self.ensure_topic(topic).await?;
        let message_id = new_message_id();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The plugin's publish span replaces a caller's own trace headers.
            let mut headers = traced_headers(metadata, 1);
            headers = headers.insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(message_id.as_bytes()),
            });
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .payload(payload.as_ref())
                .headers(headers);
            if let Some(key) = key {
                record = record.key(key);
            }
            let queued = Instant::now();
            let producer = self.producer()?;
            let metrics = prism_plugin_core::backend_metrics::get();
            metrics.producer_queue_depth(i64::from(producer.in_flight_count()) + 1);
            let sent = producer.send(record, self.produce_timeout).await;
            metrics.producer_queue_depth(i64::from(producer.in_flight_count()));
            metrics.operation("kafka", "send", queued.elapsed().as_secs_f64());
            // Counts timeouts, and marks the producer broken on a fatal error.
            self.state.send_outcome(&self.brokers, queued, &sent);
            match sent {
                Ok(delivery) => {
                    tracing::trace!(
                        topic,
                        partition = delivery.partition,
                        offset = delivery.offset,
                        "published"
                    );
                    return Ok(Published { message_id });
                }
                Err((KafkaError::MessageProduction(code), _)) if is_unknown_topic(code) => {
                    // The cluster lost the topic (or a restarted broker forgot
                    // it): look it up (and create it) once more.
                    self.forget_topic(topic);
                    if attempt > 1 {
                        return Err(Error::TopicNotFound(topic.to_string()));
                    }
                    self.ensure_topic(topic).await?;
                }
                Err((source, _)) => {
                    // A broker that restarted empty, or a deleted topic, shows
                    // up as a timeout: check (and create) the topic next time.
                    self.forget_topic(topic);
                    return Err(Error::Produce {
                        topic: topic.to_string(),
                        source,
                    });
                }
            }
        }
    }
}

/// Send errors that say the cluster does not know the topic (any more).
fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
    )
}

/// A random (version 4) UUID string: unique without coordination between
/// plugin instances.
pub(super) fn new_message_id() -> String {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex_lower(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
