//! The connection of one data call: taken from the pool unless the link is
//! down (or goes down while waiting) or the deadline passes first; given
//! back or closed once its statement has an outcome; driver errors turned
//! into [`Error`]s that mark the link down or report rejected credentials.

use prism_plugin_core::deadline::{self, Deadline};
use sqlx::PgConnection;

use super::Backend;
use crate::error::{Error, Kind};
use crate::pool::Conn;

impl Backend {
    /// A connection if one is free now (see [`crate::pool::Pool::try_acquire`]);
    /// `None` when every one is in use.
    pub(super) async fn acquire_free(&self, deadline: Deadline) -> Option<Result<Conn<'_>, Error>> {
        if !self.link.is_up() {
            return Some(Err(self.link.unreachable()));
        }
        match prism_plugin_core::within(deadline, self.pool.try_acquire()).await {
            None => Some(Err(Error::Deadline {
                target: self.target.clone(),
                what: "waiting for a connection",
            })),
            Some(found) => found.map(|conn| conn.map_err(|e| self.fail(e))),
        }
    }

    /// A pooled connection, unless the server is known to be down, goes down
    /// while waiting, or the deadline passes first.
    pub(super) async fn acquire(&self, deadline: Deadline) -> Result<Conn<'_>, Error> {
        let Some(went_down) = self.link.until_down() else {
            return Err(self.link.unreachable());
        };
        tokio::select! {
            biased;
            conn = self.pool.acquire() => conn.map_err(|e| self.fail(e)),
            () = went_down => Err(self.link.unreachable()),
            () = deadline::expired(deadline) => Err(Error::Deadline {
                target: self.target.clone(),
                what: "waiting for a connection",
            }),
        }
    }

    /// Runs one statement on a connection of its own, bounded by the call's
    /// deadline, and settles the connection by its outcome.
    pub(super) async fn run<T>(
        &self,
        deadline: Deadline,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, Error> {
        let mut conn = self.acquire(deadline).await?;
        let done = prism_plugin_core::within(deadline, statement(&mut conn)).await;
        self.settle(conn, done)
    }

    /// Turns a bounded statement's outcome into the result and gives the
    /// connection back when the statement completed (an SQL error leaves the
    /// session usable). One cut off by the deadline or a lost connection is
    /// closed instead (closing it is what cancels the statement on the server).
    pub(super) fn settle<T>(
        &self,
        conn: Conn<'_>,
        done: Option<Result<T, sqlx::Error>>,
    ) -> Result<T, Error> {
        match done {
            Some(Ok(value)) => {
                self.link.note_answer();
                self.pool.release(conn);
                Ok(value)
            }
            Some(Err(err)) => {
                let err = self.fail(err);
                if err.kind() == Kind::Connection {
                    drop(conn);
                } else {
                    self.link.note_answer();
                    self.pool.release(conn);
                }
                Err(err)
            }
            None => {
                drop(conn);
                Err(Error::Deadline {
                    target: self.target.clone(),
                    what: "the statement",
                })
            }
        }
    }

    /// Wraps a driver error; a lost connection marks the link down and asks
    /// core for an immediate health check.
    pub(super) fn fail(&self, source: sqlx::Error) -> Error {
        let err = Error::Postgres {
            target: self.target.clone(),
            source,
        };
        match err.kind() {
            Kind::Connection => {
                // Idle sessions likely died the same way (server restart).
                self.pool.flush();
                self.link.mark_down(&err);
                self.ctx.health_changed();
            }
            Kind::Auth => {
                if let Some(auth) = &self.auth {
                    auth.raise();
                }
            }
            _ => {}
        }
        err
    }
}
