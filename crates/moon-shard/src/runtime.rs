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
/// The spin makes no system call, and with io_uring's COOP_TASKRUN (vendor/glommio) a socket
/// completion that arrives meanwhile waits for the spin to end: the spin bounds what a
/// request can wait. Measured on the 2-CPU bench machine: 20 µs gives one unpipelined client
/// 0.039 ms p50 (100 µs: 0.127 ms) and cross-shard MSET as fast as 100 µs did.
/// `MOON_SPIN_US` overrides it (a benchmark seam).
const SPIN_US: u64 = 20;

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
            .spin_before_park(std::time::Duration::from_micros(
                std::env::var("MOON_SPIN_US")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(SPIN_US),
            ))
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
