//! SCAN and RANDOMKEY: key walks over every shard, one after the other.

use bytes::Bytes;
use moon_proto::Frame;
use moon_shard::{now_ms, Shard};
use moon_store::command::CommandSpec;
use moon_store::reply::{self, err};

use crate::session::Session;

/// SCAN and RANDOMKEY, which walk the shards one after the other.
pub async fn special(session: &mut Session, spec: &CommandSpec, args: &[Bytes]) -> Frame {
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    match spec.name {
        "scan" => scan(&shard, session.tx, session.db, args).await,
        "randomkey" => {
            let start = (now_ms() as usize) % n;
            for i in 0..n {
                let s = (start + i) % n;
                let cmds = call(vec![Bytes::from_static(b"RANDOMKEY")], session.db);
                let mut r = shard.run_batch_in(session.tx, s, cmds).await;
                if let Some(f @ Frame::Bulk(_)) = r.pop() {
                    return f;
                }
            }
            Frame::Null
        }
        _ => reply::unknown_command(args),
    }
}

/// The one-command batch a step of a walk sends to a shard.
fn call(args: Vec<Bytes>, db: usize) -> Vec<moon_store::Call> {
    moon_store::Call::new(args, db).into_iter().collect()
}

/// Bits of a SCAN cursor that name the shard; the rest is that shard's own cursor.
const SHARD_BITS: u32 = 64 - moon_store::keyspace::SCAN_CURSOR_BITS;

/// SCAN across shards: the cursor is `shard cursor << 10 | shard`; shards are walked in order,
/// each in hash order (see `Keyspace::scan`). Cursor 0 starts at shard 0 and a reply cursor 0
/// means every shard was walked.
pub(crate) async fn scan(
    shard: &std::rc::Rc<Shard>,
    tx: Option<moon_shard::Tx>,
    db: usize,
    args: &[Bytes],
) -> Frame {
    let n = shard.count();
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return err(reply::INVALID_CURSOR);
    };
    let target = (cursor & ((1 << SHARD_BITS) - 1)) as usize;
    if target >= n {
        return Frame::Array(vec![Frame::bulk("0"), Frame::Array(Vec::new())]);
    }
    let shard_cursor = cursor >> SHARD_BITS;
    let mut cmd = vec![
        Bytes::from_static(b"SCAN"),
        Bytes::from(shard_cursor.to_string()),
    ];
    cmd.extend(args[2..].iter().cloned());
    let reply = shard
        .run_batch_in(tx, target, call(cmd, db))
        .await
        .pop()
        .unwrap_or(Frame::Null);
    let Frame::Array(mut parts) = reply else {
        return reply;
    };
    let keys = parts.pop().unwrap_or(Frame::Array(Vec::new()));
    let next_cursor = match parts.pop() {
        Some(Frame::Bulk(b)) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let next = if next_cursor > 0 {
        (next_cursor << SHARD_BITS) | target as u64
    } else if target + 1 < n {
        (target + 1) as u64
    } else {
        0
    };
    Frame::Array(vec![Frame::bulk(next.to_string()), keys])
}
