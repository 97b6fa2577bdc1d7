//! Scripts whose `redis.call`s wait: a script whose keys live on several shards runs on the
//! coordinating shard's thread, and each command it sends to another shard is an `await`.
//!
//! The script runs as a Lua coroutine (mlua's async support): `redis.call` and `redis.pcall`
//! are async Rust functions, so a call suspends the whole script until its reply comes back,
//! and the thread serves other connections meanwhile. Lua 5.1 cannot suspend across a C
//! function, so `pcall` is replaced by an async Rust function too (a script may wrap a
//! `redis.call` in `pcall`); `xpcall`, `table.sort` or `string.gsub` callbacks that call
//! `redis.call` fail with Lua's "attempt to yield across metamethod/C-call boundary".
//!
//! The message handler of the synchronous path cannot run here (it would be a C boundary):
//! a `redis.call` error carries the script's line, read when the call was made; a Lua runtime
//! error carries it in its own text (`user_script:3: ...`). A failing `return redis.call(...)`
//! is a tail call, which leaves no frame of the script to read a line from: its error has no
//! `script: ..., on @user_script:N.` part here.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use mlua::{Function, Lua, MultiValue, Table, Value, Variadic};
use moon_proto::Frame;

use crate::convert::{error_frame, frame_to_lua, lua_to_frame};
use crate::engine::{command_args, innermost, script_line, Engine, Invocation, RAISED};
use crate::host::{AsyncHost, Slot};
use crate::watch::{Current, Signals, Watching};

/// A `redis.call` that failed: Redis's text and the script line it was made from.
#[derive(Debug)]
struct CallError {
    text: String,
    line: Option<usize>,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for CallError {}

/// Puts the suspending `redis.call`, `redis.pcall`, `redis.setresp` and `pcall` in `engine`.
pub(crate) fn install(engine: &Engine, slot: &Slot) -> mlua::Result<()> {
    let lua = engine.lua();
    for (name, raise) in [("call", true), ("pcall", false)] {
        let slot = slot.clone();
        let call = move |lua: Lua, argv: Result<Vec<Bytes>, String>| {
            let slot = slot.clone();
            // Read now: once it waits, the script's frame is still there, but this is simpler.
            let line = script_line(&lua);
            async move {
                // Suspend once before anything is sent: where Lua cannot suspend (inside
                // xpcall, a metamethod, a table.sort or gsub callback) the call fails here,
                // before its command ran (review finding: it ran, then failed on the wait).
                YieldOnce(false).await;
                let host = slot.host.borrow().clone();
                let reply = match (argv, host) {
                    (Err(message), _) => Frame::Error(message),
                    (Ok(argv), Some(host)) => host.call(argv).await,
                    (Ok(_), None) => Frame::StaticError(
                        "ERR redis.call/pcall can only be called inside a script invocation",
                    ),
                };
                if raise {
                    if let Frame::Error(_) | Frame::StaticError(_) = reply {
                        let text = match reply {
                            Frame::Error(e) => e,
                            Frame::StaticError(e) => e.to_string(),
                            _ => String::new(),
                        };
                        return Err(mlua::Error::external(CallError { text, line }));
                    }
                }
                frame_to_lua(&lua, &reply, slot.resp.get())
            }
        };
        let direct = {
            let call = call.clone();
            lua.create_async_function(move |lua, args: Variadic<Value>| {
                let argv = command_args(&args);
                call(lua, argv)
            })?
        };
        // Many arguments come packed in a table (gate.rs): read one at a time.
        let packed = lua.create_async_function(move |lua, (t, n): (Table, usize)| {
            let argv = (1..=n)
                .map(|i| {
                    t.raw_get::<Value>(i)
                        .map_err(|e| e.to_string())
                        .and_then(|v| crate::engine::command_arg(&v))
                })
                .collect::<Result<Vec<Bytes>, String>>();
            call(lua, argv)
        })?;
        // A Lua wrapper, not a C gate: these functions suspend, and Lua cannot suspend
        // across a C call.
        let f: Function = lua.load(CALL_WRAPPER).set_name("=moon").call((
            direct,
            packed,
            crate::gate::CALL_SPREAD,
        ))?;
        engine.redis_table().raw_set(name, f)?;
    }
    let host = slot.host.clone();
    let acl_check = lua.create_function(move |_, args: Variadic<Value>| {
        let argv = crate::engine::acl_check_args(&args)?;
        let host = host.borrow().clone().ok_or_else(|| {
            mlua::Error::RuntimeError(format!(
                "{}{}",
                crate::convert::RAISED,
                crate::engine::NOT_IN_A_RUN
            ))
        })?;
        crate::engine::acl_check_answer(host.acl_check(&argv))
    })?;
    engine.redis_table().raw_set("acl_check_cmd", acl_check)?;
    let resp = slot.resp.clone();
    let setresp = lua.create_function(move |_, args: Variadic<Value>| {
        resp.set(crate::engine::resp_version(&args)?);
        Ok(())
    })?;
    engine.redis_table().raw_set("setresp", setresp)?;
    let pcall = lua.create_async_function(|lua, (f, args): (Value, MultiValue)| async move {
        let Value::Function(f) = f else {
            let text = format!("attempt to call a {} value", f.type_name());
            return Ok(failed(&lua, text));
        };
        match f.call_async::<MultiValue>(args).await {
            Ok(mut values) => {
                values.push_front(Value::Boolean(true));
                Ok(values)
            }
            Err(e) => Ok(failed(&lua, error_text(&e))),
        }
    })?;
    // Its arguments bounded as the gates bound them (a Lua check: it suspends).
    let pcall: Function = lua
        .load(BOUNDED)
        .set_name("=moon")
        .call((pcall, crate::gate::MAX_ARGS))?;
    engine.globals_table().raw_set("pcall", pcall)?;
    // A script's own coroutines would catch mlua's suspension marker (and could then leave
    // the script suspended for ever, holding its shards): here they are functions that
    // refuse, so that code naming them (a library's top level) still loads.
    let refuse = lua.create_function(|_, _: MultiValue| -> mlua::Result<()> {
        Err(mlua::Error::RuntimeError(format!(
            "{RAISED}ERR coroutines are not available to a script whose keys are on several shards"
        )))
    })?;
    let stubs = lua.create_table()?;
    for name in ["create", "resume", "running", "status", "wrap", "yield"] {
        stubs.raw_set(name, crate::gate::gate(lua, refuse.clone())?)?;
    }
    let view = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", stubs)?;
    meta.raw_set("__metatable", false)?;
    meta.raw_set(
        "__newindex",
        lua.create_function(|_, _: MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::RuntimeError(
                "Attempt to modify a readonly table".into(),
            ))
        })?,
    )?;
    view.set_metatable(Some(meta))?;
    engine.globals_table().raw_set("coroutine", view)?;
    Ok(())
}

/// `redis.call` of a suspending state: many arguments go packed in a table (see gate.rs).
const CALL_WRAPPER: &str = r##"
local direct, packed, spread = ...
local select = select
return function(...)
    local n = select("#", ...)
    if n >= spread then
        return packed({ ... }, n)
    end
    return direct(...)
end
"##;

/// A function of a suspending state that takes at most `max` arguments.
const BOUNDED: &str = r##"
local f, max = ...
local select, error = select, error
return function(...)
    if select("#", ...) > max then
        error("too many arguments (Moon's libraries take 4000)", 2)
    end
    return f(...)
end
"##;

/// A future that is pending once (waking itself), then ready: one suspension of the script.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn failed(lua: &Lua, text: String) -> MultiValue {
    let text = lua.create_string(text).map_or(Value::Nil, Value::String);
    MultiValue::from_vec(vec![Value::Boolean(false), text])
}

/// A Lua error's own text: mlua's traceback dropped, Moon's mark taken off.
fn lua_text(m: &str) -> (&str, bool) {
    let m = m.split("\nstack traceback:").next().unwrap_or(m);
    let m = m.strip_prefix(crate::engine::LUA_TEXT).unwrap_or(m);
    match m.strip_prefix(RAISED) {
        Some(redis_text) => (redis_text, true),
        None => (m, false),
    }
}

/// What `pcall` hands back for an error: its text (a redis error's without its line).
fn error_text(e: &mlua::Error) -> String {
    match innermost(e) {
        mlua::Error::ExternalError(inner) => match inner.downcast_ref::<CallError>() {
            Some(call) => call.text.clone(),
            None => inner.to_string(),
        },
        mlua::Error::RuntimeError(m) => lua_text(m).0.to_string(),
        other => other.to_string(),
    }
}

/// The reply for a suspending script stopped by `e`, worded as the synchronous path words it.
fn error_reply(e: &mlua::Error, sha: &str) -> Frame {
    let located = |text: &str, line: Option<usize>| match line {
        Some(line) => error_frame(&format!("{text} script: {sha}, on @user_script:{line}.")),
        None => error_frame(text),
    };
    match innermost(e) {
        mlua::Error::ExternalError(inner) => match inner.downcast_ref::<CallError>() {
            Some(call) => located(&call.text, call.line),
            None => error_frame(&format!("ERR {inner}")),
        },
        mlua::Error::RuntimeError(m) => {
            let (text, redis_text) = lua_text(m);
            if redis_text {
                return error_frame(text);
            }
            // Lua's own errors start `user_script:LINE:`; any other text gets `ERR`, as the
            // synchronous path's message handler gives it.
            let line = text
                .strip_prefix("user_script:")
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse::<usize>().ok());
            located(&format!("ERR {text}"), line)
        }
        other => error_frame(&format!("ERR Error running script {sha}: {other}")),
    }
}

impl Engine {
    /// FCALL of function `name` in a suspending state (see [`Engine::run_suspending`]).
    pub async fn run_function_suspending(
        &self,
        name: &str,
        keys: &[bytes::Bytes],
        args: &[bytes::Bytes],
        host: Rc<dyn AsyncHost>,
        signals: Arc<Signals>,
    ) -> Frame {
        let Some(slot) = self.slot().cloned() else {
            return Frame::StaticError("ERR internal error: not a suspending Lua state");
        };
        let Some(f) = self.function(name) else {
            return Frame::StaticError("ERR Function not found");
        };
        let f = match self.bound(f, keys, args) {
            Ok(f) => f,
            Err(e) => return error_frame(&format!("ERR Error running function {name}: {e}")),
        };
        slot.resp.set(2);
        *slot.host.borrow_mut() = Some(host);
        let watching = Watching::start(self.watch_key, Current::suspending(signals));
        let result = f.call_async::<Value>(()).await;
        drop(watching);
        slot.host.borrow_mut().take();
        match result {
            Ok(value) => lua_to_frame(&value, slot.resp.get()),
            Err(e) => error_reply(&e, name),
        }
    }

    /// A Lua state for suspending scripts (see the module's doc).
    pub fn new_suspending(redis_version: &str) -> Result<Engine, String> {
        let mut engine = Engine::new(redis_version)?;
        let slot = Slot::default();
        install(&engine, &slot).map_err(|e| e.to_string())?;
        engine.set_slot(slot);
        engine.watch_key = crate::watch::watch_state(engine.lua());
        Ok(engine)
    }

    /// Runs a script whose `redis.call`s go to `host` and may wait (an engine made by
    /// [`Engine::new_suspending`]; any other answers an error).
    pub async fn run_suspending(
        &self,
        inv: &Invocation<'_>,
        host: Rc<dyn AsyncHost>,
        signals: Arc<Signals>,
    ) -> Frame {
        let Some(slot) = self.slot().cloned() else {
            return Frame::StaticError("ERR internal error: not a suspending Lua state");
        };
        let f: Function = match self.prepare(inv) {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        slot.resp.set(2);
        *slot.host.borrow_mut() = Some(host);
        let watching = Watching::start(self.watch_key, Current::suspending(signals));
        let result = f.call_async::<Value>(()).await;
        drop(watching);
        slot.host.borrow_mut().take();
        match result {
            Ok(value) => lua_to_frame(&value, slot.resp.get()),
            Err(e) => error_reply(&e, inv.sha),
        }
    }
}
