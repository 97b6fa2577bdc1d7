//! Set commands (SADD, SREM, SPOP, SINTER, ...), on one shard. The multi-key ones whose keys
//! live on several shards are run by the server across shards with these same commands and
//! [`Store::set_members`] as its read.
//!
//! Logged forms: SADD/SREM as sent when they changed something, SPOP as `SREM`s of the
//! members it picked (a random choice is logged as its effect; 512 members or 1 MiB per
//! `SREM`, one unit for the log), SMOVE and the *STORE commands as sent (given the state
//! before them they are deterministic).

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, parse_i64, scan_args, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::reply::{self, err};
use crate::value::{Chunk, Set, Value};

/// How sets combine.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SetOp {
    Inter,
    Union,
    Diff,
}

impl SetOp {
    /// Combines the members of each key in order (`None`: the key does not exist).
    pub fn apply(self, sets: Vec<Option<Vec<Bytes>>>) -> Vec<Bytes> {
        let mut iter = sets.into_iter();
        let first = iter.next().flatten().unwrap_or_default();
        match self {
            SetOp::Union => {
                let mut seen: indexmap::IndexSet<Bytes> = first.into_iter().collect();
                for s in iter.flatten() {
                    seen.extend(s);
                }
                seen.into_iter().collect()
            }
            SetOp::Inter => {
                let mut acc: indexmap::IndexSet<Bytes> = first.into_iter().collect();
                for s in iter {
                    let Some(s) = s else { return Vec::new() };
                    let other: std::collections::HashSet<Bytes> = s.into_iter().collect();
                    acc.retain(|m| other.contains(m));
                }
                acc.into_iter().collect()
            }
            SetOp::Diff => {
                let mut acc: indexmap::IndexSet<Bytes> = first.into_iter().collect();
                for s in iter.flatten() {
                    for m in s {
                        acc.shift_remove(&m);
                    }
                }
                acc.into_iter().collect()
            }
        }
    }

    pub fn of(name: &str) -> SetOp {
        if name.starts_with("sinter") {
            SetOp::Inter
        } else if name.starts_with("sunion") {
            SetOp::Union
        } else {
            SetOp::Diff
        }
    }
}

/// SINTERCARD's arguments: `numkeys key ... [LIMIT n]` → (number of keys, limit; 0 = none).
pub fn sintercard_args(args: &[Bytes]) -> Result<(usize, usize), Frame> {
    let n = parse_i64(&args[1]).unwrap_or(0);
    if n <= 0 {
        return Err(err("ERR numkeys should be greater than 0"));
    }
    let n = n as usize;
    if n > args.len() - 2 {
        return Err(err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let rest = &args[2 + n..];
    match rest {
        [] => Ok((n, 0)),
        [kw, limit] if super::eq(kw, "limit") => match parse_i64(limit) {
            Some(l) if l >= 0 => Ok((n, l as usize)),
            // Redis words both the same (getPositiveLongFromObjectOrReply).
            _ => Err(err("ERR LIMIT can't be negative")),
        },
        _ => Err(err(reply::SYNTAX)),
    }
}

fn members_frame(members: Vec<Bytes>) -> Frame {
    Frame::Set(members.into_iter().map(Frame::Bulk).collect())
}

/// The set family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Set: "sadd", -3, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.sadd(a, now))),
    command!(Set: "srem", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.srem(a, now))),
    command!(Set: "sismember", 3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.set_ref(&a[1], now).map(|s| Frame::Integer(i64::from(s.is_some_and(|s| s.contains(&a[2]))))))
    }),
    command!(Set: "smismember", -3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.set_ref(&a[1], now).map(|s| {
            Frame::Array(a[2..].iter().map(|m| Frame::Integer(i64::from(s.is_some_and(|s| s.contains(m))))).collect())
        }))
    }),
    command!(Set: "smembers", 2, R, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.set_ref(&a[1], now).map(|s| members_frame(s.map(Set::members).unwrap_or_default())))
    }),
    command!(Set: "scard", 2, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.set_ref(&a[1], now).map(|s| Frame::Integer(s.map_or(0, |s| s.len() as i64))))
    }),
    command!(Set: "spop", -2, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.spop(a, now))),
    command!(Set: "srandmember", -2, R, keys(1, 1, 1), ONE, |s, a, now| either(s.srandmember(a, now))),
    command!(Set: "smove", 4, WF, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.smove(a, now))),
    command!(Set: "sinter", -2, R, keys(1, -1, 1), COORDINATED, |s, a, now| combined(s, SetOp::Inter, a, now)),
    command!(Set: "sintercard", -3, R, numkeys at 1, COORDINATED, |s, a, now| either(s.sintercard(a, now))),
    command!(Set: "sinterstore", -3, W, keys(1, -1, 1), COORDINATED, |s, a, now| either(s.store_combined(SetOp::Inter, a, now))),
    command!(Set: "sunion", -2, R, keys(1, -1, 1), COORDINATED, |s, a, now| combined(s, SetOp::Union, a, now)),
    command!(Set: "sunionstore", -3, W, keys(1, -1, 1), COORDINATED, |s, a, now| either(s.store_combined(SetOp::Union, a, now))),
    command!(Set: "sdiff", -2, R, keys(1, -1, 1), COORDINATED, |s, a, now| combined(s, SetOp::Diff, a, now)),
    command!(Set: "sdiffstore", -3, W, keys(1, -1, 1), COORDINATED, |s, a, now| either(s.store_combined(SetOp::Diff, a, now))),
    command!(Set: "sscan", -3, R, keys(1, 1, 1), ONE, |s, a, now| either(s.sscan(a, now))),
];

/// SINTER, SUNION, SDIFF of keys on this shard.
fn combined(s: &mut Store, op: SetOp, args: &[Bytes], now: u64) -> Frame {
    either(s.combine(op, &args[1..], now).map(members_frame))
}

impl Store {
    /// The set at `key`: `Ok(None)` if there is none, WRONGTYPE if it holds another type.
    fn set_ref(&mut self, key: &[u8], now: u64) -> Result<Option<&Set>, Frame> {
        match self.ks.get(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Set(s)) => Ok(Some(s)),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// The members of the set at `key` without changing anything (no lazy expiry): the read
    /// half of a set command across shards. `Ok(None)`: no such key.
    pub fn set_members(&self, key: &[u8], now: u64) -> Result<Option<Vec<Bytes>>, Frame> {
        if self.type_at(key, now).is_none() {
            return Ok(None);
        }
        match self.ks.peek(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Set(s)) => Ok(Some(s.members())),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// Changes the set at `key` (see `Store::collection_write`).
    fn set_write<R>(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
        f: impl FnOnce(&mut Set, &crate::value::Encodings) -> R,
    ) -> Result<Option<R>, Frame> {
        self.collection_write(key, now, create, f)
    }

    fn sadd(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let added = self
            .set_write(&args[1], now, true, |s, enc| {
                args[2..].iter().filter(|m| s.insert(m, enc)).count()
            })?
            .unwrap_or(0);
        if added > 0 {
            self.log_args(args);
        }
        Ok(Frame::Integer(added as i64))
    }

    fn srem(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let removed = self
            .set_write(&args[1], now, false, |s, _| {
                args[2..].iter().filter(|m| s.remove(m)).count()
            })?
            .unwrap_or(0);
        if removed > 0 {
            self.log_args(args);
        }
        Ok(Frame::Integer(removed as i64))
    }

    fn spop(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if args.len() > 3 {
            return Err(err(reply::SYNTAX));
        }
        let count = match args.get(2) {
            None => None,
            Some(c) => match parse_i64(c) {
                Some(n) if n >= 0 => Some(n),
                _ => return Err(err("ERR value is out of range, must be positive")),
            },
        };
        let mut seed = self.next_seed(now);
        let Some(set) = self.set_ref(&args[1], now)? else {
            return Ok(if count.is_some() {
                members_frame(Vec::new())
            } else {
                Frame::Null
            });
        };
        let picks = super::random_picks(set.len(), count.or(Some(1)), &mut seed);
        let chosen: Vec<Bytes> = picks.into_iter().filter_map(|i| set.at(i)).collect();
        if !chosen.is_empty() {
            self.set_write(&args[1], now, false, |s, _| {
                for m in &chosen {
                    s.remove(m);
                }
            })?;
            // One SREM per chunk of popped members, so that no logged command grows with the
            // count; the writer logs them together as one unit (over several records if need
            // be). The first announces the pop; the rest only reach the log.
            for (i, part) in Chunk::REWRITE.split(&chosen, |m| m.len()).enumerate() {
                let mut logged = vec![Bytes::from_static(b"SREM"), args[1].clone()];
                logged.extend(part.iter().cloned());
                if i == 0 {
                    self.log_args(&logged);
                } else {
                    self.log_more(logged);
                }
            }
        }
        Ok(match count {
            None => chosen.into_iter().next().map_or(Frame::Null, Frame::Bulk),
            Some(_) => members_frame(chosen),
        })
    }

    fn srandmember(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if args.len() > 3 {
            return Err(err(reply::SYNTAX));
        }
        let count = match args.get(2) {
            None => None,
            Some(c) => Some(parse_i64(c).ok_or_else(|| err(reply::NOT_INTEGER))?),
        };
        if count.is_some_and(|c| c < 0 && c.unsigned_abs() > super::MAX_RANDOM_REPEATS) {
            return Err(err("ERR value is out of range"));
        }
        let mut seed = self.next_seed(now);
        let Some(set) = self.set_ref(&args[1], now)? else {
            return Ok(if count.is_some() {
                Frame::Array(Vec::new())
            } else {
                Frame::Null
            });
        };
        let picks = super::random_picks(set.len(), count, &mut seed);
        let chosen: Vec<Frame> = picks
            .into_iter()
            .filter_map(|i| set.at(i))
            .map(Frame::Bulk)
            .collect();
        Ok(match count {
            None => chosen.into_iter().next().unwrap_or(Frame::Null),
            Some(_) => Frame::Array(chosen),
        })
    }

    fn smove(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (src, dst, m) = (&args[1], &args[2], &args[3]);
        let Some(from) = self.set_ref(src, now)? else {
            return Ok(Frame::Integer(0));
        };
        let present = from.contains(m);
        self.set_ref(dst, now)?;
        if !present {
            return Ok(Frame::Integer(0));
        }
        if src != dst {
            self.set_write(src, now, false, |s, _| s.remove(m))?;
            let added = self.set_write(dst, now, true, |s, enc| s.insert(m, enc))?;
            if added == Some(true) {
                self.log_args(args);
            } else {
                // The destination had it: the move is a removal, logged and announced as one
                // (Redis notifies the destination only when the addition happened).
                self.log_derived(&[b"SREM", src, m]);
            }
        }
        Ok(Frame::Integer(1))
    }

    /// The members of each key, combined: a wrong type anywhere is an error; an intersection
    /// with a missing key is empty.
    fn combine(&mut self, op: SetOp, keys: &[Bytes], now: u64) -> Result<Vec<Bytes>, Frame> {
        // Every key's type first, as Redis checks them, then the members.
        for k in keys {
            self.set_ref(k, now)?;
        }
        let mut sets = Vec::with_capacity(keys.len());
        for k in keys {
            sets.push(self.set_ref(k, now)?.map(Set::members));
        }
        Ok(op.apply(sets))
    }

    fn store_combined(&mut self, op: SetOp, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let members = self.combine(op, &args[2..], now)?;
        let dst = &args[1];
        let n = members.len();
        let existed = self.ks.contains(dst, now);
        self.ks.remove(dst);
        if n > 0 {
            self.set_write(dst, now, true, |s, enc| {
                for m in &members {
                    s.insert(m, enc);
                }
            })?;
        }
        if n > 0 || existed {
            self.log_args(args);
        }
        Ok(Frame::Integer(n as i64))
    }

    fn sintercard(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (n, limit) = sintercard_args(args)?;
        let members = self.combine(SetOp::Inter, &args[2..2 + n], now)?;
        let card = if limit > 0 {
            members.len().min(limit)
        } else {
            members.len()
        };
        Ok(Frame::Integer(card as i64))
    }

    fn sscan(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let opts = scan_args(&args[2], &args[3..], false)?;
        let Some(s) = self.set_ref(&args[1], now)? else {
            return Ok(super::scan_reply(0, Vec::new()));
        };
        let (positions, next) =
            super::scan_positions(s.len(), s.is_compact(), opts.cursor, opts.count);
        let out = positions
            .filter_map(|i| s.at(i))
            .filter(|m| opts.pattern.is_none_or(|p| crate::glob::glob_match(p, m)))
            .map(Frame::Bulk)
            .collect();
        Ok(super::scan_reply(next, out))
    }
}
