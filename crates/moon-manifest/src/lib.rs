//! The AOF manifest (`appendonlydir/moon.aof.manifest`, SPEC §3): parsing v1 and v2, writing
//! v2 atomically, and migrating a v1 directory to v2 with rollback.
//!
//! It owns file names and the manifest's text and must never touch record contents.
