//! A shard's base: the snapshot a rewrite (BGREWRITEAOF) or `moon-cli` (migrate-aof,
//! import-rdb) cuts, which the shard's incr log continues. Written as an RDB file (the name
//! `moon.aof.<seq>.base.rdb` is SPEC §3's): one key after another in its typed form, so that
//! recovery builds each value directly instead of running the commands that once built it —
//! a string is one allocation, a hash one pass over its fields, nothing is parsed as RESP or
//! dispatched through the command table.
//!
//! Why RDB and not a format of Moon's own: `moon-rdb` already reads and writes it for
//! DUMP/RESTORE and import/export, checked byte for byte against Redis; it holds everything
//! Moon keeps (databases, key deadlines, hash field deadlines as RDB 12's `HASH_METADATA`,
//! streams with their groups and pending entries), is versioned (`REDIS0012`) and ends with a
//! CRC64; and a base can be inspected with Redis's own tools. One mechanism, one format.
//!
//! What a base holds, and what it does not: every key of the cut whose deadline had not
//! passed, with its deadline, in database order. No LSNs: a base stands for the LSNs up to the
//! manifest's `max_lsn` (the rewrite reserves one), and the incr follows them. One AUX field
//! is read back, as a hint: `moon-hash-key-N`, database N's hash key, in whose order its keys
//! were written ([`BaseWriter::hash_key`]); the loading keyspace takes the key, so the keys
//! come in its own hash order and are appended to its table, laid out once at the end, instead
//! of each being placed at a random home. A base without it (`moon-cli`'s) loads as well, key
//! by key. (`moon-ver` and `aof-base` are for people and Redis's tools.)
//!
//! Loading ([`load`]) keeps keys whose deadline passed since the cut, as replay does: the incr
//! logs their expiry where it happened, and until then they were visible to nothing but could
//! be there for a later record (see `docs/FORMATS.md`, "Exact replay"). A base that is not
//! what the manifest recorded (length, CRC-32), does not end right after its checksum, or
//! holds anything Moon cannot build is refused — it was complete and fsynced before the
//! manifest named it, so any of these means damage outside Moon.
//!
//! Bases written before this format (the rewrite form as LSN-framed records) still load: a
//! file that does not start with `REDIS` and four digits is read as records ([`is_rdb`]).

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use moon_manifest::BaseInfo;
use moon_store::keyspace::Key;
use moon_store::{Store, Value};

/// The RDB version bases are written in: the newest `moon-rdb` writes (hash field deadlines
/// need 12).
pub const VERSION: u32 = moon_rdb::MAX_VERSION;

/// Whether the file at `path` is an RDB file: `REDIS` and four digits. (A file of records
/// starts with its first LSN, little-endian: those nine bytes would need an LSN above
/// 3.5 × 10^18. Five bytes alone would not do: an LSN ≡ 357,711,496,530 mod 2^40 spells
/// `REDIS`.)
pub fn is_rdb(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|_| header.starts_with(b"REDIS") && header[5..].iter().all(u8::is_ascii_digit))
}

/// The AUX field naming database N's hash key is this and N; its value is the key's 16
/// bytes in hex ([`BaseWriter::hash_key`]).
const HASH_KEY_AUX: &str = "moon-hash-key-";

/// Database and hash key of an AUX field [`BaseWriter::hash_key`] wrote; None for any other
/// field, or one that does not read as such (the key only speeds a load up, so a field that
/// cannot be read is passed over, like every field a base does not know).
fn hash_key_field(name: &[u8], value: &[u8]) -> Option<(usize, [u8; 16])> {
    let db = std::str::from_utf8(name.strip_prefix(HASH_KEY_AUX.as_bytes())?).ok()?;
    let db = db.parse::<usize>().ok()?;
    if value.len() != 32 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut key = [0u8; 16];
    for (byte, pair) in key.iter_mut().zip(value.chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some((db, key))
}

/// What the writer hands out: the bytes `moon-rdb`'s writer produced so far.
#[derive(Clone, Default)]
struct Sink(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes a base, key by key, into chunks the caller writes where it likes (the server's
/// rewrite writes them through glommio between keys, `moon-cli` through a plain file). Keys
/// must come in database order; each database's key counts are given up front (the loader
/// sizes its tables from them).
pub struct BaseWriter {
    w: moon_rdb::FileWriter<Sink>,
    sink: Sink,
    crc: crc32fast::Hasher,
    bytes: u64,
    db: Option<usize>,
    /// (keys, keys with a deadline) per database.
    counts: Vec<(u64, u64)>,
}

impl BaseWriter {
    /// `counts[db]`: how many keys (and how many with a deadline) database `db` will get.
    pub fn new(counts: Vec<(u64, u64)>) -> std::io::Result<BaseWriter> {
        let sink = Sink::default();
        let mut w = moon_rdb::FileWriter::new(sink.clone(), VERSION).without_compression();
        w.aux(b"moon-ver", env!("CARGO_PKG_VERSION").as_bytes())?;
        w.aux(b"aof-base", b"1")?;
        Ok(BaseWriter {
            w,
            sink,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            db: None,
            counts,
        })
    }

    /// Records that database `db`'s keys come in the hash order of `key` (a keyspace's hash
    /// key, `moon_store::keyspace::Keyspace::hash_key`): the loader's keyspace takes it and
    /// appends the keys instead of placing each ([`load`]). Before the first key only; for a
    /// database the counts give no key, nothing is written.
    pub fn hash_key(&mut self, db: usize, key: [u8; 16]) -> std::io::Result<()> {
        if self.db.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a base's hash keys come before its keys",
            ));
        }
        if self.counts.get(db).is_none_or(|&(keys, _)| keys == 0) {
            return Ok(());
        }
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.w
            .aux(format!("{HASH_KEY_AUX}{db}").as_bytes(), hex.as_bytes())
    }

    /// Adds one key (`expire_at`: unix ms, 0 for none).
    pub fn key(
        &mut self,
        db: usize,
        key: &[u8],
        value: &Value,
        expire_at: u64,
    ) -> std::io::Result<()> {
        if self.db != Some(db) {
            if self.db.is_some_and(|d| d > db) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "base keys out of database order",
                ));
            }
            let (keys, expires) = self.counts.get(db).copied().unwrap_or((0, 0));
            self.w.select_db(db as u64, keys, expires)?;
            self.db = Some(db);
        }
        let at = (expire_at != 0).then_some(expire_at);
        self.w.key(key, &value.to_rdb(), at)
    }

    /// The bytes ready to be written, once there are at least `min` of them.
    pub fn take(&mut self, min: usize) -> Option<Vec<u8>> {
        let mut held = self.sink.0.borrow_mut();
        if held.len() < min.max(1) {
            return None;
        }
        let chunk = std::mem::take(&mut *held);
        self.crc.update(&chunk);
        self.bytes += chunk.len() as u64;
        Some(chunk)
    }

    /// Ends the file (`EOF` and its CRC64): the last bytes to write, and what the manifest
    /// records of the whole file once they are written.
    pub fn finish(self) -> std::io::Result<(Vec<u8>, BaseInfo)> {
        let BaseWriter {
            w,
            sink,
            mut crc,
            bytes,
            ..
        } = self;
        w.finish()?;
        let last = std::mem::take(&mut *sink.0.borrow_mut());
        crc.update(&last);
        let info = BaseInfo {
            bytes: bytes + last.len() as u64,
            crc32: crc.finalize(),
        };
        Ok((last, info))
    }
}

/// A base written from a snapshot of a serving store, a step at a time: the rewrite cuts
/// ([`BaseCut::begin`], which only marks every keyspace), then writes a few thousand keys per
/// step ([`BaseCut::step`]) while the shard goes on serving between steps. Every key comes out
/// as it was at the cut (`moon_store::keyspace`'s `cut` module says how), in its keyspace's
/// hash order, which the base records ([`BaseWriter::hash_key`]).
pub struct BaseCut {
    w: BaseWriter,
    /// The databases that had keys at the cut, in order, and how many of them are written.
    dbs: Vec<usize>,
    written: usize,
}

impl BaseCut {
    /// Starts a snapshot of `store` as it is now; keys whose deadline is at or before `now`
    /// are left out. [`BaseCut::abandon`] undoes it if the base is not written to its end.
    pub fn begin(store: &mut Store, now: u64) -> std::io::Result<BaseCut> {
        let started = store.begin_cut(now);
        let mut counts = Vec::new();
        for &(db, size, _) in &started {
            if counts.len() <= db {
                counts.resize(db + 1, (0, 0));
            }
            counts[db] = (size.keys, size.expires);
        }
        let mut w = BaseWriter::new(counts)?;
        for &(db, _, key) in &started {
            w.hash_key(db, key)?;
        }
        Ok(BaseCut {
            w,
            dbs: started.iter().map(|&(db, _, _)| db).collect(),
            written: 0,
        })
    }

    /// How many keys the snapshot holds in all, as counted at the cut.
    pub fn keys(&self) -> u64 {
        self.w.counts.iter().map(|&(keys, _)| keys).sum()
    }

    /// Encodes about `budget` more keys; true once every key is. An error if a key cannot be
    /// encoded, or if the store's keyspaces were replaced since the cut (rebuilt from the log:
    /// the snapshot is gone).
    pub fn step(&mut self, store: &mut Store, budget: usize) -> std::io::Result<bool> {
        let Some(&db) = self.dbs.get(self.written) else {
            return Ok(true);
        };
        let mut failed = None;
        let w = &mut self.w;
        let done = store.cut_step(db, budget, |key, value, at| {
            if failed.is_none() {
                failed = w.key(db, key, value, at).err();
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        match done {
            None => Err(std::io::Error::other(format!(
                "database {db}'s keyspace was rebuilt from the log during the rewrite"
            ))),
            Some(false) => Ok(false),
            Some(true) => {
                self.written += 1;
                Ok(self.written == self.dbs.len())
            }
        }
    }

    /// The bytes ready to be written (see [`BaseWriter::take`]).
    pub fn take(&mut self, min: usize) -> Option<Vec<u8>> {
        self.w.take(min)
    }

    /// Ends the file once [`BaseCut::step`] said every key is written (see
    /// [`BaseWriter::finish`]).
    pub fn finish(self) -> std::io::Result<(Vec<u8>, BaseInfo)> {
        self.w.finish()
    }

    /// Drops the snapshot's state in `store` (a rewrite that ends without this base).
    pub fn abandon(self, store: &mut Store) {
        store.end_cut();
    }
}

/// Counts per database of `(db, expire_at)` pairs, for [`BaseWriter::new`].
pub fn counts(keys: impl Iterator<Item = (usize, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (db, at) in keys {
        if out.len() <= db {
            out.resize(db + 1, (0, 0));
        }
        out[db].0 += 1;
        out[db].1 += u64::from(at != 0);
    }
    out
}

/// What loading a base did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub keys: u64,
    pub bytes: u64,
}

/// Loads the RDB base at `path` into `store`. `Err` says what is wrong with the file.
///
/// Keys go in [`LOAD_AHEAD`] behind the reader: each one's place in the keyspace is asked for
/// from memory when it is read, and found in cache when it is inserted (as replay does with
/// records). The order of insertion does not change.
pub fn load(store: &mut Store, path: &Path) -> Result<Loaded, String> {
    let loaded = load_keys(store, path);
    // Whatever was loaded, its deadlines are indexed: on damage too, a shard serves what it
    // read, and its keys must expire.
    store.settle_loaded();
    loaded
}

/// [`load`] without indexing the loaded keys' deadlines.
fn load_keys(store: &mut Store, path: &Path) -> Result<Loaded, String> {
    let enc = store.encodings();
    let mut sized = None;
    // Keys are copied out of the file as they are read: the mapping behind the reader may be
    // given back while they wait.
    let mut ahead: VecDeque<(usize, Key, Value, u64)> = VecDeque::with_capacity(LOAD_AHEAD + 1);
    let put = |store: &mut Store, (db, key, value, at): (usize, Key, Value, u64)| {
        if store.load_entry(db, &key, value, at) {
            Ok(())
        } else {
            Err(format!(
                "holds key {:?} twice in database {db}",
                String::from_utf8_lossy(&key)
            ))
        }
    };
    // A key found twice stops the load there, as it always did; damage further on leaves
    // every key read before it in the store (a shard serves reads from what it read).
    let mut refused = false;
    let loaded = visit(path, &enc, |seen| {
        let (db, key, value, at, hint) = match seen {
            Seen::Key(db, key, value, at, hint) => (db, key, value, at, hint),
            Seen::HashKey(db, hash_key) => {
                // Taken only by an empty keyspace: keys loaded before it keep their places.
                store.adopt_hash_key(db, hash_key);
                return Ok(());
            }
        };
        // Sized once per database from the file's hint: no rehashing as keys come.
        if let Some((hint_db, keys)) = hint.filter(|h| sized != Some(*h)) {
            sized = Some((hint_db, keys));
            if let Ok(d) = usize::try_from(hint_db) {
                store.reserve_keys(d, usize::try_from(keys).unwrap_or(0));
            }
        }
        store.prefetch_key(db, key);
        ahead.push_back((db, Key::copy_from(key), value, at));
        if ahead.len() > LOAD_AHEAD {
            if let Some(entry) = ahead.pop_front() {
                let put = put(store, entry);
                refused = put.is_err();
                return put;
            }
        }
        Ok(())
    });
    if !refused {
        for entry in ahead {
            put(store, entry)?;
        }
    }
    loaded
}

/// How many keys [`load`] reads ahead of the one it inserts.
const LOAD_AHEAD: usize = 8;

/// Reads the RDB base at `path` as [`load`] does, building each value and dropping it
/// (`moon-cli check-aof`: the whole file checked in bounded memory). Duplicate keys are not
/// looked for (that would hold every key).
pub fn verify(path: &Path) -> Result<Loaded, String> {
    let enc = moon_store::value::Encodings::default();
    visit(path, &enc, |_| Ok(()))
}

/// What [`visit`] hands over, in the file's order.
enum Seen<'a> {
    /// Database, key, its value built, deadline (0: none), and the database's size hint.
    Key(usize, &'a [u8], Value, u64, Option<(u64, u64)>),
    /// Database N's hash key ([`BaseWriter::hash_key`]).
    HashKey(usize, [u8; 16]),
}

/// Reads the base at `path` through a mapping given back as the reader goes (bounded memory
/// for any size), hands every key to `f` built as a value, and checks that the file ends
/// right after its checksum. (The file's CRC-32 against the manifest is recovery's check,
/// made before: a foreign file is named as such, not by where its bytes stop parsing.)
fn visit(
    path: &Path,
    enc: &moon_store::value::Encodings,
    mut f: impl FnMut(Seen<'_>) -> Result<(), String>,
) -> Result<Loaded, String> {
    let mapped =
        moon_aof::reader::MappedLog::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let data = mapped.bytes();
    let mut r = moon_rdb::FileReader::new(data, false)
        .map_err(|e| format!("is not a readable RDB file: {e}"))?;
    let mut loaded = Loaded::default();
    let mut counted = 0usize;
    loop {
        // Nothing before the item about to be read is borrowed anymore: what the last one lent
        // has been copied into the store.
        mapped.release_before(r.offset() as u64);
        let item = r
            .next_lent()
            .map_err(|e| format!("is damaged after {} keys: {e}", loaded.keys))?;
        let at = r.offset();
        // Loading progress (INFO `loading_loaded_bytes`), as replay counts records.
        if at - counted >= 1 << 20 || item.is_none() {
            moon_aof::reader::REPLAYED_BYTES
                .fetch_add((at - counted) as u64, std::sync::atomic::Ordering::Relaxed);
            counted = at;
        }
        let Some(item) = item else { break };
        crate::load_delay::wait();
        match item {
            moon_rdb::Item::Key(k) => {
                let db = usize::try_from(k.db)
                    .ok()
                    .filter(|&d| d < moon_store::MAX_DATABASES)
                    .ok_or_else(|| format!("names database {}, more than Moon holds", k.db))?;
                let name = || String::from_utf8_lossy(&k.key).into_owned();
                let value = match Value::from_rdb(k.value, enc) {
                    Ok(Some(v)) => v,
                    Ok(None) => return Err(format!("holds key {:?} with an empty value", name())),
                    Err(why) => {
                        return Err(format!(
                            "holds key {:?} that cannot be built: {why}",
                            name()
                        ))
                    }
                };
                // A deadline of 0 ms is long passed (0 means none in the keyspace).
                f(Seen::Key(
                    db,
                    &k.key,
                    value,
                    k.expire_at.map_or(0, |at| at.max(1)),
                    r.size_hint(),
                ))?;
                loaded.keys += 1;
            }
            moon_rdb::Item::Aux(name, value) => {
                let hash_key =
                    hash_key_field(&name, &value).filter(|(db, _)| *db < moon_store::MAX_DATABASES);
                if let Some((db, key)) = hash_key {
                    f(Seen::HashKey(db, key))?;
                }
            }
            moon_rdb::Item::Db(_) => {}
            moon_rdb::Item::Function(_) | moon_rdb::Item::Skipped { .. } => {
                return Err("holds function or module data, which a base never does".into())
            }
        }
    }
    let end = r.end().unwrap_or(data.len());
    if end != data.len() {
        return Err(format!(
            "has {} bytes after its checksum (offset {end})",
            data.len() - end
        ));
    }
    loaded.bytes = data.len() as u64;
    Ok(loaded)
}

/// A base's bytes, for tests and tools: every key of `store` not expired at `now`.
pub fn encode(store: &Store, now: u64) -> std::io::Result<(Vec<u8>, BaseInfo)> {
    let live = |db: usize| {
        store.keyspace_of(db).into_iter().flat_map(move |ks| {
            ks.iter()
                .filter(move |(_, e)| e.expire_at == 0 || e.expire_at > now)
                .map(move |(k, e)| (db, k.to_bytes(), &e.value, e.expire_at))
        })
    };
    let all: Vec<(usize, Bytes, &Value, u64)> = (0..store.databases()).flat_map(live).collect();
    let mut w = BaseWriter::new(counts(all.iter().map(|(db, _, _, at)| (*db, *at))))?;
    for db in 0..store.databases() {
        if let Some(ks) = store.keyspace_of(db).filter(|ks| !ks.is_empty()) {
            w.hash_key(db, ks.hash_key())?;
        }
    }
    let mut out = Vec::new();
    for (db, key, value, at) in &all {
        w.key(*db, key, value, *at)?;
        if let Some(chunk) = w.take(1 << 20) {
            out.extend(chunk);
        }
    }
    let (last, info) = w.finish()?;
    out.extend(last);
    Ok((out, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moon_store::NO_EXPIRY_CHECK;

    /// A fixed clock: deadlines are decades ahead of it or long past, never today's date.
    const NOW: u64 = 1_700_000_000_000;
    const FAR: u64 = 4_000_000_000_000;

    fn run(store: &mut Store, db: usize, cmd: &str) {
        let args: Vec<Bytes> = cmd
            .split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let reply = store
            .in_db(db, |s| s.execute(&args, NOW))
            .expect("database in range");
        assert!(
            !matches!(
                reply,
                moon_proto::Frame::Error(_) | moon_proto::Frame::StaticError(_)
            ),
            "{cmd}: {reply:?}"
        );
    }

    /// A store holding every type Moon keeps, in three databases, with key and field
    /// deadlines, a big list, an integer set, a stream with a group, consumers and pending
    /// entries, and an HLL.
    fn every_type() -> Store {
        let mut s = small();
        let big: Vec<String> = (0..3000).map(|i| format!("e{i}")).collect();
        run(&mut s, 0, &format!("RPUSH big {}", big.join(" ")));
        s
    }

    /// [`every_type`] without its big list (small enough to damage at every offset).
    fn small() -> Store {
        let mut s = Store::default();
        for cmd in [
            "SET s hello",
            "SET n 12345",
            &format!("SET ttl v PXAT {FAR}"),
            "RPUSH l a b c",
            "SADD ints 1 2 3",
            "SADD strs x y",
            "ZADD z 1.5 a -2 b inf c",
            "HSET h f1 v1 f2 v2",
            &format!("HPEXPIREAT h {FAR} FIELDS 1 f1"),
            "PFADD hll a b c",
            "XADD st 1-1 f v",
            "XADD st 2-1 g w",
            "XGROUP CREATE st grp 0",
            "XREADGROUP GROUP grp alice COUNT 1 STREAMS st >",
            "XGROUP CREATECONSUMER st grp bob",
            // Emptied, then its last id set below the largest deleted one (review finding:
            // such a base was refused at load, after the rewrite had deleted the old files).
            "XADD sd 5-0 a b",
            "XDEL sd 5-0",
            "XSETID sd 3-0",
        ] {
            run(&mut s, 0, cmd);
        }
        run(&mut s, 3, "SET in3 three");
        run(&mut s, 3, "ZADD z3 1 m");
        run(&mut s, 9, "HSET h9 a b");
        s
    }

    fn write(dir: &Path, store: &Store, now: u64) -> (std::path::PathBuf, BaseInfo) {
        let (bytes, info) = encode(store, now).expect("encode");
        assert_eq!(bytes.len() as u64, info.bytes);
        assert_eq!(crc32fast::hash(&bytes), info.crc32);
        let path = dir.join("moon.aof.1.base.rdb");
        std::fs::write(&path, &bytes).expect("write base");
        (path, info)
    }

    /// Each database's hash key goes into the base and comes back with its keys: the loaded
    /// keyspaces hash as the written ones did (a SCAN cursor means the same key after the
    /// restart) and hold their keys in the same order.
    #[test]
    fn a_base_carries_each_databases_hash_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = every_type();
        let (path, _) = write(dir.path(), &live, NOW);
        let mut loaded = Store::default();
        loaded.set_databases(16);
        load(&mut loaded, &path).expect("load");
        let order = |s: &Store, db: usize| -> Vec<Bytes> {
            let ks = s.keyspace_of(db).expect("database");
            ks.iter().map(|(k, _)| k.to_bytes()).collect()
        };
        for db in [0, 3, 9] {
            assert_eq!(loaded.hash_key(db), live.hash_key(db), "database {db}");
            assert_eq!(order(&loaded, db), order(&live, db), "database {db}");
        }
        assert_ne!(loaded.hash_key(1), live.hash_key(1));
    }

    /// A hash key field that does not read as one (not hex, the wrong length, a database
    /// Moon does not hold) is passed over: the keys load, key by key; one for a database
    /// the store does not have makes none. The writer writes none for a database without
    /// keys.
    #[test]
    fn a_hash_key_field_that_does_not_read_is_passed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = BaseWriter::new(vec![(2, 0)]).expect("writer");
        for (name, value) in [
            ("moon-hash-key-0", "zz".repeat(16)),
            ("moon-hash-key-0", "+f".repeat(16)),
            ("moon-hash-key-0", "00".repeat(15)),
            ("moon-hash-key-x", "00".repeat(16)),
            ("moon-hash-key-99999", "00".repeat(16)),
            ("moon-hash-key-1023", "00".repeat(16)),
        ] {
            w.w.aux(name.as_bytes(), value.as_bytes()).expect("aux");
        }
        w.hash_key(1, [2; 16])
            .expect("no key in database 1: nothing written");
        let v = Value::Str(moon_store::value::Str::copy_from(b"v"));
        w.key(0, b"a", &v, 0).expect("key");
        w.key(0, b"b", &v, 0).expect("key");
        assert!(w.hash_key(0, [1; 16]).is_err(), "a hash key after the keys");
        let mut bytes = w.take(0).unwrap_or_default();
        bytes.extend(w.finish().expect("finish").0);
        assert!(!String::from_utf8_lossy(&bytes).contains(&"02".repeat(16)));
        let path = dir.path().join("moon.aof.1.base.rdb");
        std::fs::write(&path, &bytes).expect("write");
        let mut loaded = Store::default();
        let before = loaded.hash_key(0);
        assert_eq!(load(&mut loaded, &path).expect("load").keys, 2);
        assert_eq!(loaded.hash_key(0), before);
        assert_eq!(loaded.keyspace().len(), 2);
        assert_eq!(loaded.databases(), 1);
    }

    #[test]
    fn a_base_loads_back_to_the_same_keyspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = every_type();
        let (path, info) = write(dir.path(), &live, NOW);
        assert!(is_rdb(&path));
        let mut loaded = Store::default();
        let got = load(&mut loaded, &path).expect("load");
        assert_eq!(got.keys, live.canonical_dump().len() as u64);
        assert_eq!(got.bytes, info.bytes);
        assert_eq!(loaded.canonical_dump(), live.canonical_dump());
        assert_eq!(verify(&path).expect("verify"), got);
    }

    #[test]
    fn keys_expired_at_the_cut_are_left_out_and_later_deadlines_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut live = Store::default();
        run(&mut live, 0, &format!("SET soon v PXAT {}", NOW + 10));
        run(&mut live, 0, &format!("SET later v PXAT {}", NOW + 1000));
        // Cut after `soon` passed, before `later` did.
        let (path, _) = write(dir.path(), &live, NOW + 500);
        let mut loaded = Store::default();
        load(&mut loaded, &path).expect("load");
        let keys: Vec<_> = loaded
            .canonical_dump()
            .into_iter()
            .map(|k| (k.1, k.3))
            .collect();
        assert_eq!(keys, vec![(Bytes::from_static(b"later"), NOW + 1000)]);
        // Loaded with its deadline even once it has passed: the incr logs its expiry.
        assert!(loaded
            .keyspace_of(0)
            .and_then(|ks| ks.peek(b"later", NO_EXPIRY_CHECK))
            .is_some());
    }

    /// Loaded keys' deadlines are indexed for active expiry in every database, after a
    /// damaged load too (a shard serves what it read): each key with a deadline is reclaimed
    /// once it passes, and only those.
    #[test]
    fn loaded_deadlines_are_indexed_for_active_expiry() {
        for damaged in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut live = Store::default();
            for i in 0..40 {
                run(&mut live, 0, &format!("SET k{i} v PXAT {}", NOW + 1000 + i));
                run(&mut live, 0, &format!("SET p{i} v"));
            }
            run(&mut live, 5, &format!("SET d5 v PXAT {}", NOW + 2000));
            let (path, _) = write(dir.path(), &live, NOW);
            if damaged {
                let mut bytes = std::fs::read(&path).expect("read");
                bytes.extend_from_slice(b"trailing");
                std::fs::write(&path, &bytes).expect("write");
            }
            let mut loaded = Store::default();
            loaded.set_databases(16);
            assert_eq!(load(&mut loaded, &path).is_err(), damaged);
            let volatile = |s: &Store, db| s.keyspace_of(db).map_or(0, |ks| ks.expires_count());
            assert_eq!((volatile(&loaded, 0), volatile(&loaded, 5)), (40, 1));
            assert_eq!(loaded.expire_cycle(NOW + 1019, 1000), 20);
            assert_eq!(loaded.expire_cycle(NOW + 5000, 1000), 21);
            let left = |s: &Store, db| s.keyspace_of(db).map_or(0, |ks| ks.len());
            assert_eq!((left(&loaded, 0), left(&loaded, 5)), (40, 0));
        }
    }

    /// Damage after the last key (bytes past the checksum) fails the load, but every key
    /// read before it is in the store, as a shard that serves from what it read expects:
    /// none is left behind in the loader's look-ahead.
    #[test]
    fn a_base_damaged_at_its_end_leaves_every_key_read_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = every_type();
        let (path, _) = write(dir.path(), &live, NOW);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(b"trailing");
        std::fs::write(&path, &bytes).expect("write");
        let mut loaded = Store::default();
        let why = load(&mut loaded, &path).expect_err("trailing bytes refused");
        assert!(why.contains("after its checksum"), "{why}");
        assert_eq!(loaded.canonical_dump(), live.canonical_dump());
    }

    #[test]
    fn a_damaged_base_is_refused_wherever_the_damage_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = write(dir.path(), &small(), NOW);
        let good = std::fs::read(&path).expect("read");
        // Every byte flipped in turn (past the magic, which decides the format), every cut.
        for at in 5..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x41;
            std::fs::write(&path, &bad).expect("write");
            assert!(
                load(&mut Store::default(), &path).is_err(),
                "a flipped byte at {at} loaded"
            );
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).expect("write");
            assert!(
                load(&mut Store::default(), &path).is_err(),
                "cut at {len} loaded"
            );
        }
        let mut longer = good.clone();
        longer.extend_from_slice(b"\0");
        std::fs::write(&path, &longer).expect("write");
        let err = load(&mut Store::default(), &path).expect_err("trailing byte");
        assert!(err.contains("after its checksum"), "{err}");
    }

    /// A base written before bases were RDB files (the rewrite form as LSN-framed records)
    /// still loads, through the same recovery entry point, and its incr follows it.
    #[test]
    fn a_records_base_still_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = every_type();
        let mut records = Vec::new();
        let mut lsn = 1;
        for (db, key, value, at) in live.canonical_dump().iter().map(|(db, k, _, at)| {
            let ks = live.keyspace_of(*db).expect("db");
            let e = ks.peek(k, NO_EXPIRY_CHECK).expect("key");
            (*db, k.clone(), e.value.clone(), *at)
        }) {
            let cmds = moon_store::in_db(
                db,
                value.rewrite_commands(&key, at, moon_store::Chunk::REWRITE),
            );
            lsn += moon_aof::append_unit(lsn, &cmds, moon_aof::record_target(), &mut records)
                .expect("unit");
        }
        let base = dir.path().join("moon.aof.1.base.rdb");
        std::fs::write(&base, &records).expect("write");
        assert!(!is_rdb(&base));
        let incr = dir.path().join("moon.aof.1.incr.aof");
        let mut tail = Vec::new();
        let set = vec![vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"after"),
            Bytes::from_static(b"base"),
        ]];
        moon_aof::append_unit(lsn, &set, moon_aof::record_target(), &mut tail).expect("unit");
        std::fs::write(&incr, &tail).expect("write");
        let files = crate::recovery::ShardFiles {
            base,
            incr,
            max_lsn: lsn - 1,
            base_info: Some(BaseInfo {
                bytes: records.len() as u64,
                crc32: crc32fast::hash(&records),
            }),
            incr_checked: 0,
        };
        let mut loaded = Store::default();
        crate::recovery::replay_shard(&mut loaded, &files, &Default::default(), None, false)
            .expect("replay");
        let mut expected = live;
        run(&mut expected, 0, "SET after base");
        assert_eq!(loaded.canonical_dump(), expected.canonical_dump());
    }

    /// An RDB base goes through recovery as a records base does: checked against the
    /// manifest's length and CRC-32, then the incr after it.
    #[test]
    fn recovery_checks_an_rdb_base_against_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = every_type();
        let (base, info) = write(dir.path(), &live, NOW);
        let incr = dir.path().join("moon.aof.1.incr.aof");
        std::fs::write(&incr, b"").expect("write");
        let mut files = crate::recovery::ShardFiles {
            base,
            incr,
            max_lsn: 7,
            base_info: Some(info),
            incr_checked: 0,
        };
        let mut loaded = Store::default();
        let report =
            crate::recovery::replay_shard(&mut loaded, &files, &Default::default(), None, false)
                .expect("replay");
        assert_eq!(report[0].report.records, live.canonical_dump().len() as u64);
        assert_eq!(loaded.canonical_dump(), live.canonical_dump());
        // Another base under the same name (same length, other bytes) is refused.
        files.base_info = Some(BaseInfo {
            bytes: info.bytes,
            crc32: info.crc32 ^ 1,
        });
        let err = crate::recovery::replay_shard(
            &mut Store::default(),
            &files,
            &Default::default(),
            None,
            false,
        )
        .expect_err("foreign base");
        assert!(
            err.to_string().contains("does not match the manifest"),
            "{err}"
        );
        assert!(crate::recovery::verify_base(&files).is_err());
    }

    /// Review finding: a log whose first LSN spells `REDIS` in its first five bytes
    /// (little-endian) is still a log — its transaction parts are found and it replays as
    /// records — because an RDB file is told by `REDIS` and four digits.
    #[test]
    fn a_log_whose_first_lsn_spells_redis_is_still_a_log() {
        let lsn = 357_711_496_530u64;
        assert_eq!(&lsn.to_le_bytes()[..5], b"REDIS");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("moon.aof.1.incr.aof");
        let mut log = Vec::new();
        let part = vec![vec![
            Bytes::from_static(b"MOON.TXPART"),
            Bytes::from_static(b"t1"),
            Bytes::from_static(b"0,1"),
        ]];
        moon_aof::append_unit(lsn, &part, moon_aof::record_target(), &mut log).expect("unit");
        let set = vec![vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k"),
            Bytes::from_static(b"v"),
        ]];
        moon_aof::append_unit(lsn + 1, &set, moon_aof::record_target(), &mut log).expect("unit");
        std::fs::write(&path, &log).expect("write");
        assert!(!is_rdb(&path));
        let parts = crate::recovery::transaction_parts(&path).expect("parts");
        assert_eq!(parts.len(), 1, "{parts:?}");
        assert_eq!(parts[0].lsn, lsn);
    }
}
