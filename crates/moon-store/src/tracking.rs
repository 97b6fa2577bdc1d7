//! Client-side caching: which clients read which keys of this shard (CLIENT TRACKING), and the
//! invalidations a change of those keys owes them.
//!
//! A key is tracked where it lives: a tracking client's read reaches the key's shard as a call
//! naming its reader (`crate::Call::track`), and the store
//! remembers the reader against the key. The next change of the key — a write, an expiry, an
//! eviction, a flush — produces one invalidation per reader and forgets them (Redis's
//! one-shot rule: the client reads the key again to be told again). Broadcast readers (BCAST)
//! are told of every change of a key under one of their prefixes, with no read needed. The
//! shard hands invalidations to the server, which delivers them to the reader's connection on
//! whatever shard it lives.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

/// A tracking client: its id, the shard its connection lives on, and NOLOOP (its own writes
/// do not invalidate its keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reader {
    pub client: u64,
    pub shard: usize,
    pub noloop: bool,
}

/// One invalidation owed to a reader: a key, or `None` for "everything" (a flush).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidation {
    pub reader: Reader,
    pub key: Option<Bytes>,
    /// For a broadcast reader, which of its prefixes matched (1-based; 0 otherwise): Redis
    /// sends one message per prefix, so the keys are grouped by it.
    pub prefix: u16,
}

/// This shard's tracking table.
#[derive(Default)]
pub struct Tracking {
    keys: HashMap<Bytes, Vec<Reader>>,
    /// The keys each client is remembered for: forgetting a client costs its own keys, not
    /// the whole table.
    by_client: HashMap<u64, HashSet<Bytes>>,
    /// Broadcast readers and their prefixes (an empty prefix matches every key).
    bcast: Vec<(Reader, Vec<Bytes>)>,
    pending: Vec<Invalidation>,
}

/// Keys remembered per shard at most; past it the oldest readers are invalidated at once
/// (Redis's `tracking-table-max-keys`, fixed here).
pub const MAX_TRACKED_KEYS: usize = 1_000_000;

impl Tracking {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.bcast.is_empty()
    }

    /// Remembers that `reader` read `key`.
    pub fn remember(&mut self, reader: Reader, key: &[u8]) {
        if self.keys.len() >= MAX_TRACKED_KEYS && !self.keys.contains_key(key) {
            // Make room: its readers are told now (as if it changed) rather than the table
            // growing without bound; broadcast readers are not concerned.
            if let Some(k) = self.keys.keys().next().cloned() {
                self.tell_readers(&k, None);
            }
        }
        let key = Bytes::copy_from_slice(key);
        let readers = self.keys.entry(key.clone()).or_default();
        // One entry per client (its NOLOOP as it is now), as Redis keys its table by client.
        match readers.iter_mut().find(|r| r.client == reader.client) {
            Some(r) => *r = reader,
            None => {
                readers.push(reader);
                self.by_client.entry(reader.client).or_default().insert(key);
            }
        }
    }

    /// The client turned NOLOOP on or off (CLIENT TRACKING ON again): the keys it read
    /// before follow, as Redis looks at the client's flag when a key changes.
    pub fn set_noloop(&mut self, client: u64, noloop: bool) {
        for key in self.by_client.get(&client).into_iter().flatten() {
            for r in self.keys.get_mut(key).into_iter().flatten() {
                if r.client == client {
                    r.noloop = noloop;
                }
            }
        }
    }

    /// The readers of `key` are owed an invalidation, and forgotten.
    fn tell_readers(&mut self, key: &[u8], writer: Option<u64>) {
        if let Some(readers) = self.keys.remove(key) {
            for reader in readers {
                if let Some(keys) = self.by_client.get_mut(&reader.client) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.by_client.remove(&reader.client);
                    }
                }
                if !(reader.noloop && Some(reader.client) == writer) {
                    self.pending.push(Invalidation {
                        reader,
                        key: Some(Bytes::copy_from_slice(key)),
                        prefix: 0,
                    });
                }
            }
        }
    }

    /// `key` changed (written by client `writer`, if a client's command changed it).
    pub fn changed(&mut self, key: &[u8], writer: Option<u64>) {
        self.tell_readers(key, writer);
        for (reader, prefixes) in &self.bcast {
            if reader.noloop && Some(reader.client) == writer {
                continue;
            }
            if prefixes.is_empty() {
                self.pending.push(Invalidation {
                    reader: *reader,
                    key: Some(Bytes::copy_from_slice(key)),
                    prefix: 1,
                });
            }
            // A key under two of its prefixes is in both prefixes' messages, as in Redis.
            for (i, p) in prefixes.iter().enumerate() {
                if key.starts_with(p) {
                    self.pending.push(Invalidation {
                        reader: *reader,
                        key: Some(Bytes::copy_from_slice(key)),
                        prefix: (i + 1).min(u16::MAX as usize) as u16,
                    });
                }
            }
        }
    }

    /// Every key changed (FLUSHALL, FLUSHDB, SWAPDB): one "everything" invalidation per
    /// reader.
    pub fn flushed(&mut self) {
        let mut told: HashSet<Reader> = HashSet::new();
        for (_, readers) in self.keys.drain() {
            told.extend(readers);
        }
        self.by_client.clear();
        told.extend(self.bcast.iter().map(|(r, _)| *r));
        self.pending
            .extend(told.into_iter().map(|reader| Invalidation {
                reader,
                key: None,
                prefix: 0,
            }));
    }

    /// Starts (or replaces) broadcast tracking for `reader`'s client.
    pub fn broadcast(&mut self, reader: Reader, prefixes: Vec<Bytes>) {
        self.bcast.retain(|(r, _)| r.client != reader.client);
        self.bcast.push((reader, prefixes));
    }

    /// Forgets everything about `client` (CLIENT TRACKING OFF, disconnect).
    pub fn forget(&mut self, client: u64) {
        self.bcast.retain(|(r, _)| r.client != client);
        for key in self.by_client.remove(&client).unwrap_or_default() {
            if let Some(readers) = self.keys.get_mut(&key) {
                readers.retain(|r| r.client != client);
                if readers.is_empty() {
                    self.keys.remove(&key);
                }
            }
        }
    }

    pub fn take_pending(&mut self) -> Vec<Invalidation> {
        std::mem::take(&mut self.pending)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(client: u64, noloop: bool) -> Reader {
        Reader {
            client,
            shard: 0,
            noloop,
        }
    }

    #[test]
    fn a_read_key_is_invalidated_once() {
        let mut t = Tracking::default();
        t.remember(r(1, false), b"k");
        t.remember(r(2, true), b"k");
        t.changed(b"k", Some(2));
        let got: Vec<u64> = t.take_pending().iter().map(|i| i.reader.client).collect();
        assert_eq!(got, [1], "NOLOOP reader 2 wrote it itself");
        t.changed(b"k", None);
        assert!(t.take_pending().is_empty(), "one-shot");
    }

    #[test]
    fn a_client_is_one_reader_of_a_key_with_its_noloop_as_it_is_now() {
        let mut t = Tracking::default();
        t.remember(r(1, false), b"k");
        t.remember(r(1, true), b"k");
        t.remember(r(1, true), b"j");
        assert_eq!(t.keys[&b"k"[..]].len(), 1, "read twice, one entry");
        t.set_noloop(1, false);
        t.changed(b"k", Some(1));
        t.changed(b"j", Some(1));
        assert_eq!(t.take_pending().len(), 2, "NOLOOP off for both keys");
    }

    #[test]
    fn broadcast_prefixes_and_flush() {
        let mut t = Tracking::default();
        t.broadcast(r(1, false), vec![Bytes::from_static(b"user:")]);
        t.changed(b"user:1", None);
        t.changed(b"order:1", None);
        assert_eq!(t.take_pending().len(), 1);
        t.remember(r(2, false), b"a");
        t.flushed();
        let p = t.take_pending();
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|i| i.key.is_none()));
    }
}
