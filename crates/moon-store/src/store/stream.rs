//! Stream commands (XADD XLEN XRANGE XREVRANGE XDEL XTRIM XREAD XSETID), consumer groups
//! (XGROUP XREADGROUP XACK XPENDING XCLAIM XAUTOCLAIM) and XINFO, on one shard.
//!
//! Logged forms are effects that replay exactly whatever the clock says at replay (replay
//! runs with `now` = 0):
//! - XADD as `XADD key <the id chosen> field value ...`, its trimming as `XTRIM key MAXLEN =
//!   <length after>` (a `~` trim removes whole nodes, which replay must not have to guess);
//! - XTRIM as that same exact `XTRIM`; XDEL, XSETID, XACK and the XGROUP subcommands as sent;
//! - a delivery (XREADGROUP, XCLAIM, XAUTOCLAIM) as `XCLAIM key group consumer 0 <id> TIME
//!   <ms> RETRYCOUNT <n> FORCE JUSTID` per entry, a consumer it created as `XGROUP
//!   CREATECONSUMER`, the group's new last id as `XGROUP SETID key group <id> ENTRIESREAD <n>`,
//!   and a pending entry dropped because its entry is gone as `XACK`.
//!
//! Replay reproduces entries, counters, groups, pending entries with their delivery times
//! and counts, and consumers; a consumer's seen time (XINFO CONSUMERS' idle) is restored
//! from its last logged delivery, not exactly.

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, parse_i64, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::command::Flags;
use crate::reply::{self, err};
use crate::value::stream::{Group, NodeLimits, Stream, StreamId, Trim};
use crate::value::Value;

/// The stream family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Stream: "xadd", -5, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.xadd(a, now))),
    command!(Stream: "xlen", 2, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.xlen(a, now))),
    command!(Stream: "xrange", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.xrange(a, now, false))),
    command!(Stream: "xrevrange", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.xrange(a, now, true))),
    command!(Stream: "xdel", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.xdel(a, now))),
    command!(Stream: "xtrim", -4, WNOOM, keys(1, 1, 1), ONE, |s, a, now| either(s.xtrim(a, now))),
    command!(Stream: "xread", -4, R.union(Flags::BLOCKING).union(Flags::STREAMS_KEYS), keys(0, 0, 0), COORDINATED, |s, a, now| either(s.xread(a, now, false))),
    command!(Stream: "xreadgroup", -7, WNOOM.union(Flags::BLOCKING).union(Flags::STREAMS_KEYS), keys(0, 0, 0), COORDINATED, |s, a, now| either(s.xread(a, now, true))),
    command!(Stream: "xsetid", -3, W, keys(1, 1, 1), ONE, |s, a, now| either(s.xsetid(a, now))),
    command!(Stream: "xgroup", -2, WNOOM, keys(2, 2, 1), ONE, |s, a, now| either(s.xgroup(a, now))),
    command!(Stream: "xack", -4, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.xack(a, now))),
    command!(Stream: "xpending", -3, R, keys(1, 1, 1), ONE, |s, a, now| either(s.xpending(a, now))),
    command!(Stream: "xclaim", -6, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.xclaim(a, now))),
    command!(Stream: "xautoclaim", -6, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.xautoclaim(a, now))),
    command!(Stream: "xinfo", -2, R, keys(2, 2, 1), ONE, |s, a, now| either(s.xinfo(a, now))),
];

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// Parses an id: `-` and `+` (unless `strict`), `ms` (seq = `missing_seq`), `ms-seq`.
fn parse_id(b: &[u8], missing_seq: u64, strict: bool) -> Result<StreamId, Frame> {
    if b.len() > 127 {
        return Err(err(INVALID_ID));
    }
    match b {
        b"-" | b"+" if strict => return Err(err(INVALID_ID)),
        b"-" => return Ok(StreamId::MIN),
        b"+" => return Ok(StreamId::MAX),
        _ => {}
    }
    let u = |p: &[u8]| -> Result<u64, Frame> {
        // string2ull: digits only (a leading '-' is refused), no overflow.
        if p.is_empty() || p.len() > 20 || !p.iter().all(u8::is_ascii_digit) {
            return Err(err(INVALID_ID));
        }
        std::str::from_utf8(p)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| err(INVALID_ID))
    };
    match b.iter().position(|&c| c == b'-') {
        Some(dash) => Ok(StreamId::new(u(&b[..dash])?, u(&b[dash + 1..])?)),
        None => Ok(StreamId::new(u(b)?, missing_seq)),
    }
}

/// An interval bound: `(id` excludes it.
fn parse_bound(b: &[u8], missing_seq: u64, start: bool) -> Result<StreamId, Frame> {
    if b.len() > 1 && b[0] == b'(' {
        let id = parse_id(&b[1..], missing_seq, true)?;
        return if start {
            id.incr()
                .ok_or_else(|| err("ERR invalid start ID for the interval"))
        } else {
            id.decr()
                .ok_or_else(|| err("ERR invalid end ID for the interval"))
        };
    }
    parse_id(b, missing_seq, false)
}

fn int_arg(b: &[u8]) -> Result<i64, Frame> {
    parse_i64(b).ok_or_else(|| err(reply::NOT_INTEGER))
}

fn entry_frame(id: StreamId, pairs: Vec<Bytes>) -> Frame {
    Frame::Array(vec![
        Frame::Bulk(id.to_bytes()),
        Frame::Array(pairs.into_iter().map(Frame::Bulk).collect()),
    ])
}

fn entries_frame(entries: Vec<(StreamId, Vec<Bytes>)>) -> Frame {
    Frame::Array(
        entries
            .into_iter()
            .map(|(id, p)| entry_frame(id, p))
            .collect(),
    )
}

fn id_frame(id: StreamId) -> Frame {
    Frame::Bulk(id.to_bytes())
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn no_group(key: &[u8], group: &[u8]) -> Frame {
    Frame::Error(format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    ))
}

/// XADD's and XTRIM's options.
struct TrimArgs {
    trim: Option<Trim>,
    approx: bool,
    limit: u64,
    nomkstream: bool,
    /// XADD: where the id is, and the id (`None` = `*`) with whether its sequence was given.
    id_at: usize,
    id: Option<(StreamId, bool)>,
}

fn parse_trim_args(args: &[Bytes], xadd: bool, node_entries: usize) -> Result<TrimArgs, Frame> {
    let mut t = TrimArgs {
        trim: None,
        approx: false,
        limit: 0,
        nomkstream: false,
        id_at: 0,
        id: None,
    };
    let mut limit_given = false;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let a = &args[i];
        if xadd && a.as_ref() == b"*" {
            break;
        } else if (eq(a, "maxlen") || eq(a, "minid")) && more > 0 {
            if t.trim.is_some() {
                return Err(err("ERR syntax error, MAXLEN and MINID options at the same time are not compatible"));
            }
            t.approx = false;
            let next = &args[i + 1];
            if more >= 2 && next.as_ref() == b"~" {
                t.approx = true;
                i += 1;
            } else if more >= 2 && next.as_ref() == b"=" {
                i += 1;
            }
            if eq(a, "maxlen") {
                let n = int_arg(&args[i + 1])?;
                if n < 0 {
                    return Err(err("ERR The MAXLEN argument must be >= 0."));
                }
                t.trim = Some(Trim::MaxLen(n as u64));
            } else {
                t.trim = Some(Trim::MinId(parse_id(&args[i + 1], 0, true)?));
            }
            i += 1;
        } else if eq(a, "limit") && more > 0 {
            let n = int_arg(&args[i + 1])?;
            if n < 0 {
                return Err(err("ERR The LIMIT argument must be >= 0."));
            }
            t.limit = n as u64;
            limit_given = true;
            i += 1;
        } else if xadd && eq(a, "nomkstream") {
            t.nomkstream = true;
        } else if xadd {
            // The id, `ms-*` included.
            let (id, seq_given) = match a.strip_suffix(b"-*") {
                Some(ms) if !ms.is_empty() && !ms.contains(&b'-') => {
                    (parse_id(ms, 0, true)?, false)
                }
                _ => (parse_id(a, 0, true)?, true),
            };
            t.id = Some((id, seq_given));
            break;
        } else {
            return Err(err(reply::SYNTAX));
        }
        i += 1;
    }
    t.id_at = i;
    if t.limit > 0 && t.trim.is_none() {
        return Err(err(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && t.trim.is_none() {
        return Err(err(
            "ERR syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if limit_given {
        if !t.approx {
            return Err(err(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
    } else if t.approx {
        t.limit = (100 * node_entries as u64).clamp(1, 1_000_000);
        if node_entries == 0 {
            t.limit = 10_000;
        }
    }
    Ok(t)
}

/// A new entry's id: given, `ms-*`, or from the clock after the last one.
fn next_id(s: &Stream, given: Option<(StreamId, bool)>, now: u64) -> Result<StreamId, Frame> {
    let id = match given {
        Some((id, true)) => id,
        Some((id, false)) => {
            if s.last_id.ms == id.ms {
                if s.last_id.seq == u64::MAX {
                    return Err(err("ERR The ID specified in XADD is equal or smaller than the target stream top item"));
                }
                StreamId::new(id.ms, s.last_id.seq + 1)
            } else {
                id
            }
        }
        None => {
            if now > s.last_id.ms {
                StreamId::new(now, 0)
            } else {
                s.last_id.incr().unwrap_or(StreamId::MIN)
            }
        }
    };
    if id <= s.last_id {
        return Err(err(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        ));
    }
    Ok(id)
}

impl Store {
    /// The last id of the stream at `key` (`0-0` without one): what XREAD's `$` means now,
    /// made concrete before a blocked XREAD waits (its retries must not move it).
    pub fn stream_last_id(&self, key: &[u8], now: u64) -> Bytes {
        match self.ks.peek(key, now).map(|e| &e.value) {
            Some(Value::Stream(s)) => s.last_id.to_bytes(),
            _ => Bytes::from_static(b"0-0"),
        }
    }

    /// Whether XREAD/XREADGROUP would accept stream `key` with id `id` (its type, its group,
    /// the id), without changing anything: an XREADGROUP over several shards checks every
    /// key first, as Redis does, so that no shard delivers before another refuses.
    pub fn check_stream_read(
        &self,
        key: &[u8],
        id: &[u8],
        group: Option<&[u8]>,
        now: u64,
    ) -> Result<(), Frame> {
        let s = match self.ks.peek(key, now).map(|e| &e.value) {
            None => None,
            Some(Value::Stream(s)) => Some(s),
            Some(_) => return Err(err(reply::WRONGTYPE)),
        };
        if let Some(g) = group {
            if !s.is_some_and(|s| s.groups.contains_key(g)) {
                return Err(Frame::Error(format!(
                    "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(g)
                )));
            }
        }
        match id {
            b"$" if group.is_some() => Err(err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.")),
            b">" if group.is_none() => Err(err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.")),
            b"$" | b">" => Ok(()),
            _ => parse_id(id, 0, true).map(|_| ()),
        }
    }

    fn limits(&self) -> NodeLimits {
        NodeLimits {
            max_bytes: self.encodings.stream_node_max_bytes,
            max_entries: self.encodings.stream_node_max_entries,
        }
    }

    /// The stream at `key` (WRONGTYPE for another type).
    fn stream_ref(&mut self, key: &[u8], now: u64) -> Result<Option<&Stream>, Frame> {
        match self.ks.get(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Stream(s)) => Ok(Some(s)),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// Changes the stream at `key` in place (it must exist and be a stream).
    fn stream_mut<R>(
        &mut self,
        key: &[u8],
        now: u64,
        f: impl FnOnce(&mut Stream) -> R,
    ) -> Option<R> {
        self.ks.modify(key, now, |v| match v {
            Value::Stream(s) => Some(f(s)),
            _ => None,
        })?
    }

    fn log_parts(&mut self, parts: Vec<Bytes>) {
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        self.log_derived(&refs);
    }

    fn xadd(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let t = parse_trim_args(args, true, self.encodings.stream_node_max_entries)?;
        let fields = args.len().saturating_sub(t.id_at + 1);
        if fields < 2 || fields % 2 == 1 {
            return Err(Frame::Error(format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(&args[0]).to_ascii_lowercase()
            )));
        }
        if let Some((id, true)) = t.id {
            if id.is_zero() {
                return Err(err("ERR The ID specified in XADD must be greater than 0-0"));
            }
        }
        // One lookup: whether the stream exists and the id this entry gets.
        let (exists, id) =
            match self.stream_ref(&args[1], now)? {
                None if t.nomkstream => return Ok(Frame::Null),
                None => (false, next_id(&Stream::default(), t.id, now)?),
                Some(s) if s.last_id == StreamId::MAX => return Err(err(
                    "ERR The stream has exhausted the last possible ID, unable to add more items",
                )),
                Some(s) => (true, next_id(s, t.id, now)?),
            };
        if !exists {
            self.ks.insert(&args[1], Value::Stream(Box::default()), 0);
        }
        let limits = self.limits();
        let pairs = &args[t.id_at + 1..];
        let trimmed = self
            .stream_mut(&args[1], now, |s| {
                s.append(id, pairs, limits);
                t.trim
                    .map(|trim| (s.trim(trim, t.approx, t.limit), s.len()))
            })
            .flatten();
        let id_text = id.text();
        let mut logged: Vec<&[u8]> = Vec::with_capacity(3 + pairs.len());
        logged.extend([b"XADD", &args[1][..], id_text.as_bytes()]);
        logged.extend(pairs.iter().map(|p| &p[..]));
        self.log_derived(&logged);
        if let Some((removed, len)) = trimmed {
            if removed > 0 {
                self.log_parts(vec![
                    b("XTRIM"),
                    args[1].clone(),
                    b("MAXLEN"),
                    b("="),
                    Bytes::from(len.to_string()),
                ]);
            }
        }
        Ok(Frame::Bulk(Bytes::copy_from_slice(id_text.as_bytes())))
    }

    fn xlen(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        Ok(Frame::Integer(
            self.stream_ref(&args[1], now)?
                .map_or(0, |s| s.len() as i64),
        ))
    }

    fn xrange(&mut self, args: &[Bytes], now: u64, rev: bool) -> Result<Frame, Frame> {
        let (start_arg, end_arg) = if rev {
            (&args[3], &args[2])
        } else {
            (&args[2], &args[3])
        };
        let start = parse_bound(start_arg, 0, true)?;
        let end = parse_bound(end_arg, u64::MAX, false)?;
        let mut count: i64 = -1;
        let mut j = 4;
        while j < args.len() {
            if eq(&args[j], "count") && j + 1 < args.len() {
                count = int_arg(&args[j + 1])?.max(0);
                j += 2;
            } else {
                return Err(err(reply::SYNTAX));
            }
        }
        let Some(s) = self.stream_ref(&args[1], now)? else {
            return Ok(Frame::Array(Vec::new()));
        };
        if count == 0 {
            return Ok(Frame::NullArray);
        }
        let count = if count < 0 { 0 } else { count as usize };
        Ok(entries_frame(s.range(start, end, rev, count)))
    }

    fn xdel(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if self.stream_ref(&args[1], now)?.is_none() {
            return Ok(Frame::Integer(0));
        }
        let ids = args[2..]
            .iter()
            .map(|a| parse_id(a, 0, true))
            .collect::<Result<Vec<_>, _>>()?;
        let deleted = self
            .stream_mut(&args[1], now, |s| {
                ids.iter().filter(|&&id| s.delete(id)).count()
            })
            .unwrap_or(0);
        if deleted > 0 {
            self.log_args(args);
        }
        Ok(Frame::Integer(deleted as i64))
    }

    fn xtrim(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let t = parse_trim_args(args, false, self.encodings.stream_node_max_entries)?;
        if self.stream_ref(&args[1], now)?.is_none() {
            return Ok(Frame::Integer(0));
        }
        let Some(trim) = t.trim else {
            return Ok(Frame::Integer(0));
        };
        let (removed, len) = self
            .stream_mut(&args[1], now, |s| {
                (s.trim(trim, t.approx, t.limit), s.len())
            })
            .unwrap_or((0, 0));
        if removed > 0 {
            self.log_parts(vec![
                b("XTRIM"),
                args[1].clone(),
                b("MAXLEN"),
                b("="),
                Bytes::from(len.to_string()),
            ]);
        }
        Ok(Frame::Integer(removed as i64))
    }

    fn xsetid(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let id = parse_id(&args[2], 0, true)?;
        let (mut added, mut max_del) = (None, StreamId::MIN);
        let mut i = 3;
        while i < args.len() {
            let more = args.len() - 1 - i;
            if eq(&args[i], "entriesadded") && more > 0 {
                let n = int_arg(&args[i + 1])?;
                if n < 0 {
                    return Err(err("ERR entries_added must be positive"));
                }
                added = Some(n as u64);
                i += 2;
            } else if eq(&args[i], "maxdeletedid") && more > 0 {
                max_del = parse_id(&args[i + 1], 0, true)?;
                if id < max_del {
                    return Err(err("ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id"));
                }
                i += 2;
            } else {
                return Err(err(reply::SYNTAX));
            }
        }
        let Some(s) = self.stream_ref(&args[1], now)? else {
            return Err(err(reply::NO_SUCH_KEY));
        };
        if !s.is_empty() {
            if id < s.last_live_id().unwrap_or_default() {
                return Err(err(
                    "ERR The ID specified in XSETID is smaller than the target stream top item",
                ));
            }
            if added.is_some_and(|a| s.len() > a) {
                return Err(err("ERR The entries_added specified in XSETID is smaller than the target stream length"));
            }
        }
        self.stream_mut(&args[1], now, |s| {
            s.last_id = id;
            if let Some(a) = added {
                s.entries_added = a;
            }
            if !max_del.is_zero() {
                s.max_deleted = max_del;
            }
        });
        self.log_args(args);
        Ok(Frame::OK)
    }

    fn xgroup(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        if sub == "help" {
            if args.len() != 2 {
                return Err(err(
                    "ERR wrong number of arguments for 'xgroup|help' command",
                ));
            }
            return Ok(reply::help(
                "XGROUP",
                &[
                    "CREATE <key> <groupname> <id|$> [option]",
                    "    Create a new consumer group. Options are:",
                    "    * MKSTREAM",
                    "      Create the empty stream if it does not exist.",
                    "    * ENTRIESREAD entries_read",
                    "      Set the group's entries_read counter (internal use).",
                    "CREATECONSUMER <key> <groupname> <consumer>",
                    "    Create a new consumer in the specified group.",
                    "DELCONSUMER <key> <groupname> <consumer>",
                    "    Remove the specified consumer.",
                    "DESTROY <key> <groupname>",
                    "    Remove the specified group.",
                    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
                    "    Set the current group ID and entries_read counter.",
                ],
            ));
        }
        if ![
            "create",
            "setid",
            "destroy",
            "createconsumer",
            "delconsumer",
        ]
        .contains(&sub.as_str())
        {
            return Err(reply::unknown_subcommand(&args[1], "xgroup"));
        }
        let arity_ok = match sub.as_str() {
            "create" | "setid" => args.len() >= 5,
            "createconsumer" | "delconsumer" => args.len() == 5,
            _ => args.len() == 4,
        };
        if !arity_ok {
            return Err(Frame::Error(format!(
                "ERR wrong number of arguments for 'xgroup|{sub}' command"
            )));
        }
        let subcommand_error = || {
            Frame::Error(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try XGROUP HELP.",
                String::from_utf8_lossy(&args[1])
            ))
        };
        if args.len() < 4 {
            return Err(subcommand_error());
        }
        let (create, setid) = (sub == "create", sub == "setid");
        let mut mkstream = false;
        let mut entries_read: Option<u64> = None;
        let mut i = 5;
        while i < args.len() {
            if create && eq(&args[i], "mkstream") {
                mkstream = true;
                i += 1;
            } else if (create || setid) && eq(&args[i], "entriesread") && i + 1 < args.len() {
                let n = int_arg(&args[i + 1])?;
                if n < 0 && n != -1 {
                    return Err(err("ERR value for ENTRIESREAD must be positive or -1"));
                }
                entries_read = (n >= 0).then_some(n as u64);
                i += 2;
            } else {
                return Err(subcommand_error());
            }
        }
        let key = &args[2];
        let group = Bytes::copy_from_slice(&args[3]);
        let exists = self.stream_ref(key, now)?.is_some();
        let has_group = self
            .stream_ref(key, now)?
            .is_some_and(|s| s.groups.contains_key(&group));
        if !mkstream {
            if !exists {
                return Err(err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically."));
            }
            if !has_group && matches!(sub.as_str(), "setid" | "createconsumer" | "delconsumer") {
                return Err(Frame::Error(format!(
                    "NOGROUP No such consumer group '{}' for key name '{}'",
                    String::from_utf8_lossy(&group),
                    String::from_utf8_lossy(key)
                )));
            }
        }
        match sub.as_str() {
            "create" if (5..=8).contains(&args.len()) => {
                let id = if args[4].as_ref() == b"$" {
                    self.stream_ref(key, now)?
                        .map_or(StreamId::MIN, |s| s.last_id)
                } else {
                    parse_id(&args[4], 0, true)?
                };
                if has_group {
                    return Err(err("BUSYGROUP Consumer Group name already exists"));
                }
                if !exists {
                    self.ks.insert(key, Value::Stream(Box::default()), 0);
                }
                self.stream_mut(key, now, |s| {
                    s.groups.insert(
                        group,
                        Group {
                            last_id: id,
                            entries_read,
                            ..Group::default()
                        },
                    );
                    s.groups_changed();
                });
                self.log_args(args);
                Ok(Frame::OK)
            }
            "setid" if args.len() == 5 || args.len() == 7 => {
                let id = if args[4].as_ref() == b"$" {
                    self.stream_ref(key, now)?
                        .map_or(StreamId::MIN, |s| s.last_id)
                } else {
                    parse_id(&args[4], 0, false)?
                };
                self.stream_mut(key, now, |s| {
                    if let Some(g) = s.groups.get_mut(&group) {
                        g.last_id = id;
                        g.entries_read = entries_read;
                    }
                });
                self.log_args(args);
                Ok(Frame::OK)
            }
            "destroy" if args.len() == 4 => {
                let removed = self
                    .stream_mut(key, now, |s| {
                        let r = s.groups.remove(&group).is_some();
                        s.groups_changed();
                        r
                    })
                    .unwrap_or(false);
                if removed {
                    // Logged, so clients blocked on the group wake and learn it is gone.
                    self.log_args(args);
                }
                Ok(Frame::Integer(i64::from(removed)))
            }
            "createconsumer" if args.len() == 5 => {
                let consumer = args[4].clone();
                let created = self
                    .stream_mut(key, now, |s| {
                        let created = s
                            .groups
                            .get_mut(&group)
                            .map(|g| g.consumer(&consumer, now).1);
                        s.groups_changed();
                        created
                    })
                    .flatten()
                    .unwrap_or(false);
                if created {
                    self.log_args(args);
                }
                Ok(Frame::Integer(i64::from(created)))
            }
            "delconsumer" if args.len() == 5 => {
                let consumer = args[4].clone();
                let pending = self
                    .stream_mut(key, now, |s| {
                        let g = s.groups.get_mut(&group)?;
                        let c = g.consumers.remove(&consumer)?;
                        for id in &c.pending {
                            g.pending.remove(id);
                        }
                        s.groups_changed();
                        Some(c.pending.len())
                    })
                    .flatten();
                if pending.is_some() {
                    self.log_args(args);
                }
                Ok(Frame::Integer(pending.unwrap_or(0) as i64))
            }
            _ => Err(subcommand_error()),
        }
    }

    fn xack(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let has_group = match self.stream_ref(&args[1], now)? {
            Some(s) => s.groups.contains_key(&args[2]),
            None => false,
        };
        if !has_group {
            return Ok(Frame::Integer(0));
        }
        let ids = args[3..]
            .iter()
            .map(|a| parse_id(a, 0, true))
            .collect::<Result<Vec<_>, _>>()?;
        let acked = self
            .stream_mut(&args[1], now, |s| {
                let n = s
                    .groups
                    .get_mut(&args[2])
                    .map_or(0, |g| ids.iter().filter(|&&id| g.ack(id)).count());
                s.groups_changed();
                n
            })
            .unwrap_or(0);
        if acked > 0 {
            self.log_args(args);
        }
        Ok(Frame::Integer(acked as i64))
    }

    fn xpending(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let summary = args.len() == 3;
        if !summary && !(6..=9).contains(&args.len()) {
            return Err(err(reply::SYNTAX));
        }
        let mut range = None;
        if !summary {
            let mut at = 3;
            let mut min_idle = 0i64;
            if eq(&args[3], "idle") {
                min_idle = int_arg(&args[4])?;
                if args.len() < 8 {
                    return Err(err(reply::SYNTAX));
                }
                at += 2;
            }
            let count = int_arg(&args[at + 2])?.max(0) as usize;
            let start = parse_bound(&args[at], 0, true)?;
            let end = parse_bound(&args[at + 1], u64::MAX, false)?;
            let consumer = args.get(at + 3).cloned();
            range = Some((min_idle, start, end, count, consumer));
        }
        let Some(s) = self.stream_ref(&args[1], now)? else {
            return Err(no_group(&args[1], &args[2]));
        };
        let Some(g) = s.groups.get(&args[2]) else {
            return Err(no_group(&args[1], &args[2]));
        };
        let Some((min_idle, start, end, count, consumer)) = range else {
            if g.pending.is_empty() {
                return Ok(Frame::Array(vec![
                    Frame::Integer(0),
                    Frame::Null,
                    Frame::Null,
                    Frame::NullArray,
                ]));
            }
            let first = g.pending.keys().next().copied().unwrap_or_default();
            let last = g.pending.keys().next_back().copied().unwrap_or_default();
            let owners = g
                .consumers
                .iter()
                .filter(|(_, c)| !c.pending.is_empty())
                .map(|(n, c)| {
                    Frame::Array(vec![
                        Frame::Bulk(n.clone()),
                        Frame::Bulk(Bytes::from(c.pending.len().to_string())),
                    ])
                })
                .collect();
            return Ok(Frame::Array(vec![
                Frame::Integer(g.pending.len() as i64),
                id_frame(first),
                id_frame(last),
                Frame::Array(owners),
            ]));
        };
        let ids: Vec<StreamId> = match &consumer {
            Some(c) => match g.consumers.get(c) {
                Some(c) => c.pending.range(start..=end.max(start)).copied().collect(),
                None => return Ok(Frame::Array(Vec::new())),
            },
            None => g
                .pending
                .range(start..=end.max(start))
                .map(|(id, _)| *id)
                .collect(),
        };
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= count || id > end {
                break;
            }
            let Some(p) = g.pending.get(&id) else {
                continue;
            };
            let idle = now as i64 - p.delivered_at as i64;
            if min_idle > 0 && idle < min_idle {
                continue;
            }
            out.push(Frame::Array(vec![
                id_frame(id),
                Frame::Bulk(p.consumer.clone()),
                Frame::Integer(idle.max(0)),
                Frame::Integer(p.deliveries as i64),
            ]));
        }
        Ok(Frame::Array(out))
    }

    /// Logs a delivery of `id` to `consumer` as the XCLAIM that reproduces it.
    fn log_delivery(
        &mut self,
        key: &Bytes,
        group: &Bytes,
        consumer: &Bytes,
        id: StreamId,
        at: u64,
        deliveries: u64,
    ) {
        self.log_more_parts(
            key,
            vec![
                b("XCLAIM"),
                key.clone(),
                group.clone(),
                consumer.clone(),
                b("0"),
                id.to_bytes(),
                b("TIME"),
                Bytes::from(at.to_string()),
                b("RETRYCOUNT"),
                Bytes::from(deliveries.to_string()),
                b("FORCE"),
                b("JUSTID"),
            ],
        );
    }

    /// An effect on the stream `key` that announces nothing of its own (a delivery's
    /// XCLAIM, a group's SETID): `key` is touched for WATCH, tracking and blocked readers.
    fn log_more_parts(&mut self, key: &Bytes, parts: Vec<Bytes>) {
        self.log_expired();
        self.touch(false, &[b"XADD", key]);
        if self.record_writes {
            self.push_log(parts);
        }
    }

    /// A consumer a read or a claim created: logged, and announced as Redis announces it.
    fn log_consumer_created(&mut self, key: &Bytes, group: &Bytes, consumer: &Bytes) {
        self.log_more_parts(
            key,
            vec![
                b("XGROUP"),
                b("CREATECONSUMER"),
                key.clone(),
                group.clone(),
                consumer.clone(),
            ],
        );
        let db = self.db;
        self.event(
            crate::notify::class::STREAM,
            "xgroup-createconsumer",
            db,
            key.clone(),
        );
    }

    fn log_group_id(&mut self, key: &Bytes, group: &Bytes, last: StreamId, read: Option<u64>) {
        self.log_more_parts(
            key,
            vec![
                b("XGROUP"),
                b("SETID"),
                key.clone(),
                group.clone(),
                last.to_bytes(),
                b("ENTRIESREAD"),
                Bytes::from(read.map_or(-1, |r| r as i64).to_string()),
            ],
        );
    }

    fn xclaim(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (key, group, consumer) = (args[1].clone(), args[2].clone(), args[3].clone());
        let has = self
            .stream_ref(&key, now)?
            .is_some_and(|s| s.groups.contains_key(&group));
        if !has {
            return Err(no_group(&key, &group));
        }
        let min_idle = parse_i64(&args[4])
            .ok_or_else(|| err("ERR Invalid min-idle-time argument for XCLAIM"))?
            .max(0);
        let mut j = 5;
        let mut ids = Vec::new();
        while j < args.len() {
            match parse_id(&args[j], 0, true) {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
            j += 1;
        }
        let (mut force, mut justid) = (false, false);
        let mut delivery: Option<i64> = None;
        let mut retry: Option<i64> = None;
        let mut last_id = StreamId::MIN;
        while j < args.len() {
            let more = args.len() - 1 - j;
            let o = &args[j];
            let num = |b: &[u8], what: &str| {
                parse_i64(b).ok_or_else(|| {
                    Frame::Error(format!("ERR Invalid {what} option argument for XCLAIM"))
                })
            };
            if eq(o, "force") {
                force = true;
            } else if eq(o, "justid") {
                justid = true;
            } else if eq(o, "idle") && more > 0 {
                j += 1;
                delivery = Some((now as i64).saturating_sub(num(&args[j], "IDLE")?));
            } else if eq(o, "time") && more > 0 {
                j += 1;
                delivery = Some(num(&args[j], "TIME")?);
            } else if eq(o, "retrycount") && more > 0 {
                j += 1;
                retry = Some(num(&args[j], "RETRYCOUNT")?);
            } else if eq(o, "lastid") && more > 0 {
                j += 1;
                last_id = parse_id(&args[j], 0, true)?;
            } else {
                return Err(Frame::Error(format!(
                    "ERR Unrecognized XCLAIM option '{}'",
                    String::from_utf8_lossy(o)
                )));
            }
            j += 1;
        }
        // A time in the future (or before 1970) is now; replay (now = 0) takes the log's.
        let at = match delivery {
            Some(t) if now != 0 && (t < 0 || t as u64 > now) => now,
            Some(t) => t.max(0) as u64,
            None => now,
        };
        let mut replies = Vec::new();
        let mut effects: Vec<(StreamId, u64)> = Vec::new();
        let mut gone = Vec::new();
        let mut new_last = None;
        let mut created = false;
        self.stream_mut(&key, now, |s| {
            let exists: Vec<bool> = ids.iter().map(|&id| s.contains(id)).collect();
            let Some(g) = s.groups.get_mut(&group) else {
                return;
            };
            if last_id > g.last_id {
                g.last_id = last_id;
                new_last = Some((g.last_id, g.entries_read));
            }
            for (&id, &present) in ids.iter().zip(&exists) {
                let pending = g.pending.get(&id).cloned();
                if !present {
                    if pending.is_some() {
                        g.ack(id);
                        gone.push(id);
                    }
                    continue;
                }
                let pending = match (pending, force) {
                    (Some(p), _) => Some(p),
                    (None, true) => None,
                    (None, false) => continue,
                };
                if let Some(p) = &pending {
                    if min_idle > 0 && (now as i64 - p.delivered_at as i64) < min_idle {
                        continue;
                    }
                }
                let was = pending.map_or(0, |p| p.deliveries);
                let deliveries = match retry {
                    Some(r) if r >= 0 => r as u64,
                    _ if !justid => (was + 1).min(i64::MAX as u64),
                    _ => was,
                };
                created |= g.consumer(&consumer, now).1;
                g.assign(id, &consumer, at, deliveries);
                effects.push((id, deliveries));
                replies.push(id);
            }
            s.groups_changed();
        });
        if created {
            self.log_consumer_created(&key, &group, &consumer);
        }
        for id in gone {
            self.log_more_parts(
                &key,
                vec![b("XACK"), key.clone(), group.clone(), id.to_bytes()],
            );
        }
        for (id, n) in effects {
            self.log_delivery(&key, &group, &consumer, id, at, n);
        }
        if let Some((last, read)) = new_last {
            self.log_group_id(&key, &group, last, read);
        }
        let s = self.stream_ref(&key, now)?;
        Ok(Frame::Array(
            replies
                .into_iter()
                .map(|id| {
                    if justid {
                        id_frame(id)
                    } else {
                        entry_frame(id, s.and_then(|s| s.get(id)).unwrap_or_default())
                    }
                })
                .collect(),
        ))
    }

    fn xautoclaim(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (key, group, consumer) = (args[1].clone(), args[2].clone(), args[3].clone());
        let min_idle = parse_i64(&args[4])
            .ok_or_else(|| err("ERR Invalid min-idle-time argument for XAUTOCLAIM"))?
            .max(0);
        let start = parse_bound(&args[5], 0, true)?;
        let mut count: u64 = 100;
        let mut justid = false;
        let mut j = 6;
        while j < args.len() {
            let more = args.len() - 1 - j;
            if eq(&args[j], "count") && more > 0 {
                count = parse_i64(&args[j + 1])
                    .filter(|n| (1..=i64::MAX / 10).contains(n))
                    .ok_or_else(|| err("ERR COUNT must be > 0"))? as u64;
                j += 1;
            } else if eq(&args[j], "justid") {
                justid = true;
            } else {
                return Err(err(reply::SYNTAX));
            }
            j += 1;
        }
        let has = self
            .stream_ref(&key, now)?
            .is_some_and(|s| s.groups.contains_key(&group));
        if !has {
            return Err(no_group(&key, &group));
        }
        let mut claimed = Vec::new();
        let mut deleted = Vec::new();
        let mut created = false;
        let mut next = StreamId::MIN;
        self.stream_mut(&key, now, |s| {
            let candidates: Vec<(StreamId, bool)> = match s.groups.get(&group) {
                Some(g) => g
                    .pending
                    .range(start..)
                    .take(
                        count
                            .saturating_mul(10)
                            .saturating_add(1)
                            .min(usize::MAX as u64) as usize,
                    )
                    .map(|(id, _)| (*id, s.contains(*id)))
                    .collect(),
                None => return,
            };
            let Some(g) = s.groups.get_mut(&group) else {
                return;
            };
            let mut attempts = count.saturating_mul(10);
            let mut left = count;
            let mut iter = candidates.into_iter();
            let mut stopped_at = None;
            loop {
                if attempts == 0 || left == 0 {
                    stopped_at = iter.next().map(|(id, _)| id);
                    break;
                }
                let Some((id, present)) = iter.next() else {
                    break;
                };
                attempts -= 1;
                if !present {
                    g.ack(id);
                    deleted.push(id);
                    left -= 1;
                    continue;
                }
                let Some(p) = g.pending.get(&id).cloned() else {
                    continue;
                };
                if min_idle > 0 && (now as i64 - p.delivered_at as i64) < min_idle {
                    continue;
                }
                created |= g.consumer(&consumer, now).1;
                let deliveries = if justid {
                    p.deliveries
                } else {
                    p.deliveries + 1
                };
                g.assign(id, &consumer, now, deliveries);
                claimed.push((id, deliveries));
                left -= 1;
            }
            next = stopped_at.unwrap_or(StreamId::MIN);
            s.groups_changed();
        });
        if created {
            self.log_consumer_created(&key, &group, &consumer);
        }
        for id in &deleted {
            self.log_more_parts(
                &key,
                vec![b("XACK"), key.clone(), group.clone(), id.to_bytes()],
            );
        }
        for &(id, n) in &claimed {
            self.log_delivery(&key, &group, &consumer, id, now, n);
        }
        let s = self.stream_ref(&key, now)?;
        let items = claimed
            .iter()
            .map(|&(id, _)| {
                if justid {
                    id_frame(id)
                } else {
                    entry_frame(id, s.and_then(|s| s.get(id)).unwrap_or_default())
                }
            })
            .collect();
        Ok(Frame::Array(vec![
            id_frame(next),
            Frame::Array(items),
            Frame::Array(deleted.into_iter().map(id_frame).collect()),
        ]))
    }

    /// XREAD and XREADGROUP, never blocking (the server waits and retries: `blocking.rs`).
    /// Nothing to read: the null array.
    fn xread(&mut self, args: &[Bytes], now: u64, grouped: bool) -> Result<Frame, Frame> {
        let q = ReadArgs::parse(args, grouped)?;
        let n = q.keys.len();
        let mut ids = Vec::with_capacity(n);
        for (i, key) in q.keys.iter().enumerate() {
            let s = self.stream_ref(key, now)?;
            if let Some((group, _)) = &q.group {
                if !s.is_some_and(|s| s.groups.contains_key(group)) {
                    return Err(Frame::Error(format!(
                        "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(group)
                    )));
                }
            }
            let arg = &q.ids[i];
            let id = match arg.as_ref() {
                b"$" if grouped => return Err(err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.")),
                b"$" => s.map_or(StreamId::MIN, |s| s.last_id),
                b">" if !grouped => return Err(err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.")),
                b">" => StreamId::MAX,
                _ => parse_id(arg, 0, true)?,
            };
            ids.push(id);
        }
        let mut out: Vec<(Frame, Frame)> = Vec::new();
        for (i, key) in q.keys.iter().enumerate() {
            let gt = ids[i];
            let Some(s) = self.stream_ref(key, now)? else {
                continue;
            };
            let served = match &q.group {
                Some((g, _)) => {
                    gt != StreamId::MAX
                        || (!s.is_empty()
                            && s.last_live_id().unwrap_or_default()
                                > s.groups.get(g).map_or(StreamId::MAX, |g| g.last_id))
                }
                None => !s.is_empty() && s.last_live_id().unwrap_or_default() > gt,
            };
            if !served {
                continue;
            }
            // `>`: after the group's last delivered id; otherwise after the id given.
            let after = match &q.group {
                Some((g, _)) if gt == StreamId::MAX => {
                    s.groups.get(g).map_or(StreamId::MAX, |g| g.last_id)
                }
                _ => gt,
            };
            let Some(start) = after.incr() else {
                continue;
            };
            let entries = match &q.group {
                None => entries_frame(s.range(start, StreamId::MAX, false, q.count)),
                Some((g, c)) => {
                    self.deliver(key, g, c, start, gt != StreamId::MAX, q.count, q.noack, now)
                }
            };
            out.push((Frame::Bulk(key.clone()), entries));
        }
        if out.is_empty() {
            return Ok(Frame::NullArray);
        }
        Ok(Frame::KeyedReplies(out))
    }

    /// XREADGROUP's reading of one stream: new entries (`history` false) delivered to
    /// `consumer` and made pending, or the consumer's pending entries from `start` again.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        key: &Bytes,
        group: &Bytes,
        consumer: &Bytes,
        start: StreamId,
        history: bool,
        count: usize,
        noack: bool,
        now: u64,
    ) -> Frame {
        let mut created = false;
        let mut delivered: Vec<(StreamId, Option<Vec<Bytes>>, u64)> = Vec::new();
        let mut new_last = None;
        self.stream_mut(key, now, |s| {
            let read: Vec<(StreamId, Option<Vec<Bytes>>)> = if history {
                let Some(g) = s.groups.get(group) else { return };
                let owned: Vec<StreamId> = g
                    .consumers
                    .get(consumer)
                    .map(|c| c.pending.range(start..).copied().collect())
                    .unwrap_or_default();
                owned
                    .into_iter()
                    .take(if count == 0 { usize::MAX } else { count })
                    .map(|id| (id, s.get(id)))
                    .collect()
            } else {
                s.range(start, StreamId::MAX, false, count)
                    .into_iter()
                    .map(|(id, p)| (id, Some(p)))
                    .collect()
            };
            let estimates: Vec<Option<u64>> = if history {
                Vec::new()
            } else {
                read.iter().map(|(id, _)| s.entries_read_at(*id)).collect()
            };
            let tombstones: Vec<bool> = if history {
                Vec::new()
            } else {
                read.iter()
                    .map(|(id, _)| s.range_has_tombstone(*id, StreamId::MAX))
                    .collect()
            };
            let entries_added = s.entries_added;
            let Some(g) = s.groups.get_mut(group) else {
                return;
            };
            created = g.consumer(consumer, now).1;
            for (i, (id, pairs)) in read.into_iter().enumerate() {
                if history {
                    if pairs.is_some() {
                        let n = g
                            .pending
                            .get(&id)
                            .map_or(1, |p| (p.deliveries + 1).min(i64::MAX as u64));
                        g.assign(id, consumer, now, n);
                        delivered.push((id, pairs, n));
                    } else {
                        delivered.push((id, None, 0));
                    }
                    continue;
                }
                if id > g.last_id {
                    g.entries_read = match g.entries_read {
                        Some(r) if !tombstones[i] => Some((r + 1).min(i64::MAX as u64)),
                        _ if entries_added > 0 => estimates[i],
                        other => other,
                    };
                    g.last_id = id;
                    new_last = Some((g.last_id, g.entries_read));
                }
                if !noack {
                    g.assign(id, consumer, now, 1);
                }
                delivered.push((id, pairs, 1));
            }
            s.groups_changed();
        });
        if created {
            self.log_consumer_created(key, group, consumer);
        }
        for (id, pairs, n) in &delivered {
            if pairs.is_some() && (history || !noack) {
                self.log_delivery(key, group, consumer, *id, now, *n);
            }
        }
        if let Some((last, read)) = new_last {
            self.log_group_id(key, group, last, read);
        }
        Frame::Array(
            delivered
                .into_iter()
                .map(|(id, pairs, _)| match pairs {
                    Some(p) => entry_frame(id, p),
                    None => Frame::Array(vec![id_frame(id), Frame::NullArray]),
                })
                .collect(),
        )
    }

    fn xinfo(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        let syntax = || {
            Frame::Error(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try XINFO HELP.",
                String::from_utf8_lossy(&args[1])
            ))
        };
        if sub == "help" {
            if args.len() != 2 {
                return Err(err(
                    "ERR wrong number of arguments for 'xinfo|help' command",
                ));
            }
            return Ok(reply::help(
                "XINFO",
                &[
                    "CONSUMERS <key> <groupname>",
                    "    Show consumers of <groupname>.",
                    "GROUPS <key>",
                    "    Show the stream consumer groups.",
                    "STREAM <key> [FULL [COUNT <count>]",
                    "    Show information about the stream.",
                ],
            ));
        }
        let arity_ok = match sub.as_str() {
            "consumers" => args.len() == 4,
            "groups" => args.len() == 3,
            "stream" => args.len() >= 3,
            _ => true,
        };
        if !arity_ok {
            return Err(Frame::Error(format!(
                "ERR wrong number of arguments for 'xinfo|{sub}' command"
            )));
        }
        if !["consumers", "groups", "stream"].contains(&sub.as_str()) {
            return Err(reply::unknown_subcommand(&args[1], "xinfo"));
        }
        let key = &args[2];
        let Some(s) = self.stream_ref(key, now)? else {
            return Err(err(reply::NO_SUCH_KEY));
        };
        let map = |pairs: Vec<(&str, Frame)>| {
            Frame::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Frame::Bulk(b(k)), v))
                    .collect(),
            )
        };
        let opt_int = |v: Option<u64>| v.map_or(Frame::Null, |v| Frame::Integer(v as i64));
        match sub.as_str() {
            "consumers" if args.len() == 4 => {
                let Some(g) = s.groups.get(&args[3]) else {
                    return Err(Frame::Error(format!(
                        "NOGROUP No such consumer group '{}' for key name '{}'",
                        String::from_utf8_lossy(&args[3]),
                        String::from_utf8_lossy(key)
                    )));
                };
                Ok(Frame::Array(
                    g.consumers
                        .iter()
                        .map(|(n, c)| {
                            map(vec![
                                ("name", Frame::Bulk(n.clone())),
                                ("pending", Frame::Integer(c.pending.len() as i64)),
                                (
                                    "idle",
                                    Frame::Integer((now as i64 - c.seen_at as i64).max(0)),
                                ),
                            ])
                        })
                        .collect(),
                ))
            }
            "groups" if args.len() == 3 => Ok(Frame::Array(
                s.groups
                    .iter()
                    .map(|(n, g)| {
                        map(vec![
                            ("name", Frame::Bulk(n.clone())),
                            ("consumers", Frame::Integer(g.consumers.len() as i64)),
                            ("pending", Frame::Integer(g.pending.len() as i64)),
                            ("last-delivered-id", id_frame(g.last_id)),
                            ("entries-read", opt_int(g.entries_read)),
                            ("lag", opt_int(s.lag(g))),
                        ])
                    })
                    .collect(),
            )),
            "stream" => {
                let opts = &args[3..];
                let full = !opts.is_empty();
                let mut count = 10usize;
                if full {
                    if (opts.len() != 1 && opts.len() != 3) || !eq(&opts[0], "full") {
                        return Err(syntax());
                    }
                    if opts.len() == 3 {
                        if !eq(&opts[1], "count") {
                            return Err(syntax());
                        }
                        let n = int_arg(&opts[2])?;
                        count = if n < 0 { 10 } else { n as usize };
                    }
                }
                let mut fields = vec![
                    ("length", Frame::Integer(s.len() as i64)),
                    ("radix-tree-keys", Frame::Integer(s.node_count() as i64)),
                    (
                        "radix-tree-nodes",
                        Frame::Integer((s.node_count() * 2).max(1) as i64),
                    ),
                    ("last-generated-id", id_frame(s.last_id)),
                    ("max-deleted-entry-id", id_frame(s.max_deleted)),
                    ("entries-added", Frame::Integer(s.entries_added as i64)),
                    ("recorded-first-entry-id", id_frame(s.first_id())),
                ];
                let one = |e: Option<(StreamId, Vec<Bytes>)>| {
                    e.map_or(Frame::Null, |(id, p)| entry_frame(id, p))
                };
                if !full {
                    fields.push(("groups", Frame::Integer(s.groups.len() as i64)));
                    fields.push(("first-entry", one(s.first_entry())));
                    fields.push(("last-entry", one(s.last_entry())));
                    return Ok(map(fields));
                }
                fields.push((
                    "entries",
                    entries_frame(s.range(StreamId::MIN, StreamId::MAX, false, count)),
                ));
                let limit = if count == 0 { usize::MAX } else { count };
                let groups = s
                    .groups
                    .iter()
                    .map(|(n, g)| {
                        let pel = g
                            .pending
                            .iter()
                            .take(limit)
                            .map(|(id, p)| {
                                Frame::Array(vec![
                                    id_frame(*id),
                                    Frame::Bulk(p.consumer.clone()),
                                    Frame::Integer(p.delivered_at as i64),
                                    Frame::Integer(p.deliveries as i64),
                                ])
                            })
                            .collect();
                        let consumers = g
                            .consumers
                            .iter()
                            .map(|(cn, c)| {
                                let pending = c
                                    .pending
                                    .iter()
                                    .take(limit)
                                    .filter_map(|id| g.pending.get(id).map(|p| (id, p)))
                                    .map(|(id, p)| {
                                        Frame::Array(vec![
                                            id_frame(*id),
                                            Frame::Integer(p.delivered_at as i64),
                                            Frame::Integer(p.deliveries as i64),
                                        ])
                                    })
                                    .collect();
                                map(vec![
                                    ("name", Frame::Bulk(cn.clone())),
                                    ("seen-time", Frame::Integer(c.seen_at as i64)),
                                    ("pel-count", Frame::Integer(c.pending.len() as i64)),
                                    ("pending", Frame::Array(pending)),
                                ])
                            })
                            .collect();
                        map(vec![
                            ("name", Frame::Bulk(n.clone())),
                            ("last-delivered-id", id_frame(g.last_id)),
                            ("entries-read", opt_int(g.entries_read)),
                            ("lag", opt_int(s.lag(g))),
                            ("pel-count", Frame::Integer(g.pending.len() as i64)),
                            ("pending", Frame::Array(pel)),
                            ("consumers", Frame::Array(consumers)),
                        ])
                    })
                    .collect();
                fields.push(("groups", Frame::Array(groups)));
                Ok(map(fields))
            }
            _ => Err(syntax()),
        }
    }
}

/// XREAD's and XREADGROUP's arguments.
pub struct ReadArgs {
    pub count: usize,
    /// BLOCK's milliseconds (0: forever), if given.
    pub block: Option<u64>,
    pub group: Option<(Bytes, Bytes)>,
    pub noack: bool,
    pub keys: Vec<Bytes>,
    pub ids: Vec<Bytes>,
    /// Where STREAMS' keys start in the arguments.
    pub keys_at: usize,
}

impl ReadArgs {
    pub fn parse(args: &[Bytes], grouped: bool) -> Result<ReadArgs, Frame> {
        let mut q = ReadArgs {
            count: 0,
            block: None,
            group: None,
            noack: false,
            keys: Vec::new(),
            ids: Vec::new(),
            keys_at: 0,
        };
        let mut i = 1;
        while i < args.len() {
            let more = args.len() - i - 1;
            let a = &args[i];
            if eq(a, "block") && more > 0 {
                i += 1;
                let ms = parse_i64(&args[i])
                    .ok_or_else(|| err("ERR timeout is not an integer or out of range"))?;
                if ms < 0 {
                    return Err(err("ERR timeout is negative"));
                }
                q.block = Some(ms as u64);
            } else if eq(a, "count") && more > 0 {
                i += 1;
                q.count = int_arg(&args[i])?.max(0) as usize;
            } else if eq(a, "streams") && more > 0 {
                let rest = &args[i + 1..];
                if !rest.len().is_multiple_of(2) {
                    return Err(err("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."));
                }
                let n = rest.len() / 2;
                q.keys = rest[..n].to_vec();
                q.ids = rest[n..].to_vec();
                q.keys_at = i + 1;
                break;
            } else if eq(a, "group") && more >= 2 {
                if !grouped {
                    return Err(err("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."));
                }
                q.group = Some((args[i + 1].clone(), args[i + 2].clone()));
                i += 2;
            } else if eq(a, "noack") {
                if !grouped {
                    return Err(err("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead."));
                }
                q.noack = true;
            } else {
                return Err(err(reply::SYNTAX));
            }
            i += 1;
        }
        if q.keys_at == 0 {
            return Err(err(reply::SYNTAX));
        }
        if grouped && q.group.is_none() {
            return Err(err("ERR Missing GROUP option for XREADGROUP"));
        }
        Ok(q)
    }
}
