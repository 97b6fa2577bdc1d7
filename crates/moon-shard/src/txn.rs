//! Transactions: single-shard atomic batches and cross-shard transactions.
//!
//! **Single shard** ([`Shard::run_atomic`]): the commands of a MULTI/EXEC whose keys all live
//! on one shard run in one turn of that shard's executor — nothing can interleave — and their
//! effects are appended as **one** record (a MULTI/EXEC group), so recovery applies all or
//! none. No locks, no extra messages: one message there, one back, as for any batch.
//!
//! **Across shards** (a MULTI/EXEC, or a multi-key command such as MSET or MGET, whose keys
//! live on several shards), the coordinator — the connection's own shard — runs:
//! 1. **lock** every participating shard, one after another in ascending shard order
//!    ([`Shard::tx_lock`]). A locked shard executes nothing but the holder's steps: every
//!    other batch, atomic batch or lock request that arrives is deferred, in order, until the
//!    unlock. Because every coordinator locks in the same global order, two transactions can
//!    never wait for each other in a cycle: no deadlock.
//! 2. **execute** the commands in order, each on its key's shard ([`Shard::tx_exec`]), exactly
//!    as a pipeline would, including multi-step commands (a RENAME across shards). The effects
//!    are not logged yet: each shard buffers its own.
//! 3. **commit** ([`Shard::tx_commit`]): every participant appends its buffered effects as one
//!    record — when two or more shards changed something, a group headed by
//!    `MOON.TXPART <txid> <shards that changed something>` — and waits until its log is safe up
//!    to its latest LSN (fdatasync under `always`). Only when every participant is safe does
//!    the coordinator build the reply.
//! 4. **unlock** every participant, which then runs what it deferred, in order.
//!
//! Why each crash instant is safe: before every part of a transaction is durable, all its
//! shards are locked, so no other command has observed its effects, and the client has no
//! reply. Recovery (in the server) first collects the transaction ids of every shard's
//! `MOON.TXPART` records and applies a part only if every shard it names has its part too; a
//! transaction cut short by a crash is therefore skipped on every shard, and — since its
//! shards were locked — nothing logged after it depended on it.

use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;
use moon_proto::Frame;
use moon_store::WatchToken;

use crate::runtime::now_ms;
use crate::shard::{run_cmds, settle, Held, Message, Shard};

/// A transaction's identity: unique across shards and restarts (a random id of the run is part
/// of it), so recovery can match the parts of one transaction in different shards' logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxId {
    boot: u64,
    shard: u32,
    n: u64,
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}-{}-{}", self.boot, self.shard, self.n)
    }
}

/// A running cross-shard transaction, as its steps carry it: its id, and its clock — the one
/// `now` that every command it runs sees, on every shard (taken once all its shards are
/// locked, so it is never earlier than anything that ran before it there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx {
    pub id: TxId,
    pub now: u64,
}

/// The name of the header command of a cross-shard transaction part in the log.
pub const TXPART: &str = "MOON.TXPART";

/// The first bytes of a transaction part's payload: `MULTI` then `MOON.TXPART` (a part with
/// effects), or the `MOON.TXPART` header alone (a part that changed nothing on its shard: a
/// one-command record is never wrapped in MULTI/EXEC).
const TXPART_PREFIXES: [&[u8]; 2] = [
    b"*1\r\n$5\r\nMULTI\r\n*3\r\n$11\r\nMOON.TXPART\r\n",
    b"*3\r\n$11\r\nMOON.TXPART\r\n",
];

/// One cross-shard transaction part found in a log at recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub lsn: u64,
    pub id: String,
    /// The shards that logged a part of the same transaction.
    pub shards: Vec<usize>,
}

/// Recovery, first pass: the transaction parts in one log file, in log order. Reads only; a
/// damaged file yields what precedes the damage (replay reports the damage). A part is found
/// in the first record of its unit and counts only once the unit's last record is there: a
/// part whose unit a crash cut short is dropped by replay as a torn tail, so it must not
/// count here either.
pub fn transaction_parts(path: &std::path::Path) -> std::io::Result<Vec<Part>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut parts = Vec::new();
    // Inside a unit spanning records: the part its first record held, if any.
    let mut open: Option<Option<Part>> = None;
    let _ = moon_aof::reader::scan::<()>(&data, |lsn, payload, _offset| {
        let continued = moon_aof::record::is_continued(payload);
        let part = match open.take() {
            Some(first) => first,
            None => part_in(lsn, payload),
        };
        if continued {
            open = Some(part);
        } else {
            parts.extend(part);
        }
        Ok(())
    });
    Ok(parts)
}

/// The transaction part a record's payload heads, if it is one.
fn part_in(lsn: u64, payload: &[u8]) -> Option<Part> {
    if !TXPART_PREFIXES.iter().any(|p| payload.starts_with(p)) {
        return None;
    }
    let header = moon_aof::decode_payload(payload)?.into_iter().next()?;
    let (id, shards) = (header.get(1)?, header.get(2)?);
    Some(Part {
        lsn,
        id: String::from_utf8_lossy(id).into_owned(),
        shards: String::from_utf8_lossy(shards)
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect(),
    })
}

/// What recovery replays of every shard's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Transactions whose every part lies in the replayed prefix of its shard: applied.
    pub complete: std::collections::HashSet<String>,
    /// Per shard: the LSN at which its log ends — the first part of a transaction that cannot
    /// be applied whole — or `None` to replay all of it.
    pub stop_at: Vec<Option<u64>>,
}

/// Recovery: from every shard's transaction parts (in log order), which transactions to
/// apply and where each shard's log must end.
///
/// A transaction is applied only if every shard it names has its part. One that is missing a
/// part was cut short — by a crash before its commit finished, or by a power cut that took
/// the part from one shard's unsynced tail while another shard's part had reached its disk
/// (`everysec`/`no` fsync each log on its own schedule). In the second case records after
/// the surviving part may depend on it (an INCRBY is logged as the SET of its result, read
/// from a state that included the transaction), so a shard's log ends **at** its first part
/// of a transaction that cannot be applied: what follows is dropped with it, as a torn tail
/// is. Ending one shard's log early can make another transaction incomplete in turn, so the
/// ends are moved back until nothing changes. The result is a consistent cut: every shard
/// replays a prefix of its log, and every transaction is in it on all its shards or on none.
/// After a SIGKILL (nothing the kernel has is lost) and under `always`, an incomplete part is
/// always the last record of its shard: its shards stay locked until every part is durable,
/// a transaction is refused before it runs if one of its writers' logs is failing, and a
/// commit that fails midway stops the process before unlocking (`moon-server`'s `txn::run`).
pub fn recovery_plan(per_shard: &[Vec<Part>]) -> RecoveryPlan {
    use std::collections::{HashMap, HashSet};
    let n = per_shard.len();
    let mut stop_at: Vec<Option<u64>> = vec![None; n];
    let kept = |stop: Option<u64>, p: &Part| stop.is_none_or(|s| p.lsn < s);
    loop {
        let mut have: HashMap<&str, HashSet<usize>> = HashMap::new();
        for (shard, parts) in per_shard.iter().enumerate() {
            for p in parts.iter().filter(|p| kept(stop_at[shard], p)) {
                have.entry(p.id.as_str()).or_default().insert(shard);
            }
        }
        let whole = |p: &Part| {
            have.get(p.id.as_str())
                .is_some_and(|got| p.shards.iter().all(|s| got.contains(s)))
        };
        let mut changed = false;
        for (shard, parts) in per_shard.iter().enumerate() {
            let first_broken = parts
                .iter()
                .take_while(|p| kept(stop_at[shard], p))
                .find(|p| !whole(p));
            if let Some(p) = first_broken {
                stop_at[shard] = Some(p.lsn);
                changed = true;
            }
        }
        if !changed {
            let complete = per_shard
                .iter()
                .flatten()
                .filter(|p| whole(p))
                .map(|p| p.id.clone())
                .collect();
            return RecoveryPlan { complete, stop_at };
        }
    }
}

/// Recovery, second pass: the commands of one record that replay applies — `None` for a
/// transaction part whose transaction is not in `complete` (skip it) — with the
/// `MOON.TXPART` header removed.
pub fn applicable(
    group: Vec<Vec<Bytes>>,
    complete: &std::collections::HashSet<String>,
) -> Option<Vec<Vec<Bytes>>> {
    let is_part = group
        .first()
        .is_some_and(|first| first[0].eq_ignore_ascii_case(TXPART.as_bytes()));
    if !is_part {
        return Some(group);
    }
    let whole = group[0]
        .get(1)
        .is_some_and(|id| std::str::from_utf8(id).is_ok_and(|id| complete.contains(id)));
    whole.then(|| group.into_iter().skip(1).collect())
}

/// Replays the log file at `path` into `store` within `bounds`: its records follow
/// `after_lsn`, and it ends at `stop_lsn` (see [`recovery_plan`])
/// — what [`Shard::replay`] does at startup, as a
/// function of the store alone so that the model-based checker runs the very same code.
///
/// Records are applied with expiry off ([`moon_store::NO_EXPIRY_CHECK`]) and without logging
/// anything again: every expiration that happened while serving is in the log as a deletion
/// at the place it happened, so the store goes through exactly the states its clients saw.
/// The string length limit is lifted while replaying: what was accepted once must replay even
/// if `proto-max-bulk-len` is lower now. Returns the report and the number of transaction
/// parts skipped (see [`applicable`]).
pub fn replay_log(
    store: &mut moon_store::Store,
    path: &std::path::Path,
    complete: &std::collections::HashSet<String>,
    bounds: moon_aof::reader::Bounds,
    may_truncate: bool,
) -> Result<(moon_aof::ReplayReport, u64), moon_aof::AofError> {
    store.set_record_writes(false);
    let limit = store.max_string_len();
    store.set_max_string_len(usize::MAX);
    let mut skipped = 0;
    let apply = |_lsn, group| match applicable(group, complete) {
        Some(cmds) => {
            for cmd in cmds {
                store.execute(&cmd, moon_store::NO_EXPIRY_CHECK);
            }
        }
        None => skipped += 1,
    };
    let report = if may_truncate {
        moon_aof::replay_file_until(path, bounds, apply)
    } else {
        moon_aof::reader::replay_readonly(path, bounds, apply)
    };
    store.set_max_string_len(limit);
    Ok((report?, skipped))
}

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

/// Why a participant's commit step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitFailure {
    /// A part that holds none of the transaction's writes: its log failed before what it
    /// read was safe. Nothing of the transaction is at stake there; the reply is an error.
    Read(String),
    /// A part with the transaction's writes (or its shard is gone): it may be missing from the
    /// log while other parts are durable.
    Part(String),
}

/// A local task's turn on a shard it waited for: while held, nothing deferred runs; dropping
/// it (once the task has executed) lets the rest of the queue go.
pub(crate) struct Turn(Option<Rc<Shard>>);

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(shard) = self.0.take() {
            shard.handoff.set(false);
            shard.drain();
        }
    }
}

/// Work that reached a locked shard.
pub(crate) enum Deferred {
    /// A message from another shard, handled as if it arrived now.
    Msg(Message),
    /// A local task waiting to execute.
    Wake(oneshot::Sender<()>),
    /// A local coordinator waiting for the lock.
    Lock(TxId, oneshot::Sender<()>),
}

const GONE: &str = "ERR shard unavailable (server shutting down)";

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
        let mut turn = Turn(None);
        while self.lock_holder.get().is_some() || (self.handoff.get() && turn.0.is_none()) {
            let (tx, rx) = oneshot::channel();
            self.deferred.borrow_mut().push_back(Deferred::Wake(tx));
            if rx.await.is_ok() {
                turn.0 = Some(self.clone());
            }
        }
        turn
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
        self.drain();
    }

    /// Runs what was deferred, in order, until the queue is empty, another transaction takes
    /// the lock, or a waiting local task is handed the shard (it drains again once it ran).
    pub(crate) fn drain(self: &Rc<Self>) {
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
                    if w.send(()).is_ok() {
                        self.lock_holder.set(Some(id));
                    }
                }
            }
        }
    }

    /// Step 2 on this shard: runs `cmds` at the transaction's time, buffering their effects
    /// for the commit.
    pub(crate) fn tx_exec_here(&self, tx: Tx, cmds: &[Vec<Bytes>]) -> Vec<Frame> {
        let (mut store, _, failing) = self.parts();
        if failing.is_none() {
            self.tx_read_unsafe.set(true);
        }
        let mut effects = self.tx_effects.borrow_mut();
        // Room was made before the transaction started (`Shard::make_room`).
        store.set_memory_checks(false);
        let frames = run_cmds(&mut store, cmds, tx.now, failing.as_deref(), |_, _, e| {
            effects.extend(e.iter().cloned())
        });
        store.set_memory_checks(true);
        frames
    }

    /// Step 3 on this shard: logs the buffered effects as one record (a `MOON.TXPART` group when
    /// two or more shards are `writers`; this shard logs one whenever it is named, even with
    /// no effects) and waits until the log is safe up to the shard's latest LSN (which also
    /// covers what the transaction read).
    pub(crate) async fn tx_commit_here(
        &self,
        txid: TxId,
        writers: &[usize],
    ) -> Result<(), CommitFailure> {
        let effects = std::mem::take(&mut *self.tx_effects.borrow_mut());
        let read_unsafe = self.tx_read_unsafe.replace(false);
        let Some(writer) = self.parts().1 else {
            return Ok(());
        };
        // A part that reads only: if every step of it ran on the rebuilt keyspace of a failed
        // log, what it read is all in the log and nothing needs to wait.
        let wait_read = |r: Result<(), String>| match r {
            Err(_) if !read_unsafe => Ok(()),
            r => r.map_err(CommitFailure::Read),
        };
        let named = writers.contains(&self.id());
        if !named {
            // A read-only part: its only effects are keys it found expired, logged like any
            // read's (not part of the transaction). It waits for what it may have read; if
            // the log fails, what it read may not be in it (`CommitFailure::Read`).
            if !effects.is_empty() {
                writer.append(&effects);
            }
            return wait_read(writer.wait(writer.last_assigned()).await);
        }
        if effects.is_empty() && writers.len() < 2 {
            return wait_read(writer.wait(writer.last_assigned()).await);
        }
        writer.append(&part_record(&txid.to_string(), writers, effects));
        writer
            .wait(writer.last_assigned())
            .await
            .map_err(CommitFailure::Part)
    }

    /// Single-shard MULTI/EXEC: `None` if a watched key changed (nothing ran); otherwise the
    /// replies, now or held for the one record holding all the effects.
    pub(crate) fn execute_atomic(
        &self,
        cmds: &[Vec<Bytes>],
        watches: &[(Bytes, WatchToken)],
    ) -> Option<Result<Vec<Frame>, Held>> {
        let now = now_ms();
        let (mut store, writer, failing) = self.parts();
        if !watches.iter().all(|(k, t)| store.watch_intact(k, *t, now)) {
            return None;
        }
        let mut effects: Vec<Vec<Bytes>> = Vec::new();
        // Room was made before the transaction started (`Shard::make_room`).
        store.set_memory_checks(false);
        let frames = run_cmds(&mut store, cmds, now, failing.as_deref(), |_, _, e| {
            effects.extend(e.iter().cloned());
        });
        store.set_memory_checks(true);
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
            writer,
            lsn,
        }))
    }

    /// Runs a single-shard transaction on `target`. `None`: a watched key changed.
    pub async fn run_atomic(
        self: &Rc<Self>,
        target: usize,
        cmds: Vec<Vec<Bytes>>,
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
            return Some(vec![Frame::StaticError(GONE); n]);
        }
        rx.await
            .unwrap_or_else(|_| Some(vec![Frame::StaticError(GONE); n]))
    }

    /// Step 1: takes `target`'s lock for `txid` (waits while another transaction holds it).
    pub async fn tx_lock(self: &Rc<Self>, target: usize, txid: TxId) {
        if target == self.id() {
            if self.lock_holder.get().is_none() && !self.handoff.get() {
                self.lock_holder.set(Some(txid));
                return;
            }
            let (tx, rx) = oneshot::channel();
            self.deferred
                .borrow_mut()
                .push_back(Deferred::Lock(txid, tx));
            let _ = rx.await;
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.send(target, Message::TxLock { txid, reply: tx }).await {
            let _ = rx.await;
        }
    }

    /// Step 2: runs `cmds` on `target` (locked by `tx`).
    pub async fn tx_exec(
        self: &Rc<Self>,
        target: usize,
        tx: Tx,
        cmds: Vec<Vec<Bytes>>,
    ) -> Vec<Frame> {
        if target == self.id() {
            return self.tx_exec_here(tx, &cmds);
        }
        let n = cmds.len();
        let (reply, rx) = oneshot::channel();
        if !self.send(target, Message::TxExec { tx, cmds, reply }).await {
            return vec![Frame::StaticError(GONE); n];
        }
        rx.await
            .unwrap_or_else(|_| vec![Frame::StaticError(GONE); n])
    }

    /// Step 3 on `target`. `writers`: the shards that may have changed something (each logs a
    /// part, even an empty one, so that recovery finds every part it names).
    pub async fn tx_commit(
        self: &Rc<Self>,
        target: usize,
        txid: TxId,
        writers: Vec<usize>,
    ) -> Result<(), CommitFailure> {
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
            return Err(CommitFailure::Part(GONE.into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(CommitFailure::Part(GONE.into())))
    }

    /// Step 4 on `target`.
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
        cmds: Vec<Vec<Bytes>>,
    ) -> Vec<Frame> {
        match tx {
            Some(tx) => self.tx_exec(target, tx, cmds).await,
            None => self.run_batch(target, cmds).await,
        }
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::{recovery_plan, Part};

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
