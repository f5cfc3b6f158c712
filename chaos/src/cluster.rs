//! Real `ferrokv serve` processes, one per network namespace, and the delay proxies between
//! them. Every process is killed when the cluster is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::Value;
use tokio::time::Instant;

use crate::net::GRPC_PORT;
use crate::net::HTTP_PORT;
use crate::net::Net;
use crate::proxy::Proxy;

/// Settings every node gets.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub binary: PathBuf,
    /// Extra `ferrokv serve` flags.
    pub extra: Vec<String>,
}

pub struct Cluster {
    pub net: Net,
    pub http: reqwest::Client,
    settings: NodeSettings,
    root: tempfile::TempDir,
    children: BTreeMap<usize, Child>,
    /// (from, to) → proxy; kept alive for the cluster's lifetime.
    proxies: BTreeMap<(usize, usize), Proxy>,
}

impl Cluster {
    /// Create the network, the proxies and `n` nodes, and wait for a leader.
    pub async fn start(run: u8, n: usize, settings: NodeSettings) -> Result<Cluster> {
        let net = Net::create(run, n).context("creating the network namespaces")?;
        let mut proxies = BTreeMap::new();
        for from in 1..=n {
            for to in (1..=n).filter(|&t| t != from) {
                let listen = SocketAddr::new(net.host_ip().into(), Net::proxy_port(from, to));
                let target = SocketAddr::new(net.ip(to).into(), GRPC_PORT);
                proxies.insert((from, to), Proxy::start(listen, target).await.context("starting a proxy")?);
            }
        }
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).tcp_nodelay(true).build()?;
        let root = tempfile::Builder::new().prefix("ferrokv-chaos").tempdir()?;
        let mut c = Cluster { net, http, settings, root, children: BTreeMap::new(), proxies };
        for i in 1..=n {
            c.spawn(i)?;
        }
        c.wait_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    pub fn size(&self) -> usize {
        self.net.nodes()
    }

    pub fn http_url(&self, i: usize, path: &str) -> String {
        format!("http://{}:{HTTP_PORT}{path}", self.net.ip(i))
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("n{i}"))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("n{i}.log"))
    }

    /// Every node's log, concatenated with a header per node.
    pub fn logs(&self) -> BTreeMap<usize, String> {
        (1..=self.size()).map(|i| (i, std::fs::read_to_string(self.log_path(i)).unwrap_or_default())).collect()
    }

    /// Start node `i` (again), with its data dir as it is.
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let members: Vec<String> = (1..=self.size()).map(|j| format!("{j}={}:{GRPC_PORT}", self.net.ip(j))).collect();
        let ip = self.net.ip(i);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i))?;
        let prefix = self.net.exec_prefix(i);
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..])
            .arg(&self.settings.binary)
            .arg("serve")
            .args(["--node-id", &i.to_string()])
            .args(["--http-addr", &format!("{ip}:{HTTP_PORT}")])
            .args(["--grpc-addr", &format!("{ip}:{GRPC_PORT}")])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--initial-members", &members.join(",")])
            .args(&self.settings.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting node {i}"))?;
        self.children.insert(i, child);
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<Pid> {
        self.children.get(&i).map(|c| Pid::from_raw(c.id() as i32))
    }

    /// kill -9 node `i` (no-op when it is not running).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children.remove(&i) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) node `i`.
    pub fn pause(&self, i: usize, paused: bool) {
        if let Some(pid) = self.pid(i) {
            let _ = kill(pid, if paused { Signal::SIGSTOP } else { Signal::SIGCONT });
        }
    }

    /// Delete node `i`'s data dir (the node must be stopped).
    pub fn wipe(&self, i: usize) -> Result<()> {
        let dir = self.data_dir(i);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    pub fn running(&self) -> Vec<usize> {
        self.children.keys().copied().collect()
    }

    /// Set delay and jitter on every link.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        for p in self.proxies.values() {
            p.delay.set(delay, jitter);
        }
    }

    /// `GET /v1/cluster` of node `i`, quickly.
    pub async fn view(&self, i: usize) -> Option<Value> {
        let resp = self.http.get(self.http_url(i, "/v1/cluster")).timeout(Duration::from_millis(800)).send().await;
        resp.ok().filter(|r| r.status().is_success())?.json().await.ok()
    }

    /// The node number of the leader, as a majority of running nodes sees it.
    pub async fn leader(&self) -> Option<usize> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for i in self.running() {
            if let Some(id) = self.view(i).await.and_then(|v| v["leader_id"].as_u64()) {
                *votes.entry(id).or_default() += 1;
            }
        }
        let (id, n) = votes.into_iter().max_by_key(|(_, n)| *n)?;
        (2 * n > self.size()).then_some(id as usize)
    }

    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            // A paused process must be woken to die promptly.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
