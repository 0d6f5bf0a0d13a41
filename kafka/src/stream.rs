//! The tasks that move messages from a Kafka consumer to a gRPC client, and
//! the set that owns them.
//!
//! Every stream is one task owning one consumer and a bounded channel to the
//! response stream. Backpressure: the task asks Kafka for the next message only
//! when the previous one is in the channel (or, for `Consume`, only while the
//! client has granted credit); a channel or credit that stays full for
//! [`PAUSE_AFTER`] pauses the assigned partitions while the consumer keeps
//! serving group events, so a stalled client neither loses its group nor
//! grows memory beyond the channel and librdkafka's bounded prefetch
//! (`backend.fetch_buffer_kbytes`). Nothing is dropped: a message taken from
//! Kafka is queued until it can be sent.
//!
//! Commits: offsets are *stored* (librdkafka `enable.auto.offset.store=false`)
//! only for messages the response stream has handed to gRPC (`Subscribe`) or
//! that the client acknowledged contiguously (`Consume`); librdkafka commits
//! stored offsets every `commit_interval`, when partitions are revoked and
//! when the consumer leaves its group.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{CommitReports, KafkaConsumer, MESSAGE_ID_HEADER, header_strings};
use crate::error::Error;
use crate::track::Track;

/// How long a full channel (or exhausted credit) waits before the partitions
/// are paused; short stalls just stop fetching, long ones keep the group alive.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// Longest wait for a closing consumer to hand back its partitions (which
/// commits stored offsets) before it is destroyed.
const UNASSIGN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for librdkafka to destroy a consumer. Its close can block on
/// broker round trips; the task moves on and the blocking thread finishes alone.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(2);

/// One message on its way to a client.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The topic.
    pub(crate) topic: Arc<str>,
    /// The payload (empty for a null payload).
    pub(crate) payload: Bytes,
    /// Kafka headers minus the plugin's own, values as UTF-8 (lossy).
    pub(crate) metadata: HashMap<String, String>,
    /// The `prism-message-id` header, or `topic-partition-offset` for records
    /// published by other producers.
    pub(crate) message_id: String,
    /// Record timestamp, epoch milliseconds.
    pub(crate) timestamp_ms: i64,
    /// Partition.
    pub(crate) partition: i32,
    /// Offset within the partition.
    pub(crate) offset: i64,
    /// The record key as UTF-8 (lossy); empty if none.
    pub(crate) key: String,
}

impl Delivery {
    fn from_kafka(message: &BorrowedMessage<'_>, topic: &Arc<str>) -> Self {
        let mut metadata = HashMap::new();
        let mut message_id = None;
        for (key, value) in header_strings(message) {
            if key == MESSAGE_ID_HEADER {
                message_id = Some(value);
            } else {
                metadata.insert(key.to_string(), value);
            }
        }
        let (partition, offset) = (message.partition(), message.offset());
        Delivery {
            topic: topic.clone(),
            payload: message
                .payload()
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
            metadata,
            message_id: message_id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("{topic}-{partition}-{offset}")),
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            partition,
            offset,
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
        }
    }
}

/// Why a stream task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Unsubscribe, drain or shutdown.
    Cancelled,
    /// The client went away (cancelled, disconnected, or half-closed Consume).
    ClientGone,
    /// `max_messages` reached.
    Done,
}

/// Highest offsets (+1) the response stream has handed to gRPC, per
/// partition; written by [`HandoffStream`], stored by the task.
#[derive(Default)]
pub(crate) struct Handoff {
    handed: Mutex<HashMap<i32, i64>>,
    changed: Notify,
}

impl Handoff {
    fn record(&self, partition: i32, next: i64) {
        let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        let entry = handed.entry(partition).or_insert(next);
        *entry = (*entry).max(next);
        drop(handed);
        self.changed.notify_one();
    }

    fn take(&self) -> HashMap<i32, i64> {
        std::mem::take(&mut *self.handed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The response side of a Subscribe/Tail: yields what the task queued and,
/// for group streams, records each message as handed over the moment tonic
/// takes it (only then may its offset be committed).
pub(crate) struct HandoffStream {
    rx: mpsc::Receiver<Delivery>,
    handoff: Option<Arc<Handoff>>,
}

impl Stream for HandoffStream {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let polled = self.rx.poll_recv(cx);
        if let (Poll::Ready(Some(delivery)), Some(handoff)) = (&polled, &self.handoff) {
            handoff.record(delivery.partition, delivery.offset + 1);
        }
        polled
    }
}

/// Options of a one-way stream (Subscribe or Tail).
pub(crate) struct Forward {
    /// Group streams store handed offsets; tails commit nothing.
    pub(crate) group: bool,
    /// Skip, per partition, records older than this until the first one at or
    /// after it (a broker's time index may answer with an earlier offset).
    pub(crate) not_before_ms: Option<i64>,
    /// End after this many messages; 0 = no limit.
    pub(crate) max_messages: u64,
}

/// How a group stream replaces its consumer when the Vault credentials
/// change: librdkafka cannot change a client's SASL credentials, so the
/// stream builds a new consumer (same topic, group and context) from the
/// rotated backend and closes the old one, which commits what was stored.
pub(crate) struct Rebuild {
    /// The latest credential generation the plugin switched to.
    pub(crate) generations: watch::Receiver<u64>,
    /// Builds the replacement from a backend of at least that generation.
    pub(crate) connect:
        Box<dyn Fn(u64) -> BoxFuture<'static, Result<KafkaConsumer, Error>> + Send + Sync>,
}

impl Rebuild {
    /// The next generation announced; never returns without a `Rebuild`.
    async fn changed(rebuild: &mut Option<Rebuild>) -> u64 {
        let Some(rebuild) = rebuild else {
            return std::future::pending().await;
        };
        match rebuild.generations.changed().await {
            Ok(()) => *rebuild.generations.borrow_and_update(),
            // The plugin is gone: nothing will rotate any more.
            Err(_) => std::future::pending().await,
        }
    }

    /// The replacement consumer, or `None` (logged) if it cannot be built:
    /// the stream then keeps its current one.
    async fn connect(
        rebuild: &Option<Rebuild>,
        topic: &str,
        generation: u64,
    ) -> Option<KafkaConsumer> {
        let rebuild = rebuild.as_ref()?;
        match (rebuild.connect)(generation).await {
            Ok(consumer) => Some(consumer),
            Err(err) => {
                tracing::warn!(
                    topic,
                    generation,
                    error = %err,
                    "cannot rebuild the stream's consumer with the rotated credentials; keeping the current one"
                );
                None
            }
        }
    }
}

/// Creates the channel of a one-way stream: the task's sender, the response
/// stream, and the handoff record they share.
pub(crate) fn handoff_channel(
    capacity: usize,
    group: bool,
) -> (mpsc::Sender<Delivery>, HandoffStream, Option<Arc<Handoff>>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let handoff = group.then(|| Arc::new(Handoff::default()));
    let stream = HandoffStream {
        rx,
        handoff: handoff.clone(),
    };
    (tx, stream, handoff)
}

/// Moves messages from `consumer` to `tx` until cancelled, the client goes
/// away or `max_messages` is reached; then stores what was handed and closes
/// the consumer (leaving the group commits the stored offsets). With
/// `rebuild`, new credentials replace the consumer on the way: what was
/// handed is stored and committed by the old one, what it fetched but did
/// not hand over is dropped and read again by the new one (at-least-once).
pub(crate) async fn forward(
    mut consumer: KafkaConsumer,
    topic: Arc<str>,
    tx: mpsc::Sender<Delivery>,
    handoff: Option<Arc<Handoff>>,
    options: Forward,
    mut rebuild: Option<Rebuild>,
    cancel: CancellationToken,
) -> Ended {
    let mut queue: VecDeque<Delivery> = VecDeque::new();
    let mut flow = Flow::default();
    let mut reached: HashSet<i32> = HashSet::new();
    let mut sent = 0u64;
    let ended = loop {
        let waiting = !queue.is_empty();
        flow.update(&consumer, waiting);
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Ended::Cancelled,
            () = handoff_changed(handoff.as_deref()) => {
                if let Some(handoff) = &handoff {
                    store_handed(&consumer, &topic, handoff);
                }
            }
            permit = tx.reserve(), if waiting => match permit {
                Ok(permit) => {
                    if let Some(delivery) = queue.pop_front() {
                        permit.send(delivery);
                        sent += 1;
                    }
                    if options.max_messages > 0 && sent >= options.max_messages {
                        break Ended::Done;
                    }
                }
                Err(_) => break Ended::ClientGone,
            },
            () = tx.closed(), if !waiting => break Ended::ClientGone,
            message = consumer.recv(), if !waiting || flow.paused => {
                let Some(delivery) = received(message, &topic) else {
                    continue;
                };
                if let Some(not_before) = options.not_before_ms
                    && !reached.contains(&delivery.partition)
                {
                    if delivery.timestamp_ms < not_before {
                        continue;
                    }
                    reached.insert(delivery.partition);
                }
                queue.push_back(delivery);
            }
            () = flow.pause_timer(), if flow.blocked_since.is_some() && !flow.paused => {
                flow.pause(&consumer);
            }
            generation = Rebuild::changed(&mut rebuild) => {
                if let Some(new) = Rebuild::connect(&rebuild, &topic, generation).await {
                    if let Some(handoff) = &handoff {
                        store_handed(&consumer, &topic, handoff);
                    }
                    switch(&mut consumer, new, &mut queue, &mut flow, options.group).await;
                    tracing::info!(topic = %topic, generation, "subscription switched to the rotated credentials");
                }
            }
        }
    };
    if let Some(handoff) = &handoff {
        store_handed(&consumer, &topic, handoff);
    }
    close(consumer, options.group).await;
    ended
}

async fn handoff_changed(handoff: Option<&Handoff>) {
    match handoff {
        Some(handoff) => handoff.changed.notified().await,
        None => std::future::pending().await,
    }
}

/// Stores the handed offsets; partitions no longer assigned are refused by
/// librdkafka (their messages go to the new owner again: at-least-once).
fn store_handed(consumer: &KafkaConsumer, topic: &str, handoff: &Handoff) {
    let handed = handoff.take();
    if handed.is_empty() {
        return;
    }
    store(consumer, topic, handed);
}

fn store(consumer: &KafkaConsumer, topic: &str, offsets: impl IntoIterator<Item = (i32, i64)>) {
    // One entry per partition: librdkafka stores every list entry in turn.
    let mut highest: HashMap<i32, i64> = HashMap::new();
    for (partition, next) in offsets {
        let entry = highest.entry(partition).or_insert(next);
        *entry = (*entry).max(next);
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, next) in highest {
        if tpl
            .add_partition_offset(topic, partition, Offset::Offset(next))
            .is_err()
        {
            continue;
        }
    }
    match consumer.store_offsets(&tpl) {
        Ok(()) => tracing::trace!(topic, offsets = ?tpl, "stored offsets"),
        Err(err) => {
            tracing::debug!(topic, error = %err, "storing offsets failed (partition revoked?)");
        }
    }
}

/// What the consumer handed to either loop: a [`Delivery`], or `None` for a
/// transport error while a broker is down, logged (librdkafka reconnects on
/// its own and reports them at a bounded rate).
fn received(message: KafkaResult<BorrowedMessage<'_>>, topic: &Arc<str>) -> Option<Delivery> {
    match message {
        Ok(message) => Some(Delivery::from_kafka(&message, topic)),
        Err(err) => {
            tracing::debug!(topic = %topic, error = %err, "consumer error");
            None
        }
    }
}

/// Either loop's switch to a consumer rebuilt with rotated credentials: what
/// the old one fetched but did not hand over is dropped (the new one reads it
/// again), and so is its pause state; closing the old one commits what was
/// stored.
async fn switch(
    consumer: &mut KafkaConsumer,
    new: KafkaConsumer,
    queue: &mut VecDeque<Delivery>,
    flow: &mut Flow,
    group: bool,
) {
    let old = std::mem::replace(consumer, new);
    queue.clear();
    *flow = Flow::default();
    close(old, group).await;
}

/// Pause bookkeeping shared by both loops.
#[derive(Default)]
struct Flow {
    paused: bool,
    blocked_since: Option<Instant>,
}

impl Flow {
    /// Tracks whether the stream is blocked; resumes once it no longer is.
    fn update(&mut self, consumer: &KafkaConsumer, blocked: bool) {
        if blocked {
            self.blocked_since.get_or_insert_with(Instant::now);
        } else {
            self.blocked_since = None;
            if self.paused {
                self.paused = false;
                if let Ok(assignment) = consumer.assignment()
                    && let Err(err) = consumer.resume(&assignment)
                {
                    tracing::debug!(error = %err, "resuming partitions failed");
                }
            }
        }
    }

    async fn pause_timer(&self) {
        match self.blocked_since {
            Some(since) => tokio::time::sleep_until(since + PAUSE_AFTER).await,
            None => std::future::pending().await,
        }
    }

    fn pause(&mut self, consumer: &KafkaConsumer) {
        self.paused = true;
        if let Ok(assignment) = consumer.assignment()
            && let Err(err) = consumer.pause(&assignment)
        {
            tracing::debug!(error = %err, "pausing partitions failed");
        }
    }
}

/// Leaves the group (handing back the partitions commits their stored
/// offsets), then destroys the consumer on a blocking thread. Unsubscribing
/// first avoids a librdkafka hang in close with an active assignment
/// (confluentinc/librdkafka#4884).
async fn close(consumer: KafkaConsumer, group: bool) {
    if group {
        consumer.unsubscribe();
        let deadline = Instant::now() + UNASSIGN_TIMEOUT;
        while consumer.assignment().map(|a| a.count()).unwrap_or(0) > 0 && Instant::now() < deadline
        {
            let _ = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await;
        }
    }
    let destroy = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(DESTROY_TIMEOUT, destroy)
        .await
        .is_err()
    {
        tracing::debug!("kafka consumer still closing in the background");
    }
}

/// A client instruction on a Consume stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// More messages the client will take.
    Credit(u64),
    /// (partition, offset) pairs the client has processed.
    Ack(Vec<(i32, i64)>),
}

/// What a Consume stream sends.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A delivery to acknowledge.
    Message(Delivery),
    /// (partition, next offset) now committed for the group.
    Committed(Vec<(i32, i64)>),
}

/// What a Consume stream starts with besides its consumer and channels.
pub(crate) struct ConsumeSetup {
    /// Messages the client granted in `open`.
    pub(crate) initial_credit: u64,
    /// Where the consumer's context reports commits.
    pub(crate) reports: Arc<CommitReports>,
    /// How to replace the consumer after a Vault rotation.
    pub(crate) rebuild: Option<Rebuild>,
}

/// Runs a Consume stream: sends at most the granted credit, stores per
/// partition the highest contiguous acknowledged position, and tells the
/// client what the group has committed. With `rebuild`, new credentials
/// replace the consumer on the way: the old one commits the acknowledged
/// positions as it leaves, the new one reads on from them, so every
/// unacknowledged delivery comes again; credit and acknowledgement state
/// are kept (late acks of earlier deliveries still count).
pub(crate) async fn consume<C>(
    mut consumer: KafkaConsumer,
    topic: Arc<str>,
    tx: mpsc::Sender<Event>,
    mut commands: C,
    setup: ConsumeSetup,
    cancel: CancellationToken,
) -> Ended
where
    C: Stream<Item = Command> + Unpin,
{
    let ConsumeSetup {
        initial_credit,
        reports,
        mut rebuild,
    } = setup;
    let mut credit = initial_credit;
    let mut queue: VecDeque<Delivery> = VecDeque::new();
    let mut tracks: HashMap<i32, Track> = HashMap::new();
    let mut committed: HashMap<i32, i64> = HashMap::new();
    let mut notices: Vec<(i32, i64)> = Vec::new();
    let mut flow = Flow::default();
    let ended = loop {
        let can_send = !queue.is_empty() && credit > 0;
        let sending = can_send || !notices.is_empty();
        flow.update(&consumer, credit == 0 || !queue.is_empty());
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Ended::Cancelled,
            command = commands.next() => match command {
                Some(Command::Credit(more)) => credit = credit.saturating_add(more),
                Some(Command::Ack(refs)) => {
                    tracing::trace!(topic = %topic, acks = refs.len(), "acknowledged");
                    let mut advanced = Vec::new();
                    for (partition, offset) in refs {
                        let track = tracks.get_mut(&partition);
                        let acked = track.and_then(|t| t.ack_counted(offset, &topic));
                        if let Some(position) = acked {
                            advanced.push((partition, position));
                        }
                    }
                    if !advanced.is_empty() {
                        store(&consumer, &topic, advanced);
                    }
                }
                None => break Ended::ClientGone,
            },
            () = reports.changed() => {
                for (partition, offset) in reports.take() {
                    let last = committed.entry(partition).or_insert(-1);
                    if offset > *last {
                        *last = offset;
                        notices.retain(|(p, _)| *p != partition);
                        notices.push((partition, offset));
                    }
                }
            }
            permit = tx.reserve(), if sending => match permit {
                Ok(permit) => {
                    if !notices.is_empty() {
                        permit.send(Event::Committed(std::mem::take(&mut notices)));
                    } else if let Some(delivery) = queue.pop_front() {
                        let track = tracks.entry(delivery.partition).or_default();
                        if track.deliver(delivery.offset) {
                            prism_plugin_core::backend_metrics::get().redelivered(&topic);
                        }
                        credit -= 1;
                        permit.send(Event::Message(delivery));
                    }
                }
                Err(_) => break Ended::ClientGone,
            },
            () = tx.closed(), if !sending => break Ended::ClientGone,
            message = consumer.recv(), if (queue.is_empty() && credit > 0) || flow.paused => {
                queue.extend(received(message, &topic));
            }
            () = flow.pause_timer(), if flow.blocked_since.is_some() && !flow.paused => {
                flow.pause(&consumer);
            }
            generation = Rebuild::changed(&mut rebuild) => {
                if let Some(new) = Rebuild::connect(&rebuild, &topic, generation).await {
                    switch(&mut consumer, new, &mut queue, &mut flow, true).await;
                    tracing::info!(topic = %topic, generation, "consume stream switched to the rotated credentials");
                }
            }
        }
    };
    close(consumer, true).await;
    ended
}

/// (topic, subscriber id).
type SubscriptionKey = (String, String);

/// The stream tasks of the plugin: each runs under a child of the current
/// drain token and is tracked, so `drain` can end them all and wait.
/// Subscriptions are indexed by (topic, subscriber id) for Unsubscribe.
pub(crate) struct StreamSet {
    tracker: TaskTracker,
    /// The plugin's shutdown token, once initialized.
    parent: Mutex<Option<CancellationToken>>,
    /// Parent of every running stream's token; replaced by `drain`.
    token: Mutex<CancellationToken>,
    subscriptions: Mutex<HashMap<SubscriptionKey, Vec<(u64, CancellationToken)>>>,
    next_id: AtomicU64,
    /// The Vault credential generation group streams should use.
    credentials: watch::Sender<u64>,
}

impl Default for StreamSet {
    fn default() -> Self {
        StreamSet {
            tracker: TaskTracker::new(),
            parent: Mutex::new(None),
            token: Mutex::new(CancellationToken::new()),
            subscriptions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            credentials: watch::Sender::new(0),
        }
    }
}

/// Removes a subscription from the index when its task ends.
pub(crate) struct Registration {
    set: Arc<StreamSet>,
    key: SubscriptionKey,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut subscriptions = self
            .set
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = subscriptions.get_mut(&self.key) {
            entries.retain(|(id, _)| *id != self.id);
            if entries.is_empty() {
                subscriptions.remove(&self.key);
            }
        }
    }
}

impl StreamSet {
    /// Ties streams to `parent` (the plugin's shutdown token); the first
    /// call wins, so a re-initialize never orphans running streams.
    pub(crate) fn attach(&self, parent: &CancellationToken) {
        let mut current = self.parent.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none() {
            *self.token.lock().unwrap_or_else(|e| e.into_inner()) = parent.child_token();
            *current = Some(parent.clone());
        }
    }

    /// Tells group streams to rebuild their consumers with the credentials
    /// of `generation` (a backend of that generation is about to be in use).
    pub(crate) fn credentials_changed(&self, generation: u64) {
        self.credentials.send_if_modified(|current| {
            let newer = generation > *current;
            if newer {
                *current = generation;
            }
            newer
        });
    }

    /// A receiver of credential generations for a new group stream.
    pub(crate) fn credentials(&self) -> watch::Receiver<u64> {
        let mut rx = self.credentials.subscribe();
        rx.mark_unchanged();
        rx
    }

    /// A token for a new stream, cancelled by `drain`.
    pub(crate) fn child_token(&self) -> CancellationToken {
        self.token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .child_token()
    }

    /// Indexes a subscription for Unsubscribe until the returned guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        topic: &str,
        subscriber_id: &str,
        token: CancellationToken,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (topic.to_string(), subscriber_id.to_string());
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .push((id, token));
        Registration {
            set: self.clone(),
            key,
            id,
        }
    }

    /// Ends every stream of (topic, subscriber id); returns how many.
    pub(crate) fn unsubscribe(&self, topic: &str, subscriber_id: &str) -> usize {
        let subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (topic.to_string(), subscriber_id.to_string());
        let Some(entries) = subscriptions.get(&key) else {
            return 0;
        };
        for (_, token) in entries {
            token.cancel();
        }
        entries.len()
    }

    /// Runs a stream task under the tracker.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Streams running now.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Ends every stream (each stores what it handed or was acknowledged and
    /// leaves its group) and waits up to `timeout` for them; new streams get
    /// a fresh token so the plugin can serve again after a re-initialize.
    /// Returns how many streams were still running when the wait ended.
    pub(crate) async fn drain(&self, timeout: Duration) -> usize {
        {
            let parent = self.parent.lock().unwrap_or_else(|e| e.into_inner());
            let mut token = self.token.lock().unwrap_or_else(|e| e.into_inner());
            token.cancel();
            *token = parent
                .as_ref()
                .map(CancellationToken::child_token)
                .unwrap_or_default();
        }
        let deadline = Instant::now() + timeout;
        while !self.tracker.is_empty() && Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, self.tracker_wait()).await;
        }
        self.tracker.len()
    }

    async fn tracker_wait(&self) {
        // `TaskTracker::wait` only returns once closed; close, wait, reopen.
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }
}
