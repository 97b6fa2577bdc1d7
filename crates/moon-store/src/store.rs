//! Command execution against one shard's keyspace.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use moon_proto::Frame;

use crate::command::{self, CommandSpec, Group};
use crate::evict::MemoryLimit;
use crate::glob::glob_match;
use crate::keyspace::{Keyspace, Removal, Value};
use crate::reply::{self, err};

/// At most this many keys, or this many bytes of keys and values, are evicted before one
/// command (see `Store::make_room`).
pub const EVICTION_BATCH: (usize, usize) = (1024, 16 << 20);

/// Counters reported by INFO.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub keys: u64,
    pub expires: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub expired_keys: u64,
    pub evicted_keys: u64,
    /// The keyspace's memory account (see `crate::evict`).
    pub used_memory: u64,
    pub maxmemory: u64,
}

/// One shard's keyspace plus what executing commands against it needs.
pub struct Store {
    ks: Keyspace,
    hits: u64,
    misses: u64,
    /// `proto-max-bulk-len`: APPEND and SETRANGE refuse to grow a string beyond it.
    max_string_len: usize,
    /// When true, every write that changed the keyspace is recorded in `log`.
    record_writes: bool,
    log: Vec<Vec<Bytes>>,
    random_seed: u64,
    /// WATCHed keys of this shard: (number of watchers, version). A key's version moves to
    /// `watch_clock` whenever a command changes it, so EXEC can tell.
    watched: HashMap<Bytes, (u32, u64)>,
    watch_clock: u64,
    memory_limit: MemoryLimit,
    /// Thresholds of the compact encodings of hashes and sets.
    encodings: crate::value::Encodings,
    /// Off while a transaction's commands run: its room was made once, before it started
    /// ([`Store::make_room_now`]), as Redis checks EXEC and not the commands inside it.
    memory_checks: bool,
}

/// What WATCH saw of a key: EXEC proceeds only if the key is unchanged since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchToken {
    version: u64,
    existed: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(512 * 1024 * 1024)
    }
}

/// Parses a Redis integer argument strictly (like `string2ll`).
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let (neg, digits) = if b[0] == b'-' {
        (true, &b[1..])
    } else {
        (false, b)
    };
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) || (neg && digits == b"0") {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = if neg {
            v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?
        } else {
            v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?
        };
    }
    Some(v)
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

fn int_bytes(v: i64) -> Bytes {
    Bytes::from(v.to_string())
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Expiry argument forms of SET and GETEX.
#[derive(Clone, Copy, PartialEq)]
enum Expiry {
    Keep,
    None,
    At(u64),
    Persist,
}

impl Store {
    pub fn new(max_string_len: usize) -> Self {
        Store {
            ks: Keyspace::default(),
            hits: 0,
            misses: 0,
            max_string_len,
            record_writes: false,
            log: Vec::new(),
            random_seed: 0x9E37_79B9_7F4A_7C15,
            watched: HashMap::new(),
            watch_clock: 0,
            memory_limit: MemoryLimit::default(),
            encodings: crate::value::Encodings::default(),
            memory_checks: true,
        }
    }

    /// Turns recording of writes for the AOF on or off.
    pub fn set_record_writes(&mut self, on: bool) {
        self.record_writes = on;
    }

    pub fn set_max_string_len(&mut self, len: usize) {
        self.max_string_len = len;
    }

    pub fn max_string_len(&self) -> usize {
        self.max_string_len
    }

    /// Takes the writes recorded since the last call, in execution order.
    pub fn take_log(&mut self) -> Vec<Vec<Bytes>> {
        std::mem::take(&mut self.log)
    }

    /// The writes recorded since the last [`Store::clear_log`] (without giving up the buffer).
    pub fn logged(&self) -> &[Vec<Bytes>] {
        &self.log
    }

    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    pub fn keyspace(&self) -> &Keyspace {
        &self.ks
    }

    /// Takes `other`'s keyspace in place of this one (a shard whose log failed goes back to
    /// what its log holds). Every WATCHed key counts as modified.
    pub fn replace_keyspace(&mut self, other: Store) {
        self.ks = other.ks;
        self.log.clear();
        self.watch_clock += 1;
        for slot in self.watched.values_mut() {
            slot.1 = self.watch_clock;
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.ks.len() as u64,
            expires: self.ks.expires_count() as u64,
            keyspace_hits: self.hits,
            keyspace_misses: self.misses,
            expired_keys: self.ks.expired_keys,
            evicted_keys: self.ks.evicted_keys,
            used_memory: self.ks.used_memory() as u64,
            maxmemory: self.memory_limit.max as u64,
        }
    }

    /// This shard's share of `maxmemory` and the eviction policy. Never set while replaying:
    /// replay evicts nothing by itself, every eviction is in the log.
    pub fn set_memory_limit(&mut self, limit: MemoryLimit) {
        self.memory_limit = limit;
    }

    pub fn encodings(&self) -> crate::value::Encodings {
        self.encodings
    }

    /// The thresholds of the compact encodings (`hash-max-listpack-*`, `set-max-*`).
    pub fn set_encodings(&mut self, encodings: crate::value::Encodings) {
        self.encodings = encodings;
    }

    /// A fresh seed for a random choice (RANDOMKEY, SPOP, ...). A choice changes nothing by
    /// itself; one that changes the keyspace is logged as its effect.
    fn next_seed(&mut self, now: u64) -> u64 {
        self.random_seed = self
            .random_seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(now | 1);
        self.random_seed
    }

    /// OBJECT ENCODING|REFCOUNT|IDLETIME|FREQ|HELP.
    fn object(&mut self, args: &[Bytes], now: u64) -> Frame {
        let sub = &args[1];
        if eq(sub, "help") && args.len() == 2 {
            return Frame::Array(
                [
                    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "ENCODING <key>",
                    "    Return the kind of internal representation used in order to store the value",
                    "    associated with a <key>.",
                    "FREQ <key>",
                    "    Return the access frequency index of the <key>. The returned integer is",
                    "    proportional to the logarithm of the recent access frequency of the key.",
                    "IDLETIME <key>",
                    "    Return the idle time of the <key>, that is the approximated number of",
                    "    seconds elapsed since the last access to the key.",
                    "REFCOUNT <key>",
                    "    Return the number of references of the value associated with the specified",
                    "    <key>.",
                    "HELP",
                    "    Print this help.",
                ]
                .iter()
                .map(|l| Frame::Simple(l))
                .collect(),
            );
        }
        let known = ["encoding", "refcount", "idletime", "freq"];
        let Some(name) = known.iter().find(|k| eq(sub, k)) else {
            return reply::unknown_subcommand(sub, "object");
        };
        if args.len() != 3 {
            return reply::wrong_arity(&format!("object|{name}"));
        }
        let lfu = matches!(
            self.memory_limit.policy,
            crate::EvictionPolicy::AllKeysLfu | crate::EvictionPolicy::VolatileLfu
        );
        const SWITCHING: &str = "Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
        if *name == "freq" && !lfu {
            return Frame::Error(format!("ERR An LFU maxmemory policy is not selected, access frequency not tracked. {SWITCHING}"));
        }
        if *name == "idletime" && lfu {
            return Frame::Error(format!(
                "ERR An LRU maxmemory policy is selected, idle time not tracked. {SWITCHING}"
            ));
        }
        let Some(entry) = self.ks.peek(&args[2], now) else {
            return Frame::Null;
        };
        if eq(sub, "encoding") {
            Frame::bulk(entry.value.encoding())
        } else if eq(sub, "refcount") {
            Frame::Integer(1)
        } else if eq(sub, "idletime") {
            Frame::Integer((now.saturating_sub(entry.access_ms()) / 1000) as i64)
        } else {
            Frame::Integer(i64::from(entry.freq()))
        }
    }

    /// Before a transaction that may grow memory: makes room as for one command, with the
    /// removals in [`Store::logged`] (to be logged before the transaction's own records).
    /// False: the transaction must be refused with OOM.
    pub fn make_room_now(&mut self, now: u64) -> bool {
        self.ks.set_clock(now);
        let ok = self.make_room(now);
        self.log_expired();
        ok
    }

    /// Turns the per-command memory check off while a transaction runs, and back on.
    pub fn set_memory_checks(&mut self, on: bool) {
        self.memory_checks = on;
    }

    /// Before a command that may grow memory: removes keys as the policy allows until the
    /// keyspace is within its limit. False if it is still over (the command gets OOM) —
    /// unless it made progress and stopped at [`EVICTION_BATCH`]: then the command runs, and the
    /// next ones go on evicting (Redis's eviction also works in slices). The bound keeps one
    /// command from evicting a whole keyspace at once, which would stall the shard and put
    /// every removal into that one command's record.
    fn make_room(&mut self, now: u64) -> bool {
        let limit = self.memory_limit;
        if limit.max == 0 {
            return true;
        }
        let (mut keys, mut bytes) = (0usize, 0usize);
        while self.ks.used_memory() > limit.max {
            if keys >= EVICTION_BATCH.0 || bytes >= EVICTION_BATCH.1 {
                return true;
            }
            let before = self.ks.used_memory();
            if !self.ks.evict_one(&limit, now) {
                return false;
            }
            keys += 1;
            bytes += before.saturating_sub(self.ks.used_memory());
        }
        true
    }

    /// Active expiry: reclaims up to `budget` keys whose deadline has passed; each removal is
    /// logged as a `DEL` (see [`Store::logged`]).
    pub fn expire_cycle(&mut self, now: u64, budget: usize) -> usize {
        let n = self.ks.expire_cycle(now, budget);
        self.log_expired();
        n
    }

    /// Starts watching `key` (WATCH): returns what EXEC will compare against.
    pub fn watch(&mut self, key: &[u8], now: u64) -> WatchToken {
        let existed = self.ks.peek(key, now).is_some();
        let slot = self
            .watched
            .entry(Bytes::copy_from_slice(key))
            .or_insert((0, 0));
        slot.0 += 1;
        WatchToken {
            version: slot.1,
            existed,
        }
    }

    /// Stops one watcher of `key` (UNWATCH, EXEC, DISCARD, a closed connection).
    pub fn unwatch(&mut self, key: &[u8]) {
        if let Some(slot) = self.watched.get_mut(key) {
            slot.0 -= 1;
            if slot.0 == 0 {
                self.watched.remove(key);
            }
        }
    }

    /// Whether `key` is as WATCH saw it: not changed by any command, and not expired (or
    /// created) since.
    pub fn watch_intact(&mut self, key: &[u8], token: WatchToken, now: u64) -> bool {
        let version = self.watched.get(key).map_or(u64::MAX, |s| s.1);
        version == token.version && self.ks.peek(key, now).is_some() == token.existed
    }

    /// Marks the keys a logged effect changes as modified, for WATCH. Every change to the
    /// keyspace passes through one of the `log_*` functions, so this sees them all.
    fn touch(&mut self, parts: &[&[u8]]) {
        if self.watched.is_empty() || parts.is_empty() {
            return;
        }
        self.watch_clock += 1;
        let clock = self.watch_clock;
        if parts[0].eq_ignore_ascii_case(b"FLUSHALL") || parts[0].eq_ignore_ascii_case(b"FLUSHDB") {
            for slot in self.watched.values_mut() {
                slot.1 = clock;
            }
            return;
        }
        let Some(spec) = crate::command::lookup(parts[0]) else {
            return;
        };
        for key in spec.keys(parts) {
            if let Some(slot) = self.watched.get_mut(*key) {
                slot.1 = clock;
            }
        }
    }

    /// Logs the keyspace's expirations since the last record as `DEL`s, so that each sits in
    /// the log exactly where it happened: before the write that follows it. Every `log_*`
    /// function calls this first, and [`Store::execute`] once more at the end (a read may
    /// expire a key too). Replay runs without expiry and gets every removal from the log.
    fn log_expired(&mut self) {
        if !self.ks.has_expired() {
            return;
        }
        for removal in self.ks.take_expired() {
            let cmd = match removal {
                Removal::Key(key) => vec![Bytes::from_static(b"DEL"), key],
                // A field that expired changes its hash: WATCH sees it.
                Removal::Field(key, field) => {
                    self.touch(&[b"HDEL", &key]);
                    vec![Bytes::from_static(b"HDEL"), key, field]
                }
            };
            if self.record_writes {
                self.log.push(cmd);
            }
        }
    }

    fn log_args(&mut self, args: &[Bytes]) {
        self.log_expired();
        if !self.watched.is_empty() {
            let parts: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
            self.touch(&parts);
        }
        if self.record_writes {
            self.log.push(args.to_vec());
        }
    }

    fn log_cmd(&mut self, parts: &[&[u8]]) {
        self.log_expired();
        self.touch(parts);
        if self.record_writes {
            self.log
                .push(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect());
        }
    }

    fn log_set(&mut self, key: &[u8], value: &Bytes, expire_at: u64) {
        self.log_expired();
        self.touch(&[b"SET", key]);
        if self.record_writes {
            let mut cmd = vec![
                Bytes::from_static(b"SET"),
                Bytes::copy_from_slice(key),
                value.clone(),
            ];
            if expire_at != 0 {
                cmd.push(Bytes::from_static(b"PXAT"));
                cmd.push(Bytes::from(expire_at.to_string()));
            }
            self.log.push(cmd);
        }
    }

    fn log_del(&mut self, key: &[u8]) {
        self.log_cmd(&[b"DEL", key]);
    }

    fn get_str(&mut self, key: &[u8], now: u64) -> Result<Option<Bytes>, Frame> {
        match self.ks.get(key, now) {
            Some(e) => match &e.value {
                Value::Str(b) => {
                    self.hits += 1;
                    Ok(Some(b.clone()))
                }
                _ => {
                    self.hits += 1;
                    Err(err(reply::WRONGTYPE))
                }
            },
            None => {
                self.misses += 1;
                Ok(None)
            }
        }
    }

    /// Whether `key` exists (and has not expired).
    pub fn keyspace_contains(&mut self, key: &[u8], now: u64) -> bool {
        self.ks.contains(key, now)
    }

    /// Parses an integer argument the way every command does.
    pub fn parse_int(b: &[u8]) -> Option<i64> {
        parse_i64(b)
    }

    /// `key`'s value and absolute deadline (0: none), if it exists — the read half of a
    /// cross-shard RENAME, which then writes the value's rewrite form with ordinary, logged
    /// commands.
    pub fn peek_entry(&self, key: &[u8], now: u64) -> Option<(Value, u64)> {
        let e = self.ks.peek(key, now)?;
        Some((e.value.clone(), e.expire_at))
    }

    /// The type of `key`'s value, without changing anything (no lazy expiry).
    pub fn type_at(&self, key: &[u8], now: u64) -> Option<&'static str> {
        self.ks.peek(key, now).map(|e| e.value.type_name())
    }

    /// Executes one command. `now` is Unix time in milliseconds; pass
    /// [`crate::NO_EXPIRY_CHECK`] while replaying a log.
    pub fn execute(&mut self, args: &[Bytes], now: u64) -> Frame {
        let Some(name) = args.first() else {
            return reply::unknown_command(args);
        };
        let Some(spec) = command::lookup(name) else {
            return reply::unknown_command(args);
        };
        if !spec.args_ok(args.len()) {
            return reply::wrong_arity(spec.name);
        }
        self.execute_spec(spec, args, now)
    }

    /// Executes a command already looked up and arity-checked. Whatever it changed, including
    /// keys it found expired, is in [`Store::logged`] afterwards.
    pub fn execute_spec(&mut self, spec: &CommandSpec, args: &[Bytes], now: u64) -> Frame {
        self.ks.set_clock(now);
        if self.memory_limit.max != 0
            && self.memory_checks
            && spec.may_grow_memory()
            && !self.make_room(now)
        {
            self.log_expired();
            return err(reply::OOM);
        }
        let reply = self.dispatch(spec, args, now);
        self.log_expired();
        reply
    }

    fn dispatch(&mut self, spec: &CommandSpec, args: &[Bytes], now: u64) -> Frame {
        match spec.group {
            Group::Hash => return self.hash_command(spec, args, now),
            Group::Set => return self.set_command(spec, args, now),
            _ => {}
        }
        match spec.name {
            "get" => match self.get_str(&args[1], now) {
                Ok(Some(v)) => Frame::Bulk(v),
                Ok(None) => Frame::Null,
                Err(e) => e,
            },
            "set" => self.set(args, now),
            "setnx" => {
                if self.ks.contains(&args[1], now) {
                    Frame::Integer(0)
                } else {
                    self.put(&args[1], &args[2], 0);
                    self.log_args(args);
                    Frame::Integer(1)
                }
            }
            "setex" | "psetex" => {
                let Some(t) = parse_i64(&args[2]) else {
                    return err(reply::NOT_INTEGER);
                };
                let ms = if spec.name == "setex" {
                    t.checked_mul(1000)
                } else {
                    Some(t)
                };
                match ms
                    .filter(|&m| t > 0 && m > 0)
                    .and_then(|m| (now as i64).checked_add(m))
                {
                    Some(at) => {
                        let at = at as u64;
                        let v = self.put(&args[1], &args[3], at);
                        self.log_set(&args[1], &v, at);
                        Frame::OK
                    }
                    None => reply::invalid_expire(spec.name),
                }
            }
            "getset" => {
                let old = match self.get_str(&args[1], now) {
                    Ok(v) => v,
                    Err(e) => return e,
                };
                self.put(&args[1], &args[2], 0);
                self.log_cmd(&[b"SET", &args[1], &args[2]]);
                old.map_or(Frame::Null, Frame::Bulk)
            }
            "getdel" => match self.get_str(&args[1], now) {
                Ok(Some(v)) => {
                    self.ks.remove(&args[1]);
                    self.log_del(&args[1]);
                    Frame::Bulk(v)
                }
                Ok(None) => Frame::Null,
                Err(e) => e,
            },
            "getex" => self.getex(args, now),
            "mget" => Frame::Array(
                args[1..]
                    .iter()
                    .map(|k| match self.get_str(k, now) {
                        Ok(Some(v)) => Frame::Bulk(v),
                        _ => Frame::Null,
                    })
                    .collect(),
            ),
            "mset" => {
                if args.len().is_multiple_of(2) {
                    return reply::wrong_arity(spec.name);
                }
                for pair in args[1..].chunks(2) {
                    self.put(&pair[0], &pair[1], 0);
                }
                self.log_args(args);
                Frame::OK
            }
            "msetnx" => {
                if args.len().is_multiple_of(2) {
                    return reply::wrong_arity(spec.name);
                }
                if args[1..].chunks(2).any(|p| self.ks.contains(&p[0], now)) {
                    return Frame::Integer(0);
                }
                for pair in args[1..].chunks(2) {
                    self.put(&pair[0], &pair[1], 0);
                }
                self.log_args(args);
                Frame::Integer(1)
            }
            "incr" => self.incr_by(args, 1, now),
            "decr" => self.incr_by(args, -1, now),
            "incrby" | "decrby" => match parse_i64(&args[2]) {
                Some(d) if spec.name == "incrby" => self.incr_by(args, d, now),
                Some(d) => match d.checked_neg() {
                    Some(n) => self.incr_by(args, n, now),
                    None => err(reply::OVERFLOW),
                },
                None => err(reply::NOT_INTEGER),
            },
            "incrbyfloat" => self.incr_by_float(args, now),
            "append" => self.append(args, now),
            "strlen" => match self.get_str(&args[1], now) {
                Ok(v) => Frame::Integer(v.map_or(0, |v| v.len() as i64)),
                Err(e) => e,
            },
            "getrange" | "substr" => self.getrange(args, now),
            "setrange" => self.setrange(args, now),
            "del" | "unlink" => {
                let mut n = 0;
                for k in &args[1..] {
                    // An expired key counts as absent, and is not logged.
                    if self.ks.contains(k, now) {
                        self.ks.remove(k);
                        self.log_del(k);
                        n += 1;
                    }
                }
                Frame::Integer(n)
            }
            "exists" | "touch" => Frame::Integer(
                args[1..]
                    .iter()
                    .filter(|k| self.ks.contains(k, now))
                    .count() as i64,
            ),
            "type" => match self.ks.get(&args[1], now) {
                Some(e) => Frame::Simple(e.value.type_name()),
                None => Frame::Simple("none"),
            },
            "expire" | "pexpire" | "expireat" | "pexpireat" => self.expire(spec.name, args, now),
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => match self.ks.get(&args[1], now) {
                None => Frame::Integer(-2),
                Some(e) if e.expire_at == 0 => Frame::Integer(-1),
                Some(e) => {
                    let at = e.expire_at;
                    let left = at.saturating_sub(now) as i64;
                    Frame::Integer(match spec.name {
                        "ttl" => (left + 500) / 1000,
                        "pttl" => left,
                        "expiretime" => (at / 1000) as i64,
                        _ => at as i64,
                    })
                }
            },
            "persist" => match self.ks.get(&args[1], now) {
                Some(e) if e.expire_at != 0 => {
                    self.ks.set_expire(&args[1], 0);
                    self.log_args(args);
                    Frame::Integer(1)
                }
                _ => Frame::Integer(0),
            },
            "rename" | "renamenx" => self.rename(spec.name == "renamenx", args, now),
            "keys" => {
                let pattern = &args[1];
                let all = pattern.as_ref() == b"*";
                Frame::Array(
                    self.ks
                        .keys(now, |k| all || glob_match(pattern, k))
                        .into_iter()
                        .map(Frame::Bulk)
                        .collect(),
                )
            }
            "scan" => self.scan(args, now),
            "dbsize" => Frame::Integer(self.ks.len() as i64),
            "flushdb" | "flushall" => {
                if args.len() > 2
                    || (args.len() == 2 && !eq(&args[1], "async") && !eq(&args[1], "sync"))
                {
                    return err(reply::SYNTAX);
                }
                self.ks.clear();
                self.log_cmd(&[b"FLUSHALL"]);
                Frame::OK
            }
            "object" => self.object(args, now),
            "memory" => {
                // MEMORY USAGE key [SAMPLES n]: the key's share of the memory account.
                let samples_ok = args.len() == 3
                    || (args.len() == 5
                        && eq(&args[3], "samples")
                        && parse_i64(&args[4]).is_some());
                if eq(&args[1], "usage") && samples_ok {
                    match self.ks.peek(&args[2], now) {
                        Some(e) => Frame::Integer(
                            (args[2].len() + e.value.mem_size() + crate::keyspace::ENTRY_OVERHEAD)
                                as i64,
                        ),
                        None => Frame::Null,
                    }
                } else {
                    reply::unknown_subcommand(&args[1], "memory")
                }
            }
            "randomkey" => {
                let seed = self.next_seed(now);
                match self.ks.random_key(now, seed) {
                    Some(k) => Frame::Bulk(k),
                    None => Frame::Null,
                }
            }
            _ => reply::unknown_command(args),
        }
    }

    /// Stores a copy of `value` (never a slice of a request buffer) and returns it.
    fn put(&mut self, key: &[u8], value: &[u8], expire_at: u64) -> Bytes {
        let v = Bytes::copy_from_slice(value);
        self.ks.insert(key, Value::Str(v.clone()), expire_at);
        v
    }

    /// Parses an expiry option value into an absolute deadline.
    fn deadline(
        name: &str,
        unit_ms: i64,
        absolute: bool,
        arg: &[u8],
        now: u64,
    ) -> Result<u64, Frame> {
        let Some(t) = parse_i64(arg) else {
            return Err(err(reply::NOT_INTEGER));
        };
        if t <= 0 {
            return Err(reply::invalid_expire(name));
        }
        let ms = t
            .checked_mul(unit_ms)
            .ok_or_else(|| reply::invalid_expire(name))?;
        let at = if absolute {
            Some(ms)
        } else {
            (now as i64).checked_add(ms)
        };
        at.map(|a| a as u64)
            .ok_or_else(|| reply::invalid_expire(name))
    }

    fn set(&mut self, args: &[Bytes], now: u64) -> Frame {
        let (mut nx, mut xx, mut get) = (false, false, false);
        let mut expiry = Expiry::None;
        let mut i = 3;
        while i < args.len() {
            let a = &args[i];
            let has_next = i + 1 < args.len();
            if eq(a, "nx") && !xx {
                nx = true;
            } else if eq(a, "xx") && !nx {
                xx = true;
            } else if eq(a, "get") {
                get = true;
            } else if eq(a, "keepttl") && expiry == Expiry::None {
                expiry = Expiry::Keep;
            } else if (eq(a, "ex") || eq(a, "px") || eq(a, "exat") || eq(a, "pxat"))
                && expiry == Expiry::None
                && has_next
            {
                let unit = if eq(a, "ex") || eq(a, "exat") {
                    1000
                } else {
                    1
                };
                let absolute = eq(a, "exat") || eq(a, "pxat");
                match Self::deadline("set", unit, absolute, &args[i + 1], now) {
                    Ok(at) => expiry = Expiry::At(at),
                    Err(e) => return e,
                }
                i += 1;
            } else {
                return err(reply::SYNTAX);
            }
            i += 1;
        }
        let key = &args[1];
        let old = if get {
            match self.get_str(key, now) {
                Ok(v) => v,
                Err(e) => return e,
            }
        } else {
            None
        };
        // Existence matters only for NX/XX (a plain SET needs no lookup before its insert).
        let exists = if get {
            old.is_some()
        } else {
            (nx || xx) && self.ks.contains(key, now)
        };
        if (nx && exists) || (xx && !exists) {
            return if get {
                old.map_or(Frame::Null, Frame::Bulk)
            } else {
                Frame::Null
            };
        }
        let expire_at = match expiry {
            Expiry::At(at) => at,
            Expiry::Keep => self.ks.get(key, now).map_or(0, |e| e.expire_at),
            _ => 0,
        };
        let v = self.put(key, &args[2], expire_at);
        self.log_set(key, &v, expire_at);
        if get {
            old.map_or(Frame::Null, Frame::Bulk)
        } else {
            Frame::OK
        }
    }

    fn getex(&mut self, args: &[Bytes], now: u64) -> Frame {
        let mut expiry = Expiry::Keep;
        let mut i = 2;
        while i < args.len() {
            let a = &args[i];
            if eq(a, "persist") && expiry == Expiry::Keep {
                expiry = Expiry::Persist;
            } else if (eq(a, "ex") || eq(a, "px") || eq(a, "exat") || eq(a, "pxat"))
                && expiry == Expiry::Keep
                && i + 1 < args.len()
            {
                let unit = if eq(a, "ex") || eq(a, "exat") {
                    1000
                } else {
                    1
                };
                let absolute = eq(a, "exat") || eq(a, "pxat");
                match Self::deadline("getex", unit, absolute, &args[i + 1], now) {
                    Ok(at) => expiry = Expiry::At(at),
                    Err(e) => return e,
                }
                i += 1;
            } else {
                return err(reply::SYNTAX);
            }
            i += 1;
        }
        let key = &args[1];
        let v = match self.get_str(key, now) {
            Ok(Some(v)) => v,
            Ok(None) => return Frame::Null,
            Err(e) => return e,
        };
        match expiry {
            Expiry::At(at) if now != 0 && at <= now => {
                self.ks.remove(key);
                self.log_del(key);
            }
            Expiry::At(at) => {
                self.ks.set_expire(key, at);
                self.log_cmd(&[b"PEXPIREAT", key, at.to_string().as_bytes()]);
            }
            Expiry::Persist if self.ks.get(key, now).is_some_and(|e| e.expire_at != 0) => {
                self.ks.set_expire(key, 0);
                self.log_cmd(&[b"PERSIST", key]);
            }
            _ => {}
        }
        Frame::Bulk(v)
    }

    fn incr_by(&mut self, args: &[Bytes], delta: i64, now: u64) -> Frame {
        let key = &args[1];
        let (cur, expire_at) = match self.ks.get(key, now) {
            Some(e) => match &e.value {
                Value::Str(b) => match parse_i64(b) {
                    Some(v) => (v, e.expire_at),
                    None => return err(reply::NOT_INTEGER),
                },
                _ => return err(reply::WRONGTYPE),
            },
            None => (0, 0),
        };
        let Some(new) = cur.checked_add(delta) else {
            return err(reply::OVERFLOW);
        };
        let v = int_bytes(new);
        self.ks.insert(key, Value::Str(v.clone()), expire_at);
        // Logged as the resulting value: replay is then independent of what INCR saw.
        self.log_set(key, &v, expire_at);
        Frame::Integer(new)
    }

    fn incr_by_float(&mut self, args: &[Bytes], now: u64) -> Frame {
        let key = &args[1];
        let Some(delta) = parse_f64(&args[2]) else {
            return err(reply::NOT_FLOAT);
        };
        let (cur, expire_at) = match self.ks.get(key, now) {
            Some(e) => match &e.value {
                Value::Str(b) => match parse_f64(b) {
                    Some(v) => (v, e.expire_at),
                    None => return err(reply::NOT_FLOAT),
                },
                _ => return err(reply::WRONGTYPE),
            },
            None => (0.0, 0),
        };
        let new = cur + delta;
        if !new.is_finite() {
            return err(reply::NAN_OR_INF);
        }
        let v = Bytes::from(moon_proto::frame::format_double(new));
        self.ks.insert(key, Value::Str(v.clone()), expire_at);
        self.log_set(key, &v, expire_at);
        Frame::Bulk(v)
    }

    fn append(&mut self, args: &[Bytes], now: u64) -> Frame {
        let key = &args[1];
        let max = self.max_string_len;
        let appended = self.ks.modify(key, now, |value| match value {
            Value::Str(b) => {
                if b.len() + args[2].len() > max {
                    return Err(err(reply::STRING_TOO_BIG));
                }
                let mut m = BytesMut::with_capacity(b.len() + args[2].len());
                m.extend_from_slice(b);
                m.extend_from_slice(&args[2]);
                *b = m.freeze();
                Ok(b.len())
            }
            _ => Err(err(reply::WRONGTYPE)),
        });
        match appended {
            Some(Ok(n)) => {
                self.log_args(args);
                Frame::Integer(n as i64)
            }
            Some(Err(e)) => e,
            None => {
                self.put(key, &args[2], 0);
                self.log_args(args);
                Frame::Integer(args[2].len() as i64)
            }
        }
    }

    fn getrange(&mut self, args: &[Bytes], now: u64) -> Frame {
        let (Some(mut start), Some(mut end)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
            return err(reply::NOT_INTEGER);
        };
        let v = match self.get_str(&args[1], now) {
            Ok(Some(v)) => v,
            Ok(None) => return Frame::bulk(Bytes::new()),
            Err(e) => return e,
        };
        let len = v.len() as i64;
        if start < 0 && end < 0 && start > end {
            return Frame::bulk(Bytes::new());
        }
        if start < 0 {
            start += len;
        }
        if end < 0 {
            end += len;
        }
        start = start.max(0);
        end = end.max(0);
        if end >= len {
            end = len - 1;
        }
        if len == 0 || start > end {
            return Frame::bulk(Bytes::new());
        }
        Frame::Bulk(v.slice(start as usize..=end as usize))
    }

    fn setrange(&mut self, args: &[Bytes], now: u64) -> Frame {
        let Some(offset) = parse_i64(&args[2]) else {
            return err(reply::NOT_INTEGER);
        };
        if offset < 0 {
            return err(reply::OFFSET_RANGE);
        }
        let offset = offset as usize;
        let value = &args[3];
        let existing = match self.get_str(&args[1], now) {
            Ok(v) => v,
            Err(e) => return e,
        };
        if value.is_empty() {
            return Frame::Integer(existing.map_or(0, |v| v.len() as i64));
        }
        if offset.saturating_add(value.len()) > self.max_string_len {
            return err(reply::STRING_TOO_BIG);
        }
        let old = existing.unwrap_or_default();
        let new_len = old.len().max(offset + value.len());
        let mut m = BytesMut::zeroed(new_len);
        m[..old.len()].copy_from_slice(&old);
        m[offset..offset + value.len()].copy_from_slice(value);
        let expire_at = self.ks.get(&args[1], now).map_or(0, |e| e.expire_at);
        self.ks.insert(&args[1], Value::Str(m.freeze()), expire_at);
        self.log_args(args);
        Frame::Integer(new_len as i64)
    }

    fn expire(&mut self, name: &str, args: &[Bytes], now: u64) -> Frame {
        let Some(t) = parse_i64(&args[2]) else {
            return err(reply::NOT_INTEGER);
        };
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for opt in &args[3..] {
            if eq(opt, "nx") {
                nx = true;
            } else if eq(opt, "xx") {
                xx = true;
            } else if eq(opt, "gt") {
                gt = true;
            } else if eq(opt, "lt") {
                lt = true;
            } else {
                return Frame::Error(format!("ERR Unsupported option {}", reply::lossy(opt, 64)));
            }
        }
        if nx && (xx || gt || lt) {
            return Frame::StaticError(
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            );
        }
        if gt && lt {
            return Frame::StaticError("ERR GT and LT options at the same time are not compatible");
        }
        let unit = if name == "expire" || name == "expireat" {
            1000
        } else {
            1
        };
        let absolute = name.ends_with("at");
        let Some(ms) = t.checked_mul(unit) else {
            return reply::invalid_expire(name);
        };
        let at = if absolute {
            Some(ms)
        } else {
            (now as i64).checked_add(ms)
        };
        let Some(at) = at else {
            return reply::invalid_expire(name);
        };
        let key = &args[1];
        let Some(current) = self.ks.get(key, now).map(|e| e.expire_at) else {
            return Frame::Integer(0);
        };
        // For GT/LT a key without a deadline counts as an infinite one.
        let cur_inf = current == 0;
        if (nx && !cur_inf)
            || (xx && cur_inf)
            || (gt && (cur_inf || at <= current as i64))
            || (lt && !cur_inf && at >= current as i64)
        {
            return Frame::Integer(0);
        }
        if at <= now as i64 && now != 0 {
            self.ks.remove(key);
            self.log_del(key);
        } else {
            let at = at.max(1) as u64;
            self.ks.set_expire(key, at);
            self.log_cmd(&[b"PEXPIREAT", key, at.to_string().as_bytes()]);
        }
        Frame::Integer(1)
    }

    fn rename(&mut self, nx: bool, args: &[Bytes], now: u64) -> Frame {
        let (src, dst) = (&args[1], &args[2]);
        if !self.ks.contains(src, now) {
            return err(reply::NO_SUCH_KEY);
        }
        if src == dst {
            return if nx { Frame::Integer(0) } else { Frame::OK };
        }
        if nx && self.ks.contains(dst, now) {
            return Frame::Integer(0);
        }
        let Some(entry) = self.ks.remove(src) else {
            return err(reply::NO_SUCH_KEY);
        };
        self.ks.insert(dst, entry.value, entry.expire_at);
        self.log_args(args);
        if nx {
            Frame::Integer(1)
        } else {
            Frame::OK
        }
    }

    /// Shard-local SCAN: `SCAN <bound> [MATCH p] [COUNT n] [TYPE t]`, where `bound` 0 starts a
    /// scan of this shard. Replies `[next_bound, [keys]]`, next_bound 0 when this shard is done.
    /// The router turns bounds into the client's cursors.
    fn scan(&mut self, args: &[Bytes], now: u64) -> Frame {
        let Some(bound) = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return err(reply::INVALID_CURSOR);
        };
        let mut pattern: Option<&[u8]> = None;
        let mut count = 10usize;
        let mut type_filter: Option<&[u8]> = None;
        let mut i = 2;
        while i < args.len() {
            if i + 1 >= args.len() {
                return err(reply::SYNTAX);
            }
            let v = &args[i + 1];
            if eq(&args[i], "match") {
                pattern = Some(v);
            } else if eq(&args[i], "count") {
                match parse_i64(v) {
                    Some(c) if c >= 1 => count = c as usize,
                    Some(_) => return err(reply::SYNTAX),
                    None => return err(reply::NOT_INTEGER),
                }
            } else if eq(&args[i], "type") {
                type_filter = Some(v);
            } else {
                return err(reply::SYNTAX);
            }
            i += 2;
        }
        let pos = if bound == 0 {
            None
        } else {
            Some(bound as usize)
        };
        let (keys, next) = self.ks.scan(pos, count, now, |k, v| {
            pattern.is_none_or(|p| p == b"*" || glob_match(p, k))
                && type_filter.is_none_or(|t| eq(t, v.type_name()))
        });
        Frame::Array(vec![
            Frame::bulk(next.to_string()),
            Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
        ])
    }
}

/// Options of HSCAN/SSCAN: `cursor [MATCH pattern] [COUNT n] [NOVALUES]`.
struct ScanOpts<'a> {
    cursor: u64,
    pattern: Option<&'a [u8]>,
    count: usize,
    no_values: bool,
}

fn scan_args<'a>(
    cursor: &[u8],
    rest: &'a [Bytes],
    novalues_ok: bool,
) -> Result<ScanOpts<'a>, Frame> {
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err(reply::INVALID_CURSOR))?;
    let mut opts = ScanOpts {
        cursor,
        pattern: None,
        count: 10,
        no_values: false,
    };
    let mut i = 0;
    while i < rest.len() {
        let a = &rest[i];
        if novalues_ok && eq(a, "novalues") {
            opts.no_values = true;
            i += 1;
            continue;
        }
        let Some(v) = rest.get(i + 1) else {
            return Err(err(reply::SYNTAX));
        };
        if eq(a, "match") {
            opts.pattern = Some(v).filter(|p| p.as_ref() != b"*").map(|p| &p[..]);
        } else if eq(a, "count") {
            match parse_i64(v) {
                Some(c) if c >= 1 => opts.count = c as usize,
                Some(_) => return Err(err(reply::SYNTAX)),
                None => return Err(err(reply::NOT_INTEGER)),
            }
        } else {
            return Err(err(reply::SYNTAX));
        }
        i += 2;
    }
    Ok(opts)
}

/// The positions one step of a field/member SCAN visits, and the next cursor (0 = done). A
/// compact value is returned whole, as Redis does. A table is walked downwards from the
/// cursor, which is the exclusive bound of what is left: a removal moves the last entry into
/// the removed slot, which is always in the visited region or the removed entry itself, so
/// everything present throughout is returned (see `Keyspace::scan`).
fn scan_positions(
    len: usize,
    compact: bool,
    cursor: u64,
    count: usize,
) -> (std::ops::Range<usize>, u64) {
    if compact {
        return (0..len, 0);
    }
    let hi = if cursor == 0 {
        len
    } else {
        (cursor as usize).min(len)
    };
    let lo = hi.saturating_sub(count);
    (lo..hi, lo as u64)
}

fn scan_reply(next: u64, items: Vec<Frame>) -> Frame {
    Frame::Array(vec![Frame::bulk(next.to_string()), Frame::Array(items)])
}

/// Random positions among `len` for HRANDFIELD/SRANDMEMBER/SPOP: one (no count), up to
/// `count` distinct ones (positive), or `-count` with repetition (negative).
fn random_picks(len: usize, count: Option<i64>, seed: &mut u64) -> Vec<usize> {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 16) as usize
    };
    if len == 0 {
        return Vec::new();
    }
    match count {
        None => vec![next() % len],
        // Callers bound |count| by MAX_RANDOM_REPEATS first: this is the reply's size.
        Some(c) if c < 0 => (0..c.unsigned_abs().min(MAX_RANDOM_REPEATS))
            .map(|_| next() % len)
            .collect(),
        Some(c) if c as u64 >= len as u64 => (0..len).collect(),
        Some(c) if (c as usize).saturating_mul(4) < len => {
            // Few out of many: draw until distinct, without touching every position.
            let c = c as usize;
            let mut seen = std::collections::HashSet::with_capacity(c);
            let mut out = Vec::with_capacity(c);
            while out.len() < c {
                let i = next() % len;
                if seen.insert(i) {
                    out.push(i);
                }
            }
            out
        }
        Some(c) => {
            // Most of them: a partial Fisher-Yates over the positions.
            let c = c as usize;
            let mut all: Vec<usize> = (0..len).collect();
            for i in 0..c {
                let j = i + next() % (len - i);
                all.swap(i, j);
            }
            all.truncate(c);
            all
        }
    }
}

/// The most picks a negative count (repeats allowed) may ask of HRANDFIELD/SRANDMEMBER: the
/// reply is built whole, so its size is bounded (Redis streams it; a larger count is refused
/// here with Redis's out-of-range error).
pub(super) const MAX_RANDOM_REPEATS: u64 = 1 << 24;

mod hash;
pub mod set;

#[cfg(test)]
mod tests;
