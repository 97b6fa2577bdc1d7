//! Redis 7 functions (FUNCTION LOAD, FCALL) in a Lua state: a library's code runs once, when
//! it is loaded, and registers named functions with `redis.register_function`; FCALL calls
//! one with its keys and arguments as parameters.
//!
//! Which libraries exist is the caller's business (a registry of the process, persisted);
//! this module loads a library's code into one state, reports what it registered, and calls
//! the functions. During a load `redis.call` is not available, as in Redis.

use bytes::Bytes;
use mlua::{Function, Table, Value, Variadic};
use moon_proto::Frame;

use crate::convert::error_frame;
use crate::engine::{Engine, Outcome};
use crate::host::Host;
use crate::watch::Current;

/// A function as its library registered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: String,
    pub description: Option<String>,
    /// Its flags as given (`no-writes`, `allow-oom`, `allow-stale`, `no-cluster`,
    /// `allow-cross-slot-keys`).
    pub flags: Vec<String>,
}

impl FunctionInfo {
    pub fn no_writes(&self) -> bool {
        self.flags.iter().any(|f| f == "no-writes")
    }

    /// It may run, and write, over `maxmemory`.
    pub fn allow_oom(&self) -> bool {
        self.flags.iter().any(|f| f == "allow-oom")
    }

    /// It may run on a replica whose link is down with `replica-serve-stale-data no`.
    pub fn allow_stale(&self) -> bool {
        self.flags.iter().any(|f| f == "allow-stale")
    }
}

/// What loading a library's code found: its name and its functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryInfo {
    pub name: String,
    pub functions: Vec<FunctionInfo>,
}

/// How long a library's code may run while it loads (Redis's `LOAD_TIMEOUT_MS`).
const LOAD_TIME_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);

const FLAGS: &[&str] = &[
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn err(text: &str) -> Frame {
    error_frame(text)
}

/// A library's metadata line (`#!lua name=mylib`): its name and where its code starts.
pub fn library_name(code: &[u8]) -> Result<(String, usize), Frame> {
    if !code.starts_with(b"#!") {
        return Err(err("ERR Missing library metadata"));
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err(err("ERR Invalid library metadata"));
    };
    // Split as Redis splits it (sdssplitargs): `name="my lib"` is one part, unquoted.
    let parts = moon_proto::parse::split_args(&code[..end])
        .map_err(|_| err("ERR Invalid library metadata"))?;
    let mut parts = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let Some(engine) = parts.next() else {
        return Err(err("ERR Invalid library metadata"));
    };
    if !engine.eq_ignore_ascii_case("#!lua") {
        return Err(Frame::Error(format!(
            "ERR Engine '{}' not found",
            engine.trim_start_matches("#!")
        )));
    }
    let mut name = None;
    for part in parts {
        let given = part
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("name="))
            .map(|_| part[5..].to_string());
        match given {
            Some(_) if name.is_some() => {
                return Err(err(
                    "ERR Invalid metadata value, name argument was given multiple times",
                ))
            }
            Some(n) => name = Some(n),
            None => {
                return Err(error_frame(&format!(
                    "ERR Invalid metadata value given: {part}"
                )))
            }
        }
    }
    let Some(name) = name else {
        return Err(err("ERR Library name was not given"));
    };
    if !valid_name(&name) {
        return Err(err(
            "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        ));
    }
    Ok((name, end))
}

/// The functions the library being loaded registered so far: in the Lua state's app data
/// while a load runs, and only then.
struct Registering(Vec<(String, Function, FunctionInfo)>);

/// FUNCTION LOAD's globals, built once per state (app data).
struct LoadGlobals(Table);

/// The globals a library's code runs with (`prelude.lua`'s `load_globals`): a `redis` table of
/// `register_function`, `log`, the LOG_* levels and the version.
fn load_globals(engine: &Engine) -> mlua::Result<Table> {
    let lua = engine.lua();
    if let Some(g) = lua.app_data_ref::<LoadGlobals>() {
        return Ok(g.0.clone());
    }
    let api = lua.create_table()?;
    api.raw_set("register_function", register_function(lua)?)?;
    for name in [
        "log",
        "LOG_DEBUG",
        "LOG_VERBOSE",
        "LOG_NOTICE",
        "LOG_WARNING",
        "REDIS_VERSION",
        "REDIS_VERSION_NUM",
    ] {
        api.raw_set(name, engine.redis_table().raw_get::<Value>(name)?)?;
    }
    let globals: Table = engine.load_globals_builder().call(api)?;
    lua.set_app_data(LoadGlobals(globals.clone()));
    Ok(globals)
}

/// `redis.register_function`: it registers only while a load runs (a library's function that
/// kept a reference to it and calls it later gets Redis's error).
fn register_function(lua: &mlua::Lua) -> mlua::Result<Function> {
    let register = lua.create_function(|lua, args: Variadic<Value>| {
        let Some(mut found) = lua.app_data_mut::<Registering>() else {
            return Err(mlua::Error::RuntimeError(
                "ERR redis.register_function can only be called on FUNCTION LOAD command".into(),
            ));
        };
        let (fname, callback, info) = registration(&args).map_err(mlua::Error::RuntimeError)?;
        if found
            .0
            .iter()
            .any(|(n, _, _)| n.eq_ignore_ascii_case(&fname))
        {
            return Err(mlua::Error::RuntimeError(
                "ERR Function already exists in the library".into(),
            ));
        }
        found.0.push((fname, callback, info));
        Ok(())
    })?;
    crate::gate::gate(lua, register)
}

/// What one `redis.register_function` call registers, in either form, with Redis's error
/// texts (the positional form's and the named form's differ, as in Redis).
fn registration(args: &Variadic<Value>) -> Result<(String, Function, FunctionInfo), String> {
    let (name, callback, flags, description) = match args.as_slice() {
        [Value::Table(t)] => named_arguments(t)?,
        [_] => return Err("ERR calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).".into()),
        [name, callback] => {
            let Value::String(name) = name else {
                return Err("ERR first argument to redis.register_function must be a string".into());
            };
            let Value::Function(callback) = callback else {
                return Err(
                    "ERR second argument to redis.register_function must be a function".into(),
                );
            };
            (name.to_string_lossy(), callback.clone(), Vec::new(), None)
        }
        _ => return Err("ERR wrong number of arguments to redis.register_function".into()),
    };
    if !valid_name(&name) {
        // Redis's text for a function's name too.
        return Err("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long".into());
    }
    Ok((
        name.clone(),
        callback,
        FunctionInfo {
            name,
            description,
            flags,
        },
    ))
}

type Named = (String, Function, Vec<String>, Option<String>);

/// `redis.register_function{function_name=..., callback=..., flags=..., description=...}`.
fn named_arguments(t: &Table) -> Result<Named, String> {
    let (mut name, mut callback, mut flags, mut description) = (None, None, Vec::new(), None);
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let Value::String(k) = k else {
            return Err(
                "ERR named argument key given to redis.register_function is not a string".into(),
            );
        };
        match k.to_str().as_deref() {
            Ok("function_name") => match v {
                Value::String(s) => name = Some(s.to_string_lossy()),
                _ => return Err(
                    "ERR function_name argument given to redis.register_function must be a string"
                        .into(),
                ),
            },
            Ok("description") => match v {
                Value::String(s) => description = Some(s.to_string_lossy()),
                _ => return Err(
                    "ERR description argument given to redis.register_function must be a string"
                        .into(),
                ),
            },
            Ok("callback") => {
                match v {
                    Value::Function(f) => callback = Some(f),
                    _ => return Err(
                        "ERR callback argument given to redis.register_function must be a function"
                            .into(),
                    ),
                }
            }
            Ok("flags") => {
                let Value::Table(list) = v else {
                    return Err("ERR flags argument to redis.register_function must be a table representing function flags".into());
                };
                for f in list.sequence_values::<Value>() {
                    let flag = match f {
                        Ok(Value::String(f)) => f.to_string_lossy(),
                        _ => return Err("ERR unknown flag given".into()),
                    };
                    if !FLAGS.contains(&flag.as_str()) {
                        return Err("ERR unknown flag given".into());
                    }
                    flags.push(flag);
                }
            }
            _ => return Err("ERR unknown argument given to redis.register_function".into()),
        }
    }
    let Some(name) = name else {
        return Err("ERR redis.register_function must get a function name argument".into());
    };
    let Some(callback) = callback else {
        return Err("ERR redis.register_function must get a callback argument".into());
    };
    Ok((name, callback, flags, description))
}

impl Engine {
    /// Loads a library (`#!lua name=...` then code that calls `redis.register_function`): its
    /// functions become callable here, replacing those of a library of the same name that
    /// this state loaded before. Redis's error text if it does not load.
    ///
    /// The code runs with FUNCTION LOAD's globals (`prelude.lua`'s `load_globals`): only
    /// `redis.register_function`, `redis.log` and the version, as in Redis; the globals'
    /// view is pointed back at the scripts' globals afterwards, whatever happened.
    pub fn load_library(&self, code: &[u8]) -> Result<LibraryInfo, Frame> {
        let (name, skip) = library_name(code)?;
        let chunk = self
            .lua()
            .load(&code[skip..])
            .set_name("@user_function")
            .set_mode(mlua::ChunkMode::Text)
            .into_function()
            .map_err(|e| {
                error_frame(&format!(
                    "ERR Error compiling function: {}",
                    crate::engine::lua_message(&e)
                ))
            })?;
        let view = self
            .lua()
            .globals()
            .metatable()
            .ok_or_else(|| err("ERR the scripts' globals have no view to point at a load"))?;
        let scripts_globals: Value = view.raw_get("__index").unwrap_or(Value::Nil);
        let loaded = (|| -> mlua::Result<mlua::Result<()>> {
            view.raw_set("__index", load_globals(self)?)?;
            self.lua().set_app_data(Registering(Vec::new()));
            // A library's code runs once, now: 500 ms at most, as Redis allows a load.
            let started = std::time::Instant::now();
            self.lua().set_hook(
                mlua::HookTriggers::new().every_nth_instruction(10_000),
                move |_, _| {
                    if started.elapsed() > LOAD_TIME_LIMIT {
                        return Err(mlua::Error::RuntimeError("FUNCTION LOAD timeout".into()));
                    }
                    Ok(mlua::VmState::Continue)
                },
            )?;
            Ok(chunk.call::<()>(()))
        })();
        self.lua().remove_hook();
        let found = self
            .lua()
            .remove_app_data::<Registering>()
            .map_or_else(Vec::new, |r| r.0);
        let restored = view.raw_set("__index", scripts_globals);
        match (loaded, restored) {
            (Ok(Ok(())), Ok(())) => {}
            (Ok(Err(e)) | Err(e), _) | (_, Err(e)) => {
                return Err(error_frame(&format!(
                    "ERR Error registering functions: {}",
                    crate::engine::error_text(&e)
                )))
            }
        }
        if found.is_empty() {
            return Err(err("ERR No functions registered"));
        }
        let library: Table = self
            .lua()
            .create_table()
            .map_err(|e| error_frame(&format!("ERR {e}")))?;
        let mut functions = Vec::new();
        for (fname, callback, info) in found {
            // Function names are case-insensitive, as in Redis.
            let _ = library.raw_set(fname.to_ascii_lowercase(), callback);
            functions.push(info);
        }
        let _ = self.libraries().raw_set(name.as_str(), library);
        Ok(LibraryInfo { name, functions })
    }

    /// Forgets every library loaded here.
    pub fn clear_functions(&self) {
        let names: Vec<Value> = self
            .libraries()
            .pairs::<Value, Value>()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        for name in names {
            let _ = self.libraries().raw_set(name, Value::Nil);
        }
    }

    /// The function `name` of any library loaded here.
    pub(crate) fn function(&self, name: &str) -> Option<Function> {
        for pair in self.libraries().pairs::<Value, Table>() {
            let Ok((_, library)) = pair else { continue };
            if let Ok(Value::Function(f)) = library.raw_get::<Value>(name.to_ascii_lowercase()) {
                return Some(f);
            }
        }
        None
    }

    /// FCALL: calls function `name` with its keys and arguments, every `redis.call` going to
    /// `host` (`signals` and `may_pause` as for [`Engine::run`]). `ERR Function not found` if
    /// no library loaded here registered it.
    pub fn run_function(
        &self,
        name: &str,
        keys: &[Bytes],
        args: &[Bytes],
        host: &mut dyn Host,
        signals: std::sync::Arc<crate::Signals>,
        may_pause: bool,
    ) -> Outcome {
        let Some(f) = self.function(name) else {
            return Outcome::Done(err("ERR Function not found"));
        };
        match self.bound(f, keys, args) {
            Ok(f) => self.start(f, name, host, Current::new(signals, may_pause)),
            Err(e) => Outcome::Done(error_frame(&format!(
                "ERR Error running function {name}: {e}"
            ))),
        }
    }

    /// `f` with its two parameters (the keys, the arguments) bound.
    pub(crate) fn bound(
        &self,
        f: Function,
        keys: &[Bytes],
        args: &[Bytes],
    ) -> mlua::Result<Function> {
        let lua = self.lua();
        let strings = |items: &[Bytes]| -> mlua::Result<Table> {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_seti(i + 1, lua.create_string(item)?)?;
            }
            Ok(t)
        };
        self.reset_run_state();
        // A function gets its keys and arguments as parameters: the globals an EVAL of
        // another client set are not there for it (review finding), as in Redis.
        self.globals_table().raw_set("KEYS", Value::Nil)?;
        self.globals_table().raw_set("ARGV", Value::Nil)?;
        f.bind((strings(keys)?, strings(args)?))
    }
}
