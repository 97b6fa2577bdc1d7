//! `struct`: packing numbers and strings into binary strings and back (`struct.pack`,
//! `struct.unpack`, `struct.size`), as the library Redis loads (Roberto Ierusalimschy's
//! `struct` for Lua 5.1) does it on a 64-bit little-endian machine.
//!
//! A format is a list of options, each optionally followed by a number:
//! `>` `<` (big / little endian, little by default), `![n]` (alignment, 8 when `n` is absent;
//! none by default), `x` (a zero byte), `b` `B` `h` `H` `l` `L` `T` (signed / unsigned 1, 2, 8
//! byte integers, and 8 for size_t), `i[n]` `I[n]` (an n-byte integer, 4 by default, at most
//! 32), `f` `d` (float, double), `c[n]` (n bytes of a string; `c0` is the whole string when
//! packing, and when unpacking a length read by the option just before it), `s` (a
//! zero-terminated string), and spaces, which are ignored. Numbers are Lua numbers (doubles):
//! integers are converted as C converts a double, and unpacked into doubles again.
//!
//! Formats and data are a script's input: every size is checked against the data before it
//! is read, and a pack's output is bounded by what its arguments hold.

use mlua::{Lua, MultiValue, Table, Value, Variadic};

/// The largest string `pack` builds: what a Lua state may hold (engine.rs).
const MAX_PACKED: usize = 512 << 20;

/// The most values `unpack` returns: each is a value mlua holds for Rust until it returns
/// (see gate.rs); Redis stops near 8000 ("too many results").
pub(crate) const MAX_RESULTS: usize = 4000;

/// Widest integer option (`i32`).
const MAX_INT_SIZE: usize = 32;
/// `!` without a number: the strictest alignment of the machine's types.
const MAX_ALIGN: usize = 8;

pub(crate) fn library(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, args: Variadic<Value>| pack(lua, &args))?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, args: Variadic<Value>| unpack(lua, &args))?,
    )?;
    t.raw_set(
        "size",
        lua.create_function(|_, args: Variadic<Value>| size(&args))?,
    )?;
    Ok(t)
}

fn runtime(text: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(text.into())
}

/// Lua's "bad argument" error of function `f`.
fn bad_argument(n: usize, f: &str, what: &str) -> mlua::Error {
    runtime(format!("bad argument #{n} to '{f}' ({what})"))
}

/// A string argument, borrowed from Lua where it is one (a number is formatted as Lua does).
enum Text<'a> {
    Lua(mlua::BorrowedBytes<'a>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Text<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Text::Lua(b) => b,
            Text::Owned(v) => v,
        }
    }
}

fn string_arg<'a>(args: &'a [Value], n: usize, f: &str) -> mlua::Result<Text<'a>> {
    match args.get(n - 1) {
        Some(Value::String(s)) => Ok(Text::Lua(s.as_bytes())),
        Some(Value::Integer(i)) => Ok(Text::Owned(i.to_string().into_bytes())),
        Some(Value::Number(x)) => Ok(Text::Owned(
            moon_proto::frame::format_g(*x, 14).into_bytes(),
        )),
        other => Err(bad_argument(
            n,
            f,
            &format!(
                "string expected, got {}",
                other.map_or("no value", |v| v.type_name())
            ),
        )),
    }
}

fn number_arg(args: &[Value], n: usize, f: &str) -> mlua::Result<f64> {
    let v = args.get(n - 1);
    let parsed = match v {
        Some(Value::Number(x)) => Some(*x),
        Some(Value::Integer(i)) => Some(*i as f64),
        Some(Value::String(s)) => s.to_str().ok().and_then(|s| s.trim().parse().ok()),
        _ => None,
    };
    parsed.ok_or_else(|| {
        bad_argument(
            n,
            f,
            &format!(
                "number expected, got {}",
                v.map_or("no value", |v| v.type_name())
            ),
        )
    })
}

/// Where a format is read, and the byte order and alignment its options set so far.
struct Format<'a> {
    fmt: &'a [u8],
    at: usize,
    little: bool,
    align: usize,
    f: &'static str,
}

impl<'a> Format<'a> {
    fn new(fmt: &'a [u8], f: &'static str) -> Format<'a> {
        Format {
            fmt,
            at: 0,
            little: true,
            align: 1,
            f,
        }
    }

    /// The number after an option, or `default`.
    fn number(&mut self, default: usize) -> mlua::Result<usize> {
        if !self.fmt.get(self.at).is_some_and(u8::is_ascii_digit) {
            return Ok(default);
        }
        let mut n: usize = 0;
        while let Some(d) = self.fmt.get(self.at).filter(|d| d.is_ascii_digit()) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(d - b'0')))
                .filter(|n| *n <= i32::MAX as usize)
                .ok_or_else(|| runtime("integral size overflow"))?;
            self.at += 1;
        }
        Ok(n)
    }

    /// The next option and its size (0 for those that take no room by themselves).
    fn next(&mut self) -> mlua::Result<Option<(u8, usize)>> {
        let Some(&opt) = self.fmt.get(self.at) else {
            return Ok(None);
        };
        self.at += 1;
        let size = match opt {
            b'b' | b'B' | b'x' => 1,
            b'h' | b'H' => 2,
            b'l' | b'L' | b'T' | b'd' => 8,
            b'f' => 4,
            b'c' => self.number(1)?,
            b'i' | b'I' => {
                let n = self.number(4)?;
                if n > MAX_INT_SIZE {
                    return Err(runtime(format!(
                        "integral size {n} is larger than limit of {MAX_INT_SIZE}"
                    )));
                }
                n
            }
            _ => 0,
        };
        Ok(Some((opt, size)))
    }

    /// Zero bytes before an item of `size` at offset `len`.
    fn padding(&self, len: usize, opt: u8, size: usize) -> usize {
        if size == 0 || opt == b'c' {
            return 0;
        }
        let size = size.min(self.align);
        (size.wrapping_sub(len & size.wrapping_sub(1))) & size.wrapping_sub(1)
    }

    /// A byte-order, alignment or space option; an error for anything else.
    fn control(&mut self, opt: u8) -> mlua::Result<()> {
        match opt {
            b' ' => {}
            b'>' => self.little = false,
            b'<' => self.little = true,
            b'!' => {
                let a = self.number(MAX_ALIGN)?;
                if !a.is_power_of_two() {
                    return Err(runtime(format!("alignment {a} is not a power of 2")));
                }
                self.align = a;
            }
            other => {
                return Err(bad_argument(
                    1,
                    self.f,
                    &format!("invalid format option '{}'", other as char),
                ))
            }
        }
        Ok(())
    }
}

/// A double as C converts it for the library: negative through a signed 64-bit integer.
fn integer_bits(n: f64) -> u64 {
    if n < 0.0 {
        n as i64 as u64
    } else {
        n as u64
    }
}

fn pack(lua: &Lua, args: &[Value]) -> mlua::Result<mlua::String> {
    let fmt = string_arg(args, 1, "pack")?;
    let mut fmt = Format::new(&fmt, "pack");
    let mut out: Vec<u8> = Vec::new();
    let mut arg = 2;
    while let Some((opt, size)) = fmt.next()? {
        let pad = fmt.padding(out.len(), opt, size);
        if out.len().saturating_add(pad).saturating_add(size) > MAX_PACKED {
            return Err(runtime("not enough memory"));
        }
        out.resize(out.len() + pad, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let mut v = integer_bits(number_arg(args, arg, "pack")?);
                arg += 1;
                let mut bytes = vec![0u8; size];
                for b in bytes.iter_mut() {
                    *b = v as u8;
                    v = v.checked_shr(8).unwrap_or(0);
                }
                if !fmt.little {
                    bytes.reverse();
                }
                out.extend_from_slice(&bytes);
            }
            b'x' => out.push(0),
            b'f' => {
                let f = number_arg(args, arg, "pack")? as f32;
                arg += 1;
                out.extend_from_slice(&if fmt.little {
                    f.to_le_bytes()
                } else {
                    f.to_be_bytes()
                });
            }
            b'd' => {
                let d = number_arg(args, arg, "pack")?;
                arg += 1;
                out.extend_from_slice(&if fmt.little {
                    d.to_le_bytes()
                } else {
                    d.to_be_bytes()
                });
            }
            b'c' | b's' => {
                let s = string_arg(args, arg, "pack")?;
                arg += 1;
                let n = if size == 0 { s.len() } else { size };
                if s.len() < n {
                    return Err(bad_argument(arg, "pack", "string too short"));
                }
                if out.len().saturating_add(n) > MAX_PACKED {
                    return Err(runtime("not enough memory"));
                }
                out.extend_from_slice(&s[..n]);
                if opt == b's' {
                    out.push(0);
                }
            }
            other => fmt.control(other)?,
        }
    }
    lua.create_string(&out)
}

fn unpack(lua: &Lua, args: &[Value]) -> mlua::Result<MultiValue> {
    let fmt = string_arg(args, 1, "unpack")?;
    let data = string_arg(args, 2, "unpack")?;
    let start = match args.get(2) {
        None | Some(Value::Nil) => 1.0,
        Some(_) => number_arg(args, 3, "unpack")?,
    };
    // As C reads it: an integer (truncated; NaN is 0), a negative one as a huge size.
    let start = start as i64;
    if start == 0 {
        return Err(bad_argument(3, "unpack", "offset must be 1 or greater"));
    }
    let mut pos = if start < 0 {
        usize::MAX
    } else {
        (start - 1) as usize
    };
    let mut fmt = Format::new(&fmt, "unpack");
    let mut out: Vec<Value> = Vec::new();
    let too_short = || bad_argument(2, "unpack", "data string too short");
    while let Some((opt, mut size)) = fmt.next()? {
        if out.len() >= MAX_RESULTS {
            return Err(runtime("too many results"));
        }
        pos = pos.saturating_add(fmt.padding(pos, opt, size));
        if size > data.len() || pos > data.len() - size {
            return Err(too_short());
        }
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let mut bytes = data[pos..pos + size].to_vec();
                if fmt.little {
                    bytes.reverse();
                }
                let mut v: u64 = 0;
                for b in bytes {
                    v = (v << 8) | u64::from(b);
                }
                let n = if opt.is_ascii_lowercase() {
                    let mask = (size as u32 * 8)
                        .checked_sub(1)
                        .and_then(|bits| u64::MAX.checked_shl(bits))
                        .unwrap_or(0);
                    if v & mask != 0 {
                        v |= mask;
                    }
                    v as i64 as f64
                } else {
                    v as f64
                };
                out.push(Value::Number(n));
            }
            b'x' => {}
            b'f' => {
                let b: [u8; 4] = data[pos..pos + 4].try_into().map_err(|_| too_short())?;
                let f = if fmt.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                out.push(Value::Number(f64::from(f)));
            }
            b'd' => {
                let b: [u8; 8] = data[pos..pos + 8].try_into().map_err(|_| too_short())?;
                out.push(Value::Number(if fmt.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                }));
            }
            b'c' => {
                if size == 0 {
                    let n = match out.pop() {
                        Some(Value::Number(n)) => n,
                        Some(Value::String(s)) => s
                            .to_str()
                            .ok()
                            .and_then(|s| s.trim().parse::<f64>().ok())
                            .ok_or_else(|| runtime("format 'c0' needs a previous size"))?,
                        _ => return Err(runtime("format 'c0' needs a previous size")),
                    };
                    // As C converts it: a negative length is a huge one.
                    size = if n < 0.0 { usize::MAX } else { n as usize };
                    if size > data.len() || pos > data.len() - size {
                        return Err(too_short());
                    }
                }
                out.push(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = data[pos..].iter().position(|b| *b == 0) else {
                    return Err(runtime("unfinished string in data"));
                };
                out.push(Value::String(lua.create_string(&data[pos..pos + end])?));
                size = end + 1;
            }
            other => fmt.control(other)?,
        }
        pos += size;
    }
    out.push(Value::Number(pos as f64 + 1.0));
    Ok(MultiValue::from_vec(out))
}

fn size(args: &[Value]) -> mlua::Result<f64> {
    let fmt = string_arg(args, 1, "size")?;
    let mut fmt = Format::new(&fmt, "size");
    let mut pos: usize = 0;
    while let Some((opt, size)) = fmt.next()? {
        pos = pos.saturating_add(fmt.padding(pos, opt, size));
        match opt {
            b's' => return Err(bad_argument(1, "size", "option 's' has no fixed size")),
            b'c' if size == 0 => {
                return Err(bad_argument(1, "size", "option 'c0' has no fixed size"))
            }
            // As Redis's: letters it does not know are skipped here (pack refuses them).
            other if other.is_ascii_alphanumeric() => {}
            other => fmt.control(other)?,
        }
        pos = pos.saturating_add(size);
    }
    Ok(pos as f64)
}
