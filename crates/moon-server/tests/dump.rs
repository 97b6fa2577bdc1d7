//! DUMP and RESTORE against the real binary: payloads Redis 7.0.15 wrote (checked-in, and live
//! from Debian's redis-server when installed) RESTORE into Moon with the same content, Moon's
//! payloads RESTORE into Redis, and a RESTOREd key survives SIGKILL.

mod common;

use common::{cmd, expect_err, key_content, MoonServer, RedisServer};

/// Every type, compact and large forms, a stream with groups and pending entries, TTLs.
fn fill(c: &mut redis::Connection) {
    let big: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let mut rpush = vec!["RPUSH", "l:big"];
    rpush.extend(big.iter().map(|s| s.as_str()));
    let _: () = cmd(c, &rpush);
    let mut sadd = vec!["SADD", "set:big"];
    sadd.extend(big.iter().map(|s| s.as_str()));
    let _: () = cmd(c, &sadd);
    for line in [
        "SET s:plain hello",
        "SET s:int 12345",
        "SET s:ttl v PXAT 4102444800000",
        "RPUSH l:small a 1 -5",
        "SADD set:int 1 2 -100 5000000000",
        "SADD set:str a b c",
        "ZADD z 1 a 2.5 b -inf c",
        "HSET h:small name ada lang rust",
        "PFADD hll a b c",
        "GEOADD geo 13.361389 38.115556 Palermo",
        "XADD st 1-1 name a n 1",
        "XADD st 1-2 name b",
        "XADD st 3-0 other x",
        "XDEL st 1-2",
        "XGROUP CREATE st g1 0",
        "XGROUP CREATE st g2 $",
        "XREADGROUP GROUP g1 alice COUNT 1 STREAMS st >",
        "XREADGROUP GROUP g1 bob COUNT 1 STREAMS st >",
    ] {
        let words: Vec<&str> = line.split(' ').collect();
        let _: redis::Value = cmd(c, &words);
    }
    let mut hset = vec!["HSET".to_string(), "h:big".to_string()];
    for i in 0..200 {
        hset.push(format!("f{i}"));
        hset.push(format!("v{i}"));
    }
    let words: Vec<&str> = hset.iter().map(|s| s.as_str()).collect();
    let _: () = cmd(c, &words);
}

const KEYS: &[&str] = &[
    "s:plain", "s:int", "s:ttl", "l:small", "l:big", "set:int", "set:str", "set:big", "z",
    "h:small", "h:big", "hll", "geo", "st",
];

fn dump(c: &mut redis::Connection, key: &str) -> Vec<u8> {
    redis::cmd("DUMP").arg(key).query(c).expect("DUMP")
}

fn restore(c: &mut redis::Connection, key: &str, payload: &[u8]) -> redis::RedisResult<String> {
    // The deadline travels with the payload's key: PEXPIRETIME is set separately, as
    // redis-cli --migrate and MIGRATE do.
    redis::cmd("RESTORE")
        .arg(key)
        .arg(0)
        .arg(payload)
        .arg("REPLACE")
        .query(c)
}

fn copy_deadline(
    from: &mut redis::Connection,
    key: &str,
    to: &mut redis::Connection,
    to_key: &str,
) {
    let at: i64 = cmd(from, &["PEXPIRETIME", key]);
    if at > 0 {
        let _: i64 = cmd(to, &["PEXPIREAT", to_key, &at.to_string()]);
    }
}

#[test]
fn payloads_cross_between_redis_and_moon_both_ways() {
    let Some(redis) = RedisServer::start("payloads_cross_between_redis_and_moon_both_ways") else {
        return;
    };
    let moon = MoonServer::start(2, &[]);
    let (mut r, mut m) = (redis.client(), moon.client());
    fill(&mut r);
    for key in KEYS {
        let payload = dump(&mut r, key);
        assert_eq!(
            restore(&mut m, key, &payload).expect("Moon takes Redis's payload"),
            "OK"
        );
        copy_deadline(&mut r, key, &mut m, key);
        assert_eq!(
            key_content(&mut m, key),
            key_content(&mut r, key),
            "{key} in Moon"
        );
    }
    for key in KEYS {
        let back = format!("{key}:back");
        let payload = dump(&mut m, key);
        assert_eq!(
            restore(&mut r, &back, &payload).expect("Redis takes Moon's payload"),
            "OK"
        );
        copy_deadline(&mut m, key, &mut r, &back);
        assert_eq!(
            key_content(&mut r, &back),
            key_content(&mut m, key),
            "{key} back in Redis"
        );
    }
}

/// `db key-hex payload-hex` lines written by redis-server 7.0.15 (moon-rdb's fixture).
fn fixture_payloads() -> Vec<(String, Vec<u8>)> {
    let text = include_str!("../../moon-rdb/tests/fixtures/dumps.txt");
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    };
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (String::from_utf8(hex(w[1])).expect("key"), hex(w[2]))
        })
        .collect()
}

#[test]
fn redis_payloads_restore_and_survive_sigkill() {
    let mut moon = MoonServer::start(2, &["--appendfsync", "always"]);
    let mut m = moon.client();
    let payloads = fixture_payloads();
    for (key, payload) in &payloads {
        assert_eq!(restore(&mut m, key, payload).expect(key), "OK", "{key}");
    }
    assert_eq!(
        cmd::<String>(&mut m, &["GET", "s:lzf"]),
        "abcdefghij".repeat(40)
    );
    assert_eq!(cmd::<i64>(&mut m, &["LLEN", "l:big"]), 1000);
    assert_eq!(cmd::<i64>(&mut m, &["SCARD", "set:big"]), 600);
    assert_eq!(cmd::<i64>(&mut m, &["XLEN", "big:st"]), 251);
    assert_eq!(cmd::<i64>(&mut m, &["PFCOUNT", "hll"]), 5);
    let pending: Vec<(String, String, i64, i64)> =
        cmd(&mut m, &["XPENDING", "st", "g1", "-", "+", "10"]);
    let owners: Vec<_> = pending
        .iter()
        .map(|p| (p.0.as_str(), p.1.as_str()))
        .collect();
    assert_eq!(owners, [("1-2", "alice"), ("3-0", "bob")]);
    let before: Vec<String> = payloads
        .iter()
        .map(|(k, _)| key_content(&mut m, k))
        .collect();
    moon.kill();
    let moon = MoonServer::start_in(&moon.dir.clone(), 2, &[]).expect("restarts");
    let mut m = moon.client();
    let after: Vec<String> = payloads
        .iter()
        .map(|(k, _)| key_content(&mut m, k))
        .collect();
    assert_eq!(after, before);
    // Refusals name what is wrong, as Redis's do.
    let mut bad = payloads[0].1.clone();
    bad[0] ^= 0x40;
    let err = redis::cmd("RESTORE")
        .arg("x")
        .arg(0)
        .arg(&bad[..])
        .query::<String>(&mut m)
        .expect_err("a damaged payload is refused");
    assert!(
        err.to_string()
            .contains("DUMP payload version or checksum are wrong"),
        "{err}"
    );
    assert!(expect_err(&mut m, &["RESTORE", "s:plain", "0", "x"]).starts_with("BUSYKEY"));
}

const LIB: &str =
    "#!lua name=mylib\nredis.register_function('myecho', function(keys, args) return args[1] end)";
const REDIS_LIB: &str =
    "#!lua name=redislib\nredis.register_function('twice', function(keys, args) return args[1] .. args[1] end)";

fn function_dump(c: &mut redis::Connection) -> Vec<u8> {
    redis::cmd("FUNCTION")
        .arg("DUMP")
        .query(c)
        .expect("FUNCTION DUMP")
}

fn function_restore(
    c: &mut redis::Connection,
    payload: &[u8],
    policy: Option<&str>,
) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("RESTORE").arg(payload);
    if let Some(p) = policy {
        cmd.arg(p);
    }
    cmd.query(c)
}

#[test]
fn function_libraries_travel_by_function_dump_and_restore() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut moon = MoonServer::start_in(tmp.path(), 1, &[]).expect("starts");
    let mut m = moon.client();
    let _: String = cmd(&mut m, &["FUNCTION", "LOAD", LIB]);
    let payload = function_dump(&mut m);
    let _: String = cmd(&mut m, &["FUNCTION", "FLUSH"]);
    assert_eq!(
        function_restore(&mut m, &payload, None).expect("restores"),
        "OK"
    );
    assert_eq!(cmd::<String>(&mut m, &["FCALL", "myecho", "0", "hi"]), "hi");
    let err = function_restore(&mut m, &payload, Some("APPEND")).expect_err("already there");
    assert!(
        err.to_string().contains("Library mylib already exists"),
        "{err}"
    );
    assert_eq!(
        function_restore(&mut m, &payload, Some("REPLACE")).expect("replaces"),
        "OK"
    );
    let mut bad = payload.clone();
    bad[3] ^= 1;
    let err = function_restore(&mut m, &bad, Some("FLUSH")).expect_err("damaged");
    assert!(
        err.to_string()
            .contains("DUMP payload version or checksum are wrong"),
        "{err}"
    );
    assert_eq!(
        cmd::<String>(&mut m, &["FCALL", "myecho", "0", "still"]),
        "still"
    );
    // A restored library is saved like a loaded one: it is there after SIGKILL.
    moon.kill();
    let moon = MoonServer::start_in(tmp.path(), 1, &[]).expect("restarts");
    let mut m = moon.client();
    assert_eq!(
        cmd::<String>(&mut m, &["FCALL", "myecho", "0", "back"]),
        "back"
    );

    let Some(redis) = RedisServer::start("function_libraries_travel_by_function_dump_and_restore")
    else {
        return;
    };
    let mut r = redis.client();
    let _: String = cmd(&mut r, &["FUNCTION", "LOAD", REDIS_LIB]);
    let from_redis = function_dump(&mut r);
    assert_eq!(
        function_restore(&mut m, &from_redis, None).expect("Moon takes Redis's"),
        "OK"
    );
    assert_eq!(
        cmd::<String>(&mut m, &["FCALL", "twice", "0", "ab"]),
        "abab"
    );
    let from_moon = function_dump(&mut m);
    assert_eq!(
        function_restore(&mut r, &from_moon, Some("FLUSH")).expect("Redis takes Moon's"),
        "OK"
    );
    assert_eq!(cmd::<String>(&mut r, &["FCALL", "myecho", "0", "x"]), "x");
    assert_eq!(cmd::<String>(&mut r, &["FCALL", "twice", "0", "y"]), "yy");
}
