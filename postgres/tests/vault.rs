//! `prism-postgres` with Vault credentials, against a real OpenBao dev server
//! configured by `scripts/vault-dev-setup.sh` and a real PostgreSQL: the
//! plugin logs in as a minted user, rotates under load with zero failed
//! calls and leaves no old user behind, recovers by itself from a lease
//! revoked from outside (failures bounded), survives a Vault stall shorter
//! than the TTL, logs in with AppRole and a token file, and never logs a
//! secret.

mod common;

use std::time::Duration;

use common::{Plugin, poll_until, req, set, start_plugin};
use prism_testkit::lifecycle::expect_serving;
use prism_testkit::load::Load;
use prism_testkit::rotation::{self, MintedUsers};
use prism_testkit::{Postgres, Tee, Vault, borrowed_env};

/// PostgreSQL and OpenBao, configured by the setup script with the given
/// role TTLs. Returns the script's stdout.
async fn servers(ttl: &str, max_ttl: &str, extra: &[(&str, &str)]) -> (Postgres, Vault, String) {
    Vault::start_with_postgres(ttl, max_ttl, extra)
        .await
        .unwrap_or_else(|e| panic!("postgres and vault: {e}"))
}

/// The plugin on Vault credentials fetched through `vault_addr` (the
/// server's or a pass-through's), logging in with `auth`.
async fn start_vault_plugin_at(pg: &Postgres, vault_addr: &str, auth: &[(&str, &str)]) -> Plugin {
    let env = Vault::postgres_secret_env(pg, vault_addr);
    let mut envs = borrowed_env(&env);
    envs.push(("PRISM_VAULT__REQUEST_TIMEOUT", "800ms"));
    envs.extend_from_slice(auth);
    start_plugin(pg, &envs).await
}

async fn start_vault_plugin(pg: &Postgres, vault: &Vault, auth: &[(&str, &str)]) -> Plugin {
    start_vault_plugin_at(pg, &vault.addr(), auth).await
}

fn token_auth(vault: &Vault) -> [(&'static str, &str); 1] {
    [("VAULT_TOKEN", vault.root_token())]
}

/// The database's users as the Vault suite sees them.
struct Users<'a>(&'a Postgres);

impl Users<'_> {
    /// The names `sql` aggregates with `string_agg(…, ',')`, sorted.
    async fn query(&self, sql: &str) -> Vec<String> {
        let out = self.0.psql(sql).await.expect("psql");
        let mut names: Vec<String> = out
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}

impl MintedUsers for Users<'_> {
    /// Vault-minted roles that exist now.
    async fn minted(&self) -> Vec<String> {
        self.query("SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'v-%'")
            .await
    }

    /// Distinct users of the plugin's sessions.
    async fn in_use(&self) -> Vec<String> {
        self.query(
            "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity \
             WHERE application_name = 'prism-postgres'",
        )
        .await
    }
}

#[tokio::test]
async fn rotations_under_load_fail_no_call_and_leave_no_old_user_and_no_secret_in_logs() {
    // TTL = max TTL: every lease is rotated (not renewed) at 2/3 of its life,
    // about every 4 s, leaving ~2 s for the swap.
    let (pg, vault, _) = servers("6s", "6s", &[]).await;
    // The plugin talks to Vault through a recording pass-through, so the test
    // knows every secret Vault handed out.
    let tee = Tee::start(vault.port()).await;
    let plugin = start_vault_plugin_at(&pg, &tee.addr(), &token_auth(&vault)).await;
    let secrets = [vault.root_token(), pg.password()];
    rotation::under_load(&Users(&pg), plugin, &tee, &secrets).await;
}

#[tokio::test]
async fn a_lease_revoked_from_outside_is_replaced_by_itself_with_bounded_failures() {
    // Long TTL: only the revocation can trigger the new credentials.
    let (pg, vault, _) = servers("1m", "10m", &[]).await;
    let plugin = start_vault_plugin(&pg, &vault, &token_auth(&vault)).await;
    // Revocation drops the user and ends its sessions (the setup script's
    // revocation statements). Calls that loaded the old pool just before the
    // swap end soon after it (1 s allowance: CI machines are loaded).
    let settle = Duration::from_secs(1);
    rotation::revoked_lease(&Users(&pg), &plugin, &vault, "prism-postgres", settle).await;
}

#[tokio::test]
async fn a_vault_stall_shorter_than_the_ttl_fails_no_call_and_renewal_resumes() {
    let (pg, mut vault, _) = servers("15s", "1m", &[]).await;
    let plugin = start_vault_plugin(&pg, &vault, &token_auth(&vault)).await;
    let user = Users(&pg).in_use().await;
    let load = Load::start(&plugin, 4, Duration::from_millis(50));
    vault.pause().expect("pause vault");
    // Stay paused until a renewal attempt has failed (past 2/3 of the 15 s
    // lease), then resume at once, with several seconds of the lease left:
    // timed from what the plugin reports, so a loaded machine cannot push
    // the pause past the expiry.
    poll_until(
        Duration::from_secs(16),
        "Vault reported unreachable",
        || async { plugin.health_details().await["vault_reachable"] == "false" },
    )
    .await;
    let during = plugin.health_details().await;
    wait_serving(&plugin).await;
    vault.resume().expect("resume vault");
    poll_until(Duration::from_secs(10), "renewal resumed", || async {
        let d = plugin.health_details().await;
        d["vault_reachable"] == "true" && d["vault_renewals"] != "0"
    })
    .await;
    let counts = load.finish().await;
    let after = plugin.health_details().await;
    eprintln!("[stall] during: {during:?}\n[stall] after: {after:?}\n[stall] {counts:?}");
    assert_eq!(counts.failed, 0, "{counts:?}");
    assert!(counts.ok > 0);
    assert_eq!(
        Users(&pg).in_use().await,
        user,
        "kept the same user throughout"
    );
}

async fn wait_serving(plugin: &Plugin) {
    expect_serving(plugin.port, "readiness", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn approle_from_the_setup_script_and_a_token_file_both_log_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_id = dir.path().join("secret-id");
    let secret_id_path = secret_id.to_str().expect("utf-8 path");
    let (pg, vault, out) = servers("1m", "10m", &[("SECRET_ID_FILE", secret_id_path)]).await;
    let role_id = out
        .lines()
        .find_map(|l| l.strip_prefix("role_id: "))
        .expect("the script prints the role_id")
        .to_string();
    // Running it again changes nothing that breaks (idempotent).
    let again = vault.setup_postgres(&pg, "1m", "10m", &[]).await;
    let again = again.unwrap_or_else(|e| panic!("setup script failed: {e}"));
    assert!(again.contains(&role_id), "{again}");

    let approle = [
        ("PRISM_VAULT__AUTH__METHOD", "approle"),
        ("PRISM_VAULT__AUTH__ROLE_ID", role_id.as_str()),
        ("PRISM_VAULT__AUTH__SECRET_ID_FILE", secret_id_path),
    ];
    let plugin = start_vault_plugin(&pg, &vault, &approle).await;
    let mut kv = plugin.basic();
    kv.set(req(None, set("k", "approle", 0)))
        .await
        .expect("set");
    let users = Users(&pg).in_use().await;
    assert!(
        users.iter().any(|u| u.starts_with("v-approle-")),
        "logged in through AppRole: {users:?}"
    );
    let logs = plugin.process.logs();
    let secret = std::fs::read_to_string(&secret_id).expect("secret id");
    assert!(
        !logs.contains(secret.trim()),
        "the secret_id is never logged"
    );

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", vault.root_token())).expect("token file");
    let token = [(
        "PRISM_VAULT__AUTH__TOKEN_FILE",
        token_file.to_str().expect("utf-8"),
    )];
    let second = start_vault_plugin(&pg, &vault, &token).await;
    let got = second.read(None, "k").await;
    assert_eq!(got.value.as_ref(), b"approle");
    let users = Users(&pg).in_use().await;
    assert!(
        users.iter().any(|u| u.starts_with("v-token-")),
        "logged in with the token from the file: {users:?}"
    );
    // The table was created by the group role, not by a short-lived user.
    let owner = pg
        .psql("SELECT tableowner FROM pg_tables WHERE tablename = 'prism_kv'")
        .await
        .expect("psql");
    assert_eq!(owner, "prism_owner");
}
