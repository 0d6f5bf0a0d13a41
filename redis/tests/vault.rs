//! `prism-redis` with Vault credentials, against a real OpenBao dev server
//! configured by `scripts/vault-dev-setup.sh` and a real `redis-server`: the
//! plugin connects as a Vault-minted ACL user, rotates under load with zero
//! failed calls and leaves no old user behind (and no secret in its logs),
//! and recovers by itself from a lease revoked from outside with bounded
//! failures.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Plugin, get, req, set};
use prism_plugin_core::proto::lifecycle::HealthCheckRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_testkit::{Redis, Tee, Vault, json_strings};

/// The ACL user Vault creates users with (the default user stays open for
/// the test's own `redis-cli`).
const ADMIN_PASSWORD: &str = "vault-admin-test-password";

/// Redis and OpenBao, configured by the setup script with the given role TTLs.
async fn servers(ttl: &str, max_ttl: &str) -> (Redis, Vault) {
    let admin = format!(">{ADMIN_PASSWORD}");
    let args = [
        "--user",
        "vault-admin",
        "on",
        admin.as_str(),
        "~*",
        "&*",
        "+@all",
    ];
    let (redis, vault) = tokio::join!(Redis::start_with_args(&args), Vault::start());
    let (redis, vault) = (redis.expect("redis starts"), vault.expect("vault starts"));
    let port = redis.port().to_string();
    vault
        .dev_setup(
            &[
                "--redis-port",
                &port,
                "--redis-ttl",
                ttl,
                "--redis-max-ttl",
                max_ttl,
            ],
            &[
                ("REDIS_ADMIN_USER", "vault-admin"),
                ("REDIS_ADMIN_PASSWORD", ADMIN_PASSWORD),
                ("SKIP_POSTGRES", "1"),
                ("SKIP_KAFKA", "1"),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("setup script failed: {e}"));
    (redis, vault)
}

/// A plugin using Vault (through `vault_addr`); the address carries no
/// credentials, so only Vault's can work.
async fn start_plugin(redis: &Redis, vault_addr: &str, token: &str) -> Plugin {
    let address = redis.addr();
    Plugin::start(&[
        ("REDIS_ADDRESS", address.as_str()),
        ("VAULT_ADDR", vault_addr),
        ("VAULT_TOKEN", token),
        ("PRISM_VAULT__SECRET__ENGINE", "database"),
        ("PRISM_VAULT__SECRET__ROLE", "prism-redis"),
        ("PRISM_VAULT__REQUEST_TIMEOUT", "800ms"),
    ])
    .await
}

/// Vault-minted ACL users that exist now.
async fn minted_users(redis: &Redis) -> Vec<String> {
    let out = redis.cli(&["ACL", "USERS"]).await.expect("ACL USERS");
    out.lines()
        .filter(|u| u.starts_with("V_"))
        .map(str::to_string)
        .collect()
}

/// Distinct users of the plugin's connections (all but the test's own).
async fn client_users(redis: &Redis) -> Vec<String> {
    let out = redis.cli(&["CLIENT", "LIST"]).await.expect("CLIENT LIST");
    let mut users: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("user=")))
        .filter(|u| u.starts_with("V_"))
        .map(str::to_string)
        .collect();
    users.sort();
    users.dedup();
    users
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

#[tokio::test]
async fn rotations_under_load_fail_no_call_and_leave_no_old_user_and_no_secret_in_logs() {
    // TTL = max TTL: every lease is rotated (not renewed) at 2/3 of its life,
    // about every 4 s, leaving ~2 s before the old user is deleted.
    let (redis, vault) = servers("6s", "6s").await;
    let tee = Tee::start(vault.port()).await;
    let mut plugin = start_plugin(&redis, &tee.addr(), vault.root_token()).await;
    let first = minted_users(&redis).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        client_users(&redis).await,
        first,
        "the plugin is connected as the Vault-minted ACL user"
    );

    let load = Load::start(&plugin, 8, Duration::from_millis(50));
    let started = Instant::now();
    let mut seen = first;
    loop {
        for user in client_users(&redis).await {
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;
    eprintln!(
        "[rotation] {} users over {:?}: {ok} calls ok, {failed} failed {errors:?}",
        seen.len(),
        started.elapsed()
    );
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0, "no call fails because of a rotation: {errors:?}");
    assert!(seen.len() >= 4, "4 users served in turn: {seen:?}");

    // Replaced users are deleted once their lease is revoked.
    let current = client_users(&redis).await;
    assert_eq!(current.len(), 1, "{current:?}");
    let deadline = Instant::now() + Duration::from_secs(8);
    while minted_users(&redis).await != current {
        assert!(
            Instant::now() < deadline,
            "old ACL users left: {:?}",
            minted_users(&redis).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    plugin.process.sigterm().expect("sigterm");
    plugin
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    let logs = plugin.process.logs();
    let mut secrets = json_strings(&tee.traffic(), "password");
    assert!(
        secrets.len() >= 4,
        "Vault handed out the passwords: {}",
        secrets.len()
    );
    secrets.push(vault.root_token().to_string());
    secrets.push(ADMIN_PASSWORD.to_string());
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while !minted_users(&redis).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the last user is revoked at stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_lease_revoked_from_outside_is_replaced_by_itself_with_bounded_failures() {
    // Long TTL: only the revocation can trigger the new credentials.
    let (redis, vault) = servers("1m", "10m").await;
    let plugin = start_plugin(&redis, &vault.addr(), vault.root_token()).await;
    let before = minted_users(&redis).await;
    let load = Load::start(&plugin, 8, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked = Instant::now();
    // Revocation deletes the ACL user, which disconnects its connections.
    vault
        .bao(&["lease", "revoke", "-prefix", "database/creds/prism-redis"])
        .await
        .expect("revoke");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let users = client_users(&redis).await;
        if !users.is_empty() && users.iter().all(|u| !before.contains(u)) {
            break;
        }
        assert!(Instant::now() < deadline, "no new user serving: {users:?}");
        // 1 s allowance for calls that loaded the old connection just before the
        // swap (CI machines are loaded); from then on no call fails.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Recovered = the new pool is swapped in (its sessions exist a moment
    // earlier, while it is being checked).
    let deadline = Instant::now() + Duration::from_secs(10);
    while health_details(&plugin).await["vault_pool_swaps"] == "0" {
        assert!(Instant::now() < deadline, "no swap after the revocation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = revoked.elapsed();
    // Calls that loaded the old pool just before the swap end within ms;
    // from then on no call fails.
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    // The bound: failures only between the user's deletion and the new
    // credentials' connection (the first rejected re-dial asks Vault at
    // once); each of the 8 clients retries every 50 ms: at most 8 × 10 s / 50 ms.
    // Recovery takes ~1 s idle, several seconds on a loaded 2-core CI machine.
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
