//! Bounded, deterministic mutation test of the scanner and the typed header parsers.
//!
//! Seeds: the RFC 4475 torture messages plus a few well-formed REGISTER/INVITE/OPTIONS. Each
//! iteration copies a seed, applies 1-4 mutations (bit flips, byte sets, insert/delete, truncation,
//! duplicated header lines, CR/LF/NUL/SP injection, overlarge numbers, splices from another seed)
//! and runs `scan`, `request_headers`, `response_headers` and every typed parser on every header.
//! Nothing may panic; a successful scan must borrow only from its input and frame consistently.
//! A fixed-seed xorshift PRNG keeps every run identical; the mutation count is fixed.

use sipedge::sip::headers::{
    contacts, find_param, name_addrs, parse_contacts, parse_cseq, parse_digest_credentials,
    parse_name_addr, parse_u32, parse_uri, parse_via, request_headers, response_headers, top_via,
    via_parms,
};
use sipedge::sip::scan::{scan, HeaderName, Message, StartLine, MAX_HEADERS};

/// Total mutations applied (1-4 per mutant, so about 80k mutants); bounded and fixed.
const MUTATIONS: usize = 200_000;
const SEED: u64 = 0x5eed_5195_4475_0001;
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/torture/rfc4475");

const REGISTER: &[u8] = b"REGISTER sip:sbc.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---3c1d;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:1001@192.0.2.10:5060;rinstance=6f8dc969b62d1466;transport=UDP>;expires=300\r\n\
To: <sip:1001@sbc.example.com>\r\n\
From: \"PBX\" <sip:1001@sbc.example.com>;tag=4e9b2b3f\r\n\
Call-ID: Njc4ZTk0OGQ1YjE4NmI4NzQ5MzE0ZmQ5NzQ2ZTk4Y2Q\r\n\
CSeq: 2 REGISTER\r\n\
Expires: 300\r\n\
Authorization: Digest username=\"1001\",realm=\"sbc.example.com\",nonce=\"5f3c9a1b2c\",uri=\"sip:sbc.example.com\",response=\"0c5b1f4b6a2e3d4c5b6a7f8e9d0c1b2a\",cnonce=\"a1b2c3\",nc=00000001,qop=auth,algorithm=MD5,opaque=\"xyz\"\r\n\
User-Agent: PBX/1.0\r\n\
Content-Length: 0\r\n\
\r\n";

const INVITE: &[u8] = b"INVITE sip:+15551234567@sbc.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK74bf9;received=2001:db8::9;rport=5062, SIP/2.0/TCP p.example.com\r\n\
v: SIP/2.0/UDP 198.51.100.1\r\n\
Max-Forwards: 69\r\n\
f: \"Alice \\\"A\\\"\" <sip:alice@example.com>;tag=9fxced76sl\r\n\
t: sip:+15551234567@sbc.example.com\r\n\
i: 3848276298220188511@198.51.100.7\r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:alice@198.51.100.7:5060>;expires=60, sip:b@[::1]\r\n\
Proxy-Authorization: Digest username=\"alice\", realm=\"r\",\r\n nonce=\"n\", uri=\"sip:x\", response=\"0123\"\r\n\
P-Asserted-Identity: <sip:+15550001111@example.com>\r\n\
Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
c: application/sdp\r\n\
l: 31\r\n\
\r\n\
v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n";

const OPTIONS: &[u8] = b"OPTIONS sip:sbc.example.com SIP/2.0\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKopt1\n\
From: <sip:ping@203.0.113.5>;tag=p1\n\
To: <sip:sbc.example.com>\n\
Call-ID: opt-1@203.0.113.5\n\
CSeq: 1 OPTIONS\n\
Contact: *\n\
Max-Forwards: 0\n\
\n";

const RESPONSE: &[u8] = b"SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport=5060;received=192.0.2.10\r\n\
From: <sip:1001@sbc.example.com>;tag=4e9b2b3f\r\n\
To: <sip:1001@sbc.example.com>;tag=as1\r\n\
Call-ID: c1\r\n\
CSeq: 1 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"sbc.example.com\", nonce=\"abc\", qop=\"auth\"\r\n\
Content-Length: 0\r\n\
\r\n";

/// xorshift64* (Vigna): tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that matter to the grammar, injected more often than random ones.
const INTERESTING: &[u8] = b"\r\n\0 \t:;,\"<>\\%@[]=/?*";

fn seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        REGISTER.to_vec(),
        INVITE.to_vec(),
        OPTIONS.to_vec(),
        RESPONSE.to_vec(),
    ];
    let mut files: Vec<_> = std::fs::read_dir(DIR)
        .expect("torture directory beside the repo")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    for p in files {
        out.push(std::fs::read(&p).expect("read torture file"));
    }
    out
}

/// Start offsets of the lines of `buf` (after each LF), excluding 0.
fn line_starts(buf: &[u8]) -> Vec<usize> {
    buf.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1)
        .collect()
}

fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let len = buf.len();
    match rng.below(11) {
        // flip one bit
        0 if len > 0 => {
            let i = rng.below(len);
            buf[i] ^= 1 << rng.below(8);
        }
        // set a byte to something random or interesting
        1 if len > 0 => {
            let i = rng.below(len);
            buf[i] = if rng.below(2) == 0 {
                rng.next() as u8
            } else {
                INTERESTING[rng.below(INTERESTING.len())]
            };
        }
        // insert an interesting byte
        2 => {
            let i = rng.below(len + 1);
            buf.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
        }
        // delete a short range
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below(8.min(len - i));
            buf.drain(i..i + n);
        }
        // truncate
        4 => buf.truncate(rng.below(len + 1)),
        // duplicate a header line
        5 => {
            let starts = line_starts(buf);
            if starts.len() >= 2 {
                let k = rng.below(starts.len() - 1);
                let (a, b) = (starts[k], starts[k + 1]);
                let line = buf[a..b].to_vec();
                let at = starts[rng.below(starts.len())];
                buf.splice(at..at, line);
            }
        }
        // inject CRLF / LF / NUL / SP / fold at a random place
        6 => {
            const INJECT: [&[u8]; 6] = [b"\r\n", b"\n", b"\0", b" ", b"\r\n ", b"\r"];
            let i = rng.below(len + 1);
            let what = INJECT[rng.below(INJECT.len())];
            buf.splice(i..i, what.iter().copied());
        }
        // overlarge number before a digit
        7 => {
            if let Some(i) = (0..8)
                .map(|_| rng.below(len.max(1)))
                .find(|&i| buf.get(i).is_some_and(u8::is_ascii_digit))
            {
                buf.splice(i..i, b"99999999999999999999".iter().copied());
            }
        }
        // splice a chunk of another seed
        8 => {
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() {
                let a = rng.below(other.len());
                let b = a + rng.below((other.len() - a).min(64)) + 1;
                let at = rng.below(len + 1);
                buf.splice(at..at, other[a..b].iter().copied());
            }
        }
        // remove a whole line
        9 => {
            let starts = line_starts(buf);
            if starts.len() >= 2 {
                let k = rng.below(starts.len() - 1);
                buf.drain(starts[k]..starts[k + 1]);
            }
        }
        // random byte anywhere
        _ => {
            let i = rng.below(len + 1);
            buf.insert(i, rng.next() as u8);
        }
    }
}

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

/// Runs every parser; checks the zero-copy and framing invariants of a successful scan.
fn exercise(buf: &[u8], msg: &Message<'_>) {
    assert!(msg.len <= buf.len());
    assert!(msg.headers.len() <= MAX_HEADERS);
    assert!(within(buf, msg.body));
    if let StartLine::Request { uri, version, .. } = msg.start {
        assert!(within(buf, uri) && within(buf, version));
    }
    for h in msg.headers.iter() {
        assert!(within(buf, h.raw_name) && within(buf, h.value));
        assert_eq!(HeaderName::parse(h.raw_name), h.name);
        if let Ok(v) = parse_via(h.value) {
            assert!(within(h.value, v.raw) && within(h.value, v.host));
        }
        for v in via_parms(h.value).take(MAX_HEADERS) {
            let _ = v;
        }
        for n in name_addrs(h.value).take(MAX_HEADERS).flatten() {
            assert!(within(h.value, n.uri_raw));
        }
        if let Ok(u) = parse_uri(h.value) {
            assert!(within(h.value, u.params));
            let _ = find_param(u.params, b"transport");
        }
        if let Ok(n) = parse_name_addr(h.value) {
            assert!(within(h.value, n.uri_raw) && within(h.value, n.params));
            let _ = find_param(n.params, b"tag");
        }
        let _ = parse_cseq(h.value);
        let _ = parse_contacts(h.value);
        if let Ok(d) = parse_digest_credentials(h.value) {
            assert!(within(h.value, d.response));
        }
        let _ = parse_u32(h.value);
    }
    let _ = top_via(msg);
    let _ = contacts(msg);
    if let Ok(r) = request_headers(msg) {
        assert!(within(buf, r.call_id));
        if let Some(cl) = r.content_length {
            assert_eq!(cl as usize, msg.body.len());
        }
    }
    let _ = response_headers(msg);
    // Framing is stable: the message alone scans to the same length (stream re-framing).
    if msg.header(HeaderName::ContentLength).is_some() {
        let again = scan(&buf[..msg.len]).expect("message prefix scans again");
        assert_eq!(again.len, msg.len);
        assert_eq!(again.headers.len(), msg.headers.len());
    }
}

#[test]
fn mutated_messages_never_panic() {
    let seeds = seeds();
    assert!(seeds.len() > 4, "torture seeds missing");
    // every seed as is first
    for s in &seeds {
        if let Ok(msg) = scan(s) {
            exercise(s, &msg);
        }
    }
    let mut rng = Rng(SEED);
    let mut buf = Vec::with_capacity(8192);
    let (mut mutants, mut scanned, mut requests) = (0usize, 0usize, 0usize);
    let mut applied = 0;
    while applied < MUTATIONS {
        mutants += 1;
        buf.clear();
        buf.extend_from_slice(&seeds[rng.below(seeds.len())]);
        let n = 1 + rng.below(4);
        for _ in 0..n {
            mutate(&mut rng, &mut buf, &seeds);
        }
        applied += n;
        if let Ok(msg) = scan(&buf) {
            scanned += 1;
            exercise(&buf, &msg);
            if request_headers(&msg).is_ok() {
                requests += 1;
            }
        }
    }
    // The mutations must leave a fair share parseable, or the typed parsers go untested.
    assert!(mutants <= MUTATIONS, "bounded by the mutation count");
    assert!(
        scanned > mutants / 5,
        "only {scanned} of {mutants} mutants scanned"
    );
    assert!(
        requests > mutants / 20,
        "only {requests} of {mutants} mutants validated"
    );
    eprintln!("{mutants} mutants, {scanned} scanned, {requests} valid requests");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(SEED ^ 0xdead_beef);
    let mut buf = Vec::with_capacity(512);
    for _ in 0..20_000 {
        buf.clear();
        let n = rng.below(256);
        for _ in 0..n {
            // mostly printable with grammar bytes mixed in
            let b = match rng.below(4) {
                0 => INTERESTING[rng.below(INTERESTING.len())],
                1 => rng.next() as u8,
                _ => b' ' + (rng.below(95) as u8),
            };
            buf.push(b);
        }
        if let Ok(msg) = scan(&buf) {
            exercise(&buf, &msg);
        }
        let h = &buf[..];
        let _ = parse_via(h);
        let _ = name_addrs(h).take(MAX_HEADERS).count();
        let _ = parse_uri(h);
        let _ = parse_name_addr(h);
        let _ = parse_cseq(h);
        let _ = parse_contacts(h);
        let _ = parse_digest_credentials(h);
        let _ = parse_u32(h);
    }
}
