//! The record: `[u64 lsn][u32 len][len bytes payload][u32 crc32(header ++ payload)]`.
//!
//! The payload of a plain record is one command as a RESP array of bulk strings — the same
//! bytes a client sends — so a log can be read with any RESP tool once unframed.

use bytes::Bytes;
use moon_proto::RequestParser;

pub const HEADER_LEN: usize = 12;
pub const TRAILER_LEN: usize = 4;
/// Framing bytes around a payload.
pub const OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;
/// The largest payload a reader accepts (a sanity bound on an untrusted length field).
pub const MAX_PAYLOAD: usize = 1 << 31;

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

/// Decodes a plain record's payload back into a command. `None` if it is not exactly one
/// RESP array of bulk strings.
pub fn decode_command(payload: &[u8]) -> Option<Vec<Bytes>> {
    let mut buf = bytes::BytesMut::from(payload);
    let mut parser = RequestParser::new(moon_proto::Limits {
        max_bulk_len: MAX_PAYLOAD,
        ..Default::default()
    });
    if payload.first() != Some(&b'*') {
        return None;
    }
    let cmd = parser.next_request(&mut buf).ok()??;
    if !buf.is_empty() || cmd.is_empty() {
        return None;
    }
    Some(cmd)
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
        assert_eq!(decode_command(&payload), Some(args));
        assert_eq!(
            decode_command(b"*1\r\n$1\r\na\r\nxx"),
            None,
            "trailing bytes"
        );
        assert_eq!(
            decode_command(b"PING\r\n"),
            None,
            "inline form is not a record payload"
        );
    }
}
