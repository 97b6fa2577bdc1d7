//! The wire: pipelines, malformed input, inline commands, AUTH, connection limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn raw(s: &MoonServer) -> TcpStream {
    let t = TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    t
}

/// Reads until `want` bytes arrived or the peer closed.
fn read_n(t: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        match t.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[test]
fn pipeline_of_1000_commands_replies_in_order() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..500 {
        p.cmd("SET").arg(format!("p:{i}")).arg(i);
        p.cmd("INCR").arg(format!("p:{i}"));
    }
    let replies: Vec<redis::Value> = p.query(&mut c).unwrap();
    assert_eq!(replies.len(), 1000);
    for i in 0..500 {
        assert_eq!(replies[2 * i], redis::Value::Okay);
        assert_eq!(replies[2 * i + 1], redis::Value::Int(i as i64 + 1));
    }
    // Mixed pipeline: single-key, multi-key across shards, connection commands and errors.
    let mut p = redis::pipe();
    p.cmd("MGET").arg("p:0").arg("p:1").arg("p:2");
    p.cmd("PING");
    p.cmd("DEL").arg("p:0").arg("p:1");
    p.cmd("EXISTS").arg("p:0").arg("p:1").arg("p:2");
    p.cmd("DBSIZE");
    let (mget, pong, del, exists, dbsize): (Vec<i64>, String, i64, i64, i64) =
        p.query(&mut c).unwrap();
    assert_eq!(
        (mget, pong.as_str(), del, exists, dbsize),
        (vec![1, 2, 3], "PONG", 2, 1, 498)
    );
}

#[test]
fn pipeline_sent_byte_by_byte_gives_same_replies() {
    let s = MoonServer::start(2, &[]);
    let mut t = raw(&s);
    t.set_nodelay(true).unwrap();
    let req =
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$2\r\nhi\r\nGET a\r\n*2\r\n$4\r\nECHO\r\n$3\r\nx\ny\r\n";
    for b in req.iter() {
        t.write_all(&[*b]).unwrap();
    }
    let want = b"+OK\r\n$2\r\nhi\r\n$3\r\nx\ny\r\n";
    assert_eq!(read_n(&mut t, want.len()), want.to_vec());
}

#[test]
fn inline_commands_like_telnet() {
    let s = MoonServer::start(2, &[]);
    let mut t = raw(&s);
    t.write_all(b"SET greeting \"hello world\"\r\nGET greeting\nPING\r\n")
        .unwrap();
    let want = b"+OK\r\n$11\r\nhello world\r\n+PONG\r\n";
    assert_eq!(read_n(&mut t, want.len()), want.to_vec());
}

#[test]
fn malformed_request_closes_only_that_connection() {
    let s = MoonServer::start(2, &[]);
    let mut good = s.client();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut good)
        .unwrap();
    for (bad, reply) in [
        (
            &b"*1\r\n$abc\r\n"[..],
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*99999999\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$999999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"SET \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ] {
        let mut t = raw(&s);
        // A valid command first: its reply arrives before the error.
        t.write_all(b"PING\r\n").unwrap();
        t.write_all(bad).unwrap();
        let got = read_n(&mut t, usize::MAX);
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("+PONG\r\n{reply}"),
            "for {:?}",
            String::from_utf8_lossy(bad)
        );
        // The other connection keeps working.
        assert_eq!(
            redis::cmd("GET")
                .arg("k")
                .query::<String>(&mut good)
                .unwrap(),
            "v"
        );
    }
    // An oversized inline request (no newline within 64 KB).
    let mut t = raw(&s);
    t.write_all(&vec![b'a'; 70 * 1024]).unwrap();
    let got = read_n(&mut t, usize::MAX);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: too big inline request\r\n"
    );
    assert_eq!(
        redis::cmd("GET")
            .arg("k")
            .query::<String>(&mut good)
            .unwrap(),
        "v"
    );
}

#[test]
fn proto_max_bulk_len_is_enforced() {
    let s = MoonServer::start(1, &["--proto-max-bulk-len", "1mb"]);
    let mut c = s.client();
    let ok = vec![b'x'; 1024 * 1024];
    let _: () = redis::cmd("SET").arg("big").arg(&ok).query(&mut c).unwrap();
    assert_eq!(
        redis::cmd("STRLEN")
            .arg("big")
            .query::<i64>(&mut c)
            .unwrap(),
        1024 * 1024
    );
    let mut t = raw(&s);
    t.write_all(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", 1024 * 1024 + 1).as_bytes())
        .unwrap();
    let got = read_n(&mut t, usize::MAX);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
}

#[test]
fn auth_with_requirepass() {
    let s = MoonServer::start(2, &["--requirepass", "s3cret"]);
    let mut c = s.client();
    assert_eq!(
        expect_err(&mut c, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        expect_err(&mut c, &["PING"]),
        "NOAUTH Authentication required."
    );
    // Redis's order: unknown command and arity first, then authentication, then what only
    // the command itself would find (MSET's key without a value).
    assert_eq!(
        expect_err(&mut c, &["MSET", "a", "1", "b"]),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        expect_err(&mut c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        expect_err(&mut c, &["AUTH", "wrong"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        expect_err(&mut c, &["AUTH", "someone", "s3cret"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    let _: () = redis::cmd("AUTH").arg("s3cret").query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    // A client given the password in its URL authenticates by itself.
    let url = format!("redis://:s3cret@{}/", s.addr);
    let mut c2 = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(
        redis::cmd("GET").arg("k").query::<String>(&mut c2).unwrap(),
        "v"
    );
    // HELLO ... AUTH
    let mut c3 = s.client();
    let _: redis::Value = redis::cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("default")
        .arg("s3cret")
        .query(&mut c3)
        .unwrap();
    assert_eq!(
        redis::cmd("GET").arg("k").query::<String>(&mut c3).unwrap(),
        "v"
    );
    // CONFIG SET requirepass applies to new connections.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query(&mut c)
        .unwrap();
    let mut c4 = s.client();
    assert_eq!(
        redis::cmd("GET").arg("k").query::<String>(&mut c4).unwrap(),
        "v"
    );
    // Without a password configured, AUTH says so.
    assert_eq!(
        expect_err(&mut c4, &["AUTH", "x"]),
        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    );
}

#[test]
fn maxclients_refuses_extra_connections() {
    let s = MoonServer::start(1, &["--maxclients", "2"]);
    let mut a = s.client();
    let mut b = s.client();
    let _: () = redis::cmd("PING").query(&mut a).unwrap();
    let _: () = redis::cmd("PING").query(&mut b).unwrap();
    let mut t = raw(&s);
    let got = read_n(&mut t, usize::MAX);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
    drop(b);
    // Once a slot frees up, connections are accepted again.
    assert!(eventually(Duration::from_secs(10), || {
        redis::Client::open(s.url())
            .unwrap()
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }));
    assert_eq!(redis::cmd("PING").query::<String>(&mut a).unwrap(), "PONG");
}

/// A cross-shard command followed by a malformed one in the same pipeline: the pipeline runs
/// as one transaction, and the malformed command must get its arity error there, not take a
/// shard down (it used to panic a shard's executor while routing, after which every command
/// touching that shard hung).
#[test]
fn a_malformed_command_in_a_cross_shard_pipeline_gets_its_error_and_the_server_keeps_serving() {
    let s = MoonServer::start(2, &[]);
    let mut t = raw(&s);
    t.write_all(
        b"*7\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\nc\r\n$1\r\n3\r\n*1\r\n$3\r\nGET\r\n",
    )
    .unwrap();
    let want = "+OK\r\n-ERR wrong number of arguments for 'get' command\r\n";
    let got = read_n(&mut t, want.len());
    assert_eq!(String::from_utf8_lossy(&got), want);
    let mut c = s.client();
    let _: () = redis::cmd("MSET")
        .arg(&["a", "x", "b", "y", "c", "z"])
        .query(&mut c)
        .expect("MSET across both shards still works");
    let v: Vec<String> = redis::cmd("MGET")
        .arg(&["a", "b", "c"])
        .query(&mut c)
        .unwrap();
    assert_eq!(v, ["x", "y", "z"]);
}

/// A panic on a shard's thread (injected with the `MOON_PANIC_ON` test seam) stops the whole
/// process at once, non-zero, with the panic in its log — never a port left open with a dead
/// shard behind it.
#[test]
fn a_panic_on_a_shard_stops_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s =
        MoonServer::start_with_env(tmp.path(), 2, &[], &[("MOON_PANIC_ON", "echo")]).unwrap();
    let mut c = s.client();
    let _: () = redis::Commands::set(&mut c, "k", "v").unwrap();
    let r = redis::cmd("ECHO").arg("boom").query::<String>(&mut c);
    assert!(r.is_err(), "no reply from a panicking shard");
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits");
    assert_eq!(status.code(), Some(101));
    assert!(s.log_text().contains("injected panic"), "{}", s.log_text());
    // Nothing acknowledged was lost.
    let s = MoonServer::start_in(tmp.path(), 2, &[]).unwrap();
    let v: String = redis::Commands::get(&mut s.client(), "k").unwrap();
    assert_eq!(v, "v");
}

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A client that pipelines 2,000 GETs of a 1 MB value and reads nothing: the server stops
/// reading it once a step of replies is pending (backpressure) instead of building 2 GB of
/// replies, and other clients keep being served.
#[test]
fn a_client_that_never_reads_cannot_exhaust_the_server() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let _: () = redis::Commands::set(&mut c, "big", vec![b'x'; 1 << 20]).unwrap();
    let before = rss_bytes(s.pid());
    let mut hog = raw(&s);
    let pipeline: Vec<u8> = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(2000);
    hog.write_all(&pipeline).unwrap();
    // Watch the server for a while as it works through what it can: its memory stays bounded.
    let mut peak = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        peak = peak.max(rss_bytes(s.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        peak < before + (300 << 20),
        "RSS grew from {} MB to {} MB",
        before >> 20,
        peak >> 20
    );
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG", "other clients are served");
    let n: usize = redis::cmd("STRLEN").arg("big").query(&mut c).unwrap();
    assert_eq!(n, 1 << 20);
}

/// `timeout`: a client idle longer than it is disconnected; an active one is not.
/// (The test waits for time to pass over the timeout: that is what it tests.)
#[test]
fn idle_clients_are_closed_after_timeout() {
    let s = MoonServer::start(1, &["--timeout", "1"]);
    let mut idle = raw(&s);
    let mut active = s.client();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        let pong: String = redis::cmd("PING").query(&mut active).unwrap();
        assert_eq!(pong, "PONG", "an active client stays connected");
    }
    let mut buf = [0u8; 16];
    assert_eq!(
        idle.read(&mut buf).unwrap_or(0),
        0,
        "the idle client was closed"
    );
    let v: String = redis::cmd("CONFIG")
        .arg("GET")
        .arg("timeout")
        .query::<Vec<String>>(&mut active)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(v, "1");
}

/// `client-query-buffer-limit`: a request that grows past it closes that connection (the
/// server does not buffer it further); other clients keep being served.
#[test]
fn a_query_larger_than_the_buffer_limit_closes_the_connection() {
    let s = MoonServer::start(
        1,
        &[
            "--client-query-buffer-limit",
            "1mb",
            "--proto-max-bulk-len",
            "4mb",
        ],
    );
    let mut t = raw(&s);
    // One SET whose value (2 MB, under proto-max-bulk-len) is more than the buffer may hold.
    let _ = t.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2097152\r\n");
    let _ = t.write_all(&vec![b'x'; 2 << 20]);
    let mut buf = [0u8; 64];
    assert_eq!(t.read(&mut buf).unwrap_or(0), 0, "closed without a reply");
    let mut c = s.client();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let k: Option<String> = redis::Commands::get(&mut c, "k").unwrap();
    assert_eq!(k, None);
}
