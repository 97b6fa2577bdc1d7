//! The DUMP/RESTORE payload: one value in RDB encoding (type byte first), then the RDB version
//! as two little-endian bytes, then the CRC64 of everything before it, little-endian.

use crate::cursor::Cursor;
use crate::error::{Error, ErrorKind, Result};
use crate::object::{read_object, Object};

/// The version DUMP writes unless a value needs a newer one: Redis 7.0's, so that a payload
/// Moon dumps RESTOREs into Redis 7.0 and later.
pub const DUMP_VERSION: u32 = crate::REDIS_7_0;

/// The payload of `obj`: version 10 (Redis 7.0), or 12 (Redis 7.4) for a hash with field TTLs.
pub fn encode_dump(obj: &Object) -> Vec<u8> {
    let mut out = Vec::new();
    crate::write::object(&mut out, obj);
    let version = crate::write::needs_version(obj) as u16;
    out.extend_from_slice(&version.to_le_bytes());
    let crc = crate::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The value in a payload, after its version and checksum are checked (Redis's
/// `verifyDumpPayload`, then the whole payload must be exactly one value).
pub fn decode_dump(payload: &[u8]) -> Result<Object> {
    if payload.len() < 10 {
        return Err(Error {
            offset: payload.len(),
            kind: ErrorKind::Truncated,
        });
    }
    let body = payload.len() - 10;
    let version = u32::from(u16::from_le_bytes([payload[body], payload[body + 1]]));
    if version > crate::MAX_VERSION {
        return Err(Error {
            offset: body,
            kind: ErrorKind::Version(version),
        });
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&payload[body + 2..]);
    let stored = u64::from_le_bytes(stored);
    let computed = crate::crc64(0, &payload[..body + 2]);
    if stored != computed {
        return Err(Error {
            offset: body + 2,
            kind: ErrorKind::Checksum { stored, computed },
        });
    }
    let mut c = Cursor::new(&payload[..body], 0);
    let t = c.byte()?;
    let obj = read_object(&mut c, t)?.into_owned();
    if !c.at_end() {
        return Err(c.corrupt("bytes after the value"));
    }
    Ok(obj)
}

/// The FUNCTION DUMP payload of libraries' `codes`: each as the RDB function opcode and its
/// source, then the version and CRC64 footer.
pub fn encode_functions_dump(codes: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for code in codes {
        out.push(crate::file::OP_FUNCTION2);
        crate::write::string(&mut out, code);
    }
    out.extend_from_slice(&(DUMP_VERSION as u16).to_le_bytes());
    let crc = crate::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The libraries' sources in a FUNCTION RESTORE payload. `Err(None)`: the footer is wrong
/// (Redis's "DUMP payload version or checksum are wrong"); `Err(Some(why))`: the body is.
pub fn decode_functions_dump(
    payload: &[u8],
) -> std::result::Result<Vec<bytes::Bytes>, Option<String>> {
    if payload.len() < 10 {
        return Err(None);
    }
    let body = payload.len() - 10;
    let version = u32::from(u16::from_le_bytes([payload[body], payload[body + 1]]));
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&payload[body + 2..]);
    if version > crate::MAX_VERSION
        || u64::from_le_bytes(stored) != crate::crc64(0, &payload[..body + 2])
    {
        return Err(None);
    }
    let mut c = Cursor::new(&payload[..body], 0);
    let mut codes = Vec::new();
    while !c.at_end() {
        let t = c
            .byte()
            .map_err(|_| Some("can not read data type".to_string()))?;
        if t != crate::file::OP_FUNCTION2 {
            return Err(Some("given type is not a function".into()));
        }
        let code = c
            .string()
            .map_err(|_| Some("failed loading the given functions payload".to_string()))?;
        codes.push(code.into_bytes());
    }
    Ok(codes)
}
