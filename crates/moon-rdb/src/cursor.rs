//! Reading RDB's primitives from a byte slice: lengths, strings (plain, integer-encoded, LZF)
//! and fixed-width numbers, each checked against what is left.

use crate::error::{Error, ErrorKind, Result};
use crate::text::Text;

/// The longest compressed string a file may declare (Redis's default `proto-max-bulk-len`, 512
/// MiB): a decompressed length above it is refused before anything is allocated.
pub(crate) const MAX_STRING: u64 = 512 << 20;

/// A position in `data`; offsets in errors are `base + pos`, so a payload inside a larger
/// buffer reports offsets of the whole.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

/// A length, or the marker of a specially encoded string (`RDB_ENCVAL`).
pub(crate) enum Len {
    Plain(u64),
    Encoded(u8),
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8], base: usize) -> Cursor<'a> {
        Cursor { data, pos: 0, base }
    }

    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::corrupt(self.offset(), what)
    }

    fn truncated(&self) -> Error {
        Error {
            offset: self.offset(),
            kind: ErrorKind::Truncated,
        }
    }

    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| self.truncated())?;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    pub(crate) fn u64_le(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32_le(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// RDB's length encoding: 6, 14, 32 or 64 bits, or the `RDB_ENCVAL` marker.
    pub(crate) fn len_or_encoded(&mut self) -> Result<Len> {
        let b = self.byte()?;
        Ok(match b >> 6 {
            0 => Len::Plain(u64::from(b & 0x3f)),
            1 => Len::Plain(u64::from(b & 0x3f) << 8 | u64::from(self.byte()?)),
            3 => Len::Encoded(b & 0x3f),
            _ => match b {
                0x80 => Len::Plain(u64::from(u32::from_be_bytes(self.array()?))),
                0x81 => Len::Plain(u64::from_be_bytes(self.array()?)),
                _ => return Err(self.corrupt(format!("unknown length encoding 0x{b:02x}"))),
            },
        })
    }

    /// A length (a count of elements, an id half...): never the encoded-string marker.
    pub(crate) fn len(&mut self) -> Result<u64> {
        match self.len_or_encoded()? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(_) => Err(self.corrupt("an encoded string where a length belongs")),
        }
    }

    /// A count of elements that each take at least `min_bytes`: refused when what is left
    /// cannot hold them, so no allocation is sized by an untrusted count alone.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let at = self.offset();
        let n = self.len()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_bytes.max(1)) <= self.remaining())
            .ok_or(Error {
                offset: at,
                kind: ErrorKind::Truncated,
            })
    }

    /// A string: raw bytes (lent), or an integer or LZF encoding (decoded).
    pub(crate) fn string(&mut self) -> Result<Text<'a>> {
        let at = self.offset();
        match self.len_or_encoded()? {
            Len::Plain(n) => Ok(Text::Lent(self.take(n)?)),
            Len::Encoded(0) => Ok(Text::int(i64::from(self.byte()? as i8))),
            Len::Encoded(1) => Ok(Text::int(i64::from(i16::from_le_bytes(self.array()?)))),
            Len::Encoded(2) => Ok(Text::int(i64::from(i32::from_le_bytes(self.array()?)))),
            Len::Encoded(3) => {
                let compressed = self.len()?;
                let raw = self.len()?;
                let data = self.take(compressed)?;
                // LZF expands at most 264 bytes out of a 3-byte back reference.
                if raw == 0 || raw > MAX_STRING || raw > compressed.saturating_mul(96) {
                    return Err(Error::corrupt(
                        at,
                        format!("LZF string of {compressed} bytes claims {raw} bytes"),
                    ));
                }
                match lzf::decompress(data, raw as usize) {
                    Ok(out) if out.len() as u64 == raw => Ok(Text::Owned(out)),
                    _ => Err(Error::corrupt(at, "LZF string does not decompress")),
                }
            }
            Len::Encoded(e) => Err(Error::corrupt(at, format!("unknown string encoding {e}"))),
        }
    }

    /// Steps over a string without decoding it (module data being skipped).
    pub(crate) fn skip_string(&mut self) -> Result<()> {
        match self.len_or_encoded()? {
            Len::Plain(n) => self.take(n).map(|_| ()),
            Len::Encoded(0) => self.take(1).map(|_| ()),
            Len::Encoded(1) => self.take(2).map(|_| ()),
            Len::Encoded(2) => self.take(4).map(|_| ()),
            Len::Encoded(3) => {
                let compressed = self.len()?;
                let _raw = self.len()?;
                self.take(compressed).map(|_| ())
            }
            Len::Encoded(e) => Err(self.corrupt(format!("unknown string encoding {e}"))),
        }
    }

    /// A double in the old text form (`RDB_TYPE_ZSET`): a length byte, 253 NaN, 254 +inf,
    /// 255 -inf.
    pub(crate) fn text_double(&mut self) -> Result<f64> {
        let at = self.offset();
        let n = self.byte()?;
        match n {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            _ => {
                let s = self.take(u64::from(n))?;
                std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::corrupt(at, "not a double"))
            }
        }
    }

    pub(crate) fn binary_double(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
}
