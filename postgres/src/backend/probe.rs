//! The health probe: `SELECT 1` on a session of its own, whose verdict sets
//! the link state data calls fail fast on.

use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::Backend;
use crate::error::{Error, Kind};

/// Longest a health `SELECT 1` may take: core gives the whole health check 1.5 s.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

impl Backend {
    /// Health probe: `SELECT 1` on the probe's own session (reconnected
    /// when lost, so it also proves a login works), bounded well inside
    /// core's limit. Its verdict sets the link state data calls fail fast on.
    ///
    /// A probe that gets no answer in time is not proof of an outage: under
    /// load the server (or this process) may just be slow. If data
    /// statements were answered while the probe waited, the server is up but
    /// slow (the probe reports the wait as latency, i.e. DEGRADED); if
    /// nothing was, it is stalled or gone: down. (A TCP connect is no such
    /// proof: the kernel of a frozen server still completes handshakes.)
    pub(crate) async fn ping(&self) -> Result<Duration, Error> {
        self.pool.maintain();
        let started = Instant::now();
        let mut probe = self.probe.lock().await;
        let outcome = tokio::time::timeout(HEALTH_TIMEOUT, async {
            if probe.is_none() {
                *probe = Some(PgConnection::connect_with(self.pool.connect_options()).await?);
            }
            match probe.as_mut() {
                Some(conn) => sqlx::query("SELECT 1").execute(conn).await.map(drop),
                None => Ok(()),
            }
        })
        .await;
        let result = match outcome {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(source)) => {
                // The session's state is unknown after an error: start afresh.
                *probe = None;
                let err = Error::Postgres {
                    target: self.target.clone(),
                    source,
                };
                if err.kind() == Kind::Connection {
                    // The pool's idle sessions likely died the same way.
                    self.pool.flush();
                }
                Err(err)
            }
            Err(_) => {
                // The statement was cut off mid-way: this session is unusable.
                *probe = None;
                let timeout = Error::Timeout {
                    target: self.target.clone(),
                    what: "the health probe",
                    timeout: HEALTH_TIMEOUT,
                };
                if self.link.answered_since(started) {
                    tracing::debug!(target = %self.target, "health probe slow, data statements still answered");
                    Ok(started.elapsed())
                } else {
                    Err(timeout)
                }
            }
        };
        drop(probe);
        match &result {
            Ok(_) => self.link.mark_up(),
            Err(err) => {
                self.link.mark_down(err);
                if err.kind() == Kind::Auth
                    && let Some(auth) = &self.auth
                {
                    auth.raise();
                }
            }
        }
        result
    }
}
