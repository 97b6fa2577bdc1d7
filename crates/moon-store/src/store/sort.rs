//! SORT and SORT_RO over lists, sets and sorted sets: BY and GET patterns, LIMIT, ASC/DESC,
//! ALPHA, STORE — Redis's algorithm (`sort.c`), on one shard.
//!
//! BY and GET patterns name other keys. A pattern whose keys are all on the sorted key's shard
//! (one shard, or a hash tag before its `*` naming that shard) is read here; any other is
//! refused where the request is parsed ([`local_patterns`]), as Redis Cluster refuses BY and
//! GET patterns that may cross slots. A STORE destination on another shard is written by the
//! server (`cross.rs`: SORT_RO here, then DEL + RPUSH there, in one transaction).
//!
//! Logged form: `SORT ... STORE dst` as sent when it changed something (given the state before
//! it, the sort is deterministic: ties are broken by the element's bytes, or kept in the
//! source's order).

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, parse_i64, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::command::Flags;
use crate::reply::{self, err};
use crate::value::Value;

/// The SORT family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Generic: "sort", -2, W.union(Flags::STORE_KEY), keys(1, 1, 1), COORDINATED, |s, a, now| either(s.sort(a, now, false))),
    command!(Generic: "sort_ro", -2, R, keys(1, 1, 1), ONE, |s, a, now| either(s.sort(a, now, true))),
];

/// SORT's options.
pub struct SortOptions<'a> {
    desc: bool,
    alpha: bool,
    limit: Option<(i64, i64)>,
    pub store: Option<&'a Bytes>,
    by: Option<&'a Bytes>,
    gets: Vec<&'a Bytes>,
}

/// Parses SORT's options (SORT_RO takes no STORE), with Redis's errors.
pub fn sort_options(args: &[Bytes], readonly: bool) -> Result<SortOptions<'_>, Frame> {
    let mut o = SortOptions {
        desc: false,
        alpha: false,
        limit: None,
        store: None,
        by: None,
        gets: Vec::new(),
    };
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let a = &args[j];
        if eq(a, "asc") {
            o.desc = false;
        } else if eq(a, "desc") {
            o.desc = true;
        } else if eq(a, "alpha") {
            o.alpha = true;
        } else if eq(a, "limit") && left >= 2 {
            let start = parse_i64(&args[j + 1]).ok_or_else(|| err(reply::NOT_INTEGER))?;
            let count = parse_i64(&args[j + 2]).ok_or_else(|| err(reply::NOT_INTEGER))?;
            o.limit = Some((start, count));
            j += 2;
        } else if !readonly && eq(a, "store") && left >= 1 {
            o.store = Some(&args[j + 1]);
            j += 1;
        } else if eq(a, "by") && left >= 1 {
            o.by = Some(&args[j + 1]);
            j += 1;
        } else if eq(a, "get") && left >= 1 {
            o.gets.push(&args[j + 1]);
            j += 1;
        } else {
            return Err(err(reply::SYNTAX));
        }
        j += 1;
    }
    Ok(o)
}

/// The shard every key a pattern can name is on, if there is one: a pattern with no `*`
/// names one key (or, as a GET, none); one with a hash tag `{tag}` before its `*` names keys
/// of that tag's shard.
fn pattern_shard(pattern: &[u8], shards: usize) -> Option<usize> {
    let Some(star) = pattern.iter().position(|&c| c == b'*') else {
        return Some(crate::slot::shard_for_key(pattern, shards));
    };
    let prefix = &pattern[..star];
    let open = prefix.iter().position(|&c| c == b'{')?;
    let close = prefix[open + 1..].iter().position(|&c| c == b'}')?;
    (close > 0).then(|| crate::slot::shard_for_key(prefix, shards))
}

/// Whether SORT's BY and GET patterns name only keys of the sorted key's shard; if not,
/// Redis Cluster's refusal, with what to do about it.
pub fn local_patterns(args: &[Bytes], shards: usize) -> Result<(), Frame> {
    if shards <= 1 || args.len() < 2 {
        return Ok(());
    }
    let home = crate::slot::shard_for_key(&args[1], shards);
    let readonly = eq(&args[0], "sort_ro");
    let Ok(o) = sort_options(args, readonly) else {
        return Ok(()); // the command answers its own syntax error
    };
    if let Some(by) = o.by {
        if by.contains(&b'*') && pattern_shard(by, shards) != Some(home) {
            return Err(err("ERR BY option of SORT denied: the keys its pattern names may be on another shard (a hash tag before the *, as {tag}w_*, naming the sorted key's shard, keeps them there)"));
        }
    }
    for get in &o.gets {
        if &get[..] != b"#" && get.contains(&b'*') && pattern_shard(get, shards) != Some(home) {
            return Err(err("ERR GET option of SORT denied: the keys its pattern names may be on another shard (a hash tag before the *, as {tag}w_*, naming the sorted key's shard, keeps them there)"));
        }
    }
    Ok(())
}

/// Whether `pattern` has `->` after position `from` with a field name after it: where.
fn field_arrow(pattern: &[u8], from: usize) -> Option<usize> {
    let at = pattern[from..].windows(2).position(|w| w == b"->")? + from;
    (at + 2 < pattern.len()).then_some(at)
}

/// One element to sort, and what it sorts by.
struct Item {
    element: Bytes,
    score: f64,
    by: Option<Bytes>,
}

impl Store {
    /// The value a BY or GET pattern names for `element`: `#` is the element; `*` is replaced
    /// by it; `key->field` reads a hash field. `None`: no such key, field or string.
    fn by_pattern(&mut self, pattern: &[u8], element: &[u8], now: u64) -> Option<Bytes> {
        if pattern == b"#" {
            return Some(Bytes::copy_from_slice(element));
        }
        let star = pattern.iter().position(|&c| c == b'*')?;
        let arrow = field_arrow(pattern, star + 1);
        let key_end = arrow.unwrap_or(pattern.len());
        let mut key = Vec::with_capacity(key_end + element.len());
        key.extend_from_slice(&pattern[..star]);
        key.extend_from_slice(element);
        key.extend_from_slice(&pattern[star + 1..key_end]);
        match (arrow, &self.ks.get(&key, now)?.value) {
            (None, Value::Str(s)) => Some(s.to_bytes()),
            (Some(at), Value::Hash(h)) => h.get(&pattern[at + 2..]).map(Bytes::copy_from_slice),
            _ => None,
        }
    }

    fn sort(&mut self, args: &[Bytes], now: u64, readonly: bool) -> Result<Frame, Frame> {
        let o = sort_options(args, readonly)?;
        let out = self.sorted(args, &o, now)?;
        let Some(dst) = o.store else {
            return Ok(Frame::Array(
                out.into_iter()
                    .map(|v| v.map_or(Frame::Null, Frame::Bulk))
                    .collect(),
            ));
        };
        let n = out.len();
        let existed = self.ks.contains(dst, now);
        self.ks.remove(dst);
        if n > 0 {
            self.collection_write(dst, now, true, |l: &mut crate::value::List, enc| {
                for v in &out {
                    l.push_back(v.as_deref().unwrap_or(b""), enc);
                }
            })?;
        }
        if n > 0 || existed {
            self.log_args(args);
        }
        Ok(Frame::Integer(n as i64))
    }

    /// What SORT answers (or stores): each element in order, or its GET values.
    fn sorted(
        &mut self,
        args: &[Bytes],
        o: &SortOptions,
        now: u64,
    ) -> Result<Vec<Option<Bytes>>, Frame> {
        let (elements, is_set) = match self.ks.get(&args[1], now).map(|e| &e.value) {
            None => (Vec::new(), false),
            Some(Value::List(l)) => (
                l.iter().map(|v| Bytes::copy_from_slice(&v)).collect(),
                false,
            ),
            Some(Value::Set(s)) => (s.members(), true),
            Some(Value::ZSet(z)) => (
                z.iter_from(0, false)
                    .map(|(m, _)| Bytes::copy_from_slice(m))
                    .collect(),
                false,
            ),
            Some(_) => return Err(err(reply::WRONGTYPE)),
        };
        let mut dontsort = o.by.is_some_and(|b| !b.contains(&b'*'));
        let (mut alpha, mut by) = (o.alpha, o.by);
        if dontsort && is_set && (o.store.is_some() || self.in_script) {
            // A set has no order of its own: what is stored, or given to a script, is sorted
            // (Redis, for replication's sake; here for replay's).
            (dontsort, alpha, by) = (false, true, None);
        }
        let len = elements.len() as i64;
        let (limit_start, limit_count) = o.limit.unwrap_or((0, -1));
        let start = limit_start.clamp(0, len);
        let count = limit_count.clamp(-1, len);
        let mut end = if count < 0 {
            len - 1
        } else {
            start + count - 1
        };
        if start >= len {
            return Ok(Vec::new());
        }
        end = end.min(len - 1);
        if end < start {
            return Ok(Vec::new());
        }
        let mut items: Vec<Item> = elements
            .into_iter()
            .map(|element| Item {
                element,
                score: 0.0,
                by: None,
            })
            .collect();
        if dontsort {
            if o.desc && !is_set {
                items.reverse();
            }
        } else {
            let mut not_a_number = false;
            for item in items.iter_mut() {
                let value = match by {
                    Some(p) => match self.by_pattern(p, &item.element, now) {
                        Some(v) => v,
                        None => continue,
                    },
                    None => item.element.clone(),
                };
                if alpha {
                    if by.is_some() {
                        item.by = Some(value);
                    }
                } else {
                    match crate::args::parse_f64(&value) {
                        Some(v) => item.score = v,
                        None => not_a_number = true,
                    }
                }
            }
            if not_a_number {
                return Err(err("ERR One or more scores can't be converted into double"));
            }
            let desc = o.desc;
            let with_by = by.is_some();
            items.sort_by(|a, b| {
                use std::cmp::Ordering;
                let cmp = if !alpha {
                    a.score
                        .partial_cmp(&b.score)
                        .unwrap_or(Ordering::Equal)
                        .then_with(|| a.element.cmp(&b.element))
                } else if with_by {
                    match (&a.by, &b.by) {
                        (Some(x), Some(y)) => x.cmp(y),
                        (None, None) => Ordering::Equal,
                        (None, _) => Ordering::Less,
                        (_, None) => Ordering::Greater,
                    }
                } else {
                    a.element.cmp(&b.element)
                };
                if desc {
                    cmp.reverse()
                } else {
                    cmp
                }
            });
        }
        let picked = &items[start as usize..=end as usize];
        let mut out = Vec::with_capacity(picked.len() * o.gets.len().max(1));
        for item in picked {
            if o.gets.is_empty() {
                out.push(Some(item.element.clone()));
            }
            for get in &o.gets {
                out.push(self.by_pattern(get, &item.element, now));
            }
        }
        Ok(out)
    }
}
