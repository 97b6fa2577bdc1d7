//! Redis's error replies, word for word, so clients that match on them keep working.

use bytes::Bytes;
use moon_proto::Frame;

pub const SYNTAX: &str = "ERR syntax error";
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const NAN_OR_INF: &str = "ERR increment would produce NaN or Infinity";
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NO_SUCH_KEY: &str = "ERR no such key";
pub const OFFSET_RANGE: &str = "ERR offset is out of range";
pub const STRING_TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
pub const INVALID_CURSOR: &str = "ERR invalid cursor";
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

pub fn wrong_arity(name: &str) -> Frame {
    Frame::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub fn invalid_expire(name: &str) -> Frame {
    Frame::Error(format!("ERR invalid expire time in '{name}' command"))
}

/// `ERR unknown command 'foo', with args beginning with: 'a' 'b' ` (Redis 7's text).
pub fn unknown_command(args: &[Bytes]) -> Frame {
    let name = args.first().map(|a| lossy(a, 128)).unwrap_or_default();
    let mut msg = format!("ERR unknown command '{name}', with args beginning with: ");
    for a in args.iter().skip(1) {
        if msg.len() > 256 {
            break;
        }
        msg.push('\'');
        msg.push_str(&lossy(a, 128));
        msg.push_str("' ");
    }
    Frame::Error(msg)
}

/// `ERR unknown subcommand 'x'. Try CONFIG HELP.`
pub fn unknown_subcommand(sub: &[u8], cmd: &str) -> Frame {
    Frame::Error(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        lossy(sub, 128),
        cmd.to_ascii_uppercase()
    ))
}

/// Printable text of client-sent bytes for an error message, bounded in length.
pub fn lossy(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn err(msg: &'static str) -> Frame {
    Frame::StaticError(msg)
}

/// A HELP subcommand's reply: Redis's header line, `lines`, and its closing HELP lines.
pub fn help(command: &'static str, lines: &[&'static str]) -> Frame {
    let mut out = vec![Frame::SimpleOwned(format!(
        "{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ))];
    out.extend(lines.iter().map(|l| Frame::Simple(l)));
    out.push(Frame::Simple("HELP"));
    out.push(Frame::Simple("    Prints this help."));
    Frame::Array(out)
}
