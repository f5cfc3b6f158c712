//! Every kind of bad input gets a JSON 4xx with a stable code and changes nothing.

use serde_json::Value;

use crate::harness::Cluster;
use crate::harness::expect_error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_changes_nothing() {
    let c = Cluster::start(3, &["--max-value-bytes", "1024"]).await;
    let id = c.follower().await;
    let rev = c.put_ok(id, "sentinel", "safe").await;
    let commit_before = c.cluster_view(c.leader().await).await.unwrap()["commit_index"].as_u64().unwrap();
    let url = |p: &str| c.url(id, p);
    let h = &c.http;

    expect_error(h.put(url("/v1/kv/")).body("x").send().await.unwrap(), 400, "empty_key").await;
    let long_key = "k".repeat(1025);
    expect_error(h.put(url(&format!("/v1/kv/{long_key}"))).body("x").send().await.unwrap(), 400, "key_too_large").await;
    expect_error(h.get(url(&format!("/v1/kv/{long_key}"))).send().await.unwrap(), 400, "key_too_large").await;
    expect_error(h.put(url("/v1/kv/big")).body(vec![b'x'; 1025]).send().await.unwrap(), 413, "value_too_large").await;
    expect_error(h.put(url("/v1/kv/sentinel?ttl=0")).body("x").send().await.unwrap(), 400, "invalid_ttl").await;
    expect_error(h.put(url("/v1/kv/sentinel?ttl=abc")).body("x").send().await.unwrap(), 400, "invalid_ttl").await;
    expect_error(h.put(url("/v1/kv/sentinel?color=red")).body("x").send().await.unwrap(), 400, "unknown_parameter")
        .await;
    expect_error(
        h.put(url("/v1/kv/sentinel")).header("if-match", "seven").body("x").send().await.unwrap(),
        400,
        "invalid_precondition",
    )
    .await;
    expect_error(
        h.put(url("/v1/kv/sentinel"))
            .header("if-match", "\"1\"")
            .header("if-none-match", "*")
            .body("x")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_precondition",
    )
    .await;
    expect_error(
        h.delete(url("/v1/kv/sentinel")).header("if-none-match", "*").send().await.unwrap(),
        400,
        "invalid_precondition",
    )
    .await;
    expect_error(h.get(url("/v1/kv/sentinel?consistency=eventual")).send().await.unwrap(), 400, "invalid_consistency")
        .await;
    expect_error(h.get(url("/v1/kv?limit=0")).send().await.unwrap(), 400, "invalid_limit").await;
    expect_error(h.get(url("/v1/kv?limit=100000")).send().await.unwrap(), 400, "invalid_limit").await;
    expect_error(h.post(url("/v1/kv/sentinel")).body("x").send().await.unwrap(), 405, "method_not_allowed").await;
    expect_error(h.patch(url("/v1/kv")).send().await.unwrap(), 405, "method_not_allowed").await;
    expect_error(h.get(url("/v2/nothing")).send().await.unwrap(), 404, "not_found").await;
    expect_error(
        h.post(url("/v1/cluster/members"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    expect_error(
        h.post(url("/v1/cluster/members"))
            .json(&serde_json::json!({"node_id": 9, "grpc_addr": "x:1", "extra": 1}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    expect_error(
        h.post(url("/v1/cluster/members"))
            .json(&serde_json::json!({"node_id": 0, "grpc_addr": "x:1"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_node_id",
    )
    .await;
    expect_error(h.delete(url("/v1/cluster/members/abc")).send().await.unwrap(), 400, "invalid_node_id").await;
    expect_error(h.delete(url("/v1/cluster/members/77")).send().await.unwrap(), 404, "member_not_found").await;

    // Nothing changed: same value, same revision, nothing new committed but what we wrote.
    let r = c.get(id, "sentinel", "linearizable").await;
    assert_eq!(r.headers()["etag"], format!("\"{rev}\"").as_str());
    assert_eq!(r.text().await.unwrap(), "safe");
    let list: Value = h.get(url("/v1/kv")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let commit_after = c.cluster_view(c.leader().await).await.unwrap()["commit_index"].as_u64().unwrap();
    // Only leader-internal entries (blank/noop, cluster id, members' addresses) may appear.
    assert!(commit_after - commit_before <= 3, "bad input committed entries: {commit_before} -> {commit_after}");
    // Every node is still up.
    for n in c.alive() {
        assert!(c.is_ready(n).await);
    }
}
