//! Configuration: defaults, `moon.toml`, command-line flags and `CONFIG SET` all go through
//! [`Config::set`], so every source validates a value the same way and a bad value is always
//! reported with the key's name and what is allowed.

use std::net::IpAddr;
use std::path::PathBuf;

pub use moon_aof::FsyncPolicy;
use moon_store::{EvictionPolicy, MemoryLimit};

#[derive(Clone, Debug)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub shards: usize,
    pub dir: PathBuf,
    pub appendonly: bool,
    pub appendfsync: FsyncPolicy,
    pub requirepass: Option<String>,
    pub proto_max_bulk_len: u64,
    pub maxclients: u64,
    /// Databases clients may SELECT (0 .. databases-1).
    pub databases: u64,
    /// Bytes the keyspaces may hold together (0 = no limit), split evenly across shards.
    pub maxmemory: u64,
    pub maxmemory_policy: EvictionPolicy,
    pub maxmemory_samples: u64,
    /// Always 0: Moon evicts no clients.
    pub maxmemory_clients: u64,
    /// Microseconds waited after each record or key replayed (hidden; tests).
    pub key_load_delay: u64,
    /// Thresholds of the compact encodings of hashes and sets.
    pub encodings: moon_store::Encodings,
    /// Redis's `save` schedule, normalised: accepted and reported, no effect (no RDB snapshots).
    pub save: String,
    /// Redis's `repl-backlog-size`: the last bytes of the replication stream a primary keeps
    /// for its replicas' partial resyncs (allocated once a replica connected).
    pub repl_backlog_size: u64,
    /// The primary this server replicates (`replicaof host port`; REPLICAOF changes it).
    pub replicaof: Option<(String, u16)>,
    /// The password and user this replica authenticates with at its primary.
    pub masterauth: Option<String>,
    pub masteruser: Option<String>,
    /// A replica refuses clients' writes (READONLY).
    pub replica_read_only: bool,
    /// Reported to Sentinel (`slave_priority`): 0 = never promote.
    pub replica_priority: u64,
    /// Seconds of silence after which a link (either side) is taken for dead.
    pub repl_timeout: u64,
    /// A replica whose link is down still answers from its data (no: MASTERDOWN).
    pub replica_serve_stale_data: bool,
    /// A primary refuses writes unless this many replicas acknowledged within
    /// `min_replicas_max_lag` seconds (0: never refuses).
    pub min_replicas_to_write: u64,
    pub min_replicas_max_lag: u64,
    /// Close a client idle for this many seconds; 0 = never.
    pub timeout: u64,
    /// Redis's `busy-reply-threshold` (`lua-time-limit`), ms: a script running longer is busy
    /// (`moon_script`'s watch.rs; process-wide, set with the key).
    pub busy_reply_threshold: u64,
    /// SLOWLOG: commands that take at least this many microseconds are logged (negative:
    /// none), in a log of at most `slowlog_max_len` entries (`moon_store::slowlog`;
    /// process-wide, set with the key).
    pub slowlog_log_slower_than: i64,
    pub slowlog_max_len: u64,
    /// LATENCY: what takes at least this many milliseconds is an event (0 = off).
    pub latency_monitor_threshold: u64,
    /// INFO latencystats: shown at all, and which percentiles.
    pub latency_tracking: bool,
    pub latency_percentiles: Vec<f64>,
    /// Close a client whose unparsed input passes this many bytes (a request being sent that
    /// large, or a flood of them).
    pub client_query_buffer_limit: u64,
    pub loglevel: String,
    pub pin_cpus: bool,
    /// Rewrite the AOF automatically when it grew by this percentage over its size after the
    /// last rewrite (or at startup); 0 = never.
    pub auto_aof_rewrite_percentage: u64,
    /// ... and is at least this big.
    pub auto_aof_rewrite_min_size: u64,
    /// The file the configuration was read from, if any (INFO `config_file`).
    pub config_file: Option<PathBuf>,
    /// `client-output-buffer-limit` for normal clients, replicas and pub/sub subscribers.
    /// Moon enforces the pub/sub class: a normal client's replies are bounded by backpressure
    /// (nothing more is read from it while they wait), and there are no replicas.
    pub output_limits: [OutputLimit; 3],
    /// `notify-keyspace-events`, as Redis's flag characters (canonical order).
    pub notify_keyspace_events: moon_store::NotifyFlags,
    /// Users (ACL) are read from and saved to this file (Redis's format); none = not kept.
    pub aclfile: Option<PathBuf>,
    /// With no password for the default user, refuse clients that are not on loopback.
    pub protected_mode: bool,
    /// `lazyfree-lazy-*`: which removals free big values off the executor.
    pub lazyfree: moon_store::lazyfree::Policy,
    /// Who may run DEBUG (it can stop a shard): nobody, local clients, everyone.
    pub enable_debug_command: DebugCommand,
    /// TLS: its port (0 = no TLS), the server's certificate chain and key, the CA client
    /// certificates must chain to, and whether clients must present one.
    pub tls_port: u16,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_cert_file: Option<PathBuf>,
    pub tls_auth_clients: TlsAuthClients,
    /// A Unix socket to listen on too (Redis's `unixsocket`; none = no socket), and its
    /// permissions (`unixsocketperm`, octal; 0 = as the umask leaves them).
    pub unixsocket: Option<PathBuf>,
    pub unixsocketperm: u32,
}

/// `tls-auth-clients`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsAuthClients {
    Yes,
    No,
    Optional,
}

/// The classes of `client-output-buffer-limit`, in the order Redis lists them.
const OUTPUT_CLASSES: [&str; 3] = ["normal", "slave", "pubsub"];

/// How a key may be changed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Only at startup (file or flag).
    Startup,
    /// Also at run time with CONFIG SET.
    Runtime,
}

/// One configuration key, declared once: its name, when it may change, what it means (the
/// flag's `--help`), how its text sets the [`Config`] and how the config shows it (CONFIG GET,
/// `--check-config`). The flags, `moon.toml`, CONFIG GET/SET (and a later CONFIG REWRITE) all
/// go through this table, so a key cannot be known to one and not another. Typed defaults are
/// [`Config::default`]'s.
pub struct Key {
    pub name: &'static str,
    pub mutability: Mutability,
    pub help: &'static str,
    /// Left out of `CONFIG GET *` (only asked for by name), as Redis hides its test knobs.
    pub hidden: bool,
    /// Parses the text into the config; `Err` says what is allowed.
    set: fn(&mut Config, &str) -> Result<(), String>,
    get: fn(&Config) -> String,
}

use Mutability::{Runtime, Startup};

macro_rules! key {
    (hidden $name:literal, $mutability:ident, $help:literal, |$c:ident, $v:ident| $set:expr, |$g:ident| $get:expr) => {
        Key {
            hidden: true,
            ..key!($name, $mutability, $help, |$c, $v| $set, |$g| $get)
        }
    };
    ($name:literal, $mutability:ident, $help:literal, |$c:ident, $v:ident| $set:expr, |$g:ident| $get:expr) => {
        Key {
            name: $name,
            mutability: $mutability,
            help: $help,
            hidden: false,
            set: |$c: &mut Config, $v: &str| -> Result<(), String> {
                $set;
                Ok(())
            },
            get: |$g: &Config| -> String { $get },
        }
    };
}

/// A whole number within `range`, or what is allowed.
fn int_in(v: &str, range: std::ops::RangeInclusive<u64>, allowed: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| allowed.to_string())
}

/// `save`: pairs of seconds and changes, or nothing (Redis's syntax), normalised to single
/// spaces.
fn save_schedule(v: &str) -> Result<String, String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    if !words.len().is_multiple_of(2) || words.iter().any(|w| w.parse::<u64>().is_err()) {
        return Err("pairs of seconds and changes (\"3600 1 300 100\"), or \"\"".into());
    }
    Ok(words.join(" "))
}

/// `list-max-listpack-size`: -5 to -1 (a node's bytes), or a positive entry count (Redis's
/// range).
fn list_node_size(v: &str) -> Result<i64, String> {
    // Any int, as Redis takes it: below -5 counts as -5, 0 as -1.
    v.parse::<i32>()
        .map(i64::from)
        .map_err(|_| "an integer (-1 to -5: 4 to 64 KiB per node; positive: entries)".to_string())
}

/// A size (`512mb`, `64k`, bytes) within `range`, or what is allowed.
fn size_in(v: &str, range: std::ops::RangeInclusive<u64>, allowed: &str) -> Result<u64, String> {
    parse_size(v)
        .filter(|n| range.contains(n))
        .ok_or_else(|| allowed.to_string())
}

fn flag(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err("yes, no".into()),
    }
}

fn optional_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

const THRESHOLD: &str = "an integer from 0 to 1073741824";

/// Every key, in the order `CONFIG GET *` and `--check-config` list them.
pub const KEYS: &[Key] = &[
    key!("bind", Startup, "Address to listen on.",
        |c, v| c.bind = v.parse().map_err(|_| "an IPv4 or IPv6 address, e.g. 127.0.0.1 or 0.0.0.0")?,
        |c| c.bind.to_string()),
    key!("port", Startup, "TCP port (0 = any free port).",
        |c, v| c.port = v.parse().map_err(|_| "0-65535, 0 = any free port")?,
        |c| c.port.to_string()),
    key!("shards", Startup, "Number of shards (default: number of CPUs).",
        |c, v| c.shards = int_in(v, 1..=MAX_SHARDS as u64, &format!("1-{MAX_SHARDS}"))? as usize,
        |c| c.shards.to_string()),
    key!("dir", Startup, "Data directory.",
        |c, v| c.dir = Some(v).filter(|v| !v.is_empty()).map(PathBuf::from).ok_or("a directory path")?,
        |c| c.dir.display().to_string()),
    key!("appendonly", Startup, "yes | no",
        |c, v| c.appendonly = flag(v)?,
        |c| yes_no_text(c.appendonly)),
    key!("save", Runtime, "Redis's RDB snapshot schedule (\"<seconds> <changes> ...\" or \"\"): accepted and reported; Moon takes no snapshots (every write is in the AOF).",
        |c, v| c.save = save_schedule(v)?,
        |c| c.save.clone()),
    key!("repl-backlog-size", Runtime, "Size of the replication backlog (e.g. 1mb): the last bytes of the replication stream a primary keeps, so that a replica that reconnects continues where it was (PSYNC) instead of loading everything again.",
        // Redis raises a smaller size to its 16 KiB minimum.
        |c, v| c.repl_backlog_size = size_in(v, 1..=i64::MAX as u64, "a size, e.g. 1mb")?.max(16 * 1024),
        |c| c.repl_backlog_size.to_string()),
    key!("appendfsync", Runtime, "always | everysec | no",
        |c, v| c.appendfsync = match v.to_ascii_lowercase().as_str() {
            "always" => FsyncPolicy::Always,
            "everysec" => FsyncPolicy::EverySec,
            "no" => FsyncPolicy::No,
            _ => return Err("always, everysec, no".into()),
        },
        |c| c.appendfsync.as_str().into()),
    key!("requirepass", Runtime, "Password required from clients.",
        |c, v| c.requirepass = (!v.is_empty()).then(|| v.to_string()),
        |c| c.requirepass.clone().unwrap_or_default()),
    key!("proto-max-bulk-len", Runtime, "Largest argument size, e.g. 512mb.",
        |c, v| c.proto_max_bulk_len = size_in(v, 1 << 20..=1 << 32, "a size from 1mb to 4gb, e.g. 512mb")?,
        |c| c.proto_max_bulk_len.to_string()),
    key!("maxclients", Runtime, "Maximum number of client connections.",
        |c, v| c.maxclients = int_in(v, 1..=u64::MAX, "an integer >= 1")?,
        |c| c.maxclients.to_string()),
    key!("databases", Startup, "Databases clients may SELECT.",
        |c, v| c.databases = int_in(v, 1..=moon_store::MAX_DATABASES as u64, &format!("1-{}", moon_store::MAX_DATABASES))?,
        |c| c.databases.to_string()),
    key!("maxmemory", Runtime, "Memory the keyspaces may hold, e.g. 4gb (0 = no limit).",
        |c, v| c.maxmemory = size_in(v, 0..=u64::MAX, "a size, e.g. 4gb; 0 = no limit")?,
        |c| c.maxmemory.to_string()),
    key!("maxmemory-policy", Runtime, "noeviction | allkeys-lru | allkeys-lfu | allkeys-random | volatile-lru | volatile-lfu | volatile-random | volatile-ttl",
        |c, v| c.maxmemory_policy = EvictionPolicy::parse(v).ok_or_else(|| {
            EvictionPolicy::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        })?,
        |c| c.maxmemory_policy.as_str().into()),
    key!("maxmemory-samples", Runtime, "Keys sampled to choose one to evict (1-64).",
        |c, v| c.maxmemory_samples = int_in(v, 1..=64, "1-64")?,
        |c| c.maxmemory_samples.to_string()),
    key!("hash-max-listpack-entries", Runtime, "Entries of a hash kept compact (listpack).",
        |c, v| c.encodings.hash_max_listpack_entries = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.hash_max_listpack_entries.to_string()),
    key!("hash-max-listpack-value", Runtime, "Largest field or value of a compact hash, in bytes.",
        |c, v| c.encodings.hash_max_listpack_value = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.hash_max_listpack_value.to_string()),
    key!("set-max-intset-entries", Runtime, "Members of a set of integers kept compact (intset).",
        |c, v| c.encodings.set_max_intset_entries = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.set_max_intset_entries.to_string()),
    key!("set-max-listpack-entries", Runtime, "Members of a set kept compact (listpack).",
        |c, v| c.encodings.set_max_listpack_entries = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.set_max_listpack_entries.to_string()),
    key!("set-max-listpack-value", Runtime, "Largest member of a compact set, in bytes.",
        |c, v| c.encodings.set_max_listpack_value = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.set_max_listpack_value.to_string()),
    key!("zset-max-listpack-entries", Runtime, "Members of a sorted set kept compact (listpack).",
        |c, v| c.encodings.zset_max_listpack_entries = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.zset_max_listpack_entries.to_string()),
    key!("zset-max-listpack-value", Runtime, "Largest member of a compact sorted set, in bytes.",
        |c, v| c.encodings.zset_max_listpack_value = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.zset_max_listpack_value.to_string()),
    key!("stream-node-max-bytes", Runtime, "Largest node of a stream's entries, in bytes (0 = no limit).",
        |c, v| c.encodings.stream_node_max_bytes = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.stream_node_max_bytes.to_string()),
    key!("stream-node-max-entries", Runtime, "Most entries in a node of a stream (0 = no limit).",
        |c, v| c.encodings.stream_node_max_entries = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.stream_node_max_entries.to_string()),
    key!("hll-sparse-max-bytes", Runtime, "Largest sparse HyperLogLog string, in bytes; past it an HLL becomes dense (12 KiB).",
        |c, v| c.encodings.hll_sparse_max_bytes = int_in(v, 0..=1 << 30, THRESHOLD)? as usize,
        |c| c.encodings.hll_sparse_max_bytes.to_string()),
    key!("list-max-listpack-size", Runtime, "A list's node: -1 to -5 for 4 to 64 KiB, or a positive entry count (OBJECT ENCODING listpack while a list fits one).",
        |c, v| c.encodings.list_max_listpack_size = list_node_size(v)?,
        |c| c.encodings.list_max_listpack_size.to_string()),
    key!("list-compress-depth", Runtime, "List nodes this many from each end stay plain, the ones between are LZF-compressed (0 = none); applies to lists created after it is set.",
        |c, v| c.encodings.list_compress_depth = int_in(v, 0..=i32::MAX as u64, "an integer from 0 to 2147483647")? as usize,
        |c| c.encodings.list_compress_depth.to_string()),
    key!("busy-reply-threshold", Runtime, "Milliseconds after which a running script is busy: other clients of its shards get BUSY, SCRIPT KILL may stop it (lua-time-limit).",
        |c, v| {
            c.busy_reply_threshold = int_in(v, 0..=i64::MAX as u64, "milliseconds >= 0")?;
            moon_script::set_busy_threshold(c.busy_reply_threshold);
        },
        |c| c.busy_reply_threshold.to_string()),
    key!("slowlog-log-slower-than", Runtime, "Commands that take at least this many microseconds go to SLOWLOG (-1 = none, 0 = every command).",
        |c, v| c.slowlog_log_slower_than = v.parse::<i64>().ok().filter(|n| *n >= -1).ok_or("an integer >= -1 (microseconds)")?,
        |c| c.slowlog_log_slower_than.to_string()),
    key!("slowlog-max-len", Runtime, "Entries SLOWLOG keeps.",
        |c, v| c.slowlog_max_len = int_in(v, 0..=i64::MAX as u64, "an integer >= 0")?,
        |c| c.slowlog_max_len.to_string()),
    key!("latency-monitor-threshold", Runtime, "Milliseconds from which LATENCY records an event (0 = off).",
        |c, v| c.latency_monitor_threshold = int_in(v, 0..=i64::MAX as u64, "milliseconds >= 0 (0 = off)")?,
        |c| c.latency_monitor_threshold.to_string()),
    key!("latency-tracking", Runtime, "yes | no: INFO latencystats shows each command's latency percentiles.",
        |c, v| c.latency_tracking = flag(v)?,
        |c| yes_no_text(c.latency_tracking)),
    key!("latency-tracking-info-percentiles", Runtime, "The percentiles INFO latencystats shows, e.g. \"50 99 99.9\".",
        |c, v| c.latency_percentiles = v
            .split_whitespace()
            .map(|p| p.parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)))
            .collect::<Option<Vec<f64>>>()
            .ok_or("percentiles from 0 to 100, separated by spaces")?,
        |c| c.latency_percentiles.iter().map(f64::to_string).collect::<Vec<_>>().join(" ")),
    key!("maxmemory-clients", Runtime, "Redis's limit on all clients' buffers before it evicts clients: only 0 (off) is accepted, Moon evicts no clients (their buffers count in used_memory, as in Redis).",
        |c, v| {
            let pct = v.strip_suffix('%');
            let n = parse_size(pct.unwrap_or(v)).ok_or("a size (e.g. 1gb) or a percentage of maxmemory")?;
            if pct.is_some() && n > 100 {
                return Err("percentage argument must be less or equal to 100".into());
            }
            if n != 0 {
                return Err("Moon evicts no clients: only 0 is accepted".into());
            }
            c.maxmemory_clients = 0;
        },
        |c| c.maxmemory_clients.to_string()),
    key!(hidden "key-load-delay", Runtime, "Microseconds to wait after each record or key replayed (Redis's test knob for a slow load; 0 = none).",
        |c, v| c.key_load_delay = int_in(v, 0..=1_000_000, "microseconds from 0 to 1000000")?,
        |c| c.key_load_delay.to_string()),
    key!("daemonize", Startup, "Only no: Moon runs in the foreground (run it under a supervisor such as systemd).",
        |_c, v| if flag(v)? { return Err("no (Moon does not daemonize; run it under a supervisor)".into()) },
        |_c| "no".into()),
    key!("replicaof", Startup, "The primary to replicate: \"<host> <port>\" (slaveof); empty for none. REPLICAOF changes it at run time.",
        |c, v| c.replicaof = parse_replicaof(v)?,
        |c| c.replicaof.as_ref().map(|(h, p)| format!("{h} {p}")).unwrap_or_default()),
    key!("masterauth", Runtime, "The password this replica gives its primary (AUTH).",
        |c, v| c.masterauth = (!v.is_empty()).then(|| v.to_string()),
        |c| c.masterauth.clone().unwrap_or_default()),
    key!("masteruser", Runtime, "The user this replica authenticates as at its primary (with masterauth).",
        |c, v| c.masteruser = (!v.is_empty()).then(|| v.to_string()),
        |c| c.masteruser.clone().unwrap_or_default()),
    key!("replica-read-only", Runtime, "yes | no: a replica refuses clients' writes (slave-read-only).",
        |c, v| c.replica_read_only = flag(v)?,
        |c| yes_no_text(c.replica_read_only)),
    key!("replica-priority", Runtime, "Sentinel's preference among replicas, lower first; 0 = never promote (slave-priority).",
        |c, v| c.replica_priority = int_in(v, 0..=i32::MAX as u64, "an integer >= 0")?,
        |c| c.replica_priority.to_string()),
    key!("replica-serve-stale-data", Runtime, "yes | no: a replica whose link to its primary is down still answers from its data (no: MASTERDOWN) (slave-serve-stale-data).",
        |c, v| c.replica_serve_stale_data = flag(v)?,
        |c| yes_no_text(c.replica_serve_stale_data)),
    key!("min-replicas-to-write", Runtime, "Refuse writes (NOREPLICAS) unless this many replicas acknowledged within min-replicas-max-lag seconds; 0 = never (min-slaves-to-write).",
        |c, v| c.min_replicas_to_write = int_in(v, 0..=i32::MAX as u64, "an integer >= 0")?,
        |c| c.min_replicas_to_write.to_string()),
    key!("min-replicas-max-lag", Runtime, "Seconds within which a replica must have acknowledged to count for min-replicas-to-write (min-slaves-max-lag).",
        |c, v| c.min_replicas_max_lag = int_in(v, 0..=i32::MAX as u64, "seconds >= 0")?,
        |c| c.min_replicas_max_lag.to_string()),
    key!("repl-timeout", Runtime, "Seconds of silence after which a replication link is taken for dead.",
        |c, v| c.repl_timeout = int_in(v, 1..=i32::MAX as u64, "seconds >= 1")?,
        |c| c.repl_timeout.to_string()),
    key!("timeout", Runtime, "Close clients idle for this many seconds (0 = never).",
        |c, v| c.timeout = int_in(v, 0..=100 * 365 * 24 * 3600, "seconds >= 0 (0 = never)")?,
        |c| c.timeout.to_string()),
    key!("client-query-buffer-limit", Runtime, "Close a client whose unparsed input passes this size, e.g. 1gb.",
        |c, v| c.client_query_buffer_limit = size_in(v, 1 << 20..=1 << 32, "a size from 1mb to 4gb, e.g. 1gb")?,
        |c| c.client_query_buffer_limit.to_string()),
    key!("loglevel", Runtime, "debug | verbose | notice | warning",
        |c, v| c.loglevel = Some(v.to_ascii_lowercase())
            .filter(|v| ["debug", "verbose", "notice", "warning", "trace", "info", "warn", "error"].contains(&v.as_str()))
            .ok_or("debug, verbose, notice, warning")?,
        |c| c.loglevel.clone()),
    key!("pin-cpus", Startup, "yes | no: pin each shard to a CPU.",
        |c, v| c.pin_cpus = flag(v)?,
        |c| yes_no_text(c.pin_cpus)),
    key!("auto-aof-rewrite-percentage", Runtime, "Automatic BGREWRITEAOF after this much growth, in percent (0 = never).",
        |c, v| c.auto_aof_rewrite_percentage = int_in(v, 0..=1_000_000, "an integer percentage >= 0 (0 = never)")?,
        |c| c.auto_aof_rewrite_percentage.to_string()),
    key!("auto-aof-rewrite-min-size", Runtime, "... once the AOF is at least this big, e.g. 64mb.",
        |c, v| c.auto_aof_rewrite_min_size = size_in(v, 0..=u64::MAX, "a size, e.g. 64mb")?,
        |c| c.auto_aof_rewrite_min_size.to_string()),
    key!("client-output-buffer-limit", Runtime, "Output limits, e.g. \"pubsub 32mb 8mb 60\": a subscriber past the hard limit, or past the soft one for that many seconds, is disconnected.",
        |c, v| c.output_limits = output_limits(c.output_limits, v)?,
        |c| OUTPUT_CLASSES
            .iter()
            .zip(c.output_limits)
            .map(|(class, l)| format!("{class} {} {} {}", l.hard, l.soft, l.soft_seconds))
            .collect::<Vec<_>>()
            .join(" ")),
    key!("notify-keyspace-events", Runtime, "Keyspace notifications, Redis's flags (e.g. KEA); empty = off.",
        |c, v| c.notify_keyspace_events = moon_store::NotifyFlags::parse(v)
            .ok_or("a string of the characters A g $ l s h z x e t m d n K E, or empty")?,
        |c| c.notify_keyspace_events.to_string()),
    key!("unixsocket", Startup, "Also listen on this Unix socket (empty = none).",
        |c, v| c.unixsocket = optional_path(v),
        |c| path_text(&c.unixsocket)),
    key!("unixsocketperm", Startup, "The Unix socket's permissions, octal (e.g. 700; 0 = as the umask leaves them).",
        |c, v| c.unixsocketperm = u32::from_str_radix(v, 8).ok().filter(|p| *p <= 0o777).ok_or("octal permissions, e.g. 700")?,
        |c| format!("{:o}", c.unixsocketperm)),
    key!("aclfile", Startup, "Users (ACL) file, in Redis's format.",
        |c, v| c.aclfile = optional_path(v),
        |c| path_text(&c.aclfile)),
    key!("protected-mode", Runtime, "yes | no: refuse non-loopback clients while the default user has no password.",
        |c, v| c.protected_mode = flag(v)?,
        |c| yes_no_text(c.protected_mode)),
    key!("tls-port", Startup, "TLS port (0 = no TLS), beside the plain port.",
        |c, v| c.tls_port = v.parse().map_err(|_| "0-65535, 0 = no TLS")?,
        |c| c.tls_port.to_string()),
    key!("tls-cert-file", Runtime, "The server's certificate chain (PEM).",
        |c, v| c.tls_cert_file = optional_path(v),
        |c| path_text(&c.tls_cert_file)),
    key!("tls-key-file", Runtime, "The server's private key (PEM).",
        |c, v| c.tls_key_file = optional_path(v),
        |c| path_text(&c.tls_key_file)),
    key!("tls-ca-cert-file", Runtime, "CA certificates client certificates must chain to (PEM).",
        |c, v| c.tls_ca_cert_file = optional_path(v),
        |c| path_text(&c.tls_ca_cert_file)),
    key!("tls-auth-clients", Runtime, "yes | no | optional: whether clients must present a certificate.",
        |c, v| c.tls_auth_clients = match v.to_ascii_lowercase().as_str() {
            "yes" => TlsAuthClients::Yes,
            "no" => TlsAuthClients::No,
            "optional" => TlsAuthClients::Optional,
            _ => return Err("yes, no, optional".into()),
        },
        |c| match c.tls_auth_clients {
            TlsAuthClients::Yes => "yes",
            TlsAuthClients::No => "no",
            TlsAuthClients::Optional => "optional",
        }.into()),
    key!("lazyfree-lazy-eviction", Runtime, "yes | no: keys evicted under maxmemory are freed off the shard's thread.",
        |c, v| c.lazyfree.eviction = flag(v)?,
        |c| yes_no_text(c.lazyfree.eviction)),
    key!("lazyfree-lazy-expire", Runtime, "yes | no: expired keys are freed off the shard's thread.",
        |c, v| c.lazyfree.expire = flag(v)?,
        |c| yes_no_text(c.lazyfree.expire)),
    key!("lazyfree-lazy-server-del", Runtime, "yes | no: values a command replaces (SET over a big hash, RENAME) are freed off it.",
        |c, v| c.lazyfree.server_del = flag(v)?,
        |c| yes_no_text(c.lazyfree.server_del)),
    key!("lazyfree-lazy-user-del", Runtime, "yes | no: DEL frees as UNLINK does.",
        |c, v| c.lazyfree.user_del = flag(v)?,
        |c| yes_no_text(c.lazyfree.user_del)),
    key!("lazyfree-lazy-user-flush", Runtime, "yes | no: FLUSHALL/FLUSHDB without a mode free as with ASYNC.",
        |c, v| c.lazyfree.user_flush = flag(v)?,
        |c| yes_no_text(c.lazyfree.user_flush)),
    key!("enable-debug-command", Startup, "no | yes | local: who may run DEBUG (DEBUG SLEEP stops a shard).",
        |c, v| c.enable_debug_command = match v {
            "no" => DebugCommand::No,
            "yes" => DebugCommand::Yes,
            "local" => DebugCommand::Local,
            _ => return Err("no, yes, local".into()),
        },
        |c| match c.enable_debug_command {
            DebugCommand::No => "no",
            DebugCommand::Yes => "yes",
            DebugCommand::Local => "local",
        }.into()),
];

/// The key called `name` (after [`canonical_key`]).
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// `client-output-buffer-limit`'s text: `<class> <hard> <soft> <soft seconds>`, one or more
/// classes, applied over `limits`.
fn output_limits(mut limits: [OutputLimit; 3], value: &str) -> Result<[OutputLimit; 3], String> {
    let allowed =
        "<class> <hard> <soft> <soft-seconds> ..., class normal, replica or pubsub, sizes like 32mb";
    let words: Vec<&str> = value.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(4) {
        return Err(allowed.into());
    }
    for w in words.chunks(4) {
        let class = match w[0].to_ascii_lowercase().as_str() {
            "normal" => 0,
            "slave" | "replica" => 1,
            "pubsub" => 2,
            _ => return Err(allowed.into()),
        };
        let (Some(hard), Some(soft), Ok(secs)) =
            (parse_size(w[1]), parse_size(w[2]), w[3].parse::<u64>())
        else {
            return Err(allowed.into());
        };
        limits[class] = OutputLimit {
            hard,
            soft,
            soft_seconds: secs,
        };
    }
    Ok(limits)
}

/// A refused value: the key, the value and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

fn bad(key: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: format!("invalid value for '{key}': '{value}' (allowed: {allowed})"),
    }
}

/// Parses `512mb`, `64k`, `1gb`, `1048576` like Redis's memory-size options.
fn parse_size(value: &str) -> Option<u64> {
    let v = value.to_ascii_lowercase();
    let (digits, mult) = [
        ("gb", 1u64 << 30),
        ("g", 1_000_000_000),
        ("mb", 1 << 20),
        ("m", 1_000_000),
        ("kb", 1 << 10),
        ("k", 1000),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| v.strip_suffix(suffix).map(|d| (d.to_string(), *m)))
    .unwrap_or((v.clone(), 1));
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            dir: PathBuf::from("moon-data"),
            appendonly: true,
            appendfsync: FsyncPolicy::EverySec,
            requirepass: None,
            proto_max_bulk_len: 512 * 1024 * 1024,
            maxclients: 10000,
            databases: 16,
            maxmemory: 0,
            maxmemory_policy: EvictionPolicy::NoEviction,
            maxmemory_samples: 5,
            maxmemory_clients: 0,
            key_load_delay: 0,
            encodings: moon_store::Encodings::default(),
            save: String::new(),
            repl_backlog_size: 1024 * 1024,
            replicaof: None,
            masterauth: None,
            masteruser: None,
            replica_read_only: true,
            replica_priority: 100,
            repl_timeout: 60,
            replica_serve_stale_data: true,
            min_replicas_to_write: 0,
            min_replicas_max_lag: 10,
            timeout: 0,
            busy_reply_threshold: 5000,
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
            latency_monitor_threshold: 0,
            latency_tracking: true,
            latency_percentiles: vec![50.0, 99.0, 99.9],
            client_query_buffer_limit: 1 << 30,
            loglevel: "notice".into(),
            pin_cpus: true,
            auto_aof_rewrite_percentage: 100,
            auto_aof_rewrite_min_size: 64 * 1024 * 1024,
            config_file: None,
            output_limits: [
                OutputLimit {
                    hard: 0,
                    soft: 0,
                    soft_seconds: 0,
                },
                OutputLimit {
                    hard: 256 << 20,
                    soft: 64 << 20,
                    soft_seconds: 60,
                },
                OutputLimit::PUBSUB,
            ],
            notify_keyspace_events: moon_store::NotifyFlags::default(),
            aclfile: None,
            protected_mode: true,
            lazyfree: moon_store::lazyfree::Policy::default(),
            enable_debug_command: DebugCommand::No,
            tls_port: 0,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_cert_file: None,
            tls_auth_clients: TlsAuthClients::Yes,
            unixsocket: None,
            unixsocketperm: 0,
        }
    }
}

pub const MAX_SHARDS: usize = 256;

fn path_text(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Redis's other names of keys (`hash-max-ziplist-*` before 7.0, `slaveof`), as Redis still
/// accepts them: (alias, key).
pub const ALIASES: [(&str, &str); 12] = [
    ("hash-max-ziplist-entries", "hash-max-listpack-entries"),
    ("hash-max-ziplist-value", "hash-max-listpack-value"),
    ("list-max-ziplist-size", "list-max-listpack-size"),
    ("zset-max-ziplist-entries", "zset-max-listpack-entries"),
    ("zset-max-ziplist-value", "zset-max-listpack-value"),
    ("lua-time-limit", "busy-reply-threshold"),
    ("slaveof", "replicaof"),
    ("slave-read-only", "replica-read-only"),
    ("slave-priority", "replica-priority"),
    ("slave-serve-stale-data", "replica-serve-stale-data"),
    ("min-slaves-to-write", "min-replicas-to-write"),
    ("min-slaves-max-lag", "min-replicas-max-lag"),
];

/// `replicaof`'s value: "<host> <port>", or nothing (also "no one").
pub fn parse_replicaof(v: &str) -> Result<Option<(String, u16)>, String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    match words.as_slice() {
        [] => Ok(None),
        [a, b] if a.eq_ignore_ascii_case("no") && b.eq_ignore_ascii_case("one") => Ok(None),
        [host, port] => match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some((host.to_string(), p))),
            _ => Err("\"<host> <port>\" with a port from 1 to 65535, or empty".into()),
        },
        _ => Err("\"<host> <port>\", or empty".into()),
    }
}

/// The key an alias names (itself for a key's own name).
pub fn canonical_key(key: &str) -> String {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, name)| name)
        .to_string()
}

impl Config {
    /// One shard's share of `maxmemory` (every shard gets the same), with the policy.
    pub fn memory_limit(&self) -> MemoryLimit {
        let max = if self.maxmemory == 0 {
            0
        } else {
            (self.maxmemory / self.shards.max(1) as u64).max(1) as usize
        };
        MemoryLimit {
            max,
            policy: self.maxmemory_policy,
            samples: self.maxmemory_samples as usize,
        }
    }

    /// Sets one key from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let name = canonical_key(&key.to_ascii_lowercase());
        let Some(row) = self::key(&name) else {
            let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            return Err(ConfigError {
                key: name.clone(),
                message: format!(
                    "unknown config key '{name}' (known keys: {})",
                    known.join(", ")
                ),
            });
        };
        (row.set)(self, value).map_err(|allowed| bad(&name, value, &allowed))
    }

    /// What the process-wide monitors (`moon_store::slowlog`, `moon_store::latency`) read
    /// from this configuration: at startup, and after a CONFIG SET took effect whole.
    pub fn apply_monitors(&self) {
        moon_shard::set_key_load_delay(self.key_load_delay);
        moon_store::slowlog::set_slower_than(self.slowlog_log_slower_than);
        moon_store::slowlog::set_max_len(self.slowlog_max_len as usize);
        moon_store::latency::set_threshold(self.latency_monitor_threshold);
    }

    /// The text form of a key's value, as CONFIG GET shows it.
    pub fn get(&self, key: &str) -> Option<String> {
        self::key(key).map(|row| (row.get)(self))
    }

    /// CONFIG REWRITE: `text` (the config file) with every key's current value, as Redis
    /// rewrites redis.conf: a key the file sets is updated where it stands (under whichever
    /// of its names it uses, keeping its comments and, where the value allows, its TOML type),
    /// a key the file does not set is appended only if its value is not the default. Comments,
    /// order and formatting are kept.
    pub fn rewrite_toml(&self, text: &str) -> Result<String, String> {
        let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            // The message alone, on one line: the error's full text quotes the file's line
            // (it may hold requirepass) over several lines.
            let at = e
                .span()
                .map(|s| format!(" at byte {}", s.start))
                .unwrap_or_default();
            format!(
                "the config file is not valid TOML{at}: {}",
                e.message().replace(['\r', '\n'], " ")
            )
        })?;
        let defaults = Config::default();
        for row in KEYS {
            let now = (row.get)(self);
            let in_file: Vec<String> = doc
                .iter()
                .map(|(k, _)| k.to_string())
                .filter(|k| canonical_key(&k.to_ascii_lowercase()) == row.name)
                .collect();
            if in_file.is_empty() {
                if now != (row.get)(&defaults) {
                    doc[row.name] = toml_edit::value(now);
                }
                continue;
            }
            for k in in_file {
                let item = &mut doc[k.as_str()];
                let old = item.as_value();
                let unchanged = match old {
                    Some(toml_edit::Value::String(s)) => *s.value() == now,
                    Some(toml_edit::Value::Integer(i)) => i.value().to_string() == now,
                    Some(toml_edit::Value::Boolean(b)) => {
                        (if *b.value() { "yes" } else { "no" }) == now
                    }
                    _ => false,
                };
                if unchanged {
                    continue;
                }
                let new = match old {
                    Some(toml_edit::Value::Integer(_)) => match now.parse::<i64>() {
                        Ok(n) => toml_edit::Value::from(n),
                        Err(_) => toml_edit::Value::from(now.clone()),
                    },
                    Some(toml_edit::Value::Boolean(_)) if now == "yes" || now == "no" => {
                        toml_edit::Value::from(now == "yes")
                    }
                    _ => toml_edit::Value::from(now.clone()),
                };
                // The comments around the old value stay with the new one.
                let decor = old.map(|v| v.decor().clone());
                let mut new = new;
                if let Some(d) = decor {
                    *new.decor_mut() = d;
                }
                *item = toml_edit::Item::Value(new);
            }
        }
        Ok(doc.to_string())
    }

    /// Applies a TOML document. Keys are checked before any is applied to nothing but `self`.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            key: String::new(),
            message: format!("not valid TOML: {}", e.message()),
        })?;
        for (key, value) in &table {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => if *b { "yes" } else { "no" }.to_string(),
                other => return Err(ConfigError { key: key.clone(), message: format!("invalid value for '{key}': {other} (expected a string, integer or boolean)") }),
            };
            self.set(key, &text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_errors() {
        let mut c = Config::default();
        c.apply_toml("port = 7000\nappendonly = false\nappendfsync = \"always\"\nshards = 2\n")
            .unwrap();
        assert_eq!(
            (c.port, c.appendonly, c.appendfsync, c.shards),
            (7000, false, FsyncPolicy::Always, 2)
        );
        assert_eq!(
            c.apply_toml("appendfsync = \"sometimes\"")
                .unwrap_err()
                .message,
            "invalid value for 'appendfsync': 'sometimes' (allowed: always, everysec, no)"
        );
        assert_eq!(
            c.apply_toml("shards = 0").unwrap_err().message,
            "invalid value for 'shards': '0' (allowed: 1-256)"
        );
        assert!(c
            .apply_toml("nope = 1")
            .unwrap_err()
            .message
            .starts_with("unknown config key 'nope' (known keys: bind, port"));
        assert!(c
            .apply_toml("port = [1]")
            .unwrap_err()
            .message
            .contains("'port'"));
        assert!(c
            .apply_toml("port = ")
            .unwrap_err()
            .message
            .starts_with("not valid TOML"));
        c.set("proto-max-bulk-len", "64mb").unwrap();
        assert_eq!(c.proto_max_bulk_len, 64 << 20);
    }

    /// CONFIG REWRITE keeps comments, order, formatting and each value's TOML type, updates
    /// a key under the (older) name the file uses, appends only what differs from the
    /// default, and what it writes reads back to the same configuration.
    #[test]
    fn rewrite_keeps_the_file_and_round_trips() {
        let file = "# top comment\n\nport = 7000   # the port\n\n# memory\nmaxmemory = \"0\"\nhash-max-ziplist-entries = 128\nappendonly = true\n# shards = 2\n";
        let mut c = Config::default();
        c.apply_toml(file).unwrap();
        // Nothing changed at runtime: the file comes back byte for byte.
        assert_eq!(c.rewrite_toml(file).unwrap(), file);
        c.set("maxmemory", "100mb").unwrap();
        c.set("hash-max-listpack-entries", "64").unwrap();
        c.set("appendonly", "no").unwrap();
        c.set("timeout", "30").unwrap();
        let new = c.rewrite_toml(file).unwrap();
        assert_eq!(
            new,
            "# top comment\n\nport = 7000   # the port\n\n# memory\nmaxmemory = \"104857600\"\nhash-max-ziplist-entries = 64\nappendonly = false\ntimeout = \"30\"\n# shards = 2\n"
        );
        let mut back = Config::default();
        back.apply_toml(&new).unwrap();
        for row in KEYS {
            assert_eq!((row.get)(&back), (row.get)(&c), "{}", row.name);
        }
        assert!(c.rewrite_toml("port = ").is_err());
    }

    #[test]
    fn checked_in_moon_toml_is_valid_and_matches_defaults() {
        let text = include_str!("../../../moon.toml");
        let mut c = Config::default();
        c.apply_toml(text).unwrap();
        let d = Config::default();
        assert_eq!(
            (c.port, c.bind, c.appendonly, c.appendfsync),
            (d.port, d.bind, d.appendonly, d.appendfsync)
        );
    }
}

fn yes_no_text(on: bool) -> String {
    if on { "yes" } else { "no" }.into()
}

/// `enable-debug-command`, as in Redis: DEBUG can stop a shard, so it is off by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugCommand {
    No,
    Yes,
    /// Only from a loopback connection.
    Local,
}

/// `client-output-buffer-limit` for one class of clients: bytes (0 = none) and seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_seconds: u64,
}

impl OutputLimit {
    /// Redis's default for pub/sub clients: `32mb 8mb 60`.
    pub const PUBSUB: OutputLimit = OutputLimit {
        hard: 32 << 20,
        soft: 8 << 20,
        soft_seconds: 60,
    };
}
