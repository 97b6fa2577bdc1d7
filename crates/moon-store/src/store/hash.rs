//! Hash commands (HSET, HGET, HINCRBY, HSCAN, ...).
//!
//! Logged forms: HSET/HMSET/HSETNX as `HSET key field value ...` of what was set, HINCRBY and
//! HINCRBYFLOAT as `HSET` of the result, HDEL as sent when it removed something. A hash whose
//! last field goes is removed with it, live and in replay alike.

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, parse_f64, parse_i64, scan_args, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::reply::{self, err};
use crate::value::{Hash, Value};

/// The fields of `... FIELDS numfields field ...`, `FIELDS` at `at - 1`: checked as Redis
/// checks them (the keyword, a count >= 1, exactly that many fields).
fn fields_arg<'a>(
    args: &'a [Bytes],
    at: usize,
    count_error: &'static str,
) -> Result<&'a [Bytes], Frame> {
    if !args.get(at - 1).is_some_and(|a| eq(a, "fields")) {
        return Err(err(
            "ERR Mandatory argument FIELDS is missing or not at the right position",
        ));
    }
    let n = args
        .get(at)
        .and_then(|n| parse_i64(n))
        .filter(|&n| n >= 1)
        .ok_or_else(|| err(count_error))?;
    if n as u64 != (args.len() - at - 1) as u64 {
        return Err(err(
            "ERR The `numfields` parameter must match the number of arguments",
        ));
    }
    Ok(&args[at + 1..])
}

fn bulk(b: &[u8]) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(b))
}

/// The hash family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Hash: "hset", -4, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hset("hset", a, now))),
    command!(Hash: "hsetnx", 4, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hsetnx(a, now))),
    command!(Hash: "hmset", -4, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hset("hmset", a, now))),
    command!(Hash: "hget", 3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| field(h, &a[2])))
    }),
    command!(Hash: "hmget", -3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| Frame::Array(a[2..].iter().map(|f| field(h, f)).collect())))
    }),
    command!(Hash: "hgetall", 2, R, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| {
            Frame::Map(h.map(|h| h.iter().map(|(f, v)| (bulk(f), bulk(v))).collect()).unwrap_or_default())
        }))
    }),
    command!(Hash: "hdel", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.hdel(a, now))),
    command!(Hash: "hexists", 3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| Frame::Integer(i64::from(h.is_some_and(|h| h.get(&a[2]).is_some())))))
    }),
    command!(Hash: "hlen", 2, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| Frame::Integer(h.map_or(0, |h| h.len() as i64))))
    }),
    command!(Hash: "hstrlen", 3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| Frame::Integer(h.and_then(|h| h.get(&a[2])).map_or(0, |v| v.len() as i64))))
    }),
    command!(Hash: "hkeys", 2, R, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| Frame::Array(h.map(|h| h.iter().map(|(f, _)| bulk(f)).collect()).unwrap_or_default())))
    }),
    command!(Hash: "hvals", 2, R, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.hash(&a[1], now).map(|h| Frame::Array(h.map(|h| h.iter().map(|(_, v)| bulk(v)).collect()).unwrap_or_default())))
    }),
    command!(Hash: "hincrby", 4, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hincrby(a, now))),
    command!(Hash: "hincrbyfloat", 4, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hincrbyfloat(a, now))),
    command!(Hash: "hrandfield", -2, R, keys(1, 1, 1), ONE, |s, a, now| either(s.hrandfield(a, now))),
    command!(Hash: "hscan", -3, R, keys(1, 1, 1), ONE, |s, a, now| either(s.hscan(a, now))),
    command!(Hash: "hexpire", -6, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hexpire("hexpire", a, now))),
    command!(Hash: "hpexpire", -6, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hexpire("hpexpire", a, now))),
    command!(Hash: "hexpireat", -6, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hexpire("hexpireat", a, now))),
    command!(Hash: "hpexpireat", -6, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.hexpire("hpexpireat", a, now))),
    command!(Hash: "httl", -5, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.httl("httl", a, now))),
    command!(Hash: "hpttl", -5, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.httl("hpttl", a, now))),
    command!(Hash: "hexpiretime", -5, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.httl("hexpiretime", a, now))),
    command!(Hash: "hpexpiretime", -5, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.httl("hpexpiretime", a, now))),
    command!(Hash: "hpersist", -5, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.hpersist(a, now))),
];

/// A field's value, or nil.
fn field(h: Option<&Hash>, name: &[u8]) -> Frame {
    h.and_then(|h| h.get(name))
        .map(Bytes::copy_from_slice)
        .map_or(Frame::Null, Frame::Bulk)
}

impl Store {
    /// The hash at `key`: `Ok(None)` if there is none, WRONGTYPE if it holds another type.
    fn hash(&mut self, key: &[u8], now: u64) -> Result<Option<&Hash>, Frame> {
        match self.ks.get(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Hash(h)) => Ok(Some(h)),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// Changes the hash at `key` (see `Store::collection_write`).
    fn hash_write<R>(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
        f: impl FnOnce(&mut Hash, &crate::value::Encodings) -> R,
    ) -> Result<Option<R>, Frame> {
        self.collection_write(key, now, create, f)
    }

    fn hset(&mut self, name: &'static str, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if !args.len().is_multiple_of(2) {
            return Ok(reply::wrong_arity(name));
        }
        let added = self
            .hash_write(&args[1], now, true, |h, enc| {
                args[2..]
                    .chunks(2)
                    .filter(|p| h.set(&p[0], &p[1], enc))
                    .count()
            })?
            .unwrap_or(0);
        let mut logged: Vec<&[u8]> = vec![b"HSET"];
        logged.extend(args[1..].iter().map(|a| &a[..]));
        self.log_derived(&logged);
        Ok(if name == "hmset" {
            Frame::OK
        } else {
            Frame::Integer(added as i64)
        })
    }

    fn hsetnx(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if self
            .hash(&args[1], now)?
            .is_some_and(|h| h.get(&args[2]).is_some())
        {
            return Ok(Frame::Integer(0));
        }
        self.hash_write(&args[1], now, true, |h, enc| h.set(&args[2], &args[3], enc))?;
        self.log_derived(&[b"HSET", &args[1], &args[2], &args[3]]);
        Ok(Frame::Integer(1))
    }

    fn hdel(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let removed = self
            .hash_write(&args[1], now, false, |h, _| {
                args[2..].iter().filter(|f| h.remove(f)).count()
            })?
            .unwrap_or(0);
        if removed > 0 {
            self.log_args(args);
        }
        Ok(Frame::Integer(removed as i64))
    }

    fn hincrby(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let Some(delta) = parse_i64(&args[3]) else {
            return Err(err(reply::NOT_INTEGER));
        };
        let current = match self.hash(&args[1], now)?.and_then(|h| h.get(&args[2])) {
            None => 0,
            Some(v) => parse_i64(v).ok_or_else(|| err("ERR hash value is not an integer"))?,
        };
        let new = current
            .checked_add(delta)
            .ok_or_else(|| err(reply::OVERFLOW))?;
        let text = new.to_string();
        // It keeps the field's deadline (HSET clears one): logged as HSET, then HPEXPIREAT.
        self.hash_write(&args[1], now, true, |h, enc| {
            h.set_keep_ttl(&args[2], text.as_bytes(), enc)
        })?;
        self.log_field_write(&args[1], &args[2], text.as_bytes(), now);
        Ok(Frame::Integer(new))
    }

    fn hincrbyfloat(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let Some(delta) = parse_f64(&args[3]) else {
            return Err(err(reply::NOT_FLOAT));
        };
        if !delta.is_finite() {
            return Err(err("ERR value is NaN or Infinity"));
        }
        let current = match self.hash(&args[1], now)?.and_then(|h| h.get(&args[2])) {
            None => 0.0,
            Some(v) => parse_f64(v).ok_or_else(|| err("ERR hash value is not a float"))?,
        };
        let new = current + delta;
        if !new.is_finite() {
            return Err(err(reply::NAN_OR_INF));
        }
        let text = moon_proto::frame::format_double(new);
        // It keeps the field's deadline (HSET clears one): logged as HSET, then HPEXPIREAT.
        self.hash_write(&args[1], now, true, |h, enc| {
            h.set_keep_ttl(&args[2], text.as_bytes(), enc)
        })?;
        self.log_field_write(&args[1], &args[2], text.as_bytes(), now);
        Ok(Frame::Bulk(Bytes::from(text)))
    }

    /// Logs a field's new value that kept its deadline: `HSET` (which clears a deadline in
    /// replay) followed by `HPEXPIREAT` of the deadline it kept.
    fn log_field_write(&mut self, key: &[u8], field: &[u8], value: &[u8], now: u64) {
        self.log_derived(&[b"HSET", key, field, value]);
        let deadline = self.ks.peek(key, now).and_then(|e| match &e.value {
            Value::Hash(h) => h.field_deadline(field),
            _ => None,
        });
        if let Some(at) = deadline {
            self.log_derived(&[
                b"HPEXPIREAT",
                key,
                at.to_string().as_bytes(),
                b"FIELDS",
                b"1",
                field,
            ]);
        }
    }

    /// HEXPIRE/HPEXPIRE/HEXPIREAT/HPEXPIREAT key time [NX|XX|GT|LT] FIELDS n field...: per
    /// field -2 (no such field), 0 (condition not met), 1 (deadline set), 2 (deleted: the time
    /// has passed). Logged as `HPEXPIREAT` of the fields it set and `HDEL` of those it deleted.
    fn hexpire(&mut self, name: &'static str, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let exists = self.hash(&args[1], now)?.is_some();
        let t = parse_i64(&args[2]).ok_or_else(|| err(reply::NOT_INTEGER))?;
        if t < 0 {
            return Err(err("ERR invalid expire time, must be >= 0"));
        }
        const MAX_MS: i64 = crate::value::MAX_FIELD_DEADLINE as i64;
        let bad_time = || Frame::Error(format!("ERR invalid expire time in '{}' command", name));
        let seconds = matches!(name, "hexpire" | "hexpireat");
        let ms = if seconds {
            if t > MAX_MS / 1000 {
                return Err(bad_time());
            }
            t * 1000
        } else {
            t
        };
        let base = if name.ends_with("at") { 0 } else { now as i64 };
        if ms > MAX_MS - base {
            return Err(bad_time());
        }
        let at = (ms + base) as u64;
        let cond = args.get(3).map(|a| a.to_ascii_uppercase());
        let (cond, fields_at) = match cond.as_deref() {
            Some(b"NX") | Some(b"XX") | Some(b"GT") | Some(b"LT") => (cond, 5),
            _ => (None, 4),
        };
        let fields = fields_arg(
            args,
            fields_at,
            "ERR Parameter `numFields` should be greater than 0",
        )?;
        if !exists {
            return Ok(Frame::Array(
                fields.iter().map(|_| Frame::Integer(-2)).collect(),
            ));
        }
        let past = now != crate::NO_EXPIRY_CHECK && at <= now;
        let results = self
            .hash_write(&args[1], now, false, |h, _| {
                fields
                    .iter()
                    .map(|f| {
                        if h.get(f).is_none() {
                            return -2;
                        }
                        let current = h.field_deadline(f);
                        let met = match cond.as_deref() {
                            Some(b"NX") => current.is_none(),
                            Some(b"XX") => current.is_some(),
                            Some(b"GT") => current.is_some_and(|c| at > c),
                            Some(b"LT") => current.is_none_or(|c| at < c),
                            _ => true,
                        };
                        if !met {
                            0
                        } else if past {
                            h.remove(f);
                            2
                        } else {
                            h.set_field_deadline(f, at);
                            1
                        }
                    })
                    .collect::<Vec<i64>>()
            })?
            .unwrap_or_default();
        let pick = |code: i64| -> Vec<&[u8]> {
            fields
                .iter()
                .zip(&results)
                .filter(|(_, r)| **r == code)
                .map(|(f, _)| &f[..])
                .collect()
        };
        let (set, deleted) = (pick(1), pick(2));
        if !deleted.is_empty() {
            let mut cmd: Vec<&[u8]> = vec![b"HDEL", &args[1]];
            cmd.extend(deleted);
            self.log_derived(&cmd);
        }
        if !set.is_empty() {
            let (at, n) = (at.to_string(), set.len().to_string());
            let mut cmd: Vec<&[u8]> = vec![
                b"HPEXPIREAT",
                &args[1],
                at.as_bytes(),
                b"FIELDS",
                n.as_bytes(),
            ];
            cmd.extend(set);
            self.log_derived(&cmd);
        }
        Ok(Frame::Array(
            results.into_iter().map(Frame::Integer).collect(),
        ))
    }

    /// HTTL/HPTTL/HEXPIRETIME/HPEXPIRETIME key FIELDS n field...: per field -2 (no such
    /// field), -1 (no deadline), or the time left / the deadline.
    fn httl(&mut self, name: &'static str, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let h = self.hash(&args[1], now)?.cloned();
        let fields = fields_arg(args, 3, "ERR Number of fields must be a positive integer")?;
        let answer = |f: &Bytes| -> i64 {
            let Some(h) = &h else { return -2 };
            if h.get(f).is_none() {
                return -2;
            }
            let Some(at) = h.field_deadline(f) else {
                return -1;
            };
            let at = at as i64;
            match name {
                "httl" => (at + 999 - now as i64) / 1000,
                "hpttl" => at - now as i64,
                "hexpiretime" => (at + 999) / 1000,
                _ => at,
            }
        };
        Ok(Frame::Array(
            fields.iter().map(|f| Frame::Integer(answer(f))).collect(),
        ))
    }

    /// HPERSIST key FIELDS n field...: per field -2 (no such field), -1 (no deadline), 1
    /// (deadline removed). Logged as HPERSIST of the fields it changed.
    fn hpersist(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let exists = self.hash(&args[1], now)?.is_some();
        let fields = fields_arg(args, 3, "ERR Number of fields must be a positive integer")?;
        if !exists {
            return Ok(Frame::Array(
                fields.iter().map(|_| Frame::Integer(-2)).collect(),
            ));
        }
        let results = self
            .hash_write(&args[1], now, false, |h, _| {
                fields
                    .iter()
                    .map(|f| match (h.get(f).is_some(), h.persist(f)) {
                        (false, _) => -2,
                        (true, false) => -1,
                        (true, true) => 1,
                    })
                    .collect::<Vec<i64>>()
            })?
            .unwrap_or_default();
        let changed: Vec<&[u8]> = fields
            .iter()
            .zip(&results)
            .filter(|(_, r)| **r == 1)
            .map(|(f, _)| &f[..])
            .collect();
        if !changed.is_empty() {
            let n = changed.len().to_string();
            let mut cmd: Vec<&[u8]> = vec![b"HPERSIST", &args[1], b"FIELDS", n.as_bytes()];
            cmd.extend(changed);
            self.log_derived(&cmd);
        }
        Ok(Frame::Array(
            results.into_iter().map(Frame::Integer).collect(),
        ))
    }

    /// HRANDFIELD key [count [WITHVALUES]]: a read; what it picked changes nothing.
    fn hrandfield(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let count = match args.get(2) {
            None => None,
            Some(c) => Some(parse_i64(c).ok_or_else(|| err(reply::NOT_INTEGER))?),
        };
        let with_values = match args.get(3) {
            None => false,
            Some(a) if eq(a, "withvalues") && args.len() == 4 => true,
            Some(_) => return Err(err(reply::SYNTAX)),
        };
        if count.is_some_and(|c| c < 0 && c.unsigned_abs() > super::MAX_RANDOM_REPEATS) {
            return Err(err("ERR value is out of range"));
        }
        let mut seed = self.next_seed(now);
        let Some(h) = self.hash(&args[1], now)? else {
            return Ok(if count.is_some() {
                Frame::Array(Vec::new())
            } else {
                Frame::Null
            });
        };
        let len = h.len();
        let picks = super::random_picks(len, count, &mut seed);
        let Some(_) = count else {
            return Ok(picks
                .first()
                .and_then(|&i| h.at(i))
                .map_or(Frame::Null, |(f, _)| bulk(f)));
        };
        // A compact hash finds position i by walking its buffer: walk it once when picks
        // repeat (a negative count may ask for millions).
        let all: Vec<(&[u8], &[u8])> = if h.is_compact() {
            h.iter().collect()
        } else {
            Vec::new()
        };
        let entries = picks.into_iter().filter_map(|i| {
            if h.is_compact() {
                all.get(i).copied()
            } else {
                h.at(i)
            }
        });
        Ok(if with_values {
            Frame::Pairs(entries.map(|(f, v)| (bulk(f), bulk(v))).collect())
        } else {
            Frame::Array(entries.map(|(f, _)| bulk(f)).collect())
        })
    }

    fn hscan(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let opts = scan_args(&args[2], &args[3..], true)?;
        let Some(h) = self.hash(&args[1], now)? else {
            return Ok(super::scan_reply(0, Vec::new()));
        };
        let (positions, next) =
            super::scan_positions(h.len(), h.is_compact(), opts.cursor, opts.count);
        let mut out = Vec::new();
        // A compact hash is returned whole: walk its buffer once, not once per position.
        let entries: Box<dyn Iterator<Item = (&[u8], &[u8])>> = if h.is_compact() {
            Box::new(h.iter())
        } else {
            Box::new(positions.filter_map(|i| h.at(i)))
        };
        for (f, v) in entries {
            if opts.pattern.is_none_or(|p| crate::glob::glob_match(p, f)) {
                out.push(bulk(f));
                if !opts.no_values {
                    out.push(bulk(v));
                }
            }
        }
        Ok(super::scan_reply(next, out))
    }
}
