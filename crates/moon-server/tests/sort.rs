//! SORT and SORT_RO against the real binary with a real client: Redis's options and replies,
//! BY/GET patterns on the sorted key's shard (refused across shards, as Redis Cluster does),
//! STORE on the same or another shard, and the stored list through SIGKILL.

mod common;

use common::{cmd, expect_err, keys_on_different_shards, MoonServer};

#[test]
fn sort_answers_as_redis() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    cmd::<i64>(&mut c, &["RPUSH", "{l}", "3", "1", "2", "10"]);
    let r: Vec<String> = cmd(&mut c, &["SORT", "{l}"]);
    assert_eq!(r, ["1", "2", "3", "10"]);
    let r: Vec<String> = cmd(&mut c, &["SORT", "{l}", "DESC", "LIMIT", "1", "2"]);
    assert_eq!(r, ["3", "2"]);
    let r: Vec<String> = cmd(&mut c, &["SORT", "{l}", "ALPHA"]);
    assert_eq!(r, ["1", "10", "2", "3"]);
    let r: Vec<String> = cmd(&mut c, &["SORT_RO", "{l}", "BY", "nosort", "DESC"]);
    assert_eq!(r, ["10", "2", "1", "3"]);
    // BY and GET through a hash tag on the sorted key's shard; a missing weight counts 0.
    cmd::<()>(
        &mut c,
        &["MSET", "{l}w_1", "30", "{l}w_2", "20", "{l}w_3", "10"],
    );
    cmd::<i64>(&mut c, &["HSET", "{l}h_1", "name", "one"]);
    let r: Vec<Option<String>> = cmd(
        &mut c,
        &[
            "SORT",
            "{l}",
            "BY",
            "{l}w_*",
            "GET",
            "#",
            "GET",
            "{l}h_*->name",
        ],
    );
    let want = [
        Some("10"),
        None,
        Some("3"),
        None,
        Some("2"),
        None,
        Some("1"),
        Some("one"),
    ];
    assert_eq!(r, want.map(|w| w.map(String::from)));
    // Patterns that may name keys on another shard are refused, as Redis Cluster does.
    assert!(expect_err(&mut c, &["SORT", "{l}", "BY", "w_*"])
        .starts_with("ERR BY option of SORT denied"));
    assert!(expect_err(&mut c, &["SORT", "{l}", "GET", "{*}x"])
        .starts_with("ERR GET option of SORT denied"));
    // A constant BY (no sort) and GET # are always fine.
    let r: Vec<String> = cmd(&mut c, &["SORT", "{l}", "BY", "nosort", "GET", "#"]);
    assert_eq!(r, ["3", "1", "2", "10"]);
    // Errors.
    cmd::<i64>(&mut c, &["RPUSH", "words", "a", "b"]);
    assert_eq!(
        expect_err(&mut c, &["SORT", "words"]),
        "ERR One or more scores can't be converted into double"
    );
    assert_eq!(
        expect_err(&mut c, &["SORT", "{l}", "LIMIT", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        expect_err(&mut c, &["SORT_RO", "{l}", "STORE", "x"]),
        "ERR syntax error"
    );
    cmd::<()>(&mut c, &["SET", "str", "v"]);
    assert_eq!(
        expect_err(&mut c, &["SORT", "str"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert!(cmd::<Vec<String>>(&mut c, &["SORT", "nope"]).is_empty());
    // Sets and sorted sets.
    cmd::<i64>(&mut c, &["SADD", "{s}", "b", "c", "a"]);
    let r: Vec<String> = cmd(&mut c, &["SORT", "{s}", "ALPHA", "DESC"]);
    assert_eq!(r, ["c", "b", "a"]);
    assert_eq!(
        cmd::<i64>(&mut c, &["SORT", "{s}", "BY", "nosort", "STORE", "{s}out"]),
        3
    );
    let r: Vec<String> = cmd(&mut c, &["LRANGE", "{s}out", "0", "-1"]);
    assert_eq!(
        r,
        ["a", "b", "c"],
        "a set stored without a sort is sorted (Redis)"
    );
    cmd::<i64>(&mut c, &["ZADD", "{z}", "3", "x", "1", "y", "2", "z"]);
    let r: Vec<String> = cmd(&mut c, &["SORT", "{z}", "BY", "nosort"]);
    assert_eq!(r, ["y", "z", "x"], "a sorted set keeps its order");
}

#[test]
fn sort_store_on_the_same_or_another_shard_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (src, other) = (k[0].as_str(), k[1].as_str());
    let beside = format!("{{{src}}}dst");
    cmd::<i64>(&mut c, &["RPUSH", src, "5", "4", "6"]);
    cmd::<i64>(&mut c, &["RPUSH", other, "old"]);
    assert_eq!(cmd::<i64>(&mut c, &["SORT", src, "STORE", &beside]), 3);
    assert_eq!(
        cmd::<i64>(&mut c, &["SORT", src, "DESC", "STORE", other]),
        3
    );
    let r: Vec<String> = cmd(&mut c, &["LRANGE", other, "0", "-1"]);
    assert_eq!(r, ["6", "5", "4"]);
    // An empty result deletes the destination.
    cmd::<i64>(&mut c, &["RPUSH", "gone", "x"]);
    assert_eq!(cmd::<i64>(&mut c, &["SORT", "nope", "STORE", "gone"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "gone"]), 0);
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    let r: Vec<String> = cmd(&mut c, &["LRANGE", &beside, "0", "-1"]);
    assert_eq!(r, ["4", "5", "6"]);
    let r: Vec<String> = cmd(&mut c, &["LRANGE", other, "0", "-1"]);
    assert_eq!(r, ["6", "5", "4"]);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "gone"]), 0);
}

/// Redis's "FLUSHALL does not touch non affected keys": a watched key that did not exist is
/// not changed by a flush; one that existed is.
#[test]
fn flushes_touch_only_watched_keys_they_change() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    cmd::<()>(&mut c, &["WATCH", "x"]);
    cmd::<()>(&mut c, &["FLUSHALL"]);
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<()>(&mut c, &["PING"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["EXEC"]), ["PONG"]);
    cmd::<()>(&mut c, &["SET", "x", "1"]);
    cmd::<()>(&mut c, &["WATCH", "x"]);
    cmd::<()>(&mut c, &["FLUSHDB"]);
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<()>(&mut c, &["PING"]);
    assert_eq!(cmd::<redis::Value>(&mut c, &["EXEC"]), redis::Value::Nil);
}

/// A command whose keys span shards (an implicit transaction) between WATCH and EXEC keeps
/// the client's watches: a change of the watched key still aborts the EXEC.
#[test]
fn a_cross_shard_command_keeps_the_clients_watches() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let mut other = s.client();
    let k = keys_on_different_shards(2);
    cmd::<()>(&mut c, &["SET", "x", "1"]);
    cmd::<()>(&mut c, &["WATCH", "x"]);
    cmd::<()>(&mut c, &["MSET", &k[0], "1", &k[1], "2"]);
    cmd::<()>(&mut other, &["SET", "x", "2"]);
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<()>(&mut c, &["PING"]);
    assert_eq!(cmd::<redis::Value>(&mut c, &["EXEC"]), redis::Value::Nil);
}
