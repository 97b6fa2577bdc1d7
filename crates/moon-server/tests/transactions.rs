//! MULTI/EXEC/WATCH with Redis's semantics, and cross-shard atomicity: isolation under
//! concurrent load, all-or-nothing after SIGKILL, recovery skipping an unfinished transaction.

mod common;

use std::sync::mpsc;
use std::thread;

use common::{err_text, keys_on_different_shards, MoonServer};
use redis::{Commands, Value};

/// Runs `check` again and again while the writers run (each holds a clone of the sender of
/// `done`), once more after the last one finished, then joins them; at least 10 checks ran.
fn check_while_writing(
    done: mpsc::Receiver<()>,
    writers: Vec<thread::JoinHandle<()>>,
    mut check: impl FnMut(),
) {
    let mut reads = 0;
    loop {
        let finished = matches!(done.try_recv(), Err(mpsc::TryRecvError::Disconnected));
        check();
        reads += 1;
        if finished {
            break;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        reads > 10,
        "readers ran concurrently with the writers ({reads} reads)"
    );
}

/// GET of every key in one MULTI/EXEC.
fn multi_get<T: redis::FromRedisValue>(con: &mut redis::Connection, keys: &[String]) -> Vec<T> {
    let mut p = redis::pipe();
    p.atomic();
    for k in keys {
        p.cmd("GET").arg(k);
    }
    p.query(con).unwrap()
}

fn exec_raw(con: &mut redis::Connection, cmds: &[&[&str]]) -> Value {
    let _: () = redis::cmd("MULTI").query(con).unwrap();
    for c in cmds {
        let mut cmd = redis::cmd(c[0]);
        for a in &c[1..] {
            cmd.arg(*a);
        }
        let queued: String = cmd.query(con).unwrap();
        assert_eq!(queued, "QUEUED");
    }
    redis::cmd("EXEC").query(con).unwrap()
}

#[test]
fn multi_exec_semantics_match_redis() {
    let server = MoonServer::start(2, &[]);
    let mut con = server.client();
    let k = keys_on_different_shards(2);
    let _: () = con.set(&k[0], "10").unwrap();
    let _: () = con.set(&k[1], "not a number").unwrap();
    // Runtime errors are reported per command; the rest still runs. Raw RESP, as a client
    // library sees it.
    let mut raw = std::net::TcpStream::connect(server.addr).unwrap();
    let request = format!(
        "MULTI\r\nINCR {0}\r\nINCR {1}\r\nSET x 1\r\nGET {0}\r\nEXEC\r\n",
        k[0], k[1]
    );
    std::io::Write::write_all(&mut raw, request.as_bytes()).unwrap();
    let expected = "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n:11\r\n-ERR value is not an integer or out of range\r\n+OK\r\n$2\r\n11\r\n";
    let mut got = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut raw, &mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expected);
    // A queued command with a syntax error discards the transaction.
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("INCR").arg(&k[0]).query(&mut con).unwrap();
    assert!(
        err_text(&redis::cmd("INCR").query::<String>(&mut con).unwrap_err())
            .contains("wrong number of arguments")
    );
    let e = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
    assert_eq!(
        err_text(&e),
        "EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(
        con.get::<_, i64>(&k[0]).unwrap(),
        11,
        "nothing of the aborted transaction ran"
    );
    // Nesting, EXEC/DISCARD without MULTI, WATCH inside MULTI.
    assert_eq!(
        common::expect_err(&mut con, &["EXEC"]),
        "ERR EXEC without MULTI"
    );
    assert_eq!(
        common::expect_err(&mut con, &["DISCARD"]),
        "ERR DISCARD without MULTI"
    );
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    assert_eq!(
        common::expect_err(&mut con, &["MULTI"]),
        "ERR MULTI calls can not be nested"
    );
    assert_eq!(
        common::expect_err(&mut con, &["WATCH", "x"]),
        "ERR WATCH inside MULTI is not allowed"
    );
    let _: String = redis::cmd("INCR").arg(&k[0]).query(&mut con).unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut con).unwrap();
    assert_eq!(
        con.get::<_, i64>(&k[0]).unwrap(),
        11,
        "DISCARD dropped the queue"
    );
    // An empty transaction.
    assert_eq!(exec_raw(&mut con, &[]), Value::Array(vec![]));
}

#[test]
fn watch_aborts_exec_when_a_watched_key_changes() {
    let server = MoonServer::start(2, &[]);
    let mut con = server.client();
    let mut other = server.client();
    let k = keys_on_different_shards(2);
    let watch_and_exec = |con: &mut redis::Connection, other_action: &mut dyn FnMut()| -> Value {
        let _: () = redis::cmd("WATCH")
            .arg(&k[0])
            .arg(&k[1])
            .query(con)
            .unwrap();
        other_action();
        exec_raw(
            con,
            &[&["SET", &k[0], "from-tx"], &["SET", &k[1], "from-tx"]],
        )
    };
    let _: () = con.set(&k[0], "v").unwrap();
    // Untouched: EXEC runs.
    let v = watch_and_exec(&mut con, &mut || {});
    assert_eq!(v, Value::Array(vec![Value::Okay, Value::Okay]));
    // Modified by another client (on either shard): EXEC returns null and runs nothing.
    for victim in [&k[0], &k[1]] {
        let v = watch_and_exec(&mut con, &mut || {
            let _: () = other.set(victim, "changed").unwrap();
        });
        assert_eq!(v, Value::Nil, "modified {victim}");
        assert_eq!(con.get::<_, String>(victim).unwrap(), "changed");
    }
    // Modified to the same value still counts as modified.
    let v = watch_and_exec(&mut con, &mut || {
        let _: () = other.set(&k[0], "changed").unwrap();
    });
    assert_eq!(v, Value::Nil);
    // Deleted.
    let v = watch_and_exec(&mut con, &mut || {
        let _: i64 = other.del(&k[1]).unwrap();
    });
    assert_eq!(v, Value::Nil);
    // Expired.
    let _: () = con.set(&k[0], "soon gone").unwrap();
    let _: () = redis::cmd("WATCH").arg(&k[0]).query(&mut con).unwrap();
    let _: () = redis::cmd("PEXPIREAT")
        .arg(&k[0])
        .arg(1)
        .query(&mut other)
        .unwrap_or(());
    assert_eq!(
        exec_raw(&mut con, &[&["SET", &k[0], "from-tx"]]),
        Value::Nil
    );
    // UNWATCH forgets.
    let _: () = redis::cmd("WATCH").arg(&k[0]).query(&mut con).unwrap();
    let _: () = other.set(&k[0], "again").unwrap();
    let _: () = redis::cmd("UNWATCH").query(&mut con).unwrap();
    assert_eq!(
        exec_raw(&mut con, &[&["SET", &k[0], "from-tx"]]),
        Value::Array(vec![Value::Okay])
    );
    // A single-shard transaction with a watch on that shard.
    let _: () = redis::cmd("WATCH").arg(&k[0]).query(&mut con).unwrap();
    let _: () = other.set(&k[0], "x").unwrap();
    assert_eq!(exec_raw(&mut con, &[&["GET", &k[0]]]), Value::Nil);
}

/// Transfers between counters on different shards, from several clients, while readers sum
/// every counter in one MULTI/EXEC or one MGET: the sum never changes.
#[test]
fn cross_shard_transfers_are_isolated() {
    let server = MoonServer::start(2, &[]);
    let accounts: Vec<String> = (0..6).map(|i| format!("acct:{i}")).collect();
    let shards: Vec<usize> = accounts
        .iter()
        .map(|a| common::slot_shard(a.as_bytes(), 2))
        .collect();
    assert!(
        shards.contains(&0) && shards.contains(&1),
        "accounts span both shards"
    );
    let mut con = server.client();
    for a in &accounts {
        let _: () = con.set(a, 1000).unwrap();
    }
    let total = 1000 * accounts.len() as i64;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (url, accounts, done) = (server.url(), accounts.clone(), done_tx.clone());
            thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for i in 0..300usize {
                    let (from, to) = (&accounts[(i + w) % 6], &accounts[(i * 5 + w + 1) % 6]);
                    if from == to {
                        continue;
                    }
                    let _: Value = redis::pipe()
                        .atomic()
                        .cmd("DECRBY")
                        .arg(from)
                        .arg(7)
                        .cmd("INCRBY")
                        .arg(to)
                        .arg(7)
                        .query(&mut con)
                        .unwrap();
                }
                drop(done);
            })
        })
        .collect();
    drop(done_tx);
    check_while_writing(done_rx, writers, || {
        let via_mget: Vec<i64> = con.mget(&accounts).unwrap();
        assert_eq!(
            via_mget.iter().sum::<i64>(),
            total,
            "MGET saw a half-done transfer: {via_mget:?}"
        );
        let via_multi: Vec<i64> = multi_get(&mut con, &accounts);
        assert_eq!(
            via_multi.iter().sum::<i64>(),
            total,
            "MULTI/EXEC saw a half-done transfer: {via_multi:?}"
        );
    });
    let final_sum: i64 = con.mget::<_, Vec<i64>>(&accounts).unwrap().iter().sum();
    assert_eq!(final_sum, total);
}

/// A cross-shard MSET is seen whole or not at all by a concurrent MGET.
#[test]
fn cross_shard_mset_is_never_seen_half_done() {
    let server = MoonServer::start(2, &[]);
    let k = keys_on_different_shards(2);
    let url = server.url();
    let keys = k.clone();
    let writer = thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        for i in 0..500 {
            let _: () = con.mset(&[(&keys[0], i), (&keys[1], i)]).unwrap();
        }
    });
    let mut con = server.client();
    while !writer.is_finished() {
        let v: Vec<Option<i64>> = con.mget(&k).unwrap();
        assert_eq!(v[0], v[1], "half of an MSET: {v:?}");
    }
    writer.join().unwrap();
}

/// Transactions that share shards meet them in one order. Over 3 shards, connections write
/// the same keys at once: MSETs of the pair (k0, k2), whose chain passes shard 1 without
/// stopping, MSETs of the triple (k0, k1, k2), and MULTI/EXEC SETs of the triple, which take
/// locks instead. Every write gives all its keys one value, so in any serial order k0 and k2
/// always hold the same value, and k1 too when that value came from a triple. Readers check
/// that with MGET (locks) and MULTI/EXEC while the writers run, and once more at the end. Two
/// writes that met shard 0 in one order and shard 2 in the other would leave k0 and k2
/// different for good.
#[test]
fn writes_that_share_shards_meet_them_in_one_order() {
    let server = MoonServer::start(3, &[]);
    let k = keys_on_different_shards(3);
    let mut keys = k.clone();
    keys.sort_by_key(|key| common::slot_shard(key.as_bytes(), 3));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (url, keys, done) = (server.url(), keys.clone(), done_tx.clone());
            thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for i in 0..400 {
                    match w % 3 {
                        0 => {
                            let v = format!("pair:{w}:{i}");
                            let _: () = con.mset(&[(&keys[0], &v), (&keys[2], &v)]).unwrap();
                        }
                        1 => {
                            let v = format!("triple:{w}:{i}");
                            let pairs: Vec<(&String, &String)> =
                                keys.iter().map(|k| (k, &v)).collect();
                            let _: () = con.mset(&pairs).unwrap();
                        }
                        _ => {
                            let v = format!("triple:{w}:{i}");
                            let mut p = redis::pipe();
                            p.atomic();
                            for k in &keys {
                                p.cmd("SET").arg(k).arg(&v).ignore();
                            }
                            let _: () = p.query(&mut con).unwrap();
                        }
                    }
                }
                drop(done);
            })
        })
        .collect();
    drop(done_tx);
    let consistent = |v: &[Option<String>]| {
        v[0] == v[2] && (v[0].as_deref().is_none_or(|x| x.starts_with("pair")) || v[1] == v[0])
    };
    let mut con = server.client();
    check_while_writing(done_rx, writers, || {
        let via_mget: Vec<Option<String>> = con.mget(&keys).unwrap();
        assert!(
            consistent(&via_mget),
            "MGET saw writes in two orders: {via_mget:?}"
        );
        let via_multi: Vec<Option<String>> = multi_get(&mut con, &keys);
        assert!(
            consistent(&via_multi),
            "MULTI/EXEC saw writes in two orders: {via_multi:?}"
        );
    });
    let last: Vec<Option<String>> = con.mget(&keys).unwrap();
    assert!(
        consistent(&last),
        "the writes ended in two orders: {last:?}"
    );
    assert!(last[0].is_some(), "the writes happened");
}

/// Once a client has read a key an MSET wrote, it reads every other key of that MSET as
/// written too, even one read alone on another shard: GET k0, then GET k1, while MSETs write
/// both with increasing values, never sees k1 older than k0. With a log the held part hides
/// an MSET's first key until every part is in; without one the MSET must not run its parts
/// one by one (review finding: a run chain without a log showed k0 new and then k1 old).
#[test]
fn a_key_read_after_another_is_never_older() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    for appendonly in ["yes", "no"] {
        let server = MoonServer::start(2, &["--appendonly", appendonly]);
        let k = keys_on_different_shards(2);
        let written = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (url, k, written) = (server.url(), k.clone(), written.clone());
                thread::spawn(move || {
                    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                    let mut reads = 0;
                    while !written.load(Ordering::Acquire) {
                        let v0: Option<i64> = con.get(&k[0]).unwrap();
                        let v1: Option<i64> = con.get(&k[1]).unwrap();
                        assert!(
                            v1.unwrap_or(-1) >= v0.unwrap_or(-1),
                            "appendonly {appendonly}: read k0 = {v0:?}, then k1 = {v1:?}"
                        );
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let mut con = server.client();
        for v in 0..5000 {
            let _: () = con.mset(&[(&k[0], v), (&k[1], v)]).unwrap();
        }
        written.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 100, "the reader ran during the writes");
        }
    }
}

/// SIGKILL during cross-shard transfers: after the restart the sum is intact.
#[test]
fn transfers_survive_sigkill_all_or_nothing() {
    for fsync in ["always", "everysec"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut server = MoonServer::start_in(tmp.path(), 2, &["--appendfsync", fsync]).unwrap();
        let accounts: Vec<String> = (0..4).map(|i| format!("acct:{i}")).collect();
        let mut con = server.client();
        let _: () = con
            .mset(
                &accounts
                    .iter()
                    .map(|a| (a.as_str(), 100))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let clients: Vec<_> = (0..4)
            .map(|w| {
                let (url, accounts, tx) = (server.url(), accounts.clone(), tx.clone());
                thread::spawn(move || {
                    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection())
                    else {
                        return 0;
                    };
                    let mut acked = 0u64;
                    for i in 0.. {
                        let (from, to) = (&accounts[(i + w) % 4], &accounts[(i * 3 + w + 1) % 4]);
                        let amount = (i % 7) + 1;
                        let r: redis::RedisResult<Value> = redis::pipe()
                            .atomic()
                            .cmd("DECRBY")
                            .arg(from)
                            .arg(amount)
                            .cmd("INCRBY")
                            .arg(to)
                            .arg(amount)
                            .cmd("INCR")
                            .arg("transfers")
                            .query(&mut con);
                        if r.is_err() || tx.send(()).is_err() {
                            break;
                        }
                        acked += 1;
                    }
                    acked
                })
            })
            .collect();
        drop(tx);
        for _ in 0..300 {
            rx.recv().unwrap();
        }
        server.kill();
        drop(rx);
        let acked: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
        let server = MoonServer::start_in(tmp.path(), 2, &["--appendfsync", fsync]).unwrap();
        let mut con = server.client();
        let v: Vec<i64> = con.mget(&accounts).unwrap();
        assert_eq!(
            v.iter().sum::<i64>(),
            400,
            "{fsync}: a transfer was recovered in part: {v:?}"
        );
        let count: u64 = con.get("transfers").unwrap();
        assert!(
            count >= acked && count <= acked + 4,
            "{fsync}: {count} transfers recovered, {acked} acknowledged (4 clients in flight)"
        );
    }
}

/// Recovery applies a cross-shard transaction only if every shard it names logged its part,
/// and ends that shard's log at the incomplete part: what a power cut left after it there may
/// depend on it (see `moon_shard::recovery::recovery_plan`).
#[test]
fn recovery_skips_a_transaction_missing_a_part() {
    use bytes::Bytes;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    server.terminate();
    let k = keys_on_different_shards(2);
    let incr = |shard: usize| {
        tmp.path()
            .join(format!("appendonlydir/shard-{shard}/moon.aof.1.incr.aof"))
    };
    let part = |txid: &str, key: &str, lsn: u64| {
        let header = vec![
            Bytes::from("MOON.TXPART"),
            Bytes::from(txid.to_string()),
            Bytes::from("0,1"),
        ];
        let set = vec![
            Bytes::from("SET"),
            Bytes::from(key.to_string()),
            Bytes::from(txid.to_string()),
        ];
        let mut out = Vec::new();
        moon_aof::append_group_record(lsn, &[header, set], &mut out).unwrap();
        out
    };
    let append = |shard: usize, bytes: Vec<u8>| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(incr(shard))
            .unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
    };
    // Complete: both parts. Incomplete: only shard 0's part (shard 1 died before writing).
    append(0, part("1-0-1", &k[0], 1));
    append(1, part("1-0-1", &k[1], 1));
    let before_half = std::fs::metadata(incr(0)).unwrap().len();
    append(
        0,
        [part("1-0-2", &format!("{{{}}}:half", k[0]), 2)].concat(),
    );
    // A record after the incomplete part on the same shard (possible after a power cut under
    // everysec): it goes with it.
    let mut after = Vec::new();
    let set_after = vec![
        Bytes::from("SET"),
        Bytes::from(format!("{{{}}}:after", k[0])),
        Bytes::from("x"),
    ];
    moon_aof::append_group_record(3, &[set_after], &mut after).unwrap();
    append(0, after);
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    let v: Vec<Option<String>> = con.mget(&[&k[0], &k[1]]).unwrap();
    assert_eq!(
        v,
        vec![Some("1-0-1".to_string()), Some("1-0-1".to_string())]
    );
    let half: Option<String> = con.get(format!("{{{}}}:half", k[0])).unwrap();
    assert_eq!(half, None, "an unfinished transaction's part was applied");
    let after: Option<String> = con.get(format!("{{{}}}:after", k[0])).unwrap();
    assert_eq!(after, None, "a record after an unfinished part was applied");
    assert!(
        server.log_text().contains("shard 0's log ends at LSN 2"),
        "{}",
        server.log_text()
    );
    assert_eq!(
        std::fs::metadata(incr(0)).unwrap().len(),
        before_half,
        "the log is truncated at the incomplete part"
    );
}

/// FLUSHALL across shards is a transaction: one part per shard in the logs (so a crash leaves
/// every shard flushed or none), and kill -9 after it brings back an empty keyspace.
#[test]
fn flushall_across_shards_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = MoonServer::start_in(tmp.path(), 2, &["--appendfsync", "always"]).unwrap();
    let mut con = server.client();
    let keys = keys_on_different_shards(2);
    for k in &keys {
        let _: () = con.set(k, "v").unwrap();
    }
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    let _: () = con.set("after", "1").unwrap();
    server.kill();
    for shard in 0..2 {
        let log = std::fs::read(
            tmp.path()
                .join(format!("appendonlydir/shard-{shard}/moon.aof.1.incr.aof")),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&log);
        let part = text
            .find("MOON.TXPART")
            .expect("FLUSHALL logged as a transaction part");
        assert!(text[part..].contains("FLUSHALL"), "shard {shard}: {text}");
    }
    let server = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let mut con = server.client();
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 1, "only the key written after FLUSHALL");
}
