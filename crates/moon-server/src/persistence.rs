//! Opening the data directory: lock, manifest, layout, and each shard's replay.
//!
//! On the main thread, before any shard starts ([`open`]): the directory is locked (two
//! servers must never share it), its manifest is read and checked against the configured
//! shard count, a fresh directory gets the per-shard layout, and a legacy top-level one is
//! migrated (one shard) or refused (several). Then on every shard's own executor, all at once
//! ([`start_shard`]): the shard replays its base and incr files into its keyspace and opens its
//! writer with LSNs resuming above the highest seen. Only when every shard has done so does the
//! port open.

use std::fs::File;
use std::path::{Path, PathBuf};

use moon_aof::{AofWriter, FaultPlan, FsyncPolicy};
use moon_manifest::lock::LockError;
use moon_manifest::{Manifest, ManifestError, Migrated, PerShard};
use moon_shard::recovery::RecoveryPlan;
use moon_shard::recovery::{FileReplay, RecoveryError, ShardFiles};
use moon_shard::Shard;
use nix::fcntl::Flock;

use crate::config::Config;
use crate::shared::ServerError;

/// An opened, locked data directory. The lock lasts as long as this value.
pub struct DataDir {
    pub dir: PathBuf,
    pub manifest: PerShard,
    pub fault: FaultPlan,
    /// Which transactions recovery applies and where each shard's log ends (first pass).
    pub recovery: RecoveryPlan,
    /// Per shard, the bytes of its incr whose records the first pass checked: its replay
    /// does not compute their checksums again (`ShardFiles::incr_checked`).
    pub incr_checked: Vec<u64>,
    /// What a previous run left of its place in a replication stream, to continue from
    /// (`repl_position.rs`); the logs were ended to match it.
    pub replication: Option<crate::repl_position::Saved>,
    _lock: Flock<File>,
}

fn fatal(code: u8, message: String) -> ServerError {
    ServerError { code, message }
}

fn from_manifest(e: ManifestError) -> ServerError {
    let code = match e {
        ManifestError::Io { .. } => 1,
        // Corrupt manifest, shard-count change, legacy multi-shard: SPEC §4, exit 2.
        _ => 2,
    };
    fatal(code, e.to_string())
}

/// Takes the data directory's lock (`moon_manifest::lock`): a second server on the same
/// directory stops here.
fn lock(dir: &Path) -> Result<Flock<File>, ServerError> {
    match moon_manifest::lock::lock_data_dir(dir) {
        Ok(l) => Ok(l),
        Err(LockError::Held { path, holder }) => Err(fatal(
            1,
            format!(
                "data directory {} is in use by another moon-server (pid {holder}, lock file {}); refusing to start: two servers must never share a data directory",
                dir.display(),
                path.display()
            ),
        )),
        Err(e) => Err(fatal(1, e.to_string())),
    }
}

/// Opens the data directory for `config.shards` shards (see the module docs).
pub fn open(config: &Config) -> Result<DataDir, ServerError> {
    let dir = config.dir.clone();
    moon_manifest::fsio::create_dir_all_durable(&dir).map_err(|e| {
        fatal(
            1,
            format!("cannot create data directory {}: {e}", dir.display()),
        )
    })?;
    let lock = lock(&dir)?;
    let manifest = match moon_manifest::load(&dir).map_err(from_manifest)? {
        None => create_layout(&dir, config.shards)?,
        Some(Manifest::V1(_)) if config.shards == 1 => {
            match moon_manifest::migrate_v1_to_v2(&dir).map_err(from_manifest)? {
                Migrated::Done { records, dropped_tail_bytes } => tracing::info!(
                    "migrated the legacy top-level AOF in {} to the per-shard layout: {records} records{}",
                    moon_manifest::aof_dir(&dir).display(),
                    if dropped_tail_bytes > 0 { format!(", {dropped_tail_bytes} bytes of an incomplete tail dropped") } else { String::new() }
                ),
                other => tracing::info!("migration: {other:?}"),
            }
            match moon_manifest::load(&dir).map_err(from_manifest)? {
                Some(Manifest::V2(m)) => m,
                _ => {
                    return Err(fatal(
                        1,
                        format!(
                            "migration of {} did not produce a per-shard manifest",
                            dir.display()
                        ),
                    ))
                }
            }
        }
        Some(Manifest::V1(_)) => {
            return Err(from_manifest(ManifestError::LegacyMultiShard {
                aof_dir: moon_manifest::aof_dir(&dir),
                data_dir: dir.clone(),
                shards: config.shards,
            }))
        }
        Some(Manifest::V2(m)) => {
            m.verify_shard_count(config.shards).map_err(from_manifest)?;
            // Files of other seqs are removed only once these replayed whole
            // (`remove_unreferenced`): until then they may be all that is left. The base each
            // shard's manifest line names must be there as recorded (the rest of the checks
            // run with the replay: `moon_shard::recovery`).
            for i in 0..m.shards() {
                moon_shard::recovery::check_files(&ShardFiles::of(&dir, &m, i))
                    .map_err(from_recovery)?;
            }
            m
        }
    };
    for i in 0..manifest.shards() {
        let d = PerShard::shard_dir(&dir, i);
        moon_manifest::fsio::create_dir_all_durable(&d)
            .map_err(|e| fatal(1, format!("cannot create {}: {e}", d.display())))?;
    }
    let fault = std::env::var("MOON_AOF_FAULT")
        .map(|s| FaultPlan::parse(&s))
        .unwrap_or_default();
    if fault != FaultPlan::default() {
        tracing::warn!(
            "MOON_AOF_FAULT is set ({fault:?}): AOF failures will be injected (tests only)"
        );
    }
    let scans = scan_logs(&dir, &manifest)?;
    let parts: Vec<_> = scans.iter().map(|s| s.parts.clone()).collect();
    let mut recovery = moon_shard::recovery::recovery_plan(&parts);
    use crate::repl_position::Saved;
    let follows = config.replicaof.is_some();
    let mut replication = crate::repl_position::read(&dir);
    match &replication {
        Some(Saved::Replica(pos)) if follows && config.replica_read_only => {
            match replica_cut(&dir, &manifest, &scans, pos) {
                Ok(Some(plan)) => recovery = plan,
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!("the replication position in {} is not used: {why}; a full resynchronisation follows", crate::repl_position::FILE);
                    replication = None;
                }
            }
        }
        Some(Saved::Primary(_)) if !follows => {}
        // Written in another role.
        _ => replication = None,
    }
    let keep = matches!(&replication, Some(Saved::Replica(p)) if p.lsns.is_some());
    if !keep {
        // What is left would be stale once anything is applied: a primary's offset and an
        // older version's clean-shutdown place are taken from `replication` as they are,
        // anything else is unusable. A later start must not find it.
        crate::repl_position::remove(&dir).map_err(|e| {
            fatal(
                1,
                format!(
                    "cannot remove {}: {e}",
                    dir.join(crate::repl_position::FILE).display()
                ),
            )
        })?;
    }
    for (i, stop) in recovery.stop_at.iter().enumerate() {
        if let Some(lsn) = stop {
            tracing::warn!(
                shard = i,
                "shard {i}'s log ends at LSN {lsn}: it and the records after it will be dropped ({})",
                if replication.is_some() {
                    "what a replica applied after its last recorded place in the primary's stream, never acknowledged to the primary, which sends it again"
                } else {
                    "a cross-shard transaction there lost its part on another shard: power loss under appendfsync everysec/no"
                }
            );
        }
    }
    Ok(DataDir {
        dir,
        manifest,
        fault,
        incr_checked: scans.iter().map(|s| s.checked).collect(),
        recovery,
        replication,
        _lock: lock,
    })
}

/// Where each shard's log must end for a replica's saved position `pos` to hold exactly:
/// `Ok(Some(plan))` with the logs ended at the LSNs it recorded, `Ok(None)` when nothing is
/// to be cut (an older version's clean-shutdown form), `Err` when it cannot hold
/// (`repl_position.rs` lists the cases).
fn replica_cut(
    dir: &Path,
    m: &PerShard,
    scans: &[moon_shard::recovery::LogScan],
    pos: &crate::repl_position::Position,
) -> Result<Option<RecoveryPlan>, String> {
    let Some(lsns) = &pos.lsns else {
        return Ok(None);
    };
    if lsns.len() != m.shards() {
        return Err(format!(
            "it was recorded for {} shards, this server has {}",
            lsns.len(),
            m.shards()
        ));
    }
    let mut stops = vec![None; m.shards()];
    for (i, (&at, scan)) in lsns.iter().zip(scans).enumerate() {
        let base_until = ShardFiles::of(dir, m, i).incr_after();
        if base_until > at {
            return Err(format!(
                "shard {i}'s base holds records up to LSN {base_until}, past the position's {at}"
            ));
        }
        let last = scan.last_lsn.max(base_until);
        if !pos.same_boot && last != at {
            // After a reboot a log may have lost its unsynced tail, and the saved place may
            // be older than what was fsynced (it is not fsynced itself): only a place every
            // log ends at exactly still holds, and nothing is cut.
            return Err(format!(
                "the machine restarted since it was saved, and shard {i}'s log ends at LSN {last}, not at its {at}"
            ));
        }
        if last > at {
            stops[i] = Some(at + 1);
        }
        // (`last < at` during this boot: LSNs a rewrite reserved count as written without
        // records; nothing handed to the kernel is lost without a reboot.)
    }
    let parts: Vec<_> = scans.iter().map(|s| s.parts.clone()).collect();
    let plan = moon_shard::recovery::recovery_plan_from(&parts, stops.clone());
    for (i, (end, wanted)) in plan.stop_at.iter().zip(&stops).enumerate() {
        if end != wanted {
            return Err(format!(
                "shard {i}'s log must end earlier, at LSN {}, for its cross-shard transactions",
                end.unwrap_or(0)
            ));
        }
    }
    Ok(Some(plan))
}

/// Recovery's first pass, every shard's files at once: which cross-shard transactions have all
/// their parts logged (only those are applied by the replay, see `moon_shard::recovery`), and
/// each shard's last whole unit.
fn scan_logs(dir: &Path, m: &PerShard) -> Result<Vec<moon_shard::recovery::LogScan>, ServerError> {
    type Scan = moon_shard::recovery::LogScan;
    let per_shard: Vec<std::io::Result<Scan>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..m.shards())
            .map(|i| {
                let files = [m.base_path(dir, i), m.incr_path(dir, i)];
                scope.spawn(move || -> std::io::Result<Scan> {
                    let mut all = Scan::default();
                    for f in &files {
                        let scan = moon_shard::recovery::scan_log(f)?;
                        all.parts.extend(scan.parts);
                        all.last_lsn = all.last_lsn.max(scan.last_lsn);
                        // The incr's, the last file: what its replay need not check again.
                        all.checked = scan.checked;
                    }
                    Ok(all)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("scan thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(per_shard.len());
    for r in per_shard {
        all.push(
            r.map_err(|e| fatal(1, format!("cannot read the AOF in {}: {e}", dir.display())))?,
        );
    }
    Ok(all)
}

/// Whether `appendonlydir/` (or a directory in it) holds a non-empty file: log data without a
/// manifest. Empty shard directories are what a crash during [`create_layout`] leaves.
fn holds_data(aof_dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(aof_dir).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = holds_data(&p) {
                return Some(found);
            }
        } else if e.metadata().map_or(true, |m| m.len() > 0) {
            return Some(p);
        }
    }
    None
}

/// A fresh directory: shard directories first, then the manifest, which makes the layout real.
/// Refused if log files are there without a manifest: replaying them under a guessed layout
/// could serve the wrong data, and ignoring them would hide it.
fn create_layout(dir: &Path, shards: usize) -> Result<PerShard, ServerError> {
    let aof = moon_manifest::aof_dir(dir);
    if let Some(file) = holds_data(&aof) {
        return Err(fatal(
            2,
            format!(
                "{} holds AOF data ({}) but no manifest {}; refusing to start: inspect manually before deleting anything. See docs/runbooks/aof-corruption.md",
                aof.display(),
                file.display(),
                moon_manifest::MANIFEST_NAME
            ),
        ));
    }
    let manifest = PerShard::fresh(shards);
    for i in 0..shards {
        let d = PerShard::shard_dir(dir, i);
        moon_manifest::fsio::create_dir_all_durable(&d)
            .map_err(|e| fatal(1, format!("cannot create {}: {e}", d.display())))?;
    }
    let path = moon_manifest::manifest_path(dir);
    moon_manifest::fsio::write_atomic(&path, manifest.render().as_bytes())
        .map_err(|e| fatal(1, format!("cannot write manifest {}: {e}", path.display())))?;
    tracing::info!(
        "created a per-shard AOF layout with {shards} shards in {}",
        moon_manifest::aof_dir(dir).display()
    );
    Ok(manifest)
}

/// A base that is not what the manifest names refuses startup with exit code 2 (data was lost
/// outside Moon); a file that cannot be read or is corrupt, with 1.
fn from_recovery(e: RecoveryError) -> ServerError {
    let code = match e {
        RecoveryError::Base { .. } => 2,
        RecoveryError::Aof(_) => 1,
    };
    fatal(code, e.to_string())
}

/// After every shard replayed its files whole: removes what no manifest names any more —
/// files of other seqs left by an interrupted rewrite or migration, temp files of an
/// interrupted v1 → v2 migration.
pub fn remove_unreferenced(data: &DataDir) {
    moon_manifest::remove_leftovers(&data.dir);
    for f in data.manifest.remove_other_seqs(&data.dir) {
        tracing::info!(file = %f.display(), "removed a file of another seq (left by an interrupted rewrite or migration)");
    }
}

/// On shard `shard`'s executor: replay its base and incr, then attach its writer.
pub async fn start_shard(
    shard: &Shard,
    data: &DataDir,
    policy: FsyncPolicy,
) -> Result<(), ServerError> {
    let i = shard.id();
    let m = &data.manifest;
    let mut files = ShardFiles::of(&data.dir, m, i);
    files.incr_checked = data.incr_checked.get(i).copied().unwrap_or(0);
    let mut last_lsn = files.max_lsn;
    let (mut records, mut bytes, mut ms) = (0u64, 0u64, 0u128);
    for FileReplay {
        path,
        report,
        skipped,
    } in shard
        .replay(&files, &data.recovery)
        .map_err(from_recovery)?
    {
        if skipped > 0 {
            tracing::warn!(
                shard = i,
                "AOF {}: skipped {skipped} part(s) of cross-shard transactions whose other parts never reached their logs (never acknowledged)",
                path.display()
            );
        }
        if let Some((offset, dropped)) = report.stopped {
            tracing::warn!(
                shard = i,
                "AOF {}: dropped {dropped} bytes from offset {offset} (where recovery ended this log: see the warning above) and truncated the file",
                path.display()
            );
        }
        if let Some((offset, dropped)) = report.truncated {
            tracing::warn!(
                shard = i,
                "AOF {} ended with a torn or zero-filled tail at offset {offset}: dropped {dropped} bytes (never acknowledged) and truncated the file",
                path.display()
            );
        }
        records += report.records;
        bytes += report.bytes;
        ms += report.elapsed_ms;
        last_lsn = last_lsn.max(report.last_lsn);
    }
    tracing::info!(
        shard = i,
        "shard {i} replayed {records} records, {bytes} bytes in {ms} ms (last LSN {last_lsn})"
    );
    // LSNs are never handed out twice: not those a replica's saved place names either (a cut
    // or a rewrite's reservation can leave them without records), or a record after the place
    // could take one at or below it, and a later cut would keep it.
    if let Some(crate::repl_position::Saved::Replica(p)) = &data.replication {
        if let Some(saved) = p.lsns.as_ref().and_then(|l| l.get(i)) {
            last_lsn = last_lsn.max(*saved);
        }
    }
    let incr = files.incr.clone();
    // From now on the incr grows, and may have been cut below what the first pass checked: a
    // later replay of it (`back_to_the_log`) checks every record.
    files.incr_checked = 0;
    shard.set_log_files(files);
    let writer = AofWriter::open(&incr, last_lsn, policy, data.fault)
        .await
        .map_err(|e| fatal(1, format!("cannot open AOF {}: {e}", incr.display())))?;
    shard.attach_aof(writer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl_position::Position;
    use moon_shard::recovery::{LogScan, Part};

    fn position(lsns: &[u64], same_boot: bool) -> Position {
        Position {
            replid: "0".repeat(40),
            offset: 1000,
            db: 0,
            lsns: Some(lsns.to_vec()),
            same_boot,
        }
    }

    fn scan(last_lsn: u64, parts: Vec<Part>) -> LogScan {
        LogScan {
            parts,
            last_lsn,
            checked: 0,
        }
    }

    fn part(lsn: u64, id: &str) -> Part {
        Part {
            lsn,
            id: id.into(),
            shards: vec![0, 1],
        }
    }

    #[test]
    fn a_replica_cut_ends_each_log_after_its_saved_lsn_and_only_during_the_same_boot() {
        let dir = tempfile::tempdir().unwrap();
        let m = PerShard::fresh(2);
        let scans = [scan(12, vec![]), scan(7, vec![])];
        // Shard 0 went on past the place (a batch in flight), shard 1 did not.
        let plan = replica_cut(dir.path(), &m, &scans, &position(&[10, 7], true))
            .unwrap()
            .unwrap();
        assert_eq!(plan.stop_at, vec![Some(11), None]);
        // After a reboot only an exact place holds: nothing is cut.
        assert!(replica_cut(dir.path(), &m, &scans, &position(&[10, 7], false)).is_err());
        let exact = replica_cut(dir.path(), &m, &scans, &position(&[12, 7], false))
            .unwrap()
            .unwrap();
        assert_eq!(exact.stop_at, vec![None, None]);
        // A log short of its place: reserved LSNs during this boot; a lost tail after a reboot.
        assert!(replica_cut(dir.path(), &m, &scans, &position(&[12, 9], true)).is_ok());
        assert!(replica_cut(dir.path(), &m, &scans, &position(&[12, 9], false)).is_err());
        // Another shard count.
        assert!(replica_cut(dir.path(), &m, &scans, &position(&[12, 7, 1], true)).is_err());
    }

    #[test]
    fn a_replica_cut_that_would_split_a_cross_shard_transaction_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = PerShard::fresh(2);
        // Transaction t has its part at LSN 5 on shard 0 and LSN 9 on shard 1; a place that
        // keeps shard 0's part but not shard 1's cannot be exact.
        let scans = [scan(6, vec![part(5, "t")]), scan(9, vec![part(9, "t")])];
        assert!(replica_cut(dir.path(), &m, &scans, &position(&[6, 8], true)).is_err());
        let whole = replica_cut(dir.path(), &m, &scans, &position(&[6, 9], true))
            .unwrap()
            .unwrap();
        assert!(whole.complete.contains("t"));
        // Cut before both parts: it is simply not there.
        let before = replica_cut(dir.path(), &m, &scans, &position(&[4, 8], true))
            .unwrap()
            .unwrap();
        assert_eq!(before.stop_at, vec![Some(5), Some(9)]);
        assert!(!before.complete.contains("t"));
    }
}
