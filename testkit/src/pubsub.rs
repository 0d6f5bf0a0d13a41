//! PubSub request builders the Kafka tests share.

use prism_plugin_core::proto::pubsub::{
    ConsumeOpen, ConsumeRequest, StartPosition, consume_request,
};

/// The first message of a Consume stream: open `topic` for `group` from the
/// earliest offset with `credit` messages of credit.
pub fn open_from_earliest(topic: &str, group: &str, credit: i32) -> ConsumeRequest {
    ConsumeRequest {
        request: Some(consume_request::Request::Open(ConsumeOpen {
            topic: topic.into(),
            group: group.into(),
            start: StartPosition::Earliest as i32,
            initial_credit: credit,
        })),
    }
}
