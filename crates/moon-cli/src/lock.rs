//! The data directory's lock (`moon_manifest::lock`): the one the server takes, so a tool and
//! a server never work on one directory at the same time.

use std::fs::File;
use std::path::Path;

use anyhow::bail;
use moon_manifest::lock::{lock_data_dir, LockError};
use nix::fcntl::Flock;

/// Locks `dir` for the life of the returned value; fails if a server (or another tool) holds it.
pub fn lock(dir: &Path) -> anyhow::Result<Flock<File>> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    match lock_data_dir(dir) {
        Ok(l) => Ok(l),
        Err(LockError::Held { path, holder }) => bail!(
            "{} is in use (lock {} held by pid {holder}); stop the server first: moon-cli works offline",
            dir.display(),
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}
