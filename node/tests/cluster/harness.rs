//! Test harness: real `ferrokv serve` processes on loopback, driven over real HTTP.
//!
//! Every wait polls for a condition with a deadline (no sleeps standing in for readiness), and
//! every process is killed when the harness is dropped, pass or fail.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrokv");

/// A free loopback port below the kernel's ephemeral range (so outgoing connections cannot
/// take it between this check and the node binding it), spread by process id so parallel
/// test processes do not pick the same ones.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(n.wrapping_mul(13)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

pub struct Node {
    pub id: u64,
    pub http: String,
    pub grpc: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub extra: Vec<String>,
    pub child: Option<Child>,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    pub initial: String,
    pub http: reqwest::Client,
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Cluster {
    /// Start `n` nodes forming a new cluster; waits until all are ready.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(id, Self::new_node(&root, id, extra));
        }
        let initial = nodes.values().map(|n| format!("{}={}", n.id, n.grpc)).collect::<Vec<_>>().join(",");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
        let mut c = Cluster { root, nodes, initial, http };
        for id in 1..=n {
            c.spawn(id, true);
        }
        c.wait_ready_all().await;
        c
    }

    fn new_node(root: &tempfile::TempDir, id: u64, extra: &[&str]) -> Node {
        Node {
            id,
            http: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            dir: root.path().join(format!("node-{id}")),
            log: root.path().join(format!("node-{id}.log")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        }
    }

    /// Start node `id`'s process (`initial`: with --initial-members, else it must have --join).
    pub fn spawn(&mut self, id: u64, initial: bool) {
        let initial_members = self.initial.clone();
        let node = self.nodes.get_mut(&id).expect("node");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--node-id", &id.to_string(), "--http-addr", &node.http, "--grpc-addr", &node.grpc])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(&node.extra)
            .env("RUST_LOG", "info,openraft=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // Fast timeouts keep the tests short; a test's own flags win.
        for (flag, value) in
            [("--heartbeat-ms", "50"), ("--election-timeout-ms", "300"), ("--request-timeout-ms", "4000")]
        {
            if !node.extra.iter().any(|a| a == flag) {
                cmd.args([flag, value]);
            }
        }
        if initial {
            cmd.args(["--initial-members", &initial_members]);
        }
        node.child = Some(cmd.spawn().expect("spawn ferrokv"));
    }

    /// Add a brand-new node that joins through node `via`'s HTTP address.
    pub async fn join_new(&mut self, id: u64, via: u64, extra: &[&str]) {
        let mut node = Self::new_node(&self.root, id, extra);
        node.extra.push("--join".into());
        node.extra.push(format!("http://{}", self.nodes[&via].http));
        self.nodes.insert(id, node);
        self.spawn(id, false);
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status success.
    pub fn stop(&mut self, id: u64) -> bool {
        let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) else {
            return true;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, id: u64, sig: &str) {
        if let Some(child) = self.nodes[&id].child.as_ref() {
            let _ = Command::new("kill").args([sig, &child.id().to_string()]).status();
        }
    }

    pub fn wipe(&mut self, id: u64) {
        let dir = &self.nodes[&id].dir;
        let _ = std::fs::remove_dir_all(dir);
    }

    pub fn alive(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        self.nodes[&id].url(path)
    }

    pub fn node_log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    pub async fn is_ready(&self, id: u64) -> bool {
        matches!(self.http.get(self.url(id, "/readyz")).send().await, Ok(r) if r.status() == 200)
    }

    pub async fn wait_ready(&self, id: u64) {
        let deadline = Instant::now() + Duration::from_secs(40);
        while !self.is_ready(id).await {
            if Instant::now() > deadline {
                panic!("node {id} not ready; log:\n{}", self.node_log(id));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready_all(&self) {
        for id in self.alive() {
            self.wait_ready(id).await;
        }
    }

    pub async fn cluster_view(&self, id: u64) -> Option<Value> {
        let r = self.http.get(self.url(id, "/v1/cluster")).send().await.ok()?;
        if r.status() != 200 {
            return None;
        }
        r.json().await.ok()
    }

    /// The leader's node id, as agreed by a live node, waiting for one to exist.
    pub async fn leader(&self) -> u64 {
        let alive = self.alive();
        eventually("a leader", Duration::from_secs(20), || {
            let alive = alive.clone();
            async move {
                for id in alive {
                    let leader = self.cluster_view(id).await.and_then(|v| v["leader_id"].as_u64());
                    if let Some(l) = leader.filter(|l| self.alive().contains(l)) {
                        return Some(l);
                    }
                }
                None
            }
        })
        .await
    }

    /// A live node other than the leader.
    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        self.alive().into_iter().find(|&id| id != leader).expect("a follower")
    }

    /// The node's applied index.
    pub async fn applied(&self, id: u64) -> Option<u64> {
        self.cluster_view(id).await.and_then(|v| v["applied_index"].as_u64())
    }

    /// A metric sample value from node `id` (first series matching name and label filter).
    pub async fn metric(&self, id: u64, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        let text = self.http.get(self.url(id, "/metrics")).send().await.ok()?.text().await.ok()?;
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    // --- key/value helpers -------------------------------------------------------------------

    pub async fn put(&self, id: u64, key: &str, value: &str) -> reqwest::Response {
        self.http.put(self.url(id, &format!("/v1/kv/{key}"))).body(value.to_string()).send().await.expect("put")
    }

    /// Put and expect success; returns the revision.
    pub async fn put_ok(&self, id: u64, key: &str, value: &str) -> u64 {
        let r = self.put(id, key, value).await;
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert!(status.is_success(), "put {key} on node {id}: {status} {body}");
        body["revision"].as_u64().expect("revision")
    }

    pub async fn get(&self, id: u64, key: &str, consistency: &str) -> reqwest::Response {
        self.http.get(self.url(id, &format!("/v1/kv/{key}?consistency={consistency}"))).send().await.expect("get")
    }

    /// The value of `key` read from node `id`, None when absent.
    pub async fn value(&self, id: u64, key: &str, consistency: &str) -> Option<String> {
        let r = self.get(id, key, consistency).await;
        match r.status().as_u16() {
            200 => Some(r.text().await.expect("body")),
            404 => None,
            s => panic!("get {key} on node {id}: unexpected {s}: {}", r.text().await.unwrap_or_default()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for node in self.nodes.values() {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} log (last 40 lines) ----", node.id);
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Assert an error response: status and stable code.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    expect_error_one_of(resp, status, &[code]).await;
}

/// Assert an error response: status and one of the stable codes that may honestly describe it.
pub async fn expect_error_one_of(resp: reqwest::Response, status: u16, codes: &[&str]) {
    let got = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "expected {status} {codes:?}, got {got} {body}");
    assert!(codes.iter().any(|code| body["error"]["code"] == *code), "unexpected body {body}, expected {codes:?}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "error without message: {body}");
}
