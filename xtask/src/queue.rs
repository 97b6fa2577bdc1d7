//! The crash matrix's job-queue workload (issue 24): producers push jobs on one list,
//! consumers take them with blocking moves into their own processing lists — Redis's reliable
//! queue, `BLMOVE queue processing LEFT RIGHT` — and finish each with `LREM processing 1 job`.
//! The queue and the processing lists are on different shards, so a served move is a
//! transaction across shards, woken by a push from another connection.
//!
//! After every kill (and power cut) each job must be where its acknowledgements say: a job
//! whose push was acknowledged, and not finished, is in the queue or one processing list —
//! exactly once; a finished job (its LREM acknowledged 1) is in none; no job is anywhere
//! twice, nor is a job nobody pushed. A job whose last command was cut off by the kill may be
//! either way. At each start the consumers first finish what their processing lists hold, as a
//! reliable queue's workers do after a crash.
//!
//! The consumer-group queue of streams (`stream_queue.rs`) runs beside it and is verified
//! with it: its counts are the same columns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PRODUCERS: usize = 2;
pub const CONSUMERS: usize = 3;
const QUEUE: &str = "jobs:queue";

fn processing(c: usize) -> String {
    format!("jobs:processing:{c}")
}

/// What the workload knows of its jobs, across kill cycles.
#[derive(Default)]
pub struct Jobs {
    /// Pushes acknowledged, with the instant (a power cut may take back a late one).
    pushed: BTreeMap<String, Instant>,
    /// Pushes sent whose reply never came.
    maybe_pushed: BTreeSet<String>,
    /// LREMs acknowledged with 1, with the instant.
    finished: BTreeMap<String, Instant>,
    /// LREMs sent whose reply never came, and finishes a power cut may have taken back.
    maybe_finished: BTreeSet<String>,
    next: u64,
    pub acknowledged: u64,
    /// What a consumer saw that cannot be: a job it had taken (BLMOVE acknowledged) missing
    /// from its processing list.
    anomalies: Vec<String>,
    /// The stream consumer-group queue's state.
    pub streams: Arc<Mutex<crate::stream_queue::StreamJobs>>,
}

impl Jobs {
    /// After a kill: acknowledgements later than `durable_before` may be gone (a power cut
    /// under a lazy fsync policy); they become uncertain.
    pub fn forget_acknowledged_after(&mut self, durable_before: Instant) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_acknowledged_after(durable_before);
        let late: Vec<String> = self
            .pushed
            .iter()
            .filter(|(_, at)| **at > durable_before)
            .map(|(j, _)| j.clone())
            .collect();
        for j in late {
            self.pushed.remove(&j);
            self.maybe_pushed.insert(j);
        }
        let late: Vec<String> = self
            .finished
            .iter()
            .filter(|(_, at)| **at > durable_before)
            .map(|(j, _)| j.clone())
            .collect();
        for j in late {
            self.finished.remove(&j);
            self.maybe_finished.insert(j);
        }
    }

    /// Reads the queue and every processing list; returns what is wrong.
    pub fn verify(&mut self, con: &mut redis::Connection) -> anyhow::Result<Vec<String>> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut lists = vec![QUEUE.to_string()];
        lists.extend((0..CONSUMERS).map(processing));
        for l in &lists {
            let jobs: Vec<String> = redis::cmd("LRANGE").arg(l).arg(0).arg(-1).query(con)?;
            for j in jobs {
                *seen.entry(j).or_insert(0) += 1;
            }
        }
        let mut wrong = std::mem::take(&mut self.anomalies);
        wrong.extend(
            self.streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .verify(con)?
                .into_iter()
                .map(|w| format!("stream: {w}")),
        );
        for (j, n) in &seen {
            if *n > 1 {
                wrong.push(format!("job {j} is in the lists {n} times"));
            }
            if self.finished.contains_key(j) {
                wrong.push(format!(
                    "job {j} was finished (LREM acknowledged) but is back"
                ));
            }
            if !self.pushed.contains_key(j) && !self.maybe_pushed.contains(j) {
                wrong.push(format!("job {j} was never pushed"));
            }
        }
        for j in self.pushed.keys() {
            if !seen.contains_key(j)
                && !self.finished.contains_key(j)
                && !self.maybe_finished.contains(j)
            {
                wrong.push(format!("job {j} (push acknowledged) is lost"));
            }
        }
        // What is there now is known: an uncertain push that is present was pushed; one that
        // is absent and was never taken will never appear.
        for j in seen.keys() {
            if self.maybe_pushed.remove(j) {
                self.pushed
                    .insert(j.clone(), Instant::now() - Duration::from_secs(3600));
            }
        }
        self.maybe_pushed.clear();
        Ok(wrong)
    }
}

fn is_gone(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn producer(url: String, p: usize, jobs: Arc<Mutex<Jobs>>, stop: Arc<AtomicBool>) {
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let job = {
            let mut j = jobs.lock().unwrap_or_else(|e| e.into_inner());
            j.next += 1;
            format!("job-{p}-{}", j.next)
        };
        match redis::cmd("RPUSH")
            .arg(QUEUE)
            .arg(&job)
            .query::<i64>(&mut con)
        {
            Ok(_) => {
                let mut j = jobs.lock().unwrap_or_else(|e| e.into_inner());
                j.pushed.insert(job, Instant::now());
                j.acknowledged += 1;
            }
            Err(e) => {
                jobs.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .maybe_pushed
                    .insert(job);
                if is_gone(&e) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Finishes `job` (LREM from the consumer's list); false once the server is gone.
fn finish(con: &mut redis::Connection, list: &str, job: String, jobs: &Mutex<Jobs>) -> bool {
    match redis::cmd("LREM")
        .arg(list)
        .arg(1)
        .arg(&job)
        .query::<i64>(con)
    {
        Ok(1) => {
            let mut j = jobs.lock().unwrap_or_else(|e| e.into_inner());
            j.finished.insert(job, Instant::now());
            j.acknowledged += 1;
            true
        }
        Ok(_) => {
            let mut j = jobs.lock().unwrap_or_else(|e| e.into_inner());
            if !j.maybe_finished.contains(&job) {
                j.anomalies
                    .push(format!("job {job} was taken into {list} but is not there"));
            }
            true
        }
        Err(e) => {
            jobs.lock()
                .unwrap_or_else(|e| e.into_inner())
                .maybe_finished
                .insert(job);
            !is_gone(&e)
        }
    }
}

fn consumer(url: String, c: usize, jobs: Arc<Mutex<Jobs>>, stop: Arc<AtomicBool>) {
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let list = processing(c);
    // What a crash left taken but unfinished: finish it first.
    let left: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap_or_default();
    for job in left {
        if !finish(&mut con, &list, job, &jobs) {
            return;
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let got = redis::cmd("BLMOVE")
            .arg(QUEUE)
            .arg(&list)
            .arg("LEFT")
            .arg("RIGHT")
            .arg(0.2)
            .query::<Option<String>>(&mut con);
        match got {
            Ok(Some(job)) => {
                if !finish(&mut con, &list, job, &jobs) {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) if is_gone(&e) => return,
            Err(_) => {}
        }
    }
}

/// Starts the producers and consumers against `url`; they stop with `stop` or the server.
pub fn start(
    url: &str,
    jobs: &Arc<Mutex<Jobs>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let streams = jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .streams
        .clone();
    let mut handles = crate::stream_queue::start(url, &streams, stop);
    for p in 0..PRODUCERS {
        let (url, jobs, stop) = (url.to_string(), jobs.clone(), stop.clone());
        handles.push(std::thread::spawn(move || producer(url, p, jobs, stop)));
    }
    for c in 0..CONSUMERS {
        let (url, jobs, stop) = (url.to_string(), jobs.clone(), stop.clone());
        handles.push(std::thread::spawn(move || consumer(url, c, jobs, stop)));
    }
    handles
}

impl Jobs {
    /// Acknowledgements of both queues (the crash matrix's "queue: acknowledged").
    pub fn all_acknowledged(&self) -> u64 {
        self.acknowledged
            + self
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .acknowledged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_acknowledgements_become_uncertain() {
        let mut j = Jobs::default();
        let t0 = Instant::now();
        j.pushed.insert("a".into(), t0);
        j.finished.insert("b".into(), t0 + Duration::from_secs(5));
        j.forget_acknowledged_after(t0 + Duration::from_secs(1));
        assert!(j.pushed.contains_key("a"));
        assert!(j.maybe_finished.contains("b") && !j.finished.contains_key("b"));
    }
}
