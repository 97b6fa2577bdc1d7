//! `moon-cli migrate-aof --dir D --shards N`: a legacy top-level (v1) directory, or a per-shard
//! (v2) directory with another shard count, becomes a v2 directory with N shards.
//!
//! How: every command of the old logs is replayed, in log order, into one in-memory keyspace
//! (a v1 log interleaves every shard's commands in the order the old server executed them; a
//! v2 layout keeps each key's whole history in one shard's log, and its cross-shard
//! transactions are applied only when complete, exactly as the server's recovery does). The
//! result is written as one snapshot base file per new shard, each key in the shard that owns
//! it under N (SPEC §1), expired keys left out. Replaying to the final state rather than
//! rerouting commands one by one keeps every multi-key command whole by construction and
//! needs no cross-shard records in the new logs.
//!
//! The switch is the manifest: new files are written under the next `seq`, beside the old ones
//! (`shard-<i>/moon.aof.<seq+1>.base.rdb`), fsynced, and only then is the v2 manifest written
//! atomically. A kill before that leaves the old manifest, which names only old files; after
//! it, the new layout is complete. Old files are deleted last. Running it again is safe: the
//! new files take a seq above every seq in the directory ([`PerShard::next_free_seq`]) and are
//! created new, so the stray files of an interrupted run are never written over (the server
//! removes them at its next start), and a directory already at N shards is left alone.
//!
//! The old layout is read by the server's own recovery (`moon_shard::recovery`), so what the
//! server would refuse to start from — a base missing or not as the manifest recorded it,
//! corruption — is refused here before anything is written, and its files are never deleted.

use std::path::Path;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use moon_manifest::{Manifest, PerShard};
use moon_proto::{Frame, Limits, RequestParser};
use moon_store::{Store, NO_EXPIRY_CHECK};

/// Bytes of a plain log handed to the parser at a time.
const PLAIN_CHUNK: usize = 4 << 20;

/// Replays a plain-RESP (v1) log into `store`. Returns the number of commands applied. The
/// log is read through a mapping fed to the parser a chunk at a time and given back behind
/// it: bounded memory whatever its size.
fn load_plain(path: &Path, store: &mut Store) -> anyhow::Result<u64> {
    let mapped = moon_aof::reader::MappedLog::open(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let data = mapped.bytes();
    if data.starts_with(b"REDIS") {
        bail!(
            "{} is an RDB file: not supported yet (only AOF-format bases)",
            path.display()
        );
    }
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut parser = RequestParser::new(Limits {
        max_bulk_len: usize::MAX >> 1,
        ..Limits::default()
    });
    let mut multi: Option<Vec<Vec<Bytes>>> = None;
    let mut applied: u64 = 0;
    let mut db: u64 = 0;
    let bar = crate::layout::progress(path, data.len() as u64);
    loop {
        if buf.len() < PLAIN_CHUNK && fed < data.len() {
            let n = PLAIN_CHUNK.min(data.len() - fed);
            buf.extend_from_slice(&data[fed..fed + n]);
            fed += n;
            mapped.release_before((fed - buf.len()) as u64);
        }
        let offset = fed - buf.len();
        if let Some(bar) = &bar {
            if applied.is_multiple_of(65536) {
                bar.set_position(offset as u64);
            }
        }
        if buf.first().is_some_and(|&b| b != b'*') {
            bail!("{} is not a RESP log at offset {offset}", path.display());
        }
        let cmd = match parser.next_request(&mut buf) {
            Ok(Some(cmd)) => cmd,
            Ok(None) if fed < data.len() => {
                // A command longer than what was fed: feed more.
                let n = PLAIN_CHUNK.max(buf.len()).min(data.len() - fed);
                buf.extend_from_slice(&data[fed..fed + n]);
                fed += n;
                continue;
            }
            Ok(None) => {
                if !buf.is_empty() {
                    eprintln!(
                        "{}: dropping an incomplete last command ({} bytes at offset {offset})",
                        path.display(),
                        buf.len()
                    );
                }
                break;
            }
            Err(e) => bail!("{} is damaged at offset {offset}: {e}", path.display()),
        };
        let name = cmd[0].to_ascii_uppercase();
        match &name[..] {
            b"SELECT" => {
                db = cmd
                    .get(1)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(u64::MAX);
            }
            b"MULTI" => multi = Some(Vec::new()),
            b"EXEC" => {
                for c in multi.take().unwrap_or_default() {
                    import(store, &c, db, applied, path, offset)?;
                    applied += 1;
                }
            }
            _ => match &mut multi {
                Some(q) => q.push(cmd),
                None => {
                    import(store, &cmd, db, applied, path, offset)?;
                    applied += 1;
                }
            },
        }
    }
    if multi.is_some() {
        eprintln!(
            "{}: dropping an unfinished MULTI at the end of the log",
            path.display()
        );
    }
    Ok(applied)
}

/// Applies one command of a Redis log, in the database the log last SELECTed. Nothing is
/// dropped silently: a command Moon does not have or one it refuses stops the import with how
/// many commands went in and the first that could not.
fn import(
    store: &mut Store,
    cmd: &[Bytes],
    db: u64,
    applied: u64,
    path: &Path,
    offset: usize,
) -> anyhow::Result<()> {
    let shown = || {
        cmd.iter()
            .take(4)
            .map(|a| String::from_utf8_lossy(&a[..a.len().min(64)]).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Redis's SELECT lasts until the next one; Moon's MOON.DB covers the next command only.
    if db != 0 {
        let selected = usize::try_from(db).is_ok_and(|d| {
            !store
                .execute(&moon_store::select_db(d), NO_EXPIRY_CHECK)
                .is_error()
        });
        if !selected {
            bail!(
                "{}: stopped after {applied} commands: `{}` (offset {offset}) writes to database {db}, more than Moon holds ({})",
                path.display(),
                shown(),
                moon_store::MAX_DATABASES
            );
        }
    }
    let reply = store.execute(cmd, NO_EXPIRY_CHECK);
    let refused = match &reply {
        Frame::Error(e) => Some(e.as_str()),
        Frame::StaticError(e) => Some(*e),
        _ => None,
    };
    if let Some(e) = refused {
        bail!(
            "{}: stopped after {applied} commands: `{}` (offset {offset}) cannot be imported: {e}",
            path.display(),
            shown()
        );
    }
    Ok(())
}

/// Replays a v2 layout into `store`, as the server's recovery does. Returns (records, max LSN).
fn load_v2(dir: &Path, m: &PerShard, merged: &mut Store) -> anyhow::Result<(u64, u64)> {
    let mut parts = Vec::new();
    for i in 0..m.shards() {
        let mut p = moon_shard::recovery::transaction_parts(&m.base_path(dir, i))?;
        p.extend(moon_shard::recovery::transaction_parts(
            &m.incr_path(dir, i),
        )?);
        parts.push(p);
    }
    let plan = moon_shard::recovery::recovery_plan(&parts);
    let (mut records, mut max_lsn) = (0u64, m.global_max_lsn());
    for i in 0..m.shards() {
        // Each shard's log into a store of its own, as that shard recovers it: a SWAPDB or
        // FLUSHDB in one shard's log must not act on keys another shard replayed. Keys are
        // disjoint across shards, so the stores then merge without conflict. The files are
        // checked and replayed by the server's own recovery (`moon_shard::recovery`): what
        // it would refuse to start from — a missing, short or foreign base, corruption — is
        // refused here too, before anything is written or deleted.
        let mut one = Store::new(usize::MAX);
        let files = moon_shard::recovery::ShardFiles::of(dir, m, i);
        let size = [&files.base, &files.incr]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|md| md.len())
            .sum();
        let bar = crate::layout::progress(&files.incr, size).inspect(|b| {
            b.set_style(indicatif::ProgressStyle::default_spinner());
            b.enable_steady_tick(std::time::Duration::from_millis(200));
        });
        let replayed = moon_shard::recovery::replay_shard(
            &mut one,
            &files,
            &plan.complete,
            plan.stop_at[i],
            false,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        for f in replayed {
            if let Some((offset, bytes)) = f.report.truncated {
                eprintln!(
                    "{}: a torn tail of {bytes} bytes at offset {offset} is left out (never acknowledged; the server drops it too)",
                    f.path.display()
                );
            }
            records += f.report.records;
            max_lsn = max_lsn.max(f.report.last_lsn);
        }
        for db in 0..one.databases() {
            let entries: Vec<_> = one
                .keyspace_of(db)
                .map(|ks| {
                    ks.iter()
                        .map(|(k, e)| (k.to_bytes(), e.value.clone(), e.expire_at))
                        .collect()
                })
                .unwrap_or_default();
            merged.in_db(db, |s| {
                for (k, v, at) in entries {
                    s.restore_entry(&k, v, at);
                }
            });
        }
    }
    Ok((records, max_lsn))
}

/// A Redis 7 multi-part AOF directory: its manifest's `file <name> seq <n> type <b|h|i>` lines,
/// in order. History files (`h`) are not part of the data set and are skipped.
fn redis_files(redis_dir: &Path) -> anyhow::Result<(std::path::PathBuf, Vec<(String, char)>)> {
    let aof = if redis_dir.join("appendonlydir").is_dir() {
        redis_dir.join("appendonlydir")
    } else {
        redis_dir.to_path_buf()
    };
    let manifest = std::fs::read_dir(&aof)
        .with_context(|| format!("reading {}", aof.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "manifest"))
        .with_context(|| format!("no Redis AOF manifest (*.manifest) in {}", aof.display()))?;
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let mut files = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        let field = |k: &str| {
            w.iter()
                .position(|x| *x == k)
                .and_then(|i| w.get(i + 1))
                .copied()
        };
        let (Some(name), Some(kind)) = (field("file"), field("type")) else {
            bail!(
                "{} line {}: not a Redis 7 manifest line: {line}",
                manifest.display(),
                n + 1
            );
        };
        if name.contains('/') || name.starts_with('"') {
            bail!(
                "{} line {}: unsupported file name {name}",
                manifest.display(),
                n + 1
            );
        }
        match kind {
            "b" | "i" => files.push((name.to_string(), kind.chars().next().unwrap_or('i'))),
            "h" => {}
            other => bail!(
                "{} line {}: unknown file type {other}",
                manifest.display(),
                n + 1
            ),
        }
    }
    // The base comes first, then the incr files in manifest order (Redis writes them by seq).
    files.sort_by_key(|(_, k)| *k != 'b');
    Ok((aof, files))
}

/// `--from-redis`: imports a Redis 7 AOF directory into a new Moon data directory.
pub fn run_from_redis(
    redis_dir: &Path,
    dir: &Path,
    shards: usize,
    dry_run: bool,
    skip_unsupported: bool,
) -> anyhow::Result<i32> {
    crate::layout::check_shards(shards)?;
    moon_manifest::fsio::create_dir_all_durable(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let _lock = crate::lock::lock(dir)?;
    if moon_manifest::manifest_path(dir).exists() {
        bail!("{} already holds a Moon data directory; refusing to overwrite it (import into an empty directory)", dir.display());
    }
    let (aof, files) = redis_files(redis_dir)?;
    // Records were accepted once: replay them whatever their size (as the server does).
    let mut store = Store::new(usize::MAX);
    let mut n = 0;
    let mut functions = Vec::new();
    for (name, kind) in &files {
        let path = aof.join(name);
        if !path.exists() && *kind != 'b' {
            continue;
        }
        let mapped = moon_aof::reader::MappedLog::open(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if !path.exists() {
            bail!("{}: the manifest's base file is missing", path.display());
        }
        if *kind == 'b' && mapped.bytes().starts_with(b"REDIS") {
            // An RDB base (`aof-use-rdb-preamble yes`, Redis's default).
            let loaded =
                crate::rdb_load::load_rdb(&path, &mapped, &mut store, skip_unsupported, true)?;
            n += loaded.keys;
            functions.extend(loaded.functions);
            continue;
        }
        n += load_plain(&path, &mut store)?;
    }
    if !dry_run {
        crate::rdb_load::write_functions(dir, &functions)?;
    }
    let source = format!(
        "Redis 7 AOF in {} ({} files, {n} keys and commands)",
        aof.display(),
        files.len()
    );
    crate::layout::write_layout(dir, &store, shards, dry_run, source, None, 0, n + 1)
}

/// Every key of the data directory `dir` (v1 or v2), recovered as the server would, and a
/// line saying what it was.
pub(crate) fn load_dir(dir: &Path) -> anyhow::Result<(Store, String)> {
    let aof = moon_manifest::aof_dir(dir);
    let manifest = moon_manifest::peek(dir)
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("no manifest in {}: no Moon data there", aof.display()))?;
    let mut store = Store::new(usize::MAX);
    let source = match &manifest {
        Manifest::V1(m) => {
            let mut n = 0;
            for name in m.base.iter().chain(std::iter::once(&m.incr)) {
                n += load_plain(&aof.join(name), &mut store)?;
            }
            format!("legacy top-level (v1) log, {n} commands")
        }
        Manifest::V2(m) => {
            let (records, _) = load_v2(dir, m, &mut store)?;
            format!(
                "per-shard (v2) layout with {} shards, {records} records",
                m.shards()
            )
        }
    };
    Ok((store, source))
}

pub fn run(dir: &Path, shards: usize, dry_run: bool) -> anyhow::Result<i32> {
    crate::layout::check_shards(shards)?;
    let _lock = crate::lock::lock(dir)?;
    let aof = moon_manifest::aof_dir(dir);
    let manifest = moon_manifest::peek(dir)
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("no manifest in {}: nothing to migrate", aof.display()))?;
    // Records were accepted once: replay them whatever their size (as the server does).
    let mut store = Store::new(usize::MAX);
    let (source, old_seq, first_lsn) = match &manifest {
        Manifest::V1(m) => {
            let mut n = 0;
            for name in m.base.iter().chain(std::iter::once(&m.incr)) {
                n += load_plain(&aof.join(name), &mut store)?;
            }
            (
                format!("legacy top-level (v1) log, {n} commands"),
                m.seq,
                n + 1,
            )
        }
        Manifest::V2(m) => {
            if m.shards() == shards {
                println!(
                    "{} already has the per-shard layout with {shards} shards: nothing to do",
                    aof.display()
                );
                return Ok(0);
            }
            let (records, max_lsn) = load_v2(dir, m, &mut store)?;
            (
                format!(
                    "per-shard (v2) layout with {} shards, {records} records",
                    m.shards()
                ),
                m.seq,
                max_lsn + 1,
            )
        }
    };
    crate::layout::write_layout(
        dir,
        &store,
        shards,
        dry_run,
        source,
        Some(&manifest),
        old_seq,
        first_lsn,
    )
}
