//! Files and DUMP payloads written by Debian's redis-server 7.0.15 (`tests/fixtures/make.sh`)
//! read back exactly; what this crate writes reads back the same; damage is refused.

use std::collections::BTreeMap;

use bytes::Bytes;
use moon_rdb::{decode_dump, encode_dump, FileReader, FileWriter, Item, Object, StreamId};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (db, key) -> (value, expiry).
type Keys = BTreeMap<(u64, Bytes), (Object, Option<u64>)>;

/// Every key of a file, plus the function libraries.
fn read_all(data: &[u8]) -> (Keys, Vec<Bytes>) {
    let mut r = FileReader::new(data, false).expect("header");
    let (mut keys, mut functions) = (BTreeMap::new(), Vec::new());
    while let Some(item) = r.next_item().expect("a valid file") {
        match item {
            Item::Key(k) => {
                keys.insert((k.db, k.key), (k.value, k.expire_at));
            }
            Item::Function(code) => functions.push(code),
            _ => {}
        }
    }
    assert_eq!(r.end(), Some(data.len()), "the checksum ends the file");
    (keys, functions)
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const FAR: u64 = 4102444800000;

#[test]
fn a_redis_7_0_dump_reads_whole() {
    let data = fixture("every.rdb");
    let (keys, functions) = read_all(&data);
    let get = |db: u64, k: &str| keys.get(&(db, bytes(k))).unwrap_or_else(|| panic!("{k}"));
    assert_eq!(get(0, "s:plain").0, Object::String(bytes("hello")));
    assert_eq!(get(0, "s:int").0, Object::String(bytes("12345")));
    assert_eq!(get(0, "s:neg").0, Object::String(bytes("-7")));
    assert_eq!(
        get(0, "s:i64").0,
        Object::String(bytes("9223372036854775807"))
    );
    assert_eq!(
        get(0, "s:lzf").0,
        Object::String(bytes(&"abcdefghij".repeat(40)))
    );
    assert_eq!(get(0, "s:empty").0, Object::String(Bytes::new()));
    assert_eq!(
        get(0, "s:bin").0,
        Object::String(Bytes::from_static(b"a\x00b\xffc"))
    );
    assert_eq!(get(0, "s:ttl"), &(Object::String(bytes("v")), Some(FAR)));
    let Object::List(l) = &get(0, "l:small").0 else {
        panic!()
    };
    assert_eq!(
        l[..5],
        [
            bytes("a"),
            bytes("1"),
            bytes("-5"),
            bytes("300"),
            bytes("70000")
        ]
    );
    let Object::List(l) = &get(0, "l:big").0 else {
        panic!()
    };
    assert_eq!(l.len(), 1000);
    assert_eq!(l[999], bytes("1000"));
    let Object::Set(s) = &get(0, "set:int").0 else {
        panic!()
    };
    let mut s = s.clone();
    s.sort();
    assert_eq!(s, ["-100", "1", "2", "3", "5000000000", "70000"].map(bytes));
    let Object::Set(s) = &get(0, "set:big").0 else {
        panic!()
    };
    assert_eq!(s.len(), 600);
    let Object::ZSet(z) = &get(0, "z:small").0 else {
        panic!()
    };
    let z: BTreeMap<_, _> = z.iter().map(|(m, s)| (m.clone(), s.to_string())).collect();
    assert_eq!(z[&bytes("c")], "-inf");
    assert_eq!(z[&bytes("b")], "2.5");
    assert_eq!(z[&bytes("d")], "0.1");
    let Object::ZSet(z) = &get(0, "z:big").0 else {
        panic!()
    };
    assert_eq!(z.len(), 200);
    let Object::Hash(h) = &get(0, "h:small").0 else {
        panic!()
    };
    assert_eq!(h.len(), 3);
    assert_eq!(get(0, "h:small").1, Some(FAR));
    let Object::Hash(h) = &get(0, "h:big").0 else {
        panic!()
    };
    assert_eq!(h.len(), 200);
    let Object::Stream(st) = &get(0, "st").0 else {
        panic!()
    };
    let ids: Vec<_> = st.entries.iter().map(|e| (e.0.ms, e.0.seq)).collect();
    assert_eq!(ids, [(1, 1), (1, 2), (3, 0), (4, 0)]);
    assert_eq!(st.entries[0].1, ["name", "a", "n", "1"].map(bytes));
    assert_eq!(st.last_id, StreamId { ms: 4, seq: 0 });
    assert_eq!(st.max_deleted, StreamId { ms: 2, seq: 0 });
    assert_eq!(st.entries_added, 5);
    let g1 = &st.groups[0];
    assert_eq!(g1.name, bytes("g1"));
    let pel: Vec<_> = g1
        .pending
        .iter()
        .map(|p| (p.id.ms, p.id.seq, p.consumer.clone(), p.deliveries))
        .collect();
    assert_eq!(pel, [(1, 2, bytes("alice"), 1), (3, 0, bytes("bob"), 1)]);
    assert_eq!(g1.consumers.len(), 2);
    assert_eq!(st.groups[1].entries_read, Some(4));
    assert_eq!(st.groups[1].consumers[0].name, bytes("carol"));
    let Object::Stream(big) = &get(0, "big:st").0 else {
        panic!()
    };
    assert_eq!(big.entries.len(), 251);
    assert_eq!(get(1, "db1:key").0, Object::String(bytes("one")));
    assert_eq!(get(1, "db1:list").1, Some(FAR));
    assert!(keys.contains_key(&(5, bytes("db5:h"))));
    assert_eq!(keys.len(), 24);
    assert_eq!(functions.len(), 1);
    assert!(functions[0].starts_with(b"#!lua name=fixturelib"));
}

#[test]
fn an_rdb_preamble_aof_base_reads_like_the_dump() {
    let base = fixture("every-aof/appendonly.aof.2.base.rdb");
    assert_eq!(read_all(&base).0, read_all(&fixture("every.rdb")).0);
}

/// `db key-hex payload-hex` lines.
fn dumps() -> Vec<(u64, Bytes, Vec<u8>)> {
    let text = String::from_utf8(fixture("dumps.txt")).expect("text");
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (w[0].parse().expect("db"), Bytes::from(hex(w[1])), hex(w[2]))
        })
        .collect()
}

#[test]
fn redis_dump_payloads_decode_to_the_files_values_and_reencode() {
    let (keys, _) = read_all(&fixture("every.rdb"));
    let payloads = dumps();
    // Every key of the file, and `after:rewrite`, written after SAVE.
    assert_eq!(payloads.len(), keys.len() + 1);
    for (db, key, payload) in payloads {
        let obj = decode_dump(&payload).unwrap_or_else(|e| panic!("{key:?}: {e}"));
        if key != "after:rewrite" {
            assert_eq!(obj, keys[&(db, key.clone())].0, "{key:?}");
        }
        let ours = encode_dump(&obj);
        assert_eq!(decode_dump(&ours).expect("our payload"), obj, "{key:?}");
    }
}

#[test]
fn damaged_payloads_and_files_are_refused_with_an_offset() {
    let payloads = dumps();
    for (_, key, payload) in payloads.iter().take(8) {
        for i in 0..payload.len() {
            let mut bad = payload.clone();
            bad[i] ^= 0x20;
            assert!(decode_dump(&bad).is_err(), "{key:?} byte {i} flipped");
        }
        for cut in 0..payload.len() {
            assert!(decode_dump(&payload[..cut]).is_err());
        }
    }
    let data = fixture("every.rdb");
    let mut bad = data.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    let err = (|| -> Result<(), moon_rdb::Error> {
        let mut r = FileReader::new(&bad, false)?;
        while r.next_item()?.is_some() {}
        Ok(())
    })()
    .expect_err("a flipped bit is found");
    assert!(err.offset > 0);
    for cut in [9, 100, n / 3, n - 9, n - 1] {
        let err = (|| -> Result<(), moon_rdb::Error> {
            let mut r = FileReader::new(&data[..cut], false)?;
            while r.next_item()?.is_some() {}
            Ok(())
        })()
        .expect_err("a truncated file is refused");
        assert!(err.to_string().contains("offset"), "{err}");
    }
}

#[test]
fn what_the_writer_writes_reads_back() {
    let (keys, functions) = read_all(&fixture("every.rdb"));
    let mut w = FileWriter::new(Vec::new(), moon_rdb::REDIS_7_0);
    w.aux(b"redis-bits", b"64").expect("aux");
    let mut db = u64::MAX;
    for ((d, k), (v, at)) in &keys {
        if *d != db {
            w.select_db(*d, 0, 0).expect("select");
            db = *d;
        }
        w.key(k, v, *at).expect("key");
    }
    for f in &functions {
        w.function(f).expect("function");
    }
    let out = w.finish().expect("finish");
    let (back, fback) = read_all(&out);
    assert_eq!(back, keys);
    assert_eq!(fback, functions);
}

#[test]
fn field_ttls_need_redis_7_4s_version() {
    let obj = Object::Hash(vec![
        moon_rdb::HashField {
            field: bytes("a"),
            value: bytes("1"),
            expire_at: FAR,
        },
        moon_rdb::HashField {
            field: bytes("b"),
            value: bytes("2"),
            expire_at: 0,
        },
    ]);
    let p = encode_dump(&obj);
    assert_eq!(&p[p.len() - 10..p.len() - 8], &[12, 0]);
    assert_eq!(decode_dump(&p).expect("decodes"), obj);
    let mut w = FileWriter::new(Vec::new(), moon_rdb::REDIS_7_0);
    assert!(w.key(b"h", &obj, None).is_err());
    let mut w = FileWriter::new(Vec::new(), moon_rdb::REDIS_7_4);
    w.key(b"h", &obj, None).expect("7.4 holds field TTLs");
    let out = w.finish().expect("finish");
    let (back, _) = read_all(&out);
    assert_eq!(back[&(0, bytes("h"))].0, obj);
}
