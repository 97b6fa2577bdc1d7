//! Lua scripts (EVAL, EVALSHA, SCRIPT) against the real binary with a real client: Redis's
//! replies and errors, the sandbox, the script cache across connections and shards, scripts
//! in MULTI, a script's effects surviving SIGKILL whole, and two scripts as public client
//! libraries write them (a lock's release and extension, a token bucket).

mod common;

use common::{cmd, expect_err, keys_on_different_shards, MoonServer};

fn sha1(text: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn eval_answers_as_redis() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    assert_eq!(
        cmd::<(i64, String, Vec<i64>)>(&mut c, &["EVAL", "return {1, 'two', {3, 4}}", "0"]),
        (1, "two".into(), vec![3, 4])
    );
    assert_eq!(
        cmd::<Vec<String>>(
            &mut c,
            &[
                "EVAL",
                "return {KEYS[1], KEYS[2], ARGV[1]}",
                "2",
                "a",
                "b",
                "c"
            ]
        ),
        ["a", "b", "c"]
    );
    assert_eq!(cmd::<i64>(&mut c, &["EVAL", "return 3.99", "0"]), 3);
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["EVAL", "return false", "0"]),
        None
    );
    assert_eq!(
        cmd::<String>(&mut c, &["EVAL", "return redis.status_reply('FINE')", "0"]),
        "FINE"
    );
    assert_eq!(
        expect_err(
            &mut c,
            &["EVAL", "return redis.error_reply('MY error')", "0"]
        ),
        "MY error"
    );
    // Commands run in the keyspace; their replies come back as Lua values.
    assert_eq!(
        cmd::<(String, i64, String)>(
            &mut c,
            &[
                "EVAL",
                "redis.call('set', KEYS[1], ARGV[1]) \
                 return {redis.call('get', KEYS[1]), redis.call('incr', KEYS[1]), \
                 type(redis.call('get', 'missing'))}",
                "1",
                "counter",
                "41",
            ]
        ),
        ("41".into(), 42, "boolean".into())
    );
    assert_eq!(cmd::<String>(&mut c, &["GET", "counter"]), "42");
    // Errors name the script and the line, in Redis's words.
    cmd::<()>(&mut c, &["SET", "str", "text"]);
    let body = "local a = 1\nreturn redis.call('incr', KEYS[1])";
    assert_eq!(
        expect_err(&mut c, &["EVAL", body, "1", "str"]),
        format!(
            "ERR value is not an integer or out of range script: {}, on @user_script:2.",
            sha1(body)
        )
    );
    assert_eq!(
        cmd::<String>(
            &mut c,
            &[
                "EVAL",
                "local ok, e = pcall(redis.call, 'incr', KEYS[1]) return e",
                "1",
                "str"
            ]
        ),
        "ERR value is not an integer or out of range"
    );
    assert!(
        expect_err(&mut c, &["EVAL", "return redis.call('nosuch')", "0"])
            .starts_with("ERR Unknown Redis command called from script script: ")
    );
    assert!(
        expect_err(&mut c, &["EVAL", "return redis.call('multi')", "0"])
            .starts_with("ERR This Redis command is not allowed from script script: ")
    );
    assert!(
        expect_err(&mut c, &["EVAL", "return redis.call('get')", "0"])
            .starts_with("ERR Wrong number of args calling Redis command from script script: ")
    );
    assert!(expect_err(
        &mut c,
        &["EVAL", "return redis.call('eval', 'return 1', 0)", "0"]
    )
    .starts_with("ERR This Redis command is not allowed from script script: "));
    assert!(expect_err(&mut c, &["EVAL", "return 1 +", "0"])
        .starts_with("ERR Error compiling script (new function): user_script:1:"));
    assert_eq!(
        expect_err(&mut c, &["EVAL", "return 1", "2", "a"]),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        expect_err(&mut c, &["EVAL", "return 1", "-1"]),
        "ERR Number of keys can't be negative"
    );
    assert_eq!(
        expect_err(&mut c, &["EVAL", "return 1", "x"]),
        "ERR value is not an integer or out of range"
    );
    // The sandbox: no globals, no os/io, read-only libraries.
    for (body, want) in [
        ("x = 1", "Attempt to modify a readonly table"),
        ("return os.time()", "nonexistent global variable 'os'"),
        (
            "return io.open('/etc/passwd')",
            "nonexistent global variable 'io'",
        ),
        ("redis.call = nil", "Attempt to modify a readonly table"),
    ] {
        let e = expect_err(&mut c, &["EVAL", body, "0"]);
        assert!(e.contains(want), "{body}: {e}");
    }
    // A script that stops on an error keeps what it wrote before (Redis does not roll back).
    assert!(expect_err(
        &mut c,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], 'written') return redis.call('incr', KEYS[2])",
            "2",
            "before",
            "str"
        ]
    )
    .contains("not an integer"));
    assert_eq!(cmd::<String>(&mut c, &["GET", "before"]), "written");
    // Read-only scripts: EVAL_RO and the no-writes flag.
    assert!(expect_err(
        &mut c,
        &["EVAL_RO", "return redis.call('set', KEYS[1], 1)", "1", "k"]
    )
    .starts_with("ERR Write commands are not allowed from read-only scripts."));
    assert!(expect_err(
        &mut c,
        &[
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('del', KEYS[1])",
            "1",
            "k"
        ]
    )
    .starts_with("ERR Write commands are not allowed from read-only scripts."));
    assert_eq!(
        cmd::<String>(
            &mut c,
            &[
                "EVAL_RO",
                "return redis.call('get', KEYS[1])",
                "1",
                "before"
            ]
        ),
        "written"
    );
    assert_eq!(
        expect_err(&mut c, &["EVAL", "#!lua flags=fly\nreturn 1", "0"]),
        "ERR Unexpected flag in script shebang: fly"
    );
}

#[test]
fn the_script_cache_is_shared_by_every_connection_and_shard() {
    let s = MoonServer::start(2, &[]);
    let mut a = s.client();
    let mut b = s.client();
    let body = "return redis.call('incrby', KEYS[1], ARGV[1])";
    let sha: String = cmd(&mut a, &["SCRIPT", "LOAD", body]);
    assert_eq!(sha, sha1(body));
    let k = keys_on_different_shards(2);
    // EVALSHA from another connection, on keys of either shard.
    for key in &k {
        assert_eq!(cmd::<i64>(&mut b, &["EVALSHA", &sha, "1", key, "5"]), 5);
        assert_eq!(
            cmd::<i64>(&mut a, &["EVALSHA", &sha.to_uppercase(), "1", key, "1"]),
            6
        );
    }
    // EVAL caches too.
    let other = "return 'cached'";
    assert_eq!(cmd::<String>(&mut a, &["EVAL", other, "0"]), "cached");
    assert_eq!(
        cmd::<Vec<i64>>(&mut b, &["SCRIPT", "EXISTS", &sha1(other), &sha, "ffff"]),
        [1, 1, 0]
    );
    assert_eq!(
        cmd::<String>(&mut b, &["EVALSHA", &sha1(other), "0"]),
        "cached"
    );
    // INFO memory counts the cached scripts (Redis's SCRIPT FLUSH test reads it).
    let cached = |c: &mut redis::Connection| -> i64 {
        let info: String = cmd(c, &["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("number_of_cached_scripts")
    };
    assert!(cached(&mut b) >= 2);
    assert_eq!(cmd::<String>(&mut b, &["SCRIPT", "FLUSH"]), "OK");
    assert_eq!(cached(&mut b), 0);
    assert_eq!(
        expect_err(&mut a, &["EVALSHA", &sha, "1", &k[0], "1"]),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    assert_eq!(cmd::<Vec<i64>>(&mut a, &["SCRIPT", "EXISTS", &sha]), [0]);
    assert!(expect_err(&mut a, &["SCRIPT", "LOAD", "return +"])
        .starts_with("ERR Error compiling script (new function): user_script:1:"));
    assert_eq!(
        expect_err(&mut a, &["SCRIPT", "KILL"]),
        "NOTBUSY No scripts in execution right now."
    );
    // A key the script did not declare must be on the script's shard(s).
    assert!(expect_err(
        &mut a,
        &[
            "EVAL",
            "return redis.call('get', ARGV[1])",
            "1",
            &k[0],
            &k[1]
        ]
    )
    .starts_with("ERR Script attempted to access a non local key in a cluster node script: "));
    assert!(
        expect_err(&mut a, &["EVAL", "return redis.call('dbsize')", "1", &k[0]])
            .starts_with("ERR This command reads or writes every shard")
    );
    assert!(
        expect_err(&mut a, &["EVAL", "return redis.call('flushall')", "0"])
            .starts_with("ERR This command reads or writes every shard")
    );
    // SORT's BY and GET name keys too: inside a script they must be local as well.
    let e = expect_err(
        &mut a,
        &[
            "EVAL",
            "return redis.call('sort', KEYS[1], 'by', 'w_*')",
            "1",
            "{s}list",
        ],
    );
    assert!(e.contains("BY"), "{e}");
    // A script that does not compile is not kept (review finding: SCRIPT EXISTS said 1).
    let broken = "return +";
    assert!(expect_err(&mut a, &["EVAL", broken, "0"]).starts_with("ERR Error compiling script"));
    assert_eq!(
        cmd::<Vec<i64>>(&mut a, &["SCRIPT", "EXISTS", &sha1(broken)]),
        [0]
    );
}

/// Declared keys on several shards: the script runs inside a transaction over their shards,
/// each command on its key's shard; errors, pcall, SELECT and read-only scripts behave as on
/// one shard.
#[test]
fn a_script_s_keys_may_live_on_several_shards() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let (a, b) = (k[0].as_str(), k[1].as_str());
    cmd::<()>(&mut c, &["MSET", a, "10", b, "0"]);
    let transfer = "local n = tonumber(ARGV[1]) \
                    if tonumber(redis.call('get', KEYS[1])) < n then return redis.error_reply('ERR short') end \
                    redis.call('decrby', KEYS[1], n) \
                    local after = redis.call('incrby', KEYS[2], n) \
                    return {after, redis.call('get', KEYS[1])}";
    assert_eq!(
        cmd::<(i64, String)>(&mut c, &["EVAL", transfer, "2", a, b, "4"]),
        (4, "6".into())
    );
    assert_eq!(
        expect_err(&mut c, &["EVAL", transfer, "2", a, b, "7"]),
        "ERR short"
    );
    let sha: String = cmd(&mut c, &["SCRIPT", "LOAD", transfer]);
    assert_eq!(
        cmd::<(i64, String)>(&mut c, &["EVALSHA", &sha, "2", a, b, "6"]),
        (10, "0".into())
    );
    let body = "local a = 1\nlocal r = redis.call('incr', KEYS[2]) return r";
    cmd::<()>(&mut c, &["SET", b, "text"]);
    let e = expect_err(&mut c, &["EVAL", body, "2", a, b]);
    assert!(
        e.starts_with("ERR value is not an integer or out of range script: "),
        "{e}"
    );
    assert!(e.ends_with(", on @user_script:2."), "{e}");
    assert_eq!(
        cmd::<String>(
            &mut c,
            &[
                "EVAL",
                "local ok, e = pcall(redis.call, 'incr', KEYS[2]) return e",
                "2",
                a,
                b
            ]
        ),
        "ERR value is not an integer or out of range"
    );
    assert!(expect_err(
        &mut c,
        &["EVAL_RO", "return redis.call('set', KEYS[1], 1)", "2", a, b]
    )
    .starts_with("ERR Write commands are not allowed from read-only scripts."));
    assert_eq!(
        cmd::<Vec<String>>(
            &mut c,
            &[
                "EVAL_RO",
                "return {redis.call('get', KEYS[1]), redis.call('get', KEYS[2])}",
                "2",
                a,
                b
            ]
        ),
        ["0", "text"]
    );
    // One command's keys on two shards, inside a script: refused as Redis Cluster would.
    assert!(expect_err(
        &mut c,
        &[
            "EVAL",
            "return redis.call('mget', KEYS[1], KEYS[2])",
            "2",
            a,
            b
        ]
    )
    .contains("do not hash to the same slot"));
    // SELECT inside the script: its later commands run in that database, on any shard.
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &["EVAL", "redis.call('select', 3) redis.call('set', KEYS[1], 'in3') redis.call('set', KEYS[2], 'in3') return 1", "2", a, b]
        ),
        1
    );
    cmd::<()>(&mut c, &["SELECT", "3"]);
    assert_eq!(cmd::<Vec<String>>(&mut c, &["MGET", a, b]), ["in3", "in3"]);
    // In MULTI with other commands.
    cmd::<()>(&mut c, &["SELECT", "0"]);
    let (r,): (Vec<redis::Value>,) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(a)
        .arg("1")
        .ignore()
        .cmd("EVAL")
        .arg("return redis.call('incr', KEYS[1]) + redis.call('incr', KEYS[2])")
        .arg(2)
        .arg(a)
        .arg("{other}")
        .query(&mut c)
        .map(|v: Vec<redis::Value>| (v,))
        .expect("MULTI with a cross-shard EVAL");
    assert_eq!(r, [redis::Value::Int(3)]);
}

#[test]
fn scripts_run_inside_multi_and_a_pipeline() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let (replies,): (Vec<redis::Value>,) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("{t}n")
        .arg("10")
        .ignore()
        .cmd("EVAL")
        .arg("return redis.call('incrby', KEYS[1], ARGV[1])")
        .arg(1)
        .arg("{t}n")
        .arg(5)
        .cmd("GET")
        .arg("{t}n")
        .query(&mut c)
        .map(|v: Vec<redis::Value>| (v,))
        .expect("MULTI with EVAL");
    assert_eq!(
        replies,
        [
            redis::Value::Int(15),
            redis::Value::BulkString(b"15".to_vec())
        ]
    );
}

/// Each script's effects are one unit of the log: after SIGKILL in the middle of a stream of
/// scripts that each move one unit between two keys, the two keys still add up, and every
/// acknowledged script is there (appendfsync always).
#[test]
fn a_script_s_effects_survive_sigkill_whole() {
    transfers_survive_sigkill(["{acct}:a", "{acct}:b", "{acct}:log"]);
}

/// The same with the keys on two shards: each shard logs its part of each script, and after
/// SIGKILL every shard has its part of a script or none does.
#[test]
fn a_script_across_shards_survives_sigkill_whole() {
    let k = keys_on_different_shards(2);
    let log = format!("{{{}}}:log", k[0]);
    transfers_survive_sigkill([&k[0], &k[1], &log]);
}

fn transfers_survive_sigkill(keys: [&str; 3]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--appendfsync", "always"];
    let mut s = MoonServer::start_in(dir.path(), 2, &args).expect("start");
    let mut c = s.client();
    cmd::<()>(&mut c, &["SET", keys[0], "1000000"]);
    cmd::<()>(&mut c, &["SET", keys[1], "0"]);
    let transfer = "local n = tonumber(ARGV[1]) \
                    redis.call('decrby', KEYS[1], n) \
                    redis.call('incrby', KEYS[2], n) \
                    redis.call('rpush', KEYS[3], redis.call('time')[1]) \
                    return redis.call('get', KEYS[2])";
    let url = s.url();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let counter = acked.clone();
    let owned: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let worker = std::thread::spawn(move || {
        let mut c = redis::Client::open(url)
            .and_then(|cl| cl.get_connection())
            .expect("connect");
        loop {
            let r: redis::RedisResult<i64> = redis::cmd("EVAL")
                .arg(transfer)
                .arg(3)
                .arg(&owned)
                .arg(1)
                .query(&mut c);
            match r {
                Ok(b) => counter.store(b, std::sync::atomic::Ordering::SeqCst),
                Err(_) => break,
            }
        }
    });
    assert!(common::eventually(
        std::time::Duration::from_secs(30),
        || { acked.load(std::sync::atomic::Ordering::SeqCst) >= 300 }
    ));
    s.kill();
    worker.join().expect("worker");
    let acknowledged = acked.load(std::sync::atomic::Ordering::SeqCst);
    let s = MoonServer::start_in(dir.path(), 2, &args).expect("restart");
    let mut c = s.client();
    let (a, b): (i64, i64) = (
        cmd(&mut c, &["GET", keys[0]]),
        cmd(&mut c, &["GET", keys[1]]),
    );
    let logged: i64 = cmd(&mut c, &["LLEN", keys[2]]);
    assert_eq!(a + b, 1_000_000, "no torn transfer");
    assert_eq!(logged, b, "every transfer logged whole");
    assert!(
        b >= acknowledged,
        "{b} transfers recovered, {acknowledged} acknowledged"
    );
}

/// Scripts as client libraries ship them: a lock released and extended only by its owner
/// (redis-py's and Redlock's shape), and a token bucket over two keys under one hash tag
/// (Spring Cloud Gateway's shape), written here in their logic, not copied.
#[test]
fn a_lock_and_a_rate_limiter_work_as_libraries_use_them() {
    let s = MoonServer::start(2, &[]);
    let mut c = s.client();
    let release = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                       return redis.call('del', KEYS[1]) \
                   end \
                   return 0";
    let extend = "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end \
                  local ttl = redis.call('pttl', KEYS[1]) \
                  return redis.call('pexpire', KEYS[1], ttl + tonumber(ARGV[2]))";
    let release_sha: String = cmd(&mut c, &["SCRIPT", "LOAD", release]);
    let acquired: Option<String> = cmd(
        &mut c,
        &["SET", "lock:orders", "token-1", "NX", "PX", "30000"],
    );
    assert_eq!(acquired.as_deref(), Some("OK"));
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &["EVAL", extend, "1", "lock:orders", "token-2", "1000"]
        ),
        0
    );
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &["EVAL", extend, "1", "lock:orders", "token-1", "60000"]
        ),
        1
    );
    assert!(cmd::<i64>(&mut c, &["PTTL", "lock:orders"]) > 60_000);
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &["EVALSHA", &release_sha, "1", "lock:orders", "token-2"]
        ),
        0
    );
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "lock:orders"]), 1);
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &["EVALSHA", &release_sha, "1", "lock:orders", "token-1"]
        ),
        1
    );
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "lock:orders"]), 0);

    // Tokens refill at `rate` a second up to `capacity`; a request takes one if it can.
    let bucket = "local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2]) \
                  local now, wanted = tonumber(ARGV[3]), tonumber(ARGV[4]) \
                  local tokens = tonumber(redis.call('get', KEYS[1])) or capacity \
                  local last = tonumber(redis.call('get', KEYS[2])) or 0 \
                  local filled = math.min(capacity, tokens + math.max(0, now - last) * rate) \
                  local allowed = filled >= wanted \
                  if allowed then filled = filled - wanted end \
                  local ttl = math.floor(capacity / rate * 2) \
                  redis.call('setex', KEYS[1], ttl, filled) \
                  redis.call('setex', KEYS[2], ttl, now) \
                  return {allowed and 1 or 0, filled}";
    let keys = ["rate.{client7}.tokens", "rate.{client7}.timestamp"];
    let ask = |c: &mut redis::Connection, now: i64| -> (i64, i64) {
        cmd(
            c,
            &[
                "EVAL",
                bucket,
                "2",
                keys[0],
                keys[1],
                "1",
                "3",
                &now.to_string(),
                "1",
            ],
        )
    };
    assert_eq!(ask(&mut c, 100), (1, 2));
    assert_eq!(ask(&mut c, 100), (1, 1));
    assert_eq!(ask(&mut c, 100), (1, 0));
    assert_eq!(ask(&mut c, 100), (0, 0), "the bucket is empty");
    assert_eq!(ask(&mut c, 102), (1, 1), "two seconds refilled two tokens");
    assert_eq!(cmd::<i64>(&mut c, &["TTL", keys[0]]), 6);
}

/// A script across shards cannot write past maxmemory (review finding: inside its
/// transaction nothing was checked after the first room was made).
#[test]
fn a_script_across_shards_stops_at_maxmemory() {
    let s = MoonServer::start(
        2,
        &["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"],
    );
    let mut c = s.client();
    let k = keys_on_different_shards(2);
    let fill = "for i = 1, 2000 do \
                  redis.call('set', KEYS[1] .. ':' .. i, string.rep('x', 10000)) \
                  redis.call('set', KEYS[2] .. ':' .. i, string.rep('x', 10000)) \
                end return 1";
    let e = expect_err(
        &mut c,
        &[
            "EVAL",
            fill,
            "2",
            &format!("{{{}}}", k[0]),
            &format!("{{{}}}", k[1]),
        ],
    );
    assert!(e.starts_with("OOM command not allowed"), "{e}");
    let info: String = cmd(&mut c, &["INFO", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    assert!(used < 6 << 20, "{used} bytes used under a 4 MiB limit");
}

const LIBRARY: &str = "#!lua name=bank\n\
    redis.register_function('transfer', function(keys, args)\n\
        redis.call('decrby', keys[1], args[1])\n\
        return redis.call('incrby', keys[2], args[1])\n\
    end)\n\
    redis.register_function{function_name = 'balance', callback = function(keys) return redis.call('get', keys[1]) end, flags = {'no-writes'}, description = 'reads one'}";

/// FUNCTION LOAD / FCALL / FCALL_RO / LIST / DELETE / FLUSH with a real client, keys on one
/// shard and on two; libraries survive SIGKILL (they are in functions.moon, fsynced before
/// the reply), and a damaged file stops the server with the file named.
#[test]
fn functions_load_call_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = MoonServer::start_in(dir.path(), 2, &[]).expect("start");
    let mut c = s.client();
    assert_eq!(
        cmd::<String>(&mut c, &["FUNCTION", "LOAD", LIBRARY]),
        "bank"
    );
    assert_eq!(
        expect_err(&mut c, &["FUNCTION", "LOAD", LIBRARY]),
        "ERR Library 'bank' already exists"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["FUNCTION", "LOAD", "REPLACE", LIBRARY]),
        "bank"
    );
    assert_eq!(
        expect_err(
            &mut c,
            &[
                "FUNCTION",
                "LOAD",
                "#!lua name=other\nredis.register_function('balance', function() return 1 end)"
            ]
        ),
        "ERR Function balance already exists"
    );
    let k = keys_on_different_shards(2);
    cmd::<()>(&mut c, &["MSET", &k[0], "100", &k[1], "0"]);
    // Across shards, and on one (hash tags).
    assert_eq!(
        cmd::<i64>(&mut c, &["FCALL", "transfer", "2", &k[0], &k[1], "30"]),
        30
    );
    cmd::<()>(&mut c, &["MSET", "{u}a", "5", "{u}b", "0"]);
    assert_eq!(
        cmd::<i64>(&mut c, &["FCALL", "transfer", "2", "{u}a", "{u}b", "5"]),
        5
    );
    assert_eq!(
        cmd::<String>(&mut c, &["FCALL_RO", "balance", "1", &k[0]]),
        "70"
    );
    assert_eq!(
        expect_err(&mut c, &["FCALL_RO", "transfer", "2", &k[0], &k[1], "1"]),
        "ERR Can not execute a script with write flag using *_ro command."
    );
    assert_eq!(
        expect_err(&mut c, &["FCALL", "nope", "0"]),
        "ERR Function not found"
    );
    let list: redis::Value = cmd(&mut c, &["FUNCTION", "LIST", "WITHCODE"]);
    let text = format!("{list:?}");
    assert!(
        text.contains("bank") && text.contains("transfer") && text.contains("no-writes"),
        "{text}"
    );
    assert!(
        text.contains("reads one") && text.contains("register_function"),
        "{text}"
    );

    s.kill();
    let mut s = MoonServer::start_in(dir.path(), 2, &[]).expect("restart");
    let mut c = s.client();
    assert_eq!(
        cmd::<i64>(&mut c, &["FCALL", "transfer", "2", &k[0], &k[1], "10"]),
        40
    );
    assert_eq!(cmd::<String>(&mut c, &["FUNCTION", "DELETE", "bank"]), "OK");
    assert_eq!(
        expect_err(&mut c, &["FUNCTION", "DELETE", "bank"]),
        "ERR Library not found"
    );
    assert_eq!(
        expect_err(&mut c, &["FCALL", "transfer", "0"]),
        "ERR Function not found"
    );
    cmd::<String>(&mut c, &["FUNCTION", "LOAD", LIBRARY]);
    assert_eq!(cmd::<String>(&mut c, &["FUNCTION", "FLUSH"]), "OK");
    cmd::<String>(&mut c, &["FUNCTION", "LOAD", LIBRARY]);
    s.kill();
    // A damaged file: the server refuses to start and names it.
    let path = dir.path().join("functions.moon");
    let mut bytes = std::fs::read(&path).expect("functions.moon");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let (code, out) = common::run_expecting_exit(dir.path(), 2, &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("functions.moon") && out.contains("checksum"),
        "{out}"
    );
}

/// Blocking commands are not allowed in scripts, as in Redis 7.0 (`noscript`): a script
/// never waits.
#[test]
fn scripts_cannot_run_blocking_commands() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    for body in [
        "return redis.pcall('blpop', 'x', 0)",
        "return redis.pcall('brpoplpush', 'a', 'b', 0)",
        "return redis.pcall('bzpopmin', 'z', 0)",
    ] {
        let e = expect_err(&mut c, &["EVAL", body, "0"]);
        assert!(e.contains("not allowed from script"), "{body}: {e}");
    }
    // XREAD / XREADGROUP run in scripts, but not with BLOCK (Redis's scripting unit); a group
    // named "block" is not the option.
    cmd::<String>(&mut c, &["XGROUP", "CREATE", "s", "block", "$", "MKSTREAM"]);
    for (body, refused) in [
        ("return redis.pcall('xread', 'STREAMS', KEYS[1], '$')", None),
        ("return redis.pcall('xread', 'BLOCK', 0, 'STREAMS', KEYS[1], '$')", Some("xread")),
        ("return redis.pcall('xreadgroup', 'GROUP', 'block', 'c', 'STREAMS', KEYS[1], '>')", None),
        ("return redis.pcall('xreadgroup', 'GROUP', 'block', 'c', 'BLOCK', 0, 'STREAMS', KEYS[1], '>')", Some("xreadgroup")),
    ] {
        let got = redis::cmd("EVAL").arg(body).arg(1).arg("s").query::<redis::Value>(&mut c);
        match refused {
            None => assert_eq!(got, Ok(redis::Value::Nil), "{body}"),
            Some(name) => assert_eq!(
                got.map_err(|e| common::err_text(&e)),
                Err(format!("ERR {name} command is not allowed with BLOCK option from scripts")),
                "{body}"
            ),
        }
    }
}

/// Review findings on functions: a library's load has 500 ms; a function never sees another
/// client's KEYS; a pipeline's FCALL before a FUNCTION DELETE runs; LIBRARYNAME ignores case.
#[test]
fn functions_are_bounded_and_ordered() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let started = std::time::Instant::now();
    let e = expect_err(
        &mut c,
        &["FUNCTION", "LOAD", "#!lua name=spin\nwhile true do end"],
    );
    assert!(e.contains("FUNCTION LOAD timeout"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");
    cmd::<String>(
        &mut c,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=Peek\nredis.register_function('peek', function(keys, args) return KEYS[1] end)",
        ],
    );
    cmd::<String>(
        &mut c,
        &["EVAL", "return KEYS[1]", "1", "secret-of-another-client"],
    );
    let e = expect_err(&mut c, &["FCALL", "peek", "0"]);
    assert!(e.contains("nonexistent global variable 'KEYS'"), "{e}");
    let listed: Vec<redis::Value> = cmd(&mut c, &["FUNCTION", "LIST", "LIBRARYNAME", "pe*"]);
    assert_eq!(listed.len(), 1);
    // Each option once, and LIBRARYNAME with its value (Redis's functions unit).
    for (args, want) in [
        (
            &["LIBRARYNAME"][..],
            "ERR library name argument was not given",
        ),
        (
            &["WITHCODE", "WITHCODE"][..],
            "ERR Unknown argument WITHCODE",
        ),
        (
            &["LIBRARYNAME", "a", "LIBRARYNAME", "a"][..],
            "ERR Unknown argument LIBRARYNAME",
        ),
    ] {
        let mut words = vec!["FUNCTION", "LIST"];
        words.extend_from_slice(args);
        assert_eq!(expect_err(&mut c, &words), want);
    }
    cmd::<String>(
        &mut c,
        &[
            "FUNCTION",
            "LOAD",
            "REPLACE",
            "#!lua name=Peek\nredis.register_function('peek', function(keys, args) return 'ran' end)",
        ],
    );
    let (ran, deleted): (String, String) = redis::pipe()
        .cmd("FCALL")
        .arg("peek")
        .arg(0)
        .cmd("FUNCTION")
        .arg("DELETE")
        .arg("peek")
        .query(&mut c)
        .expect("pipeline");
    assert_eq!((ran.as_str(), deleted.as_str()), ("ran", "OK"));
}

/// PUBLISH from a script (Redisson's unlock script publishes): delivered on one shard and
/// across shards.
#[test]
fn scripts_publish() {
    let s = MoonServer::start(2, &[]);
    let mut sub = s.client();
    let mut c = s.client();
    let mut ps = sub.as_pubsub();
    ps.subscribe("unlocks").expect("subscribe");
    ps.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let k = keys_on_different_shards(2);
    // One shard: delivered once the script's effects are safe (the count is not known: 0).
    cmd::<i64>(
        &mut c,
        &[
            "EVAL",
            "redis.call('del', KEYS[1]) return redis.call('publish', 'unlocks', 'one')",
            "1",
            &k[0],
        ],
    );
    // Two shards: published from the coordinator, counted.
    let n: i64 = cmd(
        &mut c,
        &[
            "EVAL",
            "return redis.call('publish', 'unlocks', 'two')",
            "2",
            &k[0],
            &k[1],
        ],
    );
    assert_eq!(n, 1);
    // The first goes out with its script's events, the second from the coordinator at once:
    // they may arrive in either order.
    let mut got: Vec<String> = (0..2)
        .map(|_| {
            let msg = ps.get_message().expect("message");
            assert_eq!(msg.get_channel_name(), "unlocks");
            msg.get_payload::<String>().expect("payload")
        })
        .collect();
    got.sort();
    assert_eq!(got, ["one", "two"]);
    // PUBLISH is a write for a read-only script (Redis's pause unit), on one shard or two.
    let body = "#!lua flags=no-writes\nreturn redis.call('publish', 'unlocks', 'x')";
    let e = expect_err(&mut c, &["EVAL", body, "0"]);
    assert!(
        e.starts_with("ERR Write commands are not allowed from read-only scripts."),
        "{e}"
    );
    let e = expect_err(
        &mut c,
        &[
            "EVAL_RO",
            "return redis.call('publish', 'unlocks', 'x')",
            "2",
            &k[0],
            &k[1],
        ],
    );
    assert!(
        e.starts_with("ERR Write commands are not allowed from read-only scripts."),
        "{e}"
    );
}

/// Sends `words` on a connection of its own, in a thread: the reply (or error text) once the
/// command ends.
fn in_background(
    s: &MoonServer,
    words: &[&str],
) -> std::thread::JoinHandle<Result<String, String>> {
    in_background_in_db(s, 0, words)
}

/// Waits until `c`'s `words` are refused with BUSY (the script passed the threshold).
fn until_busy(c: &mut redis::Connection, words: &[&str]) -> String {
    let mut last = String::new();
    let busy = common::eventually(std::time::Duration::from_secs(10), || {
        let mut command = redis::cmd(words[0]);
        for w in &words[1..] {
            command.arg(*w);
        }
        match command.query::<redis::Value>(c) {
            Err(e) => {
                last = common::err_text(&e);
                last.starts_with("BUSY")
            }
            Ok(_) => false,
        }
    });
    assert!(busy, "never busy: {last}");
    last
}

const BUSY_EVAL: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

#[test]
fn busy_scripts_answer_busy_and_can_be_killed() {
    let mut s = MoonServer::start(1, &["--busy-reply-threshold", "50"]);
    let mut c = s.client();
    assert_eq!(
        expect_err(&mut c, &["SCRIPT", "KILL"]),
        "NOTBUSY No scripts in execution right now."
    );
    // A read-only script that never ends: others get BUSY, SCRIPT KILL stops it, and the
    // server serves again.
    let runaway = in_background(
        &s,
        &["EVAL", "local n = 0 while true do n = n + 1 end", "0"],
    );
    assert_eq!(until_busy(&mut c, &["PING"]), BUSY_EVAL);
    assert_eq!(expect_err(&mut c, &["SET", "k", "v"]), BUSY_EVAL);
    // FUNCTION STATS while a script (not a function) is busy: BUSY, as Redis answers.
    assert_eq!(expect_err(&mut c, &["FUNCTION", "STATS"]), BUSY_EVAL);
    assert_eq!(expect_err(&mut c, &["FUNCTION", "KILL"]), BUSY_EVAL);
    // MULTI is allowed, a command in it is refused, and EXEC then fails whole.
    cmd::<()>(&mut c, &["MULTI"]);
    assert_eq!(expect_err(&mut c, &["INCR", "n"]), BUSY_EVAL);
    assert_eq!(cmd::<String>(&mut s.client(), &["SCRIPT", "KILL"]), "OK");
    let killed = runaway.join().expect("thread").expect_err("killed");
    assert!(
        killed.starts_with("ERR Script killed by user with SCRIPT KILL..."),
        "{killed}"
    );
    assert!(expect_err(&mut c, &["EXEC"]).starts_with("EXECABORT"));
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "n"]), None);
    // EXEC itself arriving while a script is busy: refused as Redis refuses it, the
    // transaction discarded (Redis's multi unit, "just EXEC and script timeout").
    cmd::<()>(&mut c, &["MULTI"]);
    cmd::<()>(&mut c, &["INCR", "n"]);
    let runaway = in_background(&s, &["EVAL", "while true do end", "0"]);
    until_busy(&mut s.client(), &["PING"]);
    assert_eq!(
        expect_err(&mut c, &["EXEC"]),
        format!("EXECABORT Transaction discarded because of: {BUSY_EVAL}")
    );
    assert_eq!(cmd::<String>(&mut s.client(), &["SCRIPT", "KILL"]), "OK");
    runaway.join().expect("thread").expect_err("killed");
    // Out of MULTI: the command it queued never runs.
    assert_eq!(expect_err(&mut c, &["EXEC"]), "ERR EXEC without MULTI");
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "n"]), None);
    // Even a script that keeps catching the error in pcall.
    let stubborn = in_background(
        &s,
        &[
            "EVAL",
            "local f = function() while 1 do redis.call('ping') end end while 1 do pcall(f) end",
            "0",
        ],
    );
    until_busy(&mut c, &["GET", "k"]);
    assert_eq!(cmd::<String>(&mut c, &["SCRIPT", "KILL"]), "OK");
    let killed = stubborn.join().expect("thread").expect_err("killed");
    assert!(killed.contains("killed by user"), "{killed}");
    // A function the same way, with its own words.
    cmd::<String>(
        &mut c,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=spin\nredis.register_function('spin', function() while true do end end)",
        ],
    );
    let stats = |c: &mut redis::Connection| -> redis::Value {
        redis::cmd("FUNCTION")
            .arg("STATS")
            .query(c)
            .expect("FUNCTION STATS")
    };
    let running = |stats: redis::Value| match stats {
        redis::Value::Array(items) => items[1].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(running(stats(&mut c)), redis::Value::Nil);
    let spinning = in_background(&s, &["FCALL", "spin", "0"]);
    assert_eq!(until_busy(&mut c, &["GET", "k"]), BUSY_FUNCTION);
    assert_eq!(expect_err(&mut c, &["SCRIPT", "KILL"]), BUSY_FUNCTION);
    // FUNCTION STATS answers while it is busy and names it, as Redis's functions unit checks.
    let bulk = |t: &str| redis::Value::BulkString(t.as_bytes().to_vec());
    match running(stats(&mut c)) {
        redis::Value::Array(fields) => {
            assert_eq!(fields[..2], [bulk("name"), bulk("spin")]);
            assert_eq!(
                fields[2..4],
                [
                    bulk("command"),
                    redis::Value::Array(vec![bulk("FCALL"), bulk("spin"), bulk("0")])
                ]
            );
            assert_eq!(fields[4], bulk("duration_ms"));
            assert!(
                matches!(fields[5], redis::Value::Int(ms) if ms >= 20),
                "{:?}",
                fields[5]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(cmd::<String>(&mut c, &["FUNCTION", "KILL"]), "OK");
    assert!(spinning.join().expect("thread").is_err());
    assert_eq!(running(stats(&mut c)), redis::Value::Nil);
    // A long script that ends by itself, pipelined with a command after it: both replies,
    // in order, the command run after the script.
    let mut pipe = redis::pipe();
    pipe.cmd("EVAL")
        .arg("local n = 0 for i = 1, 60000000 do n = n + 1 end redis.call('set', KEYS[1], n) return n")
        .arg(1)
        .arg("long")
        .cmd("INCR")
        .arg("long");
    let mut p = s.client();
    let pipelined = std::thread::spawn(move || pipe.query::<(i64, i64)>(&mut p));
    until_busy(&mut c, &["GET", "long"]);
    assert_eq!(
        pipelined.join().expect("thread").expect("replies"),
        (60_000_000, 60_000_001)
    );
    assert_eq!(cmd::<i64>(&mut c, &["GET", "long"]), 60_000_001);
    // A script that wrote cannot be killed; SHUTDOWN NOSAVE still stops the server, and what
    // the script wrote is not in the log (its effects are one unit, logged when it ends).
    let writer = in_background(
        &s,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], 'half') while true do end",
            "1",
            "w",
        ],
    );
    until_busy(&mut c, &["GET", "w"]);
    assert!(expect_err(&mut c, &["SCRIPT", "KILL"]).starts_with("UNKILLABLE"));
    assert!(expect_err(&mut c, &["GET", "w"]).starts_with("BUSY"));
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut c);
    assert!(
        s.wait_exit(std::time::Duration::from_secs(10)).is_some(),
        "SHUTDOWN NOSAVE stopped the server"
    );
    assert!(writer.join().expect("thread").is_err());
    let s = MoonServer::start_in(&s.dir.clone(), 1, &[]).expect("restarts");
    let mut c = s.client();
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "w"]), None);
    assert_eq!(cmd::<i64>(&mut c, &["GET", "long"]), 60_000_001);
}

#[test]
fn a_busy_script_holds_only_its_own_shard() {
    let keys = keys_on_different_shards(2);
    let (busy_key, free_key) = (&keys[0], &keys[1]);
    let s = MoonServer::start(2, &["--busy-reply-threshold", "50"]);
    let mut c = s.client();
    let runaway = in_background(&s, &["EVAL", "while true do end", "1", busy_key]);
    assert_eq!(until_busy(&mut c, &["GET", busy_key]), BUSY_EVAL);
    // The other shard serves its keys meanwhile, from connections of either thread.
    for _ in 0..4 {
        let mut other = s.client();
        assert_eq!(cmd::<String>(&mut other, &["SET", free_key, "v"]), "OK");
        assert_eq!(
            expect_err(&mut other, &["MSET", busy_key, "1", free_key, "2"]),
            BUSY_EVAL
        );
    }
    assert_eq!(cmd::<String>(&mut c, &["SCRIPT", "KILL"]), "OK");
    assert!(runaway.join().expect("thread").is_err());
    assert_eq!(cmd::<String>(&mut c, &["SET", busy_key, "x"]), "OK");
}

#[test]
fn after_a_busy_script_every_client_is_in_its_own_database() {
    let s = MoonServer::start(1, &["--busy-reply-threshold", "20"]);
    let mut c = s.client();
    let mut other = s.client();
    cmd::<()>(&mut other, &["SELECT", "2"]);
    // A script of a db-2 client that selects db 3 inside and pauses while busy.
    let long = in_background_in_db(
        &s,
        2,
        &[
            "EVAL",
            "redis.call('select', 3) local n = 0 for i = 1, 60000000 do n = n + 1 end redis.call('set', 'in3', n) return n",
            "0",
        ],
    );
    until_busy(&mut c, &["GET", "k"]);
    assert_eq!(
        long.join().expect("thread"),
        Ok("int(60000000)".to_string())
    );
    // Other clients' commands run in their own databases again (review finding).
    assert_eq!(cmd::<String>(&mut c, &["SET", "k", "zero"]), "OK");
    assert_eq!(cmd::<String>(&mut c, &["GET", "k"]), "zero");
    assert_eq!(cmd::<Option<String>>(&mut other, &["GET", "k"]), None);
    cmd::<()>(&mut c, &["SELECT", "3"]);
    assert_eq!(cmd::<i64>(&mut c, &["GET", "in3"]), 60_000_000);
    assert_eq!(cmd::<Option<String>>(&mut c, &["GET", "k"]), None);
}

/// [`in_background`] on a connection that selected database `db` first.
fn in_background_in_db(
    s: &MoonServer,
    db: i64,
    words: &[&str],
) -> std::thread::JoinHandle<Result<String, String>> {
    let mut c = s.client();
    cmd::<()>(&mut c, &["SELECT", &db.to_string()]);
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    std::thread::spawn(move || {
        let mut command = redis::cmd(&words[0]);
        for w in &words[1..] {
            command.arg(w);
        }
        command
            .query::<redis::Value>(&mut c)
            .map(|v| format!("{v:?}"))
            .map_err(|e| common::err_text(&e))
    })
}

#[test]
fn a_busy_script_across_shards_can_be_killed() {
    let keys = keys_on_different_shards(2);
    let s = MoonServer::start(2, &["--busy-reply-threshold", "20"]);
    let mut c = s.client();
    let runaway = in_background(
        &s,
        &[
            "EVAL",
            "redis.call('get', KEYS[1]) while true do end",
            "2",
            &keys[0],
            &keys[1],
        ],
    );
    until_busy(&mut c, &["GET", &keys[0]]);
    assert_eq!(expect_err(&mut c, &["GET", &keys[1]]), BUSY_EVAL);
    assert_eq!(cmd::<String>(&mut c, &["SCRIPT", "KILL"]), "OK");
    let killed = runaway.join().expect("thread").expect_err("killed");
    assert!(killed.contains("killed by user"), "{killed}");
    assert_eq!(cmd::<String>(&mut c, &["SET", &keys[0], "free"]), "OK");
    assert_eq!(cmd::<String>(&mut c, &["SET", &keys[1], "free"]), "OK");
    // One that wrote cannot be killed: its writes are not there for anyone meanwhile.
    let writer = in_background(
        &s,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], 'half') while true do end",
            "2",
            &keys[0],
            &keys[1],
        ],
    );
    until_busy(&mut c, &["GET", &keys[1]]);
    assert!(expect_err(&mut c, &["SCRIPT", "KILL"]).starts_with("UNKILLABLE"));
    drop(writer);
}

#[test]
fn acl_applies_to_the_commands_of_a_script() {
    let keys = keys_on_different_shards(2);
    let s = MoonServer::start(2, &[]);
    let mut admin = s.client();
    cmd::<String>(
        &mut admin,
        &[
            "ACL", "SETUSER", "limited", "on", ">pw", "~k*", "~a", "+@all", "-incr",
        ],
    );
    let mut c = s.client();
    cmd::<String>(&mut c, &["AUTH", "limited", "pw"]);
    assert_eq!(
        cmd::<String>(
            &mut c,
            &["EVAL", "return redis.call('set', KEYS[1], 'v')", "1", "k1"]
        ),
        "OK"
    );
    let e = expect_err(
        &mut c,
        &["EVAL", "return redis.call('incr', KEYS[1])", "1", "k1"],
    );
    assert!(
        e.starts_with(
            "ERR The user executing the script can't run this command or subcommand script: "
        ),
        "{e}"
    );
    let e = expect_err(&mut c, &["EVAL", "return redis.call('get', 'zzz')", "0"]);
    assert!(
        e.starts_with("ERR The user executing the script can't access at least one of the keys mentioned in the command arguments"),
        "{e}"
    );
    // pcall sees the refusal as any error.
    assert_eq!(
        cmd::<String>(
            &mut c,
            &[
                "EVAL",
                "local ok, e = pcall(redis.call, 'incr', 'k1') return e",
                "0"
            ]
        ),
        "ERR The user executing the script can't run this command or subcommand"
    );
    // Functions too, and scripts whose keys span shards.
    cmd::<String>(
        &mut admin,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=acl\nredis.register_function('bump', function(keys) return redis.call('incr', keys[1]) end)",
        ],
    );
    assert!(expect_err(&mut c, &["FCALL", "bump", "1", "k1"]).contains("can't run this command"));
    let e = expect_err(
        &mut c,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], '1') return redis.call('incr', KEYS[2])",
            "2",
            &keys[0],
            &keys[1],
        ],
    );
    assert!(e.contains("can't run this command"), "{e}");
    // Also what a script answers without a keyspace: PUBLISH, SELECT (review finding).
    cmd::<String>(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "quiet",
            "on",
            ">pw",
            "~*",
            "resetchannels",
            "+@all",
            "-select",
        ],
    );
    let mut q = s.client();
    cmd::<String>(&mut q, &["AUTH", "quiet", "pw"]);
    let e = expect_err(
        &mut q,
        &["EVAL", "return redis.call('publish', 'secret', 'x')", "0"],
    );
    assert!(
        e.starts_with("ERR The user executing the script can't publish to the channel mentioned in the command"),
        "{e}"
    );
    let e = expect_err(&mut q, &["EVAL", "return redis.call('select', 1)", "0"]);
    assert!(e.contains("can't run this command"), "{e}");
    // Refusals are in ACL LOG, in the context of Lua.
    let log: Vec<redis::Value> = cmd(&mut admin, &["ACL", "LOG"]);
    let text = format!("{log:?}");
    assert!(text.contains("lua") && text.contains("incr"), "{text}");
    // The default user is not restricted: the same scripts run.
    assert_eq!(
        cmd::<i64>(
            &mut admin,
            &["EVAL", "return redis.call('incr', KEYS[1])", "1", "n"]
        ),
        1
    );
}

#[test]
fn scripts_pass_thousands_of_arguments_without_harm() {
    // mlua holds each string argument on a stack of 8000 slots and panics past it: this
    // script stopped the server before the gates (moon-script/src/gate.rs).
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let fill = "local t = {} for i = 1, 7990 do t[i] = 'k' .. i end ";
    assert_eq!(
        cmd::<i64>(
            &mut c,
            &["EVAL", &format!("{fill} redis.call('mset', unpack((function() local kv = {{}} for i = 1, 3990 do kv[2*i-1] = t[i] kv[2*i] = 'v' end return kv end)())) return redis.call('del', unpack(t))"), "0"]
        ),
        3990
    );
    let e = expect_err(
        &mut c,
        &[
            "EVAL",
            &format!("{fill} return cmsgpack.pack(unpack(t))"),
            "0",
        ],
    );
    assert!(e.contains("too many arguments"), "{e}");
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");
}

/// Redis's scripting unit: a user allowed `+@scripting` runs scripts (every category Redis
/// names exists), and a command Redis has but refuses in scripts is refused with its words.
#[test]
fn acl_categories_and_refused_commands_as_redis_names_them() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    cmd::<()>(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "bob",
            "on",
            ">123",
            "+@scripting",
            "+set",
            "~x*",
        ],
    );
    let mut bob = s.client();
    cmd::<()>(&mut bob, &["AUTH", "bob", "123"]);
    let ok: String = cmd(
        &mut bob,
        &["EVAL", "return redis.call('SET', KEYS[1], 'v')", "1", "x1"],
    );
    assert_eq!(ok, "OK");
    // redis.acl_check_cmd: the user's permissions, without running anything.
    let check = |c: &mut redis::Connection, body: &str, keys: &[&str]| {
        let mut command = redis::cmd("EVAL");
        command.arg(body).arg(keys.len());
        for k in keys {
            command.arg(*k);
        }
        command
            .query::<Option<i64>>(c)
            .map_err(|e| common::err_text(&e))
    };
    assert_eq!(
        check(
            &mut bob,
            "return redis.acl_check_cmd('set','x2',1)",
            &["x2"]
        ),
        Ok(Some(1))
    );
    assert_eq!(
        check(
            &mut bob,
            "return redis.acl_check_cmd('hset','x2','f',1)",
            &["x2"]
        ),
        Ok(None)
    );
    assert_eq!(
        check(&mut bob, "return redis.acl_check_cmd('set','yy',1)", &[]),
        Ok(None)
    );
    let e = check(
        &mut bob,
        "return redis.acl_check_cmd('invalid-cmd','arg')",
        &[],
    )
    .unwrap_err();
    assert!(
        e.starts_with("ERR Invalid command passed to redis.acl_check_cmd()"),
        "{e}"
    );
    assert_eq!(
        check(&mut c, "return redis.acl_check_cmd('hset','x2','f',1)", &[]),
        Ok(Some(1))
    );
    assert_eq!(cmd::<i64>(&mut c, &["EXISTS", "x2"]), 0);
    let cats: Vec<String> = cmd(&mut c, &["ACL", "CAT"]);
    for cat in ["scripting", "stream", "geo", "hyperloglog", "blocking"] {
        assert!(cats.iter().any(|c| c == cat), "{cat} in {cats:?}");
    }
    let blocking: Vec<String> = cmd(&mut c, &["ACL", "CAT", "blocking"]);
    assert!(blocking.iter().any(|c| c == "blpop"), "{blocking:?}");
    let e = expect_err(
        &mut c,
        &["EVAL", "return redis.call('cluster', 'reset', 'hard')", "0"],
    );
    assert!(
        e.starts_with("ERR This Redis command is not allowed from script"),
        "{e}"
    );
}

/// Redis's scripting unit: SORT BY a constant over a set, inside a script, is sorted (a set
/// has no order of its own; Redis sorts it there for determinism).
#[test]
fn sort_by_a_constant_in_a_script_is_ordered() {
    let s = MoonServer::start(1, &[]);
    let mut c = s.client();
    let members = ["z", "a", "aa", "b", "azz", "c"];
    let mut sadd = vec!["SADD", "myset"];
    sadd.extend(members);
    cmd::<i64>(&mut c, &sadd);
    let sorted: Vec<String> = cmd(
        &mut c,
        &[
            "EVAL",
            "return redis.call('sort', KEYS[1], 'by', '_')",
            "1",
            "myset",
        ],
    );
    assert_eq!(sorted, ["a", "aa", "azz", "b", "c", "z"]);
}

/// `INFO commandstats`' line for `name`: (calls, rejected_calls, failed_calls).
fn command_counts(c: &mut redis::Connection, name: &str) -> (u64, u64, u64) {
    let info: String = cmd(c, &["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{name}:");
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return (0, 0, 0);
    };
    let field = |f: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{f} in {line}"))
    };
    (
        field("calls"),
        field("rejected_calls"),
        field("failed_calls"),
    )
}

/// Over `maxmemory` a script is not refused as a whole unless it declared writes without
/// `allow-oom`, as in Redis 7: one without flags runs, reads, and meets OOM at its first
/// command that may grow memory (counted as a rejected call of that command); after a write
/// its later writes go on; `allow-oom` writes; a function that may write is refused whole.
/// What was acknowledged is there after SIGKILL. (Before: every EVAL that may write got OOM
/// before it ran, even one that only reads.)
#[test]
fn scripts_over_maxmemory_are_refused_at_their_first_write_as_redis_refuses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--maxmemory-policy",
        "noeviction",
        "--appendfsync",
        "always",
    ];
    let mut s = MoonServer::start_in(dir.path(), 1, &args).expect("start");
    let mut c = s.client();
    cmd::<()>(&mut c, &["SET", "k", "v"]);
    cmd::<String>(&mut c, &["FUNCTION", "LOAD", LIBRARY]);
    cmd::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);
    cmd::<()>(&mut c, &["CONFIG", "RESETSTAT"]);
    let oom = "OOM command not allowed when used memory > 'maxmemory'.";

    let read: String = cmd(
        &mut c,
        &["EVAL", "return redis.call('get', KEYS[1])", "1", "k"],
    );
    assert_eq!(read, "v", "a script that only reads runs");
    let e = expect_err(
        &mut c,
        &["EVAL", "return redis.call('set', KEYS[1], 'y')", "1", "x"],
    );
    assert!(e.starts_with(&format!("{oom} script: ")), "{e}");
    assert_eq!(command_counts(&mut c, "set"), (0, 1, 0));
    assert_eq!(command_counts(&mut c, "eval"), (2, 0, 1));

    let caught: i64 = cmd(
        &mut c,
        &[
            "EVAL",
            &format!("local t = redis.pcall('set', KEYS[1], 'y') if t['err'] == \"{oom}\" then return 1 end return 0"),
            "1",
            "x",
        ],
    );
    assert_eq!(caught, 1, "redis.pcall gets the refusal as an error table");
    // Each refusal counted once in errorstats, where it happened: the caught one too, and the
    // one the first script's reply carried not twice.
    let errorstats: String = cmd(&mut c, &["INFO", "errorstats"]);
    assert!(errorstats.contains("errorstat_OOM:count=2"), "{errorstats}");
    let total = |c: &mut redis::Connection| -> u64 {
        let stats: String = cmd(c, &["INFO", "stats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("total_error_replies:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_error_replies")
    };
    assert_eq!(total(&mut c), 2);
    let e = expect_err(
        &mut c,
        &["EVAL", "return redis.pcall('set', KEYS[1], 'y')", "1", "x"],
    );
    assert_eq!(e, oom, "a caught error returned as the reply");
    assert_eq!(total(&mut c), 3, "is counted once");

    cmd::<()>(&mut c, &["CONFIG", "RESETSTAT"]);
    let e = expect_err(
        &mut c,
        &[
            "EVAL",
            "#!lua\nreturn redis.call('set', KEYS[1], 'y')",
            "1",
            "x",
        ],
    );
    assert_eq!(
        e, oom,
        "a script declared for writes is refused before it runs"
    );
    assert_eq!(command_counts(&mut c, "eval"), (0, 1, 0));
    assert_eq!(command_counts(&mut c, "set"), (0, 0, 0));
    let e = expect_err(&mut c, &["FCALL", "transfer", "2", "a", "b", "1"]);
    assert_eq!(e, oom, "so is a function that may write");
    let balance: String = cmd(&mut c, &["FCALL", "balance", "1", "k"]);
    assert_eq!(balance, "v", "a no-writes function runs");
    let eval1 = |c: &mut redis::Connection, script: &str, key: &str| -> String {
        cmd(c, &["EVAL", script, "1", key])
    };
    let flagged_read = eval1(
        &mut c,
        "#!lua flags=no-writes\nreturn redis.call('get', KEYS[1])",
        "k",
    );
    assert_eq!(flagged_read, "v");

    let allowed = eval1(
        &mut c,
        "#!lua flags=allow-oom\nreturn redis.call('set', KEYS[1], 'y')",
        "x",
    );
    assert_eq!(allowed, "OK", "allow-oom writes over the limit");
    let after_a_write: String = cmd(
        &mut c,
        &[
            "EVAL",
            "redis.call('del', KEYS[1]) return redis.call('set', KEYS[2], 'z')",
            "2",
            "gone",
            "x2",
        ],
    );
    assert_eq!(
        after_a_write, "OK",
        "after its first write a script goes on"
    );
    let e = expect_err(&mut c, &["SET", "plain", "v"]);
    assert_eq!(e, oom, "a client's own write is still refused");

    // The connection commands a script calls count under their names, as a client's do.
    cmd::<()>(&mut c, &["CONFIG", "RESETSTAT"]);
    let script = "redis.call('SELECT', 0) redis.pcall('select', 99) return redis.call('Ping')";
    let pong: String = cmd(&mut c, &["EVAL", script, "0"]);
    assert_eq!(pong, "PONG");
    assert_eq!(command_counts(&mut c, "select"), (2, 0, 1));
    assert_eq!(command_counts(&mut c, "ping"), (1, 0, 0));

    s.kill();
    let s = MoonServer::start_in(dir.path(), 1, &args).expect("restart");
    let mut c = s.client();
    let got: Vec<Option<String>> = cmd(&mut c, &["MGET", "x", "x2", "plain", "k"]);
    assert_eq!(
        got,
        [Some("y".into()), Some("z".into()), None, Some("v".into())],
        "what the scripts wrote survived SIGKILL, and nothing refused was written"
    );
}
