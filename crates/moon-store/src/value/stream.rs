//! Streams: entries `ms-seq → field value ...` in id order, and their consumer groups.
//!
//! Entries live in nodes (Redis's idea: a radix tree of listpacks). A node is one packed buffer
//! of up to `stream-node-max-entries` entries or about `stream-node-max-bytes` bytes, keyed by
//! its first id in a B-tree. Each entry is a flag byte (deleted, same fields as the node's
//! master), its id as deltas from the node's master id (varints), and its fields and values
//! length-prefixed — the fields left out when they repeat the master entry's, as most streams'
//! entries do. A small entry costs a dozen bytes beyond its values. XDEL marks an entry
//! deleted; a node whose entries are all deleted is dropped; trimming drops whole nodes from
//! the head (`~`) or marks entries in the first one (`=`), as Redis does, so `MAXLEN ~`
//! leaves the same length as on Redis for the same node limits.
//!
//! A consumer group keeps its last delivered id, its read counter, its pending entries list
//! (id → consumer, last delivery time, delivery count) and its consumers, each with the ids
//! it owns. Times are what the caller passes in: this module never reads the clock.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

/// A stream entry id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// The next id, `None` past the last possible one.
    pub fn incr(self) -> Option<StreamId> {
        if self.seq == u64::MAX {
            (self.ms != u64::MAX).then(|| StreamId::new(self.ms + 1, 0))
        } else {
            Some(StreamId::new(self.ms, self.seq + 1))
        }
    }

    /// The previous id, `None` before 0-0.
    pub fn decr(self) -> Option<StreamId> {
        if self.seq == 0 {
            (self.ms != 0).then(|| StreamId::new(self.ms - 1, u64::MAX))
        } else {
            Some(StreamId::new(self.ms, self.seq - 1))
        }
    }

    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    pub fn to_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.text().as_bytes())
    }

    /// `<ms>-<seq>` on the stack: an id is formatted for every XADD's reply and log record,
    /// and `fmt`'s machinery was 3 % of an XADD.
    pub fn text(self) -> IdText {
        let mut t = IdText {
            buf: [0; 41],
            start: 41,
        };
        t.prepend(self.seq);
        t.start -= 1;
        t.buf[t.start] = b'-';
        t.prepend(self.ms);
        t
    }
}

/// A [`StreamId`]'s text (at most 20 + 1 + 20 bytes).
pub struct IdText {
    buf: [u8; 41],
    start: usize,
}

impl IdText {
    fn prepend(&mut self, mut n: u64) {
        loop {
            self.start -= 1;
            self.buf[self.start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(self.text().as_bytes()).unwrap_or("0-0"))
    }
}

const DELETED: u8 = 1;
const SAME_FIELDS: u8 = 2;
/// Bytes counted per node beyond its buffer: the tree slot, the master entry.
const NODE_OVERHEAD: usize = 96;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&b) = buf.get(*pos) {
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn get_bytes(buf: &[u8], pos: &mut usize) -> Bytes {
    let n = get_varint(buf, pos) as usize;
    let end = (*pos + n).min(buf.len());
    let b = Bytes::copy_from_slice(&buf[*pos..end]);
    *pos = end;
    b
}

fn skip_bytes(buf: &[u8], pos: &mut usize) {
    let n = get_varint(buf, pos) as usize;
    *pos = (*pos + n).min(buf.len());
}

/// One packed node of entries.
#[derive(Clone, Debug)]
struct Node {
    master: StreamId,
    fields: Vec<Bytes>,
    buf: Vec<u8>,
    /// Entries not deleted.
    live: u32,
    /// Entries marked deleted.
    deleted: u32,
}

/// Where an entry is in its node's buffer.
#[derive(Clone, Copy)]
struct Slot {
    id: StreamId,
    at: usize,
    deleted: bool,
}

impl Node {
    fn new(master: StreamId, fields: &[Bytes]) -> Node {
        Node {
            master,
            // Copies: a request's bytes must not pin its connection's read buffer.
            fields: fields.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
            buf: Vec::new(),
            live: 0,
            deleted: 0,
        }
    }

    fn mem(&self) -> usize {
        NODE_OVERHEAD
            + self.buf.capacity()
            + self.fields.iter().map(|f| f.len() + 16).sum::<usize>()
    }

    fn push(&mut self, id: StreamId, pairs: &[Bytes]) {
        let names = pairs.len() / 2;
        let same = names == self.fields.len()
            && pairs
                .iter()
                .step_by(2)
                .zip(&self.fields)
                .all(|(a, b)| a == b);
        self.buf.push(if same { SAME_FIELDS } else { 0 });
        // Every node holds a live entry (an emptied node is dropped), so a new id, greater
        // than the last, is never below the node's first: the deltas do not wrap.
        put_varint(&mut self.buf, id.ms.saturating_sub(self.master.ms));
        put_varint(
            &mut self.buf,
            if id.ms == self.master.ms {
                id.seq.saturating_sub(self.master.seq)
            } else {
                id.seq
            },
        );
        put_varint(&mut self.buf, names as u64);
        for pair in pairs.chunks(2) {
            if !same {
                put_bytes(&mut self.buf, &pair[0]);
            }
            put_bytes(&mut self.buf, &pair[1]);
        }
        self.live += 1;
    }

    /// Every entry's id and place, deleted ones included, in order.
    fn slots(&self) -> Vec<Slot> {
        let mut out = Vec::with_capacity((self.live + self.deleted) as usize);
        let buf = &self.buf;
        let mut pos = 0;
        while pos < buf.len() {
            let at = pos;
            let flags = buf[pos];
            pos += 1;
            let ms = self.master.ms + get_varint(buf, &mut pos);
            let seq_delta = get_varint(buf, &mut pos);
            let seq = if ms == self.master.ms {
                self.master.seq + seq_delta
            } else {
                seq_delta
            };
            let n = get_varint(buf, &mut pos);
            for _ in 0..n {
                if flags & SAME_FIELDS == 0 {
                    skip_bytes(buf, &mut pos);
                }
                skip_bytes(buf, &mut pos);
            }
            out.push(Slot {
                id: StreamId::new(ms, seq),
                at,
                deleted: flags & DELETED != 0,
            });
        }
        out
    }

    /// The fields and values of the entry at `at`, flat.
    fn pairs_at(&self, at: usize) -> Vec<Bytes> {
        let buf = &self.buf;
        let mut pos = at;
        let flags = buf[pos];
        pos += 1;
        get_varint(buf, &mut pos);
        get_varint(buf, &mut pos);
        let n = get_varint(buf, &mut pos) as usize;
        let mut out = Vec::with_capacity(n * 2);
        for i in 0..n {
            if flags & SAME_FIELDS != 0 {
                out.push(self.fields.get(i).cloned().unwrap_or_default());
            } else {
                out.push(get_bytes(buf, &mut pos));
            }
            out.push(get_bytes(buf, &mut pos));
        }
        out
    }

    fn mark_deleted(&mut self, at: usize) {
        self.buf[at] |= DELETED;
        self.live -= 1;
        self.deleted += 1;
    }

    fn last_live(&self) -> Option<StreamId> {
        self.slots()
            .into_iter()
            .rev()
            .find(|s| !s.deleted)
            .map(|s| s.id)
    }
}

/// An entry of a consumer group's pending entries list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub consumer: Bytes,
    /// Unix ms of the last delivery.
    pub delivered_at: u64,
    pub deliveries: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Consumer {
    /// Unix ms it was last seen (read, claimed, created). Not part of exact replay.
    pub seen_at: u64,
    pub pending: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub last_id: StreamId,
    /// Entries read through the group, `None` when unknown (Redis's -1).
    pub entries_read: Option<u64>,
    pub pending: BTreeMap<StreamId, Pending>,
    pub consumers: BTreeMap<Bytes, Consumer>,
}

impl Group {
    /// The consumer named `name`, created if new (seen at `now`): whether it was created.
    pub fn consumer(&mut self, name: &Bytes, now: u64) -> (&mut Consumer, bool) {
        let created = !self.consumers.contains_key(name);
        let c = self
            .consumers
            .entry(Bytes::copy_from_slice(name))
            .or_default();
        if created || now != 0 {
            c.seen_at = now;
        }
        (c, created)
    }

    /// Takes `id` off the pending list (and its consumer's): whether it was pending.
    pub fn ack(&mut self, id: StreamId) -> bool {
        match self.pending.remove(&id) {
            Some(p) => {
                if let Some(c) = self.consumers.get_mut(&p.consumer) {
                    c.pending.remove(&id);
                }
                true
            }
            None => false,
        }
    }

    /// Makes `id` pending for `consumer`, delivered at `at`, `deliveries` times.
    pub fn assign(&mut self, id: StreamId, consumer: &Bytes, at: u64, deliveries: u64) {
        if let Some(old) = self.pending.get(&id) {
            if old.consumer != *consumer {
                if let Some(c) = self.consumers.get_mut(&old.consumer) {
                    c.pending.remove(&id);
                }
            }
        }
        let consumer = Bytes::copy_from_slice(consumer);
        self.pending.insert(
            id,
            Pending {
                consumer: consumer.clone(),
                delivered_at: at,
                deliveries,
            },
        );
        self.consumers
            .entry(consumer)
            .or_default()
            .pending
            .insert(id);
    }
}

/// Node limits (`stream-node-max-bytes`, `stream-node-max-entries`; 0 = no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    pub max_bytes: usize,
    pub max_entries: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_bytes: 4096,
            max_entries: 100,
        }
    }
}

/// How XADD and XTRIM trim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

#[derive(Clone, Debug, Default)]
pub struct Stream {
    nodes: BTreeMap<StreamId, Node>,
    len: u64,
    pub last_id: StreamId,
    pub max_deleted: StreamId,
    pub entries_added: u64,
    pub groups: BTreeMap<Bytes, Group>,
    /// Bytes of the nodes, kept as they change (O(1) per append).
    nodes_mem: usize,
    /// Bytes of the groups, recounted when they change (O(groups + consumers)).
    groups_mem: usize,
}

impl Stream {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn mem_size(&self) -> usize {
        64 + self.nodes_mem + self.groups_mem
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn recount_groups(&mut self) {
        self.groups_mem = self
            .groups
            .iter()
            .map(|(n, g)| {
                n.len()
                    + 64
                    + g.pending.len() * 88
                    + g.consumers.keys().map(|c| c.len() + 48).sum::<usize>()
            })
            .sum();
    }

    /// The first live entry's id (0-0 when empty).
    pub fn first_id(&self) -> StreamId {
        self.nodes
            .values()
            .find_map(|n| n.slots().into_iter().find(|s| !s.deleted).map(|s| s.id))
            .unwrap_or_default()
    }

    /// Appends an entry (`pairs`: field, value, ...) at `id`, greater than the last id.
    pub fn append(&mut self, id: StreamId, pairs: &[Bytes], limits: NodeLimits) {
        let size: usize = pairs.iter().map(|p| p.len() + 2).sum::<usize>() + 8;
        let max_bytes = if limits.max_bytes == 0 {
            usize::MAX
        } else {
            limits.max_bytes
        };
        let new_node = match self.nodes.last_key_value() {
            None => true,
            Some((_, n)) => {
                n.buf.len() + size >= max_bytes
                    || (limits.max_entries > 0
                        && (n.live + n.deleted) as usize >= limits.max_entries)
            }
        };
        if new_node {
            let fields: Vec<Bytes> = pairs.iter().step_by(2).cloned().collect();
            self.nodes.insert(id, Node::new(id, &fields));
        }
        if let Some(mut last) = self.nodes.last_entry() {
            let n = last.get_mut();
            let before = if new_node { 0 } else { n.mem() };
            n.push(id, pairs);
            self.nodes_mem = self.nodes_mem + n.mem() - before;
        }
        self.len += 1;
        // Counters stay within what a logged command can carry (i64).
        self.entries_added = (self.entries_added + 1).min(i64::MAX as u64);
        self.last_id = id;
    }

    /// Entries from `start` to `end` inclusive (reversed with `rev`), at most `count` (0: all).
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
        rev: bool,
        count: usize,
    ) -> Vec<(StreamId, Vec<Bytes>)> {
        let mut out = Vec::new();
        if start > end {
            return out;
        }
        let first_node = self
            .nodes
            .range(..=start)
            .next_back()
            .map_or(start, |(k, _)| *k);
        let nodes: Vec<&Node> = self.nodes.range(first_node..=end).map(|(_, n)| n).collect();
        let full = |out: &Vec<_>| count > 0 && out.len() >= count;
        if rev {
            for n in nodes.iter().rev() {
                for s in n.slots().into_iter().rev() {
                    if s.deleted || s.id > end {
                        continue;
                    }
                    if s.id < start || full(&out) {
                        return out;
                    }
                    out.push((s.id, n.pairs_at(s.at)));
                }
            }
        } else {
            for n in nodes {
                for s in n.slots() {
                    if s.deleted || s.id < start {
                        continue;
                    }
                    if s.id > end || full(&out) {
                        return out;
                    }
                    out.push((s.id, n.pairs_at(s.at)));
                }
            }
        }
        out
    }

    /// The entry at `id`, if it exists.
    pub fn get(&self, id: StreamId) -> Option<Vec<Bytes>> {
        self.range(id, id, false, 1).pop().map(|(_, p)| p)
    }

    pub fn contains(&self, id: StreamId) -> bool {
        let Some((_, n)) = self.nodes.range(..=id).next_back() else {
            return false;
        };
        n.slots().iter().any(|s| s.id == id && !s.deleted)
    }

    /// Deletes the entry at `id`: whether it existed.
    pub fn delete(&mut self, id: StreamId) -> bool {
        let Some((&key, n)) = self.nodes.range_mut(..=id).next_back() else {
            return false;
        };
        let Some(slot) = n.slots().into_iter().find(|s| s.id == id && !s.deleted) else {
            return false;
        };
        n.mark_deleted(slot.at);
        if n.live == 0 {
            if let Some(gone) = self.nodes.remove(&key) {
                self.nodes_mem -= gone.mem();
            }
        }
        self.len -= 1;
        if id > self.max_deleted {
            self.max_deleted = id;
        }
        true
    }

    /// Trims from the head: whole nodes only with `approx` (and at most `limit` entries
    /// when non-zero), else entry by entry. Returns how many entries went.
    pub fn trim(&mut self, trim: Trim, approx: bool, limit: u64) -> u64 {
        let mut removed = 0u64;
        loop {
            if let Trim::MaxLen(max) = trim {
                if self.len <= max {
                    break;
                }
            }
            let Some((&key, node)) = self.nodes.first_key_value() else {
                break;
            };
            let entries = u64::from(node.live);
            if limit > 0 && removed + entries > limit {
                break;
            }
            let remove_node = match trim {
                Trim::MaxLen(max) => self.len - entries >= max,
                Trim::MinId(min) => node.slots().last().is_some_and(|s| s.id < min),
            };
            if remove_node {
                if let Some(gone) = self.nodes.remove(&key) {
                    self.nodes_mem -= gone.mem();
                }
                self.len -= entries;
                removed += entries;
                continue;
            }
            if approx {
                break;
            }
            let Some(node) = self.nodes.get_mut(&key) else {
                break;
            };
            let mut gone = 0;
            for s in node.slots() {
                let stop = match trim {
                    Trim::MaxLen(max) => self.len - gone <= max,
                    Trim::MinId(min) => s.id >= min,
                };
                if stop {
                    break;
                }
                if !s.deleted {
                    node.mark_deleted(s.at);
                    gone += 1;
                }
            }
            self.len -= gone;
            removed += gone;
            if node.live == 0 {
                if let Some(emptied) = self.nodes.remove(&key) {
                    self.nodes_mem -= emptied.mem();
                }
            }
            break;
        }
        removed
    }

    /// The last live entry (XINFO's last-entry), if any.
    pub fn last_entry(&self) -> Option<(StreamId, Vec<Bytes>)> {
        self.range(StreamId::MIN, StreamId::MAX, true, 1).pop()
    }

    pub fn first_entry(&self) -> Option<(StreamId, Vec<Bytes>)> {
        self.range(StreamId::MIN, StreamId::MAX, false, 1).pop()
    }

    /// Every live id, in order.
    pub fn ids(&self) -> Vec<StreamId> {
        self.nodes
            .values()
            .flat_map(|n| n.slots().into_iter().filter(|s| !s.deleted).map(|s| s.id))
            .collect()
    }

    /// The last live entry's id in the whole stream (XINFO's recorded-first... helpers).
    pub fn last_live_id(&self) -> Option<StreamId> {
        self.nodes.values().rev().find_map(Node::last_live)
    }

    /// After changing groups from outside: the memory account follows.
    pub fn groups_changed(&mut self) {
        self.recount_groups();
    }

    /// Redis's `streamEstimateDistanceFromFirstEverEntry`: the entries read up to `id`, if it
    /// can be known.
    pub fn entries_read_at(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.len == 0 && id <= self.last_id {
            return Some(self.entries_added);
        }
        if id == self.last_id {
            return Some(self.entries_added);
        }
        if id > self.last_id {
            return None;
        }
        let first = self.first_id();
        if self.max_deleted.is_zero() || self.max_deleted < first {
            if id < first {
                return Some(self.entries_added - self.len);
            }
            if id == first {
                return Some(self.entries_added - self.len + 1);
            }
        }
        None
    }

    /// Whether a deleted entry lies between `start` and `end` (Redis's tombstone check).
    pub fn range_has_tombstone(&self, start: StreamId, end: StreamId) -> bool {
        if self.len == 0 || self.max_deleted.is_zero() {
            return false;
        }
        if self.first_id() > self.max_deleted {
            return false;
        }
        start <= self.max_deleted && self.max_deleted <= end
    }

    /// A group's lag: entries added and not yet read through it, if it can be known.
    pub fn lag(&self, g: &Group) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if let Some(read) = g.entries_read {
            if !self.range_has_tombstone(g.last_id, StreamId::MAX) {
                return Some(self.entries_added.saturating_sub(read));
            }
        }
        self.entries_read_at(g.last_id)
            .map(|read| self.entries_added.saturating_sub(read))
    }

    /// The commands that rebuild this stream under `key`: an XADD per entry (an empty
    /// stream: one added and trimmed away), XSETID with its counters, then each group, its
    /// consumers and its pending entries (XCLAIM ... TIME RETRYCOUNT FORCE JUSTID, as Redis
    /// rewrites them; a pending entry whose entry was deleted is not rebuilt, as in Redis).
    pub fn rewrite_commands(&self, key: &Bytes, _chunk: super::Chunk) -> Vec<Vec<Bytes>> {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let mut out = Vec::new();
        let entries = self.range(StreamId::MIN, StreamId::MAX, false, 0);
        if entries.is_empty() {
            let id = self.last_id.max(StreamId::new(0, 1));
            out.push(vec![
                b("XADD"),
                key.clone(),
                b("MAXLEN"),
                b("0"),
                id.to_bytes(),
                b("x"),
                b("y"),
            ]);
        }
        for (id, pairs) in entries {
            let mut cmd = vec![b("XADD"), key.clone(), id.to_bytes()];
            cmd.extend(pairs);
            out.push(cmd);
        }
        // XSETID refuses a deleted id above its own, but a stream gets there (XSETID without
        // MAXDELETEDID may set the last id below it): then the deleted id is set first, with
        // a last id as high, and the last id lowered after (XSETID without MAXDELETEDID keeps
        // it; the top entry is at or below the last id, so both are accepted).
        let first_last = self.last_id.max(self.max_deleted);
        out.push(vec![
            b("XSETID"),
            key.clone(),
            first_last.to_bytes(),
            b("ENTRIESADDED"),
            Bytes::from(self.entries_added.to_string()),
            b("MAXDELETEDID"),
            self.max_deleted.to_bytes(),
        ]);
        if first_last != self.last_id {
            out.push(vec![b("XSETID"), key.clone(), self.last_id.to_bytes()]);
        }
        for (name, g) in &self.groups {
            out.push(vec![
                b("XGROUP"),
                b("CREATE"),
                key.clone(),
                name.clone(),
                g.last_id.to_bytes(),
                b("ENTRIESREAD"),
                Bytes::from(g.entries_read.map_or(-1, |r| r as i64).to_string()),
            ]);
            for cname in g.consumers.keys() {
                out.push(vec![
                    b("XGROUP"),
                    b("CREATECONSUMER"),
                    key.clone(),
                    name.clone(),
                    cname.clone(),
                ]);
            }
            for (id, p) in &g.pending {
                out.push(vec![
                    b("XCLAIM"),
                    key.clone(),
                    name.clone(),
                    p.consumer.clone(),
                    b("0"),
                    id.to_bytes(),
                    b("TIME"),
                    Bytes::from(p.delivered_at.to_string()),
                    b("RETRYCOUNT"),
                    Bytes::from(p.deliveries.to_string()),
                    b("FORCE"),
                    b("JUSTID"),
                ]);
            }
        }
        out
    }

    /// A canonical text (entries, counters, groups; consumers' seen times left out).
    pub fn canonical(&self) -> String {
        let entries = self.range(StreamId::MIN, StreamId::MAX, false, 0);
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(n, g)| {
                let consumers: Vec<(Bytes, Vec<StreamId>)> = g
                    .consumers
                    .iter()
                    .map(|(c, v)| (c.clone(), v.pending.iter().copied().collect()))
                    .collect();
                format!(
                    "{n:?}:{}:{:?}:{:?}:{consumers:?}",
                    g.last_id, g.entries_read, g.pending
                )
            })
            .collect();
        format!(
            "stream:{entries:?}:{}:{}:{}:{groups:?}",
            self.last_id, self.max_deleted, self.entries_added
        )
    }
}

/// Two streams are equal when their canonical texts are (entries, counters, groups).
impl PartialEq for Stream {
    fn eq(&self, other: &Stream) -> bool {
        self.canonical() == other.canonical()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn an_id_text_is_its_display() {
        for (ms, seq) in [
            (0, 0),
            (0, 1),
            (9, 10),
            (1_764_892_800_123, 7),
            (u64::MAX, 0),
            (0, u64::MAX),
            (u64::MAX, u64::MAX),
        ] {
            let id = StreamId::new(ms, seq);
            assert_eq!(id.text().as_bytes(), format!("{ms}-{seq}").as_bytes());
            assert_eq!(id.to_string(), format!("{ms}-{seq}"));
            assert_eq!(id.to_bytes(), format!("{ms}-{seq}").as_bytes());
        }
    }

    #[test]
    fn entries_pack_read_delete_and_trim() {
        let mut s = Stream::default();
        let limits = NodeLimits {
            max_bytes: 4096,
            max_entries: 10,
        };
        for i in 1..=35u64 {
            let pairs = if i % 7 == 0 {
                vec![b("other"), b(&i.to_string())]
            } else {
                vec![b("f"), b(&i.to_string()), b("g"), b("x")]
            };
            s.append(StreamId::new(1000 + i / 3, i), &pairs, limits);
        }
        assert_eq!(s.len(), 35);
        assert_eq!(s.node_count(), 4);
        let all = s.range(StreamId::MIN, StreamId::MAX, false, 0);
        assert_eq!(all.len(), 35);
        assert_eq!(all[6].1, vec![b("other"), b("7")]);
        assert_eq!(all[0].1, vec![b("f"), b("1"), b("g"), b("x")]);
        let rev = s.range(StreamId::MIN, StreamId::MAX, true, 3);
        assert_eq!(rev[0].0, StreamId::new(1011, 35));
        assert!(s.delete(StreamId::new(1001, 5)));
        assert!(!s.delete(StreamId::new(1001, 5)));
        assert_eq!(s.len(), 34);
        assert!(s.get(StreamId::new(1001, 5)).is_none());
        // ~ removes whole nodes only; = marks entries in the first node.
        assert_eq!(s.trim(Trim::MaxLen(20), true, 0), 9);
        assert_eq!(s.len(), 25);
        assert_eq!(s.trim(Trim::MaxLen(20), false, 0), 5);
        assert_eq!(s.len(), 20);
        assert_eq!(s.first_id(), StreamId::new(1005, 16));
        assert_eq!(s.trim(Trim::MinId(StreamId::new(1010, 0)), false, 0), 14);
        assert_eq!(s.first_id(), StreamId::new(1010, 30));
        assert_eq!(s.entries_added, 35);
    }
}
