//! Access control: users, their rules (Redis 7's ACL SETUSER language), and the check every
//! request passes before it is planned.
//!
//! The users are one table for the whole server ([`Acl`], in `Shared`, versioned); each
//! connection holds a snapshot of its own user, refreshed when the version moves, so the check
//! on the command path reads no lock. A user allows a set of commands (by their place in the
//! command table, plus `cmd|subcommand` exceptions), key patterns with read and/or write
//! permission, and channel patterns. Passwords are kept only as SHA-256 digests and compared in
//! constant time. The `default` user is the one `requirepass` sets: `nopass` without it.
//!
//! The file form (`aclfile`, ACL SAVE/LOAD) is Redis's: one `user <name> <rules...>` per line.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use moon_store::command::CommandSpec;

use crate::catalog;
use moon_store::glob::glob_match;
use sha2::{Digest, Sha256};

/// The categories Moon's command table assigns (`ACL CAT`).
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "hash",
    "list",
    "sortedset",
    "bitmap",
    "string",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// A key pattern and what it allows (`~p` both, `%R~p` read, `%W~p` write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPattern {
    pub pattern: Bytes,
    pub read: bool,
    pub write: bool,
}

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    /// SHA-256 digests of the passwords.
    pub passwords: Vec<[u8; 32]>,
    /// Allowed commands, indexed by their id ([`catalog::id`]).
    allowed: Vec<bool>,
    /// `+cmd|sub` / `-cmd|sub` exceptions: (command, subcommand lower-case, allowed).
    subcommands: Vec<(&'static str, String, bool)>,
    /// The command rules as given since the last `+@all`/`-@all` (ACL LIST shows them).
    command_rules: Vec<String>,
    pub keys: Vec<KeyPattern>,
    pub channels: Vec<Bytes>,
    /// Every command, key and channel allowed (computed after each change: the common
    /// case skips the check on the command path).
    open: bool,
    /// Set when the user is created, kept by every change: a user deleted and created again
    /// under the same name is another user (its old connections are closed).
    pub generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Why a request was refused (the ACL LOG's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    Command,
    Key,
    Channel,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Command => "command",
            Denied::Key => "key",
            Denied::Channel => "channel",
        }
    }
}

fn index_of(spec: &CommandSpec) -> usize {
    catalog::id(spec)
}

fn in_category(spec: &CommandSpec, cat: &str) -> bool {
    cat == "all" || spec.acl_categories().iter().any(|c| &c[1..] == cat)
}

/// Whether a command reads the value of its keys (needs `%R`), writes them (needs `%W`), or
/// both — Redis's key specs, simplified: writes that return or build on the old value need
/// both.
fn key_access(spec: &CommandSpec, args: &[Bytes]) -> (bool, bool) {
    // SET ... GET returns the old value: it reads too.
    if spec.name == "set" && args[3..].iter().any(|a| a.eq_ignore_ascii_case(b"get")) {
        return (true, true);
    }
    // Commands that neither read a value nor change one (EXISTS, TYPE, TTL...): any
    // permission on the key will do (Redis's key specs without ACCESS or a write flag).
    if matches!(
        spec.name,
        "exists"
            | "type"
            | "ttl"
            | "pttl"
            | "expiretime"
            | "pexpiretime"
            | "touch"
            | "object"
            | "memory"
    ) {
        return (false, false);
    }
    if spec.is_write() {
        let reads = matches!(
            spec.name,
            "getset"
                | "getdel"
                | "getex"
                | "incr"
                | "decr"
                | "incrby"
                | "decrby"
                | "incrbyfloat"
                | "append"
                | "setrange"
                | "hincrby"
                | "hincrbyfloat"
                | "spop"
                | "smove"
                | "rename"
                | "renamenx"
                | "copy"
                | "move"
                | "sinterstore"
                | "sunionstore"
                | "sdiffstore"
                | "lpop"
                | "rpop"
                | "lmove"
                | "rpoplpush"
                | "lmpop"
                | "zpopmin"
                | "zpopmax"
                | "zmpop"
                | "zrangestore"
                | "zunionstore"
                | "zinterstore"
                | "zdiffstore"
        );
        (reads, true)
    } else {
        (true, false)
    }
}

impl User {
    /// A new user as ACL SETUSER creates it: off, no password, no commands, keys or channels.
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            allowed: vec![false; catalog::count()],
            subcommands: Vec::new(),
            command_rules: vec!["-@all".into()],
            keys: Vec::new(),
            channels: Vec::new(),
            open: false,
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// `default` as a fresh server has it: on, `nopass`, every key, channel and command; with
    /// `requirepass`, that password instead of `nopass`.
    pub fn default_user(requirepass: Option<&str>) -> User {
        let mut u = User::new("default");
        let mut rules = vec!["on".to_string(), "~*".into(), "&*".into(), "+@all".into()];
        match requirepass {
            Some(p) => rules.push(format!(">{p}")),
            None => rules.push("nopass".into()),
        }
        for r in rules {
            let _ = u.apply(&r);
        }
        u
    }

    /// Every command, key and channel: the check can be skipped.
    pub fn unrestricted(&self) -> bool {
        self.open
    }

    fn compute_open(&self) -> bool {
        self.allowed.iter().all(|&a| a)
            && self.subcommands.is_empty()
            && self
                .keys
                .iter()
                .any(|k| &k.pattern[..] == b"*" && k.read && k.write)
            && self.channels.iter().any(|c| &c[..] == b"*")
    }

    /// Applies one rule; the error is Redis's text for a bad one.
    pub fn apply(&mut self, rule: &str) -> Result<(), String> {
        let r = self.apply_rule(rule);
        self.open = self.compute_open();
        r
    }

    fn apply_rule(&mut self, rule: &str) -> Result<(), String> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => return self.apply("~*"),
            "resetkeys" => self.keys.clear(),
            "allchannels" => return self.apply("&*"),
            "resetchannels" => self.channels.clear(),
            "allcommands" => return self.apply("+@all"),
            "nocommands" => return self.apply("-@all"),
            "reset" => {
                for r in ["resetpass", "resetkeys", "resetchannels", "off", "-@all"] {
                    self.apply(r)?;
                }
            }
            _ => return self.apply_operand(rule),
        }
        Ok(())
    }

    fn apply_operand(&mut self, rule: &str) -> Result<(), String> {
        // A pattern with spaces or control characters would not survive the aclfile (one
        // user per line, rules split on spaces).
        let is_pattern = rule.starts_with(['~', '%', '&']);
        if is_pattern && rule.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("The ACL rule contains spaces or control characters".into());
        }
        if let Some(p) = rule.strip_prefix('>') {
            let d: [u8; 32] = Sha256::digest(p.as_bytes()).into();
            if !self.passwords.contains(&d) {
                self.passwords.push(d);
            }
            self.nopass = false;
        } else if let Some(p) = rule.strip_prefix('<') {
            let d: [u8; 32] = Sha256::digest(p.as_bytes()).into();
            let before = self.passwords.len();
            self.passwords.retain(|x| *x != d);
            if self.passwords.len() == before {
                return Err("no such password".into());
            }
        } else if let Some(h) = rule.strip_prefix('#') {
            let d = parse_hash(h).ok_or("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")?;
            if !self.passwords.contains(&d) {
                self.passwords.push(d);
            }
            self.nopass = false;
        } else if let Some(h) = rule.strip_prefix('!') {
            let d = parse_hash(h).ok_or("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")?;
            let before = self.passwords.len();
            self.passwords.retain(|x| *x != d);
            if self.passwords.len() == before {
                return Err("no such password".into());
            }
        } else if let Some(p) = rule.strip_prefix('~') {
            self.add_keys(p, true, true);
        } else if let Some(rest) = rule.strip_prefix('%') {
            let (perm, p) = rest.split_once('~').ok_or("Syntax error")?;
            let perm = perm.to_ascii_uppercase();
            if perm.is_empty() || !perm.chars().all(|c| c == 'R' || c == 'W') {
                return Err("Syntax error".into());
            }
            self.add_keys(p, perm.contains('R'), perm.contains('W'));
        } else if let Some(p) = rule.strip_prefix('&') {
            let p = Bytes::copy_from_slice(p.as_bytes());
            if &p[..] == b"*" {
                self.channels = vec![p];
            } else if !self.channels.contains(&p) {
                self.channels.push(p);
            }
        } else if let Some(r) = rule.strip_prefix('+') {
            self.command_rule(r, true)?;
        } else if let Some(r) = rule.strip_prefix('-') {
            self.command_rule(r, false)?;
        } else if rule.starts_with('(') {
            return Err("Selectors are not supported by Moon".into());
        } else {
            return Err("Syntax error".into());
        }
        Ok(())
    }

    fn add_keys(&mut self, pattern: &str, read: bool, write: bool) {
        let p = Bytes::copy_from_slice(pattern.as_bytes());
        if &p[..] == b"*" && read && write {
            self.keys = vec![KeyPattern {
                pattern: p,
                read,
                write,
            }];
            return;
        }
        match self.keys.iter_mut().find(|k| k.pattern == p) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern {
                pattern: p,
                read,
                write,
            }),
        }
    }

    fn command_rule(&mut self, what: &str, allow: bool) -> Result<(), String> {
        let lower = what.to_ascii_lowercase();
        let sign = if allow { '+' } else { '-' };
        if let Some(cat) = lower.strip_prefix('@') {
            if cat != "all" && !CATEGORIES.contains(&cat) {
                return Err("Unknown command or category name in ACL".into());
            }
            for (i, spec) in catalog::specs().enumerate() {
                if in_category(spec, cat) {
                    if let Some(a) = self.allowed.get_mut(i) {
                        *a = allow;
                    }
                }
            }
            self.subcommands.retain(|(cmd, _, _)| {
                catalog::lookup(cmd.as_bytes()).is_some_and(|e| !in_category(e.spec, cat))
            });
            if cat == "all" {
                self.command_rules.clear();
            }
        } else if let Some((cmd, sub)) = lower.split_once('|') {
            let spec = catalog::lookup(cmd.as_bytes())
                .map(|e| e.spec)
                .ok_or("Unknown command or category name in ACL")?;
            if sub.is_empty() || sub.contains('|') {
                return Err("Unknown command or category name in ACL".into());
            }
            self.subcommands
                .retain(|(c, s, _)| !(*c == spec.name && s == sub));
            self.subcommands.push((spec.name, sub.to_string(), allow));
        } else {
            let spec = catalog::lookup(lower.as_bytes())
                .map(|e| e.spec)
                .ok_or("Unknown command or category name in ACL")?;
            if let Some(a) = self.allowed.get_mut(index_of(spec)) {
                *a = allow;
            }
            self.subcommands.retain(|(c, _, _)| *c != spec.name);
        }
        self.command_rules.push(format!("{sign}{lower}"));
        Ok(())
    }

    /// Whether the user may run `spec` with `args` (command and subcommand only).
    pub fn may_run(&self, spec: &CommandSpec, args: &[Bytes]) -> bool {
        if let Some(sub) = args.get(1) {
            if let Some((_, _, allow)) = self
                .subcommands
                .iter()
                .rev()
                .find(|(c, s, _)| *c == spec.name && sub.eq_ignore_ascii_case(s.as_bytes()))
            {
                return *allow;
            }
        }
        self.allowed.get(index_of(spec)).copied().unwrap_or(false)
    }

    fn key_allowed(&self, key: &[u8], read: bool, write: bool) -> bool {
        if !read && !write {
            // Metadata only (EXISTS, TYPE, MEMORY USAGE...): any permission on the key.
            return self.keys.iter().any(|k| glob_match(&k.pattern, key));
        }
        let r = !read
            || self
                .keys
                .iter()
                .any(|k| k.read && glob_match(&k.pattern, key));
        let w = !write
            || self
                .keys
                .iter()
                .any(|k| k.write && glob_match(&k.pattern, key));
        r && w
    }

    /// Whether the user may keep these subscriptions (after its rules changed).
    pub fn may_keep(&self, channels: &[&Bytes], patterns: &[&Bytes]) -> bool {
        channels.iter().all(|c| self.channel_allowed(c, false))
            && patterns.iter().all(|p| self.channel_allowed(p, true))
    }

    fn channel_allowed(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.channels.iter().any(|c| {
            &c[..] == b"*"
                || if is_pattern {
                    &c[..] == channel
                } else {
                    glob_match(c, channel)
                }
        })
    }

    /// The whole check of one request: the command, then every key, then every channel. On a
    /// refusal, why and the object (the command's name, the key, the channel).
    pub fn check(&self, spec: &CommandSpec, args: &[Bytes]) -> Result<(), (Denied, String)> {
        if !self.may_run(spec, args) {
            let name = match args.get(1) {
                Some(sub) if self.subcommands.iter().any(|(c, _, _)| *c == spec.name) => {
                    format!(
                        "{}|{}",
                        spec.name,
                        String::from_utf8_lossy(sub).to_lowercase()
                    )
                }
                _ => spec.name.to_string(),
            };
            return Err((Denied::Command, name));
        }
        let (read, write) = key_access(spec, args);
        let keys: Vec<&Bytes> =
            // Keyspace commands, and the connection's own that name keys (WATCH, MEMORY USAGE).
            if matches!(spec.route, moon_store::command::Route::Keys(_)) || spec.first_key > 0 {
                spec.keys(args).collect()
            } else {
                Vec::new()
            };
        for key in keys {
            if !self.key_allowed(key, read, write) {
                return Err((Denied::Key, String::from_utf8_lossy(key).into_owned()));
            }
        }
        let channels: &[Bytes] = match spec.name {
            "subscribe" | "ssubscribe" | "psubscribe" => &args[1..],
            "publish" | "spublish" => &args[1..2],
            _ => &[],
        };
        for ch in channels {
            if !self.channel_allowed(ch, spec.name == "psubscribe") {
                return Err((Denied::Channel, String::from_utf8_lossy(ch).into_owned()));
            }
        }
        Ok(())
    }

    /// Whether `password` is one of the user's (constant time over the digests).
    pub fn password_ok(&self, password: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        let d: [u8; 32] = Sha256::digest(password).into();
        let mut ok = false;
        for p in &self.passwords {
            ok |= p
                .iter()
                .zip(d.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        }
        ok
    }

    /// The user as ACL LIST and the aclfile write it.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "user {} {}",
            self.name,
            if self.enabled { "on" } else { "off" }
        );
        if self.nopass {
            out.push_str(" nopass");
        }
        for p in &self.passwords {
            out.push_str(" #");
            out.push_str(&hex(p));
        }
        out.push(' ');
        out.push_str(&self.keys_text());
        out.push(' ');
        out.push_str(&self.channels_text());
        out.push(' ');
        out.push_str(&self.commands_text());
        out
    }

    pub fn keys_text(&self) -> String {
        if self.keys.is_empty() {
            return "resetkeys".into();
        }
        self.keys
            .iter()
            .map(|k| {
                let p = String::from_utf8_lossy(&k.pattern);
                match (k.read, k.write) {
                    (true, true) => format!("~{p}"),
                    (true, false) => format!("%R~{p}"),
                    _ => format!("%W~{p}"),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn channels_text(&self) -> String {
        if self.channels.is_empty() {
            return "resetchannels".into();
        }
        self.channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn commands_text(&self) -> String {
        let mut rules = self.command_rules.clone();
        if rules.first().is_none_or(|r| r != "+@all" && r != "-@all") {
            rules.insert(0, "-@all".into());
        }
        rules.join(" ")
    }

    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        f
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(h: &str) -> Option<[u8; 32]> {
    if h.len() != 64
        || !h
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Every user of the server.
#[derive(Clone, Debug)]
pub struct Acl {
    pub users: Vec<Arc<User>>,
}

impl Acl {
    pub fn new(requirepass: Option<&str>) -> Acl {
        Acl {
            users: vec![Arc::new(User::default_user(requirepass))],
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.users.iter().find(|u| u.name == name).cloned()
    }

    /// Creates or changes a user with `rules`, all or nothing.
    pub fn set_user(&mut self, name: &str, rules: &[String]) -> Result<(), String> {
        let mut user = match self.get(name) {
            Some(u) => (*u).clone(),
            None => User::new(name),
        };
        for r in rules {
            user.apply(r)
                .map_err(|e| format!("Error in ACL SETUSER modifier '{r}': {e}"))?;
        }
        let user = Arc::new(user);
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(slot) => *slot = user,
            None => self.users.push(user),
        }
        Ok(())
    }

    /// The `default` user's password follows `requirepass` (CONFIG SET).
    pub fn set_requirepass(&mut self, pass: Option<&str>) {
        let rule = match pass {
            Some(p) => vec!["resetpass".to_string(), format!(">{p}")],
            None => vec!["nopass".to_string()],
        };
        let _ = self.set_user("default", &rule);
    }

    /// Parses an aclfile; the error names the line.
    pub fn parse_file(text: &str, path: &str) -> Result<Acl, String> {
        let mut acl = Acl { users: Vec::new() };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            if words[0] != "user" || words.len() < 2 {
                return Err(format!(
                    "{path}:{}: line should start with user keyword",
                    n + 1
                ));
            }
            let name = &words[1];
            if acl.get(name).is_some() {
                return Err(format!("{path}:{}: duplicate user '{name}' found", n + 1));
            }
            acl.set_user(name, &words[2..])
                .map_err(|e| format!("{path}:{}: {e}", n + 1))?;
        }
        if acl.get("default").is_none() {
            acl.users.insert(0, Arc::new(User::default_user(None)));
        }
        Ok(acl)
    }

    /// The aclfile text for these users.
    pub fn file_text(&self) -> String {
        let mut out = String::new();
        for u in &self.users {
            out.push_str(&u.describe());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> &'static CommandSpec {
        crate::commands::install();
        crate::catalog::lookup(name.as_bytes()).unwrap().spec
    }

    fn args(words: &str) -> Vec<Bytes> {
        words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn rules_allow_and_deny_as_redis_does() {
        crate::commands::install();
        let mut acl = Acl::new(None);
        let rules: Vec<String> = "on >pw ~cache:* %R~ro:* &news +@read -hget +config|get"
            .split(' ')
            .map(str::to_string)
            .collect();
        acl.set_user("alice", &rules).unwrap();
        let u = acl.get("alice").unwrap();
        assert!(u.password_ok(b"pw") && !u.password_ok(b"nope"));
        assert!(u.check(spec("get"), &args("GET cache:1")).is_ok());
        assert_eq!(
            u.check(spec("get"), &args("GET other")).unwrap_err().0,
            Denied::Key
        );
        assert!(u.check(spec("get"), &args("GET ro:1")).is_ok());
        assert_eq!(
            u.check(spec("set"), &args("SET cache:1 v")).unwrap_err().0,
            Denied::Command
        );
        assert_eq!(
            u.check(spec("hget"), &args("HGET cache:1 f"))
                .unwrap_err()
                .0,
            Denied::Command
        );
        assert!(u.check(spec("config"), &args("CONFIG GET x")).is_ok());
        assert_eq!(
            u.check(spec("config"), &args("CONFIG SET x y"))
                .unwrap_err(),
            (Denied::Command, "config|set".into())
        );
        assert_eq!(
            u.describe(),
            format!(
                "user alice on #{} ~cache:* %R~ro:* &news -@all +@read -hget +config|get",
                hex(&Sha256::digest(b"pw"))
            )
        );
        let back = Acl::parse_file(&acl.file_text(), "f").unwrap();
        assert_eq!(back.get("alice").unwrap().describe(), u.describe());
        let e = Acl::parse_file("user bob on\nuser carol +nosuch\n", "/x/users.acl").unwrap_err();
        assert_eq!(
            e,
            "/x/users.acl:2: Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL"
        );
    }
}

/// ACL LOG keeps this many entries (Redis's `acllog-max-len` default).
const LOG_MAX: usize = 128;

/// One ACL LOG entry; repeats of the same refusal are counted in place, as Redis does.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub id: u64,
    pub count: u64,
    pub reason: &'static str,
    pub context: &'static str,
    pub object: String,
    pub username: String,
    pub created: u64,
    pub updated: u64,
    pub client_info: String,
}

#[derive(Default, Debug)]
pub struct AclLog {
    pub(crate) entries: VecDeque<LogEntry>,
    next_id: u64,
}

impl AclLog {
    pub fn add(
        &mut self,
        reason: &'static str,
        context: &'static str,
        object: &str,
        username: &str,
        client_info: String,
    ) {
        // Bounded: an unauthenticated client chooses the username it fails with.
        let object = clip(object);
        let username = clip(username);
        let now = moon_shard::now_ms();
        if let Some(e) = self.entries.iter_mut().find(|e| {
            e.reason == reason
                && e.context == context
                && e.object == object
                && e.username == username
        }) {
            e.count += 1;
            e.updated = now;
            e.client_info = client_info;
            return;
        }
        self.entries.push_front(LogEntry {
            id: self.next_id,
            count: 1,
            reason,
            context,
            object: object.to_string(),
            username: username.to_string(),
            created: now,
            updated: now,
            client_info,
        });
        self.next_id += 1;
        self.entries.truncate(LOG_MAX);
    }
}

/// At most 128 bytes of a log field (cut at a character boundary).
fn clip(s: &str) -> &str {
    if s.len() <= 128 {
        return s;
    }
    let mut end = 128;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
