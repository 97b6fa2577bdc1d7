//! What a command is: its name, arity, typed flags, key positions, family and how the router
//! spreads it over shards ([`CommandSpec`]), and the row type of a command table
//! ([`Command`]: a spec and the function that runs it).
//!
//! This module is the bottom of the command layer: it names no handler and no state. The
//! keyspace's rows live in their family's module (`store/string.rs`...) beside their
//! handlers, gathered by [`crate::table`]; the connection-level rows live in `moon-server`.
//! Key positions are declared once per command (Redis's first/last/step) and read only
//! through [`CommandSpec::keys`].

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
    /// position; 0 = keys come from first/last/step. With a count, a `first_key` > 0 is a
    /// key before it (ZUNIONSTORE's destination).
    pub numkeys_at: usize,
}

/// A command's flags (Redis's): typed bits, tested without comparing names; [`Flags::names`]
/// gives COMMAND's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(u32);

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
    /// Runs before authentication (AUTH, HELLO, QUIT, RESET).
    pub const NO_AUTH: Flags = Flags(1 << 12);
    /// Allowed to a RESP2 client in subscribed mode (Moon's flag; Redis keeps a list).
    pub const WHILE_SUBSCRIBED: Flags = Flags(1 << 13);
    /// In ACL's `@dangerous` without being `admin`: it touches every key at once (FLUSHALL,
    /// FLUSHDB, KEYS, SWAPDB). Redis declares the category; COMMAND shows no flag for it.
    pub const DANGEROUS: Flags = Flags(1 << 14);
    /// May block the client (BLPOP, BZPOPMIN...): it waits while its keys are empty, except
    /// inside MULTI.
    pub const BLOCKING: Flags = Flags(1 << 15);
    /// Its destination key follows a `STORE` option (SORT, GEORADIUS): Moon's flag, a key
    /// position Redis declares as a key spec.
    pub const STORE_KEY: Flags = Flags(1 << 16);
    /// Its keys follow a `STREAMS` option, as many as the ids after them (XREAD,
    /// XREADGROUP): Moon's flag, a key position Redis declares as a key spec.
    pub const STREAMS_KEYS: Flags = Flags(1 << 17);
    /// Refused inside MULTI (SHUTDOWN): Redis's `no_multi`.
    pub const NO_MULTI: Flags = Flags(1 << 18);

    /// Redis's names, in the order COMMAND lists them (Redis's bit order).
    const NAMES: [(Flags, &'static str); 14] = [
        (Flags::WRITE, "write"),
        (Flags::READONLY, "readonly"),
        (Flags::DENYOOM, "denyoom"),
        (Flags::ADMIN, "admin"),
        (Flags::PUBSUB, "pubsub"),
        (Flags::NOSCRIPT, "noscript"),
        (Flags::BLOCKING, "blocking"),
        (Flags::LOADING, "loading"),
        (Flags::STALE, "stale"),
        (Flags::SKIP_SLOWLOG, "skip_slowlog"),
        (Flags::FAST, "fast"),
        (Flags::NO_AUTH, "no_auth"),
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
    List,
    SortedSet,
    Bitmap,
    Hyperloglog,
    Geo,
    Stream,
    Connection,
    Server,
    Transactions,
    Pubsub,
    Scripting,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::String => "string",
            Group::Generic => "generic",
            Group::Hash => "hash",
            Group::Set => "set",
            Group::List => "list",
            Group::SortedSet => "sorted-set",
            Group::Bitmap => "bitmap",
            Group::Hyperloglog => "hyperloglog",
            Group::Geo => "geo",
            Group::Stream => "stream",
            Group::Connection => "connection",
            Group::Server => "server",
            Group::Transactions => "transactions",
            Group::Pubsub => "pubsub",
            Group::Scripting => "scripting",
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
            Group::List => "@list",
            Group::SortedSet => "@sortedset",
            Group::Bitmap => "@bitmap",
            Group::Hyperloglog => "@hyperloglog",
            Group::Geo => "@geo",
            Group::Stream => "@stream",
            Group::Connection => "@connection",
            Group::Server => "@admin",
            Group::Transactions => "@transaction",
            Group::Pubsub => "@pubsub",
            Group::Scripting => "@scripting",
        }];
        if self.is_write() {
            c.push("@write");
        }
        if self.is_read() {
            c.push("@read");
        }
        if self.flags.has(Flags::BLOCKING) {
            c.push("@blocking");
        }
        // Redis's @dangerous: admin commands, and those that touch every key at once.
        if self.flags.has(Flags::ADMIN) || self.flags.has(Flags::DANGEROUS) {
            c.push("@dangerous");
        }
        c.push(if self.flags.has(Flags::FAST) {
            "@fast"
        } else {
            "@slow"
        });
        c
    }

    /// The latency monitor's event for a slow call of it (Redis's names).
    pub fn latency_event(&self) -> &'static str {
        if self.flags.has(Flags::FAST) {
            "fast-command"
        } else {
            "command"
        }
    }

    /// What a transaction makes room for before it runs, refused whole with OOM if there is
    /// none: `denyoom` commands, and scripts that may write. (A script on its own is not
    /// refused as a whole: `Store::begin_command` makes room and its flags decide, as in
    /// Redis. Inside MULTI or across shards it still is, where Redis would run it and refuse
    /// its first write: a stricter answer, and nothing written past the limit.)
    pub fn may_grow_memory(&self) -> bool {
        self.flags.has(Flags::DENYOOM) || (self.group == Group::Scripting && self.is_write())
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
            let dest = match self.first_key {
                k if k > 0 => &args[(k as usize).min(args.len())..(k as usize + 1).min(args.len())],
                _ => &args[..0],
            };
            return dest
                .iter()
                .chain(
                    args[from.min(args.len())..(from + n).min(args.len())]
                        .iter()
                        .step_by(1),
                )
                .chain(None);
        }
        if self.flags.has(Flags::STREAMS_KEYS) {
            let range = streams_keys(args);
            return args[..0]
                .iter()
                .chain(args[range].iter().step_by(1))
                .chain(None);
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
        let store = if self.flags.has(Flags::STORE_KEY) {
            store_option(args)
        } else {
            None
        };
        args[..0]
            .iter()
            .chain(
                args.get(first..end.max(first))
                    .unwrap_or(&[])
                    .iter()
                    .step_by(self.step.max(1) as usize),
            )
            .chain(store)
    }
}

/// Where XREAD's and XREADGROUP's keys are: after `STREAMS`, half of what follows it (the
/// other half are their ids); none when the halves do not balance (the command refuses it).
pub fn streams_keys<T: AsRef<[u8]>>(args: &[T]) -> std::ops::Range<usize> {
    let is = |a: &T, w: &str| a.as_ref().eq_ignore_ascii_case(w.as_bytes());
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        if is(&args[i], "streams") && more > 0 {
            if !more.is_multiple_of(2) {
                return 0..0;
            }
            return i + 1..i + 1 + more / 2;
        }
        if (is(&args[i], "block") || is(&args[i], "count")) && more > 0 {
            i += 2;
        } else if is(&args[i], "group") && more >= 2 {
            i += 3;
        } else {
            i += 1;
        }
    }
    0..0
}

/// SORT's `STORE destination`, read past its other options as SORT reads them (a GET or BY
/// pattern may itself be the word STORE).
fn store_option<T: AsRef<[u8]>>(args: &[T]) -> Option<&T> {
    store_option_at(args).and_then(|i| args.get(i))
}

/// Where the `STORE destination` key of SORT, or the `STORE`/`STOREDIST destination` of
/// GEORADIUS and GEORADIUSBYMEMBER, is in `args`, if it has one.
pub fn store_option_at<T: AsRef<[u8]>>(args: &[T]) -> Option<usize> {
    let is = |a: &T, w: &str| a.as_ref().eq_ignore_ascii_case(w.as_bytes());
    let geo_base = match args.first() {
        Some(n) if is(n, "georadius") => Some(6),
        Some(n) if is(n, "georadiusbymember") => Some(5),
        _ => None,
    };
    if let Some(base) = geo_base {
        // Options after the centre and the radius; COUNT takes a number.
        let (mut store, mut j) = (None, base);
        while j < args.len() {
            let has_next = j + 1 < args.len();
            if (is(&args[j], "store") || is(&args[j], "storedist")) && has_next {
                store = Some(j + 1);
                j += 2;
            } else if is(&args[j], "count") && has_next {
                j += 2;
            } else {
                j += 1;
            }
        }
        return store;
    }
    let mut store = None;
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let a = &args[j];
        if is(a, "limit") && left >= 2 {
            j += 3;
        } else if (is(a, "by") || is(a, "get")) && left >= 1 {
            j += 2;
        } else if is(a, "store") && left >= 1 {
            store = Some(j + 1);
            j += 2;
        } else {
            j += 1;
        }
    }
    store
}

/// Flag sets the tables are written with (a row reads `W`, `RF`, `CONN`...).
pub mod short {
    use super::Flags;
    /// A write that may grow memory (`write denyoom`).
    pub const W: Flags = Flags::WRITE.union(Flags::DENYOOM);
    pub const WF: Flags = W.union(Flags::FAST);
    /// A write that only removes (`write`, never refused for memory).
    pub const WNOOM: Flags = Flags::WRITE;
    pub const WNOOMF: Flags = Flags::WRITE.union(Flags::FAST);
    /// Blocking writes: `write blocking noscript` (a script may not block, as in Redis 7.0),
    /// with `denyoom` (BLMOVE), with `fast` (BZPOPMIN).
    pub const WB: Flags = WNOOM.union(Flags::BLOCKING).union(Flags::NOSCRIPT);
    pub const WDB: Flags = W.union(Flags::BLOCKING).union(Flags::NOSCRIPT);
    pub const WFB: Flags = WNOOMF.union(Flags::BLOCKING).union(Flags::NOSCRIPT);
    pub const R: Flags = Flags::READONLY;
    pub const RF: Flags = Flags::READONLY.union(Flags::FAST);
    pub const UNSCRIPTED: Flags = Flags::NOSCRIPT.union(Flags::LOADING).union(Flags::STALE);
    pub const CONN: Flags = UNSCRIPTED.union(Flags::FAST);
    pub const ADMIN: Flags = UNSCRIPTED.union(Flags::ADMIN);
    pub const TXN: Flags = CONN.union(Flags::ALLOW_BUSY);
    pub const PUBSUB: Flags = UNSCRIPTED.union(Flags::PUBSUB);
    pub const PUBLISH: Flags = Flags::PUBSUB
        .union(Flags::LOADING)
        .union(Flags::STALE)
        .union(Flags::FAST)
        .union(Flags::MAY_REPLICATE);
    pub const TXN_SKIP: Flags = UNSCRIPTED.union(Flags::SKIP_SLOWLOG);
    pub const PUBSUB_INFO: Flags = Flags::PUBSUB.union(Flags::LOADING).union(Flags::STALE);

    use super::{Route, Spread};
    /// One key, one shard.
    pub const ONE: Route = Route::Keys(Spread::One);
    /// Keys on several shards, coordinated by the server (RENAME, MSETNX, SMOVE...).
    pub const COORDINATED: Route = Route::Keys(Spread::Coordinated);
}

/// One row of a command table: what the command is ([`CommandSpec`]) and the function that
/// runs it. The keyspace's rows (`H` = [`crate::call::Handler`]) live in their family's
/// module beside their handlers; the server's connection-level rows in `moon-server`. Both
/// are written with [`command!`](crate::command!).
#[derive(Debug)]
pub struct Command<H: 'static> {
    pub spec: CommandSpec,
    pub run: H,
}

/// A table row: `command!(Group: "name", arity, flags, keys(first, last, step), route, handler)`;
/// `keys(...)` may be `numkeys at i` (keys follow a count), `dest d, numkeys at i` (a key,
/// then keys after a count) or left out (no keys).
#[macro_export]
macro_rules! command {
    ($group:ident: $name:literal, $arity:expr, $flags:expr, keys($first:expr, $last:expr, $step:expr), $route:expr, $run:expr $(,)?) => {
        $crate::command::Command {
            spec: $crate::command::CommandSpec {
                name: $name,
                arity: $arity,
                flags: $flags,
                first_key: $first,
                last_key: $last,
                step: $step,
                route: $route,
                group: $crate::command::Group::$group,
                numkeys_at: 0,
            },
            run: $run,
        }
    };
    ($group:ident: $name:literal, $arity:expr, $flags:expr, numkeys at $at:expr, $route:expr, $run:expr $(,)?) => {
        $crate::command::Command {
            spec: $crate::command::CommandSpec {
                name: $name,
                arity: $arity,
                flags: $flags,
                first_key: 0,
                last_key: 0,
                step: 0,
                route: $route,
                group: $crate::command::Group::$group,
                numkeys_at: $at,
            },
            run: $run,
        }
    };
    ($group:ident: $name:literal, $arity:expr, $flags:expr, dest $dest:literal, numkeys at $at:expr, $route:expr, $run:expr $(,)?) => {
        $crate::command::Command {
            spec: $crate::command::CommandSpec {
                name: $name,
                arity: $arity,
                flags: $flags,
                first_key: $dest,
                last_key: $dest,
                step: 1,
                route: $route,
                group: $crate::command::Group::$group,
                numkeys_at: $at,
            },
            run: $run,
        }
    };
    ($group:ident: $name:literal, $arity:expr, $flags:expr, $route:expr, $run:expr $(,)?) => {
        $crate::command!($group: $name, $arity, $flags, keys(0, 0, 0), $route, $run)
    };
}

/// Finds `name` (case-insensitively, without allocating) in `index` ([`sorted_index`]).
pub fn find<T>(index: &NameIndex<T>, name: &[u8]) -> Option<T>
where
    T: Copy,
{
    index.position(name).map(|i| index.entries[i].1)
}

/// A command name lowercased into three words and its length: found with one hash and
/// three integer compares, where a binary search over 250 names compared bytes eight times
/// (a share of every request, and 6-10 % of a log's replay).
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedName {
    words: [u64; 3],
    len: usize,
}

impl PackedName {
    fn new(name: &[u8]) -> Option<PackedName> {
        if name.len() > MAX_NAME {
            return None;
        }
        let mut buf = [0u8; MAX_NAME];
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let mut words = [0u64; 3];
        for (w, chunk) in words.iter_mut().zip(buf.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        Some(PackedName {
            words,
            len: name.len(),
        })
    }

    fn hash(&self) -> usize {
        let mut h = self.len as u64;
        for w in self.words {
            h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
        }
        h as usize
    }
}

/// `(name, entry)` pairs sorted by name (a row's position is its id), and a hash table of
/// their packed names for [`find`].
pub struct NameIndex<T> {
    entries: Vec<(&'static str, T)>,
    /// Open addressing, a power of two at least twice the entries: a name and its position.
    slots: Vec<Option<(PackedName, usize)>>,
}

impl<T> NameIndex<T> {
    /// An index of nothing.
    pub const fn empty() -> NameIndex<T> {
        NameIndex {
            entries: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> &[(&'static str, T)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The position of `name` (case-insensitively) among the entries.
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        let packed = PackedName::new(name)?;
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = packed.hash() & mask;
        loop {
            match self.slots[i] {
                Some((p, at)) if p == packed => return Some(at),
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
    }
}

/// The longest command name a table may hold.
pub const MAX_NAME: usize = 24;

/// The index of `(name, entry)` pairs, for [`find`]. Every name is at most [`MAX_NAME`]
/// bytes (each table checks its own rows in a test).
pub fn sorted_index<T>(entries: impl IntoIterator<Item = (&'static str, T)>) -> NameIndex<T> {
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by_key(|(n, _)| *n);
    let size = (entries.len() * 2).next_power_of_two();
    let mut slots = vec![None; size];
    for (at, (name, _)) in entries.iter().enumerate() {
        let Some(packed) = PackedName::new(name.as_bytes()) else {
            continue;
        };
        let mut i = packed.hash() & (size - 1);
        while slots[i].is_some() {
            i = (i + 1) & (size - 1);
        }
        slots[i] = Some((packed, at));
    }
    NameIndex { entries, slots }
}
