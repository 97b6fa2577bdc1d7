//! Test harness: starts the real `moon-server` binary on an ephemeral port in a temp dir and
//! hands out real clients (the `redis` crate).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_moon-server");

pub struct MoonServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Keeps the temp dir alive for servers that own it.
    _tmp: Option<tempfile::TempDir>,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl MoonServer {
    /// Starts a server with `shards` shards in a fresh temp dir.
    pub fn start(shards: usize, extra: &[&str]) -> MoonServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, shards, extra).expect("server starts");
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `dir` (which may hold data from an earlier run). Returns the logs
    /// as the error if it exits before it is ready.
    pub fn start_in(dir: &Path, shards: usize, extra: &[&str]) -> Result<MoonServer, String> {
        Self::start_with_env(dir, shards, extra, &[])
    }

    /// [`MoonServer::start_in`] with extra environment variables (e.g. `MOON_AOF_FAULT`).
    pub fn start_with_env(
        dir: &Path,
        shards: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<MoonServer, String> {
        let mut cmd = server_command(dir, shards, extra);
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, tx) in [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                Some(tx.clone()),
            ),
            (Box::new(stderr), None),
        ] {
            let logs = logs.clone();
            let done_tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(pos)) =
                        (&tx, line.find("Ready to accept connections on "))
                    {
                        let addr = line[pos + "Ready to accept connections on ".len()..]
                            .trim()
                            .to_string();
                        let _ = tx.send(Some(addr));
                    }
                    logs.lock().unwrap().push(line);
                }
                if let Some(tx) = done_tx {
                    let _ = tx.send(None); // stdout closed: the process is gone
                }
            });
        }
        drop(tx);
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(addr)) => Ok(MoonServer {
                child: Some(child),
                addr: addr.parse().map_err(|e| format!("{addr}: {e}"))?,
                dir: dir.to_path_buf(),
                _tmp: None,
                logs,
            }),
            _ => {
                let _ = child.kill();
                let status = child.wait().ok();
                // Let the reader threads finish collecting what the process printed.
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && Arc::strong_count(&logs) > 1 {
                    std::thread::yield_now();
                }
                Err(format!(
                    "server did not become ready (status {status:?}); logs:\n{}",
                    logs.lock().unwrap().join("\n")
                ))
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().expect("wait")
    }

    /// Waits for the process to exit by itself (e.g. after SHUTDOWN).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for MoonServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server's command line for tests: an ephemeral port (unless `extra` names one), no CPU
/// pinning (many servers share a small machine), output captured.
fn server_command(dir: &Path, shards: usize, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    if !extra.contains(&"--port") {
        cmd.args(["--port", "0"]);
    }
    cmd.args(["--pin-cpus", "no", "--shards", &shards.to_string()])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the server on `dir` expecting it to refuse to start: returns its exit code and
/// everything it printed. Panics if it is still running after 60 s.
pub fn run_expecting_exit(dir: &Path, shards: usize, extra: &[&str]) -> (i32, String) {
    let mut child = server_command(dir, shards, extra).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A server error as Redis prints it: `CODE detail`.
pub fn err_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(c), Some(d)) => format!("{c} {d}"),
        (Some(c), None) => c.to_string(),
        _ => e.to_string(),
    }
}

/// Runs a command given as words and returns its reply as `T` (panics, naming the command,
/// if it fails).
pub fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, words: &[&str]) -> T {
    redis::cmd(words[0])
        .arg(&words[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// Runs a command given as words and returns the error text it fails with.
pub fn expect_err(con: &mut redis::Connection, words: &[&str]) -> String {
    let mut c = redis::cmd(words[0]);
    for w in &words[1..] {
        c.arg(*w);
    }
    match c.query::<redis::Value>(con) {
        Ok(v) => panic!("{words:?} succeeded with {v:?}"),
        Err(e) => err_text(&e),
    }
}

/// Polls `cond` until it holds or `timeout` passes. For states the server reaches by itself
/// (active expiry), where there is nothing to wait on but the state.
/// BGREWRITEAOF (Redis's reply checked), then waits until INFO persistence counts `done`
/// rewrites finished.
pub fn rewrite_and_wait(con: &mut redis::Connection, done: u64) {
    let started: String = redis::cmd("BGREWRITEAOF").query(con).expect("BGREWRITEAOF");
    assert_eq!(started, "Background append only file rewriting started");
    let want = format!("aof_rewrites:{done}");
    assert!(
        eventually(Duration::from_secs(30), || {
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query(con)
                .unwrap_or_default();
            info.contains(&want)
        }),
        "the rewrite finished"
    );
}

pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Two keys owned by different shards (with 2 shards): "a" and the first "k<i>" on the other.
pub fn keys_on_different_shards(n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut shards_seen = Vec::new();
    for i in 0.. {
        let k = format!("key:{i}");
        let s = slot_shard(k.as_bytes(), n);
        if !shards_seen.contains(&s) {
            shards_seen.push(s);
            out.push(k);
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// The same function as SPEC §1, written independently here so the test does not trust the
/// server's implementation.
pub fn slot_shard(key: &[u8], shards: usize) -> usize {
    let mut k = key;
    if let Some(o) = key.iter().position(|&b| b == b'{') {
        if let Some(l) = key[o + 1..].iter().position(|&b| b == b'}') {
            if l > 0 {
                k = &key[o + 1..o + 1 + l];
            }
        }
    }
    let mut crc: u16 = 0;
    for &b in k {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    (crc % 16384) as usize % shards
}

/// How many clients are blocked now, as CLIENT LIST shows them (`flags=b`).
#[allow(dead_code)]
pub fn blocked(con: &mut redis::Connection) -> usize {
    let list: String = cmd(con, &["CLIENT", "LIST"]);
    list.lines().filter(|l| l.contains(" flags=b ")).count()
}

/// Waits until `n` clients are blocked (the state the server reports, never a sleep).
#[allow(dead_code)]
pub fn wait_blocked(con: &mut redis::Connection, n: usize) {
    assert!(
        eventually(Duration::from_secs(10), || blocked(con) == n),
        "{n} clients blocked"
    );
}

/// A real `redis-server` (Debian's package) on an ephemeral port in a temp dir, for tests that
/// check compatibility both ways; `None`, with a message saying the check is skipped, when it
/// is not installed (`.ci/run` installs it).
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start(test: &str) -> Option<RedisServer> {
        Self::start_with(test, &[])
    }

    /// [`RedisServer::start`] with more arguments (`--replicaof host port`...).
    pub fn start_with(test: &str, extra: &[&str]) -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!(
                "{test}: redis-server is not installed: the check against real Redis is skipped"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let s = RedisServer { child, port, dir };
        let ready = eventually(Duration::from_secs(10), || {
            redis::Client::open(s.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        assert!(ready, "redis-server answers PING");
        Some(s)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key's whole content as text, through the protocol only (TYPE, then the type's full
/// read, sorted where order is not part of the value; PEXPIRETIME), so that two servers can be
/// compared key by key. Stream pending entries are shown without their idle times.
pub fn key_content(c: &mut redis::Connection, key: &str) -> String {
    use redis::Value;
    let t: String = cmd(c, &["TYPE", key]);
    let body: String = match t.as_str() {
        "string" => format!("{:?}", cmd::<Vec<u8>>(c, &["GET", key])),
        "list" => format!("{:?}", cmd::<Vec<Vec<u8>>>(c, &["LRANGE", key, "0", "-1"])),
        "set" => {
            let mut m: Vec<Vec<u8>> = cmd(c, &["SMEMBERS", key]);
            m.sort();
            format!("{m:?}")
        }
        "zset" => format!(
            "{:?}",
            cmd::<Vec<Vec<u8>>>(c, &["ZRANGE", key, "0", "-1", "WITHSCORES"])
        ),
        "hash" => {
            let mut m: Vec<(Vec<u8>, Vec<u8>)> = cmd(c, &["HGETALL", key]);
            m.sort();
            format!("{m:?}")
        }
        "stream" => {
            let entries: Value = cmd(c, &["XRANGE", key, "-", "+"]);
            // Without the radix tree's shape, which is how each server lays nodes out.
            let info: Vec<Value> = match cmd(c, &["XINFO", "STREAM", key]) {
                Value::Array(fields) => fields
                    .chunks(2)
                    .filter(
                        |p| !matches!(&p[0], Value::BulkString(k) if k.starts_with(b"radix-tree")),
                    )
                    .flatten()
                    .cloned()
                    .collect(),
                other => vec![other],
            };
            let groups: Value = cmd(c, &["XINFO", "GROUPS", key]);
            let mut pending = Vec::new();
            if let Value::Array(gs) = &groups {
                for g in gs {
                    let Value::Array(fields) = g else { continue };
                    let name = fields
                        .chunks(2)
                        .find(|p| p[0] == Value::BulkString(b"name".to_vec()))
                        .and_then(|p| match &p[1] {
                            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    let p: Vec<(String, String, i64, i64)> =
                        cmd(c, &["XPENDING", key, &name, "-", "+", "1000"]);
                    pending.push(
                        p.into_iter()
                            .map(|(id, consumer, _idle, n)| (id, consumer, n))
                            .collect::<Vec<_>>(),
                    );
                }
            }
            format!("{entries:?} {info:?} {groups:?} {pending:?}")
        }
        other => other.to_string(),
    };
    let at: i64 = cmd(c, &["PEXPIRETIME", key]);
    format!("{t} {body} at {at}")
}
