//! CRUD, compare-and-set, create-only, TTL and scans through every node; forwarding.

use std::time::Duration;

use serde_json::Value;

use crate::harness::Cluster;
use crate::harness::eventually;
use crate::harness::expect_error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_cas_create_only_through_any_node() {
    let c = Cluster::start(3, &[]).await;
    for id in c.alive() {
        let key = format!("users/{id}/name");
        // Create, then replace: 201 then 200, revisions grow, version counts writes.
        let r = c.put(id, &key, "ada").await;
        assert_eq!(r.status(), 201);
        let created: Value = r.json().await.unwrap();
        assert_eq!(created["version"], 1);
        assert_eq!(created["key"], key.as_str());
        let r = c.put(id, &key, "grace").await;
        assert_eq!(r.status(), 200);
        let replaced: Value = r.json().await.unwrap();
        assert_eq!(replaced["version"], 2);
        let rev = replaced["revision"].as_u64().unwrap();
        assert!(rev > created["revision"].as_u64().unwrap());

        // Read it back from every node, linearizable and stale.
        for reader in c.alive() {
            assert_eq!(c.value(reader, &key, "linearizable").await.as_deref(), Some("grace"));
        }
        let r = c.get(id, &key, "linearizable").await;
        assert_eq!(r.headers()["etag"], format!("\"{rev}\"").as_str());
        assert_eq!(r.headers()["x-ferrokv-version"], "2");

        // Compare-and-set: a stale revision fails with 412 and changes nothing.
        let url = c.url(id, &format!("/v1/kv/{key}"));
        let stale = c.http.put(&url).header("if-match", "\"1\"").body("nope").send().await.unwrap();
        expect_error(stale, 412, "condition_failed").await;
        assert_eq!(c.value(id, &key, "linearizable").await.as_deref(), Some("grace"));
        let ok = c.http.put(&url).header("if-match", format!("\"{rev}\"")).body("hopper").send().await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(c.value(id, &key, "linearizable").await.as_deref(), Some("hopper"));

        // Create-only.
        let again = c.http.put(&url).header("if-none-match", "*").body("x").send().await.unwrap();
        expect_error(again, 412, "condition_failed").await;
        let fresh_url = c.url(id, &format!("/v1/kv/{key}-new"));
        let fresh = c.http.put(&fresh_url).header("if-none-match", "*").body("x").send().await.unwrap();
        assert_eq!(fresh.status(), 201);

        // Delete: conditional, then plain; 404 afterwards.
        let r = c.http.delete(&url).header("if-match", "\"1\"").send().await.unwrap();
        expect_error(r, 412, "condition_failed").await;
        let r = c.http.delete(&url).send().await.unwrap();
        assert_eq!(r.status(), 204);
        expect_error(c.http.delete(&url).send().await.unwrap(), 404, "key_not_found").await;
        expect_error(c.get(id, &key, "linearizable").await, 404, "key_not_found").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_keep_bytes_and_content_type_and_scan_paginates() {
    let c = Cluster::start(3, &[]).await;
    let id = c.follower().await;
    let bin: Vec<u8> = vec![0, 159, 146, 150, 255];
    let r = c
        .http
        .put(c.url(id, "/v1/kv/blob/one"))
        .header("content-type", "application/x-thing")
        .body(bin.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c.get(id, "blob/one", "linearizable").await;
    assert_eq!(r.headers()["content-type"], "application/x-thing");
    assert_eq!(r.bytes().await.unwrap().to_vec(), bin);
    // Keys with slashes and non-ASCII UTF-8.
    c.put_ok(id, "p%C3%A4th/%E2%9C%93", "unicode").await;
    assert_eq!(c.value(id, "päth/✓", "linearizable").await.as_deref(), Some("unicode"));

    for i in 0..7 {
        c.put_ok(id, &format!("scan/{i:02}"), &format!("v{i}")).await;
    }
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let mut url = c.url(id, "/v1/kv?prefix=scan/&limit=3");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: Value = c.http.get(&url).send().await.unwrap().json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["key"].as_str().unwrap().to_string());
            assert!(item["revision"].as_u64().is_some() && item["version"] == 1);
        }
        match page["next_after"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("scan/{i:02}")).collect();
    assert_eq!(seen, expected);

    let page: Value = c.http.get(c.url(id, "/v1/kv?prefix=blob/")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"][0]["encoding"], "base64");
    assert_eq!(page["items"][0]["value"], "AJ+Slv8=");
    assert_eq!(page["next_after"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_on_every_replica() {
    let c = Cluster::start(3, &[]).await;
    let id = c.follower().await;
    let r = c.http.put(c.url(id, "/v1/kv/session?ttl=1")).body("s").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = c.get(id, "session", "linearizable").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ferrokv-ttl"], "1");
    c.put_ok(id, "forever", "f").await;
    // Reads hide the key once its TTL ran out; the leader then replicates its deletion, so
    // every replica's state machine drops it (the key count gauge covers unexpired and
    // expired-but-not-yet-deleted keys alike).
    for reader in c.alive() {
        eventually("expiry replicated", Duration::from_secs(10), || async {
            // A replica that has not applied "forever" yet also counts 1 key ("session"):
            // only with "forever" in place does a count of 1 mean "session" is gone.
            let forever = c.value(reader, "forever", "stale").await;
            (forever.as_deref() == Some("f") && c.metric(reader, "ferrokv_keys", None).await? == 1.0).then_some(())
        })
        .await;
        expect_error(c.get(reader, "session", "stale").await, 404, "key_not_found").await;
        assert_eq!(c.value(reader, "forever", "stale").await.as_deref(), Some("f"));
    }
    let mut expired = 0.0;
    for id in c.alive() {
        expired += c.metric(id, "ferrokv_expired_keys_total", None).await.unwrap_or(0.0);
    }
    assert!(expired >= 1.0, "no node proposed an expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_forwards_writes_and_serves_linearizable_reads_at_the_leaders_read_index() {
    let c = Cluster::start(3, &[]).await;
    let f = c.follower().await;
    c.put_ok(f, "fwd", "1").await;
    assert_eq!(c.value(f, "fwd", "linearizable").await.as_deref(), Some("1"));
    let writes = c.metric(f, "ferrokv_forwarded_requests_total", Some(("kind", "write"))).await.unwrap_or(0.0);
    let read_index = c.metric(f, "ferrokv_forwarded_requests_total", Some(("kind", "read_index"))).await.unwrap_or(0.0);
    assert!(writes >= 1.0 && read_index >= 1.0, "forwarded writes {writes}, read-index calls {read_index}");
    // A write through one follower is immediately visible to a linearizable read elsewhere.
    for i in 0..20 {
        let writer = c.alive()[i % 3];
        let reader = c.alive()[(i + 1) % 3];
        c.put_ok(writer, "counter", &i.to_string()).await;
        assert_eq!(c.value(reader, "counter", "linearizable").await, Some(i.to_string()));
    }
}
