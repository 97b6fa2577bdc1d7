//! The slow log (SLOWLOG): the commands that took longer than `slowlog-log-slower-than`
//! microseconds, newest first, as Redis keeps them.
//!
//! Each shard's thread keeps the entries of the commands it ran in a thread-local ring of
//! at most `slowlog-max-len` entries; ids come from one process-wide counter, so SLOWLOG GET
//! can merge the shards' rings by id into one newest-first list and cut it to the same
//! length. A command is looked at where it ran and was timed: in a store (`moon-shard`'s
//! `run_cmds`, for the calls a client sent) or on its connection (`moon-server`). The check
//! on the hot path is one relaxed atomic load and a comparison.
//!
//! An entry names its client as Redis does (address and name when it ran). A store does not
//! know its callers, so connections register here ([`register`], [`rename`], [`forget`]) and
//! an entry made in a store looks its client up; only slow commands pay for that lookup.
//! Secrets never reach the log: passwords of AUTH, HELLO, MIGRATE, ACL SETUSER and sensitive
//! CONFIG SET values are replaced with `(redacted)`, as Redis does. This module never reads
//! the clock: callers pass the time.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

/// `slowlog-log-slower-than` in microseconds; negative: nothing is logged.
static SLOWER_THAN: AtomicI64 = AtomicI64::new(10_000);
/// `slowlog-max-len`.
static MAX_LEN: AtomicUsize = AtomicUsize::new(128);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Arguments kept per entry (the last one says how many more there were), and bytes kept
/// per argument (Redis's `SLOWLOG_ENTRY_MAX_ARGC` / `_MAX_STRING`).
const MAX_ARGS: usize = 32;
const MAX_ARG_BYTES: usize = 128;

/// One logged command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    /// Unix time in seconds when it ran.
    pub time: u64,
    pub usec: u64,
    pub args: Vec<Bytes>,
    pub addr: String,
    pub name: String,
}

thread_local! {
    static RING: RefCell<VecDeque<Entry>> = const { RefCell::new(VecDeque::new()) };
}

/// Who is connected: client id → (address, name), for entries made in a store.
fn clients() -> &'static Mutex<HashMap<u64, (String, String)>> {
    static CLIENTS: std::sync::OnceLock<Mutex<HashMap<u64, (String, String)>>> =
        std::sync::OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

/// `slowlog-log-slower-than`.
pub fn set_slower_than(usec: i64) {
    SLOWER_THAN.store(usec, Ordering::Relaxed);
}

/// `slowlog-max-len`.
pub fn set_max_len(entries: usize) {
    MAX_LEN.store(entries, Ordering::Relaxed);
}

/// Whether a command that took `usec` goes to the log.
#[inline]
pub fn is_slow(usec: u64) -> bool {
    let limit = SLOWER_THAN.load(Ordering::Relaxed);
    limit >= 0 && usec >= limit as u64
}

/// A connection opened.
pub fn register(client: u64, addr: &str) {
    if let Ok(mut c) = clients().lock() {
        c.insert(client, (addr.to_string(), String::new()));
    }
}

/// CLIENT SETNAME (or a RESET clearing it).
pub fn rename(client: u64, name: &str) {
    if let Ok(mut c) = clients().lock() {
        if let Some(e) = c.get_mut(&client) {
            e.1 = name.to_string();
        }
    }
}

/// A connection closed.
pub fn forget(client: u64) {
    if let Ok(mut c) = clients().lock() {
        c.remove(&client);
    }
}

/// Logs a command `client` sent (`args`, its name first) that ran for `usec` at Unix time
/// `time`; call it when [`is_slow`]. `who`: its address and name when the caller knows them
/// (a connection), else looked up.
pub fn push(args: &[Bytes], usec: u64, time: u64, client: u64, who: Option<(&str, &str)>) {
    let (addr, name) = match who {
        Some((a, n)) => (a.to_string(), n.to_string()),
        None => clients()
            .lock()
            .ok()
            .and_then(|c| c.get(&client).cloned())
            .unwrap_or_default(),
    };
    let entry = Entry {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        time,
        usec,
        args: kept_args(args),
        addr,
        name,
    };
    let max = MAX_LEN.load(Ordering::Relaxed);
    RING.with(|r| {
        let mut r = r.borrow_mut();
        r.push_front(entry);
        r.truncate(max);
    });
}

/// This thread's entries, newest first, at most `slowlog-max-len` of them.
pub fn entries() -> Vec<Entry> {
    let max = MAX_LEN.load(Ordering::Relaxed);
    RING.with(|r| r.borrow().iter().take(max).cloned().collect())
}

/// SLOWLOG RESET on this thread.
pub fn reset() {
    RING.with(|r| r.borrow_mut().clear());
}

/// Every shard's [`entries`] as one list, newest first, cut to `slowlog-max-len`.
pub fn merge(per_shard: Vec<Vec<Entry>>) -> Vec<Entry> {
    let mut all: Vec<Entry> = per_shard.into_iter().flatten().collect();
    all.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
    all.truncate(MAX_LEN.load(Ordering::Relaxed));
    all
}

fn kept_args(args: &[Bytes]) -> Vec<Bytes> {
    let redacted = redacted_positions(args);
    let shown = if args.len() > MAX_ARGS {
        MAX_ARGS - 1
    } else {
        args.len()
    };
    let mut out: Vec<Bytes> = args[..shown]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if redacted.contains(&i) {
                Bytes::from_static(b"(redacted)")
            } else if a.len() > MAX_ARG_BYTES {
                let mut t = a[..MAX_ARG_BYTES].to_vec();
                t.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_BYTES).as_bytes(),
                );
                Bytes::from(t)
            } else {
                a.clone()
            }
        })
        .collect();
    if shown < args.len() {
        out.push(Bytes::from(format!(
            "... ({} more arguments)",
            args.len() - shown
        )));
    }
    out
}

/// Which arguments hold secrets.
pub(crate) fn redacted_positions(args: &[Bytes]) -> Vec<usize> {
    let is = |i: usize, w: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(w.as_bytes()))
    };
    let mut out = Vec::new();
    if is(0, "auth") {
        out.extend(1..args.len());
    } else if is(0, "acl") && is(1, "setuser") {
        out.extend(2..args.len());
    } else if is(0, "config") && is(1, "set") {
        const SENSITIVE: [&str; 5] = [
            "masterauth",
            "masteruser",
            "requirepass",
            "tls-key-file-pass",
            "tls-client-key-file-pass",
        ];
        let mut i = 2;
        while i + 1 < args.len() {
            if SENSITIVE.iter().any(|s| is(i, s)) {
                out.push(i + 1);
            }
            i += 2;
        }
    } else if is(0, "hello") || is(0, "migrate") {
        for i in 1..args.len() {
            if is(i, "auth") {
                let n = if is(0, "hello") { 2 } else { 1 };
                out.extend((i + 1..=i + n).filter(|&j| j < args.len()));
            } else if is(0, "migrate") && is(i, "auth2") {
                out.extend((i + 1..=i + 2).filter(|&j| j < args.len()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn shown(s: &str) -> String {
        kept_args(&words(s))
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn secrets_are_redacted_as_redis_redacts_them() {
        assert_eq!(shown("AUTH user pw"), "AUTH (redacted) (redacted)");
        assert_eq!(
            shown("acl setuser bob on >pw"),
            "acl setuser (redacted) (redacted) (redacted)"
        );
        assert_eq!(
            shown("config set masterauth x maxmemory 1"),
            "config set masterauth (redacted) maxmemory 1"
        );
        assert_eq!(
            shown("HELLO 3 AUTH u p SETNAME n"),
            "HELLO 3 AUTH (redacted) (redacted) SETNAME n"
        );
        assert_eq!(
            shown("migrate h 1 k 9 5000 AUTH2 u p"),
            "migrate h 1 k 9 5000 AUTH2 (redacted) (redacted)"
        );
        assert_eq!(
            shown("migrate h 1 k 9 5000 AUTH p"),
            "migrate h 1 k 9 5000 AUTH (redacted)"
        );
    }

    #[test]
    fn long_commands_are_trimmed() {
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let kept = kept_args(&words(&format!("sadd s {}", many.join(" "))));
        assert_eq!(kept.len(), MAX_ARGS);
        assert_eq!(kept[MAX_ARGS - 1], "... (11 more arguments)");
        let long = "A".repeat(129);
        let kept = kept_args(&words(&format!("set k {long}")));
        assert_eq!(kept[2], format!("{}... (1 more bytes)", "A".repeat(128)));
    }
}
