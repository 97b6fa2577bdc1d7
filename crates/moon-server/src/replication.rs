//! Replication, the primary's side, as Redis 7 replicas speak it: the handshake (`REPLCONF
//! listening-port / capa`, `PSYNC replid offset`, or the legacy `SYNC`), a full
//! synchronisation (`+FULLRESYNC <replid> <offset>`, then an RDB of every shard's keys taken at
//! one cut, then the stream from that offset), a partial one (`+CONTINUE` and the backlog's
//! bytes), `REPLCONF ACK`, `WAIT`, `ROLE` and INFO's replication section.
//!
//! The stream itself — every shard's log merged, transactions whole — is `repl_feed.rs`.
//!
//! **The cut.** A full synchronisation locks every shard (as a cross-shard transaction does,
//! in ascending order) and, on each, in one turn: installs the log's tap if it is not there
//! yet, copies the keyspace, and places a mark in the log after everything appended so far.
//! No transaction is half before the cut, and every unit before a shard's mark is in its copy.
//! Once every shard's mark reached the stream, the stream's offset there is the snapshot's:
//! the RDB holds everything before it, the replica's link gets everything after it. The marks
//! reach the stream only when everything before them is safe in the logs, so the RDB never
//! holds a write this server could still lose.
//!
//! Moon replicates what its logs hold: a server with `appendonly no` refuses replicas.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use moon_proto::Frame;
use moon_shard::join_all;
use moon_store::args::parse_i64;

use crate::repl_feed::Link;
use crate::session::Session;
use crate::shared::Shared;

/// How long a full synchronisation waits for its cut to be safe in every shard's log before
/// it gives up (a log that failed never makes it safe).
const CUT_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the stream carries a PING while replicas are attached (Redis's
/// `repl-ping-replica-period` default): a replica that hears nothing for `repl-timeout`
/// takes the link for dead.
const PING_PERIOD: Duration = Duration::from_secs(10);

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn ip_of(addr: &str) -> String {
    addr.rsplit_once(':')
        .map(|(ip, _)| ip.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(addr)
        .to_string()
}

/// PSYNC replid offset / SYNC: the connection becomes a replica's link.
pub(crate) async fn sync(session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    if session.replica.is_some() {
        // Redis ignores a second PSYNC on a replica's link.
        return;
    }
    if session.tx.is_some() {
        // Run inside a transaction that holds shards (a pipeline Moon runs as one): the cut
        // would wait for locks its own transaction holds (found by the network fuzzer).
        session.reply(
            &Frame::StaticError("ERR PSYNC and SYNC cannot run inside a transaction"),
            out,
        );
        return;
    }
    let shared = session.ctx.shared.clone();
    if crate::shared::lock(&shared.rewrite.layout).is_none() {
        session.reply(
            &Frame::StaticError("ERR Moon replicates what its AOF holds: a replica needs the primary to run with appendonly yes"),
            out,
        );
        return;
    }
    if args.len() == 4 && eq(&args[3], "failover") {
        // Our primary hands its role over to us (its FAILOVER): we take it if it is the one
        // we follow (its id is the one we applied), then serve its PSYNC as its primary.
        let ours = {
            let l = crate::shared::lock(&shared.master_link);
            !l.replid.is_empty() && args[1].as_ref() == l.replid.as_bytes()
        };
        if shared.config().replicaof.is_none() || !ours {
            session.reply(
                &Frame::StaticError("ERR PSYNC FAILOVER replid must match my replid."),
                out,
            );
            return;
        }
        tracing::info!("Failover request received from my primary: taking its role");
        promote(&shared);
    }
    if shared.config().replicaof.is_some()
        && crate::shared::lock(&shared.master_link).state != "connected"
    {
        // A replica serves copies only of what it has whole.
        session.reply(
            &Frame::StaticError("NOMASTERLINK Can't SYNC while not connected with my master"),
            out,
        );
        return;
    }
    let psync = eq(&args[0], "psync");
    if psync && args.len() != 3 && !(args.len() == 4 && eq(&args[3], "failover")) {
        session.reply(
            &Frame::StaticError("ERR wrong number of arguments for 'psync' command"),
            out,
        );
        return;
    }
    let ip = ip_of(&session.info.addr);
    let link = Link::new(session.info.id, ip.clone(), session.replica_port);
    if psync && args[1].as_ref() != b"?" {
        // The replica continues where it was if the backlog still holds what follows.
        let next = parse_i64(&args[2]).filter(|n| *n >= 1);
        let ours = args[1].as_ref() == shared.replid.as_bytes();
        let attached = match next {
            Some(next) if ours => shared.repl.attach_at(&link, next as u64 - 1).is_some(),
            _ => false,
        };
        if !attached {
            shared
                .repl
                .syncs
                .partial_err
                .fetch_add(1, Ordering::Relaxed);
        }
        if let (true, Some(next)) = (attached, next) {
            shared.repl.syncs.partial_ok.fetch_add(1, Ordering::Relaxed);
            {
                tracing::info!(
                    "Partial resynchronization request from {ip} accepted, sending the backlog from offset {next}"
                );
                out.extend_from_slice(format!("+CONTINUE {}\r\n", shared.replid).as_bytes());
                become_replica(session, link);
                return;
            }
        }
    }
    tracing::info!("Replica {ip} asks for synchronization: full resync");
    shared.repl.syncs.full.fetch_add(1, Ordering::Relaxed);
    match full_sync(session, &shared, link.clone()).await {
        Ok((offset, rdb)) => {
            if psync {
                out.extend_from_slice(
                    format!("+FULLRESYNC {} {offset}\r\n", shared.replid).as_bytes(),
                );
            }
            if session.replica_capa_eof {
                // Diskless framing, as Redis sends it to a replica that reads it: a random
                // 40-byte mark before and after the file, no length.
                let mark = crate::shared::random_hex40();
                out.extend_from_slice(format!("$EOF:{mark}\r\n").as_bytes());
                out.extend_from_slice(&rdb);
                out.extend_from_slice(mark.as_bytes());
            } else {
                out.extend_from_slice(format!("${}\r\n", rdb.len()).as_bytes());
                out.extend_from_slice(&rdb);
            }
            tracing::info!(
                "Synchronization with replica {ip} started: {} bytes of RDB at offset {offset}",
                rdb.len()
            );
            become_replica(session, link);
        }
        Err(e) => {
            shared.repl.detach(&link);
            tracing::warn!("Full resync for replica {ip} failed: {e}");
            session.reply(&Frame::Error(format!("ERR {e}")), out);
        }
    }
}

fn become_replica(session: &mut Session, link: Arc<Link>) {
    link.online.store(true, Ordering::Release);
    link.ack_at.store(moon_shard::now_ms(), Ordering::Relaxed);
    session.info.replica.set(true);
    session.replica = Some(link);
}

/// The cut and the RDB of it (module comment): returns the stream offset the RDB stands for.
async fn full_sync(
    session: &Session,
    shared: &Arc<Shared>,
    link: Arc<Link>,
) -> Result<(u64, Vec<u8>), String> {
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    let (mark, at) = shared.repl.snapshot_mark(link);
    let txid = shard.new_txid();
    let all: Vec<usize> = (0..n).collect();
    let _ = shard.tx_lock_all(&all, txid).await;
    // First every log is checked and tapped, then (still under every lock) copied and
    // marked: a mark placed on some shards only would hold the stream back (review finding).
    let checked = join_all(
        (0..n)
            .map(|p| {
                let shared = shared.clone();
                shard.call_on(p, move |s| {
                    let writer = s.aof().ok_or("appendonly is off")?;
                    if let Some(e) = writer.error() {
                        return Err(format!("shard {p}'s AOF is failing: {e}"));
                    }
                    if !shared.repl.tap_installed(p) {
                        let feed = shared.clone();
                        writer.set_tap(Box::new(move |item| feed.repl.hear(p, item)));
                    }
                    Ok(())
                })
            })
            .collect(),
    )
    .await;
    let refused = checked.into_iter().enumerate().find_map(|(p, c)| match c {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(e.to_string()),
        None => Some(format!("shard {p} did not answer")),
    });
    let copies = match refused {
        Some(e) => vec![Some(Err(e)); n],
        None => {
            join_all(
                (0..n)
                    .map(|p| {
                        shard.call_on(p, move |s| {
                            let writer = s.aof().ok_or("appendonly is off")?;
                            let copy = s.keyspace_copy();
                            writer.mark(mark);
                            Ok::<_, String>(copy)
                        })
                    })
                    .collect(),
            )
            .await
        }
    };
    for p in 0..n {
        shard.tx_unlock(p, txid).await;
    }
    let mut shards = Vec::with_capacity(n);
    for (p, c) in copies.into_iter().enumerate() {
        match c {
            Some(Ok(copy)) => shards.push(copy),
            Some(Err(e)) => {
                shared.repl.abandon(mark);
                return Err(e);
            }
            None => {
                shared.repl.abandon(mark);
                return Err(format!("shard {p} did not answer"));
            }
        }
    }
    let timeout = async {
        glommio::timer::sleep(CUT_TIMEOUT).await;
        None
    };
    let Some(offset) = futures_lite::future::or(async { at.await.ok() }, timeout).await else {
        // A log failed before the mark was safe (or the replica left): nothing of it may hold
        // the stream back.
        shared.repl.abandon(mark);
        return Err("the cut did not become safe in every shard's AOF".into());
    };
    let rdb = rdb_of(shards, shared).await.map_err(|e| e.to_string())?;
    Ok((offset, rdb))
}

/// One RDB file of every shard's copy: each database's keys together, as Redis writes them.
/// Version 10 (Redis 7.0) unless a hash has field deadlines (version 12, Redis 7.4).
async fn rdb_of(
    shards: Vec<moon_shard::KeyspaceCopy>,
    shared: &Shared,
) -> std::io::Result<Vec<u8>> {
    let needs_12 = shards.iter().flatten().any(|(_, _, v, _)| match v {
        moon_store::Value::Hash(h) => h.next_deadline().is_some(),
        _ => false,
    });
    let mut w = moon_rdb::FileWriter::new(Vec::new(), if needs_12 { 12 } else { 10 });
    w.aux(b"redis-ver", b"7.0.15")?;
    w.aux(b"redis-bits", b"64")?;
    w.aux(
        b"ctime",
        (moon_shard::now_ms() / 1000).to_string().as_bytes(),
    )?;
    w.aux(b"used-mem", b"0")?;
    w.aux(b"repl-stream-db", b"0")?;
    w.aux(b"repl-id", shared.replid.as_bytes())?;
    w.aux(b"aof-base", b"0")?;
    // The function libraries, as Redis puts them in an RDB (a replica loads them first).
    for code in moon_store::functions::codes() {
        w.function(&code)?;
    }
    let dbs = shards
        .iter()
        .filter_map(|c| c.last().map(|(db, ..)| db + 1))
        .max()
        .unwrap_or(0);
    let mut at: Vec<usize> = vec![0; shards.len()];
    let mut written = 0usize;
    for db in 0..dbs {
        let (mut keys, mut expires) = (0u64, 0u64);
        for (s, copy) in shards.iter().enumerate() {
            for (d, _, _, exp) in &copy[at[s]..] {
                if *d != db {
                    break;
                }
                keys += 1;
                expires += u64::from(*exp != 0);
            }
        }
        if keys == 0 {
            continue;
        }
        w.select_db(db as u64, keys, expires)?;
        for (s, copy) in shards.iter().enumerate() {
            while let Some((d, key, value, exp)) = copy.get(at[s]) {
                if *d != db {
                    break;
                }
                w.key(key, &value.to_rdb(), (*exp != 0).then_some(*exp))?;
                at[s] += 1;
                written += 1;
                if written.is_multiple_of(1024) {
                    // Other connections of this shard run between keys.
                    glommio::yield_if_needed().await;
                }
            }
        }
    }
    w.finish()
}

/// REPLCONF, from a replica: its listening port, abilities, and acknowledgements of the stream
/// (`ACK <offset>`, which gets no reply, as in Redis).
pub(crate) async fn replconf(session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    if args.len().is_multiple_of(2) {
        session.reply(&Frame::StaticError("ERR syntax error"), out);
        return;
    }
    if args.get(1).is_some_and(|a| eq(a, "ack")) && session.replica.is_none() {
        // Only a replica acknowledges; Redis answers nothing to anyone else either.
        return;
    }
    for pair in args[1..].chunks(2) {
        let (opt, value) = (&pair[0], &pair[1]);
        if eq(opt, "ack") || eq(opt, "fack") {
            if let (Some(link), Some(n)) = (session.replica.as_ref(), parse_i64(value)) {
                let n = n.max(0) as u64;
                if eq(opt, "ack") {
                    link.ack.fetch_max(n, Ordering::AcqRel);
                    link.ack_at.store(moon_shard::now_ms(), Ordering::Relaxed);
                } else {
                    link.fack.fetch_max(n, Ordering::AcqRel);
                }
            }
            continue;
        }
        if eq(opt, "listening-port") {
            match parse_i64(value).filter(|p| (0..=65535).contains(p)) {
                Some(p) => {
                    session.replica_port = p as u64;
                    if let Some(link) = &session.replica {
                        link.port.store(p as u64, Ordering::Relaxed);
                    }
                }
                None => {
                    session.reply(&Frame::StaticError("ERR value is out of range"), out);
                    return;
                }
            }
        } else if eq(opt, "capa") {
            if eq(value, "eof") {
                session.replica_capa_eof = true;
            }
        } else if eq(opt, "ip-address")
            || eq(opt, "rdb-only")
            || eq(opt, "rdb-filter-only")
            || eq(opt, "getack")
        {
            // Noted by Redis for what Moon does not do yet (diskless filters, announced
            // addresses); accepted.
        } else {
            session.reply(
                &Frame::Error(format!(
                    "ERR Unrecognized REPLCONF option: {}",
                    String::from_utf8_lossy(opt)
                )),
                out,
            );
            return;
        }
    }
    if session.replica.is_none() {
        session.reply(&Frame::OK, out);
    }
}

/// This replica becomes a primary (REPLICAOF NO ONE, or the target of a FAILOVER).
fn promote(shared: &Shared) {
    {
        // Writes taken from now on are this server's own: a later REPLICAOF must not
        // continue the old primary's stream on top of them (Redis moves to a new replication
        // id for the same reason).
        let mut l = crate::shared::lock(&shared.master_link);
        // Its own stream starts where the applied one ended, if it has none yet: the offsets
        // its replicas see keep growing across the failover.
        shared.repl.start_at(l.offset);
        l.replid.clear();
        l.offset = 0;
        l.down_since = None;
    }
    shared.update_config(|c| c.replicaof = None);
}

/// REPLICAOF host port / REPLICAOF NO ONE (and SLAVEOF): follow a primary, or stop and
/// serve writes. The setting is `replicaof` in the config (CONFIG REWRITE keeps it); the
/// link task (`replica.rs`) follows it.
pub(crate) async fn replicaof(session: &mut Session, args: &[Bytes]) -> Frame {
    let shared = session.ctx.shared.clone();
    let current = shared.config().replicaof;
    if eq(&args[1], "no") && eq(&args[2], "one") {
        if current.is_some() {
            promote(&shared);
            tracing::info!(
                "MASTER MODE enabled (user request from '{}')",
                session.info.addr
            );
        }
        return Frame::OK;
    }
    let port = match parse_i64(&args[2]) {
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(_) => return Frame::StaticError("ERR Invalid master port"),
        None => return Frame::StaticError("ERR value is not an integer or out of range"),
    };
    let host = String::from_utf8_lossy(&args[1]).into_owned();
    if current.as_ref() == Some(&(host.clone(), port)) {
        return Frame::Simple("OK Already connected to specified master");
    }
    if crate::shared::lock(&shared.rewrite.layout).is_none() {
        return Frame::StaticError(
            "ERR Moon replicates into its AOF: a replica needs appendonly yes",
        );
    }
    tracing::info!(
        "REPLICAOF {host}:{port} enabled (user request from '{}')",
        session.info.addr
    );
    {
        let mut l = crate::shared::lock(&shared.master_link);
        l.down_since = Some(std::time::Instant::now());
    }
    shared.set_link_state("connect");
    shared.update_config(|c| c.replicaof = Some((host, port)));
    // Clients blocked in a pop would be served by the primary's writes here, taking what
    // the primary's own clients took (Redis disconnects them): they are unblocked with an
    // error, as by CLIENT UNBLOCK ... ERROR.
    let _ = session
        .ctx
        .shard
        .call_all(|_s: &moon_shard::Shard| {
            crate::session::CLIENTS.with(|c| {
                for info in c.borrow().values() {
                    if info.blocked.get() && info.unblock.get().is_none() {
                        info.unblock.set(Some(true));
                        info.out.kick();
                    }
                }
            })
        })
        .await;
    Frame::OK
}

/// ROLE: `master`, the stream's offset, and each replica's address, port and acknowledged
/// offset; or `slave`, its primary, the link's state and the offset applied.
pub(crate) fn role(session: &mut Session, _: &[Bytes]) -> Frame {
    if let Some((host, port)) = session.ctx.shared.config().replicaof {
        let link = crate::shared::lock(&session.ctx.shared.master_link);
        return Frame::Array(vec![
            Frame::bulk("slave"),
            Frame::Bulk(Bytes::from(host)),
            Frame::Integer(i64::from(port)),
            Frame::bulk(link.state),
            Frame::Integer(link.offset as i64),
        ]);
    }
    let feed = &session.ctx.shared.repl;
    let replicas = feed
        .links()
        .iter()
        .filter(|l| l.online.load(Ordering::Acquire))
        .map(|l| {
            Frame::Array(vec![
                Frame::Bulk(Bytes::from(l.ip.clone())),
                Frame::Bulk(Bytes::from(l.port.load(Ordering::Relaxed).to_string())),
                Frame::Bulk(Bytes::from(l.ack.load(Ordering::Relaxed).to_string())),
            ])
        })
        .collect();
    Frame::Array(vec![
        Frame::bulk("master"),
        Frame::Integer(feed.offset() as i64),
        Frame::Array(replicas),
    ])
}

/// WAIT numreplicas timeout: waits until `numreplicas` replicas acknowledged the stream up to
/// every write acknowledged so far (this client's among them), or `timeout` ms (0: forever);
/// answers how many did.
pub(crate) async fn wait(session: &mut Session, args: &[Bytes]) -> Frame {
    let (Some(want), Some(timeout)) = (parse_i64(&args[1]), parse_i64(&args[2])) else {
        return Frame::StaticError("ERR value is not an integer or out of range");
    };
    if timeout < 0 {
        return Frame::StaticError("ERR timeout is negative");
    }
    let feed = &session.ctx.shared.repl;
    let acked_at = |target: u64| {
        feed.links()
            .iter()
            .filter(|l| l.online.load(Ordering::Acquire) && l.ack.load(Ordering::Acquire) >= target)
            .count() as i64
    };
    if session.tx.is_some() || session.multi.queued.is_some() {
        // Inside a transaction nothing may block (its shards are held): Redis answers at
        // once with the replicas that acknowledged so far.
        return Frame::Integer(acked_at(feed.offset()));
    }
    let deadline =
        (timeout > 0).then(|| std::time::Instant::now() + Duration::from_millis(timeout as u64));
    let left = || deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
    // Everything already acknowledged to anyone (this client's writes among it) in the
    // stream first, within the timeout too.
    let target = within(left(), async { feed.flushed().await.ok() })
        .await
        .flatten();
    let Some(target) = target else {
        return Frame::Integer(acked_at(feed.offset()));
    };
    if acked_at(target) >= want {
        return Frame::Integer(acked_at(target));
    }
    // Ask the replicas to acknowledge now rather than at their next second.
    feed.command(&[b"REPLCONF", b"GETACK", b"*"]);
    loop {
        let n = acked_at(target);
        // Shutdown ends the wait too: a connection must not hold the server open.
        if n >= want || left().is_some_and(|d| d.is_zero()) || stopping(session) {
            return Frame::Integer(n);
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// WAITAOF numlocal numreplicas timeout (Redis 7.2): waits until every write acknowledged so
/// far (this client's among them) is fsynced in this server's AOF (`numlocal` 1) and in
/// `numreplicas` replicas' (their `REPLCONF ACK ... FACK`), or `timeout` ms (0: forever);
/// answers both counts.
pub(crate) async fn waitaof(session: &mut Session, args: &[Bytes]) -> Frame {
    let (Some(local), Some(want), Some(timeout)) = (
        parse_i64(&args[1]),
        parse_i64(&args[2]),
        parse_i64(&args[3]),
    ) else {
        return Frame::StaticError("ERR value is not an integer or out of range");
    };
    if local < 0 || want < 0 {
        return Frame::StaticError("ERR value is out of range, must be positive");
    }
    if timeout < 0 {
        return Frame::StaticError("ERR timeout is negative");
    }
    let shared = session.ctx.shared.clone();
    let config = shared.config();
    if config.replicaof.is_some() {
        return Frame::StaticError("ERR WAITAOF cannot be used with replica instances. Please also note that writes to replicas are just local and are not propagated.");
    }
    if local > 0 && !config.appendonly {
        return Frame::StaticError(
            "ERR WAITAOF cannot be used when numlocal is set but appendonly is disabled.",
        );
    }
    let feed = &shared.repl;
    let facked = |target: u64| {
        feed.links()
            .iter()
            .filter(|l| {
                l.online.load(Ordering::Acquire) && l.fack.load(Ordering::Acquire) >= target
            })
            .count() as i64
    };
    let shard = session.ctx.shard.clone();
    if session.tx.is_some() || session.multi.queued.is_some() {
        // Nothing may block inside a transaction: what holds now.
        return Frame::Array(vec![
            Frame::Integer(i64::from(config.appendonly && fsynced(&shard, false).await)),
            Frame::Integer(facked(feed.offset())),
        ]);
    }
    let deadline =
        (timeout > 0).then(|| std::time::Instant::now() + Duration::from_millis(timeout as u64));
    let left = || deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
    let local_done =
        config.appendonly && within(left(), fsynced(&shard, true)).await.unwrap_or(false);
    let mut target = feed.offset();
    if want > 0 && feed.active() {
        let got = within(left(), async { feed.flushed().await.ok() })
            .await
            .flatten();
        if let Some(t) = got {
            target = t;
            feed.command(&[b"REPLCONF", b"GETACK", b"*"]);
        }
    }
    loop {
        let n = facked(target);
        if n >= want || left().is_some_and(|d| d.is_zero()) || stopping(session) {
            return Frame::Array(vec![
                Frame::Integer(i64::from(local_done)),
                Frame::Integer(n),
            ]);
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether the server is shutting down (waits end).
fn stopping(session: &Session) -> bool {
    session.ctx.shared.stopping.load(Ordering::Acquire)
}

/// `fut`'s output, or `None` once `left` (if any) has passed.
async fn within<T>(left: Option<Duration>, fut: impl std::future::Future<Output = T>) -> Option<T> {
    match left {
        None => Some(fut.await),
        Some(d) => {
            let expire = async {
                glommio::timer::sleep(d).await;
                None
            };
            futures_lite::future::or(async { Some(fut.await) }, expire).await
        }
    }
}

/// Whether every shard's log is fsynced up to everything appended so far; with `now`,
/// fdatasyncs what is not yet (rather than waiting for the everysec thread).
pub(crate) async fn fsynced(shard: &std::rc::Rc<moon_shard::Shard>, now: bool) -> bool {
    let n = shard.count();
    let all = join_all(
        (0..n)
            .map(|p| {
                shard.call_on_async(p, move |s: std::rc::Rc<moon_shard::Shard>| async move {
                    let Some(w) = s.aof() else {
                        return false;
                    };
                    let lsn = w.last_assigned();
                    if now {
                        if w.wait_logged(lsn).await.is_err() {
                            return false;
                        }
                        w.sync_written().await;
                    }
                    w.error().is_none() && w.status().durable_lsn >= lsn
                })
            })
            .collect(),
    )
    .await;
    all.into_iter().all(|d| d == Some(true))
}

/// FAILOVER [TO host port [FORCE]] [ABORT] [TIMEOUT ms] (Redis 6.2): hands the primary role to
/// a replica without losing a write. Writes pause; once the target acknowledged everything
/// (or, with FORCE, at the timeout) this server becomes its replica and tells it, with its
/// first PSYNC, to take the role (`PSYNC <replid> <offset> FAILOVER`). Without FORCE a
/// timeout gives up and resumes writes here. Answers at once; INFO
/// `master_failover_state` follows it.
pub(crate) async fn failover(session: &mut Session, args: &[Bytes]) -> Frame {
    let shared = session.ctx.shared.clone();
    let (mut to, mut force, mut abort, mut timeout) = (None, false, false, 0u64);
    let mut i = 1;
    while i < args.len() {
        if eq(&args[i], "to") && i + 2 < args.len() {
            let Some(port) = parse_i64(&args[i + 2]).filter(|p| (1..=65535).contains(p)) else {
                return Frame::StaticError("ERR Invalid port");
            };
            to = Some((
                String::from_utf8_lossy(&args[i + 1]).into_owned(),
                port as u64,
            ));
            i += 3;
        } else if eq(&args[i], "force") {
            force = true;
            i += 1;
        } else if eq(&args[i], "abort") {
            abort = true;
            i += 1;
        } else if eq(&args[i], "timeout") && i + 1 < args.len() {
            match parse_i64(&args[i + 1]) {
                Some(t) if t > 0 => timeout = t as u64,
                _ => return Frame::StaticError("ERR FAILOVER timeout must be greater than 0"),
            }
            i += 2;
        } else {
            return Frame::StaticError("ERR syntax error");
        }
    }
    if abort {
        if to.is_some() || force || timeout > 0 {
            return Frame::StaticError("ERR FAILOVER abort cannot be used with other options.");
        }
        if *crate::shared::lock(&shared.failover) == "no-failover" {
            return Frame::StaticError("ERR No failover in progress.");
        }
        shared.failover_abort.store(true, Ordering::Release);
        return Frame::OK;
    }
    if shared.config().replicaof.is_some() {
        return Frame::StaticError("ERR FAILOVER is not valid when server is a replica.");
    }
    if force && (to.is_none() || timeout == 0) {
        return Frame::StaticError(
            "ERR FAILOVER with force option requires both a timeout and target HOST and IP.",
        );
    }
    let links: Vec<Arc<Link>> = shared
        .repl
        .links()
        .into_iter()
        .filter(|l| l.online.load(Ordering::Acquire))
        .collect();
    if links.is_empty() {
        return Frame::StaticError("ERR FAILOVER requires connected replicas.");
    }
    let target = match &to {
        Some((host, port)) => links
            .iter()
            .find(|l| l.ip == *host && l.port.load(Ordering::Relaxed) == *port)
            .cloned(),
        None => links
            .iter()
            .max_by_key(|l| l.ack.load(Ordering::Relaxed))
            .cloned(),
    };
    let Some(target) = target else {
        return Frame::StaticError("ERR FAILOVER target HOST and PORT is not a replica.");
    };
    {
        let mut state = crate::shared::lock(&shared.failover);
        if *state != "no-failover" {
            return Frame::StaticError("ERR FAILOVER already in progress.");
        }
        *state = "waiting-for-sync";
    }
    shared.failover_abort.store(false, Ordering::Release);
    // Writes wait from now on (as CLIENT PAUSE WRITE): the target can catch up.
    shared.pause_all.store(false, Ordering::Release);
    shared.pause_until.store(u64::MAX, Ordering::Release);
    tracing::info!(
        "FAILOVER requested to {}:{}",
        target.ip,
        target.port.load(Ordering::Relaxed)
    );
    glommio::spawn_local(hand_over(shared, target, force, timeout)).detach();
    Frame::OK
}

/// FAILOVER's background part (see [`failover`]).
async fn hand_over(shared: Arc<Shared>, target: Arc<Link>, force: bool, timeout: u64) {
    let started = std::time::Instant::now();
    let expired = || timeout > 0 && started.elapsed() >= Duration::from_millis(timeout);
    let end = |shared: &Shared, why: &str| {
        tracing::warn!("FAILOVER aborted: {why}");
        *crate::shared::lock(&shared.failover) = "no-failover";
        shared.pause_until.store(0, Ordering::Release);
    };
    let goal = shared.repl.flushed();
    let goal = futures_lite::future::or(async { goal.await.ok() }, async {
        loop {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            if shared.failover_abort.load(Ordering::Acquire) || expired() {
                return None;
            }
        }
    })
    .await;
    let Some(goal) = goal else {
        return end(&shared, "aborted, or timed out before the stream settled");
    };
    shared.repl.command(&[b"REPLCONF", b"GETACK", b"*"]);
    loop {
        if shared.failover_abort.load(Ordering::Acquire) {
            return end(&shared, "FAILOVER ABORT");
        }
        if target.is_closed() || !shared.repl.links().iter().any(|l| Arc::ptr_eq(l, &target)) {
            return end(&shared, "the target replica disconnected");
        }
        if target.ack.load(Ordering::Acquire) >= goal {
            break;
        }
        if expired() {
            if force {
                break;
            }
            return end(
                &shared,
                "the target replica did not catch up within the timeout",
            );
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    *crate::shared::lock(&shared.failover) = "failover-in-progress";
    let host = target.ip.clone();
    let port = target.port.load(Ordering::Relaxed) as u16;
    {
        // This server's stream is the one the target applied: its PSYNC names it.
        let mut l = crate::shared::lock(&shared.master_link);
        l.replid = shared.replid.clone();
        l.offset = shared.repl.offset();
        l.failover_psync = true;
        l.down_since = Some(std::time::Instant::now());
    }
    shared.update_config(|c| c.replicaof = Some((host.clone(), port)));
    shared.set_link_state("connect");
    // Writes now get READONLY here: the pause may end.
    shared.pause_until.store(0, Ordering::Release);
    tracing::info!("FAILOVER: now a replica of {host}:{port}, which takes the primary role");
    *crate::shared::lock(&shared.failover) = "no-failover";
}

/// Whether enough replicas acknowledged lately for a write to be taken
/// (`min-replicas-to-write` within `min-replicas-max-lag`); always with the setting at 0.
pub(crate) fn enough_replicas(shared: &Shared) -> bool {
    let want = shared.min_replicas.load(Ordering::Relaxed);
    let max_lag = shared.min_replicas_max_lag.load(Ordering::Relaxed) * 1000;
    // Only a primary counts its replicas (Redis checks `min-replicas-to-write` on a primary
    // alone: a replica's clients get READONLY, its scripts run), and only with both settings
    // on (`min-replicas-max-lag 0` turns the check off, as in Redis).
    if want == 0 || max_lag == 0 || moon_store::keyspace::is_replica() {
        return true;
    }
    let now = moon_shard::now_ms();
    let good = shared
        .repl
        .links()
        .iter()
        .filter(|l| {
            l.online.load(Ordering::Acquire)
                && now.saturating_sub(l.ack_at.load(Ordering::Relaxed)) <= max_lag
        })
        .count() as u64;
    good >= want
}

/// INFO's `# Replication` section, with Redis's field names.
pub(crate) fn info_section(shared: &Shared) -> String {
    use std::fmt::Write;
    let feed = &shared.repl;
    let now = moon_shard::now_ms();
    let links: Vec<_> = feed.links();
    let config = shared.config();
    let mut out = String::from("# Replication\r\n");
    match &config.replicaof {
        None => out.push_str("role:master\r\n"),
        Some((host, port)) => {
            let link = crate::shared::lock(&shared.master_link);
            let up = link.state == "connected";
            let _ = write!(
                out,
                "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{}\r\nslave_repl_offset:{}\r\n",
                if up { "up" } else { "down" },
                link.last_io.map_or(-1, |t| t.elapsed().as_secs() as i64),
                u8::from(link.state == "sync"),
                link.offset,
                link.offset,
            );
            if let Some(since) = link.down_since {
                let _ = write!(
                    out,
                    "master_link_down_since_seconds:{}\r\n",
                    since.elapsed().as_secs()
                );
            }
            let _ = write!(
                out,
                "slave_priority:{}\r\nslave_read_only:{}\r\nreplica_announced:1\r\n",
                config.replica_priority,
                u8::from(config.replica_read_only)
            );
        }
    }
    let _ = write!(out, "connected_slaves:{}\r\n", links.len());
    for (i, l) in links.iter().enumerate() {
        let _ = write!(
            out,
            "slave{i}:ip={},port={},state={},offset={},lag={}\r\n",
            l.ip,
            l.port.load(Ordering::Relaxed),
            if l.online.load(Ordering::Acquire) {
                "online"
            } else {
                "wait_bgsave"
            },
            l.ack.load(Ordering::Relaxed),
            now.saturating_sub(l.ack_at.load(Ordering::Relaxed)) / 1000,
        );
    }
    let (first, histlen) = feed.backlog();
    let active = feed.active();
    // A replica shows its primary's id and the offset it applied, as Redis's replicas do
    // (its own stream, to replicas of its own, has its own id).
    let (replid, repl_offset) = match &config.replicaof {
        Some(_) => {
            let l = crate::shared::lock(&shared.master_link);
            if l.replid.is_empty() {
                (shared.replid.clone(), feed.offset())
            } else {
                (l.replid.clone(), l.offset)
            }
        }
        None => (shared.replid.clone(), feed.offset()),
    };
    let _ = write!(
        out,
        "master_failover_state:{}\r\nmaster_replid:{}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:{}\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:{}\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\n\r\n",
        *crate::shared::lock(&shared.failover),
        replid,
        repl_offset,
        u8::from(active),
        config.repl_backlog_size,
        if active { first } else { 0 },
        histlen,
    );
    out
}

/// Puts a PING in the stream every [`PING_PERIOD`] while replicas are attached (run by one
/// shard).
pub async fn ping_replicas(shared: Arc<Shared>) {
    loop {
        glommio::timer::sleep(PING_PERIOD).await;
        if !shared.repl.links().is_empty() {
            shared.repl.command(&[b"PING"]);
        }
    }
}

/// Whether EVAL, EVALSHA or FCALL runs where writes are refused (a read-only replica, a
/// primary short of `min-replicas-to-write`), as Redis 7.0 decides: a script flagged
/// `no-writes` runs (read-only), and so does one without flags (no shebang), each write it
/// tries refused inside it (`moon_store::Writes`, `moon_store::script_step`); one flagged
/// for writes gets READONLY or NOREPLICAS before it runs. An error the command gives by
/// itself (NOSCRIPT, an unknown function) is left to it.
pub(crate) fn script_checks_its_writes(name: &str, args: &[bytes::Bytes]) -> bool {
    match name {
        "eval" | "evalsha" => moon_store::script_source(args, name == "evalsha", false)
            .map_or(true, |s| s.read_only || s.compat),
        "fcall" => moon_store::fcall_check(args, false).map_or(true, |(_, ro)| ro),
        _ => false,
    }
}

/// Whether a STALE command runs on a stale replica (its link down, `replica-serve-stale-data
/// no`), as Redis 7.0 decides: every command flagged STALE does, except scripts, which need
/// the `allow-stale` flag (EVAL_RO too; a script without a shebang never has it). An error the
/// command gives by itself (NOSCRIPT, an unknown function) is left to it.
pub(crate) fn script_runs_stale(name: &str, args: &[bytes::Bytes]) -> bool {
    match name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => {
            moon_store::script_source(args, name.starts_with("evalsha"), false)
                .map_or(true, |s| s.allow_stale)
        }
        "fcall" | "fcall_ro" => args
            .get(1)
            .is_none_or(|f| moon_store::functions::find(f).is_none_or(|info| info.allow_stale())),
        _ => true,
    }
}
