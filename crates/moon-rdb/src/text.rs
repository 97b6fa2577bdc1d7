//! A string as the reader hands it out ([`Text`]): the file's own bytes wherever they are
//! stored as they are, so that loading a file does not allocate a buffer per string only to
//! copy it once more into the value being built.

use std::ops::Deref;

use bytes::Bytes;

use crate::packed::Elem;

/// A string of a file or payload: lent from its bytes when stored raw; held when decoding made
/// it (an integer encoding, as its decimal text, or LZF output).
#[derive(Clone, PartialEq, Eq)]
pub enum Text<'a> {
    Lent(&'a [u8]),
    /// The decimal text of an integer: at most 20 bytes (`-9223372036854775808`).
    Int {
        len: u8,
        digits: [u8; 20],
    },
    Owned(Vec<u8>),
}

impl<'a> Text<'a> {
    pub(crate) fn int(i: i64) -> Text<'static> {
        let mut digits = [0u8; 20];
        let mut len = 0;
        let mut n = i.unsigned_abs();
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if i < 0 {
            digits[len] = b'-';
            len += 1;
        }
        digits[..len].reverse();
        Text::Int {
            len: len as u8,
            digits,
        }
    }

    /// A listpack or ziplist element as Redis returns it: integers as their decimal text.
    pub(crate) fn from_elem(e: Elem<'a>) -> Text<'a> {
        match e {
            Elem::Str(s) => Text::Lent(s),
            Elem::Int(i) => Text::int(i),
        }
    }

    /// The same string, holding its bytes (for a string that outlives what it was read from).
    pub fn into_static(self) -> Text<'static> {
        match self {
            Text::Lent(s) => Text::Owned(s.to_vec()),
            Text::Int { len, digits } => Text::Int { len, digits },
            Text::Owned(v) => Text::Owned(v),
        }
    }

    /// The string as `Bytes`: copied when lent, moved when held.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Text::Owned(v) => Bytes::from(v),
            other => Bytes::copy_from_slice(&other),
        }
    }
}

impl Deref for Text<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Text::Lent(s) => s,
            Text::Int { len, digits } => &digits[..usize::from(*len)],
            Text::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Text<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_read_as_their_decimal_text() {
        for i in [0, 7, -1, 10, -10, 123_456, i64::MAX, i64::MIN] {
            assert_eq!(&*Text::int(i), i.to_string().as_bytes(), "{i}");
        }
    }
}
