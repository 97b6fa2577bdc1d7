//! Clients blocked on this shard's keys (BLPOP, BZPOPMIN...): who waits on which key, in the
//! order they blocked, and waking them.
//!
//! A blocked client's connection may live on any shard. It registers a [`Waiter`] on the shard
//! of each key it waits on; when a command here changes such a key (the store reports it
//! ready: [`moon_store::Store::take_ready`]) and the key now holds the type the waiter wants,
//! the first such waiter is taken off the queue and woken through its channel. It then runs
//! its command again, as any command, from its own connection: the pop is an ordinary command,
//! logged as its effect and answered once. If that retry finds nothing (another client took
//! the element first), the client queues again at the front; if its pop leaves the key ready,
//! the change wakes the next waiter. A waiter whose client went away (its channel closed) is
//! skipped, so a wake is never lost on it. Registration checks the key at once, so a push
//! between a client's failed attempt and its registration still wakes it.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::{Call, Store};

use crate::clock::now_ms;
use crate::shard::Shard;
use crate::state::{BlockOn, Waiter};

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
            self.block_if_nil(&executed, block);
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
        for key in block.keys {
            let waiter = Waiter {
                id: block.id,
                wants: block.wants,
                wake: block.wake.clone(),
            };
            self.block(block.db, key, waiter, block.front);
        }
    }

    /// Queues `waiter` on `key` of database `db` (at the front for a client woken in vain),
    /// then wakes the key's first waiter if the key can serve one now.
    pub fn block(&self, db: usize, key: Bytes, waiter: Waiter, front: bool) {
        {
            let mut w = self.waiters.borrow_mut();
            let queue = w.queues.entry((db, key.clone())).or_default();
            if front {
                queue.push_front(waiter);
            } else {
                queue.push_back(waiter);
            }
        }
        let mut store = self.store_unchecked();
        store.block_key(db, &key);
        self.wake_first_in(&mut store, db, &key);
    }

    /// Takes call `id` off the queue of `key` (it was served, timed out or went away).
    pub fn unblock(&self, db: usize, key: &[u8], id: u64) {
        let removed = {
            let mut w = self.waiters.borrow_mut();
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
    }

    /// [`Shard::wake_first`] with the store already borrowed.
    pub(crate) fn wake_first_in(&self, store: &mut Store, db: usize, key: &[u8]) {
        let Some(kind) = store.type_in(db, key, now_ms()) else {
            return;
        };
        let mut gone = 0;
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
                if queue[i].wants != kind {
                    i += 1;
                    continue;
                }
                let Some(waiter) = queue.remove(i) else {
                    break;
                };
                gone += 1;
                if waiter.wake.unbounded_send((db, k.1.clone())).is_ok() {
                    break;
                }
            }
            if queue.is_empty() {
                w.queues.remove(&k);
            }
        }
        for _ in 0..gone {
            store.unblock_key(db, key);
        }
    }

    /// After commands ran here: wakes a waiter of each blocked-on key they changed.
    pub(crate) fn wake_ready(&self, store: &mut Store) {
        for (db, key) in store.take_ready() {
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
