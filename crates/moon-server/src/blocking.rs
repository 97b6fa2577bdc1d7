//! Blocking commands on the connection (BLPOP BRPOP BLMOVE BRPOPLPUSH BLMPOP BZPOPMIN BZPOPMAX
//! BZMPOP, outside MULTI): try, wait, try again.
//!
//! A blocking command first runs as any command; in a store it is its non-blocking form
//! (`moon-store/src/store/blocking.rs`), and answers nil when there was nothing to take. Then
//! the connection blocks: it registers a waiter on the shard of every key it waits on
//! (`moon-shard/src/blocked.rs`), stops running the client's later commands (they wait, as in
//! Redis) and waits for a wake, its timeout, CLIENT UNBLOCK, a disconnect or shutdown. No
//! shard is held meanwhile. A wake means a command changed one of its keys and the key holds
//! the type it wants: the connection runs its command again, from the top — a pop on one
//! shard, or a transaction when its keys span shards — so what it takes is logged as the
//! ordinary command it is (LPOP, LMOVE, ZPOPMIN...) and answered once. A retry that finds
//! nothing (a client that was not blocked took the element between the wake and the retry)
//! queues again at the front of that key.
//!
//! The window: a kill -9 after the retry's record is written and before its reply reaches the
//! client loses the reply, never the element's place in the log (it was popped, once). A
//! client that disconnects while blocked is taken off every queue; wakes it received and did
//! not use are passed on to the next waiter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_channel::mpsc::unbounded;
use moon_proto::Frame;
use moon_shard::{Waiter, Woken};
use moon_store::slot::shard_for_key;

use crate::dispatch::Request;
use crate::session::Reply as _;
use crate::session::{Blocked, Session};
use crate::txn::Process;

/// Numbers the blocked calls of this process (waiters are removed by it).
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// The reply of a blocked call that timed out (or CLIENT UNBLOCK ... TIMEOUT): a null array
/// whatever the command, BLMOVE's too (Redis's `replyToBlockedClientTimedOut`; review
/// finding: a null bulk is BLMOVE's nil only inside MULTI).
const TIMED_OUT: Frame = Frame::NullArray;

/// What ended a wait.
pub enum Wakeup {
    /// A key on another shard may serve it: try again.
    Woken,
    /// The key's shard served it: its reply, to come once its record is safe.
    Served(futures_channel::oneshot::Receiver<Frame>),
    TimedOut,
}

/// The nil a blocking command answers with when nothing came: a null bulk for the two that
/// return one element, a null array for the others.
fn nil_of(name: &[u8]) -> Frame {
    if name.eq_ignore_ascii_case(b"blmove") || name.eq_ignore_ascii_case(b"brpoplpush") {
        Frame::Null
    } else {
        Frame::NullArray
    }
}

/// Runs the blocking command `req` once; if it took nothing, blocks the session (the
/// connection then waits: [`next`]).
pub async fn start(session: &mut Session, req: Request, out: &mut BytesMut, process: Process) {
    let args = last_ids_now(session, req.args.clone()).await;
    let req = match crate::dispatch::parse(args.clone(), session.ctx.shard.count()) {
        Ok(req) => req,
        Err(e) => {
            e.reply.reply_to(session, out);
            return;
        }
    };
    let form = match moon_store::blocking_form(&args) {
        Ok(f) => f,
        Err(e) => {
            e.reply_to(session, out);
            return;
        }
    };
    let nil = nil_of(&args[0]);
    let shards = session.ctx.shard.count();
    let (wake, woken) = unbounded();
    let mut b = Blocked {
        args,
        db: session.db,
        id: NEXT_CALL.fetch_add(1, Ordering::Relaxed),
        deadline: (form.timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(form.timeout_ms)),
        wants: form.wants,
        keys: form
            .keys
            .into_iter()
            .map(|k| (shard_for_key(&k, shards), k))
            .collect(),
        wake,
        woken,
        pending: Vec::new(),
        nil,
        served: None,
        silent: session.reply != crate::session::ReplyMode::On,
    };
    let keys: Vec<Bytes> = b.keys.iter().map(|(_, k)| k.clone()).collect();
    let mark = out.len();
    if !try_or_block(session, &mut b, Ok(req), keys, false, out, process).await {
        ended(session, &b, out.get(mark) == Some(&b'-'));
        return;
    }
    session.info.unblock.set(None);
    session.info.blocked.set(true);
    session
        .ctx
        .shared
        .blocked_clients
        .fetch_add(1, Ordering::Relaxed);
    session.blocked = Some(b);
}

/// A blocked XREADGROUP whose retry was refused: its stream went away (deleted, or now of
/// another type) or its group did: Redis's texts for a blocked reader.
async fn ended_read(session: &Session, b: &Blocked, reply: Frame) -> Frame {
    let refused = reply
        .error_text()
        .is_some_and(|e| e.starts_with("NOGROUP") || e.starts_with("WRONGTYPE"));
    if !refused || !b.args[0].eq_ignore_ascii_case(b"xreadgroup") {
        return reply;
    }
    let mut stream_left = false;
    for (shard, key) in &b.keys {
        let (key, db) = (key.clone(), b.db);
        let kind = session
            .ctx
            .shard
            .call_on(*shard, move |s| {
                s.store()
                    .in_db(db, |st| st.type_in(db, &key, moon_shard::now_ms()))
                    .flatten()
            })
            .await
            .flatten();
        stream_left |= kind == Some("stream");
    }
    if stream_left {
        Frame::StaticError("NOGROUP the consumer group this client was blocked on no longer exists")
    } else {
        Frame::StaticError("UNBLOCKED the stream key no longer exists")
    }
}

/// XREAD's `$` ids as the streams' last ids now: its retries after a wake must read from
/// where the call started, not from the stream's end at that later time.
async fn last_ids_now(session: &Session, mut args: Vec<Bytes>) -> Vec<Bytes> {
    if !args[0].eq_ignore_ascii_case(b"xread") {
        return args;
    }
    let range = moon_store::command::streams_keys(&args);
    let shards = session.ctx.shard.count();
    for i in 0..range.len() {
        let at = range.end + i;
        if args[at][..] != b"$"[..] {
            continue;
        }
        let key = args[range.start + i].clone();
        let db = session.db;
        let last = session
            .ctx
            .shard
            .call_on(shard_for_key(&key, shards), move |s| {
                s.store()
                    .in_db(db, |st| st.stream_last_id(&key, moon_shard::now_ms()))
            })
            .await
            .flatten();
        if let Some(id) = last {
            args[at] = id;
        }
    }
    args
}

/// Runs the command once; true if it took nothing (its reply was the nil it blocks on),
/// else its reply is in `out`.
async fn attempt(
    session: &mut Session,
    req: crate::dispatch::Parsed,
    nil: &Frame,
    out: &mut BytesMut,
    process: Process,
) -> bool {
    let mut reply = BytesMut::new();
    session.attempting = true;
    process(session, vec![req], &mut reply).await;
    session.attempting = false;
    let mut empty = BytesMut::new();
    nil.encode(session.proto, &mut empty);
    if reply[..] == empty[..] {
        return true;
    }
    out.extend_from_slice(&reply);
    false
}

async fn register(session: &Session, b: &Blocked, shard: usize, key: Bytes, front: bool) {
    let waiter = Waiter {
        id: b.id,
        wants: b.wants,
        wake: b.wake.clone(),
        serve: None,
    };
    let db = b.db;
    let _ = session
        .ctx
        .shard
        .call_on(shard, move |s| s.block(db, key, waiter, front))
        .await;
}

/// Waits for what ends or interrupts the session's blocked call: a wake or its deadline.
/// Never resolves when the session is not blocked.
pub async fn next(blocked: Option<&mut Blocked>) -> Wakeup {
    let Some(Blocked {
        woken,
        pending,
        deadline,
        ..
    }) = blocked
    else {
        return std::future::pending().await;
    };
    let deadline = *deadline;
    let wake = async {
        match futures_lite::StreamExt::next(woken).await {
            Some(Woken::Ready(db, key)) => {
                pending.push((db, key));
                Wakeup::Woken
            }
            // Not awaited here: a timer firing meanwhile must not drop it.
            Some(Woken::Served(reply)) => Wakeup::Served(reply),
            None => std::future::pending().await,
        }
    };
    let timer = async {
        match deadline {
            Some(d) => glommio::timer::sleep(d.saturating_duration_since(Instant::now())).await,
            None => std::future::pending::<()>().await,
        }
        Wakeup::TimedOut
    };
    futures_lite::future::or(wake, timer).await
}

/// After [`next`]: a woken client tries again, a timed-out one answers nil. True if the call
/// is over (its reply is in `out`).
pub async fn woke(
    session: &mut Session,
    why: Wakeup,
    out: &mut BytesMut,
    process: Process,
) -> bool {
    let Some(mut b) = session.blocked.take() else {
        return true;
    };
    let served = match why {
        Wakeup::Served(reply) => Some(reply.await.unwrap_or(Frame::Null)),
        Wakeup::TimedOut => {
            // Off the queues first: then every serve made for it is in its channel, and one
            // that raced the timeout wins (the element was taken for this client; review
            // finding: it used to be dropped).
            leave(session, &b).await;
            Some(take_reply(&mut b).await.unwrap_or(TIMED_OUT))
        }
        Wakeup::Woken => take_reply(&mut b).await,
    };
    if let Some(reply) = served {
        // However the reply came (served here, or taken from the channel after a wake).
        let reply = ended_read(session, &b, reply).await;
        ended(session, &b, reply.is_error());
        if !b.silent {
            reply.reply_to(session, out);
        }
        finish(session, b).await;
        return true;
    }
    let req = crate::dispatch::parse(b.args.clone(), session.ctx.shard.count());
    // Taken before it came: wait again, first in line on the keys it was woken for.
    let again: Vec<Bytes> = b.pending.iter().map(|(_, k)| k.clone()).collect();
    let saved_db = std::mem::replace(&mut session.db, b.db);
    let mut reply = BytesMut::new();
    let nothing = try_or_block(session, &mut b, req, again, true, &mut reply, process).await;
    session.db = saved_db;
    if !b.silent {
        out.extend_from_slice(&reply);
    }
    if !nothing {
        // Served (or refused, e.g. WRONGTYPE): the wakes it had are passed on.
        ended(session, &b, reply.first() == Some(&b'-'));
        finish(session, b).await;
        return true;
    }
    b.pending.clear();
    session.blocked = Some(b);
    false
}

/// One attempt of the blocked call `b`; if it takes nothing, `b` waits on `keys` (at the
/// front with `front`). True if it took nothing; else its reply is in `out`. With every key
/// on one shard the attempt and the queueing are one step there ([`moon_shard::Shard::run_or_block`]);
/// keys on several shards are tried in a transaction, then queued.
async fn try_or_block(
    session: &mut Session,
    b: &mut Blocked,
    req: crate::dispatch::Parsed,
    keys: Vec<Bytes>,
    front: bool,
    out: &mut BytesMut,
    process: Process,
) -> bool {
    if let Ok(Request {
        target: crate::dispatch::Target::Shard(shard),
        ..
    }) = &req
    {
        let shard = *shard;
        let Ok(req) = req else { return false };
        // A tracking client's blocking read (XREAD BLOCK) is remembered as its plain form is.
        let track = crate::tracking::reader_for(session, req.spec.is_read(), req.spec.is_write());
        let call = match req.into_call(b.db, track, 0) {
            Ok(call) => call,
            Err(req) => {
                moon_store::reply::unknown_command(&req.args).reply_to(session, out);
                return false;
            }
        };
        let block = moon_shard::BlockOn {
            db: b.db,
            keys,
            id: b.id,
            wants: b.wants,
            wake: b.wake.clone(),
            front,
            nil: b.nil.clone(),
            serve: true,
        };
        let reply = session.ctx.shard.run_or_block(shard, call, block).await;
        if reply == b.nil {
            return true;
        }
        // A retry refused because its stream or group went away says so in Redis's words.
        let reply = if front {
            ended_read(session, b, reply).await
        } else {
            reply
        };
        b.served = match &reply {
            Frame::Array(parts) => match parts.first() {
                Some(Frame::Bulk(key)) => Some(key.clone()),
                _ => None,
            },
            // BLMOVE / BRPOPLPUSH: its one key.
            Frame::Bulk(_) => b.keys.first().map(|(_, k)| k.clone()),
            _ => None,
        };
        reply.reply_to(session, out);
        return false;
    }
    if !attempt(session, req, &b.nil, out, process).await {
        return false;
    }
    let shards = session.ctx.shard.count();
    for key in keys {
        register(session, b, shard_for_key(&key, shards), key, front).await;
    }
    // A stream is never ready by its type alone (`moon-shard`'s `block`): an XADD between
    // the attempt and the registrations would wake nobody. One more attempt, now that any
    // later change wakes this call, closes that gap.
    if b.wants.starts_with("stream") {
        let again = crate::dispatch::parse(b.args.clone(), shards);
        if !attempt(session, again, &b.nil, out, process).await {
            leave(session, b).await;
            return false;
        }
    }
    true
}

/// CLIENT UNBLOCK: ends the blocked call with its nil (TIMEOUT) or an error (ERROR).
pub async fn unblocked(session: &mut Session, error: bool, out: &mut BytesMut) {
    let Some(mut b) = session.blocked.take() else {
        return;
    };
    // A serve that raced CLIENT UNBLOCK wins: the element was taken for this client.
    leave(session, &b).await;
    let reply = take_reply(&mut b).await.unwrap_or(if error {
        Frame::StaticError("UNBLOCKED client unblocked via CLIENT UNBLOCK")
    } else {
        TIMED_OUT
    });
    ended(session, &b, reply.is_error());
    if !b.silent {
        reply.reply_to(session, out);
    }
    finish(session, b).await;
}

/// Takes what waits in the call's channel: the keys it was woken for into `pending`, and
/// the reply of a serve, if one was made (waiting for it to be safe).
async fn take_reply(b: &mut Blocked) -> Option<Frame> {
    let mut served = None;
    while let Ok(w) = b.woken.try_recv() {
        match w {
            Woken::Ready(db, key) => b.pending.push((db, key)),
            Woken::Served(reply) => served = Some(reply.await.unwrap_or(Frame::Null)),
        }
    }
    served
}

/// Takes the call off every queue it is on (a message to each key's shard, so nothing is
/// served for it after this returns).
async fn leave(session: &Session, b: &Blocked) {
    let shard = session.ctx.shard.clone();
    for (s, key) in &b.keys {
        let (db, id, key) = (b.db, b.id, key.clone());
        let _ = shard.call_on(*s, move |sh| sh.unblock(db, &key, id)).await;
    }
}

/// The connection is going: off every queue.
pub async fn cancel(session: &mut Session) {
    if let Some(b) = session.blocked.take() {
        finish(session, b).await;
    }
}

/// Holds `cmds` until the blocked call ends, counting their bytes against the client's query
/// buffer limit (review finding: parsed commands held here were not counted, so a client
/// could pile up any number of them behind a short BLPOP).
pub fn defer(session: &mut Session, cmds: impl IntoIterator<Item = crate::dispatch::Parsed>) {
    for c in cmds {
        session.deferred_bytes += match &c {
            Ok(req) => req.args.iter().map(|a| a.len() + 16).sum::<usize>(),
            Err(_) => 64,
        };
        session.deferred.push(c);
    }
}

/// The blocking command ended (served, timed out, unblocked, refused): one call for INFO
/// commandstats and SLOWLOG, as Redis counts it once it is unblocked; its attempts were not
/// counted ([`Session::caller`]).
fn ended(session: &Session, b: &Blocked, failed: bool) {
    if let Some(entry) = crate::catalog::lookup(&b.args[0]) {
        session.counted(entry.spec, &b.args, 0, failed);
    }
}

/// Takes the call off every queue it is on, and passes on the wakes it did not use.
async fn finish(session: &mut Session, mut b: Blocked) {
    session.info.blocked.set(false);
    session
        .ctx
        .shared
        .blocked_clients
        .fetch_sub(1, Ordering::Relaxed);
    leave(session, &b).await;
    b.woken.close();
    // A serve made now has no one to go to: the client went away (the window
    // docs/ARCHITECTURE.md writes down); its wakes are passed on.
    let _ = take_reply(&mut b).await;
    let shard = session.ctx.shard.clone();
    let shards = shard.count();
    for (db, key) in b.pending {
        if b.served.as_ref() == Some(&key) {
            continue;
        }
        let _ = shard
            .call_on(shard_for_key(&key, shards), move |sh| {
                sh.wake_first(db, &key)
            })
            .await;
    }
}
