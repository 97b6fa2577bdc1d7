//! A busy script paused between two slices (see `store/script.rs` and `moon_script`'s
//! watch.rs): what the store keeps of it until the shard resumes it, and which writes a
//! script may make ([`Writes`]). Below the command handlers: the store holds one.

use std::sync::Arc;

use moon_script::Signals;

/// A busy script paused between two slices: the run, and what its host knew.
pub(crate) struct PausedScript {
    pub(crate) run: moon_script::Suspended,
    pub(crate) signals: Arc<Signals>,
    pub(crate) now: u64,
    pub(crate) writes: Writes,
    pub(crate) written: usize,
    /// It started over `maxmemory` without `allow-oom`: its first write that may grow
    /// memory is refused.
    pub(crate) over_memory: bool,
    /// The database the script had selected.
    pub(crate) db: usize,
    /// Whose permissions its commands need.
    pub(crate) user: Option<crate::call::ScriptUser>,
}

/// Which writes a running script may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    Allowed,
    /// EVAL_RO, FCALL_RO, or a script or function flagged `no-writes`: writes and
    /// may-replicate commands refused (`ERR Write commands are not allowed from read-only
    /// scripts.`).
    ReadOnlyScript,
    /// A script without flags run by a client of a read-only replica: writes refused with
    /// READONLY, as Redis refuses them there.
    ReadOnlyReplica,
}

impl Writes {
    /// For a script whose own flags say `read_only`, run by `client`.
    pub fn for_script(read_only: bool, client: u64) -> Writes {
        use std::sync::atomic::Ordering;
        if read_only {
            Writes::ReadOnlyScript
        } else if READ_ONLY_REPLICA.load(Ordering::Relaxed)
            && client != MASTER_CLIENT.load(Ordering::Relaxed)
        {
            Writes::ReadOnlyReplica
        } else {
            Writes::Allowed
        }
    }
}

static READ_ONLY_REPLICA: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// No client at first (client ids start at 1; 0 is the server's own calls, which get no
/// exemption either).
static MASTER_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// This server is a read-only replica (`replicaof` and `replica-read-only`): scripts' writes
/// are refused, except for the client that runs its primary's stream ([`set_master_client`]).
pub fn set_read_only_replica(on: bool) {
    READ_ONLY_REPLICA.store(on, std::sync::atomic::Ordering::Relaxed);
}

static STALE_REPLICA: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This server is a replica whose link is down with `replica-serve-stale-data no`: scripts
/// may call only the commands a stale replica serves.
pub fn set_stale_replica(on: bool) {
    STALE_REPLICA.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn is_stale_replica() -> bool {
    STALE_REPLICA.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether this primary has the replicas `min-replicas-to-write` asks for, as the server
/// counts them: asked at a script's first write (Redis's `scriptVerifyWriteCommandAllow`).
type ReplicasCheck = Box<dyn Fn() -> bool + Send + Sync>;

static REPLICAS_CHECK: std::sync::OnceLock<ReplicasCheck> = std::sync::OnceLock::new();

/// Installs the server's count of good replicas (once, at start; enough until then).
pub fn set_replicas_check(check: ReplicasCheck) {
    let _ = REPLICAS_CHECK.set(check);
}

pub(crate) fn enough_replicas() -> bool {
    REPLICAS_CHECK.get().is_none_or(|check| check())
}

/// The client id of the session that applies the primary's stream.
pub fn set_master_client(client: u64) {
    MASTER_CLIENT.store(client, std::sync::atomic::Ordering::Relaxed);
}
