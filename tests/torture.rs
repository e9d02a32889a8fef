//! RFC 4475 torture messages against the scanner and the request/response validation.
//!
//! Every file of `shared/torture/rfc4475` is read as bytes (never rewritten) and checked
//! against the outcome written below, with the reason next to it. INDEX.tsv must list exactly
//! the files present and the table here must cover each of them, so a new torture file cannot
//! be silently skipped.
//!
//! Rule of thumb: "valid" rows must pass `scan` and, for requests, `request_headers` (responses:
//! `response_headers`); "invalid" rows must be refused by `scan` or by the header validation;
//! rows that RFC 4475 calls syntactically valid but semantically wrong are refused where the RFC
//! asks for a 400, and accepted where the answer is a policy decision of a later layer.

use sipedge::sip::headers::{
    contacts, parse_contacts, parse_cseq, parse_digest_credentials, parse_name_addr, parse_u32,
    parse_uri, parse_via, request_headers, request_headers_with, response_headers, top_via,
    via_parms, Contacts, HeaderError,
};
use sipedge::sip::scan::{scan, HeaderName, Message, Method, ScanError, StartLine};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/torture/rfc4475");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// request: scan and request_headers succeed
    Request,
    /// response: scan and response_headers succeed
    Response,
    /// scan refuses it with this error
    Scan(ScanError),
    /// scan succeeds, request_headers refuses with this error
    Headers(HeaderError),
    /// response: scan succeeds, response_headers refuses with this error
    ResponseHeaders(HeaderError),
}

use Expect::*;

/// (file, outcome, why)
const CASES: &[(&str, Expect, &str)] = &[
    // ---- 3.1.1 valid messages
    (
        "TC_WSINV.dat",
        Request,
        "3.1.1.1: LWS and folding everywhere; compact/odd-case names",
    ),
    (
        "TC_INTMETH.dat",
        Request,
        "3.1.1.2: every token char in method, URI, tags, Call-ID",
    ),
    (
        "TC_ESC01_V.dat",
        Request,
        "3.1.1.3: %-escapes in URIs, folded Contact",
    ),
    (
        "TC_ESCNULL_V.dat",
        Request,
        "3.1.1.4: %00 in URIs is only an escape, not a NUL",
    ),
    (
        "TC_ESC02_V.dat",
        Request,
        "3.1.1.5: % in tokens (method, header name, branch)",
    ),
    (
        "TC_LWSDISP_V.dat",
        Request,
        "3.1.1.6: no LWS between display name and <",
    ),
    (
        "TC_LONGREQ_V.dat",
        Request,
        "3.1.1.7: long values, 34 Via headers",
    ),
    (
        "TC_DBLREQ.dat",
        Request,
        "3.1.1.8: first message parses; len stops at Content-Length",
    ),
    (
        "TC_SEMIURI_V.dat",
        Request,
        "3.1.1.9: ';' inside the Request-URI user part",
    ),
    (
        "TC_TRANSPORTS_V.dat",
        Request,
        "3.1.1.10: unknown transports in Via are just tokens",
    ),
    (
        "TC_MPART01.dat",
        Request,
        "3.1.1.11: binary multipart body, framed by Content-Length",
    ),
    (
        "TC_UNREASON_V.dat",
        Response,
        "3.1.1.12: UTF-8 reason phrase",
    ),
    (
        "TC_NOREASON_V.dat",
        Response,
        "3.1.1.13: empty reason phrase",
    ),
    // ---- 3.1.2 invalid messages
    (
        "TC_BADINV01_I.dat",
        Headers(HeaderError::Malformed("Contact")),
        "3.1.2.1: Contact params ';;;;' are empty (checked in the header pass); the Via's empty \
         via-params ';;,;,,' fail too, see baddinv01_via",
    ),
    (
        "TC_CLERR_I.dat",
        Scan(ScanError::Truncated),
        "3.1.2.2: Content-Length 9999 > body",
    ),
    (
        "TC_NCL_I.dat",
        Scan(ScanError::ContentLength),
        "3.1.2.3: Content-Length -999",
    ),
    (
        "TC_SCALAR02_V.dat",
        Headers(HeaderError::Malformed("CSeq")),
        "3.1.2.4: CSeq 36893488147419103232 overflows 32 bits (Max-Forwards 300 would too)",
    ),
    (
        "TC_SCALARLG_V.dat",
        ResponseHeaders(HeaderError::Malformed("CSeq")),
        "3.1.2.5: response CSeq overflows; response_headers refuses it",
    ),
    (
        "TC_QUOTBAL_I.dat",
        Headers(HeaderError::Malformed("To")),
        "3.1.2.6: unterminated quoted display name in To",
    ),
    (
        "TC_LTGTRURI_I.dat",
        Headers(HeaderError::RequestUri),
        "3.1.2.7: <> around Request-URI",
    ),
    (
        "TC_LWSRURI_I.dat",
        Scan(ScanError::StartLine),
        "3.1.2.8: SP inside the Request-URI",
    ),
    (
        "TC_LWSSTART_V.dat",
        Scan(ScanError::StartLine),
        "3.1.2.9: two SPs between elements",
    ),
    (
        "TC_TRWS_I.dat",
        Scan(ScanError::StartLine),
        "3.1.2.10: SP after SIP/2.0",
    ),
    (
        "TC_ESCRURI_V.dat",
        Headers(HeaderError::RequestUri),
        "3.1.2.11: ?headers in a sip Request-URI",
    ),
    (
        "TC_BADDATE_V.dat",
        Headers(HeaderError::Malformed("Date")),
        "3.1.2.12: Date in EST instead of GMT (light rfc1123-date check)",
    ),
    (
        "TC_REGBADCT_I.dat",
        Headers(HeaderError::Malformed("Contact")),
        "3.1.2.13: Contact addr-spec with '?' outside <>",
    ),
    (
        "TC_BADASPEC_I.dat",
        Headers(HeaderError::Malformed("To")),
        "3.1.2.14: whitespace inside <...> of To",
    ),
    (
        "TC_BADDN_I.dat",
        Scan(ScanError::Unterminated),
        "3.1.2.15: the stored file ends without the blank line after the headers; with it added \
         the ',' in the unquoted display name fails From, see baddn_with_blank_line",
    ),
    (
        "TC_BADVERS_V.dat",
        Headers(HeaderError::Version),
        "3.1.2.16: SIP/7.0 -> 505",
    ),
    (
        "TC_MISMATCH01_V.dat",
        Headers(HeaderError::CSeqMismatch),
        "3.1.2.17: OPTIONS vs INVITE",
    ),
    (
        "TC_MISMATCH02_V.dat",
        Headers(HeaderError::CSeqMismatch),
        "3.1.2.18: NEWMETHOD vs INVITE (raw tokens compared)",
    ),
    (
        "TC_BIGCODE_V.dat",
        Scan(ScanError::StartLine),
        "3.1.2.19: status code 4294967301",
    ),
    // ---- 3.2 transaction layer
    (
        "TC_BADBRANCH_V.dat",
        Request,
        "3.2.1: branch 'z9hG4bK' alone is syntactically fine; the transaction layer decides",
    ),
    // ---- 3.3 application layer: valid syntax
    (
        "TC_INSUF_I.dat",
        Headers(HeaderError::Missing("From")),
        "3.3.1: no From/To/Call-ID/Max-Forwards -> 400",
    ),
    (
        "TC_UNKSCM_V.dat",
        Request,
        "3.3.2: unknown Request-URI scheme parses; 416 is policy",
    ),
    (
        "TC_NOVELSC_V.dat",
        Request,
        "3.3.3: soap.beep scheme parses",
    ),
    (
        "TC_UNKSM2_V.dat",
        Request,
        "3.3.4: isbn:/http:/name: URIs in To/From/Contact parse",
    ),
    (
        "TC_BEXT01_V.dat",
        Request,
        "3.3.5: Require/Proxy-Require are policy (420)",
    ),
    (
        "TC_INVUT_V.dat",
        Request,
        "3.3.6: unknown Content-Type is policy (415)",
    ),
    (
        "TC_REGAUT01_V.dat",
        Request,
        "3.3.7: unknown auth scheme parses; digest parser refuses it",
    ),
    (
        "TC_MULTI01_I.dat",
        Headers(HeaderError::Duplicate("CSeq")),
        "3.3.8: two CSeq (and Call-ID, To, From, Max-Forwards) -> 400; CSeq comes first",
    ),
    (
        "TC_MCL01_I.dat",
        Headers(HeaderError::Duplicate("Content-Length")),
        "3.3.9: two Content-Length -> 400 (scan frames with the first so Via is available)",
    ),
    (
        "TC_BCAST_V.dat",
        Response,
        "3.3.10: broadcast Via host is a routing decision",
    ),
    (
        "TC_ZEROMF_V.dat",
        Request,
        "3.3.11: Max-Forwards 0 parses; 483 is the proxy's call",
    ),
    (
        "TC_CPARAM01_V.dat",
        Request,
        "3.3.12: ;unknownparam is a contact param",
    ),
    (
        "TC_CPARAM02_V.dat",
        Request,
        "3.3.13: ;unknownparam inside <> is a URI param",
    ),
    (
        "TC_REGESCRT_V.dat",
        Request,
        "3.3.14: escaped header inside <> is fine in Contact",
    ),
    (
        "TC_SDP01_V.dat",
        Request,
        "3.3.15: Accept is policy (406/488)",
    ),
    (
        "TC_INV2543_I.dat",
        Request,
        "3.4.1: RFC 2543 request: no branch, no Max-Forwards, no CL",
    ),
    // ---- not from RFC 4475
    (
        "TC_TEST_I.dat",
        Scan(ScanError::StartLine),
        "start line without SIP-Version",
    ),
];

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn expectation(name: &str) -> Expect {
    CASES
        .iter()
        .find(|(f, _, _)| *f == name)
        .map(|(_, e, _)| *e)
        .unwrap_or_else(|| panic!("no expectation for {name}"))
}

/// Every typed parser on every header: none may panic, whatever the message.
fn exercise_all(msg: &Message<'_>) {
    for h in msg.headers.iter() {
        let _ = parse_via(h.value);
        for v in via_parms(h.value) {
            let _ = v;
        }
        let _ = parse_uri(h.value);
        let _ = parse_name_addr(h.value);
        let _ = parse_cseq(h.value);
        let _ = parse_contacts(h.value);
        let _ = parse_digest_credentials(h.value);
        let _ = parse_u32(h.value);
    }
    let _ = top_via(msg);
    let _ = contacts(msg);
    // The worker hands over a REGISTER's top Via, parsed early for its transaction key, rather
    // than have it parsed twice: the outcome must be the same, valid or not.
    assert_eq!(
        format!("{:?}", request_headers(msg)),
        format!("{:?}", request_headers_with(msg, top_via(msg).ok())),
    );
    let _ = response_headers(msg);
}

fn outcome(buf: &[u8]) -> Result<Expect, String> {
    let msg = match scan(buf) {
        Ok(m) => m,
        Err(e) => return Ok(Scan(e)),
    };
    exercise_all(&msg);
    match msg.start {
        StartLine::Request { .. } => match request_headers(&msg) {
            Ok(_) => Ok(Request),
            Err(e) => Ok(Headers(e)),
        },
        StartLine::Response { .. } => match response_headers(&msg) {
            Ok(_) => Ok(Response),
            Err(e) => Ok(ResponseHeaders(e)),
        },
    }
}

#[test]
fn index_and_table_cover_every_file() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .expect("torture directory beside the repo")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    let index = String::from_utf8(read("INDEX.tsv")).expect("INDEX.tsv is UTF-8");
    let mut indexed = BTreeSet::new();
    for line in index.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let file = cols.next().unwrap_or_default().to_string();
        let syntax = cols.nth(2).unwrap_or_default();
        let expect = expectation(&file);
        // INDEX "invalid" rows must be refused somewhere; plain "valid" rows must pass.
        match syntax {
            "invalid" => assert!(
                !matches!(expect, Request | Response),
                "{file}: INDEX says invalid but the table expects acceptance"
            ),
            "valid" => {
                assert!(
                    matches!(expect, Request | Response),
                    "{file}: INDEX says valid"
                )
            }
            _ => {} // "valid syntax, semantically ..." etc.: decided per file in CASES
        }
        indexed.insert(file);
    }
    let tabled: BTreeSet<String> = CASES.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(on_disk, indexed, "INDEX.tsv vs files on disk");
    assert_eq!(on_disk, tabled, "CASES vs files on disk");
}

#[test]
fn every_file_has_its_expected_outcome() {
    let mut failures = Vec::new();
    for (file, expect, why) in CASES {
        let buf = read(file);
        match outcome(&buf) {
            Ok(got) if got == *expect => {}
            Ok(got) => failures.push(format!("{file}: expected {expect:?} ({why}), got {got:?}")),
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_prefix_of_every_file_is_handled() {
    // Truncated datagrams: every prefix must give an answer, never a panic.
    for (file, _, _) in CASES {
        let buf = read(file);
        for n in 0..=buf.len() {
            if let Ok(msg) = scan(&buf[..n]) {
                exercise_all(&msg);
            }
        }
    }
}

fn scan_ok(file: &str) -> Vec<u8> {
    read(file)
}

#[test]
fn wsinv_details() {
    let buf = scan_ok("TC_WSINV.dat");
    let msg = scan(&buf).unwrap();
    let rh = request_headers(&msg).unwrap();
    assert_eq!(rh.method, Method::Invite);
    assert_eq!(rh.uri.host, b"chair-dnrc.example.com");
    assert_eq!(rh.uri.params, b";unknownparam");
    assert_eq!(rh.to.tag, Some(&b"1918181833n"[..]));
    assert_eq!(rh.from.tag, Some(&b"98asjd8"[..]));
    assert_eq!(rh.from.display, Some(&br#"J Rosenberg \\\""#[..]));
    assert_eq!(rh.cseq.seq, 9);
    assert_eq!(rh.max_forwards, Some(68));
    assert_eq!(rh.content_length, Some(150));
    assert_eq!(rh.via.transport, b"UDP");
    assert_eq!(rh.via.host, b"192.0.2.2");
    assert_eq!(rh.via.branch, Some(&b"390skdjuw"[..]));
    // Via.raw keeps the folds as received.
    assert_eq!(
        rh.via.raw,
        b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw"
    );
    // The second Via header ("v:") holds two via-parms over folded lines.
    let second = msg.headers_named(HeaderName::Via).nth(1).unwrap();
    let parms: Vec<_> = via_parms(second).collect::<Result<_, _>>().unwrap();
    assert_eq!(parms.len(), 2);
    assert_eq!(parms[0].host, b"spindle.example.com");
    assert_eq!(parms[0].branch, Some(&b"z9hG4bK9ikj8"[..]));
    assert_eq!(parms[1].host, b"192.168.255.111");
    assert_eq!(parms[1].branch, Some(&b"z9hG4bK30239"[..]));
    match contacts(&msg).unwrap() {
        Contacts::List(l) => {
            assert_eq!(l.len(), 1);
            assert_eq!(l[0].addr.display, Some(&br#"Quoted string \"\""#[..]));
            assert_eq!(l[0].addr.uri.user, Some(&b"jdrosen"[..]));
        }
        Contacts::Star => panic!("not a star"),
    }
    assert_eq!(msg.body.len(), 150);
    assert_eq!(msg.len, buf.len());
}

#[test]
fn intmeth_details() {
    let buf = scan_ok("TC_INTMETH.dat");
    let msg = scan(&buf).unwrap();
    let rh = request_headers(&msg).unwrap();
    assert_eq!(rh.method, Method::Other);
    assert_eq!(
        rh.cseq.method_raw,
        b"!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(
        rh.uri.user,
        Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
    );
    assert_eq!(
        rh.uri.password,
        Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
    );
    assert_eq!(rh.uri.host, b"example.com");
    assert_eq!(rh.from.tag, Some(&b"_token~1'+`*%!-."[..]));
    assert_eq!(
        rh.from.display,
        Some(&b"token1~` token2'+_ token3*%!.-"[..])
    );
    assert_eq!(rh.call_id, br#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#);
    assert_eq!(rh.max_forwards, Some(255));
}

#[test]
fn dblreq_stops_at_content_length() {
    let buf = scan_ok("TC_DBLREQ.dat");
    let msg = scan(&buf).unwrap();
    assert_eq!(msg.method(), Some(Method::Register));
    assert_eq!(msg.len, 300);
    assert!(msg.body.is_empty());
    assert!(
        msg.len < buf.len(),
        "the trailing INVITE is not part of the message"
    );
    let rh = request_headers(&msg).unwrap();
    assert_eq!(rh.call_id, b"dblreq.0ha0isndaksdj99sdfafnl3lk233412");
}

#[test]
fn responses_and_reasons() {
    let buf = scan_ok("TC_NOREASON_V.dat");
    let msg = scan(&buf).unwrap();
    assert!(matches!(
        msg.start,
        StartLine::Response {
            code: 100,
            reason: b""
        }
    ));
    let buf = scan_ok("TC_UNREASON_V.dat");
    let msg = scan(&buf).unwrap();
    match msg.start {
        StartLine::Response { code, reason } => {
            assert_eq!(code, 200);
            assert!(reason.starts_with(b"= 2**3 * 5**2 "));
            assert!(std::str::from_utf8(reason).is_ok());
        }
        _ => panic!("response expected"),
    }
    let buf = scan_ok("TC_BCAST_V.dat");
    let msg = scan(&buf).unwrap();
    let rh = response_headers(&msg).unwrap();
    assert_eq!(rh.code, 200);
    assert_eq!(rh.via.host, b"192.0.2.198");
    assert_eq!(msg.headers_named(HeaderName::Via).count(), 2);
}

#[test]
fn semantic_cases() {
    // TC_BADBRANCH: the branch is kept as written, the transaction layer judges it.
    let buf = scan_ok("TC_BADBRANCH_V.dat");
    let msg = scan(&buf).unwrap();
    assert_eq!(
        request_headers(&msg).unwrap().via.branch,
        Some(&b"z9hG4bK"[..])
    );
    // TC_INV2543: no branch, no Max-Forwards, no Content-Length (UDP: body = rest).
    let buf = scan_ok("TC_INV2543_I.dat");
    let msg = scan(&buf).unwrap();
    let rh = request_headers(&msg).unwrap();
    assert_eq!(rh.via.branch, None);
    assert_eq!(rh.max_forwards, None);
    assert_eq!(rh.content_length, None);
    assert!(msg.body.starts_with(b"v=0"));
    // TC_REGAUT01: request fine, digest parser refuses the unknown scheme.
    let buf = scan_ok("TC_REGAUT01_V.dat");
    let msg = scan(&buf).unwrap();
    let auth = msg.header(HeaderName::Authorization).unwrap();
    assert!(parse_digest_credentials(auth).is_err());
    // TC_ZEROMF: Max-Forwards 0 reported as is.
    let buf = scan_ok("TC_ZEROMF_V.dat");
    assert_eq!(
        request_headers(&scan(&buf).unwrap()).unwrap().max_forwards,
        Some(0)
    );
    // TC_UNKSCM / TC_NOVELSC: scheme kept for a 416 decision.
    let buf = scan_ok("TC_UNKSCM_V.dat");
    let rh_buf = scan(&buf).unwrap();
    let rh = request_headers(&rh_buf).unwrap();
    assert_eq!(rh.uri.scheme, b"nobodyKnowsThisScheme");
    assert!(!rh.uri.is_sip());
    // TC_CPARAM01 vs 02: where ;unknownparam belongs.
    let buf = scan_ok("TC_CPARAM01_V.dat");
    let msg = scan(&buf).unwrap();
    match contacts(&msg).unwrap() {
        Contacts::List(l) => {
            assert_eq!(l[0].addr.params, b";unknownparam");
            assert_eq!(l[0].addr.uri.params, b"");
        }
        Contacts::Star => panic!(),
    }
    let buf = scan_ok("TC_CPARAM02_V.dat");
    let msg = scan(&buf).unwrap();
    match contacts(&msg).unwrap() {
        Contacts::List(l) => {
            assert_eq!(l[0].addr.params, b"");
            assert_eq!(l[0].addr.uri.params, b";unknownparam");
        }
        Contacts::Star => panic!(),
    }
    // TC_ESC02: three Contact headers, one of them spelled C%6Fntact (an unknown header).
    let buf = scan_ok("TC_ESC02_V.dat");
    let msg = scan(&buf).unwrap();
    match contacts(&msg).unwrap() {
        Contacts::List(l) => assert_eq!(l.len(), 2),
        Contacts::Star => panic!(),
    }
    // TC_SCALAR02: the Contact expires overflows u32 and saturates.
    let buf = scan_ok("TC_SCALAR02_V.dat");
    let msg = scan(&buf).unwrap();
    match contacts(&msg).unwrap() {
        Contacts::List(l) => assert_eq!(l[0].expires, Some(u32::MAX)),
        Contacts::Star => panic!(),
    }
    assert_eq!(parse_u32(msg.header(HeaderName::Expires).unwrap()), None);
    // TC_MPART01: binary body framed exactly, rport flag on the Via.
    let buf = scan_ok("TC_MPART01.dat");
    let msg = scan(&buf).unwrap();
    assert_eq!(msg.body.len(), 553);
    assert_eq!(request_headers(&msg).unwrap().via.rport, Some(None));
    // TC_LONGREQ: 34 Via headers, every spelling of the name recognised.
    let buf = scan_ok("TC_LONGREQ_V.dat");
    let msg = scan(&buf).unwrap();
    assert_eq!(msg.headers_named(HeaderName::Via).count(), 34);
    let vias: Vec<_> = msg.headers_named(HeaderName::Via).map(parse_via).collect();
    assert!(vias.iter().all(|v| v.is_ok()));
}

#[test]
fn baddinv01_via() {
    let buf = scan_ok("TC_BADINV01_I.dat");
    let msg = scan(&buf).unwrap();
    assert_eq!(top_via(&msg), Err(HeaderError::Malformed("Via")));
}

#[test]
fn baddn_with_blank_line() {
    let mut buf = scan_ok("TC_BADDN_I.dat");
    buf.extend_from_slice(b"\r\n");
    let msg = scan(&buf).unwrap();
    assert_eq!(
        request_headers(&msg).err(),
        Some(HeaderError::Malformed("From"))
    );
    // The Via is fine, so the runtime can still answer 400.
    assert_eq!(top_via(&msg).unwrap().host, b"c.example.com");
}

#[test]
fn torture_dir_is_beside_the_repo() {
    assert!(
        Path::new(DIR).is_dir(),
        "{DIR} missing: shared/ must sit beside the repo"
    );
}
