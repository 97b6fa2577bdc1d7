//! The command table: every command Moon knows, its arity, flags, key positions and how the
//! router spreads it over shards. Key positions are declared once per command (Redis's
//! first/last/step) and read only through [`CommandSpec::keys`]. `COMMAND` is answered from this table, and both the
//! connection (routing, arity) and the keyspace (dispatch) look commands up here, so a command
//! exists in exactly one list.

/// How a command reaches the keyspace(s). Which shards that is follows from its key positions
/// ([`CommandSpec::keys`]) alone; this says what to do with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Handled by the connection itself (PING, AUTH, CONFIG, MULTI, ...); touches no keyspace.
    Connection,
    /// Runs in the store of the shard that owns its keys. Keys on several shards make it a
    /// transaction over those shards, inside which `Spread` says how it runs.
    Keys(Spread),
    /// Runs on every shard, replies merged (DBSIZE, KEYS, FLUSHALL, ...).
    AllShards(Merge),
    /// Walks the shards one after the other (SCAN, RANDOMKEY).
    Server,
}

/// How a command whose keys live on several shards runs inside the transaction that holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// One key: never on several shards.
    One,
    /// Split into one part per shard (the same command on that shard's keys, `step` arguments
    /// per key), the parts' replies merged (MGET, MSET, DEL, ...).
    Split(Merge),
    /// The server coordinates it across shards with commands of its own (RENAME, MSETNX).
    Coordinated,
}

/// How the replies of the parts of a split command become one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Integers added up (DEL, EXISTS, DBSIZE).
    Sum,
    /// Every part said OK; the first error wins.
    Ok,
    /// Arrays concatenated in the order of the original keys (MGET).
    KeyOrder,
    /// Arrays concatenated in shard order (KEYS).
    Concat,
}

#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name, as Redis reports it.
    pub name: &'static str,
    /// Redis arity: positive = exact, negative = at least |arity|.
    pub arity: i32,
    pub flags: Flags,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub route: Route,
    /// The family it belongs to: which store module runs it, and COMMAND DOCS's `group`.
    pub group: Group,
    /// For commands whose keys follow a count (SINTERCARD numkeys key ...): the count's
    /// position; 0 = keys come from first/last/step.
    pub numkeys_at: usize,
}

/// A command's flags (Redis's): typed bits, tested without comparing names; [`Flags::names`]
/// gives COMMAND's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    pub const WRITE: Flags = Flags(1);
    pub const READONLY: Flags = Flags(1 << 1);
    pub const DENYOOM: Flags = Flags(1 << 2);
    pub const FAST: Flags = Flags(1 << 3);
    pub const ADMIN: Flags = Flags(1 << 4);
    pub const NOSCRIPT: Flags = Flags(1 << 5);
    pub const LOADING: Flags = Flags(1 << 6);
    pub const STALE: Flags = Flags(1 << 7);
    pub const PUBSUB: Flags = Flags(1 << 8);
    pub const MAY_REPLICATE: Flags = Flags(1 << 9);
    pub const ALLOW_BUSY: Flags = Flags(1 << 10);
    pub const SKIP_SLOWLOG: Flags = Flags(1 << 11);

    /// Redis's names, in the order COMMAND lists them (Redis's bit order).
    const NAMES: [(Flags, &'static str); 12] = [
        (Flags::WRITE, "write"),
        (Flags::READONLY, "readonly"),
        (Flags::DENYOOM, "denyoom"),
        (Flags::ADMIN, "admin"),
        (Flags::PUBSUB, "pubsub"),
        (Flags::NOSCRIPT, "noscript"),
        (Flags::LOADING, "loading"),
        (Flags::STALE, "stale"),
        (Flags::SKIP_SLOWLOG, "skip_slowlog"),
        (Flags::FAST, "fast"),
        (Flags::MAY_REPLICATE, "may_replicate"),
        (Flags::ALLOW_BUSY, "allow_busy"),
    ];

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub const fn has(self, flag: Flags) -> bool {
        self.0 & flag.0 == flag.0
    }

    /// The flags' names, as COMMAND INFO shows them.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::NAMES
            .into_iter()
            .filter(move |(f, _)| self.has(*f))
            .map(|(_, n)| n)
    }
}

/// A command's family (Redis's command groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    String,
    Generic,
    Hash,
    Set,
    Connection,
    Server,
    Transactions,
    Pubsub,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::String => "string",
            Group::Generic => "generic",
            Group::Hash => "hash",
            Group::Set => "set",
            Group::Connection => "connection",
            Group::Server => "server",
            Group::Transactions => "transactions",
            Group::Pubsub => "pubsub",
        }
    }
}

impl CommandSpec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        if self.arity >= 0 {
            argc == self.arity as usize
        } else {
            argc >= self.arity.unsigned_abs() as usize
        }
    }

    pub fn is_write(&self) -> bool {
        self.flags.has(Flags::WRITE)
    }

    /// `readonly`: it reads keys (and changes none).
    pub fn is_read(&self) -> bool {
        self.flags.has(Flags::READONLY)
    }

    /// Redis's ACL categories, derived from the group and the flags declared above.
    pub fn acl_categories(&self) -> Vec<&'static str> {
        // What client libraries send on connect (COMMAND, CLIENT SETINFO...): as Redis,
        // @connection, never @admin/@dangerous.
        if matches!(self.name, "command" | "client") {
            return vec!["@connection", "@slow"];
        }
        let mut c = vec![match self.group {
            Group::String => "@string",
            Group::Generic => "@keyspace",
            Group::Hash => "@hash",
            Group::Set => "@set",
            Group::Connection => "@connection",
            Group::Server => "@admin",
            Group::Transactions => "@transaction",
            Group::Pubsub => "@pubsub",
        }];
        if self.is_write() {
            c.push("@write");
        }
        if self.is_read() {
            c.push("@read");
        }
        // Redis's @dangerous: admin commands, and those that touch every key at once.
        if self.flags.has(Flags::ADMIN)
            || matches!(self.name, "flushall" | "flushdb" | "keys" | "swapdb")
        {
            c.push("@dangerous");
        }
        c.push(if self.flags.has(Flags::FAST) {
            "@fast"
        } else {
            "@slow"
        });
        c
    }

    /// Whether clients see it (COMMAND lists it): everything but Moon's internal commands.
    pub fn is_public(&self) -> bool {
        !self.name.starts_with("moon.")
    }

    /// `denyoom`: refused (or makes room first) when the keyspace is over `maxmemory`.
    pub fn may_grow_memory(&self) -> bool {
        self.flags.has(Flags::DENYOOM)
    }

    /// Whether `argc` arguments are well formed for this command: its arity, and for a key
    /// range that repeats (MSET's key-value pairs), a whole number of repetitions. A request
    /// that passes has every key position [`CommandSpec::keys`] names.
    pub fn args_ok(&self, argc: usize) -> bool {
        if !self.arity_ok(argc) {
            return false;
        }
        let first = self.first_key.max(0) as usize;
        let repeats = self.last_key < 0 && self.step > 1 && first > 0;
        if repeats {
            return argc >= first && (argc - first).is_multiple_of(self.step as usize);
        }
        true
    }

    /// The key arguments of a request that passed [`CommandSpec::args_ok`], in order: the one
    /// place key positions are read from the table (routing, WATCH invalidation, replay checks).
    pub fn keys<'a, T: AsRef<[u8]>>(&self, args: &'a [T]) -> impl Iterator<Item = &'a T> {
        if self.numkeys_at > 0 {
            // A count the command itself will refuse (not a number, 0, more than the
            // arguments) names no key here; the command answers its own error.
            let n = args
                .get(self.numkeys_at)
                .and_then(|n| crate::args::parse_i64(n.as_ref()))
                .filter(|&n| n > 0 && (n as usize) < args.len() - self.numkeys_at)
                .unwrap_or(0) as usize;
            let from = self.numkeys_at + 1;
            return args[from.min(args.len())..(from + n).min(args.len())]
                .iter()
                .step_by(1);
        }
        let first = self.first_key.max(0) as usize;
        let last = if self.last_key < 0 {
            args.len() as i64 + i64::from(self.last_key)
        } else {
            i64::from(self.last_key)
        };
        let end = if first == 0 {
            0
        } else {
            (last + 1).clamp(0, args.len() as i64) as usize
        };
        args.get(first..end.max(first))
            .unwrap_or(&[])
            .iter()
            .step_by(self.step.max(1) as usize)
    }
}

const W: Flags = Flags::WRITE.union(Flags::DENYOOM);
const WF: Flags = W.union(Flags::FAST);
const WNOOM: Flags = Flags::WRITE;
const WNOOMF: Flags = Flags::WRITE.union(Flags::FAST);
const R: Flags = Flags::READONLY;
const RF: Flags = Flags::READONLY.union(Flags::FAST);
const UNSCRIPTED: Flags = Flags::NOSCRIPT.union(Flags::LOADING).union(Flags::STALE);
const CONN: Flags = UNSCRIPTED.union(Flags::FAST);
const ADMIN: Flags = UNSCRIPTED.union(Flags::ADMIN);
const TXN: Flags = CONN.union(Flags::ALLOW_BUSY);
const PUBSUB: Flags = UNSCRIPTED.union(Flags::PUBSUB);
const PUBLISH: Flags = Flags::PUBSUB
    .union(Flags::LOADING)
    .union(Flags::STALE)
    .union(Flags::FAST)
    .union(Flags::MAY_REPLICATE);
const TXN_SKIP: Flags = UNSCRIPTED.union(Flags::SKIP_SLOWLOG);
const PUBSUB_INFO: Flags = Flags::PUBSUB.union(Flags::LOADING).union(Flags::STALE);
/// Moon's markers (`MOON.DB`...): never from clients.
const INTERNAL: Flags = Flags::NOSCRIPT.union(Flags::FAST);

macro_rules! cmd {
    ($group:ident: $name:literal, $arity:expr, $flags:expr, $first:expr, $last:expr, $step:expr, $route:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            step: $step,
            route: $route,
            group: Group::$group,
            numkeys_at: 0,
        }
    };
    ($group:ident: $name:literal, $arity:expr, $flags:expr, numkeys at $at:expr, $route:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: 0,
            last_key: 0,
            step: 0,
            route: $route,
            group: Group::$group,
            numkeys_at: $at,
        }
    };
}

use Route::*;
const ONE: Route = Keys(Spread::One);
const SPECIAL_KEYS: Route = Keys(Spread::Coordinated);

pub static COMMANDS: &[CommandSpec] = &[
    // Strings
    cmd!(String: "get", 2, RF, 1, 1, 1, ONE),
    cmd!(String: "set", -3, W, 1, 1, 1, ONE),
    cmd!(String: "setnx", 3, WF, 1, 1, 1, ONE),
    cmd!(String: "setex", 4, W, 1, 1, 1, ONE),
    cmd!(String: "psetex", 4, W, 1, 1, 1, ONE),
    cmd!(String: "getset", 3, WF, 1, 1, 1, ONE),
    cmd!(String: "getdel", 2, WNOOMF, 1, 1, 1, ONE),
    cmd!(String: "getex", -2, WNOOMF, 1, 1, 1, ONE),
    cmd!(String:
        "mget",
        -2,
        RF,
        1,
        -1,
        1,
        Keys(Spread::Split(Merge::KeyOrder))
    ),
    cmd!(String: "mset", -3, W, 1, -1, 2, Keys(Spread::Split(Merge::Ok))),
    cmd!(String: "msetnx", -3, W, 1, -1, 2, SPECIAL_KEYS),
    cmd!(String: "incr", 2, WF, 1, 1, 1, ONE),
    cmd!(String: "decr", 2, WF, 1, 1, 1, ONE),
    cmd!(String: "incrby", 3, WF, 1, 1, 1, ONE),
    cmd!(String: "decrby", 3, WF, 1, 1, 1, ONE),
    cmd!(String: "incrbyfloat", 3, WF, 1, 1, 1, ONE),
    cmd!(String: "append", 3, WF, 1, 1, 1, ONE),
    cmd!(String: "strlen", 2, RF, 1, 1, 1, ONE),
    cmd!(String: "getrange", 4, R, 1, 1, 1, ONE),
    cmd!(String: "substr", 4, R, 1, 1, 1, ONE),
    cmd!(String: "setrange", 4, W, 1, 1, 1, ONE),
    // Keys
    cmd!(Generic: "del", -2, WNOOM, 1, -1, 1, Keys(Spread::Split(Merge::Sum))),
    cmd!(Generic:
        "unlink",
        -2,
        WNOOMF,
        1,
        -1,
        1,
        Keys(Spread::Split(Merge::Sum))
    ),
    cmd!(Generic: "exists", -2, RF, 1, -1, 1, Keys(Spread::Split(Merge::Sum))),
    cmd!(Generic: "touch", -2, RF, 1, -1, 1, Keys(Spread::Split(Merge::Sum))),
    cmd!(Generic: "type", 2, RF, 1, 1, 1, ONE),
    cmd!(Generic: "expire", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!(Generic: "pexpire", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!(Generic: "expireat", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!(Generic: "pexpireat", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!(Generic: "ttl", 2, RF, 1, 1, 1, ONE),
    cmd!(Generic: "pttl", 2, RF, 1, 1, 1, ONE),
    cmd!(Generic: "expiretime", 2, RF, 1, 1, 1, ONE),
    cmd!(Generic: "pexpiretime", 2, RF, 1, 1, 1, ONE),
    cmd!(Generic: "persist", 2, WNOOMF, 1, 1, 1, ONE),
    cmd!(Generic: "rename", 3, WNOOM, 1, 2, 1, SPECIAL_KEYS),
    cmd!(Generic: "renamenx", 3, WNOOMF, 1, 2, 1, SPECIAL_KEYS),
    cmd!(Generic: "keys", 2, R, 0, 0, 0, AllShards(Merge::Concat)),
    cmd!(Generic: "scan", -2, R, 0, 0, 0, Server),
    cmd!(Generic: "dbsize", 1, RF, 0, 0, 0, AllShards(Merge::Sum)),
    cmd!(Generic: "flushdb", -1, WNOOM, 0, 0, 0, AllShards(Merge::Ok)),
    cmd!(Generic: "flushall", -1, WNOOM, 0, 0, 0, AllShards(Merge::Ok)),
    cmd!(Generic: "randomkey", 1, R, 0, 0, 0, Server),
    // Connection and server
    // Hashes
    cmd!(Hash: "hset", -4, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hsetnx", 4, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hmset", -4, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hget", 3, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hmget", -3, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hgetall", 2, R, 1, 1, 1, ONE),
    cmd!(Hash: "hdel", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!(Hash: "hexists", 3, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hlen", 2, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hstrlen", 3, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hkeys", 2, R, 1, 1, 1, ONE),
    cmd!(Hash: "hvals", 2, R, 1, 1, 1, ONE),
    cmd!(Hash: "hincrby", 4, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hincrbyfloat", 4, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hrandfield", -2, R, 1, 1, 1, ONE),
    cmd!(Hash: "hscan", -3, R, 1, 1, 1, ONE),
    cmd!(Hash: "hexpire", -6, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hpexpire", -6, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hexpireat", -6, WF, 1, 1, 1, ONE),
    cmd!(Hash: "hpexpireat", -6, WF, 1, 1, 1, ONE),
    cmd!(Hash: "httl", -5, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hpttl", -5, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hexpiretime", -5, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hpexpiretime", -5, RF, 1, 1, 1, ONE),
    cmd!(Hash: "hpersist", -5, WNOOMF, 1, 1, 1, ONE),
    // Sets
    cmd!(Set: "sadd", -3, WF, 1, 1, 1, ONE),
    cmd!(Set: "srem", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!(Set: "sismember", 3, RF, 1, 1, 1, ONE),
    cmd!(Set: "smismember", -3, RF, 1, 1, 1, ONE),
    cmd!(Set: "smembers", 2, R, 1, 1, 1, ONE),
    cmd!(Set: "scard", 2, RF, 1, 1, 1, ONE),
    cmd!(Set: "spop", -2, WNOOMF, 1, 1, 1, ONE),
    cmd!(Set: "srandmember", -2, R, 1, 1, 1, ONE),
    cmd!(Set: "smove", 4, WF, 1, 2, 1, SPECIAL_KEYS),
    cmd!(Set: "sinter", -2, R, 1, -1, 1, SPECIAL_KEYS),
    cmd!(Set: "sintercard", -3, R, numkeys at 1, SPECIAL_KEYS),
    cmd!(Set: "sinterstore", -3, W, 1, -1, 1, SPECIAL_KEYS),
    cmd!(Set: "sunion", -2, R, 1, -1, 1, SPECIAL_KEYS),
    cmd!(Set: "sunionstore", -3, W, 1, -1, 1, SPECIAL_KEYS),
    cmd!(Set: "sdiff", -2, R, 1, -1, 1, SPECIAL_KEYS),
    cmd!(Set: "sdiffstore", -3, W, 1, -1, 1, SPECIAL_KEYS),
    cmd!(Set: "sscan", -3, R, 1, 1, 1, ONE),
    // Generic (typed)
    cmd!(Generic: "object", -2, R, 2, 2, 1, ONE),
    cmd!(Generic: "copy", -3, W, 1, 2, 1, SPECIAL_KEYS),
    cmd!(Generic: "move", 3, WF, 1, 1, 1, ONE),
    cmd!(Generic: "swapdb", 3, WNOOMF, 0, 0, 0, AllShards(Merge::Ok)),
    // The database of the command that follows it, in a shard's batch and in the log; the
    // server refuses it from clients.
    cmd!(Server: "moon.db", 2, INTERNAL, 0, 0, 0, Connection),
    // The tracking client (CLIENT TRACKING) whose command follows it in a shard's batch;
    // never logged, refused from clients.
    cmd!(Server: "moon.track", 2, INTERNAL, 0, 0, 0, Connection),
    // The keyspace event the rest of a batch announces (the halves of a cross-shard RENAME,
    // COPY or *STORE); never logged, refused from clients.
    cmd!(Server: "moon.event", 2, INTERNAL, 0, 0, 0, Connection),
    cmd!(Generic: "memory", -2, R, 2, 2, 1, ONE),
    cmd!(Connection: "ping", -1, CONN, 0, 0, 0, Connection),
    cmd!(Connection: "echo", 2, CONN, 0, 0, 0, Connection),
    cmd!(Connection: "quit", -1, CONN, 0, 0, 0, Connection),
    cmd!(Connection: "hello", -1, CONN, 0, 0, 0, Connection),
    cmd!(Connection: "auth", -2, CONN, 0, 0, 0, Connection),
    cmd!(Connection: "select", 2, CONN, 0, 0, 0, Connection),
    cmd!(Connection: "client", -2, ADMIN, 0, 0, 0, Connection),
    cmd!(Server: "command", -1, ADMIN, 0, 0, 0, Connection),
    cmd!(Server: "config", -2, ADMIN, 0, 0, 0, Connection),
    cmd!(Server: "info", -1, ADMIN, 0, 0, 0, Connection),
    cmd!(Server: "time", 1, CONN, 0, 0, 0, Connection),
    cmd!(Server: "shutdown", -1, ADMIN, 0, 0, 0, Connection),
    cmd!(Server: "bgrewriteaof", 1, ADMIN, 0, 0, 0, Connection),
    cmd!(Server: "debug", -2, ADMIN, 0, 0, 0, Connection),
    cmd!(Connection: "reset", 1, CONN, 0, 0, 0, Connection),
    cmd!(Server: "acl", -2, ADMIN, 0, 0, 0, Connection),
    // Pub/sub (handled by the connection: subscriptions live with it, PUBLISH fans out)
    cmd!(Pubsub: "subscribe", -2, PUBSUB, 0, 0, 0, Connection),
    cmd!(Pubsub: "unsubscribe", -1, PUBSUB, 0, 0, 0, Connection),
    cmd!(Pubsub: "psubscribe", -2, PUBSUB, 0, 0, 0, Connection),
    cmd!(Pubsub: "punsubscribe", -1, PUBSUB, 0, 0, 0, Connection),
    cmd!(Pubsub: "ssubscribe", -2, PUBSUB, 0, 0, 0, Connection),
    cmd!(Pubsub: "sunsubscribe", -1, PUBSUB, 0, 0, 0, Connection),
    cmd!(Pubsub: "publish", 3, PUBLISH, 0, 0, 0, Connection),
    cmd!(Pubsub: "spublish", 3, PUBLISH, 0, 0, 0, Connection),
    cmd!(Pubsub: "pubsub", -2, PUBSUB_INFO, 0, 0, 0, Connection),
    // Transactions (handled by the connection: queueing, then the EXEC coordinator)
    cmd!(Transactions: "multi", 1, TXN, 0, 0, 0, Connection),
    cmd!(Transactions: "exec", 1, TXN_SKIP, 0, 0, 0, Connection),
    cmd!(Transactions: "discard", 1, TXN, 0, 0, 0, Connection),
    cmd!(Transactions: "watch", -2, TXN, 1, -1, 1, Connection),
    cmd!(Transactions: "unwatch", 1, TXN, 0, 0, 0, Connection),
];

/// Finds a command by name, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    // Every request looks its command up: lower-case the name on the stack and binary-search
    // a by-name index built once, instead of comparing against every entry.
    static BY_NAME: std::sync::OnceLock<Vec<&'static CommandSpec>> = std::sync::OnceLock::new();
    if name.len() > 16 {
        return None;
    }
    let mut buf = [0u8; 16];
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let key = &buf[..name.len()];
    let index = BY_NAME.get_or_init(|| {
        let mut v: Vec<&'static CommandSpec> = COMMANDS.iter().collect();
        v.sort_by_key(|c| c.name);
        v
    });
    index
        .binary_search_by(|c| c.name.as_bytes().cmp(key))
        .ok()
        .map(|i| index[i])
}

#[cfg(test)]
mod tests {
    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(super::lookup(b"GeT").map(|c| c.name), Some("get"));
        assert!(super::lookup(b"nope").is_none());
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::*;

    fn args(words: &str) -> Vec<bytes::Bytes> {
        words
            .split(' ')
            .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn keys_of(words: &str) -> Option<Vec<String>> {
        let a = args(words);
        let spec = lookup(&a[0])?;
        spec.args_ok(a.len()).then(|| {
            spec.keys(&a)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        })
    }

    #[test]
    fn key_positions_come_from_the_table() {
        assert_eq!(keys_of("GET k"), Some(vec!["k".into()]));
        assert_eq!(keys_of("SET k v EX 10"), Some(vec!["k".into()]));
        assert_eq!(keys_of("MSET a 1 b 2"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys_of("MSET a 1 b"), None, "a key without its value");
        assert_eq!(keys_of("MSETNX a 1 b"), None);
        assert_eq!(keys_of("DEL a b c").map(|k| k.len()), Some(3));
        assert_eq!(keys_of("RENAME a b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys_of("WATCH a b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys_of("PING"), Some(vec![]));
        assert_eq!(keys_of("KEYS *"), Some(vec![]));
        assert_eq!(keys_of("GET"), None, "wrong arity");
        assert_eq!(keys_of("GET a b"), None, "wrong arity");
    }

    #[test]
    fn every_command_is_found_in_any_case_and_nothing_else() {
        for c in COMMANDS {
            assert_eq!(lookup(c.name.as_bytes()).map(|f| f.name), Some(c.name));
            assert_eq!(
                lookup(c.name.to_ascii_uppercase().as_bytes()).map(|f| f.name),
                Some(c.name)
            );
        }
        for missing in [
            &b""[..],
            b"nosuch",
            b"sett",
            b"ge",
            b"averyveryverylongcommandname",
        ] {
            assert!(lookup(missing).is_none());
        }
    }
}
