//! Recovery measured side by side (issue 28): process start to the first PONG, for
//!
//! - a log of `writes` SETs (redis-benchmark, 1M distinct keys, 32-byte values): Moon replays
//!   its per-shard logs, Redis its AOF (no RDB preamble);
//! - a rewritten dataset of `keys` keys of every common type (`bench_rdb::fill`): Moon after
//!   BGREWRITEAOF (each shard's base an RDB file, the incr empty), Redis loading the
//!   `dump.rdb` SAVE wrote.
//!
//! Per row: the bytes on disk, MB/s and keys/s (per shard for Moon), the peak RSS of the
//! process while it recovered (`VmHWM`, read right after the first PONG: nothing else has run
//! yet), and Redis's time over Moon's. Rounds alternate the servers; medians are reported.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::targets::{median, start, wait_pong, Target};

/// Peak resident memory of `pid` so far, in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    crate::targets::status_kb(pid, "VmHWM")
}

/// One restart: seconds to PONG and peak RSS in kB.
struct Restart {
    secs: f64,
    peak_kb: u64,
}

fn restart(
    target: Target,
    bin: &Path,
    fsync: Option<&str>,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<Restart> {
    let started = Instant::now();
    let (running, addr) = start(target, bin, fsync, dir, log)?;
    let t = wait_pong(addr, Duration::from_secs(900))?.max(started.elapsed());
    let peak_kb = peak_rss_kb(running.pid());
    running.stop();
    Ok(Restart {
        secs: t.as_secs_f64(),
        peak_kb,
    })
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

/// Writes `writes` SETs to `target`'s directory (everysec) and stops it.
fn write_log(
    target: Target,
    bin: &Path,
    dir: &Path,
    log: &Path,
    writes: u64,
) -> anyhow::Result<()> {
    let (running, addr) = start(target, bin, Some("everysec"), dir, log)?;
    let status = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-c", "50", "-n", &writes.to_string(), "-P", "64"])
        .args(["-r", "1000000", "-d", "32", "-t", "set", "-q"])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("loading the recovery data failed");
    }
    running.stop();
    Ok(())
}

/// Fills `target` with `keys` keys and leaves them rewritten: Moon's bases after
/// BGREWRITEAOF (everysec), Redis's dump.rdb after SAVE (appendonly no).
fn write_rewritten(
    target: Target,
    bin: &Path,
    dir: &Path,
    log: &Path,
    keys: u64,
) -> anyhow::Result<()> {
    let fsync = match target {
        Target::Moon(_) => Some("everysec"),
        Target::Redis => None,
    };
    let (running, addr) = start(target, bin, fsync, dir, log)?;
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    crate::bench_rdb::fill(&mut con, keys)?;
    match target {
        Target::Redis => {
            redis::cmd("SAVE").query::<String>(&mut con)?;
        }
        Target::Moon(_) => {
            redis::cmd("BGREWRITEAOF").query::<String>(&mut con)?;
            let started = Instant::now();
            loop {
                let info: String = redis::cmd("INFO").arg("persistence").query(&mut con)?;
                if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrites:1") {
                    break;
                }
                if started.elapsed() > Duration::from_secs(600) {
                    bail!("BGREWRITEAOF did not finish: {info}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    running.stop();
    Ok(())
}

/// `rounds` restarts of every row's server on its `purpose` directory, the servers taking
/// turns (Moon with its log, `everysec`; Redis without AOF on the rewritten dataset's dump).
fn restarts(
    rows: &mut [Row],
    bin: &Path,
    work: &Path,
    purpose: &str,
    rounds: usize,
    log: &Path,
) -> anyhow::Result<()> {
    for round in 0..rounds {
        for row in rows.iter_mut() {
            let dir = row.target.dir(work, purpose);
            let fsync = match row.target {
                Target::Redis if purpose == "rewritten" => None,
                _ => Some("everysec"),
            };
            let r = restart(row.target, bin, fsync, &dir, log)?;
            eprintln!(
                "{purpose}: {} keys, round {round}, {}: {:.2} s, peak {} MiB",
                row.keys,
                row.target.label(),
                r.secs,
                r.peak_kb / 1024
            );
            row.runs.push(r);
        }
    }
    Ok(())
}

/// Writes each target's data once into its `purpose` directory (`write`), then restarts
/// every server `rounds` times: one row per target.
fn measure(
    targets: &[Target],
    bin: &Path,
    work: &Path,
    purpose: &str,
    rounds: usize,
    keys: u64,
    write: impl Fn(Target, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Row>> {
    let log = work.join("recovery.log");
    let mut rows = Vec::new();
    for &target in targets {
        let dir = target.dir(work, purpose);
        let _ = std::fs::remove_dir_all(&dir);
        write(target, &dir)?;
        rows.push(Row {
            target,
            bytes: dir_size(&dir),
            keys,
            runs: Vec::new(),
        });
    }
    restarts(&mut rows, bin, work, purpose, rounds, &log)?;
    Ok(rows)
}

struct Row {
    target: Target,
    bytes: u64,
    keys: u64,
    runs: Vec<Restart>,
}

impl Row {
    fn secs(&self) -> f64 {
        median(self.runs.iter().map(|r| r.secs).collect())
    }
    fn peak_mib(&self) -> u64 {
        self.runs.iter().map(|r| r.peak_kb).max().unwrap_or(0) / 1024
    }
}

fn table(report: &mut String, rows: &[Row], what: &str) {
    let redis = rows
        .iter()
        .find(|r| r.target == Target::Redis)
        .map(Row::secs);
    let _ = writeln!(
        report,
        "| server | {what} | bytes on disk | start → PONG (median) | MB/s per shard | keys/s per shard | peak RSS | Redis time ÷ this |\n|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let shards = match r.target {
            Target::Moon(s) => s as f64,
            Target::Redis => 1.0,
        };
        let secs = r.secs();
        let ratio = redis.map_or("—".to_string(), |t| format!("{:.2}x", t / secs));
        let _ = writeln!(
            report,
            "| {} | {} | {} | {secs:.2} s | {:.0} | {:.0} | {} MiB | {ratio} |",
            r.target.label(),
            r.keys,
            r.bytes,
            r.bytes as f64 / 1e6 / secs / shards,
            r.keys as f64 / secs / shards,
            r.peak_mib(),
        );
    }
}

/// Both measurements, `rounds` restarts each (data written once per server).
pub fn recovery_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
    writes: u64,
    keys: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let log = work.join("recovery.log");

    let rows = measure(targets, bin, work, "recovery", rounds, writes, |t, dir| {
        write_log(t, bin, dir, &log, writes)
    })?;
    let _ = writeln!(
        report,
        "\n### Recovery of a log: process start to first PONG, {writes} SETs in the data directory\n\nMoon replays each shard's incr log (no rewrite), Redis its AOF (`aof-use-rdb-preamble no`); `redis-benchmark -c 50 -n {writes} -P 64 -r 1000000 -d 32 -t set`, everysec. Keys/s counts logged writes. {rounds} restarts each, alternating.\n"
    );
    table(report, &rows, "writes");
    for row in &rows {
        let _ = std::fs::remove_dir_all(row.target.dir(work, "recovery"));
    }

    let rows = measure(targets, bin, work, "rewritten", rounds, keys, |t, dir| {
        write_rewritten(t, bin, dir, &log, keys)
    })?;
    let _ = writeln!(
        report,
        "\n### Recovery of a rewritten dataset: process start to first PONG, {keys} keys\n\nThe dataset of the RDB measurement (60% strings up to 50 bytes, 10% each 3-field hashes, 10-element lists, 10-member sorted sets and integer sets; 10% with a deadline). Moon after BGREWRITEAOF (each shard's base an RDB file, its incr empty), Redis loading the `dump.rdb` that SAVE wrote (`appendonly no`). {rounds} restarts each, alternating.\n"
    );
    table(report, &rows, "keys");
    for row in &rows {
        let _ = std::fs::remove_dir_all(row.target.dir(work, "rewritten"));
    }
    Ok(())
}
