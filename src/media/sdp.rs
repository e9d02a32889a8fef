//! SDP (RFC 4566) rewriting for the media relay, as a sans-IO function over bytes.
//!
//! Owns: making an offer or answer point at sipedge instead of at the endpoint (`o=`, `c=`, the
//! `m=` ports, `a=rtcp`), narrowing audio codecs to what policy allows, and reporting where the
//! endpoint itself wants media so the relay knows where to send. Ports are chosen by the caller
//! and policy (which codecs) comes in as a list: this module only applies them.
//!
//! Why a line rewriter and not an SDP model: whatever sipedge does not understand (crypto keys,
//! fingerprints, ICE, bandwidth, vendor attributes) must reach the other side exactly as written,
//! so every line is copied byte for byte unless a rule below names it. Only line endings are
//! normalised: RFC 4566 §5 requires CRLF, and some endpoints send bare LF.
//!
//! Never panics on any input; anything that cannot be read as SDP is [`SdpError::Malformed`].
//! It allocates freely: it runs once per offer/answer in signalling, never per RTP packet.

use memchr::memchr;
use smallvec::SmallVec;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What sipedge learned from one SDP body, per media line, in order of the m= lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaLine {
    /// "audio", "video", ... as written.
    pub kind: String,
    /// Where the endpoint wants RTP: the media-level c= address if present, else the
    /// session-level c=, with the m= port. None when there is no usable address (c= missing or
    /// unparseable, an unspecified hold address such as 0.0.0.0) or the port is 0.
    pub remote: Option<SocketAddr>,
    /// The m= line's port was 0 (stream disabled/rejected).
    pub disabled: bool,
    /// a=rtcp-mux present in this media section.
    pub rtcp_mux: bool,
    /// Transport protocol token of the m= line, e.g. "RTP/AVP", "RTP/SAVP".
    pub proto: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpError {
    /// Not parseable as SDP (no v= line first, a line without "x=" form, an m= line without
    /// media/port/proto, an o= line without its six fields).
    Malformed,
    /// Codec filtering removed every audio codec of an audio m= line that was not disabled.
    NoCodecLeft,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Malformed => f.write_str("malformed SDP"),
            SdpError::NoCodecLeft => f.write_str("no allowed audio codec left in SDP"),
        }
    }
}

impl std::error::Error for SdpError {}

/// Rewrites `body` (an SDP) into `out` (cleared first) so that media flows through sipedge.
///
/// - `o=`: the unicast address becomes `advertise` and the addrtype follows it (IP4/IP6); the
///   other fields are kept byte for byte, because session id/version are the endpoint's to bump.
/// - every `c=` becomes `c=IN IP4|IP6 <advertise>`, except an unspecified address
///   (0.0.0.0, RFC 2543 hold, or `::`), which is kept: hold must stay hold.
/// - the N-th `m=` line gets port `ports[N]`, or 0 (refused) when `ports` has no entry N; an
///   input port of 0 stays 0. Any "/<count>" suffix is dropped: sipedge relays one port pair.
/// - `a=rtcp:` becomes `a=rtcp:<port+1>` (with `IN IP4|IP6 <advertise>` if it carried an
///   address). It is dropped where there is no RTCP port to advertise: on a stream whose output
///   port is 0 or 65535, and at session level (RFC 3605 defines it per media only), so the
///   endpoint's address never leaks.
/// - with `allowed` non-empty, each active `m=audio` line keeps only payload types whose encoding
///   name (from `a=rtpmap`, else the RFC 3551 static table) is allowed (case-insensitive), plus
///   `telephone-event` and `CN`; the `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines of removed
///   payload types are dropped. A stream left with no real codec is
///   [`SdpError::NoCodecLeft`]. Disabled streams are not filtered (RFC 4566 needs at least one
///   format on every m= line and they carry no media anyway).
/// - everything else is copied byte for byte; empty lines are dropped; output lines end in CRLF.
///
/// Returns the media lines as seen in the input (the endpoint's own addresses and ports). On
/// error `out` is left empty, so a half-rewritten body can never be sent.
pub fn rewrite(
    body: &[u8],
    advertise: IpAddr,
    ports: &[u16],
    allowed: Option<&[Box<str>]>,
    out: &mut Vec<u8>,
) -> Result<Vec<MediaLine>, SdpError> {
    out.clear();
    let result = rewrite_into(body, advertise, ports, allowed, out);
    if result.is_err() {
        out.clear();
    }
    result
}

/// Parses without rewriting (same [`MediaLine`] semantics as [`rewrite`]).
pub fn media_lines(body: &[u8]) -> Result<Vec<MediaLine>, SdpError> {
    describe_all(&Sdp::parse(body)?)
}

fn rewrite_into(
    body: &[u8],
    advertise: IpAddr,
    ports: &[u16],
    allowed: Option<&[Box<str>]>,
    out: &mut Vec<u8>,
) -> Result<Vec<MediaLine>, SdpError> {
    let sdp = Sdp::parse(body)?;
    let media = describe_all(&sdp)?;
    let sections = sdp.sections();
    // Every decision that can fail is taken before the first byte is written.
    let plans = sections
        .iter()
        .enumerate()
        .map(|(index, section)| plan_section(section, index, ports, allowed))
        .collect::<Result<SmallVec<[_; 4]>, _>>()?;
    let adv = Advertise::new(advertise);
    out.reserve(body.len() + 64);
    for line in sdp.session() {
        write_session_line(line, &adv, out)?;
    }
    for (section, plan) in sections.iter().zip(&plans) {
        write_section(section, plan, &adv, out);
    }
    Ok(media)
}

// ---------------------------------------------------------------------------------------------
// Lines and sections

/// One `<type>=<value>` line, without its line ending.
#[derive(Clone, Copy)]
struct Line<'a> {
    kind: u8,
    value: &'a [u8],
}

/// Lines and sections on the stack for the SDP of an ordinary call (one or two m= lines).
type Lines<'a> = SmallVec<[Line<'a>; 24]>;

struct Sdp<'a> {
    lines: Lines<'a>,
    /// Index of the first m= line (`lines.len()` when there is none): everything before it is
    /// session level, everything from it on belongs to some media section.
    first_media: usize,
}

impl<'a> Sdp<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, SdpError> {
        let lines = split_lines(body)?;
        match lines.first() {
            Some(line) if line.kind == b'v' => {}
            _ => return Err(SdpError::Malformed),
        }
        let first_media = lines
            .iter()
            .position(|line| line.kind == b'm')
            .unwrap_or(lines.len());
        Ok(Sdp { lines, first_media })
    }

    fn session(&self) -> &[Line<'a>] {
        self.lines.get(..self.first_media).unwrap_or(&[])
    }

    /// The media sections, each starting with its m= line.
    fn sections(&self) -> SmallVec<[&[Line<'a>]; 4]> {
        let media = self.lines.get(self.first_media..).unwrap_or(&[]);
        let mut sections = SmallVec::new();
        let mut rest = media;
        while let Some((_, after_m)) = rest.split_first() {
            let len = 1 + after_m
                .iter()
                .position(|line| line.kind == b'm')
                .unwrap_or(after_m.len());
            let (section, next) = rest.split_at(len);
            sections.push(section);
            rest = next;
        }
        sections
    }
}

/// Splits at LF, tolerating a CR before it; empty lines (a trailing CRLF, doubled line ends) are
/// skipped rather than rejected because endpoints send them and they carry nothing.
fn split_lines(body: &[u8]) -> Result<Lines<'_>, SdpError> {
    let mut lines = SmallVec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (raw, next) = match memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if !raw.is_empty() {
            lines.push(parse_line(raw)?);
        }
    }
    Ok(lines)
}

fn parse_line(raw: &[u8]) -> Result<Line<'_>, SdpError> {
    match raw {
        [kind, b'=', value @ ..] if kind.is_ascii_alphabetic() => Ok(Line { kind: *kind, value }),
        _ => Err(SdpError::Malformed),
    }
}

// ---------------------------------------------------------------------------------------------
// Fields

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Byte ranges of the blank-separated fields of a line value. RFC 4566 says single SP; extra
/// blanks are tolerated because being strict here would only turn calls away.
fn token_spans(value: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = value.get(pos..)?;
        let start = pos + rest.iter().position(|b| !is_blank(*b))?;
        let len = value
            .get(start..)?
            .iter()
            .position(|b| is_blank(*b))
            .unwrap_or(value.len() - start);
        pos = start + len;
        Some((start, pos))
    })
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    token_spans(value).filter_map(move |(start, end)| value.get(start..end))
}

fn parse_u16(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    digits.iter().try_fold(0u16, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u16::from(b - b'0'))
    })
}

/// An RTP payload type (RFC 3550: 7 bits).
fn parse_pt(token: &[u8]) -> Option<u8> {
    parse_u16(token)
        .filter(|pt| *pt < 128)
        .and_then(|pt| u8::try_from(pt).ok())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// m=, c= and a= values

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`
struct MLine<'a> {
    media: &'a [u8],
    port: u16,
    proto: &'a [u8],
    fmts: SmallVec<[&'a [u8]; 16]>,
}

fn parse_mline(value: &[u8]) -> Result<MLine<'_>, SdpError> {
    let mut fields = tokens(value);
    let media = fields.next().ok_or(SdpError::Malformed)?;
    let port_field = fields.next().ok_or(SdpError::Malformed)?;
    let proto = fields.next().ok_or(SdpError::Malformed)?;
    let port_digits = match memchr(b'/', port_field) {
        Some(i) => &port_field[..i],
        None => port_field,
    };
    let port = parse_u16(port_digits).ok_or(SdpError::Malformed)?;
    Ok(MLine {
        media,
        port,
        proto,
        fmts: fields.collect(),
    })
}

/// The address of `c=IN IP4|IP6 <addr>[/<ttl>[/<n>]]`; None for anything sipedge cannot send to
/// (another nettype, a hostname, a mismatched addrtype).
fn connection_addr(value: &[u8]) -> Option<IpAddr> {
    let mut fields = tokens(value);
    let (nettype, addrtype, addr) = (fields.next()?, fields.next()?, fields.next()?);
    if !nettype.eq_ignore_ascii_case(b"IN") {
        return None;
    }
    let host = match memchr(b'/', addr) {
        Some(i) => &addr[..i],
        None => addr,
    };
    let host = std::str::from_utf8(host).ok()?;
    if addrtype.eq_ignore_ascii_case(b"IP4") {
        host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else if addrtype.eq_ignore_ascii_case(b"IP6") {
        host.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        None
    }
}

/// The value of the first c= line among `lines`.
fn first_connection<'a>(lines: &[Line<'a>]) -> Option<&'a [u8]> {
    lines
        .iter()
        .find(|line| line.kind == b'c')
        .map(|line| line.value)
}

/// `a=<name>[:<value>]` split into name (trailing blanks trimmed) and value.
fn split_attribute(value: &[u8]) -> (&[u8], &[u8]) {
    let (name, rest) = match memchr(b':', value) {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &value[value.len()..]),
    };
    let trimmed = name.len() - name.iter().rev().take_while(|b| is_blank(**b)).count();
    (&name[..trimmed], rest)
}

fn is_attribute(line: &Line<'_>, wanted: &[u8]) -> bool {
    line.kind == b'a' && split_attribute(line.value).0.eq_ignore_ascii_case(wanted)
}

/// The payload type an `a=rtpmap:`, `a=fmtp:` or `a=rtcp-fb:` line is about.
fn payload_attribute(name: &[u8], rest: &[u8]) -> Option<u8> {
    let per_payload = [&b"rtpmap"[..], b"fmtp", b"rtcp-fb"];
    if !per_payload.iter().any(|n| name.eq_ignore_ascii_case(n)) {
        return None;
    }
    tokens(rest).next().and_then(parse_pt)
}

// ---------------------------------------------------------------------------------------------
// What the endpoint asked for

fn describe_all(sdp: &Sdp<'_>) -> Result<Vec<MediaLine>, SdpError> {
    let session_c = first_connection(sdp.session());
    sdp.sections()
        .iter()
        .map(|section| describe(section, session_c))
        .collect()
}

fn describe(section: &[Line<'_>], session_c: Option<&[u8]>) -> Result<MediaLine, SdpError> {
    let (m_line, attributes) = section.split_first().ok_or(SdpError::Malformed)?;
    let m = parse_mline(m_line.value)?;
    // A media-level c= replaces the session one even when sipedge cannot read it: falling back
    // would send media where the endpoint said not to.
    let remote = first_connection(attributes)
        .or(session_c)
        .and_then(connection_addr)
        .filter(|ip| !ip.is_unspecified() && m.port != 0)
        .map(|ip| SocketAddr::new(ip, m.port));
    Ok(MediaLine {
        kind: lossy(m.media),
        remote,
        disabled: m.port == 0,
        rtcp_mux: attributes
            .iter()
            .any(|line| is_attribute(line, b"rtcp-mux")),
        proto: lossy(m.proto),
    })
}

// ---------------------------------------------------------------------------------------------
// Codec filtering

/// RFC 3551 §6 static payload types, for m= formats listed without an a=rtpmap.
fn static_encoding(pt: u8) -> Option<&'static [u8]> {
    let name: &'static [u8] = match pt {
        0 => b"PCMU",
        3 => b"GSM",
        4 => b"G723",
        5 | 6 | 16 | 17 => b"DVI4",
        7 => b"LPC",
        8 => b"PCMA",
        9 => b"G722",
        10 | 11 => b"L16",
        12 => b"QCELP",
        13 => b"CN",
        14 => b"MPA",
        15 => b"G728",
        18 => b"G729",
        _ => return None,
    };
    Some(name)
}

/// The encoding name of `pt` in this media section: its a=rtpmap if any (it overrides the
/// static table), else the static name.
fn encoding_name<'a>(pt: u8, attributes: &[Line<'a>]) -> Option<&'a [u8]> {
    let mapped = attributes
        .iter()
        .filter(|line| line.kind == b'a')
        .find_map(|line| rtpmap_name(line.value, pt));
    mapped.or_else(|| static_encoding(pt))
}

/// `a=rtpmap:<pt> <name>/<rate>[/<channels>]` -> name, if it is about `pt`.
fn rtpmap_name(value: &[u8], pt: u8) -> Option<&[u8]> {
    let (name, rest) = split_attribute(value);
    if !name.eq_ignore_ascii_case(b"rtpmap") {
        return None;
    }
    let mut fields = tokens(rest);
    if fields.next().and_then(parse_pt) != Some(pt) {
        return None;
    }
    let encoding = fields.next()?;
    Some(match memchr(b'/', encoding) {
        Some(i) => &encoding[..i],
        None => encoding,
    })
}

/// DTMF and comfort noise ride along with whatever codec is chosen, so policy never removes
/// them; alone they cannot carry a call, so they never count as a codec left.
fn is_auxiliary(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"telephone-event") || name.eq_ignore_ascii_case(b"CN")
}

struct Formats<'a> {
    kept: SmallVec<[&'a [u8]; 16]>,
    /// Bit `pt` set: payload type `pt` was removed, its per-payload attributes go too.
    removed: u128,
}

fn keep_all<'a>(fmts: &[&'a [u8]]) -> Formats<'a> {
    Formats {
        kept: fmts.iter().copied().collect(),
        removed: 0,
    }
}

fn filter_codecs<'a>(
    fmts: &[&'a [u8]],
    attributes: &[Line<'a>],
    allowed: &[Box<str>],
) -> Result<Formats<'a>, SdpError> {
    let mut formats = Formats {
        kept: SmallVec::new(),
        removed: 0,
    };
    let mut codecs = 0usize;
    for &fmt in fmts {
        let pt = parse_pt(fmt);
        let name = pt.and_then(|pt| encoding_name(pt, attributes));
        match name {
            Some(name) if is_auxiliary(name) => formats.kept.push(fmt),
            Some(name)
                if allowed
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(name)) =>
            {
                formats.kept.push(fmt);
                codecs += 1;
            }
            _ => {
                if let Some(pt) = pt {
                    formats.removed |= 1u128 << pt;
                }
            }
        }
    }
    if codecs == 0 {
        return Err(SdpError::NoCodecLeft);
    }
    Ok(formats)
}

// ---------------------------------------------------------------------------------------------
// Rewriting

/// `advertise` as written in c=, o= and a=rtcp.
struct Advertise {
    addrtype: &'static [u8],
    addr: Vec<u8>,
}

impl Advertise {
    fn new(ip: IpAddr) -> Self {
        let addrtype: &'static [u8] = match ip {
            IpAddr::V4(_) => b"IP4",
            IpAddr::V6(_) => b"IP6",
        };
        let mut addr = Vec::with_capacity(40);
        crate::sip::write::push_ip(&mut addr, ip);
        Advertise { addrtype, addr }
    }
}

/// What to write for one media section, decided before writing starts.
struct SectionPlan<'a> {
    media: &'a [u8],
    proto: &'a [u8],
    port: u16,
    formats: Formats<'a>,
}

fn plan_section<'a>(
    section: &[Line<'a>],
    index: usize,
    ports: &[u16],
    allowed: Option<&[Box<str>]>,
) -> Result<SectionPlan<'a>, SdpError> {
    let (m_line, attributes) = section.split_first().ok_or(SdpError::Malformed)?;
    let m = parse_mline(m_line.value)?;
    let port = match m.port {
        0 => 0,
        _ => ports.get(index).copied().unwrap_or(0),
    };
    let filter = allowed
        .filter(|list| !list.is_empty())
        .filter(|_| port != 0 && m.media.eq_ignore_ascii_case(b"audio"));
    let formats = match filter {
        Some(list) => filter_codecs(&m.fmts, attributes, list)?,
        None => keep_all(&m.fmts),
    };
    Ok(SectionPlan {
        media: m.media,
        proto: m.proto,
        port,
        formats,
    })
}

fn push_line(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.push(b'=');
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_port(out: &mut Vec<u8>, port: u16) {
    crate::sip::write::push_u64(out, u64::from(port));
}

fn write_session_line(line: &Line<'_>, adv: &Advertise, out: &mut Vec<u8>) -> Result<(), SdpError> {
    match line.kind {
        b'o' => write_origin(line.value, adv, out)?,
        b'c' => write_connection(line.value, adv, out),
        b'a' if is_attribute(line, b"rtcp") => {}
        _ => push_line(out, line.kind, line.value),
    }
    Ok(())
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`: only the
/// last two change, everything around them (separators included) is kept as written.
fn write_origin(value: &[u8], adv: &Advertise, out: &mut Vec<u8>) -> Result<(), SdpError> {
    let spans: SmallVec<[(usize, usize); 8]> = token_spans(value).collect();
    let (Some(&(type_start, type_end)), Some(&(addr_start, addr_end))) =
        (spans.get(4), spans.get(5))
    else {
        return Err(SdpError::Malformed);
    };
    let (Some(head), Some(between), Some(tail)) = (
        value.get(..type_start),
        value.get(type_end..addr_start),
        value.get(addr_end..),
    ) else {
        return Err(SdpError::Malformed);
    };
    out.extend_from_slice(b"o=");
    out.extend_from_slice(head);
    out.extend_from_slice(adv.addrtype);
    out.extend_from_slice(between);
    out.extend_from_slice(&adv.addr);
    out.extend_from_slice(tail);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fn write_connection(value: &[u8], adv: &Advertise, out: &mut Vec<u8>) {
    if connection_addr(value).is_some_and(|ip| ip.is_unspecified()) {
        push_line(out, b'c', value);
        return;
    }
    out.extend_from_slice(b"c=IN ");
    out.extend_from_slice(adv.addrtype);
    out.push(b' ');
    out.extend_from_slice(&adv.addr);
    out.extend_from_slice(b"\r\n");
}

fn write_section(section: &[Line<'_>], plan: &SectionPlan<'_>, adv: &Advertise, out: &mut Vec<u8>) {
    write_mline(plan, out);
    for line in section.iter().skip(1) {
        match line.kind {
            b'c' => write_connection(line.value, adv, out),
            b'a' => write_media_attribute(line.value, plan, adv, out),
            _ => push_line(out, line.kind, line.value),
        }
    }
}

fn write_mline(plan: &SectionPlan<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"m=");
    out.extend_from_slice(plan.media);
    out.push(b' ');
    push_port(out, plan.port);
    out.push(b' ');
    out.extend_from_slice(plan.proto);
    for fmt in &plan.formats.kept {
        out.push(b' ');
        out.extend_from_slice(fmt);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_media_attribute(value: &[u8], plan: &SectionPlan<'_>, adv: &Advertise, out: &mut Vec<u8>) {
    let (name, rest) = split_attribute(value);
    if name.eq_ignore_ascii_case(b"rtcp") {
        write_rtcp(rest, plan.port, adv, out);
        return;
    }
    let removed =
        payload_attribute(name, rest).is_some_and(|pt| plan.formats.removed & (1u128 << pt) != 0);
    if !removed {
        push_line(out, b'a', value);
    }
}

/// RFC 3605 `a=rtcp:<port> [IN IP4|IP6 <addr>]`: sipedge relays RTCP on the port after RTP.
fn write_rtcp(rest: &[u8], rtp_port: u16, adv: &Advertise, out: &mut Vec<u8>) {
    let Some(rtcp_port) = rtp_port.checked_add(1).filter(|_| rtp_port != 0) else {
        return;
    };
    out.extend_from_slice(b"a=rtcp:");
    push_port(out, rtcp_port);
    if tokens(rest).nth(1).is_some() {
        out.extend_from_slice(b" IN ");
        out.extend_from_slice(adv.addrtype);
        out.push(b' ');
        out.extend_from_slice(&adv.addr);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const ADV: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));

    const OFFER: &str = "v=0\r\n\
        o=alice 2890844526 2890844527 IN IP4 10.0.0.1\r\n\
        s=-\r\n\
        c=IN IP4 10.0.0.1\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 0 8 18 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:18 G729/8000\r\n\
        a=fmtp:18 annexb=no\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=rtcp:49171 IN IP4 10.0.0.1\r\n\
        a=sendrecv\r\n";

    fn names(list: &[&str]) -> Vec<Box<str>> {
        list.iter().map(|s| Box::from(*s)).collect()
    }

    fn run(
        body: &str,
        ports: &[u16],
        allowed: Option<&[Box<str>]>,
    ) -> (Result<Vec<MediaLine>, SdpError>, String) {
        let mut out = b"stale".to_vec();
        let result = rewrite(body.as_bytes(), ADV, ports, allowed, &mut out);
        (
            result,
            String::from_utf8(out).expect("output is UTF-8 for UTF-8 input"),
        )
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("test address"))
    }

    #[test]
    fn rewrites_origin_session_connection_port_and_rtcp() {
        let (result, out) = run(OFFER, &[30000], None);
        assert_eq!(
            out,
            "v=0\r\n\
             o=alice 2890844526 2890844527 IN IP4 203.0.113.5\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.5\r\n\
             t=0 0\r\n\
             m=audio 30000 RTP/AVP 0 8 18 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:18 G729/8000\r\n\
             a=fmtp:18 annexb=no\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-15\r\n\
             a=rtcp:30001 IN IP4 203.0.113.5\r\n\
             a=sendrecv\r\n"
        );
        assert_eq!(
            result,
            Ok(vec![MediaLine {
                kind: "audio".into(),
                remote: addr("10.0.0.1:49170"),
                disabled: false,
                rtcp_mux: false,
                proto: "RTP/AVP".into(),
            }])
        );
    }

    #[test]
    fn rtcp_without_address_gets_only_the_port() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\na=rtcp:4001\r\n";
        let (_, out) = run(body, &[30000], None);
        assert!(
            out.ends_with("m=audio 30000 RTP/AVP 0\r\na=rtcp:30001\r\n"),
            "{out}"
        );
    }

    #[test]
    fn media_level_connection_overrides_session() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.7\r\n\
                    m=video 5000 RTP/AVP 96\r\n";
        let (result, out) = run(body, &[30000, 30002], None);
        let media = result.expect("valid");
        assert_eq!(media[0].remote, addr("192.0.2.7:4000"));
        assert_eq!(media[1].remote, addr("10.0.0.1:5000"));
        assert!(
            out.contains("m=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.5\r\n"),
            "{out}"
        );
        assert!(
            !out.contains("192.0.2.7") && !out.contains("10.0.0.1"),
            "{out}"
        );
    }

    #[test]
    fn stream_without_allocated_port_is_refused() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\n\
                    m=video 5000/2 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp:5001\r\n";
        let (result, out) = run(body, &[30000], None);
        assert!(out.contains("m=audio 30000 RTP/AVP 0\r\n"), "{out}");
        assert!(
            out.ends_with("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"),
            "refused stream keeps its formats and loses a=rtcp: {out}"
        );
        let media = result.expect("valid");
        assert_eq!(media[1].remote, addr("10.0.0.1:5000"), "input as seen");
        assert!(!media[1].disabled);
    }

    #[test]
    fn disabled_input_stream_keeps_port_zero() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                    m=audio 0 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let allowed = names(&["PCMU"]);
        let (result, out) = run(body, &[30000], Some(&allowed));
        assert!(out.contains("m=audio 0 RTP/AVP 101\r\n"), "{out}");
        let media = result.expect("disabled streams are not filtered");
        assert!(media[0].disabled);
        assert_eq!(media[0].remote, None);
    }

    #[test]
    fn hold_address_stays_hold() {
        let body = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\n";
        let (result, out) = run(body, &[30000], None);
        assert!(out.contains("\r\nc=IN IP4 0.0.0.0\r\n"), "{out}");
        assert!(out.contains("o=- 1 2 IN IP4 203.0.113.5\r\n"), "{out}");
        assert_eq!(result.expect("valid")[0].remote, None);
    }

    #[test]
    fn filters_codecs_and_their_attributes() {
        let body =
            format!("{OFFER}a=rtcp-fb:8 nack\r\na=rtcp-fb:0 nack\r\na=rtcp-fb:* trr-int 5\r\n");
        let allowed = names(&["PCMU", "opus"]);
        let (result, out) = run(&body, &[30000], Some(&allowed));
        assert!(result.is_ok());
        assert!(out.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{out}");
        for gone in ["PCMA", "G729", "fmtp:18", "rtcp-fb:8"] {
            assert!(!out.contains(gone), "{gone} left in {out}");
        }
        for kept in [
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:101 telephone-event/8000\r\n",
            "a=fmtp:101 0-15\r\n",
            "a=rtcp-fb:0 nack\r\n",
            "a=rtcp-fb:* trr-int 5\r\n",
        ] {
            assert!(out.contains(kept), "{kept} missing from {out}");
        }
    }

    #[test]
    fn no_codec_left_when_only_telephone_event_remains() {
        let allowed = names(&["opus"]);
        let (result, out) = run(OFFER, &[30000], Some(&allowed));
        assert_eq!(result, Err(SdpError::NoCodecLeft));
        assert!(out.is_empty(), "no half-written body: {out}");
    }

    #[test]
    fn empty_allowed_list_means_no_filtering() {
        let (_, out) = run(OFFER, &[30000], Some(&[]));
        assert!(
            out.contains("m=audio 30000 RTP/AVP 0 8 18 101\r\n"),
            "{out}"
        );
    }

    #[test]
    fn static_payload_type_without_rtpmap_is_recognised() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 8 0 13\r\n";
        let allowed = names(&["PCMU"]);
        let (result, out) = run(body, &[30000], Some(&allowed));
        assert!(result.is_ok());
        assert!(out.contains("m=audio 30000 RTP/AVP 0 13\r\n"), "{out}");
    }

    #[test]
    fn allowed_names_are_case_insensitive() {
        let allowed = names(&["pcmu"]);
        let (result, out) = run(OFFER, &[30000], Some(&allowed));
        assert!(result.is_ok());
        assert!(out.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{out}");
    }

    #[test]
    fn video_is_not_filtered() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\nm=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let allowed = names(&["PCMU"]);
        let (_, out) = run(body, &[30000, 30002], Some(&allowed));
        assert!(
            out.contains("m=video 30002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"),
            "{out}"
        );
    }

    #[test]
    fn savp_line_keeps_crypto() {
        let crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32";
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/SAVP 0\r\n{crypto}\r\n"
        );
        let (result, out) = run(&body, &[30000], None);
        assert!(
            out.ends_with(&format!("m=audio 30000 RTP/SAVP 0\r\n{crypto}\r\n")),
            "{out}"
        );
        assert_eq!(result.expect("valid")[0].proto, "RTP/SAVP");
    }

    #[test]
    fn rtcp_mux_detected_and_passed_through() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\nm=audio 4002 RTP/AVP 0\r\n";
        let (result, out) = run(body, &[30000, 30002], None);
        assert!(
            out.contains("m=audio 30000 RTP/AVP 0\r\na=rtcp-mux\r\n"),
            "{out}"
        );
        let media = result.expect("valid");
        assert!(media[0].rtcp_mux);
        assert!(!media[1].rtcp_mux);
        assert_eq!(media_lines(body.as_bytes()), Ok(media));
    }

    #[test]
    fn lf_only_input_gives_crlf_output() {
        let lf = OFFER.replace("\r\n", "\n");
        let (crlf_result, crlf_out) = run(OFFER, &[30000], None);
        let (lf_result, lf_out) = run(&lf, &[30000], None);
        assert_eq!(lf_out, crlf_out);
        assert_eq!(lf_result, crlf_result);
        assert_eq!(lf_out.matches('\n').count(), lf_out.matches("\r\n").count());
    }

    #[test]
    fn ipv6_connection_and_advertise() {
        let body = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP6 ::1\r\n";
        let media = media_lines(body.as_bytes()).expect("valid");
        assert_eq!(media[0].remote, addr("[::1]:4000"));

        let adv6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5));
        let mut out = Vec::new();
        rewrite(body.as_bytes(), adv6, &[30000], None, &mut out).expect("valid");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 0\r\na=rtcp:30001 IN IP6 2001:db8::5\r\n"
        );

        // An IPv6 endpoint behind an IPv4 advertise address: addrtype follows advertise.
        let (_, out) = run(body, &[30000], None);
        assert!(out.contains("o=- 1 1 IN IP4 203.0.113.5\r\n"), "{out}");
        assert!(out.contains("c=IN IP4 203.0.113.5\r\n"), "{out}");
    }

    #[test]
    fn garbage_is_malformed() {
        for body in [
            &b""[..],
            b"\r\n",
            b"hello world",
            b"o=- 1 1 IN IP4 10.0.0.1\r\nv=0\r\n",
            b"v=0\r\nnot a line\r\n",
            b"v=0\r\n=x\r\n",
            b"v=0\r\nm=audio\r\n",
            b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n",
            b"v=0\r\nm=audio 123456789012345678901234567890 RTP/AVP 0\r\n",
            b"v=0\r\nm=audio x RTP/AVP 0\r\n",
            b"\xff\xfe=\x00",
        ] {
            assert_eq!(media_lines(body), Err(SdpError::Malformed), "{body:?}");
            let mut out = Vec::new();
            assert_eq!(
                rewrite(body, ADV, &[30000], None, &mut out),
                Err(SdpError::Malformed)
            );
            assert!(out.is_empty());
        }
        let short_origin = b"v=0\r\no=- 1 1 IN\r\ns=-\r\n";
        let mut out = Vec::new();
        assert_eq!(
            rewrite(short_origin, ADV, &[], None, &mut out),
            Err(SdpError::Malformed)
        );
    }

    #[test]
    fn unusable_connection_gives_no_remote() {
        for c in [
            "c=IN IP4 host.example.com",
            "c=IN IP4 ::1",
            "c=ATM NSAP 47",
            "c=IN",
        ] {
            let body = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n{c}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n");
            let media = media_lines(body.as_bytes()).expect("still SDP");
            assert_eq!(media[0].remote, None, "{c}");
            let (_, out) = run(&body, &[30000], None);
            assert!(out.contains("\r\nc=IN IP4 203.0.113.5\r\n"), "{out}");
        }
        let multicast = "v=0\r\ns=-\r\nc=IN IP4 233.252.0.1/127\r\nm=audio 4000 RTP/AVP 0\r\n";
        let media = media_lines(multicast.as_bytes()).expect("valid");
        assert_eq!(media[0].remote, addr("233.252.0.1:4000"));
    }

    /// xorshift64: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
        const INTERESTING: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b"=",
            b" ",
            b"/",
            b":",
            b"0",
            b"m=",
            b"c=",
            b"a=rtcp:",
            b"99999999999999999999",
            b"0.0.0.0",
            b"::",
            b"IN IP6 ",
        ];
        let pos = rng.below(body.len() + 1);
        match rng.below(5) {
            0 if pos < body.len() => body[pos] ^= 1 << rng.below(8),
            1 => body.truncate(pos),
            2 => body.insert(pos, rng.next() as u8),
            3 if pos < body.len() => {
                body.remove(pos);
            }
            _ => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                body.splice(pos..pos, piece.iter().copied());
            }
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let allowed = names(&["PCMU"]);
        let sample = format!("{OFFER}m=video 5000 RTP/SAVP 96\r\nc=IN IP6 ::1\r\na=rtcp-mux\r\n");
        let mut out = Vec::new();
        for _ in 0..2_000 {
            let mut body = sample.as_bytes().to_vec();
            for _ in 0..1 + rng.below(8) {
                mutate(&mut rng, &mut body);
            }
            let parsed = media_lines(&body);
            for (ports, allowed) in [
                (&[30000u16][..], None),
                (&[1, 65535][..], Some(&allowed[..])),
            ] {
                let rewritten = rewrite(&body, ADV, ports, allowed, &mut out);
                if let Ok(media) = &rewritten {
                    assert_eq!(Ok(media), parsed.as_ref(), "{body:?}");
                    let again = media_lines(&out).expect("output reparses");
                    assert_eq!(again.len(), media.len());
                } else {
                    assert!(out.is_empty());
                }
            }
        }
    }
}
