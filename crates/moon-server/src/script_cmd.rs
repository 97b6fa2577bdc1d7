//! SCRIPT LOAD / EXISTS / FLUSH / KILL / HELP: the process's script cache
//! (`moon_store::scripts`). EVAL and EVALSHA themselves are keyspace commands
//! (`moon_store`'s `store/script.rs`): they run on the shard of their keys.

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::eq;

use crate::session::Session;

pub(crate) fn script(_: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    if eq(sub, "load") && args.len() == 3 {
        return match moon_store::load_script(&args[2]) {
            Ok(sha) => Frame::Bulk(Bytes::from(sha)),
            Err(e) => e,
        };
    }
    if eq(sub, "exists") && args.len() >= 3 {
        return Frame::Array(
            args[2..]
                .iter()
                .map(|sha| Frame::Integer(i64::from(moon_store::scripts::exists(sha))))
                .collect(),
        );
    }
    if eq(sub, "flush") && args.len() <= 3 {
        if let Some(mode) = args.get(2) {
            if !eq(mode, "async") && !eq(mode, "sync") {
                return Frame::StaticError("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
            }
        }
        moon_store::scripts::flush();
        return Frame::OK;
    }
    if eq(sub, "kill") && args.len() == 2 {
        // Only a busy script can be killed, one that has not written (watch.rs).
        return match moon_script::kill(false) {
            Ok(()) => Frame::OK,
            Err(refused) => Frame::StaticError(refused),
        };
    }
    if eq(sub, "help") && args.len() == 2 {
        return Frame::Array(
            [
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache. Very dangerous on replicas.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Frame::Simple)
            .collect(),
        );
    }
    Frame::Error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try SCRIPT HELP.",
        String::from_utf8_lossy(sub)
    ))
}
