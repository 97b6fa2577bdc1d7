//! Streams against the real binary with real clients: Redis's replies and errors, consumer
//! groups, blocking reads woken by an XADD on any shard, and a consumer-group queue whose
//! entries are all acknowledged or pending, with the same delivery counts, after SIGKILL.
//!
//! A test waits for a client to be blocked by watching CLIENT LIST (`flags=b`), never by
//! sleeping.

mod common;

use std::thread;

use common::{cmd, expect_err, keys_on_different_shards, wait_blocked, MoonServer};

type Entries = Vec<(String, Vec<String>)>;

#[test]
fn stream_commands_answer_as_redis() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    assert_eq!(
        cmd::<String>(&mut c, &["XADD", "s", "1-1", "a", "1"]),
        "1-1"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["XADD", "s", "1-*", "b", "2"]),
        "1-2"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["XADD", "s", "2", "c", "3", "d", "4"]),
        "2-0"
    );
    assert_eq!(
        expect_err(&mut c, &["XADD", "s", "1-1", "a", "1"]),
        "ERR The ID specified in XADD is equal or smaller than the target stream top item"
    );
    assert_eq!(
        expect_err(&mut c, &["XADD", "s", "0-0", "a", "1"]),
        "ERR The ID specified in XADD must be greater than 0-0"
    );
    assert_eq!(
        expect_err(&mut c, &["XADD", "s", "3-0", "a"]),
        "ERR wrong number of arguments for 'xadd' command"
    );
    let auto: String = cmd(&mut c, &["XADD", "s", "*", "e", "5"]);
    assert!(auto.ends_with("-0") && auto.len() > 10, "{auto}");
    assert_eq!(cmd::<i64>(&mut c, &["XLEN", "s"]), 4);
    let all: Entries = cmd(&mut c, &["XRANGE", "s", "-", "+"]);
    assert_eq!(
        all[1],
        ("1-2".to_string(), vec!["b".to_string(), "2".to_string()])
    );
    let back: Entries = cmd(&mut c, &["XREVRANGE", "s", "+", "-", "COUNT", "1"]);
    assert_eq!(back[0].0, auto);
    let open: Entries = cmd(&mut c, &["XRANGE", "s", "(1-1", "2"]);
    assert_eq!(open.len(), 2);
    assert_eq!(cmd::<i64>(&mut c, &["XDEL", "s", "1-1", "9-9"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["XTRIM", "s", "MAXLEN", "2"]), 1);
    assert_eq!(cmd::<i64>(&mut c, &["XLEN", "s"]), 2);
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["XADD", "nope", "NOMKSTREAM", "*", "a", "1"]),
        None
    );
    cmd::<()>(&mut c, &["SET", "str", "x"]);
    assert!(expect_err(&mut c, &["XADD", "str", "*", "a", "1"]).starts_with("WRONGTYPE"));
    assert_eq!(cmd::<String>(&mut c, &["TYPE", "s"]), "stream");
    // Groups.
    assert_eq!(
        cmd::<String>(&mut c, &["XGROUP", "CREATE", "s", "g", "0"]),
        "OK"
    );
    assert_eq!(
        expect_err(&mut c, &["XGROUP", "CREATE", "s", "g", "0"]),
        "BUSYGROUP Consumer Group name already exists"
    );
    let got: Vec<(String, Entries)> = cmd(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ],
    );
    assert_eq!(got[0].1[0].0, "2-0");
    let summary: (i64, String, String, Vec<(String, String)>) =
        cmd(&mut c, &["XPENDING", "s", "g"]);
    assert_eq!(summary.0, 1);
    assert_eq!(summary.3, vec![("alice".to_string(), "1".to_string())]);
    assert_eq!(cmd::<i64>(&mut c, &["XACK", "s", "g", "2-0"]), 1);
    assert_eq!(
        expect_err(
            &mut c,
            &["XREADGROUP", "GROUP", "nog", "a", "STREAMS", "s", ">"]
        ),
        "NOGROUP No such key 's' or consumer group 'nog' in XREADGROUP with GROUP option"
    );
    assert_eq!(
        cmd::<Option<Vec<(String, Entries)>>>(
            &mut c,
            &["XREAD", "STREAMS", "s", "99999999999999-0"]
        ),
        None
    );
}

#[test]
fn a_blocked_read_is_woken_by_an_add_on_any_shard() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].clone(), k[1].clone());
    cmd::<String>(&mut c, &["XADD", &a, "1-0", "old", "1"]);
    cmd::<String>(&mut c, &["XGROUP", "CREATE", &b, "g", "$", "MKSTREAM"]);
    let mut r1 = s.client();
    let (a1, b1) = (a.clone(), b.clone());
    let reader = thread::spawn(move || -> Vec<(String, Entries)> {
        cmd(
            &mut r1,
            &["XREAD", "BLOCK", "0", "STREAMS", &a1, &b1, "$", "$"],
        )
    });
    let mut r2 = s.client();
    let b2 = b.clone();
    let grouped = thread::spawn(move || -> Vec<(String, Entries)> {
        cmd(
            &mut r2,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "bob",
                "BLOCK",
                "0",
                "STREAMS",
                &b2,
                ">",
            ],
        )
    });
    wait_blocked(&mut c, 2);
    cmd::<String>(&mut c, &["XADD", &b, "5-0", "new", "1"]);
    let read = reader.join().expect("reader");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, b);
    assert_eq!(read[0].1[0].0, "5-0");
    let grouped = grouped.join().expect("group reader");
    assert_eq!(grouped[0].1[0].0, "5-0");
    let pending: Vec<(String, String, i64, i64)> =
        cmd(&mut c, &["XPENDING", &b, "g", "-", "+", "10"]);
    assert_eq!(
        pending.len(),
        1,
        "the blocked XREADGROUP's delivery is pending"
    );
    // A timeout answers nil; a group destroyed ends a blocked XREADGROUP with NOGROUP.
    assert_eq!(
        cmd::<Option<Vec<(String, Entries)>>>(
            &mut c,
            &["XREAD", "BLOCK", "10", "STREAMS", &a, "$"]
        ),
        None
    );
    let mut r3 = s.client();
    let b3 = b.clone();
    let ended = thread::spawn(move || {
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("carol")
            .arg("BLOCK")
            .arg("0")
            .arg("STREAMS")
            .arg(&b3)
            .arg(">")
            .query::<redis::Value>(&mut r3)
            .map_err(|e| common::err_text(&e))
    });
    wait_blocked(&mut c, 1);
    assert_eq!(cmd::<i64>(&mut c, &["XGROUP", "DESTROY", &b, "g"]), 1);
    let e = ended.join().expect("joined").expect_err("an error");
    assert!(e.contains("no longer exists"), "{e}");
}

/// The queue of the issue: producers XADD, consumers XREADGROUP + XACK, one consumer's
/// entries XAUTOCLAIMed; after SIGKILL every entry is acknowledged or pending, with the same
/// delivery counts and owners, and the group reads on where it was.
#[test]
fn a_consumer_group_queue_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    cmd::<String>(
        &mut c,
        &["XGROUP", "CREATE", "jobs", "workers", "$", "MKSTREAM"],
    );
    for i in 0..40 {
        cmd::<String>(&mut c, &["XADD", "jobs", "*", "job", &i.to_string()]);
    }
    let mut acked = 0;
    for round in 0..6 {
        let who = if round % 2 == 0 { "w1" } else { "w2" };
        let got: Vec<(String, Entries)> = cmd(
            &mut c,
            &[
                "XREADGROUP",
                "GROUP",
                "workers",
                who,
                "COUNT",
                "5",
                "STREAMS",
                "jobs",
                ">",
            ],
        );
        for (id, _) in &got[0].1 {
            if who == "w1" {
                acked += cmd::<i64>(&mut c, &["XACK", "jobs", "workers", id]);
            }
        }
    }
    // w2 died: its entries go to w3.
    let claimed: (String, Entries, Vec<String>) = cmd(
        &mut c,
        &[
            "XAUTOCLAIM",
            "jobs",
            "workers",
            "w3",
            "0",
            "0",
            "COUNT",
            "3",
        ],
    );
    assert_eq!(claimed.1.len(), 3);
    let before_pending: Vec<(String, String, i64, i64)> =
        cmd(&mut c, &["XPENDING", "jobs", "workers", "-", "+", "100"]);
    let before_groups: redis::Value = cmd(&mut c, &["XINFO", "GROUPS", "jobs"]);
    assert_eq!(acked, 15);
    assert_eq!(before_pending.len(), 15);
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    let after_pending: Vec<(String, String, i64, i64)> =
        cmd(&mut c, &["XPENDING", "jobs", "workers", "-", "+", "100"]);
    let strip = |v: &[(String, String, i64, i64)]| -> Vec<(String, String, i64)> {
        v.iter()
            .map(|(id, who, _, n)| (id.clone(), who.clone(), *n))
            .collect()
    };
    assert_eq!(
        strip(&after_pending),
        strip(&before_pending),
        "owners and delivery counts"
    );
    assert_eq!(
        cmd::<redis::Value>(&mut c, &["XINFO", "GROUPS", "jobs"]),
        before_groups
    );
    assert_eq!(cmd::<i64>(&mut c, &["XLEN", "jobs"]), 40);
    // Every entry: acknowledged (15), pending (15) or not yet delivered (10).
    let rest: Vec<(String, Entries)> = cmd(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "w1",
            "STREAMS",
            "jobs",
            ">",
        ],
    );
    assert_eq!(rest[0].1.len(), 10);
}

/// Review finding: an XREADGROUP over streams on two shards whose second key has no such
/// group is refused before the first shard delivers anything (its group does not move).
#[test]
fn a_refused_read_across_shards_delivers_nothing() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<String>(&mut c, &["XADD", a, "1-0", "f", "v"]);
    cmd::<String>(&mut c, &["XADD", b, "1-0", "f", "v"]);
    cmd::<String>(&mut c, &["XGROUP", "CREATE", a, "g", "0"]);
    let e = expect_err(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", a, b, ">", ">"],
    );
    assert!(e.starts_with("NOGROUP"), "{e}");
    let pending: redis::Value = cmd(&mut c, &["XPENDING", a, "g"]);
    let redis::Value::Array(summary) = pending else {
        panic!("XPENDING: {pending:?}")
    };
    assert_eq!(
        summary.first(),
        Some(&redis::Value::Int(0)),
        "nothing delivered"
    );
    cmd::<String>(&mut c, &["XGROUP", "CREATE", b, "g", "0"]);
    let both: Vec<(String, Entries)> = cmd(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", a, b, ">", ">"],
    );
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].0, a);
    assert_eq!(both[1].0, b);
}
