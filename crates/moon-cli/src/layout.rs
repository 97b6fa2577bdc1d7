//! Writing a new per-shard layout: what `migrate-aof` and `import-rdb` end with (snapshot
//! bases, fsynced, then the manifest as the commit point, then the old files removed).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use moon_manifest::{Manifest, PerShard};
use moon_store::slot::shard_for_key;
use moon_store::{Store, Value};

/// A progress bar over `total` bytes of `path`, shown only on a terminal and for logs large
/// enough to take a while (indicatif: a maintained crate that handles terminal width, rate and
/// ETA, rather than hand-written escape codes).
pub(crate) fn progress(path: &Path, total: u64) -> Option<indicatif::ProgressBar> {
    if total < 16 << 20 || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
    );
    Some(bar)
}

pub(crate) fn check_shards(shards: usize) -> anyhow::Result<()> {
    if shards == 0 || shards > moon_manifest::manifest::MAX_SHARDS {
        bail!(
            "--shards must be between 1 and {}",
            moon_manifest::manifest::MAX_SHARDS
        );
    }
    Ok(())
}

/// Writes `store` as a v2 layout with `shards` shards under seq `old_seq + 1` (see the module
/// docs for the order), then removes the files of `old` if any.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_layout(
    dir: &Path,
    store: &Store,
    shards: usize,
    dry_run: bool,
    source: String,
    old: Option<&Manifest>,
    old_seq: u64,
    first_lsn: u64,
) -> anyhow::Result<i32> {
    let aof = moon_manifest::aof_dir(dir);
    let manifest = old;
    let now = moon_shard::now_ms();
    let mut per_shard: Vec<Vec<(usize, Bytes, &Value, u64)>> = vec![Vec::new(); shards];
    for db in 0..store.databases() {
        let Some(ks) = store.keyspace_of(db) else {
            continue;
        };
        for (key, entry) in ks.iter() {
            if entry.expire_at != 0 && entry.expire_at <= now {
                continue;
            }
            per_shard[shard_for_key(key, shards)].push((
                db,
                key.to_bytes(),
                &entry.value,
                entry.expire_at,
            ));
        }
    }
    // Above every seq in the directory: stray files of an interrupted run are never reused.
    let new_seq = match manifest {
        Some(Manifest::V2(m)) => m.next_free_seq(dir),
        _ => PerShard::new(old_seq, Vec::new()).next_free_seq(dir),
    };
    println!("source: {source}");
    println!(
        "target: per-shard (v2) layout, {shards} shards, seq {new_seq}, LSNs from {first_lsn}"
    );
    for (i, keys) in per_shard.iter().enumerate() {
        println!("  shard {i}: {} keys", keys.len());
    }
    if dry_run {
        println!("--dry-run: nothing written");
        return Ok(0);
    }

    // Build the new files beside the old ones (the old manifest does not name them).
    let mut new = PerShard::new(new_seq, vec![0; shards]);
    for (i, keys) in per_shard.iter().enumerate() {
        let shard_dir = PerShard::shard_dir(dir, i);
        moon_manifest::fsio::create_dir_all_durable(&shard_dir)?;
        let path = new.base_path(dir, i);
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, created);
        // The server's base: an RDB file of the shard's keys (`moon_shard::base`), standing
        // for one LSN, which the incr the server starts follows.
        let counts = moon_shard::base::counts(keys.iter().map(|(db, _, _, at)| (*db, *at)));
        let mut base = moon_shard::base::BaseWriter::new(counts)?;
        for (db, key, value, at) in keys {
            base.key(*db, key, value, *at)
                .with_context(|| format!("key {key:?}"))?;
            if let Some(chunk) = base.take(1 << 20) {
                out.write_all(&chunk)?;
            }
        }
        let (last, info) = base.finish()?;
        out.write_all(&last)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        new.max_lsn[i] = first_lsn;
        new.bases[i] = Some(info);
        // A stray incr of an interrupted earlier run must not be replayed after this base:
        // removed before the directory fsync, so a power cut cannot bring it back.
        let _ = std::fs::remove_file(new.incr_path(dir, i));
        moon_manifest::fsio::fsync_dir(&shard_dir)?;
    }
    moon_manifest::fsio::fsync_dir(&aof)?;
    // The commit point.
    moon_manifest::fsio::write_atomic(&moon_manifest::manifest_path(dir), new.render().as_bytes())?;
    println!(
        "committed: {} now holds the per-shard layout with {shards} shards",
        aof.display()
    );

    // Old files go only now.
    match manifest {
        None => {}
        Some(Manifest::V1(_)) => moon_manifest::remove_leftovers(dir),
        Some(Manifest::V2(old)) => {
            for i in 0..old.shards() {
                let _ = std::fs::remove_file(old.base_path(dir, i));
                let _ = std::fs::remove_file(old.incr_path(dir, i));
            }
            for i in shards..old.shards() {
                let _ = std::fs::remove_dir_all(PerShard::shard_dir(dir, i));
            }
        }
    }
    moon_manifest::fsio::fsync_dir(&aof)?;
    Ok(0)
}
