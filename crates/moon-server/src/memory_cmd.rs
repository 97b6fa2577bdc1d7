//! MEMORY: one key's share of memory (USAGE, run on the key's shard), and where the
//! server's memory goes (STATS, DOCTOR) from every shard's account.

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::{eq, parse_i64};
use moon_store::reply;

use crate::session::Session;

pub(crate) async fn memory(session: &Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    if eq(sub, "usage") {
        let samples_ok = args.len() == 3
            || (args.len() == 5 && eq(&args[3], "samples") && parse_i64(&args[4]).is_some());
        if !samples_ok {
            return reply::unknown_subcommand(sub, "memory");
        }
        let shards = session.ctx.shard.count();
        let owner = moon_store::slot::shard_for_key(&args[2], shards);
        let (key, db) = (args[2].clone(), session.db);
        let usage =
            move |s: &moon_shard::Shard| s.store().memory_usage(db, &key, moon_shard::now_ms());
        // Not in the middle of another client's transaction (inside this client's EXEC, its
        // own transaction holds the shard: waiting for it would never end).
        let bytes = if session.tx.is_none() {
            session.ctx.shard.call_on_unlocked(owner, usage).await
        } else {
            session.ctx.shard.call_on(owner, usage).await
        }
        .flatten();
        return bytes.map_or(Frame::Null, |b| Frame::Integer(b as i64));
    }
    if args.len() != 2 {
        return reply::unknown_subcommand(sub, "memory");
    }
    if eq(sub, "stats") {
        stats(session).await
    } else if eq(sub, "doctor") {
        doctor(session).await
    } else if eq(sub, "malloc-stats") {
        Frame::bulk("Stats not supported for the current allocator")
    } else if eq(sub, "purge") {
        Frame::OK
    } else if eq(sub, "help") {
        reply::help(
            "MEMORY",
            &[
                "DOCTOR",
                "    Return memory problems reports.",
                "MALLOC-STATS",
                "    Return internal statistics report from the memory allocator.",
                "PURGE",
                "    Attempt to purge dirty pages for reclamation by the allocator.",
                "STATS",
                "    Return information about the memory usage of the server.",
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key> and its value.",
            ],
        )
    } else {
        reply::unknown_subcommand(sub, "memory")
    }
}

/// The figures STATS and DOCTOR read: (used, clients' buffers, scripts, keys, rss, databases
/// as (db, keys, expires), peak).
async fn figures(session: &Session) -> (u64, u64, u64, u64, u64, Vec<(usize, u64, u64)>, u64) {
    let (per_shard, t) = crate::info::gather(session, false).await;
    let (scripts, _) = moon_store::scripts::stats();
    (
        t.store.used_memory,
        t.store.client_buffers,
        scripts as u64,
        t.store.keys,
        crate::info::rss_bytes(),
        crate::info::databases(&per_shard),
        t.memory_peak,
    )
}

/// MEMORY STATS: Redis's map, with the figures Moon keeps. Memory is the shards' account
/// (keys, values, a per-key overhead, clients' buffers); scripts are counted beside it.
async fn stats(session: &Session) -> Frame {
    let (used, clients, scripts, keys, rss, dbs, peak) = figures(session).await;
    let dataset = used.saturating_sub(clients);
    let int = |n: u64| Frame::Integer(n as i64);
    let mut map = vec![
        ("peak.allocated", int(peak)),
        ("total.allocated", int(used)),
        ("replication.backlog", int(0)),
        ("clients.slaves", int(0)),
        ("clients.normal", int(clients)),
        ("aof.buffer", int(0)),
        ("lua.caches", int(scripts)),
        ("overhead.total", int(clients + scripts)),
        ("keys.count", int(keys)),
        (
            "keys.bytes-per-key",
            int(dataset.checked_div(keys).unwrap_or(0)),
        ),
        ("dataset.bytes", int(dataset)),
        (
            "dataset.percentage",
            Frame::Double(if used == 0 {
                0.0
            } else {
                dataset as f64 * 100.0 / used as f64
            }),
        ),
        (
            "peak.percentage",
            Frame::Double(if peak == 0 {
                0.0
            } else {
                used as f64 * 100.0 / peak as f64
            }),
        ),
        ("rss.bytes", int(rss)),
        (
            "fragmentation",
            Frame::Double(if used == 0 {
                0.0
            } else {
                rss as f64 / used as f64
            }),
        ),
        (
            "fragmentation.bytes",
            Frame::Integer(rss as i64 - used as i64),
        ),
    ];
    let mut out: Vec<(Frame, Frame)> = map.drain(..).map(|(k, v)| (Frame::bulk(k), v)).collect();
    for (db, keys, expires) in dbs {
        out.push((
            Frame::bulk(format!("db.{db}")),
            Frame::Map(vec![
                (Frame::bulk("keys"), int(keys)),
                (Frame::bulk("expires"), int(expires)),
            ]),
        ));
    }
    Frame::Map(out)
}

/// MEMORY DOCTOR: what in the figures an operator should look at, in plain words.
async fn doctor(session: &Session) -> Frame {
    let (used, clients, _, keys, rss, _, _) = figures(session).await;
    let mut findings = Vec::new();
    if used < 5 * 1024 * 1024 {
        return Frame::bulk(format!(
            "This instance accounts for {} in {keys} keys: too little for a diagnosis.",
            crate::info::human(used)
        ));
    }
    if clients * 2 > used {
        findings.push(format!(
            " * Clients' buffers hold {} of the {} the server accounts for: a client sending huge pipelines, or many idle connections with large buffers. CLIENT LIST shows each client's qbuf and omem.",
            crate::info::human(clients),
            crate::info::human(used)
        ));
    }
    if rss > used.saturating_mul(3) / 2 && rss > used + 10 * 1024 * 1024 {
        findings.push(format!(
            " * The process holds {} against {} accounted for ({:.2}x): allocator overhead and fragmentation, or memory freed but not yet returned to the system.",
            crate::info::human(rss),
            crate::info::human(used),
            rss as f64 / used as f64
        ));
    }
    if findings.is_empty() {
        return Frame::bulk(format!(
            "No memory problem found: {keys} keys, {} accounted for, {} held by the process.",
            crate::info::human(used),
            crate::info::human(rss)
        ));
    }
    Frame::bulk(format!("Memory findings:\n\n{}\n", findings.join("\n\n")))
}
