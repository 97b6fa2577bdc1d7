//! A rewrite's tail: the records an incr received after the cut, carried into the next
//! incr a few MiB at a time (`crate::rewrite`'s step 3). Beside the rewrite's state
//! (`crate::state::Cut` holds it between the copy made while serving and the paused one),
//! below both: it knows files and records, nothing of shards.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The tail is read and written this much at a time (a longer record takes a longer piece).
pub(crate) const COPY_CHUNK: u64 = 8 << 20;

pub(crate) fn describe_io(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// The records of the old incr after the cut, on their way to the new incr.
pub(crate) struct Tail {
    pub(crate) old: PathBuf,
    pub(crate) new: PathBuf,
    pub(crate) out: std::fs::File,
    /// The old incr's bytes up to here are carried over (a record boundary).
    pub(crate) copied: u64,
    /// The last LSN the new base stands for: records up to it are left behind.
    pub(crate) last: u64,
    /// Pieces copied so far (for the log).
    pub(crate) pieces: u64,
    /// How much is read at a time ([`COPY_CHUNK`]; smaller in tests).
    pub(crate) chunk: u64,
}

impl Tail {
    /// Appends the records of the old incr from `copied` to `upto` (a record boundary)
    /// numbered above `last`, a few MiB at a time, and fdatasyncs the new incr (its length
    /// included: what a read of the data needs; its name was made durable when it was
    /// created).
    pub(crate) fn copy_to(mut self, upto: u64) -> Result<Tail, String> {
        use moon_aof::record::{HEADER_LEN, TRAILER_LEN};
        use std::os::unix::fs::FileExt;
        let old =
            std::fs::File::open(&self.old).map_err(|e| describe_io("reading", &self.old, e))?;
        let chunk = self.chunk.max(1);
        let too_long = || format!("the tail of {} is too long", self.old.display());
        let mut records = Vec::new();
        while self.copied < upto {
            let left = upto - self.copied;
            let mut data = vec![0u8; usize::try_from(left.min(chunk)).map_err(|_| too_long())?];
            old.read_exact_at(&mut data, self.copied)
                .map_err(|e| describe_io("reading", &self.old, e))?;
            // The piece ends where its last whole record ends, found from the records' length
            // fields alone. The scan below then always gets whole records: a record cut off
            // at a piece's end would read as damage to it, and it would search the rest of
            // the piece, offset by offset, for a valid record.
            let mut whole = 0usize;
            while let Some(len) = data.get(whole + 8..whole + HEADER_LEN) {
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let end = whole + HEADER_LEN + len + TRAILER_LEN;
                if end > data.len() {
                    break;
                }
                whole = end;
            }
            if whole == 0 {
                // One record longer than the piece: read that record whole (the scan refuses
                // it if its length field is damaged and runs past the tail).
                let mut header = [0u8; HEADER_LEN];
                old.read_exact_at(&mut header, self.copied)
                    .map_err(|e| describe_io("reading", &self.old, e))?;
                let len = u64::from(u32::from_le_bytes([
                    header[8], header[9], header[10], header[11],
                ]));
                let end = (HEADER_LEN as u64 + len + TRAILER_LEN as u64).min(left);
                data = vec![0u8; usize::try_from(end).map_err(|_| too_long())?];
                old.read_exact_at(&mut data, self.copied)
                    .map_err(|e| describe_io("reading", &self.old, e))?;
                whole = data.len();
            }
            data.truncate(whole);
            records.clear();
            let last = self.last;
            let scanned = moon_aof::reader::scan::<()>(&data, |lsn, payload, _| {
                if lsn > last {
                    // Read back from a valid record: it fits the format.
                    moon_aof::record::encode_record(lsn, payload, &mut records).map_err(|_| ())?;
                }
                Ok(())
            });
            match scanned {
                Ok(end) if end.end == moon_aof::reader::End::Clean => {}
                other => {
                    return Err(format!(
                        "the tail of {} (bytes {} to {upto}) is not clean: {other:?}",
                        self.old.display(),
                        self.copied
                    ))
                }
            }
            self.out
                .write_all(&records)
                .map_err(|e| describe_io("writing", &self.new, e))?;
            self.copied += whole as u64;
            self.pieces += 1;
        }
        self.out
            .sync_data()
            .map_err(|e| describe_io("fdatasyncing", &self.new, e))?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail copied in pieces smaller than some of its records (a record across a piece's
    /// end goes with the next piece; one longer than a piece takes a longer piece), in two
    /// calls, is exactly the records after the cut, in order.
    #[test]
    fn a_tail_copied_in_small_pieces_is_every_record_after_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.aof"), dir.path().join("new.aof"));
        let (mut log, mut want, mut boundaries) = (Vec::new(), Vec::new(), Vec::new());
        for lsn in 1..=60u64 {
            let payload = vec![lsn as u8; (lsn as usize * 37) % 300];
            moon_aof::record::encode_record(lsn, &payload, &mut log).unwrap();
            boundaries.push(log.len() as u64);
            if lsn > 10 {
                moon_aof::record::encode_record(lsn, &payload, &mut want).unwrap();
            }
        }
        std::fs::write(&old, &log).unwrap();
        // From the start of `old` into a fresh `new`, in 100-byte pieces; the cut at LSN 10.
        let fresh = || Tail {
            old: old.clone(),
            new: new.clone(),
            out: std::fs::File::create(&new).unwrap(),
            copied: 0,
            last: 10,
            pieces: 0,
            chunk: 100,
        };
        let tail = fresh().copy_to(boundaries[29]).unwrap();
        assert_eq!(tail.copied, boundaries[29]);
        let tail = tail.copy_to(log.len() as u64).unwrap();
        assert_eq!(tail.copied, log.len() as u64);
        assert!(tail.pieces > 20, "{} pieces", tail.pieces);
        assert_eq!(std::fs::read(&new).unwrap(), want);
        // A tail that does not end on a record boundary is refused.
        let mut cut_short = log.clone();
        cut_short.truncate(log.len() - 3);
        std::fs::write(&old, &cut_short).unwrap();
        assert!(fresh().copy_to(cut_short.len() as u64).is_err());
    }

    /// Values that hold whole, valid records of their own (a client may SET any bytes) are
    /// copied as they are, wherever a piece ends: a piece never ends inside a record, so the
    /// scan never goes looking for records in the middle of one (it did, review finding:
    /// that made healthy rewrites fail, and cost CRC work cubic in the cut-off length).
    #[test]
    fn records_inside_values_do_not_confuse_the_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.aof"), dir.path().join("new.aof"));
        let mut fake = Vec::new();
        for lsn in 900..910 {
            moon_aof::record::encode_record(lsn, b"fake", &mut fake).unwrap();
        }
        let (mut log, mut want) = (Vec::new(), Vec::new());
        for lsn in 1..=40u64 {
            let mut payload = fake.clone();
            payload.truncate((lsn as usize * 53) % fake.len());
            moon_aof::record::encode_record(lsn, &payload, &mut log).unwrap();
            if lsn > 5 {
                moon_aof::record::encode_record(lsn, &payload, &mut want).unwrap();
            }
        }
        std::fs::write(&old, &log).unwrap();
        for chunk in [17, 64, 100, 129, 333] {
            let tail = Tail {
                old: old.clone(),
                new: new.clone(),
                out: std::fs::File::create(&new).unwrap(),
                copied: 0,
                last: 5,
                pieces: 0,
                chunk,
            };
            let tail = tail.copy_to(log.len() as u64).unwrap();
            assert_eq!(tail.copied, log.len() as u64, "chunk {chunk}");
            assert_eq!(std::fs::read(&new).unwrap(), want, "chunk {chunk}");
        }
    }
}
