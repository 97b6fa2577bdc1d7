//! The connection family: AUTH and HELLO (who the client is, which protocol), PING, SELECT,
//! TIME, SHUTDOWN and RESET (the connection's state as a new connection has it). Their rows
//! are in `commands`.

use bytes::Bytes;
use moon_proto::{Frame, Protocol};
use moon_store::args::eq;
use moon_store::reply::{self, err};

use crate::client::set_client_name;
use crate::session::Session;
use crate::shared::REDIS_COMPAT_VERSION;

pub(crate) fn auth(session: &mut Session, args: &[Bytes]) -> Frame {
    let (user, pass) = match args.len() {
        2 => (None, &args[1]),
        3 => (Some(&args[1]), &args[2]),
        _ => return err(reply::SYNTAX),
    };
    match crate::acl_cmd::authenticate(session, user, pass) {
        Ok(()) => Frame::OK,
        Err(e) => e,
    }
}

pub(crate) fn hello(session: &mut Session, args: &[Bytes]) -> Frame {
    let mut proto = session.proto;
    let mut i = 1;
    if args.len() > 1 {
        match moon_store::Store::parse_int(&args[1]) {
            Some(2) => proto = Protocol::Resp2,
            Some(3) => proto = Protocol::Resp3,
            Some(_) => return err("NOPROTO unsupported protocol version"),
            None => {
                return Frame::StaticError("ERR Protocol version is not an integer or out of range")
            }
        }
        i = 2;
    }
    let mut setname = None;
    let mut auth = None;
    while i < args.len() {
        if eq(&args[i], "auth") && i + 2 < args.len() {
            auth = Some((args[i + 1].clone(), args[i + 2].clone()));
            i += 3;
        } else if eq(&args[i], "setname") && i + 1 < args.len() {
            setname = Some(args[i + 1].clone());
            i += 2;
        } else {
            return Frame::Error(format!(
                "ERR Syntax error in HELLO option '{}'",
                reply::lossy(&args[i], 64)
            ));
        }
    }
    // Every option parsed first: a bad one changes nothing (Redis's order).
    if let Some((user, pass)) = auth {
        if let Err(e) = crate::acl_cmd::authenticate(session, Some(&user), &pass) {
            return e;
        }
    }
    if !session.authenticated {
        return Frame::StaticError("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(name) = setname {
        if let Err(e) = set_client_name(session, &name) {
            return e;
        }
    }
    session.proto = proto;
    session
        .info
        .resp
        .set(if proto == Protocol::Resp3 { 3 } else { 2 });
    Frame::Map(vec![
        (Frame::bulk("server"), Frame::bulk("redis")),
        (Frame::bulk("version"), Frame::bulk(REDIS_COMPAT_VERSION)),
        (
            Frame::bulk("proto"),
            Frame::Integer(if proto == Protocol::Resp3 { 3 } else { 2 }),
        ),
        (Frame::bulk("id"), Frame::Integer(session.info.id as i64)),
        (Frame::bulk("mode"), Frame::bulk("standalone")),
        (Frame::bulk("role"), Frame::bulk("master")),
        (Frame::bulk("modules"), Frame::Array(Vec::new())),
    ])
}

pub(crate) fn ping(session: &mut Session, args: &[Bytes]) -> Frame {
    // A RESP2 subscriber's PING answers as a message would: ["pong", text].
    if session.proto == Protocol::Resp2 && session.subs.any() {
        return match args.len() {
            1 | 2 => Frame::Array(vec![
                Frame::bulk("pong"),
                Frame::Bulk(args.get(1).cloned().unwrap_or_default()),
            ]),
            _ => reply::wrong_arity("ping"),
        };
    }
    match args.len() {
        1 => Frame::Simple("PONG"),
        2 => Frame::Bulk(args[1].clone()),
        _ => reply::wrong_arity("ping"),
    }
}

pub(crate) fn select(session: &mut Session, args: &[Bytes]) -> Frame {
    match moon_store::args::parse_i64(&args[1]) {
        Some(db) if db >= 0 && (db as u64) < session.ctx.shared.config().databases => {
            session.db = db as usize;
            session.info.db.set(db as usize);
            Frame::OK
        }
        Some(_) => err("ERR DB index is out of range"),
        None => err(reply::NOT_INTEGER),
    }
}

pub(crate) fn time() -> Frame {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    Frame::Array(vec![
        Frame::bulk((us / 1_000_000).to_string()),
        Frame::bulk((us % 1_000_000).to_string()),
    ])
}

/// SHUTDOWN: `None` (nothing is sent) once the server is asked to stop.
pub(crate) fn shutdown(session: &mut Session, args: &[Bytes]) -> Option<Frame> {
    for a in &args[1..] {
        if !["nosave", "save", "now", "force", "abort"]
            .iter()
            .any(|o| eq(a, o))
        {
            return Some(err(reply::SYNTAX));
        }
    }
    if args[1..].iter().any(|a| eq(a, "abort")) {
        return Some(err("ERR There is no shutdown in progress."));
    }
    tracing::info!(client = session.info.id, "User requested shutdown...");
    session.ctx.shared.request_shutdown();
    session.quit = true;
    None
}

/// Forgets the connection's tracked keys on every shard (TRACKING OFF, RESET, disconnect).
pub(crate) async fn tracking_off(session: &Session) {
    if session.info.tracking.borrow_mut().take().is_some() {
        let id = session.info.id;
        session
            .ctx
            .shard
            .call_all(move |s: &moon_shard::Shard| s.store().forget_tracking(id))
            .await;
    }
}

/// RESET: the connection's state as a new connection has it.
pub(crate) async fn reset(session: &mut Session) {
    // Subscriptions first, before anything waits: no message may follow the +RESET.
    crate::pubsub::forget_all(session);
    session.note_subscriptions();
    session.multi.queued = None;
    session.multi.failed = false;
    crate::txn::unwatch_all(session).await;
    tracking_off(session).await;
    session.caching = None;
    session.db = 0;
    session.info.db.set(0);
    session.proto = Protocol::Resp2;
    session.info.resp.set(2);
    session.info.name.borrow_mut().clear();
    // Out of MONITOR mode, as Redis's RESET leaves it.
    if let Some(m) = session.monitor.take() {
        moon_store::monitor::stop(&m);
    }
    moon_store::slowlog::rename(session.info.id, "");
    session.reply = crate::session::ReplyMode::On;
    session.info.no_evict.set(false);
    if session.info.no_touch.replace(false) {
        moon_store::evict::set_no_touch(session.info.id, false);
    }
    // Back to the default user: authenticated only if it needs no password.
    if let Some(u) = session.ctx.shared.user("default") {
        session.authenticated = u.enabled && u.nopass;
        session.user = u;
    }
    *session.info.user.borrow_mut() = "default".into();
}
