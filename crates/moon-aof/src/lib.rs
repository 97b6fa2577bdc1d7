//! The per-shard append-only log: record framing, the group-commit writer, and the reader
//! (SPEC §2, §5).
//!
//! A record is `[u64 lsn][u32 len][payload][u32 crc32]`, little-endian, the checksum covering
//! header and payload ([`record`]). [`reader`] walks a file and tells a torn tail (the last
//! write was cut short: drop it, truncate) from corruption (a bad record with good ones after
//! it: refuse). [`writer::AofWriter`] lives on its shard's executor: everything the shard
//! executed in one turn is appended with one write and, under `appendfsync always`, one
//! fdatasync, and a waiter learns its record is safe only after that.
//!
//! The writer is the `writer` feature (on by default); without it the crate is the format and
//! the reader, which is all `moon-cli` takes.
//!
//! This crate must never decide which shard a command belongs to, never report a record as
//! written before the kernel has it (or, under `always`, before fdatasync returned), and never
//! retry a failed fsync and call it success.

pub mod reader;
pub mod record;
#[cfg(feature = "writer")]
pub mod writer;

pub use reader::{replay_file, replay_file_until, AofError, ReplayReport};
pub use record::{
    append_command_record, append_group_record, append_unit, decode_payload, encode_command,
    record_target, TooLarge,
};
#[cfg(feature = "writer")]
pub use writer::{
    any_log_failed, AofStatus, AofWriter, FaultPlan, FsyncPolicy, LogProgress, Tap, Tapped,
};
