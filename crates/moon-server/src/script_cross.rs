//! A script whose declared keys live on several shards: run on this connection's shard inside
//! the transaction that holds those shards (`txn::run` took their locks in shard order, as for
//! a cross-shard MULTI), each `redis.call` sent to its key's shard as one step of that
//! transaction. The script waits for each reply (a suspending Lua state, `moon_script`'s
//! `suspending.rs`); the thread serves other connections meanwhile. Each shard's effects are
//! its part of the transaction, logged and committed as a cross-shard MULTI's are: after a
//! crash, every shard has its part or none does.
//!
//! The rules are the single-shard path's (`moon_store`'s `store/script.rs`), with "this
//! shard" read as "the script's shards": a key the script did not declare must live on one of
//! them, and each command's keys on one shard. Client tracking too: the script's writes are
//! its caller's own (NOLOOP), and once it runs a read-only command its declared keys are
//! remembered for its caller, each on the shard that owns it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use moon_proto::Frame;
use moon_script::{AsyncHost, Engine, Invocation, ReplyFuture};
use moon_store::command::Route;
use moon_store::reply::err;
use moon_store::slot::shard_for_key;
use moon_store::{script_source, script_step, Call, ScriptStep, NON_LOCAL_KEY};

use crate::session::Session;

thread_local! {
    /// Suspending Lua states of this thread, each with the script registry generation it
    /// compiled for and the function libraries' generation it loaded: one per script running
    /// at once here (a suspended script keeps its own).
    static POOL: RefCell<Vec<Pooled>> = const { RefCell::new(Vec::new()) };
}

struct Pooled {
    engine: Engine,
    scripts: u64,
    functions: u64,
}

fn take_engine() -> Result<Pooled, Frame> {
    let generation = moon_store::scripts::generation();
    let mut pooled = match POOL.with(|p| p.borrow_mut().pop()) {
        Some(mut p) => {
            if p.scripts != generation {
                p.engine.flush();
                p.scripts = generation;
            }
            p
        }
        None => Pooled {
            engine: Engine::new_suspending(moon_store::REDIS_VERSION)
                .map_err(|e| Frame::Error(format!("ERR cannot start Lua: {e}")))?,
            scripts: generation,
            functions: u64::MAX,
        },
    };
    moon_store::functions::sync(&pooled.engine, &mut pooled.functions);
    Ok(pooled)
}

fn give_engine(pooled: Pooled) {
    POOL.with(|p| p.borrow_mut().push(pooled));
}

/// EVAL / EVALSHA / EVAL_RO / EVALSHA_RO / FCALL / FCALL_RO (`name`) across shards, inside
/// `session.tx`; `track` is its caller's tracking reader, if that client tracks reads.
pub async fn run(
    session: &mut Session,
    name: &str,
    args: &[Bytes],
    track: Option<moon_store::tracking::Reader>,
) -> Frame {
    let Some(tx) = session.tx else {
        return err("ERR internal error: a cross-shard script outside its transaction");
    };
    let function = name.starts_with("fcall");
    let (source, numkeys, read_only) = if function {
        match moon_store::fcall_check(args, name.ends_with("_ro")) {
            Ok((n, ro)) => (None, n, ro),
            Err(e) => return e,
        }
    } else {
        match script_source(args, name.starts_with("evalsha"), name.ends_with("_ro")) {
            Ok(s) => {
                let (n, ro) = (s.numkeys, s.read_only);
                (Some(s), n, ro)
            }
            Err(e) => return e,
        }
    };
    let shard = session.ctx.shard.clone();
    let shards = shard.count();
    let keys = &args[3..3 + numkeys];
    let argv = &args[3 + numkeys..];
    let mut participants: Vec<usize> = keys.iter().map(|k| shard_for_key(k, shards)).collect();
    participants.sort_unstable();
    participants.dedup();
    let signals = moon_script::Signals::new(participants.clone(), function);
    if function {
        signals.describe(String::from_utf8_lossy(&args[1]).into_owned(), args);
    }
    let host_participants = participants.clone();
    let host = Rc::new(TxHost {
        user: crate::acl_cmd::script_user(session),
        signals: signals.clone(),
        shard,
        tx,
        db: Cell::new(session.db),
        participants,
        shards,
        writes: if read_only {
            moon_store::Writes::ReadOnlyScript
        } else if session.on_read_only_replica() {
            moon_store::Writes::ReadOnlyReplica
        } else {
            moon_store::Writes::Allowed
        },
        databases: session.ctx.shared.config().databases as usize,
        written: RefCell::new(vec![0; shards]),
        tracking: track.map(|reader| ScriptTracking {
            reader,
            keys: keys.to_vec(),
            remembered: Cell::new(false),
        }),
    });
    // Once the run is busy its shards answer BUSY to what waits for them (the dispatcher
    // already refuses what comes next); they stop when it ends.
    let told = Rc::new(Cell::new(false));
    let watcher = {
        let (signals, shard, told) = (signals.clone(), session.ctx.shard.clone(), told.clone());
        let participants = host.participants.clone();
        glommio::spawn_local(async move {
            signals.became_busy().await;
            told.set(true);
            let busy = moon_script::busy_reply(function);
            for p in participants {
                shard
                    .call_on(p, move |s| s.refuse_waiting(Some(busy)))
                    .await;
            }
        })
    };
    let pooled = match take_engine() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let reply = match &source {
        None => {
            let fname = String::from_utf8_lossy(&args[1]).into_owned();
            pooled
                .engine
                .run_function_suspending(&fname, keys, argv, host, signals)
                .await
        }
        Some(source) => match source.compile_in(&pooled.engine) {
            Err(e) => e,
            Ok(()) => {
                pooled
                    .engine
                    .run_suspending(
                        &Invocation {
                            sha: &source.sha,
                            body: source.text(),
                            keys,
                            args: argv,
                        },
                        host,
                        signals,
                    )
                    .await
            }
        },
    };
    give_engine(pooled);
    drop(watcher);
    if told.get() {
        for &p in &host_participants {
            session
                .ctx
                .shard
                .call_on(p, |s| s.refuse_waiting(None))
                .await;
        }
    }
    reply
}

/// Where a cross-shard script's commands go: the shards of its transaction.
struct TxHost {
    /// The user running it, if restricted: each command is checked (ACL).
    user: Option<moon_store::ScriptUser>,
    /// The run as the process sees it (busy, killed): a write makes it unkillable.
    signals: std::sync::Arc<moon_script::Signals>,
    shard: Rc<moon_shard::Shard>,
    tx: moon_shard::Tx,
    /// The script's database (a SELECT inside it changes it for the rest of the script).
    db: Cell<usize>,
    /// The shards of its declared keys: the ones the transaction holds for it.
    participants: Vec<usize>,
    shards: usize,
    writes: moon_store::Writes,
    databases: usize,
    /// Bytes of arguments of the writes sent to each shard (`moon_store::EFFECTS_BUDGET`).
    written: RefCell<Vec<usize>>,
    /// Its caller, if that client tracks reads.
    tracking: Option<ScriptTracking>,
}

/// A tracking caller of a cross-shard script, as the single-shard path has it
/// (`moon_store`'s `ScriptContext`): its reader, the keys the script declared, and whether
/// they were remembered yet.
struct ScriptTracking {
    reader: moon_store::tracking::Reader,
    keys: Vec<Bytes>,
    remembered: Cell<bool>,
}

impl TxHost {
    /// After a read-only command of the script: its declared keys are remembered for its
    /// caller on the shards that own them (Redis 7.0 remembers a script caller's declared keys
    /// when the script reads), again only after a write. Remembering reads nothing: the
    /// shard's commit does not wait for its log because of it.
    async fn remember_declared_keys(&self) {
        let Some(t) = &self.tracking else { return };
        if t.remembered.replace(true) {
            return;
        }
        for &owner in &self.participants {
            let keys: Vec<Bytes> = t
                .keys
                .iter()
                .filter(|k| shard_for_key(k, self.shards) == owner)
                .cloned()
                .collect();
            let reader = t.reader;
            self.shard
                .call_on(owner, move |s| {
                    let mut store = s.store();
                    for key in &keys {
                        store.track_read(reader, key);
                    }
                })
                .await;
        }
    }
}

impl AsyncHost for TxHost {
    fn acl_check(&self, args: &[Bytes]) -> Option<bool> {
        match &self.user {
            Some(user) => user.0.allows(args),
            None => moon_store::script_knows_command(&args[0]).then_some(true),
        }
    }

    fn call(&self, args: Vec<Bytes>) -> ReplyFuture<'_> {
        Box::pin(async move {
            // ACL first, as Redis checks it, also for PING, PUBLISH, SELECT...
            if let Some(user) = &self.user {
                if let Err(denied) = user.0.check(&args) {
                    return denied;
                }
            }
            let wrote = self.written.borrow().iter().any(|&w| w > 0);
            // Over `maxmemory` each write is checked below, where it would run.
            let step = script_step(
                &args,
                self.writes,
                self.tx.now,
                self.databases,
                wrote,
                false,
            );
            let row = match step {
                ScriptStep::Answer(reply) => return reply,
                ScriptStep::Refused(row, reply) => {
                    moon_store::stats::rejected(&row.spec, &args);
                    return reply;
                }
                ScriptStep::Select(db) => {
                    self.db.set(db);
                    return Frame::OK;
                }
                ScriptStep::Publish(channel, message) => {
                    let publication = crate::session::Publication {
                        kind: crate::session::Kind::Channel,
                        channel,
                        message,
                    };
                    let counts = crate::pubsub::publish(&self.shard, vec![publication]).await;
                    return Frame::Integer(counts.first().copied().unwrap_or(0));
                }
                ScriptStep::MemoryUsage(key) => {
                    let owner = shard_for_key(&key, self.shards);
                    if !self.participants.contains(&owner) {
                        return err(NON_LOCAL_KEY);
                    }
                    let (db, now) = (self.db.get(), self.tx.now);
                    return self
                        .shard
                        .call_on(owner, move |s| s.store_in_tx().memory_usage(db, &key, now))
                        .await
                        .flatten()
                        .map_or(Frame::Null, |n| Frame::Integer(n as i64));
                }
                ScriptStep::Run(row) => row,
            };
            if !matches!(row.spec.route, Route::Keys(_)) {
                // DBSIZE, FLUSHALL, SCAN...: every shard's, which a script holds only some of.
                return err(moon_store::NOT_FROM_SPREAD_SCRIPT);
            }
            let mut owners: Vec<usize> = row
                .spec
                .keys(&args)
                .map(|k| shard_for_key(k, self.shards))
                .collect();
            owners.sort_unstable();
            owners.dedup();
            let target = match owners[..] {
                [one] if self.participants.contains(&one) => one,
                [] => self.participants[0],
                [_] => return err(NON_LOCAL_KEY),
                _ => {
                    return err(
                        "ERR Script attempted to access keys that do not hash to the same slot",
                    )
                }
            };
            if row.spec.name.starts_with("sort") {
                if let Err(e) = moon_store::sort_local_patterns(&args, self.shards) {
                    return e;
                }
            }
            if moon_store::monitor::active() {
                moon_store::monitor::feed(self.tx.now * 1000, self.db.get(), "lua", &args);
            }
            if row.spec.may_grow_memory() {
                // Inside the transaction nothing is evicted (deletions logged outside its part
                // would replay before its writes): a write over maxmemory is refused instead
                // (review finding: a script looped past the limit).
                let over = self
                    .shard
                    .call_on(target, |s| s.store_in_tx().over_memory_limit())
                    .await
                    .unwrap_or(false);
                if over {
                    return err(moon_store::reply::OOM);
                }
            }
            if row.spec.is_write() {
                if !self.signals.may_write() {
                    // Killed by SCRIPT KILL: no write runs after its OK.
                    return err(moon_script::KILLED_TEXT);
                }
                let mut written = self.written.borrow_mut();
                let bytes: usize = args.iter().map(|a| a.len() + 16).sum();
                written[target] = written[target].saturating_add(bytes);
                if written[target] > moon_store::EFFECTS_BUDGET {
                    return err(moon_store::EFFECTS_TOO_LARGE);
                }
            }
            // Its writes are its caller's own (NOLOOP); its reads name no reader (the declared
            // keys are what is remembered, below).
            let track = self
                .tracking
                .as_ref()
                .filter(|_| row.spec.is_write())
                .map(|t| t.reader);
            let call = Call {
                command: row,
                args,
                db: self.db.get(),
                track,
                event: None,
                user: None,
                client: 0,
            };
            let reply = self
                .shard
                .run_batch_in(Some(self.tx), target, vec![call])
                .await
                .pop()
                .unwrap_or(Frame::StaticError(moon_shard::SHARD_GONE));
            if row.spec.is_read() {
                self.remember_declared_keys().await;
            } else if let (true, Some(t)) = (row.spec.is_write(), &self.tracking) {
                // It may have dropped them from the table: the next read remembers them again.
                t.remembered.set(false);
            }
            reply
        })
    }
}
