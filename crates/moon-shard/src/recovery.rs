//! Recovering one shard's files into a keyspace: the one procedure the server's startup, the
//! rebuild after a failed log ([`crate::Shard`]'s `back_to_the_log`) and `moon-cli
//! migrate-aof` all run, so that a tool never accepts — and then deletes — what the server
//! would refuse.
//!
//! A shard's files are its base (a rewrite's or migration's snapshot, LSNs up to the
//! manifest's `max_lsn`) and its incr (the records after it). What is refused, and why:
//!
//! - **a base that is not the one the manifest recorded.** A base is complete and fsynced
//!   before the manifest that names it is written, and the manifest records its length and
//!   CRC-32: a missing, empty, partial or foreign file under its name means data was lost
//!   outside Moon. (A manifest written before bases were recorded falls back to what can be
//!   told without: a missing base while the incr does not start at or below `max_lsn`, a torn
//!   base, or one whose records stop before `max_lsn`.)
//! - **corruption** in either file: a bad record with valid records after it ([`moon_aof`]).
//!
//! The incr's records follow the base's last LSN (`max_lsn`): its scan starts there, so a
//! damaged first record is corruption, not a torn tail at offset 0 whatever the LSNs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use moon_aof::reader::Bounds;
use moon_aof::{AofError, ReplayReport};
use moon_manifest::{BaseInfo, PerShard};

/// The files of one shard, as a manifest names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFiles {
    pub base: PathBuf,
    pub incr: PathBuf,
    /// The manifest's `max_lsn`: the base's records run up to it.
    pub max_lsn: u64,
    /// What the base must be, when the manifest recorded it.
    pub base_info: Option<BaseInfo>,
}

impl ShardFiles {
    pub fn of(data_dir: &Path, m: &PerShard, shard: usize) -> ShardFiles {
        ShardFiles {
            base: m.base_path(data_dir, shard),
            incr: m.incr_path(data_dir, shard),
            max_lsn: m.max_lsn.get(shard).copied().unwrap_or(0),
            base_info: m.bases.get(shard).copied().flatten(),
        }
    }

    /// The LSN the incr's records follow: the base's last, when there is a base; 0 for an
    /// incr that holds the whole history (a fresh layout, or one migrated in place from v1,
    /// whose `max_lsn` counts the records carried into the incr).
    pub fn incr_after(&self) -> u64 {
        if self.base_info.is_some() || self.base.exists() {
            self.max_lsn
        } else {
            0
        }
    }
}

/// Why a shard's files cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The base is not what the manifest names (exit code 2: data lost outside Moon).
    #[error("AOF base {} named by the manifest {what}; refusing to start: the data it held would be lost. See docs/runbooks/missing-aof-file.md", .base.display())]
    Base { base: PathBuf, what: String },
    /// A file cannot be read, or is corrupt.
    #[error(transparent)]
    Aof(#[from] AofError),
}

/// What replaying one file did.
#[derive(Clone, Debug)]
pub struct FileReplay {
    pub path: PathBuf,
    pub report: ReplayReport,
    /// Transaction parts skipped: their transaction lacks a part on another shard.
    pub skipped: u64,
}

/// Checks what can be told before reading anything: the base the manifest names is there,
/// at its recorded length.
pub fn check_files(files: &ShardFiles) -> Result<(), RecoveryError> {
    let refuse = |what: String| {
        Err(RecoveryError::Base {
            base: files.base.clone(),
            what,
        })
    };
    let len = std::fs::metadata(&files.base).ok().map(|m| m.len());
    match (files.base_info, len) {
        (Some(info), Some(len)) if len != info.bytes => refuse(format!(
            "is {len} bytes, but the manifest recorded {} (a partial or foreign file)",
            info.bytes
        )),
        (Some(info), None) if info.bytes > 0 => refuse("is missing".into()),
        (Some(_), _) => Ok(()),
        (None, Some(_)) => Ok(()),
        (None, None) => {
            let incr_first = first_lsn(&files.incr);
            if files.max_lsn > 0 && incr_first.is_none_or(|first| first > files.max_lsn) {
                refuse("is missing".into())
            } else {
                Ok(())
            }
        }
    }
}

/// Replays the base, then the incr, into `store` (see [`crate::txn::replay_log`]): the
/// transaction parts of `complete` are applied, the incr ends before `stop_lsn` (recovery's
/// end for this shard, or the last LSN a failed log acknowledged, plus one). A torn or
/// stopped incr tail is cut off the file when `may_truncate`; a base is never changed.
pub fn replay_shard(
    store: &mut moon_store::Store,
    files: &ShardFiles,
    complete: &HashSet<String>,
    stop_lsn: Option<u64>,
    may_truncate: bool,
) -> Result<Vec<FileReplay>, RecoveryError> {
    check_files(files)?;
    let incr_after = files.incr_after();
    let base_bounds = Bounds {
        after_lsn: 0,
        stop_lsn,
    };
    let (report, skipped) =
        crate::txn::replay_log(store, &files.base, complete, base_bounds, false)?;
    check_base(files, &report)?;
    let mut out = vec![FileReplay {
        path: files.base.clone(),
        report,
        skipped,
    }];
    let incr_bounds = Bounds {
        after_lsn: incr_after,
        stop_lsn,
    };
    let (report, skipped) =
        crate::txn::replay_log(store, &files.incr, complete, incr_bounds, may_truncate)?;
    out.push(FileReplay {
        path: files.incr.clone(),
        report,
        skipped,
    });
    Ok(out)
}

/// Checks a shard's base exactly as [`replay_shard`] does, without applying it (for
/// `moon-cli check-aof`): there as recorded, every record valid, and the file the manifest
/// recorded (or, without a record, whole and reaching `max_lsn`). Changes nothing.
pub fn verify_base(files: &ShardFiles) -> Result<ReplayReport, RecoveryError> {
    check_files(files)?;
    let report = moon_aof::reader::replay_readonly(&files.base, Bounds::default(), |_, _| {})?;
    check_base(files, &report)?;
    Ok(report)
}

/// The base as replayed must be the one the manifest recorded; without a record, it must be
/// whole and reach `max_lsn`.
fn check_base(files: &ShardFiles, report: &ReplayReport) -> Result<(), RecoveryError> {
    let what = match files.base_info {
        Some(info) => {
            let whole = report.truncated.is_none() && report.stopped.is_none();
            let same = report.bytes == info.bytes && report.crc32 == info.crc32;
            if whole && same && report.last_lsn <= files.max_lsn {
                return Ok(());
            }
            format!(
                "does not match the manifest: {} bytes of valid records with CRC-32 {:08x} up to LSN {}, where the manifest recorded {} bytes with CRC-32 {:08x} up to LSN {}",
                report.bytes, report.crc32, report.last_lsn, info.bytes, info.crc32, files.max_lsn
            )
        }
        None => {
            let short = report.truncated.is_some()
                || (report.records > 0 && report.last_lsn < files.max_lsn);
            if !short {
                return Ok(());
            }
            format!(
                "ends at LSN {} (offset {}), before the manifest's max_lsn {}",
                report.last_lsn, report.bytes, files.max_lsn
            )
        }
    };
    Err(RecoveryError::Base {
        base: files.base.clone(),
        what,
    })
}

/// The LSN of a log file's first record, if it has one.
fn first_lsn(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut header = [0u8; 8];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    Some(u64::from_le_bytes(header)).filter(|&lsn| lsn > 0)
}
