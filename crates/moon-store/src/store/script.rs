//! EVAL, EVALSHA, EVAL_RO, EVALSHA_RO: a Lua script run in this shard's store, as one command.
//!
//! A script is a keyspace command like any other: it runs where its declared keys live (all on
//! one shard; across shards the server refuses it for now), in one turn of that shard, so
//! nothing interleaves with it. Each `redis.call` runs its command in this store through the
//! table, and what the command changes is logged as it is logged for a client — so a script's
//! record is **its effects**, all of them one unit of the log (applied all or none after a
//! crash), whatever the script computed to get there (time, random numbers, SPOP). Inside
//! MULTI or a cross-shard transaction it is one more command of the transaction.
//!
//! The scripts themselves (body by SHA1) are kept for the whole process in [`registry`], so
//! that an EVALSHA reaches a script loaded through any connection; each shard's thread compiles
//! them in its own Lua state (`moon_script::Engine`) when it first runs them. Nothing of a
//! script is logged: as in Redis, the script cache does not survive a restart.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use moon_proto::Frame;
use moon_script::{parse_shebang, sha1_hex, Engine, Host, Invocation, Outcome, Signals};

use super::paused::PausedScript;
pub use super::paused::{
    set_master_client, set_read_only_replica, set_replicas_check, set_stale_replica, Writes,
};
use super::{parse_i64, Store};
use crate::args::eq;
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::command::Flags;
use crate::reply::{self, err};
use crate::slot::shard_for_key;

/// A script may write; EVAL_RO and `#!lua flags=no-writes` may not. Neither is refused under
/// OOM as a whole: each write inside is (Redis's eval compatibility mode).
const SCRIPT: Flags = Flags::WRITE
    .union(Flags::NOSCRIPT)
    .union(Flags::STALE)
    .union(Flags::MAY_REPLICATE);
const SCRIPT_RO: Flags = Flags::READONLY.union(Flags::NOSCRIPT).union(Flags::STALE);

pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Scripting: "eval", -3, SCRIPT, numkeys at 2, COORDINATED, |s, a, now| s.eval(a, now, false, false)),
    command!(Scripting: "evalsha", -3, SCRIPT, numkeys at 2, COORDINATED, |s, a, now| s.eval(a, now, true, false)),
    command!(Scripting: "eval_ro", -3, SCRIPT_RO, numkeys at 2, COORDINATED, |s, a, now| s.eval(a, now, false, true)),
    command!(Scripting: "evalsha_ro", -3, SCRIPT_RO, numkeys at 2, COORDINATED, |s, a, now| s.eval(a, now, true, true)),
    command!(Scripting: "fcall", -3, SCRIPT, numkeys at 2, COORDINATED, |s, a, now| s.fcall(a, now, false)),
    command!(Scripting: "fcall_ro", -3, SCRIPT_RO, numkeys at 2, COORDINATED, |s, a, now| s.fcall(a, now, true)),
];

/// Redis's reply to an EVALSHA of a script it does not have.
pub const NO_SCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// The scripts loaded in this process, by SHA1 (40 lowercase hex digits).
pub mod registry {
    use super::*;

    #[derive(Default)]
    struct Scripts {
        bodies: HashMap<String, Arc<[u8]>>,
        /// Moves on at every SCRIPT FLUSH: a thread whose Lua state compiled scripts of an
        /// older generation drops them before it runs the next.
        generation: u64,
    }

    fn scripts() -> &'static RwLock<Scripts> {
        static SCRIPTS: std::sync::OnceLock<RwLock<Scripts>> = std::sync::OnceLock::new();
        SCRIPTS.get_or_init(Default::default)
    }

    /// The body of the script `sha` (any case), if it is loaded.
    pub fn get(sha: &[u8]) -> Option<Arc<[u8]>> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        let s = scripts().read().unwrap_or_else(|e| e.into_inner());
        s.bodies.get(&sha).cloned()
    }

    /// Loads `body`; its SHA1.
    pub fn add(body: &[u8]) -> String {
        let sha = sha1_hex(body);
        let mut s = scripts().write().unwrap_or_else(|e| e.into_inner());
        s.bodies.entry(sha.clone()).or_insert_with(|| body.into());
        sha
    }

    pub fn exists(sha: &[u8]) -> bool {
        get(sha).is_some()
    }

    /// SCRIPT FLUSH: every script forgotten, in every thread's Lua state before its next run.
    pub fn flush() {
        let mut s = scripts().write().unwrap_or_else(|e| e.into_inner());
        s.bodies.clear();
        s.generation += 1;
    }

    pub fn generation() -> u64 {
        scripts()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// The scripts' bytes (INFO's `used_memory_scripts`) and their number.
    pub fn stats() -> (usize, usize) {
        let s = scripts().read().unwrap_or_else(|e| e.into_inner());
        (
            s.bodies.values().map(|b| b.len() + 40).sum(),
            s.bodies.len(),
        )
    }
}

/// The function libraries of the process (FUNCTION LOAD), by library name. The server
/// persists them (this crate does no I/O): [`functions::codes`] is what it writes,
/// [`functions::restore`] what it reads back at startup.
pub mod functions {
    use std::collections::BTreeMap;

    use super::*;
    pub use moon_script::{FunctionInfo, LibraryInfo};

    /// Libraries by name in lower case (names are case-insensitive, as in Redis): code and
    /// what it registered.
    type ByName = BTreeMap<String, (Arc<[u8]>, LibraryInfo)>;

    /// Every library's code: what the server saves and restores.
    pub type Codes = Vec<Arc<[u8]>>;

    /// The file that keeps the libraries in the data directory (written by the server at
    /// every change, by `moon-cli import-rdb`; read at startup and by `export-rdb`).
    pub const FILE: &str = "functions.moon";
    const MAGIC: &[u8] = b"moon-functions 1\n";

    /// The file's bytes for `codes`: the magic line, each library's code as a 4-byte
    /// little-endian length and its bytes, then a CRC32 of everything before it.
    pub fn encode_file(codes: &[Arc<[u8]>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for code in codes {
            out.extend_from_slice(&(code.len() as u32).to_le_bytes());
            out.extend_from_slice(code);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The libraries' code in a file's bytes; why not, if they are not one.
    pub fn decode_file(bytes: &[u8]) -> Result<Codes, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .filter(|&n| n >= MAGIC.len() && bytes.starts_with(MAGIC))
            .ok_or("not a functions file of this version")?;
        let (body, crc) = bytes.split_at(body_len);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != crc {
            return Err("its checksum does not match (damaged or cut short)".into());
        }
        let mut codes = Vec::new();
        let mut rest = &body[MAGIC.len()..];
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err("a length is cut short".into());
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > tail.len() {
                return Err("a library is cut short".into());
            }
            codes.push(Arc::from(&tail[..len]));
            rest = &tail[len..];
        }
        Ok(codes)
    }

    #[derive(Default)]
    struct Libraries {
        libs: ByName,
        /// Moves on at every change: each thread's Lua state reloads every library before
        /// its next FCALL.
        generation: u64,
    }

    fn libraries() -> &'static RwLock<Libraries> {
        static LIBS: std::sync::OnceLock<RwLock<Libraries>> = std::sync::OnceLock::new();
        LIBS.get_or_init(Default::default)
    }

    fn read() -> std::sync::RwLockReadGuard<'static, Libraries> {
        libraries().read().unwrap_or_else(|e| e.into_inner())
    }

    fn write() -> std::sync::RwLockWriteGuard<'static, Libraries> {
        libraries().write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every library of `codes` loaded together in a fresh Lua state, as every thread's state
    /// will hold them: each must load, no library name twice, no function name in two
    /// libraries (names are case-insensitive). By lower-case library name.
    fn check(codes: &[Arc<[u8]>]) -> Result<ByName, Frame> {
        let engine = Engine::new(crate::REDIS_VERSION)
            .map_err(|e| Frame::Error(format!("ERR cannot start Lua: {e}")))?;
        let mut libs = ByName::new();
        for code in codes {
            let info = engine.load_library(code)?;
            let key = info.name.to_ascii_lowercase();
            if libs.contains_key(&key) {
                return Err(Frame::Error(format!(
                    "ERR Library '{}' already exists",
                    info.name
                )));
            }
            for f in &info.functions {
                let taken = libs.values().any(|(_, other)| {
                    other
                        .functions
                        .iter()
                        .any(|g| g.name.eq_ignore_ascii_case(&f.name))
                });
                if taken {
                    return Err(Frame::Error(format!(
                        "ERR Function {} already exists",
                        f.name
                    )));
                }
            }
            libs.insert(key, (code.clone(), info));
        }
        Ok(libs)
    }

    /// FUNCTION LOAD [REPLACE] of `code`, planned: the library's name and every library's code
    /// after it, checked ([`check`]); nothing changes until [`restore`] of that code (the
    /// server saves it first). Redis's refusal otherwise.
    pub fn plan_load(code: &[u8], replace: bool) -> Result<(String, Codes), Frame> {
        let (name, _) = moon_script::library_name(code)?;
        let key = name.to_ascii_lowercase();
        let current = read().libs.clone();
        if current.contains_key(&key) && !replace {
            return Err(Frame::Error(format!("ERR Library '{name}' already exists")));
        }
        let mut codes: Vec<Arc<[u8]>> = current
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, (c, _))| c.clone())
            .collect();
        codes.push(Arc::from(code));
        // The new library last: a function it shares with another is reported against it.
        let checked = check(&codes)?;
        let name = checked
            .get(&key)
            .map_or(name, |(_, info)| info.name.clone());
        Ok((name, codes))
    }

    /// FUNCTION RESTORE of libraries' `codes`, planned: with `flush` they become the only
    /// libraries; else they join the current ones, a library of the same name replacing the
    /// current one only with `replace` (Redis's FLUSH, REPLACE and APPEND policies). Every
    /// library's code after it, checked together; nothing changes on an error.
    pub fn plan_restore(codes: &[Bytes], flush: bool, replace: bool) -> Result<Codes, Frame> {
        let mut current = if flush {
            ByName::new()
        } else {
            read().libs.clone()
        };
        let mut added: Vec<Arc<[u8]>> = Vec::new();
        for code in codes {
            let (name, _) = moon_script::library_name(code)?;
            if current.remove(&name.to_ascii_lowercase()).is_some() && !replace {
                return Err(Frame::Error(format!("ERR Library {name} already exists")));
            }
            added.push(Arc::from(&code[..]));
        }
        let mut all: Codes = current.into_values().map(|(c, _)| c).collect();
        all.extend(added);
        check(&all)?;
        Ok(all)
    }

    /// FUNCTION DELETE of `name`, planned: every other library's code.
    pub fn plan_delete(name: &[u8]) -> Result<Codes, Frame> {
        let key = String::from_utf8_lossy(name).to_ascii_lowercase();
        let libs = read();
        if !libs.libs.contains_key(&key) {
            return Err(err("ERR Library not found"));
        }
        Ok(libs
            .libs
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, (c, _))| c.clone())
            .collect())
    }

    /// Every library: its name, code and functions (FUNCTION LIST), by name.
    pub fn list() -> Vec<(String, Arc<[u8]>, LibraryInfo)> {
        read()
            .libs
            .iter()
            .map(|(_, (code, info))| (info.name.clone(), code.clone(), info.clone()))
            .collect()
    }

    /// Every library's code, by name: what the server persists.
    pub fn codes() -> Vec<Arc<[u8]>> {
        read().libs.values().map(|(code, _)| code.clone()).collect()
    }

    /// Replaces every library with `codes` (a change the server saved, or startup), checked as
    /// FUNCTION LOAD checks them ([`check`]); nothing changes if they do not pass.
    pub fn restore(codes: &[Arc<[u8]>]) -> Result<(), Frame> {
        let libs = check(codes)?;
        let mut all = write();
        all.libs = libs;
        all.generation += 1;
        Ok(())
    }

    /// The function `name`, if a library registered it.
    pub fn find(name: &[u8]) -> Option<FunctionInfo> {
        let name = std::str::from_utf8(name).ok()?;
        read()
            .libs
            .values()
            .flat_map(|(_, info)| info.functions.iter())
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// (libraries, functions): FUNCTION STATS.
    pub fn counts() -> (usize, usize) {
        let libs = read();
        let functions = libs.libs.values().map(|(_, i)| i.functions.len()).sum();
        (libs.libs.len(), functions)
    }

    pub fn generation() -> u64 {
        read().generation
    }

    /// Brings `engine`'s libraries to the registry's, if `loaded` (the generation it has)
    /// is behind.
    pub fn sync(engine: &Engine, loaded: &mut u64) {
        let (generation, codes) = {
            let libs = read();
            if libs.generation == *loaded {
                return;
            }
            (
                libs.generation,
                libs.libs
                    .values()
                    .map(|(c, _)| c.clone())
                    .collect::<Vec<_>>(),
            )
        };
        engine.clear_functions();
        for code in codes {
            // They loaded together in a state like this one when they were checked (`check`):
            // one that does not load now answers its FCALLs "Function not found" here.
            let _ = engine.load_library(&code);
        }
        *loaded = generation;
    }
}

thread_local! {
    /// This thread's Lua state, the script registry generation its compiled scripts belong
    /// to, and the function libraries' generation it has loaded.
    static ENGINE: RefCell<Option<(Engine, u64, u64)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's Lua state, created on first use, emptied after a SCRIPT FLUSH
/// and holding the libraries as they are now.
pub fn with_engine<R>(f: impl FnOnce(&mut Engine) -> R) -> Result<R, Frame> {
    ENGINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let generation = registry::generation();
        if slot.as_ref().is_none_or(|(_, g, _)| *g != generation) {
            match slot.as_mut() {
                Some((engine, g, _)) => {
                    engine.flush();
                    *g = generation;
                }
                None => {
                    let engine = Engine::new(crate::REDIS_VERSION)
                        .map_err(|e| Frame::Error(format!("ERR cannot start Lua: {e}")))?;
                    *slot = Some((engine, generation, u64::MAX));
                }
            }
        }
        let Some((engine, _, loaded)) = slot.as_mut() else {
            return Err(err("ERR cannot start Lua"));
        };
        functions::sync(engine, loaded);
        Ok(f(engine))
    })
}

/// SCRIPT LOAD's check: the body's shebang and Lua compile (in this thread's state); its SHA1
/// once loaded.
pub fn load_script(body: &[u8]) -> Result<String, Frame> {
    let (_, skip) = parse_shebang(body).map_err(Frame::Error)?;
    let sha = sha1_hex(body);
    with_engine(|engine| engine.compile(&sha, &body[skip..]))??;
    Ok(registry::add(body))
}

/// A script invocation resolved: its SHA1, its body, its flags, and where its keys and
/// arguments are in the command.
pub struct ScriptSource {
    pub sha: String,
    body: Arc<[u8]>,
    /// The shebang line's length: Lua compiles what follows (its line break kept, so that
    /// errors name the user's line numbers).
    skip: usize,
    pub read_only: bool,
    /// No shebang: Redis's compatibility mode (no flags; on a read-only replica it runs, and
    /// each write it tries is refused).
    pub compat: bool,
    /// Flagged `allow-stale`: it runs on a replica whose link is down with
    /// `replica-serve-stale-data no` (the commands it calls must then be STALE ones).
    pub allow_stale: bool,
    /// Flagged `allow-oom`: it runs, and writes, over `maxmemory`.
    pub allow_oom: bool,
    pub numkeys: usize,
    /// An EVAL of a body not in the registry: added once it compiles (a script that does not
    /// compile is not kept, as in Redis).
    new: bool,
}

impl ScriptSource {
    /// The text Lua compiles.
    pub fn text(&self) -> &[u8] {
        &self.body[self.skip..]
    }

    /// Compiles it in `engine` and, if new, keeps it in the registry; Redis's error if it
    /// does not compile.
    pub fn compile_in(&self, engine: &Engine) -> Result<(), Frame> {
        engine.compile(&self.sha, self.text())?;
        if self.new {
            registry::add(&self.body);
        }
        Ok(())
    }
}

/// Resolves `EVAL body numkeys ...` / `EVALSHA sha numkeys ...` (`by_sha`), loading a new body;
/// `read_only` for EVAL_RO/EVALSHA_RO. Redis's error replies otherwise.
pub fn script_source(args: &[Bytes], by_sha: bool, read_only: bool) -> Result<ScriptSource, Frame> {
    let numkeys = numkeys(args)?;
    let (sha, body, new): (String, Arc<[u8]>, bool) = if by_sha {
        match registry::get(&args[1]) {
            Some(body) => (
                String::from_utf8_lossy(&args[1]).to_ascii_lowercase(),
                body,
                false,
            ),
            None => return Err(err(NO_SCRIPT)),
        }
    } else {
        let sha = sha1_hex(&args[1]);
        match registry::get(sha.as_bytes()) {
            Some(body) => (sha, body, false),
            None => (sha, Arc::from(&args[1][..]), true),
        }
    };
    let (flags, skip) = parse_shebang(&body).map_err(Frame::Error)?;
    Ok(ScriptSource {
        sha,
        body,
        skip,
        read_only: read_only || flags.no_writes,
        compat: skip == 0,
        allow_stale: flags.allow_stale,
        allow_oom: flags.allow_oom,
        numkeys,
        new,
    })
}

/// What a script's `redis.call` of `args` does, before any key is looked at: answered at once
/// (PING, ECHO, TIME, or a refusal in Redis's words), a SELECT of a database, or a keyspace
/// command to run.
pub enum ScriptStep {
    Answer(Frame),
    Select(usize),
    /// PUBLISH channel message.
    Publish(Bytes, Bytes),
    /// MEMORY USAGE key (a connection-level command outside scripts): the key's shard answers
    /// [`Store::memory_usage`].
    MemoryUsage(Bytes),
    /// The command refused before it ran (Redis's words): a rejected call of it in INFO
    /// commandstats, as Redis counts a script's refused commands.
    Refused(&'static KeyspaceCommand, Frame),
    Run(&'static KeyspaceCommand),
}

/// Checks a script's command as Redis checks it (`now`: the command's time, for TIME;
/// `databases`: how many SELECT may name; `wrote`: whether the script ran a write already;
/// `over_memory`: it started over `maxmemory` without `allow-oom`).
pub fn script_step(
    args: &[Bytes],
    writes: Writes,
    now: u64,
    databases: usize,
    wrote: bool,
    over_memory: bool,
) -> ScriptStep {
    let read_only = writes == Writes::ReadOnlyScript;
    const STALE_REFUSED: &str = "ERR Can not execute the command on a stale replica";
    let mut name_buf = [0u8; NAME_BUF];
    let name = lowercase_name(&args[0], &mut name_buf);
    // The connection's commands a script may use, answered here. Of these a stale replica
    // serves only the STALE ones (TIME, SELECT, PUBLISH; not PING, ECHO, MEMORY), as Redis.
    if matches!(name, "ping" | "echo" | "memory") && super::paused::is_stale_replica() {
        return ScriptStep::Answer(err(STALE_REFUSED));
    }
    match name {
        "ping" if args.len() <= 2 => {
            return ScriptStep::Answer(
                args.get(1)
                    .map_or(Frame::Simple("PONG"), |m| Frame::Bulk(m.clone())),
            );
        }
        "echo" if args.len() == 2 => return ScriptStep::Answer(Frame::Bulk(args[1].clone())),
        // PUBLISH is `may-replicate`: a write for a read-only script, as in Redis.
        "publish" if args.len() == 3 && read_only => {
            return ScriptStep::Answer(err(
                "ERR Write commands are not allowed from read-only scripts.",
            ));
        }
        "publish" if args.len() == 3 => {
            return ScriptStep::Publish(args[1].clone(), args[2].clone());
        }
        // The command's time (this crate reads no clock): milliseconds, as microseconds.
        "time" if args.len() == 1 => {
            return ScriptStep::Answer(Frame::Array(vec![
                Frame::Bulk(Bytes::from((now / 1000).to_string())),
                Frame::Bulk(Bytes::from((now % 1000 * 1000).to_string())),
            ]));
        }
        "memory"
            if eq(&args.get(1).cloned().unwrap_or_default(), "usage")
                && (args.len() == 3
                    || (args.len() == 5
                        && eq(&args[3], "samples")
                        && parse_i64(&args[4]).is_some())) =>
        {
            return ScriptStep::MemoryUsage(args[2].clone());
        }
        "select" if args.len() == 2 => {
            return match parse_i64(&args[1]) {
                Some(db) if db >= 0 && (db as usize) < databases => ScriptStep::Select(db as usize),
                Some(_) => ScriptStep::Answer(err("ERR DB index is out of range")),
                None => ScriptStep::Answer(err(reply::NOT_INTEGER)),
            };
        }
        _ => {}
    }
    let Some(row) = crate::table::lookup(&args[0]) else {
        return ScriptStep::Answer(err(if is_connection_command(name) {
            "ERR This Redis command is not allowed from script"
        } else {
            "ERR Unknown Redis command called from script"
        }));
    };
    let spec = &row.spec;
    if spec.flags.has(Flags::NOSCRIPT) {
        return ScriptStep::Answer(err("ERR This Redis command is not allowed from script"));
    }
    if !spec.args_ok(args.len()) {
        return ScriptStep::Answer(err(
            "ERR Wrong number of args calling Redis command from script",
        ));
    }
    // As Redis: `may_replicate` (PFCOUNT, which may write its cache) counts as a write.
    if read_only && (spec.is_write() || spec.flags.has(Flags::MAY_REPLICATE)) {
        return ScriptStep::Refused(
            row,
            err("ERR Write commands are not allowed from read-only scripts."),
        );
    }
    // A stale replica (its link down, `replica-serve-stale-data no`) runs only scripts flagged
    // `allow-stale` (the server refuses the others with MASTERDOWN), and in them only the
    // commands a stale replica serves.
    if !spec.flags.has(Flags::STALE) && super::paused::is_stale_replica() {
        return ScriptStep::Refused(row, err(STALE_REFUSED));
    }
    // On a read-only replica only writes proper are refused (PUBLISH, PFCOUNT run), as
    // Redis's `scriptVerifyWriteCommandAllow` does.
    if writes == Writes::ReadOnlyReplica && spec.is_write() {
        return ScriptStep::Refused(
            row,
            err("READONLY You can't write against a read only replica."),
        );
    }
    // `min-replicas-to-write`: a script with flags that may write was refused before it ran;
    // one without flags (EVAL's compatible mode) is refused at its first write, as in Redis.
    // Once it wrote it goes on: failing it half-way would leave half its effects.
    if spec.is_write() && !wrote && !super::paused::enough_replicas() {
        return ScriptStep::Refused(row, err(NO_REPLICAS));
    }
    // `maxmemory`, the same way (Redis's `scriptVerifyOOM`): a script that started over the
    // limit without `allow-oom` is refused its first command that may grow memory; one
    // declared for writes was refused before it ran.
    if over_memory && !wrote && spec.flags.has(Flags::DENYOOM) {
        return ScriptStep::Refused(row, err(reply::OOM));
    }
    if (name == "xread" || name == "xreadgroup") && stream_read_blocks(args) {
        // A script cannot wait (Redis refuses it rather than read without waiting).
        return ScriptStep::Answer(Frame::Error(format!(
            "ERR {name} command is not allowed with BLOCK option from scripts"
        )));
    }
    ScriptStep::Run(row)
}

/// What a write gets while a primary lacks the replicas `min-replicas-to-write` asks for.
pub const NO_REPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";

/// Room for the names [`script_step`] matches itself (the longest connection command is 12
/// bytes).
const NAME_BUF: usize = 24;

/// `raw` lowercased in `buf`, without an allocation per `redis.call`; "" for a name longer
/// than the buffer or not UTF-8, which matches none of [`script_step`]'s own names.
fn lowercase_name<'a>(raw: &[u8], buf: &'a mut [u8; NAME_BUF]) -> &'a str {
    let Some(name) = buf.get_mut(..raw.len()) else {
        return "";
    };
    name.copy_from_slice(raw);
    name.make_ascii_lowercase();
    std::str::from_utf8(name).unwrap_or("")
}

/// Whether an XREAD / XREADGROUP names the BLOCK option (before STREAMS; a group or consumer
/// called "block" is not one).
fn stream_read_blocks(args: &[Bytes]) -> bool {
    let mut i = 1;
    while let Some(a) = args.get(i) {
        if eq(a, "block") {
            return true;
        }
        i += if eq(a, "streams") {
            return false;
        } else if eq(a, "group") {
            3
        } else if eq(a, "count") {
            2
        } else {
            1
        };
    }
    false
}

/// The most bytes of arguments a script's writes may carry on one shard: its effects are one
/// unit of the log, which a record of `moon_aof`'s largest size must hold.
pub const EFFECTS_BUDGET: usize = 1 << 30;

/// What a script's write past [`EFFECTS_BUDGET`] answers.
pub const EFFECTS_TOO_LARGE: &str =
    "ERR a script's writes on one shard may carry 1 GiB: its effects are one record of the log";

/// A script on several shards cannot run a command of every shard (DBSIZE, FLUSHALL, SCAN).
pub const NOT_FROM_SPREAD_SCRIPT: &str =
    "ERR This command reads or writes every shard: a script whose keys are on several shards holds only those";

/// Redis Cluster's refusal of a key not on the script's node: Moon's of a key not on the
/// script's shard(s).
pub const NON_LOCAL_KEY: &str = "ERR Script attempted to access a non local key in a cluster node";

/// FCALL / FCALL_RO (`read_only`) checked: the number of keys, and the function and its
/// flags (a function without `no-writes` cannot run by FCALL_RO). Whether it is read-only.
pub fn fcall_check(args: &[Bytes], read_only: bool) -> Result<(usize, bool), Frame> {
    if parse_i64(&args[2]).is_none() {
        return Err(err("ERR Bad number of keys provided"));
    }
    let numkeys = numkeys(args)?;
    let Some(info) = functions::find(&args[1]) else {
        return Err(err("ERR Function not found"));
    };
    if read_only && !info.no_writes() {
        return Err(err(
            "ERR Can not execute a script with write flag using *_ro command.",
        ));
    }
    Ok((numkeys, read_only || info.no_writes()))
}

fn numkeys(args: &[Bytes]) -> Result<usize, Frame> {
    match parse_i64(&args[2]) {
        Some(n) if n < 0 => Err(err("ERR Number of keys can't be negative")),
        Some(n) if n as u64 > (args.len() - 3) as u64 => Err(err(
            "ERR Number of keys can't be greater than number of args",
        )),
        Some(n) => Ok(n as usize),
        None => Err(err(reply::NOT_INTEGER)),
    }
}

impl Store {
    /// Whether the command that just ran left a busy script paused ([`Store::resume_script`]
    /// goes on with it). Only while [`Store::set_may_pause`] allows it.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// While a busy script is paused: Redis's BUSY reply for the commands that cannot run
    /// meanwhile (its words differ for a function).
    pub fn paused_busy_reply(&self) -> Option<&'static str> {
        self.paused
            .as_ref()
            .map(|p| moon_script::busy_reply(p.signals.is_function()))
    }

    /// Lets a busy script run by the next commands pause (the shard then resumes it, holding
    /// its keyspace for it meanwhile), or not.
    pub fn set_may_pause(&mut self, may: bool) {
        self.may_pause = may;
    }

    /// The next slice of the paused script: its reply once it ended (its effects are then in
    /// [`Store::logged`], all of them, as for any command), `None` if it paused again.
    pub fn resume_script(&mut self) -> Option<Frame> {
        let paused = self.paused.take()?;
        self.select(paused.db);
        let PausedScript {
            run,
            signals,
            now,
            writes,
            written,
            over_memory,
            user,
            ..
        } = paused;
        self.script_user = user;
        let result = with_engine(|engine| {
            let mut host = StoreHost {
                user: store_user(self),
                store: self,
                now,
                writes,
                written,
                over_memory,
                signals: signals.clone(),
            };
            let outcome = engine.resume(run, &mut host);
            (outcome, host.written)
        });
        let reply = self.finish_slice(result, signals, now, (writes, over_memory));
        self.script_user = None;
        // Between slices and after the script, the store is in database 0, as between any
        // two commands (review finding: other clients' db-0 writes ran in the script's).
        self.select(0);
        reply
    }

    /// After a slice: the reply, or the run kept for the next slice.
    fn finish_slice(
        &mut self,
        result: Result<(Outcome, usize), Frame>,
        signals: Arc<Signals>,
        now: u64,
        (writes, over_memory): (Writes, bool),
    ) -> Option<Frame> {
        let reply = match result {
            Ok((Outcome::Done(reply), _)) => {
                let caught = self.script.last_error.take();
                if let (Some(caught), Some(text)) = (caught, reply.error_text()) {
                    if text.starts_with(&*caught) {
                        crate::stats::script_error(&caught, -1);
                    }
                }
                reply
            }
            Ok((Outcome::Suspended(run), written)) => {
                self.paused = Some(PausedScript {
                    run,
                    signals,
                    now,
                    writes,
                    written,
                    over_memory,
                    db: self.db,
                    user: self.script_user.clone(),
                });
                None?
            }
            Err(e) => e,
        };
        Some(reply)
    }

    fn fcall(&mut self, args: &[Bytes], now: u64, read_only: bool) -> Frame {
        let (numkeys, read_only) = match fcall_check(args, read_only) {
            Ok(c) => c,
            Err(e) => return e,
        };
        // A function always declares its flags: one that may write is refused as a whole
        // over `maxmemory` (Redis's DENYOOM from its flags), unless it allows OOM.
        let allow_oom = functions::find(&args[1]).is_some_and(|f| f.allow_oom());
        let over_memory = self.script.over_memory && !allow_oom;
        self.script.last_error = None;
        if over_memory && !read_only {
            self.refused = true;
            return err(reply::OOM);
        }
        let writes = Writes::for_script(read_only, self.script_client);
        let name = String::from_utf8_lossy(&args[1]).into_owned();
        let outer_db = self.db;
        let signals = Signals::new(vec![self.place.0], true);
        signals.describe(name.clone(), args);
        let may_pause = self.may_pause;
        let result = with_engine(|engine| {
            let mut host = StoreHost {
                user: store_user(self),
                store: self,
                now,
                writes,
                written: 0,
                over_memory,
                signals: signals.clone(),
            };
            let outcome = engine.run_function(
                &name,
                &args[3..3 + numkeys],
                &args[3 + numkeys..],
                &mut host,
                signals.clone(),
                may_pause,
            );
            (outcome, host.written)
        });
        let reply = self.finish_slice(result, signals, now, (writes, over_memory));
        self.select(outer_db);
        reply.unwrap_or(Frame::Null)
    }

    fn eval(&mut self, args: &[Bytes], now: u64, by_sha: bool, read_only: bool) -> Frame {
        let source = match script_source(args, by_sha, read_only) {
            Ok(s) => s,
            Err(e) => return e,
        };
        // Over `maxmemory` (`Store::begin_command` made what room it could): a script declared
        // for writes is refused as a whole, as Redis's DENYOOM from its flags; one without
        // flags runs and meets OOM at its first command that may grow memory, as in Redis.
        let over_memory = self.script.over_memory && !source.allow_oom;
        self.script.last_error = None;
        if over_memory && !source.compat && !source.read_only {
            self.refused = true;
            return err(reply::OOM);
        }
        let keys = &args[3..3 + source.numkeys];
        let argv = &args[3 + source.numkeys..];
        let writes = Writes::for_script(source.read_only, self.script_client);
        let outer_db = self.db;
        let signals = Signals::new(vec![self.place.0], false);
        let may_pause = self.may_pause;
        let result = with_engine(|engine| {
            if let Err(e) = source.compile_in(engine) {
                return (Outcome::Done(e), 0);
            }
            let mut host = StoreHost {
                user: store_user(self),
                store: self,
                now,
                writes,
                written: 0,
                over_memory,
                signals: signals.clone(),
            };
            let outcome = engine.run(
                &Invocation {
                    sha: &source.sha,
                    body: source.text(),
                    keys,
                    args: argv,
                },
                &mut host,
                signals.clone(),
                may_pause,
            );
            (outcome, host.written)
        });
        let reply = self.finish_slice(result, signals, now, (writes, over_memory));
        // A SELECT inside the script lasts as long as the script (Redis 7).
        self.select(outer_db);
        // Paused: the shard sees `is_paused` and takes no reply from here.
        reply.unwrap_or(Frame::Null)
    }
}

fn store_user(store: &Store) -> Option<crate::call::ScriptUser> {
    store.script_user.clone()
}

/// What a script's `redis.call` reaches: this store, checked as Redis checks a script's
/// commands.
struct StoreHost<'a> {
    store: &'a mut Store,
    now: u64,
    writes: Writes,
    /// Bytes of arguments of the writes run so far ([`EFFECTS_BUDGET`]).
    written: usize,
    /// It started over `maxmemory` without `allow-oom` (see [`script_step`]).
    over_memory: bool,
    /// The run as the process sees it: a write makes it unkillable.
    signals: Arc<Signals>,
    /// The user running the script, if restricted: each command is checked (ACL).
    user: Option<crate::call::ScriptUser>,
}

impl Host for StoreHost<'_> {
    fn acl_check(&mut self, args: &[Bytes]) -> Option<bool> {
        match &self.user {
            Some(user) => user.0.allows(args),
            None => script_knows_command(&args[0]).then_some(true),
        }
    }

    fn call(&mut self, args: Vec<Bytes>) -> Frame {
        let reply = self.checked_call(args);
        if let Some(text) = reply.error_text() {
            // Counted where it happens, as Redis counts it (INFO errorstats), also when the
            // script catches it; `Store::finish_slice` takes it back if the script's reply is
            // this very error, which the server counts when it sends it.
            crate::stats::script_error(text, 1);
            self.store.script.last_error = Some(text.into());
        }
        reply
    }
}

impl StoreHost<'_> {
    fn checked_call(&mut self, args: Vec<Bytes>) -> Frame {
        // ACL first, as Redis checks it, also for what the script step answers itself (PING,
        // PUBLISH, SELECT...: review finding).
        if let Some(user) = &self.user {
            if let Err(denied) = user.0.check(&args) {
                return denied;
            }
        }
        let wrote = self.written > 0;
        let step = script_step(
            &args,
            self.writes,
            self.now,
            self.store.configured_dbs,
            wrote,
            self.over_memory,
        );
        let answered = match step {
            ScriptStep::Run(row) => Ok(row),
            ScriptStep::Refused(row, reply) => {
                crate::stats::rejected(&row.spec, &args);
                return reply;
            }
            ScriptStep::Answer(reply) => Err(reply),
            ScriptStep::Select(db) => {
                self.store.select(db);
                Err(Frame::OK)
            }
            ScriptStep::Publish(channel, message) => {
                // Delivered once the script's effects are safe; how many receive it is not
                // known yet (Redis answers that number): 0.
                self.store.publish(channel, message);
                Err(Frame::Integer(0))
            }
            ScriptStep::MemoryUsage(key) => {
                let (shard, shards) = self.store.place;
                Err(if shards > 1 && shard_for_key(&key, shards) != shard {
                    err(NON_LOCAL_KEY)
                } else {
                    let db = self.store.db;
                    self.store
                        .memory_usage(db, &key, self.now)
                        .map_or(Frame::Null, |n| Frame::Integer(n as i64))
                })
            }
        };
        let row = match answered {
            Ok(row) => row,
            Err(reply) => {
                crate::stats::script_connection_call(&args, reply.is_error());
                return reply;
            }
        };
        let (shard, shards) = self.store.place;
        if shards > 1 && !matches!(row.spec.route, crate::command::Route::Keys(_)) {
            // DBSIZE, FLUSHALL, SCAN...: this shard would answer for every shard.
            return err(NOT_FROM_SPREAD_SCRIPT);
        }
        if shards > 1
            && row
                .spec
                .keys(&args)
                .any(|k| shard_for_key(k, shards) != shard)
        {
            return err(NON_LOCAL_KEY);
        }
        if row.spec.name.starts_with("sort") {
            // BY and GET name keys too (a client's SORT is checked where it is parsed).
            if let Err(e) = crate::store::sort::local_patterns(&args, shards) {
                return e;
            }
        }
        if row.spec.is_write() {
            if !self.signals.may_write() {
                // Killed by SCRIPT KILL: no write runs after its OK.
                return err(moon_script::KILLED_TEXT);
            }
            self.written = self
                .written
                .saturating_add(args.iter().map(|a| a.len() + 16).sum());
            if self.written > EFFECTS_BUDGET {
                return err(EFFECTS_TOO_LARGE);
            }
        }
        if crate::monitor::active() {
            crate::monitor::feed(self.now * 1000, self.store.db, "lua", &args);
        }
        self.store.in_script = true;
        let reply = self.store.run_row(row, &args, self.now, None, None);
        if row.spec.is_read() && !self.store.script.keys_remembered {
            // As Redis: a script that reads tracks the keys it declared for its caller.
            if let Some(reader) = self.store.script.reader {
                self.store.script.keys_remembered = true;
                for key in &self.store.script.keys {
                    self.store.tracking.remember(reader, key);
                }
            }
        } else if row.spec.is_write() {
            // A write may have dropped them from the table (a change forgets a key's readers,
            // the caller's too under NOLOOP): the next read remembers them again, as Redis
            // remembers them at every read-only command.
            self.store.script.keys_remembered = false;
        }
        self.store.in_script = false;
        // Counted as Redis counts a script's commands; their time is the script's own.
        if self.store.take_refused() {
            crate::stats::rejected(&row.spec, &args);
        } else {
            crate::stats::called(&row.spec, &args, 0, reply.is_error());
        }
        reply
    }
}

/// Whether the server has the command `name` (`redis.acl_check_cmd` of a user who may run
/// everything): a keyspace command, or one of the connection's.
pub fn script_knows_command(name: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    crate::table::lookup(name).is_some()
        || is_connection_command(&lower)
        || matches!(
            lower.as_str(),
            "ping" | "echo" | "publish" | "time" | "select"
        )
}

/// Commands of the connection (not of a keyspace) that Redis refuses inside a script.
fn is_connection_command(name: &str) -> bool {
    matches!(
        name,
        "multi"
            | "exec"
            | "discard"
            | "watch"
            | "unwatch"
            | "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "ssubscribe"
            | "sunsubscribe"
            | "auth"
            | "hello"
            | "client"
            | "script"
            | "function"
            | "fcall"
            | "fcall_ro"
            | "monitor"
            | "shutdown"
            | "bgrewriteaof"
            | "reset"
            | "quit"
            | "cluster"
            | "save"
            | "bgsave"
            | "replicaof"
            | "slaveof"
            | "sync"
            | "psync"
            | "failover"
            | "config"
    )
}
