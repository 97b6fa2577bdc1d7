//! Sorted sets against the real binary with a real client: Redis's replies (errors and score
//! texts included), both encodings, the set algebra and stores on one shard and across
//! shards, and persistence through SIGKILL and BGREWRITEAOF.

mod common;

use common::{cmd, expect_err, keys_on_different_shards, rewrite_and_wait, slot_shard, MoonServer};

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Every member and its score's text, in order.
fn all(con: &mut redis::Connection, key: &str) -> Vec<String> {
    cmd(con, &["ZRANGE", key, "0", "-1", "WITHSCORES"])
}

#[test]
fn zset_commands_answer_as_redis() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    assert_eq!(
        cmd::<i64>(&mut c, &["ZADD", "z", "1", "a", "2", "b", "1.1", "c"]),
        3
    );
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "z"]), "zset");
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "z"]),
        "listpack"
    );
    // Scores print as Redis prints doubles: 17 significant digits (%.17g).
    assert_eq!(
        all(&mut c, "z"),
        ["a", "1", "c", "1.1000000000000001", "b", "2"]
    );
    cmd::<i64>(
        &mut c,
        &[
            "ZADD",
            "f",
            "0.30000000000000004",
            "x",
            "1e20",
            "y",
            "-inf",
            "n",
            "+inf",
            "p",
        ],
    );
    assert_eq!(
        all(&mut c, "f"),
        [
            "n",
            "-inf",
            "x",
            "0.30000000000000004",
            "y",
            "1e+20",
            "p",
            "inf"
        ]
    );
    // Review finding: a whole number prints as one (timestamps as scores).
    cmd::<i64>(&mut c, &["ZADD", "t", "1700000000123", "e"]);
    assert_eq!(
        cmd::<String>(&mut c, &["ZSCORE", "t", "e"]),
        "1700000000123"
    );
    assert_eq!(
        expect_err(&mut c, &["ZADD", "t", "1e400", "e"]),
        "ERR value is not a valid float"
    );
    // Flags: NX XX GT LT CH INCR.
    assert_eq!(
        cmd::<i64>(&mut c, &["ZADD", "z", "NX", "5", "a", "3", "d"]),
        1
    );
    assert_eq!(cmd::<String>(&mut c, &["ZSCORE", "z", "a"]), "1");
    assert_eq!(
        cmd::<i64>(&mut c, &["ZADD", "z", "XX", "CH", "5", "a", "9", "nope"]),
        1
    );
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["ZSCORE", "z", "nope"]),
        None
    );
    assert_eq!(
        cmd::<i64>(&mut c, &["ZADD", "z", "GT", "CH", "4", "a", "3", "b"]),
        1
    );
    assert_eq!(cmd::<String>(&mut c, &["ZSCORE", "z", "a"]), "5");
    assert_eq!(cmd::<String>(&mut c, &["ZSCORE", "z", "b"]), "3");
    assert_eq!(
        cmd::<i64>(&mut c, &["ZADD", "z", "LT", "CH", "4", "a", "4", "b"]),
        1
    );
    assert_eq!(
        cmd::<String>(&mut c, &["ZADD", "z", "INCR", "2.5", "a"]),
        "6.5"
    );
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["ZADD", "z", "NX", "INCR", "1", "a"]),
        None
    );
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["ZADD", "z", "GT", "INCR", "-1", "a"]),
        None
    );
    assert_eq!(cmd::<String>(&mut c, &["ZINCRBY", "z", "-0.5", "a"]), "6");
    assert_eq!(cmd::<String>(&mut c, &["ZINCRBY", "fresh", "2", "m"]), "2");
    for (words, error) in [
        (
            &["ZADD", "z", "NX", "XX", "1", "a"][..],
            "ERR XX and NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "GT", "LT", "1", "a"],
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ),
        (
            &["ZADD", "z", "INCR", "1", "a", "2", "b"],
            "ERR INCR option supports a single increment-element pair",
        ),
        (&["ZADD", "z", "1", "a", "2"], "ERR syntax error"),
        (
            &["ZADD", "z", "1", "a", "x", "b"],
            "ERR value is not a valid float",
        ),
        (&["ZADD", "z", "nan", "a"], "ERR value is not a valid float"),
        (
            &["ZINCRBY", "f", "-inf", "p"],
            "ERR resulting score is not a number (NaN)",
        ),
        (
            &["ZRANGEBYSCORE", "z", "x", "1"],
            "ERR min or max is not a float",
        ),
        (
            &["ZRANGEBYLEX", "z", "a", "[b"],
            "ERR min or max not valid string range item",
        ),
        (
            &["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"],
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ),
        (
            &["ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES"],
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ),
        (
            &["ZPOPMIN", "z", "-1"],
            "ERR value is out of range, must be positive",
        ),
        (&["ZRANK", "z", "a", "nope"], "ERR syntax error"),
    ] {
        assert_eq!(expect_err(&mut c, words), error, "{words:?}");
    }
    // The failed ZADDs changed nothing (all scores are parsed first).
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["ZSCORE", "z", "b"]).as_deref(),
        Some("3")
    );
    cmd::<()>(&mut c, &["SET", "str", "x"]);
    assert_eq!(expect_err(&mut c, &["ZADD", "str", "1", "a"]), WRONGTYPE);
    assert_eq!(expect_err(&mut c, &["ZRANGE", "str", "0", "1"]), WRONGTYPE);

    // z: c 1.1, b 3, d 3, a 6
    assert_eq!(
        all(&mut c, "z"),
        ["c", "1.1000000000000001", "b", "3", "d", "3", "a", "6"]
    );
    assert_eq!(cmd::<i64>(&mut c, &["ZCARD", "z"]), 4);
    assert_eq!(cmd::<i64>(&mut c, &["ZCOUNT", "z", "(1.1", "3"]), 2);
    assert_eq!(cmd::<i64>(&mut c, &["ZCOUNT", "z", "-inf", "+inf"]), 4);
    assert_eq!(cmd::<i64>(&mut c, &["ZRANK", "z", "d"]), 2);
    assert_eq!(cmd::<i64>(&mut c, &["ZREVRANK", "z", "d"]), 1);
    assert_eq!(
        cmd::<(i64, String)>(&mut c, &["ZRANK", "z", "a", "WITHSCORE"]),
        (3, "6".into())
    );
    assert_eq!(cmd::<Option<i64>>(&mut c, &["ZRANK", "z", "nope"]), None);
    assert_eq!(
        cmd::<redis::Value>(&mut c, &["ZREVRANK", "z", "nope", "WITHSCORE"]),
        redis::Value::Nil
    );
    let m: Vec<Option<String>> = cmd(&mut c, &["ZMSCORE", "z", "a", "nope", "c"]);
    assert_eq!(
        m,
        [Some("6".into()), None, Some("1.1000000000000001".into())]
    );
    // Ranges by rank, score and lex, both ways, with LIMIT.
    let r: Vec<String> = cmd(&mut c, &["ZREVRANGE", "z", "0", "1"]);
    assert_eq!(r, ["a", "d"]);
    let r: Vec<String> = cmd(&mut c, &["ZRANGE", "z", "-2", "100"]);
    assert_eq!(r, ["d", "a"]);
    let r: Vec<String> = cmd(
        &mut c,
        &["ZRANGEBYSCORE", "z", "(1.1", "+inf", "LIMIT", "1", "5"],
    );
    assert_eq!(r, ["d", "a"]);
    let r: Vec<String> = cmd(
        &mut c,
        &["ZREVRANGEBYSCORE", "z", "3", "-inf", "WITHSCORES"],
    );
    assert_eq!(r, ["d", "3", "b", "3", "c", "1.1000000000000001"]);
    let r: Vec<String> = cmd(
        &mut c,
        &["ZRANGE", "z", "6", "3", "BYSCORE", "REV", "LIMIT", "0", "2"],
    );
    assert_eq!(r, ["a", "d"]);
    let r: Vec<String> = cmd(
        &mut c,
        &["ZRANGE", "z", "1", "6", "BYSCORE", "LIMIT", "-1", "2"],
    );
    assert!(r.is_empty(), "a negative offset selects nothing");
    cmd::<i64>(
        &mut c,
        &["ZADD", "lex", "0", "a", "0", "b", "0", "c", "0", "d"],
    );
    let r: Vec<String> = cmd(&mut c, &["ZRANGEBYLEX", "lex", "(a", "[c"]);
    assert_eq!(r, ["b", "c"]);
    let r: Vec<String> = cmd(
        &mut c,
        &["ZREVRANGEBYLEX", "lex", "+", "-", "LIMIT", "1", "2"],
    );
    assert_eq!(r, ["c", "b"]);
    assert_eq!(cmd::<i64>(&mut c, &["ZLEXCOUNT", "lex", "-", "(c"]), 2);
    // Pops.
    let p: Vec<String> = cmd(&mut c, &["ZPOPMIN", "z"]);
    assert_eq!(p, ["c", "1.1000000000000001"]);
    let p: Vec<String> = cmd(&mut c, &["ZPOPMAX", "z", "2"]);
    assert_eq!(p, ["a", "6", "d", "3"]);
    assert!(cmd::<Vec<String>>(&mut c, &["ZPOPMIN", "nope"]).is_empty());
    assert!(cmd::<Vec<String>>(&mut c, &["ZPOPMIN", "z", "0"]).is_empty());
    // Removals by range; the last member takes the key with it.
    assert_eq!(
        cmd::<i64>(&mut c, &["ZREMRANGEBYLEX", "lex", "[b", "[c"]),
        2
    );
    assert_eq!(cmd::<i64>(&mut c, &["ZREMRANGEBYRANK", "lex", "0", "0"]), 1);
    assert_eq!(
        cmd::<i64>(&mut c, &["ZREMRANGEBYSCORE", "lex", "-inf", "(0"]),
        0
    );
    assert_eq!(cmd::<i64>(&mut c, &["ZREM", "lex", "d", "nope"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "lex"]), 0);
    // Random members.
    assert_eq!(cmd::<String>(&mut c, &["ZRANDMEMBER", "z"]), "b");
    let r: Vec<String> = cmd(&mut c, &["ZRANDMEMBER", "z", "-3", "WITHSCORES"]);
    assert_eq!(r, ["b", "3", "b", "3", "b", "3"]);
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["ZRANDMEMBER", "nope"]),
        None
    );
}

#[test]
fn big_sorted_sets_take_the_skiplist_form_and_scan_whole() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    cmd::<()>(&mut c, &["CONFIG", "SET", "zset-max-ziplist-entries", "16"]);
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "zset-max-listpack-entries"]);
    assert_eq!(got, ["zset-max-listpack-entries", "16"]);
    for i in 0..500 {
        let score = format!("{}", (i * 37) % 101);
        cmd::<i64>(&mut c, &["ZADD", "big", &score, &format!("m{i}")]);
    }
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "big"]),
        "skiplist"
    );
    // Ranks agree with a sort of the members.
    let mut model: Vec<(i64, String)> = (0..500)
        .map(|i| ((i * 37) % 101, format!("m{i}")))
        .collect();
    model.sort();
    for (rank, (_, m)) in model.iter().enumerate().step_by(37) {
        assert_eq!(cmd::<i64>(&mut c, &["ZRANK", "big", m]), rank as i64);
    }
    let page: Vec<String> = cmd(&mut c, &["ZRANGE", "big", "100", "104"]);
    let want: Vec<String> = model[100..105].iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(page, want);
    // ZSCAN returns every member once the cursor comes back to 0, even with removals.
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let (next, items): (String, Vec<String>) =
            cmd(&mut c, &["ZSCAN", "big", &cursor, "COUNT", "20"]);
        for pair in items.chunks(2) {
            seen.insert(pair[0].clone());
        }
        if rounds == 3 {
            cmd::<i64>(&mut c, &["ZREM", "big", "m499", "m0"]);
        }
        rounds += 1;
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    for i in 1..499 {
        assert!(seen.contains(&format!("m{i}")), "m{i} missed");
    }
    // A long member takes the big form too.
    cmd::<i64>(&mut c, &["ZADD", "long", "1", &"x".repeat(65)]);
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "long"]),
        "skiplist"
    );
}

#[test]
fn set_algebra_and_stores_on_one_shard_and_across_shards() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    assert_ne!(
        slot_shard(k[0].as_bytes(), 2),
        slot_shard(k[1].as_bytes(), 2)
    );
    // The same inputs on one shard ({t}) and spread over both (the destination on either).
    let (beside_a, beside_b) = (format!("{{{}}}d", k[0]), format!("{{{}}}d", k[1]));
    for (a, b, d) in [
        ("{t}a", "{t}b", "{t}d"),
        (k[0].as_str(), k[1].as_str(), beside_a.as_str()),
        (k[0].as_str(), k[1].as_str(), beside_b.as_str()),
    ] {
        cmd::<i64>(&mut c, &["ZADD", a, "1", "x", "2", "y", "3", "z"]);
        cmd::<i64>(&mut c, &["SADD", b, "y", "z", "w"]);
        let u: Vec<String> = cmd(
            &mut c,
            &["ZUNION", "2", a, b, "WEIGHTS", "2", "3", "WITHSCORES"],
        );
        assert_eq!(u, ["x", "2", "w", "3", "y", "7", "z", "9"], "{a} {b}");
        let i: Vec<String> = cmd(
            &mut c,
            &["ZINTER", "2", a, b, "AGGREGATE", "MAX", "WITHSCORES"],
        );
        assert_eq!(i, ["y", "2", "z", "3"]);
        let df: Vec<String> = cmd(&mut c, &["ZDIFF", "2", a, b]);
        assert_eq!(df, ["x"]);
        assert_eq!(
            cmd::<i64>(&mut c, &["ZINTERCARD", "2", a, b, "LIMIT", "1"]),
            1
        );
        assert_eq!(cmd::<i64>(&mut c, &["ZUNIONSTORE", d, "2", a, b]), 4);
        assert_eq!(all(&mut c, d), ["w", "1", "x", "1", "y", "3", "z", "4"]);
        assert_eq!(
            cmd::<i64>(
                &mut c,
                &["ZINTERSTORE", d, "2", a, b, "WEIGHTS", "1", "0.5"]
            ),
            2
        );
        assert_eq!(all(&mut c, d), ["y", "2.5", "z", "3.5"]);
        assert_eq!(cmd::<i64>(&mut c, &["ZDIFFSTORE", d, "2", a, b]), 1);
        assert_eq!(all(&mut c, d), ["x", "1"]);
        assert_eq!(
            cmd::<i64>(&mut c, &["ZRANGESTORE", d, a, "(1", "+inf", "BYSCORE"]),
            2
        );
        assert_eq!(all(&mut c, d), ["y", "2", "z", "3"]);
        // An empty result deletes the destination.
        assert_eq!(cmd::<i64>(&mut c, &["ZINTERSTORE", d, "2", a, "nope"]), 0);
        assert_eq!(cmd::<i64>(&mut c, &["EXISTS", d]), 0);
        assert_eq!(
            cmd::<i64>(&mut c, &["ZRANGESTORE", d, "nope", "0", "-1"]),
            0
        );
        // ZMPOP takes from the first key holding a sorted set.
        let p: (String, Vec<(String, String)>) =
            cmd(&mut c, &["ZMPOP", "2", "nope", a, "MAX", "COUNT", "2"]);
        assert_eq!(
            p,
            (
                a.to_string(),
                vec![("z".into(), "3".into()), ("y".into(), "2".into())]
            )
        );
        assert_eq!(
            cmd::<redis::Value>(&mut c, &["ZMPOP", "1", "nope", "MIN"]),
            redis::Value::Nil
        );
        // A wrong type anywhere is an error, and nothing is stored.
        cmd::<()>(&mut c, &["SET", d, "keep"]);
        assert_eq!(
            expect_err(&mut c, &["ZUNIONSTORE", d, "2", a, d]),
            WRONGTYPE
        );
        assert_eq!(expect_err(&mut c, &["ZMPOP", "2", d, a, "MIN"]), WRONGTYPE);
        assert_eq!(cmd::<String>(&mut c, &["GET", d]), "keep");
        assert_eq!(
            expect_err(&mut c, &["ZUNIONSTORE", d, "0", a]),
            "ERR at least 1 input key is needed for 'zunionstore' command"
        );
        assert_eq!(
            expect_err(&mut c, &["ZDIFF", "1", a, "WEIGHTS", "1"]),
            "ERR syntax error"
        );
        assert_eq!(
            expect_err(&mut c, &["ZINTERCARD", "1", a, "LIMIT", "-1"]),
            "ERR LIMIT can't be negative"
        );
        cmd::<i64>(&mut c, &["DEL", a, b, d]);
    }
}

#[test]
fn zsets_survive_sigkill_and_bgrewriteaof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    for i in 0..300 {
        let score = format!("{}", f64::from(i) / 7.0);
        cmd::<i64>(&mut c, &["ZADD", "big", &score, &format!("member-{i}")]);
    }
    cmd::<i64>(
        &mut c,
        &[
            "ZADD",
            "odd",
            "0.30000000000000004",
            "x",
            "-inf",
            "y",
            "1e-300",
            "z",
            "-0",
            "w",
        ],
    );
    cmd::<String>(&mut c, &["ZINCRBY", "big", "0.1", "member-3"]);
    cmd::<String>(&mut c, &["ZADD", "big", "XX", "INCR", "1e10", "member-4"]);
    cmd::<Vec<String>>(&mut c, &["ZPOPMIN", "big", "2"]);
    cmd::<i64>(&mut c, &["ZREMRANGEBYSCORE", "big", "10", "(20"]);
    cmd::<i64>(&mut c, &["ZADD", a, "1", "p", "2", "q"]);
    cmd::<i64>(&mut c, &["PEXPIRE", a, "3600000"]);
    cmd::<i64>(
        &mut c,
        &["ZUNIONSTORE", b, "2", a, "odd", "WEIGHTS", "3", "1"],
    );
    cmd::<(String, Vec<(String, String)>)>(&mut c, &["ZMPOP", "2", "nope", a, "MIN"]);
    let snapshot = |c: &mut redis::Connection| -> Vec<(Vec<String>, i64)> {
        ["big", "odd", a, b]
            .iter()
            .map(|k| (all(c, k), cmd::<i64>(c, &["PEXPIRETIME", k])))
            .collect()
    };
    let before = snapshot(&mut c);
    assert_eq!(before[2].0, ["q", "2"]);
    assert!(before[2].1 > 0, "the TTL stays");
    assert_eq!(
        before[1].0,
        [
            "y",
            "-inf",
            "w",
            "-0",
            "z",
            "1e-300",
            "x",
            "0.30000000000000004"
        ]
    );

    s.kill();
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    assert_eq!(snapshot(&mut c), before, "after SIGKILL");
    rewrite_and_wait(&mut c, 1);
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart after rewrite");
    let mut c = s.client();
    assert_eq!(snapshot(&mut c), before, "replayed from the rewritten base");
}

/// Attacks: sorted-set commands inside MULTI across shards with a malformed one among them,
/// and a refused one inside a pipeline (the rest still run).
#[test]
fn zsets_in_multi_and_pipelines() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<String>(&mut c, &["ZADD", a, "1", "x"]);
    assert_eq!(
        expect_err(&mut c, &["ZADD", b]),
        "ERR wrong number of arguments for 'zadd' command"
    );
    assert!(expect_err(&mut c, &["EXEC"]).starts_with("EXECABORT"));
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", a]), 0, "nothing ran");
    let (added, stored, popped): (i64, i64, Vec<String>) = redis::pipe()
        .atomic()
        .cmd("ZADD")
        .arg(a)
        .arg(&["1", "x", "2", "y"])
        .cmd("ZUNIONSTORE")
        .arg(b)
        .arg("1")
        .arg(a)
        .cmd("ZPOPMAX")
        .arg(b)
        .query(&mut c)
        .expect("MULTI across shards");
    assert_eq!((added, stored), (2, 2));
    assert_eq!(popped, ["y", "2"]);
    let mut p = redis::pipe();
    p.cmd("ZADD").arg(a).arg(&["3", "z"]);
    p.cmd("ZADD").arg(a).arg(&["bad", "w"]);
    p.cmd("ZCARD").arg(a);
    let replies: Vec<redis::Value> = p.query(&mut c).unwrap_or_default();
    assert!(replies.is_empty(), "the pipeline's error surfaces");
    assert_eq!(
        cmd::<i64>(&mut c, &["ZCARD", a]),
        3,
        "the commands around it ran"
    );
    assert_eq!(cmd::<Option<String>>(&mut c, &["ZSCORE", a, "w"]), None);
}
