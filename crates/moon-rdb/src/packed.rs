//! Redis's compact encodings, as they appear inside RDB strings: listpack (Redis 7), ziplist
//! (before), intset and zipmap (older still). Decoders check every length against the buffer
//! and the header's totals; the listpack encoder writes what Redis's `lpAppend` would.

/// One element of a listpack or ziplist: bytes, or an integer Redis stored as one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Elem<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl<'a> Elem<'a> {
    /// The element as an integer (stream ids and counts), if it is one.
    pub(crate) fn int(self) -> Option<i64> {
        match self {
            Elem::Int(i) => Some(i),
            Elem::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| acc << 8 | u64::from(x))
}

/// Sign-extends the low `bits` bits of `v`.
fn signed(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

fn slice(buf: &[u8], at: usize, n: usize) -> Result<&[u8], String> {
    buf.get(at..at.checked_add(n).ok_or("length overflows")?)
        .ok_or_else(|| format!("element at byte {at} runs past the end"))
}

/// Every element of a listpack.
pub(crate) fn listpack(lp: &[u8]) -> Result<Vec<Elem<'_>>, String> {
    if lp.len() < 7 {
        return Err("listpack shorter than its header".into());
    }
    let total = le(&lp[0..4]) as usize;
    if total != lp.len() {
        return Err(format!("listpack says {total} bytes, holds {}", lp.len()));
    }
    let declared = le(&lp[4..6]) as usize;
    let mut out = Vec::new();
    let mut p = 6;
    loop {
        let b = *lp.get(p).ok_or("listpack without its end byte")?;
        if b == 0xff {
            if p + 1 != lp.len() {
                return Err("bytes after the listpack's end".into());
            }
            break;
        }
        let (elem, len) = match b {
            _ if b & 0x80 == 0 => (Elem::Int(i64::from(b & 0x7f)), 1),
            _ if b & 0xc0 == 0x80 => {
                let n = usize::from(b & 0x3f);
                (Elem::Str(slice(lp, p + 1, n)?), 1 + n)
            }
            _ if b & 0xe0 == 0xc0 => {
                let v = u64::from(b & 0x1f) << 8
                    | u64::from(*slice(lp, p + 1, 1)?.first().unwrap_or(&0));
                (Elem::Int(signed(v, 13)), 2)
            }
            _ if b & 0xf0 == 0xe0 => {
                let n = usize::from(b & 0x0f) << 8 | usize::from(slice(lp, p + 1, 1)?[0]);
                (Elem::Str(slice(lp, p + 2, n)?), 2 + n)
            }
            0xf0 => {
                let n = le(slice(lp, p + 1, 4)?) as usize;
                (Elem::Str(slice(lp, p + 5, n)?), 5 + n)
            }
            0xf1 => (Elem::Int(signed(le(slice(lp, p + 1, 2)?), 16)), 3),
            0xf2 => (Elem::Int(signed(le(slice(lp, p + 1, 3)?), 24)), 4),
            0xf3 => (Elem::Int(signed(le(slice(lp, p + 1, 4)?), 32)), 5),
            0xf4 => (Elem::Int(le(slice(lp, p + 1, 8)?) as i64), 9),
            _ => return Err(format!("unknown listpack encoding 0x{b:02x} at byte {p}")),
        };
        let back = backlen_size(len as u64);
        slice(lp, p + len, back)?;
        out.push(elem);
        p += len + back;
    }
    if declared != 65535 && declared != out.len() {
        return Err(format!(
            "listpack says {declared} elements, holds {}",
            out.len()
        ));
    }
    Ok(out)
}

fn backlen_size(l: u64) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// Every element of a ziplist (Redis before 7.0).
pub(crate) fn ziplist(zl: &[u8]) -> Result<Vec<Elem<'_>>, String> {
    if zl.len() < 11 {
        return Err("ziplist shorter than its header".into());
    }
    if le(&zl[0..4]) as usize != zl.len() {
        return Err("ziplist size does not match its header".into());
    }
    let declared = le(&zl[8..10]) as usize;
    let mut out = Vec::new();
    let mut p = 10;
    loop {
        let first = *zl.get(p).ok_or("ziplist without its end byte")?;
        if first == 0xff {
            if p + 1 != zl.len() {
                return Err("bytes after the ziplist's end".into());
            }
            break;
        }
        p += if first < 254 { 1 } else { 5 };
        let b = *zl.get(p).ok_or("ziplist entry runs past the end")?;
        let (elem, len) = match b >> 6 {
            0 => {
                let n = usize::from(b & 0x3f);
                (Elem::Str(slice(zl, p + 1, n)?), 1 + n)
            }
            1 => {
                let n = usize::from(b & 0x3f) << 8 | usize::from(slice(zl, p + 1, 1)?[0]);
                (Elem::Str(slice(zl, p + 2, n)?), 2 + n)
            }
            2 => {
                let h = slice(zl, p + 1, 4)?;
                let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                (Elem::Str(slice(zl, p + 5, n)?), 5 + n)
            }
            _ => match b {
                0xc0 => (Elem::Int(signed(le(slice(zl, p + 1, 2)?), 16)), 3),
                0xd0 => (Elem::Int(signed(le(slice(zl, p + 1, 4)?), 32)), 5),
                0xe0 => (Elem::Int(le(slice(zl, p + 1, 8)?) as i64), 9),
                0xf0 => (Elem::Int(signed(le(slice(zl, p + 1, 3)?), 24)), 4),
                0xfe => (Elem::Int(i64::from(slice(zl, p + 1, 1)?[0] as i8)), 2),
                0xf1..=0xfd => (Elem::Int(i64::from(b & 0x0f) - 1), 1),
                _ => return Err(format!("unknown ziplist encoding 0x{b:02x} at byte {p}")),
            },
        };
        out.push(elem);
        p += len;
    }
    if declared != 65535 && declared != out.len() {
        return Err(format!(
            "ziplist says {declared} entries, holds {}",
            out.len()
        ));
    }
    Ok(out)
}

/// The members of an intset.
pub(crate) fn intset(is: &[u8]) -> Result<Vec<i64>, String> {
    if is.len() < 8 {
        return Err("intset shorter than its header".into());
    }
    let width = le(&is[0..4]) as usize;
    let n = le(&is[4..8]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(format!("intset of {width}-byte integers"));
    }
    if n.checked_mul(width) != Some(is.len() - 8) {
        return Err("intset size does not match its header".into());
    }
    Ok(is[8..]
        .chunks_exact(width)
        .map(|c| signed(le(c), 8 * width as u32))
        .collect())
}

/// The field/value pairs of a zipmap (hashes of Redis before 2.6).
/// A field and its value, borrowed from the encoding.
type Pair<'a> = (&'a [u8], &'a [u8]);

pub(crate) fn zipmap(zm: &[u8]) -> Result<Vec<Pair<'_>>, String> {
    let mut p = 1;
    let mut out = Vec::new();
    let len = |p: &mut usize| -> Result<Option<usize>, String> {
        let b = *zm.get(*p).ok_or("zipmap without its end byte")?;
        match b {
            0xff => Ok(None),
            254 => {
                let n = le(slice(zm, *p + 1, 4)?) as usize;
                *p += 5;
                Ok(Some(n))
            }
            _ => {
                *p += 1;
                Ok(Some(usize::from(b)))
            }
        }
    };
    loop {
        let Some(klen) = len(&mut p)? else {
            if p + 1 != zm.len() {
                return Err("bytes after the zipmap's end".into());
            }
            break;
        };
        let key = slice(zm, p, klen)?;
        p += klen;
        let vlen = len(&mut p)?.ok_or("zipmap key without a value")?;
        let free = usize::from(*zm.get(p).ok_or("zipmap entry runs past the end")?);
        let value = slice(zm, p + 1, vlen)?;
        p += 1 + vlen + free;
        out.push((key, value));
    }
    Ok(out)
}

/// Builds a listpack as Redis's `lpAppend` does: text that is a canonical integer is stored
/// as one.
pub(crate) struct ListpackBuilder {
    buf: Vec<u8>,
    count: usize,
}

impl ListpackBuilder {
    pub(crate) fn new() -> ListpackBuilder {
        ListpackBuilder {
            buf: vec![0; 6],
            count: 0,
        }
    }

    pub(crate) fn push(&mut self, s: &[u8]) {
        match canonical_int(s) {
            Some(i) => self.push_int(i),
            None => self.push_str(s),
        }
    }

    pub(crate) fn push_int(&mut self, v: i64) {
        let start = self.buf.len();
        if (0..=127).contains(&v) {
            self.buf.push(v as u8);
        } else if (-4096..=4095).contains(&v) {
            let u = (v as u16) & 0x1fff;
            self.buf
                .extend_from_slice(&[0xc0 | (u >> 8) as u8, u as u8]);
        } else if let Ok(x) = i16::try_from(v) {
            self.buf.push(0xf1);
            self.buf.extend_from_slice(&x.to_le_bytes());
        } else if (-(1 << 23)..(1 << 23)).contains(&v) {
            self.buf.push(0xf2);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        } else if let Ok(x) = i32::try_from(v) {
            self.buf.push(0xf3);
            self.buf.extend_from_slice(&x.to_le_bytes());
        } else {
            self.buf.push(0xf4);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self.backlen(start);
    }

    fn push_str(&mut self, s: &[u8]) {
        let start = self.buf.len();
        let n = s.len();
        if n < 64 {
            self.buf.push(0x80 | n as u8);
        } else if n < 4096 {
            self.buf
                .extend_from_slice(&[0xe0 | (n >> 8) as u8, n as u8]);
        } else {
            self.buf.push(0xf0);
            self.buf.extend_from_slice(&(n as u32).to_le_bytes());
        }
        self.buf.extend_from_slice(s);
        self.backlen(start);
    }

    fn backlen(&mut self, start: usize) {
        let l = (self.buf.len() - start) as u64;
        let size = backlen_size(l);
        for i in 0..size {
            let shift = 7 * (size - 1 - i);
            let mut b = ((l >> shift) & 127) as u8;
            if i > 0 {
                b |= 128;
            }
            self.buf.push(b);
        }
        self.count += 1;
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.push(0xff);
        let total = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&total.to_le_bytes());
        let n = u16::try_from(self.count).unwrap_or(u16::MAX);
        self.buf[4..6].copy_from_slice(&n.to_le_bytes());
        self.buf
    }
}

/// `s` as an integer when it is exactly one's canonical text (Redis's `string2ll`: no `+`, no
/// leading zeros, no spaces, at most 20 bytes).
pub(crate) fn canonical_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let t = std::str::from_utf8(s).ok()?;
    let v: i64 = t.parse().ok()?;
    (v.to_string().as_bytes() == s).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listpack_reads_back_what_was_pushed() {
        let long = vec![b'x'; 5000];
        let mid = vec![b'y'; 300];
        let items: Vec<Vec<u8>> = vec![
            b"0".to_vec(),
            b"127".to_vec(),
            b"128".to_vec(),
            b"-1".to_vec(),
            b"-4096".to_vec(),
            b"4095".to_vec(),
            b"30000".to_vec(),
            b"-8388608".to_vec(),
            b"8388608".to_vec(),
            b"2147483648".to_vec(),
            b"-9223372036854775808".to_vec(),
            b"007".to_vec(),
            b"".to_vec(),
            b"hello".to_vec(),
            mid,
            long,
        ];
        let mut b = ListpackBuilder::new();
        for i in &items {
            b.push(i);
        }
        let lp = b.finish();
        let back: Vec<Vec<u8>> = listpack(&lp)
            .expect("valid")
            .into_iter()
            .map(|e| match e {
                Elem::Str(s) => s.to_vec(),
                Elem::Int(i) => i.to_string().into_bytes(),
            })
            .collect();
        assert_eq!(back, items);
    }

    #[test]
    fn damaged_packs_are_refused() {
        let mut b = ListpackBuilder::new();
        b.push(b"hello");
        let lp = b.finish();
        for cut in 0..lp.len() {
            assert!(listpack(&lp[..cut]).is_err(), "cut at {cut}");
        }
        assert!(intset(&[2, 0, 0, 0, 5, 0, 0, 0, 1, 0]).is_err());
        assert!(ziplist(&[0; 3]).is_err());
        assert!(zipmap(&[1, 3, b'a']).is_err());
    }
}
