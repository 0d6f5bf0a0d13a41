//! Vault's PKI secrets engine on a test OpenBao (DESIGN.md §5): a root CA
//! generated inside Vault and a role issuing short-lived client
//! certificates for one common name, as an operator would set them up
//! (`bao secrets enable pki`, `root/generate/internal`, a role with
//! `client_flag=true`).

use crate::Vault;
use crate::error::{Error, Result};

impl Vault {
    /// A fresh server with the PKI engine at `pki` set up by
    /// [`setup_pki`](Self::setup_pki); returns it and its root CA (PEM).
    pub async fn start_with_pki(
        role: &str,
        common_name: &str,
        ttl: &str,
    ) -> Result<(Vault, String)> {
        let vault = Vault::start().await?;
        let ca = vault.setup_pki("pki", role, common_name, ttl).await?;
        Ok((vault, ca))
    }

    /// The settings that make a plugin log in with certificates from `role`
    /// of the engine at `pki` for `common_name`, asking Vault at
    /// `vault_addr` (this server's [`addr`](Self::addr) or a pass-through in
    /// front of it) with the root token.
    pub fn pki_plugin_env(
        &self,
        vault_addr: &str,
        role: &str,
        common_name: &str,
    ) -> Vec<(&'static str, String)> {
        let mut env = Vault::secret_env(vault_addr, "pki", role);
        env.extend([
            ("VAULT_TOKEN", self.root_token().to_owned()),
            ("PRISM_VAULT__SECRET__COMMON_NAME", common_name.to_owned()),
        ]);
        env
    }

    /// Enables the PKI engine at `mount`, generates its root CA and creates
    /// `role`, which issues EC client certificates for exactly
    /// `common_name` with `ttl` (e.g. `"30s"`). Returns the root CA
    /// certificate (PEM), for the backend's trust store.
    pub async fn setup_pki(
        &self,
        mount: &str,
        role: &str,
        common_name: &str,
        ttl: &str,
    ) -> Result<String> {
        self.bao(&["secrets", "enable", &format!("-path={mount}"), "pki"])
            .await?;
        self.bao(&["secrets", "tune", "-max-lease-ttl=87600h", mount])
            .await?;
        let root = self
            .bao_json(&[
                "write",
                "-format=json",
                &format!("{mount}/root/generate/internal"),
                "common_name=prism test Vault root",
                "ttl=87600h",
                "key_type=ec",
                "key_bits=256",
            ])
            .await?;
        let ca: String =
            serde_json::from_value(root["data"]["certificate"].clone()).map_err(|source| {
                Error::Json {
                    context: format!("{mount}/root/generate/internal printed no certificate"),
                    source,
                }
            })?;
        self.bao(&[
            "write",
            &format!("{mount}/roles/{role}"),
            &format!("allowed_domains={common_name}"),
            "allow_bare_domains=true",
            "allow_subdomains=false",
            "enforce_hostnames=false",
            "client_flag=true",
            "server_flag=false",
            "key_type=ec",
            "key_bits=256",
            &format!("ttl={ttl}"),
            "max_ttl=1h",
        ])
        .await?;
        Ok(ca)
    }
}
