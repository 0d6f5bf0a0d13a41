//! The PKI secrets engine (DESIGN.md §5): `<mount>/issue/<role>` issues a
//! client certificate for `common_name` and returns `certificate`,
//! `private_key`, `ca_chain`, `issuing_ca`, `serial_number` and
//! `expiration` (epoch seconds), with `lease_duration` 0 — nothing to renew.
//! The certificate becomes a [`Credentials`] set whose lease is not
//! renewable and runs out at `expiration`, so the worker's usual rule (at
//! 2/3 of a lease's life, renew or else fetch anew) re-issues it at about
//! 2/3 of its life and the rotation swaps it in like a new database user.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::time::Instant;

use super::credentials::{ClientCertificate, Credentials, Lease, SecretString};
use super::http::Http;
use crate::Error;

/// `<mount>/issue/<role>`'s `data`.
#[derive(Deserialize)]
pub(super) struct Issued {
    certificate: String,
    private_key: String,
    #[serde(default)]
    ca_chain: Vec<String>,
    #[serde(default)]
    issuing_ca: String,
    #[serde(default)]
    serial_number: String,
    expiration: u64,
}

#[derive(Deserialize)]
struct IssueResponse {
    data: Issued,
}

impl Http {
    /// Issues a certificate for `common_name` from `role` (with `ttl`, else
    /// the role's). A refusal (4xx: no such role, name not allowed) and an
    /// outage are both `Unavailable`: the worker retries with backoff.
    pub(super) async fn pki_issue(
        &self,
        mount: &str,
        role: &str,
        common_name: &str,
        ttl: Option<Duration>,
    ) -> Result<Issued, Error> {
        let mut body = serde_json::json!({ "common_name": common_name });
        if let Some(ttl) = ttl {
            body["ttl"] = format!("{}s", ttl.as_secs()).into();
        }
        let req = self
            .request(reqwest::Method::POST, &format!("{mount}/issue/{role}"))
            .json(&body);
        match self
            .send::<IssueResponse>("PKI certificate issue", req)
            .await
        {
            Ok(Some(response)) => Ok(response.data),
            Ok(None) => Err(Error::Unavailable(
                "Vault returned no certificate".to_string(),
            )),
            Err(Error::Config(problems)) => Err(Error::Unavailable(problems.join("; "))),
            Err(other) => Err(other),
        }
    }
}

/// Seconds since the epoch now (for `expiration`).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Issued {
    /// The credential set of this certificate: user name = `common_name`, no
    /// password, a non-renewable lease running out at `expiration` (counted
    /// from `now_unix`, on tokio's clock from `now`).
    pub(super) fn into_credentials(
        self,
        common_name: &str,
        generation: u64,
        now_unix: u64,
        now: Instant,
    ) -> Credentials {
        let life = Duration::from_secs(self.expiration.saturating_sub(now_unix));
        let chain = if self.ca_chain.is_empty() && !self.issuing_ca.is_empty() {
            vec![self.issuing_ca]
        } else {
            self.ca_chain
        };
        Credentials {
            username: common_name.to_string(),
            password: SecretString::default(),
            extra: Default::default(),
            generation,
            // No lease id: nothing to renew or revoke (the certificate
            // simply expires; revoke it in Vault to stop it earlier).
            lease: Some(Lease::issued(String::new(), false, life, now)),
            certificate: Some(ClientCertificate {
                cert_pem: self.certificate,
                chain_pem: chain,
                key_pem: SecretString::new(self.private_key),
                serial: self.serial_number,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::policy;

    fn issued(expiration: u64) -> Issued {
        serde_json::from_value(serde_json::json!({
            "certificate": "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----",
            "private_key": "-----BEGIN EC PRIVATE KEY-----\nsecret\n-----END EC PRIVATE KEY-----",
            "ca_chain": [],
            "issuing_ca": "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----",
            "serial_number": "1a:2b",
            "expiration": expiration,
        }))
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_is_reissued_at_two_thirds_of_its_life() {
        let now = Instant::now();
        let creds = issued(1_000_030).into_credentials("prism_pki", 3, 1_000_000, now);
        assert_eq!(creds.username, "prism_pki");
        assert_eq!(creds.generation, 3);
        let lease = creds.lease.as_ref().unwrap();
        assert!(!lease.renewable, "nothing to renew: issue anew");
        assert_eq!(lease.expires_at, now + Duration::from_secs(30));
        let cert = creds.certificate.as_ref().unwrap();
        assert_eq!(cert.chain_pem.len(), 1, "issuing_ca when ca_chain is empty");
        assert!(cert.cert_chain_pem().contains("leaf") && cert.cert_chain_pem().contains("ca"));
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(!policy::lease_due(Some(lease), Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            policy::lease_due(Some(lease), Instant::now()),
            "due at 20 s of 30"
        );
    }

    #[test]
    fn the_private_key_never_reaches_debug_output() {
        let creds = issued(10).into_credentials("cn", 1, 0, Instant::now());
        let shown = format!("{creds:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("1a:2b"), "the serial is shown: {shown}");
        let key = &creds.certificate.as_ref().unwrap().key_pem;
        assert!(key.expose().contains("secret"));
    }

    #[test]
    fn an_expiration_in_the_past_is_an_expired_lease() {
        let now = Instant::now();
        let creds = issued(5).into_credentials("cn", 1, 100, now);
        assert_eq!(creds.lease.unwrap().expires_at, now);
    }
}
