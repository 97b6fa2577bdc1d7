//! `cargo xtask crash-matrix`: the proof that no acknowledged write is lost.
//!
//! For each configuration (shards × appendfsync × mode) it runs K kill cycles on one data
//! directory. A cycle: start the release server (on the directory the last cycle left), check
//! every write acknowledged so far is there, drive it with [`CONNECTIONS`] concurrent
//! connections (unique SETs, INCRs on shared counters, 4-key MSETs that span shards, and
//! MULTI/EXEC transfers between accounts on different shards), and SIGKILL it at a random
//! instant. Mode `restart` also kills the next start at a random
//! instant — usually during its replay — before the start that checks. A final start checks
//! everything once more.
//!
//! What counts: an acknowledged SET must read back its value; a counter must lie between its
//! acknowledged INCRs and that plus the INCRs in flight when the server died; every
//! acknowledged MSET must be complete, and an MSET in flight at the kill must be wholly there
//! or wholly absent (a partly present one is *torn*); the accounts' sum must be conserved and
//! the transfer counter (incremented inside each transfer) must lie between the acknowledged
//! transfers and that plus the ones in flight. The server must come up without help. Mode
//! `rewrite` issues BGREWRITEAOF every 20 ms during the load, so kills land inside rewrites.
//! Mode `failed-commit` does the same on a server whose rewrites all fail after their
//! manifest's rename (the `MOON_REWRITE_FAULT` seam): the first one leaves both generations on
//! disk, every later one must be refused, and the next start must find everything. Mode
//! `busy-shard` keeps shard 0's executor stopped (`DEBUG SLEEP 3`) for most of the cycle:
//! under `everysec` its writes must still be fsynced within the second, so a power cut takes
//! nothing acknowledged more than 2 s before it, on any shard.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::Commands;

use crate::model::ModelClient;
use crate::powerfs::{CutMode, PowerLossFs};
use crate::rng::Rng;
use crate::server::{build_release, root, Server};

/// Concurrent client connections per cycle.
pub const CONNECTIONS: usize = 8;
/// Model-checked connections per cycle, besides those ([`crate::model`]).
pub const MODEL_CONNECTIONS: usize = 4;
const COUNTERS: usize = 16;
const ACCOUNTS: usize = 8;
const START_BALANCE: i64 = 1000;

#[derive(clap::Args)]
pub struct Args {
    /// A reduced matrix that finishes in well under 3 minutes (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Kill cycles per configuration (default: 20, about 10 minutes in all on a 2-CPU machine;
    /// 3 with --quick).
    #[arg(long)]
    cycles: Option<usize>,
    /// Seed for kill instants and key choice; the same seed repeats the same schedule.
    #[arg(long)]
    seed: Option<u64>,
    /// Use this moon-server binary instead of building one.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// The moon-cli binary for `during-migrate` (default: `moon-cli` beside the server).
    #[arg(long)]
    cli: Option<PathBuf>,
    /// Power loss instead of process death: the data directory lives on the power-loss FUSE
    /// file system ([`crate::powerfs`]); after each kill everything not fsynced is thrown
    /// away (or a random prefix of it kept, torn), then the server restarts on what is left.
    /// Runs `always` (nothing acknowledged may be lost) and `everysec` (what was acknowledged
    /// more than 2 s before the cut may not be lost, the 2 s growing by any time this process
    /// itself stood still: [`FreezeWatch`]); nothing may ever be torn.
    #[arg(long)]
    power_loss: bool,
    /// Only the configurations whose name contains this (e.g. `busy-shard`, `shards=2`).
    #[arg(long)]
    only: Option<String>,
    /// Pin each shard to a CPU (`--pin-cpus yes`), as a production server runs: executors then
    /// spin before they park, which unpinned ones never do.
    #[arg(long)]
    pinned: bool,
}

/// How much acknowledged work a power cut may take under `everysec`: the last second's
/// writes, plus the fsync in flight, plus slack for a loaded machine.
const EVERYSEC_WINDOW: Duration = Duration::from_secs(2);

/// A stretch in which the test process itself did not run (a paused virtual machine, an
/// overcommitted host) counts as a freeze when it is at least this long.
const FREEZE_MIN: Duration = Duration::from_millis(200);

/// Watches, during a cycle's load, for stretches in which this process did not run at all:
/// a thread that sleeps 10 ms at a time and records each wake-up late by [`FREEZE_MIN`] or more.
///
/// The `everysec` promise is about a running machine: a second of the server's time. When the
/// whole machine stood still (the clients, this watch and the server alike), the server's
/// fsync thread stood still with it, so a power cut's window grows by the frozen time — and
/// only by what this watch measured. A server or file-system stall while the machine ran is
/// not a freeze: the watch sees nothing, and what it lost counts as lost.
struct FreezeWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl FreezeWatch {
    fn start() -> FreezeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            const STEP: Duration = Duration::from_millis(10);
            let mut freezes = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let before = Instant::now();
                std::thread::sleep(STEP);
                let late = before.elapsed().saturating_sub(STEP);
                if late >= FREEZE_MIN {
                    freezes.push(late);
                }
            }
            freezes
        });
        FreezeWatch { stop, thread }
    }

    /// Stops the watch: the freezes it saw, longest first.
    fn stop(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut freezes = self.thread.join().unwrap_or_default();
        freezes.sort_unstable_by(|a, b| b.cmp(a));
        freezes
    }
}

fn cut_mode(rng: &mut Rng) -> CutMode {
    match rng.below(2) {
        0 => CutMode::DiscardUnsynced,
        _ => CutMode::KeepPrefix { seed: rng.next() },
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plain,
    Restart,
    /// BGREWRITEAOF issued again and again during the load, so kills land inside rewrites.
    Rewrite,
    /// After each kill, `moon-cli migrate-aof` reshards the directory (N <-> N+1 shards) and
    /// is itself killed at a random instant: the directory must be wholly old or wholly new.
    Migrate,
    /// BGREWRITEAOF again and again on a server whose rewrite commits all fail after the
    /// manifest's rename.
    FailedCommit,
    /// Shard 0's executor stopped for seconds at a time (DEBUG SLEEP) during the load.
    BusyShard,
}

/// Every mode, in the order the matrix runs them.
const ALL_MODES: &[Mode] = &[
    Mode::Plain,
    Mode::Restart,
    Mode::Rewrite,
    Mode::Migrate,
    Mode::FailedCommit,
    Mode::BusyShard,
];

struct Config {
    shards: usize,
    fsync: &'static str,
    mode: Mode,
    power_loss: bool,
    pinned: bool,
}

impl Config {
    fn name(&self) -> String {
        let mode = match self.mode {
            Mode::Plain => "plain",
            Mode::Restart => "during-restart",
            Mode::Rewrite => "during-rewrite",
            Mode::Migrate => "during-migrate",
            Mode::FailedCommit => "after-failed-commit",
            Mode::BusyShard => "busy-shard",
        };
        let kill = if self.power_loss {
            "power-cut"
        } else {
            "kill-9"
        };
        let pinned = if self.pinned { " pinned" } else { "" };
        format!(
            "shards={} fsync={} {mode} {kill}{pinned}",
            self.shards, self.fsync
        )
    }

    /// How long before a power cut an acknowledgement may be and still be lost.
    fn loss_window(&self) -> Duration {
        match self.fsync {
            "always" => Duration::ZERO,
            _ => EVERYSEC_WINDOW,
        }
    }
}

/// Everything acknowledged (or in flight) in one configuration so far.
#[derive(Default)]
struct Expected {
    /// Key, value, and how long before the kill the SET was acknowledged (named when lost).
    sets: Vec<(String, String, Duration)>,
    msets: Vec<Vec<(String, String)>>,
    incr_acked: HashMap<String, i64>,
    incr_in_flight: HashMap<String, i64>,
    msets_in_flight: Vec<Vec<(String, String)>>,
    transfers_acked: i64,
    transfers_in_flight: i64,
    acknowledged: u64,
    /// When the accounts were created, and whether that MSET is known to be durable (a power
    /// cut within the fsync window may take it back whole: then the accounts sum to 0).
    accounts_created: Option<Instant>,
    accounts_durable: bool,
}

impl Expected {
    /// Takes in what one client saw acknowledged. What was acknowledged after
    /// `durable_before` (within a power cut's window) need not have survived: it is checked
    /// like work in flight — whole or absent, within the counters' bounds.
    fn add(&mut self, l: ClientLog, durable_before: Instant, killed_at: Instant) {
        let durable = |t: &Instant| *t <= durable_before;
        self.accounts_durable |= self.accounts_created.is_some_and(|t| durable(&t));
        self.acknowledged +=
            (l.sets.len() + l.msets.len() + l.incrs.len() + l.transfers.len()) as u64;
        self.sets.extend(
            l.sets
                .into_iter()
                .filter(|s| durable(&s.2))
                .map(|(k, v, t)| (k, v, killed_at.saturating_duration_since(t))),
        );
        for (pairs, t) in l.msets {
            if durable(&t) {
                self.msets.push(pairs);
            } else {
                self.msets_in_flight.push(pairs);
            }
        }
        for (k, t) in l.incrs {
            let map = if durable(&t) {
                &mut self.incr_acked
            } else {
                &mut self.incr_in_flight
            };
            *map.entry(k).or_default() += 1;
        }
        if let Some(k) = l.in_flight_incr {
            *self.incr_in_flight.entry(k).or_default() += 1;
        }
        self.msets_in_flight.extend(l.in_flight_mset);
        for t in l.transfers {
            if durable(&t) {
                self.transfers_acked += 1;
            } else {
                self.transfers_in_flight += 1;
            }
        }
        self.transfers_in_flight += i64::from(l.in_flight_transfer);
    }
}

/// One configuration's row.
#[derive(Default)]
struct Row {
    cycles: usize,
    acknowledged: u64,
    recovered: u64,
    lost: u64,
    torn: u64,
    partial_in_flight: u64,
    killed_in_replay: u64,
    rewrites: u64,
    /// Model clients: write commands acknowledged, keys read back different from the model.
    model_acknowledged: u64,
    model_wrong: u64,
    /// The job queue: pushes and finishes acknowledged, jobs lost, duplicated or invented.
    queue_acknowledged: u64,
    queue_wrong: u64,
    /// Power cuts made, and the unsynced bytes they threw away.
    cuts: u64,
    bytes_cut: u64,
    /// `moon-cli migrate-aof` runs started, and how many were killed before they finished.
    migrations: u64,
    migrations_killed: u64,
    /// `DEBUG SLEEP`s sent to stop shard 0 (mode `busy-shard`).
    busy_sleeps: u64,
    failures: Vec<String>,
    /// Per cycle, the longest stretch without an acknowledgement (shown when a check fails:
    /// a stalled disk or file system shows there).
    pauses: Vec<String>,
    /// How long this process stood still during the loads, in all ([`FreezeWatch`]).
    frozen: Duration,
    /// The power-loss file system's slowest request during a load.
    fs_slowest: Duration,
}

/// The longest stretch between two acknowledgements of a cycle, and where it ended, as a line
/// for a failure report.
fn longest_pause(
    cycle: usize,
    mut acks: Vec<Instant>,
    killed_at: Instant,
    freezes: &[Duration],
) -> String {
    let froze = match freezes {
        [] => String::from("; this process never stood still"),
        [longest, ..] => format!(
            "; this process stood still {} times, {:.3} s in all, at most {:.3} s at once",
            freezes.len(),
            freezes.iter().sum::<Duration>().as_secs_f64(),
            longest.as_secs_f64()
        ),
    };
    acks.sort_unstable();
    let before_kill = |t: Instant| killed_at.saturating_duration_since(t).as_secs_f64();
    let widest = acks
        .windows(2)
        .map(|w| (w[1].saturating_duration_since(w[0]), w[1]))
        .max();
    match (widest, acks.last()) {
        (Some((gap, end)), Some(last)) => format!(
            "cycle {cycle}: {} acknowledgements; the longest stretch without one {:.3} s, ending {:.3} s before the kill; the last {:.3} s before it{froze}",
            acks.len(),
            gap.as_secs_f64(),
            before_kill(end),
            before_kill(*last)
        ),
        _ => format!("cycle {cycle}: {} acknowledgements{froze}", acks.len()),
    }
}

/// What one connection did until the server died, with the instant of each acknowledgement
/// (a power cut may take back what was acknowledged within the fsync policy's window).
#[derive(Default)]
struct ClientLog {
    sets: Vec<(String, String, Instant)>,
    msets: Vec<(Vec<(String, String)>, Instant)>,
    incrs: Vec<(String, Instant)>,
    in_flight_incr: Option<String>,
    in_flight_mset: Option<Vec<(String, String)>>,
    transfers: Vec<Instant>,
    in_flight_transfer: bool,
}

fn client(url: String, tag: String, seed: u64, stop: Arc<AtomicBool>) -> ClientLog {
    let mut log = ClientLog::default();
    let mut rng = Rng(seed | 1);
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return log;
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(30)));
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let ok = match rng.below(5) {
            4 => {
                // A transfer between two accounts (usually on different shards), counted.
                let from = format!("acct:{}", rng.below(ACCOUNTS as u64));
                let to = format!("acct:{}", rng.below(ACCOUNTS as u64));
                let amount = 1 + rng.below(50);
                log.in_flight_transfer = true;
                redis::pipe()
                    .atomic()
                    .cmd("DECRBY")
                    .arg(&from)
                    .arg(amount)
                    .cmd("INCRBY")
                    .arg(&to)
                    .arg(amount)
                    .cmd("INCR")
                    .arg("transfers")
                    .query::<redis::Value>(&mut con)
                    .map(|_| {
                        log.transfers.push(Instant::now());
                        log.in_flight_transfer = false;
                    })
            }
            0 | 1 => {
                let (k, v) = (
                    format!("s:{tag}:{i}"),
                    format!("v:{tag}:{i}:{}", rng.next()),
                );
                con.set::<_, _, ()>(&k, &v)
                    .map(|()| log.sets.push((k, v, Instant::now())))
            }
            2 => {
                let c = format!("ctr:{}", rng.below(COUNTERS as u64));
                log.in_flight_incr = Some(c.clone());
                con.incr::<_, _, i64>(&c, 1).map(|_| {
                    log.incrs.push((c, Instant::now()));
                    log.in_flight_incr = None;
                })
            }
            _ => {
                let pairs: Vec<(String, String)> = (0..4)
                    .map(|j| (format!("m:{tag}:{i}:{j}"), format!("mv:{tag}:{i}:{j}")))
                    .collect();
                log.in_flight_mset = Some(pairs.clone());
                con.mset::<_, _, ()>(&pairs).map(|()| {
                    log.msets.push((pairs, Instant::now()));
                    log.in_flight_mset = None;
                })
            }
        };
        if ok.is_err() {
            break;
        }
    }
    log
}

fn server_args(cfg: &Config, shards: usize, dir: &Path) -> Vec<String> {
    let mut args = crate::server::test_server_args(shards, cfg.fsync, dir);
    if cfg.pinned {
        if let Some(i) = args.iter().position(|a| a == "--pin-cpus") {
            args[i + 1] = "yes".into();
        }
    }
    if cfg.mode == Mode::BusyShard {
        args.extend(["--enable-debug-command".into(), "yes".into()]);
    }
    args
}

/// The environment of the server a cycle loads: mode `failed-commit` fails every rewrite's
/// commit after the rename.
fn server_env(cfg: &Config) -> Vec<(&'static str, &'static str)> {
    match cfg.mode {
        Mode::FailedCommit => vec![("MOON_REWRITE_FAULT", "after-rename")],
        _ => Vec::new(),
    }
}

/// Mode `busy-shard`: from a connection on shard 0, stops that shard's executor for 3 s at a
/// time (after 600 ms of load), until `stop`. Returns the sleeps sent.
fn busy_shard_0(url: String, stop: Arc<AtomicBool>) -> u64 {
    let mut sleeps = 0;
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let on_shard_0 = (0..200).find_map(|_| {
        let mut c = client.get_connection().ok()?;
        let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).ok()?;
        info.split_whitespace().any(|f| f == "shard=0").then_some(c)
    });
    let Some(mut con) = on_shard_0 else {
        return 0;
    };
    std::thread::sleep(Duration::from_millis(600));
    while !stop.load(Ordering::Relaxed) {
        // Counted when sent: the kill usually lands inside one.
        sleeps += 1;
        if redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(3)
            .query::<()>(&mut con)
            .is_err()
        {
            break;
        }
    }
    sleeps
}

/// Reads back every model client's keys (see [`crate::model`]); adds what differs.
fn verify_queue(
    addr: std::net::SocketAddr,
    jobs: &std::sync::Mutex<crate::queue::Jobs>,
    row: &mut Row,
) -> anyhow::Result<()> {
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    let wrong = jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .verify(&mut con)?;
    for f in wrong {
        row.queue_wrong += 1;
        if row.failures.len() < 20 {
            row.failures.push(format!("queue: {f}"));
        }
    }
    Ok(())
}

fn verify_models(
    addr: std::net::SocketAddr,
    models: &mut [ModelClient],
    row: &mut Row,
) -> anyhow::Result<()> {
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    for m in models {
        for f in m.verify(&mut con)? {
            row.model_wrong += 1;
            if row.failures.len() < 20 {
                row.failures.push(format!("model: {f}"));
            }
        }
    }
    Ok(())
}

/// Reads back everything expected; adds to the row's recovered/lost/torn counts.
fn verify(
    addr: std::net::SocketAddr,
    exp: &Expected,
    row: &mut Row,
    final_check: bool,
) -> anyhow::Result<()> {
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    let (mut recovered, mut lost, mut torn) = (0u64, 0u64, 0u64);
    for chunk in exp.sets.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _, _)| k.as_str()).collect();
        let got: Vec<Option<String>> = con.mget(&keys)?;
        for ((k, v, age), g) in chunk.iter().zip(got) {
            if g.as_deref() == Some(v.as_str()) {
                recovered += 1;
            } else {
                lost += 1;
                if row.failures.len() < 20 {
                    row.failures
                        .push(format!(
                            "lost SET {k}: expected {v}, found {g:?} (acknowledged {:.3} s before the kill)",
                            age.as_secs_f64()
                        ));
                }
            }
        }
    }
    let check_mset =
        |con: &mut redis::Connection, pairs: &[(String, String)]| -> anyhow::Result<usize> {
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            let got: Vec<Option<String>> = con.mget(&keys)?;
            Ok(pairs
                .iter()
                .zip(got)
                .filter(|((_, v), g)| g.as_deref() == Some(v.as_str()))
                .count())
        };
    for pairs in &exp.msets {
        match check_mset(&mut con, pairs)? {
            n if n == pairs.len() => recovered += 1,
            0 => {
                lost += 1;
                row.failures.push(format!("lost MSET {}", pairs[0].0));
            }
            _ => {
                torn += 1;
                row.failures.push(format!("torn MSET {}", pairs[0].0));
            }
        }
    }
    let mut partial = 0;
    for pairs in &exp.msets_in_flight {
        let n = check_mset(&mut con, pairs)?;
        if n != 0 && n != pairs.len() {
            partial += 1;
            torn += 1;
            row.failures
                .push(format!("MSET in flight recovered in part: {}", pairs[0].0));
        }
    }
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct:{i}")).collect();
    let balances: Vec<Option<i64>> = con.mget(&accounts)?;
    let sum: i64 = balances.iter().map(|b| b.unwrap_or(0)).sum();
    // Accounts whose creation a power cut may have taken back are recreated each cycle (with
    // every transfer since, all of which sum to 0) until their creation is durable.
    let lost_creation = !exp.accounts_durable && sum == 0;
    if sum != START_BALANCE * ACCOUNTS as i64 && !lost_creation {
        torn += 1;
        row.failures.push(format!(
            "accounts sum to {sum}, not {}: a transfer was recovered in part ({balances:?})",
            START_BALANCE * ACCOUNTS as i64
        ));
    }
    let transfers: i64 = con.get::<_, Option<i64>>("transfers")?.unwrap_or(0);
    if transfers < exp.transfers_acked {
        lost += (exp.transfers_acked - transfers) as u64;
        row.failures.push(format!(
            "{transfers} transfers recovered, {} acknowledged",
            exp.transfers_acked
        ));
    } else if transfers > exp.transfers_acked + exp.transfers_in_flight {
        torn += 1;
        row.failures.push(format!(
            "{transfers} transfers recovered, more than {} acknowledged + {} in flight",
            exp.transfers_acked, exp.transfers_in_flight
        ));
    } else {
        recovered += exp.transfers_acked as u64;
    }
    for c in 0..COUNTERS {
        let name = format!("ctr:{c}");
        let acked = exp.incr_acked.get(&name).copied().unwrap_or(0);
        let in_flight = exp.incr_in_flight.get(&name).copied().unwrap_or(0);
        let got: i64 = con.get::<_, Option<i64>>(&name)?.unwrap_or(0);
        if got < acked {
            lost += (acked - got) as u64;
            row.failures.push(format!(
                "{name} = {got}, but {acked} INCRs were acknowledged"
            ));
        } else if got > acked + in_flight {
            row.failures.push(format!(
                "{name} = {got}, more than {acked} acknowledged + {in_flight} in flight"
            ));
            torn += 1;
        } else {
            recovered += acked as u64;
        }
    }
    if final_check {
        row.recovered = recovered;
        row.partial_in_flight = partial;
    }
    row.lost = row.lost.max(lost);
    row.torn = row.torn.max(torn);
    Ok(())
}

/// The shard count the manifest in `data` names (what a migration left: old or new).
fn manifest_shards(data: &Path) -> anyhow::Result<usize> {
    let path = data.join("appendonlydir/moon.aof.manifest");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("shards ")?.trim().parse().ok())
        .with_context(|| format!("{} names no shard count", path.display()))
}

/// Mode `during-migrate`: reshard `data` to `to` shards with moon-cli, killed at a random
/// instant (or not). Returns whether it was killed.
fn migrate_killed(
    cli: &Path,
    data: &Path,
    to: usize,
    log: &Path,
    rng: &mut Rng,
) -> anyhow::Result<bool> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut child = std::process::Command::new(cli)
        .args(["migrate-aof", "--dir"])
        .arg(data)
        .args(["--shards", &to.to_string()])
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", cli.display()))?;
    // A random instant within what a migration of this data takes here (tens of ms).
    let deadline = Instant::now() + Duration::from_millis(rng.below(30));
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(
                status.success(),
                "moon-cli migrate-aof failed: {status} (see {})",
                log.display()
            );
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    match child.try_wait()? {
        Some(status) => {
            anyhow::ensure!(
                status.success(),
                "moon-cli migrate-aof failed: {status} (see {})",
                log.display()
            );
            Ok(false)
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Ok(true)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_config(
    bin: &Path,
    cli: &Path,
    cfg: &Config,
    cycles: usize,
    rng: &mut Rng,
    work: &Path,
    power: Option<&PowerLossFs>,
) -> anyhow::Result<Row> {
    let dir = work.join(cfg.name().replace([' ', '='], "_"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Under power loss the data lives on the mounted power-loss file system.
    let data = match power {
        Some(fs) => fs.mountpoint().join(cfg.name().replace([' ', '='], "_")),
        None => dir.join("data"),
    };
    let _ = std::fs::remove_dir_all(&data);
    let log = dir.join("server.log");
    let mut exp = Expected::default();
    let mut row = Row::default();
    let mut shards = cfg.shards;
    let mut models: Vec<ModelClient> = (0..MODEL_CONNECTIONS)
        .map(|i| ModelClient::new(i, rng.next()))
        .collect();
    let jobs = Arc::new(std::sync::Mutex::new(crate::queue::Jobs::default()));
    for cycle in 0..cycles {
        let env = server_env(cfg);
        let mut server = Server::spawn_with_env(bin, &server_args(cfg, shards, &data), &env, &log)?;
        let addr = server
            .wait_ready(Duration::from_secs(120))
            .with_context(|| {
                format!(
                    "{}: cycle {cycle}: start (see {})",
                    cfg.name(),
                    log.display()
                )
            })?;
        verify(addr, &exp, &mut row, false)?;
        verify_models(addr, &mut models, &mut row)?;
        verify_queue(addr, &jobs, &mut row)?;
        if row.lost > 0 || row.torn > 0 || row.model_wrong > 0 || row.queue_wrong > 0 {
            server.kill();
            break;
        }
        if !exp.accounts_durable {
            let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
            let accounts: Vec<(String, i64)> = (0..ACCOUNTS)
                .map(|i| (format!("acct:{i}"), START_BALANCE))
                .collect();
            redis::cmd("MSET").arg(&accounts).query::<()>(&mut con)?;
            exp.accounts_created = Some(Instant::now());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let freeze_watch = FreezeWatch::start();
        if let Some(fs) = power {
            fs.take_longest_request(); // from here on: this load's
        }
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let (url, tag, seed, stop) = (
                    format!("redis://{addr}/"),
                    format!("{cycle}.{c}"),
                    rng.next(),
                    stop.clone(),
                );
                std::thread::spawn(move || client(url, tag, seed, stop))
            })
            .collect();
        let model_handles: Vec<_> = models
            .drain(..)
            .map(|m| {
                let (url, stop) = (format!("redis://{addr}/"), stop.clone());
                std::thread::spawn(move || m.run(&url, stop))
            })
            .collect();
        let queue_handles = crate::queue::start(&format!("redis://{addr}/"), &jobs, &stop);
        let busy = (cfg.mode == Mode::BusyShard).then(|| {
            let (url, stop) = (format!("redis://{addr}/"), stop.clone());
            std::thread::spawn(move || busy_shard_0(url, stop))
        });
        let first_rewrite_after = Duration::from_millis(match cfg.mode {
            // Some load first, so the failed commit has something to lose.
            Mode::FailedCommit => 50 + rng.below(300),
            _ => 0,
        });
        let rewriter = matches!(cfg.mode, Mode::Rewrite | Mode::FailedCommit).then(|| {
            let (url, stop) = (format!("redis://{addr}/"), stop.clone());
            std::thread::spawn(move || {
                let mut started = 0u64;
                let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
                    return started;
                };
                std::thread::sleep(first_rewrite_after);
                while !stop.load(Ordering::Relaxed) {
                    match redis::cmd("BGREWRITEAOF").query::<String>(&mut con) {
                        Ok(_) => started += 1,
                        Err(e) if e.is_io_error() || e.is_connection_dropped() => break,
                        Err(_) => {} // one is already running
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                started
            })
        });
        // The kill instant is the point of the exercise: random, under load. A power cut under
        // a lazy policy may take the last window's acknowledgements, so those cycles run well
        // past the window: what came before it must survive.
        let window = if power.is_some() {
            cfg.loss_window()
        } else {
            Duration::ZERO
        };
        std::thread::sleep(window + Duration::from_millis(100 + rng.below(400)) + window / 2);
        server.kill();
        let killed_at = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let freezes = freeze_watch.stop();
        let fs_longest = power.map(PowerLossFs::take_longest_request);
        let frozen: Duration = freezes.iter().sum();
        if let Some(r) = rewriter {
            row.rewrites += r
                .join()
                .map_err(|_| anyhow::anyhow!("rewriter thread panicked"))?;
        }
        if let Some(b) = busy {
            row.busy_sleeps += b
                .join()
                .map_err(|_| anyhow::anyhow!("busy-shard thread panicked"))?;
        }
        // What must have survived: everything acknowledged, except — after a power cut under
        // a lazy fsync policy — what was acknowledged within the policy's window before it.
        // A freeze of the whole machine stopped the server's fsync thread too: the window
        // grows by it (see FreezeWatch).
        let durable_before =
            killed_at - power.map_or(Duration::ZERO, |_| cfg.loss_window() + frozen);
        let mut acks = Vec::new();
        for h in handles {
            let l = h
                .join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
            acks.extend(l.sets.iter().map(|s| s.2));
            acks.extend(l.msets.iter().map(|m| m.1));
            acks.extend(l.incrs.iter().map(|i| i.1));
            acks.extend(l.transfers.iter().copied());
            exp.add(l, durable_before, killed_at);
        }
        let mut pause = longest_pause(cycle, acks, killed_at, &freezes);
        if let Some(took) = fs_longest {
            let _ = write!(
                pause,
                "; the file system's slowest request {:.3} s",
                took.as_secs_f64()
            );
        }
        row.pauses.push(pause);
        row.fs_slowest = row.fs_slowest.max(fs_longest.unwrap_or_default());
        row.frozen += frozen;
        for h in queue_handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("queue thread panicked"))?;
        }
        jobs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_acknowledged_after(durable_before);
        for h in model_handles {
            let mut m = h
                .join()
                .map_err(|_| anyhow::anyhow!("model client thread panicked"))?;
            m.forget_acknowledged_after(durable_before);
            models.push(m);
        }
        if let Some(fs) = power {
            let stats = fs.cut(cut_mode(rng));
            row.cuts += 1;
            row.bytes_cut += stats.bytes_discarded;
        }
        if cfg.mode == Mode::Restart {
            // Kill the next start at a random instant: during its replay, or just after.
            let mut s = Server::spawn(bin, &server_args(cfg, shards, &data), &log)?;
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            if !s.is_ready() {
                row.killed_in_replay += 1;
            }
            s.kill();
            if let Some(fs) = power {
                // The power goes again, during the replay (which may have truncated a torn
                // tail) or just after.
                let stats = fs.cut(cut_mode(rng));
                row.cuts += 1;
                row.bytes_cut += stats.bytes_discarded;
            }
        }
        if cfg.mode == Mode::Migrate {
            let to = if shards == cfg.shards {
                cfg.shards + 1
            } else {
                cfg.shards
            };
            row.migrations += 1;
            if migrate_killed(cli, &data, to, &log, rng)? {
                row.migrations_killed += 1;
            }
            if let Some(fs) = power {
                let stats = fs.cut(cut_mode(rng));
                row.cuts += 1;
                row.bytes_cut += stats.bytes_discarded;
            }
            // Wholly old or wholly new: the manifest names one layout, and the server must
            // start on it with that shard count and hold everything.
            let now = manifest_shards(&data)?;
            if now != shards && now != to {
                row.failures.push(format!(
                    "after a migration {shards} -> {to} the manifest names {now} shards"
                ));
                row.torn += 1;
                break;
            }
            shards = now;
        }
        row.cycles += 1;
    }
    let mut server = Server::spawn(bin, &server_args(cfg, shards, &data), &log)?;
    let addr = server
        .wait_ready(Duration::from_secs(120))
        .with_context(|| format!("{}: final start (see {})", cfg.name(), log.display()))?;
    verify(addr, &exp, &mut row, true)?;
    verify_models(addr, &mut models, &mut row)?;
    verify_queue(addr, &jobs, &mut row)?;
    server.terminate()?;
    row.acknowledged = exp.acknowledged;
    row.queue_acknowledged = jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .all_acknowledged();
    row.model_acknowledged = models.iter().map(|m| m.acknowledged).sum();
    for m in &models {
        for mismatch in &m.mismatches {
            eprintln!("    note: reply differs from the model: {mismatch}");
        }
    }
    if row.lost == 0 && row.torn == 0 && row.model_wrong == 0 && row.queue_wrong == 0 {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(row)
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let bin = match args.bin {
        Some(b) => b,
        None => build_release()?,
    };
    if !bin.exists() {
        bail!("{} does not exist", bin.display());
    }
    let cli = args.cli.unwrap_or_else(|| bin.with_file_name("moon-cli"));
    if !cli.exists() {
        bail!(
            "{} does not exist (during-migrate needs moon-cli; pass --cli)",
            cli.display()
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let cycles = args.cycles.unwrap_or(if args.quick { 3 } else { 20 });
    let (shard_counts, mut policies, modes): (&[usize], &[&'static str], &[Mode]) = if args.quick {
        (&[1, 2], &["always", "everysec"], ALL_MODES)
    } else {
        (&[1, 2, 4], &["always", "everysec", "no"], ALL_MODES)
    };
    let work = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
        .join("crash-matrix");
    std::fs::create_dir_all(&work)?;
    let power = if args.power_loss {
        // `no` promises nothing across a power cut: only the two policies that do.
        policies = &["always", "everysec"];
        crate::powerfs::available()
            .map_err(|e| anyhow::anyhow!("--power-loss needs the power-loss file system: {e}"))?;
        let mnt = work.join("powerfs-mnt");
        crate::powerfs::detach_stale(&mnt);
        std::fs::create_dir_all(&mnt)?;
        Some(PowerLossFs::mount(&mnt)?)
    } else {
        None
    };
    println!("crash matrix: seed {seed}, {cycles} cycles per configuration, {CONNECTIONS} connections, binary {}", bin.display());
    println!(
        "(reproduce: cargo xtask crash-matrix{}{}{} --cycles {cycles} --seed {seed})",
        if args.quick { " --quick" } else { "" },
        if args.power_loss { " --power-loss" } else { "" },
        if args.pinned { " --pinned" } else { "" }
    );
    let started = Instant::now();
    let mut rng = Rng(seed | 1);
    let mut table = String::from("| configuration | cycles | acknowledged | recovered | lost | torn | in-flight MSETs recovered in part | model: acknowledged | model: keys wrong | queue: acknowledged | queue: jobs wrong | starts killed in replay | rewrites started | power cuts | unsynced bytes cut | migrations | migrations killed | shard 0 stopped (DEBUG SLEEP 3) | test process stood still (s) | slowest file system request (ms) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut ok = true;
    for &shards in shard_counts {
        for &fsync in policies {
            for &mode in modes {
                let cfg = Config {
                    shards,
                    fsync,
                    mode,
                    power_loss: power.is_some(),
                    pinned: args.pinned,
                };
                if args
                    .only
                    .as_ref()
                    .is_some_and(|o| !cfg.name().contains(o.as_str()))
                {
                    continue;
                }
                let t = Instant::now();
                let row =
                    match run_config(&bin, &cli, &cfg, cycles, &mut rng, &work, power.as_ref()) {
                        Ok(row) => row,
                        Err(e) => {
                            // The tool itself stopped (a connection reset, a start that never came
                            // up): the server's last lines say why, and CI keeps only this output.
                            let log = work
                                .join(cfg.name().replace([' ', '='], "_"))
                                .join("server.log");
                            let text = std::fs::read_to_string(&log).unwrap_or_default();
                            let lines: Vec<&str> = text.lines().collect();
                            eprintln!(
                                "{}: stopped; the server's last lines ({}):",
                                cfg.name(),
                                log.display()
                            );
                            for l in &lines[lines.len().saturating_sub(30)..] {
                                eprintln!("  {l}");
                            }
                            return Err(e);
                        }
                    };
                eprintln!(
                    "{:<40} {} cycles, {} acknowledged, {} lost, {} torn; model: {} acknowledged, {} wrong; queue: {} acknowledged, {} wrong ({:.1}s)",
                    cfg.name(),
                    row.cycles,
                    row.acknowledged,
                    row.lost,
                    row.torn,
                    row.model_acknowledged,
                    row.model_wrong,
                    row.queue_acknowledged,
                    row.queue_wrong,
                    t.elapsed().as_secs_f64()
                );
                for f in &row.failures {
                    eprintln!("    {f}");
                }
                if !row.failures.is_empty() {
                    for p in &row.pauses {
                        eprintln!("    {p}");
                    }
                    // CI keeps only this output: the server's own warnings (a slow fsync, a
                    // log cut back at recovery) say where to look.
                    let log = work
                        .join(cfg.name().replace([' ', '='], "_"))
                        .join("server.log");
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let warnings: Vec<&str> = text
                        .lines()
                        .filter(|l| {
                            l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked")
                        })
                        .collect();
                    eprintln!("    the server's last warnings ({}):", log.display());
                    for l in &warnings[warnings.len().saturating_sub(30)..] {
                        eprintln!("      {l}");
                    }
                }
                ok &= row.lost == 0
                    && row.torn == 0
                    && row.model_wrong == 0
                    && row.queue_wrong == 0
                    && row.cycles == cycles;
                let _ = writeln!(
                    table,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |",
                    cfg.name(),
                    row.cycles,
                    row.acknowledged,
                    row.recovered,
                    row.lost,
                    row.torn,
                    row.partial_in_flight,
                    row.model_acknowledged,
                    row.model_wrong,
                    row.queue_acknowledged,
                    row.queue_wrong,
                    row.killed_in_replay,
                    row.rewrites,
                    row.cuts,
                    row.bytes_cut,
                    row.migrations,
                    row.migrations_killed,
                    row.busy_sleeps,
                    row.frozen.as_secs_f64(),
                    row.fs_slowest.as_secs_f64() * 1000.0
                );
            }
        }
    }
    if let Some(fs) = power {
        fs.unmount();
    }
    println!("\n{table}");
    println!(
        "total {:.0}s; {}",
        started.elapsed().as_secs_f64(),
        if ok {
            "PASS: nothing acknowledged was lost or torn"
        } else {
            "FAIL"
        }
    );
    Ok(ok)
}
