//! Issue 29, what an operator reads and does: INFO commandstats (calls, rejections and
//! failures counted as Redis counts them, on every shard), SLOWLOG, and commands refused
//! inside MULTI — against the real binary through the `redis` crate.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::*;

/// INFO commandstats as `command -> (calls, rejected_calls, failed_calls)`.
fn commandstats(c: &mut redis::Connection) -> BTreeMap<String, (u64, u64, u64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let (name, fields) = rest.split_once(':').expect("name:fields");
        let field = |k: &str| -> u64 {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {line}"))
        };
        assert!(fields.contains(",usec_per_call="), "{line}");
        out.insert(
            name.to_string(),
            (
                field("calls"),
                field("rejected_calls"),
                field("failed_calls"),
            ),
        );
    }
    out
}

fn stat(c: &mut redis::Connection, name: &str) -> (u64, u64, u64) {
    commandstats(c).get(name).copied().unwrap_or_default()
}

fn resetstat(c: &mut redis::Connection) {
    cmd::<()>(c, &["CONFIG", "RESETSTAT"]);
}

/// Redis's info unit, case by case: a failed call ran and answered an error; a rejected one
/// was refused before it ran and is not a call. Keys on both shards, so that what runs on the
/// other shard's thread is gathered too.
#[test]
fn commandstats_count_calls_rejections_and_failures_as_redis_does() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let keys = keys_on_different_shards(2);
    resetstat(&mut c);
    for k in &keys {
        cmd::<()>(&mut c, &["SET", k, "v"]);
    }
    assert_eq!(stat(&mut c, "set"), (2, 0, 0));
    // A failed call: AUTH with a wrong password.
    expect_err(&mut c, &["AUTH", "nope"]);
    assert_eq!(stat(&mut c, "auth"), (1, 0, 1));
    // Wrong arity: rejected, not a call.
    expect_err(&mut c, &["SET", "k"]);
    assert_eq!(stat(&mut c, "set"), (2, 1, 0));
    // Inside MULTI: a rejected command makes EXEC fail (a failed EXEC call).
    cmd::<()>(&mut c, &["MULTI"]);
    expect_err(&mut c, &["GET"]);
    assert!(expect_err(&mut c, &["EXEC"]).starts_with("EXECABORT"));
    assert_eq!(stat(&mut c, "get"), (0, 1, 0));
    assert_eq!(stat(&mut c, "multi"), (1, 0, 0));
    assert_eq!(stat(&mut c, "exec"), (1, 0, 1));
    // EXEC without MULTI fails; an EXEC whose command failed inside does not.
    expect_err(&mut c, &["EXEC"]);
    assert_eq!(stat(&mut c, "exec"), (2, 0, 2));
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<()>(&mut c, &["LPUSH", &keys[0], "x"]);
    let _ = redis::cmd("EXEC").query::<redis::Value>(&mut c);
    assert_eq!(stat(&mut c, "exec"), (3, 0, 2));
    assert_eq!(stat(&mut c, "lpush"), (1, 0, 1));
    // A script's commands are calls of their own, by subcommand.
    let _: () = redis::cmd("EVAL")
        .arg("redis.pcall('XGROUP', 'CREATECONSUMER', KEYS[1], 'g', 'c') return")
        .arg(1)
        .arg(&keys[1])
        .query(&mut c)
        .unwrap();
    assert_eq!(stat(&mut c, "xgroup|createconsumer"), (1, 0, 1));
    assert_eq!(stat(&mut c, "eval"), (1, 0, 0));
    expect_err(
        &mut c,
        &["EVALSHA", "0000000000000000000000000000000000000000", "0"],
    );
    assert_eq!(stat(&mut c, "evalsha"), (1, 0, 1));
    // OOM: rejected.
    cmd::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);
    assert!(expect_err(&mut c, &["SET", &keys[1], "w"]).starts_with("OOM"));
    // EXEC refused for OOM says so as Redis's EXEC does.
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<()>(&mut c, &["SET", &keys[1], "w"]);
    let e = expect_err(&mut c, &["EXEC"]);
    assert!(
        e.starts_with("EXECABORT Transaction discarded because of: OOM"),
        "{e}"
    );
    assert_eq!(stat(&mut c, "set"), (2, 2, 0));
    cmd::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(stat(&mut c, "set"), (2, 2, 0));
    // An ACL denial: rejected.
    cmd::<()>(
        &mut c,
        &[
            "ACL", "SETUSER", "alice", "on", ">pw", "~*", "+get", "+info",
        ],
    );
    let mut alice = s.client();
    cmd::<()>(&mut alice, &["AUTH", "alice", "pw"]);
    assert!(expect_err(&mut alice, &["SET", &keys[0], "x"]).starts_with("NOPERM"));
    assert_eq!(stat(&mut c, "set"), (2, 3, 0));
    // A command spread over both shards is one call; so are SCAN and DBSIZE, which walk
    // every shard.
    resetstat(&mut c);
    cmd::<()>(&mut c, &["MSET", &keys[0], "1", &keys[1], "2"]);
    cmd::<i64>(&mut c, &["DEL", &keys[0], &keys[1]]);
    cmd::<i64>(&mut c, &["DBSIZE"]);
    cmd::<redis::Value>(&mut c, &["SCAN", "0"]);
    cmd::<redis::Value>(&mut c, &["KEYS", "*"]);
    for name in ["mset", "del", "dbsize", "scan", "keys"] {
        assert_eq!(stat(&mut c, name), (1, 0, 0), "{name}");
    }
    // Subcommands are counted apart; a reset clears every shard.
    cmd::<Vec<String>>(&mut c, &["CONFIG", "GET", "maxmemory"]);
    assert_eq!(stat(&mut c, "config|get").0, 1);
    resetstat(&mut c);
    let after = commandstats(&mut c);
    assert!(
        after.keys().all(|k| k == "config|resetstat"),
        "after a reset only the reset itself is counted: {after:?}"
    );
}

/// A blocked call counts once, and fails when CLIENT UNBLOCK ends it with an error.
#[test]
fn a_blocked_call_unblocked_with_an_error_is_one_failed_call() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    resetstat(&mut c);
    let mut blocked = s.client();
    let id: i64 = cmd(&mut blocked, &["CLIENT", "ID"]);
    let waiter = std::thread::spawn(move || {
        redis::cmd("BLPOP")
            .arg("queue")
            .arg(0)
            .query::<redis::Value>(&mut blocked)
            .map_err(|e| err_text(&e))
    });
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["CLIENT", "UNBLOCK", &id.to_string(), "ERROR"]);
    let ended = waiter.join().unwrap().expect_err("unblocked with an error");
    assert!(ended.starts_with("UNBLOCKED"), "{ended}");
    assert_eq!(stat(&mut c, "blpop"), (1, 0, 1));
    // A served call: one call, and one SLOWLOG entry, made when it was served (Redis's
    // "blocking command is reported only after unblocked").
    cmd::<()>(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let waiter = in_background(&s, &["BLPOP", "queue", "0"]);
    wait_blocked(&mut c, 1);
    cmd::<()>(&mut c, &["SLOWLOG", "RESET"]);
    let logged = |c: &mut redis::Connection| {
        args_of(&slowlog(c, Some(-1)))
            .into_iter()
            .filter(|a| a.starts_with("BLPOP"))
            .count()
    };
    assert_eq!(logged(&mut c), 0, "logged while blocked");
    cmd::<i64>(&mut c, &["LPUSH", "queue", "job"]);
    assert!(waiter.join().unwrap().is_ok());
    assert_eq!(logged(&mut c), 1);
    assert_eq!(stat(&mut c, "blpop"), (2, 0, 1));
}

/// SHUTDOWN inside MULTI is refused (Redis's `no-multi`), so an EXEC cannot stop the server
/// by surprise; the transaction fails whole.
#[test]
fn shutdown_inside_multi_is_refused_and_the_server_keeps_serving() {
    let s = MoonServer::start(1, &[]);
    let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
    raw.write_all(b"MULTI\r\nSET k v\r\nSHUTDOWN\r\nEXEC\r\nPING\r\n")
        .unwrap();
    let expected = "+OK\r\n+QUEUED\r\n-ERR Command not allowed inside a transaction\r\n-EXECABORT Transaction discarded because of previous errors.\r\n+PONG\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < expected.len() {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), expected);
    let mut c = s.client();
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "k"]), None);
}

/// One SLOWLOG GET entry: (id, time, usec, args, addr, name).
type SlowEntry = (i64, i64, i64, Vec<String>, String, String);

fn slowlog(c: &mut redis::Connection, count: Option<i64>) -> Vec<SlowEntry> {
    let mut command = redis::cmd("SLOWLOG");
    command.arg("GET");
    if let Some(n) = count {
        command.arg(n);
    }
    command.query(c).expect("SLOWLOG GET")
}

fn args_of(entries: &[SlowEntry]) -> Vec<String> {
    entries.iter().map(|e| e.3.join(" ")).collect()
}

/// SLOWLOG as Redis's slowlog unit checks it, with the keys on both shards: every shard's
/// entries in one newest-first list, the client's address and name on each, long commands
/// trimmed, secrets redacted, EXEC left out for the commands it ran, and the two settings.
#[test]
fn slowlog_keeps_what_was_slow_on_every_shard() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let keys = keys_on_different_shards(2);
    cmd::<()>(&mut c, &["CLIENT", "SETNAME", "ops"]);
    let addr: String = cmd::<String>(&mut c, &["CLIENT", "INFO"])
        .split(' ')
        .find_map(|f| f.strip_prefix("addr=").map(str::to_string))
        .expect("addr");
    // By default (10 ms) quick commands are not logged.
    cmd::<()>(&mut c, &["SLOWLOG", "RESET"]);
    cmd::<()>(&mut c, &["SET", &keys[0], "v"]);
    assert_eq!(cmd::<i64>(&mut c, &["SLOWLOG", "LEN"]), 0);
    // A script that runs 30 ms is.
    cmd::<()>(
        &mut c,
        &["CONFIG", "SET", "slowlog-log-slower-than", "20000"],
    );
    let spin = "local x = 0 for i = 1, 20000000 do x = x + i end return 1";
    cmd::<i64>(&mut c, &["EVAL", spin, "1", &keys[1]]);
    let entries = slowlog(&mut c, None);
    assert_eq!(args_of(&entries), [format!("EVAL {spin} 1 {}", keys[1])]);
    assert!(entries[0].2 >= 20_000, "{entries:?}");
    assert_eq!(
        (entries[0].4.as_str(), entries[0].5.as_str()),
        (addr.as_str(), "ops")
    );
    // A quick command pipelined after a slow one is timed on its own.
    cmd::<()>(&mut c, &["SLOWLOG", "RESET"]);
    let _: (i64, Vec<String>) = redis::pipe()
        .cmd("EVAL")
        .arg(spin)
        .arg(1)
        .arg(&keys[1])
        .cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut c)
        .expect("pipeline");
    assert_eq!(
        args_of(&slowlog(&mut c, None)),
        [format!("EVAL {spin} 1 {}", keys[1])]
    );
    // Everything, on both shards, newest first; SLOWLOG RESET is logged after it ran.
    cmd::<()>(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    cmd::<()>(&mut c, &["SLOWLOG", "RESET"]);
    cmd::<()>(&mut c, &["SET", &keys[0], "a"]);
    cmd::<()>(&mut c, &["SET", &keys[1], "b"]);
    let entries = slowlog(&mut c, None);
    assert_eq!(
        args_of(&entries),
        [
            format!("SET {} b", keys[1]),
            format!("SET {} a", keys[0]),
            "SLOWLOG RESET".to_string()
        ]
    );
    assert!(entries[0].0 > entries[1].0 && entries[1].0 > entries[2].0);
    for e in &entries {
        assert_eq!(
            (e.4.as_str(), e.5.as_str()),
            (addr.as_str(), "ops"),
            "{e:?}"
        );
    }
    // Long commands are trimmed; secrets are redacted.
    cmd::<()>(&mut c, &["SLOWLOG", "RESET"]);
    let many: Vec<String> = (3..=33).map(|i| i.to_string()).collect();
    let mut sadd = vec!["SADD", "set"];
    sadd.extend(many.iter().map(String::as_str));
    cmd::<i64>(&mut c, &sadd);
    let long = "A".repeat(129);
    cmd::<i64>(&mut c, &["SADD", "set", "foo", &long]);
    cmd::<()>(
        &mut c,
        &["ACL", "SETUSER", "slow-user", "on", ">secret", "+get"],
    );
    let entries = slowlog(&mut c, None);
    let shown = args_of(&entries);
    assert_eq!(
        shown[0],
        "ACL SETUSER (redacted) (redacted) (redacted) (redacted)"
    );
    assert_eq!(
        shown[1],
        format!("SADD set foo {}... (1 more bytes)", "A".repeat(128))
    );
    assert_eq!(entries[2].3.len(), 32);
    assert_eq!(entries[2].3[31], "... (2 more arguments)");
    // EXEC is not logged; the commands it ran are.
    cmd::<()>(&mut c, &["SLOWLOG", "RESET"]);
    let _: (String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&keys[0])
        .arg("x")
        .cmd("SET")
        .arg(&keys[1])
        .arg("y")
        .query(&mut c)
        .expect("MULTI/EXEC");
    let shown = args_of(&slowlog(&mut c, None));
    assert!(!shown.iter().any(|a| a.starts_with("EXEC")), "{shown:?}");
    assert!(shown.contains(&format!("SET {} x", keys[0])), "{shown:?}");
    assert!(shown.contains(&format!("SET {} y", keys[1])), "{shown:?}");
    // slowlog-max-len bounds what is kept, across shards; GET's count.
    cmd::<()>(&mut c, &["CONFIG", "SET", "slowlog-max-len", "3"]);
    for k in keys.iter().cycle().take(10) {
        cmd::<()>(&mut c, &["SET", k, "z"]);
    }
    assert_eq!(cmd::<i64>(&mut c, &["SLOWLOG", "LEN"]), 3);
    assert_eq!(slowlog(&mut c, Some(0)).len(), 0);
    assert_eq!(slowlog(&mut c, Some(1)).len(), 1);
    assert_eq!(slowlog(&mut c, Some(-1)).len(), 3);
    assert_eq!(
        expect_err(&mut c, &["SLOWLOG", "GET", "-2"]),
        "ERR count should be greater than or equal to -1"
    );
    // -1 logs nothing.
    cmd::<()>(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    cmd::<()>(&mut c, &["SLOWLOG", "RESET"]);
    cmd::<()>(&mut c, &["SET", &keys[0], "quiet"]);
    assert_eq!(cmd::<i64>(&mut c, &["SLOWLOG", "LEN"]), 0);
}

/// Runs `words` on a new connection in a thread; its reply (or error text) when it ends.
fn in_background(
    s: &MoonServer,
    words: &[&str],
) -> std::thread::JoinHandle<Result<redis::Value, String>> {
    let mut c = s.client();
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    std::thread::spawn(move || {
        let mut command = redis::cmd(&words[0]);
        for w in &words[1..] {
            command.arg(w);
        }
        command.query(&mut c).map_err(|e| err_text(&e))
    })
}

/// CLIENT PAUSE as Redis's pause unit checks it, across shards: WRITE lets reads (and
/// read-only scripts, a read-only MULTI) through and holds writes, may-replicate commands
/// (PUBLISH) and an EXEC that would write, until UNPAUSE; a wrong command is answered at once;
/// a pause given inside MULTI starts after its EXEC; ALL holds everything but UNPAUSE.
#[test]
fn client_pause_holds_writes_until_unpause() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let keys = keys_on_different_shards(2);
    cmd::<()>(&mut c, &["SET", &keys[0], "old"]);
    cmd::<String>(
        &mut c,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=lib\nredis.register_function{function_name='ro', callback=function() return 'ro' end, flags={'no-writes'}}\nredis.register_function('rw', function(keys) return redis.call('SET', keys[1], 'f') end)",
        ],
    );
    cmd::<()>(&mut c, &["CLIENT", "PAUSE", "100000", "WRITE"]);
    // Reads, read-only scripts and transactions go on.
    let mut reader = s.client();
    assert_eq!(cmd::<String>(&mut reader, &["GET", &keys[0]]), "old");
    assert_eq!(cmd::<String>(&mut reader, &["PING"]), "PONG");
    let e = cmd::<String>(
        &mut reader,
        &["EVAL", "#!lua flags=no-writes\nreturn 'ro'", "0"],
    );
    assert_eq!(e, "ro");
    assert_eq!(cmd::<String>(&mut reader, &["FCALL", "ro", "0"]), "ro");
    let (a, b): (String, String) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(&keys[0])
        .cmd("PING")
        .query(&mut reader)
        .expect("a read-only MULTI");
    assert_eq!((a.as_str(), b.as_str()), ("old", "PONG"));
    assert_eq!(
        expect_err(&mut reader, &["SET", "x"]),
        "ERR wrong number of arguments for 'set' command"
    );
    // Writes wait, on both shards; so do PUBLISH and a writing script.
    let set0 = in_background(&s, &["SET", &keys[0], "new"]);
    let set1 = in_background(&s, &["SET", &keys[1], "new"]);
    let publish = in_background(&s, &["PUBLISH", "ch", "m"]);
    let script = in_background(
        &s,
        &["EVAL", "return redis.call('SET', KEYS[1], 's')", "1", "sk"],
    );
    let function = in_background(&s, &["FCALL", "rw", "1", "fk"]);
    wait_blocked(&mut c, 5);
    assert_eq!(cmd::<String>(&mut c, &["GET", &keys[0]]), "old");
    cmd::<()>(&mut c, &["CLIENT", "UNPAUSE"]);
    for t in [set0, set1, script, function] {
        assert_eq!(t.join().unwrap(), Ok(redis::Value::Okay));
    }
    assert_eq!(publish.join().unwrap(), Ok(redis::Value::Int(0)));
    assert_eq!(cmd::<String>(&mut c, &["GET", &keys[1]]), "new");
    // The pause given inside MULTI starts after EXEC; then an EXEC that writes waits (its
    // command queued before the pause: queueing a write waits too, as in Redis).
    let mut writer = s.client();
    cmd::<()>(&mut writer, &["MULTI"]);
    cmd::<()>(&mut writer, &["SET", &keys[1], "queued"]);
    let _: Vec<redis::Value> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&keys[0])
        .arg("in-multi")
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg("100000")
        .arg("WRITE")
        .cmd("SET")
        .arg(&keys[1])
        .arg("after-pause-in-multi")
        .query(&mut c)
        .expect("MULTI with CLIENT PAUSE");
    assert_eq!(
        cmd::<String>(&mut c, &["GET", &keys[1]]),
        "after-pause-in-multi"
    );
    let exec = std::thread::spawn(move || {
        redis::cmd("EXEC")
            .query::<redis::Value>(&mut writer)
            .map_err(|e| err_text(&e))
    });
    wait_blocked(&mut c, 1);
    cmd::<()>(&mut c, &["CLIENT", "UNPAUSE"]);
    assert!(exec.join().unwrap().is_ok());
    assert_eq!(cmd::<String>(&mut c, &["GET", &keys[1]]), "queued");
    // ALL holds reads too; UNPAUSE still gets through.
    // (Nothing can ask the server whether a client waits then: its PING gets no answer for a
    // while, and gets it after UNPAUSE.)
    cmd::<()>(&mut c, &["CLIENT", "PAUSE", "100000", "ALL"]);
    let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
    raw.write_all(b"PING\r\n").unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(raw.read(&mut buf).is_err(), "answered while paused");
    cmd::<()>(&mut c, &["CLIENT", "UNPAUSE"]);
    raw.set_read_timeout(None).unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
    // A pipelined batch spanning shards waits too (it used to run as one transaction).
    cmd::<()>(&mut c, &["CLIENT", "PAUSE", "100000", "WRITE"]);
    let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
    raw.write_all(format!("MSET {} p {} p\r\nSET pipelined 1\r\n", keys[0], keys[1]).as_bytes())
        .unwrap();
    wait_blocked(&mut c, 1);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "pipelined"]), None);
    // A paused writer that is killed never writes.
    let mut victim = s.client();
    let victim_id: i64 = cmd(&mut victim, &["CLIENT", "ID"]);
    let killed = std::thread::spawn(move || {
        redis::cmd("SET")
            .arg("never")
            .arg("1")
            .query::<()>(&mut victim)
            .is_err()
    });
    wait_blocked(&mut c, 2);
    cmd::<i64>(&mut c, &["CLIENT", "KILL", "ID", &victim_id.to_string()]);
    assert!(killed.join().unwrap(), "the killed client got a reply");
    wait_blocked(&mut c, 1);
    cmd::<()>(&mut c, &["CLIENT", "UNPAUSE"]);
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < b"+OK\r\n+OK\r\n".len() {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n+OK\r\n");
    assert_eq!(cmd::<String>(&mut c, &["GET", "pipelined"]), "1");
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "never"]), None);
    // A pause ends by itself at its deadline.
    cmd::<()>(&mut c, &["CLIENT", "PAUSE", "50", "WRITE"]);
    assert_eq!(
        in_background(&s, &["SET", &keys[0], "late"])
            .join()
            .unwrap(),
        Ok(redis::Value::Okay)
    );
    assert_eq!(
        expect_err(&mut c, &["CLIENT", "PAUSE", "10", "SOME"]),
        "ERR CLIENT PAUSE mode must be WRITE or ALL"
    );
    assert_eq!(
        expect_err(&mut c, &["CLIENT", "PAUSE", "x"]),
        "ERR timeout is not an integer or out of range"
    );
}

/// `unixsocket` / `unixsocketperm`: clients connect through the socket too (served like any
/// other, local for protected mode), the file has the permissions asked for, a stale socket
/// is replaced at startup, anything else there is refused, and shutdown removes it.
#[test]
fn unix_socket_clients_are_served_like_tcp_ones() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("moon.sock");
    let sock_text = sock.display().to_string();
    // A stale socket left by a killed server is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut s = MoonServer::start_in(
        &data,
        2,
        &["--unixsocket", &sock_text, "--unixsocketperm", "700"],
    )
    .expect("starts");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let client = redis::Client::open(format!("unix://{sock_text}")).unwrap();
    let mut u = client
        .get_connection()
        .expect("connects through the socket");
    let keys = keys_on_different_shards(2);
    for k in &keys {
        cmd::<()>(&mut u, &["SET", k, "via-unix"]);
    }
    let info: String = cmd(&mut u, &["CLIENT", "INFO"]);
    assert!(info.contains(&format!("addr={sock_text}:0 ")), "{info}");
    let mut c = s.client();
    for k in &keys {
        assert_eq!(cmd::<String>(&mut c, &["GET", k]), "via-unix");
    }
    let mut monitor = std::net::TcpStream::connect(s.addr).unwrap();
    monitor.write_all(b"MONITOR\r\n").unwrap();
    assert_eq!(read_lines(&mut monitor, 1), ["+OK"]);
    cmd::<Option<String>>(&mut u, &["GET", "seen"]);
    let line = read_lines(&mut monitor, 1).remove(0);
    assert!(line.contains(&format!("[0 unix:{sock_text}] ")), "{line}");
    let listed: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "unixsocketperm"]);
    assert_eq!(listed[1], "700");
    assert!(s.terminate().success());
    assert!(!sock.exists(), "the socket is removed at shutdown");
    // Something that is not a socket at the path: refused, left alone.
    std::fs::write(&sock, b"not a socket").unwrap();
    let (code, text) = run_expecting_exit(&data, 2, &["--unixsocket", &sock_text]);
    assert_ne!(code, 0);
    assert!(text.contains("cannot listen on the Unix socket"), "{text}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"not a socket");
}

/// Reads `n` lines (CRLF-terminated) from a raw connection.
fn read_lines(raw: &mut std::net::TcpStream, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.iter().filter(|&&b| b == b'\n').count() < n {
        let read = raw.read(&mut buf).unwrap();
        assert!(read > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&got)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// MONITOR as Redis's introspection unit checks it: commands from other connections, whatever
/// their shard, in order; a transaction's commands between MULTI and EXEC; a script before the
/// commands it calls (as `lua`); secrets redacted; admin commands not shown.
#[test]
fn monitor_shows_what_every_shard_runs() {
    let s = MoonServer::start(2, &[]);
    let mut monitor = std::net::TcpStream::connect(s.addr).unwrap();
    monitor.write_all(b"MONITOR\r\n").unwrap();
    assert_eq!(read_lines(&mut monitor, 1), ["+OK"]);
    let keys = keys_on_different_shards(2);
    let mut c = s.client();
    cmd::<()>(&mut c, &["SET", &keys[0], "bar"]);
    cmd::<Option<String>>(&mut c, &["GET", &keys[1]]);
    cmd::<Vec<String>>(&mut c, &["CONFIG", "GET", "maxmemory"]);
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&keys[1])
        .arg("in\"tx")
        .ignore()
        .query(&mut c)
        .unwrap();
    let _: redis::Value = redis::cmd("EVAL")
        .arg("return redis.call('SET', KEYS[1], ARGV[1])")
        .arg(1)
        .arg(&keys[0])
        .arg("from-lua")
        .query(&mut c)
        .unwrap();
    let _ = redis::cmd("AUTH").arg("not-real").query::<()>(&mut c);
    let lines = read_lines(&mut monitor, 8);
    let tails: Vec<&str> = lines
        .iter()
        .map(|l| {
            assert!(l.starts_with('+'), "{l}");
            l.split_once("] ").expect("[db addr]").1
        })
        .collect();
    assert_eq!(
        tails,
        [
            format!("\"SET\" \"{}\" \"bar\"", keys[0]),
            format!("\"GET\" \"{}\"", keys[1]),
            "\"MULTI\"".to_string(),
            format!("\"SET\" \"{}\" \"in\\\"tx\"", keys[1]),
            "\"EXEC\"".to_string(),
            format!(
                "\"EVAL\" \"return redis.call('SET', KEYS[1], ARGV[1])\" \"1\" \"{}\" \"from-lua\"",
                keys[0]
            ),
            format!("\"SET\" \"{}\" \"from-lua\"", keys[0]),
            "\"AUTH\" \"(redacted)\"".to_string(),
        ]
    );
    assert!(lines[6].contains("[0 lua]"), "{}", lines[6]);
    assert!(lines[0].contains(" [0 127.0.0.1:"), "{}", lines[0]);
    // A command pipelined behind a blocking one is shown once, when it runs.
    let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
    raw.write_all(b"BLPOP q 0\r\nSET after-blpop 1\r\n")
        .unwrap();
    wait_blocked(&mut c, 1);
    cmd::<i64>(&mut c, &["LPUSH", "q", "job"]);
    let lines = read_lines(&mut monitor, 3);
    let tails: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once("] ").expect("[db addr]").1)
        .collect();
    assert_eq!(
        tails,
        [
            "\"BLPOP\" \"q\" \"0\"",
            "\"LPUSH\" \"q\" \"job\"",
            "\"SET\" \"after-blpop\" \"1\""
        ]
    );
    // MONITOR inside MULTI is refused; RESET leaves MONITOR mode.
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<()>(&mut c, &["MONITOR"]);
    let e = expect_err(&mut c, &["EXEC"]);
    assert!(
        e.contains("MONITOR isn't allowed for DENY BLOCKING client"),
        "{e}"
    );
    let shown = read_lines(&mut monitor, 2);
    assert!(
        shown[0].ends_with("\"MULTI\"") && shown[1].ends_with("\"EXEC\""),
        "{shown:?}"
    );
    monitor.write_all(b"RESET\r\n").unwrap();
    assert_eq!(read_lines(&mut monitor, 1), ["+RESET"]);
    cmd::<()>(&mut c, &["SET", "unseen", "1"]);
    monitor.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_lines(&mut monitor, 1), ["+PONG"]);
}

/// LATENCY as Redis's latency-monitor unit checks it: off at threshold 0; a slow command and
/// an expiry cycle that freed a big key are events, with history, a graph and a doctor's
/// report; RESET forgets them; HISTOGRAM and INFO latencystats give every command's
/// durations (subcommands apart, unknown names skipped).
#[test]
fn latency_monitor_and_histograms() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let latest = |c: &mut redis::Connection| -> Vec<(String, i64, i64, i64)> {
        cmd(c, &["LATENCY", "LATEST"])
    };
    let spin = "local x = 0 for i = 1, 20000000 do x = x + i end return 1";
    cmd::<i64>(&mut c, &["EVAL", spin, "0"]);
    assert!(latest(&mut c).is_empty(), "off by default");
    // A CONFIG SET refused whole changes nothing, the threshold included.
    expect_err(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "latency-monitor-threshold",
            "5",
            "maxmemory",
            "bogus",
        ],
    );
    cmd::<i64>(&mut c, &["EVAL", spin, "0"]);
    assert!(
        latest(&mut c).is_empty(),
        "a refused CONFIG SET took effect"
    );
    assert_eq!(
        expect_err(&mut c, &["LATENCY", "HISTORY"]),
        "ERR wrong number of arguments for 'latency|history' command"
    );
    cmd::<()>(
        &mut c,
        &["CONFIG", "SET", "latency-monitor-threshold", "20"],
    );
    cmd::<i64>(&mut c, &["EVAL", spin, "0"]);
    let events = latest(&mut c);
    let command = events
        .iter()
        .find(|e| e.0 == "command")
        .expect("a command event");
    assert!(command.2 >= 20 && command.3 >= command.2, "{events:?}");
    let history: Vec<(i64, i64)> = cmd(&mut c, &["LATENCY", "HISTORY", "command"]);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].0, command.1);
    assert!(cmd::<String>(&mut c, &["LATENCY", "GRAPH", "command"]).contains('#'));
    assert_eq!(
        expect_err(&mut c, &["LATENCY", "GRAPH", "blabla"]),
        "ERR No samples available for event 'blabla'"
    );
    assert!(cmd::<String>(&mut c, &["LATENCY", "DOCTOR"]).contains("command"));
    assert!(cmd::<Vec<redis::Value>>(&mut c, &["LATENCY", "HISTORY", "blabla"]).is_empty());
    assert_eq!(cmd::<i64>(&mut c, &["LATENCY", "RESET", "blabla"]), 0);
    assert!(cmd::<i64>(&mut c, &["LATENCY", "RESET"]) > 0);
    assert!(latest(&mut c).is_empty());
    assert_eq!(
        expect_err(&mut c, &["LATENCY", "HELP", "xxx"]),
        "ERR wrong number of arguments for 'latency|help' command"
    );
    // An expiry cycle that frees a big set is an event.
    cmd::<()>(&mut c, &["CONFIG", "SET", "latency-monitor-threshold", "1"]);
    let fill = "for i = 1, tonumber(ARGV[1]) do redis.call('SADD', KEYS[1], i) end return 1";
    cmd::<i64>(&mut c, &["EVAL", fill, "1", "bigset", "300000"]);
    cmd::<i64>(&mut c, &["PEXPIRE", "bigset", "10"]);
    assert!(eventually(Duration::from_secs(10), || {
        cmd::<i64>(&mut c, &["DBSIZE"]) == 0
    }));
    assert!(
        latest(&mut c).iter().any(|e| e.0 == "expire-cycle"),
        "{:?}",
        latest(&mut c)
    );
    // Histograms, on both shards, by command and subcommand.
    cmd::<()>(&mut c, &["CONFIG", "RESETSTAT"]);
    let keys = keys_on_different_shards(2);
    cmd::<()>(&mut c, &["SET", &keys[0], "a"]);
    cmd::<()>(&mut c, &["SET", &keys[1], "b"]);
    cmd::<i64>(&mut c, &["CLIENT", "ID"]);
    cmd::<String>(&mut c, &["CLIENT", "LIST"]);
    let histogram = |c: &mut redis::Connection, names: &[&str]| -> BTreeMap<String, i64> {
        let mut words = vec!["LATENCY", "HISTOGRAM"];
        words.extend_from_slice(names);
        let reply: BTreeMap<String, BTreeMap<String, redis::Value>> = cmd(c, &words);
        reply
            .into_iter()
            .map(|(name, fields)| match fields.get("calls") {
                Some(redis::Value::Int(n)) => (name, *n),
                other => panic!("{name}: {other:?}"),
            })
            .collect()
    };
    assert_eq!(
        histogram(&mut c, &["set", "blabla"]),
        BTreeMap::from([("set".to_string(), 2)])
    );
    assert_eq!(
        histogram(&mut c, &["client"]),
        BTreeMap::from([("client|id".to_string(), 1), ("client|list".to_string(), 1)])
    );
    assert!(histogram(&mut c, &["blabla"]).is_empty());
    let info: String = cmd(&mut c, &["INFO", "latencystats"]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("latency_percentiles_usec_set:p50=")
                && l.contains(",p99=")
                && l.contains(",p99.9=")),
        "{info}"
    );
    cmd::<()>(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "latency-tracking-info-percentiles",
            "50 99.99",
        ],
    );
    let info: String = cmd(&mut c, &["INFO", "latencystats"]);
    let set_line = info
        .lines()
        .find(|l| l.starts_with("latency_percentiles_usec_set:"))
        .expect("set's line");
    assert!(
        set_line.contains(":p50=") && set_line.contains(",p99.99=") && !set_line.contains("p99.9="),
        "{set_line}"
    );
    let default_info: String = cmd(&mut c, &["INFO"]);
    assert!(!default_info.contains("latency_percentiles"));
}

/// Redis's introspection units: CLIENT LIST / INFO show the running command's subcommand and
/// the query buffer it came in; CONFIG SET of a key fixed at startup to the value it has is a
/// harmless OK (another value is still refused); EXISTS, TYPE and TTL look at a key without
/// using it (its LFU counter and idle time stay), TOUCH uses it.
#[test]
fn introspection_as_redis_s_units_check_it() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let line: String = cmd(&mut c, &["CLIENT", "INFO"]);
    assert!(line.contains(" qbuf=26 "), "{line}");
    assert!(line.contains(" cmd=client|info "), "{line}");
    let list: String = cmd(&mut c, &["CLIENT", "LIST"]);
    assert!(list.contains(" cmd=client|list "), "{list}");
    let other = s.client();
    let idle = cmd::<String>(&mut c, &["CLIENT", "LIST"]);
    assert!(
        idle.lines().filter(|l| l.contains(" qbuf=0 ")).count() >= 1,
        "{idle}"
    );
    drop(other);
    // Startup keys: the same value is OK, another is refused.
    let port: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "port"]);
    cmd::<()>(&mut c, &["CONFIG", "SET", "port", &port[1], "shards", "2"]);
    let e = expect_err(&mut c, &["CONFIG", "SET", "shards", "3"]);
    assert!(e.contains("can't set immutable config"), "{e}");
    // Looking does not touch.
    cmd::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"],
    );
    cmd::<()>(&mut c, &["SET", "k", "v"]);
    let freq = |c: &mut redis::Connection| cmd::<i64>(c, &["OBJECT", "FREQ", "k"]);
    let before = freq(&mut c);
    for _ in 0..20 {
        cmd::<i64>(&mut c, &["EXISTS", "k"]);
        cmd::<String>(&mut c, &["TYPE", "k"]);
        cmd::<i64>(&mut c, &["TTL", "k"]);
        cmd::<i64>(&mut c, &["PTTL", "k"]);
    }
    assert_eq!(freq(&mut c), before, "EXISTS/TYPE/TTL counted as uses");
    cmd::<i64>(&mut c, &["TOUCH", "k"]);
    assert!(freq(&mut c) > before, "TOUCH is a use");
}

/// COMMAND as cluster-aware clients and Redis's introspection-2 unit read it: each key with
/// what the command does to it, commands and subcommands listed and filtered, `movablekeys`
/// where the arguments decide where the keys are.
#[test]
fn command_reports_keys_with_flags_and_lists_subcommands() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let flags = |c: &mut redis::Connection, words: &[&str]| -> Vec<(String, Vec<String>)> {
        let mut all = vec!["COMMAND", "GETKEYSANDFLAGS"];
        all.extend_from_slice(words);
        cmd(c, &all)
    };
    let kf = |k: &str, f: &str| (k.to_string(), f.split(' ').map(String::from).collect());
    assert_eq!(flags(&mut c, &["SET", "k1", "v"]), [kf("k1", "OW update")]);
    assert_eq!(
        flags(&mut c, &["LMOVE", "k1", "k2", "LEFT", "RIGHT"]),
        [kf("k1", "RW access delete"), kf("k2", "RW insert")]
    );
    assert_eq!(
        flags(&mut c, &["SORT", "k1", "STORE", "k2"]),
        [kf("k1", "RO access"), kf("k2", "OW update")]
    );
    assert_eq!(flags(&mut c, &["DEL", "a"]), [kf("a", "RM delete")]);
    assert_eq!(flags(&mut c, &["GET", "a"]), [kf("a", "RO access")]);
    // A command that may name keys and names none here: an empty answer, not an error.
    let none: Vec<String> = cmd(&mut c, &["COMMAND", "GETKEYS", "EVAL", "return 1", "0"]);
    assert!(none.is_empty());
    let e = expect_err(&mut c, &["COMMAND", "GETKEYS", "PING"]);
    assert_eq!(e, "ERR The command has no key arguments");
    let keys: Vec<String> = cmd(&mut c, &["COMMAND", "GETKEYS", "MEMORY", "USAGE", "k"]);
    assert_eq!(keys, ["k"]);

    let list: Vec<String> = cmd(&mut c, &["COMMAND", "LIST"]);
    for name in [
        "set",
        "client|list",
        "config|get",
        "memory|stats",
        "cluster|info",
    ] {
        assert!(list.iter().any(|n| n == name), "{name} missing");
    }
    let scripting: Vec<String> = cmd(
        &mut c,
        &["COMMAND", "LIST", "FILTERBY", "ACLCAT", "scripting"],
    );
    assert!(scripting.iter().any(|n| n == "eval"));
    assert!(scripting.iter().any(|n| n == "script|kill"));
    assert!(!scripting.iter().any(|n| n == "set"));
    let config: Vec<String> = cmd(
        &mut c,
        &["COMMAND", "LIST", "FILTERBY", "PATTERN", "config|*re*"],
    );
    assert_eq!(config, ["config|resetstat", "config|rewrite"]);
    let modules: Vec<String> = cmd(&mut c, &["COMMAND", "LIST", "FILTERBY", "MODULE", "m"]);
    assert!(modules.is_empty());
    let e = expect_err(&mut c, &["COMMAND", "LIST", "FILTERBY", "nothing", "x"]);
    assert!(e.starts_with("ERR syntax error"), "{e}");

    let info_flags = |c: &mut redis::Connection, name: &str| -> Vec<String> {
        let info: Vec<redis::Value> = cmd(c, &["COMMAND", "INFO", name]);
        let redis::Value::Array(row) = &info[0] else {
            panic!("{name}: {info:?}")
        };
        redis::from_redis_value(row[2].clone()).unwrap()
    };
    for movable in [
        "zunionstore",
        "xread",
        "eval",
        "sort",
        "sort_ro",
        "georadius",
    ] {
        assert!(
            info_flags(&mut c, movable).contains(&"movablekeys".to_string()),
            "{movable}"
        );
    }
    for fixed in ["set", "mset", "lmove", "memory", "rename"] {
        assert!(
            !info_flags(&mut c, fixed).contains(&"movablekeys".to_string()),
            "{fixed}"
        );
    }
    let sub: Vec<redis::Value> = cmd(&mut c, &["COMMAND", "INFO", "get|key"]);
    assert_eq!(sub, [redis::Value::Nil]);
}

/// What a standalone server answers: cluster support disabled, no modules, MEMORY's
/// figures from every shard, LOLWUT.
#[test]
fn memory_module_cluster_and_lolwut() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let keys = keys_on_different_shards(2);
    for k in &keys {
        cmd::<()>(&mut c, &["SET", k, "a value of some length"]);
    }
    for k in &keys {
        let n: i64 = cmd(&mut c, &["MEMORY", "USAGE", k]);
        assert!(n > 20, "{k}: {n}");
    }
    let missing: Option<i64> = cmd(&mut c, &["MEMORY", "USAGE", "nosuchkey"]);
    assert_eq!(missing, None);
    let stats: std::collections::HashMap<String, redis::Value> = cmd(&mut c, &["MEMORY", "STATS"]);
    let int = |k: &str| -> i64 { redis::from_redis_value(stats[k].clone()).unwrap() };
    assert_eq!(int("keys.count"), 2, "both shards' keys");
    assert!(int("dataset.bytes") > 40);
    assert!(int("clients.normal") > 0, "this connection's buffers");
    assert_eq!(
        int("total.allocated"),
        int("dataset.bytes") + int("clients.normal")
    );
    assert!(stats.contains_key("db.0"));
    let doctor: String = cmd(&mut c, &["MEMORY", "DOCTOR"]);
    assert!(!doctor.is_empty());
    let e = expect_err(&mut c, &["MEMORY", "NOSUCH"]);
    assert!(e.contains("unknown subcommand"), "{e}");

    let modules: Vec<String> = cmd(&mut c, &["MODULE", "LIST"]);
    assert!(modules.is_empty());
    let e = expect_err(&mut c, &["MODULE", "LOAD", "/tmp/x.so"]);
    assert!(e.starts_with("ERR Error loading the extension"), "{e}");
    let e = expect_err(&mut c, &["CLUSTER", "INFO"]);
    assert_eq!(e, "ERR This instance has cluster support disabled");
    let art: String = cmd(&mut c, &["LOLWUT"]);
    assert!(art.contains("Moon ver. "), "{art}");
    let art: String = cmd(&mut c, &["LOLWUT", "VERSION", "2"]);
    assert!(art.contains('#') && art.contains("Moon ver. "), "{art}");
    let art: String = cmd(&mut c, &["LOLWUT", "VERSION", "6", "40", "10"]);
    assert!(art.contains("Moon ver. "), "{art}");
    assert!(int("peak.allocated") >= int("total.allocated"));
    let e = expect_err(&mut c, &["COMMAND", "GETKEYS", "MEMORY", "STATS"]);
    assert_eq!(e, "ERR The command has no key arguments");

    // MEMORY USAGE names a key: ACL key patterns apply (review finding).
    cmd::<()>(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            "nopass",
            "~public:*",
            "+memory",
            "+eval",
        ],
    );
    let mut r = s.client();
    cmd::<()>(&mut r, &["AUTH", "reader", "x"]);
    let e = expect_err(&mut r, &["MEMORY", "USAGE", &keys[0]]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let none: Option<i64> = cmd(&mut r, &["MEMORY", "USAGE", "public:x"]);
    assert_eq!(none, None);
    // And scripts may call it, on one shard or across both (review finding).
    let one: i64 = cmd(
        &mut c,
        &[
            "EVAL",
            "return redis.call('memory', 'usage', KEYS[1])",
            "1",
            &keys[0],
        ],
    );
    assert!(one > 20);
    let both: Vec<i64> = cmd(
        &mut c,
        &[
            "EVAL",
            "return {redis.call('memory', 'usage', KEYS[1]), redis.call('memory', 'usage', KEYS[2])}",
            "2",
            &keys[0],
            &keys[1],
        ],
    );
    assert!(both.iter().all(|&n| n > 20), "{both:?}");
}

/// A connection's buffers are memory: counted in used_memory (INFO's mem_clients_normal,
/// CLIENT LIST's tot-mem), shrunk after a huge request, and given back when the client has
/// been idle for 2 s (Redis's querybuf unit).
#[test]
fn client_buffers_are_counted_and_given_back_when_idle() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let mut idle = s.client();
    cmd::<()>(&mut idle, &["CLIENT", "SETNAME", "idler"]);
    let field = |line: &str, f: &str| -> u64 {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{f}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{f} in {line}"))
    };
    let idler = |c: &mut redis::Connection| -> String {
        let list: String = cmd(c, &["CLIENT", "LIST"]);
        list.lines()
            .find(|l| l.contains("name=idler"))
            .unwrap()
            .to_string()
    };
    let line = idler(&mut c);
    let qbuf = field(&line, "qbuf") + field(&line, "qbuf-free");
    assert!((16384..32768).contains(&qbuf), "{line}");
    assert!(field(&line, "tot-mem") >= qbuf, "{line}");
    let info: String = cmd(&mut c, &["INFO", "memory"]);
    let clients: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("mem_clients_normal:"))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(clients >= 2 * qbuf, "{info}");
    // Idle: after 2 s its buffers are given back, and counted no more.
    assert!(
        eventually(Duration::from_secs(10), || {
            let line = idler(&mut c);
            field(&line, "qbuf") + field(&line, "qbuf-free") == 0
        }),
        "idle buffers kept"
    );
    // And the idle client still works.
    cmd::<()>(&mut idle, &["SET", "k", "v"]);
    let v: String = cmd(&mut idle, &["GET", "k"]);
    assert_eq!(v, "v");
    // A huge request grows the buffer; the next small one runs in a normal-sized one.
    let big = "x".repeat(400_000);
    cmd::<()>(&mut idle, &["SET", "big", &big]);
    let line = idler(&mut c);
    assert!(
        field(&line, "qbuf") + field(&line, "qbuf-free") > 32768,
        "{line}"
    );
    cmd::<()>(&mut idle, &["SET", "small", "x"]);
    let line = idler(&mut c);
    let after = field(&line, "qbuf") + field(&line, "qbuf-free");
    assert!(after > 0 && after < 32768, "{line}");
    // A subscriber that only receives gives its buffers back too once nothing is pending
    // (review finding: pushes grew a buffer that was never given back nor counted).
    let mut sub = s.client();
    cmd::<()>(&mut sub, &["CLIENT", "SETNAME", "listener"]);
    let mut sub = sub.as_pubsub();
    sub.subscribe("news").unwrap();
    let _: i64 = cmd(&mut c, &["PUBLISH", "news", &"y".repeat(200_000)]);
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_payload::<String>().unwrap().len(), 200_000);
    let listener = |c: &mut redis::Connection| -> String {
        let list: String = cmd(c, &["CLIENT", "LIST"]);
        list.lines()
            .find(|l| l.contains("name=listener"))
            .unwrap()
            .to_string()
    };
    assert!(
        eventually(Duration::from_secs(10), || field(
            &listener(&mut c),
            "tot-mem"
        ) == 0),
        "{}",
        listener(&mut c)
    );
    // A key deleted and the memory it held is not counted any more (lazyfree unit).
    let used = |c: &mut redis::Connection| -> u64 {
        let info: String = cmd(c, &["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let before = used(&mut c);
    let _: i64 = cmd(&mut c, &["UNLINK", "big"]);
    assert!(eventually(Duration::from_secs(10), || used(&mut c)
        + 300_000
        < before));
}

/// CLIENT NO-TOUCH: the client's reads leave LFU counters alone, TOUCH still counts; NO-EVICT
/// is kept as a flag. Both show in CLIENT LIST's flags.
#[test]
fn client_no_touch_and_no_evict() {
    let s = MoonServer::start(1, &["--maxmemory-policy", "allkeys-lfu"]);
    let mut c = s.client();
    cmd::<()>(&mut c, &["SET", "k", "v"]);
    let freq = |c: &mut redis::Connection| cmd::<i64>(c, &["OBJECT", "FREQ", "k"]);
    cmd::<()>(&mut c, &["CLIENT", "NO-TOUCH", "ON"]);
    cmd::<()>(&mut c, &["CLIENT", "NO-EVICT", "ON"]);
    let info: String = cmd(&mut c, &["CLIENT", "INFO"]);
    let flags = info.split(' ').find(|f| f.starts_with("flags=")).unwrap();
    assert!(flags.contains('T') && flags.contains('e'), "{info}");
    let before = freq(&mut c);
    for _ in 0..50 {
        let _: String = cmd(&mut c, &["GET", "k"]);
    }
    assert_eq!(freq(&mut c), before, "a no-touch client's reads counted");
    cmd::<i64>(&mut c, &["TOUCH", "k"]);
    assert!(
        freq(&mut c) > before,
        "TOUCH is a use even for a no-touch client"
    );
    cmd::<()>(&mut c, &["CLIENT", "NO-TOUCH", "OFF"]);
    let touched = freq(&mut c);
    for _ in 0..50 {
        let _: String = cmd(&mut c, &["GET", "k"]);
    }
    assert!(freq(&mut c) > touched, "reads count again");
    let e = expect_err(&mut c, &["CLIENT", "NO-TOUCH", "maybe"]);
    assert!(e.starts_with("ERR syntax error"), "{e}");
    // A no-touch client switching databases leaves every database touchable (review
    // finding: the flag stuck to the keyspace SWAPDB moved).
    cmd::<()>(&mut c, &["CLIENT", "NO-TOUCH", "ON"]);
    cmd::<()>(&mut c, &["SWAPDB", "0", "1"]);
    cmd::<()>(&mut c, &["SWAPDB", "0", "1"]);
    cmd::<()>(&mut c, &["CLIENT", "NO-TOUCH", "OFF"]);
    let now = freq(&mut c);
    for _ in 0..50 {
        let _: String = cmd(&mut c, &["GET", "k"]);
    }
    assert!(freq(&mut c) > now, "database 0 stayed untouchable");
    // RESET clears both flags.
    cmd::<()>(&mut c, &["CLIENT", "NO-TOUCH", "ON"]);
    redis::cmd("RESET").query::<String>(&mut c).unwrap();
    let info: String = cmd(&mut c, &["CLIENT", "INFO"]);
    assert!(info.contains(" flags=N "), "{info}");
}

/// INFO's rates are sampled (instantaneous_ops_per_sec under load is not 0), and the Moon
/// section shows each shard; CONFIG SET refuses a key named twice and immutable keys.
#[test]
fn info_rates_moon_section_and_config_checks() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let field = |c: &mut redis::Connection, section: &str, f: &str| -> String {
        let info: String = cmd(c, &["INFO", section]);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{f}:")))
            .unwrap_or_else(|| panic!("{f} in {info}"))
            .to_string()
    };
    let mut busy = s.client();
    assert!(eventually(Duration::from_secs(20), || {
        for _ in 0..200 {
            let _: Option<String> = cmd(&mut busy, &["GET", "x"]);
        }
        field(&mut c, "stats", "instantaneous_ops_per_sec") != "0"
    }));
    let moon: String = cmd(&mut c, &["INFO", "moon"]);
    assert!(
        moon.contains("shard0:keys=") && moon.contains("shard1:keys="),
        "{moon}"
    );
    assert!(moon.contains("aof_durable_lsn="), "{moon}");
    let e = expect_err(
        &mut c,
        &["CONFIG", "SET", "maxmemory", "1", "maxmemory", "2"],
    );
    assert!(e.contains("duplicate parameter"), "{e}");
    let e = expect_err(&mut c, &["CONFIG", "SET", "daemonize", "yes"]);
    assert!(e.contains("immutable"), "{e}");
    let of: std::collections::HashMap<String, String> = cmd(&mut c, &["CONFIG", "GET", "*of"]);
    assert_eq!(of.get("replicaof").map(String::as_str), Some(""));
    assert_eq!(of.get("slaveof").map(String::as_str), Some(""));
    cmd::<()>(&mut c, &["CONFIG", "SET", "repl-backlog-size", "10000002"]);
    assert_eq!(field(&mut c, "server", "shards"), "2");
    let got: Vec<String> = cmd(&mut c, &["CONFIG", "GET", "repl-backlog-size"]);
    assert_eq!(got[1], "10000002");
    let e = expect_err(&mut c, &["CONFIG", "SET", "maxmemory-clients", "200%"]);
    assert!(
        e.contains("percentage argument must be less or equal to 100"),
        "{e}"
    );
    // RESETSTAT resets lazyfreed_objects too (Redis's lazyfree unit).
    let members: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let mut sadd = vec!["SADD", "big"];
    sadd.extend(members.iter().map(String::as_str));
    cmd::<i64>(&mut c, &sadd);
    cmd::<i64>(&mut c, &["UNLINK", "big"]);
    assert!(eventually(Duration::from_secs(10), || {
        field(&mut c, "memory", "lazyfreed_objects") != "0"
    }));
    cmd::<()>(&mut c, &["CONFIG", "RESETSTAT"]);
    assert_eq!(field(&mut c, "memory", "lazyfreed_objects"), "0");
}

/// DEBUG RELOAD rebuilds every shard from its log and changes nothing a client can see (the
/// digest is the same, a write acknowledged just before is there); without a log it is
/// refused. DEBUG OBJECT answers Redis's line; SET-ACTIVE-EXPIRE 0 leaves expired keys to
/// lazy expiry until it is turned back on.
#[test]
fn debug_reload_object_and_active_expire() {
    let s = MoonServer::start(2, &["--enable-debug-command", "yes"]);
    let mut c = s.client();
    let keys = keys_on_different_shards(2);
    for (i, k) in keys.iter().enumerate() {
        cmd::<()>(&mut c, &["SET", k, &format!("v{i}")]);
        cmd::<i64>(&mut c, &["RPUSH", &format!("{k}:list"), "a", "b", "c"]);
        cmd::<i64>(&mut c, &["HSET", &format!("{k}:hash"), "f", "v"]);
        cmd::<i64>(&mut c, &["ZADD", &format!("{k}:zset"), "1", "m"]);
    }
    cmd::<()>(&mut c, &["MSET", &keys[0], "x", &keys[1], "y"]);
    cmd::<()>(&mut c, &["SET", "ttl", "v", "EX", "100000"]);
    // Access counts are not logged: a rebuilt key starts fresh, which shows it was rebuilt.
    cmd::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"],
    );
    let fresh: i64 = cmd(&mut c, &["OBJECT", "FREQ", "ttl"]);
    for _ in 0..100 {
        cmd::<String>(&mut c, &["GET", "ttl"]);
    }
    assert!(cmd::<i64>(&mut c, &["OBJECT", "FREQ", "ttl"]) > fresh);
    let digest = |c: &mut redis::Connection| cmd::<String>(c, &["DEBUG", "DIGEST"]);
    let before = digest(&mut c);
    let size: i64 = cmd(&mut c, &["DBSIZE"]);
    cmd::<()>(&mut c, &["DEBUG", "RELOAD"]);
    assert_eq!(digest(&mut c), before, "the logs rebuilt something else");
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), size);
    assert!(cmd::<i64>(&mut c, &["TTL", "ttl"]) > 99_000);
    assert_eq!(
        cmd::<i64>(&mut c, &["OBJECT", "FREQ", "ttl"]),
        fresh,
        "not rebuilt"
    );
    // Writes go on after it, and a second reload keeps them.
    cmd::<()>(&mut c, &["SET", "after", "1"]);
    cmd::<()>(&mut c, &["DEBUG", "RELOAD"]);
    assert_eq!(cmd::<String>(&mut c, &["GET", "after"]), "1");

    let line: String = cmd(&mut c, &["DEBUG", "OBJECT", &format!("{}:list", keys[0])]);
    assert!(line.contains(" encoding:listpack "), "{line}");
    assert!(line.contains(" serializedlength:"), "{line}");
    let e = expect_err(&mut c, &["DEBUG", "OBJECT", "nosuchkey"]);
    assert_eq!(e, "ERR no such key");
    // Inside MULTI it would wait for its own transaction's shards (review finding).
    let e = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&[keys[0].as_str(), "v"])
        .cmd("DEBUG")
        .arg("RELOAD")
        .query::<((), ())>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("not allowed inside a transaction"),
        "{e}"
    );

    cmd::<()>(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    cmd::<()>(&mut c, &["FLUSHALL"]);
    cmd::<()>(&mut c, &["SET", "short", "v", "PX", "1"]);
    // Past the deadline and several expiry rounds (100 ms each): still there for DBSIZE,
    // which does not expire lazily.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        cmd::<i64>(&mut c, &["DBSIZE"]),
        1,
        "expired actively while off"
    );
    cmd::<()>(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
    assert!(eventually(Duration::from_secs(10), || cmd::<i64>(
        &mut c,
        &["DBSIZE"]
    ) == 0));

    let s = MoonServer::start(1, &["--enable-debug-command", "yes", "--appendonly", "no"]);
    let e = expect_err(&mut s.client(), &["DEBUG", "RELOAD"]);
    assert!(e.contains("appendonly no"), "{e}");
}

/// CLIENT PAUSE holds expiry, as Redis does: a key past its deadline reads as gone but stays
/// (no deletion reaches the log while paused). A write that meets such a key — inside an EXEC
/// that started the pause — still removes it first, so the log replays to what clients saw
/// (checked after SIGKILL).
#[test]
fn client_pause_holds_expiry_and_replay_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--enable-debug-command", "yes", "--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 1, &args).unwrap();
    let mut c = s.client();
    cmd::<()>(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    cmd::<()>(&mut c, &["SET", "r", "1", "PX", "20"]);
    cmd::<i64>(&mut c, &["RPUSH", "k", "old"]);
    cmd::<i64>(&mut c, &["PEXPIRE", "k", "20"]);
    // Past both deadlines (time passing, not synchronisation).
    std::thread::sleep(Duration::from_millis(100));
    cmd::<()>(&mut c, &["CLIENT", "PAUSE", "100000", "WRITE"]);
    let r: Option<String> = cmd(&mut c, &["GET", "r"]);
    assert_eq!(r, None, "an expired key reads as gone");
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 2, "but stays while paused");
    cmd::<()>(&mut c, &["CLIENT", "UNPAUSE"]);
    // A write meeting an expired key during a pause: the EXEC that paused runs on.
    // (RPUSH is logged as sent: replayed onto the old list it would give [old, new].)
    let out: (String, Vec<String>, i64) = redis::pipe()
        .atomic()
        .cmd("CLIENT")
        .arg(&["PAUSE", "100000", "WRITE"])
        .cmd("LRANGE")
        .arg(&["k", "0", "-1"])
        .cmd("RPUSH")
        .arg(&["k", "new"])
        .query(&mut c)
        .unwrap();
    assert_eq!(out, ("OK".into(), vec![], 1));
    cmd::<()>(&mut c, &["CLIENT", "UNPAUSE"]);
    let r: Option<String> = cmd(&mut c, &["GET", "r"]);
    assert_eq!(r, None);
    assert_eq!(
        cmd::<i64>(&mut c, &["DBSIZE"]),
        1,
        "expired once the pause ended"
    );
    s.kill();
    let s = MoonServer::start_in(dir.path(), 1, &args).unwrap();
    let mut c = s.client();
    let list: Vec<String> = cmd(&mut c, &["LRANGE", "k", "0", "-1"]);
    assert_eq!(list, ["new"], "replay applied the RPUSH to the old list");
    let r: Option<String> = cmd(&mut c, &["GET", "r"]);
    assert_eq!(r, None);
}

/// The idle timeout counts from the client's last activity, not its last request: a client
/// served after a long BLPOP is not closed right after its reply (review finding).
#[test]
fn idle_timeout_counts_from_the_last_reply() {
    let s = MoonServer::start(1, &["--timeout", "1"]);
    let mut c = s.client();
    let popped: Option<(String, String)> = cmd(&mut c, &["BLPOP", "q", "2"]);
    assert_eq!(popped, None);
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");
}

/// `redis-cli --bigkeys` and `--memkeys` (SCAN, TYPE, the length commands, MEMORY USAGE on
/// every key) find each type's biggest key across both shards. Skipped with a message when
/// redis-cli is not installed (`.ci/run` installs it).
#[test]
fn redis_cli_bigkeys_and_memkeys_work() {
    if std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-cli is not installed: the --bigkeys/--memkeys check is skipped");
        return;
    }
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    for i in 0..20 {
        cmd::<()>(&mut c, &["SET", &format!("s{i}"), &"x".repeat(i + 1)]);
        cmd::<i64>(&mut c, &["RPUSH", &format!("l{i}"), "a", "b"]);
    }
    cmd::<i64>(
        &mut c,
        &["RPUSH", "biglist", "1", "2", "3", "4", "5", "6", "7"],
    );
    cmd::<i64>(&mut c, &["HSET", "h", "f", "v"]);
    let port = s
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for (flag, expect) in [
        (
            "--bigkeys",
            "Biggest   list found '\"biglist\"' has 7 items",
        ),
        ("--bigkeys", "Biggest string found '\"s19\"' has 20 bytes"),
        ("--memkeys", "Biggest   list found '\"biglist\"'"),
        ("--memkeys", "1 hashs with"),
    ] {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port, flag])
            .output()
            .expect("redis-cli runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {text}");
        assert!(text.contains(expect), "{flag}: no {expect:?} in\n{text}");
    }
}
