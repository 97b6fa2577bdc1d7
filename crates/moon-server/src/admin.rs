//! Commands the connection answers itself (PING, AUTH, HELLO, CLIENT, COMMAND, CONFIG, INFO,
//! TIME, SHUTDOWN...) and the key commands that need more than one shard round trip
//! (RENAME and MSETNX across shards, SCAN, RANDOMKEY).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use moon_aof::AofStatus;
use moon_proto::{Frame, Protocol};
use moon_shard::{now_ms, Shard};
use moon_store::args::eq;
use moon_store::command::{CommandSpec, COMMANDS};
use moon_store::glob::glob_match;
use moon_store::reply::{self, err};
use moon_store::StoreStats;

use crate::config::{self, Config, Mutability};
use crate::session::{Session, CLIENTS};

/// The Redis version Moon answers to (HELLO, INFO): the command set and replies of Redis 7.2.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

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
        "auth" => auth(session, args),
        "hello" => hello(session, args),
        "time" => {
            let us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            Frame::Array(vec![
                Frame::bulk((us / 1_000_000).to_string()),
                Frame::bulk((us % 1_000_000).to_string()),
            ])
        }
        "client" => client(session, args).await,
        "command" => command(args),
        "config" => config_cmd(session, args).await,
        "info" => info(session, args).await,
        "debug" => debug(session, args),
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

fn auth(session: &mut Session, args: &[Bytes]) -> Frame {
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

fn hello(session: &mut Session, args: &[Bytes]) -> Frame {
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

fn set_client_name(session: &Session, name: &[u8]) -> Result<(), Frame> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    *session.info.name.borrow_mut() = text(name);
    Ok(())
}

async fn client(session: &mut Session, args: &[Bytes]) -> Frame {
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

fn command_info(c: &CommandSpec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(c.name),
        Frame::Integer(i64::from(c.arity)),
        Frame::Array(c.flags.names().map(Frame::Simple).collect()),
        Frame::Integer(i64::from(c.first_key)),
        Frame::Integer(i64::from(c.last_key)),
        Frame::Integer(i64::from(c.step)),
        Frame::Array(c.acl_categories().into_iter().map(Frame::Simple).collect()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

fn command_doc(c: &CommandSpec) -> Frame {
    let group = c.group.as_str();
    Frame::Map(vec![
        (
            Frame::bulk("summary"),
            Frame::bulk(format!(
                "Redis-compatible {} command",
                c.name.to_ascii_uppercase()
            )),
        ),
        (Frame::bulk("since"), Frame::bulk("1.0.0")),
        (Frame::bulk("group"), Frame::bulk(group)),
    ])
}

fn command(args: &[Bytes]) -> Frame {
    let public = || COMMANDS.iter().filter(|c| c.is_public());
    let Some(sub) = args.get(1) else {
        return Frame::Array(public().map(command_info).collect());
    };
    let named = |a: &Bytes| moon_store::command::lookup(a).filter(|c| c.is_public());
    if eq(sub, "count") {
        Frame::Integer(public().count() as i64)
    } else if eq(sub, "getkeys") {
        if args.len() < 3 {
            return reply::wrong_arity("command|getkeys");
        }
        let Some(spec) = named(&args[2]) else {
            return err("ERR Invalid command specified");
        };
        let request = &args[2..];
        if !spec.args_ok(request.len()) {
            return err("ERR Invalid arguments specified for command");
        }
        let keys: Vec<Frame> = spec.keys(request).map(|k| Frame::Bulk(k.clone())).collect();
        if keys.is_empty() {
            return err("ERR The command has no key arguments");
        }
        Frame::Array(keys)
    } else if eq(sub, "info") {
        if args.len() == 2 {
            return Frame::Array(public().map(command_info).collect());
        }
        Frame::Array(
            args[2..]
                .iter()
                .map(|a| named(a).map_or(Frame::Null, command_info))
                .collect(),
        )
    } else if eq(sub, "docs") {
        let list: Vec<&CommandSpec> = if args.len() == 2 {
            public().collect()
        } else {
            args[2..].iter().filter_map(named).collect()
        };
        Frame::Map(
            list.into_iter()
                .map(|c| (Frame::bulk(c.name), command_doc(c)))
                .collect(),
        )
    } else if eq(sub, "list") {
        Frame::Array(public().map(|c| Frame::bulk(c.name)).collect())
    } else if eq(sub, "help") {
        Frame::Array(
            [
                "COMMAND",
                "COUNT",
                "INFO [<command-name> ...]",
                "DOCS [<command-name> ...]",
                "GETKEYS <full-command>",
                "LIST",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        )
    } else {
        reply::unknown_subcommand(sub, "command")
    }
}

async fn config_cmd(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    let shared = session.ctx.shared.clone();
    if eq(sub, "get") {
        if args.len() < 3 {
            return reply::wrong_arity("config|get");
        }
        let config = shared.config();
        let mut pairs = Vec::new();
        // Options Redis tools ask for, which Moon answers with fixed values.
        let fixed = [("save", ""), ("cluster-enabled", "no")];
        for pattern in &args[2..] {
            let p = pattern.to_ascii_lowercase();
            for key in config::KEYS.iter().map(|k| k.name) {
                if glob_match(&p, key.as_bytes())
                    && !pairs.iter().any(|(k, _): &(String, String)| k == key)
                {
                    pairs.push((key.to_string(), config.get(key).unwrap_or_default()));
                }
            }
            for (key, value) in fixed {
                if glob_match(&p, key.as_bytes()) && !pairs.iter().any(|(k, _)| k == key) {
                    pairs.push((key.to_string(), value.to_string()));
                }
            }
            // An old name asked for by itself answers under that name, as in Redis.
            let name = String::from_utf8_lossy(&p).into_owned();
            let canonical = config::canonical_key(&name);
            if canonical != name && !pairs.iter().any(|(k, _)| *k == name) {
                if let Some(v) = config.get(&canonical) {
                    pairs.push((name, v));
                }
            }
        }
        Frame::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Frame::bulk(k), Frame::bulk(v)))
                .collect(),
        )
    } else if eq(sub, "set") {
        if args.len() < 4 || !args.len().is_multiple_of(2) {
            return reply::wrong_arity("config|set");
        }
        let mut candidate = shared.config();
        for pair in args[2..].chunks(2) {
            let key = config::canonical_key(&text(&pair[0]).to_ascii_lowercase());
            let Some(row) = config::key(&key) else {
                return Frame::Error(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    reply::lossy(&pair[0], 64)
                ));
            };
            if row.mutability == Mutability::Startup {
                return Frame::Error(format!("ERR CONFIG SET failed (possibly related to argument '{key}') - can't set immutable config"));
            }
            if let Err(e) = candidate.set(&key, &text(&pair[1])) {
                return Frame::Error(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{key}') - {}",
                    e.message
                ));
            }
        }
        let policy = candidate.appendfsync;
        let memory = candidate.memory_limit();
        let encodings = candidate.encodings;
        let notify = candidate.notify_keyspace_events;
        let pubsub_limit = candidate.output_limits[2];
        let lazyfree = candidate.lazyfree;
        // New TLS files are loaded (and checked) before anything changes.
        let tls_keys = [
            "tls-cert-file",
            "tls-key-file",
            "tls-ca-cert-file",
            "tls-auth-clients",
        ];
        let tls_key = args[2..]
            .chunks(2)
            .find_map(|p| tls_keys.iter().find(|k| eq(&p[0], k)));
        let tls_changed = tls_key.is_some();
        let new_tls = if tls_changed && candidate.tls_port != 0 {
            match crate::tls::server_config(&candidate) {
                Ok(c) => Some(c),
                Err(e) => {
                    return Frame::Error(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{}') - {e}",
                        tls_key.copied().unwrap_or("tls-cert-file")
                    ))
                }
            }
        } else {
            None
        };
        if let Some(c) = new_tls {
            if let Ok(mut slot) = shared.tls.write() {
                *slot = Some(c);
            }
        }
        // Nothing is refused from here on: the new settings take effect.
        moon_store::lazyfree::set_policy(lazyfree);
        let requirepass = candidate.requirepass.clone();
        let old_requirepass = shared.update_config(|c| std::mem::replace(c, candidate).requirepass);
        if requirepass != old_requirepass {
            // requirepass is the default user's password.
            shared.update_acl(|acl| acl.set_requirepass(requirepass.as_deref()));
        }
        // Every shard's writer follows the new fsync policy from its next round, and its
        // store the new memory limit from its next command.
        session
            .ctx
            .shard
            .call_all(move |s: &Shard| {
                if let Some(w) = s.aof() {
                    w.set_policy(policy);
                }
                s.store().set_memory_limit(memory);
                s.store().set_encodings(encodings);
                crate::pubsub::set_notify(s, notify);
                crate::pubsub::set_limit(pubsub_limit);
            })
            .await;
        Frame::OK
    } else if eq(sub, "resetstat") && args.len() == 2 {
        Frame::OK
    } else if eq(sub, "help") {
        Frame::Array(
            [
                "CONFIG <subcommand>",
                "GET <pattern>",
                "SET <directive> <value>",
                "RESETSTAT",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        )
    } else {
        reply::unknown_subcommand(sub, "config")
    }
}

/// One shard's numbers for INFO.
#[derive(Clone, Default)]
struct ShardInfo {
    store: StoreStats,
    /// (database, keys, keys with a deadline) of each non-empty database.
    dbs: Vec<(usize, u64, u64)>,
    commands: u64,
    connections: u64,
    rejected: u64,
    input: u64,
    output: u64,
    aof: Option<AofStatus>,
    /// Clients closed for passing their output buffer limit.
    output_limit_closed: u64,
}

/// The process's CPU time (user, system) in seconds, from getrusage.
fn cpu_seconds() -> (f64, f64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (secs(u.user_time()), secs(u.system_time()))
        }
        Err(_) => (0.0, 0.0),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}M", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

async fn info(session: &mut Session, args: &[Bytes]) -> Frame {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| text(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let per_shard = session
        .ctx
        .shard
        .call_all(|s: &Shard| {
            let c = &s.counters;
            let store = s.store();
            ShardInfo {
                store: store.stats(),
                dbs: store.db_stats(),
                commands: c.commands_processed.get(),
                connections: c.connections_received.get(),
                rejected: c.rejected_connections.get(),
                input: c.net_input_bytes.get(),
                output: c.net_output_bytes.get(),
                aof: s.aof().map(|w| w.status()),
                output_limit_closed: crate::pubsub::disconnections(),
            }
        })
        .await;
    let mut t = ShardInfo::default();
    for s in per_shard.iter().flatten() {
        t.store.keys += s.store.keys;
        t.store.expires += s.store.expires;
        t.store.keyspace_hits += s.store.keyspace_hits;
        t.store.keyspace_misses += s.store.keyspace_misses;
        t.store.expired_keys += s.store.expired_keys;
        t.store.evicted_keys += s.store.evicted_keys;
        t.store.used_memory += s.store.used_memory;
        t.commands += s.commands;
        t.connections += s.connections;
        t.rejected += s.rejected;
        t.input += s.input;
        t.output += s.output;
        t.output_limit_closed += s.output_limit_closed;
    }
    let shared = &session.ctx.shared;
    let config = shared.config();
    let uptime = shared.started.elapsed().as_secs();
    let mut out = String::new();
    let _ = |_: ()| ();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nmoon_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:{}\r\nshards:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            shared.port.load(Ordering::Relaxed),
            uptime / 86400,
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            config.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            session.ctx.shard.count(),
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            shared.connected_clients.load(Ordering::Relaxed),
            config.maxclients
        );
    }
    if want("memory") {
        // used_memory is the keyspaces' own account (keys, values, a fixed overhead per key),
        // the figure maxmemory is compared with; used_memory_rss is what the process holds.
        let rss = rss_bytes();
        let used = t.store.used_memory;
        let (lazy_pending, lazy_freed) = moon_store::lazyfree::stats();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_dataset:{used}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmaxmemory_samples:{}\r\nmem_allocator:libc\r\nlazyfree_pending_objects:{}\r\nlazyfreed_objects:{}\r\n",
            human(used),
            human(rss),
            config.maxmemory,
            human(config.maxmemory),
            config.maxmemory_policy.as_str(),
            config.maxmemory_samples,
            lazy_pending,
            lazy_freed,
        );
        for (i, s) in per_shard.iter().enumerate() {
            let Some(s) = s else { continue };
            let _ = write!(
                out,
                "shard{i}_used_memory:{}\r\nshard{i}_maxmemory:{}\r\n",
                s.store.used_memory, s.store.maxmemory
            );
        }
        out.push_str("\r\n");
    }
    if want("persistence") {
        persistence_section(&mut out, &config, &per_shard, &shared.rewrite);
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:0\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\nclient_output_buffer_limit_disconnections:{}\r\n\r\n",
            t.connections, t.commands, t.input, t.output, t.rejected, t.store.expired_keys, t.store.evicted_keys, t.store.keyspace_hits, t.store.keyspace_misses, t.output_limit_closed
        );
    }
    if want("replication") {
        out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if want("cpu") {
        let (user, sys) = cpu_seconds();
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\r\n"
        );
    }
    if want("cluster") {
        out.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        let mut dbs: std::collections::BTreeMap<usize, (u64, u64)> = Default::default();
        for s in per_shard.iter().flatten() {
            for &(db, keys, expires) in &s.dbs {
                let e = dbs.entry(db).or_default();
                e.0 += keys;
                e.1 += expires;
            }
        }
        for (db, (keys, expires)) in dbs {
            let _ = write!(out, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    Frame::Verbatim(Bytes::from(out))
}

/// SCAN and RANDOMKEY, which walk the shards one after the other.
pub async fn special(session: &mut Session, spec: &CommandSpec, args: &[Bytes]) -> Frame {
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    match spec.name {
        "scan" => scan(&shard, session.tx, session.db, args).await,
        "randomkey" => {
            let start = (now_ms() as usize) % n;
            for i in 0..n {
                let s = (start + i) % n;
                let cmds =
                    moon_store::in_db(session.db, vec![vec![Bytes::from_static(b"RANDOMKEY")]]);
                let mut r = shard.run_batch_in(session.tx, s, cmds).await;
                if let Some(f @ Frame::Bulk(_)) = r.pop() {
                    return f;
                }
            }
            Frame::Null
        }
        _ => reply::unknown_command(args),
    }
}

/// Bits of a SCAN cursor that name the shard; the rest is that shard's position bound.
const SHARD_BITS: u32 = 10;

/// SCAN across shards: the cursor is `bound << 10 | shard`; shards are walked in order, each
/// from its top position down (see `Keyspace::scan`). Cursor 0 starts at shard 0 and a reply
/// cursor 0 means every shard was walked.
async fn scan(
    shard: &std::rc::Rc<Shard>,
    tx: Option<moon_shard::Tx>,
    db: usize,
    args: &[Bytes],
) -> Frame {
    let n = shard.count();
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return err(reply::INVALID_CURSOR);
    };
    let target = (cursor & ((1 << SHARD_BITS) - 1)) as usize;
    if target >= n {
        return Frame::Array(vec![Frame::bulk("0"), Frame::Array(Vec::new())]);
    }
    let bound = cursor >> SHARD_BITS;
    let mut cmd = vec![Bytes::from_static(b"SCAN"), Bytes::from(bound.to_string())];
    cmd.extend(args[2..].iter().cloned());
    let reply = shard
        .run_batch_in(tx, target, moon_store::in_db(db, vec![cmd]))
        .await
        .pop()
        .unwrap_or(Frame::Null);
    let Frame::Array(mut parts) = reply else {
        return reply;
    };
    let keys = parts.pop().unwrap_or(Frame::Array(Vec::new()));
    let next_bound = match parts.pop() {
        Some(Frame::Bulk(b)) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let next = if next_bound > 0 {
        (next_bound << SHARD_BITS) | target as u64
    } else if target + 1 < n {
        (target + 1) as u64
    } else {
        0
    };
    Frame::Array(vec![Frame::bulk(next.to_string()), keys])
}

/// INFO persistence: Redis's fields for the whole server, then one line per shard's log.
fn persistence_section(
    out: &mut String,
    config: &Config,
    per_shard: &[Option<ShardInfo>],
    rewrite: &crate::shared::RewriteState,
) {
    let logs: Vec<&AofStatus> = per_shard
        .iter()
        .flatten()
        .filter_map(|s| s.aof.as_ref())
        .collect();
    let write_ok = logs.iter().all(|a| a.last_write_ok && a.error.is_none());
    let fsync_ok = logs.iter().all(|a| a.last_fsync_ok);
    let rw = rewrite.stats();
    let (base_size, current_size) = rewrite.sizes();
    let _ = write!(
        out,
        "# Persistence\r\nloading:0\r\naof_enabled:{}\r\naof_layout:{}\r\naof_fsync:{}\r\naof_writers:{}\r\naof_last_write_status:{}\r\naof_last_fsync_status:{}\r\naof_current_size:{current_size}\r\naof_base_size:{base_size}\r\nrdb_bgsave_in_progress:0\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:0\r\naof_last_bgrewrite_status:{}\r\naof_last_rewrite_time_sec:{}\r\naof_rewrites:{}\r\n",
        u8::from(config.appendonly),
        if config.appendonly { "per-shard" } else { "none" },
        config.appendfsync.as_str(),
        logs.len(),
        if write_ok { "ok" } else { "err" },
        if fsync_ok { "ok" } else { "err" },
        u8::from(rewrite.in_progress()),
        if rw.last_ok { "ok" } else { "err" },
        if rw.last_duration_ms < 0 { -1 } else { rw.last_duration_ms / 1000 },
        rw.rewrites,
    );
    for (i, s) in per_shard.iter().enumerate() {
        if let Some(a) = s.as_ref().and_then(|s| s.aof.as_ref()) {
            let _ = write!(
                out,
                "aof_shard{i}:lsn={},durable_lsn={},incr_size={},write_status={},fsync_status={}\r\n",
                a.lsn,
                a.durable_lsn,
                a.file_size,
                if a.last_write_ok { "ok" } else { "err" },
                if a.last_fsync_ok { "ok" } else { "err" },
            );
        }
    }
    if let Some(e) = logs.iter().find_map(|a| a.error.as_ref()) {
        let _ = write!(out, "aof_last_error:{e}\r\n");
    }
    out.push_str("\r\n");
}

/// DEBUG, as far as tests and operators need it: `SLEEP <seconds>` stops the connection's
/// shard for that long (as Redis's stops the server), `HELP`. Off unless
/// `enable-debug-command` allows it (Redis's refusal text).
fn debug(session: &Session, args: &[Bytes]) -> Frame {
    let allowed = match session.ctx.shared.config().enable_debug_command {
        crate::config::DebugCommand::Yes => true,
        crate::config::DebugCommand::Local => session.info.is_loopback(),
        crate::config::DebugCommand::No => false,
    };
    if !allowed {
        return err("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.");
    }
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("sleep", 3) => {
            let secs = std::str::from_utf8(&args[2])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0);
            match secs {
                Some(s) => {
                    // Blocks this shard's thread on purpose: nothing else runs on it meanwhile.
                    std::thread::sleep(std::time::Duration::from_secs_f64(s));
                    Frame::OK
                }
                None => err("ERR value is not a valid float or out of range (0 to 3600 seconds)"),
            }
        }
        ("help", 2) => Frame::Array(
            [
                "DEBUG <subcommand> [<arg> ...]. Subcommands are:",
                "SLEEP <seconds>",
                "    Stop the connection's shard for <seconds> (fractions allowed).",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|l| Frame::Simple(l))
            .collect(),
        ),
        _ => Frame::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try DEBUG HELP."
        )),
    }
}
