//! Keyspace notifications: Redis's `notify-keyspace-events` classes, and which event each
//! change of the keyspace is.
//!
//! The store names an event for every effect it logs (the one place every change passes
//! through), for removals by expiry or eviction, and for keys created; the shard publishes
//! them once their records are safe. Nothing is collected while notifications are off.

use std::fmt;

use bytes::Bytes;

/// The event classes, as Redis's flag characters.
pub mod class {
    pub const GENERIC: u16 = 1 << 0; // g
    pub const STRING: u16 = 1 << 1; // $
    pub const LIST: u16 = 1 << 2; // l
    pub const SET: u16 = 1 << 3; // s
    pub const HASH: u16 = 1 << 4; // h
    pub const ZSET: u16 = 1 << 5; // z
    pub const EXPIRED: u16 = 1 << 6; // x
    pub const EVICTED: u16 = 1 << 7; // e
    pub const STREAM: u16 = 1 << 8; // t
    pub const MODULE: u16 = 1 << 9; // d
    pub const NEW: u16 = 1 << 10; // n
    pub const KEY_MISS: u16 = 1 << 11; // m
    pub const KEYSPACE: u16 = 1 << 12; // K
    pub const KEYEVENT: u16 = 1 << 13; // E
    /// `A`: every class but `m` and `n`.
    pub const ALL: u16 =
        GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;
}

const CHARS: [(char, u16); 14] = [
    ('g', class::GENERIC),
    ('$', class::STRING),
    ('l', class::LIST),
    ('s', class::SET),
    ('h', class::HASH),
    ('z', class::ZSET),
    ('x', class::EXPIRED),
    ('e', class::EVICTED),
    ('t', class::STREAM),
    ('d', class::MODULE),
    ('n', class::NEW),
    ('K', class::KEYSPACE),
    ('E', class::KEYEVENT),
    ('m', class::KEY_MISS),
];

/// Which notifications are on (`notify-keyspace-events`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifyFlags(pub u16);

impl NotifyFlags {
    /// Parses Redis's flag string; `None` for a character Redis does not know.
    pub fn parse(text: &str) -> Option<NotifyFlags> {
        let mut flags = 0;
        for c in text.chars() {
            flags |= match c {
                'A' => class::ALL,
                _ => CHARS.iter().find(|(ch, _)| *ch == c)?.1,
            };
        }
        Some(NotifyFlags(flags))
    }

    /// Whether events of `class` are published at all (a class and K or E must be on).
    pub fn wants(self, class: u16) -> bool {
        self.0 & class != 0 && self.0 & (class::KEYSPACE | class::KEYEVENT) != 0
    }

    pub fn keyspace(self) -> bool {
        self.0 & class::KEYSPACE != 0
    }

    pub fn keyevent(self) -> bool {
        self.0 & class::KEYEVENT != 0
    }

    pub fn is_off(self) -> bool {
        !self.wants(class::ALL | class::NEW | class::KEY_MISS)
    }
}

impl fmt::Display for NotifyFlags {
    /// Redis's canonical form: `A` when every class is on (Redis then leaves out `n`), else
    /// each class; then `K`, `E`, `m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if self.0 & class::ALL == class::ALL {
            out.push('A');
        } else {
            for (c, bit) in &CHARS[..11] {
                if self.0 & bit != 0 {
                    out.push(*c);
                }
            }
        }
        for (c, bit) in &CHARS[11..] {
            if self.0 & bit != 0 {
                out.push(*c);
            }
        }
        f.write_str(&out)
    }
}

/// One event about one key: published as `__keyspace@<db>__:<key>` → event and
/// `__keyevent@<db>__:<event>` → key, as the flags ask. With a `message`, a script's PUBLISH
/// instead: `message` on channel `key`, whatever the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    pub class: u16,
    pub event: &'static str,
    pub db: usize,
    pub key: Bytes,
    pub message: Option<Bytes>,
}

/// The events of one logged effect, given the client command that produced it: (class,
/// event) for each of the effect's keys. Commands whose keys get different events (RENAME,
/// MOVE, COPY, SMOVE) are named by [`keyed_events`] instead.
pub fn effect_event(command: &str, effect: &[u8]) -> Option<(u16, &'static str)> {
    use class::*;
    let e = effect.to_ascii_lowercase();
    Some(match &e[..] {
        b"del" | b"unlink" => (GENERIC, "del"),
        b"pexpireat" | b"expireat" | b"expire" | b"pexpire" => (GENERIC, "expire"),
        b"persist" => (GENERIC, "persist"),
        b"restore" => (GENERIC, "restore"),
        b"set" | b"mset" | b"msetnx" | b"setnx" | b"setex" | b"psetex" | b"getset" => match command
        {
            "incr" | "decr" | "incrby" | "decrby" => (STRING, "incrby"),
            "incrbyfloat" => (STRING, "incrbyfloat"),
            "copy" => (GENERIC, "copy_to"),
            "rename" | "renamenx" => (GENERIC, "rename_to"),
            "pfadd" | "pfmerge" => (STRING, "pfadd"),
            _ => (STRING, "set"),
        },
        b"append" => (STRING, "append"),
        b"setbit" | b"bitfield" => (STRING, "setbit"),
        b"setrange" => (STRING, "setrange"),
        b"pfadd" => (STRING, "pfadd"),
        b"incr" | b"decr" | b"incrby" | b"decrby" => (STRING, "incrby"),
        b"incrbyfloat" => (STRING, "incrbyfloat"),
        b"hset" | b"hmset" | b"hsetnx" => match command {
            "hincrby" => (HASH, "hincrby"),
            "hincrbyfloat" => (HASH, "hincrbyfloat"),
            "copy" => (GENERIC, "copy_to"),
            "rename" | "renamenx" => (GENERIC, "rename_to"),
            _ => (HASH, "hset"),
        },
        b"hdel" => (HASH, "hdel"),
        b"hincrby" => (HASH, "hincrby"),
        b"hincrbyfloat" => (HASH, "hincrbyfloat"),
        b"hexpire" | b"hpexpire" | b"hexpireat" | b"hpexpireat" => match command {
            "copy" | "rename" | "renamenx" | "hincrby" | "hincrbyfloat" => return None,
            _ => (HASH, "hexpire"),
        },
        b"hpersist" => (HASH, "hpersist"),
        b"sadd" => match command {
            "sinterstore" => (SET, "sinterstore"),
            "sunionstore" => (SET, "sunionstore"),
            "sdiffstore" => (SET, "sdiffstore"),
            "copy" => (GENERIC, "copy_to"),
            "rename" | "renamenx" => (GENERIC, "rename_to"),
            "smove" => (SET, "sadd"),
            _ => (SET, "sadd"),
        },
        b"srem" => match command {
            "spop" => (SET, "spop"),
            _ => (SET, "srem"),
        },
        b"rpush" => match command {
            "copy" => (GENERIC, "copy_to"),
            "rename" | "renamenx" => (GENERIC, "rename_to"),
            _ => (LIST, "rpush"),
        },
        b"lpush" => (LIST, "lpush"),
        b"lpushx" => (LIST, "lpush"),
        b"rpushx" => (LIST, "rpush"),
        b"lpop" => (LIST, "lpop"),
        b"rpop" => (LIST, "rpop"),
        b"lset" => (LIST, "lset"),
        b"linsert" => (LIST, "linsert"),
        b"lrem" => (LIST, "lrem"),
        b"ltrim" => (LIST, "ltrim"),
        b"zadd" => match command {
            "copy" => (GENERIC, "copy_to"),
            "rename" | "renamenx" => (GENERIC, "rename_to"),
            _ => (ZSET, "zadd"),
        },
        b"zincrby" => (ZSET, "zincr"),
        b"zrem" => (ZSET, "zrem"),
        b"zpopmin" => (ZSET, "zpopmin"),
        b"zpopmax" => (ZSET, "zpopmax"),
        b"zremrangebyrank" => (ZSET, "zremrangebyrank"),
        b"zremrangebyscore" => (ZSET, "zremrangebyscore"),
        b"zremrangebylex" => (ZSET, "zremrangebylex"),
        b"xadd" => match command {
            "copy" => (GENERIC, "copy_to"),
            "rename" | "renamenx" => (GENERIC, "rename_to"),
            _ => (STREAM, "xadd"),
        },
        b"xtrim" => (STREAM, "xtrim"),
        b"xdel" => (STREAM, "xdel"),
        b"xsetid" => match command {
            "copy" | "rename" | "renamenx" => return None,
            _ => (STREAM, "xsetid"),
        },
        _ => return None,
    })
}

/// `(class, event, index of the key in the effect, database or None for the command's own)`.
pub type KeyedEvent = (u16, &'static str, usize, Option<usize>);

/// Events of effects that name keys with different roles: `(class, event, key index,
/// database)` for each, where the database is `None` for the command's own.
pub fn keyed_events(effect: &[&[u8]]) -> Option<Vec<KeyedEvent>> {
    use class::*;
    let name = effect.first()?.to_ascii_lowercase();
    Some(match &name[..] {
        b"rename" | b"renamenx" => vec![
            (GENERIC, "rename_from", 1, None),
            (GENERIC, "rename_to", 2, None),
        ],
        b"smove" => vec![(SET, "srem", 1, None), (SET, "sadd", 2, None)],
        b"lmove" => {
            let from = if effect.get(3)?.eq_ignore_ascii_case(b"left") {
                "lpop"
            } else {
                "rpop"
            };
            let to = if effect.get(4)?.eq_ignore_ascii_case(b"left") {
                "lpush"
            } else {
                "rpush"
            };
            // Redis announces the push before the pop.
            vec![(LIST, to, 2, None), (LIST, from, 1, None)]
        }
        b"rpoplpush" => vec![(LIST, "lpush", 2, None), (LIST, "rpop", 1, None)],
        b"sinterstore" => vec![(SET, "sinterstore", 1, None)],
        b"sunionstore" => vec![(SET, "sunionstore", 1, None)],
        b"sdiffstore" => vec![(SET, "sdiffstore", 1, None)],
        b"zunionstore" => vec![(ZSET, "zunionstore", 1, None)],
        b"zinterstore" => vec![(ZSET, "zinterstore", 1, None)],
        b"zdiffstore" => vec![(ZSET, "zdiffstore", 1, None)],
        b"zrangestore" => vec![(ZSET, "zrangestore", 1, None)],
        b"geosearchstore" => vec![(ZSET, "geosearchstore", 1, None)],
        b"pfmerge" => vec![(STRING, "pfadd", 1, None)],
        b"xgroup" => {
            let sub = effect.get(1)?.to_ascii_lowercase();
            let event = match &sub[..] {
                b"create" => "xgroup-create",
                b"setid" => "xgroup-setid",
                b"destroy" => "xgroup-destroy",
                b"createconsumer" => "xgroup-createconsumer",
                b"delconsumer" => "xgroup-delconsumer",
                _ => return None,
            };
            vec![(STREAM, event, 2, None)]
        }
        b"georadius" | b"georadiusbymember" => vec![(
            ZSET,
            "georadiusstore",
            crate::command::store_option_at(effect)?,
            None,
        )],
        b"bitop" => vec![(STRING, "set", 2, None)],
        b"sort" => vec![(
            LIST,
            "sortstore",
            crate::command::store_option_at(effect)?,
            None,
        )],
        b"move" => {
            let db = crate::args::parse_i64(effect.get(2)?)?.max(0) as usize;
            vec![
                (GENERIC, "move_from", 1, None),
                (GENERIC, "move_to", 1, Some(db)),
            ]
        }
        b"copy" => {
            let mut db = None;
            let mut i = 3;
            while i < effect.len() {
                if effect[i].eq_ignore_ascii_case(b"db") {
                    db = effect
                        .get(i + 1)
                        .and_then(|d| crate::args::parse_i64(d))
                        .map(|d| d.max(0) as usize);
                    i += 1;
                }
                i += 1;
            }
            vec![(GENERIC, "copy_to", 2, db)]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_redis_does() {
        for (given, shown) in [
            ("gKE", "gKE"),
            ("$lshzxeKE", "$lshzxeKE"),
            ("KA", "AK"),
            ("EA", "AE"),
            ("", ""),
            ("AKEnm", "AKEm"),
            ("gnK", "gnK"),
        ] {
            assert_eq!(NotifyFlags::parse(given).unwrap().to_string(), shown);
        }
        assert!(NotifyFlags::parse("Q").is_none());
        assert!(!NotifyFlags::parse("g").unwrap().wants(class::GENERIC));
        assert!(NotifyFlags::parse("gK").unwrap().wants(class::GENERIC));
    }
}
