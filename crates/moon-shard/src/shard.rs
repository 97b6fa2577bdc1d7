//! One shard: its store, its counters, and its links to the other shards.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use moon_aof::AofWriter;
use moon_proto::Frame;
use moon_store::{Call, KeyEvent, Store, WatchToken};

use crate::recovery::{FileReplay, RecoveryError, ShardFiles};
use crate::state::{Chain, CommitFailure, Cut, EarlyPart, HeldPart, ShardSetConfig, Tx, TxId};

use crate::clock::now_ms;

type AnyBox = Box<dyn Any + Send>;
type AsyncCall = Box<
    dyn FnOnce(Rc<Shard>) -> std::pin::Pin<Box<dyn std::future::Future<Output = AnyBox>>> + Send,
>;

/// A batch's commands on their way back to the shard that sent them, which frees them (their
/// arguments were allocated on its thread: glibc's malloc serves a free from another thread
/// through the owning arena's lock once the freeing thread's small cache is full) and keeps
/// the list for its next batch (see [`Shard::run_batch_keeping`]).
pub(crate) struct Spent(Vec<Call>);

/// What one shard asks of another.
pub(crate) enum Message {
    /// Execute these commands in order and send back their replies, and the commands: the
    /// sender's thread allocated them, and frees them (see [`Spent`]).
    Batch {
        cmds: Vec<Call>,
        reply: oneshot::Sender<(Vec<Frame>, Spent)>,
    },
    /// A blocking command's attempt: execute it and, if it took nothing, queue its waiter in
    /// the same turn (see [`Shard::run_or_block`]).
    BatchOrBlock {
        cmds: Vec<Call>,
        block: crate::state::BlockOn,
        reply: oneshot::Sender<Vec<Frame>>,
    },
    /// Run this function on the shard's thread (administrative fan-out: INFO, CLIENT LIST...).
    Call {
        f: Box<dyn FnOnce(&Shard) -> AnyBox + Send>,
        reply: oneshot::Sender<AnyBox>,
    },
    /// Like `Call`, but deferred while a transaction holds the shard, as a batch is: for
    /// reads that must not see a transaction's uncommitted effects (WATCH).
    CallUnlocked {
        f: Box<dyn FnOnce(&Shard) -> AnyBox + Send>,
        reply: oneshot::Sender<AnyBox>,
    },
    /// Run this async function on the shard's thread (BGREWRITEAOF steps).
    CallAsync {
        f: AsyncCall,
        reply: oneshot::Sender<AnyBox>,
    },
    /// Run these commands as one atomic unit (a single-shard MULTI/EXEC); `None` back if a
    /// watched key changed. See [`crate::txn`].
    Atomic {
        cmds: Vec<Call>,
        watches: Vec<(Bytes, WatchToken)>,
        reply: oneshot::Sender<Option<Vec<Frame>>>,
    },
    /// Cross-shard transaction steps (see [`crate::txn`]).
    /// A step that visits the shards in ascending order, each passing it on to the next
    /// ([`crate::txn`], "Order"): how every transaction over several shards takes its locks,
    /// or runs its parts.
    Chain(Box<Chain>),
    TxExec {
        tx: Tx,
        cmds: Vec<Call>,
        reply: oneshot::Sender<Vec<Frame>>,
    },
    TxCommit {
        txid: TxId,
        writers: Vec<usize>,
        reply: oneshot::Sender<Result<Option<HeldPart>, CommitFailure>>,
    },
    TxUnlock {
        txid: TxId,
    },
    /// Execute and commit in one exchange, the shard locked by `tx` (see
    /// [`Shard::tx_exec_commit`]).
    TxExecCommit {
        tx: Tx,
        cmds: Vec<Call>,
        writers: Vec<usize>,
        reply: oneshot::Sender<(Vec<Frame>, EarlyPart)>,
    },
    /// Every part of a transaction is safe: release this shard's hold on its part (the part's
    /// first LSN). Never deferred by a lock: it touches no key.
    TxRelease {
        part: HeldPart,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
}

/// Work that reached a locked shard.
pub(crate) enum Deferred {
    /// A message from another shard, handled as if it arrived now.
    Msg(Message),
    /// A local task waiting to execute.
    Wake(oneshot::Sender<()>),
    /// A local coordinator waiting for the lock.
    Lock(TxId, oneshot::Sender<Option<String>>),
}

/// DEBUG SET-ACTIVE-EXPIRE: whether the shards' crons reclaim expired keys nobody reads (on
/// unless a test turns it off; reads still expire keys lazily).
static ACTIVE_EXPIRE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns active expiry on or off on every shard.
pub fn set_active_expire(on: bool) {
    ACTIVE_EXPIRE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Counters a shard keeps about itself (INFO). Plain cells: only the shard's thread writes them.
#[derive(Default, Debug)]
pub struct ShardCounters {
    pub commands_processed: Cell<u64>,
    pub connections_received: Cell<u64>,
    pub connected_clients: Cell<u64>,
    pub rejected_connections: Cell<u64>,
    pub net_input_bytes: Cell<u64>,
    pub net_output_bytes: Cell<u64>,
    pub cross_shard_batches: Cell<u64>,
    /// Keyspace events dropped because delivery fell too far behind.
    pub dropped_events: Cell<u64>,
    /// Error replies sent to this shard's connections (`total_error_replies`).
    pub error_replies: Cell<u64>,
    /// The same by error code (the reply's first word), for INFO errorstats: at most
    /// [`ShardCounters::ERROR_CODES`] codes, as Redis bounds them.
    pub errors: RefCell<std::collections::BTreeMap<String, u64>>,
    /// Recent rates (INFO's `instantaneous_*`), sampled every 100 ms.
    rates: RefCell<Rates>,
    /// The largest memory account seen by those samples (INFO's `used_memory_peak`).
    pub memory_peak: Cell<u64>,
}

/// Commands, input and output bytes per second over the last 1.6 s: 16 samples taken 100 ms
/// apart, averaged (Redis's `instantaneous_ops_per_sec` and kbps figures).
#[derive(Default, Debug)]
struct Rates {
    last: Option<(std::time::Instant, [u64; 3])>,
    samples: [[f64; 3]; Rates::SAMPLES],
    next: usize,
}

impl Rates {
    const SAMPLES: usize = 16;
}

impl ShardCounters {
    /// Distinct error codes kept for INFO errorstats (Redis's `ERRORSTATS_LIMIT`): past it a
    /// new code is counted in `total_error_replies` only.
    pub const ERROR_CODES: usize = 128;

    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get().wrapping_add(n));
    }

    /// One error reply whose text starts with `code`.
    pub fn error_reply(&self, code: &str) {
        Self::add(&self.error_replies, 1);
        let mut errors = self.errors.borrow_mut();
        if let Some(n) = errors.get_mut(code) {
            *n += 1;
        } else if errors.len() < Self::ERROR_CODES {
            errors.insert(code.to_string(), 1);
        }
    }

    /// Takes one sample of the rates (every 100 ms, from the shard's cron).
    pub fn sample_rates(&self) {
        let now = std::time::Instant::now();
        let totals = [
            self.commands_processed.get(),
            self.net_input_bytes.get(),
            self.net_output_bytes.get(),
        ];
        let mut r = self.rates.borrow_mut();
        if let Some((then, before)) = r.last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                let mut sample = [0.0; 3];
                for (i, s) in sample.iter_mut().enumerate() {
                    *s = totals[i].saturating_sub(before[i]) as f64 / secs;
                }
                let at = r.next;
                r.samples[at] = sample;
                r.next = (at + 1) % Rates::SAMPLES;
            }
        }
        r.last = Some((now, totals));
    }

    /// (commands, input bytes, output bytes) per second, averaged over the recent samples.
    pub fn rates(&self) -> [f64; 3] {
        let r = self.rates.borrow();
        let mut sum = [0.0; 3];
        for s in &r.samples {
            for i in 0..3 {
                sum[i] += s[i];
            }
        }
        sum.map(|x| x / Rates::SAMPLES as f64)
    }

    /// CONFIG RESETSTAT: the counters Redis resets (not the connected clients).
    pub fn reset(&self) {
        for c in [
            &self.commands_processed,
            &self.connections_received,
            &self.rejected_connections,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.error_replies,
        ] {
            c.set(0);
        }
        self.errors.borrow_mut().clear();
    }
}

pub struct Shard {
    id: usize,
    count: usize,
    store: RefCell<Store>,
    senders: Option<Senders<Message>>,
    /// This shard's log; `None` with `appendonly no` (and while replaying).
    aof: RefCell<Option<AofWriter>>,
    pub counters: ShardCounters,
    /// The cross-shard transaction holding this shard, if any: while set, nothing else
    /// executes here (see [`crate::txn`]).
    pub(crate) lock_holder: Cell<Option<TxId>>,
    /// Work that arrived while the shard was locked, in arrival order.
    pub(crate) deferred: RefCell<std::collections::VecDeque<Deferred>>,
    /// Chain steps waiting to go on to each peer, in the order this shard handled them, and
    /// whether a task is sending them ([`Shard::forward`]).
    pub(crate) chain_out: RefCell<Vec<std::collections::VecDeque<Message>>>,
    pub(crate) chain_sending: Vec<Cell<bool>>,
    /// Whether [`Shard::drain`] is running (it does not nest).
    pub(crate) draining: Cell<bool>,
    /// Effects of the holding transaction, logged as one record at its commit.
    pub(crate) tx_effects: RefCell<Vec<Vec<Bytes>>>,
    /// A local task woken from the deferred queue has the shard until it ran (see
    /// [`Shard::wait_unlocked`]): nothing else deferred runs meanwhile.
    pub(crate) handoff: Cell<bool>,
    /// Whether the holding transaction ran a step here while the log was healthy: its reads
    /// may then have seen records not yet safe, and must wait for them at the commit.
    pub(crate) tx_read_unsafe: Cell<bool>,
    /// For unique transaction ids: a random id of this run and a counter.
    pub(crate) boot_id: u64,
    pub(crate) tx_counter: Cell<u64>,
    /// A BGREWRITEAOF in progress on this shard (see [`crate::rewrite`]).
    pub(crate) rewrite: RefCell<Option<Cut>>,
    /// Active expiry runs only once the shard serves ([`Shard::start_serving`]): before, its
    /// removals could not be logged (the log is not attached yet), and a key reclaimed but
    /// not logged would come back at the next replay under the writes made after it.
    serving: Cell<bool>,
    /// This shard's base and incr files (set once replayed), and whether its keyspace was
    /// rebuilt from them after its log failed ([`Shard::back_to_the_log`]).
    log_files: RefCell<Option<ShardFiles>>,
    reloaded: Cell<bool>,
    /// Keyspace events waiting for their records to be safe, in the order they happened:
    /// (the shard's latest LSN when they were taken, the events).
    events: RefCell<std::collections::VecDeque<(u64, Vec<KeyEvent>)>>,
    events_waker: Cell<Option<std::task::Waker>>,
    /// Events in `events`, bounded by [`MAX_QUEUED_EVENTS`].
    events_queued: Cell<usize>,
    /// Where safe events go (the server's pub/sub); none: they are dropped.
    event_sink: RefCell<Option<EventSink>>,
    /// Where invalidations for tracking clients go (at once: telling a client early that a
    /// key changed is always safe).
    invalidation_sink: RefCell<Option<InvalidationSink>>,
    /// Clients blocked on this shard's keys (`blocked.rs`).
    pub(crate) waiters: RefCell<crate::state::Waiters>,
    /// A busy script paused here holds the lock: Redis's BUSY reply for what arrives
    /// meanwhile ([`Shard::pause`]).
    pub(crate) busy_script: Cell<Option<&'static str>>,
    /// [`Shard::serve_waiting`] is running (it does not run inside itself).
    pub(crate) serving_now: Cell<bool>,
}

/// Receives invalidations owed to tracking clients, on the shard's thread; must not block or
/// touch the store (it runs while the store is borrowed).
pub type InvalidationSink = Rc<dyn Fn(Vec<moon_store::tracking::Invalidation>)>;

/// Receives a batch of keyspace events whose records are safe, on the shard's thread; the
/// next batch waits until the returned future is done (events keep their order).
pub type EventSink =
    Rc<dyn Fn(Vec<KeyEvent>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>;

/// Replies of a batch that executed but may not leave yet: they wait until the shard's log is
/// safe up to `lsn` (see [`Shard::run_local`]); and if a busy script of the batch paused
/// (`rest`), the replies of that script and of the commands after it, which come once it
/// ended (see [`Shard::finish_paused`]).
pub(crate) struct Held {
    pub(crate) frames: Vec<Frame>,
    pub(crate) writer: Option<AofWriter>,
    pub(crate) lsn: u64,
    /// The replies still to come and how many there are.
    pub(crate) rest: Option<(oneshot::Receiver<Vec<Frame>>, usize)>,
}

/// 64 random bits (from the OS, through std's hasher seeding) that name this process's
/// transactions: unlike a start time, they do not repeat when the clock steps back, so a
/// transaction id of one run never matches another run's at recovery.
pub(crate) fn random_boot_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// Redis's reply to a write while the AOF is failing.
pub(crate) fn misconf(cause: &str) -> Frame {
    Frame::Error(format!("MISCONF Errors writing to the AOF file: {cause}"))
}

/// Keyspace events a shard holds for delivery at most.
pub const MAX_QUEUED_EVENTS: usize = 1 << 20;

/// The reply to a command whose shard is gone (the server is shutting down).
pub const SHARD_GONE: &str = "ERR shard unavailable (server shutting down)";

impl Shard {
    /// Joins the mesh, starts the message loops and active expiry, and returns the shard.
    pub(crate) async fn join(
        id: usize,
        config: &ShardSetConfig,
        mesh: MeshBuilder<Message, Full>,
    ) -> Rc<Shard> {
        let (senders, receivers) = if config.shards > 1 {
            match mesh.join().await {
                Ok((s, r)) => (Some(s), Some(r)),
                Err(e) => {
                    tracing::error!(shard = id, "cannot join the shard mesh: {e}");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let shard = Rc::new(Shard {
            id,
            count: config.shards,
            store: RefCell::new({
                let mut store = Store::new(config.max_string_len);
                store.set_place(id, config.shards);
                store
            }),
            senders,
            aof: RefCell::new(None),
            counters: ShardCounters::default(),
            lock_holder: Cell::new(None),
            deferred: RefCell::new(std::collections::VecDeque::new()),
            chain_out: RefCell::new(
                (0..config.shards)
                    .map(|_| std::collections::VecDeque::new())
                    .collect(),
            ),
            chain_sending: (0..config.shards).map(|_| Cell::new(false)).collect(),
            draining: Cell::new(false),
            tx_effects: RefCell::new(Vec::new()),
            tx_read_unsafe: Cell::new(false),
            handoff: Cell::new(false),
            boot_id: random_boot_id(),
            tx_counter: Cell::new(0),
            rewrite: RefCell::new(None),
            serving: Cell::new(false),
            log_files: RefCell::new(None),
            reloaded: Cell::new(false),
            events: RefCell::new(std::collections::VecDeque::new()),
            waiters: RefCell::new(Default::default()),
            busy_script: Cell::new(None),
            serving_now: Cell::new(false),
            events_waker: Cell::new(None),
            events_queued: Cell::new(0),
            event_sink: RefCell::new(None),
            invalidation_sink: RefCell::new(None),
        });
        if let Some(mut receivers) = receivers {
            for (_peer, rx) in receivers.streams() {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let mut since_io = 0;
                    while let Some(msg) = rx.recv().await {
                        Shard::handle(&shard, msg);
                        since_io += 1;
                        // Not while a busy script holds the shard: it keeps a task ready, so
                        // the shard polls only on its 100 ms preemption timer, and a batch
                        // costs nothing then (it is answered BUSY at once).
                        if since_io >= MESSAGES_PER_TURN && shard.busy_script.get().is_none() {
                            since_io = 0;
                            // A peer that keeps the channel full (its connections all aim at
                            // a key here) would otherwise keep this loop ready, and glommio
                            // polls its ring only once no task is: this shard's own clients
                            // waited up to seconds under pipelined ZADDs to one key at 2
                            // shards. A timer fires from that poll (`yield_now` would be ready
                            // again at once, and only the 100 ms preemption timer let I/O in).
                            glommio::timer::sleep(std::time::Duration::from_micros(1)).await;
                        }
                    }
                })
                .detach();
            }
        }
        let weak = Rc::downgrade(&shard);
        glommio::spawn_local(async move {
            // Keyspace events leave in order, each batch once the log holds its records: a
            // subscriber never hears of a write that a crash could still take back.
            loop {
                // Everything queued so far goes out together, once the last of it is safe:
                // the queue never lags behind by more than one round of delivery.
                let next = std::future::poll_fn(|cx| {
                    let Some(shard) = weak.upgrade() else {
                        return std::task::Poll::Ready(None);
                    };
                    let mut queue = shard.events.borrow_mut();
                    if queue.is_empty() {
                        shard.events_waker.set(Some(cx.waker().clone()));
                        return std::task::Poll::Pending;
                    }
                    let mut lsn = 0;
                    let mut events = Vec::new();
                    for (l, mut e) in queue.drain(..) {
                        lsn = lsn.max(l);
                        events.append(&mut e);
                    }
                    shard.events_queued.set(0);
                    std::task::Poll::Ready(Some((lsn, events)))
                })
                .await;
                let Some((lsn, events)) = next else { break };
                let Some(shard) = weak.upgrade() else { break };
                if let Some(writer) = shard.aof() {
                    if writer.wait(lsn).await.is_err() {
                        continue;
                    }
                }
                let sink = shard.event_sink.borrow().clone();
                drop(shard);
                if let Some(sink) = sink {
                    sink(events).await;
                }
            }
        })
        .detach();
        let weak = Rc::downgrade(&shard);
        glommio::spawn_local(async move {
            // Active expiry: reclaim keys whose deadline passed without anyone reading them.
            loop {
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                let Some(shard) = weak.upgrade() else { break };
                shard.counters.sample_rates();
                if let Ok(store) = shard.store.try_borrow() {
                    let used = store.memory_account();
                    if used > shard.counters.memory_peak.get() {
                        shard.counters.memory_peak.set(used);
                    }
                }
                while shard.expire_active(1000) == 1000 {
                    glommio::yield_if_needed().await;
                }
            }
        })
        .detach();
        shard
    }

    /// One round of active expiry: removes up to `budget` keys whose deadline passed and logs
    /// each removal as a `DEL` (replay runs without expiry; see `docs/ARCHITECTURE.md`). Does
    /// nothing while a transaction holds the shard: its commands must see the keyspace as it
    /// was at the transaction's `now`. Returns how many keys were removed.
    fn expire_active(&self, budget: usize) -> usize {
        if !self.serving.get()
            || self.lock_holder.get().is_some()
            || !ACTIVE_EXPIRE.load(std::sync::atomic::Ordering::Relaxed)
        {
            return 0;
        }
        let mut store = self.store.borrow_mut();
        let started = std::time::Instant::now();
        let now = now_ms();
        let removed = store.expire_cycle(now, budget);
        let ms = started.elapsed().as_millis() as u64;
        moon_store::latency::sample("expire-cycle", ms, now / 1000);
        if !store.logged().is_empty() {
            if let Some(writer) = self.aof.borrow().as_ref() {
                // Nobody waits for these records: a reply that depends on one waits for the
                // shard's latest LSN anyway.
                writer.append(store.logged());
            }
            store.clear_log();
        }
        self.queue_events(&mut store);
        removed
    }

    /// Before a transaction whose commands may grow memory runs here: evicts what the policy
    /// allows until the keyspace is within its share of `maxmemory`, logging each eviction as
    /// a `DEL` (before the transaction's records). False: over the limit, the transaction must
    /// be refused whole with OOM. Call it while holding the shard (a transaction's lock, or
    /// through `call_on_unlocked`), never in the middle of another transaction.
    pub fn make_room(&self, now: u64) -> bool {
        let mut store = self.store.borrow_mut();
        let ok = store.make_room_now(now);
        if !store.logged().is_empty() {
            if let Some(writer) = self.aof.borrow().as_ref() {
                writer.append(store.logged());
            }
            store.clear_log();
        }
        self.queue_events(&mut store);
        ok
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// Where this shard's invalidations for tracking clients go.
    pub fn set_invalidation_sink(&self, sink: InvalidationSink) {
        *self.invalidation_sink.borrow_mut() = Some(sink);
    }

    /// Where this shard's keyspace events go once their records are safe.
    pub fn set_event_sink(&self, sink: EventSink) {
        *self.event_sink.borrow_mut() = Some(sink);
    }

    /// Takes the store's keyspace events (after their effects were appended to the log) and
    /// queues them behind the shard's latest LSN. Inside a cross-shard transaction they stay
    /// in the store until its commit appended the transaction's record.
    pub(crate) fn queue_events(&self, store: &mut Store) {
        if self.lock_holder.get().is_some() {
            return;
        }
        self.wake_ready(store);
        if store.has_invalidations() {
            let owed = store.take_invalidations();
            if let Some(sink) = self.invalidation_sink.borrow().as_ref() {
                sink(owed);
            }
        }
        if !store.has_events() {
            return;
        }
        let events = store.take_events();
        let queued = self.events_queued.get() + events.len();
        if queued > MAX_QUEUED_EVENTS {
            // Delivery fell this far behind (a log that cannot keep up): drop rather than
            // grow without bound; notifications are fire-and-forget in Redis too.
            ShardCounters::add(&self.counters.dropped_events, events.len() as u64);
            tracing::warn!(
                shard = self.id,
                "dropping {} keyspace events: {} already wait for delivery",
                events.len(),
                self.events_queued.get()
            );
            return;
        }
        self.events_queued.set(queued);
        let lsn = self.aof.borrow().as_ref().map_or(0, |w| w.last_assigned());
        self.events.borrow_mut().push_back((lsn, events));
        if let Some(w) = self.events_waker.take() {
            w.wake();
        }
    }

    /// Number of shards in the set.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Direct access to this shard's store, for work on its own thread (after a failed log,
    /// the keyspace rebuilt from it: see [`Shard::back_to_the_log`]).
    pub fn store(&self) -> std::cell::RefMut<'_, Store> {
        self.back_to_the_log();
        self.store.borrow_mut()
    }

    /// [`Shard::store`] for a read a cross-shard transaction makes on this (locked) shard
    /// outside its steps (a SUNION across shards reads each key's members): like a step's,
    /// the read makes the transaction's commit here wait until the log is safe up to what it
    /// saw, and fail if the log fails before (review finding: such a read used to be answered
    /// even when the write it saw was then refused with MISCONF).
    /// The store as it is, for bookkeeping that reads or changes no key (blocked clients).
    pub(crate) fn store_unchecked(&self) -> std::cell::RefMut<'_, Store> {
        self.store.borrow_mut()
    }

    pub fn store_in_tx(&self) -> std::cell::RefMut<'_, Store> {
        if self.back_to_the_log().is_none() {
            self.tx_read_unsafe.set(true);
        }
        self.store.borrow_mut()
    }

    /// Replays this shard's files into the store (startup, before any connection), as
    /// [`crate::recovery::replay_shard`] describes: the base checked against the manifest,
    /// expiry off (every expiration is in the log), nothing logged again, a cross-shard
    /// transaction part applied only if its transaction is in `plan.complete`, and the log
    /// ended at `plan.stop_at[shard]`; a torn incr tail is cut off.
    pub fn replay(
        &self,
        files: &ShardFiles,
        plan: &crate::recovery::RecoveryPlan,
    ) -> Result<Vec<FileReplay>, RecoveryError> {
        let stop = plan.stop_at.get(self.id).copied().flatten();
        let mut store = self.store.borrow_mut();
        crate::recovery::replay_shard(&mut store, files, &plan.complete, stop, true)
    }

    /// Marks the shard as serving: replay is done and its log (if any) attached, so active
    /// expiry may start reclaiming keys — each removal now reaches the log.
    pub fn start_serving(&self) {
        self.serving.set(true);
    }

    /// The files [`Shard::back_to_the_log`] rebuilds the keyspace from if the log fails.
    pub fn set_log_files(&self, files: ShardFiles) {
        *self.log_files.borrow_mut() = Some(files);
    }

    /// Once this shard's log has failed, its keyspace may hold writes the log lacks (they ran,
    /// then their record could not be written, or fsynced under `always`; their clients got
    /// MISCONF). Reads must never return those: the first time anything touches the keyspace
    /// after the failure — a batch, a transaction step, or a read by another shard through
    /// [`Shard::store`] — it is rebuilt from the files, as a restart would, but only up to the
    /// last LSN the log acknowledged ([`AofWriter::safe_lsn`]): the page cache may hold
    /// records of a round whose fsync (or later part) failed. Writes stay refused until a
    /// restart; reads answer from this state.
    ///
    /// Returns the log's error as read here, **once**: the caller refuses writes by it. (The
    /// everysec thread can fail at any instant; reading the error again later could find a
    /// failure the keyspace was not rebuilt for, and answer reads from unacknowledged writes.
    /// A failure that comes after this read is caught by the replies' wait instead.)
    pub(crate) fn back_to_the_log(&self) -> Option<String> {
        let writer = self.aof.borrow().clone()?;
        let failing = writer.error()?;
        if self.reloaded.replace(true) {
            return Some(failing);
        }
        if writer.failed_while_held() {
            // A cross-shard transaction's part was held here when the log failed: whether it
            // survives depends on the other shards' logs, and so do the records after it. No
            // rebuild can answer reads truthfully; stop (crash-only) and let recovery decide.
            tracing::error!(
                shard = self.id,
                "the AOF failed ({failing}) while a cross-shard transaction was in flight on this shard; exiting so that recovery decides it on every shard (docs/TRANSACTIONS.md)"
            );
            std::process::exit(1);
        }
        let Some(files) = self.log_files.borrow().clone() else {
            return Some(failing);
        };
        let (fresh, replayed) = self.rebuilt_from(&files, writer.safe_lsn());
        if let Err(e) = replayed {
            tracing::error!(
                shard = self.id,
                "rebuilding the keyspace from {}: {e}",
                files.incr.display()
            );
        }
        self.store.borrow_mut().replace_keyspace(fresh);
        tracing::warn!(
            shard = self.id,
            "the AOF failed: keyspace rebuilt from what the log holds; reads answer from it, writes are refused (MISCONF) until a restart"
        );
        Some(failing)
    }

    /// A keyspace rebuilt from this shard's files up to `upto` (an LSN), as a restart would
    /// build it, and whether the replay went through (what it read before an error is kept).
    fn rebuilt_from(&self, files: &ShardFiles, upto: u64) -> (Store, Result<(), String>) {
        let mut fresh = Store::new(self.store.borrow().max_string_len());
        fresh.set_encodings(self.store.borrow().encodings());
        fresh.set_databases(self.store.borrow().databases());
        fresh.set_place(self.id, self.count);
        // Every transaction part in these files committed: a commit that fails stops the
        // process (the coordinator), so no part of an unfinished one was written here.
        let mut complete = std::collections::HashSet::new();
        for f in [&files.base, &files.incr] {
            if let Ok(parts) = crate::recovery::transaction_parts(f) {
                complete.extend(parts.into_iter().map(|p| p.id));
            }
        }
        let replayed =
            crate::recovery::replay_shard(&mut fresh, files, &complete, Some(upto + 1), false)
                .map(|_| ())
                .map_err(|e| e.to_string());
        fresh.set_record_writes(true);
        (fresh, replayed)
    }

    /// DEBUG RELOAD: the keyspace thrown away and rebuilt from this shard's log, which must
    /// hold everything it ran (the check that memory and log agree, as Redis's reload checks
    /// its RDB). `None` while that cannot be done yet — a transaction holds the shard, or
    /// records are still on their way to the file: ask again shortly. Nothing else runs on the
    /// shard between the check and the swap (one synchronous turn).
    pub fn reload_from_log(&self) -> Option<Result<(), String>> {
        let Some(writer) = self.aof.borrow().clone() else {
            return Some(Err("there is no log to reload from (appendonly no)".into()));
        };
        if let Some(e) = writer.error() {
            return Some(Err(format!("the log has failed: {e}")));
        }
        let last = writer.last_assigned();
        if self.lock_holder.get().is_some() || !writer.is_safe(last) {
            return None;
        }
        let Some(files) = self.log_files.borrow().clone() else {
            return Some(Err("the log's files are not known yet".into()));
        };
        let (fresh, replayed) = self.rebuilt_from(&files, last);
        if let Err(e) = replayed {
            // The keyspace in memory stays: the log could not rebuild it.
            return Some(Err(format!("replaying {}: {e}", files.incr.display())));
        }
        self.store.borrow_mut().replace_keyspace(fresh);
        Some(Ok(()))
    }

    /// Starts logging every write to `writer`. From now on a reply leaves only once its
    /// record is safe under the writer's fsync policy.
    pub fn attach_aof(&self, writer: AofWriter) {
        self.store.borrow_mut().set_record_writes(true);
        *self.aof.borrow_mut() = Some(writer);
    }

    /// This shard's log writer, if persistence is on.
    pub fn aof(&self) -> Option<AofWriter> {
        self.aof.borrow().clone()
    }

    pub(crate) fn handle(self: &Rc<Self>, msg: Message) {
        let msg = match self.busy_script.get() {
            Some(busy) => match refuse_busy(msg, busy) {
                Some(msg) => msg,
                None => return,
            },
            None => msg,
        };
        let passes = |msg: &Message| {
            matches!(
                msg,
                Message::Call { .. } | Message::CallAsync { .. } | Message::TxRelease { .. }
            )
        };
        if let Message::Chain(chain) = &msg {
            if chain.passes_through(self.id) && !self.chain_deferred() {
                // Nothing to do here but hand it on: it need not wait behind a lock or a local
                // task. It overtakes no chain (none waits here), and the holder's chain went
                // on when it locked this shard (review finding: a lock on a shard between a
                // transaction's participants stalled the transaction).
                self.visit(match msg {
                    Message::Chain(chain) => chain,
                    _ => return,
                });
                return;
            }
        }
        if self.handoff.get() && self.lock_holder.get().is_none() && !passes(&msg) {
            // A woken local task goes first.
            self.deferred.borrow_mut().push_back(Deferred::Msg(msg));
            return;
        }
        if let Some(holder) = self.lock_holder.get() {
            let for_holder = match &msg {
                Message::TxExec {
                    tx: Tx { id: txid, .. },
                    ..
                }
                | Message::TxExecCommit {
                    tx: Tx { id: txid, .. },
                    ..
                }
                | Message::TxCommit { txid, .. }
                | Message::TxUnlock { txid } => *txid == holder,
                // Reads of counters and stats, and rewrite steps: never keyspace writes.
                Message::Call { .. } | Message::CallAsync { .. } | Message::TxRelease { .. } => {
                    true
                }
                _ => false,
            };
            if !for_holder {
                self.deferred.borrow_mut().push_back(Deferred::Msg(msg));
                return;
            }
        }
        match msg {
            Message::BatchOrBlock { cmds, block, reply } => {
                let executed = self.execute_pausing(&cmds);
                if let Some(call) = cmds.first() {
                    self.block_if_nil(call, &executed, block);
                }
                match executed {
                    Ok(frames) => {
                        let _ = reply.send(frames);
                    }
                    Err(held) => {
                        glommio::spawn_local(async move {
                            let _ = reply.send(settle(held).await);
                        })
                        .detach();
                    }
                }
            }
            Message::Batch { cmds, reply } => match self.execute_pausing(&cmds) {
                Ok(frames) => {
                    let _ = reply.send((frames, Spent(cmds)));
                }
                Err(held) => {
                    // Later messages keep executing while this batch's record is written.
                    glommio::spawn_local(async move {
                        let _ = reply.send((settle(held).await, Spent(cmds)));
                    })
                    .detach();
                }
            },
            Message::Call { f, reply } | Message::CallUnlocked { f, reply } => {
                let _ = reply.send(f(self));
            }
            Message::CallAsync { f, reply } => {
                let fut = f(self.clone());
                glommio::spawn_local(async move {
                    let _ = reply.send(fut.await);
                })
                .detach();
            }
            Message::Atomic {
                cmds,
                watches,
                reply,
            } => match self.execute_atomic(&cmds, &watches) {
                None => {
                    let _ = reply.send(None);
                }
                Some(Ok(frames)) => {
                    let _ = reply.send(Some(frames));
                }
                Some(Err(held)) => {
                    glommio::spawn_local(async move {
                        let _ = reply.send(Some(settle(held).await));
                    })
                    .detach();
                }
            },
            Message::Chain(chain) => self.visit(chain),
            Message::TxExec { tx, cmds, reply } => {
                let _ = reply.send(self.tx_exec_here(tx, &cmds));
            }
            Message::TxCommit {
                txid,
                writers,
                reply,
            } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.tx_commit_here(txid, &writers).await);
                })
                .detach();
            }
            Message::TxUnlock { txid } => self.unlock_here(txid),
            Message::TxExecCommit {
                tx,
                cmds,
                writers,
                reply,
            } => {
                let _ = reply.send(self.exec_commit_here(tx, &cmds, writers));
            }
            Message::TxRelease { part, reply } => self.release_here(part, reply),
        }
    }

    /// Executes `cmds` on this shard, in order, and returns their replies once they may leave.
    ///
    /// The durability path (SPEC §5): each command that changed the keyspace appends one
    /// record (its logged form) to the shard's writer in the same turn, with the next LSN. The
    /// replies are then held until the writer reports the log safe up to the shard's latest
    /// LSN — written to the kernel, and under `always` fdatasynced. Waiting for the latest LSN,
    /// not just this batch's own records, also covers a read that saw another client's write
    /// whose record is still on its way. While the log is failing, writes are refused with
    /// MISCONF before they execute, and reads keep working.
    pub async fn run_local(self: &Rc<Self>, cmds: &[Call]) -> Vec<Frame> {
        let turn = match self.wait_turn(true).await {
            Ok(turn) => turn,
            Err(busy) => return vec![Frame::StaticError(busy); cmds.len()],
        };
        let executed = self.execute_pausing(cmds);
        drop(turn);
        match executed {
            Ok(frames) => frames,
            Err(held) => settle(held).await,
        }
    }

    /// Executes now. `Ok`: replies that may leave at once; `Err`: replies held for the log
    /// (or for a busy script that paused: see [`Held`]).
    pub(crate) fn execute(&self, cmds: &[Call]) -> Result<Vec<Frame>, Held> {
        self.execute_with(cmds, None)
    }

    /// [`Shard::execute`], letting a busy script pause (the shard, `me`, resumes it).
    pub(crate) fn execute_pausing(self: &Rc<Self>, cmds: &[Call]) -> Result<Vec<Frame>, Held> {
        self.execute_with(cmds, Some(self))
    }

    fn execute_with(&self, cmds: &[Call], me: Option<&Rc<Shard>>) -> Result<Vec<Frame>, Held> {
        let writes = cmds.iter().filter(|c| c.spec().is_write()).count();
        if writes == 0
            || (writes == 1 && cmds.last().is_some_and(|c| c.spec().is_write()))
            || self.waiters.borrow().queues.is_empty()
        {
            let executed = self.execute_here(cmds, &[], me);
            // Blocked clients a key these filled can serve: before any other command.
            self.serve_in_turn();
            return executed;
        }
        // Clients are blocked here: up to each write, then whom it can serve (as Redis
        // serves them after every command, so a pipelined RPUSH + LPOP cannot take the
        // element from a blocked client). Reads cannot fill a key: they run together.
        let mut frames = Vec::with_capacity(cmds.len());
        let mut held: Option<(Option<AofWriter>, u64)> = None;
        let mut done = 0;
        for one in cmds.split_inclusive(|c| c.spec().is_write()) {
            done += one.len();
            match self.execute_here(one, &cmds[done..], me) {
                Ok(f) => frames.extend(f),
                Err(h) => {
                    frames.extend(h.frames);
                    let lsn = held.as_ref().map_or(h.lsn, |(_, l)| h.lsn.max(*l));
                    let writer = h.writer.or(held.and_then(|(w, _)| w));
                    held = Some((writer, lsn));
                    if h.rest.is_some() {
                        // A script paused: it runs the rest of the batch once it ended.
                        let (writer, lsn) = held.unwrap_or((None, 0));
                        return Err(Held {
                            frames,
                            writer,
                            lsn,
                            rest: h.rest,
                        });
                    }
                }
            }
            self.serve_in_turn();
        }
        match held {
            None => Ok(frames),
            Some((writer, lsn)) => Err(Held {
                frames,
                writer,
                lsn,
                rest: None,
            }),
        }
    }

    /// Executes `cmds` here; `later`: the commands of the same batch after them, which a busy
    /// script of `cmds` that pauses takes with it ([`Shard::finish_paused`]).
    fn execute_here(
        &self,
        cmds: &[Call],
        later: &[Call],
        me: Option<&Rc<Shard>>,
    ) -> Result<Vec<Frame>, Held> {
        let failing = self.back_to_the_log();
        let now = now_ms();
        let mut store = self.store.borrow_mut();
        let aof = self.aof.borrow();
        store.set_may_pause(me.is_some());
        let mut frames = run_cmds(
            &mut store,
            cmds,
            now,
            failing.as_deref(),
            |_, _, effects| {
                if let Some(writer) = aof.as_ref() {
                    writer.append(effects);
                }
            },
        );
        store.set_may_pause(false);
        let writer = aof.clone();
        drop(aof);
        if let (true, Some(me)) = (store.is_paused(), me) {
            // The paused script's placeholder; it and what follows it reply later.
            frames.pop();
            let rest: Vec<Call> = cmds[frames.len() + 1..]
                .iter()
                .chain(later)
                .cloned()
                .collect();
            // Its effects so far stay in the store until it ended; the events of the commands
            // before it go with them.
            drop(store);
            let lsn = writer.as_ref().map_or(0, |w| w.last_assigned());
            let count = rest.len() + 1;
            let rest = me.pause(rest);
            return Err(Held {
                frames,
                writer: writer.filter(|w| failing.is_none() && !w.is_safe(lsn)),
                lsn,
                rest: Some((rest, count)),
            });
        }
        self.queue_events(&mut store);
        drop(store);
        let Some(writer) = writer else {
            return Ok(frames);
        };
        let lsn = writer.last_assigned();
        // With a failed log, writes were refused and reads ran on the rebuilt keyspace: all
        // of it is in the log, nothing to wait for.
        if failing.is_some() || writer.is_safe(lsn) {
            return Ok(frames);
        }
        Err(Held {
            frames,
            writer: Some(writer),
            lsn,
            rest: None,
        })
    }

    /// A busy script holds this shard (`Some`: Redis's BUSY reply) or no longer does. While it
    /// does, what waits for the shard gets BUSY, as Redis answers the commands it reads while
    /// a script is busy: the batches waiting now, those that arrive, and local tasks waiting
    /// their turn (woken to find it); what is not a command (a transaction's step, a call)
    /// waits.
    pub fn refuse_waiting(&self, busy: Option<&'static str>) {
        self.busy_script.set(busy);
        let Some(busy) = busy else { return };
        let waiting = std::mem::take(&mut *self.deferred.borrow_mut());
        let kept: std::collections::VecDeque<Deferred> = waiting
            .into_iter()
            .filter_map(|d| match d {
                Deferred::Msg(m) => refuse_busy(m, busy).map(Deferred::Msg),
                Deferred::Wake(_) => None,
                other => Some(other),
            })
            .collect();
        let mut deferred = self.deferred.borrow_mut();
        let arrived = std::mem::replace(&mut *deferred, kept);
        deferred.extend(arrived);
    }

    /// A busy script paused (see `moon_script`'s `watch.rs`): the shard is locked for it, as
    /// for a cross-shard transaction — messages wait, local tasks wait their turn, expiry and
    /// blocked clients wait — and a task resumes it slice by slice, letting the thread's
    /// other work run between slices (connections answer BUSY, SCRIPT KILL arrives). Once it
    /// ended, its effects are logged as one unit like any command's, the commands of its
    /// batch after it (`rest`) run, and then the lock goes. The receiver gets the replies of
    /// the script and of `rest`, once they may leave.
    fn pause(self: &Rc<Self>, rest: Vec<Call>) -> oneshot::Receiver<Vec<Frame>> {
        let txid = self.new_txid();
        self.lock_holder.set(Some(txid));
        let busy = self.store.borrow().paused_busy_reply();
        self.refuse_waiting(busy);
        let (tx, rx) = oneshot::channel();
        let shard = self.clone();
        glommio::spawn_local(async move {
            let frames = shard.finish_paused(rest).await;
            if shard.lock_holder.get() == Some(txid) {
                // (A script later in the batch that paused too holds the lock now: its own.)
                shard.busy_script.set(None);
            }
            shard.unlock_here(txid);
            let _ = tx.send(frames);
        })
        .detach();
        rx
    }

    async fn finish_paused(self: &Rc<Self>, rest: Vec<Call>) -> Vec<Frame> {
        let reply = loop {
            futures_lite::future::yield_now().await;
            let resumed = self.store.borrow_mut().resume_script();
            if let Some(reply) = resumed {
                break reply;
            }
        };
        let failing = self.back_to_the_log();
        let aof = self.aof.borrow().clone();
        let unlogged = {
            let mut store = self.store.borrow_mut();
            let effects = !store.logged().is_empty();
            if effects {
                if let (Some(writer), None) = (aof.as_ref(), failing.as_ref()) {
                    writer.append(store.logged());
                }
                store.clear_log();
            }
            effects && failing.is_some()
        };
        if unlogged {
            // The log failed while the script was paused: what it changed cannot be logged,
            // and the keyspace (maybe rebuilt meanwhile) holds it. Rebuilt again from the log,
            // so that reads never see a write the log lacks (review finding).
            self.reloaded.set(false);
            let _ = self.back_to_the_log();
        }
        let mut frames = vec![reply];
        let executed = if rest.is_empty() {
            self.queue_events(&mut self.store.borrow_mut());
            match aof {
                Some(writer) if failing.is_none() => {
                    let lsn = writer.last_assigned();
                    Err(Held {
                        frames: Vec::new(),
                        writer: Some(writer),
                        lsn,
                        rest: None,
                    })
                }
                _ => Ok(Vec::new()),
            }
        } else {
            // As any batch: blocked clients a write of it can serve are served in turn.
            self.execute_with(&rest, Some(self))
        };
        match executed {
            Ok(f) => frames.extend(f),
            Err(held) => frames.extend(Box::pin(settle_rest(held)).await),
        }
        // The script's own reply waits for its record like the rest's (settled together).
        if let Some(writer) = self.aof() {
            if let Err(cause) = writer.wait(writer.last_assigned()).await {
                frames[0] = misconf(&cause);
            }
        }
        frames
    }
    /// The store, the log writer and the log's error (read once, the keyspace rebuilt for it:
    /// see [`Shard::back_to_the_log`]), for [`crate::txn`].
    pub(crate) fn parts(
        &self,
    ) -> (
        std::cell::RefMut<'_, Store>,
        Option<AofWriter>,
        Option<String>,
    ) {
        let failing = self.back_to_the_log();
        (self.store.borrow_mut(), self.aof.borrow().clone(), failing)
    }

    /// Executes `cmds` on shard `target` (this one or another) and returns their replies in
    /// order. One message each way, whatever the number of commands.
    pub async fn run_batch(self: &Rc<Self>, target: usize, cmds: Vec<Call>) -> Vec<Frame> {
        self.run_batch_spent(target, cmds).await.0
    }

    /// [`Shard::run_batch`], handing the commands back once they ran (empty if the target
    /// shard is gone), for the caller to free on its own thread or to reuse the list.
    pub(crate) async fn run_batch_spent(
        self: &Rc<Self>,
        target: usize,
        cmds: Vec<Call>,
    ) -> (Vec<Frame>, Vec<Call>) {
        if target == self.id {
            return (self.run_local(&cmds).await, cmds);
        }
        let n = cmds.len();
        let (tx, rx) = oneshot::channel();
        ShardCounters::add(&self.counters.cross_shard_batches, 1);
        if !self.send(target, Message::Batch { cmds, reply: tx }).await {
            return (vec![Frame::StaticError(SHARD_GONE); n], Vec::new());
        }
        rx.await
            .map(|(frames, Spent(cmds))| (frames, cmds))
            .unwrap_or_else(|_| (vec![Frame::StaticError(SHARD_GONE); n], Vec::new()))
    }

    /// Runs `f` on shard `target`'s thread and returns its result; `None` if that shard is gone.
    /// `f` must only read the store: writes go through [`Shard::run_batch`], which logs them.
    pub async fn call_on<R, F>(&self, target: usize, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&Shard) -> R + Send + 'static,
    {
        if target == self.id {
            return Some(f(self));
        }
        self.ask(target, |reply| Message::Call { f: erase(f), reply })
            .await
    }

    /// [`Shard::call_on`] that waits while a transaction holds `target`: `f` sees only
    /// committed state (WATCH reads a key under the same rules as a transaction).
    pub async fn call_on_unlocked<R, F>(self: &Rc<Self>, target: usize, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&Shard) -> R + Send + 'static,
    {
        if target == self.id {
            let _turn = self.wait_unlocked().await;
            return Some(f(self));
        }
        self.ask(target, |reply| Message::CallUnlocked { f: erase(f), reply })
            .await
    }

    /// Runs the async function `f` on shard `target`'s thread and returns its result; `None`
    /// if that shard is gone.
    pub async fn call_on_async<R, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R> + 'static,
    {
        if target == self.id {
            return Some(f(self.clone()).await);
        }
        let f: AsyncCall =
            Box::new(move |s| Box::pin(async move { Box::new(f(s).await) as AnyBox }));
        self.ask(target, |reply| Message::CallAsync { f, reply })
            .await
    }

    /// Sends `target` the message `msg` builds around a reply channel and waits for the
    /// result the other shard boxed; `None` if that shard is gone.
    async fn ask<R: 'static>(
        &self,
        target: usize,
        msg: impl FnOnce(oneshot::Sender<AnyBox>) -> Message,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        if !self.send(target, msg(tx)).await {
            return None;
        }
        rx.await
            .ok()
            .and_then(|b| b.downcast::<R>().ok())
            .map(|b| *b)
    }

    /// Runs `f` on every shard (concurrently) and returns the results in shard order.
    pub async fn call_all<R, F>(&self, f: F) -> Vec<Option<R>>
    where
        R: Send + 'static,
        F: Fn(&Shard) -> R + Send + Clone + 'static,
    {
        let futures: Vec<_> = (0..self.count)
            .map(|t| self.call_on(t, f.clone()))
            .collect();
        join_all(futures).await
    }

    pub(crate) async fn send(&self, target: usize, msg: Message) -> bool {
        match &self.senders {
            Some(s) => s.send_to(target, msg).await.is_ok(),
            None => false,
        }
    }

    /// Whether a chain waits among the deferred work.
    fn chain_deferred(&self) -> bool {
        self.deferred
            .borrow()
            .iter()
            .any(|d| matches!(d, Deferred::Msg(Message::Chain(_))))
    }

    /// Hands a chain on to shard `to`, after every chain this shard handed on to it before
    /// (the order [`crate::txn::Chain`] relies on). At once if the channel has room and
    /// nothing waits; otherwise queued, and one task sends the queue in order.
    pub(crate) fn forward(self: &Rc<Self>, to: usize, chain: Box<Chain>) {
        let msg = Message::Chain(chain);
        let Some(sending) = self.chain_sending.get(to) else {
            return;
        };
        if sending.get() {
            if let Some(queue) = self.chain_out.borrow_mut().get_mut(to) {
                queue.push_back(msg);
            }
            return;
        }
        let Some(senders) = &self.senders else {
            return;
        };
        match senders.try_send_to(to, msg) {
            Ok(()) => return,
            Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(msg))) => {
                if let Some(queue) = self.chain_out.borrow_mut().get_mut(to) {
                    queue.push_back(msg);
                }
            }
            // The peer is gone (shutting down): the chain's answers drop with it.
            Err(_) => return,
        }
        sending.set(true);
        let shard = self.clone();
        glommio::spawn_local(async move {
            loop {
                let next = shard
                    .chain_out
                    .borrow_mut()
                    .get_mut(to)
                    .and_then(|q| q.pop_front());
                let Some(msg) = next else { break };
                if !shard.send(to, msg).await {
                    if let Some(queue) = shard.chain_out.borrow_mut().get_mut(to) {
                        queue.clear();
                    }
                    break;
                }
            }
            if let Some(sending) = shard.chain_sending.get(to) {
                sending.set(false);
            }
        })
        .detach();
    }
}

/// A message that arrived while a busy script holds the shard: a batch of commands is answered
/// BUSY (`None`: done); anything else is handed back to wait.
fn refuse_busy(msg: Message, busy: &'static str) -> Option<Message> {
    match msg {
        Message::Batch { cmds, reply } => {
            let _ = reply.send((vec![Frame::StaticError(busy); cmds.len()], Spent(cmds)));
            None
        }
        Message::BatchOrBlock { cmds, reply, .. } => {
            let _ = reply.send(vec![Frame::StaticError(busy); cmds.len()]);
            None
        }
        Message::Atomic { cmds, reply, .. } => {
            let _ = reply.send(Some(vec![Frame::StaticError(busy); cmds.len()]));
            None
        }
        other => Some(other),
    }
}

/// Messages from one peer handled before the shard polls its I/O again (each a batch of up to
/// a pipeline step's commands).
const MESSAGES_PER_TURN: u32 = 16;

/// How far ahead of the command it runs [`run_cmds`] asks for a command's key from memory.
const PREFETCH_BATCH: usize = 8;

/// Runs `cmds` against `store` in order. While the log is failing (`failing`), write commands
/// are refused with MISCONF before they execute. After each command that changed the keyspace,
/// `on_effects(index, is_write, effects)` receives what it logged (a read logs only the keys
/// it found expired).
pub(crate) fn run_cmds(
    store: &mut Store,
    cmds: &[Call],
    now: u64,
    failing: Option<&str>,
    on_effects: impl FnMut(usize, bool, &[Vec<Bytes>]),
) -> Vec<Frame> {
    match failing {
        // With a failed log, reads run on the keyspace rebuilt from it and answer at once:
        // none may evict, as its deletion could not be logged (review finding).
        Some(_) => {
            store.without_memory_checks(|store| run_each(store, cmds, now, failing, on_effects))
        }
        None => run_each(store, cmds, now, failing, on_effects),
    }
}

/// [`run_cmds`]'s loop, with the memory checks as they are.
fn run_each(
    store: &mut Store,
    cmds: &[Call],
    now: u64,
    failing: Option<&str>,
    mut on_effects: impl FnMut(usize, bool, &[Vec<Bytes>]),
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(cmds.len());
    if cmds.len() > 1 {
        for call in cmds.iter().take(PREFETCH_BATCH) {
            store.prefetch_call(call);
        }
    }
    // A command's time (INFO commandstats, SLOWLOG, LATENCY) runs from the end of the one
    // before it, or of the batch's start, the last log append or the last SLOWLOG entry: one
    // clock read a command where there were two (reading the clock was 5 % of a pipelined
    // GET's CPU). What lies between two commands (the next key's prefetch, the counters) is
    // well under a µs.
    let mut mark = std::time::Instant::now();
    for (i, call) in cmds.iter().enumerate() {
        if let Some(ahead) = cmds.get(i + PREFETCH_BATCH) {
            store.prefetch_call(ahead);
        }
        let is_write = call.spec().is_write();
        // A client's command is counted (INFO commandstats, SLOWLOG); the server's own steps
        // (client 0: a cross-shard command's, a blocked call's attempts) are not.
        let counted = call.client != 0;
        if let (Some(cause), true) = (failing, is_write) {
            if counted {
                moon_store::stats::rejected(call.spec(), &call.args);
            }
            frames.push(misconf(cause));
            continue;
        }
        let started = mark;
        let reply = store.run(call, now);
        mark = std::time::Instant::now();
        if store.take_refused() {
            if counted {
                moon_store::stats::rejected(call.spec(), &call.args);
            }
        } else if counted {
            let usec = mark.duration_since(started).as_micros() as u64;
            moon_store::stats::called(call.spec(), &call.args, usec, reply.is_error());
            if moon_store::slowlog::is_slow(usec)
                && !call
                    .spec()
                    .flags
                    .has(moon_store::command::Flags::SKIP_SLOWLOG)
            {
                moon_store::slowlog::push(&call.args, usec, now / 1000, call.client, None);
                // The push (a lock, a copy of the arguments) is not the next command's time:
                // at a threshold of 0, each would carry the one before.
                mark = std::time::Instant::now();
            }
            moon_store::latency::sample(call.spec().latency_event(), usec / 1000, now / 1000);
        }
        frames.push(reply);
        if store.is_paused() {
            // A busy script paused: the shard takes it from here ([`Shard::pause`]).
            break;
        }
        if !store.logged().is_empty() {
            on_effects(i, is_write, store.logged());
            store.clear_log();
            mark = std::time::Instant::now();
        }
    }
    frames
}

/// Waits until the held replies may leave. If the log could not be made safe, every reply of
/// the batch becomes MISCONF: a failed write or fsync never becomes a success reply, and a
/// read held with it may have seen a write the log lacks.
pub(crate) async fn settle(held: Held) -> Vec<Frame> {
    settle_rest(held).await
}

/// [`settle`], boxed where it recurses (a paused script's batch may hold another).
fn settle_rest(held: Held) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Frame>>>> {
    Box::pin(async move {
        let Held {
            mut frames,
            writer,
            lsn,
            rest,
        } = held;
        if let Some(writer) = writer {
            if let Err(cause) = writer.wait(lsn).await {
                for f in frames.iter_mut() {
                    *f = misconf(&cause);
                }
            }
        }
        if let Some((rest, count)) = rest {
            let n = frames.len();
            match rest.await {
                Ok(more) => frames.extend(more),
                Err(_) => frames.resize(n + count, Frame::StaticError(SHARD_GONE)),
            }
        }
        frames
    })
}

/// `f` as a message can carry it: its result boxed, its type erased.
fn erase<R, F>(f: F) -> Box<dyn FnOnce(&Shard) -> AnyBox + Send>
where
    R: Send + 'static,
    F: FnOnce(&Shard) -> R + Send + 'static,
{
    Box::new(move |s| Box::new(f(s)) as AnyBox)
}

/// Awaits all futures concurrently, keeping their order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(|f| Box::pin(f)).collect();
    let mut out: Vec<Option<F::Output>> = (0..futures.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
