//! `/metrics` parses as Prometheus text and carries the documented series; health endpoints.

use serde_json::Value;

use std::time::Duration;

use crate::harness::Cluster;
use crate::harness::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_cover_the_node() {
    let c = Cluster::start(3, &[]).await;
    let l = c.leader().await;
    for i in 0..5 {
        c.put_ok(c.alive()[i % 3], &format!("m/{i}"), "v").await;
    }
    for id in c.alive() {
        let r = c.http.get(c.url(id, "/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = r.text().await.unwrap();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition");
        let names: std::collections::BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        for expected in [
            "ferrokv_http_requests_total",
            "ferrokv_http_request_duration_seconds",
            "ferrokv_raft_term",
            "ferrokv_raft_is_leader",
            "ferrokv_raft_index",
            "ferrokv_raft_members",
            "ferrokv_keys",
            "ferrokv_state_bytes",
            "ferrokv_wal",
            "ferrokv_node_info",
        ] {
            assert!(names.contains(expected), "node {id} lacks {expected}; has {names:?}");
        }
        assert!(
            scrape
                .samples
                .iter()
                .filter(|s| s.metric.starts_with("ferrokv_raft"))
                .all(|s| s.labels.get("group") == Some("0")),
            "raft metrics without group label"
        );
        // Followers apply asynchronously: wait for this one to catch up.
        eventually("keys gauge", Duration::from_secs(10), || async {
            (c.metric(id, "ferrokv_keys", None).await? == 5.0).then_some(())
        })
        .await;
    }
    let leader_flag = c.metric(l, "ferrokv_raft_is_leader", None).await.unwrap();
    assert_eq!(leader_flag, 1.0);
    assert!(c.metric(l, "ferrokv_raft_replication_lag_entries", None).await.is_some());
    assert!(c.metric(l, "ferrokv_raft_proposals_total", Some(("kind", "put"))).await.unwrap() >= 5.0);

    let h: Value = c.http.get(c.url(1, "/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "ok");
    // The leader names the cluster and records every member's HTTP address shortly after forming.
    let view = eventually("cluster id and HTTP addresses", Duration::from_secs(10), || async {
        let v = c.cluster_view(1).await?;
        let named = v["cluster_id"].as_str().is_some_and(|s| s.len() == 32);
        let addressed = v["members"].as_array()?.iter().all(|m| m["http_addr"].as_str().is_some_and(|a| !a.is_empty()));
        (named && addressed).then_some(v)
    })
    .await;
    assert_eq!(view["members"].as_array().unwrap().len(), 3);
    assert!(view["term"].as_u64().unwrap() >= 1);
}
