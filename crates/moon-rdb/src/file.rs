//! Whole RDB files: `REDIS` and a 4-digit version, then opcodes (AUX fields, databases,
//! expiries, functions, module data) and keys, then `EOF` and the CRC64 of everything before.

use std::io::Write;

use bytes::Bytes;

use crate::cursor::Cursor;
use crate::error::{Error, ErrorKind, Result};
use crate::object::{self, is_value_type, module_name, read_object, skip_module_value, Object};
use crate::text::Text;

const OP_SLOT_INFO: u8 = 244;
pub(crate) const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

/// One key of a file, with what came before it; its strings `Bytes`, or [`Text`] lent from
/// the file ([`FileReader::next_lent`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord<S = Bytes> {
    pub db: u64,
    pub key: S,
    pub value: Object<S>,
    /// Unix ms at which the key expires.
    pub expire_at: Option<u64>,
    /// Seconds since last access (`IDLE`), for an LRU policy.
    pub idle: Option<u64>,
    /// The LFU counter (`FREQ`).
    pub freq: Option<u8>,
}

/// What a file holds, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<S = Bytes> {
    /// An AUX field (`redis-ver`, `ctime`, `aof-base`...).
    Aux(Bytes, Bytes),
    /// The keys that follow are in this database.
    Db(u64),
    /// A function library's source (`FUNCTION LOAD` text).
    Function(Bytes),
    Key(KeyRecord<S>),
    /// A value or AUX section stepped over because the reader was asked to skip what Moon
    /// cannot hold: its database, its key (empty for module AUX data) and what it was.
    Skipped {
        db: u64,
        key: Bytes,
        what: String,
    },
}

/// Reads a whole file held in memory, item by item; the checksum is checked when `EOF` is
/// reached ([`FileReader::next_item`] then returns `None`).
pub struct FileReader<'a> {
    data: &'a [u8],
    c: Cursor<'a>,
    version: u32,
    db: u64,
    skip_unsupported: bool,
    end: Option<usize>,
    /// The CRC64 of `data[..crc_upto]`, kept up as items are read: the bytes are checked
    /// while they are fresh, and a caller may drop what is behind (a mapped file).
    crc: u64,
    crc_upto: usize,
    /// The last `RESIZEDB` hint: (database, keys), the keys bounded by what the bytes left
    /// could hold.
    size_hint: Option<(u64, u64)>,
}

impl<'a> FileReader<'a> {
    /// Checks the header. `skip_unsupported`: module values come out as [`Item::Skipped`]
    /// instead of stopping the read.
    pub fn new(data: &'a [u8], skip_unsupported: bool) -> Result<FileReader<'a>> {
        let mut c = Cursor::new(data, 0);
        let magic = c.take(9).map_err(|_| Error {
            offset: data.len(),
            kind: ErrorKind::Truncated,
        })?;
        if &magic[..5] != b"REDIS" {
            return Err(Error::corrupt(0, "not an RDB file (no REDIS signature)"));
        }
        let version = std::str::from_utf8(&magic[5..])
            .ok()
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
            .ok_or_else(|| Error::corrupt(5, "the RDB version is not four digits"))?;
        if !(crate::MIN_VERSION..=crate::MAX_VERSION).contains(&version) {
            return Err(Error {
                offset: 5,
                kind: ErrorKind::Version(version),
            });
        }
        Ok(FileReader {
            data,
            c,
            version,
            db: 0,
            skip_unsupported,
            end: None,
            crc: 0,
            crc_upto: 0,
            size_hint: None,
        })
    }

    /// How many keys the file says the current database holds (`RESIZEDB`), never more than
    /// its remaining bytes could (a key takes at least 3): for sizing a table, not trusted.
    pub fn size_hint(&self) -> Option<(u64, u64)> {
        self.size_hint
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where reading is (for progress and errors).
    pub fn offset(&self) -> usize {
        self.c.offset()
    }

    /// After the last item: the offset just past the checksum (an old-style AOF with an RDB
    /// preamble goes on in RESP from there).
    pub fn end(&self) -> Option<usize> {
        self.end
    }

    /// The next item, its strings of its own.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        Ok(self.next_lent()?.map(|item| match item {
            Item::Key(k) => Item::Key(KeyRecord {
                db: k.db,
                key: k.key.into_bytes(),
                value: k.value.into_owned(),
                expire_at: k.expire_at,
                idle: k.idle,
                freq: k.freq,
            }),
            Item::Aux(k, v) => Item::Aux(k, v),
            Item::Db(db) => Item::Db(db),
            Item::Function(f) => Item::Function(f),
            Item::Skipped { db, key, what } => Item::Skipped { db, key, what },
        }))
    }

    /// The next item, its key's strings lent from the file's bytes wherever they are stored
    /// raw (a loader that copies them into values of its own copies them once).
    pub fn next_lent(&mut self) -> Result<Option<Item<Text<'a>>>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let upto = self.c.pos();
        self.crc = crate::crc64(self.crc, &self.data[self.crc_upto..upto]);
        self.crc_upto = upto;
        let (mut expire_at, mut idle, mut freq) = (None, None, None);
        loop {
            let at = self.c.offset();
            let op = self.c.byte()?;
            match op {
                OP_EOF => {
                    let body = self.c.pos();
                    // Files before version 5 end at EOF: no checksum.
                    let stored = if self.version >= 5 {
                        self.c.u64_le()?
                    } else {
                        0
                    };
                    if stored != 0 {
                        let computed = crate::crc64(self.crc, &self.data[self.crc_upto..body]);
                        if computed != stored {
                            return Err(Error {
                                offset: body,
                                kind: ErrorKind::Checksum { stored, computed },
                            });
                        }
                    }
                    self.end = Some(self.c.pos());
                    return Ok(None);
                }
                OP_SELECTDB => {
                    self.db = self.c.len()?;
                    return Ok(Some(Item::Db(self.db)));
                }
                OP_EXPIRETIME => {
                    expire_at = Some(u64::from(self.c.u32_le()?) * 1000);
                }
                OP_EXPIRETIME_MS => expire_at = Some(self.c.u64_le()?),
                OP_RESIZEDB => {
                    let keys = self.c.len()?;
                    self.c.len()?;
                    let left = (self.data.len() - self.c.pos()) as u64 / 3;
                    self.size_hint = Some((self.db, keys.min(left)));
                }
                OP_SLOT_INFO => {
                    self.c.len()?;
                    self.c.len()?;
                    self.c.len()?;
                }
                OP_AUX => {
                    let k = self.c.string()?.into_bytes();
                    let v = self.c.string()?.into_bytes();
                    return Ok(Some(Item::Aux(k, v)));
                }
                OP_FREQ => freq = Some(self.c.byte()?),
                OP_IDLE => idle = Some(self.c.len()?),
                OP_FUNCTION2 => return Ok(Some(Item::Function(self.c.string()?.into_bytes()))),
                OP_FUNCTION_PRE_GA => {
                    return Err(Error {
                        offset: at,
                        kind: ErrorKind::Unsupported(
                            "functions in the format of Redis 7.0 release candidates".into(),
                        ),
                    })
                }
                OP_MODULE_AUX => {
                    let name = module_name(self.c.len()?);
                    if !self.skip_unsupported {
                        return Err(Error {
                            offset: at,
                            kind: ErrorKind::Unsupported(format!("AUX data of {name}")),
                        });
                    }
                    self.c.len()?; // when_opcode
                    self.c.len()?; // when
                    skip_module_value(&mut self.c)?;
                    return Ok(Some(Item::Skipped {
                        db: self.db,
                        key: Bytes::new(),
                        what: format!("AUX data of {name}"),
                    }));
                }
                t if is_value_type(t) => {
                    let key = self.c.string()?;
                    return match read_object(&mut self.c, t) {
                        Ok(value) => Ok(Some(Item::Key(KeyRecord {
                            db: self.db,
                            key,
                            value,
                            expire_at,
                            idle,
                            freq,
                        }))),
                        Err(Error {
                            kind: ErrorKind::Unsupported(what),
                            ..
                        }) if self.skip_unsupported && t == object::MODULE_2 => {
                            skip_module_value(&mut self.c)?;
                            Ok(Some(Item::Skipped {
                                db: self.db,
                                key: key.into_bytes(),
                                what,
                            }))
                        }
                        Err(Error {
                            kind: ErrorKind::Unsupported(what),
                            offset,
                        }) => Err(Error {
                            offset,
                            kind: ErrorKind::Unsupported(format!(
                                "key {:?} in database {} holds {what}",
                                String::from_utf8_lossy(&key),
                                self.db
                            )),
                        }),
                        Err(e) => Err(e),
                    };
                }
                other => return Err(Error::corrupt(at, format!("unknown opcode {other}"))),
            }
        }
    }
}

/// Writes a file: header, then what the caller adds, then [`FileWriter::finish`] writes `EOF`
/// and the checksum. Buffered; the CRC64 runs over every byte written.
pub struct FileWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    crc: u64,
    version: u32,
    compress: bool,
}

impl<W: Write> FileWriter<W> {
    /// `version`: the RDB version in the header (10 for Redis 7.0, 12 for Redis 7.4).
    pub fn new(out: W, version: u32) -> FileWriter<W> {
        let mut w = FileWriter {
            out,
            buf: Vec::with_capacity(1 << 16),
            crc: 0,
            version,
            compress: true,
        };
        w.buf
            .extend_from_slice(format!("REDIS{version:04}").as_bytes());
        w
    }

    /// Values' strings written without LZF (Redis's `rdbcompression no`): for a file read
    /// back at disk speed, where decompressing costs more than the bytes saved.
    pub fn without_compression(mut self) -> FileWriter<W> {
        self.compress = false;
        self
    }

    fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= 1 << 16 {
            self.crc = crate::crc64(self.crc, &self.buf);
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    pub fn aux(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.buf.push(OP_AUX);
        crate::write::string(&mut self.buf, key);
        crate::write::string(&mut self.buf, value);
        self.flush_if_full()
    }

    /// The keys that follow go to database `db` (`keys`/`expires`: sizing hints for the
    /// loader).
    pub fn select_db(&mut self, db: u64, keys: u64, expires: u64) -> std::io::Result<()> {
        self.buf.push(OP_SELECTDB);
        crate::write::len(&mut self.buf, db);
        self.buf.push(OP_RESIZEDB);
        crate::write::len(&mut self.buf, keys);
        crate::write::len(&mut self.buf, expires);
        self.flush_if_full()
    }

    pub fn function(&mut self, code: &[u8]) -> std::io::Result<()> {
        self.buf.push(OP_FUNCTION2);
        crate::write::string(&mut self.buf, code);
        self.flush_if_full()
    }

    /// A key. Refused (`InvalidInput`) when the value needs a newer RDB version than the
    /// file's (a hash with field TTLs in a Redis 7.0 file).
    pub fn key(
        &mut self,
        key: &[u8],
        value: &Object,
        expire_at: Option<u64>,
    ) -> std::io::Result<()> {
        let needs = crate::write::needs_version(value);
        if needs > self.version {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "key {:?} needs RDB version {needs} (hash field TTLs: Redis 7.4), the file is version {}",
                    String::from_utf8_lossy(key),
                    self.version
                ),
            ));
        }
        if let Some(at) = expire_at {
            self.buf.push(OP_EXPIRETIME_MS);
            self.buf.extend_from_slice(&at.to_le_bytes());
        }
        // The type byte comes before the key.
        self.buf.push(crate::write::type_of(value));
        crate::write::string_as(&mut self.buf, key, self.compress);
        crate::write::body(&mut self.buf, value, self.compress);
        self.flush_if_full()
    }

    /// `EOF` and the checksum; returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.buf.push(OP_EOF);
        self.crc = crate::crc64(self.crc, &self.buf);
        self.buf.extend_from_slice(&self.crc.to_le_bytes());
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.out)
    }
}
