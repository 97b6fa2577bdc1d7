//! One connection's state, at the bottom of the connection layers: what CLIENT LIST shows
//! ([`ClientInfo`], in its shard's registry [`CLIENTS`], where pub/sub and tracking find it),
//! and what commands change ([`Session`]: protocol, user, database, MULTI, subscriptions,
//! reply mode). The connection loop (`conn`) and the command handlers read and change it;
//! it calls neither.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use indexmap::IndexSet;
use moon_proto::{Frame, Limits, Protocol, RequestParser};

use moon_store::WatchToken;

use crate::config::OutputLimit;
use crate::dispatch::Request;
use crate::shared::ShardServer;

/// When a connection last did something (read bytes, or finished writing a reply), on the
/// kernel's coarse monotonic clock. Its precision, a scheduler tick (1-4 ms), is plenty for
/// an idle time shown and enforced in seconds, and reading it costs a few nanoseconds, where
/// an `Instant` was three of the ten clock reads an unpipelined request made.
pub struct Activity(Cell<u64>);

impl Activity {
    pub fn now() -> Activity {
        Activity(Cell::new(coarse_ms()))
    }

    /// Something happened now.
    pub fn touch(&self) {
        self.0.set(coarse_ms());
    }

    /// How long since the last thing that happened.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(coarse_ms().saturating_sub(self.0.get()))
    }
}

/// Milliseconds on `CLOCK_MONOTONIC_COARSE` (which cannot fail on Linux; 0 if it did).
fn coarse_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |t| {
        (t.tv_sec() as u64).saturating_mul(1000) + t.tv_nsec() as u64 / 1_000_000
    })
}

/// What CLIENT LIST shows about a connection. Lives in its shard's registry.
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub name: RefCell<String>,
    pub lib_name: RefCell<String>,
    pub lib_ver: RefCell<String>,
    pub created: Instant,
    pub last_active: Activity,
    pub last_cmd: Cell<&'static str>,
    pub resp: Cell<u8>,
    pub db: Cell<usize>,
    /// Channel and pattern subscriptions, for CLIENT LIST's `sub=` / `psub=` / `ssub=`.
    pub sub_counts: Cell<(usize, usize, usize)>,
    /// What other connections produced for this client (pub/sub messages, invalidations).
    pub out: Outbox,
    /// The shard serving the connection (CLIENT LIST's last field, Moon's own).
    pub shard: usize,
    /// CLIENT TRACKING settings; `None` = off.
    pub tracking: RefCell<Option<TrackingState>>,
    /// The ACL user the connection runs as (CLIENT LIST's `user=`).
    pub user: RefCell<String>,
    /// In a blocking command (CLIENT LIST's `b` flag, CLIENT UNBLOCK).
    pub blocked: Cell<bool>,
    /// CLIENT UNBLOCK asked it to stop waiting: `Some(true)` with an error, `Some(false)` as
    /// a timeout.
    pub unblock: Cell<Option<bool>>,
    /// Bytes of requests read and not yet run, and room left in that buffer (CLIENT LIST's
    /// `qbuf` / `qbuf-free`).
    pub qbuf: Cell<(usize, usize)>,
    /// The last command's subcommand, for a container (`cmd=client|list`); empty otherwise.
    pub last_sub: RefCell<String>,
    /// Bytes the connection's read and write buffers hold (CLIENT LIST's `tot-mem`, with
    /// `omem`).
    pub buffers: Cell<usize>,
    /// CLIENT NO-EVICT (flag `e`): Moon never evicts clients, the flag is kept for tools.
    pub no_evict: Cell<bool>,
    /// CLIENT NO-TOUCH (flag `T`): its commands leave keys' LRU/LFU alone (but TOUCH).
    pub no_touch: Cell<bool>,
    /// A replica's link (flag `S`): it is fed the replication stream.
    pub replica: Cell<bool>,
}

impl ClientInfo {
    /// Whether the peer is on loopback as Redis counts it: 127.0.0.1 or ::1 only (protected
    /// mode, `enable-debug-command local`).
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.addr)
    }

    /// After `last_cmd`: its subcommand if it is a container (CLIENT LIST's `cmd=`). Nothing is
    /// allocated for other commands.
    pub fn note_subcommand(&self, name: &'static str, args: &[Bytes]) {
        let mut sub = self.last_sub.borrow_mut();
        sub.clear();
        if let Some(s) = args
            .get(1)
            .filter(|_| moon_store::stats::is_container(name))
        {
            if s.len() <= 32 && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
                sub.extend(s.iter().map(|b| b.to_ascii_lowercase() as char));
            }
        }
    }

    /// CLIENT LIST's `flags=`: Redis's letters for what applies, `N` for none.
    fn flags(&self) -> String {
        let mut f = String::new();
        if self.sub_counts.get() != (0, 0, 0) {
            f.push('P');
        }
        if self.blocked.get() {
            f.push('b');
        }
        if let Some(t) = self.tracking.borrow().as_ref() {
            f.push('t');
            if t.redirect_broken {
                f.push('R');
            }
        }
        if self.no_evict.get() {
            f.push('e');
        }
        if self.no_touch.get() {
            f.push('T');
        }
        if self.replica.get() {
            f.push('S');
        }
        if f.is_empty() {
            f.push('N');
        }
        f
    }

    /// One CLIENT LIST / CLIENT INFO line, in Redis's field order.
    pub fn line(&self) -> String {
        let now = Instant::now();
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi=-1 qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={} tot-mem={} events=r cmd={}{}{} user={} redir=-1 resp={} lib-name={} lib-ver={} shard={}",
            self.id,
            self.addr,
            self.laddr,
            self.name.borrow(),
            now.duration_since(self.created).as_secs(),
            self.last_active.idle().as_secs(),
            self.flags(),
            self.db.get(),
            self.sub_counts.get().0,
            self.sub_counts.get().1,
            self.sub_counts.get().2,
            self.qbuf.get().0,
            self.qbuf.get().1,
            self.out.pending(),
            self.buffers.get() + self.out.pending(),
            self.last_cmd.get(),
            if self.last_sub.borrow().is_empty() { "" } else { "|" },
            self.last_sub.borrow(),
            self.user.borrow(),
            self.resp.get(),
            self.lib_name.borrow(),
            self.lib_ver.borrow(),
            self.shard,
        )
    }
}

thread_local! {
    /// This shard's connections, for CLIENT LIST (read on this thread by a fan-out call).
    pub static CLIENTS: RefCell<BTreeMap<u64, Rc<ClientInfo>>> = const { RefCell::new(BTreeMap::new()) };
}

/// Per-connection state that commands can change.
pub struct Session {
    pub ctx: Rc<ShardServer>,
    pub info: Rc<ClientInfo>,
    pub proto: Protocol,
    pub authenticated: bool,
    pub quit: bool,
    /// CLIENT KILL of this very client: everything it sent so far runs (a MULTI/EXEC whole),
    /// its replies are written, then it closes (Redis's CLOSE_AFTER_REPLY).
    pub close_after_reply: bool,
    /// The selected database (SELECT).
    pub db: usize,
    /// Copy of the runtime-changeable settings, refreshed when the config version moves.
    pub(crate) config_version: u64,
    /// The ACL user this connection runs as (a snapshot, refreshed when the ACL changes).
    pub user: std::sync::Arc<crate::acl::User>,
    pub(crate) acl_version: u64,
    pub(crate) max_bulk_len: usize,
    /// `timeout` (None = never) and `client-query-buffer-limit`.
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) query_buffer_limit: usize,
    /// MULTI/WATCH state.
    pub multi: TxState,
    /// Set while this connection's commands run inside a cross-shard transaction: batches go
    /// to the locked shards as transaction steps.
    pub tx: Option<moon_shard::Tx>,
    /// Channels, patterns and shard channels this connection subscribed to.
    pub subs: Subscriptions,
    /// CLIENT REPLY.
    pub reply: ReplyMode,
    /// CLIENT CACHING YES/NO: applies to the next command (OPTIN / OPTOUT tracking).
    pub caching: Option<bool>,
    /// PUBLISH/SPUBLISH run inside a transaction (`tx` set), held until its parts are durable
    /// (`txn::run` delivers them after the commit, or drops them): each with the offset in the
    /// transaction's reply buffer where its receiver count goes.
    pub(crate) held_publications: Vec<(Publication, usize)>,
    /// The blocking command it waits in, if any (`blocking.rs`).
    pub(crate) blocked: Option<Blocked>,
    /// The client's commands that came after the one it blocks in: they run once it ends.
    pub(crate) deferred: Vec<crate::dispatch::Parsed>,
    /// Their size, counted against `client-query-buffer-limit`.
    pub(crate) deferred_bytes: usize,
    /// A blocking command's attempt runs (it must not block again).
    pub(crate) attempting: bool,
    /// MONITOR: the lines fed for this client, which the connection loop writes.
    pub(crate) monitor: Option<std::sync::Arc<moon_store::monitor::Feed>>,
    /// Set once PSYNC/SYNC made this connection a replica's link: the loop writes it the
    /// replication stream (`repl_feed.rs`).
    pub(crate) replica: Option<std::sync::Arc<crate::repl_feed::Link>>,
    /// The port the replica said it listens on (REPLCONF listening-port), before PSYNC.
    pub(crate) replica_port: u64,
    /// The replica reads an RDB framed `$EOF:<mark>` ... `<mark>` (REPLCONF capa eof).
    pub(crate) replica_capa_eof: bool,
    /// This session applies the primary's stream (`replica.rs`): it writes on a read-only
    /// replica and while the replica loads.
    pub(crate) is_master: bool,
    /// The errors its commands answered (the master session's only): a primary sends only
    /// what it applied, so each is a command this replica did not apply as its primary did.
    pub(crate) refused: std::cell::RefCell<Vec<String>>,
}

/// The error texts of a reply and of its direct elements (EXEC's replies).
fn note_refusals(frame: &Frame, into: &mut Vec<String>) {
    match frame {
        Frame::Error(e) => into.push(e.clone()),
        Frame::StaticError(e) => into.push(e.to_string()),
        Frame::Array(items) => {
            for i in items {
                match i {
                    Frame::Error(e) => into.push(e.clone()),
                    Frame::StaticError(e) => into.push(e.to_string()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// CLIENT REPLY ON / OFF / SKIP. Pub/sub frames (confirmations, messages) are pushes and are
/// sent whatever the mode, as Redis sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// The next command's reply is not sent.
    SkipNext,
}

impl Session {
    /// This server is a read-only replica and this is one of its clients (not the session
    /// that applies the primary's stream): its writes are refused (READONLY).
    pub fn on_read_only_replica(&self) -> bool {
        !self.is_master
            && self
                .ctx
                .shared
                .read_only
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes a reply for the client, counting its errors (INFO `total_error_replies` and
    /// errorstats; each of an EXEC's replies that is an error counts, as in Redis). Every
    /// reply goes through here.
    pub fn reply(&self, frame: &Frame, out: &mut BytesMut) {
        count_errors(frame, &self.ctx.shard.counters);
        if self.is_master {
            note_refusals(frame, &mut self.refused.borrow_mut());
        }
        frame.encode(self.proto, out);
    }

    /// The client id its calls carry: 0 for a blocked command's attempts, which are counted
    /// once, when the command ends ([`Session::counted`]), not each time they run.
    pub fn caller(&self) -> u64 {
        if self.attempting {
            0
        } else {
            self.info.id
        }
    }

    /// A command run by the connection itself (not in a store, which counts its own), or a
    /// blocking command that ended: INFO commandstats and SLOWLOG.
    pub fn counted(
        &self,
        spec: &'static moon_store::command::CommandSpec,
        args: &[Bytes],
        usec: u64,
        failed: bool,
    ) {
        moon_store::stats::called(spec, args, usec, failed);
        if moon_store::latency::is_event(usec / 1000) {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            moon_store::latency::sample(spec.latency_event(), usec / 1000, secs);
        }
        if moon_store::slowlog::is_slow(usec)
            && !spec.flags.has(moon_store::command::Flags::SKIP_SLOWLOG)
        {
            let time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let name = self.info.name.borrow();
            let who = Some((self.info.addr.as_str(), name.as_str()));
            moon_store::slowlog::push(args, usec, time, self.info.id, who);
        }
    }

    /// After a (un)subscribe: CLIENT LIST's counts.
    pub fn note_subscriptions(&self) {
        self.info.sub_counts.set((
            self.subs.channels.len(),
            self.subs.patterns.len(),
            self.subs.shard_channels.len(),
        ));
    }
}

impl Session {
    /// Picks up configuration and ACL changes (the user deleted or no longer allowed its
    /// channels: `quit`).
    pub(crate) fn refresh_config(&mut self, parser: &mut RequestParser) {
        let a = self.ctx.shared.acl_version();
        if a != self.acl_version {
            self.acl_version = a;
            match self.ctx.shared.user(&self.user.name) {
                // Deleted, or deleted and created again (another user: its password may differ).
                Some(u) if u.generation == self.user.generation => {
                    let channels: Vec<&Bytes> = self
                        .subs
                        .channels
                        .iter()
                        .chain(&self.subs.shard_channels)
                        .collect();
                    let patterns: Vec<&Bytes> = self.subs.patterns.iter().collect();
                    if !u.may_keep(&channels, &patterns) {
                        tracing::debug!(
                            client = self.info.id,
                            "closing: its user may no longer use its channels"
                        );
                        self.quit = true;
                    }
                    self.user = u;
                }
                _ => {
                    tracing::debug!(client = self.info.id, "closing: its user was deleted");
                    self.quit = true;
                }
            }
        }
        let v = self.ctx.shared.config_version();
        if v != self.config_version {
            let c = self.ctx.shared.config();
            self.config_version = v;
            self.max_bulk_len = c.proto_max_bulk_len as usize;
            self.idle_timeout = (c.timeout > 0).then(|| Duration::from_secs(c.timeout));
            self.query_buffer_limit = c.client_query_buffer_limit as usize;
            parser.set_limits(Limits {
                max_bulk_len: self.max_bulk_len,
                ..Limits::default()
            });
        }
    }
}

/// Whether a peer address (`ip:port`) is loopback as Redis counts it: 127.0.0.1 or ::1 only,
/// or a Unix socket's client (`/path:0`), which is on this machine by definition.
fn is_loopback(addr: &str) -> bool {
    if addr.starts_with('/') {
        return true;
    }
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => match a.ip() {
            std::net::IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
            std::net::IpAddr::V6(v6) => {
                v6 == std::net::Ipv6Addr::LOCALHOST
                    || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
            }
        },
        Err(_) => false,
    }
}

/// What a connection's task has to write that others produced for it: pub/sub messages and
/// invalidations. Only its own shard's thread touches it.
#[derive(Default)]
pub struct Outbox {
    buf: RefCell<BytesMut>,
    waker: Cell<Option<Waker>>,
    /// Bytes taken out and being written to the socket right now (they still count against
    /// the limit: the client has not read them).
    in_flight: Cell<usize>,
    over_soft_since: Cell<Option<Instant>>,
    /// Set when the client passed its output limit: its connection closes.
    closing: Cell<bool>,
    /// Set to make the connection check its ACL user again (ACL changes).
    kicked: Cell<bool>,
    /// Set to make an idle connection give its buffers back (the shard's sweep).
    release: Cell<bool>,
}

impl Outbox {
    /// Appends encoded `bytes` and wakes the connection's task. Past the output limit the
    /// client is marked for disconnection and its pending output dropped: returns true then
    /// (the caller counts it).
    pub fn push_encoded(&self, bytes: &[u8], limit: OutputLimit, who: &ClientInfo) -> bool {
        if self.closing.get() {
            return false;
        }
        let pending = {
            let mut buf = self.buf.borrow_mut();
            buf.extend_from_slice(bytes);
            buf.len() + self.in_flight.get()
        } as u64;
        let over_hard = limit.hard > 0 && pending > limit.hard;
        let mut over_soft = false;
        if limit.soft > 0 && pending > limit.soft {
            let since = *self.over_soft_since.get().get_or_insert_with(Instant::now);
            self.over_soft_since.set(Some(since));
            over_soft = since.elapsed().as_secs() >= limit.soft_seconds;
        } else {
            self.over_soft_since.set(None);
        }
        if over_hard || over_soft {
            tracing::warn!(
                client = who.id,
                addr = %who.addr,
                "closing a client that overcame its output buffer limit (client-output-buffer-limit pubsub {} {} {}): {pending} bytes waiting",
                limit.hard,
                limit.soft,
                limit.soft_seconds
            );
            self.closing.set(true);
            *self.buf.borrow_mut() = BytesMut::new();
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        over_hard || over_soft
    }

    /// Appends a frame the connection itself produced for the client (its own (un)subscribe
    /// confirmations under CLIENT REPLY OFF), no limit applied.
    pub fn push(&self, frame: &Frame, proto: Protocol) {
        frame.encode(proto, &mut self.buf.borrow_mut());
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Wakes the connection to check its ACL user again.
    pub fn kick(&self) {
        self.kicked.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Asks the connection to give its buffers back if it has nothing to parse or send.
    pub fn ask_release(&self) {
        self.release.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether [`Outbox::ask_release`] was called since the last time.
    pub fn take_release(&self) -> bool {
        self.release.replace(false)
    }

    /// Whether [`Outbox::kick`] was called since the last time.
    pub fn take_kick(&self) -> bool {
        self.kicked.replace(false)
    }

    /// Resolves once there is something to write, or the client must be closed or check its
    /// user.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            if self.closing.get()
                || self.kicked.get()
                || self.release.get()
                || !self.buf.borrow().is_empty()
            {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves once the client must be closed (its output limit was passed).
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| {
            if self.closing.get() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// CLIENT KILL: the connection closes (without writing anything more) once its task sees
    /// it, also from a blocking wait.
    pub fn close(&self) {
        self.closing.set(true);
        self.kick();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Moves what is waiting to the end of `out`.
    pub fn drain_into(&self, out: &mut BytesMut) {
        let mut buf = self.buf.borrow_mut();
        if !buf.is_empty() {
            out.extend_from_slice(&buf);
            buf.clear();
        }
    }

    /// Bytes waiting for the client: queued here or being written (CLIENT LIST's `omem`).
    pub fn pending(&self) -> usize {
        self.buf.borrow().len() + self.in_flight.get()
    }

    /// Marks `n` bytes as being written (0 when the write is done).
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n);
        if n == 0 && self.buf.borrow().is_empty() {
            self.over_soft_since.set(None);
        }
    }
}

/// One connection's subscriptions (its half of the registry).
#[derive(Default)]
pub struct Subscriptions {
    pub channels: IndexSet<Bytes>,
    pub patterns: IndexSet<Bytes>,
    pub shard_channels: IndexSet<Bytes>,
}

impl Subscriptions {
    /// Any subscription at all: RESP2 clients are then in the subscribed context.
    pub fn any(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty())
    }

    /// Redis's count in (un)subscribe replies: channels and patterns together.
    pub fn count(&self) -> i64 {
        (self.channels.len() + self.patterns.len()) as i64
    }
}

/// A connection's CLIENT TRACKING settings (in its [`ClientInfo`], where deliveries look).
#[derive(Clone, Debug, Default)]
pub struct TrackingState {
    pub redirect: Option<u64>,
    /// The redirect target left: the client was told once (`tracking-redir-broken`).
    pub redirect_broken: bool,
    pub bcast: bool,
    /// BCAST's prefixes, every one given since tracking went on (the empty prefix, every
    /// key, when none was named).
    pub prefixes: Vec<Bytes>,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
}

/// The channel namespace a publication is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// PUBLISH / SUBSCRIBE, and PSUBSCRIBE patterns.
    Channel,
    /// SPUBLISH / SSUBSCRIBE: shard channels (no patterns).
    Shard,
}

/// One message for one channel.
#[derive(Clone, Debug)]
pub struct Publication {
    pub kind: Kind,
    pub channel: Bytes,
    pub message: Bytes,
}

/// A connection's transaction state.
#[derive(Default)]
pub struct TxState {
    /// Commands queued since MULTI; `None` outside MULTI.
    pub queued: Option<Vec<Request>>,
    /// A queued command was refused (unknown, wrong arity): EXEC answers EXECABORT.
    pub failed: bool,
    /// WATCHed keys: key, its shard, what WATCH saw.
    pub watches: Vec<(Bytes, usize, WatchToken)>,
}

/// A client blocked in a command (BLPOP...): what `blocking.rs` needs to try it again, wait
/// and end it.
pub struct Blocked {
    /// The command as the client sent it: each attempt parses it again.
    pub(crate) args: Vec<Bytes>,
    pub(crate) db: usize,
    pub(crate) id: u64,
    /// `None`: forever.
    pub(crate) deadline: Option<std::time::Instant>,
    pub(crate) wants: &'static str,
    /// The keys it waits on, each with its shard.
    pub(crate) keys: Vec<(usize, Bytes)>,
    pub(crate) wake: futures_channel::mpsc::UnboundedSender<moon_shard::Woken>,
    pub(crate) woken: futures_channel::mpsc::UnboundedReceiver<moon_shard::Woken>,
    /// Keys it was woken for since its last attempt (database, key).
    pub(crate) pending: Vec<(usize, Bytes)>,
    /// What its attempt answers when it took nothing.
    pub(crate) nil: Frame,
    /// The key its last attempt took from, when the reply says (its own pop then wakes the
    /// key's next waiter, so `blocking::finish` does not pass that wake on twice: two waiters woken
    /// for one element would race, out of order).
    pub(crate) served: Option<Bytes>,
    /// CLIENT REPLY OFF or SKIP was on when it blocked: its reply is dropped (as Redis drops
    /// it; review finding).
    pub(crate) silent: bool,
}

/// `frame.reply_to(session, out)`: [`Session::reply`] in the order a reply is written.
pub trait Reply {
    fn reply_to(&self, session: &Session, out: &mut BytesMut);
}

impl Reply for Frame {
    fn reply_to(&self, session: &Session, out: &mut BytesMut) {
        session.reply(self, out);
    }
}

/// Counts the error replies in `frame` by code (the text's first word, as Redis's errorstats):
/// the frame itself, or the direct elements of an array — EXEC's replies, one per command.
/// Deeper levels are never replies of their own, and are not walked (an LRANGE's elements are
/// looked at once each, a nested reply's not at all).
fn count_errors(frame: &Frame, counters: &moon_shard::ShardCounters) {
    match frame {
        Frame::Error(text) => counters.error_reply(moon_store::stats::error_code(text)),
        Frame::StaticError(text) => counters.error_reply(moon_store::stats::error_code(text)),
        Frame::Array(items) => {
            for f in items {
                if let Some(text) = f.error_text() {
                    counters.error_reply(moon_store::stats::error_code(text));
                }
            }
        }
        _ => {}
    }
}
