//! FUNCTION LOAD / DELETE / FLUSH / LIST / STATS / KILL / DUMP / RESTORE / HELP, and the file
//! that keeps the libraries across restarts.
//!
//! The libraries live in the process (`moon_store::functions`); FCALL is a keyspace command
//! that runs on its keys' shard(s) like EVAL. Unlike scripts, libraries survive a restart: a
//! change is acknowledged only once `functions.moon` in the data directory (appendonly yes)
//! holds the new set of libraries, written atomically and fsynced (docs/FORMATS.md). A change
//! the file could not take is undone. Libraries are not data of any shard, so they are not in
//! any shard's log: a crash never leaves half of a library, and replaying a shard never
//! needs one (a function's effects are logged as any script's).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::eq;
use moon_store::functions;

use crate::session::Session;
use crate::shared::ServerError;

/// The file's name in the data directory.
pub const FILE: &str = functions::FILE;

/// One change at a time (the registry and the file move together).
static CHANGING: Mutex<()> = Mutex::new(());

use functions::{decode_file as decode, encode_file as encode};

/// Startup: the libraries of `dir`'s file, if there is one. A file that cannot be read back
/// whole stops the server: starting without libraries that clients loaded would answer their
/// FCALLs "Function not found".
pub fn restore_at_startup(dir: &Path) -> Result<usize, ServerError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(ServerError::fatal(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let codes = decode(&bytes).map_err(|why| {
        ServerError::fatal(format!(
            "{} cannot be loaded: {why} (docs/runbooks/functions-file.md)",
            path.display()
        ))
    })?;
    functions::restore(&codes).map_err(|e| {
        let text = match e {
            Frame::Error(t) => t,
            Frame::StaticError(t) => t.to_string(),
            _ => String::new(),
        };
        ServerError::fatal(format!(
            "{}: a library does not load: {text} (docs/runbooks/functions-file.md)",
            path.display()
        ))
    })?;
    Ok(codes.len())
}

/// Where the libraries are kept, if the server keeps data (appendonly yes).
fn file_of(session: &Session) -> Option<PathBuf> {
    let config = session.ctx.shared.config();
    config.appendonly.then(|| config.dir.join(FILE))
}

/// Saves the libraries `plan` gives (every library's code after the change, checked), then
/// makes them the process's: a change is in effect only once the file holds it, so no client
/// uses a library that a crash would lose (review finding).
fn change<R>(
    session: &Session,
    plan: impl FnOnce() -> Result<(R, Vec<Arc<[u8]>>), Frame>,
) -> Result<R, Frame> {
    if session.on_read_only_replica() {
        // The libraries are the primary's (they come in its stream), as its keys are.
        return Err(Frame::StaticError(
            "READONLY You can't write against a read only replica.",
        ));
    }
    let _one = CHANGING.lock().unwrap_or_else(|e| e.into_inner());
    let (reply, codes) = plan()?;
    if let Some(path) = file_of(session) {
        match moon_manifest::fsio::commit_atomic(&path, &encode(&codes)) {
            Ok(()) => {}
            Err(moon_manifest::fsio::CommitError::BeforeRename(e)) => {
                return Err(Frame::Error(format!(
                    "ERR cannot save the function libraries to {}: {e}",
                    path.display()
                )));
            }
            Err(moon_manifest::fsio::CommitError::AfterRename(e)) => {
                // The new file is in place, but its directory may not be durable: in effect
                // now (the next start reads this file, or the one before it).
                let _ = functions::restore(&codes);
                return Err(Frame::Error(format!(
                    "ERR the function libraries were saved to {} but not made durable ({e}): the change is in effect and may not survive a crash",
                    path.display()
                )));
            }
        }
    }
    functions::restore(&codes)?;
    replicate(session, &codes);
    Ok(reply)
}

/// Replicas get the libraries after every change as one command: the whole set, which
/// replaces theirs (FUNCTION RESTORE ... FLUSH), or FUNCTION FLUSH for none.
fn replicate(session: &Session, codes: &[Arc<[u8]>]) {
    let feed = &session.ctx.shared.repl;
    if !feed.active() {
        return;
    }
    if codes.is_empty() {
        feed.command(&[b"FUNCTION", b"FLUSH"]);
        return;
    }
    let refs: Vec<&[u8]> = codes.iter().map(|c| c.as_ref()).collect();
    let payload = moon_rdb::encode_functions_dump(&refs);
    feed.command(&[b"FUNCTION", b"RESTORE", &payload, b"FLUSH"]);
}

fn library_frame(
    name: String,
    code: Arc<[u8]>,
    info: functions::LibraryInfo,
    with_code: bool,
) -> Frame {
    let functions = info
        .functions
        .into_iter()
        .map(|f| {
            Frame::Map(vec![
                (Frame::bulk("name"), Frame::Bulk(Bytes::from(f.name))),
                (
                    Frame::bulk("description"),
                    f.description
                        .map_or(Frame::Null, |d| Frame::Bulk(Bytes::from(d))),
                ),
                (
                    Frame::bulk("flags"),
                    Frame::Set(
                        f.flags
                            .into_iter()
                            .map(|g| Frame::Bulk(Bytes::from(g)))
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    let mut fields = vec![
        (Frame::bulk("library_name"), Frame::Bulk(Bytes::from(name))),
        (Frame::bulk("engine"), Frame::bulk("LUA")),
        (Frame::bulk("functions"), Frame::Array(functions)),
    ];
    if with_code {
        fields.push((
            Frame::bulk("library_code"),
            Frame::Bulk(Bytes::copy_from_slice(&code)),
        ));
    }
    Frame::Map(fields)
}

pub(crate) fn function(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    let result = if eq(sub, "load") {
        let mut replace = false;
        for option in args.iter().take(args.len().saturating_sub(1)).skip(2) {
            if !eq(option, "replace") {
                return Frame::Error(format!(
                    "ERR Unknown option given: {}",
                    String::from_utf8_lossy(option)
                ));
            }
            replace = true;
        }
        if args.len() < 3 {
            return Frame::StaticError("ERR Function code is missing");
        }
        let code = &args[args.len() - 1];
        change(session, || functions::plan_load(code, replace)).map(|n| Frame::Bulk(Bytes::from(n)))
    } else if eq(sub, "delete") && args.len() == 3 {
        change(session, || Ok(((), functions::plan_delete(&args[2])?))).map(|()| Frame::OK)
    } else if eq(sub, "flush") && args.len() <= 3 {
        if let Some(mode) = args.get(2) {
            if !eq(mode, "async") && !eq(mode, "sync") {
                return Frame::StaticError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
            }
        }
        change(session, || Ok(((), Vec::new()))).map(|()| Frame::OK)
    } else if eq(sub, "list") {
        let (mut pattern, mut with_code) = (None, false);
        let mut i = 2;
        while i < args.len() {
            // Each option once, as Redis takes them.
            if !with_code && eq(&args[i], "withcode") {
                with_code = true;
                i += 1;
            } else if pattern.is_none() && eq(&args[i], "libraryname") {
                let Some(p) = args.get(i + 1) else {
                    return Frame::StaticError("ERR library name argument was not given");
                };
                pattern = Some(p.clone());
                i += 2;
            } else {
                return Frame::Error(format!(
                    "ERR Unknown argument {}",
                    String::from_utf8_lossy(&args[i])
                ));
            }
        }
        Ok(Frame::Array(
            functions::list()
                .into_iter()
                .filter(|(name, _, _)| {
                    // Library names are case-insensitive, and so is the pattern, as in Redis.
                    pattern.as_ref().is_none_or(|p| {
                        moon_store::glob::glob_match(
                            &p.to_ascii_lowercase(),
                            name.to_ascii_lowercase().as_bytes(),
                        )
                    })
                })
                .map(|(name, code, info)| library_frame(name, code, info, with_code))
                .collect(),
        ))
    } else if eq(sub, "stats") && args.len() == 2 {
        let (libraries, functions) = functions::counts();
        // A run shows once it is busy (before that nothing else can ask on its shards).
        let running = match moon_script::running_script() {
            Err(busy) => return Frame::StaticError(busy),
            Ok(Some(run)) => Frame::Map(vec![
                (Frame::bulk("name"), Frame::Bulk(Bytes::from(run.name))),
                (
                    Frame::bulk("command"),
                    Frame::Array(run.command.into_iter().map(Frame::Bulk).collect()),
                ),
                (
                    Frame::bulk("duration_ms"),
                    Frame::Integer(i64::try_from(run.duration_ms).unwrap_or(i64::MAX)),
                ),
            ]),
            Ok(None) => Frame::Null,
        };
        Ok(Frame::Map(vec![
            (Frame::bulk("running_script"), running),
            (
                Frame::bulk("engines"),
                Frame::Map(vec![(
                    Frame::bulk("LUA"),
                    Frame::Map(vec![
                        (
                            Frame::bulk("libraries_count"),
                            Frame::Integer(libraries as i64),
                        ),
                        (
                            Frame::bulk("functions_count"),
                            Frame::Integer(functions as i64),
                        ),
                    ]),
                )]),
            ),
        ]))
    } else if eq(sub, "kill") && args.len() == 2 {
        // Only a busy function can be killed, one that has not written (watch.rs).
        Ok(match moon_script::kill(true) {
            Ok(()) => Frame::OK,
            Err(refused) => Frame::StaticError(refused),
        })
    } else if eq(sub, "dump") && args.len() == 2 {
        let codes = functions::codes();
        let codes: Vec<&[u8]> = codes.iter().map(|c| &c[..]).collect();
        Ok(Frame::Bulk(Bytes::from(moon_rdb::encode_functions_dump(
            &codes,
        ))))
    } else if eq(sub, "restore") && (3..=4).contains(&args.len()) {
        let (mut flush, mut replace) = (false, false);
        if let Some(policy) = args.get(3) {
            if eq(policy, "flush") {
                flush = true;
            } else if eq(policy, "replace") {
                replace = true;
            } else if !eq(policy, "append") {
                return Frame::StaticError(
                    "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                );
            }
        }
        match moon_rdb::decode_functions_dump(&args[2]) {
            Err(None) => Err(Frame::StaticError(
                "ERR DUMP payload version or checksum are wrong",
            )),
            Err(Some(why)) => Err(Frame::Error(format!("ERR {why}"))),
            Ok(codes) => change(session, || {
                Ok(((), functions::plan_restore(&codes, flush, replace)?))
            })
            .map(|()| Frame::OK),
        }
    } else if eq(sub, "help") && args.len() == 2 {
        Ok(Frame::Array(
            [
                "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "LOAD [REPLACE] <FUNCTION CODE>",
                "DELETE <LIBRARY NAME>",
                "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
                "FLUSH [ASYNC|SYNC]",
                "DUMP",
                "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
                "STATS",
                "KILL",
                "HELP",
            ]
            .into_iter()
            .map(Frame::Simple)
            .collect(),
        ))
    } else {
        Err(Frame::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
            String::from_utf8_lossy(sub)
        )))
    };
    result.unwrap_or_else(|e| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file reads back what was written, and refuses damaged or truncated bytes.
    #[test]
    fn the_functions_file_round_trips_and_refuses_damage() {
        let codes: Vec<Arc<[u8]>> = vec![
            Arc::from(&b"#!lua name=a\nredis.register_function('f', function() return 1 end)"[..]),
            Arc::from(&b""[..]),
            Arc::from(&[0u8, 255, 10][..]),
        ];
        let bytes = encode(&codes);
        assert_eq!(decode(&bytes).expect("decodes"), codes);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            assert!(decode(&damaged).is_err(), "flipped at {at}");
        }
        assert_eq!(
            decode(&encode(&[])).expect("empty"),
            Vec::<Arc<[u8]>>::new()
        );
    }
}
