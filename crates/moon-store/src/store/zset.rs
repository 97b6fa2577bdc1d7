//! Sorted-set commands (ZADD, ZRANGE, ZPOPMIN, ZUNIONSTORE, ...), on one shard. The multi-key
//! ones whose keys live on several shards are run by the server across shards with
//! [`Store::zset_scores`] and [`Store::zrange_source`] as its reads and ZADD / ZPOPMIN as its
//! writes.
//!
//! Logged forms: every write as sent when it changed something — given the set before it,
//! each is deterministic (a score parses to the same double on replay, a pop takes the same
//! end, a range names the same members, the set algebra adds in the same order) — except
//! ZADD ... INCR, logged as the `ZINCRBY` it amounts to, and ZMPOP, logged as the
//! `ZPOPMIN`/`ZPOPMAX` of the key it popped from. Scores in a rewrite form or a move across
//! shards are printed with 17 significant digits ([`format_score`]), which parses back to
//! the same double.

use bytes::Bytes;
use moon_proto::Frame;

use super::set::SetOp;
use super::{either, eq, parse_f64, parse_i64, scan_args, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::reply::{self, err};
use crate::value::{format_score, Value, ZSet};

/// The sorted-set family's rows.
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(SortedSet: "zadd", -4, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.zadd(a, now))),
    command!(SortedSet: "zincrby", 4, WF, keys(1, 1, 1), ONE, |s, a, now| either(s.zincrby(a, now))),
    command!(SortedSet: "zrem", -3, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.zrem(a, now))),
    command!(SortedSet: "zcard", 2, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.zset_ref(&a[1], now).map(|z| Frame::Integer(z.map_or(0, |z| z.len() as i64))))
    }),
    command!(SortedSet: "zscore", 3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.zset_ref(&a[1], now).map(|z| score_frame(z.and_then(|z| z.score(&a[2])))))
    }),
    command!(SortedSet: "zmscore", -3, RF, keys(1, 1, 1), ONE, |s, a, now| {
        either(s.zset_ref(&a[1], now).map(|z| {
            Frame::Array(a[2..].iter().map(|m| score_frame(z.and_then(|z| z.score(m)))).collect())
        }))
    }),
    command!(SortedSet: "zcount", 4, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.zcount(a, now, false))),
    command!(SortedSet: "zlexcount", 4, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.zcount(a, now, true))),
    command!(SortedSet: "zrank", -3, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.zrank(a, now, false))),
    command!(SortedSet: "zrevrank", -3, RF, keys(1, 1, 1), ONE, |s, a, now| either(s.zrank(a, now, true))),
    command!(SortedSet: "zrange", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zrange(a, now, RangeForm::ZRANGE))),
    command!(SortedSet: "zrangebyscore", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zrange(a, now, RangeForm::BY_SCORE))),
    command!(SortedSet: "zrevrangebyscore", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zrange(a, now, RangeForm::REV_BY_SCORE))),
    command!(SortedSet: "zrangebylex", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zrange(a, now, RangeForm::BY_LEX))),
    command!(SortedSet: "zrevrangebylex", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zrange(a, now, RangeForm::REV_BY_LEX))),
    command!(SortedSet: "zrevrange", -4, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zrange(a, now, RangeForm::REV_RANK))),
    command!(SortedSet: "zrangestore", -5, W, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.zrangestore(a, now))),
    command!(SortedSet: "zpopmin", -2, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.zpop(a, now, ZEnd::Min))),
    command!(SortedSet: "zpopmax", -2, WNOOMF, keys(1, 1, 1), ONE, |s, a, now| either(s.zpop(a, now, ZEnd::Max))),
    command!(SortedSet: "zmpop", -4, WNOOM, numkeys at 1, COORDINATED, |s, a, now| either(s.zmpop(a, now))),
    command!(SortedSet: "zrandmember", -2, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zrandmember(a, now))),
    command!(SortedSet: "zremrangebyrank", 4, WNOOM, keys(1, 1, 1), ONE, |s, a, now| either(s.zremrange(a, now, RangeKind::Rank))),
    command!(SortedSet: "zremrangebyscore", 4, WNOOM, keys(1, 1, 1), ONE, |s, a, now| either(s.zremrange(a, now, RangeKind::Score))),
    command!(SortedSet: "zremrangebylex", 4, WNOOM, keys(1, 1, 1), ONE, |s, a, now| either(s.zremrange(a, now, RangeKind::Lex))),
    command!(SortedSet: "zunion", -3, R, numkeys at 1, COORDINATED, |s, a, now| either(s.zcombined(a, now, SetOp::Union))),
    command!(SortedSet: "zinter", -3, R, numkeys at 1, COORDINATED, |s, a, now| either(s.zcombined(a, now, SetOp::Inter))),
    command!(SortedSet: "zdiff", -3, R, numkeys at 1, COORDINATED, |s, a, now| either(s.zcombined(a, now, SetOp::Diff))),
    command!(SortedSet: "zintercard", -3, R, numkeys at 1, COORDINATED, |s, a, now| either(s.zintercard(a, now))),
    command!(SortedSet: "zunionstore", -4, W, dest 1, numkeys at 2, COORDINATED, |s, a, now| either(s.zstore(a, now, SetOp::Union))),
    command!(SortedSet: "zinterstore", -4, W, dest 1, numkeys at 2, COORDINATED, |s, a, now| either(s.zstore(a, now, SetOp::Inter))),
    command!(SortedSet: "zdiffstore", -4, W, dest 1, numkeys at 2, COORDINATED, |s, a, now| either(s.zstore(a, now, SetOp::Diff))),
    command!(SortedSet: "bzpopmin", -3, WFB, keys(1, -2, 1), COORDINATED, |s, a, now| either(s.zset_blocking(a, now))),
    command!(SortedSet: "bzpopmax", -3, WFB, keys(1, -2, 1), COORDINATED, |s, a, now| either(s.zset_blocking(a, now))),
    command!(SortedSet: "bzmpop", -5, WB, numkeys at 2, COORDINATED, |s, a, now| either(s.zset_blocking(a, now))),
    command!(SortedSet: "zscan", -3, R, keys(1, 1, 1), ONE, |s, a, now| either(s.zscan(a, now))),
];

/// Members with their scores, in the order a command gives them.
pub type Scored = Vec<(Bytes, f64)>;

/// Which end of a sorted set a pop takes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ZEnd {
    Min,
    Max,
}

impl ZEnd {
    /// The pop command that takes from this end.
    pub fn pop_command(self) -> &'static [u8] {
        match self {
            ZEnd::Min => b"ZPOPMIN",
            ZEnd::Max => b"ZPOPMAX",
        }
    }
}

fn score_frame(s: Option<f64>) -> Frame {
    s.map_or(Frame::Null, Frame::Double)
}

fn member_frame(m: &[u8]) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(m))
}

/// Members, with their scores as RESP3 pairs (RESP2: one flat array) or without.
pub fn members_reply(items: Vec<(Bytes, f64)>, withscores: bool) -> Frame {
    if withscores {
        Frame::Pairs(
            items
                .into_iter()
                .map(|(m, s)| (Frame::Bulk(m), Frame::Double(s)))
                .collect(),
        )
    } else {
        Frame::Array(items.into_iter().map(|(m, _)| Frame::Bulk(m)).collect())
    }
}

fn float_arg(b: &[u8]) -> Result<f64, Frame> {
    parse_score(b).ok_or_else(|| err(reply::NOT_FLOAT))
}

/// A score, weight or increment as Redis reads one (`string2d`): a number that is neither
/// NaN nor out of a double's range — `1e400` and `1e-400` are refused (review finding), the
/// words `inf` and `-inf` taken.
fn parse_score(b: &[u8]) -> Option<f64> {
    let v = parse_f64(b)?;
    let said_inf = b.iter().any(|c| c.eq_ignore_ascii_case(&b'i'));
    let said_nonzero = b
        .iter()
        .take_while(|c| !c.eq_ignore_ascii_case(&b'e'))
        .any(|c| (b'1'..=b'9').contains(c));
    if (v.is_infinite() && !said_inf) || (v == 0.0 && said_nonzero) {
        return None;
    }
    Some(v)
}

fn int_arg(b: &[u8]) -> Result<i64, Frame> {
    parse_i64(b).ok_or_else(|| err(reply::NOT_INTEGER))
}

const NOT_FLOAT_RANGE: &str = "ERR min or max is not a float";
const NOT_LEX_RANGE: &str = "ERR min or max not valid string range item";
const NAN_SCORE: &str = "ERR resulting score is not a number (NaN)";

/// One end of a score range: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
#[derive(Clone, Copy, Debug)]
struct ScoreBound {
    value: f64,
    open: bool,
}

impl ScoreBound {
    fn parse(b: &[u8]) -> Option<ScoreBound> {
        let (open, text) = match b.first() {
            Some(b'(') => (true, &b[1..]),
            _ => (false, b),
        };
        Some(ScoreBound {
            value: parse_f64(text)?,
            open,
        })
    }

    /// Whether `s` lies below this lower bound.
    fn below(self, s: f64) -> bool {
        if self.open {
            s <= self.value
        } else {
            s < self.value
        }
    }

    /// Whether `s` lies within this upper bound.
    fn within(self, s: f64) -> bool {
        if self.open {
            s < self.value
        } else {
            s <= self.value
        }
    }
}

/// One end of a lexicographic range: `-`, `+`, `[a` (inclusive), `(a` (exclusive).
#[derive(Clone, Debug)]
enum LexBound {
    Lowest,
    Highest,
    Closed(Bytes),
    Open(Bytes),
}

impl LexBound {
    fn parse(b: &Bytes) -> Option<LexBound> {
        match b.first() {
            Some(b'-') if b.len() == 1 => Some(LexBound::Lowest),
            Some(b'+') if b.len() == 1 => Some(LexBound::Highest),
            Some(b'[') => Some(LexBound::Closed(b.slice(1..))),
            Some(b'(') => Some(LexBound::Open(b.slice(1..))),
            _ => None,
        }
    }

    /// Whether `m` lies below this lower bound.
    fn below(&self, m: &[u8]) -> bool {
        match self {
            LexBound::Lowest => false,
            LexBound::Highest => true,
            LexBound::Closed(x) => m < &x[..],
            LexBound::Open(x) => m <= &x[..],
        }
    }

    /// Whether `m` lies within this upper bound.
    fn within(&self, m: &[u8]) -> bool {
        match self {
            LexBound::Lowest => false,
            LexBound::Highest => true,
            LexBound::Closed(x) => m <= &x[..],
            LexBound::Open(x) => m < &x[..],
        }
    }
}

/// What a range selects by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RangeKind {
    Rank,
    Score,
    Lex,
}

/// How a range command reads its arguments: where the source key is, whether it stores, and
/// the kind and direction its name fixes (`None`: chosen by BYSCORE/BYLEX/REV, as ZRANGE).
#[derive(Clone, Copy)]
struct RangeForm {
    src: usize,
    store: bool,
    kind: Option<RangeKind>,
    rev: Option<bool>,
}

impl RangeForm {
    const ZRANGE: RangeForm = RangeForm {
        src: 1,
        store: false,
        kind: None,
        rev: None,
    };
    const STORE: RangeForm = RangeForm {
        src: 2,
        store: true,
        kind: None,
        rev: None,
    };
    const BY_SCORE: RangeForm = RangeForm::fixed(RangeKind::Score, false);
    const REV_BY_SCORE: RangeForm = RangeForm::fixed(RangeKind::Score, true);
    const BY_LEX: RangeForm = RangeForm::fixed(RangeKind::Lex, false);
    const REV_BY_LEX: RangeForm = RangeForm::fixed(RangeKind::Lex, true);
    const REV_RANK: RangeForm = RangeForm::fixed(RangeKind::Rank, true);

    const fn fixed(kind: RangeKind, rev: bool) -> RangeForm {
        RangeForm {
            src: 1,
            store: false,
            kind: Some(kind),
            rev: Some(rev),
        }
    }
}

/// A parsed range: its bounds, direction, LIMIT and WITHSCORES.
#[derive(Debug)]
enum Bounds {
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

#[derive(Debug)]
struct RangeQuery {
    bounds: Bounds,
    rev: bool,
    offset: i64,
    /// Negative: no limit.
    limit: i64,
    withscores: bool,
}

impl RangeQuery {
    /// Parses `<src> <min> <max> [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]` as
    /// `form` reads it, with Redis's errors.
    fn parse(args: &[Bytes], form: RangeForm) -> Result<RangeQuery, Frame> {
        let (mut kind, mut rev) = (form.kind, form.rev);
        let (mut offset, mut limit, mut withscores) = (0i64, -1i64, false);
        let mut j = form.src + 3;
        while j < args.len() {
            let a = &args[j];
            let left = args.len() - j - 1;
            if !form.store && eq(a, "withscores") {
                withscores = true;
            } else if eq(a, "limit") && left >= 2 {
                offset = int_arg(&args[j + 1])?;
                limit = int_arg(&args[j + 2])?;
                j += 2;
            } else if form.rev.is_none() && rev.is_none() && eq(a, "rev") {
                rev = Some(true);
            } else if form.kind.is_none() && kind.is_none() && eq(a, "bylex") {
                kind = Some(RangeKind::Lex);
            } else if form.kind.is_none() && kind.is_none() && eq(a, "byscore") {
                kind = Some(RangeKind::Score);
            } else {
                return Err(err(reply::SYNTAX));
            }
            j += 1;
        }
        let kind = kind.unwrap_or(RangeKind::Rank);
        let rev = rev.unwrap_or(false);
        if limit != -1 && kind == RangeKind::Rank {
            return Err(err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"));
        }
        if withscores && kind == RangeKind::Lex {
            return Err(err(
                "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
            ));
        }
        let (mut lo, mut hi) = (&args[form.src + 1], &args[form.src + 2]);
        if rev && kind != RangeKind::Rank {
            // Given as max, min.
            std::mem::swap(&mut lo, &mut hi);
        }
        let bounds = match kind {
            RangeKind::Rank => Bounds::Rank(int_arg(lo)?, int_arg(hi)?),
            RangeKind::Score => match (ScoreBound::parse(lo), ScoreBound::parse(hi)) {
                (Some(a), Some(b)) => Bounds::Score(a, b),
                _ => return Err(err(NOT_FLOAT_RANGE)),
            },
            RangeKind::Lex => match (LexBound::parse(lo), LexBound::parse(hi)) {
                (Some(a), Some(b)) => Bounds::Lex(a, b),
                _ => return Err(err(NOT_LEX_RANGE)),
            },
        };
        Ok(RangeQuery {
            bounds,
            rev,
            offset,
            limit,
            withscores,
        })
    }

    /// The members it selects from `z`, in the order it asks for.
    fn select(&self, z: &ZSet) -> Vec<(Bytes, f64)> {
        let len = z.len();
        if let Bounds::Lex(min, max) = &self.bounds {
            if !same_scores(z) {
                // Scores differ: the lex test is not monotone along the set, so a search
                // would answer by the set's shape (review finding: replay, with another
                // shape, removed other members). Take what it selects in set order instead.
                if self.offset < 0 {
                    return Vec::new();
                }
                let take = if self.limit < 0 {
                    usize::MAX
                } else {
                    self.limit as usize
                };
                return z
                    .iter_from(0, self.rev)
                    .filter(|(m, _)| !min.below(m) && max.within(m))
                    .skip(self.offset as usize)
                    .take(take)
                    .map(|(m, s)| (Bytes::copy_from_slice(m), s))
                    .collect();
            }
        }
        // Ascending positions [lo, hi), then LIMIT counted in the asked direction.
        let (lo, hi) = match &self.bounds {
            Bounds::Rank(start, stop) => {
                let Some((a, b)) = rank_range(*start, *stop, len) else {
                    return Vec::new();
                };
                // Ranks count in the asked direction already.
                let take = b - a + 1;
                return z
                    .iter_from(a, self.rev)
                    .take(take)
                    .map(|(m, s)| (Bytes::copy_from_slice(m), s))
                    .collect();
            }
            Bounds::Score(min, max) => (
                z.count_before(|s, _| min.below(s)),
                z.count_before(|s, _| max.within(s)),
            ),
            Bounds::Lex(min, max) => (
                z.count_before(|_, m| min.below(m)),
                z.count_before(|_, m| max.within(m)),
            ),
        };
        if hi <= lo || self.offset < 0 {
            return Vec::new();
        }
        let n = hi - lo;
        let offset = (self.offset as u64).min(n as u64) as usize;
        let take = if self.limit < 0 {
            n - offset
        } else {
            (self.limit as u64).min((n - offset) as u64) as usize
        };
        let start = if self.rev { len - hi } else { lo } + offset;
        z.iter_from(start, self.rev)
            .take(take)
            .map(|(m, s)| (Bytes::copy_from_slice(m), s))
            .collect()
    }
}

/// Whether every member of `z` has the same score (a lex range is then a search).
fn same_scores(z: &ZSet) -> bool {
    match (z.at(0), z.len().checked_sub(1).and_then(|l| z.at(l))) {
        (Some((_, a)), Some((_, b))) => a == b,
        _ => true,
    }
}

/// ZRANGE's `start stop` ranks over `len` members: the inclusive range, or `None` if empty.
fn rank_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let n = len as i64;
    let start = if start < 0 { n + start } else { start }.max(0);
    let stop = if stop < 0 { n + stop } else { stop }.min(n - 1);
    (n > 0 && start <= stop && start < n).then_some((start as usize, stop as usize))
}

/// How ZUNION/ZINTER aggregate a member's scores.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn apply(self, acc: &mut f64, v: f64) {
        match self {
            Aggregate::Sum => {
                *acc += v;
                // inf + -inf: Redis makes it 0.
                if acc.is_nan() {
                    *acc = 0.0;
                }
            }
            Aggregate::Min => *acc = acc.min(v),
            Aggregate::Max => *acc = acc.max(v),
        }
    }
}

/// The set algebra's options after its keys: `[WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX]
/// [WITHSCORES]` or, for ZINTERCARD, `[LIMIT n]`.
#[derive(Debug)]
pub struct Combine {
    op: SetOp,
    weights: Vec<f64>,
    aggregate: Aggregate,
    pub withscores: bool,
    /// ZINTERCARD's LIMIT (0: none).
    pub limit: usize,
}

/// What a set-algebra command reads: its keys' positions and options. `numkeys_at` is where
/// the key count is; `store` and `card` say which options it takes.
pub fn combine_args(
    args: &[Bytes],
    numkeys_at: usize,
    op: SetOp,
    store: bool,
    card: bool,
) -> Result<(std::ops::Range<usize>, Combine), Frame> {
    let name = std::str::from_utf8(&args[0])
        .unwrap_or("")
        .to_ascii_lowercase();
    let n = int_arg(&args[numkeys_at])?;
    if n < 1 {
        return Err(Frame::Error(format!(
            "ERR at least 1 input key is needed for '{name}' command"
        )));
    }
    if n as u64 > (args.len() - numkeys_at - 1) as u64 {
        return Err(err(reply::SYNTAX));
    }
    let n = n as usize;
    let keys = numkeys_at + 1..numkeys_at + 1 + n;
    let mut c = Combine {
        op,
        weights: vec![1.0; n],
        aggregate: Aggregate::Sum,
        withscores: false,
        limit: 0,
    };
    let mut j = keys.end;
    while j < args.len() {
        let left = args.len() - j;
        let a = &args[j];
        if op != SetOp::Diff && !card && left > n && eq(a, "weights") {
            for i in 0..n {
                c.weights[i] = parse_score(&args[j + 1 + i])
                    .ok_or_else(|| err("ERR weight value is not a float"))?;
            }
            j += 1 + n;
        } else if op != SetOp::Diff && !card && left >= 2 && eq(a, "aggregate") {
            let v = &args[j + 1];
            c.aggregate = if eq(v, "sum") {
                Aggregate::Sum
            } else if eq(v, "min") {
                Aggregate::Min
            } else if eq(v, "max") {
                Aggregate::Max
            } else {
                return Err(err(reply::SYNTAX));
            };
            j += 2;
        } else if !store && !card && eq(a, "withscores") {
            c.withscores = true;
            j += 1;
        } else if card && left >= 2 && eq(a, "limit") {
            c.limit = match parse_i64(&args[j + 1]) {
                Some(l) if l >= 0 => l as usize,
                // Redis words both the same (getPositiveLongFromObjectOrReply).
                _ => return Err(err("ERR LIMIT can't be negative")),
            };
            j += 2;
        } else {
            return Err(err(reply::SYNTAX));
        }
    }
    Ok((keys, c))
}

impl Combine {
    /// Combines each key's members and scores, in key order (`None`: no such key), into the
    /// result in (score, member) order.
    pub fn apply(&self, inputs: Vec<Option<Scored>>) -> Vec<(Bytes, f64)> {
        // Union and intersection go from the smallest input up, as Redis does: the order
        // scores are added in shows in the last bits of a sum (review finding).
        let mut inputs: Vec<(Option<Scored>, f64)> = inputs
            .into_iter()
            .zip(self.weights.iter().copied())
            .collect();
        if self.op != SetOp::Diff {
            inputs.sort_by_key(|(i, _)| i.as_ref().map_or(0, Vec::len));
        }
        let weighted = |v: f64, w: f64| {
            let s = v * w;
            if s.is_nan() {
                0.0
            } else {
                s
            }
        };
        let mut out: Vec<(Bytes, f64)> = match self.op {
            SetOp::Union => {
                let mut acc: indexmap::IndexMap<Bytes, f64> = indexmap::IndexMap::new();
                for (input, w) in inputs {
                    for (m, s) in input.into_iter().flatten() {
                        let s = weighted(s, w);
                        match acc.get_mut(&m) {
                            Some(a) => self.aggregate.apply(a, s),
                            None => {
                                acc.insert(m, s);
                            }
                        }
                    }
                }
                acc.into_iter().collect()
            }
            SetOp::Inter => {
                let mut iter = inputs.into_iter();
                let Some((Some(first), w0)) = iter.next() else {
                    return Vec::new();
                };
                let mut acc: Vec<(Bytes, f64)> = first
                    .into_iter()
                    .map(|(m, s)| (m, weighted(s, w0)))
                    .collect();
                for (input, w) in iter {
                    let Some(input) = input else {
                        return Vec::new();
                    };
                    let other: std::collections::HashMap<Bytes, f64> = input.into_iter().collect();
                    acc.retain_mut(|(m, a)| match other.get(m) {
                        Some(&s) => {
                            self.aggregate.apply(a, weighted(s, w));
                            true
                        }
                        None => false,
                    });
                }
                acc
            }
            SetOp::Diff => {
                let mut iter = inputs.into_iter().map(|(i, _)| i);
                let Some(Some(first)) = iter.next() else {
                    return Vec::new();
                };
                let mut gone = std::collections::HashSet::new();
                for input in iter.flatten() {
                    gone.extend(input.into_iter().map(|(m, _)| m));
                }
                first
                    .into_iter()
                    .filter(|(m, _)| !gone.contains(m))
                    .collect()
            }
        };
        out.sort_by(|a, b| {
            a.1.partial_cmp(&b.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.0.cmp(&b.0))
        });
        out
    }
}

/// ZMPOP's arguments: its keys, the end and the count (1 if not given).
pub fn zmpop_args(args: &[Bytes]) -> Result<(&[Bytes], ZEnd, usize), Frame> {
    let n = match parse_i64(&args[1]) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(err("ERR numkeys should be greater than 0")),
    };
    if n > args.len().saturating_sub(3) {
        return Err(err(reply::SYNTAX));
    }
    let keys = &args[2..2 + n];
    let end = if eq(&args[2 + n], "min") {
        ZEnd::Min
    } else if eq(&args[2 + n], "max") {
        ZEnd::Max
    } else {
        return Err(err(reply::SYNTAX));
    };
    let count = match &args[3 + n..] {
        [] => 1,
        [kw, c] if eq(kw, "count") => match parse_i64(c) {
            Some(c) if c > 0 => c as usize,
            _ => return Err(err("ERR count should be greater than 0")),
        },
        _ => return Err(err(reply::SYNTAX)),
    };
    Ok((keys, end, count))
}

/// ZMPOP's reply: the key, then each popped member and score as a pair.
pub fn zmpop_reply(key: Bytes, popped: Vec<(Bytes, f64)>) -> Frame {
    Frame::Array(vec![
        Frame::Bulk(key),
        Frame::Array(
            popped
                .into_iter()
                .map(|(m, s)| Frame::Array(vec![Frame::Bulk(m), Frame::Double(s)]))
                .collect(),
        ),
    ])
}

/// ZADD's flags.
#[derive(Default, Clone, Copy)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

impl Store {
    /// The sorted set at `key`: `Ok(None)` if there is none, WRONGTYPE if it holds another
    /// type.
    pub(super) fn zset_ref(&mut self, key: &[u8], now: u64) -> Result<Option<&ZSet>, Frame> {
        match self.ks.get(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::ZSet(z)) => Ok(Some(z)),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// Changes the sorted set at `key` (see `Store::collection_write`).
    fn zset_write<R>(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
        f: impl FnOnce(&mut ZSet, &crate::value::Encodings) -> R,
    ) -> Result<Option<R>, Frame> {
        self.collection_write(key, now, create, f)
    }

    /// The members and scores of the sorted set (or set: each member scores 1) at `key`,
    /// without changing anything: the read half of the set algebra, here and across shards.
    /// `Ok(None)`: no such key.
    pub fn zset_scores(&self, key: &[u8], now: u64) -> Result<Option<Scored>, Frame> {
        if self.type_at(key, now).is_none() {
            return Ok(None);
        }
        match self.ks.peek(key, now).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::ZSet(z)) => Ok(Some(
                z.iter_from(0, false)
                    .map(|(m, s)| (Bytes::copy_from_slice(m), s))
                    .collect(),
            )),
            Some(Value::Set(s)) => Ok(Some(s.members().into_iter().map(|m| (m, 1.0)).collect())),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    /// What ZRANGESTORE `args` selects from its source, without changing anything (the read
    /// half of a ZRANGESTORE across shards). An empty source selects nothing.
    pub fn zrange_source(&self, args: &[Bytes], now: u64) -> Result<Vec<(Bytes, f64)>, Frame> {
        let q = RangeQuery::parse(args, RangeForm::STORE)?;
        if self.type_at(&args[2], now).is_none() {
            return Ok(Vec::new());
        }
        match self.ks.peek(&args[2], now).map(|e| &e.value) {
            None => Ok(Vec::new()),
            Some(Value::ZSet(z)) => Ok(q.select(z)),
            Some(_) => Err(err(reply::WRONGTYPE)),
        }
    }

    pub(super) fn zadd(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let mut f = AddFlags::default();
        let mut i = 2;
        while i < args.len() {
            let a = &args[i];
            if eq(a, "nx") {
                f.nx = true;
            } else if eq(a, "xx") {
                f.xx = true;
            } else if eq(a, "gt") {
                f.gt = true;
            } else if eq(a, "lt") {
                f.lt = true;
            } else if eq(a, "ch") {
                f.ch = true;
            } else if eq(a, "incr") {
                f.incr = true;
            } else {
                break;
            }
            i += 1;
        }
        let pairs = &args[i..];
        if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
            return Err(err(reply::SYNTAX));
        }
        if f.nx && f.xx {
            return Err(err(
                "ERR XX and NX options at the same time are not compatible",
            ));
        }
        if (f.gt || f.lt) && f.nx || (f.gt && f.lt) {
            return Err(err(
                "ERR GT, LT, and/or NX options at the same time are not compatible",
            ));
        }
        if f.incr && pairs.len() > 2 {
            return Err(err(
                "ERR INCR option supports a single increment-element pair",
            ));
        }
        // Every score first: the command changes everything or nothing.
        let scores = pairs
            .chunks(2)
            .map(|p| float_arg(&p[0]))
            .collect::<Result<Vec<f64>, Frame>>()?;
        let exists = self.zset_ref(&args[1], now)?.is_some();
        if !exists && f.xx {
            return Ok(if f.incr {
                Frame::Null
            } else {
                Frame::Integer(0)
            });
        }
        if f.incr {
            let (member, incr) = (&pairs[1], scores[0]);
            let old = self.zset_ref(&args[1], now)?.and_then(|z| z.score(member));
            let new = match old {
                Some(_) if f.nx => return Ok(Frame::Null),
                None if f.xx => return Ok(Frame::Null),
                Some(o) => o + incr,
                None => incr,
            };
            if new.is_nan() {
                return Err(err(NAN_SCORE));
            }
            if let Some(o) = old {
                if (f.gt && new <= o) || (f.lt && new >= o) {
                    return Ok(Frame::Null);
                }
                if o == new {
                    // Nothing changes: nothing to log or announce, as in Redis.
                    return Ok(Frame::Double(new));
                }
            }
            self.zset_write(&args[1], now, true, |z, enc| z.insert(member, new, enc))?;
            // Its effect: the increment, whatever the flags were.
            self.log_derived(&[b"ZINCRBY", &args[1], &pairs[0], member]);
            return Ok(Frame::Double(new));
        }
        let (added, changed) = self
            .zset_write(&args[1], now, true, |z, enc| {
                let (mut added, mut changed) = (0i64, 0i64);
                let plain = !(f.nx || f.xx || f.gt || f.lt);
                for (p, &score) in pairs.chunks(2).zip(&scores) {
                    let member = &p[1];
                    if plain {
                        // No condition: one lookup, the insertion's own.
                        match z.insert(member, score, enc) {
                            None => added += 1,
                            Some(old) if old != score => changed += 1,
                            Some(_) => {}
                        }
                        continue;
                    }
                    match z.score(member) {
                        None if f.xx => {}
                        None => {
                            z.insert(member, score, enc);
                            added += 1;
                        }
                        Some(_) if f.nx => {}
                        Some(old) => {
                            let skip = (f.gt && score <= old) || (f.lt && score >= old);
                            if !skip && old != score {
                                z.insert(member, score, enc);
                                changed += 1;
                            }
                        }
                    }
                }
                (added, changed)
            })?
            .unwrap_or((0, 0));
        if added + changed > 0 {
            self.log_args(args);
        }
        Ok(Frame::Integer(if f.ch { added + changed } else { added }))
    }

    fn zincrby(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let incr = float_arg(&args[2])?;
        let member = &args[3];
        let old = self.zset_ref(&args[1], now)?.and_then(|z| z.score(member));
        let new = old.map_or(incr, |o| o + incr);
        if new.is_nan() {
            return Err(err(NAN_SCORE));
        }
        if old == Some(new) {
            return Ok(Frame::Double(new));
        }
        self.zset_write(&args[1], now, true, |z, enc| z.insert(member, new, enc))?;
        self.log_args(args);
        Ok(Frame::Double(new))
    }

    fn zrem(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let removed = self
            .zset_write(&args[1], now, false, |z, _| {
                args[2..].iter().filter(|m| z.remove(m).is_some()).count()
            })?
            .unwrap_or(0);
        if removed > 0 {
            self.log_args(args);
        }
        Ok(Frame::Integer(removed as i64))
    }

    fn zcount(&mut self, args: &[Bytes], now: u64, lex: bool) -> Result<Frame, Frame> {
        let bounds = if lex {
            match (LexBound::parse(&args[2]), LexBound::parse(&args[3])) {
                (Some(a), Some(b)) => Bounds::Lex(a, b),
                _ => return Err(err(NOT_LEX_RANGE)),
            }
        } else {
            match (ScoreBound::parse(&args[2]), ScoreBound::parse(&args[3])) {
                (Some(a), Some(b)) => Bounds::Score(a, b),
                _ => return Err(err(NOT_FLOAT_RANGE)),
            }
        };
        let Some(z) = self.zset_ref(&args[1], now)? else {
            return Ok(Frame::Integer(0));
        };
        let (lo, hi) = match &bounds {
            Bounds::Score(min, max) => (
                z.count_before(|s, _| min.below(s)),
                z.count_before(|s, _| max.within(s)),
            ),
            Bounds::Lex(min, max) if same_scores(z) => (
                z.count_before(|_, m| min.below(m)),
                z.count_before(|_, m| max.within(m)),
            ),
            Bounds::Lex(min, max) => (
                0,
                z.iter_from(0, false)
                    .filter(|(m, _)| !min.below(m) && max.within(m))
                    .count(),
            ),
            Bounds::Rank(..) => (0, 0),
        };
        Ok(Frame::Integer(hi.saturating_sub(lo) as i64))
    }

    fn zrank(&mut self, args: &[Bytes], now: u64, rev: bool) -> Result<Frame, Frame> {
        let withscore = match args.len() {
            3 => false,
            4 if eq(&args[3], "withscore") => true,
            4 => return Err(err(reply::SYNTAX)),
            _ => return Err(reply::wrong_arity(if rev { "zrevrank" } else { "zrank" })),
        };
        let missing = if withscore {
            Frame::NullArray
        } else {
            Frame::Null
        };
        let Some(z) = self.zset_ref(&args[1], now)? else {
            return Ok(missing);
        };
        let (Some(rank), Some(score)) = (z.rank(&args[2]), z.score(&args[2])) else {
            return Ok(missing);
        };
        let rank = if rev { z.len() - 1 - rank } else { rank } as i64;
        Ok(if withscore {
            Frame::Array(vec![Frame::Integer(rank), Frame::Double(score)])
        } else {
            Frame::Integer(rank)
        })
    }

    fn zrange(&mut self, args: &[Bytes], now: u64, form: RangeForm) -> Result<Frame, Frame> {
        let q = RangeQuery::parse(args, form)?;
        let Some(z) = self.zset_ref(&args[form.src], now)? else {
            return Ok(Frame::Array(Vec::new()));
        };
        Ok(members_reply(q.select(z), q.withscores))
    }

    fn zrangestore(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let q = RangeQuery::parse(args, RangeForm::STORE)?;
        let picked = match self.zset_ref(&args[2], now)? {
            Some(z) => q.select(z),
            None => Vec::new(),
        };
        self.replace_with(args, &args[1], picked, now)
    }

    /// Makes `dst` the sorted set of `items` (none: `dst` is deleted) and logs `args` if that
    /// changed anything: the *STORE commands' write.
    pub(super) fn replace_with(
        &mut self,
        args: &[Bytes],
        dst: &Bytes,
        items: Vec<(Bytes, f64)>,
        now: u64,
    ) -> Result<Frame, Frame> {
        let n = items.len();
        let existed = self.ks.contains(dst, now);
        self.ks.remove(dst);
        if n > 0 {
            self.zset_write(dst, now, true, |z, enc| {
                for (m, s) in &items {
                    z.insert(m, *s, enc);
                }
            })?;
        }
        if n > 0 || existed {
            self.log_args(args);
        }
        Ok(Frame::Integer(n as i64))
    }

    /// Pops up to `n` members from `end` of the sorted set at `key` (logs nothing).
    fn zpop_n(
        &mut self,
        key: &[u8],
        now: u64,
        end: ZEnd,
        n: usize,
    ) -> Result<Vec<(Bytes, f64)>, Frame> {
        Ok(self
            .zset_write(key, now, false, |z, _| {
                let mut out = Vec::with_capacity(n.min(z.len()));
                while out.len() < n {
                    let Some((m, s)) = z
                        .iter_from(0, end == ZEnd::Max)
                        .next()
                        .map(|(m, s)| (Bytes::copy_from_slice(m), s))
                    else {
                        break;
                    };
                    z.remove(&m);
                    out.push((m, s));
                }
                out
            })?
            .unwrap_or_default())
    }

    fn zpop(&mut self, args: &[Bytes], now: u64, end: ZEnd) -> Result<Frame, Frame> {
        if args.len() > 3 {
            return Err(err(reply::SYNTAX));
        }
        let count = match args.get(2) {
            None => None,
            Some(c) => match parse_i64(c) {
                Some(n) if n >= 0 => Some(n as usize),
                Some(_) => return Err(err("ERR value is out of range, must be positive")),
                None => return Err(err(reply::NOT_INTEGER)),
            },
        };
        if self.zset_ref(&args[1], now)?.is_none() || count == Some(0) {
            return Ok(Frame::Array(Vec::new()));
        }
        let popped = self.zpop_n(&args[1], now, end, count.unwrap_or(1))?;
        if !popped.is_empty() {
            self.log_args(args);
        }
        Ok(match count {
            Some(_) => members_reply(popped, true),
            None => Frame::Array(
                popped
                    .into_iter()
                    .flat_map(|(m, s)| [Frame::Bulk(m), Frame::Double(s)])
                    .collect(),
            ),
        })
    }

    /// A blocking sorted-set command, as ZMPOP (see `store/blocking.rs`): nil when there was
    /// nothing to take.
    fn zset_blocking(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let b = super::blocking::blocking_form(args)?;
        let reply = self.zmpop(&b.args, now)?;
        Ok(b.shape.apply(reply))
    }

    fn zmpop(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (keys, end, count) = zmpop_args(args)?;
        for key in keys {
            if self.zset_ref(key, now)?.is_some() {
                let popped = self.zpop_n(key, now, end, count)?;
                // Its effect: the pop of the key it took from.
                let count = count.to_string();
                self.log_derived(&[end.pop_command(), key, count.as_bytes()]);
                return Ok(zmpop_reply(key.clone(), popped));
            }
        }
        Ok(Frame::NullArray)
    }

    fn zrandmember(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        if args.len() > 4 {
            return Err(err(reply::SYNTAX));
        }
        let count = match args.get(2) {
            None => None,
            Some(c) => Some(int_arg(c)?),
        };
        let withscores = match args.get(3) {
            None => false,
            Some(a) if eq(a, "withscores") => true,
            Some(_) => return Err(err(reply::SYNTAX)),
        };
        if count.is_some_and(|c| c < 0 && c.unsigned_abs() > super::MAX_RANDOM_REPEATS) {
            return Err(err("ERR value is out of range"));
        }
        let mut seed = self.next_seed(now);
        let Some(z) = self.zset_ref(&args[1], now)? else {
            return Ok(if count.is_some() {
                Frame::Array(Vec::new())
            } else {
                Frame::Null
            });
        };
        let picks = super::random_picks(z.len(), count, &mut seed);
        let Some(_) = count else {
            return Ok(picks
                .first()
                .and_then(|&i| z.at(i))
                .map_or(Frame::Null, |(m, _)| member_frame(m)));
        };
        let all: Vec<(&[u8], f64)> = z.iter_from(0, false).collect();
        let items = picks
            .into_iter()
            .filter_map(|i| all.get(i))
            .map(|(m, s)| (Bytes::copy_from_slice(m), *s))
            .collect();
        Ok(members_reply(items, withscores))
    }

    fn zremrange(&mut self, args: &[Bytes], now: u64, kind: RangeKind) -> Result<Frame, Frame> {
        let bounds = match kind {
            RangeKind::Rank => Bounds::Rank(int_arg(&args[2])?, int_arg(&args[3])?),
            RangeKind::Score => match (ScoreBound::parse(&args[2]), ScoreBound::parse(&args[3])) {
                (Some(a), Some(b)) => Bounds::Score(a, b),
                _ => return Err(err(NOT_FLOAT_RANGE)),
            },
            RangeKind::Lex => match (LexBound::parse(&args[2]), LexBound::parse(&args[3])) {
                (Some(a), Some(b)) => Bounds::Lex(a, b),
                _ => return Err(err(NOT_LEX_RANGE)),
            },
        };
        let q = RangeQuery {
            bounds,
            rev: false,
            offset: 0,
            limit: -1,
            withscores: false,
        };
        let Some(z) = self.zset_ref(&args[1], now)? else {
            return Ok(Frame::Integer(0));
        };
        let gone = q.select(z);
        if gone.is_empty() {
            return Ok(Frame::Integer(0));
        }
        self.zset_write(&args[1], now, false, |z, _| {
            for (m, _) in &gone {
                z.remove(m);
            }
        })?;
        self.log_args(args);
        Ok(Frame::Integer(gone.len() as i64))
    }

    /// The inputs of the set algebra on this shard, each key's type checked first.
    fn zinputs(&mut self, keys: &[Bytes], now: u64) -> Result<Vec<Option<Scored>>, Frame> {
        // Lazy expiry first, as a read on this shard does.
        for k in keys {
            self.ks.get(k, now);
        }
        keys.iter().map(|k| self.zset_scores(k, now)).collect()
    }

    fn zcombined(&mut self, args: &[Bytes], now: u64, op: SetOp) -> Result<Frame, Frame> {
        let (keys, c) = combine_args(args, 1, op, false, false)?;
        let inputs = self.zinputs(&args[keys], now)?;
        Ok(members_reply(c.apply(inputs), c.withscores))
    }

    fn zintercard(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let (keys, c) = combine_args(args, 1, SetOp::Inter, false, true)?;
        let inputs = self.zinputs(&args[keys], now)?;
        let n = c.apply(inputs).len();
        Ok(Frame::Integer(
            if c.limit > 0 { n.min(c.limit) } else { n } as i64
        ))
    }

    fn zstore(&mut self, args: &[Bytes], now: u64, op: SetOp) -> Result<Frame, Frame> {
        let (keys, c) = combine_args(args, 2, op, true, false)?;
        let inputs = self.zinputs(&args[keys], now)?;
        let items = c.apply(inputs);
        self.replace_with(args, &args[1], items, now)
    }

    fn zscan(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let opts = scan_args(&args[2], &args[3..], false)?;
        let Some(z) = self.zset_ref(&args[1], now)? else {
            return Ok(super::scan_reply(0, Vec::new()));
        };
        let (positions, next) =
            super::scan_positions(z.slots(), z.is_compact(), opts.cursor, opts.count);
        let mut out = Vec::new();
        for (m, s) in z.in_slots(positions) {
            if opts.pattern.is_none_or(|p| crate::glob::glob_match(p, m)) {
                out.push(member_frame(m));
                out.push(Frame::Bulk(Bytes::from(format_score(s))));
            }
        }
        Ok(super::scan_reply(next, out))
    }
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
    fn range_arguments_as_redis_reads_them() {
        let q = RangeQuery::parse(
            &args("zrange k (1 +inf byscore limit 1 2 withscores"),
            RangeForm::ZRANGE,
        )
        .unwrap();
        assert!(
            matches!(q.bounds, Bounds::Score(a, b) if a.open && a.value == 1.0 && b.value == f64::INFINITY)
        );
        assert_eq!(
            (q.offset, q.limit, q.withscores, q.rev),
            (1, 2, true, false)
        );
        // REV takes max first.
        let q = RangeQuery::parse(&args("zrange k 5 1 byscore rev"), RangeForm::ZRANGE).unwrap();
        assert!(matches!(q.bounds, Bounds::Score(a, b) if a.value == 1.0 && b.value == 5.0));
        for (cmd, form) in [
            ("zrange k 0 1 limit 0 1", RangeForm::ZRANGE),
            ("zrange k [a [b bylex withscores", RangeForm::ZRANGE),
            ("zrangebyscore k 0 1 rev", RangeForm::BY_SCORE),
            ("zrangebyscore k 0 1 bylex", RangeForm::BY_SCORE),
            ("zrange k 0 1 byscore byscore", RangeForm::ZRANGE),
            ("zrangestore d k 0 1 withscores", RangeForm::STORE),
        ] {
            assert!(RangeQuery::parse(&args(cmd), form).is_err(), "{cmd}");
        }
        assert!(RangeQuery::parse(&args("zrange k nan 1 byscore"), RangeForm::ZRANGE).is_err());
        assert!(RangeQuery::parse(&args("zrange k a b bylex"), RangeForm::ZRANGE).is_err());
    }

    #[test]
    fn set_algebra_weights_and_aggregates() {
        let (keys, c) = combine_args(
            &args("zunion 2 a b weights 2 3 aggregate max withscores"),
            1,
            SetOp::Union,
            false,
            false,
        )
        .unwrap();
        assert_eq!(keys, 2..4);
        let a = vec![(Bytes::from("x"), 1.0), (Bytes::from("y"), 2.0)];
        let b = vec![(Bytes::from("y"), 1.0), (Bytes::from("z"), f64::INFINITY)];
        let out = c.apply(vec![Some(a.clone()), Some(b.clone())]);
        assert_eq!(
            out,
            vec![
                (Bytes::from("x"), 2.0),
                (Bytes::from("y"), 4.0),
                (Bytes::from("z"), f64::INFINITY)
            ]
        );
        let (_, c) = combine_args(
            &args("zinter 2 a b weights 1 -1"),
            1,
            SetOp::Inter,
            false,
            false,
        )
        .unwrap();
        // inf + -inf is NaN: Redis counts it 0.
        let out = c.apply(vec![Some(b.clone()), Some(b.clone())]);
        assert_eq!(out, vec![(Bytes::from("y"), 0.0), (Bytes::from("z"), 0.0)]);
        assert!(c.apply(vec![Some(a.clone()), None]).is_empty());
        // So is inf × 0.
        let (_, c) =
            combine_args(&args("zunion 1 a weights 0"), 1, SetOp::Union, false, false).unwrap();
        assert_eq!(
            c.apply(vec![Some(b.clone())]),
            vec![(Bytes::from("y"), 0.0), (Bytes::from("z"), 0.0)]
        );
        let (_, c) = combine_args(&args("zdiff 2 a b"), 1, SetOp::Diff, false, false).unwrap();
        assert_eq!(
            c.apply(vec![Some(a), Some(b)]),
            vec![(Bytes::from("x"), 1.0)]
        );
        for bad in [
            "zunion 0 a",
            "zunion 3 a b",
            "zunion 1 a weights x",
            "zdiff 1 a weights 1",
            "zunion 1 a aggregate avg",
        ] {
            assert!(
                combine_args(&args(bad), 1, SetOp::Union.min_for(bad), false, false).is_err(),
                "{bad}"
            );
        }
    }

    impl SetOp {
        fn min_for(self, cmd: &str) -> SetOp {
            if cmd.starts_with("zdiff") {
                SetOp::Diff
            } else {
                self
            }
        }
    }
}
