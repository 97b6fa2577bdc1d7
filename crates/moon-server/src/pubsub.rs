//! Pub/sub: who is subscribed to what on this shard, delivery to them, and the fan-out of a
//! publication to every shard.
//!
//! A connection lives on one shard, and so do its subscriptions: each shard keeps a registry
//! of its own connections' channels, patterns and shard channels (thread-local, never shared,
//! never locked). A PUBLISH is delivered on the publisher's shard at once and sent to every
//! other shard in one message per batch of publications (a pipeline's PUBLISHes, or the
//! keyspace events of one shard's batch); each shard delivers to its own subscribers and
//! answers how many received it. Messages from one shard to another travel in order on one
//! channel, and a publisher waits for its counts before it publishes again, so every
//! subscriber sees one publisher's messages in the order they were sent.
//!
//! Delivery never waits for a subscriber: a message is appended to the subscriber's
//! [`Outbox`], which its own connection task writes to the socket. A subscriber that does not
//! read lets its outbox grow up to `client-output-buffer-limit pubsub` — past the hard limit
//! at once, past the soft limit for longer than its seconds — and is then disconnected, with
//! the event logged. Nothing else ever grows with a slow subscriber.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use indexmap::IndexSet;
use moon_proto::{Frame, Protocol};
use moon_shard::{join_all, Shard};
use moon_store::glob::glob_match;
use moon_store::reply;

use crate::config::OutputLimit;
use crate::session::Reply as _;
use crate::session::{ClientInfo, Kind, Publication, Session, Subscriptions};

type Subscribers = BTreeMap<u64, Rc<ClientInfo>>;

/// This shard's subscriptions.
#[derive(Default)]
struct Registry {
    channels: HashMap<Bytes, Subscribers>,
    patterns: HashMap<Bytes, Subscribers>,
    shard_channels: HashMap<Bytes, Subscribers>,
    limit: Cell<Option<OutputLimit>>,
    disconnections: Cell<u64>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// How many names (channels, patterns, shard channels) each shard's registry holds, for
/// publishers on other shards: a shard with none is not sent the publication. A subscriber's
/// shard counts its name before the SUBSCRIBE confirmation leaves, so a publication that
/// follows the confirmation (in any client's causal order) sees it.
static ACTIVE: [std::sync::atomic::AtomicUsize; crate::config::MAX_SHARDS] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; crate::config::MAX_SHARDS];

fn active_here(shard: usize, delta: isize) {
    use std::sync::atomic::Ordering;
    if let Some(a) = ACTIVE.get(shard) {
        if delta > 0 {
            a.fetch_add(1, Ordering::AcqRel);
        } else {
            a.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn active_on(shard: usize) -> bool {
    ACTIVE
        .get(shard)
        .is_none_or(|a| a.load(std::sync::atomic::Ordering::Acquire) > 0)
}

/// Sets this shard's `client-output-buffer-limit pubsub` (at startup and on CONFIG SET).
pub fn set_limit(limit: OutputLimit) {
    REGISTRY.with(|r| r.borrow().limit.set(Some(limit)));
}

/// Clients this shard disconnected for their output limit (INFO).
pub fn disconnections() -> u64 {
    REGISTRY.with(|r| r.borrow().disconnections.get())
}

/// The three kinds of subscription, as (un)subscribe commands name them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Space {
    Channel,
    Pattern,
    ShardChannel,
}

impl Space {
    fn of(name: &str) -> Space {
        match name {
            "psubscribe" | "punsubscribe" => Space::Pattern,
            "ssubscribe" | "sunsubscribe" => Space::ShardChannel,
            _ => Space::Channel,
        }
    }

    fn words(self) -> (&'static str, &'static str) {
        match self {
            Space::Channel => ("subscribe", "unsubscribe"),
            Space::Pattern => ("psubscribe", "punsubscribe"),
            Space::ShardChannel => ("ssubscribe", "sunsubscribe"),
        }
    }

    fn mine(self, subs: &mut Subscriptions) -> &mut IndexSet<Bytes> {
        match self {
            Space::Channel => &mut subs.channels,
            Space::Pattern => &mut subs.patterns,
            Space::ShardChannel => &mut subs.shard_channels,
        }
    }

    fn count(self, subs: &Subscriptions) -> i64 {
        match self {
            Space::ShardChannel => subs.shard_channels.len() as i64,
            _ => subs.count(),
        }
    }
}

fn registry_map(r: &mut Registry, space: Space) -> &mut HashMap<Bytes, Subscribers> {
    match space {
        Space::Channel => &mut r.channels,
        Space::Pattern => &mut r.patterns,
        Space::ShardChannel => &mut r.shard_channels,
    }
}

fn confirmation(word: &'static str, name: Option<&Bytes>, count: i64) -> Frame {
    Frame::Push(vec![
        Frame::bulk(word),
        name.map_or(Frame::Null, |n| Frame::Bulk(n.clone())),
        Frame::Integer(count),
    ])
}

/// SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE: one confirmation per name.
pub fn subscribe(session: &mut Session, name: &str, names: &[Bytes]) -> Vec<Frame> {
    let space = Space::of(name);
    let (word, _) = space.words();
    let id = session.info.id;
    let mut replies = Vec::with_capacity(names.len());
    for n in names {
        if space.mine(&mut session.subs).insert(n.clone()) {
            let fresh = REGISTRY.with(|r| {
                let mut r = r.borrow_mut();
                let subs = registry_map(&mut r, space).entry(n.clone()).or_default();
                subs.insert(id, session.info.clone());
                subs.len() == 1
            });
            if fresh {
                active_here(session.info.shard, 1);
            }
        }
        replies.push(confirmation(word, Some(n), space.count(&session.subs)));
    }
    replies
}

/// UNSUBSCRIBE / PUNSUBSCRIBE / SUNSUBSCRIBE: one confirmation per name (every subscription of
/// that kind without names; a single one with no name when there is none).
pub fn unsubscribe(session: &mut Session, name: &str, names: &[Bytes]) -> Vec<Frame> {
    let space = Space::of(name);
    let (_, word) = space.words();
    let names: Vec<Bytes> = if names.is_empty() {
        space.mine(&mut session.subs).iter().cloned().collect()
    } else {
        names.to_vec()
    };
    if names.is_empty() {
        return vec![confirmation(word, None, space.count(&session.subs))];
    }
    names
        .iter()
        .map(|n| {
            if space.mine(&mut session.subs).shift_remove(n) {
                forget(space, n, session.info.id, session.info.shard);
            }
            confirmation(word, Some(n), space.count(&session.subs))
        })
        .collect()
}

fn forget(space: Space, name: &Bytes, id: u64, shard: usize) {
    let gone = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let map = registry_map(&mut r, space);
        if let Some(subs) = map.get_mut(name) {
            subs.remove(&id);
            if subs.is_empty() {
                map.remove(name);
                return true;
            }
        }
        false
    });
    if gone {
        active_here(shard, -1);
    }
}

/// Drops every subscription of the connection (RESET, disconnect).
pub fn forget_all(session: &mut Session) {
    let subs = std::mem::take(&mut session.subs);
    let id = session.info.id;
    for (space, names) in [
        (Space::Channel, subs.channels),
        (Space::Pattern, subs.patterns),
        (Space::ShardChannel, subs.shard_channels),
    ] {
        for n in &names {
            forget(space, n, id, session.info.shard);
        }
    }
}

/// A message's encodings, made once per protocol however many subscribers get it.
struct Encoded {
    frame: Frame,
    bytes: [Option<BytesMut>; 2],
}

impl Encoded {
    fn new(frame: Frame) -> Encoded {
        Encoded {
            frame,
            bytes: [None, None],
        }
    }

    /// Sends the message to one subscriber; one cut off at its output limit is counted in
    /// `cut_off`.
    fn send_to(&mut self, info: &ClientInfo, limit: OutputLimit, cut_off: &Cell<u64>) {
        let proto = if info.resp.get() == 3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        };
        let slot = &mut self.bytes[usize::from(proto == Protocol::Resp3)];
        let frame = &self.frame;
        let bytes = slot.get_or_insert_with(|| {
            let mut b = BytesMut::new();
            frame.encode(proto, &mut b);
            b
        });
        if info.out.push_encoded(bytes, limit, info) {
            cut_off.set(cut_off.get() + 1);
        }
    }
}

/// Delivers publications to this shard's subscribers; returns how many received each.
pub fn deliver_here(pubs: &[Publication]) -> Vec<i64> {
    REGISTRY.with(|r| {
        let r = r.borrow();
        let limit = r.limit.get().unwrap_or(OutputLimit::PUBSUB);
        pubs.iter()
            .map(|p| {
                let mut receivers = 0i64;
                let exact = match p.kind {
                    Kind::Channel => &r.channels,
                    Kind::Shard => &r.shard_channels,
                };
                if let Some(subs) = exact.get(&p.channel) {
                    let word = match p.kind {
                        Kind::Channel => "message",
                        Kind::Shard => "smessage",
                    };
                    let mut msg = Encoded::new(Frame::Push(vec![
                        Frame::bulk(word),
                        Frame::Bulk(p.channel.clone()),
                        Frame::Bulk(p.message.clone()),
                    ]));
                    for info in subs.values() {
                        msg.send_to(info, limit, &r.disconnections);
                        receivers += 1;
                    }
                }
                if p.kind == Kind::Channel {
                    for (pattern, subs) in &r.patterns {
                        if !glob_match(pattern, &p.channel) {
                            continue;
                        }
                        let mut msg = Encoded::new(Frame::Push(vec![
                            Frame::bulk("pmessage"),
                            Frame::Bulk(pattern.clone()),
                            Frame::Bulk(p.channel.clone()),
                            Frame::Bulk(p.message.clone()),
                        ]));
                        for info in subs.values() {
                            msg.send_to(info, limit, &r.disconnections);
                            receivers += 1;
                        }
                    }
                }
                receivers
            })
            .collect()
    })
}

/// Delivers publications on every shard — this one at once, each other one in a single
/// message — and returns how many subscribers received each, across all shards.
pub async fn publish(shard: &Shard, pubs: Vec<Publication>) -> Vec<i64> {
    let mut totals = deliver_here(&pubs);
    if shard.count() == 1 {
        return totals;
    }
    let pubs = std::sync::Arc::new(pubs);
    let calls: Vec<_> = (0..shard.count())
        .filter(|&s| s != shard.id() && active_on(s))
        .map(|s| {
            let pubs = pubs.clone();
            shard.call_on(s, move |_| deliver_here(&pubs))
        })
        .collect();
    for counts in join_all(calls).await.into_iter().flatten() {
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    totals
}

/// This shard's view for PUBSUB: the names of one space with their subscriber counts.
fn counts_here(
    space: Space,
    names: Option<&[Bytes]>,
    pattern: Option<&Bytes>,
) -> Vec<(Bytes, i64)> {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let map = registry_map(&mut r, space);
        match names {
            Some(names) => names
                .iter()
                .map(|n| (n.clone(), map.get(n).map_or(0, |s| s.len() as i64)))
                .collect(),
            None => map
                .iter()
                .filter(|(n, _)| pattern.is_none_or(|p| glob_match(p, n)))
                .map(|(n, s)| (n.clone(), s.len() as i64))
                .collect(),
        }
    })
}

/// The names every shard reported, each once, sorted.
fn unique_names(per_shard: Vec<Option<Vec<(Bytes, i64)>>>) -> Vec<Bytes> {
    let mut names: Vec<Bytes> = per_shard
        .into_iter()
        .flatten()
        .flatten()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// PUBSUB CHANNELS / NUMSUB / NUMPAT / SHARDCHANNELS / SHARDNUMSUB / HELP, over every shard.
pub async fn pubsub_command(session: &Session, args: &[Bytes]) -> Frame {
    let sub = args[1].to_ascii_lowercase();
    let shard = &session.ctx.shard;
    let gather = |space: Space, names: Option<Vec<Bytes>>, pattern: Option<Bytes>| {
        shard.call_all(move |_: &Shard| counts_here(space, names.as_deref(), pattern.as_ref()))
    };
    match (&sub[..], args.len()) {
        (b"channels" | b"shardchannels", 2 | 3) => {
            let space = if sub == b"channels" {
                Space::Channel
            } else {
                Space::ShardChannel
            };
            let names = unique_names(gather(space, None, args.get(2).cloned()).await);
            Frame::Array(names.into_iter().map(Frame::Bulk).collect())
        }
        (b"numsub" | b"shardnumsub", _) => {
            let space = if sub == b"numsub" {
                Space::Channel
            } else {
                Space::ShardChannel
            };
            let names = args[2..].to_vec();
            let per_shard = gather(space, Some(names.clone()), None).await;
            let mut totals = vec![0i64; names.len()];
            for counts in per_shard.into_iter().flatten() {
                for (t, (_, c)) in totals.iter_mut().zip(counts) {
                    *t += c;
                }
            }
            Frame::Array(
                names
                    .into_iter()
                    .zip(totals)
                    .flat_map(|(n, c)| [Frame::Bulk(n), Frame::Integer(c)])
                    .collect(),
            )
        }
        (b"numpat", 2) => {
            Frame::Integer(unique_names(gather(Space::Pattern, None, None).await).len() as i64)
        }
        (b"help", 2) => Frame::Array(
            [
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|s| Frame::Simple(s))
            .collect(),
        ),
        _ => reply::unknown_subcommand(&args[1], "pubsub"),
    }
}

/// The error a RESP2 subscriber gets for any other command.
pub fn not_allowed_while_subscribed(name: &str) -> Frame {
    Frame::Error(format!(
        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    ))
}

thread_local! {
    /// `notify-keyspace-events` as this shard last heard it: which channels events go to.
    static NOTIFY: Cell<moon_store::NotifyFlags> = Cell::new(moon_store::NotifyFlags::default());
}

/// Applies `notify-keyspace-events` on this shard (its store names events, this publishes).
pub fn set_notify(shard: &Shard, flags: moon_store::NotifyFlags) {
    NOTIFY.with(|n| n.set(flags));
    shard.store().set_notify(flags);
}

/// The channel messages of keyspace events: `__keyspace@<db>__:<key>` → event and
/// `__keyevent@<db>__:<event>` → key, each as the flags ask, in Redis's order.
fn publications_of(
    events: &[moon_store::KeyEvent],
    flags: moon_store::NotifyFlags,
) -> Vec<Publication> {
    let mut pubs = Vec::with_capacity(events.len() * 2);
    for e in events {
        if let Some(message) = &e.message {
            // A script's PUBLISH.
            pubs.push(Publication {
                kind: Kind::Channel,
                channel: e.key.clone(),
                message: message.clone(),
            });
            continue;
        }
        if flags.keyspace() {
            let mut channel = format!("__keyspace@{}__:", e.db).into_bytes();
            channel.extend_from_slice(&e.key);
            pubs.push(Publication {
                kind: Kind::Channel,
                channel: Bytes::from(channel),
                message: Bytes::from_static(e.event.as_bytes()),
            });
        }
        if flags.keyevent() {
            pubs.push(Publication {
                kind: Kind::Channel,
                channel: Bytes::from(format!("__keyevent@{}__:{}", e.db, e.event)),
                message: e.key.clone(),
            });
        }
    }
    pubs
}

/// The shard's event sink: publishes its keyspace events on every shard, in order.
pub fn event_sink(shard: std::rc::Weak<Shard>) -> moon_shard::EventSink {
    Rc::new(move |events| {
        let shard = shard.clone();
        Box::pin(async move {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            if !(0..shard.count()).any(active_on) {
                return; // nobody listens anywhere
            }
            let pubs = publications_of(&events, NOTIFY.with(|n| n.get()));
            if !pubs.is_empty() {
                publish(&shard, pubs).await;
            }
        })
    })
}

/// Appends a message for a client (an invalidation) under the pub/sub output limit, as
/// messages are.
pub fn push_limited(frame: &Frame, proto: Protocol, who: &ClientInfo) {
    let mut bytes = BytesMut::new();
    frame.encode(proto, &mut bytes);
    let limit = REGISTRY.with(|r| r.borrow().limit.get().unwrap_or(OutputLimit::PUBSUB));
    if who.out.push_encoded(&bytes, limit, who) {
        REGISTRY.with(|r| {
            let r = r.borrow();
            r.disconnections.set(r.disconnections.get() + 1);
        });
    }
}

/// (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE (`name`): one confirmation per channel, written after
/// the messages that arrived before it (through the outbox while replies are silenced).
pub async fn subscription(
    session: &mut Session,
    name: &'static str,
    args: &[Bytes],
    out: &mut bytes::BytesMut,
) {
    let replies = if name.contains("unsub") {
        unsubscribe(session, name, &args[1..])
    } else {
        subscribe(session, name, &args[1..])
    };
    session.note_subscriptions();
    session.info.out.drain_into(out);
    for f in replies {
        if session.reply == crate::session::ReplyMode::On {
            f.reply_to(session, out);
        } else {
            session.info.out.push(&f, session.proto);
        }
    }
}
