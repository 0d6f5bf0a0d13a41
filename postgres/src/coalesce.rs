//! Opportunistic batching of concurrent point calls (Get, Set).
//!
//! Under load most of a point call's cost is per statement, not per key: a
//! Bind/Execute/Sync round trip, a wake-up of the plugin and of a server
//! process, a transaction. PostgreSQL's CPU per statement dominates (see
//! BENCHMARKS.md, issue 19): one `= ANY`-style statement for 30 keys costs it
//! far less than 30 statements. So at most [`SLOTS`] statements of one kind
//! run at a time; a call that finds every slot taken joins the [`Queue`]
//! and waits. A call holding a slot (a "leader") gets a connection, takes
//! every call queued by then (up to [`MAX_BATCH`] with its own) and runs them
//! as one statement; the others are answered through their reply channel and
//! never touch a connection. When the leader is done its slot passes at once
//! to the oldest queued call (see [`Slot`]), which leads the next statement.
//!
//! Nothing waits to fill a batch: a call that finds a slot free runs at once
//! (alone, with the point statement, when nothing is queued), so an idle
//! plugin's latency is unchanged. Batches form only from calls that arrive
//! while [`SLOTS`] statements run — the busier the plugin, the larger they
//! get. With fewer than [`BATCH_FROM`] calls of a kind in the plugin there is
//! no slot limit at all: each runs at once on a connection of its own.
//! Leaders await their connection to the end (nothing races it, so no
//! connect is ever abandoned half-way).
//!
//! A call taken into a batch that does not complete (an SQL error, a lost
//! connection, the leader's request cancelled) gets its job back (see
//! [`Waiting`]'s `Drop`) and runs it alone, so one bad item or one impatient
//! client never fails the others.
//!
//! This file holds the [`Coalesce`] trait, its two jobs (point Get and Set,
//! each with its point and its batched statement) and the [`Queue`]; the
//! backend's `point` module drives them with its connections.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use prism_plugin_core::deadline::Deadline;
use sqlx::postgres::PgConnection;
use tokio::sync::oneshot;

use crate::schema::{Statements, ordinal_slot};

/// Most calls one statement carries (bounds its size and run time).
pub(crate) const MAX_BATCH: usize = 64;

/// Statements of one kind running at once (see the module docs). Chosen by
/// an interleaved A/B on 2 cores shared with PostgreSQL and the client
/// (BENCHMARKS.md, issue 19): 2 beat 1 (a statement's round trip left idle),
/// 3, 4 and the pool size (batches too small to spare PostgreSQL's CPU).
pub(crate) const SLOTS: usize = 2;

/// Fewer calls of one kind than this in the plugin: every one runs at once
/// on a connection of its own (no slot limit). Batching pays only when calls
/// outnumber what the connections can run in parallel; with a handful in
/// flight, two slots measured slower than one statement each
/// (BENCHMARKS.md, issue 19).
pub(crate) const BATCH_FROM: usize = 8;

/// What a queued call hears back.
pub(crate) enum Reply<J, R> {
    /// Its result, from another call's statement.
    Done(R),
    /// Its job, to run alone (the statement it was taken into failed).
    Alone(J),
    /// Its job and a statement slot (see [`Queue::adopt`]): it leads next.
    Lead(J),
}

/// Calls of one kind waiting for a statement. See the module docs.
pub(crate) struct Queue<J, R> {
    waiting: Mutex<VecDeque<Waiting<J, R>>>,
    next_id: AtomicU64,
    /// Slots taken (at most `slots` while batching).
    running: AtomicUsize,
    slots: usize,
    /// Calls of this kind in the plugin now (see [`Queue::enter`]).
    calls: AtomicUsize,
    /// Below this many `calls`, slots are unlimited.
    batch_from: usize,
}

/// A call counted in [`Queue::enter`] until dropped.
pub(crate) struct Entered<'q, J, R> {
    queue: &'q Queue<J, R>,
}

/// A queued call. Dropped without an answer, it hands its job back to its
/// caller, who then runs it alone.
pub(crate) struct Waiting<J, R> {
    id: u64,
    job: Option<J>,
    deadline: Deadline,
    reply: Option<oneshot::Sender<Reply<J, R>>>,
}

/// A caller's handle on its queued call. Dropped before its reply was read
/// (a deadline, a cancelled request), it takes the call out of the queue and
/// passes on a slot it may have been handed meanwhile.
pub(crate) struct Ticket<'q, J, R> {
    queue: &'q Queue<J, R>,
    id: u64,
    reply: oneshot::Receiver<Reply<J, R>>,
    settled: bool,
}

/// One of the queue's [`SLOTS`], held by the call leading a statement.
/// Dropped, it passes to the oldest queued call (as [`Reply::Lead`]), or is
/// freed when nothing is queued.
pub(crate) struct Slot<'q, J, R> {
    queue: &'q Queue<J, R>,
}

impl<J, R> Default for Queue<J, R> {
    fn default() -> Self {
        let mut queue = Queue::with_slots(SLOTS);
        queue.batch_from = BATCH_FROM;
        queue
    }
}

impl<J, R> Queue<J, R> {
    /// A queue whose calls run at most `slots` statements at a time.
    pub(crate) fn with_slots(slots: usize) -> Self {
        Queue {
            waiting: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            slots: slots.max(1),
            calls: AtomicUsize::new(0),
            batch_from: 0,
        }
    }

    /// Counts a call of this kind until the guard drops (see [`BATCH_FROM`]).
    pub(crate) fn enter(&self) -> Entered<'_, J, R> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Entered { queue: self }
    }

    /// Slots that may be taken now.
    fn limit(&self) -> usize {
        if self.calls.load(Ordering::SeqCst) < self.batch_from {
            usize::MAX
        } else {
            self.slots
        }
    }

    /// A free slot, if any.
    pub(crate) fn claim(&self) -> Option<Slot<'_, J, R>> {
        self.running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit()).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot { queue: self })
    }

    /// The slot that came with a [`Reply::Lead`] (already counted).
    pub(crate) fn adopt(&self) -> Slot<'_, J, R> {
        Slot { queue: self }
    }

    /// Queues a call.
    pub(crate) fn push(&self, job: J, deadline: Deadline) -> Ticket<'_, J, R> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().push_back(Waiting {
            id,
            job: Some(job),
            deadline,
            reply: Some(tx),
        });
        Ticket {
            queue: self,
            id,
            reply: rx,
            settled: false,
        }
    }

    /// The oldest queued calls, at most `n`.
    pub(crate) fn take(&self, n: usize) -> Vec<Waiting<J, R>> {
        let mut waiting = self.lock();
        let n = waiting.len().min(n);
        waiting.drain(..n).collect()
    }

    /// Takes call `id` out of the queue unless a statement or a slot has it
    /// already.
    fn remove(&self, id: u64) -> Option<Waiting<J, R>> {
        let mut waiting = self.lock();
        let at = waiting.iter().position(|w| w.id == id)?;
        waiting.remove(at)
    }

    /// A slot's holder is done: the slot goes to the oldest queued call, or
    /// is freed. Freed first and the queue checked after, so that a call
    /// queued meanwhile (which tries to claim a slot right after queueing)
    /// is always seen by one of the two.
    fn vacate(&self) {
        loop {
            // More slots out than batching allows (taken while few calls
            // were in): this one is freed, not handed on.
            let over = self.running.load(Ordering::SeqCst) > self.limit();
            let next = if over { None } else { self.lock().pop_front() };
            if let Some(next) = next {
                if next.lead() {
                    return;
                }
                // Its caller is gone: the next one.
                continue;
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.lock().is_empty() {
                return;
            }
            match self.claim() {
                // Still ours: hand it on (the loop), without dropping it.
                Some(slot) => std::mem::forget(slot),
                None => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<J, R>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<J, R> Drop for Entered<'_, J, R> {
    fn drop(&mut self) {
        self.queue.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<J, R> Drop for Slot<'_, J, R> {
    fn drop(&mut self) {
        self.queue.vacate();
    }
}

impl<J, R> Ticket<'_, J, R> {
    /// Takes the call back out of the queue with its job (the caller got a
    /// slot after queueing); `None` when a statement or a slot has it.
    pub(crate) fn withdraw(&mut self) -> Option<J> {
        let job = self.queue.remove(self.id)?.into_job();
        self.settled = true;
        Some(job)
    }

    /// The call's reply, or `None` when `deadline` passes first (the call is
    /// then taken out of the queue).
    pub(crate) async fn reply(
        mut self,
        deadline: Deadline,
    ) -> Option<Result<Reply<J, R>, oneshot::error::RecvError>> {
        let reply = prism_plugin_core::within(deadline, &mut self.reply).await?;
        self.settled = true;
        Some(reply)
    }
}

impl<J, R> Drop for Ticket<'_, J, R> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Some(gone) = self.queue.remove(self.id) {
            // Given up: no answer due, and the job goes with the caller.
            drop(gone.into_job());
        }
        self.reply.close();
        if let Ok(Reply::Lead(_)) = self.reply.try_recv() {
            // Handed a slot nobody will use: pass it on.
            drop(self.queue.adopt());
        }
    }
}

impl<J, R> Waiting<J, R> {
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
            let _ = reply.send(Reply::Done(result));
        }
    }

    /// Hands the call a slot with its job; false when its caller is gone
    /// (the job is dropped then).
    fn lead(mut self) -> bool {
        match (self.reply.take(), self.job.take()) {
            (Some(reply), Some(job)) => reply.send(Reply::Lead(job)).is_ok(),
            _ => false,
        }
    }

    /// Takes the job out, with no answer due.
    pub(crate) fn into_job(mut self) -> J {
        self.reply = None;
        self.job.take().expect("present until the call is answered")
    }
}

impl<J, R> Drop for Waiting<J, R> {
    fn drop(&mut self) {
        if let (Some(reply), Some(job)) = (self.reply.take(), self.job.take()) {
            let _ = reply.send(Reply::Alone(job));
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

    fn answer<J, R>(ticket: &mut Ticket<'_, J, R>) -> Option<Reply<J, R>> {
        let got = ticket.reply.try_recv().ok();
        ticket.settled = got.is_some();
        got
    }

    #[test]
    fn a_dropped_call_gets_its_job_back_and_a_given_up_one_nothing() {
        let queue: Queue<&str, u32> = Queue::default();
        let mut a = queue.push("a", None);
        let mut b = queue.push("b", None);
        let c = queue.push("c", None);
        drop(c);
        let batch = queue.take(MAX_BATCH);
        assert_eq!(batch.len(), 2);
        assert!(queue.take(MAX_BATCH).is_empty());
        let mut batch = batch.into_iter();
        batch.next().expect("a").answer(7);
        drop(batch);
        assert!(matches!(answer(&mut a), Some(Reply::Done(7))));
        assert!(matches!(answer(&mut b), Some(Reply::Alone("b"))));
    }

    #[test]
    fn batches_are_bounded_and_first_in_first_out() {
        let queue: Queue<usize, ()> = Queue::default();
        let tickets: Vec<_> = (0..MAX_BATCH + 3).map(|i| queue.push(i, None)).collect();
        let first = queue.take(MAX_BATCH);
        assert_eq!(first.len(), MAX_BATCH);
        assert_eq!(*first[0].job(), 0);
        let rest = queue.take(MAX_BATCH);
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].id, tickets[MAX_BATCH].id);
        let jobs: Vec<usize> = rest.into_iter().map(Waiting::into_job).collect();
        assert_eq!(jobs, vec![MAX_BATCH, MAX_BATCH + 1, MAX_BATCH + 2]);
    }

    #[test]
    fn a_freed_slot_passes_to_the_oldest_live_call_or_is_freed() {
        let queue: Queue<&str, ()> = Queue::with_slots(2);
        let one = queue.claim().expect("first slot");
        let two = queue.claim().expect("second slot");
        assert!(queue.claim().is_none(), "only two");
        let gone = queue.push("gone", None);
        let mut next = queue.push("next", None);
        let last = queue.push("last", None);
        drop(gone);
        // The caller of "gone" gave up: "next" leads.
        drop(one);
        assert!(matches!(answer(&mut next), Some(Reply::Lead("next"))));
        assert!(queue.claim().is_none(), "the slot was passed on, not freed");
        // "last" is handed the other slot but gives up without reading it:
        // the slot is freed (nothing else queued).
        drop(two);
        drop(last);
        let again = queue.claim().expect("freed");
        assert!(queue.claim().is_none(), "\"next\" holds the other");
        drop(again);
        // "next" is done.
        drop(queue.adopt());
        assert_eq!(queue.running.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn few_calls_take_slots_freely_and_give_back_the_extra_ones() {
        let queue: Queue<&str, ()> = Queue::default();
        let few: Vec<_> = (0..BATCH_FROM - 1).map(|_| queue.enter()).collect();
        let slots: Vec<_> = (0..BATCH_FROM - 1).map(|_| queue.claim()).collect();
        assert!(
            slots.iter().all(Option::is_some),
            "no limit below BATCH_FROM"
        );
        let busy: Vec<_> = (0..2).map(|_| queue.enter()).collect();
        assert!(queue.claim().is_none(), "batching from BATCH_FROM calls on");
        let mut waiting = queue.push("queued", None);
        let mut slots = slots.into_iter();
        // Over the limit: freed, not handed on, until SLOTS remain.
        for _ in 0..BATCH_FROM - 1 - SLOTS {
            drop(slots.next());
            assert!(waiting.reply.try_recv().is_err());
        }
        drop(slots.next());
        assert!(matches!(answer(&mut waiting), Some(Reply::Lead("queued"))));
        drop((few, busy));
        assert_eq!(queue.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_lead_read_by_nobody_is_passed_on() {
        let queue: Queue<&str, ()> = Queue::with_slots(1);
        let slot = queue.claim().expect("slot");
        let first = queue.push("first", None);
        let mut second = queue.push("second", None);
        drop(slot);
        // "first" was handed the slot; its caller goes without reading it.
        drop(first);
        assert!(matches!(answer(&mut second), Some(Reply::Lead("second"))));
        assert!(queue.claim().is_none());
        drop(queue.adopt());
        assert!(queue.claim().is_some());
    }

    #[test]
    fn the_latest_deadline_bounds_a_batch_and_none_means_unbounded() {
        let queue: Queue<(), ()> = Queue::default();
        let now = tokio::time::Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        let _a = queue.push((), Some(now));
        let _b = queue.push((), Some(later));
        let batch = queue.take(MAX_BATCH);
        let latest = |batch: &[Waiting<(), ()>]| {
            prism_plugin_core::deadline::latest(batch.iter().map(Waiting::deadline))
        };
        assert_eq!(latest(&batch), Some(later));
        let _c = queue.push((), None);
        let mut batch = batch;
        batch.extend(queue.take(MAX_BATCH));
        assert_eq!(latest(&batch), None);
    }
}
