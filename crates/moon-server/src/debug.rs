//! DEBUG, behind `enable-debug-command`.

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::reply::err;

use crate::session::Session;

/// DEBUG, as far as tests and operators need it: `SLEEP <seconds>` stops the connection's
/// shard for that long (as Redis's stops the server), `HELP`. Off unless
/// `enable-debug-command` allows it (Redis's refusal text).
pub(crate) fn debug(session: &Session, args: &[Bytes]) -> Frame {
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
        ("help", 2) => Frame::Array(
            [
                "DEBUG <subcommand> [<arg> ...]. Subcommands are:",
                "SLEEP <seconds>",
                "    Stop the connection's shard for <seconds> (fractions allowed).",
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
