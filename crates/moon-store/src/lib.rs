//! A shard's keyspace and the commands that run on it.
//!
//! This crate owns the data model and Redis's command semantics for one shard: parsing a
//! command's arguments, applying it to the [`Keyspace`], and producing the exact reply Redis
//! would give. It also owns the key → shard function ([`slot::shard_for_key`]) and the command
//! table, because everything that routes or replays commands must agree on them.
//!
//! It must never do I/O, know about other shards, or read the clock: time comes in as an
//! argument (`now`, Unix milliseconds), so replay is deterministic. A write that changed the
//! keyspace is reported as the command to log, with relative times made absolute, through
//! [`Store::take_log`] — the shard decides what to do with it.
//!
//! Lua scripts (EVAL) are commands of this crate too (`store/script.rs`): the Lua state comes
//! from `moon-script`, and each `redis.call` runs through this crate's table in this store, so a
//! script's effects are logged like any command's.

pub mod args;
pub mod call;
pub mod command;
pub mod evict;
pub mod glob;
pub mod keyspace;
pub mod latency;
pub mod lazyfree;
pub mod monitor;
pub mod notify;
pub mod reply;
mod run;
pub mod slot;
pub mod slowlog;
pub mod stats;
mod store;
pub mod table;
pub mod tracking;
pub mod value;

pub use evict::{EvictionPolicy, MemoryLimit};
pub use keyspace::{Keyspace, NO_EXPIRY_CHECK};
pub use notify::{KeyEvent, NotifyFlags};
pub use store::bitmap::bitop_result;
pub use store::blocking::{blocking_form, is_blocking, may_wait, Blocking, Shape};
pub use store::hll::{
    count_merged as pf_count_merged, merge_strings as pf_merge_strings,
    merged_into as pf_merged_into,
};
pub use store::keys::copy_options;
pub use store::lcs::{lcs_reply, NOT_STRINGS};
pub use store::list::{lmpop_args, End};
pub use store::script::{
    fcall_check, functions, load_script, registry as scripts, script_knows_command, script_source,
    script_step, set_master_client, set_read_only_replica, set_replicas_check, set_stale_replica,
    ScriptSource, ScriptStep, Writes, EFFECTS_BUDGET, EFFECTS_TOO_LARGE, NON_LOCAL_KEY,
    NOT_FROM_SPREAD_SCRIPT, NO_REPLICAS, NO_SCRIPT,
};
pub use store::set::{sintercard_args, SetOp};
pub use store::sort::local_patterns as sort_local_patterns;
pub use store::stream::ReadArgs;
pub use store::zset::{
    combine_args, members_reply as zset_members_reply, zmpop_args, zmpop_reply, Combine, Scored,
    ZEnd,
};
pub use store::{Store, StoreStats, WatchToken, MAX_DATABASES};

/// The Redis version Moon answers as (INFO's `redis_version`, Lua's `redis.REDIS_VERSION`).
pub const REDIS_VERSION: &str = "7.2.0";

/// The most bytes of keys one command may evict before it runs (its record carries them).
pub fn store_eviction_batch_bytes() -> usize {
    store::EVICTION_BATCH.1
}
pub use call::{Call, Permissions, ScriptUser};
pub use value::{Chunk, Encodings, Value};

/// `MOON.DB db`: the database of the command right after it, in a shard's batch and in the log.
pub fn select_db(db: usize) -> Vec<bytes::Bytes> {
    vec![
        bytes::Bytes::from_static(b"MOON.DB"),
        bytes::Bytes::from(db.to_string()),
    ]
}

/// `cmds` as they run in database `db`: each after its own `MOON.DB db` (none in database 0).
pub fn in_db(db: usize, cmds: Vec<Vec<bytes::Bytes>>) -> Vec<Vec<bytes::Bytes>> {
    if db == 0 {
        return cmds;
    }
    let mut out = Vec::with_capacity(cmds.len() * 2);
    for c in cmds {
        out.push(select_db(db));
        out.push(c);
    }
    out
}
