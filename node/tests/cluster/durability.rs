//! Restarts: a node catches up (by snapshot once the log is compacted), and a whole cluster
//! restarted from its data directories keeps everything.

use std::time::Duration;

use crate::harness::Cluster;
use crate::harness::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-every", "40"]).await;
    let leader = c.leader().await;
    let lagging = c.follower().await;
    c.put_ok(leader, "early", "e").await;
    let stopped_at = c.applied(leader).await.unwrap();
    assert!(c.stop(lagging));
    // Write until the leader has compacted its log past what the stopped node has, so the
    // only way to catch up is a snapshot (bounded: at most 20 rounds).
    let mut i = 0;
    for _round in 0..20 {
        for _ in 0..50 {
            c.put_ok(leader, &format!("bulk/{i}"), &i.to_string()).await;
            i += 1;
        }
        let purged = c.metric(leader, "ferrokv_raft_index", Some(("kind", "purged"))).await.unwrap_or(0.0);
        if purged as u64 > stopped_at + 1 {
            break;
        }
    }
    let purged = c.metric(leader, "ferrokv_raft_index", Some(("kind", "purged"))).await.unwrap_or(0.0);
    assert!(purged as u64 > stopped_at + 1, "the leader never compacted its log (purged {purged})");
    let built = c.metric(leader, "ferrokv_snapshots", Some(("kind", "built"))).await.unwrap_or(0.0);
    assert!(built >= 1.0, "the leader built no snapshot");
    c.spawn(lagging, true);
    c.wait_ready(lagging).await;
    let target = c.applied(leader).await.unwrap();
    eventually("lagging node caught up", Duration::from_secs(20), || async {
        (c.applied(lagging).await? >= target).then_some(())
    })
    .await;
    let installed = c.metric(lagging, "ferrokv_snapshots", Some(("kind", "installed"))).await.unwrap_or(0.0);
    assert!(installed >= 1.0, "the restarted node caught up without a snapshot");
    for i in (0..i).step_by(17) {
        assert_eq!(c.value(lagging, &format!("bulk/{i}"), "stale").await, Some(i.to_string()));
    }
    assert_eq!(c.value(lagging, "early", "stale").await.as_deref(), Some("e"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_restart_keeps_all_data() {
    let mut c = Cluster::start(3, &["--snapshot-every", "50"]).await;
    let mut expected = Vec::new();
    for i in 0..120 {
        let node = c.alive()[i % 3];
        let key = format!("durable/{i}");
        c.put_ok(node, &key, &format!("v{i}")).await;
        expected.push((key, format!("v{i}")));
    }
    // Overwrites and deletes must survive too.
    c.put_ok(1, "durable/0", "changed").await;
    expected[0].1 = "changed".into();
    let r = c.http.delete(c.url(2, "/v1/kv/durable/1")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    expected.remove(1);
    for id in c.alive() {
        // Half of them crash, half stop cleanly.
        if id % 2 == 0 {
            c.kill(id);
        } else {
            assert!(c.stop(id));
        }
    }
    for id in 1..=3 {
        c.spawn(id, true);
    }
    c.wait_ready_all().await;
    for (key, value) in &expected {
        assert_eq!(c.value(2, key, "linearizable").await.as_deref(), Some(value.as_str()), "{key}");
    }
    assert_eq!(c.value(3, "durable/1", "linearizable").await, None);
}
