//! The durability contract (SPEC §5) against the real binary: several clients write, the
//! server is SIGKILLed while they do, restarted on the same directory, and every acknowledged
//! write must be there — at 1, 2 and 4 shards, under `always` and `everysec`.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;

use common::{slot_shard, MoonServer};
use redis::Commands;

const WRITERS: usize = 4;
const COUNTERS: usize = 8;

/// What one writer thread saw acknowledged, and what it had sent without an answer.
#[derive(Default)]
struct Acked {
    sets: Vec<(String, String)>,
    msets: Vec<Vec<(String, String)>>,
    incrs: HashMap<String, i64>,
    /// A counter INCR sent but not answered when the connection died (may or may not count).
    in_flight_incr: Option<String>,
}

/// Writes until the connection fails, reporting each acknowledgement on `progress`.
fn writer(url: String, id: usize, cycle: usize, progress: mpsc::Sender<()>) -> Acked {
    let mut acked = Acked::default();
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return acked;
    };
    for i in 0.. {
        let tag = format!("c{cycle}:w{id}:{i}");
        let ok = match i % 4 {
            0 | 1 => {
                let (k, v) = (format!("set:{tag}"), format!("value-{tag}"));
                let r: redis::RedisResult<()> = con.set(&k, &v);
                r.map(|()| acked.sets.push((k, v)))
            }
            2 => {
                let c = format!("ctr:{}", (i / 4 + id) % COUNTERS);
                acked.in_flight_incr = Some(c.clone());
                let r: redis::RedisResult<i64> = con.incr(&c, 1);
                r.map(|_| {
                    *acked.incrs.entry(c).or_default() += 1;
                    acked.in_flight_incr = None;
                })
            }
            _ => {
                // Three keys: with several shards they usually land on different ones.
                let pairs: Vec<(String, String)> = ["a", "b", "c"]
                    .iter()
                    .map(|s| (format!("mset:{tag}:{s}"), format!("m-{tag}-{s}")))
                    .collect();
                let r: redis::RedisResult<()> = con.mset(&pairs);
                r.map(|()| acked.msets.push(pairs))
            }
        };
        if ok.is_err() || progress.send(()).is_err() {
            break;
        }
    }
    acked
}

/// One kill cycle: start (or restart) on `dir`, let the writers run until `acks` writes were
/// acknowledged, SIGKILL, and return what was acknowledged.
fn kill_cycle(
    dir: &std::path::Path,
    shards: usize,
    fsync: &str,
    cycle: usize,
    acks: usize,
) -> Vec<Acked> {
    let mut server =
        MoonServer::start_in(dir, shards, &["--appendfsync", fsync]).expect("server starts");
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (url, tx) = (server.url(), tx.clone());
            thread::spawn(move || writer(url, id, cycle, tx))
        })
        .collect();
    drop(tx);
    for _ in 0..acks {
        if rx.recv().is_err() {
            break;
        }
    }
    // Writers are mid-flight now: some requests are executing, some records being written.
    server.kill();
    drop(rx);
    handles
        .into_iter()
        .map(|h| h.join().expect("writer thread"))
        .collect()
}

fn check_everything_acknowledged_survived(shards: usize, fsync: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut all: Vec<Acked> = Vec::new();
    for cycle in 0..2 {
        all.extend(kill_cycle(
            tmp.path(),
            shards,
            fsync,
            cycle,
            300 + 150 * cycle,
        ));
    }
    let server =
        MoonServer::start_in(tmp.path(), shards, &["--appendfsync", fsync]).expect("restart");
    let mut con = server.client();
    let (mut sets, mut msets, mut lost) = (0, 0, Vec::new());
    for a in &all {
        for (k, v) in &a.sets {
            sets += 1;
            let got: Option<String> = con.get(k).unwrap();
            if got.as_deref() != Some(v.as_str()) {
                lost.push(format!("SET {k}: {got:?}"));
            }
        }
        for pairs in &a.msets {
            msets += 1;
            for (k, v) in pairs {
                let got: Option<String> = con.get(k).unwrap();
                if got.as_deref() != Some(v.as_str()) {
                    lost.push(format!(
                        "MSET part {k} (shard {}): {got:?}",
                        slot_shard(k.as_bytes(), shards)
                    ));
                }
            }
        }
    }
    for c in 0..COUNTERS {
        let name = format!("ctr:{c}");
        let acked: i64 = all
            .iter()
            .map(|a| a.incrs.get(&name).copied().unwrap_or(0))
            .sum();
        let in_flight = all
            .iter()
            .filter(|a| a.in_flight_incr.as_deref() == Some(name.as_str()))
            .count() as i64;
        let got: i64 = con.get::<_, Option<i64>>(&name).unwrap().unwrap_or(0);
        if got < acked || got > acked + in_flight {
            lost.push(format!(
                "{name}: {got}, acknowledged {acked}, in flight {in_flight}"
            ));
        }
    }
    assert!(
        sets > 100 && msets > 20,
        "too little load to prove anything: {sets} sets, {msets} msets"
    );
    assert!(lost.is_empty(), "shards={shards} fsync={fsync}: {} acknowledged writes lost of {sets} SETs and {msets} MSETs:\n{}", lost.len(), lost.join("\n"));
}

#[test]
fn sigkill_loses_nothing_1_shard_always() {
    check_everything_acknowledged_survived(1, "always");
}

#[test]
fn sigkill_loses_nothing_1_shard_everysec() {
    check_everything_acknowledged_survived(1, "everysec");
}

#[test]
fn sigkill_loses_nothing_2_shards_always() {
    check_everything_acknowledged_survived(2, "always");
}

#[test]
fn sigkill_loses_nothing_2_shards_everysec() {
    check_everything_acknowledged_survived(2, "everysec");
}

#[test]
fn sigkill_loses_nothing_4_shards_always() {
    check_everything_acknowledged_survived(4, "always");
}

#[test]
fn sigkill_loses_nothing_4_shards_everysec() {
    check_everything_acknowledged_survived(4, "everysec");
}

/// Every kind of write is replayed to the same keyspace: values, deadlines, deletions,
/// cross-shard renames, flushes.
#[test]
fn replay_rebuilds_the_same_keyspace() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    let script: &[&[&str]] = &[
        &["SET", "gone", "x"],
        &["FLUSHALL"],
        &["SET", "s", "hello", "EX", "1000"],
        &["APPEND", "s", " world"],
        &["SETRANGE", "s", "0", "J"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["INCRBY", "n", "41"],
        &["INCR", "n"],
        &["MSET", "m1", "a", "m2", "b", "m3", "c"],
        &["DEL", "m1", "m2"],
        &["SET", "r", "v", "PX", "500000"],
        &["RENAME", "r", "renamed-elsewhere"],
        &["SET", "p", "1", "EX", "100"],
        &["PERSIST", "p"],
        &["SET", "e", "1"],
        &["PEXPIREAT", "e", "99999999999999"],
        &["GETDEL", "n2"],
        &["SETNX", "nx", "1"],
        &["GETEX", "nx", "EX", "5000"],
        &["SET", "short", "1", "PXAT", "1"],
    ];
    for cmd in script {
        let mut c = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            c.arg(*a);
        }
        let _: redis::Value = c.query(&mut con).unwrap();
    }
    let dump = |con: &mut redis::Connection| {
        let mut keys: Vec<String> = con.keys("*").unwrap();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let v: Option<String> = con.get(&k).unwrap();
                let at: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(con).unwrap();
                (k, v, at)
            })
            .collect::<Vec<_>>()
    };
    let before = dump(&mut con);
    assert!(before
        .iter()
        .any(|(k, v, _)| k == "s" && v.as_deref() == Some("Jello world")));
    assert!(!before.iter().any(|(k, _, _)| k == "short" || k == "gone"));
    server.kill();
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    assert_eq!(dump(&mut con), before);
}

#[test]
fn appendonly_no_persists_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &["--appendonly", "no"]).unwrap();
    let mut con = server.client();
    let _: () = con.set("k", "v").unwrap();
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(info.contains("aof_enabled:0"), "{info}");
    server.kill();
    assert!(!tmp.path().join("appendonlydir").exists());
    let server = MoonServer::start_in(tmp.path(), 2, &["--appendonly", "no"]).unwrap();
    let got: Option<String> = server.client().get("k").unwrap();
    assert_eq!(got, None);
}
