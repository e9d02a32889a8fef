//! End-to-end test harness: runs the real `sipedge` binary on ephemeral loopback ports and talks
//! to it over real UDP (SIP) and TCP (admin HTTP).
//!
//! Everything here is written against the contract in SPEC.md, independently of the server's own
//! modules: the SIP response parser and the digest computation are the test's own code (using the
//! `md-5` and `sha2` crates directly), so a symmetric bug in the server cannot hide.
//!
//! Owns: starting/stopping servers, provisioning through the CLI, scraping metrics, a tiny SIP UAC.
//! Must not: send traffic anywhere outside 127.0.0.0/8, kill processes it did not start.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sipedge");
/// The admin bearer token written into every test config (SPEC §2 `admin.token`).
pub const ADMIN_TOKEN: &str = "sipedge-e2e-test-token";
/// How long a server may take to log its `ready` line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERMed server may take to exit (no calls: should be immediate; drain is 30 s max).
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);
/// Default wait for an expected SIP answer.
pub const ANSWER: Duration = Duration::from_secs(2);
/// Wait used for "no answer" (silence) assertions.
pub const SILENCE: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// One running (or prepared) `sipedge run` process with its own temp directory.
pub struct Server {
    dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The effective default realm (`registrar.realm`).
    pub realm: String,
    child: Option<Child>,
    /// The first SIP listener (`udp:IP:PORT`), valid while running.
    pub sip: SocketAddr,
    /// All SIP listeners as logged, e.g. `udp:127.0.0.1:40123`.
    pub listeners: Vec<String>,
    pub admin: SocketAddr,
    /// All stderr of all runs of this server, for diagnostics.
    log: Arc<Mutex<String>>,
    starts: u32,
}

fn deep_merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => deep_merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Strips ANSI escape sequences (`ESC [ ... letter`) that tracing may write even to a pipe.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if c2.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Parses the `ready` log line: `... ready sip=udp:IP:PORT [sip=...] admin=IP:PORT ...`.
/// Returns (sip listeners, admin address) or None if this is not the ready line.
pub fn parse_ready_line(line: &str) -> Option<(Vec<String>, SocketAddr)> {
    let line = strip_ansi(line);
    let words: Vec<&str> = line.split_whitespace().collect();
    if !words
        .iter()
        .any(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()) == "ready")
    {
        return None;
    }
    let mut sips = Vec::new();
    let mut admin = None;
    for w in &words {
        let w = w.trim_end_matches(',');
        if let Some(v) = w.strip_prefix("sip=") {
            sips.push(v.trim_matches('"').to_string());
        } else if let Some(v) = w.strip_prefix("admin=") {
            admin = v.trim_matches('"').parse::<SocketAddr>().ok();
        }
    }
    if sips.is_empty() {
        return None;
    }
    Some((sips, admin?))
}

impl Server {
    /// Prepares a server directory and config without starting it (to provision credentials
    /// first with [`Server::add_credential`]). `toml_extra` is TOML merged over the harness
    /// base config: tables merge key by key, so a test may write e.g.
    /// `"[registrar]\nmin_interval_s = 0\n[security]\nauth_fail_limit = 3"`, and may even
    /// override a base key such as `[sip] workers`.
    pub fn prepare(toml_extra: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("sipedge-e2e-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let (media_min, media_max) = media_range();
        let base = format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\nworkers = 2\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken = {tok:?}\n\
             [store]\npath = {store:?}\n\
             [cdr]\npath = {cdr:?}\n\
             [media]\naddress = \"127.0.0.1\"\nport_min = {media_min}\nport_max = {media_max}\n",
            tok = ADMIN_TOKEN,
            store = data.join("sipedge.db").to_str().unwrap(),
            cdr = data.join("cdr.jsonl").to_str().unwrap(),
        );
        let mut table: toml::Table = base.parse().expect("base toml");
        let extra: toml::Table = toml_extra
            .parse()
            .unwrap_or_else(|e| panic!("test's extra TOML does not parse: {e}\n{toml_extra}"));
        deep_merge(&mut table, extra);
        let realm = table
            .get("registrar")
            .and_then(|r| r.get("realm"))
            .and_then(|r| r.as_str())
            .unwrap_or("sipedge.local")
            .to_string();
        let text = toml::to_string(&table).expect("serialize toml");
        let config_path = dir.path().join("sipedge.toml");
        std::fs::write(&config_path, text).expect("write config");
        Server {
            dir,
            config_path,
            realm,
            child: None,
            sip: "0.0.0.0:0".parse().unwrap(),
            listeners: Vec::new(),
            admin: "0.0.0.0:0".parse().unwrap(),
            log: Arc::new(Mutex::new(String::new())),
            starts: 0,
        }
    }

    /// Prepares and starts a server; panics (with its stderr) if it does not get ready in 20 s.
    pub fn start(toml_extra: &str) -> Server {
        let mut s = Server::prepare(toml_extra);
        s.launch();
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap()
    }

    /// Everything the server(s) printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts `sipedge run --config FILE` and waits for its ready line.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.starts += 1;
        {
            let mut log = self.log.lock().unwrap();
            log.push_str(&format!("----- start #{} -----\n", self.starts));
        }
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let (tx, rx) = mpsc::channel::<Option<String>>();
        // Drains stderr for the life of the process so the pipe never fills; hands each line to
        // the starter until it stops listening, and a None at EOF.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        break;
                    }
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).to_string();
                        log.lock().unwrap().push_str(&line);
                        let _ = tx.send(Some(line));
                    }
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.kill();
                panic!(
                    "sipedge did not log a `ready sip=... admin=...` line within {:?}; stderr:\n{}",
                    READY_TIMEOUT,
                    self.log()
                );
            }
            match rx.recv_timeout(left) {
                Ok(Some(line)) => {
                    if let Some((sips, admin)) = parse_ready_line(&line) {
                        let first = sips
                            .iter()
                            .find_map(|s| s.strip_prefix("udp:").and_then(|a| a.parse().ok()))
                            .unwrap_or_else(|| {
                                panic!("ready line has no parseable udp listener: {line}")
                            });
                        self.sip = first;
                        self.listeners = sips;
                        self.admin = admin;
                        return;
                    }
                }
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the process is gone (or closed stderr). Give it a moment.
                    std::thread::sleep(Duration::from_millis(100));
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    self.kill();
                    panic!(
                        "sipedge exited (status {:?}) before logging ready; stderr:\n{}",
                        status,
                        self.log()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the PID of our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return st,
                Ok(None) => {}
                Err(e) => panic!("wait failed: {e}"),
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sipedge did not exit within {:?} after SIGTERM; stderr:\n{}",
                    EXIT_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, assert exit code 0, start again with the same directory and config.
    /// Ports change: `sip` and `admin` are re-read from the new ready line.
    pub fn restart(&mut self) {
        let st = self.terminate();
        assert_eq!(
            st.code(),
            Some(0),
            "sipedge should exit 0 on SIGTERM, got {st:?}; stderr:\n{}",
            self.log()
        );
        self.launch();
    }

    /// Kills the child by its PID (SIGKILL) if still running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    // --- provisioning through the CLI (SPEC §1) ------------------------------------------

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        assert!(
            out.status.success(),
            "`sipedge {}` failed with {:?}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `sipedge credentials add --config FILE --username U --password P [--realm R]`.
    /// Call before `launch`, or `restart` afterwards (no hot reload assumed).
    pub fn add_credential(&self, user: &str, password: &str, realm: Option<&str>) {
        let cfg = self.config_path.to_str().unwrap().to_string();
        let mut args = vec![
            "credentials",
            "add",
            "--config",
            &cfg,
            "--username",
            user,
            "--password",
            password,
        ];
        if let Some(r) = realm {
            args.push("--realm");
            args.push(r);
        }
        self.cli(&args);
    }

    /// `sipedge credentials add --config FILE --username U --ha1 H --ha1b H` (MD5 hashes only,
    /// in the default realm).
    pub fn add_credential_hashes(&self, user: &str, ha1: &str, ha1b: &str) {
        let cfg = self.config_path.to_str().unwrap().to_string();
        self.cli(&[
            "credentials",
            "add",
            "--config",
            &cfg,
            "--username",
            user,
            "--ha1",
            ha1,
            "--ha1b",
            ha1b,
        ]);
    }

    // --- admin HTTP -------------------------------------------------------------------------

    pub fn http_get(&self, path: &str, bearer: Option<&str>) -> HttpResponse {
        http_request(self.admin, "GET", path, bearer)
    }

    /// `GET /metrics` body (asserts 200).
    pub fn metrics(&self) -> String {
        let r = self.http_get("/metrics", None);
        assert_eq!(r.status, 200, "GET /metrics: {} {}", r.status, r.body);
        r.body
    }

    /// The value of one exact series, e.g. `sipedge_register_rejected_total{reason="auth"}`.
    /// Label order does not matter. None if the series is absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// Like [`metric`](Self::metric) but an absent series reads as 0 (for counters/gauges that
    /// an exporter may create lazily).
    pub fn metric_or_zero(&self, series: &str) -> f64 {
        self.metric(series).unwrap_or(0.0)
    }

    /// `GET /health` -> (status, body).
    pub fn health(&self) -> HttpResponse {
        self.http_get("/health", None)
    }

    /// `GET /api/v1/...` with the test bearer token; body parsed as JSON.
    pub fn api_get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http_get(path, Some(ADMIN_TOKEN));
        let v = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, v)
    }

    /// Polls `series` until `pred(value or 0)` holds or `timeout` passes; returns the last value.
    pub fn wait_metric(&self, series: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric_or_zero(series);
            if pred(v) || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A SIP client on 127.0.0.1 aimed at this server's first UDP listener.
    pub fn client(&self) -> Client {
        Client::bind("127.0.0.1", self.sip)
    }

    /// A SIP client on another loopback source IP (e.g. "127.0.0.2").
    pub fn client_on(&self, ip: &str) -> Client {
        Client::bind(ip, self.sip)
    }
}

/// A media port range of its own for each server: 200 ports (50 calls) in 20000–32599, below
/// the kernel's ephemeral range (32768–60999 on Debian), so no test socket bound to port 0 can
/// take one; the offset differs between the servers of one test process and, by the process id,
/// between processes.
fn media_range() -> (u16, u16) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let slots = 12_600 / 200;
    let slot = (std::process::id().wrapping_mul(7919).wrapping_add(n * 13)) % slots;
    let min = 20_000 + (slot * 200) as u16;
    (min, min + 199)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // cargo test shows a test's output only when it fails: leave the server's side there.
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .chars()
                .skip(log.chars().count().saturating_sub(12_000))
                .collect();
            eprintln!("----- sipedge stderr (tail) -----\n{tail}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP (std only) and Prometheus text parsing
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect admin {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sipedge-e2e\r\nAccept: */*\r\n{auth}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read admin response {path}: {e}"));
    parse_http_response(&raw).unwrap_or_else(|| {
        panic!(
            "unparseable HTTP response to {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn parse_http_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let le = find(rest, b"\r\n")?;
            let size_str = std::str::from_utf8(&rest[..le]).ok()?;
            let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[le + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Splits a series `name{a="x",b="y"}` into its name and sorted labels.
pub fn parse_series(s: &str) -> Option<(String, BTreeMap<String, String>)> {
    let s = s.trim();
    let (name, rest) = match s.find('{') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let mut labels = BTreeMap::new();
    if !rest.is_empty() {
        let inner = rest.strip_prefix('{')?.strip_suffix('}')?;
        let b = inner.as_bytes();
        let mut i = 0;
        while i < b.len() {
            while i < b.len() && (b[i] == b',' || b[i] == b' ') {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            let ks = i;
            while i < b.len() && b[i] != b'=' {
                i += 1;
            }
            let key = inner[ks..i].trim().to_string();
            i += 1; // '='
            if i >= b.len() || b[i] != b'"' {
                return None;
            }
            i += 1;
            let mut val = String::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    val.push(match b[i] {
                        b'n' => '\n',
                        c => c as char,
                    });
                } else {
                    val.push(b[i] as char);
                }
                i += 1;
            }
            i += 1; // closing quote
            labels.insert(key, val);
        }
    }
    Some((name.trim().to_string(), labels))
}

/// All samples of a Prometheus text exposition: (name, labels, value).
pub fn parse_exposition(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The series ends at the closing brace if any, else at the first space.
        let split_at = match (line.find('{'), line.rfind('}')) {
            (Some(_), Some(close)) => close + 1,
            _ => match line.find(' ') {
                Some(i) => i,
                None => continue,
            },
        };
        let (series, rest) = line.split_at(split_at);
        let Some(val) = rest.split_whitespace().next() else {
            continue;
        };
        let v = match val {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => match val.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        if let Some((name, labels)) = parse_series(series) {
            out.push((name, labels, v));
        }
    }
    out
}

/// The value of one exact series in an exposition (label order ignored).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let (qn, ql) = parse_series(series).unwrap_or_else(|| panic!("bad series query {series}"));
    parse_exposition(text)
        .into_iter()
        .find(|(n, l, _)| *n == qn && *l == ql)
        .map(|(_, _, v)| v)
}

/// Sum over all series of a metric name (any labels).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    parse_exposition(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// The declared type of a metric (`# TYPE name type`).
pub fn metric_type(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next()? == "#" && w.next()? == "TYPE" && w.next()? == name {
            w.next().map(|t| t.to_string())
        } else {
            None
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Digest (RFC 2617 / RFC 7616 / RFC 8760), the test's own implementation
// ---------------------------------------------------------------------------------------------

pub mod digest {
    use md5::{Digest as _, Md5};
    use sha2::Sha256;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Alg {
        Md5,
        Sha256,
    }

    impl Alg {
        pub fn name(self) -> &'static str {
            match self {
                Alg::Md5 => "MD5",
                Alg::Sha256 => "SHA-256",
            }
        }
        pub fn from_name(s: &str) -> Option<Alg> {
            match s.to_ascii_uppercase().as_str() {
                "MD5" => Some(Alg::Md5),
                "SHA-256" => Some(Alg::Sha256),
                _ => None,
            }
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn h(alg: Alg, s: &str) -> String {
        match alg {
            Alg::Md5 => hex(&Md5::digest(s.as_bytes())),
            Alg::Sha256 => hex(&Sha256::digest(s.as_bytes())),
        }
    }

    /// H(username:realm:password).
    pub fn ha1(alg: Alg, user: &str, realm: &str, password: &str) -> String {
        h(alg, &format!("{user}:{realm}:{password}"))
    }

    /// qop=auth response: H(HA1:nonce:nc:cnonce:auth:H(method:uri)).
    pub fn response(
        alg: Alg,
        ha1: &str,
        nonce: &str,
        nc: &str,
        cnonce: &str,
        method: &str,
        uri: &str,
    ) -> String {
        let ha2 = h(alg, &format!("{method}:{uri}"));
        h(alg, &format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
    }

    #[test]
    fn rfc2617_vector() {
        // RFC 2617 §3.5 example (HTTP, qop=auth).
        let ha1 = ha1(Alg::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        let r = response(
            Alg::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_vector() {
        // RFC 7616 §3.9.1 example.
        let ha1 = ha1(
            Alg::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        let r = response(
            Alg::Sha256,
            &ha1,
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(
            r,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }
}

/// A parsed `WWW-Authenticate: Digest ...` challenge.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub scheme: String,
    /// Lower-cased parameter names, unquoted values.
    pub params: BTreeMap<String, String>,
    pub raw: String,
}

impl Challenge {
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(|c: char| c.is_whitespace())?;
        let mut params = BTreeMap::new();
        let b = rest.as_bytes();
        let mut i = 0;
        loop {
            while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            let ks = i;
            while i < b.len() && b[i] != b'=' && b[i] != b',' {
                i += 1;
            }
            let key = rest[ks..i].trim().to_ascii_lowercase();
            if i >= b.len() || b[i] == b',' {
                params.insert(key, String::new());
                continue;
            }
            i += 1; // '='
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut val = String::new();
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut bytes = Vec::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    bytes.push(b[i]);
                    i += 1;
                }
                if i >= b.len() {
                    return None; // unterminated quoted string
                }
                i += 1;
                val = String::from_utf8_lossy(&bytes).to_string();
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                val.push_str(rest[vs..i].trim());
            }
            params.insert(key, val);
        }
        Some(Challenge {
            scheme: scheme.to_string(),
            params,
            raw: value.to_string(),
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }
    pub fn realm(&self) -> &str {
        self.param("realm").expect("challenge without realm")
    }
    pub fn nonce(&self) -> &str {
        self.param("nonce").expect("challenge without nonce")
    }
    /// The algorithm; RFC 2617 says an absent algorithm means MD5.
    pub fn alg(&self) -> digest::Alg {
        let name = self.param("algorithm").unwrap_or("MD5");
        digest::Alg::from_name(name).unwrap_or_else(|| panic!("unknown algorithm {name}"))
    }
    pub fn is_stale(&self) -> bool {
        self.param("stale")
            .map(|s| s.eq_ignore_ascii_case("true"))
            .unwrap_or(false)
    }
    /// Whether `qop` lists `auth` (it is a quoted list like "auth,auth-int").
    pub fn offers_qop_auth(&self) -> bool {
        self.param("qop")
            .map(|q| q.split(',').any(|t| t.trim() == "auth"))
            .unwrap_or(false)
    }

    /// An `Authorization` header value answering this challenge with qop=auth.
    /// `username` is the digest username (for HA1b: `user@realm`), `ha1` the hash to use.
    pub fn authorization_ha1(
        &self,
        username: &str,
        ha1: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.alg();
        let nc_s = format!("{nc:08x}");
        let resp = digest::response(alg, ha1, self.nonce(), &nc_s, cnonce, method, uri);
        let mut v = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}, cnonce=\"{cnonce}\", qop=auth, nc={nc_s}",
            self.realm(),
            self.nonce(),
            alg.name(),
        );
        if let Some(o) = self.param("opaque") {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        v
    }

    /// Same, computing HA1 = H(username:realm:password) from the challenge's realm.
    pub fn authorization(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let ha1 = digest::ha1(self.alg(), username, self.realm(), password);
        self.authorization_ha1(username, &ha1, method, uri, nc, cnonce)
    }
}

// ---------------------------------------------------------------------------------------------
// SIP messages: the test's own minimal writer and parser
// ---------------------------------------------------------------------------------------------

pub fn rand_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Expands RFC 3261 compact header names and lower-cases.
pub fn canonical_header_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "e" => "content-encoding",
        "s" => "subject",
        "o" => "event",
        "r" => "refer-to",
        _ => return n,
    }
    .to_string()
}

/// A SIP request under construction.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn new(method: &str, uri: &str) -> Request {
        Request {
            method: method.into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Replaces the first header of that name (or appends it).
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        let cn = canonical_header_name(name);
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| canonical_header_name(n) == cn)
        {
            Some(h) => h.1 = value.to_string(),
            None => self.headers.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// Builder form of [`set`](Self::set).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.set(name, value);
        self
    }

    /// Appends (even if a header of that name exists).
    pub fn add(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        let cn = canonical_header_name(name);
        self.headers.retain(|(n, _)| canonical_header_name(n) != cn);
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let cn = canonical_header_name(name);
        self.headers
            .iter()
            .find(|(n, _)| canonical_header_name(n) == cn)
            .map(|(_, v)| v.as_str())
    }

    /// The branch parameter of the (first) Via.
    pub fn branch(&self) -> Option<String> {
        self.header("via").and_then(|v| header_param(v, "branch"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        for (n, v) in &self.headers {
            if canonical_header_name(n) == "content-length" {
                continue;
            }
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        s.push_str(&self.body);
        s.into_bytes()
    }
}

/// A parameter (`;name=value`) of a header value, case-insensitive name; value unquoted.
/// Returns Some("") for a flag parameter without value.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    // Parameters after the URI: skip an enclosed <...> part first so URI params don't count.
    let after = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if b > a => &value[b + 1..],
        _ => value,
    };
    for p in after
        .split(';')
        .skip(if value.contains('<') { 0 } else { 1 })
    {
        let p = p.trim();
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim().trim_matches('"')),
            None => (p, ""),
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v.split(',').next().unwrap_or("").trim().to_string());
        }
    }
    None
}

/// A parsed SIP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub raw: Vec<u8>,
    pub code: u16,
    pub reason: String,
    /// (canonical lower-case name, value) in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub from: SocketAddr,
}

impl Response {
    /// Parses a response datagram; None if it is not a SIP response.
    pub fn parse(raw: &[u8], from: SocketAddr) -> Option<Response> {
        let (head_end, body_start) = match find(raw, b"\r\n\r\n") {
            Some(i) => (i, i + 4),
            None => (raw.len(), raw.len()),
        };
        let head = std::str::from_utf8(&raw[..head_end]).ok()?;
        // Unfold continuation lines (RFC 3261 §7.3.1).
        let mut lines: Vec<String> = Vec::new();
        for l in head.split("\r\n") {
            if (l.starts_with(' ') || l.starts_with('\t')) && !lines.is_empty() {
                let last = lines.last_mut().unwrap();
                last.push(' ');
                last.push_str(l.trim());
            } else {
                lines.push(l.to_string());
            }
        }
        let status = lines.first()?;
        let rest = status.strip_prefix("SIP/2.0 ")?;
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        let code: u16 = code.parse().ok()?;
        let headers = lines[1..]
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (canonical_header_name(n), v.trim().to_string()))
            .collect();
        Some(Response {
            raw: raw.to_vec(),
            code,
            reason: reason.to_string(),
            headers,
            body: raw[body_start..].to_vec(),
            from,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let cn = canonical_header_name(name);
        self.headers
            .iter()
            .find(|(n, _)| *n == cn)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header: one per header line, and comma-separated list values split,
    /// except for the auth headers which RFC 3261 §7.3.1 exempts from comma combination.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        let cn = canonical_header_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == cn)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every `WWW-Authenticate` challenge, in order.
    pub fn challenges(&self) -> Vec<Challenge> {
        self.headers_all("www-authenticate")
            .into_iter()
            .map(|v| {
                Challenge::parse(v).unwrap_or_else(|| panic!("unparseable WWW-Authenticate: {v}"))
            })
            .collect()
    }

    /// The challenge for an algorithm; panics with the response if absent.
    pub fn challenge(&self, alg: digest::Alg) -> Challenge {
        self.challenges()
            .into_iter()
            .find(|c| c.alg() == alg)
            .unwrap_or_else(|| panic!("no {} challenge in:\n{}", alg.name(), self.text()))
    }

    /// Top Via branch.
    pub fn branch(&self) -> Option<String> {
        self.header("via").and_then(|v| header_param(v, "branch"))
    }

    /// The `;expires=` parameter of the (first) Contact.
    pub fn contact_expires(&self) -> Option<u32> {
        self.header("contact")
            .and_then(|c| header_param(c, "expires"))
            .and_then(|v| v.parse().ok())
    }

    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.header(name).and_then(|v| v.trim().parse().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).to_string()
    }
}

/// A UDP SIP user agent client on a loopback address.
pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub local: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub user_agent: String,
}

impl Client {
    /// Binds `ip:0` (any 127.0.0.0/8 address works on Linux's lo).
    pub fn bind(ip: &str, server: SocketAddr) -> Client {
        let addr: SocketAddr = format!("{ip}:0").parse().expect("ip");
        assert!(
            matches!(addr, SocketAddr::V4(a) if a.ip().is_loopback()),
            "tests only use loopback addresses"
        );
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Client::from_socket(sock, server)
    }

    pub fn from_socket(sock: UdpSocket, server: SocketAddr) -> Client {
        assert!(
            server.ip().is_loopback(),
            "tests only talk to loopback servers"
        );
        let local = sock.local_addr().unwrap();
        Client {
            sock,
            server,
            local,
            call_id: format!("{}@e2e.test", rand_token()),
            from_tag: rand_token(),
            cseq: 0,
            user_agent: "sipedge-e2e/1.0".into(),
        }
    }

    /// Points the client at another server address (after a restart the port changes).
    pub fn retarget(&mut self, server: SocketAddr) {
        self.server = server;
    }

    pub fn next_cseq(&mut self) -> u32 {
        self.cseq += 1;
        self.cseq
    }

    /// A REGISTER for `user` in `domain` (To/From host and Request-URI host), with a new branch,
    /// the next CSeq, Contact `<sip:user@local>`, `Expires: 60`.
    pub fn register(&mut self, user: &str, domain: &str) -> Request {
        let cseq = self.next_cseq();
        Request::new("REGISTER", &format!("sip:{domain}"))
            .with(
                "Via",
                &format!(
                    "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
                    self.local,
                    rand_token()
                ),
            )
            .with("Max-Forwards", "70")
            .with(
                "From",
                &format!("<sip:{user}@{domain}>;tag={}", self.from_tag),
            )
            .with("To", &format!("<sip:{user}@{domain}>"))
            .with("Call-ID", &self.call_id.clone())
            .with("CSeq", &format!("{cseq} REGISTER"))
            .with("Contact", &format!("<sip:{user}@{}>", self.local))
            .with("Expires", "60")
            .with("User-Agent", &self.user_agent.clone())
    }

    /// An out-of-dialog OPTIONS (keepalive) with a new branch and Call-ID.
    pub fn options(&mut self) -> Request {
        let cseq = self.next_cseq();
        Request::new("OPTIONS", &format!("sip:{}", self.server))
            .with(
                "Via",
                &format!(
                    "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
                    self.local,
                    rand_token()
                ),
            )
            .with("Max-Forwards", "70")
            .with(
                "From",
                &format!("<sip:probe@{}>;tag={}", self.local, rand_token()),
            )
            .with("To", &format!("<sip:{}>", self.server))
            .with("Call-ID", &format!("{}@e2e.test", rand_token()))
            .with("CSeq", &format!("{cseq} OPTIONS"))
            .with("User-Agent", &self.user_agent.clone())
    }

    pub fn send(&self, req: &Request) -> Vec<u8> {
        let bytes = req.to_bytes();
        self.send_raw(&bytes);
        bytes
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).expect("send_to");
    }

    /// The next datagram from anywhere within `d`.
    pub fn recv_raw_timeout(&self, d: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + d;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => continue, // e.g. ICMP-induced ECONNREFUSED: keep waiting
            }
        }
    }

    /// The next SIP response within `d` (datagrams that are not responses are skipped).
    pub fn recv_timeout(&self, d: Duration) -> Option<Response> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (raw, from) = self.recv_raw_timeout(left)?;
            if let Some(r) = Response::parse(&raw, from) {
                return Some(r);
            }
        }
    }

    /// The next response whose top Via branch is `branch`, within `d`.
    pub fn recv_for(&self, branch: &str, d: Duration) -> Option<Response> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.recv_timeout(left)?;
            if r.branch().as_deref() == Some(branch) {
                return Some(r);
            }
        }
    }

    /// Sends and waits (2 s) for the final response of this transaction; panics if none.
    /// Provisional (1xx) responses are skipped.
    pub fn transact(&self, req: &Request) -> Response {
        self.try_transact(req, ANSWER).unwrap_or_else(|| {
            panic!(
                "no response within {ANSWER:?} from {} to:\n{}",
                self.server,
                String::from_utf8_lossy(&req.to_bytes())
            )
        })
    }

    pub fn try_transact(&self, req: &Request, d: Duration) -> Option<Response> {
        let branch = req.branch().expect("request without Via branch");
        self.send(req);
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.recv_for(&branch, left)?;
            if r.code >= 200 {
                return Some(r);
            }
        }
    }

    /// Sends and asserts that nothing at all comes back within `d`.
    pub fn assert_silence(&self, req: &Request, d: Duration, why: &str) {
        self.send(req);
        if let Some(r) = self.recv_timeout(d) {
            panic!("expected no answer ({why}), got:\n{}", r.text());
        }
    }

    /// REGISTER without credentials; asserts a 401 and returns it.
    pub fn challenge(&mut self, user: &str, domain: &str) -> Response {
        let req = self.register(user, domain);
        let r = self.transact(&req);
        assert_eq!(
            r.code,
            401,
            "REGISTER without Authorization should be challenged:\n{}",
            r.text()
        );
        r
    }

    /// REGISTER answering `ch` with (digest username, password), nc, and `expires`.
    #[allow(clippy::too_many_arguments)]
    pub fn register_answering(
        &mut self,
        user: &str,
        domain: &str,
        ch: &Challenge,
        digest_user: &str,
        password: &str,
        nc: u32,
        expires: u32,
    ) -> Request {
        let uri = format!("sip:{domain}");
        let auth = ch.authorization(digest_user, password, "REGISTER", &uri, nc, &rand_token());
        self.register(user, domain)
            .with("Expires", &expires.to_string())
            .with("Authorization", &auth)
    }

    /// The full REGISTER -> 401 -> REGISTER(Authorization, `alg`) flow; returns the final
    /// response to the authenticated REGISTER.
    pub fn register_with(
        &mut self,
        user: &str,
        domain: &str,
        password: &str,
        alg: digest::Alg,
        expires: u32,
    ) -> Response {
        let r401 = self.challenge(user, domain);
        let ch = r401.challenge(alg);
        let req = self.register_answering(user, domain, &ch, user, password, 1, expires);
        self.transact(&req)
    }
}

/// Asserts a response code with the full response in the message.
#[track_caller]
pub fn assert_code(r: &Response, code: u16, what: &str) {
    assert_eq!(
        r.code,
        code,
        "{what}: expected {code}, got {} {}:\n{}",
        r.code,
        r.reason,
        r.text()
    );
}

pub mod netns;
pub mod sip_peer;
