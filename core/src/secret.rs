//! Config values that never reach a log line: [`SecretString`] for a password
//! or token, [`SecretUrl`] for a connection URL that may carry one. A plugin's
//! config derives `Debug` over them instead of hiding fields by hand.
//!
//! Both serialize as the plain string, so config round trips and
//! `--check-config` (which redacts by key name and masks URL passwords, see
//! [`crate::config::redact`]) see exactly what was configured.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::config::redact_url;

/// Vault's credential type; defined there until the Vault module is split,
/// re-exported here as the one secret string of the SDK.
pub use crate::vault::SecretString;

impl From<String> for SecretString {
    fn from(secret: String) -> Self {
        SecretString::new(secret)
    }
}

impl From<&str> for SecretString {
    fn from(secret: &str) -> Self {
        SecretString::new(secret)
    }
}

/// For drivers whose setters take `impl Into<String>` (rdkafka's
/// `ClientConfig::set`): handing the secret over is the one place it leaves
/// its wrapper.
impl From<&SecretString> for String {
    fn from(secret: &SecretString) -> Self {
        secret.expose().to_string()
    }
}

/// A connection URL that may carry a password
/// (`scheme://user:password@host/...?password=...`). It reads as the URL
/// (`Deref<Target = str>`: drivers parse it as given), but `Debug` masks the
/// userinfo password and drops the query, where a `password=` parameter
/// could hide.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL as `Debug` shows it: password masked, query dropped.
    fn redacted(&self) -> String {
        let without_query = self.0.split_once('?').map_or(&*self.0, |(base, _)| base);
        redact_url(without_query)
    }
}

impl Deref for SecretUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        SecretUrl(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        SecretUrl(url.to_string())
    }
}

impl PartialEq<str> for SecretUrl {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for SecretUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_and_serde_keeps_the_value() {
        let url = SecretUrl::from("postgres://app:url-secret@db:5432/kv?password=query-secret");
        let debug = format!("{url:?}");
        assert_eq!(debug, "\"postgres://app:<redacted>@db:5432/kv\"");
        assert_eq!(
            &*url,
            "postgres://app:url-secret@db:5432/kv?password=query-secret"
        );
        let yaml = serde_yaml::to_string(&url).expect("serializes");
        assert!(yaml.contains("url-secret"), "{yaml}");
        assert_eq!(
            format!("{:?}", SecretUrl::from("cache:6379")),
            "\"cache:6379\""
        );

        let password = SecretString::from("key-secret");
        assert!(!format!("{password:?}").contains("key-secret"));
        assert_eq!(String::from(&password), "key-secret");
    }
}
