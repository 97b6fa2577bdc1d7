//! The libraries Redis loads into its Lua state besides Lua's own, that scripts in the wild
//! depend on: `cjson` (JSON), `cmsgpack` (MessagePack: BullMQ packs job data with it) and `bit`
//! (LuaBitOp). Written here in Rust over mlua values, with Redis's behaviour: lua-cjson's
//! number format (`%.14g`), escaping and sparse-array rule; lua-cmsgpack's choice of the
//! smallest encoding; LuaBitOp's 32-bit arithmetic. `struct` is in `struct_lib.rs`.
//!
//! Their input is a script's argument (untrusted): every decoder bounds its nesting and never
//! trusts a length it has not seen the bytes of.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{LightUserData, Lua, MultiValue, Table, Value, Variadic};

/// Deepest nesting cjson and cmsgpack encode or decode (lua-cjson's default is 1000; the
/// decoders recurse, so they stop well before the thread's stack would).
const MAX_NESTING: usize = 128;

pub(crate) fn install(lua: &Lua, globals: &Table) -> mlua::Result<()> {
    globals.raw_set("bit", bit(lua)?)?;
    globals.raw_set("cjson", cjson(lua)?)?;
    globals.raw_set("cmsgpack", cmsgpack(lua)?)?;
    globals.raw_set("struct", crate::struct_lib::library(lua)?)?;
    for name in ["cjson", "cmsgpack", "struct"] {
        let lib: Table = globals.raw_get(name)?;
        positioned(lua, &lib)?;
    }
    Ok(())
}

/// Makes the errors of `lib`'s functions what a C library's are: Lua errors whose text starts
/// with the position of the script line that called (`user_script:3: Expected value...`).
fn positioned(lua: &Lua, lib: &Table) -> mlua::Result<()> {
    let mut functions = Vec::new();
    for pair in lib.pairs::<Value, Value>() {
        if let (name, Value::Function(f)) = pair? {
            functions.push((name, f));
        }
    }
    for (name, f) in functions {
        let wrapped = lua.create_function(move |lua, args: MultiValue| {
            f.call::<MultiValue>(args).map_err(|e| {
                let text = crate::errors::lua_text(&e);
                let at = crate::errors::script_position(lua);
                mlua::Error::RuntimeError(format!("{}{at}{text}", crate::convert::LUA_TEXT))
            })
        })?;
        lib.raw_set(name, wrapped)?;
    }
    Ok(())
}

fn runtime(text: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(text.into())
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        Value::Integer(n) => Some(*n as f64),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// bit: LuaBitOp. Every argument is taken modulo 2^32 and every result is a signed 32-bit number.

fn tobit(v: &Value) -> mlua::Result<i32> {
    let n =
        number_of(v).ok_or_else(|| runtime("bad argument to bit operation (number expected)"))?;
    if !n.is_finite() {
        return Ok(0);
    }
    let r = n.round_ties_even();
    Ok(r.rem_euclid(4_294_967_296.0) as u32 as i32)
}

fn bit(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("tobit", lua.create_function(|_, v: Value| tobit(&v))?)?;
    t.raw_set("bnot", lua.create_function(|_, v: Value| Ok(!tobit(&v)?))?)?;
    type Fold = fn(i32, i32) -> i32;
    for (name, f) in [
        ("band", (|a, b| a & b) as Fold),
        ("bor", |a, b| a | b),
        ("bxor", |a, b| a ^ b),
    ] {
        t.raw_set(
            name,
            lua.create_function(move |_, args: Variadic<Value>| {
                let mut it = args.iter();
                let first = it
                    .next()
                    .ok_or_else(|| runtime("bad argument #1 to bit operation (number expected)"))?;
                it.try_fold(tobit(first)?, |acc, v| Ok(f(acc, tobit(v)?)))
            })?,
        )?;
    }
    type Shift = fn(u32, u32) -> u32;
    for (name, f) in [
        ("lshift", (|x, n| x << (n & 31)) as Shift),
        ("rshift", |x, n| x >> (n & 31)),
        ("arshift", |x, n| ((x as i32) >> (n & 31)) as u32),
        ("rol", |x: u32, n| x.rotate_left(n & 31)),
        ("ror", |x: u32, n| x.rotate_right(n & 31)),
    ] {
        t.raw_set(
            name,
            lua.create_function(move |_, (x, n): (Value, Value)| {
                Ok(f(tobit(&x)? as u32, tobit(&n)? as u32) as i32)
            })?,
        )?;
    }
    t.raw_set(
        "bswap",
        lua.create_function(|_, v: Value| Ok((tobit(&v)? as u32).swap_bytes() as i32))?,
    )?;
    t.raw_set(
        "tohex",
        lua.create_function(|_, (v, n): (Value, Option<Value>)| {
            let x = tobit(&v)? as u32;
            let n = match n {
                Some(n) => tobit(&n)?,
                None => 8,
            };
            let (digits, upper) = (n.unsigned_abs().min(8) as usize, n < 0);
            let text = if upper {
                format!("{x:08X}")
            } else {
                format!("{x:08x}")
            };
            Ok(text[8 - digits..].to_string())
        })?,
    )?;
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// cjson

/// `%.{precision}g`, as C prints it.
fn format_g(d: f64, precision: usize) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.into();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.into();
    }
    moon_proto::frame::format_g(d, precision)
}

fn is_null(v: &Value) -> bool {
    matches!(v, Value::LightUserData(p) if p.0.is_null())
}

fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// The cjson settings a script may change (`cjson.encode_max_depth`...). As in Redis, they
/// last as long as the Lua state: a script that changes them is expected to put them back.
#[derive(Clone, Copy, Debug)]
struct JsonSettings {
    /// Nesting allowed (lua-cjson's 1000 by default; Moon holds it at [`MAX_NESTING`]).
    encode_max_depth: usize,
    decode_max_depth: usize,
    /// NaN and infinities: refused (`false`), written as `nan`/`inf` (`true`), or `null`.
    invalid_numbers: InvalidNumbers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InvalidNumbers {
    Refuse,
    Allow,
    Null,
}

impl Default for JsonSettings {
    fn default() -> Self {
        JsonSettings {
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            invalid_numbers: InvalidNumbers::Refuse,
        }
    }
}

fn json_number(out: &mut Vec<u8>, n: f64, settings: &JsonSettings) -> mlua::Result<()> {
    if !n.is_finite() {
        match settings.invalid_numbers {
            InvalidNumbers::Refuse => {
                return Err(runtime("Cannot serialise number: must not be NaN or Inf"))
            }
            InvalidNumbers::Null => out.extend_from_slice(b"null"),
            InvalidNumbers::Allow if n.is_nan() => out.extend_from_slice(b"nan"),
            InvalidNumbers::Allow if n > 0.0 => out.extend_from_slice(b"inf"),
            InvalidNumbers::Allow => out.extend_from_slice(b"-inf"),
        }
        return Ok(());
    }
    out.extend_from_slice(format_g(n, 14).as_bytes());
    Ok(())
}

/// Checks a JSON text's nesting against `max` before it is parsed: lua-cjson's error, with
/// the (1-based) position of the bracket that went too deep.
fn json_depth_ok(text: &[u8], max: usize) -> mlua::Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(runtime(format!(
                        "Found too many nested data structures ({depth}) at character {}",
                        i + 1
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A table's array length if it is an array (positive integer keys only, not excessively
/// sparse: lua-cjson's rule), `None` if it is an object. An empty table is an object.
fn array_len(t: &Table) -> mlua::Result<Option<usize>> {
    let (mut max, mut items) = (0usize, 0usize);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let index = match k {
            Value::Integer(i) if i >= 1 => i as usize,
            Value::Number(n) if n >= 1.0 && n.fract() == 0.0 && n < 1e15 => n as usize,
            _ => return Ok(None),
        };
        max = max.max(index);
        items += 1;
    }
    if items == 0 {
        return Ok(None);
    }
    if max > 10 && max > 2 * items {
        return Err(runtime("Cannot serialise table: excessively sparse array"));
    }
    Ok(Some(max))
}

fn json_encode(
    out: &mut Vec<u8>,
    v: &Value,
    depth: usize,
    settings: &JsonSettings,
) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        v if is_null(v) => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(n) => json_number(out, *n as f64, settings)?,
        Value::Number(n) => json_number(out, *n, settings)?,
        Value::String(s) => json_string(out, &s.as_bytes()),
        Value::Table(t) => {
            if depth >= MAX_NESTING.min(settings.encode_max_depth) {
                return Err(runtime(format!(
                    "Cannot serialise, excessive nesting ({})",
                    depth + 1
                )));
            }
            match array_len(t)? {
                Some(len) => {
                    out.push(b'[');
                    for i in 1..=len {
                        if i > 1 {
                            out.push(b',');
                        }
                        json_encode(out, &t.raw_get::<Value>(i)?, depth + 1, settings)?;
                    }
                    out.push(b']');
                }
                None => {
                    out.push(b'{');
                    let mut first = true;
                    for pair in t.pairs::<Value, Value>() {
                        let (k, v) = pair?;
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        match k {
                            Value::String(s) => json_string(out, &s.as_bytes()),
                            Value::Integer(n) => {
                                json_string(out, format_g(n as f64, 14).as_bytes())
                            }
                            Value::Number(n) => json_string(out, format_g(n, 14).as_bytes()),
                            _ => {
                                return Err(runtime(
                                    "Cannot serialise table: table key must be a number or string",
                                ))
                            }
                        }
                        out.push(b':');
                        json_encode(out, &v, depth + 1, settings)?;
                    }
                    out.push(b'}');
                }
            }
        }
        other => {
            return Err(runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    }
    Ok(())
}

fn json_to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Value::LightUserData(LightUserData(std::ptr::null_mut())),
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Value::String(lua.create_string(s)?),
        J::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_seti(i + 1, json_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        J::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(lua.create_string(k)?, json_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// `cjson.encode_max_depth(n)` and the like: sets the value when given (an integer from 1 to
/// 2^31-1), returns the current one.
fn depth_setting(
    settings: &Rc<Cell<JsonSettings>>,
    field: fn(&mut JsonSettings) -> &mut usize,
    name: &'static str,
) -> impl Fn(&Lua, Option<Value>) -> mlua::Result<i64> {
    let settings = settings.clone();
    move |_, n: Option<Value>| {
        let mut s = settings.get();
        if let Some(n) = n {
            let v = number_of(&n)
                .filter(|v| v.fract() == 0.0 && (1.0..=2_147_483_647.0).contains(v))
                .ok_or_else(|| {
                    runtime(format!(
                        "bad argument #1 to '{name}' (expected integer between 1 and 2147483647)"
                    ))
                })?;
            *field(&mut s) = v as usize;
            settings.set(s);
        }
        Ok(*field(&mut s) as i64)
    }
}

fn cjson(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let settings = Rc::new(Cell::new(JsonSettings::default()));
    let config = settings.clone();
    t.raw_set(
        "encode",
        lua.create_function(move |lua, v: Value| {
            let mut out = Vec::new();
            json_encode(&mut out, &v, 0, &config.get())?;
            lua.create_string(out)
        })?,
    )?;
    let config = settings.clone();
    t.raw_set(
        "decode",
        lua.create_function(move |lua, s: mlua::String| {
            // serde_json stops at 128 levels of nesting on its own.
            json_depth_ok(&s.as_bytes(), config.get().decode_max_depth)?;
            let v: serde_json::Value = serde_json::from_slice(&s.as_bytes())
                .map_err(|e| runtime(format!("Expected value but found invalid token: {e}")))?;
            json_to_lua(lua, &v)
        })?,
    )?;
    t.raw_set(
        "null",
        Value::LightUserData(LightUserData(std::ptr::null_mut())),
    )?;
    t.raw_set(
        "encode_max_depth",
        lua.create_function(depth_setting(
            &settings,
            |s| &mut s.encode_max_depth,
            "encode_max_depth",
        ))?,
    )?;
    t.raw_set(
        "decode_max_depth",
        lua.create_function(depth_setting(
            &settings,
            |s| &mut s.decode_max_depth,
            "decode_max_depth",
        ))?,
    )?;
    let config = settings.clone();
    t.raw_set(
        "encode_invalid_numbers",
        lua.create_function(move |lua, v: Option<Value>| {
            let mut s = config.get();
            if let Some(v) = v {
                s.invalid_numbers = match &v {
                    Value::Boolean(true) => InvalidNumbers::Allow,
                    Value::Boolean(false) => InvalidNumbers::Refuse,
                    Value::String(t) => match t.to_str().as_deref() {
                        Ok("on") => InvalidNumbers::Allow,
                        Ok("off") => InvalidNumbers::Refuse,
                        Ok("null") => InvalidNumbers::Null,
                        _ => {
                            return Err(runtime(
                                "bad argument #1 to 'encode_invalid_numbers' (invalid option)",
                            ))
                        }
                    },
                    _ => {
                        return Err(runtime(
                            "bad argument #1 to 'encode_invalid_numbers' (invalid option)",
                        ))
                    }
                };
                config.set(s);
            }
            Ok(match s.invalid_numbers {
                InvalidNumbers::Allow => Value::Boolean(true),
                InvalidNumbers::Refuse => Value::Boolean(false),
                InvalidNumbers::Null => Value::String(lua.create_string("null")?),
            })
        })?,
    )?;
    // Configuration calls scripts make whose settings stay lua-cjson's defaults here.
    for name in [
        "encode_keep_buffer",
        "encode_number_precision",
        "encode_sparse_array",
        "decode_invalid_numbers",
    ] {
        t.raw_set(name, lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// cmsgpack

fn mp_encode(out: &mut Vec<u8>, v: &Value, depth: usize) -> mlua::Result<()> {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(n) => mp_int(out, *n),
        Value::Number(n) => {
            if n.fract() == 0.0 && n.abs() < 9.2e18 {
                mp_int(out, *n as i64)
            } else if (*n as f32) as f64 == *n {
                out.push(0xca);
                out.extend_from_slice(&(*n as f32).to_be_bytes());
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::String(s) => {
            let b = s.as_bytes();
            let len = b.len();
            if len < 32 {
                out.push(0xa0 | len as u8);
            } else if len < 256 {
                out.extend_from_slice(&[0xd9, len as u8]);
            } else if len < 65536 {
                out.push(0xda);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(0xdb);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            out.extend_from_slice(&b);
        }
        Value::Table(t) if depth < 16 => {
            // lua-cmsgpack: an array when its keys are exactly 1..n.
            let n = t.raw_len();
            let count = t.pairs::<Value, Value>().count();
            if n > 0 && count == n {
                mp_len(out, n, 0x90, 0xdc, 0xdd);
                for i in 1..=n {
                    mp_encode(out, &t.raw_get::<Value>(i)?, depth + 1)?;
                }
            } else {
                mp_len(out, count, 0x80, 0xde, 0xdf);
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    mp_encode(out, &k, depth + 1)?;
                    mp_encode(out, &v, depth + 1)?;
                }
            }
        }
        // Deeper than 16 levels, or a type MessagePack has no form for: nil, as lua-cmsgpack.
        _ => out.push(0xc0),
    }
    Ok(())
}

fn mp_len(out: &mut Vec<u8>, n: usize, fix: u8, b16: u8, b32: u8) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n < 65536 {
        out.push(b16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn mp_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        let u = n as u64;
        if u < 128 {
            out.push(u as u8);
        } else if u < 256 {
            out.extend_from_slice(&[0xcc, u as u8]);
        } else if u < 65536 {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u < (1 << 32) {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -(1 << 31) {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

const MISSING: &str = "Missing bytes in input.";
const BAD: &str = "Bad data format in input.";

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> mlua::Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| runtime(MISSING))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> mlua::Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    fn value(&mut self, lua: &Lua, depth: usize) -> mlua::Result<Value> {
        if depth > MAX_NESTING {
            return Err(runtime(BAD));
        }
        let tag = self.take(1)?[0];
        let string = |r: &mut Reader<'a>, n: usize| -> mlua::Result<Value> {
            Ok(Value::String(lua.create_string(r.take(n)?)?))
        };
        Ok(match tag {
            0x00..=0x7f => Value::Integer(i64::from(tag)),
            0x80..=0x8f => self.map(lua, usize::from(tag & 0x0f), depth)?,
            0x90..=0x9f => self.array(lua, usize::from(tag & 0x0f), depth)?,
            0xa0..=0xbf => string(self, usize::from(tag & 0x1f))?,
            0xc0 => Value::Nil,
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xc4 | 0xd9 => {
                let n = self.uint(1)? as usize;
                string(self, n)?
            }
            0xc5 | 0xda => {
                let n = self.uint(2)? as usize;
                string(self, n)?
            }
            0xc6 | 0xdb => {
                let n = self.uint(4)? as usize;
                string(self, n)?
            }
            0xca => {
                let bits = self.uint(4)? as u32;
                Value::Number(f64::from(f32::from_bits(bits)))
            }
            0xcb => Value::Number(f64::from_bits(self.uint(8)?)),
            0xcc => Value::Integer(self.uint(1)? as i64),
            0xcd => Value::Integer(self.uint(2)? as i64),
            0xce => Value::Integer(self.uint(4)? as i64),
            0xcf => {
                let u = self.uint(8)?;
                // Beyond i64: a Lua number, as lua-cmsgpack gives (a double).
                i64::try_from(u).map_or(Value::Number(u as f64), Value::Integer)
            }
            0xd0 => Value::Integer(i64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Integer(i64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Integer(i64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Integer(self.uint(8)? as i64),
            0xdc => {
                let n = self.uint(2)? as usize;
                self.array(lua, n, depth)?
            }
            0xdd => {
                let n = self.uint(4)? as usize;
                self.array(lua, n, depth)?
            }
            0xde => {
                let n = self.uint(2)? as usize;
                self.map(lua, n, depth)?
            }
            0xdf => {
                let n = self.uint(4)? as usize;
                self.map(lua, n, depth)?
            }
            0xe0..=0xff => Value::Integer(i64::from(tag as i8)),
            _ => return Err(runtime(BAD)),
        })
    }

    fn array(&mut self, lua: &Lua, n: usize, depth: usize) -> mlua::Result<Value> {
        // Each element takes at least a byte: a count beyond the input is refused before any
        // room is made for it.
        if n > self.buf.len() - self.at {
            return Err(runtime(MISSING));
        }
        let t = lua.create_table_with_capacity(n, 0)?;
        for i in 1..=n {
            t.raw_seti(i, self.value(lua, depth + 1)?)?;
        }
        Ok(Value::Table(t))
    }

    fn map(&mut self, lua: &Lua, n: usize, depth: usize) -> mlua::Result<Value> {
        if n > (self.buf.len() - self.at) / 2 {
            return Err(runtime(MISSING));
        }
        let t = lua.create_table_with_capacity(0, n)?;
        for _ in 0..n {
            let k = self.value(lua, depth + 1)?;
            let v = self.value(lua, depth + 1)?;
            if k != Value::Nil {
                t.raw_set(k, v)?;
            }
        }
        Ok(Value::Table(t))
    }
}

fn cmsgpack(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, args: Variadic<Value>| {
            if args.is_empty() {
                return Err(runtime("MessagePack pack needs input."));
            }
            let mut out = Vec::new();
            for v in args.iter() {
                mp_encode(&mut out, v, 0)?;
            }
            lua.create_string(out)
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, s: mlua::String| {
            let bytes = s.as_bytes();
            let mut r = Reader { buf: &bytes, at: 0 };
            let mut values = Vec::new();
            while r.at < r.buf.len() {
                if values.len() >= crate::struct_lib::MAX_RESULTS {
                    return Err(runtime("too many results"));
                }
                values.push(r.value(lua, 0)?);
            }
            Ok(MultiValue::from_vec(values))
        })?,
    )?;
    // unpack_one(s, offset) / unpack_limit(s, limit, offset): the next offset (-1 at the end)
    // and the values.
    let limited =
        |lua: &Lua, s: mlua::String, limit: usize, offset: i64| -> mlua::Result<MultiValue> {
            let bytes = s.as_bytes();
            let start = usize::try_from(offset).map_err(|_| runtime("Offset must be positive"))?;
            if start > bytes.len() {
                return Err(runtime("Start offset greater than input length"));
            }
            let mut r = Reader {
                buf: &bytes,
                at: start,
            };
            let mut values = Vec::new();
            while r.at < r.buf.len() && (limit == 0 || values.len() < limit) {
                if values.len() >= crate::struct_lib::MAX_RESULTS {
                    return Err(runtime("too many results"));
                }
                values.push(r.value(lua, 0)?);
            }
            let next = if r.at >= r.buf.len() { -1 } else { r.at as i64 };
            values.insert(0, Value::Integer(next));
            Ok(MultiValue::from_vec(values))
        };
    t.raw_set(
        "unpack_one",
        lua.create_function(move |lua, (s, offset): (mlua::String, Option<i64>)| {
            limited(lua, s, 1, offset.unwrap_or(0))
        })?,
    )?;
    t.raw_set(
        "unpack_limit",
        lua.create_function(
            move |lua, (s, limit, offset): (mlua::String, i64, Option<i64>)| {
                limited(lua, s, limit.max(0) as usize, offset.unwrap_or(0))
            },
        )?,
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_print_as_c_prints_them() {
        for (d, p, want) in [
            (0.1, 14, "0.1"),
            (1e20, 14, "1e+20"),
            (123456.0, 14, "123456"),
            (1.0 / 3.0, 14, "0.33333333333333"),
            (1e-5, 14, "1e-05"),
            (-2.5, 14, "-2.5"),
            (100000000000000.0, 14, "1e+14"),
        ] {
            assert_eq!(super::format_g(d, p), want);
        }
    }
}
