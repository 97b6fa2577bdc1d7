//! The data directory's lock: an exclusive `flock` on `<dir>/moon.lock`, holding the pid of
//! its owner. The server takes it for its whole life and `moon-cli` for each command, so a
//! directory is never worked on by two processes at once (SPEC §5). The kernel drops the lock
//! when the process dies, so a SIGKILL never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "moon.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open lock file {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process holds it; `holder` is the pid it wrote (may be empty).
    #[error("lock file {} is held by pid {holder}", .path.display())]
    Held { path: PathBuf, holder: String },
}

/// Takes the lock (without waiting) and writes this process's pid into it.
pub fn lock_data_dir(dir: &Path) -> Result<Flock<File>, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| LockError::Open {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            let _ = locked.set_len(0);
            let _ = locked.rewind();
            let _ = writeln!(locked, "{}", std::process::id());
            Ok(locked)
        }
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(LockError::Held {
                path,
                holder: holder.trim().to_string(),
            })
        }
    }
}
