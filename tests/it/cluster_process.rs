//! Three real `tokenledger serve` processes on loopback form a cluster (SPEC 8): a mixed load
//! (issue, revoke, introspect on every node, writes through followers too) runs while the leader
//! is SIGKILLed and restarted at seeded random instants. Oracles: a new leader within 5 s each
//! time; no acknowledged token is ever reported inactive and no token whose revocation was
//! acknowledged before an introspection began is reported active, on any node; at the end every
//! node holds the same chain (same head seq and hash, checked offline by `verify`).
//! Seed and rounds: TOKENLEDGER_CLUSTER_SEED, TOKENLEDGER_CLUSTER_KILLS (default 10).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::binary::{BIN, Running, serve};
use crate::harness::{Rng, txid};

pub const INSTITUTION: &str = "07007";

/// A port for a node's Raft listener, which the test names before the node binds it. Taken
/// below Linux's ephemeral range (32768 and up), so no `127.0.0.1:0` bind of another server
/// in this run can be handed it meanwhile; one counter for the whole test binary, so two tests
/// never pick the same one; and checked free when picked.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left below the ephemeral range");
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub raft_port: u16,
    pub running: Option<Running>,
}

impl Node {
    pub fn start(&mut self, peers: &str) {
        self.start_with(peers, &[]);
    }

    /// [`Self::start`] with `extra` arguments after the cluster's.
    pub fn start_with(&mut self, peers: &str, extra: &[&str]) {
        let raft = format!("127.0.0.1:{}", self.raft_port);
        let id = self.id.to_string();
        let args = [&["--node-id", &id, "--raft-listen", &raft, "--peers", peers][..], extra].concat();
        self.running = Some(serve(&self.dir, &args));
    }

    pub fn url(&self) -> Option<String> {
        self.running.as_ref().map(|r| r.url.clone())
    }
}

pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run tokenledger")
}

pub fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["keys.json", "signing-keys.json", "checkpoint.key", "admin.token"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// Creates the institution and the client_credentials client `svc` (which may introspect)
/// through the node at `url`, with the admin credential of `admin` (`--data-dir DIR`); answers
/// the client's secret.
pub fn create_service_client(url: &str, admin: &[&str]) -> String {
    let made = cli(&[&["institution", "create", "--server", url, "--name", "Bank", INSTITUTION][..], admin].concat());
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let client = cli(&[
        &["client", "create", "--server", url, "--client-id", "svc", "--institution", INSTITUTION][..],
        &["--grant-type", "client_credentials", "--scope", "api:read", "--introspect", "--json"][..],
        admin,
    ]
    .concat());
    assert!(client.status.success(), "{}", String::from_utf8_lossy(&client.stderr));
    let created: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    created["client_secret"].as_str().unwrap().to_owned()
}

/// The node that says it leads, asked over `/readyz`.
pub async fn leader(http: &reqwest::Client, urls: &[(u64, String)]) -> Option<u64> {
    for (id, url) in urls {
        let Ok(reply) = http.get(format!("{url}/readyz")).timeout(Duration::from_millis(500)).send().await else {
            continue;
        };
        let Ok(body) = reply.json::<serde_json::Value>().await else { continue };
        if body["role"] == "leader" {
            return Some(*id);
        }
    }
    None
}

/// Waits (at most 20 s: a loaded CI machine may need an election or two) until `/readyz` of the
/// node at `url` says it takes writes (it knows a leader) when `writes`, or says it does not when
/// `!writes`; `what` names the wait in a failure.
pub async fn wait_writes(http: &reqwest::Client, url: &str, writes: bool, what: &str) {
    let since = Instant::now();
    loop {
        let reply = http.get(format!("{url}/readyz")).timeout(Duration::from_millis(500)).send().await;
        let body = match reply {
            Ok(reply) => reply.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if body["writes"] == writes {
            return;
        }
        assert!(since.elapsed() < Duration::from_secs(20), "{url}: {what} (readyz {body})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A form POST as the client `(id, secret)` of [`INSTITUTION`], with a fresh transactionId;
/// `None` when no answer came (within 8 s).
pub async fn post_form(
    http: &reqwest::Client,
    (id, secret): (&str, &str),
    url: &str,
    form: &[(&str, &str)],
) -> Option<(u16, serde_json::Value)> {
    let reply = http
        .post(url)
        .basic_auth(id, Some(secret))
        .header("transactionId", txid())
        .header("institutionId", INSTITUTION)
        .form(form)
        .timeout(Duration::from_secs(8))
        .send()
        .await
        .ok()?;
    let status = reply.status().as_u16();
    Some((status, reply.json().await.unwrap_or_default()))
}

#[derive(Default)]
struct Model {
    /// Acknowledged issued, not revoked: must never be reported inactive.
    live: HashMap<String, Instant>,
    /// Revocation acknowledged at that instant: never active in a read that began after it.
    revoked: HashMap<String, Instant>,
    acknowledged: u64,
    introspections: u64,
    unconfirmed: u64,
    violations: Vec<String>,
}

struct Load {
    http: reqwest::Client,
    urls: Arc<Mutex<Vec<(u64, String)>>>,
    client: (String, String),
    model: Arc<Mutex<Model>>,
}

impl Load {
    fn pick(&self, rng: &mut Rng) -> Option<String> {
        let urls = self.urls.lock().unwrap();
        let count = urls.len() as u64;
        (count > 0).then(|| urls[rng.below(count) as usize].1.clone())
    }

    async fn post(&self, url: &str, path: &str, form: &[(&str, &str)]) -> Option<(u16, serde_json::Value)> {
        post_form(&self.http, (&self.client.0, &self.client.1), &format!("{url}{path}"), form).await
    }

    async fn step(&self, rng: &mut Rng) {
        let Some(url) = self.pick(rng) else { return };
        match rng.below(10) {
            0..=4 => {
                if let Some((200, body)) =
                    self.post(&url, "/oauth2/v1/token", &[("grant_type", "client_credentials")]).await
                {
                    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
                    let mut model = self.model.lock().unwrap();
                    model.live.insert(token, Instant::now());
                    model.acknowledged += 1;
                }
            }
            5 => {
                let token = {
                    let model = self.model.lock().unwrap();
                    let count = model.live.len() as u64;
                    if count == 0 {
                        return;
                    }
                    model.live.keys().nth(rng.below(count) as usize).cloned()
                };
                let Some(token) = token else { return };
                // Until acknowledged, the token is neither: a lost answer leaves it uncertain.
                self.model.lock().unwrap().live.remove(&token);
                if let Some((200, _)) = self.post(&url, "/oauth2/v1/revoke", &[("token", &token)]).await {
                    let mut model = self.model.lock().unwrap();
                    model.revoked.insert(token, Instant::now());
                    model.acknowledged += 1;
                }
            }
            _ => {
                let (token, was_live) = {
                    let model = self.model.lock().unwrap();
                    let pick_revoked = rng.below(3) == 0 && !model.revoked.is_empty();
                    let pool: Vec<&String> =
                        if pick_revoked { model.revoked.keys().collect() } else { model.live.keys().collect() };
                    if pool.is_empty() {
                        return;
                    }
                    (pool[rng.below(pool.len() as u64) as usize].clone(), !pick_revoked)
                };
                let began = Instant::now();
                let Some((status, body)) = self.post(&url, "/oauth2/v1/introspect", &[("token", &token)]).await else {
                    return;
                };
                let mut model = self.model.lock().unwrap();
                model.introspections += 1;
                match status {
                    200 => {
                        let active = body["active"] == true;
                        let revoked_before = model.revoked.get(&token).is_some_and(|at| *at < began);
                        if active && revoked_before {
                            model.violations.push(format!("{url}: active after an acknowledged revocation: {token}"));
                        }
                        let live_before = was_live && model.live.get(&token).is_some_and(|at| *at < began);
                        if !active && live_before {
                            model.violations.push(format!("{url}: an acknowledged token reported inactive: {token}"));
                        }
                    }
                    503 => {
                        model.unconfirmed += 1;
                        if body["code"] != "CMN_90000" {
                            model.violations.push(format!("{url}: 503 without CMN_90000: {body}"));
                        }
                    }
                    other => model.violations.push(format!("{url}: introspection answered {other}: {body}")),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_process_cluster_survives_leader_kills_without_losing_or_resurrecting_tokens() {
    // A fresh seed each run (printed, so a failure can be replayed), unless one is given.
    let seed: u64 = std::env::var("TOKENLEDGER_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from_le_bytes(tokenledger::crypto::random_bytes::<8>()));
    let kills: usize = std::env::var("TOKENLEDGER_CLUSTER_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    eprintln!("cluster kill test: TOKENLEDGER_CLUSTER_SEED={seed} TOKENLEDGER_CLUSTER_KILLS={kills}");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node { id, dir: root.path().join(format!("node-{id}")), raft_port: free_port(), running: None })
        .collect();
    let peers = nodes.iter().map(|n| format!("{}=127.0.0.1:{}", n.id, n.raft_port)).collect::<Vec<_>>().join(",");
    // The first node makes the key files; the others get copies before their first start.
    let first_dir = nodes[0].dir.clone();
    let peers_for = peers.clone();
    let mut first = nodes.remove(0);
    first = tokio::task::spawn_blocking(move || {
        first.start(&peers_for);
        first
    })
    .await
    .unwrap();
    nodes.insert(0, first);
    for node in nodes.iter_mut().skip(1) {
        copy_keys(&first_dir, &node.dir);
    }
    let mut started = Vec::new();
    for mut node in nodes.drain(..) {
        let peers = peers.clone();
        started.push(
            tokio::task::spawn_blocking(move || {
                if node.running.is_none() {
                    node.start(&peers);
                }
                node
            })
            .await
            .unwrap(),
        );
    }
    nodes = started;
    let admin = ["--data-dir", first_dir.to_str().unwrap()];
    let url_of = |nodes: &[Node], i: usize| nodes[i].url().unwrap();

    let init = cli(&[&["cluster", "init", "--server", &url_of(&nodes, 0)][..], &admin[..]].concat());
    assert!(init.status.success(), "cluster init: {}", String::from_utf8_lossy(&init.stderr));
    // The directory is set up through a follower: its writes are forwarded to the leader.
    let http = reqwest::Client::new();
    let urls = |nodes: &[Node]| nodes.iter().filter_map(|n| n.url().map(|u| (n.id, u))).collect::<Vec<_>>();
    for (_, url) in urls(&nodes) {
        wait_writes(&http, &url, true, &format!("{url} knows no leader after init")).await;
    }
    let leader_id = leader(&http, &urls(&nodes)).await.expect("a leader after init");
    let follower = nodes.iter().position(|n| n.id != leader_id).unwrap();
    let via = url_of(&nodes, follower);
    let secret = create_service_client(&via, &admin);

    let shared_urls = Arc::new(Mutex::new(urls(&nodes)));
    let model = Arc::new(Mutex::new(Model::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..4u64 {
        let load = Load {
            http: http.clone(),
            urls: shared_urls.clone(),
            client: ("svc".to_owned(), secret.clone()),
            model: model.clone(),
        };
        let stop = stop.clone();
        let mut rng = Rng(seed ^ (worker + 1).wrapping_mul(0x51_7CC1_B727_220A));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                load.step(&mut rng).await;
            }
        }));
    }

    let mut failovers = Vec::new();
    for round in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        let Some(leader_id) = leader(&http, &urls(&nodes)).await else {
            panic!("round {round}: no leader before the kill (seed {seed})");
        };
        let victim = nodes.iter().position(|n| n.id == leader_id).unwrap();
        drop(nodes[victim].running.take()); // SIGKILL, then wait
        let killed = Instant::now();
        *shared_urls.lock().unwrap() = urls(&nodes);
        let new_leader = loop {
            if let Some(id) = leader(&http, &urls(&nodes)).await {
                break id;
            }
            assert!(killed.elapsed() < Duration::from_secs(5), "round {round}: no new leader within 5 s (seed {seed})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_ne!(new_leader, leader_id, "round {round}");
        // The time from the kill to the first acknowledged write (through any live node).
        let probe = Load {
            http: http.clone(),
            urls: shared_urls.clone(),
            client: ("svc".to_owned(), secret.clone()),
            model: model.clone(),
        };
        loop {
            let live = urls(&nodes);
            let url = &live[rng.below(live.len() as u64) as usize].1;
            if let Some((200, _)) = probe.post(url, "/oauth2/v1/token", &[("grant_type", "client_credentials")]).await {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "round {round}: no write acknowledged within 10 s (seed {seed})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failovers.push(killed.elapsed());
        let peers = peers.clone();
        let mut restarted = nodes.remove(victim);
        restarted = tokio::task::spawn_blocking(move || {
            restarted.start(&peers);
            restarted
        })
        .await
        .unwrap();
        // Back in the cluster (it knows the leader) before the next kill, so a majority is up.
        let url = restarted.url().unwrap();
        wait_writes(&http, &url, true, &format!("round {round}: the restarted node did not rejoin")).await;
        nodes.insert(victim, restarted);
        *shared_urls.lock().unwrap() = urls(&nodes);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    // Every node ends at the same head and holds every acknowledged answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut seqs = Vec::new();
        for (_, url) in urls(&nodes) {
            let body: serde_json::Value = http.get(format!("{url}/readyz")).send().await.unwrap().json().await.unwrap();
            seqs.push(body["applied_seq"].as_u64().unwrap_or(0));
        }
        if seqs.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes did not converge: {seqs:?} (seed {seed})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let checker = Load {
        http: http.clone(),
        urls: shared_urls.clone(),
        client: ("svc".to_owned(), secret),
        model: model.clone(),
    };
    let (live, revoked): (Vec<String>, Vec<String>) = {
        let model = model.lock().unwrap();
        (model.live.keys().cloned().collect(), model.revoked.keys().cloned().collect())
    };
    for (_, url) in urls(&nodes) {
        for (tokens, active) in [(&live, true), (&revoked, false)] {
            for token in tokens.iter().take(50) {
                let (status, body) = checker.post(&url, "/oauth2/v1/introspect", &[("token", token)]).await.unwrap();
                let answer = (status, body["active"].clone());
                assert_eq!(answer, (200, serde_json::Value::Bool(active)), "{url}: {token} (seed {seed})");
            }
        }
    }
    let report = {
        let model = model.lock().unwrap();
        assert!(model.violations.is_empty(), "seed {seed}: {:#?}", model.violations);
        format!(
            "{} acknowledged writes, {} introspections ({} unconfirmed 503s), kill to first acknowledged write {:?}",
            model.acknowledged, model.introspections, model.unconfirmed, failovers
        )
    };
    eprintln!("cluster kill test: {report}");
    assert!(model.lock().unwrap().acknowledged > kills as u64, "the load made progress: {report}");

    // Offline, every node's ledger verifies and ends with the same chain head.
    let mut heads = Vec::new();
    // Stopped gracefully (SIGTERM), so each ledger file holds what its node applied. (After a
    // SIGKILL a file may end a batch earlier: the apply is fsynced by the next log append, and
    // the node applies the rest again when it starts.)
    for node in nodes.iter_mut() {
        let mut running = node.running.take().unwrap();
        crate::binary::sigterm(&running.child);
        assert!(crate::binary::wait_exit(&mut running.child).success(), "node {} stops cleanly", node.id);
        let out = cli(&["verify", "--json", "--data-dir", node.dir.to_str().unwrap()]);
        assert!(out.status.success(), "verify node {}: {}", node.id, String::from_utf8_lossy(&out.stderr));
        let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        heads.push((verified["head_seq"].clone(), verified["head_hash"].clone()));
    }
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "every node holds the same chain: {heads:?}");
}

/// The OpenSSL sequence of docs/operations.md, with node certificates for both ends of the
/// Raft traffic (serverAuth and clientAuth).
fn node_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc"];
    run(&[
        &["req", "-x509"][..],
        &ec[..],
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=cluster CA"][..],
    ]
    .concat());
    run(&[&["req"][..], &ec[..], &["-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node"][..]].concat());
    std::fs::write(
        dir.join("node.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "node.ext",
        "-out",
        "node.pem",
    ]);
}

/// With TLS on, the nodes speak mutual TLS on the Raft listener (each presenting its API
/// certificate, verified against `raft_tls_ca_file`): the cluster forms, replicates and
/// forwards over it; without `raft_tls_ca_file` a node refuses to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_speaks_mutual_tls_between_nodes() {
    let root = tempfile::tempdir().unwrap();
    let tls = root.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    node_certificates(&tls);
    let file = |name: &str| tls.join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("node.pem"), file("node.key"), file("ca.pem"));
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");

    let no_ca = cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        root.path().join("refused").to_str().unwrap(),
        "--node-id",
        "1",
        "--raft-listen",
        &format!("127.0.0.1:{}", ports[0]),
        "--peers",
        &peers,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ]);
    assert!(!no_ca.status.success());
    assert!(
        String::from_utf8_lossy(&no_ca.stderr).contains("raft_tls_ca_file"),
        "{}",
        String::from_utf8_lossy(&no_ca.stderr)
    );

    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.path().join(format!("node-{i}"))).collect();
    let mut running = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        if i > 0 {
            copy_keys(&dirs[0], dir);
        }
        let (dir, cert, key, ca, peers) = (dir.clone(), cert.clone(), key.clone(), ca.clone(), peers.clone());
        let raft = format!("127.0.0.1:{}", ports[i]);
        let id = (i + 1).to_string();
        let node = tokio::task::spawn_blocking(move || {
            serve(
                &dir,
                &[
                    "--node-id",
                    &id,
                    "--raft-listen",
                    &raft,
                    "--peers",
                    &peers,
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--raft-tls-ca-file",
                    &ca,
                ],
            )
        })
        .await
        .unwrap();
        running.push(node);
    }
    let urls: Vec<String> = running.iter().map(|r| r.url.replace("http://", "https://")).collect();
    let admin = ["--data-dir", dirs[0].to_str().unwrap(), "--server-ca-file", &ca];
    let init = cli(&[&["cluster", "init", "--server", &urls[0]][..], &admin[..]].concat());
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // A write through node 3 (forwarded over mutual TLS if it follows), then every node holds it.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    wait_writes(&http, &urls[2], true, "node 3 knows no leader").await;
    let made = cli(
        &[&["institution", "create", "--server", &urls[2], "--name", "Bank", INSTITUTION][..], &admin[..]].concat()
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let since = Instant::now();
    loop {
        let mut seqs = Vec::new();
        for url in &urls {
            let body: serde_json::Value = http.get(format!("{url}/readyz")).send().await.unwrap().json().await.unwrap();
            seqs.push(body["applied_seq"].as_u64().unwrap_or(0));
        }
        // LedgerCreated, the signing key, the institution.
        if seqs.iter().all(|seq| *seq >= 3) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "replication over mutual TLS: {seqs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three plain nodes, initialised, every one knowing the leader.
pub async fn running_cluster(root: &Path) -> Vec<Node> {
    running_cluster_with(root, &[]).await
}

/// [`running_cluster`], every node started with `extra` arguments too.
pub async fn running_cluster_with(root: &Path, extra: &[&str]) -> Vec<Node> {
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node { id, dir: root.join(format!("node-{id}")), raft_port: free_port(), running: None })
        .collect();
    let peers = nodes.iter().map(|n| format!("{}=127.0.0.1:{}", n.id, n.raft_port)).collect::<Vec<_>>().join(",");
    let mut started = Vec::new();
    for (i, mut node) in nodes.drain(..).enumerate() {
        if i > 0 {
            copy_keys(&root.join("node-1"), &node.dir);
        }
        let (peers, extra) = (peers.clone(), extra.clone());
        started.push(
            tokio::task::spawn_blocking(move || {
                node.start_with(&peers, &extra.iter().map(String::as_str).collect::<Vec<_>>());
                node
            })
            .await
            .unwrap(),
        );
    }
    let admin = ["--data-dir", root.join("node-1").to_str().unwrap().to_owned().leak()];
    let init = cli(&[&["cluster", "init", "--server", &started[0].url().unwrap()][..], &admin[..]].concat());
    assert!(init.status.success(), "cluster init: {}", String::from_utf8_lossy(&init.stderr));
    let http = reqwest::Client::new();
    for node in &started {
        let url = node.url().unwrap();
        wait_writes(&http, &url, true, &format!("{url} knows no leader after init")).await;
    }
    started
}

/// Rotating the ID-token signing key on a cluster (asked of a follower: forwarded to the
/// leader) reaches every node: each one's key file gets the new private key, opened from the
/// sealed copy in the activation event, and each one's JWKS publishes it. The private key is
/// in the ledger only sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_rotated_on_a_cluster_reaches_every_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = running_cluster(root.path()).await;
    let http = reqwest::Client::new();
    let urls: Vec<(u64, String)> = nodes.iter().map(|n| (n.id, n.url().unwrap())).collect();
    let leader_id = leader(&http, &urls).await.unwrap();
    let follower = urls.iter().find(|(id, _)| *id != leader_id).unwrap().1.clone();
    let admin = ["--data-dir", root.path().join("node-1").to_str().unwrap().to_owned().leak()];
    let rotated = cli(&[&["keys", "rotate-signing", "--json", "--server", &follower][..], &admin[..]].concat());
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    let key_id = answer["key"]["key_id"].as_str().unwrap().to_owned();
    for node in &nodes {
        let since = Instant::now();
        loop {
            let file = std::fs::read_to_string(node.dir.join("signing-keys.json")).unwrap();
            let file: serde_json::Value = serde_json::from_str(&file).unwrap();
            let has = file["keys"].as_array().unwrap().iter().any(|k| k["key_id"] == key_id.as_str());
            let jwks: serde_json::Value = http
                .get(format!("{}/.well-known/jwks.json", node.url().unwrap()))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let published = jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == key_id.as_str());
            if has && published && file["active_key_id"] == key_id.as_str() {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "node {}: key {key_id} in file {has}, in JWKS {published}",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // `cluster status` on a follower: every member with its role, its own term and applied seq.
    let status = cli(&[&["cluster", "status", "--json", "--server", &follower][..], &admin[..]].concat());
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["role"], "follower");
    assert_eq!(status["leader_id"], leader_id);
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{status}");
    for member in members {
        assert_eq!(member["reachable"], true, "{member}");
        assert!(member["term"].as_u64().unwrap() >= 1, "{member}");
        // LedgerCreated, the first signing key, the rotation.
        assert!(member["applied_seq"].as_u64().unwrap() >= 3, "{member}");
        let expected = if member["node_id"] == leader_id { "leader" } else { "follower" };
        assert_eq!(member["role"], expected, "{member}");
    }
    // Offline: the activation event carries the key sealed, never the PKCS#8 document in clear.
    drop(nodes);
    let file = std::fs::read_to_string(root.path().join("node-2").join("signing-keys.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    let pkcs8 =
        file["keys"].as_array().unwrap().iter().find(|k| k["key_id"] == key_id.as_str()).unwrap()["private_key_pkcs8"]
            .as_str()
            .unwrap()
            .to_owned();
    use base64::Engine as _;
    let pkcs8 = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(pkcs8).unwrap();
    let ledger = std::fs::read(root.path().join("node-2").join("ledger.redb")).unwrap();
    assert!(
        !ledger.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()),
        "the private key is not in the ledger in clear"
    );
}

/// SPEC 8, fail closed: a node that has lost its majority knows no leader, so `/readyz` says
/// it takes no writes (503), gRPC health turns NOT_SERVING, a token request answers CMN_90019
/// with nothing applied, and introspecting a token it holds as active answers 503 CMN_90000
/// with `Retry-After` instead of a possibly stale "active".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_majority_fails_closed_for_writes_and_for_active() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let root = tempfile::tempdir().unwrap();
    let mut nodes = running_cluster(root.path()).await;
    let admin = ["--data-dir", root.path().join("node-1").to_str().unwrap().to_owned().leak()];
    let survivor = nodes[2].url().unwrap();
    let secret = create_service_client(&survivor, &admin);
    let http = reqwest::Client::new();
    let load = Load {
        http: http.clone(),
        urls: Arc::new(Mutex::new(vec![(3, survivor.clone())])),
        client: ("svc".to_owned(), secret),
        model: Arc::default(),
    };
    let (status, issued) =
        load.post(&survivor, "/oauth2/v1/token", &[("grant_type", "client_credentials")]).await.unwrap();
    assert_eq!(status, 200, "{issued}");
    let token = issued["access_token"].as_str().unwrap().to_owned();
    let (status, body) = load.post(&survivor, "/oauth2/v1/introspect", &[("token", &token)]).await.unwrap();
    assert_eq!((status, body["active"].clone()), (200, serde_json::Value::Bool(true)));

    // Nodes 1 and 2 die; node 3 alone is a minority.
    drop(nodes[0].running.take());
    drop(nodes[1].running.take());
    wait_writes(&http, &survivor, false, "the survivor still claims a leader").await;
    let ready = http.get(format!("{survivor}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let channel = tonic::transport::Channel::from_shared(survivor.clone()).unwrap().connect().await.unwrap();
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
    let head_before = {
        let body: serde_json::Value =
            http.get(format!("{survivor}/readyz")).send().await.unwrap().json().await.unwrap();
        body["applied_seq"].clone()
    };
    let (status, body) =
        load.post(&survivor, "/oauth2/v1/token", &[("grant_type", "client_credentials")]).await.unwrap();
    assert_eq!((status, body["code"].clone()), (500, serde_json::json!("CMN_90019")), "{body}");
    let reply = http
        .post(format!("{survivor}/oauth2/v1/introspect"))
        .basic_auth(&load.client.0, Some(&load.client.1))
        .header("transactionId", txid())
        .header("institutionId", INSTITUTION)
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 503);
    assert!(reply.headers().contains_key("retry-after"), "{:?}", reply.headers());
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["code"], "CMN_90000", "{body}");
    let body: serde_json::Value = http.get(format!("{survivor}/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["applied_seq"], head_before, "nothing was applied while failing closed");
}
