//! COMMAND: the command table as Redis clients read it (COUNT, INFO, DOCS, GETKEYS, LIST).

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::eq;
use moon_store::command::CommandSpec;
use moon_store::reply::{self, err};

pub(crate) fn command_info(c: &CommandSpec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(c.name),
        Frame::Integer(i64::from(c.arity)),
        Frame::Array(c.flags.names().map(Frame::Simple).collect()),
        Frame::Integer(i64::from(c.first_key)),
        Frame::Integer(i64::from(c.last_key)),
        Frame::Integer(i64::from(c.step)),
        Frame::Array(c.acl_categories().into_iter().map(Frame::Simple).collect()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

pub(crate) fn command_doc(c: &CommandSpec) -> Frame {
    let group = c.group.as_str();
    Frame::Map(vec![
        (
            Frame::bulk("summary"),
            Frame::bulk(format!(
                "Redis-compatible {} command",
                c.name.to_ascii_uppercase()
            )),
        ),
        (Frame::bulk("since"), Frame::bulk("1.0.0")),
        (Frame::bulk("group"), Frame::bulk(group)),
    ])
}

pub(crate) fn command(args: &[Bytes]) -> Frame {
    let public = crate::catalog::specs;
    let Some(sub) = args.get(1) else {
        return Frame::Array(public().map(command_info).collect());
    };
    let named = |a: &Bytes| crate::catalog::lookup(a).map(|e| e.spec);
    if eq(sub, "count") {
        Frame::Integer(public().count() as i64)
    } else if eq(sub, "getkeys") {
        if args.len() < 3 {
            return reply::wrong_arity("command|getkeys");
        }
        let Some(spec) = named(&args[2]) else {
            return err("ERR Invalid command specified");
        };
        let request = &args[2..];
        if !spec.args_ok(request.len()) {
            return err("ERR Invalid arguments specified for command");
        }
        let keys: Vec<Frame> = spec.keys(request).map(|k| Frame::Bulk(k.clone())).collect();
        if keys.is_empty() {
            return err("ERR The command has no key arguments");
        }
        Frame::Array(keys)
    } else if eq(sub, "info") {
        if args.len() == 2 {
            return Frame::Array(public().map(command_info).collect());
        }
        Frame::Array(
            args[2..]
                .iter()
                .map(|a| named(a).map_or(Frame::Null, command_info))
                .collect(),
        )
    } else if eq(sub, "docs") {
        let list: Vec<&CommandSpec> = if args.len() == 2 {
            public().collect()
        } else {
            args[2..].iter().filter_map(named).collect()
        };
        Frame::Map(
            list.into_iter()
                .map(|c| (Frame::bulk(c.name), command_doc(c)))
                .collect(),
        )
    } else if eq(sub, "list") {
        Frame::Array(public().map(|c| Frame::bulk(c.name)).collect())
    } else if eq(sub, "help") {
        Frame::Array(
            [
                "COMMAND",
                "COUNT",
                "INFO [<command-name> ...]",
                "DOCS [<command-name> ...]",
                "GETKEYS <full-command>",
                "LIST",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        )
    } else {
        reply::unknown_subcommand(sub, "command")
    }
}
