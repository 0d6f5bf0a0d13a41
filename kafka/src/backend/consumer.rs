//! The consumers streams read from: group members whose commits follow the
//! stream's handoffs, and group-less tails reading chosen partitions from a
//! chosen start.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::context::StreamContext;
use super::produce::new_message_id;
use super::{Backend, KafkaConsumer, Start};
use crate::error::Error;

impl Backend {
    /// A consumer in `group` subscribed to `topic`. Offsets are committed
    /// automatically every `commit_interval`, but only those the stream
    /// stored (see [`crate::stream`]); `start` applies when the group has
    /// no committed offset.
    pub(crate) fn group_consumer(
        &self,
        topic: &str,
        group: &str,
        start: &Start,
        context: StreamContext,
    ) -> Result<KafkaConsumer, Error> {
        let reset = match start {
            Start::Earliest => "earliest",
            _ => "latest",
        };
        let mut config = self.consumer_base.clone();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("statistics.interval.ms", "1000");
        let context = context.with_group(group);
        let consumer: KafkaConsumer = config.create_with_context(context).map_err(Error::Client)?;
        consumer.subscribe(&[topic]).map_err(Error::Consumer)?;
        Ok(consumer)
    }

    /// Consumer settings for a reader outside any group (a tail, a series
    /// reader), which never commits: librdkafka needs a group id for its
    /// offset APIs even when nothing joins or commits, so each gets a unique
    /// one (`prism-<kind>-<id>`) that keeps readers from meeting.
    pub(super) fn ungrouped_config(&self, kind: &str) -> ClientConfig {
        let mut config = self.consumer_base.clone();
        config
            .set("group.id", format!("prism-{kind}-{}", new_message_id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        config
    }

    /// A consumer outside any group reading `partitions` of `topic` from
    /// `start`: no group membership, no commits. (A timestamp start is also
    /// filtered by the stream, see [`crate::stream`].)
    pub(crate) async fn tail_consumer(
        &self,
        topic: &str,
        start: &Start,
        partitions: &[i32],
    ) -> Result<KafkaConsumer, Error> {
        let mut config = self.ungrouped_config("tail");
        config.set("auto.offset.reset", "earliest");
        let consumer: KafkaConsumer = config
            .create_with_context(StreamContext::default())
            .map_err(Error::Client)?;
        let mut tpl = TopicPartitionList::new();
        match start {
            Start::Earliest | Start::Latest => {
                let offset = if matches!(start, Start::Earliest) {
                    Offset::Beginning
                } else {
                    Offset::End
                };
                for &partition in partitions {
                    tpl.add_partition_offset(topic, partition, offset)
                        .map_err(Error::Consumer)?;
                }
            }
            Start::Offsets(offsets) => {
                for &(partition, offset) in offsets {
                    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                        .map_err(Error::Consumer)?;
                }
            }
            Start::Timestamp(ms) => {
                let mut query = TopicPartitionList::new();
                for &partition in partitions {
                    query
                        .add_partition_offset(topic, partition, Offset::Offset(*ms))
                        .map_err(Error::Consumer)?;
                }
                let timeout = self.metadata_timeout.max(Duration::from_secs(5));
                let (consumer, found) = tokio::task::spawn_blocking(move || {
                    let found = consumer.offsets_for_times(query, timeout);
                    (consumer, found)
                })
                .await
                .map_err(Error::Task)?;
                let found = found.map_err(Error::Consumer)?;
                for element in found.elements() {
                    // No message at or after the time: start at the end.
                    let offset = match element.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        _ => Offset::End,
                    };
                    tpl.add_partition_offset(topic, element.partition(), offset)
                        .map_err(Error::Consumer)?;
                }
                consumer.assign(&tpl).map_err(Error::Consumer)?;
                return Ok(consumer);
            }
        }
        consumer.assign(&tpl).map_err(Error::Consumer)?;
        Ok(consumer)
    }
}

/// A received record's headers as (name, value) pairs, values read as UTF-8
/// (invalid bytes replaced; a header without a value is empty).
pub(crate) fn header_strings<'a>(
    message: &'a BorrowedMessage<'_>,
) -> impl Iterator<Item = (&'a str, String)> + 'a {
    message.headers().into_iter().flat_map(|headers| {
        headers.iter().map(|header| {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            (header.key, value)
        })
    })
}
