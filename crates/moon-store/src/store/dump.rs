//! DUMP and RESTORE: a key's value in Redis's serialization (an RDB value, its RDB version
//! and a CRC64, see `moon-rdb`), so that a DUMP taken on Redis RESTOREs here and the other way
//! round.
//!
//! RESTORE is logged as `RESTORE key <absolute ms or 0> payload REPLACE ABSTTL`: the payload
//! the client sent (already checked), with the deadline made absolute, so replay rebuilds the
//! same value at the same deadline whatever the clock says then.

use bytes::Bytes;
use moon_proto::Frame;

use super::{eq, parse_i64, Store};
use crate::call::KeyspaceCommand;
use crate::command;
use crate::command::short::*;
use crate::reply::{self, err};
use crate::value::Value;

pub(crate) static COMMANDS: &[KeyspaceCommand] = &[
    command!(Generic: "dump", 2, R, keys(1, 1, 1), ONE, |s, a, now| s.dump(a, now)),
    command!(Generic: "restore", -4, W, keys(1, 1, 1), ONE, |s, a, now| s.restore(a, now)),
];

/// RESTORE's options after `key ttl payload`.
struct RestoreOptions {
    replace: bool,
    absttl: bool,
    idle_secs: Option<u64>,
    freq: Option<u8>,
}

fn restore_options(args: &[Bytes]) -> Result<RestoreOptions, Frame> {
    let mut o = RestoreOptions {
        replace: false,
        absttl: false,
        idle_secs: None,
        freq: None,
    };
    let mut i = 4;
    while i < args.len() {
        let more = i + 1 < args.len();
        if eq(&args[i], "replace") {
            o.replace = true;
        } else if eq(&args[i], "absttl") {
            o.absttl = true;
        } else if eq(&args[i], "idletime") && more && o.freq.is_none() {
            i += 1;
            let n = parse_i64(&args[i]).ok_or_else(|| err(reply::NOT_INTEGER))?;
            if n < 0 {
                return Err(err("ERR Invalid IDLETIME value, must be >= 0"));
            }
            o.idle_secs = Some(n as u64);
        } else if eq(&args[i], "freq") && more && o.idle_secs.is_none() {
            i += 1;
            let n = parse_i64(&args[i]).ok_or_else(|| err(reply::NOT_INTEGER))?;
            o.freq = Some(
                u8::try_from(n)
                    .map_err(|_| err("ERR Invalid FREQ value, must be >= 0 and <= 255"))?,
            );
        } else {
            return Err(err(reply::SYNTAX));
        }
        i += 1;
    }
    Ok(o)
}

impl Store {
    fn dump(&mut self, args: &[Bytes], now: u64) -> Frame {
        match self.ks.get(&args[1], now) {
            None => Frame::Null,
            Some(e) => Frame::Bulk(Bytes::from(moon_rdb::encode_dump(&e.value.to_rdb()))),
        }
    }

    fn restore(&mut self, args: &[Bytes], now: u64) -> Frame {
        let (key, payload) = (&args[1], &args[3]);
        // Redis's order: options, then an existing key, then the TTL, then the payload.
        let o = match restore_options(args) {
            Ok(o) => o,
            Err(e) => return e,
        };
        let existed = self.ks.contains(key, now);
        if existed && !o.replace {
            return err("BUSYKEY Target key name already exists.");
        }
        let Some(ttl) = parse_i64(&args[2]) else {
            return err(reply::NOT_INTEGER);
        };
        if ttl < 0 {
            return err("ERR Invalid TTL value, must be >= 0");
        }
        let obj = match moon_rdb::decode_dump(payload) {
            Ok(obj) => obj,
            Err(e) => {
                // Too short to hold a footer, or a footer that does not match: Redis's
                // `verifyDumpPayload`; anything after that is the value's own fault.
                let footer = payload.len() < 10;
                return match e.kind {
                    moon_rdb::ErrorKind::Version(_) | moon_rdb::ErrorKind::Checksum { .. } => {
                        err("ERR DUMP payload version or checksum are wrong")
                    }
                    _ if footer => err("ERR DUMP payload version or checksum are wrong"),
                    _ => err("ERR Bad data format"),
                };
            }
        };
        let value = match Value::from_rdb(obj, &self.encodings()) {
            Ok(Some(v)) => v,
            Ok(None) | Err(_) => return err("ERR Bad data format"),
        };
        // A relative TTL past the largest deadline counts as already passed, as in Redis
        // (where the sum wraps negative); every deadline kept fits the logged i64.
        let at = match (ttl, o.absttl) {
            (0, _) => Some(0),
            (t, true) => Some(t as u64),
            (t, false) => (now as i64).checked_add(t).map(|at| at as u64),
        };
        // A replica keeps what its primary sends, past deadlines included: the primary's DEL
        // follows.
        let expired = |at: u64| {
            at != 0 && at <= now && now != crate::NO_EXPIRY_CHECK && !crate::keyspace::is_replica()
        };
        if at.is_none_or(expired) {
            // Already expired: nothing is created, and a replaced key is gone.
            if existed {
                self.ks.remove(key);
                self.log_del(key);
            }
            return Frame::OK;
        }
        if existed {
            if let Some(old) = self.ks.remove(key) {
                crate::lazyfree::dispose(old.value, crate::lazyfree::Cause::ServerDel);
            }
        }
        let at = at.unwrap_or(0);
        self.ks.insert(key, value, at);
        if o.idle_secs.is_some() || o.freq.is_some() {
            let idle_ms = o.idle_secs.unwrap_or(0).saturating_mul(1000);
            self.ks.set_access_of(key, now, idle_ms, o.freq);
        }
        let at_text = at.to_string();
        self.log_derived(&[
            b"RESTORE",
            key,
            at_text.as_bytes(),
            payload,
            b"REPLACE",
            b"ABSTTL",
        ]);
        Frame::OK
    }
}
