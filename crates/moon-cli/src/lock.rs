//! The data directory's lock: the same `flock` on `<dir>/moon.lock` the server takes, so a
//! tool and a server never work on one directory at the same time.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

/// Locks `dir` for the life of the returned value; fails if a server (or another tool) holds it.
pub fn lock(dir: &Path) -> anyhow::Result<Flock<File>> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let path = dir.join("moon.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err(_) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "{} is in use (lock {} held by pid {}); stop the server first: moon-cli works offline",
                dir.display(),
                path.display(),
                holder.trim()
            )
        }
    }
}
