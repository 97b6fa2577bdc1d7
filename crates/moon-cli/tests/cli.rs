//! `moon-cli` as an operator runs it: the real binary on real directories.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use moon_manifest::PerShard;

const BIN: &str = env!("CARGO_BIN_EXE_moon-cli");

fn run(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run moon-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        text.replace(&dir.display().to_string(), "<dir>"),
    )
}

/// A v2 directory with two shards; shard 1's incr holds `n` records. Returns its incr path
/// and the end offset of each record.
fn v2_dir(n: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<usize>) {
    let tmp = tempfile::tempdir().unwrap();
    let m = PerShard::new(1, vec![0, 0]);
    for i in 0..2 {
        std::fs::create_dir_all(PerShard::shard_dir(tmp.path(), i)).unwrap();
    }
    std::fs::write(moon_manifest::manifest_path(tmp.path()), m.render()).unwrap();
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for lsn in 1..=n {
        moon_aof::append_command_record(
            lsn,
            &[
                Bytes::from("SET"),
                Bytes::from(format!("k{lsn}")),
                Bytes::from("v"),
            ],
            &mut data,
        )
        .unwrap();
        ends.push(data.len());
    }
    let incr = m.incr_path(tmp.path(), 1);
    std::fs::write(&incr, &data).unwrap();
    (tmp, incr, ends)
}

#[test]
fn a_healthy_directory_checks_clean() {
    let (tmp, _, _) = v2_dir(5);
    let (code, out) = run(&["check-aof"], tmp.path());
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!(out, @r"
    manifest <dir>/appendonlydir/moon.aof.manifest: ok (v2, seq 1, 2 shards)
    shard 0: <dir>/appendonlydir/shard-0/moon.aof.1.base.rdb: absent (empty)
    shard 0: <dir>/appendonlydir/shard-0/moon.aof.1.incr.aof: absent (empty)
    shard 1: <dir>/appendonlydir/shard-1/moon.aof.1.base.rdb: absent (empty)
    shard 1: <dir>/appendonlydir/shard-1/moon.aof.1.incr.aof: ok, 5 records, last LSN 5, 220 bytes
    ");
}

#[test]
fn a_torn_tail_is_reported_and_fixed_only_with_fix() {
    let (tmp, incr, ends) = v2_dir(5);
    let full = std::fs::read(&incr).unwrap();
    std::fs::write(&incr, &full[..full.len() - 3]).unwrap();
    let (code, out) = run(&["check-aof"], tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("4 good records (last LSN 4), then a torn tail (an unacknowledged write cut short) at offset {}: {} bytes", ends[3], full.len() - 3 - ends[3])), "{out}");
    assert_eq!(
        std::fs::metadata(&incr).unwrap().len() as usize,
        full.len() - 3,
        "no change without --fix"
    );
    let (code, out) = run(&["check-aof", "--fix"], tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("--fix: truncating to {} bytes", ends[3])),
        "{out}"
    );
    assert_eq!(std::fs::read(&incr).unwrap(), &full[..ends[3]]);
}

#[test]
fn corruption_is_reported_with_file_and_offset_and_truncated_only_with_fix() {
    let (tmp, incr, ends) = v2_dir(6);
    let mut data = std::fs::read(&incr).unwrap();
    data[ends[1] + 14] ^= 0x01;
    std::fs::write(&incr, &data).unwrap();
    let (code, out) = run(&["check-aof"], tmp.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("shard 1: <dir>/appendonlydir/shard-1/moon.aof.1.incr.aof: CORRUPT at offset {}: checksum mismatch", ends[1])), "{out}");
    assert!(
        out.contains(&format!(
            "2 good records before it; bytes {}..{}",
            ends[1],
            data.len()
        )),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&incr).unwrap(),
        data,
        "nothing changed without --fix"
    );
    let (code, out) = run(&["check-aof", "--fix"], tmp.path());
    assert_eq!(code, 0, "{out}");
    let printed = out.find("would be dropped").unwrap();
    let truncated = out.find("--fix: truncating").unwrap();
    assert!(
        printed < truncated,
        "what is dropped is printed before truncating: {out}"
    );
    assert_eq!(std::fs::read(&incr).unwrap(), &data[..ends[1]]);
}

#[test]
fn a_locked_directory_is_refused() {
    let (tmp, incr, _) = v2_dir(2);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(tmp.path().join("moon.lock"))
        .unwrap();
    let _held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    std::fs::write(&incr, b"garbage").unwrap();
    let (code, out) = run(&["check-aof", "--fix"], tmp.path());
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("is in use") && out.contains("stop the server first"),
        "{out}"
    );
    assert_eq!(std::fs::read(&incr).unwrap(), b"garbage");
}

#[test]
fn a_corrupt_manifest_is_reported() {
    let (tmp, _, _) = v2_dir(1);
    std::fs::write(
        moon_manifest::manifest_path(tmp.path()),
        "version 2\nshards 2\n",
    )
    .unwrap();
    let (code, out) = run(&["check-aof"], tmp.path());
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("is corrupt (line 2: expected `seq`, found `shards`)"),
        "{out}"
    );
}

#[test]
fn manifest_show_is_readable() {
    let (tmp, _, _) = v2_dir(3);
    let (code, out) = run(&["manifest", "show"], tmp.path());
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!(out, @r"
    manifest: <dir>/appendonlydir/moon.aof.manifest
    layout:   per-shard (v2)
    seq:      1
    shards:   2
    max LSN:  0 (over all shards)
    shard 0: max_lsn 0          base shard-0/moon.aof.1.base.rdb (absent)  incr shard-0/moon.aof.1.incr.aof (absent)
    shard 1: max_lsn 0          base shard-1/moon.aof.1.base.rdb (absent)  incr shard-1/moon.aof.1.incr.aof (132 bytes)
    ");
}

fn resp(cmd: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", cmd.len()).into_bytes();
    for a in cmd {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    out
}

/// Every key of a v2 layout, by replaying each shard's files: key -> (value, shard).
fn read_layout(dir: &Path) -> std::collections::BTreeMap<String, (String, usize)> {
    let mut out = std::collections::BTreeMap::new();
    let stores = replay_shards(dir);
    let shards = stores.len();
    for (i, store) in stores.iter().enumerate() {
        let ks = store.keyspace_of(0).unwrap();
        for (key, entry) in ks.iter() {
            let k = String::from_utf8_lossy(&key.to_bytes()).to_string();
            let moon_store::Value::Str(v) = &entry.value else {
                panic!("{k} is not a string")
            };
            assert_eq!(
                moon_store::slot::shard_for_key(&key.to_bytes(), shards),
                i,
                "{k} is in the wrong shard"
            );
            if entry.expire_at != 0 {
                out.insert(format!("{k}#pxat"), (entry.expire_at.to_string(), i));
            }
            out.insert(k, (String::from_utf8_lossy(&v.to_bytes()).to_string(), i));
        }
    }
    out
}

/// Every shard of a v2 layout replayed into a store of its own, as the server's recovery
/// does (its base, RDB or records, then its incr).
fn replay_shards(dir: &Path) -> Vec<moon_store::Store> {
    let Some(moon_manifest::Manifest::V2(m)) = moon_manifest::peek(dir).unwrap() else {
        panic!("not v2")
    };
    (0..m.shards())
        .map(|i| {
            let mut store = moon_store::Store::default();
            let files = moon_shard::recovery::ShardFiles::of(dir, &m, i);
            moon_shard::recovery::replay_shard(
                &mut store,
                &files,
                &Default::default(),
                None,
                false,
            )
            .unwrap();
            store
        })
        .collect()
}

#[test]
fn migrate_aof_turns_a_legacy_log_into_n_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let aof = moon_manifest::aof_dir(tmp.path());
    std::fs::create_dir_all(&aof).unwrap();
    std::fs::write(
        aof.join("moon.aof.manifest"),
        "seq 4\nincr moon.aof.4.incr.aof\n",
    )
    .unwrap();
    let mut log = resp(&["SELECT", "0"]);
    for i in 0..50 {
        log.extend(resp(&["SET", &format!("k{i}"), &format!("v{i}")]));
    }
    log.extend(resp(&["MULTI"]));
    log.extend(resp(&["DEL", "k0", "k1"]));
    log.extend(resp(&["MSET", "k2", "two", "k3", "three"]));
    log.extend(resp(&["EXEC"]));
    log.extend(resp(&["SET", "gone", "x", "PXAT", "1"]));
    log.extend(resp(&["MULTI"]));
    log.extend(resp(&["SET", "k4", "never"])); // unfinished MULTI: dropped
    std::fs::write(aof.join("moon.aof.4.incr.aof"), &log).unwrap();
    let before = std::fs::read(aof.join("moon.aof.4.incr.aof")).unwrap();

    let (code, out) = run(&["migrate-aof", "--shards", "3", "--dry-run"], tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("target: per-shard (v2) layout, 3 shards, seq 5")
            && out.contains("--dry-run: nothing written"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(aof.join("moon.aof.4.incr.aof")).unwrap(),
        before,
        "dry run changed nothing"
    );
    assert!(moon_manifest::is_legacy(tmp.path()));

    let (code, out) = run(&["migrate-aof", "--shards", "3"], tmp.path());
    assert_eq!(code, 0, "{out}");
    let keys = read_layout(tmp.path());
    assert_eq!(keys.len(), 48, "{keys:?}");
    assert_eq!(keys["k2"].0, "two");
    assert_eq!(keys["k4"].0, "v4", "the unfinished MULTI was dropped");
    assert!(!keys.contains_key("k0") && !keys.contains_key("gone"));
    assert!(
        keys.values().any(|(_, s)| *s == 2),
        "keys spread over the shards"
    );
    assert!(
        !aof.join("moon.aof.4.incr.aof").exists(),
        "old log removed after the switch"
    );
    let manifest = std::fs::read_to_string(aof.join("moon.aof.manifest")).unwrap();
    assert!(
        manifest.starts_with("version 2\nseq 5\nshards 3\n"),
        "{manifest}"
    );
    // LSNs continue above the old log's 53 applied commands.
    for line in manifest.lines().filter(|l| l.starts_with("shard ")) {
        let lsn: u64 = line.split(' ').nth(3).unwrap().parse().unwrap();
        assert!(
            line.contains(" base_bytes "),
            "the base is recorded: {line}"
        );
        assert!(lsn >= 53, "{manifest}");
    }

    // Reshard the result, then back: nothing lost either way.
    let (code, out) = run(&["migrate-aof", "--shards", "2"], tmp.path());
    assert_eq!(code, 0, "{out}");
    let two = read_layout(tmp.path());
    assert_eq!(
        two.iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
        keys.iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        !PerShard::shard_dir(tmp.path(), 2).exists(),
        "the third shard's directory is gone"
    );
    let (code, out) = run(&["migrate-aof", "--shards", "2"], tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to do"), "{out}");
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `moon-cli migrate-aof --shards 2 --from-redis <fixture> --dir <target>`.
fn import(name: &str, target: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["migrate-aof", "--shards", "2", "--from-redis"])
        .arg(fixture(name))
        .arg("--dir")
        .arg(target)
        .output()
        .unwrap()
}

#[test]
fn migrate_aof_imports_a_redis7_aof_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-aof-base", &target);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let keys = read_layout(&target);
    // SET key:1..20, SET ttl:1 EX, INCR counter; rewrite; MSET after:1 after:2, DEL key:1 key:2,
    // INCRBY counter 41, MULTI SET tx:1 SET tx:2 EXEC, EXPIRE key:3; then a PEXPIREAT of key:4
    // in 2001. The live deadlines are in 2100 (fixtures/README.md): nothing here depends on
    // today's date.
    assert_eq!(keys["counter"].0, "42");
    assert_eq!(keys["after:2"].0, "b");
    assert_eq!(keys["tx:1"].0, "x");
    assert_eq!(keys["key:20"].0, "value-20");
    assert!(!keys.contains_key("key:1") && !keys.contains_key("key:2"));
    assert_eq!(keys["key:3#pxat"].0, "4102444801262", "deadline kept");
    assert_eq!(keys["ttl:1#pxat"].0, "4102444800215", "deadline kept");
    assert!(
        !keys.contains_key("key:4"),
        "a key whose deadline passed is dropped"
    );
    assert_eq!(keys.keys().filter(|k| !k.ends_with("#pxat")).count(), 23);
    // The fixture is untouched, and a second import into the same directory is refused.
    let again = import("redis7-aof-base", &target);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn migrate_aof_imports_a_redis_rdb_base_and_its_incr() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-rdb-base", &target);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // SET a 1; BGREWRITEAOF (the RDB base holds a); SET b 2 (the incr).
    let mut store = replay_layout(&target);
    assert_eq!(query(&mut store, &["MGET", "a", "b"]), "*2 $1 1 $1 2 ");
}

/// The keyspace a v2 layout holds, replayed into a store the way the server recovers it
/// (every key checked to be in its shard).
fn replay_layout(dir: &Path) -> moon_store::Store {
    let shards = replay_shards(dir);
    let n = shards.len();
    let mut store = moon_store::Store::default();
    for (i, shard) in shards.into_iter().enumerate() {
        for db in 0..shard.databases() {
            let Some(ks) = shard.keyspace_of(db) else {
                continue;
            };
            for (key, entry) in ks.iter() {
                let key = key.to_bytes();
                assert_eq!(
                    moon_store::slot::shard_for_key(&key, n),
                    i,
                    "{key:?} is in the wrong shard"
                );
                store.in_db(db, |s| {
                    s.restore_entry(&key, entry.value.clone(), entry.expire_at)
                });
            }
        }
    }
    store
}

fn query(store: &mut moon_store::Store, words: &[&str]) -> String {
    let args: Vec<bytes::Bytes> = words
        .iter()
        .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    let mut out = bytes::BytesMut::new();
    store
        .execute(&args, 1_800_000_000_000)
        .encode(moon_proto::Protocol::Resp2, &mut out);
    String::from_utf8_lossy(&out).replace("\r\n", " ")
}

#[test]
fn migrate_aof_imports_hashes_and_sets_from_redis() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-hash-set", &target);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let mut s = replay_layout(&target);
    // See fixtures/README.md for what Redis ran.
    assert_eq!(query(&mut s, &["HGET", "user:1", "visits"]), "$1 5 ");
    assert_eq!(query(&mut s, &["HLEN", "user:1"]), ":3 ");
    assert_ne!(
        query(&mut s, &["PEXPIRETIME", "user:1"]),
        ":-1 ",
        "its TTL came along"
    );
    assert_eq!(query(&mut s, &["EXISTS", "user:2"]), ":0 ");
    assert_eq!(query(&mut s, &["HGET", "user:3", "a"]), "$3 1.5 ");
    for m in ["3", "rust", "42", "redis"] {
        assert_eq!(
            query(&mut s, &["SISMEMBER", "tags", m]),
            ":1 ",
            "tags has {m}"
        );
    }
    assert_eq!(query(&mut s, &["SCARD", "tags"]), ":4 ");
    assert_eq!(query(&mut s, &["SCARD", "all"]), ":4 ");
    assert_eq!(
        query(&mut s, &["SMEMBERS", "later"]),
        "*1 $1 x ",
        "SPOP was logged as SREM"
    );
    assert_eq!(query(&mut s, &["SMEMBERS", "ints"]), "*2 $1 1 $1 3 ");
    assert_eq!(query(&mut s, &["GET", "plain"]), "$1 v ");
}

#[test]
fn migrate_aof_imports_lists_from_redis() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-list", &target);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let mut s = replay_layout(&target);
    assert_eq!(query(&mut s, &["LRANGE", "mylist", "0", "-1"]), "*1 $1 x ");
    assert_eq!(query(&mut s, &["GET", "b"]), "$1 2 ");
}

#[test]
fn migrate_aof_imports_sorted_sets_from_redis() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-zset", &target);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let mut s = replay_layout(&target);
    // Redis 7.0 wrote scores with 17 digits (2.2000000000000002): the same doubles here.
    assert_eq!(
        query(&mut s, &["ZRANGE", "board", "0", "-1", "WITHSCORES"]),
        "*4 $1 z $4 -inf $1 x $18 1.1000000000000001 "
    );
    assert_eq!(query(&mut s, &["ZCARD", "big"]), ":197 ");
    assert_eq!(
        query(&mut s, &["ZRANGE", "big", "0", "1", "WITHSCORES"]),
        "*4 $3 m13 $3 0.5 $4 m130 $3 0.5 "
    );
    assert_eq!(query(&mut s, &["ZCARD", "u"]), ":202 ");
    assert_eq!(
        query(&mut s, &["ZSCORE", "u", "x"]),
        "$18 2.2000000000000002 "
    );
    assert_eq!(query(&mut s, &["ZSCORE", "late", "a"]), "$1 3 ");
}

#[test]
fn migrate_aof_imports_a_redis7_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-stream", &target);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let mut s = replay_layout(&target);
    assert_eq!(
        query(&mut s, &["XRANGE", "s", "-", "+"]),
        "*1 *2 $3 1-1 *2 $1 f $1 v "
    );
    assert_eq!(query(&mut s, &["GET", "b"]), "$1 2 ");
}

#[test]
fn migrate_aof_stops_at_the_first_command_it_cannot_import() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-module", &target);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`json.set doc $ {}`") && err.contains("stopped after 1 commands"),
        "{err}"
    );
    assert!(
        !moon_manifest::manifest_path(&target).exists(),
        "nothing written"
    );
}

#[test]
fn migrate_aof_imports_every_selected_database_into_the_same_number() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("moon");
    let out = import("redis7-db1", &target);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = replay_layout(&target);
    assert_eq!(query(&mut s, &["GET", "a"]), "$1 1 ");
    assert_eq!(
        query(&mut s, &["EXISTS", "other"]),
        ":0 ",
        "not in database 0"
    );
    assert_eq!(query(&mut s, &["MOON.DB", "1"]), "+OK ");
    assert_eq!(query(&mut s, &["GET", "other"]), "$1 v ", "in database 1");
}

/// Review finding: resharding replays each shard's log on its own. A SWAPDB (or FLUSHDB) is in
/// every shard's log; replayed into one shared keyspace, each copy acted on the keys other
/// shards had replayed, and the keys ended up in the wrong database.
#[test]
fn migrate_aof_replays_each_shard_alone_so_swapdb_moves_every_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // a lives on shard 0, b on shard 1 (of 2).
    let pick = |shard: usize| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| moon_store::slot::shard_for_key(k.as_bytes(), 2) == shard)
            .unwrap()
    };
    let (a, b) = (pick(0), pick(1));
    let m = PerShard::new(1, vec![0, 0]);
    let c = |words: &[&str]| -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    };
    for (shard, key) in [(0, &a), (1, &b)] {
        let shard_dir = PerShard::shard_dir(dir, shard);
        std::fs::create_dir_all(&shard_dir).unwrap();
        let mut log = Vec::new();
        moon_aof::append_group_record(1, &[c(&["MOON.DB", "1"]), c(&["SET", key, "v"])], &mut log)
            .unwrap();
        moon_aof::append_command_record(2, &c(&["SWAPDB", "1", "2"]), &mut log).unwrap();
        std::fs::write(m.incr_path(dir, shard), log).unwrap();
    }
    std::fs::write(moon_manifest::manifest_path(dir), m.render()).unwrap();
    let (code, out) = run(&["migrate-aof", "--shards", "3"], dir);
    assert_eq!(code, 0, "{out}");
    let mut s = replay_layout(dir);
    for key in [&a, &b] {
        assert_eq!(query(&mut s, &["MOON.DB", "2"]), "+OK ");
        assert_eq!(
            query(&mut s, &["GET", key]),
            "$1 v ",
            "{key} is in database 2"
        );
        assert_eq!(query(&mut s, &["MOON.DB", "1"]), "+OK ");
        assert_eq!(
            query(&mut s, &["EXISTS", key]),
            ":0 ",
            "{key} left database 1"
        );
    }
}

/// A one-shard directory as a rewrite leaves it: seq 2, a base of `keys` SETs (LSNs 1..=keys)
/// recorded in the manifest (length and CRC-32), and an empty incr.
fn rewritten_dir(keys: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerShard::new(2, vec![keys]);
    std::fs::create_dir_all(PerShard::shard_dir(tmp.path(), 0)).unwrap();
    let mut base = Vec::new();
    for lsn in 1..=keys {
        let cmd = [
            Bytes::from("SET"),
            Bytes::from(format!("k{lsn}")),
            Bytes::from("v"),
        ];
        moon_aof::append_command_record(lsn, &cmd, &mut base).unwrap();
    }
    m.bases[0] = Some(moon_manifest::BaseInfo {
        bytes: base.len() as u64,
        crc32: crc32fast::hash(&base),
    });
    std::fs::write(m.base_path(tmp.path(), 0), &base).unwrap();
    std::fs::write(m.incr_path(tmp.path(), 0), b"").unwrap();
    std::fs::write(moon_manifest::manifest_path(tmp.path()), m.render()).unwrap();
    let path = m.base_path(tmp.path(), 0);
    (tmp, path, base)
}

/// Issue 22, 6: `migrate-aof` refuses exactly what the server's startup refuses — a base
/// missing, empty, partial or foreign, a damaged first incr record — before it writes or
/// deletes anything. (Before: it replayed what was there, wrote a layout without the lost
/// keys and deleted the old files.)
#[test]
fn migrate_aof_refuses_what_the_server_refuses_and_deletes_nothing() {
    let (tmp, base_path, base) = rewritten_dir(20);
    let manifest = std::fs::read_to_string(moon_manifest::manifest_path(tmp.path())).unwrap();
    let mut cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("missing", None, "is missing"),
        ("empty", Some(Vec::new()), "but the manifest recorded"),
        (
            "partial",
            Some(base[..base.len() / 2].to_vec()),
            "but the manifest recorded",
        ),
    ];
    let mut foreign = base.clone();
    let half = foreign.len() / 2;
    foreign[half..].fill(0);
    cases.push(("zero-padded", Some(foreign), "does not match the manifest"));
    for (what, content, expected) in cases {
        match &content {
            None => std::fs::remove_file(&base_path).unwrap(),
            Some(c) => std::fs::write(&base_path, c).unwrap(),
        }
        let (code, out) = run(&["migrate-aof", "--shards", "2"], tmp.path());
        assert_ne!(code, 0, "{what}: {out}");
        assert!(
            out.contains(expected) && out.contains("missing-aof-file.md"),
            "{what}: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(moon_manifest::manifest_path(tmp.path())).unwrap(),
            manifest,
            "{what}: the manifest is unchanged"
        );
        assert_eq!(
            std::fs::read(&base_path).ok(),
            content,
            "{what}: the base is untouched"
        );
        assert!(
            !PerShard::shard_dir(tmp.path(), 1).exists(),
            "{what}: nothing written"
        );
        // check-aof names the same problem.
        let (code, out) = run(&["check-aof"], tmp.path());
        assert_eq!(code, 1, "{what}: {out}");
    }
    // A damaged first incr record with valid ones after it is corruption, not a torn tail.
    std::fs::write(&base_path, &base).unwrap();
    let mut incr = Vec::new();
    for lsn in 21..=30 {
        let cmd = [
            Bytes::from("SET"),
            Bytes::from(format!("n{lsn}")),
            Bytes::from("v"),
        ];
        moon_aof::append_command_record(lsn, &cmd, &mut incr).unwrap();
    }
    incr[14] ^= 0x20;
    let incr_path = tmp.path().join("appendonlydir/shard-0/moon.aof.2.incr.aof");
    std::fs::write(&incr_path, &incr).unwrap();
    let (code, out) = run(&["migrate-aof", "--shards", "2"], tmp.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("corrupt at offset 0"), "{out}");
    assert_eq!(std::fs::read(&incr_path).unwrap(), incr);
    // Whole again: the migration goes through and keeps every key.
    incr[14] ^= 0x20;
    std::fs::write(&incr_path, &incr).unwrap();
    let (code, out) = run(&["migrate-aof", "--shards", "2"], tmp.path());
    assert_eq!(code, 0, "{out}");
    let keys = read_layout(tmp.path());
    assert_eq!(keys.len(), 30, "{keys:?}");
}

/// Issue 22, 6, for a manifest written before bases were recorded: a base that is missing
/// while the incr does not start at or below `max_lsn` is refused, as the server refuses it.
#[test]
fn migrate_aof_refuses_a_missing_base_of_an_older_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let aof = tmp.path().join("appendonlydir");
    std::fs::create_dir_all(aof.join("shard-0")).unwrap();
    let manifest = "version 2\nseq 2\nshards 1\nshard 0 max_lsn 20\n";
    std::fs::write(aof.join("moon.aof.manifest"), manifest).unwrap();
    let mut incr = Vec::new();
    let cmd = [Bytes::from("SET"), Bytes::from("later"), Bytes::from("v")];
    moon_aof::append_command_record(21, &cmd, &mut incr).unwrap();
    let incr_path = aof.join("shard-0/moon.aof.2.incr.aof");
    std::fs::write(&incr_path, &incr).unwrap();
    let (code, out) = run(&["migrate-aof", "--shards", "2"], tmp.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("is missing") && out.contains("missing-aof-file.md"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(aof.join("moon.aof.manifest")).unwrap(),
        manifest
    );
    assert_eq!(std::fs::read(&incr_path).unwrap(), incr, "the incr is kept");
}

/// Review finding: check-aof judges a base as the server does — a damaged last record of a
/// base is data lost, not a harmless torn tail — and `--fix` never changes a base (cutting it
/// could only lose more, and the manifest's record of it would never match again).
#[test]
fn check_aof_never_calls_a_damaged_base_harmless_nor_fixes_it() {
    let (tmp, base_path, base) = rewritten_dir(20);
    let mut damaged = base.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&base_path, &damaged).unwrap();
    for args in [&["check-aof"][..], &["check-aof", "--fix"]] {
        let (code, out) = run(args, tmp.path());
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(
            !out.contains("harmless") && out.contains("missing-aof-file.md"),
            "{out}"
        );
        assert_eq!(
            std::fs::read(&base_path).unwrap(),
            damaged,
            "{args:?}: base untouched"
        );
    }
    // The same with a manifest that predates recorded bases.
    let manifest = moon_manifest::manifest_path(tmp.path());
    std::fs::write(
        &manifest,
        "version 2\nseq 2\nshards 1\nshard 0 max_lsn 20\n",
    )
    .unwrap();
    let (code, out) = run(&["check-aof", "--fix"], tmp.path());
    assert_eq!(code, 1, "{out}");
    assert_eq!(std::fs::read(&base_path).unwrap(), damaged);
    std::fs::write(&base_path, &base).unwrap();
    let (code, out) = run(&["check-aof"], tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok, 20 records, last LSN 20"), "{out}");
}

/// A legacy log is fed to the parser in 4 MiB chunks: commands that straddle a chunk's end,
/// and one longer than a chunk, come through whole.
#[test]
fn migrate_aof_reads_a_legacy_log_larger_than_its_read_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let aof = moon_manifest::aof_dir(tmp.path());
    std::fs::create_dir_all(&aof).unwrap();
    std::fs::write(
        aof.join("moon.aof.manifest"),
        "seq 1\nincr moon.aof.1.incr.aof\n",
    )
    .unwrap();
    let mut log = Vec::new();
    let mid = "m".repeat(1000);
    for i in 0..6000 {
        log.extend(resp(&["SET", &format!("k{i}"), &mid]));
    }
    let huge = "h".repeat(9 << 20);
    log.extend(resp(&["SET", "huge", &huge]));
    log.extend(resp(&["SET", "last", "v"]));
    std::fs::write(aof.join("moon.aof.1.incr.aof"), &log).unwrap();
    let (code, out) = run(&["migrate-aof", "--shards", "2"], tmp.path());
    assert_eq!(code, 0, "{out}");
    let mut store = replay_layout(tmp.path());
    assert_eq!(query(&mut store, &["DBSIZE"]), ":6002 ");
    assert_eq!(
        query(&mut store, &["STRLEN", "huge"]),
        format!(":{} ", 9 << 20)
    );
    assert_eq!(query(&mut store, &["STRLEN", "k5999"]), ":1000 ");
    assert_eq!(query(&mut store, &["GET", "last"]), "$1 v ");
}
