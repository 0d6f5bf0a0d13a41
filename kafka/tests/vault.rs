//! `prism-kafka` with SASL credentials from Vault (real OpenBao, KV v2) in
//! front of a real broker (tansu behind the test proxy running the server
//! side of SCRAM-SHA-512, which records the user of every authentication). A
//! new secret version switches the producer and every group stream to the
//! new user: publishes keep succeeding throughout (0 failures), an open
//! Consume stream loses nothing acknowledged and gets exactly the
//! unacknowledged messages again, an open Subscribe stream carries on
//! without repeating what it delivered, new connections authenticate as the
//! new user, a later version the broker rejects is abandoned while the
//! working credentials stay in use, and no password is ever logged.

mod common;

use std::time::{Duration, Instant};

use common::pubsub::{AcrossChange, REJOIN, publish, publish_request};
use common::secured::Secured;
use common::{STARTUP, ready_channel, stop};
use prism_plugin_core::proto::pubsub::stream_interface_client::StreamInterfaceClient;
use prism_plugin_core::proto::pubsub::{
    Ack, ConsumeRequest, ConsumeResponse, Credit, MessageRef, consume_request, consume_response,
};
use prism_testkit::lifecycle::health_check;
use prism_testkit::pubsub::open_from_earliest;
use prism_testkit::{SaslMechanism, Vault};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const USER_1: &str = "kafka-user-one";
const PASSWORD_1: &str = "vault-kafka-pw-1-c0ffee";
const USER_2: &str = "kafka-user-two";
const PASSWORD_2: &str = "vault-kafka-pw-2-decaf";
const WRONG_PASSWORD: &str = "vault-kafka-wrong-pw-3-bad";
const SECRET: &str = "secret/prism/kafka";

async fn put_secret(vault: &Vault, user: &str, password: &str) {
    vault
        .bao(&[
            "kv",
            "put",
            SECRET,
            &format!("username={user}"),
            &format!("password={password}"),
            "mechanism=SCRAM-SHA-512",
        ])
        .await
        .expect("bao kv put");
}

fn consume_message(request: consume_request::Request) -> ConsumeRequest {
    ConsumeRequest {
        request: Some(request),
    }
}

/// The next item of an open `stream` within `timeout`.
async fn receive<T>(stream: &mut Streaming<T>, timeout: Duration) -> T {
    tokio::time::timeout(timeout, stream.message())
        .await
        .expect("a stream item within the timeout")
        .expect("stream ok")
        .expect("stream open")
}

/// Acknowledges `messages` (offset, payload) of partition 0 on the Consume
/// stream `commands` feeds.
async fn ack(commands: &mpsc::Sender<ConsumeRequest>, messages: &[(i64, String)]) {
    let messages = messages
        .iter()
        .map(|(offset, _)| MessageRef {
            partition: 0,
            offset: *offset,
        })
        .collect();
    let request = consume_message(consume_request::Request::Ack(Ack { messages }));
    commands.send(request).await.expect("ack");
}

/// Next Consume message (skipping `committed` notices, which are returned
/// through `committed`), within [`REJOIN`]: after the rotation the stream
/// is on a new consumer that must rejoin its group first.
async fn next_message(
    stream: &mut Streaming<ConsumeResponse>,
    committed: &mut i64,
) -> (i64, String) {
    loop {
        let response = receive(stream, REJOIN).await;
        match response.response {
            Some(consume_response::Response::Message(m)) => {
                return (
                    m.offset,
                    String::from_utf8(m.payload.to_vec()).expect("utf-8"),
                );
            }
            Some(consume_response::Response::Committed(c)) => {
                for offset in c.offsets {
                    *committed = (*committed).max(offset.offset);
                }
            }
            None => panic!("empty consume response"),
        }
    }
}

/// Reads `committed` notices until the commit of `want` is confirmed
/// (within [`REJOIN`], like [`next_message`]).
async fn wait_committed(stream: &mut Streaming<ConsumeResponse>, committed: &mut i64, want: i64) {
    let deadline = Instant::now() + REJOIN;
    while *committed < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "commit {want} not confirmed (at {committed})"
        );
        let response = receive(stream, left).await;
        match response.response {
            Some(consume_response::Response::Committed(c)) => {
                for offset in c.offsets {
                    *committed = (*committed).max(offset.offset);
                }
            }
            other => panic!("unexpected {other:?} while waiting for the commit"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_secret_version_switches_publishes_and_streams_to_the_new_user_without_loss() {
    let users = [(USER_1, PASSWORD_1)];
    let mut secured = Secured::sasl(false, SaslMechanism::ScramSha512, &users).await;
    let vault = Vault::start().await.expect("OpenBao starts");
    put_secret(&vault, USER_1, PASSWORD_1).await;
    // The mechanism comes from the secret, not from the plugin's config.
    secured.credentials_in_vault_kv(&vault, "prism/kafka");
    let extra = [
        ("PRISM_BACKEND__DEFAULT_PARTITIONS", "1"),
        ("PRISM_LOG_LEVEL", "debug"),
    ];
    let (mut plugin, port) = secured.spawn(&extra).await;
    let channel = ready_channel(&plugin, port).await;
    let before = health_check(port).await.details;
    assert_eq!(before.get("vault_user").map(String::as_str), Some(USER_1));

    // 20 messages on a one-partition topic; a Consume stream takes 10 and
    // acknowledges the first 5 (committed), leaving 5..9 unacknowledged.
    let topic = "vault-consume";
    for i in 0..20 {
        publish(&channel, publish_request(topic, &i.to_string())).await;
    }
    let (commands, rx) = mpsc::channel(16);
    // Its own group, not the Subscribe stream's `vault-group` below: when two
    // members of one group (the leader among them) leave at once, tansu keeps
    // the departed leader in every later JoinGroup reply, so the rebuilt
    // consumers never get an assignment (librdkafka `debug=cgrp` shows
    // "LeaderId <the member that left>" and SyncGroup "rebalance in
    // progress" until the test times out). A broker bug, not the plugin's.
    let open = open_from_earliest(topic, "vault-consume-group", 10);
    commands.send(open).await.expect("open");
    let mut stream = StreamInterfaceClient::new(channel.clone())
        .consume(ReceiverStream::new(rx))
        .await
        .expect("consume")
        .into_inner();
    let mut committed = -1;
    let mut first = Vec::new();
    for _ in 0..10 {
        first.push(next_message(&mut stream, &mut committed).await);
    }
    let payloads: Vec<&str> = first.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(payloads, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    ack(&commands, &first[..5]).await;
    wait_committed(&mut stream, &mut committed, first[5].0).await;

    // A Subscribe stream that has received one message, and steady
    // publishes on another topic while the secret changes.
    let traffic = AcrossChange::start(&channel, "vault").await;

    // Rotate to a new SCRAM user: the broker learns it (salted keys only),
    // Vault gets version 2.
    secured.proxy.set_user(USER_2, PASSWORD_2);
    put_secret(&vault, USER_2, PASSWORD_2).await;
    for line in [
        "consume stream switched to the rotated credentials",
        "subscription switched to the rotated credentials",
    ] {
        plugin
            .wait_for_log(line, STARTUP)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    }
    let after = health_check(port).await.details;
    assert_eq!(after.get("vault_user").map(String::as_str), Some(USER_2));
    assert_eq!(after.get("vault_generation").map(String::as_str), Some("2"));
    assert!(
        secured.proxy.authenticated().iter().any(|u| u == USER_2),
        "{:?}",
        secured.proxy.authenticated()
    );
    // From now on only the new user can open connections.
    secured.proxy.remove_user(USER_1);

    // The stream (on a new consumer as the new user) delivers exactly the
    // unacknowledged 5..9 again, then the rest; nothing acknowledged returns.
    let credit = consume_message(consume_request::Request::Credit(Credit { messages: 100 }));
    commands.send(credit).await.expect("credit");
    let mut second = Vec::new();
    for _ in 0..15 {
        second.push(next_message(&mut stream, &mut committed).await);
    }
    let payloads: Vec<String> = second.iter().map(|(_, p)| p.clone()).collect();
    let expected: Vec<String> = (5..20).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
    ack(&commands, &second).await;
    wait_committed(&mut stream, &mut committed, second[14].0 + 1).await;

    // The subscription goes on (as the new user): what it had received was
    // committed by the old consumer, so the next message is the new one.
    // Publishes went on throughout; new connections use the new user.
    traffic.finish(&channel).await;
    let authenticated = secured.proxy.authenticated();
    let last = authenticated.last().map(String::as_str);
    assert_eq!(last, Some(USER_2), "{authenticated:?}");
    assert!(
        secured.proxy.rejected().is_empty(),
        "{:?}",
        secured.proxy.rejected()
    );

    // Version 3 carries a password the broker rejects: the plugin keeps the
    // working credentials (publishes succeed) and reports the abandoned set.
    put_secret(&vault, USER_2, WRONG_PASSWORD).await;
    plugin
        .wait_for_log("cannot connect with the new Vault credentials", STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    assert!(!secured.proxy.rejected().is_empty());
    publish(&channel, publish_request("vault-load", "still user two")).await;
    let kept = health_check(port).await.details;
    assert_eq!(kept.get("vault_generation").map(String::as_str), Some("2"));
    assert_ne!(
        kept.get("vault_abandoned_credentials").map(String::as_str),
        Some("0"),
        "{kept:?}"
    );

    drop(commands);
    let logs = stop(&mut plugin).await;
    for secret in [PASSWORD_1, PASSWORD_2, WRONG_PASSWORD, vault.root_token()] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}
