//! Geo commands against the real binary with a real client: Redis 7.0.15's answers (taken
//! from redis-server for the same points), searches and stores on one shard and across
//! shards, RESP3 coordinates, and the stored sets after SIGKILL.

mod common;

use common::{cmd, expect_err, keys_on_different_shards, MoonServer};

fn sicily(c: &mut redis::Connection, key: &str) {
    let added: i64 = cmd(
        c,
        &[
            "GEOADD",
            key,
            "13.361389",
            "38.115556",
            "Palermo",
            "15.087269",
            "37.502669",
            "Catania",
            "12.758489",
            "38.788135",
            "edge1",
            "17.241510",
            "38.788135",
            "edge2",
        ],
    );
    assert_eq!(added, 4);
}

#[test]
fn geo_commands_answer_as_redis() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    sicily(&mut c, "Sicily");
    assert_eq!(
        cmd::<Vec<Option<Vec<String>>>>(&mut c, &["GEOPOS", "Sicily", "Palermo", "nope"]),
        vec![
            Some(vec![
                "13.36138933897018433".to_string(),
                "38.11555639549629859".to_string()
            ]),
            None
        ]
    );
    assert_eq!(
        cmd::<String>(&mut c, &["GEODIST", "Sicily", "Palermo", "Catania", "km"]),
        "166.2742"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["GEODIST", "Sicily", "edge1", "edge2", "mi"]),
        "241.4823"
    );
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["GEODIST", "Sicily", "Palermo", "nope"]),
        None
    );
    assert_eq!(
        cmd::<Vec<Option<String>>>(&mut c, &["GEOHASH", "Sicily", "Palermo", "Catania", "x"]),
        vec![
            Some("sqc8b49rny0".to_string()),
            Some("sqdtr74hyu0".to_string()),
            None
        ]
    );
    let near: Vec<(String, String)> = cmd(
        &mut c,
        &[
            "GEORADIUS",
            "Sicily",
            "15",
            "37",
            "200",
            "km",
            "WITHDIST",
            "ASC",
        ],
    );
    assert_eq!(
        near,
        vec![
            ("Catania".to_string(), "56.4413".to_string()),
            ("Palermo".to_string(), "190.4424".to_string())
        ]
    );
    let boxed: Vec<(String, String, i64, (String, String))> = cmd(
        &mut c,
        &[
            "GEOSEARCH",
            "Sicily",
            "FROMLONLAT",
            "15",
            "37",
            "BYBOX",
            "400",
            "400",
            "km",
            "ASC",
            "WITHCOORD",
            "WITHDIST",
            "WITHHASH",
        ],
    );
    let names: Vec<&str> = boxed.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(names, ["Catania", "Palermo", "edge2", "edge1"]);
    assert_eq!(boxed[2].1, "279.7403");
    assert_eq!(boxed[3].1, "279.7405");
    assert_eq!(boxed[2].2, 3481342659049484);
    assert_eq!(
        boxed[3].3,
        (
            "12.7584877610206604".to_string(),
            "38.78813451624225195".to_string()
        )
    );
    assert_eq!(
        cmd::<Vec<String>>(
            &mut c,
            &[
                "GEOSEARCH",
                "Sicily",
                "FROMMEMBER",
                "Palermo",
                "BYRADIUS",
                "300",
                "mi",
                "DESC"
            ]
        ),
        ["edge2", "Catania", "edge1", "Palermo"]
    );
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &[
                "GEOSEARCHSTORE",
                "dst",
                "Sicily",
                "FROMLONLAT",
                "15",
                "37",
                "BYRADIUS",
                "200",
                "km",
                "STOREDIST"
            ]
        ),
        2
    );
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["ZRANGE", "dst", "0", "-1", "WITHSCORES"]),
        [
            "Catania",
            "56.441257870158204",
            "Palermo",
            "190.44242984775784"
        ]
    );
    // Redis's errors.
    for (words, want) in [
        (
            &["GEOADD", "Sicily", "200", "100", "x"][..],
            "ERR invalid longitude,latitude pair 200.000000,100.000000",
        ),
        (&["GEOADD", "Sicily", "XX", "NX", "1", "2", "x"], "ERR syntax error"),
        (
            &["GEODIST", "Sicily", "a", "b", "yard"],
            "ERR unsupported unit provided. please use M, KM, FT, MI",
        ),
        (
            &["GEORADIUS", "Sicily", "15", "37", "-1", "km"],
            "ERR radius cannot be negative",
        ),
        (
            &["GEORADIUS", "Sicily", "15", "37", "1", "km", "COUNT", "0"],
            "ERR COUNT must be > 0",
        ),
        (
            &["GEORADIUS", "Sicily", "15", "37", "1", "km", "ANY"],
            "ERR the ANY argument requires COUNT argument",
        ),
        (
            &["GEOSEARCH", "Sicily", "BYBOX", "1", "1", "km", "ASC"],
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for GEOSEARCH",
        ),
        (
            &["GEOSEARCH", "Sicily", "FROMMEMBER", "nope", "BYBOX", "1", "1", "km"],
            "ERR could not decode requested zset member",
        ),
        (
            &["GEORADIUS", "Sicily", "15", "37", "1", "km", "STORE", "x", "WITHDIST"],
            "ERR STORE option in GEORADIUS is not compatible with WITHDIST, WITHHASH and WITHCOORD options",
        ),
        (
            &["GEORADIUS_RO", "Sicily", "15", "37", "1", "km", "STORE", "x"],
            "ERR syntax error",
        ),
    ] {
        assert_eq!(expect_err(&mut c, words), want, "{words:?}");
    }
    cmd::<()>(&mut c, &["SET", "str", "x"]);
    assert!(expect_err(&mut c, &["GEOPOS", "str", "a"]).starts_with("WRONGTYPE"));
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["GEORADIUS", "nokey", "1", "2", "3", "km"]),
        Vec::<String>::new()
    );
    // RESP3: coordinates are doubles with Redis's digits.
    let mut c3 = s.client();
    redis::cmd("HELLO")
        .arg("3")
        .query::<redis::Value>(&mut c3)
        .expect("HELLO 3");
    let pos: redis::Value = redis::cmd("GEOPOS")
        .arg("Sicily")
        .arg("Palermo")
        .query(&mut c3)
        .expect("GEOPOS");
    let redis::Value::Array(items) = pos else {
        panic!("GEOPOS: {pos:?}")
    };
    let Some(redis::Value::Array(pair)) = items.first() else {
        panic!("GEOPOS: {items:?}")
    };
    assert!(
        matches!(
            pair.as_slice(),
            [redis::Value::Double(lon), redis::Value::Double(lat)]
                if *lon == 13.361389338970184 && *lat == 38.1155563954963
        ),
        "{pair:?}"
    );
}

#[test]
fn geo_stores_across_shards_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (src, dst) = (k[0].as_str(), k[1].as_str());
    sicily(&mut c, src);
    cmd::<i64>(&mut c, &["GEOADD", dst, "1", "1", "old"]);
    cmd::<i64>(&mut c, &["PEXPIRE", dst, "3600000"]);
    let stored: i64 = cmd(
        &mut c,
        &["GEORADIUS", src, "15", "37", "200", "km", "STOREDIST", dst],
    );
    assert_eq!(stored, 2);
    assert_eq!(
        cmd::<Vec<String>>(&mut c, &["ZRANGE", dst, "0", "-1", "WITHSCORES"]),
        [
            "Catania",
            "56.441257870158204",
            "Palermo",
            "190.44242984775784"
        ]
    );
    assert_eq!(cmd::<i64>(&mut c, &["PTTL", dst]), -1, "a store replaces");
    let dst2 = format!("{dst}-2");
    let stored: i64 = cmd(
        &mut c,
        &[
            "GEOSEARCHSTORE",
            &dst2,
            src,
            "FROMMEMBER",
            "Palermo",
            "BYBOX",
            "700",
            "700",
            "km",
        ],
    );
    assert_eq!(stored, 4);
    // An empty result deletes the destination, on either shard.
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &[
                "GEORADIUSBYMEMBER",
                src,
                "Palermo",
                "1",
                "m",
                "STORE",
                "gone"
            ]
        ),
        1
    );
    cmd::<i64>(&mut c, &["GEOADD", "gone", "1", "1", "x"]);
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &["GEORADIUS", src, "0", "0", "1", "m", "STORE", "gone"]
        ),
        0
    );
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "gone"]), 0);
    let before: Vec<Vec<String>> = [dst, dst2.as_str()]
        .iter()
        .map(|k| cmd(&mut c, &["ZRANGE", k, "0", "-1", "WITHSCORES"]))
        .collect();
    s.kill();
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    let after: Vec<Vec<String>> = [dst, dst2.as_str()]
        .iter()
        .map(|k| cmd(&mut c, &["ZRANGE", k, "0", "-1", "WITHSCORES"]))
        .collect();
    assert_eq!(before, after);
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "gone"]), 0);
}
