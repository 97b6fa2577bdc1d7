//! A list: Redis's quicklist idea. A deque of *nodes*, each one packed buffer of entries
//! (`len`, the bytes, `len` again backwards, so a node is walked from either end), at most
//! `list-max-listpack-size` entries or bytes per node. Push and pop at both ends touch one
//! end node: O(1) amortized, no copy of the rest of the list. An edit in the middle (LSET,
//! LINSERT) rewrites one node, splitting it when it outgrows the limit; LREM and LTRIM,
//! linear anyway, rebuild the nodes they touch and merge neighbours that fit together again.
//!
//! With `list-compress-depth` N (fixed when the list is created, as in Redis), every node
//! farther than N nodes from both ends is kept LZF-compressed when that saves at least 8
//! bytes (Redis's rule); a read of such a node decompresses a copy, an edit decompresses it
//! in place and compresses it again. End nodes are never compressed, so queue traffic
//! (push/pop) never pays for compression beyond the node that crosses the depth.
//!
//! A small list is one node: that is Redis's `listpack` encoding, and `OBJECT ENCODING`
//! says `quicklist` once the list outgrows one node (back to `listpack` under half of one).

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::Bytes;

use super::Encodings;

/// Bytes a node costs beyond its entries: its place in the deque and its buffer's allocation.
const NODE_OVERHEAD: usize = 48;
/// A count-limited node (`list-max-listpack-size` > 0) still holds at most 8 KiB (Redis's
/// `SIZE_SAFETY_LIMIT`).
const SIZE_SAFETY_LIMIT: usize = 8192;
/// Redis compresses a node of at least 48 bytes, and keeps the compressed form only when it
/// saves at least 8.
const MIN_COMPRESS_BYTES: usize = 48;
const MIN_COMPRESS_IMPROVE: usize = 8;

// ---------------------------------------------------------------------------------------------
// Entries: `len` as LEB128 (7 bits a byte, high bit set on all but the last), the bytes, then
// the same length bytes reversed, which read backwards from the entry's end are LEB128 again.

fn header_len(n: usize) -> usize {
    let mut h = 1;
    let mut rest = n >> 7;
    while rest > 0 {
        h += 1;
        rest >>= 7;
    }
    h
}

/// The bytes an entry of `n` bytes takes in a node.
fn entry_size(n: usize) -> usize {
    n + 2 * header_len(n)
}

fn write_entry(out: &mut Vec<u8>, v: &[u8]) {
    let mut header = [0u8; 10];
    let (mut n, mut h) = (v.len(), 0);
    loop {
        let more = n >> 7 > 0;
        header[h] = (n & 0x7f) as u8 | if more { 0x80 } else { 0 };
        h += 1;
        n >>= 7;
        if !more {
            break;
        }
    }
    out.reserve(2 * h + v.len());
    out.extend_from_slice(&header[..h]);
    out.extend_from_slice(v);
    out.extend(header[..h].iter().rev());
}

/// An entry as its place in a node's bytes: where it starts and ends, where its data is.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    data: usize,
    len: usize,
    end: usize,
}

impl Entry {
    fn data<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.data..self.data + self.len]
    }
}

/// The entry starting at `at`.
fn entry_at(buf: &[u8], at: usize) -> Entry {
    let (mut len, mut h, mut shift) = (0usize, 0, 0);
    loop {
        let b = buf[at + h];
        len |= ((b & 0x7f) as usize) << shift;
        h += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Entry {
        start: at,
        data: at + h,
        len,
        end: at + 2 * h + len,
    }
}

/// The entry ending at `end`.
fn entry_before(buf: &[u8], end: usize) -> Entry {
    let (mut len, mut h, mut shift) = (0usize, 0, 0);
    loop {
        let b = buf[end - 1 - h];
        len |= ((b & 0x7f) as usize) << shift;
        h += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let start = end - 2 * h - len;
    Entry {
        start,
        data: start + h,
        len,
        end,
    }
}

/// Entry `k` of the `count` entries in `buf`, walked from the nearer end.
fn nth_entry(buf: &[u8], count: usize, k: usize) -> Entry {
    if k < count / 2 {
        let mut e = entry_at(buf, 0);
        for _ in 0..k {
            e = entry_at(buf, e.end);
        }
        e
    } else {
        let mut e = entry_before(buf, buf.len());
        for _ in k + 1..count {
            e = entry_before(buf, e.start);
        }
        e
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

#[derive(Clone)]
enum Body {
    /// The entries are `buf[head..]`; the bytes before `head` are room for pushes at the front.
    Raw { buf: Vec<u8>, head: usize },
    /// The LZF form of `raw_len` bytes of entries.
    Lzf { data: Box<[u8]>, raw_len: usize },
}

#[derive(Clone)]
struct Node {
    body: Body,
    count: usize,
    /// Compression was tried on these raw entries and did not pay: not tried again until they
    /// change (an LTRIM settling every node must not recompress the incompressible ones).
    tried: bool,
}

impl Node {
    fn empty() -> Node {
        Node {
            body: Body::Raw {
                buf: Vec::new(),
                head: 0,
            },
            count: 0,
            tried: false,
        }
    }

    /// An empty node with room for a whole node's bytes, at its front or back: a node added
    /// beside a full one will most likely fill too, so it is allocated once.
    fn with_room(room: usize, front: bool) -> Node {
        let buf = if front {
            vec![0; room]
        } else {
            Vec::with_capacity(room)
        };
        Node {
            body: Body::Raw {
                head: buf.len(),
                buf,
            },
            count: 0,
            tried: false,
        }
    }

    fn from_entries(buf: Vec<u8>, count: usize) -> Node {
        Node {
            body: Body::Raw { buf, head: 0 },
            count,
            tried: false,
        }
    }

    /// The bytes of its entries.
    fn raw_len(&self) -> usize {
        match &self.body {
            Body::Raw { buf, head } => buf.len() - head,
            Body::Lzf { raw_len, .. } => *raw_len,
        }
    }

    /// The bytes it holds: its buffer's whole allocation (room at the front, room to grow), or
    /// its compressed form's.
    fn stored(&self) -> usize {
        match &self.body {
            Body::Raw { buf, .. } => buf.capacity(),
            Body::Lzf { data, .. } => data.len(),
        }
    }

    /// Its entries' bytes: borrowed, or decompressed into a copy.
    fn entries(&self) -> Cow<'_, [u8]> {
        match &self.body {
            Body::Raw { buf, head } => Cow::Borrowed(&buf[*head..]),
            Body::Lzf { data, raw_len } => Cow::Owned(inflate(data, *raw_len)),
        }
    }

    /// Its entries as one buffer starting at 0, decompressed in place if need be (O(node)).
    fn raw_mut(&mut self) -> &mut Vec<u8> {
        self.tried = false;
        if let Body::Lzf { data, raw_len } = &self.body {
            self.body = Body::Raw {
                buf: inflate(data, *raw_len),
                head: 0,
            };
        }
        match &mut self.body {
            Body::Raw { buf, head } => {
                if *head > 0 {
                    buf.drain(..*head);
                    *head = 0;
                }
                buf
            }
            Body::Lzf { .. } => unreachable!("decompressed just above"),
        }
    }

    fn decompress(&mut self) {
        if let Body::Lzf { data, raw_len } = &self.body {
            self.body = Body::Raw {
                buf: inflate(data, *raw_len),
                head: 0,
            };
        }
    }

    /// Compressed when that pays (Redis's thresholds); otherwise left raw.
    fn compress(&mut self) {
        let Body::Raw { buf, head } = &self.body else {
            return;
        };
        let raw = &buf[*head..];
        if self.tried || raw.len() < MIN_COMPRESS_BYTES {
            return;
        }
        // Not paying is remembered; so is paying (the node is then compressed).
        self.tried = true;
        // `lzf::compress` fails when the output would not be smaller than the input.
        if let Ok(data) = lzf::compress(raw) {
            if data.len() + MIN_COMPRESS_IMPROVE <= raw.len() {
                self.body = Body::Lzf {
                    raw_len: raw.len(),
                    data: data.into_boxed_slice(),
                };
            }
        }
    }

    fn push_back(&mut self, v: &[u8]) {
        self.tried = false;
        self.decompress();
        if let Body::Raw { buf, .. } = &mut self.body {
            write_entry(buf, v);
        }
        self.count += 1;
    }

    fn push_front(&mut self, v: &[u8]) {
        self.tried = false;
        self.decompress();
        let Body::Raw { buf, head } = &mut self.body else {
            return;
        };
        let need = entry_size(v.len());
        if *head < need {
            // Room for this entry and about as many bytes again as the node holds: pushes
            // at the front cost O(1) amortized, as at the back.
            let used = buf.len() - *head;
            let room = need + used.max(16);
            let mut grown = Vec::with_capacity(room + used);
            grown.resize(room, 0);
            grown.extend_from_slice(&buf[*head..]);
            *buf = grown;
            *head = room;
        }
        let mut entry = Vec::with_capacity(need);
        write_entry(&mut entry, v);
        buf[*head - need..*head].copy_from_slice(&entry);
        *head -= need;
        self.count += 1;
    }

    /// Takes the entry at the front (`front`) or the back.
    fn pop(&mut self, front: bool) -> Option<Bytes> {
        if self.count == 0 {
            return None;
        }
        self.tried = false;
        self.decompress();
        let Body::Raw { buf, head } = &mut self.body else {
            return None;
        };
        let e = if front {
            entry_at(buf, *head)
        } else {
            entry_before(buf, buf.len())
        };
        let v = Bytes::copy_from_slice(e.data(buf));
        if front {
            *head = e.end;
        } else {
            buf.truncate(e.start);
        }
        self.count -= 1;
        if self.count == 0 {
            *buf = Vec::new();
            *head = 0;
        }
        Some(v)
    }
}

/// The entries of a node Moon compressed itself.
fn inflate(data: &[u8], raw_len: usize) -> Vec<u8> {
    // Not untrusted input: these bytes came out of `lzf::compress` in this process.
    lzf::decompress(data, raw_len).expect("a node Moon compressed decompresses")
}

// ---------------------------------------------------------------------------------------------
// The list

/// A list of byte strings (see the module's doc).
#[derive(Clone, Default)]
pub struct List {
    nodes: VecDeque<Node>,
    len: usize,
    /// The bytes of every node's entries, uncompressed (Redis's listpack size, near enough).
    raw: usize,
    /// The bytes the nodes hold (compressed ones counted compressed).
    stored: usize,
    /// `list-max-listpack-size` when it last grew: the limit of new and growing nodes.
    node_limit: i64,
    /// `list-compress-depth` when it was created.
    depth: usize,
    /// Whether `OBJECT ENCODING` says `quicklist`: set when the list outgrows one listpack
    /// node, cleared only when a removal brings it under half of one (Redis 7.2+).
    quick: bool,
}

impl PartialEq for List {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl List {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// For the memory account, O(1).
    pub(crate) fn mem_size(&self) -> usize {
        self.stored + self.nodes.len() * NODE_OVERHEAD
    }

    /// The bytes of its entries uncompressed (each element plus a few bytes of length).
    pub(crate) fn raw_size(&self) -> usize {
        self.raw
    }

    pub(crate) fn encoding(&self) -> &'static str {
        if self.quick {
            "quicklist"
        } else {
            "listpack"
        }
    }

    /// Whether the list fits one listpack node of `list-max-listpack-size`, its limits
    /// divided by `divisor`: an entry count (positive sizes, within Redis's 8 KiB safety
    /// limit) or 4 to 64 KiB (-1 to -5; below -5 as -5).
    fn fits(&self, divisor: usize) -> bool {
        // Redis's listpack: 7 bytes of header and end, entries about as ours.
        let packed = self.raw + 7;
        match self.node_limit {
            n if n > 0 => self.len <= n as usize / divisor && packed <= SIZE_SAFETY_LIMIT / divisor,
            n => packed <= byte_limit(n) / divisor,
        }
    }

    /// Whether `node` may take `add` more bytes in one more entry. An empty node takes any
    /// entry, so an element larger than a node gets a node of its own.
    fn allows(&self, node: &Node, add: usize) -> bool {
        self.fits_node(node.count, node.raw_len() + add)
    }

    /// Whether a node of `count` entries may take one more, `size` bytes with it.
    fn fits_node(&self, count: usize, size: usize) -> bool {
        if count == 0 {
            return true;
        }
        match self.node_limit {
            n if n > 0 => count < n as usize && size <= SIZE_SAFETY_LIMIT,
            n => size <= byte_limit(n),
        }
    }

    /// Whether `node` is over the limit and can be split.
    fn over(&self, node: &Node) -> bool {
        node.count > 1
            && match self.node_limit {
                n if n > 0 => node.count > n as usize || node.raw_len() > SIZE_SAFETY_LIMIT,
                n => node.raw_len() > byte_limit(n),
            }
    }

    /// Changes node `i` through `f`, keeping the byte counts.
    fn edit<R>(&mut self, i: usize, f: impl FnOnce(&mut Node) -> R) -> R {
        let node = &mut self.nodes[i];
        let (stored, raw) = (node.stored(), node.raw_len());
        let r = f(node);
        self.stored = self.stored - stored + node.stored();
        self.raw = self.raw - raw + node.raw_len();
        r
    }

    fn insert_node(&mut self, at: usize, node: Node) {
        self.stored += node.stored();
        self.raw += node.raw_len();
        self.nodes.insert(at, node);
    }

    fn remove_node(&mut self, at: usize) {
        if let Some(node) = self.nodes.remove(at) {
            self.stored -= node.stored();
            self.raw -= node.raw_len();
            self.len -= node.count;
        }
    }

    /// A node for an entry of `add` bytes that did not fit the end node. The first two nodes
    /// of a list grow as they fill, so a list of a node or two holds no unused room; past
    /// that, the list is long and a new node beside a full one of small elements (8 or more)
    /// gets a whole node's room at once, allocated once rather than doubled up to its size
    /// (byte-limited nodes only; larger elements get what they take). Measured with `cargo xtask bench
    /// --only-memory`: 19.8 bytes per 16-byte element against 20.8 growing every node.
    fn new_node(&self, add: usize, front: bool) -> Node {
        let end = if front {
            self.nodes.front()
        } else {
            self.nodes.back()
        };
        let Some(end) = end else {
            return Node::empty();
        };
        match self.node_limit {
            n if n < 0 && self.nodes.len() >= 2 && add <= byte_limit(n) && end.count >= 8 => {
                Node::with_room(byte_limit(n), front)
            }
            _ => Node::empty(),
        }
    }

    /// Node `i` compressed if it lies deeper than the compress depth from both ends,
    /// decompressed otherwise.
    fn settle(&mut self, i: usize) {
        if self.depth == 0 || i >= self.nodes.len() {
            return;
        }
        let interior = i >= self.depth && i + self.depth < self.nodes.len();
        self.edit(i, |n| {
            if interior {
                n.compress()
            } else {
                n.decompress()
            }
        });
    }

    /// After a node came or went at an end: the nodes that crossed the depth. A node's place
    /// from the other end does not change, so only the nodes next to either boundary can
    /// (new places `depth - 1`, `depth`, `n - depth - 1`, `n - depth`): O(1), whatever the
    /// depth (review finding: walking `depth` nodes made a huge depth O(n) per push).
    fn settle_ends(&mut self) {
        if self.depth == 0 {
            return;
        }
        let (n, d) = (self.nodes.len(), self.depth);
        for i in [
            d.wrapping_sub(1),
            d,
            n.wrapping_sub(d + 1),
            n.wrapping_sub(d),
        ] {
            self.settle(i);
        }
    }

    /// Settles nodes `from..=to` (clamped to the list).
    fn settle_span(&mut self, from: usize, to: usize) {
        if self.depth == 0 {
            return;
        }
        for i in from..=to.min(self.nodes.len().saturating_sub(1)) {
            self.settle(i);
        }
    }

    fn settle_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.settle(i);
        }
    }

    /// Takes the current limits before a growth; the compress depth only into an empty list.
    fn adopt(&mut self, enc: &Encodings) {
        self.node_limit = enc.list_max_listpack_size;
        if self.len == 0 {
            self.depth = enc.list_compress_depth;
        }
    }

    /// After a growth: past one node, it is a quicklist.
    fn grown(&mut self) {
        if !self.quick && !self.fits(1) {
            self.quick = true;
        }
    }

    /// After a removal: under half a node, it is a listpack again.
    fn shrunk(&mut self) {
        if self.quick && self.fits(2) {
            self.quick = false;
        }
    }

    /// A list of `items` in order, as pushing each at the back builds it, with its first
    /// node's buffer allocated once at the size it ends with (a snapshot's list loads through
    /// this; pushed one by one, a ten-element list reallocated its buffer five times).
    pub fn from_items<'i>(items: impl Iterator<Item = &'i [u8]> + Clone, enc: &Encodings) -> List {
        let mut l = List::default();
        l.adopt(enc);
        let (mut count, mut room) = (0, 0);
        for v in items.clone() {
            let add = entry_size(v.len());
            if !l.fits_node(count, room + add) {
                break;
            }
            count += 1;
            room += add;
        }
        if count > 0 {
            l.insert_node(0, Node::with_room(room, false));
        }
        for v in items {
            l.push_back(v, enc);
        }
        l
    }

    pub fn push_back(&mut self, v: &[u8], enc: &Encodings) {
        self.adopt(enc);
        let add = entry_size(v.len());
        let fits = self.nodes.back().is_some_and(|n| self.allows(n, add));
        if !fits {
            let node = self.new_node(add, false);
            self.insert_node(self.nodes.len(), node);
        }
        let last = self.nodes.len() - 1;
        self.edit(last, |n| n.push_back(v));
        self.len += 1;
        if !fits {
            self.settle_ends();
        }
        self.grown();
    }

    pub fn push_front(&mut self, v: &[u8], enc: &Encodings) {
        self.adopt(enc);
        let add = entry_size(v.len());
        let fits = self.nodes.front().is_some_and(|n| self.allows(n, add));
        if !fits {
            let node = self.new_node(add, true);
            self.insert_node(0, node);
        }
        self.edit(0, |n| n.push_front(v));
        self.len += 1;
        if !fits {
            self.settle_ends();
        }
        self.grown();
    }

    pub fn pop_front(&mut self) -> Option<Bytes> {
        if self.nodes.is_empty() {
            return None;
        }
        let v = self.edit(0, |n| n.pop(true))?;
        self.len -= 1;
        if self.nodes[0].count == 0 {
            self.remove_node(0);
            self.settle_ends();
        }
        self.shrunk();
        Some(v)
    }

    pub fn pop_back(&mut self) -> Option<Bytes> {
        let last = self.nodes.len().checked_sub(1)?;
        let v = self.edit(last, |n| n.pop(false))?;
        self.len -= 1;
        if self.nodes[last].count == 0 {
            self.remove_node(last);
            self.settle_ends();
        }
        self.shrunk();
        Some(v)
    }

    /// The node holding element `i` (< len) and its place in that node, walked from the
    /// nearer end of the list.
    fn find(&self, i: usize) -> (usize, usize) {
        if i < self.len / 2 {
            let mut before = 0;
            for (n, node) in self.nodes.iter().enumerate() {
                if i < before + node.count {
                    return (n, i - before);
                }
                before += node.count;
            }
        } else {
            let mut after = self.len;
            for (n, node) in self.nodes.iter().enumerate().rev() {
                after -= node.count;
                if i >= after {
                    return (n, i - after);
                }
            }
        }
        unreachable!("element {i} of a list of {}", self.len)
    }

    pub fn get(&self, i: usize) -> Option<Cow<'_, [u8]>> {
        if i >= self.len {
            return None;
        }
        let (n, k) = self.find(i);
        let node = &self.nodes[n];
        Some(match node.entries() {
            Cow::Borrowed(buf) => Cow::Borrowed(nth_entry(buf, node.count, k).data(buf)),
            Cow::Owned(buf) => Cow::Owned(nth_entry(&buf, node.count, k).data(&buf).to_vec()),
        })
    }

    /// Replaces element `i`; false if there is none.
    pub fn set(&mut self, i: usize, v: &[u8]) -> bool {
        if i >= self.len {
            return false;
        }
        let (n, k) = self.find(i);
        self.edit(n, |node| {
            let count = node.count;
            let buf = node.raw_mut();
            let e = nth_entry(buf, count, k);
            let mut entry = Vec::with_capacity(entry_size(v.len()));
            write_entry(&mut entry, v);
            buf.splice(e.start..e.end, entry);
        });
        self.split_over(n);
        true
    }

    /// Inserts `v` so that it becomes element `i` (0..=len).
    pub fn insert(&mut self, i: usize, v: &[u8], enc: &Encodings) {
        if i == 0 {
            return self.push_front(v, enc);
        }
        if i >= self.len {
            return self.push_back(v, enc);
        }
        self.adopt(enc);
        let (n, k) = self.find(i);
        self.edit(n, |node| {
            let count = node.count;
            let buf = node.raw_mut();
            let at = nth_entry(buf, count, k).start;
            let mut entry = Vec::with_capacity(entry_size(v.len()));
            write_entry(&mut entry, v);
            buf.splice(at..at, entry);
            node.count += 1;
        });
        self.len += 1;
        self.split_over(n);
        self.grown();
    }

    /// Node `n` split in halves while over the limit (after an edit in the middle), and the
    /// nodes around it settled.
    fn split_over(&mut self, n: usize) {
        let mut added = 0;
        let mut at = n;
        while at <= n + added {
            if !self.over(&self.nodes[at]) {
                at += 1;
                continue;
            }
            let tail = self.edit(at, |node| {
                let count = node.count;
                let keep = count / 2;
                let buf = node.raw_mut();
                let cut = nth_entry(buf, count, keep).start;
                let tail = buf.split_off(cut);
                node.count = keep;
                Node::from_entries(tail, count - keep)
            });
            self.insert_node(at + 1, tail);
            added += 1;
        }
        if self.depth > 0 {
            // The new nodes, and the nodes whose distance to an end the split changed: from
            // the front, those after it moved `added` places; from the back, those before it.
            let (len, d) = (self.nodes.len(), self.depth);
            self.settle_span(n, n + added);
            self.settle_span(d.saturating_sub(1), d + added);
            let back = len.saturating_sub(d + 1 + added);
            self.settle_span(back, back + added + 1);
        }
    }

    /// Removes `limit` elements equal to `target`, after skipping the first `skip` of them
    /// (from the head), in one pass.
    pub fn remove_matches(&mut self, target: &[u8], skip: usize, limit: usize) {
        let (mut seen, mut removed) = (0, 0);
        for n in 0..self.nodes.len() {
            if removed == limit {
                break;
            }
            let node = &self.nodes[n];
            let entries = node.entries();
            let mut at = 0;
            let mut kept = Vec::new();
            let mut hit = false;
            let mut count = 0;
            while at < entries.len() {
                let e = entry_at(&entries, at);
                let matched = e.data(&entries) == target && {
                    seen += 1;
                    seen > skip && removed < limit
                };
                if matched {
                    if !hit {
                        kept.extend_from_slice(&entries[..e.start]);
                        hit = true;
                    }
                    removed += 1;
                } else {
                    if hit {
                        kept.extend_from_slice(&entries[e.start..e.end]);
                    }
                    count += 1;
                }
                at = e.end;
            }
            if hit {
                let gone = self.nodes[n].count - count;
                self.edit(n, |node| *node = Node::from_entries(kept, count));
                self.len -= gone;
            }
        }
        self.rebalance();
        self.shrunk();
    }

    /// Keeps elements `start..=end` only (`start > end`: none). O(nodes dropped) plus one
    /// node at each end, as Redis's LTRIM: the nodes between are not touched.
    pub fn keep(&mut self, start: usize, end: usize) {
        if start > end || start >= self.len {
            *self = List {
                node_limit: self.node_limit,
                depth: self.depth,
                ..List::default()
            };
            return;
        }
        let back = self.len - 1 - end.min(self.len - 1);
        let gone_back = self.drop_back(back);
        let gone_front = self.drop_front(start);
        // The trimmed end nodes may now fit with their neighbours.
        let merged_front = self.merge_next(0);
        let merged_back = match self.nodes.len().checked_sub(2) {
            Some(i) if i > 0 => self.merge_next(i),
            _ => 0,
        };
        if self.depth > 0 {
            // Nodes that came within the depth of an end as nodes went there.
            let (d, n) = (self.depth, self.nodes.len());
            let front = gone_front + merged_front;
            self.settle_span(d.saturating_sub(front + 1), d);
            let back = gone_back + merged_back;
            let from = n.saturating_sub(d + 1);
            self.settle_span(from, from + back + 1);
        }
        self.shrunk();
    }

    /// Node `i` and the next merged if they fit in one node: 1 if they were (one node fewer).
    fn merge_next(&mut self, i: usize) -> usize {
        if i + 1 >= self.nodes.len()
            || !self.allows(&self.nodes[i], self.nodes[i + 1].raw_len())
            || self.nodes[i].count + self.nodes[i + 1].count > self.count_limit()
        {
            return 0;
        }
        let next = self.nodes[i + 1].entries().into_owned();
        let more = self.nodes[i + 1].count;
        let len = self.len;
        self.remove_node(i + 1);
        self.len = len;
        self.edit(i, |node| {
            node.raw_mut().extend_from_slice(&next);
            node.count += more;
        });
        1
    }

    /// Drops `n` elements from the front; the number of whole nodes that went.
    fn drop_front(&mut self, mut n: usize) -> usize {
        let mut gone = 0;
        while n > 0 && !self.nodes.is_empty() {
            let count = self.nodes[0].count;
            if count <= n {
                self.remove_node(0);
                gone += 1;
                n -= count;
                continue;
            }
            self.edit(0, |node| {
                let buf = node.raw_mut();
                let cut = nth_entry(buf, count, n).start;
                buf.drain(..cut);
                node.count -= n;
            });
            self.len -= n;
            n = 0;
        }
        gone
    }

    /// Drops `n` elements from the back; the number of whole nodes that went.
    fn drop_back(&mut self, mut n: usize) -> usize {
        let mut gone = 0;
        while n > 0 && !self.nodes.is_empty() {
            let last = self.nodes.len() - 1;
            let count = self.nodes[last].count;
            if count <= n {
                self.remove_node(last);
                gone += 1;
                n -= count;
                continue;
            }
            self.edit(last, |node| {
                let buf = node.raw_mut();
                let cut = nth_entry(buf, count, count - n).start;
                buf.truncate(cut);
                node.count -= n;
            });
            self.len -= n;
            n = 0;
        }
        gone
    }

    /// Empty nodes gone, neighbours that fit in one node merged, every node settled: after
    /// LREM, linear anyway (a node that did not compress is not tried again: `Node::tried`).
    fn rebalance(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            if self.nodes[i].count == 0 {
                self.remove_node(i);
                continue;
            }
            if self.merge_next(i) == 0 {
                i += 1;
            }
        }
        self.settle_all();
    }

    /// Entries per node when the limit is a count; unbounded (bytes decide) otherwise.
    fn count_limit(&self) -> usize {
        match self.node_limit {
            n if n > 0 => n as usize,
            _ => usize::MAX,
        }
    }

    /// The elements in order; those of compressed nodes are copies.
    pub fn iter(&self) -> Iter<'_> {
        let mut it = Iter {
            nodes: &self.nodes,
            left: self.len,
            front: Cursor::default(),
            back: Cursor::default(),
        };
        if let Some(last) = self.nodes.len().checked_sub(1) {
            it.front.load(&self.nodes, 0, true);
            it.back.load(&self.nodes, last, false);
        }
        it
    }
}

/// A node's size limit for `list-max-listpack-size` -1 to -5 (below -5 as -5).
fn byte_limit(n: i64) -> usize {
    4096usize << ((-n).clamp(1, 5) - 1)
}

/// One end of an [`Iter`]: the node it is in, its entries, and where it stands.
#[derive(Default)]
struct Cursor<'a> {
    node: usize,
    entries: Cow<'a, [u8]>,
    /// Front: where the next entry starts; back: where it ends.
    at: usize,
    /// Entries of this node not yet passed from this end.
    in_node: usize,
}

impl<'a> Cursor<'a> {
    fn load(&mut self, nodes: &'a VecDeque<Node>, n: usize, front: bool) {
        self.node = n;
        self.entries = nodes[n].entries();
        self.in_node = nodes[n].count;
        self.at = if front { 0 } else { self.entries.len() };
    }

    fn yield_entry(&self, e: Entry) -> Cow<'a, [u8]> {
        match &self.entries {
            Cow::Borrowed(buf) => Cow::Borrowed(e.data(buf)),
            Cow::Owned(buf) => Cow::Owned(e.data(buf).to_vec()),
        }
    }
}

/// The elements of a [`List`], from either end.
pub struct Iter<'a> {
    nodes: &'a VecDeque<Node>,
    /// Elements not yet yielded from either end.
    left: usize,
    front: Cursor<'a>,
    back: Cursor<'a>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        while self.front.in_node == 0 {
            self.front.load(self.nodes, self.front.node + 1, true);
        }
        let e = entry_at(&self.front.entries, self.front.at);
        self.front.at = e.end;
        self.front.in_node -= 1;
        self.left -= 1;
        Some(self.front.yield_entry(e))
    }

    /// Skips whole nodes by their counts, so LRANGE from the middle walks nodes, not entries.
    fn nth(&mut self, mut n: usize) -> Option<Self::Item> {
        if n >= self.left {
            self.left = 0;
            return None;
        }
        while n >= self.front.in_node {
            n -= self.front.in_node;
            self.left -= self.front.in_node;
            let next = self.front.node + 1;
            // Skipped nodes are not decompressed: only counted.
            let mut node = next;
            while n >= self.nodes[node].count {
                n -= self.nodes[node].count;
                self.left -= self.nodes[node].count;
                node += 1;
            }
            self.front.load(self.nodes, node, true);
        }
        for _ in 0..n {
            self.front.at = entry_at(&self.front.entries, self.front.at).end;
            self.front.in_node -= 1;
            self.left -= 1;
        }
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        while self.back.in_node == 0 {
            self.back.load(self.nodes, self.back.node - 1, false);
        }
        let e = entry_before(&self.back.entries, self.back.at);
        self.back.at = e.start;
        self.back.in_node -= 1;
        self.left -= 1;
        Some(self.back.yield_entry(e))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(size: i64, depth: usize) -> Encodings {
        Encodings {
            list_max_listpack_size: size,
            list_compress_depth: depth,
            ..Encodings::default()
        }
    }

    fn items(l: &List) -> Vec<Vec<u8>> {
        l.iter().map(|v| v.into_owned()).collect()
    }

    /// A list built at once is the one pushed element by element: the elements, the node
    /// layout's byte counts and the encoding, over node limits by count and by bytes, with
    /// and without compression.
    #[test]
    fn a_list_built_at_once_is_the_one_pushed_element_by_element() {
        for (size, depth) in [(3, 0), (3, 1), (-1, 0), (-1, 2), (5, 3), (1, 1), (-2, 0)] {
            let e = enc(size, depth);
            for n in [0usize, 1, 2, 5, 10, 40, 400] {
                let values: Vec<Vec<u8>> = (0..n)
                    .map(|i| {
                        let len = (i * 37) % 300;
                        (0..len).map(|j| (i * 7 + j / 13) as u8).collect()
                    })
                    .collect();
                let mut pushed = List::default();
                for v in &values {
                    pushed.push_back(v, &e);
                }
                let built = List::from_items(values.iter().map(|v| &v[..]), &e);
                assert_eq!(items(&built), values, "size {size} depth {depth} n {n}");
                assert_eq!(built.len(), pushed.len());
                assert_eq!(
                    built.nodes.len(),
                    pushed.nodes.len(),
                    "size {size} depth {depth} n {n}"
                );
                assert_eq!(built.raw, pushed.raw);
                assert_eq!(built.encoding(), pushed.encoding());
                assert!(
                    built.mem_size() <= pushed.mem_size(),
                    "size {size} depth {depth} n {n}"
                );
            }
        }
    }

    /// Every operation against a `VecDeque` model, over node limits by count and by bytes,
    /// with and without compression, with values across the 1- and 2-byte length headers:
    /// the elements, the length, the byte counts and the iterator (both ends, `nth`) agree.
    #[test]
    fn a_list_matches_a_deque_through_every_edit() {
        for (size, depth) in [(3, 0), (3, 1), (-1, 0), (-1, 2), (5, 3), (1, 1)] {
            let e = enc(size, depth);
            let mut l = List::default();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut seed = 0x2545_f491_4f6c_dd1du64 ^ size as u64;
            let mut rand = move |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n.max(1) as u64) as usize
            };
            for step in 0..4000 {
                let value: Vec<u8> = match rand(4) {
                    0 => Vec::new(),
                    1 => vec![b'a' + rand(3) as u8; rand(5)],
                    2 => vec![b'z'; 100 + rand(300)],
                    _ => format!("{}", rand(50)).into_bytes(),
                };
                match rand(12) {
                    0..=2 => {
                        l.push_back(&value, &e);
                        model.push_back(value);
                    }
                    3..=4 => {
                        l.push_front(&value, &e);
                        model.push_front(value);
                    }
                    5 => assert_eq!(l.pop_front().map(|b| b.to_vec()), model.pop_front()),
                    6 => assert_eq!(l.pop_back().map(|b| b.to_vec()), model.pop_back()),
                    7 => {
                        let i = rand(model.len() + 1);
                        l.insert(i, &value, &e);
                        model.insert(i, value);
                    }
                    8 => {
                        let i = rand(model.len() + 1);
                        assert_eq!(l.set(i, &value), i < model.len());
                        if i < model.len() {
                            model[i] = value;
                        }
                    }
                    9 if step % 7 == 0 => {
                        let target = vec![b'a' + rand(3) as u8; rand(5)];
                        let matches = model.iter().filter(|v| **v == target).count();
                        let skip = rand(matches + 1);
                        let limit = rand(matches + 1);
                        l.remove_matches(&target, skip, limit);
                        let (mut seen, mut removed) = (0, 0);
                        model.retain(|v| {
                            if *v != target {
                                return true;
                            }
                            seen += 1;
                            if seen <= skip || removed == limit {
                                return true;
                            }
                            removed += 1;
                            false
                        });
                    }
                    10 if step % 5 == 0 => {
                        let (a, b) = (rand(model.len() + 2), rand(model.len() + 2));
                        l.keep(a, b);
                        if a > b || a >= model.len() {
                            model.clear();
                        } else {
                            model.truncate(b + 1);
                            model.drain(..a);
                        }
                    }
                    _ => {
                        let i = rand(model.len() + 1);
                        assert_eq!(l.get(i).map(|v| v.into_owned()), model.get(i).cloned());
                    }
                }
                assert_eq!(
                    l.len(),
                    model.len(),
                    "size {size} depth {depth} step {step}"
                );
                if step % 50 == 0 {
                    let want: Vec<Vec<u8>> = model.iter().cloned().collect();
                    assert_eq!(items(&l), want);
                    let back: Vec<Vec<u8>> = l.iter().rev().map(|v| v.into_owned()).collect();
                    assert_eq!(back, want.iter().rev().cloned().collect::<Vec<_>>());
                    let from = rand(model.len() + 1);
                    let skipped: Vec<Vec<u8>> =
                        l.iter().skip(from).map(|v| v.into_owned()).collect();
                    assert_eq!(skipped, want[from.min(want.len())..]);
                    let raw: usize = l.nodes.iter().map(Node::raw_len).sum();
                    let stored: usize = l.nodes.iter().map(Node::stored).sum();
                    assert_eq!((l.raw, l.stored), (raw, stored));
                    assert_eq!(l.nodes.iter().map(|n| n.count).sum::<usize>(), l.len);
                    assert!(l.nodes.iter().all(|n| n.count > 0), "no empty node");
                    // Compressed exactly where Redis's rule says: deeper than the depth
                    // from both ends (unless it did not pay), and nowhere else.
                    let n = l.nodes.len();
                    for (i, node) in l.nodes.iter().enumerate() {
                        let interior = depth > 0 && i >= depth && i + depth < n;
                        let packed = matches!(node.body, Body::Lzf { .. });
                        let settled = if interior {
                            packed || node.tried || node.raw_len() < MIN_COMPRESS_BYTES
                        } else {
                            !packed
                        };
                        assert!(
                            settled,
                            "size {size} depth {depth} step {step}: node {i} of {n}"
                        );
                    }
                }
            }
        }
    }

    /// Nodes stay within `list-max-listpack-size`; an element larger than a node gets a node
    /// of its own; a queue's pops free the nodes they empty.
    #[test]
    fn nodes_respect_the_limit_and_queues_free_them() {
        let e = enc(-1, 0);
        let mut l = List::default();
        for i in 0..10_000 {
            l.push_back(format!("job:{i:06}").as_bytes(), &e);
        }
        assert!(l.nodes.len() > 10);
        assert!(l.nodes.iter().all(|n| n.raw_len() <= 4096));
        assert_eq!(l.encoding(), "quicklist");
        l.push_back(&vec![b'x'; 10_000], &e);
        assert_eq!(l.nodes.back().map(|n| n.count), Some(1));
        for i in 0..10_000 {
            assert_eq!(
                l.pop_front().as_deref(),
                Some(format!("job:{i:06}").as_bytes())
            );
        }
        assert_eq!(l.nodes.len(), 1);
        assert_eq!(l.mem_size(), 10_000 + 4 + NODE_OVERHEAD);
    }

    /// With a compress depth, interior nodes of compressible data are stored compressed
    /// and read back whole; the end nodes stay raw.
    #[test]
    fn interior_nodes_are_compressed_past_the_depth() {
        let e = enc(-1, 1);
        let mut l = List::default();
        for i in 0..5_000 {
            l.push_back(
                format!("event:{:04}:payload-payload", i % 100).as_bytes(),
                &e,
            );
        }
        let n = l.nodes.len();
        assert!(n > 4);
        assert!(matches!(l.nodes[0].body, Body::Raw { .. }));
        assert!(matches!(l.nodes[n - 1].body, Body::Raw { .. }));
        assert!(l
            .nodes
            .range(1..n - 1)
            .all(|n| matches!(n.body, Body::Lzf { .. })));
        assert!(l.stored < l.raw / 2, "{} of {}", l.stored, l.raw);
        assert_eq!(
            l.get(2_500).as_deref(),
            Some(&b"event:0000:payload-payload"[..])
        );
        assert!(l.set(2_501, b"changed"));
        assert_eq!(l.iter().nth(2_501).as_deref(), Some(&b"changed"[..]));
        while l.len() > 1 {
            l.pop_front();
        }
        assert!(l.nodes.iter().all(|n| matches!(n.body, Body::Raw { .. })));
    }
}
