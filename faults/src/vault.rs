//! Vault setup for the fault tests: OpenBao configured for `prism-postgres`
//! by `scripts/vault-dev-setup.sh` (database engine, role `prism-postgres`).

use prism_testkit::{Postgres, Vault};

/// Configures `vault` for `pg` with the given lease TTLs; returns the setup
/// script's stdout. Panics with its output if it fails.
pub async fn setup_postgres_role(pg: &Postgres, vault: &Vault, ttl: &str, max_ttl: &str) -> String {
    vault
        .setup_postgres(pg, ttl, max_ttl, &[])
        .await
        .unwrap_or_else(|e| panic!("vault-dev-setup.sh failed: {e}"))
}
