//! Steady KeyValue traffic against a plugin while something happens to it (a
//! credential rotation, a Vault stall): each client loops Set + Get with the
//! value checked, counts what succeeded and what failed, and retries a failed
//! call after a backoff.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kv::{KvPlugin, get, req, set};

/// How many failure messages are kept for the assertion messages.
const KEPT_ERRORS: usize = 5;

/// Running traffic; [`finish`](Load::finish) stops it and reports.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub struct Counts {
    /// Calls that succeeded (a Set and its checked Get count two).
    pub ok: u64,
    /// Failed rounds (a failed call or a wrong value read back).
    pub failed: u64,
    /// The first few failures, `Code: message`.
    pub errors: Vec<String>,
}

impl Load {
    /// Starts `clients` loops on `plugin`, each retrying after `backoff` when
    /// a call fails.
    pub fn start(plugin: &KvPlugin, clients: usize, backoff: Duration) -> Load {
        let load = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            failed: Arc::default(),
            errors: Arc::default(),
            tasks: Vec::new(),
        };
        let tasks = (0..clients)
            .map(|c| tokio::spawn(load.client(plugin, c, backoff)))
            .collect();
        Load { tasks, ..load }
    }

    /// One client's loop.
    fn client(
        &self,
        plugin: &KvPlugin,
        c: usize,
        backoff: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut kv = plugin.basic();
        let (stop, ok, failed, errors) = (
            self.stop.clone(),
            self.ok.clone(),
            self.failed.clone(),
            self.errors.clone(),
        );
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("c{c}-{}", n % 50);
                let value = format!("v{n}");
                let result = async {
                    kv.set(req(None, set(&key, value.clone(), 0))).await?;
                    let got = kv.get(req(None, get(&key))).await?.into_inner();
                    if got.value.as_ref() != value.as_bytes() {
                        return Err(tonic::Status::data_loss("wrong value read back"));
                    }
                    Ok::<_, tonic::Status>(())
                }
                .await;
                match result {
                    Ok(()) => {
                        ok.fetch_add(2, Ordering::Relaxed);
                    }
                    Err(status) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        {
                            let mut errors = errors.lock().expect("errors lock");
                            if errors.len() < KEPT_ERRORS {
                                errors.push(format!("{:?}: {}", status.code(), status.message()));
                            }
                        }
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        }
    }

    /// Failed rounds so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Stops every client and reports.
    pub async fn finish(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let errors = self.errors.lock().expect("errors lock").clone();
        Counts {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            errors,
        }
    }
}
