//! `moon-cli`: the operator's tool for Moon data directories.
//!
//! - `check-aof --dir D [--fix]`: verify the manifest and every record of every shard;
//!   report torn tails and corruption with file and offset; `--fix` truncates, only after
//!   printing what it will drop.
//! - `manifest show --dir D`: the layout, seq, shards, LSNs and files, readable.
//! - `migrate-aof --dir D --shards N [--dry-run]`: legacy (v1) or differently sharded (v2)
//!   directory → per-shard layout with N shards, switched atomically (see [`migrate`]);
//!   with `--from-redis REDIS_DIR`, a Redis 7 multi-part AOF directory is imported.
//!
//! It works offline, on files: it takes the data directory's lock first and refuses a
//! directory a running server holds. Exit codes: 0 healthy (or fixed), 1 problems found and
//! left alone, 2 could not run (usage, lock, unreadable or corrupt manifest).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod check;
mod lock;
mod migrate;
mod show;

#[derive(Parser)]
#[command(
    name = "moon-cli",
    version,
    about = "Moon operator tool: inspect and repair data directories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn a legacy top-level (v1) directory, or a per-shard one with another shard count,
    /// into a per-shard directory with `--shards` shards (offline; atomic switch).
    MigrateAof {
        /// The data directory (`dir` in moon.toml).
        #[arg(long)]
        dir: PathBuf,
        /// Import a Redis 7 AOF directory (its `dir`, or its appendonlydir) into `--dir`
        /// instead (AOF-format base only: `aof-use-rdb-preamble no`).
        #[arg(long)]
        from_redis: Option<PathBuf>,
        /// The shard count the server will run with.
        #[arg(long)]
        shards: usize,
        /// Print the plan (keys per shard) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Verify the manifest and every record of every shard's logs.
    CheckAof {
        /// The data directory (`dir` in moon.toml).
        #[arg(long)]
        dir: PathBuf,
        /// Truncate each damaged log at its first bad record, after printing what is dropped.
        #[arg(long)]
        fix: bool,
    },
    /// Inspect the manifest.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Print the layout, seq, shards, LSNs and files.
    Show {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckAof { dir, fix } => check::run(&dir, fix),
        Command::MigrateAof {
            dir,
            from_redis: Some(redis),
            shards,
            dry_run,
        } => migrate::run_from_redis(&redis, &dir, shards, dry_run),
        Command::MigrateAof {
            dir,
            from_redis: None,
            shards,
            dry_run,
        } => migrate::run(&dir, shards, dry_run),
        Command::Manifest {
            command: ManifestCommand::Show { dir },
        } => show::run(&dir),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("moon-cli: {e:#}");
            std::process::exit(2);
        }
    }
}
