//! Commands on keys of any type (DEL, EXISTS, TYPE, the EXPIRE family, RENAME, KEYS, SCAN,
//! FLUSHALL, OBJECT, MEMORY, RANDOMKEY).

use bytes::Bytes;
use moon_proto::Frame;

use super::{eq, parse_i64, Store};
use crate::command::CommandSpec;
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

impl Store {
    pub(super) fn keys_command(&mut self, spec: &CommandSpec, args: &[Bytes], now: u64) -> Frame {
        match spec.name {
            "del" | "unlink" => {
                // UNLINK frees a big value off the executor; DEL too with lazyfree-lazy-user-del.
                let cause = if spec.name == "unlink" {
                    Cause::Async
                } else {
                    Cause::UserDel
                };
                let mut n = 0;
                for k in &args[1..] {
                    // An expired key counts as absent, and is not logged.
                    if self.ks.contains(k, now) {
                        if let Some(gone) = self.ks.remove(k) {
                            lazyfree::dispose(gone.value, cause);
                        }
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
                let cause = match args.get(1) {
                    None => Cause::UserFlush,
                    Some(a) if args.len() == 2 && eq(a, "async") => Cause::Async,
                    Some(a) if args.len() == 2 && eq(a, "sync") => Cause::Sync,
                    Some(_) => return err(reply::SYNTAX),
                };
                if spec.name == "flushall" {
                    for db in 0..self.databases() {
                        self.in_db(db, |s| s.ks.clear(cause));
                    }
                    self.log_cmd(&[b"FLUSHALL"]);
                } else {
                    self.ks.clear(cause);
                    self.log_cmd(&[b"FLUSHDB"]);
                }
                Frame::OK
            }
            "move" => self.move_key(args, now),
            "swapdb" => {
                let limit = self.db_limit(now);
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
                self.swap_dbs(a, b);
                self.log_args(args);
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
            "copy" => self.copy(args, now),
            _ => reply::unknown_command(args),
        }
    }

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
            s.touch(&[b"DEL", dst]);
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
            s.touch(&[b"DEL", key]);
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
}
