//! `moon-cli check-aof`: every record of every shard, and what `--fix` would drop.

use std::path::Path;

use moon_aof::reader::{scan, End};
use moon_manifest::Manifest;

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

fn check_file(path: &Path) -> anyhow::Result<Verdict> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Missing),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    let mut records = 0u64;
    let result = scan(&data, |_lsn, payload, offset| {
        if moon_aof::decode_payload(payload).is_none() {
            return Err(offset);
        }
        records += 1;
        Ok(())
    });
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
        for path in [m.base_path(dir, i), m.incr_path(dir, i)] {
            match check_file(&path)? {
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
