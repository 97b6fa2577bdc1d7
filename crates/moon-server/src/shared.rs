//! Server state at the bottom of the server's layers: what every shard's connections share
//! ([`Shared`]: the configuration and the users, versioned; counters; BGREWRITEAOF's state;
//! the TLS configuration), one shard's context ([`ShardServer`]), and the error startup maps to
//! an exit code ([`ServerError`]). Handlers and the connection loop read and change it; it
//! imports none of them.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use glommio::sync::Semaphore;
use moon_manifest::PerShard;
use moon_shard::Shard;
use nix::sys::signal::Signal;

use crate::config::Config;

/// A failure to start or run, with the process exit code it maps to.
#[derive(Debug)]
pub struct ServerError {
    pub code: u8,
    pub message: String,
}

impl ServerError {
    pub fn exit_code(&self) -> u8 {
        self.code
    }
    pub(crate) fn fatal(message: impl Into<String>) -> Self {
        ServerError {
            code: 1,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// State every shard's connections share. Written rarely (config changes, connects); the
/// per-command path reads only the version counter.
pub struct Shared {
    pub(crate) config: RwLock<Config>,
    pub(crate) config_version: AtomicU64,
    pub started: Instant,
    /// This run's id (INFO `run_id`) and replication id (`master_replid`): 40 random hex
    /// digits each, new at every start, as Redis's.
    pub run_id: String,
    pub replid: String,
    /// `port` as configured (0: a free one is picked), which CONFIG REWRITE keeps; the
    /// config itself holds the port actually bound.
    pub configured_port: u16,
    pub port: AtomicU64,
    pub next_client_id: AtomicU64,
    pub connected_clients: AtomicU64,
    /// Clients waiting in a blocking command or a CLIENT PAUSE (INFO's `blocked_clients`).
    pub blocked_clients: AtomicU64,
    /// CLIENT PAUSE: until when (Unix ms; 0 = not paused) and whether every command waits
    /// or only writes (`pause.rs`). The deadline is the keyspace's own
    /// (`moon_store::keyspace::pause_deadline`), which holds expiry while paused.
    pub pause_until: &'static AtomicU64,
    pub pause_all: std::sync::atomic::AtomicBool,
    pub(crate) drained_shards: AtomicUsize,
    /// BGREWRITEAOF state (see `rewrite.rs`).
    pub rewrite: RewriteState,
    /// The users (ACL), versioned like the config: connections refresh their user's snapshot
    /// when the version moves.
    pub(crate) acl: RwLock<crate::acl::Acl>,
    pub(crate) acl_version: AtomicU64,
    /// ACL LOG.
    pub acl_log: Mutex<crate::acl::AclLog>,
    /// The TLS configuration new TLS connections use (replaced by CONFIG SET tls-*-file).
    pub tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// The replication stream and the replicas fed from it (`repl_feed.rs`).
    pub repl: crate::repl_feed::Feed,
    /// This server's link to its primary, when it is a replica (`replica.rs` runs it).
    pub master_link: Mutex<MasterLink>,
    /// The link's place in its primary's stream, kept beside the logs for the next start
    /// (`repl_position.rs`). Lock order: after `config`.
    pub position: Mutex<crate::repl_position::Checkpoints>,
    /// `replicaof` is set and `replica-read-only` too: clients' writes are refused (READONLY).
    /// Kept in step with the config by [`Shared::update_config`].
    pub read_only: AtomicBool,
    /// A replica is loading its primary's data (full synchronisation): clients get LOADING.
    pub replica_loading: AtomicBool,
    /// The replica's link is up (`MasterLink::state` is `connected`).
    pub link_up: AtomicBool,
    /// A replica with `replica-serve-stale-data no`: while its link is down, clients get
    /// MASTERDOWN. Kept in step with the config by [`Shared::update_config`].
    pub stale_refused: AtomicBool,
    /// `min-replicas-to-write` (0: off) and `min-replicas-max-lag` (seconds), for the write
    /// path's one relaxed load.
    pub min_replicas: AtomicU64,
    pub min_replicas_max_lag: AtomicU64,
    /// FAILOVER's state (INFO `master_failover_state`): `no-failover`, `waiting-for-sync`,
    /// `failover-in-progress`; and an ABORT asked for.
    pub failover: Mutex<&'static str>,
    pub failover_abort: AtomicBool,
    /// The server is shutting down (set by each shard as it stops accepting): the replica
    /// link stops applying and says when it has (`link_stopped`), WAIT and WAITAOF stop
    /// waiting; shards count their logs closed cleanly (`logs_closed`). Only with all of that
    /// is the link's position saved for the next start (`replica.rs`).
    pub stopping: AtomicBool,
    pub link_stopped: AtomicBool,
    pub logs_closed: AtomicUsize,
}

impl Shared {
    /// The replica link's state (`MasterLink::state`), and whether it is up.
    pub fn set_link_state(&self, state: &'static str) {
        lock(&self.master_link).state = state;
        self.link_up.store(state == "connected", Ordering::Release);
        self.note_staleness();
    }

    /// Tells the scripts' host whether this replica is stale now (its link down with
    /// `replica-serve-stale-data no`).
    pub fn note_staleness(&self) {
        moon_store::set_stale_replica(
            self.stale_refused.load(Ordering::Acquire) && !self.link_up.load(Ordering::Acquire),
        );
    }
}

/// A replica's link to its primary, as INFO and ROLE show it.
#[derive(Default)]
pub struct MasterLink {
    /// Redis's words: `connect` (not connected), `connecting`, `sync` (loading the primary's
    /// data), `connected`.
    pub state: &'static str,
    /// The primary's replication id, and the stream offset applied (`slave_repl_offset`);
    /// kept across reconnections, so that the next PSYNC may continue.
    pub replid: String,
    pub offset: u64,
    /// The database the stream had selected at `offset`.
    pub db: usize,
    /// This server just handed its primary role over (FAILOVER): its next PSYNC says so
    /// (`PSYNC <replid> <offset> FAILOVER`), which makes the target take the role.
    pub failover_psync: bool,
    /// Since when the link is down (`None` while up), and the last bytes from the primary.
    pub down_since: Option<Instant>,
    pub last_io: Option<Instant>,
}

/// 40 random hex digits (from the kernel's generator; time and pid if it cannot be read).
pub fn random_hex40() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 20];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        use sha1::Digest;
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        bytes = sha1::Sha1::digest(seed.as_bytes()).into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    pub fn config(&self) -> Config {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn config_version(&self) -> u64 {
        self.config_version.load(Ordering::Acquire)
    }

    /// Applies `f` to the configuration; bumps the version so connections pick it up.
    pub fn update_config<R>(&self, f: impl FnOnce(&mut Config) -> R) -> R {
        let mut guard = match self.config.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let role = |c: &Config| (c.replicaof.clone(), c.replica_read_only, c.appendonly);
        let before = role(&guard);
        let r = f(&mut guard);
        // A replica's saved place in its stream would cut the logs at the next start: it must
        // be gone before anything but the primary's commands can be logged. Held until the
        // new setting is visible, so the link cannot write one more in between.
        let mut position = lock(&self.position);
        if role(&guard) != before {
            position.forget();
        }
        moon_store::keyspace::set_replica(guard.replicaof.is_some());
        self.stale_refused.store(
            guard.replicaof.is_some() && !guard.replica_serve_stale_data,
            Ordering::Release,
        );
        self.note_staleness();
        self.min_replicas
            .store(guard.min_replicas_to_write, Ordering::Release);
        self.min_replicas_max_lag
            .store(guard.min_replicas_max_lag, Ordering::Release);
        self.read_only.store(
            guard.replicaof.is_some() && guard.replica_read_only,
            Ordering::Release,
        );
        moon_store::set_read_only_replica(guard.replicaof.is_some() && guard.replica_read_only);
        self.config_version.fetch_add(1, Ordering::AcqRel);
        drop(position);
        r
    }

    pub fn acl_version(&self) -> u64 {
        self.acl_version.load(Ordering::Acquire)
    }

    /// The user called `name`, as the ACL holds it now.
    pub fn user(&self, name: &str) -> Option<Arc<crate::acl::User>> {
        self.acl.read().ok().and_then(|a| a.get(name))
    }

    /// A copy of every user (ACL LIST, SAVE...).
    pub fn acl(&self) -> crate::acl::Acl {
        self.acl
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Changes the users; bumps the version so connections pick it up.
    pub fn update_acl<R>(&self, f: impl FnOnce(&mut crate::acl::Acl) -> R) -> R {
        let mut guard = match self.acl.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let r = f(&mut guard);
        self.acl_version.fetch_add(1, Ordering::AcqRel);
        r
    }

    /// Asks the process to shut down cleanly, exactly as SIGTERM does.
    pub fn request_shutdown(&self) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGTERM);
    }
}

/// One shard's server-side context, shared by its connections.
pub struct ShardServer {
    pub shard: Rc<Shard>,
    pub shared: Arc<Shared>,
    /// Closed when the server shuts down: connections finish their batch and leave.
    pub stopping: Semaphore,
}

/// What INFO reports and what the next rewrite starts from.
#[derive(Clone, Debug)]
pub struct RewriteStats {
    pub last_ok: bool,
    pub rewrites: u64,
    /// AOF size after the last rewrite, or at startup (auto-rewrite's reference).
    pub base_size: u64,
    pub last_duration_ms: i64,
}

/// BGREWRITEAOF's state (the steps are `rewrite.rs`'s).
pub struct RewriteState {
    pub(crate) in_progress: AtomicBool,
    pub(crate) layout: Mutex<Option<(PathBuf, PerShard)>>,
    pub(crate) stats: Mutex<RewriteStats>,
    /// Set when a commit failed after its rename: why no rewrite may start before a restart.
    pub(crate) blocked: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn layout_size(dir: &std::path::Path, m: &PerShard) -> u64 {
    (0..m.shards())
        .flat_map(|i| [m.base_path(dir, i), m.incr_path(dir, i)])
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|md| md.len())
        .sum()
}

impl RewriteState {
    pub fn new(layout: Option<(PathBuf, PerShard)>) -> RewriteState {
        let base_size = layout.as_ref().map_or(0, |(d, m)| layout_size(d, m));
        RewriteState {
            in_progress: AtomicBool::new(false),
            layout: Mutex::new(layout),
            stats: Mutex::new(RewriteStats {
                last_ok: true,
                rewrites: 0,
                base_size,
                last_duration_ms: -1,
            }),
            blocked: Mutex::new(None),
        }
    }

    pub fn in_progress(&self) -> bool {
        self.in_progress.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> RewriteStats {
        lock(&self.stats).clone()
    }

    /// (size of every base file, size of every base and incr file) of the current layout.
    pub fn sizes(&self) -> (u64, u64) {
        match lock(&self.layout).as_ref() {
            Some((dir, m)) => {
                let base = (0..m.shards())
                    .filter_map(|i| std::fs::metadata(m.base_path(dir, i)).ok())
                    .map(|md| md.len())
                    .sum();
                (base, layout_size(dir, m))
            }
            None => (0, 0),
        }
    }
}

/// The Redis version Moon answers to (HELLO, INFO): the command set and replies of Redis 7.2.
pub const REDIS_COMPAT_VERSION: &str = moon_store::REDIS_VERSION;
