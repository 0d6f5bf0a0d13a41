//! Vault setup for the fault tests: OpenBao configured for `prism-postgres`
//! by `scripts/vault-dev-setup.sh` (database engine, role `prism-postgres`),
//! and the environment that puts the plugin on Vault credentials.

use prism_testkit::{Postgres, Vault};

/// Configures `vault` for `pg` with the given lease TTLs; returns the setup
/// script's stdout. Panics with its output if it fails.
pub async fn setup_postgres_role(pg: &Postgres, vault: &Vault, ttl: &str, max_ttl: &str) -> String {
    vault
        .setup_postgres(pg, ttl, max_ttl, &[])
        .await
        .unwrap_or_else(|e| panic!("vault-dev-setup.sh failed: {e}"))
}

/// PostgreSQL and Vault started together, Vault minting users for it with
/// leases of `ttl` (renewable up to `max_ttl`).
pub async fn postgres_and_vault(ttl: &str, max_ttl: &str) -> (Postgres, Vault) {
    let (pg, vault) = tokio::join!(Postgres::start(), Vault::start());
    let (pg, vault) = (pg.expect("postgres starts"), vault.expect("vault starts"));
    setup_postgres_role(&pg, &vault, ttl, max_ttl).await;
    (pg, vault)
}

/// `pg`'s URL without credentials: only Vault's can work.
pub fn url_without_credentials(pg: &Postgres) -> String {
    format!("postgres://127.0.0.1:{}/{}", pg.port(), pg.database())
}

/// prism-postgres's environment for credentials from `vault`'s `engine`
/// (`database` or `pki`) role `prism-postgres`, reached at `addr` (the
/// server's, or a `Tee` recording its traffic), then `extra`.
pub fn plugin_env<'a>(
    vault: &'a Vault,
    addr: &'a str,
    engine: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("VAULT_ADDR", addr),
        ("VAULT_TOKEN", vault.root_token()),
        ("PRISM_VAULT__SECRET__ENGINE", engine),
        ("PRISM_VAULT__SECRET__ROLE", "prism-postgres"),
    ];
    env.extend_from_slice(extra);
    env
}
