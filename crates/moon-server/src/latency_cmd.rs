//! LATENCY LATEST / HISTORY / RESET / GRAPH / DOCTOR / HISTOGRAM / HELP: the latency
//! monitor's events (`moon_store::latency`, process-wide) and every shard's per-command
//! latency histograms (`moon_store::stats`), merged.

use bytes::Bytes;
use moon_proto::Frame;
use moon_shard::Shard;
use moon_store::args::eq;
use moon_store::reply;

use crate::session::Session;

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) async fn latency(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    if eq(sub, "latest") && args.len() == 2 {
        Frame::Array(
            moon_store::latency::latest()
                .into_iter()
                .map(|(name, time, latest, max)| {
                    Frame::Array(vec![
                        Frame::bulk(name),
                        Frame::Integer(time as i64),
                        Frame::Integer(latest as i64),
                        Frame::Integer(max as i64),
                    ])
                })
                .collect(),
        )
    } else if (eq(sub, "history") || eq(sub, "graph")) && args.len() != 3 {
        let name = if eq(sub, "history") {
            "latency|history"
        } else {
            "latency|graph"
        };
        reply::wrong_arity(name)
    } else if eq(sub, "history") {
        let event = String::from_utf8_lossy(&args[2]);
        Frame::Array(
            moon_store::latency::history(&event)
                .into_iter()
                .map(|(time, ms)| {
                    Frame::Array(vec![Frame::Integer(time as i64), Frame::Integer(ms as i64)])
                })
                .collect(),
        )
    } else if eq(sub, "reset") {
        let names: Vec<&[u8]> = args[2..].iter().map(|a| &a[..]).collect();
        Frame::Integer(moon_store::latency::reset(&names) as i64)
    } else if eq(sub, "graph") {
        let event = String::from_utf8_lossy(&args[2]);
        match moon_store::latency::graph(&event, unix_secs()) {
            Some(text) => Frame::Verbatim(Bytes::from(text)),
            None => Frame::Error(format!(
                "ERR No samples available for event '{}'",
                reply::lossy(&args[2], 64)
            )),
        }
    } else if eq(sub, "doctor") && args.len() == 2 {
        Frame::Verbatim(Bytes::from(moon_store::latency::doctor()))
    } else if eq(sub, "histogram") {
        histogram(session, &args[2..]).await
    } else if eq(sub, "help") {
        if args.len() != 2 {
            return reply::wrong_arity("latency|help");
        }
        reply::help(
            "LATENCY",
            &[
                "LATEST",
                "    Each event's latest sample: name, Unix time, milliseconds, worst ever.",
                "HISTORY <event>",
                "    An event's samples: Unix time and milliseconds, up to 160.",
                "RESET [<event> ...]",
                "    Forgets the events named (every event when none is).",
                "GRAPH <event>",
                "    An event's samples as a text chart.",
                "DOCTOR",
                "    A report on the events and what to do about them.",
                "HISTOGRAM [<command> ...]",
                "    Per command: its calls and their durations in power-of-two microsecond buckets.",
            ],
        )
    } else {
        reply::unknown_subcommand(sub, "latency")
    }
}

/// LATENCY HISTOGRAM [command ...]: every command called since the last reset, or the named
/// ones (a container's name gives its subcommands; unknown names are skipped).
async fn histogram(session: &mut Session, wanted: &[Bytes]) -> Frame {
    let per_shard = session
        .ctx
        .shard
        .call_all(|_: &Shard| moon_store::stats::snapshot())
        .await;
    let mut by_name = std::collections::BTreeMap::new();
    for s in per_shard.iter().flatten() {
        moon_store::stats::merge(&mut by_name, s);
    }
    let wanted: Vec<String> = wanted
        .iter()
        .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    for (name, stat) in by_name {
        if stat.calls == 0 {
            continue;
        }
        let parent = name.split('|').next().unwrap_or(&name);
        if !wanted.is_empty() && !wanted.iter().any(|w| *w == name || w == parent) {
            continue;
        }
        let buckets = stat
            .latency
            .powers_of_two()
            .into_iter()
            .map(|(bound, n)| (Frame::Integer(bound as i64), Frame::Integer(n as i64)))
            .collect();
        out.push((
            Frame::bulk(name),
            Frame::Map(vec![
                (Frame::bulk("calls"), Frame::Integer(stat.calls as i64)),
                (Frame::bulk("histogram_usec"), Frame::Map(buckets)),
            ]),
        ));
    }
    Frame::Map(out)
}
