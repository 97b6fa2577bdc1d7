//! Writing RDB's primitives and values. Values are written in the plainest encoding Redis
//! 7.0 loads (a list as strings, a hash as pairs...; Redis builds its compact forms while
//! loading, as it does for any large value), except streams, which only exist as listpacks,
//! and hashes with field TTLs, which need Redis 7.4's type.

use crate::object::{self, Object, StreamValue};
use crate::packed::{canonical_int, ListpackBuilder};

pub(crate) fn len(out: &mut Vec<u8>, n: u64) {
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if let Ok(n) = u32::try_from(n) {
        out.push(0x80);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A string as Redis's `rdbSaveRawString`: a small integer's text as the integer, a long
/// compressible one LZF-compressed (when that saves more than 4 bytes), else raw.
pub(crate) fn string(out: &mut Vec<u8>, s: &[u8]) {
    string_as(out, s, true)
}

/// [`string`], LZF only with `compress` (a file read back at disk speed is better off
/// without: no compression while writing, no decompression and allocation while loading).
pub(crate) fn string_as(out: &mut Vec<u8>, s: &[u8], compress: bool) {
    if s.len() <= 11 {
        if let Some(i) = canonical_int(s) {
            if let Ok(v) = i8::try_from(i) {
                out.extend_from_slice(&[0xc0, v as u8]);
                return;
            } else if let Ok(v) = i16::try_from(i) {
                out.push(0xc1);
                out.extend_from_slice(&v.to_le_bytes());
                return;
            } else if let Ok(v) = i32::try_from(i) {
                out.push(0xc2);
                out.extend_from_slice(&v.to_le_bytes());
                return;
            }
        }
    }
    if compress && s.len() > 20 {
        if let Ok(c) = lzf::compress(s) {
            if c.len() + 4 < s.len() {
                out.push(0xc3);
                len(out, c.len() as u64);
                len(out, s.len() as u64);
                out.extend_from_slice(&c);
                return;
            }
        }
    }
    len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Writes `obj`'s type byte and encoding; field TTLs are written only when `version` has them
/// (the caller checks [`needs_version`] first).
pub(crate) fn object(out: &mut Vec<u8>, obj: &Object) {
    out.push(type_of(obj));
    body(out, obj, true);
}

/// The type byte [`body`] writes the value for.
pub(crate) fn type_of(obj: &Object) -> u8 {
    match obj {
        Object::String(_) => object::STRING,
        Object::List(_) => object::LIST,
        Object::Set(_) => object::SET,
        Object::ZSet(_) => object::ZSET_2,
        Object::Hash(fields) if fields.iter().any(|f| f.expire_at != 0) => object::HASH_METADATA,
        Object::Hash(_) => object::HASH,
        Object::Stream(_) => object::STREAM_LISTPACKS_2,
    }
}

/// `obj`'s encoding after its type byte; strings LZF-compressed only with `compress`.
pub(crate) fn body(out: &mut Vec<u8>, obj: &Object, compress: bool) {
    match obj {
        Object::String(s) => {
            string_as(out, s, compress);
        }
        Object::List(items) => {
            len(out, items.len() as u64);
            for i in items {
                string_as(out, i, compress);
            }
        }
        Object::Set(items) => {
            len(out, items.len() as u64);
            for i in items {
                string_as(out, i, compress);
            }
        }
        Object::ZSet(items) => {
            len(out, items.len() as u64);
            for (m, s) in items {
                string_as(out, m, compress);
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        Object::Hash(fields) if fields.iter().any(|f| f.expire_at != 0) => {
            // Redis 7.4's RDB_TYPE_HASH_METADATA: deadlines relative to the smallest, plus one
            // (0 is "none").
            let min = fields
                .iter()
                .filter(|f| f.expire_at != 0)
                .map(|f| f.expire_at)
                .min()
                .unwrap_or(0);
            out.extend_from_slice(&min.to_le_bytes());
            len(out, fields.len() as u64);
            for f in fields {
                len(
                    out,
                    if f.expire_at == 0 {
                        0
                    } else {
                        f.expire_at - min + 1
                    },
                );
                string_as(out, &f.field, compress);
                string_as(out, &f.value, compress);
            }
        }
        Object::Hash(fields) => {
            len(out, fields.len() as u64);
            for f in fields {
                string_as(out, &f.field, compress);
                string_as(out, &f.value, compress);
            }
        }
        Object::Stream(s) => {
            stream(out, s, compress);
        }
    }
}

/// The RDB version `obj` needs: 12 (Redis 7.4) for field TTLs, else 10 (Redis 7.0).
pub fn needs_version(obj: &Object) -> u32 {
    match obj {
        Object::Hash(fields) if fields.iter().any(|f| f.expire_at != 0) => crate::REDIS_7_4,
        _ => crate::REDIS_7_0,
    }
}

/// Entries per listpack node and the bytes after which a node is closed, as Redis's defaults
/// (`stream-node-max-entries`, `stream-node-max-bytes`): no node nears a listpack's 4 GiB.
const NODE_ENTRIES: usize = 100;
const NODE_BYTES: usize = 4096;

/// The entries cut into nodes: at most [`NODE_ENTRIES`], closed once past [`NODE_BYTES`].
fn stream_nodes(
    entries: &[(crate::StreamId, Vec<bytes::Bytes>)],
) -> Vec<&[(crate::StreamId, Vec<bytes::Bytes>)]> {
    let mut nodes = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, (_, values)) in entries.iter().enumerate() {
        if i > start && (i - start == NODE_ENTRIES || bytes >= NODE_BYTES) {
            nodes.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += values.iter().map(|v| v.len() + 2).sum::<usize>() + 8;
    }
    if start < entries.len() {
        nodes.push(&entries[start..]);
    }
    nodes
}

fn stream(out: &mut Vec<u8>, s: &StreamValue, compress: bool) {
    let nodes = stream_nodes(&s.entries);
    len(out, nodes.len() as u64);
    for node in &nodes {
        let master = node[0].0;
        // The master entry carries the first entry's field names; entries with the same
        // fields store only their values (SAMEFIELDS), as Redis does.
        let fields: Vec<&[u8]> = node[0].1.iter().step_by(2).map(|f| &f[..]).collect();
        let mut lp = ListpackBuilder::new();
        lp.push_int(node.len() as i64);
        lp.push_int(0);
        lp.push_int(fields.len() as i64);
        for f in &fields {
            lp.push(f);
        }
        lp.push_int(0);
        for (id, values) in node.iter() {
            let same = values.len() == 2 * fields.len()
                && values
                    .iter()
                    .step_by(2)
                    .zip(&fields)
                    .all(|(a, b)| &a[..] == *b);
            lp.push_int(if same { 2 } else { 0 });
            lp.push_int(id.ms.wrapping_sub(master.ms) as i64);
            lp.push_int(id.seq.wrapping_sub(master.seq) as i64);
            if same {
                for v in values.iter().skip(1).step_by(2) {
                    lp.push(v);
                }
                lp.push_int(fields.len() as i64 + 3);
            } else {
                lp.push_int((values.len() / 2) as i64);
                for v in values {
                    lp.push(v);
                }
                lp.push_int(values.len() as i64 + 4);
            }
        }
        string(out, &master.to_be());
        let lp = lp.finish();
        string_as(out, &lp, compress);
    }
    len(out, s.entries.len() as u64);
    len(out, s.last_id.ms);
    len(out, s.last_id.seq);
    len(out, s.first_id.ms);
    len(out, s.first_id.seq);
    len(out, s.max_deleted.ms);
    len(out, s.max_deleted.seq);
    len(out, s.entries_added);
    len(out, s.groups.len() as u64);
    for g in &s.groups {
        string(out, &g.name);
        len(out, g.last_id.ms);
        len(out, g.last_id.seq);
        len(out, g.entries_read.unwrap_or(u64::MAX));
        len(out, g.pending.len() as u64);
        for p in &g.pending {
            out.extend_from_slice(&p.id.to_be());
            out.extend_from_slice(&p.delivered_at.to_le_bytes());
            len(out, p.deliveries);
        }
        let mut owned: std::collections::HashMap<&[u8], Vec<[u8; 16]>> =
            std::collections::HashMap::new();
        for p in &g.pending {
            owned.entry(&p.consumer[..]).or_default().push(p.id.to_be());
        }
        len(out, g.consumers.len() as u64);
        for c in &g.consumers {
            string(out, &c.name);
            out.extend_from_slice(&c.seen_at.to_le_bytes());
            let ids = owned.get(&c.name[..]).map(|v| &v[..]).unwrap_or(&[]);
            len(out, ids.len() as u64);
            for id in ids {
                out.extend_from_slice(id);
            }
        }
    }
}
