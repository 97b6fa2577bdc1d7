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
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        )
    } else {
        reply::unknown_subcommand(sub, "client")
    }
}
