//! Batch edge cases every plugin answers alike.

use prism_plugin_core::proto::keyvalue::{BatchGetRequest, BatchSetRequest};
use tonic::Code;
use tonic::transport::Channel;

use super::found;
use crate::kv::{basic, batch, req, set};

/// An empty BatchGet answers no results; a BatchSet with an empty key at
/// index 1 is INVALID_ARGUMENT naming `requests[1]`, and writes nothing (all
/// or nothing: its valid key `fine` stays missing).
pub async fn a_bad_key_rejects_the_whole_batch(channel: &Channel) {
    let mut batch = batch(channel);
    let empty = batch
        .batch_get(req(None, BatchGetRequest { keys: vec![] }))
        .await
        .expect("empty batch get")
        .into_inner();
    assert!(empty.results.is_empty() && empty.found_count == 0);

    let status = batch
        .batch_set(req(
            None,
            BatchSetRequest {
                requests: vec![set("fine", "x", 0), set("", "x", 0)],
            },
        ))
        .await
        .expect_err("empty key in a batch");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("requests[1]"),
        "{}",
        status.message()
    );
    assert!(
        !found(&mut basic(channel), None, "fine").await,
        "all or nothing"
    );
}
