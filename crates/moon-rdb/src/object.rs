//! One value as RDB holds it, decoded into plain data ([`Object`]), and the decoder for every
//! value type Redis has written up to 7.4.

use bytes::Bytes;

use crate::cursor::Cursor;
use crate::error::{Error, ErrorKind, Result};
use crate::packed::{self, Elem};
use crate::text::Text;

/// At most this many elements are allocated for up front, whatever a count says: a count is
/// bounded by the bytes left (one byte an element at least), but an element in memory is 32
/// bytes, and a crafted payload must not reserve 32 times its size before anything is read.
const PREALLOC: usize = 1 << 12;

/// A value, whatever encoding the file used for it. Its strings are `Bytes` of its own, or,
/// as a file reader lends it ([`crate::FileReader::next_lent`]), [`Text`] of the file's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Object<S = Bytes> {
    String(S),
    List(Vec<S>),
    Set(Vec<S>),
    /// Members and scores, in the file's order.
    ZSet(Vec<(S, f64)>),
    Hash(Vec<HashField<S>>),
    Stream(Box<StreamValue>),
}

impl Object<Text<'_>> {
    /// The value with strings of its own.
    pub fn into_owned(self) -> Object {
        let all = |v: Vec<Text>| v.into_iter().map(Text::into_bytes).collect();
        match self {
            Object::String(s) => Object::String(s.into_bytes()),
            Object::List(v) => Object::List(all(v)),
            Object::Set(v) => Object::Set(all(v)),
            Object::ZSet(v) => {
                Object::ZSet(v.into_iter().map(|(m, s)| (m.into_bytes(), s)).collect())
            }
            Object::Hash(v) => Object::Hash(
                v.into_iter()
                    .map(|f| HashField {
                        field: f.field.into_bytes(),
                        value: f.value.into_bytes(),
                        expire_at: f.expire_at,
                    })
                    .collect(),
            ),
            Object::Stream(s) => Object::Stream(s),
        }
    }
}

impl<S> Object<S> {
    /// Redis's TYPE name of the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Object::String(_) => "string",
            Object::List(_) => "list",
            Object::Set(_) => "set",
            Object::ZSet(_) => "zset",
            Object::Hash(_) => "hash",
            Object::Stream(_) => "stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashField<S = Bytes> {
    pub field: S,
    pub value: S,
    /// Unix ms at which the field expires (Redis 7.4's HPEXPIREAT); 0: never.
    pub expire_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub(crate) fn from_be(raw: [u8; 16]) -> StreamId {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&raw[..8]);
        seq.copy_from_slice(&raw[8..]);
        StreamId {
            ms: u64::from_be_bytes(ms),
            seq: u64::from_be_bytes(seq),
        }
    }

    pub(crate) fn to_be(self) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.ms.to_be_bytes());
        raw[8..].copy_from_slice(&self.seq.to_be_bytes());
        raw
    }
}

/// A stream: its live entries and the metadata XINFO shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamValue {
    /// Entry ids and their field/value lists (`[f1, v1, f2, v2...]`), ascending.
    pub entries: Vec<(StreamId, Vec<Bytes>)>,
    pub last_id: StreamId,
    pub first_id: StreamId,
    pub max_deleted: StreamId,
    pub entries_added: u64,
    pub groups: Vec<StreamGroup>,
    /// Written before Redis 7.0, which kept no read counters: every group's `entries_read` is
    /// `None`, and a loader estimates it as Redis does (`entries_added` is the length).
    pub legacy: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamGroup {
    pub name: Bytes,
    pub last_id: StreamId,
    /// The group's read counter; `None` when Redis could not tell (its -1).
    pub entries_read: Option<u64>,
    /// Delivered, unacknowledged entries, ascending by id.
    pub pending: Vec<Pending>,
    pub consumers: Vec<StreamConsumer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: StreamId,
    pub consumer: Bytes,
    /// Unix ms of the last delivery.
    pub delivered_at: u64,
    pub deliveries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumer {
    pub name: Bytes,
    pub seen_at: u64,
    /// Redis 7.2's last successful interaction; `None` from older files.
    pub active_at: Option<u64>,
}

// The value types (`RDB_TYPE_*`).
pub(crate) const STRING: u8 = 0;
pub(crate) const LIST: u8 = 1;
pub(crate) const SET: u8 = 2;
pub(crate) const ZSET: u8 = 3;
pub(crate) const HASH: u8 = 4;
pub(crate) const ZSET_2: u8 = 5;
pub(crate) const MODULE_PRE_GA: u8 = 6;
pub(crate) const MODULE_2: u8 = 7;
const HASH_ZIPMAP: u8 = 9;
const LIST_ZIPLIST: u8 = 10;
const SET_INTSET: u8 = 11;
const ZSET_ZIPLIST: u8 = 12;
const HASH_ZIPLIST: u8 = 13;
const LIST_QUICKLIST: u8 = 14;
const STREAM_LISTPACKS: u8 = 15;
const HASH_LISTPACK: u8 = 16;
const ZSET_LISTPACK: u8 = 17;
const LIST_QUICKLIST_2: u8 = 18;
pub(crate) const STREAM_LISTPACKS_2: u8 = 19;
const SET_LISTPACK: u8 = 20;
const STREAM_LISTPACKS_3: u8 = 21;
const HASH_METADATA_PRE_GA: u8 = 22;
const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
pub(crate) const HASH_METADATA: u8 = 24;
const HASH_LISTPACK_EX: u8 = 25;

/// Whether `t` is a value type (anything else before a key is an opcode).
pub(crate) fn is_value_type(t: u8) -> bool {
    matches!(t, 0..=7 | 9..=25)
}

/// What a value that cannot be read is: a module's type name (from its 64-bit id), or the
/// type number.
pub(crate) fn module_name(id: u64) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let name: String = (0..9)
        .map(|i| CHARS[((id >> (10 + 6 * (8 - i))) & 63) as usize] as char)
        .collect();
    format!("module type {name} (encoding version {})", id & 1023)
}

fn b(s: Text<'_>) -> Bytes {
    s.into_bytes()
}

/// A packed encoding's parser (listpack, ziplist).
type Unpack = for<'x> fn(&'x [u8]) -> std::result::Result<Vec<Elem<'x>>, String>;

/// The elements of the packed string `s`: lent from the file when `s` is, held when `s` was
/// decompressed.
fn unpack<'a>(s: Text<'a>, parse: Unpack, at: usize) -> Result<Vec<Text<'a>>> {
    let held = |e: Elem<'_>| Text::from_elem(e).into_static();
    match s {
        Text::Lent(raw) => parse(raw).map(|v| v.into_iter().map(Text::from_elem).collect()),
        other => parse(&other).map(|v| v.into_iter().map(held).collect()),
    }
    .map_err(|e| Error::corrupt(at, e))
}

fn pairs<S>(v: Vec<S>, at: usize) -> Result<Vec<(S, S)>> {
    if !v.len().is_multiple_of(2) {
        return Err(Error::corrupt(
            at,
            "an odd number of elements in a pair encoding",
        ));
    }
    let mut out = Vec::with_capacity(v.len() / 2);
    let mut it = v.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

fn score(s: &[u8], at: usize) -> Result<f64> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| match t {
            "inf" | "+inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => t.parse().ok(),
        })
        .filter(|d: &f64| !d.is_nan())
        .ok_or_else(|| Error::corrupt(at, "a sorted set score that is not a number"))
}

/// Reads a value of type `t`. Module data is refused as `Unsupported` with the cursor just
/// after the module id, where [`skip_module_value`] can step over it. Strings stored raw are
/// lent from the cursor's bytes.
pub(crate) fn read_object<'a>(c: &mut Cursor<'a>, t: u8) -> Result<Object<Text<'a>>> {
    let at = c.offset();
    Ok(match t {
        STRING => Object::String(c.string()?),
        LIST => {
            let n = c.count(1)?;
            let mut v = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                v.push(c.string()?);
            }
            Object::List(v)
        }
        SET => {
            let n = c.count(1)?;
            let mut v = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                v.push(c.string()?);
            }
            Object::Set(v)
        }
        ZSET | ZSET_2 => {
            let n = c.count(2)?;
            let mut v = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                let m = c.string()?;
                let at = c.offset();
                let s = if t == ZSET {
                    c.text_double()?
                } else {
                    c.binary_double()?
                };
                if s.is_nan() {
                    return Err(Error::corrupt(at, "a NaN score"));
                }
                v.push((m, s));
            }
            Object::ZSet(v)
        }
        HASH => {
            let n = c.count(2)?;
            let mut v = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                let field = c.string()?;
                let value = c.string()?;
                v.push(HashField {
                    field,
                    value,
                    expire_at: 0,
                });
            }
            Object::Hash(v)
        }
        HASH_METADATA | HASH_METADATA_PRE_GA => {
            let min = if t == HASH_METADATA { c.u64_le()? } else { 0 };
            let n = c.count(3)?;
            let mut v = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                let at = c.offset();
                let ttl = c.len()?;
                let expire_at = match (t, ttl) {
                    (_, 0) => 0,
                    (HASH_METADATA, ttl) => ttl
                        .checked_add(min)
                        .and_then(|t| t.checked_sub(1))
                        .ok_or_else(|| {
                            Error::corrupt(at, "a field TTL past the largest deadline")
                        })?,
                    (_, ttl) => ttl,
                };
                if expire_at > 0xffff_ffff_ffff {
                    return Err(Error::corrupt(at, "a field TTL past the largest deadline"));
                }
                let field = c.string()?;
                let value = c.string()?;
                v.push(HashField {
                    field,
                    value,
                    expire_at,
                });
            }
            Object::Hash(v)
        }
        HASH_ZIPMAP => {
            let s = c.string()?;
            let v = packed::zipmap(&s).map_err(|e| Error::corrupt(at, e))?;
            Object::Hash(
                v.into_iter()
                    .map(|(f, x)| HashField {
                        field: Text::Owned(f.to_vec()),
                        value: Text::Owned(x.to_vec()),
                        expire_at: 0,
                    })
                    .collect(),
            )
        }
        LIST_ZIPLIST => Object::List(unpack(c.string()?, packed::ziplist, at)?),
        SET_INTSET => {
            let s = c.string()?;
            let v = packed::intset(&s).map_err(|e| Error::corrupt(at, e))?;
            Object::Set(v.into_iter().map(Text::int).collect())
        }
        SET_LISTPACK => Object::Set(unpack(c.string()?, packed::listpack, at)?),
        ZSET_ZIPLIST | ZSET_LISTPACK => {
            let parse = if t == ZSET_ZIPLIST {
                packed::ziplist
            } else {
                packed::listpack
            };
            let mut out = Vec::new();
            for (m, sc) in pairs(unpack(c.string()?, parse, at)?, at)? {
                out.push((m, score(&sc, at)?));
            }
            Object::ZSet(out)
        }
        HASH_ZIPLIST | HASH_LISTPACK => {
            let parse = if t == HASH_ZIPLIST {
                packed::ziplist
            } else {
                packed::listpack
            };
            Object::Hash(
                pairs(unpack(c.string()?, parse, at)?, at)?
                    .into_iter()
                    .map(|(field, value)| HashField {
                        field,
                        value,
                        expire_at: 0,
                    })
                    .collect(),
            )
        }
        HASH_LISTPACK_EX | HASH_LISTPACK_EX_PRE_GA => {
            if t == HASH_LISTPACK_EX {
                c.u64_le()?; // the smallest deadline: a hint
            }
            let v = unpack(c.string()?, packed::listpack, at)?;
            if !v.len().is_multiple_of(3) {
                return Err(Error::corrupt(
                    at,
                    "a field-TTL hash listpack not in triples",
                ));
            }
            let mut out = Vec::with_capacity(v.len() / 3);
            let mut it = v.into_iter();
            while let (Some(field), Some(value), Some(ttl)) = (it.next(), it.next(), it.next()) {
                let expire_at = std::str::from_utf8(&ttl)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .filter(|&d| d <= 0xffff_ffff_ffff)
                    .ok_or_else(|| Error::corrupt(at, "a field TTL that is not a deadline"))?;
                out.push(HashField {
                    field,
                    value,
                    expire_at,
                });
            }
            Object::Hash(out)
        }
        LIST_QUICKLIST | LIST_QUICKLIST_2 => {
            let n = c.count(1)?;
            let mut v = Vec::new();
            for _ in 0..n {
                let container = if t == LIST_QUICKLIST_2 { c.len()? } else { 2 };
                let at = c.offset();
                let s = c.string()?;
                match container {
                    1 => v.push(s),
                    2 => {
                        let parse = if t == LIST_QUICKLIST {
                            packed::ziplist
                        } else {
                            packed::listpack
                        };
                        // Redis skips an empty node silently; so does this.
                        v.extend(unpack(s, parse, at)?);
                    }
                    other => {
                        return Err(Error::corrupt(at, format!("quicklist container {other}")))
                    }
                }
            }
            Object::List(v)
        }
        STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => {
            Object::Stream(Box::new(read_stream(c, t)?))
        }
        MODULE_2 => {
            let id = c.len()?;
            return Err(Error {
                offset: at,
                kind: ErrorKind::Unsupported(module_name(id)),
            });
        }
        MODULE_PRE_GA => {
            return Err(Error {
                offset: at,
                kind: ErrorKind::Unsupported("module data of Redis 4.0 release candidates".into()),
            })
        }
        other => return Err(Error::corrupt(at, format!("unknown value type {other}"))),
    })
}

/// Steps over a module value (`RDB_TYPE_MODULE_2`, or module AUX data): its id, then opcodes
/// until `EOF`. The cursor must be just after the id.
pub(crate) fn skip_module_value(c: &mut Cursor) -> Result<()> {
    loop {
        let at = c.offset();
        match c.len()? {
            0 => return Ok(()),
            1 | 2 => {
                c.len()?;
            }
            3 => {
                c.take(4)?; // a binary float
            }
            4 => {
                c.take(8)?; // a binary double
            }
            5 => c.skip_string()?,
            op => return Err(Error::corrupt(at, format!("unknown module opcode {op}"))),
        }
    }
}

fn id_pair(c: &mut Cursor) -> Result<StreamId> {
    Ok(StreamId {
        ms: c.len()?,
        seq: c.len()?,
    })
}

fn read_stream(c: &mut Cursor, t: u8) -> Result<StreamValue> {
    let mut s = StreamValue::default();
    let nodes = c.count(2)?;
    for _ in 0..nodes {
        let at = c.offset();
        let key = c.string()?;
        let master: [u8; 16] = key
            .as_ref()
            .try_into()
            .map_err(|_| Error::corrupt(at, "a stream node key that is not an id"))?;
        let master = StreamId::from_be(master);
        let at = c.offset();
        let lp = c.string()?;
        let items = packed::listpack(&lp).map_err(|e| Error::corrupt(at, e))?;
        read_stream_node(&items, master, &mut s.entries).map_err(|e| Error::corrupt(at, e))?;
    }
    let at = c.offset();
    let length = c.len()?;
    if length != s.entries.len() as u64 {
        return Err(Error::corrupt(
            at,
            format!("a stream of {length} entries holds {}", s.entries.len()),
        ));
    }
    if s.entries.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(Error::corrupt(at, "stream entries out of order"));
    }
    s.last_id = id_pair(c)?;
    if t >= STREAM_LISTPACKS_2 {
        s.first_id = id_pair(c)?;
        s.max_deleted = id_pair(c)?;
        s.entries_added = c.len()?;
    } else {
        s.first_id = s.entries.first().map(|e| e.0).unwrap_or_default();
        s.entries_added = length;
        s.legacy = true;
    }
    let groups = c.count(4)?;
    for _ in 0..groups {
        let name = b(c.string()?);
        let last_id = id_pair(c)?;
        let entries_read = if t >= STREAM_LISTPACKS_2 {
            Some(c.len()?).filter(|&n| n != u64::MAX)
        } else {
            None
        };
        let mut pel: Vec<(StreamId, u64, u64, Option<Bytes>)> = Vec::new();
        let n = c.count(17)?;
        for _ in 0..n {
            let at = c.offset();
            let id = StreamId::from_be(c.array()?);
            let delivered_at = c.u64_le()?;
            let deliveries = c.len()?;
            if pel.last().is_some_and(|p| p.0 >= id) {
                return Err(Error::corrupt(at, "pending entries out of order"));
            }
            pel.push((id, delivered_at, deliveries, None));
        }
        let mut consumers = Vec::new();
        let n = c.count(10)?;
        for _ in 0..n {
            let name = b(c.string()?);
            let seen_at = c.u64_le()?;
            let active_at = if t >= STREAM_LISTPACKS_3 {
                Some(c.u64_le()?)
            } else {
                None
            };
            let owned = c.count(16)?;
            for _ in 0..owned {
                let at = c.offset();
                let id = StreamId::from_be(c.array()?);
                let slot = pel.binary_search_by(|p| p.0.cmp(&id)).map_err(|_| {
                    Error::corrupt(at, "a consumer's entry not in its group's pending list")
                })?;
                if pel[slot].3.replace(name.clone()).is_some() {
                    return Err(Error::corrupt(at, "a pending entry owned twice"));
                }
            }
            consumers.push(StreamConsumer {
                name,
                seen_at,
                active_at,
            });
        }
        let mut pending = Vec::with_capacity(pel.len());
        for (id, delivered_at, deliveries, owner) in pel {
            let consumer = owner.ok_or_else(|| {
                c.corrupt(format!(
                    "pending entry {}-{} without a consumer",
                    id.ms, id.seq
                ))
            })?;
            pending.push(Pending {
                id,
                consumer,
                delivered_at,
                deliveries,
            });
        }
        s.groups.push(StreamGroup {
            name,
            last_id,
            entries_read,
            pending,
            consumers,
        });
    }
    Ok(s)
}

const FLAG_DELETED: i64 = 1;
const FLAG_SAMEFIELDS: i64 = 2;

/// The live entries of one stream node: a master entry (count, deleted, its fields, 0), then
/// entries of flags, id deltas, values (or fields and values) and a back count.
fn read_stream_node(
    items: &[Elem],
    master: StreamId,
    out: &mut Vec<(StreamId, Vec<Bytes>)>,
) -> std::result::Result<(), String> {
    let mut it = items.iter().copied();
    fn int<'e>(
        it: &mut impl Iterator<Item = Elem<'e>>,
        what: &str,
    ) -> std::result::Result<i64, String> {
        it.next()
            .and_then(Elem::int)
            .ok_or_else(|| format!("stream node: {what} missing or not a number"))
    }
    let count = int(&mut it, "count")?;
    let deleted = int(&mut it, "deleted count")?;
    let nfields =
        usize::try_from(int(&mut it, "field count")?).map_err(|_| "negative field count")?;
    let fields: Vec<Bytes> = it
        .by_ref()
        .take(nfields)
        .map(|e| b(Text::from_elem(e)))
        .collect();
    if fields.len() != nfields || int(&mut it, "master terminator")? != 0 {
        return Err("stream node: master entry damaged".into());
    }
    let (mut live, mut dead) = (0i64, 0i64);
    while let Some(flags) = it.next() {
        let flags = flags.int().ok_or("stream entry: flags not a number")?;
        let ms = master.ms.wrapping_add(int(&mut it, "ms delta")? as u64);
        let seq = master.seq.wrapping_add(int(&mut it, "seq delta")? as u64);
        let values: Vec<Bytes> = if flags & FLAG_SAMEFIELDS != 0 {
            let vals: Vec<Elem> = it.by_ref().take(nfields).collect();
            if vals.len() != nfields {
                return Err("stream entry: values missing".into());
            }
            fields
                .iter()
                .zip(vals)
                .flat_map(|(f, v)| [f.clone(), b(Text::from_elem(v))])
                .collect()
        } else {
            let n = usize::try_from(int(&mut it, "field count")?)
                .map_err(|_| "negative field count")?;
            let pairs: Vec<Bytes> = it
                .by_ref()
                .take(n.saturating_mul(2))
                .map(|e| b(Text::from_elem(e)))
                .collect();
            if pairs.len() != n.saturating_mul(2) {
                return Err("stream entry: fields missing".into());
            }
            pairs
        };
        int(&mut it, "back count")?;
        if flags & FLAG_DELETED != 0 {
            dead += 1;
        } else {
            live += 1;
            out.push((StreamId { ms, seq }, values));
        }
    }
    if live != count || dead != deleted {
        return Err(format!(
            "stream node says {count} live and {deleted} deleted entries, holds {live} and {dead}"
        ));
    }
    Ok(())
}
