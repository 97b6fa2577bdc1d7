//! Lua scripting as Redis has it (EVAL and friends): Lua 5.1 in Redis's sandbox, the `redis.*`
//! API, and the conversions between RESP replies and Lua values.
//!
//! This crate owns the Lua side only. It never touches a keyspace, a shard or a log: every
//! `redis.call` goes to a [`Host`] that the caller provides for the length of one run, which
//! checks the command (unknown, not allowed from scripts, a write in a read-only script, a key
//! on another shard) and runs it where the script's keys live. Lua states are not `Send`: each
//! shard's thread keeps its own [`Engine`].
//!
//! - `engine.rs`: a Lua state, its compiled scripts by SHA1, one run.
//! - `suspending.rs`: runs whose `redis.call`s wait (a script whose keys span shards).
//! - `functions.rs`: Redis 7 function libraries (FUNCTION LOAD, FCALL) in a state.
//! - `gate.rs`: C gates in front of the Rust functions scripts call (bounded argument lists).
//! - `errors.rs`: the Redis text of errors and the `user_script:N:` position of the caller.
//! - `convert.rs`: RESP ↔ Lua, RESP2 and RESP3, exactly as Redis documents them.
//! - `watch.rs`: the hook that watches every run: SCRIPT KILL, busy runs, pauses.
//! - `shebang.rs`: `#!lua flags=...`, the script's declared flags.
//! - `libs.rs`: `cjson`, `cmsgpack` and `bit`, as Redis loads them; `struct_lib.rs`: `struct`.
//! - `prelude.lua`: the sandbox (read-only globals and libraries, no I/O, no bytecode) and the
//!   `redis` table's Lua half.

mod convert;
mod engine;
mod errors;
mod functions;
mod gate;
mod host;
mod libs;
mod shebang;
mod struct_lib;
mod suspending;
mod watch;

pub use engine::{sha1_hex, Engine, Invocation, Outcome, Suspended};
pub use functions::{library_name, FunctionInfo, LibraryInfo};
pub use host::{AsyncHost, Host, ReplyFuture};
pub use shebang::{parse_shebang, ScriptFlags};
pub use watch::{
    any_busy, busy_on, busy_reply, busy_threshold, kill, running_script, set_busy_threshold,
    stop_for_shutdown, RunningScript, Signals, KILLED_TEXT, SLICE,
};

#[cfg(test)]
mod tests;
