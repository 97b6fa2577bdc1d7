//! Replication, the replica's side: following a primary (a Redis 7 server or another Moon)
//! named by `replicaof` (the config file, or REPLICAOF / SLAVEOF at run time).
//!
//! One task on shard 0 watches the setting and keeps one link: the handshake as a Redis 7
//! replica sends it (PING, AUTH with `masterauth`, `REPLCONF listening-port`, `REPLCONF capa
//! psync2`, then `PSYNC <replid> <offset+1>`, or `PSYNC ? -1` the first time), then either a
//! full synchronisation (`+FULLRESYNC`: the RDB that follows is loaded) or a partial one
//! (`+CONTINUE`: the stream goes on), then the stream, applied command by command.
//!
//! **Everything the primary sends runs as a client's commands** — a session of its own, the
//! "master client" — through the same path as any client's (`conn::process`): each write is
//! logged in its shard's AOF before the link reads on, a MULTI/EXEC spanning shards runs as
//! one cross-shard transaction (so a reader never sees half of it, here as on the primary),
//! and the RDB of a full synchronisation becomes FLUSHALL then one RESTORE per key, logged as
//! any RESTORE. While it loads, clients get LOADING. The master client writes on a read-only
//! replica; clients' writes get READONLY.
//!
//! **Offsets.** The link counts the bytes of every complete command it applied
//! (`slave_repl_offset`), acknowledges them every second and when asked (`REPLCONF GETACK`),
//! and keeps the primary's replication id and offset across reconnections, so that the next
//! PSYNC continues where it stopped. After each batch it saves that place beside its logs
//! (`repl_position.rs`) before acknowledging it, so that a restart — after a kill too —
//! continues with PSYNC as well.
//!
//! The top of the server's layers, beside `server.rs` (which spawns it): it runs requests
//! through the connection layer.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use moon_proto::RequestParser;

use crate::shared::{lock, ShardServer};

/// The largest RDB a full synchronisation takes into memory before loading it.
const MAX_RDB: u64 = 64 << 30;

/// A line of the handshake, or a bulk header, is at most this long.
const MAX_LINE: usize = 64 << 10;

/// Commands a primary never sends, which would block, subscribe, end or re-authenticate the
/// master session: dropped from the stream with a warning.
const NOT_FROM_A_PRIMARY: &[&[u8]] = &[
    b"auth",
    b"hello",
    b"quit",
    b"reset",
    b"wait",
    b"waitaof",
    b"subscribe",
    b"psubscribe",
    b"ssubscribe",
    b"monitor",
    b"psync",
    b"sync",
    b"replicaof",
    b"slaveof",
    b"shutdown",
    b"client",
    b"blpop",
    b"brpop",
    b"blmove",
    b"brpoplpush",
    b"blmpop",
    b"bzpopmin",
    b"bzpopmax",
    b"bzmpop",
    b"xread",
    b"xreadgroup",
    b"debug",
];

/// At a clean shutdown (every log closed, the link stopped): a replica makes its last saved
/// place in its primary's stream durable (`repl_position.rs`); a primary saves its stream's
/// offset, which its next start continues (its replication id is new at every start: its
/// backlog is not kept).
pub fn save_position(shared: &crate::shared::Shared) {
    let config = shared.config();
    if !config.appendonly {
        return;
    }
    let saved = if config.replicaof.is_some() {
        if !config.replica_read_only {
            return;
        }
        // The link's last saved place is the one that matches the logs (a batch cut short by
        // the shutdown is not in it): made durable as it is.
        lock(&shared.position).sync()
    } else if shared.repl.active() {
        lock(&shared.position).save_primary(shared.repl.offset())
    } else {
        return;
    };
    match saved {
        Ok(()) => tracing::info!("Saved the replication position for the next start"),
        Err(e) => tracing::warn!("could not save the replication position: {e}"),
    }
}

/// At start, before the link or any client: where a previous run left the stream
/// (recovery already ended the logs to match a replica's place, `persistence.rs`).
pub fn continue_from(shared: &crate::shared::Shared, saved: crate::repl_position::Saved) {
    match saved {
        crate::repl_position::Saved::Primary(offset) => shared.repl.start_at(offset),
        crate::repl_position::Saved::Replica(p) => {
            if p.db as u64 >= shared.config().databases {
                tracing::warn!(
                    "the saved replication position selects database {}, which this server does not have; a full resynchronisation follows",
                    p.db
                );
                return;
            }
            tracing::info!(
                "Continuing the replication stream {} at offset {}",
                p.replid,
                p.offset
            );
            let mut l = lock(&shared.master_link);
            l.replid = p.replid;
            l.offset = p.offset;
            l.db = p.db;
        }
    }
}

/// The task: follows whatever `replicaof` names, for the life of the server.
pub async fn run(ctx: Rc<ShardServer>) {
    let shared = ctx.shared.clone();
    let mut failures = 0u32;
    let mut pause = false;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            // Shutdown: nothing more is applied; the position stays as it is.
            shared.link_stopped.store(true, Ordering::Release);
            return;
        }
        // The setting is read afresh every time: a REPLICAOF during the pause after a failure
        // must not be followed by one more attempt at the old primary (found by `cargo xtask
        // failover`: a replica synchronised from the restarted old primary).
        let version = shared.config_version();
        let Some((host, port)) = shared.config().replicaof.clone() else {
            set_state(&ctx, "connect");
            // A promoted replica: no load is in progress any more.
            shared.replica_loading.store(false, Ordering::Release);
            glommio::timer::sleep(Duration::from_millis(100)).await;
            failures = 0;
            pause = false;
            continue;
        };
        if std::mem::take(&mut pause) {
            // As Redis's replication cron, a second later; longer after repeated failures
            // (up to 32 s), so that a primary is not asked for full copies every second.
            let secs = 1u64 << failures.saturating_sub(1).min(5);
            let until = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < until && shared.config_version() == version {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            continue;
        }
        match follow(&ctx, &host, port, version).await {
            Ok(()) => failures = 0,
            Err(e) => {
                tracing::warn!("Replication with primary {host}:{port}: {e}");
                failures += 1;
                pause = true;
            }
        }
        {
            let mut link = lock(&ctx.shared.master_link);
            if link.down_since.is_none() {
                link.down_since = Some(Instant::now());
            }
        }
        set_state(&ctx, "connect");
    }
}

/// Whether `replicaof` still names `host:port` (the setting was read at `version`).
fn still_following(
    shared: &crate::shared::Shared,
    version: &mut u64,
    host: &str,
    port: u16,
) -> bool {
    let now = shared.config_version();
    if now == *version {
        return true;
    }
    *version = now;
    shared
        .config()
        .replicaof
        .is_some_and(|(h, p)| h == host && p == port)
}

fn set_state(ctx: &ShardServer, state: &'static str) {
    ctx.shared.set_link_state(state);
}

/// The connection to the primary, with what was read and not yet used.
struct Link {
    stream: TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

impl Link {
    async fn send(&mut self, args: &[&[u8]]) -> Result<(), String> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("writing to the primary: {e}"))
    }

    /// Reads more bytes; an error when the primary closed, or said nothing for `timeout`.
    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = vec![0u8; 64 << 10];
        let timeout = self.timeout;
        let read = async { Some(self.stream.read(&mut chunk).await) };
        let idle = async {
            glommio::timer::sleep(timeout).await;
            None
        };
        match futures_lite::future::or(read, idle).await {
            Some(Ok(0)) => Err("the primary closed the connection".into()),
            Some(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Some(Err(e)) => Err(format!("reading from the primary: {e}")),
            None => Err(format!(
                "nothing from the primary for {} s (repl-timeout)",
                timeout.as_secs()
            )),
        }
    }

    /// One line, without its CRLF. Empty lines (the newlines a primary sends to keep the link
    /// alive while it prepares an RDB) are skipped.
    async fn line(&mut self) -> Result<String, String> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                let _ = self.buf.split_to(1);
            }
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i + 2);
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err("a line from the primary is too long".into());
            }
            self.fill().await?;
        }
    }

    /// The bytes up to `mark` (diskless framing), the mark consumed.
    async fn until_mark(&mut self, mark: &[u8]) -> Result<Bytes, String> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].windows(mark.len()).position(|w| w == mark) {
                let file = self.buf.split_to(from + i).freeze();
                let _ = self.buf.split_to(mark.len());
                return Ok(file);
            }
            from = self.buf.len().saturating_sub(mark.len());
            if self.buf.len() as u64 > MAX_RDB {
                return Err("the primary's RDB is larger than a replica takes".into());
            }
            self.fill().await?;
        }
    }

    async fn exactly(&mut self, n: usize) -> Result<Bytes, String> {
        while self.buf.len() < n {
            // Grown as bytes come (the length is the primary's word, not yet its bytes).
            self.buf.reserve((n - self.buf.len()).min(64 << 20));
            self.fill().await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }
}

/// Connects, synchronises and applies the stream until the link fails (an error) or
/// `replicaof` names another primary or none (`Ok`).
async fn follow(
    ctx: &Rc<ShardServer>,
    host: &str,
    port: u16,
    mut version: u64,
) -> Result<(), String> {
    let shared = ctx.shared.clone();
    // The epoch this link saves its place under (`repl_position.rs`): if the role changed
    // since `version` was read, the setting is read again first.
    let epoch = {
        let position = lock(&shared.position);
        if shared.config_version() != version {
            return Ok(());
        }
        position.epoch()
    };
    let config = shared.config();
    let timeout = Duration::from_secs(config.repl_timeout.max(1));
    set_state(ctx, "connecting");
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port),
        // A name: resolved here, on shard 0's thread (a slow resolver stalls it; use an
        // address in `replicaof` to avoid that).
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?,
    };
    let connect = async { Some(TcpStream::connect(addr).await) };
    let give_up = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    let stream = futures_lite::future::or(connect, give_up)
        .await
        .ok_or("connecting timed out")?
        .map_err(|e| format!("connecting: {e}"))?;
    let _ = stream.set_nodelay(true);
    tracing::info!("Connecting to primary {host}:{port}");
    let mut link = Link {
        stream,
        buf: BytesMut::new(),
        timeout,
    };
    link.send(&[b"PING"]).await?;
    let pong = link.line().await?;
    // A primary that wants a password answers PING with NOAUTH: AUTH comes next.
    if !pong.starts_with('+') && !pong.contains("NOAUTH") && !pong.contains("NOPERM") {
        return Err(format!("the primary answered PING with {pong}"));
    }
    if let Some(pass) = &config.masterauth {
        match &config.masteruser {
            Some(user) => {
                link.send(&[b"AUTH", user.as_bytes(), pass.as_bytes()])
                    .await?
            }
            None => link.send(&[b"AUTH", pass.as_bytes()]).await?,
        }
        let r = link.line().await?;
        if !r.starts_with('+') {
            return Err(format!("AUTH at the primary failed: {r}"));
        }
    }
    let my_port = shared.port.load(Ordering::Relaxed).to_string();
    link.send(&[b"REPLCONF", b"listening-port", my_port.as_bytes()])
        .await?;
    let _ = link.line().await?;
    link.send(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])
        .await?;
    let _ = link.line().await?;
    let (replid, offset) = {
        let l = lock(&shared.master_link);
        (l.replid.clone(), l.offset)
    };
    let failover = std::mem::take(&mut lock(&shared.master_link).failover_psync);
    if replid.is_empty() {
        link.send(&[b"PSYNC", b"?", b"-1"]).await?;
    } else if failover {
        // We handed our primary role over: the target takes it on this request.
        let next = (offset + 1).to_string();
        link.send(&[b"PSYNC", replid.as_bytes(), next.as_bytes(), b"FAILOVER"])
            .await?;
    } else {
        let next = (offset + 1).to_string();
        link.send(&[b"PSYNC", replid.as_bytes(), next.as_bytes()])
            .await?;
    }
    let answer = link.line().await?;
    let mut master = master_session(ctx);
    let words: Vec<&str> = answer.split_whitespace().collect();
    match words.as_slice() {
        ["+FULLRESYNC", id, off] => {
            let off: u64 = off
                .parse()
                .map_err(|_| format!("bad FULLRESYNC offset in {answer}"))?;
            set_state(ctx, "sync");
            let header = link.line().await?;
            // From here the old position means nothing: a failure below synchronises fully.
            // (The offset stays as INFO shows it until the load sets the new one: it only
            // grows.)
            lock(&shared.master_link).replid.clear();
            let rdb = match header.strip_prefix("$EOF:") {
                // Diskless: the file runs until the 40-byte mark comes again.
                Some(mark) if mark.len() == 40 => {
                    tracing::info!(
                        "Full resync from primary {id}:{off}: receiving the RDB (diskless)"
                    );
                    link.until_mark(mark.as_bytes()).await?
                }
                _ => {
                    let len: u64 = header
                        .strip_prefix('$')
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n <= MAX_RDB)
                        .ok_or_else(|| format!("expected the RDB's length, got {header:?}"))?;
                    tracing::info!(
                        "Full resync from primary {id}:{off}: receiving {len} bytes of RDB"
                    );
                    link.exactly(len as usize).await?
                }
            };
            if !still_following(&shared, &mut version, host, port) {
                // REPLICAOF named another primary (or none) meanwhile: this one's data must
                // not replace ours.
                return Ok(());
            }
            // A kill from here on must not continue from the old place: the load replaces
            // the function libraries too, which no cut of the logs restores.
            lock(&shared.position)
                .discard()
                .map_err(|e| format!("removing the replication position: {e}"))?;
            load(&mut master, rdb, &mut link).await?;
            let mut l = lock(&shared.master_link);
            l.replid = id.to_string();
            l.offset = off;
            l.db = 0;
        }
        ["+CONTINUE", rest @ ..] => {
            tracing::info!("Partial resynchronization with the primary accepted");
            let mut l = lock(&shared.master_link);
            if let Some(id) = rest.first() {
                l.replid = id.to_string();
            }
            // The stream goes on in the database it had selected.
            master.db = l.db;
        }
        _ => return Err(format!("the primary answered PSYNC with {answer}")),
    }
    {
        let mut l = lock(&shared.master_link);
        l.down_since = None;
        l.last_io = Some(Instant::now());
    }
    set_state(ctx, "connected");
    tracing::info!("MASTER <-> REPLICA sync: Finished with success");
    apply_stream(ctx, &mut link, &mut master, host, port, (version, epoch)).await
}

/// Saves the link's place (`master_link`: replid, offset, database) with every log's written
/// LSN, once what it names has run whole and before an ACK names it (`repl_position.rs`).
/// `Some(true)`: saved; `Some(false)`: it could not be written; `None`: nothing to save
/// (a writable replica, no place yet, or the role changed since the link started in
/// `epoch`: it is about to stop).
fn checkpoint(shared: &crate::shared::Shared, epoch: u64) -> Option<bool> {
    let (replid, offset, db) = {
        let l = lock(&shared.master_link);
        (l.replid.clone(), l.offset, l.db)
    };
    if replid.is_empty() {
        return None;
    }
    let mut position = lock(&shared.position);
    if position.epoch() != epoch || !shared.read_only.load(Ordering::Acquire) {
        return None;
    }
    match position.save(&replid, offset, db) {
        Ok(()) => Some(true),
        Err(e) => {
            tracing::warn!("cannot save the replication position: {e}; offsets after the last saved one are not acknowledged");
            Some(false)
        }
    }
}

/// The session that runs what the primary sends: every command allowed, nothing refused for
/// being a replica, replies dropped.
fn master_session(ctx: &Rc<ShardServer>) -> crate::session::Session {
    let info = crate::conn::new_client(ctx, "master".into(), String::new());
    let user = std::sync::Arc::new(crate::acl::User::default_user(None));
    let mut s = crate::conn::new_session(ctx, info, user, ctx.shared.acl_version());
    s.authenticated = true;
    s.is_master = true;
    // Its scripts (a primary that replicates them verbatim) write as the primary did.
    moon_store::set_master_client(s.info.id);
    s
}

/// Runs `cmds` as the primary's commands; their replies are dropped (as the primary reads
/// none).
async fn run_cmds(master: &mut crate::session::Session, cmds: Vec<Vec<Bytes>>) {
    if cmds.is_empty() {
        return;
    }
    let shards = master.ctx.shard.count();
    let mut parsed = cmds
        .into_iter()
        .map(|c| crate::dispatch::parse(c, shards))
        .collect();
    let mut out = BytesMut::new();
    crate::conn::process(master, &mut parsed, &mut out).await;
}

/// A full synchronisation's RDB: everything here replaced by it, durably (FLUSHALL, then a
/// RESTORE per key and FUNCTION LOAD per library, logged as clients' would be). The file is
/// read through once first: one that does not parse to its checksum changes nothing. Clients
/// get LOADING from the FLUSHALL until a load succeeds (a failed one leaves part of the data).
async fn load(
    master: &mut crate::session::Session,
    rdb: Bytes,
    link: &mut Link,
) -> Result<(), String> {
    let shared = master.ctx.shared.clone();
    check_rdb(&rdb, shared.config().databases)?;
    shared.replica_loading.store(true, Ordering::Release);
    load_items(master, &rdb, link).await?;
    shared.replica_loading.store(false, Ordering::Release);
    Ok(())
}

/// Every item of `rdb` parses, to its checksum, into something this server can hold.
fn check_rdb(rdb: &[u8], databases: u64) -> Result<(), String> {
    let mut reader =
        moon_rdb::FileReader::new(rdb, false).map_err(|e| format!("the primary's RDB: {e}"))?;
    let mut keys = 0u64;
    loop {
        match reader.next_item() {
            Ok(None) => return Ok(()),
            Ok(Some(moon_rdb::Item::Db(db))) if db >= databases => {
                return Err(format!(
                    "the primary's RDB holds database {db}; this server has {databases} (databases)"
                ));
            }
            Ok(Some(moon_rdb::Item::Key(_))) => keys += 1,
            Ok(Some(_)) => {}
            Err(e) => return Err(format!("the primary's RDB, after {keys} keys: {e}")),
        }
    }
}

async fn load_items(
    master: &mut crate::session::Session,
    rdb: &[u8],
    link: &mut Link,
) -> Result<(), String> {
    let started = Instant::now();
    // The primary's data replaces everything here, its function libraries included.
    run_cmds(
        master,
        vec![
            vec![Bytes::from_static(b"FLUSHALL")],
            vec![
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"FLUSH"),
            ],
        ],
    )
    .await;
    let mut reader =
        moon_rdb::FileReader::new(rdb, false).map_err(|e| format!("the primary's RDB: {e}"))?;
    let mut batch: Vec<Vec<Bytes>> = Vec::new();
    let mut keys = 0u64;
    let mut alive = Instant::now();
    loop {
        let item = reader
            .next_item()
            .map_err(|e| format!("the primary's RDB, after {keys} keys: {e}"))?;
        let last = item.is_none();
        match item {
            None => batch.push(vec![
                Bytes::from_static(b"SELECT"),
                Bytes::from_static(b"0"),
            ]),
            Some(moon_rdb::Item::Db(db)) => {
                batch.push(vec![
                    Bytes::from_static(b"SELECT"),
                    Bytes::from(db.to_string()),
                ]);
            }
            Some(moon_rdb::Item::Key(k)) => {
                keys += 1;
                let at = k.expire_at.unwrap_or(0);
                batch.push(vec![
                    Bytes::from_static(b"RESTORE"),
                    k.key,
                    Bytes::from(at.to_string()),
                    Bytes::from(moon_rdb::encode_dump(&k.value)),
                    Bytes::from_static(b"REPLACE"),
                    Bytes::from_static(b"ABSTTL"),
                ]);
            }
            Some(moon_rdb::Item::Function(code)) => batch.push(vec![
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"LOAD"),
                Bytes::from_static(b"REPLACE"),
                code,
            ]),
            Some(moon_rdb::Item::Aux(..) | moon_rdb::Item::Skipped { .. }) => {}
        }
        if batch.len() >= 256 || last {
            run_cmds(master, std::mem::take(&mut batch)).await;
            let refused = std::mem::take(&mut *master.refused.borrow_mut());
            if let Some(e) = refused.first() {
                return Err(format!(
                    "loading the primary's RDB, after {keys} keys: a key was refused here ({e})"
                ));
            }
            if alive.elapsed() >= Duration::from_secs(1) {
                // As a Redis replica does while it loads: the primary must not take the
                // silence for a dead link.
                link.stream
                    .write_all(b"\n")
                    .await
                    .map_err(|e| format!("writing to the primary: {e}"))?;
                alive = Instant::now();
            }
        }
        if last {
            break;
        }
    }
    tracing::info!(
        "MASTER <-> REPLICA sync: {keys} keys loaded in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// The stream: each complete command applied in order, its bytes counted once it ran;
/// `REPLCONF GETACK` answered with the offset, an ACK every second.
async fn apply_stream(
    ctx: &Rc<ShardServer>,
    link: &mut Link,
    master: &mut crate::session::Session,
    host: &str,
    port: u16,
    (mut version, epoch): (u64, u64),
) -> Result<(), String> {
    let shared = ctx.shared.clone();
    let mut parser = RequestParser::new(moon_proto::Limits {
        max_bulk_len: usize::MAX >> 1,
        max_multibulk_len: usize::MAX >> 1,
        max_inline_len: MAX_LINE,
    });
    let mut offset = lock(&shared.master_link).offset;
    let mut partial = 0u64;
    // Bytes of an open MULTI: counted once its EXEC (or DISCARD) ran. As in Redis, the offset
    // never ends inside a transaction: a link cut there resumes at its MULTI, and the new
    // master session has none of it queued.
    let mut open_tx = 0u64;
    let mut in_multi = false;
    let mut last_ack = Instant::now();
    // The offset last acknowledged as fsynced here, and the last that may be acknowledged at
    // all: a kill keeps the logs up to the saved place only (`checkpoint`).
    let mut fack = 0u64;
    // Saved before the first ACK: after a full synchronisation's load, or a reconnection
    // whose last save failed, the file would be behind what an ACK names.
    if checkpoint(&shared, epoch) == Some(false) {
        return Err("cannot save the replication position".into());
    }
    let mut ackable = offset;
    loop {
        if !still_following(&shared, &mut version, host, port)
            || shared.stopping.load(Ordering::Acquire)
        {
            // Not one more command of a primary we no longer follow (or while shutting down).
            return Ok(());
        }
        let mut batch: Vec<Vec<Bytes>> = Vec::new();
        // This read's bytes up to its last point outside a transaction.
        let mut settled = 0u64;
        let mut getack = false;
        loop {
            let before = link.buf.len();
            let next = parser
                .next_request(&mut link.buf)
                .map_err(|e| format!("protocol error from the primary: {e}"))?;
            partial += (before - link.buf.len()) as u64;
            let Some(args) = next else { break };
            let size = std::mem::take(&mut partial);
            let name = args
                .first()
                .map(|a| a.to_ascii_lowercase())
                .unwrap_or_default();
            match name.as_slice() {
                b"ping" => {}
                b"replconf" => {
                    getack = args
                        .get(1)
                        .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"));
                }
                // What only a client could mean (a primary never sends it): it would block,
                // subscribe, end or re-authenticate the master session.
                n if NOT_FROM_A_PRIMARY.contains(&n) => {
                    tracing::warn!("ignored {} from the primary", String::from_utf8_lossy(n));
                }
                _ => {
                    match name.as_slice() {
                        b"multi" => in_multi = true,
                        b"exec" | b"discard" => in_multi = false,
                        _ => {}
                    }
                    batch.push(args);
                }
            }
            open_tx += size;
            if !in_multi {
                settled += std::mem::take(&mut open_tx);
            }
            if getack {
                break;
            }
        }
        run_cmds(master, batch).await;
        if shared.stopping.load(Ordering::Acquire) {
            // The shutdown may have stopped the batch part way (a command waiting out a
            // CLIENT PAUSE ends unrun): none of it is counted, nor saved as applied.
            return Ok(());
        }
        let refused = std::mem::take(&mut *master.refused.borrow_mut());
        if let Some(e) = refused.first() {
            if e.starts_with("MISCONF") {
                // This replica cannot store what it is sent (its own AOF failed): it must not
                // acknowledge anything more, nor serve as a copy. Crash-only, as Redis's
                // replica exits on a failed write.
                tracing::error!("the primary's writes are refused here: {e}; this replica cannot store them and stops (fix the disk, then restart it)");
                std::process::exit(1);
            }
            // Not applied as the primary applied it: this copy may differ from the primary
            // now. Forget the offset, so that the next link synchronises fully.
            lock(&shared.master_link).replid.clear();
            return Err(format!(
                "a command from the primary was refused here ({e}); resynchronising fully"
            ));
        }
        offset += settled;
        {
            let mut l = lock(&shared.master_link);
            l.offset = offset;
            l.db = master.db;
        }
        if settled > 0 && checkpoint(&shared, epoch) != Some(false) {
            ackable = offset;
        }
        let periodic = last_ack.elapsed() >= Duration::from_secs(1);
        if getack || periodic {
            // FACK: what is fsynced here (WAITAOF on the primary). Everything applied so far
            // is written; once a second one fdatasync per shard makes it durable (under
            // `always` it is already). A GETACK between gets the last FACK known: one fsync
            // per WAIT would flood the disk under a WAIT-per-write load.
            if crate::replication::fsynced(&ctx.shard, periodic).await {
                // (The saved place needs no fsync: after a reboot it is used only where the
                // logs end exactly at it, and cuts nothing.)
                fack = ackable;
            }
            let (n, f) = (ackable.to_string(), fack.to_string());
            link.send(&[b"REPLCONF", b"ACK", n.as_bytes(), b"FACK", f.as_bytes()])
                .await?;
            if periodic {
                last_ack = Instant::now();
            }
        }
        if getack {
            continue;
        }
        // Wait for more, at most a second (the ACK, and a change of `replicaof`).
        let wait = Duration::from_secs(1)
            .saturating_sub(last_ack.elapsed())
            .max(Duration::from_millis(10));
        let mut chunk = vec![0u8; 64 << 10];
        let read = async { Some(link.stream.read(&mut chunk).await) };
        let tick = async {
            glommio::timer::sleep(wait).await;
            None
        };
        match futures_lite::future::or(read, tick).await {
            Some(Ok(0)) => return Err("the primary closed the connection".into()),
            Some(Ok(n)) => {
                link.buf.extend_from_slice(&chunk[..n]);
                lock(&shared.master_link).last_io = Some(Instant::now());
            }
            Some(Err(e)) => return Err(format!("reading from the primary: {e}")),
            None => {
                let silent = lock(&shared.master_link)
                    .last_io
                    .is_some_and(|t| t.elapsed() > link.timeout);
                if silent {
                    return Err(format!(
                        "nothing from the primary for {} s (repl-timeout)",
                        link.timeout.as_secs()
                    ));
                }
            }
        }
    }
}
