//! The `ferrokv kv` / `ferrokv cluster` client and the `ferrokv dev` launcher, as a user runs them.

use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

use crate::harness::BIN;
use crate::harness::Cluster;
use crate::harness::free_port;

fn ferrokv(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).args(["--endpoint", endpoint]).output().expect("run ferrokv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_cluster_commands_talk_to_a_real_cluster() {
    let c = Cluster::start(3, &[]).await;
    let endpoint = format!("http://{}", c.nodes[&2].http);
    let (ok, out, err) = ferrokv(&endpoint, &["kv", "put", "cli/a", "alpha"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("OK created key=cli/a"), "{out}");
    let (ok, out, _) = ferrokv(&endpoint, &["kv", "get", "cli/a"]);
    assert!(ok);
    assert_eq!(out.trim_end(), "alpha");
    let (ok, out, _) = ferrokv(&endpoint, &["kv", "put", "cli/b", "beta", "--ttl", "60", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    let rev = v["revision"].as_u64().unwrap();
    // Compare-and-set with a stale revision fails with the server's code and a non-zero exit.
    let (ok, _, err) = ferrokv(&endpoint, &["kv", "put", "cli/b", "gamma", "--if-revision", &(rev - 1).to_string()]);
    assert!(!ok);
    assert!(err.contains("condition_failed"), "{err}");
    let (ok, out, _) = ferrokv(&endpoint, &["kv", "list", "--prefix", "cli/", "--json"]);
    assert!(ok);
    let items: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 2);
    let (ok, _, _) = ferrokv(&endpoint, &["kv", "delete", "cli/a"]);
    assert!(ok);
    let (ok, _, err) = ferrokv(&endpoint, &["kv", "get", "cli/a"]);
    assert!(!ok && err.contains("key_not_found"), "{err}");

    let (ok, out, _) = ferrokv(&endpoint, &["cluster", "status", "--json"]);
    assert!(ok);
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 3);
    let (ok, out, _) = ferrokv(&endpoint, &["cluster", "status"]);
    assert!(ok && out.contains("voter"), "{out}");
    let old = c.leader().await;
    let (ok, _, err) = ferrokv(&endpoint, &["cluster", "transfer-leader"]);
    assert!(ok, "{err}");
    let new = crate::harness::eventually("leader moved", Duration::from_secs(10), || async {
        let l = c.leader().await;
        (l != old).then_some(l)
    })
    .await;
    assert_ne!(new, old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_a_cluster_and_stops_it_cleanly() {
    let (http, grpc) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(BIN)
        .args(["dev", "--nodes", "3", "--http-port", &http.to_string(), "--grpc-port", &grpc.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    for port in http..http + 3 {
        loop {
            let ready =
                client.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            if Instant::now() > deadline || dev.try_wait().unwrap().is_some() {
                let _ = dev.kill();
                panic!("dev cluster node on port {port} never became ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let url = format!("http://127.0.0.1:{http}/v1/kv/dev-key");
    assert_eq!(client.put(&url).body("v").send().await.unwrap().status(), 201);
    let _ = Command::new("kill").args(["-TERM", &dev.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = dev.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = dev.kill();
            panic!("dev did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "dev exited with {status}");
    // Every node is gone: nothing answers on their ports any more.
    for port in http..http + 3 {
        assert!(
            client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err(),
            "node on {port} still up"
        );
    }
    // The data dir was kept (it was given explicitly) and holds every node's state.
    for i in 1..=3 {
        assert!(dir.path().join(format!("node-{i}/node.json")).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_real_successes_and_counts_failures_as_errors() {
    let mut c = Cluster::start(3, &["--request-timeout-ms", "1000"]).await;
    let endpoints: Vec<String> = c.nodes.values().map(|n| format!("http://{}", n.http)).collect();
    let run = |endpoints: &str, extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["bench", "--endpoint", endpoints, "--concurrency", "4", "--keys", "50", "--warmup", "0.2", "--json"])
            .args(["--seed", "7"])
            .args(extra)
            .output()
            .expect("run bench");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), report, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, report, err) =
        run(&endpoints.join(","), &["--ops", "400", "--mix", "put=40,get=40,cas=10,delete=5,list=5"]);
    assert!(ok, "{err}");
    let total = &report["total"];
    assert!(total["successes"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(total["errors"], 0, "{report}");
    let ops = total["ops"].as_u64().unwrap();
    let parts = ["successes", "misses", "conflicts", "errors"].iter().map(|k| total[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(ops, parts);
    // Without a quorum every write fails, and the bench says so (and gates on it).
    let survivor = c.follower().await;
    for id in c.alive() {
        if id != survivor {
            c.kill(id);
        }
    }
    let only = format!("http://{}", c.nodes[&survivor].http);
    let (ok, report, _) = run(&only, &["--ops", "8", "--mix", "put=1", "--no-prefill", "--max-error-rate", "0.5"]);
    assert!(!ok, "the error gate must fail: {report}");
    assert_eq!(report["total"]["successes"], 0, "{report}");
    assert!(report["total"]["errors"].as_u64().unwrap() > 0, "{report}");
}
