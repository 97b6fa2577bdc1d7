//! Issue 29: the open-files limit is raised at startup to fit `maxclients`, as Redis does,
//! and where the system allows less, `maxclients` is lowered to what fits — a server never
//! promises clients it cannot accept. (Its own file: the test lowers this process's limit,
//! which the server inherits.)

mod common;

use common::*;

/// The server's soft open-files limit, from /proc.
fn open_files_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

fn maxclients(c: &mut redis::Connection) -> u64 {
    let pair: Vec<String> = cmd(c, &["CONFIG", "GET", "maxclients"]);
    pair[1].parse().expect("a number")
}

#[test]
fn maxclients_always_fits_the_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // A low limit, as a small VM or container gives: the server must raise it (it may, up to
    // the hard limit, or past it as root) or lower maxclients to fit.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, 256, hard.min(256)).expect("setrlimit");
    for (shards, wanted) in [(2, 10_000u64), (1, 100)] {
        let wanted_text = wanted.to_string();
        let s = MoonServer::start(shards, &["--maxclients", &wanted_text]);
        let mut c = s.client();
        let limit = open_files_limit(s.pid());
        let clients = maxclients(&mut c);
        assert!(
            clients + 32 <= limit,
            "maxclients {clients} does not fit {limit} open files"
        );
        if limit >= wanted + 32 + 8 * shards as u64 {
            assert_eq!(clients, wanted, "lowered although the limit was raised");
        } else {
            assert!(clients < wanted);
            assert!(
                s.log_text().contains("raise `ulimit -n`"),
                "the warning names the fix"
            );
        }
        // At run time too: CONFIG SET maxclients raises the limit, or is refused whole.
        let more = clients * 4;
        let set: redis::RedisResult<()> = redis::cmd("CONFIG")
            .arg(&["SET", "maxclients", &more.to_string()])
            .query(&mut c);
        match set {
            Ok(()) => {
                assert_eq!(maxclients(&mut c), more);
                assert!(open_files_limit(s.pid()) >= more + 32, "limit not raised");
            }
            Err(e) => {
                assert!(err_text(&e).contains("room for"), "{e}");
                assert_eq!(maxclients(&mut c), clients, "a refused SET changed it");
            }
        }
    }
}
