//! What the blocking commands (BLPOP BRPOP BLMOVE BRPOPLPUSH BLMPOP BZPOPMIN BZPOPMAX BZMPOP)
//! are in the keyspace: their non-blocking form and their timeout.
//!
//! In a store a blocking command never blocks: it runs as its non-blocking form (BLPOP k1 k2
//! 0 as LMPOP 2 k1 k2 LEFT, BLMOVE as LMOVE, BZPOPMIN as ZMPOP ... MIN) and answers nil when
//! there was nothing to take — what Redis does inside MULTI, and what the server sees as
//! "wait, then try again" (`moon-server/src/blocking.rs`). So a served pop is an ordinary
//! command: logged as its effect (LPOP, LMOVE, ZPOPMIN...), replayed as one, exactly once.

use bytes::Bytes;
use moon_proto::Frame;

use super::eq;
use crate::args::parse_f64;
use crate::reply::err;

/// How the non-blocking form's reply becomes the blocking command's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The same reply (BLMOVE, BRPOPLPUSH, BLMPOP, BZMPOP).
    AsIs,
    /// LMPOP's `[key, [element]]` as BLPOP's `[key, element]`.
    KeyElement,
    /// ZMPOP's `[key, [[member, score]]]` as BZPOPMIN's `[key, member, score]`.
    KeyMemberScore,
}

impl Shape {
    pub fn apply(self, reply: Frame) -> Frame {
        let Frame::Array(mut parts) = reply else {
            return reply;
        };
        if self == Shape::AsIs || parts.len() != 2 {
            return Frame::Array(parts);
        }
        let (Some(Frame::Array(mut items)), Some(key)) = (parts.pop(), parts.pop()) else {
            return Frame::NullArray;
        };
        match (self, items.pop()) {
            (Shape::KeyElement, Some(element)) => Frame::Array(vec![key, element]),
            (Shape::KeyMemberScore, Some(Frame::Array(pair))) => {
                let mut out = vec![key];
                out.extend(pair);
                Frame::Array(out)
            }
            _ => Frame::NullArray,
        }
    }
}

/// A blocking command's non-blocking form, its timeout and what it waits for.
#[derive(Debug)]
pub struct Blocking {
    /// The non-blocking command it runs as (`LMPOP ...`, `LMOVE ...`, `ZMPOP ...`).
    pub args: Vec<Bytes>,
    pub shape: Shape,
    /// Milliseconds to wait; 0: forever.
    pub timeout_ms: u64,
    /// The keys it waits on (BLMOVE waits on its source only).
    pub keys: Vec<Bytes>,
    /// The type a key must hold to serve it: "list", "zset", "stream" (XREAD) or
    /// "stream-group" (XREADGROUP: any change of the key).
    pub wants: &'static str,
}

/// A timeout in seconds (fractions allowed), as Redis reads one: milliseconds, 0 for
/// forever.
pub fn timeout_ms(arg: &[u8]) -> Result<u64, Frame> {
    let Some(secs) = parse_f64(arg) else {
        return Err(err("ERR timeout is not a float or out of range"));
    };
    if secs < 0.0 {
        return Err(err("ERR timeout is negative"));
    }
    let ms = secs * 1000.0;
    if !ms.is_finite() || ms > i64::MAX as f64 {
        return Err(err("ERR timeout is out of range"));
    }
    // A fraction of a millisecond still waits (Redis rounds up to its clock's resolution).
    Ok(if ms > 0.0 {
        (ms.ceil() as u64).max(1)
    } else {
        0
    })
}

fn word(w: &'static [u8]) -> Bytes {
    Bytes::from_static(w)
}

/// The parts of the blocking command `args` (arity already checked), or its error.
pub fn blocking_form(args: &[Bytes]) -> Result<Blocking, Frame> {
    let name = &args[0];
    let last = args.len() - 1;
    let lower = name.to_ascii_lowercase();
    let (nb, shape, timeout_at, keys, wants): (Vec<Bytes>, Shape, usize, Vec<Bytes>, _) =
        match &lower[..] {
            b"blpop" | b"brpop" | b"bzpopmin" | b"bzpopmax" => {
                let keys = args[1..last].to_vec();
                let (cmd, end, shape, wants) = match &lower[..] {
                    b"blpop" => (word(b"LMPOP"), word(b"LEFT"), Shape::KeyElement, "list"),
                    b"brpop" => (word(b"LMPOP"), word(b"RIGHT"), Shape::KeyElement, "list"),
                    b"bzpopmin" => (word(b"ZMPOP"), word(b"MIN"), Shape::KeyMemberScore, "zset"),
                    _ => (word(b"ZMPOP"), word(b"MAX"), Shape::KeyMemberScore, "zset"),
                };
                let mut nb = vec![cmd, Bytes::from(keys.len().to_string())];
                nb.extend(keys.iter().cloned());
                nb.push(end);
                (nb, shape, last, keys, wants)
            }
            b"brpoplpush" => (
                vec![word(b"RPOPLPUSH"), args[1].clone(), args[2].clone()],
                Shape::AsIs,
                3,
                vec![args[1].clone()],
                "list",
            ),
            b"blmove" => {
                let mut nb = vec![word(b"LMOVE")];
                nb.extend(args[1..5].iter().cloned());
                (nb, Shape::AsIs, 5, vec![args[1].clone()], "list")
            }
            b"xread" | b"xreadgroup" => {
                // The store reads without waiting whatever BLOCK says; the keys are the
                // streams (ids of `$` are made concrete by the server before it waits).
                let q = super::stream::ReadArgs::parse(args, lower == b"xreadgroup")?;
                let timeout_ms = q.block.unwrap_or(0);
                return Ok(Blocking {
                    args: args.to_vec(),
                    shape: Shape::AsIs,
                    timeout_ms,
                    keys: dedup(q.keys),
                    // XREADGROUP is also ended by its key going away (`moon-shard`'s
                    // `serves`).
                    wants: if q.group.is_some() {
                        "stream-group"
                    } else {
                        "stream"
                    },
                });
            }
            b"blmpop" | b"bzmpop" => {
                let (cmd, wants) = if lower[1] == b'l' {
                    (word(b"LMPOP"), "list")
                } else {
                    (word(b"ZMPOP"), "zset")
                };
                let mut nb = vec![cmd];
                nb.extend(args[2..].iter().cloned());
                // Its keys follow the count; a bad count is the non-blocking form's error.
                let n = crate::args::parse_i64(&args[2])
                    .filter(|&n| n > 0 && (n as usize) <= args.len() - 3)
                    .unwrap_or(0) as usize;
                let keys = args[3..3 + n].to_vec();
                (nb, Shape::AsIs, 1, keys, wants)
            }
            _ => return Err(crate::reply::unknown_command(args)),
        };
    let timeout_ms = timeout_ms(&args[timeout_at])?;
    let keys = dedup(keys);
    Ok(Blocking {
        args: nb,
        shape,
        timeout_ms,
        keys,
        wants,
    })
}

/// A key named twice is waited on once (Redis's blocking keys are a set).
fn dedup(keys: Vec<Bytes>) -> Vec<Bytes> {
    let mut unique: Vec<Bytes> = Vec::with_capacity(keys.len());
    for k in keys {
        if !unique.contains(&k) {
            unique.push(k);
        }
    }
    unique
}

/// Whether the blocking command `args` may wait: always, except XREAD and XREADGROUP
/// without BLOCK (or with arguments they refuse: they answer their error at once).
pub fn may_wait(args: &[Bytes]) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    if eq(name, "xread") || eq(name, "xreadgroup") {
        return super::stream::ReadArgs::parse(args, eq(name, "xreadgroup"))
            .is_ok_and(|q| q.block.is_some());
    }
    true
}

/// Whether `name` is a blocking command's name.
pub fn is_blocking(name: &[u8]) -> bool {
    [
        "blpop",
        "brpop",
        "brpoplpush",
        "blmove",
        "blmpop",
        "bzpopmin",
        "bzpopmax",
        "bzmpop",
    ]
    .iter()
    .any(|n| eq(name, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &str) -> Vec<Bytes> {
        words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn blocking_commands_run_as_their_non_blocking_forms() {
        let b = blocking_form(&args("BLPOP a b 1.5")).unwrap();
        assert_eq!(b.args, args("LMPOP 2 a b LEFT"));
        assert_eq!(
            (b.timeout_ms, b.shape, b.wants),
            (1500, Shape::KeyElement, "list")
        );
        assert_eq!(b.keys, args("a b"));
        let b = blocking_form(&args("BLMOVE s d LEFT RIGHT 0")).unwrap();
        assert_eq!(b.args, args("LMOVE s d LEFT RIGHT"));
        assert_eq!((b.timeout_ms, b.keys.len()), (0, 1));
        let b = blocking_form(&args("BZMPOP 0.001 2 x y MAX COUNT 3")).unwrap();
        assert_eq!(b.args, args("ZMPOP 2 x y MAX COUNT 3"));
        assert_eq!((b.timeout_ms, b.wants), (1, "zset"));
        assert_eq!(b.keys, args("x y"));
        let b = blocking_form(&args("BZPOPMAX z 0")).unwrap();
        assert_eq!(b.args, args("ZMPOP 1 z MAX"));
        for (bad, e) in [
            ("BLPOP a -1", "ERR timeout is negative"),
            ("BLPOP a x", "ERR timeout is not a float or out of range"),
            ("BLPOP a inf", "ERR timeout is out of range"),
        ] {
            assert_eq!(
                blocking_form(&args(bad)).unwrap_err(),
                Frame::StaticError(e),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_take_the_blocking_shape() {
        let lmpop = Frame::Array(vec![Frame::bulk("k"), Frame::Array(vec![Frame::bulk("e")])]);
        assert_eq!(
            Shape::KeyElement.apply(lmpop),
            Frame::Array(vec![Frame::bulk("k"), Frame::bulk("e")])
        );
        let zmpop = Frame::Array(vec![
            Frame::bulk("k"),
            Frame::Array(vec![Frame::Array(vec![
                Frame::bulk("m"),
                Frame::Double(1.5),
            ])]),
        ]);
        assert_eq!(
            Shape::KeyMemberScore.apply(zmpop),
            Frame::Array(vec![Frame::bulk("k"), Frame::bulk("m"), Frame::Double(1.5)])
        );
        assert_eq!(Shape::KeyElement.apply(Frame::NullArray), Frame::NullArray);
    }
}
