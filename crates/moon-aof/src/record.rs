//! The record: `[u64 lsn][u32 len][len bytes payload][u32 crc32(header ++ payload)]`.
//!
//! Payload kinds (docs/FORMATS.md):
//! - **command**: one command as a RESP array of bulk strings — the same bytes a client sends;
//! - **group**: `MULTI`, then two or more commands, then `EXEC`, all RESP arrays, in one record —
//!   what one command that made several changes logged (e.g. `DEL a b` on one shard), so that a
//!   torn tail drops the whole group and replay never applies part of it.
//!
//! Either way a log can be read with any RESP tool once unframed.

use bytes::Bytes;
use moon_proto::RequestParser;

pub const HEADER_LEN: usize = 12;
pub const TRAILER_LEN: usize = 4;
/// Framing bytes around a payload.
pub const OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;
/// The largest payload a reader accepts (a sanity bound on an untrusted length field), and so
/// the largest record a writer may produce: a request whose record could be larger is refused
/// before it runs ([`encoded_len`]).
pub const MAX_PAYLOAD: usize = 1 << 31;

/// The payload size of a record holding `cmds` (a command, or a group with its MULTI/EXEC and
/// a transaction part's header), computed without encoding: what the server checks a request
/// against [`MAX_PAYLOAD`] with before running it.
pub fn encoded_len<'a>(cmds: impl IntoIterator<Item = &'a [Bytes]>) -> usize {
    // `*<n>\r\n` and `$<len>\r\n...\r\n`: at most 20 digits each, plus the delimiters.
    let group = 15 + 14 + 64;
    cmds.into_iter().fold(group, |total, cmd| {
        cmd.iter().fold(total.saturating_add(23), |t, a| {
            t.saturating_add(a.len() + 25)
        })
    })
}

/// Appends one framed record to `out`.
pub fn encode_record(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode_command(args: &[Bytes], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends a framed record whose payload is `args`, encoded in place (no intermediate buffer).
pub fn append_command_record(lsn: u64, args: &[Bytes], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    encode_command(args, out);
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 8..start + 12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// Appends one framed record holding `cmds`: a command payload for one, a group for more.
pub fn append_group_record(lsn: u64, cmds: &[Vec<Bytes>], out: &mut Vec<u8>) {
    if let [one] = cmds {
        return append_command_record(lsn, one, out);
    }
    let start = out.len();
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(MULTI);
    for c in cmds {
        encode_command(c, out);
    }
    out.extend_from_slice(EXEC);
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 8..start + 12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes a payload into the commands to apply, in order. `None` if it is neither one
/// command nor a well-formed group.
pub fn decode_payload(payload: &[u8]) -> Option<Vec<Vec<Bytes>>> {
    let mut buf = bytes::BytesMut::from(payload);
    let mut parser = RequestParser::new(moon_proto::Limits {
        max_bulk_len: MAX_PAYLOAD,
        ..Default::default()
    });
    let mut cmds = Vec::new();
    while !buf.is_empty() {
        if buf[0] != b'*' {
            return None;
        }
        match parser.next_request(&mut buf).ok()? {
            Some(cmd) if !cmd.is_empty() => cmds.push(cmd),
            _ => return None,
        }
    }
    let is = |c: &Vec<Bytes>, name: &[u8]| c.len() == 1 && c[0].eq_ignore_ascii_case(name);
    let inner_ok = |inner: &[Vec<Bytes>]| !inner.iter().any(|c| is(c, b"MULTI") || is(c, b"EXEC"));
    match cmds.len() {
        1 if !is(&cmds[0], b"MULTI") && !is(&cmds[0], b"EXEC") => Some(cmds),
        n if n >= 3
            && is(&cmds[0], b"MULTI")
            && is(&cmds[n - 1], b"EXEC")
            && inner_ok(&cmds[1..n - 1]) =>
        {
            cmds.pop();
            cmds.remove(0);
            Some(cmds)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_roundtrip() {
        let args = vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")];
        let mut a = Vec::new();
        append_command_record(7, &args, &mut a);
        let mut payload = Vec::new();
        encode_command(&args, &mut payload);
        let mut b = Vec::new();
        encode_record(7, &payload, &mut b);
        assert_eq!(a, b);
        assert_eq!(&a[..8], &7u64.to_le_bytes());
        assert_eq!(&a[8..12], &(payload.len() as u32).to_le_bytes());
        assert_eq!(&a[12..12 + payload.len()], &payload[..]);
        assert_eq!(
            &a[12 + payload.len()..],
            &crc32fast::hash(&a[..12 + payload.len()]).to_le_bytes()
        );
        assert_eq!(decode_payload(&payload), Some(vec![args]));
        assert_eq!(
            decode_payload(b"*1\r\n$1\r\na\r\nxx"),
            None,
            "trailing bytes"
        );
        assert_eq!(
            decode_payload(b"PING\r\n"),
            None,
            "inline form is not a record payload"
        );
    }

    #[test]
    fn a_group_is_one_record_and_decodes_to_its_commands() {
        let a = vec![Bytes::from("DEL"), Bytes::from("a")];
        let b = vec![Bytes::from("DEL"), Bytes::from("b")];
        let mut out = Vec::new();
        append_group_record(3, &[a.clone(), b.clone()], &mut out);
        let payload = &out[HEADER_LEN..out.len() - TRAILER_LEN];
        assert!(payload.starts_with(MULTI) && payload.ends_with(EXEC));
        assert_eq!(decode_payload(payload), Some(vec![a.clone(), b]));
        let mut single = Vec::new();
        append_group_record(3, std::slice::from_ref(&a), &mut single);
        let mut plain = Vec::new();
        append_command_record(3, &a, &mut plain);
        assert_eq!(single, plain, "a group of one is a plain command record");
        // Malformed groups are refused.
        for bad in [
            &b"*1\r\n$5\r\nMULTI\r\n"[..],
            b"*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n*1\r\n$4\r\nPING\r\n",
            b"",
        ] {
            assert_eq!(decode_payload(bad), None);
        }
    }
}
