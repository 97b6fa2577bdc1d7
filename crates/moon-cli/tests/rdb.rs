//! `import-rdb`, `migrate-aof --from-redis` with an RDB base, and `export-rdb`, on the RDB that
//! Debian's redis-server 7.0.15 wrote (crates/moon-rdb/tests/fixtures/make.sh): every type,
//! TTLs, three databases, a function library. Moon's side is read through its command
//! execution (the directory replayed as the server recovers it), Redis's through the protocol
//! from a real redis-server (skipped, saying so, when it is not installed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

const BIN: &str = env!("CARGO_BIN_EXE_moon-cli");
/// The clock the queries run at: deadlines in the fixture are in 2100.
const NOW: u64 = 1_800_000_000_000;
const DBS: [usize; 3] = [0, 1, 5];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../moon-rdb/tests/fixtures")
        .join(name)
}

/// `moon-cli import-rdb FILE --dir DIR --shards N [extra...]`.
fn import_rdb(file: &Path, dir: &Path, shards: usize, extra: &[&str]) -> (bool, String) {
    let shards = shards.to_string();
    let mut args = vec![
        "import-rdb",
        path(file),
        "--dir",
        path(dir),
        "--shards",
        &shards,
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("moon-cli runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The directory replayed into one store, as recovery does (every shard's base and incr).
fn replay(dir: &Path) -> moon_store::Store {
    let Some(moon_manifest::Manifest::V2(m)) = moon_manifest::peek(dir).expect("manifest") else {
        panic!("not a v2 directory")
    };
    let mut store = moon_store::Store::default();
    for i in 0..m.shards() {
        let files = moon_shard::recovery::ShardFiles::of(dir, &m, i);
        moon_shard::recovery::replay_shard(&mut store, &files, &Default::default(), None, false)
            .expect("replays");
    }
    store
}

/// A reply as a client sees it (RESP2 bytes, parsed by the `redis` crate).
fn moon_query(store: &mut moon_store::Store, db: usize, words: &[&str]) -> Value {
    let args: Vec<bytes::Bytes> = words
        .iter()
        .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    let frame = store
        .in_db(db, |s| s.execute(&args, NOW))
        .expect("a database Moon holds");
    let mut out = bytes::BytesMut::new();
    frame.encode(moon_proto::Protocol::Resp2, &mut out);
    redis::parse_redis_value(&out).expect("a RESP reply")
}

fn redis_query(con: &mut redis::Connection, db: usize, words: &[&str]) -> Value {
    redis::cmd("SELECT").arg(db).exec(con).expect("SELECT");
    let mut c = redis::cmd(words[0]);
    for w in &words[1..] {
        c.arg(*w);
    }
    c.query(con).expect("a reply")
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Nil => Vec::new(),
        other => vec![other],
    }
}

/// Every key of `db` with its whole content (sorted where order is not part of the value;
/// stream pending entries without idle times; the radix tree's shape left out).
fn contents(q: &mut dyn FnMut(usize, &[&str]) -> Value, db: usize) -> Vec<String> {
    let mut keys: Vec<String> = items(q(db, &["KEYS", "*"])).iter().map(text).collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let k = key.as_str();
        let t = text(&q(db, &["TYPE", k]));
        let body = match t.as_str() {
            "string" => text(&q(db, &["GET", k])),
            "list" => format!("{:?}", q(db, &["LRANGE", k, "0", "-1"])),
            "set" => {
                let mut m: Vec<String> = items(q(db, &["SMEMBERS", k])).iter().map(text).collect();
                m.sort();
                format!("{m:?}")
            }
            "zset" => format!("{:?}", q(db, &["ZRANGE", k, "0", "-1", "WITHSCORES"])),
            "hash" => {
                let flat: Vec<String> = items(q(db, &["HGETALL", k])).iter().map(text).collect();
                let mut pairs: Vec<_> = flat.chunks(2).map(|p| p.to_vec()).collect();
                pairs.sort();
                format!("{pairs:?}")
            }
            "stream" => {
                let info: Vec<Value> = items(q(db, &["XINFO", "STREAM", k]))
                    .chunks(2)
                    .filter(|p| !text(&p[0]).starts_with("radix-tree"))
                    .flatten()
                    .cloned()
                    .collect();
                let groups = items(q(db, &["XINFO", "GROUPS", k]));
                let mut pending = Vec::new();
                for g in &groups {
                    let fields = items(g.clone());
                    let name = fields
                        .chunks(2)
                        .find(|p| text(&p[0]) == "name")
                        .map(|p| text(&p[1]))
                        .unwrap_or_default();
                    for p in items(q(db, &["XPENDING", k, &name, "-", "+", "1000"])) {
                        let p = items(p);
                        pending.push(format!(
                            "{name} {} {} {}",
                            text(&p[0]),
                            text(&p[1]),
                            text(&p[3])
                        ));
                    }
                    let consumers: Vec<String> = items(q(db, &["XINFO", "CONSUMERS", k, &name]))
                        .into_iter()
                        .map(|c| {
                            let f = items(c);
                            format!("{} {}", text(&f[1]), text(&f[3]))
                        })
                        .collect();
                    pending.push(format!("{name} consumers {consumers:?}"));
                }
                format!(
                    "{:?} {info:?} {groups:?} {pending:?}",
                    q(db, &["XRANGE", k, "-", "+"])
                )
            }
            other => other.to_string(),
        };
        let at = text(&q(db, &["PEXPIRETIME", k]));
        out.push(format!("{db} {k} {t} {body} at {at}"));
    }
    out
}

fn moon_contents(dir: &Path) -> Vec<String> {
    let mut store = replay(dir);
    let mut q = |db: usize, w: &[&str]| moon_query(&mut store, db, w);
    DBS.iter().flat_map(|&db| contents(&mut q, db)).collect()
}

/// A server process (redis-server or moon-server) on an ephemeral port, compared through the
/// protocol; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Server {
    /// Runs `cmd` (already told its port) and waits until it answers PING: both servers
    /// answer LOADING until their data is in.
    fn run(mut cmd: Command, port: u16, dir: Option<tempfile::TempDir>, what: &str) -> Server {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let s = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.connect().is_none() {
            assert!(
                Instant::now() < deadline,
                "{what} loads its data and answers"
            );
            std::thread::yield_now();
        }
        s
    }

    /// Debian's redis-server loading `rdb` at start; `None`, saying so, when not installed.
    fn redis_loading(rdb: &Path, test: &str) -> Option<Server> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!(
                "{test}: redis-server is not installed: the comparison with Redis is skipped"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(rdb, dir.path().join("dump.rdb")).expect("copy the RDB");
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dbfilename", "dump.rdb", "--dir"])
        .arg(dir.path());
        Some(Server::run(cmd, port, Some(dir), "redis-server"))
    }

    /// The real `moon-server` on `dir` with `shards` shards, when `cargo test --workspace` built
    /// it beside moon-cli (its own tests need it); `None`, saying so, when it was not built.
    fn moon_on(dir: &Path, shards: usize, test: &str) -> Option<Server> {
        let bin = Path::new(BIN).with_file_name("moon-server");
        if !bin.exists() {
            eprintln!("{test}: {} is not built (cargo test --workspace builds it): the protocol comparison is skipped", bin.display());
            return None;
        }
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--shards",
            &shards.to_string(),
            "--dir",
        ])
        .arg(dir);
        Some(Server::run(cmd, port, None, "moon-server"))
    }

    fn connect(&self) -> Option<redis::Connection> {
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        Some(con)
    }

    fn contents(&self) -> Vec<String> {
        let mut con = self.connect().expect("connects");
        let mut q = |db: usize, w: &[&str]| redis_query(&mut con, db, w);
        DBS.iter().flat_map(|&db| contents(&mut q, db)).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_redis_dump_imports_at_1_and_4_shards_and_exports_back_identical() {
    let rdb = fixture("every.rdb");
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut imported = Vec::new();
    for shards in [1, 4] {
        let dir = tmp.path().join(format!("moon{shards}"));
        let (ok, out) = import_rdb(&rdb, &dir, shards, &[]);
        assert!(ok, "{out}");
        assert!(out.contains("24 keys"), "{out}");
        assert!(
            dir.join("functions.moon").exists(),
            "the library is imported"
        );
        imported.push(moon_contents(&dir));
    }
    assert_eq!(imported[0], imported[1], "1 and 4 shards hold the same");
    let moon = &imported[0];
    assert_eq!(moon.len(), 24);
    // Without Redis: what the fixture is known to hold.
    let find = |key: &str| {
        moon.iter()
            .find(|l| l.split(' ').nth(1) == Some(key))
            .cloned()
    };
    assert_eq!(
        find("s:lzf").expect("s:lzf"),
        format!("0 s:lzf string {} at -1", "abcdefghij".repeat(40))
    );
    assert!(find("s:ttl").expect("s:ttl").ends_with("at 4102444800000"));
    assert!(find("db1:list")
        .expect("db1:list")
        .starts_with("1 db1:list list"));
    assert!(find("db5:h").expect("db5:h").starts_with("5 db5:h hash"));
    let st = find("st").expect("st");
    assert!(
        st.contains("g1 1-2 alice 1") && st.contains("g1 3-0 bob 1"),
        "{st}"
    );
    if let Some(redis) = Server::redis_loading(&rdb, "import") {
        assert_eq!(
            *moon,
            redis.contents(),
            "Moon's import against Redis loading the same file"
        );
    }

    // Back out: the export loads into Redis with the same contents, and imports again the same.
    let out_rdb = tmp.path().join("export.rdb");
    let (ok, out) = cli(&[
        "export-rdb",
        "--dir",
        path(&tmp.path().join("moon4")),
        "--out",
        path(&out_rdb),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("RDB version 10, 24 keys in 3 databases, 1 libraries"),
        "{out}"
    );
    let again = tmp.path().join("again");
    let (ok, out) = import_rdb(&out_rdb, &again, 2, &[]);
    assert!(ok, "{out}");
    assert_eq!(moon_contents(&again), *moon);
    if let Some(redis) = Server::redis_loading(&out_rdb, "export") {
        assert_eq!(redis.contents(), *moon, "Redis 7.0 loading Moon's export");
        let mut con = redis.connect().expect("connects");
        let libs: Value = redis::cmd("FUNCTION")
            .arg("LIST")
            .query(&mut con)
            .expect("FUNCTION LIST");
        assert!(format!("{libs:?}").contains("fixturelib"), "{libs:?}");
    }
}

#[test]
fn an_rdb_preamble_aof_directory_imports_with_its_incr() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("moon");
    let (ok, out) = cli(&[
        "migrate-aof",
        "--from-redis",
        path(&fixture("every-aof")),
        "--dir",
        path(&dir),
        "--shards",
        "2",
    ]);
    assert!(ok, "{out}");
    let moon = moon_contents(&dir);
    assert_eq!(moon.len(), 25, "the base's 24 keys and the incr's SET");
    assert!(moon.iter().any(|l| l == "0 after:rewrite string yes at -1"));
    let direct = tmp.path().join("direct");
    let (ok, out) = import_rdb(&fixture("every.rdb"), &direct, 3, &[]);
    assert!(ok, "{out}");
    let base_only: Vec<String> = moon
        .into_iter()
        .filter(|l| !l.contains("after:rewrite"))
        .collect();
    assert_eq!(base_only, moon_contents(&direct));
}

/// A key holding module data (RedisJSON's `ReJSON-RL` type id), written by hand after the
/// fixture's last key (in its last database, 5): the import stops naming it, or leaves it out with --skip-unsupported.
fn with_module_key(tmp: &Path) -> PathBuf {
    let data = std::fs::read(fixture("every.rdb")).expect("fixture");
    // Up to the EOF opcode: the last 9 bytes are EOF and the CRC64.
    let mut out = data[..data.len() - 9].to_vec();
    out.push(7); // RDB_TYPE_MODULE_2
    out.extend_from_slice(&[3, b'd', b'o', b'c']);
    // The module id: "ReJSON-RL" in 6-bit characters, then encoding version 3.
    let chars = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id: u64 = 0;
    for c in b"ReJSON-RL" {
        id = id << 6 | chars.iter().position(|x| x == c).expect("charset") as u64;
    }
    id = id << 10 | 3;
    out.push(0x81);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[5, 2, b'{', b'}', 0]); // a string opcode, then EOF
    out.push(255);
    let crc = moon_rdb::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    let path = tmp.join("module.rdb");
    std::fs::write(&path, out).expect("write");
    path
}

#[test]
fn a_module_value_stops_the_import_unless_skipped() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let rdb = with_module_key(tmp.path());
    let dir = tmp.path().join("moon");
    let (ok, out) = import_rdb(&rdb, &dir, 1, &[]);
    assert!(!ok);
    assert!(
        out.contains("key \"doc\" in database 5 holds module type ReJSON-RL"),
        "{out}"
    );
    assert!(out.contains("--skip-unsupported"), "{out}");
    assert!(
        !moon_manifest::manifest_path(&dir).exists(),
        "nothing was committed"
    );
    let dir = tmp.path().join("skipping");
    let (ok, out) = import_rdb(&rdb, &dir, 1, &["--skip-unsupported"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("skipped key \"doc\" in database 5: module type ReJSON-RL"),
        "{out}"
    );
    assert_eq!(moon_contents(&dir).len(), 24);
}

#[test]
fn a_damaged_rdb_is_refused_with_its_offset_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = std::fs::read(fixture("every.rdb")).expect("fixture");
    let cut = tmp.path().join("cut.rdb");
    std::fs::write(&cut, &data[..data.len() / 2]).expect("write");
    let dir = tmp.path().join("moon");
    let (ok, out) = import_rdb(&cut, &dir, 1, &[]);
    assert!(!ok);
    assert!(out.contains("offset"), "{out}");
    assert!(!moon_manifest::manifest_path(&dir).exists());
    let mut flipped = data.clone();
    let n = flipped.len();
    flipped[n - 3] ^= 1; // inside the checksum
    let bad = tmp.path().join("bad.rdb");
    std::fs::write(&bad, &flipped).expect("write");
    let (ok, out) = import_rdb(&bad, &dir, 1, &[]);
    assert!(!ok);
    assert!(out.contains("checksum mismatch"), "{out}");
}

/// A Redis 7 AOF directory whose RDB base is `base` and whose incr holds `incr` (RESP).
fn redis_aof_dir(tmp: &Path, base: Vec<u8>, incr: &[u8]) -> PathBuf {
    let dir = tmp.join("redis-aof");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("appendonly.aof.1.base.rdb"), base).expect("base");
    std::fs::write(dir.join("appendonly.aof.1.incr.aof"), incr).expect("incr");
    std::fs::write(
        dir.join("appendonly.aof.manifest"),
        "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
    )
    .expect("manifest");
    dir
}

fn rdb_of(keys: &[(&str, Option<u64>)], functions: &[&str]) -> Vec<u8> {
    let mut w = moon_rdb::FileWriter::new(Vec::new(), moon_rdb::REDIS_7_0);
    for f in functions {
        w.function(f.as_bytes()).expect("function");
    }
    w.select_db(0, keys.len() as u64, 0).expect("select");
    for (k, at) in keys {
        let v = moon_rdb::Object::String(bytes::Bytes::from_static(b"v"));
        w.key(k.as_bytes(), &v, *at).expect("key");
    }
    w.finish().expect("finish")
}

#[test]
fn a_preamble_key_past_its_deadline_is_kept_for_the_incr_that_persists_it() {
    // In the base, `old` expired in 2001; the incr (run before that, as Redis logged it)
    // PERSISTs it. Redis keeps such keys when it loads an AOF's base: so must the import.
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = rdb_of(
        &[
            ("old", Some(1_000_000_000_000)),
            ("gone", Some(1_000_000_000_000)),
        ],
        &[],
    );
    let incr = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*2\r\n$7\r\nPERSIST\r\n$3\r\nold\r\n";
    let redis = redis_aof_dir(tmp.path(), base, incr);
    let dir = tmp.path().join("moon");
    let (ok, out) = cli(&[
        "migrate-aof",
        "--from-redis",
        path(&redis),
        "--dir",
        path(&dir),
        "--shards",
        "1",
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        moon_contents(&dir),
        ["0 old string v at -1"],
        "`gone` stays expired"
    );
}

#[test]
fn a_key_twice_and_a_library_moon_cannot_load_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let twice = tmp.path().join("twice.rdb");
    std::fs::write(&twice, rdb_of(&[("k", None), ("k", None)], &[])).expect("write");
    let dir = tmp.path().join("a");
    let (ok, out) = import_rdb(&twice, &dir, 1, &[]);
    assert!(!ok);
    assert!(
        out.contains("key \"k\" appears twice in database 0"),
        "{out}"
    );
    assert!(!moon_manifest::manifest_path(&dir).exists());

    let broken = tmp.path().join("broken.rdb");
    std::fs::write(
        &broken,
        rdb_of(&[("k", None)], &["#!lua name=bad\nthis is not lua"]),
    )
    .expect("write");
    let dir = tmp.path().join("b");
    let (ok, out) = import_rdb(&broken, &dir, 1, &[]);
    assert!(!ok);
    assert!(
        out.contains("a function library does not load in Moon"),
        "{out}"
    );
    assert!(!moon_manifest::manifest_path(&dir).exists());
    assert!(!dir.join("functions.moon").exists());

    // A deadline past i64::MAX is long passed to Redis: left out, not kept forever.
    let far = tmp.path().join("far.rdb");
    std::fs::write(&far, rdb_of(&[("k", Some(u64::MAX)), ("j", None)], &[])).expect("write");
    let dir = tmp.path().join("c");
    let (ok, out) = import_rdb(&far, &dir, 1, &[]);
    assert!(ok, "{out}");
    assert_eq!(moon_contents(&dir), ["0 j string v at -1"]);
}

#[test]
fn the_server_on_an_imported_directory_answers_as_redis_on_the_same_file() {
    let rdb = fixture("every.rdb");
    let tmp = tempfile::tempdir().expect("temp dir");
    let test = "the_server_on_an_imported_directory_answers_as_redis_on_the_same_file";
    let redis = Server::redis_loading(&rdb, test);
    for shards in [1usize, 4] {
        let dir = tmp.path().join(format!("moon{shards}"));
        let (ok, out) = import_rdb(&rdb, &dir, shards, &[]);
        assert!(ok, "{out}");
        let Some(moon) = Server::moon_on(&dir, shards, test) else {
            return;
        };
        let through_protocol = moon.contents();
        assert_eq!(
            through_protocol,
            moon_contents(&dir),
            "{shards} shards: server and replay agree"
        );
        if let Some(redis) = &redis {
            assert_eq!(
                through_protocol,
                redis.contents(),
                "{shards} shards against Redis"
            );
        }
        let mut con = moon.connect().expect("connects");
        let got: String = redis::cmd("FCALL")
            .arg("fixture_echo")
            .arg(0)
            .arg("hi")
            .query(&mut con)
            .expect("the imported library is loaded");
        assert_eq!(got, "hi");
    }
}
