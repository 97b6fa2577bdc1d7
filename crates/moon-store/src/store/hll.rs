//! HyperLogLog commands (PFADD PFCOUNT PFMERGE PFDEBUG) on strings in Redis's HLL format
//! (`value/hll.rs`), on one shard. PFCOUNT and PFMERGE whose keys live on several shards are
//! run by the server: each key read with [`Store::string_at`], the registers merged with
//! [`merge_strings`], PFMERGE's result written with [`merged_into`] as a SET.
//!
//! Logged forms: PFADD and PFMERGE as sent when they changed something (given the string
//! before them and `hll-sparse-max-bytes`, each is deterministic); a single-key PFCOUNT that
//! refreshed the cached cardinality in the string as sent, and PFDEBUG GETREG/TODENSE that
//! made a string dense as sent, so a replayed string is the same bytes.

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::command::Flags;
use crate::reply::err;
use crate::value::hll::{self, Hll, REGISTERS};

/// The HyperLogLog family's rows (PFSELFTEST, which touches no key, is the server's).
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Hyperloglog: "pfadd", -2, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.pfadd(a, now))),
    command!(Hyperloglog: "pfcount", -2, R.union(Flags::MAY_REPLICATE), keys(1, -1, 1), COORDINATED, |s, a, now| either(s.pfcount(a, now))),
    command!(Hyperloglog: "pfmerge", -2, W, keys(1, -1, 1), COORDINATED, |s, a, now| either(s.pfmerge(a, now))),
    command!(Hyperloglog: "pfdebug", 3, W.union(Flags::ADMIN), keys(2, 2, 1), ONE, |s, a, now| either(s.pfdebug(a, now))),
];

fn corrupt(_: hll::Corrupt) -> Frame {
    err(hll::CORRUPT)
}

/// `string` as a HyperLogLog, or Redis's error for a string that is not one.
fn parse(string: &[u8]) -> Result<Hll, Frame> {
    Hll::parse(string).ok_or_else(|| err(hll::NOT_HLL))
}

/// The registers of several keys' HLL strings merged (a missing key is an empty HLL), and
/// whether any of them is dense: PFCOUNT's and PFMERGE's read half. Each key's read is
/// judged in key order, so the first key that is not an HLL names the error, as on Redis.
pub fn merge_strings(
    strings: &[Result<Option<Bytes>, Frame>],
) -> Result<(Box<[u8; REGISTERS]>, bool), Frame> {
    let mut max = Box::new([0u8; REGISTERS]);
    let mut dense = false;
    for s in strings {
        let Some(s) = s.as_ref().map_err(Clone::clone)? else {
            continue;
        };
        let h = parse(s)?;
        dense |= !h.is_sparse();
        h.merge_into(&mut max).map_err(corrupt)?;
    }
    Ok((max, dense))
}

/// The cardinality of merged registers (PFCOUNT of several keys).
pub fn count_merged(max: &[u8; REGISTERS]) -> i64 {
    hll::count_registers(max) as i64
}

/// PFMERGE's result: the destination's string (or a new HLL) with `max` written into it,
/// dense if any input was, its cache marked stale — what Redis leaves in the destination.
pub fn merged_into(
    dest: Option<&Bytes>,
    max: &[u8; REGISTERS],
    any_dense: bool,
    sparse_max: usize,
) -> Result<Vec<u8>, Frame> {
    let mut h = match dest {
        Some(d) => parse(d)?,
        None => Hll::new(),
    };
    if any_dense {
        h.to_dense().map_err(corrupt)?;
    }
    for (i, &m) in max.iter().enumerate() {
        if m != 0 {
            // Redis ignores a failure here (its sources were checked); so does Moon.
            let _ = h.set(i, m, sparse_max);
        }
    }
    h.invalidate_cache();
    Ok(h.into_bytes())
}

impl Store {
    /// The string at `key` for PFCOUNT or PFMERGE across shards: its type error is kept for
    /// [`merge_strings`] to report in key order.
    pub fn pf_string_at(
        &self,
        key: &[u8],
        now: u64,
    ) -> Result<Option<Result<Option<Bytes>, Frame>>, Frame> {
        Ok(Some(self.string_at(key, now)))
    }

    /// The HyperLogLog at `key`: `None` if there is none, WRONGTYPE for another type or a
    /// string that is not an HLL.
    fn hll_of(&mut self, key: &[u8], now: u64) -> Result<Option<Hll>, Frame> {
        match self.get_str(key, now)? {
            Some(s) => parse(&s).map(Some),
            None => Ok(None),
        }
    }

    fn pfadd(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let sparse_max = self.encodings.hll_sparse_max_bytes;
        let existing = self.get_str(&args[1], now)?;
        let was_dense = existing.as_ref().is_some_and(|s| s.get(4) == Some(&0));
        let (mut h, mut updated) = match existing {
            Some(s) => {
                if Hll::parse_ok(&s) && !hll::dense_would_grow(&s, args[2..].iter().map(|e| &e[..]))
                {
                    return Ok(Frame::Integer(0));
                }
                (parse(&s)?, false)
            }
            None => (Hll::new(), true),
        };
        for element in &args[2..] {
            // A corrupted string changes nothing (Redis would keep the registers it set
            // before it noticed, unlogged).
            updated |= h.add(element, sparse_max).map_err(corrupt)?;
        }
        if updated {
            h.invalidate_cache();
            self.put_bits(&args[1], h.into_bytes(), now);
            self.log_hll_write(args, was_dense, now);
        }
        Ok(Frame::Integer(i64::from(updated)))
    }

    fn pfcount(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if args.len() > 2 {
            let strings: Vec<_> = args[1..].iter().map(|k| self.get_str(k, now)).collect();
            let (max, _) = merge_strings(&strings)?;
            return Ok(Frame::Integer(count_merged(&max)));
        }
        let Some(s) = self.get_str(&args[1], now)? else {
            return Ok(Frame::Integer(0));
        };
        if Hll::parse_ok(&s) {
            if let Some(n) = hll::cached_count(&s) {
                return Ok(Frame::Integer(n as i64));
            }
        }
        let mut h = parse(&s)?;
        let (n, refreshed) = h.count().map_err(corrupt)?;
        if refreshed {
            // The cached cardinality is part of the string: logged, so replay has it too.
            self.put_bits(&args[1], h.into_bytes(), now);
            self.log_args(args);
        }
        Ok(Frame::Integer(n as i64))
    }

    fn pfmerge(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let strings: Vec<_> = args[1..].iter().map(|k| self.get_str(k, now)).collect();
        let (max, dense) = merge_strings(&strings)?;
        let dest = strings[0].as_ref().ok().and_then(Option::as_ref);
        let result = merged_into(dest, &max, dense, self.encodings.hll_sparse_max_bytes)?;
        let was_dense = strings[0]
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .is_some_and(|d| !Hll::parse_ok(d) || d.get(4) == Some(&0));
        self.put_bits(&args[1], result, now);
        self.log_hll_write(args, was_dense, now);
        Ok(Frame::OK)
    }

    /// Logs a PFADD or PFMERGE so that replay rebuilds the same bytes whatever
    /// `hll-sparse-max-bytes` is then: a sparse result as its bytes (`SET`), a dense one as
    /// the command as sent, followed by `PFDEBUG TODENSE` if this command made it dense
    /// (replay under a smaller limit is dense already; under a larger one it converts).
    /// Only the destination is touched and announced (`pfadd`), as in Redis.
    fn log_hll_write(&mut self, args: &[Bytes], was_dense: bool, now: u64) {
        let key = &args[1];
        let (bytes, expire_at) = match self.ks.get(key, now) {
            Some(e) => match &e.value {
                crate::value::Value::Str(s) => (s.to_bytes(), e.expire_at),
                _ => return,
            },
            None => return,
        };
        if bytes.get(4) == Some(&1) {
            self.log_set(key, &bytes, expire_at);
            return;
        }
        let parts: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        self.log_derived(&parts);
        if !was_dense {
            self.log_more(vec![
                Bytes::from_static(b"PFDEBUG"),
                Bytes::from_static(b"TODENSE"),
                key.clone(),
            ]);
        }
    }

    fn pfdebug(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let sub = &args[1];
        let Some(mut h) = self.hll_of(&args[2], now)? else {
            return Err(err("ERR The specified key does not exist"));
        };
        let known = ["getreg", "decode", "encoding", "todense"];
        if !known.iter().any(|k| eq(sub, k)) {
            return Err(Frame::Error(format!(
                "ERR Unknown PFDEBUG subcommand '{}'",
                String::from_utf8_lossy(sub)
            )));
        }
        if eq(sub, "getreg") || eq(sub, "todense") {
            let converted = h.to_dense().map_err(corrupt)?;
            let registers = eq(sub, "getreg").then(|| h.registers());
            if converted {
                // Logged without touching the key: Redis does not signal this change.
                self.put_bits(&args[2], h.into_bytes(), now);
                self.log_expired();
                self.log_more(args.to_vec());
            }
            return Ok(match registers {
                Some(r) => Frame::Array(r.into_iter().map(|v| Frame::Integer(v.into())).collect()),
                None => Frame::Integer(i64::from(converted)),
            });
        }
        if eq(sub, "encoding") {
            return Ok(Frame::Simple(if h.is_sparse() {
                "sparse"
            } else {
                "dense"
            }));
        }
        if !h.is_sparse() {
            return Err(err("ERR HLL encoding is not sparse"));
        }
        Ok(Frame::Bulk(Bytes::from(h.decode().map_err(corrupt)?)))
    }
}
