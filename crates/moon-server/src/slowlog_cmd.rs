//! SLOWLOG GET / LEN / RESET / HELP: every shard's slow log (`moon_store::slowlog`) read
//! and cleared as one, newest first.

use bytes::Bytes;
use moon_proto::Frame;
use moon_shard::Shard;
use moon_store::args::{eq, parse_i64};
use moon_store::reply;

use crate::session::Session;

pub(crate) async fn slowlog(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    let shard = &session.ctx.shard;
    if eq(sub, "get") && args.len() <= 3 {
        let count = match args.get(2).map(|a| parse_i64(a)) {
            None => 10,
            Some(Some(n)) if n >= -1 => n,
            Some(Some(_)) => {
                return Frame::StaticError("ERR count should be greater than or equal to -1")
            }
            Some(None) => return Frame::StaticError("ERR value is not an integer or out of range"),
        };
        let per_shard = shard
            .call_all(|_: &Shard| moon_store::slowlog::entries())
            .await;
        let mut all = moon_store::slowlog::merge(per_shard.into_iter().flatten().collect());
        if count >= 0 {
            all.truncate(count as usize);
        }
        Frame::Array(
            all.into_iter()
                .map(|e| {
                    Frame::Array(vec![
                        Frame::Integer(e.id as i64),
                        Frame::Integer(e.time as i64),
                        Frame::Integer(e.usec as i64),
                        Frame::Array(e.args.into_iter().map(Frame::Bulk).collect()),
                        Frame::Bulk(Bytes::from(e.addr)),
                        Frame::Bulk(Bytes::from(e.name)),
                    ])
                })
                .collect(),
        )
    } else if eq(sub, "len") && args.len() == 2 {
        let per_shard = shard
            .call_all(|_: &Shard| moon_store::slowlog::entries())
            .await;
        let all = moon_store::slowlog::merge(per_shard.into_iter().flatten().collect());
        Frame::Integer(all.len() as i64)
    } else if eq(sub, "reset") && args.len() == 2 {
        shard
            .call_all(|_: &Shard| moon_store::slowlog::reset())
            .await;
        Frame::OK
    } else if eq(sub, "help") && args.len() == 2 {
        reply::help(
            "SLOWLOG",
            &[
                "GET [<count>]",
                "    The newest <count> entries (10 by default, -1 for all), each: id, Unix time,",
                "    microseconds, arguments, client address, client name.",
                "LEN",
                "    How many entries the log holds.",
                "RESET",
                "    Empties the log.",
            ],
        )
    } else {
        reply::unknown_subcommand(sub, "slowlog")
    }
}
