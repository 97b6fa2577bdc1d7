//! `maxmemory` against the real binary: the durable default refuses writes with Redis's OOM
//! error while reads and deletes keep working; an eviction policy makes room instead, and a
//! SIGKILL + restart recovers exactly the keyspace the clients last saw (evictions are logged
//! as deletions).

mod common;

use std::collections::BTreeMap;

use common::{err_text, MoonServer};
use redis::Commands;

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}:\n{info}"))
        .trim()
        .to_string()
}

/// Every key with its value (the whole keyspace, read with KEYS + GET).
fn everything(con: &mut redis::Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = con.keys("*").expect("KEYS");
    keys.into_iter()
        .map(|k| {
            let v: String = con.get(&k).expect("GET");
            (k, v)
        })
        .collect()
}

#[test]
fn noeviction_refuses_writes_with_oom_while_reads_and_deletes_work() {
    let s = MoonServer::start(2, &["--maxmemory", "1mb"]);
    let mut con = s.client();
    let value = "x".repeat(10_000);
    let mut written = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let key = format!("k{i}");
        match con.set::<_, _, ()>(&key, &value) {
            Ok(()) => written.push(key),
            Err(e) => {
                refused = Some(err_text(&e));
                break;
            }
        }
    }
    assert_eq!(
        refused.as_deref(),
        Some(OOM),
        "writes past 1 MB must be refused"
    );
    assert!(
        (50..200).contains(&written.len()),
        "about 1 MB of 10 KB values fit, got {}",
        written.len()
    );
    // Reads keep working; commands that cannot grow memory too.
    let v: String = con.get(&written[0]).expect("GET over maxmemory");
    assert_eq!(v.len(), value.len());
    let n: i64 = con.del(&written[..40]).expect("DEL over maxmemory");
    assert_eq!(n, 40);
    // Room again.
    let () = con.set("after-delete", "v").expect("SET after DEL");

    assert_eq!(info_field(&mut con, "memory", "maxmemory"), "1048576");
    assert_eq!(
        info_field(&mut con, "memory", "maxmemory_policy"),
        "noeviction"
    );
    let used: u64 = info_field(&mut con, "memory", "used_memory")
        .parse()
        .expect("number");
    let shard0: u64 = info_field(&mut con, "memory", "shard0_used_memory")
        .parse()
        .expect("number");
    let shard1: u64 = info_field(&mut con, "memory", "shard1_used_memory")
        .parse()
        .expect("number");
    assert_eq!(used, shard0 + shard1);
    assert!(used > 500_000 && used <= 1_100_000, "used_memory {used}");
    assert_eq!(info_field(&mut con, "memory", "shard0_maxmemory"), "524288");
    assert_eq!(info_field(&mut con, "stats", "evicted_keys"), "0");
}

#[test]
fn config_set_maxmemory_applies_at_once_and_lifting_it_lets_writes_in() {
    let s = MoonServer::start(1, &[]);
    let mut con = s.client();
    for i in 0..20 {
        let () = con.set(format!("k{i}"), "y".repeat(10_000)).expect("SET");
    }
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("100kb")
        .query(&mut con)
        .expect("CONFIG SET maxmemory");
    let e = con
        .set::<_, _, ()>("more", "z")
        .expect_err("over the new limit");
    assert_eq!(err_text(&e), OOM);
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-random")
        .query(&mut con)
        .expect("CONFIG SET maxmemory-policy");
    let () = con.set("more", "z").expect("room is made now");
    let evicted: u64 = info_field(&mut con, "stats", "evicted_keys")
        .parse()
        .expect("number");
    assert!(evicted >= 10, "evicted {evicted}");
    let bad = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("lru")
        .query::<()>(&mut con)
        .expect_err("unknown policy");
    assert!(err_text(&bad).contains("allkeys-lru"), "{}", err_text(&bad));
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut con)
        .expect("lift the limit");
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query(&mut con)
        .expect("CONFIG GET");
    assert!(
        policy
            .windows(2)
            .any(|w| w == ["maxmemory-policy", "allkeys-random"]),
        "{policy:?}"
    );
}

#[test]
fn evictions_are_logged_so_a_restart_after_sigkill_recovers_the_same_keyspace() {
    for policy in ["allkeys-lru", "allkeys-lfu", "volatile-ttl"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = [
            "--maxmemory",
            "200kb",
            "--maxmemory-policy",
            policy,
            "--appendfsync",
            "always",
        ];
        let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
        let mut con = s.client();
        for i in 0..300 {
            let key = format!("key:{i}");
            let value = format!("{i}:{}", "v".repeat(2000));
            // Under volatile-ttl only keys with a TTL may go: keep the others well under the limit.
            let persistent = if policy == "volatile-ttl" {
                i % 10 == 1
            } else {
                i % 2 == 1
            };
            if !persistent {
                let () = con.set_ex(&key, &value, 3600 + i).expect("SETEX");
            } else {
                let () = con.set(&key, &value).expect("SET");
            }
            // Reads move keys up the LRU/LFU order.
            let _: Option<String> = con.get(format!("key:{}", i / 2)).expect("GET");
        }
        let before = everything(&mut con);
        let evicted: u64 = info_field(&mut con, "stats", "evicted_keys")
            .parse()
            .expect("number");
        assert!(evicted > 100, "{policy}: evicted {evicted}");
        assert!(before.len() < 200, "{policy}: {} keys left", before.len());
        if policy == "volatile-ttl" {
            let index = |k: &String| k[4..].parse::<u64>().expect("key:N");
            let persistent = before.keys().filter(|k| index(k) % 10 == 1).count();
            assert_eq!(
                persistent, 30,
                "{policy}: keys without a TTL are never evicted"
            );
            // The nearest deadlines went first: the keys with a TTL left are the last written.
            let oldest_volatile = before.keys().map(index).filter(|i| i % 10 != 1).min();
            assert!(oldest_volatile > Some(150), "{policy}: {oldest_volatile:?}");
        }
        s.kill();
        let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
        let mut con = s.client();
        assert_eq!(
            everything(&mut con),
            before,
            "{policy}: the keyspace after restart"
        );
    }
}

/// Writes across shards are all or nothing under maxmemory too: when one of their shards is
/// over its share, the whole command (or EXEC) is refused and nothing of it stays, also after
/// a restart; commands that cannot grow memory (RENAME, DEL) keep working.
#[test]
fn a_write_across_shards_is_refused_whole_when_one_shard_is_over_its_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--maxmemory", "400kb", "--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut con = s.client();
    let keys = common::keys_on_different_shards(2);
    let (a, b) = (&keys[0], &keys[1]);
    // Fill b's shard only ({b}... keys live with b) until it refuses.
    let mut filled = 0;
    loop {
        let r: redis::RedisResult<()> = con.set(format!("{{{b}}}:{filled}"), "f".repeat(10_000));
        match r {
            Ok(()) => filled += 1,
            Err(e) => {
                assert_eq!(err_text(&e), OOM);
                break;
            }
        }
        assert!(filled < 100, "b's shard never filled up");
    }
    let e = redis::cmd("MSET")
        .arg(&[a.as_str(), "1", b.as_str(), "2"])
        .query::<()>(&mut con)
        .expect_err("MSET across shards");
    assert_eq!(err_text(&e), OOM);
    let e = redis::cmd("MSETNX")
        .arg(&[a.as_str(), "1", b.as_str(), "2"])
        .query::<i64>(&mut con)
        .expect_err("MSETNX across shards");
    assert_eq!(err_text(&e), OOM);
    let () = redis::cmd("MULTI").query(&mut con).expect("MULTI");
    let queued: String = redis::cmd("SET")
        .arg(a)
        .arg("1")
        .query(&mut con)
        .expect("SET queued");
    assert_eq!(queued, "QUEUED");
    let _: String = redis::cmd("SET")
        .arg(b)
        .arg("2")
        .query(&mut con)
        .expect("SET queued");
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut con)
        .expect_err("EXEC touching a full shard");
    assert_eq!(
        err_text(&e),
        format!("EXECABORT Transaction discarded because of: {OOM}"),
        "EXEC is refused whole, in Redis's words"
    );
    let got: Option<String> = con.get(a).expect("GET");
    assert_eq!(
        got, None,
        "nothing of the refused writes stayed on a's shard"
    );

    // RENAME cannot grow memory: it works even into the full shard.
    let src = (0..)
        .map(|i| format!("src{i}"))
        .find(|k| common::slot_shard(k.as_bytes(), 2) == common::slot_shard(a.as_bytes(), 2))
        .expect("a key on a's shard");
    let () = con.set(&src, "moved").expect("SET on a's shard");
    let dst = format!("{{{b}}}:renamed");
    let () = con.rename(&src, &dst).expect("RENAME into the full shard");
    let moved: String = con.get(&dst).expect("GET");
    assert_eq!(moved, "moved");

    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut con = s.client();
    let got: Option<String> = con.get(a).expect("GET after restart");
    assert_eq!(got, None);
    let moved: String = con.get(&dst).expect("GET after restart");
    assert_eq!(moved, "moved");
}

/// While clients are paused (CLIENT PAUSE WRITE, as a failover does) nothing is evicted, as in
/// Redis: a read-only script, which runs through the pause and makes room as a script does,
/// leaves every key in place; once the pause ends a write evicts again. (Review finding: the
/// script's room-making evicted under the pause, logging deletions a failover must not see.)
#[test]
fn nothing_is_evicted_while_clients_are_paused() {
    let s = MoonServer::start(1, &["--maxmemory-policy", "allkeys-lru"]);
    let mut con = s.client();
    for i in 0..200 {
        let () = con.set(format!("k{i}"), "x".repeat(1000)).expect("SET");
    }
    let () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "50000"])
        .query(&mut con)
        .expect("CONFIG SET");
    let () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .query(&mut con)
        .expect("CLIENT PAUSE");
    for script in ["return 1", "#!lua flags=no-writes\nreturn 1"] {
        let one: i64 = redis::cmd("EVAL_RO")
            .arg(&[script, "0"])
            .query(&mut con)
            .expect("EVAL_RO");
        assert_eq!(one, 1);
    }
    let keys: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(keys, 200, "a read-only script evicted during the pause");
    assert_eq!(info_field(&mut con, "stats", "evicted_keys"), "0");
    let () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut con)
        .expect("CLIENT UNPAUSE");
    let () = con.set("after", "v").expect("SET after the pause");
    let keys: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert!(
        keys < 200,
        "a write after the pause makes room: {keys} keys"
    );
}

/// A limit 100 kB above what the server holds now, `volatile-random`, a key with a TTL
/// (`volatile-key`), then one 200 kB write (`big-key`) that ran under the limit and leaves
/// the keyspace over it.
fn over_the_limit_by_one_write(con: &mut redis::Connection) {
    let used: u64 = info_field(con, "memory", "used_memory")
        .parse()
        .expect("number");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg((used + 100 * 1024).to_string())
        .arg("maxmemory-policy")
        .arg("volatile-random")
        .query(con)
        .expect("CONFIG SET");
    let () = con.set_ex("volatile-key", "x", 10_000).expect("SETEX");
    let _: i64 = redis::cmd("SETBIT")
        .arg("big-key")
        .arg(1_600_000)
        .arg(0)
        .query(con)
        .expect("SETBIT");
}

/// Room is made before every command, as Redis evicts before each one it runs: a read after a
/// write that went over the limit evicts (before, only the next write did), and that eviction
/// is logged like any other, so a SIGKILL + restart keeps the key gone.
#[test]
fn a_read_after_a_write_over_the_limit_evicts_and_the_eviction_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always", "--enable-debug-command", "yes"];
    let mut s = MoonServer::start_in(dir.path(), 1, &args).expect("start");
    let mut con = s.client();
    over_the_limit_by_one_write(&mut con);
    assert_eq!(info_field(&mut con, "stats", "evicted_keys"), "0");
    // An inspection evicts nothing (its deletion would not be logged; review finding).
    let line: String = redis::cmd("DEBUG")
        .arg("OBJECT")
        .arg("big-key")
        .query(&mut con)
        .expect("DEBUG OBJECT");
    assert!(line.contains("encoding:"), "{line}");
    assert_eq!(info_field(&mut con, "stats", "evicted_keys"), "0");
    let bit: i64 = redis::cmd("GETBIT")
        .arg("big-key")
        .arg(0)
        .query(&mut con)
        .expect("GETBIT");
    assert_eq!(bit, 0);
    assert_eq!(
        info_field(&mut con, "stats", "evicted_keys"),
        "1",
        "the read made room"
    );
    s.kill();
    let s = MoonServer::start_in(dir.path(), 1, &args).expect("restart");
    let mut con = s.client();
    let exists: bool = con.exists("volatile-key").expect("EXISTS");
    assert!(!exists, "the eviction was logged");
    let exists: bool = con.exists("big-key").expect("EXISTS");
    assert!(exists);
}

/// With a failed log nothing is evicted: reads answer from the keyspace rebuilt from the log at
/// once, and a deletion could not be logged, so a key they evicted would be back after a
/// restart (review finding).
#[test]
fn reads_on_a_failed_log_evict_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_with_env(dir.path(), 1, &args, &[("MOON_AOF_FAULT", "write:3")])
        .expect("start");
    let mut con = s.client();
    over_the_limit_by_one_write(&mut con);
    let e = con
        .set::<_, _, ()>("c", "v")
        .expect_err("the third write fails");
    assert!(err_text(&e).starts_with("MISCONF"), "{}", err_text(&e));
    let bit: i64 = redis::cmd("GETBIT")
        .arg("big-key")
        .arg(0)
        .query(&mut con)
        .expect("GETBIT");
    assert_eq!(bit, 0);
    assert_eq!(info_field(&mut con, "stats", "evicted_keys"), "0");
    let exists: bool = con.exists("volatile-key").expect("EXISTS");
    assert!(exists, "not evicted by a read on a failed log");
    s.kill();
    let s = MoonServer::start_in(dir.path(), 1, &args).expect("restart");
    let exists: bool = s.client().exists("volatile-key").expect("EXISTS");
    assert!(exists, "and there after the restart: the two agree");
}
