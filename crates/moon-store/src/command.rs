//! The command table: every command Moon knows, its arity, flags, key positions and how the
//! router spreads it over shards. `COMMAND` is answered from this table, and both the
//! connection (routing, arity) and the keyspace (dispatch) look commands up here, so a command
//! exists in exactly one list.

/// How a command reaches the keyspace(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Handled by the connection itself (PING, AUTH, CONFIG, ...); touches no keyspace.
    Connection,
    /// One key, at argument 1: runs on the shard that owns it.
    SingleKey,
    /// Several keys from argument 1 on, `step` apart (MGET, MSET, DEL, ...): split per owning
    /// shard, each part runs as the same command on its shard, replies merged by `merge`.
    MultiKey { step: usize, merge: Merge },
    /// Runs on every shard, replies merged (DBSIZE, KEYS, FLUSHALL, ...).
    AllShards(Merge),
    /// Needs its own cross-shard logic in the router (RENAME across shards, SCAN, ...).
    Special,
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

pub static COMMANDS: &[CommandSpec] = &[
    // Strings
    cmd!("get", 2, RF, 1, 1, 1, SingleKey),
    cmd!("set", -3, W, 1, 1, 1, SingleKey),
    cmd!("setnx", 3, WF, 1, 1, 1, SingleKey),
    cmd!("setex", 4, W, 1, 1, 1, SingleKey),
    cmd!("psetex", 4, W, 1, 1, 1, SingleKey),
    cmd!("getset", 3, WF, 1, 1, 1, SingleKey),
    cmd!("getdel", 2, WNOOMF, 1, 1, 1, SingleKey),
    cmd!("getex", -2, WNOOMF, 1, 1, 1, SingleKey),
    cmd!(
        "mget",
        -2,
        RF,
        1,
        -1,
        1,
        MultiKey {
            step: 1,
            merge: Merge::KeyOrder
        }
    ),
    cmd!(
        "mset",
        -3,
        W,
        1,
        -1,
        2,
        MultiKey {
            step: 2,
            merge: Merge::Ok
        }
    ),
    cmd!("msetnx", -3, W, 1, -1, 2, Special),
    cmd!("incr", 2, WF, 1, 1, 1, SingleKey),
    cmd!("decr", 2, WF, 1, 1, 1, SingleKey),
    cmd!("incrby", 3, WF, 1, 1, 1, SingleKey),
    cmd!("decrby", 3, WF, 1, 1, 1, SingleKey),
    cmd!("incrbyfloat", 3, WF, 1, 1, 1, SingleKey),
    cmd!("append", 3, WF, 1, 1, 1, SingleKey),
    cmd!("strlen", 2, RF, 1, 1, 1, SingleKey),
    cmd!("getrange", 4, R, 1, 1, 1, SingleKey),
    cmd!("substr", 4, R, 1, 1, 1, SingleKey),
    cmd!("setrange", 4, W, 1, 1, 1, SingleKey),
    // Keys
    cmd!(
        "del",
        -2,
        WNOOM,
        1,
        -1,
        1,
        MultiKey {
            step: 1,
            merge: Merge::Sum
        }
    ),
    cmd!(
        "unlink",
        -2,
        WNOOMF,
        1,
        -1,
        1,
        MultiKey {
            step: 1,
            merge: Merge::Sum
        }
    ),
    cmd!(
        "exists",
        -2,
        RF,
        1,
        -1,
        1,
        MultiKey {
            step: 1,
            merge: Merge::Sum
        }
    ),
    cmd!(
        "touch",
        -2,
        RF,
        1,
        -1,
        1,
        MultiKey {
            step: 1,
            merge: Merge::Sum
        }
    ),
    cmd!("type", 2, RF, 1, 1, 1, SingleKey),
    cmd!("expire", -3, WNOOMF, 1, 1, 1, SingleKey),
    cmd!("pexpire", -3, WNOOMF, 1, 1, 1, SingleKey),
    cmd!("expireat", -3, WNOOMF, 1, 1, 1, SingleKey),
    cmd!("pexpireat", -3, WNOOMF, 1, 1, 1, SingleKey),
    cmd!("ttl", 2, RF, 1, 1, 1, SingleKey),
    cmd!("pttl", 2, RF, 1, 1, 1, SingleKey),
    cmd!("expiretime", 2, RF, 1, 1, 1, SingleKey),
    cmd!("pexpiretime", 2, RF, 1, 1, 1, SingleKey),
    cmd!("persist", 2, WNOOMF, 1, 1, 1, SingleKey),
    cmd!("rename", 3, WNOOM, 1, 2, 1, Special),
    cmd!("renamenx", 3, WNOOMF, 1, 2, 1, Special),
    cmd!("keys", 2, R, 0, 0, 0, AllShards(Merge::Concat)),
    cmd!("scan", -2, R, 0, 0, 0, Special),
    cmd!("dbsize", 1, RF, 0, 0, 0, AllShards(Merge::Sum)),
    cmd!("flushdb", -1, WNOOM, 0, 0, 0, AllShards(Merge::Ok)),
    cmd!("flushall", -1, WNOOM, 0, 0, 0, AllShards(Merge::Ok)),
    cmd!("randomkey", 1, R, 0, 0, 0, Special),
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
