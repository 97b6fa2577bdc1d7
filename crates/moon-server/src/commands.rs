//! The server's own command table: the commands a connection answers itself (PING, AUTH,
//! CONFIG, SUBSCRIBE, MULTI...), each row with the function that runs it, and the one index
//! of every command ([`install`]: these rows and the keyspace's, `moon_store::table`).
//!
//! The top of the server's command layer: it names the handlers of every family (`connection`,
//! `client`, `command_cmd`, `config_cmd`, `info`, `debug`, `pubsub`, `acl_cmd`, `rewrite`,
//! `txn`) and is read by the connection loop (`conn`), which runs a row by its [`Run`] kind.
//! Adding a connection-level command is one row here and one function in its family.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use moon_proto::Frame;
use moon_store::command;
use moon_store::command::short::*;
use moon_store::command::{Command, Flags, Route};

use crate::catalog::{Entry, Row};
use crate::session::{Kind, Session};

/// A reply still being computed (a command that waits on other shards or the disk).
pub type Pending<'a> = Pin<Box<dyn Future<Output = Option<Frame>> + 'a>>;
/// Work that writes its own replies.
pub type Writing<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// How the connection runs a row, relative to the commands of the pipeline planned before it.
pub enum Run {
    /// Answered at once, in its place among the planned replies (PING, ECHO, SELECT...).
    Inline(fn(&mut Session, &[Bytes]) -> Frame),
    /// A barrier: what was planned before it runs first; `None` sends nothing (SHUTDOWN).
    Barrier(for<'a> fn(&'a mut Session, &'a [Bytes]) -> Pending<'a>),
    /// A barrier that writes its own replies in order with pushed messages (SUBSCRIBE...).
    Writes(for<'a> fn(&'a mut Session, &'a [Bytes], &'a mut BytesMut) -> Writing<'a>),
    /// PUBLISH / SPUBLISH: planned with the batches, delivered after them.
    Publish(Kind),
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: the connection's transaction state.
    Transaction(TxControl),
    /// RESET: never queued, whatever state the connection is in.
    Reset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxControl {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// A row of the server's table.
pub type ConnectionCommand = Command<Run>;

const NOAUTH_CONN: moon_store::command::Flags = CONN.union(Flags::NO_AUTH);
const SUBSCRIBER: moon_store::command::Flags = PUBSUB.union(Flags::WHILE_SUBSCRIBED);
const HERE: Route = Route::Connection;

/// The commands a connection answers itself.
pub static CONNECTION: &[ConnectionCommand] = &[
    // Connection
    command!(Connection: "ping", -1, CONN.union(Flags::WHILE_SUBSCRIBED), HERE, Run::Inline(crate::connection::ping)),
    command!(Connection: "echo", 2, CONN, HERE, Run::Inline(|_, a| Frame::Bulk(a[1].clone()))),
    command!(Connection: "quit", -1, NOAUTH_CONN.union(Flags::WHILE_SUBSCRIBED).union(Flags::ALLOW_BUSY), HERE, Run::Barrier(|s, _| {
        s.quit = true;
        Box::pin(async { Some(Frame::OK) })
    })),
    command!(Connection: "hello", -1, NOAUTH_CONN, HERE, Run::Barrier(|s, a| {
        let f = crate::connection::hello(s, a);
        Box::pin(async { Some(f) })
    })),
    command!(Connection: "auth", -2, NOAUTH_CONN, HERE, Run::Barrier(|s, a| {
        let f = crate::connection::auth(s, a);
        Box::pin(async { Some(f) })
    })),
    command!(Connection: "select", 2, CONN, HERE, Run::Inline(crate::connection::select)),
    command!(Connection: "reset", 1, NOAUTH_CONN.union(Flags::WHILE_SUBSCRIBED).union(Flags::ALLOW_BUSY), HERE, Run::Reset),
    command!(Connection: "client", -2, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::client::client(s, a).await) }))),
    // Server
    command!(Server: "command", -1, ADMIN, HERE, Run::Inline(|_, a| crate::command_cmd::command(a))),
    command!(Server: "monitor", 1, ADMIN, HERE, Run::Inline(|s, _| {
        if s.tx.is_some() {
            // Inside MULTI (Redis's words for a client that may not block).
            return Frame::StaticError("ERR MONITOR isn't allowed for DENY BLOCKING client");
        }
        if s.monitor.is_none() {
            s.monitor = Some(moon_store::monitor::start());
        }
        Frame::OK
    })),
    command!(Server: "latency", -2, ADMIN.union(Flags::LOADING).union(Flags::STALE), HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::latency_cmd::latency(s, a).await) }))),
    command!(Server: "slowlog", -2, ADMIN.union(Flags::LOADING).union(Flags::STALE), HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::slowlog_cmd::slowlog(s, a).await) }))),
    command!(Server: "config", -2, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::config_cmd::config_cmd(s, a).await) }))),
    command!(Server: "info", -1, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::info::info(s, a).await) }))),
    command!(Server: "time", 1, CONN, HERE, Run::Inline(|_, _| crate::connection::time())),
    command!(Generic: "memory", -2, Flags::READONLY, keys(2, 2, 1), HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::memory_cmd::memory(s, a).await) }))),
    command!(Connection: "cluster", -2, UNSCRIPTED, HERE, Run::Inline(|_, _| Frame::StaticError("ERR This instance has cluster support disabled"))),
    command!(Server: "module", -2, ADMIN.union(Flags::NOSCRIPT), HERE, Run::Inline(|_, a| crate::standalone::module(a))),
    command!(Server: "lolwut", -1, Flags::READONLY.union(Flags::FAST), HERE, Run::Inline(|_, a| crate::standalone::lolwut(a))),
    command!(Hyperloglog: "pfselftest", 1, ADMIN, HERE, Run::Inline(|s, _| crate::debug::pfselftest(s))),
    command!(Server: "shutdown", -1, ADMIN.union(Flags::NO_MULTI), HERE, Run::Barrier(|s, a| {
        let f = crate::connection::shutdown(s, a);
        Box::pin(async { f })
    })),
    command!(Server: "bgrewriteaof", 1, ADMIN, HERE, Run::Barrier(|s, _| {
        let f = match crate::rewrite::start(&s.ctx.shard, &s.ctx.shared) {
            Ok(status) => Frame::Simple(status),
            Err(e) => Frame::StaticError(e),
        };
        Box::pin(async { Some(f) })
    })),
    command!(Server: "debug", -2, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::debug::debug(s, a).await) }))),
    command!(Server: "acl", -2, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::acl_cmd::acl_command(s, a).await) }))),
    // Replication, the primary's side (`replication`).
    command!(Server: "psync", -3, ADMIN.union(Flags::NO_MULTI), HERE, Run::Writes(|s, a, out| Box::pin(crate::replication::sync(s, a, out)))),
    command!(Server: "sync", 1, ADMIN.union(Flags::NO_MULTI), HERE, Run::Writes(|s, a, out| Box::pin(crate::replication::sync(s, a, out)))),
    command!(Server: "replconf", -1, ADMIN.union(Flags::ALLOW_BUSY), HERE, Run::Writes(|s, a, out| Box::pin(crate::replication::replconf(s, a, out)))),
    command!(Server: "role", 1, CONN, HERE, Run::Inline(crate::replication::role)),
    command!(Server: "failover", -1, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::replication::failover(s, a).await) }))),
    command!(Server: "replicaof", 3, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::replication::replicaof(s, a).await) }))),
    command!(Server: "slaveof", 3, ADMIN, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::replication::replicaof(s, a).await) }))),
    command!(Generic: "wait", 3, UNSCRIPTED, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::replication::wait(s, a).await) }))),
    command!(Generic: "waitaof", 4, UNSCRIPTED, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::replication::waitaof(s, a).await) }))),
    // Pub/sub: subscriptions live with the connection, PUBLISH fans out.
    command!(Pubsub: "subscribe", -2, SUBSCRIBER, HERE, Run::Writes(|s, a, out| Box::pin(crate::pubsub::subscription(s, "subscribe", a, out)))),
    command!(Pubsub: "unsubscribe", -1, SUBSCRIBER, HERE, Run::Writes(|s, a, out| Box::pin(crate::pubsub::subscription(s, "unsubscribe", a, out)))),
    command!(Pubsub: "psubscribe", -2, SUBSCRIBER, HERE, Run::Writes(|s, a, out| Box::pin(crate::pubsub::subscription(s, "psubscribe", a, out)))),
    command!(Pubsub: "punsubscribe", -1, SUBSCRIBER, HERE, Run::Writes(|s, a, out| Box::pin(crate::pubsub::subscription(s, "punsubscribe", a, out)))),
    command!(Pubsub: "ssubscribe", -2, SUBSCRIBER, HERE, Run::Writes(|s, a, out| Box::pin(crate::pubsub::subscription(s, "ssubscribe", a, out)))),
    command!(Pubsub: "sunsubscribe", -1, SUBSCRIBER, HERE, Run::Writes(|s, a, out| Box::pin(crate::pubsub::subscription(s, "sunsubscribe", a, out)))),
    command!(Pubsub: "publish", 3, PUBLISH, HERE, Run::Publish(Kind::Channel)),
    command!(Pubsub: "spublish", 3, PUBLISH, HERE, Run::Publish(Kind::Shard)),
    command!(Pubsub: "pubsub", -2, PUBSUB_INFO, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::pubsub::pubsub_command(s, a).await) }))),
    // Transactions: queueing, then the EXEC coordinator (`txn`).
    // Scripting (EVAL and EVALSHA are keyspace commands: `moon_store`'s store/script.rs)
    // Barriers: what a pipeline sent before them runs first (an FCALL before a FUNCTION
    // DELETE runs the function).
    command!(Scripting: "script", -2, UNSCRIPTED, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::script_cmd::script(s, a)) }))),
    command!(Scripting: "function", -2, UNSCRIPTED, HERE, Run::Barrier(|s, a| Box::pin(async { Some(crate::function_cmd::function(s, a)) }))),
    command!(Transactions: "multi", 1, TXN, HERE, Run::Transaction(TxControl::Multi)),
    command!(Transactions: "exec", 1, TXN_SKIP, HERE, Run::Transaction(TxControl::Exec)),
    command!(Transactions: "discard", 1, TXN, HERE, Run::Transaction(TxControl::Discard)),
    command!(Transactions: "watch", -2, TXN, keys(1, -1, 1), HERE, Run::Transaction(TxControl::Watch)),
    command!(Transactions: "unwatch", 1, TXN, HERE, Run::Transaction(TxControl::Unwatch)),
];

/// Builds the index of every command (`crate::catalog`); `main` calls it before serving.
pub fn install() {
    let keyspace = moon_store::table::commands().map(|c| Entry {
        spec: &c.spec,
        row: Row::Keyspace(c),
    });
    let connection = CONNECTION.iter().enumerate().map(|(i, c)| Entry {
        spec: &c.spec,
        row: Row::Connection(i),
    });
    crate::catalog::install(keyspace.chain(connection));
}

/// The row of a connection-level command.
pub fn connection_row(row: Row) -> Option<&'static ConnectionCommand> {
    match row {
        Row::Connection(i) => CONNECTION.get(i),
        Row::Keyspace(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_is_in_one_table_once() {
        super::install();
        let mut names = std::collections::BTreeSet::new();
        for spec in crate::catalog::specs() {
            assert!(names.insert(spec.name), "{} twice", spec.name);
            let found = crate::catalog::lookup(spec.name.to_ascii_uppercase().as_bytes());
            assert_eq!(found.map(|e| e.spec.name), Some(spec.name));
        }
        assert!(names.contains("get") && names.contains("ping") && names.contains("exec"));
        assert!(crate::catalog::lookup(b"moon.db").is_none());
    }
}
