//! COMMAND: the command table as Redis clients read it (COUNT, INFO, DOCS, GETKEYS, LIST).

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::eq;
use moon_store::command::{CommandSpec, Flags};
use moon_store::reply::{self, err};

pub(crate) fn command_info(c: &CommandSpec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(c.name),
        Frame::Integer(i64::from(c.arity)),
        Frame::Array(
            c.flags
                .names()
                .chain(movable_keys(c).then_some("movablekeys"))
                .map(Frame::Simple)
                .collect(),
        ),
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
    // A `container|subcommand` name is no command of its own here: COMMAND INFO answers nil.
    let named = |a: &Bytes| crate::catalog::lookup(a).map(|e| e.spec);
    if eq(sub, "count") {
        Frame::Integer(public().count() as i64)
    } else if eq(sub, "getkeys") || eq(sub, "getkeysandflags") {
        let with_flags = eq(sub, "getkeysandflags");
        if args.len() < 3 {
            return reply::wrong_arity(if with_flags {
                "command|getkeysandflags"
            } else {
                "command|getkeys"
            });
        }
        let Some(spec) = named(&args[2]) else {
            return err("ERR Invalid command specified");
        };
        let request = &args[2..];
        if !spec.args_ok(request.len()) {
            return err("ERR Invalid arguments specified for command");
        }
        let keys: Vec<Frame> = spec
            .keys(request)
            .enumerate()
            .map(|(nth, k)| {
                let key = Frame::Bulk(k.clone());
                if !with_flags {
                    return key;
                }
                let flags = key_flags(spec, nth).split(' ').map(Frame::Simple);
                Frame::Array(vec![key, Frame::Array(flags.collect())])
            })
            .collect();
        // A command whose arguments decide its keys answers the ones this call names, maybe
        // none (EVAL with 0 keys); a call naming no key otherwise is an error (MEMORY STATS).
        if keys.is_empty() && !movable_keys(spec) {
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
        command_list(&args[2..])
    } else if eq(sub, "help") {
        Frame::Array(
            [
                "COMMAND",
                "COUNT",
                "INFO [<command-name> ...]",
                "DOCS [<command-name> ...]",
                "GETKEYS <full-command>",
                "GETKEYSANDFLAGS <full-command>",
                "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        )
    } else {
        reply::unknown_subcommand(sub, "command")
    }
}

/// The subcommands of Moon's container commands, as COMMAND LIST names them
/// (`config|get`); each takes its container's ACL categories.
const SUBCOMMANDS: &[(&str, &[&str])] = &[
    (
        "acl",
        &[
            "cat", "deluser", "dryrun", "genpass", "getuser", "help", "list", "load", "log",
            "save", "setuser", "users", "whoami",
        ],
    ),
    (
        "client",
        &[
            "caching",
            "getname",
            "getredir",
            "help",
            "id",
            "info",
            "kill",
            "list",
            "no-evict",
            "no-touch",
            "pause",
            "reply",
            "setinfo",
            "setname",
            "tracking",
            "trackinginfo",
            "unblock",
            "unpause",
        ],
    ),
    (
        "cluster",
        &[
            "help", "info", "keyslot", "myid", "nodes", "shards", "slots",
        ],
    ),
    (
        "command",
        &[
            "count",
            "docs",
            "getkeys",
            "getkeysandflags",
            "help",
            "info",
            "list",
        ],
    ),
    ("config", &["get", "help", "resetstat", "rewrite", "set"]),
    (
        "function",
        &[
            "delete", "dump", "flush", "help", "kill", "list", "load", "restore", "stats",
        ],
    ),
    (
        "latency",
        &[
            "doctor",
            "graph",
            "help",
            "histogram",
            "history",
            "latest",
            "reset",
        ],
    ),
    (
        "memory",
        &["doctor", "help", "malloc-stats", "purge", "stats", "usage"],
    ),
    ("module", &["help", "list", "load", "loadex", "unload"]),
    (
        "object",
        &["encoding", "freq", "help", "idletime", "refcount"],
    ),
    (
        "pubsub",
        &[
            "channels",
            "help",
            "numpat",
            "numsub",
            "shardchannels",
            "shardnumsub",
        ],
    ),
    ("script", &["exists", "flush", "help", "kill", "load"]),
    ("slowlog", &["get", "help", "len", "reset"]),
    (
        "xgroup",
        &[
            "create",
            "createconsumer",
            "delconsumer",
            "destroy",
            "help",
            "setid",
        ],
    ),
    ("xinfo", &["consumers", "groups", "help", "stream"]),
];

/// COMMAND LIST [FILTERBY MODULE m | ACLCAT c | PATTERN p]: every command and subcommand
/// name (`config|get`), or those the filter keeps.
fn command_list(options: &[Bytes]) -> Frame {
    enum Filter<'a> {
        All,
        Module,
        Category(&'a [u8]),
        Pattern(&'a [u8]),
    }
    let filter = match options {
        [] => Filter::All,
        [by, kind, value] if eq(by, "filterby") => {
            if eq(kind, "module") {
                Filter::Module
            } else if eq(kind, "aclcat") {
                Filter::Category(value)
            } else if eq(kind, "pattern") {
                Filter::Pattern(value)
            } else {
                return err("ERR syntax error");
            }
        }
        _ => return err("ERR syntax error"),
    };
    let mut names = Vec::new();
    for c in crate::catalog::specs() {
        let subs = SUBCOMMANDS
            .iter()
            .find(|(n, _)| *n == c.name)
            .map_or(&[][..], |(_, s)| *s);
        let in_category = |cat: &[u8]| {
            c.acl_categories()
                .iter()
                .any(|have| have.as_bytes()[1..].eq_ignore_ascii_case(cat))
        };
        let keep = |name: &str| match filter {
            Filter::All => true,
            Filter::Module => false, // Moon loads no modules
            Filter::Category(cat) => in_category(cat),
            Filter::Pattern(p) => {
                moon_store::glob::glob_match(&p.to_ascii_lowercase(), name.as_bytes())
            }
        };
        if keep(c.name) {
            names.push(Frame::bulk(c.name));
        }
        for sub in subs {
            let full = format!("{}|{sub}", c.name);
            if keep(&full) {
                names.push(Frame::bulk(full));
            }
        }
    }
    Frame::Array(names)
}

/// The flags of the `nth` key (counted among the keys [`CommandSpec::keys`] finds) of a call
/// of `c`, as COMMAND GETKEYSANDFLAGS shows them: what the command does with that key. `RO`
/// reads, `RW` reads and writes, `OW` overwrites whatever was there, `RM` removes; `access`
/// means the value (not just its metadata) reaches the client; `update`, `insert` and
/// `delete` say what a write does to it.
fn key_flags(c: &CommandSpec, nth: usize) -> &'static str {
    // Commands whose keys differ: (name, first key's flags, the other keys' flags).
    const BY_POSITION: &[(&str, &str, &str)] = &[
        ("lmove", "RW access delete", "RW insert"),
        ("blmove", "RW access delete", "RW insert"),
        ("rpoplpush", "RW access delete", "RW insert"),
        ("brpoplpush", "RW access delete", "RW insert"),
        ("smove", "RW access delete", "RW insert"),
        ("rename", "RW access delete", "OW update"),
        ("renamenx", "RW access delete", "OW insert"),
        ("copy", "RO access", "OW update"),
        ("sort", "RO access", "OW update"),
        ("georadius", "RO access", "OW update"),
        ("georadiusbymember", "RO access", "OW update"),
        ("geosearchstore", "OW update", "RO access"),
        ("zrangestore", "OW update", "RO access"),
        ("sunionstore", "OW update", "RO access"),
        ("sinterstore", "OW update", "RO access"),
        ("sdiffstore", "OW update", "RO access"),
        ("zunionstore", "OW update", "RO access"),
        ("zinterstore", "OW update", "RO access"),
        ("zdiffstore", "OW update", "RO access"),
        ("bitop", "OW update", "RO access"),
        ("pfmerge", "RW access insert", "RO access"),
    ];
    // Commands whose every key is treated alike, where the default below is wrong.
    const ALL_KEYS: &[(&str, &str)] = &[
        ("set", "OW update"),
        ("mset", "OW update"),
        ("setex", "OW update"),
        ("psetex", "OW update"),
        ("restore", "OW update"),
        ("setnx", "OW insert"),
        ("msetnx", "OW insert"),
        ("del", "RM delete"),
        ("unlink", "RM delete"),
        ("getdel", "RW access delete"),
        ("lpush", "RW insert"),
        ("rpush", "RW insert"),
        ("lpushx", "RW insert"),
        ("rpushx", "RW insert"),
        ("linsert", "RW insert"),
        ("sadd", "RW insert"),
        ("append", "RW insert"),
        ("pfadd", "RW insert"),
        ("lpop", "RW access delete"),
        ("rpop", "RW access delete"),
        ("blpop", "RW access delete"),
        ("brpop", "RW access delete"),
        ("lmpop", "RW access delete"),
        ("blmpop", "RW access delete"),
        ("spop", "RW access delete"),
        ("zpopmin", "RW access delete"),
        ("zpopmax", "RW access delete"),
        ("bzpopmin", "RW access delete"),
        ("bzpopmax", "RW access delete"),
        ("zmpop", "RW access delete"),
        ("bzmpop", "RW access delete"),
        ("srem", "RW delete"),
        ("hdel", "RW delete"),
        ("zrem", "RW delete"),
        ("lrem", "RW delete"),
        ("ltrim", "RW delete"),
        ("xdel", "RW delete"),
        ("xtrim", "RW delete"),
        ("zremrangebyscore", "RW delete"),
        ("zremrangebyrank", "RW delete"),
        ("zremrangebylex", "RW delete"),
        ("incr", "RW access update"),
        ("decr", "RW access update"),
        ("incrby", "RW access update"),
        ("decrby", "RW access update"),
        ("incrbyfloat", "RW access update"),
        ("getset", "RW access update"),
        ("getex", "RW access update"),
        ("setbit", "RW access update"),
        ("hincrby", "RW access update"),
        ("hincrbyfloat", "RW access update"),
        ("xreadgroup", "RW read"),
        ("exists", "RO"),
        ("type", "RO"),
        ("strlen", "RO"),
        ("object", "RO"),
        ("scard", "RO"),
        ("llen", "RO"),
        ("hlen", "RO"),
        ("zcard", "RO"),
        ("xlen", "RO"),
        ("hstrlen", "RO"),
        ("memory", "RO"),
        ("touch", "RO"),
        ("eval_ro", "RO access"),
        ("evalsha_ro", "RO access"),
        ("fcall_ro", "RO access"),
        ("eval", "RW access update"),
        ("evalsha", "RW access update"),
        ("fcall", "RW access update"),
    ];
    if let Some((_, first, rest)) = BY_POSITION.iter().find(|(n, _, _)| *n == c.name) {
        return if nth == 0 { first } else { rest };
    }
    if let Some((_, flags)) = ALL_KEYS.iter().find(|(n, _)| *n == c.name) {
        return flags;
    }
    if c.is_write() {
        "RW update"
    } else {
        "RO access"
    }
}

/// Redis's `movablekeys`: where the keys are depends on the arguments (a count, a STORE or
/// STREAMS option, BY/GET patterns), so first/last/step alone do not find them.
fn movable_keys(c: &CommandSpec) -> bool {
    c.numkeys_at > 0
        || c.flags.has(Flags::STORE_KEY)
        || c.flags.has(Flags::STREAMS_KEYS)
        || matches!(c.name, "sort" | "sort_ro")
}
