//! Spawning the shard executors.

use std::future::Future;
use std::rc::Rc;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::shard::{Message, Shard};
use crate::state::ShardSetConfig;

/// Capacity of each shard-to-shard channel, in messages (each message is a whole batch).
const CHANNEL_CAPACITY: usize = 1024;
/// How long an idle executor busy-polls before it sleeps. A cross-shard message to a sleeping
/// shard costs a wake-up (eventfd + scheduler) on the critical path of every cross-shard
/// batch and transaction step; spinning briefly keeps a busy shard awake between messages.
/// Measured on the 2-CPU bench machine: cross-shard MSET 4.2k -> 11k req/s unpipelined with
/// 100 µs; 500 µs starved the load generator (SET/GET -20 %).
const SPIN_US: u64 = 100;

/// Starts one executor per shard and runs `main(shard)` on each; returns when all have
/// returned, with their results in shard order. The cross-shard message loops run for as long
/// as `main` runs on that shard, so `main` must not return while other shards may still send
/// to it (see the server's shutdown sequence).
pub fn start<G, F, T>(config: ShardSetConfig, main: G) -> anyhow::Result<Vec<T>>
where
    G: Fn(Rc<Shard>) -> F + Send + Clone + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mesh = MeshBuilder::<Message, _>::full(config.shards, CHANNEL_CAPACITY);
    let mut handles = Vec::with_capacity(config.shards);
    for id in 0..config.shards {
        let placement = if config.pin {
            Placement::Fixed(id % cpus)
        } else {
            Placement::Unbound
        };
        let mesh = mesh.clone();
        let main = main.clone();
        let config = config.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .spin_before_park(std::time::Duration::from_micros(SPIN_US))
            .spawn(move || async move {
                let shard = Shard::join(id, &config, mesh).await;
                main(shard).await
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {id}: {e}"))?;
        handles.push(handle);
    }
    let mut results = Vec::with_capacity(handles.len());
    for (id, h) in handles.into_iter().enumerate() {
        results.push(
            h.join()
                .map_err(|e| anyhow::anyhow!("shard {id} failed: {e}"))?,
        );
    }
    Ok(results)
}
