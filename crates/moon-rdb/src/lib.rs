//! Redis's RDB format, read and written: whole files (`dump.rdb`, the base of an AOF written
//! with `aof-use-rdb-preamble yes`) and the DUMP/RESTORE payload, which is one value in the
//! same encoding followed by its RDB version and a CRC64.
//!
//! What it owns: the byte format, from RDB version 1 to 12 (Redis 7.4) — length
//! and string encodings (integers, LZF), every compact encoding Redis has used for a value
//! (ziplist, zipmap, intset, listpack, quicklist, stream listpacks, hashes with field TTLs),
//! the opcodes around keys (databases, expiries, AUX fields, functions, module data) and the
//! CRC64 that ends a file. Values come out as plain [`Object`]s (lists of strings, pairs,
//! stream entries and groups), their strings `Bytes` of their own or [`Text`] lent from the
//! file's bytes (a loader that copies them into values of its own copies them once): nothing
//! here knows how Moon keeps a value in memory
//! (`moon-store` converts), and nothing here opens a file or decides what to do with a key
//! (`moon-cli` and the server do).
//!
//! What it must never do: trust the bytes. Every length is checked against what is left
//! before anything is allocated or sliced, so a truncated or corrupt file or payload is refused
//! with the offset where it went wrong, never a panic or an allocation the input did not pay
//! for. A value of a type Moon cannot hold (module data) is reported by name, or skipped when
//! the caller asks.

mod crc64;
mod cursor;
mod dump;
mod error;
mod file;
mod object;
mod packed;
mod text;
mod write;

pub use write::needs_version;

pub use crc64::crc64;
pub use dump::{
    decode_dump, decode_functions_dump, encode_dump, encode_functions_dump, DUMP_VERSION,
};
pub use error::{Error, ErrorKind};
pub use file::{FileReader, FileWriter, Item, KeyRecord};
pub use object::{HashField, Object, Pending, StreamConsumer, StreamGroup, StreamId, StreamValue};
pub use text::Text;

/// The oldest RDB version read: every one Redis 7 still loads (version 9 is Redis 5.0's; older
/// files differ only in having no checksum before version 5).
pub const MIN_VERSION: u32 = 1;
/// The newest RDB version read (Redis 7.4).
pub const MAX_VERSION: u32 = 12;
/// The version written when nothing needs a newer one: Redis 7.0's, which Redis 7.0 and every
/// later Redis load.
pub const REDIS_7_0: u32 = 10;
/// Redis 7.4's: the first with hash field TTLs.
pub const REDIS_7_4: u32 = 12;
