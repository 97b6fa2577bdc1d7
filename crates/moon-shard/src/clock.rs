//! The one clock of the shards: Unix time in milliseconds. Commands get it as an argument
//! (`moon-store` never reads a clock); a cross-shard transaction reads it once for all its
//! steps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (1 if the system clock is before 1970: never 0, which means "no
/// deadline" throughout).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}
