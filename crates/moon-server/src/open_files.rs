//! The open-files limit and `maxclients`: each client is a descriptor, beside those the server
//! needs itself (logs, listeners, io_uring, the shards' channels). Raised as Redis raises it,
//! at startup and when CONFIG SET asks for more clients.

/// Descriptors kept for what is not a client: logs, listeners, each executor's rings and
/// eventfds (Redis keeps 32; Moon adds some per shard).
pub(crate) fn reserved(shards: usize) -> u64 {
    32 + 8 * shards as u64
}

/// Raises the open-files limit to fit `maxclients` clients beside the descriptors the server
/// needs itself. `Ok(None)`: it already fits; `Ok(Some((before, now)))`: raised;
/// `Err((allowed, clients))`: the system allows only `allowed` descriptors, room for
/// `clients` clients.
pub(crate) fn raise(maxclients: u64, shards: usize) -> Result<Option<(u64, u64)>, (u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let reserved = reserved(shards);
    let wanted = maxclients.saturating_add(reserved);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(None);
    };
    if soft >= wanted {
        return Ok(None);
    }
    // Up to the hard limit without privileges; past it only root may go.
    let mut got = soft;
    for target in [wanted, wanted.min(hard)] {
        if target > got && setrlimit(Resource::RLIMIT_NOFILE, target, hard.max(target)).is_ok() {
            got = target;
            break;
        }
    }
    if got >= wanted {
        return Ok(Some((soft, got)));
    }
    Err((got, got.saturating_sub(reserved).max(1)))
}
