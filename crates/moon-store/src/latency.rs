//! The latency monitor (LATENCY LATEST / HISTORY / RESET / GRAPH / DOCTOR): events that took
//! at least `latency-monitor-threshold` milliseconds, by name — `command` and
//! `fast-command` (a slow command), `expire-cycle` (active expiry), `aof-rewrite` — each
//! with its last 160 samples (one per second, the worst of that second) and its worst ever.
//!
//! Rare by construction (only what passed the threshold is recorded), so one process-wide
//! table behind a lock; the check on the hot path is one relaxed load and a comparison, and
//! with the threshold at 0 (the default, as in Redis) nothing is recorded. Callers measure
//! and pass the time (this crate never reads the clock).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// `latency-monitor-threshold` in milliseconds; 0 = off.
static THRESHOLD_MS: AtomicU64 = AtomicU64::new(0);

/// Samples kept per event (Redis's `LATENCY_TS_LEN`).
const SAMPLES: usize = 160;

/// The events Moon records, as LATENCY names them.
pub const EVENTS: [&str; 4] = ["command", "fast-command", "expire-cycle", "aof-rewrite"];

#[derive(Default)]
struct Series {
    /// (Unix time in seconds, milliseconds), oldest first.
    samples: VecDeque<(u64, u64)>,
    max: u64,
}

fn table() -> &'static Mutex<BTreeMap<&'static str, Series>> {
    static TABLE: std::sync::OnceLock<Mutex<BTreeMap<&'static str, Series>>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// `latency-monitor-threshold`.
pub fn set_threshold(ms: u64) {
    THRESHOLD_MS.store(ms, Ordering::Relaxed);
}

/// Whether something that took `ms` is an event.
#[inline]
pub fn is_event(ms: u64) -> bool {
    let t = THRESHOLD_MS.load(Ordering::Relaxed);
    t != 0 && ms >= t
}

/// Records `event` (one of [`EVENTS`]) that took `ms` at Unix time `secs`, if it is an event.
pub fn sample(event: &'static str, ms: u64, secs: u64) {
    if !is_event(ms) {
        return;
    }
    let Ok(mut t) = table().lock() else { return };
    let s = t.entry(event).or_default();
    s.max = s.max.max(ms);
    match s.samples.back_mut() {
        Some(last) if last.0 == secs => last.1 = last.1.max(ms),
        _ => {
            s.samples.push_back((secs, ms));
            if s.samples.len() > SAMPLES {
                s.samples.pop_front();
            }
        }
    }
}

/// LATENCY LATEST: each event's (name, time of its last sample, that sample, worst ever).
pub fn latest() -> Vec<(&'static str, u64, u64, u64)> {
    let Ok(t) = table().lock() else {
        return Vec::new();
    };
    t.iter()
        .filter_map(|(name, s)| s.samples.back().map(|&(time, ms)| (*name, time, ms, s.max)))
        .collect()
}

/// LATENCY HISTORY: an event's samples, oldest first (none for an unknown name).
pub fn history(event: &str) -> Vec<(u64, u64)> {
    let Ok(t) = table().lock() else {
        return Vec::new();
    };
    t.get(event)
        .map(|s| s.samples.iter().copied().collect())
        .unwrap_or_default()
}

/// LATENCY RESET: forgets the named events (all with none named); how many it forgot.
pub fn reset(events: &[&[u8]]) -> usize {
    let Ok(mut t) = table().lock() else { return 0 };
    if events.is_empty() {
        let n = t.len();
        t.clear();
        return n;
    }
    let mut n = 0;
    for e in events {
        let key = t.keys().copied().find(|k| k.as_bytes() == *e);
        if let Some(k) = key {
            t.remove(k);
            n += 1;
        }
    }
    n
}

/// LATENCY GRAPH: an event's samples as a text chart (newest on the right), or `None` when it
/// has none.
pub fn graph(event: &str, now_secs: u64) -> Option<String> {
    let samples = history(event);
    if samples.is_empty() {
        return None;
    }
    let max = samples.iter().map(|s| s.1).max().unwrap_or(1).max(1);
    let min = samples.iter().map(|s| s.1).min().unwrap_or(0);
    const ROWS: u64 = 4;
    let mut out = format!("{event} - high {max} ms, low {min} ms (all time high {max} ms)\n");
    out.push_str(&"-".repeat(80));
    out.push('\n');
    for row in (1..=ROWS).rev() {
        let level = max * row / ROWS;
        let line: String = samples
            .iter()
            .map(|s| if s.1 >= level { '#' } else { ' ' })
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    // How long ago each sample was, in seconds, under its column (the last digit).
    let ages: String = samples
        .iter()
        .map(|s| {
            let age = now_secs.saturating_sub(s.0);
            char::from(b'0' + (age % 10) as u8)
        })
        .collect();
    out.push_str(&ages);
    out.push_str("\n(seconds ago, last digit)\n");
    Some(out)
}

/// LATENCY DOCTOR: a short report in words.
pub fn doctor() -> String {
    let events = latest();
    let threshold = THRESHOLD_MS.load(Ordering::Relaxed);
    if threshold == 0 {
        return "The latency monitor is off (latency-monitor-threshold 0): nothing was measured. \
CONFIG SET latency-monitor-threshold <milliseconds> turns it on.\n"
            .into();
    }
    if events.is_empty() {
        return format!(
            "No event took {threshold} ms or more since the monitor was last reset: nothing to report.\n"
        );
    }
    let mut out = format!("Events that took {threshold} ms or more:\n\n");
    for (i, (name, _, latest, max)) in events.iter().enumerate() {
        let n = history(name).len();
        let advice = match *name {
            "command" | "fast-command" => {
                "slow commands: see SLOWLOG GET for which, and INFO commandstats for how often"
            }
            "expire-cycle" => {
                "active expiry freed large keys at once: lazyfree-lazy-expire yes frees them off the shard"
            }
            "aof-rewrite" => "a rewrite's pause: its shards' keyspaces were large",
            _ => "",
        };
        out.push_str(&format!(
            "{}. {name}: {n} samples, latest {latest} ms, worst {max} ms — {advice}.\n",
            i + 1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_past_the_threshold_are_kept_one_per_second() {
        set_threshold(0);
        sample("command", 500, 1);
        assert!(latest().is_empty(), "off at 0");
        set_threshold(100);
        sample("command", 50, 1);
        assert!(latest().is_empty(), "under the threshold");
        sample("command", 150, 10);
        sample("command", 300, 10);
        sample("command", 200, 11);
        assert_eq!(history("command"), [(10, 300), (11, 200)]);
        assert_eq!(latest(), [("command", 11, 200, 300)]);
        assert!(graph("command", 12).is_some());
        assert!(graph("nothing", 12).is_none());
        assert!(doctor().contains("command"));
        assert_eq!(reset(&[b"nope"]), 0);
        assert_eq!(reset(&[]), 1);
        assert!(latest().is_empty());
        for i in 0..200 {
            sample("expire-cycle", 100, i);
        }
        assert_eq!(history("expire-cycle").len(), SAMPLES);
        reset(&[]);
        set_threshold(0);
    }
}
