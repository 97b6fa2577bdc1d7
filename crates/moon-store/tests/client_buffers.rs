//! The clients' buffers are one process-wide counter that connections change from any thread
//! while a shard reports its memory. INFO and MEMORY STATS subtract the clients' share from
//! `used_memory`: the two must come from one reading of the counter (a second, higher reading
//! made `used - clients` underflow and brought a replica down during INFO). A test binary of
//! its own: the counter is shared with every test in a process.

use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn used_memory_holds_the_client_buffers_it_reports() {
    let store = moon_store::Store::default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                moon_store::evict::client_buffers_changed(0, 1 << 20);
                moon_store::evict::client_buffers_changed(1 << 20, 0);
            }
        });
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..200_000 {
                let st = store.stats();
                assert!(
                    st.used_memory >= st.client_buffers,
                    "used {} < clients {}",
                    st.used_memory,
                    st.client_buffers
                );
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(failed) = checked {
            std::panic::resume_unwind(failed);
        }
    });
}
