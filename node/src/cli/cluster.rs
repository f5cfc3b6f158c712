//! `ferrokv cluster status|add|remove|transfer-leader`: membership and
//! leadership administration over the `/v1/cluster` API.
//!
//! Any node can be asked; the server forwards or answers as appropriate.
//! Response fields that are only shown (ids, addresses) are kept as JSON
//! values so the table renders whatever the server sends, and `--json`
//! passes the server's document through untouched.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::{ApiClient, ClientOpts, display_value, encode_path, print_json};

/// `ferrokv cluster ...`: inspect and change cluster membership.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientOpts,

    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `cluster` sub-subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show members, leader, term and replication progress.
    Status,
    /// Add a node to the cluster.
    Add(AddArgs),
    /// Remove a node from the cluster.
    Remove(RemoveArgs),
    /// Ask the leader to hand leadership to another voter.
    TransferLeader(TransferArgs),
    /// Checkpoint the log and compare every member's state digest there; exits non-zero when
    /// the replicas differ or a member cannot answer.
    Verify,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Id of the new node (as passed to its `serve --node-id`).
    #[arg(long, value_name = "N", env = "FERROKV_NODE_ID")]
    pub node_id: u64,

    /// The new node's gRPC (Raft) address.
    #[arg(long, value_name = "HOST:PORT", env = "FERROKV_GRPC_ADDR", value_parser = parse_host_port)]
    pub grpc_addr: String,

    /// The new node's HTTP API address, advertised to clients.
    #[arg(long, value_name = "HOST:PORT", env = "FERROKV_HTTP_ADDR", value_parser = parse_host_port)]
    pub http_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Id of the node to remove.
    pub id: u64,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Target node id; the server picks the most up-to-date voter if omitted.
    #[arg(long, value_name = "ID", env = "FERROKV_TO")]
    pub to: Option<u64>,
}

/// Runs `ferrokv cluster ...`.
pub async fn run_cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client.endpoint)?;
    let json = args.client.json;
    match args.command {
        ClusterCommand::Status => status(&api, json).await,
        ClusterCommand::Add(a) => add(&api, a, json).await,
        ClusterCommand::Remove(a) => remove(&api, a, json).await,
        ClusterCommand::TransferLeader(a) => transfer_leader(&api, a, json).await,
        ClusterCommand::Verify => verify(&api, json).await,
    }
}

/// Accepts `host:port` / `[v6]:port` with a numeric port, so obvious typos
/// are caught before the cluster stores an unreachable address.
fn parse_host_port(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("expected HOST:PORT, got {s:?}"))?;
    if host.is_empty() {
        return Err(format!("missing host in {s:?}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("IPv6 hosts must be bracketed, e.g. [::1]:9081, got {s:?}"));
    }
    port.parse::<u16>().map_err(|_| format!("invalid port {port:?} in {s:?}"))?;
    Ok(s.to_owned())
}

// ---------------------------------------------------------------- status

/// `GET /v1/cluster`.
#[derive(Debug, Deserialize)]
struct ClusterStatus {
    #[serde(default)]
    cluster_id: Value,
    #[serde(default)]
    node_id: Value,
    #[serde(default)]
    leader_id: Value,
    #[serde(default)]
    term: Value,
    #[serde(default)]
    commit_index: Value,
    #[serde(default)]
    applied_index: Value,
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
struct Member {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    raft_id: Value,
    #[serde(default)]
    grpc_addr: Value,
    #[serde(default)]
    http_addr: Value,
    #[serde(default)]
    role: Value,
    #[serde(default)]
    matched_index: Value,
    #[serde(default)]
    is_leader: bool,
}

async fn status(api: &ApiClient, json: bool) -> anyhow::Result<()> {
    let req = api.request(Method::GET, "/v1/cluster")?;
    let raw: Value = api.send_json(req).await?;
    if json {
        return print_json(&raw);
    }
    let status: ClusterStatus = serde_json::from_value(raw).context("unexpected /v1/cluster response")?;
    print!("{}", format_status(&status));
    Ok(())
}

fn format_status(s: &ClusterStatus) -> String {
    let leader = match &s.leader_id {
        Value::Null => "none (election in progress?)".to_owned(),
        id => format!("node {}", display_value(id)),
    };
    let mut out = String::new();
    // Writing to a String cannot fail; `let _` keeps clippy quiet without unwrap.
    let _ = writeln!(out, "cluster:  {}", display_value(&s.cluster_id));
    let _ = writeln!(out, "leader:   {leader}");
    let _ = writeln!(
        out,
        "term:     {}    commit index: {}    applied index: {}",
        display_value(&s.term),
        display_value(&s.commit_index),
        display_value(&s.applied_index)
    );
    let _ = writeln!(out, "answered by node {}", display_value(&s.node_id));
    out.push('\n');
    out.push_str(&render_table(&member_rows(&s.members)));
    out
}

fn member_rows(members: &[Member]) -> Vec<Vec<String>> {
    let header = ["ID", "RAFT ID", "ROLE", "GRPC", "HTTP", "MATCHED", "LEADER"];
    let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for m in members {
        rows.push(vec![
            display_value(&m.id),
            display_value(&m.raft_id),
            display_value(&m.role),
            display_value(&m.grpc_addr),
            display_value(&m.http_addr),
            display_value(&m.matched_index),
            if m.is_leader { "*".to_owned() } else { String::new() },
        ]);
    }
    rows
}

/// Left-aligned columns separated by two spaces, trailing blanks trimmed.
fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------- changes

async fn add(api: &ApiClient, args: AddArgs, json: bool) -> anyhow::Result<()> {
    let req = api.request(Method::POST, "/v1/cluster/members")?.json(&add_body(&args));
    let resp: Value = api.send_json(req).await?;
    if json {
        return print_json(&resp);
    }
    println!("OK added node {} (raft id {}) grpc={}", args.node_id, display_value(&resp["raft_id"]), args.grpc_addr);
    Ok(())
}

/// `http_addr` is omitted rather than `null` when not given, which both an
/// `Option` field and a `#[serde(default)]` field on the server accept.
fn add_body(args: &AddArgs) -> Value {
    let mut body = Map::new();
    body.insert("node_id".into(), json!(args.node_id));
    body.insert("grpc_addr".into(), json!(args.grpc_addr));
    if let Some(http) = &args.http_addr {
        body.insert("http_addr".into(), json!(http));
    }
    Value::Object(body)
}

async fn remove(api: &ApiClient, args: RemoveArgs, json: bool) -> anyhow::Result<()> {
    let path = format!("/v1/cluster/members/{}", encode_path(&args.id.to_string()));
    let resp = api.send(api.request(Method::DELETE, &path)?).await?;
    if json {
        let body = body_or_empty(resp).await?;
        return print_json(&body);
    }
    println!("OK removed node {}", args.id);
    Ok(())
}

async fn transfer_leader(api: &ApiClient, args: TransferArgs, json: bool) -> anyhow::Result<()> {
    let body = match args.to {
        Some(id) => json!({ "node_id": id }),
        None => json!({}),
    };
    let req = api.request(Method::POST, "/v1/cluster/leader")?.json(&body);
    let resp = api.send(req).await?;
    if json {
        let body = body_or_empty(resp).await?;
        return print_json(&body);
    }
    match args.to {
        Some(id) => println!("OK leadership transfer to node {id} requested"),
        None => println!("OK leadership transfer requested"),
    }
    Ok(())
}

async fn verify(api: &ApiClient, json: bool) -> anyhow::Result<()> {
    let report: Value = api.send_json(api.request(Method::POST, "/v1/cluster/verify")?).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", format_verify(&report));
    }
    if report["consistent"] != Value::Bool(true) {
        bail!("replicas are not all equal at checkpoint {}", display_value(&report["index"]));
    }
    Ok(())
}

fn format_verify(r: &Value) -> String {
    let mut rows = vec![vec!["NODE".to_string(), "RAFT ID".into(), "APPLIED".into(), "DIGEST".into(), "".into()]];
    let expected = r["digest"].as_str().unwrap_or_default();
    for m in r["members"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let digest = m["digest"].as_str();
        let verdict = match digest {
            Some(d) if d == expected => "ok".to_string(),
            Some(_) => "DIFFERS".to_string(),
            None => format!("unavailable: {}", m["error"].as_str().unwrap_or("no answer")),
        };
        rows.push(vec![
            display_value(&m["node_id"]),
            display_value(&m["raft_id"]),
            display_value(&m["applied_index"]),
            digest.unwrap_or("-").to_string(),
            verdict,
        ]);
    }
    format!("checkpoint {} digest {expected}\n{}", display_value(&r["index"]), render_table(&rows))
}

/// The JSON body of a success response, or `{}` when the server sent none,
/// so `--json` always prints a JSON document.
async fn body_or_empty(resp: reqwest::Response) -> anyhow::Result<Value> {
    let bytes = resp.bytes().await.context("reading response")?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(e) => bail!("invalid JSON in response: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    fn parse(args: &[&str]) -> Result<ClusterArgs, clap::Error> {
        let mut argv = vec!["cluster"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.cluster)
    }

    #[test]
    fn parse_subcommands() {
        assert!(matches!(parse(&["status"]).expect("p").command, ClusterCommand::Status));
        let a = parse(&["add", "--node-id", "4", "--grpc-addr", "h:9084"]).expect("p");
        let ClusterCommand::Add(add) = a.command else { panic!("not add") };
        assert_eq!(add.node_id, 4);
        assert_eq!(add.http_addr, None);
        assert!(parse(&["add", "--grpc-addr", "h:9084"]).is_err());
        let a = parse(&["remove", "3", "--json"]).expect("p");
        assert!(a.client.json);
        assert!(matches!(a.command, ClusterCommand::Remove(RemoveArgs { id: 3 })));
        let a = parse(&["transfer-leader", "--to", "2"]).expect("p");
        assert!(matches!(a.command, ClusterCommand::TransferLeader(TransferArgs { to: Some(2) })));
        assert!(parse(&["remove", "x"]).is_err());
    }

    #[test]
    fn host_port_validation() {
        assert!(parse_host_port("127.0.0.1:9081").is_ok());
        assert!(parse_host_port("node-4.local:1").is_ok());
        assert!(parse_host_port("[::1]:9081").is_ok());
        assert!(parse_host_port("::1:9081").is_err());
        assert!(parse_host_port("host").is_err());
        assert!(parse_host_port(":80").is_err());
        assert!(parse_host_port("h:99999").is_err());
    }

    #[test]
    fn add_body_omits_missing_http_addr() {
        let args = AddArgs { node_id: 4, grpc_addr: "h:1".into(), http_addr: None };
        assert_eq!(add_body(&args), json!({"node_id": 4, "grpc_addr": "h:1"}));
    }

    #[test]
    fn status_table() {
        let s: ClusterStatus = serde_json::from_value(json!({
            "cluster_id": "c-1", "node_id": 2, "leader_id": 1, "term": 3,
            "commit_index": 10, "applied_index": 9,
            "members": [
                {"id": 1, "raft_id": 1, "grpc_addr": "127.0.0.1:9081",
                 "http_addr": "127.0.0.1:8081", "role": "voter",
                 "matched_index": 10, "is_leader": true},
                {"id": 12, "raft_id": 12, "grpc_addr": "127.0.0.1:9092",
                 "http_addr": null, "role": "learner",
                 "matched_index": null, "is_leader": false}
            ]
        }))
        .expect("status");
        let expected = "\
cluster:  c-1
leader:   node 1
term:     3    commit index: 10    applied index: 9
answered by node 2

ID  RAFT ID  ROLE     GRPC            HTTP            MATCHED  LEADER
1   1        voter    127.0.0.1:9081  127.0.0.1:8081  10       *
12  12       learner  127.0.0.1:9092  -               -
";
        assert_eq!(format_status(&s), expected);
    }

    #[test]
    fn status_without_leader() {
        let s: ClusterStatus = serde_json::from_value(json!({"leader_id": null, "members": []})).expect("status");
        assert!(format_status(&s).contains("leader:   none"));
    }
}
