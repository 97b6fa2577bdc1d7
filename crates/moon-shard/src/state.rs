//! Plain data the shard's modules share, at the bottom of the crate: the runtime's settings, a
//! transaction's identity and clock, the chains its steps travel in, how a commit step failed,
//! what a rewrite's cut left.
//! Behaviour lives above it (`shard`, `txn`, `rewrite`, `runtime`); this imports nothing from
//! them.

/// What the runtime needs to know to start the shards.
#[derive(Clone, Debug)]
pub struct ShardSetConfig {
    pub shards: usize,
    /// Pin shard `i` to CPU `i % cpus`. Off in tests that run many servers on a small machine.
    pub pin: bool,
    /// `proto-max-bulk-len`, the largest string a command may build.
    pub max_string_len: usize,
}

/// A transaction's identity: unique across shards and restarts (a random id of the run is part
/// of it), so recovery can match the parts of one transaction in different shards' logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxId {
    pub(crate) boot: u64,
    pub(crate) shard: u32,
    pub(crate) n: u64,
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}-{}-{}", self.boot, self.shard, self.n)
    }
}

/// A running cross-shard transaction, as its steps carry it: its id, and its clock — the one
/// `now` that every command it runs sees, on every shard (taken once all its shards are
/// locked, so it is never earlier than anything that ran before it there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx {
    pub id: TxId,
    pub now: u64,
}

/// A participant's held transaction part, as its commit reports it: its LSNs, and whether no
/// other hold was left below it on its log once it was releasable (`crate::txn`).
#[cfg(feature = "runtime")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeldPart {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) clear: bool,
}

/// Why a participant's commit step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitFailure {
    /// A part that holds none of the transaction's writes: its log failed before what it
    /// read was safe. Nothing of the transaction is at stake there; the reply is an error.
    Read(String),
    /// A part with the transaction's writes (or its shard is gone): it may be missing from the
    /// log while other parts are durable.
    Part(String),
}

/// What the cut left for the next steps.
#[cfg(feature = "runtime")]
pub(crate) struct Cut {
    /// The base being written from the snapshot (taken by the step that writes it).
    pub(crate) base: Option<crate::base::BaseCut>,
    pub(crate) first_lsn: u64,
    pub(crate) last_lsn: u64,
    /// The incr file's length at the cut: records after it are the tail to carry over.
    pub(crate) tail_from: u64,
    /// The tail's copy into the new incr, between its part made while serving and the rest.
    pub(crate) tail: Option<crate::tail::Tail>,
    /// The files this rewrite created (only these may be deleted by an abort).
    pub(crate) created: Vec<std::path::PathBuf>,
}

/// The outcome, still to come, of a part logged as it ran (`Shard::tx_lock_run_last`,
/// `Shard::tx_exec_commit`, `Shard::tx_run_chain`).
#[cfg(feature = "runtime")]
pub struct EarlyPart(
    pub(crate) futures_channel::oneshot::Receiver<Result<Option<HeldPart>, CommitFailure>>,
);

/// What `Shard::tx_lock_run_last` ran: its replies, the time it ran at (the other
/// participants run theirs at it), and its part's outcome to come.
#[cfg(feature = "runtime")]
pub struct LastPart {
    pub frames: Vec<moon_proto::Frame>,
    pub now: u64,
    pub part: EarlyPart,
}

/// A step of a transaction over several shards that visits them in ascending order, each
/// shard handing it on to the next over their channel once it has handled it
/// (`Shard::visit` in `txn`).
///
/// **Order.** Two transactions that share shards must meet them in the same order, or each
/// could see part of the other (MSETs of the same keys could leave some keys from one and
/// some from the other). Every transaction over several shards starts as a chain at its
/// lowest shard and goes up one shard at a time, through the shards between its participants
/// too: a shard hands chains on in the order it handled them, a channel keeps that order, and
/// a chain waits (deferred) behind a transaction that holds a shard. So if X reached a shard
/// before Y, X reaches every later shard they both visit before Y too. That lets a chain
/// run and commit each part as it passes ([`Visit::Run`], MSET) without holding any shard
/// while it waits for another, and lets locks be taken in one pass ([`Visit::Lock`]).
#[cfg(feature = "runtime")]
pub(crate) struct Chain {
    pub(crate) tx: Tx,
    /// The last shard it visits (its highest participant).
    pub(crate) hi: usize,
    pub(crate) visit: Visit,
}

#[cfg(feature = "runtime")]
impl Chain {
    /// Whether shard `id` is only on the way: the chain does nothing there but go on.
    pub(crate) fn passes_through(&self, id: usize) -> bool {
        match &self.visit {
            Visit::Lock { replies, last, .. } => {
                replies.get(id).is_none_or(Option::is_none) && !(id == self.hi && last.is_some())
            }
            Visit::Run { replies, .. } => replies.get(id).is_none_or(Option::is_none),
        }
    }
}

/// Where the last participant of a [`Visit::Lock`] sends what its part ran.
#[cfg(feature = "runtime")]
pub(crate) type LastReply = futures_channel::oneshot::Sender<Result<LastPart, String>>;
/// Where a participant of a [`Visit::Run`] sends its replies and its part to come, or why
/// the chain was refused before any part ran.
#[cfg(feature = "runtime")]
pub(crate) type RunReply =
    futures_channel::oneshot::Sender<Result<(Vec<moon_proto::Frame>, EarlyPart), String>>;

/// What a [`Chain`] does at each shard it visits.
#[cfg(feature = "runtime")]
pub(crate) enum Visit {
    /// Locks each participant for the transaction, answering with its log error; the last
    /// participant, if `last` is set, runs that part and commits it in the same visit
    /// (`Shard::tx_lock_run_last`).
    Lock {
        /// By shard: the answer for each participant not yet visited.
        replies: Vec<Option<futures_channel::oneshot::Sender<Option<String>>>>,
        writers: Vec<usize>,
        last: Option<(Vec<moon_store::Call>, LastReply)>,
        /// The first failing log of a writer met on the way.
        failing: Option<String>,
    },
    /// Runs and commits each participant's part as it passes (`Shard::tx_run_chain`).
    Run {
        /// By shard.
        batches: Vec<Vec<moon_store::Call>>,
        writers: Vec<usize>,
        replies: Vec<Option<RunReply>>,
        /// Whether a part has run. Until one has, a failing log refuses the whole chain.
        ran: bool,
        /// Why the chain was refused (every participant answers this, nothing runs).
        refused: Option<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// Blocked clients (`blocked.rs`)

/// What a blocked client is told.
#[cfg(feature = "runtime")]
#[derive(Debug)]
pub enum Woken {
    /// This key (database, key) may serve it now: it runs its command again (keys on several
    /// shards).
    Ready(usize, bytes::Bytes),
    /// It was served here, when the key filled (keys on one shard): its command's reply,
    /// to come once its record is safe. Sent in the same turn as the serve, so a client that
    /// leaves the key's queue (a message to this shard) and then reads its channel finds every
    /// serve made for it.
    Served(futures_channel::oneshot::Receiver<moon_proto::Frame>),
}

/// One blocked client's place in a key's queue.
#[cfg(feature = "runtime")]
#[derive(Clone)]
pub struct Waiter {
    /// The blocked call (unique while the server runs).
    pub id: u64,
    /// The type the key must hold to serve it: "list" or "zset".
    pub wants: &'static str,
    /// Where its wake goes.
    pub wake: futures_channel::mpsc::UnboundedSender<Woken>,
    /// With every key on this shard: the command the shard runs for it when a key fills,
    /// its keys here, and the reply that means "took nothing".
    pub serve: Option<std::sync::Arc<Serve>>,
}

/// A blocked call the shard serves itself ([`Waiter::serve`]).
#[cfg(feature = "runtime")]
pub struct Serve {
    pub call: moon_store::Call,
    pub keys: Vec<bytes::Bytes>,
    pub nil: moon_proto::Frame,
}

/// What a blocking command's attempt queues if it takes nothing ([`Shard::run_or_block`]).
#[cfg(feature = "runtime")]
pub struct BlockOn {
    pub db: usize,
    /// The keys to wait on (all of them at first; after a wake in vain, those it was woken
    /// for, at the front).
    pub keys: Vec<bytes::Bytes>,
    pub id: u64,
    pub wants: &'static str,
    pub wake: futures_channel::mpsc::UnboundedSender<Woken>,
    pub front: bool,
    /// The reply that means "took nothing".
    pub nil: moon_proto::Frame,
    /// Served here when a key fills (every key of the call is on this shard).
    pub serve: bool,
}

/// The queues of one shard, by database and key.
#[cfg(feature = "runtime")]
#[derive(Default)]
pub(crate) struct Waiters {
    pub(crate) queues:
        std::collections::HashMap<(usize, bytes::Bytes), std::collections::VecDeque<Waiter>>,
    /// Waiters taken off their queue to be served here once the running command is done.
    pub(crate) serving: std::collections::VecDeque<Waiter>,
}
