//! Loading a Redis RDB into a store: every key converted to Moon's form in its database,
//! expired keys left out, function libraries kept for the functions file, values Moon cannot
//! hold either stopping the load (with key and type) or listed as skipped.

use std::path::Path;

use anyhow::bail;
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
/// `preamble`: the RDB is an AOF's base, whose incr files are replayed next — keys whose
/// deadline has passed are kept with it then (a later PERSIST may save them, as in Redis,
/// which drops them only when loading a plain dump); the layout leaves out what is still
/// expired at the end.
pub(crate) fn load_rdb(
    path: &Path,
    file: &moon_aof::reader::MappedLog,
    store: &mut Store,
    skip_unsupported: bool,
    preamble: bool,
) -> anyhow::Result<Loaded> {
    // Read through the mapping, given back behind the reader: bounded memory for any size.
    let data = file.bytes();
    let mut r = moon_rdb::FileReader::new(data, skip_unsupported)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut loaded = Loaded {
        version: r.version(),
        ..Loaded::default()
    };
    let bar = crate::layout::progress(path, data.len() as u64);
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
        file.release_before(r.offset() as u64);
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
                // A deadline past i64::MAX is negative to Redis: long passed.
                let at = k.expire_at.map_or(0, |at| at.clamp(1, i64::MAX as u64));
                if k.expire_at.is_some_and(|at| at > i64::MAX as u64)
                    || (at != 0 && at <= now && !preamble)
                {
                    loaded.expired += 1;
                    continue;
                }
                let duplicate = store
                    .keyspace_of(db)
                    .is_some_and(|ks| ks.peek(&k.key, moon_store::NO_EXPIRY_CHECK).is_some());
                if duplicate {
                    bail!(
                        "{}: key {:?} appears twice in database {db} (Redis refuses such a file too: \"Duplicated key found in RDB file\")",
                        path.display(),
                        String::from_utf8_lossy(&k.key)
                    );
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

/// Writes the libraries to `dir`'s functions file (fsynced, atomically), if there are any,
/// once they load together in Moon's Lua as the server will load them at startup (a library
/// that does not would stop the server). Written before the layout's manifest: a crash
/// between leaves no Moon directory, and the import can simply run again.
pub(crate) fn write_functions(dir: &Path, codes: &[Bytes]) -> anyhow::Result<()> {
    if codes.is_empty() {
        return Ok(());
    }
    let codes = moon_store::functions::plan_restore(codes, true, false).map_err(|e| {
        let why = match e {
            moon_proto::Frame::Error(t) => t,
            moon_proto::Frame::StaticError(t) => t.to_string(),
            other => format!("{other:?}"),
        };
        anyhow::anyhow!("a function library does not load in Moon: {why}; nothing was written")
    })?;
    let path = dir.join(moon_store::functions::FILE);
    moon_manifest::fsio::commit_atomic(&path, &moon_store::functions::encode_file(&codes))
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
}
