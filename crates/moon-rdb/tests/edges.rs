//! Hand-built payloads for what Redis accepts at the edges of the format (and what it must not
//! cost): each one found by review.

use bytes::Bytes;
use moon_rdb::{
    decode_dump, encode_dump, FileReader, HashField, Item, Object, StreamId, StreamValue,
};

/// `body` (type byte and value) with a version-10 footer.
fn payload(body: &[u8]) -> Vec<u8> {
    let mut p = body.to_vec();
    p.extend_from_slice(&10u16.to_le_bytes());
    let crc = moon_rdb::crc64(0, &p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

/// An RDB string of `s` (short ones only).
fn s(v: &[u8]) -> Vec<u8> {
    assert!(v.len() < 64);
    let mut out = vec![v.len() as u8];
    out.extend_from_slice(v);
    out
}

#[test]
fn a_field_ttl_hash_with_a_zero_minimum_does_not_overflow() {
    // RDB_TYPE_HASH_METADATA, minExpire 0, one field with relative TTL 1 (= deadline 0: none).
    let mut body = vec![24];
    body.extend_from_slice(&0u64.to_le_bytes());
    body.push(1);
    body.push(1);
    body.extend(s(b"f"));
    body.extend(s(b"v"));
    let obj = decode_dump(&payload(&body)).expect("Redis accepts it");
    let Object::Hash(h) = obj else { panic!() };
    assert_eq!(h[0].expire_at, 0);
}

#[test]
fn empty_quicklist_nodes_are_skipped_as_redis_skips_them() {
    // RDB_TYPE_LIST_QUICKLIST_2 with two packed nodes: an empty listpack, then one holding "a".
    let empty = [7u8, 0, 0, 0, 0, 0, 0xff];
    let one = [10u8, 0, 0, 0, 1, 0, 0x81, b'a', 2, 0xff];
    let mut body = vec![18, 2, 2];
    body.push(empty.len() as u8);
    body.extend_from_slice(&empty);
    body.push(2);
    body.push(one.len() as u8);
    body.extend_from_slice(&one);
    let obj = decode_dump(&payload(&body)).expect("decodes");
    assert_eq!(obj, Object::List(vec![Bytes::from_static(b"a")]));
}

#[test]
fn a_zipmap_length_of_253_is_a_plain_length() {
    let v = vec![b'x'; 253];
    let mut zm = vec![1u8, 1, b'k', 253, 0];
    zm.extend_from_slice(&v);
    zm.push(0xff);
    // RDB_TYPE_HASH_ZIPMAP, the zipmap as a 14-bit-length string.
    let mut body = vec![9, 0x40 | (zm.len() >> 8) as u8, zm.len() as u8];
    body.extend_from_slice(&zm);
    let Object::Hash(h) = decode_dump(&payload(&body)).expect("decodes") else {
        panic!()
    };
    assert_eq!(h[0].value.len(), 253);
}

#[test]
fn an_lzf_string_claiming_more_than_512_mib_is_refused() {
    // RDB_TYPE_STRING, LZF: compressed 32 MiB (not present), raw 4 GiB - 1.
    let mut body = vec![0, 0xc3, 0x80];
    body.extend_from_slice(&(32u32 << 20).to_be_bytes());
    body.push(0x80);
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode_dump(&payload(&body)).is_err());
}

#[test]
fn module_values_with_floats_are_stepped_over() {
    // A file: one module value (opcodes: float, double, string, EOF), then a string key.
    let mut data = b"REDIS0010".to_vec();
    data.push(7);
    data.extend(s(b"m"));
    data.push(0x81);
    data.extend_from_slice(&(0x1234u64 << 10).to_be_bytes());
    data.push(3);
    data.extend_from_slice(&1.5f32.to_le_bytes());
    data.push(4);
    data.extend_from_slice(&2.5f64.to_le_bytes());
    data.push(5);
    data.extend(s(b"blob"));
    data.push(0);
    data.push(0);
    data.extend(s(b"k"));
    data.extend(s(b"v"));
    data.push(255);
    let crc = moon_rdb::crc64(0, &data);
    data.extend_from_slice(&crc.to_le_bytes());
    let mut r = FileReader::new(&data, true).expect("header");
    assert!(matches!(r.next_item(), Ok(Some(Item::Skipped { .. }))));
    let Ok(Some(Item::Key(k))) = r.next_item() else {
        panic!("the key after it")
    };
    assert_eq!(k.value, Object::String(Bytes::from_static(b"v")));
    assert_eq!(r.next_item(), Ok(None));
}

#[test]
fn a_stream_with_large_entries_is_cut_into_nodes_that_read_back() {
    let entries: Vec<(StreamId, Vec<Bytes>)> = (1..=300u64)
        .map(|i| {
            (
                StreamId { ms: i, seq: 0 },
                vec![
                    Bytes::from_static(b"f"),
                    Bytes::from(vec![b'v'; (i as usize % 7) * 300]),
                ],
            )
        })
        .collect();
    let st = StreamValue {
        last_id: StreamId { ms: 300, seq: 0 },
        first_id: StreamId { ms: 1, seq: 0 },
        entries_added: 300,
        entries,
        ..Default::default()
    };
    let obj = Object::Stream(Box::new(st));
    assert_eq!(decode_dump(&encode_dump(&obj)).expect("reads back"), obj);
}

#[test]
fn field_ttls_past_the_largest_deadline_are_refused() {
    let obj = Object::Hash(vec![HashField {
        field: Bytes::from_static(b"f"),
        value: Bytes::from_static(b"v"),
        expire_at: 1 << 48,
    }]);
    assert!(decode_dump(&encode_dump(&obj)).is_err());
}

#[test]
fn files_before_version_5_end_at_eof_without_a_checksum() {
    let mut data = b"REDIS0004".to_vec();
    data.push(254);
    data.push(0);
    data.push(0);
    data.extend(s(b"k"));
    data.extend(s(b"v"));
    data.push(255);
    let mut r = FileReader::new(&data, false).expect("header");
    assert_eq!(r.next_item(), Ok(Some(Item::Db(0))));
    assert!(matches!(r.next_item(), Ok(Some(Item::Key(_)))));
    assert_eq!(r.next_item(), Ok(None));
    assert_eq!(r.end(), Some(data.len()));
    // A version-5 file must carry one.
    data[8] = b'5';
    let mut r = FileReader::new(&data, false).expect("header");
    let err = loop {
        match r.next_item() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a version-5 file without its checksum was accepted"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind, moon_rdb::ErrorKind::Truncated);
}
