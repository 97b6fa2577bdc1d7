//! Bitmaps and bit fields on string values (SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD
//! BITFIELD_RO), on one shard. BITOP whose keys live on several shards is run by the server
//! with [`Store::string_at`] as its read and a SET (or DEL) of the result.
//!
//! Bits are numbered as Redis numbers them: bit 0 is the most significant bit of byte 0.
//! Logged forms: SETBIT, BITFIELD and BITOP as sent when they changed something (given the
//! string before them each is deterministic, BITFIELD's overflow handling included).

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, parse_i64, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::reply::{self, err};
use crate::value::{Str, Value};

/// The bitmap family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Bitmap: "setbit", 4, W, keys(1, 1, 1), ONE, |s, a, now| either(s.setbit(a, now))),
    command!(Bitmap: "getbit", 3, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.getbit(a, now))),
    command!(Bitmap: "bitcount", -2, R, keys(1, 1, 1), ONE, |s, a, now| either(s.bitcount(a, now))),
    command!(Bitmap: "bitpos", -3, R, keys(1, 1, 1), ONE, |s, a, now| either(s.bitpos(a, now))),
    command!(Bitmap: "bitop", -4, W, keys(2, -1, 1), COORDINATED, |s, a, now| either(s.bitop(a, now))),
    command!(Bitmap: "bitfield", -2, W, keys(1, 1, 1), ONE, |s, a, now| either(s.bitfield(a, now, false))),
    command!(Bitmap: "bitfield_ro", -2, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.bitfield(a, now, true))),
];

const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";

/// A bit offset: a non-negative integer whose byte fits `max_len` bytes.
fn bit_offset(b: &[u8], max_len: usize) -> Result<u64, Frame> {
    match parse_i64(b) {
        Some(o) if o >= 0 && ((o as u64) >> 3) < max_len as u64 => Ok(o as u64),
        _ => Err(err(BAD_OFFSET)),
    }
}

fn get_bit(buf: &[u8], bit: u64) -> u8 {
    let byte = (bit >> 3) as usize;
    buf.get(byte).map_or(0, |b| (b >> (7 - (bit & 7))) & 1)
}

/// BITCOUNT / BITPOS's `start end [BYTE|BIT]` over a string of `len` bytes: the inclusive
/// bit range, or `None` if empty.
fn bit_range(start: i64, end: i64, bit_unit: bool, len: usize) -> Option<(u64, u64)> {
    if start < 0 && end < 0 && start > end {
        // Both from the end, the wrong way round: nothing (Redis checks this first).
        return None;
    }
    let total = if bit_unit { len as i64 * 8 } else { len as i64 };
    let mut s = if start < 0 { total + start } else { start };
    let mut e = if end < 0 { total + end } else { end };
    s = s.max(0);
    e = e.max(0).min(total - 1);
    if total == 0 || s > e {
        return None;
    }
    Some(if bit_unit {
        (s as u64, e as u64)
    } else {
        (s as u64 * 8, e as u64 * 8 + 7)
    })
}

/// The optional `start end [BYTE|BIT]` after a key: (start, end given?, end, in bits?).
fn range_args(args: &[Bytes]) -> Result<Option<(i64, Option<i64>, bool)>, Frame> {
    let int = |b: &Bytes| parse_i64(b).ok_or_else(|| err(reply::NOT_INTEGER));
    match args {
        [] => Ok(None),
        [s] => Ok(Some((int(s)?, None, false))),
        [s, e] => Ok(Some((int(s)?, Some(int(e)?), false))),
        [s, e, unit] => {
            let bits = if eq(unit, "bit") {
                true
            } else if eq(unit, "byte") {
                false
            } else {
                return Err(err(reply::SYNTAX));
            };
            Ok(Some((int(s)?, Some(int(e)?), bits)))
        }
        _ => Err(err(reply::SYNTAX)),
    }
}

/// A BITFIELD type: signed or not, and its width in bits.
#[derive(Clone, Copy)]
struct FieldType {
    signed: bool,
    bits: u32,
}

fn field_type(b: &[u8]) -> Result<FieldType, Frame> {
    let bad = || {
        err("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.")
    };
    let signed = match b.first() {
        Some(b'i' | b'I') => true,
        Some(b'u' | b'U') => false,
        _ => return Err(bad()),
    };
    let bits = parse_i64(&b[1..]).ok_or_else(bad)?;
    let max = if signed { 64 } else { 63 };
    if !(1..=max).contains(&bits) {
        return Err(bad());
    }
    Ok(FieldType {
        signed,
        bits: bits as u32,
    })
}

/// A BITFIELD offset: a bit number, or `#n` (the n-th field of this width).
fn field_offset(b: &[u8], t: FieldType, max_len: usize) -> Result<u64, Frame> {
    let (mul, text) = match b.first() {
        Some(b'#') => (u64::from(t.bits), &b[1..]),
        _ => (1, b),
    };
    let n = parse_i64(text)
        .filter(|&n| n >= 0)
        .ok_or_else(|| err(BAD_OFFSET))? as u64;
    let off = n.checked_mul(mul).ok_or_else(|| err(BAD_OFFSET))?;
    let last = off
        .checked_add(u64::from(t.bits) - 1)
        .ok_or_else(|| err(BAD_OFFSET))?;
    if last >> 3 >= max_len as u64 {
        return Err(err(BAD_OFFSET));
    }
    Ok(off)
}

fn read_field(buf: &[u8], off: u64, t: FieldType) -> i64 {
    let mut v: u64 = 0;
    for i in 0..u64::from(t.bits) {
        v = (v << 1) | u64::from(get_bit(buf, off + i));
    }
    if t.signed && t.bits < 64 && v >> (t.bits - 1) & 1 == 1 {
        // Sign-extend.
        v |= u64::MAX << t.bits;
    }
    v as i64
}

fn write_field(buf: &mut Vec<u8>, off: u64, t: FieldType, value: i64) {
    let need = ((off + u64::from(t.bits) + 7) >> 3) as usize;
    if buf.len() < need {
        buf.resize(need, 0);
    }
    let v = value as u64;
    for i in 0..u64::from(t.bits) {
        let bit = (v >> (u64::from(t.bits) - 1 - i)) & 1;
        let pos = off + i;
        let byte = (pos >> 3) as usize;
        let mask = 1u8 << (7 - (pos & 7));
        if bit == 1 {
            buf[byte] |= mask;
        } else {
            buf[byte] &= !mask;
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

/// `value` as type `t` holds it under `overflow`: `None` if it does not fit and FAIL.
fn fit(value: i128, t: FieldType, overflow: Overflow) -> Option<i64> {
    let (min, max): (i128, i128) = if t.signed {
        (-(1i128 << (t.bits - 1)), (1i128 << (t.bits - 1)) - 1)
    } else {
        (0, (1i128 << t.bits) - 1)
    };
    if (min..=max).contains(&value) {
        return Some(value as i64);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if value < min { min } else { max } as i64),
        Overflow::Wrap => {
            let m = 1i128 << t.bits;
            let mut w = value.rem_euclid(m);
            if t.signed && w > max {
                w -= m;
            }
            Some(w as i64)
        }
    }
}

impl Store {
    /// The string at `key` (WRONGTYPE for another type), for a bitmap command.
    fn bits_of(&mut self, key: &[u8], now: u64) -> Result<Option<Bytes>, Frame> {
        self.get_str(key, now)
    }

    /// The string at `key` without changing anything (the read half of BITOP across
    /// shards). `Ok(None)`: no such key.
    pub fn string_at(&self, key: &[u8], now: u64) -> Result<Option<Bytes>, Frame> {
        if self.type_at(key, now).is_none() {
            return Ok(None);
        }
        match self.ks.peek(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.to_bytes())),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// Stores `bytes` as the string at `key`, its deadline kept.
    pub(super) fn put_bits(&mut self, key: &[u8], bytes: Vec<u8>, now: u64) {
        let expire_at = self.ks.get(key, now).map_or(0, |e| e.expire_at);
        self.ks.insert(
            key,
            Value::Str(Str::from_bytes(&Bytes::from(bytes))),
            expire_at,
        );
    }

    fn setbit(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let bit = bit_offset(&args[2], self.max_string_len)?;
        let on = match &args[3][..] {
            b"1" => true,
            b"0" => false,
            _ => return Err(err("ERR bit is not an integer or out of range")),
        };
        let old = self.bits_of(&args[1], now)?;
        let existed = old.is_some();
        let mut buf = old.map(|b| b.to_vec()).unwrap_or_default();
        let byte = (bit >> 3) as usize;
        let grew = buf.len() <= byte;
        if grew {
            buf.resize(byte + 1, 0);
        }
        let was = get_bit(&buf, bit);
        let mask = 1u8 << (7 - (bit & 7));
        if on {
            buf[byte] |= mask;
        } else {
            buf[byte] &= !mask;
        }
        if grew || !existed || was != u8::from(on) {
            self.put_bits(&args[1], buf, now);
            self.log_args(args);
        }
        Ok(Frame::Integer(i64::from(was)))
    }

    fn getbit(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let bit = bit_offset(&args[2], self.max_string_len)?;
        let buf = self.bits_of(&args[1], now)?.unwrap_or_default();
        Ok(Frame::Integer(i64::from(get_bit(&buf, bit))))
    }

    fn bitcount(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let range = range_args(&args[2..])?;
        if matches!(range, Some((_, None, _))) {
            return Err(err(reply::SYNTAX));
        }
        let Some(buf) = self.bits_of(&args[1], now)? else {
            return Ok(Frame::Integer(0));
        };
        let (from, to) = match range {
            None => match bit_range(0, -1, false, buf.len()) {
                Some(r) => r,
                None => return Ok(Frame::Integer(0)),
            },
            Some((s, e, bits)) => match bit_range(s, e.unwrap_or(-1), bits, buf.len()) {
                Some(r) => r,
                None => return Ok(Frame::Integer(0)),
            },
        };
        let (first, last) = ((from >> 3) as usize, (to >> 3) as usize);
        let mut count: u64 = buf[first..=last]
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum();
        // Bits of the first and last bytes outside the range (BIT unit).
        for b in (first as u64 * 8)..from {
            count -= u64::from(get_bit(&buf, b));
        }
        for b in (to + 1)..(last as u64 * 8 + 8) {
            count -= u64::from(get_bit(&buf, b));
        }
        Ok(Frame::Integer(count as i64))
    }

    fn bitpos(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let target = match &args[2][..] {
            b"1" => 1u8,
            b"0" => 0u8,
            _ => {
                return Err(match parse_i64(&args[2]) {
                    Some(_) => err("ERR The bit argument must be 1 or 0."),
                    None => err(reply::NOT_INTEGER),
                })
            }
        };
        let range = range_args(&args[3..])?;
        let Some(buf) = self.bits_of(&args[1], now)? else {
            return Ok(Frame::Integer(if target == 1 { -1 } else { 0 }));
        };
        let (start, end, bits) = range.unwrap_or((0, None, false));
        let end_given = end.is_some();
        let Some((from, to)) = bit_range(start, end.unwrap_or(-1), bits, buf.len()) else {
            return Ok(Frame::Integer(-1));
        };
        for b in from..=to {
            if get_bit(&buf, b) == target {
                return Ok(Frame::Integer(b as i64));
            }
        }
        // Looking for a clear bit with no end given: the string counts as padded with zeros.
        Ok(Frame::Integer(if target == 0 && !end_given {
            to as i64 + 1
        } else {
            -1
        }))
    }

    fn bitop(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let mut sources = Vec::with_capacity(args.len() - 3);
        for k in &args[3..] {
            sources.push(self.bits_of(k, now)?);
        }
        let result = bitop_result(&args[1], sources)?;
        let dst = &args[2];
        let existed = self.ks.contains(dst, now);
        let n = result.len();
        if n == 0 {
            self.ks.remove(dst);
        } else {
            self.ks
                .insert(dst, Value::Str(Str::from_bytes(&Bytes::from(result))), 0);
        }
        if n > 0 || existed {
            self.log_args(args);
        }
        Ok(Frame::Integer(n as i64))
    }

    fn bitfield(&mut self, args: &[Bytes], now: u64, readonly: bool) -> Result<Frame, Frame> {
        enum Op {
            Get(FieldType, u64),
            Set(FieldType, u64, i64, Overflow),
            Incr(FieldType, u64, i64, Overflow),
        }
        let max = self.max_string_len;
        let int = |b: &Bytes| parse_i64(b).ok_or_else(|| err(reply::NOT_INTEGER));
        let mut ops = Vec::new();
        let mut overflow = Overflow::Wrap;
        let mut j = 2;
        while j < args.len() {
            let a = &args[j];
            let left = args.len() - j - 1;
            if eq(a, "get") && left >= 2 {
                let t = field_type(&args[j + 1])?;
                ops.push(Op::Get(t, field_offset(&args[j + 2], t, max)?));
                j += 3;
            } else if (eq(a, "set") || eq(a, "incrby")) && left >= 3 {
                if readonly {
                    return Err(err("ERR BITFIELD_RO only supports the GET subcommand"));
                }
                let t = field_type(&args[j + 1])?;
                let off = field_offset(&args[j + 2], t, max)?;
                let v = int(&args[j + 3])?;
                ops.push(if eq(a, "set") {
                    Op::Set(t, off, v, overflow)
                } else {
                    Op::Incr(t, off, v, overflow)
                });
                j += 4;
            } else if eq(a, "overflow") && left >= 1 {
                if readonly {
                    return Err(err("ERR BITFIELD_RO only supports the GET subcommand"));
                }
                let v = &args[j + 1];
                overflow = if eq(v, "wrap") {
                    Overflow::Wrap
                } else if eq(v, "sat") {
                    Overflow::Sat
                } else if eq(v, "fail") {
                    Overflow::Fail
                } else {
                    return Err(err("ERR Invalid OVERFLOW type specified"));
                };
                j += 2;
            } else {
                return Err(err(reply::SYNTAX));
            }
        }
        let old = self.bits_of(&args[1], now)?;
        let existed = old.is_some();
        let mut buf = old.map(|b| b.to_vec()).unwrap_or_default();
        let before = buf.clone();
        let mut wrote = false;
        let mut replies = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Get(t, off) => replies.push(Frame::Integer(read_field(&buf, off, t))),
                Op::Set(t, off, v, ov) => {
                    let old = read_field(&buf, off, t);
                    match fit(i128::from(v), t, ov) {
                        Some(nv) => {
                            write_field(&mut buf, off, t, nv);
                            wrote = true;
                            replies.push(Frame::Integer(old));
                        }
                        None => replies.push(Frame::Null),
                    }
                }
                Op::Incr(t, off, by, ov) => {
                    let old = read_field(&buf, off, t);
                    let raw = if t.signed {
                        i128::from(old) + i128::from(by)
                    } else {
                        i128::from(old as u64 & (u64::MAX >> (64 - t.bits))) + i128::from(by)
                    };
                    match fit(raw, t, ov) {
                        Some(nv) => {
                            write_field(&mut buf, off, t, nv);
                            wrote = true;
                            replies.push(Frame::Integer(nv));
                        }
                        None => replies.push(Frame::Null),
                    }
                }
            }
        }
        if wrote && (!existed || buf != before) {
            self.put_bits(&args[1], buf, now);
            self.log_args(args);
        }
        Ok(Frame::Array(replies))
    }
}

/// BITOP `op` over `sources` (a missing key is an empty string): the result, as long as the
/// longest source.
pub fn bitop_result(op: &[u8], sources: Vec<Option<Bytes>>) -> Result<Vec<u8>, Frame> {
    let not = eq(op, "not");
    if !(not || eq(op, "and") || eq(op, "or") || eq(op, "xor")) {
        return Err(err(reply::SYNTAX));
    }
    if not && sources.len() != 1 {
        return Err(err(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    let srcs: Vec<Bytes> = sources.into_iter().map(Option::unwrap_or_default).collect();
    let len = srcs.iter().map(Bytes::len).max().unwrap_or(0);
    let mut out = vec![0u8; len];
    for (i, o) in out.iter_mut().enumerate() {
        let byte = |s: &Bytes| s.get(i).copied().unwrap_or(0);
        *o = if not {
            !byte(&srcs[0])
        } else if eq(op, "and") {
            srcs.iter().fold(0xff, |acc, s| acc & byte(s))
        } else if eq(op, "or") {
            srcs.iter().fold(0, |acc, s| acc | byte(s))
        } else {
            srcs.iter().fold(0, |acc, s| acc ^ byte(s))
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_wrap_saturate_and_fail_as_redis() {
        let u8t = FieldType {
            signed: false,
            bits: 8,
        };
        let i8t = FieldType {
            signed: true,
            bits: 8,
        };
        assert_eq!(fit(300, u8t, Overflow::Wrap), Some(44));
        assert_eq!(fit(300, u8t, Overflow::Sat), Some(255));
        assert_eq!(fit(300, u8t, Overflow::Fail), None);
        assert_eq!(fit(-1, u8t, Overflow::Wrap), Some(255));
        assert_eq!(fit(128, i8t, Overflow::Wrap), Some(-128));
        assert_eq!(fit(-200, i8t, Overflow::Sat), Some(-128));
        let mut buf = Vec::new();
        write_field(&mut buf, 3, i8t, -2);
        assert_eq!(read_field(&buf, 3, i8t), -2);
        assert_eq!(buf.len(), 2);
        let i64t = FieldType {
            signed: true,
            bits: 64,
        };
        write_field(&mut buf, 0, i64t, i64::MIN);
        assert_eq!(read_field(&buf, 0, i64t), i64::MIN);
    }

    #[test]
    fn bit_ranges_as_redis() {
        assert_eq!(bit_range(0, -1, false, 3), Some((0, 23)));
        assert_eq!(bit_range(1, 1, false, 3), Some((8, 15)));
        assert_eq!(bit_range(5, 30, true, 3), Some((5, 23)));
        assert_eq!(bit_range(2, 1, false, 3), None);
        assert_eq!(bit_range(-100, -1, false, 3), Some((0, 23)));
        assert_eq!(bit_range(0, -1, false, 0), None);
        assert_eq!(bit_range(-6, -7, false, 6), None);
    }
}
