//! Replies between RESP and Lua, as Redis documents them for EVAL.
//!
//! A command's reply, to Lua (RESP2, the default): integer → number, bulk → string, null → false,
//! array → table, status → `{ok=...}`, error → `{err=...}`; a RESP3-only reply in the form RESP2
//! gives it (a map as its flat array, a double as its text, a boolean as 1/0). After
//! `redis.setresp(3)`: null → nil, boolean → boolean, double → `{double=n}`, map →
//! `{map={...}}`, set → `{set={member=true}}`, verbatim → `{verbatim_string={format=, string=}}`.
//!
//! A script's result, to RESP: string → bulk, number → integer (truncated), true → 1 and false →
//! null (RESP3 after setresp(3): booleans), `{err=}` → error, `{ok=}` → status, `{double=}`,
//! `{map=}`, `{set=}`, `{verbatim_string=}` → their RESP3 types, any other table → array up to
//! its first nil; anything else → null.

use bytes::Bytes;
use mlua::{Lua, Table, Value};
use moon_proto::Frame;

/// The mark of an error whose text is already Redis's (raised by Moon's Rust functions, or a
/// script's `error({err = ...})` on several shards): kept as it is, without `ERR` before it.
pub(crate) const RAISED: &str = "\u{1}moon\u{1}";

/// The mark of an error raised by a Rust function whose text is Lua's kind (a library's
/// `user_script:1: bad argument...`): replied with `ERR` before it, handed to `pcall` as it is.
pub(crate) const LUA_TEXT: &str = "\u{1}lua\u{1}";

/// Deeper than this, a reply or a result is refused rather than converted (a table that holds
/// itself would otherwise recurse forever).
const MAX_DEPTH: usize = 128;

/// A command's reply as the script sees it, for a script speaking `resp` (2 or 3).
pub(crate) fn frame_to_lua(lua: &Lua, frame: &Frame, resp: u8) -> mlua::Result<Value> {
    let single = |field: &str, v: Value| -> mlua::Result<Value> {
        let t = lua.create_table_with_capacity(0, 1)?;
        t.raw_set(field, v)?;
        Ok(Value::Table(t))
    };
    let array = |items: &mut dyn Iterator<Item = &Frame>| -> mlua::Result<Value> {
        let t = lua.create_table()?;
        for (i, f) in items.enumerate() {
            t.raw_seti(i + 1, frame_to_lua(lua, f, resp)?)?;
        }
        Ok(Value::Table(t))
    };
    let map = |pairs: &[(Frame, Frame)]| -> mlua::Result<Value> {
        let t = lua.create_table()?;
        for (k, v) in pairs {
            t.raw_set(frame_to_lua(lua, k, resp)?, frame_to_lua(lua, v, resp)?)?;
        }
        single("map", Value::Table(t))
    };
    let two_element_arrays = |pairs: &[(Frame, Frame)]| -> mlua::Result<Value> {
        let t = lua.create_table()?;
        for (i, (k, v)) in pairs.iter().enumerate() {
            let pair = lua.create_table()?;
            pair.raw_seti(1, frame_to_lua(lua, k, resp)?)?;
            pair.raw_seti(2, frame_to_lua(lua, v, resp)?)?;
            t.raw_seti(i + 1, pair)?;
        }
        Ok(Value::Table(t))
    };
    Ok(match frame {
        Frame::Simple(s) => single("ok", Value::String(lua.create_string(s)?))?,
        Frame::SimpleOwned(s) => single("ok", Value::String(lua.create_string(s)?))?,
        Frame::Error(e) => single("err", Value::String(lua.create_string(e)?))?,
        Frame::StaticError(e) => single("err", Value::String(lua.create_string(e)?))?,
        Frame::Integer(n) => Value::Number(*n as f64),
        Frame::Bulk(b) => Value::String(lua.create_string(b)?),
        Frame::Null | Frame::NullArray => {
            if resp == 3 {
                Value::Nil
            } else {
                Value::Boolean(false)
            }
        }
        Frame::Array(items) | Frame::Push(items) => array(&mut items.iter())?,
        Frame::Set(items) => {
            if resp == 3 {
                let members = lua.create_table()?;
                for f in items {
                    members.raw_set(frame_to_lua(lua, f, resp)?, true)?;
                }
                single("set", Value::Table(members))?
            } else {
                array(&mut items.iter())?
            }
        }
        // A map as a RESP3 map, or flat in RESP2.
        Frame::Map(pairs) if resp == 3 => map(pairs)?,
        Frame::Map(pairs) => array(&mut pairs.iter().flat_map(|(k, v)| [k, v]))?,
        // Pairs as two-element arrays in RESP3, flat in RESP2.
        Frame::Pairs(pairs) if resp == 3 => two_element_arrays(pairs)?,
        Frame::Pairs(pairs) => array(&mut pairs.iter().flat_map(|(k, v)| [k, v]))?,
        // XREAD's streams: a map in RESP3, two-element arrays in RESP2.
        Frame::KeyedReplies(pairs) if resp == 3 => map(pairs)?,
        Frame::KeyedReplies(pairs) => two_element_arrays(pairs)?,
        Frame::Double(d) | Frame::HumanDouble(d) if resp == 3 => {
            single("double", Value::Number(*d))?
        }
        Frame::Double(d) => {
            Value::String(lua.create_string(moon_proto::frame::format_double_reply(*d))?)
        }
        Frame::HumanDouble(d) => {
            Value::String(lua.create_string(moon_proto::frame::format_human_double(*d))?)
        }
        Frame::Bool(b) => {
            if resp == 3 {
                Value::Boolean(*b)
            } else {
                Value::Number(if *b { 1.0 } else { 0.0 })
            }
        }
        Frame::Verbatim(b) => {
            if resp == 3 {
                let v = lua.create_table()?;
                v.raw_set("format", "txt")?;
                v.raw_set("string", lua.create_string(b)?)?;
                single("verbatim_string", Value::Table(v))?
            } else {
                Value::String(lua.create_string(b)?)
            }
        }
    })
}

/// The most tables and bytes one result may hold, counted as they are converted: a table may
/// hold the same table (`t.map = {t, t}`) or the same 64 MiB string many times, which
/// converted naively is exponential, or terabytes (review findings).
const MAX_TABLES: usize = 1_000_000;
const MAX_BYTES: usize = 1 << 30;

const TOO_DEEP: &str = "ERR reached lua stack limit";
const TOO_MANY: &str = "ERR reply too large: a script's result may hold 1,000,000 tables and 1 GiB";

/// What is left of [`MAX_TABLES`] and [`MAX_BYTES`] while a result converts.
struct Budget {
    tables: usize,
    bytes: usize,
}

/// A script's result (or a value it passed back) as a reply, for a script speaking `resp`.
pub(crate) fn lua_to_frame(value: &Value, resp: u8) -> Frame {
    let mut budget = Budget {
        tables: MAX_TABLES,
        bytes: MAX_BYTES,
    };
    match to_frame(value, resp, 0, &mut budget) {
        Ok(f) => f,
        Err(text) => Frame::StaticError(text),
    }
}

fn to_frame(
    value: &Value,
    resp: u8,
    depth: usize,
    budget: &mut Budget,
) -> Result<Frame, &'static str> {
    if depth > MAX_DEPTH {
        return Err(TOO_DEEP);
    }
    Ok(match value {
        Value::String(s) => {
            let b = s.as_bytes();
            budget.bytes = budget.bytes.checked_sub(b.len()).ok_or(TOO_MANY)?;
            Frame::Bulk(Bytes::copy_from_slice(&b))
        }
        Value::Boolean(b) => {
            if resp == 3 {
                Frame::Bool(*b)
            } else if *b {
                Frame::Integer(1)
            } else {
                Frame::Null
            }
        }
        Value::Number(n) => Frame::Integer(number_to_i64(*n)),
        Value::Integer(n) => Frame::Integer(*n),
        Value::Table(t) => {
            budget.tables = budget.tables.checked_sub(1).ok_or(TOO_MANY)?;
            table_to_frame(t, resp, depth, budget)?
        }
        _ => Frame::Null,
    })
}

/// `(long long)` of a Lua number, as Redis casts it (saturating where C is undefined).
fn number_to_i64(n: f64) -> i64 {
    if n.is_nan() {
        0
    } else {
        n as i64
    }
}

fn field(t: &Table, name: &str) -> Value {
    t.raw_get(name).unwrap_or(Value::Nil)
}

fn table_to_frame(
    t: &Table,
    resp: u8,
    depth: usize,
    budget: &mut Budget,
) -> Result<Frame, &'static str> {
    if let Value::String(e) = field(t, "err") {
        return Ok(error_frame(&String::from_utf8_lossy(&e.as_bytes())));
    }
    if let Value::String(ok) = field(t, "ok") {
        // A status is one line: its line breaks become spaces, as in Redis.
        let text: String = String::from_utf8_lossy(&ok.as_bytes())
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        return Ok(Frame::SimpleOwned(text));
    }
    match field(t, "double") {
        Value::Number(d) => return Ok(Frame::Double(d)),
        // A whole number reads as an integer from Lua: still a double (ZSCORE of 10).
        Value::Integer(n) => return Ok(Frame::Double(n as f64)),
        _ => {}
    }
    if let Value::String(big) = field(t, "big_number") {
        // No big-number frame: its digits as a bulk string, what RESP2 would show.
        return Ok(Frame::Bulk(Bytes::copy_from_slice(&big.as_bytes())));
    }
    if let Value::Table(v) = field(t, "verbatim_string") {
        if let (Value::String(_), Value::String(s)) = (field(&v, "format"), field(&v, "string")) {
            return Ok(Frame::Verbatim(Bytes::copy_from_slice(&s.as_bytes())));
        }
    }
    if let Value::Table(m) = field(t, "map") {
        let mut pairs = Vec::new();
        for (k, v) in m.pairs::<Value, Value>().filter_map(Result::ok) {
            let k = to_frame(&k, resp, depth + 1, budget)?;
            pairs.push((k, to_frame(&v, resp, depth + 1, budget)?));
        }
        return Ok(Frame::Map(pairs));
    }
    if let Value::Table(s) = field(t, "set") {
        let mut members = Vec::new();
        for (k, _) in s.pairs::<Value, Value>().filter_map(Result::ok) {
            members.push(to_frame(&k, resp, depth + 1, budget)?);
        }
        return Ok(Frame::Set(members));
    }
    let mut items = Vec::new();
    for i in 1.. {
        let v: Value = t.raw_get(i).unwrap_or(Value::Nil);
        if v == Value::Nil {
            break;
        }
        items.push(to_frame(&v, resp, depth + 1, budget)?);
    }
    Ok(Frame::Array(items))
}

/// An error reply of a script's: one line (a CR or LF in it would end the reply early and
/// put whatever follows into the client's stream as another reply), as Redis makes it.
pub(crate) fn error_frame(text: &str) -> Frame {
    Frame::Error(
        text.chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect(),
    )
}
