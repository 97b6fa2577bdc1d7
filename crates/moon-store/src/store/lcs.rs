//! LCS: the longest common subsequence of two strings (LEN, IDX, MINMATCHLEN, WITHMATCHLEN),
//! by Redis's dynamic programming over a table of `(len a + 1) × (len b + 1)` lengths, bounded
//! by `proto-max-bulk-len` as Redis bounds it. A read: it logs nothing.

use bytes::Bytes;
use moon_proto::Frame;

use super::{either, eq, parse_i64, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::reply::{self, err};

/// The LCS row (both keys on one shard, or the transaction that holds them).
pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(String: "lcs", -3, R, keys(1, 2, 1), COORDINATED, |s, a, now| either(s.lcs(a, now))),
];

/// What LCS answers when a key holds another type than a string.
pub const NOT_STRINGS: &str = "ERR The specified keys must contain string values";

impl Store {
    fn lcs(&mut self, args: &[Bytes], now: u64) -> Result<Frame, Frame> {
        let strings = (self.get_str(&args[1], now), self.get_str(&args[2], now));
        let (Ok(a), Ok(b)) = strings else {
            return Err(err(NOT_STRINGS));
        };
        lcs_reply(
            &a.unwrap_or_default(),
            &b.unwrap_or_default(),
            args,
            self.max_string_len,
        )
    }
}

/// LCS of the strings `a` and `b` (missing keys are empty), as `args` (the command) asks;
/// `max_len` is `proto-max-bulk-len`. Also the server's, for keys on two shards.
pub fn lcs_reply(a: &[u8], b: &[u8], args: &[Bytes], max_len: usize) -> Result<Frame, Frame> {
    {
        let (mut len_only, mut idx, mut with_len, mut min_len) = (false, false, false, 0i64);
        let mut j = 3;
        while j < args.len() {
            let o = &args[j];
            if eq(o, "idx") {
                idx = true;
            } else if eq(o, "len") {
                len_only = true;
            } else if eq(o, "withmatchlen") {
                with_len = true;
            } else if eq(o, "minmatchlen") && j + 1 < args.len() {
                min_len = parse_i64(&args[j + 1])
                    .ok_or_else(|| err(reply::NOT_INTEGER))?
                    .max(0);
                j += 1;
            } else {
                return Err(err(reply::SYNTAX));
            }
            j += 1;
        }
        if len_only && idx {
            return Err(err(
                "ERR If you want both the length and indexes, please just use IDX.",
            ));
        }
        let (al, bl) = (a.len(), b.len());
        let cells = (al as u64 + 1).saturating_mul(bl as u64 + 1);
        if cells.saturating_mul(4) > max_len as u64 {
            return Err(err(
                "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
            ));
        }
        let w = bl + 1;
        let mut t = vec![0u32; cells as usize];
        for i in 1..=al {
            for k in 1..=bl {
                t[i * w + k] = if a[i - 1] == b[k - 1] {
                    t[(i - 1) * w + k - 1] + 1
                } else {
                    t[(i - 1) * w + k].max(t[i * w + k - 1])
                };
            }
        }
        let total = t[al * w + bl] as usize;
        if len_only {
            return Ok(Frame::Integer(total as i64));
        }
        // Walk back from the end, collecting the subsequence and, for IDX, the ranges where
        // both strings match contiguously (Redis's order: from the end).
        let mut out = vec![0u8; total];
        let mut at = total;
        let mut matches = Vec::new();
        let mut range: Option<(usize, usize, usize, usize)> = None; // a_start a_end b_start b_end
        let (mut i, mut k) = (al, bl);
        while i > 0 && k > 0 {
            let mut emit = false;
            if a[i - 1] == b[k - 1] {
                out[at - 1] = a[i - 1];
                at -= 1;
                match &mut range {
                    None => range = Some((i - 1, i - 1, k - 1, k - 1)),
                    Some(r) if r.0 == i && r.2 == k => {
                        r.0 -= 1;
                        r.2 -= 1;
                    }
                    Some(_) => emit = true,
                }
                if range.is_some_and(|r| r.0 == 0 || r.2 == 0) {
                    emit = true;
                }
                i -= 1;
                k -= 1;
            } else {
                if t[(i - 1) * w + k] > t[i * w + k - 1] {
                    i -= 1;
                } else {
                    k -= 1;
                }
                if range.is_some() {
                    emit = true;
                }
            }
            if emit {
                if let Some((a0, a1, b0, b1)) = range.take() {
                    let len = a1 - a0 + 1;
                    if min_len == 0 || len as i64 >= min_len {
                        let mut m = vec![
                            Frame::Array(vec![
                                Frame::Integer(a0 as i64),
                                Frame::Integer(a1 as i64),
                            ]),
                            Frame::Array(vec![
                                Frame::Integer(b0 as i64),
                                Frame::Integer(b1 as i64),
                            ]),
                        ];
                        if with_len {
                            m.push(Frame::Integer(len as i64));
                        }
                        matches.push(Frame::Array(m));
                    }
                }
            }
        }
        if idx {
            return Ok(Frame::Map(vec![
                (Frame::bulk("matches"), Frame::Array(matches)),
                (Frame::bulk("len"), Frame::Integer(total as i64)),
            ]));
        }
        Ok(Frame::Bulk(Bytes::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut Store, words: &str) -> Frame {
        let args: Vec<Bytes> = words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        s.execute(&args, 1)
    }

    /// Redis's documented example.
    #[test]
    fn lcs_as_documented() {
        let mut s = Store::default();
        run(&mut s, "MSET key1 ohmytext key2 mynewtext");
        assert_eq!(run(&mut s, "LCS key1 key2"), Frame::bulk("mytext"));
        assert_eq!(run(&mut s, "LCS key1 key2 LEN"), Frame::Integer(6));
        let pair = |a: i64, b: i64| Frame::Array(vec![Frame::Integer(a), Frame::Integer(b)]);
        assert_eq!(
            run(&mut s, "LCS key1 key2 IDX MINMATCHLEN 4 WITHMATCHLEN"),
            Frame::Map(vec![
                (
                    Frame::bulk("matches"),
                    Frame::Array(vec![Frame::Array(vec![
                        pair(4, 7),
                        pair(5, 8),
                        Frame::Integer(4)
                    ])])
                ),
                (Frame::bulk("len"), Frame::Integer(6)),
            ])
        );
        assert_eq!(
            run(&mut s, "LCS key1 key2 IDX"),
            Frame::Map(vec![
                (
                    Frame::bulk("matches"),
                    Frame::Array(vec![
                        Frame::Array(vec![pair(4, 7), pair(5, 8)]),
                        Frame::Array(vec![pair(2, 3), pair(0, 1)]),
                    ])
                ),
                (Frame::bulk("len"), Frame::Integer(6)),
            ])
        );
        assert!(matches!(
            run(&mut s, "LCS key1 key2 LEN IDX"),
            Frame::StaticError(_)
        ));
    }
}
