//! BGREWRITEAOF: the coordinator. Every shard compacts its own log into a new base (its live
//! keys, an RDB file of typed values) and a fresh incr, under the next manifest `seq`; the
//! switch is the manifest write. The per-shard steps and why each is safe are in
//! `moon_shard::rewrite`; the order here is:
//!
//! 1. lock every shard (ascending, like a transaction) and cut: mark each keyspace for a
//!    snapshot (nothing is copied) and reserve its LSNs; unlock. No cross-shard transaction
//!    straddles the cut.
//! 2. every shard writes its new base in the background from the snapshot, walked a step at a
//!    time, fsynced; serving continues.
//! 3. every shard copies most of the records logged since the cut into its new incr while
//!    serving; then every shard pauses its writer and carries the rest, fdatasynced. Replies
//!    of writes arriving now wait.
//! 4. the new manifest is written atomically — the commit point. Before it, the old files are
//!    complete and named; after it, the new ones are.
//! 5. every writer continues in its new incr and resumes; then the old files are deleted.
//!
//! Any failure before step 4 deletes the new files and resumes the writers: the old layout
//! goes on as if nothing happened, and `aof_last_bgrewrite_status` says `err`.
//!
//! A failure at step 4 once the rename was issued (the rename or the directory fsync) leaves
//! the manifest on disk undetermined: a crash could bring back the old one or the new one.
//! Both generations are kept, every log fails (MISCONF), and **no rewrite starts again until a
//! restart** has read whichever manifest the disk holds: the layout in memory may no longer be
//! the one on disk, and a rewrite planned from it could overwrite or delete the files the disk's
//! manifest names. Independently, a new generation's seq is above every seq found on disk
//! ([`PerShard::next_free_seq`]) and its files are created new (`O_EXCL`), so no rewrite ever
//! writes over a file a manifest may name. The manifest records each base's length and CRC-32:
//! a partial or foreign base is refused at startup.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moon_manifest::fsio::CommitError;
use moon_manifest::PerShard;
use moon_shard::{join_all, Shard};

use crate::shared::{layout_size, lock, Shared};

/// BGREWRITEAOF: starts a rewrite in the background; Redis's replies.
pub fn start(shard: &Rc<Shard>, shared: &Arc<Shared>) -> Result<&'static str, &'static str> {
    if lock(&shared.rewrite.layout).is_none() {
        return Err("ERR AOF is disabled (appendonly no): there is nothing to rewrite");
    }
    if lock(&shared.rewrite.blocked).is_some() {
        return Err("ERR Background append only file rewriting is disabled until a restart: the last rewrite failed after its manifest commit, and the manifest on disk may differ from the layout in memory (see the log)");
    }
    if shared.rewrite.in_progress.swap(true, Ordering::AcqRel) {
        return Err("ERR Background append only file rewriting already in progress");
    }
    let (shard, shared) = (shard.clone(), shared.clone());
    glommio::spawn_local(async move {
        let started = Instant::now();
        let result = run(&shard, &shared).await;
        let mut stats = lock(&shared.rewrite.stats);
        stats.last_ok = result.is_ok();
        stats.last_duration_ms = started.elapsed().as_millis() as i64;
        match result {
            Ok(size) => {
                stats.rewrites += 1;
                stats.base_size = size;
                tracing::info!(
                    "Background AOF rewrite finished successfully ({size} bytes, {} ms)",
                    stats.last_duration_ms
                );
            }
            Err(e) => tracing::error!("Background AOF rewrite failed: {e}"),
        }
        drop(stats);
        shared.rewrite.in_progress.store(false, Ordering::Release);
    })
    .detach();
    Ok("Background append only file rewriting started")
}

/// The rewrite itself. Returns the new layout's size.
async fn run(shard: &Rc<Shard>, shared: &Arc<Shared>) -> Result<u64, String> {
    let (dir, old) = lock(&shared.rewrite.layout).clone().ok_or("AOF disabled")?;
    let n = old.shards();
    let mut new = PerShard::new(old.next_free_seq(&dir), vec![0; n]);
    tracing::info!(
        "Background AOF rewrite started (seq {} -> {})",
        old.seq,
        new.seq
    );

    // 1. The cut, under every shard's lock.
    let txid = shard.new_txid();
    let all: Vec<usize> = (0..n).collect();
    let _ = shard.tx_lock_all(&all, txid).await;
    let cuts = join_all(
        (0..n)
            .map(|p| shard.call_on(p, |s| s.rewrite_cut()))
            .collect(),
    )
    .await;
    for p in 0..n {
        shard.tx_unlock(p, txid).await;
    }
    for (p, cut) in cuts.iter().enumerate() {
        match cut {
            Some(Some((_, last))) => new.max_lsn[p] = *last,
            _ => return Err(abort(shard, n, format!("shard {p} could not cut")).await),
        }
    }

    // 2. The bases, in the background of every shard.
    let bases = on_every_shard(shard, n, |p| {
        let path = new.base_path(&dir, p);
        move |s: Rc<Shard>| async move { s.rewrite_write_base(path).await }
    })
    .await;
    let bases = match all_ok(bases) {
        Ok(bases) => bases,
        Err(e) => return Err(abort(shard, n, e).await),
    };
    new.bases = bases.into_iter().map(Some).collect();

    // 3. Carry each tail into the new incr: most of it while serving, on every shard; then
    // pause every writer and carry the rest (no shard paused while another still copies).
    let copied = on_every_shard(shard, n, |p| {
        let path = new.incr_path(&dir, p);
        move |s: Rc<Shard>| async move { s.rewrite_precopy(path).await }
    })
    .await;
    if let Err(e) = all_ok(copied) {
        return Err(abort(shard, n, e).await);
    }
    let prepared = on_every_shard(shard, n, |_| {
        move |s: Rc<Shard>| async move { s.rewrite_prepare().await }
    })
    .await;
    if let Err(e) = all_ok(prepared) {
        return Err(abort(shard, n, e).await);
    }

    // 4. The commit point.
    let manifest = moon_manifest::manifest_path(&dir);
    // Off the executor: its fsyncs (file, then directory) wait for the disk, which has just
    // taken every base, and the shard's clients would wait with them.
    let (path, contents) = (manifest.clone(), new.render());
    // (The writers are paused: no `always` fdatasync waits behind it on this thread.)
    let mut committed = glommio::executor()
        .spawn_blocking(move || moon_manifest::fsio::commit_atomic(&path, contents.as_bytes()))
        .await;
    if committed.is_ok() && std::env::var("MOON_REWRITE_FAULT").as_deref() == Ok("after-rename") {
        // Fault seam for tests: the directory fsync after the rename "fails".
        committed = Err(CommitError::AfterRename(std::io::Error::from_raw_os_error(
            nix::libc::EIO,
        )));
    }
    match committed {
        Ok(()) => {}
        Err(CommitError::BeforeRename(e)) => {
            return Err(abort(shard, n, format!("writing {}: {e}", manifest.display())).await)
        }
        Err(CommitError::AfterRename(e)) => {
            // The manifest on disk may name the old files or the new ones, whichever survives
            // a crash: both sets stay, complete, and no write is accepted in either (every
            // log fails: MISCONF) until a restart reads whichever manifest is there.
            let cause = format!(
                "committing {}: {e}; both the old and the new files are kept, writes are refused until a restart",
                manifest.display()
            );
            tracing::error!("BGREWRITEAOF: {cause}");
            *lock(&shared.rewrite.blocked) = Some(cause.clone());
            let why = cause.clone();
            join_all(
                (0..n)
                    .map(|p| {
                        let why = why.clone();
                        shard.call_on(p, move |s| {
                            if let Some(w) = s.aof() {
                                w.fail_with("manifest commit", &std::io::Error::other(why));
                            }
                        })
                    })
                    .collect(),
            )
            .await;
            // Writers resume only to answer what they hold with that error; every file stays.
            join_all(
                (0..n)
                    .map(|p| shard.call_on(p, |s| s.rewrite_abort(false)))
                    .collect(),
            )
            .await;
            return Err(cause);
        }
    }
    *lock(&shared.rewrite.layout) = Some((dir.clone(), new.clone()));

    // 5. Continue in the new files; the old ones go.
    let switched = on_every_shard(shard, n, |p| {
        let files = moon_shard::recovery::ShardFiles::of(&dir, &new, p);
        move |s: Rc<Shard>| async move { s.rewrite_switch(files).await }
    })
    .await;
    // Off the executor: unlinking a large file frees its extents in the caller's time (79 ms
    // for a 270 MB incr, every client of this shard waiting).
    let gone: Vec<_> = (0..n)
        .flat_map(|i| [old.base_path(&dir, i), old.incr_path(&dir, i)])
        .collect();
    let unlink = |files: &[std::path::PathBuf]| {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    };
    let off = gone.clone();
    if moon_shard::rewrite::off_thread("moon-rewrite", move || {
        unlink(&off);
        Ok(())
    })
    .await
    .is_err()
    {
        // No thread could start: here, rather than leave them to the next start.
        unlink(&gone);
    }
    if let Err(e) = all_ok(switched) {
        let cause = format!("after the commit: {e}");
        *lock(&shared.rewrite.blocked) = Some(cause.clone());
        return Err(cause);
    }
    Ok(layout_size(&dir, &new))
}

/// Runs the async step `make(p)` on every shard `p` at once; results in shard order.
async fn on_every_shard<F, Fut, T>(
    shard: &Rc<Shard>,
    n: usize,
    make: impl Fn(usize) -> F,
) -> Vec<Option<Result<T, String>>>
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + 'static,
    T: Send + 'static,
{
    join_all((0..n).map(|p| shard.call_on_async(p, make(p))).collect()).await
}

/// Every shard's result, in shard order, or the first error.
fn all_ok<T>(results: Vec<Option<Result<T, String>>>) -> Result<Vec<T>, String> {
    results
        .into_iter()
        .enumerate()
        .map(|(p, r)| match r {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(format!("shard {p}: {e}")),
            None => Err(format!("shard {p} is gone")),
        })
        .collect()
}

/// Undoes a rewrite that failed before its commit: writers resume, and each shard deletes
/// the files this rewrite created (only those: a name that existed was never written).
async fn abort(shard: &Rc<Shard>, n: usize, cause: String) -> String {
    join_all(
        (0..n)
            .map(|p| shard.call_on(p, |s| s.rewrite_abort(true)))
            .collect(),
    )
    .await;
    cause
}

/// Automatic rewrites (`auto-aof-rewrite-percentage`, `auto-aof-rewrite-min-size`), checked
/// once a second on shard 0.
pub fn start_auto_rewrite(shard: Rc<Shard>, shared: Arc<Shared>) {
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            let config = shared.config();
            if !config.appendonly
                || config.auto_aof_rewrite_percentage == 0
                || shared.rewrite.in_progress()
                || lock(&shared.rewrite.blocked).is_some()
            {
                continue;
            }
            let (_, size) = shared.rewrite.sizes();
            let base = shared.rewrite.stats().base_size;
            let grown =
                size.saturating_sub(base) * 100 >= base.max(1) * config.auto_aof_rewrite_percentage;
            if size >= config.auto_aof_rewrite_min_size && grown {
                tracing::info!(
                    "Starting automatic rewriting of AOF on {}% growth",
                    (size.saturating_sub(base) * 100) / base.max(1)
                );
                let _ = start(&shard, &shared);
            }
        }
    })
    .detach();
}
