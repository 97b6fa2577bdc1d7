//! The per-shard append-only log: record framing, writing and reading (SPEC §2).
//!
//! Owns the byte format `[u64 lsn][u32 len][payload][u32 crc32]` and nothing above it. It must
//! never decide which shard a command belongs to, and never report a record as written before
//! the kernel has it.
