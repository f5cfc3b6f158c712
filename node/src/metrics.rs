//! Prometheus metrics, all prefixed `ferrokv_`. Raft and storage gauges are refreshed from
//! the live Raft metrics at scrape time, so they are never stale; counters are bumped where
//! the event happens. Every Raft metric carries a `group` label.

use prometheus::Encoder;
use prometheus::HistogramOpts;
use prometheus::HistogramVec;
use prometheus::IntCounterVec;
use prometheus::IntGauge;
use prometheus::IntGaugeVec;
use prometheus::Opts;
use prometheus::Registry;
use prometheus::TextEncoder;

use crate::service::Service;

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub proposals: IntCounterVec,
    pub proposal_failures: IntCounterVec,
    pub forwarded: IntCounterVec,
    pub leader_changes: IntCounterVec,
    pub expired_keys: IntCounterVec,
    /// 1 when the peer's state digest differed from the leader's at the last comparison.
    pub replica_divergence: IntGaugeVec,
    pub anti_entropy_checks: IntCounterVec,
    pub replica_repairs: IntCounterVec,
    resident_memory: IntGauge,
    node_info: IntGaugeVec,
    raft_term: IntGaugeVec,
    raft_is_leader: IntGaugeVec,
    raft_index: IntGaugeVec,
    raft_members: IntGaugeVec,
    raft_replication_lag: IntGaugeVec,
    raft_millis_since_quorum_ack: IntGaugeVec,
    snapshots: IntGaugeVec,
    keys: IntGaugeVec,
    state_bytes: IntGaugeVec,
    wal: IntGaugeVec,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new("ferrokv_http_request_duration_seconds", "HTTP request latency by route and method.")
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            &["route", "method"],
        )?;
        r.register(Box::new(http_duration.clone()))?;
        Ok(Metrics {
            http_requests: counter(
                &r,
                "ferrokv_http_requests_total",
                "HTTP requests by route, method and status.",
                &["route", "method", "status"],
            )?,
            http_duration,
            proposals: counter(
                &r,
                "ferrokv_raft_proposals_total",
                "Commands proposed to Raft by this node as leader.",
                &["group", "kind"],
            )?,
            proposal_failures: counter(
                &r,
                "ferrokv_raft_proposal_failures_total",
                "Proposals that failed, by reason.",
                &["group", "reason"],
            )?,
            forwarded: counter(
                &r,
                "ferrokv_forwarded_requests_total",
                "Calls this node made to the leader for its clients: write (a forwarded write), read_index (one read-index call, shared by the linearizable reads waiting for it), read (a read forwarded whole by a lagging follower).",
                &["group", "kind"],
            )?,
            leader_changes: counter(
                &r,
                "ferrokv_raft_leader_changes_total",
                "Times this node saw the group leader change.",
                &["group"],
            )?,
            expired_keys: counter(
                &r,
                "ferrokv_expired_keys_total",
                "Keys whose TTL expiry this node proposed as leader.",
                &["group"],
            )?,
            replica_divergence: gauge(
                &r,
                "ferrokv_replica_divergence",
                "1 when the peer's state digest differed from the leader's at the last checkpoint (leader only).",
                &["group", "peer"],
            )?,
            anti_entropy_checks: counter(
                &r,
                "ferrokv_anti_entropy_checks_total",
                "Replica digest comparisons made as leader, by result: match, diverged, unavailable.",
                &["group", "result"],
            )?,
            replica_repairs: counter(
                &r,
                "ferrokv_replica_repairs_total",
                "Times this replica's state was replaced with the leader's after a digest mismatch.",
                &["group"],
            )?,
            resident_memory: {
                let g = IntGauge::new("process_resident_memory_bytes", "Resident memory size in bytes.")?;
                r.register(Box::new(g.clone()))?;
                g
            },
            node_info: gauge(
                &r,
                "ferrokv_node_info",
                "Constant 1, labelled with this node's identity.",
                &["node_id", "raft_id", "version"],
            )?,
            raft_term: gauge(&r, "ferrokv_raft_term", "Current Raft term.", &["group"])?,
            raft_is_leader: gauge(&r, "ferrokv_raft_is_leader", "1 when this node leads the group.", &["group"])?,
            raft_index: gauge(
                &r,
                "ferrokv_raft_index",
                "Raft log positions: last_log, committed, applied, snapshot, purged.",
                &["group", "kind"],
            )?,
            raft_members: gauge(&r, "ferrokv_raft_members", "Members of the group by role.", &["group", "role"])?,
            raft_replication_lag: gauge(
                &r,
                "ferrokv_raft_replication_lag_entries",
                "Entries a member is behind the leader's log (leader only).",
                &["group", "peer"],
            )?,
            raft_millis_since_quorum_ack: gauge(
                &r,
                "ferrokv_raft_millis_since_quorum_ack",
                "Milliseconds since a quorum last acknowledged the leader (leader only; -1 otherwise).",
                &["group"],
            )?,
            snapshots: gauge(
                &r,
                "ferrokv_snapshots",
                "Snapshots built and installed since start, and the last snapshot's size in bytes.",
                &["group", "kind"],
            )?,
            keys: gauge(&r, "ferrokv_keys", "Keys stored in the state machine.", &["group"])?,
            state_bytes: gauge(
                &r,
                "ferrokv_state_bytes",
                "Approximate bytes held by keys, values and metadata.",
                &["group"],
            )?,
            wal: gauge(
                &r,
                "ferrokv_wal",
                "Write-ahead log: live entries, bytes of records (the file is preallocated beyond them), fsyncs since start.",
                &["group", "kind"],
            )?,
            registry: r,
        })
    }

    /// Refresh the gauges from the live node and render the Prometheus text format.
    pub fn render(&self, service: &Service) -> Result<String, MetricsError> {
        self.refresh(service);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn refresh(&self, service: &Service) {
        use openraft::async_runtime::WatchReceiver as _;
        let g = "0";
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory.set(rss as i64);
        }
        // Counters exist from the start (at 0), so rates and alerts see them before any event.
        self.replica_repairs.with_label_values(&[g]);
        for result in ["match", "diverged", "unavailable"] {
            self.anti_entropy_checks.with_label_values(&[g, result]);
        }
        let Some(core) = service.try_core() else {
            self.node_info.with_label_values(&[&service.node_id().to_string(), "0", env!("CARGO_PKG_VERSION")]).set(1);
            return;
        };
        self.node_info
            .with_label_values(&[&service.node_id().to_string(), &core.raft_id.to_string(), env!("CARGO_PKG_VERSION")])
            .set(1);
        let m = core.raft.metrics().borrow_watched().clone();
        let idx = |l: Option<&crate::types::LogId>| l.map_or(0, |l| l.index) as i64;
        self.raft_term.with_label_values(&[g]).set(m.current_term as i64);
        let is_leader = m.current_leader == Some(core.raft_id);
        self.raft_is_leader.with_label_values(&[g]).set(i64::from(is_leader));
        self.raft_index.with_label_values(&[g, "last_log"]).set(m.last_log_index.unwrap_or(0) as i64);
        self.raft_index.with_label_values(&[g, "committed"]).set(idx(m.local_committed.as_ref()));
        self.raft_index.with_label_values(&[g, "applied"]).set(idx(m.last_applied.as_ref()));
        self.raft_index.with_label_values(&[g, "snapshot"]).set(idx(m.snapshot.as_ref()));
        self.raft_index.with_label_values(&[g, "purged"]).set(idx(m.purged.as_ref()));
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count() as i64;
        let learners = membership.learner_ids().count() as i64;
        self.raft_members.with_label_values(&[g, "voter"]).set(voters);
        self.raft_members.with_label_values(&[g, "learner"]).set(learners);
        self.raft_replication_lag.reset();
        if let Some(repl) = m.replication.as_ref() {
            let last = m.last_log_index.unwrap_or(0);
            for (id, matched) in repl {
                let peer = membership.get_node(id).map_or_else(|| id.to_string(), |n| n.node_id.to_string());
                let lag = last.saturating_sub(matched.as_ref().map_or(0, |l| l.index));
                self.raft_replication_lag.with_label_values(&[g, &peer]).set(lag as i64);
            }
        }
        let ack = match m.last_quorum_acked.as_ref() {
            Some(at) if is_leader => openraft::Instant::elapsed(&**at).as_millis() as i64,
            _ => -1,
        };
        self.raft_millis_since_quorum_ack.with_label_values(&[g]).set(ack);
        let c = core.sm.counters();
        use std::sync::atomic::Ordering::Relaxed;
        self.snapshots.with_label_values(&[g, "built"]).set(c.snapshots_built.load(Relaxed) as i64);
        self.snapshots.with_label_values(&[g, "installed"]).set(c.snapshots_installed.load(Relaxed) as i64);
        self.snapshots.with_label_values(&[g, "last_bytes"]).set(c.snapshot_bytes.load(Relaxed) as i64);
        let (keys, bytes) = core.sm.read(|sm| (sm.kv.len() as i64, sm.kv.approx_bytes() as i64));
        self.keys.with_label_values(&[g]).set(keys);
        self.state_bytes.with_label_values(&[g]).set(bytes);
        let s = core.log.stats();
        self.wal.with_label_values(&[g, "entries"]).set(s.entries as i64);
        self.wal.with_label_values(&[g, "bytes"]).set(s.wal_bytes as i64);
        self.wal.with_label_values(&[g, "fsyncs"]).set(s.fsyncs as i64);
    }
}

/// The process's resident set size, from `/proc/self/status` (Linux; `None` elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
