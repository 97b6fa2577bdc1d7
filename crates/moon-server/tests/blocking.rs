//! Blocking pops against the real binary with real clients: woken by a push from another
//! connection on any shard, served in the order clients blocked, timeouts, MULTI, CLIENT
//! UNBLOCK, disconnects, pipelined commands behind a blocked one, and the pop in the log once
//! through SIGKILL.
//!
//! A test waits for a client to be blocked by watching CLIENT LIST (`flags=b`), the state the
//! server reports, never by sleeping.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{
    blocked, cmd, eventually, expect_err, keys_on_different_shards, slot_shard, wait_blocked,
    MoonServer,
};

/// Runs `words` on a new connection in a thread (it blocks there).
fn in_thread<T: redis::FromRedisValue + Send + 'static>(
    s: &MoonServer,
    words: &[&str],
) -> thread::JoinHandle<T> {
    let mut c = s.client();
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    thread::spawn(move || {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        cmd(&mut c, &refs)
    })
}

#[test]
fn a_push_on_any_shard_wakes_a_blocked_pop() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    assert_ne!(slot_shard(a.as_bytes(), 2), slot_shard(b.as_bytes(), 2));
    // Keys on both shards; the push lands on the second.
    let waiter = in_thread::<(String, String)>(&s, &["BLPOP", a, b, "0"]);
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["RPUSH", b, "job-1", "job-2"]);
    assert_eq!(waiter.join().unwrap(), (b.to_string(), "job-1".to_string()));
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", b, "0", "-1"]),
        ["job-2"]
    );
    assert_eq!(blocked(&mut c), 0);
    // Something there already: no wait at all.
    let got: (String, String) = cmd(&mut c, &["BRPOP", a, b, "0"]);
    assert_eq!(got, (b.to_string(), "job-2".to_string()));
    // BZPOPMIN / BZPOPMAX and BZMPOP, woken by ZADD.
    let z = in_thread::<(String, String, String)>(&s, &["BZPOPMIN", a, "0"]);
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["ZADD", a, "2", "two", "1", "one"]);
    assert_eq!(z.join().unwrap(), (a.to_string(), "one".into(), "1".into()));
    let z = in_thread::<redis::Value>(&s, &["BZMPOP", "0", "2", b, a, "MAX", "COUNT", "5"]);
    assert_eq!(
        z.join().unwrap(),
        redis::Value::Array(vec![
            redis::Value::BulkString(a.as_bytes().to_vec()),
            redis::Value::Array(vec![redis::Value::Array(vec![
                redis::Value::BulkString(b"two".to_vec()),
                redis::Value::BulkString(b"2".to_vec()),
            ])])
        ])
    );
    // A list does not wake a sorted-set pop, nor the reverse.
    let z = in_thread::<redis::Value>(&s, &["BZPOPMAX", a, "0.3"]);
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["RPUSH", a, "x"]);
    assert_eq!(z.join().unwrap(), redis::Value::Nil);
    assert_eq!(cmd::<i64>(&mut c, &["LLEN", a]), 1);
}

#[test]
fn blocked_clients_are_served_in_the_order_they_blocked() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let mut waiters = Vec::new();
    for i in 0..3 {
        waiters.push(in_thread::<(String, String)>(&s, &["BLPOP", "queue", "0"]));
        wait_blocked(&mut c, i + 1);
    }
    cmd::<i64>(&mut c, &["RPUSH", "queue", "1", "2", "3"]);
    let got: Vec<String> = waiters.into_iter().map(|w| w.join().unwrap().1).collect();
    assert_eq!(got, ["1", "2", "3"]);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "queue"]), 0);
}

#[test]
fn blmove_across_shards_and_timeouts() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (src, dst) = (k[0].as_str(), k[1].as_str());
    let mover = in_thread::<String>(&s, &["BLMOVE", src, dst, "LEFT", "RIGHT", "0"]);
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["LPUSH", src, "task"]);
    assert_eq!(mover.join().unwrap(), "task");
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", dst, "0", "-1"]),
        ["task"]
    );
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", src]), 0);
    // BRPOPLPUSH, the older name.
    let mover = in_thread::<String>(&s, &["BRPOPLPUSH", src, dst, "0"]);
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["RPUSH", src, "second"]);
    assert_eq!(mover.join().unwrap(), "second");
    // A timeout: nil once it passed (a null bulk for BLMOVE, a null array for BLPOP).
    let t0 = Instant::now();
    let got: Option<String> = cmd(&mut c, &["BLMOVE", "empty", dst, "LEFT", "LEFT", "0.2"]);
    assert_eq!(got, None);
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        cmd::<redis::Value>(&mut c, &["BLPOP", "empty", "0.05"]),
        redis::Value::Nil
    );
    assert_eq!(
        cmd::<redis::Value>(&mut c, &["BLMPOP", "0.05", "1", "empty", "LEFT"]),
        redis::Value::Nil
    );
    // Redis's errors.
    assert_eq!(
        expect_err(&mut c, &["BLPOP", "k", "-1"]),
        "ERR timeout is negative"
    );
    assert_eq!(
        expect_err(&mut c, &["BLPOP", "k", "soon"]),
        "ERR timeout is not a float or out of range"
    );
    cmd::<()>(&mut c, &["SET", "str", "v"]);
    assert_eq!(
        expect_err(&mut c, &["BLPOP", "str", "0"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert_eq!(
        expect_err(&mut c, &["BLMPOP", "0", "0", "k", "LEFT"]),
        "ERR numkeys should be greater than 0"
    );
}

#[test]
fn inside_multi_a_blocking_pop_does_not_wait() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (replies,): (Vec<redis::Value>,) = redis::pipe()
        .atomic()
        .cmd("BLPOP")
        .arg(&k[0])
        .arg(&k[1])
        .arg(0)
        .cmd("BZPOPMIN")
        .arg("z")
        .arg(0)
        .cmd("BLMOVE")
        .arg(&k[0])
        .arg(&k[1])
        .arg("LEFT")
        .arg("LEFT")
        .arg(0)
        .query(&mut c)
        .map(|v: Vec<redis::Value>| (v,))
        .expect("EXEC");
    assert_eq!(replies, vec![redis::Value::Nil; 3]);
}

#[test]
fn client_unblock_and_disconnects() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let mut w = s.client();
    let id: i64 = cmd(&mut w, &["CLIENT", "ID"]);
    let waiter = thread::spawn(move || cmd::<redis::Value>(&mut w, &["BLPOP", "k", "0"]));
    wait_blocked(&mut c, 1);
    assert_eq!(
        cmd::<i64>(&mut c, &["CLIENT", "UNBLOCK", &id.to_string()]),
        1
    );
    assert_eq!(waiter.join().unwrap(), redis::Value::Nil);
    assert_eq!(
        cmd::<i64>(&mut c, &["CLIENT", "UNBLOCK", &id.to_string()]),
        0,
        "not blocked"
    );
    let mut w = s.client();
    let id: i64 = cmd(&mut w, &["CLIENT", "ID"]);
    let waiter = thread::spawn(move || {
        redis::cmd("BZPOPMIN")
            .arg("z")
            .arg(0)
            .query::<redis::Value>(&mut w)
            .map_err(|e| common::err_text(&e))
    });
    wait_blocked(&mut c, 1);
    assert_eq!(
        cmd::<i64>(&mut c, &["CLIENT", "UNBLOCK", &id.to_string(), "ERROR"]),
        1
    );
    assert_eq!(
        waiter.join().unwrap(),
        Err("UNBLOCKED client unblocked via CLIENT UNBLOCK".to_string())
    );
    assert!(expect_err(&mut c, &["CLIENT", "UNBLOCK", "1", "LATER"]).contains("TIMEOUT or ERROR"));
    // A client that goes away while blocked takes nothing.
    {
        use std::io::Write;
        let mut gone = std::net::TcpStream::connect(s.addr).expect("connect");
        gone.write_all(b"*3\r\n$5\r\nBLPOP\r\n$10\r\nleft-alone\r\n$1\r\n0\r\n")
            .expect("send");
        wait_blocked(&mut c, 1);
    }
    wait_blocked(&mut c, 0);
    cmd::<i64>(&mut c, &["RPUSH", "left-alone", "x"]);
    assert_eq!(cmd::<i64>(&mut c, &["LLEN", "left-alone"]), 1);
}

/// A raw connection: a blocked command holds back the commands pipelined after it, which run
/// once it is served, in order.
#[test]
fn commands_behind_a_blocked_one_wait_for_it() {
    use std::io::{Read, Write};
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let mut raw = std::net::TcpStream::connect(s.addr).expect("connect");
    raw.write_all(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nLLEN\r\n$1\r\nq\r\n")
        .expect("send");
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["RPUSH", "q", "a", "b"]);
    let want = b"*2\r\n$1\r\nq\r\n$1\r\na\r\n+PONG\r\n:1\r\n";
    let mut got = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while got.len() < want.len() {
        let mut buf = [0u8; 256];
        let n = raw.read(&mut buf).expect("reply");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// The served pop is in the log once: after SIGKILL the element is neither back nor lost.
#[test]
fn a_served_pop_is_logged_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (src, dst) = (k[0].as_str(), k[1].as_str());
    let popper = in_thread::<(String, String)>(&s, &["BLPOP", src, "0"]);
    let mover = in_thread::<String>(&s, &["BLMOVE", src, dst, "RIGHT", "LEFT", "0"]);
    wait_blocked(&mut c, 2);
    cmd::<i64>(&mut c, &["RPUSH", src, "first", "second", "third"]);
    assert_eq!(popper.join().unwrap().1, "first");
    assert_eq!(mover.join().unwrap(), "third");
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", src, "0", "-1"]),
        ["second"]
    );
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", dst, "0", "-1"]),
        ["third"]
    );
}

/// Review findings: SWAPDB wakes a client blocked on a key the swap filled; under CLIENT
/// REPLY OFF the served reply is dropped; a timed-out BLMOVE answers a null array (RESP2
/// `*-1`, as Redis's timeout reply), not BLMOVE's MULTI nil.
#[test]
fn swapdb_wakes_reply_off_is_silent_and_timeouts_answer_a_null_array() {
    use std::io::{Read, Write};
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let waiter = in_thread::<(String, String)>(&s, &["BLPOP", "k", "0"]);
    wait_blocked(&mut c, 1);
    cmd::<()>(&mut c, &["SELECT", "1"]);
    cmd::<i64>(&mut c, &["RPUSH", "k", "from-db-1"]);
    cmd::<()>(&mut c, &["SWAPDB", "0", "1"]);
    assert_eq!(waiter.join().unwrap().1, "from-db-1");
    cmd::<()>(&mut c, &["SELECT", "0"]);

    let mut raw = std::net::TcpStream::connect(s.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_all = |raw: &mut std::net::TcpStream, want: &[u8]| {
        let mut got = Vec::new();
        while got.len() < want.len() {
            let mut buf = [0u8; 256];
            let n = raw.read(&mut buf).expect("reply");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    };
    raw.write_all(
        b"*6\r\n$6\r\nBLMOVE\r\n$1\r\nx\r\n$1\r\ny\r\n$4\r\nLEFT\r\n$4\r\nLEFT\r\n$4\r\n0.05\r\n",
    )
    .expect("send");
    read_all(&mut raw, b"*-1\r\n");
    // REPLY OFF: the served element is not sent; the PING after REPLY ON is the next reply.
    raw.write_all(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n")
        .expect("send");
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["RPUSH", "q", "v"]);
    wait_blocked(&mut c, 0);
    raw.write_all(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n*1\r\n$4\r\nPING\r\n")
        .expect("send");
    read_all(&mut raw, b"+OK\r\n+PONG\r\n");
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "q"]), 0, "it was served");
}

/// Review finding: commands piled up behind a blocked one count against the query buffer
/// limit; past it the client is closed, the server keeps serving.
#[test]
fn commands_piled_behind_a_blocked_one_are_bounded() {
    use std::io::Write;
    let s = MoonServer::start(1, &["--client-query-buffer-limit", "1mb"]);
    let mut c = s.client();
    let mut raw = std::net::TcpStream::connect(s.addr).expect("connect");
    raw.write_all(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nk\r\n$1\r\n0\r\n")
        .expect("send");
    wait_blocked(&mut c, 1);
    let ping = b"*1\r\n$4\r\nPING\r\n";
    let mut closed = false;
    for _ in 0..200 {
        let chunk: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 4096)
            .collect();
        if raw.write_all(&chunk).is_err() {
            closed = true;
            break;
        }
    }
    assert!(
        closed || eventually(Duration::from_secs(10), || blocked(&mut c) == 0),
        "the client was closed"
    );
    wait_blocked(&mut c, 0);
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");
}

/// Clients that send their blocking commands back to back, without waiting to see them
/// blocked (as Redis's own units do), are served in that order: the attempt and the queueing
/// are one step on the key's shard.
#[test]
fn back_to_back_blocking_commands_keep_their_order() {
    use std::io::{Read, Write};
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    cmd::<()>(&mut c, &["SET", "target1{t}", "nolist"]);
    let mut first = std::net::TcpStream::connect(s.addr).expect("connect");
    let mut second = std::net::TcpStream::connect(s.addr).expect("connect");
    first
        .write_all(b"*4\r\n$10\r\nBRPOPLPUSH\r\n$8\r\nblist{t}\r\n$10\r\ntarget1{t}\r\n$1\r\n0\r\n")
        .expect("send");
    wait_blocked(&mut c, 1);
    second
        .write_all(b"*4\r\n$10\r\nBRPOPLPUSH\r\n$8\r\nblist{t}\r\n$10\r\ntarget2{t}\r\n$1\r\n0\r\n")
        .expect("send");
    wait_blocked(&mut c, 2);
    cmd::<i64>(&mut c, &["LPUSH", "blist{t}", "foo"]);
    for (raw, want) in [
        (&mut first, &b"-WRONGTYPE"[..]),
        (&mut second, &b"$3\r\nfoo\r\n"[..]),
    ] {
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let mut buf = [0u8; 256];
            let n = raw.read(&mut buf).expect("reply");
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(want), "{:?}", String::from_utf8_lossy(&got));
    }
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", "target2{t}", "0", "-1"]),
        ["foo"]
    );
}

/// As in Redis, a blocked client is served right after the command that filled its key,
/// before any other command: a pipelined `RPUSH k x; LPOP k` from another client finds the
/// element already gone to the blocked client.
#[test]
fn the_blocked_client_is_served_before_the_next_command() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    for round in 0..20 {
        let waiter = in_thread::<(String, String)>(&s, &["BLPOP", "k", "0"]);
        wait_blocked(&mut c, 1);
        let (pushed, popped): (i64, Option<String>) = redis::pipe()
            .cmd("RPUSH")
            .arg("k")
            .arg("x")
            .cmd("LPOP")
            .arg("k")
            .query(&mut c)
            .expect("pipeline");
        assert_eq!(pushed, 1);
        assert_eq!(popped, None, "round {round}: the blocked client had it");
        assert_eq!(waiter.join().unwrap().1, "x");
    }
}

/// Found with Redis's "BLMPOP with multiple blocked clients": a client blocked on two keys
/// that both fill in one transaction is served once; every element reaches a client.
#[test]
fn a_client_blocked_on_two_keys_filled_together_is_served_once() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let mut waiters = Vec::new();
    let forms: [&[&str]; 4] = [
        &["BLMPOP", "0", "2", "l1", "l2", "LEFT", "COUNT", "1"],
        &["BLMPOP", "0", "2", "l1", "l2", "RIGHT", "COUNT", "10"],
        &["BLMPOP", "0", "2", "l1", "l2", "LEFT", "COUNT", "10"],
        &["BLMPOP", "0", "2", "l1", "l2", "RIGHT", "COUNT", "1"],
    ];
    for (i, f) in forms.iter().enumerate() {
        waiters.push(in_thread::<(String, Vec<String>)>(&s, f));
        wait_blocked(&mut c, i + 1);
    }
    let _: (i64, i64) = redis::pipe()
        .atomic()
        .cmd("LPUSH")
        .arg("l1")
        .arg(&["a", "b", "c", "d", "e"])
        .cmd("LPUSH")
        .arg("l2")
        .arg(&["1", "2", "3", "4", "5"])
        .query(&mut c)
        .expect("EXEC");
    let mut got: Vec<(String, Vec<String>)> = Vec::new();
    for w in waiters.drain(..3) {
        got.push(w.join().unwrap());
    }
    assert_eq!(got[0], ("l1".to_string(), vec!["e".to_string()]));
    assert_eq!(
        got[1],
        (
            "l1".to_string(),
            ["a", "b", "c", "d"].map(String::from).to_vec()
        )
    );
    assert_eq!(
        got[2],
        (
            "l2".to_string(),
            ["5", "4", "3", "2", "1"].map(String::from).to_vec()
        )
    );
    cmd::<i64>(&mut c, &["LPUSH", "l2", "1", "2", "3"]);
    let last = waiters.pop().unwrap().join().unwrap();
    assert_eq!(last, ("l2".to_string(), vec!["1".to_string()]));
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", "l2", "0", "-1"]),
        ["3", "2"]
    );
}

/// Review finding: a client blocked on the same key twice is served once; the second element
/// stays in the list.
#[test]
fn a_key_named_twice_serves_once() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let waiter = in_thread::<(String, String)>(&s, &["BLPOP", "k", "k", "0"]);
    wait_blocked(&mut c, 1);
    let _: (i64, i64) = redis::pipe()
        .cmd("RPUSH")
        .arg("k")
        .arg("a")
        .cmd("RPUSH")
        .arg("k")
        .arg("b")
        .query(&mut c)
        .expect("pipeline");
    assert_eq!(waiter.join().unwrap().1, "a");
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["LRANGE", "k", "0", "-1"]),
        ["b"]
    );
}
