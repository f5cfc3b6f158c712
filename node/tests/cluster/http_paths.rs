//! Plain key requests (`GET`/`PUT`/`DELETE /v1/kv/<key>`, no query, no escapes) are served
//! without the router; everything else goes through it. Both must answer alike, enforce the
//! same limits and be counted the same way.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::Cluster;

/// Every response header a key request sets, by name, in a comparable form (the remaining TTL
/// only as present: it counts down between two reads).
fn key_headers(r: &reqwest::Response) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ferrokv") || ["etag", "content-type"].contains(&name.as_str()))
        .map(|(name, v)| match name.as_str() {
            "x-ferrokv-ttl" => (name.to_string(), "present".to_string()),
            _ => (name.to_string(), v.to_str().unwrap().to_string()),
        })
        .collect();
    h.sort();
    h
}

/// `ferrokv_http_requests_total` of the key route for one method and status. Read off the text
/// itself: the route template's braces are more than the exposition parser handles.
async fn requests(c: &Cluster, id: u64, method: &str, status: &str) -> f64 {
    let text = c.http.get(c.url(id, "/metrics")).send().await.unwrap().text().await.unwrap();
    let labels =
        [r#"route="/v1/kv/{*key}""#.to_string(), format!(r#"method="{method}""#), format!(r#"status="{status}""#)];
    text.lines()
        .filter(|l| {
            l.starts_with("ferrokv_http_requests_total{") && labels.iter().all(|label| l.contains(label.as_str()))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Send `parts` on a fresh connection, `pause` apart, and return what comes back until the
/// server closes (each request says `connection: close`).
async fn raw(addr: &str, parts: &[&[u8]], pause: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        tcp.write_all(part).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_routed_key_requests_answer_alike() {
    let c = Cluster::start(3, &["--max-value-bytes", "1024"]).await;
    let l = c.leader().await;
    let h = &c.http;
    let url = |p: &str| c.url(l, p);

    // Created directly, replaced through the router (a query string), read both ways.
    let created = h.put(url("/v1/kv/p/a")).header("content-type", "text/plain").body("one").send().await.unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let replaced = h.put(url("/v1/kv/p/a?ttl=3600")).header("content-type", "text/plain").body("two").send();
    let replaced = replaced.await.unwrap();
    assert_eq!(replaced.status(), 200);
    let etag = replaced.headers()["etag"].to_str().unwrap().to_string();
    let replaced: serde_json::Value = replaced.json().await.unwrap();
    assert_eq!(replaced["key"], created["key"]);
    assert_eq!(replaced["version"], 2);
    assert_eq!(etag, format!("\"{}\"", replaced["revision"]));
    // Read directly (also with a consistency level) and through the router (an escaped key,
    // which names the same key once decoded): the same value and headers.
    let direct = h.get(url("/v1/kv/p/a")).send().await.unwrap();
    let stale = h.get(url("/v1/kv/p/a?consistency=stale")).send().await.unwrap();
    let routed = h.get(url("/v1/kv/p%2Fa")).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(key_headers(&direct), key_headers(&routed));
    assert_eq!(key_headers(&stale), key_headers(&routed));
    assert!(key_headers(&direct).iter().any(|(n, _)| n == "x-ferrokv-ttl"));
    assert_eq!(direct.text().await.unwrap(), "two");
    assert_eq!(stale.text().await.unwrap(), "two");
    assert_eq!(routed.text().await.unwrap(), "two");
    let odd = h.get(url("/v1/kv/p/a?consistency=eventual")).send().await.unwrap();
    assert_eq!(odd.status(), 400);
    assert_eq!(odd.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_consistency");

    // Conditions hold on the direct path: a stale If-Match fails, the current one deletes.
    let stale = h.delete(url("/v1/kv/p/a")).header("if-match", "\"1\"").send().await.unwrap();
    assert_eq!(stale.status(), 412);
    let deleted = h.delete(url("/v1/kv/p/a")).header("if-match", etag.as_str()).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = h.get(url("/v1/kv/p/a")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(gone.json::<serde_json::Value>().await.unwrap()["error"]["code"], "key_not_found");

    // Both paths are counted under the key route.
    assert_eq!(requests(&c, l, "PUT", "201").await, 1.0);
    assert_eq!(requests(&c, l, "PUT", "200").await, 1.0);
    assert_eq!(requests(&c, l, "GET", "200").await, 3.0);
    assert_eq!(requests(&c, l, "DELETE", "412").await, 1.0);
    assert_eq!(requests(&c, l, "DELETE", "204").await, 1.0);
    assert_eq!(requests(&c, l, "GET", "404").await, 1.0);
    assert_eq!(requests(&c, l, "GET", "400").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_puts_read_chunked_and_late_bodies_within_the_limit() {
    let c = Cluster::start(3, &["--max-value-bytes", "1024"]).await;
    let l = c.leader().await;
    let addr = c.nodes[&l].http.clone();

    // A chunked body, sent in two parts with a pause between: stored whole.
    let answer = raw(
        &addr,
        &[
            b"PUT /v1/kv/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n",
            b"6\r\n world\r\n0\r\n\r\n",
        ],
        Duration::from_millis(200),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(c.value(l, "chunked", "linearizable").await.as_deref(), Some("hello world"));

    // A declared length over the limit is refused; so is a chunked body that grows past it. Each
    // goes in one write, so that the server has read all of it when it answers and closes.
    let big = format!(
        "PUT /v1/kv/big HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\nconnection: close\r\n\r\n{}",
        "x".repeat(2000)
    );
    let answer = raw(&addr, &[big.as_bytes()], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("value_too_large"), "{answer}");
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    let chunked = format!(
        "PUT /v1/kv/big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let answer = raw(&addr, &[chunked.as_bytes()], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("value_too_large"), "{answer}");
    let missing = c.get(l, "big", "linearizable").await;
    assert_eq!(missing.status(), 404);
}

/// Read until the server closes the connection (at most 10 s); what came back, and when.
async fn until_closed(tcp: &mut TcpStream) -> (String, std::time::Instant) {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open for 10 s");
    (String::from_utf8_lossy(&out).into_owned(), std::time::Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_request_head_in_time_are_closed() {
    let timeout = Duration::from_millis(500);
    let c = Cluster::start(1, &["--http-header-timeout-ms", "500"]).await;
    let addr = c.nodes[&1].http.clone();

    // A head that never ends.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let (answer, closed) = until_closed(&mut tcp).await;
    assert!(closed - started >= timeout, "closed after {:?}", closed - started);
    assert!(!answer.contains("200 OK"), "{answer}");

    // A keep-alive connection left idle after its request.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let (answer, closed) = until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(closed - started >= timeout, "closed after {:?}", closed - started);

    // A head sent in pieces, all within the timeout, is served.
    let answer = raw(
        &addr,
        &[b"GET /healthz HTTP/1.1\r\n", b"host: x\r\n", b"connection: close\r\n\r\n"],
        Duration::from_millis(50),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}
