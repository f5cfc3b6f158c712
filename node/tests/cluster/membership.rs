//! Membership: a 4th node joins and is removed again; a wiped node rejoins under a new Raft id.

use std::time::Duration;

use serde_json::Value;

use crate::harness::Cluster;
use crate::harness::eventually;

fn member(view: &Value, node_id: u64) -> Option<&Value> {
    view["members"].as_array()?.iter().find(|m| m["id"] == node_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_node_joins_as_voter_and_is_removed() {
    let mut c = Cluster::start(3, &["--snapshot-every", "30"]).await;
    let l = c.leader().await;
    for i in 0..80 {
        c.put_ok(l, &format!("pre/{i}"), "x").await;
    }
    let via = c.follower().await;
    c.join_new(4, via, &["--snapshot-every", "30"]).await;
    c.wait_ready(4).await;
    let view = eventually("node 4 is a voter", Duration::from_secs(30), || async {
        let v = c.cluster_view(l).await?;
        (member(&v, 4)?["role"] == "voter").then_some(v)
    })
    .await;
    assert_eq!(view["members"].as_array().unwrap().len(), 4);
    assert!(member(&view, 4).unwrap()["raft_id"].as_u64().unwrap() >= 1 << 32);
    assert_eq!(member(&view, 4).unwrap()["http_addr"], c.nodes[&4].http.as_str());
    c.put_ok(4, "from-four", "4").await;
    assert_eq!(c.value(4, "pre/79", "stale").await.as_deref(), Some("x"));

    let r = c.http.delete(c.url(1, "/v1/cluster/members/4")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    eventually("node 4 removed", Duration::from_secs(15), || async {
        let v = c.cluster_view(c.leader().await).await?;
        (member(&v, 4).is_none() && v["members"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let r = c.http.delete(c.url(1, "/v1/cluster/members/4")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    c.put_ok(1, "after-removal", "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rejoins_under_a_new_raft_id() {
    let mut c = Cluster::start(3, &[]).await;
    let l = c.leader().await;
    for i in 0..30 {
        c.put_ok(l, &format!("keep/{i}"), &i.to_string()).await;
    }
    let victim = c.follower().await;
    c.kill(victim);
    c.wipe(victim);
    c.spawn(victim, true);
    c.wait_ready(victim).await;
    let view = eventually("wiped node replaced", Duration::from_secs(30), || async {
        let v = c.cluster_view(c.leader().await).await?;
        let m = member(&v, victim)?;
        (m["raft_id"].as_u64()? >= 1 << 32 && m["role"] == "voter" && v["members"].as_array()?.len() == 3).then_some(v)
    })
    .await;
    assert!(
        view["members"].as_array().unwrap().iter().all(|m| m["raft_id"] != victim),
        "the old Raft id is still a member: {view}"
    );
    assert_eq!(c.value(victim, "keep/29", "stale").await.as_deref(), Some("29"));
    c.put_ok(victim, "after-wipe", "1").await;
    assert_eq!(c.value(l, "after-wipe", "linearizable").await.as_deref(), Some("1"));
}
