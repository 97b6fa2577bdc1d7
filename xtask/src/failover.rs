//! `cargo xtask failover`: unmodified Redis Sentinel fails a Moon primary over to a Moon replica
//! under load, cycle after cycle, and nothing a replica acknowledged is lost, nothing is torn.
//!
//! Three Moon nodes on fixed ports (a primary and two replicas) and three `redis-server
//! --sentinel` processes. Each cycle:
//!
//! 1. writer clients ask Sentinel for the primary and write every type to it — strings,
//!    counters, lists, hashes, sets, sorted sets, streams, and MULTI/EXEC pairs whose two keys
//!    live on different shards — each step followed by `WAIT 1`: what a replica acknowledged
//!    is what must survive;
//! 2. a reader on a replica checks every pair, which is only ever written whole;
//! 3. the primary is killed with SIGKILL; Sentinel must promote a replica, and every write a
//!    WAIT acknowledged must be on it;
//! 4. the old primary restarts on its address; Sentinel must make it a replica of the new one,
//!    and all three nodes must converge to the same data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::server::Server;

#[derive(clap::Args)]
pub struct Args {
    /// Kills of the primary (default 5; 1 with --quick).
    #[arg(long)]
    cycles: Option<usize>,
    /// One cycle (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Shards per node.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Use this moon-server binary instead of building one.
    #[arg(long)]
    bin: Option<PathBuf>,
}

const WRITERS: usize = 4;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn connect(port: u16) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let con = c.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(40))).ok()?;
    Some(con)
}

fn info(port: u16, field: &str) -> Option<String> {
    let mut c = connect(port)?;
    let text: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// CRC16-XMODEM, Redis Cluster's slot function (SPEC §1), to put two keys on different shards.
fn slot(key: &[u8]) -> usize {
    let mut crc: u16 = 0;
    for b in key {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    usize::from(crc) % 16384
}

/// A Moon node on a fixed port and data directory.
struct Node {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    server: Option<Server>,
}

impl Node {
    fn start(&mut self, bin: &Path, shards: usize, replicaof: Option<u16>) -> anyhow::Result<()> {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--pin-cpus",
            "no",
            "--shards",
            &shards.to_string(),
            "--appendfsync",
            "everysec",
            "--dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(self.dir.display().to_string());
        if let Some(p) = replicaof {
            args.push("--replicaof".into());
            args.push(format!("127.0.0.1 {p}"));
        }
        let mut s = Server::spawn(bin, &args, &self.log)?;
        s.wait_ready(Duration::from_secs(60))?;
        self.server = Some(s);
        Ok(())
    }
}

struct Sentinel {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sentinel {
    fn start(work: &Path, i: usize, master: u16) -> anyhow::Result<Sentinel> {
        let port = free_port()?;
        let dir = work.join(format!("sentinel-{i}"));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile sentinel.log\nsentinel monitor moon 127.0.0.1 {master} 2\nsentinel down-after-milliseconds moon 3000\nsentinel failover-timeout moon 10000\nsentinel parallel-syncs moon 2\n",
                dir.display()
            ),
        )?;
        let child = std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting redis-server --sentinel (Debian's redis-server package)")?;
        let s = Sentinel { child, port };
        if !eventually(Duration::from_secs(10), || connect(port).is_some()) {
            bail!("sentinel {i} does not answer");
        }
        Ok(s)
    }

    fn master(&self) -> Option<u16> {
        let mut c = connect(self.port)?;
        let addr: Vec<String> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("moon")
            .query(&mut c)
            .ok()?;
        addr.get(1)?.parse().ok()
    }

    fn count(&self, what: &str) -> usize {
        connect(self.port)
            .and_then(|mut c| {
                redis::cmd("SENTINEL")
                    .arg(what)
                    .arg("moon")
                    .query::<Vec<redis::Value>>(&mut c)
                    .ok()
            })
            .map_or(0, |v| v.len())
    }
}

/// What one writer knows survived: for each key, what a WAIT acknowledged.
#[derive(Default)]
struct Acked {
    /// Strings, hash fields, scores: the largest value acknowledged (later ones may be there too).
    at_least: BTreeMap<String, i64>,
    /// List, set and stream members that must be present.
    members: BTreeMap<String, Vec<i64>>,
    steps: u64,
}

/// One writer: steps of writes of every type with increasing numbers, each followed by WAIT 1.
fn write(
    id: usize,
    cycle: usize,
    port: u16,
    stop: &AtomicBool,
    pairs: &[(String, String)],
) -> Acked {
    let mut acked = Acked::default();
    let Some(mut c) = connect(port) else {
        return acked;
    };
    let tag = format!("{cycle}:{id}");
    let (pa, pb) = &pairs[id];
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let s = format!("s:{tag}:{}", n % 16);
        let h = format!("h:{tag}");
        let f = format!("f{}", n % 8);
        let z = format!("z:{tag}");
        let m = format!("m{}", n % 8);
        let (l, set, x, cnt) = (
            format!("l:{tag}"),
            format!("set:{tag}"),
            format!("x:{tag}"),
            format!("cnt:{tag}"),
        );
        let mut p = redis::pipe();
        p.cmd("SET").arg(&s).arg(n).ignore();
        p.cmd("HSET").arg(&h).arg(&f).arg(n).ignore();
        p.cmd("ZADD").arg(&z).arg(n).arg(&m).ignore();
        p.cmd("RPUSH").arg(&l).arg(n).ignore();
        p.cmd("SADD").arg(&set).arg(n).ignore();
        p.cmd("XADD").arg(&x).arg("*").arg("n").arg(n).ignore();
        p.cmd("INCR").arg(&cnt).ignore();
        if p.query::<()>(&mut c).is_err() {
            break;
        }
        let pair: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(pa)
            .arg(n)
            .ignore()
            .cmd("SET")
            .arg(pb)
            .arg(n)
            .ignore()
            .query(&mut c);
        if pair.is_err() {
            break;
        }
        match redis::cmd("WAIT").arg(1).arg(2000).query::<i64>(&mut c) {
            Ok(k) if k >= 1 => {
                acked.steps += 1;
                for (k, v) in [
                    (s, n),
                    (format!("{h} {f}"), n),
                    (format!("{z} {m}"), n),
                    (cnt, n),
                    (pa.clone(), n),
                    (pb.clone(), n),
                ] {
                    acked.at_least.insert(k, v);
                }
                for k in [l, set, x] {
                    acked.members.entry(k).or_default().push(n);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    acked
}

/// Every acknowledged write is on the server at `port`; returns what is missing.
fn missing(port: u16, acked: &Acked) -> anyhow::Result<Vec<String>> {
    let mut c = connect(port).context("connecting to the new primary")?;
    let mut out = Vec::new();
    let num = |v: Option<String>| v.and_then(|s| s.parse::<i64>().ok()).unwrap_or(i64::MIN);
    for (k, want) in &acked.at_least {
        let got = match k.split_once(' ') {
            Some((key, field)) if key.starts_with("h:") => {
                num(redis::cmd("HGET").arg(key).arg(field).query(&mut c)?)
            }
            Some((key, member)) => num(redis::cmd("ZSCORE").arg(key).arg(member).query(&mut c)?),
            None => num(redis::cmd("GET").arg(k).query(&mut c)?),
        };
        if got < *want {
            out.push(format!("{k}: {got} < acknowledged {want}"));
        }
    }
    for (k, want) in &acked.members {
        let have: Vec<i64> = if k.starts_with("l:") {
            redis::cmd("LRANGE").arg(k).arg(0).arg(-1).query(&mut c)?
        } else if k.starts_with("set:") {
            redis::cmd("SMEMBERS").arg(k).query(&mut c)?
        } else {
            let entries: Vec<(String, Vec<(String, i64)>)> = redis::cmd("XRANGE")
                .arg(k)
                .arg("-")
                .arg("+")
                .query(&mut c)?;
            entries
                .into_iter()
                .flat_map(|(_, f)| f.into_iter().map(|(_, v)| v))
                .collect()
        };
        let lost: Vec<&i64> = want.iter().filter(|n| !have.contains(n)).collect();
        if !lost.is_empty() {
            out.push(format!(
                "{k}: acknowledged {} members lost: {lost:?}",
                lost.len()
            ));
        }
    }
    Ok(out)
}

/// Every key's content on the server at `port` (for convergence).
fn dataset(port: u16) -> anyhow::Result<BTreeMap<String, String>> {
    let mut c = connect(port).context("connecting")?;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c)?;
    let mut out = BTreeMap::new();
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(&k).query(&mut c)?;
        let v = match t.as_str() {
            "string" => format!(
                "{:?}",
                redis::cmd("GET").arg(&k).query::<Option<String>>(&mut c)?
            ),
            "list" => format!(
                "{:?}",
                redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query::<Vec<String>>(&mut c)?
            ),
            "hash" => format!(
                "{:?}",
                redis::cmd("HGETALL")
                    .arg(&k)
                    .query::<BTreeMap<String, String>>(&mut c)?
            ),
            "set" => {
                let mut m: Vec<String> = redis::cmd("SMEMBERS").arg(&k).query(&mut c)?;
                m.sort();
                format!("{m:?}")
            }
            "zset" => format!(
                "{:?}",
                redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query::<Vec<String>>(&mut c)?
            ),
            "stream" => format!(
                "{:?}",
                redis::cmd("XRANGE")
                    .arg(&k)
                    .arg("-")
                    .arg("+")
                    .query::<redis::Value>(&mut c)?
            ),
            other => other.to_string(),
        };
        out.insert(k, format!("{t} {v}"));
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("redis-server is not installed (apt-get install redis-server): Sentinel is redis-server --sentinel");
    }
    let cycles = args.cycles.unwrap_or(if args.quick { 1 } else { 5 });
    let bin = match args.bin {
        Some(b) => b,
        None => crate::server::build_release()?,
    };
    let work = tempfile::Builder::new()
        .prefix("moon-failover-")
        .tempdir()?;
    eprintln!(
        "failover: {cycles} cycles, 3 nodes of {} shards, work dir {}",
        args.shards,
        work.path().display()
    );
    let mut nodes = Vec::new();
    for i in 0..3 {
        let dir = work.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&dir)?;
        nodes.push(Node {
            port: free_port()?,
            log: work.path().join(format!("node-{i}.log")),
            dir,
            server: None,
        });
    }
    let first = nodes[0].port;
    nodes[0].start(&bin, args.shards, None)?;
    for n in &mut nodes[1..] {
        n.start(&bin, args.shards, Some(first))?;
    }
    if !eventually(Duration::from_secs(30), || {
        info(first, "connected_slaves").as_deref() == Some("2")
    }) {
        bail!("the replicas did not connect");
    }
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|i| Sentinel::start(work.path(), i, first))
        .collect::<anyhow::Result<_>>()?;
    if !eventually(Duration::from_secs(30), || {
        sentinels
            .iter()
            .all(|s| s.count("REPLICAS") == 2 && s.count("SENTINELS") == 2)
    }) {
        bail!("the sentinels did not find the replicas and each other");
    }
    let mut ok = true;
    let mut total_steps = 0;
    for cycle in 0..cycles {
        let Some(primary) = sentinels[0].master() else {
            bail!("sentinel names no primary");
        };
        let shards = args.shards;
        // Pairs of keys on different shards, one per writer.
        let pairs: Vec<(String, String)> = (0..WRITERS)
            .map(|w| {
                let a = format!("pair:{cycle}:{w}:a");
                let b = (0..)
                    .map(|i| format!("pair:{cycle}:{w}:b{i}"))
                    .find(|b| slot(b.as_bytes()) % shards != slot(a.as_bytes()) % shards)
                    .unwrap_or_default();
                (a, b)
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let torn = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let replica = nodes
            .iter()
            .find(|n| n.port != primary)
            .map(|n| n.port)
            .unwrap_or(0);
        let reader = {
            let (stop, torn, reads, pairs) =
                (stop.clone(), torn.clone(), reads.clone(), pairs.clone());
            std::thread::spawn(move || {
                let Some(mut c) = connect(replica) else {
                    return;
                };
                while !stop.load(Ordering::Relaxed) {
                    for (a, b) in &pairs {
                        let Ok(v) = redis::cmd("MGET")
                            .arg(a)
                            .arg(b)
                            .query::<Vec<Option<String>>>(&mut c)
                        else {
                            return;
                        };
                        reads.fetch_add(1, Ordering::Relaxed);
                        if v.first() != v.get(1) {
                            torn.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (stop, pairs) = (stop.clone(), pairs.clone());
                std::thread::spawn(move || write(w, cycle, primary, &stop, &pairs))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2000));
        // The primary dies mid-load.
        let dead = nodes
            .iter_mut()
            .find(|n| n.port == primary)
            .context("the primary's node")?;
        if let Some(s) = dead.server.take() {
            s.kill();
        }
        let acked: Vec<Acked> = writers.into_iter().filter_map(|w| w.join().ok()).collect();
        let steps: u64 = acked.iter().map(|a| a.steps).sum();
        total_steps += steps;
        if !eventually(Duration::from_secs(60), || {
            sentinels
                .iter()
                .all(|s| s.master().is_some_and(|p| p != primary))
        }) {
            bail!("cycle {cycle}: Sentinel did not promote a replica");
        }
        let new = sentinels[0].master().unwrap_or(0);
        if !eventually(Duration::from_secs(10), || {
            info(new, "role").as_deref() == Some("master")
        }) {
            bail!("cycle {cycle}: the promoted node does not say role:master");
        }
        let mut lost = Vec::new();
        for a in &acked {
            lost.extend(missing(new, a).context("reading the new primary")?);
        }
        // The failover is over once the other replica follows the new primary (Sentinel
        // reconfigured it): only then does the old primary come back, as an operator would
        // restart it. Back earlier, while Sentinel still lists it, a second failover could
        // pick it, stale data and all (Sentinel does not check a candidate's role).
        let other = nodes
            .iter()
            .find(|n| n.port != primary && n.port != new)
            .map(|n| n.port)
            .unwrap_or(0);
        if !eventually(Duration::from_secs(60), || {
            info(other, "master_port") == Some(new.to_string())
                && info(other, "master_link_status").as_deref() == Some("up")
        }) {
            bail!("cycle {cycle}: the other replica did not follow the new primary");
        }
        // The old primary comes back on its address; Sentinel makes it a replica.
        let old = nodes
            .iter_mut()
            .find(|n| n.port == primary)
            .context("the old node")?;
        old.start(&bin, args.shards, None)?;
        let rejoined = eventually(Duration::from_secs(60), || {
            info(primary, "master_port") == Some(new.to_string())
                && info(primary, "master_link_status").as_deref() == Some("up")
        });
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let mut c = connect(new).context("the new primary")?;
        let caught_up: i64 = redis::cmd("WAIT")
            .arg(2)
            .arg(30000)
            .query(&mut c)
            .context("WAIT 2 on the new primary")?;
        let reference = dataset(new).context("the new primary's data")?;
        let mut diverged = Vec::new();
        for n in nodes.iter().filter(|n| n.port != new) {
            if dataset(n.port)? != reference {
                diverged.push(n.port);
            }
        }
        // Still there once everything settled (a later failover must not bring back a stale
        // copy).
        if let Some(now_primary) = sentinels[0].master() {
            for a in &acked {
                lost.extend(missing(now_primary, a).context("reading the primary at the end")?);
            }
        }
        let torn = torn.load(Ordering::Relaxed);
        eprintln!(
            "cycle {cycle}: primary :{primary} killed after {steps} acknowledged steps, :{new} promoted; lost {}, torn {torn} of {} reads, old primary rejoined {rejoined}, replicas caught up {caught_up}/2, diverged {diverged:?}, {} keys",
            lost.len(),
            reads.load(Ordering::Relaxed),
            reference.len()
        );
        for l in lost.iter().take(10) {
            eprintln!("  lost: {l}");
        }
        if !lost.is_empty()
            || torn > 0
            || !rejoined
            || caught_up != 2
            || !diverged.is_empty()
            || steps == 0
        {
            ok = false;
            break;
        }
    }
    eprintln!(
        "failover: {} ({total_steps} acknowledged steps); logs in {}",
        if ok { "PASSED" } else { "FAILED" },
        work.path().display()
    );
    if !ok {
        // Keep the logs of a failure.
        let _ = work.keep();
    }
    Ok(ok)
}
