//! The keyspace's hash table: one array of slots kept in hash order.
//!
//! **What.** Each slot holds a 32-bit hash, a 32-bit word of the caller's and the item itself
//! (the key inline, its entry beside it), so a lookup touches one place in memory: the slot
//! at the key's home and, when the home is taken, the slots right after it. There is no
//! separate index and no control array, and no pointer to follow.
//!
//! **Why 32 bits.** Homes come from the hash's top bits, and a run is searched by hash then
//! by key, so 32 bits place and tell apart far more keys than a shard holds in memory (two
//! keys in 4 billion share a hash; the key comparison settles it). The 4 bytes saved hold the
//! caller's word, which would otherwise take a word of its own in the item.
//!
//! **How.** A hash's *home* is `hash * homes / 2^32`: it grows with the hash, so the table
//! can keep every item in hash order with linear probing. An item sits at or after its home,
//! items with smaller hashes before it. That is Robin Hood hashing in its sorted form:
//! - a lookup walks forward from the home and stops at the first larger hash or empty slot,
//!   so a key that is absent costs no more than one that is present;
//! - an insertion shifts the rest of its run one slot right;
//! - a removal shifts the displaced items after it one slot left ("backward shift"), so
//!   there are no tombstones.
//!
//! The array ends with some slack instead of wrapping round, so the whole array is in hash
//! order, which three users rely on:
//! - **SCAN** ([`HashOrderedTable::scan_from`]): a cursor is a hash, and a walk from it meets
//!   every item whose hash is above it, whatever was inserted, removed or resized in between
//!   (Redis gets the same guarantee from reverse-binary cursors over chained buckets).
//! - **resizing**: growing (at 90 % full) and shrinking (below 10 %) lay the items out again
//!   in one pass within the same array, each moved at most once (see
//!   [`HashOrderedTable::rebuild`]).
//!
//! Sampling (RANDOMKEY, eviction) draws random slots until one holds an item: uniform over
//! the items. The hash is the caller's (the keyspace keys SipHash per keyspace, because
//! clients see hashes through SCAN cursors and KEYS' order).
//!
//! **Why not a general-purpose map.** `IndexMap` kept items in a dense vector with an index
//! beside it: a lookup read the index's control bytes, then its slot, then the item, where
//! this reads one run of slots. Positions in the dense vector served SCAN; a plain hashbrown
//! table keeps no order, so SCAN would lose keys across a resize.
//!
//! Positions (`usize`) name a slot until the next insertion or removal, which may shift it.

/// The share of homes that may be taken before the table grows (9/10), and the factor it
/// grows by (5/4): the table is between 72 % and 90 % full once it holds more than a few
/// items, so a slot (80 bytes for the keyspace) costs 89 to 111 bytes per key. Sorted linear
/// probing walks about five slots per lookup at 90 %, one or two cache lines past the home,
/// which the hardware prefetcher fetches ahead; the first line is the miss that counts.
/// Measured on 1M keys, (4/5, 3/2) replayed a log no faster and took 29 % more memory.
const MAX_LOAD: (usize, usize) = (9, 10);
const GROWTH: (usize, usize) = (5, 4);
const MIN_HOMES: usize = 8;

/// The hash and the word share what would be one aligned 8-byte word before the item: a
/// 32-bit hash alone would leave 4 bytes of padding in every slot (the keyspace's item is
/// 8-byte aligned), and the keyspace keeps each key's access clock there instead of in the
/// item (an 80-byte slot, where a 64-bit hash and the clock in the entry took 88).
#[repr(C)]
struct Slot<T> {
    hash: u32,
    word: u32,
    item: Option<T>,
}

impl<T> Slot<T> {
    const EMPTY: Slot<T> = Slot {
        hash: 0,
        word: 0,
        item: None,
    };
}

pub struct HashOrderedTable<T> {
    slots: Vec<Slot<T>>,
    /// How many homes hashes map onto (`slots.len()` minus the tail after the last home).
    homes: usize,
    len: usize,
    /// Homes [`HashOrderedTable::reserve`] made room for (0: none).
    reserved_homes: usize,
}

impl<T> Default for HashOrderedTable<T> {
    fn default() -> Self {
        HashOrderedTable {
            slots: Vec::new(),
            homes: 0,
            len: 0,
            reserved_homes: 0,
        }
    }
}

/// Slots after the last home, for runs that start near the end (a run never wraps round).
fn slack(homes: usize) -> usize {
    16 + homes / 64
}

fn home_of(hash: u32, homes: usize) -> usize {
    ((u128::from(hash) * homes as u128) >> 32) as usize
}

impl<T> HashOrderedTable<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, hash: u32) -> usize {
        home_of(hash, self.homes)
    }

    /// The position of the item with `hash` for which `eq` holds.
    pub fn find(&self, hash: u32, mut eq: impl FnMut(&T) -> bool) -> Option<usize> {
        if self.homes == 0 {
            return self.find_unlaid(hash, eq);
        }
        let mut i = self.home(hash);
        while let Some(slot) = self.slots.get(i) {
            let item = slot.item.as_ref()?;
            if slot.hash > hash {
                return None;
            }
            if slot.hash == hash && eq(item) {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// [`HashOrderedTable::find`] before the table is laid out: the items sorted at the
    /// front. A hash past the last item's (the next one of a load in hash order) costs one
    /// comparison; any other is found by bisection.
    fn find_unlaid(&self, hash: u32, mut eq: impl FnMut(&T) -> bool) -> Option<usize> {
        let items = self.slots.get(..self.len)?;
        if items.last().is_none_or(|s| s.hash < hash) {
            return None;
        }
        let from = items.partition_point(|s| s.hash < hash);
        let same = items.get(from..)?.iter().take_while(|s| s.hash == hash);
        same.zip(from..)
            .find(|(s, _)| s.item.as_ref().is_some_and(&mut eq))
            .map(|(_, i)| i)
    }

    /// Whether the table has been laid out over its homes (see [`HashOrderedTable::append`]).
    pub fn is_laid_out(&self) -> bool {
        self.homes != 0
    }

    /// Loads an item that comes in hash order: while the table has not been laid out (it was
    /// empty and has only been appended to), `item` goes right after the last one, and the
    /// table is laid out once, by [`HashOrderedTable::lay_out`] or the first
    /// [`HashOrderedTable::insert`]. A snapshot this table's hash order wrote (a base keeps
    /// its keyspace's hash key) is then written front to back, once, where inserting each
    /// item at its home touched the table at random and grew it on the way.
    ///
    /// Until then every other method still holds (each item's home is the first slot, and
    /// items are in hash order from it): [`HashOrderedTable::find`] bisects, a removal shifts
    /// the items after it.
    ///
    /// `Err(item)`, nothing changed, if the table is laid out or `hash` is below the last
    /// item's: the caller inserts it.
    pub fn append(&mut self, hash: u32, word: u32, item: T) -> Result<usize, T> {
        let last = self.len.checked_sub(1).and_then(|i| self.slots.get(i));
        let in_order = last.is_none_or(|s| s.hash <= hash);
        if self.homes != 0 || !in_order {
            return Err(item);
        }
        let slot = Slot {
            hash,
            word,
            item: Some(item),
        };
        match self.slots.get_mut(self.len) {
            Some(empty) => *empty = slot,
            None => self.slots.push(slot),
        }
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Lays out a table that was appended to ([`HashOrderedTable::append`]): sized for the
    /// items it holds, each moved once, from the last. Nothing to do for one laid out.
    pub fn lay_out(&mut self) {
        if self.homes == 0 && self.len > 0 {
            self.grow_to(self.len);
        }
    }

    /// Asks the CPU to start loading the slot where a lookup of `hash` begins, so that a
    /// lookup issued a little later finds it in cache (replay looks a few records ahead).
    pub fn prefetch(&self, hash: u32) {
        // The home slot and the next: a slot is 80 bytes, so its key may lie in the cache
        // line after its hash, and a lookup usually walks a slot or two past its home.
        let home = self.home(hash);
        if let Some(run) = self.slots.get(home..(home + 2).min(self.slots.len())) {
            prefetch_lines(run);
        }
    }

    pub fn get(&self, pos: usize) -> Option<&T> {
        self.slots.get(pos)?.item.as_ref()
    }

    /// The hash of the item at `pos`, if there is one.
    pub fn hash_at(&self, pos: usize) -> Option<u32> {
        let slot = self.slots.get(pos)?;
        slot.item.as_ref().map(|_| slot.hash)
    }

    pub fn get_mut(&mut self, pos: usize) -> Option<&mut T> {
        self.slots.get_mut(pos)?.item.as_mut()
    }

    /// The caller's word beside the item at `pos`, if there is one.
    pub fn word(&self, pos: usize) -> Option<u32> {
        let slot = self.slots.get(pos)?;
        slot.item.as_ref().map(|_| slot.word)
    }

    /// The caller's word beside the item at `pos`, to change, if there is one.
    pub fn word_mut(&mut self, pos: usize) -> Option<&mut u32> {
        let slot = self.slots.get_mut(pos)?;
        slot.item.as_ref()?;
        Some(&mut slot.word)
    }

    /// Inserts an item the caller found absent, with its word; returns its position.
    pub fn insert(&mut self, hash: u32, word: u32, item: T) -> usize {
        if self.homes == 0 || (self.len + 1) * MAX_LOAD.1 > self.homes * MAX_LOAD.0 {
            self.grow_to(self.len + 1);
        }
        let mut item = Some(item);
        loop {
            match self.place(hash, word, &mut item) {
                Some(pos) => {
                    self.len += 1;
                    return pos;
                }
                // The run reached the end of the array: lengthen the slack, same homes.
                None => self.rebuild(self.homes),
            }
        }
    }

    /// Puts `item` at its place in hash order (after equal hashes), shifting the rest of its
    /// run right; None, and nothing moved, if the run has no empty slot before the end.
    fn place(&mut self, hash: u32, word: u32, item: &mut Option<T>) -> Option<usize> {
        let mut at = self.home(hash);
        while self
            .slots
            .get(at)
            .is_some_and(|s| s.item.is_some() && s.hash <= hash)
        {
            at += 1;
        }
        let empty = at
            + self
                .slots
                .get(at..)?
                .iter()
                .position(|s| s.item.is_none())?;
        self.slots[at..=empty].rotate_right(1);
        self.slots[at] = Slot {
            hash,
            word,
            item: item.take(),
        };
        Some(at)
    }

    /// Removes the item at `pos`; the items displaced past it move one slot back.
    pub fn remove_at(&mut self, pos: usize) -> Option<T> {
        let item = self.slots.get_mut(pos)?.item.take()?;
        self.len -= 1;
        let mut end = pos + 1;
        while let Some(s) = self.slots.get(end) {
            if s.item.is_none() || self.home(s.hash) >= end {
                break;
            }
            end += 1;
        }
        self.slots[pos..end].rotate_left(1);
        if self.homes > MIN_HOMES * 8 && self.len * 10 < self.homes {
            // Under 10 % full (Redis shrinks its dict there too): walks over empty slots
            // (SCAN, sampling) stay proportional to the keys, and the memory comes back.
            self.reserved_homes = 0;
            self.rebuild((self.len * 5 / 3).max(MIN_HOMES));
        }
        Some(item)
    }

    /// Room for `additional` more items without moving the array in memory when it grows.
    /// Only address space is reserved (nothing is written until items come), and only if it
    /// can be had: a snapshot's count is a hint, and may be crafted.
    pub fn reserve(&mut self, additional: usize) {
        // Counted as `grow_to` counts them, so that the last hinted item fits.
        let homes = self
            .len
            .saturating_add(additional)
            .saturating_mul(MAX_LOAD.1)
            / MAX_LOAD.0
            + 1;
        let more = homes
            .saturating_add(slack(homes))
            .saturating_sub(self.slots.len());
        if self.slots.try_reserve_exact(more).is_ok() {
            self.reserved_homes = homes;
        }
    }

    /// Grows to hold at least `want` items under the load limit, by at least [`GROWTH`];
    /// within a reservation, fourfold up to the reserved size: a snapshot's load moves a
    /// third of its items once instead of each once or twice (7 % of a 1M-key base load was
    /// spent in resizes when doubling), and a crafted size hint still gets no more slots
    /// written than four times what the items read need.
    fn grow_to(&mut self, want: usize) {
        let by_growth = self.homes * GROWTH.0 / GROWTH.1;
        let by_load = want * MAX_LOAD.1 / MAX_LOAD.0 + 1;
        let mut homes = by_growth.max(by_load).max(MIN_HOMES);
        if self.reserved_homes > self.homes && self.reserved_homes >= by_load {
            homes = by_load.max((self.homes * 4).min(self.reserved_homes));
        }
        self.rebuild(homes);
    }

    /// Lays the items out for `homes` homes, in the same array: in order, each at its new
    /// home or right after the one before (where every item is now: `place` and `remove_at`
    /// keep it so). With more homes than now no item's place is lower than its current one (a
    /// home only grows with `homes`, and so, by induction, does each place), so moving them
    /// from the last to the first never overwrites one not yet moved; with fewer, no place is
    /// higher, and they move from the first. The array is lengthened or shortened in place:
    /// a resize costs a word per item on top of the table, not a second table. The array
    /// ends [`slack`] slots after the last home or 16 after the last item, whichever is
    /// later, so hashes crowding the top of the range lengthen the tail, not the table.
    fn rebuild(&mut self, homes: usize) {
        let mut places = Vec::with_capacity(self.len);
        let mut next = 0;
        for s in self.slots.iter().filter(|s| s.item.is_some()) {
            next = home_of(s.hash, homes).max(next);
            places.push(next);
            next += 1;
        }
        let len = (homes + slack(homes)).max(next + 16);
        // Items are only in the slots there before: the ones added are empty.
        let held = self.slots.len();
        if len > self.slots.len() {
            self.slots.reserve_exact(len - self.slots.len());
            self.slots.resize_with(len, || Slot::EMPTY);
        }
        if homes >= self.homes {
            for from in (0..held).rev() {
                if self.slots[from].item.is_some() {
                    let Some(to) = places.pop() else { break };
                    self.slots.swap(from, to);
                }
            }
        } else {
            let mut places = places.into_iter();
            for from in 0..self.slots.len() {
                if self.slots[from].item.is_some() {
                    let Some(to) = places.next() else { break };
                    self.slots.swap(from, to);
                }
            }
        }
        if len < self.slots.len() {
            self.slots.truncate(len);
            self.slots.shrink_to_fit();
        }
        self.homes = homes;
    }

    /// A position chosen uniformly among the items (RANDOMKEY, eviction's samples), from the
    /// random number `r`. Random slots until one holds an item (the table is at least 10 %
    /// full, so 64 tries almost never all miss); a small table counts its way to one.
    pub fn sample(&self, r: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let n = self.slots.len() as u64;
        let occupied = |i: &usize| self.slots[*i].item.is_some();
        if n <= 256 {
            let k = (r % self.len as u64) as usize;
            return (0..self.slots.len()).filter(occupied).nth(k);
        }
        let mut x = r;
        for _ in 0..64 {
            let i = (x % n) as usize;
            if occupied(&i) {
                return Some(i);
            }
            x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31) ^ (x >> 17);
        }
        let start = (x % n) as usize;
        (start..self.slots.len()).chain(0..start).find(occupied)
    }

    /// Items in hash order from the first whose hash is at least `hash`, each with its hash.
    pub fn scan_from(&self, hash: u32) -> impl Iterator<Item = (u32, &T)> {
        let start = if self.homes == 0 { 0 } else { self.home(hash) };
        self.slots
            .get(start..)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Some((s.hash, s.item.as_ref()?)))
            .skip_while(move |(h, _)| *h < hash)
    }

    /// Every item, in hash order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.item.as_ref())
    }

    /// Bytes the slots take (for tests and the memory account's comments).
    #[cfg(test)]
    pub fn slot_size() -> usize {
        std::mem::size_of::<Slot<T>>()
    }
}

/// A hint to load the cache lines holding `values`; no effect on what the program computes.
#[cfg(target_arch = "x86_64")]
fn prefetch_lines<T>(values: &[T]) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let start = values.as_ptr().cast::<i8>();
    for offset in (0..std::mem::size_of_val(values)).step_by(64) {
        // SAFETY: a prefetch never faults and reads nothing the program sees; every address
        // is inside the slice.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_lines<T>(_values: &[T]) {}

impl<T> std::ops::Index<usize> for HashOrderedTable<T> {
    type Output = T;
    /// The item at a position [`HashOrderedTable::find`] just returned.
    fn index(&self, pos: usize) -> &T {
        match self.get(pos) {
            Some(item) => item,
            None => panic!("no item at position {pos}"),
        }
    }
}

impl<T> std::ops::IndexMut<usize> for HashOrderedTable<T> {
    fn index_mut(&mut self, pos: usize) -> &mut T {
        match self.get_mut(pos) {
            Some(item) => item,
            None => panic!("no item at position {pos}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The table's invariant: every item at or after its home, hashes in order, the count
    /// right, and nothing displaced past an empty slot.
    fn check<T>(t: &HashOrderedTable<T>) {
        let mut last = 0;
        let mut count = 0;
        for (i, s) in t.slots.iter().enumerate() {
            if s.item.is_none() {
                continue;
            }
            count += 1;
            let home = t.home(s.hash);
            assert!(home <= i, "item at {i} before its home {home}");
            assert!(s.hash >= last, "hash order broken at {i}");
            last = s.hash;
            assert!(
                t.slots[home..i].iter().all(|s| s.item.is_some()),
                "an empty slot between the home {home} and the item at {i}"
            );
        }
        assert_eq!(count, t.len);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        /// Loading: appended if the table takes it, inserted otherwise (as the keyspace does).
        Append(u64),
        LayOut,
        Remove(u64),
        Reserve(u8),
    }

    /// Keys drawn from a small range so that removals hit; hashes from a tiny range so that
    /// equal hashes and long runs happen, and from the top of the range for the slack.
    fn hash_of(key: u64, mode: u8) -> u32 {
        match mode {
            0 => spread(key),
            1 => (key % 7) as u32,
            _ => u32::MAX - (key % 13) as u32,
        }
    }

    /// The caller's word the tests keep beside `key`.
    fn word(key: u64) -> u32 {
        !(key as u32)
    }

    /// Distinct small numbers spread over the hash range (top half of a Fibonacci product).
    fn spread(k: u64) -> u32 {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..300).prop_map(Op::Insert),
            3 => (0u64..300).prop_map(Op::Append),
            1 => Just(Op::LayOut),
            3 => (0u64..300).prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::Reserve),
        ]
    }

    proptest! {
        /// The table holds what a BTreeMap holds after any sequence of inserts, removals and
        /// reservations, keeps its invariant after each, and a SCAN from any hash sees exactly
        /// the items at or above it.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(op(), 1..400), mode in 0u8..3) {
            let mut t = HashOrderedTable::<u64>::default();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        let h = hash_of(k, mode);
                        if t.find(h, |&x| x == k).is_none() {
                            let pos = t.insert(h, word(k), k);
                            prop_assert_eq!(t.get(pos), Some(&k));
                            model.insert(k, h);
                        }
                    }
                    Op::Remove(k) => {
                        let h = hash_of(k, mode);
                        let got = t.find(h, |&x| x == k).and_then(|p| t.remove_at(p));
                        prop_assert_eq!(got, model.remove(&k).map(|_| k));
                    }
                    Op::Append(k) => {
                        let h = hash_of(k, mode);
                        if t.find(h, |&x| x == k).is_none() {
                            let pos = match t.append(h, word(k), k) {
                                Ok(pos) => pos,
                                Err(k) => t.insert(h, word(k), k),
                            };
                            prop_assert_eq!(t.get(pos), Some(&k));
                            model.insert(k, h);
                        }
                    }
                    Op::LayOut => t.lay_out(),
                    Op::Reserve(n) => t.reserve(usize::from(n)),
                }
                check(&t);
                prop_assert_eq!(t.len(), model.len());
            }
            for (&k, &h) in &model {
                let pos = t.find(h, |&x| x == k);
                prop_assert!(pos.is_some());
                // The word moved with its item through every shift and resize.
                prop_assert_eq!(pos.and_then(|p| t.word(p)), Some(word(k)));
                let from: Vec<u64> = t.scan_from(h).map(|(_, &x)| x).collect();
                prop_assert!(from.contains(&k));
                prop_assert_eq!(from.len(), model.values().filter(|&&v| v >= h).count());
            }
            let mut all: Vec<u64> = t.iter().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
        }
    }

    proptest! {
        /// A load in hash order (keys sorted by hash, equal hashes included, appended as
        /// they come) holds what the map holds, before it is laid out and after; a removal
        /// before then keeps the rest findable.
        #[test]
        fn a_load_in_hash_order_is_a_map_before_and_after_it_is_laid_out(
            mut keys in proptest::collection::btree_set(0u64..5000, 1..600),
            mode in 0u8..3,
            remove in proptest::option::of(0usize..600),
        ) {
            let mut sorted: Vec<(u32, u64)> = keys.iter().map(|&k| (hash_of(k, mode), k)).collect();
            sorted.sort_unstable();
            let mut t = HashOrderedTable::<u64>::default();
            t.reserve(sorted.len());
            for &(h, k) in &sorted {
                prop_assert!(t.find(h, |&x| x == k).is_none());
                let pos = t.append(h, word(k), k).map_err(|_| TestCaseError::fail("refused in order"))?;
                prop_assert_eq!(t.get(pos), Some(&k));
            }
            prop_assert!(!t.is_laid_out());
            check(&t);
            if let Some(i) = remove.filter(|&i| i < sorted.len()) {
                let (h, k) = sorted.remove(i);
                let pos = t.find(h, |&x| x == k).expect("present");
                prop_assert_eq!(t.remove_at(pos), Some(k));
                keys.remove(&k);
                check(&t);
            }
            for laid_out in [false, true] {
                if laid_out {
                    t.lay_out();
                    prop_assert_eq!(t.is_laid_out(), !sorted.is_empty());
                    check(&t);
                }
                for &(h, k) in &sorted {
                    prop_assert!(t.find(h, |&x| x == k).is_some());
                }
                let mut all: Vec<u64> = t.iter().copied().collect();
                all.sort_unstable();
                prop_assert_eq!(&all, &keys.iter().copied().collect::<Vec<_>>());
            }
        }
    }

    /// Appending stops at the first hash out of order or once the table is laid out: the
    /// item comes back to be inserted.
    #[test]
    fn an_append_out_of_order_or_after_the_lay_out_is_refused() {
        let mut t = HashOrderedTable::<u64>::default();
        assert_eq!(t.append(10, 0, 1), Ok(0));
        assert_eq!(t.append(10, 0, 2), Ok(1));
        assert_eq!(t.append(9, 0, 3), Err(3));
        t.insert(9, 0, 3);
        assert!(t.is_laid_out());
        assert_eq!(t.append(11, 0, 4), Err(4));
        check(&t);
    }

    /// A load in hash order writes the array once, front to back, within its reservation,
    /// and is laid out for the items that came: a size hint larger than the keys read (a
    /// crafted one) gets no slots written beyond what they need.
    #[test]
    fn a_load_in_hash_order_is_laid_out_once_for_the_items_read() {
        for (hinted, read) in [(100_000usize, 100_000u64), (1_000_000, 1000)] {
            let mut t = HashOrderedTable::<u64>::default();
            t.reserve(hinted);
            let capacity = t.slots.capacity();
            let mut hashes: Vec<u32> = (0..read).map(spread).collect();
            hashes.sort_unstable();
            for (k, &h) in hashes.iter().enumerate() {
                assert!(t.append(h, 0, k as u64).is_ok());
            }
            assert_eq!(t.slots.len(), read as usize);
            t.lay_out();
            check(&t);
            assert_eq!(t.homes, read as usize * MAX_LOAD.1 / MAX_LOAD.0 + 1);
            assert!(t.slots.len() <= t.homes + slack(t.homes) + 16);
            if hinted as u64 == read {
                assert_eq!(t.slots.capacity(), capacity, "the array moved");
            }
        }
    }

    #[test]
    fn a_crafted_reservation_is_refused_not_fatal() {
        let mut t = HashOrderedTable::<u64>::default();
        t.reserve(usize::MAX / 2);
        t.insert(1, 0, 1);
        assert_eq!(t.find(1, |&x| x == 1), Some(t.home(1)));
    }

    /// Hashes crowding the top of the range (all at the last home) lengthen the array's
    /// tail, not the table: the array stays about the size the items need.
    #[test]
    fn hashes_at_the_top_of_the_range_do_not_inflate_the_table() {
        let mut t = HashOrderedTable::<u64>::default();
        for i in 0..5000 {
            t.insert(u32::MAX - i as u32, 0, i);
        }
        check(&t);
        // Homes for the load (at most 1.4 per item) and a tail holding every item.
        assert!(t.slots.len() <= 3 * 5000, "{}", t.slots.len());
    }

    /// A table emptied down to a few items gives its slots back, so walks over empty slots
    /// (SCAN, sampling) stay proportional to what it holds.
    #[test]
    fn a_table_that_empties_shrinks() {
        let mut t = HashOrderedTable::<u64>::default();
        let h = spread;
        for k in 0..100_000u64 {
            t.insert(h(k), 0, k);
        }
        for k in 10..100_000u64 {
            let pos = t.find(h(k), |&x| x == k).expect("present");
            t.remove_at(pos);
            if k % 9973 == 0 {
                check(&t);
            }
        }
        check(&t);
        assert!(t.slots.len() < 200, "{} slots for 10 items", t.slots.len());
        for k in 0..10u64 {
            assert!(t.find(h(k), |&x| x == k).is_some());
        }
    }

    /// A reservation takes address space only: no slot is written until items come, and
    /// then the items hinted fit without the array moving or outgrowing the reservation.
    #[test]
    fn a_reservation_writes_nothing_and_holds_what_it_was_for() {
        for n in [1_000_000u64, 1_000_001, 943_000, 100] {
            let mut t = HashOrderedTable::<u64>::default();
            t.reserve(n as usize);
            assert_eq!(t.slots.len(), 0);
            let capacity = t.slots.capacity();
            assert!(capacity as u64 > n);
            for k in 0..n {
                t.insert(spread(k), 0, k);
            }
            assert_eq!(t.slots.capacity(), capacity, "n {n}: the array moved");
            assert_eq!(t.homes, t.reserved_homes, "n {n}");
        }
    }

    /// Sampling picks every item about equally often, in a small table and a large one
    /// (RANDOMKEY and eviction's samples depend on it).
    #[test]
    fn sampling_is_uniform_over_the_items() {
        for n in [4u64, 50_000] {
            let mut t = HashOrderedTable::<u64>::default();
            for k in 0..n {
                t.insert(spread(k), 0, k);
            }
            let draws = 200_000u64;
            let mut counts = std::collections::HashMap::new();
            let mut r = 1u64;
            for _ in 0..draws {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = t.sample(r >> 11).and_then(|p| t.get(p)).copied();
                *counts.entry(k.expect("an item")).or_insert(0u64) += 1;
            }
            // The lowest-hash item, which follows the slack when sampling wraps round,
            // and the item with the largest gap before it get no more than their share.
            let most = counts.values().max().copied().unwrap_or(0);
            let share = draws / n;
            assert!(most < share * 2 + 50, "n {n}: most {most}, share {share}");
        }
    }

    #[test]
    fn sampling_finds_the_only_item_from_anywhere() {
        let mut t = HashOrderedTable::<u64>::default();
        assert_eq!(t.sample(5), None);
        for k in 0u64..100 {
            t.insert(spread(k), 0, k);
        }
        for k in 0u64..99 {
            let pos = t.find(spread(k), |&x| x == k).expect("present");
            t.remove_at(pos);
        }
        for r in 0..(t.slots.len() as u64 * 2) {
            assert_eq!(t.sample(r).and_then(|p| t.get(p)), Some(&99));
        }
    }
}
