//! What a script's errors say: the Redis text of an error raised by a Rust function, and
//! where in the user's script the running code is (for `user_script:N:` positions). Below
//! the engine and the libraries, which both word errors this way.

use mlua::Lua;

use crate::convert::{LUA_TEXT, RAISED};

/// The innermost frame of the user's script on the running stack (for a `redis.call` made
/// from it in a suspending run).
fn script_frame(lua: &Lua) -> Option<(String, Option<usize>)> {
    for level in 1..64 {
        let found = lua.inspect_stack(level, |d| {
            let source = d.source();
            let user = source
                .source
                .as_deref()
                .is_some_and(|s| s.starts_with("@user_"));
            (user && source.what != "C").then(|| {
                (
                    source.source.as_deref().unwrap_or_default().to_string(),
                    d.current_line(),
                )
            })
        });
        match found {
            None => return None,
            Some(None) => continue,
            Some(Some(frame)) => return Some(frame),
        }
    }
    None
}

/// Where the script is calling from, as Lua's errors start (`user_script:3: `); empty if no
/// script frame is on the stack.
pub(crate) fn script_position(lua: &Lua) -> String {
    match script_frame(lua) {
        Some((source, Some(line))) => format!("{}:{line}: ", source.trim_start_matches('@')),
        _ => String::new(),
    }
}

/// The line of the script that is calling now (for a `redis.call` made from it).
pub(crate) fn script_line(lua: &Lua) -> Option<usize> {
    script_frame(lua).and_then(|(_, line)| line)
}

/// The Redis text of an error raised by a Rust function: a `RuntimeError`'s text is already
/// Redis's; anything else (a bad argument mlua caught) gets `ERR`.
pub(crate) fn error_text(e: &mlua::Error) -> String {
    match innermost(e) {
        mlua::Error::RuntimeError(_) => lua_text(e),
        e => format!("ERR {}", lua_message(e)),
    }
}

/// An error's own text, as a Lua error would carry it: Moon's marks taken off, no `ERR`
/// added (a library's argument error, say).
pub(crate) fn lua_text(e: &mlua::Error) -> String {
    match innermost(e) {
        mlua::Error::RuntimeError(m) => m
            .strip_prefix(RAISED)
            .or_else(|| m.strip_prefix(LUA_TEXT))
            .unwrap_or(m)
            .to_string(),
        e => lua_message(e),
    }
}

pub(crate) fn innermost(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => innermost(cause),
        e => e,
    }
}

/// Lua's own message in an mlua error (a syntax error's text, a runtime error's string).
pub(crate) fn lua_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => lua_message(cause),
        other => other.to_string(),
    }
}
