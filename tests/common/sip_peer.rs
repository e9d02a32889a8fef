//! A scripted SIP endpoint over real UDP on 127.0.0.1, for integration tests that play a PBX
//! (UAC/UAS) or a carrier core gateway against a running sipedge.
//!
//! Self-contained (std only): its own tolerant SIP parser and message builders, so a symmetric bug
//! in the server's parser cannot hide. Messages the test is not waiting for are kept in a backlog
//! so that a later `recv*` call still sees them in arrival order.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Long form of a compact header name (RFC 3261 §7.3.3), or the name itself.
fn long_header_name(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "k" | "K" => "Supported",
        _ => name,
    }
}

/// Splits a message into (head, body) at the first blank line; no blank line means no body.
fn split_head_body(text: &str) -> (&str, &str) {
    if let Some(i) = text.find("\r\n\r\n") {
        (&text[..i], &text[i + 4..])
    } else if let Some(i) = text.find("\n\n") {
        (&text[..i], &text[i + 2..])
    } else {
        (text, "")
    }
}

/// Every value of header `name` (case-insensitive, compact forms accepted) in `text`, in order.
fn find_headers<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let wanted = long_header_name(name);
    let (head, _) = split_head_body(text);
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            long_header_name(n.trim())
                .eq_ignore_ascii_case(wanted)
                .then(|| v.trim())
        })
        .collect()
}

/// Value of parameter `name` in a `;`-separated parameter list (the part after the URI).
fn param_of(params: &str, name: &str) -> Option<String> {
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Header-level parameter `name` of a name-addr / addr-spec header value (e.g. `tag`).
fn header_param(value: &str, name: &str) -> Option<String> {
    // In a name-addr, header parameters follow the closing '>'; in a bare addr-spec every ';'
    // parameter is a header parameter (RFC 3261 §20.10).
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    param_of(params, name)
}

/// The URI inside a name-addr (between `<` and `>`, skipping a quoted display name) or a bare
/// addr-spec (up to the first `;` or whitespace).
pub fn uri_of(value: &str) -> Option<&str> {
    let mut v = value.trim();
    if v.starts_with('"') {
        let close = v[1..].find('"')? + 1;
        v = &v[close + 1..];
    }
    if let Some(open) = v.find('<') {
        let rest = &v[open + 1..];
        return Some(&rest[..rest.find('>')?]);
    }
    let end = v
        .find(|c: char| c == ';' || c.is_whitespace())
        .unwrap_or(v.len());
    (end > 0).then(|| &v[..end])
}

/// `n` from a CSeq value `"n METHOD"`, 0 if unparsable.
fn cseq_num(value: &str) -> u32 {
    value
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One SIP message received from the network.
#[derive(Clone, Debug)]
pub struct SipMsg {
    /// The full message text (lossily decoded as UTF-8).
    pub raw: String,
    /// Source address of the datagram.
    pub from: SocketAddr,
}

impl SipMsg {
    /// Parses a datagram; None unless the first line is a SIP request or status line.
    pub fn parse(bytes: &[u8], from: SocketAddr) -> Option<SipMsg> {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let first = raw.lines().next()?;
        let parts: Vec<&str> = first.split(' ').collect();
        let is_status = parts.len() >= 2
            && parts[0] == "SIP/2.0"
            && parts[1].len() == 3
            && parts[1].parse::<u16>().is_ok();
        let is_request = parts.len() == 3
            && parts[2].trim_end() == "SIP/2.0"
            && !parts[0].is_empty()
            && parts[0].bytes().all(|b| b.is_ascii_alphabetic());
        (is_status || is_request).then_some(SipMsg { raw, from })
    }

    /// The first line without its line ending.
    fn start_line(&self) -> &str {
        self.raw.lines().next().unwrap_or("").trim_end()
    }

    /// True for a request, false for a response.
    pub fn is_request(&self) -> bool {
        !self.start_line().starts_with("SIP/2.0 ")
    }

    /// Request method (None for a response).
    pub fn method(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start_line().split(' ').next())
            .flatten()
    }

    /// Response status code (None for a request).
    pub fn code(&self) -> Option<u16> {
        if self.is_request() {
            return None;
        }
        self.start_line().split(' ').nth(1)?.parse().ok()
    }

    /// Request-URI (None for a response).
    pub fn request_uri(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start_line().split(' ').nth(1))
            .flatten()
    }

    /// First value of header `name` (case-insensitive, compact forms accepted).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_headers(&self.raw, name).into_iter().next()
    }

    /// Every value of header `name`, one per header line, in order (no comma splitting).
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        find_headers(&self.raw, name)
    }

    /// The body (after the blank line), cut to Content-Length when that is shorter.
    pub fn body(&self) -> &str {
        let (_, body) = split_head_body(&self.raw);
        match self
            .header("Content-Length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(n) if n < body.len() && body.is_char_boundary(n) => &body[..n],
            _ => body,
        }
    }

    /// Call-ID value ("" when absent).
    pub fn call_id(&self) -> String {
        self.header("Call-ID").unwrap_or("").to_string()
    }

    /// CSeq as (number, method); (0, "") when absent or malformed.
    pub fn cseq(&self) -> (u32, String) {
        let v = self.header("CSeq").unwrap_or("");
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let m = it.next().unwrap_or("").to_string();
        (n, m)
    }

    /// `tag` parameter of From.
    #[allow(clippy::wrong_self_convention)] // the name mirrors the SIP header, not a conversion
    pub fn from_tag(&self) -> Option<String> {
        header_param(self.header("From")?, "tag")
    }

    /// `tag` parameter of To.
    pub fn to_tag(&self) -> Option<String> {
        header_param(self.header("To")?, "tag")
    }

    /// `branch` parameter of the topmost Via.
    pub fn top_branch(&self) -> Option<String> {
        let via = self.header("Via")?;
        let first = via.split(',').next().unwrap_or(via);
        param_of(first, "branch")
    }

    /// User part (without user parameters) of the URI in a name-addr or addr-spec header value.
    pub fn user_of(header_value: &str) -> Option<String> {
        let uri = uri_of(header_value)?;
        let (scheme, rest) = uri.split_once(':')?;
        let user = if scheme.eq_ignore_ascii_case("tel") {
            rest
        } else {
            rest.split_once('@')?.0
        };
        // Drop a password ("user:pw") and user parameters ("+1555;npdi").
        let user = user.split([':', ';']).next().unwrap_or("");
        (!user.is_empty()).then(|| user.to_string())
    }
}

/// A request this peer built (and usually sent); `text` may be edited before sending.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The full message text.
    pub text: String,
    /// Call-ID of the request.
    pub call_id: String,
    /// Branch of the request's Via.
    pub branch: String,
    /// Tag of the request's From.
    pub from_tag: String,
    /// CSeq number of the request.
    pub cseq: u32,
}

impl Outgoing {
    /// First value of header `name` in `text` (case-insensitive, compact forms accepted).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_headers(&self.text, name).into_iter().next()
    }

    /// Every value of header `name` in `text`, one per header line, in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        find_headers(&self.text, name)
    }

    /// Request-URI of `text`.
    pub fn request_uri(&self) -> &str {
        self.text
            .lines()
            .next()
            .unwrap_or("")
            .split(' ')
            .nth(1)
            .unwrap_or("")
    }
}

/// A short random value (process-seeded hash of a global counter).
fn random_u64() -> u64 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// A scripted SIP endpoint on a UDP socket bound to 127.0.0.1:0.
pub struct Peer {
    sock: UdpSocket,
    addr: SocketAddr,
    tag: String,
    /// Unique prefix for this peer's branches and Call-IDs.
    uniq: String,
    /// Counter for branches and Call-IDs.
    seq: AtomicU32,
    /// Next CSeq for in-dialog requests on the UAC side (starts at 2).
    uac_cseq: AtomicU32,
    /// Next CSeq for in-dialog requests on the UAS side (starts at 101).
    uas_cseq: AtomicU32,
    /// Messages received while waiting for something else, oldest first.
    backlog: Mutex<VecDeque<SipMsg>>,
}

impl Default for Peer {
    fn default() -> Self {
        Peer::new()
    }
}

impl Peer {
    /// Binds a new peer on 127.0.0.1 with an ephemeral port.
    pub fn new() -> Peer {
        Peer::on("127.0.0.1")
    }

    /// Binds a new peer on another loopback address (e.g. "127.0.0.2") with an ephemeral port.
    pub fn on(ip: &str) -> Peer {
        let sock = UdpSocket::bind((ip, 0)).expect("bind peer UDP socket");
        let addr = sock.local_addr().expect("peer local addr");
        let r = random_u64();
        Peer {
            sock,
            addr,
            tag: format!("peer{:08x}", r as u32),
            uniq: format!("{:012x}", r >> 16),
            seq: AtomicU32::new(1),
            uac_cseq: AtomicU32::new(2),
            uas_cseq: AtomicU32::new(101),
            backlog: Mutex::new(VecDeque::new()),
        }
    }

    /// The local address of the peer's socket.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The To tag this peer puts in its answers and the From tag of requests it originates.
    pub fn local_tag(&self) -> String {
        self.tag.clone()
    }

    /// Sends raw bytes to `to`.
    pub fn send_raw(&self, bytes: &[u8], to: SocketAddr) {
        self.sock
            .send_to(bytes, to)
            .unwrap_or_else(|e| panic!("peer {} send to {to}: {e}", self.addr));
    }

    /// Sends an Outgoing to `to`.
    pub fn send(&self, msg: &Outgoing, to: SocketAddr) {
        self.send_raw(msg.text.as_bytes(), to);
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, VecDeque<SipMsg>> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Next SIP message from the socket (not the backlog) before `deadline`.
    fn recv_socket(&self, deadline: Instant) -> Option<SipMsg> {
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(m) = SipMsg::parse(&buf[..n], from) {
                        return Some(m);
                    }
                }
                // Timeouts end the wait via the deadline; ICMP-induced errors are just noise.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock
                            | ErrorKind::TimedOut
                            | ErrorKind::ConnectionRefused
                            | ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => panic!("peer {} recv: {e}", self.addr),
            }
        }
    }

    /// Next message satisfying `want` within `d`; backlog first, other messages go to the backlog.
    fn recv_matching(&self, d: Duration, want: impl Fn(&SipMsg) -> bool) -> Option<SipMsg> {
        {
            let mut backlog = self.backlog();
            if let Some(i) = backlog.iter().position(&want) {
                return backlog.remove(i);
            }
        }
        let deadline = Instant::now() + d;
        loop {
            let m = self.recv_socket(deadline)?;
            if want(&m) {
                return Some(m);
            }
            self.backlog().push_back(m);
        }
    }

    /// Next SIP message within `d` (backlog first, skips non-SIP garbage); None on timeout.
    pub fn recv(&self, d: Duration) -> Option<SipMsg> {
        if let Some(m) = self.backlog().pop_front() {
            return Some(m);
        }
        self.recv_socket(Instant::now() + d)
    }

    /// Next request with this method within `d`; other messages are kept for later recv calls.
    pub fn recv_request(&self, method: &str, d: Duration) -> Option<SipMsg> {
        self.recv_matching(d, |m| m.method() == Some(method))
    }

    /// Next response to a `method` request whose code satisfies `pred`; others are kept.
    pub fn recv_response(
        &self,
        method: &str,
        d: Duration,
        pred: impl Fn(u16) -> bool,
    ) -> Option<SipMsg> {
        self.recv_matching(d, |m| m.code().is_some_and(&pred) && m.cseq().1 == method)
    }

    /// Asserts nothing arrives within `d` (backlog included), panicking with the message otherwise.
    pub fn expect_silence(&self, d: Duration, why: &str) {
        if let Some(m) = self.recv(d) {
            panic!(
                "{why}: expected silence on {} for {d:?}, got from {}:\n{}",
                self.addr, m.from, m.raw
            );
        }
    }

    /// A fresh Via branch.
    fn new_branch(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("z9hG4bK{}x{n}", self.uniq)
    }

    /// A fresh Via line value with a new branch; returns (value, branch).
    fn new_via(&self) -> (String, String) {
        let branch = self.new_branch();
        (
            format!("SIP/2.0/UDP {};branch={branch};rport", self.addr),
            branch,
        )
    }

    /// Answers `req` (to its source address) with `code`/`reason`, `extra` header lines and an
    /// optional SDP body; returns the bytes sent.
    pub fn reply(
        &self,
        req: &SipMsg,
        code: u16,
        reason: &str,
        extra: &[&str],
        body: &str,
    ) -> Vec<u8> {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for via in req.headers_all("Via") {
            s.push_str(&format!("Via: {via}\r\n"));
        }
        s.push_str(&format!("From: {}\r\n", req.header("From").unwrap_or("")));
        let to = req.header("To").unwrap_or("");
        if req.to_tag().is_none() && code > 100 {
            s.push_str(&format!("To: {to};tag={}\r\n", self.tag));
        } else {
            s.push_str(&format!("To: {to}\r\n"));
        }
        s.push_str(&format!("Call-ID: {}\r\n", req.call_id()));
        s.push_str(&format!("CSeq: {}\r\n", req.header("CSeq").unwrap_or("")));
        if req.method() == Some("INVITE") && (101..300).contains(&code) {
            s.push_str(&format!("Contact: <sip:peer@{}>\r\n", self.addr));
        }
        finish(&mut s, extra, body);
        let bytes = s.into_bytes();
        self.send_raw(&bytes, req.from);
        bytes
    }

    /// Builds (does not send) a new out-of-dialog INVITE with an SDP offer.
    pub fn invite(
        &self,
        ruri: &str,
        from_user: &str,
        to_user: &str,
        to_host: &str,
        extra: &[&str],
    ) -> Outgoing {
        let sdp = sdp_offer(self.addr.ip(), 40000);
        self.invite_with_body(ruri, from_user, to_user, to_host, extra, &sdp)
    }

    /// [`Peer::invite`] with a body of the caller's (an SDP offer, or empty for a late offer).
    pub fn invite_with_body(
        &self,
        ruri: &str,
        from_user: &str,
        to_user: &str,
        to_host: &str,
        extra: &[&str],
        body: &str,
    ) -> Outgoing {
        let (via, branch) = self.new_via();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let call_id = format!("{}-{n}@peer.test", self.uniq);
        let addr = self.addr;
        let mut s = format!("INVITE {ruri} SIP/2.0\r\n");
        s.push_str(&format!("Via: {via}\r\n"));
        s.push_str("Max-Forwards: 70\r\n");
        s.push_str(&format!(
            "From: <sip:{from_user}@{addr}>;tag={}\r\n",
            self.tag
        ));
        s.push_str(&format!("To: <sip:{to_user}@{to_host}>\r\n"));
        s.push_str(&format!("Call-ID: {call_id}\r\n"));
        s.push_str("CSeq: 1 INVITE\r\n");
        s.push_str(&format!("Contact: <sip:{from_user}@{addr}>\r\n"));
        finish(&mut s, extra, body);
        Outgoing {
            text: s,
            call_id,
            branch,
            from_tag: self.tag.clone(),
            cseq: 1,
        }
    }

    /// ACK for a 2xx to `invite` (new branch, R-URI = the 2xx's Contact, Route from its
    /// Record-Route), sent to `to`.
    pub fn ack_2xx(&self, invite: &Outgoing, ok: &SipMsg, to: SocketAddr) {
        let ruri = ok
            .header("Contact")
            .and_then(uri_of)
            .unwrap_or(invite.request_uri());
        let (via, _) = self.new_via();
        let n = cseq_num(invite.header("CSeq").unwrap_or(""));
        let mut s = format!("ACK {ruri} SIP/2.0\r\n");
        s.push_str(&format!("Via: {via}\r\n"));
        s.push_str("Max-Forwards: 70\r\n");
        for rr in ok.headers_all("Record-Route").into_iter().rev() {
            s.push_str(&format!("Route: {rr}\r\n"));
        }
        s.push_str(&format!(
            "From: {}\r\n",
            invite.header("From").unwrap_or("")
        ));
        s.push_str(&format!("To: {}\r\n", ok.header("To").unwrap_or("")));
        s.push_str(&format!(
            "Call-ID: {}\r\n",
            invite.header("Call-ID").unwrap_or("")
        ));
        s.push_str(&format!("CSeq: {n} ACK\r\n"));
        finish(&mut s, &[], "");
        self.send_raw(s.as_bytes(), to);
    }

    /// ACK for a non-2xx final response to `invite` (same Via/branch and R-URI), sent to `to`.
    pub fn ack_non2xx(&self, invite: &Outgoing, resp: &SipMsg, to: SocketAddr) {
        let to_value = resp.header("To").unwrap_or("").to_string();
        let s = same_transaction_request(invite, "ACK", &to_value);
        self.send_raw(s.as_bytes(), to);
    }

    /// CANCEL for `invite` (same Via/branch, R-URI, From, To, Call-ID, CSeq number), sent to `to`.
    pub fn cancel(&self, invite: &Outgoing, to: SocketAddr) {
        let to_value = invite.header("To").unwrap_or("").to_string();
        let s = same_transaction_request(invite, "CANCEL", &to_value);
        self.send_raw(s.as_bytes(), to);
    }

    /// In-dialog request from the UAC side of the dialog made by `invite` and its 2xx `ok`
    /// (CSeq from a per-peer counter starting at 2); sent to `to` and returned.
    pub fn in_dialog_uac(
        &self,
        method: &str,
        invite: &Outgoing,
        ok: &SipMsg,
        body: &str,
        to: SocketAddr,
    ) -> Outgoing {
        let ruri = ok
            .header("Contact")
            .and_then(uri_of)
            .unwrap_or(invite.request_uri())
            .to_string();
        let mut routes: Vec<&str> = ok.headers_all("Record-Route");
        routes.reverse();
        let from = invite.header("From").unwrap_or("").to_string();
        let to_value = ok.header("To").unwrap_or("").to_string();
        let call_id = invite.header("Call-ID").unwrap_or("").to_string();
        let cseq = self.uac_cseq.fetch_add(1, Ordering::Relaxed);
        let contact = invite.header("Contact").unwrap_or("").to_string();
        let msg = self.dialog_request(
            method, &ruri, &routes, &from, &to_value, &call_id, cseq, &contact, body,
        );
        self.send(&msg, to);
        msg
    }

    /// In-dialog request from the UAS side of the dialog this peer answered (`invite_rcvd`, 2xx
    /// with local_tag; CSeq from a per-peer counter starting at 101); sent to `to` and returned.
    pub fn in_dialog_uas(
        &self,
        method: &str,
        invite_rcvd: &SipMsg,
        body: &str,
        to: SocketAddr,
    ) -> Outgoing {
        let ruri = invite_rcvd
            .header("Contact")
            .and_then(uri_of)
            .or_else(|| invite_rcvd.header("From").and_then(uri_of))
            .unwrap_or("")
            .to_string();
        let routes = invite_rcvd.headers_all("Record-Route");
        let rcvd_to = invite_rcvd.header("To").unwrap_or("");
        let from = if invite_rcvd.to_tag().is_some() {
            rcvd_to.to_string()
        } else {
            format!("{rcvd_to};tag={}", self.tag)
        };
        let to_value = invite_rcvd.header("From").unwrap_or("").to_string();
        let call_id = invite_rcvd.call_id();
        let cseq = self.uas_cseq.fetch_add(1, Ordering::Relaxed);
        let contact = format!("<sip:peer@{}>", self.addr);
        let msg = self.dialog_request(
            method, &ruri, &routes, &from, &to_value, &call_id, cseq, &contact, body,
        );
        self.send(&msg, to);
        msg
    }

    /// Builds an in-dialog request with a new branch; Contact only for target-refresh methods.
    #[allow(clippy::too_many_arguments)]
    fn dialog_request(
        &self,
        method: &str,
        ruri: &str,
        routes: &[&str],
        from: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
        contact: &str,
        body: &str,
    ) -> Outgoing {
        let (via, branch) = self.new_via();
        let mut s = format!("{method} {ruri} SIP/2.0\r\n");
        s.push_str(&format!("Via: {via}\r\n"));
        s.push_str("Max-Forwards: 70\r\n");
        for r in routes {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str(&format!("From: {from}\r\n"));
        s.push_str(&format!("To: {to}\r\n"));
        s.push_str(&format!("Call-ID: {call_id}\r\n"));
        s.push_str(&format!("CSeq: {cseq} {method}\r\n"));
        if matches!(method, "INVITE" | "UPDATE") && !contact.is_empty() {
            s.push_str(&format!("Contact: {contact}\r\n"));
        }
        finish(&mut s, &[], body);
        Outgoing {
            text: s,
            call_id: call_id.to_string(),
            branch,
            from_tag: header_param(from, "tag").unwrap_or_default(),
            cseq,
        }
    }
}

/// ACK (non-2xx) or CANCEL in the INVITE's transaction: same top Via, R-URI, Route, From,
/// Call-ID and CSeq number; `to_value` as To; no body.
fn same_transaction_request(invite: &Outgoing, method: &str, to_value: &str) -> String {
    let n = cseq_num(invite.header("CSeq").unwrap_or(""));
    let mut s = format!("{method} {} SIP/2.0\r\n", invite.request_uri());
    s.push_str(&format!("Via: {}\r\n", invite.header("Via").unwrap_or("")));
    s.push_str("Max-Forwards: 70\r\n");
    for r in invite.headers_all("Route") {
        s.push_str(&format!("Route: {r}\r\n"));
    }
    s.push_str(&format!(
        "From: {}\r\n",
        invite.header("From").unwrap_or("")
    ));
    s.push_str(&format!("To: {to_value}\r\n"));
    s.push_str(&format!(
        "Call-ID: {}\r\n",
        invite.header("Call-ID").unwrap_or("")
    ));
    s.push_str(&format!("CSeq: {n} {method}\r\n"));
    finish(&mut s, &[], "");
    s
}

/// Appends `extra` header lines, Content-Type (SDP, when there is a body), Content-Length, the
/// blank line and the body.
fn finish(s: &mut String, extra: &[&str], body: &str) {
    for line in extra {
        s.push_str(line);
        s.push_str("\r\n");
    }
    if !body.is_empty() {
        s.push_str("Content-Type: application/sdp\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.push_str(body);
}

/// A minimal SDP audio offer (PCMU, PCMA, telephone-event) with `ip` in o= and c=.
pub fn sdp_offer(ip: IpAddr, port: u16) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\n\
         o=- {port} 1 IN {family} {ip}\r\n\
         s=-\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=sendrecv\r\n"
    )
}
