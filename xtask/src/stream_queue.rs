//! The crash matrix's consumer-group workload (issue 26): producers XADD jobs to one stream,
//! two workers read them with `XREADGROUP ... BLOCK` and XACK them — one of them leaves every
//! other delivery unacknowledged, as a worker that died would — and a rescuer XAUTOCLAIMs
//! what stayed pending and acknowledges it.
//!
//! After every kill (and power cut): every acknowledged XADD is in the stream with its job;
//! no entry was never added; an entry whose XACK was acknowledged is not pending again; an
//! entry whose delivery was acknowledged is pending or acknowledged — never dropped from the
//! group while unacknowledged. What a cut-off command did may be either way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM: &str = "jobs:stream";
const GROUP: &str = "workers";

/// What the workload knows of its entries, across kill cycles.
#[derive(Default)]
pub struct StreamJobs {
    /// XADDs acknowledged: id → (job, when).
    added: BTreeMap<String, (String, Instant)>,
    /// Jobs whose XADD reply never came.
    maybe_added: BTreeSet<String>,
    /// Deliveries acknowledged (XREADGROUP or XAUTOCLAIM replied with the id).
    delivered: BTreeMap<String, Instant>,
    /// XACKs acknowledged with 1.
    acked: BTreeMap<String, Instant>,
    /// XACKs whose reply never came, or that a power cut may have taken back.
    maybe_acked: BTreeSet<String>,
    next: u64,
    pub acknowledged: u64,
}

impl StreamJobs {
    pub fn forget_acknowledged_after(&mut self, durable_before: Instant) {
        let late: Vec<String> = self
            .added
            .iter()
            .filter(|(_, (_, at))| *at > durable_before)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some((job, _)) = self.added.remove(&id) {
                self.maybe_added.insert(job);
            }
        }
        self.delivered.retain(|_, at| *at <= durable_before);
        let late: Vec<String> = self
            .acked
            .iter()
            .filter(|(_, at)| **at > durable_before)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            self.acked.remove(&id);
            self.maybe_acked.insert(id);
        }
    }

    /// Reads the stream and its group's pending entries; returns what is wrong.
    pub fn verify(&mut self, con: &mut redis::Connection) -> anyhow::Result<Vec<String>> {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query(con)?;
        let entries: BTreeMap<String, String> = entries
            .into_iter()
            .map(|(id, f)| (id, f.get(1).cloned().unwrap_or_default()))
            .collect();
        let pending: BTreeSet<String> = if entries.is_empty() && self.added.is_empty() {
            BTreeSet::new()
        } else {
            let rows: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
                .arg(STREAM)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1_000_000)
                .query(con)
                .unwrap_or_default();
            rows.into_iter().map(|r| r.0).collect()
        };
        let mut wrong = Vec::new();
        for (id, (job, _)) in &self.added {
            match entries.get(id) {
                Some(j) if j == job => {}
                Some(j) => wrong.push(format!("entry {id} holds {j}, XADD said {job}")),
                None => wrong.push(format!("entry {id} ({job}, XADD acknowledged) is lost")),
            }
        }
        for (id, job) in &entries {
            if !self.added.contains_key(id) && !self.maybe_added.contains(job) {
                wrong.push(format!("entry {id} ({job}) was never added"));
            }
        }
        for id in self.acked.keys() {
            if pending.contains(id) {
                wrong.push(format!(
                    "entry {id} was acknowledged (XACK replied 1) but is pending"
                ));
            }
        }
        for id in self.delivered.keys() {
            if !pending.contains(id)
                && !self.acked.contains_key(id)
                && !self.maybe_acked.contains(id)
            {
                wrong.push(format!(
                    "entry {id} was delivered but is neither pending nor acknowledged"
                ));
            }
        }
        // What is there now is known.
        for (id, job) in &entries {
            if self.maybe_added.remove(job) {
                self.added.insert(
                    id.clone(),
                    (job.clone(), Instant::now() - Duration::from_secs(3600)),
                );
            }
        }
        self.maybe_added.clear();
        for id in std::mem::take(&mut self.maybe_acked) {
            if !pending.contains(&id) {
                self.acked
                    .insert(id, Instant::now() - Duration::from_secs(3600));
            }
        }
        Ok(wrong)
    }
}

fn is_gone(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn lock(jobs: &Mutex<StreamJobs>) -> std::sync::MutexGuard<'_, StreamJobs> {
    jobs.lock().unwrap_or_else(|e| e.into_inner())
}

fn producer(url: String, p: usize, jobs: Arc<Mutex<StreamJobs>>, stop: Arc<AtomicBool>) {
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let job = {
            let mut j = lock(&jobs);
            j.next += 1;
            format!("sjob-{p}-{}", j.next)
        };
        match redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("job")
            .arg(&job)
            .query::<String>(&mut con)
        {
            Ok(id) => {
                let mut j = lock(&jobs);
                j.added.insert(id, (job, Instant::now()));
                j.acknowledged += 1;
            }
            Err(e) => {
                lock(&jobs).maybe_added.insert(job);
                if is_gone(&e) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Acknowledges `id`; false once the server is gone.
fn ack(con: &mut redis::Connection, id: &str, jobs: &Mutex<StreamJobs>) -> bool {
    match redis::cmd("XACK")
        .arg(STREAM)
        .arg(GROUP)
        .arg(id)
        .query::<i64>(con)
    {
        Ok(1) => {
            let mut j = lock(jobs);
            j.acked.insert(id.to_string(), Instant::now());
            j.acknowledged += 1;
            true
        }
        Ok(_) => true,
        Err(e) => {
            lock(jobs).maybe_acked.insert(id.to_string());
            !is_gone(&e)
        }
    }
}

fn is_id(b: &[u8]) -> bool {
    let text = String::from_utf8_lossy(b);
    let mut parts = text.split('-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// The ids of an XREADGROUP or XAUTOCLAIM reply's entries.
fn ids_of(v: &redis::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let redis::Value::Array(items) = v {
        for item in items {
            if let redis::Value::Array(pair) = item {
                // An entry is [id, [field, value, ...]]; a stream is [key, [entry, ...]].
                let is_entry = match (pair.first(), pair.get(1)) {
                    (Some(redis::Value::BulkString(id)), Some(redis::Value::Array(fields))) => {
                        pair.len() == 2
                            && is_id(id)
                            && fields
                                .iter()
                                .all(|f| matches!(f, redis::Value::BulkString(_)))
                    }
                    _ => false,
                };
                if is_entry {
                    if let Some(redis::Value::BulkString(id)) = pair.first() {
                        out.push(String::from_utf8_lossy(id).into_owned());
                    }
                } else if let Some(entries) = pair.get(1) {
                    out.extend(ids_of(entries));
                }
            }
        }
    }
    out
}

fn worker(url: String, w: usize, jobs: Arc<Mutex<StreamJobs>>, stop: Arc<AtomicBool>) {
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let _ = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query::<redis::Value>(&mut con);
    let me = format!("worker-{w}");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let got = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&me)
            .arg("COUNT")
            .arg(5)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query::<redis::Value>(&mut con);
        match got {
            Ok(v) => {
                let ids = ids_of(&v);
                {
                    let mut j = lock(&jobs);
                    for id in &ids {
                        j.delivered.insert(id.clone(), Instant::now());
                    }
                }
                for id in ids {
                    n += 1;
                    // Worker 1 "dies" on every other job: the rescuer claims it later.
                    if w == 1 && n.is_multiple_of(2) {
                        continue;
                    }
                    if !ack(&mut con, &id, &jobs) {
                        return;
                    }
                }
            }
            Err(e) if is_gone(&e) => return,
            Err(_) => {}
        }
    }
}

fn rescuer(url: String, jobs: Arc<Mutex<StreamJobs>>, stop: Arc<AtomicBool>) {
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let got = redis::cmd("XAUTOCLAIM")
            .arg(STREAM)
            .arg(GROUP)
            .arg("rescuer")
            .arg(50)
            .arg("0")
            .arg("COUNT")
            .arg(10)
            .query::<redis::Value>(&mut con);
        match got {
            Ok(redis::Value::Array(parts)) => {
                let ids = parts.get(1).map(ids_of).unwrap_or_default();
                {
                    let mut j = lock(&jobs);
                    for id in &ids {
                        j.delivered.insert(id.clone(), Instant::now());
                    }
                }
                for id in ids {
                    if !ack(&mut con, &id, &jobs) {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) if is_gone(&e) => return,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the producers, workers and rescuer against `url`.
pub fn start(
    url: &str,
    jobs: &Arc<Mutex<StreamJobs>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    for p in 0..2 {
        let (url, jobs, stop) = (url.to_string(), jobs.clone(), stop.clone());
        handles.push(std::thread::spawn(move || producer(url, p, jobs, stop)));
    }
    for w in 0..2 {
        let (url, jobs, stop) = (url.to_string(), jobs.clone(), stop.clone());
        handles.push(std::thread::spawn(move || worker(url, w, jobs, stop)));
    }
    let (url, jobs, stop) = (url.to_string(), jobs.clone(), stop.clone());
    handles.push(std::thread::spawn(move || rescuer(url, jobs, stop)));
    handles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_acknowledgements_become_uncertain() {
        let mut j = StreamJobs::default();
        let t0 = Instant::now();
        j.added.insert("1-0".into(), ("a".into(), t0));
        j.acked.insert("1-0".into(), t0 + Duration::from_secs(5));
        j.delivered
            .insert("1-0".into(), t0 + Duration::from_secs(5));
        j.forget_acknowledged_after(t0 + Duration::from_secs(1));
        assert!(j.added.contains_key("1-0"));
        assert!(j.maybe_acked.contains("1-0") && j.delivered.is_empty());
    }

    #[test]
    fn reply_ids_are_read_from_both_shapes() {
        use redis::Value::{Array, BulkString};
        let entry = |id: &str| {
            Array(vec![
                BulkString(id.as_bytes().to_vec()),
                Array(vec![BulkString(b"job".to_vec()), BulkString(b"x".to_vec())]),
            ])
        };
        let xread = Array(vec![Array(vec![
            BulkString(b"jobs:stream".to_vec()),
            Array(vec![entry("1-0"), entry("2-0")]),
        ])]);
        assert_eq!(ids_of(&xread), vec!["1-0", "2-0"]);
        assert_eq!(ids_of(&Array(vec![entry("3-0")])), vec!["3-0"]);
    }
}
