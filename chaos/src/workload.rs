//! Clients: concurrent read / write / compare-and-set / delete on a small key set through every
//! node, each operation recorded with its invocation and return on the test's one monotonic
//! clock. Nothing here reads a node's clock.
//!
//! What a response proves:
//! - 2xx, 404 and 412 are definite outcomes (412: the CAS did not apply);
//! - a refused connection, `overloaded` or `not_ready` means the request never ran: not recorded;
//! - a timeout or any other 5xx may or may not have applied: recorded as indeterminate, and the
//!   client continues as a new process (a process has at most one operation in flight).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::linearizability::Op;
use crate::linearizability::Operation;
use crate::linearizability::Outcome;
use crate::linearizability::Ret;
use crate::rng::Rng;

/// A successful linearizable read of a value, for the monotonic-read check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSeen {
    pub key: String,
    pub invoke_ns: u64,
    pub return_ns: u64,
    pub mod_revision: u64,
}

/// The shared record of one run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
    reads: Mutex<Vec<ReadSeen>>,
    /// Responses no correct node gives (e.g. a 400 to a valid request).
    unexpected: Mutex<Vec<String>>,
    /// Why operations ended indeterminate or not run: cause → count.
    causes: Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            ops: Mutex::default(),
            reads: Mutex::default(),
            unexpected: Mutex::default(),
            causes: Mutex::default(),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn at_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    fn push(&self, op: Operation) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    pub fn history(&self) -> Vec<Operation> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reads(&self) -> Vec<ReadSeen> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn causes(&self) -> std::collections::BTreeMap<String, usize> {
        self.causes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn cause(&self, what: String) {
        *self.causes.lock().unwrap_or_else(|p| p.into_inner()).entry(what).or_default() += 1;
    }

    pub fn unexpected(&self) -> Vec<String> {
        self.unexpected.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Successful writes (plain or CAS) acknowledged after `after_ns`.
    pub fn acked_writes_after(&self, after_ns: u64) -> Option<u64> {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.iter()
            .filter(|o| o.invoke_ns >= after_ns)
            .filter_map(|o| match &o.outcome {
                Outcome::Ok { ret: Ret::WriteOk | Ret::CasOk, return_ns } => Some(*return_ns),
                _ => None,
            })
            .min()
    }
}

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub keys: usize,
    pub request_timeout: Duration,
    /// Relative weights of read, write, cas, delete.
    pub mix: [u32; 4],
    /// Pause between one client's operations (keeps histories checkable).
    pub think: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            keys: 5,
            request_timeout: Duration::from_secs(3),
            mix: [40, 30, 20, 10],
            think: Duration::from_millis(20),
        }
    }
}

/// What one HTTP exchange ended as.
enum Answer {
    /// Status, ETag revision, body.
    Done(u16, Option<u64>, String),
    /// Never reached a node, or refused before running: no effect.
    NotRun,
    /// May or may not have taken effect.
    Unknown,
}

/// One client.
pub struct Client {
    pub id: u64,
    generation: u64,
    http: reqwest::Client,
    nodes: Vec<String>,
    cfg: WorkloadConfig,
    rec: Arc<Recorder>,
    rng: Rng,
    counter: u64,
    /// Per key: the last (value, revision) this client saw, for CAS.
    seen: HashMap<String, (u64, u64)>,
}

impl Client {
    pub fn new(id: u64, http: reqwest::Client, nodes: Vec<String>, cfg: WorkloadConfig, rec: Arc<Recorder>) -> Self {
        Client {
            id,
            generation: 0,
            http,
            nodes,
            cfg,
            rec,
            rng: Rng::new(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed),
            counter: 0,
            seen: HashMap::new(),
        }
    }

    fn process(&self) -> u64 {
        self.id * 1_000_000 + self.generation
    }

    fn unique_value(&mut self) -> u64 {
        self.counter += 1;
        (self.id << 40) | self.counter
    }

    /// Run operations until `stop` is set (and at most `max_ops`).
    pub async fn run(mut self, stop: Arc<AtomicBool>, max_ops: usize) {
        for _ in 0..max_ops {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let key = format!("k{}", self.rng.below(self.cfg.keys as u64));
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            let choice = self.rng.weighted(&self.cfg.mix);
            match choice {
                0 => self.read(node, &key).await,
                1 => self.write(node, &key).await,
                2 => self.cas(node, &key).await,
                _ => self.delete(node, &key).await,
            }
            tokio::time::sleep(self.cfg.think).await;
        }
    }

    async fn exchange(&self, req: reqwest::RequestBuilder) -> Answer {
        match req.timeout(self.cfg.request_timeout).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let rev = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim_matches('"').parse().ok());
                let body = match resp.text().await {
                    Ok(b) => b,
                    Err(_) => {
                        self.rec.cause("body cut off".into());
                        return Answer::Unknown;
                    }
                };
                if status >= 500 {
                    let code = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(String::from))
                        .unwrap_or_default();
                    self.rec.cause(format!("{status} {code}"));
                    if status == 503 && (code == "overloaded" || code == "not_ready") {
                        return Answer::NotRun;
                    }
                    return Answer::Unknown;
                }
                Answer::Done(status, rev, body)
            }
            Err(e) if e.is_connect() => {
                self.rec.cause("connection refused".into());
                Answer::NotRun
            }
            Err(e) => {
                self.rec.cause(if e.is_timeout() { "client timeout".into() } else { "connection lost".into() });
                Answer::Unknown
            }
        }
    }

    fn record(&mut self, key: &str, op: Op, invoke_ns: u64, outcome: Outcome) {
        let indeterminate = matches!(outcome, Outcome::Indeterminate);
        self.rec.push(Operation { process: self.process(), key: key.to_string(), op, invoke_ns, outcome });
        if indeterminate {
            self.generation += 1;
        }
    }

    fn unexpected(&self, what: String) {
        self.rec.unexpected.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    }

    /// A linearizable read, recorded as an operation (and for the monotonic-read check).
    pub async fn read(&mut self, node: usize, key: &str) {
        let url = format!("{}/v1/kv/{key}", self.nodes[node]);
        let invoke_ns = self.rec.now_ns();
        let answer = self.exchange(self.http.get(url)).await;
        let return_ns = self.rec.now_ns();
        let ret = match answer {
            Answer::Done(200, Some(rev), body) => match body.parse::<u64>() {
                Ok(v) => {
                    self.seen.insert(key.to_string(), (v, rev));
                    self.rec.reads.lock().unwrap_or_else(|p| p.into_inner()).push(ReadSeen {
                        key: key.to_string(),
                        invoke_ns,
                        return_ns,
                        mod_revision: rev,
                    });
                    Ret::Read(Some(v))
                }
                Err(_) => {
                    self.unexpected(format!("read {key}: value {body:?} was never written by a client"));
                    return;
                }
            },
            Answer::Done(404, _, _) => {
                self.seen.remove(key);
                Ret::Read(None)
            }
            Answer::Done(status, _, body) => {
                self.unexpected(format!("read {key}: {status} {body}"));
                return;
            }
            // A read that did not answer changed nothing: leave it out of the history.
            Answer::NotRun | Answer::Unknown => return,
        };
        self.record(key, Op::Read, invoke_ns, Outcome::Ok { ret, return_ns });
    }

    async fn write(&mut self, node: usize, key: &str) {
        self.put(node, key, None).await;
    }

    async fn cas(&mut self, node: usize, key: &str) {
        match self.seen.get(key) {
            Some(&seen) => self.put(node, key, Some(seen)).await,
            None => self.read(node, key).await,
        }
    }

    /// A write, or with `expect` = the (value, revision) last seen, a compare-and-set.
    async fn put(&mut self, node: usize, key: &str, expect: Option<(u64, u64)>) {
        let v = self.unique_value();
        let url = format!("{}/v1/kv/{key}", self.nodes[node]);
        let mut req = self.http.put(url).body(v.to_string());
        if let Some((_, rev)) = expect {
            req = req.header("if-match", format!("\"{rev}\""));
        }
        let invoke_ns = self.rec.now_ns();
        let answer = self.exchange(req).await;
        let return_ns = self.rec.now_ns();
        let ret = if expect.is_some() { Ret::CasOk } else { Ret::WriteOk };
        let outcome = match answer {
            Answer::Done(200 | 201, _, body) => {
                if let Some(rev) = revision_of(&body) {
                    self.seen.insert(key.to_string(), (v, rev));
                }
                Outcome::Ok { ret, return_ns }
            }
            Answer::Done(412, _, _) if expect.is_some() => {
                self.seen.remove(key);
                Outcome::Ok { ret: Ret::CasFailed, return_ns }
            }
            Answer::Done(status, _, body) => {
                self.unexpected(format!("put {key}: {status} {body}"));
                return;
            }
            Answer::NotRun => return,
            Answer::Unknown => Outcome::Indeterminate,
        };
        let op = match expect {
            Some((expect, _)) => Op::Cas { expect, new: v },
            None => Op::Write(v),
        };
        self.record(key, op, invoke_ns, outcome);
    }

    async fn delete(&mut self, node: usize, key: &str) {
        let url = format!("{}/v1/kv/{key}", self.nodes[node]);
        let invoke_ns = self.rec.now_ns();
        let answer = self.exchange(self.http.delete(url)).await;
        let return_ns = self.rec.now_ns();
        let outcome = match answer {
            Answer::Done(204 | 200, _, _) => Outcome::Ok { ret: Ret::Deleted { existed: true }, return_ns },
            Answer::Done(404, _, _) => Outcome::Ok { ret: Ret::Deleted { existed: false }, return_ns },
            Answer::Done(status, _, body) => {
                self.unexpected(format!("delete {key}: {status} {body}"));
                return;
            }
            Answer::NotRun => return,
            Answer::Unknown => Outcome::Indeterminate,
        };
        self.seen.remove(key);
        self.record(key, Op::Delete, invoke_ns, outcome);
    }
}

/// The revision in a PUT answer (`{"revision": n, ...}`).
fn revision_of(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?["revision"].as_u64()
}

/// Violations of "a linearizable read never returns a value older than one already read":
/// for each key, a read invoked after another read returned must not see a lower revision.
pub fn monotonic_read_violations(reads: &[ReadSeen]) -> Vec<String> {
    let mut by_key: HashMap<&str, Vec<&ReadSeen>> = HashMap::new();
    for r in reads {
        by_key.entry(&r.key).or_default().push(r);
    }
    let mut violations = Vec::new();
    for (key, mut rs) in by_key {
        rs.sort_by_key(|r| r.return_ns);
        let mut by_invoke = rs.clone();
        by_invoke.sort_by_key(|r| r.invoke_ns);
        // Sweep reads in invocation order, keeping the highest revision among reads that
        // returned before the current read was invoked.
        let (mut done, mut highest): (usize, Option<&ReadSeen>) = (0, None);
        for r in by_invoke {
            while done < rs.len() && rs[done].return_ns < r.invoke_ns {
                if highest.is_none_or(|h| rs[done].mod_revision > h.mod_revision) {
                    highest = Some(rs[done]);
                }
                done += 1;
            }
            if let Some(h) = highest.filter(|h| r.mod_revision < h.mod_revision) {
                violations.push(format!(
                    "key {key}: read at {}ns saw revision {} after a read that returned at {}ns saw {}",
                    r.invoke_ns, r.mod_revision, h.return_ns, h.mod_revision
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(key: &str, invoke_ns: u64, return_ns: u64, mod_revision: u64) -> ReadSeen {
        ReadSeen { key: key.into(), invoke_ns, return_ns, mod_revision }
    }

    #[test]
    fn monotonic_reads_are_checked_per_key_in_real_time_order() {
        // Overlapping reads may disagree; a later read may not go back.
        let ok = vec![read("a", 0, 10, 5), read("a", 5, 20, 4), read("a", 30, 40, 5), read("b", 31, 41, 1)];
        assert!(monotonic_read_violations(&ok).is_empty());
        let bad = vec![read("a", 0, 10, 5), read("a", 11, 20, 4)];
        assert_eq!(monotonic_read_violations(&bad).len(), 1);
    }
}
