//! A shard's keyspace: keys, values, deadlines.
//!
//! Keys live in an insertion-ordered hash map so that `RANDOMKEY` is O(1) and `SCAN` can walk
//! positions (see [`Keyspace::scan`] for why walking downwards keeps SCAN's guarantee even
//! though deletions move entries). Deadlines are kept twice: on the entry (for the lazy check on
//! every access) and in an ordered set (so active expiry reclaims exactly the keys whose time
//! has come, without sampling).
//!
//! Every stored key and value is copied out of the request buffer, so the keyspace never pins a
//! connection's read buffer in memory.

use std::collections::BTreeSet;

use bytes::Bytes;
use indexmap::map::raw_entry_v1::RawEntryMut;
use indexmap::map::RawEntryApiV1;
use indexmap::IndexMap;

/// A value. Only strings exist so far; the enum is where other types will go.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Bytes),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    /// Absolute deadline in Unix milliseconds; 0 = no expiry.
    pub expire_at: u64,
}

type Map = IndexMap<Bytes, Entry, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct Keyspace {
    map: Map,
    deadlines: BTreeSet<(u64, Bytes)>,
    /// Keys removed because their deadline passed (INFO `expired_keys`).
    pub expired_keys: u64,
    /// Keys removed by expiry (lazy or active) that the store has not yet logged. Replay runs
    /// without expiry, so every removal by time must reach the log as a deletion, in order
    /// with the writes around it: [`Keyspace::take_expired`] hands them over.
    expired: Vec<Bytes>,
}

/// `now` value that disables expiry, used while replaying a log. Every expiration that
/// happened while serving is in the log as a deletion, at the place where it happened, so a
/// key whose deadline had passed but that nobody had touched yet is still there when the
/// records after it are applied, exactly as when they first ran; active expiry reclaims it once
/// serving starts.
pub const NO_EXPIRY_CHECK: u64 = 0;

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

    fn is_expired(entry: &Entry, now: u64) -> bool {
        now != NO_EXPIRY_CHECK && entry.expire_at != 0 && entry.expire_at <= now
    }

    /// The position of `key` if it is live; an expired key is removed on the way (lazy
    /// expiry). One hash lookup.
    fn live_index(&mut self, key: &[u8], now: u64) -> Option<usize> {
        let idx = self.map.get_index_of(key)?;
        if Self::is_expired(&self.map[idx], now) {
            if let Some((stored, entry)) = self.map.swap_remove_index(idx) {
                if entry.expire_at != 0 {
                    self.deadlines.remove(&(entry.expire_at, stored.clone()));
                }
                self.expired.push(stored);
            }
            self.expired_keys += 1;
            return None;
        }
        Some(idx)
    }

    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        let idx = self.live_index(key, now)?;
        Some(&self.map[idx])
    }

    pub fn get_mut(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        let idx = self.live_index(key, now)?;
        Some(&mut self.map[idx])
    }

    pub fn contains(&mut self, key: &[u8], now: u64) -> bool {
        self.live_index(key, now).is_some()
    }

    /// `key`'s entry if it is live at `now`, without removing an expired one: for readers
    /// outside command execution (WATCH, the read half of a cross-shard RENAME), which must
    /// not change the keyspace.
    pub fn peek(&self, key: &[u8], now: u64) -> Option<&Entry> {
        self.map.get(key).filter(|e| !Self::is_expired(e, now))
    }

    /// The keys removed by expiry since the last call, in the order they were removed.
    pub fn take_expired(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.expired)
    }

    /// Whether an expiry removal is waiting to be logged.
    pub fn has_expired(&self) -> bool {
        !self.expired.is_empty()
    }

    /// Inserts or replaces `key` with a copy of it. `expire_at` 0 = no expiry. The key is
    /// hashed once, whether it is new or not.
    pub fn insert(&mut self, key: &[u8], value: Value, expire_at: u64) {
        match self.map.raw_entry_mut_v1().from_key(key) {
            RawEntryMut::Occupied(mut o) => {
                let entry = o.get_mut();
                let old = entry.expire_at;
                entry.value = value;
                entry.expire_at = expire_at;
                if old != expire_at {
                    self.move_deadline(key, old, expire_at);
                }
            }
            RawEntryMut::Vacant(v) => {
                let key = Bytes::copy_from_slice(key);
                if expire_at != 0 {
                    self.deadlines.insert((expire_at, key.clone()));
                }
                v.insert(key, Entry { value, expire_at });
            }
        }
    }

    /// Changes the deadline of an existing key. Returns false if the key does not exist.
    pub fn set_expire(&mut self, key: &[u8], expire_at: u64) -> bool {
        match self.map.get_mut(key) {
            Some(entry) => {
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
        // The stored key is the map's own copy, shared by reference count.
        let Some((stored, _)) = self.map.get_key_value(key) else {
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
        let (stored, entry) = self.map.swap_remove_entry(key)?;
        if entry.expire_at != 0 {
            self.deadlines.remove(&(entry.expire_at, stored));
        }
        Some(entry)
    }

    /// Removes every key. Expirations not yet taken stay queued: they happened before.
    pub fn clear(&mut self) {
        self.map = Map::default();
        self.deadlines.clear();
    }

    /// Active expiry: removes up to `budget` keys whose deadline is at or before `now`.
    /// Returns how many were removed.
    pub fn expire_cycle(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            let Some((deadline, key)) = self.deadlines.first().cloned() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.map.swap_remove(&key);
            self.expired.push(key);
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
            if self.map.is_empty() {
                return None;
            }
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let idx = (seed >> 33) as usize % self.map.len();
            let (key, entry) = self.map.get_index(idx)?;
            if Self::is_expired(entry, now) {
                let key = key.clone();
                self.remove(&key);
                self.expired.push(key);
                self.expired_keys += 1;
                continue;
            }
            return Some(key.clone());
        }
        self.map.first().map(|(k, _)| k.clone())
    }

    /// One step of SCAN over this keyspace.
    ///
    /// `pos` is the exclusive upper bound of the positions still to visit; `None` starts a new
    /// scan. Positions are visited downwards. A deletion swaps the last entry into the deleted
    /// slot: the last entry is always in the visited (upper) region or is the entry being
    /// deleted, so an entry never moves from the unvisited region into the visited one, and
    /// every key present for the whole scan is returned (perhaps twice, which SCAN allows).
    /// Insertions append above the bound and are not guaranteed, as in Redis.
    /// Returns the keys visited (filtered by `filter`) and the next bound (0 = done).
    pub fn scan(
        &mut self,
        pos: Option<usize>,
        count: usize,
        now: u64,
        mut filter: impl FnMut(&[u8], &Value) -> bool,
    ) -> (Vec<Bytes>, usize) {
        let mut hi = pos.unwrap_or(self.map.len()).min(self.map.len());
        let mut out = Vec::new();
        let mut visited = 0;
        while hi > 0 && visited < count {
            hi -= 1;
            visited += 1;
            let Some((key, entry)) = self.map.get_index(hi) else {
                continue;
            };
            if Self::is_expired(entry, now) {
                continue;
            }
            if filter(key, &entry.value) {
                out.push(key.clone());
            }
        }
        (out, hi)
    }

    /// Every live key matching `filter`.
    pub fn keys(&self, now: u64, mut filter: impl FnMut(&[u8]) -> bool) -> Vec<Bytes> {
        self.map
            .iter()
            .filter(|(k, e)| !Self::is_expired(e, now) && filter(k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Iterates every entry (for rewrite and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Bytes::copy_from_slice(v.as_bytes()))
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
        let mut pos = None;
        let mut round = 0;
        loop {
            let (keys, next) = ks.scan(pos, 7, 1, |_, _| true);
            seen.extend(keys);
            // Delete keys with an even index while scanning: they may or may not be returned.
            ks.remove(format!("k{}", round * 2).as_bytes());
            round += 1;
            if next == 0 {
                break;
            }
            pos = Some(next);
        }
        for i in 0..100 {
            if i % 2 == 1 || i >= round * 2 {
                assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missing");
            }
        }
    }
}
