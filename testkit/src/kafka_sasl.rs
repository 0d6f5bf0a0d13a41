//! The broker's side of Kafka SASL for [`KafkaProxy`](crate::KafkaProxy):
//! `ApiVersions` is relayed to tansu, `SaslHandshake` names the one
//! mechanism the proxy requires, and `SaslAuthenticate` carries one PLAIN
//! round or the two SCRAM rounds ([`crate::scram`]). A failure is answered
//! as a Kafka broker does: error 58 (`SASL_AUTHENTICATION_FAILED`) with a
//! message librdkafka logs, then the connection closes.

use std::collections::HashMap;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::kafka_wire::{
    API_VERSIONS, Io, Request, SASL_AUTHENTICATE, SASL_HANDSHAKE, eof, put_compact_nullable_string,
    put_string, put_uvarint, read_auth_bytes, read_frame, read_request, read_string,
    write_response,
};
use crate::scram::{SCRAM_ITERATIONS, SaslMechanism, ScramCredential, ScramFailure, ScramServer};

/// Kafka error codes the proxy answers with.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// What the proxy keeps per user: the password for PLAIN, only the derived
/// keys for SCRAM (as a broker does).
enum Secret {
    Plain(String),
    Scram(ScramCredential),
}

/// The user table of a proxy that requires SASL with one mechanism.
pub(crate) struct Users {
    mechanism: SaslMechanism,
    table: HashMap<String, Secret>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.table.keys().collect();
        names.sort();
        f.debug_struct("Users")
            .field("mechanism", &self.mechanism)
            .field("names", &names)
            .finish()
    }
}

impl Users {
    pub(crate) fn new(mechanism: SaslMechanism, users: Vec<(String, String)>) -> Self {
        let mut table = Users {
            mechanism,
            table: HashMap::new(),
        };
        for (user, password) in users {
            table.set(&user, &password);
        }
        table
    }

    /// Adds or replaces `user` (a SCRAM credential gets a fresh salt).
    pub(crate) fn set(&mut self, user: &str, password: &str) {
        let secret = match ScramCredential::new(self.mechanism, password, SCRAM_ITERATIONS) {
            Some(credential) => Secret::Scram(credential),
            None => Secret::Plain(password.to_string()),
        };
        self.table.insert(user.to_string(), secret);
    }

    pub(crate) fn remove(&mut self, user: &str) {
        self.table.remove(user);
    }
}

/// How an exchange ended.
pub(crate) enum Outcome {
    /// The client proved it is this user.
    Authenticated(String),
    /// Refused (wrong password, unknown user, bad message): the user it named.
    Rejected(String),
    /// The client went away, asked for another mechanism or sent another
    /// request first.
    Closed,
}

/// Plays the broker's side of SASL on `client` until it authenticated or
/// failed. `users` is read under its lock for each lookup only.
pub(crate) async fn authenticate(
    client: &mut Box<dyn Io>,
    broker: &mut TcpStream,
    users: &std::sync::Mutex<Option<Users>>,
) -> std::io::Result<Outcome> {
    let lookup = |user: &str| -> Option<ScramCredential> {
        let guard = users.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref()?.table.get(user)? {
            Secret::Scram(credential) => Some(credential.clone()),
            Secret::Plain(_) => None,
        }
    };
    let Some(mechanism) = users
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|u| u.mechanism)
    else {
        return Ok(Outcome::Closed);
    };
    let mut handshaken = false;
    let mut scram: Option<(ScramServer, String)> = None;
    loop {
        let Some(request) = read_request(client).await? else {
            return Ok(Outcome::Closed);
        };
        match request.api_key {
            API_VERSIONS => {
                broker.write_all(&request.frame).await?;
                let response = read_frame(broker).await?.ok_or_else(eof)?;
                client.write_all(&response).await?;
            }
            SASL_HANDSHAKE => {
                let asked = read_string(&request.frame, request.body).unwrap_or_default();
                handshaken = asked == mechanism.name();
                let code = if handshaken {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                let mut body = Vec::new();
                body.extend_from_slice(&code.to_be_bytes());
                body.extend_from_slice(&1i32.to_be_bytes());
                put_string(&mut body, mechanism.name());
                write_response(client, request.correlation_id, false, &body).await?;
                if !handshaken {
                    return Ok(Outcome::Closed);
                }
            }
            SASL_AUTHENTICATE if handshaken => {
                let flexible = request.api_version >= 2;
                let token = read_auth_bytes(&request, flexible).unwrap_or_default();
                let step = match (mechanism, scram.take()) {
                    (SaslMechanism::Plain, _) => plain(&token, users),
                    (_, None) => {
                        let mut server = ScramServer::new(mechanism);
                        match server.client_first(&token, lookup) {
                            Ok((user, server_first)) => {
                                scram = Some((server, user));
                                Step::Continue(server_first)
                            }
                            Err((user, failure)) => {
                                Step::Fail(user, scram_message(mechanism, &failure))
                            }
                        }
                    }
                    (_, Some((mut server, user))) => match server.client_final(&token) {
                        Ok(server_final) => Step::Done(user, server_final),
                        Err(failure) => Step::Fail(user, scram_message(mechanism, &failure)),
                    },
                };
                let (code, message, bytes, outcome) = match step {
                    Step::Continue(bytes) => (0, None, bytes, None),
                    Step::Done(user, bytes) => (0, None, bytes, Some(Outcome::Authenticated(user))),
                    Step::Fail(user, message) => (
                        SASL_AUTHENTICATION_FAILED,
                        Some(message),
                        Vec::new(),
                        Some(Outcome::Rejected(user)),
                    ),
                };
                let body = authenticate_response(&request, code, message.as_deref(), &bytes);
                write_response(client, request.correlation_id, flexible, &body).await?;
                if let Some(outcome) = outcome {
                    return Ok(outcome);
                }
            }
            // Anything else before authentication: a broker closes the connection.
            _ => return Ok(Outcome::Closed),
        }
    }
}

/// One `SaslAuthenticate` round's result.
enum Step {
    /// Send these bytes and expect another round.
    Continue(Vec<u8>),
    /// Authenticated as the user; send these final bytes.
    Done(String, Vec<u8>),
    /// Refused: the user named, and the message for the client.
    Fail(String, String),
}

/// The one round of PLAIN: checks the password against the table.
fn plain(token: &[u8], users: &std::sync::Mutex<Option<Users>>) -> Step {
    let (username, password) = parse_plain(token);
    let accepted = users
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|users| users.table.get(&username))
        .is_some_and(|secret| matches!(secret, Secret::Plain(p) if *p == password));
    if accepted {
        Step::Done(username, Vec::new())
    } else {
        Step::Fail(
            username,
            "Authentication failed: invalid username or password".to_string(),
        )
    }
}

/// What a Kafka broker says when SCRAM fails (its own wording for a wrong
/// password or an unknown user; the reason for a malformed message).
fn scram_message(mechanism: SaslMechanism, failure: &ScramFailure) -> String {
    match failure {
        ScramFailure::InvalidCredentials => format!(
            "Authentication failed during authentication due to invalid credentials with \
             SASL mechanism {}",
            mechanism.name()
        ),
        ScramFailure::Malformed(what) => {
            format!("Authentication failed: invalid SCRAM message ({what})")
        }
    }
}

/// The body of a `SaslAuthenticate` response (v0–v2).
fn authenticate_response(
    request: &Request,
    code: i16,
    message: Option<&str>,
    bytes: &[u8],
) -> Vec<u8> {
    let flexible = request.api_version >= 2;
    let mut body = Vec::new();
    body.extend_from_slice(&code.to_be_bytes());
    if flexible {
        put_compact_nullable_string(&mut body, message);
        put_uvarint(&mut body, bytes.len() as u64 + 1);
    } else {
        match message {
            Some(m) => put_string(&mut body, m),
            None => body.extend_from_slice(&(-1i16).to_be_bytes()),
        }
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        body.extend_from_slice(&len.to_be_bytes());
    }
    body.extend_from_slice(bytes);
    if request.api_version >= 1 {
        body.extend_from_slice(&0i64.to_be_bytes()); // session_lifetime_ms
    }
    if flexible {
        body.push(0); // no tagged fields
    }
    body
}

/// SASL PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
fn parse_plain(token: &[u8]) -> (String, String) {
    let mut parts = token.split(|b| *b == 0);
    let _authzid = parts.next();
    let username = parts.next().unwrap_or_default();
    let password = parts.next().unwrap_or_default();
    (
        String::from_utf8_lossy(username).into_owned(),
        String::from_utf8_lossy(password).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_token_is_split() {
        assert_eq!(
            parse_plain(b"\0alice\0pw"),
            ("alice".to_string(), "pw".to_string())
        );
        assert_eq!(parse_plain(b"junk"), (String::new(), String::new()));
    }

    #[test]
    fn scram_users_keep_no_password() {
        let users = Users::new(
            SaslMechanism::ScramSha512,
            vec![("u".into(), "hunter2-secret".into())],
        );
        assert!(matches!(users.table.get("u"), Some(Secret::Scram(_))));
        assert!(!format!("{users:?}").contains("hunter2"));
    }
}
