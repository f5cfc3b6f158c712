//! Fault scenarios and the run of one: start a cluster, run clients, inject, heal, converge,
//! then check everything that must hold.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::cluster::NodeSettings;
use crate::linearizability;
use crate::linearizability::CheckConfig;
use crate::linearizability::Verdict;
use crate::net::NodeRules;
use crate::rng::Rng;
use crate::workload::Client;
use crate::workload::Recorder;
use crate::workload::WorkloadConfig;
use crate::workload::monotonic_read_violations;

/// One kind of fault (or a combination), injected and then healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// kill -9 the leader, restart it after the hold.
    KillLeader,
    /// kill -9 a follower, restart it after the hold.
    KillFollower,
    /// kill -9 a majority (the leader among them), restart them after the hold.
    KillMajority,
    /// SIGSTOP the leader for the hold (longer than the election timeout), then SIGCONT.
    PauseLeader,
    /// Cut the leader off from every other node.
    PartitionLeader,
    /// Split the nodes into a majority and a minority.
    MajorityMinority,
    /// Two sides that cannot talk, and one node that talks to both.
    Bridge,
    /// The leader's packets to the others are dropped; theirs to it still arrive.
    Asymmetric,
    /// 50 ms ± 40 ms delay on every link.
    Delay,
    /// 10% packet loss on every link.
    Loss,
    /// kill -9 a node and restart it at once with its data dir.
    RestartIntact,
    /// kill -9 a node, delete its data dir, restart it (it rejoins under a new Raft id).
    RestartWiped,
    /// Change a follower's state behind Raft's back; anti-entropy must repair it.
    Corrupt,
    /// A follower stops applying committed entries for the hold, then catches up: its
    /// linearizable reads must go to the leader meanwhile.
    LaggingFollower,
    /// Delay and loss everywhere, then kill the leader, then isolate the next leader.
    Combined,
}

impl Scenario {
    pub const ALL: [Scenario; 15] = [
        Scenario::KillLeader,
        Scenario::KillFollower,
        Scenario::KillMajority,
        Scenario::PauseLeader,
        Scenario::PartitionLeader,
        Scenario::MajorityMinority,
        Scenario::Bridge,
        Scenario::Asymmetric,
        Scenario::Delay,
        Scenario::Loss,
        Scenario::RestartIntact,
        Scenario::RestartWiped,
        Scenario::Corrupt,
        Scenario::LaggingFollower,
        Scenario::Combined,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub binary: PathBuf,
    /// Network run number (1..=250): one subnet and set of namespaces per concurrent run.
    pub run: u8,
    pub nodes: usize,
    pub clients: usize,
    pub keys: usize,
    pub warmup: Duration,
    pub hold: Duration,
    pub settle: Duration,
    pub seed: u64,
    pub check_budget: Duration,
    /// `--worker-threads` for every node; `None` leaves the default.
    pub worker_threads: Option<u16>,
}

/// What one scenario run found.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub nodes: usize,
    /// `--worker-threads` the nodes ran with (`None`: the default, a thread per core).
    pub worker_threads: Option<u16>,
    pub clients: usize,
    pub seed: u64,
    /// Operations in the checked history, and of those how many were indeterminate.
    pub operations: usize,
    pub acknowledged_writes: usize,
    pub indeterminate: usize,
    pub faults: Vec<String>,
    /// Requests that failed or timed out, by cause (reads included).
    pub failures: BTreeMap<String, usize>,
    /// From the fault to the first acknowledged write invoked after it.
    pub first_write_after_fault_ms: Option<u64>,
    /// From healing to one leader with every member's digest equal at one checkpoint.
    pub converged_ms: Option<u64>,
    pub checkpoint_index: Option<u64>,
    pub digest: Option<String>,
    pub terms_seen: usize,
    pub linearizability: String,
    pub check_ms: u64,
    pub violations: Vec<String>,
    /// Where the history of a run with violations was saved (JSON operations).
    pub history_file: Option<String>,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What was done, to undo it.
#[derive(Default)]
struct Injected {
    killed: Vec<usize>,
    paused: Vec<usize>,
    network: bool,
    corrupted: Option<usize>,
    /// A node whose applying is held.
    held: Option<usize>,
    notes: Vec<String>,
}

pub async fn run(s: Scenario, cfg: &RunConfig) -> Result<ScenarioReport> {
    let mut extra: Vec<String> = ["--request-timeout-ms", "2000", "--anti-entropy-interval-ms", "1000"]
        .into_iter()
        .chain(["--snapshot-every", "300"])
        .map(String::from)
        .collect();
    if matches!(s, Scenario::Corrupt | Scenario::LaggingFollower) {
        extra.push("--unsafe-fault-injection".into());
    }
    if let Some(n) = cfg.worker_threads {
        extra.extend(["--worker-threads".into(), n.to_string()]);
    }
    let settings = NodeSettings { binary: cfg.binary.clone(), extra };
    let mut cluster = Cluster::start(cfg.run, cfg.nodes, settings).await.context("starting the cluster")?;
    let mut rng = Rng::new(cfg.seed);
    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = (1..=cfg.nodes).map(|i| cluster.http_url(i, "")).collect();
    let wl = WorkloadConfig { keys: cfg.keys, ..WorkloadConfig::default() };
    let mut clients = Vec::new();
    for id in 1..=cfg.clients as u64 {
        let client = Client::new(id, cluster.http.clone(), urls.clone(), wl.clone(), rec.clone());
        clients.push(tokio::spawn(client.run(stop.clone(), 1_000_000)));
    }
    let terms: Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>> = Arc::default();
    let observer = tokio::spawn(observe_leaders(cluster.http.clone(), urls.clone(), terms.clone(), stop.clone()));

    tokio::time::sleep(cfg.warmup).await;
    let mut injected = inject(s, &mut cluster, &mut rng, cfg.hold).await?;
    // Timed from the moment the fault is in place (the last step of a combined fault).
    let fault_at = Instant::now();
    tokio::time::sleep(cfg.hold).await;
    heal(&mut cluster, &mut injected).await?;
    let healed_at = Instant::now();
    // Converging is timed from the heal, with the clients still running.
    let converging = {
        let (http, urls) = (cluster.http.clone(), urls.clone());
        tokio::spawn(async move { converge(http, urls, Duration::from_secs(45)).await.map(|_| healed_at.elapsed()) })
    };
    tokio::time::sleep(cfg.settle).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        // Each client's request is bounded by its timeout; the wait is bounded too.
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), observer).await;

    let mut violations = Vec::new();
    let converged_ms = match converging.await? {
        Ok(took) => Some(took.as_millis() as u64),
        Err(e) => {
            violations.push(format!("no convergence within 45 s of healing: {e}"));
            None
        }
    };
    // And once the clients have stopped: every member equal at one checkpoint.
    let (checkpoint_index, digest) = match converge(cluster.http.clone(), urls.clone(), Duration::from_secs(30)).await {
        Ok((index, digest)) => (Some(index), Some(digest)),
        Err(e) => {
            violations.push(format!("replicas differ at the end: {e}"));
            (None, None)
        }
    };
    if s == Scenario::Corrupt {
        check_repaired(&cluster, &injected, &mut violations).await;
    }
    if s == Scenario::LaggingFollower {
        check_forwarded_reads(&cluster, &injected, &mut violations).await;
    }
    // Final reads: every acknowledged write must still be there (or be overwritten by a later one).
    let mut finals = Client::new(cfg.clients as u64 + 1, cluster.http.clone(), urls.clone(), wl, rec.clone());
    for k in 0..cfg.keys {
        finals.read(rng.below(cfg.nodes as u64) as usize, &format!("k{k}")).await;
    }

    let history = rec.history();
    let budget = CheckConfig { max_time_per_key: cfg.check_budget };
    let check = tokio::task::spawn_blocking(move || linearizability::check(&history, &budget)).await?;
    let linearizability = match &check.verdict {
        Verdict::Linearizable => "linearizable".to_string(),
        Verdict::NotLinearizable { key, detail } => {
            violations.push(format!("history of key {key} is not linearizable: {detail}"));
            format!("NOT linearizable (key {key})")
        }
        Verdict::Unknown { key, reason } => {
            violations.push(format!("linearizability of key {key} could not be decided: {reason}"));
            format!("unknown (key {key})")
        }
    };
    violations.extend(monotonic_read_violations(&rec.reads()));
    violations.extend(rec.unexpected().into_iter().map(|u| format!("unexpected answer: {u}")));
    let terms = leaders_by_term(&cluster, &terms);
    for (term, leaders) in &terms {
        if leaders.len() > 1 {
            violations.push(format!("term {term} had more than one leader: {leaders:?}"));
        }
    }
    let history = rec.history();
    let acknowledged_writes = history
        .iter()
        .filter(|o| {
            matches!(
                &o.outcome,
                linearizability::Outcome::Ok { ret: linearizability::Ret::WriteOk | linearizability::Ret::CasOk, .. }
            )
        })
        .count();
    let mut history_file = None;
    if !violations.is_empty() {
        // Keep the evidence: the whole history, to re-check or read.
        let path =
            std::env::temp_dir().join(format!("ferrokv-chaos-{}-n{}-seed{}.json", s.name(), cfg.nodes, cfg.seed));
        match serde_json::to_vec(&history).map(|json| std::fs::write(&path, json)) {
            Ok(Ok(())) => history_file = Some(path.display().to_string()),
            Ok(Err(e)) => eprintln!("saving the history to {} failed: {e}", path.display()),
            Err(e) => eprintln!("encoding the history failed: {e}"),
        }
    }
    let first_write = rec.acked_writes_after(rec.at_ns(fault_at));
    Ok(ScenarioReport {
        scenario: s.name(),
        nodes: cfg.nodes,
        worker_threads: cfg.worker_threads,
        clients: cfg.clients,
        seed: cfg.seed,
        operations: check.operations,
        acknowledged_writes,
        indeterminate: check.indeterminate,
        faults: injected.notes,
        failures: rec.causes(),
        first_write_after_fault_ms: first_write.map(|ns| ns.saturating_sub(rec.at_ns(fault_at)) / 1_000_000),
        converged_ms,
        checkpoint_index,
        digest,
        terms_seen: terms.len(),
        linearizability,
        check_ms: check.elapsed.as_millis() as u64,
        violations,
        history_file,
    })
}

async fn inject(s: Scenario, c: &mut Cluster, rng: &mut Rng, hold: Duration) -> Result<Injected> {
    let n = c.size();
    let mut inj = Injected::default();
    let leader = c.wait_leader(Duration::from_secs(15)).await?;
    let others: Vec<usize> = (1..=n).filter(|&i| i != leader).collect();
    match s {
        Scenario::KillLeader => kill(c, &mut inj, leader, "kill -9 leader"),
        Scenario::KillFollower => {
            kill(c, &mut inj, others[rng.below(others.len() as u64) as usize], "kill -9 follower")
        }
        Scenario::KillMajority => {
            kill(c, &mut inj, leader, "kill -9 leader");
            for &i in others.iter().take(n / 2) {
                kill(c, &mut inj, i, "kill -9 (majority)");
            }
        }
        Scenario::PauseLeader => {
            c.pause(leader, true);
            inj.paused.push(leader);
            inj.notes.push(format!("SIGSTOP leader n{leader} for {hold:?}"));
        }
        Scenario::PartitionLeader => {
            partition(c, &mut inj, &[vec![leader], others.clone()], &[])?;
        }
        Scenario::MajorityMinority => {
            let order = rng.sample(n, n);
            let (minority, majority) = order.split_at(n / 2);
            partition(c, &mut inj, &[minority.to_vec(), majority.to_vec()], &[])?;
        }
        Scenario::Bridge => {
            let order = rng.sample(n, n);
            let bridge = order[0];
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            partition(c, &mut inj, &[a.to_vec(), b.to_vec()], &[bridge])?;
        }
        Scenario::Asymmetric => {
            let rules = NodeRules { blocked: others.iter().copied().collect(), loss_percent: 0 };
            c.net.apply(leader, &rules)?;
            inj.network = true;
            inj.notes.push(format!("drop n{leader} (leader) → {others:?}; the reverse direction works"));
        }
        Scenario::Delay => {
            c.set_delay(Duration::from_millis(50), Duration::from_millis(40));
            inj.network = true;
            inj.notes.push("delay 50 ms ± 40 ms on every link".into());
        }
        Scenario::Loss => {
            loss(c, &mut inj, 10)?;
        }
        Scenario::RestartIntact => {
            let i = 1 + rng.below(n as u64) as usize;
            kill(c, &mut inj, i, "kill -9, restart with data");
            c.spawn(i)?;
            inj.killed.retain(|&k| k != i);
        }
        Scenario::RestartWiped => {
            let i = 1 + rng.below(n as u64) as usize;
            kill(c, &mut inj, i, "kill -9, wipe the data dir, restart");
            c.wipe(i)?;
            c.spawn(i)?;
            inj.killed.retain(|&k| k != i);
        }
        Scenario::Corrupt => {
            let victim = others[rng.below(others.len() as u64) as usize];
            let url = c.http_url(victim, "/v1/debug/corrupt");
            // A key the clients never write, so no later write can mask the damage.
            let body = serde_json::json!({"key": "chaos/corrupted", "value": "corrupted"});
            let resp = c.http.post(url).json(&body).send().await?;
            anyhow::ensure!(resp.status().is_success(), "fault hook refused: {}", resp.status());
            inj.notes.push(format!("overwrite a key on follower n{victim} behind Raft's back"));
            inj.corrupted = Some(victim);
        }
        Scenario::LaggingFollower => {
            let victim = others[rng.below(others.len() as u64) as usize];
            hold_apply(c, victim, true).await?;
            inj.notes.push(format!("hold applying on follower n{victim}"));
            inj.held = Some(victim);
        }
        Scenario::Combined => {
            c.set_delay(Duration::from_millis(30), Duration::from_millis(20));
            loss(c, &mut inj, 5)?;
            inj.notes.push("delay 30 ms ± 20 ms on every link".into());
            kill(c, &mut inj, leader, "kill -9 leader");
            tokio::time::sleep(hold / 2).await;
            if let Ok(next) = c.wait_leader(Duration::from_secs(10)).await {
                let rest: Vec<usize> = (1..=n).filter(|&i| i != next && i != leader).collect();
                partition(c, &mut inj, &[vec![next], rest], &[])?;
            }
        }
    }
    Ok(inj)
}

/// Hold (or release) applying on node `i` (the unsafe fault-injection hook).
async fn hold_apply(c: &Cluster, i: usize, held: bool) -> Result<()> {
    let resp = c.http.post(c.http_url(i, "/v1/debug/hold-apply")).json(&serde_json::json!({ "held": held })).send();
    let status = resp.await?.status();
    anyhow::ensure!(status.is_success(), "fault hook refused: {status}");
    Ok(())
}

fn kill(c: &mut Cluster, inj: &mut Injected, i: usize, what: &str) {
    c.kill(i);
    inj.killed.push(i);
    inj.notes.push(format!("{what}: n{i}"));
}

fn loss(c: &mut Cluster, inj: &mut Injected, percent: u8) -> Result<()> {
    for i in 1..=c.size() {
        c.net.apply(i, &NodeRules { blocked: BTreeSet::new(), loss_percent: percent })?;
    }
    inj.network = true;
    inj.notes.push(format!("{percent}% packet loss on every link"));
    Ok(())
}

/// Cut every link between different `sides`; nodes in `bridges` keep all their links.
fn partition(c: &mut Cluster, inj: &mut Injected, sides: &[Vec<usize>], bridges: &[usize]) -> Result<()> {
    for (s, side) in sides.iter().enumerate() {
        let blocked: BTreeSet<usize> =
            sides.iter().enumerate().filter(|(o, _)| *o != s).flat_map(|(_, other)| other.iter().copied()).collect();
        for &i in side {
            c.net.apply(i, &NodeRules { blocked: blocked.clone(), loss_percent: 0 })?;
        }
    }
    inj.network = true;
    let sides: Vec<String> = sides.iter().map(|s| format!("{s:?}")).collect();
    let bridge = if bridges.is_empty() { String::new() } else { format!(", bridge {bridges:?}") };
    inj.notes.push(format!("partition {}{bridge}", sides.join(" / ")));
    Ok(())
}

async fn heal(c: &mut Cluster, inj: &mut Injected) -> Result<()> {
    if let Some(i) = inj.held {
        hold_apply(c, i, false).await?;
    }
    for &i in &inj.paused {
        c.pause(i, false);
    }
    if inj.network {
        c.net.heal()?;
        c.set_delay(Duration::ZERO, Duration::ZERO);
    }
    for &i in &inj.killed {
        c.spawn(i)?;
    }
    Ok(())
}

/// Wait until one leader is known and every member holds the same digest at one checkpoint.
async fn converge(http: reqwest::Client, urls: Vec<String>, timeout: Duration) -> Result<(u64, String)> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no leader known");
    while Instant::now() < deadline {
        if let Some(leader) = majority_leader(&http, &urls).await {
            let resp =
                http.post(format!("{}/v1/cluster/verify", urls[leader - 1])).timeout(Duration::from_secs(15)).send();
            match resp.await {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await?;
                    let members = v["members"].as_array().map_or(0, Vec::len);
                    if v["consistent"] == true && members == urls.len() {
                        let index = v["index"].as_u64().unwrap_or(0);
                        return Ok((index, v["digest"].as_str().unwrap_or_default().to_string()));
                    }
                    last = v.to_string();
                }
                Ok(r) => last = format!("verify answered {}", r.status()),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{last}")
}

/// The leader (node number) a majority of nodes names.
async fn majority_leader(http: &reqwest::Client, urls: &[String]) -> Option<usize> {
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for url in urls {
        let resp = http.get(format!("{url}/v1/cluster")).timeout(Duration::from_millis(800)).send().await;
        let Ok(resp) = resp else { continue };
        if let Some(id) = resp.json::<Value>().await.ok().and_then(|v| v["leader_id"].as_u64()) {
            *votes.entry(id).or_default() += 1;
        }
    }
    let (id, n) = votes.into_iter().max_by_key(|(_, n)| *n)?;
    (2 * n > urls.len() && id as usize <= urls.len()).then_some(id as usize)
}

/// The corrupted follower must have been repaired by anti-entropy (its repair counter moved).
async fn check_repaired(c: &Cluster, inj: &Injected, violations: &mut Vec<String>) {
    let Some(victim) = inj.corrupted else { return };
    match counter_sum(c, victim, "ferrokv_replica_repairs_total").await {
        Ok(repaired) if repaired < 1.0 => violations.push(format!("corrupted replica n{victim} was not repaired")),
        Ok(_) => {}
        Err(e) => violations.push(e),
    }
}

/// The lagging follower must have forwarded linearizable reads to the leader: otherwise the
/// run did not exercise what the scenario is for.
async fn check_forwarded_reads(c: &Cluster, inj: &Injected, violations: &mut Vec<String>) {
    let Some(victim) = inj.held else { return };
    let series = "ferrokv_forwarded_requests_total{group=\"0\",kind=\"read\"}";
    match counter_sum(c, victim, series).await {
        Ok(forwarded) if forwarded < 1.0 => {
            violations.push(format!("lagging follower n{victim} forwarded no linearizable read"))
        }
        Ok(_) => {}
        Err(e) => violations.push(e),
    }
}

/// The sum of the samples of node `i` whose line starts with `series`.
async fn counter_sum(c: &Cluster, i: usize, series: &str) -> Result<f64, String> {
    let metrics = match c.http.get(c.http_url(i, "/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return Err(format!("metrics of n{i}: {e}")),
    };
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>())
}

/// Poll every node's view while the run lasts: (term → leader node ids) as nodes saw them.
async fn observe_leaders(
    http: reqwest::Client,
    urls: Vec<String>,
    terms: Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>>,
    stop: Arc<AtomicBool>,
) {
    // Bounded: at most one hour of polling at 150 ms.
    for _ in 0..24_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        for url in &urls {
            let resp = http.get(format!("{url}/v1/cluster")).timeout(Duration::from_millis(500)).send().await;
            let Ok(resp) = resp else { continue };
            let Ok(v) = resp.json::<Value>().await else { continue };
            if let (Some(term), Some(leader)) = (v["term"].as_u64(), v["leader_id"].as_u64()) {
                terms.lock().unwrap_or_else(|p| p.into_inner()).entry(term).or_default().insert(leader);
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Leaders per term from two sources: the nodes' own "became leader" log lines (keyed by Raft
/// id, which never repeats) and the polled views (keyed by node id), checked separately.
fn leaders_by_term(c: &Cluster, observed: &Mutex<BTreeMap<u64, BTreeSet<u64>>>) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for log in c.logs().values() {
        for line in log.lines().filter(|l| l.contains("became leader")) {
            let field = |name: &str| {
                line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<u64>().ok())
            };
            if let (Some(term), Some(raft_id)) = (field("term="), field("raft_id=")) {
                out.entry(term).or_default().insert(format!("raft id {raft_id}"));
            }
        }
    }
    let mut seen: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (term, leaders) in observed.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        seen.entry(*term).or_default().extend(leaders.iter().map(|l| format!("node {l}")));
    }
    // Report whichever source shows more leaders for a term.
    for (term, leaders) in seen {
        let entry = out.entry(term).or_default();
        if leaders.len() > entry.len() {
            *entry = leaders;
        }
    }
    out
}
