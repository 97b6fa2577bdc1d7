//! What a script's `redis.call` reaches: the caller's host, synchronous ([`Host`], the
//! script's shard running each command at once) or suspending ([`AsyncHost`], a coordinator
//! sending each command to another shard and waiting for its reply).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use moon_proto::Frame;

/// Where a script's `redis.call` and `redis.pcall` go.
pub trait Host {
    /// Runs one command for the script (the name first) and returns its reply. A refusal is an
    /// error reply in Redis's words, e.g. `ERR Unknown Redis command called from script`.
    fn call(&mut self, args: Vec<Bytes>) -> Frame;

    /// `redis.acl_check_cmd`: whether the script's user may run `args` (the name first), not
    /// logged; `None` for a command the server does not have.
    fn acl_check(&mut self, args: &[Bytes]) -> Option<bool>;
}

/// A reply still on its way.
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Frame> + 'a>>;

/// Where a suspending script's `redis.call`s go: the coordinator, which sends each command to
/// its key's shard inside the transaction that holds them.
pub trait AsyncHost {
    fn call(&self, args: Vec<Bytes>) -> ReplyFuture<'_>;

    /// As [`Host::acl_check`].
    fn acl_check(&self, args: &[Bytes]) -> Option<bool>;
}

/// The host of the run in progress, and its RESP version.
#[derive(Clone, Default)]
pub(crate) struct Slot {
    pub(crate) host: Rc<RefCell<Option<Rc<dyn AsyncHost>>>>,
    pub(crate) resp: Rc<Cell<u8>>,
}
