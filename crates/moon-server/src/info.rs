//! INFO: every section Moon has, each shard's numbers gathered and summed.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use moon_aof::AofStatus;
use moon_proto::Frame;
use moon_shard::Shard;
use moon_store::StoreStats;

use crate::config::Config;
use crate::session::Session;
use crate::shared::REDIS_COMPAT_VERSION;

use moon_store::args::text;

/// One shard's numbers for INFO.
#[derive(Clone, Default)]
pub(crate) struct ShardInfo {
    pub(crate) store: StoreStats,
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
    error_replies: u64,
    /// Error replies by code (errorstats).
    errors: std::collections::BTreeMap<String, u64>,
    /// Commands, input and output bytes per second lately.
    rates: [f64; 3],
    /// Clients connected to this shard.
    clients: u64,
    /// The largest memory account this shard's samples saw.
    pub(crate) memory_peak: u64,
    /// Messages this shard sent to others for cross-shard work.
    cross_shard_batches: u64,
    /// Calls by command (commandstats).
    command_stats: Vec<(String, moon_store::stats::Stat)>,
}

/// The process's CPU time (user, system) in seconds, from getrusage.
pub(crate) fn cpu_seconds() -> (f64, f64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (secs(u.user_time()), secs(u.system_time()))
        }
        Err(_) => (0.0, 0.0),
    }
}

pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

pub(crate) fn human(bytes: u64) -> String {
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

/// Every shard's numbers (`None` for a shard that is gone) and their sums; the per-command
/// tables only `with_commands`.
pub(crate) async fn gather(
    session: &Session,
    with_commands: bool,
) -> (Vec<Option<ShardInfo>>, ShardInfo) {
    let per_shard = session
        .ctx
        .shard
        .call_all(move |s: &Shard| {
            let c = &s.counters;
            let store = s.store();
            // Errors the commands of scripts got on this shard (`moon_store::stats`).
            let script_errors = moon_store::stats::script_errors();
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
                error_replies: c.error_replies.get()
                    + script_errors.iter().map(|(_, n)| n).sum::<u64>(),
                errors: {
                    let mut errors = c.errors.borrow().clone();
                    for (code, n) in script_errors.iter().filter(|(code, _)| !code.is_empty()) {
                        *errors.entry(code.clone()).or_default() += n;
                    }
                    errors
                },
                rates: c.rates(),
                clients: c.connected_clients.get(),
                memory_peak: c.memory_peak.get(),
                cross_shard_batches: c.cross_shard_batches.get(),
                command_stats: if with_commands {
                    moon_store::stats::snapshot()
                } else {
                    Vec::new()
                },
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
        t.store.client_buffers += s.store.client_buffers;
        // Each shard's own peak, sampled every 100 ms: their sum bounds the true peak from
        // above (shards need not peak together).
        t.memory_peak += s.memory_peak.max(s.store.used_memory);
        t.store.changes += s.store.changes;
        t.commands += s.commands;
        t.connections += s.connections;
        t.rejected += s.rejected;
        t.input += s.input;
        t.output += s.output;
        t.output_limit_closed += s.output_limit_closed;
        t.error_replies += s.error_replies;
        for (sum, r) in t.rates.iter_mut().zip(s.rates) {
            *sum += r;
        }
        for (code, n) in &s.errors {
            *t.errors.entry(code.clone()).or_default() += n;
        }
    }
    (per_shard, t)
}

/// Each non-empty database's keys and keys with a deadline, summed over the shards:
/// (database, keys, expires), by database.
pub(crate) fn databases(per_shard: &[Option<ShardInfo>]) -> Vec<(usize, u64, u64)> {
    let mut dbs: std::collections::BTreeMap<usize, (u64, u64)> = Default::default();
    for s in per_shard.iter().flatten() {
        for &(db, keys, expires) in &s.dbs {
            let e = dbs.entry(db).or_default();
            e.0 += keys;
            e.1 += expires;
        }
    }
    dbs.into_iter().map(|(d, (k, e))| (d, k, e)).collect()
}

pub(crate) async fn info(session: &mut Session, args: &[Bytes]) -> Frame {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| text(a).to_ascii_lowercase())
        .collect();
    // Redis's groups: no argument or `default` is the default sections; `all` adds the
    // per-command ones (commandstats, latencystats), and `everything` the modules' too
    // (none).
    const DEFAULT: [&str; 12] = [
        "server",
        "clients",
        "memory",
        "persistence",
        "stats",
        "replication",
        "cpu",
        "modules",
        "errorstats",
        "cluster",
        "keyspace",
        "moon",
    ];
    let default = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let all = wanted.iter().any(|w| w == "all" || w == "everything");
    let want = |s: &str| {
        (default && DEFAULT.contains(&s))
            || (all && (s == "commandstats" || s == "latencystats"))
            || wanted.iter().any(|w| w == s)
    };
    let with_commands = want("commandstats") || want("latencystats");
    let (per_shard, t) = gather(session, with_commands).await;
    let shared = &session.ctx.shared;
    let config = shared.config();
    let uptime = shared.started.elapsed().as_secs();
    let mut out = String::new();
    let _ = |_: ()| ();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nmoon_version:{}\r\nredis_mode:standalone\r\nrun_id:{}\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:{}\r\nshards:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            shared.run_id,
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
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            shared.connected_clients.load(Ordering::Relaxed),
            config.maxclients,
            shared.blocked_clients.load(Ordering::Relaxed)
        );
    }
    if want("memory") {
        // used_memory is the keyspaces' own account (keys, values, a fixed overhead per key)
        // plus the clients' buffers, the figure maxmemory is compared with (so nothing in it
        // is left out of eviction: mem_not_counted_for_evict is 0, where Redis leaves out its
        // AOF and replication buffers); used_memory_rss is what the process holds.
        let rss = rss_bytes();
        let used = t.store.used_memory;
        let clients = t.store.client_buffers;
        let (lazy_pending, lazy_freed) = moon_store::lazyfree::stats();
        let (script_bytes, scripts) = moon_store::scripts::stats();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_peak:{}\r\nused_memory_peak_human:{}\r\nused_memory_dataset:{}\r\nmem_clients_normal:{clients}\r\nmem_not_counted_for_evict:0\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmaxmemory_samples:{}\r\nmem_allocator:libc\r\nlazyfree_pending_objects:{}\r\nlazyfreed_objects:{}\r\nused_memory_scripts:{}\r\nnumber_of_cached_scripts:{}\r\n",
            human(used),
            t.memory_peak,
            human(t.memory_peak),
            used.saturating_sub(clients),
            human(rss),
            config.maxmemory,
            human(config.maxmemory),
            config.maxmemory_policy.as_str(),
            config.maxmemory_samples,
            lazy_pending,
            lazy_freed,
            script_bytes,
            scripts,
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
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\ninstantaneous_input_kbps:{:.2}\r\ninstantaneous_output_kbps:{:.2}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\nclient_output_buffer_limit_disconnections:{}\r\ntotal_error_replies:{}\r\nsync_full:{}\r\nsync_partial_ok:{}\r\nsync_partial_err:{}\r\nmigrate_cached_sockets:0\r\n\r\n",
            t.connections, t.commands, t.rates[0].round() as u64, t.input, t.output, t.rates[1] / 1024.0, t.rates[2] / 1024.0, t.rejected, t.store.expired_keys, t.store.evicted_keys, t.store.keyspace_hits, t.store.keyspace_misses, t.output_limit_closed, t.error_replies,
            shared.repl.syncs.full.load(Ordering::Relaxed), shared.repl.syncs.partial_ok.load(Ordering::Relaxed), shared.repl.syncs.partial_err.load(Ordering::Relaxed)
        );
    }
    // Every shard's command figures, by name (commandstats, latencystats).
    let mut by_name = std::collections::BTreeMap::new();
    for s in per_shard.iter().flatten() {
        moon_store::stats::merge(&mut by_name, &s.command_stats);
    }
    if want("commandstats") {
        out.push_str("# Commandstats\r\n");
        for (name, s) in &by_name {
            if s.calls == 0 && s.rejected == 0 && s.failed == 0 {
                continue;
            }
            let per_call = if s.calls == 0 {
                0.0
            } else {
                s.usec as f64 / s.calls as f64
            };
            let _ = write!(
                out,
                "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                s.calls, s.usec, s.rejected, s.failed
            );
        }
        out.push_str("\r\n");
    }
    if want("latencystats") {
        out.push_str("# Latencystats\r\n");
        for (name, s) in &by_name {
            if s.latency.count() == 0 || !config.latency_tracking {
                continue;
            }
            let values: Vec<String> = config
                .latency_percentiles
                .iter()
                .map(|p| format!("p{p}={:.3}", s.latency.percentile(*p) as f64))
                .collect();
            let _ = write!(
                out,
                "latency_percentiles_usec_{name}:{}\r\n",
                values.join(",")
            );
        }
        out.push_str("\r\n");
    }
    if want("errorstats") {
        out.push_str("# Errorstats\r\n");
        for (code, n) in &t.errors {
            let _ = write!(out, "errorstat_{code}:count={n}\r\n");
        }
        out.push_str("\r\n");
    }
    if want("replication") {
        out.push_str(&crate::replication::info_section(shared));
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
        for (db, keys, expires) in databases(&per_shard) {
            let _ = write!(out, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    if want("moon") {
        // Moon's own: each shard's share, to see an unbalanced shard or a log falling behind.
        out.push_str("# Moon\r\n");
        for (i, s) in per_shard.iter().enumerate() {
            let Some(s) = s else {
                let _ = write!(out, "shard{i}:status=gone\r\n");
                continue;
            };
            let _ = write!(
                out,
                "shard{i}:keys={},expires={},used_memory={},client_buffers={},clients={},commands={},ops_per_sec={},cross_shard_messages={}",
                s.store.keys,
                s.store.expires,
                s.store.used_memory,
                s.store.client_buffers,
                s.clients,
                s.commands,
                s.rates[0].round() as u64,
                s.cross_shard_batches,
            );
            if let Some(a) = &s.aof {
                let _ = write!(
                    out,
                    ",aof_lsn={},aof_durable_lsn={},aof_unsynced_records={},aof_incr_size={}",
                    a.lsn,
                    a.durable_lsn,
                    a.lsn.saturating_sub(a.durable_lsn),
                    a.file_size
                );
            }
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
    }
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    Frame::Verbatim(Bytes::from(out))
}

/// INFO persistence: Redis's fields for the whole server, then one line per shard's log.
pub(crate) fn persistence_section(
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
    // Moon takes no snapshots: the changes logged since the process started.
    let changes: u64 = per_shard.iter().flatten().map(|s| s.store.changes).sum();
    let _ = write!(
        out,
        "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:{changes}\r\naof_enabled:{}\r\naof_layout:{}\r\naof_fsync:{}\r\naof_writers:{}\r\naof_last_write_status:{}\r\naof_last_fsync_status:{}\r\naof_current_size:{current_size}\r\naof_base_size:{base_size}\r\nrdb_bgsave_in_progress:0\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:0\r\naof_last_bgrewrite_status:{}\r\naof_last_rewrite_time_sec:{}\r\naof_rewrites:{}\r\n",
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
                "aof_shard{i}:lsn={},durable_lsn={},incr_size={},write_status={},fsync_status={},writes={},fsyncs={}\r\n",
                a.lsn,
                a.durable_lsn,
                a.file_size,
                if a.last_write_ok { "ok" } else { "err" },
                if a.last_fsync_ok { "ok" } else { "err" },
                a.writes,
                a.fsyncs,
            );
        }
    }
    if let Some(e) = logs.iter().find_map(|a| a.error.as_ref()) {
        let _ = write!(out, "aof_last_error:{e}\r\n");
    }
    out.push_str("\r\n");
}
