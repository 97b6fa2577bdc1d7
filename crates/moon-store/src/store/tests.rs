use super::*;

fn run(store: &mut Store, now: u64, line: &str) -> Frame {
    let args: Vec<Bytes> = line
        .split_whitespace()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect();
    store.execute(&args, now)
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Simple(s) => format!("+{s}"),
        Frame::Error(e) => format!("-{e}"),
        Frame::StaticError(e) => format!("-{e}"),
        Frame::Integer(i) => format!(":{i}"),
        Frame::Bulk(b) => format!("${}", String::from_utf8_lossy(b)),
        Frame::Null => "(nil)".into(),
        Frame::Array(items) => format!(
            "[{}]",
            items.iter().map(text).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    }
}

const T: u64 = 1_700_000_000_000;

#[test]
fn set_get_and_options() {
    let mut s = Store::default();
    assert_eq!(text(&run(&mut s, T, "SET k v")), "+OK");
    assert_eq!(text(&run(&mut s, T, "GET k")), "$v");
    assert_eq!(text(&run(&mut s, T, "SET k w NX")), "(nil)");
    assert_eq!(text(&run(&mut s, T, "SET k w XX GET")), "$v");
    assert_eq!(text(&run(&mut s, T, "SET nokey w XX")), "(nil)");
    assert_eq!(text(&run(&mut s, T, "SET k x EX 10")), "+OK");
    assert_eq!(text(&run(&mut s, T, "TTL k")), ":10");
    assert_eq!(text(&run(&mut s, T, "SET k y KEEPTTL")), "+OK");
    assert_eq!(text(&run(&mut s, T + 1000, "PTTL k")), ":9000");
    assert_eq!(text(&run(&mut s, T, "SET k y PXAT 1700000005000")), "+OK");
    assert_eq!(text(&run(&mut s, T, "PEXPIRETIME k")), ":1700000005000");
    assert_eq!(text(&run(&mut s, T, "EXPIRETIME k")), ":1700000005");
    assert_eq!(
        text(&run(&mut s, T + 5000, "GET k")),
        "(nil)",
        "expired at its deadline"
    );
    assert_eq!(text(&run(&mut s, T, "SET k v EXAT 1700000010")), "+OK");
    assert_eq!(text(&run(&mut s, T, "PERSIST k")), ":1");
    assert_eq!(text(&run(&mut s, T, "TTL k")), ":-1");
    assert_eq!(text(&run(&mut s, T, "TTL missing")), ":-2");
    assert_eq!(text(&run(&mut s, T, "SETNX k z")), ":0");
    assert_eq!(text(&run(&mut s, T, "SETNX k2 z")), ":1");
    assert_eq!(text(&run(&mut s, T, "SETEX k3 5 v")), "+OK");
    assert_eq!(text(&run(&mut s, T, "PSETEX k4 500 v")), "+OK");
    assert_eq!(text(&run(&mut s, T, "PTTL k4")), ":500");
    assert_eq!(text(&run(&mut s, T, "GETSET k2 n")), "$z");
    assert_eq!(text(&run(&mut s, T, "GETDEL k2")), "$n");
    assert_eq!(text(&run(&mut s, T, "EXISTS k2")), ":0");
    assert_eq!(text(&run(&mut s, T, "GETEX k EX 100")), "$v");
    assert_eq!(text(&run(&mut s, T, "TTL k")), ":100");
    assert_eq!(text(&run(&mut s, T, "GETEX k PERSIST")), "$v");
    assert_eq!(text(&run(&mut s, T, "TTL k")), ":-1");
}

#[test]
fn numbers_and_strings() {
    let mut s = Store::default();
    assert_eq!(text(&run(&mut s, T, "INCR n")), ":1");
    assert_eq!(text(&run(&mut s, T, "INCRBY n 41")), ":42");
    assert_eq!(text(&run(&mut s, T, "DECR n")), ":41");
    assert_eq!(text(&run(&mut s, T, "DECRBY n 50")), ":-9");
    assert_eq!(text(&run(&mut s, T, "INCRBYFLOAT f 10.5")), "$10.5");
    assert_eq!(text(&run(&mut s, T, "INCRBYFLOAT f 0.5")), "$11");
    assert_eq!(text(&run(&mut s, T, "SET big 9223372036854775807")), "+OK");
    assert_eq!(text(&run(&mut s, T, "APPEND a hello")), ":5");
    assert_eq!(text(&run(&mut s, T, "APPEND a _world")), ":11");
    assert_eq!(text(&run(&mut s, T, "STRLEN a")), ":11");
    assert_eq!(text(&run(&mut s, T, "GETRANGE a 0 4")), "$hello");
    assert_eq!(text(&run(&mut s, T, "GETRANGE a -5 -1")), "$world");
    assert_eq!(text(&run(&mut s, T, "GETRANGE a 100 200")), "$");
    assert_eq!(text(&run(&mut s, T, "SETRANGE a 6 WORLD")), ":11");
    assert_eq!(text(&run(&mut s, T, "GET a")), "$hello_WORLD");
    assert_eq!(text(&run(&mut s, T, "SETRANGE z 2 x")), ":3");
    assert_eq!(run(&mut s, T, "GET z"), Frame::bulk(&b"\0\0x"[..]));
    assert_eq!(text(&run(&mut s, T, "MSET m1 a m2 b")), "+OK");
    assert_eq!(text(&run(&mut s, T, "MGET m1 nope m2")), "[$a, (nil), $b]");
    assert_eq!(text(&run(&mut s, T, "MSETNX m1 x m3 y")), ":0");
    assert_eq!(text(&run(&mut s, T, "MSETNX m3 x m4 y")), ":1");
}

#[test]
fn keys_commands() {
    let mut s = Store::default();
    run(&mut s, T, "MSET a 1 b 2 c 3");
    assert_eq!(text(&run(&mut s, T, "DEL a nope")), ":1");
    assert_eq!(text(&run(&mut s, T, "UNLINK b")), ":1");
    assert_eq!(text(&run(&mut s, T, "EXISTS c c nope")), ":2");
    assert_eq!(text(&run(&mut s, T, "TOUCH c")), ":1");
    assert_eq!(text(&run(&mut s, T, "TYPE c")), "+string");
    assert_eq!(text(&run(&mut s, T, "TYPE nope")), "+none");
    assert_eq!(text(&run(&mut s, T, "RENAME c d")), "+OK");
    assert_eq!(text(&run(&mut s, T, "GET d")), "$3");
    assert_eq!(text(&run(&mut s, T, "SET e 5")), "+OK");
    assert_eq!(text(&run(&mut s, T, "RENAMENX d e")), ":0");
    assert_eq!(text(&run(&mut s, T, "RENAMENX d f")), ":1");
    assert_eq!(text(&run(&mut s, T, "EXPIRE f 100")), ":1");
    assert_eq!(text(&run(&mut s, T, "EXPIRE f 200 NX")), ":0");
    assert_eq!(text(&run(&mut s, T, "EXPIRE f 200 GT")), ":1");
    assert_eq!(text(&run(&mut s, T, "EXPIRE f 100 GT")), ":0");
    assert_eq!(text(&run(&mut s, T, "PEXPIRE f 100 LT")), ":1");
    assert_eq!(text(&run(&mut s, T, "PTTL f")), ":100");
    assert_eq!(text(&run(&mut s, T, "EXPIREAT e 1")), ":1");
    assert_eq!(
        text(&run(&mut s, T, "EXISTS e")),
        ":0",
        "a deadline in the past deletes"
    );
    assert_eq!(text(&run(&mut s, T, "PEXPIREAT nope 1")), ":0");
    run(&mut s, T, "MSET user:1 a user:2 b other c");
    let mut keys = match run(&mut s, T, "KEYS user:*") {
        Frame::Array(a) => a.into_iter().map(|f| text(&f)).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    keys.sort();
    assert_eq!(keys, vec!["$user:1", "$user:2"]);
    assert_eq!(text(&run(&mut s, T, "DBSIZE")), ":4");
    assert!(matches!(run(&mut s, T, "RANDOMKEY"), Frame::Bulk(_)));
    assert_eq!(text(&run(&mut s, T, "FLUSHALL")), "+OK");
    assert_eq!(text(&run(&mut s, T, "DBSIZE")), ":0");
    assert_eq!(text(&run(&mut s, T, "RANDOMKEY")), "(nil)");
}

#[test]
fn shard_local_scan_visits_everything() {
    let mut s = Store::default();
    for i in 0..50 {
        run(&mut s, T, &format!("SET key:{i} v"));
    }
    let mut bound = "0".to_string();
    let mut seen = std::collections::HashSet::new();
    loop {
        let Frame::Array(parts) = run(&mut s, T, &format!("SCAN {bound} MATCH key:* COUNT 7"))
        else {
            panic!()
        };
        let (Frame::Bulk(next), Frame::Array(keys)) = (&parts[0], &parts[1]) else {
            panic!()
        };
        for k in keys {
            seen.insert(text(k));
        }
        bound = String::from_utf8(next.to_vec()).unwrap();
        if bound == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 50);
}

#[test]
fn writes_are_logged_with_absolute_times() {
    let mut s = Store::default();
    s.set_record_writes(true);
    run(&mut s, T, "SET a 1 EX 10");
    run(&mut s, T, "GET a");
    run(&mut s, T, "SETNX a 2");
    run(&mut s, T, "INCR a");
    run(&mut s, T, "EXPIRE a 5");
    run(&mut s, T, "DEL nope");
    run(&mut s, T, "DEL a");
    let log: Vec<String> = s
        .take_log()
        .iter()
        .map(|c| {
            c.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        log,
        vec![
            "SET a 1 PXAT 1700000010000",
            "SET a 2 PXAT 1700000010000",
            "PEXPIREAT a 1700000005000",
            "DEL a"
        ]
    );
}

/// The exact error replies, as Redis 7 gives them.
#[test]
fn error_replies() {
    let mut s = Store::default();
    run(&mut s, T, "SET str abc");
    run(&mut s, T, "SET max 9223372036854775807");
    let cases = [
        "GET",
        "SET k",
        "NOSUCHCMD a b",
        "SET k v EX 0",
        "SET k v EX abc",
        "SET k v NX XX",
        "SET k v EX 10 PX 10",
        "SET k v FOO",
        "INCR str",
        "INCR max",
        "INCRBY k abc",
        "INCRBYFLOAT str 1",
        "INCRBYFLOAT k abc",
        "SETEX k -1 v",
        "GETEX str FOO",
        "MSET a",
        "RENAME nope x",
        "SETRANGE str -1 x",
        "SETRANGE str 536870911 xx",
        "EXPIRE str 10 NX XX",
        "EXPIRE str 10 GT LT",
        "EXPIRE str 10 FOO",
        "EXPIRE str 9223372036854775807",
        "SCAN abc",
        "SCAN 0 COUNT 0",
        "FLUSHALL foo",
    ];
    let out: Vec<String> = cases
        .iter()
        .map(|c| format!("{c} => {}", text(&run(&mut s, T, c))))
        .collect();
    insta::assert_snapshot!(out.join("\n"));
}

/// A store limited to about `keys` small keys ("kN" -> "v") under `policy`.
fn limited(policy: crate::EvictionPolicy, keys: usize) -> Store {
    let mut s = Store::default();
    s.set_record_writes(true);
    s.set_memory_limit(crate::MemoryLimit {
        max: keys * (crate::keyspace::ENTRY_OVERHEAD + 5),
        policy,
        samples: 64,
    });
    s
}

#[test]
fn noeviction_refuses_writes_over_maxmemory_but_reads_and_deletes_work() {
    let mut s = limited(crate::EvictionPolicy::NoEviction, 3);
    for i in 0..4 {
        assert_eq!(text(&run(&mut s, T, &format!("SET k{i} v"))), "+OK");
    }
    // Now over the limit: a write that may grow memory is refused, nothing is logged.
    s.take_log();
    assert_eq!(
        text(&run(&mut s, T, "SET k9 v")),
        "-OOM command not allowed when used memory > 'maxmemory'."
    );
    assert_eq!(
        text(&run(&mut s, T, "APPEND k0 x")),
        "-OOM command not allowed when used memory > 'maxmemory'."
    );
    assert!(s.take_log().is_empty());
    assert_eq!(text(&run(&mut s, T, "GET k0")), "$v");
    assert_eq!(text(&run(&mut s, T, "DEL k0 k1")), ":2");
    assert_eq!(text(&run(&mut s, T, "SET k9 v")), "+OK");
    assert_eq!(s.stats().evicted_keys, 0);
}

#[test]
fn allkeys_lru_evicts_the_key_read_longest_ago_and_logs_it() {
    let mut s = limited(crate::EvictionPolicy::AllKeysLru, 3);
    // A second apart: access times are kept in seconds, as Redis's LRU clock.
    for i in 0..3 {
        run(&mut s, T + i * 1000, &format!("SET k{i} v"));
    }
    // k0 was written first but read last: k1 is now the least recently used.
    run(&mut s, T + 10_000, "GET k0");
    run(&mut s, T + 11_000, "GET k2");
    s.take_log();
    run(&mut s, T + 20_000, "SET k3 v"); // 4 keys: over by one
    run(&mut s, T + 21_000, "SET k4 v"); // makes room first
    let log: Vec<String> = s
        .take_log()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.concat()).into_owned())
        .collect();
    assert_eq!(log, ["SETk3v", "DELk1", "SETk4v"]);
    assert_eq!(s.stats().evicted_keys, 1);
    // Over by one again: a read makes room too, as Redis evicts before every command.
    assert_eq!(text(&run(&mut s, T + 30_000, "EXISTS k1")), ":0");
    assert_eq!(s.stats().evicted_keys, 2);
    assert_eq!(s.take_log().len(), 1, "the read's eviction is logged");
}

#[test]
fn volatile_ttl_evicts_the_nearest_deadline_and_volatile_policies_spare_keys_without_ttl() {
    let mut s = limited(crate::EvictionPolicy::VolatileTtl, 3);
    run(&mut s, T, "SET far v PX 90000");
    run(&mut s, T, "SET near v PX 50000");
    run(&mut s, T, "SET keep v");
    run(&mut s, T, "SET k3 v");
    s.take_log();
    run(&mut s, T, "SET k4 v");
    let log: Vec<String> = s
        .take_log()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.concat()).into_owned())
        .collect();
    assert_eq!(log, ["DELnear", "SETk4v"], "the nearest deadline went");
    assert_eq!(text(&run(&mut s, T, "EXISTS keep k3 k4")), ":3");

    let mut s = limited(crate::EvictionPolicy::VolatileLru, 2);
    for i in 0..3 {
        run(&mut s, T, &format!("SET k{i} v"));
    }
    assert_eq!(
        text(&run(&mut s, T, "SET k9 v")),
        "-OOM command not allowed when used memory > 'maxmemory'.",
        "no key with a TTL: nothing may go"
    );
}

#[test]
fn one_command_evicts_a_bounded_batch_and_the_next_ones_go_on() {
    let mut s = limited(crate::EvictionPolicy::AllKeysRandom, 20_000);
    for i in 0..20_000 {
        run(&mut s, T, &format!("SET k{i} v"));
    }
    s.take_log();
    s.set_memory_limit(crate::MemoryLimit {
        max: 1,
        policy: crate::EvictionPolicy::AllKeysRandom,
        samples: 5,
    });
    let before = s.stats().evicted_keys as usize;
    assert_eq!(
        text(&run(&mut s, T, "SET new v")),
        "+OK",
        "progress was made: it runs"
    );
    let dels = s.take_log().iter().filter(|c| c[0] == "DEL").count();
    assert_eq!(dels, super::EVICTION_BATCH.0);
    run(&mut s, T, "SET new2 v");
    assert_eq!(
        s.stats().evicted_keys as usize - before,
        2 * super::EVICTION_BATCH.0
    );
}

#[test]
fn hash_field_deadlines_answer_as_redis_7_4_and_expiry_is_logged() {
    let mut s = Store::default();
    s.set_record_writes(true);
    run(&mut s, T, "HSET h a 1 b 2 c 3");
    assert_eq!(
        text(&run(&mut s, T, "HPEXPIRE h 100 FIELDS 2 a nosuch")),
        "[:1, :-2]"
    );
    assert_eq!(text(&run(&mut s, T, "HTTL h FIELDS 2 a b")), "[:1, :-1]");
    assert_eq!(text(&run(&mut s, T + 40, "HPTTL h FIELDS 1 a")), "[:60]");
    assert_eq!(
        text(&run(&mut s, T, "HPEXPIRETIME h FIELDS 1 a")),
        format!("[:{}]", T + 100)
    );
    assert_eq!(text(&run(&mut s, T, "HTTL nosuch FIELDS 1 a")), "[:-2]");
    // Conditions: NX only without a deadline, XX only with one, GT/LT against it (none =
    // forever).
    assert_eq!(
        text(&run(&mut s, T, "HPEXPIRE h 500 NX FIELDS 2 a b")),
        "[:0, :1]"
    );
    assert_eq!(
        text(&run(&mut s, T, "HPEXPIRE h 50 XX FIELDS 2 a c")),
        "[:1, :0]"
    );
    assert_eq!(text(&run(&mut s, T, "HPEXPIRE h 10 GT FIELDS 1 a")), "[:0]");
    assert_eq!(
        text(&run(&mut s, T, "HPEXPIRE h 10 LT FIELDS 2 a c")),
        "[:1, :1]"
    );
    assert_eq!(
        text(&run(&mut s, T, "HPERSIST h FIELDS 3 c c2 b")),
        "[:1, :-2, :1]"
    );
    s.take_log();
    // HINCRBY keeps a deadline, HSET clears it.
    run(&mut s, T, "HPEXPIRE h 5000 FIELDS 1 c");
    run(&mut s, T, "HINCRBY h c 1");
    assert_eq!(text(&run(&mut s, T, "HPTTL h FIELDS 1 c")), "[:5000]");
    run(&mut s, T, "HSET h c 9");
    assert_eq!(text(&run(&mut s, T, "HPTTL h FIELDS 1 c")), "[:-1]");
    s.take_log();
    // a's deadline (T + 10) passes: a read removes it and the removal is logged.
    assert_eq!(text(&run(&mut s, T + 10, "HGET h a")), "(nil)");
    let log: Vec<String> = s
        .take_log()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.join(&b' ')).into_owned())
        .collect();
    assert_eq!(log, ["HDEL h a"]);
    // A time already passed deletes the field (2); the last field takes the key with it.
    assert_eq!(
        text(&run(&mut s, T + 10, "HPEXPIRE h 0 FIELDS 2 b c")),
        "[:2, :2]"
    );
    assert_eq!(text(&run(&mut s, T + 10, "EXISTS h")), ":0");
    // Errors, in Redis's words.
    run(&mut s, T, "HSET e f v");
    assert_eq!(
        text(&run(&mut s, T, "HEXPIRE e 10 FIELD 1 f")),
        "-ERR Mandatory argument FIELDS is missing or not at the right position"
    );
    assert_eq!(
        text(&run(&mut s, T, "HEXPIRE e 10 FIELDS 2 f")),
        "-ERR The `numfields` parameter must match the number of arguments"
    );
    assert_eq!(
        text(&run(&mut s, T, "HEXPIRE e 10 FIELDS 0 f")),
        "-ERR Parameter `numFields` should be greater than 0"
    );
    assert_eq!(
        text(&run(&mut s, T, "HEXPIRE e -1 FIELDS 1 f")),
        "-ERR invalid expire time, must be >= 0"
    );
    assert_eq!(
        text(&run(&mut s, T, "HTTL e FIELDS x f")),
        "-ERR Number of fields must be a positive integer"
    );
    run(&mut s, T, "SET str v");
    assert_eq!(
        text(&run(&mut s, T, "HTTL str FIELDS 1 f")),
        format!("-{}", reply::WRONGTYPE)
    );
}

#[test]
fn active_expiry_reclaims_hash_fields_without_reading_them() {
    let mut s = Store::default();
    s.set_record_writes(true);
    for i in 0..50 {
        run(&mut s, T, &format!("HSET h{i} a 1 b 2"));
        run(&mut s, T, &format!("HPEXPIRE h{i} 100 FIELDS 1 a"));
    }
    run(&mut s, T, "HSET gone only 1");
    run(&mut s, T, "HPEXPIRE gone 100 FIELDS 1 only");
    s.take_log();
    assert_eq!(s.expire_cycle(T + 99, 1000), 0);
    assert_eq!(s.expire_cycle(T + 100, 1000), 51);
    let log = s.take_log();
    assert_eq!(log.len(), 51);
    assert!(log.iter().all(|c| c[0] == "HDEL"));
    assert_eq!(text(&run(&mut s, T + 200, "HLEN h7")), ":1");
    assert_eq!(text(&run(&mut s, T + 200, "EXISTS gone")), ":0");
}

/// Found by the crash matrix's model: a cross-shard COPY read a hash whose fields had all
/// expired (unnoticed yet) as present, replaced the destination and answered 1. The reads
/// that serve cross-shard commands see such a hash as absent, as a command would.
#[test]
fn cross_shard_reads_see_a_hash_whose_fields_all_expired_as_absent() {
    let mut s = Store::default();
    run(&mut s, T, "HSET h a 1 b 2");
    run(&mut s, T, "HPEXPIRE h 100 FIELDS 1 a");
    let (v, _) = s.peek_entry(b"h", T + 100).expect("b is live");
    assert_eq!(v.canonical(), "hash:[(b\"b\", b\"2\", None)]");
    run(&mut s, T, "HPEXPIRE h 100 FIELDS 1 b");
    assert!(s.peek_entry(b"h", T + 100).is_none());
    assert_eq!(s.type_at(b"h", T + 100), None);
    assert_eq!(s.type_at(b"h", T + 99), Some("hash"));
    assert_eq!(
        s.set_members(b"h", T + 100).ok(),
        Some(None),
        "absent, not WRONGTYPE"
    );
}

/// An error that names its command names the one running (the store derives it from the
/// running command's spec).
#[test]
fn expire_errors_name_the_running_command() {
    let mut s = Store::default();
    for (cmd, name) in [("SETEX", "setex"), ("PSETEX", "psetex")] {
        assert_eq!(
            text(&run(&mut s, T, &format!("{cmd} k 0 v"))),
            format!("-ERR invalid expire time in '{name}' command")
        );
    }
}

/// Review finding: a lex range over members with different scores answered by the set's
/// shape, so replay (another form, another tree) removed other members. Both forms agree now.
#[test]
fn lex_ranges_over_mixed_scores_do_not_depend_on_the_form() {
    let answers = |entries: usize| {
        let mut s = Store::default();
        s.set_encodings(crate::value::Encodings {
            zset_max_listpack_entries: entries,
            ..Default::default()
        });
        run(&mut s, T, "ZADD k 1 c 2 a 3 b 4 e 5 d");
        let enc = text(&run(&mut s, T, "OBJECT ENCODING k"));
        (
            enc,
            [
                "ZRANGEBYLEX k - [b",
                "ZREVRANGEBYLEX k + (b LIMIT 1 5",
                "ZLEXCOUNT k [a [d",
                "ZREMRANGEBYLEX k - [c",
                "ZRANGE k 0 -1",
            ]
            .map(|c| text(&run(&mut s, T, c))),
        )
    };
    let (small, a) = answers(128);
    let (big, b) = answers(0);
    assert_eq!((small.as_str(), big.as_str()), ("$listpack", "$skiplist"));
    assert_eq!(a, b);
    assert_eq!(a[0], "[$a, $b]");
    assert_eq!(a[4], "[$e, $d]");
}

/// Review findings: sums go from the smallest input up, as in Redis; scores out of a double's
/// range are refused as Redis's string2d refuses them.
#[test]
fn sorted_set_sums_and_score_ranges_as_redis() {
    let mut s = Store::default();
    run(&mut s, T, "ZADD a 0.1 m 0 x 0 y");
    run(&mut s, T, "ZADD b 0.2 m 0 x");
    run(&mut s, T, "ZADD c 0.3 m");
    assert_eq!(text(&run(&mut s, T, "ZSCORE a m")), "Double(0.1)");
    let u = run(&mut s, T, "ZUNION 3 a b c");
    assert_eq!(text(&u), "[$x, $y, $m]");
    run(&mut s, T, "ZUNIONSTORE d 3 a b c");
    assert_eq!(text(&run(&mut s, T, "ZSCORE d m")), "Double(0.6)");
    for bad in [
        "ZADD k 1e400 m",
        "ZADD k 1e-400 m",
        "ZINCRBY k 1e999 m",
        "ZUNION 1 a WEIGHTS 1e400",
    ] {
        assert!(text(&run(&mut s, T, bad)).starts_with("-ERR"), "{bad}");
    }
    assert_eq!(text(&run(&mut s, T, "ZADD k inf m -inf n 1e-300 o")), ":3");
}

#[test]
fn a_flush_breaks_the_watch_of_a_key_it_removed_only() {
    let mut s = Store::default();
    run(&mut s, T, "SET x 1");
    let tx = s.watch(b"x", T);
    let ty = s.watch(b"y", T);
    run(&mut s, T, "FLUSHDB");
    assert!(!s.watch_intact(b"x", tx, T));
    assert!(s.watch_intact(b"y", ty, T));
}

/// ZADD of an equal score (0 over -0 included, as Redis compares them) changes and logs
/// nothing, with or without flags.
#[test]
fn zadd_of_an_equal_score_changes_and_logs_nothing() {
    let mut s = Store::default();
    s.set_record_writes(true);
    run(&mut s, T, "ZADD k 0 m 1 n");
    s.take_log();
    assert_eq!(text(&run(&mut s, T, "ZADD k -0 m 1 n")), ":0");
    assert_eq!(text(&run(&mut s, T, "ZADD k CH -0 m")), ":0");
    assert_eq!(text(&run(&mut s, T, "ZADD k XX CH 1 n")), ":0");
    assert!(s.take_log().is_empty());
    assert_eq!(text(&run(&mut s, T, "ZSCORE k m")), "Double(0.0)");
    assert_eq!(text(&run(&mut s, T, "ZADD k CH 2 n 3 o")), ":2");
    assert_eq!(s.take_log().len(), 1);
}

/// A log holds a script's effects, never the script: replaying one that names EVAL (an old
/// Redis AOF, a damaged file) is refused rather than run (review finding: migrate-aof ran
/// them with the clock at 0).
#[test]
fn replay_refuses_scripts() {
    let mut store = Store::default();
    for words in [
        &["EVAL", "return redis.call('set', 'k', 'v')", "0"][..],
        &["EVALSHA", "0000000000000000000000000000000000000000", "0"][..],
    ] {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::from(w.to_string())).collect();
        assert_eq!(
            store.execute(&args, crate::NO_EXPIRY_CHECK),
            Frame::StaticError(crate::run::NOT_REPLAYED)
        );
    }
    assert!(store.keyspace_of(0).is_none_or(|ks| ks.is_empty()));
}

/// Libraries restored together are checked as FUNCTION LOAD checks them: a crafted set where
/// two libraries register one function, or one library twice, is refused whole (review
/// finding: startup skipped the check).
#[test]
fn restored_libraries_are_checked_together() {
    use std::sync::Arc;
    let lib = |name: &str, f: &str| -> Arc<[u8]> {
        Arc::from(
            format!("#!lua name={name}\nredis.register_function('{f}', function() return 1 end)")
                .as_bytes(),
        )
    };
    let e = crate::functions::restore(&[lib("a", "f"), lib("b", "F")]).unwrap_err();
    assert_eq!(e, Frame::Error("ERR Function F already exists".into()));
    let e = crate::functions::restore(&[lib("a", "f"), lib("A", "g")]).unwrap_err();
    assert_eq!(e, Frame::Error("ERR Library 'A' already exists".into()));
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn get_bytes(s: &mut Store, key: &str) -> Bytes {
    match run(s, T, &format!("GET {key}")) {
        Frame::Bulk(b) => b,
        other => panic!("GET {key}: {other:?}"),
    }
}

/// Fixtures taken from redis-server 7.0.15: `PFADD k` then `PFADD k e0 .. e6`, `e7 .. e13`...
/// up to `n` elements with `hll-sparse-max-bytes` = `max`; the string's length and FNV-1a
/// hash, PFCOUNT's answer, and the hash of the string after it (the cache written in).
#[test]
fn hyperloglogs_are_redis_s_bytes_and_counts() {
    const REDIS: &[(usize, usize, usize, u64, i64, u64)] = &[
        (3000, 0, 18, 0x524bc36d036c0579, 0, 0xfd8f436a8f6e62f9),
        (3000, 1, 21, 0xfffb6faeff77f7cd, 1, 0x546d16fdfd2c805a),
        (3000, 5, 33, 0x4ce146778f566ec1, 5, 0x0f45ad2060ea2432),
        (3000, 100, 285, 0xb8de76dab4a4065e, 100, 0x40dec5e3b1513cfa),
        (
            3000,
            1000,
            1906,
            0x5935de0232806824,
            1008,
            0x4ded8ea0046b668d,
        ),
        (
            3000,
            3000,
            12304,
            0x1b31e02ee1b56bce,
            2979,
            0xb581fa7fa1f68d1c,
        ),
        (
            3000,
            10000,
            12304,
            0x7378cbab5ab5c44b,
            9973,
            0x91141a0852dc0034,
        ),
        (200, 5, 33, 0x4ce146778f566ec1, 5, 0x0f45ad2060ea2432),
        (200, 100, 12304, 0x193d1a0650f1c5bf, 100, 0x019a893d5cd6cdb3),
        (
            200,
            1000,
            12304,
            0xb663d6cdbb09d5a6,
            1008,
            0x2390895aa41243f7,
        ),
    ];
    for &(max, n, len, before, count, after) in REDIS {
        let mut s = Store::default();
        let mut enc = s.encodings();
        enc.hll_sparse_max_bytes = max;
        s.set_encodings(enc);
        run(&mut s, T, "PFADD k");
        for start in (0..n).step_by(7) {
            let elements: Vec<String> =
                (start..n.min(start + 7)).map(|j| format!("e{j}")).collect();
            run(&mut s, T, &format!("PFADD k {}", elements.join(" ")));
        }
        let b = get_bytes(&mut s, "k");
        assert_eq!(
            (b.len(), fnv1a(&b)),
            (len, before),
            "max {max}, {n} elements"
        );
        assert_eq!(text(&run(&mut s, T, "PFCOUNT k")), format!(":{count}"));
        assert_eq!(
            fnv1a(&get_bytes(&mut s, "k")),
            after,
            "max {max}, {n}: cache"
        );
    }
}

/// What PFADD, PFCOUNT (its cache), PFMERGE and PFDEBUG logged rebuilds the same strings.
#[test]
fn hyperloglog_effects_replay_to_the_same_bytes() {
    let mut live = Store::default();
    live.set_record_writes(true);
    let mut log = Vec::new();
    let script = [
        "PFADD a x y z",
        "PFCOUNT a",
        "PFADD b 1 2 3 4 5 6 7 8 9",
        "PFDEBUG TODENSE b",
        "PFADD b 10 11",
        "PFCOUNT b",
        "PFMERGE c a b",
        "PFCOUNT c",
        "PFMERGE a a",
        "PFCOUNT a b c",
        "PFDEBUG GETREG a",
    ];
    for line in script {
        let reply = run(&mut live, T, line);
        assert!(!reply.is_error(), "{line}: {reply:?}");
        log.extend(live.take_log());
    }
    assert!(
        log.iter().any(|c| c[0] == "PFCOUNT"),
        "a cache refresh is logged"
    );
    let mut replayed = Store::default();
    for cmd in &log {
        assert!(!replayed.execute(cmd, T).is_error(), "{cmd:?}");
    }
    for key in ["a", "b", "c"] {
        assert_eq!(
            get_bytes(&mut replayed, key),
            get_bytes(&mut live, key),
            "{key}"
        );
    }
    assert_eq!(text(&run(&mut live, T, "PFDEBUG ENCODING c")), "+dense");
}

#[test]
fn hyperloglog_errors_are_redis_s() {
    let mut s = Store::default();
    run(&mut s, T, "SET str abc");
    run(&mut s, T, "RPUSH list a");
    run(&mut s, T, "PFADD h a b c");
    let cases = [
        (
            "PFADD str a",
            "-WRONGTYPE Key is not a valid HyperLogLog string value.",
        ),
        ("PFCOUNT list", &format!("-{}", reply::WRONGTYPE)),
        (
            "PFMERGE str list",
            "-WRONGTYPE Key is not a valid HyperLogLog string value.",
        ),
        ("PFMERGE h list", &format!("-{}", reply::WRONGTYPE)),
        (
            "PFDEBUG nosuch h",
            "-ERR Unknown PFDEBUG subcommand 'nosuch'",
        ),
        (
            "PFDEBUG GETREG missing",
            "-ERR The specified key does not exist",
        ),
        ("PFDEBUG ENCODING h", "+sparse"),
        (
            "PFDEBUG DECODE h",
            "$Z:8436 v:1,1 Z:4274 v:2,1 Z:3068 v:1,1 Z:603",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(text(&run(&mut s, T, line)), want, "{line}");
    }
    run(&mut s, T, "APPEND h hello");
    assert_eq!(
        text(&run(&mut s, T, "PFCOUNT h")),
        "-INVALIDOBJ Corrupted HLL object detected"
    );
    // As on Redis: an add that finds its register before the garbage still works.
    assert_eq!(text(&run(&mut s, T, "PFADD h q")), ":1");
    // An opcode cut off by the end of the string: refused, never read past.
    let mut cut = b"HYLL\x01".to_vec();
    cut.resize(16, 0);
    cut[15] = 0x80;
    cut.push(0x7f);
    let set = [
        Bytes::from_static(b"SET"),
        Bytes::from_static(b"cut"),
        Bytes::from(cut),
    ];
    assert_eq!(text(&s.execute(&set, T)), "+OK");
    for line in [
        "PFCOUNT cut",
        "PFADD cut x",
        "PFDEBUG TODENSE cut",
        "PFMERGE d cut",
    ] {
        assert_eq!(
            text(&run(&mut s, T, line)),
            "-INVALIDOBJ Corrupted HLL object detected",
            "{line}"
        );
    }
}

/// Stream effects (ids from the clock, `~` trims, deliveries, claims, acks, group ids)
/// replay into the same stream, with `now` = 0 as startup replays: entries, counters,
/// groups, pending entries with their delivery times and counts, consumers.
#[test]
fn stream_effects_replay_to_the_same_stream() {
    let mut live = Store::default();
    live.set_record_writes(true);
    let mut log = Vec::new();
    let script = [
        (T, "XADD s * a 1"),
        (T, "XADD s * a 2"),
        (T + 5, "XADD s MAXLEN ~ 1 * b 3"),
        (T + 6, "XGROUP CREATE s g 0"),
        (T + 7, "XREADGROUP GROUP g alice COUNT 2 STREAMS s >"),
        (T + 9, "XREADGROUP GROUP g bob STREAMS s >"),
        (T + 20, "XREADGROUP GROUP g alice STREAMS s 0"),
        (T + 30, "XCLAIM s g carol 5 1700000000000-1"),
        (T + 40, "XAUTOCLAIM s g dave 0 0 COUNT 1"),
        (T + 41, "XDEL s 1700000000000-0"),
        (T + 42, "XAUTOCLAIM s g erin 0 0"),
        (T + 50, "XACK s g 1700000000005-0"),
        (T + 51, "XTRIM s MAXLEN 1"),
        (T + 52, "XADD s NOMKSTREAM * c 4"),
        (T + 53, "XREADGROUP GROUP g frank NOACK STREAMS s >"),
        (T + 60, "XGROUP SETID s g $"),
        (T + 61, "XGROUP CREATECONSUMER s g gina"),
    ];
    for (now, line) in script {
        let reply = run(&mut live, now, line);
        assert!(!reply.is_error(), "{line}: {reply:?}");
        log.extend(live.take_log());
    }
    assert!(
        log.iter().any(|c| c[0] == "XCLAIM") && log.iter().all(|c| c.iter().all(|a| a != "*")),
        "deliveries logged as claims, ids as chosen: {log:?}"
    );
    let mut replayed = Store::default();
    for cmd in &log {
        let reply = replayed.execute(cmd, crate::NO_EXPIRY_CHECK);
        assert!(!reply.is_error(), "{cmd:?}: {reply:?}");
    }
    assert_eq!(replayed.canonical_dump(), live.canonical_dump());
    let pending = text(&run(&mut replayed, T + 100, "XPENDING s g - + 10"));
    assert_eq!(
        pending,
        text(&run(&mut live, T + 100, "XPENDING s g - + 10"))
    );
}

/// Review findings: an exact MINID trim that empties a node drops it (an entry added after
/// XSETID to a lower id is then found, deleted and ranged as any other); a rewrite of a
/// stream whose last id was set below a deleted one, or whose counters are at i64::MAX,
/// replays without an error.
#[test]
fn stream_edges_found_in_review_replay_and_rewrite() {
    let mut s = Store::default();
    s.set_record_writes(true);
    for line in [
        "XADD s 1-0 f v",
        "XADD s 2-0 f v",
        "XDEL s 2-0",
        "XTRIM s MINID 2-0",
        "XSETID s 0-1",
        "XADD s 0-2 f v",
    ] {
        let r = run(&mut s, T, line);
        assert!(!r.is_error(), "{line}: {r:?}");
    }
    assert_eq!(
        text(&run(&mut s, T, "XRANGE s 0-2 0-2")),
        "[[$0-2, [$f, $v]]]"
    );
    assert_eq!(text(&run(&mut s, T, "XDEL s 0-2")), ":1");
    for line in [
        "XADD t 1-0 a 1",
        "XADD t 2-0 a 2",
        "XDEL t 2-0",
        "XSETID t 1-5",
        "XGROUP CREATE t g 0 ENTRIESREAD 9223372036854775807",
        "XREADGROUP GROUP g c STREAMS t >",
    ] {
        let r = run(&mut s, T, line);
        assert!(!r.is_error(), "{line}: {r:?}");
    }
    let log = s.take_log();
    let mut replayed = Store::default();
    for cmd in &log {
        let r = replayed.execute(cmd, crate::NO_EXPIRY_CHECK);
        assert!(!r.is_error(), "{cmd:?}: {r:?}");
    }
    assert_eq!(replayed.canonical_dump(), s.canonical_dump());
    let key = Bytes::from_static(b"t");
    let (value, at) = s.peek_entry(&key, T).expect("t exists");
    let mut rebuilt = Store::default();
    for cmd in value.rewrite_commands(&key, at, crate::Chunk::REWRITE) {
        let r = rebuilt.execute(&cmd, crate::NO_EXPIRY_CHECK);
        assert!(!r.is_error(), "{cmd:?}: {r:?}");
    }
    assert_eq!(
        text(&run(&mut rebuilt, T, "XINFO GROUPS t")),
        text(&run(&mut s, T, "XINFO GROUPS t"))
    );
}

fn call(store: &mut Store, now: u64, args: &[&[u8]]) -> Frame {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    store.execute(&args, now)
}

fn dump_of(store: &mut Store, key: &str) -> Bytes {
    match run(store, T, &format!("DUMP {key}")) {
        Frame::Bulk(b) => b,
        other => panic!("DUMP {key}: {other:?}"),
    }
}

#[test]
fn dump_and_restore_round_trip_every_type_with_its_deadlines() {
    let mut s = Store::default();
    for line in [
        "SET s hello",
        "SET n 12345",
        "RPUSH l a b 3",
        "SADD set x y 7",
        "ZADD z 1 a -2.5 b",
        "HSET h f v g w",
        "HPEXPIREAT h 4102444800000 FIELDS 1 f",
        "XADD x 1-1 a b",
        "XADD x 2-0 c d e f",
        "XGROUP CREATE x g 0",
        "XREADGROUP GROUP g alice COUNT 1 STREAMS x >",
        "PFADD hll a b c",
        "SET t v PXAT 4102444800000",
    ] {
        assert!(!run(&mut s, T, line).is_error(), "{line}");
    }
    let mut other = Store::default();
    other.set_record_writes(true);
    for key in ["s", "n", "l", "set", "z", "h", "x", "hll", "t"] {
        let payload = dump_of(&mut s, key);
        let ttl = match run(&mut s, T, &format!("PEXPIRETIME {key}")) {
            Frame::Integer(at) if at > 0 => at.to_string(),
            _ => "0".to_string(),
        };
        let reply = call(
            &mut other,
            T,
            &[
                b"RESTORE",
                key.as_bytes(),
                ttl.as_bytes(),
                &payload,
                b"ABSTTL",
            ],
        );
        assert_eq!(text(&reply), "+OK", "{key}");
    }
    assert_eq!(s.canonical_dump(), other.canonical_dump());
    assert_eq!(
        text(&run(&mut other, T, "HPEXPIRETIME h FIELDS 2 f g")),
        "[:4102444800000, :-1]"
    );
    // The log replays to the same keyspace, deadlines included, whatever the clock says.
    let log = other.take_log();
    assert!(log
        .iter()
        .all(|c| c[0] == "RESTORE" && c[4] == "REPLACE" && c[5] == "ABSTTL"));
    let mut replayed = Store::default();
    for c in &log {
        assert!(!replayed.execute(c, crate::NO_EXPIRY_CHECK).is_error());
    }
    assert_eq!(replayed.canonical_dump(), other.canonical_dump());
}

#[test]
fn restore_refuses_as_redis_does() {
    let mut s = Store::default();
    run(&mut s, T, "SET k v");
    let payload = dump_of(&mut s, "k");
    let restore = |s: &mut Store, key: &[u8], ttl: &[u8], p: &[u8], opts: &[&[u8]]| {
        let mut a: Vec<&[u8]> = vec![b"RESTORE", key, ttl, p];
        a.extend_from_slice(opts);
        text(&call(s, T, &a))
    };
    assert_eq!(
        restore(&mut s, b"k", b"0", &payload, &[]),
        "-BUSYKEY Target key name already exists."
    );
    assert_eq!(restore(&mut s, b"k", b"0", &payload, &[b"REPLACE"]), "+OK");
    assert_eq!(
        restore(&mut s, b"n", b"-1", &payload, &[]),
        "-ERR Invalid TTL value, must be >= 0"
    );
    assert_eq!(
        restore(&mut s, b"n", b"x", &payload, &[]),
        "-ERR value is not an integer or out of range"
    );
    let mut bad = payload.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        restore(&mut s, b"n", b"0", &bad, &[]),
        "-ERR DUMP payload version or checksum are wrong"
    );
    assert_eq!(
        restore(&mut s, b"n", b"0", b"garbage", &[]),
        "-ERR DUMP payload version or checksum are wrong"
    );
    // A payload whose checksum is right but whose value is not (an unknown type byte).
    let mut forged = vec![99u8, 0];
    forged.extend_from_slice(&10u16.to_le_bytes());
    let crc = moon_rdb::crc64(0, &forged);
    forged.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(
        restore(&mut s, b"n", b"0", &forged, &[]),
        "-ERR Bad data format"
    );
    assert_eq!(
        restore(
            &mut s,
            b"n",
            b"0",
            &payload,
            &[b"IDLETIME", b"1", b"FREQ", b"2"]
        ),
        "-ERR syntax error"
    );
    assert_eq!(
        restore(&mut s, b"n", b"0", &payload, &[b"FREQ", b"256"]),
        "-ERR Invalid FREQ value, must be >= 0 and <= 255"
    );
    assert_eq!(
        restore(&mut s, b"n", b"0", &payload, &[b"IDLETIME", b"-1"]),
        "-ERR Invalid IDLETIME value, must be >= 0"
    );
    assert_eq!(
        restore(&mut s, b"n", b"0", &payload, &[b"IDLETIME", b"100"]),
        "+OK"
    );
    assert_eq!(text(&run(&mut s, T, "OBJECT IDLETIME n")), ":100");
    // A deadline already past: nothing is created, and a replaced key is deleted (logged).
    s.set_record_writes(true);
    s.take_log();
    assert_eq!(
        restore(&mut s, b"k", b"1000", &payload, &[b"ABSTTL", b"REPLACE"]),
        "+OK"
    );
    assert_eq!(text(&run(&mut s, T, "EXISTS k")), ":0");
    assert_eq!(
        s.take_log(),
        vec![vec![Bytes::from("DEL"), Bytes::from("k")]]
    );
    assert_eq!(text(&run(&mut s, T, "DUMP nokey")), "(nil)");
}

#[test]
fn restore_checks_in_redis_order_and_a_ttl_past_the_largest_deadline_counts_as_passed() {
    let mut s = Store::default();
    run(&mut s, T, "SET k v");
    let payload = dump_of(&mut s, "k");
    // An existing key is reported before a bad TTL, a bad option before both.
    assert_eq!(
        text(&call(&mut s, T, &[b"RESTORE", b"k", b"-1", &payload])),
        "-BUSYKEY Target key name already exists."
    );
    assert_eq!(
        text(&call(
            &mut s,
            T,
            &[b"RESTORE", b"k", b"x", &payload, b"BAD"]
        )),
        "-ERR syntax error"
    );
    // now + TTL past i64::MAX: Redis's sum wraps negative and the key is not created; a
    // replaced one is deleted (and logged so), never logged with a deadline replay refuses.
    s.set_record_writes(true);
    s.take_log();
    let huge = i64::MAX.to_string();
    assert_eq!(
        text(&call(
            &mut s,
            T,
            &[b"RESTORE", b"n", huge.as_bytes(), &payload]
        )),
        "+OK"
    );
    assert_eq!(text(&run(&mut s, T, "EXISTS n")), ":0");
    assert_eq!(
        text(&call(
            &mut s,
            T,
            &[b"RESTORE", b"k", huge.as_bytes(), &payload, b"REPLACE"]
        )),
        "+OK"
    );
    assert_eq!(text(&run(&mut s, T, "EXISTS k")), ":0");
    assert_eq!(
        s.take_log(),
        vec![vec![Bytes::from("DEL"), Bytes::from("k")]]
    );
    // The largest relative TTL that fits is kept, and its logged form replays.
    let fits = (i64::MAX - T as i64).to_string();
    assert_eq!(
        text(&call(
            &mut s,
            T,
            &[b"RESTORE", b"m", fits.as_bytes(), &payload]
        )),
        "+OK"
    );
    let log = s.take_log();
    let mut replayed = Store::default();
    for c in &log {
        assert!(
            !replayed.execute(c, crate::NO_EXPIRY_CHECK).is_error(),
            "{c:?}"
        );
    }
    assert_eq!(replayed.canonical_dump(), s.canonical_dump());
}

#[test]
fn restore_refuses_values_moon_could_not_log() {
    let mut s = Store::default();
    let hash = moon_rdb::Object::Hash(vec![moon_rdb::HashField {
        field: Bytes::from("f"),
        value: Bytes::from("v"),
        expire_at: crate::value::MAX_FIELD_DEADLINE + 1,
    }]);
    let p = moon_rdb::encode_dump(&hash);
    assert_eq!(
        text(&call(&mut s, T, &[b"RESTORE", b"h", b"0", &p])),
        "-ERR Bad data format"
    );
    let stream = moon_rdb::Object::Stream(Box::new(moon_rdb::StreamValue {
        entries: vec![(
            moon_rdb::StreamId { ms: 1, seq: 0 },
            vec![Bytes::from("f"), Bytes::from("v")],
        )],
        last_id: moon_rdb::StreamId { ms: 1, seq: 0 },
        max_deleted: moon_rdb::StreamId { ms: 9, seq: 0 },
        ..Default::default()
    }));
    // A largest deleted id past the last id: Redis writes and loads it (XSETID without
    // MAXDELETEDID gets there), and Moon's logged forms hold it exactly — the RESTORE as sent,
    // a move or an older base as the two-XSETID rewrite form.
    let p = moon_rdb::encode_dump(&stream);
    assert_eq!(text(&call(&mut s, T, &[b"RESTORE", b"x", b"0", &p])), "+OK");
    let value = s
        .keyspace_of(0)
        .and_then(|ks| ks.peek(b"x", T))
        .map(|e| e.value.clone());
    let value = value.expect("restored");
    let mut rebuilt = Store::default();
    for c in value.rewrite_commands(&Bytes::from("x"), 0, crate::Chunk::REWRITE) {
        assert!(!rebuilt.execute(&c, T).is_error(), "{c:?}");
    }
    let dump = |st: &Store| {
        st.canonical_dump()
            .into_iter()
            .filter(|k| &k.1[..] == b"x")
            .collect::<Vec<_>>()
    };
    assert_eq!(dump(&rebuilt), dump(&s));
}
