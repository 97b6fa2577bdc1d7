//! `maxmemory`: how much a shard's keyspace may hold, and which keys make room when a write
//! needs it.
//!
//! Memory is the keyspace's own account of what it holds ([`crate::Keyspace::used_memory`]:
//! keys, values and a fixed per-key overhead), not the allocator's figure: it is exact and
//! deterministic, it moves with every insert and removal, and it needs no allocator hooks.
//! To it is added each shard's even share of the read and write buffers of every client
//! connection ([`client_buffers`]), as Redis counts its clients' buffers in `used_memory`: a
//! client that sends a huge pipeline takes room from the keys, and INFO says where memory went.
//!
//! Before a command that may grow memory (`denyoom` in the command table) runs over the limit,
//! the store removes keys chosen by the policy until it is under again, or answers Redis's OOM
//! error if the policy allows nothing more to go (`noeviction`, the durable default, or a
//! `volatile-*` policy with no key that has a TTL). An evicted key reaches the log as a `DEL`
//! at the place it was removed, exactly like an expired one, so replay never evicts anything
//! by itself and stays exact.

/// Bytes every client connection holds in its buffers, server-wide.
static CLIENT_BUFFERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A connection now holds `after` bytes of buffers (it held `before`). Callers report only
/// changes (most requests change nothing): one shared counter, rarely written.
pub fn client_buffers_changed(before: usize, after: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    if after > before {
        CLIENT_BUFFERS.fetch_add(after - before, Relaxed);
    } else if before > after {
        CLIENT_BUFFERS.fetch_sub(before - after, Relaxed);
    }
}

/// Bytes client connections hold in their buffers, server-wide (INFO's `mem_clients_normal`).
/// Each of `shards` shards counts an even share against its share of `maxmemory`, as the
/// limit is shared: where a connection happens to be served does not decide whose keys go.
pub fn client_buffers(shards: usize) -> usize {
    CLIENT_BUFFERS.load(std::sync::atomic::Ordering::Relaxed) / shards.max(1)
}

/// How many clients asked CLIENT NO-TOUCH: while none has, a command pays one load.
static NO_TOUCH_CLIENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn no_touch_set() -> &'static std::sync::Mutex<std::collections::HashSet<u64>> {
    static SET: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u64>>> =
        std::sync::OnceLock::new();
    SET.get_or_init(Default::default)
}

/// CLIENT NO-TOUCH ON|OFF for `client` (OFF also when it disconnects).
pub fn set_no_touch(client: u64, on: bool) {
    if let Ok(mut set) = no_touch_set().lock() {
        let changed = if on {
            set.insert(client)
        } else {
            set.remove(&client)
        };
        if changed {
            NO_TOUCH_CLIENTS.store(set.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Whether `client`'s commands leave LRU/LFU alone.
pub fn is_no_touch(client: u64) -> bool {
    client != 0
        && NO_TOUCH_CLIENTS.load(std::sync::atomic::Ordering::Relaxed) > 0
        && no_touch_set().lock().is_ok_and(|s| s.contains(&client))
}

/// Which keys may be removed to make room (Redis's `maxmemory-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Nothing is removed: writes are refused with an OOM error.
    #[default]
    NoEviction,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    /// The key with a TTL whose deadline is nearest.
    VolatileTtl,
}

impl EvictionPolicy {
    pub const ALL: [EvictionPolicy; 8] = [
        EvictionPolicy::NoEviction,
        EvictionPolicy::AllKeysLru,
        EvictionPolicy::AllKeysLfu,
        EvictionPolicy::AllKeysRandom,
        EvictionPolicy::VolatileLru,
        EvictionPolicy::VolatileLfu,
        EvictionPolicy::VolatileRandom,
        EvictionPolicy::VolatileTtl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllKeysLru => "allkeys-lru",
            EvictionPolicy::AllKeysLfu => "allkeys-lfu",
            EvictionPolicy::AllKeysRandom => "allkeys-random",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::VolatileLfu => "volatile-lfu",
            EvictionPolicy::VolatileRandom => "volatile-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }

    pub fn parse(name: &str) -> Option<EvictionPolicy> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether only keys with a TTL may go.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru
                | EvictionPolicy::VolatileLfu
                | EvictionPolicy::VolatileRandom
                | EvictionPolicy::VolatileTtl
        )
    }
}

/// A shard's share of `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes; 0 = no limit.
    pub max: usize,
    pub policy: EvictionPolicy,
    /// `maxmemory-samples`: keys looked at to choose one (LRU, LFU).
    pub samples: usize,
}

impl Default for MemoryLimit {
    fn default() -> Self {
        MemoryLimit {
            max: 0,
            policy: EvictionPolicy::NoEviction,
            samples: 5,
        }
    }
}

/// Redis's logarithmic access counter (8 bits): each access increments it with probability
/// 1 / ((counter - 5) * factor + 1), so it saturates only after about a million accesses.
pub fn lfu_increment(counter: u8, random: u64) -> u8 {
    const LOG_FACTOR: f64 = 10.0;
    const INIT: u8 = 5;
    if counter == u8::MAX {
        return counter;
    }
    let base = f64::from(counter.saturating_sub(INIT));
    let p = 1.0 / (base * LOG_FACTOR + 1.0);
    let r = (random >> 11) as f64 / (1u64 << 53) as f64;
    if r < p {
        counter + 1
    } else {
        counter
    }
}

/// The counter after `idle_ms` without access: one less per minute (`lfu-decay-time 1`).
pub fn lfu_decayed(counter: u8, idle_ms: u64) -> u8 {
    counter.saturating_sub((idle_ms / 60_000).min(255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_by_name() {
        for p in EvictionPolicy::ALL {
            assert_eq!(EvictionPolicy::parse(p.as_str()), Some(p));
            assert_eq!(EvictionPolicy::parse(&p.as_str().to_uppercase()), Some(p));
        }
        assert_eq!(EvictionPolicy::parse("lru"), None);
    }

    #[test]
    fn lfu_counter_grows_slower_as_it_grows() {
        let mut seed = 1u64;
        let mut counter = 5u8;
        for _ in 0..1000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            counter = lfu_increment(counter, seed);
        }
        assert!(
            (10..40).contains(&counter),
            "counter {counter} after 1000 hits"
        );
        assert_eq!(lfu_decayed(20, 3 * 60_000), 17);
        assert_eq!(lfu_decayed(2, 10 * 60_000), 0);
    }
}
