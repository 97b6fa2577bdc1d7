//! Gates in front of the Rust functions scripts call: bounded argument lists.
//!
//! mlua hands a Rust function each string or table argument as a reference kept on one
//! auxiliary Lua stack, which Lua 5.1 caps at 8000 slots; past that mlua panics, and a panic
//! stops the server. A script passes up to ~8000 arguments at will (`redis.call('del',
//! unpack(keys))`), so every Rust function a script can reach is called through a gate, a C
//! function that reads the argument count on Lua's own stack first:
//! - `redis.call` / `redis.pcall` take any number, as in Redis: past [`CALL_SPREAD`] the gate
//!   packs them into one table, which the Rust side reads one at a time;
//! - the others refuse more than [`MAX_ARGS`] with a Lua error.
//!
//! A gate is a C function, so a `return redis.call(...)` still leaves the script's frame on
//! the stack for its error's line (a Lua wrapper would be a tail call that removes it).
//!
//! Below [`CALL_SPREAD`] arguments, `redis.call`'s gate also reads them itself, straight off
//! Lua's stack into the command's `Vec<Bytes>`, and hands them to the Rust side through
//! [`take_command`]: mlua's own conversion (a reference per argument on its auxiliary stack,
//! then a copy) was about a tenth of a short script's CPU.

use std::cell::RefCell;
use std::ffi::c_int;

use bytes::Bytes;
use mlua::{ffi, Function, Lua, Table};

/// Redis's refusals of a redis.call's arguments.
pub(crate) const NO_ARGUMENTS: &str =
    "ERR Please specify at least one argument for this redis lib call";
pub(crate) const BAD_ARGUMENT: &str =
    "ERR Lua redis lib command arguments must be strings or integers";

/// A Lua number as a command argument: an integer's digits when it is one (in `i64`'s range,
/// and not -0), else the double as the engine has always written it (`%.17g`). mlua's Lua 5.1
/// values draw the same line between `Integer` and `Number`, so `redis.call`'s two ways in
/// agree.
pub(crate) fn number_arg(n: f64) -> Bytes {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if (-TWO_63..TWO_63).contains(&n) {
        let i = n as i64;
        if n.to_bits() == (i as f64).to_bits() {
            return Bytes::from(i.to_string());
        }
    }
    Bytes::from(moon_proto::frame::format_double_reply(n))
}

/// The most arguments a library function takes.
pub(crate) const MAX_ARGS: c_int = 4000;

/// From this many arguments on, `redis.call` gets them packed in a table.
pub(crate) const CALL_SPREAD: c_int = 256;

/// `f` behind a gate that refuses more than [`MAX_ARGS`] arguments.
pub(crate) fn gate(lua: &Lua, f: Function) -> mlua::Result<Function> {
    // SAFETY: `f` is pushed by exec_raw and taken as the closure's upvalue.
    unsafe {
        lua.exec_raw::<Function>(f, |state| {
            ffi::lua_pushcclosure(state, bounded, 1);
        })
    }
}

thread_local! {
    /// The command `redis.call`'s gate read, until its Rust side takes it (at once: nothing
    /// runs in between).
    static COMMAND: RefCell<Option<Result<Vec<Bytes>, String>>> = const { RefCell::new(None) };
}

/// The command the gate just read (`direct`'s argument list, see [`gate_call`]).
pub(crate) fn take_command() -> Result<Vec<Bytes>, String> {
    COMMAND
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(|| Err(NO_ARGUMENTS.to_string()))
}

/// Drops a command the gate read and no call took (see [`take_command`]).
pub(crate) fn forget_command() {
    let stale = COMMAND.with(|c| c.borrow_mut().take());
    drop(stale);
}

/// `redis.call`'s arguments `1..=n` as a command: strings as they are, numbers as
/// [`number_arg`] writes them, anything else refused (Redis's texts). Reads
/// only: no Lua error can jump out of it.
unsafe fn read_command(state: *mut ffi::lua_State, n: c_int) -> Result<Vec<Bytes>, String> {
    if n == 0 {
        return Err(NO_ARGUMENTS.to_string());
    }
    let mut argv = Vec::with_capacity(n as usize);
    for i in 1..=n {
        match ffi::lua_type(state, i) {
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(state, i, &mut len);
                if p.is_null() {
                    return Err(BAD_ARGUMENT.to_string());
                }
                // SAFETY: Lua keeps the string alive while it is on the stack.
                let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len);
                argv.push(Bytes::copy_from_slice(bytes));
            }
            ffi::LUA_TNUMBER => argv.push(number_arg(ffi::lua_tonumber(state, i))),
            _ => return Err(BAD_ARGUMENT.to_string()),
        }
    }
    Ok(argv)
}

/// `redis.call` behind its gate: `direct` takes the command the gate read ([`take_command`],
/// no arguments of its own), `packed` takes a table of the arguments and their number.
pub(crate) fn gate_call(lua: &Lua, direct: Function, packed: Function) -> mlua::Result<Function> {
    // SAFETY: both are pushed by exec_raw and taken as the closure's upvalues.
    unsafe {
        lua.exec_raw::<Function>((direct, packed), |state| {
            ffi::lua_pushcclosure(state, spread, 2);
        })
    }
}

/// Every function of `table` behind a gate.
pub(crate) fn gate_all(lua: &Lua, table: &Table) -> mlua::Result<()> {
    let mut functions = Vec::new();
    for pair in table.pairs::<mlua::Value, mlua::Value>() {
        if let (name, mlua::Value::Function(f)) = pair? {
            functions.push((name, f));
        }
    }
    for (name, f) in functions {
        table.raw_set(name, gate(lua, f)?)?;
    }
    Ok(())
}

unsafe extern "C-unwind" fn bounded(state: *mut ffi::lua_State) -> c_int {
    let n = ffi::lua_gettop(state);
    if n > MAX_ARGS {
        ffi::lua_pushstring(
            state,
            c"too many arguments (Moon's libraries take 4000)".as_ptr(),
        );
        // Nothing owned lives in this frame: the error's long jump leaks nothing.
        ffi::lua_error(state);
    }
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_insert(state, 1);
    ffi::lua_call(state, n, ffi::LUA_MULTRET);
    ffi::lua_gettop(state)
}

unsafe extern "C-unwind" fn spread(state: *mut ffi::lua_State) -> c_int {
    let n = ffi::lua_gettop(state);
    if n < CALL_SPREAD {
        // Handed over before the call: nothing owned stays in this frame, which a Lua error
        // raised by `direct` jumps over.
        let command = read_command(state, n);
        COMMAND.with(|c| *c.borrow_mut() = Some(command));
        ffi::lua_settop(state, 0);
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_call(state, 0, ffi::LUA_MULTRET);
        return ffi::lua_gettop(state);
    }
    ffi::lua_createtable(state, n, 0);
    for i in 1..=n {
        ffi::lua_pushvalue(state, i);
        ffi::lua_rawseti(state, -2, i as ffi::lua_Integer);
    }
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
    ffi::lua_insert(state, -2);
    ffi::lua_pushinteger(state, n as ffi::lua_Integer);
    ffi::lua_call(state, 2, ffi::LUA_MULTRET);
    ffi::lua_gettop(state) - n
}
