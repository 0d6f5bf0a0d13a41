//! Vault-minted backend users (DESIGN.md §5), as one suite every plugin whose
//! backend users come from Vault's database engine calls with its specifics (a
//! [`MintedUsers`] view of its backend): rotations under load fail no call and
//! leave no old user and no secret in the logs, and a lease revoked from outside
//! is replaced by itself with bounded failures.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::kv::{KvPlugin, poll_until};
use crate::load::Load;
use crate::{Tee, Vault, json_strings};

/// Clients of the steady traffic each test runs.
const CLIENTS: usize = 8;
/// Their retry backoff after a failed call.
const BACKOFF: Duration = Duration::from_millis(50);

/// The backend seen from outside the plugin: which users Vault minted and
/// which of them the plugin's connections use.
pub trait MintedUsers {
    /// Vault-minted users that exist in the backend now.
    fn minted(&self) -> impl Future<Output = Vec<String>>;
    /// Distinct minted users the plugin's connections are logged in as, sorted.
    fn in_use(&self) -> impl Future<Output = Vec<String>>;
}

/// Health detail `key` as a number.
fn count(details: &std::collections::BTreeMap<String, String>, key: &str) -> u64 {
    details[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is a number: {details:?}"))
}

/// The connection swaps so far; 0 while the report has none (a backend
/// health check that timed out on a loaded machine reports no details).
fn swaps(details: std::collections::BTreeMap<String, String>) -> u64 {
    details
        .get("vault_pool_swaps")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `plugin` (started with Vault credentials through `tee`, with role TTL = max
/// TTL of about 6 s, so every lease is rotated rather than renewed) logs in as
/// the one minted user; under 8 clients of load it serves as at least 4 users in
/// turn over 3 rotations within 25 s with 0 failed calls, Vault stays reachable,
/// the replaced users are gone within 8 s, and after SIGTERM the logs hold none
/// of the passwords Vault handed out (read from `tee`) nor any of `secrets`,
/// and the last user is revoked within 5 s.
pub async fn under_load(
    backend: &impl MintedUsers,
    mut plugin: KvPlugin,
    tee: &Tee,
    secrets: &[&str],
) {
    let minted = backend.minted().await;
    assert_eq!(minted.len(), 1, "one minted user: {minted:?}");
    let first = backend.in_use().await;
    assert_eq!(
        first, minted,
        "the plugin logs in as the Vault-minted user only"
    );

    let load = Load::start(&plugin, CLIENTS, BACKOFF);
    let started = Instant::now();
    let mut seen = minted;
    let note_users = async |seen: &mut Vec<String>| {
        for user in backend.in_use().await {
            if !seen.contains(&user) {
                seen.push(user);
            }
        }
    };
    loop {
        note_users(&mut seen).await;
        if swaps(plugin.health_details().await) >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "3 rotations in 25 s; users seen: {seen:?}\n{}",
            plugin.process.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little more traffic on the newest connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    note_users(&mut seen).await;
    let counts = load.finish().await;
    eprintln!(
        "[rotation] {} users over {:?}: {counts:?}",
        seen.len(),
        started.elapsed()
    );
    assert!(counts.ok > 100, "load ran: {counts:?}");
    assert_eq!(
        counts.failed, 0,
        "no call fails because of a rotation: {counts:?}"
    );
    assert!(seen.len() >= 4, "4 users served in turn: {seen:?}");
    let details = plugin.health_details().await;
    assert!(count(&details, "vault_pool_swaps") >= 3, "{details:?}");
    assert_eq!(details["vault_reachable"], "true", "{details:?}");

    // Replaced users are revoked once their connections drained. Rotation
    // goes on meanwhile (short TTLs), so the users minted after this point
    // are not compared: only the ones already replaced must go.
    let current = backend.in_use().await;
    assert_eq!(current.len(), 1, "{current:?}");
    let replaced: Vec<&String> = seen.iter().filter(|u| !current.contains(u)).collect();
    poll_until(Duration::from_secs(8), "replaced users dropped", || async {
        let minted = backend.minted().await;
        !minted.iter().any(|user| replaced.contains(&user))
    })
    .await;

    plugin.process.terminate(Duration::from_secs(10)).await;
    no_secret_in_logs(&plugin, tee, secrets);
    poll_until(
        Duration::from_secs(5),
        "the last user revoked at stop",
        || async { backend.minted().await.is_empty() },
    )
    .await;
}

/// The stopped `plugin`'s logs show the rotations but none of the passwords
/// Vault handed out (at least 4, read from `tee`) nor any of `secrets`.
fn no_secret_in_logs(plugin: &KvPlugin, tee: &Tee, secrets: &[&str]) {
    let logs = plugin.process.logs();
    assert!(
        logs.contains("switched to the rotated credentials"),
        "{logs}"
    );
    let mut all = json_strings(&tee.traffic(), "password");
    assert!(
        all.len() >= 4,
        "Vault handed out the minted passwords: {}",
        all.len()
    );
    all.extend(secrets.iter().map(|s| (*s).to_owned()));
    for secret in &all {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
    }
    eprintln!(
        "[rotation] {} secrets checked against {} bytes of logs",
        all.len(),
        logs.len()
    );
}

/// With a long lease (only the revocation can trigger new credentials) and 8
/// clients of load, revoking the plugin's lease (`database/creds/<role>`)
/// from outside makes it serve as a new user and swap its connection within
/// 10 s by itself; failures happen only until then (at most what 8 clients
/// retrying every 50 ms make in 10 s), none once `settle` has passed after the
/// swap (calls that loaded the old connection just before it), and the auth
/// failure is counted.
pub async fn revoked_lease(
    backend: &impl MintedUsers,
    plugin: &KvPlugin,
    vault: &Vault,
    role: &str,
    settle: Duration,
) {
    let before = backend.minted().await;
    let load = Load::start(plugin, CLIENTS, BACKOFF);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked = Instant::now();
    // Revocation drops the user and ends its sessions, like an operator
    // locking the plugin out.
    let prefix = format!("database/creds/{role}");
    vault
        .bao(&["lease", "revoke", "-prefix", &prefix])
        .await
        .expect("revoke");
    poll_until(
        Duration::from_secs(10),
        "a new minted user serving",
        || async {
            let users = backend.in_use().await;
            !users.is_empty() && users.iter().all(|u| !before.contains(u))
        },
    )
    .await;
    // Recovered = the new connection is swapped in (it exists a moment
    // earlier, while it is being checked).
    let deadline = Instant::now() + Duration::from_secs(10);
    while swaps(plugin.health_details().await) == 0 {
        assert!(Instant::now() < deadline, "no swap after the revocation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = revoked.elapsed();
    tokio::time::sleep(settle).await;
    let failed_at_recovery = load.failed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_after = load.failed() - failed_at_recovery;
    let counts = load.finish().await;
    let details = plugin.health_details().await;
    eprintln!(
        "[revoke] recovered {recovered:?} after the revocation; {counts:?} \
         ({failed_after} failed after recovery); auth failures seen {}",
        details["vault_auth_failures"]
    );
    // The bound: failures only while the old sessions are gone and the new
    // credentials are not in yet (detection, then fetching and checking new
    // credentials: ~1 s idle, several seconds on a loaded 2-core CI machine);
    // each client retries every 50 ms: at most 8 × 10 s / 50 ms.
    const RECOVERY_BOUND: Duration = Duration::from_secs(10);
    const BOUND: u64 = CLIENTS as u64 * 10_000 / 50;
    assert!(recovered < RECOVERY_BOUND, "{recovered:?}");
    assert!(counts.failed <= BOUND, "bound {BOUND}: {counts:?}");
    assert_eq!(failed_after, 0, "no failures once the new user serves");
    assert!(count(&details, "vault_auth_failures") >= 1, "{details:?}");
    assert!(counts.ok > 0);
}
