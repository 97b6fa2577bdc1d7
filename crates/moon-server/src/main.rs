//! `moon-server`: parses the configuration and runs the server.
//!
//! Exit codes: 0 after a clean shutdown or a successful `--check-config`, 2 for a bad
//! configuration, 1 for any other failure to start.

mod acl;
mod acl_cmd;
mod blocking;
mod catalog;
mod client;
mod command_cmd;
mod commands;
mod config;
mod config_cmd;
mod conn;
mod connection;
mod cross;
mod debug;
mod dispatch;
mod function_cmd;
mod info;
mod keyspace_walk;
mod latency_cmd;
mod loading;
mod memory_cmd;
mod open_files;
mod pause;
mod persistence;
mod plan;
mod pubsub;
mod repl_feed;
mod repl_position;
mod replica;
mod replication;
mod rewrite;
mod script_cmd;
mod script_cross;
mod server;
mod session;
mod shared;
mod slowlog_cmd;
mod standalone;
mod tls;
mod tracking;
mod txn;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::Config;

// Every configuration key is also a flag (`--port 7000`), declared once in the key table
// (`config::KEYS`) with its help text; flags override the file.
/// Moon: a Redis-compatible, sharded, durable in-memory key-value server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, print it, and exit (0 if valid, 2 if not).
    #[arg(long)]
    check_config: bool,
    /// The configuration keys given as flags, in the order given.
    #[arg(skip)]
    keys: Vec<(&'static str, String)>,
}

/// The command line: [`Args`] plus one `--<key> <VALUE>` flag per configuration key.
fn command() -> clap::Command {
    let mut cmd = <Args as clap::CommandFactory>::command();
    for key in config::KEYS {
        cmd = cmd.arg(
            clap::Arg::new(key.name)
                .long(key.name)
                .value_name("VALUE")
                // `--list-max-listpack-size -2`: a negative number is a value, not a flag.
                .allow_negative_numbers(true)
                .help(key.help),
        );
    }
    cmd
}

/// Parses `argv` (clap exits with its message on a malformed command line).
fn parse_args(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Args {
    let matches = command().get_matches_from(argv);
    let mut args = match <Args as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    for key in config::KEYS {
        if let Some(v) = matches.get_one::<String>(key.name) {
            args.keys.push((key.name, v.clone()));
        }
    }
    args
}

fn load_config(args: &Args) -> Result<Config, String> {
    let mut config = Config::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        config
            .apply_toml(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        config.config_file = Some(path.clone());
    }
    for (key, value) in &args.keys {
        config
            .set(key, value)
            .map_err(|e| format!("--{key}: {e}"))?;
    }
    Ok(config)
}

fn main() -> ExitCode {
    // The index of every command, before anything (ACL rules in the configuration) reads it.
    commands::install();
    let args = parse_args(std::env::args_os());
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moon-server: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("configuration OK");
        for key in config::KEYS.iter().map(|k| k.name) {
            let value = config.get(key).unwrap_or_default();
            let shown = if key == "requirepass" && !value.is_empty() {
                "(set)".to_string()
            } else {
                value
            };
            println!("{key} = {shown}");
        }
        return ExitCode::SUCCESS;
    }
    server::init_logging(&config.loglevel);
    // Crash-only: a panic on any thread (a shard executor above all) ends the process at once
    // instead of leaving a port open with a dead shard behind it. Every acknowledged write is
    // already in the log; recovery is what the log is for.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!("panic: {info}; exiting (recovery replays the log at the next start)");
        std::process::exit(101);
    }));
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("moon-server: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every key of the configuration is a flag, and sets the key.
    #[test]
    fn every_config_key_is_a_flag() {
        let mut argv: Vec<std::ffi::OsString> = vec!["moon-server".into()];
        for key in super::config::KEYS {
            let value = super::Config::default().get(key.name).unwrap_or_default();
            argv.push(format!("--{}", key.name).into());
            argv.push(value.into());
        }
        let args = super::parse_args(argv);
        assert_eq!(args.keys.len(), super::config::KEYS.len());
        let config = super::load_config(&args).unwrap();
        for key in super::config::KEYS {
            assert_eq!(
                config.get(key.name),
                super::Config::default().get(key.name),
                "{}: what get shows, set takes back",
                key.name
            );
        }
        let args = super::parse_args(
            ["moon-server", "--port", "7001", "--appendfsync", "always"].map(Into::into),
        );
        let config = super::load_config(&args).unwrap();
        assert_eq!((config.port, config.appendfsync.as_str()), (7001, "always"));
    }
}
