//! Access control against the real binary with a real client: every kind of ACL rule allowed
//! and denied (with Redis's texts), inside MULTI and across shards, AUTH and HELLO AUTH, the
//! ACL command, the aclfile round trip and a malformed one, and protected mode.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{eventually, expect_err, keys_on_different_shards, run_expecting_exit, MoonServer};
use redis::Value;

const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";
const NOPERM_CHANNEL: &str =
    "NOPERM this user has no permissions to access one of the channels used as arguments";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, words: &[&str]) -> T {
    redis::cmd(words[0])
        .arg(&words[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

fn noperm_cmd(name: &str) -> String {
    format!("NOPERM this user has no permissions to run the '{name}' command")
}

/// A connection authenticated as `user`.
fn login(s: &MoonServer, user: &str, pass: &str) -> redis::Connection {
    let mut c = s.client();
    let _: String = cmd(&mut c, &["AUTH", user, pass]);
    c
}

fn setuser(c: &mut redis::Connection, name: &str, rules: &str) {
    let mut words = vec!["ACL", "SETUSER", name];
    words.extend(rules.split(' '));
    let _: String = cmd(c, &words);
}

#[test]
fn command_rules_allow_and_deny() {
    let s = MoonServer::start(2, &[]);
    let mut admin = s.client();
    setuser(
        &mut admin,
        "reader",
        "on >r ~* &* +@read -hgetall +config|get",
    );
    let mut r = login(&s, "reader", "r");
    assert_eq!(cmd::<Option<String>>(&mut r, &["GET", "k"]), None);
    assert_eq!(expect_err(&mut r, &["SET", "k", "v"]), noperm_cmd("set"));
    assert_eq!(expect_err(&mut r, &["HGETALL", "h"]), noperm_cmd("hgetall"));
    let _: Vec<String> = cmd(&mut r, &["CONFIG", "GET", "maxmemory"]);
    // Durability settings are privileged: CONFIG SET needs more than CONFIG GET.
    assert_eq!(
        expect_err(&mut r, &["CONFIG", "SET", "appendfsync", "no"]),
        noperm_cmd("config|set")
    );
    assert_eq!(expect_err(&mut r, &["FLUSHALL"]), noperm_cmd("flushall"));
    // +@category / -@category, +cmd / -cmd, allcommands / nocommands.
    setuser(&mut admin, "reader", "-@all +@string -set");
    assert_eq!(cmd::<String>(&mut r, &["APPEND", "s", "x"]).len(), 1);
    assert_eq!(expect_err(&mut r, &["SET", "k", "v"]), noperm_cmd("set"));
    assert_eq!(expect_err(&mut r, &["SADD", "x", "m"]), noperm_cmd("sadd"));
    setuser(&mut admin, "reader", "allcommands -@dangerous");
    assert_eq!(cmd::<String>(&mut r, &["SET", "k", "v"]), "OK");
    assert_eq!(expect_err(&mut r, &["KEYS", "*"]), noperm_cmd("keys"));
    setuser(&mut admin, "reader", "nocommands");
    assert_eq!(expect_err(&mut r, &["GET", "k"]), noperm_cmd("get"));
    assert_eq!(
        cmd::<String>(&mut admin, &["ACL", "DRYRUN", "reader", "GET", "k"]),
        "This user has no permissions to run the 'get' command"
    );
    setuser(&mut admin, "reader", "+get");
    assert_eq!(
        cmd::<String>(&mut admin, &["ACL", "DRYRUN", "reader", "GET", "k"]),
        "OK"
    );
}

#[test]
fn key_and_channel_rules_cover_every_key_multi_and_shards() {
    let s = MoonServer::start(2, &[]);
    let mut admin = s.client();
    setuser(
        &mut admin,
        "app",
        "on >pw +@all -@dangerous ~app:* %R~shared:* %W~log:* &events:*",
    );
    let mut a = login(&s, "app", "pw");
    assert_eq!(cmd::<String>(&mut a, &["SET", "app:1", "v"]), "OK");
    assert_eq!(expect_err(&mut a, &["SET", "other", "v"]), NOPERM_KEY);
    // %R~: read only; %W~: write only.
    assert_eq!(cmd::<Option<String>>(&mut a, &["GET", "shared:1"]), None);
    assert_eq!(expect_err(&mut a, &["SET", "shared:1", "v"]), NOPERM_KEY);
    assert_eq!(cmd::<String>(&mut a, &["SET", "log:1", "v"]), "OK");
    assert_eq!(expect_err(&mut a, &["GET", "log:1"]), NOPERM_KEY);
    assert_eq!(
        expect_err(&mut a, &["INCR", "log:2"]),
        NOPERM_KEY,
        "INCR reads too"
    );
    // Every key of a multi-key command, also across shards.
    let keys = keys_on_different_shards(2);
    let (k0, k1) = (format!("app:{}", keys[0]), keys[1].clone());
    assert_eq!(
        expect_err(&mut a, &["MSET", &k0, "1", &k1, "2"]),
        NOPERM_KEY
    );
    assert_eq!(
        cmd::<Option<String>>(&mut admin, &["GET", &k0]),
        None,
        "nothing ran"
    );
    // Inside MULTI: refused when queued, and EXEC is aborted.
    let (ok, err): (Vec<Value>, redis::RedisError) = {
        let _: String = cmd(&mut a, &["MULTI"]);
        let q: String = cmd(&mut a, &["SET", "app:2", "v"]);
        let e = expect_err(&mut a, &["GET", "secret"]);
        assert_eq!(e, NOPERM_KEY);
        let exec = redis::cmd("EXEC").query::<Vec<Value>>(&mut a).unwrap_err();
        (vec![Value::SimpleString(q)], exec)
    };
    assert_eq!(ok, [Value::SimpleString("QUEUED".into())]);
    assert!(common::err_text(&err).starts_with("EXECABORT"), "{err}");
    // Channels.
    assert_eq!(cmd::<i64>(&mut a, &["PUBLISH", "events:1", "x"]), 0);
    assert_eq!(
        expect_err(&mut a, &["PUBLISH", "other", "x"]),
        NOPERM_CHANNEL
    );
    assert_eq!(expect_err(&mut a, &["SUBSCRIBE", "other"]), NOPERM_CHANNEL);
    // A pattern subscription must be one of the allowed patterns itself.
    assert_eq!(
        expect_err(&mut a, &["PSUBSCRIBE", "events:1*"]),
        NOPERM_CHANNEL
    );
    // ACL LOG has the refusals, newest first.
    let log: Vec<Value> = cmd(&mut admin, &["ACL", "LOG", "1"]);
    let entry = format!("{:?}", log[0]);
    assert!(
        entry.contains("channel") && entry.contains("events:1*") && entry.contains("app"),
        "{entry}"
    );
    let log: Vec<Value> = cmd(&mut admin, &["ACL", "LOG"]);
    assert!(log.len() >= 5, "{log:?}");
    let _: String = cmd(&mut admin, &["ACL", "LOG", "RESET"]);
    assert!(cmd::<Vec<Value>>(&mut admin, &["ACL", "LOG"]).is_empty());
}

#[test]
fn users_passwords_and_authentication() {
    let s = MoonServer::start(1, &["--requirepass", "secret"]);
    let mut c = s.client();
    assert!(expect_err(&mut c, &["GET", "k"]).starts_with("NOAUTH"));
    assert_eq!(expect_err(&mut c, &["AUTH", "wrong"]), WRONGPASS);
    let _: String = cmd(&mut c, &["AUTH", "secret"]);
    assert_eq!(cmd::<String>(&mut c, &["ACL", "WHOAMI"]), "default");
    // >password, #sha256, off, nopass.
    let hash = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"; // "password"
    setuser(&mut c, "bob", &format!("on >one #{hash} +@all ~*"));
    let mut b = s.client();
    let _: String = cmd(&mut b, &["AUTH", "bob", "one"]);
    let _: String = cmd(&mut b, &["AUTH", "bob", "password"]);
    assert_eq!(cmd::<String>(&mut b, &["ACL", "WHOAMI"]), "bob");
    assert_eq!(expect_err(&mut b, &["AUTH", "bob", "two"]), WRONGPASS);
    setuser(&mut c, "bob", "off");
    assert_eq!(
        expect_err(&mut s.client(), &["AUTH", "bob", "one"]),
        WRONGPASS
    );
    setuser(&mut c, "bob", "on nopass");
    let _: String = cmd(&mut s.client(), &["AUTH", "bob", "anything"]);
    // HELLO 3 AUTH.
    let mut h = s.client();
    let hello: Value = cmd(&mut h, &["HELLO", "3", "AUTH", "bob", "x"]);
    assert!(format!("{hello:?}").contains("proto"));
    assert_eq!(cmd::<String>(&mut h, &["ACL", "WHOAMI"]), "bob");
    // GETUSER, USERS, LIST, CAT, GENPASS.
    let users: Vec<String> = cmd(&mut c, &["ACL", "USERS"]);
    assert_eq!(users, ["bob", "default"]);
    let list: Vec<String> = cmd(&mut c, &["ACL", "LIST"]);
    assert!(
        list.contains(&"user bob on nopass ~* resetchannels +@all".to_string()),
        "{list:?}"
    );
    let getuser: Value = cmd(&mut c, &["ACL", "GETUSER", "bob"]);
    assert!(format!("{getuser:?}").contains("nopass"));
    assert_eq!(
        cmd::<Value>(&mut c, &["ACL", "GETUSER", "nobody"]),
        Value::Nil
    );
    let cats: Vec<String> = cmd(&mut c, &["ACL", "CAT"]);
    assert!(cats.contains(&"dangerous".to_string()) && cats.contains(&"keyspace".to_string()));
    let dangerous: Vec<String> = cmd(&mut c, &["ACL", "CAT", "dangerous"]);
    assert!(
        dangerous.contains(&"flushall".to_string()) && dangerous.contains(&"config".to_string())
    );
    assert_eq!(cmd::<String>(&mut c, &["ACL", "GENPASS"]).len(), 64);
    assert_eq!(cmd::<String>(&mut c, &["ACL", "GENPASS", "32"]).len(), 8);
    // Bad rules: Redis's texts, nothing applied.
    assert_eq!(
        expect_err(&mut c, &["ACL", "SETUSER", "bob", "+nosuch"]),
        "ERR Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL"
    );
    assert_eq!(
        expect_err(&mut c, &["ACL", "DELUSER", "default"]),
        "ERR The 'default' user cannot be removed"
    );
    // DELUSER closes the user's connections.
    assert_eq!(cmd::<i64>(&mut c, &["ACL", "DELUSER", "bob"]), 1);
    assert!(redis::cmd("PING").query::<String>(&mut b).is_err());
    // requirepass is the default user's password.
    let _: String = cmd(&mut c, &["CONFIG", "SET", "requirepass", "new"]);
    assert_eq!(expect_err(&mut s.client(), &["AUTH", "secret"]), WRONGPASS);
    let _: String = cmd(&mut s.client(), &["AUTH", "new"]);
}

#[test]
fn users_survive_a_restart_through_the_aclfile() {
    let tmp = tempfile::tempdir().unwrap();
    let aclfile = tmp.path().join("users.acl");
    let acl = aclfile.to_str().unwrap();
    let data = tmp.path().join("data");
    {
        let mut s = MoonServer::start_in(&data, 1, &["--aclfile", acl]).unwrap();
        let mut c = s.client();
        setuser(&mut c, "carol", "on >pw ~c:* &news +get +set");
        let _: String = cmd(&mut c, &["ACL", "SAVE"]);
        s.terminate();
    }
    let text = std::fs::read_to_string(&aclfile).unwrap();
    assert!(
        text.contains("user carol on #") && text.contains("~c:* &news -@all +get +set"),
        "{text}"
    );
    assert!(!text.contains(">pw"), "passwords are stored hashed");
    let s = MoonServer::start_in(&data, 1, &["--aclfile", acl]).unwrap();
    let mut c = login(&s, "carol", "pw");
    assert_eq!(cmd::<String>(&mut c, &["SET", "c:1", "v"]), "OK");
    assert_eq!(expect_err(&mut c, &["SET", "d:1", "v"]), NOPERM_KEY);
    // ACL LOAD picks up an edited file; a bad one is refused with its line, users unchanged.
    std::fs::write(&aclfile, format!("{text}user dave on nopass +@all ~*\n")).unwrap();
    let mut admin = s.client();
    let _: String = cmd(&mut admin, &["ACL", "LOAD"]);
    let _: String = cmd(&mut s.client(), &["AUTH", "dave", "x"]);
    std::fs::write(&aclfile, "user ok on nopass\nuser bad on +nosuch\n").unwrap();
    let e = expect_err(&mut admin, &["ACL", "LOAD"]);
    assert!(e.contains("users.acl:2:") && e.contains("+nosuch"), "{e}");
    let _: String = cmd(&mut s.client(), &["AUTH", "dave", "x"]);
}

#[test]
fn a_malformed_aclfile_refuses_startup_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let aclfile = tmp.path().join("users.acl");
    std::fs::write(
        &aclfile,
        "user default on nopass ~* +@all\nuser x on ~a:* +get\nusr y on\n",
    )
    .unwrap();
    let (code, out) = run_expecting_exit(
        &tmp.path().join("data"),
        1,
        &["--aclfile", aclfile.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("users.acl:3: line should start with user keyword"),
        "{out}"
    );
}

/// A client whose socket is bound to 127.0.0.2 is not on loopback as Redis counts it.
fn connect_from_127_0_0_2(port: u16) -> std::net::TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.2:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn first_reply(mut s: std::net::TcpStream) -> String {
    use std::io::Write;
    s.write_all(b"PING\r\n").unwrap();
    // One line: the refusal (then the server closes) or PING's reply.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn protected_mode_refuses_remote_clients_without_a_password() {
    let s = MoonServer::start(1, &["--bind", "0.0.0.0"]);
    let port = s.addr.port();
    let reply = first_reply(connect_from_127_0_0_2(port));
    let loopback = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    assert!(
        reply.starts_with("-DENIED Moon is running in protected mode because protected mode is enabled and no password is set for the default user."),
        "{reply}"
    );
    assert!(
        reply.contains("CONFIG SET protected-mode no") && reply.contains("--protected-mode no")
    );
    // Loopback itself is served.
    let mut local = loopback.get_connection().unwrap();
    assert_eq!(cmd::<String>(&mut local, &["PING"]), "PONG");
    // A password for the default user, or protected-mode no, lets the remote client in.
    let _: String = cmd(
        &mut local,
        &["ACL", "SETUSER", "default", "resetpass", ">pw"],
    );
    assert!(first_reply(connect_from_127_0_0_2(port)).starts_with("-NOAUTH"));
    let _: String = cmd(&mut local, &["AUTH", "pw"]);
    let _: String = cmd(&mut local, &["ACL", "SETUSER", "default", "nopass"]);
    assert!(first_reply(connect_from_127_0_0_2(port)).starts_with("-DENIED"));
    let _: String = cmd(&mut local, &["CONFIG", "SET", "protected-mode", "no"]);
    assert!(eventually(Duration::from_secs(5), || first_reply(
        connect_from_127_0_0_2(port)
    )
    .starts_with("+PONG")));
}

/// Findings of the review of the first ACL version, each a test.
#[test]
fn acl_review_findings() {
    let s = MoonServer::start(2, &[]);
    let mut admin = s.client();
    // SET ... GET reads the old value: a write-only key refuses it; EXISTS needs any access.
    setuser(&mut admin, "w", "on >p +@all -@dangerous &* %W~s:*");
    let mut w = login(&s, "w", "p");
    assert_eq!(cmd::<String>(&mut w, &["SET", "s:1", "v"]), "OK");
    assert_eq!(expect_err(&mut w, &["SET", "s:1", "x", "GET"]), NOPERM_KEY);
    assert_eq!(cmd::<i64>(&mut w, &["EXISTS", "s:1"]), 1);
    // Client libraries' connection commands are not @dangerous.
    let _: String = cmd(&mut w, &["CLIENT", "SETNAME", "lib"]);
    let _: Value = cmd(&mut w, &["COMMAND", "COUNT"]);
    // EXEC checks the queued commands again (one shard: the atomic path).
    let _: String = cmd(&mut w, &["MULTI"]);
    let _: String = cmd(&mut w, &["SET", "s:2", "v"]);
    setuser(&mut admin, "w", "resetkeys %W~t:*");
    assert_eq!(
        expect_err(&mut w, &["EXEC"]),
        "NOPERM ACLs rules changed between the moment the transaction was accumulated and its execution"
    );
    assert_eq!(cmd::<i64>(&mut admin, &["EXISTS", "s:2"]), 0);
    // Patterns with spaces would break the aclfile.
    let e = expect_err(&mut admin, &["ACL", "SETUSER", "x", "~a b"]);
    assert!(e.contains("spaces"), "{e}");
    let e = expect_err(
        &mut admin,
        &["ACL", "SETUSER", "x", "&x\nuser evil on nopass"],
    );
    assert!(e.contains("spaces or control"), "{e}");
    // A failed AUTH's username is clipped in the ACL LOG.
    let long = "u".repeat(100_000);
    let _ = expect_err(&mut s.client(), &["AUTH", &long, "x"]);
    let log: Vec<Value> = cmd(&mut admin, &["ACL", "LOG", "1"]);
    assert!(
        format!("{:?}", log[0]).len() < 5_000,
        "the log kept the whole name"
    );
    // HELLO with AUTH and a bad option changes nothing.
    setuser(&mut admin, "h", "on >p +@all ~*");
    let mut c = s.client();
    let e = expect_err(&mut c, &["HELLO", "2", "AUTH", "h", "p", "BOGUS"]);
    assert!(e.starts_with("ERR Syntax error in HELLO option"), "{e}");
    assert_eq!(cmd::<String>(&mut c, &["ACL", "WHOAMI"]), "default");
}

#[test]
fn taking_access_away_reaches_idle_and_subscribed_connections() {
    let s = MoonServer::start(2, &[]);
    let mut admin = s.client();
    setuser(&mut admin, "sub", "on >p +@all ~* &news");
    // A subscriber of a deleted user is disconnected at once.
    let mut c = login(&s, "sub", "p");
    let _: Vec<Value> = cmd(&mut c, &["SUBSCRIBE", "news"]);
    assert_eq!(cmd::<i64>(&mut admin, &["PUBLISH", "news", "x"]), 1);
    assert_eq!(cmd::<i64>(&mut admin, &["ACL", "DELUSER", "sub"]), 1);
    assert!(eventually(Duration::from_secs(10), || cmd::<i64>(
        &mut admin,
        &["PUBLISH", "news", "y"]
    ) == 0));
    // Revoking a subscriber's channel disconnects it too.
    setuser(&mut admin, "sub", "on >p +@all ~* &news");
    let mut c = login(&s, "sub", "p");
    let _: Vec<Value> = cmd(&mut c, &["SUBSCRIBE", "news"]);
    setuser(&mut admin, "sub", "resetchannels &other");
    assert!(eventually(Duration::from_secs(10), || cmd::<i64>(
        &mut admin,
        &["PUBLISH", "news", "z"]
    ) == 0));
    // Deleted and created again (a new password): the old connection does not carry over.
    let mut old = login(&s, "sub", "p");
    assert_eq!(cmd::<i64>(&mut admin, &["ACL", "DELUSER", "sub"]), 1);
    setuser(&mut admin, "sub", "on >new +@all ~*");
    assert!(redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut old)
        .is_err());
}

#[test]
fn the_aclfile_is_private_to_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let aclfile = tmp.path().join("users.acl");
    let s = MoonServer::start_in(
        &tmp.path().join("data"),
        1,
        &["--aclfile", aclfile.to_str().unwrap()],
    )
    .unwrap();
    let mut c = s.client();
    setuser(&mut c, "x", "on >p");
    let _: String = cmd(&mut c, &["ACL", "SAVE"]);
    let mode = std::fs::metadata(&aclfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn reset_allkeys_allchannels_and_password_removal() {
    let s = MoonServer::start(1, &[]);
    let mut admin = s.client();
    setuser(&mut admin, "r", "on >a >b allkeys allchannels +@all");
    let mut c = login(&s, "r", "a");
    assert_eq!(cmd::<String>(&mut c, &["SET", "anything", "v"]), "OK");
    assert_eq!(cmd::<i64>(&mut c, &["PUBLISH", "any", "v"]), 0);
    // <pw removes one password, the other still works; resetpass removes all.
    setuser(&mut admin, "r", "<a");
    assert_eq!(expect_err(&mut s.client(), &["AUTH", "r", "a"]), WRONGPASS);
    let _: String = cmd(&mut s.client(), &["AUTH", "r", "b"]);
    setuser(&mut admin, "r", "resetpass");
    assert_eq!(expect_err(&mut s.client(), &["AUTH", "r", "b"]), WRONGPASS);
    // resetkeys / resetchannels take access away from the live connection.
    setuser(&mut admin, "r", "resetkeys resetchannels");
    assert_eq!(expect_err(&mut c, &["GET", "anything"]), NOPERM_KEY);
    assert_eq!(expect_err(&mut c, &["PUBLISH", "any", "v"]), NOPERM_CHANNEL);
    // reset: off, no passwords, no keys, channels or commands.
    setuser(&mut admin, "r", "reset");
    let list: Vec<String> = cmd(&mut admin, &["ACL", "LIST"]);
    assert!(
        list.contains(&"user r off resetkeys resetchannels -@all".to_string()),
        "{list:?}"
    );
    assert_eq!(expect_err(&mut c, &["PING"]), noperm_cmd("ping"));
}
