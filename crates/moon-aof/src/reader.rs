//! Reading a log: records in order, and what the end of the file means.
//!
//! The end of a log is one of:
//! - **clean**: the last record ends exactly at the end of the file;
//! - **zero-filled**: a header of zeros (pre-allocated or padded space) — the log ends there;
//! - **torn tail**: the last record is cut short or its checksum is wrong, and nothing valid
//!   follows. The write that produced it was never acknowledged (a reply waits for the whole
//!   write), so dropping it loses nothing acknowledged. Replay stops there and the file is
//!   truncated to the last good record.
//!
//! A bad record (wrong checksum, impossible length, zero or non-increasing LSN) **followed by a
//! valid record** is corruption: bytes inside acknowledged history changed. Replay refuses it.

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;

use crate::record::{decode_payload, HEADER_LEN, MAX_PAYLOAD, OVERHEAD, TRAILER_LEN};

/// A log file mapped read-only, whose pages a reader gives back as it goes
/// ([`MappedLog::release_before`]): reading a log of any size keeps a bounded part of it in
/// the process's memory (the pages stay in the page cache, outside the process's RSS). A
/// missing or empty file is an empty log.
///
/// Safety of the mapping: only Moon's own logs are mapped, under the data directory's lock
/// (the server's, or moon-cli's), so no other process truncates them while mapped; this
/// crate truncates a file only after its mapping is gone.
///
/// A file up to [`READ_WHOLE`] is read into memory instead: a read error is then an error, as
/// it always was, where a mapped page the disk cannot deliver is a SIGBUS. A failing disk
/// (the rebuild after a failed log) meets it on small logs as before; only a log larger than
/// the bound trades that for bounded memory.
pub struct MappedLog {
    map: Option<memmap2::Mmap>,
    owned: Vec<u8>,
    released: Cell<usize>,
}

/// Files up to this size are read whole rather than mapped.
pub const READ_WHOLE: u64 = 64 << 20;

/// Bytes of records replayed by this process so far (every file, every shard): the progress
/// INFO shows while the server loads (`loading_loaded_bytes`).
pub static REPLAYED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes read past the last release before the next one.
const RELEASE_STEP: usize = 16 << 20;

impl MappedLog {
    pub fn open(path: &Path) -> std::io::Result<MappedLog> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(MappedLog {
                    map: None,
                    owned: Vec::new(),
                    released: Cell::new(0),
                })
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len <= READ_WHOLE {
            let mut owned = Vec::with_capacity(len as usize);
            (&file).read_to_end(&mut owned)?;
            return Ok(MappedLog {
                map: None,
                owned,
                released: Cell::new(0),
            });
        }
        // SAFETY: see the type's docs: nothing truncates the file while it is mapped.
        let map = if len == 0 {
            None
        } else {
            let map = unsafe { memmap2::Mmap::map(&file)? };
            let _ = map.advise(memmap2::Advice::Sequential);
            Some(map)
        };
        Ok(MappedLog {
            map,
            owned: Vec::new(),
            released: Cell::new(0),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&self.owned)
    }

    /// The reader is at `offset` and will not look before it again: every whole page more
    /// than [`RELEASE_STEP`] behind is dropped from the process's memory.
    pub fn release_before(&self, offset: u64) {
        let Some(map) = &self.map else { return };
        let from = self.released.get();
        let upto = (offset as usize).min(map.len()) & !4095;
        if upto < from + RELEASE_STEP {
            return;
        }
        // SAFETY: a read-only file mapping: dropped pages read back from the file if touched
        // again, and nothing before `offset` is borrowed anymore (the caller's promise).
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, upto - from)
        };
        self.released.set(upto);
    }
}

/// CRC-32 of the first `len` bytes of `path`, read in bounded chunks.
pub fn crc32_prefix(path: &Path, len: u64) -> std::io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    if len == 0 {
        return Ok(h.finalize());
    }
    let mut f = std::fs::File::open(path)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Clean,
    /// Zeros from `offset` on.
    ZeroFilled {
        offset: u64,
        bytes: u64,
    },
    /// An incomplete or unverifiable last record from `offset` on.
    TornTail {
        offset: u64,
        bytes: u64,
    },
}

/// A bad record with valid records after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub offset: u64,
    pub reason: String,
}

/// The result of a scan that did not find corruption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Bytes of complete, valid records from the start of the file.
    pub valid_len: u64,
    pub records: u64,
    pub last_lsn: u64,
    pub end: End,
}

fn u64_at(d: &[u8], p: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[p..p + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(d: &[u8], p: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[p..p + 4]);
    u32::from_le_bytes(b)
}

/// Checks the record at `p`: returns its total length if it is complete and its checksum holds
/// (taken as holding for a record that ends within the first `checked` bytes: see
/// [`Bounds::checked`]).
fn valid_at(d: &[u8], p: usize, checked: usize) -> Option<usize> {
    if d.len() - p < OVERHEAD {
        return None;
    }
    let len = u32_at(d, p + 8) as usize;
    if len > MAX_PAYLOAD || d.len() - p - OVERHEAD < len {
        return None;
    }
    let end = p + HEADER_LEN + len;
    if end + TRAILER_LEN <= checked {
        return Some(len + OVERHEAD);
    }
    let crc = u32_at(d, end);
    (crc32fast::hash(&d[p..end]) == crc).then_some(len + OVERHEAD)
}

/// Whether a valid record with an LSN above `last_lsn` starts anywhere after `from`, however
/// far above: a long-lived shard's LSNs pass 2^32 and more, and a damaged first record of a
/// file must still be told from a torn tail. Only runs when a bad record was found.
fn valid_record_after(d: &[u8], from: usize, last_lsn: u64) -> Option<usize> {
    let mut p = from;
    while p + OVERHEAD <= d.len() {
        let lsn = u64_at(d, p);
        if lsn > last_lsn && valid_at(d, p, 0).is_some() {
            return Some(p);
        }
        p += 1;
    }
    None
}

/// Walks the records of `data`, calling `on_record(lsn, payload, offset)` for each valid one in
/// order. Stops at the end of the log (see the module docs). An error returned by `on_record`
/// stops the scan and is returned as `Err(Err(e))`; corruption as `Err(Ok(c))`.
pub fn scan<E>(
    data: &[u8],
    on_record: impl FnMut(u64, &[u8], u64) -> Result<(), E>,
) -> Result<ScanEnd, Result<Corruption, E>> {
    scan_from(data, 0, on_record)
}

/// [`scan`] of a file whose records follow LSN `after_lsn` (an incr's follow its base's last
/// one): its first record must be above it, and a damaged first record followed by valid ones
/// is corruption, never a torn tail at offset 0.
pub fn scan_from<E>(
    data: &[u8],
    after_lsn: u64,
    on_record: impl FnMut(u64, &[u8], u64) -> Result<(), E>,
) -> Result<ScanEnd, Result<Corruption, E>> {
    scan_checked(data, after_lsn, 0, on_record)
}

/// [`scan_from`], the checksums of the records within the first `checked` bytes taken as
/// holding ([`Bounds::checked`]).
fn scan_checked<E>(
    data: &[u8],
    after_lsn: u64,
    checked: u64,
    mut on_record: impl FnMut(u64, &[u8], u64) -> Result<(), E>,
) -> Result<ScanEnd, Result<Corruption, E>> {
    let checked = usize::try_from(checked)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let mut p = 0usize;
    let mut last_lsn = after_lsn;
    let mut records = 0u64;
    loop {
        let rest = data.len() - p;
        let done = |end: End| ScanEnd {
            valid_len: p as u64,
            records,
            last_lsn,
            end,
        };
        if rest == 0 {
            return Ok(done(End::Clean));
        }
        let problem: String;
        if data[p..].iter().all(|&b| b == 0) {
            return Ok(done(End::ZeroFilled {
                offset: p as u64,
                bytes: rest as u64,
            }));
        }
        if rest >= HEADER_LEN && u64_at(data, p) == 0 {
            problem = "zero LSN".into();
        } else if rest < OVERHEAD {
            problem = "record cut short".into();
        } else {
            let lsn = u64_at(data, p);
            match valid_at(data, p, checked) {
                Some(total) if lsn > last_lsn => {
                    on_record(
                        lsn,
                        &data[p + HEADER_LEN..p + total - TRAILER_LEN],
                        p as u64,
                    )
                    .map_err(Err)?;
                    last_lsn = lsn;
                    records += 1;
                    p += total;
                    continue;
                }
                Some(_) => problem = format!("LSN {lsn} does not follow LSN {last_lsn}"),
                None => {
                    let len = u32_at(data, p + 8) as usize;
                    problem = if len > MAX_PAYLOAD || rest - OVERHEAD < len {
                        "record cut short or length field damaged".into()
                    } else {
                        "checksum mismatch".into()
                    };
                }
            }
        }
        return match valid_record_after(data, p + 1, last_lsn) {
            Some(next) => Err(Ok(Corruption {
                offset: p as u64,
                reason: format!("{problem}; a valid record follows at offset {next}"),
            })),
            None => Ok(done(End::TornTail {
                offset: p as u64,
                bytes: rest as u64,
            })),
        };
    }
}

/// What replaying one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    /// Bytes of valid records (the file's size after any truncation).
    pub bytes: u64,
    pub last_lsn: u64,
    pub elapsed_ms: u128,
    /// Set when a torn tail or zero padding was cut off: (offset, bytes dropped).
    pub truncated: Option<(u64, u64)>,
    /// Set when replay stopped at the caller's `stop_lsn` (see [`replay_file_until`]): the
    /// offset of that record and the bytes from there to the end, cut off the file.
    pub stopped: Option<(u64, u64)>,
}

/// Where a replay starts and ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// The LSN the file's records follow (0: none): see [`scan_from`].
    pub after_lsn: u64,
    /// End the log before the record with this LSN (see [`replay_file_until`]).
    pub stop_lsn: Option<u64>,
    /// The first bytes of the file whose records' checksums were checked a moment ago
    /// (recovery's first pass, `moon_shard::recovery::scan_log`, walks every record of the
    /// same file, which nothing writes until recovery ends): each record is checked once per
    /// start, not twice. Records past them, and any search for a valid record after a bad
    /// one, are checked as always. 0: check every record.
    pub checked: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AofError {
    #[error("cannot read AOF file {file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("AOF file {file} is corrupt at offset {offset} ({reason}); refusing to start to avoid data loss. Inspect it with `moon-cli check-aof --dir <dir>` (add --fix to truncate). See docs/runbooks/aof-corruption.md")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// Replays one log file: every record's commands (one, or a group's) go to `apply` in order. A
/// torn tail or zero padding is cut off the file (the caller logs the report's `truncated`);
/// corruption is an error and the file is left untouched. A missing file is an empty log.
pub fn replay_file(
    path: &Path,
    apply: impl FnMut(u64, Vec<Vec<Bytes>>),
) -> Result<ReplayReport, AofError> {
    replay(path, apply, Bounds::default(), true)
}

/// [`replay_file`] within `bounds`: the records follow `after_lsn`, and the log ends before
/// the record with LSN `stop_lsn` (if any): that record and everything after it are not
/// applied and are cut off the file ([`ReplayReport::stopped`]). Recovery uses it to end a
/// shard's log at a cross-shard transaction that cannot be applied whole (see
/// `moon_shard::recovery::recovery_plan`).
pub fn replay_file_until(
    path: &Path,
    bounds: Bounds,
    apply: impl FnMut(u64, Vec<Vec<Bytes>>),
) -> Result<ReplayReport, AofError> {
    replay(path, apply, bounds, true)
}

/// [`replay_file_until`] for tools that must not change the file: a torn tail or a stop is
/// reported but left in place.
pub fn replay_readonly(
    path: &Path,
    bounds: Bounds,
    apply: impl FnMut(u64, Vec<Vec<Bytes>>),
) -> Result<ReplayReport, AofError> {
    replay(path, apply, bounds, false)
}

/// Why a replay's scan ended early.
enum Halt {
    /// A valid record whose payload does not decode, at this offset.
    Undecodable(u64),
    /// The caller's stop LSN, at this offset.
    Stop(u64),
}

/// A unit whose records began but whose last record has not come yet (see
/// [`crate::record::append_unit`]).
struct OpenUnit {
    offset: u64,
    cmds: Vec<Vec<Bytes>>,
}

fn replay(
    path: &Path,
    mut apply: impl FnMut(u64, Vec<Vec<Bytes>>),
    bounds: Bounds,
    truncate: bool,
) -> Result<ReplayReport, AofError> {
    let started = Instant::now();
    let io = |source| AofError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mapped = MappedLog::open(path).map_err(io)?;
    let data = mapped.bytes();
    let file_len = data.len() as u64;
    let (mut records, mut last_lsn) = (0u64, bounds.after_lsn);
    // The end of the last complete unit: what the file keeps if it ends inside a unit.
    let mut applied_len = 0u64;
    let mut open: Option<OpenUnit> = None;
    let mut stop_offset = None;
    let result = scan_checked(
        data,
        bounds.after_lsn,
        bounds.checked,
        |lsn, payload, offset| {
            mapped.release_before(offset);
            REPLAYED_BYTES.fetch_add(
                (payload.len() + OVERHEAD) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            if bounds.stop_lsn.is_some_and(|stop| lsn >= stop) {
                // Keep scanning without applying: the dropped records' LSNs were handed out
                // (some maybe acknowledged under everysec) and must never be reused. A unit the
                // stop cuts through goes whole.
                stop_offset.get_or_insert(open.as_ref().map_or(offset, |u| u.offset));
                last_lsn = lsn;
                return Ok(());
            }
            let Some(mut cmds) = decode_payload(payload) else {
                return Err(Halt::Undecodable(offset));
            };
            last_lsn = lsn;
            let end = offset + (payload.len() + OVERHEAD) as u64;
            if crate::record::is_continued(payload) {
                cmds.pop();
                match &mut open {
                    Some(unit) => unit.cmds.append(&mut cmds),
                    None => open = Some(OpenUnit { offset, cmds }),
                }
                return Ok(());
            }
            if let Some(mut unit) = open.take() {
                unit.cmds.append(&mut cmds);
                cmds = unit.cmds;
            }
            apply(lsn, cmds);
            records += 1;
            applied_len = end;
            Ok(())
        },
    );
    let result = match (result, stop_offset) {
        // Damage after the end recovery chose is dropped with it.
        (Ok(_) | Err(Ok(_)), Some(offset)) => Err(Err(Halt::Stop(offset))),
        (r, _) => r,
    };
    // The mapping goes before anything truncates the file (a mapped page past the new end
    // would fault); the checksum below reads the file itself.
    drop(mapped);
    let cut = |offset: u64| -> Result<(), AofError> {
        if truncate {
            let f = OpenOptions::new().write(true).open(path).map_err(io)?;
            f.set_len(offset).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        Ok(())
    };
    let report = |bytes: u64, truncated, stopped| -> Result<ReplayReport, AofError> {
        Ok(ReplayReport {
            records,
            bytes,
            last_lsn,
            elapsed_ms: started.elapsed().as_millis(),
            truncated,
            stopped,
        })
    };
    let end = match result {
        Ok(end) => end,
        Err(Err(Halt::Stop(offset))) => {
            cut(offset)?;
            return report(offset, None, Some((offset, file_len - offset)));
        }
        Err(Ok(c)) => {
            return Err(AofError::Corrupt {
                file: path.to_path_buf(),
                offset: c.offset,
                reason: c.reason,
            })
        }
        Err(Err(Halt::Undecodable(offset))) => {
            return Err(AofError::Corrupt {
                file: path.to_path_buf(),
                offset,
                reason: "the payload is neither a RESP command nor a MULTI/EXEC group".into(),
            })
        }
    };
    // A unit whose last record never came was never acknowledged (its reply waits for all of
    // it): it is a torn tail, from its first record on.
    let tail_from = match (&open, end.end) {
        (Some(unit), _) => Some(unit.offset),
        (None, End::Clean) => None,
        (None, End::ZeroFilled { offset, .. } | End::TornTail { offset, .. }) => Some(offset),
    };
    let Some(offset) = tail_from else {
        return report(end.valid_len, None, None);
    };
    debug_assert!(open.is_some() || offset == applied_len);
    cut(offset)?;
    report(offset, Some((offset, file_len - offset)), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::append_command_record;

    fn log(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for lsn in 1..=n {
            let args = vec![
                Bytes::from("SET"),
                Bytes::from(format!("key{lsn}")),
                Bytes::from(vec![b'v'; lsn as usize * 3]),
            ];
            append_command_record(lsn, &args, &mut out).unwrap();
            ends.push(out.len());
        }
        (out, ends)
    }

    fn count(data: &[u8]) -> Result<ScanEnd, Corruption> {
        scan::<()>(data, |_, _, _| Ok(())).map_err(|e| e.unwrap_or_else(|_| unreachable!()))
    }

    proptest::proptest! {
        /// A replay told that the first pass checked the records up to where that pass's scan
        /// stopped applies, reports and refuses exactly what a replay checking every record
        /// does, on a log damaged anywhere (a byte changed, or the file cut short): the
        /// prefix skips only checksums that were just found to hold.
        #[test]
        fn a_replay_trusting_the_first_pass_does_what_a_full_one_does(
            n in 1u64..12,
            at in 0usize..2000,
            flip in 1u8..=255,
            cut in proptest::bool::ANY,
            after_lsn in 0u64..3,
        ) {
            let (mut data, _) = log(n);
            let at = at % data.len();
            if cut {
                data.truncate(at);
            } else {
                data[at] ^= flip;
            }
            let checked = match scan::<()>(&data, |_, _, _| Ok(())) {
                Ok(end) => end.valid_len,
                Err(Ok(c)) => c.offset,
                Err(Err(())) => 0,
            };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log.aof");
            std::fs::write(&path, &data).unwrap();
            let run = |checked: u64| {
                let mut applied = Vec::new();
                let bounds = Bounds { after_lsn, stop_lsn: None, checked };
                let report = replay_readonly(&path, bounds, |lsn, cmds| applied.push((lsn, cmds)))
                    .map(|r| (r.records, r.bytes, r.last_lsn, r.truncated))
                    .map_err(|e| e.to_string());
                (applied, report)
            };
            proptest::prop_assert_eq!(run(checked), run(0));
        }
    }

    /// The prefix is trusted, not re-read: a checksum damaged inside it goes unnoticed, and
    /// one damaged past it is found (the first pass would have stopped there).
    #[test]
    fn only_checksums_within_the_checked_prefix_are_skipped() {
        let (mut data, ends) = log(3);
        let last = data.len() - 1;
        data[ends[0] - 1] ^= 1;
        data[last] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.aof");
        std::fs::write(&path, &data).unwrap();
        let bounds = Bounds {
            checked: ends[1] as u64,
            ..Bounds::default()
        };
        let mut applied = Vec::new();
        let report = replay_readonly(&path, bounds, |lsn, _| applied.push(lsn)).unwrap();
        assert_eq!(applied, vec![1, 2]);
        assert_eq!(
            report.truncated,
            Some((ends[1] as u64, (data.len() - ends[1]) as u64))
        );
    }

    #[test]
    fn a_stop_lsn_ends_the_log_there_and_keeps_counting_lsns() {
        let (data, ends) = log(6);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incr.aof");
        std::fs::write(&path, &data).unwrap();
        let mut applied = Vec::new();
        let report = replay_file_until(&path, stop(4), |lsn, _| applied.push(lsn)).unwrap();
        assert_eq!(applied, [1, 2, 3]);
        assert_eq!(
            report.stopped,
            Some((ends[2] as u64, (data.len() - ends[2]) as u64))
        );
        assert_eq!(
            report.last_lsn, 6,
            "dropped LSNs are never handed out again"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[2] as u64);
        // Damage after the stop goes with it instead of refusing to start.
        let mut damaged = data.clone();
        let at = ends[4] + 13;
        damaged[at] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let report = replay_file_until(&path, stop(4), |_, _| {}).unwrap();
        assert_eq!(report.stopped.map(|s| s.0), Some(ends[2] as u64));
    }

    #[test]
    fn truncated_at_every_offset_replays_exactly_the_complete_records() {
        let (data, ends) = log(6);
        let dir = tempfile::tempdir().unwrap();
        for cut in 0..=data.len() {
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            let valid_len = ends
                .iter()
                .copied()
                .filter(|&e| e <= cut)
                .max()
                .unwrap_or(0);
            let path = dir.path().join("t.aof");
            std::fs::write(&path, &data[..cut]).unwrap();
            let mut seen = Vec::new();
            let r = replay_file(&path, |lsn, cmd| seen.push((lsn, cmd))).unwrap();
            assert_eq!(r.records as usize, complete, "cut at {cut}");
            assert_eq!(seen.len(), complete);
            assert!(seen
                .iter()
                .enumerate()
                .all(|(i, (lsn, c))| *lsn == i as u64 + 1 && c[0][1] == format!("key{}", i + 1)));
            assert_eq!(
                std::fs::metadata(&path).unwrap().len() as usize,
                valid_len,
                "file truncated to the complete records (cut {cut})"
            );
            assert_eq!(r.truncated.is_some(), cut != valid_len);
        }
    }

    #[test]
    fn flipped_bit_in_a_middle_record_is_corruption_with_offset() {
        let (mut data, ends) = log(5);
        let victim_start = ends[1];
        data[victim_start + 14] ^= 0x04; // inside record 3's payload
        match count(&data) {
            Err(c) => {
                assert_eq!(c.offset as usize, victim_start);
                assert!(c.reason.contains("checksum mismatch"), "{}", c.reason);
            }
            Ok(end) => panic!("not detected: {end:?}"),
        }
        // A damaged length field in the middle is corruption too.
        let (mut data, ends) = log(5);
        data[ends[1] + 9] = 0x7f;
        assert_eq!(count(&data).unwrap_err().offset as usize, ends[1]);
        // So is a zeroed header in the middle.
        let (mut data, ends) = log(5);
        data[ends[1]..ends[1] + 12].fill(0);
        assert_eq!(count(&data).unwrap_err().offset as usize, ends[1]);
        // replay_file names the file and leaves it untouched.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.aof");
        std::fs::write(&path, &data).unwrap();
        let err = replay_file(&path, |_, _| {}).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains(&format!("offset {}", ends[1]))
                && err.contains("moon-cli check-aof"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn bad_checksum_on_the_last_record_is_a_torn_tail() {
        let (mut data, ends) = log(4);
        let last = data.len() - 1;
        data[last] ^= 0xff;
        let end = count(&data).unwrap();
        assert_eq!(end.records, 3);
        assert_eq!(
            end.end,
            End::TornTail {
                offset: ends[2] as u64,
                bytes: (ends[3] - ends[2]) as u64
            }
        );
    }

    #[test]
    fn zero_filled_tail_is_the_end_of_the_log() {
        let (mut data, ends) = log(3);
        data.extend(vec![0u8; 4096]);
        let end = count(&data).unwrap();
        assert_eq!(end.records, 3);
        assert_eq!(
            end.end,
            End::ZeroFilled {
                offset: ends[2] as u64,
                bytes: 4096
            }
        );
        // A few zero bytes (less than a header) too.
        let (mut data, _) = log(3);
        data.extend([0u8; 5]);
        assert!(matches!(count(&data).unwrap().end, End::ZeroFilled { .. }));
    }

    #[test]
    fn lsns_must_increase() {
        let mut data = Vec::new();
        append_command_record(5, &[Bytes::from("PING")], &mut data).unwrap();
        append_command_record(5, &[Bytes::from("PING")], &mut data).unwrap();
        append_command_record(6, &[Bytes::from("PING")], &mut data).unwrap();
        assert!(count(&data).unwrap_err().reason.contains("does not follow"));
    }

    #[test]
    fn missing_file_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let r = replay_file(&dir.path().join("nope"), |_, _| {}).unwrap();
        assert_eq!((r.records, r.bytes, r.truncated), (0, 0, None));
    }

    fn stop(lsn: u64) -> Bounds {
        Bounds {
            after_lsn: 0,
            stop_lsn: Some(lsn),
            checked: 0,
        }
    }

    /// Issue 22, 2: a long-lived shard's LSNs pass 2^32. A damaged first record of a file
    /// followed by valid ones is corruption however far the LSNs are from 0, and a file whose
    /// scan starts from the LSN before it refuses a first record at or below it.
    #[test]
    fn a_damaged_first_record_is_corruption_whatever_the_lsns() {
        let base = 5_000_000_000u64;
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for lsn in base + 1..=base + 1001 {
            append_command_record(
                lsn,
                &[Bytes::from("SET"), Bytes::from(format!("k{lsn}"))],
                &mut data,
            )
            .unwrap();
            ends.push(data.len());
        }
        let mut damaged = data.clone();
        damaged[20] ^= 0x01;
        for after in [0, base] {
            let err = scan_from::<()>(&damaged, after, |_, _, _| Ok(()))
                .map_err(|e| e.unwrap_or_else(|_| unreachable!()))
                .unwrap_err();
            assert_eq!(err.offset, 0, "from {after}");
            assert!(
                err.reason.contains(&format!("offset {}", ends[0])),
                "{}",
                err.reason
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incr.aof");
        std::fs::write(&path, &damaged).unwrap();
        let bounds = Bounds {
            after_lsn: base,
            ..Bounds::default()
        };
        assert!(matches!(
            replay_file_until(&path, bounds, |_, _| {}),
            Err(AofError::Corrupt { offset: 0, .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "left untouched");
        // Whole: 1,001 records from the base's LSN on; a record at or below it is refused.
        std::fs::write(&path, &data).unwrap();
        let r = replay_file_until(&path, bounds, |_, _| {}).unwrap();
        assert_eq!((r.records, r.last_lsn), (1001, base + 1001));
        let later = Bounds {
            after_lsn: base + 1,
            ..Bounds::default()
        };
        assert!(matches!(
            replay_file_until(&path, later, |_, _| {}),
            Err(AofError::Corrupt { offset: 0, .. })
        ));
    }

    /// A unit over continued records is applied once whole, as one group; cut anywhere inside
    /// it (a crash mid-write), it is a torn tail from its first record: nothing of it applied,
    /// the file cut back to the unit's start, and its LSNs never handed out again.
    #[test]
    fn a_unit_spanning_records_applies_whole_or_not_at_all() {
        let member = |i: usize| Bytes::from(format!("member-{i:05}"));
        let unit: Vec<Vec<Bytes>> = (0..40)
            .map(|c| {
                let mut cmd = vec![Bytes::from("SREM"), Bytes::from("s")];
                cmd.extend((0..10).map(|i| member(c * 10 + i)));
                cmd
            })
            .collect();
        let mut data = Vec::new();
        append_command_record(1, &[Bytes::from("SET"), Bytes::from("before")], &mut data).unwrap();
        let unit_start = data.len();
        let used = crate::record::append_unit(2, &unit, 1024, &mut data).unwrap();
        assert!(used > 3, "{used} records");
        let unit_end = data.len();
        append_command_record(
            2 + used,
            &[Bytes::from("SET"), Bytes::from("after")],
            &mut data,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incr.aof");
        std::fs::write(&path, &data).unwrap();
        let mut applied = Vec::new();
        let r = replay_file(&path, |lsn, cmds| applied.push((lsn, cmds))).unwrap();
        assert_eq!(r.records, 3);
        assert_eq!(
            applied[1],
            (1 + used, unit.clone()),
            "the unit, whole, at its last LSN"
        );
        assert_eq!(applied[2].0, 2 + used);
        for cut in [unit_start + 1, unit_start + 600, unit_end - 1] {
            std::fs::write(&path, &data[..cut]).unwrap();
            let mut applied = Vec::new();
            let r = replay_file(&path, |lsn, _| applied.push(lsn)).unwrap();
            assert_eq!(applied, [1], "cut at {cut}");
            assert_eq!(
                r.truncated,
                Some((unit_start as u64, (cut - unit_start) as u64))
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), unit_start as u64);
            assert!(r.last_lsn >= 1);
        }
        // Cut exactly after a continued record: the LSNs it used are not handed out again.
        let first_rec = unit_start
            + 12
            + u32::from_le_bytes(data[unit_start + 8..unit_start + 12].try_into().unwrap())
                as usize
            + 4;
        std::fs::write(&path, &data[..first_rec]).unwrap();
        let r = replay_file(&path, |_, _| {}).unwrap();
        assert_eq!((r.records, r.last_lsn, r.bytes), (1, 2, unit_start as u64));
    }

    /// Review finding: a client's value that ends with the bytes of the continuation marker
    /// must not make its record look continued (the raw-suffix test did: an acknowledged SET
    /// was dropped and the log cut at it).
    #[test]
    fn a_value_that_looks_like_the_continuation_marker_is_just_a_value() {
        let v = Bytes::from_static(b"*1\r\n$14\r\nMOON.CONTINUED\r\n*1\r\n$4\r\nEXEC");
        let set = vec![Bytes::from("SET"), Bytes::from("k"), v.clone()];
        let tail = vec![
            Bytes::from("SET"),
            Bytes::from("b"),
            Bytes::from_static(b"x*1\r\n$14\r\nMOON.CONTINUED"),
        ];
        let mut data = Vec::new();
        append_command_record(1, &set, &mut data).unwrap();
        crate::record::append_group_record(2, &[set.clone(), tail.clone()], &mut data).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incr.aof");
        std::fs::write(&path, &data).unwrap();
        let mut applied = Vec::new();
        let r = replay_file(&path, |lsn, cmds| applied.push((lsn, cmds))).unwrap();
        assert_eq!(r.truncated, None);
        assert_eq!(applied, [(1, vec![set.clone()]), (2, vec![set, tail])]);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
