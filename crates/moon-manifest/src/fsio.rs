//! Crash-safe file operations: the only way this crate changes a directory's contents.
//!
//! A manifest is replaced by writing `<name>.tmp`, fsyncing it, renaming it over `<name>` and
//! fsyncing the directory: after a crash the directory holds the old manifest or the new one,
//! never a mix, and once `write_atomic` returns the new one survives power loss.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Suffix of a manifest being written; one left behind by a crash is removed at load.
pub const TEMP_SUFFIX: &str = ".tmp";

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsyncs the directory that holds `path` (after creating or renaming `path` in it).
pub fn fsync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => fsync_dir(dir),
        None => fsync_dir(Path::new(".")),
    }
}

/// `create_dir_all` that survives power loss: `dir` and every directory above it are fsynced
/// into their parents before it returns (a directory entry is durable only once its parent is
/// fsynced), so files created inside afterwards cannot vanish with their directory. Existing
/// directories are fsynced too: one created by a run that died before its fsync may not be
/// durable yet. Used at startup and by offline tools, where a few fsyncs cost nothing.
pub fn create_dir_all_durable(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent != Path::new("/") {
            create_dir_all_durable(parent)?;
        }
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => fsync_dir(parent),
        None => fsync_dir(Path::new(".")),
    }
}

/// How [`commit_atomic`] failed: before the rename (the old file is in place, untouched: undo
/// freely) or after it was issued (the new file may be the one in place, durable or not:
/// nothing it names may be deleted).
#[derive(Debug)]
pub enum CommitError {
    BeforeRename(std::io::Error),
    AfterRename(std::io::Error),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::BeforeRename(e) => write!(f, "{e}"),
            CommitError::AfterRename(e) => write!(f, "after the rename: {e}"),
        }
    }
}

/// [`write_atomic`] for a commit point (a rewrite's or migration's manifest): tells whether it
/// failed before or after the rename was issued.
pub fn commit_atomic(path: &Path, contents: &[u8]) -> Result<(), CommitError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(TEMP_SUFFIX);
    replace_via(path, &tmp_name, contents, |tmp| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
    })
}

/// [`write_atomic`] for a file that holds secrets (the aclfile: password hashes): the temp
/// file is created new, under a name no other writer uses (two saves may run at once), and
/// readable by its owner only.
pub fn write_atomic_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp_name = format!(
        ".{}.{}.{}{TEMP_SUFFIX}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    replace_via(path, tmp_name.as_ref(), contents, |tmp| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
    })
    .map_err(|e| match e {
        CommitError::BeforeRename(e) | CommitError::AfterRename(e) => e,
    })
}

/// Replaces `path` with `contents`: written to `tmp_name` beside it (opened by `open`) and
/// fsynced, renamed over `path`, the directory fsynced.
fn replace_via(
    path: &Path,
    tmp_name: &std::ffi::OsStr,
    contents: &[u8],
    open: impl FnOnce(&Path) -> std::io::Result<File>,
) -> Result<(), CommitError> {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => {
            return Err(CommitError::BeforeRename(std::io::Error::other(
                "a path to replace has a parent directory",
            )))
        }
    };
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(CommitError::BeforeRename(e));
    }
    // Once the rename is issued there is no going back: even a failed rename may have
    // happened (EIO), and a failed directory fsync leaves either name durable.
    std::fs::rename(&tmp, path).map_err(CommitError::AfterRename)?;
    fsync_dir(dir).map_err(CommitError::AfterRename)
}

/// Writes `contents` to `path` atomically and durably ([`commit_atomic`] for callers that do
/// not need to know on which side of the rename it failed).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    commit_atomic(path, contents).map_err(|e| match e {
        CommitError::BeforeRename(e) | CommitError::AfterRename(e) => e,
    })
}
