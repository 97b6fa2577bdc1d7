//! The keyspace's command table: every family's rows, gathered once and indexed by name.
//!
//! The top of the command layer. Each family module (`store/string.rs`, `store/keys.rs`,
//! `store/hash.rs`, `store/set.rs`, `store/list.rs`, `store/zset.rs`, `store/hll.rs`, `store/geo.rs`...) declares its rows beside the functions they carry; this
//! module only lists the families. Lookups happen where a request is parsed (the server, which
//! adds its own connection-level rows to one index) and when a log is replayed; a [`Call`]
//! carries its row from there.

use bytes::Bytes;

use crate::call::{Call, KeyspaceCommand};
use crate::command::{find, sorted_index, NameIndex};
use crate::store::{
    bitmap, dump, geo, hash, hll, keys, lcs, list, script, set, sort, stream, string, zset,
};

/// Every keyspace command, family by family.
pub fn commands() -> impl Iterator<Item = &'static KeyspaceCommand> {
    [
        string::COMMANDS,
        keys::COMMANDS,
        dump::COMMANDS,
        hash::COMMANDS,
        set::COMMANDS,
        list::COMMANDS,
        zset::COMMANDS,
        sort::COMMANDS,
        bitmap::COMMANDS,
        hll::COMMANDS,
        geo::COMMANDS,
        stream::COMMANDS,
        lcs::COMMANDS,
        script::COMMANDS,
    ]
    .into_iter()
    .flatten()
}

/// Finds a keyspace command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static KeyspaceCommand> {
    static INDEX: std::sync::OnceLock<NameIndex<&'static KeyspaceCommand>> =
        std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| sorted_index(commands().map(|c| (c.spec.name, c))));
    find(index, name)
}

impl Call {
    /// A call of a command the caller built itself (the server's steps of a cross-shard
    /// command, replay checks), in database `db`. `None` for an unknown command or wrong
    /// arguments: a client's request is checked where it is parsed and never gets here.
    pub fn new(args: Vec<Bytes>, db: usize) -> Option<Call> {
        let command = lookup(args.first()?)?;
        command.spec.args_ok(args.len()).then_some(Call {
            command,
            args,
            db,
            track: None,
            event: None,
            user: None,
            client: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &str) -> Vec<Bytes> {
        words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn keys_of(words: &str) -> Option<Vec<String>> {
        let a = args(words);
        let spec = &lookup(&a[0])?.spec;
        spec.args_ok(a.len()).then(|| {
            spec.keys(&a)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        })
    }

    #[test]
    fn key_positions_come_from_the_table() {
        assert_eq!(keys_of("GET k"), Some(vec!["k".into()]));
        assert_eq!(keys_of("SET k v EX 10"), Some(vec!["k".into()]));
        assert_eq!(keys_of("MSET a 1 b 2"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys_of("MSET a 1 b"), None, "a key without its value");
        assert_eq!(keys_of("MSETNX a 1 b"), None);
        assert_eq!(keys_of("DEL a b c").map(|k| k.len()), Some(3));
        assert_eq!(keys_of("RENAME a b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys_of("KEYS *"), Some(vec![]));
        assert_eq!(keys_of("GET"), None, "wrong arity");
        assert_eq!(keys_of("GET a b"), None, "wrong arity");
        assert_eq!(
            keys_of("GEORADIUS src 1 2 3 km COUNT 5 STOREDIST dst"),
            Some(vec!["src".into(), "dst".into()])
        );
        assert_eq!(
            keys_of("GEORADIUSBYMEMBER src store 3 km"),
            Some(vec!["src".into()]),
            "a member named store is not the option"
        );
        assert_eq!(
            keys_of("GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km"),
            Some(vec!["dst".into(), "src".into()])
        );
    }

    #[test]
    fn every_command_is_found_in_any_case_and_nothing_else() {
        let mut names = std::collections::BTreeSet::new();
        for c in commands() {
            let name = c.spec.name;
            assert!(names.insert(name), "{name} is in the table twice");
            assert!(
                name.len() <= crate::command::MAX_NAME,
                "{name} is too long to look up"
            );
            assert_eq!(lookup(name.as_bytes()).map(|f| f.spec.name), Some(name));
            assert_eq!(
                lookup(name.to_ascii_uppercase().as_bytes()).map(|f| f.spec.name),
                Some(name)
            );
        }
        for missing in [
            &b""[..],
            b"nosuch",
            b"sett",
            b"ge",
            b"averyveryverylongcommandname",
            b"moon.db",
            b"moon.track",
        ] {
            assert!(lookup(missing).is_none());
        }
    }

    /// The server rebuilds a value on another shard (RENAME, COPY, MOVE across shards) from
    /// its rewrite form, as calls: every command of every type's rewrite form must be one the
    /// table accepts, or part of the value would be refused.
    #[test]
    fn every_rewrite_form_is_a_command_the_table_accepts() {
        const NOW: u64 = 1_700_000_000_000;
        let mut s = crate::Store::default();
        let run = |s: &mut crate::Store, words: &[&str]| {
            let reply = s.execute(&args(&words.join(" ")), NOW);
            assert!(!reply.is_error(), "{words:?}: {reply:?}");
        };
        run(&mut s, &["SET", "str", "v", "PX", "100000"]);
        run(&mut s, &["SET", "plain", "v"]);
        run(&mut s, &["APPEND", "big", &"x".repeat(5000)]);
        run(&mut s, &["HSET", "small-hash", "f", "v", "g", "w"]);
        run(
            &mut s,
            &["HPEXPIRE", "small-hash", "100000", "FIELDS", "1", "f"],
        );
        run(&mut s, &["SADD", "ints", "1", "2", "3"]);
        run(&mut s, &["SADD", "words", "a", "b"]);
        for i in 0..300 {
            run(
                &mut s,
                &["HSET", "big-hash", &format!("f{i}"), &"v".repeat(i % 70)],
            );
            run(&mut s, &["SADD", "big-set", &format!("m{i}")]);
        }
        run(
            &mut s,
            &["HPEXPIRE", "big-hash", "100000", "FIELDS", "2", "f1", "f2"],
        );
        run(&mut s, &["PEXPIRE", "big-set", "100000"]);
        let chunk = crate::Chunk {
            items: 7,
            bytes: 1000,
        };
        let mut checked = 0;
        for key in [
            "str",
            "plain",
            "big",
            "small-hash",
            "ints",
            "words",
            "big-hash",
            "big-set",
        ] {
            let key = Bytes::from(key);
            let (value, at) = s.peek_entry(&key, NOW).expect("the key exists");
            for cmd in value.rewrite_commands(&key, at, chunk) {
                assert!(Call::new(cmd.clone(), 3).is_some(), "refused: {cmd:?}");
                checked += 1;
            }
        }
        assert!(checked > 90, "only {checked} commands checked");
    }

    /// ACL's `@dangerous` comes from the row's flags (ADMIN or DANGEROUS), not from names.
    #[test]
    fn dangerous_commands_are_flagged_in_their_rows() {
        for name in ["flushall", "flushdb", "keys", "swapdb"] {
            let spec = &lookup(name.as_bytes()).expect("in the table").spec;
            assert!(
                spec.acl_categories().contains(&"@dangerous"),
                "{name}: {:?}",
                spec.acl_categories()
            );
            assert!(
                !spec.flags.names().any(|n| n == "dangerous"),
                "COMMAND shows no such flag"
            );
        }
        for name in ["get", "del", "scan"] {
            let spec = &lookup(name.as_bytes()).expect("in the table").spec;
            assert!(!spec.acl_categories().contains(&"@dangerous"), "{name}");
        }
    }
}
