//! [`Tee`]: a recording TCP pass-through. Put between a plugin and Vault, it
//! lets a test learn every token and password exchanged (OpenBao allows no
//! audit device to be enabled through the API), so it can search the
//! plugin's output for each of them.

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
