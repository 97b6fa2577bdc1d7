//! Redis's RDB files in and out of Moon data directories.
//!
//! - `import-rdb FILE --dir D --shards N`: every key of a Redis `dump.rdb` (RDB 1 to 12, up to
//!   Redis 7.4) into a new per-shard directory, written as `migrate-aof` writes one (snapshot
//!   bases, then the manifest as the commit point). Function libraries go to the directory's
//!   functions file. A value Moon cannot hold (module data) stops the import with its key and
//!   type, unless `--skip-unsupported`, which imports the rest and lists what it left out.
//! - `migrate-aof --from-redis DIR` reads an RDB-preamble base through the same loader.
//! - `export-rdb --dir D --out FILE`: the directory's keys (recovered as the server recovers
//!   them) and libraries as an RDB that Redis loads: version 10 (Redis 7.0) unless a hash has
//!   field TTLs, which only Redis 7.4's version 12 holds. Written beside `FILE` and renamed
//!   into place after an fsync, so a crash never leaves half a file under its name.

use std::path::Path;

use anyhow::{bail, Context};
use moon_store::Store;

/// `import-rdb`.
pub fn run_import(
    file: &Path,
    dir: &Path,
    shards: usize,
    skip_unsupported: bool,
    dry_run: bool,
) -> anyhow::Result<i32> {
    crate::layout::check_shards(shards)?;
    if !file.is_file() {
        bail!("{}: no such RDB file", file.display());
    }
    let mapped = moon_aof::reader::MappedLog::open(file)
        .with_context(|| format!("reading {}", file.display()))?;
    let size = mapped.bytes().len();
    moon_manifest::fsio::create_dir_all_durable(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let _lock = crate::lock::lock(dir)?;
    if moon_manifest::manifest_path(dir).exists() {
        bail!("{} already holds a Moon data directory; refusing to overwrite it (import into an empty directory)", dir.display());
    }
    let started = std::time::Instant::now();
    let mut store = Store::new(usize::MAX);
    let loaded = crate::rdb_load::load_rdb(file, &mapped, &mut store, skip_unsupported, false)?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    println!(
        "read {} (RDB version {}): {} keys, {} already expired and left out, {} libraries, {} skipped; {:.1} MB/s, {:.0} keys/s",
        file.display(),
        loaded.version,
        loaded.keys,
        loaded.expired,
        loaded.functions.len(),
        loaded.skipped.len(),
        size as f64 / 1e6 / secs,
        loaded.keys as f64 / secs,
    );
    if !dry_run {
        crate::rdb_load::write_functions(dir, &loaded.functions)?;
    }
    let source = format!("Redis RDB {} ({} keys)", file.display(), loaded.keys);
    crate::layout::write_layout(dir, &store, shards, dry_run, source, None, 0, 1)
}

/// `export-rdb`.
pub fn run_export(dir: &Path, out: &Path, version: Option<u32>) -> anyhow::Result<i32> {
    if let Some(v) = version {
        if !(moon_rdb::REDIS_7_0..=moon_rdb::MAX_VERSION).contains(&v) {
            bail!(
                "--rdb-version must be {} (Redis 7.0) to {} (Redis 7.4)",
                moon_rdb::REDIS_7_0,
                moon_rdb::MAX_VERSION
            );
        }
    }
    let _lock = crate::lock::lock(dir)?;
    let (store, source) = crate::migrate::load_dir(dir)?;
    let now = moon_shard::now_ms();
    // Which keys go, per database, and the version they need.
    let mut dbs = Vec::new();
    let mut needs = moon_rdb::REDIS_7_0;
    for db in 0..store.databases() {
        let Some(ks) = store.keyspace_of(db) else {
            continue;
        };
        let mut keys = Vec::new();
        for (key, entry) in ks.iter() {
            if entry.expire_at != 0 && entry.expire_at <= now {
                continue;
            }
            let obj = entry.value.to_rdb();
            needs = needs.max(moon_rdb::needs_version(&obj));
            keys.push((key.to_bytes(), obj, entry.expire_at));
        }
        if !keys.is_empty() {
            dbs.push((db, keys));
        }
    }
    let version = version.unwrap_or(needs);
    let functions = match std::fs::read(dir.join(moon_store::functions::FILE)) {
        Ok(b) => moon_store::functions::decode_file(&b).map_err(|why| {
            anyhow::anyhow!("{}: {why}", dir.join(moon_store::functions::FILE).display())
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context("reading the functions file"),
    };
    let tmp = out.with_extension("rdb.moon-tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w =
        moon_rdb::FileWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), version);
    let ctime = (now / 1000).to_string();
    w.aux(b"redis-ver", b"7.0.0")?;
    w.aux(b"redis-bits", b"64")?;
    w.aux(b"ctime", ctime.as_bytes())?;
    w.aux(b"moon-ver", env!("CARGO_PKG_VERSION").as_bytes())?;
    for code in &functions {
        w.function(code)?;
    }
    let mut total = 0u64;
    for (db, keys) in &dbs {
        let expires = keys.iter().filter(|k| k.2 != 0).count() as u64;
        w.select_db(*db as u64, keys.len() as u64, expires)?;
        for (key, obj, at) in keys {
            w.key(key, obj, (*at != 0).then_some(*at))
                .map_err(|e| anyhow::anyhow!("{e} (export with --rdb-version {needs})"))?;
            total += 1;
        }
    }
    let file = w
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .context("writing the RDB")?;
    file.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        moon_manifest::fsio::fsync_dir(parent)?;
    }
    println!("source: {source}");
    println!(
        "wrote {}: RDB version {version}, {total} keys in {} databases, {} libraries",
        out.display(),
        dbs.len(),
        functions.len()
    );
    if version > moon_rdb::REDIS_7_0 {
        println!(
            "note: RDB version {version} loads in Redis 7.4 and later only (hash field TTLs need it)"
        );
    }
    Ok(0)
}
