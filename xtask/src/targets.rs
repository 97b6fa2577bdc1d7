//! The servers a benchmark runs side by side: Moon at some shard count, or Debian's
//! `redis-server`, started alike (same persistence flags, no automatic rewrite) on a scratch
//! directory, and stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::server::Server;

/// One server under test.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Target {
    Moon(usize),
    Redis,
}

impl Target {
    /// A scratch data directory for this target and purpose under `work`.
    pub(crate) fn dir(self, work: &Path, purpose: &str) -> PathBuf {
        work.join(format!(
            "{}-{purpose}",
            self.label().replace([' ', '='], "_")
        ))
    }

    pub(crate) fn label(self) -> String {
        match self {
            Target::Moon(s) => format!("moon shards={s}"),
            Target::Redis => "redis 7".into(),
        }
    }
}

pub(crate) enum Running {
    Moon(Server),
    Redis(Child),
}

impl Running {
    pub(crate) fn stop(self) {
        match self {
            Running::Moon(s) => {
                let _ = s.terminate();
            }
            Running::Redis(mut c) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = c.wait();
            }
        }
    }
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Running::Moon(s) => s.pid(),
            Running::Redis(c) => c.id(),
        }
    }
}

/// The persistence flags, the same for both servers (both spell them alike): `None` is
/// `appendonly no`.
fn persistence_args(fsync: Option<&str>) -> Vec<String> {
    match fsync {
        Some(p) => vec![
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            p.into(),
        ],
        None => vec!["--appendonly".into(), "no".into()],
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls with PING until the reply is PONG (Redis answers -LOADING while it loads).
pub(crate) fn wait_pong(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(c) = redis::Client::open(format!("redis://{addr}/")) {
            if let Ok(mut con) = c.get_connection_with_timeout(Duration::from_millis(200)) {
                if let Ok(r) = redis::cmd("PING").query::<String>(&mut con) {
                    if r == "PONG" {
                        return Ok(started.elapsed());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!("no PONG from {addr} within {timeout:?}")
}

pub(crate) fn start(
    target: Target,
    bin: &Path,
    fsync: Option<&str>,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<(Running, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    match target {
        Target::Moon(shards) => {
            let mut args: Vec<String> = vec![
                "--port".into(),
                "0".into(),
                "--shards".into(),
                shards.to_string(),
                "--dir".into(),
                dir.display().to_string(),
                // Like Redis below: no automatic rewrite, so both logs hold every command.
                "--auto-aof-rewrite-percentage".into(),
                "0".into(),
            ];
            args.extend(persistence_args(fsync));
            let mut s = Server::spawn(bin, &args, log)?;
            let addr = s.wait_ready(Duration::from_secs(600))?;
            Ok((Running::Moon(s), addr))
        }
        Target::Redis => {
            let port = free_port()?;
            let mut args: Vec<String> = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--dir".into(),
                dir.display().to_string(),
                "--save".into(),
                "".into(),
                "--daemonize".into(),
                "no".into(),
                "--aof-use-rdb-preamble".into(),
                "no".into(),
                "--auto-aof-rewrite-percentage".into(),
                "0".into(),
                "--logfile".into(),
                log.display().to_string(),
            ];
            args.extend(persistence_args(fsync));
            let child = Command::new("redis-server")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server")?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            wait_pong(addr, Duration::from_secs(600))?;
            Ok((Running::Redis(child), addr))
        }
    }
}

/// A `/proc/<pid>/status` figure in kB (`VmRSS`, `VmHWM`...), 0 if it cannot be read.
pub(crate) fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The median of a benchmark's samples (0 for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}
