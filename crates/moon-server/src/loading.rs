//! While the shards replay their logs, the port is already open and answers as Redis does
//! while it loads: a health check or a client can tell "loading" from "down".
//!
//! Plain threads (the shards' executors are busy replaying) accept on the shards' listening
//! sockets and answer every request with `-LOADING Moon is loading the dataset in memory`,
//! except INFO (the server and persistence sections, with `loading:1` and the progress
//! fields), QUIT, and SHUTDOWN, which exits at once without touching the logs (replay only
//! reads them; a torn tail is cut at the next start). With a password required, INFO and
//! SHUTDOWN answer LOADING too: nothing is shown before AUTH, and AUTH waits for the data.
//! Nothing here changes a connection's state, so when loading ends each open connection is
//! handed to a shard as it stands, with the bytes it sent that were not answered yet
//! ([`Handoff`]), which the shard runs before reading more, as if it had connected then. TLS
//! connections wait in the backlog until then. At most [`MAX_CONNECTIONS`] are answered at
//! once and each may hold [`MAX_PENDING`] bytes of requests; INFO and SHUTDOWN are answered
//! only to a client that could run them without AUTH after loading (protected mode included).

use std::io::{ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use moon_proto::{Limits, RequestParser};

/// A connection accepted while loading, for a shard to serve from here on.
pub struct Handoff {
    pub stream: TcpStream,
    /// Bytes received and not answered yet (whole requests, and the start of one).
    pub leftover: Vec<u8>,
}

/// What INFO shows while loading.
#[derive(Clone)]
pub struct Progress {
    pub started: Instant,
    pub started_unix: u64,
    /// Bytes of every shard's base and incr at startup.
    pub total_bytes: u64,
    pub port: u16,
    /// INFO and SHUTDOWN answer only when the default user needs no password and may run
    /// everything (see the module docs)...
    pub open: bool,
    /// ...and, in protected mode, only to loopback clients.
    pub protected_mode: bool,
}

impl Progress {
    fn loaded(&self) -> u64 {
        moon_aof::reader::REPLAYED_BYTES
            .load(Ordering::Relaxed)
            .min(self.total_bytes)
    }

    fn percent(&self) -> f64 {
        if self.total_bytes == 0 {
            100.0
        } else {
            self.loaded() as f64 * 100.0 / self.total_bytes as f64
        }
    }

    fn eta_seconds(&self) -> u64 {
        let loaded = self.loaded();
        if loaded == 0 {
            return 1;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        (elapsed * (self.total_bytes - loaded) as f64 / loaded as f64).ceil() as u64
    }

    fn info(&self, section: Option<&str>) -> String {
        let want = |s: &str| {
            section.is_none_or(|x| x == s || x == "all" || x == "everything" || x == "default")
        };
        let mut out = String::new();
        if want("server") {
            out.push_str(&format!(
                "# Server\r\nredis_version:{}\r\nmoon_version:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                moon_store::REDIS_VERSION,
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                self.port,
                self.started.elapsed().as_secs()
            ));
        }
        if want("persistence") {
            out.push_str(&format!(
                "# Persistence\r\nloading:1\r\nasync_loading:0\r\nloading_start_time:{}\r\nloading_total_bytes:{}\r\nloading_rdb_used_mem:0\r\nloading_loaded_bytes:{}\r\nloading_loaded_perc:{:.2}\r\nloading_eta_seconds:{}\r\n\r\n",
                self.started_unix,
                self.total_bytes,
                self.loaded(),
                self.percent(),
                self.eta_seconds()
            ));
        }
        out
    }
}

/// Connections answered at once while loading; more are told LOADING and closed (a flood of
/// reconnecting health checks must not exhaust threads).
const MAX_CONNECTIONS: usize = 256;
/// Bytes a loading connection may hold that are not answered yet; past it, it is told
/// LOADING and closed.
const MAX_PENDING: usize = 1 << 20;

/// The threads answering while loading.
pub struct Loading {
    done: Arc<AtomicBool>,
    accepters: Vec<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<Option<Handoff>>>>>,
    logger: Option<JoinHandle<()>>,
}

const LOADING: &[u8] = b"-LOADING Moon is loading the dataset in memory\r\n";

/// Starts answering on the listening sockets `fds` (still owned by the caller).
pub fn start(fds: &[RawFd], progress: Progress) -> Loading {
    let done = Arc::new(AtomicBool::new(false));
    let conns: Arc<Mutex<Vec<JoinHandle<Option<Handoff>>>>> = Arc::default();
    let mut accepters = Vec::new();
    for &fd in fds {
        // SAFETY: `fd` is a listening socket the caller keeps open for longer than this
        // borrow; the clone is this thread's own descriptor.
        let borrowed = ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(fd) });
        let Ok(listener) = borrowed.try_clone() else {
            continue;
        };
        if listener.set_nonblocking(true).is_err() {
            continue;
        }
        let (done, conns, progress) = (done.clone(), conns.clone(), progress.clone());
        accepters.push(std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let Ok(mut c) = conns.lock() else { continue };
                        // Threads whose client left are joined as they end.
                        let (ended, running): (Vec<_>, Vec<_>) =
                            c.drain(..).partition(|h| h.is_finished());
                        *c = running;
                        for h in ended {
                            let _ = h.join();
                        }
                        if c.len() >= MAX_CONNECTIONS {
                            let _ = stream.write_all(LOADING);
                            continue;
                        }
                        let mut progress = progress.clone();
                        progress.open &= !progress.protected_mode || peer.ip().is_loopback();
                        let done = done.clone();
                        let spawned = std::thread::Builder::new()
                            .name("moon-loading".into())
                            .spawn(move || answer(stream, &done, &progress));
                        if let Ok(handle) = spawned {
                            c.push(handle);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }
    let logger = {
        let done = done.clone();
        Some(std::thread::spawn(move || {
            let mut last = Instant::now();
            while !done.load(Ordering::Acquire) {
                // Woken at once when loading ends (`finish` unparks it): a sleep here would
                // hold the port's first PONG back by up to its length.
                std::thread::park_timeout(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(2) {
                    last = Instant::now();
                    tracing::info!(
                        "Loading: {} of {} MB replayed ({:.1}%), about {} s left",
                        progress.loaded() >> 20,
                        progress.total_bytes >> 20,
                        progress.percent(),
                        progress.eta_seconds()
                    );
                }
            }
        }))
    };
    Loading {
        done,
        accepters,
        conns,
        logger,
    }
}

impl Loading {
    /// Loading is over: stops accepting and answering, and returns the open connections.
    pub fn finish(mut self) -> Vec<Handoff> {
        self.done.store(true, Ordering::Release);
        for a in self.accepters.drain(..) {
            let _ = a.join();
        }
        if let Some(l) = self.logger.take() {
            l.thread().unpark();
            let _ = l.join();
        }
        let conns = self
            .conns
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        conns
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    }
}

/// Answers one connection until loading ends (then hands it over) or the client leaves.
fn answer(mut stream: TcpStream, done: &AtomicBool, progress: &Progress) -> Option<Handoff> {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(5)));
    // A client that never reads is dropped rather than holding the end of loading.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut parser = RequestParser::new(Limits {
        max_bulk_len: MAX_PENDING,
        ..Limits::default()
    });
    let mut buf = BytesMut::new();
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        loop {
            // Once loading ends nothing more is answered here: what is left, whole requests
            // too, goes to the shard, which runs it before reading more.
            if done.load(Ordering::Acquire) {
                break;
            }
            match parser.next_request(&mut buf) {
                Ok(Some(args)) => {
                    let name = args
                        .first()
                        .map(|a| a.to_ascii_lowercase())
                        .unwrap_or_default();
                    let reply: Vec<u8> = match &name[..] {
                        b"info" if progress.open => {
                            let section = args
                                .get(1)
                                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
                            let text = progress.info(section.as_deref());
                            format!("${}\r\n{text}\r\n", text.len()).into_bytes()
                        }
                        b"quit" => {
                            let _ = stream.write_all(b"+OK\r\n");
                            return None;
                        }
                        b"shutdown" if progress.open => {
                            tracing::warn!(
                                "SHUTDOWN while loading: exiting now, the logs as they were"
                            );
                            std::process::exit(0);
                        }
                        _ => LOADING.to_vec(),
                    };
                    if stream.write_all(&reply).is_err() {
                        return None;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = stream.write_all(format!("-ERR {e}\r\n").as_bytes());
                    return None;
                }
            }
        }
        if done.load(Ordering::Acquire) {
            let _ = stream.set_read_timeout(None);
            let _ = stream.set_write_timeout(None);
            return Some(Handoff {
                stream,
                leftover: buf.to_vec(),
            });
        }
        if buf.len() > MAX_PENDING {
            let _ = stream.write_all(LOADING);
            return None;
        }
        match stream.read(&mut scratch) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}
