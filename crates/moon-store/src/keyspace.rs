//! A shard's keyspace: keys, values, deadlines.
//!
//! Keys live in a hash table kept in hash order ([`table`]): a lookup reads one run of slots,
//! `RANDOMKEY` and eviction sample a slot, and `SCAN`'s cursor is a hash, so a scan meets
//! every key present throughout whatever the table did in between. Deadlines are kept twice: on the entry (for the lazy check on
//! every access) and in an ordered set (so active expiry reclaims exactly the keys whose time
//! has come, without sampling).
//!
//! Every stored key and value is copied out of the request buffer, so the keyspace never pins a
//! connection's read buffer in memory.

mod cut;
mod table;

pub use cut::CutSize;

use std::collections::BTreeSet;
use std::hash::BuildHasher;

use bytes::Bytes;

use table::HashOrderedTable;

use crate::lazyfree::{self, Cause};

pub use crate::value::Value;

#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    /// Absolute deadline in Unix milliseconds; 0 = no expiry.
    pub expire_at: u64,
}

/// When a command last read or wrote a key (LRU), and Redis's logarithmic access counter
/// (LFU), in the 32-bit word the table keeps beside each key: bits 8-31 the time in seconds
/// modulo 2^24 (a clock that wraps after 194 days, as Redis's 24-bit LRU clock does), bits
/// 0-7 the counter. Neither is logged: after a restart every key starts fresh, as in Redis.
/// Seconds are Redis's resolution too: keys used within the same second are equally recent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Access(u32);

/// The access clock's range, in seconds.
const ACCESS_CLOCK: u32 = (1 << 24) - 1;

/// Redis's LFU_INIT_VAL: a new key's counter, so that it is not the first evicted.
const LFU_INIT: u8 = 5;

impl Access {
    /// An access at `now_ms` (Unix ms) leaving the counter at `freq`.
    fn at(now_ms: u64, freq: u8) -> Access {
        Access((clock_seconds(now_ms) << 8) | u32::from(freq))
    }

    /// How long ago the access was, at `now_ms` (whole seconds, in ms; an age past the
    /// clock's range reads modulo it). An access after `now_ms` (a command's time taken a
    /// little before another's touch, a clock stepped back) reads as just now: over half the
    /// clock's range (97 days) counts as behind, not as ahead.
    pub fn idle_ms(self, now_ms: u64) -> u64 {
        let then = self.0 >> 8;
        let age = clock_seconds(now_ms).wrapping_sub(then) & ACCESS_CLOCK;
        if age > ACCESS_CLOCK / 2 {
            return 0;
        }
        u64::from(age) * 1000
    }

    /// The LFU counter, for OBJECT FREQ.
    pub fn freq(self) -> u8 {
        self.0 as u8
    }
}

/// The keyspace's idea of now for access times: the running command's time, and until one
/// sets it (while a snapshot or log loads, which runs without a clock) the time the keyspace
/// was made, so that loaded keys start as just used, as Redis's do. Never part of what is
/// replayed: access times are not logged.
#[derive(Clone, Copy)]
struct Clock(u64);

impl Default for Clock {
    fn default() -> Self {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Clock(since_epoch.map_or(0, |d| d.as_millis() as u64))
    }
}

fn clock_seconds(now_ms: u64) -> u32 {
    (now_ms / 1000) as u32 & ACCESS_CLOCK
}

/// A live key of a [`Keyspace`], found by [`Keyspace::live`]: its entry to read, and one
/// change of its value.
pub struct Live<'a> {
    ks: &'a mut Keyspace,
    idx: usize,
}

impl Live<'_> {
    pub fn entry(&self) -> &Entry {
        &self.ks.map[self.idx].1
    }

    /// Changes the value in place; the memory account and the hash field deadlines follow.
    pub fn modify<R>(self, f: impl FnOnce(&mut Value) -> R) -> R {
        let Live { ks, idx } = self;
        ks.keep_before_change(idx);
        let entry = &mut ks.map[idx].1;
        let before = entry.value.mem_size();
        let deadline_before = field_deadline(&entry.value);
        let result = f(&mut entry.value);
        let after = entry.value.mem_size();
        let deadline_after = field_deadline(&entry.value);
        ks.used = ks.used - before + after;
        if deadline_after.is_some() && deadline_after != deadline_before {
            if let (Some(d), Some((stored, _))) = (deadline_after, ks.map.get(idx)) {
                let stored = stored.clone();
                ks.field_deadlines.insert((d, stored));
            }
        }
        result
    }
}

/// What one key costs beyond its key and value bytes: its share of the table's 80-byte slots
/// (key and short string inline; 72-90 % full). Measured from RSS per key of small strings
/// (92 bytes for a 16-byte key and a 32-byte value, `docs/BENCHMARKS.md`, against 56 + 48
/// counted); a longer key or value adds its heap block's
/// header, which this leaves out. A constant keeps the account exact and cheap.
pub const ENTRY_OVERHEAD: usize = 56;

/// The nearest field deadline of a hash value.
fn field_deadline(value: &Value) -> Option<u64> {
    match value {
        Value::Hash(h) => h.next_deadline(),
        _ => None,
    }
}

fn entry_size(key: &[u8], value: &Value) -> usize {
    key.len() + value.mem_size() + ENTRY_OVERHEAD
}

type Map = HashOrderedTable<(Key, Entry)>;

/// The key bytes kept in the map's slot itself: a [`Key`] stays 24 bytes.
const INLINE_KEY: usize = 22;

/// A key as the keyspace stores it: up to [`INLINE_KEY`] bytes inline in the map's slot (no
/// heap block, and a lookup compares it without reading another cache line), longer ones
/// boxed. It hashes and compares as its bytes, so the map is searched with a `&[u8]`.
#[derive(Clone)]
pub enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Boxed(Box<[u8]>),
}

impl Key {
    /// A copy of `b`: inline when short.
    pub fn copy_from(b: &[u8]) -> Key {
        match crate::value::inline_copy(b) {
            Some((len, bytes)) => Key::Inline { len, bytes },
            None => Key::Boxed(b.into()),
        }
    }

    /// A copy of the key, for a reply, a log record or an index.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Boxed(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl std::hash::Hash for Key {
    /// Exactly as `[u8]` hashes: the map is searched with `&[u8]` (`Borrow`).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_bytes(), f)
    }
}

#[derive(Default)]
pub struct Keyspace {
    map: Map,
    /// The map's hash function: SipHash-1-3 with a random key per keyspace, as Redis keys
    /// its dict with SipHash. Clients see hashes (a SCAN cursor is one, KEYS answers in hash
    /// order); with a keyed PRF that tells them nothing about other keys' hashes, so nobody
    /// can choose keys offline that crowd one run of the table. (`foldhash`, faster, gives
    /// its seed away to whoever sees its outputs.) A base keeps the key beside the keys it
    /// wrote in this hash order ([`Keyspace::hash_key`]), so that loading it appends: the key
    /// then lasts as long as the keyspace holds keys (Redis draws one per process), and is
    /// as secret as the base's data. Emptying the keyspace ([`Keyspace::clear`]) draws a
    /// new one.
    hasher: KeyHasher,
    deadlines: BTreeSet<(u64, Key)>,
    /// Deadlines of loaded keys not yet in `deadlines` ([`Keyspace::settle_loaded`]).
    loaded_deadlines: Vec<(u64, Key)>,
    /// Keys removed because their deadline passed (INFO `expired_keys`).
    pub expired_keys: u64,
    /// Keys removed to make room under `maxmemory` (INFO `evicted_keys`).
    pub evicted_keys: u64,
    /// Keys removed by expiry (lazy or active) or eviction that the store has not yet logged.
    /// Replay runs without either, so every such removal must reach the log as a deletion, in
    /// order with the writes around it: [`Keyspace::take_expired`] hands them over.
    expired: Vec<Removal>,
    /// Hashes with field deadlines, by their nearest one, so active expiry reclaims fields
    /// without scanning every hash. An entry may be stale (the key since removed, renamed or
    /// given a later deadline): it is checked against the hash when its time comes.
    field_deadlines: BTreeSet<(u64, Key)>,
    /// A snapshot in progress (BGREWRITEAOF's base), taken key by key as the table changes:
    /// every change to the table keeps what the snapshot still needs first (see [`cut`]).
    cut: Option<Box<cut::Cut>>,
    /// Bytes held, as [`entry_size`] counts them.
    used: usize,
    /// State of the generator that samples keys for eviction and rolls LFU counters.
    rng: u64,
    /// The time of the command running now (Unix ms), for the access time of what it writes.
    clock: Clock,
    /// The command running now leaves LRU/LFU alone (its client asked CLIENT NO-TOUCH).
    no_touch: bool,
    /// The command running now only reads: while expiry is held (CLIENT PAUSE) it leaves
    /// expired keys in place.
    reading: bool,
    /// Keys created since the last [`Keyspace::take_created`], collected only while `Some`
    /// (keyspace notifications of class `n`).
    created: Option<Vec<Bytes>>,
}

/// SipHash-1-3 under a random 128-bit key (see `Keyspace::hasher`).
#[derive(Clone, Copy)]
struct KeyHasher(siphasher::sip::SipHasher13);

impl Default for KeyHasher {
    /// A fresh random key, drawn from the standard library's randomly keyed hasher (which
    /// the operating system's random source seeds): its outputs for two inputs are the key.
    fn default() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&random.hash_one(0u8).to_le_bytes());
        key[8..].copy_from_slice(&random.hash_one(1u8).to_le_bytes());
        KeyHasher(siphasher::sip::SipHasher13::new_with_key(&key))
    }
}

/// What an insertion does with a key that is there, and when a new key's deadline is indexed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Insertion {
    /// A command's write: the key's value and deadline replaced.
    Replace,
    /// A snapshot's key: refused if there; its deadline indexed at `settle_loaded`.
    Load,
}

/// A removal that happened by itself (a deadline passed, or maxmemory evicted) and must reach
/// the log: a whole key (`DEL key`) or one field of a hash (`HDEL key field`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// A key whose deadline passed.
    Key(Bytes),
    /// A key evicted under `maxmemory`.
    Evicted(Bytes),
    Field(Bytes, Bytes),
}

/// Until when (Unix ms) clients are paused (CLIENT PAUSE; 0 = not paused). Expired keys stay
/// where they are meanwhile, as in Redis, so that nothing changes while writes are paused (a
/// failover waits for replicas to catch up on a primary that must stand still); reads treat
/// such keys as gone. The server's pause reads and writes this one atomic, so the hold never
/// outlives the pause nor ends before it.
static PAUSE_UNTIL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The pause deadline (CLIENT PAUSE / UNPAUSE set it; see [`PAUSE_UNTIL`]).
pub fn pause_deadline() -> &'static std::sync::atomic::AtomicU64 {
    &PAUSE_UNTIL
}

/// Set while this server is a replica: expiry belongs to its primary, whose deletions come in
/// its stream (as Redis's replicas do). Reads treat a key past its deadline as gone but leave
/// it; the primary's writes find it as it is, as replay does; nothing expires by itself. A
/// replica expiring keys on its own clock would diverge: an `INCR k` the primary ran a
/// millisecond before k's deadline would arrive after it.
static REPLICA: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this server a replica, or not (`replicaof` set or cleared).
pub fn set_replica(on: bool) {
    REPLICA.store(on, std::sync::atomic::Ordering::Release);
}

/// Whether this server is a replica (see [`REPLICA`]).
pub fn is_replica() -> bool {
    REPLICA.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether expired keys stay put at `now` (never while replaying).
fn expiry_held(now: u64) -> bool {
    changes_held(now)
}

/// Whether the keyspace must not change by itself at `now` (expiry, eviction): clients are
/// paused, or this is a replica. Never while replaying.
pub(crate) fn changes_held(now: u64) -> bool {
    now != NO_EXPIRY_CHECK
        && (now < PAUSE_UNTIL.load(std::sync::atomic::Ordering::Relaxed) || is_replica())
}

/// `now` value that disables expiry, used while replaying a log. Every expiration that
/// happened while serving is in the log as a deletion, at the place where it happened, so a
/// key whose deadline had passed but that nobody had touched yet is still there when the
/// records after it are applied, exactly as when they first ran; active expiry reclaims it once
/// serving starts.
pub const NO_EXPIRY_CHECK: u64 = 0;

/// Bits of a SCAN cursor ([`Keyspace::scan`]); the server keeps the rest to name a shard.
pub const SCAN_CURSOR_BITS: u32 = 54;

impl Keyspace {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn expires_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Bytes held by keys and values, with a fixed overhead per key (see `crate::evict`).
    pub fn used_memory(&self) -> usize {
        self.used
    }

    /// The table's hash of `key`: SipHash's top 32 bits (see `table`).
    fn hash(&self, key: &[u8]) -> u32 {
        (self.hasher.0.hash(key) >> 32) as u32
    }

    /// The key of the map's hash function: a base written in this keyspace's hash order
    /// records it, so that the keyspace loading it ([`Keyspace::adopt_hash_key`]) gets the
    /// keys in its own order.
    pub fn hash_key(&self) -> [u8; 16] {
        self.hasher.0.key()
    }

    /// Takes `key` as the map's hash key, if the keyspace is empty (a hash key changes where
    /// every key lives). False, and nothing changed, if it is not.
    pub fn adopt_hash_key(&mut self, key: [u8; 16]) -> bool {
        if !self.map.is_empty() {
            return false;
        }
        self.hasher = KeyHasher(siphasher::sip::SipHasher13::new_with_key(&key));
        true
    }

    /// The position of `key` in the map, whether live or not.
    fn position(&self, key: &[u8]) -> Option<usize> {
        self.map.find(self.hash(key), |(k, _)| **k == *key)
    }

    /// Takes the entry at `pos` out of the map (the deadline index is the caller's).
    fn take_at(&mut self, pos: usize) -> Option<(Key, Entry)> {
        self.keep_before_change(pos);
        self.map.remove_at(pos)
    }

    /// A random position, or None if the map is empty.
    fn random_position(&mut self) -> Option<usize> {
        let r = self.next_random();
        self.map.sample(r)
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: the choice of a victim needs spread, not secrecy; what it chose is logged.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Starts loading the place where `key` is or would be (see [`HashOrderedTable::prefetch`]).
    pub fn prefetch(&self, key: &[u8]) {
        // A table not laid out yet is being appended to: no place to look for.
        if self.map.is_laid_out() {
            self.map.prefetch(self.hash(key));
        }
    }

    /// The time of the command about to run (not while replaying): what it reads or writes is
    /// accessed at this time, for LRU and LFU.
    pub fn set_clock(&mut self, now: u64) {
        if now != NO_EXPIRY_CHECK {
            self.clock = Clock(now);
        }
    }

    /// Whether the command about to run only reads (false again when it ends).
    pub fn set_reading(&mut self, on: bool) {
        self.reading = on;
    }

    /// Whether the commands about to run leave LRU/LFU alone (CLIENT NO-TOUCH).
    pub fn set_no_touch(&mut self, on: bool) {
        self.no_touch = on;
    }

    /// Records an access to the entry at `idx` for LRU and LFU.
    fn touch_index(&mut self, idx: usize, now: u64) {
        if now == NO_EXPIRY_CHECK || self.no_touch {
            return;
        }
        let random = self.next_random();
        if let Some(word) = self.map.word_mut(idx) {
            let access = Access(*word);
            let idle = access.idle_ms(now);
            let freq =
                crate::evict::lfu_increment(crate::evict::lfu_decayed(access.freq(), idle), random);
            *word = Access::at(now, freq).0;
        }
    }

    fn is_expired(entry: &Entry, now: u64) -> bool {
        now != NO_EXPIRY_CHECK && entry.expire_at != 0 && entry.expire_at <= now
    }

    /// The position of `key` if it is live; an expired key is removed on the way (lazy
    /// expiry), and so are a hash's expired fields (the key too if none is left). One hash
    /// lookup.
    fn live_index(&mut self, key: &[u8], now: u64) -> Option<usize> {
        let idx = self.live_index_untouched(key, now)?;
        self.touch_index(idx, now);
        Some(idx)
    }

    /// [`Keyspace::live_index`] without recording an access (Redis's `LOOKUP_NOTOUCH`).
    fn live_index_untouched(&mut self, key: &[u8], now: u64) -> Option<usize> {
        let idx = self.position(key)?;
        let replica = is_replica();
        if (self.reading || !replica) && Self::is_expired(&self.map[idx].1, now) {
            // Only a read leaves it: a write's record must follow the key's removal in the log,
            // or replay (which expires nothing) would apply it to the old value. On a replica
            // a write (its primary's) applies to the key as it is, as replay does.
            if self.reading && expiry_held(now) {
                return None;
            }
            if let Some((stored, entry)) = self.take_at(idx) {
                self.used -= entry_size(&stored, &entry.value);
                if entry.expire_at != 0 {
                    self.deadlines.remove(&(entry.expire_at, stored.clone()));
                }
                self.expired.push(Removal::Key(stored.to_bytes()));
                lazyfree::dispose(entry.value, Cause::Expire);
            }
            self.expired_keys += 1;
            return None;
        }
        if now != NO_EXPIRY_CHECK && !replica {
            if let Value::Hash(h) = &self.map[idx].1.value {
                if h.next_deadline().is_some_and(|d| d <= now) {
                    return self.expire_fields(idx, now, usize::MAX).then_some(idx);
                }
            }
        }
        Some(idx)
    }

    /// Removes the due fields of the hash at `idx` (at most `budget`), queueing each for the
    /// log; removes the key if no field is left. True if the key is still there.
    fn expire_fields(&mut self, idx: usize, now: u64, budget: usize) -> bool {
        self.keep_before_change(idx);
        let Some((key, entry)) = self.map.get_mut(idx) else {
            return false;
        };
        let Value::Hash(h) = &mut entry.value else {
            return true;
        };
        let before = h.mem_size();
        let due = h.take_expired(now, budget);
        let (after, empty, next) = (h.mem_size(), h.is_empty(), h.next_deadline());
        let key = key.clone();
        self.used = self.used - before + after;
        for f in due {
            self.expired.push(Removal::Field(key.to_bytes(), f));
        }
        if empty {
            if let Some((stored, entry)) = self.take_at(idx) {
                self.used -= entry_size(&stored, &entry.value);
                if entry.expire_at != 0 {
                    self.deadlines.remove(&(entry.expire_at, stored));
                }
            }
            return false;
        }
        if let Some(d) = next {
            self.field_deadlines.insert((d, key));
        }
        true
    }

    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        let idx = self.live_index(key, now)?;
        Some(&self.map[idx].1)
    }

    /// Changes a live key's value in place; the memory account follows the change.
    pub fn modify<R>(
        &mut self,
        key: &[u8],
        now: u64,
        f: impl FnOnce(&mut Value) -> R,
    ) -> Option<R> {
        self.live(key, now).map(|live| live.modify(f))
    }

    /// A live key, found once, to look at and then maybe change ([`Live::modify`]): a command
    /// that checks the value before it changes it (INCR's number, a collection's type) takes
    /// one lookup, and a check that fails changes nothing (while a rewrite walks the
    /// keyspace, a change first keeps the value as it was: `keyspace::cut`).
    pub fn live(&mut self, key: &[u8], now: u64) -> Option<Live<'_>> {
        let idx = self.live_index(key, now)?;
        Some(Live { ks: self, idx })
    }

    pub fn contains(&mut self, key: &[u8], now: u64) -> bool {
        self.live_index(key, now).is_some()
    }

    /// A live key's entry without counting it as an access for LRU/LFU (EXISTS, TYPE, TTL and
    /// OBJECT look at a key without using it, as in Redis); an expired key is removed as by
    /// [`Keyspace::get`].
    pub fn get_untouched(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        let idx = self.live_index_untouched(key, now)?;
        Some(&self.map[idx].1)
    }

    /// `key`'s entry if it is live at `now`, without removing an expired one: for readers
    /// outside command execution (WATCH, the read half of a cross-shard RENAME), which must
    /// not change the keyspace.
    pub fn peek(&self, key: &[u8], now: u64) -> Option<&Entry> {
        let pos = self.position(key)?;
        Some(&self.map[pos].1).filter(|e| !Self::is_expired(e, now))
    }

    /// The removals by expiry or eviction since the last call, in the order they happened.
    pub fn take_expired(&mut self) -> Vec<Removal> {
        std::mem::take(&mut self.expired)
    }

    /// Starts (or stops) collecting the keys created, for [`Keyspace::take_created`].
    pub fn track_created(&mut self, on: bool) {
        if on != self.created.is_some() {
            self.created = on.then(Vec::new);
        }
    }

    /// The keys created since the last call (empty unless tracking).
    pub fn take_created(&mut self) -> Vec<Bytes> {
        match self.created.as_mut() {
            Some(c) if !c.is_empty() => std::mem::take(c),
            _ => Vec::new(),
        }
    }

    /// Whether an expiry removal is waiting to be logged.
    /// Sets `key`'s access time and LFU counter (RESTORE's IDLETIME and FREQ): last used
    /// `idle_ms` before `now` (at most half the clock's range, see [`Access::idle_ms`]).
    pub fn set_access_of(&mut self, key: &[u8], now: u64, idle_ms: u64, freq: Option<u8>) {
        if let Some(word) = self.position(key).and_then(|p| self.map.word_mut(p)) {
            let freq = freq.unwrap_or(Access(*word).freq());
            let idle_ms = idle_ms.min(u64::from(ACCESS_CLOCK / 2) * 1000);
            *word = Access::at(now.saturating_sub(idle_ms), freq).0;
        }
    }

    /// A live key's access time and LFU counter (OBJECT IDLETIME and FREQ), not counted as
    /// an access.
    pub fn access_of(&self, key: &[u8], now: u64) -> Option<Access> {
        let pos = self.position(key)?;
        let (_, entry) = self.map.get(pos)?;
        if Self::is_expired(entry, now) {
            return None;
        }
        self.map.word(pos).map(Access)
    }

    pub fn has_expired(&self) -> bool {
        !self.expired.is_empty()
    }

    /// Inserts or replaces `key` with a copy of it. `expire_at` 0 = no expiry. The key is
    /// hashed once, whether it is new or not.
    pub fn insert(&mut self, key: &[u8], value: Value, expire_at: u64) {
        self.insert_or_keep(key, value, expire_at, Insertion::Replace);
    }

    /// Inserts `key` only if it is not there (loading a snapshot, where a key twice is
    /// damage): false, and nothing changed, if it was. One lookup either way. While keys come
    /// in this keyspace's hash order (a base it wrote, [`Keyspace::adopt_hash_key`]) they are
    /// appended to the table ([`table::HashOrderedTable::append`]). [`Keyspace::settle_loaded`]
    /// must follow the last key loaded: it lays the table out and indexes the deadlines.
    pub fn insert_loaded(&mut self, key: &[u8], value: Value, expire_at: u64) -> bool {
        self.insert_or_keep(key, value, expire_at, Insertion::Load)
    }

    /// Lays out the table if keys were appended, and indexes the deadlines of the keys
    /// [`Keyspace::insert_loaded`] put in since the last call: sorted once and built into the index in one pass, where inserting each into the
    /// ordered set as it came cost 5 % of a 1M-key base load (keys come in the old process's
    /// hash order, and keys sharing a deadline compare by their bytes at every level).
    pub fn settle_loaded(&mut self) {
        self.map.lay_out();
        if self.loaded_deadlines.is_empty() {
            return;
        }
        let mut loaded: BTreeSet<(u64, Key)> = std::mem::take(&mut self.loaded_deadlines)
            .into_iter()
            .collect();
        self.deadlines.append(&mut loaded);
    }

    /// Room for `additional` more keys without growing the table as they come (a snapshot
    /// says how many it holds).
    /// A hint: when the memory cannot be had (a crafted file's count), nothing is reserved
    /// and the table grows as keys come.
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    fn insert_or_keep(&mut self, key: &[u8], value: Value, expire_at: u64, how: Insertion) -> bool {
        let fields_due = field_deadline(&value);
        if !self.insert_entry(key, value, expire_at, how) {
            return false;
        }
        if let Some(d) = fields_due {
            if let Some((stored, _)) = self.position(key).and_then(|p| self.map.get(p)) {
                let stored = stored.clone();
                self.field_deadlines.insert((d, stored));
            }
        }
        true
    }

    /// False when the key was there and is kept (nothing changed).
    fn insert_entry(&mut self, key: &[u8], value: Value, expire_at: u64, how: Insertion) -> bool {
        let hash = self.hash(key);
        match self.map.find(hash, |(k, _)| **k == *key) {
            Some(_) if how == Insertion::Load => return false,
            Some(pos) => {
                self.keep_before_change(pos);
                let entry = &mut self.map[pos].1;
                let old = entry.expire_at;
                self.used = self.used - entry.value.mem_size() + value.mem_size();
                lazyfree::dispose(std::mem::replace(&mut entry.value, value), Cause::ServerDel);
                entry.expire_at = expire_at;
                if let Some(word) = self.map.word_mut(pos) {
                    *word = Access::at(self.clock.0, Access(*word).freq()).0;
                }
                if old != expire_at {
                    self.move_deadline(key, old, expire_at);
                }
            }
            None => {
                self.keep_absent(hash, key);
                let key = Key::copy_from(key);
                if let Some(created) = self.created.as_mut() {
                    created.push(key.to_bytes());
                }
                if expire_at != 0 {
                    match how {
                        Insertion::Replace => self.deadlines.insert((expire_at, key.clone())),
                        Insertion::Load => {
                            self.loaded_deadlines.push((expire_at, key.clone()));
                            true
                        }
                    };
                }
                self.used += entry_size(&key, &value);
                let item = (key, Entry { value, expire_at });
                let access = Access::at(self.clock.0, LFU_INIT).0;
                // A snapshot's key is appended while the keys come in hash order.
                let item = match how {
                    Insertion::Load => self.map.append(hash, access, item).err(),
                    Insertion::Replace => Some(item),
                };
                if let Some(item) = item {
                    self.map.insert(hash, access, item);
                }
            }
        }
        true
    }

    /// Changes the deadline of an existing key. Returns false if the key does not exist.
    pub fn set_expire(&mut self, key: &[u8], expire_at: u64) -> bool {
        let pos = self.position(key);
        if let Some(p) = pos {
            self.keep_before_change(p);
        }
        match pos.and_then(|p| self.map.get_mut(p)) {
            Some((_, entry)) => {
                let old = entry.expire_at;
                entry.expire_at = expire_at;
                if old != expire_at {
                    self.move_deadline(key, old, expire_at);
                }
                true
            }
            None => false,
        }
    }

    fn move_deadline(&mut self, key: &[u8], old: u64, new: u64) {
        // The deadline index keeps its own copy of the key (inline up to 22 bytes).
        let Some((stored, _)) = self.position(key).and_then(|p| self.map.get(p)) else {
            return;
        };
        let stored = stored.clone();
        if old != 0 {
            self.deadlines.remove(&(old, stored.clone()));
        }
        if new != 0 {
            self.deadlines.insert((new, stored));
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let pos = self.position(key)?;
        let (stored, entry) = self.take_at(pos)?;
        self.used -= entry_size(&stored, &entry.value);
        if entry.expire_at != 0 {
            self.deadlines.remove(&(entry.expire_at, stored));
        }
        Some(entry)
    }

    /// Removes every key, freeing them as `cause` says (see [`lazyfree`]). Expirations not
    /// yet taken stay queued: they happened before.
    pub fn clear(&mut self, cause: Cause) {
        // A snapshot walking the table takes it as it is (see `cut`). The count is taken
        // first: the indexes of as many keys go with the garbage.
        let keys = self.map.len();
        let garbage = (
            self.detach_cut().unwrap_or_default(),
            std::mem::take(&mut self.deadlines),
            std::mem::take(&mut self.field_deadlines),
        );
        lazyfree::dispose_all(garbage, keys, cause);
        self.used = 0;
        // An emptied keyspace draws a new hash key: a base keeps the key from rewrite to
        // rewrite, and FLUSHALL/FLUSHDB is where an operator can have a new one.
        self.hasher = KeyHasher::default();
    }

    /// Active expiry: removes up to `budget` keys whose deadline is at or before `now`, then
    /// up to what is left of `budget` hash fields whose deadline passed. Returns how many keys
    /// and fields were removed.
    pub fn expire_cycle(&mut self, now: u64, budget: usize) -> usize {
        if expiry_held(now) {
            return 0;
        }
        let mut removed = self.expire_key_cycle(now, budget);
        while removed < budget {
            let Some((deadline, key)) = self.field_deadlines.first().cloned() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.field_deadlines.pop_first();
            let Some(idx) = self.position(&key) else {
                continue; // stale: the key is gone
            };
            let due = match &self.map[idx].1.value {
                Value::Hash(h) => h.next_deadline() == Some(deadline),
                _ => false,
            };
            if !due {
                continue; // stale: another entry holds its current deadline
            }
            let before = self.expired.len();
            if !self.expire_fields(idx, now, budget - removed) && self.expired.len() == before {
                break;
            }
            removed += self.expired.len() - before;
        }
        removed
    }

    fn expire_key_cycle(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            let Some((deadline, key)) = self.deadlines.first().cloned() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some((stored, entry)) = self.position(&key).and_then(|p| self.take_at(p)) {
                self.used -= entry_size(&stored, &entry.value);
                lazyfree::dispose(entry.value, Cause::Expire);
            }
            self.expired.push(Removal::Key(key.to_bytes()));
            self.expired_keys += 1;
            removed += 1;
        }
        removed
    }

    /// A random live key, or None if the keyspace is empty.
    pub fn random_key(&mut self, now: u64, seed: u64) -> Option<Bytes> {
        // Retry a bounded number of times if we land on expired keys, like Redis.
        let mut seed = seed;
        for _ in 0..100 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let idx = self.map.sample(seed >> 11)?;
            let (key, entry) = self.map.get(idx)?;
            if Self::is_expired(entry, now) {
                if self.reading && expiry_held(now) {
                    continue;
                }
                let key = key.clone();
                if let Some(gone) = self.remove(&key) {
                    lazyfree::dispose(gone.value, Cause::Expire);
                }
                self.expired.push(Removal::Key(key.to_bytes()));
                self.expired_keys += 1;
                continue;
            }
            return Some(key.to_bytes());
        }
        self.map.iter().next().map(|(k, _)| k.to_bytes())
    }

    /// Removes one key to make room, chosen by `limit.policy`, and queues it for the log like
    /// an expired key. A sampled key found expired goes first (as expired). Returns false if
    /// the policy allows no key to go.
    pub fn evict_one(&mut self, limit: &crate::evict::MemoryLimit, now: u64) -> bool {
        use crate::evict::{lfu_decayed, EvictionPolicy as P};
        if self.map.is_empty() || limit.policy == P::NoEviction {
            return false;
        }
        if limit.policy.volatile_only() && self.deadlines.is_empty() {
            return false;
        }
        let samples = limit.samples.clamp(1, 64);
        let mut candidates: Vec<usize> = Vec::with_capacity(samples);
        match limit.policy {
            P::VolatileTtl => {}
            P::AllKeysRandom | P::AllKeysLru | P::AllKeysLfu => {
                let n = if limit.policy == P::AllKeysRandom {
                    1
                } else {
                    samples
                };
                for _ in 0..n {
                    candidates.extend(self.random_position());
                }
            }
            _ => {
                // Keys with a TTL: sample the whole map and keep those; if they are too rare to
                // be met that way, take the ones whose deadlines come first.
                let want = if limit.policy == P::VolatileRandom {
                    1
                } else {
                    samples
                };
                for _ in 0..want * 8 {
                    let Some(i) = self.random_position() else {
                        break;
                    };
                    if self.map.get(i).is_some_and(|(_, e)| e.expire_at != 0) {
                        candidates.push(i);
                        if candidates.len() == want {
                            break;
                        }
                    }
                }
            }
        }
        if candidates.is_empty() {
            for (_, key) in self.deadlines.iter().take(samples) {
                if let Some(i) = self.position(key) {
                    candidates.push(i);
                }
            }
            if limit.policy == P::VolatileTtl {
                candidates.truncate(1);
            }
        }
        // The lowest score goes: the least used (LFU), then the longest idle.
        let score = |a: Access| -> (u64, u64) {
            let recent = u64::MAX - a.idle_ms(now);
            match limit.policy {
                P::AllKeysLfu | P::VolatileLfu => {
                    (u64::from(lfu_decayed(a.freq(), a.idle_ms(now))), recent)
                }
                _ => (recent, 0),
            }
        };
        let Some(victim) = candidates
            .into_iter()
            .filter_map(|i| self.map.word(i).map(|w| (i, score(Access(w)))))
            .min_by_key(|&(_, s)| s)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let expired = self
            .map
            .get(victim)
            .is_some_and(|(_, e)| Self::is_expired(e, now));
        let Some((stored, entry)) = self.take_at(victim) else {
            return false;
        };
        self.used -= entry_size(&stored, &entry.value);
        if entry.expire_at != 0 {
            self.deadlines.remove(&(entry.expire_at, stored.clone()));
        }
        if expired {
            self.expired.push(Removal::Key(stored.to_bytes()));
            self.expired_keys += 1;
            lazyfree::dispose(entry.value, Cause::Expire);
        } else {
            self.expired.push(Removal::Evicted(stored.to_bytes()));
            self.evicted_keys += 1;
            lazyfree::dispose(entry.value, Cause::Eviction);
        }
        true
    }

    /// One step of SCAN over this keyspace.
    ///
    /// The cursor is a hash's top [`SCAN_CURSOR_BITS`] bits: the step visits keys in hash
    /// order from the first whose hash is at or above it, about `count` of them (never
    /// splitting keys that share a cursor value), and returns the cursor of the next key (0
    /// when none is left; 0 also starts a scan). The table keeps its keys in hash order through
    /// insertions, removals and growth, so every key present for the whole scan is returned,
    /// and none twice unless it was removed and added again. Keys added meanwhile may or may
    /// not be returned, as in Redis.
    pub fn scan(
        &mut self,
        cursor: u64,
        count: usize,
        now: u64,
        mut filter: impl FnMut(&[u8], &Value) -> bool,
    ) -> (Vec<Bytes>, u64) {
        let shift = 64 - SCAN_CURSOR_BITS;
        let from = cursor.checked_shl(shift).filter(|c| c >> shift == cursor);
        // The table's hashes are a 64-bit hash's top half; a cursor this never returned (one
        // between two hashes) starts at the next one.
        let Some(from) = from.and_then(|c| u32::try_from(c.div_ceil(1 << 32)).ok()) else {
            return (Vec::new(), 0);
        };
        let mut out = Vec::new();
        let mut last = None;
        for (visited, (hash, (key, entry))) in self.map.scan_from(from).enumerate() {
            let at = (u64::from(hash) << 32) >> shift;
            if visited >= count.max(1) && last != Some(at) {
                return (out, at);
            }
            last = Some(at);
            if !Self::is_expired(entry, now) && filter(key, &entry.value) {
                out.push(key.to_bytes());
            }
        }
        (out, 0)
    }

    /// Every live key matching `filter`.
    pub fn keys(&self, now: u64, mut filter: impl FnMut(&[u8]) -> bool) -> Vec<Bytes> {
        self.map
            .iter()
            .filter(|(k, e)| !Self::is_expired(e, now) && filter(k))
            .map(|(k, _)| k.to_bytes())
            .collect()
    }

    /// Iterates every entry (for rewrite and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.map.iter().map(|(k, e)| (k, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The access word counts whole seconds, reads an age across the clock's wrap, and a
    /// RESTORE'd idle time past half the clock's range is held there; a key's word moves
    /// with it while other keys come and go around it.
    #[test]
    fn access_times_are_seconds_on_a_wrapping_clock() {
        let t = 1_700_000_000_000u64;
        let a = Access::at(t, 9);
        assert_eq!(
            (a.idle_ms(t + 999), a.idle_ms(t + 1000), a.freq()),
            (0, 1000, 9)
        );
        let end = u64::from(ACCESS_CLOCK) * 1000;
        let before_wrap = Access::at(end, 1);
        assert_eq!(before_wrap.idle_ms(end + 5000), 5000);
        // An access a second after `now` (a clock read before another's touch) is not idle.
        assert_eq!(Access::at(t + 1000, 1).idle_ms(t), 0);

        let mut ks = Keyspace::default();
        ks.set_clock(t);
        ks.insert(b"k", s("v"), 0);
        let fresh = ks.access_of(b"k", t + 2500).expect("live");
        assert_eq!((fresh.idle_ms(t + 2500), fresh.freq()), (2000, LFU_INIT));
        ks.set_access_of(b"k", t, u64::MAX, Some(3));
        let old = ks.access_of(b"k", t).expect("live");
        assert_eq!((old.idle_ms(t), old.freq()), (end / 2 / 1000 * 1000, 3));
        for i in 0..2000u32 {
            ks.insert(&i.to_be_bytes(), s("v"), 0);
        }
        for i in 0..1000u32 {
            ks.remove(&i.to_be_bytes());
        }
        assert_eq!(ks.access_of(b"k", t), Some(old));
        assert_eq!(ks.access_of(b"absent", t), None);

        // A key loaded before any command set the clock (a restart's load) starts as just
        // used, not as used in 1970.
        let mut loaded = Keyspace::default();
        assert!(loaded.insert_loaded(b"k", s("v"), 0));
        let wall = Clock::default().0;
        let access = loaded.access_of(b"k", wall).expect("live");
        assert!(access.idle_ms(wall) < 60_000, "{access:?}");
    }

    /// Keys inline (up to 22 bytes) and boxed (longer) are found by their bytes, expire by
    /// their deadline and come back whole; a key stays 24 bytes.
    #[test]
    fn inline_and_boxed_keys_are_found_by_their_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        let mut ks = Keyspace::default();
        let keys: Vec<Vec<u8>> = [0, 1, 21, 22, 23, 200]
            .iter()
            .map(|&n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            ks.insert(k, s(&format!("v{i}")), if i % 2 == 0 { 10 } else { 0 });
        }
        let stored = |len: usize| ks.iter().find(|(k, _)| k.len() == len).map(|(k, _)| k);
        assert!(matches!(stored(22), Some(Key::Inline { .. })));
        assert!(matches!(stored(23), Some(Key::Boxed(_))));
        assert_eq!(table::HashOrderedTable::<(Key, Entry)>::slot_size(), 80);
        for (i, k) in keys.iter().enumerate() {
            let e = ks.get(k, 5).expect("present");
            assert_eq!(e.value, s(&format!("v{i}")));
        }
        let mut all = ks.keys(5, |_| true);
        all.sort();
        let mut want: Vec<Bytes> = keys.iter().map(|k| Bytes::copy_from_slice(k)).collect();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(ks.expire_cycle(11, 100), 3);
        assert!(ks.get(&keys[0], 11).is_none());
        assert!(ks.get(&keys[1], 11).is_some());
    }

    fn s(v: &str) -> Value {
        Value::Str(crate::value::Str::copy_from(v.as_bytes()))
    }

    /// A keyspace that takes another's hash key gets that one's keys in its own hash order
    /// (what a base holds): they are appended, the table is laid out once they are settled,
    /// and the result is the same keyspace (keys, order, deadlines). A key twice is refused
    /// while appending too, and a keyspace holding keys keeps its hash key.
    #[test]
    fn a_load_in_the_keyspaces_own_hash_order_appends_then_lays_out() {
        let mut written = Keyspace::default();
        let far = 4_102_444_800_000; // 2100-01-01
        for i in 0..2000 {
            let key = format!("key:{i}");
            written.insert(
                key.as_bytes(),
                s(&i.to_string()),
                if i % 7 == 0 { far } else { 0 },
            );
        }
        let mut loaded = Keyspace::default();
        assert_ne!(loaded.hash_key(), written.hash_key());
        assert!(loaded.adopt_hash_key(written.hash_key()));
        for (key, e) in written.iter() {
            assert!(loaded.insert_loaded(key, e.value.clone(), e.expire_at));
        }
        assert!(!loaded.map.is_laid_out());
        let (first, e) = written.iter().next().expect("a key");
        assert!(!loaded.insert_loaded(first, e.value.clone(), 0));
        loaded.settle_loaded();
        assert!(loaded.map.is_laid_out());
        let order = |ks: &Keyspace| -> Vec<(Key, Value, u64)> {
            ks.iter()
                .map(|(k, e)| (k.clone(), e.value.clone(), e.expire_at))
                .collect()
        };
        assert_eq!(order(&loaded), order(&written));
        assert_eq!(loaded.expires_count(), written.expires_count());
        assert_eq!(loaded.used_memory(), written.used_memory());
        assert!(loaded.get(b"key:1999", 5).is_some());
        assert!(!loaded.adopt_hash_key([7; 16]));
        assert_eq!(loaded.hash_key(), written.hash_key());
        // Emptied (FLUSHALL, FLUSHDB): a new key.
        loaded.clear(Cause::ServerDel);
        assert_ne!(loaded.hash_key(), written.hash_key());
    }

    /// Keys that come out of the keyspace's hash order (a base without the hash key, or
    /// from another keyspace) are inserted as usual from the first one out of order.
    #[test]
    fn a_load_out_of_hash_order_inserts() {
        let mut written = Keyspace::default();
        for i in 0..500 {
            written.insert(format!("key:{i}").as_bytes(), s("v"), 0);
        }
        let mut loaded = Keyspace::default();
        for (key, e) in written.iter() {
            assert!(loaded.insert_loaded(key, e.value.clone(), 0));
        }
        assert!(loaded.map.is_laid_out());
        loaded.settle_loaded();
        assert_eq!(loaded.len(), 500);
        for i in 0..500 {
            assert!(loaded.get(format!("key:{i}").as_bytes(), 5).is_some());
        }
    }

    #[test]
    fn lazy_and_active_expiry() {
        let mut ks = Keyspace::default();
        ks.insert(b"a", s("1"), 100);
        ks.insert(b"b", s("2"), 200);
        ks.insert(b"c", s("3"), 0);
        assert!(ks.get(b"a", 99).is_some());
        assert!(
            ks.get(b"a", 100).is_none(),
            "lazily expired at its deadline"
        );
        assert_eq!(ks.len(), 2);
        assert_eq!(ks.expire_cycle(150, 10), 0);
        assert_eq!(
            ks.expire_cycle(250, 10),
            1,
            "b is reclaimed without being read"
        );
        assert_eq!(ks.len(), 1);
        assert_eq!(ks.expires_count(), 0);
        assert_eq!(ks.expired_keys, 2);
    }

    #[test]
    fn scan_returns_every_key_present_throughout_despite_deletions() {
        let mut ks = Keyspace::default();
        for i in 0..100 {
            ks.insert(format!("k{i}").as_bytes(), s("v"), 0);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            let (keys, next) = ks.scan(cursor, 7, 1, |_, _| true);
            for k in keys {
                assert!(seen.insert(k.clone()), "{k:?} returned twice");
            }
            // Delete keys with an even index while scanning: they may or may not be returned.
            ks.remove(format!("k{}", round * 2).as_bytes());
            round += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for i in 0..100 {
            if i % 2 == 1 || i >= round * 2 {
                assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missing");
            }
        }
    }

    /// The table grows many times over while a scan is under way (and shrinking runs move
    /// keys back on removal): every key there from start to end is returned, exactly once.
    #[test]
    fn scan_returns_every_key_once_while_the_table_grows_under_it() {
        let mut ks = Keyspace::default();
        for i in 0..50 {
            ks.insert(format!("old{i}").as_bytes(), s("v"), 0);
        }
        let mut seen = std::collections::HashSet::new();
        let (mut cursor, mut added) = (0, 0);
        loop {
            let (keys, next) = ks.scan(cursor, 3, 1, |_, _| true);
            for k in keys {
                assert!(seen.insert(k.clone()), "{k:?} returned twice");
            }
            // Keys added ahead of the cursor are visited too: add for a while, then let the
            // scan finish.
            for _ in 0..if added < 4000 { 200 } else { 0 } {
                ks.insert(format!("new{added}").as_bytes(), s("v"), 0);
                added += 1;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(added, 4000, "the table grew under the scan");
        for i in 0..50 {
            assert!(
                seen.contains(format!("old{i}").as_bytes()),
                "old{i} missing"
            );
        }
    }

    /// A cursor no step returned (a client's own number, or one past the cursor's bits) ends
    /// the scan or continues from that hash; it never panics.
    #[test]
    fn scan_accepts_any_cursor() {
        let mut ks = Keyspace::default();
        for i in 0..20 {
            ks.insert(format!("k{i}").as_bytes(), s("v"), 0);
        }
        for cursor in [
            1,
            12345,
            (1 << SCAN_CURSOR_BITS) - 1,
            1 << SCAN_CURSOR_BITS,
            u64::MAX,
        ] {
            let (keys, next) = ks.scan(cursor, 100, 1, |_, _| true);
            assert!(keys.len() <= 20 && next == 0, "cursor {cursor}");
        }
        assert_eq!(ks.scan(0, 100, 1, |_, _| true).0.len(), 20);
    }
}
