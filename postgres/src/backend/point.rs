//! Point Gets and Sets through the coalescing queues (see coalesce.rs): a
//! call that finds a free connection runs alone; one that finds every
//! connection busy queues, then is either answered by another call's
//! statement or gets a connection and runs every queued call in one.

use bytes::Bytes;
use prism_plugin_core::deadline::{self, Deadline};

use super::Backend;
use crate::coalesce::{Coalesce, GetJob, Queue, Reply, SetJob, Ticket, Waiting};
use crate::error::Error;
use crate::pool::Conn;

impl Backend {
    /// Stores `value` under `key` (insert or overwrite) in one upsert,
    /// shared with concurrent Sets when all connections are busy.
    pub(crate) async fn set(
        &self,
        ns: String,
        key: String,
        value: Bytes,
        ttl_seconds: i64,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let job = SetJob {
            ns,
            key,
            value,
            ttl_seconds,
        };
        self.coalesced(job, deadline).await
    }

    /// The live value of `key`, if any; read together with concurrent Gets
    /// when all connections are busy.
    pub(crate) async fn get(
        &self,
        ns: String,
        key: String,
        deadline: Deadline,
    ) -> Result<Option<Bytes>, Error> {
        self.coalesced(GetJob { ns, key }, deadline).await
    }

    /// Runs `job` through `queue` (see coalesce.rs): joins the queue, then
    /// either is answered by another call's statement, or gets a connection
    /// and runs every queued job (its own among them, usually) with `run`,
    /// which must return one result per job, in order.
    async fn coalesced<J: Coalesce>(&self, job: J, deadline: Deadline) -> Result<J::Out, Error> {
        // A free connection: run alone, awaited to the end. Only calls that
        // find every connection busy queue and race their reply against a
        // connection; if they raced while one was still being opened, an
        // answered call would drop it half-open (measured: thousands of
        // abandoned PostgreSQL logins per second, the pool stuck below size).
        if let Some(conn) = self.acquire_free(deadline).await {
            return self.alone_on(conn?, job, deadline).await;
        }
        let queue = J::queue(&self.queues);
        let Ticket { id, mut reply } = queue.push(job, deadline);
        loop {
            if !queue.contains(id) {
                // Another call took it into its statement.
                break;
            }
            tokio::select! {
                biased;
                answer = &mut reply => return self.answered(answer, deadline).await,
                conn = self.acquire(deadline) => match conn {
                    Err(err) => {
                        queue.remove(id);
                        return Err(err);
                    }
                    Ok(conn) => {
                        if let Some(mine) = self.run_queue(queue, id, deadline, conn).await {
                            return mine;
                        }
                    }
                },
            }
        }
        match prism_plugin_core::within(deadline, reply).await {
            Some(answer) => self.answered(answer, deadline).await,
            None => Err(Error::Deadline {
                target: self.target.clone(),
                what: "the statement",
            }),
        }
    }

    /// A queued call's outcome: its result, or its job handed back, to run alone.
    async fn answered<J: Coalesce>(
        &self,
        answer: Result<Reply<J, J::Out>, tokio::sync::oneshot::error::RecvError>,
        deadline: Deadline,
    ) -> Result<J::Out, Error> {
        match answer {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(job)) => self.alone(job, deadline).await,
            // Only if the queue itself went away, which the caller's Arc prevents.
            Err(_) => Err(self.link.unreachable()),
        }
    }

    /// Runs one job on a connection of its own.
    async fn alone<J: Coalesce>(&self, job: J, deadline: Deadline) -> Result<J::Out, Error> {
        let conn = self.acquire(deadline).await?;
        self.alone_on(conn, job, deadline).await
    }

    /// Runs one job on `conn`.
    async fn alone_on<J: Coalesce>(
        &self,
        mut conn: Conn<'_>,
        job: J,
        deadline: Deadline,
    ) -> Result<J::Out, Error> {
        let done = prism_plugin_core::within(deadline, J::run(&self.sql, &mut conn, &[&job])).await;
        let mut results = self.settle(conn, done)?;
        results
            .pop()
            .ok_or_else(|| self.fail(sqlx::Error::RowNotFound))
    }

    /// Runs the queue's jobs in batches on `conn` until call `id` is answered
    /// (`Some`), or `None`: another call's statement has it, or a failed batch
    /// cost the connection while it was still queued.
    async fn run_queue<J: Coalesce>(
        &self,
        queue: &Queue<J, J::Out>,
        id: u64,
        deadline: Deadline,
        mut conn: Conn<'_>,
    ) -> Option<Result<J::Out, Error>> {
        loop {
            let batch = queue.take();
            if batch.is_empty() {
                self.pool.release(conn);
                return None;
            }
            let jobs: Vec<&J> = batch.iter().map(Waiting::job).collect();
            let bound = deadline::latest(batch.iter().map(Waiting::deadline));
            let done = prism_plugin_core::within(bound, J::run(&self.sql, &mut conn, &jobs)).await;
            drop(jobs);
            match done {
                Some(Ok(results)) if results.len() == batch.len() => {
                    self.link.note_answer();
                    let mut mine = None;
                    for (call, result) in batch.into_iter().zip(results) {
                        if call.id() == id {
                            call.into_job();
                            mine = Some(result);
                        } else {
                            call.answer(result);
                        }
                    }
                    if let Some(result) = mine {
                        self.pool.release(conn);
                        return Some(Ok(result));
                    }
                    if !queue.contains(id) {
                        // Another call's statement has ours: stop serving the
                        // queue, or a busy plugin would keep this call waiting.
                        self.pool.release(conn);
                        return None;
                    }
                }
                done => {
                    let alone = batch.len() == 1;
                    // (A result count that does not match the batch is a bug in
                    // `run`; treated as a failed statement.)
                    let done = done.map(|d| d.and_then(|_| Err(sqlx::Error::RowNotFound)));
                    let Err(err) = self.settle::<()>(conn, done) else {
                        return None;
                    };
                    // Everyone in a failed batch runs alone (dropping `batch`
                    // hands the others their jobs back): one bad item must not
                    // fail the rest.
                    let mut mine = None;
                    for call in batch {
                        if call.id() == id {
                            mine = Some(call.into_job());
                        }
                    }
                    return match mine {
                        Some(_) if alone => Some(Err(err)),
                        Some(job) => Some(self.alone(job, deadline).await),
                        // Still queued: back to waiting for an answer or a connection.
                        None => None,
                    };
                }
            }
        }
    }
}
