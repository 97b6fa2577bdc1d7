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
//! - `convert.rs`: RESP ↔ Lua, RESP2 and RESP3, exactly as Redis documents them.
//! - `shebang.rs`: `#!lua flags=...`, the script's declared flags.
//! - `prelude.lua`: the sandbox (read-only globals and libraries, no I/O, no bytecode) and the
//!   `redis` table's Lua half.

mod convert;
mod engine;
mod shebang;

use bytes::Bytes;
use moon_proto::Frame;

pub use engine::{sha1_hex, Engine, Invocation};
pub use shebang::{parse_shebang, ScriptFlags};

/// Where a script's `redis.call` and `redis.pcall` go.
pub trait Host {
    /// Runs one command for the script (the name first) and returns its reply. A refusal is an
    /// error reply in Redis's words, e.g. `ERR Unknown Redis command called from script`.
    fn call(&mut self, args: Vec<Bytes>) -> Frame;
}

#[cfg(test)]
mod tests;
