//! HyperLogLogs against the real binary with a real client: Redis's replies and errors,
//! PFCOUNT and PFMERGE on one shard and across shards, Redis's bytes through GET and SET,
//! and the exact strings after SIGKILL.

mod common;

use common::{cmd, expect_err, keys_on_different_shards, MoonServer};

/// A string Redis 7.0.15 left after `PFADD k a b c` (sparse, cache stale): SET on Moon, it
/// is a HyperLogLog Moon counts and adds to.
const REDIS_ABC: &[u8] =
    b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x60\xf3\x80\x50\xb1\x84\x4b\xfb\x80\x42\x5a";

#[test]
fn hyperloglog_commands_answer_as_redis() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    assert_eq!(cmd::<i64>(&mut c, &["PFADD", "h"]), 1, "created");
    assert_eq!(cmd::<i64>(&mut c, &["PFCOUNT", "h"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["PFADD", "h", "a", "b", "c"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["PFADD", "h", "a", "b", "c"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["PFCOUNT", "h"]), 3);
    assert_eq!(cmd::<i64>(&mut c, &["PFCOUNT", "nope"]), 0);
    // Redis's bytes in, Moon's bytes out.
    redis::cmd("SET")
        .arg("from-redis")
        .arg(REDIS_ABC)
        .query::<()>(&mut c)
        .expect("SET");
    assert_eq!(cmd::<i64>(&mut c, &["PFCOUNT", "from-redis"]), 3);
    cmd::<i64>(&mut c, &["PFADD", "same", "a", "b", "c"]);
    let ours: Vec<u8> = cmd(&mut c, &["GET", "same"]);
    assert_eq!(ours, REDIS_ABC, "the same bytes as Redis");
    cmd::<()>(&mut c, &["SET", "str", "abc"]);
    cmd::<i64>(&mut c, &["RPUSH", "list", "x"]);
    assert_eq!(
        expect_err(&mut c, &["PFADD", "str", "x"]),
        "WRONGTYPE Key is not a valid HyperLogLog string value."
    );
    assert!(expect_err(&mut c, &["PFCOUNT", "list"]).starts_with("WRONGTYPE Operation"));
    cmd::<i64>(&mut c, &["APPEND", "same", "garbage"]);
    assert_eq!(
        expect_err(&mut c, &["PFCOUNT", "same"]),
        "INVALIDOBJ Corrupted HLL object detected"
    );
    assert_eq!(cmd::<String>(&mut c, &["PFSELFTEST"]), "OK");
    // Promotion to dense past hll-sparse-max-bytes.
    cmd::<()>(&mut c, &["CONFIG", "SET", "hll-sparse-max-bytes", "30"]);
    let many: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let mut add = vec!["PFADD", "big"];
    add.extend(many.iter().map(String::as_str));
    cmd::<i64>(&mut c, &add);
    assert_eq!(
        cmd::<String>(&mut c, &["PFDEBUG", "ENCODING", "big"]),
        "dense"
    );
    assert_eq!(cmd::<i64>(&mut c, &["STRLEN", "big"]), 12304);
    assert_eq!(cmd::<i64>(&mut c, &["PFCOUNT", "big"]), 20);
}

#[test]
fn hyperloglogs_across_shards_merge_and_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    let d = format!("{b}-dest");
    for i in 0..300 {
        cmd::<i64>(&mut c, &["PFADD", a, &format!("x{i}")]);
        cmd::<i64>(&mut c, &["PFADD", b, &format!("y{i}")]);
    }
    cmd::<i64>(&mut c, &["PFADD", b, "x1", "x2"]);
    cmd::<i64>(&mut c, &["PEXPIRE", a, "3600000"]);
    let union: i64 = cmd(&mut c, &["PFCOUNT", a, b]);
    assert!((590..=610).contains(&union), "{union}");
    cmd::<i64>(&mut c, &["PFCOUNT", a]); // writes the cache into the string
                                         // Destination on one shard, sources on both; the destination keeps its deadline.
    cmd::<i64>(&mut c, &["PFADD", a, "seed"]);
    assert_eq!(cmd::<String>(&mut c, &["PFMERGE", a, b]), "OK");
    assert!(cmd::<i64>(&mut c, &["PTTL", a]) > 0);
    assert_eq!(cmd::<String>(&mut c, &["PFMERGE", &d, a, b]), "OK");
    let merged: i64 = cmd(&mut c, &["PFCOUNT", &d]);
    assert!((590..=612).contains(&merged), "{merged}");
    assert_eq!(cmd::<i64>(&mut c, &["PFCOUNT", a, b]), merged);
    cmd::<i64>(&mut c, &["RPUSH", "a-list", "x"]);
    assert!(expect_err(&mut c, &["PFMERGE", &d, a, "a-list"]).starts_with("WRONGTYPE Operation"));
    let before: Vec<Vec<u8>> = [a, b, d.as_str()]
        .iter()
        .map(|k| cmd(&mut c, &["GET", k]))
        .collect();
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    let after: Vec<Vec<u8>> = [a, b, d.as_str()]
        .iter()
        .map(|k| cmd(&mut c, &["GET", k]))
        .collect();
    assert_eq!(before, after, "the same bytes after SIGKILL");
    assert!(cmd::<i64>(&mut c, &["PTTL", a]) > 0);
}
