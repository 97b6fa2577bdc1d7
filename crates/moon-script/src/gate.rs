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

use std::ffi::c_int;

use mlua::{ffi, Function, Lua, Table};

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

/// `redis.call` behind its gate: `direct` takes the arguments as they are, `packed` takes a
/// table of them and their number.
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
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_insert(state, 1);
        ffi::lua_call(state, n, ffi::LUA_MULTRET);
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
