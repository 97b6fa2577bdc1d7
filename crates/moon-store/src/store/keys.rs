//! Commands on keys of any type (DEL, EXISTS, TYPE, the EXPIRE family, RENAME, KEYS, SCAN,
//! FLUSHALL, OBJECT, MEMORY, RANDOMKEY).

use bytes::Bytes;
use moon_proto::Frame;

use super::Flush;
use super::{eq, parse_i64, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::command::{Flags, Merge, Route, Spread};
use crate::glob::glob_match;
use crate::lazyfree::{self, Cause};
use crate::reply::{self, err};

/// COPY's options: `[DB db] [REPLACE]` → (whether to replace, the target database if given),
/// with `databases` databases.
pub fn copy_options(args: &[Bytes], databases: usize) -> Result<(bool, Option<usize>), Frame> {
    let mut replace = false;
    let mut db = None;
    let mut i = 3;
    while i < args.len() {
        if eq(&args[i], "replace") {
            replace = true;
        } else if eq(&args[i], "db") && i + 1 < args.len() {
            match parse_i64(&args[i + 1]) {
                Some(d) if d >= 0 && (d as usize) < databases => db = Some(d as usize),
                Some(_) => return Err(err("ERR DB index is out of range")),
                None => return Err(err(reply::NOT_INTEGER)),
            }
            i += 1;
        } else {
            return Err(err(reply::SYNTAX));
        }
        i += 1;
    }
    Ok((replace, db))
}

/// The generic family's rows: commands on keys of any type.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Generic: "del", -2, WNOOM, keys(1, -1, 1), SPLIT_SUM, |s, a, now| del(s, a, now, Cause::UserDel)),
    // UNLINK frees a big value off the executor; DEL too with lazyfree-lazy-user-del.
    command!(Generic: "unlink", -2, WNOOMF, keys(1, -1, 1), SPLIT_SUM, |s, a, now| del(s, a, now, Cause::Async)),
    command!(Generic: "exists", -2, RF, keys(1, -1, 1), SPLIT_SUM, exists),
    command!(Generic: "touch", -2, RF, keys(1, -1, 1), SPLIT_SUM, touch),
    command!(Generic: "type", 2, RF, keys(1, 1, 1), ONE, |s, a, now| match s.ks.get_untouched(&a[1], now) {
        Some(e) => Frame::Simple(e.value.type_name()),
        None => Frame::Simple("none"),
    }),
    command!(Generic: "expire", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| s.expire("expire", a, now)),
    command!(Generic: "pexpire", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| s.expire("pexpire", a, now)),
    command!(Generic: "expireat", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| s.expire("expireat", a, now)),
    command!(Generic: "pexpireat", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| s.expire("pexpireat", a, now)),
    command!(Generic: "ttl", 2, RF, keys(1, 1, 1), ONE, |s, a, now| ttl(s, a, now, |left, _| (left + 500) / 1000)),
    command!(Generic: "pttl", 2, RF, keys(1, 1, 1), ONE, |s, a, now| ttl(s, a, now, |left, _| left)),
    command!(Generic: "expiretime", 2, RF, keys(1, 1, 1), ONE, |s, a, now| ttl(s, a, now, |_, at| at / 1000)),
    command!(Generic: "pexpiretime", 2, RF, keys(1, 1, 1), ONE, |s, a, now| ttl(s, a, now, |_, at| at)),
    command!(Generic: "persist", 2, WNOOMF, keys(1, 1, 1), ONE, persist),
    command!(Generic: "rename", 3, WNOOM, keys(1, 2, 1), COORDINATED, |s, a, now| s.rename(false, a, now)),
    command!(Generic: "renamenx", 3, WNOOMF, keys(1, 2, 1), COORDINATED, |s, a, now| s.rename(true, a, now)),
    command!(Generic: "keys", 2, R.union(Flags::DANGEROUS), Route::AllShards(Merge::Concat), keys_matching),
    command!(Generic: "scan", -2, R, Route::Server, |s, a, now| s.scan(a, now)),
    command!(Generic: "dbsize", 1, RF, Route::AllShards(Merge::Sum), |s, _, _| Frame::Integer(s.ks.len() as i64)),
    command!(Generic: "flushdb", -1, WNOOM.union(Flags::DANGEROUS), Route::AllShards(Merge::Ok), |s, a, _| flush(s, a, false)),
    command!(Generic: "flushall", -1, WNOOM.union(Flags::DANGEROUS), Route::AllShards(Merge::Ok), |s, a, _| flush(s, a, true)),
    command!(Generic: "randomkey", 1, R, Route::Server, |s, _, now| {
        let seed = s.next_seed(now);
        s.ks.random_key(now, seed).map_or(Frame::Null, Frame::Bulk)
    }),
    command!(Generic: "object", -2, R, keys(2, 2, 1), ONE, |s, a, now| s.object(a, now)),
    command!(Generic: "copy", -3, W, keys(1, 2, 1), COORDINATED, |s, a, now| s.copy(a, now)),
    command!(Generic: "move", 3, WF, keys(1, 1, 1), ONE, |s, a, now| s.move_key(a, now)),
    command!(Generic: "swapdb", 3, WNOOMF.union(Flags::DANGEROUS), Route::AllShards(Merge::Ok), swapdb),
];

const SPLIT_SUM: Route = Route::Keys(Spread::Split(Merge::Sum));

fn del(s: &mut Store, args: &[Bytes], now: u64, cause: Cause) -> Frame {
    let mut n = 0;
    for k in &args[1..] {
        // An expired key counts as absent, and is not logged.
        if s.ks.contains(k, now) {
            if let Some(gone) = s.ks.remove(k) {
                lazyfree::dispose(gone.value, cause);
            }
            s.log_del(k);
            n += 1;
        }
    }
    Frame::Integer(n)
}

/// EXISTS: looks without touching (a key's idle time is not reset).
fn exists(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    Frame::Integer(
        args[1..]
            .iter()
            .filter(|k| s.ks.get_untouched(k, now).is_some())
            .count() as i64,
    )
}

/// TOUCH: what EXISTS counts, each key's access time set.
fn touch(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    Frame::Integer(args[1..].iter().filter(|k| s.ks.contains(k, now)).count() as i64)
}

/// TTL and its kin: -2 without the key, -1 without a deadline, else `of(ms left, deadline)`.
fn ttl(s: &mut Store, args: &[Bytes], now: u64, of: fn(i64, i64) -> i64) -> Frame {
    match s.ks.get_untouched(&args[1], now) {
        None => Frame::Integer(-2),
        Some(e) if e.expire_at == 0 => Frame::Integer(-1),
        Some(e) => {
            let at = e.expire_at;
            Frame::Integer(of(at.saturating_sub(now) as i64, at as i64))
        }
    }
}

fn persist(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    match s.ks.get(&args[1], now) {
        Some(e) if e.expire_at != 0 => {
            s.ks.set_expire(&args[1], 0);
            s.log_args(args);
            Frame::Integer(1)
        }
        _ => Frame::Integer(0),
    }
}

fn keys_matching(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    let pattern = &args[1];
    let all = pattern.as_ref() == b"*";
    Frame::Array(
        s.ks.keys(now, |k| all || glob_match(pattern, k))
            .into_iter()
            .map(Frame::Bulk)
            .collect(),
    )
}

/// FLUSHDB / FLUSHALL [ASYNC|SYNC].
fn flush(s: &mut Store, args: &[Bytes], all: bool) -> Frame {
    let cause = match args.get(1) {
        None => Cause::UserFlush,
        Some(a) if args.len() == 2 && eq(a, "async") => Cause::Async,
        Some(a) if args.len() == 2 && eq(a, "sync") => Cause::Sync,
        Some(_) => return err(reply::SYNTAX),
    };
    if all {
        for db in 0..s.databases() {
            s.in_db(db, |s| s.ks.clear(cause));
        }
        s.log_flush(Flush::All);
    } else {
        s.ks.clear(cause);
        s.log_flush(Flush::Db);
    }
    Frame::OK
}

fn swapdb(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    let limit = s.db_limit(now);
    let db = |a: &Bytes, which: &str| -> Result<usize, Frame> {
        match parse_i64(a) {
            Some(d) if d >= 0 && (d as usize) < limit => Ok(d as usize),
            Some(_) => Err(err("ERR DB index is out of range")),
            None => Err(Frame::Error(format!("ERR invalid {which} DB index"))),
        }
    };
    let (a, b) = match (db(&args[1], "first"), db(&args[2], "second")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    s.swap_dbs(a, b);
    s.log_flush(Flush::Swap(a, b));
    Frame::OK
}

impl Store {
    /// MEMORY USAGE: the bytes `key` of database `db` takes in the memory account (its name,
    /// value and entry), `None` when it does not exist at `now`.
    pub fn memory_usage(&self, db: usize, key: &[u8], now: u64) -> Option<usize> {
        let e = self.keyspace_of(db)?.peek(key, now)?;
        Some(key.len() + e.value.mem_size() + crate::keyspace::ENTRY_OVERHEAD)
    }
}

impl Store {
    /// COPY source destination [DB db] [REPLACE], both keys on this shard. Logged as sent.
    fn copy(&mut self, args: &[Bytes], now: u64) -> Frame {
        let (replace, target) = match copy_options(args, self.db_limit(now)) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let here = self.db;
        let target = target.unwrap_or(here);
        let (src, dst) = (&args[1], &args[2]);
        if src == dst && target == here {
            return err("ERR source and destination objects are the same");
        }
        let Some(entry) = self.ks.get(src, now) else {
            return Frame::Integer(0);
        };
        let (value, expire_at) = (entry.value.clone(), entry.expire_at);
        let copied = self.beside(target, |s| {
            s.ks.set_clock(now);
            if !replace && s.ks.contains(dst, now) {
                return false;
            }
            s.ks.insert(dst, value, expire_at);
            s.touch(false, &[b"DEL", dst]);
            true
        });
        if !copied {
            return Frame::Integer(0);
        }
        self.log_args(args);
        Frame::Integer(1)
    }

    /// The databases a command may name: `databases` while serving; any a log names while
    /// replaying (what ran once must replay even if `databases` was lowered since).
    fn db_limit(&self, now: u64) -> usize {
        if now == crate::NO_EXPIRY_CHECK {
            crate::MAX_DATABASES
        } else {
            self.configured_databases()
        }
    }

    /// Runs `f` in database `db`, then back in the one selected now (whose effects are
    /// logged by the caller); `f` must log nothing itself.
    fn beside<R>(&mut self, db: usize, f: impl FnOnce(&mut Store) -> R) -> R {
        let here = self.db;
        self.select(db);
        let r = f(self);
        // What `f` found expired there is logged under that database.
        self.log_expired();
        self.select(here);
        r
    }

    /// MOVE key db: to another database of this shard, unless the key is there already.
    fn move_key(&mut self, args: &[Bytes], now: u64) -> Frame {
        let target = match parse_i64(&args[2]) {
            Some(d) if d >= 0 && (d as usize) < self.db_limit(now) => d as usize,
            Some(_) => return err("ERR DB index is out of range"),
            None => return err(reply::NOT_INTEGER),
        };
        if target == self.db {
            return err("ERR source and destination objects are the same");
        }
        let key = &args[1];
        if !self.ks.contains(key, now) {
            return Frame::Integer(0);
        }
        let taken = self.beside(target, |s| !s.ks.contains(key, now));
        if !taken {
            return Frame::Integer(0);
        }
        let Some(entry) = self.ks.remove(key) else {
            return Frame::Integer(0);
        };
        self.beside(target, |s| {
            s.ks.set_clock(now);
            s.ks.insert(key, entry.value, entry.expire_at);
            s.touch(false, &[b"DEL", key]);
        });
        self.log_args(args);
        Frame::Integer(1)
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
            self.log_derived(&[b"PEXPIREAT", key, at.to_string().as_bytes()]);
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

    /// Shard-local SCAN: `SCAN <cursor> [MATCH p] [COUNT n] [TYPE t]`, where `cursor` 0 starts a
    /// scan of this shard. Replies `[next cursor, [keys]]`, the next cursor 0 when this shard is done.
    /// The router turns these into the client's cursors.
    fn scan(&mut self, args: &[Bytes], now: u64) -> Frame {
        let Some(cursor) = std::str::from_utf8(&args[1])
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
        let (keys, next) = self.ks.scan(cursor, count, now, |k, v| {
            pattern.is_none_or(|p| p == b"*" || glob_match(p, k))
                && type_filter.is_none_or(|t| eq(t, v.type_name()))
        });
        Frame::Array(vec![
            Frame::bulk(next.to_string()),
            Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
        ])
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
        let (Some(entry), Some(access)) = (
            self.ks.peek(&args[2], now),
            self.ks.access_of(&args[2], now),
        ) else {
            return Frame::Null;
        };
        if eq(sub, "encoding") {
            Frame::bulk(entry.value.encoding())
        } else if eq(sub, "refcount") {
            Frame::Integer(1)
        } else if eq(sub, "idletime") {
            Frame::Integer((access.idle_ms(now) / 1000) as i64)
        } else {
            // As Redis: the counter as decayed by the time since the last access.
            let freq = crate::evict::lfu_decayed(access.freq(), access.idle_ms(now));
            Frame::Integer(i64::from(freq))
        }
    }
}
