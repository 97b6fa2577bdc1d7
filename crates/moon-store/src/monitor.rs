//! MONITOR: every command the server runs, from every shard, as a line for each client in
//! MONITOR mode (`+<unix time> [<db> <client address>] "cmd" "arg" ...`, Redis's format).
//!
//! Commands are fed where they run — a connection's requests by its connection loop, a
//! script's `redis.call`s by the script host (as `lua`) — into one process-wide list of
//! [`Feed`]s, each a monitor's queue that its own connection drains. While nobody monitors,
//! feeding costs one relaxed atomic load. A monitor that does not read is bounded like any
//! client: past [`MAX_PENDING`] bytes waiting its feed is closed and its connection ends
//! (a line always fits a monitor that has read everything). Secrets are shown as
//! `(redacted)`, as in the slow log; an argument past 64 KiB by its start. This module never reads the clock:
//! callers pass the time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};

/// Output a monitor may leave unread before it is disconnected (32 MiB, the pub/sub class's
/// hard limit by default).
pub const MAX_PENDING: usize = 32 << 20;

/// Bytes of one argument shown in a line (Moon's bound: Redis shows every byte).
const MAX_ARG: usize = 64 << 10;

static MONITORS: AtomicUsize = AtomicUsize::new(0);

fn feeds() -> &'static Mutex<Vec<Arc<Feed>>> {
    static FEEDS: std::sync::OnceLock<Mutex<Vec<Arc<Feed>>>> = std::sync::OnceLock::new();
    FEEDS.get_or_init(Default::default)
}

/// One monitor's queue of lines.
#[derive(Default)]
pub struct Feed {
    pending: Mutex<BytesMut>,
    waker: Mutex<Option<Waker>>,
    closed: AtomicBool,
}

impl Feed {
    /// Resolves once there are lines to write (or the feed was closed).
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            let has = self.pending.lock().map_or(true, |p| !p.is_empty());
            if has || self.is_closed() {
                return Poll::Ready(());
            }
            if let Ok(mut w) = self.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            // A line may have come between the look and the waker's registration.
            if self.pending.lock().map_or(true, |p| !p.is_empty()) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }

    /// Moves the waiting lines to the end of `out`.
    pub fn drain_into(&self, out: &mut BytesMut) {
        if let Ok(mut p) = self.pending.lock() {
            out.extend_from_slice(&p);
            p.clear();
        }
    }

    /// The monitor fell [`MAX_PENDING`] behind: its connection must close.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn push(&self, line: &[u8]) {
        if self.is_closed() {
            return;
        }
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        // A line always fits a monitor that has read everything; past that, the limit.
        if !p.is_empty() && p.len() + line.len() > MAX_PENDING {
            self.closed.store(true, Ordering::Release);
            *p = BytesMut::new();
        } else {
            p.extend_from_slice(line);
        }
        drop(p);
        if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }
}

/// A client enters MONITOR mode: its feed.
pub fn start() -> Arc<Feed> {
    let feed = Arc::new(Feed::default());
    if let Ok(mut f) = feeds().lock() {
        f.push(feed.clone());
        MONITORS.store(f.len(), Ordering::Release);
    }
    feed
}

/// A monitor left.
pub fn stop(feed: &Arc<Feed>) {
    if let Ok(mut f) = feeds().lock() {
        f.retain(|other| !Arc::ptr_eq(other, feed));
        MONITORS.store(f.len(), Ordering::Release);
    }
}

/// Whether anyone monitors (one relaxed load: check it before building anything to feed).
#[inline]
pub fn active() -> bool {
    MONITORS.load(Ordering::Relaxed) != 0
}

/// Feeds one command (`args`, its name first) that ran in database `db` for `who` (a client
/// address, or `lua`) at `micros` since the epoch, to every monitor.
pub fn feed(micros: u64, db: usize, who: &str, args: &[Bytes]) {
    if !active() {
        return;
    }
    let line = line(micros, db, who, args);
    let Ok(f) = feeds().lock() else {
        return;
    };
    for feed in f.iter() {
        feed.push(&line);
    }
}

/// `+1733300000.123456 [0 127.0.0.1:6379] "SET" "k" "v"` (a status line, arguments quoted
/// and escaped as Redis's `sdscatrepr` does).
fn line(micros: u64, db: usize, who: &str, args: &[Bytes]) -> Vec<u8> {
    let mut out = format!(
        "+{}.{:06} [{db} {who}]",
        micros / 1_000_000,
        micros % 1_000_000
    )
    .into_bytes();
    let redacted = crate::slowlog::redacted_positions(args);
    for (i, a) in args.iter().enumerate() {
        out.push(b' ');
        if redacted.contains(&i) {
            out.extend_from_slice(b"\"(redacted)\"");
        } else if a.len() > MAX_ARG {
            // A huge value is shown by its start (a line quotes every byte, up to 4 each).
            quote(&mut out, &a[..MAX_ARG]);
            out.extend_from_slice(format!("... ({} more bytes)", a.len() - MAX_ARG).as_bytes());
        } else {
            quote(&mut out, a);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn quote(out: &mut Vec<u8>, a: &[u8]) {
    out.push(b'"');
    for &b in a {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            b if b.is_ascii_graphic() || b == b' ' => out.push(b),
            b => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<Bytes> {
        s.iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn lines_are_redis_s_quoted_and_redacted() {
        let l = line(
            1_700_000_000_000_042,
            3,
            "lua",
            &words(&["set", "k\"\n", "\u{1}v"]),
        );
        assert_eq!(
            String::from_utf8(l).unwrap(),
            "+1700000000.000042 [3 lua] \"set\" \"k\\\"\\n\" \"\\x01v\"\r\n"
        );
        let l = line(0, 0, "a", &words(&["AUTH", "user", "pw"]));
        assert!(String::from_utf8(l)
            .unwrap()
            .ends_with("\"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"));
    }

    #[test]
    fn a_monitor_that_does_not_read_is_closed_not_grown() {
        let monitor = start();
        // One huge command is shown by its start, and closes nobody.
        let huge = Bytes::from(vec![b'x'; 40 << 20]);
        feed(0, 0, "c", &[Bytes::from_static(b"SET"), huge]);
        assert!(!monitor.is_closed());
        let mut out = BytesMut::new();
        monitor.drain_into(&mut out);
        assert!(out.len() < MAX_ARG + 100);
        assert!(String::from_utf8_lossy(&out)
            .contains(&format!("... ({} more bytes)", (40 << 20) - MAX_ARG)));
        let big = Bytes::from(vec![b'x'; MAX_ARG]);
        for _ in 0..(MAX_PENDING / MAX_ARG) + 1 {
            feed(0, 0, "c", &[Bytes::from_static(b"SET"), big.clone()]);
        }
        assert!(monitor.is_closed());
        let mut out = BytesMut::new();
        monitor.drain_into(&mut out);
        assert!(out.is_empty());
        stop(&monitor);
        assert!(!active());
    }
}
