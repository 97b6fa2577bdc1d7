//! Transactions: single-shard atomic batches and cross-shard transactions.
//!
//! **Single shard** ([`Shard::run_atomic`]): the commands of a MULTI/EXEC whose keys all live
//! on one shard run in one turn of that shard's executor — nothing can interleave — and their
//! effects are appended as **one** record (a MULTI/EXEC group), so recovery applies all or
//! none. No locks, no extra messages: one message there, one back, as for any batch.
//!
//! **Across shards** (a MULTI/EXEC, or a multi-key command such as MSET or MGET, whose keys
//! live on several shards), the coordinator — the connection's own shard — runs:
//! 1. **lock** every participating shard in ascending shard order, with one [`Chain`] that
//!    visits them ([`Shard::tx_lock_all`]). A locked shard executes nothing but the holder's
//!    steps: every other batch, atomic batch or chain that arrives is deferred, in order,
//!    until the unlock. Because every transaction locks in the same global order, two
//!    transactions can never wait for each other in a cycle: no deadlock. (MSET runs its
//!    parts as the chain passes instead, locking nothing across shards: [`Chain`], "Order".)
//! 2. **execute** the commands in order, each on its key's shard ([`Shard::tx_exec`]), exactly
//!    as a pipeline would, including multi-step commands (a RENAME across shards). The effects
//!    are not logged yet: each shard buffers its own.
//! 3. **commit and unlock** ([`Shard::tx_commit_all`]): every participant appends its
//!    buffered effects as one record — when two or more shards changed something, a group
//!    headed by `MOON.TXPART <txid> <shards that changed something>`, *held* (below) — then
//!    unlocks at once and runs what it deferred, in order; it answers the coordinator when its
//!    log is safe up to its part (fdatasync under `always`). The locks are never held across
//!    an fsync.
//! 4. **release**: once every part is safe, the coordinator releases each participant's hold,
//!    then builds the reply.
//!
//! Why each crash instant is safe. Recovery (in the server) first collects the transaction ids
//! of every shard's `MOON.TXPART` records and applies a part only if every shard it names has
//! its part too, and it ends a shard's log at a part it drops (later records may depend on
//! it). So a transaction cut short by a crash is skipped on every shard, together with
//! everything logged after its parts. Nothing of that was acknowledged: the **hold** on a part
//! ([`moon_aof::AofWriter::append_held`]) keeps every reply whose records or reads come after
//! the part on that shard — an INCR of a key the transaction wrote, a GET that read it, a
//! single-shard MULTI — waiting until the hold is released, i.e. until every part of the
//! transaction is safe (commit dependencies, as in Silo's epochs). A part waits for the holds
//! below it on its shard, so holds are released in log order. If a part cannot be logged, the
//! server stops (crash-only) with the holds still in place.

use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;
use moon_proto::Frame;
use moon_store::{Call, WatchToken};

use crate::clock::now_ms;
use crate::recovery::TXPART;
use crate::shard::{run_cmds, settle, Deferred, Held, Message, Shard, SHARD_GONE};
use crate::state::{Chain, CommitFailure, EarlyPart, HeldPart, LastPart, Tx, TxId, Visit};

/// The record one shard logs for its part of a transaction: its effects, headed by
/// `MOON.TXPART <txid> <writers>` when two or more shards write (recovery then applies it only
/// if every named shard logged its part).
pub(crate) fn part_record(
    txid: &str,
    writers: &[usize],
    effects: Vec<Vec<Bytes>>,
) -> Vec<Vec<Bytes>> {
    if writers.len() < 2 {
        return effects;
    }
    let shards: Vec<String> = writers.iter().map(|w| w.to_string()).collect();
    let mut group = Vec::with_capacity(effects.len() + 1);
    group.push(vec![
        Bytes::from_static(TXPART.as_bytes()),
        Bytes::from(txid.to_string()),
        Bytes::from(shards.join(",")),
    ]);
    group.extend(effects);
    group
}

/// A part could not be logged while others may be durable, and the effects are in memory on
/// every shard. Crash-only: the server stops at once, the holds still in place, so nothing
/// logged after the parts was acknowledged; recovery drops the transaction, and what followed
/// its parts, on every shard (docs/TRANSACTIONS.md).
fn stop_for_part(txid: TxId, cause: &str) -> ! {
    tracing::error!(
        "cross-shard transaction {txid}: a part could not be logged ({cause}); exiting so that recovery drops it on every shard (docs/TRANSACTIONS.md)"
    );
    std::process::exit(1);
}

/// How a participant logged its part of a transaction, and so what its commit waits for.
enum Logged {
    /// Nothing of the transaction's here (it read, or the part was empty): wait for the log
    /// up to this LSN, which covers what it read.
    Read(u64),
    /// The only shard that wrote: a plain record, up to this LSN.
    Part(u64),
    /// One of several parts: held, from the first LSN to the last.
    Held(u64, u64),
    /// The log refused it (it has failed).
    Refused,
}

/// A part appended by [`Shard::tx_commit_log`], for [`commit_wait`].
struct PartLogged {
    writer: moon_aof::AofWriter,
    logged: Logged,
    /// Whether a step read while the log was healthy (see `Shard::tx_read_unsafe`).
    read_unsafe: bool,
}

/// Step 3's second half: waits until the part is safe (and, held, releasable).
async fn commit_wait(
    part: Option<PartLogged>,
    writers: &[usize],
) -> Result<Option<HeldPart>, CommitFailure> {
    let Some(PartLogged {
        writer,
        logged,
        read_unsafe,
    }) = part
    else {
        return Ok(None);
    };
    let wait_read = |r: Result<(), String>| match r {
        // A part that reads only: if every step of it ran on the rebuilt keyspace of a
        // failed log, what it read is all in the log and nothing needs to wait.
        Err(_) if !read_unsafe => Ok(None),
        r => r.map(|()| None).map_err(CommitFailure::Read),
    };
    match logged {
        Logged::Read(lsn) => wait_read(writer.wait(lsn).await),
        Logged::Part(lsn) => writer
            .wait(lsn)
            .await
            .map(|()| None)
            .map_err(CommitFailure::Part),
        Logged::Held(first, last) => writer
            .wait_releasable(first, last, writers)
            .await
            .map(|()| {
                Some(HeldPart {
                    first,
                    last,
                    clear: !writer.held_below(first),
                })
            })
            .map_err(CommitFailure::Part),
        Logged::Refused => Err(CommitFailure::Part(
            writer
                .error()
                .unwrap_or_else(|| "the AOF refused the part".into()),
        )),
    }
}

/// A local task's turn on a shard it waited for: while held, nothing deferred runs; dropping
/// it (once the task has executed) lets the rest of the queue go.
pub(crate) struct Turn(Option<Rc<Shard>>);

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(shard) = self.0.take() {
            shard.handoff.set(false);
            // Blocked clients the handed-off task's commands can serve, before what waited.
            shard.serve_in_turn();
            shard.drain();
        }
    }
}

/// A local task's place in the deferred queue while it waits ([`Shard::wait_turn`],
/// [`Shard::tx_lock`]). Once [`Shard::drain`] answers it, the shard is the task's: handed off
/// to it until its [`Turn`] drops, or locked for its transaction until the unlock. If the task
/// is dropped (cancelled) after the answer was sent but before it ran, neither ever comes;
/// this gives the shard back instead, or it would run nothing deferred again (review finding).
struct Pending<'a, T> {
    shard: &'a Rc<Shard>,
    rx: oneshot::Receiver<T>,
    /// What the answer hands the task.
    gives: Gives,
    /// The waiting task saw the answer (and took what it gives).
    settled: bool,
}

enum Gives {
    Turn,
    Lock(TxId),
}

impl<T> Pending<'_, T> {
    /// The answer, or `None` if the shard dropped the request (it is shutting down).
    async fn answer(&mut self) -> Option<T> {
        let answer = (&mut self.rx).await.ok();
        self.settled = true;
        answer
    }
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        if self.settled || !matches!(self.rx.try_recv(), Ok(Some(_))) {
            return;
        }
        match self.gives {
            Gives::Turn => drop(Turn(Some(self.shard.clone()))),
            Gives::Lock(txid) => self.shard.unlock_here(txid),
        }
    }
}

impl Shard {
    /// A fresh transaction id.
    pub fn new_txid(&self) -> TxId {
        let n = self.tx_counter.get() + 1;
        self.tx_counter.set(n);
        TxId {
            boot: self.boot_id,
            shard: self.id() as u32,
            n,
        }
    }

    /// Resolves once no transaction holds this shard and it is this task's turn. A task that
    /// had to wait is woken in its place in the deferred queue and holds the shard (the
    /// returned [`Turn`]) until it has run: nothing queued after it — another transaction's
    /// lock above all — goes first, so a stream of transactions cannot starve it.
    pub(crate) async fn wait_unlocked(self: &Rc<Self>) -> Turn {
        // Without `refuse_busy` the wait only ends with the turn.
        self.wait_turn(false).await.unwrap_or(Turn(None))
    }

    /// [`Shard::wait_unlocked`]; with `refuse_busy`, a busy script holding the shard ends the
    /// wait with Redis's BUSY reply instead (Redis answers commands so while it is busy).
    pub(crate) async fn wait_turn(
        self: &Rc<Self>,
        refuse_busy: bool,
    ) -> Result<Turn, &'static str> {
        let mut turn = Turn(None);
        while self.lock_holder.get().is_some() || (self.handoff.get() && turn.0.is_none()) {
            if let (true, Some(busy), None) = (refuse_busy, self.busy_script.get(), &turn.0) {
                return Err(busy);
            }
            let (tx, rx) = oneshot::channel();
            self.deferred.borrow_mut().push_back(Deferred::Wake(tx));
            let mut wake = Pending {
                shard: self,
                rx,
                gives: Gives::Turn,
                settled: false,
            };
            if wake.answer().await.is_some() {
                turn.0 = Some(self.clone());
            }
        }
        Ok(turn)
    }

    /// Releases the lock held by `txid` and runs what was deferred (see [`Shard::drain`]).
    pub(crate) fn unlock_here(self: &Rc<Self>, txid: TxId) {
        if self.lock_holder.get() != Some(txid) {
            return;
        }
        self.lock_holder.set(None);
        self.tx_effects.borrow_mut().clear();
        self.tx_read_unsafe.set(false);
        // The transaction's keyspace events: its record (if any) was appended at the commit.
        self.queue_events(&mut self.store());
        self.serve_in_turn();
        self.drain();
    }

    /// Runs what was deferred, in order, until the queue is empty, another transaction takes
    /// the lock, or a waiting local task is handed the shard (it drains again once it ran).
    ///
    /// Not nested: work it runs may unlock (a chain's part commits, and unlocks, as it runs),
    /// and the unlock's own drain would run the rest one stack frame deeper each time — a
    /// long queue of chains behind a lock could overflow the stack (review finding). The
    /// loop already running goes on instead, in the same order.
    pub(crate) fn drain(self: &Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        self.drain_queue();
        self.draining.set(false);
    }

    fn drain_queue(self: &Rc<Self>) {
        while self.lock_holder.get().is_none() && !self.handoff.get() {
            let Some(next) = self.deferred.borrow_mut().pop_front() else {
                break;
            };
            match next {
                Deferred::Msg(m) => Shard::handle(self, m),
                Deferred::Wake(w) => {
                    if w.send(()).is_ok() {
                        self.handoff.set(true);
                    }
                }
                Deferred::Lock(id, w) => {
                    if w.send(self.log_error()).is_ok() {
                        self.lock_holder.set(Some(id));
                    }
                }
            }
        }
    }

    /// Step 2 on this shard: runs `cmds` at the transaction's time, buffering their effects
    /// for the commit.
    pub(crate) fn tx_exec_here(&self, tx: Tx, cmds: &[Call]) -> Vec<Frame> {
        let (mut store, _, failing) = self.parts();
        if failing.is_none() {
            self.tx_read_unsafe.set(true);
        }
        let mut effects = self.tx_effects.borrow_mut();
        // Room was made before the transaction started (`Shard::make_room`).
        store.without_memory_checks(|store| {
            run_cmds(store, cmds, tx.now, failing.as_deref(), |_, _, e| {
                effects.extend(e.iter().cloned())
            })
        })
    }

    /// Step 3 on this shard: logs the buffered effects as one record (a `MOON.TXPART` group,
    /// held, when two or more shards are `writers`; this shard logs one whenever it is named,
    /// even with no effects), unlocks, and waits until the log is safe up to the part and the
    /// part releasable (`AofWriter::wait_releasable`) — or, for a part that only read, until
    /// the log is safe up to the shard's latest LSN: what it read. `Ok(Some(part))`: the part
    /// is held until [`Shard::release_here`].
    pub(crate) async fn tx_commit_here(
        self: &Rc<Self>,
        txid: TxId,
        writers: &[usize],
    ) -> Result<Option<HeldPart>, CommitFailure> {
        let logged = self.tx_commit_log(txid, writers);
        commit_wait(logged, writers).await
    }

    /// Step 3's first half, under the lock: appends the part and unlocks. `None`: no log.
    fn tx_commit_log(self: &Rc<Self>, txid: TxId, writers: &[usize]) -> Option<PartLogged> {
        let effects = std::mem::take(&mut *self.tx_effects.borrow_mut());
        let read_unsafe = self.tx_read_unsafe.replace(false);
        let Some(writer) = self.parts().1 else {
            self.unlock_here(txid);
            return None;
        };
        let logged = self.log_part(&writer, txid, writers, effects);
        // The part is in the log (or refused): later work here is ordered after it, and its
        // replies wait for the hold. Nothing needs the lock any more.
        self.unlock_here(txid);
        Some(PartLogged {
            writer,
            logged,
            read_unsafe,
        })
    }

    /// Appends this shard's part of transaction `txid` (see [`Shard::tx_commit_here`]).
    fn log_part(
        &self,
        writer: &moon_aof::AofWriter,
        txid: TxId,
        writers: &[usize],
        effects: Vec<Vec<Bytes>>,
    ) -> Logged {
        let named = writers.contains(&self.id());
        if !named {
            // A read-only part: its only effects are keys it found expired, logged like any
            // read's (not part of the transaction). It waits for what it may have read; if
            // the log fails, what it read may not be in it (`CommitFailure::Read`).
            if !effects.is_empty() {
                writer.append(&effects);
            }
            return Logged::Read(writer.last_assigned());
        }
        if writers.len() < 2 {
            if effects.is_empty() {
                return Logged::Read(writer.last_assigned());
            }
            writer.append(&effects);
            return Logged::Part(writer.last_assigned());
        }
        match writer.append_held(&part_record(&txid.to_string(), writers, effects), writers) {
            Some((first, last)) => Logged::Held(first, last),
            None => Logged::Refused,
        }
    }

    /// Releases this shard's hold on `part`; with `reply`, answers once every hold below the
    /// part is gone too (the transaction can no longer be cut from this log).
    pub(crate) fn release_here(
        &self,
        part: HeldPart,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        let Some(writer) = self.aof() else {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        };
        writer.release_hold(part.first);
        if let Some(reply) = reply {
            glommio::spawn_local(async move {
                let _ = reply.send(writer.wait(part.last).await);
            })
            .detach();
        }
    }

    /// Single-shard MULTI/EXEC: `None` if a watched key changed (nothing ran); otherwise the
    /// replies, now or held for the one record holding all the effects.
    pub(crate) fn execute_atomic(
        &self,
        cmds: &[Call],
        watches: &[(Bytes, WatchToken)],
    ) -> Option<Result<Vec<Frame>, Held>> {
        let executed = self.execute_atomic_here(cmds, watches);
        // Blocked clients the transaction's pushes can serve, after it as a whole (as Redis).
        self.serve_in_turn();
        executed
    }

    fn execute_atomic_here(
        &self,
        cmds: &[Call],
        watches: &[(Bytes, WatchToken)],
    ) -> Option<Result<Vec<Frame>, Held>> {
        let now = now_ms();
        let (mut store, writer, failing) = self.parts();
        if !watches.iter().all(|(k, t)| store.watch_intact(k, *t, now)) {
            return None;
        }
        let mut effects: Vec<Vec<Bytes>> = Vec::new();
        // Room was made before the transaction started (`Shard::make_room`).
        let frames = store.without_memory_checks(|store| {
            run_cmds(store, cmds, now, failing.as_deref(), |_, _, e| {
                effects.extend(e.iter().cloned());
            })
        });
        let Some(writer) = writer else {
            self.queue_events(&mut store);
            return Some(Ok(frames));
        };
        if !effects.is_empty() {
            writer.append(&effects);
        }
        self.queue_events(&mut store);
        let lsn = writer.last_assigned();
        if failing.is_some() || writer.is_safe(lsn) {
            return Some(Ok(frames));
        }
        Some(Err(Held {
            frames,
            writer: Some(writer),
            lsn,
            rest: None,
        }))
    }

    /// Runs a single-shard transaction on `target`. `None`: a watched key changed.
    pub async fn run_atomic(
        self: &Rc<Self>,
        target: usize,
        cmds: Vec<Call>,
        watches: Vec<(Bytes, WatchToken)>,
    ) -> Option<Vec<Frame>> {
        if target == self.id() {
            let turn = self.wait_unlocked().await;
            let executed = self.execute_atomic(&cmds, &watches);
            drop(turn);
            return match executed? {
                Ok(frames) => Some(frames),
                Err(held) => Some(settle(held).await),
            };
        }
        let n = cmds.len();
        let (tx, rx) = oneshot::channel();
        if !self
            .send(
                target,
                Message::Atomic {
                    cmds,
                    watches,
                    reply: tx,
                },
            )
            .await
        {
            return Some(vec![Frame::StaticError(SHARD_GONE); n]);
        }
        rx.await
            .unwrap_or_else(|_| Some(vec![Frame::StaticError(SHARD_GONE); n]))
    }

    /// Step 1: takes `target`'s lock for `txid` (waits while another transaction holds it).
    /// Returns the error of `target`'s log if it is failing once the lock is taken (a shard
    /// that is gone counts as failing): the coordinator refuses a transaction that would write
    /// there before anything runs, without another round trip to ask.
    pub async fn tx_lock(self: &Rc<Self>, target: usize, txid: TxId) -> Option<String> {
        if target == self.id() {
            if self.lock_holder.get().is_none() && !self.handoff.get() {
                self.lock_holder.set(Some(txid));
                return self.log_error();
            }
            let (tx, rx) = oneshot::channel();
            self.deferred
                .borrow_mut()
                .push_back(Deferred::Lock(txid, tx));
            let mut lock = Pending {
                shard: self,
                rx,
                gives: Gives::Lock(txid),
                settled: false,
            };
            return lock
                .answer()
                .await
                .unwrap_or_else(|| Some(SHARD_GONE.into()));
        }
        self.tx_lock_all(&[target], txid)
            .await
            .pop()
            .unwrap_or_else(|| Some(SHARD_GONE.into()))
    }

    /// Step 1 for every participant (ascending, distinct): one [`Chain`] visits them in order
    /// and locks each for `txid`. Each one's log error if its log is failing (a shard that is
    /// gone counts as failing), in `participants`' order.
    pub async fn tx_lock_all(
        self: &Rc<Self>,
        participants: &[usize],
        txid: TxId,
    ) -> Vec<Option<String>> {
        let (replies, answers) = self.answer_slots(participants);
        let visit = Visit::Lock {
            replies,
            writers: Vec::new(),
            last: None,
            failing: None,
        };
        let tx = Tx { id: txid, now: 0 };
        self.start_chain(participants, tx, visit).await;
        let mut errors = Vec::with_capacity(answers.len());
        for answer in answers {
            errors.push(answer.await.unwrap_or_else(|_| Some(SHARD_GONE.into())));
        }
        errors
    }

    /// Steps 1 to 3 of a split command in one visit of its participants (ascending, at least
    /// two): each but the last is locked, and answers with its log error; the last is locked,
    /// runs `cmds` and commits its part at once, unless a writer's log is failing — its own
    /// or one seen on the way (`Err`: nothing ran, it is unlocked). The others then run their
    /// parts at the time the last ran at ([`Shard::tx_exec_commit`]).
    ///
    /// The last part runs at the later of `tx.now` and its shard's clock, returned with its
    /// replies: the other participants must run theirs at that time too (review finding: at
    /// `tx.now`, read before this lock, a command that ran there just before at a later time
    /// could have expired a key this part then missed while the others still saw theirs with
    /// the same deadline). They have been locked since before, so nothing ran on them later.
    pub async fn tx_lock_run_last(
        self: &Rc<Self>,
        participants: &[usize],
        tx: Tx,
        cmds: Vec<Call>,
        writers: Vec<usize>,
    ) -> (Vec<Option<String>>, Result<LastPart, String>) {
        let Some((_, first)) = participants.split_last() else {
            return (Vec::new(), Err(SHARD_GONE.into()));
        };
        let (replies, answers) = self.answer_slots(first);
        let (last_reply, last_answer) = oneshot::channel();
        let visit = Visit::Lock {
            replies,
            writers,
            last: Some((cmds, last_reply)),
            failing: None,
        };
        self.start_chain(participants, tx, visit).await;
        let mut errors = Vec::with_capacity(answers.len());
        for answer in answers {
            errors.push(answer.await.unwrap_or_else(|_| Some(SHARD_GONE.into())));
        }
        let last = last_answer.await.unwrap_or_else(|_| Err(SHARD_GONE.into()));
        (errors, last)
    }

    /// A split command whose parts answer the same whatever they find (MSET) in one visit of
    /// its participants (ascending, at least two): as the chain passes, each runs its part and
    /// commits it at once; no shard stays locked while another works. Each participant's
    /// replies and part to come, in `participants`' order, for [`Shard::tx_commit_all`].
    ///
    /// The parts run at nondecreasing times (each at the later of the chain's time and its
    /// shard's clock), not at one: which is why only such commands take this path. Only when
    /// [`Shard::can_run_chains`]. `Err`: refused before any part ran — the first
    /// participant's log is failing, or ([`SHARD_GONE`]) it is gone. A later part that finds its log failing stops the server,
    /// as a commit that cannot be logged does.
    pub async fn tx_run_chain(
        self: &Rc<Self>,
        participants: &[usize],
        tx: Tx,
        batches: Vec<Vec<Call>>,
        writers: Vec<usize>,
    ) -> Result<Vec<(usize, Vec<Frame>, EarlyPart)>, String> {
        let mut replies: Vec<_> = (0..self.count()).map(|_| None).collect();
        let mut answers = Vec::with_capacity(participants.len());
        for &p in participants {
            let (reply, answer) = oneshot::channel();
            if let Some(slot) = replies.get_mut(p) {
                *slot = Some(reply);
            }
            answers.push((p, answer));
        }
        let visit = Visit::Run {
            batches,
            writers,
            replies,
            ran: false,
            refused: None,
        };
        self.start_chain(participants, tx, visit).await;
        let mut ran = Vec::with_capacity(answers.len());
        for (p, answer) in answers {
            let (frames, part) = match answer.await {
                Ok(Ok(ran)) => ran,
                Ok(Err(cause)) => return Err(cause),
                // The lowest participant never had the chain (it goes on from there only), so
                // nothing ran anywhere: the shards are going away (review finding: this
                // stopped the server as if a part could not be logged).
                Err(_) if ran.is_empty() => return Err(SHARD_GONE.into()),
                // The chain was dropped (a shard is gone): what ran waits for a part that
                // will never come, which stops the server in the commit (crash-only).
                Err(_) => {
                    let (_, outcome) = oneshot::channel();
                    (vec![Frame::StaticError(SHARD_GONE)], EarlyPart(outcome))
                }
            };
            ran.push((p, frames, part));
        }
        Ok(ran)
    }

    /// Whether split commands whose parts answer OK whatever they find may run as a
    /// [`Visit::Run`] chain: only with a log on every shard (`appendonly` is fixed at startup),
    /// because the part a chain has run on one shard is hidden from others only by its hold
    /// until the rest ran and was logged (review finding: without a log a client could read
    /// the new value of one key and then the old value of another), and only while no log has
    /// failed ([`moon_aof::any_log_failed`]): the locking path answers MISCONF then.
    pub fn can_run_chains(&self) -> bool {
        self.aof().is_some() && !moon_aof::any_log_failed()
    }

    /// One answer slot per shard, filled for `participants`, and their receivers in order.
    #[allow(clippy::type_complexity)]
    fn answer_slots(
        &self,
        participants: &[usize],
    ) -> (
        Vec<Option<oneshot::Sender<Option<String>>>>,
        Vec<oneshot::Receiver<Option<String>>>,
    ) {
        let mut replies: Vec<_> = (0..self.count()).map(|_| None).collect();
        let mut answers = Vec::with_capacity(participants.len());
        for &p in participants {
            let (reply, answer) = oneshot::channel();
            if let Some(slot) = replies.get_mut(p) {
                *slot = Some(reply);
            }
            answers.push(answer);
        }
        (replies, answers)
    }

    /// Sends a chain to the lowest of `participants` (handled here, with the same deferral as
    /// a message, if that is this shard). A chain that cannot start drops its answers: the
    /// coordinator reads them as a shard that is gone.
    async fn start_chain(self: &Rc<Self>, participants: &[usize], tx: Tx, visit: Visit) {
        let (Some(&lo), Some(&hi)) = (participants.first(), participants.last()) else {
            return;
        };
        let chain = Box::new(Chain { tx, hi, visit });
        if lo == self.id() {
            Shard::handle(self, Message::Chain(chain));
        } else {
            self.send(lo, Message::Chain(chain)).await;
        }
    }

    /// A chain's visit of this shard (in its turn: deferred like any message while another
    /// transaction holds the shard or a local task has it), then on to the next shard.
    pub(crate) fn visit(self: &Rc<Self>, mut chain: Box<Chain>) {
        let id = self.id();
        let next = (id < chain.hi).then_some(id + 1);
        let txid = chain.tx.id;
        match &mut chain.visit {
            Visit::Lock {
                replies,
                writers,
                last,
                failing,
            } => {
                if let Some(reply) = replies.get_mut(id).and_then(Option::take) {
                    self.lock_holder.set(Some(txid));
                    let error = self.log_error();
                    if failing.is_none() && writers.contains(&id) {
                        failing.clone_from(&error);
                    }
                    let _ = reply.send(error);
                } else if let Some((cmds, reply)) = last.take_if(|_| next.is_none()) {
                    // The last participant: it runs its part now, unless a writer's log
                    // is failing (then nothing runs anywhere).
                    self.lock_holder.set(Some(txid));
                    let refused = failing
                        .take()
                        .or_else(|| writers.contains(&id).then(|| self.log_error()).flatten());
                    let outcome = match refused {
                        Some(cause) => {
                            self.unlock_here(txid);
                            Err(cause)
                        }
                        None => self.lock_exec_commit_here(chain.tx, &cmds, writers.clone(), None),
                    };
                    let _ = reply.send(outcome);
                }
            }
            Visit::Run {
                batches,
                writers,
                replies,
                ran,
                refused,
            } => {
                if let Some(reply) = replies.get_mut(id).and_then(Option::take) {
                    let failing = writers.contains(&id).then(|| self.log_error()).flatten();
                    if let (Some(cause), false) = (&failing, *ran) {
                        // The first part, and its log is failing: nothing ran anywhere, so
                        // the whole chain is refused (MISCONF), not the server stopped.
                        refused.get_or_insert_with(|| cause.clone());
                    }
                    if let Some(cause) = refused {
                        let _ = reply.send(Err(cause.clone()));
                    } else {
                        if let Some(cause) = failing {
                            // Earlier parts ran and are logged: crash-only, as a commit
                            // that cannot be logged (recovery drops the transaction).
                            stop_for_part(txid, &cause);
                        }
                        *ran = true;
                        let tx = Tx {
                            id: txid,
                            now: chain.tx.now.max(now_ms()),
                        };
                        chain.tx.now = tx.now;
                        let cmds = batches.get_mut(id).map(std::mem::take).unwrap_or_default();
                        let writers = writers.clone();
                        // On before the part runs: its commit unlocks, and what the unlock
                        // runs next here must follow this chain on the next shard too.
                        if let Some(next) = next {
                            self.forward(next, chain);
                        }
                        self.lock_holder.set(Some(txid));
                        let _ = reply.send(Ok(self.exec_commit_here(tx, &cmds, writers)));
                        return;
                    }
                }
            }
        }
        if let Some(next) = next {
            self.forward(next, chain);
        }
    }

    /// This shard's log error, if its log is failing.
    pub(crate) fn log_error(&self) -> Option<String> {
        self.aof().and_then(|a| a.error())
    }

    /// Step 2: runs `cmds` on `target` (locked by `tx`).
    pub async fn tx_exec(self: &Rc<Self>, target: usize, tx: Tx, cmds: Vec<Call>) -> Vec<Frame> {
        if target == self.id() {
            return self.tx_exec_here(tx, &cmds);
        }
        let n = cmds.len();
        let (reply, rx) = oneshot::channel();
        if !self.send(target, Message::TxExec { tx, cmds, reply }).await {
            return vec![Frame::StaticError(SHARD_GONE); n];
        }
        rx.await
            .unwrap_or_else(|_| vec![Frame::StaticError(SHARD_GONE); n])
    }

    /// Steps 3 and 4 on every participant: commits (each part logged, its shard unlocked at
    /// once), then, once every part is safe, releases the holds. Returns each participant's
    /// outcome, in `participants`' order. `writers`: the shards that may have changed something
    /// (each logs a part, even an empty one, so that recovery finds every part it names).
    ///
    /// It runs as a task of its own: a hold must be released even if the caller stopped
    /// waiting, or every later reply on that shard would wait forever. After a
    /// [`CommitFailure::Part`] nothing is released: the caller stops the server (crash-only),
    /// and recovery drops the transaction with everything logged after it.
    ///
    /// `early`: parts already logged ([`Shard::tx_lock_run_last`], [`Shard::tx_exec_commit`],
    /// [`Shard::tx_run_chain`]), whose outcome arrives with them; they are waited for and
    /// released like the others.
    pub async fn tx_commit_all(
        self: &Rc<Self>,
        participants: Vec<usize>,
        txid: TxId,
        writers: Vec<usize>,
        early: Vec<(usize, EarlyPart)>,
    ) -> Vec<Result<(), CommitFailure>> {
        let shard = self.clone();
        let n = participants.len() + early.len();
        let task = glommio::spawn_local(async move {
            type Commit<'a> = std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<Option<HeldPart>, CommitFailure>> + 'a>,
            >;
            let mut commits: Vec<Commit<'_>> = participants
                .iter()
                .map(|&p| Box::pin(shard.tx_commit(p, txid, writers.clone())) as Commit)
                .collect();
            let mut participants = participants;
            for (p, part) in early {
                participants.push(p);
                commits.push(Box::pin(async move {
                    part.0
                        .await
                        .unwrap_or_else(|_| Err(CommitFailure::Part(SHARD_GONE.into())))
                }));
            }
            let outcomes = crate::shard::join_all(commits).await;
            if let Some(Err(CommitFailure::Part(cause))) = outcomes
                .iter()
                .find(|o| matches!(o, Err(CommitFailure::Part(_))))
            {
                stop_for_part(txid, cause);
            }
            let held: Vec<(usize, HeldPart)> = participants
                .iter()
                .zip(&outcomes)
                .filter_map(|(&p, o)| o.as_ref().ok().copied().flatten().map(|h| (p, h)))
                .collect();
            // Every part safe and releasable. If no hold was left below any of them, the
            // transaction is whole on disk with everything before it: release and answer.
            // Otherwise an older transaction spanning these shards is still held below: the
            // reply waits until each log is clear up to the part.
            let clear = held.iter().all(|(_, h)| h.clear);
            let releases = held
                .into_iter()
                .map(|(p, h)| shard.tx_release(p, h, !clear))
                .collect();
            for r in crate::shard::join_all(releases).await {
                if let Err(cause) = r {
                    stop_for_part(txid, &cause);
                }
            }
            outcomes
                .into_iter()
                .map(|o| o.map(|_| ()))
                .collect::<Vec<_>>()
        })
        .detach();
        task.await
            .unwrap_or_else(|| vec![Err(CommitFailure::Part(SHARD_GONE.into())); n])
    }

    /// Locks here for `tx`, refuses if it would write and `log_error` (this shard's, read when
    /// the lock was taken) says its log is failing (`Err`, nothing ran, unlocked), else runs
    /// `cmds` at the later of `tx.now` and this shard's clock, appends its part and unlocks.
    pub(crate) fn lock_exec_commit_here(
        self: &Rc<Self>,
        tx: Tx,
        cmds: &[Call],
        writers: Vec<usize>,
        log_error: Option<String>,
    ) -> Result<LastPart, String> {
        if let (Some(cause), true) = (log_error, writers.contains(&self.id())) {
            self.unlock_here(tx.id);
            return Err(cause);
        }
        let tx = Tx {
            id: tx.id,
            now: tx.now.max(now_ms()),
        };
        let frames = self.tx_exec_here(tx, cmds);
        Ok(LastPart {
            frames,
            now: tx.now,
            part: self.commit_early(tx.id, writers),
        })
    }

    /// Steps 2 and 3 on `target`, locked by `tx`, in one exchange: runs `cmds` at `tx.now`
    /// exactly (the time the transaction's last part ran at: this shard has been locked since
    /// before it), appends its part and unlocks. The part's outcome comes later, through the
    /// [`EarlyPart`], for [`Shard::tx_commit_all`]. For the parts of a split command that
    /// run after [`Shard::tx_lock_run_last`]: one message where execution and commit took
    /// two, so a participant's lock is held one round trip less.
    pub async fn tx_exec_commit(
        self: &Rc<Self>,
        target: usize,
        tx: Tx,
        cmds: Vec<Call>,
        writers: Vec<usize>,
    ) -> (Vec<Frame>, EarlyPart) {
        if target == self.id() {
            return self.exec_commit_here(tx, &cmds, writers);
        }
        let n = cmds.len();
        let gone = |n| {
            let (_, outcome) = oneshot::channel();
            (vec![Frame::StaticError(SHARD_GONE); n], EarlyPart(outcome))
        };
        let (reply, rx) = oneshot::channel();
        let msg = Message::TxExecCommit {
            tx,
            cmds,
            writers,
            reply,
        };
        if !self.send(target, msg).await {
            return gone(n);
        }
        rx.await.unwrap_or_else(|_| gone(n))
    }

    /// [`Shard::tx_exec_commit`] here.
    pub(crate) fn exec_commit_here(
        self: &Rc<Self>,
        tx: Tx,
        cmds: &[Call],
        writers: Vec<usize>,
    ) -> (Vec<Frame>, EarlyPart) {
        let frames = self.tx_exec_here(tx, cmds);
        (frames, self.commit_early(tx.id, writers))
    }

    /// Appends this shard's part and unlocks now; the part's outcome comes later.
    fn commit_early(self: &Rc<Self>, txid: TxId, writers: Vec<usize>) -> EarlyPart {
        let logged = self.tx_commit_log(txid, &writers);
        let (done, outcome) = oneshot::channel();
        glommio::spawn_local(async move {
            let _ = done.send(commit_wait(logged, &writers).await);
        })
        .detach();
        EarlyPart(outcome)
    }

    /// Step 3 on `target`; `Some`: its part is held.
    async fn tx_commit(
        self: &Rc<Self>,
        target: usize,
        txid: TxId,
        writers: Vec<usize>,
    ) -> Result<Option<HeldPart>, CommitFailure> {
        if target == self.id() {
            return self.tx_commit_here(txid, &writers).await;
        }
        let (tx, rx) = oneshot::channel();
        if !self
            .send(
                target,
                Message::TxCommit {
                    txid,
                    writers,
                    reply: tx,
                },
            )
            .await
        {
            return Err(CommitFailure::Part(SHARD_GONE.into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(CommitFailure::Part(SHARD_GONE.into())))
    }

    /// Step 4 on `target`: its part's hold is released; with `wait`, resolves once nothing is
    /// held below the part there any more.
    async fn tx_release(
        self: &Rc<Self>,
        target: usize,
        part: HeldPart,
        wait: bool,
    ) -> Result<(), String> {
        let (reply, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if target == self.id() {
            self.release_here(part, reply);
        } else if !self.send(target, Message::TxRelease { part, reply }).await {
            return Err(SHARD_GONE.into());
        }
        match rx {
            Some(rx) => rx.await.unwrap_or_else(|_| Err(SHARD_GONE.into())),
            None => Ok(()),
        }
    }

    /// Unlocks `target` for a transaction that stops before its commit (a watched key changed,
    /// or it was refused); a committed one unlocked at its commit.
    pub async fn tx_unlock(self: &Rc<Self>, target: usize, txid: TxId) {
        if target == self.id() {
            self.unlock_here(txid);
            return;
        }
        let _ = self.send(target, Message::TxUnlock { txid }).await;
    }

    /// A batch inside transaction `tx` (locked shards) or, without one, an ordinary batch.
    pub async fn run_batch_in(
        self: &Rc<Self>,
        tx: Option<Tx>,
        target: usize,
        cmds: Vec<Call>,
    ) -> Vec<Frame> {
        match tx {
            Some(tx) => self.tx_exec(target, tx, cmds).await,
            None => self.run_batch(target, cmds).await,
        }
    }

    /// [`Shard::run_batch_in`] for a caller that keeps its batch's list: `cmds` comes back
    /// empty, with its capacity. A pipeline's batch of calls (about 100 bytes each) is over a
    /// kilobyte at 16 commands, past glibc's per-thread cache: each new list was an
    /// allocation under the arena's lock that also consolidated its small free chunks
    /// (`malloc_consolidate`), a tenth of a shard's CPU under `-P 16` GETs at 2 shards.
    pub async fn run_batch_keeping(
        self: &Rc<Self>,
        tx: Option<Tx>,
        target: usize,
        cmds: &mut Vec<Call>,
    ) -> Vec<Frame> {
        match tx {
            Some(tx) => self.tx_exec(target, tx, std::mem::take(cmds)).await,
            None => {
                let (frames, mut spent) = self.run_batch_spent(target, std::mem::take(cmds)).await;
                for call in spent.drain(..) {
                    moon_proto::recycle_args(call.args);
                }
                *cmds = spent;
                frames
            }
        }
    }
}

#[cfg(test)]
mod recovery_tests {
    use crate::recovery::{recovery_plan, Part};

    fn part(lsn: u64, id: &str, shards: &[usize]) -> Part {
        Part {
            lsn,
            id: id.to_string(),
            shards: shards.to_vec(),
        }
    }

    #[test]
    fn whole_transactions_are_applied_and_nothing_is_cut() {
        let plan = recovery_plan(&[vec![part(3, "t1", &[0, 1])], vec![part(7, "t1", &[0, 1])]]);
        assert!(plan.complete.contains("t1"));
        assert_eq!(plan.stop_at, vec![None, None]);
    }

    #[test]
    fn a_shard_ends_at_a_transaction_whose_other_part_was_lost() {
        // Power cut under everysec: shard 1 lost its tail with t2's part; shard 0 kept t2's
        // part and records after it (which may depend on it).
        let plan = recovery_plan(&[
            vec![part(3, "t1", &[0, 1]), part(9, "t2", &[0, 1])],
            vec![part(4, "t1", &[0, 1])],
        ]);
        assert!(plan.complete.contains("t1"));
        assert!(!plan.complete.contains("t2"));
        assert_eq!(plan.stop_at, vec![Some(9), None]);
    }

    #[test]
    fn ending_one_log_early_cascades_to_the_transactions_after_it() {
        // t2 (shards 0, 1) lost its part on shard 1; t3 (shards 0, 2) comes after it on shard
        // 0, so it is cut there and must not be applied on shard 2 either.
        let plan = recovery_plan(&[
            vec![part(5, "t2", &[0, 1]), part(8, "t3", &[0, 2])],
            vec![],
            vec![part(2, "t3", &[0, 2]), part(6, "t4", &[2, 1])],
        ]);
        assert_eq!(plan.stop_at, vec![Some(5), None, Some(2)]);
        assert!(plan.complete.is_empty());
    }
}

#[cfg(test)]
mod fairness_tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use bytes::Bytes;

    use crate::{start, ShardSetConfig};

    /// A local batch waiting for a locked shard runs before a transaction that asked for the
    /// lock after it: woken, it keeps its place instead of queueing again behind every lock
    /// that arrived meanwhile (which could starve it forever).
    #[test]
    fn a_woken_local_task_keeps_its_place_in_the_lock_queue() {
        let config = ShardSetConfig {
            shards: 1,
            pin: false,
            max_string_len: 1 << 20,
        };
        let orders = start(config, |shard| async move {
            let order = Rc::new(RefCell::new(Vec::new()));
            let first = shard.new_txid();
            shard.tx_lock(0, first).await;
            let batch = {
                let (shard, order) = (shard.clone(), order.clone());
                glommio::spawn_local(async move {
                    let set = vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")];
                    let set = moon_store::Call::new(set, 0).expect("a well-formed SET");
                    shard.run_local(&[set]).await;
                    order.borrow_mut().push("batch");
                })
            };
            futures_lite::future::yield_now().await;
            let second = {
                let (shard, order) = (shard.clone(), order.clone());
                glommio::spawn_local(async move {
                    let txid = shard.new_txid();
                    shard.tx_lock(0, txid).await;
                    order.borrow_mut().push("transaction");
                    shard.tx_unlock(0, txid).await;
                })
            };
            futures_lite::future::yield_now().await;
            shard.tx_unlock(0, first).await;
            batch.await;
            second.await;
            order.take()
        })
        .expect("runtime");
        assert_eq!(orders[0], ["batch", "transaction"]);
    }

    /// A local task cancelled after the shard handed it its turn, but before it ran, gives the
    /// turn on: the shard goes on running what waits (it once stayed handed off for good).
    #[test]
    fn a_task_cancelled_after_its_wake_up_gives_the_turn_on() {
        let config = ShardSetConfig {
            shards: 1,
            pin: false,
            max_string_len: 1 << 20,
        };
        let handed_off = start(config, |shard| async move {
            let txid = shard.new_txid();
            shard.tx_lock(0, txid).await;
            let set = |v: &str| {
                let set = vec![
                    Bytes::from("SET"),
                    Bytes::from("k"),
                    Bytes::from(v.to_string()),
                ];
                moon_store::Call::new(set, 0).expect("a well-formed SET")
            };
            let cancelled = {
                let (shard, set) = (shard.clone(), set("cancelled"));
                glommio::spawn_local(async move { shard.run_local(&[set]).await })
            };
            futures_lite::future::yield_now().await;
            // The unlock wakes the waiting task and hands it the shard; it is cancelled
            // before it runs.
            shard.tx_unlock(0, txid).await;
            drop(cancelled);
            futures_lite::future::yield_now().await;
            futures_lite::future::yield_now().await;
            let handed_off = shard.handoff.get();
            if !handed_off {
                shard.run_local(&[set("after")]).await;
            }
            handed_off
        })
        .expect("runtime");
        assert_eq!(handed_off, [false]);
    }

    /// A local coordinator cancelled after the deferred queue gave it the lock, but before it
    /// ran, unlocks: what waits behind it runs.
    #[test]
    fn a_coordinator_cancelled_after_its_lock_unlocks() {
        let config = ShardSetConfig {
            shards: 1,
            pin: false,
            max_string_len: 1 << 20,
        };
        let held = start(config, |shard| async move {
            let first = shard.new_txid();
            shard.tx_lock(0, first).await;
            let cancelled = {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let txid = shard.new_txid();
                    shard.tx_lock(0, txid).await;
                    // Never reached: cancelled before it runs again.
                    std::future::pending::<()>().await;
                })
            };
            futures_lite::future::yield_now().await;
            // The unlock gives the waiting coordinator the lock; it is cancelled before it
            // runs.
            shard.tx_unlock(0, first).await;
            drop(cancelled);
            futures_lite::future::yield_now().await;
            futures_lite::future::yield_now().await;
            shard.lock_holder.get().is_some()
        })
        .expect("runtime");
        assert_eq!(held, [false]);
    }

    /// A peer that keeps this shard's channel full does not keep this shard's own tasks
    /// waiting: the loop that handles its messages lets the shard poll its I/O and timers
    /// every `MESSAGES_PER_TURN` messages. (It once handled them for as long as they came,
    /// and a client of the shard that owned a hot key waited seconds.)
    #[test]
    fn a_flood_of_batches_from_a_peer_lets_local_tasks_run() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use std::time::Duration;

        use moon_proto::Frame;

        const BATCHES: usize = 400;
        fn call(args: &[&str]) -> moon_store::Call {
            let args = args.iter().map(|a| Bytes::from(a.to_string())).collect();
            moon_store::Call::new(args, 0).expect("a well-formed command")
        }
        fn count(frames: Vec<Frame>) -> usize {
            match frames.as_slice() {
                [Frame::Bulk(b)] => std::str::from_utf8(b).unwrap().parse().unwrap(),
                _ => 0,
            }
        }
        let config = ShardSetConfig {
            shards: 2,
            pin: false,
            max_string_len: 1 << 20,
        };
        let all_sent = Arc::new(AtomicBool::new(false));
        let seen = start(config, move |shard| {
            let all_sent = all_sent.clone();
            async move {
                if shard.id() == 0 {
                    // Every batch is in shard 1's channel before shard 1 looks at it.
                    let batches: Vec<_> = (0..BATCHES)
                        .map(|_| {
                            let shard = shard.clone();
                            glommio::spawn_local(async move {
                                shard.run_batch(1, vec![call(&["INCR", "c"])]).await
                            })
                        })
                        .collect();
                    // Each batch task sends its message on its first run.
                    futures_lite::future::yield_now().await;
                    all_sent.store(true, Ordering::Release);
                    for b in batches {
                        b.await;
                    }
                    return 0;
                }
                let armed = std::time::Instant::now();
                let local = {
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                        let _ = shard.run_local(&[call(&["GET", "c"])]).await;
                        futures_lite::future::yield_now().await;
                        count(shard.run_local(&[call(&["GET", "c"])]).await)
                    })
                };
                // The flood arrives, and the local task's timer expires, while this thread
                // holds the executor: both are ready on the shard's next poll.
                while !all_sent.load(Ordering::Acquire)
                    || armed.elapsed() < Duration::from_millis(2)
                {
                    std::thread::yield_now();
                }
                let seen = local.await;
                // Shard 0 waits for every reply before it ends.
                while count(shard.run_local(&[call(&["GET", "c"])]).await) < BATCHES {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                seen
            }
        })
        .expect("runtime");
        assert!(
            seen[1] < BATCHES / 2,
            "the local task's second step ran after {} of {BATCHES} batches from the peer",
            seen[1]
        );
    }

    /// WATCH reads through `call_on_unlocked`: while a transaction holds the shard, the read
    /// waits for its unlock instead of seeing its uncommitted effects.
    #[test]
    fn a_read_for_watch_waits_for_the_holding_transaction() {
        use std::sync::{Arc, Mutex};
        let config = ShardSetConfig {
            shards: 1,
            pin: false,
            max_string_len: 1 << 20,
        };
        let orders = start(config, |shard| async move {
            let order = Arc::new(Mutex::new(Vec::new()));
            let txid = shard.new_txid();
            shard.tx_lock(0, txid).await;
            let watch = {
                let (shard, order) = (shard.clone(), order.clone());
                glommio::spawn_local(async move {
                    let o = order.clone();
                    shard
                        .call_on_unlocked(0, move |_| o.lock().unwrap().push("watch read"))
                        .await;
                })
            };
            futures_lite::future::yield_now().await;
            order.lock().unwrap().push("unlock");
            shard.tx_unlock(0, txid).await;
            watch.await;
            let v = order.lock().unwrap().clone();
            v
        })
        .expect("runtime");
        assert_eq!(orders[0], ["unlock", "watch read"]);
    }

    /// Transaction ids of two runs differ even when they start in the same millisecond (or
    /// the clock stepped back): the per-run part is random, not the start time.
    #[test]
    fn two_runs_never_share_transaction_ids() {
        let a = crate::shard::random_boot_id();
        let b = crate::shard::random_boot_id();
        assert_ne!(a, b);
    }
}

#[cfg(test)]
mod one_exchange_tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use moon_proto::Frame;
    use moon_store::Call;

    use crate::{now_ms, start, ShardSetConfig, Tx};

    fn call(args: &[&str]) -> Call {
        let args = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        Call::new(args, 0).expect("a well-formed command")
    }

    /// A key that lives on `shard` of 2.
    fn key_on(shard: usize) -> String {
        (0..)
            .map(|i| format!("key:{i}"))
            .find(|k| moon_store::slot::shard_for_key(k.as_bytes(), 2) == shard)
            .expect("some key lands on every shard")
    }

    /// Review finding: the last shard of a split command ran its part at the coordinator's
    /// `now`, read before its lock. A GET queued there ahead of the transaction ran later, at
    /// a time past two keys' common deadline, and expired the last shard's key; the part then
    /// missed it while the first shard, at the earlier `now`, still had its own: an MGET of
    /// two keys with the same deadline answered one. Now every part runs at the time the
    /// last shard ran at, no earlier than anything before it there.
    #[test]
    fn the_parts_of_one_exchange_see_one_time() {
        let config = ShardSetConfig {
            shards: 2,
            pin: false,
            max_string_len: 1 << 20,
        };
        // Shard 1 must keep serving until shard 0's test is done.
        let (done_tx, done_rx) = futures_channel::oneshot::channel::<()>();
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let done_rx = Arc::new(Mutex::new(Some(done_rx)));
        let results = start(config, move |shard| {
            let (done_tx, done_rx) = (done_tx.clone(), done_rx.clone());
            async move {
                if shard.id() == 1 {
                    let rx = done_rx.lock().unwrap().take();
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    return None;
                }
                let (first, last) = (key_on(0), key_on(1));
                let deadline = (now_ms() + 100).to_string();
                for (s, k) in [(0, &first), (1, &last)] {
                    shard
                        .run_batch(s, vec![call(&["SET", k, "v", "PXAT", &deadline])])
                        .await;
                }
                // Another transaction holds the last shard while a GET and the split
                // command's last step queue up there, in that order.
                let holder = shard.new_txid();
                shard.tx_lock(1, holder).await;
                let txid = shard.new_txid();
                let tx = Tx {
                    id: txid,
                    now: now_ms(),
                };
                let get = shard.run_batch(1, vec![call(&["GET", &last])]);
                let step = async {
                    let cmds = vec![call(&["MGET", &last])];
                    shard
                        .tx_lock_run_last(&[0, 1], tx, cmds, Vec::new())
                        .await
                        .1
                };
                let release = async {
                    // The clock passes the deadline while the last shard is held.
                    glommio::timer::sleep(std::time::Duration::from_millis(150)).await;
                    shard.tx_unlock(1, holder).await;
                };
                let ((got, last_part), ()) =
                    futures_lite::future::zip(futures_lite::future::zip(get, step), release).await;
                let last_part = last_part.expect("no log, nothing to refuse");
                let first_frames = shard
                    .tx_exec(
                        0,
                        Tx {
                            id: txid,
                            now: last_part.now,
                        },
                        vec![call(&["MGET", &first])],
                    )
                    .await;
                shard
                    .tx_commit_all(vec![0], txid, Vec::new(), vec![(1, last_part.part)])
                    .await;
                if let Some(tx) = done_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                Some((got, last_part.frames, first_frames))
            }
        })
        .expect("runtime");
        let (got, last, first) = results[0].clone().expect("shard 0 ran the test");
        assert_eq!(got, vec![Frame::Null], "the GET ran past the deadline");
        assert_eq!(last, vec![Frame::Array(vec![Frame::Null])]);
        assert_eq!(first, last, "one transaction, one time");
    }
}

#[cfg(test)]
mod chain_tests {
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use futures_channel::oneshot;
    use moon_store::Call;

    use crate::{now_ms, start, Shard, ShardSetConfig, Tx};

    fn call(args: &[&str]) -> Call {
        let args = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        Call::new(args, 0).expect("a well-formed command")
    }

    fn key_on(shard: usize, shards: usize) -> String {
        (0..)
            .map(|i| format!("key:{i}"))
            .find(|k| moon_store::slot::shard_for_key(k.as_bytes(), shards) == shard)
            .expect("some key lands on every shard")
    }

    /// Runs `test` on shard 0 of `shards`; the others serve until it is done.
    fn on_shard_0<G, F, T>(shards: usize, test: G) -> T
    where
        G: Fn(Rc<Shard>) -> F + Send + Clone + 'static,
        F: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let config = ShardSetConfig {
            shards,
            pin: false,
            max_string_len: 1 << 20,
        };
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (1..shards).map(|_| oneshot::channel::<()>()).unzip();
        let senders = Arc::new(Mutex::new(senders));
        let receivers = Arc::new(Mutex::new(receivers));
        let results = start(config, move |shard| {
            let (test, senders, receivers) = (test.clone(), senders.clone(), receivers.clone());
            async move {
                if shard.id() != 0 {
                    let rx = receivers.lock().unwrap().pop();
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    return None;
                }
                let result = test(shard).await;
                for s in senders.lock().unwrap().drain(..) {
                    let _ = s.send(());
                }
                Some(result)
            }
        })
        .expect("runtime");
        results
            .into_iter()
            .next()
            .flatten()
            .expect("shard 0 ran the test")
    }

    /// An MSET over shards 0 and 2 as one run chain, its batches by shard.
    async fn mset_chain(shard: &Rc<Shard>, shards: usize, parts: &[(usize, &str)]) -> Vec<Frame> {
        let mut batches: Vec<Vec<Call>> = (0..shards).map(|_| Vec::new()).collect();
        let mut participants = Vec::new();
        for &(p, key) in parts {
            batches[p].push(call(&["MSET", key, "v"]));
            participants.push(p);
        }
        let tx = Tx {
            id: shard.new_txid(),
            now: now_ms(),
        };
        let ran = shard
            .tx_run_chain(&participants, tx, batches, participants.clone())
            .await
            .expect("no log, nothing to refuse");
        let mut frames = Vec::new();
        let mut early = Vec::new();
        for (p, f, part) in ran {
            frames.extend(f);
            early.push((p, part));
        }
        shard
            .tx_commit_all(Vec::new(), tx.id, participants, early)
            .await;
        frames
    }

    use moon_proto::Frame;

    /// A chain goes through a shard it has nothing to do on even while another transaction
    /// holds that shard (review finding: it waited there behind the lock, and kept the
    /// shards it had already visited waiting for its commit).
    #[test]
    fn a_chain_passes_a_locked_shard_it_does_not_touch() {
        let frames = on_shard_0(3, |shard| async move {
            let holder = shard.new_txid();
            shard.tx_lock(1, holder).await;
            let (k0, k2) = (key_on(0, 3), key_on(2, 3));
            let parts = [(0, k0.as_str()), (2, k2.as_str())];
            let run = mset_chain(&shard, 3, &parts);
            let bound = async {
                // Only a bound for the failure: the chain never waits for this.
                glommio::timer::sleep(Duration::from_secs(10)).await;
                Vec::new()
            };
            let frames = futures_lite::future::or(run, bound).await;
            shard.tx_unlock(1, holder).await;
            frames
        });
        assert_eq!(
            frames,
            vec![Frame::OK, Frame::OK],
            "the chain finished while shard 1 was held"
        );
    }

    /// Thousands of chains deferred behind a lock run one after another when it goes, not
    /// one stack frame deeper each (review finding: each part's commit unlocked, and the
    /// unlock drained the rest from inside the drain that ran it).
    #[test]
    fn chains_deferred_behind_a_lock_do_not_nest() {
        const CHAINS: usize = 5000;
        let ok = on_shard_0(2, |shard| async move {
            let first = shard.new_txid();
            shard.tx_lock(0, first).await;
            let (k0, k1) = (key_on(0, 2), key_on(1, 2));
            let chains: Vec<_> = (0..CHAINS)
                .map(|_| {
                    let (shard, k0, k1) = (shard.clone(), k0.clone(), k1.clone());
                    glommio::spawn_local(async move {
                        mset_chain(&shard, 2, &[(0, &k0), (1, &k1)]).await
                    })
                })
                .collect();
            // Every chain starts (and is deferred here) before the unlock.
            futures_lite::future::yield_now().await;
            shard.tx_unlock(0, first).await;
            let mut ok = 0;
            for c in chains {
                ok += usize::from(c.await == vec![Frame::OK, Frame::OK]);
            }
            ok
        });
        assert_eq!(ok, CHAINS);
    }
}
