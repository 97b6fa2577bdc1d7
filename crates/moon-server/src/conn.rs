//! One client connection: read, parse every complete request, route, reply in order.
//!
//! A read may hold a whole pipeline. Its commands are planned in order into one batch per
//! shard ([`Plan`]); multi-key commands are split into per-shard parts whose replies are merged
//! back. A batch goes to its shard in one message (the local shard runs it in place), all
//! shards work concurrently, and the replies are written in request order. Commands that act
//! on the connection or need several round trips (AUTH, INFO, a RENAME across shards...) are
//! barriers: everything planned before them is executed first, so their effect is ordered
//! exactly as the client sent it.
//!
//! The loop waits on the socket and on the connection's outbox at once (pub/sub messages,
//! invalidations, ACL re-checks), and its writes give up on a client past its output limit or,
//! once the server stops, after a grace period. Layers: the connection's state is `session`,
//! the per-shard batches are `plan`, command handlers are the families `commands` lists
//! (`connection`, `client`, `pubsub`, `tracking`, `acl_cmd`, `txn`, `cross`...); this module
//! is the loop on top of them, running each request by its row's kind (`commands::Run`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use moon_proto::{Frame, Protocol, RequestParser};
use moon_shard::ShardCounters;
use moon_store::command::{Flags, Spread};
use moon_store::reply;

use crate::commands::{Run, TxControl};
use crate::dispatch::{
    max_record, record_size, too_large_to_log, Parsed, Refused, Request, Target,
};
use crate::plan::Plan;
use crate::session::Reply as _;
use crate::session::{ClientInfo, ReplyMode, Session, CLIENTS};
use crate::shared::ShardServer;

const READ_CHUNK: usize = 16 * 1024;

/// How long a connection with nothing to parse or send keeps its buffers (Redis frees an idle
/// client's query buffer after 2 s).
const RELEASE_IDLE_BUFFERS: Duration = Duration::from_secs(2);

/// Each shard, once a second: asks its connections idle for [`RELEASE_IDLE_BUFFERS`] to give
/// their buffers back. A sweep rather than a timer per connection: arming a timer on every
/// request cost measurable CPU (BENCHMARKS.md, "Client buffers on the request path").
pub async fn release_idle_buffers() {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        CLIENTS.with(|c| {
            for info in c.borrow().values() {
                if info.buffers.get() > 0 && info.last_active.idle() >= RELEASE_IDLE_BUFFERS {
                    info.out.ask_release();
                }
            }
        });
    }
}
/// Commands executed per step of a pipeline. Their replies are written out (waiting for the
/// client to read them) once they pass [`REPLY_FLUSH`] before the next step runs, so a client
/// that pipelines without reading holds at most one step of replies in the server: its socket
/// fills, the write waits, and nothing more is read from it (backpressure).
const PIPELINE_STEP: usize = 64;
/// Parsed requests a connection's list keeps room for between reads (a read's worth of a
/// `-P 16` pipeline); a list grown beyond it by a longer pipeline is given back.
const KEPT_REQUESTS: usize = 2 * PIPELINE_STEP;
const REPLY_FLUSH: usize = 256 * 1024;

/// Serves one connection until the client leaves, sends a malformed request, or the server
/// shuts down.
pub async fn serve_tcp(ctx: Rc<ShardServer>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (peer, local) = addresses(&stream);
    serve(ctx, stream, peer, local).await
}

/// Serves a connection that already sent `received` (accepted while the server loaded).
pub async fn serve_with(
    ctx: Rc<ShardServer>,
    stream: TcpStream,
    peer: String,
    local: String,
    received: &[u8],
) {
    let _ = stream.set_nodelay(true);
    serve_from(ctx, stream, peer, local, received).await
}

/// The peer's and the local address of a socket, as CLIENT LIST shows them.
pub fn addresses(stream: &TcpStream) -> (String, String) {
    (
        stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    )
}

/// Serves one connection (plain TCP, or TLS once its handshake is done).
pub async fn serve<S>(ctx: Rc<ShardServer>, stream: S, peer: String, local: String)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    serve_from(ctx, stream, peer, local, &[]).await
}

/// [`serve`] of a connection whose first bytes were read already.
async fn serve_from<S>(
    ctx: Rc<ShardServer>,
    mut stream: S,
    peer: String,
    local: String,
    received: &[u8],
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let shared = ctx.shared.clone();
    let config = shared.config();
    let counters = &ctx.shard.counters;
    if shared.connected_clients.fetch_add(1, Ordering::AcqRel) >= config.maxclients {
        shared.connected_clients.fetch_sub(1, Ordering::AcqRel);
        ShardCounters::add(&counters.rejected_connections, 1);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        let _ = stream.flush().await;
        close_soon(&mut stream).await;
        return;
    }
    let info = new_client(&ctx, peer, local);
    let id = info.id;
    CLIENTS.with(|c| c.borrow_mut().insert(id, info.clone()));
    moon_store::slowlog::register(id, &info.addr);
    ShardCounters::add(&counters.connections_received, 1);
    ShardCounters::add(&counters.connected_clients, 1);

    let acl_version = shared.acl_version();
    let user = shared
        .user("default")
        .unwrap_or_else(|| std::sync::Arc::new(crate::acl::User::default_user(None)));
    if config.protected_mode && user.nopass && !info.is_loopback() {
        tracing::warn!(
            client = %info.addr,
            "refused a client from outside loopback: protected mode (no password for the default user; see docs/SECURITY.md)"
        );
        CLIENTS.with(|c| c.borrow_mut().remove(&id));
        moon_store::slowlog::forget(id);
        shared.connected_clients.fetch_sub(1, Ordering::AcqRel);
        ShardCounters::add(&counters.connected_clients, u64::MAX); // -1
        ShardCounters::add(&counters.rejected_connections, 1);
        let _ = stream.write_all(PROTECTED_MODE.as_bytes()).await;
        let _ = stream.flush().await;
        close_soon(&mut stream).await;
        return;
    }
    let mut session = new_session(&ctx, info, user, acl_version);
    let mut parser = RequestParser::default();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK.max(received.len()));
    rbuf.extend_from_slice(received);
    // The query buffer's size as CLIENT LIST reports it (`qbuf` + `qbuf-free`): its capacity
    // when it last grew, before the requests parsed out of it took their share.
    let mut rbuf_alloc = rbuf.capacity();
    let mut received_first = !received.is_empty();
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
    // What this connection's buffers hold in the server's memory account (shared evenly by
    // the shards: `moon_store::evict::client_buffers`).
    let mut counted = 0;
    let held = session.info.clone();
    let mut account = |rbuf_alloc: usize, scratch: &Vec<u8>, wbuf: &BytesMut| {
        let now = rbuf_alloc + scratch.capacity() + wbuf.capacity();
        if now == counted {
            return;
        }
        moon_store::evict::client_buffers_changed(counted, now);
        counted = now;
        held.buffers.set(now);
    };
    account(rbuf_alloc, &scratch, &wbuf);
    let mut cmds: Vec<Parsed> = Vec::new();
    let shards = ctx.shard.count();
    session.refresh_config(&mut parser);

    loop {
        // Requests received while the server loaded run before anything more is read.
        let n = if std::mem::take(&mut received_first) {
            0
        } else {
            // Wait for the client's next bytes, or for something pushed to it (a subscriber's
            // messages), or for shutdown. Dropping an unfinished read loses nothing: glommio
            // reads a socket only once it is ready, synchronously.
            enum Event {
                Read(std::io::Result<usize>),
                Pushed,
                Stop,
                Blocked(crate::blocking::Wakeup),
            }
            let out = &session.info.out;
            // A connection idle for a while has given its buffers back: a few bytes on the
            // stack wait for its next request.
            let mut small = [0u8; 64];
            let into: &mut [u8] = if scratch.is_empty() {
                &mut small
            } else {
                &mut scratch[..]
            };
            let read = async { Event::Read(stream.read(into).await) };
            let monitor = session.monitor.clone();
            let replica = session.replica.clone();
            let pushed = async {
                match (monitor, replica) {
                    (Some(m), _) => futures_lite::future::or(out.ready(), m.ready()).await,
                    (None, Some(r)) => futures_lite::future::or(out.ready(), r.ready()).await,
                    (None, None) => out.ready().await,
                }
                Event::Pushed
            };
            let stop = async {
                // Resolves only when the server starts shutting down (the semaphore is closed).
                let _ = ctx.stopping.acquire(1).await;
                Event::Stop
            };
            // Redis never times out a subscriber (it waits for messages, not requests), a
            // client blocked in a command, nor a replica (`repl-timeout` is its own clock).
            let idle = session
                .idle_timeout
                .filter(|_| {
                    !session.subs.any() && session.blocked.is_none() && session.replica.is_none()
                })
                // Counted from its last request, whatever woke this loop since.
                .map(|d| d.saturating_sub(session.info.last_active.idle()));
            let idle = async move {
                match idle {
                    Some(d) => glommio::timer::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                tracing::debug!("closing an idle client (timeout)");
                Event::Stop
            };
            let blocked =
                async { Event::Blocked(crate::blocking::next(session.blocked.as_mut()).await) };
            let event = futures_lite::future::or(
                futures_lite::future::or(read, pushed),
                futures_lite::future::or(stop, futures_lite::future::or(idle, blocked)),
            )
            .await;
            match event {
                Event::Read(Ok(n)) if n > 0 => {
                    // Any bytes count as activity for the idle timeout, as in Redis (a large
                    // value may take longer than `timeout` to arrive whole).
                    session.info.last_active.touch();
                    if scratch.is_empty() {
                        // Back from idle: the buffers again (the query buffer is empty
                        // whenever they were given back; never drop bytes it might hold).
                        if rbuf.is_empty() {
                            rbuf = BytesMut::with_capacity(READ_CHUNK);
                        }
                        scratch = vec![0u8; READ_CHUNK];
                        scratch[..n].copy_from_slice(&small[..n]);
                        wbuf = BytesMut::with_capacity(READ_CHUNK);
                    }
                    n
                }
                Event::Read(Ok(_)) | Event::Stop => break,
                Event::Read(Err(e)) => {
                    tracing::debug!(client = session.info.id, "read failed: {e}");
                    break;
                }
                Event::Blocked(why) => {
                    if !crate::blocking::woke(&mut session, why, &mut wbuf, process_boxed).await {
                        continue;
                    }
                    // Served, or timed out: the commands that waited behind it run now.
                    0
                }
                Event::Pushed
                    if session.blocked.is_some() && session.info.unblock.get().is_some() =>
                {
                    let error = session.info.unblock.take().unwrap_or(false);
                    crate::blocking::unblocked(&mut session, error, &mut wbuf).await;
                    0
                }
                Event::Pushed => {
                    // Idle for a while (the shard's sweep asks): the buffers go back to the
                    // allocator, as Redis frees an idle client's query buffer.
                    if session.info.out.take_release() && rbuf.is_empty() && wbuf.is_empty() {
                        rbuf = BytesMut::new();
                        scratch = Vec::new();
                        wbuf = BytesMut::new();
                        rbuf_alloc = 0;
                        account(rbuf_alloc, &scratch, &wbuf);
                        session.info.qbuf.set((0, 0));
                    }
                    if session.info.out.take_kick() {
                        session.refresh_config(&mut parser);
                    }
                    let out = &session.info.out;
                    if out.is_closing() || session.quit {
                        break;
                    }
                    out.drain_into(&mut wbuf);
                    if let Some(m) = &session.monitor {
                        if m.is_closed() {
                            tracing::warn!(
                                client = session.info.id,
                                "closing a MONITOR client that fell {} bytes behind",
                                moon_store::monitor::MAX_PENDING
                            );
                            break;
                        }
                        m.drain_into(&mut wbuf);
                    }
                    if let Some(r) = &session.replica {
                        if r.is_closed() {
                            break;
                        }
                        r.drain_into(&mut wbuf);
                    }
                    account(rbuf_alloc, &scratch, &wbuf);
                    if !write_out(&mut stream, &mut wbuf, out, counters, &ctx).await {
                        break;
                    }
                    if wbuf.capacity() > 4 * READ_CHUNK {
                        wbuf = BytesMut::with_capacity(READ_CHUNK);
                    }
                    account(rbuf_alloc, &scratch, &wbuf);
                    continue;
                }
            }
        };
        if n > 0 {
            rbuf.extend_from_slice(&scratch[..n]);
        }
        rbuf_alloc = rbuf_alloc.max(rbuf.capacity());
        account(rbuf_alloc, &scratch, &wbuf);
        ShardCounters::add(&counters.net_input_bytes, n as u64);
        if session.blocked.is_some() {
            // Blocked: what it sends waits (Redis reads it and runs it afterwards).
            if rbuf.len() + session.deferred_bytes > session.query_buffer_limit {
                tracing::warn!(
                    client = session.info.id,
                    "closing a blocked client whose waiting commands passed the query buffer limit"
                );
                break;
            }
            continue;
        }
        session.refresh_config(&mut parser);
        if session.quit {
            break; // its ACL user is gone
        }
        if rbuf.len() > session.query_buffer_limit {
            tracing::warn!(
                client = session.info.id,
                "closing a client that reached the query buffer limit ({} bytes > client-query-buffer-limit {})",
                rbuf.len(),
                session.query_buffer_limit
            );
            break;
        }

        let mut protocol_error = None;
        // Commands that waited behind a blocking command first.
        cmds.append(&mut session.deferred);
        session.deferred_bytes = 0;
        // CLIENT LIST's qbuf / qbuf-free while these requests run: what was read.
        session
            .info
            .qbuf
            .set((rbuf.len(), rbuf_alloc.saturating_sub(rbuf.len())));
        loop {
            match parser.next_request(&mut rbuf) {
                Ok(Some(req)) => cmds.push(crate::dispatch::parse(req, shards)),
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        let mut write_failed = false;
        if !cmds.is_empty() {
            // Messages that arrived before these commands go out before their replies.
            session.info.out.drain_into(&mut wbuf);
            let mut pending = std::mem::take(&mut cmds);
            while !pending.is_empty() && !session.quit && !session.info.out.is_closing() {
                if session.blocked.is_some() {
                    crate::blocking::defer(&mut session, std::mem::take(&mut pending));
                    break;
                }
                let rest = pending.split_off(pending.len().min(PIPELINE_STEP));
                if session.reply != ReplyMode::On || pending.iter().any(is_client_reply) {
                    process_silenceable(&mut session, std::mem::take(&mut pending), &mut wbuf)
                        .await;
                } else {
                    process(&mut session, &mut pending, &mut wbuf).await;
                }
                if rest.is_empty() {
                    // The common case (one step): the emptied list serves the next read,
                    // unless a long pipeline grew it.
                    if pending.capacity() <= KEPT_REQUESTS {
                        cmds = pending;
                    }
                    break;
                }
                pending = rest;
                if wbuf.len() >= REPLY_FLUSH && !pending.is_empty() {
                    session.info.out.drain_into(&mut wbuf);
                    if !write_out(&mut stream, &mut wbuf, &session.info.out, counters, &ctx).await {
                        write_failed = true;
                        break;
                    }
                }
            }
        }
        session
            .info
            .qbuf
            .set((rbuf.len(), rbuf_alloc.saturating_sub(rbuf.len())));
        if write_failed || session.info.out.is_closing() {
            break;
        }
        if let Some(e) = &protocol_error {
            tracing::debug!(client = session.info.id, "closing connection: {e}");
            session.reply(&Frame::Error(format!("ERR {e}")), &mut wbuf);
        }
        session.info.out.drain_into(&mut wbuf);
        // A reply waiting for a client that does not read is memory too.
        account(rbuf_alloc, &scratch, &wbuf);
        let wrote = !wbuf.is_empty();
        if wrote && glommio::executor().others_ready() {
            // Every connection that is ready runs its commands before any of them writes:
            // the replies then go out back to back, as Redis writes its replies at the end of
            // its event loop's turn. A send wakes the client that waits for it; sent one
            // connection at a time, with the next connection's parsing and execution in
            // between, the client (a load generator serving many connections on another CPU)
            // was back asleep before each reply, and nearly every send paid a cross-CPU
            // wake-up: a fifth of a shard's CPU under 50 clients pipelining 16 GETs each
            // (`docs/BENCHMARKS.md`, "Replies written together"). With no other task ready
            // the yield would only reschedule this one (5 % of the CPU of an unpipelined GET).
            futures_lite::future::yield_now().await;
        } else {
            // Still give the shard back once its preemption timer fired: a client whose reads
            // and writes never wait would otherwise keep the other clients, and other
            // shards' messages, waiting for as long as it sends (review finding).
            glommio::yield_if_needed().await;
        }
        if !write_out(&mut stream, &mut wbuf, &session.info.out, counters, &ctx).await {
            break;
        }
        if wrote {
            // A reply that took long (a blocking command served late, a slow reader) is
            // activity too: the idle timeout starts after it.
            session.info.last_active.touch();
        }
        if protocol_error.is_some() || session.quit || session.close_after_reply {
            break;
        }
        // Do not let one huge buffer stick to a connection.
        if rbuf.is_empty() && rbuf_alloc > 4 * READ_CHUNK {
            rbuf = BytesMut::with_capacity(READ_CHUNK);
            rbuf_alloc = rbuf.capacity();
        }
        if wbuf.capacity() > 4 * READ_CHUNK {
            wbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        account(rbuf_alloc, &scratch, &wbuf);
    }
    moon_store::evict::client_buffers_changed(counted, 0);
    if session.info.no_touch.get() {
        moon_store::evict::set_no_touch(session.info.id, false);
    }
    // Out of every registry first: no message is counted for (or sent to) a connection
    // that is going, while its close waits (up to a second) for a client that does not read.
    crate::blocking::cancel(&mut session).await;
    crate::pubsub::forget_all(&mut session);
    if session.info.out.is_closing() {
        // Cut off at its output limit: nothing more is owed to it, not even a clean close.
        drop(stream);
    } else {
        close_soon(&mut stream).await;
    }
    if let Some(m) = session.monitor.take() {
        moon_store::monitor::stop(&m);
    }
    if let Some(link) = session.replica.take() {
        session.ctx.shared.repl.detach(&link);
        tracing::info!("Connection with replica {} lost.", session.info.addr);
    }
    crate::txn::unwatch_all(&mut session).await;
    crate::connection::tracking_off(&session).await;
    CLIENTS.with(|c| c.borrow_mut().remove(&session.info.id));
    moon_store::slowlog::forget(session.info.id);
    shared.connected_clients.fetch_sub(1, Ordering::AcqRel);
    ShardCounters::add(&counters.connected_clients, u64::MAX); // -1
}

/// A connection's entry for CLIENT LIST, with a new client id.
pub(crate) fn new_client(ctx: &Rc<ShardServer>, peer: String, local: String) -> Rc<ClientInfo> {
    let id = ctx.shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    Rc::new(ClientInfo {
        id,
        addr: peer,
        laddr: local,
        name: RefCell::new(String::new()),
        lib_name: RefCell::new(String::new()),
        lib_ver: RefCell::new(String::new()),
        created: now,
        last_active: crate::session::Activity::now(),
        last_cmd: Cell::new("NULL"),
        resp: Cell::new(2),
        db: Cell::new(0),
        sub_counts: Cell::new((0, 0, 0)),
        out: crate::session::Outbox::default(),
        shard: ctx.shard.id(),
        tracking: RefCell::new(None),
        user: RefCell::new("default".into()),
        blocked: Cell::new(false),
        unblock: Cell::new(None),
        qbuf: Cell::new((0, 0)),
        buffers: Cell::new(0),
        no_evict: Cell::new(false),
        no_touch: Cell::new(false),
        last_sub: RefCell::new(String::new()),
        replica: Cell::new(false),
    })
}

/// A new connection's session, running as `user` (authenticated if it needs no password),
/// taken from the users at `acl_version`.
pub(crate) fn new_session(
    ctx: &Rc<ShardServer>,
    info: Rc<ClientInfo>,
    user: std::sync::Arc<crate::acl::User>,
    acl_version: u64,
) -> Session {
    Session {
        ctx: ctx.clone(),
        info,
        proto: Protocol::Resp2,
        authenticated: user.enabled && user.nopass,
        quit: false,
        close_after_reply: false,
        db: 0,
        config_version: u64::MAX,
        user,
        acl_version,
        max_bulk_len: 0,
        idle_timeout: None,
        query_buffer_limit: usize::MAX,
        multi: crate::session::TxState::default(),
        tx: None,
        subs: crate::session::Subscriptions::default(),
        reply: ReplyMode::On,
        caching: None,
        held_publications: Vec::new(),
        blocked: None,
        deferred: Vec::new(),
        deferred_bytes: 0,
        attempting: false,
        monitor: None,
        replica: None,
        replica_port: 0,
        replica_capa_eof: false,
        is_master: false,
        refused: std::cell::RefCell::new(Vec::new()),
    }
}

/// Writes `wbuf` to the client and clears it; false if the connection must close (the write
/// failed, or the client passed its output limit while the write waited for it to read).
async fn write_out<S: futures_lite::AsyncWrite + Unpin>(
    stream: &mut S,
    wbuf: &mut BytesMut,
    out: &crate::session::Outbox,
    counters: &ShardCounters,
    ctx: &ShardServer,
) -> bool {
    if wbuf.is_empty() {
        return !out.is_closing();
    }
    ShardCounters::add(&counters.net_output_bytes, wbuf.len() as u64);
    out.set_in_flight(wbuf.len());
    // The flush matters for TLS: a write may leave records buffered in the TLS layer.
    let write = async { stream.write_all(wbuf).await.is_ok() && stream.flush().await.is_ok() };
    let give_up = async {
        // The client passed its output limit, or the server is stopping and the client has
        // not read its replies within the grace period.
        futures_lite::future::or(out.closed(), async {
            let _ = ctx.stopping.acquire(1).await;
            glommio::timer::sleep(SHUTDOWN_WRITE_GRACE).await;
        })
        .await;
        false
    };
    // Most replies fit in the socket's buffer and are written at once: only a write that has
    // to wait races the limit and shutdown.
    let mut write = std::pin::pin!(write);
    let written = match futures_lite::future::poll_once(&mut write).await {
        Some(done) => done,
        None => futures_lite::future::or(write, give_up).await,
    };
    out.set_in_flight(0);
    wbuf.clear();
    written && !out.is_closing()
}

/// How long a reply being written when the server stops may take to reach its client.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(5);

/// Closes a connection, without waiting for a client that does not read (a TLS close waits
/// for its buffered records and close_notify to be sent).
async fn close_soon<S: futures_lite::AsyncWrite + Unpin>(stream: &mut S) {
    let close = async {
        let _ = stream.close().await;
    };
    futures_lite::future::or(close, glommio::timer::sleep(Duration::from_secs(1))).await;
}

/// The reply to a client refused by protected mode, which then closes.
const PROTECTED_MODE: &str = "-DENIED Moon is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Moon you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Moon from the same host the server is running, however MAKE SURE Moon is not publicly accessible from internet if you do so. 2) Alternatively you can just disable the protected mode by setting protected-mode = \"no\" in moon.toml, and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Set up an authentication password for the default user (requirepass, or ACL SETUSER default >password). NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

/// `MOON_PANIC_ON=<command>`: panic when that command is processed (tests of crash-only).
fn panic_seam() -> Option<&'static str> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::env::var("MOON_PANIC_ON").ok())
        .as_deref()
}

/// The commands Redis runs while a script is busy (its `allow-busy` flag): the way out (SCRIPT
/// KILL, FUNCTION KILL, SHUTDOWN), connection housekeeping, and MULTI/WATCH so that a
/// pipelined transaction is refused whole rather than in part.
fn allowed_while_busy(name: &str, args: &[bytes::Bytes]) -> bool {
    let sub = |want: &str| {
        args.get(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(want.as_bytes()))
    };
    match name {
        "auth" | "discard" | "hello" | "multi" | "quit" | "replconf" | "reset" | "shutdown"
        | "unwatch" | "watch" => true,
        "script" => sub("kill"),
        "function" => sub("kill") || sub("stats"),
        _ => false,
    }
}

/// What a replica (or a primary short of replicas) answers instead of running `spec`, in
/// Redis's order: LOADING while a full synchronisation loads, MASTERDOWN while the link is
/// down with `replica-serve-stale-data no`, NOREPLICAS under `min-replicas-to-write`, READONLY
/// for a write on a read-only replica. The primary's own commands (the master session) pass.
fn role_refusal(
    session: &Session,
    spec: &moon_store::command::CommandSpec,
    args: &[bytes::Bytes],
) -> Option<Frame> {
    let shared = &session.ctx.shared;
    if session.is_master {
        return None;
    }
    if !spec.flags.has(Flags::LOADING) && shared.replica_loading.load(Ordering::Relaxed) {
        return Some(Frame::StaticError(
            "LOADING Moon is loading the dataset in memory",
        ));
    }
    if shared.stale_refused.load(Ordering::Relaxed)
        && !shared.link_up.load(Ordering::Relaxed)
        && (!spec.flags.has(Flags::STALE)
            || !crate::replication::script_runs_stale(spec.name, args))
    {
        return Some(Frame::StaticError(
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        ));
    }
    // A script that may write but has no flags runs, and meets NOREPLICAS at its first write
    // (`moon_store::script_step`), as in Redis.
    if spec.is_write()
        && !crate::replication::enough_replicas(shared)
        && !crate::replication::script_checks_its_writes(spec.name, args)
    {
        return Some(Frame::StaticError(moon_store::NO_REPLICAS));
    }
    if spec.is_write()
        && shared.read_only.load(Ordering::Relaxed)
        && !crate::replication::script_checks_its_writes(spec.name, args)
    {
        return Some(Frame::StaticError(
            "READONLY You can't write against a read only replica.",
        ));
    }
    None
}

/// A request refused before it runs (Redis's `rejectCommand`): inside MULTI it makes EXEC
/// fail. EXEC itself refused (BUSY, NOAUTH, ACL...) discards the transaction and its watches,
/// and says why: `EXECABORT Transaction discarded because of: <the refusal>`.
async fn reject(
    session: &mut Session,
    plan: &mut Plan,
    out: &mut BytesMut,
    spec: Option<&'static moon_store::command::CommandSpec>,
    args: &[bytes::Bytes],
    reply: Frame,
) {
    if let Some(spec) = spec {
        moon_store::stats::rejected(spec, args);
    }
    if spec.is_some_and(|s| s.name == "exec") {
        session.multi.queued = None;
        session.multi.failed = false;
        plan.flush(session, out).await;
        crate::txn::unwatch_all(session).await;
        let why = reply.error_text().unwrap_or_default();
        plan.ready(Frame::Error(format!(
            "EXECABORT Transaction discarded because of: {why}"
        )));
        return;
    }
    plan.ready(reply);
    session.multi.failed |= session.multi.queued.is_some();
}

/// A command the connection ran itself (not in a store, which counts its own), for INFO
/// commandstats.
fn counted(
    session: &Session,
    spec: &'static moon_store::command::CommandSpec,
    args: &[bytes::Bytes],
    started: Instant,
    failed: bool,
) {
    session.counted(spec, args, started.elapsed().as_micros() as u64, failed);
}

/// MONITOR: a request about to run (a script before the commands it calls), in database `db`;
/// admin commands are not shown, as in Redis. A Unix socket's client shows as `unix:<path>`.
fn monitored(session: &Session, req: &Request, db: usize) {
    if req.spec.flags.has(Flags::ADMIN) {
        return;
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let addr = &session.info.addr;
    match addr.strip_suffix(":0").filter(|p| p.starts_with('/')) {
        Some(path) => moon_store::monitor::feed(micros, db, &format!("unix:{path}"), &req.args),
        None => moon_store::monitor::feed(micros, db, addr, &req.args),
    }
}

fn noauth() -> Frame {
    Frame::StaticError("NOAUTH Authentication required.")
}

/// Plans and executes one read's worth of requests, appending replies to `out` in order.
/// `cmds` is left empty, its capacity kept for the connection's next read.
pub async fn process(session: &mut Session, cmds: &mut Vec<Parsed>, out: &mut BytesMut) {
    let shards = session.ctx.shard.count();
    if cmds.len() > 1
        && session.tx.is_none()
        && !moon_script::any_busy()
        // Paused: each command waits (or not) on its own, below.
        && session.ctx.shared.pause_until.load(Ordering::Relaxed) == 0
        && pipeline_needs_transaction(session, cmds)
        && record_size(cmds.iter().flatten()) <= max_record()
    {
        // A pipeline with commands that span shards: one transaction for all of it — one set
        // of locks and one commit instead of one per command. Running a client's consecutive
        // commands together, with nobody in between, is a valid order for them.
        if moon_store::monitor::active() {
            for req in cmds.iter().flatten() {
                monitored(session, req, session.db);
            }
        }
        let cmds = std::mem::take(cmds);
        crate::txn::run(session, cmds, Vec::new(), false, out, process_boxed).await;
        return;
    }
    let mut plan = Plan::take(shards);
    ShardCounters::add(
        &session.ctx.shard.counters.commands_processed,
        cmds.len() as u64,
    );
    for parsed in cmds.drain(..) {
        if session.close_after_reply && session.tx.is_none() {
            // It killed itself (CLIENT KILL ... SKIPME no): nothing it sent after that runs,
            // as Redis stops reading a client marked to close after its reply. (Inside a
            // transaction every queued command still runs.)
            break;
        }
        if session.blocked.is_some() {
            // It blocked: the rest wait until it is served (as in Redis).
            crate::blocking::defer(session, [parsed]);
            continue;
        }
        let req = match parsed {
            Ok(req) => req,
            Err(Refused {
                after_auth: true,
                spec,
                ..
            }) if !session.authenticated => {
                reject(session, &mut plan, out, spec, &[], noauth()).await;
                continue;
            }
            Err(Refused { reply, spec, .. }) => {
                reject(session, &mut plan, out, spec, &[], reply).await;
                continue;
            }
        };
        let spec = req.spec;
        let connection_row = crate::commands::connection_row(req.row);
        // Before CLIENT CACHING's effect ends below: it applies to this command.
        let track = if session.info.tracking.borrow().is_some() && req.runs_in_store() {
            if spec.group == moon_store::command::Group::Scripting {
                // A script's caller is a reader when it tracks reads (the keys the script
                // declared are tracked once it runs a read-only command, `moon_store`'s script
                // host), and then its script's writes are its own for NOLOOP. A client that
                // tracks no reads here (BCAST, OPTIN without CACHING yes) gets none: review
                // finding, its script's keys were tracked.
                crate::tracking::reader_for(session, true, false)
            } else {
                crate::tracking::reader_for(session, spec.is_read(), spec.is_write())
            }
        } else {
            None
        };
        // CLIENT CACHING applies to the one command after it (and again when that command
        // is run as a transaction of its own, below); after MULTI, to the whole transaction
        // until EXEC or DISCARD ends it, as Redis keeps the flag while a client is in MULTI.
        let caching = session.caching;
        let in_transaction =
            spec.name == "multi" || session.multi.queued.is_some() || session.tx.is_some();
        if spec.name != "client" && !in_transaction {
            session.caching = None;
        }
        session.info.last_cmd.set(spec.name);
        session.info.note_subcommand(spec.name, &req.args);
        if panic_seam().is_some_and(|name| name == spec.name) {
            // Test seam (MOON_PANIC_ON=<command>): proves a panic stops the whole process.
            panic!("MOON_PANIC_ON: injected panic in {}", spec.name);
        }
        let before_auth = spec.flags.has(Flags::NO_AUTH);
        if !session.authenticated && !before_auth {
            reject(session, &mut plan, out, Some(spec), &req.args, noauth()).await;
            continue;
        }
        if !session.user.unrestricted() && !before_auth {
            if let Err((denied, object)) = session.user.check(spec, &req.args) {
                let reply = crate::acl_cmd::deny(session, denied, &object);
                reject(session, &mut plan, out, Some(spec), &req.args, reply).await;
                continue;
            }
        }
        if session.proto == Protocol::Resp2
            && session.subs.any()
            && !spec.flags.has(Flags::WHILE_SUBSCRIBED)
        {
            let reply = crate::pubsub::not_allowed_while_subscribed(spec.name);
            reject(session, &mut plan, out, Some(spec), &req.args, reply).await;
            continue;
        }
        if let Some(reply) = role_refusal(session, spec, &req.args) {
            reject(session, &mut plan, out, Some(spec), &req.args, reply).await;
            continue;
        }
        if spec.is_write() {
            let size = record_size([&req]);
            if size > max_record() {
                reject(
                    session,
                    &mut plan,
                    out,
                    Some(spec),
                    &req.args,
                    too_large_to_log(size),
                )
                .await;
                continue;
            }
        }
        if moon_script::any_busy() && !allowed_while_busy(spec.name, &req.args) {
            // A busy script holds a shard this command needs (its keys', every shard's, or
            // this connection's own thread's): Redis's BUSY, which inside MULTI makes EXEC
            // fail. Other shards' commands go on.
            let probe = match (&req.target, connection_row.map(|c| &c.run)) {
                // EXEC: the shards of what it would run (it would wait for them otherwise).
                (_, Some(Run::Transaction(TxControl::Exec))) => {
                    session.multi.queued.as_ref().and_then(|queued| {
                        let mut all = vec![session.ctx.shard.id()];
                        for q in queued {
                            all.extend(q.shards()?);
                        }
                        Some(all)
                    })
                }
                // SCRIPT, FUNCTION, BGREWRITEAOF...: they wait for every shard.
                (_, Some(Run::Barrier(_))) => None,
                (Target::Connection, _) => Some(vec![session.ctx.shard.id()]),
                _ => req.shards(),
            };
            if let Some(function) = moon_script::busy_on(probe.as_deref()) {
                let reply = Frame::StaticError(moon_script::busy_reply(function));
                reject(session, &mut plan, out, Some(spec), &req.args, reply).await;
                continue;
            }
        }
        // CLIENT PAUSE: it waits here, before it is queued or run (what was planned before it
        // runs first).
        if session.ctx.shared.pause_until.load(Ordering::Relaxed) != 0
            && crate::pause::paused_for(session, &req)
        {
            plan.flush(session, out).await;
            if !crate::pause::wait(session, &req).await {
                // Killed or the server stopping while it waited: it never runs, nor does
                // anything after it (as Redis frees a paused client it kills).
                break;
            }
            // As Redis processes a postponed command again: the role may have changed
            // meanwhile (FAILOVER pauses writes, then makes this server a replica).
            if let Some(reply) = role_refusal(session, spec, &req.args) {
                reject(session, &mut plan, out, Some(spec), &req.args, reply).await;
                continue;
            }
        }
        // MONITOR sees it now, as it is about to run (or be queued: a transaction's commands
        // appear between MULTI and EXEC); not again when an EXEC or a pipeline run as a
        // transaction runs it.
        if moon_store::monitor::active() && session.tx.is_none() && !session.attempting {
            monitored(session, &req, session.db);
        }
        if session.multi.queued.is_some() && spec.flags.has(Flags::NO_MULTI) {
            let reply = Frame::StaticError("ERR Command not allowed inside a transaction");
            reject(session, &mut plan, out, Some(spec), &req.args, reply).await;
            continue;
        }
        if session.multi.queued.is_some() {
            // Inside MULTI: queue, except the commands that control the transaction.
            let run = connection_row.map(|c| &c.run);
            if matches!(
                run,
                Some(Run::Transaction(TxControl::Exec | TxControl::Discard) | Run::Reset)
            ) {
                // What was planned before it runs first, outside its time.
                plan.flush(session, out).await;
            }
            let started = Instant::now();
            match run {
                Some(Run::Transaction(TxControl::Exec)) => {
                    plan.flush(session, out).await;
                    let mark = out.len();
                    crate::txn::exec(session, out, process_boxed).await;
                    // A CLIENT CACHING before or inside the transaction ends with it.
                    session.caching = None;
                    counted(
                        session,
                        spec,
                        &req.args,
                        started,
                        out.get(mark) == Some(&b'-'),
                    );
                }
                Some(Run::Transaction(TxControl::Discard)) => {
                    session.multi.queued = None;
                    session.multi.failed = false;
                    session.caching = None;
                    plan.flush(session, out).await;
                    crate::txn::unwatch_all(session).await;
                    plan.ready(Frame::OK);
                    counted(session, spec, &req.args, started, false);
                }
                Some(Run::Reset) => {
                    plan.flush(session, out).await;
                    reset(session, out).await;
                    counted(session, spec, &req.args, started, false);
                }
                Some(Run::Transaction(TxControl::Multi)) => {
                    plan.ready(Frame::StaticError("ERR MULTI calls can not be nested"));
                    counted(session, spec, &req.args, started, true);
                }
                Some(Run::Transaction(TxControl::Watch)) => {
                    plan.ready(Frame::StaticError("ERR WATCH inside MULTI is not allowed"));
                    counted(session, spec, &req.args, started, true);
                }
                _ => {
                    if let Some(queued) = session.multi.queued.as_mut() {
                        queued.push(req);
                    }
                    plan.ready(Frame::Simple("QUEUED"));
                }
            }
            continue;
        }
        if spec.flags.has(Flags::BLOCKING)
            && session.tx.is_none()
            && !session.attempting
            && moon_store::may_wait(&req.args)
        {
            // Outside MULTI a blocking command may wait (`blocking.rs`). Its first attempts
            // run it again: CLIENT CACHING's answer must reach them.
            plan.flush(session, out).await;
            session.caching = caching;
            crate::blocking::start(session, req, out, process_boxed).await;
            session.caching = None;
            continue;
        }
        let db = session.db;
        match req.target {
            Target::Shard(shard) => match req.into_call(db, track, session.caller()) {
                Ok(call) => plan.one(shard, crate::acl_cmd::for_script(session, call)),
                Err(req) => plan.ready(reply::unknown_command(&req.args)),
            },
            Target::Shards(_) if session.tx.is_none() => {
                // Keys on several shards: an implicit transaction, so that no client sees (or
                // recovers) part of it. It runs the command again: CLIENT CACHING's answer
                // must reach it there.
                plan.flush(session, out).await;
                session.caching = caching;
                run_alone_as_transaction(session, req, out).await;
                session.caching = None;
            }
            Target::Shards(_) => match req.spread() {
                Spread::Split(merge) => match req.into_call(db, track, session.caller()) {
                    Ok(call) => plan.split(call, spec.step.max(1) as usize, merge),
                    Err(req) => plan.ready(reply::unknown_command(&req.args)),
                },
                Spread::One | Spread::Coordinated => {
                    plan.flush(session, out).await;
                    let started = Instant::now();
                    let f = crate::cross::run(session, spec, &req.args, track).await;
                    counted(session, spec, &req.args, started, f.is_error());
                    f.reply_to(session, out);
                }
            },
            Target::All(_) if spec.is_write() && shards > 1 && session.tx.is_none() => {
                // FLUSHALL/FLUSHDB: every shard or none, also after a crash — a transaction
                // over all shards (one part per shard).
                plan.flush(session, out).await;
                run_alone_as_transaction(session, req, out).await;
            }
            Target::All(merge) => match req.into_call(db, None, session.caller()) {
                Ok(call) => plan.all(call, merge),
                Err(req) => plan.ready(reply::unknown_command(&req.args)),
            },
            Target::Server => {
                plan.flush(session, out).await;
                let started = Instant::now();
                let f = crate::keyspace_walk::special(session, spec, &req.args).await;
                counted(session, spec, &req.args, started, f.is_error());
                f.reply_to(session, out);
            }
            Target::Connection => {
                let Some(row) = connection_row else {
                    plan.ready(reply::unknown_command(&req.args));
                    continue;
                };
                if !matches!(
                    row.run,
                    Run::Inline(_)
                        | Run::Publish(_)
                        | Run::Transaction(TxControl::Multi | TxControl::Exec | TxControl::Discard)
                ) {
                    // What was planned before it runs first, outside its time.
                    plan.flush(session, out).await;
                }
                let started = Instant::now();
                // Whether it answered an error (commandstats' failed calls).
                let failed = match &row.run {
                    Run::Inline(run) => {
                        let f = run(session, &req.args);
                        let failed = f.is_error();
                        plan.ready(f);
                        failed
                    }
                    Run::Publish(kind) => {
                        plan.publish(*kind, &req.args);
                        false
                    }
                    Run::Transaction(TxControl::Multi) => {
                        session.multi.queued = Some(Vec::new());
                        plan.ready(Frame::OK);
                        false
                    }
                    Run::Transaction(TxControl::Exec) => {
                        plan.ready(Frame::StaticError("ERR EXEC without MULTI"));
                        true
                    }
                    Run::Transaction(TxControl::Discard) => {
                        plan.ready(Frame::StaticError("ERR DISCARD without MULTI"));
                        true
                    }
                    Run::Transaction(TxControl::Watch) => {
                        plan.flush(session, out).await;
                        let f = crate::txn::watch(session, &req.args[1..]).await;
                        f.reply_to(session, out);
                        f.is_error()
                    }
                    Run::Transaction(TxControl::Unwatch) => {
                        plan.flush(session, out).await;
                        crate::txn::unwatch_all(session).await;
                        Frame::OK.reply_to(session, out);
                        false
                    }
                    Run::Reset => {
                        plan.flush(session, out).await;
                        reset(session, out).await;
                        false
                    }
                    Run::Writes(run) => {
                        plan.flush(session, out).await;
                        let mark = out.len();
                        run(session, &req.args, out).await;
                        out.get(mark) == Some(&b'-')
                    }
                    Run::Barrier(run) => {
                        plan.flush(session, out).await;
                        let f = run(session, &req.args).await;
                        let failed = f.as_ref().is_some_and(Frame::is_error);
                        if let Some(f) = f {
                            f.reply_to(session, out);
                        }
                        if session.quit {
                            counted(session, spec, &req.args, started, failed);
                            break;
                        }
                        failed
                    }
                };
                counted(session, spec, &req.args, started, failed);
            }
        }
    }
    plan.flush(session, out).await;
    plan.give_back();
}

/// RESET: the connection as new; the messages pushed before it go out before its reply.
async fn reset(session: &mut Session, out: &mut BytesMut) {
    crate::connection::reset(session).await;
    session.info.out.drain_into(out);
    Frame::Simple("RESET").reply_to(session, out);
}

fn is_client_reply(p: &Parsed) -> bool {
    p.as_ref().is_ok_and(|r| {
        r.spec.name == "client"
            && r.args
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"reply"))
    })
}

/// [`process`] one command at a time, dropping the replies CLIENT REPLY OFF / SKIP silence.
/// Pub/sub confirmations go through the outbox meanwhile, so they are sent in order.
/// One request that must be atomic by itself (keys on several shards, a flush of every shard):
/// an implicit transaction of one command.
async fn run_alone_as_transaction(session: &mut Session, req: Request, out: &mut BytesMut) {
    crate::txn::run(
        session,
        vec![Ok(req)],
        Vec::new(),
        false,
        out,
        process_boxed,
    )
    .await;
}

/// [`process`] as a transaction runs its commands ([`crate::txn::Process`]).
pub(crate) fn process_boxed<'a>(
    session: &'a mut Session,
    cmds: Vec<Parsed>,
    out: &'a mut BytesMut,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(async move {
        let mut cmds = cmds;
        process(session, &mut cmds, out).await
    })
}

async fn process_silenceable(session: &mut Session, cmds: Vec<Parsed>, out: &mut BytesMut) {
    for cmd in cmds {
        // CLIENT REPLY ON is answered even right after SKIP (it clears it), as in Redis.
        let reply_on = cmd.as_ref().is_ok_and(|r| {
            r.args.len() == 3
                && r.args[0].eq_ignore_ascii_case(b"client")
                && r.args[1].eq_ignore_ascii_case(b"reply")
                && r.args[2].eq_ignore_ascii_case(b"on")
        });
        let skip_this = session.reply == ReplyMode::SkipNext && !reply_on;
        let mut reply = BytesMut::new();
        process(session, &mut vec![cmd], &mut reply).await;
        if skip_this && session.reply == ReplyMode::SkipNext {
            session.reply = ReplyMode::On;
        }
        if !(skip_this || session.reply != ReplyMode::On) {
            session.info.out.drain_into(out);
            out.extend_from_slice(&reply);
        }
        session.info.out.drain_into(out);
        if session.quit {
            break;
        }
    }
}

/// Whether a pipeline (outside MULTI) holds a command whose keys span shards and nothing that
/// manages transactions itself.
fn pipeline_needs_transaction(session: &Session, cmds: &[Parsed]) -> bool {
    // A RESP2 subscriber's commands are refused one by one (subscribed context).
    let subscribed = session.proto == Protocol::Resp2 && session.subs.any();
    if session.multi.queued.is_some() || !session.authenticated || subscribed {
        return false;
    }
    let mut spans = false;
    for req in cmds.iter().flatten() {
        let row = crate::commands::connection_row(req.row);
        if row.is_some_and(|c| matches!(c.run, Run::Transaction(_))) {
            return false;
        }
        if req.spec.flags.has(Flags::BLOCKING) {
            // It may wait: never inside a transaction it would hold.
            return false;
        }
        spans |= matches!(req.target, Target::Shards(_));
    }
    spans
}
