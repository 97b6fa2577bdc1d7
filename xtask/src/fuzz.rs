//! `cargo xtask fuzz [--seconds N] [--seed S] [--target T]`: fuzzing on the stable toolchain.
//!
//! No coverage guidance (that needs nightly and a C toolchain): each target mixes purely random
//! input with mutations of valid input — bytes flipped, cut, duplicated, spliced — which is
//! what finds the parser paths that matter. Every input runs under `catch_unwind`; a panic is
//! a failure, and the input that caused it is written to `target/fuzz-failures/` and printed,
//! to become a regression test.
//!
//! Targets: `resp` (the request parser, fed in random chunk sizes), `commands` (every command
//! of the table with random arities and hostile arguments — huge, negative, overflowing
//! numbers, binary and empty strings — executed against a store with a moving clock, half the
//! time under a tiny maxmemory with a random eviction policy; the log it produces is replayed
//! and must rebuild the same keyspace), `aof` (the record reader over damaged logs), `rdb`
//! (the RDB file reader and DUMP payloads — damaged Redis files and payloads, half of the
//! payloads with their checksum fixed so the value decoder is reached — and what survives is
//! built into a Moon value and RESTOREd), `manifest` (the manifest parser), `config` (moon.toml
//! through `moon-server --check-config`).
//!
//! A case that failed once is kept in `xtask/fuzz-regressions.txt` (target and case seed) and
//! runs in `cargo test` from then on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::rng::Rng;

#[derive(clap::Args)]
pub struct Args {
    /// How long each target runs.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seed; the same seed repeats the same inputs.
    #[arg(long)]
    seed: Option<u64>,
    /// Run only this target (resp, commands, aof, rdb, manifest, config).
    #[arg(long)]
    target: Option<String>,
    /// Instead: drive the real server (2 shards) from many connections with random valid and
    /// malformed frames, cross-shard pipelines, MULTI/EXEC/WATCH in random orders and clients
    /// that disconnect mid-request; then every shard must answer, the log must show no panic,
    /// and the process must still be running.
    #[arg(long)]
    network: bool,
}

/// A target generates its input from the RNG, records it ([`input`]), then runs it.
type Target = fn(&mut Rng);

thread_local! {
    static LAST_INPUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records the input about to run, so a panic can report it.
fn input(bytes: &[u8]) {
    LAST_INPUT.with(|l| *l.borrow_mut() = bytes.to_vec());
}

const TARGETS: &[(&str, Target)] = &[
    ("resp", fuzz_resp),
    ("commands", fuzz_commands),
    ("aof", fuzz_aof),
    ("rdb", fuzz_rdb),
    ("manifest", fuzz_manifest),
    ("config", fuzz_config),
];

/// The `moon-server` binary the `config` target runs (`--check-config`): the config parser
/// lives in the server binary, so this target goes through a process per input.
static SERVER: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

pub fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    if args.network {
        return network(seed, args.seconds);
    }
    if args.target.as_deref().is_none_or(|t| t == "config") {
        let bin = crate::server::build_release()?;
        let _ = SERVER.set(bin);
    }
    println!("fuzz: seed {seed}, {} s per target", args.seconds);
    // Panics are caught and reported here, once, with their input; an abort names its case.
    std::panic::set_hook(Box::new(|_| {}));
    install_abort_report();
    let mut ok = true;
    // The kept cases first: a bug found once must stay fixed.
    let kept = regressions(include_str!("../fuzz-regressions.txt")).map_err(anyhow::Error::msg)?;
    for (target, name, seed) in kept {
        if args.target.as_deref().is_none_or(|t| t == name)
            && catch_unwind(AssertUnwindSafe(|| target(&mut Rng(seed | 1)))).is_err()
        {
            println!("{name:<10} kept case {seed:#x} (xtask/fuzz-regressions.txt) FAILS again");
            ok = false;
        }
    }
    for (name, target) in TARGETS {
        if args.target.as_deref().is_some_and(|t| t != *name) {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let (runs, failure) = fuzz_target(*target, seed ^ crc(name.as_bytes()), deadline);
        match failure {
            None => println!("{name:<10} {runs} inputs, no panic"),
            Some((case, what, input)) => {
                ok = false;
                let dir = crate::server::root().join("target/fuzz-failures");
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("{name}-{case:x}.bin"));
                let _ = std::fs::write(&file, &input);
                println!(
                    "{name:<10} PANIC after {runs} inputs: {what}\n  case seed {case:#x}, input saved to {}\n  once fixed, keep it: add the line `{name} {case:#x}` to xtask/fuzz-regressions.txt",
                    file.display()
                );
            }
        }
    }
    Ok(ok)
}

/// The case running now, for the abort handler: an allocation failure aborts the process
/// instead of panicking, and must still name its case.
static CURRENT_CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// On SIGABRT (an allocation failure, a double panic): prints the running case's seed, with
/// only async-signal-safe calls, then lets the abort proceed.
extern "C" fn report_abort(_: nix::libc::c_int) {
    let case = CURRENT_CASE.load(std::sync::atomic::Ordering::Relaxed);
    let mut buf = *b"\nfuzz: ABORTED in case seed 0x0000000000000000 (add it to xtask/fuzz-regressions.txt once fixed)\n";
    let digits = b"0123456789abcdef";
    let start = 30;
    for i in 0..16 {
        buf[start + i] = digits[((case >> (60 - 4 * i)) & 0xf) as usize];
    }
    // SAFETY: write(2) on stderr is async-signal-safe; the buffer lives on this stack.
    unsafe {
        nix::libc::write(2, buf.as_ptr().cast(), buf.len());
    }
}

fn install_abort_report() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(report_abort),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    // SAFETY: the handler only reads an atomic and calls write(2).
    let _ = unsafe { sigaction(Signal::SIGABRT, &action) };
}

/// Runs `target` on fresh cases until `deadline` or the first panic: (cases run, the failing
/// case's seed, panic message and input).
fn fuzz_target(
    target: Target,
    seed: u64,
    deadline: Instant,
) -> (u64, Option<(u64, String, Vec<u8>)>) {
    let mut rng = Rng(seed | 1);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let case_seed = rng.next();
        CURRENT_CASE.store(case_seed, std::sync::atomic::Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&mut Rng(case_seed | 1))));
        runs += 1;
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let input = LAST_INPUT.with(|l| l.borrow().clone());
            return (runs, Some((case_seed, what, input)));
        }
    }
    (runs, None)
}

fn crc(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A mutation of `seed_input`: random bytes flipped, inserted, removed, cut or duplicated.
fn mutate(rng: &mut Rng, seed_input: &[u8]) -> Vec<u8> {
    let mut v = seed_input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() as u64 + 1) as usize;
        match rng.below(6) {
            0 if at < v.len() => v[at] ^= 1 << rng.below(8),
            1 => v.insert(at, rng.next() as u8),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => v.truncate(at),
            4 if at < v.len() => {
                let end = (at + rng.below(16) as usize).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
            _ => {
                let digits = [
                    "-1",
                    "0",
                    "99999999999999999999",
                    "-9223372036854775808",
                    "4294967296",
                ];
                let d = digits[rng.below(digits.len() as u64) as usize];
                v.splice(at..at, d.bytes());
            }
        }
    }
    v
}

fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    (0..rng.below(max)).map(|_| rng.next() as u8).collect()
}

/// A hostile argument.
fn arg(rng: &mut Rng) -> Bytes {
    const SPECIAL: &[&str] = &[
        "",
        "0",
        "-0",
        "1",
        "-1",
        "00",
        "+1",
        " 1",
        "1.5",
        "-1.5",
        "inf",
        "-inf",
        "nan",
        "1e308",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "4294967296",
        "k",
        "key",
        "{tag}k",
        "NX",
        "XX",
        "GT",
        "LT",
        "GET",
        "EX",
        "PX",
        "EXAT",
        "PXAT",
        "KEEPTTL",
        "PERSIST",
        "MATCH",
        "COUNT",
        "TYPE",
        "*",
        "?",
        "[",
        "\\",
        "ASYNC",
        "SYNC",
        "WITHSCORES",
    ];
    match rng.below(4) {
        0 => Bytes::from(random_bytes(rng, 24)),
        1 => Bytes::from((rng.next() as i64 >> rng.below(64)).to_string()),
        _ => Bytes::from_static(SPECIAL[rng.below(SPECIAL.len() as u64) as usize].as_bytes()),
    }
}

fn fuzz_resp(rng: &mut Rng) {
    const VALID: &[u8] =
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*0\r\n\r\n";
    let data = if rng.below(3) == 0 {
        random_bytes(rng, 256)
    } else {
        mutate(rng, VALID)
    };
    input(&data);
    let mut parser = moon_proto::RequestParser::new(moon_proto::Limits {
        max_bulk_len: 64,
        max_multibulk_len: 16,
        max_inline_len: 64,
    });
    let mut buf = BytesMut::new();
    let mut rest = &data[..];
    // Fed in random chunks, as reads arrive.
    while !rest.is_empty() {
        let n = (1 + rng.below(rest.len() as u64)) as usize;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match parser.next_request(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The connection-level commands the network fuzzer sends (SHUTDOWN, QUIT, DEBUG and
/// BGREWRITEAOF left out: they would stop the server or flood it with rewrites; REPLICAOF,
/// SLAVEOF and FAILOVER too: they would make it follow random addresses).
const CONNECTION_COMMANDS: &[&str] = &[
    "psync",
    "sync",
    "replconf",
    "role",
    "wait",
    "waitaof",
    "ping",
    "echo",
    "hello",
    "auth",
    "select",
    "client",
    "command",
    "config",
    "info",
    "time",
    "reset",
    "acl",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "publish",
    "spublish",
    "pubsub",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
];

fn fuzz_commands(rng: &mut Rng) {
    let commands: Vec<&moon_store::command::CommandSpec> =
        moon_store::table::commands().map(|c| &c.spec).collect();
    let mut store = moon_store::Store::new(1 << 16);
    store.set_record_writes(true);
    store.set_databases(4);
    // Half the cases under a tight maxmemory and a random policy: evictions on every write.
    if rng.below(2) == 0 {
        let policies = moon_store::EvictionPolicy::ALL;
        store.set_memory_limit(moon_store::MemoryLimit {
            max: 1 + rng.below(2000) as usize,
            policy: policies[rng.below(policies.len() as u64) as usize],
            samples: 1 + rng.below(8) as usize,
        });
    }
    let mut now = 1_700_000_000_000u64;
    let mut trace = Vec::new();
    let mut log = Vec::new();
    for _ in 0..1 + rng.below(24) {
        let spec = commands[rng.below(commands.len() as u64) as usize];
        let argc = match rng.below(4) {
            0 => rng.below(8) as usize,
            _ => spec.arity.unsigned_abs() as usize + rng.below(4) as usize,
        };
        let mut cmd = vec![Bytes::from_static(spec.name.as_bytes())];
        cmd.extend((1..argc.max(1)).map(|_| arg(rng)));
        trace.extend_from_slice(format!("{cmd:?}\n").as_bytes());
        input(&trace);
        now += rng.below(2000);
        let _ = store.execute(&cmd, now);
        log.extend(store.take_log());
    }
    // What was logged must replay without a panic, with expiry off, into the same keyspace
    // (expired-but-present keys included): the exact-replay oracle, under hostile arguments.
    let mut replayed = moon_store::Store::new(usize::MAX);
    for cmd in &log {
        let _ = replayed.execute(cmd, moon_store::NO_EXPIRY_CHECK);
    }
    assert!(
        store.canonical_dump() == replayed.canonical_dump(),
        "replay differs from execution"
    );
}

fn fuzz_aof(rng: &mut Rng) {
    let mut valid = Vec::new();
    let mut lsn = 0;
    for _ in 0..1 + rng.below(6) {
        lsn += 1;
        let cmd = vec![Bytes::from("SET"), Bytes::from(format!("k{lsn}")), arg(rng)];
        if rng.below(4) == 0 {
            // A unit over continued records (a small target so that it spans several).
            let unit: Vec<Vec<Bytes>> = (0..2 + rng.below(6))
                .map(|i| vec![Bytes::from("SADD"), Bytes::from(format!("s{i}")), arg(rng)])
                .collect();
            let used = moon_aof::append_unit(lsn, &unit, 1 + rng.below(64) as usize, &mut valid)
                .unwrap_or(1);
            lsn += used - 1;
        } else if rng.below(3) == 0 {
            let header = vec![
                Bytes::from("MOON.TXPART"),
                Bytes::from("1-0-1"),
                Bytes::from("0,1"),
            ];
            moon_aof::append_group_record(lsn, &[header, cmd], &mut valid).unwrap();
        } else {
            moon_aof::append_command_record(lsn, &cmd, &mut valid).unwrap();
        }
    }
    let data = match rng.below(4) {
        0 => random_bytes(rng, 128),
        _ => mutate(rng, &valid),
    };
    input(&data);
    let _ = moon_aof::reader::scan::<()>(&data, |_lsn, payload, _offset| {
        let _ = moon_aof::decode_payload(payload);
        let _ = moon_aof::record::is_continued(payload);
        Ok(())
    });
    // The whole replay (units assembled, tails judged), from a file.
    thread_local! {
        static DIR: Option<tempfile::TempDir> = tempfile::tempdir().ok();
    }
    DIR.with(|dir| {
        let Some(dir) = dir else { return };
        let path = dir.path().join("fuzz.aof");
        if std::fs::write(&path, &data).is_err() {
            return;
        }
        let bounds = moon_aof::reader::Bounds {
            after_lsn: rng.below(3),
            stop_lsn: (rng.below(2) == 0).then(|| rng.below(8)),
            // Checksums taken as checked for a prefix: what replay then trusts must not
            // panic it either.
            checked: if rng.below(2) == 0 {
                0
            } else {
                rng.below(data.len() as u64 + 1)
            },
        };
        if let Ok(r) = moon_aof::reader::replay_readonly(&path, bounds, |_, cmds| {
            assert!(!cmds.is_empty(), "a unit applies at least one command");
        }) {
            assert!(r.bytes <= data.len() as u64, "{r:?}");
        }
    });
}

/// Redis 7.0.15's `dump.rdb` of every type (the moon-rdb fixture).
const RDB_FILE: &[u8] = include_bytes!("../../crates/moon-rdb/tests/fixtures/every.rdb");
/// Its DUMP payloads, hex (`db key payload` lines).
const RDB_DUMPS: &str = include_str!("../../crates/moon-rdb/tests/fixtures/dumps.txt");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn fuzz_rdb(rng: &mut Rng) {
    let payloads: Vec<Vec<u8>> = RDB_DUMPS
        .lines()
        .filter_map(|l| l.split(' ').nth(2).map(unhex))
        .collect();
    if rng.below(3) == 0 {
        let data = if rng.below(8) == 0 {
            random_bytes(rng, 256)
        } else {
            mutate(rng, RDB_FILE)
        };
        input(&data);
        if let Ok(mut r) = moon_rdb::FileReader::new(&data, rng.below(2) == 0) {
            while let Ok(Some(item)) = r.next_item() {
                if let moon_rdb::Item::Key(k) = item {
                    let _ = moon_store::Value::from_rdb(k.value, &Default::default());
                }
            }
        }
        return;
    }
    let base = &payloads[rng.below(payloads.len() as u64) as usize];
    let mut p = mutate(rng, base);
    if rng.below(2) == 0 && p.len() >= 10 {
        // A right footer: the damage reaches the value decoder.
        let body = p.len() - 8;
        let crc = moon_rdb::crc64(0, &p[..body]);
        p[body..].copy_from_slice(&crc.to_le_bytes());
    }
    input(&p);
    if let Ok(obj) = moon_rdb::decode_dump(&p) {
        if let Ok(Some(v)) = moon_store::Value::from_rdb(obj, &Default::default()) {
            let again = moon_rdb::encode_dump(&v.to_rdb());
            assert!(
                moon_rdb::decode_dump(&again).is_ok(),
                "a payload Moon wrote reads back"
            );
        }
    }
    let mut store = moon_store::Store::default();
    let args = [
        Bytes::from_static(b"RESTORE"),
        Bytes::from_static(b"k"),
        Bytes::from_static(b"0"),
        Bytes::from(p),
    ];
    let _ = store.execute(&args, 1_700_000_000_000);
    let _ = store.execute(
        &[Bytes::from_static(b"DUMP"), Bytes::from_static(b"k")],
        1_700_000_000_000,
    );
}

fn fuzz_manifest(rng: &mut Rng) {
    const VALID: &[&[u8]] = &[
        b"version 2\nseq 3\nshards 2\nshard 0 max_lsn 10\nshard 1 max_lsn 0\n",
        b"version 2\nseq 4\nshards 1\nshard 0 max_lsn 99 base_bytes 4096 base_crc32 0a1b2c3d\n",
        b"seq 1\nbase moon.aof.1.base.rdb\nincr moon.aof.1.incr.aof\n",
    ];
    let text = match rng.below(4) {
        0 => random_bytes(rng, 96),
        n => mutate(rng, VALID[(n % 3) as usize]),
    };
    input(&text);
    let _ = moon_manifest::Manifest::parse(&String::from_utf8_lossy(&text));
}

fn fuzz_config(rng: &mut Rng) {
    const VALID: &[u8] = b"bind = \"127.0.0.1\"\nport = 6379\ndir = \"moon-data\"\nappendonly = \"yes\"\nappendfsync = \"everysec\"\nrequirepass = \"\"\nproto-max-bulk-len = \"512mb\"\nmaxclients = 10000\nloglevel = \"notice\"\npin-cpus = \"yes\"\nshards = 2\nauto-aof-rewrite-percentage = 100\nauto-aof-rewrite-min-size = \"64mb\"\n";
    let text = match rng.below(5) {
        0 => random_bytes(rng, 128),
        _ => mutate(rng, VALID),
    };
    input(&text);
    let Some(bin) = SERVER.get() else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("moon.toml");
    if std::fs::write(&path, &text).is_err() {
        return;
    }
    let Ok(out) = std::process::Command::new(bin)
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
    else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A bad file is refused with exit 2 and a message; anything else is a bug.
    assert!(
        matches!(out.status.code(), Some(0) | Some(2)) && !stderr.contains("panicked"),
        "moon-server --check-config exited {:?}: {stderr}",
        out.status.code()
    );
}

/// `--network`: the real server under hostile connections (see [`Args::network`]).
fn network(seed: u64, seconds: u64) -> anyhow::Result<bool> {
    use std::io::{Read, Write};
    let bin = crate::server::build_release()?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("server.log");
    let args = crate::server::test_server_args(2, "everysec", &dir.path().join("data"));
    let mut server = crate::server::Server::spawn(&bin, &args, &log)?;
    let addr = server.wait_ready(Duration::from_secs(60))?;
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb << 10)
    };
    let rss_before = rss(server.pid());
    println!("fuzz --network: seed {seed}, {seconds} s, 8 connections, server {addr}");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut rng = Rng((seed ^ w.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let Ok(mut con) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = con.set_read_timeout(Some(Duration::from_millis(200)));
                    for _ in 0..1 + rng.below(20) {
                        let frame = network_frame(&mut rng);
                        // Sometimes only part of it, then gone.
                        let cut = if rng.below(20) == 0 {
                            rng.below(frame.len() as u64 + 1) as usize
                        } else {
                            frame.len()
                        };
                        if con.write_all(&frame[..cut]).is_err() || cut < frame.len() {
                            break;
                        }
                        sent += 1;
                        if rng.below(3) == 0 {
                            let mut buf = [0u8; 4096];
                            let _ = con.read(&mut buf);
                        }
                    }
                }
                sent
            })
        })
        .collect();
    let sent: u64 = workers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    // Every shard must still answer: connections land on shards by hash, so open many; and a
    // cross-shard MSET/MGET needs both.
    let mut ok = true;
    for _ in 0..16 {
        let pong = redis::Client::open(format!("redis://{addr}/"))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| {
                // Generous: the fuzzers may have left it working through SETRANGEs that build
                // strings of hundreds of MB; what matters is that it answers at all.
                let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
                redis::cmd("MSET")
                    .arg(&["a", "1", "b", "2", "c", "3"])
                    .query::<()>(&mut c)?;
                redis::cmd("PING").query::<String>(&mut c)
            });
        if pong.as_deref().ok() != Some("PONG") {
            println!("a shard did not answer after the fuzzing: {pong:?}");
            ok = false;
            break;
        }
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if text.contains("panic") {
        println!("the server log shows a panic (see {})", log.display());
        ok = false;
    }
    let alive = server.is_ready()
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid() as i32), None).is_ok();
    if !alive {
        println!("the server is gone");
        ok = false;
    }
    // Connections are gone: what they held must be gone too (the keys they wrote are small).
    let rss_after = rss(server.pid());
    if rss_after > rss_before + (256 << 20) {
        println!(
            "memory did not come back: RSS {} MB before, {} MB after",
            rss_before >> 20,
            rss_after >> 20
        );
        ok = false;
    }
    if ok {
        server.terminate()?;
        println!(
            "network    {sent} frames from 8 connections, the server kept serving (RSS {} -> {} MB)",
            rss_before >> 20,
            rss_after >> 20
        );
    } else {
        // Keep the log for a look.
        let keep = crate::server::root().join("target/fuzz-failures/network-server.log");
        let _ = std::fs::create_dir_all(keep.parent().unwrap_or(dir.path()));
        let _ = std::fs::copy(&log, &keep);
        println!("server log kept at {}", keep.display());
    }
    Ok(ok)
}

/// One frame for the network fuzzer: a valid command with hostile arguments (often touching
/// keys on both shards), a transaction control command, or malformed bytes.
fn network_frame(rng: &mut Rng) -> Vec<u8> {
    let mut cmd: Vec<Bytes> = match rng.below(10) {
        0 => vec![Bytes::from_static(b"MULTI")],
        1 => vec![Bytes::from_static(b"EXEC")],
        2 => vec![Bytes::from_static(b"WATCH"), arg(rng), arg(rng)],
        3 => {
            let mut c = vec![Bytes::from_static(b"MSET")];
            for _ in 0..1 + rng.below(4) {
                c.extend([arg(rng), arg(rng)]);
            }
            c
        }
        4 => return mutate(rng, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        _ => {
            // The keyspace's commands by their table, the connection's by name (their table
            // is the server's own); never SHUTDOWN, QUIT, DEBUG or BGREWRITEAOF from here.
            let keyspace: Vec<(&str, usize)> = moon_store::table::commands()
                .map(|c| (c.spec.name, c.spec.arity.unsigned_abs() as usize))
                .chain(CONNECTION_COMMANDS.iter().map(|n| (*n, 1)))
                .collect();
            let (name, arity) = keyspace[rng.below(keyspace.len() as u64) as usize];
            let argc = arity + rng.below(3) as usize;
            let mut c = vec![Bytes::from_static(name.as_bytes())];
            c.extend((1..argc.max(1)).map(|_| arg(rng)));
            c
        }
    };
    if rng.below(10) == 0 {
        cmd.truncate(1 + rng.below(cmd.len() as u64) as usize);
    }
    let mut out = Vec::new();
    moon_aof::encode_command(&cmd, &mut out);
    out
}

/// The cases kept in `xtask/fuzz-regressions.txt`: (target, case seed), one per line,
/// `#` comments.
fn regressions(text: &str) -> Result<Vec<(Target, &str, u64)>, String> {
    let mut cases = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(seed), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("not `<target> <case seed>`: {line}"));
        };
        let target = TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| format!("unknown target {name}"))?;
        let seed = u64::from_str_radix(seed.trim_start_matches("0x"), 16)
            .map_err(|e| format!("bad seed {seed}: {e}"))?;
        cases.push((target, name, seed));
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_cases_are_read_by_target_and_seed() {
        let cases =
            regressions("# found X\ncommands 0x1f  # comment\n\nresp 2a\n").expect("parses");
        let got: Vec<(&str, u64)> = cases.iter().map(|(_, n, s)| (*n, *s)).collect();
        assert_eq!(got, [("commands", 0x1f), ("resp", 0x2a)]);
        assert!(regressions("nosuch 0x1").is_err());
        assert!(regressions("resp").is_err());
        assert!(regressions("resp 0xzz").is_err());
    }

    /// Every case a fuzzer once failed on runs again, exactly as it was generated.
    #[test]
    fn kept_fuzz_cases_run_clean() {
        let text = include_str!("../fuzz-regressions.txt");
        let cases = regressions(text).expect("xtask/fuzz-regressions.txt parses");
        for (target, name, seed) in cases {
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&mut Rng(seed | 1))));
            assert!(outcome.is_ok(), "{name} {seed:#x} fails again");
        }
    }

    fn explodes(rng: &mut Rng) {
        let n = rng.below(4);
        input(format!("case {n}").as_bytes());
        assert!(n != 3, "exploded");
    }

    #[test]
    fn a_panicking_target_is_reported_with_its_input() {
        let (_, failure) = fuzz_target(explodes, 7, Instant::now() + Duration::from_secs(5));
        let (_, what, input) = failure.expect("the panic is found");
        assert!(what.contains("exploded"), "{what}");
        assert_eq!(input, b"case 3");
    }

    #[test]
    fn every_target_runs_clean_briefly() {
        for (name, target) in TARGETS {
            let (runs, failure) =
                fuzz_target(*target, 1, Instant::now() + Duration::from_millis(200));
            assert!(failure.is_none(), "{name}: {failure:?}");
            assert!(runs > 0);
        }
    }
}
