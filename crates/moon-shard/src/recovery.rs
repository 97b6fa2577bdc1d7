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

use bytes::Bytes;
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
    /// The incr's first bytes whose records recovery's first pass checked ([`scan_log`]'s
    /// `checked`; see `moon_aof::reader::Bounds::checked`). 0: none.
    pub incr_checked: u64,
}

impl ShardFiles {
    pub fn of(data_dir: &Path, m: &PerShard, shard: usize) -> ShardFiles {
        ShardFiles {
            base: m.base_path(data_dir, shard),
            incr: m.incr_path(data_dir, shard),
            max_lsn: m.max_lsn.get(shard).copied().unwrap_or(0),
            base_info: m.bases.get(shard).copied().flatten(),
            incr_checked: 0,
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

/// Replays the base, then the incr, into `store` (see [`replay_log`]): the
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
    let mut out = vec![if crate::base::is_rdb(&files.base) {
        let started = std::time::Instant::now();
        check_rdb_base(files)?;
        let loaded =
            crate::base::load(store, &files.base).map_err(|what| base_error(files, what))?;
        FileReplay {
            path: files.base.clone(),
            report: rdb_report(files, loaded, started)?,
            skipped: 0,
        }
    } else {
        let base_bounds = Bounds {
            after_lsn: 0,
            stop_lsn,
            checked: 0,
        };
        let (report, skipped) = replay_log(store, &files.base, complete, base_bounds, false)?;
        check_base(files, &report)?;
        FileReplay {
            path: files.base.clone(),
            report,
            skipped,
        }
    }];
    let incr_bounds = Bounds {
        after_lsn: incr_after,
        stop_lsn,
        checked: files.incr_checked,
    };
    let (report, skipped) = replay_log(store, &files.incr, complete, incr_bounds, may_truncate)?;
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
    if crate::base::is_rdb(&files.base) {
        let started = std::time::Instant::now();
        check_rdb_base(files)?;
        let loaded = crate::base::verify(&files.base).map_err(|what| base_error(files, what))?;
        return rdb_report(files, loaded, started);
    }
    let report = moon_aof::reader::replay_readonly(&files.base, Bounds::default(), |_, _| {})?;
    check_base(files, &report)?;
    Ok(report)
}

/// A base that cannot be loaded: refused like one that is not the manifest's.
fn base_error(files: &ShardFiles, what: String) -> RecoveryError {
    RecoveryError::Base {
        base: files.base.clone(),
        what,
    }
}

/// An RDB base must be the file the manifest recorded: its length is checked before
/// ([`check_files`]), its CRC-32 here, before a byte is parsed. (A manifest that recorded
/// nothing — written by a version before bases were recorded, which never wrote RDB bases —
/// leaves the file's own CRC64 to tell.)
fn check_rdb_base(files: &ShardFiles) -> Result<(), RecoveryError> {
    let Some(info) = files.base_info else {
        return Ok(());
    };
    let crc = moon_aof::reader::crc32_prefix(&files.base, info.bytes)
        .map_err(|e| base_error(files, format!("cannot be read: {e}")))?;
    if crc != info.crc32 {
        return Err(base_error(
            files,
            format!(
                "does not match the manifest: its {} bytes have CRC-32 {crc:08x}, where the manifest recorded {:08x} (a partial or foreign file)",
                info.bytes, info.crc32
            ),
        ));
    }
    Ok(())
}

/// An RDB base as loaded, as the report of a replayed file: one "record" per key, standing
/// for the LSNs up to `max_lsn`.
fn rdb_report(
    files: &ShardFiles,
    loaded: crate::base::Loaded,
    started: std::time::Instant,
) -> Result<ReplayReport, RecoveryError> {
    Ok(ReplayReport {
        records: loaded.keys,
        bytes: loaded.bytes,
        last_lsn: files.max_lsn,
        elapsed_ms: started.elapsed().as_millis(),
        truncated: None,
        stopped: None,
    })
}

/// The base as replayed must be the one the manifest recorded; without a record, it must be
/// whole and reach `max_lsn`.
fn check_base(files: &ShardFiles, report: &ReplayReport) -> Result<(), RecoveryError> {
    let what = match files.base_info {
        Some(info) => {
            let whole = report.truncated.is_none() && report.stopped.is_none();
            // Read again only for a base in this older form (an incr's replay checks each
            // record's own checksum and nothing of the whole file).
            let crc =
                moon_aof::reader::crc32_prefix(&files.base, report.bytes).map_err(|source| {
                    AofError::Io {
                        file: files.base.clone(),
                        source,
                    }
                })?;
            let same = report.bytes == info.bytes && crc == info.crc32;
            if whole && same && report.last_lsn <= files.max_lsn {
                return Ok(());
            }
            format!(
                "does not match the manifest: {} bytes of valid records with CRC-32 {crc:08x} up to LSN {}, where the manifest recorded {} bytes with CRC-32 {:08x} up to LSN {}",
                report.bytes, report.last_lsn, info.bytes, info.crc32, files.max_lsn
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

/// The name of the header command of a cross-shard transaction part in the log.
pub const TXPART: &str = "MOON.TXPART";

/// The first bytes of a transaction part's payload: `MULTI` then `MOON.TXPART` (a part with
/// effects), or the `MOON.TXPART` header alone (a part that changed nothing on its shard: a
/// one-command record is never wrapped in MULTI/EXEC).
const TXPART_PREFIXES: [&[u8]; 2] = [
    b"*1\r\n$5\r\nMULTI\r\n*3\r\n$11\r\nMOON.TXPART\r\n",
    b"*3\r\n$11\r\nMOON.TXPART\r\n",
];

/// One cross-shard transaction part found in a log at recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub lsn: u64,
    pub id: String,
    /// The shards that logged a part of the same transaction.
    pub shards: Vec<usize>,
}

/// Recovery, first pass: the transaction parts in one log file, in log order. Reads only; a
/// damaged file yields what precedes the damage (replay reports the damage). A part is found
/// in the first record of its unit and counts only once the unit's last record is there: a
/// part whose unit a crash cut short is dropped by replay as a torn tail, so it must not
/// count here either.
pub fn transaction_parts(path: &std::path::Path) -> std::io::Result<Vec<Part>> {
    scan_log(path).map(|scan| scan.parts)
}

/// What recovery's first pass learns of one log file.
#[derive(Clone, Debug, Default)]
pub struct LogScan {
    /// Its transaction parts, in log order ([`transaction_parts`]).
    pub parts: Vec<Part>,
    /// The LSN of the last record that ends a whole unit (0 for none, or an RDB base).
    pub last_lsn: u64,
    /// Bytes from the start whose records' checksums this pass checked: up to the first
    /// record that is not valid (0 for an RDB base). Replay need not check them again.
    pub checked: u64,
}

/// Recovery's first pass over one log file: its transaction parts and its last whole unit.
pub fn scan_log(path: &std::path::Path) -> std::io::Result<LogScan> {
    if crate::base::is_rdb(path) {
        // A snapshot: it holds keys, never a transaction's part.
        return Ok(LogScan::default());
    }
    // Read through a mapping given back as the scan goes: bounded memory for any log size.
    let mapped = moon_aof::reader::MappedLog::open(path)?;
    let mut scan = LogScan::default();
    // Inside a unit spanning records: the part its first record held, if any.
    let mut open: Option<Option<Part>> = None;
    let walked = moon_aof::reader::scan::<()>(mapped.bytes(), |lsn, payload, offset| {
        mapped.release_before(offset);
        let continued = moon_aof::record::is_continued(payload);
        let part = match open.take() {
            Some(first) => first,
            None => part_in(lsn, payload),
        };
        if continued {
            open = Some(part);
        } else {
            scan.parts.extend(part);
            scan.last_lsn = lsn;
        }
        Ok(())
    });
    scan.checked = match walked {
        Ok(end) => end.valid_len,
        Err(Ok(corruption)) => corruption.offset,
        Err(Err(())) => 0,
    };
    Ok(scan)
}

/// The transaction part a record's payload heads, if it is one.
fn part_in(lsn: u64, payload: &[u8]) -> Option<Part> {
    if !TXPART_PREFIXES.iter().any(|p| payload.starts_with(p)) {
        return None;
    }
    let header = moon_aof::decode_payload(payload)?.into_iter().next()?;
    let (id, shards) = (header.get(1)?, header.get(2)?);
    Some(Part {
        lsn,
        id: String::from_utf8_lossy(id).into_owned(),
        shards: String::from_utf8_lossy(shards)
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect(),
    })
}

/// What recovery replays of every shard's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Transactions whose every part lies in the replayed prefix of its shard: applied.
    pub complete: std::collections::HashSet<String>,
    /// Per shard: the LSN at which its log ends — the first part of a transaction that cannot
    /// be applied whole — or `None` to replay all of it.
    pub stop_at: Vec<Option<u64>>,
}

/// Recovery: from every shard's transaction parts (in log order), which transactions to
/// apply and where each shard's log must end.
///
/// A transaction is applied only if every shard it names has its part. One that is missing a
/// part was cut short — by a crash before its commit finished, or by a power cut that took
/// the part from one shard's unsynced tail while another shard's part had reached its disk
/// (`everysec`/`no` fsync each log on its own schedule). In the second case records after
/// the surviving part may depend on it (an INCRBY is logged as the SET of its result, read
/// from a state that included the transaction), so a shard's log ends **at** its first part
/// of a transaction that cannot be applied: what follows is dropped with it, as a torn tail
/// is. Ending one shard's log early can make another transaction incomplete in turn, so the
/// ends are moved back until nothing changes. The result is a consistent cut: every shard
/// replays a prefix of its log, and every transaction is in it on all its shards or on none.
/// Whatever ends up dropped after an incomplete part was never acknowledged: the part is held
/// in its writer until every part of its transaction is safe, and no reply for a record after
/// it leaves before that (`crate::txn`); a commit that fails midway stops the process with
/// the holds in place (`moon-server`'s `txn::run`).
pub fn recovery_plan(per_shard: &[Vec<Part>]) -> RecoveryPlan {
    recovery_plan_from(per_shard, vec![None; per_shard.len()])
}

/// [`recovery_plan`], with some logs ending earlier from the start (`stop_at`: a replica's
/// logs cut where its place in its primary's stream was recorded); the ends only move back.
pub fn recovery_plan_from(per_shard: &[Vec<Part>], mut stop_at: Vec<Option<u64>>) -> RecoveryPlan {
    use std::collections::{HashMap, HashSet};
    let kept = |stop: Option<u64>, p: &Part| stop.is_none_or(|s| p.lsn < s);
    loop {
        let mut have: HashMap<&str, HashSet<usize>> = HashMap::new();
        for (shard, parts) in per_shard.iter().enumerate() {
            for p in parts.iter().filter(|p| kept(stop_at[shard], p)) {
                have.entry(p.id.as_str()).or_default().insert(shard);
            }
        }
        let whole = |p: &Part| {
            have.get(p.id.as_str())
                .is_some_and(|got| p.shards.iter().all(|s| got.contains(s)))
        };
        let mut changed = false;
        for (shard, parts) in per_shard.iter().enumerate() {
            let first_broken = parts
                .iter()
                .take_while(|p| kept(stop_at[shard], p))
                .find(|p| !whole(p));
            if let Some(p) = first_broken {
                stop_at[shard] = Some(p.lsn);
                changed = true;
            }
        }
        if !changed {
            let complete = per_shard
                .iter()
                .flatten()
                .filter(|p| whole(p))
                .map(|p| p.id.clone())
                .collect();
            return RecoveryPlan { complete, stop_at };
        }
    }
}

/// Recovery, second pass: the commands of one record that replay applies — `None` for a
/// transaction part whose transaction is not in `complete` (skip it) — with the
/// `MOON.TXPART` header removed.
pub fn applicable(
    group: Vec<Vec<Bytes>>,
    complete: &std::collections::HashSet<String>,
) -> Option<Vec<Vec<Bytes>>> {
    let is_part = group
        .first()
        .is_some_and(|first| first[0].eq_ignore_ascii_case(TXPART.as_bytes()));
    if !is_part {
        return Some(group);
    }
    let whole = group[0]
        .get(1)
        .is_some_and(|id| std::str::from_utf8(id).is_ok_and(|id| complete.contains(id)));
    whole.then(|| group.into_iter().skip(1).collect())
}

/// How many records replay reads ahead of the one it runs (see [`replay_log`]).
const PREFETCH_AHEAD: usize = 8;

/// Replays the log file at `path` into `store` within `bounds`: its records follow
/// `after_lsn`, and it ends at `stop_lsn` (see [`recovery_plan`])
/// — what the shard's replay does at startup, as a
/// function of the store alone so that the model-based checker runs the very same code.
///
/// Records are applied with expiry off ([`moon_store::NO_EXPIRY_CHECK`]) and without logging
/// anything again: every expiration that happened while serving is in the log as a deletion
/// at the place it happened, so the store goes through exactly the states its clients saw.
/// The string length limit is lifted while replaying: what was accepted once must replay even
/// if `proto-max-bulk-len` is lower now. Returns the report and the number of transaction
/// parts skipped (see [`applicable`]).
pub fn replay_log(
    store: &mut moon_store::Store,
    path: &std::path::Path,
    complete: &std::collections::HashSet<String>,
    bounds: moon_aof::reader::Bounds,
    may_truncate: bool,
) -> Result<(moon_aof::ReplayReport, u64), moon_aof::AofError> {
    store.set_record_writes(false);
    let limit = store.max_string_len();
    store.set_max_string_len(usize::MAX);
    let mut skipped = 0;
    // Records run [`PREFETCH_AHEAD`] behind the reader: each one's key is asked for from
    // memory when it is read and found in cache when it runs (a key's slot is a cache miss,
    // most of a SET's cost in a large keyspace). The order of execution does not change.
    let mut ahead: std::collections::VecDeque<Vec<Vec<Bytes>>> =
        std::collections::VecDeque::with_capacity(PREFETCH_AHEAD + 1);
    let run = |store: &mut moon_store::Store, cmds: Vec<Vec<Bytes>>| {
        for cmd in cmds {
            store.execute(&cmd, moon_store::NO_EXPIRY_CHECK);
        }
    };
    let apply = |_lsn, group| {
        match applicable(group, complete) {
            Some(cmds) => {
                for cmd in &cmds {
                    store.prefetch(cmd);
                }
                ahead.push_back(cmds);
                if ahead.len() > PREFETCH_AHEAD {
                    if let Some(cmds) = ahead.pop_front() {
                        run(store, cmds);
                    }
                }
            }
            None => skipped += 1,
        }
        crate::load_delay::wait();
    };
    let report = if may_truncate {
        moon_aof::replay_file_until(path, bounds, apply)
    } else {
        moon_aof::reader::replay_readonly(path, bounds, apply)
    };
    for cmds in ahead {
        run(store, cmds);
    }
    store.set_max_string_len(limit);
    Ok((report?, skipped))
}
