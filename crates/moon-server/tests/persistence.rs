//! Startup against what is on disk (SPEC §3, §4) and AOF failures (SPEC §5), against the
//! real binary.

mod common;

use common::{err_text, run_expecting_exit, MoonServer};
use redis::Commands;

fn resp(cmd: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", cmd.len()).into_bytes();
    for a in cmd {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    out
}

/// A legacy top-level (v1) directory whose one plain-RESP log sets `legacy:<i>` = `<i>`.
fn legacy_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let aof = tmp.path().join("appendonlydir");
    std::fs::create_dir_all(&aof).unwrap();
    std::fs::write(
        aof.join("moon.aof.manifest"),
        "seq 1\nbase moon.aof.1.base.rdb\nincr moon.aof.1.incr.aof\n",
    )
    .unwrap();
    let mut log = resp(&["SELECT", "0"]);
    for i in 0..20 {
        log.extend(resp(&["SET", &format!("legacy:{i}"), &i.to_string()]));
    }
    std::fs::write(aof.join("moon.aof.1.incr.aof"), log).unwrap();
    tmp
}

/// `CONFIG SET appendfsync <policy>`.
fn set_appendfsync(con: &mut redis::Connection, policy: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg(policy)
        .query(con)
        .unwrap();
}

/// INFO persistence's `aof_shard<N>:` line.
fn aof_shard_line(info: &str, shard: usize) -> String {
    info.lines()
        .find(|l| l.starts_with(&format!("aof_shard{shard}:")))
        .unwrap_or_else(|| panic!("no aof_shard{shard} line in {info}"))
        .to_string()
}

/// Field `name` (`lsn`, `durable_lsn`, `writes`, ...) of an `aof_shard<N>:` line.
fn aof_field(line: &str, name: &str) -> String {
    line.split([':', ','])
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        .to_string()
}

fn incr_file(dir: &std::path::Path, shard: usize) -> std::path::PathBuf {
    dir.join(format!("appendonlydir/shard-{shard}/moon.aof.1.incr.aof"))
}

#[test]
fn a_fresh_directory_gets_the_per_shard_layout_and_logs_it() {
    let server = MoonServer::start(2, &["--appendfsync", "always"]);
    let manifest =
        std::fs::read_to_string(server.dir.join("appendonlydir/moon.aof.manifest")).unwrap();
    assert_eq!(
        manifest,
        "version 2\nseq 1\nshards 2\nshard 0 max_lsn 0\nshard 1 max_lsn 0\n"
    );
    let logs = server.log_text();
    assert!(
        logs.contains("AOF enabled (PerShard, 2 writers, fsync: always)"),
        "{logs}"
    );
    assert!(
        logs.contains("shard 0 replayed 0 records, 0 bytes in"),
        "{logs}"
    );
    assert!(logs.contains("shard 1 replayed 0 records"), "{logs}");
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let server = MoonServer::start(1, &[]);
    let (code, out) = run_expecting_exit(&server.dir, 1, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is in use by another moon-server")
            && out.contains(&format!("pid {}", server.pid())),
        "{out}"
    );
    // The first server is unaffected.
    let pong: String = redis::cmd("PING").query(&mut server.client()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_changed_shard_count_is_refused_with_the_spec_message() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let _: () = server.client().set("k", "v").unwrap();
    server.terminate();
    let (code, out) = run_expecting_exit(tmp.path(), 4, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("ERR shard count changed (manifest=2, config=4); refusing to start to avoid data loss. See docs/runbooks/shard-count-change.md"), "{out}");
    // Nothing was touched: the right count still starts and has the data.
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    assert_eq!(server.client().get::<_, String>("k").unwrap(), "v");
}

#[test]
fn a_legacy_directory_is_migrated_with_one_shard_and_refused_with_more() {
    let tmp = legacy_dir();
    let (code, out) = run_expecting_exit(tmp.path(), 2, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("legacy top-level AOF")
            && out.contains(&format!(
                "moon-cli migrate-aof --dir {} --shards 2",
                tmp.path().display()
            ))
            && out.contains("docs/runbooks/multi-shard-aof.md"),
        "{out}"
    );
    assert!(
        tmp.path()
            .join("appendonlydir/moon.aof.1.incr.aof")
            .exists(),
        "refusal changed nothing"
    );

    let mut server = MoonServer::start_in(tmp.path(), 1, &[]).unwrap();
    assert!(
        server
            .log_text()
            .contains("migrated the legacy top-level AOF"),
        "{}",
        server.log_text()
    );
    let mut con = server.client();
    for i in 0..20 {
        assert_eq!(con.get::<_, i64>(format!("legacy:{i}")).unwrap(), i);
    }
    let _: () = con.set("after", "migration").unwrap();
    server.kill();
    assert!(!tmp
        .path()
        .join("appendonlydir/moon.aof.1.incr.aof")
        .exists());
    let server = MoonServer::start_in(tmp.path(), 1, &[]).unwrap();
    let mut con = server.client();
    assert_eq!(con.get::<_, String>("after").unwrap(), "migration");
    assert_eq!(con.get::<_, i64>("legacy:19").unwrap(), 19);
    // LSNs resumed above the migrated records.
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(info.contains("aof_shard0:lsn=21,"), "{info}");
}

#[test]
fn a_corrupt_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    server.terminate();
    let manifest = tmp.path().join("appendonlydir/moon.aof.manifest");
    std::fs::write(&manifest, "version 2\nseq 1\nshards 2\nshard 0 max_lsn 0\n").unwrap();
    let (code, out) = run_expecting_exit(tmp.path(), 2, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&manifest.display().to_string())
            && out.contains("is corrupt")
            && out.contains("inspect manually before deleting"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        "version 2\nseq 1\nshards 2\nshard 0 max_lsn 0\n",
        "never overwritten"
    );
}

#[test]
fn logs_without_a_manifest_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let _: () = server.client().set("k", "v").unwrap();
    server.terminate();
    std::fs::remove_file(tmp.path().join("appendonlydir/moon.aof.manifest")).unwrap();
    let (code, out) = run_expecting_exit(tmp.path(), 2, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("holds AOF data") && out.contains("but no manifest"),
        "{out}"
    );
    assert!(!tmp.path().join("appendonlydir/moon.aof.manifest").exists());
}

#[test]
fn a_torn_tail_is_dropped_and_a_corrupt_middle_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 1, &[]).unwrap();
    let mut con = server.client();
    for i in 0..10 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    server.kill();
    let incr = incr_file(tmp.path(), 0);
    let good = std::fs::read(&incr).unwrap();
    // Torn tail: half of a record.
    let mut torn = good.clone();
    torn.extend_from_slice(&[11, 0, 0, 0, 0, 0, 0, 0, 40, 0]);
    std::fs::write(&incr, &torn).unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 1, &[]).unwrap();
    let logs = server.log_text();
    assert!(
        logs.contains(&format!("at offset {}: dropped 10 bytes", good.len())),
        "{logs}"
    );
    assert_eq!(server.client().get::<_, i64>("k9").unwrap(), 9);
    server.terminate();
    assert_eq!(
        std::fs::read(&incr).unwrap(),
        good,
        "truncated to the last good record"
    );
    // Corruption: a flipped byte in the third record, with good records after it.
    let mut bad = good.clone();
    let record = good.len() / 10;
    bad[2 * record + 20] ^= 0x20;
    std::fs::write(&incr, &bad).unwrap();
    let (code, out) = run_expecting_exit(tmp.path(), 1, &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&incr.display().to_string())
            && out.contains(&format!("corrupt at offset {}", 2 * record))
            && out.contains("moon-cli check-aof"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&incr).unwrap(),
        bad,
        "a corrupt log is never truncated at startup"
    );
}

/// A failed fsync under `always`: the write that needed it is not acknowledged, later writes
/// are refused with MISCONF, reads keep working, INFO says so, and after a restart every
/// acknowledged write is there.
#[test]
fn a_failed_fsync_is_never_a_success_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_with_env(
        tmp.path(),
        1,
        &["--appendfsync", "always"],
        &[("MOON_AOF_FAULT", "fsync:3")],
    )
    .unwrap();
    let mut con = server.client();
    let _: () = con.set("a", "1").unwrap();
    let _: () = con.set("b", "2").unwrap();
    let e = con.set::<_, _, ()>("c", "3").unwrap_err();
    assert_eq!(
        err_text(&e),
        "MISCONF Errors writing to the AOF file: Input/output error"
    );
    let e = con.incr::<_, _, i64>("a", 1).unwrap_err();
    assert_eq!(
        err_text(&e),
        "MISCONF Errors writing to the AOF file: Input/output error"
    );
    assert_eq!(
        con.get::<_, String>("a").unwrap(),
        "1",
        "reads keep working and the refused INCR did not run"
    );
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(
        info.contains("aof_last_write_status:err")
            && info.contains("aof_last_fsync_status:err")
            && info.contains("fsync_status=err"),
        "{info}"
    );
    server.kill();
    let server = MoonServer::start_in(tmp.path(), 1, &["--appendfsync", "always"]).unwrap();
    let mut con = server.client();
    assert_eq!(con.get::<_, String>("a").unwrap(), "1");
    assert_eq!(con.get::<_, String>("b").unwrap(), "2");
}

/// A failed write under `everysec` (each shard's second write fails): the write that hit it
/// gets MISCONF, so do all later writes on that shard, and reads keep working.
#[test]
fn a_failed_write_is_never_a_success_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let server =
        MoonServer::start_with_env(tmp.path(), 2, &[], &[("MOON_AOF_FAULT", "write:2")]).unwrap();
    let mut con = server.client();
    let keys = common::keys_on_different_shards(2);
    let (k0, k1) = (&keys[0], &keys[1]);
    // First write on each shard succeeds; the second write on each shard fails.
    let _: () = con.set(k0, "1").unwrap();
    let _: () = con.set(k1, "1").unwrap();
    let e = con.set::<_, _, ()>(k0, "2").unwrap_err();
    assert_eq!(
        err_text(&e),
        "MISCONF Errors writing to the AOF file: Input/output error"
    );
    let e = con.set::<_, _, ()>(k0, "3").unwrap_err();
    assert!(err_text(&e).starts_with("MISCONF"), "{e}");
    let e = con.set::<_, _, ()>(k1, "2").unwrap_err();
    assert!(err_text(&e).starts_with("MISCONF"), "{e}");
    let v: Vec<Option<String>> = con.mget(&[k0, k1]).unwrap();
    assert_eq!(v.len(), 2);
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(
        info.contains("aof_last_write_status:err")
            && info.contains("aof_last_error:Input/output error"),
        "{info}"
    );
}

/// `CONFIG SET appendfsync always` reaches every shard's writer: the next write's reply comes
/// only after its record is fdatasynced (INFO: durable LSN = LSN on every shard).
#[test]
fn config_set_appendfsync_reaches_every_writer() {
    let server = MoonServer::start(2, &["--appendfsync", "no"]);
    let mut con = server.client();
    set_appendfsync(&mut con, "always");
    let keys = common::keys_on_different_shards(2);
    for k in &keys {
        let _: () = con.set(k, "v").unwrap();
    }
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(info.contains("aof_fsync:always"), "{info}");
    for shard in 0..2 {
        let line = aof_shard_line(&info, shard);
        let field = |name: &str| aof_field(&line, name);
        assert_eq!(field("lsn"), "1", "{line}");
        assert_eq!(field("durable_lsn"), "1", "{line}");
        // One group-commit round: one write, and (now under `always`) one fdatasync.
        assert_eq!(field("writes"), "1", "{line}");
        assert_eq!(field("fsyncs"), "1", "{line}");
    }
}

/// Review finding (issue 31): a cross-shard transaction released under `no` or `everysec` has
/// its parts written, not fsynced. `CONFIG SET appendfsync always` answers only once every
/// shard fsynced what it had written, or a write acknowledged under `always` on one shard
/// could follow a part that a power cut takes from the other, and recovery would cut it.
#[test]
fn switching_to_always_fsyncs_every_shard_before_the_ok() {
    let server = MoonServer::start(2, &["--appendfsync", "no"]);
    let mut con = server.client();
    let keys = common::keys_on_different_shards(2);
    let _: () = con.mset(&[(&keys[0], "1"), (&keys[1], "2")]).unwrap();
    set_appendfsync(&mut con, "always");
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    for shard in 0..2 {
        let line = aof_shard_line(&info, shard);
        let field = |name: &str| aof_field(&line, name);
        assert_eq!(field("lsn"), "1", "{line}");
        assert_eq!(field("durable_lsn"), "1", "{line}");
    }
}

/// A cross-shard write while one shard's log is failing is refused whole before anything runs
/// (the healthy shard does not apply or log its half), with one reply per request — a
/// pipeline around it still gets its reads answered. The failing shard first in lock order
/// is found when it is locked; the last one when its lock, part and commit go in the lock
/// chain's last visit (`Shard::tx_lock_run_last`), where the refusal must come before its part
/// runs and leave the first shard unlocked.
#[test]
fn a_cross_shard_write_is_refused_whole_while_the_first_shards_log_fails() {
    refused_whole_while_one_log_fails(0);
}

#[test]
fn a_cross_shard_write_is_refused_whole_while_the_last_shards_log_fails() {
    refused_whole_while_one_log_fails(1);
}

fn refused_whole_while_one_log_fails(failing: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut server =
        MoonServer::start_with_env(tmp.path(), 2, &[], &[("MOON_AOF_FAULT", "write:3")]).unwrap();
    let mut con = server.client();
    let keys = common::keys_on_different_shards(2);
    let (k0, k1) = (&keys[0], &keys[1]);
    // `failing` is a shard number: 0 is locked first, 1 last (with its part in one exchange).
    let (bad, good) = if common::slot_shard(k0.as_bytes(), 2) == failing {
        (k0, k1)
    } else {
        (k1, k0)
    };
    assert_eq!(common::slot_shard(bad.as_bytes(), 2), failing);
    let _: () = con.set(bad, "1").unwrap();
    let _: () = con.set(bad, "1").unwrap();
    let _: () = con.set(good, "1").unwrap();
    // The failing key's shard: its third write fails, and its log stays failed.
    assert!(con.set::<_, _, ()>(bad, "2").is_err());
    let e = con.mset::<_, _, ()>(&[(k0, "x"), (k1, "y")]).unwrap_err();
    assert!(err_text(&e).starts_with("MISCONF"), "{e}");
    let replies: Vec<redis::RedisResult<redis::Value>> = {
        let mut p = redis::pipe();
        p.cmd("MSET").arg(k0).arg("x").arg(k1).arg("y");
        p.cmd("GET").arg(good);
        // Read the replies one by one: the first is an error.
        let mut t = std::net::TcpStream::connect(server.addr).unwrap();
        std::io::Write::write_all(&mut t, &p.get_packed_pipeline()).unwrap();
        let mut parser = redis::Parser::new();
        let mut r = std::io::BufReader::new(t);
        (0..2).map(|_| parser.parse_value(&mut r)).collect()
    };
    let texts: Vec<String> = replies.iter().map(|r| format!("{r:?}")).collect();
    assert!(texts[0].contains("MISCONF"), "{texts:?}");
    assert!(
        matches!(&replies[1], Ok(redis::Value::BulkString(b)) if b == b"1"),
        "GET answered: {texts:?}"
    );
    let v: Vec<Option<String>> = con.mget(&[k0, k1]).unwrap();
    // Nothing of the MSET ran, and the failing key is what its log holds (the refused SET's
    // "2" is not).
    assert_eq!(v, [Some("1".into()), Some("1".into())]);
    // The healthy shard goes on acknowledging writes (it was unlocked), and recovery keeps
    // them: no part of the refused MSET is in its log to end it early.
    let _: () = con.set(good, "after").unwrap();
    server.kill();
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let got: Option<String> = server.client().get(good).unwrap();
    assert_eq!(got.as_deref(), Some("after"));
}

/// A cross-shard transaction whose part cannot be logged (the failure happens during its
/// commit): the server exits at once, its parts still held, and recovery drops the transaction
/// on every shard while keeping what was acknowledged before.
#[test]
fn a_failed_cross_shard_commit_stops_the_server_and_recovery_drops_it_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_with_env(
        tmp.path(),
        2,
        &["--appendfsync", "always"],
        &[("MOON_AOF_FAULT", "write:2")],
    )
    .unwrap();
    let mut con = server.client();
    let keys = common::keys_on_different_shards(2);
    let (k0, k1) = (&keys[0], &keys[1]);
    let _: () = con.set(k0, "1").unwrap();
    let _: () = con.set(k1, "1").unwrap();
    let r = con.mset::<_, _, ()>(&[(k0, "x"), (k1, "y")]);
    assert!(r.is_err(), "never acknowledged");
    let status = server
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("the server exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        server.log_text().contains("could not be logged"),
        "{}",
        server.log_text()
    );
    let server = MoonServer::start_in(tmp.path(), 2, &["--appendfsync", "always"]).unwrap();
    let v: Vec<Option<String>> = server.client().mget(&[k0, k1]).unwrap();
    assert_eq!(v, [Some("1".into()), Some("1".into())]);
}

/// `CONFIG SET appendfsync always` after writes made under `everysec`: a reply waiting for
/// them must get them fsynced, not wait for a timer that no longer runs (it used to hang, and
/// SIGTERM with it). Every direction, under load, then a clean shutdown.
#[test]
fn changing_appendfsync_in_every_direction_under_load_never_hangs() {
    let mut server = MoonServer::start(2, &[]);
    let mut con = server.client();
    con.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _: () = con.set("a", "1").unwrap();
    set_appendfsync(&mut con, "always");
    let v: String = con
        .get("a")
        .expect("GET answers after tightening to always");
    assert_eq!(v, "1");
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    for line in info.lines().filter(|l| l.starts_with("aof_shard")) {
        let field = |name: &str| {
            line.split([':', ','])
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(field("lsn"), field("durable_lsn"), "{line}");
    }

    let url = server.url();
    let writer = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        for i in 0..3000 {
            let _: () = c
                .set(format!("load:{i}"), i)
                .expect("every write is answered");
        }
    });
    for policy in [
        "no", "always", "everysec", "always", "no", "everysec", "no", "always",
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg(policy)
            .query(&mut con)
            .unwrap();
        let _: () = con.set("probe", policy).expect("a write is answered");
        let got: String = con.get("probe").expect("a read is answered");
        assert_eq!(got, policy);
    }
    writer.join().expect("the writer got every reply");
    assert!(server.terminate().success(), "SIGTERM completes");
}

/// A request whose record would exceed what the log format can hold is refused before it
/// runs, with a clear error; a MULTI likewise (EXECABORT); a pipeline too large to log as one
/// transaction runs command by command instead. `MOON_MAX_RECORD_BYTES` lowers the bound
/// (2 GiB: `moon_aof::record::MAX_PAYLOAD`) so the test need not send gigabytes.
#[test]
fn a_request_too_large_for_one_record_is_refused_before_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_with_env(
        tmp.path(),
        2,
        &["--appendfsync", "always"],
        &[("MOON_MAX_RECORD_BYTES", "4096")],
    )
    .unwrap();
    let mut con = server.client();
    let (big, bigger) = ("x".repeat(2000), "y".repeat(2500));
    let _: () = con.set("small", &big).unwrap();
    let e = con
        .mset::<_, _, ()>(&[("a", &big), ("b", &bigger)])
        .unwrap_err();
    assert!(
        err_text(&e).starts_with("ERR request too large to log"),
        "{e}"
    );
    // MULTI/EXEC on the wire: the EXEC reply is the error.
    let mut t = std::net::TcpStream::connect(server.addr).unwrap();
    let packed = redis::pipe()
        .cmd("MULTI")
        .set("a", &big)
        .set("b", &bigger)
        .cmd("EXEC")
        .get_packed_pipeline();
    std::io::Write::write_all(&mut t, &packed).unwrap();
    let mut r = std::io::BufReader::new(t);
    let mut parser = redis::Parser::new();
    let replies: Vec<String> = (0..4)
        .map(|_| format!("{:?}", parser.parse_value(&mut r)))
        .collect();
    assert!(
        replies[1].contains("QUEUED") && replies[2].contains("QUEUED"),
        "{replies:?}"
    );
    assert!(replies[3].contains("EXECABORT"), "{replies:?}");
    let v: Vec<Option<String>> = con.mget(&["a", "b"]).unwrap();
    assert_eq!(v, [None, None], "nothing of either ran");

    // A RENAME across shards logs the value it moves, which its arguments do not show.
    let keys = common::keys_on_different_shards(2);
    let _: () = con.set(&keys[0], &bigger).unwrap();
    let mut t = std::net::TcpStream::connect(server.addr).unwrap();
    let packed = redis::pipe()
        .cmd("MULTI")
        .cmd("RENAME")
        .arg(&keys[0])
        .arg(&keys[1])
        .set("e", &big)
        .cmd("EXEC")
        .get_packed_pipeline();
    std::io::Write::write_all(&mut t, &packed).unwrap();
    let mut r = std::io::BufReader::new(t);
    let replies: Vec<String> = (0..4)
        .map(|_| format!("{:?}", parser.parse_value(&mut r)))
        .collect();
    assert!(replies[3].contains("EXECABORT"), "{replies:?}");
    let moved: Option<String> = con.get(&keys[1]).unwrap();
    assert_eq!(moved, None, "the RENAME did not run");
    let _: () = redis::cmd("RENAME")
        .arg(&keys[0])
        .arg(&keys[1])
        .query(&mut con)
        .expect("alone it fits");
    let _: () = con.del(&keys[1]).unwrap();
    let replies: Vec<redis::Value> = redis::pipe()
        .mset(&[(&keys[0], "1"), (&keys[1], "2")])
        .set("c", &big)
        .set("d", &bigger)
        .query(&mut con)
        .expect("each command of the pipeline answered on its own");
    assert_eq!(replies.len(), 3);
    server.kill();
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    let got: Vec<Option<String>> = con.mget(&["c", "d", &keys[0], &keys[1]]).unwrap();
    assert_eq!(
        got,
        [
            Some(big.clone()),
            Some(bigger.clone()),
            Some("1".into()),
            Some("2".into())
        ]
    );
}

/// After MISCONF, reads never return data the log lacks: the write whose record could not be
/// written ran in memory, but once the log has failed the shard answers from what its files
/// hold (as a restart would), and a read held with the failed write gets MISCONF too.
#[test]
fn after_misconf_reads_never_return_what_the_log_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let server =
        MoonServer::start_with_env(tmp.path(), 1, &[], &[("MOON_AOF_FAULT", "write:2")]).unwrap();
    let mut con = server.client();
    let _: () = con.set("a", "1").unwrap();
    // One pipeline: the SET's record is the failing write; the GET read its value.
    let mut t = std::net::TcpStream::connect(server.addr).unwrap();
    let packed = redis::pipe()
        .set("b", "unlogged")
        .get("b")
        .get_packed_pipeline();
    std::io::Write::write_all(&mut t, &packed).unwrap();
    let mut r = std::io::BufReader::new(t);
    let mut parser = redis::Parser::new();
    let replies: Vec<String> = (0..2)
        .map(|_| format!("{:?}", parser.parse_value(&mut r)))
        .collect();
    assert!(replies[0].contains("MISCONF"), "{replies:?}");
    assert!(
        !replies[1].contains("unlogged"),
        "a read held with the failed write returned it: {replies:?}"
    );
    let b: Option<String> = con.get("b").unwrap();
    assert_eq!(b, None, "the unlogged write is not visible");
    let a: String = con.get("a").expect("reads keep working");
    assert_eq!(a, "1");
    let e = con.set::<_, _, ()>("c", "3").unwrap_err();
    assert!(err_text(&e).starts_with("MISCONF"), "{e}");
}

/// Issue 22, 7: after a failed fsync under `always`, reads return only what the log
/// acknowledged: the write answered MISCONF is not read back — not by a read on its shard,
/// nor by KEYS/SCAN/DBSIZE, which read every shard from wherever the client is connected
/// (before: the keyspace was rebuilt from the file, page cache included, and only by the
/// shard's own batches).
#[test]
fn after_misconf_reads_return_only_what_the_log_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = common::keys_on_different_shards(2);
    let on0 = |name: &str| format!("{{{}}}:{name}", keys[0]);
    let server = MoonServer::start_with_env(
        tmp.path(),
        2,
        &["--appendfsync", "always"],
        &[("MOON_AOF_FAULT", "fsync:3")],
    )
    .unwrap();
    let mut con = server.client();
    let _: () = con.set(on0("a"), "1").unwrap();
    let _: () = con.set(on0("b"), "2").unwrap();
    let e = con.set::<_, _, ()>(on0("c"), "3").unwrap_err();
    assert!(err_text(&e).starts_with("MISCONF"), "{e}");
    // Every client, whichever shard it is on, first reads every shard.
    for _ in 0..4 {
        let mut other = server.client();
        let mut all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut other).unwrap();
        all.sort();
        assert_eq!(
            all,
            [on0("a"), on0("b")],
            "KEYS sees no unacknowledged write"
        );
        let n: i64 = redis::cmd("DBSIZE").query(&mut other).unwrap();
        assert_eq!(n, 2);
    }
    assert_eq!(con.get::<_, Option<String>>(on0("c")).unwrap(), None);
    assert_eq!(con.get::<_, String>(on0("b")).unwrap(), "2");
}

/// Issue 22, 2: a long-lived shard (LSNs past 2^32) whose incr's first record is damaged,
/// with 1,000 valid records after it: the server refuses to start (corruption, the file
/// untouched) instead of taking the damage for a torn tail at offset 0 and truncating the
/// incr to nothing (before: it started with 1 key of 1,001).
#[test]
fn a_damaged_first_incr_record_past_lsn_2_pow_32_refuses_startup() {
    use bytes::Bytes;
    let tmp = tempfile::tempdir().unwrap();
    let base_lsn = 5_000_000_000u64;
    let mut m = moon_manifest::PerShard::new(2, vec![base_lsn]);
    let shard = moon_manifest::PerShard::shard_dir(tmp.path(), 0);
    std::fs::create_dir_all(&shard).unwrap();
    let mut base = Vec::new();
    let cmd = |k: String| vec![Bytes::from("SET"), Bytes::from(k), Bytes::from("v")];
    moon_aof::append_command_record(base_lsn, &cmd("in-base".into()), &mut base).unwrap();
    m.bases[0] = Some(moon_manifest::BaseInfo {
        bytes: base.len() as u64,
        crc32: crc32fast::hash(&base),
    });
    std::fs::write(m.base_path(tmp.path(), 0), &base).unwrap();
    let mut incr = Vec::new();
    for i in 1..=1000u64 {
        moon_aof::append_command_record(base_lsn + i, &cmd(format!("k{i}")), &mut incr).unwrap();
    }
    let incr_path = m.incr_path(tmp.path(), 0);
    std::fs::write(moon_manifest::manifest_path(tmp.path()), m.render()).unwrap();
    // Whole, it starts with every key.
    std::fs::write(&incr_path, &incr).unwrap();
    let server = MoonServer::start_in(tmp.path(), 1, &[]).unwrap();
    assert_eq!(
        redis::cmd("DBSIZE")
            .query::<i64>(&mut server.client())
            .unwrap(),
        1001
    );
    drop(server);
    // The first incr record damaged: refused, nothing truncated.
    incr[14] ^= 0x01;
    std::fs::write(&incr_path, &incr).unwrap();
    let (code, out) = run_expecting_exit(tmp.path(), 1, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("corrupt at offset 0") && out.contains("aof-corruption.md"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&incr_path).unwrap(),
        incr,
        "the file is untouched"
    );
}

/// Recovery's first pass hands each shard the length of its incr it found valid, and the
/// incr's replay skips those checksums: the length must be the incr's, not the base's. A long
/// base in the older record form and a short incr damaged in its middle (inside the base's
/// length): the server refuses to start, naming the damaged record, and truncates nothing.
#[test]
fn a_damaged_incr_record_is_refused_behind_a_longer_record_base() {
    use bytes::Bytes;
    let tmp = tempfile::tempdir().unwrap();
    let base_lsn = 300u64;
    let mut m = moon_manifest::PerShard::new(2, vec![base_lsn]);
    let shard = moon_manifest::PerShard::shard_dir(tmp.path(), 0);
    std::fs::create_dir_all(&shard).unwrap();
    let cmd = |k: String| vec![Bytes::from("SET"), Bytes::from(k), Bytes::from("v")];
    let mut base = Vec::new();
    for lsn in 1..=base_lsn {
        moon_aof::append_command_record(lsn, &cmd(format!("base-{lsn}")), &mut base).unwrap();
    }
    m.bases[0] = Some(moon_manifest::BaseInfo {
        bytes: base.len() as u64,
        crc32: crc32fast::hash(&base),
    });
    std::fs::write(m.base_path(tmp.path(), 0), &base).unwrap();
    let mut incr = Vec::new();
    let mut ends = Vec::new();
    for i in 1..=10u64 {
        moon_aof::append_command_record(base_lsn + i, &cmd(format!("k{i}")), &mut incr).unwrap();
        ends.push(incr.len());
    }
    assert!(incr.len() < base.len());
    let incr_path = m.incr_path(tmp.path(), 0);
    std::fs::write(moon_manifest::manifest_path(tmp.path()), m.render()).unwrap();
    // The fifth record's value damaged ("v" becomes "w": still a well-formed SET, so only its
    // checksum tells), five good records after it.
    let fifth = ends[3];
    let value_at = ends[4] - 4 - 3;
    assert_eq!(incr[value_at], b'v');
    incr[value_at] ^= 0x01;
    std::fs::write(&incr_path, &incr).unwrap();
    let out = match MoonServer::start_in(tmp.path(), 1, &[]) {
        Ok(_) => panic!("the server started on an incr with a damaged record"),
        Err(out) => out,
    };
    assert!(
        out.contains(&format!("corrupt at offset {fifth}")) && out.contains("aof-corruption.md"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&incr_path).unwrap(),
        incr,
        "the file is untouched"
    );
    let (code, _) = run_expecting_exit(tmp.path(), 1, &[]);
    assert_eq!(code, 1);
}
