//! Replication with the real engine: Debian's `redis-server` as a replica of a Moon primary
//! (skipped with a message when it is not installed; `.ci/run` installs it). The replica's
//! data is compared key by key with the primary's, through the protocol only.

mod common;

use std::time::Duration;

use common::*;

/// One field of an INFO section.
fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let text: String = cmd(c, &["INFO", section]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// [`info_field`] on a new connection to `url`; `None` if the server cannot be asked (Sentinel
/// closes normal clients' connections when it reconfigures a server, as clients expect).
fn info_at(url: &str, section: &str, field: &str) -> Option<String> {
    let mut c = redis::Client::open(url).ok()?.get_connection().ok()?;
    let text: String = redis::cmd("INFO").arg(section).query(&mut c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// Every key of every database of `c`, with its content and whether it has a deadline.
fn dataset(c: &mut redis::Connection) -> Vec<(i64, String, String, bool)> {
    let mut out = Vec::new();
    for db in 0..16 {
        let _: () = cmd(c, &["SELECT", &db.to_string()]);
        let mut keys: Vec<String> = cmd(c, &["KEYS", "*"]);
        keys.sort();
        for k in keys {
            let ttl: i64 = cmd(c, &["PTTL", &k]);
            out.push((db, k.clone(), key_content(c, &k), ttl > 0));
        }
    }
    let _: () = cmd(c, &["SELECT", "0"]);
    // The function libraries, by name and code.
    let libs: redis::Value = cmd(c, &["FUNCTION", "LIST", "WITHCODE"]);
    let mut names = Vec::new();
    if let redis::Value::Array(libs) = libs {
        for lib in libs {
            if let redis::Value::Array(fields) = lib {
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|p| p[0] == redis::Value::BulkString(name.as_bytes().to_vec()))
                        .map(|p| format!("{:?}", p[1]))
                };
                names.push(format!(
                    "{:?} {:?}",
                    field("library_name"),
                    field("library_code")
                ));
            }
        }
    }
    names.sort();
    out.push((-1, "functions".into(), names.join(","), false));
    out
}

/// Writes of every type, on both shards, in several databases: single commands, commands
/// whose keys span shards, MULTI/EXEC across shards, a script, keys that expire, and the
/// commands that act on whole databases (SWAPDB, FLUSHDB, also inside a transaction).
/// A Redis 7.0 primary propagates a consumer group's reads as XCLAIM ... LASTID only, which
/// does not carry the group's `entries-read` (Redis 7.2 adds XGROUP SETID ... ENTRIESREAD):
/// its replicas, Redis's as Moon's, do not know it. Compared without it (and `lag`, derived
/// from it).
fn without_group_counters(
    mut data: Vec<(i64, String, String, bool)>,
) -> Vec<(i64, String, String, bool)> {
    for (_, _, content, _) in &mut data {
        for marker in ["entries-read\"'), ", "lag\"'), "] {
            let mut out = String::new();
            let mut rest = content.as_str();
            while let Some(i) = rest.find(marker) {
                out.push_str(&rest[..i + marker.len()]);
                rest = &rest[i + marker.len()..];
                let end = rest.find([',', ']']).unwrap_or(rest.len());
                out.push('?');
                rest = &rest[end..];
            }
            out.push_str(rest);
            *content = out;
        }
    }
    data
}

/// The two datasets are equal; if not, the first keys that differ are named.
fn assert_same(replica: &[(i64, String, String, bool)], primary: &[(i64, String, String, bool)]) {
    if replica == primary {
        return;
    }
    let only = |a: &[(i64, String, String, bool)], b: &[(i64, String, String, bool)]| {
        a.iter()
            .filter(|e| !b.contains(e))
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (a, b) = (only(replica, primary), only(primary, replica));
    if let (Some(x), Some(y)) = (a.first(), b.first()) {
        let at =
            x.2.bytes()
                .zip(y.2.bytes())
                .take_while(|(p, q)| p == q)
                .count();
        let from = at.saturating_sub(200);
        panic!(
            "the replica differs at key {:?} (db {}), byte {at}: replica ...{:?} primary ...{:?}",
            x.1,
            x.0,
            x.2.get(from..).unwrap_or(""),
            y.2.get(from..).unwrap_or("")
        );
    }
    panic!("the replica differs: only on the replica {a:?}; only on the primary {b:?}");
}

fn write_load(c: &mut redis::Connection, tag: &str) {
    let k = keys_on_different_shards(2);
    let (a, b) = (format!("{tag}:{}", k[0]), format!("{tag}:{}", k[1]));
    let key = |s: &str| format!("{tag}:{s}");
    let run = |c: &mut redis::Connection, words: &[&str]| {
        let _: redis::Value = cmd(c, words);
    };
    for i in 0..50 {
        let n = i.to_string();
        run(c, &["SET", &key(&format!("s{i}")), &n]);
        run(c, &["INCRBY", &key("counter"), &n]);
        run(c, &["APPEND", &key("log"), &n]);
        run(c, &["HSET", &key("h"), &format!("f{i}"), &n]);
        run(c, &["RPUSH", &key("list"), &n]);
        run(c, &["SADD", &key("set"), &n]);
        run(c, &["ZADD", &key("z"), &n, &format!("m{i}")]);
        run(c, &["XADD", &key("x"), "*", "i", &n]);
        run(c, &["PFADD", &key("hll"), &n]);
    }
    run(c, &["INCRBYFLOAT", &key("float"), "1.5"]);
    run(c, &["HINCRBY", &key("h"), "f1", "10"]);
    run(c, &["HDEL", &key("h"), "f2"]);
    run(c, &["LPOP", &key("list")]);
    run(c, &["SPOP", &key("set")]);
    run(c, &["ZINCRBY", &key("z"), "2.5", "m3"]);
    run(c, &["ZREM", &key("z"), "m4"]);
    run(c, &["SET", &key("ttl"), "v", "EX", "100000"]);
    run(c, &["XGROUP", "CREATE", &key("x"), "g", "0"]);
    run(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "5",
            "STREAMS",
            &key("x"),
            ">",
        ],
    );
    // Across shards: MSET, RENAME, SMOVE, set algebra into another shard, MULTI/EXEC.
    run(c, &["MSET", &a, "1", &b, "2"]);
    run(c, &["SADD", &format!("{a}:s"), "x", "y"]);
    run(c, &["SADD", &format!("{b}:s"), "y", "z"]);
    run(
        c,
        &[
            "SUNIONSTORE",
            &format!("{b}:u"),
            &format!("{a}:s"),
            &format!("{b}:s"),
        ],
    );
    run(c, &["SMOVE", &format!("{a}:s"), &format!("{b}:s"), "x"]);
    run(c, &["RENAME", &a, &format!("{b}:renamed")]);
    run(c, &["MULTI"]);
    run(c, &["INCR", &b]);
    run(c, &["SET", &a, "again"]);
    run(c, &["LPUSH", &format!("{a}:l"), "p", "q"]);
    run(c, &["EXEC"]);
    // A function library, and a call of it.
    let lib = format!(
        "#!lua name=lib_{tag}\nredis.register_function('set_{tag}', function(keys, args) return redis.call('SET', keys[1], args[1]) end)"
    );
    run(c, &["FUNCTION", "LOAD", "REPLACE", &lib]);
    run(
        c,
        &[
            "FCALL",
            &format!("set_{tag}"),
            "1",
            &key("by-function"),
            "f",
        ],
    );
    // A script writing two keys of one shard.
    run(
        c,
        &[
            "EVAL",
            "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1])",
            "2",
            &format!("{{{tag}}}:e1"),
            &format!("{{{tag}}}:e2"),
            "script",
        ],
    );
    // Databases: a key in 3 moved to 4 by SWAPDB; database 5 emptied, inside a transaction
    // whose other writes come before and after the flush.
    run(c, &["SELECT", "3"]);
    run(c, &["SET", &key("in3"), "x"]);
    run(c, &["SELECT", "5"]);
    run(c, &["MSET", &a, "gone", &b, "gone"]);
    run(c, &["MULTI"]);
    run(c, &["SET", &b, "before"]);
    run(c, &["FLUSHDB"]);
    run(c, &["SET", &a, "after"]);
    run(c, &["EXEC"]);
    run(c, &["SELECT", "0"]);
    run(c, &["SWAPDB", "3", "4"]);
    // A key that expires: its removal reaches the replica as the primary's DEL.
    run(c, &["SET", &key("short"), "v", "PX", "30"]);
    assert!(eventually(Duration::from_secs(5), || {
        cmd::<i64>(c, &["EXISTS", &key("short")]) == 0
    }));
}

fn wait_online(primary: &mut redis::Connection, replica: &mut redis::Connection) {
    assert!(
        eventually(Duration::from_secs(20), || {
            info_field(replica, "replication", "master_link_status").as_deref() == Some("up")
        }),
        "the replica's link is up"
    );
    assert!(eventually(Duration::from_secs(5), || {
        info_field(primary, "replication", "connected_slaves").as_deref() == Some("1")
    }));
}

/// Once the replica acknowledged everything, it holds what the primary holds, key by key.
fn converged(p: &mut redis::Connection, r: &mut redis::Connection) {
    caught_up(p);
    assert_same(&dataset(r), &dataset(p));
}

/// Waits until the replica acknowledged everything written so far (WAIT, as a client would).
fn caught_up(primary: &mut redis::Connection) {
    let acked: i64 = cmd(primary, &["WAIT", "1", "10000"]);
    assert_eq!(acked, 1, "WAIT: the replica acknowledged every write");
}

#[test]
fn a_redis_replica_of_a_moon_primary_holds_the_same_data() {
    let moon = MoonServer::start(2, &[]);
    let mut m = moon.client();
    // Before the replica: reaches it through the RDB of the full synchronisation.
    write_load(&mut m, "pre");
    let port = moon.addr.port().to_string();
    let Some(redis) = RedisServer::start_with(
        "a_redis_replica_of_a_moon_primary_holds_the_same_data",
        &["--replicaof", "127.0.0.1", &port],
    ) else {
        return;
    };
    let mut r = redis.client();
    wait_online(&mut m, &mut r);
    assert_eq!(
        info_field(&mut m, "stats", "sync_full").as_deref(),
        Some("1")
    );
    // After: through the stream.
    write_load(&mut m, "post");
    caught_up(&mut m);
    let primary = dataset(&mut m);
    assert!(primary.len() > 40, "the load wrote keys: {}", primary.len());
    assert_same(&dataset(&mut r), &primary);

    // ROLE and INFO show the replica and its acknowledged offset.
    let offset: u64 = info_field(&mut m, "replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .expect("master_repl_offset");
    assert!(offset > 0);
    let role: (String, u64, Vec<(String, String, String)>) = cmd(&mut m, &["ROLE"]);
    assert_eq!(role.0, "master");
    assert_eq!(role.2.len(), 1);
    assert_eq!(role.2[0].1, redis.port.to_string());
    let replica_offset: u64 = info_field(&mut r, "replication", "slave_repl_offset")
        .and_then(|v| v.parse().ok())
        .expect("slave_repl_offset");
    assert!(
        replica_offset >= role.1 - 64,
        "{replica_offset} vs {}",
        role.1
    );

    // The link cut: the replica comes back with PSYNC and continues from the backlog.
    let killed: i64 = cmd(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(killed, 1);
    write_load(&mut m, "during");
    wait_online(&mut m, &mut r);
    caught_up(&mut m);
    assert_eq!(
        info_field(&mut m, "stats", "sync_partial_ok").as_deref(),
        Some("1"),
        "partial resynchronisation"
    );
    assert_eq!(
        info_field(&mut m, "stats", "sync_full").as_deref(),
        Some("1")
    );
    assert_same(&dataset(&mut r), &dataset(&mut m));
}

#[test]
fn replication_needs_the_aof_and_wait_without_replicas_answers_zero() {
    let moon = MoonServer::start(2, &["--appendonly", "no"]);
    let mut m = moon.client();
    let e = expect_err(&mut m, &["PSYNC", "?", "-1"]);
    assert!(e.contains("appendonly yes"), "{e}");
    let n: i64 = cmd(&mut m, &["WAIT", "1", "10"]);
    assert_eq!(n, 0);
    let role: (String, i64, Vec<String>) = cmd(&mut m, &["ROLE"]);
    assert_eq!(role, ("master".to_string(), 0, vec![]));
}

#[test]
fn a_moon_replica_of_a_redis_primary_holds_the_same_data() {
    // Redis 7's default: a diskless synchronisation (`$EOF:` framing), without its 5 s wait.
    let Some(redis) = RedisServer::start_with(
        "a_moon_replica_of_a_redis_primary_holds_the_same_data",
        &[
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ],
    ) else {
        return;
    };
    let mut r = redis.client();
    write_load(&mut r, "pre");
    let primary = format!("127.0.0.1 {}", redis.port);
    let moon = MoonServer::start(2, &["--replicaof", &primary]);
    let mut m = moon.client();
    wait_online(&mut r, &mut m);
    write_load(&mut r, "post");
    caught_up(&mut r);
    let data = without_group_counters(dataset(&mut r));
    assert!(data.len() > 40);
    assert_same(&without_group_counters(dataset(&mut m)), &data);

    assert!(
        moon.log_text().contains("(diskless)"),
        "{}",
        moon.log_text()
    );
    // A read-only replica: clients' writes are refused, reads served.
    let e = expect_err(&mut m, &["SET", "k", "v"]);
    assert!(e.starts_with("READONLY"), "{e}");
    let role: (String, String, i64, String, i64) = cmd(&mut m, &["ROLE"]);
    assert_eq!(
        (role.0.as_str(), role.2, role.3.as_str()),
        ("slave", i64::from(redis.port), "connected")
    );
    assert_eq!(
        info_field(&mut m, "replication", "role").as_deref(),
        Some("slave")
    );

    // The link cut: PSYNC continues from Redis's backlog, even in the middle of a database
    // other than 0.
    let _: () = cmd(&mut r, &["SELECT", "7"]);
    let _: () = cmd(&mut r, &["SET", "in7", "x"]);
    let killed: i64 = cmd(&mut r, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(killed, 1);
    let _: () = cmd(&mut r, &["SET", "in7-after", "y"]);
    let _: () = cmd(&mut r, &["SELECT", "0"]);
    wait_online(&mut r, &mut m);
    caught_up(&mut r);
    assert_eq!(
        info_field(&mut r, "stats", "sync_partial_ok").as_deref(),
        Some("1"),
        "partial resynchronisation"
    );
    assert_same(
        &without_group_counters(dataset(&mut m)),
        &without_group_counters(dataset(&mut r)),
    );
}

#[test]
fn a_moon_replica_of_a_moon_primary_never_shows_half_a_transaction() {
    let primary = MoonServer::start(2, &[]);
    let mut p = primary.client();
    write_load(&mut p, "pre");
    let target = format!("127.0.0.1 {}", primary.addr.port());
    // Three shards on the replica: keys land on other shards than on the primary.
    let replica = MoonServer::start(3, &["--replicaof", &target]);
    let mut r = replica.client();
    wait_online(&mut p, &mut r);

    // Two keys on different shards of both servers, always written together.
    let k = keys_on_different_shards(6);
    let (a, b) = (k[0].clone(), k[1].clone());
    let reader = {
        let url = replica.url();
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut seen = 0;
            let mut torn = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                let v: Vec<Option<i64>> = cmd(&mut c, &["MGET", &a, &b]);
                if v[0] != v[1] {
                    torn += 1;
                }
                if v[0] == Some(299) && v[1] == Some(299) {
                    return (seen, torn);
                }
                seen += 1;
            }
            (seen, torn)
        })
    };
    for i in 0..300 {
        let n = i.to_string();
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&a)
            .arg(&n)
            .cmd("SET")
            .arg(&b)
            .arg(&n)
            .query(&mut p)
            .unwrap();
    }
    write_load(&mut p, "post");
    let (seen, torn) = reader.join().unwrap();
    assert!(seen > 0);
    assert_eq!(torn, 0, "a reader of the replica saw half a transaction");
    converged(&mut p, &mut r);
}

#[test]
fn a_replica_keeps_what_it_applied_across_a_kill_and_can_be_promoted() {
    let primary = MoonServer::start(2, &[]);
    let mut p = primary.client();
    let (dir, mut replica, r) = follower(&mut p, primary.addr.port(), 2);
    write_load(&mut p, "applied");
    caught_up(&mut p);
    let expected = dataset(&mut p);
    // Every command the replica acknowledged is in its own logs.
    replica.kill();
    drop(r);
    let replica = MoonServer::start_in(dir.path(), 2, &[]).unwrap();
    let mut r = replica.client();
    assert_same(&dataset(&mut r), &expected);
    assert_eq!(
        info_field(&mut r, "replication", "role").as_deref(),
        Some("master")
    );

    // REPLICAOF at run time, then NO ONE: writable again, with the data it followed.
    let ok: String = cmd(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &primary.addr.port().to_string()],
    );
    assert_eq!(ok, "OK");
    wait_online(&mut p, &mut r);
    let _: () = cmd(&mut p, &["SET", "late", "1"]);
    caught_up(&mut p);
    assert!(expect_err(&mut r, &["SET", "x", "1"]).starts_with("READONLY"));
    let applied: u64 = info_field(&mut r, "replication", "slave_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(applied > 0);
    let ok: String = cmd(&mut r, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(ok, "OK");
    // Its own stream continues the offsets it applied: its replicas' offsets keep growing.
    let own: u64 = info_field(&mut r, "replication", "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(own, applied);
    let _: () = cmd(&mut r, &["SET", "x", "1"]);
    let late: String = cmd(&mut r, &["GET", "late"]);
    assert_eq!(late, "1");
    assert_eq!(
        info_field(&mut r, "replication", "role").as_deref(),
        Some("master")
    );
}

/// A Redis Sentinel (`redis-server <conf> --sentinel`, Debian's package) watching `master`.
struct Sentinel {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile sentinel.log\nsentinel monitor mymaster 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds mymaster 3000\nsentinel failover-timeout mymaster 10000\nsentinel parallel-syncs mymaster 2\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let s = Sentinel {
            child,
            port,
            _dir: dir,
        };
        assert!(eventually(Duration::from_secs(10), || s.client().is_some()));
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("sentinel.log")).unwrap_or_default()
    }

    fn client(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    /// The primary's port as this sentinel sees it.
    fn master_port(&self) -> Option<u16> {
        let mut c = self.client()?;
        let addr: Vec<String> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("mymaster")
            .query(&mut c)
            .ok()?;
        addr.get(1)?.parse().ok()
    }

    fn count(&self, what: &str) -> usize {
        self.client()
            .and_then(|mut c| {
                redis::cmd("SENTINEL")
                    .arg(what)
                    .arg("mymaster")
                    .query::<Vec<redis::Value>>(&mut c)
                    .ok()
            })
            .map_or(0, |v| v.len())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sentinel_fails_over_a_moon_primary_to_a_moon_replica() {
    if RedisServer::start("sentinel_fails_over_a_moon_primary_to_a_moon_replica").is_none() {
        return;
    }
    let primary_dir = tempfile::tempdir().unwrap();
    let mut primary = MoonServer::start_in(primary_dir.path(), 2, &[]).unwrap();
    let pport = primary.addr.port();
    let mut p = primary.client();
    let target = format!("127.0.0.1 {pport}");
    let replicas: Vec<MoonServer> = (0..2)
        .map(|_| MoonServer::start(2, &["--replicaof", &target]))
        .collect();
    assert!(eventually(Duration::from_secs(20), || {
        info_field(&mut p, "replication", "connected_slaves").as_deref() == Some("2")
    }));
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(pport)).collect();
    // Generous: under CI's load (every test at once on 2 CPUs) Sentinel's periodic INFO and
    // hello messages can be slow to arrive; what matters is that they do.
    assert!(
        eventually(Duration::from_secs(90), || sentinels
            .iter()
            .all(|s| s.count("REPLICAS") == 2 && s.count("SENTINELS") == 2)),
        "the sentinels found both replicas and each other: {}",
        sentinels[0].log()
    );

    // Writes acknowledged by a replica (WAIT 1) before the primary dies.
    write_load(&mut p, "acked");
    let acked: i64 = cmd(&mut p, &["WAIT", "1", "10000"]);
    assert!(acked >= 1);
    let expected = dataset(&mut p);
    primary.kill();

    assert!(
        eventually(Duration::from_secs(60), || sentinels
            .iter()
            .all(|s| s.master_port().is_some_and(|port| port != pport))),
        "the sentinels promoted a replica"
    );
    let new_port = sentinels[0].master_port().unwrap();
    let promoted = replicas
        .iter()
        .find(|r| r.addr.port() == new_port)
        .expect("a Moon replica was promoted");
    let other = replicas.iter().find(|r| r.addr.port() != new_port).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        info_at(&promoted.url(), "replication", "role").as_deref() == Some("master")
    }));
    // The other replica follows the new primary (Sentinel's SLAVEOF), then clients settle:
    // Sentinel closes normal clients of both when it reconfigures them.
    assert!(eventually(Duration::from_secs(30), || {
        info_at(&other.url(), "replication", "master_port") == Some(new_port.to_string())
            && info_at(&other.url(), "replication", "master_link_status").as_deref() == Some("up")
    }));
    let mut n = promoted.client();
    // Nothing WAIT acknowledged is lost.
    assert_same(&dataset(&mut n), &expected);
    // The new primary takes writes; the other replica has them.
    let _: () = cmd(&mut n, &["SET", "after-failover", "1"]);
    let acked: i64 = cmd(&mut n, &["WAIT", "1", "10000"]);
    assert!(acked >= 1);
    assert_same(&dataset(&mut other.client()), &dataset(&mut n));

    // The old primary comes back; Sentinel makes it a replica of the new one, and it
    // converges.
    let old_port = pport.to_string();
    let old = MoonServer::start_in(primary_dir.path(), 2, &["--port", &old_port]).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || {
            info_at(&old.url(), "replication", "master_port") == Some(new_port.to_string())
                && info_at(&old.url(), "replication", "master_link_status").as_deref() == Some("up")
        }),
        "the old primary rejoined as a replica: {}\n{}",
        sentinels[0].log(),
        old.log_text()
    );
    let mut n = promoted.client();
    let _: () = cmd(&mut n, &["SET", "after-rejoin", "1"]);
    let acked: i64 = cmd(&mut n, &["WAIT", "2", "10000"]);
    assert_eq!(acked, 2);
    assert_same(&dataset(&mut old.client()), &dataset(&mut n));
}

/// Reads from `s` into `got` until `wanted` appears in it (a read timeout fails the test).
fn read_until(s: &mut std::net::TcpStream, got: &mut Vec<u8>, wanted: &[u8]) {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    while !got.windows(wanted.len()).any(|w| w == wanted) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Makes the stream exist (a replica synchronised once) and leaves: the replica's side of
/// PSYNC by hand, its RDB read and dropped.
fn sync_once_and_leave(port: u16) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PSYNC ? -1\r\n").unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"REDIS0");
    assert!(got.starts_with(b"+FULLRESYNC "));
}

#[test]
fn wait_never_blocks_inside_a_transaction_and_keeps_its_timeout() {
    // Review finding: WAIT inside MULTI blocked while its transaction held a shard.
    let moon = MoonServer::start(2, &[]);
    sync_once_and_leave(moon.addr.port());
    let mut c = moon.client();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The replica that left is gone before the transaction runs (a slow build saw it still
    // listed, and WAIT counted it).
    assert!(eventually(Duration::from_secs(10), || {
        info_field(&mut c, "replication", "connected_slaves").as_deref() == Some("0")
    }));
    let k = keys_on_different_shards(2);
    let (ok, waited): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&k[0])
        .arg("v")
        .cmd("WAIT")
        .arg(1)
        .arg(0)
        .query(&mut c)
        .expect("EXEC answers at once");
    assert_eq!((ok.as_str(), waited), ("OK", 0));
    // Outside a transaction it waits for its timeout, and no longer.
    let started = std::time::Instant::now();
    let n: i64 = cmd(&mut c, &["WAIT", "1", "200"]);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The shard is free: another client writes there at once.
    let mut d = moon.client();
    let _: () = cmd(&mut d, &["SET", &k[1], "w"]);
    // REPLCONF ACK from a client that is not a replica is not answered (as Redis).
    let mut raw = std::net::TcpStream::connect(moon.addr).unwrap();
    use std::io::Write;
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"REPLCONF ACK 5\r\nREPLCONF\r\nPING\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut raw, &mut got, b"+PONG\r\n");
    assert_eq!(got, b"+OK\r\n+PONG\r\n");
}

#[test]
fn a_failed_log_refuses_a_full_sync_and_holds_no_other_shard_back() {
    // Review finding: a full synchronisation marked the healthy shards' logs before finding
    // the failed one, and those marks stopped the stream for every replica.
    let tmp = tempfile::tempdir().unwrap();
    // Every shard's third write round fails.
    let moon =
        MoonServer::start_with_env(tmp.path(), 2, &[], &[("MOON_AOF_FAULT", "write:3")]).unwrap();
    let port = moon.addr.port().to_string();
    let Some(redis) = RedisServer::start_with(
        "a_failed_log_refuses_a_full_sync_and_holds_no_other_shard_back",
        &["--replicaof", "127.0.0.1", &port],
    ) else {
        return;
    };
    let mut m = moon.client();
    let mut r = redis.client();
    wait_online(&mut m, &mut r);
    let k = keys_on_different_shards(2);
    let (a, b) = (&k[0], &k[1]);
    // Shard of a: rounds 1 and 2 succeed, round 3 fails (MISCONF from then on).
    let _: () = cmd(&mut m, &["SET", a, "1"]);
    let _: () = cmd(&mut m, &["SET", a, "2"]);
    let e = expect_err(&mut m, &["SET", a, "3"]);
    assert!(e.starts_with("MISCONF"), "{e}");
    // A new replica cannot be given a cut of a failed log.
    let mut raw = std::net::TcpStream::connect(moon.addr).unwrap();
    use std::io::{Read, Write};
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    raw.write_all(b"PSYNC ? -1\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = raw.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        answer.starts_with("-ERR") && answer.contains("AOF"),
        "{answer}"
    );
    // The other shard's writes still reach the replica that was there.
    let _: () = cmd(&mut m, &["SET", b, "flows"]);
    assert!(
        eventually(Duration::from_secs(10), || {
            cmd::<Option<String>>(&mut r, &["GET", b]).as_deref() == Some("flows")
        }),
        "the healthy shard's stream still flows"
    );
}

#[test]
fn a_replica_leaves_expiry_to_its_primary() {
    // Review finding: the replica expired keys on its own clock, so a write its primary ran
    // just before a deadline could find the key gone here.
    let primary = MoonServer::start(2, &["--enable-debug-command", "yes"]);
    let mut p = primary.client();
    let (_dir, _replica, mut r) = follower(&mut p, primary.addr.port(), 2);
    // The primary keeps an expired key until something touches it.
    let _: () = cmd(&mut p, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    let _: () = cmd(&mut p, &["SET", "k", "v", "PX", "50"]);
    caught_up(&mut p);
    assert!(eventually(Duration::from_secs(5), || {
        cmd::<Option<String>>(&mut r, &["GET", "k"]).is_none()
    }));
    // Past its deadline the replica answers as if it were gone, and keeps it: several rounds
    // of active expiry later it is still counted, as on the primary.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < deadline {
        let n: i64 = cmd(&mut r, &["DBSIZE"]);
        assert_eq!(n, 1, "the replica removed an expired key by itself");
    }
    let e = expect_err(&mut r, &["SET", "k", "x"]);
    assert!(e.starts_with("READONLY"), "{e}");
    // The primary's removal reaches it.
    let gone: Option<String> = cmd(&mut p, &["GET", "k"]);
    assert!(gone.is_none());
    assert!(eventually(Duration::from_secs(5), || cmd::<i64>(
        &mut r,
        &["DBSIZE"]
    ) == 0));
}

#[test]
fn a_read_only_replica_refuses_exec_of_writes_and_function_changes() {
    // Review findings: an EXEC queued before REPLICAOF ran its writes; FUNCTION LOAD was
    // accepted on a read-only replica.
    let primary = MoonServer::start(1, &[]);
    let node = MoonServer::start(2, &[]);
    let mut c = node.client();
    let _: () = cmd(&mut c, &["MULTI"]);
    let _: String = cmd(&mut c, &["INCR", "k"]);
    let mut admin = node.client();
    let ok: String = cmd(
        &mut admin,
        &["REPLICAOF", "127.0.0.1", &primary.addr.port().to_string()],
    );
    assert_eq!(ok, "OK");
    let e = expect_err(&mut c, &["EXEC"]);
    assert!(e.starts_with("EXECABORT") && e.contains("READONLY"), "{e}");
    let e = expect_err(
        &mut admin,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=x\nredis.register_function('f', function() return 1 end)",
        ],
    );
    assert!(e.starts_with("READONLY"), "{e}");
    // A replica whose link is not up serves no copy of itself.
    let mut p = primary.client();
    let mut r = node.client();
    wait_online(&mut p, &mut r);
    drop(primary);
    assert!(eventually(Duration::from_secs(10), || {
        info_field(&mut r, "replication", "master_link_status").as_deref() == Some("down")
    }));
    let e = expect_err(&mut r, &["PSYNC", "?", "-1"]);
    assert!(e.starts_with("NOMASTERLINK"), "{e}");
}

#[test]
fn replicaof_needs_the_aof() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_expecting_exit(
        dir.path(),
        1,
        &["--appendonly", "no", "--replicaof", "127.0.0.1 6379"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("replicaof") && out.contains("appendonly yes"),
        "{out}"
    );
}

#[test]
fn min_replicas_to_write_and_stale_data_as_redis_answers() {
    let primary = MoonServer::start(2, &["--min-replicas-to-write", "1"]);
    let mut p = primary.client();
    let e = expect_err(&mut p, &["SET", "k", "v"]);
    assert!(e.starts_with("NOREPLICAS"), "{e}");
    let target = format!("127.0.0.1 {}", primary.addr.port());
    let replica = MoonServer::start(
        2,
        &["--replicaof", &target, "--replica-serve-stale-data", "no"],
    );
    let mut r = replica.client();
    wait_online(&mut p, &mut r);
    // A replica acknowledges every second: with one that did, writes are taken.
    assert!(eventually(Duration::from_secs(5), || redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut p)
        .is_ok()));
    caught_up(&mut p);
    let v: String = cmd(&mut r, &["GET", "k"]);
    assert_eq!(v, "v");
    // The primary gone, this replica answers nothing from its data.
    drop(primary);
    assert!(eventually(Duration::from_secs(10), || {
        info_field(&mut r, "replication", "master_link_status").as_deref() == Some("down")
    }));
    let e = expect_err(&mut r, &["GET", "k"]);
    assert!(e.starts_with("MASTERDOWN"), "{e}");
    let pong: String = cmd(&mut r, &["PING"]);
    assert_eq!(pong, "PONG");
}

/// Scripts under `min-replicas-to-write` without the replicas, as Redis 7.0 answers (its
/// `unit/scripting` "not enough good replicas"): a script flagged `no-writes`, and one
/// without flags that only reads, run; one flagged for writes is refused before it runs; one
/// without flags meets NOREPLICAS at its first write, and so does MULTI/EXEC around it only
/// then. Keys on both shards (2 shards): each script names one.
#[test]
fn scripts_without_enough_replicas_are_refused_at_their_first_write() {
    let primary = MoonServer::start(2, &[]);
    let mut p = primary.client();
    let _: () = cmd(&mut p, &["SET", "x", "some value"]);
    let ok: String = cmd(&mut p, &["CONFIG", "SET", "min-replicas-to-write", "1"]);
    assert_eq!(ok, "OK");
    let read = "return redis.call('get', KEYS[1])";
    let flagged_read = format!("#!lua flags=no-writes\n{read}");
    for body in [flagged_read.as_str(), read] {
        let v: String = cmd(&mut p, &["EVAL", body, "1", "x"]);
        assert_eq!(v, "some value", "{body}");
    }
    let flagged = format!("#!lua\n{read}");
    let e = expect_err(&mut p, &["EVAL", &flagged, "1", "x"]);
    assert!(e.starts_with("NOREPLICAS"), "{e}");
    let write = "return redis.call('set', KEYS[1], 1)";
    let e = expect_err(&mut p, &["EVAL", write, "1", "x"]);
    assert!(e.contains("NOREPLICAS"), "{e}");
    // A script that reads, then writes: it ran, and its write was refused.
    let e = expect_err(
        &mut p,
        &[
            "EVAL",
            "redis.call('get', KEYS[1]) return redis.call('incr', KEYS[1])",
            "1",
            "n",
        ],
    );
    assert!(e.contains("NOREPLICAS"), "{e}");
    // Inside MULTI: EXEC runs; the script's write is refused in its own reply (raw RESP: the
    // client library turns an EXEC holding an error into an error).
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(primary.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = b"*1\r\n$5\r\nMULTI\r\n".to_vec();
    for body in [read, write] {
        request.extend_from_slice(
            format!(
                "*4\r\n$4\r\nEVAL\r\n${}\r\n{body}\r\n$1\r\n1\r\n$1\r\nx\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    request.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
    raw.write_all(&request).expect("send");
    let want = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$10\r\nsome value\r\n-NOREPLICAS";
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !(String::from_utf8_lossy(&got).contains(want) && got.ends_with(b"\r\n")) {
        let n = raw.read(&mut chunk).expect("EXEC's reply");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let v: String = cmd(&mut p, &["GET", "x"]);
    assert_eq!(v, "some value", "nothing was written");
    let e = expect_err(&mut p, &["SET", "x", "1"]);
    assert!(e.starts_with("NOREPLICAS"), "{e}");
    // `min-replicas-max-lag 0` turns the check off, as in Redis.
    let ok: String = cmd(&mut p, &["CONFIG", "SET", "min-replicas-max-lag", "0"]);
    assert_eq!(ok, "OK");
    let _: () = cmd(&mut p, &["SET", "x", "1"]);
    let ok: String = cmd(&mut p, &["EVAL", write, "1", "x"]);
    assert_eq!(ok, "OK");
}

#[test]
fn waitaof_counts_the_local_fsync_and_the_replicas() {
    let primary = MoonServer::start(2, &["--appendfsync", "everysec"]);
    let mut p = primary.client();
    let _: () = cmd(&mut p, &["SET", "k", "v"]);
    let alone: Vec<i64> = cmd(&mut p, &["WAITAOF", "1", "0", "0"]);
    assert_eq!(alone, vec![1, 0]);
    let started = std::time::Instant::now();
    // The local count is reported whatever was asked (as Redis does).
    let none: Vec<i64> = cmd(&mut p, &["WAITAOF", "0", "1", "100"]);
    assert_eq!(none, vec![1, 0]);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let (_dir, _replica, mut r) = follower(&mut p, primary.addr.port(), 2);
    let _: () = cmd(&mut p, &["SET", "k", "w"]);
    let both: Vec<i64> = cmd(&mut p, &["WAITAOF", "1", "1", "10000"]);
    assert_eq!(both, vec![1, 1]);
    let e = expect_err(&mut r, &["WAITAOF", "0", "1", "10"]);
    assert!(e.contains("replica"), "{e}");
    let off = MoonServer::start(1, &["--appendonly", "no"]);
    let e = expect_err(&mut off.client(), &["WAITAOF", "1", "0", "10"]);
    assert!(e.contains("appendonly"), "{e}");
}

#[test]
fn failover_hands_the_primary_role_to_a_replica_without_losing_a_write() {
    let primary = MoonServer::start(2, &[]);
    let mut p = primary.client();
    let e = expect_err(&mut p, &["FAILOVER"]);
    assert!(e.contains("requires connected replicas"), "{e}");
    let e = expect_err(&mut p, &["FAILOVER", "ABORT"]);
    assert!(e.contains("No failover in progress"), "{e}");
    let (_dir, replica, _r) = follower(&mut p, primary.addr.port(), 2);
    write_load(&mut p, "before");
    let rport = replica.addr.port().to_string();
    let ok: String = cmd(
        &mut p,
        &["FAILOVER", "TO", "127.0.0.1", &rport, "TIMEOUT", "10000"],
    );
    assert_eq!(ok, "OK");
    assert!(
        eventually(Duration::from_secs(20), || {
            info_at(&replica.url(), "replication", "role").as_deref() == Some("master")
                && info_at(&primary.url(), "replication", "master_link_status").as_deref()
                    == Some("up")
        }),
        "the roles switched"
    );
    let mut n = replica.client();
    let mut old = primary.client();
    assert!(expect_err(&mut old, &["SET", "x", "1"]).starts_with("READONLY"));
    write_load(&mut n, "after");
    caught_up(&mut n);
    assert_same(&dataset(&mut old), &dataset(&mut n));

    // To a Redis 7 replica: Redis takes the role on Moon's PSYNC ... FAILOVER.
    let nport = replica.addr.port().to_string();
    let Some(redis) = RedisServer::start_with(
        "failover_hands_the_primary_role_to_a_replica_without_losing_a_write",
        &["--replicaof", "127.0.0.1", &nport],
    ) else {
        return;
    };
    let mut rr = redis.client();
    assert!(eventually(Duration::from_secs(20), || {
        info_field(&mut rr, "replication", "master_link_status").as_deref() == Some("up")
            && info_at(&replica.url(), "replication", "connected_slaves").as_deref() == Some("2")
    }));
    let ok: String = cmd(
        &mut n,
        &[
            "FAILOVER",
            "TO",
            "127.0.0.1",
            &redis.port.to_string(),
            "TIMEOUT",
            "10000",
        ],
    );
    assert_eq!(ok, "OK");
    assert!(
        eventually(Duration::from_secs(20), || {
            info_field(&mut rr, "replication", "role").as_deref() == Some("master")
                && info_at(&replica.url(), "replication", "master_link_status").as_deref()
                    == Some("up")
        }),
        "Redis took the role"
    );
    let mut n = replica.client();
    assert_same(
        &without_group_counters(dataset(&mut n)),
        &without_group_counters(dataset(&mut rr)),
    );
}

/// A Moon replica of `shards` shards on `dir`, following the primary at `port` (whose client
/// is `p`), once its link is up.
fn rejoin(
    dir: &std::path::Path,
    port: u16,
    shards: usize,
    p: &mut redis::Connection,
) -> (MoonServer, redis::Connection) {
    let target = format!("127.0.0.1 {port}");
    let replica = MoonServer::start_in(dir, shards, &["--replicaof", &target]).unwrap();
    let mut r = replica.client();
    wait_online(p, &mut r);
    (replica, r)
}

/// [`rejoin`] on a new data directory.
fn follower(
    p: &mut redis::Connection,
    port: u16,
    shards: usize,
) -> (tempfile::TempDir, MoonServer, redis::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let (replica, r) = rejoin(dir.path(), port, shards, p);
    (dir, replica, r)
}

/// A primary of `shards` shards, and a 2-shard replica on the returned directory that
/// followed it through `write_load`, then was stopped cleanly.
fn followed_then_stopped(shards: usize) -> (MoonServer, redis::Connection, tempfile::TempDir) {
    let primary = MoonServer::start(shards, &[]);
    let mut p = primary.client();
    let (dir, mut replica, _) = follower(&mut p, primary.addr.port(), 2);
    write_load(&mut p, "one");
    caught_up(&mut p);
    assert!(replica.terminate().success());
    (primary, p, dir)
}

#[test]
fn a_replica_restarted_cleanly_continues_with_psync() {
    let (primary, mut p, dir) = followed_then_stopped(2);
    let port = primary.addr.port();
    // Written while the replica is down: the backlog holds it.
    let _: () = cmd(&mut p, &["SET", "while-down", "1"]);
    let (_replica, mut r) = rejoin(dir.path(), port, 2, &mut p);
    caught_up(&mut p);
    assert_eq!(
        info_field(&mut p, "stats", "sync_partial_ok").as_deref(),
        Some("1")
    );
    assert_eq!(
        info_field(&mut p, "stats", "sync_full").as_deref(),
        Some("1")
    );
    assert_same(&dataset(&mut r), &dataset(&mut p));
}

/// Until `stop`: writes that the stream carries as sent and that change something every time
/// they run (RPUSH, APPEND: applied twice they show), over keys on every shard, every third
/// round as one MULTI/EXEC across shards.
fn non_idempotent_writer(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let i = n.to_string();
            let mut pipe = redis::pipe();
            if n.is_multiple_of(3) {
                pipe.atomic();
            }
            pipe.cmd("RPUSH")
                .arg(format!("list:{}", n % 7))
                .arg(&i)
                .ignore()
                .cmd("APPEND")
                .arg(format!("str:{}", n % 5))
                .arg(format!("{i},"))
                .ignore()
                .cmd("RPUSH")
                .arg(format!("list:{}", (n + 3) % 7))
                .arg(&i)
                .ignore();
            let _: () = pipe.query(&mut c).unwrap();
            n += 1;
        }
        n
    })
}

fn offset_of(c: &mut redis::Connection, field: &str) -> u64 {
    info_field(c, "replication", field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_replica_killed_while_it_applies_continues_with_psync_and_applies_nothing_twice() {
    let primary = MoonServer::start(2, &["--repl-backlog-size", "268435456"]);
    let mut p = primary.client();
    killed_under_load_and_continued(&mut p, primary.url(), primary.addr.port());
}

#[test]
fn a_replica_of_redis_killed_while_it_applies_continues_with_psync() {
    let test = "a_replica_of_redis_killed_while_it_applies_continues_with_psync";
    let Some(redis) = RedisServer::start_with(test, &["--repl-backlog-size", "268435456"]) else {
        return;
    };
    let mut p = redis.client();
    killed_under_load_and_continued(&mut p, redis.url(), redis.port);
}

/// A 3-shard Moon replica of the primary at `port` is killed again and again while it applies
/// a non-idempotent load; each restart must continue with PSYNC, and in the end every key is
/// as on the primary.
fn killed_under_load_and_continued(p: &mut redis::Connection, url: String, port: u16) {
    // Three shards on the replica (two on a Moon primary): a batch of the stream spans shards
    // differently on each, and a kill can leave each shard at another point of it.
    let (dir, mut replica, mut r) = follower(p, port, 3);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = non_idempotent_writer(url, stop.clone());
    // At least three kills, and on until one of them came in the middle of a batch: a
    // restart then ends the logs at the saved place (a log line says so).
    let mut cut = false;
    let mut kill = 0;
    while kill < 3 || !cut {
        kill += 1;
        assert!(kill <= 12, "no kill came while a batch was being applied");
        // Killed while it applies: its offset is moving.
        let seen = offset_of(&mut r, "slave_repl_offset");
        assert!(eventually(Duration::from_secs(20), || {
            offset_of(&mut r, "slave_repl_offset") > seen + 20_000
        }));
        replica.kill();
        // The stream goes on while it is down.
        let at = offset_of(p, "master_repl_offset");
        assert!(eventually(Duration::from_secs(20), || {
            offset_of(p, "master_repl_offset") > at + 20_000
        }));
        (replica, r) = rejoin(dir.path(), port, 3, p);
        cut |= replica
            .log_text()
            .contains("what a replica applied after its last recorded place");
        assert_eq!(
            info_field(p, "stats", "sync_partial_ok"),
            Some(kill.to_string()),
            "restart {kill} after a kill continued with PSYNC"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let rounds = writer.join().unwrap();
    assert!(rounds > 0);
    // The replica may trail a writer that never waited for it by many seconds of stream
    // (a loaded CI machine): a longer WAIT than `caught_up`'s, which answers once it is there.
    let acked: i64 = cmd(p, &["WAIT", "1", "120000"]);
    assert_eq!(acked, 1, "WAIT: the replica acknowledged every write");
    assert_eq!(info_field(p, "stats", "sync_full").as_deref(), Some("1"));
    // Nothing applied twice, nothing missing: every list and string as on the primary.
    assert_same(&dataset(&mut r), &dataset(p));
}

#[test]
fn a_promoted_replica_keeps_its_own_writes_across_a_kill_whatever_replicaof_says_at_restart() {
    let primary = MoonServer::start(2, &[]);
    let mut p = primary.client();
    let target = format!("127.0.0.1 {}", primary.addr.port());
    let args = ["--replicaof", target.as_str()];
    let (dir, mut replica, mut r) = follower(&mut p, primary.addr.port(), 2);
    write_load(&mut p, "followed");
    caught_up(&mut p);
    // Promoted at run time (its config file still names the primary), then written to.
    let ok: String = cmd(&mut r, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(ok, "OK");
    for i in 0..50 {
        let _: () = cmd(&mut r, &["RPUSH", "promoted", &i.to_string()]);
    }
    let expected = dataset(&mut r);
    replica.kill();
    drop(primary);
    // Restarted as the replica of a primary that is gone: its place in the old stream must
    // not cut away what it acknowledged as a primary.
    let replica = MoonServer::start_in(dir.path(), 2, &args).unwrap();
    let mut r = replica.client();
    assert_same(&dataset(&mut r), &expected);
    let len: i64 = cmd(&mut r, &["LLEN", "promoted"]);
    assert_eq!(len, 50);
}

#[test]
fn masterauth_legacy_sync_and_offsets_that_only_grow() {
    // A primary that wants a password; the replica gives it (masterauth).
    let dir = tempfile::tempdir().unwrap();
    let mut primary = MoonServer::start_in(dir.path(), 2, &["--requirepass", "s3cret"]).unwrap();
    let url = format!("redis://:s3cret@{}/", primary.addr);
    let mut p = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let target = format!("127.0.0.1 {}", primary.addr.port());
    let replica = MoonServer::start(2, &["--replicaof", &target, "--masterauth", "s3cret"]);
    let mut r = replica.client();
    wait_online(&mut p, &mut r);
    write_load(&mut p, "auth");
    converged(&mut p, &mut r);

    // The legacy SYNC (redis-cli --replica): the RDB, then the stream.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(primary.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"AUTH s3cret\r\nSYNC\r\n").unwrap();
        let mut got = Vec::new();
        read_until(&mut s, &mut got, b"REDIS0");
        assert!(
            got.starts_with(b"+OK\r\n$"),
            "{:?}",
            String::from_utf8_lossy(&got[..20])
        );
        let _: () = cmd(&mut p, &["SET", "through-sync", "yes"]);
        read_until(&mut s, &mut got, b"through-sync");
    }

    // The primary restarted cleanly: its stream's offsets go on from where they were, so
    // its replica's offset only grows.
    let before: u64 = info_field(&mut r, "replication", "slave_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(before > 0);
    let port = primary.addr.port().to_string();
    assert!(primary.terminate().success());
    let primary =
        MoonServer::start_in(dir.path(), 2, &["--requirepass", "s3cret", "--port", &port]).unwrap();
    let mut p = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        info_field(&mut p, "replication", "connected_slaves").as_deref() == Some("1")
    }));
    let _: () = cmd(&mut p, &["SET", "after-restart", "1"]);
    caught_up(&mut p);
    let after: u64 = info_field(&mut r, "replication", "slave_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(after > before, "{after} after {before}");
    assert_same(&dataset(&mut r), &dataset(&mut p));
    drop(primary);
}

#[test]
fn psync_in_a_pipeline_run_as_a_transaction_and_wait_at_shutdown_hold_nothing() {
    // Found by the network fuzzer: a PSYNC in a pipeline whose keys span shards (which Moon
    // runs as one transaction) waited for the locks its own transaction held, and every
    // cross-shard command after it hung; a WAIT 1 0 kept the server from shutting down.
    use std::io::Write;
    let mut moon = MoonServer::start(2, &[]);
    let k = keys_on_different_shards(2);
    let mut raw = std::net::TcpStream::connect(moon.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let pipeline = format!(
        "*5\r\n$4\r\nMSET\r\n${}\r\n{}\r\n$1\r\n1\r\n${}\r\n{}\r\n$1\r\n2\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n",
        k[0].len(),
        k[0],
        k[1].len(),
        k[1]
    );
    raw.write_all(pipeline.as_bytes()).unwrap();
    let mut got = Vec::new();
    // Refused inside the transaction, or served after it: either way nothing hangs.
    read_until(&mut raw, &mut got, b"\r\n");
    let mut c = moon.client();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _: () = cmd(&mut c, &["MSET", &k[0], "x", &k[1], "y"]);
    // A client waiting forever for a replica that never comes.
    let mut waiting = std::net::TcpStream::connect(moon.addr).unwrap();
    waiting.write_all(b"WAIT 1 0\r\n").unwrap();
    let _: String = cmd(&mut c, &["PING"]);
    let started = std::time::Instant::now();
    let status = moon.terminate();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// `aof_shardN:lsn=` of INFO persistence: the last LSN shard `shard`'s log handed out.
fn shard_lsn(c: &mut redis::Connection, shard: usize) -> u64 {
    info_field(c, "persistence", &format!("aof_shard{shard}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("lsn=").map(str::to_string))
        })
        .and_then(|n| n.parse().ok())
        .expect("aof_shardN:lsn in INFO persistence")
}

#[test]
fn a_restart_never_hands_out_again_an_lsn_the_saved_place_names() {
    let (primary, mut p, dir) = followed_then_stopped(1);
    let port = primary.addr.port();
    // The place names LSNs past a log's last record, as a cut (the dropped records' LSNs) or a
    // rewrite's reservation leaves it (docs/FORMATS.md's form, resealed).
    let path = dir.path().join("replication.moon");
    let text = std::fs::read_to_string(&path).unwrap();
    let body: String = text
        .lines()
        .take_while(|l| !l.starts_with("crc "))
        .map(|l| match l.strip_prefix("lsns ") {
            Some(lsns) => {
                let mut n: Vec<u64> = lsns.split(' ').map(|x| x.parse().unwrap()).collect();
                n[1] += 100;
                let n: Vec<String> = n.iter().map(u64::to_string).collect();
                format!("lsns {}\n", n.join(" "))
            }
            None => format!("{l}\n"),
        })
        .collect();
    let named: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("lsns "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    let crc = crc32fast::hash(body.as_bytes());
    std::fs::write(&path, format!("{body}crc {crc:08x}\n")).unwrap();
    let (_replica, mut r) = rejoin(dir.path(), port, 2, &mut p);
    // A record after the place must never take an LSN at or below what the place names for
    // its log: a later cut there would keep it, and PSYNC would apply it twice.
    assert!(
        shard_lsn(&mut r, 1) >= named,
        "shard 1 resumed at LSN {} below the saved {named}",
        shard_lsn(&mut r, 1)
    );
    write_load(&mut p, "two");
    converged(&mut p, &mut r);
}

#[test]
fn a_replica_stopped_while_client_pause_holds_the_primarys_write_applies_it_after_restart() {
    let primary = MoonServer::start(1, &[]);
    let mut p = primary.client();
    let port = primary.addr.port();
    let (dir, mut replica, mut r) = follower(&mut p, port, 2);
    let _: () = cmd(&mut p, &["RPUSH", "before", "1"]);
    caught_up(&mut p);
    // The primary's writes wait out a CLIENT PAUSE WRITE on the replica, as in Redis.
    let ok: String = cmd(&mut r, &["CLIENT", "PAUSE", "600000", "WRITE"]);
    assert_eq!(ok, "OK");
    let _: () = cmd(&mut p, &["RPUSH", "held", "1"]);
    let _: () = cmd(&mut p, &["RPUSH", "held", "2"]);
    let at = offset_of(&mut p, "master_repl_offset");
    // The replica read them (its link is at the primary's offset or stuck before it, never
    // past): stopped while the first waits.
    assert!(eventually(Duration::from_secs(10), || {
        info_field(&mut r, "clients", "paused_reason").is_some()
            || offset_of(&mut r, "slave_repl_offset") < at
    }));
    assert!(replica.terminate().success());
    let (_replica, mut r) = rejoin(dir.path(), port, 2, &mut p);
    caught_up(&mut p);
    let held: Vec<String> = cmd(&mut r, &["LRANGE", "held", "0", "-1"]);
    assert_eq!(held, ["1", "2"], "the writes the pause held were applied");
}

#[test]
fn writes_held_by_failover_get_readonly_once_the_server_is_a_replica() {
    let primary = MoonServer::start(2, &[]);
    let mut p = primary.client();
    let (_dir, replica, mut r) = follower(&mut p, primary.addr.port(), 2);
    // The replica cannot acknowledge the primary's next write for a while: FAILOVER waits.
    let ok: String = cmd(&mut r, &["CLIENT", "PAUSE", "1500", "WRITE"]);
    assert_eq!(ok, "OK");
    let _: () = cmd(&mut p, &["SET", "pending", "1"]);
    let rport = replica.addr.port().to_string();
    let ok: String = cmd(
        &mut p,
        &["FAILOVER", "TO", "127.0.0.1", &rport, "TIMEOUT", "20000"],
    );
    assert_eq!(ok, "OK");
    // Sent while FAILOVER pauses writes: held, then answered once this server is a replica.
    let mut c = primary.client();
    let held = redis::cmd("SET").arg("held").arg("1").query::<()>(&mut c);
    let err = held.expect_err("a write held by FAILOVER ran on the new replica");
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    assert!(eventually(Duration::from_secs(20), || {
        info_at(&replica.url(), "replication", "role").as_deref() == Some("master")
            && info_at(&primary.url(), "replication", "master_link_status").as_deref() == Some("up")
    }));
    let mut n = replica.client();
    let got: Option<String> = cmd(&mut n, &["GET", "held"]);
    assert_eq!(got, None);
    let _: () = cmd(&mut n, &["SET", "after", "1"]);
    caught_up(&mut n);
    let mut old = primary.client();
    assert_same(&dataset(&mut old), &dataset(&mut n));
}

#[test]
fn a_replica_that_cannot_save_its_place_acknowledges_nothing_past_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let target = format!("127.0.0.1 {port}");
    let dir = tempfile::tempdir().unwrap();
    let replica = MoonServer::start_in(dir.path(), 2, &["--replicaof", &target]).unwrap();
    // The place cannot be written (a directory is in its way).
    std::fs::create_dir(dir.path().join("replication.moon")).unwrap();
    let primary = MoonServer::start(1, &["--port", &port.to_string()]);
    let mut p = primary.client();
    let _: () = cmd(&mut p, &["SET", "k", "1"]);
    assert!(eventually(Duration::from_secs(20), || {
        replica.log_text().contains("the replication position")
    }));
    let acked: i64 = cmd(&mut p, &["WAIT", "1", "300"]);
    assert_eq!(acked, 0, "acknowledged without a saved place");
    // Once it can be written, the replica follows and acknowledges.
    std::fs::remove_dir(dir.path().join("replication.moon")).unwrap();
    caught_up(&mut p);
    let mut r = replica.client();
    assert_same(&dataset(&mut r), &dataset(&mut p));
}

/// What a client of a read-only replica gets for scripts of every kind: each reply as text,
/// an error up to Redis's `script:` trace (the two servers name their chunks differently).
fn script_replies(c: &mut redis::Connection) -> Vec<String> {
    let show = |r: redis::RedisResult<redis::Value>| match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => {
            let text = format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""));
            text.split(" script:")
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
    };
    let sha: String = cmd(c, &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"]);
    let calls: Vec<Vec<&str>> = vec![
        vec!["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"],
        vec!["EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "k"],
        vec![
            "EVAL",
            "local r = redis.pcall('SET', KEYS[1], 'x'); return r['err']",
            "1",
            "k",
        ],
        vec!["EVAL", "return redis.call('PUBLISH', 'ch', 'm')", "0"],
        vec![
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])",
            "1",
            "k",
        ],
        vec![
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], 'x')",
            "1",
            "k",
        ],
        vec!["EVAL", "#!lua\nreturn redis.call('GET', KEYS[1])", "1", "k"],
        vec!["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "k"],
        vec!["EVALSHA", &sha, "1", "k"],
        vec!["FCALL", "ro", "1", "k"],
        vec!["FCALL", "rw", "1", "k"],
        vec!["FCALL_RO", "ro", "1", "k"],
        vec!["GET", "k"],
    ];
    let mut replies: Vec<String> = calls
        .iter()
        .map(|words| {
            let mut c2 = redis::cmd(words[0]);
            for w in &words[1..] {
                c2.arg(*w);
            }
            format!("{}: {}", words[0], show(c2.query(c)))
        })
        .collect();
    // Inside MULTI/EXEC too.
    let tx = redis::pipe()
        .atomic()
        .cmd("EVAL")
        .arg("return redis.call('GET', KEYS[1])")
        .arg(1)
        .arg("k")
        .query(c);
    replies.push(format!("EXEC: {}", show(tx)));
    replies
}

const LIBRARY: &str = "#!lua name=replicalib\nredis.register_function{function_name='ro', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\nredis.register_function('rw', function(keys) return redis.call('SET', keys[1], 'x') end)";

#[test]
fn scripts_on_a_read_only_replica_answer_as_redis_replicas_do() {
    let primary = MoonServer::start(2, &[]);
    let mut p = primary.client();
    let (_dir, _replica, mut r) = follower(&mut p, primary.addr.port(), 2);
    let _: () = cmd(&mut p, &["SET", "k", "v"]);
    let _: String = cmd(&mut p, &["FUNCTION", "LOAD", LIBRARY]);
    caught_up(&mut p);
    let moon = script_replies(&mut r);
    // Reads run, a legacy script's write is refused inside it, a script that may write is
    // refused before it runs.
    assert!(moon[0].contains("\"v\""), "{moon:?}");
    assert!(moon[1].starts_with("EVAL: READONLY"), "{moon:?}");
    assert!(moon[6].starts_with("EVAL: READONLY"), "{moon:?}");
    assert!(moon[10].starts_with("FCALL: READONLY"), "{moon:?}");
    let test = "scripts_on_a_read_only_replica_answer_as_redis_replicas_do";
    let Some(rp) = RedisServer::start_with(test, &[]) else {
        return;
    };
    let port = rp.port.to_string();
    let Some(rr) = RedisServer::start_with(test, &["--replicaof", "127.0.0.1", &port]) else {
        return;
    };
    let mut rpc = rp.client();
    let mut rrc = rr.client();
    assert!(eventually(Duration::from_secs(20), || {
        info_field(&mut rrc, "replication", "master_link_status").as_deref() == Some("up")
    }));
    let _: () = cmd(&mut rpc, &["SET", "k", "v"]);
    let _: String = cmd(&mut rpc, &["FUNCTION", "LOAD", LIBRARY]);
    caught_up(&mut rpc);
    assert_eq!(moon, script_replies(&mut rrc));
    // `min-replicas-to-write` is a primary's setting: a replica's scripts run all the same.
    for c in [&mut r, &mut rrc] {
        let ok: String = cmd(c, &["CONFIG", "SET", "min-replicas-to-write", "1"]);
        assert_eq!(ok, "OK");
    }
    let moon = script_replies(&mut r);
    assert_eq!(moon, script_replies(&mut rrc));
    assert!(moon[0].contains("\"v\""), "{moon:?}");
}

#[test]
fn scripts_on_a_stale_replica_answer_as_a_redis_replica_does() {
    // Replicas of a primary that is not there, with replica-serve-stale-data no.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let target = format!("127.0.0.1 {dead}");
    let moon = MoonServer::start(
        2,
        &["--replicaof", &target, "--replica-serve-stale-data", "no"],
    );
    let probes: [(&str, &str); 9] = [
        ("EVAL", "return redis.call('GET', 'k')"),
        ("EVAL", "return redis.call('PING')"),
        ("EVAL", "return 1"),
        ("EVAL", "#!lua flags=no-writes\nreturn 1"),
        (
            "EVAL",
            "#!lua flags=no-writes,allow-stale\nreturn redis.call('GET', 'k')",
        ),
        (
            "EVAL",
            "#!lua flags=no-writes,allow-stale\nreturn redis.call('PING')",
        ),
        ("EVAL", "#!lua flags=no-writes,allow-stale\nreturn 1"),
        ("EVAL_RO", "return redis.call('GET', 'k')"),
        ("EVAL", "return redis.call('SET', 'k', 'v')"),
    ];
    let replies = |c: &mut redis::Connection| -> Vec<String> {
        probes
            .iter()
            .map(|(name, body)| {
                let r: redis::RedisResult<redis::Value> =
                    redis::cmd(name).arg(*body).arg(0).query(c);
                match r {
                    Ok(v) => format!("{v:?}"),
                    Err(e) => {
                        let text =
                            format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""));
                        text.split(" script:")
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_string()
                    }
                }
            })
            .collect()
    };
    let got = replies(&mut moon.client());
    assert!(got[0].starts_with("MASTERDOWN"), "{got:?}");
    assert!(got[4].contains("stale replica"), "{got:?}");
    assert_eq!(got[6], "int(1)", "{got:?}");
    let test = "scripts_on_a_stale_replica_answer_as_a_redis_replica_does";
    // (Set once started: a stale Redis answers its start-up PING with MASTERDOWN.)
    let Some(redis) = RedisServer::start_with(test, &["--replicaof", "127.0.0.1", &dead]) else {
        return;
    };
    let mut c = redis.client();
    let ok: String = cmd(&mut c, &["CONFIG", "SET", "replica-serve-stale-data", "no"]);
    assert_eq!(ok, "OK");
    assert_eq!(got, replies(&mut c));
}
