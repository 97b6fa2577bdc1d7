//! Hashes and sets against the real binary with a real client: Redis's replies (errors
//! included), the compact encodings and their thresholds, the multi-key set commands across
//! shards, and persistence of every type through SIGKILL and BGREWRITEAOF.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{expect_err, keys_on_different_shards, MoonServer};

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, words: &[&str]) -> T {
    redis::cmd(words[0])
        .arg(&words[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

fn encoding(con: &mut redis::Connection, key: &str) -> String {
    cmd(con, &["OBJECT", "ENCODING", key])
}

#[test]
fn hash_commands_answer_as_redis() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    assert_eq!(cmd::<i64>(&mut c, &["HSET", "h", "a", "1", "b", "2"]), 2);
    assert_eq!(cmd::<i64>(&mut c, &["HSET", "h", "a", "10", "c", "3"]), 1);
    assert_eq!(cmd::<String>(&mut c, &["HMSET", "h", "d", "4"]), "OK");
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["HGET", "h", "a"]).as_deref(),
        Some("10")
    );
    assert_eq!(cmd::<Option<String>>(&mut c, &["HGET", "h", "zz"]), None);
    assert_eq!(
        cmd::<Vec<Option<String>>>(&mut c, &["HMGET", "h", "a", "nope", "b"]),
        [Some("10".into()), None, Some("2".into())]
    );
    let all: BTreeMap<String, String> = cmd(&mut c, &["HGETALL", "h"]);
    assert_eq!(all.len(), 4);
    assert_eq!(cmd::<i64>(&mut c, &["HLEN", "h"]), 4);
    assert_eq!(cmd::<i64>(&mut c, &["HSTRLEN", "h", "a"]), 2);
    assert_eq!(cmd::<i64>(&mut c, &["HEXISTS", "h", "c"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["HSETNX", "h", "c", "x"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["HSETNX", "h", "e", "5"]), 1);
    let keys: BTreeSet<String> = cmd(&mut c, &["HKEYS", "h"]);
    assert_eq!(
        keys,
        ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(cmd::<i64>(&mut c, &["HINCRBY", "h", "a", "-15"]), -5);
    assert_eq!(
        cmd::<String>(&mut c, &["HINCRBYFLOAT", "h", "b", "0.5"]),
        "2.5"
    );
    assert_eq!(
        expect_err(&mut c, &["HINCRBY", "h", "b", "1"]),
        "ERR hash value is not an integer"
    );
    cmd::<i64>(&mut c, &["HSET", "h", "big", "9223372036854775807"]);
    assert_eq!(
        expect_err(&mut c, &["HINCRBY", "h", "big", "1"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        expect_err(&mut c, &["HSET", "h", "odd"]),
        "ERR wrong number of arguments for 'hset' command"
    );
    assert_eq!(
        expect_err(&mut c, &["HSET", "h", "a", "1", "b"]),
        "ERR wrong number of arguments for 'hset' command"
    );
    // HRANDFIELD: distinct fields for a positive count, repeats for a negative one.
    let distinct: Vec<String> = cmd(&mut c, &["HRANDFIELD", "h", "100"]);
    assert_eq!(distinct.len(), 6);
    let repeated: Vec<String> = cmd(&mut c, &["HRANDFIELD", "h", "-20"]);
    assert_eq!(repeated.len(), 20);
    let pairs: Vec<String> = cmd(&mut c, &["HRANDFIELD", "h", "2", "WITHVALUES"]);
    assert_eq!(pairs.len(), 4);
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["HRANDFIELD", "nosuch"]),
        None
    );
    // The last field gone: the key is gone.
    assert_eq!(
        cmd::<i64>(&mut c, &["HDEL", "h", "a", "b", "c", "d", "e", "big", "zz"]),
        6
    );
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "h"]), 0);
    // Types do not mix.
    cmd::<()>(&mut c, &["SET", "str", "v"]);
    assert_eq!(expect_err(&mut c, &["HSET", "str", "f", "v"]), WRONGTYPE);
    cmd::<i64>(&mut c, &["HSET", "h2", "f", "v"]);
    assert_eq!(expect_err(&mut c, &["GET", "h2"]), WRONGTYPE);
    assert_eq!(expect_err(&mut c, &["APPEND", "h2", "x"]), WRONGTYPE);
    assert_eq!(expect_err(&mut c, &["SADD", "h2", "x"]), WRONGTYPE);
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "h2"]), "hash");
    // SET overwrites any type, as in Redis.
    cmd::<()>(&mut c, &["SET", "h2", "now a string"]);
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "h2"]), "string");
}

#[test]
fn compact_encodings_convert_past_their_thresholds() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    cmd::<i64>(&mut c, &["HSET", "h", "f", "v"]);
    assert_eq!(encoding(&mut c, "h"), "listpack");
    cmd::<i64>(&mut c, &["HSET", "h", "long", &"x".repeat(65)]);
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    cmd::<()>(&mut c, &["CONFIG", "SET", "hash-max-listpack-entries", "3"]);
    for f in ["a", "b", "c"] {
        cmd::<i64>(&mut c, &["HSET", "h3", f, "1"]);
    }
    assert_eq!(encoding(&mut c, "h3"), "listpack");
    cmd::<i64>(&mut c, &["HSET", "h3", "d", "1"]);
    assert_eq!(encoding(&mut c, "h3"), "hashtable");
    let old: BTreeMap<String, String> = cmd(&mut c, &["CONFIG", "GET", "hash-max-ziplist-entries"]);
    assert_eq!(
        old.get("hash-max-ziplist-entries").map(String::as_str),
        Some("3")
    );

    cmd::<i64>(&mut c, &["SADD", "s", "1", "2", "3"]);
    assert_eq!(encoding(&mut c, "s"), "intset");
    cmd::<i64>(&mut c, &["SADD", "s", "x"]);
    assert_eq!(encoding(&mut c, "s"), "listpack");
    cmd::<()>(&mut c, &["CONFIG", "SET", "set-max-listpack-entries", "4"]);
    cmd::<i64>(&mut c, &["SADD", "s", "y"]);
    assert_eq!(encoding(&mut c, "s"), "hashtable");
    cmd::<()>(&mut c, &["CONFIG", "SET", "set-max-intset-entries", "2"]);
    cmd::<i64>(&mut c, &["SADD", "ints", "1", "2", "3"]);
    assert_ne!(encoding(&mut c, "ints"), "intset");
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["OBJECT", "ENCODING", "nosuch"]),
        None
    );
}

#[test]
fn set_commands_answer_as_redis_and_multi_key_ones_work_across_shards() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    assert_eq!(cmd::<i64>(&mut c, &["SADD", a, "1", "2", "3", "x"]), 4);
    assert_eq!(cmd::<i64>(&mut c, &["SADD", a, "1"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["SADD", b, "2", "3", "y"]), 3);
    assert_eq!(cmd::<i64>(&mut c, &["SCARD", a]), 4);
    assert_eq!(cmd::<i64>(&mut c, &["SISMEMBER", a, "x"]), 1);
    assert_eq!(
        cmd::<Vec<i64>>(&mut c, &["SMISMEMBER", a, "x", "nope"]),
        [1, 0]
    );
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        cmd::<BTreeSet<String>>(&mut c, &["SINTER", a, b]),
        set(&["2", "3"])
    );
    assert_eq!(
        cmd::<BTreeSet<String>>(&mut c, &["SUNION", a, b]),
        set(&["1", "2", "3", "x", "y"])
    );
    assert_eq!(
        cmd::<BTreeSet<String>>(&mut c, &["SDIFF", a, b]),
        set(&["1", "x"])
    );
    assert_eq!(
        cmd::<BTreeSet<String>>(&mut c, &["SINTER", a, "nosuch"]),
        set(&[])
    );
    assert_eq!(cmd::<i64>(&mut c, &["SINTERCARD", "2", a, b]), 2);
    assert_eq!(
        cmd::<i64>(&mut c, &["SINTERCARD", "2", a, b, "LIMIT", "1"]),
        1
    );
    assert_eq!(
        expect_err(&mut c, &["SINTERCARD", "0", a]),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(
        expect_err(&mut c, &["SINTERCARD", "3", a, b]),
        "ERR Number of keys can't be greater than number of args"
    );
    // *STORE across shards: the destination on a third key's shard, replaced whole.
    assert_eq!(cmd::<i64>(&mut c, &["SUNIONSTORE", "dst", a, b]), 5);
    assert_eq!(cmd::<i64>(&mut c, &["SINTERSTORE", "dst", a, b]), 2);
    assert_eq!(
        cmd::<BTreeSet<String>>(&mut c, &["SMEMBERS", "dst"]),
        set(&["2", "3"])
    );
    assert_eq!(cmd::<i64>(&mut c, &["SINTERSTORE", "dst", a, "nosuch"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "dst"]), 0);
    // SMOVE across shards.
    assert_eq!(cmd::<i64>(&mut c, &["SMOVE", a, b, "x"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["SMOVE", a, b, "x"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["SISMEMBER", b, "x"]), 1);
    cmd::<()>(&mut c, &["SET", "str", "v"]);
    assert_eq!(expect_err(&mut c, &["SMOVE", a, "str", "1"]), WRONGTYPE);
    assert_eq!(expect_err(&mut c, &["SINTER", a, "str"]), WRONGTYPE);
    assert_eq!(
        cmd::<i64>(&mut c, &["SMOVE", "nosuch", "str", "1"]),
        0,
        "no source: 0 first"
    );
    // SPOP and SRANDMEMBER.
    let popped: Vec<String> = cmd(&mut c, &["SPOP", b, "2"]);
    assert_eq!(popped.len(), 2);
    assert_eq!(cmd::<i64>(&mut c, &["SCARD", b]), 2);
    assert_eq!(
        expect_err(&mut c, &["SPOP", b, "-1"]),
        "ERR value is out of range, must be positive"
    );
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["SRANDMEMBER", b, "-5"]).len(),
        5
    );
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["SRANDMEMBER", b, "5"]).len(),
        2
    );
    let last: Vec<String> = cmd(&mut c, &["SPOP", b, "10"]);
    assert_eq!(last.len(), 2);
    assert_eq!(
        cmd::<i64>(&mut c, &["EXISTS", b]),
        0,
        "an empty set is gone"
    );
}

#[test]
fn sscan_and_hscan_return_every_member_of_big_values() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    for i in 0..1000 {
        cmd::<i64>(&mut c, &["SADD", "big", &format!("m{i}")]);
        cmd::<i64>(&mut c, &["HSET", "bigh", &format!("f{i}"), &i.to_string()]);
    }
    assert_eq!(encoding(&mut c, "big"), "hashtable");
    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, items): (String, Vec<String>) =
            cmd(&mut c, &["SSCAN", "big", &cursor, "COUNT", "50"]);
        seen.extend(items);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 1000);
    let mut fields = BTreeMap::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, items): (String, Vec<String>) =
            cmd(&mut c, &["HSCAN", "bigh", &cursor, "MATCH", "f1*"]);
        for p in items.chunks(2) {
            fields.insert(p[0].clone(), p[1].clone());
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(fields.len(), 111, "f1, f10-f19, f100-f199");
    assert_eq!(fields["f150"], "150");
    let (_, names): (String, Vec<String>) =
        cmd(&mut c, &["HSCAN", "bigh", "0", "COUNT", "5000", "NOVALUES"]);
    assert_eq!(names.len(), 1000);
}

fn snapshot(c: &mut redis::Connection, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let ty: String = cmd(c, &["TYPE", k]);
            let ttl: i64 = cmd(c, &["PEXPIRETIME", k]);
            let body = match ty.as_str() {
                "hash" => format!("{:?}", cmd::<BTreeMap<String, String>>(c, &["HGETALL", k])),
                "set" => format!("{:?}", cmd::<BTreeSet<String>>(c, &["SMEMBERS", k])),
                "string" => cmd::<String>(c, &["GET", k]),
                _ => String::new(),
            };
            format!("{k} {ty} {ttl} {body}")
        })
        .collect()
}

#[test]
fn hashes_and_sets_survive_sigkill_bgrewriteaof_and_renames_across_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    for i in 0..700 {
        cmd::<i64>(
            &mut c,
            &["HSET", "bigh", &format!("f{i}"), &format!("v{i}")],
        );
        cmd::<i64>(&mut c, &["SADD", "bigs", &format!("m{i}")]);
    }
    cmd::<i64>(&mut c, &["HSET", a, "f", "1", "g", "2"]);
    cmd::<i64>(&mut c, &["PEXPIRE", a, "3600000"]);
    cmd::<i64>(&mut c, &["SADD", "ints", "5", "-3", "12"]);
    cmd::<i64>(&mut c, &["SADD", "tmp", "1"]);
    cmd::<Vec<String>>(&mut c, &["SPOP", "bigs", "3"]);
    assert_eq!(cmd::<i64>(&mut c, &["HINCRBY", "bigh", "counter", "7"]), 7);
    // A hash with a TTL moves to another shard: its rewrite form, TTL included.
    cmd::<()>(&mut c, &["RENAME", a, b]);
    let keys = ["bigh", "bigs", a, b, "ints", "tmp"];
    let before = snapshot(&mut c, &keys);
    assert!(before[3].contains("hash"), "{before:?}");
    assert!(
        !before[3].contains(" -1 "),
        "the TTL moved along: {before:?}"
    );

    s.kill();
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    assert_eq!(snapshot(&mut c, &keys), before, "after SIGKILL");

    common::rewrite_and_wait(&mut c, 1);
    assert_eq!(snapshot(&mut c, &keys), before, "after the rewrite");
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart after rewrite");
    let mut c = s.client();
    assert_eq!(
        snapshot(&mut c, &keys),
        before,
        "replayed from the rewritten base"
    );
}

/// Review findings, each a test: a client-chosen count never sizes an allocation; SINTER
/// checks every key's type before it gives up on a missing one (one shard and across
/// shards); a cross-shard *STORE whose result cannot fit in one record is refused before it
/// changes anything; configured encodings hold for values rebuilt at startup.
#[test]
fn hostile_counts_wrongtype_order_record_bounds_and_encodings_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--hash-max-listpack-entries", "4"];
    let env = [("MOON_MAX_RECORD_BYTES", "4096")];
    let mut s = MoonServer::start_with_env(dir.path(), 2, &args, &env).expect("start");
    let mut c = s.client();
    cmd::<i64>(&mut c, &["HSET", "h", "f", "v"]);
    cmd::<i64>(&mut c, &["SADD", "s", "m"]);
    for words in [
        ["HRANDFIELD", "h", "-4611686018427387903"],
        ["SRANDMEMBER", "s", "-1000000000000"],
    ] {
        assert_eq!(
            expect_err(&mut c, &words),
            "ERR value is out of range",
            "{words:?}"
        );
    }
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["SRANDMEMBER", "s", "-3"]),
        ["m", "m", "m"]
    );
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");

    cmd::<()>(&mut c, &["SET", "str", "x"]);
    let k = keys_on_different_shards(2);
    let other = k
        .iter()
        .find(|key| common::slot_shard(key.as_bytes(), 2) != common::slot_shard(b"str", 2))
        .expect("a key on the other shard")
        .clone();
    for (missing, dst) in [("nosuch", "dst"), (other.as_str(), "dst")] {
        cmd::<i64>(&mut c, &["SADD", dst, "keep"]);
        assert_eq!(expect_err(&mut c, &["SINTER", missing, "str"]), WRONGTYPE);
        assert_eq!(
            expect_err(&mut c, &["SINTERCARD", "2", missing, "str"]),
            WRONGTYPE
        );
        assert_eq!(
            expect_err(&mut c, &["SINTERSTORE", dst, missing, "str"]),
            WRONGTYPE
        );
        assert_eq!(
            cmd::<i64>(&mut c, &["SCARD", dst]),
            1,
            "the destination is kept"
        );
    }

    // Two 3 KB sets on different shards: their union does not fit in a 4 KB record.
    let (a, b) = (k[0].as_str(), k[1].as_str());
    for (key, tag) in [(a, "a"), (b, "b")] {
        for i in 0..3 {
            cmd::<i64>(
                &mut c,
                &["SADD", key, &format!("{tag}{i}-{}", "x".repeat(1000))],
            );
        }
    }
    let e = expect_err(&mut c, &["SUNIONSTORE", "union", a, b]);
    assert!(e.starts_with("ERR request too large to log"), "{e}");
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "union"]), 0);

    for f in ["a", "b", "c", "d", "e"] {
        cmd::<i64>(&mut c, &["HSET", "wide", f, "1"]);
    }
    assert_eq!(encoding(&mut c, "wide"), "hashtable");
    s.kill();
    let s = MoonServer::start_with_env(dir.path(), 2, &args, &env).expect("restart");
    let mut c = s.client();
    assert_eq!(
        encoding(&mut c, "wide"),
        "hashtable",
        "replay used the configured thresholds"
    );
}

#[test]
fn copy_works_for_every_type_on_one_shard_and_across_shards() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<i64>(&mut c, &["HSET", a, "f", "1"]);
    assert_eq!(
        cmd::<Vec<i64>>(&mut c, &["HPEXPIRE", a, "100000", "FIELDS", "1", "f"]),
        [1]
    );
    cmd::<i64>(&mut c, &["PEXPIRE", a, "500000"]);
    // Across shards, then on one shard ({a} keys live with a).
    let same = format!("{{{a}}}:copy");
    for dst in [b, same.as_str()] {
        assert_eq!(cmd::<i64>(&mut c, &["COPY", a, dst]), 1);
        assert_eq!(
            cmd::<i64>(&mut c, &["COPY", a, dst]),
            0,
            "exists, no REPLACE"
        );
        assert_eq!(cmd::<i64>(&mut c, &["COPY", a, dst, "REPLACE"]), 1);
        assert_eq!(cmd::<String>(&mut c, &["TYPE", dst]), "hash");
        let ttl: i64 = cmd(&mut c, &["PTTL", dst]);
        assert!(ttl > 400_000, "the key's TTL came along: {ttl}");
        let field_ttl: Vec<i64> = cmd(&mut c, &["HPTTL", dst, "FIELDS", "1", "f"]);
        assert!(
            field_ttl[0] > 90_000,
            "the field's TTL came along: {field_ttl:?}"
        );
    }
    assert_eq!(cmd::<i64>(&mut c, &["COPY", "nosuch", b]), 0);
    assert_eq!(
        expect_err(&mut c, &["COPY", a, a]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        expect_err(&mut c, &["COPY", a, b, "DB", "16"]),
        "ERR DB index is out of range"
    );
    let info: String = cmd(&mut c, &["INFO", "everything"]);
    for field in [
        "cluster_enabled:0",
        "used_cpu_user:",
        "arch_bits:64",
        "role:master",
    ] {
        assert!(info.contains(field), "INFO lacks {field}");
    }
}
