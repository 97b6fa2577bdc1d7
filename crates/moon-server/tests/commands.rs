//! Every string and key command of the foundation issue, against the real binary with two
//! shards, through the `redis` crate.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use redis::{Commands, Value};

fn server() -> MoonServer {
    MoonServer::start(2, &[])
}

#[test]
fn strings() {
    let s = server();
    let mut c = s.client();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    // SET options
    let r: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .arg("XX")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(r.as_deref(), Some("v"));
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("x")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl: i64 = c.ttl("k").unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("y")
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    assert!(c.pttl::<_, i64>("k").unwrap() > 90_000);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("y")
        .arg("PX")
        .arg(100_000)
        .query(&mut c)
        .unwrap();
    assert!(c.pttl::<_, i64>("k").unwrap() > 90_000);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("y")
        .arg("EXAT")
        .arg(4_000_000_000u64)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        redis::cmd("EXPIRETIME")
            .arg("k")
            .query::<i64>(&mut c)
            .unwrap(),
        4_000_000_000
    );
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("y")
        .arg("PXAT")
        .arg(4_000_000_000_123u64)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        redis::cmd("PEXPIRETIME")
            .arg("k")
            .query::<i64>(&mut c)
            .unwrap(),
        4_000_000_000_123
    );
    // SETNX SETEX PSETEX GETSET GETDEL GETEX
    assert_eq!(
        redis::cmd("SETNX")
            .arg("k")
            .arg("z")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("SETNX")
            .arg("k2")
            .arg("z")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    let _: () = redis::cmd("SETEX")
        .arg("se")
        .arg(50)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!((49..=50).contains(&c.ttl::<_, i64>("se").unwrap()));
    let _: () = redis::cmd("PSETEX")
        .arg("pse")
        .arg(50_000)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!(c.pttl::<_, i64>("pse").unwrap() > 40_000);
    assert_eq!(
        redis::cmd("GETSET")
            .arg("k2")
            .arg("n")
            .query::<String>(&mut c)
            .unwrap(),
        "z"
    );
    assert_eq!(
        redis::cmd("GETDEL")
            .arg("k2")
            .query::<String>(&mut c)
            .unwrap(),
        "n"
    );
    assert_eq!(c.exists::<_, i64>("k2").unwrap(), 0);
    let _: () = c.set("gx", "v").unwrap();
    assert_eq!(
        redis::cmd("GETEX")
            .arg("gx")
            .arg("EX")
            .arg(30)
            .query::<String>(&mut c)
            .unwrap(),
        "v"
    );
    assert!((29..=30).contains(&c.ttl::<_, i64>("gx").unwrap()));
    assert_eq!(
        redis::cmd("GETEX")
            .arg("gx")
            .arg("PERSIST")
            .query::<String>(&mut c)
            .unwrap(),
        "v"
    );
    assert_eq!(c.ttl::<_, i64>("gx").unwrap(), -1);
    // Counters
    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 1);
    assert_eq!(redis::cmd("INCR").arg("n").query::<i64>(&mut c).unwrap(), 2);
    assert_eq!(
        redis::cmd("INCRBY")
            .arg("n")
            .arg(40)
            .query::<i64>(&mut c)
            .unwrap(),
        42
    );
    assert_eq!(
        redis::cmd("DECR").arg("n").query::<i64>(&mut c).unwrap(),
        41
    );
    assert_eq!(
        redis::cmd("DECRBY")
            .arg("n")
            .arg(50)
            .query::<i64>(&mut c)
            .unwrap(),
        -9
    );
    assert_eq!(
        redis::cmd("INCRBYFLOAT")
            .arg("f")
            .arg("10.5")
            .query::<String>(&mut c)
            .unwrap(),
        "10.5"
    );
    assert_eq!(
        redis::cmd("INCRBYFLOAT")
            .arg("f")
            .arg("-0.25")
            .query::<String>(&mut c)
            .unwrap(),
        "10.25"
    );
    // APPEND STRLEN GETRANGE SETRANGE
    assert_eq!(
        redis::cmd("APPEND")
            .arg("s")
            .arg("Hello")
            .query::<i64>(&mut c)
            .unwrap(),
        5
    );
    assert_eq!(
        redis::cmd("APPEND")
            .arg("s")
            .arg(" World")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(
        redis::cmd("STRLEN").arg("s").query::<i64>(&mut c).unwrap(),
        11
    );
    assert_eq!(
        redis::cmd("GETRANGE")
            .arg("s")
            .arg(0)
            .arg(4)
            .query::<String>(&mut c)
            .unwrap(),
        "Hello"
    );
    assert_eq!(
        redis::cmd("GETRANGE")
            .arg("s")
            .arg(-5)
            .arg(-1)
            .query::<String>(&mut c)
            .unwrap(),
        "World"
    );
    assert_eq!(
        redis::cmd("SETRANGE")
            .arg("s")
            .arg(6)
            .arg("Redis")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(c.get::<_, String>("s").unwrap(), "Hello Redis");
    // Binary-safe values
    let bin: Vec<u8> = (0..=255u8).collect();
    let _: () = c.set("bin", &bin).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>("bin").unwrap(), bin);
}

#[test]
fn error_replies_are_redis_words() {
    let s = server();
    let mut c = s.client();
    let _: () = c.set("str", "abc").unwrap();
    assert_eq!(
        expect_err(&mut c, &["INCR", "str"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        expect_err(&mut c, &["SET", "k", "v", "NX", "XX"]),
        "ERR syntax error"
    );
    assert_eq!(
        expect_err(&mut c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        expect_err(&mut c, &["NOPE", "x"]),
        "ERR unknown command 'NOPE', with args beginning with: 'x' "
    );
    assert_eq!(
        expect_err(&mut c, &["SET", "k", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        expect_err(&mut c, &["RENAME", "nope", "x"]),
        "ERR no such key"
    );
    assert_eq!(
        expect_err(&mut c, &["MSET", "a", "1", "b"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        expect_err(&mut c, &["SELECT", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        expect_err(&mut c, &["INCRBYFLOAT", "str", "1"]),
        "ERR value is not a valid float"
    );
    // The connection is still fine after errors.
    assert_eq!(c.get::<_, String>("str").unwrap(), "abc");
}

#[test]
fn key_commands_and_expiry() {
    let s = server();
    let mut c = s.client();
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .arg("c")
        .arg(3)
        .query(&mut c)
        .unwrap();
    assert_eq!(c.del::<_, i64>(&["a", "nope"]).unwrap(), 1);
    assert_eq!(
        redis::cmd("UNLINK").arg("b").query::<i64>(&mut c).unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("EXISTS")
            .arg("c")
            .arg("c")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(
        redis::cmd("TOUCH")
            .arg("c")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("TYPE").arg("c").query::<String>(&mut c).unwrap(),
        "string"
    );
    assert_eq!(
        redis::cmd("TYPE")
            .arg("nope")
            .query::<String>(&mut c)
            .unwrap(),
        "none"
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("c")
            .arg(100)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("c")
            .arg(200)
            .arg("NX")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("PEXPIRE")
            .arg("c")
            .arg(200_000)
            .arg("GT")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(c.ttl::<_, i64>("c").unwrap() > 190);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1000;
    assert_eq!(
        redis::cmd("EXPIREAT")
            .arg("c")
            .arg(at)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("EXPIRETIME")
            .arg("c")
            .query::<u64>(&mut c)
            .unwrap(),
        at
    );
    assert_eq!(
        redis::cmd("PEXPIREAT")
            .arg("c")
            .arg(at * 1000 + 5)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("PEXPIRETIME")
            .arg("c")
            .query::<u64>(&mut c)
            .unwrap(),
        at * 1000 + 5
    );
    assert_eq!(
        redis::cmd("PERSIST").arg("c").query::<i64>(&mut c).unwrap(),
        1
    );
    assert_eq!(redis::cmd("TTL").arg("c").query::<i64>(&mut c).unwrap(), -1);
    assert_eq!(
        redis::cmd("PTTL").arg("nope").query::<i64>(&mut c).unwrap(),
        -2
    );
    // An expire in the past deletes.
    assert_eq!(
        redis::cmd("EXPIREAT")
            .arg("c")
            .arg(1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(c.exists::<_, i64>("c").unwrap(), 0);
    // Lazy expiry: a key read after its deadline is gone.
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(30)
        .query(&mut c)
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || c
        .get::<_, Option<String>>("short")
        .unwrap()
        .is_none()));
}

#[test]
fn active_expiry_reclaims_keys_nobody_reads() {
    let s = server();
    let mut c = s.client();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("vol:{i}"))
            .arg("v")
            .arg("PX")
            .arg(50)
            .query(&mut c)
            .unwrap();
    }
    let _: () = c.set("stays", "v").unwrap();
    // DBSIZE counts stored entries without touching them; only active expiry can lower it.
    assert!(
        eventually(Duration::from_secs(10), || redis::cmd("DBSIZE")
            .query::<i64>(&mut c)
            .unwrap()
            == 1),
        "expired keys were not reclaimed"
    );
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    assert!(info.contains("expired_keys:200"), "{info}");
}

#[test]
fn rename_keys_scan_randomkey_flush_across_shards() {
    let s = server();
    let mut c = s.client();
    let ks = keys_on_different_shards(2);
    let (k0, k1) = (&ks[0], &ks[1]);
    let _: () = redis::cmd("SET")
        .arg(k0)
        .arg("v0")
        .arg("EX")
        .arg(500)
        .query(&mut c)
        .unwrap();
    // RENAME to a key on the other shard keeps value and TTL.
    let _: () = redis::cmd("RENAME").arg(k0).arg(k1).query(&mut c).unwrap();
    assert_eq!(c.get::<_, Option<String>>(k0).unwrap(), None);
    assert_eq!(c.get::<_, String>(k1).unwrap(), "v0");
    assert!(c.ttl::<_, i64>(k1).unwrap() > 400);
    let _: () = c.set(k0, "other").unwrap();
    assert_eq!(
        redis::cmd("RENAMENX")
            .arg(k1)
            .arg(k0)
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    let _: () = c.del(k0).unwrap();
    assert_eq!(
        redis::cmd("RENAMENX")
            .arg(k1)
            .arg(k0)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(c.get::<_, String>(k0).unwrap(), "v0");
    assert_eq!(expect_err(&mut c, &["RENAME", k1, k0]), "ERR no such key");

    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let mut expected = HashSet::new();
    for i in 0..300 {
        let k = format!("scan:{i}");
        let _: () = c.set(&k, i).unwrap();
        expected.insert(k);
    }
    let _: () = c.set("other", 1).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 301);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("scan:*").query(&mut c).unwrap();
    keys.sort();
    let mut exp_sorted: Vec<String> = expected.iter().cloned().collect();
    exp_sorted.sort();
    assert_eq!(keys, exp_sorted);
    // SCAN walks both shards with a cursor that ends at 0.
    let mut cursor = 0u64;
    let mut seen = HashSet::new();
    let mut calls = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("COUNT")
            .arg(25)
            .query(&mut c)
            .unwrap();
        seen.extend(batch);
        calls += 1;
        if next == 0 {
            break;
        }
        cursor = next;
        assert!(calls < 1000);
    }
    assert_eq!(seen, expected);
    let typed: (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .query(&mut c)
        .unwrap();
    assert!(typed.1.is_empty());
    let rk: String = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(rk == "other" || expected.contains(&rk));
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(
        redis::cmd("RANDOMKEY")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
}

#[test]
fn multi_key_commands_span_shards() {
    let s = server();
    let mut c = s.client();
    let keys: Vec<String> = (0..20).map(|i| format!("m:{i}")).collect();
    let shards: HashSet<usize> = keys.iter().map(|k| slot_shard(k.as_bytes(), 2)).collect();
    assert_eq!(shards.len(), 2, "the keys must span both shards");
    let mut mset = redis::cmd("MSET");
    for (i, k) in keys.iter().enumerate() {
        mset.arg(k).arg(format!("v{i}"));
    }
    let _: () = mset.query(&mut c).unwrap();
    let mut query: Vec<String> = keys.clone();
    query.insert(3, "missing".into());
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&query).query(&mut c).unwrap();
    let mut want: Vec<Option<String>> = (0..20).map(|i| Some(format!("v{i}"))).collect();
    want.insert(3, None);
    assert_eq!(got, want, "MGET keeps the order of the keys");
    assert_eq!(
        redis::cmd("EXISTS")
            .arg(&query)
            .query::<i64>(&mut c)
            .unwrap(),
        20
    );
    assert_eq!(
        redis::cmd("TOUCH")
            .arg(&keys[..5])
            .query::<i64>(&mut c)
            .unwrap(),
        5
    );
    assert_eq!(
        redis::cmd("DEL")
            .arg(&keys[..10])
            .arg("missing")
            .query::<i64>(&mut c)
            .unwrap(),
        10
    );
    assert_eq!(
        redis::cmd("UNLINK")
            .arg(&keys[10..])
            .query::<i64>(&mut c)
            .unwrap(),
        10
    );
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    // MSETNX: all or nothing across shards.
    let ks = keys_on_different_shards(2);
    assert_eq!(
        redis::cmd("MSETNX")
            .arg(&ks[0])
            .arg("a")
            .arg(&ks[1])
            .arg("b")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("MSETNX")
            .arg(&ks[0])
            .arg("x")
            .arg("fresh")
            .arg("y")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(c.get::<_, Option<String>>("fresh").unwrap(), None);
    assert_eq!(c.get::<_, String>(&ks[0]).unwrap(), "a");
}

#[test]
fn server_commands() {
    let s = server();
    let mut c = s.client();
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    assert_eq!(
        redis::cmd("PING")
            .arg("hi")
            .query::<String>(&mut c)
            .unwrap(),
        "hi"
    );
    assert_eq!(
        redis::cmd("ECHO")
            .arg("hello")
            .query::<String>(&mut c)
            .unwrap(),
        "hello"
    );
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut c).unwrap();
    assert!(secs > 1_600_000_000 && micros < 1_000_000);
    // CLIENT
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        redis::cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut c)
            .unwrap(),
        "tester"
    );
    assert_eq!(
        expect_err(&mut c, &["CLIENT", "SETNAME", "bad name"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    let mut other = s.client();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("other")
        .query(&mut other)
        .unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(
        list.contains(&format!("id={id} "))
            && list.contains("name=tester")
            && list.contains("name=other"),
        "{list}"
    );
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(info.starts_with(&format!("id={id} ")), "{info}");
    // COMMAND
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count >= 50);
    let info: Vec<Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    assert_eq!(info.len(), 2);
    assert_eq!(info[1], Value::Nil);
    match &info[0] {
        Value::Array(fields) => {
            assert_eq!(fields[0], Value::BulkString(b"get".to_vec()));
            assert_eq!(fields[1], Value::Int(2));
            assert_eq!(
                fields[6],
                Value::Array(
                    ["@string", "@read", "@fast"]
                        .iter()
                        .map(|c| Value::SimpleString(c.to_string()))
                        .collect()
                ),
                "ACL categories"
            );
        }
        other => panic!("{other:?}"),
    }
    // Key positions from the table, as routing reads them; Moon's internal commands stay hidden.
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg(&["GETKEYS", "MSET", "a", "1", "b", "2"])
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, ["a", "b"]);
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg(&["GETKEYS", "SINTERCARD", "2", "x", "y", "LIMIT", "1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, ["x", "y"]);
    assert_eq!(
        expect_err(&mut c, &["COMMAND", "GETKEYS", "PING"]),
        "ERR The command has no key arguments"
    );
    assert_eq!(
        expect_err(&mut c, &["COMMAND", "GETKEYS", "MSET", "a"]),
        "ERR Invalid arguments specified for command"
    );
    let names: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut c).unwrap();
    assert!(
        names.contains(&"hexpire".to_string()) && !names.iter().any(|n| n.starts_with("moon."))
    );
    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("set")
        .query(&mut c)
        .unwrap();
    assert!(matches!(docs, Value::Array(_) | Value::Map(_)), "{docs:?}");
    // CONFIG
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("append*")
        .query(&mut c)
        .unwrap();
    assert_eq!(cfg, vec!["appendonly", "yes", "appendfsync", "everysec"]);
    let port: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        port[1],
        s.addr.port().to_string(),
        "CONFIG GET port shows the port actually bound"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(500)
        .query(&mut c)
        .unwrap();
    let mc: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut c)
        .unwrap();
    assert_eq!(mc[1], "500");
    assert_eq!(expect_err(&mut c, &["CONFIG", "SET", "appendfsync", "sometimes"]), "ERR CONFIG SET failed (possibly related to argument 'appendfsync') - invalid value for 'appendfsync': 'sometimes' (allowed: always, everysec, no)");
    assert_eq!(
        expect_err(&mut c, &["CONFIG", "SET", "port", "1"]),
        "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    );
    assert_eq!(
        expect_err(&mut c, &["CONFIG", "SET", "nosuch", "1"]),
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    );
    // INFO with Redis's field names
    let _: () = c.set("x", 1).unwrap();
    let _: Option<String> = c.get("x").unwrap();
    let _: Option<String> = c.get("missing").unwrap();
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for field in [
        "redis_version:",
        "tcp_port:",
        "uptime_in_seconds:",
        "connected_clients:2",
        "used_memory:",
        "total_commands_processed:",
        "total_connections_received:",
        "keyspace_hits:1",
        "keyspace_misses:1",
        "db0:keys=1,expires=0",
        "aof_enabled:1",
        "# Keyspace",
    ] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    let only: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(
        only.starts_with("# Keyspace") && !only.contains("# Server"),
        "{only}"
    );
    // QUIT closes this connection only.
    let _: () = redis::cmd("QUIT").query(&mut other).unwrap();
    assert!(redis::cmd("PING").query::<String>(&mut other).is_err());
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

#[test]
fn hello_switches_to_resp3() {
    let s = server();
    let client = redis::Client::open(format!("{}?protocol=resp3", s.url())).unwrap();
    let mut c = client.get_connection().unwrap();
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut c).unwrap();
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 must reply with a map: {hello:?}")
    };
    assert!(fields.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
    // RESP3 null for a missing key.
    assert_eq!(
        redis::cmd("GET")
            .arg("nope")
            .query::<Value>(&mut c)
            .unwrap(),
        Value::Nil
    );
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    let mut raw = s.client();
    assert_eq!(
        expect_err(&mut raw, &["HELLO", "4"]),
        "NOPROTO unsupported protocol version"
    );
}

fn info_number(con: &mut redis::Connection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO memory has no {field}: {info}"))
}

fn big_set(con: &mut redis::Connection, key: &str) {
    let members: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let _: i64 = redis::cmd("SADD")
        .arg(key)
        .arg(&members)
        .query(con)
        .unwrap();
}

/// Issue 22, 4: big values are freed off the shard's executor (Redis's lazy free): always by
/// UNLINK and FLUSHALL/FLUSHDB ASYNC, by DEL and a bare FLUSHALL once `lazyfree-lazy-user-del`
/// / `-user-flush` say so, never by FLUSHALL SYNC; INFO counts what the background thread
/// freed. What clients see is the same either way.
#[test]
fn big_values_are_freed_lazily_as_redis_options_say() {
    let s = MoonServer::start(1, &[]);
    let mut con = s.client();
    let freed = |con: &mut redis::Connection| info_number(con, "lazyfreed_objects");
    assert_eq!(freed(&mut con), 0);
    big_set(&mut con, "a");
    let _: () = con.set("small", "x").unwrap();
    assert_eq!(
        redis::cmd("UNLINK")
            .arg(&["a", "small", "none"])
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    assert!(
        eventually(Duration::from_secs(10), || freed(&mut con) == 1),
        "the set, not the string"
    );
    assert!(!con.exists::<_, bool>("a").unwrap());
    big_set(&mut con, "b");
    assert_eq!(con.del::<_, i64>("b").unwrap(), 1);
    big_set(&mut con, "c");
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "lazyfree-lazy-user-del", "yes"])
        .query(&mut con)
        .unwrap();
    assert_eq!(con.del::<_, i64>("c").unwrap(), 1);
    assert!(
        eventually(Duration::from_secs(10), || freed(&mut con) == 2),
        "DEL as UNLINK"
    );
    for i in 0..100 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    let _: () = redis::cmd("FLUSHALL").arg("SYNC").query(&mut con).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 0);
    for i in 0..100 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    let _: () = redis::cmd("FLUSHALL").arg("ASYNC").query(&mut con).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 0);
    assert!(
        eventually(Duration::from_secs(10), || freed(&mut con) == 3),
        "FLUSHALL ASYNC"
    );
    // One key holding a big set is enough for a flush to go to the background (review
    // finding: the key count decided before).
    big_set(&mut con, "d");
    let _: () = redis::cmd("FLUSHDB").arg("ASYNC").query(&mut con).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || freed(&mut con) == 4),
        "FLUSHDB ASYNC"
    );
    let e = redis::cmd("FLUSHALL")
        .arg("LATER")
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");
    assert_eq!(
        redis::cmd("CONFIG")
            .arg(&["GET", "lazyfree-lazy-user-del"])
            .query::<Vec<String>>(&mut con)
            .unwrap(),
        ["lazyfree-lazy-user-del", "yes"]
    );
    assert_eq!(info_number(&mut con, "lazyfree_pending_objects"), 0);
}

/// DEBUG is refused unless `enable-debug-command` allows it (Redis's text); DEBUG SLEEP stops
/// the connection's shard (the crash matrix's busy shard).
#[test]
fn debug_sleep_needs_enable_debug_command() {
    let s = MoonServer::start(1, &[]);
    let e = redis::cmd("DEBUG")
        .arg(&["SLEEP", "0"])
        .query::<()>(&mut s.client())
        .unwrap_err();
    assert!(e.to_string().contains("DEBUG command not allowed"), "{e}");
    let s = MoonServer::start(1, &["--enable-debug-command", "local"]);
    let mut con = s.client();
    let started = std::time::Instant::now();
    let _: () = redis::cmd("DEBUG")
        .arg(&["SLEEP", "0.2"])
        .query(&mut con)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    let e = redis::cmd("DEBUG")
        .arg(&["SLEEP", "soon"])
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(e.to_string().contains("not a valid float"), "{e}");
    let help: Vec<String> = redis::cmd("DEBUG").arg("HELP").query(&mut con).unwrap();
    assert!(help.iter().any(|l| l.starts_with("SLEEP")), "{help:?}");
}

/// The lines of one INFO section as (field, value).
fn info_section(con: &mut redis::Connection, section: &str) -> Vec<(String, String)> {
    let info: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    info.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// INFO stats has the fields Redis's tools read even where Moon has nothing to count:
/// `migrate_cached_sockets` is 0 (Moon has no MIGRATE, so caches no connection for it; Redis's
/// own test suite waits for 0 there).
#[test]
fn info_stats_has_migrate_cached_sockets() {
    let s = MoonServer::start(1, &[]);
    let mut con = s.client();
    let stats = info_section(&mut con, "stats");
    assert!(
        stats
            .iter()
            .any(|(k, v)| k == "migrate_cached_sockets" && v == "0"),
        "{stats:?}"
    );
}

fn total_errors(con: &mut redis::Connection) -> u64 {
    info_section(con, "stats")
        .into_iter()
        .find(|(k, _)| k == "total_error_replies")
        .and_then(|(_, v)| v.parse().ok())
        .expect("total_error_replies")
}

/// Issue 29: every error reply is counted, by code, whichever shard's connection sent it and
/// wherever it came from — a command, an error inside EXEC's array, a part of a command split
/// across shards, an unknown command — and CONFIG RESETSTAT clears the counts on every shard.
#[test]
fn error_replies_are_counted_by_code_and_reset() {
    let s = MoonServer::start(2, &[]);
    let mut a = s.client();
    let mut b = s.client();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut a).unwrap();
    assert_eq!(total_errors(&mut a), 0);
    assert_eq!(info_section(&mut a, "errorstats"), vec![]);
    let _: () = a.set("str", "x").unwrap();
    // WRONGTYPE on one connection, unknown command and arity errors on another.
    assert!(redis::cmd("LPUSH")
        .arg("str")
        .arg("v")
        .query::<i64>(&mut a)
        .is_err());
    assert!(redis::cmd("NOSUCHCMD").query::<()>(&mut b).is_err());
    assert!(redis::cmd("GET").query::<()>(&mut b).is_err());
    // Two errors inside one EXEC, each counted; EXEC's own reply is not an error.
    // (Over a plain socket: the client library turns an EXEC holding errors into an error.)
    {
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
        raw.write_all(b"MULTI\r\nINCR str\r\nSET k v\r\nLPOP str\r\nEXEC\r\n")
            .unwrap();
        let expected = "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n-ERR value is not an integer or out of range\r\n+OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.len() < expected.len() {
            let n = raw.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }
    // A command split across shards whose parts fail: one error reply.
    let _: () = a.set("{x}s", "y").unwrap();
    assert!(redis::cmd("MGET")
        .arg("str")
        .arg("{x}s")
        .query::<Vec<String>>(&mut a)
        .is_ok());
    assert!(redis::cmd("SINTER")
        .arg("str")
        .arg("{x}s")
        .query::<Vec<String>>(&mut a)
        .is_err());
    let stats = info_section(&mut b, "errorstats");
    assert_eq!(
        stats,
        vec![
            ("errorstat_ERR".to_string(), "count=3".to_string()),
            ("errorstat_WRONGTYPE".to_string(), "count=3".to_string()),
        ],
        "LPUSH, LPOP and SINTER are WRONGTYPE; the unknown command, GET's arity and INCR are ERR"
    );
    assert_eq!(total_errors(&mut b), 6);
    // The default INFO has the section too, as Redis's does.
    let all: String = redis::cmd("INFO").query(&mut b).unwrap();
    assert!(
        all.contains("# Errorstats\r\nerrorstat_ERR:count=3\r\n"),
        "{all}"
    );
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut b).unwrap();
    assert_eq!(total_errors(&mut a), 0);
    assert_eq!(info_section(&mut a, "errorstats"), vec![]);
}

fn client_id(con: &mut redis::Connection) -> i64 {
    redis::cmd("CLIENT").arg("ID").query(con).unwrap()
}

/// Whether CLIENT LIST still shows the client `id`.
fn listed(con: &mut redis::Connection, id: i64) -> bool {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(con).unwrap();
    list.lines().any(|l| l.starts_with(&format!("id={id} ")))
}

/// Issue 29: CLIENT KILL, old form and every filter Redis 7 has (and 7.4's MAXAGE), closes
/// matching clients on every shard — idle, subscribed, blocked in BLPOP — with Redis's
/// replies and errors; the caller is spared unless SKIPME no, then closed after its reply.
#[test]
fn client_kill_closes_matching_clients_on_every_shard() {
    let s = MoonServer::start(2, &[]);
    let mut a = s.client();
    // Several connections, spread over both shards by the server.
    let mut idle: Vec<redis::Connection> = (0..4).map(|_| s.client()).collect();
    let idle_ids: Vec<i64> = idle.iter_mut().map(client_id).collect();
    let mut sub = s.client();
    let sub_id = client_id(&mut sub);
    let _: () = redis::cmd("SUBSCRIBE").arg("ch").query(&mut sub).unwrap();
    let mut blocked = s.client();
    let blocked_id = client_id(&mut blocked);
    let waiter = std::thread::spawn(move || {
        redis::cmd("BLPOP")
            .arg("nothing")
            .arg(0)
            .query::<redis::Value>(&mut blocked)
    });
    assert!(eventually(Duration::from_secs(10), || {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut a).unwrap();
        list.lines()
            .any(|l| l.starts_with(&format!("id={blocked_id} ")) && l.contains("flags=b"))
    }));

    // Errors, in Redis's words; nothing is closed by them.
    assert_eq!(
        expect_err(&mut a, &["CLIENT", "KILL", "TYPE", "bogus"]),
        "ERR Unknown client type 'bogus'"
    );
    assert_eq!(
        expect_err(&mut a, &["CLIENT", "KILL", "USER", "nobody"]),
        "ERR No such user 'nobody'"
    );
    assert_eq!(
        expect_err(&mut a, &["CLIENT", "KILL", "ID", "0"]),
        "ERR client-id should be greater than 0"
    );
    assert_eq!(
        expect_err(&mut a, &["CLIENT", "KILL", "ID", "1", "SKIPME"]),
        "ERR syntax error"
    );
    assert_eq!(
        expect_err(&mut a, &["CLIENT", "KILL", "127.0.0.1:1"]),
        "ERR No such client"
    );

    // By id: one idle client, and the blocked one (its BLPOP ends with the connection).
    let by_id: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(idle_ids[0])
        .query(&mut a)
        .unwrap();
    assert_eq!(by_id, 1);
    let killed_blocked: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(blocked_id)
        .query(&mut a)
        .unwrap();
    assert_eq!(killed_blocked, 1);
    assert!(
        waiter.join().unwrap().is_err(),
        "the blocked client was closed"
    );
    assert!(eventually(Duration::from_secs(10), || !listed(
        &mut a,
        idle_ids[0]
    ) && !listed(
        &mut a, blocked_id
    )));
    assert!(redis::cmd("PING").query::<String>(&mut idle[0]).is_err());
    // The old form, by address.
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query(&mut idle[1])
        .unwrap();
    let addr = info
        .split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .unwrap()
        .to_string();
    let ok: String = redis::cmd("CLIENT")
        .arg("KILL")
        .arg(&addr)
        .query(&mut a)
        .unwrap();
    assert_eq!(ok, "OK");
    assert!(eventually(Duration::from_secs(10), || !listed(
        &mut a,
        idle_ids[1]
    )));
    // TYPE pubsub takes the subscriber only.
    let pubsub: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut a)
        .unwrap();
    assert_eq!(pubsub, 1);
    assert!(eventually(Duration::from_secs(10), || !listed(
        &mut a, sub_id
    )));
    // MAXAGE far in the future matches nobody; TYPE master nobody either.
    for filter in [["MAXAGE", "1000000"], ["TYPE", "master"]] {
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg(&filter[..])
            .query(&mut a)
            .unwrap();
        assert_eq!(n, 0, "{filter:?}");
    }
    // TYPE normal spares the caller (SKIPME yes by default): the two idle clients left.
    let normal: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut a)
        .unwrap();
    assert_eq!(normal, 2);
    assert!(eventually(Duration::from_secs(10), || !listed(
        &mut a,
        idle_ids[2]
    ) && !listed(
        &mut a,
        idle_ids[3]
    )));
    assert_eq!(redis::cmd("PING").query::<String>(&mut a).unwrap(), "PONG");
    // SKIPME no: the caller gets its reply, then its connection closes.
    let me = client_id(&mut a);
    let mine: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(me)
        .arg("SKIPME")
        .arg("no")
        .query(&mut a)
        .unwrap();
    assert_eq!(mine, 1);
    assert!(redis::cmd("PING").query::<String>(&mut a).is_err());
    let mut other = s.client();
    assert!(eventually(Duration::from_secs(10), || !listed(
        &mut other, me
    )));
}

/// Issue 29: CONFIG REWRITE writes what CONFIG SET changed into moon.toml in place —
/// comments, order and untouched lines kept — and a restart from that file comes back with
/// the changes; without a config file it answers Redis's error.
#[test]
fn config_rewrite_keeps_moon_toml_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("moon.toml");
    let original = "# Moon test configuration\n\n# Idle clients are closed after this many seconds.\ntimeout = 0\n\n# Eviction\nmaxmemory-policy = \"noeviction\"   # keep everything\n";
    std::fs::write(&path, original).unwrap();
    let config = path.display().to_string();
    let data = tmp.path().join("data");
    let s = MoonServer::start_in(&data, 1, &["--config", &config]).unwrap();
    let mut c = s.client();
    // Nothing changed: the file stays as it is (the flags the test passes are written too,
    // as Redis writes its running configuration).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg("30")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-samples")
        .arg("9")
        .query(&mut c)
        .unwrap();
    let ok: String = redis::cmd("CONFIG").arg("REWRITE").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.starts_with("# Moon test configuration\n\n# Idle clients are closed after this many seconds.\ntimeout = 30\n\n# Eviction\nmaxmemory-policy = \"allkeys-lru\"   # keep everything\n"),
        "{written}"
    );
    assert!(
        written.contains("\nmaxmemory-samples = \"9\"\n"),
        "{written}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600,
        "the file may hold requirepass"
    );
    drop(c);
    drop(s);
    let s = MoonServer::start_in(&data, 1, &["--config", &config]).unwrap();
    let mut c = s.client();
    for (key, value) in [
        ("maxmemory-policy", "allkeys-lru"),
        ("timeout", "30"),
        ("maxmemory-samples", "9"),
    ] {
        let got: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(key)
            .query(&mut c)
            .unwrap();
        assert_eq!(got, vec![key.to_string(), value.to_string()]);
    }
    let plain = MoonServer::start(1, &[]);
    assert_eq!(
        expect_err(&mut plain.client(), &["CONFIG", "REWRITE"]),
        "ERR The server is running without a config file"
    );
}

fn digest(con: &mut redis::Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(con).unwrap()
}

/// Issue 29: DEBUG DIGEST is equal on two servers holding the same data — whatever the shard
/// count, the order the data was written in or the encodings that order left — and changes
/// with any key, value or deadline; it survives a restart and a rewrite (replay is exact).
/// DEBUG DIGEST-VALUE gives one digest per value, zeros for a missing key.
#[test]
fn debug_digest_is_equal_for_equal_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir1, dir2) = (tmp.path().join("one"), tmp.path().join("two"));
    let debug = ["--enable-debug-command", "yes"];
    let one = MoonServer::start_in(&dir1, 1, &debug).unwrap();
    let two = MoonServer::start_in(&dir2, 2, &debug).unwrap();
    let (mut a, mut b) = (one.client(), two.client());
    let zeros = "0".repeat(40);
    assert_eq!(digest(&mut a), zeros);
    // The same data, written differently: a set grown past its compact size then shrunk on
    // one, built small on the other; fields and members in other orders; a deadline.
    let members: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
    let _: i64 = a.sadd("s", &members).unwrap();
    let _: i64 = a.srem("s", &members[3..]).unwrap();
    let _: i64 = b.sadd("s", &["m2", "m0", "m1"]).unwrap();
    for c in [&mut a, &mut b] {
        let _: () = c.set("k", "v").unwrap();
        let _: () = redis::cmd("SET")
            .arg("t")
            .arg("x")
            .arg("PXAT")
            .arg(4_102_444_800_000u64)
            .query(c)
            .unwrap();
    }
    let _: () = a.hset_multiple("h", &[("f1", "1"), ("f2", "2")]).unwrap();
    let _: () = b.hset_multiple("h", &[("f2", "2"), ("f1", "1")]).unwrap();
    let _: i64 = a.zadd_multiple("z", &[(1.5, "x"), (2.0, "y")]).unwrap();
    let _: i64 = b.zadd_multiple("z", &[(2.0, "y"), (1.5, "x")]).unwrap();
    let _: i64 = a.rpush("l", &["1", "2", "3"]).unwrap();
    let _: i64 = b.rpush("l", &["1", "2", "3"]).unwrap();
    let da = digest(&mut a);
    assert_eq!(da.len(), 40);
    assert_ne!(da, zeros);
    assert_eq!(da, digest(&mut b));
    let values = |c: &mut redis::Connection| -> Vec<String> {
        redis::cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg(&["s", "h", "z", "nope"])
            .query(c)
            .unwrap()
    };
    let va = values(&mut a);
    assert_eq!(va, values(&mut b));
    assert_eq!(va[3], zeros);
    assert_ne!(va[0], va[1]);
    // Any difference shows: a value, a deadline, a key in another database.
    let _: () = redis::cmd("PEXPIREAT")
        .arg("t")
        .arg(4_102_444_800_001u64)
        .query(&mut b)
        .unwrap();
    assert_ne!(digest(&mut b), da);
    let _: () = redis::cmd("PEXPIREAT")
        .arg("t")
        .arg(4_102_444_800_000u64)
        .query(&mut b)
        .unwrap();
    assert_eq!(digest(&mut b), da);
    let _: () = redis::cmd("MOVE").arg("k").arg(1).query(&mut b).unwrap();
    assert_ne!(digest(&mut b), da);
    let _: () = redis::cmd("SELECT").arg(1).query(&mut b).unwrap();
    let _: () = redis::cmd("MOVE").arg("k").arg(0).query(&mut b).unwrap();
    assert_eq!(digest(&mut b), da);
    // Replayed after a restart, and after a rewrite and a restart: the same digest.
    let _: String = redis::cmd("BGREWRITEAOF").query(&mut a).unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        let info: String = redis::cmd("INFO").arg("persistence").query(&mut a).unwrap();
        info.contains("aof_rewrites:1") && info.contains("aof_rewrite_in_progress:0")
    }));
    drop(a);
    drop(one);
    let one = MoonServer::start_in(&dir1, 1, &debug).unwrap();
    assert_eq!(digest(&mut one.client()), da);
    drop(b);
    drop(two);
    let two = MoonServer::start_in(&dir2, 2, &debug).unwrap();
    assert_eq!(digest(&mut two.client()), da);
}

/// Issue 29: INFO's groups as Redis's (no argument and `default` the default sections, one
/// section alone when named), `run_id` and the replication fields exporters read.
#[test]
fn info_sections_and_ids_as_redis() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let server = info_section(&mut c, "server");
    let run_id = &server.iter().find(|(k, _)| k == "run_id").unwrap().1;
    assert!(
        run_id.len() == 40 && run_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{run_id}"
    );
    let repl = info_section(&mut c, "replication");
    let field = |k: &str| repl.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
    assert_eq!(field("role").as_deref(), Some("master"));
    assert_eq!(field("master_repl_offset").as_deref(), Some("0"));
    assert_eq!(field("master_replid").map(|v| v.len()), Some(40));
    assert_ne!(field("master_replid").as_ref(), Some(run_id));
    for group in ["", "default", "all", "everything"] {
        let mut cmd = redis::cmd("INFO");
        if !group.is_empty() {
            cmd.arg(group);
        }
        let info: String = cmd.query(&mut c).unwrap();
        for section in [
            "# Server",
            "# Stats",
            "# Replication",
            "# CPU",
            "# Errorstats",
            "# Keyspace",
        ] {
            assert!(info.contains(section), "INFO {group} lacks {section}");
        }
        assert_eq!(info.matches("used_cpu_user:").count(), 1, "INFO {group}");
    }
    let cpu: String = redis::cmd("INFO").arg("cpu").query(&mut c).unwrap();
    assert!(
        cpu.contains("used_cpu_user")
            && !cpu.contains("used_memory")
            && !cpu.contains("master_repl_offset")
    );
    let two: String = redis::cmd("INFO")
        .arg("cpu")
        .arg("replication")
        .query(&mut c)
        .unwrap();
    assert!(
        two.contains("used_cpu_user")
            && two.contains("master_repl_offset")
            && !two.contains("used_memory:")
    );
}

/// Sends `input` on a fresh socket and reads exactly `expected.len()` bytes back.
fn raw_exchange(s: &MoonServer, input: &str, expected: &str) {
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
    // A reply that never comes fails the test instead of hanging it.
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(input.as_bytes()).unwrap();
    let mut got = vec![0u8; expected.len()];
    raw.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expected, "after {input:?}");
}

/// CLIENT REPLY as Redis's introspection unit checks it: SKIP drops the next reply, OFF all
/// until ON, and ON right after SKIP is answered (it clears SKIP); CLIENT KILL without
/// arguments is an arity error.
#[test]
fn client_reply_modes_and_kill_arity() {
    let s = MoonServer::start(1, &[]);
    raw_exchange(
        &s,
        "CLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nPING\r\n",
        "+OK\r\n+PONG\r\n",
    );
    raw_exchange(&s, "CLIENT REPLY SKIP\r\nSET a 1\r\nPING\r\n", "+PONG\r\n");
    raw_exchange(
        &s,
        "CLIENT REPLY OFF\r\nPING\r\nGET a\r\nCLIENT REPLY ON\r\nGET a\r\n",
        "+OK\r\n$1\r\n1\r\n",
    );
    assert_eq!(
        expect_err(&mut s.client(), &["CLIENT", "KILL"]),
        "ERR wrong number of arguments for 'client|kill' command"
    );
}

/// Review findings (issue 29): a client that kills itself inside MULTI/EXEC runs the whole
/// transaction and gets the whole reply before it is closed; an error text without a code in
/// its first 32 bytes counts as ERR (a script's text never becomes an errorstats key).
#[test]
fn a_client_killing_itself_in_a_transaction_gets_it_whole() {
    use std::io::{Read, Write};
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    // Keys on one shard (one record), then keys on both shards (a cross-shard transaction).
    for (k1, k2) in [("{y}a", "{y}b"), ("c1", "{x}c2")] {
        let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw.write_all(b"CLIENT ID\r\n").unwrap();
        let mut id = Vec::new();
        let mut byte = [0u8; 1];
        while !id.ends_with(b"\r\n") {
            raw.read_exact(&mut byte).unwrap();
            id.push(byte[0]);
        }
        let id = String::from_utf8_lossy(&id[1..id.len() - 2]).to_string();
        let tx = format!(
            "MULTI\r\nCLIENT KILL ID {id} SKIPME no\r\nINCR {k1}\r\nINCR {k2}\r\nEXEC\r\nINCR {k1}\r\n"
        );
        raw.write_all(tx.as_bytes()).unwrap();
        let mut got = Vec::new();
        raw.read_to_end(&mut got).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:1\r\n:1\r\n:1\r\n",
            "the transaction whole, nothing after it ({k1}, {k2})"
        );
        assert_eq!(c.get::<_, i64>(k1).unwrap(), 1);
        assert_eq!(c.get::<_, i64>(k2).unwrap(), 1);
    }

    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let long = "x".repeat(100);
    for i in 0..3 {
        let script = format!("return redis.error_reply('{long}{i}')");
        assert!(redis::cmd("EVAL")
            .arg(script)
            .arg(0)
            .query::<()>(&mut c)
            .is_err());
    }
    assert!(redis::cmd("EVAL")
        .arg("return redis.error_reply('MYCODE something')")
        .arg(0)
        .query::<()>(&mut c)
        .is_err());
    assert_eq!(
        info_section(&mut c, "errorstats"),
        vec![
            ("errorstat_ERR".to_string(), "count=3".to_string()),
            ("errorstat_MYCODE".to_string(), "count=1".to_string()),
        ]
    );
}
