//! Zero-copy SIP message scanner.
//!
//! Owns: turning one datagram (or one framed stream message) into a [`Message`] that borrows the
//! input: the start line and an index of header (name, value) slices kept in a stack-resident
//! SmallVec. It never copies or allocates (up to `INLINE_HEADERS` headers) and never panics.
//! Must not: interpret header values beyond what framing needs (that is `headers.rs`).
//!
//! Framing rules implemented here:
//! - lines end in CRLF (RFC 3261 §7) or, tolerated for robustness, a bare LF; a CR not followed
//!   by LF inside the start line or a header is malformed;
//! - CRLFs before the start line are skipped (RFC 3261 §7.5, keep-alives);
//! - a header line starting with SP/HT continues the previous one (folding, RFC 3261 §7.3.1); the
//!   value slice then spans the fold, and the typed parsers treat CR/LF as whitespace;
//! - the body is exactly Content-Length bytes when the header is present (RFC 3261 §18.3),
//!   otherwise the rest of the buffer (UDP).

use super::find;
use memchr::memchr;
use smallvec::SmallVec;

/// Headers indexed on the stack before the SmallVec spills (rare: typical requests carry < 16).
pub const INLINE_HEADERS: usize = 24;
/// Hard cap: a message with more header lines than this is rejected (bounded work per message).
pub const MAX_HEADERS: usize = 96;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Prack,
    Update,
    Info,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token (extension method); the raw bytes live in `StartLine::Request::method_raw`.
    Other,
}

impl Method {
    /// Every variant, `Other` last (metrics iterate this).
    pub const ALL: [Method; 15] = [
        Method::Register,
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Options,
        Method::Prack,
        Method::Update,
        Method::Info,
        Method::Subscribe,
        Method::Notify,
        Method::Refer,
        Method::Message,
        Method::Publish,
        Method::Other,
    ];

    /// Case-sensitive per RFC 3261 §7.1 (methods are case-sensitive tokens).
    pub fn parse(token: &[u8]) -> Method {
        match token {
            b"REGISTER" => Method::Register,
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }
    /// Upper-case name; `Other` -> "OTHER" (used as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other => "OTHER",
        }
    }
}

/// Headers the engine looks at; everything else is `Other` and passes through untouched.
/// Names are matched case-insensitively, compact forms included (RFC 3261 §7.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderName {
    Via,    // v
    From,   // f
    To,     // t
    CallId, // i
    CSeq,
    Contact, // m
    Expires,
    MinExpires,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    UserAgent,
    ContentLength, // l
    ContentType,   // c
    MaxForwards,
    Route,
    RecordRoute,
    Supported, // k
    Require,
    ProxyRequire,
    PAssertedIdentity,
    PCalledPartyId,
    Other,
}

impl HeaderName {
    /// Dispatches on the length and the first byte, then does one case-insensitive compare: no
    /// allocation, at most one full comparison per known name length bucket.
    pub fn parse(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        let first = match name.first() {
            Some(b) => b.to_ascii_lowercase(),
            None => return Other,
        };
        // Candidates are compared a few words at a time against constants ([`Folded`]).
        macro_rules! is {
            ($lower:literal) => {
                eq_folded!(name, $lower)
            };
        }
        //= https://www.rfc-editor.org/rfc/rfc3261#section-7.3.3
        //# SIP provides a mechanism to represent common header field names in an abbreviated form.
        match (name.len(), first) {
            (1, b'v') => Via,
            (1, b'f') => From,
            (1, b't') => To,
            (1, b'i') => CallId,
            (1, b'm') => Contact,
            (1, b'l') => ContentLength,
            (1, b'c') => ContentType,
            (1, b'k') => Supported,
            (2, b't') if is!(b"to") => To,
            (3, b'v') if is!(b"via") => Via,
            (4, b'f') if is!(b"from") => From,
            (4, b'c') if is!(b"cseq") => CSeq,
            (5, b'r') if is!(b"route") => Route,
            (7, b'c') if is!(b"call-id") => CallId,
            (7, b'c') if is!(b"contact") => Contact,
            (7, b'e') if is!(b"expires") => Expires,
            (7, b'r') if is!(b"require") => Require,
            (9, b's') if is!(b"supported") => Supported,
            (10, b'u') if is!(b"user-agent") => UserAgent,
            (11, b'm') if is!(b"min-expires") => MinExpires,
            (12, b'c') if is!(b"content-type") => ContentType,
            (12, b'm') if is!(b"max-forwards") => MaxForwards,
            (12, b'r') if is!(b"record-route") => RecordRoute,
            (13, b'a') if is!(b"authorization") => Authorization,
            (13, b'p') if is!(b"proxy-require") => ProxyRequire,
            (14, b'c') if is!(b"content-length") => ContentLength,
            (16, b'w') if is!(b"www-authenticate") => WwwAuthenticate,
            (17, b'p') if is!(b"p-called-party-id") => PCalledPartyId,
            (18, b'p') if is!(b"proxy-authenticate") => ProxyAuthenticate,
            (19, b'p') if is!(b"proxy-authorization") => ProxyAuthorization,
            (19, b'p') if is!(b"p-asserted-identity") => PAssertedIdentity,
            _ => Other,
        }
    }
}

/// `eq_folded!(bytes, b"lower-case literal")`: `bytes.eq_ignore_ascii_case(literal)` a word at a
/// time, the literal folded at compile time ([`Folded`]).
macro_rules! eq_folded {
    ($name:expr, $lower:literal) => {{
        const F: $crate::sip::scan::Folded = $crate::sip::scan::Folded::new($lower);
        F.matches($name)
    }};
}
pub(crate) use eq_folded;

/// A lower-case name prepared for case-insensitive comparison a word at a time. An ASCII
/// letter differs from its upper case in bit 5 alone, so OR-ing bit 5 into the letter positions
/// of the candidate folds its case; other positions (`-`) must match exactly. Three words cover
/// names up to 24 bytes, the last one overlapping when the length is not a multiple of the
/// width: a handful of loads and compares instead of a loop over the bytes.
pub(crate) struct Folded {
    len: usize,
    width: usize,
    at: [usize; 3],
    words: [u64; 3],
    masks: [u64; 3],
}

impl Folded {
    pub(crate) const fn new(lower: &[u8]) -> Folded {
        let len = lower.len();
        assert!(len >= 1 && len <= 24);
        let width = match len {
            1 => 1,
            2..=3 => 2,
            4..=7 => 4,
            _ => 8,
        };
        let mid = if width < len - width {
            width
        } else {
            len - width
        };
        let at = [0, mid, len - width];
        let mut words = [0u64; 3];
        let mut masks = [0u64; 3];
        let mut k = 0;
        while k < 3 {
            let mut j = 0;
            while j < width {
                let b = lower[at[k] + j];
                assert!(!b.is_ascii_uppercase());
                words[k] |= (b as u64) << (8 * j);
                if b.is_ascii_lowercase() {
                    masks[k] |= 0x20 << (8 * j);
                }
                j += 1;
            }
            k += 1;
        }
        Folded {
            len,
            width,
            at,
            words,
            masks,
        }
    }

    #[inline(always)]
    pub(crate) fn matches(&self, name: &[u8]) -> bool {
        #[inline(always)]
        fn word(name: &[u8], at: usize, width: usize) -> u64 {
            let mut w = [0u8; 8];
            if let (Some(d), Some(s)) = (w.get_mut(..width), name.get(at..at + width)) {
                d.copy_from_slice(s);
            }
            u64::from_le_bytes(w)
        }
        let w = self.width;
        name.len() == self.len
            && word(name, self.at[0], w) | self.masks[0] == self.words[0]
            && word(name, self.at[1], w) | self.masks[1] == self.words[1]
            && word(name, self.at[2], w) | self.masks[2] == self.words[2]
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    pub name: HeaderName,
    pub raw_name: &'a [u8],
    /// Value with leading/trailing whitespace trimmed. May still contain folded line breaks
    /// (CRLF followed by SP/HT); typed parsers in `headers.rs` treat those as whitespace.
    pub value: &'a [u8],
}

#[derive(Clone, Copy, Debug)]
pub enum StartLine<'a> {
    /// `version` is the SIP-Version as written (e.g. `SIP/2.0`, any case). `scan` checks only
    /// its syntax (`SIP/` 1*DIGIT "." 1*DIGIT); `headers::request_headers` refuses anything but
    /// 2.0 with `HeaderError::Version`, so the caller can tell a 505 case from a 400 one.
    Request {
        method: Method,
        method_raw: &'a [u8],
        uri: &'a [u8],
        version: &'a [u8],
    },
    /// Responses must be `SIP/2.0` (any case) already for `scan` (a UAC discards anything
    /// else), so the version is not kept.
    Response { code: u16, reason: &'a [u8] },
}

#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub start: StartLine<'a>,
    pub headers: SmallVec<[Header<'a>; INLINE_HEADERS]>,
    /// Exactly Content-Length bytes when the header is present, else the rest of the datagram.
    pub body: &'a [u8],
    /// Bytes of the whole message (start line .. end of body); trailing datagram bytes beyond
    /// Content-Length are not part of it (RFC 3261 §18.3). Counted from `buf[0]`, so CRLF
    /// keep-alives skipped before the start line are included: a stream framer advances by `len`.
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("empty message")]
    Empty,
    #[error("malformed start line")]
    StartLine,
    #[error("malformed header line")]
    HeaderLine,
    #[error("too many headers")]
    TooManyHeaders,
    #[error("no blank line after the headers")]
    Unterminated,
    #[error("malformed Content-Length")]
    ContentLength,
    #[error("body shorter than Content-Length")]
    Truncated,
}

/// RFC 3261 §25.1 `token` characters:
/// alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// True for one RFC 3261 `token` character.
#[inline]
pub fn is_token_char(b: u8) -> bool {
    TOKEN[b as usize]
}

/// True when `s` is a non-empty RFC 3261 `token`.
#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// One line of the buffer: `[start, end)` is its content, `next` the first byte after its end.
enum Line {
    Ok {
        end: usize,
        next: usize,
    },
    /// No line end before the end of the buffer.
    Open,
    /// A CR not followed by LF.
    BareCr,
}

#[inline]
fn line_at(buf: &[u8], start: usize) -> Line {
    let rest = match buf.get(start..) {
        Some(r) => r,
        None => return Line::Open,
    };
    match find::eol(rest) {
        None => Line::Open,
        Some(i) => {
            let end = start + i;
            if rest.get(i) == Some(&b'\n') {
                return Line::Ok { end, next: end + 1 };
            }
            match rest.get(i + 1) {
                Some(b'\n') => Line::Ok { end, next: end + 2 },
                None => Line::Open,
                Some(_) => Line::BareCr,
            }
        }
    }
}

#[inline]
fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims SP, HT, CR and LF on both sides.
#[inline]
fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_lws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_lws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// `SIP/` 1*DIGIT "." 1*DIGIT, "SIP" case-insensitive (ABNF literals are case-insensitive).
fn is_sip_version(v: &[u8]) -> bool {
    // Every message of this century says exactly this.
    if v == b"SIP/2.0" {
        return true;
    }
    let (prefix, num) = match (v.get(..4), v.get(4..)) {
        (Some(p), Some(n)) => (p, n),
        _ => return false,
    };
    if !prefix.eq_ignore_ascii_case(b"SIP/") {
        return false;
    }
    let dot = match memchr(b'.', num) {
        Some(d) => d,
        None => return false,
    };
    let (major, minor) = (
        num.get(..dot).unwrap_or(&[]),
        num.get(dot + 1..).unwrap_or(&[]),
    );
    !major.is_empty()
        && !minor.is_empty()
        && major.iter().all(u8::is_ascii_digit)
        && minor.iter().all(u8::is_ascii_digit)
}

/// Parses a start line (without its line end).
fn parse_start_line(line: &[u8]) -> Result<StartLine<'_>, ScanError> {
    let is_response = line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
    if is_response {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-7.2
        //# Status-Line  =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
        let sp = memchr(b' ', line).ok_or(ScanError::StartLine)?;
        if !line
            .get(..sp)
            .is_some_and(|v| v.eq_ignore_ascii_case(b"SIP/2.0"))
        {
            return Err(ScanError::StartLine);
        }
        let rest = line.get(sp + 1..).unwrap_or(&[]);
        let code = match rest.get(..3) {
            Some(&[a, b, c]) if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(ScanError::StartLine),
        };
        if !(100..=699).contains(&code) {
            return Err(ScanError::StartLine);
        }
        // The SP before an empty reason phrase is tolerated missing (TC_NOREASON has it).
        let reason = match rest.get(3) {
            None => &[][..],
            Some(b' ') => rest.get(4..).unwrap_or(&[]),
            Some(_) => return Err(ScanError::StartLine),
        };
        // Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
        if reason
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(ScanError::StartLine);
        }
        return Ok(StartLine::Response { code, reason });
    }

    //= https://www.rfc-editor.org/rfc/rfc3261#section-7.1
    //# Request-Line  =  Method SP Request-URI SP SIP-Version CRLF
    //# The elements are separated by single space (SP) characters.
    let sp1 = memchr(b' ', line).ok_or(ScanError::StartLine)?;
    let method_raw = line.get(..sp1).unwrap_or(&[]);
    if !is_token(method_raw) {
        return Err(ScanError::StartLine);
    }
    let rest = line.get(sp1 + 1..).unwrap_or(&[]);
    let sp2 = memchr(b' ', rest).ok_or(ScanError::StartLine)?;
    let uri = rest.get(..sp2).unwrap_or(&[]);
    let version = rest.get(sp2 + 1..).unwrap_or(&[]);
    // An empty URI means two SPs in a row (TC_LWSSTART); a version with SP in it means trailing
    // SP (TC_TRWS) or LWS inside the URI (TC_LWSRURI).
    if uri.is_empty() || uri.iter().any(|&b| b <= b' ' || b == 0x7f) || !is_sip_version(version) {
        return Err(ScanError::StartLine);
    }
    let method = Method::parse(method_raw);
    Ok(StartLine::Request {
        method,
        method_raw,
        uri,
        version,
    })
}

/// `Content-Length = 1*DIGIT`; values beyond u32 are refused, not wrapped.
fn parse_content_length(value: &[u8]) -> Result<usize, ScanError> {
    if value.is_empty() {
        return Err(ScanError::ContentLength);
    }
    let mut n: u32 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(ScanError::ContentLength);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u32::from(b - b'0')))
            .ok_or(ScanError::ContentLength)?;
    }
    usize::try_from(n).map_err(|_| ScanError::ContentLength)
}

/// Scans one SIP message at the start of `buf`.
///
/// Checks framing only: the start line's shape, header lines of the form `token *WSP ":" value`
/// (with folding), at most [`MAX_HEADERS`] headers, the blank line, and Content-Length. Every
/// Content-Length header must be a valid number; the first one frames the body (duplicates are
/// reported by `headers::request_headers` / `response_headers` so a 400 can still be sent).
pub fn scan(buf: &[u8]) -> Result<Message<'_>, ScanError> {
    let mut msg = Message::empty();
    scan_into(buf, &mut msg)?;
    Ok(msg)
}

/// [`scan`] into a message the caller holds, for the receive path: returning the ~1 KB
/// `Message` by value costs a memcpy per datagram. On an error `msg` holds what was scanned
/// before it and must not be used.
pub fn scan_into<'a>(buf: &'a [u8], msg: &mut Message<'a>) -> Result<(), ScanError> {
    //= https://www.rfc-editor.org/rfc/rfc3261#section-7.5
    //# implementations processing SIP messages over stream-oriented transports MUST ignore any
    //# CRLF appearing before the start-line
    let mut pos = 0;
    while matches!(buf.get(pos), Some(b'\r' | b'\n')) {
        pos += 1;
    }
    if pos >= buf.len() {
        return Err(ScanError::Empty);
    }

    let (start, mut pos) = match line_at(buf, pos) {
        Line::Ok { end, next } => (parse_start_line(buf.get(pos..end).unwrap_or(&[]))?, next),
        Line::Open => return Err(ScanError::Unterminated),
        Line::BareCr => return Err(ScanError::StartLine),
    };

    msg.start = start;
    let headers = &mut msg.headers;
    headers.clear();
    let mut content_length: Option<usize> = None;
    loop {
        match buf.get(pos) {
            None => return Err(ScanError::Unterminated),
            Some(b'\n') => {
                pos += 1;
                break;
            }
            Some(b'\r') => match buf.get(pos + 1) {
                Some(b'\n') => {
                    pos += 2;
                    break;
                }
                None => return Err(ScanError::Unterminated),
                Some(_) => return Err(ScanError::HeaderLine),
            },
            // A continuation line with no header before it (right after the start line).
            Some(b' ' | b'\t') => return Err(ScanError::HeaderLine),
            Some(_) => {}
        }
        let line_start = pos;
        let (first_end, mut next) = match line_at(buf, pos) {
            Line::Ok { end, next } => (end, next),
            Line::Open => return Err(ScanError::Unterminated),
            Line::BareCr => return Err(ScanError::HeaderLine),
        };
        let first_line = buf.get(line_start..first_end).unwrap_or(&[]);
        //= https://www.rfc-editor.org/rfc/rfc3261#section-7.3.1
        //# field-name: field-value
        // Searched in the rest of the buffer, not just this line: a short line then still gets
        // the 16-byte search, and a colon past the line's end is the same error as none.
        let colon = match find::byte(b':', buf.get(line_start..).unwrap_or(&[])) {
            Some(c) if line_start + c < first_end => c,
            _ => return Err(ScanError::HeaderLine),
        };
        let mut raw_name = first_line.get(..colon).unwrap_or(&[]);
        // HCOLON = *( SP / HTAB ) ":" SWS
        while let [rest @ .., b' ' | b'\t'] = raw_name {
            raw_name = rest;
        }
        // A name HeaderName knows is a token already; only the others need the check.
        let name = HeaderName::parse(raw_name);
        if name == HeaderName::Other && !is_token(raw_name) {
            return Err(ScanError::HeaderLine);
        }
        //= https://www.rfc-editor.org/rfc/rfc3261#section-7.3.1
        //# Header fields can be extended over multiple lines by preceding each extra line with at
        //# least one SP or horizontal tab (HT).
        let mut value_end = first_end;
        while matches!(buf.get(next), Some(b' ' | b'\t')) {
            match line_at(buf, next) {
                Line::Ok { end, next: n } => {
                    value_end = end;
                    next = n;
                }
                Line::Open => return Err(ScanError::Unterminated),
                Line::BareCr => return Err(ScanError::HeaderLine),
            }
        }
        let value = trim_lws(buf.get(line_start + colon + 1..value_end).unwrap_or(&[]));
        if headers.len() >= MAX_HEADERS {
            return Err(ScanError::TooManyHeaders);
        }
        if name == HeaderName::ContentLength {
            let n = parse_content_length(value)?;
            if content_length.is_none() {
                content_length = Some(n);
            }
        }
        headers.push(Header {
            name,
            raw_name,
            value,
        });
        pos = next;
    }

    //= https://www.rfc-editor.org/rfc/rfc3261#section-18.3
    //# If the transport packet ends before the end of the message body, this is considered an
    //# error.
    let rest = buf.get(pos..).unwrap_or(&[]);
    (msg.body, msg.len) = match content_length {
        Some(n) => (rest.get(..n).ok_or(ScanError::Truncated)?, pos + n),
        None => (rest, buf.len()),
    };
    Ok(())
}

impl<'a> Message<'a> {
    /// A message with no headers, for [`scan_into`] to fill.
    pub fn empty() -> Message<'a> {
        Message {
            start: StartLine::Response {
                code: 0,
                reason: &[],
            },
            headers: SmallVec::new(),
            body: &[],
            len: 0,
        }
    }

    /// Value of the first header with this name.
    pub fn header(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value)
    }
    /// Values of every header with this name, in order.
    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value)
    }
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    /// Value of the first header whose raw name equals `name` case-insensitively (for headers
    /// that `HeaderName` files under `Other`, e.g. `Date`, `X-...`). Compact forms are not mapped.
    pub fn header_raw(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.raw_name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:alice@example.com>\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.0.2.1:5060>;expires=3600\r\n\
Content-Length: 0\r\n\
\r\n";

    fn names(msg: &Message<'_>) -> Vec<HeaderName> {
        msg.headers.iter().map(|h| h.name).collect()
    }

    #[test]
    fn method_parse_is_case_sensitive_and_round_trips() {
        for m in Method::ALL.into_iter().filter(|m| *m != Method::Other) {
            assert_eq!(Method::parse(m.as_str().as_bytes()), m);
        }
        assert_eq!(Method::parse(b"invite"), Method::Other);
        assert_eq!(Method::parse(b""), Method::Other);
        assert_eq!(Method::Other.as_str(), "OTHER");
    }

    #[test]
    fn header_names_full_compact_and_any_case() {
        use HeaderName::*;
        let cases: &[(&[u8], HeaderName)] = &[
            (b"Via", Via),
            (b"v", Via),
            (b"V", Via),
            (b"vIA", Via),
            (b"From", From),
            (b"f", From),
            (b"To", To),
            (b"t", To),
            (b"TO", To),
            (b"Call-ID", CallId),
            (b"call-id", CallId),
            (b"i", CallId),
            (b"I", CallId),
            (b"CSeq", CSeq),
            (b"cseq", CSeq),
            (b"Contact", Contact),
            (b"m", Contact),
            (b"M", Contact),
            (b"Expires", Expires),
            (b"Min-Expires", MinExpires),
            (b"Authorization", Authorization),
            (b"Proxy-Authorization", ProxyAuthorization),
            (b"WWW-Authenticate", WwwAuthenticate),
            (b"Proxy-Authenticate", ProxyAuthenticate),
            (b"User-Agent", UserAgent),
            (b"Content-Length", ContentLength),
            (b"l", ContentLength),
            (b"L", ContentLength),
            (b"Content-Type", ContentType),
            (b"c", ContentType),
            (b"Max-Forwards", MaxForwards),
            (b"MaX-fOrWaRdS", MaxForwards),
            (b"Route", Route),
            (b"Record-Route", RecordRoute),
            (b"Supported", Supported),
            (b"k", Supported),
            (b"Require", Require),
            (b"Proxy-Require", ProxyRequire),
            (b"P-Asserted-Identity", PAssertedIdentity),
            (b"P-Called-Party-ID", PCalledPartyId),
            (b"s", Other),
            (b"Subject", Other),
            (b"Date", Other),
            (b"C%6Fntact", Other),
            ("Vía".as_bytes(), Other),
            (b"", Other),
            (b"Contacts", Other),
            // Case folding touches letters only: bytes that differ from a letter or a `-` in
            // bit 5 alone (`@`..`Z` neighbours, CR for `-`) are not that character.
            (b"Content\rLength", Other),
            (b"Content_Length", Other),
            (b"Call\rID", Other),
            (b"Call-I\x04", Other),
            (b"Max-Forward\x13", Other),
            (b"Record-Rout", Other),
            (b"Proxy-Authorizatioo", Other),
            (b"p-asserted-identitY", PAssertedIdentity),
            (b"vi", Other),
            (b"tO", To),
        ];
        for (raw, want) in cases {
            assert_eq!(
                HeaderName::parse(raw),
                *want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn scans_a_register() {
        let msg = scan(REGISTER).unwrap();
        match msg.start {
            StartLine::Request {
                method,
                method_raw,
                uri,
                version,
            } => {
                assert_eq!(method, Method::Register);
                assert_eq!(method_raw, b"REGISTER");
                assert_eq!(uri, b"sip:example.com");
                assert_eq!(version, b"SIP/2.0");
            }
            StartLine::Response { .. } => panic!("request expected"),
        }
        assert_eq!(msg.headers.len(), 8);
        assert!(!msg.headers.spilled());
        assert_eq!(msg.header(HeaderName::CSeq), Some(&b"1 REGISTER"[..]));
        assert_eq!(msg.header(HeaderName::MaxForwards), Some(&b"70"[..]));
        assert_eq!(msg.header(HeaderName::Route), None);
        assert_eq!(
            msg.header_raw(b"call-id"),
            Some(&b"a84b4c76e66710@pc33.example.com"[..])
        );
        assert_eq!(msg.method(), Some(Method::Register));
        assert!(msg.body.is_empty());
        assert_eq!(msg.len, REGISTER.len());
    }

    #[test]
    fn compact_forms_and_odd_spacing() {
        let buf = b"INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP h\r\n\
f:<sip:a@b>;tag=1\r\n\
t :\t<sip:bob@example.com>\r\n\
i: abc\r\n\
m: <sip:a@h>\r\n\
c: application/sdp\r\n\
k: timer\r\n\
CSEQ  : 1 INVITE\r\n\
l: 4\r\n\
\r\n\
v=0\r\n";
        let msg = scan(buf).unwrap();
        use HeaderName::*;
        assert_eq!(
            names(&msg),
            [
                Via,
                From,
                To,
                CallId,
                Contact,
                ContentType,
                Supported,
                CSeq,
                ContentLength
            ]
        );
        assert_eq!(msg.headers[2].raw_name, b"t");
        assert_eq!(msg.headers[2].value, b"<sip:bob@example.com>");
        assert_eq!(msg.headers[7].raw_name, b"CSEQ");
        assert_eq!(msg.body, b"v=0\r");
        assert_eq!(msg.len, buf.len() - 1);
    }

    #[test]
    fn folded_values_span_lines() {
        let buf = b"OPTIONS sip:a@b SIP/2.0\r\n\
Subject: first\r\n  second\r\n\tthird  \r\n\
Contact:\r\n  <sip:a@b>\r\n\
X-Empty:\r\n\
\r\n";
        let msg = scan(buf).unwrap();
        assert_eq!(msg.headers[0].value, b"first\r\n  second\r\n\tthird");
        assert_eq!(msg.headers[1].value, b"<sip:a@b>");
        assert_eq!(msg.headers[2].value, b"");
        assert_eq!(msg.headers.len(), 3);
    }

    #[test]
    fn bare_lf_line_endings() {
        let buf = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\n x=1\nl: 2\n\nhi";
        let msg = scan(buf).unwrap();
        assert_eq!(msg.headers[0].value, b"SIP/2.0/UDP h\n x=1");
        assert_eq!(msg.body, b"hi");
        assert_eq!(msg.len, buf.len());
    }

    #[test]
    fn leading_crlf_is_skipped_and_counted() {
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(REGISTER);
        let msg = scan(&buf).unwrap();
        assert_eq!(msg.len, buf.len());
        assert!(matches!(scan(b"\r\n\r\n"), Err(ScanError::Empty)));
        assert!(matches!(scan(b""), Err(ScanError::Empty)));
        assert!(matches!(scan(b"\n"), Err(ScanError::Empty)));
    }

    #[test]
    fn responses() {
        let msg = scan(b"SIP/2.0 180 Ringing\r\nl: 0\r\n\r\n").unwrap();
        assert!(matches!(
            msg.start,
            StartLine::Response {
                code: 180,
                reason: b"Ringing"
            }
        ));
        let msg = scan(b"sip/2.0 200 \r\n\r\n").unwrap();
        assert!(matches!(
            msg.start,
            StartLine::Response {
                code: 200,
                reason: b""
            }
        ));
        assert_eq!(msg.method(), None);
        let msg = scan(b"SIP/2.0 200\r\n\r\n").unwrap();
        assert!(matches!(
            msg.start,
            StartLine::Response {
                code: 200,
                reason: b""
            }
        ));
        let msg = scan(b"SIP/2.0 699 x y\tz\r\n\r\n").unwrap();
        assert!(matches!(msg.start, StartLine::Response { code: 699, .. }));
        // a response in another version is discarded
        assert!(matches!(
            scan(b"SIP/3.1 200 OK\r\n\r\n"),
            Err(ScanError::StartLine)
        ));
        for bad in [
            &b"SIP/2.0 700 Nope\r\n\r\n"[..],
            b"SIP/2.0 099 Nope\r\n\r\n",
            b"SIP/2.0 20 OK\r\n\r\n",
            b"SIP/2.0 2000 OK\r\n\r\n",
            b"SIP/2.0 4294967301 better not break the receiver\r\n\r\n",
            b"SIP/2.0  200 OK\r\n\r\n",
            b"SIP/2.0 2x0 OK\r\n\r\n",
            b"SIP/2.0 200 O\0K\r\n\r\n",
            b"SIP/ 200 OK\r\n\r\n",
            b"SIP/2 200 OK\r\n\r\n",
            b"SIP/2.0\r\n\r\n",
        ] {
            assert!(
                matches!(scan(bad), Err(ScanError::StartLine)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_line_shape() {
        for bad in [
            &b"INVITE  sip:a@b SIP/2.0\r\n\r\n"[..],
            b"INVITE sip:a@b  SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0 \r\n\r\n",
            b" INVITE sip:a@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b\r\n\r\n",
            b"INVITE\r\n\r\n",
            b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b HTTP/1.1\r\n\r\n",
            b"INVITE sip:a@b SIP/2.\r\n\r\n",
            b"INV(TE sip:a@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a\0@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a\t@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\rVia: x\r\n\r\n",
        ] {
            assert!(
                matches!(scan(bad), Err(ScanError::StartLine)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // the version is only checked for syntax here (505 is request_headers' business)
        let msg = scan(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n").unwrap();
        assert!(matches!(
            msg.start,
            StartLine::Request {
                version: b"SIP/7.0",
                ..
            }
        ));
        let msg = scan(b"RE%47IST%45R sip:a@b sip/2.0\r\n\r\n").unwrap();
        assert!(matches!(
            msg.start,
            StartLine::Request {
                method: Method::Other,
                ..
            }
        ));
    }

    #[test]
    fn malformed_header_lines() {
        for bad in [
            &b"OPTIONS sip:a@b SIP/2.0\r\nFoobar roobar\r\n\r\n"[..],
            b"OPTIONS sip:a@b SIP/2.0\r\n: novalue\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nBad\0Name: x\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\n continuation: first\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: a\rb\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: a\r\n\rx\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: a\r\n  b\rc\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nNo colon\r\n here: x\r\n\r\n",
        ] {
            assert!(
                matches!(scan(bad), Err(ScanError::HeaderLine)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn nul_bytes_in_values_are_left_to_typed_parsers() {
        // quoted-pair allows an escaped NUL (TC_INTMETH), so scan does not judge values
        let msg =
            scan(b"OPTIONS sip:a@b SIP/2.0\r\nTo: \"a\\\0b\" <sip:a@b>\r\nX: \0\r\n\r\n").unwrap();
        assert_eq!(msg.headers[0].value, b"\"a\\\0b\" <sip:a@b>");
        assert_eq!(msg.headers[1].value, b"\0");
    }

    #[test]
    fn unterminated_and_truncated() {
        let cut = &REGISTER[..REGISTER.len() - 2];
        assert!(matches!(scan(cut), Err(ScanError::Unterminated)));
        for n in 1..REGISTER.len() {
            assert!(scan(&REGISTER[..n]).is_err(), "prefix {n}");
        }
        assert!(matches!(
            scan(b"OPTIONS sip:a@b SIP/2.0"),
            Err(ScanError::Unterminated)
        ));
        assert!(matches!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r"),
            Err(ScanError::Unterminated)
        ));
        assert!(matches!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r\n"),
            Err(ScanError::Unterminated)
        ));
        assert!(matches!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r\nA: b\r"),
            Err(ScanError::Unterminated)
        ));
        assert!(matches!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r\nA: b\r\n c"),
            Err(ScanError::Unterminated)
        ));
        assert!(matches!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\n\r\nabcd"),
            Err(ScanError::Truncated)
        ));
    }

    #[test]
    fn content_length_rules() {
        let head = b"OPTIONS sip:a@b SIP/2.0\r\n";
        let with = |cl: &[u8], body: &[u8]| {
            let mut v = head.to_vec();
            v.extend_from_slice(b"Content-Length: ");
            v.extend_from_slice(cl);
            v.extend_from_slice(b"\r\n\r\n");
            v.extend_from_slice(body);
            v
        };
        for bad in [
            &b"-999"[..],
            b"abc",
            b"",
            b"1 0",
            b"+5",
            b"0x10",
            b"4294967296",
            b"99999999999999999999999999",
        ] {
            assert!(
                matches!(scan(&with(bad, b"")), Err(ScanError::ContentLength)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            scan(&with(b"4294967295", b"x")),
            Err(ScanError::Truncated)
        ));
        assert!(matches!(
            scan(&with(b"9999", b"short")),
            Err(ScanError::Truncated)
        ));
        let buf = with(b"000005", b"helloEXTRA");
        let msg = scan(&buf).unwrap();
        assert_eq!(msg.body, b"hello");
        assert_eq!(msg.len, buf.len() - 5);
        // absent: the rest of the datagram
        let buf = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\nall of it";
        assert_eq!(scan(buf).unwrap().body, b"all of it");
        // several: the first frames, each must be a number
        let buf = b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\nContent-Length: 5\r\n\r\nabcdef";
        let msg = scan(buf).unwrap();
        assert_eq!(msg.body, b"ab");
        assert_eq!(msg.headers_named(HeaderName::ContentLength).count(), 2);
        let buf = b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\nContent-Length: -5\r\n\r\nabcdef";
        assert!(matches!(scan(buf), Err(ScanError::ContentLength)));
    }

    #[test]
    fn header_count_limits() {
        let build = |n: usize| {
            let mut v = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
            for i in 0..n {
                v.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
            }
            v.extend_from_slice(b"\r\n");
            v
        };
        let buf = build(INLINE_HEADERS);
        assert!(!scan(&buf).unwrap().headers.spilled());
        let buf = build(MAX_HEADERS);
        let msg = scan(&buf).unwrap();
        assert_eq!(msg.headers.len(), MAX_HEADERS);
        assert!(msg.headers.spilled());
        let buf = build(MAX_HEADERS + 1);
        assert!(matches!(scan(&buf), Err(ScanError::TooManyHeaders)));
    }

    #[test]
    fn tokens() {
        assert!(is_token(b"!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a,b"));
        assert!(!is_token("é".as_bytes()));
    }
}
