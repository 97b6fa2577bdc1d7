//! The binary's command line: configuration errors, --check-config, clean shutdown.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_key_value_and_allowed_values() {
    let (code, _, err) = run(&["--appendfsync", "sometimes", "--check-config"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "invalid value for 'appendfsync': 'sometimes' (allowed: always, everysec, no)"
        ),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("moon.toml");
    std::fs::write(&file, "port = 6379\nshard = 2\n").unwrap();
    let (code, _, err) = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown config key 'shard'") && err.contains("shards"),
        "{err}"
    );

    std::fs::write(&file, "port = 70000\n").unwrap();
    let (code, _, err) = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid value for 'port': '70000' (allowed: 0-65535"),
        "{err}"
    );

    std::fs::write(&file, "port = \n").unwrap();
    let (code, _, err) = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid TOML"), "{err}");

    let (code, _, err) = run(&["--config", "/nonexistent/moon.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read config file /nonexistent/moon.toml"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_the_checked_in_file() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../moon.toml");
    let (code, out, err) = run(&["--config", file, "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("configuration OK") && out.contains("appendfsync = everysec"),
        "{out}"
    );
}

#[test]
fn sigterm_finishes_and_exits_0() {
    let mut s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    let status = s.terminate();
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
    assert!(s.log_text().contains("shutting down"), "{}", s.log_text());
    // The open connection was closed by the server on its way out.
    assert!(redis::cmd("PING").query::<String>(&mut c).is_err());
}

#[test]
fn shutdown_command_stops_the_server() {
    let mut s = MoonServer::start(2, &[]);
    let mut c = s.client();
    assert!(
        redis::cmd("SHUTDOWN").query::<()>(&mut c).is_err(),
        "SHUTDOWN closes the connection without a reply"
    );
    let status = s
        .wait_exit(Duration::from_secs(30))
        .expect("exits after SHUTDOWN");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn second_listener_on_a_taken_port_fails_with_exit_1() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "--port",
            &port,
            "--pin-cpus",
            "no",
            "--shards",
            "1",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_servers_cannot_share_a_port() {
    let a = MoonServer::start(2, &[]);
    let port = a.addr.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "--port",
            &port,
            "--pin-cpus",
            "no",
            "--shards",
            "2",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}

/// A client that never reads its replies cannot hold the shutdown: its write is abandoned
/// after a grace period (it used to wait forever for the client to read).
#[test]
fn shutdown_does_not_wait_for_a_client_that_never_reads() {
    use std::io::Write;
    let mut s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let big = "b".repeat(8 << 20);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .unwrap();
    let mut stuck = std::net::TcpStream::connect(s.addr).unwrap();
    stuck
        .write_all(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(16))
        .unwrap();
    // Its replies (128 MB) fill the socket; PING from another client shows the server is past
    // reading the pipeline, then SHUTDOWN.
    assert!(common::eventually(Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 1 << 20)
    }));
    assert!(redis::cmd("SHUTDOWN").query::<()>(&mut c).is_err());
    let status = s
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits although a client never reads");
    assert_eq!(status.code(), Some(0));
    drop(stuck);
}
