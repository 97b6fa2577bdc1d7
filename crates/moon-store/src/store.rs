//! Command execution against one shard's keyspace.
//!
//! This file holds what every command shares: the `Store` (keyspace, log of effects, WATCH
//! versions, memory limit), `execute` (the memory check, then the family's handler, then the
//! expirations it caused), and the logging helpers every change goes through. The commands
//! live in one file per family, chosen by the command table's group: `string.rs`, `keys.rs`
//! (commands on keys of any type), `hash.rs`, `set.rs`.

use std::collections::HashMap;

use bytes::Bytes;
use moon_proto::Frame;

use crate::command::CommandSpec;
use crate::evict::MemoryLimit;
use crate::keyspace::{Keyspace, Removal, Value};
use crate::notify::{class, KeyEvent, NotifyFlags};
use crate::reply::{self, err};
use crate::tracking::{Invalidation, Reader, Tracking};

/// At most this many keys, or this many bytes of keys and values, are evicted before one
/// command (see `Store::make_room`).
pub const EVICTION_BATCH: (usize, usize) = (1024, 16 << 20);

/// Counters reported by INFO.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub keys: u64,
    pub expires: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub expired_keys: u64,
    pub evicted_keys: u64,
    /// The memory account (see `crate::evict`): the keyspaces plus the clients' buffers.
    pub used_memory: u64,
    /// Of which the shard's share of the client connections' buffers.
    pub client_buffers: u64,
    pub maxmemory: u64,
    /// Changes logged since the process started (INFO's `rdb_changes_since_last_save`).
    pub changes: u64,
}

/// The most databases a store holds (`databases` is at most this).
pub const MAX_DATABASES: usize = 1024;

/// What a script carries from its start to its commands (set when it starts: its memory state
/// in `Store::begin_command`, its caller in `Store::run_row`; a paused script keeps it, since
/// nothing else runs in the store between its slices).
#[derive(Default)]
pub(crate) struct ScriptContext {
    /// It found the keyspace over `maxmemory` with no room to be made (Redis's
    /// `pre_command_oom_state`): its first command that may grow memory is refused, unless it
    /// declared `allow-oom` (see `Store::eval`).
    pub(crate) over_memory: bool,
    /// The last error one of its commands got (see `StoreHost::call`).
    pub(crate) last_error: Option<Box<str>>,
    /// Its caller, if that client tracks reads (CLIENT TRACKING): the script's writes are the
    /// caller's own (NOLOOP), and once the script runs a read-only command the keys it declared
    /// are remembered for the caller, as Redis remembers its caller's keys.
    pub(crate) reader: Option<Reader>,
    /// Those declared keys (copied, kept only for a tracking caller), and whether they were
    /// remembered yet.
    pub(crate) keys: Vec<Bytes>,
    pub(crate) keys_remembered: bool,
}

/// One shard's keyspaces (one per database) plus what executing commands against them needs.
///
/// Databases: `ks` is the keyspace of the database `db` that the command now running uses;
/// `dbs[db]` is an empty placeholder meanwhile and every other `dbs[i]` holds database `i`.
/// Selecting swaps them (O(1)). A command runs in database 0 unless `MOON.DB n` immediately
/// precedes it — in a batch from the router and in the log alike (each effect in database
/// n > 0 is logged after its own `MOON.DB n`), so a record means the same wherever it is cut.
pub struct Store {
    ks: Keyspace,
    db: usize,
    dbs: Vec<Keyspace>,
    /// `MOON.DB` ran: the next command runs in `db`, then database 0 is selected again.
    db_pending: bool,
    /// `databases`: what commands may name while serving (replay may name more).
    configured_dbs: usize,
    hits: u64,
    /// The last command was refused before its handler ran ([`Store::take_refused`]).
    pub(crate) refused: bool,
    misses: u64,
    /// `proto-max-bulk-len`: APPEND and SETRANGE refuse to grow a string beyond it.
    max_string_len: usize,
    /// When true, every write that changed the keyspace is recorded in `log`.
    record_writes: bool,
    log: Vec<Vec<Bytes>>,
    /// Effects logged since the process started: one a changed key (a `DEL a b` of two keys
    /// is two), as Redis counts its `dirty`; not replay's (it logs nothing).
    changes: u64,
    random_seed: u64,
    /// This store's shard and the number of shards: a script may touch only keys of this
    /// shard (`store/script.rs`). (0, 1) until the shard says otherwise.
    pub(crate) place: (usize, usize),
    /// A busy script paused between two slices (`store/script.rs`), and whether the command
    /// running now may pause one (only the shard's plain batches may: see `moon-shard`).
    pub(crate) paused: Option<paused::PausedScript>,
    /// The user of the script running now, whose permissions its commands need (ACL).
    pub(crate) script_user: Option<crate::call::ScriptUser>,
    /// The client whose command runs now (`Call::client`): a script's writes on a read-only
    /// replica depend on it ([`crate::Writes`]).
    pub(crate) script_client: u64,
    /// A script's `redis.call` runs now (SORT BY a constant then sorts a set, as in Redis).
    pub(crate) in_script: bool,
    /// What the script running now (or paused) was started with, for its commands.
    pub(crate) script: ScriptContext,
    may_pause: bool,
    /// WATCHed keys of this shard: (number of watchers, version). A key's version moves to
    /// `watch_clock` whenever a command changes it, so EXEC can tell.
    /// Keyed by database (two bytes, big-endian) and key.
    watched: HashMap<Bytes, (u32, u64)>,
    watch_clock: u64,
    /// Keys blocked clients wait on (BLPOP...), keyed as `watched`, with their number of
    /// waiters; and those a command changed since [`Store::take_ready`] (the shard then wakes
    /// their first waiter).
    blocked: HashMap<Bytes, u32>,
    /// A set (review finding: a Vec searched for each changed key was quadratic).
    ready: indexmap::IndexSet<Bytes>,
    memory_limit: MemoryLimit,
    /// Thresholds of the compact encodings of hashes and sets.
    encodings: crate::value::Encodings,
    /// Off while a transaction's commands run: its room was made once, before it started
    /// ([`Store::make_room_now`]), as Redis checks EXEC and not the commands inside it.
    memory_checks: bool,
    /// Whether the shard may be over its memory limit: a write ran (or the limit changed)
    /// since room was last made. A read makes room only then: reads do not grow the
    /// keyspace, and summing every database's account before each one would cost a cache
    /// line per database.
    room_unknown: bool,
    /// `notify-keyspace-events`, and the events of the commands run since the last
    /// [`Store::take_events`] (collected only while some are on).
    notify: NotifyFlags,
    events: Vec<KeyEvent>,
    /// The client command running now (its name names the events of its effects; its key
    /// positions the keys of the effects it logs as sent), and where its events start in
    /// `events`.
    spec: Option<&'static CommandSpec>,
    events_mark: usize,
    /// Collections a command emptied (and so removed): a `del` event each after its own.
    emptied: Vec<Bytes>,
    /// CLIENT TRACKING: who read what here, and the tracking client whose command runs now
    /// (it is the writer its NOLOOP readers are not told about).
    tracking: Tracking,
    writer: Option<u64>,
    /// The event every effect of the running command announces ([`crate::call::Call::event`]).
    batch_event: Option<&'static str>,
    /// SET/SETEX/PSETEX given a deadline (an `expire` event follows the `set`).
    sets_deadline: bool,
}

/// What WATCH saw of a key: EXEC proceeds only if the key is unchanged since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchToken {
    version: u64,
    existed: bool,
    /// The database the key was watched in.
    db: u16,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(512 * 1024 * 1024)
    }
}

pub use crate::args::parse_i64;

/// A reply, or the error reply that stopped it (the family modules' handlers).
fn either(r: Result<Frame, Frame>) -> Frame {
    r.unwrap_or_else(|e| e)
}
use crate::args::{eq, int_bytes, parse_f64};

/// Expiry argument forms of SET and GETEX.
#[derive(Clone, Copy, PartialEq)]
enum Expiry {
    Keep,
    None,
    At(u64),
    Persist,
}

impl Store {
    pub fn new(max_string_len: usize) -> Self {
        Store {
            ks: Keyspace::default(),
            db: 0,
            dbs: vec![Keyspace::default()],
            db_pending: false,
            configured_dbs: 1,
            hits: 0,
            refused: false,
            misses: 0,
            max_string_len,
            record_writes: false,
            log: Vec::new(),
            changes: 0,
            random_seed: 0x9E37_79B9_7F4A_7C15,
            place: (0, 1),
            paused: None,
            script_user: None,
            script_client: 0,
            in_script: false,
            script: ScriptContext::default(),
            may_pause: false,
            watched: HashMap::new(),
            blocked: HashMap::new(),
            ready: indexmap::IndexSet::new(),
            watch_clock: 0,
            memory_limit: MemoryLimit::default(),
            encodings: crate::value::Encodings::default(),
            memory_checks: true,
            room_unknown: true,
            notify: NotifyFlags::default(),
            events: Vec::new(),
            spec: None,
            events_mark: 0,
            emptied: Vec::new(),
            tracking: Tracking::default(),
            writer: None,
            batch_event: None,
            sets_deadline: false,
        }
    }

    /// Invalidations owed to tracking clients since the last call.
    pub fn take_invalidations(&mut self) -> Vec<Invalidation> {
        self.tracking.take_pending()
    }

    pub fn has_invalidations(&self) -> bool {
        self.tracking.has_pending()
    }

    /// CLIENT TRACKING ON BCAST: `reader` hears of every change of a key under `prefixes`.
    pub fn track_broadcast(&mut self, reader: Reader, prefixes: Vec<Bytes>) {
        self.tracking.broadcast(reader, prefixes);
    }

    /// CLIENT TRACKING ON again with NOLOOP changed: the keys `client` read follow.
    pub fn track_noloop(&mut self, client: u64, noloop: bool) {
        self.tracking.set_noloop(client, noloop);
    }

    /// `reader` read `key`: a cross-shard script's declared keys, remembered for its caller on
    /// the shard that owns each once the script reads.
    pub fn track_read(&mut self, reader: Reader, key: &[u8]) {
        self.tracking.remember(reader, key);
    }

    /// CLIENT TRACKING OFF, or the client left.
    pub fn forget_tracking(&mut self, client: u64) {
        self.tracking.forget(client);
    }

    /// Turns keyspace notifications on or off (`notify-keyspace-events`).
    pub fn set_notify(&mut self, flags: NotifyFlags) {
        self.notify = flags;
        if flags.is_off() {
            self.events.clear();
        }
    }

    /// The keyspace events since the last call, in the order they happened.
    pub fn take_events(&mut self) -> Vec<KeyEvent> {
        std::mem::take(&mut self.events)
    }

    /// A script's PUBLISH: `message` on `channel`, delivered with the events of the command
    /// (after its effects are safe in the log).
    pub(crate) fn publish(&mut self, channel: Bytes, message: Bytes) {
        self.events.push(KeyEvent {
            class: 0,
            event: "publish",
            db: 0,
            key: channel,
            message: Some(message),
        });
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    fn event(&mut self, class: u16, event: &'static str, db: usize, key: Bytes) {
        if !self.notify.wants(class) {
            return;
        }
        let e = KeyEvent {
            class,
            event,
            db,
            key,
            message: None,
        };
        // A value written in chunks (a copied hash's HSETs) is one event.
        if self.events.len() > self.events_mark && self.events.last() == Some(&e) {
            return;
        }
        self.events.push(e);
    }

    /// The name of the command running now ("" between commands).
    fn current(&self) -> &'static str {
        self.spec.map_or("", |s| s.name)
    }

    /// The keys one logged effect changes: for the running command logged as sent (`own`),
    /// the keys its spec names; for an effect the store derived (`SET k`, `DEL k`,
    /// `PEXPIREAT k`, `HSET k f v`, `HDEL k f`...), the one key after its name. No effect
    /// looks a command up by name.
    fn changed_keys<'p>(&self, own: bool, parts: &[&'p [u8]]) -> Vec<&'p [u8]> {
        match (own, self.spec) {
            (true, Some(spec)) => spec.keys(parts).copied().collect(),
            _ => parts.get(1).copied().into_iter().collect(),
        }
    }

    /// Names the events of one logged effect (see [`crate::notify`]): keys created first,
    /// then the effect's own.
    fn note_effect(&mut self, own: bool, parts: &[&[u8]]) {
        if self.notify.is_off() || parts.is_empty() {
            return;
        }
        let db = self.db;
        for key in self.ks.take_created() {
            self.event(class::NEW, "new", db, key);
        }
        // Only keys are copied (an effect's values may be large).
        let key_of = |k: &[u8]| Bytes::copy_from_slice(k);
        if let Some(event) = self.batch_event {
            let class = if event.starts_with('z') || event.starts_with("geo") {
                class::ZSET
            } else if event == "sortstore" {
                class::LIST
            } else if event == "pfadd" {
                class::STRING
            } else if event.ends_with("store") {
                class::SET
            } else {
                class::GENERIC
            };
            for key in self.changed_keys(own, parts) {
                let e = KeyEvent {
                    class,
                    event,
                    db,
                    key: key_of(key),
                    message: None,
                };
                // Once per key for the whole call (a DEL, then the value's chunks).
                if !self.events.contains(&e) {
                    self.event(class, event, db, e.key);
                }
            }
            return;
        }
        if let Some(list) = crate::notify::keyed_events(parts) {
            for (mut class, mut event, i, in_db) in list {
                let Some(key) = parts.get(i) else { continue };
                // A *STORE (or BITOP) whose result is empty removed its destination.
                let stores = event.ends_with("store") || parts[0].eq_ignore_ascii_case(b"bitop");
                if stores && !self.ks.contains(key, 0) {
                    (class, event) = (class::GENERIC, "del");
                }
                self.event(class, event, in_db.unwrap_or(db), key_of(key));
            }
            return;
        }
        let Some((class, event)) = crate::notify::effect_event(self.current(), parts[0]) else {
            return;
        };
        for key in self.changed_keys(own, parts) {
            self.event(class, event, db, key_of(key));
        }
        // SET with a deadline: a `set` and an `expire`, as Redis sends them.
        let with_deadline = parts[0].eq_ignore_ascii_case(b"SET")
            && parts
                .get(3)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"PXAT"))
            && self.sets_deadline;
        if with_deadline {
            self.event(class::GENERIC, "expire", db, key_of(parts[1]));
        }
    }

    /// After a command: a `del` for each collection it emptied.
    fn note_emptied(&mut self) {
        let db = self.db;
        for key in std::mem::take(&mut self.emptied) {
            self.event(class::GENERIC, "del", db, key);
        }
    }

    /// Turns recording of writes for the AOF on or off.
    pub fn set_record_writes(&mut self, on: bool) {
        self.record_writes = on;
    }

    pub fn set_max_string_len(&mut self, len: usize) {
        self.max_string_len = len;
    }

    pub fn max_string_len(&self) -> usize {
        self.max_string_len
    }

    /// Takes the writes recorded since the last call, in execution order.
    pub fn take_log(&mut self) -> Vec<Vec<Bytes>> {
        std::mem::take(&mut self.log)
    }

    /// The writes recorded since the last [`Store::clear_log`] (without giving up the buffer).
    pub fn logged(&self) -> &[Vec<Bytes>] {
        &self.log
    }

    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// The keyspace of database 0.
    pub fn keyspace(&self) -> &Keyspace {
        self.keyspace_of(0).unwrap_or(&self.ks)
    }

    /// The keyspace of database `db`, if the store has it.
    pub fn keyspace_of(&self, db: usize) -> Option<&Keyspace> {
        if db == self.db {
            Some(&self.ks)
        } else {
            self.dbs.get(db)
        }
    }

    /// How many databases the store holds (grown by `MOON.DB`, at least `databases`).
    pub fn databases(&self) -> usize {
        self.dbs.len()
    }

    /// `databases` as configured.
    pub fn configured_databases(&self) -> usize {
        self.configured_dbs
    }

    /// Makes room for `n` databases (`databases` at startup).
    pub fn set_databases(&mut self, n: usize) {
        let n = n.clamp(1, MAX_DATABASES);
        self.configured_dbs = n;
        if self.dbs.len() < n {
            self.dbs.resize_with(n, Keyspace::default);
        }
    }

    /// Which shard of how many this store is (scripts may touch only this shard's keys).
    pub fn set_place(&mut self, shard: usize, shards: usize) {
        self.place = (shard, shards.max(1));
    }

    /// Selects database `db` for what runs next; false if it is out of range.
    pub fn select(&mut self, db: usize) -> bool {
        if db >= MAX_DATABASES {
            return false;
        }
        if db == self.db {
            return true;
        }
        if db >= self.dbs.len() {
            self.dbs.resize_with(db + 1, Keyspace::default);
        }
        std::mem::swap(&mut self.ks, &mut self.dbs[self.db]);
        std::mem::swap(&mut self.ks, &mut self.dbs[db]);
        self.db = db;
        true
    }

    /// Runs `f` with database `db` selected, then database 0 again. `None`: out of range.
    pub fn in_db<R>(&mut self, db: usize, f: impl FnOnce(&mut Store) -> R) -> Option<R> {
        if !self.select(db) {
            return None;
        }
        let r = f(self);
        self.select(0);
        Some(r)
    }

    /// Swaps two databases (SWAPDB). The selected database keeps its number: its clients see
    /// the other one's keys from now on, as in Redis.
    fn swap_dbs(&mut self, a: usize, b: usize) {
        let needed = a.max(b) + 1;
        if self.dbs.len() < needed {
            self.dbs.resize_with(needed, Keyspace::default);
        }
        // Put the selected keyspace back in its slot, swap the slots, take the slot again.
        std::mem::swap(&mut self.ks, &mut self.dbs[self.db]);
        self.dbs.swap(a, b);
        std::mem::swap(&mut self.ks, &mut self.dbs[self.db]);
    }

    /// Back in database 0 if a `MOON.DB` is still pending: its command was refused before it
    /// ran (MISCONF), and nothing after it may run in that database.
    pub fn drop_pending_db(&mut self) {
        self.batch_event = None;
        if std::mem::take(&mut self.db_pending) {
            self.select(0);
        }
    }

    /// Loads one key of a snapshot into database `db`: false, and nothing changed, if the
    /// key is there already (or `db` is out of range).
    pub fn load_entry(&mut self, db: usize, key: &[u8], value: Value, expire_at: u64) -> bool {
        if db == self.db {
            return self.ks.insert_loaded(key, value, expire_at);
        }
        self.in_db(db, |s| s.ks.insert_loaded(key, value, expire_at))
            .unwrap_or(false)
    }

    /// After the last [`Store::load_entry`]: the loaded keys' deadlines indexed in every
    /// database (see [`Keyspace::settle_loaded`]).
    pub fn settle_loaded(&mut self) {
        self.ks.settle_loaded();
        for ks in &mut self.dbs {
            ks.settle_loaded();
        }
    }

    /// A hint that `key` will be looked up or inserted in database `db` soon (see
    /// [`Keyspace::prefetch`]).
    pub fn prefetch_key(&self, db: usize, key: &[u8]) {
        if let Some(ks) = self.keyspace_of(db) {
            ks.prefetch(key);
        }
    }

    /// The hash key of database `db`'s keyspace (see [`Keyspace::hash_key`]).
    pub fn hash_key(&self, db: usize) -> Option<[u8; 16]> {
        self.keyspace_of(db).map(Keyspace::hash_key)
    }

    /// Database `db`'s keyspace takes `key` as its hash key if it is empty (a base's, before
    /// its keys load: see [`Keyspace::adopt_hash_key`]). False if it did not, or if the store
    /// has no such database (a key alone makes none).
    pub fn adopt_hash_key(&mut self, db: usize, key: [u8; 16]) -> bool {
        if db == self.db {
            return self.ks.adopt_hash_key(key);
        }
        self.dbs
            .get_mut(db)
            .is_some_and(|ks| ks.adopt_hash_key(key))
    }

    /// Starts a snapshot of every database as it is now (see `keyspace::cut`), leaving out
    /// keys whose deadline is at or before `at`: for each database with keys, its number, the
    /// sizes the snapshot will have and its keyspace's hash key (the order the keys will come
    /// in). [`Store::cut_step`] hands the keys out; the store serves meanwhile.
    pub fn begin_cut(&mut self, at: u64) -> Vec<(usize, crate::keyspace::CutSize, [u8; 16])> {
        let mut started = Vec::new();
        for db in 0..self.databases() {
            let ks = if db == self.db {
                &mut self.ks
            } else {
                &mut self.dbs[db]
            };
            if ks.is_empty() {
                ks.end_cut();
                continue;
            }
            let size = ks.begin_cut(db, at);
            started.push((db, size, ks.hash_key()));
        }
        started
    }

    /// The next keys of database `db`'s snapshot (see [`Keyspace::cut_step`]): `Some(true)`
    /// once it has handed them all out, `None` if no keyspace holds that snapshot any more
    /// (the keyspaces were rebuilt from the log meanwhile).
    pub fn cut_step(
        &mut self,
        db: usize,
        budget: usize,
        emit: impl FnMut(&[u8], &Value, u64),
    ) -> Option<bool> {
        let ks = std::iter::once(&mut self.ks)
            .chain(self.dbs.iter_mut())
            .find(|ks| ks.cut_db() == Some(db))?;
        Some(ks.cut_step(budget, emit))
    }

    /// Drops every snapshot in progress (a rewrite that failed).
    pub fn end_cut(&mut self) {
        self.ks.end_cut();
        for ks in &mut self.dbs {
            ks.end_cut();
        }
    }

    /// Room for `additional` more keys in database `db` (a snapshot's size hint).
    pub fn reserve_keys(&mut self, db: usize, additional: usize) {
        if db == self.db {
            self.ks.reserve(additional);
        } else {
            self.in_db(db, |s| s.ks.reserve(additional));
        }
    }

    /// Puts an entry as it is into the selected database (merging replayed keyspaces).
    pub fn restore_entry(&mut self, key: &[u8], value: Value, expire_at: u64) {
        self.ks.insert(key, value, expire_at);
    }

    /// Bytes held by every database's keyspace and the shard's clients' buffers (see
    /// `crate::evict`).
    fn used_memory(&self) -> usize {
        crate::evict::client_buffers(self.place.1) + self.keyspaces_memory()
    }

    /// Bytes held by every database's keyspace.
    fn keyspaces_memory(&self) -> usize {
        self.ks.used_memory()
            + self
                .dbs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.db)
                .map(|(_, k)| k.used_memory())
                .sum::<usize>()
    }

    /// Takes `other`'s keyspace in place of this one (a shard whose log failed goes back to
    /// what its log holds). Every WATCHed key counts as modified.
    pub fn replace_keyspace(&mut self, mut other: Store) {
        other.select(0);
        self.select(0);
        self.ks = other.ks;
        self.dbs = other.dbs;
        self.log.clear();
        self.touch_dbs(&[]);
    }

    /// The memory account now (INFO's `used_memory` share of this shard).
    pub fn memory_account(&self) -> u64 {
        self.used_memory() as u64
    }

    /// Whether the keyspace holds more than its `maxmemory` share (no eviction: a check for a
    /// write inside a transaction, where evicting would log deletions outside its part).
    pub fn over_memory_limit(&self) -> bool {
        self.memory_limit.max != 0 && self.used_memory() > self.memory_limit.max
    }

    pub fn stats(&self) -> StoreStats {
        let all = || (0..self.dbs.len()).filter_map(|d| self.keyspace_of(d));
        let clients = crate::evict::client_buffers(self.place.1);
        StoreStats {
            keys: all().map(|k| k.len() as u64).sum(),
            expires: all().map(|k| k.expires_count() as u64).sum(),
            keyspace_hits: self.hits,
            keyspace_misses: self.misses,
            expired_keys: all().map(|k| k.expired_keys).sum(),
            evicted_keys: all().map(|k| k.evicted_keys).sum(),
            // The clients' share read once: it changes under other threads, and used_memory
            // must hold the very figure client_buffers reports (INFO subtracts it).
            used_memory: (self.keyspaces_memory() + clients) as u64,
            client_buffers: clients as u64,
            maxmemory: self.memory_limit.max as u64,
            changes: self.changes,
        }
    }

    /// DEBUG DIGEST: a checksum of every key in every database (name, value, deadline),
    /// the same on two stores holding the same data whatever their encodings or insertion
    /// order (per-key SHA-1s XORed together); all zeros for an empty store.
    pub fn digest(&self) -> [u8; 20] {
        use sha1::Digest;
        let mut all = [0u8; 20];
        for db in 0..self.dbs.len() {
            let Some(ks) = self.keyspace_of(db) else {
                continue;
            };
            for (key, e) in ks.iter() {
                let mut h = sha1::Sha1::new();
                h.update((db as u64).to_le_bytes());
                h.update((key.len() as u64).to_le_bytes());
                h.update(&key[..]);
                h.update(e.expire_at.to_le_bytes());
                h.update(e.value.canonical().as_bytes());
                for (a, b) in all.iter_mut().zip(h.finalize()) {
                    *a ^= b;
                }
            }
        }
        all
    }

    /// CONFIG RESETSTAT: hits, misses, expired and evicted keys back to 0.
    pub fn reset_stats(&mut self) {
        self.hits = 0;
        self.misses = 0;
        self.ks.expired_keys = 0;
        self.ks.evicted_keys = 0;
        for ks in &mut self.dbs {
            ks.expired_keys = 0;
            ks.evicted_keys = 0;
        }
    }

    /// Every database's entries as sorted (database, key, canonical value, deadline), expired
    /// but present ones included: what the replay checkers compare.
    pub fn canonical_dump(&self) -> Vec<(usize, Bytes, String, u64)> {
        let mut v: Vec<_> = (0..self.dbs.len())
            .filter_map(|db| self.keyspace_of(db).map(|ks| (db, ks)))
            .flat_map(|(db, ks)| {
                ks.iter()
                    .map(move |(k, e)| (db, k.to_bytes(), e.value.canonical(), e.expire_at))
            })
            .collect();
        v.sort();
        v
    }

    /// (database, keys, keys with a deadline) of every database holding keys (INFO keyspace).
    pub fn db_stats(&self) -> Vec<(usize, u64, u64)> {
        (0..self.dbs.len())
            .filter_map(|d| self.keyspace_of(d).map(|k| (d, k)))
            .filter(|(_, k)| !k.is_empty())
            .map(|(d, k)| (d, k.len() as u64, k.expires_count() as u64))
            .collect()
    }

    /// This shard's share of `maxmemory` and the eviction policy. Never set while replaying:
    /// replay evicts nothing by itself, every eviction is in the log.
    pub fn set_memory_limit(&mut self, limit: MemoryLimit) {
        self.memory_limit = limit;
        self.room_unknown = true;
    }

    pub fn encodings(&self) -> crate::value::Encodings {
        self.encodings
    }

    /// The thresholds of the compact encodings (`hash-max-listpack-*`, `set-max-*`).
    pub fn set_encodings(&mut self, encodings: crate::value::Encodings) {
        self.encodings = encodings;
    }

    /// A fresh seed for a random choice (RANDOMKEY, SPOP, ...). A choice changes nothing by
    /// itself; one that changes the keyspace is logged as its effect.
    fn next_seed(&mut self, now: u64) -> u64 {
        self.random_seed = self
            .random_seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(now | 1);
        self.random_seed
    }

    /// Before a transaction that may grow memory: makes room as for one command, with the
    /// removals in [`Store::logged`] (to be logged before the transaction's own records).
    /// False: the transaction must be refused with OOM.
    pub fn make_room_now(&mut self, now: u64) -> bool {
        self.ks.set_clock(now);
        let ok = self.make_room(now);
        self.log_expired();
        ok
    }

    /// Runs `f` with the per-command memory check off, then restores it: no command `f` runs
    /// makes room or is refused OOM. For what must not evict (a transaction's commands, room
    /// having been made before it started; reads on a failed log, whose deletions could not
    /// be logged; an inspection such as DEBUG OBJECT).
    pub fn without_memory_checks<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let checks = std::mem::replace(&mut self.memory_checks, false);
        let r = f(self);
        self.memory_checks = checks;
        r
    }

    /// Before a command that may grow memory: removes keys as the policy allows until the
    /// keyspace is within its limit. False if it is still over (the command gets OOM) —
    /// unless it made progress and stopped at [`EVICTION_BATCH`]: then the command runs, and the
    /// next ones go on evicting (Redis's eviction also works in slices). The bound keeps one
    /// command from evicting a whole keyspace at once, which would stall the shard and put
    /// every removal into that one command's record.
    fn make_room(&mut self, now: u64) -> bool {
        let limit = self.memory_limit;
        // A replica holds what its primary holds (Redis's `replica-ignore-maxmemory yes`):
        // evicting or refusing on its own would make it diverge. While clients are paused
        // nothing changes either (Redis's `isSafeToPerformEvictions`): the writes are held, and
        // a read that may make room (a read-only script) must not evict under a failover.
        if limit.max == 0 || crate::keyspace::is_replica() || crate::keyspace::changes_held(now) {
            return true;
        }
        if self.used_memory() <= limit.max {
            self.room_unknown = false;
            return true; // what every command finds but one in a burst
        }
        let (mut keys, mut bytes) = (0usize, 0usize);
        let home = self.db;
        // Start where the memory is: the database holding the most (sampling every database
        // at once, as Redis's eviction pool does, is left for later).
        let mut db = (0..self.dbs.len())
            .max_by_key(|&d| self.keyspace_of(d).map_or(0, |k| k.used_memory()))
            .unwrap_or(home);
        self.select(db);
        let mut tried = 0;
        let mut exhausted = false;
        while self.used_memory() > limit.max {
            if keys >= EVICTION_BATCH.0 || bytes >= EVICTION_BATCH.1 {
                break;
            }
            let before = self.used_memory();
            if self.ks.evict_one(&limit, now) {
                keys += 1;
                bytes += before.saturating_sub(self.used_memory());
                continue;
            }
            // Nothing more may go here: the next database (its evictions logged under it).
            tried += 1;
            if tried >= self.dbs.len() {
                exhausted = true;
                break;
            }
            self.log_expired();
            db = (db + 1) % self.dbs.len();
            self.select(db);
        }
        self.log_expired();
        self.select(home);
        let under = self.used_memory() <= limit.max;
        self.room_unknown = !under;
        under || (keys > 0 && !exhausted)
    }

    /// Active expiry: reclaims up to `budget` keys whose deadline has passed; each removal is
    /// logged as a `DEL` (see [`Store::logged`]).
    pub fn expire_cycle(&mut self, now: u64, budget: usize) -> usize {
        let mut n = 0;
        for db in 0..self.dbs.len() {
            if n >= budget {
                break;
            }
            self.select(db);
            n += self.ks.expire_cycle(now, budget - n);
            self.log_expired();
        }
        self.select(0);
        n
    }

    /// `key` in the selected database, as WATCH versions are kept.
    fn watch_key(&self, key: &[u8]) -> Vec<u8> {
        watch_key_in(self.db, key)
    }

    /// Starts watching `key` in the selected database (WATCH): returns what EXEC will compare
    /// against.
    pub fn watch(&mut self, key: &[u8], now: u64) -> WatchToken {
        let existed = self.ks.peek(key, now).is_some();
        let wk = self.watch_key(key);
        let slot = self.watched.entry(Bytes::from(wk)).or_insert((0, 0));
        slot.0 += 1;
        WatchToken {
            version: slot.1,
            existed,
            db: self.db as u16,
        }
    }

    /// One more blocked client waits on `key` of database `db`: a command that changes it
    /// makes it ready ([`Store::take_ready`]).
    pub fn block_key(&mut self, db: usize, key: &[u8]) {
        *self
            .blocked
            .entry(Bytes::from(watch_key_in(db, key)))
            .or_insert(0) += 1;
    }

    /// One blocked client fewer waits on `key` of database `db`.
    pub fn unblock_key(&mut self, db: usize, key: &[u8]) {
        let wk = watch_key_in(db, key);
        if let Some(n) = self.blocked.get_mut(&wk[..]) {
            *n -= 1;
            if *n == 0 {
                self.blocked.remove(&wk[..]);
            }
        }
    }

    /// The blocked-on keys changed since the last call, as `(database, key)`.
    pub fn take_ready(&mut self) -> Vec<(usize, Bytes)> {
        std::mem::take(&mut self.ready)
            .into_iter()
            .map(|wk| (u16::from_be_bytes([wk[0], wk[1]]) as usize, wk.slice(2..)))
            .collect()
    }

    /// The type of `key` in database `db` now, without changing anything.
    pub fn type_in(&self, db: usize, key: &[u8], now: u64) -> Option<&'static str> {
        self.keyspace_of(db)
            .and_then(|k| k.peek(key, now))
            .map(|e| e.value.type_name())
    }

    /// Stops one watcher of `key` (UNWATCH, EXEC, DISCARD, a closed connection).
    pub fn unwatch(&mut self, key: &[u8], token: WatchToken) {
        let wk = watch_key_in(token.db as usize, key);
        if let Some(slot) = self.watched.get_mut(&wk[..]) {
            slot.0 -= 1;
            if slot.0 == 0 {
                self.watched.remove(&wk[..]);
            }
        }
    }

    /// Whether `key` is as WATCH saw it: not changed by any command, and not expired (or
    /// created) since.
    pub fn watch_intact(&mut self, key: &[u8], token: WatchToken, now: u64) -> bool {
        let wk = watch_key_in(token.db as usize, key);
        let version = self.watched.get(&wk[..]).map_or(u64::MAX, |s| s.1);
        let exists = self
            .keyspace_of(token.db as usize)
            .is_some_and(|k| k.peek(key, now).is_some());
        version == token.version && exists == token.existed
    }

    /// Every watched key of databases `dbs` (all if empty) counts as modified (FLUSHDB,
    /// FLUSHALL, SWAPDB).
    fn touch_dbs(&mut self, dbs: &[usize]) {
        self.watch_clock += 1;
        let clock = self.watch_clock;
        for (k, slot) in self.watched.iter_mut() {
            let db = u16::from_be_bytes([k[0], k[1]]) as usize;
            if dbs.is_empty() || dbs.contains(&db) {
                slot.1 = clock;
            }
        }
    }

    /// Marks the keys a logged effect changes as modified, for WATCH, and owes them to their
    /// tracking readers. Every change to the keyspace passes through one of the `log_*`
    /// functions, so this sees them all (flushes through [`Store::log_flush`]).
    fn touch(&mut self, own: bool, parts: &[&[u8]]) {
        if self.watched.is_empty() && self.tracking.is_empty() && self.blocked.is_empty() {
            return;
        }
        let keys = self.changed_keys(own, parts);
        for key in &keys {
            self.tracking.changed(key, self.writer);
        }
        if !self.blocked.is_empty() {
            for key in &keys {
                let wk = self.watch_key(key);
                if self.blocked.contains_key(&wk[..]) {
                    self.ready.insert(Bytes::from(wk));
                }
            }
        }
        if self.watched.is_empty() {
            return;
        }
        self.watch_clock += 1;
        let clock = self.watch_clock;
        for key in keys {
            let wk = self.watch_key(key);
            if let Some(slot) = self.watched.get_mut(&wk[..]) {
                slot.1 = clock;
            }
        }
    }

    /// Logs the keyspace's expirations since the last record as `DEL`s, so that each sits in
    /// the log exactly where it happened: before the write that follows it. Every `log_*`
    /// function calls this first, and [`Store::execute`] once more at the end (a read may
    /// expire a key too). Replay runs without expiry and gets every removal from the log.
    fn log_expired(&mut self) {
        if !self.ks.has_expired() {
            return;
        }
        for removal in self.ks.take_expired() {
            if !self.notify.is_off() {
                let db = self.db;
                match &removal {
                    Removal::Key(k) => self.event(class::EXPIRED, "expired", db, k.clone()),
                    Removal::Evicted(k) => self.event(class::EVICTED, "evicted", db, k.clone()),
                    Removal::Field(k, _) => self.event(class::HASH, "hexpired", db, k.clone()),
                }
            }
            // (A field's removal reaches the tracking table through `touch` below.)
            if let (false, Removal::Key(k) | Removal::Evicted(k)) =
                (self.tracking.is_empty(), &removal)
            {
                self.tracking.changed(k, None);
            }
            let cmd = match removal {
                Removal::Key(key) | Removal::Evicted(key) => vec![Bytes::from_static(b"DEL"), key],
                // A field that expired changes its hash: WATCH sees it.
                Removal::Field(key, field) => {
                    self.touch(false, &[b"HDEL", &key]);
                    vec![Bytes::from_static(b"HDEL"), key, field]
                }
            };
            if self.record_writes {
                self.push_log(cmd);
            }
        }
    }

    /// Changes the collection (hash, set) at `key` — created empty first if `create` — keeping
    /// the memory account, and removes the key if the collection ends up empty. `Ok(None)`:
    /// no such key; WRONGTYPE if it holds another type.
    fn collection_write<C: crate::value::Collection, R>(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
        f: impl FnOnce(&mut C, &crate::value::Encodings) -> R,
    ) -> Result<Option<R>, Frame> {
        let enc = self.encodings;
        let change = |v: &mut Value| match C::of(v) {
            Some(c) => {
                let r = f(c, &enc);
                let empty = c.is_empty();
                (Some(r), empty)
            }
            None => (None, false),
        };
        // A look before a change, in one lookup: while a rewrite walks the keyspace, a change
        // keeps the value as it was first (`keyspace::cut`), and a WRONGTYPE changes nothing.
        let (result, empty) = match self.ks.live(key, now) {
            Some(live) if C::is(&live.entry().value) => live.modify(change),
            Some(_) => return Err(err(reply::WRONGTYPE)),
            None if !create => return Ok(None),
            None => {
                self.ks.insert(key, C::default().wrap(), 0);
                self.ks.modify(key, now, change).unwrap_or((None, false))
            }
        };
        if empty {
            self.ks.remove(key);
            if !self.notify.is_off() {
                self.emptied.push(Bytes::copy_from_slice(key));
            }
        }
        Ok(result)
    }

    /// Appends one effect to the log, after `MOON.DB n` if it happened in database n > 0.
    fn push_log(&mut self, cmd: Vec<Bytes>) {
        self.changes += 1;
        if self.db != 0 {
            self.log.push(vec![
                Bytes::from_static(b"MOON.DB"),
                Bytes::from(self.db.to_string()),
            ]);
        }
        self.log.push(cmd);
    }

    /// Logs the running command as it was sent (its keys are the ones its spec names).
    fn log_args(&mut self, args: &[Bytes]) {
        self.log_expired();
        if !self.watched.is_empty()
            || !self.notify.is_off()
            || !self.tracking.is_empty()
            || !self.blocked.is_empty()
        {
            let parts: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
            self.touch(true, &parts);
            self.note_effect(true, &parts);
        }
        if self.record_writes {
            self.push_log(args.to_vec());
        }
    }

    /// Another logged command of the effect [`Store::log_args`] just logged (the same keys,
    /// already touched and announced): it only reaches the log.
    fn log_more(&mut self, args: Vec<Bytes>) {
        if self.record_writes {
            self.push_log(args);
        }
    }

    /// Logs an effect the store derived from the running command (`SET k v` for an INCR,
    /// `PEXPIREAT k ms` for an EXPIRE, `HSET k f v`...): a command whose one key follows its
    /// name.
    fn log_derived(&mut self, parts: &[&[u8]]) {
        self.log_expired();
        self.touch(false, parts);
        self.note_effect(false, parts);
        if self.record_writes {
            self.push_log(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect());
        }
    }

    /// Logs a change of whole databases: every watched key of them counts as modified and
    /// every tracking reader is told to forget everything. No keyspace event names it.
    fn log_flush(&mut self, flush: Flush) {
        self.log_expired();
        if matches!(flush, Flush::All | Flush::Db) {
            // Blocked readers of a stream that went away are told (XREADGROUP's "no longer
            // exists"); a blocked pop on an emptied key just keeps waiting.
            let db = self.db;
            let gone: Vec<Bytes> = self
                .blocked
                .keys()
                .filter(|wk| {
                    matches!(flush, Flush::All) || u16::from_be_bytes([wk[0], wk[1]]) as usize == db
                })
                .cloned()
                .collect();
            self.ready.extend(gone);
        }
        if let Flush::Swap(a, b) = flush {
            // Review finding: the swapped databases' blocked keys may now hold what their
            // clients wait for (Redis scans both for ready keys).
            let swapped: Vec<Bytes> = self
                .blocked
                .keys()
                .filter(|wk| {
                    let db = u16::from_be_bytes([wk[0], wk[1]]) as usize;
                    db == a || db == b
                })
                .cloned()
                .collect();
            self.ready.extend(swapped);
        }
        if !self.tracking.is_empty() {
            self.tracking.flushed();
        }
        if let (Flush::Swap(a, b), false) = (flush, self.watched.is_empty()) {
            // A watched key of either database that exists in either now holds the other's
            // value (or none). A flush needs nothing here: EXEC sees a watched key that
            // existed is gone, and one that did not exist was not touched (Redis's "FLUSHALL
            // does not touch non affected keys").
            let now = crate::NO_EXPIRY_CHECK;
            let touched: Vec<Bytes> = self
                .watched
                .keys()
                .filter(|wk| {
                    let db = u16::from_be_bytes([wk[0], wk[1]]) as usize;
                    (db == a || db == b)
                        && [a, b].iter().any(|&d| {
                            self.keyspace_of(d)
                                .is_some_and(|k| k.peek(&wk[2..], now).is_some())
                        })
                })
                .cloned()
                .collect();
            self.watch_clock += 1;
            let clock = self.watch_clock;
            for wk in touched {
                if let Some(slot) = self.watched.get_mut(&wk) {
                    slot.1 = clock;
                }
            }
        }
        if self.record_writes {
            let cmd = match flush {
                Flush::All => vec![Bytes::from_static(b"FLUSHALL")],
                Flush::Db => vec![Bytes::from_static(b"FLUSHDB")],
                Flush::Swap(a, b) => vec![
                    Bytes::from_static(b"SWAPDB"),
                    Bytes::from(a.to_string()),
                    Bytes::from(b.to_string()),
                ],
            };
            self.push_log(cmd);
        }
    }

    fn log_set(&mut self, key: &[u8], value: &Bytes, expire_at: u64) {
        self.log_expired();
        self.touch(false, &[b"SET", key]);
        if !self.notify.is_off() {
            let pxat: &[u8] = if expire_at != 0 { b"PXAT" } else { b"" };
            self.note_effect(false, &[b"SET", key, value, pxat]);
        }
        if self.record_writes {
            let mut cmd = vec![
                Bytes::from_static(b"SET"),
                Bytes::copy_from_slice(key),
                value.clone(),
            ];
            if expire_at != 0 {
                cmd.push(Bytes::from_static(b"PXAT"));
                cmd.push(Bytes::from(expire_at.to_string()));
            }
            self.push_log(cmd);
        }
    }

    fn log_del(&mut self, key: &[u8]) {
        self.log_derived(&[b"DEL", key]);
    }

    fn get_str(&mut self, key: &[u8], now: u64) -> Result<Option<Bytes>, Frame> {
        match self.ks.get(key, now) {
            Some(e) => match &e.value {
                Value::Str(b) => {
                    self.hits += 1;
                    Ok(Some(b.to_bytes()))
                }
                _ => {
                    self.hits += 1;
                    Err(err(reply::WRONGTYPE))
                }
            },
            None => {
                self.misses += 1;
                Ok(None)
            }
        }
    }

    /// Whether `key` exists (and has not expired).
    pub fn keyspace_contains(&mut self, key: &[u8], now: u64) -> bool {
        self.ks.contains(key, now)
    }

    /// Parses an integer argument the way every command does.
    pub fn parse_int(b: &[u8]) -> Option<i64> {
        parse_i64(b)
    }

    /// `key`'s value and absolute deadline (0: none), if it exists — the read half of a
    /// cross-shard RENAME, which then writes the value's rewrite form with ordinary, logged
    /// commands.
    /// A hash's fields whose deadline passed are left out, and a hash with none left counts
    /// as absent — as any command would find it.
    pub fn peek_entry(&self, key: &[u8], now: u64) -> Option<(Value, u64)> {
        let e = self.ks.peek(key, now)?;
        let mut value = e.value.clone();
        if let Value::Hash(h) = &mut value {
            if now != crate::NO_EXPIRY_CHECK && h.next_deadline().is_some_and(|d| d <= now) {
                h.take_expired(now, usize::MAX);
                if h.is_empty() {
                    return None;
                }
            }
        }
        Some((value, e.expire_at))
    }

    /// The type of `key`'s value, without changing anything (no lazy expiry); a hash whose
    /// fields have all expired counts as absent.
    pub fn type_at(&self, key: &[u8], now: u64) -> Option<&'static str> {
        let e = self.ks.peek(key, now)?;
        if let Value::Hash(h) = &e.value {
            let all_expired = now != crate::NO_EXPIRY_CHECK
                && h.next_deadline().is_some_and(|d| d <= now)
                && h.iter()
                    .all(|(f, _)| h.field_deadline(f).is_some_and(|d| d <= now));
            if all_expired {
                return None;
            }
        }
        Some(e.value.type_name())
    }

    /// `MOON.DB db` of a log being replayed: the next command runs in `db`, then database 0
    /// is selected again.
    pub(crate) fn select_for_next(&mut self, db: usize) -> bool {
        if !self.select(db) {
            return false;
        }
        self.db_pending = true;
        true
    }

    /// Whether the commands about to run leave LRU/LFU alone (CLIENT NO-TOUCH).
    /// Every database's: the command may switch databases (SWAPDB, FLUSHALL, COPY ... DB).
    pub(crate) fn set_no_touch(&mut self, on: bool) {
        self.ks.set_no_touch(on);
        for ks in &mut self.dbs {
            ks.set_no_touch(on);
        }
    }

    /// Before a command's handler runs: the clock, what its effects will be announced as,
    /// who is writing, and the memory check of a command that may grow memory (its OOM
    /// reply if there is no room). [`Store::end_command`] follows either way.
    pub(crate) fn begin_command(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        now: u64,
        writer: Option<u64>,
        event: Option<&'static str>,
    ) -> Result<(), Frame> {
        self.ks.set_clock(now);
        self.ks.set_reading(!spec.is_write());
        self.spec = Some(spec);
        self.writer = writer;
        self.batch_event = event;
        self.events_mark = self.events.len();
        if !self.notify.is_off() {
            self.sets_deadline = match spec.name {
                "setex" | "psetex" => true,
                "set" => args[3..].iter().any(|a| {
                    ["EX", "PX", "EXAT", "PXAT"]
                        .iter()
                        .any(|o| a.eq_ignore_ascii_case(o.as_bytes()))
                }),
                _ => false,
            };
        }
        self.ks.track_created(self.notify.wants(class::NEW));
        if self.memory_limit.max == 0 {
            self.script.over_memory = false;
            return Ok(());
        }
        if spec.group == crate::command::Group::Scripting {
            // Not refused as a whole here (Redis refuses only a script declared for writes
            // without `allow-oom`, which `Store::eval` and `Store::fcall` do once they know its
            // flags): room is made, and whether the keyspace is still over the limit decides
            // its first write. In a transaction nothing is evicted (room was made before it).
            self.script.over_memory = if self.memory_checks {
                !self.make_room(now)
            } else {
                !crate::keyspace::is_replica() && self.over_memory_limit()
            };
        } else if self.memory_checks
            && !self.in_script
            && (self.room_unknown || spec.flags.has(crate::command::Flags::DENYOOM))
            && !self.make_room(now)
            && spec.flags.has(crate::command::Flags::DENYOOM)
        {
            // Room is made before every command that may need it, as Redis evicts before
            // each one it runs: a read after a write that went over the limit evicts too
            // (see `room_unknown`); only one that may grow memory is refused.
            // (Inside a script nothing is evicted or refused here, as in Redis: whether it
            // may write was decided when it started, at its first write, `script_step`;
            // evicting half-way could drop a key it just wrote, refusing would leave half its
            // effects.)
            return Err(err(reply::OOM));
        }
        if spec.is_write() {
            self.room_unknown = true;
        }
        Ok(())
    }

    /// After a command's handler (or its refusal): the expirations it caused are logged, its
    /// emptied collections announced, the reader's keys remembered if it read, and the store
    /// is back in database 0 if a replayed `MOON.DB` had selected another.
    pub(crate) fn end_command(&mut self, args: &[Bytes], reply: &Frame, reader: Option<Reader>) {
        self.ks.set_reading(false);
        self.log_expired();
        if !self.notify.is_off() {
            self.note_emptied();
            self.ks.take_created();
        }
        if let (Some(reader), Some(spec)) = (reader, self.spec) {
            // A script's keys are remembered when it runs a read (`StoreHost::call`).
            let script = spec.group == crate::command::Group::Scripting;
            if spec.is_read() && !reply.is_error() && !script {
                for key in spec.keys(args) {
                    self.tracking.remember(reader, key);
                }
            }
        }
        self.writer = None;
        self.batch_event = None;
        self.spec = None;
        if std::mem::take(&mut self.db_pending) {
            self.select(0);
        }
    }
}

/// A change of whole databases ([`Store::log_flush`]).
#[derive(Clone, Copy)]
pub(crate) enum Flush {
    All,
    Db,
    Swap(usize, usize),
}

/// A key of database `db`, as WATCH versions are kept: two bytes of database, then the key.
fn watch_key_in(db: usize, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(&(db as u16).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Options of HSCAN/SSCAN: `cursor [MATCH pattern] [COUNT n] [NOVALUES]`.
struct ScanOpts<'a> {
    cursor: u64,
    pattern: Option<&'a [u8]>,
    count: usize,
    no_values: bool,
}

fn scan_args<'a>(
    cursor: &[u8],
    rest: &'a [Bytes],
    novalues_ok: bool,
) -> Result<ScanOpts<'a>, Frame> {
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err(reply::INVALID_CURSOR))?;
    let mut opts = ScanOpts {
        cursor,
        pattern: None,
        count: 10,
        no_values: false,
    };
    let mut i = 0;
    while i < rest.len() {
        let a = &rest[i];
        if novalues_ok && eq(a, "novalues") {
            opts.no_values = true;
            i += 1;
            continue;
        }
        let Some(v) = rest.get(i + 1) else {
            return Err(err(reply::SYNTAX));
        };
        if eq(a, "match") {
            opts.pattern = Some(v).filter(|p| p.as_ref() != b"*").map(|p| &p[..]);
        } else if eq(a, "count") {
            match parse_i64(v) {
                Some(c) if c >= 1 => opts.count = c as usize,
                Some(_) => return Err(err(reply::SYNTAX)),
                None => return Err(err(reply::NOT_INTEGER)),
            }
        } else {
            return Err(err(reply::SYNTAX));
        }
        i += 2;
    }
    Ok(opts)
}

/// The positions one step of a field/member SCAN visits, and the next cursor (0 = done). A
/// compact value is returned whole, as Redis does. A table is walked downwards from the
/// cursor, which is the exclusive bound of what is left: a removal moves the last entry into
/// the removed slot, which is always in the visited region or the removed entry itself, so
/// everything present throughout is returned (see `Keyspace::scan`).
fn scan_positions(
    len: usize,
    compact: bool,
    cursor: u64,
    count: usize,
) -> (std::ops::Range<usize>, u64) {
    if compact {
        return (0..len, 0);
    }
    let hi = if cursor == 0 {
        len
    } else {
        (cursor as usize).min(len)
    };
    let lo = hi.saturating_sub(count);
    (lo..hi, lo as u64)
}

fn scan_reply(next: u64, items: Vec<Frame>) -> Frame {
    Frame::Array(vec![Frame::bulk(next.to_string()), Frame::Array(items)])
}

/// Random positions among `len` for HRANDFIELD/SRANDMEMBER/SPOP: one (no count), up to
/// `count` distinct ones (positive), or `-count` with repetition (negative).
fn random_picks(len: usize, count: Option<i64>, seed: &mut u64) -> Vec<usize> {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 16) as usize
    };
    if len == 0 {
        return Vec::new();
    }
    match count {
        None => vec![next() % len],
        // Callers bound |count| by MAX_RANDOM_REPEATS first: this is the reply's size.
        Some(c) if c < 0 => (0..c.unsigned_abs().min(MAX_RANDOM_REPEATS))
            .map(|_| next() % len)
            .collect(),
        Some(c) if c as u64 >= len as u64 => (0..len).collect(),
        Some(c) if (c as usize).saturating_mul(4) < len => {
            // Few out of many: draw until distinct, without touching every position.
            let c = c as usize;
            let mut seen = std::collections::HashSet::with_capacity(c);
            let mut out = Vec::with_capacity(c);
            while out.len() < c {
                let i = next() % len;
                if seen.insert(i) {
                    out.push(i);
                }
            }
            out
        }
        Some(c) => {
            // Most of them: a partial Fisher-Yates over the positions.
            let c = c as usize;
            let mut all: Vec<usize> = (0..len).collect();
            for i in 0..c {
                let j = i + next() % (len - i);
                all.swap(i, j);
            }
            all.truncate(c);
            all
        }
    }
}

/// The most picks a negative count (repeats allowed) may ask of HRANDFIELD/SRANDMEMBER: the
/// reply is built whole, so its size is bounded (Redis streams it; a larger count is refused
/// here with Redis's out-of-range error).
pub(super) const MAX_RANDOM_REPEATS: u64 = 1 << 24;

pub mod bitmap;
pub mod blocking;
pub mod dump;
pub mod geo;
pub(crate) mod hash;
pub mod hll;
pub mod keys;
pub mod lcs;
pub mod list;
pub(crate) mod paused;
pub mod script;
pub mod set;
pub mod sort;
pub mod stream;
pub(crate) mod string;
pub mod zset;

#[cfg(test)]
mod tests;
