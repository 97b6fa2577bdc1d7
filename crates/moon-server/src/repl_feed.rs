//! The replication stream: every shard's log merged into the one stream of Redis commands a
//! replica applies, with its offsets, its backlog and the replicas attached to it.
//!
//! **Where it comes from.** Each shard's log writer has a tap (`moon_aof::AofWriter::set_tap`)
//! that hears every unit appended, in LSN order, once it is safe under the fsync policy: a
//! replica is sent exactly what a restart of this server would replay, never a write whose
//! client may yet be told MISCONF. Those units land here, one queue per shard, and are merged
//! into the stream under one lock, on whichever shard thread handed them over.
//!
//! **How shards merge.** Two shards' units touch different keys, so any interleaving that
//! keeps each shard's order builds the same data. Two things are not free to interleave:
//! - a cross-shard transaction: its parts (`MOON.TXPART txid shards`, one per writing shard)
//!   go out together, as one MULTI/EXEC, once every part is at the head of its shard's
//!   queue. A replica never holds half of one. Parts are logged under the transaction's
//!   locks, so two transactions sharing shards come in the same order on each: waiting for
//!   every part at the heads never deadlocks.
//! - a mark ([`Feed::snapshot_mark`]): placed on every shard under every shard's lock, when a
//!   replica's full synchronisation copies the keyspaces. Once every shard's mark is at its
//!   head, everything before it is in the stream and nothing after it: the stream offset there
//!   is the snapshot's, and the replica's link starts there.
//!
//! Keyspace-wide commands (FLUSHALL, FLUSHDB, SWAPDB) run on every shard of their
//! transaction, so each part carries them: the parts are merged segment by segment around
//! them and each goes out once, where the transaction ran it.
//!
//! **Offsets** are Redis's: `master_repl_offset` counts every byte ever put in the stream; the
//! backlog keeps the last `repl-backlog-size` bytes for partial resynchronisation (PSYNC
//! `+CONTINUE`). Each attached replica has its own queue of bytes not yet written to it,
//! closed past the replica class's output limit, as Redis disconnects a replica that falls
//! that far behind.
//!
//! State at the bottom of the server's layers: it imports no handler.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use moon_aof::Tapped;

/// How far a replica may fall behind before it is disconnected (Redis's default
/// `client-output-buffer-limit replica 256mb`).
pub const REPLICA_OUTPUT_LIMIT: usize = 256 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One replica's end of the stream: the bytes waiting to be written to it, and what it told
/// us back (REPLCONF ACK).
pub struct Link {
    /// The connection's client id.
    pub client: u64,
    /// The address the replica connects from, and the port it listens on (REPLCONF
    /// listening-port), for INFO and ROLE.
    pub ip: String,
    pub port: AtomicU64,
    pending: Mutex<BytesMut>,
    waker: Mutex<Option<Waker>>,
    closed: AtomicBool,
    /// The stream offset the replica last acknowledged, and when (Unix ms).
    pub ack: AtomicU64,
    pub ack_at: AtomicU64,
    /// The offset it acknowledged as fsynced in its own AOF (REPLCONF ACK ... FACK, WAITAOF).
    pub fack: AtomicU64,
    /// Set once the replica's full synchronisation was sent (INFO `state=online`).
    pub online: AtomicBool,
}

impl Link {
    pub fn new(client: u64, ip: String, port: u64) -> Arc<Link> {
        Arc::new(Link {
            client,
            ip,
            port: AtomicU64::new(port),
            pending: Mutex::new(BytesMut::new()),
            waker: Mutex::new(None),
            closed: AtomicBool::new(false),
            ack: AtomicU64::new(0),
            ack_at: AtomicU64::new(0),
            fack: AtomicU64::new(0),
            online: AtomicBool::new(false),
        })
    }

    /// Resolves once there are bytes to write (or the link was closed).
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            if !lock(&self.pending).is_empty() || self.is_closed() {
                return Poll::Ready(());
            }
            *lock(&self.waker) = Some(cx.waker().clone());
            // Bytes may have come between the look and the waker's registration.
            if !lock(&self.pending).is_empty() || self.is_closed() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }

    /// Moves the waiting bytes to the end of `out`.
    pub fn drain_into(&self, out: &mut BytesMut) {
        let mut p = lock(&self.pending);
        out.extend_from_slice(&p);
        p.clear();
    }

    /// The replica fell [`REPLICA_OUTPUT_LIMIT`] behind: its connection must close.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn push(&self, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        {
            let mut p = lock(&self.pending);
            if p.len() + bytes.len() > REPLICA_OUTPUT_LIMIT {
                p.clear();
                self.closed.store(true, Ordering::Release);
                tracing::warn!(
                    client = self.client,
                    "disconnecting a replica that fell {REPLICA_OUTPUT_LIMIT} bytes behind the stream"
                );
            } else {
                p.extend_from_slice(bytes);
            }
        }
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }
}

/// A reader waiting for the stream to take in everything queued when it asked (WAIT).
struct Flush {
    /// Per shard: how many units must have left its queue.
    upto: Vec<u64>,
    tx: oneshot::Sender<u64>,
}

struct State {
    /// Per shard, what its tap handed over and the merge has not yet taken.
    heads: Vec<VecDeque<Tapped>>,
    /// Per shard, how many items the merge took from its queue.
    taken: Vec<u64>,
    /// The database the stream last selected (`None`: none yet, the next command selects).
    stream_db: Option<usize>,
    /// The last bytes of the stream: `(backlog_start, offset]`.
    backlog: VecDeque<u8>,
    backlog_start: u64,
    backlog_size: usize,
    offset: u64,
    /// Snapshot marks not yet reached on every shard: the link to attach there, and who
    /// waits for the offset.
    marks: HashMap<u64, (Arc<Link>, oneshot::Sender<u64>)>,
    /// Marks given up on (their synchronisation failed), with how many shards' copies of
    /// each were dropped so far: a copy that still comes is dropped too.
    abandoned: HashMap<u64, usize>,
    links: Vec<Arc<Link>>,
    flushes: Vec<Flush>,
}

/// The server's replication stream (see the module comment). One per server, in `Shared`.
pub struct Feed {
    state: Mutex<State>,
    /// `master_repl_offset`, readable without the lock.
    offset: AtomicU64,
    /// Per shard: its log's tap is installed (installed on the shard's own thread).
    tapped: Vec<AtomicBool>,
    next_mark: AtomicU64,
    /// INFO's `sync_full`, `sync_partial_ok`, `sync_partial_err`.
    pub syncs: SyncCounts,
}

#[derive(Default)]
pub struct SyncCounts {
    pub full: AtomicU64,
    pub partial_ok: AtomicU64,
    pub partial_err: AtomicU64,
}

impl Feed {
    pub fn new(shards: usize, backlog_size: usize) -> Feed {
        Feed {
            state: Mutex::new(State {
                heads: (0..shards).map(|_| VecDeque::new()).collect(),
                taken: vec![0; shards],
                stream_db: None,
                backlog: VecDeque::new(),
                backlog_start: 0,
                backlog_size,
                offset: 0,
                marks: HashMap::new(),
                abandoned: HashMap::new(),
                links: Vec::new(),
                flushes: Vec::new(),
            }),
            offset: AtomicU64::new(0),
            tapped: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            next_mark: AtomicU64::new(1),
            syncs: SyncCounts::default(),
        }
    }

    /// Starts the stream at `offset` rather than 0, if it does not exist yet (a promoted
    /// replica continues the offsets it applied).
    pub fn start_at(&self, offset: u64) {
        let mut st = lock(&self.state);
        if self.active() || st.offset != 0 {
            return;
        }
        st.offset = offset;
        st.backlog_start = offset;
        self.offset.store(offset, Ordering::Release);
    }

    /// `master_repl_offset`.
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Acquire)
    }

    /// Whether the stream exists (a replica connected once): Redis's `repl_backlog_active`.
    pub fn active(&self) -> bool {
        self.tapped.iter().any(|t| t.load(Ordering::Acquire))
    }

    /// Whether shard `shard`'s tap is installed; sets it (call on that shard's thread, under
    /// the snapshot's locks, which serialise the calls).
    pub fn tap_installed(&self, shard: usize) -> bool {
        self.tapped
            .get(shard)
            .is_some_and(|t| t.swap(true, Ordering::AcqRel))
    }

    /// What shard `shard`'s tap calls.
    pub fn hear(&self, shard: usize, item: Tapped) {
        let mut st = lock(&self.state);
        if let Tapped::Mark(id) = item {
            if let Some(n) = st.abandoned.get_mut(&id) {
                // A mark given up on: dropped as it comes.
                *n += 1;
                if *n >= st.heads.len() {
                    st.abandoned.remove(&id);
                }
                return;
            }
        }
        if let Some(q) = st.heads.get_mut(shard) {
            q.push_back(item);
        }
        self.merge(&mut st);
    }

    /// A new mark id, and the registration of `link` to be attached where every shard's mark
    /// is reached; the receiver gets that stream offset.
    pub fn snapshot_mark(&self, link: Arc<Link>) -> (u64, oneshot::Receiver<u64>) {
        let id = self.next_mark.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.state).marks.insert(id, (link, tx));
        (id, rx)
    }

    /// Attaches `link` for a partial resynchronisation (PSYNC `+CONTINUE`) of a replica that
    /// holds the stream up to offset `from`: the backlog's bytes after it are queued to it at
    /// once, and the stream's next ones follow. `None` when the backlog no longer holds them
    /// (or the stream never existed).
    pub fn attach_at(&self, link: &Arc<Link>, from: u64) -> Option<()> {
        let mut st = lock(&self.state);
        if !self.active() || from < st.backlog_start || from > st.offset {
            return None;
        }
        let skip = (from - st.backlog_start) as usize;
        let (a, b) = st.backlog.as_slices();
        let mut tail = Vec::with_capacity(st.backlog.len() - skip);
        if skip < a.len() {
            tail.extend_from_slice(&a[skip..]);
            tail.extend_from_slice(b);
        } else {
            tail.extend_from_slice(&b[skip - a.len()..]);
        }
        link.push(&tail);
        link.online.store(true, Ordering::Release);
        st.links.push(link.clone());
        Some(())
    }

    /// The link's connection ended: stop feeding it (and give up its synchronisation's mark,
    /// if it is still waiting for one).
    pub fn detach(&self, link: &Arc<Link>) {
        let pending: Vec<u64> = {
            let mut st = lock(&self.state);
            st.links.retain(|l| !Arc::ptr_eq(l, link));
            st.marks
                .iter()
                .filter(|(_, (l, _))| Arc::ptr_eq(l, link))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in pending {
            self.abandon(id);
        }
    }

    /// Gives up mark `id` (its synchronisation failed: a shard's log failed before the mark
    /// was safe, or the replica left): wherever it is, or comes later, it holds nothing back.
    pub fn abandon(&self, id: u64) {
        let mut st = lock(&self.state);
        if st.marks.remove(&id).is_none() && !st.abandoned.contains_key(&id) {
            return; // reached already: nothing is held back by it
        }
        let mut dropped = st.abandoned.remove(&id).unwrap_or(0);
        for s in 0..st.heads.len() {
            let before = st.heads[s].len();
            st.heads[s].retain(|t| *t != Tapped::Mark(id));
            let gone = before - st.heads[s].len();
            dropped += gone;
            st.taken[s] += gone as u64;
        }
        if dropped < st.heads.len() {
            st.abandoned.insert(id, dropped);
        }
        self.merge(&mut st);
    }

    /// The replicas attached now.
    pub fn links(&self) -> Vec<Arc<Link>> {
        lock(&self.state).links.clone()
    }

    /// (first byte's offset, bytes held) of the backlog, Redis's
    /// `repl_backlog_first_byte_offset` and `repl_backlog_histlen`.
    pub fn backlog(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.backlog_start + 1, st.backlog.len() as u64)
    }

    pub fn set_backlog_size(&self, size: usize) {
        let mut st = lock(&self.state);
        st.backlog_size = size;
        trim(&mut st);
    }

    /// Puts a command that touches no key (PING, `REPLCONF GETACK *`) into the stream now.
    pub fn command(&self, args: &[&[u8]]) {
        let mut st = lock(&self.state);
        if !self.active() {
            return;
        }
        let mut out = Vec::new();
        encode(&mut out, args.iter().copied());
        emit(&mut st, &self.offset, &out);
    }

    /// Resolves with the stream offset once every unit the taps handed over so far is in the
    /// stream (WAIT's target: every write already acknowledged to anyone is behind it).
    pub fn flushed(&self) -> oneshot::Receiver<u64> {
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&self.state);
        let upto = st
            .heads
            .iter()
            .zip(&st.taken)
            .map(|(q, t)| t + q.len() as u64)
            .collect();
        st.flushes.push(Flush { upto, tx });
        resolve_flushes(&mut st, &self.offset);
        rx
    }

    /// Takes everything that can go out now, in an order that keeps each shard's.
    fn merge(&self, st: &mut State) {
        loop {
            let mut progress = false;
            for shard in 0..st.heads.len() {
                while let Some(front) = st.heads[shard].front() {
                    match front {
                        Tapped::Mark(id) => {
                            let id = *id;
                            let everywhere = st
                                .heads
                                .iter()
                                .all(|q| matches!(q.front(), Some(Tapped::Mark(m)) if *m == id));
                            if !everywhere {
                                break;
                            }
                            for s in 0..st.heads.len() {
                                st.heads[s].pop_front();
                                st.taken[s] += 1;
                            }
                            if let Some((link, tx)) = st.marks.remove(&id) {
                                st.links.push(link);
                                let _ = tx.send(st.offset);
                            }
                            // A replica loading the snapshot starts in database 0 (Redis
                            // selects `repl-stream-db`, 0 in Moon's RDB): the next command
                            // says its database.
                            st.stream_db = None;
                            progress = true;
                        }
                        Tapped::Unit(cmds) => match part_of(cmds) {
                            None => {
                                let Some(Tapped::Unit(cmds)) = st.heads[shard].pop_front() else {
                                    break;
                                };
                                st.taken[shard] += 1;
                                let mut out = Vec::new();
                                encode_commands(&mut out, &mut st.stream_db, &commands(&cmds));
                                emit(st, &self.offset, &out);
                                progress = true;
                            }
                            Some((txid, writers)) => {
                                let whole = writers.iter().all(|&w| {
                                    st.heads.get(w).and_then(|q| q.front()).is_some_and(|f| {
                                        matches!(f, Tapped::Unit(c) if part_of(c).is_some_and(|(t, _)| t == txid))
                                    })
                                });
                                if !whole {
                                    break;
                                }
                                let mut parts = Vec::new();
                                for &w in &writers {
                                    if let Some(Tapped::Unit(c)) = st.heads[w].pop_front() {
                                        st.taken[w] += 1;
                                        parts.push(commands(&c));
                                    }
                                }
                                let mut out = Vec::new();
                                encode_commands(&mut out, &mut st.stream_db, &merge_parts(parts));
                                emit(st, &self.offset, &out);
                                progress = true;
                            }
                        },
                    }
                }
            }
            if !progress {
                break;
            }
        }
        resolve_flushes(st, &self.offset);
    }
}

fn resolve_flushes(st: &mut State, _offset: &AtomicU64) {
    if st.flushes.is_empty() {
        return;
    }
    let taken = st.taken.clone();
    let at = st.offset;
    let flushes = std::mem::take(&mut st.flushes);
    for f in flushes {
        if f.upto.iter().zip(&taken).all(|(u, t)| t >= u) {
            let _ = f.tx.send(at);
        } else {
            st.flushes.push(f);
        }
    }
}

/// Appends `bytes` to the stream: the backlog, and every attached replica's queue.
fn emit(st: &mut State, offset: &AtomicU64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    st.backlog.extend(bytes);
    st.offset += bytes.len() as u64;
    offset.store(st.offset, Ordering::Release);
    trim(st);
    st.links.retain(|l| !l.is_closed());
    for l in &st.links {
        l.push(bytes);
    }
}

fn trim(st: &mut State) {
    if st.backlog.len() > st.backlog_size {
        let drop = st.backlog.len() - st.backlog_size;
        st.backlog.drain(..drop);
        st.backlog_start += drop as u64;
    }
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// A transaction part's id and writing shards (`MOON.TXPART <txid> <shards>` first).
fn part_of(cmds: &[Vec<Bytes>]) -> Option<(Bytes, Vec<usize>)> {
    let head = cmds.first()?;
    if head.len() != 3 || !eq(&head[0], "MOON.TXPART") {
        return None;
    }
    let writers = std::str::from_utf8(&head[2])
        .ok()?
        .split(',')
        .map(|s| s.parse::<usize>().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some((head[1].clone(), writers))
}

/// A unit's commands with their databases: `MOON.DB n` applies to the command after it, a
/// transaction part's header is left out.
fn commands(cmds: &[Vec<Bytes>]) -> Vec<(usize, Vec<Bytes>)> {
    let mut out = Vec::with_capacity(cmds.len());
    let mut db = 0usize;
    for c in cmds {
        match c.first() {
            Some(name) if eq(name, "MOON.DB") => {
                db = c
                    .get(1)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
            }
            Some(name) if eq(name, "MOON.TXPART") => {}
            Some(_) => {
                out.push((db, c.clone()));
                db = 0;
            }
            None => {}
        }
    }
    out
}

/// Whether a command acts on a whole database rather than on its keys: every shard of its
/// transaction runs it.
fn keyspace_wide(cmd: &[Bytes]) -> bool {
    cmd.first()
        .is_some_and(|n| eq(n, "FLUSHALL") || eq(n, "FLUSHDB") || eq(n, "SWAPDB"))
}

/// One transaction's commands from its parts (one per shard, in shard order). The keys of
/// two parts differ, so their commands may go in any order, except around a keyspace-wide
/// command: each part is cut at those, and the pieces between the k-th and (k+1)-th go out
/// together, each keyspace-wide command once.
fn merge_parts(parts: Vec<Vec<(usize, Vec<Bytes>)>>) -> Vec<(usize, Vec<Bytes>)> {
    let split = |p: &Vec<(usize, Vec<Bytes>)>| {
        let mut segments = vec![Vec::new()];
        let mut wide = Vec::new();
        for c in p {
            if keyspace_wide(&c.1) {
                wide.push(c.clone());
                segments.push(Vec::new());
            } else if let Some(last) = segments.last_mut() {
                last.push(c.clone());
            }
        }
        (segments, wide)
    };
    let cut: Vec<_> = parts.iter().map(split).collect();
    let same = cut.windows(2).all(|w| w[0].1 == w[1].1);
    if !same {
        // Never seen: every shard of such a transaction logs the same keyspace-wide
        // commands. Kept whole rather than dropped.
        tracing::warn!(
            "a transaction's parts disagree on FLUSHALL/FLUSHDB/SWAPDB; replicated part by part"
        );
        return parts.into_iter().flatten().collect();
    }
    let wide = cut.first().map(|c| c.1.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for k in 0..=wide.len() {
        for (segments, _) in &cut {
            if let Some(s) = segments.get(k) {
                out.extend(s.iter().cloned());
            }
        }
        if let Some(w) = wide.get(k) {
            out.push(w.clone());
        }
    }
    out
}

/// The stream's bytes for one unit: its commands as RESP arrays, a SELECT where the
/// database changes, and MULTI/EXEC around more than one command.
fn encode_commands(out: &mut Vec<u8>, stream_db: &mut Option<usize>, cmds: &[(usize, Vec<Bytes>)]) {
    if cmds.is_empty() {
        return;
    }
    let wrap = cmds.len() > 1;
    if wrap {
        encode(out, [b"MULTI".as_slice()]);
    }
    for (db, c) in cmds {
        if *stream_db != Some(*db) {
            let n = db.to_string();
            encode(out, [b"SELECT".as_slice(), n.as_bytes()]);
            *stream_db = Some(*db);
        }
        encode(out, c.iter().map(|a| a.as_ref()));
    }
    if wrap {
        encode(out, [b"EXEC".as_slice()]);
    }
}

fn encode<'a>(out: &mut Vec<u8>, args: impl IntoIterator<Item = &'a [u8]> + Clone) {
    let n = args.clone().into_iter().count();
    out.extend_from_slice(format!("*{n}\r\n").as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    fn text(f: &Feed) -> String {
        let st = lock(&f.state);
        let (a, b) = st.backlog.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).replace("\r\n", " ")
    }

    #[test]
    fn units_go_out_with_select_and_multi() {
        let f = Feed::new(2, 1 << 20);
        f.hear(0, Tapped::Unit(vec![c(&["SET", "a", "1"])]));
        f.hear(
            1,
            Tapped::Unit(vec![
                c(&["MOON.DB", "3"]),
                c(&["DEL", "b"]),
                c(&["SET", "c", "2"]),
            ]),
        );
        assert_eq!(
            text(&f),
            "*2 $6 SELECT $1 0 *3 $3 SET $1 a $1 1 *1 $5 MULTI *2 $6 SELECT $1 3 *2 $3 DEL $1 b *2 $6 SELECT $1 0 *3 $3 SET $1 c $1 2 *1 $4 EXEC "
        );
        assert_eq!(f.offset() as usize, lock(&f.state).backlog.len());
    }

    #[test]
    fn a_transaction_waits_for_every_part_and_goes_out_once() {
        let f = Feed::new(2, 1 << 20);
        f.hear(
            0,
            Tapped::Unit(vec![
                c(&["MOON.TXPART", "t1", "0,1"]),
                c(&["SET", "a", "1"]),
            ]),
        );
        assert_eq!(f.offset(), 0, "half a transaction never goes out");
        // Shard 1's earlier unit is not held back by the transaction.
        f.hear(1, Tapped::Unit(vec![c(&["SET", "z", "0"])]));
        let before = f.offset();
        assert!(before > 0);
        f.hear(
            1,
            Tapped::Unit(vec![
                c(&["MOON.TXPART", "t1", "0,1"]),
                c(&["SET", "b", "2"]),
            ]),
        );
        assert!(
            text(&f).ends_with("*1 $5 MULTI *3 $3 SET $1 a $1 1 *3 $3 SET $1 b $1 2 *1 $4 EXEC ")
        );
    }

    #[test]
    fn keyspace_wide_commands_go_out_once_in_their_place() {
        let f = Feed::new(2, 1 << 20);
        // MULTI; SET b (shard 1); FLUSHALL; SET a (shard 0); EXEC
        f.hear(
            0,
            Tapped::Unit(vec![
                c(&["MOON.TXPART", "t", "0,1"]),
                c(&["FLUSHALL"]),
                c(&["SET", "a", "1"]),
            ]),
        );
        f.hear(
            1,
            Tapped::Unit(vec![
                c(&["MOON.TXPART", "t", "0,1"]),
                c(&["SET", "b", "1"]),
                c(&["FLUSHALL"]),
            ]),
        );
        let t = text(&f);
        assert!(
            t.ends_with("*1 $5 MULTI *2 $6 SELECT $1 0 *3 $3 SET $1 b $1 1 *1 $8 FLUSHALL *3 $3 SET $1 a $1 1 *1 $4 EXEC "),
            "{t}"
        );
    }

    #[test]
    fn a_mark_attaches_a_link_where_every_shard_reached_it() {
        let f = Feed::new(2, 1 << 20);
        let link = Link::new(7, "127.0.0.1".into(), 0);
        let (id, mut rx) = f.snapshot_mark(link.clone());
        f.hear(0, Tapped::Unit(vec![c(&["SET", "a", "1"])]));
        f.hear(0, Tapped::Mark(id));
        f.hear(0, Tapped::Unit(vec![c(&["SET", "after", "1"])]));
        f.hear(1, Tapped::Unit(vec![c(&["SET", "b", "1"])]));
        assert!(
            matches!(rx.try_recv(), Ok(None)),
            "not every shard is there yet"
        );
        let at_b = f.offset();
        f.hear(1, Tapped::Mark(id));
        assert_eq!(rx.try_recv().ok().flatten(), Some(at_b));
        let mut got = BytesMut::new();
        link.drain_into(&mut got);
        assert_eq!(
            String::from_utf8_lossy(&got).replace("\r\n", " "),
            "*2 $6 SELECT $1 0 *3 $3 SET $5 after $1 1 "
        );
    }

    #[test]
    fn a_link_attached_at_a_mark_is_told_the_database_first() {
        // Review finding: the stream's selected database leaked across the mark, so a
        // replica attached there applied writes to database 0.
        let f = Feed::new(1, 1 << 20);
        f.hear(
            0,
            Tapped::Unit(vec![c(&["MOON.DB", "3"]), c(&["SET", "a", "1"])]),
        );
        let link = Link::new(7, String::new(), 0);
        let (id, _rx) = f.snapshot_mark(link.clone());
        f.hear(0, Tapped::Mark(id));
        f.hear(
            0,
            Tapped::Unit(vec![c(&["MOON.DB", "3"]), c(&["SET", "b", "2"])]),
        );
        let mut got = BytesMut::new();
        link.drain_into(&mut got);
        assert_eq!(
            String::from_utf8_lossy(&got).replace("\r\n", " "),
            "*2 $6 SELECT $1 3 *3 $3 SET $1 b $1 2 "
        );
    }

    #[test]
    fn an_abandoned_mark_holds_nothing_back() {
        // Review finding: a mark placed on some shards only (another's log failed) stopped
        // the stream for good.
        let f = Feed::new(2, 1 << 20);
        let link = Link::new(7, String::new(), 0);
        let (id, _rx) = f.snapshot_mark(link.clone());
        f.hear(0, Tapped::Mark(id));
        f.hear(0, Tapped::Unit(vec![c(&["SET", "a", "1"])]));
        assert_eq!(f.offset(), 0);
        f.abandon(id);
        let after_first = f.offset();
        assert!(after_first > 0, "shard 0 flows again");
        // The mark that reaches shard 1 late is dropped too.
        f.hear(1, Tapped::Mark(id));
        f.hear(1, Tapped::Unit(vec![c(&["SET", "b", "1"])]));
        assert!(f.offset() > after_first);
        assert!(
            lock(&f.state).abandoned.is_empty(),
            "forgotten once every shard passed it"
        );
        let mut got = BytesMut::new();
        link.drain_into(&mut got);
        assert!(got.is_empty(), "the abandoned link was never attached");
    }

    #[test]
    fn partial_resync_from_the_backlog_and_not_before_it() {
        let f = Feed::new(1, 64);
        let link = Link::new(1, String::new(), 0);
        assert!(f.attach_at(&link, 0).is_none(), "no stream yet");
        assert!(!f.tap_installed(0));
        for i in 0..10 {
            f.hear(0, Tapped::Unit(vec![c(&["SET", "k", &i.to_string()])]));
        }
        let (first, len) = f.backlog();
        assert_eq!(len, 64);
        assert_eq!(first + len - 1, f.offset());
        assert!(f.attach_at(&link, first - 2).is_none());
        assert!(f.attach_at(&link, f.offset() - 10).is_some());
        let mut got = BytesMut::new();
        link.drain_into(&mut got);
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn a_flush_waits_for_what_was_queued() {
        let f = Feed::new(2, 1 << 20);
        f.hear(
            0,
            Tapped::Unit(vec![c(&["MOON.TXPART", "t", "0,1"]), c(&["SET", "a", "1"])]),
        );
        let mut rx = f.flushed();
        assert!(matches!(rx.try_recv(), Ok(None)));
        f.hear(
            1,
            Tapped::Unit(vec![c(&["MOON.TXPART", "t", "0,1"]), c(&["SET", "b", "1"])]),
        );
        assert_eq!(rx.try_recv().ok().flatten(), Some(f.offset()));
    }
}
