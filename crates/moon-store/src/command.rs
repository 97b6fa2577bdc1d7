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
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub route: Route,
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
        self.flags.contains(&"write")
    }

    /// `denyoom`: refused (or makes room first) when the keyspace is over `maxmemory`.
    pub fn may_grow_memory(&self) -> bool {
        self.flags.contains(&"denyoom")
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
    pub fn keys<'a, T>(&self, args: &'a [T]) -> impl Iterator<Item = &'a T> {
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

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const WNOOM: &[&str] = &["write"];
const WNOOMF: &[&str] = &["write", "fast"];
const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const CONN: &[&str] = &["noscript", "loading", "stale", "fast"];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];
const TXN: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const TXN_SKIP: &[&str] = &["noscript", "loading", "stale", "skip_slowlog"];

macro_rules! cmd {
    ($name:literal, $arity:expr, $flags:expr, $first:expr, $last:expr, $step:expr, $route:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            step: $step,
            route: $route,
        }
    };
}

use Route::*;
const ONE: Route = Keys(Spread::One);
const SPECIAL_KEYS: Route = Keys(Spread::Coordinated);

pub static COMMANDS: &[CommandSpec] = &[
    // Strings
    cmd!("get", 2, RF, 1, 1, 1, ONE),
    cmd!("set", -3, W, 1, 1, 1, ONE),
    cmd!("setnx", 3, WF, 1, 1, 1, ONE),
    cmd!("setex", 4, W, 1, 1, 1, ONE),
    cmd!("psetex", 4, W, 1, 1, 1, ONE),
    cmd!("getset", 3, WF, 1, 1, 1, ONE),
    cmd!("getdel", 2, WNOOMF, 1, 1, 1, ONE),
    cmd!("getex", -2, WNOOMF, 1, 1, 1, ONE),
    cmd!(
        "mget",
        -2,
        RF,
        1,
        -1,
        1,
        Keys(Spread::Split(Merge::KeyOrder))
    ),
    cmd!("mset", -3, W, 1, -1, 2, Keys(Spread::Split(Merge::Ok))),
    cmd!("msetnx", -3, W, 1, -1, 2, SPECIAL_KEYS),
    cmd!("incr", 2, WF, 1, 1, 1, ONE),
    cmd!("decr", 2, WF, 1, 1, 1, ONE),
    cmd!("incrby", 3, WF, 1, 1, 1, ONE),
    cmd!("decrby", 3, WF, 1, 1, 1, ONE),
    cmd!("incrbyfloat", 3, WF, 1, 1, 1, ONE),
    cmd!("append", 3, WF, 1, 1, 1, ONE),
    cmd!("strlen", 2, RF, 1, 1, 1, ONE),
    cmd!("getrange", 4, R, 1, 1, 1, ONE),
    cmd!("substr", 4, R, 1, 1, 1, ONE),
    cmd!("setrange", 4, W, 1, 1, 1, ONE),
    // Keys
    cmd!("del", -2, WNOOM, 1, -1, 1, Keys(Spread::Split(Merge::Sum))),
    cmd!(
        "unlink",
        -2,
        WNOOMF,
        1,
        -1,
        1,
        Keys(Spread::Split(Merge::Sum))
    ),
    cmd!("exists", -2, RF, 1, -1, 1, Keys(Spread::Split(Merge::Sum))),
    cmd!("touch", -2, RF, 1, -1, 1, Keys(Spread::Split(Merge::Sum))),
    cmd!("type", 2, RF, 1, 1, 1, ONE),
    cmd!("expire", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!("pexpire", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!("expireat", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!("pexpireat", -3, WNOOMF, 1, 1, 1, ONE),
    cmd!("ttl", 2, RF, 1, 1, 1, ONE),
    cmd!("pttl", 2, RF, 1, 1, 1, ONE),
    cmd!("expiretime", 2, RF, 1, 1, 1, ONE),
    cmd!("pexpiretime", 2, RF, 1, 1, 1, ONE),
    cmd!("persist", 2, WNOOMF, 1, 1, 1, ONE),
    cmd!("rename", 3, WNOOM, 1, 2, 1, SPECIAL_KEYS),
    cmd!("renamenx", 3, WNOOMF, 1, 2, 1, SPECIAL_KEYS),
    cmd!("keys", 2, R, 0, 0, 0, AllShards(Merge::Concat)),
    cmd!("scan", -2, R, 0, 0, 0, Server),
    cmd!("dbsize", 1, RF, 0, 0, 0, AllShards(Merge::Sum)),
    cmd!("flushdb", -1, WNOOM, 0, 0, 0, AllShards(Merge::Ok)),
    cmd!("flushall", -1, WNOOM, 0, 0, 0, AllShards(Merge::Ok)),
    cmd!("randomkey", 1, R, 0, 0, 0, Server),
    // Connection and server
    cmd!("ping", -1, CONN, 0, 0, 0, Connection),
    cmd!("echo", 2, CONN, 0, 0, 0, Connection),
    cmd!("quit", -1, CONN, 0, 0, 0, Connection),
    cmd!("hello", -1, CONN, 0, 0, 0, Connection),
    cmd!("auth", -2, CONN, 0, 0, 0, Connection),
    cmd!("select", 2, CONN, 0, 0, 0, Connection),
    cmd!("client", -2, ADMIN, 0, 0, 0, Connection),
    cmd!("command", -1, ADMIN, 0, 0, 0, Connection),
    cmd!("config", -2, ADMIN, 0, 0, 0, Connection),
    cmd!("info", -1, ADMIN, 0, 0, 0, Connection),
    cmd!("time", 1, CONN, 0, 0, 0, Connection),
    cmd!("shutdown", -1, ADMIN, 0, 0, 0, Connection),
    cmd!("bgrewriteaof", 1, ADMIN, 0, 0, 0, Connection),
    // Transactions (handled by the connection: queueing, then the EXEC coordinator)
    cmd!("multi", 1, TXN, 0, 0, 0, Connection),
    cmd!("exec", 1, TXN_SKIP, 0, 0, 0, Connection),
    cmd!("discard", 1, TXN, 0, 0, 0, Connection),
    cmd!("watch", -2, TXN, 1, -1, 1, Connection),
    cmd!("unwatch", 1, TXN, 0, 0, 0, Connection),
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
