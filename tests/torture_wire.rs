//! RFC 4475 torture messages on the wire (SPEC §3.1): every file of shared/torture/rfc4475 is sent,
//! byte for byte, to a running sipedge over UDP. The server must survive all of them, answer the
//! invalid requests that still have a parseable Via with `400 Bad Request`, never answer a
//! response or a message without a Via, and keep serving afterwards.
//!
//! Routing: many of these messages carry a Via without `rport` whose sent-by is some example host
//! (port 5060 unless given). RFC 3261 §18.2.2 sends the response to the source IP (`received`)
//! and the sent-by port, so each file is sent from its own loopback IP (127.X.Y.n, unique to this
//! run) bound to exactly that port: the answer then reaches the test socket whether or not the
//! server honours `rport`, and nothing leaves 127.0.0.0/8.
//!
//! Per-file expectations (the table below), decided from RFC 4475, RFC 3261 and SPEC §3.1:
//! - `Code(400)`: start line or a mandatory header (Via, From, To, Call-ID, CSeq, Content-Length,
//!   CSeq method) is unparseable or inconsistent while the Via parses: LTGTRURI, LWSRURI (start
//!   line), NCL (negative Content-Length), CLERR (Content-Length beyond the datagram: RFC 3261
//!   §18.3 "the element SHOULD generate a 400"), SCALAR02 (CSeq beyond 2^32), QUOTBAL
//!   (unterminated quote in To), MISMATCH01/02 (CSeq method), INSUF (From, To, Call-ID missing),
//!   MULTI01 (several CSeq/Call-ID/From/To), MCL01 (two Content-Length values). SCALAR02's Via
//!   says TCP, but it arrived over UDP and is answered over UDP.
//! - `Code(200)` / `Code(401)`: valid OPTIONS are answered by sipedge itself (200), valid
//!   REGISTERs without credentials are challenged (401) — proof that the tortuous parts parsed.
//! - `NotBad`: valid (or only semantically odd) requests: any answer but 400, or none.
//! - `Silence`: responses (never answered) and TC_TEST_I (no Via at all).
//! - `Any`: RFC 4475 itself allows a tolerant parser to accept these (LWSSTART, TRWS, BADASPEC,
//!   BADDN, ESCRURI, REGBADCT), or the Via itself is broken (BADINV01), or the right answer is a
//!   code sipedge need not produce (BADVERS 505, UNKSCM/NOVELSC/UNKSM2 416).

mod common;

use common::*;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Code(u16),
    NotBad,
    Silence,
    Any,
}
use Expect::*;

const CASES: &[(&str, Expect)] = &[
    // 3.1.1 valid messages
    ("TC_WSINV.dat", NotBad),
    ("TC_INTMETH.dat", NotBad),
    ("TC_ESC01_V.dat", NotBad),
    ("TC_ESCNULL_V.dat", Code(401)),
    ("TC_ESC02_V.dat", NotBad),
    ("TC_LWSDISP_V.dat", Code(200)),
    ("TC_LONGREQ_V.dat", NotBad),
    ("TC_DBLREQ.dat", Code(401)),
    ("TC_SEMIURI_V.dat", Code(200)),
    ("TC_TRANSPORTS_V.dat", Code(200)),
    ("TC_MPART01.dat", NotBad),
    ("TC_UNREASON_V.dat", Silence),
    ("TC_NOREASON_V.dat", Silence),
    // 3.1.2 invalid messages
    ("TC_BADINV01_I.dat", Any),
    ("TC_CLERR_I.dat", Code(400)),
    ("TC_NCL_I.dat", Code(400)),
    ("TC_SCALAR02_V.dat", Code(400)),
    ("TC_SCALARLG_V.dat", Silence),
    ("TC_QUOTBAL_I.dat", Code(400)),
    ("TC_LTGTRURI_I.dat", Code(400)),
    ("TC_LWSRURI_I.dat", Code(400)),
    ("TC_LWSSTART_V.dat", Any),
    ("TC_TRWS_I.dat", Any),
    ("TC_ESCRURI_V.dat", Any),
    ("TC_BADDATE_V.dat", Any),
    ("TC_REGBADCT_I.dat", Any),
    ("TC_BADASPEC_I.dat", Any),
    ("TC_BADDN_I.dat", Any),
    ("TC_BADVERS_V.dat", Any),
    ("TC_MISMATCH01_V.dat", Code(400)),
    ("TC_MISMATCH02_V.dat", Code(400)),
    ("TC_BIGCODE_V.dat", Silence),
    // 3.2 transaction layer
    ("TC_BADBRANCH_V.dat", Code(200)),
    // 3.3 application layer semantics
    ("TC_INSUF_I.dat", Code(400)),
    ("TC_UNKSCM_V.dat", Any),
    ("TC_NOVELSC_V.dat", Any),
    ("TC_UNKSM2_V.dat", Any),
    ("TC_BEXT01_V.dat", NotBad),
    ("TC_INVUT_V.dat", NotBad),
    ("TC_REGAUT01_V.dat", NotBad),
    ("TC_MULTI01_I.dat", Code(400)),
    ("TC_MCL01_I.dat", Code(400)),
    ("TC_BCAST_V.dat", Silence),
    ("TC_ZEROMF_V.dat", NotBad),
    ("TC_CPARAM01_V.dat", Code(401)),
    ("TC_CPARAM02_V.dat", Code(401)),
    ("TC_REGESCRT_V.dat", Code(401)),
    ("TC_SDP01_V.dat", NotBad),
    // 3.4 backward compatibility
    ("TC_INV2543_I.dat", NotBad),
    // not from RFC 4475
    ("TC_TEST_I.dat", Silence),
];

fn torture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/torture/rfc4475"
    ))
}

/// The sent-by port of the first Via (5060 when absent), read leniently: header names are
/// case-insensitive, `v` is the compact form, lines may be folded and LWS may surround `/`.
fn top_via_port(msg: &[u8]) -> u16 {
    let head_end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(msg.len());
    let head = String::from_utf8_lossy(&msg[..head_end]);
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
    for l in lines.iter().skip(1) {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name != "via" && name != "v" {
            continue;
        }
        let collapsed: String = value.split_whitespace().collect::<Vec<_>>().join(" ");
        let compact = collapsed.replace(" /", "/").replace("/ ", "/");
        let mut words = compact.split(' ');
        let _protocol = words.next();
        let sent_by = words.next().unwrap_or("");
        let sent_by = sent_by.split([';', ',']).next().unwrap_or("");
        let port = if let Some(rest) = sent_by.strip_prefix('[') {
            rest.split_once("]:").and_then(|(_, p)| p.parse().ok())
        } else if sent_by.matches(':').count() == 1 {
            sent_by.rsplit(':').next().and_then(|p| p.parse().ok())
        } else {
            None
        };
        return port.unwrap_or(5060);
    }
    5060
}

/// A UDP socket on `ip:port`, sharing the port with any wildcard socket already bound to it.
fn bind_exact(addr: SocketAddr) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&addr.into()).unwrap_or_else(|e| {
        panic!(
            "cannot bind {addr} for the torture test ({e}); something holds that port exclusively"
        )
    });
    s.set_nonblocking(true).unwrap();
    s.into()
}

#[test]
fn index_lists_exactly_the_files_we_decided_on() {
    let index = std::fs::read_to_string(torture_dir().join("INDEX.tsv")).expect("INDEX.tsv");
    let listed: BTreeSet<String> = index
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(torture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    let decided: BTreeSet<String> = CASES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(listed, on_disk, "INDEX.tsv and the directory disagree");
    assert_eq!(
        decided, on_disk,
        "every torture file needs an expectation in CASES"
    );
}

#[test]
fn torture_messages_do_not_crash_and_get_400_when_due() {
    let mut s = Server::start("");
    // A loopback /16 unique to this process, so parallel runs don't see each other's answers.
    let pid = std::process::id();
    let (x, y) = (100 + (pid % 150) as u8, ((pid / 150) % 250) as u8);

    struct Sent {
        file: &'static str,
        expect: Expect,
        sock: UdpSocket,
        answers: Vec<Response>,
        unparseable: Vec<Vec<u8>>,
    }
    let mut sent = Vec::new();
    for (i, (file, expect)) in CASES.iter().enumerate() {
        let bytes =
            std::fs::read(torture_dir().join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
        let port = top_via_port(&bytes);
        let ip: std::net::IpAddr = format!("127.{x}.{y}.{}", i + 1).parse().unwrap();
        let sock = bind_exact(SocketAddr::new(ip, port));
        sock.send_to(&bytes, s.sip)
            .unwrap_or_else(|e| panic!("send {file}: {e}"));
        sent.push(Sent {
            file,
            expect: *expect,
            sock,
            answers: Vec::new(),
            unparseable: Vec::new(),
        });
        std::thread::sleep(Duration::from_millis(2));
    }

    // Collect: at least 600 ms (for silence), at most 3 s (for the answers that are due).
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        for e in sent.iter_mut() {
            while let Ok((n, from)) = e.sock.recv_from(&mut buf) {
                match Response::parse(&buf[..n], from) {
                    Some(r) => e.answers.push(r),
                    None => e.unparseable.push(buf[..n].to_vec()),
                }
            }
        }
        let all_due_in = sent
            .iter()
            .all(|e| !matches!(e.expect, Code(_)) || !e.answers.is_empty());
        let t = start.elapsed();
        if (all_due_in && t >= Duration::from_millis(600)) || t >= Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    assert!(
        s.is_running(),
        "sipedge died during the torture run; stderr:\n{}",
        s.log()
    );

    let mut failures = Vec::new();
    let mut expected_400 = 0;
    for e in &sent {
        let codes: Vec<u16> = e.answers.iter().map(|r| r.code).collect();
        if !e.unparseable.is_empty() {
            failures.push(format!(
                "{}: sipedge sent a datagram that is not a SIP response: {:?}",
                e.file,
                String::from_utf8_lossy(&e.unparseable[0])
            ));
        }
        // Provisional answers (e.g. 100 Trying to an INVITE) don't count as the verdict.
        let finals: Vec<u16> = codes.iter().copied().filter(|c| *c >= 200).collect();
        let ok = match e.expect {
            Code(c) => {
                if c == 400 {
                    expected_400 += 1;
                }
                finals.first() == Some(&c)
            }
            NotBad => !finals.contains(&400),
            Silence => codes.is_empty(),
            Any => true,
        };
        if !ok {
            let got: Vec<String> = e
                .answers
                .iter()
                .map(|r| {
                    let warning = r
                        .header("warning")
                        .map(|w| format!(" [Warning: {w}]"))
                        .unwrap_or_default();
                    format!("{} {}{warning}", r.code, r.reason)
                })
                .collect();
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                e.file, e.expect, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "torture expectations not met:\n  {}",
        failures.join("\n  ")
    );

    // Still healthy and serving.
    let h = s.health();
    assert_eq!(h.status, 200, "/health after the torture run: {}", h.body);
    let mut c = s.client();
    let probe = c.options();
    assert_code(&c.transact(&probe), 200, "OPTIONS after the torture run");
    // The 400s and the Via-less TC_TEST_I all count as malformed.
    let malformed = s.metric_or_zero("sipedge_sip_malformed_total");
    assert!(
        malformed >= (expected_400 + 1) as f64,
        "sipedge_sip_malformed_total = {malformed}, expected at least {}",
        expected_400 + 1
    );
    assert!(s.is_running());
}

#[test]
fn torture_messages_twice_from_one_source_keep_the_server_alive() {
    // The same bytes again, back to back from a single socket (retransmission paths, transaction
    // table with odd branches), then the server must still serve.
    let mut s = Server::start("");
    // A loopback IP of its own: answers to Vias without rport go to IP:5060 etc., where nobody
    // listens (the /16 of the other test uses .1 to .51 and a different third octet).
    let pid = std::process::id();
    let (x, y) = (
        100 + (pid % 150) as u8,
        (((pid / 150) % 250) as u8).wrapping_add(1),
    );
    let sock = UdpSocket::bind(format!("127.{x}.{y}.250:0")).unwrap();
    for _round in 0..2 {
        for (file, _) in CASES {
            let bytes = std::fs::read(torture_dir().join(file)).unwrap();
            sock.send_to(&bytes, s.sip).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.is_running(), "sipedge died; stderr:\n{}", s.log());
    assert_eq!(s.health().status, 200);
    let mut c = s.client_on("127.0.0.2");
    let probe = c.options();
    assert_code(&c.transact(&probe), 200, "OPTIONS after two torture rounds");
}

#[test]
fn via_port_reader_handles_the_torture_forms() {
    assert_eq!(
        top_via_port(b"INVITE sip:a SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.59:5050;branch=z\r\n\r\n"),
        5050
    );
    assert_eq!(top_via_port(b"INVITE sip:a SIP/2.0\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\r\n"), 5060);
    assert_eq!(
        top_via_port(b"X sip:a SIP/2.0\r\nv: SIP/2.0/UDP [2001:db8::9]:5070;rport\r\n\r\n"),
        5070
    );
    let quotbal = std::fs::read(torture_dir().join("TC_QUOTBAL_I.dat")).unwrap();
    assert_eq!(top_via_port(&quotbal), 5050);
    let mpart = std::fs::read(torture_dir().join("TC_MPART01.dat")).unwrap();
    assert_eq!(top_via_port(&mpart), 5070);
}
