//! PubSub steps the Kafka tests share: publish and check the reply, a
//! subscription that is known to deliver, a publish → subscribe round trip,
//! and steady publishes with an open subscription while something (a
//! credential rotation) changes under the plugin.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_plugin_core::proto::pubsub::{Message, PublishRequest, SubscribeRequest};
use tonic::Streaming;
use tonic::transport::Channel;

use super::RECV;

/// A Publish of `payload` to `topic` with metadata `via=proxy`.
pub fn publish_request(topic: &str, payload: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.to_string(),
        payload: payload.as_bytes().to_vec().into(),
        metadata: HashMap::from([("via".to_string(), "proxy".to_string())]),
        partition_key: "k".to_string(),
    }
}

/// Publishes `request`; the reply must report success.
pub async fn publish(channel: &Channel, request: impl tonic::IntoRequest<PublishRequest>) {
    let reply = PubSubBasicInterfaceClient::new(channel.clone())
        .publish(request)
        .await
        .expect("publish")
        .into_inner();
    assert!(reply.success, "{reply:?}");
}

/// A Subscribe of group `group` to `topic` from the earliest offset.
pub async fn subscribe(channel: &Channel, topic: &str, group: &str) -> Streaming<Message> {
    PubSubBasicInterfaceClient::new(channel.clone())
        .subscribe(SubscribeRequest {
            topic: topic.to_string(),
            subscriber_id: group.to_string(),
            options: HashMap::from([("start".to_string(), "earliest".to_string())]),
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next message of an open `stream`, within [`RECV`].
pub async fn next_message(stream: &mut Streaming<Message>) -> Message {
    next_within(stream, RECV).await
}

/// The next message of an open `stream`, within `timeout`.
pub async fn next_within(stream: &mut Streaming<Message>, timeout: Duration) -> Message {
    tokio::time::timeout(timeout, stream.message())
        .await
        .expect("a message within the timeout")
        .expect("stream ok")
        .expect("stream open")
}

/// The next message of `stream` is `payload` (published with
/// [`publish_request`]: its metadata came along).
pub async fn expect_next(stream: &mut Streaming<Message>, payload: &str) {
    is(next_message(stream).await, payload);
}

fn is(message: Message, payload: &str) {
    assert_eq!(String::from_utf8_lossy(&message.payload), payload);
    let via = message.metadata.get("via").map(String::as_str);
    assert_eq!(via, Some("proxy"), "{message:?}");
}

/// Publishes `payload` to `topic`, then subscribes (group `group`, from
/// earliest): the subscriber receives it with its metadata.
pub async fn round_trip(channel: &Channel, topic: &str, group: &str, payload: &str) {
    publish(channel, publish_request(topic, payload)).await;
    let mut stream = subscribe(channel, topic, group).await;
    expect_next(&mut stream, payload).await;
}

/// A Subscribe stream (group `group`, from earliest) that has delivered
/// `first`, published after it opened.
pub async fn delivering(
    channel: &Channel,
    topic: &str,
    group: &str,
    first: &str,
) -> Streaming<Message> {
    let mut stream = subscribe(channel, topic, group).await;
    publish(channel, publish_request(topic, first)).await;
    expect_next(&mut stream, first).await;
    stream
}

/// Publishes to one topic every `every` until [`PublishLoad::finish`],
/// counting successes and failures.
pub struct PublishLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PublishLoad {
    pub fn start(channel: &Channel, topic: &str, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut client = PubSubBasicInterfaceClient::new(channel.clone());
        let topic = topic.to_string();
        let task = tokio::spawn({
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match client
                        .publish(publish_request(&topic, &i.to_string()))
                        .await
                    {
                        Ok(reply) if reply.get_ref().success => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("publish failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(every).await;
                }
            }
        });
        PublishLoad {
            stop,
            ok,
            failed,
            task,
        }
    }

    /// Stops the load: no publish may have failed and at least `min_ok`
    /// succeeded (so it really ran across what `what` names).
    pub async fn finish(self, what: &str, min_ok: u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        let ok = self.ok.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        eprintln!("[{what}] publishes: {ok} ok, {failed} failed");
        assert_eq!(failed, 0, "publishes failed during {what}");
        assert!(ok >= min_ok, "only {ok} publishes ran during {what}");
    }
}

/// Longest wait for the first message of a subscription the plugin rebuilt
/// (a new consumer as the new identity): it rejoins its group, which may
/// wait for the old member's 6 s session, and much longer on a loaded
/// machine (20 s was seen to be too short).
pub const REJOIN: Duration = Duration::from_secs(60);

/// Traffic across a change under the plugin: a Subscribe stream that has
/// delivered a message, and a [`PublishLoad`] every 10 ms.
pub struct AcrossChange {
    name: String,
    subscription: Streaming<Message>,
    load: PublishLoad,
}

impl AcrossChange {
    /// Opens `{name}-sub` (group `{name}-group`), sees it deliver, and runs
    /// publishes to `{name}-load` for 500 ms before returning.
    pub async fn start(channel: &Channel, name: &str) -> Self {
        let (topic, group) = (format!("{name}-sub"), format!("{name}-group"));
        let subscription = delivering(channel, &topic, &group, "before").await;
        let load = PublishLoad::start(channel, &format!("{name}-load"), Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(500)).await;
        AcrossChange {
            name: name.to_string(),
            subscription,
            load,
        }
    }

    /// After the change: the open subscription delivers the next message
    /// (nothing it delivered again), publishes went on for 500 ms more with
    /// none failed (at least 20 in all), and a new group round-trips on
    /// `{name}-after`.
    pub async fn finish(mut self, channel: &Channel) {
        let topic = format!("{}-sub", self.name);
        publish(channel, publish_request(&topic, "after")).await;
        is(next_within(&mut self.subscription, REJOIN).await, "after");
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.load.finish(&self.name, 20).await;
        let topic = format!("{}-after", self.name);
        round_trip(channel, &topic, "after-group", "after the change").await;
    }
}
