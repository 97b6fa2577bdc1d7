//! Argument parsing shared by every command family and by the server: integers and floats as
//! Redis reads them, keywords compared without case. The bottom of the crate: it imports
//! nothing from it.

use bytes::Bytes;

/// Parses a Redis integer argument strictly (like `string2ll`).
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let (neg, digits) = if b[0] == b'-' {
        (true, &b[1..])
    } else {
        (false, b)
    };
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) || (neg && digits == b"0") {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = if neg {
            v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?
        } else {
            v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?
        };
    }
    Some(v)
}

/// Parses a Redis float argument (like `string2ld`): no surrounding spaces, no NaN.
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

/// [`parse_f64`] as Redis's `getDoubleFromObject` (strtod) reads a double: also refusing
/// strtod's ERANGE, a finite number too large (not "inf") or too small to be anything but 0.
pub fn parse_f64_strict(b: &[u8]) -> Option<f64> {
    let v = parse_f64(b)?;
    let s = std::str::from_utf8(b).ok()?;
    let digits = s.split(['e', 'E']).next().unwrap_or("");
    let unsigned = digits.trim_start_matches(['+', '-']);
    let literal_inf =
        unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity");
    if v.is_infinite() && !literal_inf {
        return None;
    }
    if v == 0.0 && digits.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        return None;
    }
    Some(v)
}

/// An integer reply's or value's text.
pub fn int_bytes(v: i64) -> Bytes {
    Bytes::from(v.to_string())
}

/// Whether an argument is `b`, ignoring ASCII case (command names, options).
pub fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// An argument as text (invalid UTF-8 replaced), for messages and names.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `ON` or `OFF` (any case), as CLIENT TRACKING / NO-TOUCH / NO-EVICT take it.
pub fn on_off(arg: &[u8]) -> Option<bool> {
    if eq(arg, "on") {
        Some(true)
    } else if eq(arg, "off") {
        Some(false)
    } else {
        None
    }
}
