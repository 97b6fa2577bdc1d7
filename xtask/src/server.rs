//! Building and running the real `moon-server` binary.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// `cargo build --release -p moon-server -p moon-cli`; returns the server binary's path
/// (`moon-cli` is beside it).
pub fn build_release() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building moon-server and moon-cli (release)...");
    let mut build = Command::new(cargo);
    build
        .current_dir(root())
        .args(["build", "--release", "-p", "moon-server", "-p", "moon-cli"]);
    // What `cargo run` set for xtask itself (CARGO_MANIFEST_DIR, CARGO_PKG_*...) must not
    // reach this build: ring's build script reruns when CARGO_MANIFEST_DIR changes, so every
    // xtask step would rebuild ring and rustls twice.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || matches!(
                &*k,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            build.env_remove(&key);
        }
    }
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p moon-server -p moon-cli failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    Ok(target.join("release").join("moon-server"))
}

/// Flags for a server under test: any free port on loopback, unpinned (tests share the
/// CPUs with their load), `shards` shards, the fsync policy, the data directory.
pub fn test_server_args(shards: usize, fsync: &str, dir: &Path) -> Vec<String> {
    let shards = shards.to_string();
    let flags = [
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--pin-cpus",
        "no",
        "--shards",
        &shards,
        "--appendfsync",
        fsync,
        "--dir",
    ];
    flags
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(dir.display().to_string()))
        .collect()
}

/// A running server whose output goes to a log file.
pub struct Server {
    child: Child,
    pub addr: Option<SocketAddr>,
    ready: mpsc::Receiver<SocketAddr>,
}

impl Server {
    /// Spawns `bin` with `args`, appending its output to `log`. Does not wait for readiness.
    pub fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Server> {
        Server::spawn_with_env(bin, args, &[], log)
    }

    /// [`Server::spawn`] with extra environment variables (test seams such as
    /// `MOON_REWRITE_FAULT`).
    pub fn spawn_with_env(
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Server> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        for (stream, tx) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(err), None),
        ] {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                    if let (Some(tx), Some(pos)) =
                        (&tx, line.find("Ready to accept connections on "))
                    {
                        if let Ok(addr) = line[pos + 31..].trim().parse() {
                            let _ = tx.send(addr);
                        }
                    }
                }
            });
        }
        Ok(Server {
            child,
            addr: None,
            ready: rx,
        })
    }

    /// Waits until the server logs that it accepts connections.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<SocketAddr> {
        match self.ready.recv_timeout(timeout) {
            Ok(addr) => {
                self.addr = Some(addr);
                Ok(addr)
            }
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                bail!("the server did not become ready within {timeout:?} (exit status {status:?})")
            }
        }
    }

    /// Whether it became ready (without waiting).
    pub fn is_ready(&mut self) -> bool {
        if self.addr.is_none() {
            if let Ok(a) = self.ready.try_recv() {
                self.addr = Some(a);
            }
        }
        self.addr.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> anyhow::Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the server exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
