//! String commands (GET, SET and its options, the INCR family, APPEND, SETRANGE, MSET, ...).
//!
//! Logged forms: relative deadlines become absolute (`SET k v PXAT ms`, `PEXPIREAT`), computed
//! results are logged as their value (INCR as `SET`), commands deterministic given the state
//! (APPEND, SETRANGE, SETNX, MSET, MSETNX) as sent.

use bytes::{Bytes, BytesMut};
use moon_proto::Frame;

use super::{eq, int_bytes, parse_f64, parse_i64, Expiry, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::command::{Merge, Route, Spread};
use crate::keyspace::Value;
use crate::reply::{self, err};
use crate::value::Str;

/// EX, PX, EXAT or PXAT (SET's and GETEX's deadline options).
fn is_expiry_option(a: &[u8]) -> bool {
    ["ex", "px", "exat", "pxat"].iter().any(|o| eq(a, o))
}

/// The string family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(String: "get", 2, RF, keys(1, 1, 1), ONE, |s, a, now| match s.get_str(&a[1], now) {
        Ok(Some(v)) => Frame::Bulk(v),
        Ok(None) => Frame::Null,
        Err(e) => e,
    }),
    command!(String: "set", -3, W, keys(1, 1, 1), ONE, |s, a, now| s.set(a, now)),
    command!(String: "setnx", 3, WF, keys(1, 1, 1), ONE, setnx),
    command!(String: "setex", 4, W, keys(1, 1, 1), ONE, |s, a, now| s.setex(a, 1000, now)),
    command!(String: "psetex", 4, W, keys(1, 1, 1), ONE, |s, a, now| s.setex(a, 1, now)),
    command!(String: "getset", 3, WF, keys(1, 1, 1), ONE, getset),
    command!(String: "getdel", 2, WNOOMF, keys(1, 1, 1), ONE, getdel),
    command!(String: "getex", -2, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| s.getex(a, now)),
    command!(String: "mget", -2, RF, keys(1, -1, 1), Route::Keys(Spread::Split(Merge::KeyOrder)), mget),
    command!(String: "mset", -3, W, keys(1, -1, 2), Route::Keys(Spread::Split(Merge::Ok)), mset),
    command!(String: "msetnx", -3, W, keys(1, -1, 2), COORDINATED, msetnx),
    command!(String: "incr", 2, WF, keys(1, 1, 1), ONE, |s, a, now| s.incr_by(a, 1, now)),
    command!(String: "decr", 2, WF, keys(1, 1, 1), ONE, |s, a, now| s.incr_by(a, -1, now)),
    command!(String: "incrby", 3, WF, keys(1, 1, 1), ONE, |s, a, now| match parse_i64(&a[2]) {
        Some(d) => s.incr_by(a, d, now),
        None => err(reply::NOT_INTEGER),
    }),
    command!(String: "decrby", 3, WF, keys(1, 1, 1), ONE, |s, a, now| match parse_i64(&a[2]) {
        Some(d) => match d.checked_neg() {
            Some(n) => s.incr_by(a, n, now),
            None => err(reply::OVERFLOW),
        },
        None => err(reply::NOT_INTEGER),
    }),
    command!(String: "incrbyfloat", 3, WF, keys(1, 1, 1), ONE, |s, a, now| s.incr_by_float(a, now)),
    command!(String: "append", 3, WF, keys(1, 1, 1), ONE, |s, a, now| s.append(a, now)),
    command!(String: "strlen", 2, RF, keys(1, 1, 1), ONE, |s, a, now| match s.get_str(&a[1], now) {
        Ok(v) => Frame::Integer(v.map_or(0, |v| v.len() as i64)),
        Err(e) => e,
    }),
    command!(String: "getrange", 4, R, keys(1, 1, 1), ONE, |s, a, now| s.getrange(a, now)),
    command!(String: "substr", 4, R, keys(1, 1, 1), ONE, |s, a, now| s.getrange(a, now)),
    command!(String: "setrange", 4, W, keys(1, 1, 1), ONE, |s, a, now| s.setrange(a, now)),
];

fn setnx(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    if s.ks.contains(&args[1], now) {
        Frame::Integer(0)
    } else {
        s.put(&args[1], &args[2], 0);
        s.log_args(args);
        Frame::Integer(1)
    }
}

fn getset(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    let old = match s.get_str(&args[1], now) {
        Ok(v) => v,
        Err(e) => return e,
    };
    s.put(&args[1], &args[2], 0);
    s.log_derived(&[b"SET", &args[1], &args[2]]);
    old.map_or(Frame::Null, Frame::Bulk)
}

fn getdel(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    match s.get_str(&args[1], now) {
        Ok(Some(v)) => {
            s.ks.remove(&args[1]);
            s.log_del(&args[1]);
            Frame::Bulk(v)
        }
        Ok(None) => Frame::Null,
        Err(e) => e,
    }
}

fn mget(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    Frame::Array(
        args[1..]
            .iter()
            .map(|k| match s.get_str(k, now) {
                Ok(Some(v)) => Frame::Bulk(v),
                _ => Frame::Null,
            })
            .collect(),
    )
}

fn mset(s: &mut Store, args: &[Bytes], _now: u64) -> Frame {
    for pair in args[1..].chunks(2) {
        s.put(&pair[0], &pair[1], 0);
    }
    s.log_args(args);
    Frame::OK
}

fn msetnx(s: &mut Store, args: &[Bytes], now: u64) -> Frame {
    if args[1..].chunks(2).any(|p| s.ks.contains(&p[0], now)) {
        return Frame::Integer(0);
    }
    mset(s, args, now);
    Frame::Integer(1)
}

impl Store {
    /// The absolute deadline an EX/PX/EXAT/PXAT `option` with `value` names.
    fn expiry_option(cmd: &str, option: &[u8], value: &[u8], now: u64) -> Result<u64, Frame> {
        let unit = if eq(option, "ex") || eq(option, "exat") {
            1000
        } else {
            1
        };
        let absolute = eq(option, "exat") || eq(option, "pxat");
        Self::deadline(cmd, unit, absolute, value, now)
    }

    /// SETEX (`unit` 1000) and PSETEX (`unit` 1): SET with a relative deadline.
    fn setex(&mut self, args: &[Bytes], unit: i64, now: u64) -> Frame {
        let Some(t) = parse_i64(&args[2]) else {
            return err(reply::NOT_INTEGER);
        };
        match t
            .checked_mul(unit)
            .filter(|&m| t > 0 && m > 0)
            .and_then(|m| (now as i64).checked_add(m))
        {
            Some(at) => {
                let at = at as u64;
                self.put(&args[1], &args[3], at);
                self.log_set(&args[1], &args[3], at);
                Frame::OK
            }
            None => reply::invalid_expire(self.current()),
        }
    }

    /// Stores a copy of `value`, never a slice of a request buffer (the keyspace must not pin
    /// a connection's read buffer; the log record may: it is written in this turn, or held
    /// only until the transaction's commit). A short value is copied inline: no allocation.
    fn put(&mut self, key: &[u8], value: &[u8], expire_at: u64) {
        self.ks
            .insert(key, Value::Str(Str::copy_from(value)), expire_at);
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
            } else if is_expiry_option(a) && expiry == Expiry::None && has_next {
                match Self::expiry_option("set", a, &args[i + 1], now) {
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
        self.put(key, &args[2], expire_at);
        self.log_set(key, &args[2], expire_at);
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
            } else if is_expiry_option(a) && expiry == Expiry::Keep && i + 1 < args.len() {
                match Self::expiry_option("getex", a, &args[i + 1], now) {
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
                self.log_derived(&[b"PEXPIREAT", key, at.to_string().as_bytes()]);
            }
            Expiry::Persist if self.ks.get(key, now).is_some_and(|e| e.expire_at != 0) => {
                self.ks.set_expire(key, 0);
                self.log_derived(&[b"PERSIST", key]);
            }
            _ => {}
        }
        Frame::Bulk(v)
    }

    fn incr_by(&mut self, args: &[Bytes], delta: i64, now: u64) -> Frame {
        let key = &args[1];
        // One lookup: the number is read and replaced in place (its deadline stays).
        let (new, v, expire_at) = match self.ks.live(key, now) {
            Some(live) => {
                let entry = live.entry();
                let cur = match &entry.value {
                    Value::Str(b) => match parse_i64(b) {
                        Some(v) => v,
                        None => return err(reply::NOT_INTEGER),
                    },
                    _ => return err(reply::WRONGTYPE),
                };
                let expire_at = entry.expire_at;
                let Some(new) = cur.checked_add(delta) else {
                    return err(reply::OVERFLOW);
                };
                let v = int_bytes(new);
                live.modify(|value| *value = Value::Str(Str::from_bytes(&v)));
                (new, v, expire_at)
            }
            None => {
                let v = int_bytes(delta);
                self.ks.insert(key, Value::Str(Str::from_bytes(&v)), 0);
                (delta, v, 0)
            }
        };
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
        self.ks
            .insert(key, Value::Str(Str::from_bytes(&v)), expire_at);
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
                *b = Str::from_bytes(&m.freeze());
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
        self.ks.insert(
            &args[1],
            Value::Str(Str::from_bytes(&m.freeze())),
            expire_at,
        );
        self.log_args(args);
        Frame::Integer(new_len as i64)
    }
}
