//! The AOF manifest (`appendonlydir/moon.aof.manifest`, SPEC §3): which layout a data
//! directory holds, which files belong to it, and how a legacy directory becomes a per-shard one.
//!
//! [`manifest`] parses v1 (the legacy top-level layout: one plain-RESP log for everything) and
//! v2 (the per-shard layout), renders v2, and derives every file path — paths are never
//! stored. [`fsio`] writes a manifest atomically (temp file, fsync, rename, fsync directory).
//! [`migrate`] turns a v1 directory into a one-shard v2 directory in place, so that a crash at
//! any instant leaves the complete old layout or the complete new one, and any failure before
//! the new manifest is durable puts every file back as it was.
//!
//! This crate owns file names and the manifest text. It must never decide which shard a key
//! belongs to, never overwrite a manifest it could not parse, and never delete a file before the
//! manifest that stops referring to it is durable.

pub mod fsio;
pub mod lock;
pub mod manifest;
pub mod migrate;

pub use manifest::{
    aof_dir, is_legacy, load, manifest_path, peek, BaseInfo, Manifest, ManifestError, PerShard,
    TopLevel, MANIFEST_NAME,
};
pub use migrate::{migrate_v1_to_v2, remove_leftovers, Migrated};

#[cfg(test)]
mod tests;
