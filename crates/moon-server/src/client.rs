//! CLIENT: the connection's name and info, CLIENT LIST/KILL/ID, REPLY, TRACKING, CACHING.

use bytes::Bytes;
use moon_proto::Frame;
use moon_shard::Shard;
use moon_store::args::eq;
use moon_store::reply::{self, err};

use crate::session::{Session, CLIENTS};

use moon_store::args::text;

pub(crate) fn set_client_name(session: &Session, name: &[u8]) -> Result<(), Frame> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    *session.info.name.borrow_mut() = text(name);
    moon_store::slowlog::rename(session.info.id, &session.info.name.borrow());
    Ok(())
}

pub(crate) async fn client(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    if eq(sub, "setname") && args.len() == 3 {
        match set_client_name(session, &args[2]) {
            Ok(()) => Frame::OK,
            Err(e) => e,
        }
    } else if eq(sub, "getname") && args.len() == 2 {
        let name = session.info.name.borrow();
        if name.is_empty() {
            Frame::Null
        } else {
            Frame::bulk(name.clone())
        }
    } else if eq(sub, "id") && args.len() == 2 {
        Frame::Integer(session.info.id as i64)
    } else if eq(sub, "info") && args.len() == 2 {
        Frame::Verbatim(Bytes::from(format!("{}\n", session.info.line())))
    } else if eq(sub, "list") {
        let per_shard = session
            .ctx
            .shard
            .call_all(|_s: &Shard| {
                CLIENTS.with(|c| {
                    c.borrow()
                        .values()
                        .map(|i| (i.id, i.line()))
                        .collect::<Vec<_>>()
                })
            })
            .await;
        let mut lines: Vec<(u64, String)> = per_shard.into_iter().flatten().flatten().collect();
        lines.sort();
        let mut out = String::new();
        for (_, l) in lines {
            out.push_str(&l);
            out.push('\n');
        }
        Frame::Verbatim(Bytes::from(out))
    } else if eq(sub, "setinfo") && args.len() == 4 {
        let value = text(&args[3]);
        if eq(&args[2], "lib-name") {
            *session.info.lib_name.borrow_mut() = value;
        } else if eq(&args[2], "lib-ver") {
            *session.info.lib_ver.borrow_mut() = value;
        } else {
            return Frame::Error(format!(
                "ERR Unrecognized option '{}'",
                reply::lossy(&args[2], 64)
            ));
        }
        Frame::OK
    } else if (eq(sub, "no-evict") || eq(sub, "no-touch")) && args.len() == 3 {
        let Some(on) = moon_store::args::on_off(&args[2]) else {
            return err(reply::SYNTAX);
        };
        if eq(sub, "no-evict") {
            session.info.no_evict.set(on);
        } else {
            session.info.no_touch.set(on);
            moon_store::evict::set_no_touch(session.info.id, on);
        }
        Frame::OK
    } else if eq(sub, "tracking") && args.len() >= 3 {
        crate::tracking::tracking_command(session, args).await
    } else if eq(sub, "caching") && args.len() == 3 {
        crate::tracking::caching_command(session, args)
    } else if eq(sub, "getredir") && args.len() == 2 {
        crate::tracking::getredir(session)
    } else if eq(sub, "trackinginfo") && args.len() == 2 {
        crate::tracking::trackinginfo(session)
    } else if eq(sub, "reply") && args.len() == 3 {
        // OFF and SKIP answer nothing; the connection drops what follows (`conn`).
        session.reply = if eq(&args[2], "on") {
            crate::session::ReplyMode::On
        } else if eq(&args[2], "off") {
            crate::session::ReplyMode::Off
        } else if eq(&args[2], "skip") {
            crate::session::ReplyMode::SkipNext
        } else {
            return err(reply::SYNTAX);
        };
        Frame::OK
    } else if eq(sub, "pause") && (args.len() == 3 || args.len() == 4) {
        crate::pause::pause(&session.ctx.shared, args)
    } else if eq(sub, "unpause") && args.len() == 2 {
        crate::pause::unpause(&session.ctx.shared)
    } else if eq(sub, "kill") {
        if args.len() < 3 {
            return reply::wrong_arity("client|kill");
        }
        kill(session, args).await
    } else if eq(sub, "unblock") && (args.len() == 3 || args.len() == 4) {
        let Some(id) = moon_store::args::parse_i64(&args[2]) else {
            return err(reply::NOT_INTEGER);
        };
        let error = match args.get(3) {
            None => false,
            Some(m) if eq(m, "timeout") => false,
            Some(m) if eq(m, "error") => true,
            Some(_) => {
                return err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
            }
        };
        let id = id as u64;
        let per_shard = session
            .ctx
            .shard
            .call_all(move |_s: &Shard| {
                CLIENTS.with(|c| match c.borrow().get(&id) {
                    Some(info) if info.blocked.get() && info.unblock.get().is_none() => {
                        info.unblock.set(Some(error));
                        info.out.kick();
                        true
                    }
                    _ => false,
                })
            })
            .await;
        Frame::Integer(i64::from(per_shard.into_iter().flatten().any(|x| x)))
    } else if eq(sub, "help") {
        Frame::Array(
            [
                "CLIENT <subcommand>",
                "ID",
                "INFO",
                "LIST",
                "GETNAME",
                "SETNAME <name>",
                "SETINFO <option> <value>",
                "NO-EVICT (ON|OFF)",
                "    Protect the client from client eviction (Moon evicts no clients).",
                "NO-TOUCH (ON|OFF)",
                "    The client's commands leave the keys' LRU/LFU alone (TOUCH still touches).",
                "KILL <ip:port>",
                "KILL <option> <value> [<option> <value> [...]]",
                "UNBLOCK <clientid> [TIMEOUT|ERROR]",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        )
    } else {
        reply::unknown_subcommand(sub, "client")
    }
}

/// Which clients CLIENT KILL closes (every given filter must match).
#[derive(Clone, Default)]
struct KillFilter {
    id: Option<u64>,
    addr: Option<String>,
    laddr: Option<String>,
    user: Option<String>,
    /// TYPE: normal, pubsub, replica, or master (Moon has no link to a primary yet: none).
    kind: Option<&'static str>,
    max_age: Option<u64>,
    /// The client asking, unless SKIPME no (or the old form) lets it close itself.
    skip: Option<u64>,
}

impl KillFilter {
    fn matches(&self, c: &crate::session::ClientInfo) -> bool {
        let kind = if c.replica.get() {
            "replica"
        } else if c.sub_counts.get() != (0, 0, 0) {
            "pubsub"
        } else {
            "normal"
        };
        self.kind.is_none_or(|k| k == kind)
            && self.skip != Some(c.id)
            && self.id.is_none_or(|id| id == c.id)
            && self.addr.as_ref().is_none_or(|a| *a == c.addr)
            && self.laddr.as_ref().is_none_or(|a| *a == c.laddr)
            && self.user.as_ref().is_none_or(|u| *u == *c.user.borrow())
            && self
                .max_age
                .is_none_or(|age| c.created.elapsed().as_secs() >= age)
    }
}

/// CLIENT KILL `<ip:port>` (OK, or an error when no client has that address; it may close
/// the caller itself) or CLIENT KILL with filters (ID, ADDR, LADDR, USER, TYPE, SKIPME,
/// MAXAGE; the number closed). Matching clients are closed on every shard; the caller, when
/// it matches, after this reply.
async fn kill(session: &mut Session, args: &[Bytes]) -> Frame {
    let me = session.info.id;
    let old_form = args.len() == 3;
    let mut f = KillFilter::default();
    if old_form {
        f.addr = Some(text(&args[2]));
    } else {
        f.skip = Some(me);
        let mut i = 2;
        while i < args.len() {
            let Some(value) = args.get(i + 1) else {
                return err(reply::SYNTAX);
            };
            let opt = &args[i];
            if eq(opt, "id") {
                match moon_store::args::parse_i64(value).filter(|&n| n >= 1) {
                    Some(n) => f.id = Some(n as u64),
                    None => return err("ERR client-id should be greater than 0"),
                }
            } else if eq(opt, "type") {
                if eq(value, "normal") {
                    f.kind = Some("normal");
                } else if eq(value, "pubsub") {
                    f.kind = Some("pubsub");
                } else if eq(value, "slave") || eq(value, "replica") {
                    f.kind = Some("replica");
                } else if eq(value, "master") {
                    f.kind = Some("master");
                } else {
                    return Frame::Error(format!("ERR Unknown client type '{}'", text(value)));
                }
            } else if eq(opt, "addr") {
                f.addr = Some(text(value));
            } else if eq(opt, "laddr") {
                f.laddr = Some(text(value));
            } else if eq(opt, "user") {
                let name = text(value);
                if session.ctx.shared.user(&name).is_none() {
                    return Frame::Error(format!("ERR No such user '{name}'"));
                }
                f.user = Some(name);
            } else if eq(opt, "skipme") {
                if eq(value, "yes") {
                    f.skip = Some(me);
                } else if eq(value, "no") {
                    f.skip = None;
                } else {
                    return err(reply::SYNTAX);
                }
            } else if eq(opt, "maxage") {
                // Redis 7.4's filter and texts.
                match moon_store::args::parse_i64(value) {
                    Some(n) if n > 0 => f.max_age = Some(n as u64),
                    Some(_) => return err("ERR maxage should be greater than 0"),
                    None => return err("ERR maxage is not an integer or out of range"),
                }
            } else {
                return err(reply::SYNTAX);
            }
            i += 2;
        }
    }
    let closes_me = f.matches(&session.info);
    let filter = f.clone();
    let per_shard = session
        .ctx
        .shard
        .call_all(move |_s: &Shard| {
            CLIENTS.with(|c| {
                let mut n = 0i64;
                for info in c.borrow().values() {
                    // One already being closed is not counted again.
                    if info.id != me && !info.out.is_closing() && filter.matches(info) {
                        info.out.close();
                        n += 1;
                    }
                }
                n
            })
        })
        .await;
    let killed = per_shard.into_iter().flatten().sum::<i64>() + i64::from(closes_me);
    if closes_me {
        // Closed once what it sent so far has run and been answered (a MULTI/EXEC whole).
        session.close_after_reply = true;
    }
    if old_form {
        if killed == 0 {
            err("ERR No such client")
        } else {
            Frame::OK
        }
    } else {
        Frame::Integer(killed)
    }
}
