//! Scanner hot-path benchmarks: what every REGISTER and INVITE pays before any policy runs.
//!
//! `cargo bench --bench scan`. Machine notes and baselines live with the perf results; these
//! numbers are wall time on a noisy machine, compare runs on the same host only.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sipedge::sip::headers::{parse_digest_credentials, request_headers, top_via};
use sipedge::sip::scan::{scan, HeaderName};

/// A typical PBX re-REGISTER with digest credentials (~570 bytes).
const REGISTER: &[u8] = include_bytes!("fixtures/register.sip");

/// An INVITE with 16 headers and an SDP offer.
const INVITE: &[u8] = b"INVITE sip:+15551234567@sbc.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK74bf9a1c;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:+15550001111@pbx.example.com>;tag=9fxced76sl\r\n\
To: <sip:+15551234567@sbc.example.com>\r\n\
Call-ID: 3848276298220188511@198.51.100.7\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@198.51.100.7:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800\r\n\
Min-SE: 90\r\n\
User-Agent: Asterisk PBX 20.5.0\r\n\
P-Asserted-Identity: \"Alice\" <sip:+15550001111@pbx.example.com>\r\n\
Proxy-Authorization: Digest username=\"1001\", realm=\"sbc.example.com\", nonce=\"YmFzZTY0\", uri=\"sip:+15551234567@sbc.example.com\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 232\r\n\
\r\n\
v=0\r\n\
o=- 1700000000 1700000000 IN IP4 198.51.100.7\r\n\
s=Asterisk\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 17172 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn benches(c: &mut Criterion) {
    // Keep the fixtures honest: they must scan, validate and carry what the benches claim.
    let reg = scan(REGISTER).expect("REGISTER scans");
    assert!(request_headers(&reg).is_ok());
    assert!((450..=600).contains(&REGISTER.len()), "{}", REGISTER.len());
    let inv = scan(INVITE).expect("INVITE scans");
    assert_eq!(inv.headers.len(), 16);
    assert_eq!(inv.body.len(), 232);
    assert!(request_headers(&inv).is_ok());

    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(REGISTER.len() as u64));
    g.bench_function("register", |b| {
        b.iter(|| scan(black_box(REGISTER)).map(|m| m.len))
    });
    g.bench_function("register_validate_auth", |b| {
        b.iter(|| {
            let msg = scan(black_box(REGISTER)).ok()?;
            let rh = request_headers(&msg).ok()?;
            let via = top_via(&msg).ok()?;
            let auth = msg.header(HeaderName::Authorization)?;
            let cred = parse_digest_credentials(auth).ok()?;
            Some((rh.cseq.seq, via.branch, cred.response.len()))
        })
    });
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("invite_16_headers_sdp", |b| {
        b.iter(|| scan(black_box(INVITE)).map(|m| (m.headers.len(), m.body.len())))
    });
    g.bench_function("invite_validate", |b| {
        b.iter(|| {
            let msg = scan(black_box(INVITE)).ok()?;
            request_headers(&msg).ok().map(|r| r.cseq.seq)
        })
    });
    g.finish();
}

criterion_group!(scan_benches, benches);
criterion_main!(scan_benches);
