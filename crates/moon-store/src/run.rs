//! Running commands in a store: a [`Call`] the router sent (its row known, its database and
//! tracking reader as fields), or a command as the log holds it (replay, checks, tests).
//!
//! The top of the crate: the one place a row's handler is called, between
//! [`Store::begin_command`] and [`Store::end_command`], which hold what every command shares
//! (the clock, the memory check, the expirations it caused, tracking, events).

use bytes::Bytes;
use moon_proto::Frame;

use crate::args::{eq, parse_i64};
use crate::call::{Call, KeyspaceCommand};
use crate::reply::{self, err};
use crate::tracking::Reader;
use crate::Store;

const DB_OUT_OF_RANGE: &str = "ERR DB index is out of range";

/// What replay answers a script found in a log (Moon logs a script's effects, never the
/// script; an old Redis AOF may hold one).
pub const NOT_REPLAYED: &str =
    "ERR scripts are not replayed: a log must hold their effects (Redis 5+ writes them so)";

impl Store {
    /// Runs a call in its database. Whatever it changed, including keys it found expired,
    /// is in [`Store::logged`] afterwards (each effect after `MOON.DB n` outside database 0).
    pub fn run(&mut self, call: &Call, now: u64) -> Frame {
        if call.db != 0 && !self.select(call.db) {
            return err(DB_OUT_OF_RANGE);
        }
        // A script's commands are checked against its user's permissions (store/script.rs).
        let scripted = call.user.is_some();
        if scripted {
            self.script_user = call.user.clone();
        }
        self.script_client = call.client;
        // CLIENT NO-TOUCH: reads leave LRU/LFU alone; TOUCH still touches.
        let no_touch = crate::evict::is_no_touch(call.client) && call.command.spec.name != "touch";
        if no_touch {
            self.set_no_touch(true);
        }
        let reply = self.run_row(call.command, &call.args, now, call.track, call.event);
        if no_touch {
            self.set_no_touch(false);
        }
        if scripted {
            self.script_user = None;
        }
        if call.db != 0 {
            self.select(0);
        }
        reply
    }

    /// A hint that [`Store::execute`] will run `args` soon: starts loading the place where
    /// its first argument would be as a key of the database in use (replay calls it a few
    /// records ahead, so that the lookup finds it in cache). A command whose first argument is
    /// not a key only wastes the hint.
    pub fn prefetch(&self, args: &[Bytes]) {
        if let Some(key) = args.get(1).filter(|k| k.len() <= 64) {
            self.prefetch_key(0, key);
        }
    }

    /// A hint that [`Store::run`] will run `call` soon: starts loading the place where its
    /// first key is (a shard prefetches a batch's keys before running it, so the lookups of a
    /// pipeline overlap instead of waiting for memory one after the other).
    pub fn prefetch_call(&self, call: &Call) {
        let first = usize::try_from(call.spec().first_key).unwrap_or(0);
        if first == 0 {
            return;
        }
        if let Some(key) = call.args.get(first) {
            self.prefetch_key(call.db, key);
        }
    }

    /// Executes one command as a log holds it. `now` is Unix time in milliseconds; pass
    /// [`crate::NO_EXPIRY_CHECK`] while replaying a log. `MOON.DB n` makes the command right
    /// after it run in database n.
    pub fn execute(&mut self, args: &[Bytes], now: u64) -> Frame {
        let Some(name) = args.first() else {
            return reply::unknown_command(args);
        };
        if eq(name, "moon.db") && args.len() == 2 {
            let db = parse_i64(&args[1]).filter(|&d| d >= 0).map(|d| d as usize);
            return match db {
                Some(db) if self.select_for_next(db) => Frame::OK,
                _ => err(DB_OUT_OF_RANGE),
            };
        }
        match crate::table::lookup(name) {
            // A log holds a script's effects, never the script: one that names a script (an
            // old Redis AOF, a damaged file) is refused, not run.
            Some(row) if row.spec.group == crate::command::Group::Scripting => {
                self.drop_pending_db();
                err(NOT_REPLAYED)
            }
            Some(row) if row.spec.args_ok(args.len()) => self.run_row(row, args, now, None, None),
            refused => {
                // A refused command still ends the database a MOON.DB selected for it.
                self.drop_pending_db();
                match refused {
                    Some(row) => reply::wrong_arity(row.spec.name),
                    None => reply::unknown_command(args),
                }
            }
        }
    }

    /// Whether the last command run was refused before its handler ran (OOM): a rejected
    /// call in INFO commandstats, not a failed one. Clears the mark.
    pub fn take_refused(&mut self) -> bool {
        std::mem::take(&mut self.refused)
    }

    pub(crate) fn run_row(
        &mut self,
        row: &'static KeyspaceCommand,
        args: &[Bytes],
        now: u64,
        reader: Option<Reader>,
        event: Option<&'static str>,
    ) -> Frame {
        let script = row.spec.group == crate::command::Group::Scripting && !self.in_script;
        if script {
            // The script's caller, for its commands (NOLOOP, and the keys it declared: copied,
            // so that they do not hold the caller's read buffer).
            self.script.reader = reader;
            self.script.keys_remembered = false;
            self.script.keys.clear();
            if reader.is_some() {
                let keys = row.spec.keys(args).map(|k| Bytes::copy_from_slice(k));
                self.script.keys.extend(keys);
            }
        }
        // A script's command writes on behalf of the script's caller.
        let writer = match reader {
            Some(r) => Some(r.client),
            None if self.in_script => self.script.reader.map(|r| r.client),
            None => None,
        };
        let reply = match self.begin_command(&row.spec, args, now, writer, event) {
            Ok(()) => (row.run)(self, args, now),
            Err(refused) => {
                self.refused = true;
                refused
            }
        };
        self.end_command(args, &reply, reader);
        if script && !self.is_paused() {
            self.script.reader = None;
            self.script.keys.clear();
        }
        reply
    }
}
