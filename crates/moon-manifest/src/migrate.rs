//! v1 → v2 migration in place (one shard).
//!
//! Steps, and why a crash or failure at each instant is safe:
//! 1. **Build** `appendonlydir/shard-0.tmp/moon.aof.<seq>.incr.aof`: every command of the v1
//!    base (when it is AOF text) and incr, in order, as framed records with LSNs 1, 2, ...;
//!    fsync the file and the directory. The v1 manifest still rules: a crash leaves a stray
//!    `shard-0.tmp`, which the next attempt deletes and rebuilds.
//! 2. **Rename** `shard-0.tmp` → `shard-0`, fsync `appendonlydir/`. Still v1: a stray `shard-0`
//!    under a v1 manifest can only be an unfinished migration's, and is rebuilt likewise.
//! 3. **Write the v2 manifest** atomically (temp, fsync, rename, fsync dir). This is the commit
//!    point: before the rename the directory is v1 with all its files; after it, v2 complete.
//! 4. **Remove the old files** (the v1 base and incr). A crash or failure here leaves only
//!    unreferenced files, removed by [`remove_leftovers`] on the next start.
//!
//! A failure in steps 1–3 undoes what the earlier steps made, so the directory is exactly as
//! before. Migration never deletes a v1 file before the v2 manifest is durable.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use moon_proto::{Limits, RequestParser};

use crate::fsio::{commit_atomic, fsync_dir, CommitError};
use crate::manifest::{
    aof_dir, io_err, load, manifest_path, Manifest, ManifestError, PerShard, TopLevel,
};

/// What [`migrate_v1_to_v2`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Migrated {
    /// The v1 layout became a one-shard v2 layout holding `records` records.
    Done {
        records: u64,
        dropped_tail_bytes: u64,
    },
    /// Already v2 (any leftovers of an earlier migration were removed).
    AlreadyV2,
    /// No manifest at all: nothing to migrate.
    Fresh,
}

/// The steps a test can fail or stop before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Build,
    /// Inside step 1, after the first records were written (a crash mid-build).
    BuildMidway,
    RenameShard,
    WriteManifest,
    /// After the manifest's rename: its directory fsync (a failure there cannot be undone).
    CommitFsync,
    RemoveOld,
}

/// What a test hook does at a step. Only tests fail or crash a step.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inject {
    Proceed,
    /// The step fails with an I/O error: migration must roll back.
    Fail,
    /// The process dies before the step: nothing after it runs, nothing is rolled back.
    Crash,
}

/// Marker error for a simulated crash.
const CRASH: &str = "simulated crash";

/// Migrates the v1 directory in `data_dir` to a one-shard v2 layout. Idempotent: on a v2
/// directory it only removes leftovers; on a fresh one it does nothing.
pub fn migrate_v1_to_v2(data_dir: &Path) -> Result<Migrated, ManifestError> {
    migrate_with(data_dir, &mut |_| Inject::Proceed)
}

fn check(hook: &mut dyn FnMut(Step) -> Inject, step: Step) -> std::io::Result<()> {
    match hook(step) {
        Inject::Proceed => Ok(()),
        Inject::Fail => Err(std::io::Error::from_raw_os_error(5)),
        Inject::Crash => Err(std::io::Error::other(CRASH)),
    }
}

fn is_crash(e: &ManifestError) -> bool {
    matches!(e, ManifestError::Io { source, .. } if source.to_string() == CRASH)
}

pub(crate) fn migrate_with(
    data_dir: &Path,
    hook: &mut dyn FnMut(Step) -> Inject,
) -> Result<Migrated, ManifestError> {
    let v1 = match load(data_dir)? {
        None => return Ok(Migrated::Fresh),
        Some(Manifest::V2(_)) => {
            remove_leftovers(data_dir);
            return Ok(Migrated::AlreadyV2);
        }
        Some(Manifest::V1(v1)) => v1,
    };
    let aof = aof_dir(data_dir);
    let tmp_dir = aof.join("shard-0.tmp");
    let final_dir = PerShard::shard_dir(data_dir, 0);
    // Under a v1 manifest these can only be an interrupted migration's output.
    for stale in [&tmp_dir, &final_dir] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(io_err(
                "cannot remove an unfinished migration's directory",
                stale,
            ))?;
        }
    }
    let v2 = PerShard::new(v1.seq, vec![0]);
    let incr_name = v2
        .incr_path(data_dir, 0)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();

    // Step 1.
    let built = check(hook, Step::Build)
        .map_err(io_err("cannot build", &tmp_dir))
        .and_then(|()| build_shard(&aof, &v1, &tmp_dir, &tmp_dir.join(&incr_name), hook));
    let (records, dropped) = match built {
        Ok(r) => r,
        Err(e) => return Err(rollback(e, &[&tmp_dir], &aof)),
    };
    // Step 2.
    let renamed = check(hook, Step::RenameShard)
        .and_then(|()| std::fs::rename(&tmp_dir, &final_dir))
        .and_then(|()| fsync_dir(&aof))
        .map_err(io_err("cannot rename", &tmp_dir));
    if let Err(e) = renamed {
        return Err(rollback(e, &[&tmp_dir, &final_dir], &aof));
    }
    // Step 3: the commit point.
    let v2 = PerShard::new(v2.seq, vec![records]);
    let manifest = manifest_path(data_dir);
    let written = check(hook, Step::WriteManifest)
        .map_err(CommitError::BeforeRename)
        .and_then(|()| commit_atomic(&manifest, v2.render().as_bytes()))
        .and_then(|()| check(hook, Step::CommitFsync).map_err(CommitError::AfterRename));
    match written {
        Ok(()) => {}
        Err(CommitError::BeforeRename(e)) => {
            return Err(rollback(
                io_err("cannot write manifest", &manifest)(e),
                &[&final_dir],
                &aof,
            ))
        }
        // Once the rename is issued there is no rollback: the manifest on disk may already
        // name the new layout. Both layouts stay; the next start reads whichever it finds.
        Err(CommitError::AfterRename(e)) => {
            return Err(io_err("cannot commit manifest", &manifest)(e))
        }
    }
    tracing::info!(dir = %aof.display(), records, "migrated the legacy top-level AOF to the per-shard layout (1 shard)");
    // Step 4: only unreferenced files remain to go.
    match check(hook, Step::RemoveOld) {
        Ok(()) => remove_leftovers(data_dir),
        Err(e) if e.to_string() == CRASH => return Err(io_err("migration stopped", &aof)(e)),
        Err(e) => {
            tracing::warn!(dir = %aof.display(), "could not remove the old top-level AOF files ({e}); they are removed on the next start")
        }
    }
    Ok(Migrated::Done {
        records,
        dropped_tail_bytes: dropped,
    })
}

/// Undoes steps 1–2 after a failure (not after a simulated crash: a dead process undoes nothing).
fn rollback(e: ManifestError, made: &[&Path], aof: &Path) -> ManifestError {
    if is_crash(&e) {
        return e;
    }
    for dir in made {
        if dir.exists() {
            if let Err(re) = std::fs::remove_dir_all(dir) {
                tracing::error!(dir = %dir.display(), "rollback could not remove {re}");
            }
        }
    }
    let _ = fsync_dir(aof);
    e
}

/// Step 1: converts the v1 base (AOF text) and incr into framed records in `out`.
/// Returns (records, bytes of an incomplete last command that were dropped).
fn build_shard(
    aof: &Path,
    v1: &TopLevel,
    tmp_dir: &Path,
    out: &Path,
    hook: &mut dyn FnMut(Step) -> Inject,
) -> Result<(u64, u64), ManifestError> {
    crate::fsio::create_dir_all_durable(tmp_dir).map_err(io_err("cannot create", tmp_dir))?;
    let file = File::create(out).map_err(io_err("cannot create", out))?;
    let mut w = Conversion {
        out: BufWriter::with_capacity(1 << 20, file),
        lsn: 0,
        buf: Vec::with_capacity(1 << 16),
        multi: None,
        multi_from: 0,
    };
    let mut dropped = 0;
    let sources = v1.base.iter().chain(std::iter::once(&v1.incr));
    for name in sources {
        let path = aof.join(name);
        dropped += convert_plain(&path, &mut w, out)?;
        check(hook, Step::BuildMidway).map_err(io_err("cannot build", out))?;
    }
    let mut file = w
        .out
        .into_inner()
        .map_err(|e| io_err("cannot write", out)(e.into_error()))?;
    file.flush().map_err(io_err("cannot write", out))?;
    file.sync_all().map_err(io_err("cannot fsync", out))?;
    fsync_dir(tmp_dir).map_err(io_err("cannot fsync", tmp_dir))?;
    Ok((w.lsn, dropped))
}

struct Conversion {
    out: BufWriter<File>,
    lsn: u64,
    buf: Vec<u8>,
    /// Commands of an open MULTI: written only when its EXEC is seen.
    multi: Option<Vec<Vec<Bytes>>>,
    multi_from: u64,
}

impl Conversion {
    fn record(&mut self, cmd: &[Bytes]) -> std::io::Result<()> {
        self.lsn += 1;
        self.buf.clear();
        moon_aof::append_command_record(self.lsn, cmd, &mut self.buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.out.write_all(&self.buf)
    }
}

/// Streams one plain-RESP log into `w`. A missing file is empty; an RDB file is refused; an
/// incomplete last command (a torn tail, never acknowledged) and an unfinished MULTI are
/// dropped, as Redis does when it loads a truncated AOF. Returns the bytes dropped.
fn convert_plain(path: &Path, w: &mut Conversion, out: &Path) -> Result<u64, ManifestError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("cannot read", path)(e)),
    };
    let bad = |offset: u64, reason: String| ManifestError::Corrupt {
        file: path.to_path_buf(),
        reason: format!("at offset {offset}: {reason}"),
    };
    let mut parser = RequestParser::new(Limits {
        max_bulk_len: moon_aof::record::MAX_PAYLOAD,
        ..Limits::default()
    });
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut consumed = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut first = true;
    loop {
        let n = file.read(&mut chunk).map_err(io_err("cannot read", path))?;
        if first && chunk[..n].starts_with(b"REDIS") {
            return Err(bad(
                0,
                "the base is an RDB file; only AOF-format bases are supported (not supported yet)"
                    .into(),
            ));
        }
        first = false;
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if buf.first().is_some_and(|&b| b != b'*') {
                return Err(bad(consumed, "not a RESP command".into()));
            }
            let before = buf.len();
            match parser.next_request(&mut buf) {
                Ok(Some(cmd)) => {
                    let start = consumed;
                    consumed += (before - buf.len()) as u64;
                    let name = cmd[0].to_ascii_uppercase();
                    match &name[..] {
                        b"SELECT" => {}
                        b"MULTI" => {
                            w.multi = Some(Vec::new());
                            w.multi_from = start;
                        }
                        b"EXEC" => {
                            for c in w.multi.take().unwrap_or_default() {
                                w.record(&c).map_err(io_err("cannot write", out))?;
                            }
                        }
                        _ => match &mut w.multi {
                            Some(queued) => queued.push(cmd),
                            None => w.record(&cmd).map_err(io_err("cannot write", out))?,
                        },
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(bad(consumed, e.to_string())),
            }
        }
        if n == 0 {
            break;
        }
    }
    // An unfinished MULTI counts as dropped from its MULTI on.
    let torn = buf.len() as u64 + w.multi.take().map_or(0, |_| consumed - w.multi_from);
    if torn > 0 {
        tracing::warn!(file = %path.display(), bytes = torn, "dropping an incomplete last command (or unfinished MULTI) of the legacy log");
    }
    Ok(torn)
}

/// Removes what a finished migration (or an interrupted one, once the v2 manifest rules) left:
/// top-level `moon.aof.*` logs and `shard-*.tmp` directories. Nothing else is touched.
pub fn remove_leftovers(data_dir: &Path) {
    let aof = aof_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&aof) else {
        return;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        let old_log = name.starts_with("moon.aof.")
            && (name.ends_with(".base.rdb")
                || name.ends_with(".incr.aof")
                || name.ends_with(".base.aof"));
        let r = if old_log && path.is_file() {
            std::fs::remove_file(&path)
        } else if name.starts_with("shard-") && name.ends_with(".tmp") && path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            continue;
        };
        match r {
            Ok(()) => {
                removed = true;
                tracing::info!(file = %path.display(), "removed a leftover of an earlier migration");
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "could not remove a migration leftover: {e}")
            }
        }
    }
    if removed {
        let _ = fsync_dir(&aof);
    }
}
