//! Clients blocked on this shard's keys (BLPOP, BZPOPMIN...): who waits on which key, in the
//! order they blocked, and waking them.
//!
//! A blocked client's connection may live on any shard. It registers a [`Waiter`] on the shard
//! of each key it waits on; when a command here changes such a key (the store reports it
//! ready: [`moon_store::Store::take_ready`]) and the key now holds the type the waiter wants,
//! the first such waiter is taken off the queue.
//!
//! - **Every key of the call on this shard:** the shard serves it itself, right after the
//!   command that filled the key and before any other command ([`Shard::serve_waiting`]): it
//!   runs the call's non-blocking form — an ordinary command, logged as its effect — and sends
//!   the reply to the waiting connection once it may leave. As in Redis, a client that was not
//!   blocked cannot take the element first, and a client that does not read its replies keeps
//!   no other waiter waiting.
//! - **Keys on several shards:** the waiter is woken through its channel and runs its command
//!   again from its connection (a transaction); if that finds nothing it queues again at the
//!   front.
//!
//! If a pop leaves the key ready, the change serves or wakes the next waiter. A waiter whose
//! client went away (its channel closed) is skipped, so a wake is never lost on it.
//! Registration checks the key at once, so a push between a client's failed attempt and its
//! registration still reaches it.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::{Call, Store};

use crate::clock::now_ms;
use crate::shard::Shard;
use crate::state::{BlockOn, Serve, Waiter, Woken};

impl Shard {
    /// Runs a blocking command's attempt (`call`, its non-blocking form) on shard `target`,
    /// every key of it there, and if it took nothing (its reply is `block.nil`) queues the
    /// waiter on its keys in the same turn: no command runs between the two, so clients are
    /// served in the order their commands reached the shard (Redis's order), and a push that
    /// follows the attempt always finds the waiter queued.
    pub async fn run_or_block(self: &Rc<Self>, target: usize, call: Call, block: BlockOn) -> Frame {
        let frames = if target == self.id() {
            let turn = self.wait_unlocked().await;
            let cmds = [call];
            let executed = self.execute(&cmds);
            self.block_if_nil(&cmds[0], &executed, block);
            drop(turn);
            match executed {
                Ok(frames) => frames,
                Err(held) => crate::shard::settle(held).await,
            }
        } else {
            let (tx, rx) = futures_channel::oneshot::channel();
            let msg = crate::shard::Message::BatchOrBlock {
                cmds: vec![call],
                block,
                reply: tx,
            };
            if !self.send(target, msg).await {
                return Frame::StaticError(crate::shard::SHARD_GONE);
            }
            rx.await.unwrap_or_default()
        };
        frames
            .into_iter()
            .next()
            .unwrap_or(Frame::StaticError(crate::shard::SHARD_GONE))
    }

    /// After a blocking command's attempt here: queues its waiter if it took nothing.
    pub(crate) fn block_if_nil(
        &self,
        call: &Call,
        executed: &Result<Vec<Frame>, crate::shard::Held>,
        block: BlockOn,
    ) {
        let first = match executed {
            Ok(frames) => frames.first(),
            Err(held) => held.frames.first(),
        };
        if first != Some(&block.nil) {
            return;
        }
        // A key named twice is waited on once, as in Redis (review finding: BLPOP k k was
        // queued twice and could be served twice).
        let mut keys: Vec<Bytes> = Vec::with_capacity(block.keys.len());
        for k in block.keys {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let block = BlockOn { keys, ..block };
        let serve = block.serve.then(|| {
            std::sync::Arc::new(Serve {
                call: call.clone(),
                keys: block.keys.clone(),
                nil: block.nil.clone(),
            })
        });
        for key in block.keys {
            let waiter = Waiter {
                id: block.id,
                wants: block.wants,
                wake: block.wake.clone(),
                serve: serve.clone(),
            };
            self.block(block.db, key, waiter, block.front);
        }
    }

    /// [`Shard::serve_in_turn`] from a message that is not the shard's turn (a `call_on`
    /// registering or passing on a wake): not while the shard is handed to a waiting local
    /// task (review finding: it would run ahead of it); that task's turn serves them.
    pub(crate) fn serve_waiting(&self) {
        if !self.handoff.get() {
            self.serve_in_turn();
        }
    }

    /// Serves the waiters taken off their queues (see the module's doc), one after the other;
    /// what a served call changes may serve the next. Called by whoever runs commands here
    /// (a batch, a transaction's end, a handed-off task): not while a transaction holds the
    /// shard (its unlock serves them), nor from inside itself.
    pub(crate) fn serve_in_turn(&self) {
        if self.lock_holder.get().is_some() || self.serving_now.replace(true) {
            return;
        }
        loop {
            let Some(w) = self.waiters.borrow_mut().serving.pop_front() else {
                break;
            };
            let Some(serve) = w.serve.clone() else {
                continue;
            };
            let db = serve.call.db;
            if w.wake.is_closed() {
                // Gone after it was picked: the keys go to the next waiter (review finding).
                for k in &serve.keys {
                    let mut store = self.store_unchecked();
                    self.wake_first_in(&mut store, db, k);
                }
                continue;
            }
            for k in &serve.keys {
                self.unblock(db, k, w.id);
            }
            let executed = self.execute(std::slice::from_ref(&serve.call));
            let first = match &executed {
                Ok(frames) => frames.first(),
                Err(held) => held.frames.first(),
            };
            if first == Some(&serve.nil) {
                // Nothing after all: first in line again.
                for k in &serve.keys {
                    self.block(db, k.clone(), w.clone(), true);
                }
                continue;
            }
            if first.is_some_and(Frame::is_error) {
                // Refused (BLMOVE to a key of another type): the key still holds what it
                // held, for the next waiter.
                for k in &serve.keys {
                    let mut store = self.store_unchecked();
                    self.wake_first_in(&mut store, db, k);
                }
            }
            let (reply_tx, reply_rx) = futures_channel::oneshot::channel();
            let _ = w.wake.unbounded_send(Woken::Served(reply_rx));
            match executed {
                Ok(frames) => {
                    let _ = reply_tx.send(frames.into_iter().next().unwrap_or(Frame::Null));
                }
                Err(held) => {
                    glommio::spawn_local(async move {
                        let frames = crate::shard::settle(held).await;
                        let _ = reply_tx.send(frames.into_iter().next().unwrap_or(Frame::Null));
                    })
                    .detach();
                }
            }
        }
        self.serving_now.set(false);
    }

    /// Queues `waiter` on `key` of database `db` (at the front for a client woken in vain),
    /// then wakes the key's first waiter if the key can serve one now.
    pub fn block(&self, db: usize, key: Bytes, waiter: Waiter, front: bool) {
        let waiter_wants_stream = waiter.wants.starts_with("stream");
        {
            let mut w = self.waiters.borrow_mut();
            let queue = w.queues.entry((db, key.clone())).or_default();
            if front {
                queue.push_front(waiter);
            } else {
                queue.push_back(waiter);
            }
        }
        let stream = waiter_wants_stream;
        let mut store = self.store_unchecked();
        store.block_key(db, &key);
        // A list or sorted set that exists can serve at once; a stream that exists may have
        // nothing new for this reader (it just found nothing): only a change wakes it.
        if !stream {
            self.wake_first_in(&mut store, db, &key);
        }
        drop(store);
        self.serve_waiting();
    }

    /// Takes call `id` off the queue of `key` (it was served, timed out or went away).
    pub fn unblock(&self, db: usize, key: &[u8], id: u64) {
        let removed = {
            let mut w = self.waiters.borrow_mut();
            // Picked but not served yet (a postponed serve): not any more (review finding: a
            // timed-out client was served after it left, and nobody got the element).
            w.serving.retain(|x| x.id != id);
            let k = (db, Bytes::copy_from_slice(key));
            let Some(queue) = w.queues.get_mut(&k) else {
                return;
            };
            let before = queue.len();
            queue.retain(|x| x.id != id);
            let removed = before - queue.len();
            if queue.is_empty() {
                w.queues.remove(&k);
            }
            removed
        };
        let mut store = self.store_unchecked();
        for _ in 0..removed {
            store.unblock_key(db, key);
        }
    }

    /// Wakes the first waiter `key` can serve now, if any (a client that was woken for it and
    /// did not take it passes it on this way).
    pub fn wake_first(&self, db: usize, key: &[u8]) {
        let mut store = self.store_unchecked();
        self.wake_first_in(&mut store, db, key);
        drop(store);
        self.serve_waiting();
    }

    /// [`Shard::wake_first`] with the store already borrowed.
    pub(crate) fn wake_first_in(&self, store: &mut Store, db: usize, key: &[u8]) {
        let kind = store.type_in(db, key, now_ms());
        let mut gone = 0;
        let mut to_serve = None;
        {
            let mut w = self.waiters.borrow_mut();
            let k = (db, Bytes::copy_from_slice(key));
            let Some(queue) = w.queues.get_mut(&k) else {
                return;
            };
            let mut i = 0;
            while i < queue.len() {
                if queue[i].wake.is_closed() {
                    queue.remove(i);
                    gone += 1;
                    continue;
                }
                if !serves(queue[i].wants, kind) {
                    i += 1;
                    continue;
                }
                let Some(waiter) = queue.remove(i) else {
                    break;
                };
                gone += 1;
                if waiter.serve.is_some() {
                    // Served here once the running command is done.
                    to_serve = Some(waiter);
                    break;
                }
                if waiter
                    .wake
                    .unbounded_send(Woken::Ready(db, k.1.clone()))
                    .is_ok()
                {
                    break;
                }
            }
            if queue.is_empty() {
                w.queues.remove(&k);
            }
            if let Some(waiter) = to_serve {
                // Off its other keys here at once: another of them ready in the same turn
                // must not queue it to be served twice (found with Redis's "BLMPOP with
                // multiple blocked clients": the second serve popped an element nobody got).
                if let Some(serve) = &waiter.serve {
                    for other in serve.keys.iter().filter(|o| o[..] != key[..]) {
                        let ok = (db, other.clone());
                        if let Some(q) = w.queues.get_mut(&ok) {
                            let before = q.len();
                            q.retain(|x| x.id != waiter.id);
                            for _ in q.len()..before {
                                store.unblock_key(db, other);
                            }
                            if q.is_empty() {
                                w.queues.remove(&ok);
                            }
                        }
                    }
                }
                w.serving.push_back(waiter);
            }
        }
        for _ in 0..gone {
            store.unblock_key(db, key);
        }
    }

    /// After commands ran here: wakes a waiter of each blocked-on key they changed.
    pub(crate) fn wake_ready(&self, store: &mut Store) {
        for (db, key) in store.take_ready() {
            // A stream's change may have something for every reader (XADD serves each
            // blocked XREAD, as in Redis): each stream waiter tries once, in the order it
            // came; a list or sorted set serves its first waiter.
            let readers = self
                .waiters
                .borrow()
                .queues
                .get(&(db, key.clone()))
                .map_or(0, |q| {
                    q.iter().filter(|w| w.wants.starts_with("stream")).count()
                });
            if readers > 0 {
                for _ in 0..readers {
                    self.wake_first_in(store, db, &key);
                }
                continue;
            }
            self.wake_first_in(store, db, &key);
        }
    }

    /// Clients blocked on this shard's keys (INFO's `blocked_clients`, per waiter).
    pub fn blocked_waiters(&self) -> usize {
        self.waiters
            .borrow()
            .queues
            .values()
            .map(VecDeque::len)
            .sum()
    }
}

/// Whether a waiter that `wants` a type may be served by its key now holding `kind`: a
/// list or sorted set when the key holds one; an XREAD when the key is a stream; an
/// XREADGROUP on any change (a key gone or of another type ends it with an error, as in
/// Redis).
fn serves(wants: &str, kind: Option<&str>) -> bool {
    match wants {
        "stream-group" => true,
        _ => kind == Some(wants),
    }
}
