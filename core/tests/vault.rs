//! Vault credentials against a real OpenBao dev server and a real PostgreSQL:
//! database credentials (token, token-file and AppRole login) that really log
//! in, lease renewal, rotation near the max TTL with the old user revoked, KV
//! v2 version polling, a Vault stall survived on current credentials, and no
//! secret in any log.

use std::time::{Duration, Instant};

use prism_plugin_core::vault::{
    AuthConfig, AuthMethod, CredentialSource, SecretConfig, VaultConfig,
};
use prism_testkit::{Postgres, Vault};
use tokio_util::sync::CancellationToken;

/// OpenBao with the database engine pointed at `pg`, and a role whose users
/// act as the `prism_owner` group (DESIGN.md §5: a short-lived user must not
/// own objects, or revoking it fails).
async fn vault_with_database(pg: &Postgres, ttl: &str, max_ttl: &str) -> Vault {
    let vault = Vault::start().await.unwrap();
    pg.psql("CREATE ROLE prism_owner NOLOGIN").await.unwrap();
    vault.bao(&["secrets", "enable", "database"]).await.unwrap();
    let url = format!(
        "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{}",
        pg.port(),
        pg.database()
    );
    vault
        .bao(&[
            "write",
            "database/config/pg",
            "plugin_name=postgresql-database-plugin",
            "allowed_roles=prism",
            &url,
            &format!("username={}", pg.user()),
            &format!("password={}", pg.password()),
            "verify_connection=true",
        ])
        .await
        .unwrap();
    vault
        .bao(&[
            "write",
            "database/roles/prism",
            "db_name=pg",
            "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE prism_owner; ALTER ROLE \"{{name}}\" SET role = 'prism_owner';",
            &format!("default_ttl={ttl}"),
            &format!("max_ttl={max_ttl}"),
        ])
        .await
        .unwrap();
    vault
}

fn database_config(vault: &Vault, auth: AuthConfig) -> VaultConfig {
    VaultConfig {
        address: vault.addr(),
        auth,
        secret: Some(secret("{engine: database, role: prism}")),
        request_timeout: Duration::from_millis(800),
        ..VaultConfig::default()
    }
}

/// A `vault.secret` section as a plugin's config file writes it (unset
/// keys take their defaults).
fn secret(yaml: &str) -> SecretConfig {
    serde_yaml::from_str(yaml).expect("a valid vault.secret section")
}

fn token_auth(vault: &Vault) -> AuthConfig {
    AuthConfig {
        method: AuthMethod::Token,
        token: prism_plugin_core::vault::SecretString::new(vault.root_token()),
        ..AuthConfig::default()
    }
}

/// Logs in to PostgreSQL with the minted credentials and returns `session_user`.
async fn login_as(pg: &Postgres, user: &str, password: &str) -> Result<String, String> {
    let port = pg.port().to_string();
    let server = ["-h", "127.0.0.1", "-p", &port, "-d", pg.database()];
    let out = tokio::process::Command::new("psql")
        .args(server)
        .args(["-U", user, "-Atc", "SELECT session_user"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

async fn role_exists(pg: &Postgres, user: &str) -> bool {
    pg.psql(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"
    ))
    .await
    .unwrap()
        == "1"
}

#[tokio::test]
async fn database_credentials_log_in_renew_and_rotate_with_old_users_revoked() {
    let pg = Postgres::start().await.unwrap();
    let vault = vault_with_database(&pg, "3s", "7s").await;
    let shutdown = CancellationToken::new();
    let source = CredentialSource::start(
        &database_config(&vault, token_auth(&vault)),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let first = source.current();
    assert!(first.lease.is_some());
    assert_eq!(
        login_as(&pg, &first.username, first.password.expose())
            .await
            .unwrap(),
        first.username,
        "the minted user really logs in"
    );
    assert!(
        !format!("{first:?}").contains(first.password.expose()),
        "Debug redacts the password"
    );

    // Renewals keep the first user until the max TTL nears, then a new user
    // is minted; three rotations, each new user logs in.
    let mut rx = source.subscribe();
    let mut users = vec![first.username.clone()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while users.len() < 4 {
        tokio::time::timeout(deadline - Instant::now(), rx.changed())
            .await
            .expect("rotation within the max TTL")
            .unwrap();
        let creds = rx.borrow_and_update().clone();
        assert_eq!(
            login_as(&pg, &creds.username, creds.password.expose())
                .await
                .unwrap(),
            creds.username
        );
        users.push(creds.username.clone());
    }
    let details = source.health_details();
    assert!(
        details["vault_renewals"].parse::<u64>().unwrap() >= 1,
        "{details:?}"
    );
    assert_eq!(details["vault_reachable"], "true");

    // Replaced users are revoked shortly after rotation, the current one at shutdown.
    source.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for user in &users {
        while role_exists(&pg, user).await {
            assert!(Instant::now() < deadline, "{user} still exists");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn approle_and_token_file_logins_work() {
    let pg = Postgres::start().await.unwrap();
    let vault = vault_with_database(&pg, "1m", "5m").await;
    vault.bao(&["auth", "enable", "approle"]).await.unwrap();
    let policy = vault.dir().join("prism.hcl");
    std::fs::write(
        &policy,
        "path \"database/creds/prism\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    vault
        .bao(&["policy", "write", "prism-db", policy.to_str().unwrap()])
        .await
        .unwrap();
    vault
        .bao(&[
            "write",
            "auth/approle/role/prism",
            "token_policies=prism-db",
            "token_ttl=1m",
        ])
        .await
        .unwrap();
    let role_id = vault
        .bao(&["read", "-field=role_id", "auth/approle/role/prism/role-id"])
        .await
        .unwrap();
    let secret_id = vault
        .bao(&[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/prism/secret-id",
        ])
        .await
        .unwrap();
    let approle = AuthConfig {
        method: AuthMethod::Approle,
        role_id: role_id.trim().into(),
        secret_id: prism_plugin_core::vault::SecretString::new(secret_id.trim()),
        ..AuthConfig::default()
    };
    let source =
        CredentialSource::start(&database_config(&vault, approle), CancellationToken::new())
            .await
            .unwrap();
    let creds = source.current();
    assert_eq!(
        login_as(&pg, &creds.username, creds.password.expose())
            .await
            .unwrap(),
        creds.username
    );
    source.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", vault.root_token())).unwrap();
    let from_file = AuthConfig {
        method: AuthMethod::Token,
        token_file: Some(token_file),
        ..AuthConfig::default()
    };
    let source = CredentialSource::start(
        &database_config(&vault, from_file),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!source.current().username.is_empty());
    source.shutdown().await;
}

#[tokio::test]
async fn kv2_secret_new_version_is_noticed() {
    let vault = Vault::start().await.unwrap();
    let put = ["kv", "put", "secret/prism/kafka", "username=app"];
    let v1 = ["password=pw-v1", "mechanism=SCRAM-SHA-512"];
    vault.bao(&[&put[..], &v1].concat()).await.unwrap();
    let config = VaultConfig {
        address: vault.addr(),
        auth: token_auth(&vault),
        secret: Some(secret(
            "{engine: kv2, path: prism/kafka, poll_interval: 200ms}",
        )),
        ..VaultConfig::default()
    };
    let source = CredentialSource::start(&config, CancellationToken::new())
        .await
        .unwrap();
    let v1 = source.current();
    assert_eq!(
        (v1.username.as_str(), v1.password.expose()),
        ("app", "pw-v1")
    );
    assert_eq!(v1.extra["mechanism"], "SCRAM-SHA-512");
    let mut rx = source.subscribe();
    let v2 = ["password=pw-v2"];
    vault.bao(&[&put[..], &v2].concat()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let v2 = rx.borrow().clone();
    assert_eq!(v2.password.expose(), "pw-v2");
    assert!(v2.generation > v1.generation);
    source.shutdown().await;
}

#[tokio::test]
async fn vault_stall_shorter_than_the_ttl_keeps_credentials_then_renewal_resumes() {
    let pg = Postgres::start().await.unwrap();
    let mut vault = vault_with_database(&pg, "9s", "1m").await;
    let source = CredentialSource::start(
        &database_config(&vault, token_auth(&vault)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let user = source.current().username.clone();
    vault.pause().unwrap();
    // Past the first renewal point (2/3 of 9 s) plus the request timeout,
    // short of expiry.
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let during = source.health_details();
    assert_eq!(during["vault_reachable"], "false", "{during:?}");
    assert!(!source.expired());
    let creds = source.current();
    assert_eq!(
        creds.username, user,
        "current credentials are kept while Vault is away"
    );
    assert_eq!(
        login_as(&pg, &creds.username, creds.password.expose())
            .await
            .unwrap(),
        user
    );
    vault.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = source.health_details();
        if d["vault_reachable"] == "true" && d["vault_renewals"] != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "renewal did not resume: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!source.expired());
    source.shutdown().await;
}
