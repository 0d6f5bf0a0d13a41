//! [`Tee`]: a recording TCP pass-through. Put between a plugin and Vault, it
//! lets a test learn every token and password exchanged (OpenBao allows no
//! audit device to be enabled through the API), so it can search the
//! plugin's output for each of them ([`json_strings`]).

use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A pass-through to `127.0.0.1:<upstream>` recording both directions.
#[derive(Debug)]
pub struct Tee {
    port: u16,
    traffic: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Tee {
    /// Listens on a free loopback port and forwards every connection.
    pub async fn start(upstream: u16) -> Tee {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tee");
        let port = listener.local_addr().expect("tee address").port();
        let traffic: Arc<Mutex<Vec<u8>>> = Arc::default();
        let recorded = traffic.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, recorded.clone()), pipe(sr, cw, recorded));
                });
            }
        });
        Tee {
            port,
            traffic,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every `field` value (8 bytes or longer) in the JSON bodies recorded so
    /// far, e.g. `json_strings("password")` = every minted password.
    pub fn json_strings(&self, field: &str) -> Vec<String> {
        json_strings(&self.traffic(), field)
    }

    /// Everything recorded so far (lossy UTF-8).
    pub fn traffic(&self) -> String {
        String::from_utf8_lossy(&self.traffic.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, recorded: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
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
