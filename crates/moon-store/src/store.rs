//! Command execution against one shard's keyspace.
//!
//! This file holds what every command shares: the `Store` (keyspace, log of effects, WATCH
//! versions, memory limit), `execute` (the memory check, then the family's handler, then the
//! expirations it caused), and the logging helpers every change goes through. The commands
//! live in one file per family, chosen by the command table's group: `string.rs`, `keys.rs`
//! (commands on keys of any type), `hash.rs`, `set.rs`.

use std::collections::HashMap;

use bytes::Bytes;
use moon_proto::Frame;

use crate::command::{self, CommandSpec, Group};
use crate::evict::MemoryLimit;
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
            Group::String => self.string_command(spec, args, now),
            Group::Hash => self.hash_command(spec, args, now),
            Group::Set => self.set_command(spec, args, now),
            _ => self.keys_command(spec, args, now),
        }
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
pub mod keys;
pub mod set;
mod string;

#[cfg(test)]
mod tests;
