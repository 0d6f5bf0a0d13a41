//! Vault (OpenBao dev server): KV put/get, outage (state is lost), parallel
//! instances.

use prism_testkit::{VAULT_ROOT_TOKEN, Vault};

use crate::{start, start_again, stop, two_at_once};

#[tokio::test]
async fn starts_answers_and_survives_restart() {
    let mut vault = start(Vault::start()).await;
    let port = vault.port();
    assert_eq!(vault.addr(), format!("http://127.0.0.1:{port}"));
    assert_eq!(vault.root_token(), VAULT_ROOT_TOKEN);

    vault
        .bao(&["kv", "put", "secret/app", "password=hunter2"])
        .await
        .expect("kv put");
    assert_eq!(
        vault
            .bao(&["kv", "get", "-field=password", "secret/app"])
            .await
            .expect("kv get"),
        "hunter2"
    );
    let json = vault
        .bao_json(&["kv", "get", "-format=json", "secret/app"])
        .await
        .expect("kv get json");
    assert_eq!(json["data"]["data"]["password"], "hunter2");

    stop(&mut vault).await;
    assert!(vault.bao(&["status"]).await.is_err(), "server is down");

    start_again(&mut vault).await;
    let status = vault.bao(&["status"]).await.expect("status");
    assert!(
        status.contains("Sealed") && status.contains("false"),
        "{status}"
    );
    assert!(
        vault.bao(&["kv", "get", "secret/app"]).await.is_err(),
        "dev mode is in-memory: secrets are gone after a restart"
    );
    vault
        .bao(&["kv", "put", "secret/app", "password=again"])
        .await
        .expect("secret/ mount exists again");
}

#[tokio::test]
async fn two_instances_run_at_once() {
    let (a, b) = two_at_once(Vault::start).await;
    a.bao(&["kv", "put", "secret/x", "who=a"])
        .await
        .expect("put a");
    b.bao(&["kv", "put", "secret/x", "who=b"])
        .await
        .expect("put b");
    assert_eq!(
        a.bao(&["kv", "get", "-field=who", "secret/x"])
            .await
            .expect("a"),
        "a"
    );
    assert_eq!(
        b.bao(&["kv", "get", "-field=who", "secret/x"])
            .await
            .expect("b"),
        "b"
    );
}
