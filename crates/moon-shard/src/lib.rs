//! Shards: one glommio executor per shard, pinned to a CPU, and the messages between them.
//!
//! This crate owns the thread-per-core runtime. [`start`] spawns one executor per shard, each
//! pinned to its CPU, joins them in a full mesh of glommio shared channels and hands every
//! executor its [`Shard`]: the shard's [`moon_store::Store`] (owned by that thread alone, never
//! locked) plus the senders to every other shard. A command for a key owned elsewhere travels
//! as part of a [`Shard::run_batch`] message — all commands of one pipeline bound for the same
//! shard go in one message — and its replies come back in one message.
//!
//! It must never share mutable state between shards or block an executor: a shard's data is
//! touched only by its own thread, and the only way to reach another shard is a message.

//!
//! The runtime is the `runtime` feature (on by default). Without it the crate is [`recovery`]
//! alone — a shard's files checked and replayed into a store, pure file logic — which is all
//! `moon-cli` takes: the operator's tool never builds glommio.

pub mod base;
#[cfg(feature = "runtime")]
mod blocked;
mod clock;
mod load_delay;
pub mod recovery;
#[cfg(feature = "runtime")]
pub mod rewrite;
#[cfg(feature = "runtime")]
mod runtime;
#[cfg(feature = "runtime")]
mod shard;
mod state;
#[cfg(feature = "runtime")]
mod tail;
#[cfg(feature = "runtime")]
pub mod txn;

#[cfg(all(test, feature = "runtime"))]
mod replay_check;

pub use clock::now_ms;
pub use load_delay::set_key_load_delay;
#[cfg(feature = "runtime")]
pub use rewrite::KeyspaceCopy;
#[cfg(feature = "runtime")]
pub use runtime::start;
#[cfg(feature = "runtime")]
pub use shard::{
    join_all, set_active_expire, EventSink, InvalidationSink, Shard, ShardCounters, SHARD_GONE,
};
#[cfg(feature = "runtime")]
pub use state::{BlockOn, Serve, Waiter, Woken};
pub use state::{CommitFailure, ShardSetConfig, Tx, TxId};
#[cfg(feature = "runtime")]
pub use state::{EarlyPart, LastPart};
