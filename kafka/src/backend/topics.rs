//! Topics: whether one exists (known already, found in metadata, or created
//! by the admin client when `auto_create_topics` is on) and its partitions.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;

use super::Backend;
use crate::error::Error;

impl Backend {
    /// The partitions of `topic`, or `None` if the cluster does not know it.
    pub(super) async fn partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, Error> {
        let producer = self.producer()?.clone();
        let name = topic.to_string();
        let timeout = self.metadata_timeout;
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&name), timeout)
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name)
                        .and_then(|t| {
                            let missing = matches!(
                                t.error().map(RDKafkaErrorCode::from),
                                Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                            );
                            (!missing && !t.partitions().is_empty())
                                .then(|| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                        })
                })
        })
        .await
        .map_err(Error::Task)?;
        result.map_err(|source| Error::Unreachable {
            brokers: self.brokers.clone(),
            source,
            cause: self.recent_error().map(String::into_boxed_str),
        })
    }

    /// Makes sure `topic` exists: known already, found in metadata, or created
    /// (with `default_partitions`/`replication_factor`) when
    /// `auto_create_topics` is on. Returns its partitions when looked up.
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<Option<Vec<i32>>, Error> {
        self.ensure_topic_with(topic, self.default_partitions).await
    }

    /// [`ensure_topic`](Self::ensure_topic), creating a missing topic with
    /// `partitions` partitions.
    pub(crate) async fn ensure_topic_with(
        &self,
        topic: &str,
        partitions: i32,
    ) -> Result<Option<Vec<i32>>, Error> {
        if self.is_known(topic) {
            return Ok(None);
        }
        self.lookup_or_create(topic, partitions).await.map(Some)
    }

    /// Like [`ensure_topic`](Self::ensure_topic) but always returns the partitions.
    pub(crate) async fn topic_partitions(&self, topic: &str) -> Result<Vec<i32>, Error> {
        self.lookup_or_create(topic, self.default_partitions).await
    }

    fn is_known(&self, topic: &str) -> bool {
        self.known_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic)
    }

    /// Forgets that `topic` exists (a send suggested it may not).
    pub(super) fn forget_topic(&self, topic: &str) {
        self.known_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
    }

    async fn lookup_or_create(&self, topic: &str, count: i32) -> Result<Vec<i32>, Error> {
        let partitions = match self.partitions(topic).await? {
            Some(partitions) => partitions,
            None if !self.auto_create_topics => {
                return Err(Error::TopicNotFound(topic.to_string()));
            }
            None => {
                self.create_topic(topic, count).await?;
                // The new topic's partitions become visible once its leader
                // is elected; poll briefly instead of assuming the count.
                let deadline = Instant::now() + self.metadata_timeout.max(Duration::from_secs(2));
                loop {
                    if let Some(partitions) = self.partitions(topic).await? {
                        break partitions;
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::TopicNotFound(topic.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.known_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string());
        Ok(partitions)
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), Error> {
        let admin = self.admin.as_ref().ok_or(Error::Closed)?;
        let new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(i32::from(self.replication_factor)),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.metadata_timeout));
        let results = admin
            .create_topics([&new], &options)
            .await
            .map_err(|source| Error::CreateTopic {
                topic: topic.to_string(),
                reason: source.to_string(),
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::CreateTopic {
                        topic: topic.to_string(),
                        reason: code.to_string(),
                    });
                }
            }
        }
        tracing::info!(
            topic,
            partitions,
            replication_factor = self.replication_factor,
            "created topic"
        );
        Ok(())
    }
}
