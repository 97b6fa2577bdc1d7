//! The router of the commands a connection answers itself: each goes to its family's handler
//! (`connection`, `client`, `command_cmd`, `config_cmd`, `info`, `debug`, `pubsub`,
//! `acl_cmd`, `rewrite`); the smallest (PING, ECHO, QUIT, SELECT, TIME, SHUTDOWN) are answered
//! here. SCAN and RANDOMKEY are `keyspace_walk`'s.

use bytes::Bytes;
use moon_proto::{Frame, Protocol};
use moon_store::args::eq;
use moon_store::command::CommandSpec;
use moon_store::reply::{self, err};

use crate::session::Session;

/// Runs a connection-level command. `None` means "send nothing" (SHUTDOWN).
pub async fn connection_command(
    session: &mut Session,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Option<Frame> {
    Some(match spec.name {
        // A RESP2 subscriber's PING answers as a message would: ["pong", text].
        "ping" if session.proto == Protocol::Resp2 && session.subs.any() => match args.len() {
            1 | 2 => Frame::Array(vec![
                Frame::bulk("pong"),
                Frame::Bulk(args.get(1).cloned().unwrap_or_default()),
            ]),
            _ => reply::wrong_arity("ping"),
        },
        "ping" => match args.len() {
            1 => Frame::Simple("PONG"),
            2 => Frame::Bulk(args[1].clone()),
            _ => reply::wrong_arity("ping"),
        },
        "pubsub" => crate::pubsub::pubsub_command(session, args).await,
        "acl" => crate::acl_cmd::acl_command(session, args).await,
        "echo" => Frame::Bulk(args[1].clone()),
        "quit" => {
            session.quit = true;
            Frame::OK
        }
        "select" => match moon_store::Store::parse_int(&args[1]) {
            Some(db) if db >= 0 && (db as u64) < session.ctx.shared.config().databases => {
                session.db = db as usize;
                session.info.db.set(db as usize);
                Frame::OK
            }
            Some(_) => err("ERR DB index is out of range"),
            None => err(reply::NOT_INTEGER),
        },
        // Only shards run it, right before a command of a batch; never a client.
        "moon.db" | "moon.track" | "moon.event" => reply::unknown_command(args),
        "auth" => crate::connection::auth(session, args),
        "hello" => crate::connection::hello(session, args),
        "time" => {
            let us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            Frame::Array(vec![
                Frame::bulk((us / 1_000_000).to_string()),
                Frame::bulk((us % 1_000_000).to_string()),
            ])
        }
        "client" => crate::client::client(session, args).await,
        "command" => crate::command_cmd::command(args),
        "config" => crate::config_cmd::config_cmd(session, args).await,
        "info" => crate::info::info(session, args).await,
        "debug" => crate::debug::debug(session, args),
        "bgrewriteaof" => match crate::rewrite::start(&session.ctx.shard, &session.ctx.shared) {
            Ok(status) => Frame::Simple(status),
            Err(e) => Frame::StaticError(e),
        },
        "shutdown" => {
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
            return None;
        }
        _ => reply::unknown_command(args),
    })
}
