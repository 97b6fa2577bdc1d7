//! Commands whose answer says what this server is not: MODULE (Moon loads no modules) and
//! LOLWUT (a picture and the version). CLUSTER answers in the command table itself: cluster
//! support is disabled, as on a Redis started without `cluster-enabled`.

use bytes::Bytes;
use moon_proto::Frame;
use moon_store::args::{eq, parse_i64};
use moon_store::reply::{self, err};

/// MODULE LIST (none), HELP; LOAD, LOADEX and UNLOAD fail as they do for a module Redis
/// cannot load or does not have.
pub(crate) fn module(args: &[Bytes]) -> Frame {
    let sub = &args[1];
    if eq(sub, "list") && args.len() == 2 {
        Frame::Array(Vec::new())
    } else if (eq(sub, "load") || eq(sub, "loadex")) && args.len() >= 3 {
        err("ERR Error loading the extension. Please check the server logs.")
    } else if eq(sub, "unload") && args.len() == 3 {
        err("ERR Error unloading module: no such module with that name")
    } else if eq(sub, "help") && args.len() == 2 {
        reply::help(
            "MODULE",
            &[
                "LIST",
                "    Return a list of loaded modules (Moon loads none).",
                "LOAD <path> [<arg> ...]",
                "LOADEX <path> [[CONFIG NAME VALUE] [CONFIG NAME VALUE]] [ARGS ...]",
                "UNLOAD <name>",
                "    Refused: Moon has no module support.",
            ],
        )
    } else {
        reply::unknown_subcommand(sub, "module")
    }
}

/// LOLWUT [VERSION v]: the moon in the phase `v` picks (0 new .. 7), drawn in characters, and
/// the version.
pub(crate) fn lolwut(args: &[Bytes]) -> Frame {
    let phase = match args {
        [_] => 4,
        // Redis's later arguments size its drawings; this one has one size.
        [_, v, n, sizes @ ..] if eq(v, "version") && sizes.len() <= 3 => {
            match (parse_i64(n), sizes.iter().all(|a| parse_i64(a).is_some())) {
                (Some(n), true) => n.rem_euclid(8),
                _ => return err("ERR value is not an integer or out of range"),
            }
        }
        _ => return err("ERR syntax error"),
    };
    // The lit part is where the disc and a second disc, shifted by the phase, differ.
    let shift = (phase as f64 - 4.0) / 2.0;
    let mut out = String::new();
    for row in -6i32..=6 {
        for col in -12i32..=12 {
            let (x, y) = (f64::from(col) / 2.0, f64::from(row));
            let disc = x * x + y * y <= 36.0;
            let shadow = (x - shift * 6.0) * (x - shift * 6.0) + y * y <= 36.0;
            out.push(match (disc, shadow != (phase != 4) || phase == 4) {
                (false, _) => ' ',
                (true, true) if phase == 0 => '.',
                (true, true) => '#',
                (true, false) => '.',
            });
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out.push_str(&format!("\nMoon ver. {}\n", env!("CARGO_PKG_VERSION")));
    Frame::Verbatim(Bytes::from(out))
}
