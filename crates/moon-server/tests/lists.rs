//! Lists against the real binary with a real client: Redis's replies (errors included), the
//! moves and multi-key pops across shards, and persistence through SIGKILL and BGREWRITEAOF.

mod common;

use common::{expect_err, keys_on_different_shards, rewrite_and_wait, slot_shard, MoonServer};

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, words: &[&str]) -> T {
    redis::cmd(words[0])
        .arg(&words[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

fn range(con: &mut redis::Connection, key: &str) -> Vec<String> {
    cmd(con, &["LRANGE", key, "0", "-1"])
}

#[test]
fn list_commands_answer_as_redis() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    assert_eq!(cmd::<i64>(&mut c, &["RPUSH", "l", "a", "b", "c"]), 3);
    assert_eq!(cmd::<i64>(&mut c, &["LPUSH", "l", "z", "y"]), 5);
    assert_eq!(range(&mut c, "l"), ["y", "z", "a", "b", "c"]);
    assert_eq!(cmd::<i64>(&mut c, &["LPUSHX", "nope", "x"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["RPUSHX", "l", "d"]), 6);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "nope"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["LLEN", "l"]), 6);
    assert_eq!(cmd::<i64>(&mut c, &["LLEN", "nope"]), 0);
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "l"]), "list");
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "l"]),
        "listpack"
    );
    // Ranges and indexes from both ends, out of range clipped.
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "1", "2"]),
        ["z", "a"]
    );
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "-2", "100"]),
        ["c", "d"]
    );
    assert!(cmd::<Vec<String>>(&mut c, &["LRANGE", "l", "4", "2"]).is_empty());
    assert!(cmd::<Vec<String>>(&mut c, &["LRANGE", "nope", "0", "-1"]).is_empty());
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["LINDEX", "l", "-1"]).as_deref(),
        Some("d")
    );
    assert_eq!(cmd::<Option<String>>(&mut c, &["LINDEX", "l", "6"]), None);
    // Pops, with and without a count.
    assert_eq!(cmd::<String>(&mut c, &["LPOP", "l"]), "y");
    assert_eq!(cmd::<Vec<String>>(&mut c, &["RPOP", "l", "2"]), ["d", "c"]);
    assert!(cmd::<Vec<String>>(&mut c, &["LPOP", "l", "0"]).is_empty());
    assert_eq!(cmd::<Option<String>>(&mut c, &["LPOP", "nope"]), None);
    assert_eq!(
        cmd::<redis::Value>(&mut c, &["LPOP", "nope", "2"]),
        redis::Value::Nil
    );
    assert_eq!(
        expect_err(&mut c, &["LPOP", "l", "-1"]),
        "ERR value is out of range, must be positive"
    );
    // LSET, LINSERT, LREM, LTRIM, LPOS.
    assert_eq!(range(&mut c, "l"), ["z", "a", "b"]);
    assert_eq!(cmd::<String>(&mut c, &["LSET", "l", "-1", "B"]), "OK");
    assert_eq!(
        expect_err(&mut c, &["LSET", "l", "3", "x"]),
        "ERR index out of range"
    );
    assert_eq!(
        expect_err(&mut c, &["LSET", "nope", "0", "x"]),
        "ERR no such key"
    );
    assert_eq!(cmd::<i64>(&mut c, &["LINSERT", "l", "BEFORE", "a", "x"]), 4);
    assert_eq!(cmd::<i64>(&mut c, &["LINSERT", "l", "AFTER", "B", "x"]), 5);
    assert_eq!(
        cmd::<i64>(&mut c, &["LINSERT", "l", "AFTER", "missing", "x"]),
        -1
    );
    assert_eq!(
        cmd::<i64>(&mut c, &["LINSERT", "nope", "AFTER", "a", "x"]),
        0
    );
    assert_eq!(
        expect_err(&mut c, &["LINSERT", "l", "MIDDLE", "a", "x"]),
        "ERR syntax error"
    );
    assert_eq!(range(&mut c, "l"), ["z", "x", "a", "B", "x"]);
    assert_eq!(cmd::<i64>(&mut c, &["LPOS", "l", "x"]), 1);
    assert_eq!(
        cmd::<Vec<i64>>(&mut c, &["LPOS", "l", "x", "COUNT", "0"]),
        [1, 4]
    );
    assert_eq!(cmd::<i64>(&mut c, &["LPOS", "l", "x", "RANK", "-1"]), 4);
    assert_eq!(
        cmd::<Option<i64>>(&mut c, &["LPOS", "l", "x", "MAXLEN", "1"]),
        None
    );
    assert!(
        expect_err(&mut c, &["LPOS", "l", "x", "RANK", "0"]).starts_with("ERR RANK can't be zero")
    );
    assert_eq!(cmd::<i64>(&mut c, &["LREM", "l", "-1", "x"]), 1);
    assert_eq!(range(&mut c, "l"), ["z", "x", "a", "B"]);
    assert_eq!(cmd::<i64>(&mut c, &["LREM", "l", "0", "x"]), 1);
    assert_eq!(cmd::<String>(&mut c, &["LTRIM", "l", "1", "-1"]), "OK");
    assert_eq!(range(&mut c, "l"), ["a", "B"]);
    // A list emptied by any command is gone.
    assert_eq!(cmd::<String>(&mut c, &["LTRIM", "l", "5", "10"]), "OK");
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "l"]), 0);
    cmd::<i64>(&mut c, &["RPUSH", "l", "only"]);
    assert_eq!(cmd::<String>(&mut c, &["RPOP", "l"]), "only");
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "l"]), 0);
    // WRONGTYPE both ways.
    cmd::<()>(&mut c, &["SET", "s", "v"]);
    assert_eq!(expect_err(&mut c, &["LPUSH", "s", "x"]), WRONGTYPE);
    assert_eq!(expect_err(&mut c, &["LRANGE", "s", "0", "-1"]), WRONGTYPE);
    cmd::<i64>(&mut c, &["RPUSH", "l", "x"]);
    assert_eq!(expect_err(&mut c, &["GET", "l"]), WRONGTYPE);
    // A big list is a quicklist; CONFIG names old and new.
    let many: Vec<String> = (0..300).map(|i| format!("element-{i:040}")).collect();
    let mut push = vec!["RPUSH", "big"];
    push.extend(many.iter().map(String::as_str));
    assert_eq!(cmd::<i64>(&mut c, &push), 300);
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "big"]),
        "quicklist"
    );
    cmd::<()>(&mut c, &["CONFIG", "SET", "list-max-ziplist-size", "1000"]);
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "list-max-listpack-size"]);
    assert_eq!(got, ["list-max-listpack-size", "1000"]);
    // As Redis 7.2+: a quicklist stays one while it grows, and turns back into a listpack
    // only once a removal leaves it under half a node.
    cmd::<i64>(&mut c, &["RPUSH", "big", "one-more"]);
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "big"]),
        "quicklist"
    );
    cmd::<String>(&mut c, &["LTRIM", "big", "0", "9"]);
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "big"]),
        "listpack"
    );
    assert!(
        expect_err(&mut c, &["CONFIG", "SET", "list-max-listpack-size", "x"])
            .contains("list-max-listpack-size")
    );
    // Review findings: Redis's texts and order.
    assert_eq!(
        expect_err(&mut c, &["LPOP", "big", "1", "2"]),
        "ERR wrong number of arguments for 'lpop' command"
    );
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["LINDEX", "nope", "abc"]),
        None
    );
    assert_eq!(
        expect_err(&mut c, &["LPOS", "big", "x", "COUNT", "abc"]),
        "ERR COUNT can't be negative"
    );
}

/// Review finding: LMPOP on one shard logged its effect as if sent, so the popped key was
/// looked for at LMPOP's key positions: a watcher of it was not told, and EXEC ran.
#[test]
fn lmpop_and_a_rotation_touch_their_key_as_any_write() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let mut watcher = s.client();
    cmd::<i64>(&mut c, &["RPUSH", "l", "a", "b"]);
    cmd::<()>(&mut watcher, &["WATCH", "l"]);
    cmd::<()>(&mut watcher, &["MULTI"]);
    cmd::<()>(&mut watcher, &["SET", "other", "1"]);
    let popped: (String, Vec<String>) = cmd(&mut c, &["LMPOP", "1", "l", "LEFT"]);
    assert_eq!(popped, ("l".to_string(), vec!["a".to_string()]));
    assert_eq!(
        cmd::<redis::Value>(&mut watcher, &["EXEC"]),
        redis::Value::Nil,
        "the watched key changed"
    );
    // Review finding: rotating a one-element list re-created the key without its deadline.
    cmd::<i64>(&mut c, &["PEXPIRE", "l", "100000"]);
    assert_eq!(
        cmd::<String>(&mut c, &["LMOVE", "l", "l", "LEFT", "RIGHT"]),
        "b"
    );
    assert!(cmd::<i64>(&mut c, &["PTTL", "l"]) > 0, "the deadline stays");
    assert_eq!(cmd::<String>(&mut c, &["RPOPLPUSH", "l", "l"]), "b");
    assert!(cmd::<i64>(&mut c, &["PTTL", "l"]) > 0, "the deadline stays");
}

#[test]
fn moves_and_multi_key_pops_work_on_one_shard_and_across_shards() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    assert_ne!(slot_shard(a.as_bytes(), 2), slot_shard(b.as_bytes(), 2));
    cmd::<i64>(&mut c, &["RPUSH", a, "1", "2", "3"]);
    // Across shards.
    assert_eq!(
        cmd::<String>(&mut c, &["LMOVE", a, b, "LEFT", "RIGHT"]),
        "1"
    );
    assert_eq!(cmd::<String>(&mut c, &["RPOPLPUSH", a, b]), "3");
    assert_eq!(range(&mut c, a), ["2"]);
    assert_eq!(range(&mut c, b), ["3", "1"]);
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["LMOVE", "nope", b, "LEFT", "LEFT"]),
        None
    );
    assert_eq!(
        expect_err(&mut c, &["LMOVE", a, b, "UP", "LEFT"]),
        "ERR syntax error"
    );
    // The source's last element moves: the source is gone.
    assert_eq!(cmd::<String>(&mut c, &["LMOVE", a, b, "LEFT", "LEFT"]), "2");
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", a]), 0);
    // A destination of another type: nothing moves.
    cmd::<()>(&mut c, &["SET", a, "string"]);
    assert_eq!(
        expect_err(&mut c, &["LMOVE", b, a, "LEFT", "LEFT"]),
        WRONGTYPE
    );
    assert_eq!(range(&mut c, b), ["2", "3", "1"]);
    cmd::<()>(&mut c, &["DEL", a]);
    // On one shard: a rotation.
    assert_eq!(
        cmd::<String>(&mut c, &["LMOVE", b, b, "LEFT", "RIGHT"]),
        "2"
    );
    assert_eq!(range(&mut c, b), ["3", "1", "2"]);
    // LMPOP takes the first key holding a list, in the order given.
    let popped: (String, Vec<String>) = cmd(&mut c, &["LMPOP", "2", a, b, "RIGHT", "COUNT", "2"]);
    assert_eq!(popped, (b.to_string(), vec!["2".into(), "1".into()]));
    cmd::<i64>(&mut c, &["RPUSH", a, "x"]);
    let popped: (String, Vec<String>) = cmd(&mut c, &["LMPOP", "2", a, b, "LEFT"]);
    assert_eq!(popped, (a.to_string(), vec!["x".into()]));
    assert_eq!(
        cmd::<redis::Value>(&mut c, &["LMPOP", "1", "nope", "LEFT"]),
        redis::Value::Nil
    );
    assert_eq!(
        expect_err(&mut c, &["LMPOP", "0", a, "LEFT"]),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(
        expect_err(&mut c, &["LMPOP", "1", a, "LEFT", "COUNT", "0"]),
        "ERR count should be greater than 0"
    );
    assert_eq!(
        expect_err(&mut c, &["LMPOP", "3", a, b, "LEFT"]),
        "ERR syntax error"
    );
    cmd::<()>(&mut c, &["SET", a, "string"]);
    assert_eq!(expect_err(&mut c, &["LMPOP", "2", a, b, "LEFT"]), WRONGTYPE);
}

#[test]
fn lists_survive_sigkill_and_bgrewriteaof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    for i in 0..700 {
        cmd::<i64>(&mut c, &["RPUSH", "biglist", &format!("element-{i}")]);
    }
    cmd::<Vec<String>>(&mut c, &["LPOP", "biglist", "3"]);
    cmd::<String>(&mut c, &["LSET", "biglist", "10", "changed"]);
    cmd::<i64>(
        &mut c,
        &["LINSERT", "biglist", "BEFORE", "changed", "inserted"],
    );
    cmd::<i64>(&mut c, &["LREM", "biglist", "0", "element-500"]);
    cmd::<String>(&mut c, &["LTRIM", "biglist", "0", "599"]);
    cmd::<i64>(&mut c, &["RPUSH", a, "1", "2", "3"]);
    cmd::<i64>(&mut c, &["PEXPIRE", a, "3600000"]);
    cmd::<String>(&mut c, &["LMOVE", a, b, "RIGHT", "LEFT"]);
    cmd::<(String, Vec<String>)>(&mut c, &["LMPOP", "2", "nope", a, "LEFT"]);
    let snapshot = |c: &mut redis::Connection| -> Vec<(Vec<String>, i64)> {
        ["biglist", a, b]
            .iter()
            .map(|k| (range(c, k), cmd::<i64>(c, &["PEXPIRETIME", k])))
            .collect()
    };
    let before = snapshot(&mut c);
    assert_eq!(before[1].0, ["2"]);
    assert!(before[1].1 > 0, "the TTL stays");
    assert_eq!(before[2].0, ["3"]);

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

/// What Redis's own list units set before they start (issue 24, item 6): `save` takes Redis's
/// syntax and is reported back; Moon takes no snapshots, so it changes nothing else.
#[test]
fn save_takes_redis_syntax_and_changes_nothing() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "save"]);
    assert_eq!(got, ["save", ""]);
    cmd::<()>(&mut c, &["CONFIG", "SET", "save", "3600  1 300 100"]);
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "save"]);
    assert_eq!(got, ["save", "3600 1 300 100"]);
    assert!(expect_err(&mut c, &["CONFIG", "SET", "save", "3600"]).contains("save"));
    assert!(expect_err(&mut c, &["CONFIG", "SET", "save", "x 1"]).contains("save"));
    cmd::<()>(&mut c, &["CONFIG", "SET", "save", ""]);
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "save"]);
    assert_eq!(got, ["save", ""]);
}

/// Attacks on the list commands: inside MULTI and a pipeline across shards, a malformed one
/// among them, and a 1 MiB element moved across shards and back after SIGKILL.
#[test]
fn lists_in_multi_pipelines_and_big_elements_across_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = MoonServer::start_in(dir.path(), 2, &["--appendfsync", "always"]).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<i64>(&mut c, &["RPUSH", a, "1", "2", "3"]);
    // MULTI across shards: the moves and pops run as one transaction.
    let (moved, pushed, popped): (String, i64, (String, Vec<String>)) = redis::pipe()
        .atomic()
        .cmd("LMOVE")
        .arg(a)
        .arg(b)
        .arg("LEFT")
        .arg("RIGHT")
        .cmd("LPUSH")
        .arg(b)
        .arg("z")
        .cmd("LMPOP")
        .arg(2)
        .arg(b)
        .arg(a)
        .arg("RIGHT")
        .query(&mut c)
        .expect("EXEC");
    assert_eq!((moved.as_str(), pushed), ("1", 2));
    assert_eq!(popped, (b.to_string(), vec!["1".to_string()]));
    assert_eq!(range(&mut c, a), ["2", "3"]);
    assert_eq!(range(&mut c, b), ["z"]);
    // A malformed list command inside MULTI aborts the whole EXEC.
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<String>(&mut c, &["RPUSH", a, "never"]);
    assert!(expect_err(&mut c, &["LPOS", a]).contains("wrong number of arguments"));
    assert!(expect_err(&mut c, &["EXEC"]).starts_with("EXECABORT"));
    assert_eq!(range(&mut c, a), ["2", "3"]);
    // In a pipeline, an error takes its own place and the commands after it still run.
    let err = redis::pipe()
        .cmd("RPUSH")
        .arg(a)
        .arg("4")
        .cmd("LPOS")
        .arg(a)
        .arg("4")
        .arg("RANK")
        .arg("0")
        .cmd("LMOVE")
        .arg(a)
        .arg(b)
        .arg("RIGHT")
        .arg("LEFT")
        .query::<()>(&mut c)
        .expect_err("the LPOS is refused");
    assert!(err.to_string().contains("RANK can't be zero"), "{err}");
    assert_eq!(
        range(&mut c, a),
        ["2", "3"],
        "the RPUSH ran, then the LMOVE"
    );
    assert_eq!(range(&mut c, b), ["4", "z"]);
    // A 1 MiB element moves across shards and survives a SIGKILL.
    let big = "x".repeat(1 << 20);
    cmd::<i64>(&mut c, &["RPUSH", a, &big]);
    assert_eq!(cmd::<String>(&mut c, &["RPOPLPUSH", a, b]).len(), 1 << 20);
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &["--appendfsync", "always"]).expect("restart");
    let mut c = s.client();
    assert_eq!(range(&mut c, a), ["2", "3"]);
    let got = range(&mut c, b);
    assert_eq!(got.len(), 3);
    assert_eq!(
        (got[0].len(), got[1].as_str(), got[2].as_str()),
        (1 << 20, "4", "z")
    );
}

/// `list-compress-depth`: a list created under it keeps its interior nodes LZF-compressed
/// (less memory in the account than the same list created without), and every command reads
/// and edits through compressed nodes exactly as through plain ones, before and after a
/// SIGKILL.
#[test]
fn compressed_lists_answer_as_plain_ones_and_hold_less() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--list-max-listpack-size", "-1"];
    let mut s = MoonServer::start_in(dir.path(), 1, &args).expect("start");
    let mut c = s.client();
    let used = |c: &mut redis::Connection| -> i64 {
        let info: String = cmd(c, &["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    let elements: Vec<String> = (0..20_000)
        .map(|i| format!("event:{:03}:{}", i % 250, "payload-".repeat(3)))
        .collect();
    let grow = |c: &mut redis::Connection, key: &str| -> i64 {
        let before = used(c);
        for part in elements.chunks(1000) {
            let mut push = vec!["RPUSH", key];
            push.extend(part.iter().map(String::as_str));
            cmd::<i64>(c, &push);
        }
        used(c) - before
    };
    let plain = grow(&mut c, "plain");
    cmd::<()>(&mut c, &["CONFIG", "SET", "list-compress-depth", "1"]);
    let packed = grow(&mut c, "packed");
    assert!(
        packed * 2 < plain,
        "compressed {packed} bytes against {plain} plain"
    );
    for key in ["plain", "packed"] {
        assert_eq!(
            cmd::<String>(&mut c, &["OBJECT", "ENCODING", key]),
            "quicklist"
        );
        cmd::<String>(&mut c, &["LSET", key, "9000", "changed"]);
        cmd::<i64>(&mut c, &["LINSERT", key, "AFTER", "changed", "inserted"]);
        cmd::<i64>(&mut c, &["LREM", key, "-40", &elements[7]]);
        cmd::<String>(&mut c, &["LTRIM", key, "3", "-5"]);
        cmd::<i64>(&mut c, &["LPUSH", key, "head"]);
        cmd::<Option<String>>(&mut c, &["RPOP", key]);
    }
    let view = |c: &mut redis::Connection, key: &str| {
        (
            range(c, key),
            cmd::<Vec<String>>(c, &["LRANGE", key, "12000", "12010"]),
            cmd::<String>(c, &["LINDEX", key, "8998"]),
            cmd::<Vec<i64>>(c, &["LPOS", key, &elements[3], "COUNT", "0"]),
        )
    };
    let plain_view = view(&mut c, "plain");
    assert_eq!(plain_view.2, "changed");
    assert_eq!(view(&mut c, "packed"), plain_view);
    s.kill();
    let s = MoonServer::start_in(dir.path(), 1, &args).expect("restart");
    let mut c = s.client();
    assert_eq!(view(&mut c, "plain"), plain_view, "after SIGKILL");
    assert_eq!(view(&mut c, "packed"), plain_view, "after SIGKILL");
}
