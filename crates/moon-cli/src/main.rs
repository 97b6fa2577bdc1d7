//! `moon-cli`: the operator's tool for Moon data directories.
//!
//! - `check-aof --dir D [--fix]`: verify the manifest and every record of every shard;
//!   report torn tails and corruption with file and offset; `--fix` truncates, only after
//!   printing what it will drop.
//! - `manifest show --dir D`: the layout, seq, shards, LSNs and files, readable.
//! - `migrate-aof --dir D --shards N [--dry-run]`: legacy (v1) or differently sharded (v2)
//!   directory → per-shard layout with N shards, switched atomically (see [`migrate`]);
//!   with `--from-redis REDIS_DIR`, a Redis 7 multi-part AOF directory is imported (RDB or
//!   AOF base).
//! - `import-rdb dump.rdb --dir D --shards N [--skip-unsupported]`: a Redis RDB file → a new
//!   per-shard directory; `export-rdb --dir D --out dump.rdb`: back to an RDB Redis loads
//!   (see [`rdb`]).
//!
//! It works offline, on files: it takes the data directory's lock first and refuses a
//! directory a running server holds. Exit codes: 0 healthy (or fixed), 1 problems found and
//! left alone, 2 could not run (usage, lock, unreadable or corrupt manifest).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod check;
mod layout;
mod lock;
mod migrate;
mod rdb;
mod rdb_load;
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
        /// instead (an RDB base, `aof-use-rdb-preamble yes`, or an AOF one).
        #[arg(long)]
        from_redis: Option<PathBuf>,
        /// With --from-redis: leave out values Moon cannot hold (module data), listing them,
        /// instead of stopping at the first.
        #[arg(long)]
        skip_unsupported: bool,
        /// The shard count the server will run with.
        #[arg(long)]
        shards: usize,
        /// Print the plan (keys per shard) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Build a new data directory with `--shards` shards from a Redis RDB file (`dump.rdb`).
    ImportRdb {
        /// The RDB file (RDB version 1 to 12: up to Redis 7.4).
        file: PathBuf,
        /// The new data directory (`dir` in moon.toml); must not hold Moon data yet.
        #[arg(long)]
        dir: PathBuf,
        /// The shard count the server will run with.
        #[arg(long)]
        shards: usize,
        /// Leave out values Moon cannot hold (module data), listing them, instead of
        /// stopping at the first.
        #[arg(long)]
        skip_unsupported: bool,
        /// Print the plan (keys per shard) and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a data directory's keys and function libraries as an RDB file Redis loads.
    ExportRdb {
        /// The data directory (`dir` in moon.toml); the server must not be running on it.
        #[arg(long)]
        dir: PathBuf,
        /// The RDB file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The RDB version: 10 (Redis 7.0) by default, 12 (Redis 7.4) when a hash has field
        /// TTLs; a lower one than the data needs is refused, naming the key.
        #[arg(long)]
        rdb_version: Option<u32>,
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
            skip_unsupported,
        } => migrate::run_from_redis(&redis, &dir, shards, dry_run, skip_unsupported),
        Command::MigrateAof {
            dir,
            from_redis: None,
            shards,
            dry_run,
            ..
        } => migrate::run(&dir, shards, dry_run),
        Command::ImportRdb {
            file,
            dir,
            shards,
            skip_unsupported,
            dry_run,
        } => rdb::run_import(&file, &dir, shards, skip_unsupported, dry_run),
        Command::ExportRdb {
            dir,
            out,
            rdb_version,
        } => rdb::run_export(&dir, &out, rdb_version),
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
