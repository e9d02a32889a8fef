//! sipedge-loadgen: a bounded REGISTER load generator for loopback benchmarks.
//!
//! Each registration is REGISTER (no auth) -> 401 -> REGISTER with a digest Authorization
//! (RFC 2617/7616, qop=auth, nc=00000001, fresh cnonce) -> 200. It goes past sipp's ~38k reg/s
//! ceiling on the reference box by batching syscalls (sendmmsg/recvmmsg on non-blocking,
//! connected UDP sockets) and keeping all state in preallocated tables: one slot per in-flight
//! registration, found again from the number in the response's Call-ID.
//!
//! Safety rails: the target must be a loopback address (127.0.0.0/8 or ::1); every run is
//! bounded by `--count` and by `--duration` (hard stop), and exits by itself.
//!
//! Output: one JSON line on stdout (see `Report::json`). Progress/errors go to stderr.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use sipedge::sip::digest::{self, Algorithm, Qop};

const USAGE: &str = "\
sipedge-loadgen: bounded REGISTER+digest load generator (loopback targets only)

usage: sipedge-loadgen [options]
  --target ADDR:PORT     SIP server (127.0.0.0/8 or [::1] only)   [127.0.0.1:5070]
  --count N              total registrations to attempt             [100000]
  --duration S           hard stop after S seconds (float)          [60]
  --rate R               target registrations/s; 0 = flat out       [0]
  --window W             max registrations in flight                [2000]
  --sockets N            UDP sockets (ephemeral 127.0.0.1 ports)    [4]
  --users FILE           users, one per line: `user;password`, or sipp -inf lines
                         `user;[authentication username=U password=P]`; a first line
                         SEQUENTIAL/RANDOM/USERS and lines starting with # are skipped
  --gen-users N          instead of --users: N users named <prefix>%05d  [10000]
  --user-prefix P        prefix for generated users                 [user]
  --password PW          password shared by generated users         [password]
  --domain D             host of Request-URI, From, To              [sbc.test]
  --expires S            Expires of the REGISTER                    [3600]
  --prefer ALG           md5 | sha256 | first: which challenge to answer when several
                         are offered (md5/sha256 fall back to the first supported) [md5]
  --retrans-ms MS        retransmit an unanswered request after MS  [500]
  --timeout-ms MS        give a registration up after MS            [5000]
  --batch B              datagrams per sendmmsg/recvmmsg (<= 64)    [32]
  --label L              label copied into the JSON line            [loadgen]
  --dump N               print the first N unexpected responses to stderr [0]
  -h, --help
Output: one JSON line: offered_rate, started, ok, failed, retrans, wall_s, ok_per_s,
p50_us/p99_us/p999_us/max_us (full registration, first send -> 200), loadgen CPU.";

const MSG_MAX: usize = 1400;
const RECV_MAX: usize = 4096;
const MAX_BATCH: usize = 64;
const MAX_LAT_SAMPLES: usize = 20_000_000;
const UNUSED: u64 = u64::MAX;
/// Authenticated attempts answered 401 stale=true that are retried with the fresh nonce.
const MAX_STALE_RETRIES: u8 = 3;

struct Args {
    target: SocketAddr,
    count: u64,
    duration: Duration,
    rate: f64,
    window: usize,
    sockets: usize,
    users_file: Option<String>,
    gen_users: usize,
    user_prefix: String,
    password: String,
    domain: String,
    expires: u32,
    prefer: Prefer,
    retrans: Duration,
    timeout: Duration,
    batch: usize,
    label: String,
    dump: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Prefer {
    Md5,
    Sha256,
    First,
}

fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        target: "127.0.0.1:5070".parse().unwrap(),
        count: 100_000,
        duration: Duration::from_secs(60),
        rate: 0.0,
        window: 2000,
        sockets: 4,
        users_file: None,
        gen_users: 10_000,
        user_prefix: "user".into(),
        password: "password".into(),
        domain: "sbc.test".into(),
        expires: 3600,
        prefer: Prefer::Md5,
        retrans: Duration::from_millis(500),
        timeout: Duration::from_millis(5000),
        batch: 32,
        label: "loadgen".into(),
        dump: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let val = it
            .next()
            .unwrap_or_else(|| die(&format!("{flag} needs a value (see --help)")));
        let num = |v: &str| -> f64 {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .unwrap_or_else(|| die(&format!("{flag}: not a non-negative number: {v}")))
        };
        match flag.as_str() {
            "--target" => {
                a.target = val
                    .parse()
                    .unwrap_or_else(|_| die(&format!("--target: not ADDR:PORT: {val}")))
            }
            "--count" => a.count = num(&val) as u64,
            "--duration" => a.duration = Duration::from_secs_f64(num(&val)),
            "--rate" => a.rate = num(&val),
            "--window" => a.window = num(&val) as usize,
            "--sockets" => a.sockets = num(&val) as usize,
            "--users" => a.users_file = Some(val),
            "--gen-users" => a.gen_users = num(&val) as usize,
            "--user-prefix" => a.user_prefix = val,
            "--password" => a.password = val,
            "--domain" => a.domain = val,
            "--expires" => a.expires = num(&val) as u32,
            "--prefer" => {
                a.prefer = match val.to_ascii_lowercase().as_str() {
                    "md5" => Prefer::Md5,
                    "sha256" | "sha-256" => Prefer::Sha256,
                    "first" => Prefer::First,
                    _ => die("--prefer: md5 | sha256 | first"),
                }
            }
            "--retrans-ms" => a.retrans = Duration::from_millis(num(&val) as u64),
            "--timeout-ms" => a.timeout = Duration::from_millis(num(&val) as u64),
            "--batch" => a.batch = num(&val) as usize,
            "--label" => a.label = val,
            "--dump" => a.dump = num(&val) as u32,
            _ => die(&format!("unknown option {flag} (see --help)")),
        }
    }
    // Never aim load anywhere but this machine's loopback.
    let loopback = match a.target.ip() {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
    };
    if !loopback {
        die(&format!(
            "refusing target {}: only 127.0.0.0/8 and ::1 are allowed",
            a.target
        ));
    }
    if a.target.port() == 0 {
        die("--target: port 0");
    }
    if a.count == 0 || a.duration.is_zero() {
        die("--count and --duration must be > 0");
    }
    a.window = a.window.clamp(1, 1_000_000);
    a.sockets = a.sockets.clamp(1, 256);
    a.batch = a.batch.clamp(1, MAX_BATCH);
    if a.retrans.is_zero() {
        a.retrans = Duration::from_millis(500);
    }
    a
}

struct User {
    name: String,
    password: String,
}

fn load_users(a: &Args) -> Vec<User> {
    let Some(path) = &a.users_file else {
        return (0..a.gen_users.max(1))
            .map(|i| User {
                name: format!("{}{:05}", a.user_prefix, i),
                password: a.password.clone(),
            })
            .collect();
    };
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| die(&format!("--users {path}: {e}")));
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if i == 0 && matches!(line, "SEQUENTIAL" | "RANDOM" | "USERS") {
            continue;
        }
        let mut fields = line.splitn(2, ';');
        let first = fields.next().unwrap_or("").trim();
        let rest = fields.next().unwrap_or("").trim();
        let user = if let Some(inner) = rest
            .strip_prefix("[authentication")
            .and_then(|r| r.strip_suffix(']'))
        {
            // sipp keyword form: username=U password=P (either order, space separated)
            let mut u = first.to_string();
            let mut p = String::new();
            for kv in inner.split_whitespace() {
                if let Some(v) = kv.strip_prefix("username=") {
                    u = v.to_string();
                } else if let Some(v) = kv.strip_prefix("password=") {
                    p = v.to_string();
                }
            }
            User {
                name: u,
                password: p,
            }
        } else {
            User {
                name: first.to_string(),
                password: rest.split(';').next().unwrap_or("").to_string(),
            }
        };
        if user.name.is_empty() {
            die(&format!("--users {path}:{}: empty user name", i + 1));
        }
        users.push(user);
    }
    if users.is_empty() {
        die(&format!("--users {path}: no users"));
    }
    users
}

/// One in-flight registration. `seq == UNUSED` marks a free slot.
struct Slot {
    seq: u64,
    user: u32,
    /// The CSeq awaited: 1 = the challenge, 2 = the 200 (3, 4 after stale=true retries)
    phase: u8,
    queued: bool,
    start_ns: u64,
    sent_ns: u64,
    len: u16,
}

struct Stats {
    started: u64,
    ok: u64,
    failed_timeout: u64,
    failed_status: u64,
    failed_challenge: u64,
    retrans: u64,
    stale: u64,
    stray: u64,
    codes: Vec<(u16, u64)>,
    lat_us: Vec<u32>,
}

impl Stats {
    fn code(&mut self, c: u16) {
        match self.codes.iter_mut().find(|(k, _)| *k == c) {
            Some(e) => e.1 += 1,
            None => self.codes.push((c, 1)),
        }
    }
}

/// A parsed digest challenge, borrowing from the receive buffer.
#[derive(Default)]
struct Challenge<'a> {
    realm: &'a [u8],
    nonce: &'a [u8],
    opaque: Option<&'a [u8]>,
    qop_auth: bool,
    alg: Option<Algorithm>,
    stale: bool,
}

/// Parses `Digest k=v, k="v", ...`; None if not Digest or the algorithm is unsupported.
fn parse_challenge(v: &[u8]) -> Option<Challenge<'_>> {
    let v = trim(v);
    if v.len() < 7 || !v[..6].eq_ignore_ascii_case(b"Digest") || !v[6].is_ascii_whitespace() {
        return None;
    }
    let mut c = Challenge {
        alg: Some(Algorithm::Md5),
        ..Default::default()
    };
    let mut have_nonce = false;
    let mut i = 7;
    while i < v.len() {
        while i < v.len() && (v[i] == b',' || v[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < v.len() && v[i] != b'=' && v[i] != b',' {
            i += 1;
        }
        let key = trim(&v[ks..i]);
        if i >= v.len() || v[i] == b',' {
            continue;
        }
        i += 1; // '='
        while i < v.len() && v[i].is_ascii_whitespace() {
            i += 1;
        }
        let val;
        if i < v.len() && v[i] == b'"' {
            i += 1;
            let vs = i;
            while i < v.len() && v[i] != b'"' {
                if v[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            val = &v[vs..i.min(v.len())];
            i += 1;
        } else {
            let vs = i;
            while i < v.len() && v[i] != b',' {
                i += 1;
            }
            val = trim(&v[vs..i]);
        }
        if key.eq_ignore_ascii_case(b"realm") {
            c.realm = val;
        } else if key.eq_ignore_ascii_case(b"nonce") {
            c.nonce = val;
            have_nonce = true;
        } else if key.eq_ignore_ascii_case(b"opaque") {
            c.opaque = Some(val);
        } else if key.eq_ignore_ascii_case(b"qop") {
            c.qop_auth = val
                .split(|b| *b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"auth"));
        } else if key.eq_ignore_ascii_case(b"algorithm") {
            c.alg = Algorithm::parse(val);
        } else if key.eq_ignore_ascii_case(b"stale") {
            c.stale = val.eq_ignore_ascii_case(b"true");
        }
    }
    if !have_nonce {
        return None;
    }
    c.alg?;
    Some(c)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u64;
    }
    Some(v)
}

/// What the loop needs from a response: status, Call-ID (slot and seq), CSeq number, challenges.
struct Response<'a> {
    code: u16,
    slot: usize,
    seq: u64,
    cseq: u64,
    chosen: Option<Challenge<'a>>,
}

fn parse_response(buf: &[u8], prefer: Prefer) -> Option<Response<'_>> {
    if buf.len() < 12 || &buf[..8] != b"SIP/2.0 " {
        return None;
    }
    let code = parse_u64(&buf[8..11])? as u16;
    let mut r = Response {
        code,
        slot: usize::MAX,
        seq: UNUSED,
        cseq: 0,
        chosen: None,
    };
    let mut first_ok: Option<Challenge> = None;
    let mut lines = buf.split(|b| *b == b'\n').skip(1);
    for line in &mut lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"Call-ID") || name.eq_ignore_ascii_case(b"i") {
            // Call-ID: lg<slot>.<seq>@sipedge-loadgen
            let v = value.strip_prefix(b"lg")?;
            let dot = v.iter().position(|b| *b == b'.')?;
            let at = v.iter().position(|b| *b == b'@').unwrap_or(v.len());
            if at <= dot {
                return None;
            }
            r.slot = parse_u64(&v[..dot])? as usize;
            r.seq = parse_u64(&v[dot + 1..at])?;
        } else if name.eq_ignore_ascii_case(b"CSeq") {
            let end = value
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(value.len());
            r.cseq = parse_u64(&value[..end])?;
        } else if code == 401 && name.eq_ignore_ascii_case(b"WWW-Authenticate") {
            if let Some(c) = parse_challenge(value) {
                let want = match prefer {
                    Prefer::Md5 => Some(Algorithm::Md5),
                    Prefer::Sha256 => Some(Algorithm::Sha256),
                    Prefer::First => None,
                };
                if r.chosen.is_none() && want.is_some() && c.alg == want {
                    r.chosen = Some(c);
                } else if first_ok.is_none() {
                    first_ok = Some(c);
                }
            }
        }
    }
    if r.chosen.is_none() {
        r.chosen = first_ok;
    }
    if r.slot == usize::MAX {
        return None;
    }
    Some(r)
}

struct Ctx<'u> {
    users: &'u [User],
    domain: String,
    expires: u32,
    local: Vec<SocketAddr>,
    run_id: u32,
}

impl Ctx<'_> {
    /// Writes the REGISTER for `slot` into `out`; returns its length. `auth` = the challenge to answer.
    fn build(
        &self,
        out: &mut [u8],
        slot: usize,
        s: &Slot,
        nsock: usize,
        auth: Option<&Challenge<'_>>,
    ) -> Option<usize> {
        let user = &self.users[s.user as usize];
        let local = self.local[slot % nsock];
        let cseq = s.phase;
        let mut w = std::io::Cursor::new(out);
        let host = match local.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let port = local.port();
        let d = &self.domain;
        let u = &user.name;
        let seq = s.seq;
        write!(
            w,
            "REGISTER sip:{d} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-{run:x}-{seq}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{u}@{d}>;tag=lg{seq}\r\n\
             To: <sip:{u}@{d}>\r\n\
             Call-ID: lg{slot}.{seq}@sipedge-loadgen\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{u}@{host}:{port}>\r\n\
             Expires: {exp}\r\n\
             User-Agent: sipedge-loadgen\r\n",
            run = self.run_id,
            exp = self.expires,
        )
        .ok()?;
        if let Some(c) = auth {
            let alg = c.alg.unwrap_or(Algorithm::Md5);
            let ha1 = digest::ha1(alg, u.as_bytes(), c.realm, user.password.as_bytes());
            let mut uri = [0u8; 256];
            let uri_len = {
                let mut uw = std::io::Cursor::new(&mut uri[..]);
                write!(uw, "sip:{d}").ok()?;
                uw.position() as usize
            };
            let uri = &uri[..uri_len];
            let mut cnonce = [0u8; 16];
            let cn = (seq ^ ((self.run_id as u64) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for (i, b) in cnonce.iter_mut().enumerate() {
                *b = b"0123456789abcdef"[((cn >> (60 - 4 * i)) & 15) as usize];
            }
            let qop = c.qop_auth.then_some(Qop {
                qop: b"auth",
                nc: b"00000001",
                cnonce: &cnonce,
            });
            let resp = digest::response(alg, ha1.as_bytes(), b"REGISTER", uri, c.nonce, qop);
            w.write_all(b"Authorization: Digest username=\"").ok()?;
            w.write_all(u.as_bytes()).ok()?;
            w.write_all(b"\", realm=\"").ok()?;
            w.write_all(c.realm).ok()?;
            w.write_all(b"\", nonce=\"").ok()?;
            w.write_all(c.nonce).ok()?;
            w.write_all(b"\", uri=\"").ok()?;
            w.write_all(uri).ok()?;
            w.write_all(b"\", response=\"").ok()?;
            w.write_all(resp.as_bytes()).ok()?;
            w.write_all(b"\", algorithm=").ok()?;
            w.write_all(alg.name().as_bytes()).ok()?;
            if let Some(o) = c.opaque {
                w.write_all(b", opaque=\"").ok()?;
                w.write_all(o).ok()?;
                w.write_all(b"\"").ok()?;
            }
            if qop.is_some() {
                w.write_all(b", qop=auth, nc=00000001, cnonce=\"").ok()?;
                w.write_all(&cnonce).ok()?;
                w.write_all(b"\"").ok()?;
            }
            w.write_all(b"\r\n").ok()?;
        }
        w.write_all(b"Content-Length: 0\r\n\r\n").ok()?;
        Some(w.position() as usize)
    }
}

fn rusage_self() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

fn open_socket(target: SocketAddr) -> std::io::Result<(UdpSocket, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, bind): (Domain, SocketAddr) = match target {
        SocketAddr::V4(_) => (
            Domain::IPV4,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        ),
        SocketAddr::V6(_) => (
            Domain::IPV6,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
        ),
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&bind.into())?;
    // Connected: the kernel fills the destination and filters replies to this server only.
    s.connect(&target.into())?;
    s.set_nonblocking(true)?;
    let u: UdpSocket = s.into();
    let local = u.local_addr()?;
    Ok((u, local))
}

fn pct(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn main() {
    let a = parse_args();
    let users = load_users(&a);
    let nsock = a.sockets;
    let mut socks = Vec::with_capacity(nsock);
    let mut local = Vec::with_capacity(nsock);
    for _ in 0..nsock {
        let (s, l) = open_socket(a.target).unwrap_or_else(|e| die(&format!("socket: {e}")));
        socks.push(s);
        local.push(l);
    }
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let ctx = Ctx {
        users: &users,
        domain: a.domain.clone(),
        expires: a.expires,
        local,
        run_id: rand::random::<u32>(),
    };

    // Preallocated tables: slot state, one message buffer per slot, a send queue per socket.
    let w = a.window;
    let mut slots: Vec<Slot> = (0..w)
        .map(|_| Slot {
            seq: UNUSED,
            user: 0,
            phase: 0,
            queued: false,
            start_ns: 0,
            sent_ns: 0,
            len: 0,
        })
        .collect();
    let mut msgs = vec![0u8; w * MSG_MAX];
    // Free slots, used so that a socket's slots are slot % nsock.
    let mut free: Vec<u32> = (0..w as u32).rev().collect();
    let mut queues: Vec<VecDeque<u32>> = (0..nsock).map(|_| VecDeque::with_capacity(w)).collect();
    let mut rbufs = vec![[0u8; RECV_MAX]; a.batch];
    let mut st = Stats {
        started: 0,
        ok: 0,
        failed_timeout: 0,
        failed_status: 0,
        failed_challenge: 0,
        retrans: 0,
        stale: 0,
        stray: 0,
        codes: Vec::new(),
        lat_us: Vec::with_capacity((a.count as usize).min(MAX_LAT_SAMPLES)),
    };
    let mut in_flight = 0usize;
    let mut next_user = 0usize;
    let mut next_by_sock = vec![0usize; nsock];
    let (cpu_u0, cpu_s0) = rusage_self();
    let t0 = Instant::now();
    let ns = |t: Instant| t.duration_since(t0).as_nanos() as u64;
    let deadline = a.duration.as_nanos() as u64;
    let retrans_ns = a.retrans.as_nanos() as u64;
    let timeout_ns = a.timeout.as_nanos() as u64;
    let mut last_scan = 0u64;
    let mut send_errors = 0u64;
    let mut last_start_ns = 0u64;
    let mut stopped_by_duration = false;
    let mut dumped = 0u32;
    let mut ready = vec![true; nsock];
    let mut pfds: Vec<libc::pollfd> = vec![
        libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0
        };
        nsock
    ];

    loop {
        let now = ns(Instant::now());
        if now >= deadline {
            stopped_by_duration = st.started < a.count || in_flight > 0;
            break;
        }
        let done = st.ok + st.failed_timeout + st.failed_status + st.failed_challenge;
        if st.started >= a.count && in_flight == 0 && done >= st.started {
            break;
        }
        let mut busy = false;

        // 1. Start new registrations (paced or flat out), bounded by the window.
        let allowed = if a.rate > 0.0 {
            ((a.rate * now as f64 / 1e9) as u64 + 1).min(a.count)
        } else {
            a.count
        };
        let mut n_new = 0;
        while st.started < allowed && n_new < 4 * a.batch * nsock {
            let Some(slot) = free.pop() else { break };
            let slot = slot as usize;
            let s = &mut slots[slot];
            s.seq = st.started;
            // A PBX keeps its 4-tuple: user u always sends from socket u % nsock, as a real
            // PBX sends from one address (the server may keep its state where it lands).
            let sock = slot % nsock;
            let per_sock = (users.len() + nsock - 1 - sock) / nsock;
            s.user = if per_sock == 0 {
                (next_user % users.len()) as u32
            } else {
                let k = next_by_sock[sock];
                next_by_sock[sock] += 1;
                (sock + nsock * (k % per_sock)) as u32
            };
            next_user += 1;
            s.phase = 1;
            s.start_ns = now;
            s.sent_ns = now;
            let buf = &mut msgs[slot * MSG_MAX..(slot + 1) * MSG_MAX];
            match ctx.build(buf, slot, &slots[slot], nsock, None) {
                Some(len) => {
                    let s = &mut slots[slot];
                    s.len = len as u16;
                    s.queued = true;
                    queues[slot % nsock].push_back(slot as u32);
                    in_flight += 1;
                }
                None => die("REGISTER does not fit in a datagram buffer (user/domain too long)"),
            }
            st.started += 1;
            last_start_ns = now;
            n_new += 1;
            busy = true;
        }

        // 2. Retransmissions and timeouts (scan every 10 ms).
        if now - last_scan >= 10_000_000 {
            last_scan = now;
            for (i, s) in slots.iter_mut().enumerate() {
                if s.seq == UNUSED {
                    continue;
                }
                if now - s.start_ns >= timeout_ns {
                    st.failed_timeout += 1;
                    s.seq = UNUSED;
                    if !s.queued {
                        free.push(i as u32);
                    }
                    in_flight -= 1;
                    continue;
                }
                if !s.queued && now - s.sent_ns >= retrans_ns {
                    s.queued = true;
                    s.sent_ns = now;
                    queues[i % nsock].push_back(i as u32);
                    st.retrans += 1;
                }
            }
        }

        // 3. Flush send queues with sendmmsg.
        for (q, queue) in queues.iter_mut().enumerate() {
            while !queue.is_empty() {
                let mut iov: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
                let mut hdr: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
                let mut n = 0;
                for &slot in queue.iter().take(a.batch) {
                    let s = &slots[slot as usize];
                    if s.seq == UNUSED {
                        // timed out while queued: skip it
                        iov[n].iov_len = 0;
                    } else {
                        iov[n].iov_base =
                            msgs[slot as usize * MSG_MAX..].as_ptr() as *mut libc::c_void;
                        iov[n].iov_len = s.len as usize;
                    }
                    n += 1;
                }
                // Compact: drop dead entries from the batch.
                let mut m = 0;
                for k in 0..n {
                    if iov[k].iov_len == 0 {
                        continue;
                    }
                    iov[m] = iov[k];
                    m += 1;
                }
                for k in 0..m {
                    hdr[k].msg_hdr.msg_iov = &mut iov[k];
                    hdr[k].msg_hdr.msg_iovlen = 1;
                }
                let sent = if m > 0 {
                    // SAFETY: hdr/iov point into buffers that outlive the call.
                    unsafe {
                        libc::sendmmsg(fds[q], hdr.as_mut_ptr(), m as u32, libc::MSG_DONTWAIT)
                    }
                } else {
                    0
                };
                if sent < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        && e.raw_os_error() != Some(libc::ECONNREFUSED)
                    {
                        send_errors += 1;
                    }
                    break;
                }
                // Pop the sent entries (and dead ones met on the way), in queue order.
                let sent = sent as usize;
                let mut live_popped = 0;
                while let Some(&slot) = queue.front() {
                    let s = &mut slots[slot as usize];
                    if s.seq == UNUSED {
                        s.queued = false;
                        queue.pop_front();
                        free.push(slot);
                        continue;
                    }
                    if live_popped == sent {
                        break;
                    }
                    s.queued = false;
                    s.sent_ns = now;
                    queue.pop_front();
                    live_popped += 1;
                }
                busy = true;
                if sent < m {
                    break;
                }
            }
        }

        // 4. Receive with recvmmsg, process responses.
        for (q, &fd) in fds.iter().enumerate() {
            if !ready[q] {
                continue;
            }
            for _round in 0..4 {
                let mut iov: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
                let mut hdr: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
                for k in 0..a.batch {
                    iov[k].iov_base = rbufs[k].as_mut_ptr() as *mut libc::c_void;
                    iov[k].iov_len = RECV_MAX;
                    hdr[k].msg_hdr.msg_iov = &mut iov[k];
                    hdr[k].msg_hdr.msg_iovlen = 1;
                }
                // SAFETY: buffers live for the call.
                let n = unsafe {
                    libc::recvmmsg(
                        fd,
                        hdr.as_mut_ptr(),
                        a.batch as u32,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if n <= 0 {
                    break;
                }
                busy = true;
                let rnow = ns(Instant::now());
                for k in 0..n as usize {
                    let len = hdr[k].msg_len as usize;
                    let Some(r) = parse_response(&rbufs[k][..len], a.prefer) else {
                        st.stray += 1;
                        continue;
                    };
                    if r.slot >= w
                        || slots[r.slot].seq != r.seq
                        || r.cseq != slots[r.slot].phase as u64
                    {
                        st.stray += 1; // late retransmission or an answer to a finished phase
                        continue;
                    }
                    if r.code < 200 {
                        continue;
                    }
                    let slot = r.slot;
                    let finish = |slots: &mut Vec<Slot>, free: &mut Vec<u32>| {
                        let s = &mut slots[slot];
                        s.seq = UNUSED;
                        if !s.queued {
                            free.push(slot as u32);
                        }
                    };
                    // A 401 to an authenticated request with stale=true: the nonce was fine but is
                    // no longer usable (RFC 2617 §3.2.1: retry with the new nonce, same user).
                    let stale_retry = slots[slot].phase >= 2
                        && r.code == 401
                        && r.chosen.as_ref().is_some_and(|c| c.stale)
                        && slots[slot].phase <= MAX_STALE_RETRIES;
                    if stale_retry {
                        st.stale += 1;
                    }
                    match (slots[slot].phase, r.code) {
                        (_, 401) if slots[slot].phase == 1 || stale_retry => {
                            let Some(ch) = r.chosen.as_ref() else {
                                st.failed_challenge += 1;
                                st.code(401);
                                finish(&mut slots, &mut free);
                                in_flight -= 1;
                                continue;
                            };
                            let buf = &mut msgs[slot * MSG_MAX..(slot + 1) * MSG_MAX];
                            slots[slot].phase += 1;
                            match ctx.build(buf, slot, &slots[slot], nsock, Some(ch)) {
                                Some(len) => {
                                    let s = &mut slots[slot];
                                    s.len = len as u16;
                                    s.sent_ns = rnow;
                                    if !s.queued {
                                        s.queued = true;
                                        queues[slot % nsock].push_back(slot as u32);
                                    }
                                }
                                None => {
                                    st.failed_challenge += 1;
                                    finish(&mut slots, &mut free);
                                    in_flight -= 1;
                                }
                            }
                        }
                        (p, c) if p >= 2 && (200..300).contains(&c) => {
                            st.ok += 1;
                            if st.lat_us.len() < st.lat_us.capacity() {
                                let us = (rnow.saturating_sub(slots[slot].start_ns) / 1000)
                                    .min(u32::MAX as u64);
                                st.lat_us.push(us as u32);
                            }
                            finish(&mut slots, &mut free);
                            in_flight -= 1;
                        }
                        (_, c) => {
                            if dumped < a.dump {
                                dumped += 1;
                                eprintln!(
                                    "unexpected {c} in phase {}:\n{}",
                                    slots[slot].phase,
                                    String::from_utf8_lossy(&rbufs[k][..len])
                                );
                            }
                            st.failed_status += 1;
                            st.code(c);
                            finish(&mut slots, &mut free);
                            in_flight -= 1;
                        }
                    }
                }
                if (n as usize) < a.batch {
                    break;
                }
            }
        }

        // 5. Idle: sleep until input arrives or 1 ms passes, then read only the sockets that have
        // input. While busy, read every socket.
        if busy {
            ready.iter_mut().for_each(|r| *r = true);
        } else {
            // 1 ms granularity on purpose: waking for every paced start costs more CPU (and
            // disturbs the server more) than starting them in small bursts.
            let wait_ns: u64 = 1_000_000;
            for (p, &fd) in pfds.iter_mut().zip(&fds) {
                *p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
            }
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: wait_ns as libc::c_long,
            };
            // SAFETY: pfds is a valid array of nsock entries; ts outlives the call.
            let n = unsafe {
                libc::ppoll(
                    pfds.as_mut_ptr(),
                    pfds.len() as libc::nfds_t,
                    &ts,
                    std::ptr::null(),
                )
            };
            for (r, p) in ready.iter_mut().zip(&pfds) {
                *r = n > 0 && p.revents != 0;
            }
        }
    }
    let _ = last_start_ns;

    let wall = t0.elapsed().as_secs_f64();
    let (cpu_u1, cpu_s1) = rusage_self();
    let abandoned = in_flight as u64;
    st.lat_us.sort_unstable();
    let failed = st.failed_timeout + st.failed_status + st.failed_challenge;
    let mut codes = String::from("{");
    st.codes.sort_unstable();
    for (i, (c, n)) in st.codes.iter().enumerate() {
        if i > 0 {
            codes.push(',');
        }
        codes.push_str(&format!("\"{c}\":{n}"));
    }
    codes.push('}');
    let opt = |v: Option<u32>| v.map_or("null".to_string(), |x| x.to_string());
    let cpu = (cpu_u1 - cpu_u0) + (cpu_s1 - cpu_s0);
    let fail_pct = if st.started > 0 {
        100.0 * (failed + abandoned) as f64 / st.started as f64
    } else {
        0.0
    };
    println!(
        "{{\"label\":\"{label}\",\"target\":\"{target}\",\"sockets\":{nsock},\"window\":{w},\
\"offered_rate\":{rate},\"count\":{count},\"started\":{started},\"started_per_s\":{sps:.1},\
\"ok\":{ok},\"failed\":{failed},\"failed_timeout\":{ft},\"failed_status\":{fs},\"failed_challenge\":{fc},\
\"abandoned\":{abandoned},\"fail_pct\":{fail_pct:.3},\"codes\":{codes},\"retrans\":{retrans},\"stale\":{stale},\"stray\":{stray},\
\"send_errors\":{send_errors},\"stopped_by_duration\":{sbd},\"wall_s\":{wall:.3},\"ok_per_s\":{okps:.1},\
\"p50_us\":{p50},\"p90_us\":{p90},\"p99_us\":{p99},\"p999_us\":{p999},\"max_us\":{max},\
\"cpu_user_s\":{cu:.3},\"cpu_sys_s\":{cs:.3},\"cpu_pct\":{cpct:.1},\"cpu_us_per_ok\":{cpo}}}",
        label = a.label.replace('"', "'"),
        target = a.target,
        rate = a.rate,
        count = a.count,
        started = st.started,
        sps = st.started as f64 / wall,
        ok = st.ok,
        ft = st.failed_timeout,
        fs = st.failed_status,
        fc = st.failed_challenge,
        retrans = st.retrans,
        stale = st.stale,
        stray = st.stray,
        sbd = stopped_by_duration,
        okps = st.ok as f64 / wall,
        p50 = opt(pct(&st.lat_us, 0.50)),
        p90 = opt(pct(&st.lat_us, 0.90)),
        p99 = opt(pct(&st.lat_us, 0.99)),
        p999 = opt(pct(&st.lat_us, 0.999)),
        max = opt(st.lat_us.last().copied()),
        cu = cpu_u1 - cpu_u0,
        cs = cpu_s1 - cpu_s0,
        cpct = 100.0 * cpu / wall,
        cpo = if st.ok > 0 { format!("{:.2}", 1e6 * cpu / st.ok as f64) } else { "null".into() },
    );
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kamailio_style_401() {
        let msg = b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bK-1\r\n\
From: <sip:u@sbc.test>;tag=lg7\r\nTo: <sip:u@sbc.test>;tag=x\r\nCall-ID: lg12.345@sipedge-loadgen\r\n\
CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"sbc.test\", nonce=\"abc,def\", qop=\"auth\"\r\n\
WWW-Authenticate: Digest realm=\"sbc.test\", nonce=\"n2\", opaque=\"op\", qop=\"auth-int,auth\", algorithm=SHA-256\r\n\
Content-Length: 0\r\n\r\n";
        let r = parse_response(msg, Prefer::Md5).unwrap();
        assert_eq!((r.code, r.slot, r.seq, r.cseq), (401, 12, 345, 1));
        let c = r.chosen.unwrap();
        assert_eq!(c.nonce, b"abc,def");
        assert_eq!(c.alg, Some(Algorithm::Md5));
        assert!(c.qop_auth && !c.stale);
        let r = parse_response(msg, Prefer::Sha256).unwrap();
        let c = r.chosen.unwrap();
        assert_eq!(
            (c.nonce, c.opaque, c.alg),
            (&b"n2"[..], Some(&b"op"[..]), Some(Algorithm::Sha256))
        );
        assert!(c.qop_auth);
    }

    #[test]
    fn unsupported_algorithm_is_skipped() {
        assert!(parse_challenge(b"Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess").is_none());
        assert!(parse_challenge(b"Basic realm=\"r\"").is_none());
        let st = parse_challenge(b"Digest realm=\"r\", nonce=\"n\", stale=TRUE").unwrap();
        assert!(st.stale);
        let c = parse_challenge(b"digest nonce=n,realm=r").unwrap();
        assert_eq!(
            (c.realm, c.nonce, c.qop_auth),
            (&b"r"[..], &b"n"[..], false)
        );
    }

    #[test]
    fn builds_verifiable_authorization() {
        let users = vec![User {
            name: "user00001".into(),
            password: "pw".into(),
        }];
        let ctx = Ctx {
            users: &users,
            domain: "sbc.test".into(),
            expires: 60,
            local: vec!["127.0.0.1:40000".parse().unwrap()],
            run_id: 1,
        };
        let slot = Slot {
            seq: 9,
            user: 0,
            phase: 2,
            queued: false,
            start_ns: 0,
            sent_ns: 0,
            len: 0,
        };
        let ch = Challenge {
            realm: b"sbc.test",
            nonce: b"nnn",
            opaque: Some(b"oo"),
            qop_auth: true,
            alg: Some(Algorithm::Md5),
            stale: false,
        };
        let mut buf = [0u8; MSG_MAX];
        let n = ctx.build(&mut buf, 0, &slot, 1, Some(&ch)).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.contains("Call-ID: lg0.9@sipedge-loadgen\r\n"));
        assert!(text.contains("CSeq: 2 REGISTER\r\n"));
        let auth = text
            .lines()
            .find(|l| l.starts_with("Authorization:"))
            .unwrap();
        let get = |k: &str| {
            let i = auth.find(&format!("{k}=")).unwrap() + k.len() + 1;
            let rest = &auth[i..];
            let rest = rest.strip_prefix('"').unwrap_or(rest);
            rest.split(['"', ',']).next().unwrap().to_string()
        };
        let ha1 = digest::ha1(Algorithm::Md5, b"user00001", b"sbc.test", b"pw");
        let cn = get("cnonce");
        let q = Qop {
            qop: b"auth",
            nc: b"00000001",
            cnonce: cn.as_bytes(),
        };
        assert!(digest::verify(
            Algorithm::Md5,
            ha1.as_bytes(),
            b"REGISTER",
            b"sip:sbc.test",
            b"nnn",
            Some(q),
            get("response").as_bytes()
        ));
        assert_eq!(get("opaque"), "oo");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }
}
