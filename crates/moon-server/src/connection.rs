//! The connection family: AUTH and HELLO (who the client is, which protocol). PING, ECHO,
//! QUIT and SELECT are answered by the router (`admin::connection_command`).

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
