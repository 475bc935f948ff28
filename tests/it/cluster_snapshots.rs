//! Projection snapshots on cluster nodes (three real `serve` processes): the leader records the
//! snapshots it writes in the background in the cluster's ledger through Raft (every node holds
//! the record); a node stopped with SIGTERM writes its snapshot (unrecorded: the ledger does not
//! change because a node leaves), and its next start loads it, replays only its ledger's tail,
//! catches up through Raft and answers like a node that replayed everything. At the end every
//! node's snapshot plus its tail equals a full replay of its ledger, and every ledger holds the
//! same chain.

use std::path::Path;
use std::time::{Duration, Instant};

use tokenledger::domain::hex;
use tokenledger::ledger::snapshot;

use crate::binary::{sigterm, wait_exit};
use crate::cluster_process::{Node, cli, create_service_client, leader, post_form, running_cluster_with, wait_writes};

struct Client {
    http: reqwest::Client,
    secret: String,
}

impl Client {
    async fn post(&self, url: &str, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        post_form(&self.http, ("svc", &self.secret), &format!("{url}{path}"), form).await.expect("an answer")
    }

    async fn issue(&self, url: &str) -> String {
        let (status, body) = self.post(url, "/oauth2/v1/token", &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn revoke(&self, url: &str, token: &str) {
        let (status, body) = self.post(url, "/oauth2/v1/revoke", &[("token", token)]).await;
        assert_eq!(status, 200, "{body}");
    }

    /// A confirmed answer (a follower answers 503 until it can confirm "active").
    async fn active(&self, url: &str, token: &str) -> bool {
        let since = Instant::now();
        loop {
            let (status, body) = self.post(url, "/oauth2/v1/introspect", &[("token", token)]).await;
            if status == 200 {
                return body["active"] == true;
            }
            assert!(status == 503 && since.elapsed() < Duration::from_secs(20), "{url}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn stop(node: &mut Node) {
    let mut running = node.running.take().unwrap();
    sigterm(&running.child);
    assert!(wait_exit(&mut running.child).success(), "node {}: SIGTERM is a clean exit", node.id);
}

/// `verify --compare-snapshot --json` of a stopped node's data dir.
fn verify(dir: &Path) -> serde_json::Value {
    let out = cli(&["verify", "--data-dir", dir.to_str().unwrap(), "--json", "--compare-snapshot"]);
    assert!(out.status.success(), "verify {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Restarts a stopped node with `extra` arguments and waits until it takes writes.
async fn restart(nodes: &mut Vec<Node>, at: usize, peers: &str, extra: &'static [&'static str]) -> String {
    let peers = peers.to_owned();
    let mut node = nodes.remove(at);
    node = tokio::task::spawn_blocking(move || {
        node.start_with(&peers, extra);
        node
    })
    .await
    .unwrap();
    let url = node.url().unwrap();
    nodes.insert(at, node);
    wait_writes(&reqwest::Client::new(), &url, true, "the restarted node rejoins").await;
    url
}

/// The ledger head a node has applied (`/readyz`).
async fn applied_seq(http: &reqwest::Client, url: &str) -> u64 {
    let body: serde_json::Value = http.get(format!("{url}/readyz")).send().await.unwrap().json().await.unwrap();
    body["applied_seq"].as_u64().unwrap()
}

/// Waits (20 s at most) until the node at `url` has written a snapshot covering `seq` or later
/// and recorded it after `seq`: answers the record's seq.
async fn recorded_after(http: &reqwest::Client, url: &str, seq: u64) -> u64 {
    let since = Instant::now();
    loop {
        let covered = metric(http, url, "tokenledger_snapshot_seq").await.unwrap_or(0.0) as u64;
        let recorded = metric(http, url, "tokenledger_snapshot_recorded_seq").await.unwrap_or(0.0) as u64;
        if covered >= seq && recorded > seq {
            return recorded;
        }
        assert!(since.elapsed() < Duration::from_secs(20), "{url}: no recorded snapshot of seq {seq}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A background snapshot every second while events arrive.
const EVERY: &[&str] = &["--snapshot-every-secs", "1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_restart_from_their_projection_snapshots_and_the_leader_records_its_own() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = running_cluster_with(root.path(), EVERY).await;
    let peers = nodes.iter().map(|n| format!("{}=127.0.0.1:{}", n.id, n.raft_port)).collect::<Vec<_>>().join(",");
    let http = reqwest::Client::new();
    let urls = |nodes: &[Node]| nodes.iter().filter_map(|n| n.url().map(|u| (n.id, u))).collect::<Vec<_>>();
    let leader_id = leader(&http, &urls(&nodes)).await.expect("a leader");
    let lead = nodes.iter().position(|n| n.id == leader_id).unwrap();
    let leader_url = nodes[lead].url().unwrap();
    let admin = ["--data-dir", root.path().join("node-1").to_str().unwrap().to_owned().leak()];
    let secret = create_service_client(&leader_url, &admin);
    let client = Client { http: http.clone(), secret };

    let mut tokens = Vec::new();
    for _ in 0..25 {
        tokens.push(client.issue(&leader_url).await);
    }
    client.revoke(&leader_url, &tokens[0]).await;

    // The leader's background snapshot is recorded through Raft: it is in the cluster's
    // ledger, read here on another node.
    let written = applied_seq(&http, &leader_url).await;
    let recorded_seq = recorded_after(&http, &leader_url, written).await;
    let leader_file = *snapshot::SnapshotFile::open(&nodes[lead].dir).unwrap().header();
    let other_url = nodes[(lead + 1) % 3].url().unwrap();
    assert!(client.active(&other_url, &tokens[24]).await, "a confirmed read: the record is applied there too");
    let listed = cli(&[
        &["audit", "events", "--kind", "projection_snapshot_written", "--json", "--server", &other_url][..],
        &admin[..],
    ]
    .concat());
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let records: Vec<serde_json::Value> =
        String::from_utf8_lossy(&listed.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let record = records
        .iter()
        .find(|r| r["seq"] == recorded_seq)
        .unwrap_or_else(|| panic!("no record at seq {recorded_seq} in {records:?}"));
    let fields = &record["event"]["projection_snapshot_written"];
    assert_eq!(fields["covered_seq"], leader_file.ledger_seq, "{record}");
    assert_eq!(fields["body_sha256"], hex(&leader_file.body_sha256), "{record}");

    // Stopped idle (nothing since its recorded snapshot), the leader writes no other file, and
    // the cluster goes on without it.
    stop(&mut nodes[lead]);
    let stopped = verify(&nodes[lead].dir);
    assert_eq!(stopped["snapshot"]["recorded_seq"], recorded_seq, "{stopped}");
    assert_eq!(stopped["snapshot"]["equals_full_replay"], true, "{stopped}");
    wait_writes(&http, &other_url, true, "a new leader").await;
    let mut during = Vec::new();
    for _ in 0..10 {
        during.push(client.issue(&other_url).await);
    }
    client.revoke(&other_url, &tokens[1]).await;

    // Its next start loads that file (and finds its record in its copy of the cluster's
    // ledger), then catches up through Raft.
    let url = restart(&mut nodes, lead, &peers, EVERY).await;
    assert_eq!(metric(&http, &url, "tokenledger_snapshot_recorded_seq").await, Some(recorded_seq as f64));
    assert_eq!(metric(&http, &url, "tokenledger_snapshot_seq").await, Some(leader_file.ledger_seq as f64));
    assert!(!client.active(&url, &tokens[0]).await, "revoked before its snapshot");
    assert!(!client.active(&url, &tokens[1]).await, "revoked while it was down");
    for token in tokens[2..].iter().chain(&during) {
        assert!(client.active(&url, token).await, "{token} is active on the restarted node");
    }

    // A follower stopped with SIGTERM writes its snapshot of everything it applied (not
    // recorded: a follower does not write to the cluster's ledger); it starts from it.
    let leader_id = leader(&http, &urls(&nodes)).await.expect("a leader");
    let follower = nodes.iter().position(|n| n.id != leader_id).unwrap();
    let follower_url = nodes[follower].url().unwrap();
    assert!(client.active(&follower_url, &during[9]).await);
    stop(&mut nodes[follower]);
    let stopped = verify(&nodes[follower].dir);
    let file = *snapshot::SnapshotFile::open(&nodes[follower].dir).unwrap().header();
    assert_eq!(file.ledger_seq, stopped["head_seq"].as_u64().unwrap(), "the shutdown snapshot covers its ledger");
    assert_eq!(stopped["snapshot"]["equals_full_replay"], true, "{stopped}");
    let survivor = urls(&nodes)[0].1.clone();
    wait_writes(&http, &survivor, true, "a leader without the follower").await;
    let last = client.issue(&survivor).await;
    client.revoke(&survivor, &tokens[2]).await;
    let url = restart(&mut nodes, follower, &peers, EVERY).await;
    assert_eq!(metric(&http, &url, "tokenledger_snapshot_seq").await, Some(file.ledger_seq as f64));
    for (_, url) in urls(&nodes) {
        assert!(client.active(&url, &last).await, "{url}");
        assert!(client.active(&url, &tokens[3]).await, "{url}");
        assert!(!client.active(&url, &tokens[2]).await, "{url}");
    }

    // The leader records a background snapshot up to a second after the last write (and a node
    // that leads after a hand-over may record one it had not yet written): let every node
    // settle on one head, unchanged for more than two snapshot intervals, before stopping them
    // one by one, or a record committed after the first stop would be missing from it.
    let mut settled: Option<(Vec<Option<f64>>, std::time::Instant)> = None;
    for _ in 0..120 {
        let mut seqs = Vec::new();
        for (_, url) in urls(&nodes) {
            seqs.push(metric(&http, &url, "tokenledger_ledger_head_seq").await);
        }
        match &settled {
            Some((same, since)) if *same == seqs => {
                if since.elapsed() > std::time::Duration::from_millis(2500) {
                    break;
                }
            }
            _ => settled = seqs.windows(2).all(|w| w[0] == w[1]).then(|| (seqs, std::time::Instant::now())),
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    // Every node: the same chain, and its snapshot plus its tail equals its full replay.
    let mut heads = Vec::new();
    for node in &mut nodes {
        stop(node);
        let verified = verify(&node.dir);
        assert_eq!(verified["snapshot"]["equals_full_replay"], true, "node {}: {verified}", node.id);
        heads.push((verified["head_seq"].clone(), verified["head_hash"].clone()));
    }
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "every node holds the same chain: {heads:?}");
}
