//! The ACL command, authentication (AUTH, HELLO ... AUTH), refusals with Redis's NOPERM texts
//! and the ACL LOG, and the `aclfile` at startup. The users themselves are `crate::acl`.

use std::sync::Arc;

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::{eq, text};
use moon_store::command::CommandSpec;
use moon_store::reply::{self, err};

use crate::acl::{Acl, Denied, LogEntry, User, CATEGORIES};
use crate::config::Config;
use crate::session::Session;
use crate::shared::ServerError;

/// The users the server starts with: the aclfile's if one is configured, else `default` with
/// `requirepass`. A malformed aclfile refuses startup, naming the line.
pub fn initial_acl(config: &Config) -> Result<Acl, ServerError> {
    let Some(path) = &config.aclfile else {
        return Ok(Acl::new(config.requirepass.as_deref()));
    };
    if config.requirepass.is_some() {
        return Err(ServerError::fatal(format!(
            "requirepass and aclfile cannot both be set: the default user's password belongs in {} (see docs/SECURITY.md)",
            path.display()
        )));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Acl::parse_file(&text, &path.display().to_string()).map_err(|e| {
            ServerError::fatal(format!(
                "cannot load the ACL file: {e} (see docs/SECURITY.md)"
            ))
        }),
        // Like Redis, a missing file is an empty one: the default user only; ACL SAVE makes it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Acl::new(None)),
        Err(e) => Err(ServerError::fatal(format!(
            "cannot read the ACL file {}: {e}",
            path.display()
        ))),
    }
}

/// The reply to a refused request, logged in ACL LOG.
/// The permissions a script's commands are checked against: its user's, when restricted
/// (`None` otherwise: nothing to check).
pub fn script_user(session: &Session) -> Option<moon_store::ScriptUser> {
    if session.user.unrestricted() {
        return None;
    }
    Some(moon_store::ScriptUser(std::sync::Arc::new(
        ScriptPermissions {
            user: session.user.clone(),
            shared: session.ctx.shared.clone(),
            client: session.info.line(),
        },
    )))
}

/// `call` with its script's user attached if it runs a script.
pub fn for_script(session: &Session, mut call: moon_store::Call) -> moon_store::Call {
    if call.spec().group == moon_store::command::Group::Scripting {
        call.user = script_user(session);
    }
    call
}

struct ScriptPermissions {
    user: std::sync::Arc<crate::acl::User>,
    shared: std::sync::Arc<crate::shared::Shared>,
    /// The client, as ACL LOG describes it.
    client: String,
}

impl moon_store::Permissions for ScriptPermissions {
    fn allows(&self, args: &[Bytes]) -> Option<bool> {
        let entry = args.first().and_then(|name| crate::catalog::lookup(name))?;
        Some(entry.spec.arity_ok(args.len()) && self.user.check(entry.spec, args).is_ok())
    }

    fn check(&self, args: &[Bytes]) -> Result<(), Frame> {
        let Some(entry) = args.first().and_then(|name| crate::catalog::lookup(name)) else {
            return Ok(());
        };
        if !entry.spec.arity_ok(args.len()) {
            // Refused for its arguments by the script's host; nothing to check.
            return Ok(());
        }
        script_check(&self.user, &self.shared, &self.client, entry.spec, args)
    }
}

/// A command of a script run by `user`: Redis's refusal (logged with context `lua`) if the
/// user may not run it or touch its keys or channels.
pub fn script_check(
    user: &crate::acl::User,
    shared: &crate::shared::Shared,
    client: &str,
    spec: &'static CommandSpec,
    args: &[Bytes],
) -> Result<(), Frame> {
    let Err((denied, object)) = user.check(spec, args) else {
        return Ok(());
    };
    if let Ok(mut log) = shared.acl_log.lock() {
        log.add(
            denied.reason(),
            "lua",
            &object,
            &user.name,
            client.to_string(),
        );
    }
    let why = match denied {
        Denied::Command => "can't run this command or subcommand",
        Denied::Key => "can't access at least one of the keys mentioned in the command arguments",
        Denied::Channel => "can't publish to the channel mentioned in the command",
    };
    Err(Frame::Error(format!(
        "ERR The user executing the script {why}"
    )))
}

pub fn deny(session: &Session, denied: Denied, object: &str) -> Frame {
    let context = if session.multi.queued.is_some() || session.tx.is_some() {
        "multi"
    } else {
        "toplevel"
    };
    if let Ok(mut log) = session.ctx.shared.acl_log.lock() {
        log.add(
            denied.reason(),
            context,
            object,
            &session.user.name,
            session.info.line(),
        );
    }
    Frame::Error(match denied {
        Denied::Command => {
            format!("NOPERM this user has no permissions to run the '{object}' command")
        }
        Denied::Key => {
            "NOPERM this user has no permissions to access one of the keys used as arguments".into()
        }
        Denied::Channel => {
            "NOPERM this user has no permissions to access one of the channels used as arguments"
                .into()
        }
    })
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// AUTH [user] password, and HELLO's AUTH: on success the connection runs as that user.
pub fn authenticate(session: &mut Session, user: Option<&Bytes>, pass: &[u8]) -> Result<(), Frame> {
    let name = user.map_or("default".to_string(), |u| {
        String::from_utf8_lossy(u).into_owned()
    });
    let found = session.ctx.shared.user(&name);
    if user.is_none() && found.as_ref().is_some_and(|u| u.nopass) {
        return Err(err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"));
    }
    match found {
        Some(u) if u.enabled && u.password_ok(pass) => {
            session.user = u;
            session.authenticated = true;
            *session.info.user.borrow_mut() = name;
            Ok(())
        }
        _ => {
            if let Ok(mut log) = session.ctx.shared.acl_log.lock() {
                log.add("auth", "toplevel", "AUTH", &name, session.info.line());
            }
            Err(err(WRONGPASS))
        }
    }
}

/// 32 random bytes from the OS.
fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf)
}

/// ACL <subcommand> ...
pub async fn acl_command(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = args[1].to_ascii_lowercase();
    let shared = session.ctx.shared.clone();
    match (&sub[..], args.len()) {
        (b"whoami", 2) => Frame::bulk(session.user.name.clone()),
        (b"users", 2) => {
            let mut names: Vec<String> =
                shared.acl().users.iter().map(|u| u.name.clone()).collect();
            names.sort();
            Frame::Array(names.into_iter().map(Frame::bulk).collect())
        }
        (b"list", 2) => Frame::Array(
            shared
                .acl()
                .users
                .iter()
                .map(|u| Frame::bulk(u.describe()))
                .collect(),
        ),
        (b"setuser", n) if n >= 3 => {
            let name = text(&args[2]);
            if name.is_empty() || name.contains(char::is_whitespace) {
                return err("ERR Usernames can't contain spaces or null characters");
            }
            let rules: Vec<String> = args[3..].iter().map(|a| text(a)).collect();
            match shared.update_acl(|acl| acl.set_user(&name, &rules)) {
                Ok(()) => {
                    recheck_connections(session).await;
                    Frame::OK
                }
                Err(e) => Frame::Error(format!("ERR {e}")),
            }
        }
        (b"deluser", n) if n >= 3 => {
            let names: Vec<String> = args[2..].iter().map(|a| text(a)).collect();
            if names.iter().any(|n| n == "default") {
                return err("ERR The 'default' user cannot be removed");
            }
            let removed = shared.update_acl(|acl| {
                let before = acl.users.len();
                acl.users.retain(|u| !names.contains(&u.name));
                before - acl.users.len()
            });
            // Their connections close now, idle or subscribed ones too.
            recheck_connections(session).await;
            Frame::Integer(removed as i64)
        }
        (b"getuser", 3) => match shared.user(&text(&args[2])) {
            None => Frame::Null,
            Some(u) => getuser(&u),
        },
        (b"cat", 2) => Frame::Array(CATEGORIES.iter().map(|c| Frame::bulk(*c)).collect()),
        (b"cat", 3) => {
            let cat = text(&args[2]).to_ascii_lowercase();
            if !CATEGORIES.contains(&cat.as_str()) {
                return Frame::Error(format!("ERR Unknown category '{cat}'"));
            }
            Frame::Array(
                crate::catalog::specs()
                    .filter(|c| c.acl_categories().iter().any(|x| x[1..] == cat))
                    .map(|c| Frame::bulk(c.name))
                    .collect(),
            )
        }
        (b"dryrun", n) if n >= 4 => {
            let Some(u) = shared.user(&text(&args[2])) else {
                return Frame::Error(format!("ERR User '{}' not found", text(&args[2])));
            };
            let cmd = &args[3..];
            let Some(spec) = crate::catalog::lookup(&cmd[0]).map(|e| e.spec) else {
                return Frame::Error(format!("ERR Command '{}' not found", text(&cmd[0])));
            };
            if !spec.arity_ok(cmd.len()) {
                return Frame::Error(format!(
                    "ERR wrong number of arguments for '{}' command",
                    spec.name
                ));
            }
            match u.check(spec, cmd) {
                Ok(()) => Frame::OK,
                Err((Denied::Command, what)) => Frame::bulk(format!(
                    "This user has no permissions to run the '{what}' command"
                )),
                Err((Denied::Key, what)) => Frame::bulk(format!(
                    "This user has no permissions to access the '{what}' key"
                )),
                Err((Denied::Channel, what)) => Frame::bulk(format!(
                    "This user has no permissions to access the '{what}' channel"
                )),
            }
        }
        (b"genpass", 2 | 3) => {
            let bits = match args.get(2) {
                None => 256,
                Some(b) => match moon_store::Store::parse_int(b) {
                    Some(n) if (1..=4096).contains(&n) => n as usize,
                    _ => return err("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096"),
                },
            };
            match random_bytes(bits.div_ceil(8)) {
                Ok(b) => {
                    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    Frame::bulk(hex[..bits.div_ceil(4)].to_string())
                }
                Err(e) => Frame::Error(format!("ERR cannot read random bytes: {e}")),
            }
        }
        (b"log", 2 | 3) => {
            if let Some(a) = args.get(2) {
                if eq(a, "reset") {
                    if let Ok(mut log) = shared.acl_log.lock() {
                        log.entries.clear();
                    }
                    return Frame::OK;
                }
            }
            let count = match args.get(2) {
                None => 10,
                Some(a) => match moon_store::Store::parse_int(a) {
                    Some(n) if n >= 0 => n as usize,
                    _ => return err("ERR value is out of range, must be positive"),
                },
            };
            let now = moon_shard::now_ms();
            let entries: Vec<LogEntry> = shared
                .acl_log
                .lock()
                .map(|l| l.entries.iter().take(count).cloned().collect())
                .unwrap_or_default();
            Frame::Array(
                entries
                    .into_iter()
                    .map(|e| {
                        Frame::Map(vec![
                            (Frame::bulk("count"), Frame::Integer(e.count as i64)),
                            (Frame::bulk("reason"), Frame::bulk(e.reason)),
                            (Frame::bulk("context"), Frame::bulk(e.context)),
                            (Frame::bulk("object"), Frame::bulk(e.object)),
                            (Frame::bulk("username"), Frame::bulk(e.username)),
                            (
                                Frame::bulk("age-seconds"),
                                Frame::Double(now.saturating_sub(e.created) as f64 / 1000.0),
                            ),
                            (Frame::bulk("client-info"), Frame::bulk(e.client_info)),
                            (Frame::bulk("entry-id"), Frame::Integer(e.id as i64)),
                            (
                                Frame::bulk("timestamp-created"),
                                Frame::Integer(e.created as i64),
                            ),
                            (
                                Frame::bulk("timestamp-last-updated"),
                                Frame::Integer(e.updated as i64),
                            ),
                        ])
                    })
                    .collect(),
            )
        }
        (b"save", 2) => {
            let Some(path) = shared.config().aclfile else {
                return err("ERR This Moon instance is not configured to use an ACL file. Set aclfile in moon.toml (or --aclfile) to keep users across restarts.");
            };
            match moon_manifest::fsio::write_atomic_private(&path, shared.acl().file_text().as_bytes()) {
                Ok(()) => Frame::OK,
                Err(e) => Frame::Error(format!(
                    "ERR There was an error trying to save the ACLs. Please check the server logs for more information ({}: {e})",
                    path.display()
                )),
            }
        }
        (b"load", 2) => {
            let Some(path) = shared.config().aclfile else {
                return err("ERR This Moon instance is not configured to use an ACL file. Set aclfile in moon.toml (or --aclfile) to keep users across restarts.");
            };
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|t| Acl::parse_file(&t, &path.display().to_string()));
            match loaded {
                Ok(mut acl) => {
                    shared.update_acl(|a| {
                        // A user the file keeps is the same user: its connections stay (with
                        // the file's rules); users it drops are disconnected.
                        for u in acl.users.iter_mut() {
                            if let Some(old) = a.get(&u.name) {
                                Arc::make_mut(u).generation = old.generation;
                            }
                        }
                        *a = acl
                    });
                    recheck_connections(session).await;
                    Frame::OK
                }
                Err(e) => Frame::Error(format!("ERR {e}")),
            }
        }
        (b"help", 2) => Frame::Array(
            [
                "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CAT [<category>]",
                "DELUSER <username> [<username> ...]",
                "DRYRUN <username> <command> [<arg> ...]",
                "GETUSER <username>",
                "LIST",
                "USERS",
                "SETUSER <username> <attribute> [<attribute> ...]",
                "SAVE",
                "LOAD",
                "LOG [<count> | RESET]",
                "GENPASS [<bits>]",
                "WHOAMI",
                "HELP",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        ),
        _ => reply::unknown_subcommand(&args[1], "acl"),
    }
}

/// Wakes every connection on every shard to check its user again (deleted, recreated, or
/// no longer allowed its subscriptions: closed).
pub async fn recheck_connections(session: &Session) {
    session
        .ctx
        .shard
        .call_all(|_: &moon_shard::Shard| {
            crate::session::CLIENTS.with(|c| {
                for info in c.borrow().values() {
                    info.out.kick();
                }
            })
        })
        .await;
}

fn getuser(u: &Arc<User>) -> Frame {
    Frame::Map(vec![
        (
            Frame::bulk("flags"),
            Frame::Array(u.flags().into_iter().map(Frame::bulk).collect()),
        ),
        (
            Frame::bulk("passwords"),
            Frame::Array(
                u.passwords
                    .iter()
                    .map(|p| Frame::bulk(p.iter().map(|b| format!("{b:02x}")).collect::<String>()))
                    .collect(),
            ),
        ),
        (Frame::bulk("commands"), Frame::bulk(u.commands_text())),
        (
            Frame::bulk("keys"),
            Frame::bulk(if u.keys.is_empty() {
                String::new()
            } else {
                u.keys_text()
            }),
        ),
        (
            Frame::bulk("channels"),
            Frame::bulk(if u.channels.is_empty() {
                String::new()
            } else {
                u.channels_text()
            }),
        ),
        (Frame::bulk("selectors"), Frame::Array(Vec::new())),
    ])
}
