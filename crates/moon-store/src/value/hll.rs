//! HyperLogLog: Redis's byte format, so an HLL written by Redis is read by Moon and the
//! reverse (a HLL is a plain string: GET it on one, SET it on the other).
//!
//! The string is a 16-byte header (`HYLL`, the encoding byte, three unused bytes, the cached
//! cardinality as 8 little-endian bytes whose top bit means "stale") and 16384 registers of 6
//! bits, one per bucket of the 64-bit MurmurHash64A of an element (low 14 bits: the bucket;
//! the rest: the run of zeros the register keeps the longest of). Two encodings:
//! - **dense**: the registers packed little-end first, 12288 bytes;
//! - **sparse**: run-length opcodes — `00xxxxxx` (1–64 zero registers), `01xxxxxx yyyyyyyy`
//!   (1–16384 zeros), `1vvvvvxx` (1–4 registers of value 1–32) — while every register fits
//!   and the string stays within `hll-sparse-max-bytes`; then it becomes dense for good.
//!
//! Every edit follows Redis's own steps (where a run is split, which neighbours are merged),
//! so the same elements added in the same order give the same bytes as on Redis, and the
//! estimator (Ertl's, arXiv:1702.01284) gives the same counts. Corrupted strings are refused
//! with Redis's errors and never read out of bounds.

/// Header bytes before the registers.
pub const HEADER: usize = 16;
/// Registers (buckets): 2^14.
pub const REGISTERS: usize = 1 << P;
/// The whole dense string.
pub const DENSE_SIZE: usize = HEADER + (REGISTERS * 6).div_ceil(8);

const P: u32 = 14;
/// Hash bits left for the zero run.
const Q: usize = 64 - P as usize;
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const VAL_MAX_VALUE: u8 = 32;
const VAL_MAX_LEN: usize = 4;
const ZERO_MAX_LEN: usize = 64;
const XZERO_MAX_LEN: usize = 16384;
/// 0.5 / ln 2.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Redis's error for a string that is not a HyperLogLog.
pub const NOT_HLL: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";
/// Redis's error for a HyperLogLog whose registers do not add up.
pub const CORRUPT: &str = "INVALIDOBJ Corrupted HLL object detected";

/// A sparse string whose opcodes do not cover exactly the 16384 registers.
#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt;

/// MurmurHash64A (Austin Appleby's, 64-bit, little-endian reads), as Redis hashes elements.
pub fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut k = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register `element` falls in, and the length of its `0...01` pattern (1 to Q + 1).
fn pattern(element: &[u8]) -> (usize, u8) {
    let hash = murmur64a(element, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

fn dense_get(regs: &[u8], i: usize) -> u8 {
    let (byte, fb) = (i * 6 / 8, (i * 6) & 7);
    let b0 = u16::from(regs[byte]);
    let b1 = u16::from(regs.get(byte + 1).copied().unwrap_or(0));
    (((b0 >> fb) | (b1 << (8 - fb))) & 63) as u8
}

fn dense_set(regs: &mut [u8], i: usize, value: u8) {
    let (byte, fb) = (i * 6 / 8, (i * 6) & 7);
    let v = u16::from(value);
    regs[byte] &= !((63u16 << fb) as u8);
    regs[byte] |= (v << fb) as u8;
    if let Some(next) = regs.get_mut(byte + 1) {
        *next &= !((63u16 >> (8 - fb)) as u8);
        *next |= (v >> (8 - fb)) as u8;
    }
}

/// One sparse opcode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Zero(usize),
    XZero(usize),
    Val(u8, usize),
}

impl Op {
    fn span(self) -> usize {
        match self {
            Op::Zero(n) | Op::XZero(n) | Op::Val(_, n) => n,
        }
    }
    fn bytes(self) -> usize {
        if matches!(self, Op::XZero(_)) {
            2
        } else {
            1
        }
    }
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Op::Zero(n) => out.push((n - 1) as u8),
            Op::XZero(n) => {
                let l = n - 1;
                out.push(((l >> 8) as u8) | 0x40);
                out.push((l & 0xff) as u8);
            }
            Op::Val(v, n) => out.push(val_byte(v, n)),
        }
    }
    /// A run of `n` zero registers in the shortest opcode.
    fn zeros(n: usize) -> Op {
        if n > ZERO_MAX_LEN {
            Op::XZero(n)
        } else {
            Op::Zero(n)
        }
    }
}

fn val_byte(v: u8, n: usize) -> u8 {
    0x80 | ((v - 1) << 2) | (n - 1) as u8
}

/// The opcode at `s[p]`: `None` when an XZERO is cut off by the end.
fn op_at(s: &[u8], p: usize) -> Option<Op> {
    let b = *s.get(p)?;
    Some(match b & 0xc0 {
        0x00 => Op::Zero(usize::from(b & 0x3f) + 1),
        0x40 => Op::XZero(((usize::from(b & 0x3f) << 8) | usize::from(*s.get(p + 1)?)) + 1),
        _ => Op::Val(((b >> 2) & 0x1f) + 1, usize::from(b & 3) + 1),
    })
}

/// The register histogram and the cardinality estimate, as Redis computes both.
fn estimate(histogram: &[u64; 64]) -> u64 {
    let m = REGISTERS as f64;
    let mut z = m * tau((m - histogram[Q + 1] as f64) / m);
    for j in (1..=Q).rev() {
        z += histogram[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(histogram[0] as f64 / m);
    // llroundl: out of range (z = 0 for registers past Q + 1, only in a forged string) is
    // x86-64's "integer indefinite", i64::MIN.
    let e = (ALPHA_INF * m * m / z).round();
    if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&e) {
        e as i64 as u64
    } else {
        i64::MIN as u64
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if before == z {
            return z / 3.0;
        }
    }
}

/// The estimate for registers held one per byte (PFCOUNT of several keys).
pub fn count_registers(registers: &[u8; REGISTERS]) -> u64 {
    let mut histogram = [0u64; 64];
    for &r in registers {
        histogram[usize::from(r & 63)] += 1;
    }
    estimate(&histogram)
}

/// The cached cardinality of a checked HLL string, if still valid: PFCOUNT without a copy.
pub fn cached_count(bytes: &[u8]) -> Option<u64> {
    let card = bytes.get(8..HEADER)?;
    (card[7] & 0x80 == 0).then(|| {
        let mut b = [0u8; 8];
        b.copy_from_slice(card);
        u64::from_le_bytes(b)
    })
}

/// Whether adding `elements` to a checked dense HLL string would raise a register: PFADD of
/// elements already counted (the common case once an HLL is full) needs no copy of its 12 KiB.
pub fn dense_would_grow<'a>(bytes: &[u8], mut elements: impl Iterator<Item = &'a [u8]>) -> bool {
    if bytes.get(4) != Some(&DENSE) || bytes.len() != DENSE_SIZE {
        return true;
    }
    let regs = &bytes[HEADER..];
    elements.any(|e| {
        let (index, count) = pattern(e);
        count > dense_get(regs, index)
    })
}

/// A HyperLogLog string whose header has been checked.
#[derive(Clone, Debug)]
pub struct Hll(Vec<u8>);

impl Default for Hll {
    fn default() -> Self {
        Hll::new()
    }
}

impl Hll {
    /// An empty HyperLogLog: sparse, one XZERO opcode, cached cardinality 0.
    pub fn new() -> Hll {
        let mut s = Vec::with_capacity(HEADER + 2);
        s.extend_from_slice(b"HYLL");
        s.push(SPARSE);
        s.resize(HEADER, 0);
        Op::XZero(XZERO_MAX_LEN).write(&mut s);
        Hll(s)
    }

    /// `bytes` as a HyperLogLog, if its header says it is one (Redis's checks: the length,
    /// the magic, a known encoding, a dense string's exact size). Sparse opcodes are checked
    /// as they are read.
    pub fn parse(bytes: &[u8]) -> Option<Hll> {
        Hll::parse_ok(bytes).then(|| Hll(bytes.to_vec()))
    }

    /// Whether [`Hll::parse`] would take `bytes`, without copying them.
    pub fn parse_ok(bytes: &[u8]) -> bool {
        bytes.len() >= HEADER
            && &bytes[..4] == b"HYLL"
            && bytes[4] <= SPARSE
            && (bytes[4] != DENSE || bytes.len() == DENSE_SIZE)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn is_sparse(&self) -> bool {
        self.0[4] == SPARSE
    }

    /// Marks the cached cardinality stale.
    pub fn invalidate_cache(&mut self) {
        self.0[15] |= 0x80;
    }

    /// Adds `element`: whether a register grew.
    pub fn add(&mut self, element: &[u8], sparse_max: usize) -> Result<bool, Corrupt> {
        let (index, count) = pattern(element);
        self.set(index, count, sparse_max)
    }

    /// Raises register `index` to `count`: whether it grew. A sparse string becomes dense
    /// when the value does not fit an opcode or the string would outgrow `sparse_max`.
    pub fn set(&mut self, index: usize, count: u8, sparse_max: usize) -> Result<bool, Corrupt> {
        if !self.is_sparse() {
            let regs = &mut self.0[HEADER..];
            if count > dense_get(regs, index) {
                dense_set(regs, index, count);
                return Ok(true);
            }
            return Ok(false);
        }
        if count > VAL_MAX_VALUE {
            return self.promote(index, count);
        }
        self.sparse_set(index, count, sparse_max)
    }

    fn promote(&mut self, index: usize, count: u8) -> Result<bool, Corrupt> {
        self.to_dense()?;
        dense_set(&mut self.0[HEADER..], index, count);
        Ok(true)
    }

    /// Redis's in-place sparse update: find the opcode covering `index`, replace it by the
    /// split it needs (at most ZERO/XZERO, VAL, ZERO/XZERO), then merge equal adjacent VAL
    /// opcodes among the five from the one before it.
    fn sparse_set(&mut self, index: usize, count: u8, sparse_max: usize) -> Result<bool, Corrupt> {
        let s = &mut self.0;
        let (mut p, mut first, mut prev) = (HEADER, 0usize, None);
        let mut found = None;
        while p < s.len() {
            let op = op_at(s, p).ok_or(Corrupt)?;
            if index < first + op.span() {
                found = Some(op);
                break;
            }
            prev = Some(p);
            p += op.bytes();
            first += op.span();
        }
        let op = found.ok_or(Corrupt)?;
        let mut update_alone = false;
        match op {
            Op::Val(old, _) if old >= count => return Ok(false),
            Op::Val(_, 1) | Op::Zero(1) => update_alone = true,
            _ => {}
        }
        if update_alone {
            s[p] = val_byte(count, 1);
        } else {
            let last = first + op.span() - 1;
            let mut seq = Vec::with_capacity(5);
            match op {
                Op::Val(v, _) => {
                    if index != first {
                        Op::Val(v, index - first).write(&mut seq);
                    }
                    Op::Val(count, 1).write(&mut seq);
                    if index != last {
                        Op::Val(v, last - index).write(&mut seq);
                    }
                }
                _ => {
                    if index != first {
                        Op::zeros(index - first).write(&mut seq);
                    }
                    Op::Val(count, 1).write(&mut seq);
                    if index != last {
                        Op::zeros(last - index).write(&mut seq);
                    }
                }
            }
            let old_len = op.bytes();
            if seq.len() > old_len && s.len() + seq.len() - old_len > sparse_max {
                return self.promote(index, count);
            }
            s.splice(p..p + old_len, seq);
        }
        // Merge adjacent VAL opcodes of one value, up to 5 opcodes from the previous one.
        let mut p = prev.unwrap_or(HEADER);
        let mut scan = 5;
        while p < s.len() && scan > 0 {
            scan -= 1;
            let b = s[p];
            if b & 0xc0 == 0x40 {
                p += 2;
                continue;
            }
            if b & 0xc0 == 0 {
                p += 1;
                continue;
            }
            if let Some(&b2) = s.get(p + 1) {
                if let (Op::Val(v1, l1), Some(Op::Val(v2, l2))) =
                    (op_at(s, p).ok_or(Corrupt)?, op_at(s, p + 1))
                {
                    if b2 & 0x80 != 0 && v1 == v2 && l1 + l2 <= VAL_MAX_LEN {
                        s[p + 1] = val_byte(v1, l1 + l2);
                        s.remove(p);
                        continue;
                    }
                }
            }
            p += 1;
        }
        self.invalidate_cache();
        Ok(true)
    }

    /// Converts a sparse string to dense (header kept, encoding changed): whether it was
    /// sparse.
    pub fn to_dense(&mut self) -> Result<bool, Corrupt> {
        if !self.is_sparse() {
            return Ok(false);
        }
        let mut dense = vec![0u8; DENSE_SIZE];
        dense[..HEADER].copy_from_slice(&self.0[..HEADER]);
        dense[4] = DENSE;
        let regs = &mut dense[HEADER..];
        let mut idx = 0usize;
        self.for_each_run(|op| match op {
            Op::Val(v, n) => {
                if idx + n > REGISTERS {
                    return false;
                }
                for i in idx..idx + n {
                    dense_set(regs, i, v);
                }
                idx += n;
                true
            }
            _ => {
                idx += op.span();
                true
            }
        })?;
        if idx != REGISTERS {
            return Err(Corrupt);
        }
        self.0 = dense;
        Ok(true)
    }

    /// Calls `f` with each sparse opcode until it says stop. `Err`: an opcode cut off.
    fn for_each_run(&self, mut f: impl FnMut(Op) -> bool) -> Result<(), Corrupt> {
        let mut p = HEADER;
        while p < self.0.len() {
            let op = op_at(&self.0, p).ok_or(Corrupt)?;
            if !f(op) {
                break;
            }
            p += op.bytes();
        }
        Ok(())
    }

    /// The cardinality: the cached one if still valid, else computed and cached (then the
    /// second value is true: the string changed).
    pub fn count(&mut self) -> Result<(u64, bool), Corrupt> {
        let card = &self.0[8..HEADER];
        if card[7] & 0x80 == 0 {
            let mut b = [0u8; 8];
            b.copy_from_slice(card);
            return Ok((u64::from_le_bytes(b), false));
        }
        let mut histogram = [0u64; 64];
        if self.is_sparse() {
            let mut idx = 0usize;
            self.for_each_run(|op| {
                idx += op.span();
                let v = if let Op::Val(v, _) = op { v } else { 0 };
                histogram[usize::from(v)] += op.span() as u64;
                true
            })?;
            if idx != REGISTERS {
                return Err(Corrupt);
            }
        } else {
            let regs = &self.0[HEADER..];
            for i in 0..REGISTERS {
                histogram[usize::from(dense_get(regs, i))] += 1;
            }
        }
        let n = estimate(&histogram);
        self.0[8..HEADER].copy_from_slice(&n.to_le_bytes());
        Ok((n, true))
    }

    /// Raises each of `max` to this HLL's register.
    pub fn merge_into(&self, max: &mut [u8; REGISTERS]) -> Result<(), Corrupt> {
        if !self.is_sparse() {
            let regs = &self.0[HEADER..];
            for (i, m) in max.iter_mut().enumerate() {
                *m = (*m).max(dense_get(regs, i));
            }
            return Ok(());
        }
        let mut idx = 0usize;
        self.for_each_run(|op| {
            if let Op::Val(v, n) = op {
                // Redis stops at a run past the end and judges by where it got.
                if idx + n > REGISTERS {
                    return false;
                }
                for m in &mut max[idx..idx + n] {
                    *m = (*m).max(v);
                }
            }
            idx += op.span();
            true
        })?;
        if idx != REGISTERS {
            return Err(Corrupt);
        }
        Ok(())
    }

    /// Every register of a dense HLL (PFDEBUG GETREG, after [`Hll::to_dense`]).
    pub fn registers(&self) -> Vec<u8> {
        let regs = &self.0[HEADER..];
        if self.is_sparse() {
            return vec![0; REGISTERS];
        }
        (0..REGISTERS).map(|i| dense_get(regs, i)).collect()
    }

    /// PFDEBUG DECODE's text of a sparse HLL: `z:N`, `Z:N`, `v:value,len` opcodes.
    pub fn decode(&self) -> Result<String, Corrupt> {
        let mut out = Vec::new();
        self.for_each_run(|op| {
            out.push(match op {
                Op::Zero(n) => format!("z:{n}"),
                Op::XZero(n) => format!("Z:{n}"),
                Op::Val(v, n) => format!("v:{v},{n}"),
            });
            true
        })?;
        Ok(out.join(" "))
    }
}

/// PFSELFTEST: registers keep what is set in them without touching their neighbours, and the
/// estimate of a dense and a sparse HLL fed the same elements agree and stay within six
/// standard errors at every power of ten up to ten million. `seed` picks the values.
pub fn selftest(seed: u64, sparse_max: usize) -> Result<(), String> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut dense = Hll::new();
    let _ = dense.to_dense();
    let mut expected = vec![0u8; REGISTERS];
    for _ in 0..1000 {
        let regs = &mut dense.0[HEADER..];
        for (i, e) in expected.iter_mut().enumerate() {
            *e = (next() & 63) as u8;
            dense_set(regs, i, *e);
        }
        for (i, &e) in expected.iter().enumerate() {
            let got = dense_get(regs, i);
            if got != e {
                return Err(format!(
                    "TESTFAILED Register {i} should be {e} but is {got}"
                ));
            }
        }
    }
    let mut dense = Hll::new();
    let _ = dense.to_dense();
    let mut sparse = Hll::new();
    let relerr = 1.04 / (REGISTERS as f64).sqrt();
    let base = next();
    let mut checkpoint: u64 = 1;
    for j in 1..=10_000_000u64 {
        let element = (j ^ base).to_le_bytes();
        let _ = dense.add(&element, sparse_max);
        let _ = sparse.add(&element, sparse_max);
        if j != checkpoint {
            continue;
        }
        if (j as usize) < sparse_max / 2 && !sparse.is_sparse() {
            return Err("TESTFAILED sparse encoding not used".into());
        }
        dense.invalidate_cache();
        sparse.invalidate_cache();
        let d = dense
            .count()
            .map_err(|_| "TESTFAILED corrupted".to_string())?
            .0;
        let s = sparse
            .count()
            .map_err(|_| "TESTFAILED corrupted".to_string())?
            .0;
        if d != s {
            return Err("TESTFAILED dense/sparse disagree".into());
        }
        let maxerr = if j == 10 {
            1
        } else {
            (relerr * 6.0 * checkpoint as f64).ceil() as u64
        };
        if checkpoint.abs_diff(d) > maxerr {
            return Err(format!(
                "TESTFAILED Too big error. card:{checkpoint} abserr:{}",
                checkpoint.abs_diff(d)
            ));
        }
        checkpoint *= 10;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by Redis's own MurmurHash64A (compiled from its C), seed 0xadc83b19:
    /// every tail length path and one full block.
    #[test]
    fn murmur_matches_redis_s() {
        for (key, hash) in [
            (&b""[..], 0xd8df_ea65_85bc_9732),
            (b"a", 0x53d2_470a_9b43_b1a7),
            (b"hello", 0x0f65_6f01_eecf_e400),
            (b"12345678", 0x95eb_b863_8913_2953),
            (b"123456789abcdefgh", 0xad1c_b3e9_9ced_07a6),
        ] {
            assert_eq!(murmur64a(key, 0xadc8_3b19), hash, "{key:?}");
        }
    }

    #[test]
    fn an_empty_hll_is_redis_s_eighteen_bytes() {
        let h = Hll::new().into_bytes();
        assert_eq!(h, b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0\x7f\xff");
    }

    #[test]
    fn sparse_and_dense_agree_and_count_close() {
        let mut sparse = Hll::new();
        let mut dense = Hll::new();
        dense.to_dense().unwrap();
        for i in 0..2000u32 {
            let e = i.to_string();
            assert_eq!(
                sparse.add(e.as_bytes(), 3000).unwrap(),
                dense.add(e.as_bytes(), 3000).unwrap()
            );
        }
        sparse.invalidate_cache();
        dense.invalidate_cache();
        let (a, _) = sparse.count().unwrap();
        let (b, _) = dense.count().unwrap();
        assert_eq!(a, b);
        assert!(a.abs_diff(2000) < 100, "{a}");
        let mut max = [0u8; REGISTERS];
        sparse.merge_into(&mut max).unwrap();
        assert_eq!(count_registers(&max), a);
    }

    #[test]
    fn corrupted_sparse_strings_are_refused_not_read_past() {
        let mut h = Hll::new().into_bytes();
        h.truncate(HEADER + 1); // an XZERO cut in half
        let mut cut = Hll::parse(&h).unwrap();
        cut.invalidate_cache();
        assert_eq!(cut.count(), Err(Corrupt));
        assert_eq!(cut.add(b"x", 3000), Err(Corrupt));
        assert_eq!(cut.to_dense(), Err(Corrupt));
        let mut extra = Hll::new().into_bytes();
        extra.extend_from_slice(b"hello");
        let mut extra = Hll::parse(&extra).unwrap();
        extra.invalidate_cache();
        assert_eq!(extra.count(), Err(Corrupt));
        assert!(Hll::parse(b"HYLL\x00short").is_none());
        assert!(Hll::parse(b"HYLX\x01\0\0\0\0\0\0\0\0\0\0\0\x7f\xff").is_none());
        assert!(Hll::parse(b"HYLL\x02\0\0\0\0\0\0\0\0\0\0\0\x7f\xff").is_none());
    }
}
