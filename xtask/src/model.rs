//! The model-based workload of the crash matrix: random commands over keys with short TTLs,
//! checked against a model built from the replies.
//!
//! Each model client owns a few keys nobody else touches, so its model is sequential. It sends
//! every write command Moon has — conditional ones (SETNX, SET NX/XX/GET, MSETNX, RENAMENX),
//! read-modify-writes (APPEND, SETRANGE, INCR family, INCRBYFLOAT, GETSET, GETDEL, GETEX),
//! deadlines (PEXPIREAT, PERSIST, SET PXAT/KEEPTTL), RENAME, DEL, MSET across shards and
//! MULTI/EXEC, and Lua scripts (EVAL of a transfer between two keys, usually on two shards, and
//! of a GETDEL into a hash field) — with deadlines a few hundred milliseconds ahead, so keys
//! expire between commands all the time.
//!
//! Odd clients work in database 1 (SELECT), so replay of writes logged under `MOON.DB` is
//! checked too. Besides its string keys a client owns a few hash keys (`hk:`: HSET, HSETNX, HDEL, HINCRBY)
//! and set keys (`sk:`: SADD, SREM, SPOP of everything, SMOVE, SINTERSTORE/SUNIONSTORE/
//! SDIFFSTORE, all across shards), list keys (`lk:`, BLPOP and BLMOVE with a short timeout
//! among their commands) and sorted-set keys (`zk:`: ZADD with its
//! flags, ZINCRBY, ZREM, ZPOPMIN/ZPOPMAX, ZMPOP, ZREMRANGEBYSCORE, ZUNIONSTORE/ZINTERSTORE/
//! ZDIFFSTORE and ZRANGESTORE, mostly across shards), with deadlines, PERSIST, RENAME and DEL on
//! them too; a hash, set, list or sorted set is modelled as its canonical text.
//!
//! The model ([`apply`]) is a tiny interpreter of those commands over `key → (value, deadline)`.
//! The server runs a command at some instant between sending and the reply; the model runs it
//! at both ends. If both give the same state, that is the new state; if they differ (a deadline
//! fell inside the window), the one whose predicted reply matches the real reply wins; if that
//! does not decide, the keys involved become unknown until a command overwrites them or a
//! restart shows them. The command in flight when the server died makes its keys unknown too.
//!
//! After a restart every known key must read back exactly as the model says — value and
//! deadline (`PEXPIRETIME`) — unless its deadline is too close to the moment of reading to
//! tell. A difference is an acknowledged write lost or replayed differently from how it ran.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::rng::Rng;

/// String keys per model client; it also owns [`TYPED_KEYS`] hash keys and as many set keys.
const KEYS: usize = 24;
const TYPED_KEYS: usize = 6;

/// What the model knows of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Value (`None`: absent) and absolute deadline in Unix ms (0: none).
    Known(Option<String>, u64),
    Unknown,
}

/// A reply, as far as the model cares.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Ok,
    Nil,
    Int(i64),
    Bulk(String),
    Err,
    /// Refused before it ran, or run and then undone (MISCONF, OOM, BUSY, READONLY, ...): it
    /// left no effect, but a predicted error must never be matched against it (a script that
    /// fails half-way keeps its first writes; a refused one has none).
    Refused,
    Array(Vec<Reply>),
}

/// An error the server raises instead of running a command (or after undoing one): never the
/// command's own error.
fn is_refusal(code: &str, text: &str) -> bool {
    matches!(
        code,
        "MISCONF"
            | "OOM"
            | "BUSY"
            | "READONLY"
            | "LOADING"
            | "NOSCRIPT"
            | "EXECABORT"
            | "MASTERDOWN"
    ) || text.contains("MISCONF")
}

fn reply_of(v: &Value) -> Reply {
    match v {
        Value::Okay => Reply::Ok,
        Value::SimpleString(s) if s == "OK" => Reply::Ok,
        Value::SimpleString(s) => Reply::Bulk(s.clone()),
        Value::Nil => Reply::Nil,
        Value::Int(i) => Reply::Int(*i),
        Value::BulkString(b) => Reply::Bulk(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) => Reply::Array(items.iter().map(reply_of).collect()),
        Value::Double(d) => Reply::Bulk(format_float(*d)),
        Value::ServerError(e) if is_refusal(e.code(), e.details().unwrap_or("")) => Reply::Refused,
        _ => Reply::Err,
    }
}

/// A DUMP payload carried in a model command as text: `hex:` and its bytes in hex.
fn payload_arg(value: &str) -> String {
    let p = moon_rdb::encode_dump(&moon_rdb::Object::String(bytes::Bytes::copy_from_slice(
        value.as_bytes(),
    )));
    let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
    format!("hex:{hex}")
}

/// The string value in a [`payload_arg`], if it is one.
fn payload_value(arg: &str) -> Option<String> {
    let hex = arg.strip_prefix("hex:")?;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<_>>()?;
    match moon_rdb::decode_dump(&bytes).ok()? {
        moon_rdb::Object::String(s) => String::from_utf8(s.to_vec()).ok(),
        _ => None,
    }
}

/// A model command's arguments as sent: `hex:` ones as their bytes.
fn wire(args: &[String]) -> Vec<Vec<u8>> {
    args.iter()
        .map(|a| match a.strip_prefix("hex:") {
            Some(hex) => (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect(),
            None => a.as_bytes().to_vec(),
        })
        .collect()
}

fn contains_refusal(r: &Reply) -> bool {
    match r {
        Reply::Refused => true,
        Reply::Array(items) => items.iter().any(contains_refusal),
        _ => false,
    }
}

fn format_float(f: f64) -> String {
    format!("{f}")
}

type State = HashMap<String, (Option<String>, u64)>;

/// An integer as Redis reads one: no sign but a leading `-`, no leading zeros, no spaces.
fn strict_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'))
        && s != "-0";
    canonical.then(|| s.parse().ok()).flatten()
}

/// The live value of `key` at `now` (expired = absent). A hash (text `f=v@d;...`; string
/// values never hold `=` or `@`) keeps only its live fields, and is absent without any.
fn live(st: &State, key: &str, now: u64) -> Option<(String, u64)> {
    match st.get(key) {
        Some((Some(v), d)) if *d == 0 || *d > now => {
            if v.contains('=') && v.contains('@') {
                hash_text(&live_fields(hash_of(v), now)).map(|t| (t, *d))
            } else {
                Some((v.clone(), *d))
            }
        }
        _ => None,
    }
}

fn put(st: &mut State, key: &str, v: Option<String>, d: u64) {
    st.insert(key.to_string(), (v, if d == 0 { 0 } else { d }));
}

/// Runs `cmd` on `st` at `now` as Redis would; returns the reply it would give.
/// The scripts model clients send (EVAL, often with keys on two shards): the model runs their
/// steps as the script does, stopping at the first error (whose earlier effects stay).
const TRANSFER_SCRIPT: &str = "redis.call('incrby', KEYS[1], ARGV[1]) \
    redis.call('decrby', KEYS[2], ARGV[1]) return redis.call('get', KEYS[1])";
const MOVE_TO_HASH_SCRIPT: &str = "local v = redis.call('getdel', KEYS[1]) \
    if v then redis.call('hset', KEYS[2], 'f0', v) end return v";

fn apply_script(st: &mut State, cmd: &[String], now: u64) -> Reply {
    let s = |x: &str| x.to_string();
    let (k1, k2) = (cmd[3].clone(), cmd[4].clone());
    if cmd[1] == TRANSFER_SCRIPT {
        let n = cmd[5].clone();
        for step in [
            vec![s("INCRBY"), k1.clone(), n.clone()],
            vec![s("DECRBY"), k2, n],
        ] {
            if apply(st, &step, now) == Reply::Err {
                return Reply::Err;
            }
        }
        // The reply is a read the model has no command for: the key's live value.
        return live(st, &k1, now).map_or(Reply::Nil, |(v, _)| Reply::Bulk(v));
    }
    if cmd[1] == MOVE_TO_HASH_SCRIPT {
        let v = apply(st, &[s("GETDEL"), k1], now);
        if let Reply::Bulk(value) = &v {
            if apply(st, &[s("HSET"), k2, s("f0"), value.clone()], now) == Reply::Err {
                return Reply::Err;
            }
        }
        return v;
    }
    Reply::Err
}

fn apply(st: &mut State, cmd: &[String], now: u64) -> Reply {
    let a = |i: usize| cmd[i].as_str();
    let int = strict_int;
    match cmd[0].as_str() {
        "EVAL" => apply_script(st, cmd, now),
        "SET" => {
            let (k, v) = (a(1), a(2));
            let opts: Vec<&str> = cmd[3..].iter().map(String::as_str).collect();
            let old = live(st, k, now);
            let (nx, xx, get) = (
                opts.contains(&"NX"),
                opts.contains(&"XX"),
                opts.contains(&"GET"),
            );
            let old_reply = || old.clone().map_or(Reply::Nil, |(v, _)| Reply::Bulk(v));
            if (nx && old.is_some()) || (xx && old.is_none()) {
                return if get { old_reply() } else { Reply::Nil };
            }
            let d = match opts.iter().position(|o| *o == "PXAT" || *o == "PX") {
                Some(i) if opts[i] == "PX" => now + opts[i + 1].parse::<u64>().unwrap_or(0),
                Some(i) => opts[i + 1].parse().unwrap_or(0),
                None if opts.contains(&"KEEPTTL") => old.as_ref().map_or(0, |o| o.1),
                None => 0,
            };
            let r = if get { old_reply() } else { Reply::Ok };
            put(st, k, Some(v.to_string()), d);
            r
        }
        "SETEX" | "PSETEX" => {
            let unit = if cmd[0] == "SETEX" { 1000 } else { 1 };
            let d = now + a(2).parse::<u64>().unwrap_or(0) * unit;
            put(st, a(1), Some(a(3).to_string()), d);
            Reply::Ok
        }
        "SETNX" => match live(st, a(1), now) {
            Some(_) => Reply::Int(0),
            None => {
                put(st, a(1), Some(a(2).to_string()), 0);
                Reply::Int(1)
            }
        },
        "RESTORE" => {
            // RESTORE key <abs ms|0> hex:<payload> [REPLACE] ABSTTL, of a string value.
            let exists = live(st, a(1), now).is_some();
            if exists && !cmd.iter().any(|c| c == "REPLACE") {
                return Reply::Err;
            }
            let Some(v) = payload_value(a(3)) else {
                return Reply::Err;
            };
            let d: u64 = a(2).parse().unwrap_or(0);
            if d != 0 && d <= now {
                put(st, a(1), None, 0);
            } else {
                put(st, a(1), Some(v), d);
            }
            Reply::Ok
        }
        "GETSET" => {
            let old = live(st, a(1), now);
            put(st, a(1), Some(a(2).to_string()), 0);
            old.map_or(Reply::Nil, |(v, _)| Reply::Bulk(v))
        }
        "GETDEL" => {
            let old = live(st, a(1), now);
            put(st, a(1), None, 0);
            old.map_or(Reply::Nil, |(v, _)| Reply::Bulk(v))
        }
        "GETEX" => match live(st, a(1), now) {
            None => {
                put(st, a(1), None, 0);
                Reply::Nil
            }
            Some((v, d)) => {
                let d = match a(2) {
                    "PERSIST" => 0,
                    _ => a(3).parse().unwrap_or(d),
                };
                if d != 0 && d <= now {
                    put(st, a(1), None, 0);
                } else {
                    put(st, a(1), Some(v.clone()), d);
                }
                Reply::Bulk(v)
            }
        },
        "MSET" => {
            for p in cmd[1..].chunks(2) {
                put(st, &p[0], Some(p[1].clone()), 0);
            }
            Reply::Ok
        }
        "MSETNX" => {
            if cmd[1..].chunks(2).any(|p| live(st, &p[0], now).is_some()) {
                return Reply::Int(0);
            }
            for p in cmd[1..].chunks(2) {
                put(st, &p[0], Some(p[1].clone()), 0);
            }
            Reply::Int(1)
        }
        "INCRBY" | "DECRBY" | "INCR" | "DECR" => {
            let delta = match cmd[0].as_str() {
                "INCR" => 1,
                "DECR" => -1,
                "INCRBY" => int(a(2)).unwrap_or(0),
                _ => -int(a(2)).unwrap_or(0),
            };
            let (cur, d) = match live(st, a(1), now) {
                Some((v, d)) => match int(&v) {
                    Some(n) => (n, d),
                    None => return Reply::Err,
                },
                None => (0, 0),
            };
            let Some(n) = cur.checked_add(delta) else {
                return Reply::Err;
            };
            put(st, a(1), Some(n.to_string()), d);
            Reply::Int(n)
        }
        "INCRBYFLOAT" => {
            let (cur, d) = match live(st, a(1), now) {
                Some((v, d)) => match v.parse::<f64>() {
                    Ok(n) if !v.is_empty() && v.trim() == v => (n, d),
                    _ => return Reply::Err,
                },
                None => (0.0, 0),
            };
            let n = cur + a(2).parse::<f64>().unwrap_or(0.0);
            let s = format_float(n);
            put(st, a(1), Some(s.clone()), d);
            Reply::Bulk(s)
        }
        "APPEND" => {
            let (mut v, d) = live(st, a(1), now).unwrap_or_default();
            v.push_str(a(2));
            let n = v.len() as i64;
            put(st, a(1), Some(v), d);
            Reply::Int(n)
        }
        "SETRANGE" => {
            let off: usize = a(2).parse().unwrap_or(0);
            let (v, d) = live(st, a(1), now).unwrap_or_default();
            let mut bytes = v.into_bytes();
            let val = a(3).as_bytes();
            if bytes.len() < off + val.len() {
                bytes.resize(off + val.len(), 0);
            }
            bytes[off..off + val.len()].copy_from_slice(val);
            let n = bytes.len() as i64;
            put(
                st,
                a(1),
                Some(String::from_utf8_lossy(&bytes).into_owned()),
                d,
            );
            Reply::Int(n)
        }
        "DEL" | "UNLINK" => {
            let mut n = 0;
            for k in &cmd[1..] {
                if live(st, k, now).is_some() {
                    n += 1;
                }
                put(st, k, None, 0);
            }
            Reply::Int(n)
        }
        "PEXPIREAT" | "PEXPIRE" => match live(st, a(1), now) {
            None => {
                put(st, a(1), None, 0);
                Reply::Int(0)
            }
            Some((v, _)) => {
                let n: u64 = a(2).parse().unwrap_or(0);
                let d = if cmd[0] == "PEXPIRE" { now + n } else { n };
                if d <= now {
                    put(st, a(1), None, 0);
                } else {
                    put(st, a(1), Some(v), d);
                }
                Reply::Int(1)
            }
        },
        "PERSIST" => match live(st, a(1), now) {
            Some((v, d)) if d != 0 => {
                put(st, a(1), Some(v), 0);
                Reply::Int(1)
            }
            Some(_) => Reply::Int(0),
            None => {
                put(st, a(1), None, 0);
                Reply::Int(0)
            }
        },
        "COPY" => {
            if a(1) == a(2) {
                return Reply::Err;
            }
            let Some((v, d)) = live(st, a(1), now) else {
                put(st, a(1), None, 0);
                return Reply::Int(0);
            };
            let replace = cmd.len() > 3;
            if !replace && live(st, a(2), now).is_some() {
                return Reply::Int(0);
            }
            put(st, a(2), Some(v), d);
            Reply::Int(1)
        }
        "RENAME" | "RENAMENX" => {
            let nx = cmd[0] == "RENAMENX";
            let Some((v, d)) = live(st, a(1), now) else {
                put(st, a(1), None, 0);
                return Reply::Err;
            };
            if a(1) == a(2) {
                return if nx { Reply::Int(0) } else { Reply::Ok };
            }
            if nx && live(st, a(2), now).is_some() {
                return Reply::Int(0);
            }
            put(st, a(1), None, 0);
            put(st, a(2), Some(v), d);
            if nx {
                Reply::Int(1)
            } else {
                Reply::Ok
            }
        }
        "HSET" | "HSETNX" | "HDEL" | "HINCRBY" | "HPEXPIREAT" | "HPERSIST" => {
            let (mut h, d) = live(st, a(1), now)
                .map_or((Map::new(), 0), |(v, d)| (live_fields(hash_of(&v), now), d));
            if h.is_empty() && matches!(cmd[0].as_str(), "HPEXPIREAT" | "HPERSIST") {
                put(st, a(1), None, 0);
                let first_field = if cmd[0] == "HPEXPIREAT" { 5 } else { 4 };
                return Reply::Array(
                    cmd[first_field.min(cmd.len())..]
                        .iter()
                        .map(|_| Reply::Int(-2))
                        .collect(),
                );
            }
            let reply = match cmd[0].as_str() {
                "HSET" => Reply::Int(
                    cmd[2..]
                        .chunks(2)
                        .filter(|p| h.insert(p[0].clone(), (p[1].clone(), 0)).is_none())
                        .count() as i64,
                ),
                "HSETNX" if h.contains_key(a(2)) => Reply::Int(0),
                "HSETNX" => {
                    h.insert(a(2).to_string(), (a(3).to_string(), 0));
                    Reply::Int(1)
                }
                "HDEL" => {
                    Reply::Int(cmd[2..].iter().filter(|f| h.remove(*f).is_some()).count() as i64)
                }
                "HPEXPIREAT" => {
                    // HPEXPIREAT key at FIELDS n field...
                    let at: u64 = a(2).parse().unwrap_or(0);
                    Reply::Array(
                        cmd[5..]
                            .iter()
                            .map(|f| match h.get_mut(f) {
                                None => Reply::Int(-2),
                                Some(_) if at <= now => {
                                    h.remove(f);
                                    Reply::Int(2)
                                }
                                Some(slot) => {
                                    slot.1 = at;
                                    Reply::Int(1)
                                }
                            })
                            .collect(),
                    )
                }
                "HPERSIST" => Reply::Array(
                    cmd[4..]
                        .iter()
                        .map(|f| match h.get_mut(f) {
                            None => Reply::Int(-2),
                            Some(slot) if slot.1 == 0 => Reply::Int(-1),
                            Some(slot) => {
                                slot.1 = 0;
                                Reply::Int(1)
                            }
                        })
                        .collect(),
                ),
                _ => {
                    let (cur, fd) = match h.get(a(2)) {
                        None => (0, 0),
                        Some((v, fd)) => match int(v) {
                            Some(n) => (n, *fd),
                            None => return Reply::Err,
                        },
                    };
                    let Some(n) = cur.checked_add(int(a(3)).unwrap_or(0)) else {
                        return Reply::Err;
                    };
                    // HINCRBY keeps the field's deadline.
                    h.insert(a(2).to_string(), (n.to_string(), fd));
                    Reply::Int(n)
                }
            };
            match hash_text(&h) {
                Some(t) => put(st, a(1), Some(t), d),
                None => put(st, a(1), None, 0),
            }
            reply
        }
        "SADD" | "SREM" | "SPOP" => {
            let (mut set, d) =
                live(st, a(1), now).map_or((Members::new(), 0), |(v, d)| (set_of(&v), d));
            let reply = match cmd[0].as_str() {
                "SADD" => {
                    Reply::Int(cmd[2..].iter().filter(|m| set.insert((*m).clone())).count() as i64)
                }
                "SREM" => Reply::Int(cmd[2..].iter().filter(|m| set.remove(*m)).count() as i64),
                _ => Reply::Array(
                    std::mem::take(&mut set)
                        .into_iter()
                        .map(Reply::Bulk)
                        .collect(),
                ),
            };
            match set_text(&set) {
                Some(t) => put(st, a(1), Some(t), d),
                None => put(st, a(1), None, 0),
            }
            reply
        }
        "SMOVE" => {
            let Some((src, d_src)) = live(st, a(1), now) else {
                put(st, a(1), None, 0);
                return Reply::Int(0);
            };
            let mut from = set_of(&src);
            if !from.contains(a(3)) {
                return Reply::Int(0);
            }
            if a(1) == a(2) {
                return Reply::Int(1);
            }
            from.remove(a(3));
            let (to, d_dst) =
                live(st, a(2), now).map_or((Members::new(), 0), |(v, d)| (set_of(&v), d));
            let mut to = to;
            to.insert(a(3).to_string());
            match set_text(&from) {
                Some(t) => put(st, a(1), Some(t), d_src),
                None => put(st, a(1), None, 0),
            }
            put(st, a(2), set_text(&to), d_dst);
            Reply::Int(1)
        }
        "LPUSH" | "RPUSH" | "LPUSHX" | "RPUSHX" | "LPOP" | "RPOP" | "LREM" | "LTRIM" | "LSET"
        | "LINSERT" => {
            let (mut l, d) = live(st, a(1), now).map_or((Vec::new(), 0), |(v, d)| (list_of(&v), d));
            let existed = !l.is_empty();
            let reply = match cmd[0].as_str() {
                "LPUSHX" | "RPUSHX" if !existed => Reply::Int(0),
                "LPUSH" | "LPUSHX" => {
                    for e in &cmd[2..] {
                        l.insert(0, e.clone());
                    }
                    Reply::Int(l.len() as i64)
                }
                "RPUSH" | "RPUSHX" => {
                    l.extend(cmd[2..].iter().cloned());
                    Reply::Int(l.len() as i64)
                }
                // LSET key 0 element.
                "LSET" if !existed => Reply::Err,
                "LSET" => {
                    l[0] = a(3).to_string();
                    Reply::Ok
                }
                // LINSERT key BEFORE pivot element.
                "LINSERT" if !existed => Reply::Int(0),
                "LINSERT" => match l.iter().position(|e| e == a(3)) {
                    Some(at) => {
                        l.insert(at, a(4).to_string());
                        Reply::Int(l.len() as i64)
                    }
                    None => Reply::Int(-1),
                },
                "LPOP" | "RPOP" => {
                    let count = cmd.get(2).and_then(|c| c.parse::<usize>().ok());
                    let mut popped = Vec::new();
                    while popped.len() < count.unwrap_or(1) && !l.is_empty() {
                        popped.push(if cmd[0] == "LPOP" {
                            l.remove(0)
                        } else {
                            l.pop().unwrap_or_default()
                        });
                    }
                    match count {
                        _ if !existed => Reply::Nil,
                        Some(_) => Reply::Array(popped.into_iter().map(Reply::Bulk).collect()),
                        None => popped.into_iter().next().map_or(Reply::Nil, Reply::Bulk),
                    }
                }
                "LREM" => {
                    // LREM key 0 element: every occurrence.
                    let before = l.len();
                    l.retain(|e| e != a(3));
                    Reply::Int((before - l.len()) as i64)
                }
                _ => {
                    // LTRIM key 1 -1: all but the first.
                    if !l.is_empty() {
                        l.remove(0);
                    }
                    Reply::Ok
                }
            };
            let d = if l.is_empty() { 0 } else { d };
            put(st, a(1), list_text(&l), d);
            reply
        }
        "RPOPLPUSH" => {
            let as_lmove = ["LMOVE", a(1), a(2), "RIGHT", "LEFT"].map(str::to_string);
            apply(st, &as_lmove, now)
        }
        // BLPOP key key 0.01: the first non-empty list's head, or nil once the timeout passed
        // (nobody else pushes to this client's keys).
        "BLPOP" => {
            let Some(key) = cmd[1..3]
                .iter()
                .find(|k| live(st, k, now).is_some())
                .cloned()
            else {
                return Reply::Nil;
            };
            match apply(st, &["LPOP".to_string(), key.clone()], now) {
                Reply::Bulk(e) => Reply::Array(vec![Reply::Bulk(key), Reply::Bulk(e)]),
                other => other,
            }
        }
        // BLMOVE src dst from to 0.01: LMOVE, or nil once the timeout passed.
        "BLMOVE" => {
            let as_lmove: Vec<String> = std::iter::once("LMOVE".to_string())
                .chain(cmd[1..5].iter().cloned())
                .collect();
            apply(st, &as_lmove, now)
        }
        // LMPOP 2 key key LEFT|RIGHT COUNT n.
        "LMPOP" => {
            let Some(key) = cmd[2..4]
                .iter()
                .find(|k| live(st, k, now).is_some())
                .cloned()
            else {
                return Reply::Nil;
            };
            let pop = if a(4) == "LEFT" { "LPOP" } else { "RPOP" };
            let popped = apply(st, &[pop.to_string(), key.clone(), a(6).to_string()], now);
            Reply::Array(vec![Reply::Bulk(key), popped])
        }
        "LMOVE" => {
            let Some((src, d_src)) = live(st, a(1), now) else {
                put(st, a(1), None, 0);
                return Reply::Nil;
            };
            let mut from = list_of(&src);
            let element = if a(3) == "LEFT" {
                from.remove(0)
            } else {
                from.pop().unwrap_or_default()
            };
            let (mut to, d_dst) = if a(1) == a(2) {
                (from.clone(), d_src)
            } else {
                live(st, a(2), now).map_or((Vec::new(), 0), |(v, d)| (list_of(&v), d))
            };
            if a(4) == "LEFT" {
                to.insert(0, element.clone());
            } else {
                to.push(element.clone());
            }
            if a(1) != a(2) {
                let d = if from.is_empty() { 0 } else { d_src };
                put(st, a(1), list_text(&from), d);
            }
            put(st, a(2), list_text(&to), d_dst);
            Reply::Bulk(element)
        }
        "ZADD" | "ZINCRBY" | "ZREM" | "ZPOPMIN" | "ZPOPMAX" | "ZREMRANGEBYSCORE" => {
            let (mut z, d) =
                live(st, a(1), now).map_or((Scores::new(), 0), |(v, d)| (zset_of(&v), d));
            let reply = match cmd[0].as_str() {
                "ZADD" => {
                    let flag = if cmd[2].parse::<f64>().is_ok() {
                        ""
                    } else {
                        a(2)
                    };
                    let pairs = &cmd[if flag.is_empty() { 2 } else { 3 }..];
                    let (mut added, mut changed) = (0, 0);
                    for p in pairs.chunks(2) {
                        let (score, m) = (p[0].parse::<f64>().unwrap_or(0.0), p[1].clone());
                        match z.get(&m).copied() {
                            None if flag == "XX" => {}
                            None => {
                                z.insert(m, score);
                                added += 1;
                            }
                            Some(_) if flag == "NX" => {}
                            Some(old) => {
                                let skip = (flag == "GT" && score <= old)
                                    || (flag == "LT" && score >= old);
                                if !skip && old != score {
                                    z.insert(m, score);
                                    changed += 1;
                                }
                            }
                        }
                    }
                    Reply::Int(if flag == "CH" { added + changed } else { added })
                }
                "ZINCRBY" => {
                    let new =
                        z.get(a(3)).copied().unwrap_or(0.0) + a(2).parse::<f64>().unwrap_or(0.0);
                    z.insert(a(3).to_string(), new);
                    Reply::Bulk(score_text(new))
                }
                "ZREM" => {
                    let n = cmd[2..].iter().filter(|m| z.remove(*m).is_some()).count();
                    Reply::Int(n as i64)
                }
                "ZREMRANGEBYSCORE" => {
                    let max = a(3).parse::<f64>().unwrap_or(0.0);
                    let before = z.len();
                    z.retain(|_, s| *s > max);
                    Reply::Int((before - z.len()) as i64)
                }
                _ => {
                    // ZPOPMIN/ZPOPMAX key count.
                    let n = a(2).parse::<usize>().unwrap_or(1);
                    let mut order = zset_order(&z);
                    if cmd[0] == "ZPOPMAX" {
                        order.reverse();
                    }
                    let mut out = Vec::new();
                    for (m, s) in order.into_iter().take(n) {
                        z.remove(&m);
                        out.push(Reply::Bulk(m));
                        out.push(Reply::Bulk(score_text(s)));
                    }
                    Reply::Array(out)
                }
            };
            let d = if z.is_empty() { 0 } else { d };
            put(st, a(1), zset_text(&z), d);
            reply
        }
        // ZMPOP 2 key key MIN|MAX COUNT n.
        "ZMPOP" => {
            let Some(key) = cmd[2..4]
                .iter()
                .find(|k| live(st, k, now).is_some())
                .cloned()
            else {
                return Reply::Nil;
            };
            let pop = if a(4) == "MIN" { "ZPOPMIN" } else { "ZPOPMAX" };
            let Reply::Array(flat) =
                apply(st, &[pop.to_string(), key.clone(), a(6).to_string()], now)
            else {
                return Reply::Err;
            };
            let pairs = flat.chunks(2).map(|p| Reply::Array(p.to_vec())).collect();
            Reply::Array(vec![Reply::Bulk(key), Reply::Array(pairs)])
        }
        // ZRANGESTORE dst src 0 1: the two lowest.
        "ZRANGESTORE" => {
            let src = live(st, a(2), now).map_or(Scores::new(), |(v, _)| zset_of(&v));
            let picked: Scores = zset_order(&src).into_iter().take(2).collect();
            let n = picked.len() as i64;
            put(st, a(1), zset_text(&picked), 0);
            Reply::Int(n)
        }
        // Z*STORE dst 2 a b (weights 1, SUM).
        "ZUNIONSTORE" | "ZINTERSTORE" | "ZDIFFSTORE" => {
            let inputs: Vec<Option<Scores>> = cmd[3..5]
                .iter()
                .map(|k| live(st, k, now).map(|(v, _)| zset_of(&v)))
                .collect();
            let (x, y) = (inputs[0].clone(), inputs[1].clone());
            let result: Scores = match cmd[0].as_str() {
                "ZUNIONSTORE" => {
                    let mut acc = x.unwrap_or_default();
                    for (m, s) in y.unwrap_or_default() {
                        *acc.entry(m).or_insert(0.0) += s;
                    }
                    acc
                }
                "ZINTERSTORE" => match (x, y) {
                    (Some(x), Some(y)) => x
                        .into_iter()
                        .filter_map(|(m, s)| y.get(&m).map(|t| (m, s + t)))
                        .collect(),
                    _ => Scores::new(),
                },
                _ => {
                    let mut acc = x.unwrap_or_default();
                    for m in y.unwrap_or_default().keys() {
                        acc.remove(m);
                    }
                    acc
                }
            };
            let n = result.len() as i64;
            put(st, a(1), zset_text(&result), 0);
            Reply::Int(n)
        }
        "SINTERSTORE" | "SUNIONSTORE" | "SDIFFSTORE" => {
            let sets: Vec<Option<Members>> = cmd[2..]
                .iter()
                .map(|k| live(st, k, now).map(|(v, _)| set_of(&v)))
                .collect();
            let mut iter = sets.into_iter();
            let first = iter.next().flatten();
            let result: Members = match cmd[0].as_str() {
                "SINTERSTORE" => {
                    let mut acc = first;
                    for s in iter {
                        acc = match (acc, s) {
                            (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
                            _ => None,
                        };
                    }
                    acc.unwrap_or_default()
                }
                "SUNIONSTORE" => {
                    let mut acc = first.unwrap_or_default();
                    for s in iter.flatten() {
                        acc.extend(s);
                    }
                    acc
                }
                _ => {
                    let mut acc = first.unwrap_or_default();
                    for s in iter.flatten() {
                        acc.retain(|m| !s.contains(m));
                    }
                    acc
                }
            };
            let n = result.len() as i64;
            put(st, a(1), set_text(&result), 0);
            Reply::Int(n)
        }
        _ => Reply::Err,
    }
}

type Map = std::collections::BTreeMap<String, (String, u64)>;
type Members = std::collections::BTreeSet<String>;

// A hash or set is modelled as its canonical text (fields or members sorted), so the model's
// state stays `key -> (text, deadline)` for every type.

/// A hash's canonical text: `field=value@deadline` (0: none), sorted by field.
fn hash_of(text: &str) -> Map {
    text.split(';')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(f, rest)| {
            let (v, d) = rest.rsplit_once('@').unwrap_or((rest, "0"));
            (f.to_string(), (v.to_string(), d.parse().unwrap_or(0)))
        })
        .collect()
}

fn hash_text(h: &Map) -> Option<String> {
    (!h.is_empty()).then(|| {
        h.iter()
            .map(|(f, (v, d))| format!("{f}={v}@{d}"))
            .collect::<Vec<_>>()
            .join(";")
    })
}

/// The fields still live at `now`.
fn live_fields(mut h: Map, now: u64) -> Map {
    h.retain(|_, (_, d)| *d == 0 || *d > now);
    h
}

/// A list's text: its elements in order, `;` between them (elements never hold one).
fn list_of(text: &str) -> Vec<String> {
    text.split(';')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

fn list_text(l: &[String]) -> Option<String> {
    (!l.is_empty()).then(|| l.join(";"))
}

/// A sorted set's text: `member=score` sorted by member, `;` between them.
type Scores = std::collections::BTreeMap<String, f64>;

fn zset_of(text: &str) -> Scores {
    text.split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(m, s)| (m.to_string(), s.parse().unwrap_or(0.0)))
        .collect()
}

fn zset_text(z: &Scores) -> Option<String> {
    (!z.is_empty()).then(|| {
        z.iter()
            .map(|(m, s)| format!("{m}={}", score_text(*s)))
            .collect::<Vec<_>>()
            .join(";")
    })
}

/// Members in the set's order: by score, then member.
fn zset_order(z: &Scores) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = z.iter().map(|(m, s)| (m.clone(), *s)).collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// A score as the server prints it (the model's scores are integers and halves).
fn score_text(s: f64) -> String {
    if s == 0.0 {
        "0".to_string()
    } else {
        format!("{s}")
    }
}

fn set_of(text: &str) -> Members {
    text.split(';')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

fn set_text(s: &Members) -> Option<String> {
    (!s.is_empty()).then(|| s.iter().cloned().collect::<Vec<_>>().join(";"))
}

/// Replies whose order is not defined (SPOP's members) in sorted order.
fn normalize(cmds: &[Vec<String>], reply: Reply) -> Reply {
    match reply {
        Reply::Array(mut items) if cmds.len() == 1 && cmds[0][0] == "SPOP" => {
            items.sort_by_key(|r| format!("{r:?}"));
            Reply::Array(items)
        }
        other => other,
    }
}

/// The keys a command touches (all arguments that name one of this client's keys).
fn keys_of<'a>(cmds: &'a [Vec<String>], mine: &'a [String]) -> impl Iterator<Item = &'a String> {
    cmds.iter()
        .flat_map(|c| c[1..].iter())
        .filter(|a| mine.contains(a))
}

/// One model client: its keys and what it knows of them. Lives across kill cycles.
pub struct ModelClient {
    /// The database this client works in: odd clients use database 1, so every kill cycle
    /// also replays writes logged under `MOON.DB`.
    db: u32,
    keys: Vec<String>,
    state: HashMap<String, Slot>,
    rng: Rng,
    counter: u64,
    /// Write commands acknowledged (whatever their outcome).
    pub acknowledged: u64,
    /// Replies that matched neither end of their window (a semantic difference, not a loss).
    pub mismatches: Vec<String>,
    /// When each key was last changed by an acknowledged command.
    last_ack: HashMap<String, std::time::Instant>,
    /// The last few acknowledged commands on each key, with their replies (for diagnostics).
    history: HashMap<String, std::collections::VecDeque<String>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ModelClient {
    pub fn new(id: usize, seed: u64) -> ModelClient {
        let mut keys: Vec<String> = (0..KEYS).map(|j| format!("mk:{id}:{j}")).collect();
        keys.extend((0..TYPED_KEYS).map(|j| format!("hk:{id}:{j}")));
        keys.extend((0..TYPED_KEYS).map(|j| format!("sk:{id}:{j}")));
        keys.extend((0..TYPED_KEYS).map(|j| format!("lk:{id}:{j}")));
        keys.extend((0..TYPED_KEYS).map(|j| format!("zk:{id}:{j}")));
        let state = keys
            .iter()
            .map(|k| (k.clone(), Slot::Known(None, 0)))
            .collect();
        ModelClient {
            db: (id % 2) as u32,
            keys,
            state,
            rng: Rng(seed | 1),
            counter: 0,
            acknowledged: 0,
            mismatches: Vec::new(),
            last_ack: HashMap::new(),
            history: HashMap::new(),
        }
    }

    fn key(&mut self) -> String {
        self.keys[self.rng.below(KEYS as u64) as usize].clone()
    }

    /// A hash key (`hk:`) or a set key (`sk:`) of this client.
    fn typed_key(&mut self, prefix: &str) -> String {
        let j = self.rng.below(TYPED_KEYS as u64) as usize;
        let base = match prefix {
            "hk" => KEYS,
            "sk" => KEYS + TYPED_KEYS,
            "lk" => KEYS + 2 * TYPED_KEYS,
            _ => KEYS + 3 * TYPED_KEYS,
        };
        self.keys[base + j].clone()
    }

    /// A hash or set command, or a generic one on a hash or set key.
    fn typed_command(&mut self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let field = |rng: &mut Rng| format!("f{}", rng.below(4));
        let member = |rng: &mut Rng| match rng.below(3) {
            0 => rng.below(5).to_string(),
            _ => format!("m{}", rng.below(5)),
        };
        let h = self.typed_key("hk");
        let sk = self.typed_key("sk");
        match self.rng.below(20) {
            16..=17 => self.list_command(),
            18..=19 => self.zset_command(),
            0..=2 => {
                let mut c = vec![s("HSET"), h];
                for _ in 0..1 + self.rng.below(2) {
                    let (f, v) = (field(&mut self.rng), self.value());
                    c.extend([f, v]);
                }
                c
            }
            3 => match self.rng.below(3) {
                0 => vec![s("HSETNX"), h, field(&mut self.rng), self.value()],
                1 => vec![
                    s("HPEXPIREAT"),
                    h,
                    self.deadline().to_string(),
                    s("FIELDS"),
                    s("1"),
                    field(&mut self.rng),
                ],
                _ => vec![s("HPERSIST"), h, s("FIELDS"), s("1"), field(&mut self.rng)],
            },
            4 => vec![s("HDEL"), h, field(&mut self.rng), field(&mut self.rng)],
            5 => vec![
                s("HINCRBY"),
                h,
                field(&mut self.rng),
                (self.rng.below(7) as i64 - 3).to_string(),
            ],
            6..=7 => {
                let mut c = vec![s("SADD"), sk];
                for _ in 0..1 + self.rng.below(3) {
                    c.push(member(&mut self.rng));
                }
                c
            }
            8 => vec![s("SREM"), sk, member(&mut self.rng), member(&mut self.rng)],
            // A count past the size pops everything: what it pops is then known.
            9 => vec![s("SPOP"), sk, s("100")],
            10 => vec![s("SMOVE"), sk, self.typed_key("sk"), member(&mut self.rng)],
            11 => {
                let op = ["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"][self.rng.below(3) as usize];
                vec![s(op), sk, self.typed_key("sk"), self.typed_key("sk")]
            }
            12 => {
                let k = if self.rng.below(2) == 0 { h } else { sk };
                vec![s("PEXPIREAT"), k, self.deadline().to_string()]
            }
            13 => {
                let k = if self.rng.below(2) == 0 { h } else { sk };
                vec![s("PERSIST"), k]
            }
            14 => {
                // Within one type: a RENAME across shards moves the value's rewrite form.
                if self.rng.below(2) == 0 {
                    vec![s("RENAME"), h, self.typed_key("hk")]
                } else {
                    vec![s("RENAME"), sk, self.typed_key("sk")]
                }
            }
            15 if self.rng.below(2) == 0 => {
                // COPY within a type, usually across shards: the value's rewrite form.
                if self.rng.below(2) == 0 {
                    vec![s("COPY"), h, self.typed_key("hk"), s("REPLACE")]
                } else {
                    vec![s("COPY"), sk, self.typed_key("sk")]
                }
            }
            _ => vec![s("DEL"), h, sk],
        }
    }

    /// A list command on a list key (`lk:`), LMOVE usually across shards.
    fn list_command(&mut self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let l = self.typed_key("lk");
        let end = |rng: &mut Rng| s(if rng.below(2) == 0 { "LEFT" } else { "RIGHT" });
        match self.rng.below(10) {
            0..=2 => {
                let push = if self.rng.below(2) == 0 {
                    "LPUSH"
                } else {
                    "RPUSH"
                };
                let mut c = vec![s(push), l];
                for _ in 0..1 + self.rng.below(3) {
                    c.push(self.value());
                }
                c
            }
            3 => vec![
                s(if self.rng.below(2) == 0 {
                    "LPOP"
                } else {
                    "RPOP"
                }),
                l,
            ],
            // A count past the length pops everything: what it pops is then known.
            4 => vec![s("RPOP"), l, s("100")],
            9 => match self.rng.below(7) {
                // Blocking pops with a short timeout, on keys only this client pushes to:
                // served at once when the list holds something, nil after the timeout
                // otherwise.
                5 => vec![s("BLPOP"), l, self.typed_key("lk"), s("0.01")],
                6 => vec![
                    s("BLMOVE"),
                    l,
                    self.typed_key("lk"),
                    end(&mut self.rng),
                    end(&mut self.rng),
                    s("0.01"),
                ],
                0 => vec![s("LPUSHX"), l, self.value()],
                1 => vec![s("LSET"), l, s("0"), self.value()],
                2 => {
                    // A pivot the list may hold: a recent value (values count up).
                    let pivot = format!("v{}", self.counter.saturating_sub(self.rng.below(4)));
                    vec![s("LINSERT"), l, s("BEFORE"), pivot, self.value()]
                }
                3 => vec![s("RPOPLPUSH"), l, self.typed_key("lk")],
                _ => vec![
                    s("LMPOP"),
                    s("2"),
                    l,
                    self.typed_key("lk"),
                    end(&mut self.rng),
                    s("COUNT"),
                    (1 + self.rng.below(3)).to_string(),
                ],
            },
            5 => {
                let (from, to) = (end(&mut self.rng), end(&mut self.rng));
                vec![s("LMOVE"), l, self.typed_key("lk"), from, to]
            }
            6 => vec![s("LREM"), l, s("0"), self.value()],
            7 => vec![s("LTRIM"), l, s("1"), s("-1")],
            _ => match self.rng.below(3) {
                0 => vec![s("PEXPIREAT"), l, self.deadline().to_string()],
                1 => vec![s("RENAME"), l, self.typed_key("lk")],
                _ => vec![s("DEL"), l],
            },
        }
    }

    /// A sorted-set command on a sorted-set key (`zk:`), the algebra and ZMPOP usually across
    /// shards. Scores are integers and halves, whose text every formatter agrees on.
    fn zset_command(&mut self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let z = self.typed_key("zk");
        let score = |rng: &mut Rng| format!("{}", (rng.below(21) as f64 - 10.0) / 2.0);
        let member = |rng: &mut Rng| format!("m{}", rng.below(6));
        match self.rng.below(12) {
            0..=2 => {
                let flag = ["", "", "NX", "XX", "GT", "LT", "CH"][self.rng.below(7) as usize];
                let mut c = vec![s("ZADD"), z];
                c.extend(Some(s(flag)).filter(|f| !f.is_empty()));
                for _ in 0..1 + self.rng.below(3) {
                    c.extend([score(&mut self.rng), member(&mut self.rng)]);
                }
                c
            }
            3 => vec![s("ZINCRBY"), z, score(&mut self.rng), member(&mut self.rng)],
            4 => vec![s("ZREM"), z, member(&mut self.rng), member(&mut self.rng)],
            // A count past the size pops everything: what it pops is then known.
            5 => vec![
                s(["ZPOPMIN", "ZPOPMAX"][self.rng.below(2) as usize]),
                z,
                s("100"),
            ],
            6 => vec![
                s("ZMPOP"),
                s("2"),
                z,
                self.typed_key("zk"),
                s(["MIN", "MAX"][self.rng.below(2) as usize]),
                s("COUNT"),
                (1 + self.rng.below(3)).to_string(),
            ],
            7 => {
                let op = ["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"][self.rng.below(3) as usize];
                vec![s(op), z, s("2"), self.typed_key("zk"), self.typed_key("zk")]
            }
            8 => vec![s("ZRANGESTORE"), z, self.typed_key("zk"), s("0"), s("1")],
            9 => vec![s("ZREMRANGEBYSCORE"), z, s("-inf"), score(&mut self.rng)],
            _ => match self.rng.below(3) {
                0 => vec![s("PEXPIREAT"), z, self.deadline().to_string()],
                1 => vec![s("RENAME"), z, self.typed_key("zk")],
                _ => vec![s("DEL"), z],
            },
        }
    }

    fn value(&mut self) -> String {
        self.counter += 1;
        match self.rng.below(4) {
            0 => self.rng.below(100).to_string(),
            1 => "1.5".to_string(),
            _ => format!("v{}", self.counter),
        }
    }

    fn deadline(&mut self) -> u64 {
        now_ms() + 10 + self.rng.below(250)
    }

    /// One random command (or a MULTI/EXEC of several).
    fn command(&mut self) -> Vec<Vec<String>> {
        let s = |x: &str| x.to_string();
        if self.rng.below(10) < 3 {
            return vec![self.typed_command()];
        }
        let (k, v) = (self.key(), self.value());
        let one = match self.rng.below(24) {
            0..=2 => {
                let mut c = vec![s("SET"), k, v];
                match self.rng.below(4) {
                    0 => c.push(s("NX")),
                    1 => c.push(s("XX")),
                    _ => {}
                }
                if self.rng.below(3) == 0 {
                    c.push(s("GET"));
                }
                match self.rng.below(3) {
                    0 => c.extend([s("PXAT"), self.deadline().to_string()]),
                    1 => c.push(s("KEEPTTL")),
                    _ => {}
                }
                c
            }
            3 => vec![s("SETNX"), k, v],
            4 => vec![s("GETSET"), k, v],
            5 => vec![s("GETDEL"), k],
            6 => match self.rng.below(2) {
                0 => vec![s("GETEX"), k, s("PERSIST")],
                _ => vec![s("GETEX"), k, s("PXAT"), self.deadline().to_string()],
            },
            7 => {
                let (k2, v2) = (self.key(), self.value());
                if k2 == k {
                    vec![s("MSET"), k, v]
                } else {
                    vec![s("MSET"), k, v, k2, v2]
                }
            }
            8 => {
                let (k2, v2) = (self.key(), self.value());
                if k2 == k {
                    vec![s("MSETNX"), k, v]
                } else {
                    vec![s("MSETNX"), k, v, k2, v2]
                }
            }
            9 => vec![s("INCR"), k],
            10 => {
                let by = (self.rng.below(9) as i64 - 4).to_string();
                match self.rng.below(2) {
                    0 => vec![s("INCRBY"), k, by],
                    _ => vec![s("DECRBY"), k, by],
                }
            }
            11 => vec![s("DECR"), k],
            12 => vec![s("INCRBYFLOAT"), k, s("1.5")],
            13 => vec![s("APPEND"), k, v],
            14 => vec![s("SETRANGE"), k, self.rng.below(6).to_string(), v],
            15 => match self.rng.below(2) {
                0 => vec![s("DEL"), k, self.key()],
                _ => vec![s("UNLINK"), k, self.key()],
            },
            16 => vec![s("PEXPIREAT"), k, self.deadline().to_string()],
            17 => match self.rng.below(4) {
                // Relative deadlines: the model learns where the server put them.
                0 => vec![s("PEXPIRE"), k, (10 + self.rng.below(250)).to_string()],
                1 => vec![s("PSETEX"), k, (10 + self.rng.below(250)).to_string(), v],
                2 => vec![s("SETEX"), k, s("1"), v],
                _ => vec![
                    s("SET"),
                    k,
                    v,
                    s("PX"),
                    (10 + self.rng.below(250)).to_string(),
                ],
            },
            18 => match self.rng.below(3) {
                0 => {
                    let at = match self.rng.below(2) {
                        0 => s("0"),
                        _ => self.deadline().to_string(),
                    };
                    let mut c = vec![s("RESTORE"), k, at, payload_arg(&v)];
                    if self.rng.below(3) > 0 {
                        c.push(s("REPLACE"));
                    }
                    c.push(s("ABSTTL"));
                    c
                }
                _ => vec![s("PERSIST"), k],
            },
            19 => vec![s("RENAME"), k, self.key()],
            20 => vec![s("RENAMENX"), k, self.key()],
            21 => {
                let k2 = self.key();
                if k2 == k {
                    vec![s("INCR"), k]
                } else {
                    let by = (self.rng.below(9) as i64 - 4).to_string();
                    vec![s("EVAL"), s(TRANSFER_SCRIPT), s("2"), k, k2, by]
                }
            }
            22 => vec![
                s("EVAL"),
                s(MOVE_TO_HASH_SCRIPT),
                s("2"),
                k,
                self.typed_key("hk"),
            ],
            _ => {
                // MULTI/EXEC of commands that cannot fail, usually across shards.
                let n = 2 + self.rng.below(3) as usize;
                return (0..n)
                    .map(|_| {
                        let (k, v) = (self.key(), self.value());
                        match self.rng.below(6) {
                            0 => vec![s("SET"), k, v, s("PXAT"), self.deadline().to_string()],
                            1 => vec![s("APPEND"), k, v],
                            2 => vec![s("SETNX"), k, v],
                            3 => vec![s("HSET"), self.typed_key("hk"), s("f0"), v],
                            4 => vec![s("SADD"), self.typed_key("sk"), v],
                            _ => vec![s("GETDEL"), k],
                        }
                    })
                    .collect();
            }
        };
        vec![one]
    }

    /// Sends one command (or transaction). `false` when the connection died.
    fn step(&mut self, con: &mut redis::Connection) -> bool {
        let cmds = self.command();
        let before: Vec<(String, Slot)> = keys_of(&cmds, &self.keys)
            .map(|k| (k.clone(), self.state[k].clone()))
            .collect();
        let t0 = now_ms();
        let result = if cmds.len() == 1 {
            let c = &cmds[0];
            redis::cmd(&c[0]).arg(wire(&c[1..])).query::<Value>(con)
        } else {
            let mut p = redis::pipe();
            p.atomic();
            for c in &cmds {
                p.cmd(&c[0]).arg(wire(&c[1..]));
            }
            p.query::<Value>(con)
        };
        let t1 = now_ms();
        let actual = match result {
            Ok(v) => normalize(&cmds, reply_of(&v)),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                // In flight at the kill: it may or may not have happened.
                for (k, _) in before {
                    self.state.insert(k, Slot::Unknown);
                }
                return false;
            }
            Err(e) if is_refusal(e.code().unwrap_or(""), &e.to_string()) => Reply::Refused,
            Err(_) => Reply::Err,
        };
        self.acknowledged += 1;
        let acked_at = std::time::Instant::now();
        for (k, _) in &before {
            self.last_ack.insert(k.clone(), acked_at);
        }
        if contains_refusal(&actual) {
            // Refused (or run in memory and undone, as commands held across a failed rewrite
            // commit are): no effect is expected, but the model does not bet on which parts of
            // a batch ran. Its keys are read back before they are trusted again.
            for (k, _) in before {
                self.state.insert(k, Slot::Unknown);
            }
            return true;
        }
        if before.iter().any(|(_, s)| *s == Slot::Unknown) {
            // The outcome may depend on what we do not know: learn nothing, except that an
            // unconditional overwrite that succeeded makes its keys known again.
            self.forget_or_overwrite(&cmds, &actual);
            return true;
        }
        let known: State = before
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Known(v, d) => Some((k.clone(), (v.clone(), *d))),
                Slot::Unknown => None,
            })
            .collect();
        let run = |now: u64| {
            let mut st = known.clone();
            let replies: Vec<Reply> = cmds.iter().map(|c| apply(&mut st, c, now)).collect();
            let reply = if cmds.len() == 1 {
                replies.into_iter().next().unwrap_or(Reply::Err)
            } else {
                Reply::Array(replies)
            };
            (st, reply)
        };
        let (early, late) = (run(t0), run(t1));
        // The state whose predicted reply is the real one; both (no deadline in the window
        // mattered) only if they agree; neither: the model cannot follow, so it forgets.
        let chosen = match (early.1 == actual, late.1 == actual) {
            (true, true) if early.0 == late.0 => Some(early.0),
            // A relative deadline lands between the two ends: ask where it is.
            (true, true) => self.learn_deadlines(con, &early.0, late.0),
            (true, false) => Some(early.0),
            (false, true) => Some(late.0),
            _ => None,
        };
        if early.1 != actual && late.1 != actual && self.mismatches.len() < 10 {
            let history: Vec<_> = before
                .iter()
                .map(|(k, _)| (k, self.history.get(k)))
                .collect();
            self.mismatches.push(format!(
                "{cmds:?} at {t0}..{t1} replied {actual:?}, model expected {:?} or {:?} from {before:?}; before that: {history:?}",
                early.1, late.1
            ));
        }
        for (k, _) in &before {
            let h = self.history.entry(k.clone()).or_default();
            if h.len() == 6 {
                h.pop_front();
            }
            h.push_back(format!("{cmds:?} at {t0}..{t1} -> {actual:?}"));
        }
        match chosen {
            Some(st) => {
                for (k, (v, d)) in st {
                    self.state.insert(k, Slot::Known(v, d));
                }
            }
            None => {
                for (k, _) in before {
                    self.state.insert(k, Slot::Unknown);
                }
            }
        }
        true
    }

    /// `early` and `late` agree on every value and differ only in deadlines set relative to
    /// the server's clock: the deadlines are read back (`PEXPIRETIME`) and must lie between
    /// the two. `None` (the keys become unknown) if anything else differs.
    fn learn_deadlines(
        &self,
        con: &mut redis::Connection,
        early: &State,
        mut late: State,
    ) -> Option<State> {
        for (k, (v, d_late)) in late.iter_mut() {
            let (v_early, d_early) = early.get(k)?;
            if v != v_early {
                return None;
            }
            if d_early != d_late {
                let at: i64 = redis::cmd("PEXPIRETIME").arg(k).query(con).ok()?;
                let at = u64::try_from(at).ok()?;
                if at < (*d_early).min(*d_late) || at > (*d_early).max(*d_late) {
                    return None;
                }
                *d_late = at;
            }
        }
        Some(late)
    }

    /// After a command over unknown keys: unconditional overwrites (SET without options, MSET,
    /// DEL) that were not refused make their keys known; anything else — a refused overwrite
    /// too (MISCONF, OOM: it did not run) — leaves every key it touched unknown.
    fn forget_or_overwrite(&mut self, cmds: &[Vec<String>], actual: &Reply) {
        for (i, c) in cmds.iter().enumerate() {
            let refused = match actual {
                Reply::Err => true,
                Reply::Array(replies) if cmds.len() > 1 => {
                    replies.get(i).is_none_or(|r| *r == Reply::Err)
                }
                _ => false,
            };
            let overwrite = !refused
                && match c[0].as_str() {
                    "SET" => c.len() == 3,
                    "MSET" | "DEL" => true,
                    _ => false,
                };
            if overwrite {
                let mut st = State::new();
                apply(&mut st, c, 0);
                for (k, (v, d)) in st {
                    self.state.insert(k, Slot::Known(v, d));
                }
            } else {
                for k in c[1..].iter().filter(|a| self.keys.contains(a)) {
                    self.state.insert(k.clone(), Slot::Unknown);
                }
            }
        }
    }

    /// After a power cut: keys changed by a command acknowledged after `durable_before` (within
    /// the fsync policy's window) may have lost that change, so they become unknown.
    pub fn forget_acknowledged_after(&mut self, durable_before: std::time::Instant) {
        for (k, t) in &self.last_ack {
            if *t > durable_before {
                self.state.insert(k.clone(), Slot::Unknown);
            }
        }
    }

    /// Drives the server until it dies or `stop` is set.
    pub fn run(mut self, url: &str, stop: Arc<AtomicBool>) -> ModelClient {
        let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
            return self;
        };
        let _ = con.set_read_timeout(Some(Duration::from_secs(30)));
        if redis::cmd("SELECT")
            .arg(self.db)
            .query::<()>(&mut con)
            .is_err()
        {
            return self;
        }
        while !stop.load(Ordering::Relaxed) {
            if !self.step(&mut con) {
                break;
            }
        }
        self
    }

    /// Checks every known key against the server; returns the differences. Then learns the
    /// server's state of every key (it is the truth from here on).
    pub fn verify(&mut self, con: &mut redis::Connection) -> anyhow::Result<Vec<String>> {
        redis::cmd("SELECT").arg(self.db).query::<()>(con)?;
        let failures = self.verify_selected(con);
        redis::cmd("SELECT").arg(0).query::<()>(con)?;
        failures
    }

    fn verify_selected(&mut self, con: &mut redis::Connection) -> anyhow::Result<Vec<String>> {
        let mut failures = Vec::new();
        for k in self.keys.clone() {
            let t0 = now_ms();
            let mut field_near = false;
            let v: Option<String> = if k.starts_with("hk:") {
                let h: std::collections::BTreeMap<String, String> =
                    redis::cmd("HGETALL").arg(&k).query(con)?;
                let mut with_deadlines = Map::new();
                for (f, v) in h {
                    let at: Vec<i64> = redis::cmd("HPEXPIRETIME")
                        .arg(&k)
                        .arg("FIELDS")
                        .arg(1)
                        .arg(&f)
                        .query(con)?;
                    let at = at.first().copied().unwrap_or(-2);
                    with_deadlines.insert(f, (v, u64::try_from(at).unwrap_or(0)));
                }
                // What the model expects, at the time of this read.
                if let Slot::Known(Some(text), _) = &self.state[&k] {
                    let now = now_ms();
                    field_near = hash_of(text)
                        .values()
                        .chain(with_deadlines.values())
                        .any(|(_, d)| *d != 0 && *d > t0.saturating_sub(50) && *d <= now + 50);
                }
                hash_text(&with_deadlines)
            } else if k.starts_with("sk:") {
                let m: Members = redis::cmd("SMEMBERS").arg(&k).query(con)?;
                set_text(&m)
            } else if k.starts_with("zk:") {
                let flat: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(con)?;
                let z: Scores = flat
                    .chunks(2)
                    .map(|p| {
                        (
                            p[0].clone(),
                            p.get(1).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN),
                        )
                    })
                    .collect();
                zset_text(&z)
            } else if k.starts_with("lk:") {
                let l: Vec<String> = redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(con)?;
                list_text(&l)
            } else {
                redis::cmd("GET").arg(&k).query(con)?
            };
            let exp: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(con)?;
            let t1 = now_ms();
            let got_deadline = if exp > 0 { exp as u64 } else { 0 };
            // GET and PEXPIRETIME are two commands: a key may expire between them (-2 after a
            // value). Learn only a state read whole and not about to change.
            let torn_read = (exp == -2 && v.is_some()) || field_near;
            let learned = if torn_read || (got_deadline != 0 && got_deadline <= t1 + 50) {
                Slot::Unknown
            } else {
                Slot::Known(v.clone(), got_deadline)
            };
            if let Slot::Known(want, d) = &self.state[&k] {
                let near = *d != 0 && *d > t0.saturating_sub(50) && *d <= t1 + 50;
                let want_now = if *d != 0 && *d <= t0 {
                    None
                } else if k.starts_with("hk:") {
                    // Fields whose deadline passed are gone.
                    want.as_deref()
                        .and_then(|t| hash_text(&live_fields(hash_of(t), t0)))
                } else {
                    want.clone()
                };
                let want_deadline = if want_now.is_some() { *d } else { 0 };
                if !near && !field_near && (v != want_now || got_deadline != want_deadline) {
                    // The key's last commands, to tell a lost write from a model gap.
                    let history = self.history.get(&k);
                    failures.push(format!(
                        "{k}: expected {want_now:?} (deadline {want_deadline}), found {v:?} (deadline {got_deadline}); its last commands: {history:?}"
                    ));
                }
            }
            self.state.insert(k, learned);
        }
        Ok(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_model_follows_redis_semantics_across_expiry() {
        let mut st = State::new();
        assert_eq!(
            apply(&mut st, &c(&["SET", "k", "a", "PXAT", "100"]), 50),
            Reply::Ok
        );
        assert_eq!(apply(&mut st, &c(&["SETNX", "k", "b"]), 99), Reply::Int(0));
        assert_eq!(apply(&mut st, &c(&["SETNX", "k", "b"]), 100), Reply::Int(1));
        assert_eq!(
            apply(&mut st, &c(&["APPEND", "k", "c"]), 101),
            Reply::Int(2)
        );
        assert_eq!(apply(&mut st, &c(&["GET_UNKNOWN"]), 0), Reply::Err);
        assert_eq!(st["k"], (Some("bc".into()), 0));
        assert_eq!(apply(&mut st, &c(&["INCR", "n"]), 0), Reply::Int(1));
        assert_eq!(
            apply(&mut st, &c(&["INCRBYFLOAT", "n", "1.5"]), 0),
            Reply::Bulk("2.5".into())
        );
        assert_eq!(
            apply(&mut st, &c(&["RENAMENX", "n", "k"]), 0),
            Reply::Int(0)
        );
        assert_eq!(apply(&mut st, &c(&["RENAME", "n", "m"]), 0), Reply::Ok);
        assert_eq!(st["n"], (None, 0));
        assert_eq!(
            apply(&mut st, &c(&["SETRANGE", "z", "2", "ab"]), 0),
            Reply::Int(4)
        );
        assert_eq!(apply(&mut st, &c(&["SET", "lz", "063"]), 0), Reply::Ok);
        assert_eq!(
            apply(&mut st, &c(&["INCR", "lz"]), 0),
            Reply::Err,
            "leading zero"
        );
        assert_eq!(
            apply(&mut st, &c(&["PEXPIREAT", "m", "10"]), 20),
            Reply::Int(1)
        );
        assert_eq!(st["m"], (None, 0), "a deadline in the past deletes");
    }

    /// The after-failed-commit flake: a transfer script whose second step fails keeps its
    /// first step (a predicted error with an effect), and a MISCONF refusal is an error too. The
    /// refusal must never be matched against the prediction, or the model expects the first
    /// step's write, which never ran.
    #[test]
    fn a_refusal_is_never_taken_for_the_commands_own_error() {
        let mut st = State::new();
        st.insert("b".into(), (Some("v5".into()), 0));
        let script = c(&["EVAL", TRANSFER_SCRIPT, "2", "a", "b", "1"]);
        assert_eq!(apply(&mut st, &script, 0), Reply::Err);
        assert_eq!(
            st["a"],
            (Some("1".into()), 0),
            "the script's first step stays"
        );
        let refused = redis::parse_redis_value(b"-MISCONF Errors writing to the AOF file\r\n")
            .expect("a RESP error parses");
        assert_eq!(reply_of(&refused), Reply::Refused);
        assert!(contains_refusal(&Reply::Array(vec![
            Reply::Ok,
            Reply::Refused
        ])));
        let own = redis::parse_redis_value(b"-ERR value is not an integer or out of range\r\n")
            .expect("a RESP error parses");
        assert_eq!(reply_of(&own), Reply::Err);
    }

    #[test]
    fn the_model_follows_hashes_and_sets() {
        let mut st = State::new();
        assert_eq!(
            apply(&mut st, &c(&["HSET", "h", "f", "1", "g", "x"]), 0),
            Reply::Int(2)
        );
        assert_eq!(
            apply(&mut st, &c(&["HINCRBY", "h", "f", "2"]), 0),
            Reply::Int(3)
        );
        assert_eq!(
            apply(&mut st, &c(&["HINCRBY", "h", "g", "2"]), 0),
            Reply::Err
        );
        assert_eq!(
            apply(&mut st, &c(&["HSETNX", "h", "f", "9"]), 0),
            Reply::Int(0)
        );
        assert_eq!(st["h"], (Some("f=3@0;g=x@0".into()), 0));
        // Field deadlines: HINCRBY keeps one, a passed one deletes, HPERSIST clears.
        assert_eq!(
            apply(
                &mut st,
                &c(&["HPEXPIREAT", "h", "500", "FIELDS", "1", "f"]),
                100
            ),
            Reply::Array(vec![Reply::Int(1)])
        );
        assert_eq!(
            apply(&mut st, &c(&["HINCRBY", "h", "f", "1"]), 100),
            Reply::Int(4)
        );
        assert_eq!(st["h"], (Some("f=4@500;g=x@0".into()), 0));
        assert_eq!(
            apply(
                &mut st,
                &c(&["HPERSIST", "h", "FIELDS", "2", "f", "g"]),
                100
            ),
            Reply::Array(vec![Reply::Int(1), Reply::Int(-1)])
        );
        apply(
            &mut st,
            &c(&["HPEXPIREAT", "h", "500", "FIELDS", "1", "f"]),
            100,
        );
        assert_eq!(
            apply(&mut st, &c(&["HSETNX", "h", "f", "new"]), 500),
            Reply::Int(1),
            "the field expired at 500"
        );
        assert_eq!(
            apply(
                &mut st,
                &c(&["HPEXPIREAT", "h", "10", "FIELDS", "2", "f", "nope"]),
                500
            ),
            Reply::Array(vec![Reply::Int(2), Reply::Int(-2)])
        );
        assert_eq!(st["h"], (Some("g=x@0".into()), 0));
        apply(&mut st, &c(&["HSET", "h", "f", "3"]), 0);
        assert_eq!(
            apply(&mut st, &c(&["HDEL", "h", "f", "g"]), 0),
            Reply::Int(2)
        );
        assert_eq!(st["h"], (None, 0), "an empty hash is gone");
        assert_eq!(
            apply(&mut st, &c(&["SADD", "a", "1", "2", "x"]), 0),
            Reply::Int(3)
        );
        assert_eq!(
            apply(&mut st, &c(&["SADD", "b", "2", "y"]), 0),
            Reply::Int(2)
        );
        assert_eq!(
            apply(&mut st, &c(&["SINTERSTORE", "c", "a", "b"]), 0),
            Reply::Int(1)
        );
        assert_eq!(
            apply(&mut st, &c(&["SINTERSTORE", "d", "a", "nosuch"]), 0),
            Reply::Int(0)
        );
        assert_eq!(
            apply(&mut st, &c(&["SDIFFSTORE", "d", "a", "b"]), 0),
            Reply::Int(2)
        );
        assert_eq!(st["d"], (Some("1;x".into()), 0));
        assert_eq!(
            apply(&mut st, &c(&["SMOVE", "c", "b", "2"]), 0),
            Reply::Int(1)
        );
        assert_eq!(st["c"], (None, 0));
        assert_eq!(
            apply(&mut st, &c(&["SPOP", "b", "100"]), 0),
            Reply::Array(vec![Reply::Bulk("2".into()), Reply::Bulk("y".into())])
        );
        assert_eq!(st["b"], (None, 0));
    }

    #[test]
    fn the_model_keeps_lists_in_order() {
        let mut st = State::new();
        assert_eq!(
            apply(&mut st, &c(&["RPUSH", "a", "1", "2"]), 0),
            Reply::Int(2)
        );
        assert_eq!(
            apply(&mut st, &c(&["LPUSH", "a", "0", "x"]), 0),
            Reply::Int(4)
        );
        assert_eq!(st["a"].0.as_deref(), Some("x;0;1;2"));
        assert_eq!(
            apply(&mut st, &c(&["LMOVE", "a", "b", "LEFT", "RIGHT"]), 0),
            Reply::Bulk("x".into())
        );
        assert_eq!(
            apply(&mut st, &c(&["LMOVE", "a", "a", "RIGHT", "LEFT"]), 0),
            Reply::Bulk("2".into())
        );
        assert_eq!(st["a"].0.as_deref(), Some("2;0;1"));
        assert_eq!(
            apply(&mut st, &c(&["LREM", "a", "0", "0"]), 0),
            Reply::Int(1)
        );
        assert_eq!(apply(&mut st, &c(&["LTRIM", "a", "1", "-1"]), 0), Reply::Ok);
        assert_eq!(
            apply(&mut st, &c(&["LPOP", "a"]), 0),
            Reply::Bulk("1".into())
        );
        assert_eq!(st["a"], (None, 0));
        assert_eq!(apply(&mut st, &c(&["LPOP", "a"]), 0), Reply::Nil);
        assert_eq!(apply(&mut st, &c(&["RPOP", "nope", "100"]), 0), Reply::Nil);
        assert_eq!(
            apply(&mut st, &c(&["RPOP", "b", "100"]), 0),
            Reply::Array(vec![Reply::Bulk("x".into())])
        );
        assert_eq!(apply(&mut st, &c(&["LPUSHX", "b", "1"]), 0), Reply::Int(0));
        assert_eq!(apply(&mut st, &c(&["LSET", "b", "0", "1"]), 0), Reply::Err);
        assert_eq!(
            apply(&mut st, &c(&["RPUSH", "b", "1", "2"]), 0),
            Reply::Int(2)
        );
        assert_eq!(apply(&mut st, &c(&["RPUSHX", "b", "3"]), 0), Reply::Int(3));
        assert_eq!(apply(&mut st, &c(&["LSET", "b", "0", "0"]), 0), Reply::Ok);
        assert_eq!(
            apply(&mut st, &c(&["LINSERT", "b", "BEFORE", "2", "x"]), 0),
            Reply::Int(4)
        );
        assert_eq!(
            apply(&mut st, &c(&["LINSERT", "b", "BEFORE", "nope", "x"]), 0),
            Reply::Int(-1)
        );
        assert_eq!(st["b"].0.as_deref(), Some("0;x;2;3"));
        assert_eq!(
            apply(&mut st, &c(&["RPOPLPUSH", "b", "c"]), 0),
            Reply::Bulk("3".into())
        );
        assert_eq!(
            apply(
                &mut st,
                &c(&["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"]),
                0
            ),
            Reply::Array(vec![
                Reply::Bulk("b".into()),
                Reply::Array(vec![Reply::Bulk("0".into()), Reply::Bulk("x".into())])
            ])
        );
        assert_eq!(
            apply(
                &mut st,
                &c(&["LMPOP", "2", "a", "z", "LEFT", "COUNT", "2"]),
                0
            ),
            Reply::Nil
        );
    }

    #[test]
    fn the_model_serves_blocking_pops_at_once_or_times_out() {
        let mut st = State::new();
        assert_eq!(
            apply(&mut st, &c(&["BLPOP", "a", "b", "0.01"]), 0),
            Reply::Nil
        );
        apply(&mut st, &c(&["RPUSH", "b", "x", "y"]), 0);
        assert_eq!(
            apply(&mut st, &c(&["BLPOP", "a", "b", "0.01"]), 0),
            Reply::Array(vec![Reply::Bulk("b".into()), Reply::Bulk("x".into())])
        );
        assert_eq!(
            apply(
                &mut st,
                &c(&["BLMOVE", "b", "a", "LEFT", "RIGHT", "0.01"]),
                0
            ),
            Reply::Bulk("y".into())
        );
        assert_eq!(st["a"].0.as_deref(), Some("y"));
        assert_eq!(
            apply(
                &mut st,
                &c(&["BLMOVE", "b", "a", "LEFT", "RIGHT", "0.01"]),
                0
            ),
            Reply::Nil
        );
    }

    #[test]
    fn the_model_orders_sorted_sets_by_score() {
        let mut st = State::new();
        let z = |st: &State, k: &str| st[k].0.clone();
        assert_eq!(
            apply(&mut st, &c(&["ZADD", "a", "2", "x", "-1.5", "y"]), 0),
            Reply::Int(2)
        );
        assert_eq!(z(&st, "a").as_deref(), Some("x=2;y=-1.5"));
        assert_eq!(
            apply(&mut st, &c(&["ZADD", "a", "GT", "1", "x", "3", "w"]), 0),
            Reply::Int(1)
        );
        assert_eq!(
            apply(&mut st, &c(&["ZADD", "a", "CH", "4", "x"]), 0),
            Reply::Int(1)
        );
        assert_eq!(
            apply(&mut st, &c(&["ZADD", "a", "XX", "1", "nope"]), 0),
            Reply::Int(0)
        );
        assert_eq!(
            apply(&mut st, &c(&["ZINCRBY", "a", "1.5", "y"]), 0),
            Reply::Bulk("0".into())
        );
        // a: y 0, w 3, x 4
        assert_eq!(
            apply(&mut st, &c(&["ZPOPMAX", "a", "1"]), 0),
            Reply::Array(vec![Reply::Bulk("x".into()), Reply::Bulk("4".into())])
        );
        assert_eq!(
            apply(&mut st, &c(&["ZADD", "b", "1", "w", "5", "v"]), 0),
            Reply::Int(2)
        );
        assert_eq!(
            apply(&mut st, &c(&["ZUNIONSTORE", "u", "2", "a", "b"]), 0),
            Reply::Int(3)
        );
        assert_eq!(z(&st, "u").as_deref(), Some("v=5;w=4;y=0"));
        assert_eq!(
            apply(&mut st, &c(&["ZINTERSTORE", "u", "2", "a", "b"]), 0),
            Reply::Int(1)
        );
        assert_eq!(
            apply(&mut st, &c(&["ZDIFFSTORE", "u", "2", "a", "nope"]), 0),
            Reply::Int(2)
        );
        assert_eq!(
            apply(&mut st, &c(&["ZRANGESTORE", "r", "b", "0", "1"]), 0),
            Reply::Int(2)
        );
        assert_eq!(
            apply(&mut st, &c(&["ZREMRANGEBYSCORE", "r", "-inf", "1"]), 0),
            Reply::Int(1)
        );
        assert_eq!(
            apply(
                &mut st,
                &c(&["ZMPOP", "2", "nope", "r", "MIN", "COUNT", "3"]),
                0
            ),
            Reply::Array(vec![
                Reply::Bulk("r".into()),
                Reply::Array(vec![Reply::Array(vec![
                    Reply::Bulk("v".into()),
                    Reply::Bulk("5".into())
                ])])
            ])
        );
        assert_eq!(st["r"], (None, 0));
        assert_eq!(
            apply(&mut st, &c(&["ZREM", "a", "y", "w"]), 0),
            Reply::Int(2)
        );
        assert_eq!(st["a"], (None, 0));
    }
}
