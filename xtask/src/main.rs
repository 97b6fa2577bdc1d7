//! Project automation, run as `cargo xtask <task>` (the alias is in `.cargo/config.toml`).
//!
//! - `crash-matrix`: kill -9 the real release server under load in every configuration and
//!   prove that nothing acknowledged is lost ([`crash_matrix`]).
//! - `bench`: Moon against Redis 7 on the same machine, same settings ([`bench`]).
//! - `fuzz`: the parsers, every command and the network ([`fuzz`]).
//! - `tls-check`: redis-cli --tls against the TLS port ([`tls_check`]).
//! - `failover`: Redis Sentinel fails a Moon primary over under load ([`failover`]).
//!
//! Both drive the real `moon-server` binary through a real client, as a user would; neither
//! reaches into the server's crates.

use clap::{Parser, Subcommand};

mod bench;
mod bench_chart;
mod bench_cpu;
mod bench_pubsub;
mod bench_rdb;
mod bench_recovery;
mod crash_matrix;
mod failover;
mod fuzz;
mod layers;
mod model;
mod powerfs;
mod queue;
mod rng;
mod server;
mod stream_queue;
mod targets;
mod tls_check;

#[derive(Parser)]
#[command(name = "xtask", about = "Moon project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// SIGKILL the server under load in every configuration; check every acknowledged write.
    CrashMatrix(crash_matrix::Args),
    /// Benchmark Moon against redis-server with redis-benchmark.
    Bench(bench::Args),
    /// Fuzz the parsers and every command's argument handling (stable toolchain).
    Fuzz(fuzz::Args),
    /// A TLS session with redis-cli --tls against the real server (needs redis-tools).
    TlsCheck,
    /// No crate's modules import each other in a circle (layers point one way).
    Layers,
    /// Sentinel fails a Moon primary over to a Moon replica under load, again and again.
    Failover(failover::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::CrashMatrix(args) => crash_matrix::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::TlsCheck => tls_check::run(),
        Task::Layers => layers::run(),
        Task::Failover(args) => failover::run(args),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::exit(2);
        }
    }
}
