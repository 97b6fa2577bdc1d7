//! `moon-cli check-aof`: every record of every shard, and what `--fix` would drop — judged as
//! the server's recovery judges them (`moon_shard::recovery`): a base must be the one the
//! manifest recorded, an incr's records follow the base's last LSN, and a unit whose last
//! record is missing is a torn tail from its first record on.

use std::path::Path;

use moon_aof::reader::{scan_from, End};
use moon_manifest::Manifest;
use moon_shard::recovery::ShardFiles;

/// One file's verdict.
enum Verdict {
    Missing,
    Healthy {
        records: u64,
        last_lsn: u64,
        bytes: u64,
    },
    /// Ends in a torn tail (or zero fill): the server drops it by itself.
    Tail {
        records: u64,
        last_lsn: u64,
        offset: u64,
        bytes: u64,
        zero: bool,
    },
    /// A bad record followed by valid ones.
    Corrupt {
        records_before: u64,
        offset: u64,
        reason: String,
        len: u64,
    },
}

/// Checks one file whose records follow LSN `after` (see [`moon_aof::reader::scan_from`]).
fn check_file(path: &Path, after: u64) -> anyhow::Result<Verdict> {
    if !path.exists() {
        return Ok(Verdict::Missing);
    }
    // Read through a mapping given back as the scan goes: bounded memory for any log size.
    let mapped = moon_aof::reader::MappedLog::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let data = mapped.bytes();
    let (mut records, mut last_whole) = (0u64, after);
    // The first record of a unit still waiting for its last: (offset, records before it, the
    // LSN before it).
    let mut open: Option<(u64, u64, u64)> = None;
    let result = scan_from(data, after, |lsn, payload, offset| {
        mapped.release_before(offset);
        if moon_aof::decode_payload(payload).is_none() {
            return Err(offset);
        }
        if moon_aof::record::is_continued(payload) {
            open.get_or_insert((offset, records, last_whole));
        } else {
            open = None;
            last_whole = lsn;
        }
        records += 1;
        Ok(())
    });
    if let (Ok(_), Some((offset, records, last_lsn))) = (&result, open) {
        // What the server does with a unit cut short: a torn tail from its first record.
        return Ok(Verdict::Tail {
            records,
            last_lsn,
            offset,
            bytes: data.len() as u64 - offset,
            zero: false,
        });
    }
    Ok(match result {
        Ok(end) => match end.end {
            End::Clean => Verdict::Healthy {
                records: end.records,
                last_lsn: end.last_lsn,
                bytes: end.valid_len,
            },
            End::ZeroFilled { offset, bytes } => Verdict::Tail {
                records: end.records,
                last_lsn: end.last_lsn,
                offset,
                bytes,
                zero: true,
            },
            End::TornTail { offset, bytes } => Verdict::Tail {
                records: end.records,
                last_lsn: end.last_lsn,
                offset,
                bytes,
                zero: false,
            },
        },
        Err(Ok(c)) => Verdict::Corrupt {
            records_before: records,
            offset: c.offset,
            reason: c.reason,
            len: data.len() as u64,
        },
        Err(Err(offset)) => Verdict::Corrupt {
            records_before: records,
            offset,
            reason: "the payload is neither a RESP command nor a MULTI/EXEC group".into(),
            len: data.len() as u64,
        },
    })
}

fn truncate(path: &Path, at: u64) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(at)?;
    f.sync_all()?;
    Ok(())
}

pub fn run(dir: &Path, fix: bool) -> anyhow::Result<i32> {
    let _lock = crate::lock::lock(dir)?;
    let manifest_path = moon_manifest::manifest_path(dir);
    let manifest = match moon_manifest::peek(dir) {
        Ok(Some(m)) => m,
        Ok(None) => anyhow::bail!(
            "no manifest at {}: not a Moon data directory (or a fresh one)",
            manifest_path.display()
        ),
        Err(e) => anyhow::bail!("{e}"),
    };
    let m = match manifest {
        Manifest::V2(m) => m,
        Manifest::V1(_) => {
            println!(
                "{}: legacy top-level layout (v1); its plain-RESP log has no records to verify.",
                manifest_path.display()
            );
            println!("Start the server with --shards 1 to migrate it (see docs/runbooks/multi-shard-aof.md).");
            return Ok(0);
        }
    };
    println!(
        "manifest {}: ok (v2, seq {}, {} shards)",
        manifest_path.display(),
        m.seq,
        m.shards()
    );
    let mut problems = 0;
    let mut fixed = 0;
    for i in 0..m.shards() {
        let files = ShardFiles::of(dir, &m, i);
        // A base is judged as the server judges it, and never changed: it was complete and
        // fsynced before the manifest named it, so any damage to it is data lost outside Moon
        // (a truncation would only make it lose more), not a torn tail.
        match moon_shard::recovery::verify_base(&files) {
            Ok(r) if r.bytes == 0 => {
                println!("shard {i}: {}: absent (empty)", files.base.display())
            }
            Ok(r) => println!(
                "shard {i}: {}: ok, {} records, last LSN {}, {} bytes{}",
                files.base.display(),
                r.records,
                r.last_lsn,
                r.bytes,
                if files.base_info.is_some() {
                    ", as the manifest recorded"
                } else {
                    ""
                }
            ),
            Err(e) => {
                problems += 1;
                println!("shard {i}: {e}");
                if fix {
                    println!("  --fix never changes a base: restore it (see the runbook)");
                }
                continue;
            }
        }
        {
            let (path, after) = (files.incr.clone(), files.incr_after());
            match check_file(&path, after)? {
                Verdict::Missing => println!("shard {i}: {}: absent (empty)", path.display()),
                Verdict::Healthy {
                    records,
                    last_lsn,
                    bytes,
                } => {
                    println!(
                        "shard {i}: {}: ok, {records} records, last LSN {last_lsn}, {bytes} bytes",
                        path.display()
                    )
                }
                Verdict::Tail {
                    records,
                    last_lsn,
                    offset,
                    bytes,
                    zero,
                } => {
                    let what = if zero {
                        "zero-filled tail"
                    } else {
                        "torn tail (an unacknowledged write cut short)"
                    };
                    println!("shard {i}: {}: {records} good records (last LSN {last_lsn}), then a {what} at offset {offset}: {bytes} bytes", path.display());
                    if fix {
                        println!(
                            "  --fix: truncating to {offset} bytes, dropping those {bytes} bytes"
                        );
                        truncate(&path, offset)?;
                        fixed += 1;
                    } else {
                        println!("  harmless: the server drops it at startup (or run with --fix)");
                    }
                }
                Verdict::Corrupt {
                    records_before,
                    offset,
                    reason,
                    len,
                } => {
                    problems += 1;
                    println!(
                        "shard {i}: {}: CORRUPT at offset {offset}: {reason}",
                        path.display()
                    );
                    println!("  {records_before} good records before it; bytes {offset}..{len} ({} bytes) would be dropped by --fix, including the valid records after the damage", len - offset);
                    if fix {
                        println!("  --fix: truncating to {offset} bytes");
                        truncate(&path, offset)?;
                        fixed += 1;
                        problems -= 1;
                    }
                }
            }
        }
    }
    if problems > 0 {
        println!(
            "{problems} corrupt file(s); nothing was changed. See docs/runbooks/aof-corruption.md"
        );
        return Ok(1);
    }
    if fixed > 0 {
        println!("{fixed} file(s) truncated");
    }
    Ok(0)
}
