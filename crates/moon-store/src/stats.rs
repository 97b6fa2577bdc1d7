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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub calls: u64,
    pub usec: u64,
    pub rejected: u64,
    pub failed: u64,
}

impl Stat {
    fn add(&mut self, other: &Stat) {
        self.calls += other.calls;
        self.usec += other.usec;
        self.rejected += other.rejected;
        self.failed += other.failed;
    }
}

/// Commands whose figures Redis keeps per subcommand (`cmdstat_config|get`).
const CONTAINERS: [&str; 15] = [
    "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
    "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

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
}

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
            .map(|(name, s)| (name.to_string(), *s))
            .chain(t.by_subcommand.iter().map(|(n, s)| (n.clone(), *s)))
            .collect()
    })
}

/// Adds `more` (another shard's [`snapshot`]) into `into`, by name, sorted.
pub fn merge(into: &mut std::collections::BTreeMap<String, Stat>, more: &[(String, Stat)]) {
    for (name, s) in more {
        into.entry(name.clone()).or_default().add(s);
    }
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
        assert_eq!(
            all["set"],
            Stat {
                calls: 2,
                usec: 7,
                rejected: 1,
                failed: 1
            }
        );
        assert_eq!(all["xgroup|createconsumer"].failed, 1);
        reset();
        assert!(snapshot().is_empty());
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
