//! Freeing big values off the shard's executor (Redis's lazy free).
//!
//! Dropping a hash or set of millions of members takes as long as building it did: seconds in
//! which the shard answers nobody. A value removed from the keyspace is already gone for every
//! client (and its deletion logged), so what remains — giving its memory back — can happen on
//! a background thread: [`dispose`] hands a value whose freeing is expensive (more than
//! [`LAZYFREE_THRESHOLD`] allocations, Redis's measure) to the one `moon-lazyfree` thread when
//! the removal's cause asks for it, and drops anything small at once.
//!
//! Which removals are lazy: `UNLINK` and `FLUSHALL`/`FLUSHDB ASYNC` always; the others as
//! Redis's `lazyfree-lazy-*` options say ([`set_policy`], process-wide like the config):
//! `eviction`, `expire`, `server-del` (a value replaced or overwritten by a command), `user-del`
//! (`DEL` as `UNLINK`), `user-flush` (`FLUSHALL`/`FLUSHDB` without a mode as `ASYNC`).
//! Nothing here changes what any client sees or what the log holds: only when memory returns.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;

use crate::value::Value;

/// Values whose freeing touches more allocations than this go to the background thread.
pub const LAZYFREE_THRESHOLD: usize = 64;

/// Why a value leaves the keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// UNLINK, FLUSHALL/FLUSHDB ASYNC: always lazy.
    Async,
    Eviction,
    Expire,
    /// Replaced by a write (SET over a big hash, RENAME onto an existing key).
    ServerDel,
    /// DEL.
    UserDel,
    /// FLUSHALL/FLUSHDB without ASYNC/SYNC.
    UserFlush,
    /// FLUSHALL/FLUSHDB SYNC: never lazy.
    Sync,
}

/// The `lazyfree-lazy-*` options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub eviction: bool,
    pub expire: bool,
    pub server_del: bool,
    pub user_del: bool,
    pub user_flush: bool,
}

static POLICY: AtomicU8 = AtomicU8::new(0);
static PENDING: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

const EVICTION: u8 = 1;
const EXPIRE: u8 = 2;
const SERVER_DEL: u8 = 4;
const USER_DEL: u8 = 8;
const USER_FLUSH: u8 = 16;

/// Sets the `lazyfree-lazy-*` options for every shard.
pub fn set_policy(p: Policy) {
    let bits = [
        (p.eviction, EVICTION),
        (p.expire, EXPIRE),
        (p.server_del, SERVER_DEL),
        (p.user_del, USER_DEL),
        (p.user_flush, USER_FLUSH),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit);
    POLICY.store(bits, Ordering::Relaxed);
}

/// Whether a removal for `cause` frees in the background.
pub fn is_lazy(cause: Cause) -> bool {
    let bit = match cause {
        Cause::Async => return true,
        Cause::Sync => return false,
        Cause::Eviction => EVICTION,
        Cause::Expire => EXPIRE,
        Cause::ServerDel => SERVER_DEL,
        Cause::UserDel => USER_DEL,
        Cause::UserFlush => USER_FLUSH,
    };
    POLICY.load(Ordering::Relaxed) & bit != 0
}

/// (objects waiting for the background thread, objects it freed): INFO's
/// `lazyfree_pending_objects` and `lazyfreed_objects`.
pub fn stats() -> (u64, u64) {
    (
        PENDING.load(Ordering::Relaxed),
        FREED.load(Ordering::Relaxed),
    )
}

/// CONFIG RESETSTAT: `lazyfreed_objects` back to 0 (pending objects are not statistics).
pub fn reset_stats() {
    FREED.store(0, Ordering::Relaxed);
}

/// How many allocations freeing `value` touches (Redis's "free effort"): one for a string or
/// a compact collection, one per member or field of a table.
pub fn free_effort(value: &Value) -> usize {
    match value {
        Value::Str(_) => 1,
        Value::Hash(h) if h.is_compact() => 1,
        Value::Hash(h) => h.len(),
        Value::Set(s) if s.is_compact() => 1,
        Value::Set(s) => s.len(),
        Value::List(l) => l.len(),
        Value::ZSet(z) if z.is_compact() => 1,
        Value::ZSet(z) => z.len(),
        Value::Stream(st) => st.len() as usize,
    }
}

/// Frees a value removed from the keyspace: in the background if `cause` is lazy and the
/// value is big, here otherwise.
pub fn dispose(value: Value, cause: Cause) {
    if free_effort(&value) > LAZYFREE_THRESHOLD && is_lazy(cause) {
        send(Box::new(value));
    }
}

/// Frees a whole keyspace of `keys` keys (a flush): in the background whenever `cause` is lazy
/// and there is anything, as Redis's `emptyDbAsync` — a few keys may hold millions of members.
pub fn dispose_all<T: Send + 'static>(garbage: T, keys: usize, cause: Cause) {
    if keys > 0 && is_lazy(cause) {
        send(Box::new(garbage));
    }
}

type Garbage = Box<dyn Send>;

static FREER: OnceLock<Option<mpsc::Sender<Garbage>>> = OnceLock::new();

/// Starts the background thread now, from the calling thread — the server calls it from its
/// main thread before the shards start, so the thread does not inherit a shard's CPU
/// pinning (a thread started later would, from whichever shard freed something first).
pub fn start() {
    freer();
}

fn freer() -> &'static Option<mpsc::Sender<Garbage>> {
    FREER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Garbage>();
        std::thread::Builder::new()
            .name("moon-lazyfree".into())
            .spawn(move || {
                for g in rx {
                    drop(g);
                    PENDING.fetch_sub(1, Ordering::Relaxed);
                    FREED.fetch_add(1, Ordering::Relaxed);
                }
            })
            .ok()
            .map(|_| tx)
    })
}

fn send(garbage: Garbage) {
    let freer = freer();
    PENDING.fetch_add(1, Ordering::Relaxed);
    match freer {
        Some(tx) => {
            if let Err(mpsc::SendError(g)) = tx.send(garbage) {
                PENDING.fetch_sub(1, Ordering::Relaxed);
                drop(g);
            }
        }
        // No thread could be started: free here, as without lazy free.
        None => {
            PENDING.fetch_sub(1, Ordering::Relaxed);
            drop(garbage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Encodings, Set};

    #[test]
    fn big_values_go_to_the_background_when_their_cause_is_lazy() {
        let enc = Encodings::default();
        let mut s = Set::default();
        for i in 0..1000 {
            s.insert(format!("m{i}").as_bytes(), &enc);
        }
        let big = Value::Set(s);
        assert_eq!(free_effort(&big), 1000);
        assert_eq!(
            free_effort(&Value::Str(crate::value::Str::copy_from(b"x"))),
            1
        );
        assert!(is_lazy(Cause::Async) && !is_lazy(Cause::Sync));
        set_policy(Policy {
            user_del: true,
            ..Policy::default()
        });
        assert!(is_lazy(Cause::UserDel) && !is_lazy(Cause::Expire));
        let before = stats().1;
        dispose(big, Cause::UserDel);
        let start = std::time::Instant::now();
        while stats().1 == before && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::yield_now();
        }
        // At least one: another test of this process may have a value freed in the
        // background meanwhile (the counter and the policy are process-wide; CI saw 137
        // against 136).
        assert!(stats().1 > before, "freed by the background thread");
        set_policy(Policy::default());
    }
}
