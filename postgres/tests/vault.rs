//! `prism-postgres` with Vault credentials, against a real OpenBao dev server
//! configured by `scripts/vault-dev-setup.sh` and a real PostgreSQL: the
//! plugin logs in as a minted user, rotates under load with zero failed
//! calls and leaves no old user behind, recovers by itself from a lease
//! revoked from outside (failures bounded), survives a Vault stall shorter
//! than the TTL, logs in with AppRole and a token file, and never logs a
//! secret.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Plugin, get, req, set};
use prism_plugin_core::proto::lifecycle::HealthCheckRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_testkit::{Postgres, Tee, Vault, json_strings};

/// PostgreSQL and OpenBao, configured by the setup script with the given
/// role TTLs. Returns the script's stdout.
async fn servers(ttl: &str, max_ttl: &str, extra: &[(&str, &str)]) -> (Postgres, Vault, String) {
    let (pg, vault) = tokio::join!(Postgres::start(), Vault::start());
    let (pg, vault) = (pg.expect("postgres starts"), vault.expect("vault starts"));
    let out = run_setup(&pg, &vault, ttl, max_ttl, extra).await;
    (pg, vault, out)
}

async fn run_setup(
    pg: &Postgres,
    vault: &Vault,
    ttl: &str,
    max_ttl: &str,
    extra: &[(&str, &str)],
) -> String {
    vault
        .setup_postgres(pg, ttl, max_ttl, extra)
        .await
        .unwrap_or_else(|e| panic!("setup script failed: {e}"))
}

/// Environment for a plugin using Vault with `auth` settings; the
/// `DATABASE_URL` carries no credentials, so only Vault's can work.
fn vault_envs<'a>(
    pg_url: &'a str,
    vault_addr: &'a str,
    auth: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut envs = vec![
        ("DATABASE_URL", pg_url),
        ("VAULT_ADDR", vault_addr),
        ("PRISM_VAULT__SECRET__ENGINE", "database"),
        ("PRISM_VAULT__SECRET__ROLE", "prism-postgres"),
        ("PRISM_VAULT__REQUEST_TIMEOUT", "800ms"),
    ];
    envs.extend_from_slice(auth);
    envs
}

fn bare_url(pg: &Postgres) -> String {
    format!("postgres://127.0.0.1:{}/{}", pg.port(), pg.database())
}

async fn start_plugin(pg: &Postgres, vault: &Vault, auth: &[(&str, &str)]) -> Plugin {
    let url = bare_url(pg);
    let addr = vault.addr();
    let envs = vault_envs(&url, &addr, auth);
    Plugin::start(pg, &envs).await
}

fn token_auth(vault: &Vault) -> [(&'static str, &str); 1] {
    [("VAULT_TOKEN", vault.root_token())]
}

/// Distinct users of the plugin's sessions.
async fn session_users(pg: &Postgres) -> Vec<String> {
    let out = pg
        .psql(
            "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity \
             WHERE application_name = 'prism-postgres'",
        )
        .await
        .expect("psql");
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Vault-minted roles that exist now.
async fn minted_roles(pg: &Postgres) -> Vec<String> {
    let out = pg
        .psql("SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'v-%'")
        .await
        .expect("psql");
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn health_details(plugin: &Plugin) -> BTreeMap<String, String> {
    LifecycleInterfaceClient::new(plugin.channel.clone())
        .health_check(HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner()
        .details
        .into_iter()
        .collect()
}

/// Steady KV traffic: `clients` loops of Set + Get (value checked), each
/// failed call counted and retried after `backoff`.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(plugin: &Plugin, clients: usize, backoff: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let mut kv = plugin.basic();
                let (stop, ok, failed, errors) =
                    (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("c{c}-{}", n % 50);
                        let value = format!("v{n}");
                        let result = async {
                            kv.set(req(None, set(&key, value.clone(), 0))).await?;
                            let got = kv.get(req(None, get(&key))).await?.into_inner();
                            if got.value.as_ref() != value.as_bytes() {
                                return Err(tonic::Status::data_loss("wrong value read back"));
                            }
                            Ok::<_, tonic::Status>(())
                        }
                        .await;
                        match result {
                            Ok(()) => {
                                ok.fetch_add(2, Ordering::Relaxed);
                            }
                            Err(status) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                {
                                    let mut errors = errors.lock().unwrap();
                                    if errors.len() < 5 {
                                        errors.push(format!(
                                            "{:?}: {}",
                                            status.code(),
                                            status.message()
                                        ));
                                    }
                                }
                                tokio::time::sleep(backoff).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            errors,
            tasks,
        }
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

async fn poll<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    let url = bare_url(&pg);
    let tee_addr = tee.addr();
    let envs = vault_envs(&url, &tee_addr, &[("VAULT_TOKEN", vault.root_token())]);
    let mut plugin = Plugin::start(&pg, &envs).await;
    let first_users = session_users(&pg).await;
    let minted = minted_roles(&pg).await;
    assert_eq!(minted.len(), 1, "one minted user: {minted:?}");
    assert!(
        first_users.iter().all(|u| u.starts_with("v-")),
        "the plugin logs in as the Vault-minted user only: {first_users:?}"
    );

    let load = Load::start(&plugin, 8, Duration::from_millis(50));
    let started = Instant::now();
    let mut seen = minted;
    loop {
        for user in session_users(&pg).await {
            if !seen.contains(&user) {
                seen.push(user);
            }
        }
        let swaps: u64 = health_details(&plugin).await["vault_pool_swaps"]
            .parse()
            .expect("swaps");
        if swaps >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "3 rotations in 25 s; users seen: {seen:?}\n{}",
            plugin.process.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little more traffic on the newest pool.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for user in session_users(&pg).await {
        if !seen.contains(&user) {
            seen.push(user);
        }
    }
    assert!(seen.len() >= 4, "4 users served in turn: {seen:?}");
    let (ok, failed, errors) = load.finish().await;
    eprintln!(
        "[rotation] {} users over {:?}: {ok} calls ok, {failed} failed {errors:?}",
        seen.len(),
        started.elapsed()
    );
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0, "no call fails because of a rotation: {errors:?}");
    let details = health_details(&plugin).await;
    assert!(
        details["vault_pool_swaps"].parse::<u64>().unwrap() >= 3,
        "{details:?}"
    );
    assert_eq!(details["vault_reachable"], "true", "{details:?}");

    // Replaced users are revoked within the grace period after their pool drained.
    let current = session_users(&pg).await;
    poll(Duration::from_secs(8), "old users dropped", || async {
        minted_roles(&pg).await.iter().all(|r| current.contains(r))
    })
    .await;

    // Nothing secret in the logs: not the token, not the admin password,
    // not one of the passwords Vault minted (read from its raw audit log).
    plugin.process.sigterm().expect("sigterm");
    plugin
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    let logs = plugin.process.logs();
    assert!(
        logs.contains("switched to the rotated credentials"),
        "{logs}"
    );
    let traffic = tee.traffic();
    let minted_passwords = json_strings(&traffic, "password");
    assert!(
        minted_passwords.len() >= 4,
        "Vault handed out the minted passwords: {}",
        minted_passwords.len()
    );
    let mut secrets = minted_passwords;
    secrets.push(vault.root_token().to_string());
    secrets.push(pg.password().to_string());
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
    }
    eprintln!(
        "[rotation] {} secrets checked against {} bytes of logs",
        secrets.len(),
        logs.len()
    );
    poll(
        Duration::from_secs(5),
        "the last user revoked at stop",
        || async { minted_roles(&pg).await.is_empty() },
    )
    .await;
}

#[tokio::test]
async fn a_lease_revoked_from_outside_is_replaced_by_itself_with_bounded_failures() {
    // Long TTL: only the revocation can trigger the new credentials.
    let (pg, vault, _) = servers("1m", "10m", &[]).await;
    let plugin = start_plugin(&pg, &vault, &token_auth(&vault)).await;
    let before = minted_roles(&pg).await;
    let load = Load::start(&plugin, 8, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked = Instant::now();
    // Revocation drops the user and ends its sessions (the setup script's
    // revocation statements), like an operator locking the plugin out.
    vault
        .bao(&[
            "lease",
            "revoke",
            "-prefix",
            "database/creds/prism-postgres",
        ])
        .await
        .expect("revoke");
    poll(
        Duration::from_secs(10),
        "a new minted user serving",
        || async {
            let users = session_users(&pg).await;
            !users.is_empty() && users.iter().all(|u| !before.contains(u))
        },
    )
    .await;
    // Recovered = the new pool is swapped in (its sessions exist a moment
    // earlier, while it is being checked).
    let deadline = Instant::now() + Duration::from_secs(10);
    while health_details(&plugin).await["vault_pool_swaps"] == "0" {
        assert!(Instant::now() < deadline, "no swap after the revocation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = revoked.elapsed();
    // Calls that loaded the old pool just before the swap end soon after it
    // (1 s allowance: CI machines are loaded); from then on no call fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_at_recovery = load.failed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_after = load.failed() - failed_at_recovery;
    let (ok, failed, errors) = load.finish().await;
    let details = health_details(&plugin).await;
    eprintln!(
        "[revoke] recovered {recovered:?} after the revocation; {ok} calls ok, {failed} failed \
         ({failed_after} after recovery); auth failures seen {}; {errors:?}",
        details["vault_auth_failures"]
    );
    // The bound: failures only while the old sessions are gone and the new
    // credentials are not in yet (detection by the next health probe, at most
    // 500 ms, plus fetching and checking new credentials: ~1 s idle, up to
    // several seconds on a loaded 2-core CI machine); each of the 8 clients
    // retries every 50 ms, so at most 8 × 10 s / 50 ms.
    const RECOVERY_BOUND: Duration = Duration::from_secs(10);
    const BOUND: u64 = 8 * 10_000 / 50;
    assert!(recovered < RECOVERY_BOUND, "{recovered:?}");
    assert!(
        failed <= BOUND,
        "{failed} failed calls (bound {BOUND}): {errors:?}"
    );
    assert_eq!(failed_after, 0, "no failures once the new user serves");
    assert!(
        details["vault_auth_failures"].parse::<u64>().unwrap() >= 1,
        "{details:?}"
    );
    assert!(ok > 0);
}

#[tokio::test]
async fn a_vault_stall_shorter_than_the_ttl_fails_no_call_and_renewal_resumes() {
    let (pg, mut vault, _) = servers("15s", "1m", &[]).await;
    let plugin = start_plugin(&pg, &vault, &token_auth(&vault)).await;
    let user = session_users(&pg).await;
    let load = Load::start(&plugin, 4, Duration::from_millis(50));
    vault.pause().expect("pause vault");
    // Stay paused until a renewal attempt has failed (past 2/3 of the 15 s
    // lease), then resume at once, with several seconds of the lease left:
    // timed from what the plugin reports, so a loaded machine cannot push
    // the pause past the expiry.
    poll(
        Duration::from_secs(16),
        "Vault reported unreachable",
        || async { health_details(&plugin).await["vault_reachable"] == "false" },
    )
    .await;
    let during = health_details(&plugin).await;
    wait_serving(&plugin).await;
    vault.resume().expect("resume vault");
    poll(Duration::from_secs(10), "renewal resumed", || async {
        let d = health_details(&plugin).await;
        d["vault_reachable"] == "true" && d["vault_renewals"] != "0"
    })
    .await;
    let (ok, failed, errors) = load.finish().await;
    let after = health_details(&plugin).await;
    eprintln!(
        "[stall] during: {during:?}\n[stall] after: {after:?}\n[stall] {ok} ok, {failed} failed"
    );
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 0);
    assert_eq!(
        session_users(&pg).await,
        user,
        "kept the same user throughout"
    );
}

async fn wait_serving(plugin: &Plugin) {
    prism_testkit::wait_for_health(
        plugin.port,
        "readiness",
        prism_testkit::ServingStatus::Serving,
        Duration::from_secs(1),
    )
    .await
    .expect("readiness stays SERVING while Vault is away");
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
    let again = run_setup(&pg, &vault, "1m", "10m", &[]).await;
    assert!(again.contains(&role_id), "{again}");

    let approle = [
        ("PRISM_VAULT__AUTH__METHOD", "approle"),
        ("PRISM_VAULT__AUTH__ROLE_ID", role_id.as_str()),
        ("PRISM_VAULT__AUTH__SECRET_ID_FILE", secret_id_path),
    ];
    let plugin = start_plugin(&pg, &vault, &approle).await;
    let mut kv = plugin.basic();
    kv.set(req(None, set("k", "approle", 0)))
        .await
        .expect("set");
    let users = session_users(&pg).await;
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
    let second = start_plugin(&pg, &vault, &token).await;
    let got = second
        .basic()
        .get(req(None, get("k")))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.value.as_ref(), b"approle");
    let users = session_users(&pg).await;
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
