//! `moon-server`: parses the configuration and runs the server.
//!
//! Exit codes: 0 after a clean shutdown or a successful `--check-config`, 2 for a bad
//! configuration, 1 for any other failure to start.

mod acl;
mod acl_cmd;
mod admin;
mod config;
mod conn;
mod cross;
mod dispatch;
mod persistence;
mod plan;
mod pubsub;
mod rewrite;
mod server;
mod session;
mod shared;
mod tls;
mod tracking;
mod txn;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::Config;

/// Moon: a Redis-compatible, sharded, durable in-memory key-value server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, print it, and exit (0 if valid, 2 if not).
    #[arg(long)]
    check_config: bool,
    /// Address to listen on.
    #[arg(long)]
    bind: Option<String>,
    /// TCP port (0 = any free port).
    #[arg(long)]
    port: Option<String>,
    /// Number of shards (default: number of CPUs).
    #[arg(long)]
    shards: Option<String>,
    /// Data directory.
    #[arg(long)]
    dir: Option<String>,
    /// yes | no
    #[arg(long)]
    appendonly: Option<String>,
    /// always | everysec | no
    #[arg(long)]
    appendfsync: Option<String>,
    /// Password required from clients.
    #[arg(long)]
    requirepass: Option<String>,
    /// Largest argument size, e.g. 512mb.
    #[arg(long)]
    proto_max_bulk_len: Option<String>,
    /// Maximum number of client connections.
    #[arg(long)]
    maxclients: Option<String>,
    /// Databases clients may SELECT.
    #[arg(long)]
    databases: Option<String>,
    /// Memory the keyspaces may hold, e.g. 4gb (0 = no limit).
    #[arg(long)]
    maxmemory: Option<String>,
    /// noeviction | allkeys-lru | allkeys-lfu | allkeys-random | volatile-lru | volatile-lfu |
    /// volatile-random | volatile-ttl
    #[arg(long)]
    maxmemory_policy: Option<String>,
    /// Keys sampled to choose one to evict (1-64).
    #[arg(long)]
    maxmemory_samples: Option<String>,
    /// Entries of a hash kept compact (listpack).
    #[arg(long)]
    hash_max_listpack_entries: Option<String>,
    /// Largest field or value of a compact hash, in bytes.
    #[arg(long)]
    hash_max_listpack_value: Option<String>,
    /// Members of a set of integers kept compact (intset).
    #[arg(long)]
    set_max_intset_entries: Option<String>,
    /// Members of a set kept compact (listpack).
    #[arg(long)]
    set_max_listpack_entries: Option<String>,
    /// Largest member of a compact set, in bytes.
    #[arg(long)]
    set_max_listpack_value: Option<String>,
    /// Close clients idle for this many seconds (0 = never).
    #[arg(long)]
    timeout: Option<String>,
    /// Close a client whose unparsed input passes this size, e.g. 1gb.
    #[arg(long)]
    client_query_buffer_limit: Option<String>,
    /// debug | verbose | notice | warning
    #[arg(long)]
    loglevel: Option<String>,
    /// yes | no: pin each shard to a CPU.
    #[arg(long)]
    pin_cpus: Option<String>,
    /// Automatic BGREWRITEAOF after this much growth, in percent (0 = never).
    #[arg(long)]
    auto_aof_rewrite_percentage: Option<String>,
    /// ... once the AOF is at least this big, e.g. 64mb.
    #[arg(long)]
    auto_aof_rewrite_min_size: Option<String>,
    /// Output limits, e.g. "pubsub 32mb 8mb 60": a subscriber past the hard limit, or past
    /// the soft one for that many seconds, is disconnected.
    #[arg(long)]
    client_output_buffer_limit: Option<String>,
    /// Keyspace notifications, Redis's flags (e.g. KEA); empty = off.
    #[arg(long)]
    notify_keyspace_events: Option<String>,
    /// Users (ACL) file, in Redis's format.
    #[arg(long)]
    aclfile: Option<String>,
    /// yes | no: refuse non-loopback clients while the default user has no password.
    #[arg(long)]
    protected_mode: Option<String>,
    /// TLS port (0 = no TLS), beside the plain port.
    #[arg(long)]
    tls_port: Option<String>,
    /// The server's certificate chain (PEM).
    #[arg(long)]
    tls_cert_file: Option<String>,
    /// The server's private key (PEM).
    #[arg(long)]
    tls_key_file: Option<String>,
    /// CA certificates client certificates must chain to (PEM).
    #[arg(long)]
    tls_ca_cert_file: Option<String>,
    /// yes | no | optional: whether clients must present a certificate.
    #[arg(long)]
    tls_auth_clients: Option<String>,
    /// yes | no: keys evicted under maxmemory are freed off the shard's thread.
    #[arg(long)]
    lazyfree_lazy_eviction: Option<String>,
    /// yes | no: expired keys are freed off the shard's thread.
    #[arg(long)]
    lazyfree_lazy_expire: Option<String>,
    /// yes | no: values a command replaces (SET over a big hash, RENAME) are freed off it.
    #[arg(long)]
    lazyfree_lazy_server_del: Option<String>,
    /// yes | no: DEL frees as UNLINK does.
    #[arg(long)]
    lazyfree_lazy_user_del: Option<String>,
    /// yes | no: FLUSHALL/FLUSHDB without a mode free as with ASYNC.
    #[arg(long)]
    lazyfree_lazy_user_flush: Option<String>,
    /// no | yes | local: who may run DEBUG (DEBUG SLEEP stops a shard).
    #[arg(long)]
    enable_debug_command: Option<String>,
}

/// Every config key's flag, with what was given for it.
fn flags(args: &Args) -> Vec<(&'static str, &Option<String>)> {
    vec![
        ("bind", &args.bind),
        ("port", &args.port),
        ("shards", &args.shards),
        ("dir", &args.dir),
        ("appendonly", &args.appendonly),
        ("appendfsync", &args.appendfsync),
        ("requirepass", &args.requirepass),
        ("proto-max-bulk-len", &args.proto_max_bulk_len),
        ("maxclients", &args.maxclients),
        ("databases", &args.databases),
        ("maxmemory", &args.maxmemory),
        ("maxmemory-policy", &args.maxmemory_policy),
        ("maxmemory-samples", &args.maxmemory_samples),
        ("hash-max-listpack-entries", &args.hash_max_listpack_entries),
        ("hash-max-listpack-value", &args.hash_max_listpack_value),
        ("set-max-intset-entries", &args.set_max_intset_entries),
        ("set-max-listpack-entries", &args.set_max_listpack_entries),
        ("set-max-listpack-value", &args.set_max_listpack_value),
        ("timeout", &args.timeout),
        ("client-query-buffer-limit", &args.client_query_buffer_limit),
        ("loglevel", &args.loglevel),
        ("pin-cpus", &args.pin_cpus),
        (
            "auto-aof-rewrite-percentage",
            &args.auto_aof_rewrite_percentage,
        ),
        ("auto-aof-rewrite-min-size", &args.auto_aof_rewrite_min_size),
        (
            "client-output-buffer-limit",
            &args.client_output_buffer_limit,
        ),
        ("notify-keyspace-events", &args.notify_keyspace_events),
        ("aclfile", &args.aclfile),
        ("protected-mode", &args.protected_mode),
        ("tls-port", &args.tls_port),
        ("tls-cert-file", &args.tls_cert_file),
        ("tls-key-file", &args.tls_key_file),
        ("tls-ca-cert-file", &args.tls_ca_cert_file),
        ("tls-auth-clients", &args.tls_auth_clients),
        ("lazyfree-lazy-eviction", &args.lazyfree_lazy_eviction),
        ("lazyfree-lazy-expire", &args.lazyfree_lazy_expire),
        ("lazyfree-lazy-server-del", &args.lazyfree_lazy_server_del),
        ("lazyfree-lazy-user-del", &args.lazyfree_lazy_user_del),
        ("lazyfree-lazy-user-flush", &args.lazyfree_lazy_user_flush),
        ("enable-debug-command", &args.enable_debug_command),
    ]
}

fn load_config(args: &Args) -> Result<Config, String> {
    let mut config = Config::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        config
            .apply_toml(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        config.config_file = Some(path.clone());
    }
    let flags = flags(args);
    for (key, value) in flags {
        if let Some(v) = value {
            config.set(key, v).map_err(|e| format!("--{key}: {e}"))?;
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moon-server: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("configuration OK");
        for (key, _) in config::KEYS {
            let value = config.get(key).unwrap_or_default();
            let shown = if *key == "requirepass" && !value.is_empty() {
                "(set)".to_string()
            } else {
                value
            };
            println!("{key} = {shown}");
        }
        return ExitCode::SUCCESS;
    }
    server::init_logging(&config.loglevel);
    // Crash-only: a panic on any thread (a shard executor above all) ends the process at once
    // instead of leaving a port open with a dead shard behind it. Every acknowledged write is
    // already in the log; recovery is what the log is for.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!("panic: {info}; exiting (recovery replays the log at the next start)");
        std::process::exit(101);
    }));
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("moon-server: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// Every key of the configuration can be given as a flag, and no flag is unknown to it.
    #[test]
    fn every_config_key_has_a_flag() {
        let args = super::Args::parse_from(["moon-server"]);
        let mut flagged: Vec<&str> = super::flags(&args).iter().map(|(k, _)| *k).collect();
        let mut keys: Vec<&str> = super::config::KEYS.iter().map(|(k, _)| *k).collect();
        flagged.sort_unstable();
        keys.sort_unstable();
        assert_eq!(flagged, keys);
    }
}
