//! The test network: one Linux network namespace per node, joined by a bridge, with every
//! node-to-node connection routed through a delay proxy and every fault applied with nftables.
//!
//! ```text
//!   root namespace: bridge fkv<R>b 10.213.R.254/24, clients, delay proxies (one per ordered pair)
//!        │ veth
//!   fkv<R>n<i>: eth0 10.213.R.i/24, `ferrokv serve` on :8080 (HTTP) and :7000 (gRPC)
//!               nft table `chaos`: DNAT of peer gRPC to the proxy of (i → j); drops for
//!               partitions and packet loss, matched on the peer's real address
//! ```
//!
//! Clients always reach every node (as in Jepsen): partitions cut node-to-node links only.
//! The kernel here may lack `sch_netem`, so delay and jitter are added by the proxies (per byte
//! chunk, order kept) and packet loss by nftables (`numgen random`), which every kernel with
//! nf_tables has.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::process::Stdio;

use thiserror::Error;

pub const GRPC_PORT: u16 = 7000;
pub const HTTP_PORT: u16 = 8080;
/// First port of the proxies on the host side; pair (i, j) listens on `PROXY_BASE + i*16 + j`.
pub const PROXY_BASE: u16 = 40_000;

#[derive(Debug, Error)]
pub enum NetError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("running `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
}

/// The faults applied to one node's outgoing traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRules {
    /// Peers (1-based node numbers) this node's packets to are dropped.
    pub blocked: BTreeSet<usize>,
    /// Percentage of packets to peers (and replies to peers' requests) dropped at random.
    pub loss_percent: u8,
}

/// Network namespaces, veths and a bridge for `n` nodes; removed on drop.
pub struct Net {
    run: u8,
    nodes: usize,
}

impl Net {
    /// Create the topology for run number `run` (1..=250; one subnet per run).
    pub fn create(run: u8, nodes: usize) -> Result<Net, NetError> {
        let net = Net { run, nodes };
        net.destroy_quietly();
        let br = net.bridge();
        sh(&["ip", "link", "add", &br, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("{}/24", net.host_ip()), "dev", &br])?;
        sh(&["ip", "link", "set", &br, "up"])?;
        for i in 1..=nodes {
            let ns = net.ns(i);
            let host_end = net.host_end(i);
            sh(&["ip", "netns", "add", &ns])?;
            sh(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            sh(&["ip", "link", "set", &host_end, "master", &br])?;
            sh(&["ip", "link", "set", &host_end, "up"])?;
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            net.apply(i, &NodeRules::default())?;
        }
        Ok(net)
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    pub fn ns(&self, i: usize) -> String {
        format!("fkv{}n{i}", self.run)
    }

    /// The root-namespace end of node `i`'s veth pair.
    fn host_end(&self, i: usize) -> String {
        format!("fkv{}h{i}", self.run)
    }

    fn bridge(&self) -> String {
        format!("fkv{}b", self.run)
    }

    /// Node `i`'s address (1-based).
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.run, i as u8)
    }

    /// The root namespace's address on the bridge (clients and proxies).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.run, 254)
    }

    /// The host-side port of the proxy carrying node `from`'s connections to node `to`.
    pub fn proxy_port(from: usize, to: usize) -> u16 {
        PROXY_BASE + (from * 16 + to) as u16
    }

    /// Replace node `i`'s rules (routing through the proxies always stays).
    pub fn apply(&self, i: usize, rules: &NodeRules) -> Result<(), NetError> {
        let peers: Vec<usize> = (1..=self.nodes).filter(|&j| j != i).collect();
        let set =
            |ids: &mut dyn Iterator<Item = usize>| ids.map(|j| self.ip(j).to_string()).collect::<Vec<_>>().join(", ");
        let mut out = String::new();
        out.push_str("add table ip chaos\ndelete table ip chaos\ntable ip chaos {\n");
        out.push_str("  chain faults {\n    type filter hook output priority -300; policy accept;\n");
        if !rules.blocked.is_empty() {
            out.push_str(&format!("    ip daddr {{ {} }} drop\n", set(&mut rules.blocked.iter().copied())));
        }
        if rules.loss_percent > 0 && !peers.is_empty() {
            let p = rules.loss_percent.min(100);
            out.push_str(&format!(
                "    ip daddr {{ {} }} numgen random mod 100 < {p} drop\n",
                set(&mut peers.iter().copied())
            ));
            out.push_str(&format!(
                "    ip daddr {} tcp sport {GRPC_PORT} numgen random mod 100 < {p} drop\n",
                self.host_ip()
            ));
        }
        out.push_str("  }\n  chain via_proxy {\n    type nat hook output priority -100; policy accept;\n");
        for &j in &peers {
            out.push_str(&format!(
                "    ip daddr {} tcp dport {GRPC_PORT} dnat to {}:{}\n",
                self.ip(j),
                self.host_ip(),
                Self::proxy_port(i, j)
            ));
        }
        out.push_str("  }\n}\n");
        nft(&self.ns(i), &out)
    }

    /// Remove every fault (routing through the proxies stays).
    pub fn heal(&self) -> Result<(), NetError> {
        for i in 1..=self.nodes {
            self.apply(i, &NodeRules::default())?;
        }
        Ok(())
    }

    /// The command prefix that runs a program inside node `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(i)]
    }

    fn destroy_quietly(&self) {
        for i in 1..=self.nodes.max(9) {
            // Deleting a namespace destroys the veth inside it asynchronously, so its host end
            // can outlive `ip netns del` for a moment and make the next run's `ip link add`
            // fail with "File exists". Deleting the host end removes both ends at once.
            let _ = sh(&["ip", "link", "del", &self.host_end(i)]);
            let _ = sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy_quietly();
    }
}

/// True when this process may create network namespaces (root with CAP_NET_ADMIN and `ip`).
pub fn available() -> bool {
    let probe = format!("fkvprobe{}", std::process::id() % 100_000);
    let ok = sh(&["ip", "netns", "add", &probe]).is_ok();
    if ok {
        let _ = sh(&["ip", "netns", "del", &probe]);
    }
    ok && Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn sh(args: &[&str]) -> Result<(), NetError> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetError::Spawn { cmd: cmd.clone(), source })?;
    if !out.status.success() {
        return Err(NetError::Command { cmd, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}

fn nft(ns: &str, ruleset: &str) -> Result<(), NetError> {
    let cmd = format!("ip netns exec {ns} nft -f -");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Spawn { cmd: cmd.clone(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes()).map_err(|source| NetError::Spawn { cmd: cmd.clone(), source })?;
    }
    let out = child.wait_with_output().map_err(|source| NetError::Spawn { cmd: cmd.clone(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(NetError::Command { cmd, stderr: format!("{stderr}\nruleset:\n{ruleset}") });
    }
    Ok(())
}
