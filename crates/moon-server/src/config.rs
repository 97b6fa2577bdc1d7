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
    /// Thresholds of the compact encodings of hashes and sets.
    pub encodings: moon_store::Encodings,
    /// Close a client idle for this many seconds; 0 = never.
    pub timeout: u64,
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

/// Every key, in the order `CONFIG GET *` lists them.
pub const KEYS: &[(&str, Mutability)] = &[
    ("bind", Mutability::Startup),
    ("port", Mutability::Startup),
    ("shards", Mutability::Startup),
    ("dir", Mutability::Startup),
    ("appendonly", Mutability::Startup),
    ("appendfsync", Mutability::Runtime),
    ("requirepass", Mutability::Runtime),
    ("proto-max-bulk-len", Mutability::Runtime),
    ("maxclients", Mutability::Runtime),
    ("databases", Mutability::Startup),
    ("maxmemory", Mutability::Runtime),
    ("maxmemory-policy", Mutability::Runtime),
    ("maxmemory-samples", Mutability::Runtime),
    ("hash-max-listpack-entries", Mutability::Runtime),
    ("hash-max-listpack-value", Mutability::Runtime),
    ("set-max-intset-entries", Mutability::Runtime),
    ("set-max-listpack-entries", Mutability::Runtime),
    ("set-max-listpack-value", Mutability::Runtime),
    ("timeout", Mutability::Runtime),
    ("client-query-buffer-limit", Mutability::Runtime),
    ("loglevel", Mutability::Runtime),
    ("pin-cpus", Mutability::Startup),
    ("auto-aof-rewrite-percentage", Mutability::Runtime),
    ("auto-aof-rewrite-min-size", Mutability::Runtime),
    ("client-output-buffer-limit", Mutability::Runtime),
    ("notify-keyspace-events", Mutability::Runtime),
    ("aclfile", Mutability::Startup),
    ("protected-mode", Mutability::Runtime),
    ("tls-port", Mutability::Startup),
    ("tls-cert-file", Mutability::Runtime),
    ("tls-key-file", Mutability::Runtime),
    ("tls-ca-cert-file", Mutability::Runtime),
    ("tls-auth-clients", Mutability::Runtime),
    ("lazyfree-lazy-eviction", Mutability::Runtime),
    ("lazyfree-lazy-expire", Mutability::Runtime),
    ("lazyfree-lazy-server-del", Mutability::Runtime),
    ("lazyfree-lazy-user-del", Mutability::Runtime),
    ("lazyfree-lazy-user-flush", Mutability::Runtime),
    ("enable-debug-command", Mutability::Startup),
];

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

fn yes_no(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(bad(key, value, "yes, no")),
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
            encodings: moon_store::Encodings::default(),
            timeout: 0,
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
        }
    }
}

pub const MAX_SHARDS: usize = 256;

fn path_text(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Redis's older names of a key (`hash-max-ziplist-*` before 7.0), as Redis still accepts.
pub fn canonical_key(key: &str) -> String {
    match key {
        "hash-max-ziplist-entries" => "hash-max-listpack-entries".into(),
        "hash-max-ziplist-value" => "hash-max-listpack-value".into(),
        other => other.to_string(),
    }
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
        let key = canonical_key(&key.to_ascii_lowercase());
        let threshold = |value: &str| -> Result<usize, ConfigError> {
            match value.parse::<u64>() {
                Ok(n) if n <= 1 << 30 => Ok(n as usize),
                _ => Err(bad(&key, value, "an integer from 0 to 1073741824")),
            }
        };
        match key.as_str() {
            "hash-max-listpack-entries" => {
                self.encodings.hash_max_listpack_entries = threshold(value)?
            }
            "hash-max-listpack-value" => self.encodings.hash_max_listpack_value = threshold(value)?,
            "set-max-intset-entries" => self.encodings.set_max_intset_entries = threshold(value)?,
            "set-max-listpack-entries" => {
                self.encodings.set_max_listpack_entries = threshold(value)?
            }
            "set-max-listpack-value" => self.encodings.set_max_listpack_value = threshold(value)?,
            "bind" => {
                self.bind = value.parse().map_err(|_| {
                    bad(
                        &key,
                        value,
                        "an IPv4 or IPv6 address, e.g. 127.0.0.1 or 0.0.0.0",
                    )
                })?
            }
            "port" => {
                self.port = value
                    .parse()
                    .map_err(|_| bad(&key, value, "0-65535, 0 = any free port"))?
            }
            "shards" => {
                self.shards = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_SHARDS).contains(&n) => n,
                    _ => return Err(bad(&key, value, &format!("1-{MAX_SHARDS}"))),
                }
            }
            "dir" => {
                if value.is_empty() {
                    return Err(bad(&key, value, "a directory path"));
                }
                self.dir = PathBuf::from(value)
            }
            "appendonly" => self.appendonly = yes_no(&key, value)?,
            "appendfsync" => {
                self.appendfsync = match value.to_ascii_lowercase().as_str() {
                    "always" => FsyncPolicy::Always,
                    "everysec" => FsyncPolicy::EverySec,
                    "no" => FsyncPolicy::No,
                    _ => return Err(bad(&key, value, "always, everysec, no")),
                }
            }
            "requirepass" => {
                self.requirepass = if value.is_empty() {
                    None
                } else {
                    Some(value.to_string())
                }
            }
            "proto-max-bulk-len" => {
                self.proto_max_bulk_len = match parse_size(value) {
                    Some(n) if (1024 * 1024..=(1u64 << 32)).contains(&n) => n,
                    _ => return Err(bad(&key, value, "a size from 1mb to 4gb, e.g. 512mb")),
                }
            }
            "maxclients" => {
                self.maxclients = match value.parse::<u64>() {
                    Ok(n) if n >= 1 => n,
                    _ => return Err(bad(&key, value, "an integer >= 1")),
                }
            }
            "databases" => {
                self.databases = match value.parse::<u64>() {
                    Ok(n) if (1..=moon_store::MAX_DATABASES as u64).contains(&n) => n,
                    _ => {
                        return Err(bad(
                            &key,
                            value,
                            &format!("1-{}", moon_store::MAX_DATABASES),
                        ))
                    }
                }
            }
            "maxmemory" => {
                self.maxmemory = match parse_size(value) {
                    Some(n) => n,
                    _ => return Err(bad(&key, value, "a size, e.g. 4gb; 0 = no limit")),
                }
            }
            "maxmemory-policy" => {
                self.maxmemory_policy = match EvictionPolicy::parse(value) {
                    Some(p) => p,
                    None => {
                        let names: Vec<&str> =
                            EvictionPolicy::ALL.iter().map(|p| p.as_str()).collect();
                        return Err(bad(&key, value, &names.join(", ")));
                    }
                }
            }
            "maxmemory-samples" => {
                self.maxmemory_samples = match value.parse::<u64>() {
                    Ok(n) if (1..=64).contains(&n) => n,
                    _ => return Err(bad(&key, value, "1-64")),
                }
            }
            "timeout" => {
                self.timeout = match value.parse::<u64>() {
                    Ok(n) if n <= 100 * 365 * 24 * 3600 => n,
                    _ => return Err(bad(&key, value, "seconds >= 0 (0 = never)")),
                }
            }
            "client-query-buffer-limit" => {
                self.client_query_buffer_limit = match parse_size(value) {
                    Some(n) if (1024 * 1024..=(1u64 << 32)).contains(&n) => n,
                    _ => return Err(bad(&key, value, "a size from 1mb to 4gb, e.g. 1gb")),
                }
            }
            "loglevel" => {
                let v = value.to_ascii_lowercase();
                if ![
                    "debug", "verbose", "notice", "warning", "trace", "info", "warn", "error",
                ]
                .contains(&v.as_str())
                {
                    return Err(bad(&key, value, "debug, verbose, notice, warning"));
                }
                self.loglevel = v;
            }
            "pin-cpus" => self.pin_cpus = yes_no(&key, value)?,
            "auto-aof-rewrite-percentage" => {
                self.auto_aof_rewrite_percentage = match value.parse::<u64>() {
                    Ok(n) if n <= 1_000_000 => n,
                    _ => return Err(bad(&key, value, "an integer percentage >= 0 (0 = never)")),
                }
            }
            "auto-aof-rewrite-min-size" => {
                self.auto_aof_rewrite_min_size = match parse_size(value) {
                    Some(n) => n,
                    _ => return Err(bad(&key, value, "a size, e.g. 64mb")),
                }
            }
            "client-output-buffer-limit" => {
                // `<class> <hard> <soft> <soft seconds>`, one or more classes.
                let words: Vec<&str> = value.split_whitespace().collect();
                let allowed = "<class> <hard> <soft> <soft-seconds> ..., class normal, replica or pubsub, sizes like 32mb";
                if words.is_empty() || !words.len().is_multiple_of(4) {
                    return Err(bad(&key, value, allowed));
                }
                let mut limits = self.output_limits;
                for w in words.chunks(4) {
                    let class = match w[0].to_ascii_lowercase().as_str() {
                        "normal" => 0,
                        "slave" | "replica" => 1,
                        "pubsub" => 2,
                        _ => return Err(bad(&key, value, allowed)),
                    };
                    let (Some(hard), Some(soft), Ok(secs)) =
                        (parse_size(w[1]), parse_size(w[2]), w[3].parse::<u64>())
                    else {
                        return Err(bad(&key, value, allowed));
                    };
                    limits[class] = OutputLimit {
                        hard,
                        soft,
                        soft_seconds: secs,
                    };
                }
                self.output_limits = limits;
            }
            "aclfile" => {
                self.aclfile = (!value.is_empty()).then(|| PathBuf::from(value));
            }
            "protected-mode" => self.protected_mode = yes_no(&key, value)?,
            "lazyfree-lazy-eviction" => self.lazyfree.eviction = yes_no(&key, value)?,
            "lazyfree-lazy-expire" => self.lazyfree.expire = yes_no(&key, value)?,
            "lazyfree-lazy-server-del" => self.lazyfree.server_del = yes_no(&key, value)?,
            "lazyfree-lazy-user-del" => self.lazyfree.user_del = yes_no(&key, value)?,
            "lazyfree-lazy-user-flush" => self.lazyfree.user_flush = yes_no(&key, value)?,
            "enable-debug-command" => {
                self.enable_debug_command = match value {
                    "no" => DebugCommand::No,
                    "yes" => DebugCommand::Yes,
                    "local" => DebugCommand::Local,
                    _ => return Err(bad(&key, value, "no, yes, local")),
                }
            }
            "tls-port" => {
                self.tls_port = value
                    .parse()
                    .map_err(|_| bad(&key, value, "0-65535, 0 = no TLS"))?
            }
            "tls-cert-file" => {
                self.tls_cert_file = (!value.is_empty()).then(|| PathBuf::from(value))
            }
            "tls-key-file" => self.tls_key_file = (!value.is_empty()).then(|| PathBuf::from(value)),
            "tls-ca-cert-file" => {
                self.tls_ca_cert_file = (!value.is_empty()).then(|| PathBuf::from(value))
            }
            "tls-auth-clients" => {
                self.tls_auth_clients = match value.to_ascii_lowercase().as_str() {
                    "yes" => TlsAuthClients::Yes,
                    "no" => TlsAuthClients::No,
                    "optional" => TlsAuthClients::Optional,
                    _ => return Err(bad(&key, value, "yes, no, optional")),
                }
            }
            "notify-keyspace-events" => {
                self.notify_keyspace_events =
                    moon_store::NotifyFlags::parse(value).ok_or_else(|| {
                        bad(
                            &key,
                            value,
                            "a string of the characters A g $ l s h z x e t m d n K E, or empty",
                        )
                    })?
            }
            _ => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err(ConfigError {
                    key: key.clone(),
                    message: format!(
                        "unknown config key '{key}' (known keys: {})",
                        known.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The text form of a key's value, as CONFIG GET shows it.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "bind" => self.bind.to_string(),
            "port" => self.port.to_string(),
            "shards" => self.shards.to_string(),
            "dir" => self.dir.display().to_string(),
            "appendonly" => if self.appendonly { "yes" } else { "no" }.into(),
            "appendfsync" => self.appendfsync.as_str().into(),
            "requirepass" => self.requirepass.clone().unwrap_or_default(),
            "proto-max-bulk-len" => self.proto_max_bulk_len.to_string(),
            "maxclients" => self.maxclients.to_string(),
            "databases" => self.databases.to_string(),
            "maxmemory" => self.maxmemory.to_string(),
            "maxmemory-policy" => self.maxmemory_policy.as_str().into(),
            "maxmemory-samples" => self.maxmemory_samples.to_string(),
            "hash-max-listpack-entries" => self.encodings.hash_max_listpack_entries.to_string(),
            "hash-max-listpack-value" => self.encodings.hash_max_listpack_value.to_string(),
            "set-max-intset-entries" => self.encodings.set_max_intset_entries.to_string(),
            "set-max-listpack-entries" => self.encodings.set_max_listpack_entries.to_string(),
            "set-max-listpack-value" => self.encodings.set_max_listpack_value.to_string(),
            "timeout" => self.timeout.to_string(),
            "client-query-buffer-limit" => self.client_query_buffer_limit.to_string(),
            "loglevel" => self.loglevel.clone(),
            "auto-aof-rewrite-percentage" => self.auto_aof_rewrite_percentage.to_string(),
            "auto-aof-rewrite-min-size" => self.auto_aof_rewrite_min_size.to_string(),
            "pin-cpus" => if self.pin_cpus { "yes" } else { "no" }.into(),
            "client-output-buffer-limit" => OUTPUT_CLASSES
                .iter()
                .zip(self.output_limits)
                .map(|(class, l)| format!("{class} {} {} {}", l.hard, l.soft, l.soft_seconds))
                .collect::<Vec<_>>()
                .join(" "),
            "notify-keyspace-events" => self.notify_keyspace_events.to_string(),
            "aclfile" => self
                .aclfile
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            "protected-mode" => if self.protected_mode { "yes" } else { "no" }.into(),
            "lazyfree-lazy-eviction" => yes_no_text(self.lazyfree.eviction),
            "lazyfree-lazy-expire" => yes_no_text(self.lazyfree.expire),
            "lazyfree-lazy-server-del" => yes_no_text(self.lazyfree.server_del),
            "lazyfree-lazy-user-del" => yes_no_text(self.lazyfree.user_del),
            "lazyfree-lazy-user-flush" => yes_no_text(self.lazyfree.user_flush),
            "enable-debug-command" => match self.enable_debug_command {
                DebugCommand::No => "no",
                DebugCommand::Yes => "yes",
                DebugCommand::Local => "local",
            }
            .into(),
            "tls-port" => self.tls_port.to_string(),
            "tls-cert-file" => path_text(&self.tls_cert_file),
            "tls-key-file" => path_text(&self.tls_key_file),
            "tls-ca-cert-file" => path_text(&self.tls_ca_cert_file),
            "tls-auth-clients" => match self.tls_auth_clients {
                TlsAuthClients::Yes => "yes",
                TlsAuthClients::No => "no",
                TlsAuthClients::Optional => "optional",
            }
            .into(),
            _ => return None,
        })
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
