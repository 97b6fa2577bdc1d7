//! `cargo xtask bench`: Moon against Redis 7 on the same machine, taken the same way.
//!
//! Both servers run on loopback with the same persistence settings and a fresh data directory;
//! `redis-benchmark` (Debian's redis-tools) drives each in alternation — Moon, Redis, Moon,
//! Redis, … for `--rounds` rounds — and each row reports the median throughput and p50/p99
//! latency over rounds, and the Moon/Redis throughput ratio. Then recovery time (process start
//! to first PONG on a directory holding N writes) and memory (RSS growth for 1M keys of 16-byte
//! keys and 32-byte values). The results replace the generated part of `docs/BENCHMARKS.md`.
//!
//! Benchmarks are never part of the test suite.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::server::{build_release, root};
use crate::targets::{median, start, Target};

#[derive(clap::Args)]
pub struct Args {
    /// Rounds of A/B alternation per configuration (medians are taken over rounds).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests per unpipelined redis-benchmark test (pipelined tests use 10x).
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Writes in the data directory for the recovery measurement.
    #[arg(long, default_value_t = 5_000_000)]
    recovery_writes: u64,
    /// Persistence settings, comma separated: off (appendonly no), no, everysec, always.
    #[arg(long, default_value = "off,no,everysec,always")]
    fsync: String,
    /// Skip the recovery, memory, transaction and rewrite measurements.
    #[arg(long)]
    throughput_only: bool,
    /// Skip the redis-benchmark throughput table (run only the other measurements).
    #[arg(long)]
    skip_throughput: bool,
    /// Do not rewrite docs/BENCHMARKS.md (print only).
    #[arg(long)]
    no_write: bool,
    /// Use this moon-server binary instead of building one.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Run only the pub/sub measurement.
    #[arg(long)]
    only_pubsub: bool,
    /// Run only the memory measurements of collections (hashes, lists).
    #[arg(long)]
    only_memory: bool,
    /// Run only the server-CPU-per-request measurement (`bench_cpu`).
    #[arg(long)]
    cpu: bool,
    /// With --cpu: an earlier moon-server binary to measure beside this build.
    #[arg(long)]
    before: Option<PathBuf>,
    /// Run only the RDB measurement (`bench_rdb`): redis-server and moon-cli on one dump.
    #[arg(long)]
    only_rdb: bool,
    /// Run only the recovery measurements (`bench_recovery`): a log, and a rewritten dataset.
    #[arg(long)]
    only_recovery: bool,
    /// Keys of the rewritten dataset the recovery measurement restarts from.
    #[arg(long, default_value_t = 1_000_000)]
    recovery_keys: u64,
    /// Restarts per server in the recovery measurements (medians are reported).
    #[arg(long, default_value_t = 3)]
    recovery_rounds: usize,
    /// Run only the measurement of serving during BGREWRITEAOF.
    #[arg(long)]
    only_rewrite: bool,
    /// Keys of the RDB measurement's dataset.
    #[arg(long, default_value_t = 1_000_000)]
    rdb_keys: u64,
}

const CLIENTS: u32 = 50;

/// One redis-benchmark result line, and the server's CPU time per request during it.
#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    max: f64,
    /// µs of the server's user + system time per request (`bench_cpu::cpu_seconds`).
    cpu_us: f64,
}

/// Every test of a round against the server at `addr` (process `pid`), one redis-benchmark
/// run per test so that each row gets its own CPU figure.
fn redis_benchmark(
    addr: SocketAddr,
    pid: u32,
    pipeline: u32,
    requests: u64,
) -> anyhow::Result<BTreeMap<String, Sample>> {
    // MSET moves 10 keys a request and, across shards, is a transaction: a fifth of the
    // requests keeps each run's duration in line with the others.
    let mut rows = BTreeMap::new();
    for (test, n) in [
        ("set", requests),
        ("get", requests),
        ("incr", requests),
        ("mset", (requests / 5).max(1000)),
        // Hashes and sets: HSET/SADD build `myhash`/`myset` (one key each: one shard), then
        // HGET/SISMEMBER read them at random fields/members.
        ("hset", requests),
        ("sadd", requests),
        // Lists: LPUSH builds `mylist` (one key: one shard), LPOP then takes it apart.
        ("lpush", requests),
        ("lpop", requests),
        // Sorted sets: ZADD builds `myzset` (one key), ZRANK/ZRANGE then read it.
        ("zadd", requests),
    ] {
        rows.extend(measured(addr, pid, pipeline, n, test)?);
    }
    // A script as applications run one: a fixed-window rate limiter by EVALSHA, on a random
    // key (both shards at 2).
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    let limiter_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(RATE_LIMITER)
        .query(&mut con)?;
    let evalsha = format!("EVALSHA {limiter_sha} 1 rl:__rand_int__ 10");
    for command in [
        "HGET myhash element:__rand_int__",
        "SISMEMBER myset element:__rand_int__",
        "ZRANK myzset element:__rand_int__",
        "ZRANGE myzset 0 9 WITHSCORES",
        // A HyperLogLog that turns dense early in the run, then mostly counts what it has.
        "PFADD myhll element:__rand_int__",
        // Geo: points spread over a 1° square, then the ten nearest a point inside it.
        "GEOADD mygeo 15.__rand_int__ 37.__rand_int__ element:__rand_int__",
        "GEOSEARCH mygeo FROMLONLAT 15.5 37.5 BYRADIUS 5 km ASC COUNT 10",
        // Streams: small entries appended with ids from the clock.
        "XADD mystream * field element:__rand_int__",
        evalsha.as_str(),
    ] {
        let named = measured(addr, pid, pipeline, requests, command)?;
        // The row is named by the command alone (redis-benchmark names it by the whole line).
        rows.extend(
            named
                .into_values()
                .map(|v| (command.split(' ').next().unwrap_or(command).to_string(), v)),
        );
    }
    Ok(rows)
}

/// The EVALSHA row's script: at most ARGV[1] calls per key and second.
const RATE_LIMITER: &str = "local n = redis.call('incr', KEYS[1]) \
    if n == 1 then redis.call('pexpire', KEYS[1], 1000) end \
    if n > tonumber(ARGV[1]) then return 0 end return 1";

/// [`redis_benchmark_tests`] with the server's CPU time per request.
fn measured(
    addr: SocketAddr,
    pid: u32,
    pipeline: u32,
    requests: u64,
    tests: &str,
) -> anyhow::Result<BTreeMap<String, Sample>> {
    let before = crate::bench_cpu::cpu_seconds(pid)?;
    let mut rows = redis_benchmark_tests(addr, pipeline, requests, tests)?;
    let used = crate::bench_cpu::cpu_seconds(pid)? - before;
    let per_test = used * 1e6 / (requests as f64 * rows.len().max(1) as f64);
    for s in rows.values_mut() {
        s.cpu_us = per_test;
    }
    Ok(rows)
}

fn redis_benchmark_tests(
    addr: SocketAddr,
    pipeline: u32,
    requests: u64,
    tests: &str,
) -> anyhow::Result<BTreeMap<String, Sample>> {
    let out = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-c",
            &CLIENTS.to_string(),
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args(["-r", "1000000", "-d", "32", "--csv", "-q"])
        .args(if tests.contains(' ') {
            // A command of its own: its words go last.
            tests.split(' ').map(str::to_string).collect::<Vec<_>>()
        } else {
            vec!["-t".to_string(), tests.to_string()]
        })
        .output()
        .context("running redis-benchmark")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').map(|s| s.trim_matches('"')).collect();
        if f.len() >= 7 {
            let num = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
            rows.insert(
                f[0].to_string(),
                Sample {
                    rps: num(1),
                    p50: num(4),
                    p99: num(6),
                    max: num(7),
                    cpu_us: 0.0,
                },
            );
        }
    }
    if rows.is_empty() {
        bail!("could not read redis-benchmark's output: {text}");
    }
    Ok(rows)
}

/// The recovery measurements with this run's arguments (`bench_recovery`).
fn recovery(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
    args: &Args,
) -> anyhow::Result<()> {
    crate::bench_recovery::recovery_section(
        report,
        targets,
        bin,
        work,
        args.recovery_writes,
        args.recovery_keys,
        args.recovery_rounds,
    )
}

fn rss_kb(pid: u32) -> u64 {
    crate::targets::status_kb(pid, "VmRSS")
}

/// Loads keys `key:%012d` (16 bytes) with 32-byte values, pipelined.
fn load_keys(addr: SocketAddr, n: u64, offset: u64) -> anyhow::Result<()> {
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    let value = "v".repeat(32);
    let mut i = 0;
    while i < n {
        let mut p = redis::pipe();
        for j in i..(i + 1000).min(n) {
            p.cmd("SET")
                .arg(format!("key:{:012}", j + offset))
                .arg(&value)
                .ignore();
        }
        p.query::<()>(&mut con)?;
        i += 1000;
    }
    Ok(())
}

/// Loads `n` small hashes `user:%09d` of `fields` fields (`f0`.. → 8-byte values), pipelined.
fn load_hashes(addr: SocketAddr, n: u64, fields: usize) -> anyhow::Result<()> {
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    let mut i = 0;
    while i < n {
        let mut p = redis::pipe();
        for j in i..(i + 1000).min(n) {
            let c = p.cmd("HSET").arg(format!("user:{j:09}"));
            for f in 0..fields {
                c.arg(format!("f{f}")).arg("value-01");
            }
            c.ignore();
        }
        p.query::<()>(&mut con)?;
        i += 1000;
    }
    Ok(())
}

/// RSS growth of each target while `load` fills it (appendonly no): (label, kB before, kB
/// after) per target, each on a fresh directory.
fn rss_growth(
    targets: &[Target],
    bin: &Path,
    work: &Path,
    name: &str,
    load: impl Fn(SocketAddr) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let mut rows = Vec::new();
    for &target in targets {
        let dir = target.dir(work, name);
        let log = work.join(format!("{name}.log"));
        let (running, addr) = start(target, bin, None, &dir, &log)?;
        let before = rss_kb(running.pid());
        load(addr)?;
        let after = rss_kb(running.pid());
        running.stop();
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("{name} {}: {before} kB -> {after} kB", target.label());
        rows.push((target.label(), before, after));
    }
    Ok(rows)
}

/// RSS growth per key for 1,000,000 string keys (16-byte keys, 32-byte values).
fn key_memory_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let _ = writeln!(
        report,
        "\n### Memory: 1,000,000 keys (16-byte keys, 32-byte values), appendonly no\n"
    );
    let _ = writeln!(
        report,
        "| server | RSS before | RSS after | bytes per key |\n|---|---|---|---|"
    );
    let rows = rss_growth(targets, bin, work, "memory", |addr| {
        load_keys(addr, 1_000_000, 0)
    })?;
    for (label, before, after) in rows {
        let per_key = (after.saturating_sub(before) * 1024) as f64 / 1_000_000.0;
        let _ = writeln!(
            report,
            "| {label} | {} MiB | {} MiB | {per_key:.0} |",
            before / 1024,
            after / 1024
        );
    }
    Ok(())
}

/// Memory per field of 1,000,000 small hashes (compact encodings on both sides).
fn hash_memory_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    const HASHES: u64 = 1_000_000;
    const FIELDS: usize = 5;
    let _ = writeln!(
        report,
        "\n### Memory: {HASHES} hashes of {FIELDS} fields (2-byte fields, 8-byte values), appendonly no\n"
    );
    let _ = writeln!(
        report,
        "| server | RSS before | RSS after | bytes per hash | bytes per field |\n|---|---|---|---|---|"
    );
    for (label, before, after) in rss_growth(targets, bin, work, "hash-memory", |addr| {
        load_hashes(addr, HASHES, FIELDS)
    })? {
        let per_hash = (after.saturating_sub(before) * 1024) as f64 / HASHES as f64;
        let _ = writeln!(
            report,
            "| {label} | {} MiB | {} MiB | {per_hash:.0} | {:.0} |",
            before / 1024,
            after / 1024,
            per_hash / FIELDS as f64
        );
    }
    Ok(())
}

/// Memory per member of 100,000 small sorted sets of 20 members (compact encodings on both
/// sides: Redis's listpack, Moon's packed buffer).
fn zset_memory_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    const SETS: u64 = 100_000;
    const MEMBERS: u64 = 20;
    let _ = writeln!(
        report,
        "\n### Memory: {SETS} sorted sets of {MEMBERS} members (8-byte members, integer scores), appendonly no\n"
    );
    let _ = writeln!(
        report,
        "| server | RSS before | RSS after | bytes per set | bytes per member |\n|---|---|---|---|---|"
    );
    let load = |addr: SocketAddr| -> anyhow::Result<()> {
        let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
        for chunk in 0..SETS / 1000 {
            let mut p = redis::pipe();
            for z in chunk * 1000..(chunk + 1) * 1000 {
                let c = p.cmd("ZADD").arg(format!("zset:{z:08}"));
                for m in 0..MEMBERS {
                    c.arg((z * 7 + m * 13) % 1000).arg(format!("m:{m:06}"));
                }
                c.ignore();
            }
            p.query::<()>(&mut con)?;
        }
        Ok(())
    };
    for (label, before, after) in rss_growth(targets, bin, work, "zset-memory", load)? {
        let per_set = (after.saturating_sub(before) * 1024) as f64 / SETS as f64;
        let _ = writeln!(
            report,
            "| {label} | {} MiB | {} MiB | {per_set:.0} | {:.1} |",
            before / 1024,
            after / 1024,
            per_set / MEMBERS as f64
        );
    }
    Ok(())
}

/// Memory per element of long lists: 1,000 lists of 5,000 16-byte elements (Redis's
/// quicklist against Moon's nodes, both at the default `list-max-listpack-size -2`).
fn list_memory_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    const LISTS: u64 = 1_000;
    const ELEMENTS: u64 = 5_000;
    let _ = writeln!(
        report,
        "\n### Memory: {LISTS} lists of {ELEMENTS} elements (16-byte elements), appendonly no\n"
    );
    let _ = writeln!(
        report,
        "| server | RSS before | RSS after | bytes per element |\n|---|---|---|---|"
    );
    let load = |addr: SocketAddr| -> anyhow::Result<()> {
        let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
        for l in 0..LISTS {
            let mut p = redis::pipe();
            for chunk in 0..ELEMENTS / 100 {
                let c = p.cmd("RPUSH").arg(format!("list:{l:06}"));
                for e in 0..100 {
                    c.arg(format!("job:{:012}", chunk * 100 + e));
                }
                c.ignore();
            }
            p.query::<()>(&mut con)?;
        }
        Ok(())
    };
    for (label, before, after) in rss_growth(targets, bin, work, "list-memory", load)? {
        let per = (after.saturating_sub(before) * 1024) as f64 / (LISTS * ELEMENTS) as f64;
        let _ = writeln!(
            report,
            "| {label} | {} MiB | {} MiB | {per:.1} |",
            before / 1024,
            after / 1024,
        );
    }
    Ok(())
}

fn tool_version(cmd: &str) -> String {
    Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "not found".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({cpu}), {mem} GiB RAM, Linux {}",
        kernel.trim()
    )
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let bin = match args.bin.clone() {
        Some(b) => b,
        None => build_release()?,
    };
    let have_redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    let have_bench = Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_ok();
    if !have_bench {
        bail!("redis-benchmark not found: install Debian's redis-tools (apt-get install redis-tools redis-server)");
    }
    if !have_redis {
        eprintln!("redis-server not found: install it with `apt-get install redis-server` to compare; benchmarking Moon alone");
    }
    if args.only_rdb {
        if !have_redis {
            bail!("the RDB measurement needs redis-server (apt-get install redis-server)");
        }
        let work = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join("target"))
            .join("bench");
        std::fs::create_dir_all(&work)?;
        let cli = bin.with_file_name("moon-cli");
        let mut report = String::new();
        crate::bench_rdb::rdb_section(&mut report, &cli, &work, args.rdb_keys)?;
        println!("{report}");
        return Ok(true);
    }
    if args.cpu {
        return cpu_only(&args, &bin, have_redis);
    }
    let mut targets = vec![Target::Moon(1), Target::Moon(2)];
    if have_redis {
        targets.push(Target::Redis);
    }
    let work = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
        .join("bench");
    if args.only_rewrite {
        std::fs::create_dir_all(&work)?;
        let mut report = String::new();
        rewrite_latency_section(&mut report, &bin, &work)?;
        println!("{report}");
        return Ok(true);
    }
    if args.only_recovery {
        std::fs::create_dir_all(&work)?;
        let mut report = String::new();
        recovery(&mut report, &targets, &bin, &work, &args)?;
        println!("{report}");
        return Ok(true);
    }
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let policies: Vec<String> = args
        .fsync
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();

    // (policy, pipeline, test) -> target -> samples
    type Key = (String, u32, String);
    let mut samples: BTreeMap<Key, BTreeMap<Target, Vec<Sample>>> = BTreeMap::new();
    let policies: Vec<String> = if args.skip_throughput || args.only_pubsub || args.only_memory {
        Vec::new()
    } else {
        policies
    };
    for policy in &policies {
        // "off" is `appendonly no`; the others are appendfsync policies with the AOF on.
        let fsync = (policy != "off").then_some(policy.as_str());
        for round in 0..args.rounds {
            for &target in &targets {
                for pipeline in [1u32, 16] {
                    let requests = if pipeline == 1 {
                        args.requests
                    } else {
                        args.requests * 10
                    };
                    let dir = target.dir(&work, &format!("{policy}-{round}-{pipeline}"));
                    let log = work.join("server.log");
                    let (running, addr) = start(target, &bin, fsync, &dir, &log)?;
                    let rows = redis_benchmark(addr, running.pid(), pipeline, requests);
                    running.stop();
                    let _ = std::fs::remove_dir_all(&dir);
                    let rows = rows?;
                    eprintln!(
                        "appendfsync {policy:<8} round {round} {:<14} -P {pipeline:<2}: {}",
                        target.label(),
                        rows.iter()
                            .map(|(t, s)| format!("{t} {:.0}", s.rps))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    for (test, s) in rows {
                        samples
                            .entry((policy.clone(), pipeline, test))
                            .or_default()
                            .entry(target)
                            .or_default()
                            .push(s);
                    }
                }
            }
        }
    }

    let mut report = String::new();
    let _ = writeln!(
        report,
        "Generated by `cargo xtask bench --rounds {} --requests {}` on {}.\n",
        args.rounds,
        args.requests,
        chrono_like_now()
    );
    let _ = writeln!(report, "- machine: {}", machine());
    let _ = writeln!(
        report,
        "- moon-server: release build of this commit ({})",
        bin.display()
    );
    let _ = writeln!(
        report,
        "- {}; {}",
        tool_version("redis-server"),
        tool_version("redis-benchmark")
    );
    let _ = writeln!(
        report,
        "- load: `redis-benchmark -c {CLIENTS} -n <N> -P <1|16> -r 1000000 -d 32 --csv -t <test>`, one run per test (set, get, incr, mset with N/5, hset, sadd, lpush, lpop, zadd), and `HGET myhash element:__rand_int__` / `SISMEMBER myset element:__rand_int__` / `ZRANK myzset element:__rand_int__` / `ZRANGE myzset 0 9 WITHSCORES` / `PFADD myhll element:__rand_int__` / `GEOADD mygeo 15.__rand_int__ 37.__rand_int__ element:__rand_int__` / `GEOSEARCH mygeo FROMLONLAT 15.5 37.5 BYRADIUS 5 km ASC COUNT 10` / `XADD mystream * field element:__rand_int__` as commands of their own, on loopback; N = {} unpipelined, {} pipelined; servers alternate Moon 1 shard, Moon 2 shards, Redis within each round, each on a fresh data directory; medians over {} rounds; CPU is the server process's user + system time over a test's run (`/proc/<pid>/stat`) divided by its requests\n",
        args.requests,
        args.requests * 10,
        args.rounds
    );
    if !samples.is_empty() {
        let _ = writeln!(
            report,
            "### Throughput (requests/s, median), server CPU per request (µs, median) and latency (ms, median of p50 / p99 / max)\n"
        );
        let _ = writeln!(report, "| appendfsync | pipeline | test | moon 1 shard | moon 2 shards | redis 7 | moon2 / redis | moon1 / redis | CPU µs moon1 / moon2 / redis | p50 / p99 / max moon2 | p50 / p99 / max redis |");
        let _ = writeln!(report, "|---|---|---|---|---|---|---|---|---|---|---|");
    }
    // appendfsync policy -> (row label, [moon 1 shard, moon 2 shards, redis])
    let mut charts: BTreeMap<String, Vec<(String, [Sample; 3])>> = BTreeMap::new();
    for ((policy, pipeline, test), by_target) in &samples {
        let med = |t: Target| -> Option<Sample> {
            by_target.get(&t).map(|v| Sample {
                rps: median(v.iter().map(|s| s.rps).collect()),
                p50: median(v.iter().map(|s| s.p50).collect()),
                p99: median(v.iter().map(|s| s.p99).collect()),
                max: median(v.iter().map(|s| s.max).collect()),
                cpu_us: median(v.iter().map(|s| s.cpu_us).collect()),
            })
        };
        let (m1, m2, r) = (
            med(Target::Moon(1)),
            med(Target::Moon(2)),
            med(Target::Redis),
        );
        let rps = |s: Option<Sample>| s.map_or("-".into(), |s| format!("{:.0}", s.rps));
        let ratio = |a: Option<Sample>, b: Option<Sample>| match (a, b) {
            (Some(a), Some(b)) if b.rps > 0.0 => format!("{:.2}x", a.rps / b.rps),
            _ => "-".into(),
        };
        let lat = |s: Option<Sample>| {
            s.map_or("-".into(), |s| {
                format!("{:.3} / {:.3} / {:.1}", s.p50, s.p99, s.max)
            })
        };
        let cpu = |s: Option<Sample>| s.map_or("-".into(), |s| format!("{:.2}", s.cpu_us));
        let _ = writeln!(
            report,
            "| {policy} | {pipeline} | {test} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} |",
            rps(m1),
            rps(m2),
            rps(r),
            ratio(m2, r),
            ratio(m1, r),
            cpu(m1),
            cpu(m2),
            cpu(r),
            lat(m2),
            lat(r)
        );
        if let (Some(m1), Some(m2), Some(r)) = (m1, m2, r) {
            charts
                .entry(policy.clone())
                .or_default()
                .push((format!("-P{pipeline} {test}"), [m1, m2, r]));
        }
    }
    for (policy, rows) in &charts {
        let name = format!("bench-{policy}.svg");
        let path = root().join("docs").join(&name);
        if !args.no_write {
            let bars: Vec<(String, [(f64, f64); 3])> = rows
                .iter()
                .map(|(label, t)| (label.clone(), t.map(|s| (s.rps, s.cpu_us))))
                .collect();
            std::fs::write(&path, crate::bench_chart::svg(policy, &bars))?;
        }
        let _ = writeln!(
            report,
            "\n![appendfsync {policy}: throughput and CPU per request]({name})"
        );
    }

    if args.only_pubsub {
        crate::bench_pubsub::pubsub_section(&mut report, &targets, &bin, &work)?;
        crate::bench_pubsub::blpop_section(&mut report, &targets, &bin, &work)?;
    }

    if args.only_memory {
        key_memory_section(&mut report, &targets, &bin, &work)?;
        hash_memory_section(&mut report, &targets, &bin, &work)?;
        zset_memory_section(&mut report, &targets, &bin, &work)?;
        list_memory_section(&mut report, &targets, &bin, &work)?;
    }

    if !args.throughput_only && !args.only_pubsub && !args.only_memory {
        recovery(&mut report, &targets, &bin, &work, &args)?;
        key_memory_section(&mut report, &targets, &bin, &work)?;
    }

    if !args.throughput_only && !args.only_pubsub && !args.only_memory {
        hash_memory_section(&mut report, &targets, &bin, &work)?;
        zset_memory_section(&mut report, &targets, &bin, &work)?;
        list_memory_section(&mut report, &targets, &bin, &work)?;
        transactions_section(&mut report, &targets, &bin, &work)?;
        crate::bench_pubsub::pubsub_section(&mut report, &targets, &bin, &work)?;
        crate::bench_pubsub::blpop_section(&mut report, &targets, &bin, &work)?;
        rewrite_latency_section(&mut report, &bin, &work)?;
    }

    println!("\n{report}");
    std::fs::write(work.join("report.md"), &report)?;
    if !args.no_write {
        let doc = root().join("docs/BENCHMARKS.md");
        let old = std::fs::read_to_string(&doc).unwrap_or_default();
        let (start_m, end_m) = ("<!-- bench:start -->", "<!-- bench:end -->");
        let new = match (old.find(start_m), old.find(end_m)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{start_m}\n{report}\n{}", &old[..a], &old[b..])
            }
            _ => format!("{old}\n{start_m}\n{report}\n{end_m}\n"),
        };
        std::fs::write(&doc, new)?;
        eprintln!("wrote {}", doc.display());
    }
    Ok(true)
}

/// UTC date and time from `date`, to stamp the report.
fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Two keys on one shard (hash tag) and two on different shards, for `shards` shards.
fn tx_keys(shards: usize, t: usize) -> ([String; 2], [String; 2]) {
    let same = [format!("{{t{t}}}:a"), format!("{{t{t}}}:b")];
    let first = format!("x{t}:0");
    let s0 = moon_store::slot::shard_for_key(first.as_bytes(), shards.max(2));
    let other = (1..)
        .map(|i| format!("x{t}:{i}"))
        .find(|k| moon_store::slot::shard_for_key(k.as_bytes(), shards.max(2)) != s0)
        .unwrap_or_default();
    (same, [first, other])
}

/// MULTI/EXEC throughput: 16 connections, each `MULTI; INCRBY a 1; INCRBY b 1; EXEC` in a
/// loop, with both keys on one shard, then on two shards.
fn transactions_section(
    report: &mut String,
    targets: &[Target],
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 3000;
    let _ = writeln!(report, "\n### MULTI/EXEC: {THREADS} connections x {PER_THREAD} transactions of 2 INCRBYs, appendfsync everysec\n");
    let _ = writeln!(
        report,
        "| server | keys on one shard (tx/s) | keys on two shards (tx/s) |\n|---|---|---|"
    );
    for &target in targets {
        let dir = target.dir(work, "tx");
        let (running, addr) = start(target, bin, Some("everysec"), &dir, &work.join("tx.log"))?;
        let shards = match target {
            Target::Moon(s) => s,
            Target::Redis => 1,
        };
        let mut rates = Vec::new();
        for cross in [false, true] {
            let started = Instant::now();
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let url = format!("redis://{addr}/");
                    let (same, split) = tx_keys(shards, t);
                    let keys = if cross { split } else { same };
                    std::thread::spawn(move || -> anyhow::Result<()> {
                        let mut con = redis::Client::open(url)?.get_connection()?;
                        for _ in 0..PER_THREAD {
                            redis::pipe()
                                .atomic()
                                .cmd("INCRBY")
                                .arg(&keys[0])
                                .arg(1)
                                .cmd("INCRBY")
                                .arg(&keys[1])
                                .arg(1)
                                .query::<()>(&mut con)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
            }
            rates.push((THREADS * PER_THREAD) as f64 / started.elapsed().as_secs_f64());
        }
        running.stop();
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "transactions {}: {:.0} / {:.0} tx/s",
            target.label(),
            rates[0],
            rates[1]
        );
        let cross = if matches!(target, Target::Moon(1) | Target::Redis) {
            "(one shard)".to_string()
        } else {
            String::new()
        };
        let _ = writeln!(
            report,
            "| {} | {:.0} | {:.0} {cross} |",
            target.label(),
            rates[0],
            rates[1]
        );
    }
    Ok(())
}

/// What the probe measured: when each request was sent, and its latency in ms, SET's and
/// GET's.
type Probed = (Vec<(Instant, f64)>, Vec<(Instant, f64)>);

/// One client timing each request back to back until `stop`, SET and GET of one key in turn
/// (a stall of the shard shows here as one slow request).
fn probe(addr: SocketAddr, stop: &AtomicBool) -> anyhow::Result<Probed> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let value = "p".repeat(32);
    let set = format!("*3\r\n$3\r\nSET\r\n$9\r\nprobe:key\r\n$32\r\n{value}\r\n");
    let get = "*2\r\n$3\r\nGET\r\n$9\r\nprobe:key\r\n";
    // The replies' exact lengths: `+OK` and the 32-byte bulk string.
    let (set_reply, get_reply) = (5, 5 + 32 + 2);
    let mut buf = [0u8; 64];
    let (mut sets, mut gets) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) {
        for (req, reply_len, out) in [
            (set.as_bytes(), set_reply, &mut sets),
            (get.as_bytes(), get_reply, &mut gets),
        ] {
            let t = Instant::now();
            s.write_all(req)?;
            s.read_exact(&mut buf[..reply_len])?;
            out.push((t, t.elapsed().as_secs_f64() * 1000.0));
        }
    }
    Ok((sets, gets))
}

/// p50 / p99 / p99.9 / max of `ms`, and how many there are.
fn latency_row(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    format!(
        "{:.3} / {:.3} / {:.3} / {:.1} ({} requests)",
        at(0.5),
        at(0.99),
        at(0.999),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    )
}

/// Runs `redis-benchmark` SET/GET as the load and the probe beside it; `during` runs on this
/// thread meanwhile (it returns a window of time). The probe's latencies of requests sent in
/// that window, and the load's requests per second per test.
fn probe_under_load(
    addr: SocketAddr,
    during: impl FnOnce() -> anyhow::Result<Option<(Instant, Instant)>>,
) -> anyhow::Result<(Probed, BTreeMap<String, Sample>)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let probing = scope.spawn(|| probe(addr, &stop));
        let load = scope.spawn(|| {
            let rows = redis_benchmark_tests(addr, 1, 200_000, "set,get");
            stop.store(true, Ordering::Relaxed);
            rows
        });
        let window = during();
        stop.store(true, Ordering::Relaxed);
        let (sets, gets) = probing
            .join()
            .map_err(|_| anyhow::anyhow!("the probe panicked"))??;
        let load = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load panicked"))??;
        let window = window?;
        let in_window = |v: Vec<(Instant, f64)>| -> Vec<(Instant, f64)> {
            match window {
                Some((from, to)) => v
                    .into_iter()
                    .filter(|(t, _)| *t >= from && *t <= to)
                    .collect(),
                None => v,
            }
        };
        Ok(((in_window(sets), in_window(gets)), load))
    })
}

/// SET/GET latency on a 1,000,000-key Moon shard under load, before and during
/// BGREWRITEAOF: `redis-benchmark`'s 50 clients as the load, and one probe client timing each
/// request (p99.9 and max show a stall; the load's own percentiles hide it in its queue).
fn rewrite_latency_section(report: &mut String, bin: &Path, work: &Path) -> anyhow::Result<()> {
    const REWRITES: usize = 3;
    let dir = work.join("rewrite-latency");
    let (running, addr) = start(
        Target::Moon(1),
        bin,
        Some("everysec"),
        &dir,
        &work.join("rewrite.log"),
    )?;
    load_keys(addr, 1_000_000, 0)?;
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    // Before: the probe's requests in one second, 300 ms into a load.
    let ((set_before, get_before), load_before) = probe_under_load(addr, || {
        std::thread::sleep(Duration::from_millis(300));
        let from = Instant::now();
        std::thread::sleep(Duration::from_millis(1000));
        Ok(Some((from, Instant::now())))
    })?;
    // During: each rewrite, from BGREWRITEAOF to `aof_rewrite_in_progress:0`, 300 ms into
    // a load; the probe's latencies in those windows, pooled.
    let (mut set_during, mut get_during) = (Vec::new(), Vec::new());
    let mut took = Vec::new();
    let mut load_during = Vec::new();
    for _ in 0..REWRITES {
        let ((sets, gets), load) = probe_under_load(addr, || {
            std::thread::sleep(Duration::from_millis(300));
            let from = Instant::now();
            redis::cmd("BGREWRITEAOF").query::<String>(&mut con)?;
            loop {
                let info: String = redis::cmd("INFO").arg("persistence").query(&mut con)?;
                if info.contains("aof_rewrite_in_progress:0") {
                    return Ok(Some((from, Instant::now())));
                }
                if from.elapsed() > Duration::from_secs(600) {
                    bail!("the rewrite did not finish within 10 minutes");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })?;
        if let (Some(first), Some(last)) = (sets.first(), gets.last()) {
            took.push(last.0.duration_since(first.0).as_secs_f64());
        }
        set_during.extend(sets);
        get_during.extend(gets);
        load_during.push(load);
    }
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut con)?;
    let ok = info.contains("aof_last_bgrewrite_status:ok");
    running.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = writeln!(
        report,
        "\n### Serving during BGREWRITEAOF of a 1,000,000-key shard (Moon, 1 shard, everysec)\n"
    );
    let took: Vec<String> = took
        .iter()
        .map(|t| format!("{:.0} ms", t * 1000.0))
        .collect();
    let _ = writeln!(
        report,
        "Load: `redis-benchmark -c 50 -n 200000 -r 1000000 -d 32 -t set,get`. Beside it one probe client sends SET and GET of one key in turn, back to back, and times each: its p99.9 and max show a stall, which the load's own figures spread over 50 queued clients. Before: the probe's requests in one second, 300 ms into a load. During: {REWRITES} rewrites, each started 300 ms into a load (the probe's requests from BGREWRITEAOF to `aof_rewrite_in_progress:0`, pooled; they spanned {}; last status {}).\n",
        took.join(", "),
        if ok { "ok" } else { "err" }
    );
    let _ = writeln!(
        report,
        "| probe | before: p50 / p99 / p99.9 / max ms | during: p50 / p99 / p99.9 / max ms |\n|---|---|---|"
    );
    let ms = |v: Vec<(Instant, f64)>| v.into_iter().map(|(_, ms)| ms).collect::<Vec<_>>();
    let _ = writeln!(
        report,
        "| SET | {} | {} |",
        latency_row(ms(set_before)),
        latency_row(ms(set_during))
    );
    let _ = writeln!(
        report,
        "| GET | {} | {} |",
        latency_row(ms(get_before)),
        latency_row(ms(get_during))
    );
    let rps = |rows: &[BTreeMap<String, Sample>], test: &str| -> String {
        let v: Vec<String> = rows
            .iter()
            .filter_map(|r| r.get(test))
            .map(|s| format!("{:.0}", s.rps))
            .collect();
        v.join(", ")
    };
    let _ = writeln!(
        report,
        "\nThe load's requests/s: SET {} before, {} in the runs that began with each rewrite; GET {} before, {}.",
        rps(std::slice::from_ref(&load_before), "SET"),
        rps(&load_during, "SET"),
        rps(std::slice::from_ref(&load_before), "GET"),
        rps(&load_during, "GET"),
    );
    eprintln!("rewrite latency: took {took:?}");
    Ok(())
}

/// `--cpu`: the CPU-per-request table alone, printed (and kept in the work directory).
fn cpu_only(args: &Args, bin: &Path, have_redis: bool) -> anyhow::Result<bool> {
    use crate::bench_cpu::{cpu_section, Contender};
    let work = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
        .join("bench-cpu");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut contenders = Vec::new();
    if let Some(before) = &args.before {
        contenders.push(Contender {
            label: "moon 1 shard, before".into(),
            target: Target::Moon(1),
            bin: before,
        });
    }
    if let Some(before) = &args.before {
        contenders.push(Contender {
            label: "moon 2 shards, before".into(),
            target: Target::Moon(2),
            bin: before,
        });
    }
    contenders.push(Contender {
        label: "moon 1 shard".into(),
        target: Target::Moon(1),
        bin,
    });
    contenders.push(Contender {
        label: "moon 2 shards".into(),
        target: Target::Moon(2),
        bin,
    });
    if have_redis {
        contenders.push(Contender {
            label: "redis 7".into(),
            target: Target::Redis,
            bin,
        });
    }
    let mut report = format!(
        "Generated by `cargo xtask bench --cpu --rounds {} --requests {}{}` on {}.\n\n- machine: {}\n",
        args.rounds,
        args.requests,
        args.before
            .as_ref()
            .map(|b| format!(" --before {}", b.display()))
            .unwrap_or_default(),
        chrono_like_now(),
        machine()
    );
    cpu_section(&mut report, &contenders, &work, args.requests, args.rounds)?;
    println!("\n{report}");
    std::fs::write(work.join("report.md"), &report)?;
    Ok(true)
}
