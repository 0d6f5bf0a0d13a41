//! The gRPC data services: `PubSubBasicInterface` (Publish, Subscribe,
//! Unsubscribe) and this project's `StreamInterface` (Tail, Consume). Each
//! method validates the request, checks its topic against the caller's
//! namespace grants (core's `authz`: a topic's namespace is its name up to
//! the first `.`), asks the backend for a producer call or a
//! consumer, hands stream work to a tracked task (see [`crate::stream`]) and
//! maps results to proto messages and gRPC statuses.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_server::PubSubBasicInterface;
use prism_plugin_core::proto::pubsub::stream_interface_server::StreamInterface;
use prism_plugin_core::proto::pubsub::{
    Committed, ConsumeOpen, ConsumeRequest, ConsumeResponse, Message, MessageRef, PublishRequest,
    PublishResponse, StartPosition, SubscribeRequest, TailRequest, UnsubscribeRequest,
    UnsubscribeResponse, consume_request, consume_response, tail_request,
};
use prism_plugin_core::{Slot, authz};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::{
    Backend, CommitReports, MESSAGE_ID_HEADER, Start, StreamContext, check_record_size,
};
use crate::config::check_topic;
use crate::error::Error;
use crate::stream::{self, Command, ConsumeSetup, Delivery, Event, Forward, Rebuild, StreamSet};

/// Longest a stream told about new credentials waits for the backend built
/// with them to be swapped in (that follows the announcement at once).
const REBUILD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Both data services share the backend slot and the set of running streams.
#[derive(Clone)]
pub(crate) struct KafkaService {
    backend: Arc<Slot<Backend>>,
    streams: Arc<StreamSet>,
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>;
type ConsumeStream = Pin<Box<dyn Stream<Item = Result<ConsumeResponse, Status>> + Send>>;

impl KafkaService {
    /// A service over `backend`, running streams in `streams`.
    pub(crate) fn new(backend: Arc<Slot<Backend>>, streams: Arc<StreamSet>) -> Self {
        KafkaService { backend, streams }
    }

    /// How a group stream of (`topic`, `group`) rebuilds its consumer after a
    /// Vault rotation: from the backend built with the new credentials, with
    /// the same commit reports (Consume) so notices keep flowing.
    fn rebuild(
        &self,
        topic: &str,
        group: &str,
        start: &Start,
        reports: Option<Arc<CommitReports>>,
    ) -> Rebuild {
        let slot = self.backend.clone();
        let (topic, group, start) = (topic.to_string(), group.to_string(), start.clone());
        Rebuild {
            generations: self.streams.credentials(),
            connect: Box::new(move |generation| {
                let (slot, topic, group, start) =
                    (slot.clone(), topic.clone(), group.clone(), start.clone());
                let reports = reports.clone();
                Box::pin(async move {
                    let deadline = tokio::time::Instant::now() + REBUILD_WAIT;
                    let backend = loop {
                        let backend = slot.get().map_err(|_| Error::Closed)?;
                        if backend.generation() >= generation
                            || tokio::time::Instant::now() >= deadline
                        {
                            break backend;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    };
                    let context = reports.map(StreamContext::new).unwrap_or_default();
                    backend.group_consumer(&topic, &group, &start, context)
                })
            }),
        }
    }

    #[allow(clippy::result_large_err)]
    fn backend(&self) -> Result<Arc<Backend>, Status> {
        self.backend.get().map_err(Status::from)
    }

    /// The preamble of every call on one topic: the call's deadline (core's
    /// [`prism_plugin_core::deadline`]), the current backend, the request
    /// body, and the topic it names (`topic` picks it out; empty =
    /// `backend.topic`), checked against Kafka's naming rules and the
    /// caller's namespace grants.
    #[allow(clippy::result_large_err)]
    fn topic_call<T>(
        &self,
        request: Request<T>,
        topic: impl FnOnce(&T) -> &str,
    ) -> Result<(Option<tokio::time::Instant>, Arc<Backend>, T, String), Status> {
        let deadline = prism_plugin_core::deadline(&request);
        let access = authz::access(&request);
        let backend = self.backend()?;
        let req = request.into_inner();
        let topic = resolve_topic(topic(&req), &backend)?;
        authz::permit_topic(access.as_ref(), &topic)?;
        Ok((deadline, backend, req, topic))
    }
}

/// Runs `fut`, a call's wait on the broker, until the call's deadline
/// (core's [`prism_plugin_core::deadline`]: a little before the client's own,
/// so the client sees DEADLINE_EXCEEDED from us rather than tonic's CANCELLED
/// "Timeout expired"). Dropping a Publish's future does not take the record
/// back from librdkafka's queue: it may still be written (as after any
/// failed Publish, see the README).
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    prism_plugin_core::within(deadline, fut)
        .await
        .unwrap_or(Err(Error::Deadline(what)))
}

/// The request's topic, or `backend.topic` when it names none; checked against
/// Kafka's naming rules (tansu, for one, would accept anything).
fn resolve_topic(requested: &str, backend: &Backend) -> Result<String, Error> {
    let topic = if requested.is_empty() {
        backend.default_topic()
    } else {
        requested
    };
    if topic.is_empty() {
        return Err(Error::InvalidArgument(
            "topic must not be empty (and backend.topic sets no default)".to_string(),
        ));
    }
    check_topic(topic).map_err(Error::InvalidArgument)?;
    Ok(topic.to_string())
}

fn to_message(delivery: Delivery) -> Message {
    prism_plugin_core::otel::delivered(&delivery.topic, &delivery.metadata);
    prism_plugin_core::backend_metrics::get().delivered(&delivery.topic);
    Message {
        topic: delivery.topic.to_string(),
        payload: delivery.payload,
        metadata: delivery.metadata,
        message_id: delivery.message_id,
        timestamp: delivery.timestamp_ms,
        partition: delivery.partition,
        offset: delivery.offset,
        partition_key: delivery.key,
    }
}

fn start_position(value: i32) -> Result<Start, Error> {
    match StartPosition::try_from(value) {
        Ok(StartPosition::Earliest) => Ok(Start::Earliest),
        Ok(StartPosition::Latest | StartPosition::Unspecified) => Ok(Start::Latest),
        Err(_) => Err(Error::InvalidArgument(format!(
            "start position {value} is not EARLIEST or LATEST"
        ))),
    }
}

#[tonic::async_trait]
impl PubSubBasicInterface for KafkaService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let (deadline, backend, req, topic) = self.topic_call(request, |req| &req.topic)?;
        if req.metadata.contains_key(MESSAGE_ID_HEADER) {
            return Err(Error::InvalidArgument(format!(
                "metadata key {MESSAGE_ID_HEADER:?} is reserved for the plugin's message id"
            ))
            .into());
        }
        let body = req.payload.len() + req.partition_key.len();
        check_record_size(body, &req.metadata, backend.max_payload_bytes())?;
        let key = (!req.partition_key.is_empty()).then_some(req.partition_key.as_bytes());
        let span = prism_plugin_core::otel::publish_span(&topic);
        let publish = backend.publish(&topic, key, &req.payload, &req.metadata);
        let published = within(
            deadline,
            "the Publish",
            prism_plugin_core::otel::traced(span, publish),
        )
        .await?;
        Ok(Response::new(PublishResponse {
            success: true,
            message_id: published.message_id,
            error: String::new(),
        }))
    }

    type SubscribeStream = MessageStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<MessageStream>, Status> {
        let (deadline, backend, req, topic) = self.topic_call(request, |req| &req.topic)?;
        let mut start = Start::Latest;
        let mut group = None;
        for (key, value) in &req.options {
            match (key.as_str(), value.as_str()) {
                ("group", g) if !g.is_empty() => group = Some(g.to_string()),
                ("start", "earliest") => start = Start::Earliest,
                ("start", "latest" | "") => start = Start::Latest,
                ("start", other) => {
                    return Err(Error::InvalidArgument(format!(
                        "options.start {other:?} is not earliest or latest"
                    ))
                    .into());
                }
                ("group", _) => {}
                (other, _) => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown option {other:?}; supported: group, start"
                    ))
                    .into());
                }
            }
        }
        let group = group
            .or_else(|| (!req.subscriber_id.is_empty()).then(|| req.subscriber_id.clone()))
            .unwrap_or_else(|| backend.default_group().to_string());
        within(deadline, "the topic lookup", backend.ensure_topic(&topic)).await?;
        let consumer = backend.group_consumer(&topic, &group, &start, StreamContext::default())?;
        let rebuild = self.rebuild(&topic, &group, &start, None);
        let (tx, response, handoff) = stream::handoff_channel(backend.stream_buffer(), true);
        let cancel = self.streams.child_token();
        let registration = self
            .streams
            .register(&topic, &req.subscriber_id, cancel.clone());
        let topic: Arc<str> = topic.into();
        tracing::debug!(topic = %topic, group, subscriber = req.subscriber_id, "subscribed");
        self.streams.spawn(async move {
            let options = Forward {
                group: true,
                not_before_ms: None,
                max_messages: 0,
            };
            let ended = stream::forward(
                consumer,
                topic.clone(),
                tx,
                handoff,
                options,
                Some(rebuild),
                cancel,
            )
            .await;
            drop(registration);
            tracing::debug!(topic = %topic, group, ?ended, "subscription ended");
        });
        Ok(Response::new(Box::pin(response.map(|d| Ok(to_message(d))))))
    }

    async fn unsubscribe(
        &self,
        request: Request<UnsubscribeRequest>,
    ) -> Result<Response<UnsubscribeResponse>, Status> {
        let (_, _, req, topic) = self.topic_call(request, |req| &req.topic)?;
        let ended = self.streams.unsubscribe(&topic, &req.subscriber_id);
        Ok(Response::new(if ended > 0 {
            UnsubscribeResponse {
                success: true,
                error: String::new(),
            }
        } else {
            UnsubscribeResponse {
                success: false,
                error: format!(
                    "no active subscription of {:?} to topic {topic:?}",
                    req.subscriber_id
                ),
            }
        }))
    }
}

#[tonic::async_trait]
impl StreamInterface for KafkaService {
    type TailStream = MessageStream;

    async fn tail(&self, request: Request<TailRequest>) -> Result<Response<MessageStream>, Status> {
        let (deadline, backend, req, topic) = self.topic_call(request, |req| &req.topic)?;
        let max_messages = u64::try_from(req.max_messages).map_err(|_| {
            Error::InvalidArgument(format!(
                "max_messages must not be negative (got {})",
                req.max_messages
            ))
        })?;
        let partitions = within(
            deadline,
            "the topic lookup",
            backend.topic_partitions(&topic),
        )
        .await?;
        let (start, not_before_ms) = match req.start {
            None => (Start::Latest, None),
            Some(tail_request::Start::Position(p)) => (start_position(p)?, None),
            Some(tail_request::Start::TimestampMs(ms)) => (Start::Timestamp(ms), Some(ms)),
            Some(tail_request::Start::Offsets(offsets)) => {
                let mut list: Vec<(i32, i64)> = offsets.offsets.into_iter().collect();
                list.sort_unstable();
                for &(partition, offset) in &list {
                    if !partitions.contains(&partition) {
                        return Err(Error::InvalidArgument(format!(
                            "topic {topic:?} has no partition {partition} (it has {})",
                            partitions.len()
                        ))
                        .into());
                    }
                    if offset < 0 {
                        return Err(Error::InvalidArgument(format!(
                            "offset {offset} for partition {partition} must not be negative"
                        ))
                        .into());
                    }
                }
                if list.is_empty() {
                    return Err(Error::InvalidArgument(
                        "offsets must name at least one partition".to_string(),
                    )
                    .into());
                }
                (Start::Offsets(list), None)
            }
        };
        let consumer = within(
            deadline,
            "the offset lookup",
            backend.tail_consumer(&topic, &start, &partitions),
        )
        .await?;
        let (tx, response, handoff) = stream::handoff_channel(backend.stream_buffer(), false);
        let cancel = self.streams.child_token();
        let topic: Arc<str> = topic.into();
        self.streams.spawn(async move {
            let options = Forward {
                group: false,
                not_before_ms,
                max_messages,
            };
            // A tail keeps its consumer across Vault rotations (no group, no
            // commits; see the README).
            let ended =
                stream::forward(consumer, topic.clone(), tx, handoff, options, None, cancel).await;
            tracing::debug!(topic = %topic, ?ended, "tail ended");
        });
        Ok(Response::new(Box::pin(response.map(|d| Ok(to_message(d))))))
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<Streaming<ConsumeRequest>>,
    ) -> Result<Response<ConsumeStream>, Status> {
        let deadline = prism_plugin_core::deadline(&request);
        let access = authz::access(&request);
        let backend = self.backend()?;
        let mut requests = request.into_inner();
        let open = match requests.message().await? {
            Some(ConsumeRequest {
                request: Some(consume_request::Request::Open(open)),
            }) => open,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a Consume stream must be `open`",
                ));
            }
        };
        let ConsumeOpen {
            topic,
            group,
            start,
            initial_credit,
        } = open;
        let topic = resolve_topic(&topic, &backend)?;
        authz::permit_topic(access.as_ref(), &topic)?;
        if group.is_empty() {
            return Err(Status::invalid_argument("open.group must not be empty"));
        }
        let initial_credit = u64::try_from(initial_credit).map_err(|_| {
            Status::invalid_argument(format!(
                "open.initial_credit must not be negative (got {initial_credit})"
            ))
        })?;
        let start = start_position(start)?;
        within(deadline, "the topic lookup", backend.ensure_topic(&topic)).await?;
        let reports = Arc::new(CommitReports::default());
        let consumer =
            backend.group_consumer(&topic, &group, &start, StreamContext::new(reports.clone()))?;
        let rebuild = self.rebuild(&topic, &group, &start, Some(reports.clone()));
        let (tx, rx) = mpsc::channel(backend.stream_buffer());
        // Client messages become commands; a later `open`, a malformed
        // message or a transport error ends the command stream (and so the
        // Consume stream, after committing what was acknowledged).
        let commands = Box::pin(
            requests
                .take_while(|r| {
                    std::future::ready(matches!(
                        r,
                        Ok(ConsumeRequest {
                            request: Some(
                                consume_request::Request::Credit(_)
                                    | consume_request::Request::Ack(_)
                            )
                        })
                    ))
                })
                .filter_map(|r| {
                    std::future::ready(match r {
                        Ok(ConsumeRequest {
                            request: Some(consume_request::Request::Credit(c)),
                        }) => u64::try_from(c.messages).ok().map(Command::Credit),
                        Ok(ConsumeRequest {
                            request: Some(consume_request::Request::Ack(ack)),
                        }) => Some(Command::Ack(
                            ack.messages
                                .into_iter()
                                .map(|m| (m.partition, m.offset))
                                .collect(),
                        )),
                        _ => None,
                    })
                }),
        );
        let cancel = self.streams.child_token();
        let topic: Arc<str> = topic.into();
        tracing::debug!(topic = %topic, group, "consume stream opened");
        self.streams.spawn(async move {
            let ended = stream::consume(
                consumer,
                topic.clone(),
                tx,
                commands,
                ConsumeSetup {
                    initial_credit,
                    reports,
                    rebuild: Some(rebuild),
                },
                cancel,
            )
            .await;
            tracing::debug!(topic = %topic, group, ?ended, "consume stream ended");
        });
        let responses = tokio_stream::wrappers::ReceiverStream::new(rx).map(|event| {
            Ok(ConsumeResponse {
                response: Some(match event {
                    Event::Message(delivery) => {
                        consume_response::Response::Message(to_message(delivery))
                    }
                    Event::Committed(offsets) => consume_response::Response::Committed(Committed {
                        offsets: offsets
                            .into_iter()
                            .map(|(partition, offset)| MessageRef { partition, offset })
                            .collect(),
                    }),
                }),
            })
        });
        Ok(Response::new(Box::pin(responses)))
    }
}
