//! The 16 databases against the real binary: SELECT keeps clients apart, per-database
//! commands see only their database, MOVE/SWAPDB/COPY DB cross them, WATCH and transactions
//! follow the database, and all of it survives SIGKILL and BGREWRITEAOF.

mod common;

use common::{expect_err, keys_on_different_shards, MoonServer};

fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, words: &[&str]) -> T {
    redis::cmd(words[0])
        .arg(&words[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

#[test]
fn databases_are_separate_keyspaces() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<()>(&mut c, &["SET", a, "zero"]);
    cmd::<()>(&mut c, &["SELECT", "9"]);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", a]), None);
    // Single-shard, cross-shard (an implicit transaction) and typed writes in database 9.
    cmd::<()>(&mut c, &["MSET", a, "nine", b, "nine-b"]);
    cmd::<i64>(&mut c, &["HSET", "h", "f", "v"]);
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 3);
    let mut keys: Vec<String> = cmd(&mut c, &["KEYS", "*"]);
    keys.sort();
    let mut want = vec![a.to_string(), b.to_string(), "h".to_string()];
    want.sort();
    assert_eq!(keys, want);
    cmd::<()>(&mut c, &["SELECT", "0"]);
    assert_eq!(cmd::<String>(&mut c, &["GET", a]), "zero");
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 1);
    assert_eq!(
        expect_err(&mut c, &["SELECT", "16"]),
        "ERR DB index is out of range"
    );
    assert!(expect_err(&mut c, &["MOON.DB", "3"]).starts_with("ERR unknown command"));
    let info: String = cmd(&mut c, &["INFO", "keyspace"]);
    assert!(info.contains("db0:keys=1,"), "{info}");
    assert!(info.contains("db9:keys=3,"), "{info}");
    let list: String = cmd(&mut c, &["CLIENT", "INFO"]);
    assert!(list.contains(" db=0 "), "{list}");

    // FLUSHDB empties one database, FLUSHALL all.
    cmd::<()>(&mut c, &["SELECT", "9"]);
    cmd::<()>(&mut c, &["FLUSHDB"]);
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 0);
    cmd::<()>(&mut c, &["SELECT", "0"]);
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 1);
    cmd::<()>(&mut c, &["SELECT", "3"]);
    cmd::<()>(&mut c, &["SET", "x", "1"]);
    cmd::<()>(&mut c, &["FLUSHALL"]);
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 0);
    cmd::<()>(&mut c, &["SELECT", "0"]);
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 0);
}

#[test]
fn move_swapdb_copy_db_and_transactions_follow_the_database() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<()>(&mut c, &["SET", a, "v"]);
    assert_eq!(cmd::<i64>(&mut c, &["MOVE", a, "2"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", a]), 0);
    cmd::<()>(&mut c, &["SET", a, "again"]);
    assert_eq!(cmd::<i64>(&mut c, &["MOVE", a, "2"]), 0, "already there");
    assert_eq!(
        expect_err(&mut c, &["MOVE", a, "0"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        cmd::<i64>(&mut c, &["COPY", a, b, "DB", "5"]),
        1,
        "across shards"
    );
    cmd::<()>(&mut c, &["SELECT", "5"]);
    assert_eq!(cmd::<String>(&mut c, &["GET", b]), "again");
    cmd::<()>(&mut c, &["SELECT", "2"]);
    assert_eq!(cmd::<String>(&mut c, &["GET", a]), "v");
    // SWAPDB on every shard at once.
    cmd::<()>(&mut c, &["SWAPDB", "2", "5"]);
    assert_eq!(cmd::<String>(&mut c, &["GET", b]), "again");
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", a]), None);
    assert_eq!(
        expect_err(&mut c, &["SWAPDB", "0", "99"]),
        "ERR DB index is out of range"
    );
    // SELECT inside MULTI applies to the commands after it, and stays after EXEC.
    cmd::<()>(&mut c, &["SELECT", "0"]);
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<String>(&mut c, &["SET", a, "in0"]);
    cmd::<String>(&mut c, &["SELECT", "7"]);
    cmd::<String>(&mut c, &["MSET", a, "in7", b, "in7"]);
    let replies: Vec<redis::Value> = cmd(&mut c, &["EXEC"]);
    assert_eq!(replies.len(), 3);
    assert_eq!(cmd::<String>(&mut c, &["GET", b]), "in7");
    cmd::<()>(&mut c, &["SELECT", "0"]);
    assert_eq!(cmd::<String>(&mut c, &["GET", a]), "in0");
    // WATCH is per database: a write to the same key in another database does not abort.
    let mut other = s.client();
    cmd::<()>(&mut c, &["WATCH", a]);
    cmd::<()>(&mut other, &["SELECT", "7"]);
    cmd::<()>(&mut other, &["SET", a, "elsewhere"]);
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<String>(&mut c, &["SET", a, "watched"]);
    let done: Option<Vec<redis::Value>> = cmd(&mut c, &["EXEC"]);
    assert!(done.is_some(), "database 7's key is another key");
    cmd::<()>(&mut c, &["WATCH", a]);
    cmd::<()>(&mut other, &["SELECT", "0"]);
    cmd::<()>(&mut other, &["SET", a, "changed"]);
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<String>(&mut c, &["SET", a, "watched"]);
    let aborted: Option<Vec<redis::Value>> = cmd(&mut c, &["EXEC"]);
    assert!(aborted.is_none(), "the watched key changed");
}

fn snapshot(c: &mut redis::Connection) -> Vec<String> {
    let mut out = Vec::new();
    for db in 0..16 {
        cmd::<()>(c, &["SELECT", &db.to_string()]);
        let mut keys: Vec<String> = cmd(c, &["KEYS", "*"]);
        keys.sort();
        for k in keys {
            let ty: String = cmd(c, &["TYPE", &k]);
            let ttl: i64 = cmd(c, &["PEXPIRETIME", &k]);
            let body = match ty.as_str() {
                "string" => cmd::<String>(c, &["GET", &k]),
                "hash" => format!(
                    "{:?}",
                    cmd::<std::collections::BTreeMap<String, String>>(c, &["HGETALL", &k])
                ),
                _ => format!(
                    "{:?}",
                    cmd::<std::collections::BTreeSet<String>>(c, &["SMEMBERS", &k])
                ),
            };
            out.push(format!("{db} {k} {ty} {ttl} {body}"));
        }
    }
    cmd::<()>(c, &["SELECT", "0"]);
    out
}

#[test]
fn every_database_survives_sigkill_and_bgrewriteaof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    for db in [0, 1, 15] {
        cmd::<()>(&mut c, &["SELECT", &db.to_string()]);
        cmd::<()>(
            &mut c,
            &["MSET", &k[0], &format!("a{db}"), &k[1], &format!("b{db}")],
        );
        cmd::<i64>(&mut c, &["HSET", "h", "f", &db.to_string()]);
        cmd::<i64>(&mut c, &["SADD", "s", "x", &db.to_string()]);
        cmd::<()>(&mut c, &["SET", "ttl", "t", "EX", "3600"]);
        cmd::<i64>(&mut c, &["INCR", "n"]);
    }
    cmd::<()>(&mut c, &["SELECT", "1"]);
    cmd::<i64>(&mut c, &["MOVE", "n", "4"]);
    cmd::<()>(&mut c, &["SWAPDB", "15", "6"]);
    // With the selected database (1) itself: its clients see database 0's keys now.
    cmd::<()>(&mut c, &["SWAPDB", "0", "1"]);
    assert_eq!(
        cmd::<i64>(&mut c, &["HGET", "h", "f"]),
        0,
        "database 0's hash"
    );
    let before = snapshot(&mut c);
    assert!(before.iter().any(|l| l.starts_with("6 ")), "{before:?}");
    assert!(
        before.iter().any(|l| l.starts_with("0 h hash")),
        "{before:?}"
    );
    s.kill();
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    assert_eq!(snapshot(&mut c), before, "after SIGKILL");
    common::rewrite_and_wait(&mut c, 1);
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart after rewrite");
    let mut c = s.client();
    assert_eq!(snapshot(&mut c), before, "from the rewritten base");
}

/// SELECT is answered in its place in a pipeline (it does not wait for the writes planned
/// before it): every command still runs in the database selected when it was sent.
#[test]
fn select_inside_a_pipeline_applies_from_where_it_stands() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    let (ok1, ok2, in_one, ok3, ok4, in_zero, b_in_one): (
        String,
        String,
        Option<String>,
        String,
        String,
        Option<String>,
        Option<String>,
    ) = redis::pipe()
        .cmd("SET")
        .arg(a)
        .arg("zero")
        .cmd("SELECT")
        .arg(1)
        .cmd("GET")
        .arg(a)
        .cmd("SET")
        .arg(b)
        .arg("one")
        .cmd("SELECT")
        .arg(0)
        .cmd("GET")
        .arg(a)
        .cmd("GET")
        .arg(b)
        .query(&mut c)
        .expect("the pipeline runs");
    assert_eq!(
        (ok1.as_str(), ok2.as_str(), ok3.as_str(), ok4.as_str()),
        ("OK", "OK", "OK", "OK")
    );
    assert_eq!(in_one, None, "database 1 does not hold database 0's key");
    assert_eq!(in_zero.as_deref(), Some("zero"));
    assert_eq!(b_in_one, None, "b was written in database 1");
    cmd::<()>(&mut c, &["SELECT", "1"]);
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["GET", b]).as_deref(),
        Some("one")
    );
    let list: String = cmd(&mut c, &["CLIENT", "INFO"]);
    assert!(list.contains(" db=1 "), "{list}");
}
