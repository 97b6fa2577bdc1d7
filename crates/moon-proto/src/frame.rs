//! Replies and their encoding.
//!
//! A [`Frame`] is protocol-neutral: the same value encodes to RESP2 or RESP3 depending on what the
//! connection negotiated with `HELLO`. RESP3-only types degrade the way Redis degrades them
//! (maps become flat arrays, doubles become bulk strings, booleans become integers, nulls become
//! `$-1`/`*-1`).

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol version a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// One reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// `+OK`-style status; static so that common replies never allocate.
    Simple(&'static str),
    /// A status built at run time (e.g. `TYPE`'s reply).
    SimpleOwned(String),
    /// An error line without the leading `-`, e.g. `ERR syntax error`.
    Error(String),
    /// A static error line, for the hot error replies.
    StaticError(&'static str),
    Integer(i64),
    Bulk(Bytes),
    /// The null bulk string (`$-1` / `_`).
    Null,
    /// The null array (`*-1` / `_`), e.g. a WATCH-aborted EXEC.
    NullArray,
    Array(Vec<Frame>),
    /// A map: RESP3 `%`, RESP2 flat array of key, value, ...
    Map(Vec<(Frame, Frame)>),
    /// A set: RESP3 `~`, RESP2 array (SMEMBERS, SINTER, ...).
    Set(Vec<Frame>),
    /// Pairs: RESP3 an array of two-element arrays, RESP2 one flat array (HRANDFIELD ...
    /// WITHVALUES).
    Pairs(Vec<(Frame, Frame)>),
    /// Keys and their replies: RESP3 a map, RESP2 an array of two-element arrays (XREAD).
    KeyedReplies(Vec<(Frame, Frame)>),
    /// RESP3 `,` double, RESP2 bulk string.
    Double(f64),
    /// A double printed as Redis prints coordinates (`addReplyHumanLongDouble`: 17 decimals,
    /// trailing zeros dropped): RESP3 `,`, RESP2 bulk string.
    HumanDouble(f64),
    /// RESP3 `#`, RESP2 integer 1/0.
    Bool(bool),
    /// RESP3 verbatim string `=` (txt), RESP2 bulk string.
    Verbatim(Bytes),
    /// Out-of-band data (pub/sub messages, invalidations): RESP3 push `>`, RESP2 array.
    Push(Vec<Frame>),
}

impl Frame {
    pub const OK: Frame = Frame::Simple("OK");

    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// Copies `data` into a new bulk reply.
    pub fn bulk_from_slice(data: &[u8]) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(data))
    }

    pub fn error(msg: impl Into<String>) -> Frame {
        Frame::Error(msg.into())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::StaticError(_))
    }

    /// The error text, if this is an error reply.
    pub fn error_text(&self) -> Option<&str> {
        match self {
            Frame::Error(s) => Some(s),
            Frame::StaticError(s) => Some(s),
            _ => None,
        }
    }

    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::SimpleOwned(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(s) => error_line(out, s.as_bytes()),
            Frame::StaticError(s) => error_line(out, s.as_bytes()),
            Frame::Integer(i) => int_line(out, b':', *i),
            Frame::Bulk(b) => bulk(out, b),
            Frame::Null => match proto {
                Protocol::Resp2 => out.put_slice(b"$-1\r\n"),
                Protocol::Resp3 => out.put_slice(b"_\r\n"),
            },
            Frame::NullArray => match proto {
                Protocol::Resp2 => out.put_slice(b"*-1\r\n"),
                Protocol::Resp3 => out.put_slice(b"_\r\n"),
            },
            Frame::Array(items) => {
                int_line(out, b'*', items.len() as i64);
                for item in items {
                    item.encode(proto, out);
                }
            }
            Frame::Push(items) => {
                match proto {
                    Protocol::Resp2 => int_line(out, b'*', items.len() as i64),
                    Protocol::Resp3 => int_line(out, b'>', items.len() as i64),
                }
                for item in items {
                    item.encode(proto, out);
                }
            }
            Frame::Map(pairs) => {
                match proto {
                    Protocol::Resp2 => int_line(out, b'*', 2 * pairs.len() as i64),
                    Protocol::Resp3 => int_line(out, b'%', pairs.len() as i64),
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Set(items) => {
                match proto {
                    Protocol::Resp2 => int_line(out, b'*', items.len() as i64),
                    Protocol::Resp3 => int_line(out, b'~', items.len() as i64),
                }
                for item in items {
                    item.encode(proto, out);
                }
            }
            Frame::Pairs(pairs) => {
                match proto {
                    Protocol::Resp2 => int_line(out, b'*', 2 * pairs.len() as i64),
                    Protocol::Resp3 => int_line(out, b'*', pairs.len() as i64),
                }
                for (k, v) in pairs {
                    if proto == Protocol::Resp3 {
                        out.put_slice(b"*2\r\n");
                    }
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Double(d) => {
                let text = format_double_reply(*d);
                match proto {
                    Protocol::Resp2 => bulk(out, text.as_bytes()),
                    Protocol::Resp3 => line(out, b',', text.as_bytes()),
                }
            }
            Frame::KeyedReplies(pairs) => match proto {
                Protocol::Resp3 => {
                    int_line(out, b'%', pairs.len() as i64);
                    for (k, v) in pairs {
                        k.encode(proto, out);
                        v.encode(proto, out);
                    }
                }
                Protocol::Resp2 => {
                    int_line(out, b'*', pairs.len() as i64);
                    for (k, v) in pairs {
                        out.put_slice(b"*2\r\n");
                        k.encode(proto, out);
                        v.encode(proto, out);
                    }
                }
            },
            Frame::HumanDouble(d) => {
                let text = format_human_double(*d);
                match proto {
                    Protocol::Resp2 => bulk(out, text.as_bytes()),
                    Protocol::Resp3 => line(out, b',', text.as_bytes()),
                }
            }
            Frame::Bool(b) => match proto {
                Protocol::Resp2 => int_line(out, b':', i64::from(*b)),
                Protocol::Resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            },
            Frame::Verbatim(b) => match proto {
                Protocol::Resp2 => bulk(out, b),
                Protocol::Resp3 => {
                    int_line(out, b'=', b.len() as i64 + 4);
                    out.put_slice(b"txt:");
                    out.put_slice(b);
                    out.put_slice(b"\r\n");
                }
            },
        }
    }
}

/// Formats a double the way Redis does for replies (`17.5`, `3`, `inf`, `-inf`).
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        if d > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if d.is_nan() {
        "nan".into()
    } else {
        let s = format!("{d}");
        s
    }
}

/// A double as Redis prints a coordinate (`ld2string`'s human mode): 17 decimals of its exact
/// value, trailing zeros and a bare point dropped, `-0` as `0`.
pub fn format_human_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.into();
    }
    let mut s = format!("{d:.17}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// A double as Redis replies with one (`addReplyDouble`: ZSCORE, ZRANGE WITHSCORES...):
/// `inf`, `-inf`, `nan`, `0`/`-0`, else C's `%.17g` — 17 significant digits, trailing zeros
/// dropped, exponent form below 1e-4 and from 1e17 (`1.1000000000000001`, `1e+20`,
/// `9.9999999999999995e-08`). Every such text parses back to the same double. (Redis 7.2+
/// prints the shortest form instead; the issue and the 7.0 test units ask for 17 digits.)
pub fn format_double_reply(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if d.is_sign_negative() { "-" } else { "" };
    if d == 0.0 {
        return format!("{sign}0");
    }
    // A whole number below 1e17 prints as itself (%.17g keeps all of its digits): the common
    // case (counters, timestamps, ranks as scores) without the formatting below.
    if d.fract() == 0.0 && d.abs() < 1e17 {
        return itoa_buf(d as i64).as_str().to_string();
    }
    format!("{sign}{}", format_g(d.abs(), 17))
}

/// A finite, non-zero `d` as C's `%.{precision}g` prints it: `precision` significant digits
/// (Rust rounds exactly, as printf does), trailing zeros dropped, the exponent form below 1e-4
/// and from 10^precision (the number formats of Redis's replies, and of lua-cjson's `%.14g`).
pub fn format_g(d: f64, precision: usize) -> String {
    let sci = format!("{:.*e}", precision - 1, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |t: &str| -> String {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t.to_string()
        }
    };
    if exp < -4 || exp >= precision as i32 {
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{}e{esign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{d:.decimals$}"))
    }
}

/// An error line: a CR or LF inside the text would end the reply early and make the rest read
/// as another one, so each becomes a space (as Redis's `addReplyError` does).
fn error_line(out: &mut BytesMut, body: &[u8]) {
    let start = out.len();
    line(out, b'-', body);
    let end = out.len() - 2;
    for b in &mut out[start + 1..end] {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
}

fn line(out: &mut BytesMut, prefix: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(prefix);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// `<prefix><n>\r\n`: an array's or a bulk string's length, or an integer reply. Most are
/// below 100 (an array of ten, a 32-byte value), written in one piece; the others through
/// [`itoa_buf`]. (Formatting them was a seventh of a `ZRANGE 0 9 WITHSCORES`.)
fn int_line(out: &mut BytesMut, prefix: u8, n: i64) {
    if (0..10).contains(&n) {
        out.put_slice(&[prefix, b'0' + n as u8, b'\r', b'\n']);
    } else if (10..100).contains(&n) {
        out.put_slice(&[
            prefix,
            b'0' + (n / 10) as u8,
            b'0' + (n % 10) as u8,
            b'\r',
            b'\n',
        ]);
    } else {
        let buf = itoa_buf(n);
        let digits = buf.digits();
        out.reserve(digits.len() + 3);
        out.put_u8(prefix);
        out.put_slice(digits);
        out.put_slice(b"\r\n");
    }
}

fn bulk(out: &mut BytesMut, data: &[u8]) {
    int_line(out, b'$', data.len() as i64);
    out.reserve(data.len() + 2);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A stack buffer holding the decimal digits of an i64 (no heap allocation).
struct ItoaBuf {
    bytes: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    fn as_str(&self) -> &str {
        // Only ASCII digits and '-' are ever written.
        std::str::from_utf8(self.digits()).unwrap_or("0")
    }

    fn digits(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn itoa_buf(n: i64) -> ItoaBuf {
    let mut bytes = [0u8; 20];
    let mut pos = bytes.len();
    let negative = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        pos -= 1;
        bytes[pos] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        pos -= 1;
        bytes[pos] = b'-';
    }
    ItoaBuf { bytes, start: pos }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &Frame, p: Protocol) -> String {
        let mut out = BytesMut::new();
        f.encode(p, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// Every integer, on both sides of the short forms' bounds, as Rust prints it.
    #[test]
    fn an_integer_line_is_its_decimal_text() {
        for n in [
            i64::MIN,
            -100,
            -11,
            -10,
            -9,
            -1,
            0,
            1,
            9,
            10,
            11,
            42,
            99,
            100,
            101,
            12345,
            i64::MAX,
        ] {
            let mut out = BytesMut::new();
            int_line(&mut out, b':', n);
            assert_eq!(&out[..], format!(":{n}\r\n").as_bytes());
        }
        assert_eq!(
            enc(
                &Frame::Bulk(Bytes::from_static(b"0123456789")),
                Protocol::Resp2
            ),
            "$10\r\n0123456789\r\n"
        );
    }

    /// An error text with a line break (a script's error_reply, a file's text) stays one
    /// reply: each CR or LF becomes a space.
    #[test]
    fn an_error_is_one_line_whatever_its_text() {
        assert_eq!(
            enc(&Frame::Error("ERR a\r\nb\nc\rd".into()), Protocol::Resp2),
            "-ERR a  b c d\r\n"
        );
        assert_eq!(
            enc(&Frame::StaticError("ERR x"), Protocol::Resp3),
            "-ERR x\r\n"
        );
    }

    #[test]
    fn resp2_and_resp3_encodings() {
        assert_eq!(enc(&Frame::OK, Protocol::Resp2), "+OK\r\n");
        assert_eq!(enc(&Frame::Integer(-42), Protocol::Resp2), ":-42\r\n");
        assert_eq!(
            enc(&Frame::Integer(i64::MIN), Protocol::Resp2),
            ":-9223372036854775808\r\n"
        );
        assert_eq!(enc(&Frame::Null, Protocol::Resp2), "$-1\r\n");
        assert_eq!(enc(&Frame::Null, Protocol::Resp3), "_\r\n");
        assert_eq!(enc(&Frame::NullArray, Protocol::Resp2), "*-1\r\n");
        assert_eq!(enc(&Frame::bulk("hi"), Protocol::Resp2), "$2\r\nhi\r\n");
        let map = Frame::Map(vec![(Frame::bulk("a"), Frame::Integer(1))]);
        assert_eq!(enc(&map, Protocol::Resp2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, Protocol::Resp3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&Frame::Double(1.5), Protocol::Resp2), "$3\r\n1.5\r\n");
        assert_eq!(enc(&Frame::Double(1.5), Protocol::Resp3), ",1.5\r\n");
        // What Redis 7.0.15's ZSCORE printed for each (checked against redis-server).
        for (d, text) in [
            (1.1, "1.1000000000000001"),
            (0.1, "0.10000000000000001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1e20, "1e+20"),
            (1.5e20, "1.5e+20"),
            (12345678.0, "12345678"),
            (1e7, "10000000"),
            (0.0001, "0.0001"),
            (1e-7, "9.9999999999999995e-08"),
            (1.25e-5, "1.2500000000000001e-05"),
            (1.25e-4, "0.000125"),
            (-2.5, "-2.5"),
            (1700000000123.0, "1700000000123"),
            (1e17, "1e+17"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.934_807_939_424_555_8, "0.93480793942455576"),
            (1e-300, "1e-300"),
            (5e-324, "4.9406564584124654e-324"),
            (1e16, "10000000000000000"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_double_reply(d), text, "{d:e}");
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), d.to_bits());
        }
        assert_eq!(enc(&Frame::Bool(true), Protocol::Resp3), "#t\r\n");
        assert_eq!(enc(&Frame::Bool(false), Protocol::Resp2), ":0\r\n");
        assert_eq!(enc(&Frame::error("ERR x"), Protocol::Resp2), "-ERR x\r\n");
        assert_eq!(
            enc(&Frame::Verbatim("ab".into()), Protocol::Resp3),
            "=6\r\ntxt:ab\r\n"
        );
    }
}
