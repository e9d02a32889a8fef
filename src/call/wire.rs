//! Byte layout of the requests and responses the B2BUA writes on either leg.
//!
//! Owns: which headers of a received message may cross to the other leg (a whitelist, so that
//! topology hiding is the default: Via, Record-Route, Route, Contact, From, To, Call-ID and
//! anything unknown stay on their leg) and the shape of sipedge's own request lines, Via and
//! Contact. Must not: decide anything about call state.

use crate::sip::scan::{HeaderName, Message};
use crate::sip::write::{header, push_socket_addr, push_u64, response_head};
use std::net::SocketAddr;

/// End-to-end headers that describe the session rather than the hop, so they cross legs (SPEC
/// §3.4: X-headers pass through; Via, Record-Route, Route and Contact of the other leg never do).
const PASSED: &[&[u8]] = &[
    b"content-type",
    b"c",
    b"content-disposition",
    b"allow",
    b"supported",
    b"k",
    b"require",
    b"unsupported",
    b"rseq",
    b"rack",
    b"session-expires",
    b"x",
    b"min-se",
    b"reason",
    b"event",
    b"o",
    b"accept",
    b"retry-after",
    b"allow-events",
    b"u",
    b"subscription-state",
    b"info-package",
    b"recv-info",
];

/// True for a header that may be copied to the other leg.
pub fn is_passed(raw_name: &[u8]) -> bool {
    let x = raw_name.len() >= 2 && raw_name[..2].eq_ignore_ascii_case(b"x-");
    x || PASSED.iter().any(|n| raw_name.eq_ignore_ascii_case(n))
}

/// Copies the headers of `msg` that may cross to the other leg ([`is_passed`]).
pub fn push_passed(out: &mut Vec<u8>, msg: &Message<'_>) {
    for h in msg.headers.iter() {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        if is_passed(h.raw_name) {
            header(out, h.raw_name, h.value);
        }
    }
}

/// The header block (everything after the status line, before Contact/body) of any response to
/// `req`: its Vias (the top one with received/rport), From, To (with `to_tag` added when the
/// request had none), Call-ID and CSeq. Kept per server transaction so every later response to
/// the request (relayed provisionals, the final, retransmissions) is the same.
pub fn response_lines(req: &Message<'_>, src: SocketAddr, to_tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    response_head(&mut out, 200, "OK", req, src, to_tag);
    match memchr::memmem::find(&out, b"\r\n") {
        Some(i) => {
            out.drain(..i + 2);
        }
        None => out.clear(),
    }
    out
}

/// A response from stored `lines`; `contact` adds sipedge's Contact; `relayed` copies the
/// passed headers of the response being relayed; `body` is written with its Content-Length.
pub fn response(
    code: u16,
    reason: &[u8],
    lines: &[u8],
    contact: Option<SocketAddr>,
    relayed: Option<&Message<'_>>,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() + body.len() + 160);
    out.extend_from_slice(b"SIP/2.0 ");
    push_u64(&mut out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(lines);
    if let Some(local) = contact {
        push_contact(&mut out, local);
    }
    if let Some(msg) = relayed {
        push_passed(&mut out, msg);
    }
    out.extend_from_slice(b"Server: sipedge\r\n");
    finish_body(&mut out, body);
    out
}

/// Request line, sipedge's Via, Max-Forwards, From, To, Call-ID and CSeq. The caller adds
/// Contact and passed headers, then [`finish_body`].
#[allow(clippy::too_many_arguments)]
pub fn request_start(
    out: &mut Vec<u8>,
    method: &[u8],
    request_uri: &[u8],
    local: SocketAddr,
    branch: &[u8],
    max_forwards: u32,
    from: &[u8],
    to: &[u8],
    call_id: &[u8],
    cseq: u32,
) {
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(request_uri);
    out.extend_from_slice(b" SIP/2.0\r\nVia: SIP/2.0/UDP ");
    push_socket_addr(out, local);
    out.extend_from_slice(b";branch=");
    out.extend_from_slice(branch);
    out.extend_from_slice(b";rport\r\nMax-Forwards: ");
    push_u64(out, u64::from(max_forwards));
    out.extend_from_slice(b"\r\n");
    header(out, b"From", from);
    header(out, b"To", to);
    header(out, b"Call-ID", call_id);
    out.extend_from_slice(b"CSeq: ");
    push_u64(out, u64::from(cseq));
    out.push(b' ');
    out.extend_from_slice(method);
    out.extend_from_slice(b"\r\n");
}

pub fn push_contact(out: &mut Vec<u8>, local: SocketAddr) {
    out.extend_from_slice(b"Contact: <sip:sipedge@");
    push_socket_addr(out, local);
    out.extend_from_slice(b">\r\n");
}

/// `<sip:user@host:port>` for From/To/P-Asserted-Identity values.
pub fn name_addr(user: &str, host: SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(user.len() + 32);
    v.extend_from_slice(b"<sip:");
    v.extend_from_slice(user.as_bytes());
    v.push(b'@');
    push_socket_addr(&mut v, host);
    v.push(b'>');
    v
}

pub fn finish_body(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(b"Content-Length: ");
    push_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// `value;tag=tag`.
pub fn with_tag(value: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + tag.len() + 5);
    v.extend_from_slice(value);
    v.extend_from_slice(b";tag=");
    v.extend_from_slice(tag);
    v
}
