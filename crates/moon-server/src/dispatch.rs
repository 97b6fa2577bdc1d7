//! A request, parsed once: its command looked up in the table, its arguments checked, its
//! target decided from the table's key positions.
//!
//! Every frame a client sends becomes a [`Request`] or a refusal (the error reply Redis gives)
//! here, before any command of its pipeline is grouped, routed or queued in MULTI. Downstream
//! — the pipeline planner in `conn`, the transaction coordinator in `txn` — read `target` and
//! never look at argument positions again, so a malformed command cannot reach the code that
//! assumes a well-formed one (the way a pipeline's `GET` without a key once panicked a shard).

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::command::{CommandSpec, Merge, Route, Spread};
use moon_store::reply;
use moon_store::slot::shard_for_key;

use crate::catalog::Row;

/// A well-formed request.
pub struct Request {
    pub spec: &'static CommandSpec,
    /// The table row that runs it (found with the spec, in the one lookup).
    pub row: Row,
    pub args: Vec<Bytes>,
    pub target: Target,
}

/// Where a request runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// On the connection (PING, CONFIG, MULTI, WATCH, ...).
    Connection,
    /// In the store of this shard, which owns every key it names.
    Shard(usize),
    /// Its keys live on these shards (ascending, at least two): atomically, as a transaction.
    Shards(Vec<usize>),
    /// On every shard (KEYS, DBSIZE, FLUSHALL, ...), replies merged.
    All(Merge),
    /// Walking the shards (SCAN, RANDOMKEY).
    Server,
}

/// A request refused before it runs, with its error reply. Inside MULTI it makes EXEC fail.
pub struct Refused {
    pub reply: Frame,
    /// The command refused, when the table knows it (its rejected calls are counted, and EXEC
    /// refused discards the transaction).
    pub spec: Option<&'static CommandSpec>,
    /// Refused for a reason Redis finds only after authentication (MSET's key without a
    /// value passes Redis's arity check): an unauthenticated client gets NOAUTH instead.
    pub after_auth: bool,
}

impl Refused {
    fn now(spec: Option<&'static CommandSpec>, reply: Frame) -> Refused {
        Refused {
            reply,
            spec,
            after_auth: false,
        }
    }
}

pub type Parsed = Result<Request, Refused>;

impl Request {
    /// The shards it touches: a list (empty for the connection's own commands), or `None`
    /// for every shard.
    pub fn shards(&self) -> Option<Vec<usize>> {
        match &self.target {
            Target::Connection => Some(Vec::new()),
            Target::Shard(s) => Some(vec![*s]),
            Target::Shards(list) => Some(list.clone()),
            Target::All(_) | Target::Server => None,
        }
    }

    /// Whether a shard's store runs it by itself (no connection state, no walk of shards).
    pub fn runs_in_store(&self) -> bool {
        matches!(self.target, Target::Shard(_) | Target::Shards(_))
    }

    pub fn is_write(&self) -> bool {
        self.spec.is_write()
    }

    /// How it runs inside a transaction that holds all its shards.
    pub fn spread(&self) -> Spread {
        match self.spec.route {
            Route::Keys(spread) => spread,
            _ => Spread::One,
        }
    }
}

/// Parses one request of a client: an unknown command and wrong arguments are refused here,
/// with Redis's replies. (Authentication and the size of what a write would log are checked
/// when it is its turn to run, in Redis's order.)
pub fn parse(args: Vec<Bytes>, shards: usize) -> Parsed {
    let Some(entry) = args.first().and_then(|name| crate::catalog::lookup(name)) else {
        return Err(Refused::now(None, reply::unknown_command(&args)));
    };
    let spec = entry.spec;
    if !spec.arity_ok(args.len()) {
        return Err(Refused::now(Some(spec), reply::wrong_arity(spec.name)));
    }
    if !spec.args_ok(args.len()) {
        return Err(Refused {
            reply: reply::wrong_arity(spec.name),
            spec: Some(spec),
            after_auth: true,
        });
    }
    if spec.name.starts_with("sort") {
        // BY and GET name keys the key positions do not: they must be on the sorted key's
        // shard (Redis Cluster refuses them across slots).
        moon_store::sort_local_patterns(&args, shards).map_err(|e| Refused::now(Some(spec), e))?;
    }
    let target = match spec.route {
        Route::Connection => Target::Connection,
        Route::AllShards(merge) => Target::All(merge),
        Route::Server => Target::Server,
        Route::Keys(_) => {
            // Most requests name one shard: found without a list of owners.
            let mut owner_of = spec.keys(&args).map(|k| shard_for_key(k, shards));
            // Every keyed command has a key (its arity says so); shard 0 answers otherwise
            // (a script that declares no key runs there).
            let first = owner_of.next().unwrap_or(0);
            match owner_of.find(|&s| s != first) {
                None => Target::Shard(first),
                Some(other) => {
                    // Each key's owner computed once: the rest continue from where it stopped.
                    let mut owners = vec![first, other];
                    owners.extend(owner_of);
                    owners.sort_unstable();
                    owners.dedup();
                    Target::Shards(owners)
                }
            }
        }
    };
    Ok(Request {
        spec,
        row: entry.row,
        args,
        target,
    })
}

/// The largest record one request may produce: the log format's bound
/// (`moon_aof::record::MAX_PAYLOAD`) less room for the evictions logged with it (at most
/// `EVICTION_BATCH` bytes of keys; see `moon_store::Store`). `MOON_MAX_RECORD_BYTES` lowers
/// it (a test seam).
pub fn max_record() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let bound = moon_aof::record::MAX_PAYLOAD - 2 * moon_store::store_eviction_batch_bytes();
    *MAX.get_or_init(|| {
        std::env::var("MOON_MAX_RECORD_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(bound)
            .min(bound)
    })
}

/// The size of the one record the write commands among `reqs` would be logged as, if they ran
/// together (a command, a MULTI/EXEC, a transaction's part). Effects are never larger than
/// the commands, but for a RENAME across shards (logged as the value's SET).
pub fn record_size<'a>(reqs: impl IntoIterator<Item = &'a Request>) -> usize {
    let writes = reqs
        .into_iter()
        .filter(|r| r.is_write())
        .map(|r| r.args.as_slice());
    moon_aof::record::encoded_len(writes)
}

impl Request {
    /// The request as its shard's store runs it, in database `db`, for tracking reader
    /// `track`, sent by `client`; a command the connection runs itself stays a request.
    pub fn into_call(
        self,
        db: usize,
        track: Option<moon_store::tracking::Reader>,
        client: u64,
    ) -> Result<moon_store::Call, Request> {
        match self.row {
            Row::Keyspace(command) => Ok(moon_store::Call {
                command,
                args: self.args,
                db,
                track,
                event: None,
                user: None,
                client,
            }),
            Row::Connection(_) => Err(self),
        }
    }
}

/// A write refused before it runs: it could not be replayed from a record that large.
pub fn too_large_to_log(size: usize) -> Frame {
    Frame::Error(format!(
        "ERR request too large to log: its record would take {size} bytes, more than the {} an AOF record can hold",
        max_record()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(words: &str, shards: usize) -> Parsed {
        crate::commands::install();
        parse(
            words
                .split(' ')
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect(),
            shards,
        )
    }

    fn target(words: &str, shards: usize) -> Target {
        match req(words, shards) {
            Ok(r) => r.target,
            Err(r) => panic!("{words}: refused with {:?}", r.reply),
        }
    }

    #[test]
    fn malformed_requests_are_refused_before_routing() {
        for bad in [
            "GET",
            "MSET a 1 b",
            "MSETNX a 1 b",
            "RENAME a",
            "NOSUCH x",
            "SET k",
        ] {
            assert!(req(bad, 4).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn targets_follow_the_key_positions() {
        // Keys a and b live on different shards of 2 (the crash matrix relies on it too).
        let (a, b) = (shard_for_key(b"a", 2), shard_for_key(b"b", 2));
        assert_ne!(a, b);
        assert_eq!(target("GET a", 2), Target::Shard(a));
        assert_eq!(target("MSET a 1 a 2", 2), Target::Shard(a));
        assert_eq!(target("MSET a 1 b 2", 2), Target::Shards(vec![0, 1]));
        assert_eq!(target("RENAME a b", 2), Target::Shards(vec![0, 1]));
        assert_eq!(target("RENAME a b", 1), Target::Shard(0));
        assert_eq!(target("DBSIZE", 2), Target::All(Merge::Sum));
        assert_eq!(target("SCAN 0", 2), Target::Server);
        assert_eq!(target("WATCH a b", 2), Target::Connection);
    }
}
