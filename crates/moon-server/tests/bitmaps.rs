//! Bitmaps and bit fields against the real binary with a real client: Redis's replies (errors
//! included), BITOP on one shard and across shards, and persistence through SIGKILL.

mod common;

use common::{cmd, expect_err, keys_on_different_shards, MoonServer};

#[test]
fn bit_commands_answer_as_redis() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    assert_eq!(cmd::<i64>(&mut c, &["SETBIT", "b", "7", "1"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["SETBIT", "b", "7", "0"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["SETBIT", "b", "100", "1"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["STRLEN", "b"]), 13);
    assert_eq!(cmd::<i64>(&mut c, &["GETBIT", "b", "100"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["GETBIT", "b", "100000"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["GETBIT", "nope", "3"]), 0);
    assert_eq!(
        expect_err(&mut c, &["SETBIT", "b", "-1", "1"]),
        "ERR bit offset is not an integer or out of range"
    );
    assert_eq!(
        expect_err(&mut c, &["SETBIT", "b", "1", "2"]),
        "ERR bit is not an integer or out of range"
    );
    // Redis's documented examples.
    cmd::<()>(&mut c, &["SET", "mykey", "foobar"]);
    assert_eq!(cmd::<i64>(&mut c, &["BITCOUNT", "mykey"]), 26);
    assert_eq!(cmd::<i64>(&mut c, &["BITCOUNT", "mykey", "0", "0"]), 4);
    assert_eq!(cmd::<i64>(&mut c, &["BITCOUNT", "mykey", "1", "1"]), 6);
    assert_eq!(
        cmd::<i64>(&mut c, &["BITCOUNT", "mykey", "1", "1", "BYTE"]),
        6
    );
    assert_eq!(
        cmd::<i64>(&mut c, &["BITCOUNT", "mykey", "5", "30", "BIT"]),
        17
    );
    assert_eq!(
        expect_err(&mut c, &["BITCOUNT", "mykey", "1"]),
        "ERR syntax error"
    );
    cmd::<()>(&mut c, &["SET", "p", "\x00\x0f\x00"]);
    assert_eq!(cmd::<i64>(&mut c, &["BITPOS", "p", "1"]), 12);
    assert_eq!(cmd::<i64>(&mut c, &["BITPOS", "p", "1", "2"]), -1);
    assert_eq!(cmd::<i64>(&mut c, &["BITPOS", "p", "0", "1", "1"]), 8);
    assert_eq!(
        cmd::<i64>(&mut c, &["BITPOS", "p", "1", "7", "15", "BIT"]),
        12
    );
    cmd::<i64>(&mut c, &["SETBIT", "full", "7", "1"]);
    for i in 0..7 {
        cmd::<i64>(&mut c, &["SETBIT", "full", &i.to_string(), "1"]);
    }
    assert_eq!(
        cmd::<i64>(&mut c, &["BITPOS", "full", "0"]),
        8,
        "padded with zeros"
    );
    assert_eq!(
        cmd::<i64>(&mut c, &["BITPOS", "full", "0", "0", "0"]),
        -1,
        "an end given"
    );
    assert_eq!(cmd::<i64>(&mut c, &["BITPOS", "nope", "0"]), 0);
    assert_eq!(cmd::<i64>(&mut c, &["BITPOS", "nope", "1"]), -1);
    assert_eq!(
        expect_err(&mut c, &["BITPOS", "p", "2"]),
        "ERR The bit argument must be 1 or 0."
    );
    // BITOP.
    cmd::<()>(&mut c, &["SET", "k1", "foobar"]);
    cmd::<()>(&mut c, &["SET", "k2", "abcdef"]);
    assert_eq!(cmd::<i64>(&mut c, &["BITOP", "AND", "dest", "k1", "k2"]), 6);
    assert_eq!(cmd::<String>(&mut c, &["GET", "dest"]), "`bc`ab");
    assert_eq!(
        cmd::<i64>(&mut c, &["BITOP", "OR", "dest", "k1", "nope"]),
        6
    );
    assert_eq!(cmd::<String>(&mut c, &["GET", "dest"]), "foobar");
    assert_eq!(cmd::<i64>(&mut c, &["BITOP", "NOT", "dest", "nope"]), 0);
    assert_eq!(
        cmd::<i64>(&mut c, &["EXISTS", "dest"]),
        0,
        "an empty result deletes it"
    );
    assert_eq!(
        expect_err(&mut c, &["BITOP", "NOT", "dest", "k1", "k2"]),
        "ERR BITOP NOT must be called with a single source key."
    );
    assert_eq!(
        expect_err(&mut c, &["BITOP", "NAND", "dest", "k1"]),
        "ERR syntax error"
    );
    cmd::<i64>(&mut c, &["RPUSH", "list", "x"]);
    assert_eq!(
        expect_err(&mut c, &["BITOP", "AND", "dest", "k1", "list"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    // BITFIELD, Redis's documented examples.
    let r: Vec<i64> = cmd(
        &mut c,
        &[
            "BITFIELD", "mykey2", "INCRBY", "i5", "100", "1", "GET", "u4", "0",
        ],
    );
    assert_eq!(r, [1, 0]);
    let r: Vec<Option<i64>> = cmd(
        &mut c,
        &[
            "BITFIELD", "mykey3", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY", "u2",
            "102", "1",
        ],
    );
    assert_eq!(r, [Some(1), Some(1)]);
    for _ in 0..3 {
        cmd::<Vec<Option<i64>>>(
            &mut c,
            &[
                "BITFIELD", "mykey3", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY",
                "u2", "102", "1",
            ],
        );
    }
    let r: Vec<Option<i64>> = cmd(
        &mut c,
        &[
            "BITFIELD", "mykey3", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY", "u2",
            "102", "1",
        ],
    );
    assert_eq!(r, [Some(1), Some(3)], "u2 wraps at 4, saturates at 3");
    let r: Vec<Option<i64>> = cmd(
        &mut c,
        &[
            "BITFIELD", "f", "OVERFLOW", "FAIL", "INCRBY", "u2", "102", "5",
        ],
    );
    assert_eq!(r, [None]);
    let r: Vec<i64> = cmd(
        &mut c,
        &[
            "BITFIELD", "s", "SET", "i8", "#1", "-100", "GET", "i8", "#1", "GET", "u8", "8",
        ],
    );
    assert_eq!(r, [0, -100, 156]);
    let r: Vec<i64> = cmd(&mut c, &["BITFIELD_RO", "s", "GET", "i8", "#1"]);
    assert_eq!(r, [-100]);
    assert_eq!(
        expect_err(&mut c, &["BITFIELD_RO", "s", "SET", "i8", "0", "1"]),
        "ERR BITFIELD_RO only supports the GET subcommand"
    );
    assert!(expect_err(&mut c, &["BITFIELD", "s", "GET", "u64", "0"])
        .starts_with("ERR Invalid bitfield type"));
    assert_eq!(
        expect_err(&mut c, &["BITFIELD", "s", "OVERFLOW", "LOUD"]),
        "ERR Invalid OVERFLOW type specified"
    );
    let r: Vec<i64> = cmd(&mut c, &["BITFIELD", "absent", "GET", "i8", "0"]);
    assert_eq!(r, [0]);
    assert_eq!(
        cmd::<i64>(&mut c, &["EXISTS", "absent"]),
        0,
        "a GET creates nothing"
    );
}

#[test]
fn bitmaps_across_shards_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<i64>(&mut c, &["SETBIT", a, "3", "1"]);
    cmd::<i64>(&mut c, &["SETBIT", b, "9", "1"]);
    cmd::<i64>(&mut c, &["PEXPIRE", a, "3600000"]);
    // Sources and destination on different shards.
    assert_eq!(cmd::<i64>(&mut c, &["BITOP", "OR", b, a, b]), 2);
    cmd::<Vec<i64>>(
        &mut c,
        &[
            "BITFIELD", a, "SET", "u8", "8", "200", "INCRBY", "i4", "0", "7",
        ],
    );
    let before: (Vec<u8>, Vec<u8>, i64) = (
        cmd(&mut c, &["GET", a]),
        cmd(&mut c, &["GET", b]),
        cmd(&mut c, &["PEXPIRETIME", a]),
    );
    assert!(before.2 > 0, "BITFIELD keeps the deadline");
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    let after: (Vec<u8>, Vec<u8>, i64) = (
        cmd(&mut c, &["GET", a]),
        cmd(&mut c, &["GET", b]),
        cmd(&mut c, &["PEXPIRETIME", a]),
    );
    assert_eq!(after, before);
    assert_eq!(cmd::<i64>(&mut c, &["BITCOUNT", b]), 2);
}

/// LCS (Redis's string unit needs it), with its keys on one shard and on two.
#[test]
fn lcs_on_one_shard_and_across_shards() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    for (a, b) in [("{t}1", "{t}2"), (k[0].as_str(), k[1].as_str())] {
        cmd::<()>(&mut c, &["MSET", a, "ohmytext", b, "mynewtext"]);
        assert_eq!(cmd::<String>(&mut c, &["LCS", a, b]), "mytext");
        assert_eq!(cmd::<i64>(&mut c, &["LCS", a, b, "LEN"]), 6);
        let idx: redis::Value = cmd(&mut c, &["LCS", a, b, "IDX", "MINMATCHLEN", "4"]);
        let text = format!("{idx:?}");
        assert!(
            text.contains("int(4), int(7)") && text.contains("int(6)"),
            "{text}"
        );
        cmd::<i64>(&mut c, &["RPUSH", "{t}l", "x"]);
        assert_eq!(
            expect_err(&mut c, &["LCS", a, "{t}l"]),
            "ERR The specified keys must contain string values"
        );
    }
}

/// INFO's rdb_changes_since_last_save counts logged changes (Redis's bitops unit reads it):
/// a change counts, a no-op or a read does not.
#[test]
fn info_counts_changes_since_start() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let changes = |c: &mut redis::Connection| -> u64 {
        let info: String = cmd(c, &["INFO", "persistence"]);
        info.lines()
            .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("the field")
    };
    let before = changes(&mut c);
    cmd::<i64>(&mut c, &["SETBIT", "foo", "0", "0"]);
    cmd::<Vec<i64>>(&mut c, &["BITFIELD", "foo2", "SET", "i5", "0", "0"]);
    assert_eq!(changes(&mut c), before + 2);
    cmd::<i64>(&mut c, &["SETBIT", "foo", "0", "0"]);
    cmd::<Vec<i64>>(&mut c, &["BITFIELD", "foo2", "SET", "i5", "0", "0"]);
    cmd::<i64>(&mut c, &["GETBIT", "foo", "0"]);
    assert_eq!(changes(&mut c), before + 2, "no-ops and reads");
}
