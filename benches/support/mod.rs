//! Pieces the benchmarks against the real server share: a loopback target, fresh transaction
//! ids, a raw HTTP/1.1 keep-alive connection, a private server process in a temporary data
//! directory, and what `/proc` says about a process.
//!
//! Included with `#[path = "support/mod.rs"] mod support;`; a bench uses only some of it.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the load goes: a loopback socket address (checked) and the URL it came from.
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub host_header: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, BoxError> {
        let uri: http::Uri = url.parse()?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// (cleartext, loopback) URLs are supported".into());
        }
        let authority = uri.authority().ok_or("the URL needs host:port")?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        let addr = *addrs.first().ok_or("the host did not resolve")?;
        if !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(format!("{url}: load goes to loopback addresses only").into());
        }
        Ok(Self { url: format!("http://{authority}"), addr, host_header: authority.to_string() })
    }
}

/// Fresh canonical UUIDs without a syscall per request: 60 random bits per run, the worker
/// number and a per-worker counter, so no two requests of any run share one.
pub struct TransactionIds {
    seed: u64,
    worker: u64,
    counter: u64,
    text: [u8; 36],
}

impl TransactionIds {
    pub fn new(seed: u64, worker: usize) -> Self {
        Self { seed, worker: worker as u64 & 0xfff, counter: 0, text: [b'-'; 36] }
    }

    pub fn next(&mut self) -> &str {
        self.counter += 1;
        let s = self.seed;
        put_hex(&mut self.text[0..8], s >> 32);
        put_hex(&mut self.text[9..13], s >> 16);
        self.text[14] = b'4';
        put_hex(&mut self.text[15..18], self.worker);
        self.text[19] = b'a';
        put_hex(&mut self.text[20..23], s >> 4);
        put_hex(&mut self.text[24..36], self.counter);
        // Only ASCII hex digits and hyphens were written.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

/// Writes the low `4 * out.len()` bits of `value` as lower-case hex.
fn put_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// A random seed for transaction ids.
pub fn seed() -> u64 {
    u64::from_be_bytes(tokenledger::crypto::random_bytes::<8>())
}

/// A form POST with the common tokenledger headers; only `transactionId` varies per request.
pub fn form_post(
    target: &Target,
    path: &str,
    basic: &str,
    institution: Option<&str>,
    body: &str,
    txid: &str,
) -> Vec<u8> {
    let institution = institution.map(|i| format!("institutionId: {i}\r\n")).unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {basic}\r\n{institution}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         transactionId: {txid}\r\n\r\n{body}",
        target.host_header,
        body.len()
    )
    .into_bytes()
}

/// One HTTP/1.1 keep-alive connection, read with `httparse` (the generator costs little of
/// the CPU it shares with the server).
pub struct RestConn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One parsed response: status and where the body is in the connection buffer.
pub struct RestAnswer {
    pub status: u16,
    pub body: std::ops::Range<usize>,
    pub close: bool,
}

impl RestConn {
    pub async fn connect(target: &Target) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { addr: target.addr, stream, buf: Vec::with_capacity(4096) })
    }

    pub async fn reconnect(&mut self) -> std::io::Result<()> {
        self.stream = TcpStream::connect(self.addr).await?;
        self.stream.set_nodelay(true)?;
        self.buf.clear();
        Ok(())
    }

    /// The body of the last answer.
    pub fn body(&self, answer: &RestAnswer) -> &[u8] {
        &self.buf[answer.body.clone()]
    }

    /// Writes `request` and reads one whole response (Content-Length framing, which is what
    /// the server sends for every answer it has).
    pub async fn exchange(&mut self, request: &[u8]) -> Result<RestAnswer, String> {
        self.buf.clear();
        self.stream.write_all(request).await.map_err(|e| format!("io-write:{:?}", e.kind()))?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    let mut length = None;
                    let mut close = false;
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err("unsupported-framing".to_owned());
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    let length = length.ok_or("no-content-length")?;
                    let total = head_len + length;
                    while self.buf.len() < total {
                        self.fill().await?;
                    }
                    return Ok(RestAnswer { status, body: head_len..total, close });
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(_) => return Err("bad-response".to_owned()),
            }
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        self.buf.reserve(4096);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("io-closed".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("io-read:{:?}", e.kind())),
        }
    }

    /// One exchange whose answer must be 200; returns its body as JSON. Reconnects after an
    /// answer that closed the connection.
    pub async fn json(&mut self, request: &[u8]) -> Result<serde_json::Value, String> {
        let result = self.exchange(request).await;
        let broken = result.as_ref().map(|a| a.close).unwrap_or(true);
        let outcome = match &result {
            Ok(answer) if answer.status == 200 => {
                serde_json::from_slice(self.body(answer)).map_err(|_| "200-not-json".to_owned())
            }
            Ok(answer) => Err(format!("{}:{}", answer.status, String::from_utf8_lossy(self.body(answer)))),
            Err(label) => Err(label.clone()),
        };
        if broken && self.reconnect().await.is_err() {
            return Err("io-reconnect".to_owned());
        }
        outcome
    }
}

/// A tokenledger server process in a data directory of its own, which outlives restarts of
/// the process (for start-up measurements).
pub struct ServerProcess {
    bin: PathBuf,
    pub data: PathBuf,
    pub url: String,
    listen: String,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    /// Prepares (does not start) a server on a free loopback port with data under `dir`.
    pub fn new(bin: PathBuf, dir: &Path, env: Vec<(String, String)>) -> Result<Self, BoxError> {
        // A free loopback port: bind port 0, note it, release it for the server.
        let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = format!("127.0.0.1:{port}");
        Ok(Self {
            bin,
            data: dir.join("data"),
            url: format!("http://{listen}"),
            listen,
            env,
            log_path: dir.join("server.log"),
            child: None,
        })
    }

    /// Starts the process and returns the time until `/readyz` answered 200.
    pub fn start(&mut self, ready_within: Duration) -> Result<Duration, BoxError> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        let started = Instant::now();
        let child = Process::new(&self.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen")
            .arg(&self.listen)
            .arg("--log-level")
            .arg("warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready(started, ready_within)?;
        Ok(started.elapsed())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Polls `GET /readyz` until it answers 200.
    fn wait_ready(&mut self, started: Instant, limit: Duration) -> Result<(), BoxError> {
        let addr: SocketAddr = self.listen.parse()?;
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(format!("the server exited early ({status}); {}", self.log()).into());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                if text.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("the server was not ready within {limit:?}; {}", self.log()).into())
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        format!("server log:\n{text}")
    }

    /// Runs `tokenledger <args>` against this server (import, CLI commands).
    pub fn cli(&self, args: &[&str]) -> Result<String, BoxError> {
        let out = Process::new(&self.bin)
            .args(args)
            .arg("--server")
            .arg(&self.url)
            .arg("--data-dir")
            .arg(&self.data)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "tokenledger {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGTERM by PID, then waits for the graceful exit; returns how long it took (SIGKILL
    /// after `grace`).
    pub fn terminate(&mut self, grace: Duration) -> Result<Duration, BoxError> {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        if child.try_wait()?.is_some() {
            return Ok(Duration::ZERO);
        }
        let _ = Process::new("kill").args(["-TERM", &child.id().to_string()]).status();
        while started.elapsed() < grace {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("server exited with {status}");
                }
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("server did not stop within {grace:?}; killing pid {}", child.id());
        child.kill()?;
        child.wait()?;
        Ok(started.elapsed())
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) -> Result<(), BoxError> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Error paths: never leave the server running.
        let _ = self.terminate(Duration::from_secs(5));
    }
}

/// Resident set size of `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of the process's `ledger-writer` thread.
pub fn writer_cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "ledger-writer" {
            return stat_cpu_seconds(&task.path().join("stat").to_string_lossy());
        }
    }
    None
}

fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Busy CPU seconds of the whole machine (all cores), from `/proc/stat`.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5).unwrap_or(&0.0) + v.get(6).unwrap_or(&0.0);
    Some(busy / 100.0)
}

/// A line describing the machine and how busy it is now.
pub fn machine_state() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        mem.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0)
    };
    format!(
        "cpus {cpus}, loadavg {}, memory {} MiB total / {} MiB available",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        field("MemTotal:"),
        field("MemAvailable:")
    )
}

/// A value from the Prometheus text of `/metrics` (the first sample of `name`).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET path` over a fresh connection; the body as text.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok(body)
}
