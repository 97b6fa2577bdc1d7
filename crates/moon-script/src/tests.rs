//! The engine against a toy host (a map of strings with GET, SET, INCR and HGETALL): replies,
//! conversions, errors with their positions, and the sandbox, as Redis 7 answers them.

use std::collections::HashMap;

use bytes::Bytes;
use moon_proto::Frame;

use crate::{sha1_hex, Engine, Host, Invocation, Outcome, Signals};

#[derive(Default)]
struct Toy {
    data: HashMap<Vec<u8>, Vec<u8>>,
    calls: Vec<String>,
}

impl Host for Toy {
    fn acl_check(&mut self, args: &[Bytes]) -> Option<bool> {
        (!args[0].eq_ignore_ascii_case(b"nosuch"))
            .then_some(!args[0].eq_ignore_ascii_case(b"flushall"))
    }

    fn call(&mut self, args: Vec<Bytes>) -> Frame {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        self.calls.push(
            args.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        );
        match (name.as_str(), args.len()) {
            ("get", 2) => self
                .data
                .get(&args[1][..])
                .map_or(Frame::Null, |v| Frame::Bulk(Bytes::copy_from_slice(v))),
            ("set", 3) => {
                self.data.insert(args[1].to_vec(), args[2].to_vec());
                Frame::OK
            }
            ("incr", 2) => {
                let v = self.data.entry(args[1].to_vec()).or_insert(b"0".to_vec());
                match std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(n) => {
                        *v = (n + 1).to_string().into_bytes();
                        Frame::Integer(n + 1)
                    }
                    None => Frame::StaticError("ERR value is not an integer or out of range"),
                }
            }
            ("hgetall", 2) => Frame::Map(vec![(
                Frame::Bulk(Bytes::from_static(b"f")),
                Frame::Bulk(Bytes::from_static(b"v")),
            )]),
            ("double", 1) => Frame::Double(1.5),
            ("del", _) => Frame::Integer(args.len() as i64 - 1),
            _ => Frame::Error("ERR Unknown Redis command called from script".into()),
        }
    }
}

fn run(engine: &mut Engine, host: &mut Toy, body: &str, keys: &[&str], args: &[&str]) -> Frame {
    let b = |v: &[&str]| -> Vec<Bytes> { v.iter().map(|s| Bytes::from(s.to_string())).collect() };
    let sha = sha1_hex(body.as_bytes());
    let outcome = engine.run(
        &Invocation {
            sha: &sha,
            body: body.as_bytes(),
            keys: &b(keys),
            args: &b(args),
        },
        host,
        Signals::new(vec![0], false),
        false,
    );
    finish(engine, outcome, host)
}

/// The reply of a run, resuming it while it pauses.
fn finish(engine: &Engine, mut outcome: Outcome, host: &mut Toy) -> Frame {
    loop {
        match outcome {
            Outcome::Done(f) => return f,
            Outcome::Suspended(run) => outcome = engine.resume(run, host),
        }
    }
}

fn fcall(engine: &Engine, name: &str, keys: &[Bytes], args: &[Bytes], host: &mut Toy) -> Frame {
    let outcome = engine.run_function(name, keys, args, host, Signals::new(vec![0], true), false);
    finish(engine, outcome, host)
}

fn eval(body: &str) -> Frame {
    let mut engine = Engine::new("7.2.0").expect("engine");
    run(&mut engine, &mut Toy::default(), body, &[], &[])
}

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::from(s.to_string()))
}

fn error_text(f: Frame) -> String {
    match f {
        Frame::Error(e) => e,
        Frame::StaticError(e) => e.to_string(),
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn results_convert_as_redis_documents() {
    assert_eq!(eval("return 1"), Frame::Integer(1));
    assert_eq!(eval("return 3.99"), Frame::Integer(3));
    assert_eq!(eval("return -3.99"), Frame::Integer(-3));
    assert_eq!(eval("return 'x'"), bulk("x"));
    assert_eq!(eval("return true"), Frame::Integer(1));
    assert_eq!(eval("return false"), Frame::Null);
    assert_eq!(eval("return nil"), Frame::Null);
    assert_eq!(
        eval("return {1, 'a', {2, 'b'}, nil, 5}"),
        Frame::Array(vec![
            Frame::Integer(1),
            bulk("a"),
            Frame::Array(vec![Frame::Integer(2), bulk("b")])
        ])
    );
    assert_eq!(
        eval("return {ok='fine\\r\\nline'}"),
        Frame::SimpleOwned("fine  line".into())
    );
    assert_eq!(
        eval("return redis.status_reply('PONG')"),
        Frame::SimpleOwned("PONG".into())
    );
    assert_eq!(error_text(eval("return {err='My Error'}")), "My Error");
    assert_eq!(
        error_text(eval("return redis.error_reply('My Error')")),
        "My Error"
    );
    assert_eq!(
        error_text(eval("return redis.error_reply('-CODE the text')")),
        "CODE the text"
    );
    assert_eq!(
        error_text(eval("return redis.error_reply('-CODE')")),
        "ERR CODE"
    );
    assert_eq!(
        eval("redis.setresp(3) return {double=1.5}"),
        Frame::Double(1.5)
    );
    assert_eq!(eval("redis.setresp(3) return true"), Frame::Bool(true));
    assert_eq!(
        eval("return redis.sha1hex('')"),
        bulk("da39a3ee5e6b4b0d3255bfef95601890afd80709")
    );
    assert_eq!(eval("return redis.REDIS_VERSION"), bulk("7.2.0"));
    assert_eq!(
        eval("return redis.REDIS_VERSION_NUM"),
        Frame::Integer(0x070200)
    );
    // A table that holds itself is refused, not followed forever.
    assert_eq!(
        error_text(eval("local t = {} t[1] = t return t")),
        "ERR reached lua stack limit"
    );
}

#[test]
fn commands_reach_the_host_and_replies_come_back_as_lua_values() {
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    let body = "redis.call('set', KEYS[1], ARGV[1]) \
                local n = redis.call('incr', KEYS[1]) \
                return {n, type(redis.call('get', 'missing')), redis.call('get', KEYS[1]), 10.5}";
    assert_eq!(
        run(&mut engine, &mut host, body, &["counter"], &["41"]),
        Frame::Array(vec![
            Frame::Integer(42),
            bulk("boolean"),
            bulk("42"),
            Frame::Integer(10)
        ])
    );
    assert_eq!(
        host.calls,
        [
            "set counter 41",
            "incr counter",
            "get missing",
            "get counter"
        ]
    );
    // Numbers as arguments print as Redis prints them (%.17g).
    host.calls.clear();
    run(
        &mut engine,
        &mut host,
        "return redis.call('set', 'k', 5, 0.1)",
        &[],
        &[],
    );
    assert_eq!(host.calls, ["set k 5 0.10000000000000001"]);
    // A map reply is a flat array in RESP2, {map=...} in RESP3; a double its text, or {double=}.
    assert_eq!(
        run(
            &mut engine,
            &mut host,
            "return redis.call('hgetall', 'h')",
            &[],
            &[]
        ),
        Frame::Array(vec![bulk("f"), bulk("v")])
    );
    assert_eq!(
        run(
            &mut engine,
            &mut host,
            "redis.setresp(3) local m = redis.call('hgetall', 'h') return {m.map.f, redis.call('double').double}",
            &[],
            &[]
        ),
        Frame::Array(vec![bulk("v"), Frame::Integer(1)])
    );
    assert_eq!(
        run(
            &mut engine,
            &mut host,
            "return redis.call('double')",
            &[],
            &[]
        ),
        bulk("1.5"),
        "each run starts in RESP2"
    );
}

#[test]
fn errors_name_the_script_and_the_line() {
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    host.data.insert(b"s".to_vec(), b"text".to_vec());
    let body = "local x = 1\n\nreturn redis.call('incr', 's')";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(
        error_text(run(&mut engine, &mut host, body, &[], &[])),
        format!("ERR value is not an integer or out of range script: {sha}, on @user_script:3.")
    );
    // pcall hands back the text; redis.pcall the error table, which returned is the error.
    assert_eq!(
        run(
            &mut engine,
            &mut host,
            "local ok, e = pcall(redis.call, 'incr', 's') return {tostring(ok), e}",
            &[],
            &[]
        ),
        Frame::Array(vec![
            bulk("false"),
            bulk("ERR value is not an integer or out of range")
        ])
    );
    assert_eq!(
        error_text(run(
            &mut engine,
            &mut host,
            "return redis.pcall('incr', 's')",
            &[],
            &[]
        )),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        error_text(run(
            &mut engine,
            &mut host,
            "return redis.call('nosuch')",
            &[],
            &[]
        )),
        format!(
            "ERR Unknown Redis command called from script script: {}, on @user_script:1.",
            sha1_hex(b"return redis.call('nosuch')")
        )
    );
    let e = error_text(run(&mut engine, &mut host, "return redis.call()", &[], &[]));
    assert!(
        e.starts_with("ERR Please specify at least one argument for this redis lib call script: "),
        "{e}"
    );
    let e = error_text(run(
        &mut engine,
        &mut host,
        "return redis.call('get', {})",
        &[],
        &[],
    ));
    assert!(
        e.starts_with("ERR Lua redis lib command arguments must be strings or integers"),
        "{e}"
    );
    let e = error_text(run(&mut engine, &mut host, "error('boom')", &[], &[]));
    assert!(e.starts_with("ERR user_script:1: boom script: "), "{e}");
    let e = error_text(run(&mut engine, &mut host, "return 1 +", &[], &[]));
    assert!(
        e.starts_with("ERR Error compiling script (new function): user_script:1:"),
        "{e}"
    );
    let e = error_text(run(&mut engine, &mut host, "redis.setresp(4)", &[], &[]));
    assert!(e.starts_with("ERR RESP version must be 2 or 3."), "{e}");
}

#[test]
fn the_sandbox_is_redis_s() {
    for (body, want) in [
        ("x = 1", "Attempt to modify a readonly table"),
        ("_G.x = 1", "Attempt to modify a readonly table"),
        ("rawset(_G, 'x', 1)", "Attempt to modify a readonly table"),
        ("redis.call = nil", "Attempt to modify a readonly table"),
        ("string.len = nil", "Attempt to modify a readonly table"),
        // Reaching for the real globals through the metatable (Redis's "trick global
        // protection" tests).
        ("setmetatable(_G, {})", "Attempt to modify a readonly table"),
        (
            "local g = getmetatable(_G) g.__index = {}",
            "Attempt to modify a readonly table",
        ),
        (
            "local g = getmetatable(_G) local real = g.__index real.redis = 1",
            "Attempt to modify a readonly table",
        ),
        (
            "setmetatable(string, {})",
            "Attempt to modify a readonly table",
        ),
        (
            "return y",
            "Script attempted to access nonexistent global variable 'y'",
        ),
        (
            "return os.time()",
            "Script attempted to access nonexistent global variable 'os'",
        ),
        (
            "return io",
            "Script attempted to access nonexistent global variable 'io'",
        ),
        (
            "return dofile('/etc/passwd')",
            "Script attempted to access nonexistent global variable 'dofile'",
        ),
        (
            "return loadfile('/etc/passwd')",
            "Script attempted to access nonexistent global variable 'loadfile'",
        ),
        (
            "return debug.getinfo(1)",
            "Script attempted to access nonexistent global variable 'debug'",
        ),
        (
            "return require('x')",
            "Script attempted to access nonexistent global variable 'require'",
        ),
        ("getmetatable('').__index.upper = nil", "attempt to index"),
    ] {
        let e = error_text(eval(body));
        assert!(e.contains(want), "{body}: {e}");
    }
    // What scripts may use still works; bytecode cannot be loaded.
    assert_eq!(
        eval("return ('x'):upper() .. string.rep('a', 2)"),
        bulk("Xaa")
    );
    assert_eq!(eval("return loadstring('return 7')()"), Frame::Integer(7));
    assert_eq!(
        eval("return loadstring(string.dump(function() return 1 end))"),
        Frame::Null
    );
    assert_eq!(
        eval("local t = {} table.insert(t, 3) return #t"),
        Frame::Integer(1)
    );
    assert_eq!(
        eval("return tonumber('12') + math.floor(2.5)"),
        Frame::Integer(14)
    );
    // A script's globals do not leak into the next one.
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    assert!(error_text(run(&mut engine, &mut host, "leak = 1", &[], &[])).contains("readonly"));
    assert!(
        error_text(run(&mut engine, &mut host, "return leak", &[], &[])).contains("nonexistent")
    );
    // math.random goes on from run to run (Redis 7's "random numbers are random now"), and
    // math.randomseed makes a run's numbers repeatable.
    let body = "return tostring(math.random())";
    let first = run(&mut engine, &mut host, body, &[], &[]);
    assert_ne!(run(&mut engine, &mut host, body, &[], &[]), first);
    let seeded = "math.randomseed(10) return tostring(math.random())";
    let once = run(&mut engine, &mut host, seeded, &[], &[]);
    assert_eq!(run(&mut engine, &mut host, seeded, &[], &[]), once);
}

/// The toy host behind an await that really suspends (it yields once before answering).
struct Waiting(std::cell::RefCell<Toy>);

impl crate::AsyncHost for Waiting {
    fn acl_check(&self, _: &[Bytes]) -> Option<bool> {
        Some(true)
    }

    fn call(&self, args: Vec<Bytes>) -> crate::ReplyFuture<'_> {
        Box::pin(async move {
            futures_lite::future::yield_now().await;
            self.0.borrow_mut().call(args)
        })
    }
}

fn run_suspending(engine: &Engine, host: &std::rc::Rc<Waiting>, body: &str) -> Frame {
    let sha = sha1_hex(body.as_bytes());
    let keys = [Bytes::from_static(b"k")];
    futures_lite::future::block_on(engine.run_suspending(
        &Invocation {
            sha: &sha,
            body: body.as_bytes(),
            keys: &keys,
            args: &[],
        },
        host.clone(),
        Signals::new(vec![0, 1], false),
    ))
}

/// A suspending run answers as a synchronous one: replies, pcall of a failing call, errors
/// with their lines, RESP3, and the sandbox.
#[test]
fn suspending_runs_answer_as_synchronous_ones() {
    let engine = Engine::new_suspending("7.2.0").expect("engine");
    let host = std::rc::Rc::new(Waiting(Default::default()));
    host.0
        .borrow_mut()
        .data
        .insert(b"s".to_vec(), b"text".to_vec());
    assert_eq!(
        run_suspending(
            &engine,
            &host,
            "redis.call('set', KEYS[1], 5) return {redis.call('incr', KEYS[1]), redis.call('get', KEYS[1])}"
        ),
        Frame::Array(vec![Frame::Integer(6), bulk("6")])
    );
    assert_eq!(
        run_suspending(
            &engine,
            &host,
            "local ok, e = pcall(redis.call, 'incr', 's') return {tostring(ok), e}"
        ),
        Frame::Array(vec![
            bulk("false"),
            bulk("ERR value is not an integer or out of range")
        ])
    );
    assert_eq!(
        run_suspending(
            &engine,
            &host,
            "local ok, v = pcall(function() return redis.call('get', 's') end) return v"
        ),
        bulk("text")
    );
    let body = "local a = 1\nlocal r = redis.call('incr', 's') return r";
    assert_eq!(
        error_text(run_suspending(&engine, &host, body)),
        format!(
            "ERR value is not an integer or out of range script: {}, on @user_script:2.",
            sha1_hex(body.as_bytes())
        )
    );
    let body = "redis.call('get', 's')\nerror('boom')";
    assert_eq!(
        error_text(run_suspending(&engine, &host, body)),
        format!(
            "ERR user_script:2: boom script: {}, on @user_script:2.",
            sha1_hex(body.as_bytes())
        )
    );
    assert_eq!(
        error_text(run_suspending(
            &engine,
            &host,
            "return redis.pcall('incr', 's')"
        )),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        run_suspending(
            &engine,
            &host,
            "redis.setresp(3) return redis.call('hgetall', 'h').map.f"
        ),
        bulk("v")
    );
    assert!(error_text(run_suspending(&engine, &host, "x = 1")).contains("readonly"));
    // A Rust function's error keeps Redis's text (it used to get a second ERR here).
    assert_eq!(
        error_text(run_suspending(&engine, &host, "redis.setresp(4)")),
        "ERR RESP version must be 2 or 3."
    );
    assert_eq!(host.0.borrow().calls.len(), 9);
}

/// Review findings on the sandbox and the engine's limits, each a script that used to escape,
/// leak into the next script, or take the process down.
#[test]
fn hostile_scripts_are_contained() {
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    let mut run1 = |body: &str| run(&mut engine, &mut host, body, &[], &[]);
    // No way to the real globals or to a finalizer.
    for body in [
        "return newproxy(true)",
        "return getfenv(pcall)",
        "setfenv(1, {})",
    ] {
        assert!(
            error_text(run1(body)).contains("nonexistent global"),
            "{body}"
        );
    }
    // An error value is never written to: error(_G) leaves no `source` global behind.
    assert!(error_text(run1("error(_G)")).starts_with("ERR"));
    assert!(error_text(run1("return source")).contains("nonexistent global"));
    // Lua's pattern matcher recurses once per optional item: long patterns are refused
    // instead of overflowing the stack.
    let e = error_text(run1(
        "return string.find(string.rep('a', 300000), string.rep('a?', 300000))",
    ));
    assert!(e.contains("pattern too long"), "{e}");
    let e = error_text(run1(
        "return (string.rep('a', 9000)):match(string.rep('a?', 9000))",
    ));
    assert!(e.contains("pattern too long"), "{e}");
    assert_eq!(run1("return ('key:42'):match('^key:(%d+)$')"), bulk("42"));
    // A result holding one table many times is refused, not converted for ever.
    assert!(error_text(run1("local t = {} t.map = {t, t} return t")).starts_with("ERR"));
    // Memory: an endless allocation is Lua's error, and the state still works after it.
    let e = error_text(run1(
        "local s = 'x' for i = 1, 40 do s = s .. s end return #s",
    ));
    assert!(e.contains("memory"), "{e}");
    assert_eq!(run1("return 1"), Frame::Integer(1));
    // A whole-number double stays a double (ZSCORE of 10 under RESP3).
    assert_eq!(
        run1("redis.setresp(3) return {double = 10}"),
        Frame::Double(10.0)
    );
}

/// A run's coroutine is reused by the next run once it finished normally, and carries nothing
/// over: KEYS and ARGV are the new run's, a run that failed leaves its coroutine behind (Lua
/// 5.1 cannot reset it), and so does one still paused.
#[test]
fn a_finished_coroutine_runs_the_next_script_and_carries_nothing_over() {
    // It pauses a busy run: no other busy test's SCRIPT KILL may stop it.
    let _board = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    let counts = "return {#KEYS, #ARGV, KEYS[#KEYS], ARGV[1]}";
    assert_eq!(
        run(
            &mut engine,
            &mut host,
            counts,
            &["a", "b", "c"],
            &["x", "y"]
        ),
        Frame::Array(vec![
            Frame::Integer(3),
            Frame::Integer(2),
            bulk("c"),
            bulk("x")
        ])
    );
    let first = engine
        .spare_address()
        .expect("a finished run leaves its coroutine");
    assert_eq!(
        run(&mut engine, &mut host, counts, &["k"], &[]),
        Frame::Array(vec![Frame::Integer(1), Frame::Integer(0), bulk("k")])
    );
    assert_eq!(engine.spare_address(), Some(first), "reused");
    // Values left on the stack by a run with many results do not reach the next one.
    assert_eq!(
        run(&mut engine, &mut host, "return 1, 2, 3", &[], &[]),
        Frame::Integer(1)
    );
    assert_eq!(
        run(&mut engine, &mut host, "return select('#', ...)", &[], &[]),
        Frame::Integer(0)
    );
    assert_eq!(engine.spare_address(), Some(first));
    // A failed run's coroutine is dropped; the next run gets a new one, and works.
    assert!(error_text(run(&mut engine, &mut host, "error('boom')", &[], &[])).contains("boom"));
    assert_eq!(engine.spare_address(), None);
    assert_eq!(
        run(
            &mut engine,
            &mut host,
            "return redis.call('incr', KEYS[1])",
            &["n"],
            &[]
        ),
        Frame::Integer(1)
    );
    assert!(engine.spare_address().is_some());
    // A run that paused (busy) keeps its coroutine until it ends; one started meanwhile
    // does not take it.
    let body = "local i = 0 while i < 3000000 do i = i + 1 end return i";
    let outcome = start_busy(&mut engine, &mut host, body, vec![0]);
    let Outcome::Suspended(paused) = outcome else {
        panic!("a run past the busy threshold pauses");
    };
    assert_eq!(engine.spare_address(), None, "the paused run holds it");
    let during = run(&mut engine, &mut host, "return 'other'", &[], &[]);
    assert_eq!(during, bulk("other"));
    let other = engine.spare_address();
    assert!(other.is_some());
    assert_eq!(
        finish(&engine, Outcome::Suspended(paused), &mut host),
        Frame::Integer(3000000)
    );
    assert!(engine.spare_address().is_some());
}

/// Compiled scripts are not bounded by Lua's C stack: 10,000 distinct scripts compile, and
/// the first and the last still run (each compiled script once held a slot of mlua's
/// reference stack, which ends near 8,000 with a panic).
#[test]
fn ten_thousand_compiled_scripts_all_stay_runnable() {
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    for i in 0..10_000 {
        let body = format!("return {i}");
        engine
            .compile(&sha1_hex(body.as_bytes()), body.as_bytes())
            .expect("compiles");
    }
    for n in [0, 9999] {
        let body = format!("return {n}");
        assert_eq!(
            run(&mut engine, &mut host, &body, &[], &[]),
            Frame::Integer(n)
        );
    }
}

/// cjson, cmsgpack and bit as Redis's Lua has them.
#[test]
fn the_libraries_scripts_depend_on_answer_as_redis_s() {
    for (body, want) in [
        ("return cjson.encode({1, 2, 'x'})", bulk("[1,2,\"x\"]")),
        ("return cjson.encode({a = 0.1})", bulk("{\"a\":0.1}")),
        ("return cjson.encode({})", bulk("{}")),
        ("return cjson.encode('a/b\"\\n')", bulk("\"a\\/b\\\"\\n\"")),
        ("return cjson.encode({1, nil, 3})", bulk("[1,null,3]")),
        ("return cjson.encode(1/3)", bulk("0.33333333333333")),
        ("return cjson.encode(cjson.null)", bulk("null")),
        ("local t = cjson.decode('{\"a\":[1,2,{\"b\":null}]}') return {t.a[2], tostring(t.a[3].b == cjson.null)}",
            Frame::Array(vec![Frame::Integer(2), bulk("true")])),
        ("return cjson.decode('[1,2,3]')[3]", Frame::Integer(3)),
        // The settings Redis's scripting unit changes and puts back.
        ("cjson.encode_max_depth(1) local ok = pcall(cjson.encode, {a = {b = 1}}) cjson.encode_max_depth(1000) return tostring(ok)", bulk("false")),
        ("cjson.encode_max_depth(2) local ok = pcall(cjson.encode, {a = {b = 1}}) cjson.encode_max_depth(1000) return tostring(ok)", bulk("true")),
        ("cjson.decode_max_depth(1) local ok, e = pcall(cjson.decode, '{\"o\": {\"s\": \"[[[\"}}') cjson.decode_max_depth(1000) return e", bulk("user_script:1: Found too many nested data structures (2) at character 7")),
        ("cjson.decode_max_depth(1) local ok = pcall(cjson.decode, '{\"s\": \"[{[\"}') cjson.decode_max_depth(1000) return tostring(ok)", bulk("true")),
        ("return tostring(pcall(cjson.encode, {n = 0/0}))", bulk("false")),
        ("cjson.encode_invalid_numbers(true) local s = cjson.encode({1/0, -1/0}) cjson.encode_invalid_numbers(false) return s", bulk("[inf,-inf]")),
        ("cjson.encode_invalid_numbers('null') local s = cjson.encode({1/0}) cjson.encode_invalid_numbers(false) return s", bulk("[null]")),
        ("return cjson.encode_max_depth()", Frame::Integer(1000)),
        ("return cmsgpack.unpack(cmsgpack.pack({1, 'two', {x = 3}}))[3].x", Frame::Integer(3)),
        ("local a, b, c = cmsgpack.unpack(cmsgpack.pack(1, 300, -70000)) return {a, b, c}",
            Frame::Array(vec![Frame::Integer(1), Frame::Integer(300), Frame::Integer(-70000)])),
        ("return cmsgpack.pack(1, 'ab', true)", Frame::Bulk(Bytes::from_static(b"\x01\xa2ab\xc3"))),
        ("return tostring(cmsgpack.unpack(cmsgpack.pack(1.5)))", bulk("1.5")),
        ("return bit.band(0xff, 0x0f)", Frame::Integer(15)),
        ("return bit.bor(1, 2, 4)", Frame::Integer(7)),
        ("return bit.bnot(0)", Frame::Integer(-1)),
        ("return bit.lshift(1, 31)", Frame::Integer(i64::from(i32::MIN))),
        ("return bit.rshift(-1, 28)", Frame::Integer(15)),
        ("return bit.arshift(-256, 4)", Frame::Integer(-16)),
        ("return bit.tohex(255)", bulk("000000ff")),
        ("return bit.tohex(255, -2)", bulk("FF")),
        ("return bit.tobit(2^32 + 5)", Frame::Integer(5)),
    ] {
        assert_eq!(eval(body), want, "{body}");
    }
    // Hostile input is an error, never a crash or a huge allocation.
    for body in [
        "return cjson.decode('[[[[')",
        "return cjson.decode(string.rep('[', 100000))",
        "return cmsgpack.unpack('\\221\\255\\255\\255\\255')",
        "return cmsgpack.unpack(string.rep('\\145', 100000))",
        "return cmsgpack.unpack('\\218\\255')",
        "return cjson.encode({[{}] = 1})",
        "local t = {} t[1] = t return cjson.encode(t)",
        "return cjson.encode({[1000] = 1})",
        "return cjson.encode(0/0)",
        "cjson.encode = nil",
    ] {
        assert!(
            matches!(eval(body), Frame::Error(_) | Frame::StaticError(_)),
            "{body}"
        );
    }
}

/// Review findings on suspending runs and replies.
#[test]
fn suspending_runs_fail_before_a_command_they_cannot_wait_for() {
    let engine = Engine::new_suspending("7.2.0").expect("engine");
    let host = std::rc::Rc::new(Waiting(Default::default()));
    // redis.call where Lua cannot suspend (inside xpcall): an error, and the command was not
    // sent (it used to run, then fail on the wait).
    let e = run_suspending(
        &engine,
        &host,
        "return xpcall(function() return redis.call('set', 'k', 'v') end, function(e) return e end)",
    );
    assert_eq!(host.0.borrow().calls.len(), 0, "{e:?}");
    // error({err = ...}) replies its text, as on one shard; a plain string gets ERR.
    assert_eq!(
        error_text(run_suspending(&engine, &host, "error({err = 'MYERR bad'})")),
        "MYERR bad"
    );
    assert_eq!(
        error_text(run_suspending(
            &engine,
            &host,
            "error(redis.error_reply('CODE text'))"
        )),
        "CODE text"
    );
    assert_eq!(
        error_text(run_suspending(&engine, &host, "error('plain', 0)")),
        "ERR plain"
    );
    assert_eq!(
        run_suspending(
            &engine,
            &host,
            "local ok, e = pcall(error, {err = 'E x'}) return e"
        ),
        bulk("E x")
    );
    // No coroutines here: they would catch the suspension itself.
    assert!(error_text(run_suspending(
        &engine,
        &host,
        "return coroutine.create(function() end)"
    ))
    .contains("coroutines are not available"));
    assert_eq!(
        run_suspending(&engine, &host, "local wrap = coroutine.wrap return 1"),
        Frame::Integer(1),
        "naming them is fine (a library's top level)"
    );
}

#[test]
fn replies_stay_one_line_and_bounded() {
    assert_eq!(error_text(eval("return {err = 'a\\r\\n+OK'}")), "a  +OK");
    assert!(error_text(eval("error({err = 'b\\nc'})")).starts_with("b c script: "));
    // The same 16 MiB string a hundred times is 1.6 GiB of reply: refused.
    let e = error_text(eval(
        "local s = string.rep('x', 2^24) local t = {} for i = 1, 100 do t[i] = s end return t",
    ));
    assert!(e.contains("reply too large"), "{e}");
}

/// Function libraries: loaded once, called by name with their keys and arguments.
#[test]
fn libraries_register_functions_that_fcall_runs() {
    let engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    let code = "#!lua name=mylib\n\
                local function helper(k) return redis.call('incr', k) end\n\
                redis.register_function('bump', function(keys, args) return {helper(keys[1]), args[1]} end)\n\
                redis.register_function{function_name = 'peek', callback = function(keys) return redis.call('get', keys[1]) end, flags = {'no-writes'}, description = 'reads'}";
    let info = engine.load_library(code.as_bytes()).expect("loads");
    assert_eq!(info.name, "mylib");
    assert_eq!(info.functions.len(), 2);
    assert!(info.functions[1].no_writes());
    assert_eq!(info.functions[1].description.as_deref(), Some("reads"));
    let b = |v: &[&str]| -> Vec<Bytes> { v.iter().map(|s| Bytes::from(s.to_string())).collect() };
    assert_eq!(
        fcall(&engine, "bump", &b(&["n"]), &b(&["x"]), &mut host),
        Frame::Array(vec![Frame::Integer(1), bulk("x")])
    );
    assert_eq!(
        fcall(&engine, "peek", &b(&["n"]), &[], &mut host),
        bulk("1")
    );
    assert_eq!(
        error_text(fcall(&engine, "nope", &[], &[], &mut host)),
        "ERR Function not found"
    );
    host.data.insert(b"s".to_vec(), b"text".to_vec());
    let e = error_text(fcall(&engine, "bump", &b(&["s"]), &[], &mut host));
    assert!(
        e.starts_with(
            "ERR value is not an integer or out of range script: bump, on @user_function:2."
        ),
        "{e}"
    );
    for (code, want) in [
        ("redis.register_function('f', function() end)", "ERR Missing library metadata"),
        ("#!lua\nredis.register_function('f', function() end)", "ERR Library name was not given"),
        ("#!lua name=a-b\n", "ERR Library names can only contain"),
        ("#!lua name=x foo=bar\n", "ERR Invalid metadata value given: foo=bar"),
        ("#!python name=x\n", "ERR Engine 'python' not found"),
        ("#!lua name=x\nreturn 1", "ERR No functions registered"),
        ("#!lua name=\"a b\"\nreturn 1", "ERR Library names can only contain"),
        ("#!lua name=\"x\nreturn 1", "ERR Invalid library metadata"),
        ("#!lua name=x\nreturn +", "ERR Error compiling function: user_function:2:"),
        // Redis answers a bad function name with its library-name text.
        ("#!lua name=x\nredis.register_function('f-g', function() end)", "ERR Error registering functions: ERR Library names can only contain"),
        ("#!lua name=x\nredis.register_function('f')", "ERR Error registering functions: ERR calling redis.register_function with a single argument is only applicable to Lua table"),
        ("#!lua name=x\nredis.register_function(nil, function() end)", "ERR Error registering functions: ERR first argument to redis.register_function must be a string"),
        ("#!lua name=x\nredis.register_function('f', 1)", "ERR Error registering functions: ERR second argument to redis.register_function must be a function"),
        ("#!lua name=x\nredis.register_function{callback=function() end}", "ERR Error registering functions: ERR redis.register_function must get a function name argument"),
        ("#!lua name=x\nredis.register_function{function_name='f'}", "ERR Error registering functions: ERR redis.register_function must get a callback argument"),
        ("#!lua name=x\nredis.register_function{function_name='f', callback=function() end, flags={function() end}}", "ERR Error registering functions: ERR unknown flag given"),
        // The load runs with only redis.register_function, redis.log and the version, as in
        // Redis: no other global, no redis.call, nothing to change.
        ("#!lua name=x\nreturn math.random()", "ERR Error registering functions: user_function:2: Script attempted to access nonexistent global variable 'math'"),
        ("#!lua name=x\nreturn redis.setresp(3)", "ERR Error registering functions: user_function:2: Script attempted to access nonexistent global variable 'setresp'"),
        ("#!lua name=x\nredis.redis.call('ping')", "ERR Error registering functions: user_function:2: Script attempted to access nonexistent global variable 'redis'"),
        ("#!lua name=x\na = 1", "ERR Error registering functions: user_function:2: Attempt to modify a readonly table"),
        ("#!lua name=x\nlocal a = 1 while 1 do a = a + 1 end", "ERR Error registering functions: FUNCTION LOAD timeout"),
        ("#!lua name=x\nredis.register_function('f', function() end) redis.register_function('f', function() end)", "ERR Error registering functions: ERR Function already exists in the library"),
        ("#!lua name=x\nredis.register_function{function_name='f', callback=function() end, flags={'fly'}}", "ERR Error registering functions: ERR unknown flag given"),
        ("#!lua name=x\nredis.call('set', 'k', 'v')", "ERR Error registering functions:"),
    ] {
        let e = error_text(engine.load_library(code.as_bytes()).map(|_| Frame::OK).unwrap_or_else(|e| e));
        assert!(e.starts_with(want), "{code}: {e}");
    }
    // A function keeps the scripts' globals, and a reference to the load's register_function
    // is refused once the load is over.
    engine
        .load_library(
            b"#!lua name=late\nlocal lib = redis\nlib.register_function('later', function() lib.register_function('f', function() end) end)\nredis.register_function('rnd', function() return math.floor(math.random(1, 1)) end)",
        )
        .expect("loads");
    assert!(error_text(fcall(&engine, "later", &[], &[], &mut host))
        .contains("redis.register_function can only be called on FUNCTION LOAD command"));
    assert_eq!(
        fcall(&engine, "rnd", &[], &[], &mut host),
        Frame::Integer(1)
    );
    engine.clear_functions();
    assert_eq!(
        error_text(fcall(&engine, "bump", &[], &[], &mut host)),
        "ERR Function not found"
    );
}

/// Starts `body` on `shards`, busy at once and paused whenever it can be: its first outcome.
fn start_busy(engine: &mut Engine, host: &mut Toy, body: &str, shards: Vec<usize>) -> Outcome {
    let sha = sha1_hex(body.as_bytes());
    engine.run(
        &Invocation {
            sha: &sha,
            body: body.as_bytes(),
            keys: &[],
            args: &[],
        },
        host,
        Signals::with_threshold(shards, false, std::time::Duration::ZERO),
        true,
    )
}

/// Runs `body` busy at once and paused whenever it can be: how many times it paused, and the
/// outcome of its first pause (to kill it) or its reply.
fn run_busy(engine: &mut Engine, body: &str, kill_after: Option<usize>) -> (usize, Frame) {
    let mut host = Toy::default();
    let mut outcome = start_busy(engine, &mut host, body, vec![7]);
    let mut pauses = 0;
    loop {
        match outcome {
            Outcome::Done(f) => return (pauses, f),
            Outcome::Suspended(run) => {
                pauses += 1;
                assert_eq!(crate::busy_on(Some(&[7])), Some(false), "busy on the board");
                if Some(pauses) == kill_after {
                    assert_eq!(crate::kill(true), Err(crate::busy_reply(false)));
                    assert_eq!(crate::kill(false), Ok(()));
                }
                outcome = engine.resume(run, &mut host);
            }
        }
    }
}

/// The busy tests share the process-wide board (SCRIPT KILL stops every killable run): one
/// at a time.
static BOARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn busy_runs_pause_and_can_be_killed() {
    let _board = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    let mut engine = Engine::new("7.2.0").expect("engine");
    let sum = "local n = 0 for i = 1, 30000000 do n = n + i end return n";
    let (pauses, reply) = run_busy(&mut engine, sum, None);
    assert!(pauses > 0, "a long loop paused: {reply:?}");
    assert_eq!(reply, Frame::Integer(450_000_015_000_000));
    // Inside pcall too: its function runs as a coroutine of the run.
    let in_pcall = "local ok, v = pcall(function() local n = 0 for i = 1, 30000000 do n = n + i end return n end) return {ok and 1 or 0, v}";
    let (pauses, reply) = run_busy(&mut engine, in_pcall, None);
    assert!(pauses > 0, "a long loop inside pcall paused");
    assert_eq!(
        reply,
        Frame::Array(vec![Frame::Integer(1), Frame::Integer(450_000_015_000_000)])
    );
    // Not inside a metamethod (a C call between): it runs through, and answers right.
    let in_sort = "local t = {3, 1, 2} table.sort(t, function(a, b) for i = 1, 200000 do end return a < b end) return t";
    let (_, reply) = run_busy(&mut engine, in_sort, None);
    assert_eq!(
        reply,
        Frame::Array(vec![
            Frame::Integer(1),
            Frame::Integer(2),
            Frame::Integer(3)
        ])
    );
    // A script's own coroutines keep their meaning: a pause never reaches their resumer.
    let own = "local co = coroutine.wrap(function() for i = 1, 3 do local n = 0 for j = 1, 300000 do n = n + j end coroutine.yield(i) end end) return {co(), co(), co()}";
    let (_, reply) = run_busy(&mut engine, own, None);
    assert_eq!(
        reply,
        Frame::Array(vec![
            Frame::Integer(1),
            Frame::Integer(2),
            Frame::Integer(3)
        ])
    );
    // SCRIPT KILL: the run stops with Redis's error, even one that keeps catching it.
    for body in [
        "while true do end",
        "local f = function() while 1 do redis.call('get', 'x') end end while 1 do pcall(f) end",
    ] {
        let (_, reply) = run_busy(&mut engine, body, Some(2));
        let e = error_text(reply);
        assert!(
            e.starts_with("ERR Script killed by user with SCRIPT KILL..."),
            "{body}: {e}"
        );
    }
    assert_eq!(crate::busy_on(None), None, "finished runs leave the board");
    assert_eq!(
        crate::kill(false),
        Err("NOTBUSY No scripts in execution right now.")
    );
    // The state still works after a killed run.
    assert_eq!(
        run(&mut engine, &mut Toy::default(), "return 1", &[], &[]),
        Frame::Integer(1)
    );
}

#[test]
fn busy_suspending_runs_pause_and_can_be_killed() {
    let _board = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    let engine = Engine::new_suspending("7.2.0").expect("engine");
    let host = std::rc::Rc::new(Waiting(Default::default()));
    let run = |body: &str, shard: usize| {
        let sha = sha1_hex(body.as_bytes());
        futures_lite::future::block_on(engine.run_suspending(
            &Invocation {
                sha: &sha,
                body: body.as_bytes(),
                keys: &[],
                args: &[],
            },
            host.clone(),
            Signals::with_threshold(vec![shard], false, std::time::Duration::ZERO),
        ))
    };
    // Pauses (a bare yield: "poll again") are invisible to the result, inside pcall too.
    assert_eq!(
        run(
            "local ok, v = pcall(function() local n = 0 for i = 1, 30000000 do n = n + i end return n end) return v",
            8
        ),
        Frame::Integer(450_000_015_000_000)
    );
    // Killed from another thread once it is busy on its shards.
    let killer = std::thread::spawn(|| loop {
        if crate::busy_on(Some(&[9])).is_some() {
            return crate::kill(false);
        }
        std::thread::yield_now();
    });
    let e = error_text(run("while true do end", 9));
    assert_eq!(killer.join().expect("killer"), Ok(()));
    assert!(
        e.starts_with("ERR Script killed by user with SCRIPT KILL..."),
        "{e}"
    );
    assert_eq!(crate::busy_on(Some(&[9])), None);
}

#[test]
fn errors_raised_by_scripts_keep_their_text_and_place() {
    // pcall hands back a table error's text, without any mark of Moon's.
    assert_eq!(
        eval("local ok, e = pcall(function() error({err = 'MY X'}) end) return e"),
        bulk("MY X")
    );
    // `return error(...)` is a tail call: the script's line is still known.
    let e = error_text(eval("return error('bad')"));
    assert!(e.starts_with("ERR user_script:1: bad script: "), "{e}");
    assert!(e.ends_with("on @user_script:1."), "{e}");
    let e = error_text(eval("\nerror({err = 'CODE text'})"));
    assert!(e.starts_with("CODE text script: "), "{e}");
    assert!(e.ends_with("on @user_script:2."), "{e}");
    // Levels as Lua's: 0 adds no position, 2 the caller's.
    assert!(error_text(eval("error('plain', 0)")).starts_with("ERR plain script:"));
    let e = error_text(eval("local function f() error('up', 2) end\nf()"));
    assert!(e.starts_with("ERR user_script:2: up"), "{e}");
}

#[test]
fn a_pause_inside_nested_pcalls_loses_nothing() {
    let _board = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    let mut engine = Engine::new("7.2.0").expect("engine");
    // Pauses land anywhere, also between a pcall's steps: the rest of every function runs.
    let body = "local function spin() local n = 0 for i = 1, 3000000 do n = n + 1 end return n end
        local ok, v = pcall(function()
            local a = select(2, pcall(spin))
            local b = select(2, pcall(function() return select(2, pcall(spin)) end))
            return a + b
        end)
        return {ok and 1 or 0, v}";
    for _ in 0..3 {
        let (pauses, reply) = run_busy(&mut engine, body, None);
        assert!(pauses > 0);
        assert_eq!(
            reply,
            Frame::Array(vec![Frame::Integer(1), Frame::Integer(6_000_000)])
        );
    }
}

/// `struct` as Redis 7.0.15 answers it (each expectation read from a real redis-server).
#[test]
fn struct_packs_and_unpacks_as_redis_s() {
    let bytes = |b: &[u8]| Frame::Bulk(Bytes::copy_from_slice(b));
    assert_eq!(eval("return struct.pack('>i', 1)"), bytes(b"\0\0\0\x01"));
    assert_eq!(
        eval("return struct.pack('<i', -2)"),
        bytes(b"\xfe\xff\xff\xff")
    );
    assert_eq!(
        eval("return struct.pack('bBhH', -1, 255, -300, 65000)"),
        bytes(b"\xff\xff\xd4\xfe\xe8\xfd")
    );
    assert_eq!(
        eval("return struct.pack('!4 b i', 1, 2)"),
        bytes(b"\x01\0\0\0\x02\0\0\0")
    );
    assert_eq!(eval("return struct.pack('c3', 'abcdef')"), bytes(b"abc"));
    assert_eq!(eval("return struct.pack('s', 'hi')"), bytes(b"hi\0"));
    assert_eq!(
        eval("return {struct.unpack('b c0', struct.pack('b c0', 3, 'xyz'))}"),
        Frame::Array(vec![bulk("xyz"), Frame::Integer(5)])
    );
    assert_eq!(
        eval("return {struct.unpack('s i', struct.pack('s i', 'hello', 42))}"),
        Frame::Array(vec![bulk("hello"), Frame::Integer(42), Frame::Integer(11)])
    );
    assert_eq!(
        eval("return {struct.unpack('BhL', struct.pack('BhL', 200, -2, 4294967297))}"),
        Frame::Array(vec![
            Frame::Integer(200),
            Frame::Integer(-2),
            Frame::Integer(4294967297),
            Frame::Integer(12)
        ])
    );
    assert_eq!(eval("return struct.size('!4 b i c5')"), Frame::Integer(13));
    for (body, want) in [
        (
            "return struct.unpack('i', 'ab')",
            "ERR user_script:1: bad argument #2 to 'unpack' (data string too short)",
        ),
        (
            "return struct.pack('z', 1)",
            "ERR user_script:1: bad argument #1 to 'pack' (invalid format option 'z')",
        ),
        (
            "return struct.pack('!3 b', 1)",
            "ERR user_script:1: alignment 3 is not a power of 2",
        ),
        (
            "return struct.size('s')",
            "ERR user_script:1: bad argument #1 to 'size' (option 's' has no fixed size)",
        ),
        (
            "return struct.unpack('c0', 'abc')",
            "ERR user_script:1: format 'c0' needs a previous size",
        ),
        ("return cjson.decode('{')", "ERR user_script:1: Expected"),
    ] {
        let e = error_text(eval(body));
        assert!(e.starts_with(want), "{body}: {e}");
    }
}

/// mlua holds each string argument of a Rust function on one auxiliary stack of at most 8000
/// slots and panics past it (a panic stops the server): scripts pass thousands of arguments
/// at will. Each case here stopped the process before the gates (gate.rs).
#[test]
fn thousands_of_arguments_and_results_never_panic() {
    let _board = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    let keys = "local t = {} for i = 1, 7990 do t[i] = 'k' .. i end ";
    // redis.call takes them all, as Redis does; in pcall too.
    assert_eq!(
        eval(&format!("{keys} return redis.call('del', unpack(t))")),
        Frame::Integer(7990)
    );
    assert_eq!(
        eval(&format!("{keys} return redis.pcall('del', unpack(t))")),
        Frame::Integer(7990)
    );
    assert_eq!(
        eval(&format!(
            "{keys} return select(2, pcall(redis.call, 'del', unpack(t)))"
        )),
        Frame::Integer(7990)
    );
    // A bad argument among many still answers Redis's error.
    assert!(error_text(eval(&format!(
        "{keys} t[300] = {{}} return redis.call('del', unpack(t))"
    )))
    .starts_with("ERR Lua redis lib command arguments must be strings or integers"));
    // The libraries refuse that many arguments or results with an error.
    for body in [
        format!("{keys} return cmsgpack.pack(unpack(t))"),
        format!("{keys} return struct.pack(string.rep('s', 7990), unpack(t))"),
        format!("{keys} return redis.sha1hex(unpack(t))"),
        "return #{struct.unpack(string.rep('c1', 8100), string.rep('a', 8100))}".to_string(),
        format!("{keys} return #{{cmsgpack.unpack(cmsgpack.pack(unpack(t, 1, 3000)) .. cmsgpack.pack(unpack(t, 1, 3000)))}}"),
    ] {
        let e = error_text(eval(&body));
        assert!(
            e.contains("too many arguments") || e.contains("too many results"),
            "{body}: {e}"
        );
    }
    // A state that refused them goes on working.
    assert_eq!(eval("return #struct.pack('i', 1)"), Frame::Integer(4));
    // On a suspending state (scripts across shards) too.
    let engine = Engine::new_suspending("7.2.0").expect("engine");
    let host = std::rc::Rc::new(Waiting(Default::default()));
    assert_eq!(
        run_suspending(
            &engine,
            &host,
            &format!("{keys} return redis.call('del', unpack(t))")
        ),
        Frame::Integer(7990)
    );
    assert!(error_text(run_suspending(
        &engine,
        &host,
        &format!("{keys} return pcall(redis.call, 'del', unpack(t))")
    ))
    .contains("too many arguments"));
}

#[test]
fn struct_takes_what_redis_s_takes() {
    // Overflows and odd inputs answer, as Redis's struct does, without a panic.
    assert_eq!(
        eval("return {struct.unpack('i0', '')}"),
        Frame::Array(vec![Frame::Integer(0), Frame::Integer(1)])
    );
    assert!(error_text(eval("return struct.unpack('b', 'a', 0/0)"))
        .contains("offset must be 1 or greater"));
    assert!(
        error_text(eval("return struct.unpack('b', 'a', -1)")).contains("data string too short")
    );
    assert_eq!(eval("return struct.size('z')"), Frame::Integer(0));
    assert_eq!(
        eval("return {struct.unpack('c1c0', '3abc')}"),
        Frame::Array(vec![bulk("abc"), Frame::Integer(5)])
    );
    // Library errors: Lua's text with the caller's line, one ERR.
    let e = error_text(eval("return cjson.decode()"));
    assert!(e.starts_with("ERR user_script:1: "), "{e}");
    assert_eq!(e.matches("ERR").count(), 1, "{e}");
}

/// `redis.call`'s gate reads short argument lists itself and long ones go through a table
/// (gate.rs): both ways write every number as mlua's values would (an integer's digits, else
/// Redis's %.17g), and refuse the same arguments with the same words.
#[test]
fn both_ways_into_redis_call_read_arguments_alike() {
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    let values =
        "5, 3.0, -0.0, 0.1, -7, 1e20, 2^53, 2^63, -2^63, 2^64, math.huge, -math.huge, 'text', ''";
    let short = format!("return redis.call('del', {values})");
    // The same values after enough padding to take the table path.
    let long = format!(
        "local a = {{{values}}} for i = 1, 300 do a[#a + 1] = 'pad' end return redis.call('del', unpack(a))"
    );
    run(&mut engine, &mut host, &short, &[], &[]);
    run(&mut engine, &mut host, &long, &[], &[]);
    let expected = "del 5 3 -0 0.10000000000000001 -7 1e+20 9007199254740992 9.2233720368547758e+18 -9223372036854775808 1.8446744073709552e+19 inf -inf text ";
    assert_eq!(host.calls[0], expected);
    assert!(host.calls[1].starts_with(expected), "{}", host.calls[1]);
    for (body, text) in [
        (
            "return redis.pcall()",
            "Please specify at least one argument",
        ),
        (
            "return redis.pcall('get', {})",
            "must be strings or integers",
        ),
        (
            "return redis.pcall('get', nil)",
            "must be strings or integers",
        ),
    ] {
        let reply = error_text(run(&mut engine, &mut host, body, &[], &[]));
        assert!(reply.contains(text), "{body}: {reply}");
    }
}

/// A command `redis.call`'s gate read is not kept when the call fails before taking it (Lua's
/// "C stack overflow" at the gate's own call, reached through metamethods): it would hold the
/// arguments' copies on the shard, outside Lua's memory limit, until the next call (review
/// finding).
#[test]
fn a_command_the_gate_read_is_not_kept_past_the_run() {
    let mut engine = Engine::new("7.2.0").expect("engine");
    let mut host = Toy::default();
    let body = "local function deep(n) \
                  if n == 0 then return pcall(redis.call, 'set', 'k', string.rep('x', 1000)) end \
                  local t = setmetatable({}, {__index = function() return deep(n - 1) end}) \
                  return t.x \
                end \
                local failed = 0 \
                for d = 150, 260 do \
                  local ok, inner = pcall(deep, d) \
                  if ok and inner == false then failed = failed + 1 end \
                end \
                return failed";
    let failed = run(&mut engine, &mut host, body, &[], &[]);
    assert!(
        matches!(failed, Frame::Integer(n) if n > 0),
        "some call failed at the gate: {failed:?}"
    );
    assert!(crate::gate::take_command().is_err(), "nothing left behind");
}
