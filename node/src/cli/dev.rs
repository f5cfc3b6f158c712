//! `ferrokv dev`: run a throw-away local cluster for development.
//!
//! The launcher starts N children of the current executable as
//! `ferrokv serve ...` on consecutive ports, sends each child's output to
//! `DIR/node-<i>.log`, waits until every node answers `GET /readyz`, prints
//! how to reach the cluster and then supervises it:
//!
//! * Ctrl-C, SIGTERM or SIGHUP: SIGTERM every child, wait up to 10 s, SIGKILL
//!   stragglers, remove the temporary data directory (unless `--keep-data`
//!   or `--data-dir`) and exit 0. A second signal skips the grace period.
//! * A child exiting on its own: print the tail of its log, stop the others,
//!   keep the data directory for inspection and fail.
//!
//! Children run in their own process group so a terminal Ctrl-C reaches only
//! the launcher, which then shuts them down in order instead of every process
//! racing on SIGINT. `kill_on_drop(true)` is the backstop for every path that
//! leaves `run_dev` early (errors, panics).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

/// Like `eprintln!` but ignores write errors: after SIGHUP the terminal may
/// be gone, and a panic there would skip the orderly shutdown (children
/// would only get `kill_on_drop`'s SIGKILL and the temp dir would remain).
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Upper bound on cluster size; more than this on one machine is a mistake.
const MAX_NODES: u16 = 32;
/// How long all nodes together get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `/readyz` is polled (and children checked) during startup.
const READY_POLL: Duration = Duration::from_millis(100);
/// Per-probe timeout, short so one wedged node doesn't stall the others.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long children get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often running children are checked for unexpected exits.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// How long we wait for `/v1/cluster` to report a leader after readiness.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Lines of a crashed node's log shown to the user.
const LOG_TAIL_LINES: usize = 30;
/// Bytes read from the end of a log to find those lines.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// `ferrokv dev`: start a local N-node cluster and supervise it.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Number of nodes to start.
    #[arg(long, default_value_t = 3, env = "FERROKV_NODES",
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_NODES)))]
    pub nodes: u16,

    /// Host/IP every node binds to and advertises.
    #[arg(long, default_value = "127.0.0.1", env = "FERROKV_HOST")]
    pub host: String,

    /// HTTP port of node 1; node i uses HTTP_PORT + i - 1.
    #[arg(long, default_value_t = 8081, env = "FERROKV_HTTP_PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub http_port: u16,

    /// gRPC (Raft) port of node 1; node i uses GRPC_PORT + i - 1.
    #[arg(long, default_value_t = 9081, env = "FERROKV_GRPC_PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub grpc_port: u16,

    /// Keep node data here (DIR/node-<i>) instead of a fresh temporary
    /// directory; running `dev` again with the same DIR resumes the cluster.
    #[arg(long, value_name = "PATH", env = "FERROKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Do not delete the temporary data directory on exit.
    #[arg(long, env = "FERROKV_KEEP_DATA",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub keep_data: bool,
}

/// Runs `ferrokv dev` until interrupted (Ok) or until a node fails (Err).
pub async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let nodes = plan_nodes(&args)?;
    let exe = std::env::current_exe().context("locating the ferrokv executable")?;
    // Install handlers before spawning so an early Ctrl-C still cleans up.
    let mut signals = Signals::new()?;
    check_ports_free(&nodes)?;
    let data = DataDir::prepare(&args)?;
    let probe = probe_client()?;

    note!("starting {} node(s), data in {}", nodes.len(), data.path.display());
    let mut cluster = match Cluster::spawn(&exe, &nodes, &data.path) {
        Ok(cluster) => cluster,
        Err(e) => {
            // Nothing ran, so there are no logs worth keeping.
            data.remove_if_owned()?;
            return Err(e);
        }
    };

    let started = tokio::select! {
        r = cluster.wait_ready(&probe) => r,
        name = signals.recv() => Err(Stop::Signal(name)),
    };
    let stop = match started {
        Ok(()) => {
            print_banner(&probe, &cluster, &data).await;
            tokio::select! {
                s = cluster.watch() => s,
                name = signals.recv() => Stop::Signal(name),
            }
        }
        Err(stop) => stop,
    };
    // Show a crash's cause right away, not after the others' grace period.
    report_stop(&stop, &cluster, &data.path);
    note!("stopping {} node(s)...", cluster.nodes.len());
    cluster.shutdown(&mut signals).await;
    finish(stop, data)
}

// ---------------------------------------------------------------- planning

/// Where one node listens and how it is reached; pure data, no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodePlan {
    id: u64,
    /// `host:port` the node binds its HTTP API to.
    http_addr: String,
    /// `host:port` the node binds its gRPC (Raft) service to.
    grpc_addr: String,
    /// Base URL used to talk to the node (wildcard hosts mapped to loopback).
    url: String,
    /// `--worker-threads`: the nodes share this machine's cores.
    worker_threads: u16,
}

impl NodePlan {
    fn dir(&self, base: &Path) -> PathBuf {
        base.join(format!("node-{}", self.id))
    }

    fn log(&self, base: &Path) -> PathBuf {
        base.join(format!("node-{}.log", self.id))
    }
}

/// Computes every node's addresses, validating ports up front so a bad
/// combination fails before anything is started or created.
fn plan_nodes(args: &DevArgs) -> anyhow::Result<Vec<NodePlan>> {
    let host = normalize_host(&args.host)?;
    let count = args.nodes;
    let http = port_range(args.http_port, count, "--http-port")?;
    let grpc = port_range(args.grpc_port, count, "--grpc-port")?;
    if http.start() <= grpc.end() && grpc.start() <= http.end() {
        bail!("HTTP ports {http:?} overlap gRPC ports {grpc:?}; choose ports further apart");
    }
    let client = client_host(&host);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let worker_threads = worker_threads_per_node(cores, count);
    Ok((1..=count)
        .zip(http.zip(grpc))
        .map(|(id, (hp, gp))| NodePlan {
            id: u64::from(id),
            http_addr: join_host_port(&host, hp),
            grpc_addr: join_host_port(&host, gp),
            url: format!("http://{}", join_host_port(client, hp)),
            worker_threads,
        })
        .collect())
}

/// Async worker threads for each of `nodes` nodes sharing `cores`: an equal share, at least one.
/// More threads than cores would only add hand-offs between threads that wait for a core.
fn worker_threads_per_node(cores: usize, nodes: u16) -> u16 {
    let share = cores / usize::from(nodes.max(1));
    u16::try_from(share).unwrap_or(u16::MAX).max(1)
}

/// Ports `first ..= first + count - 1` (node i gets `first + i - 1`), or an
/// error if they run past 65535. `count` is at least 1 (clap enforces it).
fn port_range(first: u16, count: u16, flag: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let last = count
        .checked_sub(1)
        .and_then(|extra| first.checked_add(extra))
        .ok_or_else(|| anyhow!("{flag} {first} with {count} node(s) runs past port 65535"))?;
    Ok(first..=last)
}

/// Accepts `127.0.0.1`, `localhost`, `::1` or `[::1]`; returns the bare host.
fn normalize_host(host: &str) -> anyhow::Result<String> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.is_empty() || bare.contains(char::is_whitespace) || bare.contains('/') {
        bail!("invalid --host {host:?}");
    }
    Ok(bare.to_owned())
}

/// `host:port`, bracketing IPv6 literals as URLs and socket addresses need.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Wildcard bind addresses can't be connected to; use loopback instead.
fn client_host(host: &str) -> &str {
    match host {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    }
}

/// `1=host:9081,2=host:9082,...`: the gRPC addresses of the initial voters.
fn initial_members(nodes: &[NodePlan]) -> String {
    nodes.iter().map(|n| format!("{}={}", n.id, n.grpc_addr)).collect::<Vec<_>>().join(",")
}

/// Arguments of one child: `serve --node-id ... --initial-members ...`.
fn serve_args(node: &NodePlan, base: &Path, members: &str) -> Vec<OsString> {
    vec![
        "serve".into(),
        "--node-id".into(),
        node.id.to_string().into(),
        "--http-addr".into(),
        node.http_addr.clone().into(),
        "--grpc-addr".into(),
        node.grpc_addr.clone().into(),
        "--data-dir".into(),
        node.dir(base).into_os_string(),
        "--initial-members".into(),
        members.into(),
        "--worker-threads".into(),
        node.worker_threads.to_string().into(),
    ]
}

/// Fails early, with a hint, if a port is taken (typically by another
/// `dev`): otherwise that process could answer our `/readyz` probes and we
/// would report a cluster as ready that is not ours. Racy by nature, but the
/// children's own bind errors still surface as early exits.
fn check_ports_free(nodes: &[NodePlan]) -> anyhow::Result<()> {
    for node in nodes {
        for addr in [&node.http_addr, &node.grpc_addr] {
            match std::net::TcpListener::bind(addr.as_str()) {
                Ok(listener) => drop(listener),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                    "{addr} is already in use (another ferrokv running?); \
                     choose other ports with --http-port/--grpc-port"
                ),
                Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- data dir

/// The cluster's base directory and whether we own (and so delete) it.
#[derive(Debug)]
struct DataDir {
    path: PathBuf,
    remove_on_exit: bool,
}

impl DataDir {
    fn prepare(args: &DevArgs) -> anyhow::Result<Self> {
        match &args.data_dir {
            Some(dir) => {
                fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
                // Absolute, so paths printed and passed to children are unambiguous.
                let path = fs::canonicalize(dir).with_context(|| format!("resolving data dir {}", dir.display()))?;
                Ok(Self { path, remove_on_exit: false })
            }
            None => Ok(Self { path: create_temp_dir()?, remove_on_exit: !args.keep_data }),
        }
    }

    /// Deletes the directory if it is our temporary one; returns whether it did.
    fn remove_if_owned(&self) -> anyhow::Result<bool> {
        if !self.remove_on_exit {
            return Ok(false);
        }
        fs::remove_dir_all(&self.path).with_context(|| format!("removing {}", self.path.display()))?;
        Ok(true)
    }
}

/// A fresh, uniquely named directory under the system temp dir. `create_dir`
/// (not `create_dir_all`) fails on an existing name, so we never reuse one.
fn create_temp_dir() -> anyhow::Result<PathBuf> {
    let root = std::env::temp_dir();
    let pid = std::process::id();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    for attempt in 0..100u32 {
        let path = root.join(format!("ferrokv-dev-{pid}-{nanos:x}-{attempt}"));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", path.display()));
            }
        }
    }
    bail!("could not create a temporary directory in {}", root.display())
}

// ---------------------------------------------------------------- processes

/// Why supervision ended.
#[derive(Debug)]
enum Stop {
    /// The user asked us to stop (normal exit).
    Signal(&'static str),
    /// A node exited without being asked to.
    NodeExited { index: usize, status: ExitStatus },
    /// Some nodes never became ready in time (their ids).
    NotReady(Vec<u64>),
}

struct RunningNode {
    plan: NodePlan,
    child: Child,
}

struct Cluster {
    nodes: Vec<RunningNode>,
}

impl Cluster {
    /// Starts every node. If one fails to spawn, the ones already started are
    /// dropped with the error and `kill_on_drop` reaps them.
    fn spawn(exe: &Path, plans: &[NodePlan], base: &Path) -> anyhow::Result<Self> {
        let members = initial_members(plans);
        let mut nodes = Vec::with_capacity(plans.len());
        for plan in plans {
            let child = spawn_node(exe, plan, base, &members)?;
            nodes.push(RunningNode { plan: plan.clone(), child });
        }
        Ok(Self { nodes })
    }

    /// First child that has exited, if any.
    fn exited(&mut self) -> Option<Stop> {
        for (index, node) in self.nodes.iter_mut().enumerate() {
            // An error here means the child can't be waited on: treat it as
            // still running and let shutdown's kill deal with it.
            if let Ok(Some(status)) = node.child.try_wait() {
                return Some(Stop::NodeExited { index, status });
            }
        }
        None
    }

    /// Polls `/readyz` on every node until all are ready, a node exits, or
    /// [`READY_TIMEOUT`] passes.
    async fn wait_ready(&mut self, probe: &reqwest::Client) -> Result<(), Stop> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = vec![false; self.nodes.len()];
        loop {
            if let Some(stop) = self.exited() {
                return Err(stop);
            }
            for (node, is_ready) in self.nodes.iter().zip(ready.iter_mut()) {
                if !*is_ready && probe_ready(probe, &node.plan.url).await {
                    *is_ready = true;
                    note!("node {} ready at {}", node.plan.id, node.plan.url);
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let pending = self.nodes.iter().zip(&ready).filter(|(_, r)| !**r).map(|(n, _)| n.plan.id).collect();
                return Err(Stop::NotReady(pending));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Waits until some child exits on its own.
    async fn watch(&mut self) -> Stop {
        loop {
            if let Some(stop) = self.exited() {
                return stop;
            }
            tokio::time::sleep(WATCH_POLL).await;
        }
    }

    /// SIGTERM everyone still running, wait up to [`STOP_GRACE`] (cut short
    /// by another signal), then SIGKILL whatever is left.
    async fn shutdown(&mut self, signals: &mut Signals) {
        for node in &mut self.nodes {
            terminate(&mut node.child, node.plan.id);
        }
        let graceful = async {
            for node in &mut self.nodes {
                // Errors mean the child is gone or unwaitable; kill below covers it.
                let _ = node.child.wait().await;
            }
        };
        tokio::select! {
            r = tokio::time::timeout(STOP_GRACE, graceful) => {
                if r.is_err() {
                    note!("some nodes did not stop within {}s", STOP_GRACE.as_secs());
                }
            }
            name = signals.recv() => note!("received {name} again, killing nodes"),
        }
        for node in &mut self.nodes {
            if matches!(node.child.try_wait(), Ok(None)) {
                note!("killing node {}", node.plan.id);
                if let Err(e) = node.child.kill().await {
                    note!("warning: could not kill node {}: {e}", node.plan.id);
                }
            }
        }
    }
}

fn spawn_node(exe: &Path, plan: &NodePlan, base: &Path, members: &str) -> anyhow::Result<Child> {
    let dir = plan.dir(base);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = plan.log(base);
    // Append, so a resumed `--data-dir` cluster keeps its earlier history.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_err = log.try_clone().with_context(|| format!("opening {}", log_path.display()))?;
    Command::new(exe)
        .args(serve_args(plan, base, members))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        // Logs go to files; keep ANSI colour codes out of them.
        .env("NO_COLOR", "1")
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {} ({})", plan.id, exe.display()))
}

/// Sends SIGTERM to a child that is still running.
fn terminate(child: &mut Child, id: u64) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // ESRCH just means it exited between the check and the signal.
    if let Err(e) = kill(Pid::from_raw(pid), NixSignal::SIGTERM)
        && e != nix::errno::Errno::ESRCH
    {
        note!("warning: could not signal node {id}: {e}");
    }
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP (terminal closed) all mean "stop".
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let install = |kind| signal(kind).context("installing signal handler");
        Ok(Self {
            int: install(SignalKind::interrupt())?,
            term: install(SignalKind::terminate())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

// ---------------------------------------------------------------- HTTP

/// Probes always target this machine, so ignore any HTTP(S)_PROXY settings.
fn probe_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT * 4)
        .build()
        .context("building HTTP client")
}

async fn probe_ready(probe: &reqwest::Client, base: &str) -> bool {
    let fut = probe.get(format!("{base}/readyz")).timeout(PROBE_TIMEOUT).send();
    matches!(fut.await, Ok(resp) if resp.status().is_success())
}

/// Asks the nodes who leads, retrying briefly since readiness may precede
/// the first election's result reaching every node.
async fn find_leader(probe: &reqwest::Client, cluster: &Cluster) -> Option<u64> {
    let deadline = Instant::now() + LEADER_WAIT;
    while Instant::now() < deadline {
        for node in &cluster.nodes {
            if let Some(id) = fetch_leader(probe, &node.plan.url).await {
                return Some(id);
            }
        }
        tokio::time::sleep(READY_POLL * 2).await;
    }
    None
}

async fn fetch_leader(probe: &reqwest::Client, base: &str) -> Option<u64> {
    let resp = probe.get(format!("{base}/v1/cluster")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    body.get("leader_id")?.as_u64()
}

// ---------------------------------------------------------------- output

async fn print_banner(probe: &reqwest::Client, cluster: &Cluster, data: &DataDir) {
    let leader = find_leader(probe, cluster).await;
    let plans: Vec<NodePlan> = cluster.nodes.iter().map(|n| n.plan.clone()).collect();
    print!("{}", format_banner(&plans, &data.path, data.remove_on_exit, leader));
}

fn format_banner(nodes: &[NodePlan], base: &Path, temporary: bool, leader: Option<u64>) -> String {
    let mut out = format!("\nferrokv dev cluster ready ({} node(s))\n\n", nodes.len());
    for n in nodes {
        out.push_str(&format!("  node {}  {}  grpc {}  log {}\n", n.id, n.url, n.grpc_addr, n.log(base).display()));
    }
    let leader_line = match leader.and_then(|id| nodes.iter().find(|n| n.id == id)) {
        Some(n) => format!("node {} ({})", n.id, n.url),
        None => match leader {
            Some(id) => format!("node {id}"),
            None => "not elected yet (see `ferrokv cluster status`)".to_owned(),
        },
    };
    out.push_str(&format!("\nleader: {leader_line}\n"));
    let note = if temporary { "deleted on exit; --keep-data keeps it" } else { "kept on exit" };
    out.push_str(&format!("data:   {} ({note})\n", base.display()));
    if let Some(first) = nodes.first() {
        let url = &first.url;
        out.push_str(&format!(
            "\ntry:\n  curl -X PUT --data-binary 'world' {url}/v1/kv/hello\n  \
             curl {url}/v1/kv/hello\n  curl '{url}/v1/kv?prefix=he'\n  \
             curl {url}/v1/cluster\n  ferrokv kv --endpoint {url} list\n"
        ));
    }
    out.push_str("\nPress Ctrl-C to stop.\n");
    out
}

/// Tells the user why we are stopping; for failures, show the evidence.
fn report_stop(stop: &Stop, cluster: &Cluster, base: &Path) {
    match stop {
        Stop::Signal(name) => note!("\nreceived {name}"),
        Stop::NodeExited { index, status } => {
            if let Some(node) = cluster.nodes.get(*index) {
                note!("\nnode {} exited unexpectedly ({status})", node.plan.id);
                print_log_tail(&node.plan.log(base));
            }
        }
        Stop::NotReady(ids) => {
            note!("\nnodes {ids:?} not ready after {}s", READY_TIMEOUT.as_secs());
            for node in cluster.nodes.iter().filter(|n| ids.contains(&n.plan.id)) {
                print_log_tail(&node.plan.log(base));
            }
        }
    }
}

/// Final cleanup and the exit status of `dev`.
fn finish(stop: Stop, data: DataDir) -> anyhow::Result<()> {
    match stop {
        Stop::Signal(_) => {
            if !data.remove_if_owned()? {
                note!("data kept in {}", data.path.display());
            }
            note!("stopped");
            Ok(())
        }
        // Failures keep the data dir: the logs are what explains them.
        Stop::NodeExited { .. } => Err(anyhow!("a node exited unexpectedly; logs kept in {}", data.path.display())),
        Stop::NotReady(_) => Err(anyhow!(
            "cluster did not become ready within {}s; logs kept in {}",
            READY_TIMEOUT.as_secs(),
            data.path.display()
        )),
    }
}

fn print_log_tail(path: &Path) {
    match read_tail(path, LOG_TAIL_BYTES) {
        Ok(text) => {
            note!("--- last lines of {} ---", path.display());
            for line in last_lines(&text, LOG_TAIL_LINES) {
                note!("{line}");
            }
            note!("--- end of {} ---", path.display());
        }
        Err(e) => note!("(could not read {}: {e})", path.display()),
    }
}

/// The last `max` bytes of a file, lossily decoded (a cut may split a
/// UTF-8 sequence, and logs may contain anything).
fn read_tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The last `n` lines of `text` (fewer if it has fewer).
fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        dev: DevArgs,
    }

    fn parse(args: &[&str]) -> Result<DevArgs, clap::Error> {
        let mut argv = vec!["dev"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.dev)
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).expect("parse");
        assert_eq!(a.nodes, 3);
        assert_eq!(a.host, "127.0.0.1");
        assert_eq!((a.http_port, a.grpc_port), (8081, 9081));
        assert_eq!(a.data_dir, None);
        assert!(!a.keep_data);
    }

    #[test]
    fn flag_bounds() {
        assert!(parse(&["--nodes", "0"]).is_err());
        assert!(parse(&["--nodes", "33"]).is_err());
        assert!(parse(&["--http-port", "0"]).is_err());
        let a = parse(&["--nodes", "5", "--data-dir", "/x", "--keep-data"]).expect("parse");
        assert_eq!(a.nodes, 5);
        assert_eq!(a.data_dir, Some(PathBuf::from("/x")));
        assert!(a.keep_data);
    }

    #[test]
    fn ports_are_consecutive() {
        let plans = plan_nodes(&parse(&[]).expect("parse")).expect("plan");
        let addrs: Vec<_> =
            plans.iter().map(|p| (p.id, p.http_addr.as_str(), p.grpc_addr.as_str(), p.url.as_str())).collect();
        assert_eq!(
            addrs,
            vec![
                (1, "127.0.0.1:8081", "127.0.0.1:9081", "http://127.0.0.1:8081"),
                (2, "127.0.0.1:8082", "127.0.0.1:9082", "http://127.0.0.1:8082"),
                (3, "127.0.0.1:8083", "127.0.0.1:9083", "http://127.0.0.1:8083"),
            ]
        );
    }

    #[test]
    fn port_range_limits() {
        assert_eq!(port_range(65535, 1, "--p").expect("range"), 65535..=65535);
        assert_eq!(port_range(8081, 3, "--p").expect("range"), 8081..=8083);
        assert!(port_range(65535, 2, "--p").is_err());
        assert!(port_range(8081, 0, "--p").is_err());
    }

    #[test]
    fn ports_must_fit_and_not_overlap() {
        assert!(plan_nodes(&parse(&["--http-port", "65534"]).expect("parse")).is_err());
        assert!(plan_nodes(&parse(&["--http-port", "65533"]).expect("parse")).is_ok());
        let overlap = parse(&["--http-port", "9000", "--grpc-port", "9002"]).expect("parse");
        assert!(plan_nodes(&overlap).is_err());
        let adjacent = parse(&["--http-port", "9000", "--grpc-port", "9003"]).expect("parse");
        assert!(plan_nodes(&adjacent).is_ok());
    }

    #[test]
    fn initial_members_string() {
        let plans = plan_nodes(&parse(&["--host", "10.0.0.5"]).expect("parse")).expect("plan");
        assert_eq!(initial_members(&plans), "1=10.0.0.5:9081,2=10.0.0.5:9082,3=10.0.0.5:9083");
        let one = plan_nodes(&parse(&["--nodes", "1"]).expect("parse")).expect("plan");
        assert_eq!(initial_members(&one), "1=127.0.0.1:9081");
    }

    #[test]
    fn ipv6_and_wildcard_hosts() {
        let plans = plan_nodes(&parse(&["--host", "::1", "--nodes", "1"]).expect("parse")).expect("plan");
        assert_eq!(plans[0].grpc_addr, "[::1]:9081");
        assert_eq!(plans[0].url, "http://[::1]:8081");
        let plans = plan_nodes(&parse(&["--host", "[::]", "--nodes", "1"]).expect("parse")).expect("plan");
        assert_eq!(plans[0].http_addr, "[::]:8081");
        assert_eq!(plans[0].url, "http://[::1]:8081");
        let plans = plan_nodes(&parse(&["--host", "0.0.0.0", "--nodes", "1"]).expect("parse")).expect("plan");
        assert_eq!(plans[0].url, "http://127.0.0.1:8081");
        assert!(plan_nodes(&parse(&["--host", ""]).expect("parse")).is_err());
    }

    #[test]
    fn serve_command_line() {
        let plans = plan_nodes(&parse(&["--nodes", "2"]).expect("parse")).expect("plan");
        let members = initial_members(&plans);
        let args = serve_args(&plans[1], Path::new("/d"), &members);
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "serve",
                "--node-id",
                "2",
                "--http-addr",
                "127.0.0.1:8082",
                "--grpc-addr",
                "127.0.0.1:9082",
                "--data-dir",
                "/d/node-2",
                "--initial-members",
                "1=127.0.0.1:9081,2=127.0.0.1:9082",
                "--worker-threads",
                &plans[1].worker_threads.to_string(),
            ]
        );
        assert_eq!(plans[1].log(Path::new("/d")), PathBuf::from("/d/node-2.log"));
    }

    #[test]
    fn nodes_share_the_cores() {
        assert_eq!(worker_threads_per_node(2, 3), 1);
        assert_eq!(worker_threads_per_node(1, 1), 1);
        assert_eq!(worker_threads_per_node(8, 3), 2);
        assert_eq!(worker_threads_per_node(16, 1), 16);
        assert_eq!(worker_threads_per_node(0, 0), 1);
    }

    #[test]
    fn busy_port_is_reported() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let plan = NodePlan {
            id: 1,
            http_addr: format!("127.0.0.1:{port}"),
            grpc_addr: "127.0.0.1:0".into(),
            url: String::new(),
            worker_threads: 1,
        };
        let err = check_ports_free(std::slice::from_ref(&plan)).expect_err("port is busy");
        assert!(err.to_string().contains("already in use"));
        drop(taken);
        assert!(check_ports_free(&[plan]).is_ok());
    }

    #[test]
    fn tail_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), ["b", "c"]);
        assert_eq!(last_lines("a", 5), ["a"]);
        assert!(last_lines("", 3).is_empty());
    }

    #[test]
    fn banner_mentions_everything() {
        let plans = plan_nodes(&parse(&["--nodes", "2"]).expect("parse")).expect("plan");
        let text = format_banner(&plans, Path::new("/d"), true, Some(2));
        assert!(text.contains("node 1  http://127.0.0.1:8081  grpc 127.0.0.1:9081  log /d/node-1.log"));
        assert!(text.contains("leader: node 2 (http://127.0.0.1:8082)"));
        assert!(text.contains("curl http://127.0.0.1:8081/v1/kv/hello"));
        assert!(text.contains("deleted on exit"));
        let text = format_banner(&plans, Path::new("/d"), false, None);
        assert!(text.contains("leader: not elected yet"));
        assert!(text.contains("kept on exit"));
    }

    #[test]
    fn temp_dirs_are_unique() {
        let a = create_temp_dir().expect("temp");
        let b = create_temp_dir().expect("temp");
        assert_ne!(a, b);
        fs::remove_dir_all(&a).expect("cleanup");
        fs::remove_dir_all(&b).expect("cleanup");
    }
}
