//! Redis's RDB files in and out of Moon data directories.
//!
//! - `import-rdb FILE --dir D --shards N`: every key of a Redis `dump.rdb` (RDB 9 to 12, Redis
//!   5.0 to 7.4) into a new per-shard directory, written as `migrate-aof` writes one (snapshot
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
use bytes::Bytes;
use moon_store::{Store, Value};

/// What one RDB held, for the summary line.
#[derive(Default)]
pub(crate) struct Loaded {
    pub keys: u64,
    pub expired: u64,
    pub skipped: Vec<String>,
    pub functions: Vec<Bytes>,
    pub version: u32,
}

/// Loads every key of the RDB in `data` (from `path`, for messages) into `store`.
pub(crate) fn load_rdb(
    path: &Path,
    data: &[u8],
    store: &mut Store,
    skip_unsupported: bool,
) -> anyhow::Result<Loaded> {
    let mut r = moon_rdb::FileReader::new(data, skip_unsupported)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut loaded = Loaded {
        version: r.version(),
        ..Loaded::default()
    };
    let bar = crate::migrate::progress(path, data.len() as u64);
    let enc = moon_store::value::Encodings::default();
    let now = moon_shard::now_ms();
    loop {
        let item = r.next_item().map_err(|e| {
            let hint = match e.kind {
                moon_rdb::ErrorKind::Unsupported(_) if !skip_unsupported => {
                    " (nothing was written; --skip-unsupported imports the rest and lists what it leaves out)"
                }
                _ => "",
            };
            anyhow::anyhow!(
                "{}: {e}; stopped after {} keys{hint}",
                path.display(),
                loaded.keys
            )
        })?;
        let Some(item) = item else { break };
        if let Some(bar) = &bar {
            if loaded.keys.is_multiple_of(4096) {
                bar.set_position(r.offset() as u64);
            }
        }
        match item {
            moon_rdb::Item::Key(k) => {
                let db = usize::try_from(k.db)
                    .ok()
                    .filter(|&d| d < moon_store::MAX_DATABASES);
                let Some(db) = db else {
                    bail!(
                        "{}: key {:?} is in database {}, more than Moon holds ({})",
                        path.display(),
                        String::from_utf8_lossy(&k.key),
                        k.db,
                        moon_store::MAX_DATABASES
                    );
                };
                let at = k.expire_at.map_or(0, |at| at.max(1));
                if at != 0 && at <= now {
                    loaded.expired += 1;
                    continue;
                }
                let key_name = || String::from_utf8_lossy(&k.key).into_owned();
                let value = match Value::from_rdb(k.value, &enc) {
                    Ok(Some(v)) => v,
                    // Redis skips an empty collection when it loads one, too.
                    Ok(None) => continue,
                    Err(why) => bail!(
                        "{}: key {:?} in database {db}: {why}; stopped after {} keys",
                        path.display(),
                        key_name(),
                        loaded.keys
                    ),
                };
                store.in_db(db, |s| s.restore_entry(&k.key, value, at));
                loaded.keys += 1;
            }
            moon_rdb::Item::Function(code) => loaded.functions.push(code),
            moon_rdb::Item::Skipped { db, key, what } => {
                let line = if key.is_empty() {
                    format!("skipped {what}")
                } else {
                    format!(
                        "skipped key {:?} in database {db}: {what}",
                        String::from_utf8_lossy(&key)
                    )
                };
                eprintln!("{}: {line}", path.display());
                loaded.skipped.push(line);
            }
            moon_rdb::Item::Aux(..) | moon_rdb::Item::Db(_) => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(loaded)
}

/// Writes the libraries to `dir`'s functions file (fsynced, atomically), if there are any.
pub(crate) fn write_functions(dir: &Path, codes: &[Bytes]) -> anyhow::Result<()> {
    if codes.is_empty() {
        return Ok(());
    }
    let codes: Vec<std::sync::Arc<[u8]>> =
        codes.iter().map(|c| std::sync::Arc::from(&c[..])).collect();
    let path = dir.join(moon_store::functions::FILE);
    moon_manifest::fsio::commit_atomic(&path, &moon_store::functions::encode_file(&codes))
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
}

/// `import-rdb`.
pub fn run_import(
    file: &Path,
    dir: &Path,
    shards: usize,
    skip_unsupported: bool,
    dry_run: bool,
) -> anyhow::Result<i32> {
    crate::migrate::check_shards(shards)?;
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    moon_manifest::fsio::create_dir_all_durable(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let _lock = crate::lock::lock(dir)?;
    if moon_manifest::manifest_path(dir).exists() {
        bail!("{} already holds a Moon data directory; refusing to overwrite it (import into an empty directory)", dir.display());
    }
    let started = std::time::Instant::now();
    let mut store = Store::new(usize::MAX);
    let loaded = load_rdb(file, &data, &mut store, skip_unsupported)?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    println!(
        "read {} (RDB version {}): {} keys, {} already expired and left out, {} libraries, {} skipped; {:.1} MB/s, {:.0} keys/s",
        file.display(),
        loaded.version,
        loaded.keys,
        loaded.expired,
        loaded.functions.len(),
        loaded.skipped.len(),
        data.len() as f64 / 1e6 / secs,
        loaded.keys as f64 / secs,
    );
    if !dry_run {
        write_functions(dir, &loaded.functions)?;
    }
    let source = format!("Redis RDB {} ({} keys)", file.display(), loaded.keys);
    crate::migrate::write_layout(dir, &store, shards, dry_run, source, None, 0, 1)
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
