//! CONFIG GET/SET/RESETSTAT over the configuration table (`config::KEYS`).

use bytes::Bytes;
use moon_proto::Frame;
use moon_shard::Shard;
use moon_store::args::eq;
use moon_store::glob::glob_match;
use moon_store::reply::{self};

use crate::config::{self, Mutability};
use crate::session::Session;

use moon_store::args::text;

pub(crate) async fn config_cmd(session: &mut Session, args: &[Bytes]) -> Frame {
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
            for row in config::KEYS {
                let key = row.name;
                if row.hidden && p != key.as_bytes() {
                    continue;
                }
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
            // Other names answer under their own name too, as in Redis (`*of` finds both
            // replicaof and slaveof).
            for (alias, name) in config::ALIASES {
                if glob_match(&p, alias.as_bytes()) && !pairs.iter().any(|(k, _)| k == alias) {
                    if let Some(v) = config.get(name) {
                        pairs.push((alias.to_string(), v));
                    }
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
        let mut seen: Vec<String> = Vec::new();
        for pair in args[2..].chunks(2) {
            let key = config::canonical_key(&text(&pair[0]).to_ascii_lowercase());
            if seen.contains(&key) {
                return Frame::Error(format!("ERR CONFIG SET failed (possibly related to argument '{}') - duplicate parameter", reply::lossy(&pair[0], 64)));
            }
            seen.push(key.clone());
            let Some(row) = config::key(&key) else {
                return Frame::Error(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    reply::lossy(&pair[0], 64)
                ));
            };
            if row.mutability == Mutability::Startup {
                // Set to the value it has: nothing to change (tools that save and restore
                // every key, as Redis's own tests do, get OK).
                let mut same = candidate.clone();
                let unchanged = same.set(&key, &text(&pair[1])).is_ok()
                    && same.get(&key) == candidate.get(&key);
                if unchanged {
                    continue;
                }
                return Frame::Error(format!("ERR CONFIG SET failed (possibly related to argument '{key}') - can't set immutable config"));
            }
            if let Err(e) = candidate.set(&key, &text(&pair[1])) {
                return Frame::Error(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{key}') - {}",
                    e.message
                ));
            }
        }
        // More clients need more open files: raised now, or refused if the system will not.
        let current = shared.config().maxclients;
        if candidate.maxclients > current {
            if let Err((allowed, fits)) =
                crate::open_files::raise(candidate.maxclients, candidate.shards)
            {
                return Frame::Error(format!(
                    "ERR CONFIG SET failed (possibly related to argument 'maxclients') - the system allows {allowed} open files, room for {fits} clients (raise ulimit -n)"
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
        shared
            .repl
            .set_backlog_size(candidate.repl_backlog_size as usize);
        candidate.apply_monitors();
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
        if policy == moon_aof::FsyncPolicy::Always {
            // What was written under the looser policy is fsynced on every shard before the
            // OK: a transaction released under it (its parts written, not fsynced) could
            // otherwise be lost on one shard while a write after it on another is
            // acknowledged under `always`, and recovery would cut that write with it.
            let shard = session.ctx.shard.clone();
            let syncs = (0..shard.count())
                .map(|p| {
                    shard.call_on_async(p, |s: std::rc::Rc<Shard>| async move {
                        if let Some(w) = s.aof() {
                            w.sync_written().await;
                        }
                    })
                })
                .collect();
            moon_shard::join_all(syncs).await;
        }
        Frame::OK
    } else if eq(sub, "rewrite") && args.len() == 2 {
        let Some(path) = shared.config().config_file.clone() else {
            return Frame::StaticError("ERR The server is running without a config file");
        };
        match rewrite_file(&shared, &path) {
            Ok(()) => {
                tracing::info!("CONFIG REWRITE executed with success: {}", path.display());
                Frame::OK
            }
            Err(e) => {
                tracing::warn!("CONFIG REWRITE failed: {e}");
                Frame::Error(format!("ERR Rewriting config file: {e}"))
            }
        }
    } else if eq(sub, "resetstat") && args.len() == 2 {
        // Every shard's counters, as Redis resets its statistics (the reply itself is not
        // counted: it is not an error).
        session
            .ctx
            .shard
            .call_all(|s: &moon_shard::Shard| {
                s.counters.reset();
                s.store().reset_stats();
                moon_store::stats::reset();
            })
            .await;
        moon_store::lazyfree::reset_stats();
        Frame::OK
    } else if eq(sub, "help") {
        Frame::Array(
            [
                "CONFIG <subcommand>",
                "GET <pattern>",
                "SET <directive> <value>",
                "RESETSTAT",
                "REWRITE",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        )
    } else {
        reply::unknown_subcommand(sub, "config")
    }
}

/// CONFIG REWRITE's file work: the file as it is now, with every key's current value
/// ([`config::Config::rewrite_toml`]), replaced atomically (temp file, fsync, rename, fsync of
/// the directory) and readable by its owner only, since it may hold `requirepass`. One
/// rewrite at a time: two would each write a whole file, but the later could miss the
/// earlier's values.
fn rewrite_file(shared: &crate::shared::Shared, path: &std::path::Path) -> Result<(), String> {
    static REWRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = REWRITING.lock().unwrap_or_else(|e| e.into_inner());
    // Read under the lock: a rewrite that waited must not write an older configuration over
    // a newer one's file.
    let mut config = shared.config();
    // The port as configured (0 stays 0), not the one a free port picked.
    config.port = shared.configured_port;
    // A missing file is written new, as Redis does.
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.to_string()),
    };
    let new = config.rewrite_toml(&text)?;
    if new == text {
        return Ok(());
    }
    moon_manifest::fsio::write_atomic_private(path, new.as_bytes()).map_err(|e| e.to_string())
}
