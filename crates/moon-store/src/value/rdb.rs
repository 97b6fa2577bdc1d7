//! A value in and out of Redis's RDB form (`moon_rdb::Object`): what DUMP writes, RESTORE
//! reads, and `moon-cli` imports and exports. Building a value checks what the RDB reader
//! cannot: duplicates, a stream whose last id is behind its entries, an empty collection —
//! Redis refuses those too ("Bad data format").

use bytes::Bytes;
use moon_rdb::{HashField, Object, StreamValue};

use super::stream::{self, Stream, StreamId};
use super::{Encodings, Hash, List, Set, Str, Value, ZSet};

/// A string of RDB data as [`Value::from_rdb`] takes it: its bytes, and a string value made
/// of it (a `Bytes` of its own kept as it is, a lent one copied).
pub trait RdbString: std::ops::Deref<Target = [u8]> {
    fn into_str(self) -> Str;
}

impl RdbString for Bytes {
    fn into_str(self) -> Str {
        Str::from_owned(self)
    }
}

impl RdbString for moon_rdb::Text<'_> {
    fn into_str(self) -> Str {
        match self {
            moon_rdb::Text::Owned(v) => Str::from_owned(Bytes::from(v)),
            lent => Str::copy_from(&lent),
        }
    }
}

fn id_out(id: StreamId) -> moon_rdb::StreamId {
    moon_rdb::StreamId {
        ms: id.ms,
        seq: id.seq,
    }
}

fn id_in(id: moon_rdb::StreamId) -> StreamId {
    StreamId::new(id.ms, id.seq)
}

impl Value {
    /// The value as RDB holds it (hash fields with their deadlines, streams with their groups).
    pub fn to_rdb(&self) -> Object {
        match self {
            Value::Str(s) => Object::String(s.to_bytes()),
            Value::List(l) => Object::List(l.iter().map(|e| Bytes::copy_from_slice(&e)).collect()),
            Value::Set(s) => Object::Set(s.members()),
            Value::ZSet(z) => Object::ZSet(
                z.iter_from(0, false)
                    .map(|(m, s)| (Bytes::copy_from_slice(m), s))
                    .collect(),
            ),
            Value::Hash(h) => Object::Hash(
                h.iter()
                    .map(|(f, v)| HashField {
                        field: Bytes::copy_from_slice(f),
                        value: Bytes::copy_from_slice(v),
                        expire_at: h.field_deadline(f).unwrap_or(0),
                    })
                    .collect(),
            ),
            Value::Stream(s) => Object::Stream(Box::new(stream_out(s))),
        }
    }

    /// The value RDB data describes, in Moon's forms under `enc`, its strings `Bytes` or
    /// lent from a file (`moon_rdb::Text`). `Ok(None)`: an empty collection, which Redis never
    /// writes and never loads as a key.
    pub fn from_rdb<S: RdbString>(
        obj: Object<S>,
        enc: &Encodings,
    ) -> Result<Option<Value>, String> {
        Ok(Some(match obj {
            Object::String(s) => Value::Str(s.into_str()),
            Object::List(items) => {
                if items.is_empty() {
                    return Ok(None);
                }
                let l = List::from_items(items.iter().map(|i| &i[..]), enc);
                Value::List(Box::new(l))
            }
            Object::Set(items) => {
                if items.is_empty() {
                    return Ok(None);
                }
                let members = items.iter().map(|m| &m[..]);
                Value::Set(Set::from_members(members, enc).ok_or("a set member twice")?)
            }
            Object::ZSet(items) => {
                if items.is_empty() {
                    return Ok(None);
                }
                if items.iter().any(|(_, score)| score.is_nan()) {
                    return Err("a NaN score".into());
                }
                let pairs = items.iter().map(|(m, score)| (&m[..], *score));
                let z = ZSet::from_pairs(pairs, enc).ok_or("a sorted set member twice")?;
                Value::ZSet(z)
            }
            Object::Hash(fields) => {
                if fields.is_empty() {
                    return Ok(None);
                }
                let mut h = Hash::default();
                for f in &fields {
                    if !h.set(&f.field, &f.value, enc) {
                        return Err("a hash field twice".into());
                    }
                    if f.expire_at > super::MAX_FIELD_DEADLINE {
                        return Err("a field deadline past the largest HPEXPIREAT takes".into());
                    }
                    if f.expire_at != 0 {
                        h.set_field_deadline(&f.field, f.expire_at);
                    }
                }
                Value::Hash(h)
            }
            Object::Stream(s) => Value::Stream(Box::new(stream_in(*s, enc)?)),
        }))
    }
}

fn stream_out(s: &Stream) -> StreamValue {
    let all = s.range(
        StreamId::new(0, 0),
        StreamId::new(u64::MAX, u64::MAX),
        false,
        0,
    );
    StreamValue {
        entries: all.into_iter().map(|(id, v)| (id_out(id), v)).collect(),
        last_id: id_out(s.last_id),
        first_id: id_out(s.first_id()),
        max_deleted: id_out(s.max_deleted),
        entries_added: s.entries_added,
        groups: s
            .groups
            .iter()
            .map(|(name, g)| moon_rdb::StreamGroup {
                name: name.clone(),
                last_id: id_out(g.last_id),
                entries_read: g.entries_read,
                pending: g
                    .pending
                    .iter()
                    .map(|(id, p)| moon_rdb::Pending {
                        id: id_out(*id),
                        consumer: p.consumer.clone(),
                        delivered_at: p.delivered_at,
                        deliveries: p.deliveries,
                    })
                    .collect(),
                consumers: g
                    .consumers
                    .iter()
                    .map(|(name, c)| moon_rdb::StreamConsumer {
                        name: name.clone(),
                        seen_at: c.seen_at,
                        active_at: None,
                    })
                    .collect(),
            })
            .collect(),
        legacy: false,
    }
}

fn stream_in(v: StreamValue, enc: &Encodings) -> Result<Stream, String> {
    let limits = stream::NodeLimits {
        max_bytes: enc.stream_node_max_bytes,
        max_entries: enc.stream_node_max_entries,
    };
    let mut s = Stream::default();
    let mut prev: Option<StreamId> = None;
    for (id, pairs) in &v.entries {
        let id = id_in(*id);
        if prev.is_some_and(|p| p >= id) || id.is_zero() {
            return Err("stream entries out of order".into());
        }
        if pairs.is_empty() || pairs.len() % 2 != 0 {
            return Err("a stream entry without field/value pairs".into());
        }
        s.append(id, pairs, limits);
        prev = Some(id);
    }
    let last = id_in(v.last_id);
    if prev.is_some_and(|p| p > last) {
        return Err("a stream whose last id is behind its entries".into());
    }
    s.last_id = last;
    // May be past the last id: XSETID without MAXDELETEDID on an emptied stream gets there,
    // and Redis loads it as it is.
    s.max_deleted = id_in(v.max_deleted);
    s.entries_added = v.entries_added.max(s.len()).min(i64::MAX as u64);
    for g in v.groups {
        if s.groups.contains_key(&g.name) {
            return Err("a consumer group twice".into());
        }
        let mut group = stream::Group {
            last_id: id_in(g.last_id),
            entries_read: g.entries_read.map(|n| n.min(i64::MAX as u64)),
            ..Default::default()
        };
        for c in &g.consumers {
            let fresh = stream::Consumer {
                seen_at: c.seen_at,
                ..Default::default()
            };
            if group.consumers.insert(c.name.clone(), fresh).is_some() {
                return Err("a consumer twice in a group".into());
            }
        }
        for p in &g.pending {
            group.assign(id_in(p.id), &p.consumer, p.delivered_at, p.deliveries);
        }
        if v.legacy {
            group.entries_read = s.entries_read_at(group.last_id);
        }
        s.groups.insert(g.name, group);
    }
    s.groups_changed();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_empty_collections_are_refused() {
        let enc = Encodings::default();
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert!(Value::from_rdb(Object::Set(vec![b("a"), b("a")]), &enc).is_err());
        assert!(Value::from_rdb(Object::ZSet(vec![(b("a"), 1.0), (b("a"), 2.0)]), &enc).is_err());
        assert_eq!(
            Value::from_rdb(Object::<Bytes>::List(vec![]), &enc),
            Ok(None)
        );
        let st = StreamValue {
            entries: vec![(moon_rdb::StreamId { ms: 5, seq: 0 }, vec![b("f"), b("v")])],
            last_id: moon_rdb::StreamId { ms: 4, seq: 0 },
            ..Default::default()
        };
        assert!(Value::from_rdb(Object::<Bytes>::Stream(Box::new(st)), &enc).is_err());
    }
}
