//! Manifest parsing, atomic writes and migration, including injected failures and simulated
//! crashes at every migration step.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use crate::manifest::{
    aof_dir, is_legacy, load, manifest_path, Manifest, ManifestError, PerShard, TopLevel,
};
use crate::migrate::{migrate_v1_to_v2, migrate_with, Inject, Migrated, Step};

const V1: &str = "seq 3\nbase moon.aof.3.base.rdb\nincr moon.aof.3.incr.aof\n";

fn resp(cmd: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", cmd.len()).into_bytes();
    for a in cmd {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    out
}

/// A v1 directory: manifest, an AOF-text base and a plain-RESP incr.
fn v1_dir() -> (tempfile::TempDir, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let aof = aof_dir(dir.path());
    std::fs::create_dir_all(&aof).unwrap();
    std::fs::write(manifest_path(dir.path()), V1).unwrap();
    let base: Vec<Vec<&str>> = vec![
        vec!["SELECT", "0"],
        vec!["SET", "a", "1"],
        vec!["SET", "b", "2"],
    ];
    let incr: Vec<Vec<&str>> = vec![
        vec!["INCR", "a"],
        vec!["MULTI"],
        vec!["SET", "c", "x y"],
        vec!["DEL", "b"],
        vec!["EXEC"],
        vec!["PEXPIREAT", "a", "99999999999999"],
    ];
    std::fs::write(
        aof.join("moon.aof.3.base.rdb"),
        base.iter().flat_map(|c| resp(c)).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(
        aof.join("moon.aof.3.incr.aof"),
        incr.iter().flat_map(|c| resp(c)).collect::<Vec<u8>>(),
    )
    .unwrap();
    let expected = [&base[1..], &incr[..1], &incr[2..4], &incr[5..]].concat();
    (
        dir,
        expected
            .into_iter()
            .map(|c| c.into_iter().map(String::from).collect())
            .collect(),
    )
}

/// Every file under `dir`, by relative path, with its bytes (directories as empty entries).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn replay_shard0(dir: &Path) -> Vec<Vec<String>> {
    let Some(Manifest::V2(m)) = load(dir).unwrap() else {
        panic!("not v2")
    };
    let mut cmds = Vec::new();
    let mut lsns = Vec::new();
    moon_aof::replay_file(&m.incr_path(dir, 0), |lsn, group: Vec<Vec<Bytes>>| {
        lsns.push(lsn);
        assert_eq!(group.len(), 1, "migration writes one command per record");
        cmds.push(
            group[0]
                .iter()
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect(),
        );
    })
    .unwrap();
    assert_eq!(lsns, (1..=lsns.len() as u64).collect::<Vec<_>>());
    assert_eq!(m.max_lsn, vec![lsns.len() as u64]);
    cmds
}

fn corrupt_reason(text: &str) -> String {
    Manifest::parse(text).unwrap_err()
}

#[test]
fn v1_loads_as_a_top_level_single_shard_layout() {
    let (dir, _) = v1_dir();
    let m = load(dir.path()).unwrap().unwrap();
    assert_eq!(
        m,
        Manifest::V1(TopLevel {
            seq: 3,
            base: Some("moon.aof.3.base.rdb".into()),
            incr: "moon.aof.3.incr.aof".into()
        })
    );
    assert!(m.verify_shard_count(1).is_ok());
    insta::assert_snapshot!(m.verify_shard_count(2).unwrap_err().to_string(), @"ERR shard count changed (manifest=1, config=2); refusing to start to avoid data loss. See docs/runbooks/shard-count-change.md");
    // Without a base line too.
    assert_eq!(
        Manifest::parse("seq 1\nincr moon.aof.1.incr.aof\n").unwrap(),
        Manifest::V1(TopLevel {
            seq: 1,
            base: None,
            incr: "moon.aof.1.incr.aof".into()
        })
    );
}

#[test]
fn v2_round_trips_and_derives_paths() {
    let mut m = PerShard::new(7, vec![10, 42, 0]);
    m.bases[1] = Some(crate::BaseInfo {
        bytes: 1234,
        crc32: 0x0a1b_2c3d,
    });
    let text = m.render();
    insta::assert_snapshot!(text, @r"
    version 2
    seq 7
    shards 3
    shard 0 max_lsn 10
    shard 1 max_lsn 42 base_bytes 1234 base_crc32 0a1b2c3d
    shard 2 max_lsn 0
    ");
    assert_eq!(Manifest::parse(&text).unwrap(), Manifest::V2(m.clone()));
    assert_eq!(
        m.incr_path(Path::new("/d"), 1),
        Path::new("/d/appendonlydir/shard-1/moon.aof.7.incr.aof")
    );
    assert_eq!(
        m.base_path(Path::new("/d"), 2),
        Path::new("/d/appendonlydir/shard-2/moon.aof.7.base.rdb")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(aof_dir(dir.path())).unwrap();
    crate::fsio::write_atomic(&manifest_path(dir.path()), text.as_bytes()).unwrap();
    assert_eq!(load(dir.path()).unwrap(), Some(Manifest::V2(m)));
}

#[test]
fn global_max_lsn_is_the_max_over_shards() {
    assert_eq!(PerShard::new(1, vec![5, 90, 12]).global_max_lsn(), 90);
    assert_eq!(PerShard::fresh(4).global_max_lsn(), 0);
}

#[test]
fn shard_count_mismatch_message_is_verbatim() {
    let m = PerShard::fresh(2);
    assert!(m.verify_shard_count(2).is_ok());
    insta::assert_snapshot!(m.verify_shard_count(4).unwrap_err().to_string(), @"ERR shard count changed (manifest=2, config=4); refusing to start to avoid data loss. See docs/runbooks/shard-count-change.md");
}

#[test]
fn legacy_detection_has_no_side_effects() {
    let (dir, _) = v1_dir();
    let tmp = aof_dir(dir.path()).join("moon.aof.manifest.tmp");
    std::fs::write(&tmp, "half a manifest").unwrap();
    let before = snapshot(dir.path());
    assert!(is_legacy(dir.path()));
    assert_eq!(
        snapshot(dir.path()),
        before,
        "detection changed the directory"
    );
    let v2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(aof_dir(v2.path())).unwrap();
    std::fs::write(manifest_path(v2.path()), PerShard::fresh(2).render()).unwrap();
    assert!(!is_legacy(v2.path()));
    assert!(
        !is_legacy(tempfile::tempdir().unwrap().path()),
        "a fresh directory is not legacy"
    );
}

#[test]
fn stale_temp_file_is_removed_at_load() {
    let (dir, _) = v1_dir();
    let tmp = aof_dir(dir.path()).join("moon.aof.manifest.tmp");
    std::fs::write(&tmp, "version 2\nseq").unwrap();
    assert!(matches!(load(dir.path()).unwrap(), Some(Manifest::V1(_))));
    assert!(!tmp.exists());
}

#[test]
fn parse_rejects_inconsistent_and_damaged_manifests() {
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 1\nshards 3\nshard 0 max_lsn 1\nshard 1 max_lsn 2\n"), @"`shards 3` but 2 shard line(s)");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 1\nshards 1\nshard 0 max_lsn 1\nshard 1 max_lsn 2\n"), @"line 5: more shard lines than `shards 1`");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 1\nshards 2\nshard 0 max_lsn 1\nshard 2 max_lsn 2\n"), @"line 5: shard ids must be contiguous from 0: expected shard 1, found shard 2");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 1\nshards 2\nshard 1 max_lsn 1\nshard 0 max_lsn 2\n"), @"line 4: shard ids must be contiguous from 0: expected shard 0, found shard 1");
    insta::assert_snapshot!(corrupt_reason(""), @"the file is empty");
    insta::assert_snapshot!(corrupt_reason("\n\n"), @"the file is empty");
    insta::assert_snapshot!(corrupt_reason("\u{1}\u{2}garbage!!"), @"line 1: `\u{1}\u{2}garbage!!` should have 2 field(s)");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 4\nsha"), @"line 3: expected `shards`, found `sha`");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 4\n"), @"truncated: no `shards` line");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 4\nshards 2\nshard 0 max_lsn 9\nshard 1 max_l"), @"line 5: `shard 1 max_l` should have 4 field(s)");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 4\nshards 1\nshard 0 max_lsn -1\n"), @"line 4: max_lsn `-1` is not a number");
    insta::assert_snapshot!(corrupt_reason("version 3\n"), @"line 1: unsupported manifest version `3`");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 4\nshards 1\nshard 0 max_lsn 9 base_bytes 10 base_crc32\n"), @"line 4: `shard 0 max_lsn 9 base_bytes 10 base_crc32` should have 4 field(s)");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 4\nshards 1\nshard 0 max_lsn 9 base_bytes 10 base_crc32 xyz12345\n"), @"line 4: base_crc32 `xyz12345` is not 8 hexadecimal digits");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 4\nshards 1\nshard 0 max_lsn 9 base_crc32 10 base_bytes 0a1b2c3d\n"), @"line 4: expected `base_bytes <n> base_crc32 <hex>`, found `base_crc32 10 base_bytes 0a1b2c3d`");
    insta::assert_snapshot!(corrupt_reason("version 2\nseq 1\nshards 0\n"), @"line 3: shards must be between 1 and 4096, not 0");
    insta::assert_snapshot!(corrupt_reason("seq 1\nincr ../../etc/passwd\n"), @"line 2: `../../etc/passwd` is not a plain file name");
    insta::assert_snapshot!(corrupt_reason("seq 1\nbase moon.aof.1.base.rdb\n"), @"truncated: no `incr` line");
    // Through load: the operator-facing message names the file and says not to overwrite it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(aof_dir(dir.path())).unwrap();
    std::fs::write(manifest_path(dir.path()), [0xffu8, 0xfe, 0, 1]).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ManifestError::Corrupt { .. }));
    let text = err
        .to_string()
        .replace(&dir.path().display().to_string(), "<dir>");
    insta::assert_snapshot!(text, @"manifest <dir>/appendonlydir/moon.aof.manifest is corrupt (not UTF-8 text); refusing to start: overwriting it would lose data, inspect manually before deleting. See docs/runbooks/aof-corruption.md");
}

#[test]
fn migration_moves_files_and_rewrites_the_manifest() {
    let (dir, expected) = v1_dir();
    assert_eq!(
        migrate_v1_to_v2(dir.path()).unwrap(),
        Migrated::Done {
            records: 6,
            dropped_tail_bytes: 0
        }
    );
    let files: Vec<String> = snapshot(dir.path()).into_keys().collect();
    assert_eq!(
        files,
        [
            "appendonlydir/",
            "appendonlydir/moon.aof.manifest",
            "appendonlydir/shard-0/",
            "appendonlydir/shard-0/moon.aof.3.incr.aof"
        ]
    );
    insta::assert_snapshot!(std::fs::read_to_string(manifest_path(dir.path())).unwrap(), @r"
    version 2
    seq 3
    shards 1
    shard 0 max_lsn 6
    ");
    assert_eq!(replay_shard0(dir.path()), expected);
    assert!(!is_legacy(dir.path()));
    // Idempotent.
    let after = snapshot(dir.path());
    assert_eq!(migrate_v1_to_v2(dir.path()).unwrap(), Migrated::AlreadyV2);
    assert_eq!(snapshot(dir.path()), after);
    assert_eq!(
        migrate_v1_to_v2(tempfile::tempdir().unwrap().path()).unwrap(),
        Migrated::Fresh
    );
}

const STEPS: [Step; 6] = [
    Step::Build,
    Step::BuildMidway,
    Step::RenameShard,
    Step::WriteManifest,
    Step::CommitFsync,
    Step::RemoveOld,
];

/// The directory fsync after the manifest's rename fails: there is no rollback (the manifest
/// on disk may already be the new one), so the new layout stays complete and loads.
#[test]
fn a_failure_after_the_manifest_rename_is_not_rolled_back() {
    let (dir, expected) = v1_dir();
    let r = migrate_with(dir.path(), &mut |s| {
        if s == Step::CommitFsync {
            Inject::Fail
        } else {
            Inject::Proceed
        }
    });
    assert!(r.is_err(), "{r:?}");
    assert!(matches!(load(dir.path()).unwrap(), Some(Manifest::V2(_))));
    assert_eq!(replay_shard0(dir.path()), expected);
}

#[test]
fn a_failure_at_any_step_before_the_commit_leaves_the_directory_exactly_as_before() {
    for step in [
        Step::Build,
        Step::BuildMidway,
        Step::RenameShard,
        Step::WriteManifest,
    ] {
        let (dir, _) = v1_dir();
        let before = snapshot(dir.path());
        let r = migrate_with(dir.path(), &mut |s| {
            if s == step {
                Inject::Fail
            } else {
                Inject::Proceed
            }
        });
        assert!(r.is_err(), "{step:?}: {r:?}");
        assert_eq!(
            snapshot(dir.path()),
            before,
            "{step:?} left the directory changed"
        );
    }
    // After the commit, a failure to delete the old files leaves the complete new layout; the
    // next run removes them.
    let (dir, expected) = v1_dir();
    let r = migrate_with(dir.path(), &mut |s| {
        if s == Step::RemoveOld {
            Inject::Fail
        } else {
            Inject::Proceed
        }
    });
    assert_eq!(
        r.unwrap(),
        Migrated::Done {
            records: 6,
            dropped_tail_bytes: 0
        }
    );
    assert!(aof_dir(dir.path()).join("moon.aof.3.incr.aof").exists());
    assert_eq!(migrate_v1_to_v2(dir.path()).unwrap(), Migrated::AlreadyV2);
    assert!(!aof_dir(dir.path()).join("moon.aof.3.incr.aof").exists());
    assert_eq!(replay_shard0(dir.path()), expected);
}

#[test]
fn a_crash_after_any_step_then_a_rerun_completes_without_losing_a_byte() {
    for step in STEPS {
        let (dir, expected) = v1_dir();
        let r = migrate_with(dir.path(), &mut |s| {
            if s == step {
                Inject::Crash
            } else {
                Inject::Proceed
            }
        });
        assert!(r.is_err(), "{step:?}");
        // The directory is one complete layout: v1 with its files, or v2.
        match load(dir.path()).unwrap().unwrap() {
            Manifest::V1(_) => {
                assert!(aof_dir(dir.path()).join("moon.aof.3.incr.aof").exists());
                assert!(aof_dir(dir.path()).join("moon.aof.3.base.rdb").exists());
            }
            Manifest::V2(_) => assert_eq!(replay_shard0(dir.path()), expected, "{step:?}"),
        }
        // A manifest temp file from a write cut short changes nothing either.
        std::fs::write(
            aof_dir(dir.path()).join("moon.aof.manifest.tmp"),
            "version 2\n",
        )
        .unwrap();
        let again = migrate_v1_to_v2(dir.path()).unwrap();
        assert!(
            matches!(
                again,
                Migrated::Done { records: 6, .. } | Migrated::AlreadyV2
            ),
            "{step:?}: {again:?}"
        );
        assert_eq!(replay_shard0(dir.path()), expected, "{step:?}");
        let files: Vec<String> = snapshot(dir.path()).into_keys().collect();
        assert_eq!(
            files,
            [
                "appendonlydir/",
                "appendonlydir/moon.aof.manifest",
                "appendonlydir/shard-0/",
                "appendonlydir/shard-0/moon.aof.3.incr.aof"
            ],
            "{step:?}"
        );
    }
}

#[test]
fn a_torn_legacy_tail_and_an_unfinished_multi_are_dropped() {
    let (dir, expected) = v1_dir();
    let incr = aof_dir(dir.path()).join("moon.aof.3.incr.aof");
    let mut data = std::fs::read(&incr).unwrap();
    let tail = [
        resp(&["MULTI"]),
        resp(&["SET", "z", "1"]),
        b"*3\r\n$3\r\nSET\r\n$1\r\nq".to_vec(),
    ]
    .concat();
    data.extend(&tail);
    std::fs::write(&incr, data).unwrap();
    assert_eq!(
        migrate_v1_to_v2(dir.path()).unwrap(),
        Migrated::Done {
            records: 6,
            dropped_tail_bytes: tail.len() as u64
        }
    );
    assert_eq!(replay_shard0(dir.path()), expected);
}

#[test]
fn an_rdb_base_or_garbage_is_refused_and_nothing_changes() {
    for (content, needle) in [
        (&b"REDIS0011\xfa\x09redis-ver"[..], "not supported yet"),
        (&b"*1\r\n$4\r\nPING\r\nhello\r\n"[..], "at offset 14"),
    ] {
        let (dir, _) = v1_dir();
        std::fs::write(aof_dir(dir.path()).join("moon.aof.3.base.rdb"), content).unwrap();
        let before = snapshot(dir.path());
        let err = migrate_v1_to_v2(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
        assert_eq!(snapshot(dir.path()), before);
    }
}

#[test]
fn files_of_other_seqs_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let m = PerShard::new(3, vec![0, 0]);
    for i in 0..2 {
        std::fs::create_dir_all(PerShard::shard_dir(dir.path(), i)).unwrap();
        for name in [
            "moon.aof.2.base.rdb",
            "moon.aof.2.incr.aof",
            "moon.aof.3.base.rdb",
            "moon.aof.3.incr.aof",
            "moon.aof.4.base.rdb",
            "notes.txt",
            "moon.aof.x.incr.aof",
        ] {
            std::fs::write(PerShard::shard_dir(dir.path(), i).join(name), "x").unwrap();
        }
    }
    let removed = m.remove_other_seqs(dir.path());
    assert_eq!(removed.len(), 6);
    let left: Vec<String> = snapshot(dir.path())
        .into_keys()
        .filter(|k| k.contains("shard-0/") && !k.ends_with('/'))
        .collect();
    assert_eq!(
        left,
        [
            "appendonlydir/shard-0/moon.aof.3.base.rdb",
            "appendonlydir/shard-0/moon.aof.3.incr.aof",
            "appendonlydir/shard-0/moon.aof.x.incr.aof",
            "appendonlydir/shard-0/notes.txt"
        ]
    );
}

#[test]
fn the_next_seq_is_above_every_seq_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let m = PerShard::new(3, vec![0, 0]);
    assert_eq!(m.next_free_seq(dir.path()), 4, "no directory yet");
    for i in 0..3 {
        std::fs::create_dir_all(PerShard::shard_dir(dir.path(), i)).unwrap();
    }
    assert_eq!(m.next_free_seq(dir.path()), 4);
    // A failed commit's files (seq 4) on shard 1, a stray of seq 9 in a shard directory the
    // manifest no longer counts: neither name may be reused.
    std::fs::write(
        PerShard::shard_dir(dir.path(), 1).join("moon.aof.4.base.rdb"),
        b"",
    )
    .unwrap();
    assert_eq!(m.next_free_seq(dir.path()), 5);
    std::fs::write(
        PerShard::shard_dir(dir.path(), 2).join("moon.aof.9.incr.aof"),
        b"",
    )
    .unwrap();
    std::fs::write(PerShard::shard_dir(dir.path(), 0).join("notes.txt"), b"").unwrap();
    assert_eq!(m.next_free_seq(dir.path()), 10);
}
