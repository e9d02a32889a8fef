//! Writing SIP responses into reused buffers.
//!
//! Owns: the byte layout of the responses sipedge originates. The caller hands in a `Vec<u8>`
//! that it clears and reuses, so once its capacity has grown nothing here allocates. Numbers and
//! addresses are formatted without the `fmt` machinery where it is hot.

use super::scan::{HeaderName, Message};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Reason phrases for the codes sipedge sends (RFC 3261 §21, RFC 6585 for 429).
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        429 => "Too Many Requests",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

/// Decimal digits of `n`. A status code, port or expiry is a handful of digits, and a copy of a
/// variable length is a `memcpy` call costing more than the digits: so the digits are laid out
/// left-aligned in a fixed 20-byte block, the whole block is appended (a fixed-size copy the
/// compiler inlines) and the tail cut off again.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    // Counted by comparison for the usual few digits: a division per digit costs more.
    let digits = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1_000..=9_999 => 4,
        10_000..=99_999 => 5,
        _ => {
            let (mut d, mut m) = (6, n / 1_000_000);
            while m > 0 {
                m /= 10;
                d += 1;
            }
            d
        }
    };
    let mut tmp = [0u8; 20];
    for d in tmp[..digits].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let len = out.len();
    out.extend_from_slice(&tmp);
    out.truncate(len + digits);
}

/// `a.b.c.d` formatted on the stack and appended as one fixed-size block, cut to length (every
/// response's Via carries one; see [`push_u64`] for why not a variable-length copy).
fn push_ipv4(out: &mut Vec<u8>, octets: [u8; 4]) {
    let mut tmp = [0u8; 15];
    let mut n = 0;
    for (k, o) in octets.into_iter().enumerate() {
        if k > 0 {
            tmp[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            tmp[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            tmp[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        tmp[n] = b'0' + o % 10;
        n += 1;
    }
    let len = out.len();
    out.extend_from_slice(&tmp);
    out.truncate(len + n);
}

pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4.octets()),
        // Rare on the access side; the fmt path is fine here.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `host:port` with IPv6 in brackets.
pub fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V6(_) => {
            out.push(b'[');
            push_ip(out, addr.ip());
            out.push(b']');
        }
        IpAddr::V4(_) => push_ip(out, addr.ip()),
    }
    out.push(b':');
    push_u64(out, u64::from(addr.port()));
}

/// Writes the topmost via-parm with RFC 3581 / RFC 3261 §18.2.1 treatment: `received` carries
/// the source address (always when `rport` was asked for, else when it differs from the sent-by
/// host) and a bare `rport` gets the source port. Existing `received`/`rport` are replaced.
fn push_top_via(out: &mut Vec<u8>, via_parm: &[u8], src: SocketAddr) {
    // Parameters are found by jumping between `;`s (a via-parm has two or three), not by
    // walking every byte of the branch.
    let mut semis = memchr::memchr_iter(b';', via_parm);
    let first_semi = semis.next();
    let sent_by_part = &via_parm[..first_semi.unwrap_or(via_parm.len())];
    out.extend_from_slice(trim(sent_by_part));
    let mut has_rport = false;
    let mut from = first_semi.map(|i| i + 1);
    while let Some(start) = from {
        let next = semis.next();
        let p = trim(&via_parm[start..next.unwrap_or(via_parm.len())]);
        from = next.map(|i| i + 1);
        // Only names starting with r can be rport or received: the rest are copied unread.
        if matches!(p.first(), Some(b'r' | b'R')) {
            let name_end = memchr::memchr(b'=', p).unwrap_or(p.len());
            let name = trim(&p[..name_end]);
            if name.eq_ignore_ascii_case(b"rport") {
                has_rport = true;
                continue;
            }
            if name.eq_ignore_ascii_case(b"received") {
                continue;
            }
        }
        out.push(b';');
        out.extend_from_slice(p);
    }
    let host = sent_by_host(sent_by_part);
    if has_rport || !host_is_ip(host, src.ip()) {
        out.extend_from_slice(b";received=");
        push_ip(out, src.ip());
    }
    if has_rport {
        out.extend_from_slice(b";rport=");
        push_u64(out, u64::from(src.port()));
    }
}

/// The host of `SIP/2.0/UDP host[:port]`.
fn sent_by_host(sent_by_part: &[u8]) -> &[u8] {
    let t = trim(sent_by_part);
    // after the protocol: the first whitespace run
    let start = t
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(t.len());
    let hp = trim(&t[start..]);
    if let Some(rest) = hp.strip_prefix(b"[") {
        let end = rest.iter().position(|&b| b == b']').unwrap_or(rest.len());
        return &rest[..end];
    }
    match hp.iter().position(|&b| b == b':') {
        Some(i) => &hp[..i],
        None => hp,
    }
}

fn host_is_ip(host: &[u8], ip: IpAddr) -> bool {
    match ip {
        // The common case, read without UTF-8 checks or the std parser (a REGISTER's cost).
        IpAddr::V4(v4) => dotted_quad(host) == Some(v4.octets()),
        IpAddr::V6(_) => {
            std::str::from_utf8(host)
                .ok()
                .and_then(|h| h.parse::<IpAddr>().ok())
                == Some(ip)
        }
    }
}

/// `a.b.c.d` with decimal octets and no leading zeros, as `Ipv4Addr`'s parser accepts them.
fn dotted_quad(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p[0] == b'0') {
            return None;
        }
        let mut v = 0u32;
        for &d in p {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(d - b'0');
        }
        *o = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn trim(mut s: &[u8]) -> &[u8] {
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

//= https://www.rfc-editor.org/rfc/rfc3261#section-18.2.2
//# the response MUST be sent to the address contained in the "received" parameter, if it is
//# present, using the port indicated in the "sent-by" value, or using port 5060 if none is
//# specified explicitly.
//= https://www.rfc-editor.org/rfc/rfc3581#section-4
//# it MUST send the response to the IP address from which the request was received, and the
//# port from which the request was received (when the rport parameter is present).
/// Where a response to a request received over UDP from `src` goes. `received` is always the
/// source address (we add it), so only the port depends on the Via.
pub fn response_destination(src: SocketAddr, via: &super::headers::Via<'_>) -> SocketAddr {
    if via.rport.is_some() {
        src
    } else {
        SocketAddr::new(src.ip(), via.port.unwrap_or(5060))
    }
}

/// Status line plus the headers a response copies from its request (RFC 3261 §8.2.6.2): every
/// Via (the top one with received/rport), From, To (with `to_tag` added when the request had
/// none and the code is not 100), Call-ID and CSeq. The caller appends its own headers and then
/// calls [`finish`].
pub fn response_head(
    out: &mut Vec<u8>,
    code: u16,
    reason_phrase: &str,
    req: &Message<'_>,
    src: SocketAddr,
    to_tag: &[u8],
) {
    out.clear();
    out.extend_from_slice(b"SIP/2.0 ");
    push_u64(out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason_phrase.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut first_via = true;
    for h in req.headers.iter() {
        match h.name {
            HeaderName::Via => {
                out.extend_from_slice(b"Via: ");
                if first_via {
                    first_via = false;
                    let (top, rest) = split_first_via(h.value);
                    push_top_via(out, top, src);
                    if let Some(rest) = rest {
                        out.push(b',');
                        out.extend_from_slice(rest);
                    }
                } else {
                    out.extend_from_slice(h.value);
                }
                out.extend_from_slice(b"\r\n");
            }
            HeaderName::From => header(out, b"From", h.value),
            HeaderName::To => {
                out.extend_from_slice(b"To: ");
                out.extend_from_slice(h.value);
                if code != 100 && !has_tag(h.value) && !to_tag.is_empty() {
                    out.extend_from_slice(b";tag=");
                    out.extend_from_slice(to_tag);
                }
                out.extend_from_slice(b"\r\n");
            }
            HeaderName::CallId => header(out, b"Call-ID", h.value),
            HeaderName::CSeq => header(out, b"CSeq", h.value),
            _ => {}
        }
    }
}

/// Splits a Via header value at the first via-parm boundary (a comma outside quotes).
fn split_first_via(value: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut in_quotes = false;
    let mut from = 0;
    // Commas and quotes are rare in a Via: jump between them instead of walking every byte.
    while let Some(p) = memchr::memchr2(b',', b'"', &value[from..]) {
        let i = from + p;
        if value[i] == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes {
            return (&value[..i], Some(&value[i + 1..]));
        }
        from = i + 1;
    }
    (value, None)
}

/// Whether a From/To value carries a `tag` header parameter (after the URI).
pub fn has_tag(value: &[u8]) -> bool {
    // Params after `>` if the URI is bracketed; otherwise any `;tag=` (a bare URI's own params
    // cannot contain tag legitimately).
    let params = match memchr::memrchr(b'>', value) {
        Some(i) => &value[i..],
        None => value,
    };
    params.windows(5).any(|w| {
        w[0] == b';' && w[1..4].eq_ignore_ascii_case(b"tag") && (w[4] == b'=' || w[4] == b' ')
    })
}

pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn header_u64(out: &mut Vec<u8>, name: &[u8], value: u64) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    push_u64(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Ends a response without a body.
pub fn finish(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Server: sipedge\r\nContent-Length: 0\r\n\r\n");
}

/// Hex of a 64-bit value (tags), 16 chars.
pub fn push_hex_u64(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..16).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotted_quads_read_as_the_std_parser_reads_them() {
        for s in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0",
            "10.0.0.1.2",
            "256.1.1.1",
            "01.1.1.1",
            "1..1.1",
            "1.1.1.",
            "a.b.c.d",
            "1.1.1.1a",
            "",
            "1.2.3.4:5060",
            "::1",
            "000.1.1.1",
            "99.999.1.1",
            "1.2.3.04",
        ] {
            let std = s.parse::<std::net::Ipv4Addr>().ok().map(|a| a.octets());
            assert_eq!(dotted_quad(s.as_bytes()), std, "{s:?}");
        }
        let src: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(host_is_ip(b"192.0.2.7", src));
        assert!(!host_is_ip(b"192.0.2.70", src));
        assert!(!host_is_ip(b"pbx.example.com", src));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(host_is_ip(b"2001:DB8::1", v6));
    }

    use super::*;

    #[test]
    fn ipv4_formats_as_std_does() {
        for o in [
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [10, 0, 99, 100],
            [1, 20, 109, 250],
        ] {
            let mut v = Vec::new();
            push_ipv4(&mut v, o);
            assert_eq!(v, std::net::Ipv4Addr::from(o).to_string().as_bytes());
        }
    }

    #[test]
    fn first_via_parm_split_outside_quotes() {
        let (top, rest) =
            split_first_via(b"SIP/2.0/UDP a;x=\"p,q\";branch=z9hG4bK1, SIP/2.0/UDP b");
        assert_eq!(top, b"SIP/2.0/UDP a;x=\"p,q\";branch=z9hG4bK1");
        assert_eq!(rest, Some(&b" SIP/2.0/UDP b"[..]));
        assert_eq!(
            split_first_via(b"SIP/2.0/UDP a"),
            (&b"SIP/2.0/UDP a"[..], None)
        );
        let mut out = Vec::new();
        let src: SocketAddr = "192.0.2.9:5062".parse().unwrap();
        push_top_via(
            &mut out,
            b"SIP/2.0/UDP a;Rport = 7 ;received=1.1.1.1;ttl=3;ra",
            src,
        );
        assert_eq!(out, b"SIP/2.0/UDP a;ttl=3;ra;received=192.0.2.9;rport=5062");
    }

    #[test]
    fn numbers_and_addresses() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, 18446744073709551615);
        v.push(b' ');
        // Every digit-count boundary.
        for n in [
            9, 10, 99, 100, 999, 1_000, 9_999, 10_000, 99_999, 100_000, 999_999, 1_000_000,
        ] {
            push_u64(&mut v, n);
            v.push(b' ');
        }
        push_socket_addr(&mut v, "10.1.2.3:5060".parse().unwrap());
        v.push(b' ');
        push_socket_addr(&mut v, "[::1]:5070".parse().unwrap());
        assert_eq!(
            v,
            b"0 18446744073709551615 9 10 99 100 999 1000 9999 10000 99999 100000 999999 1000000 \
              10.1.2.3:5060 [::1]:5070"
        );
    }

    #[test]
    fn top_via_gets_received_and_rport() {
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let mut v = Vec::new();
        push_top_via(
            &mut v,
            b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport",
            src,
        );
        assert_eq!(
            v,
            b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=192.0.2.7;rport=40000"
        );
        v.clear();
        // sent-by equals the source: no received, no rport asked
        push_top_via(&mut v, b"SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK2", src);
        assert_eq!(v, b"SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK2");
        v.clear();
        push_top_via(
            &mut v,
            b"SIP/2.0/UDP pbx.example.com;received=1.1.1.1;branch=z9hG4bK3",
            src,
        );
        assert_eq!(
            v,
            b"SIP/2.0/UDP pbx.example.com;branch=z9hG4bK3;received=192.0.2.7"
        );
    }

    #[test]
    fn responses_go_to_the_source_ip_and_rport_or_via_port() {
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let via = |v: &'static [u8]| crate::sip::headers::parse_via(v).unwrap();
        assert_eq!(
            response_destination(
                src,
                &via(b"SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK1")
            ),
            src
        );
        assert_eq!(
            response_destination(src, &via(b"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1")),
            "192.0.2.7:5070".parse().unwrap()
        );
        assert_eq!(
            response_destination(src, &via(b"SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1")),
            "192.0.2.7:5060".parse().unwrap()
        );
    }

    #[test]
    fn tags_are_found_only_as_params() {
        assert!(has_tag(b"<sip:a@b>;tag=1"));
        assert!(has_tag(b"\"x\" <sip:a@b>;foo=bar;TAG=1"));
        assert!(!has_tag(b"<sip:a@b;tag=1>"));
        assert!(!has_tag(b"<sip:a@b>"));
        assert!(has_tag(b"sip:a@b;tag=9"));
    }

    #[test]
    fn first_via_split() {
        assert_eq!(
            split_first_via(b"SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b"),
            (&b"SIP/2.0/UDP a;branch=1"[..], Some(&b" SIP/2.0/UDP b"[..]))
        );
        assert_eq!(
            split_first_via(b"SIP/2.0/UDP a"),
            (&b"SIP/2.0/UDP a"[..], None)
        );
    }
}
