//! Opportunistic batching of concurrent point calls (Get, Set).
//!
//! Under load most of a point call's cost is per statement, not per key: a
//! Bind/Execute/Sync round trip, a wake-up of the plugin and of a server
//! process, a transaction. So a call that finds every connection busy joins a
//! [`Queue`] and then races for a connection. Whichever call gets one takes
//! every call still queued (up to [`MAX_BATCH`]) and runs them as one
//! statement; the others are answered through their reply channel and never
//! touch a connection.
//!
//! Nothing waits to fill a batch: when a connection is free the call takes it
//! at once, without queueing, and runs alone with the same prepared point
//! statement as before (so an idle plugin's latency is unchanged). Batches
//! form only from calls that would otherwise have queued for a connection.
//! That split also matters for correctness of the pool's size: a queued
//! call's connection race is abandoned whenever its answer comes first, so it
//! must never be the one opening a connection (only a free permit leads to a
//! connect, and that path is awaited to the end).
//!
//! A call taken into a batch that does not complete (an SQL error, a lost
//! connection, the runner's request cancelled) gets its job back (see
//! [`Waiting`]'s `Drop`) and runs it alone, so one bad item or one impatient
//! client never fails the others.
//!
//! This file holds the [`Coalesce`] trait, its two jobs (point Get and Set,
//! each with its point and its batched statement) and the [`Queue`]; the
//! backend's `point` module drives them with its connections.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use prism_plugin_core::deadline::Deadline;
use sqlx::postgres::PgConnection;
use tokio::sync::oneshot;

use crate::schema::{Statements, ordinal_slot};

/// Most calls one statement carries (bounds its size and run time).
pub(crate) const MAX_BATCH: usize = 64;

/// What a queued call hears back: its result, or its job to run alone.
pub(crate) type Reply<J, R> = Result<R, J>;

/// Calls of one kind waiting for a connection. See the module docs.
pub(crate) struct Queue<J, R> {
    waiting: Mutex<VecDeque<Waiting<J, R>>>,
    next_id: AtomicU64,
}

/// A queued call. Dropped without an answer, it hands its job back to its
/// caller, who then runs it alone.
pub(crate) struct Waiting<J, R> {
    id: u64,
    job: Option<J>,
    deadline: Deadline,
    reply: Option<oneshot::Sender<Reply<J, R>>>,
}

/// A caller's handle on its queued call.
pub(crate) struct Ticket<J, R> {
    pub(crate) id: u64,
    pub(crate) reply: oneshot::Receiver<Reply<J, R>>,
}

impl<J, R> Default for Queue<J, R> {
    fn default() -> Self {
        Queue {
            waiting: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<J, R> Queue<J, R> {
    /// Queues a call.
    pub(crate) fn push(&self, job: J, deadline: Deadline) -> Ticket<J, R> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().push_back(Waiting {
            id,
            job: Some(job),
            deadline,
            reply: Some(tx),
        });
        Ticket { id, reply: rx }
    }

    /// Whether call `id` is still queued (not taken into a batch yet).
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.lock().iter().any(|w| w.id == id)
    }

    /// Takes call `id` back out of the queue (the caller gives up); its job
    /// is dropped without an answer.
    pub(crate) fn remove(&self, id: u64) {
        let mut waiting = self.lock();
        if let Some(at) = waiting.iter().position(|w| w.id == id)
            && let Some(mut gone) = waiting.remove(at)
        {
            gone.reply = None;
        }
    }

    /// The oldest queued calls, at most [`MAX_BATCH`].
    pub(crate) fn take(&self) -> Vec<Waiting<J, R>> {
        let mut waiting = self.lock();
        let n = waiting.len().min(MAX_BATCH);
        waiting.drain(..n).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<J, R>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<J, R> Waiting<J, R> {
    /// Which call this is.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// When the call must be answered by.
    pub(crate) fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// The call's job (present until answered or handed back).
    pub(crate) fn job(&self) -> &J {
        self.job
            .as_ref()
            .expect("present until the call is answered")
    }

    /// Answers the call with its result.
    pub(crate) fn answer(mut self, result: R) {
        if let Some(reply) = self.reply.take() {
            // The caller may have given up (deadline); nothing to do then.
            let _ = reply.send(Ok(result));
        }
    }

    /// Takes the job out for the runner's own call, which needs no answer.
    pub(crate) fn into_job(mut self) -> J {
        self.reply = None;
        self.job.take().expect("present until the call is answered")
    }
}

impl<J, R> Drop for Waiting<J, R> {
    fn drop(&mut self) {
        if let (Some(reply), Some(job)) = (self.reply.take(), self.job.take()) {
            let _ = reply.send(Err(job));
        }
    }
}

/// The backend's queues, one per kind of point call.
#[derive(Default)]
pub(crate) struct Queues {
    gets: Queue<GetJob, Option<Bytes>>,
    sets: Queue<SetJob, ()>,
}

/// A point Get: namespace and key.
pub(crate) struct GetJob {
    pub(crate) ns: String,
    pub(crate) key: String,
}

/// A point Set.
pub(crate) struct SetJob {
    pub(crate) ns: String,
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) ttl_seconds: i64,
}

/// A kind of point call that can share one statement with others of its
/// kind.
pub(crate) trait Coalesce: Sized + Send {
    /// A call's result.
    type Out: Send;

    /// The queue of these calls.
    fn queue(queues: &Queues) -> &Queue<Self, Self::Out>;

    /// Runs `jobs` as one statement (one job: the point statement), one
    /// result per job, in order.
    fn run(
        sql: &Statements,
        conn: &mut PgConnection,
        jobs: &[&Self],
    ) -> impl Future<Output = Result<Vec<Self::Out>, sqlx::Error>> + Send;
}

impl Coalesce for GetJob {
    type Out = Option<Bytes>;

    fn queue(queues: &Queues) -> &Queue<Self, Self::Out> {
        &queues.gets
    }

    async fn run(
        sql: &Statements,
        conn: &mut PgConnection,
        jobs: &[&Self],
    ) -> Result<Vec<Self::Out>, sqlx::Error> {
        if let [job] = jobs {
            let query = sqlx::query_scalar::<_, Vec<u8>>(&sql.get)
                .bind(&job.ns)
                .bind(&job.key);
            return Ok(vec![query.fetch_optional(conn).await?.map(Bytes::from)]);
        }
        let namespaces: Vec<&str> = jobs.iter().map(|j| j.ns.as_str()).collect();
        let keys: Vec<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
        let query = sqlx::query_as::<_, (i64, Vec<u8>)>(&sql.coalesced_get)
            .bind(namespaces)
            .bind(keys);
        let mut found = vec![None; jobs.len()];
        for (ordinal, value) in query.fetch_all(conn).await? {
            if let Some(slot) = ordinal_slot(&mut found, ordinal) {
                *slot = Some(Bytes::from(value));
            }
        }
        Ok(found)
    }
}

impl Coalesce for SetJob {
    type Out = ();

    fn queue(queues: &Queues) -> &Queue<Self, Self::Out> {
        &queues.sets
    }

    async fn run(
        sql: &Statements,
        conn: &mut PgConnection,
        jobs: &[&Self],
    ) -> Result<Vec<Self::Out>, sqlx::Error> {
        if let [job] = jobs {
            let query = sqlx::query(&sql.set)
                .bind(&job.ns)
                .bind(&job.key)
                .bind(job.value.as_ref())
                .bind(job.ttl_seconds);
            return query.execute(conn).await.map(|_| vec![()]);
        }
        // One statement may not update a row twice: the last Set of a key
        // wins, as if the calls had run in queue order. Sorted, so that two
        // batches lock rows in the same order and cannot deadlock.
        let mut last = std::collections::BTreeMap::new();
        for job in jobs {
            last.insert((job.ns.as_str(), job.key.as_str()), *job);
        }
        let mut namespaces = Vec::with_capacity(last.len());
        let mut keys = Vec::with_capacity(last.len());
        let mut values = Vec::with_capacity(last.len());
        let mut ttls = Vec::with_capacity(last.len());
        for ((ns, key), job) in last {
            namespaces.push(ns);
            keys.push(key);
            values.push(job.value.as_ref());
            ttls.push(job.ttl_seconds);
        }
        let query = sqlx::query(&sql.coalesced_set)
            .bind(namespaces)
            .bind(keys)
            .bind(values)
            .bind(ttls);
        query.execute(conn).await.map(|_| vec![(); jobs.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_call_gets_its_job_back_and_a_removed_one_nothing() {
        let queue: Queue<&str, u32> = Queue::default();
        let mut a = queue.push("a", None);
        let mut b = queue.push("b", None);
        let mut c = queue.push("c", None);
        queue.remove(c.id);
        assert!(!queue.contains(c.id));
        let batch = queue.take();
        assert_eq!(batch.len(), 2);
        assert!(queue.take().is_empty());
        let mut batch = batch.into_iter();
        batch.next().expect("a").answer(7);
        drop(batch);
        assert_eq!(a.reply.try_recv().expect("answered"), Ok(7));
        assert_eq!(b.reply.try_recv().expect("handed back"), Err("b"));
        assert!(c.reply.try_recv().is_err());
    }

    #[test]
    fn batches_are_bounded_and_first_in_first_out() {
        let queue: Queue<usize, ()> = Queue::default();
        let tickets: Vec<_> = (0..MAX_BATCH + 3).map(|i| queue.push(i, None)).collect();
        let first = queue.take();
        assert_eq!(first.len(), MAX_BATCH);
        assert_eq!(*first[0].job(), 0);
        let rest = queue.take();
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].id(), tickets[MAX_BATCH].id);
        let jobs: Vec<usize> = rest.into_iter().map(Waiting::into_job).collect();
        assert_eq!(jobs, vec![MAX_BATCH, MAX_BATCH + 1, MAX_BATCH + 2]);
    }

    #[test]
    fn the_latest_deadline_bounds_a_batch_and_none_means_unbounded() {
        let queue: Queue<(), ()> = Queue::default();
        let now = tokio::time::Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        let _a = queue.push((), Some(now));
        let _b = queue.push((), Some(later));
        let batch = queue.take();
        let latest = |batch: &[Waiting<(), ()>]| {
            prism_plugin_core::deadline::latest(batch.iter().map(Waiting::deadline))
        };
        assert_eq!(latest(&batch), Some(later));
        let _c = queue.push((), None);
        let mut batch = batch;
        batch.extend(queue.take());
        assert_eq!(latest(&batch), None);
    }
}
