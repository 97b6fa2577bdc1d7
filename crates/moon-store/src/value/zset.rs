//! Sorted sets: members with a score, kept in (score, member) order.
//!
//! Two forms, as Redis has: while small (`zset-max-listpack-entries` members, none longer than
//! `zset-max-listpack-value` bytes) a sorted set is one sorted vector, searched by binary
//! search for positions and linearly for a member (Redis's listpack idea: below the thresholds
//! that is as fast as hashing and far smaller). Past them it becomes an order-statistic treap
//! (`OBJECT ENCODING` says `skiplist`, Redis's name for its big form) in one arena of nodes,
//! with a hash index from member to node: a score in O(1), rank, insert, remove and the start
//! of any range in O(log n) expected, then each next element in O(1) amortised. Nodes name
//! each other by index, so the tree is safe code with no pointers, and the index stores only
//! 4-byte node numbers (the member bytes live once, in the node). A sorted set never goes
//! back to its small form, as in Redis.
//!
//! Scores are never NaN: the commands refuse NaN before anything reaches this module, so
//! `(score, member)` is a total order.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use super::{has_duplicate, packed_size, push_str, read_str, Encodings, Str, ITEM_OVERHEAD};

/// Bytes counted per member beyond its own bytes: the item overhead and the score.
const MEMBER_OVERHEAD: usize = ITEM_OVERHEAD + 8;

/// The order of a sorted set: by score, then by member bytes.
fn order(a_score: f64, a: &[u8], b_score: f64, b: &[u8]) -> Ordering {
    a_score
        .partial_cmp(&b_score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.cmp(b))
}

/// A sorted set (see the module's doc).
#[derive(Clone, Default)]
pub struct ZSet {
    items: ZItems,
    /// Members' bytes plus [`MEMBER_OVERHEAD`] each, for the memory account.
    bytes: usize,
}

#[derive(Clone)]
enum ZItems {
    /// `(score, member)` in order, in one buffer.
    Compact(Packed),
    Tree(Box<Tree>),
}

impl Default for ZItems {
    fn default() -> Self {
        ZItems::Compact(Packed::default())
    }
}

// ---------------------------------------------------------------------------------------------
// The small form: one buffer

/// A small sorted set's members in `(score, member)` order, back to back in one buffer of
/// exactly its size: each member after its length (as a packed hash writes its strings: one
/// byte below 255), then its score (8 bytes, little endian). Redis's listpack idea: a member
/// of a few bytes costs 9 or 10 more, where a vector of `(f64, Str)` cost 48 bytes a member.
/// Searched and walked linearly; below the thresholds that is as fast as anything.
#[derive(Clone, Default)]
struct Packed {
    buf: Box<[u8]>,
    len: u32,
}

/// One member's place in a [`Packed`] buffer.
#[derive(Clone, Copy)]
struct PackedAt {
    start: usize,
    end: usize,
}

impl Packed {
    /// The members and scores in order, with their places.
    fn entries(&self) -> impl Iterator<Item = (&[u8], f64, PackedAt)> + '_ {
        let buf = &self.buf;
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= buf.len() {
                return None;
            }
            let start = pos;
            let (member, score_at) = read_str(buf, pos);
            let mut score = [0u8; 8];
            score.copy_from_slice(&buf[score_at..score_at + 8]);
            pos = score_at + 8;
            Some((
                member,
                f64::from_le_bytes(score),
                PackedAt { start, end: pos },
            ))
        })
    }

    fn find(&self, member: &[u8]) -> Option<(f64, PackedAt)> {
        self.entries()
            .find(|(m, _, _)| *m == member)
            .map(|(_, s, at)| (s, at))
    }

    /// Gives `member` the score `score` in one walk of the buffer and at most one
    /// reallocation: its old score, if it was there.
    fn set(&mut self, member: &[u8], score: f64) -> Option<f64> {
        // Where `(score, member)` goes (the first entry not before it), and the member's
        // entry if it is there.
        let mut place = None;
        let mut found = None;
        for (m, s, at) in self.entries() {
            if place.is_none() && !order(s, m, score, member).is_lt() {
                place = Some(at.start);
            }
            if m == member {
                found = Some((s, at));
            }
            if found.is_some() && place.is_some() {
                break;
            }
        }
        let mut place = place.unwrap_or(self.buf.len());
        let mut buf = std::mem::take(&mut self.buf).into_vec();
        if let Some((old, at)) = found {
            // Equal scores change nothing (0 and -0 too, as Redis compares them).
            if old == score {
                self.buf = buf.into_boxed_slice();
                return Some(old);
            }
            buf.drain(at.start..at.end);
            self.len -= 1;
            // The place is never inside the old entry: it is its start or beyond its end.
            if place > at.start {
                place -= at.end - at.start;
            }
        }
        let size = packed_size(member) + 8;
        let end = buf.len();
        buf.reserve_exact(size.saturating_sub(buf.capacity() - end));
        push_str(&mut buf, member);
        buf.extend_from_slice(&score.to_le_bytes());
        buf[place..].rotate_right(size);
        self.buf = buf.into_boxed_slice();
        self.len += 1;
        found.map(|(old, _)| old)
    }

    fn remove_at(&mut self, at: PackedAt) {
        let mut buf = std::mem::take(&mut self.buf).into_vec();
        buf.drain(at.start..at.end);
        self.buf = buf.into_boxed_slice();
        self.len -= 1;
    }

    /// The buffer of `sorted`, already in order and without duplicates.
    fn from_sorted(sorted: &[(f64, &[u8])]) -> Packed {
        let size = sorted.iter().map(|(_, m)| packed_size(m) + 8).sum();
        let mut buf = Vec::with_capacity(size);
        for (score, m) in sorted {
            push_str(&mut buf, m);
            buf.extend_from_slice(&score.to_le_bytes());
        }
        Packed {
            buf: buf.into_boxed_slice(),
            len: sorted.len() as u32,
        }
    }
}

impl PartialEq for ZSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter_from(0, false)
                .zip(other.iter_from(0, false))
                .all(|((a, s), (b, t))| a == b && s.to_bits() == t.to_bits())
    }
}

impl ZSet {
    pub fn len(&self) -> usize {
        match &self.items {
            ZItems::Compact(p) => p.len as usize,
            ZItems::Tree(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes it holds, for the memory account (O(1)).
    pub fn mem_size(&self) -> usize {
        self.bytes
    }

    pub fn is_compact(&self) -> bool {
        matches!(self.items, ZItems::Compact(_))
    }

    /// `OBJECT ENCODING`'s name.
    pub fn encoding(&self) -> &'static str {
        if self.is_compact() {
            "listpack"
        } else {
            "skiplist"
        }
    }

    /// The score of `member`, if it is in the set.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        match &self.items {
            ZItems::Compact(p) => p.find(member).map(|(s, _)| s),
            ZItems::Tree(t) => t.find(member).map(|i| t.nodes[i as usize].score),
        }
    }

    /// Gives `member` the score `score` (a number, never NaN), adding it if new: its old
    /// score, if it was there. Past the thresholds of `enc` the set takes its big form.
    pub fn insert(&mut self, member: &[u8], score: f64, enc: &Encodings) -> Option<f64> {
        let old = match &mut self.items {
            ZItems::Compact(p) => match p.set(member, score) {
                // Equal scores change nothing.
                Some(old) if old == score => return Some(old),
                old => old,
            },
            ZItems::Tree(t) => t.insert(member, score),
        };
        if old.is_none() {
            self.bytes += member.len() + MEMBER_OVERHEAD;
            if let ZItems::Compact(p) = &self.items {
                if p.len as usize > enc.zset_max_listpack_entries
                    || member.len() > enc.zset_max_listpack_value
                {
                    self.grow();
                }
            }
        }
        old
    }

    /// A sorted set of `pairs` (scores never NaN), sized once and sorted once, in the form
    /// adding them one by one would give: what a snapshot's sorted set loads through. `None`:
    /// a member comes twice.
    pub fn from_pairs<'m>(
        mut pairs: impl ExactSizeIterator<Item = (&'m [u8], f64)>,
        enc: &Encodings,
    ) -> Option<ZSet> {
        let n = pairs.len();
        let mut z = ZSet::default();
        if n <= enc.zset_max_listpack_entries {
            let mut v: Vec<(f64, &[u8])> = Vec::with_capacity(n);
            for (m, score) in pairs.by_ref() {
                if m.len() > enc.zset_max_listpack_value {
                    // Past the compact form: the rest goes through the tree, which finds
                    // duplicates as it inserts.
                    z.items = ZItems::Tree(Box::new(Tree::with_capacity(n)));
                    // Counted again as the tree takes them.
                    z.bytes = 0;
                    for (s, m) in v {
                        z.insert_absent(m, s)?;
                    }
                    z.insert_absent(m, score)?;
                    return z.extend_absent(pairs);
                }
                z.bytes += m.len() + MEMBER_OVERHEAD;
                v.push((score, m));
            }
            v.sort_unstable_by(|(s, m), (t, n)| order(*s, m, *t, n));
            if has_duplicate(v.iter().map(|(_, m)| *m)) {
                return None;
            }
            z.items = ZItems::Compact(Packed::from_sorted(&v));
            Some(z)
        } else {
            z.items = ZItems::Tree(Box::new(Tree::with_capacity(n)));
            z.extend_absent(pairs)
        }
    }

    /// Adds each pair to a set in its big form; `None` if one is there already.
    fn extend_absent<'m>(mut self, pairs: impl Iterator<Item = (&'m [u8], f64)>) -> Option<ZSet> {
        for (m, score) in pairs {
            self.insert_absent(m, score)?;
        }
        Some(self)
    }

    /// Adds `member` to a set in its big form; `None` if it is there already (or the set is
    /// not in its big form, which no caller asks of it).
    fn insert_absent(&mut self, member: &[u8], score: f64) -> Option<()> {
        let ZItems::Tree(t) = &mut self.items else {
            return None;
        };
        let hash = t.hash(member);
        if t.find_hashed(member, hash).is_some() {
            return None;
        }
        t.insert_new_hashed(Str::copy_from(member), score, hash);
        self.bytes += member.len() + MEMBER_OVERHEAD;
        Some(())
    }

    /// Moves a small set to its big form.
    fn grow(&mut self) {
        let ZItems::Compact(p) = std::mem::take(&mut self.items) else {
            return;
        };
        let mut t = Tree::with_capacity(p.len as usize);
        for (m, s, _) in p.entries() {
            t.insert_new(Str::copy_from(m), s);
        }
        self.items = ZItems::Tree(Box::new(t));
    }

    /// Removes `member`: its score, if it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let old = match &mut self.items {
            ZItems::Compact(p) => {
                let (score, at) = p.find(member)?;
                p.remove_at(at);
                Some(score)
            }
            ZItems::Tree(t) => t.remove(member),
        };
        if old.is_some() {
            self.bytes -= member.len() + MEMBER_OVERHEAD;
        }
        old
    }

    /// The 0-based position of `member` in ascending order, if it is in the set.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(self.count_before(|s, m| order(s, m, score, member).is_lt()))
    }

    /// How many members satisfy `before`, a test that holds for a first run of the set in
    /// order and for none after it (e.g. "score below min"): where a range starts or ends.
    pub fn count_before(&self, before: impl Fn(f64, &[u8]) -> bool) -> usize {
        match &self.items {
            ZItems::Compact(p) => p.entries().take_while(|(m, s, _)| before(*s, m)).count(),
            ZItems::Tree(t) => t.count_before(&before),
        }
    }

    /// The member and score at position `rank` (ascending).
    pub fn at(&self, rank: usize) -> Option<(&[u8], f64)> {
        self.iter_from(rank, false).next()
    }

    /// How many storage slots [`ZSet::at_slot`] walks (SCAN's positions): the members' places
    /// in the arena, which do not move while the set changes around them.
    pub fn slots(&self) -> usize {
        match &self.items {
            ZItems::Compact(p) => p.len as usize,
            ZItems::Tree(t) => t.nodes.len(),
        }
    }

    /// The members in the storage slots `slots` (SCAN's positions, see [`ZSet::slots`]), in
    /// slot order: the small form walked once (review finding: a walk per slot made a scan
    /// of a large compact set quadratic, and `zset-max-listpack-entries` may be large).
    pub fn in_slots(
        &self,
        slots: std::ops::Range<usize>,
    ) -> Box<dyn Iterator<Item = (&[u8], f64)> + '_> {
        match &self.items {
            ZItems::Compact(p) => Box::new(
                p.entries()
                    .skip(slots.start)
                    .take(slots.len())
                    .map(|(m, s, _)| (m, s)),
            ),
            ZItems::Tree(_) => Box::new(slots.filter_map(move |i| self.at_slot(i))),
        }
    }

    /// The member in slot `i`, if the slot holds one.
    fn at_slot(&self, i: usize) -> Option<(&[u8], f64)> {
        match &self.items {
            ZItems::Compact(p) => p.entries().nth(i).map(|(m, s, _)| (m, s)),
            ZItems::Tree(t) => t
                .nodes
                .get(i)
                .filter(|n| n.size > 0)
                .map(|n| (&n.member[..], n.score)),
        }
    }

    /// The members and scores from position `rank` on: ascending, or with `rev`, descending
    /// from position `rank` counted from the highest.
    pub fn iter_from(&self, rank: usize, rev: bool) -> Box<dyn Iterator<Item = (&[u8], f64)> + '_> {
        let len = self.len();
        if rank >= len {
            return Box::new(std::iter::empty());
        }
        match &self.items {
            ZItems::Compact(p) if rev => {
                // Entries are walked forwards only: the ones wanted, then backwards.
                let mut wanted: Vec<(&[u8], f64)> = p
                    .entries()
                    .take(len - rank)
                    .map(|(m, s, _)| (m, s))
                    .collect();
                wanted.reverse();
                Box::new(wanted.into_iter())
            }
            ZItems::Compact(p) => Box::new(p.entries().skip(rank).map(|(m, s, _)| (m, s))),
            ZItems::Tree(t) => Box::new(TreeIter::new(t, rank, rev)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The big form: an order-statistic treap in an arena

const NIL: u32 = u32::MAX;

#[derive(Clone)]
struct Node {
    member: Str,
    score: f64,
    left: u32,
    right: u32,
    /// Nodes in this subtree, itself included; 0 for a free slot.
    size: u32,
    /// The heap order that keeps the tree balanced: random, from a seed no client can know,
    /// so the expected depth is O(log n) whatever the scores (and `split`/`merge` recurse
    /// that deep only).
    prio: u32,
}

#[derive(Clone)]
struct Tree {
    /// Every node; a freed slot is on the free list (through `left`) until reused.
    nodes: Vec<Node>,
    root: u32,
    free: u32,
    len: usize,
    /// Member → node number, hashed by the node's member.
    index: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// The state the priorities are drawn from.
    seed: u64,
}

impl Tree {
    fn with_capacity(n: usize) -> Tree {
        Tree {
            nodes: Vec::with_capacity(n),
            root: NIL,
            free: NIL,
            len: 0,
            index: hashbrown::HashTable::with_capacity(n),
            hasher: foldhash::fast::RandomState::default(),
            // Random per tree (review finding: a fixed seed gave every tree the same
            // priorities, so a client could choose scores that build one long spine — O(n)
            // operations and a recursion deep enough to overflow the stack, again on replay).
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn size(&self, t: u32) -> usize {
        if t == NIL {
            0
        } else {
            self.nodes[t as usize].size as usize
        }
    }

    fn fix(&mut self, t: u32) {
        let (l, r) = {
            let n = &self.nodes[t as usize];
            (n.left, n.right)
        };
        self.nodes[t as usize].size = (1 + self.size(l) + self.size(r)) as u32;
    }

    fn hash(&self, member: &[u8]) -> u64 {
        self.hasher.hash_one(member)
    }

    fn find(&self, member: &[u8]) -> Option<u32> {
        self.find_hashed(member, self.hash(member))
    }

    fn find_hashed(&self, member: &[u8], hash: u64) -> Option<u32> {
        let nodes = &self.nodes;
        self.index
            .find(hash, |&i| &nodes[i as usize].member[..] == member)
            .copied()
    }

    fn next_prio(&mut self) -> u32 {
        // splitmix64
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    }

    /// Splits subtree `t` into the nodes that satisfy `before` (a first run in order) and the
    /// rest.
    fn split(&mut self, t: u32, before: &dyn Fn(&Node) -> bool) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if before(&self.nodes[t as usize]) {
            let (l, r) = self.split(self.nodes[t as usize].right, before);
            self.nodes[t as usize].right = l;
            self.fix(t);
            (t, r)
        } else {
            let (l, r) = self.split(self.nodes[t as usize].left, before);
            self.nodes[t as usize].left = r;
            self.fix(t);
            (l, t)
        }
    }

    /// Joins two subtrees, every node of `a` before every node of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = r;
            self.fix(a);
            a
        } else {
            let l = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = l;
            self.fix(b);
            b
        }
    }

    /// Whether node `a` comes before node `b` in the tree's order.
    fn before(&self, a: u32, b: u32) -> bool {
        let (x, y) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        order(x.score, &x.member, y.score, &y.member).is_lt()
    }

    /// Sets the link from `parent` (`NIL`: the root) that led to its child, `left` or right.
    fn attach(&mut self, parent: u32, left: bool, child: u32) {
        if parent == NIL {
            self.root = child;
        } else if left {
            self.nodes[parent as usize].left = child;
        } else {
            self.nodes[parent as usize].right = child;
        }
    }

    /// Puts node `i` (detached) into the tree at its place: one descent from the root while
    /// the nodes passed rank above it in the heap (each counts one more node below), then the
    /// subtree it lands on split around it, usually a few nodes. (It was a split of the whole
    /// tree and two merges, three descents that missed the cache: 60 % of a ZADD into a
    /// sorted set of 600k members.)
    fn link(&mut self, i: u32) {
        let prio = self.nodes[i as usize].prio;
        let (mut parent, mut left, mut t) = (NIL, false, self.root);
        while t != NIL && self.nodes[t as usize].prio >= prio {
            self.nodes[t as usize].size += 1;
            parent = t;
            left = self.before(i, t);
            let n = &self.nodes[t as usize];
            t = if left { n.left } else { n.right };
        }
        let (score, member) = {
            let n = &self.nodes[i as usize];
            (n.score, n.member.clone())
        };
        let (l, r) = self.split(t, &|n| order(n.score, &n.member, score, &member).is_lt());
        let n = &mut self.nodes[i as usize];
        (n.left, n.right) = (l, r);
        self.fix(i);
        self.attach(parent, left, i);
    }

    /// Takes node `i` out of the tree (it stays in the arena): found by one descent, which
    /// then counts one node less on its way, and replaced by its two subtrees merged.
    fn unlink(&mut self, i: u32) {
        let mut t = self.root;
        while t != i {
            // The tree's order is total (no NaN score is ever stored), so the descent finds
            // every linked node. Were it broken, going on would free a slot still linked
            // (review finding): stop instead.
            assert!(
                t != NIL,
                "sorted set: node {i} is not where its order puts it"
            );
            let n = &self.nodes[t as usize];
            t = if self.before(i, t) { n.left } else { n.right };
        }
        let (mut parent, mut left, mut t) = (NIL, false, self.root);
        while t != i {
            self.nodes[t as usize].size -= 1;
            parent = t;
            left = self.before(i, t);
            let n = &self.nodes[t as usize];
            t = if left { n.left } else { n.right };
        }
        let (l, r) = {
            let n = &self.nodes[i as usize];
            (n.left, n.right)
        };
        let m = self.merge(l, r);
        self.attach(parent, left, m);
        let n = &mut self.nodes[i as usize];
        (n.left, n.right, n.size) = (NIL, NIL, 1);
    }

    /// Adds a member known to be absent.
    fn insert_new(&mut self, member: Str, score: f64) {
        let hash = self.hash(&member);
        self.insert_new_hashed(member, score, hash);
    }

    /// [`Tree::insert_new`] with the member's hash already known.
    fn insert_new_hashed(&mut self, member: Str, score: f64, hash: u64) {
        let prio = self.next_prio();
        let node = Node {
            member,
            score,
            left: NIL,
            right: NIL,
            size: 1,
            prio,
        };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].left;
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };

        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(&nodes[j as usize].member[..]));
        self.len += 1;
        self.link(i);
    }

    fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        // One hash for the lookup and the insertion.
        let hash = self.hash(member);
        match self.find_hashed(member, hash) {
            Some(i) => {
                let old = self.nodes[i as usize].score;
                if old != score {
                    self.unlink(i);
                    self.nodes[i as usize].score = score;
                    self.link(i);
                }
                Some(old)
            }
            None => {
                self.insert_new_hashed(Str::copy_from(member), score, hash);
                None
            }
        }
    }

    fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let hash = self.hash(member);
        let nodes = &self.nodes;
        let entry = self
            .index
            .find_entry(hash, |&i| &nodes[i as usize].member[..] == member)
            .ok()?;
        let (i, _) = entry.remove();
        self.unlink(i);
        let n = &mut self.nodes[i as usize];
        let score = n.score;
        // Free the member's bytes now; the slot waits on the free list (size 0: empty).
        n.member = Str::copy_from(b"");
        n.size = 0;
        n.left = self.free;
        self.free = i;
        self.len -= 1;
        Some(score)
    }

    fn count_before(&self, before: &dyn Fn(f64, &[u8]) -> bool) -> usize {
        let (mut t, mut count) = (self.root, 0);
        while t != NIL {
            let n = &self.nodes[t as usize];
            if before(n.score, &n.member) {
                count += self.size(n.left) + 1;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        count
    }
}

/// An in-order walk of a [`Tree`] from a position, either way: the stack holds the nodes
/// still to visit on the way back up, the next one on top.
struct TreeIter<'a> {
    tree: &'a Tree,
    stack: Vec<u32>,
    rev: bool,
}

impl<'a> TreeIter<'a> {
    /// Starts at position `rank` (ascending), or with `rev` at position `rank` counted from
    /// the highest.
    fn new(tree: &'a Tree, rank: usize, rev: bool) -> TreeIter<'a> {
        let mut stack = Vec::new();
        let mut t = tree.root;
        // In ascending terms, the node to start at.
        let mut k = if rev { tree.len() - 1 - rank } else { rank };
        while t != NIL {
            let n = &tree.nodes[t as usize];
            let left = tree.size(n.left);
            match k.cmp(&left) {
                Ordering::Less => {
                    // The node comes after the start: ascending, it is visited later.
                    if !rev {
                        stack.push(t);
                    }
                    t = n.left;
                }
                Ordering::Equal => {
                    stack.push(t);
                    break;
                }
                Ordering::Greater => {
                    // The node comes before the start: descending, it is visited later.
                    if rev {
                        stack.push(t);
                    }
                    k -= left + 1;
                    t = n.right;
                }
            }
        }
        TreeIter { tree, stack, rev }
    }
}

impl<'a> Iterator for TreeIter<'a> {
    type Item = (&'a [u8], f64);

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.stack.pop()?;
        let nodes = &self.tree.nodes;
        let n = &nodes[t as usize];
        // The next nodes this way: the other subtree's nearest path.
        let mut u = if self.rev { n.left } else { n.right };
        while u != NIL {
            self.stack.push(u);
            let m = &nodes[u as usize];
            u = if self.rev { m.right } else { m.left };
        }
        Some((&n.member[..], n.score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(entries: usize) -> Encodings {
        Encodings {
            zset_max_listpack_entries: entries,
            ..Encodings::default()
        }
    }

    /// The nodes under `n`, checking what the tree keeps: each node's count of its subtree,
    /// and no node above its parent (`prio`) in the heap.
    fn shape(t: &Tree, n: u32, prio: u32) -> usize {
        if n == NIL {
            return 0;
        }
        let node = &t.nodes[n as usize];
        assert!(node.prio <= prio, "heap order");
        let size = 1 + shape(t, node.left, node.prio) + shape(t, node.right, node.prio);
        assert_eq!(node.size as usize, size, "subtree count");
        size
    }

    /// Both forms behave as a sorted vector model under random inserts, updates and removes.
    #[test]
    fn compact_members_of_every_length_header() {
        // Lengths of one byte below 255 and five from 255 on (a raised
        // `zset-max-listpack-value`): found, ordered, moved and removed in place.
        let e = Encodings {
            zset_max_listpack_value: 1000,
            ..Encodings::default()
        };
        let long = vec![b'x'; 300];
        let mut z = ZSet::default();
        for (m, s) in [(&b"a"[..], 2.0), (&long[..], 1.0), (&[b'y'; 254][..], 3.0)] {
            assert_eq!(z.insert(m, s, &e), None);
        }
        assert!(z.is_compact());
        assert_eq!(z.score(&long), Some(1.0));
        assert_eq!(z.rank(b"a"), Some(1));
        assert_eq!(z.insert(&long, 5.0, &e), Some(1.0));
        let order: Vec<usize> = z.iter_from(0, false).map(|(m, _)| m.len()).collect();
        assert_eq!(order, vec![1, 254, 300]);
        assert_eq!(z.remove(&[b'y'; 254]), Some(3.0));
        let back: Vec<(usize, f64)> = z.iter_from(0, true).map(|(m, s)| (m.len(), s)).collect();
        assert_eq!(back, vec![(300, 5.0), (1, 2.0)]);
        assert_eq!(z.at_slot(1).map(|(m, _)| m.len()), Some(300));
        let slots: Vec<usize> = z.in_slots(0..z.slots()).map(|(m, _)| m.len()).collect();
        assert_eq!(slots, vec![1, 300]);
    }

    #[test]
    fn both_forms_match_a_sorted_vector() {
        for entries in [0, 4, 128] {
            let e = enc(entries);
            let mut z = ZSet::default();
            let mut model: Vec<(f64, Vec<u8>)> = Vec::new();
            let mut seed = 7u64;
            for step in 0..3000 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let m = format!("m{}", (seed >> 33) % 300).into_bytes();
                let s = ((seed >> 20) % 50) as f64 - 25.0;
                if (seed >> 40).is_multiple_of(3) {
                    let got = z.remove(&m);
                    let pos = model.iter().position(|(_, x)| *x == m);
                    assert_eq!(got, pos.map(|p| model.remove(p).0), "step {step}");
                } else {
                    let got = z.insert(&m, s, &e);
                    let pos = model.iter().position(|(_, x)| *x == m);
                    assert_eq!(got, pos.map(|p| model.remove(p).0), "step {step}");
                    model.push((s, m));
                    model.sort_by(|a, b| order(a.0, &a.1, b.0, &b.1));
                }
                assert_eq!(z.len(), model.len());
                if step % 97 == 0 {
                    let all: Vec<(Vec<u8>, f64)> = z
                        .iter_from(0, false)
                        .map(|(m, s)| (m.to_vec(), s))
                        .collect();
                    let want: Vec<(Vec<u8>, f64)> =
                        model.iter().map(|(s, m)| (m.clone(), *s)).collect();
                    assert_eq!(all, want);
                    for (r, (s, m)) in model.iter().enumerate() {
                        assert_eq!(z.rank(m), Some(r));
                        assert_eq!(z.score(m), Some(*s));
                        let from: Vec<_> = z.iter_from(r, false).map(|(m, _)| m.to_vec()).collect();
                        let want: Vec<_> = model[r..].iter().map(|(_, m)| m.clone()).collect();
                        assert_eq!(from, want);
                        let back: Vec<_> = z.iter_from(r, true).map(|(m, _)| m.to_vec()).collect();
                        let want: Vec<_> = model[..model.len() - r]
                            .iter()
                            .rev()
                            .map(|(_, m)| m.clone())
                            .collect();
                        assert_eq!(back, want);
                    }
                    if let ZItems::Tree(t) = &z.items {
                        assert_eq!(shape(t, t.root, u32::MAX), t.len(), "step {step}");
                    }
                    let below = z.count_before(|s, _| s < 0.0);
                    assert_eq!(below, model.iter().filter(|(s, _)| *s < 0.0).count());
                }
            }
            if entries == 0 {
                assert_eq!(z.encoding(), "skiplist");
            }
        }
    }

    #[test]
    fn grows_past_the_thresholds() {
        let e = Encodings {
            zset_max_listpack_entries: 2,
            zset_max_listpack_value: 5,
            ..Encodings::default()
        };
        let mut z = ZSet::default();
        z.insert(b"a", 1.0, &e);
        z.insert(b"b", 2.0, &e);
        assert_eq!(z.encoding(), "listpack");
        z.insert(b"c", 0.5, &e);
        assert_eq!(z.encoding(), "skiplist");
        let mut w = ZSet::default();
        w.insert(b"longer", 1.0, &e);
        assert_eq!(w.encoding(), "skiplist");
        assert_eq!(
            z.iter_from(0, false)
                .map(|(m, _)| m.to_vec())
                .collect::<Vec<_>>(),
            vec![b"c".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
    }

    /// Review finding: sorted inserts (the order an attacker would pick is no better) keep
    /// the tree shallow, and no two trees share their priorities.
    #[test]
    fn the_tree_stays_shallow() {
        fn depth(t: &Tree, n: u32) -> usize {
            if n == NIL {
                return 0;
            }
            let node = &t.nodes[n as usize];
            1 + depth(t, node.left).max(depth(t, node.right))
        }
        let e = enc(0);
        let mut z = ZSet::default();
        for i in 0..100_000 {
            z.insert(format!("m{i:06}").as_bytes(), f64::from(i), &e);
        }
        let ZItems::Tree(t) = &z.items else {
            panic!("the big form")
        };
        let d = depth(t, t.root);
        assert!(d < 80, "depth {d} for 100k members");
        assert_ne!(Tree::with_capacity(0).seed, Tree::with_capacity(0).seed);
    }
}
