//! Point Gets and Sets through the coalescing queues (see coalesce.rs): a
//! call that finds a statement slot free leads a statement (its own job and
//! whatever is queued); one that finds every slot taken queues, then is
//! either answered by another call's statement or handed a slot to lead the
//! next one.

use bytes::Bytes;
use prism_plugin_core::deadline::{self, Deadline};

use super::Backend;
use crate::coalesce::{Coalesce, GetJob, MAX_BATCH, Queue, Reply, SetJob, Slot, Waiting};
use crate::error::Error;

impl Backend {
    /// Stores `value` under `key` (insert or overwrite) in one upsert,
    /// shared with concurrent Sets while other Sets' statements run.
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
    /// while other Gets' statements run.
    pub(crate) async fn get(
        &self,
        ns: String,
        key: String,
        deadline: Deadline,
    ) -> Result<Option<Bytes>, Error> {
        self.coalesced(GetJob { ns, key }, deadline).await
    }

    /// Runs `job` through its queue (see coalesce.rs): leads a statement
    /// when a slot is free, else queues and is either answered by another
    /// call's statement, handed its job back to run alone, or handed a slot.
    async fn coalesced<J: Coalesce>(&self, job: J, deadline: Deadline) -> Result<J::Out, Error> {
        if !self.link.is_up() {
            return Err(self.link.unreachable());
        }
        let queue = J::queue(&self.queues);
        let _counted = queue.enter();
        if let Some(slot) = queue.claim() {
            return self.lead(queue, slot, job, deadline).await;
        }
        let mut ticket = queue.push(job, deadline);
        // A slot freed between the claim and the push was freed by a leader
        // that saw the queue empty: nobody else would lead this call.
        if let Some(slot) = queue.claim() {
            match ticket.withdraw() {
                Some(job) => return self.lead(queue, slot, job, deadline).await,
                // A statement or a slot has it already; pass this one on.
                None => drop(slot),
            }
        }
        match ticket.reply(deadline).await {
            None => Err(Error::Deadline {
                target: self.target.clone(),
                what: "the statement",
            }),
            Some(Ok(Reply::Done(result))) => Ok(result),
            Some(Ok(Reply::Alone(job))) => self.alone(job, deadline).await,
            Some(Ok(Reply::Lead(job))) => self.lead(queue, queue.adopt(), job, deadline).await,
            // Only if the queue itself went away, which the caller's Arc prevents.
            Some(Err(_)) => Err(self.link.unreachable()),
        }
    }

    /// Runs one job on a connection of its own.
    async fn alone<J: Coalesce>(&self, job: J, deadline: Deadline) -> Result<J::Out, Error> {
        let mut conn = self.acquire(deadline).await?;
        let done = prism_plugin_core::within(deadline, J::run(&self.sql, &mut conn, &[&job])).await;
        let mut results = self.settle(conn, done)?;
        results
            .pop()
            .ok_or_else(|| self.fail(sqlx::Error::RowNotFound))
    }

    /// Leads one statement with `slot`: gets a connection, then runs `job`
    /// and every call queued by then (up to [`MAX_BATCH`] in all) as one
    /// statement, passes the slot on and answers the others. Should the
    /// statement fail, everyone in it runs alone (one bad item must not fail
    /// the rest).
    async fn lead<J: Coalesce>(
        &self,
        queue: &Queue<J, J::Out>,
        slot: Slot<'_, J, J::Out>,
        job: J,
        deadline: Deadline,
    ) -> Result<J::Out, Error> {
        // Waiting for no one: a free connection at once, without the wait's
        // watch and timer, when there is one.
        let mut conn = match self.acquire_free(deadline).await {
            Some(conn) => conn?,
            None => self.acquire(deadline).await?,
        };
        let batch = queue.take(MAX_BATCH - 1);
        let jobs: Vec<&J> = std::iter::once(&job)
            .chain(batch.iter().map(Waiting::job))
            .collect();
        let bound =
            deadline::latest(std::iter::once(deadline).chain(batch.iter().map(Waiting::deadline)));
        let done = prism_plugin_core::within(bound, J::run(&self.sql, &mut conn, &jobs)).await;
        drop(jobs);
        let results = match done {
            Some(Ok(results)) if results.len() == batch.len() + 1 => results,
            done => {
                // (A result count that does not match the batch is a bug in
                // `run`; treated as a failed statement.)
                let done = done.map(|d| d.and_then(|_| Err(sqlx::Error::RowNotFound)));
                let err = (self.settle::<()>(conn, done).err())
                    .unwrap_or_else(|| self.fail(sqlx::Error::RowNotFound));
                drop(slot);
                if batch.is_empty() {
                    return Err(err);
                }
                // Dropping `batch` hands the others their jobs back.
                drop(batch);
                return self.alone(job, deadline).await;
            }
        };
        self.link.note_answer();
        self.pool.release(conn);
        // The next statement starts before the answers go out.
        drop(slot);
        let mut results = results.into_iter();
        let mine = results.next();
        for (call, result) in batch.into_iter().zip(results) {
            call.answer(result);
        }
        mine.ok_or_else(|| self.fail(sqlx::Error::RowNotFound))
    }
}
