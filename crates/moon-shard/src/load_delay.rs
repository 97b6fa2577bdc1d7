//! `key-load-delay`: microseconds waited after each record or key replayed (0 = none), so
//! that a test can watch a load in progress (Redis's hidden knob of the same name). A leaf:
//! the base loader and the log replay both wait here.

use std::sync::atomic::{AtomicU64, Ordering};

static KEY_LOAD_DELAY_US: AtomicU64 = AtomicU64::new(0);

/// Sets the wait (CONFIG SET key-load-delay, and at startup).
pub fn set_key_load_delay(us: u64) {
    KEY_LOAD_DELAY_US.store(us, Ordering::Relaxed);
}

/// Waits `key-load-delay` (one load when it is 0, the normal case).
pub(crate) fn wait() {
    let us = KEY_LOAD_DELAY_US.load(Ordering::Relaxed);
    if us > 0 {
        std::thread::sleep(std::time::Duration::from_micros(us));
    }
}
