//! Whole call flows in simulated time: an A-side UA (a PBX behind NAT) and a B-side UA (a core
//! gateway) written as byte builders, the call table in between, no sockets.

use super::*;
use crate::sip::scan::scan;

const A_SRC: &str = "192.0.2.10:40000";
const B_GW: &str = "198.51.100.20:5060";
const B_GW2: &str = "198.51.100.21:5060";
const LOCAL: &str = "203.0.113.1:5060";
/// The worker's own core-facing port.
const CORE_LOCAL: &str = "203.0.113.1:40007";
const SDP_A: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const SDP_B: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn with_body(head: String, ctype: bool, body: &str) -> String {
    let ct = if ctype && !body.is_empty() {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    format!("{head}{ct}Content-Length: {}\r\n\r\n{body}", body.len())
}

/// The caller's INVITE (private addresses in Via/Contact, a Record-Route, an X-header).
fn a_invite(branch: &str, max_forwards: u32) -> String {
    with_body(
        format!(
            "INVITE sip:+4930123456@203.0.113.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch={branch};rport\r\n\
             Max-Forwards: {max_forwards}\r\n\
             From: \"Alice\" <sip:+15551230000@10.0.0.5>;tag=atag1\r\n\
             To: <sip:+4930123456@203.0.113.1>\r\n\
             Call-ID: acall-1@10.0.0.5\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:alice@10.0.0.5:5060>\r\n\
             Record-Route: <sip:rr.pbx.internal;lr>\r\n\
             X-Account-Code: 42\r\n\
             User-Agent: PBX-1\r\n"
        ),
        true,
        SDP_A,
    )
}

/// Header value (first occurrence) of a message as text.
fn hv(msg: &str, name: &str) -> String {
    for line in msg.split("\r\n") {
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case(name) {
                return v.trim().to_string();
            }
        }
    }
    panic!("no {name} in {msg}")
}

fn all_hv(msg: &str, name: &str) -> Vec<String> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

fn tag_of(value: &str) -> String {
    value
        .split(";tag=")
        .nth(1)
        .map(|t| t.split(';').next().unwrap().to_string())
        .unwrap_or_default()
}

/// A response written by the UA that received `req` (copies Via, From, To, Call-ID, CSeq).
fn respond(req: &str, code: u16, to_tag: Option<&str>, contact: &str, body: &str) -> String {
    let mut s = format!("SIP/2.0 {code} Whatever\r\n");
    for v in all_hv(req, "Via") {
        s += &format!("Via: {v}\r\n");
    }
    s += &format!("From: {}\r\n", hv(req, "From"));
    let to = hv(req, "To");
    match to_tag {
        Some(t) if !to.contains(";tag=") => s += &format!("To: {to};tag={t}\r\n"),
        _ => s += &format!("To: {to}\r\n"),
    }
    s += &format!(
        "Call-ID: {}\r\nCSeq: {}\r\n",
        hv(req, "Call-ID"),
        hv(req, "CSeq")
    );
    if !contact.is_empty() {
        s += &format!("Contact: {contact}\r\nRecord-Route: <sip:rr.core.internal;lr>\r\n");
    }
    with_body(s, true, body)
}

/// An in-dialog request. `from`/`to` are the sender's local and remote header values.
#[allow(clippy::too_many_arguments)]
fn request(
    method: &str,
    ruri: &str,
    via_host: &str,
    branch: &str,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    body: &str,
) -> String {
    with_body(
        format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {via_host};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        ),
        true,
        body,
    )
}

struct Harness {
    calls: Calls,
    now: u64,
    /// Every byte string sent, by destination.
    sent: Vec<(SocketAddr, String)>,
    cdrs: Vec<CallRecord>,
    failed: Vec<(CallId, u16)>,
    ended: Vec<CallId>,
    /// Every message with the socket it went out of.
    ports: Vec<(Dest, String)>,
    /// Media ports for the calls started (None: SDP passes unchanged).
    media: Option<CallMedia>,
    /// What the media threads were told: (leg, endpoint's RTP address).
    media_outs: Vec<(crate::media::Leg, Option<SocketAddr>)>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            calls: Calls::new(7, addr(LOCAL), addr(CORE_LOCAL), 12345),
            now: 1_000,
            sent: Vec::new(),
            cdrs: Vec::new(),
            failed: Vec::new(),
            ended: Vec::new(),
            ports: Vec::new(),
            media: None,
            media_outs: Vec::new(),
        }
    }

    /// Absorbs outs; returns the messages sent by this step.
    fn take(&mut self, out: Vec<Out>) -> Vec<(SocketAddr, String)> {
        let mut sends = Vec::new();
        for o in out {
            match o {
                Out::Send { to, bytes } => {
                    let s = String::from_utf8(bytes).unwrap();
                    // every message sipedge writes must scan and parse
                    {
                        let m = scan(s.as_bytes()).unwrap();
                        match m.start {
                            StartLine::Request { .. } => {
                                request_headers(&m).unwrap();
                            }
                            StartLine::Response { .. } => {
                                response_headers(&m).unwrap();
                            }
                        }
                    }
                    self.ports.push((to, s.clone()));
                    sends.push((to.addr, s));
                }
                Out::Cdr(r) => self.cdrs.push(r),
                Out::Failed { call, code } => self.failed.push((call, code)),
                Out::Ended { call } => self.ended.push(call),
                Out::Media { leg, rtp, .. } => self.media_outs.push((leg, rtp)),
            }
        }
        self.sent.extend(sends.iter().cloned());
        sends
    }

    fn start_with(
        &mut self,
        invite: &str,
        failover: bool,
    ) -> (Option<CallId>, Vec<(SocketAddr, String)>) {
        let m = scan(invite.as_bytes()).unwrap();
        let rq = request_headers(&m).unwrap();
        let extra = vec![("X-Number-Tag".to_string(), "gold".to_string())];
        let p = CallParams {
            target: addr(B_GW),
            b_request_uri: "sip:+4930123456@198.51.100.20:5060",
            from_user: "+15551230000",
            to_user: "+4930123456",
            asserted_user: Some("+15551230000"),
            extra_headers: &extra,
            direction: Direction::Termination,
            tenant: Some("acme"),
            account: "alice@pbx.example.com",
            failover,
            media: self.media.as_ref(),
        };
        let mut out = Vec::new();
        let id = self
            .calls
            .start(self.now, addr(A_SRC), Port::Main, &m, &rq, &p, &mut out)
            .expect("no codec filter in these tests");
        (id, self.take(out))
    }

    fn a_sends(&mut self, msg: &str) -> Vec<(SocketAddr, String)> {
        self.feed(addr(A_SRC), msg)
    }

    fn b_sends(&mut self, msg: &str) -> Vec<(SocketAddr, String)> {
        self.feed(addr(B_GW), msg)
    }

    fn feed(&mut self, src: SocketAddr, msg: &str) -> Vec<(SocketAddr, String)> {
        let m = scan(msg.as_bytes()).unwrap();
        let mut out = Vec::new();
        // The B side talks to the core port, the A side to the shared one.
        let port = if src == addr(A_SRC) {
            Port::Main
        } else {
            Port::Core
        };
        self.calls.handle(self.now, src, port, &m, &mut out);
        self.take(out)
    }

    /// Runs timers up to `until`.
    fn advance(&mut self, until: u64) -> Vec<(SocketAddr, String)> {
        let mut sends = Vec::new();
        while let Some(at) = self.calls.poll_timeout() {
            if at > until {
                break;
            }
            assert!(at >= self.now, "timer in the past");
            self.now = at;
            let mut out = Vec::new();
            self.calls.handle_timeout(at, &mut out);
            sends.extend(self.take(out));
        }
        self.now = until;
        sends
    }
}

fn only(sends: &[(SocketAddr, String)]) -> &(SocketAddr, String) {
    assert_eq!(sends.len(), 1, "{sends:#?}");
    &sends[0]
}

fn status(msg: &str) -> u16 {
    msg[8..11].parse().unwrap()
}

fn method(msg: &str) -> &str {
    msg.split(' ').next().unwrap()
}

/// A call up to the caller's ACK. Returns (harness, call, B's INVITE, A's 200).
fn answered() -> (Harness, CallId, String, String) {
    let mut h = Harness::new();
    let (id, sends) = h.start_with(&a_invite("z9hG4bKa1", 70), true);
    let id = id.unwrap();
    assert_eq!(sends.len(), 2);
    let b_invite = sends[1].1.clone();
    h.now = 1_200;
    assert!(h.b_sends(&respond(&b_invite, 100, None, "", "")).is_empty());
    h.now = 2_000;
    let ring = h.b_sends(&respond(
        &b_invite,
        180,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        "",
    ));
    assert_eq!(status(&only(&ring).1), 180);
    h.now = 3_000;
    let ok = h.b_sends(&respond(
        &b_invite,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20:5060>",
        SDP_B,
    ));
    let (to, a_ok) = only(&ok).clone();
    assert_eq!(to, addr(A_SRC));
    assert_eq!(status(&a_ok), 200);
    h.now = 3_100;
    let ack = request(
        "ACK",
        "sip:sipedge@203.0.113.1:5060",
        "10.0.0.5:5060",
        "z9hG4bKa2",
        &hv(&a_invite("x", 70), "From"),
        &hv(&a_ok, "To"),
        "acall-1@10.0.0.5",
        1,
        "",
    );
    let b_ack = h.a_sends(&ack);
    let (to, b_ack) = only(&b_ack);
    assert_eq!(*to, addr(B_GW));
    assert_eq!(method(b_ack), "ACK");
    assert_eq!(hv(b_ack, "CSeq"), "1 ACK");
    assert_eq!(tag_of(&hv(b_ack, "To")), "btag1");
    assert!(b_ack.starts_with("ACK sip:gw@198.51.100.20:5060 SIP/2.0"));
    assert_eq!(h.calls.active(), 1);
    (h, id, b_invite, a_ok)
}

/// The caller's in-dialog request.
fn a_req(method: &str, branch: &str, cseq: u32, a_ok: &str, body: &str) -> String {
    request(
        method,
        "sip:sipedge@203.0.113.1:5060",
        "10.0.0.5:5060;rport",
        branch,
        &hv(&a_invite("x", 70), "From"),
        &hv(a_ok, "To"),
        "acall-1@10.0.0.5",
        cseq,
        body,
    )
}

/// The callee's in-dialog request (it is the UAS of the B INVITE).
fn b_req(method: &str, branch: &str, cseq: u32, b_invite: &str, body: &str) -> String {
    request(
        method,
        "sip:sipedge@203.0.113.1:5060",
        "198.51.100.20:5060",
        branch,
        &format!("{};tag=btag1", hv(b_invite, "To")),
        &hv(b_invite, "From"),
        &hv(b_invite, "Call-ID"),
        cseq,
        body,
    )
}

#[test]
fn b_leg_invite_is_rewritten() {
    let (h, _id, b_invite, a_ok) = answered();
    assert!(b_invite.starts_with("INVITE sip:+4930123456@198.51.100.20:5060 SIP/2.0\r\n"));
    let via = hv(&b_invite, "Via");
    assert!(
        via.starts_with("SIP/2.0/UDP 203.0.113.1:40007;branch=z9hG4bK"),
        "{via}"
    );
    assert_eq!(hv(&b_invite, "Max-Forwards"), "69");
    // The core-facing leg carries the worker's own port; the PBX-facing one the shared port.
    assert!(hv(&b_invite, "From").starts_with("<sip:+15551230000@203.0.113.1:40007>;tag=7-"));
    assert_eq!(hv(&b_invite, "To"), "<sip:+4930123456@198.51.100.20:5060>");
    assert_eq!(
        hv(&b_invite, "P-Asserted-Identity"),
        "<sip:+15551230000@203.0.113.1:40007>"
    );
    assert_eq!(hv(&b_invite, "Contact"), "<sip:sipedge@203.0.113.1:40007>");
    assert_eq!(hv(&b_invite, "CSeq"), "1 INVITE");
    assert_eq!(hv(&b_invite, "X-Account-Code"), "42");
    assert_eq!(hv(&b_invite, "X-Number-Tag"), "gold");
    assert!(
        b_invite.ends_with(SDP_A),
        "SDP relayed unchanged (media hook)"
    );
    assert!(all_hv(&b_invite, "Record-Route").is_empty());
    assert!(all_hv(&b_invite, "User-Agent").is_empty());
    // A's 200: sipedge's Contact and To-tag, B's SDP, A's own dialog identifiers.
    assert_eq!(hv(&a_ok, "Contact"), "<sip:sipedge@203.0.113.1:5060>");
    assert_eq!(hv(&a_ok, "Call-ID"), "acall-1@10.0.0.5");
    assert_eq!(hv(&a_ok, "CSeq"), "1 INVITE");
    assert!(hv(&a_ok, "Via").contains("received=192.0.2.10;rport=40000"));
    assert!(a_ok.ends_with(SDP_B));
    for (to, msg) in &h.ports {
        let want = if to.addr == addr(A_SRC) {
            Port::Main
        } else {
            Port::Core
        };
        assert_eq!(to.port, want, "{msg}");
    }
}

#[test]
fn caller_bye_ends_with_cdr() {
    let (mut h, id, b_invite, a_ok) = answered();
    h.now = 63_100;
    let sends = h.a_sends(&a_req("BYE", "z9hG4bKa3", 2, &a_ok, ""));
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0].0, addr(A_SRC));
    assert_eq!(status(&sends[0].1), 200);
    let (to, bye) = &sends[1];
    assert_eq!(*to, addr(B_GW));
    assert_eq!(method(bye), "BYE");
    assert_eq!(hv(bye, "CSeq"), "2 BYE");
    assert_eq!(hv(bye, "Call-ID"), hv(&b_invite, "Call-ID"));
    assert_eq!(tag_of(&hv(bye, "To")), "btag1");
    assert_eq!(h.cdrs.len(), 1);
    let r = &h.cdrs[0];
    assert_eq!(r.end_reason, EndReason::CallerBye);
    assert_eq!(r.final_code, 200);
    assert_eq!(r.start, 1_000);
    assert_eq!(r.answer, Some(3_000));
    assert_eq!(r.end, 63_100);
    assert_eq!(r.duration_s, 60.1);
    assert_eq!(r.account, "alice@pbx.example.com");
    assert_eq!(r.tenant.as_deref(), Some("acme"));
    assert_eq!(r.from, "+15551230000");
    assert_eq!(r.to, "+4930123456");
    assert_eq!(r.direction, Direction::Termination);
    assert_eq!(h.ended, vec![id]);
    assert_eq!(h.calls.active(), 0);
    // B's 200 to the BYE is absorbed; a retransmitted BYE from A gets 200 again, no new BYE.
    assert!(h.b_sends(&respond(bye, 200, None, "", "")).is_empty());
    let again = h.a_sends(&a_req("BYE", "z9hG4bKa3", 2, &a_ok, ""));
    assert_eq!(status(&only(&again).1), 200);
    assert_eq!(h.cdrs.len(), 1);
    // Everything is forgotten after the linger time.
    h.advance(200_000);
    assert_eq!(h.calls.poll_timeout(), None);
    assert!(h.calls.calls.is_empty() && h.calls.by_a.is_empty() && h.calls.by_b.is_empty());
}

#[test]
fn callee_bye_ends_with_cdr() {
    let (mut h, _id, b_invite, a_ok) = answered();
    h.now = 10_000;
    let sends = h.b_sends(&b_req("BYE", "z9hG4bKb9", 1, &b_invite, ""));
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0].0, addr(B_GW));
    assert_eq!(status(&sends[0].1), 200);
    let (to, bye) = &sends[1];
    assert_eq!(*to, addr(A_SRC));
    assert!(bye.starts_with("BYE sip:alice@10.0.0.5:5060 SIP/2.0"));
    assert_eq!(hv(bye, "Call-ID"), "acall-1@10.0.0.5");
    assert_eq!(tag_of(&hv(bye, "To")), "atag1");
    assert_eq!(tag_of(&hv(bye, "From")), tag_of(&hv(&a_ok, "To")));
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::CalleeBye);
    assert_eq!(h.cdrs[0].duration_s, 7.0);
    // A's 200 to the BYE is absorbed; the BYE is not retransmitted after it.
    assert!(h.a_sends(&respond(bye, 200, None, "", "")).is_empty());
    assert!(h.advance(100_000).is_empty());
}

#[test]
fn cancel_before_answer() {
    let mut h = Harness::new();
    let invite = a_invite("z9hG4bKa1", 70);
    let (_, sends) = h.start_with(&invite, true);
    let b_invite = sends[1].1.clone();
    h.now = 1_500;
    // CANCEL before any provisional from B: 200 + 487 at once, B's CANCEL waits (RFC 3261 §9.1).
    let cancel = request(
        "CANCEL",
        "sip:+4930123456@203.0.113.1",
        "10.0.0.5:5060;rport",
        "z9hG4bKa1",
        &hv(&invite, "From"),
        &hv(&invite, "To"),
        "acall-1@10.0.0.5",
        1,
        "",
    );
    let sends = h.a_sends(&cancel);
    assert_eq!(sends.len(), 2);
    assert_eq!(status(&sends[0].1), 200);
    assert_eq!(hv(&sends[0].1, "CSeq"), "1 CANCEL");
    assert_eq!(status(&sends[1].1), 487);
    assert_eq!(hv(&sends[1].1, "CSeq"), "1 INVITE");
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Cancel);
    assert_eq!(h.cdrs[0].final_code, 487);
    assert_eq!(h.cdrs[0].answer, None);
    h.now = 1_600;
    let sends = h.b_sends(&respond(
        &b_invite,
        180,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        "",
    ));
    let (to, b_cancel) = only(&sends);
    assert_eq!(*to, addr(B_GW));
    assert_eq!(method(b_cancel), "CANCEL");
    assert_eq!(hv(b_cancel, "Via"), hv(&b_invite, "Via"));
    assert_eq!(hv(b_cancel, "CSeq"), "1 CANCEL");
    assert_eq!(hv(b_cancel, "To"), hv(&b_invite, "To"));
    // B: 200 to the CANCEL, 487 to the INVITE, which sipedge ACKs and does not relay.
    assert!(h.b_sends(&respond(b_cancel, 200, None, "", "")).is_empty());
    let sends = h.b_sends(&respond(&b_invite, 487, Some("btag1"), "", ""));
    let (_, ack) = only(&sends);
    assert_eq!(method(ack), "ACK");
    assert_eq!(hv(ack, "Via"), hv(&b_invite, "Via"));
    // A ACKs its 487: absorbed. The 487 to A is not retransmitted after that.
    let ack_a = request(
        "ACK",
        "sip:+4930123456@203.0.113.1",
        "10.0.0.5:5060;rport",
        "z9hG4bKa1",
        &hv(&invite, "From"),
        &hv(&sends_to_a(&h)[1], "To"),
        "acall-1@10.0.0.5",
        1,
        "",
    );
    assert!(h.a_sends(&ack_a).is_empty());
    assert!(h.advance(100_000).is_empty());
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.calls.active(), 0);
}

fn sends_to_a(h: &Harness) -> Vec<String> {
    h.sent
        .iter()
        .filter(|(to, _)| to.ip() == addr(A_SRC).ip())
        .map(|(_, s)| s.clone())
        .collect()
}

fn sends_to_b(h: &Harness) -> Vec<String> {
    h.sent
        .iter()
        .filter(|(to, _)| to.ip() != addr(A_SRC).ip())
        .map(|(_, s)| s.clone())
        .collect()
}

#[test]
fn busy_from_b_is_relayed_and_acked() {
    let mut h = Harness::new();
    let (_, sends) = h.start_with(&a_invite("z9hG4bKa1", 70), true);
    let b_invite = sends[1].1.clone();
    h.now = 2_000;
    let sends = h.b_sends(&respond(&b_invite, 486, Some("btag1"), "", ""));
    assert_eq!(sends.len(), 2);
    let (to, ack) = &sends[0];
    assert_eq!(*to, addr(B_GW));
    assert_eq!(method(ack), "ACK");
    assert_eq!(tag_of(&hv(ack, "To")), "btag1");
    let (to, busy) = &sends[1];
    assert_eq!(*to, addr(A_SRC));
    assert_eq!(status(busy), 486);
    assert!(!tag_of(&hv(busy, "To")).is_empty());
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Failed);
    assert_eq!(h.cdrs[0].final_code, 486);
    // B retransmits its 486: ACKed again, not relayed again.
    let sends = h.b_sends(&respond(&b_invite, 486, Some("btag1"), "", ""));
    assert_eq!(method(&only(&sends).1), "ACK");
    // The 486 to A is retransmitted (Timer G) until A's ACK.
    let sends = h.advance(1_000 + 2_000);
    assert!(sends
        .iter()
        .all(|(to, s)| *to == addr(A_SRC) && status(s) == 486));
    assert!(!sends.is_empty());
}

#[test]
fn reinvite_from_a_is_relayed_with_its_answer_and_ack() {
    let (mut h, _id, b_invite, a_ok) = answered();
    h.now = 20_000;
    let sends = h.a_sends(&a_req("INVITE", "z9hG4bKre1", 2, &a_ok, SDP_A));
    assert_eq!(sends.len(), 2);
    assert_eq!(status(&sends[1].1), 100);
    let (to, re) = sends[0].clone();
    assert_eq!(to, addr(B_GW));
    assert!(re.starts_with("INVITE sip:gw@198.51.100.20:5060 SIP/2.0"));
    assert_eq!(hv(&re, "CSeq"), "2 INVITE");
    assert_eq!(hv(&re, "Call-ID"), hv(&b_invite, "Call-ID"));
    assert_eq!(tag_of(&hv(&re, "To")), "btag1");
    assert!(re.ends_with(SDP_A));
    // A retransmits before B answers: 100 again, not relayed twice.
    h.now = 20_100;
    let again = h.a_sends(&a_req("INVITE", "z9hG4bKre1", 2, &a_ok, SDP_A));
    assert_eq!(status(&only(&again).1), 100);
    h.now = 20_200;
    let sends = h.b_sends(&respond(
        &re,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20:5060>",
        SDP_B,
    ));
    let (to, ok) = only(&sends).clone();
    assert_eq!(to, addr(A_SRC));
    assert_eq!(status(&ok), 200);
    assert_eq!(hv(&ok, "CSeq"), "2 INVITE");
    assert_eq!(hv(&ok, "Call-ID"), "acall-1@10.0.0.5");
    assert!(ok.ends_with(SDP_B));
    h.now = 20_300;
    let sends = h.a_sends(&a_req("ACK", "z9hG4bKre2", 2, &a_ok, ""));
    let (to, ack) = only(&sends);
    assert_eq!(*to, addr(B_GW));
    assert_eq!(method(ack), "ACK");
    assert_eq!(hv(ack, "CSeq"), "2 ACK");
    // B did not get the ACK and retransmits its 200: sipedge ACKs again.
    let sends = h.b_sends(&respond(
        &re,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20:5060>",
        SDP_B,
    ));
    assert_eq!(method(&only(&sends).1), "ACK");
    // An INFO from B goes the other way with A's identifiers.
    let sends = h.b_sends(&b_req("INFO", "z9hG4bKi1", 5, &b_invite, ""));
    let (to, info) = only(&sends).clone();
    assert_eq!(to, addr(A_SRC));
    assert_eq!(hv(&info, "Call-ID"), "acall-1@10.0.0.5");
    assert_eq!(hv(&info, "CSeq"), "2 INFO");
    let sends = h.a_sends(&respond(&info, 200, None, "", ""));
    let (to, ok) = only(&sends);
    assert_eq!(*to, addr(B_GW));
    assert_eq!(hv(ok, "CSeq"), "5 INFO");
    assert!(h.cdrs.is_empty());
}

#[test]
fn topology_is_hidden_both_ways() {
    let (mut h, _id, b_invite, a_ok) = answered();
    h.now = 20_000;
    let re = h.a_sends(&a_req("INVITE", "z9hG4bKre1", 2, &a_ok, SDP_A));
    h.b_sends(&respond(
        &re[0].1,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20:5060>",
        "",
    ));
    h.a_sends(&a_req("ACK", "z9hG4bKre2", 2, &a_ok, ""));
    h.b_sends(&b_req("BYE", "z9hG4bKb9", 9, &b_invite, ""));
    for s in sends_to_b(&h) {
        let head = s.split("\r\n\r\n").next().unwrap();
        for leak in [
            "10.0.0.5",
            "192.0.2.10",
            "acall-1",
            "atag1",
            "rr.pbx",
            "alice",
            "PBX-1",
        ] {
            assert!(!head.contains(leak), "{leak} leaked to B: {s}");
        }
    }
    for s in sends_to_a(&h) {
        let head = s.split("\r\n\r\n").next().unwrap();
        for leak in [
            "198.51.100.20",
            "rr.core",
            "btag1",
            "gw@",
            hv(&b_invite, "Call-ID").as_str(),
            tag_of(&hv(&b_invite, "From")).as_str(),
        ] {
            assert!(!head.contains(leak), "{leak} leaked to A: {s}");
        }
    }
}

#[test]
fn retransmissions_are_absorbed_and_2xx_retransmitted_until_ack() {
    let mut h = Harness::new();
    let invite = a_invite("z9hG4bKa1", 70);
    let (_, sends) = h.start_with(&invite, true);
    let b_invite = sends[1].1.clone();
    // Retransmitted INVITE before anything from B: 100 Trying again, through start too.
    h.now = 1_500;
    let again = h.a_sends(&invite);
    assert_eq!(status(&only(&again).1), 100);
    let (id, again) = h.start_with(&invite, true);
    assert!(id.is_none());
    assert_eq!(status(&only(&again).1), 100);
    // The B INVITE itself is retransmitted (Timer A) while B is silent, then 180 stops that.
    let sends = h.advance(1_600);
    assert!(sends
        .iter()
        .all(|(to, s)| *to == addr(B_GW) && method(s) == "INVITE"));
    assert_eq!(sends.len(), 1);
    h.b_sends(&respond(
        &b_invite,
        180,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        "",
    ));
    let again = h.a_sends(&invite);
    assert_eq!(status(&only(&again).1), 180, "last provisional");
    assert_eq!(
        sends_to_b(&h)
            .iter()
            .filter(|s| method(s) == "INVITE")
            .count(),
        2
    );
    h.now = 3_000;
    let ok = h.b_sends(&respond(
        &b_invite,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        SDP_B,
    ));
    let a_ok = only(&ok).1.clone();
    // No ACK from A: the 200 goes again at +0.5, +1.5, +3.5 s.
    let sends = h.advance(6_600);
    let times: Vec<u16> = sends.iter().map(|(_, s)| status(s)).collect();
    assert_eq!(times, vec![200, 200, 200]);
    assert!(sends.iter().all(|(_, s)| *s == a_ok));
    let b_ack = h.a_sends(&a_req("ACK", "z9hG4bKa2", 1, &a_ok, ""));
    assert_eq!(method(&only(&b_ack).1), "ACK");
    // A retransmitted ACK is absorbed, and nothing more goes to A.
    assert!(h
        .a_sends(&a_req("ACK", "z9hG4bKa2", 1, &a_ok, ""))
        .is_empty());
    assert!(h.advance(60_000).is_empty());
}

#[test]
fn no_ack_for_the_2xx_hangs_up_both_legs() {
    let mut h = Harness::new();
    let (_, sends) = h.start_with(&a_invite("z9hG4bKa1", 70), true);
    let b_invite = sends[1].1.clone();
    h.b_sends(&respond(
        &b_invite,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        SDP_B,
    ));
    h.advance(1_000 + 32_000);
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Failed);
    let byes: Vec<String> = h
        .sent
        .iter()
        .filter(|(_, s)| method(s) == "BYE")
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(byes.len(), 2);
}

#[test]
fn timer_b_gives_failed_then_retry_reaches_the_next_gateway() {
    let mut h = Harness::new();
    let (id, sends) = h.start_with(&a_invite("z9hG4bKa1", 70), true);
    let id = id.unwrap();
    let first_call_id = hv(&sends[1].1, "Call-ID");
    let sends = h.advance(1_000 + 32_000);
    assert_eq!(
        sends.iter().filter(|(_, s)| method(s) == "INVITE").count(),
        6
    );
    assert_eq!(h.failed, vec![(id, 408)]);
    assert!(h.cdrs.is_empty(), "the caller decides");
    let mut out = Vec::new();
    assert!(h.calls.retry(
        h.now,
        id,
        addr(B_GW2),
        "sip:+4930123456@198.51.100.21",
        &mut out
    ));
    let sends = h.take(out);
    let (to, inv2) = only(&sends).clone();
    assert_eq!(to, addr(B_GW2));
    assert_ne!(hv(&inv2, "Call-ID"), first_call_id);
    assert!(inv2.ends_with(SDP_A));
    // The second gateway answers 503: Failed again; giving up answers A with 503 "No route".
    let sends = h.feed(addr(B_GW2), &respond(&inv2, 503, Some("g2"), "", ""));
    assert_eq!(method(&only(&sends).1), "ACK");
    assert_eq!(h.failed, vec![(id, 408), (id, 503)]);
    let mut out = Vec::new();
    h.calls.give_up(h.now, id, 503, "No route", &mut out);
    let sends = h.take(out);
    assert!(only(&sends).1.starts_with("SIP/2.0 503 No route\r\n"));
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].final_code, 503);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Failed);
    let mut out = Vec::new();
    assert!(!h
        .calls
        .retry(h.now, id, addr(B_GW2), "sip:x@198.51.100.21", &mut out));
}

#[test]
fn a_silent_gateway_is_given_up_after_the_gateway_timeout_but_a_trying_one_is_not() {
    let mut h = Harness::new();
    h.calls.set_gateway_timeout(2_000);
    let (id, _) = h.start_with(&a_invite("z9hG4bKa1", 70), true);
    let id = id.unwrap();
    h.advance(1_000 + 1_999);
    assert!(h.failed.is_empty(), "not before the timeout");
    h.advance(1_000 + 2_000);
    assert_eq!(h.failed, vec![(id, 408)]);

    // A gateway that says 100 Trying is waited for past the timeout.
    let mut h = Harness::new();
    h.calls.set_gateway_timeout(2_000);
    let (_, sends) = h.start_with(&a_invite("z9hG4bKa2", 70), true);
    h.feed(addr(B_GW), &respond(&sends[1].1, 100, None, "", ""));
    h.advance(1_000 + 10_000);
    assert!(h.failed.is_empty());
}

#[test]
fn ringing_too_long_cancels_the_callee_and_answers_408() {
    let mut h = Harness::new();
    let (_, sends) = h.start_with(&a_invite("z9hG4bKa1", 70), true);
    let b_invite = sends[1].1.clone();
    h.feed(
        addr(B_GW),
        &respond(&b_invite, 180, Some("g1"), "<sip:gw@198.51.100.20>", ""),
    );
    let sends = h.advance(1_000 + TIMER_C_MS - 1);
    assert!(
        sends.iter().all(|(_, s)| !s.starts_with("CANCEL")),
        "not before Timer C"
    );
    let sends = h.advance(1_000 + TIMER_C_MS);
    assert!(
        sends
            .iter()
            .any(|(to, s)| *to == addr(B_GW) && s.starts_with("CANCEL ")),
        "{sends:?}"
    );
    assert!(sends
        .iter()
        .any(|(to, s)| *to == addr(A_SRC) && s.starts_with("SIP/2.0 408 ")));
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].final_code, 408);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Failed);
}

#[test]
fn timer_b_without_failover_answers_408() {
    let mut h = Harness::new();
    h.start_with(&a_invite("z9hG4bKa1", 70), false);
    let sends = h.advance(1_000 + 32_000);
    let to_a: Vec<&String> = sends
        .iter()
        .filter(|(to, _)| *to == addr(A_SRC))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(to_a.len(), 1);
    assert_eq!(status(to_a[0]), 408);
    assert!(h.failed.is_empty());
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].final_code, 408);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Failed);
}

#[test]
fn max_forwards_zero_gets_483_and_a_cdr() {
    let mut h = Harness::new();
    let (id, sends) = h.start_with(&a_invite("z9hG4bKa1", 0), true);
    assert!(id.is_none());
    assert_eq!(status(&only(&sends).1), 483);
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Rejected);
    assert_eq!(h.calls.active(), 0);
}

#[test]
fn hang_up_answered_and_ringing() {
    let (mut h, id, _b, _a) = answered();
    let mut out = Vec::new();
    h.calls.hang_up(40_000, id, EndReason::Admin, &mut out);
    let sends = h.take(out);
    assert_eq!(sends.iter().filter(|(_, s)| method(s) == "BYE").count(), 2);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Admin);

    let mut h = Harness::new();
    let (id, sends) = h.start_with(&a_invite("z9hG4bKa1", 70), true);
    let b_invite = sends[1].1.clone();
    h.b_sends(&respond(
        &b_invite,
        183,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        SDP_B,
    ));
    let mut out = Vec::new();
    h.calls
        .hang_up(2_000, id.unwrap(), EndReason::Shutdown, &mut out);
    let sends = h.take(out);
    assert_eq!(sends.len(), 2);
    assert_eq!(status(&sends[0].1), 487);
    assert_eq!(method(&sends[1].1), "CANCEL");
    assert_eq!(h.cdrs[0].end_reason, EndReason::Shutdown);
}

#[test]
fn garbage_and_strangers_are_ignored() {
    let (mut h, _id, b_invite, a_ok) = answered();
    let noise = [
        "SIP/2.0 200 OK\r\n\r\n".to_string(),
        "BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n\r\n".to_string(),
        // a BYE for an unknown call
        request(
            "BYE",
            "sip:x@1.2.3.4",
            "1.2.3.4",
            "z9hG4bKq",
            "<sip:a@b>;tag=1",
            "<sip:c@d>;tag=2",
            "nope",
            1,
            "",
        ),
        // the right Call-ID with a wrong To-tag
        request(
            "BYE",
            "sip:x@1.2.3.4",
            "10.0.0.5",
            "z9hG4bKq",
            &hv(&a_invite("x", 70), "From"),
            "<sip:c@d>;tag=7-forged",
            "acall-1@10.0.0.5",
            9,
            "",
        ),
        // a response to nothing sipedge sent on the B leg
        respond(
            &b_req("INFO", "z9hG4bKzz", 3, &b_invite, ""),
            200,
            None,
            "",
            "",
        ),
        // responses with a Call-ID of B but a strange branch / method
        respond(
            &b_invite.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),
            200,
            Some("btag1"),
            "",
            "",
        ),
    ];
    for n in &noise {
        if let Ok(m) = scan(n.as_bytes()) {
            let mut out = Vec::new();
            h.calls.handle(h.now, addr(A_SRC), Port::Main, &m, &mut out);
            h.calls.handle(h.now, addr(B_GW), Port::Core, &m, &mut out);
            assert!(out.is_empty(), "{n} -> {out:?}");
        }
    }
    // Truncations of real messages never panic.
    let real = [
        a_ok.clone(),
        b_invite.clone(),
        a_req("BYE", "z9hG4bKa3", 2, &a_ok, ""),
    ];
    for msg in &real {
        for cut in 0..msg.len() {
            if let Ok(m) = scan(&msg.as_bytes()[..cut]) {
                let mut out = Vec::new();
                h.calls.handle(h.now, addr(A_SRC), Port::Main, &m, &mut out);
            }
        }
    }
    assert_eq!(h.calls.active() + h.cdrs.len(), 1);
}

#[test]
fn shard_is_in_minted_identifiers() {
    let (h, id, b_invite, a_ok) = answered();
    assert_eq!(id.shard(), 7);
    assert_eq!(
        shard_of_call_id(hv(&b_invite, "Call-ID").as_bytes()),
        Some(7)
    );
    assert_eq!(
        shard_of_tag(tag_of(&hv(&b_invite, "From")).as_bytes()),
        Some(7)
    );
    assert_eq!(shard_of_tag(tag_of(&hv(&a_ok, "To")).as_bytes()), Some(7));
    assert_eq!(h.cdrs.len(), 0);
    assert_eq!(shard_of_call_id(b"65535-abc"), Some(65535));
    for bad in [
        &b"65536-abc"[..],
        b"-abc",
        b"abc",
        b"12a-x",
        b"",
        b"123456-x",
        b"1",
    ] {
        assert_eq!(shard_of_call_id(bad), None, "{bad:?}");
    }
    let mut c = Calls::new(513, addr(LOCAL), addr(CORE_LOCAL), 1);
    let mut ids = std::collections::HashSet::new();
    for _ in 0..1000 {
        let m = c.ctx.mint();
        assert_eq!(shard_of_call_id(&m), Some(513));
        assert!(ids.insert(m));
    }
}

#[test]
fn answer_racing_a_cancel_is_acked_and_hung_up_on_b() {
    let mut h = Harness::new();
    let invite = a_invite("z9hG4bKa1", 70);
    let (_, sends) = h.start_with(&invite, true);
    let b_invite = sends[1].1.clone();
    h.b_sends(&respond(
        &b_invite,
        180,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        "",
    ));
    let cancel = request(
        "CANCEL",
        "sip:+4930123456@203.0.113.1",
        "10.0.0.5:5060;rport",
        "z9hG4bKa1",
        &hv(&invite, "From"),
        &hv(&invite, "To"),
        "acall-1@10.0.0.5",
        1,
        "",
    );
    let sends = h.a_sends(&cancel);
    // 200 (CANCEL), 487 (INVITE) to A, CANCEL to B
    assert_eq!(sends.len(), 3);
    let before = sends_to_a(&h).len();
    let sends = h.b_sends(&respond(
        &b_invite,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20>",
        SDP_B,
    ));
    let methods: Vec<&str> = sends.iter().map(|(_, s)| method(s)).collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    assert!(sends.iter().all(|(to, _)| *to == addr(B_GW)));
    assert_eq!(sends_to_a(&h).len(), before, "nothing more to the caller");
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Cancel);
    assert_eq!(h.cdrs[0].answer, None);
}

/// With media ports, SDP toward each leg names sipedge's media address and that leg's port
/// (never the other side's address), and the media threads learn each endpoint's RTP address.
#[test]
fn anchored_call_rewrites_sdp_toward_each_leg() {
    let mut h = Harness::new();
    h.media = Some(CallMedia {
        block: 3,
        a_port: 30_000,
        b_port: 30_002,
        advertise: "203.0.113.1".parse().unwrap(),
        codecs: Box::default(),
    });
    let (id, sends) = h.start_with(&a_invite("z9hG4bKm1", 70), false);
    assert!(id.is_some());
    let b_invite = sends[1].1.clone();
    let body = b_invite.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.contains("c=IN IP4 203.0.113.1\r\n"), "{body}");
    assert!(body.contains("m=audio 30002 RTP/AVP 0\r\n"), "{body}");
    assert!(
        !body.contains("10.0.0.5"),
        "no caller address toward B: {body}"
    );
    assert_eq!(
        hv(&b_invite, "Content-Length"),
        body.len().to_string(),
        "Content-Length follows the rewritten body"
    );
    assert_eq!(
        h.media_outs,
        vec![(crate::media::Leg::A, Some(addr("10.0.0.5:4000")))]
    );

    h.now = 2_000;
    let ok = h.b_sends(&respond(
        &b_invite,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20:5060>",
        SDP_B,
    ));
    let a_ok = &only(&ok).1;
    let body = a_ok.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.contains("m=audio 30000 RTP/AVP 0\r\n"), "{body}");
    assert!(
        !body.contains("198.51.100.20"),
        "no core address toward A: {body}"
    );
    assert_eq!(
        h.media_outs.last(),
        Some(&(crate::media::Leg::B, Some(addr("198.51.100.20:5000"))))
    );
    assert_eq!(h.calls.answered_media().count(), 1);
}

#[test]
fn an_ended_call_retires_to_tombs_that_still_answer_retransmissions() {
    let (mut h, _id, b_invite, a_ok) = answered();
    h.now = 10_000;
    let sends = h.a_sends(&a_req("BYE", "z9hG4bKa3", 2, &a_ok, ""));
    let bye = sends[1].1.clone();
    // sipedge's BYE to B still awaits its answer: the call keeps its whole state.
    assert_eq!(h.calls.calls.len(), 1);
    assert!(h.b_sends(&respond(&bye, 200, None, "", "")).is_empty());
    // Answered: nothing needs the call any more, so it is gone at once; two tombs remain.
    assert!(h.calls.calls.is_empty() && h.calls.by_a.is_empty() && h.calls.by_b.is_empty());
    assert_eq!(h.calls.tombs(), 2);
    // A's BYE again (its 200 went lost): 200 again, nothing to B.
    let again = h.a_sends(&a_req("BYE", "z9hG4bKa3", 2, &a_ok, ""));
    let (to, ok) = only(&again);
    assert_eq!(*to, addr(A_SRC));
    assert_eq!(status(ok), 200);
    assert_eq!(hv(ok, "CSeq"), "2 BYE");
    assert!(hv(ok, "Via").contains("branch=z9hG4bKa3"));
    // B's 200 to the INVITE again (sipedge's ACK went lost): the same ACK again.
    let first_ack = sends_to_b(&h)
        .into_iter()
        .find(|s| method(s) == "ACK")
        .unwrap();
    let re = h.b_sends(&respond(
        &b_invite,
        200,
        Some("btag1"),
        "<sip:gw@198.51.100.20:5060>",
        SDP_B,
    ));
    let (to, ack) = only(&re);
    assert_eq!(*to, addr(B_GW));
    assert_eq!(*ack, first_ack);
    // The caller's ACK again, and a stray 200 to the BYE again: absorbed.
    assert!(h
        .a_sends(&a_req("ACK", "z9hG4bKa2", 1, &a_ok, ""))
        .is_empty());
    assert!(h.b_sends(&respond(&bye, 200, None, "", "")).is_empty());
    // 64·T1 later the tombs are gone too, and the dialog is unknown (the runtime answers 481).
    h.calls.expire_tombs(h.now + 31_999);
    assert_eq!(h.calls.tombs(), 2);
    h.calls.expire_tombs(h.now + 32_000);
    assert_eq!(h.calls.tombs(), 0);
    let m = a_req("BYE", "z9hG4bKa3", 2, &a_ok, "");
    let m = scan(m.as_bytes()).unwrap();
    let mut out = Vec::new();
    assert!(!h.calls.handle(h.now, addr(A_SRC), Port::Main, &m, &mut out));
    assert!(out.is_empty());
}

#[test]
fn a_failed_call_retires_once_the_caller_acks_and_its_tomb_acks_a_late_retransmission() {
    let mut h = Harness::new();
    let invite = a_invite("z9hG4bKa1", 70);
    let (_, sends) = h.start_with(&invite, false);
    let b_invite = sends[1].1.clone();
    h.now = 2_000;
    let sends = h.b_sends(&respond(&b_invite, 486, Some("btag1"), "", ""));
    let b_ack = sends[0].1.clone();
    let busy = sends[1].1.clone();
    // The 486 to A awaits A's ACK (Timer G): the call is kept.
    assert_eq!(h.calls.calls.len(), 1);
    let ack = request(
        "ACK",
        "sip:+4930123456@203.0.113.1",
        "10.0.0.5:5060",
        "z9hG4bKa1",
        &hv(&invite, "From"),
        &hv(&busy, "To"),
        "acall-1@10.0.0.5",
        1,
        "",
    );
    assert!(h.a_sends(&ack).is_empty());
    assert!(h.calls.calls.is_empty());
    assert_eq!(h.calls.tombs(), 2);
    // B's 486 again: ACKed again from the tomb. A's INVITE again: absorbed, no second call.
    let re = h.b_sends(&respond(&b_invite, 486, Some("btag1"), "", ""));
    assert_eq!(only(&re).1, b_ack);
    assert!(h.calls.knows_a(b"acall-1@10.0.0.5", b"atag1"));
    assert!(h.a_sends(&invite).is_empty());
    assert!(h.calls.calls.is_empty());
}
