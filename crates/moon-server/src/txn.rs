//! MULTI/EXEC/DISCARD/WATCH/UNWATCH on a connection, and the coordinator that runs a
//! transaction — an EXEC, or one multi-key command whose keys span shards — across shards.
//!
//! The protocol between shards (locks taken in ascending shard order, execution under the
//! locks, one logged and held part per shard, whose commit unlocks, then the release of the
//! holds once every part is safe) lives in `moon_shard::txn`; the design and
//! why each crash instant is safe are in `docs/TRANSACTIONS.md`. This module decides which
//! shards take part and builds Redis's replies.

use bytes::{BufMut, Bytes, BytesMut};
use moon_proto::Frame;
use moon_shard::CommitFailure;
use moon_shard::{join_all, now_ms};
use moon_store::command::{Merge, Spread};
use moon_store::slot::shard_for_key;
use moon_store::WatchToken;

use crate::dispatch::{max_record, record_size, too_large_to_log, Parsed, Request, Target};
use crate::session::Reply as _;
use crate::session::Session;

/// WATCH: remembers what each key looks like now, on its shard.
pub async fn watch(session: &mut Session, keys: &[Bytes]) -> Frame {
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    for key in keys {
        let s = shard_for_key(key, n);
        let k = key.clone();
        let db = session.db;
        let token = shard
            .call_on_unlocked(s, move |sh| {
                sh.store().in_db(db, |st| st.watch(&k, now_ms()))
            })
            .await
            .flatten();
        match token {
            Some(t) => session.multi.watches.push((key.clone(), s, t)),
            None => return Frame::StaticError(moon_shard::SHARD_GONE),
        }
    }
    Frame::OK
}

/// UNWATCH (also after EXEC and DISCARD, and when the connection closes).
pub async fn unwatch_all(session: &mut Session) {
    let watches = std::mem::take(&mut session.multi.watches);
    if watches.is_empty() {
        return;
    }
    let shard = session.ctx.shard.clone();
    let calls: Vec<_> = watches
        .into_iter()
        .map(|(k, s, t)| shard.call_on(s, move |sh| sh.store().unwatch(&k, t)))
        .collect();
    join_all(calls).await;
}

/// How a transaction runs its commands: the connection's request processing
/// (`conn::process`), handed down by the loop above so that this module never imports it.
pub type Process = for<'a> fn(
    &'a mut Session,
    Vec<Parsed>,
    &'a mut BytesMut,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// EXEC: runs the queued commands as one transaction and appends the reply to `out`.
pub async fn exec(session: &mut Session, out: &mut BytesMut, process: Process) {
    let queued = session.multi.queued.take().unwrap_or_default();
    if std::mem::take(&mut session.multi.failed) {
        unwatch_all(session).await;
        Frame::StaticError("EXECABORT Transaction discarded because of previous errors.")
            .reply_to(session, out);
        return;
    }
    let size = record_size(queued.iter());
    if size > max_record() {
        unwatch_all(session).await;
        Frame::Error(format!(
            "EXECABORT Transaction discarded because its effects would take {size} bytes in one AOF record, more than {}",
            max_record()
        ))
        .reply_to(session, out);
        return;
    }
    // A server that became a read-only replica since they were queued (review finding):
    // Redis refuses the EXEC too.
    if session.on_read_only_replica()
        && queued.iter().any(|r| {
            r.spec.is_write() && !crate::replication::script_checks_its_writes(r.spec.name, &r.args)
        })
    {
        unwatch_all(session).await;
        Frame::StaticError(
            "EXECABORT Transaction discarded because of: READONLY You can't write against a read only replica.",
        )
        .reply_to(session, out);
        return;
    }
    if !session.is_master
        && !crate::replication::enough_replicas(&session.ctx.shared)
        && queued.iter().any(|r| {
            r.spec.is_write() && !crate::replication::script_checks_its_writes(r.spec.name, &r.args)
        })
    {
        unwatch_all(session).await;
        Frame::StaticError(
            "EXECABORT Transaction discarded because of: NOREPLICAS Not enough good replicas to write.",
        )
        .reply_to(session, out);
        return;
    }
    // ACL rules may have changed since the commands were queued: checked again, as Redis
    // does at EXEC.
    if !session.user.unrestricted() {
        let denied = queued
            .iter()
            .find_map(|r| session.user.check(r.spec, &r.args).err());
        if let Some((why, object)) = denied {
            let _ = crate::acl_cmd::deny(session, why, &object);
            unwatch_all(session).await;
            Frame::StaticError("NOPERM ACLs rules changed between the moment the transaction was accumulated and its execution")
                .reply_to(session, out);
            return;
        }
    }
    let watches = std::mem::take(&mut session.multi.watches);
    run(
        session,
        queued.into_iter().map(Ok).collect(),
        watches,
        true,
        out,
        process,
    )
    .await;
}

/// Runs `cmds` atomically and in isolation, appending the reply to `out`: with `wrap`, the
/// EXEC reply (an array of their replies, or a null array if a watched key changed);
/// without, the single command's own reply (an implicit transaction).
pub async fn run(
    session: &mut Session,
    cmds: Vec<Parsed>,
    watches: Vec<(Bytes, usize, WatchToken)>,
    wrap: bool,
    out: &mut BytesMut,
    process: Process,
) {
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    let count = cmds.len();
    // Which commands write where (decided before they run: no extra round trip afterwards).
    // A refused request touches no shard.
    let cmds_meta: Vec<(bool, Option<Vec<usize>>)> = cmds
        .iter()
        .map(|c| match c {
            Ok(req) => (req.is_write(), req.shards()),
            Err(_) => (false, Some(Vec::new())),
        })
        .collect();
    let mut participants: Vec<usize> = watches.iter().map(|w| w.1).collect();
    if cmds_meta.iter().any(|(_, shards)| shards.is_none()) {
        participants = (0..n).collect();
    } else {
        participants.extend(cmds_meta.iter().flat_map(|(_, s)| s.iter().flatten()));
    }
    participants.sort_unstable();
    participants.dedup();
    // The shards where a command that may grow memory runs: each makes room under maxmemory
    // once, before anything runs, or the whole transaction is refused with OOM (as Redis
    // checks EXEC, never a command halfway through it).
    let grows: Vec<usize> = if session.ctx.shared.config().maxmemory == 0 {
        Vec::new()
    } else {
        let mut g: Vec<usize> = cmds
            .iter()
            .flatten()
            .filter(|r| r.spec.may_grow_memory())
            .flat_map(|r| r.shards().unwrap_or_else(|| participants.clone()))
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    };

    // One shard and only commands its store runs by itself: an atomic batch, no locks. (Not
    // for a tracking client: its reads carry its tracking reader, which the path through
    // `process` below adds.)
    if participants.len() == 1
        && session.info.tracking.borrow().is_none()
        && cmds
            .iter()
            .all(|c| c.as_ref().is_ok_and(Request::runs_in_store))
    {
        let target = participants[0];
        if !grows.is_empty() {
            let now = now_ms();
            let room = shard
                .call_on_unlocked(target, move |s| s.make_room(now))
                .await
                .unwrap_or(false);
            if !room {
                unwatch(session, watches).await;
                refusal(wrap, oom()).reply_to(session, out);
                return;
            }
        }
        let db = session.db;
        let client = session.caller();
        let calls = cmds
            .into_iter()
            .flatten()
            .filter_map(|r| r.into_call(db, None, client).ok())
            .map(|c| crate::acl_cmd::for_script(session, c))
            .collect();
        let tokens = watches.iter().map(|(k, _, t)| (k.clone(), *t)).collect();
        let result = shard.run_atomic(target, calls, tokens).await;
        unwatch(session, watches).await;
        let frame = match result {
            None => Frame::NullArray,
            Some(frames) if wrap => Frame::Array(frames),
            Some(mut frames) => frames.pop().unwrap_or(Frame::Null),
        };
        frame.reply_to(session, out);
        return;
    }

    // One split command (MSET, DEL, MGET... over several shards), nothing watched, no room to
    // make: the last shard in lock order is locked, runs its part and commits in one exchange.
    if !wrap && watches.is_empty() && grows.is_empty() && session.info.tracking.borrow().is_none() {
        if let [Ok(req)] = &cmds[..] {
            if matches!(req.target, Target::Shards(_)) && matches!(req.spread(), Spread::Split(_)) {
                let writers = writers_of(&cmds_meta, &participants);
                if let Some(Ok(req)) = cmds.into_iter().next() {
                    run_split(session, req, participants, writers, out).await;
                }
                return;
            }
        }
    }

    // Across shards: lock in ascending order, check watches, execute, commit, unlock.
    let txid = shard.new_txid();
    // Each lock comes back with its shard's log error, if that log is failing.
    let locking = std::time::Instant::now();
    let log_errors: Vec<(usize, Option<String>)> = participants
        .iter()
        .copied()
        .zip(shard.tx_lock_all(&participants, txid).await)
        .collect();
    lock_waited(locking);
    // One clock for the whole transaction, read once every shard is held: nothing that ran
    // before it on those shards saw a later time.
    let tx = moon_shard::Tx {
        id: txid,
        now: now_ms(),
    };
    let mut intact = true;
    for (k, s, t) in &watches {
        let (k, t) = (k.clone(), *t);
        intact &= shard
            .call_on(*s, move |sh| sh.store().watch_intact(&k, t, tx.now))
            .await
            == Some(true);
    }
    let writers = writers_of(&cmds_meta, &participants);
    // A shard whose log is failing would refuse its writes (MISCONF) while the others commit
    // theirs: refuse the whole transaction before anything runs.
    let mut failing = None;
    if intact {
        failing = log_errors
            .into_iter()
            .filter(|(p, _)| writers.contains(p))
            .find_map(|(_, error)| error);
    }
    // A RENAME or COPY across shards is logged as the value's rewrite form, which its arguments
    // do not show: bound the record by the value as it is now (under the locks) plus all the
    // transaction's earlier writes could add to it.
    let mut too_large = None;
    if intact && failing.is_none() {
        let mut bound = record_size(cmds.iter().flatten());
        let mut written_before = 0usize;
        // The database each command runs in: SELECT inside MULTI changes it for what follows.
        let mut db = session.db;
        for req in cmds.iter().flatten() {
            if req.spec.name == "select" {
                db = moon_store::Store::parse_int(&req.args[1]).map_or(db, |d| d.max(0) as usize);
            }
            let cross_rename = matches!(req.target, Target::Shards(_))
                && req.spread() == Spread::Coordinated
                && matches!(req.spec.name, "rename" | "renamenx" | "copy");
            if cross_rename {
                let src = req.args[1].clone();
                let len = shard
                    .call_on(shard_for_key(&src, n), move |sh| {
                        sh.store()
                            .in_db(db, |st| st.peek_entry(&src, tx.now))
                            .flatten()
                            .map_or(0, |(v, _)| v.mem_size())
                    })
                    .await
                    .unwrap_or(0);
                bound = bound.saturating_add(len + written_before + req.args[2].len() + 64);
            }
            if req.is_write() {
                written_before += req.args.iter().map(|a| a.len()).sum::<usize>();
            }
        }
        if bound > max_record() {
            too_large = Some(bound);
        }
    }
    let mut out_of_memory = false;
    if intact && failing.is_none() && too_large.is_none() {
        for &g in &grows {
            out_of_memory |= !shard
                .call_on(g, move |s| s.make_room(tx.now))
                .await
                .unwrap_or(false);
        }
    }
    let mut inner = BytesMut::new();
    let mut refused = Vec::new();
    // The commit unlocks every participant; a transaction that stops before it unlocks below.
    let mut unlocked = false;
    if failing.is_some() || too_large.is_some() || out_of_memory {
        refused = cmds;
    } else if intact {
        session.tx = Some(tx);
        process(session, cmds, &mut inner).await;
        session.tx = None;
        let commits = shard
            .tx_commit_all(participants.clone(), txid, writers.clone(), Vec::new())
            .await;
        unlocked = true;
        // A part that could not be logged stopped the server inside the commit (crash-only,
        // `moon_shard::txn`). Only reads can fail here: their log could not make safe what
        // they read.
        if let Some(CommitFailure::Read(cause) | CommitFailure::Part(cause)) =
            commits.into_iter().find_map(Result::err)
        {
            failing = Some(cause);
            inner.clear();
        }
    }
    if !unlocked {
        for &p in &participants {
            shard.tx_unlock(p, txid).await;
        }
    }
    unwatch(session, watches).await;
    // Publications of the transaction: delivered only now that every part is durable, and
    // never if it did not commit (`Plan::flush` held them).
    let held = std::mem::take(&mut session.held_publications);
    let committed = intact && !out_of_memory && too_large.is_none() && failing.is_none();
    if committed && !held.is_empty() {
        inner = deliver_held(session, held, inner).await;
    }
    if !intact {
        Frame::NullArray.reply_to(session, out);
    } else if out_of_memory {
        if wrap || count == 1 {
            refusal(wrap, oom()).reply_to(session, out);
        } else {
            // A pipeline run as one implicit transaction: each command on its own instead —
            // reads and deletions keep working, writes get their own OOM.
            for c in refused {
                process(session, vec![c], out).await;
            }
        }
    } else if let Some(size) = too_large {
        if wrap {
            Frame::Error(format!(
                "EXECABORT Transaction discarded because its effects could take {size} bytes in one AOF record, more than {}",
                max_record()
            ))
            .reply_to(session, out);
        } else if count == 1 {
            too_large_to_log(size).reply_to(session, out);
        } else {
            for c in refused {
                process(session, vec![c], out).await;
            }
        }
    } else if let Some(cause) = failing {
        let error = Frame::Error(format!("MISCONF Errors writing to the AOF file: {cause}"));
        if wrap || count == 1 {
            refusal(wrap, error).reply_to(session, out);
        } else if refused.is_empty() {
            // It ran, and what its reads saw could not be made safe: one error per request.
            for _ in 0..count {
                error.reply_to(session, out);
            }
        } else {
            // A pipeline run as one implicit transaction: run its commands one by one
            // instead, so each gets its own reply — reads keep working, a cross-shard write
            // is refused as above.
            for c in refused {
                process(session, vec![c], out).await;
            }
        }
    } else if wrap {
        out.put_slice(format!("*{count}\r\n").as_bytes());
        out.put_slice(&inner);
    } else {
        out.put_slice(&inner);
    }
}

/// One split command whose keys span `participants` (at least two shards), as a
/// transaction. MSET (parts that answer OK whatever they find), with a log on every shard and
/// none failing: one run chain ([`moon_shard::Shard::tx_run_chain`]), each part run and
/// committed as it passes, no shard locked across shards. Otherwise one lock chain locks
/// every participant in ascending order and the last runs its part and commits in the same
/// visit ([`moon_shard::Shard::tx_lock_run_last`]: refused there if a writer's log is
/// failing, before anything ran anywhere); then each of the others runs its part and commits
/// in one exchange ([`moon_shard::Shard::tx_exec_commit`]). The reply waits, as in [`run`]'s
/// general path, until every part is safe (docs/TRANSACTIONS.md).
async fn run_split(
    session: &mut Session,
    req: Request,
    participants: Vec<usize>,
    writers: Vec<usize>,
    out: &mut BytesMut,
) {
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    let Some((&last, first)) = participants.split_last() else {
        return;
    };
    let mut plan = crate::plan::Plan::new(n);
    let (step, merge) = (req.spec.step.max(1) as usize, req.spread());
    let Spread::Split(merge) = merge else {
        return;
    };
    match req.into_call(session.db, None, session.caller()) {
        Ok(call) => plan.split(call, step, merge),
        Err(req) => {
            moon_store::reply::unknown_command(&req.args).reply_to(session, out);
            return;
        }
    }
    let mut batches = plan.take_batches();
    let txid = shard.new_txid();
    let mut tx = moon_shard::Tx {
        id: txid,
        now: now_ms(),
    };
    let mut replies: Vec<Vec<Frame>> = vec![Vec::new(); n];
    let mut parts = Vec::with_capacity(participants.len());
    if matches!(merge, Merge::Ok) && shard.can_run_chains() {
        // Parts that answer OK whatever they find (MSET): each runs and commits as the chain
        // passes its shard, none waits for another under a lock.
        let ran = match shard
            .tx_run_chain(&participants, tx, batches, writers.clone())
            .await
        {
            Ok(ran) => ran,
            Err(cause) => {
                refused_before_running(Some(cause)).reply_to(session, out);
                return;
            }
        };
        for (p, frames, part) in ran {
            replies[p] = frames;
            parts.push((p, part));
        }
    } else {
        let batch = std::mem::take(&mut batches[last]);
        let locking = std::time::Instant::now();
        let (errors, ran) = shard
            .tx_lock_run_last(&participants, tx, batch, writers.clone())
            .await;
        lock_waited(locking);
        let failing = first
            .iter()
            .zip(errors)
            .find_map(|(p, e)| e.filter(|_| writers.contains(p)));
        let ran = match (failing, ran) {
            (None, Ok(ran)) => ran,
            (failing, ran) => {
                // Refused before anything ran: unlock what was locked.
                for &p in first {
                    shard.tx_unlock(p, txid).await;
                }
                refused_before_running(failing.or(ran.err())).reply_to(session, out);
                return;
            }
        };
        let moon_shard::LastPart { frames, now, part } = ran;
        // The others run at the time the last shard ran at (see `tx_lock_run_last`).
        tx.now = now;
        replies[last] = frames;
        parts.push((last, part));
        // Each of the others runs its part and commits in one exchange.
        let runs: Vec<_> = first
            .iter()
            .map(|&p| shard.tx_exec_commit(p, tx, std::mem::take(&mut batches[p]), writers.clone()))
            .collect();
        for (&p, (r, part)) in first.iter().zip(join_all(runs).await) {
            replies[p] = r;
            parts.push((p, part));
        }
    }
    let commits = shard.tx_commit_all(Vec::new(), txid, writers, parts).await;
    // A part that could not be logged stopped the server inside the commit (crash-only);
    // only reads can fail here: their log could not make safe what they read.
    if let Some(CommitFailure::Read(cause) | CommitFailure::Part(cause)) =
        commits.into_iter().find_map(Result::err)
    {
        Frame::Error(format!("MISCONF Errors writing to the AOF file: {cause}"))
            .reply_to(session, out);
        return;
    }
    plan.encode_replies(session, &mut replies, &[], None, out);
}

/// The reply to a split command refused before any part ran: MISCONF with the failing log's
/// cause, or, while the shards are going away, the shard's own reply.
fn refused_before_running(cause: Option<String>) -> Frame {
    match cause {
        Some(cause) if cause != moon_shard::SHARD_GONE => {
            Frame::Error(format!("MISCONF Errors writing to the AOF file: {cause}"))
        }
        _ => Frame::StaticError(moon_shard::SHARD_GONE),
    }
}

/// Publishes the publications a transaction held, in order, and writes each one's receiver
/// count into `replies` at the place its reply belongs.
async fn deliver_held(
    session: &Session,
    held: Vec<(crate::session::Publication, usize)>,
    replies: BytesMut,
) -> BytesMut {
    let (pubs, places): (Vec<_>, Vec<_>) = held.into_iter().unzip();
    let counts = crate::pubsub::publish(&session.ctx.shard, pubs).await;
    let mut out = BytesMut::with_capacity(replies.len() + 12 * places.len());
    let mut from = 0;
    for (i, at) in places.into_iter().enumerate() {
        out.put_slice(&replies[from..at]);
        Frame::Integer(counts.get(i).copied().unwrap_or(0)).encode(session.proto, &mut out);
        from = at;
    }
    out.put_slice(&replies[from..]);
    out
}

fn oom() -> Frame {
    Frame::StaticError(moon_store::reply::OOM)
}

/// The shards a transaction's write commands may change (each logs a part at commit).
fn writers_of(meta: &[(bool, Option<Vec<usize>>)], participants: &[usize]) -> Vec<usize> {
    let mut w: Vec<usize> = Vec::new();
    for (is_write, shards) in meta {
        if *is_write {
            match shards {
                Some(list) => w.extend(list),
                None => w.extend(participants),
            }
        }
    }
    w.sort_unstable();
    w.dedup();
    w
}

/// Ends the watches an EXEC took. An implicit transaction (a command whose keys span shards,
/// outside MULTI) took none and leaves the client's own WATCHes alone (found with Redis's
/// "FLUSHALL does not touch non affected keys": a FLUSHDB across shards dropped them, so the
/// EXEC after it ran).
async fn unwatch(session: &mut Session, watches: Vec<(Bytes, usize, WatchToken)>) {
    if watches.is_empty() {
        return;
    }
    let own = std::mem::replace(&mut session.multi.watches, watches);
    unwatch_all(session).await;
    session.multi.watches = own;
}

/// A transaction refused whole before anything of it ran (OOM, MISCONF): an EXEC says so as
/// Redis's EXEC does (`EXECABORT Transaction discarded because of: ...`); one command run as
/// an implicit transaction answers the error itself.
fn refusal(exec: bool, error: Frame) -> Frame {
    if !exec {
        return error;
    }
    let why = error.error_text().unwrap_or_default();
    Frame::Error(format!("EXECABORT Transaction discarded because of: {why}"))
}

/// The latency monitor's `cross-shard-lock` event: how long a transaction waited to hold its
/// shards (other transactions holding them, busy executors).
fn lock_waited(since: std::time::Instant) {
    moon_store::latency::sample(
        "cross-shard-lock",
        since.elapsed().as_millis() as u64,
        now_ms() / 1000,
    );
}
