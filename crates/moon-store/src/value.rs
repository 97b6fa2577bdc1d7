//! What a key holds: a string, a hash, a set, a list or a sorted set, each in a compact form
//! while small and a hash table (a tree for a sorted set: `value/zset.rs`) once it grows
//! (Redis's listpack/intset idea), and the commands that rebuild a value
//! from nothing (its *rewrite form*, used by BGREWRITEAOF and by moves across shards).
//!
//! `mem_size`, what the memory account needs, is O(1): a set and a list keep their byte
//! count, a hash table its own, a packed hash's follows from its buffer. The compact forms
//! are plain, exactly sized buffers searched linearly: below the thresholds (128 entries, 64-byte
//! fields by default) that is as fast as hashing and far smaller. A value never converts back to
//! its compact form, as in Redis.

use std::fmt;

use bytes::Bytes;
use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
use indexmap::IndexMap;

type FastHash = foldhash::fast::RandomState;

pub mod geo;
pub mod hll;
mod list;
mod rdb;
pub mod stream;
mod zset;
pub use list::List;
pub use zset::ZSet;

/// A score as Redis prints a double (`%.17g`, see [`moon_proto::frame::format_double_reply`]):
/// a text that parses back to the same double.
pub fn format_score(d: f64) -> String {
    moon_proto::frame::format_double_reply(d)
}

/// The largest hash field deadline (Unix ms) HPEXPIREAT accepts, as Redis 7.4's
/// `HFE_MAX_ABS_TIME_MSEC`: a value from elsewhere (RESTORE, an RDB) with a later one is refused.
pub const MAX_FIELD_DEADLINE: u64 = 0x0000_FFFF_FFFF_FFFF >> 2;

/// Thresholds of the compact encodings (`hash-max-listpack-*`, `set-max-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encodings {
    pub hash_max_listpack_entries: usize,
    pub hash_max_listpack_value: usize,
    pub set_max_intset_entries: usize,
    pub set_max_listpack_entries: usize,
    pub set_max_listpack_value: usize,
    /// Redis's `list-max-listpack-size`: positive, entries per node; -1 to -5, bytes per node
    /// (4 KiB to 64 KiB). A list that fits one node is `listpack`, a longer one `quicklist`.
    pub list_max_listpack_size: i64,
    /// Redis's `list-compress-depth`: nodes this far from both ends of a list stay raw, the
    /// ones between are LZF-compressed (0: none). Fixed when a list is created.
    pub list_compress_depth: usize,
    pub zset_max_listpack_entries: usize,
    pub zset_max_listpack_value: usize,
    /// Redis's `stream-node-max-bytes` and `stream-node-max-entries` (0: no limit).
    pub stream_node_max_bytes: usize,
    pub stream_node_max_entries: usize,
    /// Redis's `hll-sparse-max-bytes`: the largest sparse HyperLogLog string.
    pub hll_sparse_max_bytes: usize,
}

impl Default for Encodings {
    fn default() -> Self {
        Encodings {
            hash_max_listpack_entries: 128,
            hash_max_listpack_value: 64,
            set_max_intset_entries: 512,
            set_max_listpack_entries: 128,
            set_max_listpack_value: 64,
            list_max_listpack_size: -2,
            list_compress_depth: 0,
            zset_max_listpack_entries: 128,
            zset_max_listpack_value: 64,
            stream_node_max_bytes: 4096,
            stream_node_max_entries: 100,
            hll_sparse_max_bytes: 3000,
        }
    }
}

/// The bytes a string value keeps in the entry itself, without an allocation: 38 keeps a
/// [`Value`] at 40 bytes. Values up to that size — most counters, flags, ids and short JSON —
/// cost no heap block (malloc's header and rounding included, 48 bytes for 32 bytes of data),
/// and a read of one touches no other cache line than its entry's.
pub const INLINE_STR: usize = 38;

/// A string value: short ones inline (see [`INLINE_STR`]), longer ones in a shared buffer (a
/// `GET` of a large value then copies nothing).
#[derive(Clone)]
pub enum Str {
    Inline { len: u8, bytes: [u8; INLINE_STR] },
    Shared(Bytes),
}

/// `b` as an inline array of `N` bytes and its length, if it fits (the short form of [`Str`]
/// and of the keyspace's keys).
pub(crate) fn inline_copy<const N: usize>(b: &[u8]) -> Option<(u8, [u8; N])> {
    let len = u8::try_from(b.len())
        .ok()
        .filter(|&l| usize::from(l) <= N)?;
    let mut bytes = [0u8; N];
    bytes[..b.len()].copy_from_slice(b);
    Some((len, bytes))
}

impl Str {
    /// A copy of `b`.
    pub fn copy_from(b: &[u8]) -> Str {
        match inline_copy(b) {
            Some((len, bytes)) => Str::Inline { len, bytes },
            None => Str::Shared(Bytes::copy_from_slice(b)),
        }
    }

    /// `b` itself when long (shared, not copied), a copy when short.
    pub fn from_bytes(b: &Bytes) -> Str {
        if b.len() <= INLINE_STR {
            Str::copy_from(b)
        } else {
            Str::Shared(b.clone())
        }
    }

    /// [`Str::from_bytes`] taking `b` as it is: a long value keeps its buffer (no clone, which
    /// for a `Bytes` made from a `Vec` allocates a shared header).
    pub fn from_owned(b: Bytes) -> Str {
        if b.len() <= INLINE_STR {
            Str::copy_from(&b)
        } else {
            Str::Shared(b)
        }
    }

    /// The value as a `Bytes` for a reply or a log record: shared when long, copied when short.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Str::Inline { .. } => Bytes::copy_from_slice(self),
            Str::Shared(b) => b.clone(),
        }
    }

    /// Bytes `range` of the value, as a `Bytes` (see [`Str::to_bytes`]).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Bytes {
        match self {
            Str::Inline { .. } => Bytes::copy_from_slice(&self[range]),
            Str::Shared(b) => b.slice(range),
        }
    }
}

impl std::ops::Deref for Str {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Str::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Str::Shared(b) => b,
        }
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Bytes::copy_from_slice(self), f)
    }
}

/// Bytes counted per field or member beyond its own bytes.
const ITEM_OVERHEAD: usize = 16;

/// Hashes and sets are boxed so that a `Value` stays as small as a string plus a tag: every
/// key pays for the largest variant.
#[derive(Clone, PartialEq)]
pub enum Value {
    Str(Str),
    /// Not boxed: a small hash is its packed buffer and nothing else (see [`Hash`]).
    Hash(Hash),
    /// Not boxed either (see [`Set`]).
    Set(Set),
    /// Boxed: a list's deque and byte count are 40 bytes, and lists are rarely tiny.
    List(Box<List>),
    /// Not boxed: a small sorted set is its packed buffer and a count (see `value/zset.rs`).
    ZSet(ZSet),
    /// Boxed: entries in packed nodes, and consumer groups (`value/stream.rs`).
    Stream(Box<stream::Stream>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::List(_) => "list",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    /// The bytes this value holds, for the memory account (O(1)).
    pub fn mem_size(&self) -> usize {
        match self {
            Value::Str(b) => b.len(),
            Value::Hash(h) => h.mem_size(),
            Value::Set(s) => s.mem_size(),
            Value::List(l) => l.mem_size(),
            Value::ZSet(z) => z.mem_size(),
            Value::Stream(s) => s.mem_size(),
        }
    }

    /// `OBJECT ENCODING`'s answer, in Redis's names.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(b) => {
                if b.len() <= 20 && crate::args::parse_i64(b).is_some() {
                    "int"
                } else if b.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            Value::Hash(h) => match h.items {
                HashItems::Compact(_) if h.ttls.is_some() => "listpackex",
                HashItems::Compact(_) => "listpack",
                HashItems::Table(_) => "hashtable",
            },
            Value::Set(s) => match s.items {
                SetItems::Ints(_) => "intset",
                SetItems::Compact(_) => "listpack",
                SetItems::Table(_) => "hashtable",
            },
            Value::List(l) => l.encoding(),
            Value::ZSet(z) => z.encoding(),
            Value::Stream(_) => "stream",
        }
    }

    /// DEBUG DIGEST-VALUE: a SHA-1 of the value's logical content ([`Value::canonical`]), the
    /// same whatever its encoding.
    pub fn digest(&self) -> [u8; 20] {
        use sha1::Digest;
        sha1::Sha1::digest(self.canonical().as_bytes()).into()
    }

    /// A canonical text of the value (fields and members sorted), for comparing keyspaces in
    /// tests and checkers: two values are the same iff their canonical texts are.
    pub fn canonical(&self) -> String {
        match self {
            Value::Str(b) => format!("string:{b:?}"),
            Value::Hash(h) => {
                let mut v: Vec<_> = h
                    .iter()
                    .map(|(f, v)| {
                        (
                            Bytes::copy_from_slice(f),
                            Bytes::copy_from_slice(v),
                            h.field_deadline(f),
                        )
                    })
                    .collect();
                v.sort();
                format!("hash:{v:?}")
            }
            Value::Set(s) => {
                let mut v: Vec<Bytes> = s.members();
                v.sort();
                format!("set:{v:?}")
            }
            Value::List(l) => {
                let v: Vec<Bytes> = l.iter().map(|v| Bytes::copy_from_slice(&v)).collect();
                format!("list:{v:?}")
            }
            Value::ZSet(z) => {
                let v: Vec<(Bytes, String)> = z
                    .iter_from(0, false)
                    .map(|(m, s)| (Bytes::copy_from_slice(m), format_score(s)))
                    .collect();
                format!("zset:{v:?}")
            }
            Value::Stream(st) => st.canonical(),
        }
    }

    /// The commands that rebuild this value under `key` in an empty place, `PEXPIREAT` last:
    /// a `SET` (then `APPEND`s when the string is longer than `chunk.bytes`), or `HSET`/`SADD`
    /// chunks (and a hash's `HPEXPIREAT`s) of at most `chunk.items` fields or members and about
    /// `chunk.bytes` bytes each. No command is larger than `chunk.bytes` plus one field and
    /// value, so a value of any size can be logged over several records.
    pub fn rewrite_commands(&self, key: &Bytes, expire_at: u64, chunk: Chunk) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        match self {
            Value::Str(v) => {
                let step = chunk.bytes.max(1);
                let first = v.slice(0..v.len().min(step));
                let mut cmd = vec![Bytes::from_static(b"SET"), key.clone(), first];
                if expire_at != 0 {
                    cmd.push(Bytes::from_static(b"PXAT"));
                    cmd.push(Bytes::from(expire_at.to_string()));
                }
                out.push(cmd);
                for from in (step..v.len()).step_by(step) {
                    let part = v.slice(from..v.len().min(from + step));
                    out.push(vec![Bytes::from_static(b"APPEND"), key.clone(), part]);
                }
                return out;
            }
            Value::Hash(h) => {
                let pairs: Vec<(Bytes, Bytes)> = h
                    .iter()
                    .map(|(f, v)| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
                    .collect();
                for part in chunk.split(&pairs, |(f, v)| f.len() + v.len()) {
                    let mut cmd = vec![Bytes::from_static(b"HSET"), key.clone()];
                    for (f, v) in part {
                        cmd.push(f.clone());
                        cmd.push(v.clone());
                    }
                    out.push(cmd);
                }
                for (at, fields) in h.deadlines() {
                    for part in chunk.split(&fields, |f| f.len()) {
                        let mut cmd = vec![
                            Bytes::from_static(b"HPEXPIREAT"),
                            key.clone(),
                            Bytes::from(at.to_string()),
                            Bytes::from_static(b"FIELDS"),
                            Bytes::from(part.len().to_string()),
                        ];
                        cmd.extend(part.iter().cloned());
                        out.push(cmd);
                    }
                }
            }
            Value::Set(s) => {
                for part in chunk.split(&s.members(), |m| m.len()) {
                    let mut cmd = vec![Bytes::from_static(b"SADD"), key.clone()];
                    cmd.extend(part.iter().cloned());
                    out.push(cmd);
                }
            }
            Value::List(l) => {
                let items: Vec<Bytes> = l.iter().map(|v| Bytes::copy_from_slice(&v)).collect();
                for part in chunk.split(&items, |m| m.len()) {
                    let mut cmd = vec![Bytes::from_static(b"RPUSH"), key.clone()];
                    cmd.extend(part.iter().cloned());
                    out.push(cmd);
                }
            }
            Value::ZSet(z) => {
                // Scores in 17 significant digits: parsed back, the same double.
                let items: Vec<(Bytes, Bytes)> = z
                    .iter_from(0, false)
                    .map(|(m, s)| (Bytes::from(format_score(s)), Bytes::copy_from_slice(m)))
                    .collect();
                for part in chunk.split(&items, |(s, m)| s.len() + m.len()) {
                    let mut cmd = vec![Bytes::from_static(b"ZADD"), key.clone()];
                    for (s, m) in part {
                        cmd.push(s.clone());
                        cmd.push(m.clone());
                    }
                    out.push(cmd);
                }
            }
            Value::Stream(st) => out.extend(st.rewrite_commands(key, chunk)),
        }
        if expire_at != 0 {
            out.push(vec![
                Bytes::from_static(b"PEXPIREAT"),
                key.clone(),
                Bytes::from(expire_at.to_string()),
            ]);
        }
        out
    }

    /// An upper bound, in O(1) (as [`Value::mem_size`]), on the encoded bytes of this value's rewrite form under a key of
    /// `key_len` bytes, each command after a `MOON.DB` (what a base reserves LSNs by: see
    /// `moon_shard::rewrite`). Every field, member and chunk of a string is at most its own
    /// bytes plus 50 bytes of framing in a command (`$<len>\r\n...\r\n`), a field with a
    /// deadline appears twice, and each command adds its name, the key, a deadline and a
    /// `MOON.DB`: less than `2 * key_len + 1000` bytes.
    pub fn rewrite_bound(&self, key_len: usize, chunk: Chunk) -> usize {
        let (bytes, items) = match self {
            Value::Str(v) => (v.len(), v.len() / chunk.bytes.max(1) + 1),
            Value::Hash(h) => (h.mem_size(), h.len()),
            Value::Set(s) => (s.mem_size(), s.len()),
            // A list's entries uncompressed: what its rewrite form holds.
            Value::List(l) => (l.raw_size(), l.len()),
            // A score's text is at most 24 bytes, less than a member's overhead counted.
            Value::ZSet(z) => (z.mem_size(), z.len()),
            // Entries, and per pending entry an XCLAIM of a few ids' length.
            Value::Stream(st) => (
                st.mem_size().saturating_mul(2),
                st.len() as usize
                    + st.groups
                        .values()
                        .map(|g| g.pending.len() + g.consumers.len() + 1)
                        .sum::<usize>(),
            ),
        };
        // Commands: at most one per item twice over (HSET and HPEXPIREAT chunks), plus the
        // PEXPIREAT.
        let per_command = 2 * key_len + 1000;
        bytes
            .saturating_mul(2)
            .saturating_add((items + 1).saturating_mul(50 + 2 * per_command))
    }
}

/// How a rewrite form is cut into commands ([`Value::rewrite_commands`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Fields or members per command.
    pub items: usize,
    /// Bytes of fields, members or string per command (a command holds at least one item).
    pub bytes: usize,
}

impl Chunk {
    /// The form a base and `migrate-aof` write: 512 items or 1 MiB a command, as Redis's AOF
    /// rewrite cuts at 64 items (`AOF_REWRITE_ITEMS_PER_CMD`): small enough that any value
    /// spreads over records of `moon_aof::record_target` bytes.
    pub const REWRITE: Chunk = Chunk {
        items: 512,
        bytes: 1 << 20,
    };

    /// Consecutive runs of `items`, each within the bounds (at least one item each).
    pub fn split<'a, T>(
        self,
        items: &'a [T],
        size: impl Fn(&T) -> usize + 'a,
    ) -> impl Iterator<Item = &'a [T]> + 'a {
        let (max_items, max_bytes) = (self.items.max(1), self.bytes);
        let mut rest = items;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut bytes = 0usize;
            let mut n = 0;
            while n < rest.len() && n < max_items {
                bytes = bytes.saturating_add(size(&rest[n]));
                if n > 0 && bytes > max_bytes {
                    break;
                }
                n += 1;
            }
            let (part, tail) = rest.split_at(n);
            rest = tail;
            Some(part)
        })
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// A type whose values are collections (a hash, a set): what the store's one typed-write
/// helper needs to find, create and drop them.
pub trait Collection: Default {
    /// The value as this type, or `None` for another type.
    fn of(value: &mut Value) -> Option<&mut Self>;
    /// Whether the value is of this type (a look that changes nothing).
    fn is(value: &Value) -> bool;
    fn wrap(self) -> Value;
    fn is_empty(&self) -> bool;
}

impl Collection for Hash {
    fn is(value: &Value) -> bool {
        matches!(value, Value::Hash(_))
    }
    fn of(value: &mut Value) -> Option<&mut Self> {
        match value {
            Value::Hash(h) => Some(h),
            _ => None,
        }
    }
    fn wrap(self) -> Value {
        Value::Hash(self)
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Collection for List {
    fn is(value: &Value) -> bool {
        matches!(value, Value::List(_))
    }
    fn of(value: &mut Value) -> Option<&mut Self> {
        match value {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    fn wrap(self) -> Value {
        Value::List(Box::new(self))
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Collection for ZSet {
    fn is(value: &Value) -> bool {
        matches!(value, Value::ZSet(_))
    }
    fn of(value: &mut Value) -> Option<&mut Self> {
        match value {
            Value::ZSet(z) => Some(z),
            _ => None,
        }
    }
    fn wrap(self) -> Value {
        Value::ZSet(self)
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Collection for Set {
    fn is(value: &Value) -> bool {
        matches!(value, Value::Set(_))
    }
    fn of(value: &mut Value) -> Option<&mut Self> {
        match value {
            Value::Set(s) => Some(s),
            _ => None,
        }
    }
    fn wrap(self) -> Value {
        Value::Set(self)
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Packed pairs: a small hash in one buffer

/// Field-value pairs back to back in one buffer, each pair after a header — Redis's listpack
/// idea: a small hash is one allocation, of exactly its size, searched linearly. The header is
/// one byte when the field is under 15 bytes and the value under 16 (the field's length in
/// the high four bits, the value's in the low four), which covers most small hashes; else it
/// is [`LONG_PAIR`] and each string follows its own length (one byte below 255; else 255 and
/// 4 bytes, little endian). A pair of a 2-byte field and an 8-byte value takes 11 bytes, so a
/// hash of five such pairs fits in 56 (issue 31, target 5).
#[derive(Clone, Default)]
struct PackedPairs {
    /// Exactly its size (a boxed slice: no capacity to store).
    buf: Box<[u8]>,
    len: u32,
}

/// One pair's place in the buffer: where its header starts, where the pair ends.
struct PairAt {
    start: usize,
    end: usize,
}

/// The string written by [`push_str`] at `at`, and where what follows it starts.
fn read_str(buf: &[u8], at: usize) -> (&[u8], usize) {
    let (len, header) = match buf[at] {
        LONG_LEN => {
            let mut n = [0u8; 4];
            n.copy_from_slice(&buf[at + 1..at + 5]);
            (u32::from_le_bytes(n) as usize, 5)
        }
        short => (usize::from(short), 1),
    };
    let start = at + header;
    (&buf[start..start + len], start + len)
}

/// The mark of a length of 255 or more (4 bytes follow).
const LONG_LEN: u8 = 255;

/// The header of a pair whose lengths do not fit in one byte (both follow in full). Any byte
/// whose high four bits are all set reads as this; a short header's field length is 14 at most.
const LONG_PAIR: u8 = 0xF0;

fn push_str(buf: &mut Vec<u8>, s: &[u8]) {
    match u8::try_from(s.len()) {
        Ok(n) if n != LONG_LEN => buf.push(n),
        _ => {
            buf.push(LONG_LEN);
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
    }
    buf.extend_from_slice(s);
}

/// The bytes `s` takes in a long pair.
fn packed_size(s: &[u8]) -> usize {
    if s.len() < usize::from(LONG_LEN) {
        1 + s.len()
    } else {
        5 + s.len()
    }
}

/// Whether a pair's header is one byte.
fn is_short_pair(field: &[u8], value: &[u8]) -> bool {
    field.len() < 15 && value.len() < 16
}

/// The bytes a pair takes in the buffer.
fn pair_size(field: &[u8], value: &[u8]) -> usize {
    if is_short_pair(field, value) {
        1 + field.len() + value.len()
    } else {
        1 + packed_size(field) + packed_size(value)
    }
}

fn push_pair(buf: &mut Vec<u8>, field: &[u8], value: &[u8]) {
    if is_short_pair(field, value) {
        buf.push(((field.len() as u8) << 4) | value.len() as u8);
        buf.extend_from_slice(field);
        buf.extend_from_slice(value);
    } else {
        buf.push(LONG_PAIR);
        push_str(buf, field);
        push_str(buf, value);
    }
}

/// The pair written by [`push_pair`] at `at`: its field, its value, and where it ends.
fn read_pair(buf: &[u8], at: usize) -> (&[u8], &[u8], usize) {
    let header = buf[at];
    if header >> 4 == LONG_PAIR >> 4 {
        let (field, value_at) = read_str(buf, at + 1);
        let (value, end) = read_str(buf, value_at);
        (field, value, end)
    } else {
        let field_at = at + 1;
        let value_at = field_at + usize::from(header >> 4);
        let end = value_at + usize::from(header & 0x0F);
        (&buf[field_at..value_at], &buf[value_at..end], end)
    }
}

impl PackedPairs {
    /// Every pair: (field, value, where it is).
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8], PairAt)> + '_ {
        let buf = &self.buf;
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= buf.len() {
                return None;
            }
            let start = pos;
            let (field, value, end) = read_pair(buf, pos);
            pos = end;
            Some((field, value, PairAt { start, end }))
        })
    }

    fn find(&self, field: &[u8]) -> Option<(&[u8], PairAt)> {
        self.pairs()
            .find(|(f, _, _)| *f == field)
            .map(|(_, v, at)| (v, at))
    }

    /// Sets `field`; the old value's length if it was there. A changed value rewrites its pair
    /// in place (its header may change form), so the pairs keep their order.
    fn set(&mut self, field: &[u8], value: &[u8]) -> Option<usize> {
        let found = self.find(field).map(|(v, at)| (v.len(), at));
        match found {
            Some((old, at)) => {
                let mut pair = Vec::with_capacity(pair_size(field, value));
                push_pair(&mut pair, field, value);
                let mut buf = std::mem::take(&mut self.buf).into_vec();
                buf.splice(at.start..at.end, pair);
                self.buf = buf.into_boxed_slice();
                Some(old)
            }
            None => {
                // Exactly the room needed: a small hash is never half empty (Redis's listpack
                // grows the same way, one reallocation per insert).
                let mut buf = std::mem::take(&mut self.buf).into_vec();
                buf.reserve_exact(pair_size(field, value));
                push_pair(&mut buf, field, value);
                self.buf = buf.into_boxed_slice();
                self.len += 1;
                None
            }
        }
    }

    /// Removes `field`; its value's length if it was there.
    fn remove(&mut self, field: &[u8]) -> Option<usize> {
        let (old, at) = self.find(field).map(|(v, at)| (v.len(), at))?;
        let mut buf = std::mem::take(&mut self.buf).into_vec();
        buf.drain(at.start..at.end);
        self.buf = buf.into_boxed_slice();
        self.len -= 1;
        Some(old)
    }
}

// ---------------------------------------------------------------------------------------------
// Hashes

#[derive(Clone)]
enum HashItems {
    /// Insertion order, in one buffer, searched linearly.
    Compact(PackedPairs),
    /// Boxed: a small hash does not pay for a table's size.
    Table(Box<HashTable>),
}

/// A hash past its packed form: a table, and the bytes it holds (counted as it changes).
#[derive(Clone)]
struct HashTable {
    map: IndexMap<Bytes, Bytes, FastHash>,
    bytes: usize,
}

/// Per-field deadlines of a hash (Redis 7.4's field TTLs): by field, and ordered, so the next
/// one to pass is known at once.
#[derive(Clone, Default)]
struct FieldTtls {
    by_field: std::collections::HashMap<Bytes, u64, FastHash>,
    order: std::collections::BTreeSet<(u64, Bytes)>,
}

/// Bytes counted per field deadline.
const TTL_OVERHEAD: usize = 24;

/// A hash: field → value, and optional per-field deadlines (absolute Unix ms). 32 bytes, held
/// in the [`Value`] itself: a small hash costs the keyspace entry and one exactly sized
/// buffer, nothing more (issue 31: 1M hashes of 5 fields, 51 -> 38 bytes per field).
#[derive(Clone)]
pub struct Hash {
    items: HashItems,
    ttls: Option<Box<FieldTtls>>,
}

impl PartialEq for Hash {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.iter().all(|(f, v)| {
                other.get(f) == Some(v) && other.field_deadline(f) == self.field_deadline(f)
            })
    }
}

impl Default for Hash {
    fn default() -> Self {
        Hash {
            items: HashItems::Compact(PackedPairs::default()),
            ttls: None,
        }
    }
}

fn item_size(a: &[u8], b: &[u8]) -> usize {
    a.len() + b.len() + ITEM_OVERHEAD
}

impl Hash {
    pub fn len(&self) -> usize {
        match &self.items {
            HashItems::Compact(p) => p.len as usize,
            HashItems::Table(t) => t.map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes it holds, for the memory account (O(1)): a packed hash's buffer (its
    /// strings and their lengths) plus the per-item overhead a table's item is counted with.
    pub fn mem_size(&self) -> usize {
        let items = match &self.items {
            HashItems::Compact(p) => p.buf.len() + p.len as usize * ITEM_OVERHEAD,
            HashItems::Table(t) => t.bytes,
        };
        items
            + self
                .ttls
                .as_ref()
                .map_or(0, |t| t.by_field.len() * TTL_OVERHEAD)
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match &self.items {
            HashItems::Compact(p) => p.find(field).map(|(v, _)| v),
            HashItems::Table(t) => t.map.get(field).map(|v| &v[..]),
        }
    }

    /// Sets `field` and clears its deadline (as HSET does); true if it is new.
    pub fn set(&mut self, field: &[u8], value: &[u8], enc: &Encodings) -> bool {
        self.persist(field);
        self.set_keep_ttl(field, value, enc)
    }

    /// Sets `field`, keeping its deadline (as HINCRBY does); true if it is new.
    pub fn set_keep_ttl(&mut self, field: &[u8], value: &[u8], enc: &Encodings) -> bool {
        let too_big =
            field.len() > enc.hash_max_listpack_value || value.len() > enc.hash_max_listpack_value;
        if let HashItems::Compact(p) = &self.items {
            let full = p.len as usize >= enc.hash_max_listpack_entries || p.len == u32::MAX;
            if too_big || full && p.find(field).is_none() {
                let map: IndexMap<Bytes, Bytes, FastHash> = p
                    .pairs()
                    .map(|(f, v, _)| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
                    .collect();
                let bytes = map.iter().map(|(f, v)| item_size(f, v)).sum();
                self.items = HashItems::Table(Box::new(HashTable { map, bytes }));
            }
        }
        match &mut self.items {
            HashItems::Compact(p) => p.set(field, value).is_none(),
            // One probe of the table (its index misses the cache in a big hash), not a
            // lookup and then an insert's second probe.
            HashItems::Table(t) => match t.map.raw_entry_mut_v1().from_key(field) {
                RawEntryMut::Occupied(mut old) => {
                    t.bytes = t.bytes - old.get().len() + value.len();
                    *old.get_mut() = Bytes::copy_from_slice(value);
                    false
                }
                RawEntryMut::Vacant(slot) => {
                    slot.insert(Bytes::copy_from_slice(field), Bytes::copy_from_slice(value));
                    t.bytes += item_size(field, value);
                    true
                }
            },
        }
    }

    /// Removes `field` (and its deadline); true if it was there.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        self.persist(field);
        match &mut self.items {
            HashItems::Compact(p) => p.remove(field).is_some(),
            HashItems::Table(t) => match t.map.swap_remove(field) {
                Some(v) => {
                    t.bytes -= field.len() + v.len() + ITEM_OVERHEAD;
                    true
                }
                None => false,
            },
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match &self.items {
            HashItems::Compact(p) => Box::new(p.pairs().map(|(f, v, _)| (f, v))),
            HashItems::Table(t) => Box::new(t.map.iter().map(|(f, v)| (&f[..], &v[..]))),
        }
    }

    /// The entry at position `i` (0..len), for random picks and SCAN.
    pub fn at(&self, i: usize) -> Option<(&[u8], &[u8])> {
        match &self.items {
            HashItems::Compact(p) => p.pairs().nth(i).map(|(f, v, _)| (f, v)),
            HashItems::Table(t) => t.map.get_index(i).map(|(f, v)| (&f[..], &v[..])),
        }
    }

    pub fn is_compact(&self) -> bool {
        matches!(self.items, HashItems::Compact(_))
    }

    /// `field`'s deadline, if it has one.
    pub fn field_deadline(&self, field: &[u8]) -> Option<u64> {
        self.ttls.as_ref()?.by_field.get(field).copied()
    }

    /// Gives an existing `field` a deadline; false if there is no such field.
    pub fn set_field_deadline(&mut self, field: &[u8], at: u64) -> bool {
        if self.get(field).is_none() {
            return false;
        }
        let stored = Bytes::copy_from_slice(field);
        self.persist(field);
        let ttls = self.ttls.get_or_insert_with(Default::default);
        ttls.by_field.insert(stored.clone(), at);
        ttls.order.insert((at, stored));
        true
    }

    /// Removes `field`'s deadline; true if it had one.
    pub fn persist(&mut self, field: &[u8]) -> bool {
        let Some(ttls) = self.ttls.as_mut() else {
            return false;
        };
        let Some((stored, at)) = ttls.by_field.remove_entry(field) else {
            return false;
        };
        ttls.order.remove(&(at, stored));
        if ttls.by_field.is_empty() {
            self.ttls = None;
        }
        true
    }

    /// The nearest field deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.ttls.as_ref()?.order.first().map(|(at, _)| *at)
    }

    /// Removes the fields whose deadline is at or before `now` (up to `budget`) and returns
    /// them, in deadline order.
    pub fn take_expired(&mut self, now: u64, budget: usize) -> Vec<Bytes> {
        let mut due = Vec::new();
        while due.len() < budget {
            match self.ttls.as_ref().and_then(|t| t.order.first()) {
                Some((at, f)) if *at <= now => due.push(f.clone()),
                _ => break,
            }
            let f = due.last().cloned().unwrap_or_default();
            self.remove(&f);
        }
        due
    }

    /// Every field with a deadline, grouped by deadline (for the rewrite form).
    pub fn deadlines(&self) -> Vec<(u64, Vec<Bytes>)> {
        let mut out: Vec<(u64, Vec<Bytes>)> = Vec::new();
        if let Some(t) = &self.ttls {
            for (at, f) in &t.order {
                match out.last_mut() {
                    Some((last, fields)) if last == at => fields.push(f.clone()),
                    _ => out.push((*at, vec![f.clone()])),
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Sets

#[derive(Clone)]
enum SetItems {
    /// Every member an integer in canonical form: sorted, deduplicated; exactly sized (one
    /// reallocation per insert, as Redis's intset).
    Ints(Box<[i64]>),
    /// Insertion order, searched linearly; members of up to `INLINE_STR` bytes inline (no heap
    /// block each); exactly sized.
    Compact(Box<[Str]>),
    /// Boxed: a small set does not pay for a table's size. A map to nothing rather than an
    /// `IndexSet`: its raw entry lets SADD probe once for a member it adds.
    Table(Box<IndexMap<Bytes, (), FastHash>>),
}

/// A set of byte strings. 32 bytes, held in the [`Value`] itself (no box of its own), with
/// the bytes it holds counted as it changes (a value is 40 bytes anyway: the count is free).
#[derive(Clone)]
pub struct Set {
    items: SetItems,
    bytes: usize,
}

/// `v` with `f` applied to it as a vector, exactly sized again after.
fn edit_boxed<T, R>(v: &mut Box<[T]>, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    let mut vec = std::mem::take(v).into_vec();
    let r = f(&mut vec);
    *v = vec.into_boxed_slice();
    r
}

impl PartialEq for Set {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.members().iter().all(|m| other.contains(m))
    }
}

impl Default for Set {
    fn default() -> Self {
        Set {
            items: SetItems::Ints(Box::default()),
            bytes: 0,
        }
    }
}

/// Whether two of `members` are equal (a compact collection's members, at most its
/// `*-max-listpack-entries`): while few, each one's hash against the ones before it, the bytes
/// compared only where hashes match (a sorted set of ten loads with ten hashes instead of 45
/// comparisons of bytes); sorted when more.
fn has_duplicate<'m>(members: impl ExactSizeIterator<Item = &'m [u8]>) -> bool {
    use std::hash::BuildHasher;
    const FEW: usize = 16;
    if members.len() <= FEW {
        // Any seed: a collision costs one comparison of bytes, never a wrong answer.
        let hasher = foldhash::fast::FixedState::with_seed(0);
        let mut seen: [(u64, &[u8]); FEW] = [(0, &[]); FEW];
        for (i, m) in members.take(FEW).enumerate() {
            let h = hasher.hash_one(m);
            if seen[..i].iter().any(|&(g, n)| g == h && n == m) {
                return true;
            }
            seen[i] = (h, m);
        }
        false
    } else {
        let mut sorted: Vec<&[u8]> = members.collect();
        sorted.sort_unstable();
        sorted.windows(2).any(|w| w[0] == w[1])
    }
}

/// A member as an intset holds it: an integer whose text is exactly its canonical form.
fn as_int(m: &[u8]) -> Option<i64> {
    crate::args::parse_i64(m)
}

impl Set {
    pub fn len(&self) -> usize {
        match &self.items {
            SetItems::Ints(v) => v.len(),
            SetItems::Compact(v) => v.len(),
            SetItems::Table(t) => t.len(),
        }
    }

    /// The bytes it holds, for the memory account (O(1)): each member's bytes and the
    /// per-item overhead.
    pub fn mem_size(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        match &self.items {
            SetItems::Ints(v) => as_int(m).is_some_and(|i| v.binary_search(&i).is_ok()),
            SetItems::Compact(v) => v.iter().any(|x| **x == *m),
            SetItems::Table(t) => t.contains_key(m),
        }
    }

    /// A set of `members`, sized once, in the form adding them one by one would give: what a
    /// snapshot's set loads through. `None`: a member comes twice.
    pub fn from_members<'m>(
        members: impl ExactSizeIterator<Item = &'m [u8]> + Clone,
        enc: &Encodings,
    ) -> Option<Set> {
        let n = members.len();
        let bytes = members.clone().map(|m| m.len() + ITEM_OVERHEAD).sum();
        if n <= enc.set_max_intset_entries {
            let ints: Option<Vec<i64>> = members.clone().map(as_int).collect();
            if let Some(mut ints) = ints {
                ints.sort_unstable();
                if ints.windows(2).any(|w| w[0] == w[1]) {
                    return None;
                }
                return Some(Set {
                    items: SetItems::Ints(ints.into_boxed_slice()),
                    bytes,
                });
            }
        }
        let compact = n <= enc.set_max_listpack_entries
            && members
                .clone()
                .all(|m| m.len() <= enc.set_max_listpack_value);
        let items = if compact {
            if has_duplicate(members.clone()) {
                return None;
            }
            SetItems::Compact(members.map(Str::copy_from).collect())
        } else {
            let mut t = IndexMap::with_capacity_and_hasher(n, FastHash::default());
            for m in members {
                if t.insert(Bytes::copy_from_slice(m), ()).is_some() {
                    return None;
                }
            }
            SetItems::Table(Box::new(t))
        };
        Some(Set { items, bytes })
    }

    /// Adds `m`; true if it is new.
    pub fn insert(&mut self, m: &[u8], enc: &Encodings) -> bool {
        if let SetItems::Table(t) = &mut self.items {
            // One probe of the table (its index misses the cache in a big set).
            return match t.raw_entry_mut_v1().from_key(m) {
                RawEntryMut::Occupied(_) => false,
                RawEntryMut::Vacant(slot) => {
                    slot.insert(Bytes::copy_from_slice(m), ());
                    self.bytes += m.len() + ITEM_OVERHEAD;
                    true
                }
            };
        }
        if self.contains(m) {
            return false;
        }
        let len = self.len();
        match &mut self.items {
            SetItems::Ints(v) => match as_int(m) {
                Some(i) if len < enc.set_max_intset_entries => {
                    let at = v.binary_search(&i).unwrap_or_else(|at| at);
                    edit_boxed(v, |v| v.insert(at, i));
                }
                _ => {
                    let members = v.iter().map(|i| i.to_string());
                    // As Redis checks it: the new member and the intset's longest (its lowest
                    // or highest) within the listpack's value bound.
                    let longest = [v.first(), v.last()]
                        .into_iter()
                        .flatten()
                        .map(|i| i.to_string().len())
                        .max()
                        .unwrap_or(0);
                    let compact = len < enc.set_max_listpack_entries
                        && m.len().max(longest) <= enc.set_max_listpack_value
                        && v.len() < enc.set_max_listpack_entries;
                    self.items = if compact {
                        SetItems::Compact(members.map(|i| Str::copy_from(i.as_bytes())).collect())
                    } else {
                        SetItems::Table(Box::new(members.map(|m| (Bytes::from(m), ())).collect()))
                    };
                    return self.insert_new(m, enc);
                }
            },
            _ => return self.insert_new(m, enc),
        }
        self.bytes += m.len() + ITEM_OVERHEAD;
        true
    }

    /// Adds a member known to be absent to a compact or table set.
    fn insert_new(&mut self, m: &[u8], enc: &Encodings) -> bool {
        if let SetItems::Compact(v) = &mut self.items {
            if v.len() >= enc.set_max_listpack_entries || m.len() > enc.set_max_listpack_value {
                let table = v.iter().map(|x| (x.to_bytes(), ())).collect();
                self.items = SetItems::Table(Box::new(table));
            }
        }
        match &mut self.items {
            SetItems::Compact(v) => {
                // Exactly the room needed: a small set is never half empty.
                edit_boxed(v, |v| {
                    v.reserve_exact(1);
                    v.push(Str::copy_from(m));
                });
            }
            SetItems::Table(t) => {
                t.insert(Bytes::copy_from_slice(m), ());
            }
            SetItems::Ints(_) => return false,
        }
        self.bytes += m.len() + ITEM_OVERHEAD;
        true
    }

    /// Removes `m`; true if it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        let removed = match &mut self.items {
            SetItems::Ints(v) => match as_int(m).map(|i| v.binary_search(&i)) {
                Some(Ok(at)) => {
                    edit_boxed(v, |v| v.remove(at));
                    true
                }
                _ => false,
            },
            SetItems::Compact(v) => match v.iter().position(|x| **x == *m) {
                Some(at) => {
                    edit_boxed(v, |v| v.remove(at));
                    true
                }
                None => false,
            },
            SetItems::Table(t) => t.swap_remove(m).is_some(),
        };
        if removed {
            self.bytes -= m.len() + ITEM_OVERHEAD;
        }
        removed
    }

    /// The member at position `i` (0..len), for random picks and SCAN.
    pub fn at(&self, i: usize) -> Option<Bytes> {
        match &self.items {
            SetItems::Ints(v) => v.get(i).map(|n| Bytes::from(n.to_string())),
            SetItems::Compact(v) => v.get(i).map(Str::to_bytes),
            SetItems::Table(t) => t.get_index(i).map(|(m, ())| m.clone()),
        }
    }

    pub fn members(&self) -> Vec<Bytes> {
        match &self.items {
            SetItems::Ints(v) => v.iter().map(|n| Bytes::from(n.to_string())).collect(),
            SetItems::Compact(v) => v.iter().map(Str::to_bytes).collect(),
            SetItems::Table(t) => t.keys().cloned().collect(),
        }
    }

    pub fn is_compact(&self) -> bool {
        !matches!(self.items, SetItems::Table(_))
    }
}

#[cfg(test)]
mod bulk_tests {
    //! A collection built at once from a snapshot's members (`Set::from_members`,
    //! `ZSet::from_pairs`) is the one adding them one by one builds: same members, scores,
    //! encoding, and a duplicate refused.
    use super::{Encodings, Set, Value, ZSet};
    use proptest::prelude::*;

    fn member() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (-20i64..20).prop_map(|i| i.to_string().into_bytes()),
            Just(b"007".to_vec()),
            proptest::collection::vec(b'a'..b'e', 0..4),
            proptest::collection::vec(b'x'..b'z', 5..9),
        ]
    }

    fn encodings() -> impl Strategy<Value = Encodings> {
        (1usize..12, 1usize..12, 2usize..7).prop_map(|(ints, entries, value)| Encodings {
            set_max_intset_entries: ints,
            set_max_listpack_entries: entries,
            set_max_listpack_value: value,
            zset_max_listpack_entries: entries,
            zset_max_listpack_value: value,
            ..Encodings::default()
        })
    }

    /// An intset that outgrows itself becomes a listpack only if its longest member fits
    /// the listpack's value bound too, as in Redis (review finding: only the new member was
    /// checked, so a set loaded from a snapshot changed encoding).
    #[test]
    fn an_intset_with_a_long_member_outgrows_into_a_table() {
        let enc = Encodings {
            set_max_intset_entries: 1,
            set_max_listpack_entries: 5,
            set_max_listpack_value: 2,
            ..Encodings::default()
        };
        let mut s = Set::default();
        assert!(s.insert(b"-15", &enc) && s.insert(b"3", &enc));
        assert_eq!(Value::Set(s).encoding(), "hashtable");
        let built = Set::from_members([&b"-15"[..], b"3"].into_iter(), &enc);
        assert_eq!(built.map(|s| Value::Set(s).encoding()), Some("hashtable"));
        let mut short = Set::default();
        assert!(short.insert(b"-1", &enc) && short.insert(b"3", &enc));
        assert_eq!(Value::Set(short).encoding(), "listpack");
    }

    proptest! {
        #[test]
        fn a_set_built_at_once_is_the_one_built_member_by_member(
            members in proptest::collection::vec(member(), 1..20),
            enc in encodings(),
        ) {
            let mut one_by_one = Set::default();
            let mut twice = false;
            for m in &members {
                twice |= !one_by_one.insert(m, &enc);
            }
            let at_once = Set::from_members(members.iter().map(|m| &m[..]), &enc);
            prop_assert_eq!(at_once.is_none(), twice);
            if let Some(s) = at_once {
                // Both ways: each side is searched by its own form (an intset by binary search).
                prop_assert!(s == one_by_one);
                prop_assert!(one_by_one == s);
                prop_assert_eq!(s.mem_size(), one_by_one.mem_size());
                prop_assert_eq!(Value::Set(s).encoding(), Value::Set(one_by_one).encoding());
            }
        }

        #[test]
        fn a_sorted_set_built_at_once_is_the_one_built_member_by_member(
            pairs in proptest::collection::vec((member(), -3i32..3), 1..20),
            enc in encodings(),
        ) {
            let mut one_by_one = ZSet::default();
            let mut twice = false;
            for (m, s) in &pairs {
                twice |= one_by_one.insert(m, f64::from(*s), &enc).is_some();
            }
            let at_once = ZSet::from_pairs(pairs.iter().map(|(m, s)| (&m[..], f64::from(*s))), &enc);
            prop_assert_eq!(at_once.is_none(), twice);
            if let Some(z) = at_once {
                // Both ways: each side is searched by its own form (an intset by binary search).
                prop_assert!(z == one_by_one);
                prop_assert!(one_by_one == z);
                prop_assert_eq!(z.mem_size(), one_by_one.mem_size());
                prop_assert_eq!(z.encoding(), one_by_one.encoding());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A compact hash's lengths take one byte below 255 and five from 255 on (a raised
    /// `hash-max-listpack-value`): fields of every size are found, replaced (growing and
    /// shrinking) and removed in place, and the others stay intact.
    #[test]
    fn packed_pairs_hold_short_and_long_strings() {
        let enc = super::Encodings {
            hash_max_listpack_value: 1000,
            ..super::Encodings::default()
        };
        let mut h = super::Hash::default();
        let sizes = [0usize, 1, 254, 255, 256, 999];
        for (i, &n) in sizes.iter().enumerate() {
            let field = vec![b'f'; n];
            assert!(h.set(&field, &vec![i as u8; sizes[sizes.len() - 1 - i]], &enc));
        }
        assert_eq!(h.clone().wrap().encoding(), "listpack");
        for (i, &n) in sizes.iter().enumerate() {
            let want = vec![i as u8; sizes[sizes.len() - 1 - i]];
            assert_eq!(h.get(&vec![b'f'; n]), Some(&want[..]));
        }
        assert!(!h.set(&vec![b'f'; 255], &[9u8; 3], &enc));
        assert!(!h.set(&[b'f'; 1], &[8u8; 700], &enc));
        assert!(h.remove(&vec![b'f'; 254]));
        assert_eq!(h.get(&vec![b'f'; 255]), Some(&[9u8; 3][..]));
        assert_eq!(h.get(&[b'f'; 1]), Some(&[8u8; 700][..]));
        assert_eq!(h.get(&vec![b'f'; 254]), None);
        assert_eq!(h.get(&vec![b'f'; 999]), Some(&[5u8; 0][..]));
        assert_eq!(h.len(), 5);
    }

    /// A pair's header is one byte while the field is under 15 bytes and the value under 16,
    /// else the long form: pairs at both sides of each bound are found, replaced across the
    /// bound (the header changes form in place, the order stays) and removed, and the bench's
    /// hash of five `f0`-style fields with 8-byte values takes 55 bytes.
    #[test]
    fn a_pair_header_takes_one_byte_below_the_bounds_and_the_long_form_past_them() {
        let enc = super::Encodings::default();
        let mut h = super::Hash::default();
        for i in 0..5 {
            assert!(h.set(format!("f{i}").as_bytes(), b"value-01", &enc));
        }
        let super::HashItems::Compact(p) = &h.items else {
            panic!("a small hash is packed");
        };
        assert_eq!(p.buf.len(), 5 * (1 + 2 + 8));
        let mut h = super::Hash::default();
        let shapes = [
            (14usize, 15usize),
            (15, 15),
            (14, 16),
            (0, 0),
            (15, 16),
            (3, 60),
        ];
        // Distinct fields of `n` bytes (the only empty one is pair 3's).
        let field = |i: usize, n: usize| {
            let mut f = vec![b'a' + i as u8; n];
            if let Some(first) = f.first_mut() {
                *first = i as u8;
            }
            f
        };
        for (i, &(f, v)) in shapes.iter().enumerate() {
            assert!(h.set(&field(i, f), &vec![b'v'; v], &enc));
        }
        for (i, &(f, v)) in shapes.iter().enumerate() {
            assert_eq!(h.get(&field(i, f)), Some(&vec![b'v'; v][..]), "pair {i}");
        }
        // Across the bound, both ways: the short pair becomes long and the long one short.
        assert!(!h.set(&field(0, 14), &[b'w'; 16], &enc));
        assert!(!h.set(&field(2, 14), &[b'w'; 2], &enc));
        let order: Vec<Vec<u8>> = h.iter().map(|(f, _)| f.to_vec()).collect();
        let want: Vec<Vec<u8>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(f, _))| field(i, f))
            .collect();
        assert_eq!(order, want, "replacing a value keeps the pairs' order");
        assert_eq!(h.get(&field(0, 14)), Some(&[b'w'; 16][..]));
        assert_eq!(h.get(&field(2, 14)), Some(&[b'w'; 2][..]));
        assert!(h.remove(&field(1, 15)));
        assert!(h.remove(&field(3, 0)));
        assert_eq!(h.get(&field(4, 15)), Some(&[b'v'; 16][..]));
        assert_eq!(h.get(&field(5, 3)), Some(&[b'v'; 60][..]));
        assert_eq!(h.len(), 4);
    }

    /// A compact set keeps short members inline and long ones shared, finds and removes both,
    /// and keeps every member when it becomes a table.
    #[test]
    fn compact_set_members_of_every_size_survive_the_move_to_a_table() {
        let enc = super::Encodings {
            set_max_listpack_entries: 4,
            ..super::Encodings::default()
        };
        let mut set = super::Set::default();
        let members: Vec<Vec<u8>> = [1usize, 38, 39, 64]
            .iter()
            .map(|&n| vec![b'm'; n])
            .collect();
        for m in &members {
            assert!(set.insert(m, &enc));
        }
        assert!(set.is_compact());
        assert!(set.remove(&members[1]));
        assert!(!set.contains(&members[1]));
        assert_eq!(set.at(1).as_deref(), Some(&members[2][..]));
        assert!(set.insert(&members[1], &enc));
        assert!(set.insert(b"x", &enc), "a fifth member: now a table");
        assert!(!set.is_compact());
        for m in &members {
            assert!(set.contains(m));
        }
        assert_eq!(set.len(), 5);
    }

    /// Every key pays for the largest variant: a string of up to `INLINE_STR` bytes lives in
    /// the value itself, which stays at 40 bytes, and so do a hash, a set and a sorted set
    /// (a packed buffer's pointer and length, or a boxed table).
    #[test]
    fn a_value_is_40_bytes_and_short_strings_are_inline() {
        assert_eq!(std::mem::size_of::<super::Value>(), 40);
        assert_eq!(std::mem::size_of::<super::Hash>(), 32);
        assert_eq!(std::mem::size_of::<super::Set>(), 32);
        assert_eq!(std::mem::size_of::<super::ZSet>(), 32);
        let short = super::Str::copy_from(&[7u8; super::INLINE_STR]);
        assert!(matches!(short, super::Str::Inline { .. }));
        assert_eq!(&*short, &[7u8; super::INLINE_STR][..]);
        let long = super::Str::copy_from(&[7u8; super::INLINE_STR + 1]);
        assert!(matches!(long, super::Str::Shared(_)));
        assert_eq!(long.len(), super::INLINE_STR + 1);
        assert_eq!(short.slice(1..3), bytes::Bytes::from_static(&[7, 7]));
        assert_eq!(super::Str::copy_from(b""), super::Str::copy_from(b""));
    }

    use super::*;

    #[test]
    fn hashes_convert_to_a_table_past_the_thresholds_and_keep_their_byte_count() {
        let enc = Encodings {
            hash_max_listpack_entries: 2,
            ..Encodings::default()
        };
        let mut h = Hash::default();
        assert!(h.set(b"a", b"1", &enc));
        assert!(!h.set(b"a", b"22", &enc));
        assert!(h.set(b"b", b"3", &enc));
        assert_eq!(h.clone().wrap().encoding(), "listpack");
        assert!(h.set(b"c", b"4", &enc));
        assert_eq!(h.clone().wrap().encoding(), "hashtable");
        assert_eq!(h.mem_size(), 3 * (2 + ITEM_OVERHEAD) + 1);
        assert!(h.remove(b"a") && !h.remove(b"a"));
        assert_eq!(h.mem_size(), 2 * (2 + ITEM_OVERHEAD));
        let mut long = Hash::default();
        long.set(b"f", &[b'x'; 65], &enc);
        assert!(!long.is_compact(), "a value over hash-max-listpack-value");
    }

    #[test]
    fn a_packed_hash_keeps_every_field_through_replaces_and_removes() {
        let enc = Encodings::default();
        let mut h = Hash::default();
        let mut model = std::collections::BTreeMap::new();
        for i in 0..200u32 {
            let f = format!("f{}", i % 37);
            let v = "x".repeat((i as usize * 7) % 50);
            if i % 5 == 4 {
                assert_eq!(h.remove(f.as_bytes()), model.remove(&f).is_some());
            } else {
                assert_eq!(
                    h.set(f.as_bytes(), v.as_bytes(), &enc),
                    model.insert(f, v).is_none()
                );
            }
            assert_eq!(h.len(), model.len());
        }
        assert!(h.is_compact(), "37 fields of < 50 bytes stay compact");
        for (f, v) in &model {
            assert_eq!(h.get(f.as_bytes()), Some(v.as_bytes()));
        }
        let listed: std::collections::BTreeMap<String, String> = h
            .iter()
            .map(|(f, v)| {
                (
                    String::from_utf8_lossy(f).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        assert_eq!(listed, model);
        // The buffer, with one header byte per short pair and three per long one, and the
        // per-item overhead.
        let expected: usize = model
            .iter()
            .map(|(f, v)| {
                let header = if f.len() < 15 && v.len() < 16 { 1 } else { 3 };
                f.len() + v.len() + header + ITEM_OVERHEAD
            })
            .sum();
        assert_eq!(h.mem_size(), expected, "the memory account follows");
    }

    #[test]
    fn sets_go_from_intset_to_listpack_to_hashtable() {
        let enc = Encodings {
            set_max_intset_entries: 3,
            set_max_listpack_entries: 4,
            ..Encodings::default()
        };
        let mut s = Set::default();
        for m in ["3", "1", "2"] {
            assert!(s.insert(m.as_bytes(), &enc));
        }
        assert!(!s.insert(b"2", &enc));
        assert_eq!(s.clone().wrap().encoding(), "intset");
        assert_eq!(s.members(), ["1", "2", "3"]);
        assert!(!s.contains(b"01"), "not the canonical form of 1");
        assert!(s.insert(b"x", &enc));
        assert_eq!(s.clone().wrap().encoding(), "listpack");
        assert!(s.contains(b"1") && s.contains(b"x"));
        assert!(s.insert(b"y", &enc));
        assert_eq!(s.clone().wrap().encoding(), "hashtable");
        assert_eq!(s.len(), 5);
        assert!(s.remove(b"1") && s.remove(b"x"));
        assert_eq!(s.mem_size(), 3 * (1 + ITEM_OVERHEAD));
        let mut ints = Set::default();
        for i in 0..4 {
            ints.insert(i.to_string().as_bytes(), &enc);
        }
        assert_eq!(
            ints.wrap().encoding(),
            "listpack",
            "past set-max-intset-entries"
        );
    }

    #[test]
    fn rewrite_forms_rebuild_the_value() {
        let enc = Encodings::default();
        let mut h = Hash::default();
        for i in 0..5 {
            h.set(format!("f{i}").as_bytes(), b"v", &enc);
        }
        let two = Chunk {
            items: 2,
            bytes: 1 << 20,
        };
        let cmds = h.wrap().rewrite_commands(&Bytes::from("k"), 77, two);
        assert_eq!(cmds.len(), 4, "3 HSET chunks and PEXPIREAT");
        assert_eq!(cmds[3][0], "PEXPIREAT");
        assert_eq!(cmds[2].len(), 4, "HSET k f4 v");
    }

    /// A compressed list holds far fewer bytes than its rewrite form: the bound follows its
    /// entries uncompressed (review finding: it followed the compressed size, and a rewrite
    /// of such a list stopped on "took more LSNs than were reserved").
    #[test]
    fn a_compressed_list_s_rewrite_form_is_bounded() {
        let packed = Encodings {
            list_compress_depth: 1,
            ..Encodings::default()
        };
        let mut l = List::default();
        for _ in 0..100 {
            l.push_back(&[b'a'; 64 * 1024], &packed);
        }
        assert!(
            l.mem_size() < 100 * 64 * 1024 / 10,
            "compressed: {}",
            l.mem_size()
        );
        let value = l.wrap();
        let key = Bytes::from("key");
        let encoded: usize = value
            .rewrite_commands(&key, 0, Chunk::REWRITE)
            .iter()
            .map(|c| moon_aof_len(c) + moon_aof_len(&[Bytes::from("MOON.DB"), Bytes::from("5")]))
            .sum();
        assert!(encoded > 100 * 64 * 1024);
        assert!(encoded <= value.rewrite_bound(key.len(), Chunk::REWRITE));
    }

    /// Every command of a rewrite form stays near `chunk.bytes` whatever the value's size, the
    /// commands rebuild the value, and `rewrite_bound` bounds their encoded size.
    #[test]
    fn rewrite_forms_are_cut_by_bytes_and_bounded() {
        let enc = Encodings::default();
        let small = Chunk {
            items: 512,
            bytes: 1000,
        };
        let key = Bytes::from("key");
        let mut h = Hash::default();
        let mut s = Set::default();
        for i in 0..300 {
            h.set(format!("field-{i}").as_bytes(), &[b'v'; 90], &enc);
            h.set_field_deadline(format!("field-{i}").as_bytes(), 4_102_444_800_000 + i % 3);
            s.insert(
                format!("member-{i}-{}", "m".repeat(i as usize % 50)).as_bytes(),
                &enc,
            );
        }
        let string = Bytes::from(vec![b's'; 10_500]);
        let mut l = List::default();
        for i in 0..300 {
            l.push_back(
                format!("element-{i}-{}", "e".repeat(i % 90)).as_bytes(),
                &enc,
            );
        }
        for value in [
            Value::Str(Str::from_bytes(&string)),
            h.wrap(),
            s.wrap(),
            l.wrap(),
        ] {
            let cmds = value.rewrite_commands(&key, 4_102_444_800_000, small);
            let mut encoded = 0;
            for c in &cmds {
                let args: usize = c[2..].iter().map(|a| a.len()).sum();
                assert!(
                    args <= 1000 + 200,
                    "{} with {args} bytes",
                    value.type_name()
                );
                // `MOON.DB 5` before each, as in a base of database 5.
                encoded +=
                    moon_aof_len(c) + moon_aof_len(&[Bytes::from("MOON.DB"), Bytes::from("5")]);
            }
            assert!(
                cmds.len() > 5,
                "{}: {} commands",
                value.type_name(),
                cmds.len()
            );
            assert!(
                encoded <= value.rewrite_bound(key.len(), small),
                "{}: {encoded} > {}",
                value.type_name(),
                value.rewrite_bound(key.len(), small)
            );
            let mut store = crate::Store::new(usize::MAX);
            for c in &cmds {
                store.execute(c, crate::NO_EXPIRY_CHECK);
            }
            let rebuilt = store
                .keyspace_of(0)
                .and_then(|ks| ks.iter().next().map(|(_, e)| e.value.clone()));
            assert_eq!(rebuilt.as_ref(), Some(&value));
        }
        // A string longer than a chunk is SET then APPENDs.
        let cmds = Value::Str(Str::from_bytes(&string)).rewrite_commands(&key, 0, small);
        assert_eq!(cmds.len(), 11);
        assert_eq!(
            (&cmds[0][0][..], &cmds[1][0][..]),
            (&b"SET"[..], &b"APPEND"[..])
        );
    }

    /// A command's RESP length (`moon_aof::record::encode_command`'s).
    fn moon_aof_len(args: &[Bytes]) -> usize {
        let mut n = 3 + args.len().to_string().len();
        for a in args {
            n += 5 + a.len().to_string().len() + a.len();
        }
        n
    }
}
