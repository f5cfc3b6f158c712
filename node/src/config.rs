//! `ferrokv serve` configuration: every flag also reads `FERROKV_<FLAG_IN_CAPS>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::ValueEnum;

use crate::storage::FsyncPolicy;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// This node's id (≥ 1), stable for the node's lifetime.
    #[arg(long, env = "FERROKV_NODE_ID", value_parser = clap::value_parser!(u64).range(1..crate::membership::JOINED_ID_BASE))]
    pub node_id: u64,
    /// Address the HTTP API listens on.
    #[arg(long, env = "FERROKV_HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,
    /// Address the inter-node gRPC service listens on.
    #[arg(long, env = "FERROKV_GRPC_ADDR", default_value = "127.0.0.1:9081")]
    pub grpc_addr: SocketAddr,
    /// Directory for the Raft log, vote and snapshots. Non-empty means restart.
    #[arg(long, env = "FERROKV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// gRPC address peers use to reach this node (default: --grpc-addr).
    #[arg(long, env = "FERROKV_ADVERTISE_GRPC")]
    pub advertise_grpc: Option<String>,
    /// HTTP address clients use to reach this node (default: --http-addr).
    #[arg(long, env = "FERROKV_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// Members of a new cluster, `id=host:port` (gRPC) separated by commas.
    #[arg(long, env = "FERROKV_INITIAL_MEMBERS", value_parser = parse_members)]
    pub initial_members: Option<InitialMembers>,
    /// HTTP URL of any member of an existing cluster to join.
    #[arg(long, env = "FERROKV_JOIN")]
    pub join: Option<String>,
    /// When to fsync the Raft log: `always` (an acknowledged write is on disk on a majority)
    /// or `never` (leave it to the OS; a whole-cluster power loss can lose recent writes).
    #[arg(long, env = "FERROKV_FSYNC", default_value = "always")]
    pub fsync: FsyncPolicy,
    /// Build a snapshot (and compact the log) once this many entries were applied since the last
    /// one, or a sixteenth of the number of keys held if that is more (see `crate::snapshots`).
    #[arg(long, env = "FERROKV_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "FERROKV_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// AppendEntries requests in flight to each follower. With 1 the next batch leaves when the
    /// previous one is acknowledged, carrying everything appended meanwhile: fewer, larger
    /// requests and fsyncs on the followers under load, no wait for a lone write.
    #[arg(long, env = "FERROKV_REPLICATION_WINDOW", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub replication_window: u32,
    /// Minimum election timeout in milliseconds (the maximum is twice this).
    #[arg(long, env = "FERROKV_ELECTION_TIMEOUT_MS", default_value_t = 500)]
    pub election_timeout_ms: u64,
    /// How long a client request may wait for a leader / a commit before failing with 503.
    #[arg(long, env = "FERROKV_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// How linearizable reads are confirmed: `read-index` (a quorum round trip per batch of
    /// reads) or `lease` (no round trip while the leader lease holds; assumes bounded clock drift).
    #[arg(long, env = "FERROKV_READ_POLICY", value_enum, default_value_t = ReadPolicyArg::ReadIndex)]
    pub read_policy: ReadPolicyArg,
    /// Largest key in bytes.
    #[arg(long, env = "FERROKV_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    #[arg(long, env = "FERROKV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Largest page of a prefix scan.
    #[arg(long, env = "FERROKV_MAX_LIST_LIMIT", default_value_t = 1000)]
    pub max_list_limit: usize,
    /// Requests one node serves at once over HTTP; beyond that it answers 503 `overloaded`.
    #[arg(long, env = "FERROKV_MAX_IN_FLIGHT_REQUESTS", default_value_t = 8192)]
    pub max_in_flight_requests: usize,
    /// How long an HTTP connection may take to send a complete request head, counted from the
    /// end of its previous request (so it also bounds how long a keep-alive connection may sit
    /// idle); then the node closes it. Bounds what slow or silent clients can hold open.
    #[arg(long, env = "FERROKV_HTTP_HEADER_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_ms: u64,
    /// Threads running the node's async work (HTTP, gRPC, Raft, apply); 0 means one per core.
    /// With 1 everything runs on one thread, with no hand-offs between worker threads: the
    /// cheapest setting when several nodes share a machine's cores (e.g. a local cluster).
    #[arg(long, env = "FERROKV_WORKER_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,
    /// Log format.
    #[arg(long, env = "FERROKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Name reported as the OpenTelemetry service name.
    #[arg(long, env = "FERROKV_SERVICE_NAME", default_value = "ferrokv")]
    pub service_name: String,
    /// How often the leader checkpoints the log and compares every replica's state digest at
    /// that index (anti-entropy); 0 turns it off.
    #[arg(long, env = "FERROKV_ANTI_ENTROPY_INTERVAL_MS", default_value_t = 30_000)]
    pub anti_entropy_interval_ms: u64,
    /// Repair a replica whose digest differs from the leader's (when the leader's digest is
    /// confirmed by a majority of voters) by replacing its state with the leader's.
    #[arg(long, env = "FERROKV_ANTI_ENTROPY_REPAIR", default_value_t = true, action = clap::ArgAction::Set)]
    pub anti_entropy_repair: bool,
    /// UNSAFE, tests only: enable `POST /v1/debug/corrupt`, which changes this replica's state
    /// without replication, and `POST /v1/debug/hold-apply`, which stops it applying committed
    /// entries until released. Never set it on a cluster that holds data you care about.
    #[arg(long, env = "FERROKV_UNSAFE_FAULT_INJECTION", default_value_t = false)]
    pub unsafe_fault_injection: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadPolicyArg {
    ReadIndex,
    Lease,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--initial-members`: node id → gRPC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMembers(pub BTreeMap<u64, String>);

pub fn parse_members(s: &str) -> Result<InitialMembers, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected id=host:port"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("{part:?}: node id must be a positive integer"))?;
        let addr = addr.trim();
        if id == 0 || !addr.contains(':') {
            return Err(format!("{part:?}: expected id>=1 and host:port"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} listed twice"));
        }
    }
    if out.is_empty() {
        return Err("no members given".into());
    }
    Ok(InitialMembers(out))
}

impl ServeArgs {
    pub fn advertised_grpc(&self) -> String {
        self.advertise_grpc.clone().unwrap_or_else(|| self.grpc_addr.to_string())
    }

    pub fn advertised_http(&self) -> String {
        self.advertise_http.clone().unwrap_or_else(|| self.http_addr.to_string())
    }

    /// The anti-entropy period, `None` when turned off.
    pub fn anti_entropy_interval(&self) -> Option<Duration> {
        (self.anti_entropy_interval_ms > 0).then(|| Duration::from_millis(self.anti_entropy_interval_ms))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The openraft configuration these flags ask for.
    pub fn raft_config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        openraft::Config {
            cluster_name: "ferrokv".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            // Snapshots are asked for by the node itself (`crate::snapshots`).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 1000.min(self.snapshot_every),
            install_snapshot_timeout: 30_000,
            max_payload_entries: 512,
            enable_pre_vote: Some(true),
            broadcast_submitted_on_append: Some(true),
            // A restarted leader always stands for election in a new term. Resuming its old
            // leadership in place would trust its own log and state, and neither need be complete:
            // the committed id is not synced, and a machine crash can lose log entries this node
            // had not yet synced although two other members had and the write was acknowledged.
            // An election in a new term is won only by a log holding every committed entry.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_members() {
        let m = parse_members("1=a:7070, 2=ferrokv-1.ferrokv-peers:7070,3=127.0.0.1:9083").unwrap();
        assert_eq!(m.0.len(), 3);
        assert_eq!(m.0[&2], "ferrokv-1.ferrokv-peers:7070");
        assert!(parse_members("").is_err());
        assert!(parse_members("x=a:1").is_err());
        assert!(parse_members("0=a:1").is_err());
        assert!(parse_members("1=a:1,1=b:2").is_err());
        assert!(parse_members("1=nohostport").is_err());
    }
}
