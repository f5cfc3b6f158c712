//! Node loss: kill -9 of the leader with writers running, loss of quorum, SIGTERM hand-off,
//! followers restarting in turn under linearizable reads, a follower lagging behind in applying.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::harness::Cluster;
use crate::harness::eventually;
use crate::harness::expect_error;
use crate::harness::expect_error_one_of;

/// Writers keep writing through every node while the leader is killed; every write that was
/// acknowledged must be readable afterwards, with its acknowledged value or a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]).await;
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let old_leader = c.leader().await;
    let nodes: Vec<(u64, String)> = c.nodes.values().map(|n| (n.id, n.http.clone())).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (acked, stop, nodes, http) = (acked.clone(), stop.clone(), nodes.clone(), c.http.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded: at most 2000 writes per writer, and the stop flag.
            while i < 2000 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, addr) = &nodes[(i as usize + w as usize) % nodes.len()];
                let key = format!("w{w}/k{}", i % 25);
                let url = format!("http://{addr}/v1/kv/{key}");
                let sent = http.put(url).body(i.to_string()).timeout(Duration::from_secs(6)).send().await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    acked.lock().unwrap().insert(key, i);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.kill(old_leader);
    let new_leader = c.leader().await;
    assert_ne!(new_leader, old_leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 50, "too few acknowledged writes: {}", acked.len());
    check_acked(&c, new_leader, &acked).await;
    // The killed node comes back and serves the same data.
    c.spawn(old_leader, true);
    c.wait_ready(old_leader).await;
    check_acked(&c, old_leader, &acked).await;
}

/// A leader killed and restarted at once, before the others' election timeout, does not resume
/// its leadership in place: leadership is won again by an election in a later term, and the
/// writes acknowledged before the kill are all there. (Resuming in place would trust the
/// restarted node's own log, which a machine crash can leave short of acknowledged writes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_stands_for_election_in_a_later_term() {
    // Elections wait 3-6 s, so the restarted node is back long before anyone else stands.
    let mut c = Cluster::start(3, &["--election-timeout-ms", "3000"]).await;
    let old_leader = c.leader().await;
    let term_of = |v: Option<serde_json::Value>| v.and_then(|v| v["term"].as_u64());
    let old_term = term_of(c.cluster_view(old_leader).await).expect("the leader's term");
    let mut acked = BTreeMap::new();
    for i in 0..20u64 {
        let key = format!("restart/k{i}");
        c.put_ok(old_leader, &key, &i.to_string()).await;
        acked.insert(key, i);
    }
    c.kill(old_leader);
    c.spawn(old_leader, true);
    c.wait_ready(old_leader).await;
    let leader = c.leader().await;
    let term = term_of(c.cluster_view(leader).await).expect("the new leader's term");
    assert!(term > old_term, "leader {leader} in term {term}; the killed leader {old_leader} led term {old_term}");
    check_acked(&c, leader, &acked).await;
    check_acked(&c, old_leader, &acked).await;
}

/// A machine crash can take the tail of the leader's log with it (entries written but not yet
/// synced there) while both followers hold those entries and the writes were acknowledged. The
/// leader restarted at once with the shorter log must not lead the same term again: it would
/// write new entries at indexes the followers already hold in that term, which they take for
/// theirs. Modelled by cutting the last entries off the killed leader's WAL, entries every
/// replica had applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_log_tail_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &["--election-timeout-ms", "3000"]).await;
    let old_leader = c.leader().await;
    let mut acked = BTreeMap::new();
    for i in 0..20u64 {
        let key = format!("tail/k{i}");
        c.put_ok(old_leader, &key, &i.to_string()).await;
        acked.insert(key, i);
    }
    let applied = c.applied(old_leader).await.expect("the leader's applied index");
    for id in c.alive() {
        eventually("every replica applies every write", Duration::from_secs(10), || async {
            (c.applied(id).await? >= applied).then_some(())
        })
        .await;
    }
    c.kill(old_leader);
    let cut = cut_log_entries(&c.nodes[&old_leader].dir.join("raft").join("raft.wal"), 5);
    assert_eq!(cut, 5, "entries cut off the WAL");
    c.spawn(old_leader, true);
    c.wait_ready(old_leader).await;
    // New writes through the restarted node, then every write on every replica.
    for i in 20..30u64 {
        let key = format!("tail/k{i}");
        c.put_ok(old_leader, &key, &i.to_string()).await;
        acked.insert(key, i);
    }
    for id in c.alive() {
        check_acked(&c, id, &acked).await;
    }
    let resp = c.http.post(c.url(old_leader, "/v1/cluster/verify")).send().await.expect("verify");
    let report: serde_json::Value = resp.json().await.expect("verify report");
    assert_eq!(report["consistent"], true, "replicas differ: {report}");
}

/// Cut the WAL file at `path` just before its `n`-th last log entry record (WAL format:
/// `[u32 LE len][u32 LE crc][payload]`, payload = version byte, then the record, whose first byte
/// is 0 for an entry), as if those records had never reached the disk. Returns the entries cut.
fn cut_log_entries(path: &std::path::Path, n: usize) -> usize {
    let data = std::fs::read(path).expect("read the WAL");
    let mut entry_starts = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || pos + 8 + len > data.len() {
            break;
        }
        if data.get(pos + 9) == Some(&0) {
            entry_starts.push(pos);
        }
        pos += 8 + len;
    }
    let Some(&at) = entry_starts.iter().rev().nth(n - 1) else { return 0 };
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("open the WAL");
    file.set_len(at as u64).expect("cut the WAL");
    entry_starts.len() - entry_starts.iter().position(|&p| p == at).unwrap_or(entry_starts.len())
}

/// Every acknowledged key holds its acknowledged value or a later one.
async fn check_acked(c: &Cluster, node: u64, acked: &BTreeMap<String, u64>) {
    for (key, i) in acked {
        let got = c.value(node, key, "linearizable").await;
        let got: u64 = got.unwrap_or_else(|| panic!("acknowledged key {key} lost")).parse().unwrap();
        assert!(got >= *i, "key {key}: acknowledged {i}, read {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_fast_and_stale_reads_still_work() {
    let mut c = Cluster::start(3, &["--request-timeout-ms", "1500", "--max-in-flight-requests", "4"]).await;
    let l = c.leader().await;
    c.put_ok(l, "kept", "yes").await;
    let survivor = c.follower().await;
    // A follower applies a commit when the leader next tells it the commit index: wait for
    // that before cutting it off, so the stale read below has something to find.
    crate::harness::eventually("follower applied", Duration::from_secs(10), || async {
        c.value(survivor, "kept", "stale").await.map(|_| ())
    })
    .await;
    for id in c.alive() {
        if id != survivor {
            c.kill(id);
        }
    }
    let started = std::time::Instant::now();
    // The survivor still knows the killed leader and forwards the write to it. If its pooled
    // connection to the leader breaks while the request is on it, the survivor cannot tell
    // whether the leader got the write and says so (`leader_unreachable`); otherwise it finds
    // no leader and times out (`no_quorum`). Both are 503 and neither may take long.
    expect_error_one_of(c.put(survivor, "lost", "no").await, 503, &["no_quorum", "leader_unreachable"]).await;
    assert!(started.elapsed() < Duration::from_secs(12), "a write without quorum must not hang");
    expect_error(c.get(survivor, "kept", "linearizable").await, 503, "no_quorum").await;
    assert_eq!(c.value(survivor, "kept", "stale").await.as_deref(), Some("yes"));

    // Overload: with reads stuck waiting for a quorum, requests beyond the in-flight limit are
    // shed at once with 503 `overloaded`; none is lost in a queue and the node stays up.
    let url = c.url(survivor, "/v1/kv/kept");
    let calls = (0..10).map(|_| {
        let (http, url) = (c.http.clone(), url.clone());
        tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            let body: serde_json::Value = r.json().await.unwrap();
            body["error"]["code"].as_str().unwrap_or_default().to_string()
        })
    });
    let codes: Vec<String> = futures::future::join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
    assert!(codes.iter().any(|c| c == "overloaded"), "{codes:?}");
    assert!(codes.iter().all(|c| c == "overloaded" || c == "no_quorum"), "{codes:?}");
    assert!(c.is_ready(survivor).await || c.http.get(c.url(survivor, "/healthz")).send().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over() {
    let mut c = Cluster::start(3, &[]).await;
    let l = c.leader().await;
    c.put_ok(l, "before", "1").await;
    assert!(c.stop(l), "the leader did not exit cleanly after SIGTERM:\n{}", c.node_log(l));
    assert!(c.node_log(l).contains("handed leadership over"), "no hand-off in log:\n{}", c.node_log(l));
    let new = c.leader().await;
    assert_ne!(new, l);
    c.put_ok(new, "after", "2").await;
    assert_eq!(c.value(new, "before", "linearizable").await.as_deref(), Some("1"));
}

/// Linearizable reads need the leader's heartbeats to reach a majority. Each follower in turn
/// is killed and restarted; once the other one is down, the restarted follower is the only
/// way to a quorum, so its heartbeats must flow again after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_go_on_while_followers_restart_in_turn() {
    let mut c = Cluster::start(3, &[]).await;
    let l = c.leader().await;
    let followers: Vec<u64> = c.alive().into_iter().filter(|&id| id != l).collect();
    c.put_ok(l, "k", "0").await;
    for (round, &down) in followers.iter().enumerate() {
        let other = followers.iter().copied().find(|&id| id != down).unwrap_or(down);
        c.kill(down);
        assert_eq!(c.value(l, "k", "linearizable").await.as_deref(), Some(round.to_string().as_str()));
        c.spawn(down, true);
        c.wait_ready(down).await;
        c.kill(other);
        let value = (round + 1).to_string();
        c.put_ok(l, "k", &value).await;
        let read = crate::harness::eventually(
            "a linearizable read confirmed through the restarted follower",
            Duration::from_secs(10),
            || async { c.value(l, "k", "linearizable").await },
        )
        .await;
        assert_eq!(read, value);
        c.spawn(other, true);
        c.wait_ready(other).await;
    }
    assert_eq!(c.leader().await, l, "leadership moved:\n{}", c.node_log(l));
}

/// Hold (or release) applying on node `id` (the unsafe fault-injection hook).
async fn hold_apply(c: &Cluster, id: u64, held: bool) {
    let resp = c.http.post(c.url(id, "/v1/debug/hold-apply")).json(&json!({ "held": held })).send();
    assert_eq!(resp.await.expect("hold-apply").status(), 200);
}

async fn forwarded_reads(c: &Cluster, id: u64) -> f64 {
    c.metric(id, "ferrokv_forwarded_requests_total", Some(("kind", "read"))).await.unwrap_or(0.0)
}

/// A follower that lags behind in applying cannot reach the leader's read index in time: it
/// forwards the linearizable read whole to the leader, whose answer holds the latest
/// acknowledged write. Caught up again, it serves such reads from its own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_forwards_linearizable_reads_to_the_leader() {
    let c = Cluster::start(3, &["--unsafe-fault-injection"]).await;
    let leader = c.leader().await;
    let f = c.follower().await;
    // A body that is not `{"held": <bool>}` is refused, and applying goes on.
    let bad = c.http.post(c.url(f, "/v1/debug/hold-apply")).json(&json!({ "held": "yes" })).send().await;
    expect_error(bad.expect("hold-apply"), 400, "invalid_json").await;
    c.put_ok(leader, "lag", "v1").await;
    eventually("the follower applies v1", Duration::from_secs(10), || async {
        (c.value(f, "lag", "stale").await.as_deref() == Some("v1")).then_some(())
    })
    .await;

    hold_apply(&c, f, true).await;
    c.put_ok(leader, "lag", "v2").await;
    let before = forwarded_reads(&c, f).await;
    assert_eq!(c.value(f, "lag", "linearizable").await.as_deref(), Some("v2"), "the latest acknowledged value");
    assert_eq!(c.value(f, "lag", "stale").await.as_deref(), Some("v1"), "the follower itself has not applied v2");
    assert_eq!(forwarded_reads(&c, f).await - before, 1.0, "the read was forwarded to the leader");

    hold_apply(&c, f, false).await;
    eventually("the follower catches up", Duration::from_secs(10), || async {
        (c.value(f, "lag", "stale").await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    let before = forwarded_reads(&c, f).await;
    assert_eq!(c.value(f, "lag", "linearizable").await.as_deref(), Some("v2"));
    assert_eq!(forwarded_reads(&c, f).await, before, "served from the follower's own state again");
}
