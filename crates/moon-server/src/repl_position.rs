//! Where a replica stands in its primary's stream, kept beside its logs (`replication.moon`),
//! so that a restart — clean or after a kill — continues with PSYNC instead of copying
//! everything again.
//!
//! **The problem.** A replica applies its primary's stream as a client's commands, each write
//! logged in its shard's AOF (`replica.rs`). After a kill every shard's log holds what it
//! applied, but no record says which stream offset that was, and the shards may stand at
//! different points of the batch the link was applying. PSYNC needs one offset at which every
//! shard holds exactly the stream's prefix.
//!
//! **The checkpoint.** Once a batch of the stream has been applied — every reply back, so each
//! of its records handed to the kernel — and before the next one starts, the link writes here
//! the offset reached, the stream's database and each shard's written LSN
//! ([`moon_aof::LogProgress`]): one `pwrite` of a few hundred bytes, checksummed, in place.
//! That happens before any ACK of the offset leaves, so whatever the primary counts as
//! received here is at or before the checkpoint. It is not fsynced: a kill keeps what the
//! kernel holds, and after a reboot the place is used only where it cuts nothing.
//!
//! **The restart.** With `replicaof` set, recovery ends each shard's log at the LSN the
//! checkpoint recorded (`persistence.rs`, through `moon_shard::recovery::recovery_plan_from`):
//! what a kill left after it belongs to a batch the primary was never told about, and the
//! primary sends it again. Every shard then holds exactly the stream up to the checkpoint's
//! offset, and the link asks for `PSYNC <replid> <offset+1>`. The checkpoint is dropped, and
//! nothing cut (a full synchronisation follows), when it cannot be exact: after a reboot,
//! unless every log ends exactly at its LSN (a power cut may have taken an unsynced tail, or
//! left an older checkpoint than the logs' fsynced records, which FACK counted); a base that
//! covers records past it; a cross-shard transaction whose recovery must end a log earlier
//! still; a different shard count; a damaged file.
//!
//! **When it must not cut.** Only the primary's commands may follow a checkpoint in the logs:
//! it is written only while the replica is read-only, and the file is removed (durably)
//! whenever `replicaof`, `replica-read-only` or `appendonly` changes, before a client's write
//! is accepted under the new setting (`Shared::update_config`).
//!
//! A primary's clean shutdown writes its stream offset here (`primary <offset>`), which its
//! next start continues; that form is removed once read.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use moon_aof::LogProgress;

/// The file, in the data directory.
pub const FILE: &str = "replication.moon";

/// What a previous run left in [`FILE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    Replica(Position),
    /// A primary's stream offset at its clean shutdown.
    Primary(u64),
}

/// A replica's place in its primary's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub replid: String,
    /// The stream offset every shard's log holds exactly (up to `lsns`).
    pub offset: u64,
    /// The database the stream had selected there.
    pub db: usize,
    /// Each shard's log ends at this LSN for `offset` to hold; `None` in the form an older
    /// version wrote at a clean shutdown (its logs end exactly there).
    pub lsns: Option<Vec<u64>>,
    /// Written during this boot of the machine: nothing handed to the kernel since can have
    /// been lost (only a reboot — a power cut — loses an unsynced tail).
    pub same_boot: bool,
}

/// This boot of the machine (Linux's `boot_id`), `-` where it cannot be read.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "-".into())
}

/// The text with its checksum line.
fn sealed(body: String) -> String {
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body}crc {crc:08x}\n")
}

/// The replica form: what [`Checkpoints::save`] writes.
fn render_replica(replid: &str, offset: u64, db: usize, lsns: &[u64]) -> String {
    let lsns: Vec<String> = lsns.iter().map(u64::to_string).collect();
    sealed(format!(
        "moon-replication 2\nreplica {replid} {offset} {db} {}\nlsns {}\n",
        boot_id(),
        lsns.join(" ")
    ))
}

/// Reads [`FILE`] in `dir`: `None` when there is none, or (with a warning) when it is not one
/// this version can use.
pub fn read(dir: &Path) -> Option<Saved> {
    let path = dir.join(FILE);
    let text = std::fs::read(&path).ok()?;
    let parsed = parse(&text);
    if parsed.is_none() {
        tracing::warn!(
            "{} is not a replication position (damaged, or of another version); ignored: a full resynchronisation follows",
            path.display()
        );
    }
    parsed
}

fn parse(bytes: &[u8]) -> Option<Saved> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split_inclusive('\n');
    match lines.next()? {
        "moon-replication 1\n" => parse_v1(lines.next()?.trim_end_matches('\n')),
        "moon-replication 2\n" => {
            // The lines up to `crc`, whose checksum it is; what follows it is what an earlier,
            // longer checkpoint left in place.
            let mut body = String::from("moon-replication 2\n");
            for line in lines {
                if let Some(crc) = line.strip_prefix("crc ") {
                    let crc = u32::from_str_radix(crc.trim_end_matches('\n'), 16).ok()?;
                    if crc != crc32fast::hash(body.as_bytes()) {
                        return None;
                    }
                    return parse_v2(&body);
                }
                body.push_str(line);
            }
            None
        }
        _ => None,
    }
}

fn valid_replid(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_v1(line: &str) -> Option<Saved> {
    if let Some(offset) = line.strip_prefix("primary ") {
        return offset.parse().ok().map(Saved::Primary);
    }
    let w: Vec<&str> = line.split(' ').collect();
    match w.as_slice() {
        [replid, offset, db] if valid_replid(replid) => Some(Saved::Replica(Position {
            replid: replid.to_string(),
            offset: offset.parse().ok()?,
            db: db.parse().ok()?,
            lsns: None,
            same_boot: false,
        })),
        _ => None,
    }
}

fn parse_v2(body: &str) -> Option<Saved> {
    let mut lines = body.lines().skip(1);
    let first: Vec<&str> = lines.next()?.split(' ').collect();
    match first.as_slice() {
        ["primary", offset] => offset.parse().ok().map(Saved::Primary),
        ["replica", replid, offset, db, boot] if valid_replid(replid) => {
            let lsns = lines
                .next()?
                .strip_prefix("lsns")?
                .split_whitespace()
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            Some(Saved::Replica(Position {
                replid: replid.to_string(),
                offset: offset.parse().ok()?,
                db: db.parse().ok()?,
                lsns: Some(lsns),
                same_boot: *boot != "-" && *boot == boot_id(),
            }))
        }
        _ => None,
    }
}

/// Removes [`FILE`] from `dir`, durably (its directory fsynced), if it is there.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => moon_manifest::fsio::fsync_parent(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The replica link's checkpoints ([`FILE`]), and each shard's log progress they record.
/// Lives in `Shared` behind a mutex, which [`crate::shared::Shared::update_config`] holds
/// while it removes the file, so that a checkpoint is never written after a change of role.
pub struct Checkpoints {
    dir: Option<PathBuf>,
    /// Open once a checkpoint was written; rewritten in place.
    file: Option<File>,
    /// Whether the file's directory entry is known to be durable.
    entry_synced: bool,
    logs: Vec<Option<LogProgress>>,
    /// Counts the changes of role ([`Checkpoints::forget`]): a link saves only under the
    /// epoch it started in.
    epoch: u64,
}

impl Checkpoints {
    /// For a server whose logs live in `dir` (`None`: no AOF, nothing is ever written).
    pub fn new(dir: Option<PathBuf>, shards: usize) -> Checkpoints {
        Checkpoints {
            dir,
            file: None,
            entry_synced: false,
            logs: vec![None; shards],
            epoch: 0,
        }
    }

    /// Shard `shard`'s log, once its writer is open.
    pub fn register(&mut self, shard: usize, log: LogProgress) {
        if let Some(slot) = self.logs.get_mut(shard) {
            *slot = Some(log);
        }
    }

    /// Records that every shard's log holds exactly the stream up to `offset` (of `replid`,
    /// with `db` selected): each log's written LSN now. Not fsynced ([`Checkpoints::sync`]).
    pub fn save(&mut self, replid: &str, offset: u64, db: usize) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let lsns = self
            .logs
            .iter()
            .map(|l| l.as_ref().map(LogProgress::written))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| std::io::Error::other("a shard's log is not open"))?;
        let text = render_replica(replid, offset, db, &lsns);
        if self.file.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(dir.join(FILE))?;
            self.file = Some(file);
            self.entry_synced = false;
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        // One write of under a page: a kill cannot tear it (a power cut can; the checksum
        // tells).
        file.write_all_at(text.as_bytes(), 0)
    }

    /// Makes the last checkpoint durable (a clean shutdown: the next start may follow a
    /// reboot). The file a previous run left, when this one wrote none, too.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if self.file.is_none() {
            match File::open(dir.join(FILE)) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.sync_data()?;
        if !self.entry_synced {
            moon_manifest::fsio::fsync_parent(&dir.join(FILE))?;
            self.entry_synced = true;
        }
        Ok(())
    }

    /// The current epoch: a link started now saves under it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The position no longer holds (a change of role): the file is removed, durably, and
    /// links started before cannot save any more.
    pub fn forget(&mut self) {
        self.epoch += 1;
        self.file = None;
        self.entry_synced = false;
        let Some(dir) = &self.dir else { return };
        if let Err(e) = remove(dir) {
            // A stale checkpoint would cut a log at the next start: nothing may be accepted
            // that it could cut. Crash-only, as for a failed log.
            tracing::error!(
                "cannot remove {}: {e}; stopping, as a failed log does (a stale replication position could drop later writes at the next start)",
                dir.join(FILE).display()
            );
            std::process::exit(1);
        }
    }

    /// The place no longer holds, for now (a full synchronisation is about to replace
    /// everything, function libraries included, which no log cut restores): removed durably,
    /// the link's epoch kept (it saves the new place once loaded).
    pub fn discard(&mut self) -> std::io::Result<()> {
        self.file = None;
        self.entry_synced = false;
        match &self.dir {
            Some(dir) => remove(dir),
            None => Ok(()),
        }
    }

    /// A primary's clean shutdown: its stream's offset, for the next start.
    pub fn save_primary(&mut self, offset: u64) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        self.file = None;
        let text = sealed(format!("moon-replication 2\nprimary {offset}\n"));
        let path = dir.join(FILE);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        moon_manifest::fsio::fsync_parent(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_checkpoint_reads_back_and_a_shorter_one_overwrites_a_longer_in_place() {
        let long = render_replica(ID, 123_456_789, 7, &[100_000, 200_000, 300_000]);
        let short = render_replica(ID, 5, 0, &[1, 2, 3]);
        let mut bytes = long.clone().into_bytes();
        bytes[..short.len()].copy_from_slice(short.as_bytes());
        let Some(Saved::Replica(p)) = parse(&bytes) else {
            panic!("not read back");
        };
        assert_eq!((p.replid.as_str(), p.offset, p.db), (ID, 5, 0));
        assert_eq!(p.lsns, Some(vec![1, 2, 3]));
        assert!(p.same_boot || boot_id() == "-");
    }

    #[test]
    fn a_damaged_or_torn_checkpoint_is_refused() {
        let text = render_replica(ID, 42, 1, &[9, 10]);
        for cut in 0..text.len() - 1 {
            assert_eq!(parse(&text.as_bytes()[..cut]), None, "cut at {cut}");
        }
        let flipped = text.replacen("42", "43", 1);
        assert_eq!(parse(flipped.as_bytes()), None);
        assert_eq!(parse(b"\xff\xfe"), None);
    }

    #[test]
    fn the_older_clean_shutdown_forms_still_read() {
        let v1 = format!("moon-replication 1\n{ID} 77 3\n");
        let Some(Saved::Replica(p)) = parse(v1.as_bytes()) else {
            panic!("v1 replica form");
        };
        assert_eq!((p.offset, p.db, p.lsns), (77, 3, None));
        assert_eq!(
            parse(b"moon-replication 1\nprimary 99\n"),
            Some(Saved::Primary(99))
        );
        let v2 = sealed("moon-replication 2\nprimary 12\n".into());
        assert_eq!(parse(v2.as_bytes()), Some(Saved::Primary(12)));
    }
}
