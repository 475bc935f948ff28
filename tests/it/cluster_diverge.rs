//! A node whose ledger is not the cluster's halts instead of serving (SPEC 8, docs/cluster.md
//! "What happens when"), through real `tokenledger serve` processes: node 4's data directory
//! comes from another cluster (same key files, another history from seq 1: the operator
//! restored the wrong backup). Added as a learner to a three-node cluster, it is sent entries
//! whose events do not continue its chain; its state machine refuses them, Raft stops on it, and
//! an operator sees `/readyz` 503 with role "stopped", gRPC health NOT_SERVING and one error line
//! naming the seq, while the three others keep serving writes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary::{BIN, serve_logged};
use crate::cluster_process::{INSTITUTION, Node, cli, copy_keys, free_port, leader, wait_writes};

fn admin(dir: &Path) -> [String; 2] {
    ["--data-dir".to_owned(), dir.to_str().unwrap().to_owned()]
}

fn run(args: &[&str], admin: &[String; 2]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(admin.iter().map(String::as_str));
    let output = cli(&all);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

async fn readyz(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    match http.get(format!("{url}/readyz")).timeout(Duration::from_secs(2)).send().await {
        Ok(reply) => {
            let status = reply.status().as_u16();
            (status, reply.json().await.unwrap_or_default())
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

async fn applied_seq(http: &reqwest::Client, url: &str) -> u64 {
    readyz(http, url).await.1["applied_seq"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_ledger_diverges_from_the_clusters_halts_and_says_at_which_seq() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let root = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (b_dir, n4_dir) = (root.path().join("other-1"), root.path().join("node-4"));
    let (b_port, n4_port) = (free_port(), free_port());
    let n4_raft = format!("127.0.0.1:{n4_port}");

    // Another cluster (one voter) and node 4 as its learner: node 4's ledger is that history.
    let other_peers = format!("1=127.0.0.1:{b_port}");
    let mut other = Node { id: 1, dir: b_dir.clone(), raft_port: b_port, running: None };
    let peers = other_peers.clone();
    let other = tokio::task::spawn_blocking(move || {
        other.start(&peers);
        other
    })
    .await
    .unwrap();
    copy_keys(&b_dir, &n4_dir);
    let b_admin = admin(&b_dir);
    let b_url = other.url().unwrap();
    run(&["cluster", "init", "--server", &b_url], &b_admin);
    wait_writes(&http, &b_url, true, "the other cluster elects its one voter").await;
    run(&["institution", "create", "--server", &b_url, "--name", "Other Bank", "09009"], &b_admin);
    let (learner, _) = {
        let (dir, raft) = (n4_dir.clone(), n4_raft.clone());
        let peers = other_peers.clone();
        tokio::task::spawn_blocking(move || {
            serve_logged(&dir, &["--node-id", "4", "--raft-listen", &raft, "--peers", &peers])
        })
        .await
        .unwrap()
    };
    run(&["cluster", "add-learner", "4", &n4_raft, "--server", &b_url], &b_admin);
    let other_head = applied_seq(&http, &b_url).await;
    let since = Instant::now();
    while applied_seq(&http, &learner.url).await < other_head {
        assert!(since.elapsed() < Duration::from_secs(20), "node 4 never caught up with the other cluster");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(other_head > 0);
    drop(learner);
    drop(other);

    // The cluster: three voters with the same key files, and a longer history of their own.
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node { id, dir: root.path().join(format!("node-{id}")), raft_port: free_port(), running: None })
        .collect();
    let peers = nodes.iter().map(|n| format!("{}=127.0.0.1:{}", n.id, n.raft_port)).collect::<Vec<_>>().join(",");
    for node in nodes.iter_mut() {
        copy_keys(&b_dir, &node.dir);
        let peers = peers.clone();
        let mut moved = std::mem::replace(node, Node { id: 0, dir: Default::default(), raft_port: 0, running: None });
        *node = tokio::task::spawn_blocking(move || {
            moved.start(&peers);
            moved
        })
        .await
        .unwrap();
    }
    let a_admin = admin(&nodes[0].dir);
    run(&["cluster", "init", "--server", &nodes[0].url().unwrap()], &a_admin);
    let urls: Vec<(u64, String)> = nodes.iter().map(|n| (n.id, n.url().unwrap())).collect();
    for (_, url) in &urls {
        wait_writes(&http, url, true, "the cluster elects a leader").await;
    }
    // A hand-over puts the cluster in a later term than the other cluster's only one.
    let first = leader(&http, &urls).await.expect("a leader");
    let first_url = urls.iter().find(|(id, _)| *id == first).unwrap().1.clone();
    run(&["cluster", "transfer-leader", "--server", &first_url], &a_admin);
    let since = Instant::now();
    let leader_url = loop {
        if let Some(id) = leader(&http, &urls).await
            && id != first
        {
            break urls.iter().find(|(n, _)| *n == id).unwrap().1.clone();
        }
        assert!(since.elapsed() < Duration::from_secs(10), "no new leader after the hand-over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for i in 0..3 {
        let id = format!("0700{i}");
        run(&["institution", "create", "--server", &leader_url, "--name", "Bank", &id], &a_admin);
    }

    // Node 4 starts on the other cluster's ledger and is added as a learner: it must refuse.
    let (diverged, logged) = {
        let (dir, raft, peers) = (n4_dir.clone(), n4_raft.clone(), peers.clone());
        tokio::task::spawn_blocking(move || {
            serve_logged(&dir, &["--node-id", "4", "--raft-listen", &raft, "--peers", &peers])
        })
        .await
        .unwrap()
    };
    // Waits for the learner to catch up, which it never does: not waited for, killed at the end.
    let mut add = Command::new(BIN)
        .args(["cluster", "add-learner", "4", &n4_raft, "--server", &leader_url])
        .args(&a_admin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    run(&["institution", "create", "--server", &leader_url, "--name", "Bank", INSTITUTION], &a_admin);

    let since = Instant::now();
    let body = loop {
        let (status, body) = readyz(&http, &diverged.url).await;
        if status == 503 && body["role"] == "stopped" {
            break body;
        }
        assert!(since.elapsed() < Duration::from_secs(20), "node 4 still serves: readyz {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((body["reads"].clone(), body["writes"].clone()), (false.into(), false.into()), "{body}");
    assert_eq!(body["leader"], 0, "a stopped node names no leader to pass writes on to: {body}");
    let channel = tonic::transport::Channel::from_shared(diverged.url.clone()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let since = Instant::now();
    loop {
        let answer = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        if answer.status() == ServingStatus::NotServing {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(5), "gRPC health still {:?}", answer.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = {
        let logged = logged.lock().unwrap();
        logged
            .iter()
            .find(|entry| {
                entry["level"] == "ERROR"
                    && entry["message"].as_str().is_some_and(|m| m.contains("diverges from the cluster's at seq"))
            })
            .cloned()
    };
    let line = line.expect("an error line saying the ledger diverges");
    let seq = line["seq"].as_u64().expect("the line names the seq");
    assert!(seq >= 1 && line["message"].as_str().unwrap().contains(&format!("at seq {seq}")), "{line}");
    eprintln!("node 4 halted: {line}");

    // A stopped node stays stopped (it is not retried into serving) and takes no write, not
    // even to forward it; the cluster serves on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(readyz(&http, &diverged.url).await.0, 503);
    let mut refused: Vec<&str> = vec!["institution", "create", "--server", &diverged.url, "--name", "Bank", "07098"];
    refused.extend(a_admin.iter().map(String::as_str));
    assert!(!cli(&refused).status.success(), "node 4 took a write");
    // Nor does it answer from its ledger, which is not the cluster's: an introspection is 503
    // CMN_90000 (never its local "inactive"), an audit query UNAVAILABLE; `/metrics` and
    // `cluster status` still answer, so an operator sees why.
    let introspected = http
        .post(format!("{}/oauth2/v1/introspect", diverged.url))
        .basic_auth("svc", Some("whatever"))
        .header("transactionId", crate::harness::txid())
        .header("institutionId", INSTITUTION)
        .form(&[("token", "not-a-token-of-this-node")])
        .send()
        .await
        .unwrap();
    assert_eq!(introspected.status(), 503);
    assert!(introspected.headers().contains_key("retry-after"));
    let body: serde_json::Value = introspected.json().await.unwrap();
    assert_eq!(body["code"], "CMN_90000", "{body}");
    let mut audit: Vec<&str> = vec!["audit", "events", "--json", "--server", &diverged.url];
    audit.extend(a_admin.iter().map(String::as_str));
    let audited = cli(&audit);
    assert!(!audited.status.success(), "node 4 answered an audit query");
    assert!(
        String::from_utf8_lossy(&audited.stderr).contains("halted"),
        "{}",
        String::from_utf8_lossy(&audited.stderr)
    );
    let metrics = http.get(format!("{}/metrics", diverged.url)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let mut status: Vec<&str> = vec!["cluster", "status", "--json", "--server", &diverged.url];
    status.extend(a_admin.iter().map(String::as_str));
    let status = cli(&status);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["role"], "stopped", "{status}");
    for (_, url) in &urls {
        let (status, body) = readyz(&http, url).await;
        assert_eq!(status, 200, "{url}: {body}");
    }
    run(&["institution", "create", "--server", &urls[2].1, "--name", "Bank", "07099"], &a_admin);
    // Every healthy node counts its Raft log appends and its applies, with their time (where a
    // round's time goes, and what a slow disk shows first).
    for (_, url) in &urls {
        let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        for name in [
            "tokenledger_cluster_log_appends_total",
            "tokenledger_cluster_log_append_seconds_total",
            "tokenledger_cluster_applies_total",
            "tokenledger_cluster_apply_seconds_total",
        ] {
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
                .unwrap_or_else(|| panic!("{url}/metrics has no {name}"));
            assert!(value > 0.0, "{url}: {name} {value}");
        }
    }
    let _ = add.kill();
    let _ = add.wait();
    drop(diverged);
    let dirs: Vec<std::path::PathBuf> = nodes.iter().map(|node| node.dir.clone()).collect();
    drop(nodes);
    // The nodes created their ledger files with the cluster's token-index key (derived from the
    // key files they share), so a token the leader minted has one index position on every node.
    let stores: Vec<tokenledger::ledger::Store> =
        dirs.iter().map(|dir| tokenledger::ledger::Store::open(&dir.join("ledger.redb")).unwrap()).collect();
    let token = stores[0].token_ids().token_id(1_000, [5; 8]);
    for (dir, store) in dirs.iter().zip(&stores) {
        let position = store.token_ids().index_key(&token);
        assert_eq!(
            &position[..8],
            &1_000u64.to_be_bytes(),
            "{}: another node's token is out of time order",
            dir.display()
        );
    }
}
