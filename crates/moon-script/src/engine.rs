//! One Lua state and the scripts compiled in it.
//!
//! A state is not `Send`: each shard's thread keeps its own [`Engine`], and a script runs on
//! the thread of the shard that owns its keys. Compiled functions are kept by SHA1, so an
//! EVALSHA of a script compiled before costs one table lookup.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value, Variadic};
use moon_proto::Frame;

use crate::convert::{error_frame, frame_to_lua, lua_to_frame};
pub(crate) use crate::convert::{LUA_TEXT, RAISED};
pub(crate) use crate::errors::{error_text, innermost, lua_message, script_line};
use crate::host::{Host, Slot};
use crate::watch::{Current, Signals};

const PRELUDE: &str = include_str!("prelude.lua");

/// The chunk name of scripts: Lua's errors then say `user_script:LINE:`, as Redis's do.
const SCRIPT_CHUNK: &str = "@user_script";

/// A script to run: its SHA1 (40 lowercase hex digits), its body (without the shebang line's
/// text, which the caller strips keeping the line break), its keys and arguments.
pub struct Invocation<'a> {
    pub sha: &'a str,
    pub body: &'a [u8],
    pub keys: &'a [Bytes],
    pub args: &'a [Bytes],
}

/// A Lua state with Redis's sandbox and `redis.*` API (see `prelude.lua`).
pub struct Engine {
    lua: Lua,
    /// The real globals table (scripts see a read-only view of it): KEYS and ARGV go here.
    globals: Table,
    /// The `redis` table (scripts see a read-only view): each run puts its `call`, `pcall` and
    /// `setresp` here, as they reach that run's host.
    redis: Table,
    /// Compiled scripts by SHA1, on the Rust side: finding one takes no Lua string. Each is
    /// held by a registry reference (`luaL_ref`, unbounded), not a `Function`: every live
    /// `Function` takes a slot of mlua's reference stack, which Lua 5.1 caps near 8,000.
    compiled: RefCell<HashMap<Box<str>, mlua::RegistryKey>>,
    /// The libraries loaded here (FUNCTION LOAD): library name → function name → function.
    libraries: Table,
    /// A suspending engine's host slot (`suspending.rs`); `None` for a synchronous one.
    slot: Option<Slot>,
    /// A synchronous run's host, reached by `redis.call` (see [`RunSlot`]).
    run_slot: Rc<RunSlot>,
    /// A suspending state's key for the hook (watch.rs); 0 for a synchronous one.
    pub(crate) watch_key: usize,
    /// The prelude's builder of the globals a library's code sees while FUNCTION LOAD runs
    /// it (functions.rs builds them once per state).
    load_globals: Function,
    /// The coroutine of the last run that ended normally, for the next run (see
    /// [`Engine::start`]).
    spare: Cell<Option<mlua::Thread>>,
}

/// The host of the synchronous run in progress, for `redis.call`, `redis.pcall` and
/// `redis.setresp`, which are created once per Lua state (creating them for every run, as
/// mlua's scope would, cost 8% of an EVALSHA's CPU).
#[derive(Default)]
struct RunSlot {
    host: Cell<Option<NonNull<dyn Host>>>,
    resp: Cell<u8>,
}

impl RunSlot {
    /// Puts `host` in the slot until the guard is dropped.
    fn enter<'a>(self: &'a Rc<Self>, host: &'a mut dyn Host) -> RunGuard<'a> {
        let ptr: NonNull<dyn Host + 'a> = NonNull::from(host);
        // SAFETY: only the lifetime is erased. The pointer is used only while the guard lives
        // (the guard clears it when dropped, also on unwinding), and the guard borrows `host`
        // mutably for its whole life, so nothing else uses it meanwhile; the functions that
        // read it run on this thread (a Lua state is not Send) inside the run.
        let ptr: NonNull<dyn Host + 'static> = unsafe { std::mem::transmute(ptr) };
        self.host.set(Some(ptr));
        self.resp.set(2);
        RunGuard {
            slot: self,
            _host: std::marker::PhantomData,
        }
    }

    /// Runs `f` with the host of the run in progress.
    fn with_host<R>(&self, f: impl FnOnce(&mut dyn Host) -> R) -> Option<R> {
        let ptr = self.host.take()?;
        // SAFETY: set by `enter` for a run still in progress (see there). Taken out of the
        // slot while in use: a reentrant call (none is possible: scripts cannot call EVAL)
        // would find it empty rather than alias it.
        let r = f(unsafe { &mut *ptr.as_ptr() });
        self.host.set(Some(ptr));
        Some(r)
    }
}

struct RunGuard<'a> {
    slot: &'a Rc<RunSlot>,
    _host: std::marker::PhantomData<&'a mut dyn Host>,
}

impl RunGuard<'_> {
    fn resp(&self) -> u8 {
        self.slot.resp.get()
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.slot.host.set(None);
        // A command `redis.call`'s gate read whose call failed before taking it (a C stack
        // overflow, Lua out of memory) is not kept past the run (review finding).
        crate::gate::forget_command();
    }
}

/// `redis.setresp`'s argument: 2 or 3, or Redis's error (both kinds of Lua state).
pub(crate) fn resp_version(args: &[Value]) -> mlua::Result<u8> {
    match args {
        [Value::Integer(n)] if *n == 2 || *n == 3 => Ok(*n as u8),
        [Value::Number(n)] if *n == 2.0 || *n == 3.0 => Ok(*n as u8),
        [_] => Err(mlua::Error::RuntimeError(format!(
            "{RAISED}ERR RESP version must be 2 or 3."
        ))),
        _ => Err(mlua::Error::RuntimeError(format!(
            "{RAISED}ERR redis.setresp() requires one argument."
        ))),
    }
}

/// `redis.call` (raising a command's error: a Rust function raising it, so that the message
/// handler still finds the script's frame after `return redis.call(...)`, a tail call),
/// `redis.pcall` (handing it back as a table) and `redis.setresp`, reaching the run's host.
fn install_run_functions(lua: &Lua, redis: &Table, slot: &Rc<RunSlot>) -> mlua::Result<()> {
    for (name, raise_errors) in [("call", true), ("pcall", false)] {
        let run = {
            let slot = slot.clone();
            move |lua: &Lua, argv: Result<Vec<Bytes>, String>| -> mlua::Result<Value> {
                let reply = match argv {
                    Ok(argv) => slot
                        .with_host(|h| h.call(argv))
                        .unwrap_or(Frame::StaticError(
                            "ERR redis.call/pcall can only be called inside a script invocation",
                        )),
                    Err(message) => Frame::Error(message),
                };
                match reply {
                    Frame::Error(e) if raise_errors => Err(mlua::Error::RuntimeError(e)),
                    Frame::StaticError(e) if raise_errors => {
                        Err(mlua::Error::RuntimeError(e.to_string()))
                    }
                    reply => frame_to_lua(lua, &reply, slot.resp.get()),
                }
            }
        };
        let direct = {
            let run = run.clone();
            lua.create_function(move |lua, ()| run(lua, crate::gate::take_command()))?
        };
        // Many arguments come packed in a table (gate.rs): read one at a time.
        let packed = lua.create_function(move |lua, (t, n): (Table, usize)| {
            let mut argv = Vec::with_capacity(n);
            for i in 1..=n {
                match command_arg(&t.raw_get::<Value>(i)?) {
                    Ok(a) => argv.push(a),
                    Err(e) => return run(lua, Err(e)),
                }
            }
            run(lua, Ok(argv))
        })?;
        redis.raw_set(name, crate::gate::gate_call(lua, direct, packed)?)?;
    }
    let checking = slot.clone();
    let acl_check = lua.create_function(move |_, args: Variadic<Value>| {
        let argv = acl_check_args(&args)?;
        let allowed = checking
            .with_host(|h| h.acl_check(&argv))
            .ok_or_else(|| mlua::Error::RuntimeError(format!("{RAISED}{NOT_IN_A_RUN}")))?;
        acl_check_answer(allowed)
    })?;
    redis.raw_set("acl_check_cmd", acl_check)?;
    let slot = slot.clone();
    let setresp = lua.create_function(move |_, args: Variadic<Value>| {
        slot.resp.set(resp_version(&args)?);
        Ok(())
    })?;
    redis.raw_set("setresp", setresp)?;
    Ok(())
}

pub(crate) const NOT_IN_A_RUN: &str =
    "ERR redis.acl_check_cmd can only be called inside a script invocation";

/// `redis.acl_check_cmd`'s arguments as a command, or Redis's error.
pub(crate) fn acl_check_args(args: &[Value]) -> mlua::Result<Vec<Bytes>> {
    command_args(args).map_err(|e| mlua::Error::RuntimeError(format!("{RAISED}{e}")))
}

/// What `redis.acl_check_cmd` answers for a host's verdict.
pub(crate) fn acl_check_answer(allowed: Option<bool>) -> mlua::Result<bool> {
    allowed.ok_or_else(|| {
        mlua::Error::RuntimeError(format!(
            "{RAISED}ERR Invalid command passed to redis.acl_check_cmd()"
        ))
    })
}

/// The most a Lua state may allocate.
const MEMORY_LIMIT: usize = 512 << 20;

/// Mixed into `math.randomseed(n)`'s state (`n` alone would start near zero).
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A state's first `math.random` seed: random, as Redis 7's (a script's numbers differ from
/// run to run; what it wrote is logged as its effects, so replay does not need them again).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEED);
    h.finish() | 1
}

impl Engine {
    /// A new state; `redis_version` is what `redis.REDIS_VERSION` says.
    pub fn new(redis_version: &str) -> Result<Engine, String> {
        Self::build(redis_version).map_err(|e| e.to_string())
    }

    fn build(redis_version: &str) -> mlua::Result<Engine> {
        let lua = Lua::new_with(
            StdLib::STRING | StdLib::TABLE | StdLib::MATH,
            LuaOptions::default(),
        )?;
        // A script that allocates without end gets Lua's "not enough memory" error instead of
        // taking the process down (without a limit, a failed allocation aborts).
        lua.set_memory_limit(MEMORY_LIMIT)?;
        let globals = lua.globals();
        let redis = lua.create_table()?;
        redis.raw_set("REDIS_VERSION", redis_version)?;
        redis.raw_set("REDIS_VERSION_NUM", version_number(redis_version))?;
        redis.raw_set(
            "sha1hex",
            lua.create_function(|lua, args: Variadic<Value>| {
                let [Value::String(s)] = args.as_slice() else {
                    return Err(raise(lua, "ERR wrong number of arguments"));
                };
                Ok(sha1_hex(&s.as_bytes()))
            })?,
        )?;
        redis.raw_set(
            "log",
            lua.create_function(|lua, args: Variadic<Value>| {
                if args.len() < 2 {
                    return Err(raise(
                        lua,
                        "ERR redis.log() requires two arguments or more.",
                    ));
                }
                let level = match args[0] {
                    Value::Number(n) => n as i64,
                    Value::Integer(n) => n,
                    _ => return Err(raise(lua, "ERR First argument must be a number")),
                };
                let text: Vec<String> = args[1..]
                    .iter()
                    .filter_map(|v| lua.coerce_string(v.clone()).ok().flatten())
                    .map(|s| s.to_string_lossy())
                    .collect();
                let text = text.join(" ");
                match level {
                    0 => tracing::debug!(target: "script", "{text}"),
                    1 | 2 => tracing::info!(target: "script", "{text}"),
                    3 => tracing::warn!(target: "script", "{text}"),
                    _ => return Err(raise(lua, "ERR Invalid debug level.")),
                }
                Ok(())
            })?,
        )?;
        let seed = Rc::new(Cell::new(random_seed()));
        let math: Table = globals.get("math")?;
        let state = seed.clone();
        math.raw_set(
            "random",
            lua.create_function(move |lua, args: Variadic<f64>| {
                let r = next_random(&state);
                match args.as_slice() {
                    [] => Ok(r),
                    [m] if *m >= 1.0 => Ok((r * m.floor()).floor() + 1.0),
                    [m, n] if m <= n => Ok((r * (n - m + 1.0)).floor() + m.floor()),
                    [_] | [_, _] => Err(raise(lua, "ERR interval is empty")),
                    _ => Err(raise(lua, "ERR wrong number of arguments")),
                }
            })?,
        )?;
        let state = seed.clone();
        math.raw_set(
            "randomseed",
            lua.create_function(move |_, n: f64| {
                state.set(n.to_bits() ^ SEED);
                Ok(())
            })?,
        )?;
        crate::libs::install(&lua, &globals)?;
        // Behind gates (gate.rs) before the sandbox hides the tables behind read-only views.
        for name in ["random", "randomseed"] {
            let f: Function = math.raw_get(name)?;
            math.raw_set(name, crate::gate::gate(&lua, f)?)?;
        }
        for name in ["bit", "cjson", "cmsgpack", "struct"] {
            crate::gate::gate_all(&lua, &globals.raw_get::<Table>(name)?)?;
        }
        let error_text = lua.create_function(|lua, err: Value| {
            Ok(match err {
                Value::Error(e) => error_text(&e),
                v => lua
                    .coerce_string(v)?
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default(),
            })
        })?;
        // SAFETY: both are C functions of the form Lua expects (watch.rs).
        let (spawn, forget, passing) = unsafe {
            (
                lua.create_c_function(crate::watch::spawn)?,
                lua.create_c_function(crate::watch::forget)?,
                lua.create_c_function(crate::watch::passing)?,
            )
        };
        let (env, load_globals): (Table, Function) = lua.load(PRELUDE).set_name("=moon").call((
            globals.clone(),
            redis.clone(),
            error_text,
            spawn,
            forget,
            passing,
            RAISED,
        ))?;
        lua.set_globals(env)?;
        // error({err = ...}): a run is a coroutine, and mlua would turn the table it ends with
        // into "table: 0x..."; its text goes as a marked string instead, replied as it is
        // (Redis replies a table error's `err`). A C function, as Lua's own `error`: `return
        // error(...)` keeps the script's frame (a tail call to a Lua function would not).
        // SAFETY: a C function of the form Lua expects.
        let error = unsafe { lua.create_c_function(script_error)? };
        globals.raw_set("error", error)?;
        let run_slot = Rc::new(RunSlot::default());
        install_run_functions(&lua, &redis, &run_slot)?;
        // Every other Rust function a script reaches, behind a gate (gate.rs).
        for name in ["sha1hex", "log", "setresp"] {
            let f: Function = redis.raw_get(name)?;
            redis.raw_set(name, crate::gate::gate(&lua, f)?)?;
        }

        Ok(Engine {
            compiled: RefCell::new(HashMap::new()),
            libraries: lua.create_table()?,
            lua,
            globals,
            redis,
            slot: None,
            run_slot,
            watch_key: 0,
            load_globals,
            spare: Cell::new(None),
        })
    }

    pub(crate) fn lua(&self) -> &Lua {
        &self.lua
    }

    pub(crate) fn libraries(&self) -> &Table {
        &self.libraries
    }

    /// What every run starts from: the collector running (an earlier script's
    /// `collectgarbage('stop')` or odd settings do not outlive it). `math.random` goes on from
    /// where the last run left it.
    pub(crate) fn reset_run_state(&self) {
        self.lua.gc_restart();
        self.lua.gc_inc(200, 200, 0);
    }

    pub(crate) fn redis_table(&self) -> &Table {
        &self.redis
    }

    pub(crate) fn load_globals_builder(&self) -> &Function {
        &self.load_globals
    }

    pub(crate) fn globals_table(&self) -> &Table {
        &self.globals
    }

    pub(crate) fn slot(&self) -> Option<&Slot> {
        self.slot.as_ref()
    }

    pub(crate) fn set_slot(&mut self, slot: Slot) {
        self.slot = Some(slot);
    }

    /// The compiled script of `inv` (compiled now if it is not yet), with KEYS, ARGV and the
    /// random seed set for a run; Redis's error reply if it does not compile.
    ///
    /// Both tables are built in one protected call: each of mlua's protected calls leaves a
    /// C closure for the collector, and building them item by item through mlua made a
    /// pipelined EVALSHA spend a fifth of its time in Lua's collector.
    pub(crate) fn prepare(&self, inv: &Invocation<'_>) -> Result<Function, Frame> {
        let f = self.compiled(inv.sha, inv.body)?;
        // SAFETY: the closure only pushes, fills and stores tables on the stack mlua gives it
        // (the globals table at index 1), and owns nothing that a Lua error's long jump
        // would fail to drop.
        let set = unsafe {
            self.lua.exec_raw::<()>(&self.globals, |state| {
                for (name, items) in [(c"KEYS", inv.keys), (c"ARGV", inv.args)] {
                    mlua::ffi::lua_pushstring(state, name.as_ptr());
                    let n = std::ffi::c_int::try_from(items.len()).unwrap_or(0);
                    mlua::ffi::lua_createtable(state, n, 0);
                    for (i, item) in items.iter().enumerate() {
                        mlua::ffi::lua_pushlstring(state, item.as_ptr().cast(), item.len());
                        mlua::ffi::lua_rawseti(state, -2, i as mlua::ffi::lua_Integer + 1);
                    }
                    mlua::ffi::lua_rawset(state, 1);
                }
            })
        };
        set.map_err(|e| Frame::Error(format!("ERR Error running script {}: {e}", inv.sha)))?;
        self.reset_run_state();
        Ok(f)
    }

    /// Whether the script with this SHA1 is compiled here.
    pub fn has(&self, sha: &str) -> bool {
        self.compiled.borrow().contains_key(sha)
    }

    /// Compiles `body` under `sha` if it is not yet; Redis's error reply if it does not
    /// compile.
    pub fn compile(&self, sha: &str, body: &[u8]) -> Result<(), Frame> {
        self.compiled(sha, body).map(drop)
    }

    /// The script compiled under `sha`, found by one lookup, or `body` compiled and kept
    /// under it.
    fn compiled(&self, sha: &str, body: &[u8]) -> Result<Function, Frame> {
        let registry_error = |e: mlua::Error| Frame::Error(format!("ERR {e}"));
        if let Some(key) = self.compiled.borrow().get(sha) {
            return self.lua.registry_value(key).map_err(registry_error);
        }
        let f = self
            .lua
            .load(body)
            .set_name(SCRIPT_CHUNK)
            .set_mode(mlua::ChunkMode::Text)
            .into_function()
            .map_err(|e| {
                Frame::Error(format!(
                    "ERR Error compiling script (new function): {}",
                    lua_message(&e)
                ))
            })?;
        let key = self
            .lua
            .create_registry_value(f.clone())
            .map_err(registry_error)?;
        self.compiled.borrow_mut().insert(sha.into(), key);
        Ok(f)
    }

    /// Forgets every compiled script (SCRIPT FLUSH).
    pub fn flush(&mut self) {
        for (_, key) in self.compiled.borrow_mut().drain() {
            let _ = self.lua.remove_registry_value(key);
        }
        let _ = self.lua.gc_collect();
    }

    /// Runs a script: compiles it if need be, sets KEYS and ARGV, and turns what it returns
    /// (or the error that stopped it) into the reply. Every `redis.call` goes to `host`;
    /// `signals` is the run as the rest of the process sees it, and `may_pause` whether the
    /// caller resumes a run that pauses once busy ([`Outcome::Suspended`]).
    pub fn run(
        &mut self,
        inv: &Invocation<'_>,
        host: &mut dyn Host,
        signals: Arc<Signals>,
        may_pause: bool,
    ) -> Outcome {
        if self.slot.is_some() {
            return Outcome::Done(Frame::StaticError(
                "ERR internal error: a suspending Lua state",
            ));
        }
        match self.prepare(inv) {
            Ok(f) => self.start(f, inv.sha, host, Current::new(signals, may_pause)),
            Err(reply) => Outcome::Done(reply),
        }
    }

    /// Starts `f` (a script, or a function bound to its keys and arguments) as the run's
    /// coroutine; `name` names it in error replies.
    ///
    /// The coroutine of the last run that ended normally is reused: a new one is a Lua
    /// state with its own stack and call records, about a kilobyte for the collector per
    /// run (16 % of a pipelined EVALSHA's CPU, with the collections it brought on). A
    /// finished coroutine holds nothing of its run: its stack is empty, and its environment
    /// is the state's (a script has no `setfenv`; its functions carry their own). One that
    /// failed, or is paused, is never reused (Lua 5.1 cannot reset it).
    pub(crate) fn start(
        &self,
        f: Function,
        name: &str,
        host: &mut dyn Host,
        current: Current,
    ) -> Outcome {
        let spare = self.spare.take();
        let thread = match spare.filter(|t| t.status() == mlua::ThreadStatus::Finished) {
            Some(t) => t.reset(f).map(|()| t),
            None => self.lua.create_thread(f),
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                current.signals.finish();
                return Outcome::Done(Frame::Error(format!(
                    "ERR Error running script {name}: {e}"
                )));
            }
        };
        self.step(
            Suspended {
                thread,
                name: name.to_string(),
                current,
                resp: 2,
            },
            host,
        )
    }

    /// The spare coroutine's address, if there is one (tests: whether the next run reuses it).
    #[cfg(test)]
    pub(crate) fn spare_address(&self) -> Option<usize> {
        let spare = self.spare.take();
        let address = spare.as_ref().map(|t| t.to_pointer() as usize);
        self.spare.set(spare);
        address
    }

    /// Resumes a run that paused ([`Outcome::Suspended`]) for its next slice.
    pub fn resume(&self, run: Suspended, host: &mut dyn Host) -> Outcome {
        self.step(run, host)
    }

    fn step(&self, run: Suspended, host: &mut dyn Host) -> Outcome {
        let Suspended {
            thread,
            name,
            current,
            resp,
        } = run;
        let coroutine = thread.to_pointer() as *mut mlua::ffi::lua_State;
        crate::watch::enter(current, coroutine);
        let guard = self.run_slot.enter(host);
        guard.slot.resp.set(resp);
        let result = thread.resume::<MultiValue>(());
        let resp = guard.resp();
        drop(guard);
        let Some(mut current) = crate::watch::leave(coroutine) else {
            return Outcome::Done(Frame::StaticError("ERR internal error: a run lost"));
        };
        if matches!(thread.status(), mlua::ThreadStatus::Resumable) {
            if current.take_pause(coroutine) {
                return Outcome::Suspended(Suspended {
                    thread,
                    name,
                    current,
                    resp,
                });
            }
            // The script's own yield, outside any coroutine of its own.
            current.signals.finish();
            return Outcome::Done(error_frame(&format!(
                "ERR Error running script {name}: attempt to yield across metamethod/C-call boundary"
            )));
        }
        current.signals.finish();
        match result {
            Ok(values) => {
                let reply = lua_to_frame(values.front().unwrap_or(&Value::Nil), resp);
                drop(values);
                self.spare.set(Some(thread));
                Outcome::Done(reply)
            }
            Err(e) => Outcome::Done(failure_reply(&e, &name, frame_of(coroutine))),
        }
    }
}

/// What a run came to: its reply, or a pause (it is busy, and its thread has other work: see
/// `watch.rs`) after which the caller resumes it with [`Engine::resume`].
pub enum Outcome {
    Done(Frame),
    Suspended(Suspended),
}

/// A run paused between two slices: its coroutine, and what the hook knows of it.
pub struct Suspended {
    thread: mlua::Thread,
    name: String,
    current: Current,
    resp: u8,
}

/// A redis.call's arguments as a command: strings as they are, numbers as Redis prints them
/// (`%.17g`); Redis's error text otherwise.
pub(crate) fn command_args(args: &[Value]) -> Result<Vec<Bytes>, String> {
    if args.is_empty() {
        return Err(crate::gate::NO_ARGUMENTS.into());
    }
    args.iter().map(command_arg).collect()
}

/// One argument of a redis.call (see [`command_args`]).
pub(crate) fn command_arg(v: &Value) -> Result<Bytes, String> {
    match v {
        Value::String(s) => Ok(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Number(n) => Ok(crate::gate::number_arg(*n)),
        Value::Integer(n) => Ok(Bytes::from(n.to_string())),
        _ => Err(crate::gate::BAD_ARGUMENT.into()),
    }
}

/// The reply for a run stopped by `e`: Redis's `<error> script: <name>, on
/// @user_script:<line>.` when the script's frame was found (`frame`).
fn failure_reply(e: &mlua::Error, name: &str, frame: Option<(String, Option<usize>)>) -> Frame {
    let text = match innermost(e) {
        mlua::Error::MemoryError(m) => {
            return error_frame(&format!("ERR Error running script {name}, {m}"));
        }
        mlua::Error::RuntimeError(m) => {
            let m = m.split("\nstack traceback:").next().unwrap_or(m);
            if let Some(lua_text) = m.strip_prefix(LUA_TEXT) {
                return match frame {
                    Some((source, Some(line))) => error_frame(&format!(
                        "ERR {lua_text} script: {name}, on {source}:{line}."
                    )),
                    _ => error_frame(&format!("ERR {lua_text}")),
                };
            }
            match m.strip_prefix(RAISED) {
                Some(redis_text) => redis_text.to_string(),
                None if matches!(e, mlua::Error::CallbackError { .. }) => m.to_string(),
                None => format!("ERR {m}"),
            }
        }
        other => format!("ERR {}", lua_message(other)),
    };
    match frame {
        Some((source, Some(line))) => {
            error_frame(&format!("{text} script: {name}, on {source}:{line}."))
        }
        _ => error_frame(&text),
    }
}

/// The innermost frame of the user's script on a coroutine stopped by an error (Lua 5.1
/// leaves a dead coroutine's frames in place), walking up past C functions and Moon's
/// prelude: its source (`@user_script`) and line.
fn frame_of(coroutine: *mut mlua::ffi::lua_State) -> Option<(String, Option<usize>)> {
    use mlua::ffi;
    for level in 0..64 {
        // SAFETY: the run's coroutine, alive (the `Thread` is held by the caller), stopped;
        // lua_getinfo with "Sl" pushes nothing.
        unsafe {
            let mut ar: ffi::lua_Debug = std::mem::zeroed();
            if ffi::lua_getstack(coroutine, level, &mut ar) == 0 {
                return None;
            }
            if ffi::lua_getinfo(coroutine, c"Sl".as_ptr(), &mut ar) == 0 {
                continue;
            }
            if ar.source.is_null() || ar.what.is_null() {
                continue;
            }
            let source = std::ffi::CStr::from_ptr(ar.source).to_string_lossy();
            let what = std::ffi::CStr::from_ptr(ar.what).to_string_lossy();
            if source.starts_with("@user_") && what != "C" {
                let line = (ar.currentline > 0).then_some(ar.currentline as usize);
                return Some((source.into_owned(), line));
            }
        }
    }
    None
}

/// `error` for scripts: Lua 5.1's `error` (the message gets the position of `level`, 1 by
/// default), except that a table with an `err` string raises that text marked as Redis's (see
/// [`RAISED`]).
unsafe extern "C-unwind" fn script_error(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    if ffi::lua_istable(state, 1) != 0 {
        ffi::lua_getfield(state, 1, c"err".as_ptr());
        if ffi::lua_type(state, -1) == ffi::LUA_TSTRING {
            ffi::lua_pushlstring(state, RAISED.as_ptr().cast(), RAISED.len());
            ffi::lua_insert(state, -2);
            ffi::lua_concat(state, 2);
            // Nothing owned lives in this frame: the error's long jump leaks nothing.
            ffi::lua_error(state);
        }
        ffi::lua_pop(state, 1);
    }
    let level = ffi::luaL_optinteger(state, 2, 1);
    ffi::lua_settop(state, 1);
    if ffi::lua_isstring(state, 1) != 0 && level > 0 {
        ffi::luaL_where(state, level as std::ffi::c_int);
        ffi::lua_pushvalue(state, 1);
        ffi::lua_concat(state, 2);
    }
    ffi::lua_error(state)
}

/// An error raised from Rust: its text is already Redis's (`ERR ...`).
fn raise(_lua: &Lua, text: &str) -> mlua::Error {
    mlua::Error::RuntimeError(format!("{RAISED}{text}"))
}

fn next_random(state: &Cell<u64>) -> f64 {
    // xorshift64*: deterministic per run, good enough for scripts' sampling.
    let mut x = state.get();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// "7.2.0" as 0x00070200, as Redis's `REDIS_VERSION_NUM`.
fn version_number(v: &str) -> i64 {
    let mut parts = v.split('.').map(|p| p.parse::<i64>().unwrap_or(0));
    let (a, b, c) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    (a << 16) | (b << 8) | c
}

/// SHA1 in 40 lowercase hex digits (script names, `redis.sha1hex`).
pub fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(data);
    let mut out = String::with_capacity(40);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
