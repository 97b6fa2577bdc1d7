//! BGREWRITEAOF, one shard's part. The coordinator (in the server) drives every shard through
//! the same steps and owns the manifest; here is what each step does to this shard's files.
//!
//! 1. [`Shard::rewrite_cut`] — under a lock on every shard (so no cross-shard transaction is
//!    half before and half after the cut): mark the keyspace for a snapshot as it is now
//!    ([`crate::base::BaseCut::begin`]: no key is copied yet) and reserve one LSN, which the
//!    new base stands for (the manifest's `max_lsn`). Later records get LSNs above it and
//!    keep going to the current incr file.
//! 2. [`Shard::rewrite_write_base`] — in the background, while serving: write the snapshot as
//!    an RDB file ([`crate::base`]: every key in its typed form, loaded without running a
//!    command) to the next seq's base file — a new file, never one that exists — and
//!    fdatasync it. The keys are taken a few thousand per step, in hash order, with the
//!    shard serving between steps; a key changed before the walk reaches it was kept as it
//!    was at the cut (`moon_store::keyspace`'s `cut` module: copy-on-write per key). Its
//!    length and checksum go into the manifest, so recovery refuses any other file under its
//!    name.
//! 3. [`Shard::rewrite_precopy`], then [`Shard::rewrite_prepare`] — copy the records
//!    written since the cut (LSN above the reserved range) from the current incr to the next
//!    seq's incr file: most of them while serving, on a thread of its own, until little is
//!    left; then (once every shard got that far) pause the log writer (replies of new writes
//!    wait) and copy the rest, fdatasynced. The old files are still complete and still named
//!    by the manifest, so a crash here loses nothing.
//! 4. (coordinator) write the manifest with the next seq: the commit point.
//! 5. [`Shard::rewrite_switch`] — the writer continues in the new incr and resumes; held
//!    replies go out once their records are in it.
//!
//! [`Shard::rewrite_abort`] undoes 1–3 for this shard if another step failed anywhere: it
//! deletes only the files this rewrite created, and none once the commit was attempted.

use std::path::{Path, PathBuf};

use glommio::io::OpenOptions;

use crate::clock::now_ms;
use crate::shard::Shard;
use crate::state::Cut;
use crate::tail::{describe_io, Tail, COPY_CHUNK};
use moon_manifest::fsio::fsync_parent;
use moon_manifest::BaseInfo;

fn glommio_io(e: glommio::GlommioError<()>) -> std::io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Writes all of `chunk` at `pos`, however many writes that takes (a write may be short);
/// returns its length. A write of nothing is an error: the disk is full.
async fn write_fully(
    file: &glommio::io::BufferedFile,
    chunk: Vec<u8>,
    pos: u64,
) -> std::io::Result<u64> {
    let len = chunk.len();
    let mut done = file
        .write_at(chunk.clone(), pos)
        .await
        .map_err(glommio_io)?;
    while done < len {
        let n = file
            .write_at(chunk[done..].to_vec(), pos + done as u64)
            .await
            .map_err(glommio_io)?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
        }
        done += n;
    }
    Ok(len as u64)
}

/// A copy of a shard's keyspaces: (database, key, value, deadline), databases in order.
pub type KeyspaceCopy = Vec<(usize, moon_store::keyspace::Key, moon_store::Value, u64)>;

/// Copies every key of every database, as the keyspace holds them (inline up to 22 bytes:
/// no allocation), turned into `Bytes` only when they are written, later.
fn copy_keyspace(store: &moon_store::Store) -> KeyspaceCopy {
    let all = (0..store.databases())
        .filter_map(|db| store.keyspace_of(db).map(|ks| (db, ks)))
        .flat_map(|(db, ks)| {
            ks.iter()
                .map(move |(k, e)| (db, k.clone(), e.value.clone(), e.expire_at))
        });
    // Sized once: growing a vector of millions of entries copies it again and again.
    let total = (0..store.databases())
        .filter_map(|db| store.keyspace_of(db))
        .map(|ks| ks.len())
        .sum();
    let mut copy = Vec::with_capacity(total);
    copy.extend(all);
    copy
}

/// Keys a step of the base's walk takes (about 0.6 ms of encoding for small strings: a
/// million keys are written in about 300 ms): the shard serves between steps. Smaller steps
/// (256, 512, 1024) gave the probe of `cargo xtask bench --only-rewrite` no better p99.9 on
/// this machine, and the rewrite took longer.
const CUT_STEP_KEYS: usize = 2048;

/// How many times the tail is copied while serving before the writer is paused for the rest.
const PRECOPY_ROUNDS: usize = 8;

/// The tail left for the paused copy once the copies while serving have caught up to it.
const PAUSED_COPY_MAX: u64 = 256 * 1024;

/// Runs `f` on a thread of its own, not pinned to any CPU, and waits for it: the shard serves
/// meanwhile. Not glommio's blocking thread: there is one per executor, pinned to the
/// executor's own CPU, and the log's fdatasync under `appendfsync always` runs on it (a tail
/// copy there would hold every `always` reply, and take the shard's CPU). (A panic in `f`
/// ends the process, as one anywhere in the server does: main's panic hook.)
pub async fn off_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = futures_channel::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            unpin_this_thread();
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Err(format!("starting a thread: {e}"));
    }
    rx.await
        .unwrap_or_else(|_| Err("the thread doing it ended without an answer".to_string()))
}

/// A thread started from a shard inherits its pinning to one CPU: let it run on the CPUs the
/// process was given (those of its main thread, which no shard pins: a `taskset` or
/// `numactl` mask stays in force).
fn unpin_this_thread() {
    // Best effort: pinned, it still works, on the shard's CPU.
    if let Ok(cpus) = nix::sched::sched_getaffinity(nix::unistd::Pid::this()) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus);
    }
}

/// Copies the tail while serving, piece after piece, until what is left is at most
/// [`PAUSED_COPY_MAX`] (at most [`PRECOPY_ROUNDS`] pieces: a log written faster than it is
/// copied still ends).
async fn catch_up(writer: &moon_aof::AofWriter, mut tail: Tail) -> Result<Tail, String> {
    // Test seam: the whole tail copied while serving, round after round.
    let paused_max = if std::env::var("MOON_REWRITE_FAULT").as_deref() == Ok("slow-walk") {
        0
    } else {
        PAUSED_COPY_MAX
    };
    for _ in 0..PRECOPY_ROUNDS {
        if let Some(e) = writer.error() {
            return Err(format!("the AOF is failing: {e}"));
        }
        let upto = writer.file_len();
        if upto.saturating_sub(tail.copied) <= paused_max {
            break;
        }
        tail = off_thread("moon-rewrite", move || tail.copy_to(upto)).await?;
    }
    Ok(tail)
}

impl Shard {
    /// A copy of every key (those past their deadline included: the copy is what replaying
    /// this shard's log up to now would build), for a replica's full synchronisation. Call it
    /// under every shard's lock, with the log's mark placed in the same turn.
    pub fn keyspace_copy(&self) -> KeyspaceCopy {
        copy_keyspace(&self.store())
    }

    /// Step 1. Returns (keys, last reserved LSN), or `None` without an AOF.
    pub fn rewrite_cut(&self) -> Option<(u64, u64)> {
        let writer = self.aof()?;
        let now = now_ms();
        // The cut is made while every shard is locked; it only marks the keyspaces.
        let started = std::time::Instant::now();
        let base = match crate::base::BaseCut::begin(&mut self.store(), now) {
            Ok(base) => base,
            Err(e) => {
                tracing::error!(shard = self.id(), "BGREWRITEAOF cut: {e}");
                self.store().end_cut();
                return None;
            }
        };
        let keys = base.keys();
        let us = started.elapsed().as_micros() as u64;
        tracing::info!(
            shard = self.id(),
            "BGREWRITEAOF cut: {keys} keys to write, marked in {us} µs"
        );
        // Every shard is held while the cut is made: the rewrite's pause.
        moon_store::latency::sample("aof-rewrite", us / 1000, now / 1000);
        let tail_from = writer.file_len();
        let (first_lsn, last_lsn) = writer.reserve(1);
        *self.rewrite.borrow_mut() = Some(Cut {
            base: Some(base),
            tail: None,
            first_lsn,
            last_lsn,
            tail_from,
            created: Vec::new(),
        });
        Some((keys, last_lsn))
    }

    /// Step 2: writes the base to `path`, a file that must not exist yet (a rewrite never
    /// reuses a name the manifest on disk may hold). Returns its length and checksum.
    pub async fn rewrite_write_base(&self, path: PathBuf) -> Result<BaseInfo, String> {
        let Some(base) = self.take_from_cut(|c| c.base.take()) else {
            return Err("no rewrite in progress on this shard".into());
        };
        let written = self.write_base(base, &path).await;
        if written.is_err() {
            // Every write would go on keeping states for a walk that is over, until the
            // coordinator's abort (after the other shards' walks).
            self.store_unchecked().end_cut();
        }
        written
    }

    async fn write_base(
        &self,
        mut base: crate::base::BaseCut,
        path: &Path,
    ) -> Result<BaseInfo, String> {
        let describe = |e: std::io::Error| format!("writing {}: {e}", path.display());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(path)
            .await
            .map_err(|e| describe(glommio_io(e)))?;
        self.created(path);
        // Test seam: a walk slow enough for a test's writes to land in the middle of it.
        let slow = std::env::var("MOON_REWRITE_FAULT").as_deref() == Ok("slow-walk");
        let step_keys = if slow { 100 } else { CUT_STEP_KEYS };
        let mut pos = 0u64;
        loop {
            // A step at a time: the shard serves between steps.
            let done = base.step(&mut self.store(), step_keys).map_err(describe)?;
            // Written a MiB at a time.
            if let Some(chunk) = base.take(1 << 20) {
                pos += write_fully(&file, chunk, pos).await.map_err(describe)?;
            } else if slow {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            } else if !done {
                // Through the reactor, not `yield_now`: a task that yields is ready again at
                // once, and glommio polls for I/O (the clients' requests) only once no task is
                // ready or its preemption timer fires, so with `yield_now` the clients waited
                // for the next 1 MiB write, about 5 ms of steps (measured: the probe's GET p99
                // went from 0.6 to 4.6 ms). A timer's wake comes from the reactor's next poll,
                // after every client task that poll made ready.
                glommio::timer::sleep(std::time::Duration::from_micros(1)).await;
            }
            if done {
                break;
            }
        }
        let (last, info) = base.finish().map_err(describe)?;
        pos += write_fully(&file, last, pos).await.map_err(describe)?;
        debug_assert_eq!(pos, info.bytes);
        file.fdatasync()
            .await
            .map_err(|e| describe(glommio_io(e)))?;
        let _ = file.close().await;
        let dir_of = path.to_path_buf();
        off_thread("moon-rewrite", move || {
            fsync_parent(&dir_of).map_err(|e| format!("writing {}: {e}", dir_of.display()))
        })
        .await?;
        Ok(info)
    }

    /// Takes a part of this shard's rewrite state (the step that uses it owns it from now).
    fn take_from_cut<T>(&self, part: impl FnOnce(&mut Cut) -> Option<T>) -> Option<T> {
        self.rewrite.borrow_mut().as_mut().and_then(part)
    }

    /// Notes a file this rewrite created (an abort deletes it).
    fn created(&self, path: &Path) {
        if let Some(cut) = self.rewrite.borrow_mut().as_mut() {
            cut.created.push(path.to_path_buf());
        }
    }

    /// Step 3, while serving: carries most of the records written since the cut into
    /// `new_incr`, fdatasynced, on a thread of its own ([`off_thread`]): the records up to the
    /// incr's length now (the writer appends whole units with one synchronous write, so that
    /// is a record boundary), then those that came meanwhile, until what is left is small
    /// ([`PAUSED_COPY_MAX`]). The coordinator runs it on every shard before any shard pauses
    /// ([`Shard::rewrite_prepare`]): a shard with a short tail would otherwise stay paused
    /// while another copies a long one.
    pub async fn rewrite_precopy(&self, new_incr: PathBuf) -> Result<(), String> {
        let writer = self.aof().ok_or("AOF disabled")?;
        let (tail_from, first, last) = match self.rewrite.borrow().as_ref() {
            Some(cut) => (cut.tail_from, cut.first_lsn, cut.last_lsn),
            None => return Err("no rewrite in progress on this shard".into()),
        };
        // Records numbered before the cut may still be pending in the writer (a round was in
        // flight, e.g. waiting on its fdatasync). They must reach the old incr, where the tail
        // copy below skips them (the base holds their effects): pending at the switch, they
        // would land in the new incr numbered below the base, which recovery refuses. (In the
        // file is enough: whether a held transaction part among them is released is not this
        // step's business.)
        if let Err(e) = writer.wait_logged(first.saturating_sub(1)).await {
            return Err(format!("the AOF is failing: {e}"));
        }
        let old = writer.path();
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&new_incr)
            .map_err(|e| describe_io("creating", &new_incr, e))?;
        self.created(&new_incr);
        let mut tail = Tail {
            old,
            new: new_incr.clone(),
            out,
            copied: tail_from,
            last,
            pieces: 0,
            chunk: COPY_CHUNK,
        };
        // The new file's name made durable, then the pieces.
        let dir_of = new_incr.clone();
        off_thread("moon-rewrite", move || {
            fsync_parent(&dir_of).map_err(|e| describe_io("fsyncing the directory of", &dir_of, e))
        })
        .await?;
        tail = catch_up(&writer, tail).await?;
        match self.rewrite.borrow_mut().as_mut() {
            Some(cut) => cut.tail = Some(tail),
            None => return Err("no rewrite in progress on this shard".into()),
        }
        Ok(())
    }

    /// Step 3, paused: pauses the writer and carries the rest of the tail into the new incr,
    /// with one fdatasync; the writer stays paused (the replies of new writes wait) until the
    /// switch or the abort. This was the whole tail and three fsyncs: 30 ms for a second of
    /// writes at 100k/s.
    pub async fn rewrite_prepare(&self) -> Result<(), String> {
        let writer = self.aof().ok_or("AOF disabled")?;
        let Some(tail) = self.take_from_cut(|c| c.tail.take()) else {
            return Err("no tail copy in progress on this shard".into());
        };
        // Other shards' copies took their time, and this shard went on logging meanwhile:
        // caught up again first, so that what is copied paused stays small.
        let tail = catch_up(&writer, tail).await?;
        let (while_serving, pieces) = (tail.copied, tail.pieces);
        writer.pause().await;
        if let Some(e) = writer.error() {
            return Err(format!("the AOF is failing: {e}"));
        }
        let upto = writer.file_len();
        let tail = off_thread("moon-rewrite", move || tail.copy_to(upto)).await?;
        tracing::info!(
            shard = self.id(),
            "BGREWRITEAOF tail: {pieces} pieces copied while serving (up to byte {while_serving}), {} bytes with the writer paused",
            upto.saturating_sub(while_serving)
        );
        drop(tail);
        Ok(())
    }

    /// Step 5: after the manifest names the new files, continue the log in the new incr.
    pub async fn rewrite_switch(&self, files: crate::recovery::ShardFiles) -> Result<(), String> {
        let writer = self.aof().ok_or("AOF disabled")?;
        self.rewrite.borrow_mut().take();
        let new_incr = files.incr.clone();
        self.set_log_files(files);
        let result = writer.reopen(&new_incr).await;
        match result {
            Ok(()) => {
                writer.resume();
                Ok(())
            }
            Err(e) => {
                // The manifest already names the new file: the log cannot go on elsewhere.
                writer.fail_with("reopen", &e);
                writer.resume();
                Err(format!("reopening {}: {e}", new_incr.display()))
            }
        }
    }

    /// Ends this shard's part of a rewrite that did not commit, and resumes its writer. With
    /// `delete_created` (the failure came before the commit was attempted) the files this
    /// rewrite created are deleted; without (the commit failed after its rename was issued,
    /// and the manifest on disk may name them) every file stays.
    pub fn rewrite_abort(&self, delete_created: bool) {
        self.store_unchecked().end_cut();
        if let Some(cut) = self.rewrite.borrow_mut().take() {
            if delete_created && !cut.created.is_empty() {
                // Off the executor: a new base may be gigabytes, and its unlink takes as long
                // as freeing its extents (79 ms for 270 MB). Inline if no thread can start.
                let files = cut.created.clone();
                let unlink = move || {
                    for f in &files {
                        let _ = std::fs::remove_file(f);
                    }
                };
                let spawned = std::thread::Builder::new()
                    .name("moon-rewrite".into())
                    .spawn(move || {
                        unpin_this_thread();
                        unlink();
                    });
                if spawned.is_err() {
                    for f in &cut.created {
                        let _ = std::fs::remove_file(f);
                    }
                }
            }
        }
        if let Some(w) = self.aof() {
            w.resume();
        }
    }
}
