//! Hash commands (HSET, HGET, HINCRBY, HSCAN, ...).
//!
//! Logged forms: HSET/HMSET/HSETNX as `HSET key field value ...` of what was set, HINCRBY and
//! HINCRBYFLOAT as `HSET` of the result, HDEL as sent when it removed something. A hash whose
//! last field goes is removed with it, live and in replay alike.

use bytes::Bytes;
use moon_proto::Frame;

use super::{eq, parse_f64, parse_i64, scan_args, Store};
use crate::command::CommandSpec;
use crate::reply::{self, err};
use crate::value::{Hash, Value};

impl Store {
    /// The hash at `key`: `Ok(None)` if there is none, WRONGTYPE if it holds another type.
    fn hash(&mut self, key: &[u8], now: u64) -> Result<Option<&Hash>, Frame> {
        match self.ks.get(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Hash(h)) => Ok(Some(h)),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// Changes the hash at `key` (created empty first if `create`), keeping the memory account
    /// and removing the key if the hash ends up empty. `Ok(None)`: no such hash.
    fn hash_write<R>(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
        f: impl FnOnce(&mut Hash, &crate::value::Encodings) -> R,
    ) -> Result<Option<R>, Frame> {
        match self.ks.get(key, now).map(|e| &e.value) {
            Some(Value::Hash(_)) => {}
            Some(_) => return Err(err(reply::WRONGTYPE)),
            None if create => self.ks.insert(key, Value::Hash(Hash::default()), 0),
            None => return Ok(None),
        }
        let enc = self.encodings;
        let (result, empty) = self
            .ks
            .modify(key, now, |v| match v {
                Value::Hash(h) => {
                    let r = f(h, &enc);
                    (Some(r), h.is_empty())
                }
                _ => (None, false),
            })
            .unwrap_or((None, false));
        if empty {
            self.ks.remove(key);
        }
        Ok(result)
    }

    pub(super) fn hash_command(&mut self, spec: &CommandSpec, args: &[Bytes], now: u64) -> Frame {
        let key = &args[1];
        let result = match spec.name {
            "hset" | "hmset" => self.hset(spec, args, now),
            "hsetnx" => self.hsetnx(args, now),
            "hget" => self.hash(key, now).map(|h| {
                h.and_then(|h| h.get(&args[2]))
                    .cloned()
                    .map_or(Frame::Null, Frame::Bulk)
            }),
            "hmget" => self.hash(key, now).map(|h| {
                Frame::Array(
                    args[2..]
                        .iter()
                        .map(|f| {
                            h.and_then(|h| h.get(f))
                                .cloned()
                                .map_or(Frame::Null, Frame::Bulk)
                        })
                        .collect(),
                )
            }),
            "hgetall" => self.hash(key, now).map(|h| {
                Frame::Map(
                    h.map(|h| {
                        h.iter()
                            .map(|(f, v)| (Frame::Bulk(f.clone()), Frame::Bulk(v.clone())))
                            .collect()
                    })
                    .unwrap_or_default(),
                )
            }),
            "hkeys" | "hvals" => self.hash(key, now).map(|h| {
                let keys = spec.name == "hkeys";
                Frame::Array(
                    h.map(|h| {
                        h.iter()
                            .map(|(f, v)| Frame::Bulk(if keys { f.clone() } else { v.clone() }))
                            .collect()
                    })
                    .unwrap_or_default(),
                )
            }),
            "hexists" => self
                .hash(key, now)
                .map(|h| Frame::Integer(i64::from(h.is_some_and(|h| h.get(&args[2]).is_some())))),
            "hlen" => self
                .hash(key, now)
                .map(|h| Frame::Integer(h.map_or(0, |h| h.len() as i64))),
            "hstrlen" => self.hash(key, now).map(|h| {
                Frame::Integer(
                    h.and_then(|h| h.get(&args[2]))
                        .map_or(0, |v| v.len() as i64),
                )
            }),
            "hdel" => self.hdel(args, now),
            "hincrby" => self.hincrby(args, now),
            "hincrbyfloat" => self.hincrbyfloat(args, now),
            "hrandfield" => self.hrandfield(args, now),
            "hscan" => self.hscan(args, now),
            _ => Ok(reply::unknown_command(args)),
        };
        result.unwrap_or_else(|e| e)
    }

    fn hset(&mut self, spec: &CommandSpec, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if !args.len().is_multiple_of(2) {
            return Ok(reply::wrong_arity(spec.name));
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
        self.log_cmd(&logged);
        Ok(if spec.name == "hmset" {
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
        self.log_cmd(&[b"HSET", &args[1], &args[2], &args[3]]);
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
        self.hash_write(&args[1], now, true, |h, enc| {
            h.set(&args[2], text.as_bytes(), enc)
        })?;
        self.log_cmd(&[b"HSET", &args[1], &args[2], text.as_bytes()]);
        Ok(Frame::Integer(new))
    }

    fn hincrbyfloat(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let Some(delta) = parse_f64(&args[3]) else {
            return Err(err(reply::NOT_FLOAT));
        };
        let current = match self.hash(&args[1], now)?.and_then(|h| h.get(&args[2])) {
            None => 0.0,
            Some(v) => parse_f64(v).ok_or_else(|| err("ERR hash value is not a float"))?,
        };
        let new = current + delta;
        if !new.is_finite() {
            return Err(err(reply::NAN_OR_INF));
        }
        let text = moon_proto::frame::format_double(new);
        self.hash_write(&args[1], now, true, |h, enc| {
            h.set(&args[2], text.as_bytes(), enc)
        })?;
        self.log_cmd(&[b"HSET", &args[1], &args[2], text.as_bytes()]);
        Ok(Frame::Bulk(Bytes::from(text)))
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
        if count.is_some_and(|c| c.unsigned_abs() > (i64::MAX / 2) as u64) {
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
                .map_or(Frame::Null, |(f, _)| Frame::Bulk(f.clone())));
        };
        let entries = picks.into_iter().filter_map(|i| h.at(i));
        Ok(if with_values {
            Frame::Pairs(
                entries
                    .map(|(f, v)| (Frame::Bulk(f.clone()), Frame::Bulk(v.clone())))
                    .collect(),
            )
        } else {
            Frame::Array(entries.map(|(f, _)| Frame::Bulk(f.clone())).collect())
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
        for (f, v) in positions.filter_map(|i| h.at(i)) {
            if opts.pattern.is_none_or(|p| crate::glob::glob_match(p, f)) {
                out.push(Frame::Bulk(f.clone()));
                if !opts.no_values {
                    out.push(Frame::Bulk(v.clone()));
                }
            }
        }
        Ok(super::scan_reply(next, out))
    }
}
