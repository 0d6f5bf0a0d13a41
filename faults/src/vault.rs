//! Vault helpers for the fault tests: configuring a dev OpenBao for
//! `prism-postgres` with `scripts/vault-dev-setup.sh` (database engine,
//! role `prism-postgres`, group role `prism_owner`), and pulling every
//! `"password"` value out of recorded Vault traffic.

use prism_testkit::{Postgres, Vault};

/// Runs `scripts/vault-dev-setup.sh` against `vault` for `pg` with the given
/// lease TTLs (PostgreSQL only); returns its stdout. Panics with its output
/// if it fails.
pub async fn setup_postgres_role(pg: &Postgres, vault: &Vault, ttl: &str, max_ttl: &str) -> String {
    let script = prism_testkit::workspace_root().join("scripts/vault-dev-setup.sh");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .args(["--pg-port", &pg.port().to_string()])
        .args(["--pg-ttl", ttl, "--pg-max-ttl", max_ttl])
        .env("VAULT_ADDR", vault.addr())
        .env("VAULT_TOKEN", vault.root_token())
        .env("HOME", vault.dir())
        .env("PG_DATABASE", pg.database())
        .env("PG_ADMIN_USER", pg.user())
        .env("PG_ADMIN_PASSWORD", pg.password())
        .env("SKIP_REDIS", "1")
        .env("SKIP_KAFKA", "1")
        .env_remove("BAO_ADDR")
        .env_remove("BAO_TOKEN")
        .output()
        .await
        .expect("setup script runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "vault-dev-setup.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every string value (8 bytes or longer) of a `field` key in the JSON
/// bodies found in `text` (HTTP traffic), sorted and deduplicated.
pub fn json_strings(text: &str, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    for start in text.match_indices('{').map(|(i, _)| i) {
        let mut values =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        if let Some(Ok(value)) = values.next() {
            collect(&value, field, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn collect(value: &serde_json::Value, field: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == field && s.len() >= 8 => {
                        out.push(s.clone())
                    }
                    other => collect(other, field, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, field, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_passwords_in_http_traffic() {
        let text = "HTTP/1.1 200 OK\r\n\r\n{\"data\":{\"username\":\"v-1\",\"password\":\"abcdefgh12\"}}\
                    POST /x\r\n\r\n{\"password\":\"short\"}";
        assert_eq!(json_strings(text, "password"), ["abcdefgh12"]);
    }
}
