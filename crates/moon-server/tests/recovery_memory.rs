//! Recovery reads a log in bounded memory: a 256 MiB log of 1 MiB SETs over 16 keys (a 16 MiB
//! dataset) is replayed by the real binary without its peak RSS (VmHWM in /proc) passing what
//! the same server peaks at with the dataset alone plus a 64 MiB budget. Before the reader
//! mapped logs and gave pages back, the whole file was read into memory first.

mod common;

use bytes::Bytes;
use common::{cmd, MoonServer};

const MIB: u64 = 1 << 20;

/// VmHWM (peak resident set) of `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// A one-shard data directory whose incr holds `records` SETs of 1 MiB values over 16 keys.
fn big_log(dir: &std::path::Path, records: u64) {
    let m = moon_manifest::PerShard::new(1, vec![0]);
    std::fs::create_dir_all(moon_manifest::PerShard::shard_dir(dir, 0)).expect("mkdir");
    let mut f = std::io::BufWriter::new(std::fs::File::create(m.incr_path(dir, 0)).expect("incr"));
    let mut buf = Vec::new();
    for lsn in 1..=records {
        buf.clear();
        let value = vec![b'a' + (lsn % 26) as u8; MIB as usize];
        let args = [
            Bytes::from_static(b"SET"),
            Bytes::from(format!("key:{}", lsn % 16)),
            Bytes::from(value),
        ];
        moon_aof::append_command_record(lsn, &args, &mut buf).expect("record");
        std::io::Write::write_all(&mut f, &buf).expect("write");
    }
    std::io::Write::flush(&mut f).expect("flush");
    std::fs::write(moon_manifest::manifest_path(dir), m.render()).expect("manifest");
}

#[test]
fn a_log_four_times_the_budget_replays_within_it() {
    // The same dataset from a short log: the server's own peak with 16 MiB of values.
    let small = tempfile::tempdir().expect("temp dir");
    big_log(small.path(), 16);
    let s = MoonServer::start_in(small.path(), 1, &["--appendonly", "yes"]).expect("starts");
    let mut c = s.client();
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 16);
    let baseline = peak_rss(s.pid());
    drop(s);

    let big = tempfile::tempdir().expect("temp dir");
    big_log(big.path(), 256);
    let s = MoonServer::start_in(big.path(), 1, &["--appendonly", "yes"]).expect("starts");
    let mut c = s.client();
    assert_eq!(cmd::<i64>(&mut c, &["DBSIZE"]), 16);
    let v: Vec<u8> = cmd(&mut c, &["GET", "key:0"]);
    assert_eq!(
        v,
        vec![b'a' + (256 % 26) as u8; MIB as usize],
        "the last write of key:0 won"
    );
    let peak = peak_rss(s.pid());
    assert!(
        peak <= baseline + 64 * MIB,
        "replaying a 256 MiB log peaked at {} MiB; the dataset alone at {} MiB (budget +64 MiB)",
        peak / MIB,
        baseline / MIB
    );
}
