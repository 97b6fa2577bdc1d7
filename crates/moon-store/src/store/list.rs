//! List commands (LPUSH, RPOP, LRANGE, LMOVE, ...), on one shard. LMOVE, RPOPLPUSH and LMPOP
//! whose keys live on several shards are run by the server across shards with these same
//! commands (a pop, then a push).
//!
//! Logged forms: every write as sent when it changed something (given the list before it,
//! each is deterministic: a pop takes from an end, LREM and LINSERT find the same elements on
//! replay), except LMPOP, logged as the LPOP/RPOP of the key it popped from, and LMOVE /
//! RPOPLPUSH between two keys of this shard, logged as sent (both keys are here).

use std::borrow::Cow;

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, parse_i64, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::reply::{self, err};
use crate::value::{List, Value};

/// The list family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(List: "lpush", -3, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.push(a, now, End::Left, true))),
    command!(List: "rpush", -3, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.push(a, now, End::Right, true))),
    command!(List: "lpushx", -3, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.push(a, now, End::Left, false))),
    command!(List: "rpushx", -3, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.push(a, now, End::Right, false))),
    command!(List: "lpop", -2, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.pop(a, now, End::Left))),
    command!(List: "rpop", -2, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.pop(a, now, End::Right))),
    command!(List: "llen", 2, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.list_ref(&a[1], now).map(|l| Frame::Integer(l.map_or(0, |l| l.len() as i64))))
    }),
    command!(List: "lrange", 4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.lrange(a, now))),
    command!(List: "lindex", 3, R, keys(1, 1, 1), ONE, |s, a, now| either(s.lindex(a, now))),
    command!(List: "lset", 4, W, keys(1, 1, 1), ONE, |s, a, now| either(s.lset(a, now))),
    command!(List: "linsert", 5, W, keys(1, 1, 1), ONE, |s, a, now| either(s.linsert(a, now))),
    command!(List: "lrem", 4, WNOOM, keys(1, 1, 1), ONE, |s, a, now| either(s.lrem(a, now))),
    command!(List: "ltrim", 4, WNOOM, keys(1, 1, 1), ONE, |s, a, now| either(s.ltrim(a, now))),
    command!(List: "lpos", -3, R, keys(1, 1, 1), ONE, |s, a, now| either(s.lpos(a, now))),
    command!(List: "lmove", 5, W, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.lmove(a, now))),
    command!(List: "rpoplpush", 3, W, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.rpoplpush(a, now))),
    command!(List: "lmpop", -4, WNOOM, numkeys at 1, COORDINATED, |s, a, now| either(s.lmpop(a, now))),
    command!(List: "blpop", -3, WB, keys(1, -2, 1), COORDINATED, |s, a, now| either(s.list_blocking(a, now))),
    command!(List: "brpop", -3, WB, keys(1, -2, 1), COORDINATED, |s, a, now| either(s.list_blocking(a, now))),
    command!(List: "brpoplpush", 4, WDB, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.list_blocking(a, now))),
    command!(List: "blmove", 6, WDB, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.list_blocking(a, now))),
    command!(List: "blmpop", -5, WB, numkeys at 2, COORDINATED, |s, a, now| either(s.list_blocking(a, now))),
];

/// Which end of a list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum End {
    Left,
    Right,
}

impl End {
    /// LEFT or RIGHT, as LMOVE and LMPOP take them.
    pub fn parse(word: &[u8]) -> Option<End> {
        if eq(word, "left") {
            Some(End::Left)
        } else if eq(word, "right") {
            Some(End::Right)
        } else {
            None
        }
    }

    /// The pop command that takes from this end.
    pub fn pop_command(self) -> &'static [u8] {
        match self {
            End::Left => b"LPOP",
            End::Right => b"RPOP",
        }
    }

    /// The push command that adds at this end.
    pub fn push_command(self) -> &'static [u8] {
        match self {
            End::Left => b"LPUSH",
            End::Right => b"RPUSH",
        }
    }
}

/// An index from the end when negative (Redis's list indexes), within `0..len` or `None`.
fn index_in(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { len + i } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

/// LRANGE / LTRIM's `start stop` over a list of `len`: the inclusive range, or `None` if empty.
fn range_in(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let n = len as i64;
    let mut start = if start < 0 { n + start } else { start };
    let mut stop = if stop < 0 { n + stop } else { stop };
    start = start.max(0);
    stop = stop.min(n - 1);
    (n > 0 && start <= stop && start < n).then_some((start as usize, stop as usize))
}

fn int_arg(b: &[u8]) -> Result<i64, Frame> {
    parse_i64(b).ok_or_else(|| err(reply::NOT_INTEGER))
}

/// A pop's COUNT: a positive integer (0 allowed), as Redis words its error.
fn count_arg(b: &[u8]) -> Result<usize, Frame> {
    match parse_i64(b) {
        Some(n) if n >= 0 => Ok(n as usize),
        _ => Err(err("ERR value is out of range, must be positive")),
    }
}

fn array(items: Vec<Bytes>) -> Frame {
    Frame::Array(items.into_iter().map(Frame::Bulk).collect())
}

impl Store {
    /// The list at `key`: `Ok(None)` if there is none, WRONGTYPE if it holds another type.
    fn list_ref(&mut self, key: &[u8], now: u64) -> Result<Option<&List>, Frame> {
        match self.ks.get(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::List(l)) => Ok(Some(l)),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// Changes the list at `key` (see `Store::collection_write`; a list left empty goes).
    fn list_write<R>(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
        f: impl FnOnce(&mut List, &crate::value::Encodings) -> R,
    ) -> Result<Option<R>, Frame> {
        self.collection_write(key, now, create, f)
    }

    /// LPUSH/RPUSH (`create`) and LPUSHX/RPUSHX: the list's length after.
    fn push(&mut self, args: &[Bytes], now: u64, end: End, create: bool) -> Result<Frame, Frame> {
        let len = self.list_write(&args[1], now, create, |l, enc| {
            for v in &args[2..] {
                match end {
                    End::Left => l.push_front(v, enc),
                    End::Right => l.push_back(v, enc),
                }
            }
            l.len()
        })?;
        match len {
            Some(len) => {
                self.log_args(args);
                Ok(Frame::Integer(len as i64))
            }
            None => Ok(Frame::Integer(0)),
        }
    }

    /// LPOP/RPOP key [count].
    fn pop(&mut self, args: &[Bytes], now: u64, end: End) -> Result<Frame, Frame> {
        if args.len() > 3 {
            let name = if end == End::Left { "lpop" } else { "rpop" };
            return Err(reply::wrong_arity(name));
        }
        let count = args.get(2).map(|c| count_arg(c)).transpose()?;
        if self.list_ref(&args[1], now)?.is_none() {
            return Ok(match count {
                Some(_) => Frame::NullArray,
                None => Frame::Null,
            });
        }
        let popped = self.pop_n(&args[1], now, end, count.unwrap_or(1))?;
        if !popped.is_empty() {
            self.log_args(args);
        }
        Ok(match count {
            Some(_) => array(popped),
            None => popped.into_iter().next().map_or(Frame::Null, Frame::Bulk),
        })
    }

    /// Pops up to `n` elements from `end` of the list at `key` (logs nothing).
    fn pop_n(&mut self, key: &[u8], now: u64, end: End, n: usize) -> Result<Vec<Bytes>, Frame> {
        Ok(self
            .list_write(key, now, false, |l, _| {
                let mut out = Vec::with_capacity(n.min(l.len()));
                while out.len() < n {
                    let v = match end {
                        End::Left => l.pop_front(),
                        End::Right => l.pop_back(),
                    };
                    match v {
                        Some(v) => out.push(v),
                        None => break,
                    }
                }
                out
            })?
            .unwrap_or_default())
    }

    fn lrange(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (start, stop) = (int_arg(&args[2])?, int_arg(&args[3])?);
        let Some(l) = self.list_ref(&args[1], now)? else {
            return Ok(Frame::Array(Vec::new()));
        };
        let Some((from, to)) = range_in(start, stop, l.len()) else {
            return Ok(Frame::Array(Vec::new()));
        };
        Ok(Frame::Array(
            l.iter()
                .skip(from)
                .take(to - from + 1)
                .map(|v| Frame::Bulk(Bytes::copy_from_slice(&v)))
                .collect(),
        ))
    }

    fn lindex(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        // The key first, as Redis: a missing key is nil whatever the index.
        let Some(l) = self.list_ref(&args[1], now)? else {
            return Ok(Frame::Null);
        };
        let i = int_arg(&args[2])?;
        Ok(index_in(i, l.len())
            .and_then(|i| l.get(i))
            .map_or(Frame::Null, |v| Frame::Bulk(Bytes::copy_from_slice(&v))))
    }

    fn lset(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let i = int_arg(&args[2])?;
        let Some(len) = self.list_ref(&args[1], now)?.map(List::len) else {
            return Err(err(reply::NO_SUCH_KEY));
        };
        let Some(i) = index_in(i, len) else {
            return Err(err("ERR index out of range"));
        };
        self.list_write(&args[1], now, false, |l, _| l.set(i, &args[3]))?;
        self.log_args(args);
        Ok(Frame::OK)
    }

    fn linsert(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let after = if eq(&args[2], "after") {
            true
        } else if eq(&args[2], "before") {
            false
        } else {
            return Err(err(reply::SYNTAX));
        };
        let Some(l) = self.list_ref(&args[1], now)? else {
            return Ok(Frame::Integer(0));
        };
        let Some(at) = l.iter().position(|v| *v == args[3][..]) else {
            return Ok(Frame::Integer(-1));
        };
        let at = if after { at + 1 } else { at };
        let len = self
            .list_write(&args[1], now, false, |l, enc| {
                l.insert(at, &args[4], enc);
                l.len()
            })?
            .unwrap_or(0);
        self.log_args(args);
        Ok(Frame::Integer(len as i64))
    }

    fn lrem(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let count = int_arg(&args[2])?;
        let target = &args[3][..];
        let Some(l) = self.list_ref(&args[1], now)? else {
            return Ok(Frame::Integer(0));
        };
        // At most |count| matches: from the head for count > 0, from the tail for count < 0,
        // every one for 0. One pass over the list whatever the count (review finding: one
        // removal per match moved the rest each time, quadratic on a long list).
        let matches = l.iter().filter(|v| **v == *target).count();
        let limit = if count == 0 {
            matches
        } else {
            matches.min(count.unsigned_abs().min(usize::MAX as u64) as usize)
        };
        if limit == 0 {
            return Ok(Frame::Integer(0));
        }
        // The matches kept before the first removed one, counting from the head.
        let skip = if count < 0 { matches - limit } else { 0 };
        self.list_write(&args[1], now, false, |l, _| {
            l.remove_matches(target, skip, limit)
        })?;
        self.log_args(args);
        Ok(Frame::Integer(limit as i64))
    }

    fn ltrim(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (start, stop) = (int_arg(&args[2])?, int_arg(&args[3])?);
        let Some(len) = self.list_ref(&args[1], now)?.map(List::len) else {
            return Ok(Frame::OK);
        };
        let kept = range_in(start, stop, len);
        // Logged even when it removes nothing: watchers and the `ltrim` event see it, as in
        // Redis (the record replays as the same no-op).
        self.list_write(&args[1], now, false, |l, _| match kept {
            Some((from, to)) => l.keep(from, to),
            None => l.keep(1, 0),
        })?;
        self.log_args(args);
        Ok(Frame::OK)
    }

    /// LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len].
    fn lpos(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
        let mut i = 3;
        while i < args.len() {
            let Some(value) = args.get(i + 1) else {
                return Err(err(reply::SYNTAX));
            };
            if eq(&args[i], "rank") {
                rank = match parse_i64(value) {
                    Some(r) if r != i64::MIN => r,
                    _ => return Err(err("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")),
                };
                if rank == 0 {
                    return Err(err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"));
                }
            } else if eq(&args[i], "count") {
                // Redis answers a non-integer with the same text.
                match parse_i64(value) {
                    Some(n) if n >= 0 => count = Some(n as usize),
                    _ => return Err(err("ERR COUNT can't be negative")),
                }
            } else if eq(&args[i], "maxlen") {
                match parse_i64(value) {
                    Some(n) if n >= 0 => maxlen = n as usize,
                    _ => return Err(err("ERR MAXLEN can't be negative")),
                }
            } else {
                return Err(err(reply::SYNTAX));
            }
            i += 2;
        }
        let target = &args[2][..];
        let Some(l) = self.list_ref(&args[1], now)? else {
            return Ok(if count.is_some() {
                Frame::Array(Vec::new())
            } else {
                Frame::Null
            });
        };
        let scan = if maxlen == 0 { l.len() } else { maxlen };
        let wanted = match count {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => 1,
        };
        let skip = (rank.unsigned_abs() - 1) as usize;
        // From the head for a positive rank, from the tail for a negative one.
        let scanned: Box<dyn Iterator<Item = (usize, Cow<'_, [u8]>)>> = if rank > 0 {
            Box::new(l.iter().enumerate())
        } else {
            Box::new(l.iter().enumerate().rev())
        };
        let matches: Vec<usize> = scanned
            .take(scan)
            .filter(|(_, v)| **v == *target)
            .map(|(i, _)| i)
            .skip(skip)
            .take(wanted)
            .collect();
        Ok(match count {
            Some(_) => Frame::Array(
                matches
                    .into_iter()
                    .map(|i| Frame::Integer(i as i64))
                    .collect(),
            ),
            None => matches
                .first()
                .map_or(Frame::Null, |&i| Frame::Integer(i as i64)),
        })
    }

    /// LMOVE source destination LEFT|RIGHT LEFT|RIGHT, both keys on this shard.
    fn lmove(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (Some(from), Some(to)) = (End::parse(&args[3]), End::parse(&args[4])) else {
            return Err(err(reply::SYNTAX));
        };
        self.move_element(args, now, from, to)
    }

    fn rpoplpush(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        self.move_element(args, now, End::Right, End::Left)
    }

    fn move_element(
        &mut self,
        args: &[Bytes],
        now: u64,
        from: End,
        to: End,
    ) -> Result<Frame, Frame> {
        let (src, dst) = (&args[1], &args[2]);
        if self.list_ref(src, now)?.is_none() {
            return Ok(Frame::Null);
        }
        if src == dst {
            // A rotation, in place: the list never empties, so it keeps its deadline and no
            // `del` is announced (review finding: a pop then a push re-created the key).
            let moved = self.list_write(src, now, false, |l, enc| {
                let v = match from {
                    End::Left => l.pop_front(),
                    End::Right => l.pop_back(),
                }?;
                match to {
                    End::Left => l.push_front(&v, enc),
                    End::Right => l.push_back(&v, enc),
                }
                Some(v)
            })?;
            let Some(v) = moved.flatten() else {
                return Ok(Frame::Null);
            };
            self.log_args(args);
            return Ok(Frame::Bulk(v));
        }
        // The destination's type is checked before anything moves (as Redis does).
        self.list_ref(dst, now)?;
        let Some(v) = self.pop_n(src, now, from, 1)?.into_iter().next() else {
            return Ok(Frame::Null);
        };
        self.list_write(dst, now, true, |l, enc| match to {
            End::Left => l.push_front(&v, enc),
            End::Right => l.push_back(&v, enc),
        })?;
        self.log_args(args);
        Ok(Frame::Bulk(v))
    }

    /// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count], every key on this shard.
    /// A blocking list command, as its non-blocking form (see `store/blocking.rs`): nil when
    /// there was nothing to take.
    fn list_blocking(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let b = super::blocking::blocking_form(args)?;
        let reply = if eq(&b.args[0], "lmpop") {
            self.lmpop(&b.args, now)
        } else if eq(&b.args[0], "lmove") {
            self.lmove(&b.args, now)
        } else {
            self.rpoplpush(&b.args, now)
        }?;
        Ok(b.shape.apply(reply))
    }

    fn lmpop(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (keys, end, count) = lmpop_args(args)?;
        for key in keys {
            if self.list_ref(key, now)?.is_some() {
                let popped = self.pop_n(key, now, end, count)?;
                // Its effect, whose key follows its name (review finding: logged as if sent,
                // the key was looked for at LMPOP's positions, and watchers, tracking and
                // events missed it).
                let count = count.to_string();
                self.log_derived(&[end.pop_command(), key, count.as_bytes()]);
                return Ok(Frame::Array(vec![Frame::Bulk(key.clone()), array(popped)]));
            }
        }
        Ok(Frame::NullArray)
    }
}

/// LMPOP's arguments: its keys, the end and the count (1 if not given).
pub fn lmpop_args(args: &[Bytes]) -> Result<(&[Bytes], End, usize), Frame> {
    let n = match parse_i64(&args[1]) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(err("ERR numkeys should be greater than 0")),
    };
    if n > args.len().saturating_sub(3) {
        return Err(err(reply::SYNTAX));
    }
    let keys = &args[2..2 + n];
    let Some(end) = End::parse(&args[2 + n]) else {
        return Err(err(reply::SYNTAX));
    };
    let count = match &args[3 + n..] {
        [] => 1,
        [kw, c] if eq(kw, "count") => match parse_i64(c) {
            Some(c) if c > 0 => c as usize,
            _ => return Err(err("ERR count should be greater than 0")),
        },
        _ => return Err(err(reply::SYNTAX)),
    };
    Ok((keys, end, count))
}
