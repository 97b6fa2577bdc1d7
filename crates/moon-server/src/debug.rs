//! DEBUG, behind `enable-debug-command`.

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::reply::err;

use crate::session::Session;

/// DEBUG, as far as tests and operators need it: `SLEEP <seconds>` stops the connection's
/// shard for that long (as Redis's stops the server); `DIGEST` (a checksum of the whole
/// keyspace, equal on two servers holding the same data) and `DIGEST-VALUE key ...` (one per
/// value), 40 hex digits each, zeros for nothing; `HELP`. Off unless `enable-debug-command`
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
        ("help", 2) => Frame::Array(
            [
                "DEBUG <subcommand> [<arg> ...]. Subcommands are:",
                "SLEEP <seconds>",
                "    Stop the connection's shard for <seconds> (fractions allowed).",
                "DIGEST",
                "    A digest of the whole keyspace (40 hex digits, zeros when empty).",
                "DIGEST-VALUE <key> [<key> ...]",
                "    A digest of each key's value (zeros for a missing key).",
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
