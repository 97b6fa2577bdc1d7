//! `cargo xtask bench --cpu`: the server's own CPU time per request (user + system, all its
//! threads, from `/proc/<pid>/stat`) while `redis-benchmark` drives one command, for Moon
//! (this build, and with `--before <binary>` an earlier one) and Redis, alternating within
//! each round; medians over rounds.
//!
//! Throughput on loopback is bounded by the kernel and by the load generator sharing the
//! CPUs; CPU per request shows what the server's own code costs, so a change to the request
//! path (the lookups, copies and messages per command) shows here when it cannot in req/s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::targets::{median, start, Target};

/// One server under test: a label, its target and its binary.
pub(crate) struct Contender<'a> {
    pub label: String,
    pub target: Target,
    pub bin: &'a Path,
}

/// The server process's CPU seconds so far (user + system, every thread).
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the paren.
    let ticks: f64 = f
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Ok(ticks / hz)
}

/// Runs one redis-benchmark test; its requests per second.
fn drive(addr: SocketAddr, pipeline: u32, requests: u64, test: &str) -> anyhow::Result<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-c",
            "50",
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args(["-r", "1000000", "-d", "32", "-q", "--csv", "-t", test])
        .stderr(Stdio::null())
        .output()
        .context("running redis-benchmark")?;
    if !out.status.success() {
        bail!("redis-benchmark failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or(0.0))
}

/// Appends the CPU-per-request table to `report`.
pub(crate) fn cpu_section(
    report: &mut String,
    contenders: &[Contender],
    work: &Path,
    requests: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    const TESTS: [&str; 3] = ["set", "get", "incr"];
    // (pipeline, test) -> contender -> (µs per request, requests/s), one per round
    type PerContender = Vec<Vec<(f64, f64)>>;
    let mut samples: BTreeMap<(u32, &str), PerContender> = BTreeMap::new();
    for round in 0..rounds {
        for (i, c) in contenders.iter().enumerate() {
            for pipeline in [1u32, 16] {
                let n = requests * u64::from(pipeline.min(10));
                let dir = c.target.dir(work, &format!("cpu-{i}-{round}-{pipeline}"));
                let (running, addr) = start(c.target, c.bin, None, &dir, &work.join("cpu.log"))?;
                for test in TESTS {
                    let before = cpu_seconds(running.pid())?;
                    let rps = drive(addr, pipeline, n, test)?;
                    let used = cpu_seconds(running.pid())? - before;
                    let us = used * 1e6 / n as f64;
                    eprintln!(
                        "cpu {} -P {pipeline} {test}: {us:.2} µs/request, {rps:.0} req/s",
                        c.label
                    );
                    samples
                        .entry((pipeline, test))
                        .or_insert_with(|| vec![Vec::new(); contenders.len()])[i]
                        .push((us, rps));
                }
                running.stop();
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    let _ = writeln!(
        report,
        "\n### Server CPU per request (µs of user + system time) and throughput (req/s), medians of {rounds} rounds, appendonly no\n"
    );
    let head: Vec<String> = contenders.iter().map(|c| c.label.clone()).collect();
    let _ = writeln!(report, "| pipeline | test | {} |", head.join(" | "));
    let _ = writeln!(report, "|---|---|{}", "---|".repeat(contenders.len()));
    for ((pipeline, test), per) in &samples {
        let cells: Vec<String> = per
            .iter()
            .map(|v| {
                let us = median(v.iter().map(|s| s.0).collect());
                let rps = median(v.iter().map(|s| s.1).collect());
                format!("{us:.2} µs, {:.0}k/s", rps / 1000.0)
            })
            .collect();
        let _ = writeln!(report, "| {pipeline} | {test} | {} |", cells.join(" | "));
    }
    Ok(())
}
