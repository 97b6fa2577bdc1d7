//! DEBUG, behind `enable-debug-command`.

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::reply::err;

use crate::session::Session;

/// DEBUG, as far as tests and operators need it: `SLEEP <seconds>` stops the connection's
/// shard for that long (as Redis's stops the server); `DIGEST` (a checksum of the whole
/// keyspace, equal on two servers holding the same data) and `DIGEST-VALUE key ...` (one per
/// value), 40 hex digits each, zeros for nothing; `RELOAD` (every shard rebuilt from its log);
/// `OBJECT key`; `SET-ACTIVE-EXPIRE 0|1`; `HELP`. Off unless `enable-debug-command`
/// allows it (Redis's refusal text).
pub(crate) async fn debug(session: &Session, args: &[Bytes]) -> Frame {
    let allowed = match session.ctx.shared.config().enable_debug_command {
        crate::config::DebugCommand::Yes => true,
        crate::config::DebugCommand::Local => session.info.is_loopback(),
        crate::config::DebugCommand::No => false,
    };
    if !allowed {
        return err("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.");
    }
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("sleep", 3) => {
            let secs = std::str::from_utf8(&args[2])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0);
            match secs {
                Some(s) => {
                    // Blocks this shard's thread on purpose: nothing else runs on it meanwhile.
                    std::thread::sleep(std::time::Duration::from_secs_f64(s));
                    Frame::OK
                }
                None => err("ERR value is not a valid float or out of range (0 to 3600 seconds)"),
            }
        }
        ("digest", 2) => {
            let per_shard = session
                .ctx
                .shard
                .call_all(|s: &moon_shard::Shard| s.store().digest())
                .await;
            let mut all = [0u8; 20];
            for d in per_shard.into_iter().flatten() {
                for (a, b) in all.iter_mut().zip(d) {
                    *a ^= b;
                }
            }
            Frame::Bulk(Bytes::from(hex(&all)))
        }
        ("digest-value", _) => {
            let mut out = Vec::with_capacity(args.len() - 2);
            let shards = session.ctx.shard.count();
            let db = session.db;
            for key in &args[2..] {
                let owner = moon_store::slot::shard_for_key(key, shards);
                let key = key.clone();
                let d = session
                    .ctx
                    .shard
                    .call_on(owner, move |s: &moon_shard::Shard| {
                        let store = s.store();
                        store
                            .keyspace_of(db)
                            .and_then(|ks| ks.peek(&key, moon_store::NO_EXPIRY_CHECK))
                            .map(|e| e.value.digest())
                    })
                    .await
                    .flatten()
                    .unwrap_or([0u8; 20]);
                out.push(Frame::Bulk(Bytes::from(hex(&d))));
            }
            Frame::Array(out)
        }
        ("set-active-expire", 3) => match moon_store::args::parse_i64(&args[2]) {
            Some(n) => {
                moon_shard::set_active_expire(n != 0);
                Frame::OK
            }
            None => err(moon_store::reply::NOT_INTEGER),
        },
        // Inside EXEC its own transaction holds shards the reload would wait for.
        ("reload", _) if session.tx.is_some() => {
            err("ERR DEBUG RELOAD is not allowed inside a transaction")
        }
        ("reload", _) => reload(session).await,
        ("object", 3) => object(session, &args[2]).await,
        ("help", 2) => Frame::Array(
            [
                "DEBUG <subcommand> [<arg> ...]. Subcommands are:",
                "SLEEP <seconds>",
                "    Stop the connection's shard for <seconds> (fractions allowed).",
                "DIGEST",
                "    A digest of the whole keyspace (40 hex digits, zeros when empty).",
                "DIGEST-VALUE <key> [<key> ...]",
                "    A digest of each key's value (zeros for a missing key).",
                "OBJECT <key>",
                "    The key's encoding, serialized length and idle time, in Redis's words.",
                "RELOAD",
                "    Throw every shard's keyspace away and rebuild it from its log.",
                "SET-ACTIVE-EXPIRE <0|1>",
                "    Turn the reclaiming of expired keys nobody reads off or on.",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|l| Frame::Simple(l))
            .collect(),
        ),
        _ => Frame::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try DEBUG HELP."
        )),
    }
}

/// DEBUG RELOAD: every shard's keyspace rebuilt from its log, one shard at a time (each at a
/// moment its log holds everything it ran). What a client sees afterwards is what a restart
/// would give: the check that memory and the logs agree.
async fn reload(session: &Session) -> Frame {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for shard in 0..session.ctx.shard.count() {
        loop {
            let done = session
                .ctx
                .shard
                .call_on(shard, |s: &moon_shard::Shard| s.reload_from_log())
                .await;
            match done {
                None => return err(moon_shard::SHARD_GONE),
                Some(Some(Ok(()))) => break,
                Some(Some(Err(e))) => {
                    return Frame::Error(format!("ERR DEBUG RELOAD failed on shard {shard}: {e}"))
                }
                Some(None) if std::time::Instant::now() > deadline => {
                    return Frame::Error(format!(
                        "ERR DEBUG RELOAD: shard {shard}'s log did not catch up within 10 s"
                    ));
                }
                // A transaction holds the shard or records are on their way to the file.
                Some(None) => glommio::timer::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
    }
    Frame::OK
}

/// DEBUG OBJECT key: Redis's line, from OBJECT ENCODING / IDLETIME and the length DUMP
/// serializes the value to.
async fn object(session: &Session, key: &Bytes) -> Frame {
    let owner = moon_store::slot::shard_for_key(key, session.ctx.shard.count());
    let (key, db) = (key.clone(), session.db);
    let run = move |s: &moon_shard::Shard, words: [&'static str; 2]| {
        let args = vec![
            Bytes::from_static(words[0].as_bytes()),
            Bytes::from_static(words[1].as_bytes()),
            key.clone(),
        ];
        let args: Vec<Bytes> = args.into_iter().filter(|a| !a.is_empty()).collect();
        moon_store::Call::new(args, db).map(|c| {
            // An inspection: it must not evict (its deletion would not be logged, and a
            // transaction may hold the shard).
            s.store()
                .without_memory_checks(|store| store.run(&c, moon_shard::now_ms()))
        })
    };
    let line = session
        .ctx
        .shard
        .call_on(owner, move |s: &moon_shard::Shard| {
            let encoding = run(s, ["object", "encoding"])?;
            let idle = run(s, ["object", "idletime"])?;
            let dump = run(s, ["dump", ""])?;
            // Under an LFU policy OBJECT IDLETIME is an error: no idle time is kept.
            let idle = match idle {
                Frame::Integer(i) => i,
                _ => 0,
            };
            match (encoding, dump) {
                (Frame::Bulk(e), Frame::Bulk(d)) => Some(format!(
                    "Value at:0x0 refcount:1 encoding:{} serializedlength:{} lru:0 lru_seconds_idle:{idle}",
                    String::from_utf8_lossy(&e),
                    d.len().saturating_sub(11)
                )),
                _ => None,
            }
        })
        .await
        .flatten();
    line.map_or_else(|| err("ERR no such key"), Frame::SimpleOwned)
}

/// PFSELFTEST: the HyperLogLog registers and estimator checked in place (about a second of
/// this shard's time, as on Redis).
pub(crate) fn pfselftest(session: &Session) -> Frame {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let sparse_max = session.ctx.shared.config().encodings.hll_sparse_max_bytes;
    match moon_store::value::hll::selftest(seed, sparse_max) {
        Ok(()) => Frame::OK,
        Err(e) => Frame::Error(e),
    }
}

fn hex(d: &[u8; 20]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
