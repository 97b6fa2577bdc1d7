//! `cargo xtask bench --only-rdb [--rdb-keys N]`: Redis data in and out, beside redis-server.
//!
//! redis-server builds a mixed dataset (strings, hashes, lists, sorted sets, sets; a tenth of
//! the keys with a TTL) and SAVEs it. Then, on the same file: redis-server loading it at
//! startup (its log's "DB loaded from disk" time), `moon-cli import-rdb` into 2 shards (the
//! whole process, files fsynced), `moon-cli export-rdb` of that directory, and redis-server
//! loading Moon's export — whose key count and a sample of values must match the original.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// redis-server in `dir` (loading `dir/dump.rdb` if there is one); waits for PONG.
fn redis_in(dir: &Path) -> anyhow::Result<(Redis, Duration)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--dbfilename",
            "dump.rdb",
            "--logfile",
            "redis.log",
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let r = Redis { child, port };
    let addr = format!("127.0.0.1:{port}").parse()?;
    crate::targets::wait_pong(addr, Duration::from_secs(600))?;
    Ok((r, started.elapsed()))
}

fn con(r: &Redis) -> anyhow::Result<redis::Connection> {
    Ok(redis::Client::open(format!("redis://127.0.0.1:{}/", r.port))?.get_connection()?)
}

/// redis-server's own load time from its log ("DB loaded from disk: 0.123 seconds").
fn logged_load_secs(dir: &Path) -> Option<f64> {
    let log = std::fs::read_to_string(dir.join("redis.log")).ok()?;
    let line = log.lines().find(|l| l.contains("DB loaded from disk"))?;
    line.split("DB loaded from disk:")
        .nth(1)?
        .trim()
        .trim_end_matches("seconds")
        .trim()
        .parse()
        .ok()
}

pub(crate) fn fill(c: &mut redis::Connection, keys: u64) -> anyhow::Result<()> {
    let mut p = redis::pipe();
    for i in 0..keys {
        let k = format!("key:{i:010}");
        match i % 10 {
            0..=5 => {
                p.cmd("SET")
                    .arg(&k)
                    .arg(format!("value-{i}-{}", "x".repeat((i % 40) as usize)));
            }
            6 => {
                p.cmd("HSET")
                    .arg(&k)
                    .arg("name")
                    .arg("moon")
                    .arg("n")
                    .arg(i)
                    .arg("f3")
                    .arg("v3");
            }
            7 => {
                p.cmd("RPUSH")
                    .arg(&k)
                    .arg((0..10).map(|j| format!("e{j}")).collect::<Vec<_>>());
            }
            8 => {
                let z = p.cmd("ZADD");
                z.arg(&k);
                for j in 0..10 {
                    z.arg(j * 3).arg(format!("m{j}"));
                }
            }
            _ => {
                p.cmd("SADD").arg(&k).arg((0..10).collect::<Vec<_>>());
            }
        }
        if i % 10 == 3 {
            p.cmd("PEXPIREAT").arg(&k).arg(4_102_444_800_000u64);
        }
        if i % 2000 == 1999 {
            p.query::<()>(c)?;
            p = redis::pipe();
        }
    }
    if !keys.is_multiple_of(2000) {
        p.query::<()>(c)?;
    }
    Ok(())
}

fn sample(c: &mut redis::Connection, keys: u64) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for i in (0..keys).step_by((keys / 50).max(1) as usize) {
        let k = format!("key:{i:010}");
        let t: String = redis::cmd("TYPE").arg(&k).query(c)?;
        let v: redis::Value = match t.as_str() {
            "string" => redis::cmd("GET").arg(&k).query(c)?,
            "hash" => redis::cmd("HGETALL").arg(&k).query(c)?,
            "list" => redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(c)?,
            "zset" => redis::cmd("ZRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)?,
            _ => redis::cmd("SCARD").arg(&k).query(c)?,
        };
        let at: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(c)?;
        out.push(format!("{k} {t} {v:?} {at}"));
    }
    Ok(out)
}

fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed())
}

pub fn rdb_section(report: &mut String, cli: &Path, work: &Path, keys: u64) -> anyhow::Result<()> {
    let src = work.join("rdb-source");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    let (redis, _) = redis_in(&src)?;
    let mut c = con(&redis)?;
    fill(&mut c, keys)?;
    let expected = sample(&mut c, keys)?;
    let _: () = redis::cmd("SAVE").query(&mut c)?;
    drop(redis);
    let rdb = src.join("dump.rdb");
    let mb = std::fs::metadata(&rdb)?.len() as f64 / 1e6;

    // redis-server loading the file.
    let load = work.join("rdb-redis-load");
    let _ = std::fs::remove_dir_all(&load);
    std::fs::create_dir_all(&load)?;
    std::fs::copy(&rdb, load.join("dump.rdb"))?;
    let (redis, to_pong) = redis_in(&load)?;
    let redis_secs = logged_load_secs(&load).unwrap_or(to_pong.as_secs_f64());
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut con(&redis)?)?;
    drop(redis);

    // moon-cli import-rdb, 2 shards.
    let moon = work.join("rdb-moon");
    let _ = std::fs::remove_dir_all(&moon);
    let import = timed(
        Command::new(cli)
            .arg("import-rdb")
            .arg(&rdb)
            .arg("--dir")
            .arg(&moon)
            .args(["--shards", "2"]),
    )?;
    // moon-cli export-rdb, then redis-server loading Moon's export.
    let back = work.join("rdb-back");
    let _ = std::fs::remove_dir_all(&back);
    std::fs::create_dir_all(&back)?;
    let export = timed(
        Command::new(cli)
            .arg("export-rdb")
            .arg("--dir")
            .arg(&moon)
            .arg("--out")
            .arg(back.join("dump.rdb")),
    )?;
    let back_mb = std::fs::metadata(back.join("dump.rdb"))?.len() as f64 / 1e6;
    let (redis, to_pong) = redis_in(&back)?;
    let back_secs = logged_load_secs(&back).unwrap_or(to_pong.as_secs_f64());
    let mut c = con(&redis)?;
    let back_size: u64 = redis::cmd("DBSIZE").query(&mut c)?;
    let back_sample = sample(&mut c, keys)?;
    drop(redis);
    let same = back_size == dbsize && back_sample == expected;
    if !same {
        bail!("Moon's export loaded into Redis differs: {back_size} keys vs {dbsize}, or a sampled value");
    }

    let row = |name: &str, secs: f64, mb: f64| {
        format!(
            "| {name} | {secs:.2} s | {:.1} MB/s | {:.0} keys/s |",
            mb / secs,
            dbsize as f64 / secs
        )
    };
    let _ = writeln!(
        report,
        "\n### RDB in and out: {dbsize} keys (60% strings, 10% each hashes, lists, sorted sets, sets; 10% with a TTL), dump.rdb {mb:.1} MB\n"
    );
    let _ = writeln!(report, "| step | time | MB/s | keys/s |");
    let _ = writeln!(report, "| --- | --- | --- | --- |");
    let _ = writeln!(
        report,
        "{}",
        row(
            "redis-server loading dump.rdb at startup (its log)",
            redis_secs,
            mb
        )
    );
    let _ = writeln!(
        report,
        "{}",
        row(
            "moon-cli import-rdb, 2 shards (whole process, fsynced)",
            import.as_secs_f64(),
            mb
        )
    );
    let _ = writeln!(
        report,
        "{}",
        row(
            "moon-cli export-rdb (whole process, fsynced)",
            export.as_secs_f64(),
            back_mb
        )
    );
    let _ = writeln!(
        report,
        "{}",
        row(
            "redis-server loading Moon's export (its log)",
            back_secs,
            back_mb
        )
    );
    let _ = writeln!(
        report,
        "\nMoon's export: {back_mb:.1} MB; redis-server loaded {back_size} keys from it, the same as the original, and 50 sampled keys read back identical."
    );
    Ok(())
}
