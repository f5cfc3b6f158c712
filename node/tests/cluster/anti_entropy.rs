//! Anti-entropy: a replica whose state is changed behind Raft's back (the unsafe fault-injection
//! hook) is found by the leader's digest comparison, reported, and repaired from the leader.

use std::time::Duration;

use serde_json::Value;
use serde_json::json;

use crate::harness::Cluster;
use crate::harness::eventually;

const FLAGS: &[&str] = &["--anti-entropy-interval-ms", "300", "--unsafe-fault-injection"];

async fn corrupt(c: &Cluster, id: u64, key: &str) {
    let resp = c.http.post(c.url(id, "/v1/debug/corrupt")).json(&json!({"key": key, "value": "garbage"})).send();
    assert_eq!(resp.await.unwrap().status(), 200);
}

async fn verify(c: &Cluster, id: u64) -> Value {
    let resp = c.http.post(c.url(id, "/v1/cluster/verify")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_follower_is_detected_and_repaired() {
    let c = Cluster::start(3, FLAGS).await;
    for i in 0..50 {
        c.put_ok(1, &format!("k{i}"), &format!("v{i}")).await;
    }
    let report = verify(&c, 2).await;
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["members"].as_array().unwrap().len(), 3);

    let leader = c.leader().await;
    let follower = c.follower().await;
    corrupt(&c, follower, "k7").await;
    assert_eq!(c.value(follower, "k7", "stale").await.as_deref(), Some("garbage"));

    // Found: the leader exports the divergence and counts it...
    let peer = follower.to_string();
    eventually("divergence reported", Duration::from_secs(10), || async {
        let n = c.metric(leader, "ferrokv_anti_entropy_checks_total", Some(("result", "diverged"))).await?;
        (n >= 1.0).then_some(())
    })
    .await;
    assert!(c.node_log(leader).contains("REPLICA DIVERGENCE"), "logged loudly");
    // ...and repaired: the follower's state is the leader's again.
    eventually("repair", Duration::from_secs(10), || async {
        let n = c.metric(follower, "ferrokv_replica_repairs_total", None).await?;
        (n >= 1.0).then_some(())
    })
    .await;
    assert_eq!(c.value(follower, "k7", "stale").await.as_deref(), Some("v7"));
    eventually("divergence gauge back to 0", Duration::from_secs(10), || async {
        let v = c.metric(leader, "ferrokv_replica_divergence", Some(("peer", &peer))).await?;
        (v == 0.0).then_some(())
    })
    .await;
    let report = verify(&c, follower).await;
    assert_eq!(report["consistent"], true, "{report}");
    // Writes after the repair apply on the repaired replica like everywhere else.
    c.put_ok(follower, "after", "repair").await;
    assert_eq!(c.value(follower, "after", "linearizable").await.as_deref(), Some("repair"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_leader_hands_over_and_is_repaired() {
    let c = Cluster::start(3, FLAGS).await;
    for i in 0..20 {
        c.put_ok(1, &format!("k{i}"), &format!("v{i}")).await;
    }
    let old_leader = c.leader().await;
    corrupt(&c, old_leader, "k3").await;
    // The two followers agree with each other, not with the leader: leadership moves away and
    // the new leader repairs the old one.
    eventually("old leader repaired", Duration::from_secs(15), || async {
        let n = c.metric(old_leader, "ferrokv_replica_repairs_total", None).await?;
        (n >= 1.0).then_some(())
    })
    .await;
    assert_ne!(c.leader().await, old_leader);
    assert_eq!(c.value(old_leader, "k3", "stale").await.as_deref(), Some("v3"));
    let report = verify(&c, old_leader).await;
    assert_eq!(report["consistent"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_hook_is_off_by_default() {
    let c = Cluster::start(1, &[]).await;
    let resp = c.http.post(c.url(1, "/v1/debug/corrupt")).json(&json!({"key": "k", "value": "v"})).send().await;
    assert_eq!(resp.unwrap().status(), 404);
    let resp = c.http.post(c.url(1, "/v1/debug/hold-apply")).json(&json!({"held": true})).send().await;
    assert_eq!(resp.unwrap().status(), 404);
    c.put_ok(1, "k", "v").await;
    assert_eq!(c.value(1, "k", "stale").await.as_deref(), Some("v"), "applying goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_verify_reports_a_divergence_it_does_not_repair() {
    // Periodic rounds off: only the operator's `cluster verify` compares the replicas.
    let c = Cluster::start(3, &["--anti-entropy-interval-ms", "0", "--unsafe-fault-injection"]).await;
    c.put_ok(1, "a", "1").await;
    let verify = |id: u64| {
        let endpoint = c.url(id, "");
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(crate::harness::BIN)
                    .args(["cluster", "--endpoint", &endpoint, "verify"])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = verify(1).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches(" ok").count(), 3, "{stdout}");

    let follower = c.follower().await;
    corrupt(&c, follower, "a").await;
    let out = verify(1).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a divergence fails the command");
    assert_eq!(stdout.matches("DIFFERS").count(), 1, "{stdout}");
    // Nothing repaired it: the follower still holds the damage.
    assert_eq!(c.value(follower, "a", "stale").await.as_deref(), Some("garbage"));
}
