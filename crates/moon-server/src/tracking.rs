//! Client-side caching on the connection side: CLIENT TRACKING / CACHING / GETREDIR /
//! TRACKINGINFO, which calls carry a tracking reader to their key's shard, and delivery of the
//! invalidations shards send back (see `moon_store::tracking` for the table itself).
//!
//! An invalidation goes to the tracking client's own shard, then to the client itself (a
//! RESP3 push `invalidate`) or to its REDIRECT client, which may live on any shard: a RESP3
//! redirect target gets the push, a RESP2 one gets a `__redis__:invalidate` message if it is
//! subscribed (Redis's rules). Invalidations are sent as soon as the change ran: telling a
//! client early that a key changed is always safe.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use moon_proto::{Frame, Protocol};
use moon_shard::Shard;
use moon_store::args::eq;
use moon_store::reply::{self, err};
use moon_store::tracking::{Invalidation, Reader};

use crate::session::{ClientInfo, Session, TrackingState, CLIENTS};

/// The reader a command of this connection names as its tracking reader ([`moon_store::Call::track`]), if any: reads are
/// remembered (outside BCAST, as OPTIN/OPTOUT and CLIENT CACHING say); writes name their
/// client under NOLOOP.
pub fn reader_for(session: &Session, is_read: bool, is_write: bool) -> Option<Reader> {
    let t = session.info.tracking.borrow();
    let t = t.as_ref()?;
    let track_read = is_read
        && !t.bcast
        && if t.optin {
            session.caching == Some(true)
        } else if t.optout {
            session.caching != Some(false)
        } else {
            true
        };
    (track_read || (is_write && t.noloop)).then(|| Reader {
        client: session.info.id,
        shard: session.info.shard,
        noloop: t.noloop,
    })
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP].
pub async fn tracking_command(session: &mut Session, args: &[Bytes]) -> Frame {
    // The options are read first and ON/OFF after them, as in Redis: a bad REDIRECT is
    // reported before a bad mode word.
    let mut t = TrackingState::default();
    let mut i = 3;
    while i < args.len() {
        let a = &args[i];
        if eq(a, "redirect") && i + 1 < args.len() {
            // Checked where it is read, for ON and OFF alike, as Redis does (a redirect to
            // itself is allowed, as in Redis 7.0).
            if t.redirect.is_some() {
                return err("ERR A client can only redirect to a single other client");
            }
            let Some(target) = moon_store::Store::parse_int(&args[i + 1]) else {
                return err(reply::NOT_INTEGER);
            };
            let target = target as u64;
            let exists = session
                .ctx
                .shard
                .call_all(move |_: &Shard| CLIENTS.with(|c| c.borrow().contains_key(&target)))
                .await;
            if !exists.into_iter().flatten().any(|e| e) {
                return err("ERR The client ID you want redirect to does not exist");
            }
            t.redirect = Some(target);
            i += 1;
        } else if eq(a, "prefix") && i + 1 < args.len() {
            t.prefixes.push(args[i + 1].clone());
            i += 1;
        } else if eq(a, "bcast") {
            t.bcast = true;
        } else if eq(a, "optin") {
            t.optin = true;
        } else if eq(a, "optout") {
            t.optout = true;
        } else if eq(a, "noloop") {
            t.noloop = true;
        } else {
            return err(reply::SYNTAX);
        }
        i += 1;
    }
    let Some(on) = moon_store::args::on_off(&args[2]) else {
        return err(reply::SYNTAX);
    };
    let id = session.info.id;
    let shard = session.ctx.shard.clone();
    if !on {
        *session.info.tracking.borrow_mut() = None;
        session.caching = None;
        shard
            .call_all(move |s: &Shard| s.store().forget_tracking(id))
            .await;
        return Frame::OK;
    }
    let old = session.info.tracking.borrow().clone();
    if let Some(e) = refused_mode(old.as_ref(), &t) {
        return err(e);
    }
    if t.bcast {
        let existing = old.as_ref().map(bcast_prefixes).unwrap_or_default();
        if let Some(e) = prefix_collision(&existing, &t.prefixes) {
            return Frame::Error(e);
        }
        // Prefixes add up, as in Redis: a client in BCAST mode names more of them with
        // another CLIENT TRACKING ON. None named is the empty prefix: every key.
        let mut prefixes = existing;
        if t.prefixes.is_empty() {
            if !prefixes.iter().any(|p| p.is_empty()) {
                prefixes.push(Bytes::new());
            }
        } else {
            prefixes.extend(t.prefixes.iter().cloned());
        }
        let reader = Reader {
            client: id,
            shard: session.info.shard,
            noloop: t.noloop,
        };
        let all = prefixes.clone();
        shard
            .call_all(move |s: &Shard| s.store().track_broadcast(reader, all.clone()))
            .await;
        t.prefixes = prefixes;
    }
    // Otherwise the keys this client read stay tracked, as in Redis: ON again (a new REDIRECT,
    // OPTIN after the default mode) must not make it miss an invalidation. A changed NOLOOP
    // applies to them too.
    if old
        .as_ref()
        .is_some_and(|o| !t.bcast && o.noloop != t.noloop)
    {
        let noloop = t.noloop;
        shard
            .call_all(move |s: &Shard| s.store().track_noloop(id, noloop))
            .await;
    }
    *session.info.tracking.borrow_mut() = Some(t);
    Frame::OK
}

/// Why Redis refuses CLIENT TRACKING ON with options `t` for a client tracking as `old`
/// (`None`: it tracks nothing yet), in Redis's order of checks.
fn refused_mode(old: Option<&TrackingState>, t: &TrackingState) -> Option<&'static str> {
    if !t.prefixes.is_empty() && !t.bcast {
        return Some("ERR PREFIX option requires BCAST mode to be enabled");
    }
    if old.is_some_and(|o| o.bcast != t.bcast) {
        return Some("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.");
    }
    if t.bcast && (t.optin || t.optout) {
        return Some("ERR OPTIN and OPTOUT are not compatible with BCAST");
    }
    if t.optin && t.optout {
        return Some("ERR You can't specify both OPTIN mode and OPTOUT mode");
    }
    if old.is_some_and(|o| (t.optin && o.optout) || (t.optout && o.optin)) {
        return Some("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.");
    }
    None
}

/// The prefixes a BCAST client is registered under (the empty one, every key, if it named
/// none).
fn bcast_prefixes(t: &TrackingState) -> Vec<Bytes> {
    if t.bcast {
        t.prefixes.clone()
    } else {
        Vec::new()
    }
}

/// Redis's refusal of BCAST prefixes that overlap (one is a prefix of the other, so both would
/// announce the same key): a new one against those registered, then against the others given.
fn prefix_collision(existing: &[Bytes], new: &[Bytes]) -> Option<String> {
    let overlap = |a: &[u8], b: &[u8]| {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (i, p) in new.iter().enumerate() {
        if let Some(e) = existing.iter().find(|e| overlap(e, p)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                text(p),
                text(e)
            ));
        }
        if let Some(q) = new[i + 1..].iter().find(|q| overlap(p, q)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                text(p),
                text(q)
            ));
        }
    }
    None
}

/// CLIENT CACHING YES|NO: whether the next command's reads are tracked (OPTIN / OPTOUT).
pub fn caching_command(session: &mut Session, args: &[Bytes]) -> Frame {
    let yes = if eq(&args[2], "yes") {
        true
    } else if eq(&args[2], "no") {
        false
    } else {
        return err(reply::SYNTAX);
    };
    let (optin, optout) = match session.info.tracking.borrow().as_ref() {
        Some(t) => (t.optin, t.optout),
        None => (false, false),
    };
    if !optin && !optout {
        return err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
    }
    if yes && !optin {
        return err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.");
    }
    if !yes && !optout {
        return err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.");
    }
    session.caching = Some(yes);
    Frame::OK
}

/// CLIENT GETREDIR: -1 not tracking, 0 tracking without redirect, else the target's id.
pub fn getredir(session: &Session) -> Frame {
    Frame::Integer(match session.info.tracking.borrow().as_ref() {
        None => -1,
        Some(t) => t.redirect.map_or(0, |r| r as i64),
    })
}

/// CLIENT TRACKINGINFO.
pub fn trackinginfo(session: &Session) -> Frame {
    let t = session.info.tracking.borrow();
    let mut flags = Vec::new();
    let (redirect, prefixes) = match t.as_ref() {
        None => {
            flags.push("off");
            (-1, Vec::new())
        }
        Some(t) => {
            flags.push("on");
            if t.bcast {
                flags.push("bcast");
            }
            if t.optin {
                flags.push("optin");
                if session.caching == Some(true) {
                    flags.push("caching-yes");
                }
            }
            if t.optout {
                flags.push("optout");
                if session.caching == Some(false) {
                    flags.push("caching-no");
                }
            }
            if t.noloop {
                flags.push("noloop");
            }
            (t.redirect.map_or(0, |r| r as i64), t.prefixes.clone())
        }
    };
    Frame::Map(vec![
        (
            Frame::bulk("flags"),
            Frame::Set(flags.into_iter().map(Frame::bulk).collect()),
        ),
        (Frame::bulk("redirect"), Frame::Integer(redirect)),
        (
            Frame::bulk("prefixes"),
            // In byte order, as Redis's radix tree lists them.
            Frame::Array({
                let mut prefixes = prefixes;
                prefixes.sort();
                prefixes.into_iter().map(Frame::Bulk).collect()
            }),
        ),
    ])
}

/// The shard's invalidation sink: each invalidation goes to its reader's shard.
pub fn invalidation_sink(shard: std::rc::Weak<Shard>) -> moon_shard::InvalidationSink {
    Rc::new(move |owed: Vec<Invalidation>| {
        let Some(me) = shard.upgrade() else {
            return;
        };
        let mut per_shard: Vec<Vec<Invalidation>> = vec![Vec::new(); me.count()];
        for inv in owed {
            if let Some(list) = per_shard.get_mut(inv.reader.shard) {
                list.push(inv);
            }
        }
        for (target, list) in per_shard.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            if target == me.id() {
                deliver_here(list);
            } else {
                let me = me.clone();
                glommio::spawn_local(async move {
                    me.call_on(target, move |_| deliver_here(list)).await;
                })
                .detach();
            }
        }
    })
}

/// The invalidation frame for `target`: a push in RESP3, a `__redis__:invalidate` message to
/// a subscribed RESP2 redirect target; `None` if that client cannot receive one.
fn frame_for(target: &ClientInfo, keys: &Option<Vec<Bytes>>, redirected: bool) -> Option<Frame> {
    let keys = match keys {
        Some(k) => Frame::Array(k.iter().cloned().map(Frame::Bulk).collect()),
        None => Frame::Null,
    };
    if target.resp.get() == 3 {
        Some(Frame::Push(vec![Frame::bulk("invalidate"), keys]))
    } else if redirected && target.sub_counts.get() != (0, 0, 0) {
        Some(Frame::Push(vec![
            Frame::bulk("message"),
            Frame::bulk("__redis__:invalidate"),
            keys,
        ]))
    } else {
        None
    }
}

fn send(target: &ClientInfo, frame: &Frame) {
    let proto = if target.resp.get() == 3 {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    };
    crate::pubsub::push_limited(frame, proto, target);
}

/// Delivers invalidations to tracking clients of this shard (or their redirect targets).
fn deliver_here(list: Vec<Invalidation>) {
    // As Redis sends them: a message per key a client read (several keys of one command are
    // several messages), one per prefix of a broadcast client with its keys, and a null one
    // if anything flushed.
    let mut messages: Vec<(u64, Option<Vec<Bytes>>)> = Vec::new();
    let mut slot_of: std::collections::HashMap<(u64, u16), usize> =
        std::collections::HashMap::new();
    for inv in list {
        if let (0, Some(key)) = (inv.prefix, &inv.key) {
            messages.push((inv.reader.client, Some(vec![key.clone()])));
            continue;
        }
        let at = *slot_of
            .entry((inv.reader.client, inv.prefix))
            .or_insert_with(|| {
                messages.push((inv.reader.client, Some(Vec::new())));
                messages.len() - 1
            });
        let slot = &mut messages[at];
        match (&mut slot.1, inv.key) {
            (Some(keys), Some(k)) => keys.push(k),
            (keys, _) => *keys = None,
        }
    }
    // Each client's messages together and in order: a redirect to another shard carries
    // them in one exchange.
    let mut per_client: Vec<(u64, Vec<Option<Vec<Bytes>>>)> = Vec::new();
    let mut at_of: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (client, keys) in messages {
        let at = *at_of.entry(client).or_insert_with(|| {
            per_client.push((client, Vec::new()));
            per_client.len() - 1
        });
        per_client[at].1.push(keys);
    }
    for (client, messages) in per_client {
        let Some(info) = CLIENTS.with(|c| c.borrow().get(&client).cloned()) else {
            continue;
        };
        let redirect = match info.tracking.borrow().as_ref() {
            Some(t) => t.redirect,
            None => continue,
        };
        match redirect {
            None => {
                for keys in &messages {
                    if let Some(f) = frame_for(&info, keys, false) {
                        send(&info, &f);
                    }
                }
            }
            Some(target) => {
                let local = CLIENTS.with(|c| c.borrow().get(&target).cloned());
                match local {
                    Some(t) => {
                        for keys in &messages {
                            if let Some(f) = frame_for(&t, keys, true) {
                                send(&t, &f);
                            }
                        }
                    }
                    None => redirect_elsewhere(client, target, messages),
                }
            }
        }
    }
}

thread_local! {
    /// This shard, for redirects to clients on other shards.
    static SHARD: RefCell<Option<std::rc::Weak<Shard>>> = const { RefCell::new(None) };
}

/// Lets this shard forward invalidations to redirect targets on other shards.
pub fn init(shard: &Rc<Shard>) {
    SHARD.with(|s| *s.borrow_mut() = Some(Rc::downgrade(shard)));
}

/// Sends `client`'s invalidation to its redirect target on another shard; if no shard has
/// that client any more, tells `client` once (`tracking-redir-broken`, RESP3 only, as Redis).
fn redirect_elsewhere(client: u64, target: u64, messages: Vec<Option<Vec<Bytes>>>) {
    let Some(me) = SHARD.with(|s| s.borrow().as_ref().and_then(|w| w.upgrade())) else {
        return;
    };
    glommio::spawn_local(async move {
        let found = me
            .call_all(move |_: &Shard| {
                let Some(t) = CLIENTS.with(|c| c.borrow().get(&target).cloned()) else {
                    return false;
                };
                for keys in &messages {
                    if let Some(f) = frame_for(&t, keys, true) {
                        send(&t, &f);
                    }
                }
                true
            })
            .await;
        if found.into_iter().flatten().any(|f| f) {
            return;
        }
        let Some(info) = CLIENTS.with(|c| c.borrow().get(&client).cloned()) else {
            return;
        };
        let first = match info.tracking.borrow_mut().as_mut() {
            Some(t) if t.redirect == Some(target) && !t.redirect_broken => {
                t.redirect_broken = true;
                true
            }
            _ => false,
        };
        if first && info.resp.get() == 3 {
            let push = Frame::Push(vec![
                Frame::bulk("tracking-redir-broken"),
                Frame::Integer(target as i64),
            ]);
            send(&info, &push);
        }
    })
    .detach();
}
