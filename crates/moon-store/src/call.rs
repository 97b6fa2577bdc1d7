//! A keyspace command as it travels to its shard: looked up and checked once, where the
//! request was parsed, and run as it is ([`Call`]); and the type of the functions the
//! keyspace's table rows carry ([`Handler`]).
//!
//! A call names its database, its tracking reader and its keyspace event as fields. The
//! marker commands earlier versions put in batches for these are gone; `MOON.DB` remains only
//! in the log's encoding (before a logged effect of another database).

use bytes::Bytes;
use moon_proto::Frame;

use crate::command::{Command, CommandSpec};
use crate::tracking::Reader;
use crate::Store;

/// What a keyspace row runs: the store, the request's arguments (the name first, arity and
/// key positions already checked against the row's spec), and the time (Unix milliseconds,
/// or [`crate::NO_EXPIRY_CHECK`] in replay).
pub type Handler = fn(&mut Store, &[Bytes], u64) -> Frame;

/// A row of the keyspace's table.
pub type KeyspaceCommand = Command<Handler>;

/// A keyspace command ready to run in a shard's store.
#[derive(Clone, Debug)]
pub struct Call {
    pub command: &'static KeyspaceCommand,
    pub args: Vec<Bytes>,
    /// The database it runs in.
    pub db: usize,
    /// The tracking client that sent it (CLIENT TRACKING): its reads are remembered for it,
    /// its writes name it as the writer (NOLOOP).
    pub track: Option<Reader>,
    /// The keyspace event its effects announce instead of their own (the halves of a RENAME,
    /// COPY or *STORE across shards, which run as plain DEL/SET/SADD...).
    pub event: Option<&'static str>,
    /// Who sent it, for the commands a script it runs calls (ACL inside scripts): `None` for
    /// a user who may run everything (or a call the server built itself).
    pub user: Option<ScriptUser>,
    /// The client that sent it (CLIENT ID), for the slow log; 0 for what the server runs by
    /// itself (a cross-shard command's steps, a script's calls, replay), which is not logged
    /// there.
    pub client: u64,
}

/// Checks the commands of a script against the permissions of the user who runs it.
pub trait Permissions: Send + Sync {
    /// The command `args` (its name first), before anything else looks at it: `Err` is the
    /// error `redis.call` raises (Redis's words), the refusal already logged. A command the
    /// server does not know passes (the script's host refuses it).
    fn check(&self, args: &[Bytes]) -> Result<(), Frame>;

    /// `redis.acl_check_cmd`: whether the user may run `args`, without logging a refusal;
    /// `None` for a command the server does not have.
    fn allows(&self, args: &[Bytes]) -> Option<bool>;
}

/// A script's user ([`Permissions`]), as a call carries it.
#[derive(Clone)]
pub struct ScriptUser(pub std::sync::Arc<dyn Permissions>);

impl std::fmt::Debug for ScriptUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptUser")
    }
}

impl Call {
    pub fn spec(&self) -> &'static CommandSpec {
        &self.command.spec
    }

    /// The same call announcing `event` (see [`Call::event`]).
    pub fn announcing(mut self, event: &'static str) -> Call {
        self.event = Some(event);
        self
    }
}
