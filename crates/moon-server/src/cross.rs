//! Key commands whose keys live on several shards and that cannot simply be split into one
//! part per shard (RENAME, MSETNX, SMOVE, LMOVE, the set and sorted-set algebra): the server runs them with reads
//! and ordinary commands on each shard, inside the transaction that holds all their shards
//! (`txn::run` sets `session.tx` before they get here), so the steps are one atomic, isolated
//! change and each step is logged as the ordinary command it is.

use bytes::Bytes;
use moon_proto::Frame;
use moon_shard::join_all;
use moon_store::command::CommandSpec;
use moon_store::reply::{self, err};
use moon_store::slot::shard_for_key;
use moon_store::{
    combine_args, lmpop_args, sintercard_args, zmpop_args, zmpop_reply, zset_members_reply, Call,
    End, SetOp,
};

use crate::session::Session;

/// Fields or members per command when a value moves to another shard.
const MOVE_CHUNK: usize = 512;

fn one_reply(mut frames: Vec<Frame>) -> Frame {
    frames
        .pop()
        .unwrap_or(Frame::StaticError(moon_shard::SHARD_GONE))
}

/// The server's own steps as calls in database `db`. With `event`, their effects announce it
/// instead of their own (the halves of a RENAME or COPY across shards are plain
/// DEL/SET/HSET... of their own). Every step is a command the server built; one the table
/// would refuse fails the whole command before anything runs, never silently drops a part of
/// a value.
fn steps(
    db: usize,
    cmds: Vec<Vec<Bytes>>,
    event: Option<&'static str>,
) -> Result<Vec<Call>, Frame> {
    cmds.into_iter()
        .map(|c| {
            let name = String::from_utf8_lossy(c.first().map_or(&b""[..], |n| &n[..])).into_owned();
            let mut call = Call::new(c, db).ok_or_else(|| {
                Frame::Error(format!("ERR internal error: a step ({name}) was refused"))
            })?;
            call.event = event;
            Ok(call)
        })
        .collect()
}

fn first_error(frames: &[Frame]) -> Option<Frame> {
    frames.iter().find(|f| f.is_error()).cloned()
}

/// `track`: the caller's tracking reader for this command, as the connection found it. A
/// read-only command's keys are remembered for it on the shards that own them, as one shard
/// remembers a read's keys (`Store::end_command`); a script remembers its declared keys
/// itself.
pub async fn run(
    session: &mut Session,
    spec: &CommandSpec,
    args: &[Bytes],
    track: Option<moon_store::tracking::Reader>,
) -> Frame {
    let reply = run_command(session, spec, args, track).await;
    if let Some(reader) = track {
        let script = spec.group == moon_store::command::Group::Scripting;
        if spec.is_read() && !script && !reply.is_error() {
            remember_keys(session, spec, args, reader).await;
        }
    }
    reply
}

/// `reader` read `spec`'s keys in `args`: remembered on each owning shard (CLIENT TRACKING).
async fn remember_keys(
    session: &Session,
    spec: &CommandSpec,
    args: &[Bytes],
    reader: moon_store::tracking::Reader,
) {
    let shard = &session.ctx.shard;
    let n = shard.count();
    let keys: Vec<Bytes> = spec.keys(args).cloned().collect();
    let mut owners: Vec<usize> = keys.iter().map(|k| shard_for_key(k, n)).collect();
    owners.sort_unstable();
    owners.dedup();
    for owner in owners {
        let mine: Vec<Bytes> = keys
            .iter()
            .filter(|k| shard_for_key(k, n) == owner)
            .cloned()
            .collect();
        shard
            .call_on(owner, move |s| {
                let mut store = s.store();
                for key in &mine {
                    store.track_read(reader, key);
                }
            })
            .await;
    }
}

async fn run_command(
    session: &mut Session,
    spec: &CommandSpec,
    args: &[Bytes],
    track: Option<moon_store::tracking::Reader>,
) -> Frame {
    let Some(tx) = session.tx else {
        // Only reached inside a transaction; refuse rather than run it unprotected.
        return err("ERR internal error: a cross-shard command outside its transaction");
    };
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    let on = |k: &Bytes| shard_for_key(k, n);
    // Everything runs in the session's database: reads select it, commands carry it.
    let db = session.db;
    let in_db = |cmds: Vec<Vec<Bytes>>| steps(db, cmds, None);
    if spec.name == "xread" || spec.name == "xreadgroup" {
        return read_streams(session, args).await;
    }
    if spec.flags.has(moon_store::command::Flags::BLOCKING) {
        // Here it never waits: its non-blocking form, its reply reshaped (`blocking.rs`).
        let form = match moon_store::blocking_form(args) {
            Ok(f) => f,
            Err(e) => return e,
        };
        let Some(row) = moon_store::table::lookup(&form.args[0]) else {
            return reply::unknown_command(&form.args);
        };
        let reply = Box::pin(run_command(session, &row.spec, &form.args, track)).await;
        return form.shape.apply(reply);
    }
    match spec.name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            crate::script_cross::run(session, spec.name, args, track).await
        }
        "rename" | "renamenx" => {
            let nx = spec.name == "renamenx";
            let (src, dst) = (args[1].clone(), args[2].clone());
            let Some((value, expire_at)) = value_at(session, &src, db).await else {
                return err(reply::NO_SUCH_KEY);
            };
            if nx && exists_at(session, &dst, db).await {
                return Frame::Integer(0);
            }
            // The destination is rebuilt from the value's rewrite form, then the source goes.
            if let Some(e) = rebuild_at(session, &dst, db, &value, expire_at, "rename_to").await {
                return e;
            }
            let del = vec![Bytes::from_static(b"DEL"), src.clone()];
            let batch = match steps(db, vec![del], Some("rename_from")) {
                Ok(b) => b,
                Err(e) => return e,
            };
            if let f @ (Frame::Error(_) | Frame::StaticError(_)) =
                one_reply(shard.run_batch_in(Some(tx), on(&src), batch).await)
            {
                return f;
            }
            if nx {
                Frame::Integer(1)
            } else {
                Frame::OK
            }
        }
        "copy" => {
            let databases = session.ctx.shared.config().databases as usize;
            let (replace, target) = match moon_store::copy_options(args, databases) {
                Ok(r) => r,
                Err(e) => return e,
            };
            let target = target.unwrap_or(db);
            let (src, dst) = (args[1].clone(), args[2].clone());
            let Some((value, expire_at)) = value_at(session, &src, db).await else {
                return Frame::Integer(0);
            };
            if !replace && exists_at(session, &dst, target).await {
                return Frame::Integer(0);
            }
            rebuild_at(session, &dst, target, &value, expire_at, "copy_to")
                .await
                .unwrap_or(Frame::Integer(1))
        }
        "msetnx" => {
            let mut per_shard: Vec<Vec<Bytes>> = vec![Vec::new(); n];
            for pair in args[1..].chunks(2) {
                per_shard[on(&pair[0])].extend(pair.iter().cloned());
            }
            let mut checks = Vec::new();
            for (s, kv) in per_shard
                .iter()
                .enumerate()
                .filter(|(_, kv)| !kv.is_empty())
            {
                let mut cmd = vec![Bytes::from_static(b"EXISTS")];
                cmd.extend(kv.iter().step_by(2).cloned());
                match in_db(vec![cmd]) {
                    Ok(batch) => checks.push(shard.run_batch_in(Some(tx), s, batch)),
                    Err(e) => return e,
                }
            }
            let existing: i64 = join_all(checks)
                .await
                .into_iter()
                .flatten()
                .map(|f| match f {
                    Frame::Integer(i) => i,
                    _ => 1,
                })
                .sum();
            if existing > 0 {
                return Frame::Integer(0);
            }
            let mut sets = Vec::new();
            for (s, kv) in per_shard
                .into_iter()
                .enumerate()
                .filter(|(_, kv)| !kv.is_empty())
            {
                let mut cmd = vec![Bytes::from_static(b"MSET")];
                cmd.extend(kv);
                match in_db(vec![cmd]) {
                    Ok(batch) => sets.push(shard.run_batch_in(Some(tx), s, batch)),
                    Err(e) => return e,
                }
            }
            let results = join_all(sets).await;
            match results.into_iter().flatten().find(|f| f.is_error()) {
                Some(e) => e,
                None => Frame::Integer(1),
            }
        }
        "smove" => {
            let (src, dst, member) = (args[1].clone(), args[2].clone(), args[3].clone());
            match (
                type_at(session, &src, db).await,
                type_at(session, &dst, db).await,
            ) {
                (None, _) => return Frame::Integer(0),
                (Some("set"), None | Some("set")) => {}
                _ => return err(reply::WRONGTYPE),
            }
            let srem = vec![Bytes::from_static(b"SREM"), src, member.clone()];
            let sadd = vec![Bytes::from_static(b"SADD"), dst, member];
            let (srem, sadd) = match (in_db(vec![srem]), in_db(vec![sadd])) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return e,
            };
            match one_reply(shard.run_batch_in(Some(tx), on(&args[1]), srem).await) {
                Frame::Integer(1) => {}
                Frame::Integer(_) => return Frame::Integer(0),
                other => return other,
            }
            match one_reply(shard.run_batch_in(Some(tx), on(&args[2]), sadd).await) {
                f @ (Frame::Error(_) | Frame::StaticError(_)) => f,
                _ => Frame::Integer(1),
            }
        }
        "lmove" | "rpoplpush" => {
            let ends = if spec.name == "rpoplpush" {
                Some((End::Right, End::Left))
            } else {
                End::parse(&args[3]).zip(End::parse(&args[4]))
            };
            let Some((from, to)) = ends else {
                return err(reply::SYNTAX);
            };
            let (src, dst) = (args[1].clone(), args[2].clone());
            // Both types first: nothing moves if the destination holds another type.
            match (
                type_at(session, &src, db).await,
                type_at(session, &dst, db).await,
            ) {
                (None, _) => return Frame::Null,
                (Some("list"), None | Some("list")) => {}
                _ => return err(reply::WRONGTYPE),
            }
            let pop = vec![Bytes::from_static(from.pop_command()), src.clone()];
            let pop = match in_db(vec![pop]) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let element = match one_reply(shard.run_batch_in(Some(tx), on(&src), pop).await) {
                Frame::Bulk(v) => v,
                other => return other,
            };
            let push = vec![
                Bytes::from_static(to.push_command()),
                dst.clone(),
                element.clone(),
            ];
            let push = match in_db(vec![push]) {
                Ok(b) => b,
                Err(e) => return e,
            };
            match one_reply(shard.run_batch_in(Some(tx), on(&dst), push).await) {
                f @ (Frame::Error(_) | Frame::StaticError(_)) => f,
                _ => Frame::Bulk(element),
            }
        }
        "lmpop" => {
            let (keys, end, count) = match lmpop_args(args) {
                Ok(a) => a,
                Err(e) => return e,
            };
            match pop_first(session, keys, "list", end.pop_command(), count).await {
                Ok(Some((key, items @ Frame::Array(_)))) => {
                    Frame::Array(vec![Frame::Bulk(key), items])
                }
                Ok(Some((_, other))) | Err(other) => other,
                Ok(None) => Frame::NullArray,
            }
        }
        "sinter" | "sunion" | "sdiff" => {
            match members_of(session, SetOp::of(spec.name), &args[1..]).await {
                Ok(members) => Frame::Set(members.into_iter().map(Frame::Bulk).collect()),
                Err(e) => e,
            }
        }
        "sintercard" => {
            let (count, limit) = match sintercard_args(args) {
                Ok(v) => v,
                Err(e) => return e,
            };
            match members_of(session, SetOp::Inter, &args[2..2 + count]).await {
                Ok(m) if limit > 0 => Frame::Integer(m.len().min(limit) as i64),
                Ok(m) => Frame::Integer(m.len() as i64),
                Err(e) => e,
            }
        }
        "sinterstore" | "sunionstore" | "sdiffstore" => {
            let members = match members_of(session, SetOp::of(spec.name), &args[2..]).await {
                Ok(m) => m,
                Err(e) => return e,
            };
            let dst = args[1].clone();
            let count = members.len();
            let mut cmds = vec![vec![Bytes::from_static(b"DEL"), dst.clone()]];
            for part in members.chunks(MOVE_CHUNK) {
                let mut sadd = vec![Bytes::from_static(b"SADD"), dst.clone()];
                sadd.extend(part.iter().cloned());
                cmds.push(sadd);
            }
            // The result is logged as these commands: it must fit in one record.
            let size = moon_aof::record::encoded_len(cmds.iter().map(|c| c.as_slice()));
            if size > crate::dispatch::max_record() {
                return crate::dispatch::too_large_to_log(size);
            }
            // An empty result only deletes the destination: a plain `del` event then.
            let event = (count > 0).then_some(spec.name);
            let batch = match steps(db, cmds, event) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let replies = shard.run_batch_in(Some(tx), on(&dst), batch).await;
            first_error(&replies).unwrap_or(Frame::Integer(count as i64))
        }
        "zunion" | "zinter" | "zdiff" | "zintercard" => {
            let card = spec.name == "zintercard";
            let (keys, c) = match combine_args(args, 1, zset_op(spec.name), false, card) {
                Ok(a) => a,
                Err(e) => return e,
            };
            let items = match scores_of(session, &args[keys]).await {
                Ok(inputs) => c.apply(inputs),
                Err(e) => return e,
            };
            match (card, c.limit) {
                (true, 0) => Frame::Integer(items.len() as i64),
                (true, limit) => Frame::Integer(items.len().min(limit) as i64),
                (false, _) => zset_members_reply(items, c.withscores),
            }
        }
        "zunionstore" | "zinterstore" | "zdiffstore" => {
            let (keys, c) = match combine_args(args, 2, zset_op(spec.name), true, false) {
                Ok(a) => a,
                Err(e) => return e,
            };
            match scores_of(session, &args[keys]).await {
                Ok(inputs) => store_zset(session, &args[1], c.apply(inputs), spec.name).await,
                Err(e) => e,
            }
        }
        "zrangestore" => {
            let (now, src_args) = (tx.now, args.to_vec());
            let read = shard
                .call_on(on(&args[2]), move |s| {
                    s.store_in_tx()
                        .in_db(db, |st| st.zrange_source(&src_args, now))
                        .unwrap_or(Ok(Vec::new()))
                })
                .await;
            match read {
                Some(Ok(items)) => store_zset(session, &args[1], items, spec.name).await,
                Some(Err(e)) => e,
                None => err(moon_shard::SHARD_GONE),
            }
        }
        "zmpop" => {
            let (keys, end, count) = match zmpop_args(args) {
                Ok(a) => a,
                Err(e) => return e,
            };
            match pop_first(session, keys, "zset", end.pop_command(), count).await {
                Ok(Some((key, Frame::Pairs(items)))) => {
                    let popped = items
                        .into_iter()
                        .filter_map(|p| match p {
                            (Frame::Bulk(m), Frame::Double(s)) => Some((m, s)),
                            _ => None,
                        })
                        .collect();
                    zmpop_reply(key, popped)
                }
                Ok(Some((_, other))) | Err(other) => other,
                Ok(None) => Frame::NullArray,
            }
        }
        "lcs" => {
            let strings = match read_each(session, &args[1..3], moon_store::Store::string_at).await
            {
                Ok(v) => v,
                Err(e) if e == err(reply::WRONGTYPE) => return err(moon_store::NOT_STRINGS),
                Err(e) => return e,
            };
            let (a, b) = (
                strings[0].clone().unwrap_or_default(),
                strings[1].clone().unwrap_or_default(),
            );
            moon_store::lcs_reply(&a, &b, args, session.max_bulk_len).unwrap_or_else(|e| e)
        }
        "georadius" | "georadiusbymember" | "geosearchstore" => {
            // Its destination is on another shard: the search runs where the source is, the
            // result is written as a sorted set where the destination is.
            let (dst, event) = if spec.name == "geosearchstore" {
                (args[1].clone(), "geosearchstore")
            } else {
                match moon_store::command::store_option_at(args) {
                    Some(at) => (args[at].clone(), "georadiusstore"),
                    None => return reply::unknown_command(args),
                }
            };
            let src = if spec.name == "geosearchstore" {
                &args[2]
            } else {
                &args[1]
            };
            let (now, src_args) = (tx.now, args.to_vec());
            let read = shard
                .call_on(on(src), move |s| {
                    s.store_in_tx()
                        .in_db(db, |st| st.geo_search_source(&src_args, now))
                        .unwrap_or(Ok(Vec::new()))
                })
                .await;
            match read {
                Some(Ok(items)) => store_zset(session, &dst, items, event).await,
                Some(Err(e)) => e,
                None => err(moon_shard::SHARD_GONE),
            }
        }
        "pfcount" | "pfmerge" => {
            // Every key read on its shard and merged here; PFMERGE's result is written to the
            // destination's shard as the string Redis would leave there (its TTL kept).
            let strings: Vec<_> =
                match read_each(session, &args[1..], moon_store::Store::pf_string_at).await {
                    Ok(v) => v.into_iter().map(|r| r.unwrap_or(Ok(None))).collect(),
                    Err(e) => return e,
                };
            let (max, any_dense) = match moon_store::pf_merge_strings(&strings) {
                Ok(m) => m,
                Err(e) => return e,
            };
            if spec.name == "pfcount" {
                return Frame::Integer(moon_store::pf_count_merged(&max));
            }
            let sparse_max = session.ctx.shared.config().encodings.hll_sparse_max_bytes;
            let dest = strings[0].as_ref().ok().and_then(Option::as_ref);
            let result = match moon_store::pf_merged_into(dest, &max, any_dense, sparse_max) {
                Ok(r) => r,
                Err(e) => return e,
            };
            let dst = args[1].clone();
            let cmd = vec![
                Bytes::from_static(b"SET"),
                dst.clone(),
                Bytes::from(result),
                Bytes::from_static(b"KEEPTTL"),
            ];
            let batch = match steps(db, vec![cmd], Some("pfadd")) {
                Ok(b) => b,
                Err(e) => return e,
            };
            match one_reply(shard.run_batch_in(Some(tx), on(&dst), batch).await) {
                f @ (Frame::Error(_) | Frame::StaticError(_)) => f,
                _ => Frame::OK,
            }
        }
        "bitop" => {
            // Sources read on their shards, the result set on the destination's.
            let sources = match read_each(session, &args[3..], moon_store::Store::string_at).await {
                Ok(v) => v,
                Err(e) => return e,
            };
            let result = match moon_store::bitop_result(&args[1], sources) {
                Ok(r) => r,
                Err(e) => return e,
            };
            let (dst, n) = (args[2].clone(), result.len());
            let cmd = if n == 0 {
                vec![Bytes::from_static(b"DEL"), dst.clone()]
            } else {
                vec![Bytes::from_static(b"SET"), dst.clone(), Bytes::from(result)]
            };
            let size = moon_aof::record::encoded_len([cmd.as_slice()]);
            if size > crate::dispatch::max_record() {
                return crate::dispatch::too_large_to_log(size);
            }
            let batch = match in_db(vec![cmd]) {
                Ok(b) => b,
                Err(e) => return e,
            };
            match one_reply(shard.run_batch_in(Some(tx), on(&dst), batch).await) {
                f @ (Frame::Error(_) | Frame::StaticError(_)) => f,
                _ => Frame::Integer(n as i64),
            }
        }
        "sort" => {
            // Its STORE destination is on another shard: SORT_RO on the source's shard (its
            // patterns are there: `dispatch`), then the list written on the destination's.
            let Some(at) = moon_store::command::store_option_at(args) else {
                return reply::unknown_command(args);
            };
            let dst = args[at].clone();
            let mut read = vec![Bytes::from_static(b"SORT_RO")];
            read.extend(
                args[1..]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i + 1 != at && i + 2 != at)
                    .map(|(_, a)| a.clone()),
            );
            let read = match in_db(vec![read]) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let values = match one_reply(shard.run_batch_in(Some(tx), on(&args[1]), read).await) {
                Frame::Array(items) => items,
                other => return other,
            };
            let values: Vec<Bytes> = values
                .into_iter()
                .map(|v| match v {
                    Frame::Bulk(b) => b,
                    _ => Bytes::new(),
                })
                .collect();
            let count = values.len();
            let mut cmds = vec![vec![Bytes::from_static(b"DEL"), dst.clone()]];
            for part in values.chunks(MOVE_CHUNK) {
                let mut rpush = vec![Bytes::from_static(b"RPUSH"), dst.clone()];
                rpush.extend(part.iter().cloned());
                cmds.push(rpush);
            }
            let size = moon_aof::record::encoded_len(cmds.iter().map(|c| c.as_slice()));
            if size > crate::dispatch::max_record() {
                return crate::dispatch::too_large_to_log(size);
            }
            let batch = match steps(db, cmds, (count > 0).then_some("sortstore")) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let replies = shard.run_batch_in(Some(tx), on(&dst), batch).await;
            first_error(&replies).unwrap_or(Frame::Integer(count as i64))
        }
        _ => reply::unknown_command(args),
    }
}

/// LMPOP/ZMPOP across shards: `pop count` on the first of `keys` holding a `kind` value, in
/// the order given, as on one shard (a wrong type first is an error): that key and the pop's
/// reply, or `None` if none holds one.
async fn pop_first(
    session: &Session,
    keys: &[Bytes],
    kind: &str,
    pop: &'static [u8],
    count: usize,
) -> Result<Option<(Bytes, Frame)>, Frame> {
    let (db, shard) = (session.db, session.ctx.shard.clone());
    let Some(tx) = session.tx else {
        return Err(err(
            "ERR internal error: a cross-shard command outside its transaction",
        ));
    };
    for key in keys {
        match type_at(session, key, db).await {
            None => continue,
            Some(t) if t == kind => {}
            Some(_) => return Err(err(reply::WRONGTYPE)),
        }
        let cmd = vec![
            Bytes::from_static(pop),
            key.clone(),
            Bytes::from(count.to_string()),
        ];
        let batch = steps(db, vec![cmd], None)?;
        let target = shard_for_key(key, shard.count());
        return Ok(Some((
            key.clone(),
            one_reply(shard.run_batch_in(Some(tx), target, batch).await),
        )));
    }
    Ok(None)
}

fn zset_op(name: &str) -> SetOp {
    if name.starts_with("zinter") {
        SetOp::Inter
    } else if name.starts_with("zunion") {
        SetOp::Union
    } else {
        SetOp::Diff
    }
}

/// Makes `dst` the sorted set of `items` on its shard (a DEL, then ZADDs of scores in their
/// 17-digit form), announced as `event`: the write of a sorted-set *STORE across
/// shards. Its reply is the number of members stored.
async fn store_zset(
    session: &Session,
    dst: &Bytes,
    items: Vec<(Bytes, f64)>,
    event: &'static str,
) -> Frame {
    let (shard, Some(tx)) = (session.ctx.shard.clone(), session.tx) else {
        return err("ERR internal error: a cross-shard command outside its transaction");
    };
    let count = items.len();
    let mut cmds = vec![vec![Bytes::from_static(b"DEL"), dst.clone()]];
    for part in items.chunks(MOVE_CHUNK) {
        let mut zadd = vec![Bytes::from_static(b"ZADD"), dst.clone()];
        for (m, s) in part {
            zadd.push(Bytes::from(moon_store::value::format_score(*s)));
            zadd.push(m.clone());
        }
        cmds.push(zadd);
    }
    // The result is logged as these commands: it must fit in one record.
    let size = moon_aof::record::encoded_len(cmds.iter().map(|c| c.as_slice()));
    if size > crate::dispatch::max_record() {
        return crate::dispatch::too_large_to_log(size);
    }
    // An empty result only deletes the destination: a plain `del` event then.
    let batch = match steps(session.db, cmds, (count > 0).then_some(event)) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let replies = shard
        .run_batch_in(Some(tx), shard_for_key(dst, shard.count()), batch)
        .await;
    first_error(&replies).unwrap_or(Frame::Integer(count as i64))
}

/// The members and scores of each key's sorted set (a set's members score 1), read on its
/// shard: a wrong type anywhere is an error.
async fn scores_of(
    session: &Session,
    keys: &[Bytes],
) -> Result<Vec<Option<moon_store::Scored>>, Frame> {
    read_each(session, keys, moon_store::Store::zset_scores).await
}

/// A read of one key in a store at a time: its value, `None` for no key, or its error.
type KeyRead<T> = fn(&moon_store::Store, &[u8], u64) -> Result<Option<T>, Frame>;

/// `read` of each key, on its shard, under the transaction's locks: the first error stops it.
async fn read_each<T: Send + 'static>(
    session: &Session,
    keys: &[Bytes],
    read: KeyRead<T>,
) -> Result<Vec<Option<T>>, Frame> {
    let Some(tx) = session.tx else {
        return Err(err(
            "ERR internal error: a cross-shard command outside its transaction",
        ));
    };
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    let reads: Vec<_> = keys
        .iter()
        .map(|k| {
            let k = k.clone();
            let db = session.db;
            shard.call_on(shard_for_key(&k, n), move |s| {
                s.store_in_tx()
                    .in_db(db, |st| read(st, &k, tx.now))
                    .unwrap_or(Ok(None))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for r in join_all(reads).await {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => return Err(err(moon_shard::SHARD_GONE)),
        }
    }
    Ok(out)
}

/// `key`'s value and deadline in database `db` (read on its shard, under the transaction's
/// locks), if it exists.
async fn value_at(session: &Session, key: &Bytes, db: usize) -> Option<(moon_store::Value, u64)> {
    let (shard, tx) = (session.ctx.shard.clone(), session.tx?);
    let k = key.clone();
    shard
        .call_on(shard_for_key(key, shard.count()), move |s| {
            s.store_in_tx()
                .in_db(db, |st| st.peek_entry(&k, tx.now))
                .flatten()
        })
        .await
        .flatten()
}

/// The type of `key` in database `db`, read on its (locked) shard inside the transaction.
async fn type_at(session: &Session, key: &Bytes, db: usize) -> Option<&'static str> {
    let (shard, tx) = (session.ctx.shard.clone(), session.tx?);
    let k = key.clone();
    shard
        .call_on(shard_for_key(key, shard.count()), move |s| {
            s.store_in_tx()
                .in_db(db, |st| st.type_at(&k, tx.now))
                .flatten()
        })
        .await
        .flatten()
}

/// Whether `key` exists in database `db` (on its shard, under the transaction's locks).
async fn exists_at(session: &Session, key: &Bytes, db: usize) -> bool {
    session.tx.is_none() || type_at(session, key, db).await.is_some()
}

/// Replaces `key` in database `db` with `value` (its rewrite form, after a DEL), on its shard
/// inside the transaction. The first error, if any.
async fn rebuild_at(
    session: &Session,
    key: &Bytes,
    db: usize,
    value: &moon_store::Value,
    expire_at: u64,
    event: &'static str,
) -> Option<Frame> {
    let (shard, Some(tx)) = (session.ctx.shard.clone(), session.tx) else {
        return Some(err(
            "ERR internal error: a cross-shard command outside its transaction",
        ));
    };
    let mut cmds = vec![vec![Bytes::from_static(b"DEL"), key.clone()]];
    let chunk = moon_store::Chunk {
        items: MOVE_CHUNK,
        bytes: usize::MAX,
    };
    cmds.extend(value.rewrite_commands(key, expire_at, chunk));
    let target = shard_for_key(key, shard.count());
    let batch = match steps(db, cmds, Some(event)) {
        Ok(b) => b,
        Err(e) => return Some(e),
    };
    let replies = shard.run_batch_in(Some(tx), target, batch).await;
    first_error(&replies)
}

/// The members of each key's set, read on its shard, combined the way Redis combines them (a
/// wrong type anywhere is an error; an intersection with a missing key is empty).
async fn members_of(session: &Session, op: SetOp, keys: &[Bytes]) -> Result<Vec<Bytes>, Frame> {
    let sets = read_each(session, keys, moon_store::Store::set_members).await?;
    Ok(op.apply(sets))
}

fn on_shard(k: &Bytes, n: usize) -> usize {
    shard_for_key(k, n)
}

/// XREAD / XREADGROUP over streams on several shards: each shard reads its own streams (the
/// same command on its keys, inside the transaction), the answers merged in the order the
/// keys were given. Nothing anywhere: the null array (a blocked call then waits).
async fn read_streams(session: &mut Session, args: &[Bytes]) -> Frame {
    let Some(tx) = session.tx else {
        return err("ERR internal error: a cross-shard command outside its transaction");
    };
    let shard = session.ctx.shard.clone();
    let n = shard.count();
    let range = moon_store::command::streams_keys(args);
    if range.is_empty() {
        return err(reply::SYNTAX);
    }
    let keys = &args[range.clone()];
    let ids = &args[range.end..];
    let head = &args[..range.start];
    // Every key checked first, in key order: no shard delivers (XREADGROUP moves its group)
    // before another would refuse the command.
    let group = match moon_store::ReadArgs::parse(args, args[0].eq_ignore_ascii_case(b"xreadgroup"))
    {
        Ok(q) => q.group.map(|(g, _)| g),
        Err(e) => return e,
    };
    for (k, id) in keys.iter().zip(ids) {
        let (k, id, g, db, now) = (k.clone(), id.clone(), group.clone(), session.db, tx.now);
        let checked = shard
            .call_on(on_shard(&k, n), move |s| {
                s.store_in_tx()
                    .in_db(db, |st| st.check_stream_read(&k, &id, g.as_deref(), now))
                    .unwrap_or(Ok(()))
            })
            .await;
        match checked {
            Some(Ok(())) => {}
            Some(Err(e)) => return e,
            None => return err(moon_shard::SHARD_GONE),
        }
    }
    let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, k) in keys.iter().enumerate() {
        per_shard[shard_for_key(k, n)].push(i);
    }
    let mut answers: Vec<Option<Frame>> = vec![None; keys.len()];
    for (s, idx) in per_shard.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
        let mut cmd = head.to_vec();
        cmd.extend(idx.iter().map(|&i| keys[i].clone()));
        cmd.extend(idx.iter().map(|&i| ids[i].clone()));
        let batch = match steps(session.db, vec![cmd], None) {
            Ok(b) => b,
            Err(e) => return e,
        };
        match one_reply(shard.run_batch_in(Some(tx), s, batch).await) {
            Frame::KeyedReplies(pairs) => {
                for (k, v) in pairs {
                    if let Frame::Bulk(name) = &k {
                        // A key named twice is answered twice, as on one shard.
                        if let Some(&i) = idx
                            .iter()
                            .find(|&&i| keys[i] == name && answers[i].is_none())
                        {
                            answers[i] = Some(Frame::Array(vec![k, v]));
                        }
                    }
                }
            }
            Frame::NullArray | Frame::Null => {}
            other => return other,
        }
    }
    let merged: Vec<(Frame, Frame)> = answers
        .into_iter()
        .flatten()
        .filter_map(|f| match f {
            Frame::Array(mut kv) if kv.len() == 2 => {
                let v = kv.pop()?;
                let k = kv.pop()?;
                Some((k, v))
            }
            _ => None,
        })
        .collect();
    if merged.is_empty() {
        Frame::NullArray
    } else {
        Frame::KeyedReplies(merged)
    }
}
