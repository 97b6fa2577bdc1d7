//! A keyspace's snapshot without a pause: copy-on-write, one key at a time, in hash order.
//!
//! **What.** BGREWRITEAOF writes every key as it was at one instant, the cut (an LSN the new
//! base stands for). Copying a million keys at that instant held the shard for 70 ms. Now the
//! cut only marks the keyspace ([`Keyspace::begin_cut`]). The base writer then walks the table
//! in hash order, a few thousand keys per step, with the shard serving between steps
//! ([`Keyspace::cut_step`]). A key the walk has not reached keeps its state at the cut the
//! first time anything changes it.
//!
//! **Why the copy is exact.** The walk has a frontier, a hash: every key below it has been
//! handed out, every key at or above it is still to come. Every change to the table goes
//! through one of two calls, before it happens:
//! - [`Keyspace::keep_before_change`], for a key that is there (a write, a new deadline, a
//!   removal by a command, by expiry or by eviction);
//! - [`Keyspace::keep_absent`], for a key about to be created.
//!
//! For a key at or above the frontier that has no state kept yet, they keep its state at the
//! cut. That is its state now: had anything changed it since, a state would be kept already.
//! A step hands out, for the hashes it covers, each kept state ("absent" is left out) and each
//! key in the table that has none. The frontier moves only inside a step, and no change runs
//! in the middle of a step. Keys whose deadline had passed at the cut are left out, as they
//! were by the copy.
//!
//! Keys come out in the table's hash order, as the copy gave them, so a base written from
//! them loads by appending (`moon-shard`'s `base`).
//!
//! **Emptying.** FLUSHDB or FLUSHALL during a cut ([`Keyspace::clear`]) hands the emptied
//! table to the cut instead of freeing it ([`Keyspace::detach_cut`]): the walk goes on over
//! it, nothing is copied, and it is freed when the walk ends (memory the account no longer
//! shows until then, as Redis's forked child keeps the pages a FLUSHALL frees). The keyspace's
//! new table holds only keys made after the cut, under a new hash key: none of it is the
//! snapshot's business.

use std::collections::BTreeMap;

use super::{Key, Keyspace, Value};

/// The state of a key at the cut: its value and deadline, or `None` if it did not exist (or
/// was dead already).
type KeptState = Option<(Value, u64)>;

/// A snapshot in progress over one keyspace.
pub(crate) struct Cut {
    /// The database the keyspace was at the cut. SELECT and SWAPDB move keyspaces between
    /// database numbers; the snapshot belongs to the number it was taken under.
    pub(crate) db: usize,
    /// Keys whose deadline is at or before this (Unix ms) were dead at the cut: left out.
    at: u64,
    /// Every key whose hash is below it has been handed out.
    frontier: u32,
    /// The state at the cut of each key at or above the frontier that changed since, by hash
    /// (distinct keys may share one).
    kept: BTreeMap<u32, Vec<(Key, KeptState)>>,
    /// The table as it was when FLUSHDB/FLUSHALL emptied the keyspace: the walk goes on over
    /// it, and the keyspace's own table is no longer the snapshot's business. Freed on the
    /// lazyfree thread whenever the cut goes (its flush has replied long ago: nobody waits
    /// for that memory, and every client would wait for a free on the shard).
    detached: Option<super::Map>,
}

impl Cut {
    /// Whether a change to a key with this hash must keep its state first.
    fn needs(&self, hash: u32, key: &[u8]) -> bool {
        self.detached.is_none()
            && hash >= self.frontier
            && !self
                .kept
                .get(&hash)
                .is_some_and(|keys| keys.iter().any(|(k, _)| **k == *key))
    }

    fn keep(&mut self, hash: u32, key: Key, state: KeptState) {
        self.kept.entry(hash).or_default().push((key, state));
    }

    /// `value` and `expire_at` as the snapshot holds them: nothing if dead at the cut.
    fn state(&self, value: &Value, expire_at: u64) -> KeptState {
        (expire_at == 0 || expire_at > self.at).then(|| (value.clone(), expire_at))
    }
}

/// What a cut starts from, per keyspace: how many keys it will hand out and how many of them
/// have a deadline (a base announces both before its keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutSize {
    pub keys: u64,
    pub expires: u64,
}

impl Keyspace {
    /// Starts a snapshot of this keyspace as it is now, under database number `db`; keys whose
    /// deadline is at or before `at` are left out. See [`cut`](self) for how it stays exact
    /// while the keyspace changes. Replaces a snapshot in progress.
    pub fn begin_cut(&mut self, db: usize, at: u64) -> CutSize {
        let dead = self
            .deadlines
            .range(..(at.saturating_add(1), Key::copy_from(b"")))
            .count() as u64;
        self.cut = Some(Box::new(Cut {
            db,
            at,
            frontier: 0,
            kept: BTreeMap::new(),
            detached: None,
        }));
        CutSize {
            keys: (self.map.len() as u64).saturating_sub(dead),
            expires: (self.deadlines.len() as u64).saturating_sub(dead),
        }
    }

    /// The database number a snapshot in progress was taken under.
    pub fn cut_db(&self) -> Option<usize> {
        self.cut.as_ref().map(|c| c.db)
    }

    /// Drops a snapshot in progress (a rewrite that failed).
    pub fn end_cut(&mut self) {
        self.cut = None;
    }

    /// Hands the next keys of the snapshot to `emit` (key, value, deadline; in hash order),
    /// about `budget` of them (never splitting keys that share a hash). True, and the
    /// snapshot over, once every key has been handed out (at once if there is no snapshot).
    pub fn cut_step(&mut self, budget: usize, mut emit: impl FnMut(&[u8], &Value, u64)) -> bool {
        let Keyspace { map, cut, .. } = self;
        let Some(c) = cut.as_deref_mut() else {
            return true;
        };
        let Cut {
            at,
            frontier,
            kept,
            detached,
            ..
        } = c;
        let (at, from, budget) = (*at, *frontier, budget.max(1));
        let table = detached.as_ref().unwrap_or(&*map);
        // The hashes this step covers: from the frontier up to `to` (excluded), or all that is
        // left if `to` is None. Counted over the table and the kept states both, so that a step
        // stays about `budget` keys however many were removed from the table.
        let mut to = kept.keys().nth(budget).copied();
        let (mut last, mut n) = (None, 0);
        for (hash, _) in table.scan_from(from) {
            if to.is_some_and(|t| hash >= t) {
                break;
            }
            if n >= budget && last != Some(hash) {
                to = Some(hash);
                break;
            }
            last = Some(hash);
            n += 1;
        }
        let rest = match to {
            Some(t) => kept.split_off(&t),
            None => BTreeMap::new(),
        };
        let these = std::mem::replace(kept, rest);
        // Two sorted runs, merged by hash: the table's keys without a kept state, and the
        // kept states.
        let mut in_table = table
            .scan_from(from)
            .take_while(|(hash, _)| to.is_none_or(|t| *hash < t))
            .peekable();
        let mut in_kept = these
            .iter()
            .flat_map(|(hash, keys)| keys.iter().map(move |(k, s)| (*hash, k, s)))
            .peekable();
        loop {
            let from_table = match (in_table.peek(), in_kept.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((t, _)), Some((k, _, _))) => t < k,
            };
            if from_table {
                let Some((hash, (key, entry))) = in_table.next() else {
                    break;
                };
                let changed = these
                    .get(&hash)
                    .is_some_and(|keys| keys.iter().any(|(k, _)| k == key));
                if !changed && (entry.expire_at == 0 || entry.expire_at > at) {
                    emit(key, &entry.value, entry.expire_at);
                }
            } else if let Some((_, key, Some((value, expire_at)))) = in_kept.next() {
                emit(key, value, *expire_at);
            }
        }
        drop(in_table);
        if let Some(t) = to {
            *frontier = t;
            return false;
        }
        self.cut = None;
        true
    }

    /// Before the entry at `pos` changes or goes: keeps its state at the cut, if a snapshot
    /// in progress still needs it.
    pub(super) fn keep_before_change(&mut self, pos: usize) {
        let Keyspace { map, cut, .. } = self;
        let Some(c) = cut.as_deref_mut() else {
            return;
        };
        if let (Some(hash), Some((key, entry))) = (map.hash_at(pos), map.get(pos)) {
            if c.needs(hash, key) {
                let state = c.state(&entry.value, entry.expire_at);
                c.keep(hash, key.clone(), state);
            }
        }
    }

    /// Before `key` (not in the table, with this hash) is created: keeps "absent", if a
    /// snapshot in progress still needs it.
    pub(super) fn keep_absent(&mut self, hash: u32, key: &[u8]) {
        if let Some(c) = self.cut.as_deref_mut() {
            if c.needs(hash, key) {
                c.keep(hash, Key::copy_from(key), None);
            }
        }
    }

    /// The keyspace is being emptied (FLUSHDB/FLUSHALL): if a snapshot is walking the table,
    /// it takes the table and goes on over it. Returns the table to free, or nothing if the
    /// snapshot took it.
    pub(super) fn detach_cut(&mut self) -> Option<super::Map> {
        let table = std::mem::take(&mut self.map);
        match self.cut.as_deref_mut() {
            Some(c) if c.detached.is_none() => {
                c.detached = Some(table);
                None
            }
            _ => Some(table),
        }
    }
}

impl Drop for Cut {
    /// However the cut goes (its walk over, a rewrite abandoned, the keyspace itself dropped
    /// by a rebuild from the log), a detached table is freed on the lazyfree thread.
    fn drop(&mut self) {
        if let Some(table) = self.detached.take() {
            let keys = table.len();
            crate::lazyfree::dispose_all(table, keys, crate::lazyfree::Cause::Async);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::KeyHasher;
    use crate::evict::{EvictionPolicy, MemoryLimit};
    use crate::keyspace::{Keyspace, Value};
    use crate::lazyfree::Cause;

    fn s(v: &[u8]) -> Value {
        Value::Str(crate::value::Str::copy_from(v))
    }

    fn text(v: &Value) -> Vec<u8> {
        match v {
            Value::Str(s) => s.to_vec(),
            Value::Hash(h) => {
                format!("{:?}", (h.get(b"a"), h.get(b"b"), h.field_deadline(b"b"))).into_bytes()
            }
            _ => unreachable!("only strings and hashes here"),
        }
    }

    /// Keys: short (inline) and long (boxed), enough of them to make the table grow and shrink.
    fn key(i: u16) -> Vec<u8> {
        if i.is_multiple_of(7) {
            format!("a-long-key-that-does-not-fit-inline-{i}").into_bytes()
        } else {
            format!("k{i}").into_bytes()
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// SET-like: the value replaced (or created) with this deadline (0 none).
        Insert(u16, u16, u64),
        /// A hash whose field `b` expires after this many ms (field expiry changes the value,
        /// or removes the key with its last field).
        HashField(u16, u64),
        /// Many keys created at once (the table grows).
        InsertMany(u16, u16),
        /// APPEND-like: the value changed in place.
        Append(u16),
        Expire(u16, u64),
        Remove(u16),
        /// Many keys removed at once (the table shrinks).
        RemoveMany(u16, u16),
        /// A read, which removes the key if its deadline passed (lazy expiry).
        Get(u16),
        ExpireCycle(usize),
        Evict,
        Clear,
        Advance(u64),
        /// The base writer's step, with this budget.
        Step(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0u16..300;
        prop_oneof![
            6 => (k.clone(), any::<u16>(), prop::sample::select(&[0u64, 0, 5, 50, 500][..]))
                .prop_map(|(k, v, t)| Op::Insert(k, v, t)),
            1 => (k.clone(), 1u16..120).prop_map(|(k, n)| Op::InsertMany(k, n)),
            2 => (k.clone(), 1u64..60).prop_map(|(k, t)| Op::HashField(k, t)),
            3 => k.clone().prop_map(Op::Append),
            2 => (k.clone(), prop::sample::select(&[0u64, 5, 50][..]))
                .prop_map(|(k, t)| Op::Expire(k, t)),
            3 => k.clone().prop_map(Op::Remove),
            1 => (k.clone(), 1u16..120).prop_map(|(k, n)| Op::RemoveMany(k, n)),
            2 => k.prop_map(Op::Get),
            1 => (1usize..20).prop_map(Op::ExpireCycle),
            1 => Just(Op::Evict),
            1 => Just(Op::Clear),
            2 => (1u64..40).prop_map(Op::Advance),
            4 => (1usize..64).prop_map(Op::Step),
        ]
    }

    /// What the keyspace holds at `now` as a snapshot sees it: live keys, value and deadline.
    fn live(ks: &Keyspace, now: u64) -> BTreeMap<Vec<u8>, (Vec<u8>, u64)> {
        ks.iter()
            .filter(|(_, e)| e.expire_at == 0 || e.expire_at > now)
            .map(|(k, e)| (k.to_vec(), (text(&e.value), e.expire_at)))
            .collect()
    }

    fn apply(ks: &mut Keyspace, op: &Op, now: &mut u64) {
        let evict = MemoryLimit {
            max: 1,
            policy: EvictionPolicy::AllKeysRandom,
            samples: 5,
        };
        match *op {
            Op::Insert(k, v, t) => {
                let at = if t == 0 { 0 } else { *now + t };
                ks.insert(&key(k), s(&v.to_le_bytes()), at);
            }
            Op::HashField(k, t) => {
                let enc = crate::value::Encodings::default();
                let mut h = crate::value::Hash::default();
                if k.is_multiple_of(2) {
                    h.set(b"a", b"x", &enc);
                }
                h.set(b"b", b"y", &enc);
                h.set_field_deadline(b"b", *now + t);
                ks.insert(&key(k), Value::Hash(h), 0);
            }
            Op::InsertMany(k, n) => {
                for i in k..k.saturating_add(n) {
                    ks.insert(&key(i), s(b"many"), 0);
                }
            }
            Op::Append(k) => {
                ks.modify(&key(k), *now, |v| {
                    if !matches!(v, Value::Str(_)) {
                        return;
                    }
                    let mut t = text(v);
                    t.push(b'+');
                    *v = s(&t);
                });
            }
            Op::Expire(k, t) => {
                ks.set_expire(&key(k), if t == 0 { 0 } else { *now + t });
            }
            Op::Remove(k) => {
                ks.remove(&key(k));
            }
            Op::RemoveMany(k, n) => {
                for i in k..k.saturating_add(n) {
                    ks.remove(&key(i));
                }
            }
            Op::Get(k) => {
                ks.get(&key(k), *now);
            }
            Op::ExpireCycle(budget) => {
                ks.expire_cycle(*now, budget);
            }
            Op::Evict => {
                ks.evict_one(&evict, *now);
            }
            Op::Clear => ks.clear(Cause::ServerDel),
            Op::Advance(ms) => *now += ms,
            Op::Step(_) => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the keyspace goes through while a snapshot is taken a step at a time —
        /// writes, new deadlines, removals by commands, expiry and eviction, growth, shrinking,
        /// emptying — the snapshot hands out exactly the live keys at the cut, each once, with
        /// its value and deadline then, in the hash order of the cut. (Fails if any change
        /// skips keeping the state: each of `keep_before_change`'s and `keep_absent`'s calls
        /// was taken out in turn.)
        #[test]
        fn a_snapshot_taken_step_by_step_is_the_keyspace_at_the_cut(
            before in prop::collection::vec(op(), 0..80),
            during in prop::collection::vec(op(), 0..200),
        ) {
            let mut ks = Keyspace::default();
            let mut now = 1_000u64;
            for op in before.iter().filter(|op| !matches!(op, Op::Step(_))) {
                apply(&mut ks, op, &mut now);
            }
            let expected = live(&ks, now);
            let hasher = KeyHasher(siphasher::sip::SipHasher13::new_with_key(&ks.hash_key()));
            let size = ks.begin_cut(3, now);
            prop_assert_eq!(size.keys, expected.len() as u64);
            let with_deadline = expected.values().filter(|(_, at)| *at != 0).count() as u64;
            prop_assert_eq!(size.expires, with_deadline);
            let mut got: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
            let mut done = false;
            // A step hands out at most `budget` keys of the table and the kept states of at
            // most `budget` hashes, however many keys left the table meanwhile.
            let step = |ks: &mut Keyspace, budget: usize, got: &mut Vec<_>| {
                let before = got.len();
                let done =
                    ks.cut_step(budget, |k, v, at| got.push((k.to_vec(), text(v), at)));
                (done, got.len() - before <= 2 * budget.max(1))
            };
            for op in &during {
                if done {
                    break;
                }
                match op {
                    Op::Step(budget) => {
                        let (over, bounded) = step(&mut ks, *budget, &mut got);
                        prop_assert!(bounded, "a step of {} stayed bounded", budget);
                        done = over;
                    }
                    op => apply(&mut ks, op, &mut now),
                }
                prop_assert_eq!(ks.cut_db(), (!done).then_some(3));
            }
            while !done {
                let (over, bounded) = step(&mut ks, 7, &mut got);
                prop_assert!(bounded, "a step of 7 stayed bounded");
                done = over;
            }
            prop_assert_eq!(ks.cut_db(), None);
            let hashes: Vec<u64> = got.iter().map(|(k, _, _)| hasher.0.hash(k) >> 32).collect();
            prop_assert!(hashes.windows(2).all(|w| w[0] <= w[1]), "in hash order");
            let n = got.len();
            let got: BTreeMap<_, _> = got.into_iter().map(|(k, v, at)| (k, (v, at))).collect();
            prop_assert_eq!(got.len(), n, "each key once");
            prop_assert_eq!(got, expected);
        }
    }

    /// A snapshot of an empty keyspace is over at the first step, and a step of budget 0
    /// still makes progress.
    #[test]
    fn an_empty_keyspace_hands_out_nothing() {
        let mut ks = Keyspace::default();
        let size = ks.begin_cut(0, 0);
        assert_eq!((size.keys, size.expires), (0, 0));
        assert!(ks.cut_step(10, |_, _, _| panic!("no key")));
        assert_eq!(ks.cut_db(), None);
        // A budget of 0 still moves on.
        ks.insert(b"a", s(b"1"), 0);
        ks.insert(b"b", s(b"2"), 0);
        ks.begin_cut(0, 0);
        let mut n = 0;
        while !ks.cut_step(0, |_, _, _| n += 1) {}
        assert_eq!(n, 2);
    }
}
