//! Vault's PKI secrets engine on a test OpenBao (DESIGN.md §5): a root CA
//! generated inside Vault and a role issuing short-lived client
//! certificates for one common name, as an operator would set them up
//! (`bao secrets enable pki`, `root/generate/internal`, a role with
//! `client_flag=true`).

use crate::Vault;
use crate::error::{Error, Result};

impl Vault {
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
