//! The pub/sub part of `cargo xtask bench`: PUBLISH throughput and publish-to-receive
//! latency with 1, 100 and 1,000 subscribers, Moon (subscribers spread over its shards by the
//! kernel) against Redis.
//!
//! Subscribers are plain sockets read by a few threads (each thread owns a slice of them and
//! reads one message from each in turn: every subscriber gets every message, in order).
//! Publishers pipeline PUBLISH in groups of 16; each message carries its send time, so every
//! delivery gives one latency sample (under that load). Rates are publishes per second and
//! deliveries (messages written to subscribers) per second.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::targets::{start, Target};

const PUBLISHERS: usize = 4;
const PIPELINE: usize = 16;
const READER_THREADS: usize = 8;

/// Reads one RESP2 pub/sub message (`*3 message <channel> <payload>`) and returns the payload.
fn read_message(r: &mut BufReader<TcpStream>, line: &mut String) -> anyhow::Result<String> {
    let mut payload = String::new();
    line.clear();
    r.read_line(line)?;
    if !line.starts_with("*3") {
        bail!("expected a message, got {line:?}");
    }
    for i in 0..3 {
        line.clear();
        r.read_line(line)?; // $len
        line.clear();
        r.read_line(line)?; // value
        if i == 2 {
            payload = line.trim_end().to_string();
        }
    }
    Ok(payload)
}

struct Run {
    publishes_per_s: f64,
    deliveries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn run_one(addr: SocketAddr, subscribers: usize, messages: usize) -> anyhow::Result<Run> {
    let base = Arc::new(Instant::now());
    let mut socks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut s = TcpStream::connect(addr).context("subscriber connect")?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n")?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        for _ in 0..6 {
            line.clear();
            r.read_line(&mut line)?; // *3 $9 subscribe $5 bench :1
        }
        socks.push(r);
    }
    // Readers: each owns every READER_THREADS-th subscriber.
    let mut groups: Vec<Vec<BufReader<TcpStream>>> =
        (0..READER_THREADS).map(|_| Vec::new()).collect();
    for (i, s) in socks.into_iter().enumerate() {
        groups[i % READER_THREADS].push(s);
    }
    let readers: Vec<_> = groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|mut group| {
            let base = base.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
                let mut lat = Vec::new();
                let mut line = String::new();
                for _ in 0..messages {
                    for r in group.iter_mut() {
                        let sent: u64 = read_message(r, &mut line)?.parse()?;
                        let now = base.elapsed().as_nanos() as u64;
                        lat.push(now.saturating_sub(sent));
                    }
                }
                Ok(lat)
            })
        })
        .collect();
    let started = Instant::now();
    let per = messages / PUBLISHERS;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let base = base.clone();
            let count = if p == 0 {
                messages - per * (PUBLISHERS - 1)
            } else {
                per
            };
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
                let mut left = count;
                while left > 0 {
                    let n = left.min(PIPELINE);
                    let mut pipe = redis::pipe();
                    for _ in 0..n {
                        let t = base.elapsed().as_nanos() as u64;
                        pipe.cmd("PUBLISH").arg("bench").arg(t.to_string());
                    }
                    pipe.query::<()>(&mut con)?;
                    left -= n;
                }
                Ok(())
            })
        })
        .collect();
    for p in publishers {
        p.join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    }
    let published = started.elapsed();
    let mut lat = Vec::new();
    for r in readers {
        lat.extend(r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??);
    }
    let delivered = started.elapsed();
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1e6;
    Ok(Run {
        publishes_per_s: messages as f64 / published.as_secs_f64(),
        deliveries_per_s: (messages * subscribers) as f64 / delivered.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// Appends the pub/sub table to `report`.
pub fn pubsub_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let _ = writeln!(
        report,
        "\n### Pub/sub: {PUBLISHERS} publishers pipelining PUBLISH x{PIPELINE}, subscribers on one channel, appendonly no\n"
    );
    let _ = writeln!(
        report,
        "| server | subscribers | messages | PUBLISH/s | deliveries/s | publish→receive p50 / p99 ms |\n|---|---|---|---|---|---|"
    );
    for subscribers in [1usize, 100, 1000] {
        // About 2M deliveries per run, at least 2,000 messages.
        let messages = (2_000_000 / subscribers).clamp(2_000, 200_000);
        for &target in targets {
            let dir = target.dir(work, "pubsub");
            let (running, addr) = start(target, bin, None, &dir, &work.join("pubsub.log"))?;
            let run = run_one(addr, subscribers, messages);
            running.stop();
            let _ = std::fs::remove_dir_all(&dir);
            let run = run?;
            eprintln!(
                "pubsub {} x{subscribers}: {:.0} publish/s, {:.0} deliveries/s, p50 {:.2} ms p99 {:.2} ms",
                target.label(),
                run.publishes_per_s,
                run.deliveries_per_s,
                run.p50_ms,
                run.p99_ms
            );
            let _ = writeln!(
                report,
                "| {} | {subscribers} | {messages} | {:.0} | {:.0} | {:.2} / {:.2} |",
                target.label(),
                run.publishes_per_s,
                run.deliveries_per_s,
                run.p50_ms,
                run.p99_ms
            );
        }
    }
    Ok(())
}

/// Wake-ups per BLPOP latency run.
const WAKEUPS: usize = 2_000;

/// The time from a push to the blocked client's reply: one client waits in `BLPOP q 0`,
/// another pushes one element once it is blocked (INFO `blocked_clients`, not timed).
fn blpop_run(addr: SocketAddr) -> anyhow::Result<(f64, f64)> {
    let url = format!("redis://{addr}/");
    let mut pusher = redis::Client::open(url.as_str())?.get_connection()?;
    let mut waiter = redis::Client::open(url.as_str())?.get_connection()?;
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let consumer = std::thread::spawn(move || -> anyhow::Result<()> {
        for _ in 0..WAKEUPS {
            let _: (String, String) = redis::cmd("BLPOP").arg("q").arg(0).query(&mut waiter)?;
            let _ = tx.send(Instant::now());
        }
        Ok(())
    });
    let mut lat = Vec::with_capacity(WAKEUPS);
    for i in 0..WAKEUPS {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("INFO").arg("clients").query(&mut pusher)?;
            if info.contains("blocked_clients:1") {
                break;
            }
            if Instant::now() > deadline {
                bail!("the BLPOP client never blocked");
            }
        }
        let t0 = Instant::now();
        let _: i64 = redis::cmd("RPUSH").arg("q").arg(i).query(&mut pusher)?;
        let served = rx.recv_timeout(Duration::from_secs(10))?;
        lat.push(served.duration_since(t0).as_secs_f64() * 1e6);
    }
    consumer
        .join()
        .map_err(|_| anyhow::anyhow!("BLPOP thread panicked"))??;
    lat.sort_by(f64::total_cmp);
    Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
}

/// BLPOP wake-up latency, each target side by side (issue 24's bench row).
pub fn blpop_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let _ = writeln!(
        report,
        "\n### BLPOP wake-up: a client blocked in BLPOP, another pushes one element once it is blocked; {WAKEUPS} wake-ups, appendonly no\n"
    );
    let _ = writeln!(
        report,
        "| server | push→served p50 µs | p99 µs |\n|---|---|---|"
    );
    for &target in targets {
        let dir = target.dir(work, "blpop");
        let (running, addr) = start(target, bin, None, &dir, &work.join("blpop.log"))?;
        let run = blpop_run(addr);
        running.stop();
        let _ = std::fs::remove_dir_all(&dir);
        let (p50, p99) = run?;
        eprintln!("blpop {}: p50 {p50:.0} µs, p99 {p99:.0} µs", target.label());
        let _ = writeln!(report, "| {} | {p50:.0} | {p99:.0} |", target.label());
    }
    Ok(())
}
