//! What each command cost on this thread's shard, for INFO commandstats: calls, time,
//! rejections and failures, counted the way Redis counts them.
//!
//! A shard's thread runs commands in two places — in its store (`moon-shard`'s `run_cmds`,
//! and a script's `redis.call`s) and on its own connections (`moon-server`) — and both count
//! them here, in one thread-local table: nothing is shared, so the hot path takes no lock and
//! no atomic. INFO gathers every shard's table with a fan-out call and adds them up; CONFIG
//! RESETSTAT clears them.
//!
//! The words are Redis's: a *rejected* call was refused before it ran (wrong arity, NOAUTH,
//! an ACL denial, OOM, MISCONF, BUSY) and is not a call; a *failed* call ran and answered an
//! error. This module never reads the clock (the crate's rule): callers measure and pass the
//! time a call took.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;

use crate::command::CommandSpec;

/// One command's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub calls: u64,
    pub usec: u64,
    pub rejected: u64,
    pub failed: u64,
    /// How long its calls took (INFO latencystats, LATENCY HISTOGRAM).
    pub latency: Histogram,
}

impl Stat {
    fn add(&mut self, other: &Stat) {
        self.calls += other.calls;
        self.usec += other.usec;
        self.rejected += other.rejected;
        self.failed += other.failed;
        self.latency.add(&other.latency);
    }
}

/// Buckets of a [`Histogram`]: 0-15 µs exactly, then 8 per power of two (each about 12% wide)
/// up to 2^64 µs.
const BUCKETS: usize = 16 + 60 * 8;

/// Call durations in microseconds, log-linear: recording is a few shifts and one increment,
/// the memory (4 KiB) is taken at a command's first call, and any percentile is known within
/// 12.5%.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram(Option<Box<[u64; BUCKETS]>>);

impl Histogram {
    fn bucket(usec: u64) -> usize {
        if usec < 16 {
            return usec as usize;
        }
        let e = 63 - usec.leading_zeros() as usize; // 4..=63
        16 + (e - 4) * 8 + ((usec >> (e - 3)) & 7) as usize
    }

    /// The largest duration bucket `i` holds.
    fn upper(i: usize) -> u64 {
        if i < 16 {
            return i as u64;
        }
        let (e, sub) = ((i - 16) / 8 + 4, ((i - 16) % 8) as u64);
        let low = (1u64 << e) + (sub << (e - 3));
        low.saturating_add((1u64 << (e - 3)) - 1)
    }

    pub fn record(&mut self, usec: u64) {
        self.0.get_or_insert_with(|| Box::new([0; BUCKETS]))[Self::bucket(usec)] += 1;
    }

    fn add(&mut self, other: &Histogram) {
        if let Some(o) = &other.0 {
            let mine = self.0.get_or_insert_with(|| Box::new([0; BUCKETS]));
            for (m, o) in mine.iter_mut().zip(o.iter()) {
                *m += o;
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.iter().sum())
    }

    /// The duration at percentile `p` (0-100), in microseconds: the largest value of the
    /// bucket that holds it (as HdrHistogram reports the highest equivalent value).
    pub fn percentile(&self, p: f64) -> u64 {
        let Some(counts) = &self.0 else { return 0 };
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i);
            }
        }
        Self::upper(BUCKETS - 1)
    }

    /// LATENCY HISTOGRAM's buckets: for each power of two microseconds `b` (1, 2, 4...) up to
    /// which calls were made, the number of calls that took at most `b` (cumulative), only
    /// where that number grew — Redis's log iteration of its histogram.
    pub fn powers_of_two(&self) -> Vec<(u64, u64)> {
        let Some(counts) = &self.0 else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let (mut cumulative, mut reported, mut i) = (0u64, 0u64, 0usize);
        let total: u64 = counts.iter().sum();
        for shift in 0..64 {
            // Bucket `bound` holds the calls that took up to `bound` µs.
            let bound = 1u64 << shift;
            while i < BUCKETS && Self::upper(i) <= bound {
                cumulative += counts[i];
                i += 1;
            }
            if cumulative > reported {
                out.push((bound, cumulative));
                reported = cumulative;
            }
            if reported == total {
                break;
            }
        }
        out
    }
}

/// Commands whose figures Redis keeps per subcommand (`cmdstat_config|get`).
const CONTAINERS: [&str; 15] = [
    "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
    "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

/// Whether Redis reports `name`'s calls per subcommand (`client|list`).
pub fn is_container(name: &str) -> bool {
    CONTAINERS.contains(&name)
}

/// Distinct `container|subcommand` names kept: a client that sends made-up subcommands
/// cannot grow the table past this (further ones count under the container's name).
const MAX_SUBCOMMANDS: usize = 256;

/// Hashes a spec's address: one multiplication (the table is on every command's path).
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        let x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

type ByAddress = std::hash::BuildHasherDefault<AddressHasher>;

#[derive(Default)]
struct Table {
    /// By the spec's address: one hash of a word, no string compared on the hot path.
    by_spec: HashMap<usize, (&'static str, Stat), ByAddress>,
    by_subcommand: HashMap<String, Stat>,
    /// Error replies that scripts' commands got, by code: Redis counts an error in errorstats
    /// where it happens, also inside a script that catches it (`redis.pcall`). The server adds
    /// these to the errors its connections were sent.
    script_errors: std::collections::BTreeMap<String, u64>,
}

/// Distinct error codes kept (Redis's `ERRORSTATS_LIMIT`): past it a new code is counted in
/// the total only, under no code.
pub const ERROR_CODES: usize = 128;

impl Table {
    fn entry(&mut self, spec: &'static CommandSpec, args: &[Bytes]) -> &mut Stat {
        if args.len() > 1 && CONTAINERS.contains(&spec.name) {
            if let Some(sub) = args.get(1).and_then(|s| subcommand_name(spec.name, s)) {
                if self.by_subcommand.len() < MAX_SUBCOMMANDS
                    || self.by_subcommand.contains_key(&sub)
                {
                    return self.by_subcommand.entry(sub).or_default();
                }
            }
        }
        let key = spec as *const CommandSpec as usize;
        &mut self
            .by_spec
            .entry(key)
            .or_insert((spec.name, Stat::default()))
            .1
    }
}

/// `container|subcommand`, lower case, when the subcommand looks like one (a short word).
fn subcommand_name(container: &str, sub: &[u8]) -> Option<String> {
    let word = !sub.is_empty()
        && sub.len() <= 32
        && sub
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    word.then(|| {
        let mut name = String::with_capacity(container.len() + 1 + sub.len());
        name.push_str(container);
        name.push('|');
        name.extend(sub.iter().map(|b| b.to_ascii_lowercase() as char));
        name
    })
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// `spec` ran (`args` as sent, its name first) for `usec` microseconds; `failed`: it answered
/// an error.
pub fn called(spec: &'static CommandSpec, args: &[Bytes], usec: u64, failed: bool) {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let s = t.entry(spec, args);
        s.calls += 1;
        s.usec += usec;
        s.failed += u64::from(failed);
        s.latency.record(usec);
    });
}

/// `spec` was refused before it ran.
pub fn rejected(spec: &'static CommandSpec, args: &[Bytes]) {
    TABLE.with(|t| t.borrow_mut().entry(spec, args).rejected += 1);
}

/// This thread's figures by command name (`config|get` for a subcommand).
pub fn snapshot() -> Vec<(String, Stat)> {
    TABLE.with(|t| {
        let t = t.borrow();
        t.by_spec
            .values()
            .map(|(name, s)| (name.to_string(), s.clone()))
            .chain(t.by_subcommand.iter().map(|(n, s)| (n.clone(), s.clone())))
            .collect()
    })
}

/// Adds `more` (another shard's [`snapshot`]) into `into`, by name, sorted.
pub fn merge(into: &mut std::collections::BTreeMap<String, Stat>, more: &[(String, Stat)]) {
    for (name, s) in more {
        into.entry(name.clone()).or_default().add(s);
    }
}

/// A connection command a script's `redis.call` ran (PING, ECHO, TIME, SELECT, PUBLISH,
/// MEMORY USAGE: answered by the script's step, not by a keyspace row), counted under its name
/// as the server counts a client's. Anything else (an unknown command) is not counted.
pub fn script_connection_call(args: &[Bytes], failed: bool) {
    let Some(first) = args.first() else {
        return;
    };
    let usage = args
        .get(1)
        .is_some_and(|a| a.eq_ignore_ascii_case(b"usage"));
    // No allocation for the name: a script may call these in a loop.
    let name = ["ping", "echo", "time", "select", "publish"]
        .into_iter()
        .find(|n| first.eq_ignore_ascii_case(n.as_bytes()))
        .or_else(|| (usage && first.eq_ignore_ascii_case(b"memory")).then_some("memory|usage"));
    let Some(name) = name else {
        return;
    };
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let s = match t.by_subcommand.get_mut(name) {
            Some(s) => s,
            None => t.by_subcommand.entry(name.to_string()).or_default(),
        };
        s.calls += 1;
        s.failed += u64::from(failed);
    });
}

/// An error reply's code: its first word (`ERR`, `WRONGTYPE`, `NOSCRIPT`...), looked for in
/// its first 32 bytes as Redis does; `ERR` when there is none there (a script's error text is
/// the client's: it must not become an unbounded key).
pub fn error_code(text: &str) -> &str {
    let head = &text.as_bytes()[..text.len().min(32)];
    match head.iter().position(|&b| b == b' ') {
        Some(n) if n > 0 => &text[..n],
        _ => "ERR",
    }
}

/// A script's command got the error `text` (`+1`), or the script's own reply is that error
/// and the server counts it when it sends it (`-1`: the one counted here is taken back).
pub fn script_error(text: &str, delta: i64) {
    TABLE.with(|t| {
        let errors = &mut t.borrow_mut().script_errors;
        let code = error_code(text);
        let code = if errors.contains_key(code) || errors.len() < ERROR_CODES {
            code
        } else {
            ""
        };
        let n = errors.entry(code.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
    });
}

/// This thread's [`script_error`] counts by code ("": codes past [`ERROR_CODES`]).
pub fn script_errors() -> Vec<(String, u64)> {
    TABLE.with(|t| {
        let t = t.borrow();
        t.script_errors
            .iter()
            .filter(|&(_, &n)| n > 0)
            .map(|(c, &n)| (c.clone(), n))
            .collect()
    })
}

/// CONFIG RESETSTAT on this thread.
pub fn reset() {
    TABLE.with(|t| *t.borrow_mut() = Table::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> &'static CommandSpec {
        crate::table::lookup(name.as_bytes())
            .map(|row| &row.spec)
            .expect("a keyspace command")
    }

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn calls_rejections_and_failures_add_up_by_command() {
        reset();
        called(spec("set"), &args(&["SET", "k", "v"]), 3, false);
        called(spec("set"), &args(&["SET", "k", "v"]), 4, true);
        rejected(spec("set"), &args(&["SET", "k"]));
        called(
            spec("xgroup"),
            &args(&["XGROUP", "CREATECONSUMER"]),
            1,
            true,
        );
        let all: std::collections::BTreeMap<_, _> = snapshot().into_iter().collect();
        let set = &all["set"];
        assert_eq!(
            (set.calls, set.usec, set.rejected, set.failed),
            (2, 7, 1, 1)
        );
        assert_eq!(set.latency.count(), 2);
        assert_eq!(all["xgroup|createconsumer"].failed, 1);
        reset();
        assert!(snapshot().is_empty());
    }

    #[test]
    fn histogram_percentiles_and_power_of_two_buckets() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50.0), 0);
        for usec in [1, 1, 3, 100, 1000] {
            h.record(usec);
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.percentile(50.0), 3);
        let p99 = h.percentile(99.0);
        assert!((1000..=1000 + 1000 / 8).contains(&p99), "{p99}");
        // Cumulative at 1, 4, 128, 1024 µs.
        assert_eq!(h.powers_of_two(), [(1, 2), (4, 3), (128, 4), (1024, 5)]);
        // Every bucket's bounds follow each other.
        for i in 1..BUCKETS {
            assert_eq!(Histogram::bucket(Histogram::upper(i - 1) + 1), i, "{i}");
            assert_eq!(Histogram::bucket(Histogram::upper(i)), i, "{i}");
        }
    }

    #[test]
    fn made_up_subcommands_cannot_grow_the_table_without_bound() {
        reset();
        for i in 0..1000 {
            called(
                spec("xinfo"),
                &args(&["XINFO", &format!("sub{i}")]),
                0,
                true,
            );
        }
        called(spec("xinfo"), &args(&["XINFO", "bad word"]), 0, true);
        let all = snapshot();
        assert_eq!(all.len(), MAX_SUBCOMMANDS + 1);
        let parent = all.iter().find(|(n, _)| n == "xinfo").expect("xinfo");
        assert_eq!(parent.1.calls, 1000 - MAX_SUBCOMMANDS as u64 + 1);
        reset();
    }
}
