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

/// A transaction's identity: unique across shards and restarts (the boot time is part of it),
/// so recovery can match the parts of one transaction in different shards' logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxId {
    boot_ms: u64,
    shard: u32,
    n: u64,
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.boot_ms, self.shard, self.n)
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

/// Recovery, first pass: the transaction parts in one log file, as (txid, shards it names).
/// Reads only; a damaged file yields what precedes the damage (replay reports the damage).
pub fn transaction_parts(path: &std::path::Path) -> std::io::Result<Vec<(String, Vec<usize>)>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut parts = Vec::new();
    let _ = moon_aof::reader::scan::<()>(&data, |_lsn, payload, _offset| {
        if TXPART_PREFIXES.iter().any(|p| payload.starts_with(p)) {
            if let Some(header) =
                moon_aof::decode_payload(payload).and_then(|g| g.into_iter().next())
            {
                if let (Some(id), Some(shards)) = (header.get(1), header.get(2)) {
                    let shards = String::from_utf8_lossy(shards)
                        .split(',')
                        .filter_map(|s| s.parse().ok())
                        .collect();
                    parts.push((String::from_utf8_lossy(id).into_owned(), shards));
                }
            }
        }
        Ok(())
    });
    Ok(parts)
}

/// Recovery: from every shard's transaction parts, the ids whose every named shard has its part.
pub fn complete_transactions(
    per_shard: &[Vec<(String, Vec<usize>)>],
) -> std::collections::HashSet<String> {
    let mut seen: std::collections::HashMap<&str, (&[usize], Vec<usize>)> =
        std::collections::HashMap::new();
    for (shard, parts) in per_shard.iter().enumerate() {
        for (id, named) in parts {
            seen.entry(id.as_str())
                .or_insert((named.as_slice(), Vec::new()))
                .1
                .push(shard);
        }
    }
    seen.into_iter()
        .filter(|(_, (named, have))| named.iter().all(|n| have.contains(n)))
        .map(|(id, _)| id.to_string())
        .collect()
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

/// Replays the log file at `path` into `store` — what [`Shard::replay`] does at startup, as a
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
) -> Result<(moon_aof::ReplayReport, u64), moon_aof::AofError> {
    store.set_record_writes(false);
    let limit = store.max_string_len();
    store.set_max_string_len(usize::MAX);
    let mut skipped = 0;
    let report = moon_aof::replay_file(path, |_lsn, group| match applicable(group, complete) {
        Some(cmds) => {
            for cmd in cmds {
                store.execute(&cmd, moon_store::NO_EXPIRY_CHECK);
            }
        }
        None => skipped += 1,
    });
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
            boot_ms: self.boot_ms,
            shard: self.id() as u32,
            n,
        }
    }

    /// Resolves once no transaction holds this shard.
    pub(crate) async fn wait_unlocked(&self) {
        while self.lock_holder.get().is_some() {
            let (tx, rx) = oneshot::channel();
            self.deferred.borrow_mut().push_back(Deferred::Wake(tx));
            let _ = rx.await;
        }
    }

    /// Releases the lock held by `txid` and runs what was deferred, in order, until the queue
    /// is empty or another transaction takes the lock.
    pub(crate) fn unlock_here(self: &Rc<Self>, txid: TxId) {
        if self.lock_holder.get() != Some(txid) {
            return;
        }
        self.lock_holder.set(None);
        self.tx_effects.borrow_mut().clear();
        while self.lock_holder.get().is_none() {
            let Some(next) = self.deferred.borrow_mut().pop_front() else {
                break;
            };
            match next {
                Deferred::Msg(m) => Shard::handle(self, m),
                Deferred::Wake(w) => {
                    let _ = w.send(());
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
        let (mut store, writer) = self.parts();
        let failing = writer.as_ref().and_then(|w| w.error());
        let mut effects = self.tx_effects.borrow_mut();
        run_cmds(&mut store, cmds, tx.now, failing.as_deref(), |_, _, e| {
            effects.extend(e.iter().cloned())
        })
    }

    /// Step 3 on this shard: logs the buffered effects as one record (a `MOON.TXPART` group when
    /// two or more shards are `writers`; this shard logs one whenever it is named, even with
    /// no effects) and waits until the log is safe up to the shard's latest LSN (which also
    /// covers what the transaction read).
    pub(crate) async fn tx_commit_here(&self, txid: TxId, writers: &[usize]) -> Result<(), String> {
        let effects = std::mem::take(&mut *self.tx_effects.borrow_mut());
        let Some(writer) = self.parts().1 else {
            return Ok(());
        };
        let named = writers.contains(&self.id());
        if effects.is_empty() && !(named && writers.len() >= 2) {
            // A read-only part: wait for what it may have read, but a failing log does not
            // make a read fail (reads keep working, as outside transactions).
            let _ = writer.wait(writer.last_assigned()).await;
            return Ok(());
        }
        writer.append(&part_record(&txid.to_string(), writers, effects));
        writer.wait(writer.last_assigned()).await
    }

    /// Single-shard MULTI/EXEC: `None` if a watched key changed (nothing ran); otherwise the
    /// replies, now or held for the one record holding all the effects.
    pub(crate) fn execute_atomic(
        &self,
        cmds: &[Vec<Bytes>],
        watches: &[(Bytes, WatchToken)],
    ) -> Option<Result<Vec<Frame>, Held>> {
        let now = now_ms();
        let (mut store, writer) = self.parts();
        if !watches.iter().all(|(k, t)| store.watch_intact(k, *t, now)) {
            return None;
        }
        let failing = writer.as_ref().and_then(|w| w.error());
        let mut effects: Vec<Vec<Bytes>> = Vec::new();
        let mut wrote = Vec::new();
        let frames = run_cmds(&mut store, cmds, now, failing.as_deref(), |i, w, e| {
            effects.extend(e.iter().cloned());
            if w {
                wrote.push(i);
            }
        });
        let Some(writer) = writer else {
            return Some(Ok(frames));
        };
        if !effects.is_empty() {
            writer.append(&effects);
        }
        let lsn = writer.last_assigned();
        if failing.is_none() && writer.is_safe(lsn) {
            return Some(Ok(frames));
        }
        Some(Err(Held {
            frames,
            writer,
            lsn,
            wrote,
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
            self.wait_unlocked().await;
            return match self.execute_atomic(&cmds, &watches)? {
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
            if self.lock_holder.get().is_none() {
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
    ) -> Result<(), String> {
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
            return Err(GONE.into());
        }
        rx.await.unwrap_or_else(|_| Err(GONE.into()))
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
