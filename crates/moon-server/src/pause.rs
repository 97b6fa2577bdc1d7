//! CLIENT PAUSE / UNPAUSE: clients' commands wait, on every shard, until a deadline or an
//! UNPAUSE — every command (ALL) or only those that may write or propagate (WRITE), as
//! Redis decides it (`write` and `may-replicate` commands, scripts that may write, an EXEC
//! whose queue holds one).
//!
//! The state is two atomics in [`Shared`]: one relaxed load per request while nothing is
//! paused. A paused request is checked where the connection loop runs it, before it is queued
//! in MULTI or executed; what the client pipelined after it waits behind it. Commands inside a
//! transaction being executed never wait (a pause given inside MULTI starts after its EXEC),
//! and neither does CLIENT UNPAUSE (Redis would make an ALL pause wait for its deadline).
//! A waiting client counts in INFO's `blocked_clients`. Expiry is held while paused, as in
//! Redis: the deadline is the keyspace's own atomic (`moon_store::keyspace::pause_deadline`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::{eq, parse_i64};
use moon_store::command::Flags;

use crate::dispatch::Request;
use crate::session::Session;
use crate::shared::Shared;

/// How often a paused client looks whether the pause ended (UNPAUSE, or a deadline moved).
const POLL: Duration = Duration::from_millis(5);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// CLIENT PAUSE timeout [WRITE|ALL]: a later deadline and a stricter mode win over a pause in
/// force, as in Redis.
pub(crate) fn pause(shared: &Shared, args: &[Bytes]) -> Frame {
    let Some(timeout) = parse_i64(&args[2]) else {
        return Frame::StaticError("ERR timeout is not an integer or out of range");
    };
    if timeout < 0 {
        return Frame::StaticError("ERR timeout is negative");
    }
    let all = match args.get(3) {
        None => true,
        Some(m) if eq(m, "all") => true,
        Some(m) if eq(m, "write") => false,
        Some(_) => return Frame::StaticError("ERR CLIENT PAUSE mode must be WRITE or ALL"),
    };
    let now = now_ms();
    let until = now.saturating_add(timeout as u64).max(1);
    if shared.pause_until.load(Ordering::Acquire) > now {
        // A pause in force: it lasts to the later deadline, in the stricter mode.
        if all {
            shared.pause_all.store(true, Ordering::Release);
        }
        shared.pause_until.fetch_max(until, Ordering::AcqRel);
    } else {
        shared.pause_all.store(all, Ordering::Release);
        shared.pause_until.store(until, Ordering::Release);
    }
    Frame::OK
}

/// CLIENT UNPAUSE.
pub(crate) fn unpause(shared: &Shared) -> Frame {
    shared.pause_until.store(0, Ordering::Release);
    shared.pause_all.store(false, Ordering::Release);
    Frame::OK
}

/// Whether `req` waits now (one load when nothing is paused, the common case). A pause past
/// its deadline is cleared here.
pub(crate) fn paused_for(session: &Session, req: &Request) -> bool {
    let shared = &session.ctx.shared;
    let until = shared.pause_until.load(Ordering::Acquire);
    if until == 0 {
        return false;
    }
    if until <= now_ms() {
        let _ = shared
            .pause_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
        return false;
    }
    if session.tx.is_some() || is_unpause(req) {
        return false;
    }
    shared.pause_all.load(Ordering::Acquire) || may_write(session, req)
}

fn is_unpause(req: &Request) -> bool {
    req.spec.name == "client" && req.args.get(1).is_some_and(|a| eq(a, "unpause"))
}

/// Whether a request may write or propagate (Redis's `is_may_replicate_command`).
fn may_write(session: &Session, req: &Request) -> bool {
    let spec = req.spec;
    match spec.name {
        "eval" | "evalsha" => moon_store::script_source(&req.args, spec.name == "evalsha", false)
            .map_or(true, |s| !s.read_only),
        "fcall" => moon_store::fcall_check(&req.args, false).map_or(true, |(_, ro)| !ro),
        "exec" => session
            .multi
            .queued
            .as_ref()
            .is_some_and(|q| q.iter().any(|r| may_write(session, r))),
        _ => spec.is_write() || spec.flags.has(Flags::MAY_REPLICATE),
    }
}

/// Waits while `req` is paused (see the module's comment). False if the wait ended because
/// the client was killed or the server is stopping: then the request must not run.
pub(crate) async fn wait(session: &Session, req: &Request) -> bool {
    let shared = &session.ctx.shared;
    shared.blocked_clients.fetch_add(1, Ordering::Relaxed);
    // CLIENT LIST's `b` flag, as Redis shows a postponed client.
    session.info.blocked.set(true);
    let mut go_on = true;
    while paused_for(session, req) {
        // Killed (CLIENT KILL), or the server stopping (the semaphore closed).
        if session.info.out.is_closing() || session.ctx.stopping.try_acquire(1).is_err() {
            go_on = false;
            break;
        }
        let left = shared
            .pause_until
            .load(Ordering::Acquire)
            .saturating_sub(now_ms());
        glommio::timer::sleep(POLL.min(Duration::from_millis(left.max(1)))).await;
    }
    session.info.blocked.set(false);
    shared.blocked_clients.fetch_sub(1, Ordering::Relaxed);
    go_on
}
