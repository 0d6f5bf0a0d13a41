//! The server side of SASL SCRAM (RFC 5802, with SHA-256 and SHA-512 as in
//! RFC 7677 and Kafka's KIP-84) for [`KafkaProxy`](crate::KafkaProxy), so
//! librdkafka's SCRAM runs against something that checks it: a per-user
//! salt, ≥ 4096 PBKDF2 iterations, a combined nonce, the client proof
//! checked against the stored key, and a server signature the client
//! verifies in turn.
//!
//! Like a real broker the table keeps only the salted, derived keys
//! ([`ScramCredential`]), never the password. No channel binding (Kafka
//! does not use it: the GS2 header must be `n,,`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// PBKDF2 iterations of stored credentials: Kafka's minimum for both
/// mechanisms (and RFC 7677's recommendation for SHA-256).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Bytes of random salt per credential and of the server's nonce.
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 18;

/// A SASL mechanism the proxy can require.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SaslMechanism {
    /// RFC 4616 PLAIN (the password in clear, inside the connection).
    #[default]
    Plain,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-512 (Kafka KIP-84).
    ScramSha512,
}

impl SaslMechanism {
    /// The name on the wire (`SaslHandshake`) and in librdkafka's `sasl.mechanism`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn algorithms(
        self,
    ) -> Option<(
        &'static digest::Algorithm,
        hmac::Algorithm,
        pbkdf2::Algorithm,
    )> {
        match self {
            SaslMechanism::Plain => None,
            SaslMechanism::ScramSha256 => Some((
                &digest::SHA256,
                hmac::HMAC_SHA256,
                pbkdf2::PBKDF2_HMAC_SHA256,
            )),
            SaslMechanism::ScramSha512 => Some((
                &digest::SHA512,
                hmac::HMAC_SHA512,
                pbkdf2::PBKDF2_HMAC_SHA512,
            )),
        }
    }
}

/// What a SCRAM server stores for one user (RFC 5802 §3): salt, iteration
/// count, `StoredKey = H(ClientKey)` and `ServerKey`.
#[derive(Clone)]
pub struct ScramCredential {
    mechanism: SaslMechanism,
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives the stored keys of `password` with a fresh random salt;
    /// `None` for PLAIN (nothing to derive).
    pub fn new(mechanism: SaslMechanism, password: &str, iterations: u32) -> Option<Self> {
        let mut salt = vec![0u8; SALT_LEN];
        SystemRandom::new().fill(&mut salt).ok()?;
        Self::with_salt(mechanism, password, salt, iterations.max(SCRAM_ITERATIONS))
    }

    fn with_salt(
        mechanism: SaslMechanism,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Option<Self> {
        let (hash, mac, kdf) = mechanism.algorithms()?;
        let mut salted = vec![0u8; hash.output_len()];
        let rounds = NonZeroU32::new(iterations)?;
        pbkdf2::derive(kdf, rounds, &salt, password.as_bytes(), &mut salted);
        let salted_key = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let server_key = hmac::sign(&salted_key, b"Server Key");
        Some(ScramCredential {
            mechanism,
            salt,
            iterations,
            stored_key: digest::digest(hash, client_key.as_ref()).as_ref().to_vec(),
            server_key: server_key.as_ref().to_vec(),
        })
    }
}

/// Why a SCRAM exchange failed; the text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScramFailure {
    /// A message that is not the SCRAM message expected now.
    Malformed(&'static str),
    /// An unknown user or a wrong proof: Kafka answers both alike.
    InvalidCredentials,
}

/// One server-side conversation: client-first → server-first, then
/// client-final → server-final.
pub(crate) struct ScramServer {
    mechanism: SaslMechanism,
    state: State,
    /// The server's part of the nonce when fixed (RFC test vectors only).
    server_nonce: Option<String>,
}

enum State {
    Initial,
    /// Sent server-first; waiting for client-final.
    Challenged {
        credential: ScramCredential,
        nonce: String,
        /// client-first-bare + "," + server-first, the start of AuthMessage.
        auth_start: String,
    },
    Done,
}

impl ScramServer {
    pub(crate) fn new(mechanism: SaslMechanism) -> Self {
        ScramServer {
            mechanism,
            state: State::Initial,
            server_nonce: None,
        }
    }

    /// Handles `client-first-message`; `lookup` finds the user's
    /// credential. Returns the username and the `server-first-message`.
    pub(crate) fn client_first(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(String, Vec<u8>), (String, ScramFailure)> {
        let malformed = |what| (String::new(), ScramFailure::Malformed(what));
        if !matches!(self.state, State::Initial) {
            return Err(malformed("client-first sent twice"));
        }
        self.state = State::Done;
        let text = std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))?;
        // GS2 header: no channel binding ("n"), no authzid.
        let bare = text
            .strip_prefix("n,,")
            .ok_or_else(|| malformed("expected GS2 header `n,,`"))?;
        let mut username = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            match attribute.split_once('=') {
                Some(("n", v)) => username = Some(unescape_name(v)),
                Some(("r", v)) => client_nonce = Some(v),
                Some(("m", _)) => return Err(malformed("mandatory extension not supported")),
                _ => {} // e.g. Kafka's `tokenauth=true` extension: ignored
            }
        }
        let username = username.ok_or_else(|| malformed("no username"))?;
        let client_nonce = client_nonce
            .filter(|n| !n.is_empty())
            .ok_or_else(|| malformed("no nonce"))?;
        let Some(credential) = lookup(&username).filter(|c| c.mechanism == self.mechanism) else {
            return Err((username, ScramFailure::InvalidCredentials));
        };
        let server_nonce = match self.server_nonce.take() {
            Some(fixed) => fixed,
            None => {
                let mut random = [0u8; NONCE_LEN];
                SystemRandom::new()
                    .fill(&mut random)
                    .map_err(|_| malformed("no randomness"))?;
                B64.encode(random)
            }
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let auth_start = format!("{bare},{server_first}");
        self.state = State::Challenged {
            credential,
            nonce,
            auth_start,
        };
        Ok((username, server_first.into_bytes()))
    }

    /// Handles `client-final-message`: checks the channel binding, the
    /// nonce and the proof; returns the `server-final-message` (`v=…`).
    pub(crate) fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramFailure> {
        let State::Challenged {
            credential,
            nonce,
            auth_start,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramFailure::Malformed("client-final before client-first"));
        };
        let text =
            std::str::from_utf8(message).map_err(|_| ScramFailure::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramFailure::Malformed("no proof"))?;
        let mut binding = None;
        let mut got_nonce = None;
        for attribute in without_proof.split(',') {
            match attribute.split_once('=') {
                Some(("c", v)) => binding = Some(v),
                Some(("r", v)) => got_nonce = Some(v),
                _ => {}
            }
        }
        // base64("n,,"): the GS2 header of client-first, unchanged.
        if binding != Some("biws") {
            return Err(ScramFailure::Malformed("channel binding must be `biws`"));
        }
        if got_nonce != Some(nonce.as_str()) {
            return Err(ScramFailure::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramFailure::Malformed("proof is not base64"))?;
        let (hash, mac, _) = self
            .mechanism
            .algorithms()
            .ok_or(ScramFailure::Malformed("not a SCRAM mechanism"))?;
        let auth_message = format!("{auth_start},{without_proof}");
        let stored = hmac::Key::new(mac, &credential.stored_key);
        let client_signature = hmac::sign(&stored, auth_message.as_bytes());
        if proof.len() != client_signature.as_ref().len() {
            return Err(ScramFailure::InvalidCredentials);
        }
        // ClientKey = ClientProof XOR ClientSignature; H(ClientKey) must be StoredKey.
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let computed = digest::digest(hash, &client_key);
        if !same(computed.as_ref(), &credential.stored_key) {
            return Err(ScramFailure::InvalidCredentials);
        }
        let server_key = hmac::Key::new(mac, &credential.server_key);
        let signature = hmac::sign(&server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(signature.as_ref())).into_bytes())
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`.
fn unescape_name(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, written from RFC 5802 §3 independently of the
    /// server code, for round trips.
    fn client_final(
        mechanism: SaslMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let (hash, mac, kdf) = mechanism.algorithms().expect("scram");
        let mut salt = None;
        let mut iterations = None;
        let mut nonce = None;
        for a in server_first.split(',') {
            match a.split_once('=') {
                Some(("s", v)) => salt = Some(B64.decode(v).expect("salt")),
                Some(("i", v)) => iterations = Some(v.parse::<u32>().expect("i")),
                Some(("r", v)) => nonce = Some(v.to_string()),
                _ => {}
            }
        }
        let (salt, iterations, nonce) = (salt.unwrap(), iterations.unwrap(), nonce.unwrap());
        assert!(iterations >= 4096);
        let mut salted = vec![0u8; hash.output_len()];
        let rounds = NonZeroU32::new(iterations).unwrap();
        pbkdf2::derive(kdf, rounds, &salt, password.as_bytes(), &mut salted);
        let key = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(hash, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac::sign(&hmac::Key::new(mac, stored.as_ref()), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&key, b"Server Key");
        let expected_v = hmac::sign(&hmac::Key::new(mac, server_key.as_ref()), auth.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(expected_v.as_ref())).into_bytes(),
        )
    }

    fn exchange(
        mechanism: SaslMechanism,
        stored_pw: &str,
        used_pw: &str,
    ) -> Result<(), ScramFailure> {
        let credential = ScramCredential::new(mechanism, stored_pw, 4096).expect("scram");
        let mut server = ScramServer::new(mechanism);
        let bare = "n=al=2Cice,r=fyko+d2lbbFgONRv9qkxdawL";
        let (user, server_first) = server
            .client_first(format!("n,,{bare}").as_bytes(), |u| {
                (u == "al,ice").then(|| credential.clone())
            })
            .map_err(|(_, f)| f)?;
        assert_eq!(user, "al,ice");
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        assert!(server_first.ends_with(",i=4096"));
        let (final_message, expected) = client_final(mechanism, used_pw, bare, &server_first);
        let server_final = server.client_final(final_message.as_bytes())?;
        assert_eq!(server_final, expected, "the client can verify the server");
        Ok(())
    }

    /// RFC 7677 §3's example exchange, byte for byte.
    #[test]
    fn rfc_7677_test_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential =
            ScramCredential::with_salt(SaslMechanism::ScramSha256, "pencil", salt, 4096).unwrap();
        let mut server = ScramServer::new(SaslMechanism::ScramSha256);
        server.server_nonce = Some("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string());
        let (user, server_first) = server
            .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |_| Some(credential))
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn the_right_password_authenticates_with_both_hashes() {
        for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
            assert_eq!(exchange(mechanism, "pencil", "pencil"), Ok(()));
        }
    }

    #[test]
    fn a_wrong_password_or_unknown_user_is_invalid_credentials() {
        for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
            assert_eq!(
                exchange(mechanism, "pencil", "crayon"),
                Err(ScramFailure::InvalidCredentials)
            );
        }
        let mut server = ScramServer::new(SaslMechanism::ScramSha512);
        let refused = server.client_first(b"n,,n=nobody,r=abc", |_| None);
        assert_eq!(
            refused.map(|_| ()),
            Err(("nobody".to_string(), ScramFailure::InvalidCredentials))
        );
    }

    #[test]
    fn a_credential_of_the_other_hash_is_refused() {
        let credential = ScramCredential::new(SaslMechanism::ScramSha256, "pw", 4096).unwrap();
        let mut server = ScramServer::new(SaslMechanism::ScramSha512);
        let refused = server.client_first(b"n,,n=u,r=abc", |_| Some(credential));
        assert!(matches!(
            refused,
            Err((_, ScramFailure::InvalidCredentials))
        ));
    }

    #[test]
    fn malformed_messages_are_refused_without_panicking() {
        for first in [
            &b""[..],
            b"y,,n=u,r=x",
            b"n,,n=u",
            b"n,,r=x",
            b"\xff\xfe",
            b"n,,m=x,n=u,r=x",
        ] {
            let mut server = ScramServer::new(SaslMechanism::ScramSha256);
            let result = server.client_first(first, |_| None);
            assert!(
                matches!(result, Err((_, ScramFailure::Malformed(_)))),
                "{first:?}"
            );
        }
        let credential = ScramCredential::new(SaslMechanism::ScramSha256, "pw", 1).unwrap();
        assert_eq!(credential.iterations, SCRAM_ITERATIONS, "at least 4096");
        for last in [
            &b"c=biws,r=x"[..],
            b"c=eSws,r=abc,p=AAAA",
            b"c=biws,r=abc,p=!!",
        ] {
            let mut server = ScramServer::new(SaslMechanism::ScramSha256);
            let c = credential.clone();
            server.client_first(b"n,,n=u,r=abc", |_| Some(c)).unwrap();
            let result = server.client_final(last);
            assert!(
                matches!(result, Err(ScramFailure::Malformed(_))),
                "{last:?}"
            );
        }
        let mut server = ScramServer::new(SaslMechanism::ScramSha256);
        assert!(server.client_final(b"c=biws,r=x,p=AAAA").is_err());
    }
}
