//! Startup and shutdown.
//!
//! Order matters and is the same every time:
//! 1. lock the data directory and check its manifest ([`crate::persistence::open`]), bind one
//!    listening socket per shard on the same port with `SO_REUSEPORT` (the kernel spreads
//!    connections over shards), and answer on them as Redis does while loading
//!    ([`crate::loading`]: LOADING, INFO with the progress, SHUTDOWN and SIGTERM exit at once);
//!    then start one executor per shard, each replaying its own log, all in parallel;
//! 2. once every shard is ready, hand each shard its own listening socket and the connections
//!    made while loading; "Ready to accept connections" is logged;
//! 3. the main thread waits for SIGTERM/SIGINT (a client's SHUTDOWN raises SIGTERM too);
//! 4. on a signal every shard stops accepting, lets each connection finish the batch it is
//!    executing, and keeps answering other shards' messages until all shards have drained;
//!    a busy script is killed first, and one that wrote (it cannot be) is left behind: the
//!    process exits at once (nothing it did was logged, everything acknowledged was).

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::net::TcpListener;
use glommio::sync::{Gate, Semaphore};
use moon_shard::{Shard, ShardSetConfig};
use nix::sys::signal::{SigSet, Signal};
use socket2::{Domain, Socket, Type};

use crate::config::Config;
use crate::conn;
use crate::shared::{ServerError, ShardServer, Shared};

pub fn init_logging(level: &str) {
    let filter = match level {
        "debug" | "verbose" => "debug",
        "trace" => "trace",
        "warning" | "warn" => "warn",
        "error" => "error",
        _ => "info",
    };
    let env = tracing_subscriber::EnvFilter::try_from_env("MOON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(std::io::stdout)
        .try_init();
}

/// Binds `n` listening sockets on the same address with SO_REUSEPORT. With port 0 the first
/// socket picks a free port and the others join it.
/// A plain (non-reuseport) probe bind comes first: SO_REUSEPORT would otherwise let a second
/// server (of the same user) silently share the port with this one.
fn bind_listeners(addr: SocketAddr, n: usize) -> std::io::Result<(Vec<RawFd>, SocketAddr)> {
    let mut fds = Vec::with_capacity(n);
    let mut actual = {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
        probe.local_addr()?.as_socket().unwrap_or(addr)
    };
    for _ in 0..n {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&actual.into())?;
        sock.listen(1024)?;
        if actual.port() == 0 {
            if let Some(a) = sock.local_addr()?.as_socket() {
                actual = a;
            }
        }
        fds.push(sock.into_raw_fd());
    }
    Ok((fds, actual))
}

type Slots<T> = Arc<Mutex<Vec<Option<T>>>>;

/// One shard's listening sockets: the plain port's and, with `tls-port`, the TLS port's;
/// shard 0's also the Unix socket, with `unixsocket`.
struct Listeners {
    plain: RawFd,
    tls: Option<RawFd>,
    unix: Option<(RawFd, String)>,
    /// Connections accepted while the shards loaded, for this shard to serve.
    adopted: Vec<crate::loading::Handoff>,
}

/// Binds the Unix socket `path` (a stale socket file there is removed first, as Redis does;
/// anything else there is left alone and refused) with permissions `perm` (0: the umask's).
fn bind_unix(path: &std::path::Path, perm: u32) -> std::io::Result<RawFd> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is there",
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Bound, given its permissions, then listening: no client connects before the
    // permissions hold (as Redis orders it).
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.bind(&socket2::SockAddr::unix(path)?)?;
    if perm != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm))?;
    }
    sock.listen(511)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into_raw_fd())
}

/// Removes the Unix socket file at shutdown (if it is still a socket).
fn remove_unix(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

fn take_slot<T>(slots: &Slots<T>, id: usize) -> Option<T> {
    slots
        .lock()
        .ok()
        .and_then(|mut v| v.get_mut(id).and_then(Option::take))
}

/// Raises the open-files limit to fit `maxclients` (and what the server itself holds), as
/// Redis does at startup; if the system allows less, `maxclients` is lowered to what fits,
/// with a warning naming the fix.
fn fit_open_files(config: &mut Config) {
    match crate::open_files::raise(config.maxclients, config.shards) {
        Ok(None) => {}
        Ok(Some((soft, got))) => tracing::info!(
            "open files limit raised from {soft} to {got} for maxclients {}",
            config.maxclients
        ),
        Err((got, fits)) => {
            tracing::warn!(
                "maxclients {} needs {} open files, but the system allows {got}: maxclients is {fits} for this run (raise `ulimit -n` or the service's LimitNOFILE to keep {})",
                config.maxclients,
                config.maxclients.saturating_add(crate::open_files::reserved(config.shards)),
                config.maxclients
            );
            config.maxclients = fits;
        }
    }
}

pub fn run(mut config: Config) -> Result<(), ServerError> {
    fit_open_files(&mut config);
    let shards = config.shards;
    tracing::info!(
        "Moon {} starting: {} shards, dir {}, appendonly {}, appendfsync {}",
        env!("CARGO_PKG_VERSION"),
        shards,
        config.dir.display(),
        if config.appendonly { "yes" } else { "no" },
        config.appendfsync.as_str()
    );
    if let (Some((host, port)), false) = (&config.replicaof, config.appendonly) {
        // What a replica applies is acknowledged to its primary as stored: it needs its logs.
        return Err(ServerError {
            code: 2,
            message: format!("invalid value for 'replicaof': '{host} {port}' (allowed: only with appendonly yes: a replica logs what it applies)"),
        });
    }
    let acl = crate::acl_cmd::initial_acl(&config)?;
    let tls = if config.tls_port != 0 {
        Some(crate::tls::server_config(&config).map_err(|e| {
            ServerError::fatal(format!("cannot set up TLS: {e} (see docs/SECURITY.md)"))
        })?)
    } else {
        None
    };
    // Held until `run` returns: the data directory's lock and layout.
    let data_dir = if config.appendonly {
        Some(Arc::new(crate::persistence::open(&config)?))
    } else {
        None
    };
    // Function libraries (FUNCTION LOAD) before any client can FCALL them.
    if data_dir.is_some() {
        let loaded = crate::function_cmd::restore_at_startup(&config.dir)?;
        if loaded > 0 {
            tracing::info!(
                "{loaded} function libraries loaded from {}",
                crate::function_cmd::FILE
            );
        }
    }
    // A replica leaves expiry to its primary (`moon_store::keyspace::set_replica`).
    moon_store::keyspace::set_replica(config.replicaof.is_some());
    moon_store::set_read_only_replica(config.replicaof.is_some() && config.replica_read_only);
    let shared = Arc::new(Shared {
        config: RwLock::new(config.clone()),
        config_version: AtomicU64::new(0),
        started: Instant::now(),
        run_id: crate::shared::random_hex40(),
        replid: crate::shared::random_hex40(),
        configured_port: config.port,
        port: AtomicU64::new(u64::from(config.port)),
        next_client_id: AtomicU64::new(1),
        connected_clients: AtomicU64::new(0),
        blocked_clients: AtomicU64::new(0),
        pause_until: moon_store::keyspace::pause_deadline(),
        pause_all: std::sync::atomic::AtomicBool::new(false),
        drained_shards: AtomicUsize::new(0),
        rewrite: crate::shared::RewriteState::new(
            data_dir
                .as_ref()
                .map(|d| (d.dir.clone(), d.manifest.clone())),
        ),
        acl: RwLock::new(acl),
        acl_version: AtomicU64::new(0),
        acl_log: Mutex::new(crate::acl::AclLog::default()),
        tls: RwLock::new(tls),
        repl: crate::repl_feed::Feed::new(shards, config.repl_backlog_size as usize),
        master_link: Mutex::new(crate::shared::MasterLink {
            state: "connect",
            down_since: Some(Instant::now()),
            ..Default::default()
        }),
        position: Mutex::new(crate::repl_position::Checkpoints::new(
            data_dir.as_ref().map(|d| d.dir.clone()),
            shards,
        )),
        read_only: std::sync::atomic::AtomicBool::new(
            config.replicaof.is_some() && config.replica_read_only,
        ),
        replica_loading: std::sync::atomic::AtomicBool::new(false),
        link_up: std::sync::atomic::AtomicBool::new(false),
        stale_refused: std::sync::atomic::AtomicBool::new(
            config.replicaof.is_some() && !config.replica_serve_stale_data,
        ),
        min_replicas: AtomicU64::new(config.min_replicas_to_write),
        min_replicas_max_lag: AtomicU64::new(config.min_replicas_max_lag),
        failover: Mutex::new("no-failover"),
        failover_abort: std::sync::atomic::AtomicBool::new(false),
        stopping: std::sync::atomic::AtomicBool::new(false),
        link_stopped: std::sync::atomic::AtomicBool::new(false),
        logs_closed: AtomicUsize::new(0),
    });

    shared.note_staleness();
    // Where a previous run left the replication stream (`repl_position.rs`).
    if let Some(saved) = data_dir.as_ref().and_then(|d| d.replication.clone()) {
        crate::replica::continue_from(&shared, saved);
    }

    // Signals are taken synchronously by the main thread; every other thread inherits the mask.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| ServerError::fatal(format!("cannot block signals: {e}")))?;

    // The port opens before the shards replay: until they are ready, connections are
    // answered as Redis answers while it loads (`loading.rs`).
    let addr = SocketAddr::new(config.bind, config.port);
    let (fds, actual) = match bind_listeners(addr, shards) {
        Ok(x) => x,
        Err(e) => {
            return Err(ServerError::fatal(format!("cannot listen on {addr}: {e}")));
        }
    };
    let mut tls_fds: Vec<Option<RawFd>> = vec![None; shards];
    if config.tls_port != 0 {
        let tls_addr = SocketAddr::new(config.bind, config.tls_port);
        match bind_listeners(tls_addr, shards) {
            Ok((fds, _)) => tls_fds = fds.into_iter().map(Some).collect(),
            Err(e) => {
                return Err(ServerError::fatal(format!(
                    "cannot listen on {tls_addr} (tls-port): {e}"
                )));
            }
        }
        tracing::info!("TLS ready on {tls_addr}");
    }
    let unix = match &config.unixsocket {
        Some(path) => match bind_unix(path, config.unixsocketperm) {
            Ok(fd) => {
                tracing::info!("Unix socket ready on {}", path.display());
                Some((fd, path.display().to_string()))
            }
            Err(e) => {
                return Err(ServerError::fatal(format!(
                    "cannot listen on the Unix socket {} (unixsocket): {e}",
                    path.display()
                )));
            }
        },
        None => None,
    };
    shared
        .port
        .store(u64::from(actual.port()), Ordering::Release);
    shared.update_config(|c| c.port = actual.port());
    let loading = crate::loading::start(
        &fds,
        crate::loading::Progress {
            started: Instant::now(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            total_bytes: log_bytes(&moon_manifest::aof_dir(&config.dir)),
            port: actual.port(),
            // INFO and SHUTDOWN only for who could run them after loading without AUTH.
            open: shared
                .user("default")
                .is_none_or(|u| u.enabled && u.nopass && u.unrestricted()),
            protected_mode: config.protected_mode,
        },
    );
    tracing::info!("Listening on {actual}: loading the dataset, commands answer LOADING until every shard has replayed");

    // Signals are taken by one thread for the whole run: while loading, SIGTERM or SIGINT
    // exits at once (replay only reads the logs); after, it starts the shutdown below.
    let loading_now = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (signal_tx, signal_rx) = std::sync::mpsc::channel();
    {
        let loading_now = loading_now.clone();
        let signals = signals;
        std::thread::Builder::new()
            .name("moon-signals".into())
            .spawn(move || {
                if let Ok(signal) = signals.wait() {
                    if loading_now.load(Ordering::Acquire) {
                        tracing::warn!(
                            "Received {signal:?} while loading: exiting now, the logs as they were"
                        );
                        std::process::exit(0);
                    }
                    let _ = signal_tx.send(signal);
                }
            })
            .map_err(|e| ServerError::fatal(format!("cannot start the signal thread: {e}")))?;
    }

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, ServerError>>();
    let mut listener_txs = Vec::new();
    let mut stop_txs = Vec::new();
    let listener_rxs: Slots<oneshot::Receiver<Option<Listeners>>> =
        Arc::new(Mutex::new(Vec::new()));
    let stop_rxs: Slots<oneshot::Receiver<()>> = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..shards {
        let (ltx, lrx) = oneshot::channel();
        let (stx, srx) = oneshot::channel();
        listener_txs.push(ltx);
        stop_txs.push(stx);
        if let (Ok(mut l), Ok(mut s)) = (listener_rxs.lock(), stop_rxs.lock()) {
            l.push(Some(lrx));
            s.push(Some(srx));
        }
    }

    let set_config = ShardSetConfig {
        shards,
        pin: config.pin_cpus,
        max_string_len: config.proto_max_bulk_len as usize,
    };
    let shard_shared = shared.clone();
    let shard_data = data_dir.clone();
    let policy = config.appendfsync;
    let memory = config.memory_limit();
    let encodings = config.encodings;
    let databases = config.databases as usize;
    let notify = config.notify_keyspace_events;
    let pubsub_limit = config.output_limits[2];
    moon_store::lazyfree::set_policy(config.lazyfree);
    config.apply_monitors();
    // Slow fdatasyncs reach the latency monitor (LATENCY LATEST's `aof-fsync`).
    moon_aof::writer::set_fsync_observer(|event, took| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        moon_store::latency::sample(event, took.as_millis() as u64, secs);
    });
    // A script's first write asks whether this primary has its `min-replicas-to-write`.
    let replicas_shared = shared.clone();
    moon_store::set_replicas_check(Box::new(move || {
        crate::replication::enough_replicas(&replicas_shared)
    }));
    // From this (unpinned) thread, so the lazy-free thread takes no shard's CPU.
    moon_store::lazyfree::start();
    let runtime = std::thread::Builder::new()
        .name("moon-shards".into())
        .spawn(move || {
            moon_shard::start(set_config, move |shard| {
                let shared = shard_shared.clone();
                let ready_tx = ready_tx.clone();
                let listener_rx = take_slot(&listener_rxs, shard.id());
                let stop_rx = take_slot(&stop_rxs, shard.id());
                let data = shard_data.clone();
                async move {
                    // Values rebuilt by replay take the configured encodings too.
                    shard.store().set_encodings(encodings);
                    shard.store().set_databases(databases);
                    let started = match &data {
                        Some(data) => crate::persistence::start_shard(&shard, data, policy).await,
                        None => Ok(()),
                    };
                    if let Err(e) = started {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                    if let Some(log) = shard.aof() {
                        crate::shared::lock(&shared.position).register(shard.id(), log.progress());
                    }
                    // Only now: replay evicts nothing by itself (every eviction is in the log).
                    shard.store().set_memory_limit(memory);
                    crate::pubsub::set_notify(&shard, notify);
                    crate::pubsub::set_limit(pubsub_limit);
                    shard.set_event_sink(crate::pubsub::event_sink(Rc::downgrade(&shard)));
                    shard.set_invalidation_sink(crate::tracking::invalidation_sink(Rc::downgrade(
                        &shard,
                    )));
                    crate::tracking::init(&shard);
                    glommio::spawn_local(crate::conn::release_idle_buffers()).detach();
                    if shard.id() == 0 {
                        glommio::spawn_local(crate::replication::ping_replicas(shared.clone()))
                            .detach();
                    }
                    shard.start_serving();
                    shard_main(shard, shared, ready_tx, listener_rx, stop_rx).await
                }
            })
        })
        .map_err(|e| ServerError::fatal(format!("cannot start the shard runtime: {e}")))?;

    // Wait until every shard has replayed its log and is ready to serve.
    for _ in 0..shards {
        let failure = match ready_rx.recv() {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e,
            Err(_) => ServerError::fatal("a shard failed to start"),
        };
        drop(listener_txs); // the other shards give up waiting for a listener
                            // A signal from now on must not turn the failure into a clean exit.
        loading_now.store(false, Ordering::Release);
        let _ = join_runtime(runtime);
        return Err(failure);
    }
    // Test seam: loading lasts while the file `MOON_LOADING_HOLD` names exists, so a test can
    // talk to a loading server without racing the replay.
    if let Ok(hold) = std::env::var("MOON_LOADING_HOLD") {
        while std::path::Path::new(&hold).exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Some(data) = &data_dir {
        crate::persistence::remove_unreferenced(data);
    }
    if config.appendonly {
        tracing::info!(
            "AOF enabled (PerShard, {shards} writers, fsync: {})",
            config.appendfsync.as_str()
        );
    } else {
        tracing::info!("AOF disabled (appendonly no): nothing is persisted");
    }

    // Loading is over: the connections it answered go to the shards, round robin.
    loading_now.store(false, Ordering::Release);
    let mut adopted: Vec<Vec<crate::loading::Handoff>> = (0..shards).map(|_| Vec::new()).collect();
    for (i, h) in loading.finish().into_iter().enumerate() {
        adopted[i % shards].push(h);
    }
    let mut unix = unix;
    for (((tx, fd), tls), adopted) in listener_txs.into_iter().zip(fds).zip(tls_fds).zip(adopted) {
        let _ = tx.send(Some(Listeners {
            plain: fd,
            tls,
            // Shard 0 serves the Unix socket's clients (their commands go to every shard).
            unix: unix.take(),
            adopted,
        }));
    }
    tracing::info!("Ready to accept connections on {actual}");

    let signal = signal_rx
        .recv()
        .map_err(|e| ServerError::fatal(format!("waiting for signals failed: {e}")))?;
    tracing::info!(
        "Received {signal:?}, shutting down: no new connections, finishing in-flight requests"
    );
    // A busy script would keep its shard from draining: killed if it has not written. One
    // that wrote never ends by itself and cannot be killed; its writes are in memory only (a
    // script's effects are logged when it ends), and every reply sent so far had its record
    // written first: leaving at once loses nothing acknowledged (Redis's SHUTDOWN NOSAVE
    // leaves it too). Watched until the process ends: a script may become busy later.
    std::thread::spawn(|| loop {
        if moon_script::stop_for_shutdown() {
            tracing::warn!("A busy script that wrote holds its shard: exiting without it (its writes were never logged)");
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    });
    for tx in stop_txs {
        let _ = tx.send(());
    }
    let joined = join_runtime(runtime);
    if let Some(path) = &config.unixsocket {
        remove_unix(path);
    }
    joined?;
    tracing::info!("Moon is now ready to exit, bye bye...");
    Ok(())
}

/// Bytes of every file under the AOF directory: what loading replays at most.
fn log_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => log_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn join_runtime(
    runtime: std::thread::JoinHandle<anyhow::Result<Vec<Result<(), ServerError>>>>,
) -> Result<(), ServerError> {
    match runtime.join() {
        Ok(Ok(results)) => results.into_iter().collect(),
        Ok(Err(e)) => Err(ServerError::fatal(format!("{e:#}"))),
        Err(_) => Err(ServerError::fatal("the shard runtime panicked")),
    }
}

/// Accepts connections with `accept` until the server stops, each served by `serve` in its own
/// task (`what` names the listener in a failed accept's warning). One accept is never raced
/// against another: a cancelled accept could drop a connection the kernel handed over.
async fn accept_loop<S, A, AF, F, SF>(
    ctx: Rc<ShardServer>,
    gate: Gate,
    what: &str,
    accept: A,
    serve: F,
) where
    A: Fn() -> AF,
    AF: std::future::Future<Output = glommio::Result<S, ()>>,
    F: Fn(Rc<ShardServer>, S) -> SF,
    SF: std::future::Future<Output = ()> + 'static,
{
    loop {
        let accepted = async { Some(accept().await) };
        let stop = async {
            let _ = ctx.stopping.acquire(1).await;
            None
        };
        match futures_lite::future::or(stop, accepted).await {
            None => break,
            Some(Ok(stream)) => match gate.spawn(serve(ctx.clone(), stream)) {
                // Detached: a dropped task handle would cancel the connection.
                Ok(task) => {
                    task.detach();
                }
                Err(_) => break,
            },
            Some(Err(e)) => {
                tracing::warn!(shard = ctx.shard.id(), "{what} accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Accepts TLS connections on this shard's TLS listener until the server stops.
async fn accept_tls(ctx: Rc<ShardServer>, listener: TcpListener, gate: Gate) {
    accept_loop(ctx, gate, "TLS", || listener.accept(), serve_tls).await
}

/// Accepts connections on the Unix socket until the server stops (shard 0). Their address is
/// the socket's path, as Redis shows it (`/tmp/moon.sock:0`).
async fn accept_unix(
    ctx: Rc<ShardServer>,
    listener: glommio::net::UnixListener,
    gate: Gate,
    path: String,
) {
    let addr = format!("{path}:0");
    let serve = |ctx, stream| conn::serve(ctx, stream, addr.clone(), addr.clone());
    accept_loop(ctx, gate, "Unix socket", || listener.accept(), serve).await
}

/// The TLS handshake (bounded in time, with the configuration current now), then the
/// connection as any other.
async fn serve_tls(ctx: Rc<ShardServer>, stream: glommio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let (peer, local) = conn::addresses(&stream);
    let config = ctx.shared.tls.read().ok().and_then(|c| c.clone());
    let Some(config) = config else {
        return;
    };
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    let handshake = async { Some(acceptor.accept(stream).await) };
    let timeout = async {
        glommio::timer::sleep(crate::tls::HANDSHAKE_TIMEOUT).await;
        None
    };
    match futures_lite::future::or(handshake, timeout).await {
        Some(Ok(tls)) => conn::serve(ctx, tls, peer, local).await,
        Some(Err(e)) => tracing::debug!(client = %peer, "TLS handshake failed: {e}"),
        None => tracing::debug!(client = %peer, "TLS handshake timed out"),
    }
}

async fn shard_main(
    shard: Rc<Shard>,
    shared: Arc<Shared>,
    ready_tx: std::sync::mpsc::Sender<Result<usize, ServerError>>,
    listener_rx: Option<oneshot::Receiver<Option<Listeners>>>,
    stop_rx: Option<oneshot::Receiver<()>>,
) -> Result<(), ServerError> {
    let id = shard.id();
    let _ = ready_tx.send(Ok(id));
    drop(ready_tx);
    let Some(Ok(Some(fds))) = (match listener_rx {
        Some(rx) => Some(rx.await),
        None => None,
    }) else {
        return Ok(()); // startup was abandoned
    };
    // SAFETY: `fds.plain` (and `fds.tls`) are listening sockets created by `bind_listeners`
    // and handed to this shard alone; ownership moves into the listeners.
    let listener = unsafe { TcpListener::from_raw_fd(fds.plain) };
    let ctx = Rc::new(ShardServer {
        shard: shard.clone(),
        shared: shared.clone(),
        stopping: Semaphore::new(0),
    });
    if shard.id() == 0 {
        // The link to a primary, whenever `replicaof` names one.
        glommio::spawn_local(crate::replica::run(ctx.clone())).detach();
    }
    let gate = Gate::new();
    if let Some(tls_fd) = fds.tls {
        // SAFETY: as above.
        let tls_listener = unsafe { TcpListener::from_raw_fd(tls_fd) };
        // Its own task: an accept is never raced against another (a cancelled accept could
        // drop a connection the kernel already handed over).
        glommio::spawn_local(accept_tls(ctx.clone(), tls_listener, gate.clone())).detach();
    }
    if let Some((unix_fd, path)) = fds.unix {
        // SAFETY: a listening Unix socket made by `bind_unix`, handed to this shard alone.
        let unix_listener = unsafe { glommio::net::UnixListener::from_raw_fd(unix_fd) };
        glommio::spawn_local(accept_unix(ctx.clone(), unix_listener, gate.clone(), path)).detach();
    }
    for h in fds.adopted {
        let ctx = ctx.clone();
        let peer = h
            .stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let local = h
            .stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if h.stream.set_nonblocking(true).is_err() {
            continue;
        }
        // SAFETY: the accepted socket's descriptor moves from the std stream into glommio's.
        let stream = unsafe {
            glommio::net::TcpStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(h.stream))
        };
        if let Ok(task) =
            gate.spawn(async move { conn::serve_with(ctx, stream, peer, local, &h.leftover).await })
        {
            task.detach();
        }
    }
    if id == 0 {
        crate::rewrite::start_auto_rewrite(shard.clone(), shared.clone());
    }
    let mut stop_rx = stop_rx;
    loop {
        enum Event {
            Conn(glommio::Result<glommio::net::TcpStream, ()>),
            Stop,
        }
        let stop = async {
            match stop_rx.as_mut() {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending::<()>().await,
            }
            Event::Stop
        };
        let accept = async { Event::Conn(listener.accept().await) };
        match futures_lite::future::or(stop, accept).await {
            Event::Stop => break,
            Event::Conn(Ok(stream)) => {
                let ctx = ctx.clone();
                match gate.spawn(async move { conn::serve_tcp(ctx, stream).await }) {
                    // Detached: a dropped task handle would cancel the connection.
                    Ok(task) => {
                        task.detach();
                    }
                    Err(_) => break,
                }
            }
            Event::Conn(Err(e)) => {
                tracing::warn!(shard = id, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    ctx.stopping.close();
    shared.stopping.store(true, Ordering::Release);
    if id == 0 {
        // The replica link stops applying first: the position it saves at the end is then
        // exactly what the logs hold.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !shared.link_stopped.load(Ordering::Acquire) && std::time::Instant::now() < until {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }
    let _ = gate.close().await;
    // Keep serving other shards' messages until every shard's connections are gone.
    shared.drained_shards.fetch_add(1, Ordering::AcqRel);
    while shared.drained_shards.load(Ordering::Acquire) < shard.count() {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    // Nothing can write any more: flush and fsync the log one last time.
    if let Some(aof) = shard.aof() {
        match aof.close().await {
            Ok(()) => {
                shared.logs_closed.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => tracing::error!(shard = id, "closing the AOF failed: {e}"),
        }
    }
    if id == 0 {
        // Every log holds everything applied: a replica keeps its place in its primary's
        // stream for the next start.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while shared.logs_closed.load(Ordering::Acquire) < shard.count()
            && std::time::Instant::now() < until
        {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        if shared.logs_closed.load(Ordering::Acquire) == shard.count()
            && shared.link_stopped.load(Ordering::Acquire)
        {
            crate::replica::save_position(&shared);
        }
    }
    Ok(())
}
