//! BGREWRITEAOF against the real binary: the log is compacted per shard, nothing is lost —
//! also when the server is SIGKILLed while rewrites run under load — and the automatic
//! trigger fires.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{eventually, expect_err, MoonServer};
use redis::Commands;

fn info_field(con: &mut redis::Connection, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg("persistence").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn rewrites_done(con: &mut redis::Connection) -> u64 {
    info_field(con, "aof_rewrites").parse().unwrap_or(0)
}

#[test]
fn bgrewriteaof_compacts_every_shard_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &["--appendfsync", "always"]).unwrap();
    let mut con = server.client();
    for round in 0..5 {
        let pairs: Vec<(String, String)> = (0..200)
            .map(|i| (format!("k{i}"), format!("v{round}-{i}")))
            .collect();
        for (k, v) in &pairs {
            let _: () = con.set(k, v).unwrap();
        }
    }
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg("x")
        .arg("EX")
        .arg(1000)
        .query(&mut con)
        .unwrap();
    let _: i64 = con.del(&["k0", "k1"]).unwrap();
    let before = std::fs::metadata(tmp.path().join("appendonlydir/shard-0/moon.aof.1.incr.aof"))
        .unwrap()
        .len();
    let started: String = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
    assert_eq!(started, "Background append only file rewriting started");
    assert!(
        eventually(Duration::from_secs(30), || rewrites_done(&mut con) == 1),
        "the rewrite finished"
    );
    assert_eq!(info_field(&mut con, "aof_last_bgrewrite_status"), "ok");
    let manifest =
        std::fs::read_to_string(tmp.path().join("appendonlydir/moon.aof.manifest")).unwrap();
    assert!(
        manifest.starts_with("version 2\nseq 2\nshards 2\n"),
        "{manifest}"
    );
    assert!(
        !tmp.path()
            .join("appendonlydir/shard-0/moon.aof.1.incr.aof")
            .exists(),
        "old files removed"
    );
    let base = std::fs::metadata(tmp.path().join("appendonlydir/shard-0/moon.aof.2.base.rdb"))
        .unwrap()
        .len();
    assert!(
        base < before / 2,
        "compacted: base {base} bytes vs {before} before"
    );
    // Writes after the rewrite go to the new incr.
    let _: () = con.set("after", "rewrite").unwrap();
    server.kill();
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    assert_eq!(con.get::<_, String>("k199").unwrap(), "v4-199");
    assert_eq!(con.get::<_, Option<String>>("k0").unwrap(), None);
    assert_eq!(con.get::<_, String>("after").unwrap(), "rewrite");
    let ttl: i64 = con.ttl("ttl").unwrap();
    assert!(ttl > 900 && ttl <= 1000, "{ttl}");
    assert_eq!(
        redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(),
        198 + 2
    );
}

#[test]
fn a_second_bgrewriteaof_is_refused_while_one_runs() {
    let server = MoonServer::start(2, &[]);
    let mut con = server.client();
    let mut p = redis::pipe();
    p.cmd("BGREWRITEAOF").cmd("BGREWRITEAOF");
    let r: redis::RedisResult<Vec<String>> = p.query(&mut con);
    let e = r.unwrap_err();
    assert!(
        e.to_string()
            .contains("Background append only file rewriting already in progress"),
        "{e}"
    );
    let off = MoonServer::start(1, &["--appendonly", "no"]);
    assert!(expect_err(&mut off.client(), &["BGREWRITEAOF"]).contains("AOF is disabled"));
}

#[test]
fn sigkill_during_rewrites_under_load_loses_nothing() {
    for shards in [1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let mut server = MoonServer::start_in(tmp.path(), shards, &[]).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (url, tx) = (server.url(), tx.clone());
                thread::spawn(move || {
                    let mut acked = Vec::new();
                    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection())
                    else {
                        return acked;
                    };
                    for i in 0.. {
                        let k = format!("w{w}:{i}");
                        if con.set::<_, _, ()>(&k, i).is_err() || tx.send(()).is_err() {
                            break;
                        }
                        acked.push(k);
                    }
                    acked
                })
            })
            .collect();
        drop(tx);
        let mut admin = server.client();
        let mut started = 0;
        for n in 0..3000 {
            if rx.recv().is_err() {
                break;
            }
            if n % 300 == 0
                && redis::cmd("BGREWRITEAOF")
                    .query::<String>(&mut admin)
                    .is_ok()
            {
                started += 1;
            }
        }
        server.kill();
        drop(rx);
        let acked: Vec<String> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert!(started >= 2, "rewrites ran during the load ({started})");
        let server = MoonServer::start_in(tmp.path(), shards, &[]).unwrap();
        let mut con = server.client();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|k| !con.exists::<_, bool>(k.as_str()).unwrap())
            .collect();
        assert!(
            missing.is_empty(),
            "shards={shards}: {} of {} acknowledged writes lost: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[test]
fn the_aof_is_rewritten_automatically_on_growth() {
    let server = MoonServer::start(
        2,
        &[
            "--auto-aof-rewrite-min-size",
            "64kb",
            "--auto-aof-rewrite-percentage",
            "100",
        ],
    );
    let mut con = server.client();
    for i in 0..3000 {
        let _: () = con.set(format!("key{}", i % 50), "x".repeat(40)).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(20), || rewrites_done(&mut con) >= 1),
        "an automatic rewrite ran"
    );
    assert!(
        server
            .log_text()
            .contains("Starting automatic rewriting of AOF"),
        "{}",
        server.log_text()
    );
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 50);
}

/// The directory fsync after the manifest's rename fails (fault seam): the rename cannot be
/// undone, so no file either manifest names is deleted, every shard refuses writes until a
/// restart, and the restart — on whichever manifest is there — has every acknowledged write.
#[test]
fn a_failure_after_the_manifest_rename_keeps_every_file_and_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_with_env(
        tmp.path(),
        2,
        &["--appendfsync", "always"],
        &[("MOON_REWRITE_FAULT", "after-rename")],
    )
    .unwrap();
    let mut con = server.client();
    for i in 0..100 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    let _: String = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || info_field(
            &mut con,
            "aof_last_bgrewrite_status"
        ) == "err"),
        "the rewrite reports its failure"
    );
    for shard in 0..2 {
        for seq in [1, 2] {
            let incr = tmp.path().join(format!(
                "appendonlydir/shard-{shard}/moon.aof.{seq}.incr.aof"
            ));
            assert!(incr.exists(), "{} was kept", incr.display());
        }
    }
    let e = expect_err(&mut con, &["SET", "k0", "after"]);
    assert!(e.starts_with("MISCONF"), "{e}");
    let v: i64 = con.get("k1").expect("reads keep working");
    assert_eq!(v, 1);
    server.kill();
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    for i in 0..100 {
        let v: i64 = con.get(format!("k{i}")).unwrap();
        assert_eq!(v, i);
    }
}

/// A base file the manifest names is missing, or ends before the manifest's max_lsn: startup
/// refuses (exit 2, runbook) instead of replaying without it, and deletes nothing — not even
/// files of other seqs, which may be the only other copy.
#[test]
fn a_missing_or_short_base_refuses_startup_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 1, &[]).unwrap();
    let mut con = server.client();
    for i in 0..50 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    let _: String = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
    assert!(eventually(Duration::from_secs(30), || rewrites_done(
        &mut con
    ) == 1));
    server.terminate();
    let shard = tmp.path().join("appendonlydir/shard-0");
    let base = shard.join("moon.aof.2.base.rdb");
    let bytes = std::fs::read(&base).unwrap();
    let other_seq = shard.join("moon.aof.1.incr.aof");
    std::fs::write(&other_seq, b"an older generation").unwrap();

    std::fs::write(&base, &bytes[..bytes.len() - 5]).unwrap();
    let (code, text) = common::run_expecting_exit(tmp.path(), 1, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("but the manifest recorded")
            && text.contains("docs/runbooks/missing-aof-file.md"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&base).unwrap().len(),
        bytes.len() - 5,
        "a short base is not truncated further"
    );
    // Issue 22, 1: an empty base (what a kill -9 right after its creation leaves), or one of
    // the right length with other records (a partial or foreign file), replayed before as if
    // the shard had no keys.
    std::fs::write(&base, b"").unwrap();
    let (code, text) = common::run_expecting_exit(tmp.path(), 1, &[]);
    assert_eq!(code, 2, "an empty base is refused: {text}");
    let mut foreign = bytes.clone();
    let keep = foreign.len() / 2;
    foreign[keep..].fill(0);
    std::fs::write(&base, &foreign).unwrap();
    let (code, text) = common::run_expecting_exit(tmp.path(), 1, &[]);
    assert_eq!(code, 2, "a zero-padded partial base is refused: {text}");
    assert!(text.contains("does not match the manifest"), "{text}");
    assert_eq!(std::fs::read(&base).unwrap(), foreign, "nothing changed");

    std::fs::remove_file(&base).unwrap();
    let (code, text) = common::run_expecting_exit(tmp.path(), 1, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("is missing"), "{text}");
    assert!(other_seq.exists(), "files of other seqs are kept");

    std::fs::write(&base, &bytes).unwrap();
    let server = MoonServer::start_in(tmp.path(), 1, &[]).unwrap();
    let v: i64 = server.client().get("k49").unwrap();
    assert_eq!(v, 49);
    assert!(
        !other_seq.exists(),
        "removed once the named files replayed whole"
    );
}

/// Issue 22, 1: the directory fsync after the manifest's rename fails, then BGREWRITEAOF runs
/// again. The layout in memory may differ from the manifest on disk, so no rewrite may start
/// (by hand or automatically) before a restart; the restart finds everything, and the next
/// rewrite takes a seq no file on disk has. (Before: the second rewrite reused seq 2,
/// truncated and rewrote the base the manifest on disk named, failed, and deleted it: the
/// restart was refused with "AOF base ... is missing".)
#[test]
fn after_a_failed_commit_no_rewrite_starts_until_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_with_env(
        tmp.path(),
        2,
        &[
            "--appendfsync",
            "always",
            "--auto-aof-rewrite-min-size",
            "1",
            // Off until the pipeline is in (0 disables it, as in Redis): the default 100
            // fired during it on a loaded CI machine and refused its last writes.
            "--auto-aof-rewrite-percentage",
            "0",
        ],
        &[("MOON_REWRITE_FAULT", "after-rename")],
    )
    .unwrap();
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.set(format!("k{i}"), i).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    // The automatic trigger only now: on a slow machine it fired during the pipeline, failed
    // at its commit (the fault), and the pipeline's last writes were refused (a CI failure).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("auto-aof-rewrite-percentage")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let _ = redis::cmd("BGREWRITEAOF").query::<String>(&mut con);
    assert!(
        eventually(Duration::from_secs(30), || info_field(
            &mut con,
            "aof_last_bgrewrite_status"
        ) == "err"),
        "the first rewrite failed at its commit"
    );
    let e = expect_err(&mut con, &["BGREWRITEAOF"]);
    assert!(e.contains("disabled until a restart"), "{e}");
    // The automatic trigger (1% growth, checked every second) starts none either: over an
    // observation window of three of its checks, the log shows no new rewrite.
    let started = |server: &MoonServer| {
        server
            .log_text()
            .matches("Background AOF rewrite started")
            .count()
    };
    let before = started(&server);
    assert!(
        before >= 1,
        "the log names each rewrite: {}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(started(&server), before, "{}", server.log_text());
    server.kill();
    let server = MoonServer::start_in(tmp.path(), 2, &["--appendfsync", "always"]).unwrap();
    let mut con = server.client();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 20_000);
    let v: i64 = con.get("k19999").unwrap();
    assert_eq!(v, 19_999);
    // After the restart rewrites work again, under a seq above every one on disk.
    let _: String = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
    assert!(eventually(Duration::from_secs(30), || rewrites_done(
        &mut con
    ) == 1));
    let manifest =
        std::fs::read_to_string(tmp.path().join("appendonlydir/moon.aof.manifest")).unwrap();
    assert!(manifest.contains("seq 3\n"), "{manifest}");
    assert!(manifest.contains(" base_bytes "), "{manifest}");
}

/// Issue 22, 3: values larger than a record (here a 64 KiB target, `MOON_RECORD_TARGET_BYTES`;
/// 64 MiB in production, and a record can never pass 2 GiB) are rewritten into the RDB base
/// and come back whole; so does a string longer than a chunk, and an SPOP of thousands of
/// members (continued records in the incr), acknowledged and then SIGKILLed.
#[test]
fn values_larger_than_a_record_are_rewritten_and_popped_over_several_records() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("MOON_RECORD_TARGET_BYTES", "65536")];
    let mut server =
        MoonServer::start_with_env(tmp.path(), 2, &["--appendfsync", "always"], &env).unwrap();
    let mut con = server.client();
    let member = |i: usize| format!("member-{i:06}-{}", "m".repeat(100));
    for chunk in (0..6000).collect::<Vec<_>>().chunks(500) {
        let members: Vec<String> = chunk.iter().map(|&i| member(i)).collect();
        let _: i64 = con.sadd("big", &members).unwrap();
        let _: i64 = con.sadd("popped", &members).unwrap();
    }
    let long = "s".repeat(3 << 20);
    let _: () = con.set("long", &long).unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg("big")
        .arg(4_000_000_000_000u64)
        .query(&mut con)
        .unwrap();
    let popped: Vec<String> = redis::cmd("SPOP")
        .arg("popped")
        .arg(5000)
        .query(&mut con)
        .unwrap();
    assert_eq!(popped.len(), 5000);
    let _: String = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
    assert!(eventually(Duration::from_secs(60), || rewrites_done(
        &mut con
    ) == 1));
    // The big set's base is an RDB file (docs/FORMATS.md): typed values, no record target.
    let shard = common::slot_shard(b"big", 2);
    let base = tmp
        .path()
        .join(format!("appendonlydir/shard-{shard}/moon.aof.2.base.rdb"));
    let data = std::fs::read(&base).unwrap();
    assert!(data.starts_with(b"REDIS0012"), "{:?}", &data[..16]);
    // More pops after the rewrite, acknowledged, then kill -9.
    let more: Vec<String> = redis::cmd("SPOP")
        .arg("popped")
        .arg(900)
        .query(&mut con)
        .unwrap();
    assert_eq!(more.len(), 900);
    server.kill();
    let server = MoonServer::start_with_env(tmp.path(), 2, &[], &env).unwrap();
    let mut con = server.client();
    assert_eq!(con.scard::<_, i64>("big").unwrap(), 6000);
    assert!(con.sismember::<_, _, bool>("big", member(5999)).unwrap());
    assert!(con.pttl::<_, i64>("big").unwrap() > 1_000_000_000);
    assert_eq!(con.scard::<_, i64>("popped").unwrap(), 100);
    for m in popped.iter().chain(&more) {
        assert!(
            !con.sismember::<_, _, bool>("popped", m).unwrap(),
            "{m} came back"
        );
    }
    assert_eq!(con.get::<_, String>("long").unwrap().len(), long.len());
}

/// SCAN's first `COUNT 100` page and the cursor it returned.
fn scan_page(con: &mut redis::Connection, cursor: &str) -> (String, Vec<String>) {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(100)
        .query(con)
        .unwrap()
}

/// A rewrite's base carries each keyspace's hash key, and the restarted server's keyspaces
/// take it: SCAN answers the same page after a SIGKILL and restart, and a scan begun before the
/// restart goes on after it, meeting every key exactly once. FLUSHALL draws a new key.
#[test]
fn a_scan_goes_on_across_a_restart_after_a_rewrite() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    for i in 0..2000 {
        let _: () = con.set(format!("key:{i}"), i).unwrap();
    }
    common::rewrite_and_wait(&mut con, 1);
    let first = scan_page(&mut con, "0");
    assert_ne!(first.0, "0");
    server.kill();
    let mut server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    assert_eq!(scan_page(&mut con, "0"), first);
    let mut seen = first.1.clone();
    let mut cursor = first.0.clone();
    while cursor != "0" {
        let (next, keys) = scan_page(&mut con, &cursor);
        seen.extend(keys);
        cursor = next;
    }
    let count = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((count, seen.len()), (2000, 2000));

    // Emptied, refilled with the same keys: another hash order.
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    for i in 0..2000 {
        let _: () = con.set(format!("key:{i}"), i).unwrap();
    }
    assert_ne!(scan_page(&mut con, "0"), first);
    server.kill();
}

/// The base is written from a snapshot taken key by key while the shard serves (each key
/// kept as it was at the cut the first time a write changes it): writes, deletions, new keys,
/// renames, deadlines and FLUSHDB that land during the walk are each in the base or in the
/// log after it, never in both and never in neither. After the rewrite and a SIGKILL, every
/// key is back exactly as the clients last saw it, with its deadline.
#[test]
fn writes_during_the_base_walk_come_back_exactly_after_a_sigkill() {
    use std::collections::BTreeMap;
    // Deadlines as absolute Unix ms in 2100, so that the model knows each exactly.
    const AT: u64 = 4_102_444_800_000;
    for shards in [1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        // The walk takes 100 keys per step and pauses 1 ms between steps (at least a second
        // for these keys), so that the rounds below land in the middle of it.
        let mut server = MoonServer::start_with_env(
            tmp.path(),
            shards,
            &[],
            &[("MOON_REWRITE_FAULT", "slow-walk")],
        )
        .unwrap();
        let mut con = server.client();
        // Database 0: 100,000 keys, a tenth of them with a deadline. Database 1: keys that a
        // FLUSHDB during the walk removes. The model: key -> (value, deadline or 0).
        let mut model: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for chunk in (0..100_000).collect::<Vec<u64>>().chunks(5000) {
            let mut p = redis::pipe();
            for &i in chunk {
                let (k, v) = (format!("key:{i}"), format!("v{i}"));
                let at = if i % 10 == 0 { AT + i } else { 0 };
                let c = p.cmd("SET").arg(&k).arg(&v);
                if at != 0 {
                    c.arg("PXAT").arg(at);
                }
                c.ignore();
                model.insert(k, (v, at));
            }
            p.query::<()>(&mut con).unwrap();
        }
        let mut p = redis::pipe();
        p.cmd("SELECT").arg(1).ignore();
        for i in 0..1000 {
            p.cmd("SET").arg(format!("gone:{i}")).arg("x").ignore();
        }
        p.cmd("SELECT").arg(0).ignore();
        p.query::<()>(&mut con).unwrap();

        let _: String = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
        // Rounds of mixed writes over the whole key range until the rewrite is over; count
        // the rounds that ran while it was in progress.
        let (mut round, mut during) = (0u64, 0u32);
        let mut flushed = false;
        while info_field(&mut con, "aof_rewrite_in_progress") == "1" {
            let mut p = redis::pipe();
            for j in 0..200u64 {
                let i = (round * 7919 + j * 499) % 120_000;
                let k = format!("key:{i}");
                match j % 5 {
                    0 | 1 => {
                        let v = format!("r{round}-{j}");
                        p.cmd("SET").arg(&k).arg(&v).ignore();
                        model.insert(k, (v, 0));
                    }
                    2 => {
                        p.cmd("DEL").arg(&k).ignore();
                        model.remove(&k);
                    }
                    3 => {
                        p.cmd("APPEND").arg(&k).arg("+").ignore();
                        model.entry(k).or_default().0.push('+');
                    }
                    _ if j % 10 == 4 => {
                        let at = AT + 1_000_000 + round * 1000 + j;
                        p.cmd("PEXPIREAT").arg(&k).arg(at).ignore();
                        if let Some(entry) = model.get_mut(&k) {
                            entry.1 = at;
                        }
                    }
                    _ => {
                        // A rename reads the key where replay will find it: a removal the
                        // snapshot missed would lose the value.
                        if let Some(entry) = model.remove(&k) {
                            let to = format!("moved:{i}");
                            p.cmd("RENAME").arg(&k).arg(&to).ignore();
                            model.insert(to, entry);
                        }
                    }
                }
            }
            if round == 3 {
                p.cmd("SELECT").arg(1).ignore();
                p.cmd("FLUSHDB").ignore();
                p.cmd("SET").arg("after-flush").arg("y").ignore();
                p.cmd("SELECT").arg(0).ignore();
                flushed = true;
            }
            p.query::<()>(&mut con).unwrap();
            round += 1;
            if info_field(&mut con, "aof_rewrite_in_progress") == "1" {
                during += 1;
            }
        }
        assert_eq!(info_field(&mut con, "aof_last_bgrewrite_status"), "ok");
        assert!(
            during >= 20,
            "shards={shards}: writes ran during the walk ({during} rounds)"
        );
        assert!(flushed, "shards={shards}: FLUSHDB ran during the walk");
        // The seam copies the whole tail while serving, piece after piece: every shard
        // copied at least one piece before pausing.
        let copied_while_serving = server
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split("BGREWRITEAOF tail: ").nth(1))
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .filter(|&pieces| pieces >= 1)
            .count();
        assert_eq!(
            copied_while_serving, shards,
            "shards={shards}: tail pieces while serving"
        );
        // One write after the rewrite, in the new incr.
        let _: () = con.set("last", "z").unwrap();
        model.insert("last".into(), ("z".into(), 0));
        server.kill();

        let server = MoonServer::start_in(tmp.path(), shards, &[]).unwrap();
        let mut con = server.client();
        let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(size, model.len(), "shards={shards}: keys in database 0");
        let keys: Vec<&String> = model.keys().collect();
        for chunk in keys.chunks(5000) {
            let got: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut con).unwrap();
            let mut p = redis::pipe();
            for k in chunk {
                p.cmd("PEXPIRETIME").arg(*k);
            }
            let deadlines: Vec<i64> = p.query(&mut con).unwrap();
            for ((k, v), at) in chunk.iter().zip(got).zip(deadlines) {
                let (value, deadline) = &model[*k];
                assert_eq!(v.as_ref(), Some(value), "shards={shards}: {k}");
                let want = if *deadline == 0 { -1 } else { *deadline as i64 };
                assert_eq!(at, want, "shards={shards}: {k}'s deadline");
            }
        }
        let _: () = redis::cmd("SELECT").arg(1).query(&mut con).unwrap();
        let db1: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
        assert_eq!(
            db1,
            vec!["after-flush".to_string()],
            "shards={shards}: database 1"
        );
    }
}
