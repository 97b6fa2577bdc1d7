//! The commands of a pipeline since the last barrier, grouped into one batch per shard, and
//! how their replies come back in request order: a command's own reply, a multi-key command's
//! parts merged (sum, key order, concatenation), or a PUBLISH's receiver count. `conn`
//! decides what goes in; this runs it and encodes the replies.

use bytes::{Bytes, BytesMut};
use moon_proto::Frame;
use moon_shard::join_all;
use moon_store::command::Merge;
use moon_store::slot::shard_for_key;
use moon_store::Call;

use crate::session::Reply as _;
use crate::session::Session;

/// Where the reply of one request comes from.
pub(crate) enum Slot {
    Ready(Frame),
    /// Reply `idx` of the batch sent to `shard`.
    One {
        shard: usize,
        idx: usize,
    },
    /// The receiver count of publication `idx` of the plan's publications.
    Published(usize),
    /// Several parts merged; for `Merge::KeyOrder`, `key_parts[i]` is the part holding key i.
    Merged {
        parts: Vec<(usize, usize)>,
        merge: Merge,
        key_parts: Vec<usize>,
    },
}

/// The commands of a pipeline since the last barrier, grouped per shard. Emptied plans are
/// kept on the shard's thread ([`Plan::take`], [`Plan::give_back`]), so an unpipelined
/// request does not allocate the per-shard lists and the reply order again.
pub(crate) struct Plan {
    pub(crate) batches: Vec<Vec<Call>>,
    pub(crate) slots: Vec<Slot>,
    /// PUBLISH / SPUBLISH since the last barrier: delivered on every shard in one message each.
    pub(crate) publishes: Vec<crate::session::Publication>,
    /// Each shard's replies while [`Plan::flush`] puts them in order (empty between flushes).
    replies: Vec<Vec<Frame>>,
}

/// Emptied plans kept per thread: as many as connections are in the middle of one at once,
/// up to [`SPARE_PLANS`].
const SPARE_PLANS: usize = 64;
/// Reply slots a kept plan may hold on to; a longer list (a long pipeline's) is given back.
const KEPT_SLOTS: usize = 1024;
/// Calls a kept plan's batch may hold room for (a pipeline runs 64 commands a step).
const KEPT_CALLS: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Plan>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Plan {
    pub(crate) fn new(shards: usize) -> Plan {
        Plan {
            batches: vec![Vec::new(); shards],
            slots: Vec::new(),
            publishes: Vec::new(),
            replies: vec![Vec::new(); shards],
        }
    }

    /// A kept plan for `shards` shards, or a new one.
    pub(crate) fn take(shards: usize) -> Plan {
        SPARE
            .with(|spare| spare.borrow_mut().pop())
            .filter(|p| p.batches.len() == shards)
            .unwrap_or_else(|| Plan::new(shards))
    }

    /// Keeps this plan for [`Plan::take`] if it is empty (everything planned has run).
    pub(crate) fn give_back(mut self) {
        if !(self.slots.is_empty()
            && self.publishes.is_empty()
            && self.batches.iter().all(Vec::is_empty))
        {
            return;
        }
        if self.slots.capacity() > KEPT_SLOTS {
            self.slots = Vec::new();
        }
        for batch in &mut self.batches {
            if batch.capacity() > KEPT_CALLS {
                *batch = Vec::new();
            }
        }
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_PLANS {
                spare.push(self);
            }
        });
    }

    pub(crate) fn publish(&mut self, kind: crate::session::Kind, args: &[Bytes]) {
        self.publishes.push(crate::session::Publication {
            kind,
            channel: args[1].clone(),
            message: args[2].clone(),
        });
        self.slots.push(Slot::Published(self.publishes.len() - 1));
    }

    pub(crate) fn ready(&mut self, f: Frame) {
        self.slots.push(Slot::Ready(f));
    }

    /// Appends a call to `shard`'s batch; returns the index of its reply.
    fn push(&mut self, shard: usize, call: Call) -> usize {
        self.batches[shard].push(call);
        self.batches[shard].len() - 1
    }

    pub(crate) fn one(&mut self, shard: usize, call: Call) {
        let idx = self.push(shard, call);
        self.slots.push(Slot::One { shard, idx });
    }

    /// Splits a multi-key command into one part per owning shard (each part the same
    /// command on that shard's keys, `step` arguments per key).
    pub(crate) fn split(&mut self, call: Call, step: usize, merge: Merge) {
        let n = self.batches.len();
        let args = &call.args;
        let groups = args[1..].chunks(step);
        let first = shard_for_key(&args[1], n);
        if groups.clone().all(|g| shard_for_key(&g[0], n) == first) {
            return self.one(first, call);
        }
        // part index per shard, in order of first appearance
        let mut part_of_shard: Vec<Option<usize>> = vec![None; n];
        let mut parts_args: Vec<(usize, Vec<Bytes>)> = Vec::new();
        let mut key_parts = Vec::new();
        for g in groups {
            let s = shard_for_key(&g[0], n);
            let p = *part_of_shard[s].get_or_insert_with(|| {
                parts_args.push((s, vec![args[0].clone()]));
                parts_args.len() - 1
            });
            parts_args[p].1.extend(g.iter().cloned());
            key_parts.push(p);
        }
        let mut parts = Vec::with_capacity(parts_args.len());
        for (i, (s, a)) in parts_args.into_iter().enumerate() {
            let part = Call {
                command: call.command,
                args: a,
                db: call.db,
                track: call.track,
                event: call.event,
                user: call.user.clone(),
                // Counted once, as the command it is (its first part).
                client: if i == 0 { call.client } else { 0 },
            };
            let idx = self.push(s, part);
            parts.push((s, idx));
        }
        self.slots.push(Slot::Merged {
            parts,
            merge,
            key_parts,
        });
    }

    /// Runs the same call on every shard.
    pub(crate) fn all(&mut self, call: Call, merge: Merge) {
        let n = self.batches.len();
        let mut parts = Vec::with_capacity(n);
        for s in 0..n {
            let mut part = call.clone();
            if s > 0 {
                // Counted once, as the command it is (shard 0's part).
                part.client = 0;
            }
            let idx = self.push(s, part);
            parts.push((s, idx));
        }
        self.slots.push(Slot::Merged {
            parts,
            merge,
            key_parts: Vec::new(),
        });
    }

    /// Executes everything planned and appends the replies, in order, to `out`.
    ///
    /// Inside a transaction (`session.tx`) nothing is published: its writes are not durable
    /// before the commit, and no one may hear of them before (a subscriber reacting to the
    /// message would read a write that a crash can still take back). The publications are
    /// held in the session with the place of their reply in `out`; `txn::run` delivers them
    /// after the commit and writes their receiver counts there.
    pub(crate) async fn flush(&mut self, session: &mut Session, out: &mut BytesMut) {
        if self.slots.is_empty() {
            return;
        }
        let shard = session.ctx.shard.clone();
        let shard = &shard;
        let tx = session.tx;
        let mut replies = std::mem::take(&mut self.replies);
        replies.resize_with(self.batches.len(), Vec::new);
        let mut busy = (0..self.batches.len()).filter(|&s| !self.batches[s].is_empty());
        let only = match (busy.next(), busy.next()) {
            (Some(s), None) => Some(s),
            _ => None,
        };
        let mut publishes = std::mem::take(&mut self.publishes);
        let held = tx.is_some();
        let to_hold = if held {
            std::mem::take(&mut publishes)
        } else {
            Vec::new()
        };
        let publish = async {
            if publishes.is_empty() {
                Vec::new()
            } else {
                crate::pubsub::publish(shard, publishes).await
            }
        };
        let batches = async {
            // Each batch's list comes back emptied, for the plan's next batch.
            if let Some(only) = only {
                // The common case (an unpipelined command, or a pipeline for one shard): no
                // fan-out machinery.
                replies[only] = shard
                    .run_batch_keeping(tx, only, &mut self.batches[only])
                    .await;
            } else {
                let (busy, futures): (Vec<usize>, Vec<_>) = self
                    .batches
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, batch)| !batch.is_empty())
                    .map(|(s, batch)| (s, shard.run_batch_keeping(tx, s, batch)))
                    .unzip();
                for (s, r) in busy.iter().zip(join_all(futures).await) {
                    replies[*s] = r;
                }
            }
        };
        // The writes planned before a PUBLISH have run (and are safe) before anyone hears of
        // it: a subscriber reacting to a message reads what the publisher wrote first.
        batches.await;
        let counts = publish.await;
        self.encode_replies(
            session,
            &mut replies,
            &counts,
            held.then_some(&to_hold[..]),
            out,
        );
        // The frames were taken out; the shards' lists go, the list of them stays.
        replies.iter_mut().for_each(|r| *r = Vec::new());
        self.replies = replies;
    }

    /// The batches planned, one per shard (empty where nothing runs), for a caller that runs
    /// them itself and hands their replies to [`Plan::encode_replies`].
    pub(crate) fn take_batches(&mut self) -> Vec<Vec<Call>> {
        let n = self.batches.len();
        std::mem::replace(&mut self.batches, vec![Vec::new(); n])
    }

    /// Appends the planned replies, in request order, to `out`: `replies` holds each shard's
    /// batch replies, `counts` the receiver counts of the publications. With `to_hold` (inside
    /// a transaction) publications are held in the session instead (see [`Plan::flush`]).
    pub(crate) fn encode_replies(
        &mut self,
        session: &mut Session,
        replies: &mut [Vec<Frame>],
        counts: &[i64],
        to_hold: Option<&[crate::session::Publication]>,
        out: &mut BytesMut,
    ) {
        let mut take = |s: usize, i: usize| {
            replies
                .get_mut(s)
                .and_then(|v| v.get_mut(i))
                .map(|f| std::mem::replace(f, Frame::Null))
                .unwrap_or(Frame::Null)
        };
        let mut holding = Vec::new();
        for slot in self.slots.drain(..) {
            let frame = match slot {
                Slot::Ready(f) => f,
                Slot::One { shard, idx } => take(shard, idx),
                Slot::Published(i) if to_hold.is_some() => {
                    if let Some(p) = to_hold.and_then(|h| h.get(i)) {
                        holding.push((p.clone(), out.len()));
                    }
                    continue;
                }
                Slot::Published(i) => Frame::Integer(counts.get(i).copied().unwrap_or(0)),
                Slot::Merged {
                    parts,
                    merge,
                    key_parts,
                } => {
                    let frames: Vec<Frame> = parts.iter().map(|&(s, i)| take(s, i)).collect();
                    merge_replies(frames, merge, &key_parts)
                }
            };
            frame.reply_to(session, out);
        }
        session.held_publications.extend(holding);
    }
}

pub fn merge_replies(frames: Vec<Frame>, merge: Merge, key_parts: &[usize]) -> Frame {
    if let Some(e) = frames.iter().find(|f| f.is_error()) {
        return e.clone();
    }
    match merge {
        Merge::Sum => Frame::Integer(
            frames
                .iter()
                .map(|f| if let Frame::Integer(i) = f { *i } else { 0 })
                .sum(),
        ),
        Merge::Ok => Frame::OK,
        Merge::Concat => Frame::Array(
            frames
                .into_iter()
                .flat_map(|f| {
                    if let Frame::Array(a) = f {
                        a
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        ),
        Merge::KeyOrder => {
            let mut iters: Vec<_> = frames
                .into_iter()
                .map(|f| {
                    if let Frame::Array(a) = f {
                        a.into_iter()
                    } else {
                        Vec::new().into_iter()
                    }
                })
                .collect();
            Frame::Array(
                key_parts
                    .iter()
                    .map(|&p| {
                        iters
                            .get_mut(p)
                            .and_then(|it| it.next())
                            .unwrap_or(Frame::Null)
                    })
                    .collect(),
            )
        }
    }
}
