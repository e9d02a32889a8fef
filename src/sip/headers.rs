//! Typed, zero-copy views of the header values the engine needs.
//!
//! Owns: parsing one header value (already located by `scan.rs`) into a struct of borrowed
//! slices, and the request-level validation of RFC 3261 §8.2 / SPEC §3.1 (mandatory headers,
//! CSeq method = start-line method). Never panics; allocates only when a `Contacts` list holds
//! more than two entries.
//!
//! Values may contain folded line breaks (`scan` keeps CRLF + SP/HT inside a value); every parser
//! here treats SP, HT, CR and LF alike as linear whitespace (RFC 3261 §7.3.1, `LWS`/`SWS`), and
//! nowhere else accepts them (inside a URI, a token, a number). Returned slices borrow the input:
//! quoted strings come back without their quotes, with `\` escapes left as written.
//!
//! Must not: decide policy (416 for a scheme, 420 for Require, 483 for Max-Forwards: 0 ...).

use super::scan::{eq_folded, is_token_char, HeaderName, Message, Method, StartLine};
use memchr::memchr;
use smallvec::SmallVec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("{0} header appears more than once")]
    Duplicate(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    #[error("malformed Request-URI")]
    RequestUri,
    #[error("unsupported SIP version")]
    Version,
}

/// One via-parm (the topmost one of the topmost Via header in practice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Via<'a> {
    /// e.g. b"UDP", b"TCP", b"TLS" (as written, compare case-insensitively)
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub branch: Option<&'a [u8]>,
    /// `None`: no rport param; `Some(None)`: bare `;rport`; `Some(Some(p))`: `;rport=p`
    pub rport: Option<Option<u16>>,
    pub received: Option<&'a [u8]>,
    /// The whole via-parm text, for copying into responses: from `SIP` to the end of the last
    /// param, without the separating comma or surrounding whitespace. It may contain folds
    /// (CRLF + SP/HT) and other LWS exactly as received, which is still a valid header value.
    pub raw: &'a [u8],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uri<'a> {
    /// b"sip", b"sips", b"tel", ... as written
    pub scheme: &'a [u8],
    /// sip/sips: the user part (escapes as written). tel: the telephone-subscriber (the part
    /// before the first `;`). Other schemes: `None`.
    pub user: Option<&'a [u8]>,
    pub password: Option<&'a [u8]>,
    /// Host without brackets for IPv6? No: as written, IPv6 references keep their brackets.
    /// Empty for schemes other than sip/sips.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// Everything after the host[:port] (";param...?headers"), may be empty. tel: from the first
    /// `;`. Other schemes: the whole scheme-specific part (after `scheme:`).
    pub params: &'a [u8],
}

impl<'a> Uri<'a> {
    /// The user part as UTF-8 text (escapes not decoded), `None` if absent or not UTF-8.
    pub fn user_str(&self) -> Option<&'a str> {
        self.user.and_then(|u| core::str::from_utf8(u).ok())
    }
    /// `sip` or `sips`, any case.
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"sip") || self.scheme.eq_ignore_ascii_case(b"sips")
    }
    /// The value of URI parameter `name` (see [`find_param`]); headers after `?` are not searched.
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        find_param(self.params, name)
    }
}

/// From, To, Contact entries, P-Asserted-Identity: `[display] <uri>;params` or bare `uri;params`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name: a quoted one without its quotes (escapes as written), or the token list.
    pub display: Option<&'a [u8]>,
    pub uri_raw: &'a [u8],
    pub uri: Uri<'a>,
    pub tag: Option<&'a [u8]>,
    /// header params after the uri (";tag=..;expires=.."), may be empty
    pub params: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method,
    pub method_raw: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContactEntry<'a> {
    pub addr: NameAddr<'a>,
    /// the `expires` contact param, if present and numeric (saturates at u32::MAX)
    pub expires: Option<u32>,
}

// The list stays inline on purpose (no allocation for the usual one or two contacts).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// `Contact: *`
    Star,
    List(SmallVec<[ContactEntry<'a>; 2]>),
}

/// `Authorization` / `Proxy-Authorization: Digest ...`, values unquoted (no escapes resolved).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestCredentials<'a> {
    pub username: &'a [u8],
    pub realm: &'a [u8],
    pub nonce: &'a [u8],
    pub uri: &'a [u8],
    pub response: &'a [u8],
    pub algorithm: Option<&'a [u8]>,
    pub cnonce: Option<&'a [u8]>,
    pub opaque: Option<&'a [u8]>,
    pub qop: Option<&'a [u8]>,
    pub nc: Option<&'a [u8]>,
}

/// The headers every request needs, parsed once (RFC 3261 §8.1.1).
#[derive(Clone, Debug)]
pub struct RequestHeaders<'a> {
    pub method: Method,
    pub uri: Uri<'a>,
    pub via: Via<'a>,
    pub from: NameAddr<'a>,
    pub to: NameAddr<'a>,
    pub call_id: &'a [u8],
    pub cseq: CSeq<'a>,
    pub max_forwards: Option<u32>,
    pub content_length: Option<u32>,
    /// Every Contact header's entries, parsed while validating them. Err when a `*` does not
    /// stand alone (legal syntax, but no REGISTER may carry it: the registrar answers 400).
    pub contacts: Result<Contacts<'a>, HeaderError>,
}

/// The headers a response needs for transaction matching (RFC 3261 §17.1.3, §8.1.3.3).
#[derive(Clone, Debug)]
pub struct ResponseHeaders<'a> {
    pub code: u16,
    pub via: Via<'a>,
    pub from: NameAddr<'a>,
    pub to: NameAddr<'a>,
    pub call_id: &'a [u8],
    pub cseq: CSeq<'a>,
    pub content_length: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Character classes (RFC 3261 §25.1)

/// user: unreserved / escaped / user-unreserved ("&" / "=" / "+" / "$" / "," / ";" / "?" / "/")
const USER: u8 = 1;
/// password: unreserved / escaped / "&" / "=" / "+" / "$" / ","
const PASS: u8 = 2;
/// hostname / IPv4address characters; `_` tolerated (seen in the wild)
const HOST: u8 = 4;
/// uri-parameters and headers: paramchar / hnv-unreserved / unreserved / escaped / ";=?&"
const PARAM: u8 = 8;
/// absoluteURI: uric = reserved / unreserved / escaped, plus "[" "]"
const URIC: u8 = 16;
/// Call-ID: word characters and "@"
const WORD: u8 = 32;
/// unquoted gen-value: token / host (":" "[" "]"); "/" "&" "$" tolerated for URI params
const GENVAL: u8 = 64;
/// scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
const SCHEME: u8 = 128;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let alnum = b.is_ascii_alphanumeric();
        let mark = matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        );
        let unreserved = alnum || mark;
        let token = alnum
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        let mut f = 0u8;
        if unreserved
            || matches!(
                b,
                b'%' | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/'
            )
        {
            f |= USER;
        }
        if unreserved || matches!(b, b'%' | b'&' | b'=' | b'+' | b'$' | b',') {
            f |= PASS;
        }
        if alnum || matches!(b, b'-' | b'.' | b'_') {
            f |= HOST;
        }
        if unreserved
            || matches!(
                b,
                b'%' | b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b';' | b'=' | b'?'
            )
        {
            f |= PARAM;
        }
        if unreserved
            || matches!(
                b,
                b'%' | b';'
                    | b'/'
                    | b'?'
                    | b':'
                    | b'@'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b','
                    | b'['
                    | b']'
            )
        {
            f |= URIC;
        }
        if alnum
            || matches!(
                b,
                b'-' | b'.'
                    | b'!'
                    | b'%'
                    | b'*'
                    | b'_'
                    | b'+'
                    | b'`'
                    | b'\''
                    | b'~'
                    | b'('
                    | b')'
                    | b'<'
                    | b'>'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'{'
                    | b'}'
                    | b'@'
            )
        {
            f |= WORD;
        }
        if token || matches!(b, b':' | b'[' | b']' | b'/' | b'&' | b'$') {
            f |= GENVAL;
        }
        if alnum || matches!(b, b'+' | b'-' | b'.') {
            f |= SCHEME;
        }
        t[i] = f;
        i += 1;
    }
    t
};

#[inline]
fn has(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

/// The classes of four bytes AND-ed: bit `class` survives only if all four are in it. The
/// span helpers below step four bytes at a time with it, where a byte loop pays a bounds check
/// and a branch per byte; header values are mostly long runs of one class (branch, tags,
/// Call-ID, host names).
#[inline(always)]
fn all4(w: &[u8], class: u8) -> bool {
    w.len() == 4
        && CLASS[w[0] as usize]
            & CLASS[w[1] as usize]
            & CLASS[w[2] as usize]
            & CLASS[w[3] as usize]
            & class
            != 0
}

#[inline]
fn all_in(s: &[u8], class: u8) -> bool {
    class_end(s, 0, class) == s.len()
}

/// Every `%` is followed by two hex digits (RFC 3261 `escaped`).
fn escapes_ok(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = s.get(i..).and_then(|r| memchr(b'%', r)) {
        let at = i + p;
        match (s.get(at + 1), s.get(at + 2)) {
            (Some(a), Some(b)) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i = at + 3,
            _ => return false,
        }
    }
    true
}

/// Every byte in `class`, and every `%` an escape. One pass; the escape walk only runs when a
/// `%` was seen, which is rare in real traffic. (A byte loop: the parts are mostly a few bytes,
/// too short for the four-byte steps of `class_end` to pay.)
#[inline]
fn valid_part(s: &[u8], class: u8) -> bool {
    let mut pct = false;
    for &b in s {
        if !has(b, class) {
            return false;
        }
        pct |= b == b'%';
    }
    !pct || escapes_ok(s)
}

/// The first `b` in a short slice of a header value ([`super::find::byte`]: 16 bytes a step,
/// no `memchr` dispatch).
#[inline]
fn find(b: u8, s: &[u8]) -> Option<usize> {
    super::find::byte(b, s)
}

// ---------------------------------------------------------------------------------------------
// Cursor helpers: positions are indices into `s`; every access goes through `get`.

/// LWS/SWS character: SP, HT, or the CR/LF of a fold.
#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[inline]
fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_ws(b)) {
        i += 1;
    }
    i
}

/// The end of the run of `class` bytes (a single-bit class) starting at `i`.
#[inline]
fn class_end(s: &[u8], mut i: usize, class: u8) -> usize {
    debug_assert!(class.is_power_of_two());
    while s.get(i..i + 4).is_some_and(|w| all4(w, class)) {
        i += 4;
    }
    while s.get(i).is_some_and(|&b| has(b, class)) {
        i += 1;
    }
    i
}

#[inline]
fn token_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i..i + 4).is_some_and(|w| {
        w.len() == 4
            && is_token_char(w[0]) & is_token_char(w[1]) & is_token_char(w[2]) & is_token_char(w[3])
    }) {
        i += 4;
    }
    while s.get(i).is_some_and(|&b| is_token_char(b)) {
        i += 1;
    }
    i
}

fn trim(s: &[u8]) -> &[u8] {
    let start = skip_ws(s, 0);
    let mut end = s.len();
    while end > start && s.get(end - 1).is_some_and(|&b| is_ws(b)) {
        end -= 1;
    }
    s.get(start..end).unwrap_or(&[])
}

/// `s[open]` is `"`; returns the index just after the closing quote.
//= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
//# quoted-pair  =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
fn quoted_end(s: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        let at = i + super::find::two(b'"', b'\\', s.get(i..)?)?;
        if s.get(at) == Some(&b'"') {
            return Some(at + 1);
        }
        match s.get(at + 1) {
            Some(&c) if c != b'\r' && c != b'\n' && c < 0x80 => i = at + 2,
            _ => return None,
        }
    }
}

/// Decimal digits only, no sign, no whitespace; None on overflow.
fn digits_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let mut n: u32 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(n)
}

/// `port = 1*DIGIT` at `i`, within u16; returns (port, end).
fn port_at(s: &[u8], i: usize) -> Option<(u16, usize)> {
    // One pass: digits accumulate until the first non-digit, and past 65535 it is out of range
    // whatever follows (leading zeros keep the value small, as they should).
    let mut e = i;
    let mut n: u32 = 0;
    while let Some(&b) = s.get(e) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        n = n * 10 + u32::from(d);
        if n > u32::from(u16::MAX) {
            return None;
        }
        e += 1;
    }
    if e == i {
        return None;
    }
    Some((n as u16, e))
}

/// `host = hostname / IPv4address / IPv6reference` at `i`; returns (host, end).
fn host_at(s: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if s.get(i) == Some(&b'[') {
        let close = i + 1 + find(b']', s.get(i + 1..)?)?;
        let inner = s.get(i + 1..close)?;
        let ok = inner.contains(&b':')
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return None;
        }
        return Some((s.get(i..close + 1)?, close + 1));
    }
    let e = class_end(s, i, HOST);
    if e == i {
        return None;
    }
    Some((s.get(i..e)?, e))
}

/// Unquoted or quoted gen-value at `i`; returns (value without quotes, end).
fn gen_value_at(s: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if s.get(i) == Some(&b'"') {
        let e = quoted_end(s, i)?;
        return Some((s.get(i + 1..e - 1)?, e));
    }
    let e = class_end(s, i, GENVAL);
    if e == i {
        return None;
    }
    Some((s.get(i..e)?, e))
}

type Param<'a> = (&'a [u8], Option<&'a [u8]>, usize);

/// `SEMI generic-param` with `s[i] == ';'`: `;` SWS token [ SWS "=" SWS gen-value ].
/// Returns (name, value, end).
fn param_at(s: &[u8], i: usize) -> Option<Param<'_>> {
    let start = skip_ws(s, i + 1);
    let name_end = token_end(s, start);
    if name_end == start {
        return None;
    }
    let name = s.get(start..name_end)?;
    let eq = skip_ws(s, name_end);
    if s.get(eq) != Some(&b'=') {
        return Some((name, None, name_end));
    }
    let (value, end) = gen_value_at(s, skip_ws(s, eq + 1))?;
    Some((name, Some(value), end))
}

/// `*( SEMI generic-param )` from `i`, calling `f` on each; returns (the params text from the
/// first `;` to the end of the last param, end). Stops before anything that is not `;`.
fn params_at<'a>(
    s: &'a [u8],
    i: usize,
    mut f: impl FnMut(&'a [u8], Option<&'a [u8]>),
) -> Option<(&'a [u8], usize)> {
    let mut end = i;
    let mut first = None;
    loop {
        let semi = skip_ws(s, end);
        if s.get(semi) != Some(&b';') {
            break;
        }
        first.get_or_insert(semi);
        let (name, value, e) = param_at(s, semi)?;
        f(name, value);
        end = e;
    }
    let text = match first {
        Some(start) => s.get(start..end)?,
        None => &[],
    };
    Some((text, end))
}

/// The value of parameter `name` (case-insensitive) in a `;a=b;c` list such as
/// `NameAddr::params` or `Uri::params`: `None` absent, `Some(None)` without value,
/// `Some(Some(v))` with value (quotes removed). Stops at the first malformed param or at `?`.
pub fn find_param<'a>(params: &'a [u8], name: &[u8]) -> Option<Option<&'a [u8]>> {
    let mut i = 0;
    loop {
        let semi = skip_ws(params, i);
        if params.get(semi) != Some(&b';') {
            return None;
        }
        let (n, v, e) = param_at(params, semi)?;
        if n.eq_ignore_ascii_case(name) {
            return Some(v);
        }
        i = e;
    }
}

// ---------------------------------------------------------------------------------------------
// Via

/// One via-parm starting at `start`; returns it and `Some(index after the comma)` when another
/// via-parm follows, `None` at the end of the value.
//= https://www.rfc-editor.org/rfc/rfc3261#section-20.42
//# via-parm          =  sent-protocol LWS sent-by *( SEMI via-params )
//# sent-protocol     =  protocol-name SLASH protocol-version SLASH transport
fn via_at(s: &[u8], start: usize) -> Option<(Via<'_>, Option<usize>)> {
    let raw_start = skip_ws(s, start);
    // protocol-name SLASH protocol-version SLASH (SLASH = SWS "/" SWS); nearly always written
    // `SIP/2.0/` exactly, recognised by one word compare.
    let mut i = raw_start;
    let slashes_left = if s.get(i..i + 8).is_some_and(|w| eq_folded!(w, b"sip/2.0/")) {
        i = skip_ws(s, i + 8);
        0
    } else {
        2
    };
    for _ in 0..slashes_left {
        let e = token_end(s, i);
        if e == i {
            return None;
        }
        let slash = skip_ws(s, e);
        if s.get(slash) != Some(&b'/') {
            return None;
        }
        i = skip_ws(s, slash + 1);
    }
    let transport_end = token_end(s, i);
    if transport_end == i {
        return None;
    }
    let transport = s.get(i..transport_end)?;
    // LWS: at least one whitespace character
    let host_start = skip_ws(s, transport_end);
    if host_start == transport_end {
        return None;
    }
    // sent-by = host [ COLON port ]  (COLON = SWS ":" SWS)
    let (host, mut end) = host_at(s, host_start)?;
    let mut port = None;
    let colon = skip_ws(s, end);
    if s.get(colon) == Some(&b':') {
        let (p, e) = port_at(s, skip_ws(s, colon + 1))?;
        port = Some(p);
        end = e;
    }
    let mut via = Via {
        transport,
        host,
        port,
        ..Via::default()
    };
    let mut bad = false;
    let (_, params_end) = params_at(s, end, |name, value| {
        if eq_folded!(name, b"branch") {
            match value {
                Some(v) if via.branch.is_none() => via.branch = Some(v),
                Some(_) => {}
                None => bad = true,
            }
        } else if eq_folded!(name, b"rport") {
            //= https://www.rfc-editor.org/rfc/rfc3581#section-3
            //# response-port = "rport" [EQUAL 1*DIGIT]
            match value {
                None => via.rport = Some(None),
                Some(v) => match digits_u32(v).and_then(|n| u16::try_from(n).ok()) {
                    Some(p) => via.rport = Some(Some(p)),
                    None => bad = true,
                },
            }
        } else if eq_folded!(name, b"received") {
            match value {
                Some(v) if via.received.is_none() => via.received = Some(v),
                Some(_) => {}
                None => bad = true,
            }
        }
    })?;
    if bad {
        return None;
    }
    via.raw = s.get(raw_start..params_end)?;
    let next = skip_ws(s, params_end);
    match s.get(next) {
        None => Some((via, None)),
        Some(b',') => Some((via, Some(next + 1))),
        Some(_) => None,
    }
}

/// Parses the first via-parm of a Via header value; a comma-separated rest is not examined
/// (use [`via_parms`] to walk and validate all of them).
pub fn parse_via(value: &[u8]) -> Result<Via<'_>, HeaderError> {
    via_at(value, 0)
        .map(|(v, _)| v)
        .ok_or(HeaderError::Malformed("Via"))
}

/// Iterator over the comma-separated via-parms of one Via header value; yields one `Err` and
/// stops at the first malformed one (a trailing comma is malformed).
pub fn via_parms(value: &[u8]) -> ViaParms<'_> {
    ViaParms {
        value,
        next: Some(0),
    }
}

/// See [`via_parms`].
#[derive(Clone, Debug)]
pub struct ViaParms<'a> {
    value: &'a [u8],
    next: Option<usize>,
}

impl<'a> Iterator for ViaParms<'a> {
    type Item = Result<Via<'a>, HeaderError>;
    fn next(&mut self) -> Option<Self::Item> {
        let at = self.next.take()?;
        match via_at(self.value, at) {
            Some((via, next)) => {
                self.next = next;
                Some(Ok(via))
            }
            None => Some(Err(HeaderError::Malformed("Via"))),
        }
    }
}

/// The topmost via-parm of the first Via header (a comma list is split).
pub fn top_via<'a>(msg: &Message<'a>) -> Result<Via<'a>, HeaderError> {
    let value = msg
        .header(HeaderName::Via)
        .ok_or(HeaderError::Missing("Via"))?;
    parse_via(value)
}

// ---------------------------------------------------------------------------------------------
// URIs

fn uri_inner(s: &[u8]) -> Option<Uri<'_>> {
    // Nearly every URI here is `sip:`: recognised by one word compare.
    if let Some(scheme) = s.get(..3) {
        if s.get(3) == Some(&b':') && eq_folded!(scheme, b"sip") {
            return sip_uri(scheme, s.get(4..).filter(|r| !r.is_empty())?);
        }
    }
    let colon = find(b':', s)?;
    let scheme = s.get(..colon)?;
    if !scheme.first()?.is_ascii_alphabetic() || !all_in(scheme, SCHEME) {
        return None;
    }
    let rest = s.get(colon + 1..)?;
    if rest.is_empty() {
        return None;
    }
    if eq_folded!(scheme, b"sip") || eq_folded!(scheme, b"sips") {
        return sip_uri(scheme, rest);
    }
    if !valid_part(rest, URIC) {
        return None;
    }
    if eq_folded!(scheme, b"tel") {
        //= https://www.rfc-editor.org/rfc/rfc3966#section-3
        //# telephone-uri = "tel:" telephone-subscriber
        let end = memchr(b';', rest).unwrap_or(rest.len());
        let number = rest.get(..end)?;
        if number.is_empty() {
            return None;
        }
        let params = rest.get(end..)?;
        return Some(Uri {
            scheme,
            user: Some(number),
            params,
            ..Uri::default()
        });
    }
    // Any other scheme is opaque here (RFC 4475 §3.3.2: 416 is the caller's decision).
    Some(Uri {
        scheme,
        params: rest,
        ..Uri::default()
    })
}

//= https://www.rfc-editor.org/rfc/rfc3261#section-19.1.1
//# sip:user:password@host:port;uri-parameters?headers
fn sip_uri<'a>(scheme: &'a [u8], rest: &'a [u8]) -> Option<Uri<'a>> {
    // userinfo cannot hold a raw "@" (user, password and headers grammar exclude it), so the
    // first "@" ends it; the user part may hold ";" "?" "/" "," (TC_INTMETH, TC_SEMIURI).
    let (user, password, hostport) = match find(b'@', rest) {
        Some(at) => {
            let userinfo = rest.get(..at)?;
            let (user, password) = match find(b':', userinfo) {
                Some(c) => (userinfo.get(..c)?, Some(userinfo.get(c + 1..)?)),
                None => (userinfo, None),
            };
            if user.is_empty() || !valid_part(user, USER) {
                return None;
            }
            if password.is_some_and(|p| !valid_part(p, PASS)) {
                return None;
            }
            (Some(user), password, rest.get(at + 1..)?)
        }
        None => (None, None, rest),
    };
    let (host, mut end) = host_at(hostport, 0)?;
    let mut port = None;
    if hostport.get(end) == Some(&b':') {
        let (p, e) = port_at(hostport, end + 1)?;
        port = Some(p);
        end = e;
    }
    let params = hostport.get(end..)?;
    if !matches!(params.first(), None | Some(b';' | b'?')) || !valid_part(params, PARAM) {
        return None;
    }
    Some(Uri {
        scheme,
        user,
        password,
        host,
        port,
        params,
    })
}

/// A URI alone (no `<>`, no surrounding whitespace). sip/sips are parsed fully and checked
/// against the RFC 3261 character sets (escapes must be `%HH`); tel gives its number as `user`;
/// other schemes only need `scheme ":" 1*uric`.
pub fn parse_uri(value: &[u8]) -> Result<Uri<'_>, HeaderError> {
    uri_inner(value).ok_or(HeaderError::Malformed("URI"))
}

// ---------------------------------------------------------------------------------------------
// name-addr / addr-spec

/// One `(name-addr / addr-spec) *(SEMI param)` at `start`; returns it and the index after it
/// (at a `,`, at the end, or at whatever follows for the caller to judge).
//= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
//# name-addr      =  [ display-name ] LAQUOT addr-spec RAQUOT
//# display-name   =  *(token LWS)/ quoted-string
fn name_addr_at(s: &[u8], start: usize) -> Option<(NameAddr<'_>, usize)> {
    let mut i = skip_ws(s, start);
    let mut display = None;
    let bracketed = match *s.get(i)? {
        b'"' => {
            let e = quoted_end(s, i)?;
            display = Some(s.get(i + 1..e - 1)?);
            i = skip_ws(s, e);
            if s.get(i) != Some(&b'<') {
                return None;
            }
            true
        }
        b'<' => true,
        _ => {
            // A token display name (TC_BADDN: "Bell, Alexander" is not one) or a bare addr-spec,
            // whose scheme's ":" is the first byte that is neither token nor LWS.
            let mut j = i;
            while s.get(j).is_some_and(|&b| is_token_char(b) || is_ws(b)) {
                j += 1;
            }
            if s.get(j) == Some(&b'<') {
                let d = trim(s.get(i..j)?);
                if !d.is_empty() {
                    display = Some(d);
                }
                i = j;
                true
            } else {
                false
            }
        }
    };
    let (uri_raw, uri_end) = if bracketed {
        // LAQUOT = SWS "<" and RAQUOT = ">" SWS: no whitespace inside (TC_BADASPEC); the URI
        // parser rejects it.
        let close = i + 1 + find(b'>', s.get(i + 1..)?)?;
        (s.get(i + 1..close)?, close + 1)
    } else {
        let mut j = i;
        while s
            .get(j)
            .is_some_and(|&b| !is_ws(b) && b != b';' && b != b',')
        {
            j += 1;
        }
        let raw = s.get(i..j)?;
        //= https://www.rfc-editor.org/rfc/rfc3261#section-20
        //# If the URI contains a comma, question mark or semicolon, the URI MUST be enclosed
        //# in angle brackets (< and >).
        if raw.contains(&b'?') {
            return None;
        }
        (raw, j)
    };
    let uri = uri_inner(uri_raw)?;
    let mut tag = None;
    let (params, end) = params_at(s, uri_end, |name, value| {
        if tag.is_none() && eq_folded!(name, b"tag") {
            tag = value;
        }
    })?;
    Some((
        NameAddr {
            display,
            uri_raw,
            uri,
            tag,
            params,
        },
        end,
    ))
}

/// A From/To/P-Asserted-Identity style value holding exactly one name-addr or addr-spec.
pub fn parse_name_addr(value: &[u8]) -> Result<NameAddr<'_>, HeaderError> {
    let err = HeaderError::Malformed("name-addr");
    let (na, end) = name_addr_at(value, 0).ok_or(err)?;
    if skip_ws(value, end) != value.len() {
        return Err(err);
    }
    Ok(na)
}

/// Iterator over a comma-separated list of name-addr / addr-spec entries (Route, Record-Route,
/// P-Asserted-Identity); yields one `Err` and stops at the first malformed entry.
pub fn name_addrs(value: &[u8]) -> NameAddrs<'_> {
    NameAddrs {
        value,
        next: Some(0),
    }
}

/// See [`name_addrs`].
#[derive(Clone, Debug)]
pub struct NameAddrs<'a> {
    value: &'a [u8],
    next: Option<usize>,
}

impl<'a> Iterator for NameAddrs<'a> {
    type Item = Result<NameAddr<'a>, HeaderError>;
    fn next(&mut self) -> Option<Self::Item> {
        let err = HeaderError::Malformed("name-addr");
        let at = self.next.take()?;
        let Some((na, end)) = name_addr_at(self.value, at) else {
            return Some(Err(err));
        };
        let after = skip_ws(self.value, end);
        match self.value.get(after) {
            None => {}
            Some(b',') => self.next = Some(after + 1),
            Some(_) => return Some(Err(err)),
        }
        Some(Ok(na))
    }
}

// ---------------------------------------------------------------------------------------------
// CSeq, numbers, Contact, Digest

//= https://www.rfc-editor.org/rfc/rfc3261#section-20.16
//# CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
pub fn parse_cseq(value: &[u8]) -> Result<CSeq<'_>, HeaderError> {
    let err = HeaderError::Malformed("CSeq");
    let s = trim(value);
    let mut digits_end = 0;
    while s.get(digits_end).is_some_and(u8::is_ascii_digit) {
        digits_end += 1;
    }
    // "MUST be expressible as a 32-bit unsigned integer" (§8.1.1.5): TC_SCALAR02 overflows.
    let seq = digits_u32(s.get(..digits_end).ok_or(err)?).ok_or(err)?;
    let method_start = skip_ws(s, digits_end);
    if method_start == digits_end {
        return Err(err);
    }
    let method_end = token_end(s, method_start);
    if method_end == method_start || method_end != s.len() {
        return Err(err);
    }
    let method_raw = s.get(method_start..method_end).ok_or(err)?;
    Ok(CSeq {
        seq,
        method: Method::parse(method_raw),
        method_raw,
    })
}

/// Decimal u32 with surrounding whitespace allowed (Expires, Content-Length, Max-Forwards).
pub fn parse_u32(value: &[u8]) -> Option<u32> {
    digits_u32(trim(value))
}

/// delta-seconds that saturate instead of failing (RFC 3261 §20.19 caps Expires at 2**32-1).
fn delta_seconds_saturating(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits_u32(v).unwrap_or(u32::MAX))
}

/// Walks one Contact value; `Some(true)` for `*`, `Some(false)` after feeding every entry to
/// `f`, `None` when malformed.
//= https://www.rfc-editor.org/rfc/rfc3261#section-20.10
//# Contact        =  ("Contact" / "m" ) HCOLON
//#                   ( STAR / (contact-param *(COMMA contact-param)))
fn visit_contacts<'a>(value: &'a [u8], mut f: impl FnMut(ContactEntry<'a>)) -> Option<bool> {
    let v = trim(value);
    if v == b"*" {
        return Some(true);
    }
    if v.is_empty() {
        return None;
    }
    let mut i = 0;
    loop {
        let (addr, end) = name_addr_at(v, i)?;
        let expires = match find_param(addr.params, b"expires") {
            Some(Some(x)) => delta_seconds_saturating(x),
            _ => None,
        };
        f(ContactEntry { addr, expires });
        let next = skip_ws(v, end);
        match v.get(next) {
            None => return Some(false),
            Some(b',') => i = next + 1,
            Some(_) => return None,
        }
    }
}

pub fn parse_contacts(value: &[u8]) -> Result<Contacts<'_>, HeaderError> {
    let mut list = SmallVec::new();
    match visit_contacts(value, |e| list.push(e)) {
        Some(true) => Ok(Contacts::Star),
        Some(false) => Ok(Contacts::List(list)),
        None => Err(HeaderError::Malformed("Contact")),
    }
}

/// Contacts of all Contact headers of the message together (`*` must stand alone).
/// No Contact header at all gives an empty list.
pub fn contacts<'a>(msg: &Message<'a>) -> Result<Contacts<'a>, HeaderError> {
    let err = HeaderError::Malformed("Contact");
    let mut list = SmallVec::new();
    let mut star = false;
    let mut count = 0usize;
    for value in msg.headers_named(HeaderName::Contact) {
        count += 1;
        star |= visit_contacts(value, |e| list.push(e)).ok_or(err)?;
    }
    contact_rule(list, star, count)
}

/// `*` must stand alone: one Contact header holding it and nothing else.
fn contact_rule(
    list: SmallVec<[ContactEntry<'_>; 2]>,
    star: bool,
    headers: usize,
) -> Result<Contacts<'_>, HeaderError> {
    match (star, headers) {
        (false, _) => Ok(Contacts::List(list)),
        (true, 1) => Ok(Contacts::Star),
        (true, _) => Err(HeaderError::Malformed("Contact")),
    }
}

/// Index of a known digest-response parameter in `parse_digest_credentials`' field array:
/// dispatch on length first so each parameter costs at most two comparisons.
fn digest_slot(name: &[u8]) -> Option<usize> {
    match name.len() {
        2 if eq_folded!(name, b"nc") => Some(9),
        3 if eq_folded!(name, b"uri") => Some(3),
        3 if eq_folded!(name, b"qop") => Some(8),
        5 if eq_folded!(name, b"realm") => Some(1),
        5 if eq_folded!(name, b"nonce") => Some(2),
        6 if eq_folded!(name, b"cnonce") => Some(6),
        6 if eq_folded!(name, b"opaque") => Some(7),
        8 if eq_folded!(name, b"username") => Some(0),
        8 if eq_folded!(name, b"response") => Some(4),
        9 if eq_folded!(name, b"algorithm") => Some(5),
        _ => None,
    }
}

/// `Digest k=v, ...`; Err for another scheme or a missing username/realm/nonce/uri/response.
/// Values may be quoted or not (a non-compliant unquoted `uri=sip:...` is tolerated up to the
/// next comma or whitespace); a known parameter given twice is an error.
//= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
//# credentials       =  ("Digest" LWS digest-response) / other-response
//# digest-response   =  dig-resp *(COMMA dig-resp)
pub fn parse_digest_credentials(value: &[u8]) -> Result<DigestCredentials<'_>, HeaderError> {
    let err = HeaderError::Malformed("Authorization");
    let s = value;
    let scheme_start = skip_ws(s, 0);
    let scheme_end = token_end(s, scheme_start);
    if !s
        .get(scheme_start..scheme_end)
        .is_some_and(|t| eq_folded!(t, b"digest"))
    {
        return Err(err);
    }
    let mut i = skip_ws(s, scheme_end);
    if i == scheme_end {
        return Err(err);
    }
    let mut fields: [Option<&[u8]>; 10] = [None; 10];
    loop {
        // empty list elements are allowed (RFC 7235 §4: "#rule")
        while s.get(i) == Some(&b',') {
            i = skip_ws(s, i + 1);
        }
        if i >= s.len() {
            break;
        }
        let name_end = token_end(s, i);
        if name_end == i {
            return Err(err);
        }
        let name = s.get(i..name_end).ok_or(err)?;
        let eq = skip_ws(s, name_end);
        if s.get(eq) != Some(&b'=') {
            return Err(err);
        }
        let vstart = skip_ws(s, eq + 1);
        let (val, vend) = if s.get(vstart) == Some(&b'"') {
            let e = quoted_end(s, vstart).ok_or(err)?;
            (s.get(vstart + 1..e - 1).ok_or(err)?, e)
        } else {
            let mut e = vstart;
            while s
                .get(e)
                .is_some_and(|&b| !is_ws(b) && b != b',' && b != b'"')
            {
                e += 1;
            }
            if e == vstart {
                return Err(err);
            }
            (s.get(vstart..e).ok_or(err)?, e)
        };
        if let Some(k) = digest_slot(name) {
            let slot = fields.get_mut(k).ok_or(err)?;
            if slot.is_some() {
                return Err(err);
            }
            *slot = Some(val);
        }
        i = skip_ws(s, vend);
        match s.get(i) {
            None => break,
            Some(b',') => i = skip_ws(s, i + 1),
            Some(_) => return Err(err),
        }
    }
    let [username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc] = fields;
    Ok(DigestCredentials {
        username: username.ok_or(err)?,
        realm: realm.ok_or(err)?,
        nonce: nonce.ok_or(err)?,
        uri: uri.ok_or(err)?,
        response: response.ok_or(err)?,
        algorithm,
        cnonce,
        opaque,
        qop,
        nc,
    })
}

// ---------------------------------------------------------------------------------------------
// Message-level validation

/// `rfc1123-date = wkday "," SP date1 SP time SP "GMT"` (RFC 3261 §20.17), e.g.
/// `Sat, 15 Oct 2005 04:44:56 GMT`. TC_BADDATE ("EST") fails.
fn is_sip_date(v: &[u8]) -> bool {
    const WKDAY: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTH: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let v = trim(v);
    let at = |a: usize, b: usize| v.get(a..b).unwrap_or(&[]);
    let digits = |a: usize, b: usize| {
        let d = at(a, b);
        d.len() == b - a && d.iter().all(u8::is_ascii_digit)
    };
    let one_of = |x: &[u8], set: &[&[u8]]| set.iter().any(|s| x.eq_ignore_ascii_case(s));
    v.len() == 29
        && one_of(at(0, 3), &WKDAY)
        && at(3, 5) == b", "
        && digits(5, 7)
        && at(7, 8) == b" "
        && one_of(at(8, 11), &MONTH)
        && at(11, 12) == b" "
        && digits(12, 16)
        && at(16, 17) == b" "
        && digits(17, 19)
        && at(19, 20) == b":"
        && digits(20, 22)
        && at(22, 23) == b":"
        && digits(23, 25)
        && at(25, 26) == b" "
        && at(26, 29).eq_ignore_ascii_case(b"GMT")
}

/// `callid = word [ "@" word ]`; any count of "@" is tolerated, but no whitespace or controls.
#[inline]
fn is_call_id(v: &[u8]) -> bool {
    !v.is_empty() && all_in(v, WORD)
}

/// Header values looked at by `request_headers` / `response_headers`, in one pass.
#[derive(Default)]
struct Mandatory<'a> {
    via: Option<&'a [u8]>,
    from: Option<&'a [u8]>,
    to: Option<&'a [u8]>,
    call_id: Option<&'a [u8]>,
    cseq: Option<&'a [u8]>,
    max_forwards: Option<&'a [u8]>,
    content_length: Option<&'a [u8]>,
    /// Requests only: the entries of every Contact header, and whether one was `*`.
    contacts: SmallVec<[ContactEntry<'a>; 2]>,
    contact_headers: usize,
    contact_star: bool,
}

fn once<'a>(
    slot: &mut Option<&'a [u8]>,
    value: &'a [u8],
    name: &'static str,
) -> Result<(), HeaderError> {
    //= https://www.rfc-editor.org/rfc/rfc4475#section-3.3.8
    //# An element receiving this request would respond with a 400 Bad Request.
    if slot.replace(value).is_some() {
        return Err(HeaderError::Duplicate(name));
    }
    Ok(())
}

/// One pass over the headers: records single-value headers (duplicates are errors), the first
/// Via, and for requests checks every Contact (TC_REGBADCT) and Date (TC_BADDATE).
/// Fills `m` (not returned by value: it holds the contact list, and a move is a memcpy).
#[inline(always)]
fn collect<'a>(msg: &Message<'a>, request: bool, m: &mut Mandatory<'a>) -> Result<(), HeaderError> {
    for h in msg.headers.iter() {
        match h.name {
            HeaderName::Via => {
                m.via.get_or_insert(h.value);
            }
            HeaderName::From => once(&mut m.from, h.value, "From")?,
            HeaderName::To => once(&mut m.to, h.value, "To")?,
            HeaderName::CallId => once(&mut m.call_id, h.value, "Call-ID")?,
            HeaderName::CSeq => once(&mut m.cseq, h.value, "CSeq")?,
            HeaderName::MaxForwards => once(&mut m.max_forwards, h.value, "Max-Forwards")?,
            HeaderName::ContentLength => once(&mut m.content_length, h.value, "Content-Length")?,
            HeaderName::Contact if request => {
                let list = &mut m.contacts;
                let star = visit_contacts(h.value, |e| list.push(e))
                    .ok_or(HeaderError::Malformed("Contact"))?;
                m.contact_star |= star;
                m.contact_headers += 1;
            }
            HeaderName::Other
                if request && h.raw_name.eq_ignore_ascii_case(b"Date") && !is_sip_date(h.value) =>
            {
                return Err(HeaderError::Malformed("Date"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The parts common to requests and responses, after the one-pass collection.
struct Common<'a> {
    via: Via<'a>,
    from: NameAddr<'a>,
    to: NameAddr<'a>,
    call_id: &'a [u8],
    cseq: CSeq<'a>,
    content_length: Option<u32>,
}

/// `top_via`: the first Via header's first via-parm, when the caller has parsed it already
/// (with [`top_via`]); it is not parsed again.
#[inline(always)]
fn common<'a>(m: &Mandatory<'a>, top_via: Option<Via<'a>>) -> Result<Common<'a>, HeaderError> {
    //= https://www.rfc-editor.org/rfc/rfc3261#section-8.1.1
    //# A valid SIP request formulated by a UAC MUST, at a minimum, contain the following header
    //# fields: To, From, CSeq, Call-ID, Max-Forwards, and Via
    // Max-Forwards stays optional: RFC 2543 peers omit it (TC_INV2543).
    let via = m.via.ok_or(HeaderError::Missing("Via"))?;
    let from = m.from.ok_or(HeaderError::Missing("From"))?;
    let to = m.to.ok_or(HeaderError::Missing("To"))?;
    let call_id = m.call_id.ok_or(HeaderError::Missing("Call-ID"))?;
    let cseq = m.cseq.ok_or(HeaderError::Missing("CSeq"))?;
    let via = match top_via {
        Some(v) => v,
        None => parse_via(via)?,
    };
    let from = parse_name_addr(from).map_err(|_| HeaderError::Malformed("From"))?;
    let to = parse_name_addr(to).map_err(|_| HeaderError::Malformed("To"))?;
    if !is_call_id(call_id) {
        return Err(HeaderError::Malformed("Call-ID"));
    }
    let cseq = parse_cseq(cseq)?;
    let content_length = match m.content_length {
        None => None,
        Some(v) => Some(parse_u32(v).ok_or(HeaderError::Malformed("Content-Length"))?),
    };
    Ok(Common {
        via,
        from,
        to,
        call_id,
        cseq,
        content_length,
    })
}

/// Validates a request and parses its mandatory headers (SPEC §3.1, RFC 4475 invalid cases).
/// Err for a response start line (`Malformed("Request-Line")`).
///
/// Checks, in order: SIP/2.0 (`Version`, for a 505), the Request-URI (`RequestUri`: `<...>`,
/// bad characters, or `?headers` in a sip/sips URI), one value each of From, To, Call-ID, CSeq,
/// Max-Forwards, Content-Length (`Duplicate`), every Contact and a Date if present, presence of
/// Via, From, To, Call-ID, CSeq (`Missing`), their syntax (`Malformed`), Max-Forwards 0..=255,
/// and the CSeq method against the start line, compared as raw tokens (`CSeqMismatch`).
pub fn request_headers<'a>(msg: &Message<'a>) -> Result<RequestHeaders<'a>, HeaderError> {
    request_headers_with(msg, None)
}

/// [`request_headers`] for a caller that has parsed the top Via already ([`top_via`]: the
/// worker needs it early for a REGISTER's transaction key), so it is not parsed twice.
pub fn request_headers_with<'a>(
    msg: &Message<'a>,
    top_via: Option<Via<'a>>,
) -> Result<RequestHeaders<'a>, HeaderError> {
    let (method, method_raw, uri_raw, version) = match msg.start {
        StartLine::Request {
            method,
            method_raw,
            uri,
            version,
        } => (method, method_raw, uri, version),
        StartLine::Response { .. } => return Err(HeaderError::Malformed("Request-Line")),
    };
    //= https://www.rfc-editor.org/rfc/rfc3261#section-8.2.2
    //# (505 Version Not Supported)
    if !eq_folded!(version, b"sip/2.0") {
        return Err(HeaderError::Version);
    }
    let uri = uri_inner(uri_raw).ok_or(HeaderError::RequestUri)?;
    //= https://www.rfc-editor.org/rfc/rfc4475#section-3.1.2.11
    //# This INVITE is malformed, as the SIP Request-URI contains escaped headers.
    if uri.is_sip() && uri.params.contains(&b'?') {
        return Err(HeaderError::RequestUri);
    }
    let mut m = Mandatory::default();
    collect(msg, true, &mut m)?;
    let c = common(&m, top_via)?;
    let max_forwards = match m.max_forwards {
        None => None,
        //= https://www.rfc-editor.org/rfc/rfc3261#section-20.22
        //# The Max-Forwards value is an integer in the range 0-255
        Some(v) => match parse_u32(v) {
            Some(n) if n <= 255 => Some(n),
            _ => return Err(HeaderError::Malformed("Max-Forwards")),
        },
    };
    //= https://www.rfc-editor.org/rfc/rfc4475#section-3.1.2.17
    //# The element receiving this request should respond with a 400 Bad Request.
    if c.cseq.method_raw != method_raw {
        return Err(HeaderError::CSeqMismatch);
    }
    Ok(RequestHeaders {
        method,
        uri,
        via: c.via,
        from: c.from,
        to: c.to,
        call_id: c.call_id,
        cseq: c.cseq,
        max_forwards,
        content_length: c.content_length,
        contacts: contact_rule(
            std::mem::take(&mut m.contacts),
            m.contact_star,
            m.contact_headers,
        ),
    })
}

/// Validates a response and parses the headers needed to match it to a client transaction:
/// one each of From/To/Call-ID/CSeq/Content-Length, Via present, all parseable
/// (TC_SCALARLG's overlarge CSeq fails here). Err for a request start line.
pub fn response_headers<'a>(msg: &Message<'a>) -> Result<ResponseHeaders<'a>, HeaderError> {
    let code = match msg.start {
        StartLine::Response { code, .. } => code,
        StartLine::Request { .. } => return Err(HeaderError::Malformed("Status-Line")),
    };
    // scan has already refused a response in another version than SIP/2.0
    let mut m = Mandatory::default();
    collect(msg, false, &mut m)?;
    let c = common(&m, None)?;
    Ok(ResponseHeaders {
        code,
        via: c.via,
        from: c.from,
        to: c.to,
        call_id: c.call_id,
        cseq: c.cseq,
        content_length: c.content_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::scan::scan;

    fn list(c: Contacts<'_>) -> SmallVec<[ContactEntry<'_>; 2]> {
        match c {
            Contacts::List(l) => l,
            Contacts::Star => panic!("list expected"),
        }
    }

    // ---- Via

    #[test]
    fn via_basic_params() {
        let value = b"SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776;received=192.0.2.4;rport=5070;ttl=16";
        let v = parse_via(value).unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"pc33.example.com");
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch, Some(&b"z9hG4bK776"[..]));
        assert_eq!(v.received, Some(&b"192.0.2.4"[..]));
        assert_eq!(v.rport, Some(Some(5070)));
        assert_eq!(v.raw, value);
    }

    #[test]
    fn via_rport_forms() {
        let bare = parse_via(b"SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK1").unwrap();
        assert_eq!(bare.rport, Some(None));
        assert_eq!(bare.port, None);
        let none = parse_via(b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1").unwrap();
        assert_eq!(none.rport, None);
        let spaced = parse_via(b"SIP/2.0/UDP 10.0.0.1 ; rport = 5060 ; branch = z9hG4bK1").unwrap();
        assert_eq!(spaced.rport, Some(Some(5060)));
        assert_eq!(spaced.branch, Some(&b"z9hG4bK1"[..]));
        assert!(parse_via(b"SIP/2.0/UDP 10.0.0.1;rport=abc").is_err());
        assert!(parse_via(b"SIP/2.0/UDP 10.0.0.1;rport=70000").is_err());
        assert!(parse_via(b"SIP/2.0/UDP 10.0.0.1;rport=").is_err());
        assert!(parse_via(b"SIP/2.0/UDP 10.0.0.1;branch").is_err());
        assert!(parse_via(b"SIP/2.0/UDP 10.0.0.1;received").is_err());
    }

    #[test]
    fn via_ipv6() {
        let v = parse_via(
            b"SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKas3-111;received=2001:db8::9:255",
        )
        .unwrap();
        assert_eq!(v.transport, b"TCP");
        assert_eq!(v.host, b"[2001:db8::9:1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.received, Some(&b"2001:db8::9:255"[..]));
        let v = parse_via(b"SIP/2.0/UDP [::1];received=[::2]").unwrap();
        assert_eq!(v.host, b"[::1]");
        assert_eq!(v.received, Some(&b"[::2]"[..]));
        assert!(parse_via(b"SIP/2.0/UDP [::1").is_err());
        assert!(parse_via(b"SIP/2.0/UDP [zz::1]").is_err());
        assert!(parse_via(b"SIP/2.0/UDP []").is_err());
    }

    #[test]
    fn via_lws_and_folds() {
        let v =
            parse_via(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2 : 5060 ;branch=\r\n z9hG4bK30239")
                .unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch, Some(&b"z9hG4bK30239"[..]));
        assert_eq!(
            v.raw,
            &b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2 : 5060 ;branch=\r\n z9hG4bK30239"[..]
        );
        // The exact `SIP/2.0/` prefix (any case), then SWS before the transport.
        let v = parse_via(b"sip/2.0/ \r\n udp 192.0.2.2;branch=z9hG4bK1").unwrap();
        assert_eq!((v.transport, v.host), (&b"udp"[..], &b"192.0.2.2"[..]));
        assert!(parse_via(b"SIP/2.0/;branch=z9hG4bK1").is_err());
    }

    #[test]
    fn via_comma_list() {
        let value = b"SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2,SIP/2.0/TLS [::1]";
        let all: Vec<_> = via_parms(value).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].host, b"a.example.com");
        assert_eq!(all[0].raw, b"SIP/2.0/UDP a.example.com;branch=z9hG4bK1");
        assert_eq!(all[1].port, Some(5070));
        assert_eq!(all[2].transport, b"TLS");
        // parse_via takes the first one only
        assert_eq!(parse_via(value).unwrap(), all[0]);
        // a trailing comma or an empty element is malformed
        let trailing: Vec<_> = via_parms(b"SIP/2.0/UDP a, ").collect();
        assert_eq!(trailing.len(), 2);
        assert!(trailing[1].is_err());
        let bad: Vec<_> = via_parms(b"SIP/2.0/UDP 192.0.2.15;;,;,,").collect();
        assert_eq!(bad, vec![Err(HeaderError::Malformed("Via"))]);
    }

    #[test]
    fn via_malformed() {
        for bad in [
            &b""[..],
            b"SIP/2.0/UDP",
            b"SIP/2.0/UDP ",
            b"SIP/2.0 host",
            b"SIP/2.0/UDPhost",
            b"SIP/2.0/UDP host:",
            b"SIP/2.0/UDP host:99999",
            b"SIP/2.0/UDP host;",
            b"SIP/2.0/UDP host;=x",
            b"SIP/2.0/UDP host;a=",
            b"SIP/2.0/UDP host junk",
            b"SIP/2.0/UDP ho\0st",
            b"SIP/2.0/UDP host;branch=\"unterminated",
        ] {
            assert!(parse_via(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn top_via_uses_the_first_header_and_first_parm() {
        let buf = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP first.example.com;branch=z9hG4bK1, SIP/2.0/UDP x\r\nVia: SIP/2.0/UDP second.example.com\r\n\r\n";
        let msg = scan(buf).unwrap();
        let v = top_via(&msg).unwrap();
        assert_eq!(v.host, b"first.example.com");
        let buf = b"OPTIONS sip:a@b SIP/2.0\r\nX: y\r\n\r\n";
        assert_eq!(
            top_via(&scan(buf).unwrap()),
            Err(HeaderError::Missing("Via"))
        );
    }

    // ---- URIs

    #[test]
    fn sip_uris() {
        let u =
            parse_uri(b"sip:alice:secret@atlanta.com:5060;transport=tcp;lr?subject=project&x=y")
                .unwrap();
        assert_eq!(u.scheme, b"sip");
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.user_str(), Some("alice"));
        assert_eq!(u.password, Some(&b"secret"[..]));
        assert_eq!(u.host, b"atlanta.com");
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.params, b";transport=tcp;lr?subject=project&x=y");
        assert_eq!(u.param(b"transport"), Some(Some(&b"tcp"[..])));
        assert_eq!(u.param(b"LR"), Some(None));
        assert_eq!(u.param(b"subject"), None);
        let u = parse_uri(b"SIPS:example.com").unwrap();
        assert!(u.is_sip());
        assert_eq!(u.user, None);
        assert_eq!(u.host, b"example.com");
        let u = parse_uri(b"sip:+15551234567;npdi@gw.example.net;user=phone").unwrap();
        assert_eq!(u.user, Some(&b"+15551234567;npdi"[..]));
        assert_eq!(u.params, b";user=phone");
        let u = parse_uri(b"sip:sips%3Auser%40example.com@example.net").unwrap();
        assert_eq!(u.user, Some(&b"sips%3Auser%40example.com"[..]));
    }

    #[test]
    fn ipv6_uris() {
        let u = parse_uri(b"sip:[2001:db8::10]:5070;transport=udp").unwrap();
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params, b";transport=udp");
        let u = parse_uri(b"sip:bob@[::ffff:192.0.2.1]").unwrap();
        assert_eq!(u.user, Some(&b"bob"[..]));
        assert_eq!(u.host, b"[::ffff:192.0.2.1]");
        assert!(parse_uri(b"sip:bob@[2001:db8::10").is_err());
        assert!(parse_uri(b"sip:bob@2001:db8::10").is_err());
    }

    #[test]
    fn other_schemes() {
        let u = parse_uri(b"tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.user, Some(&b"+1-201-555-0123"[..]));
        assert_eq!(u.host, b"");
        assert_eq!(u.params, b";phone-context=example.com");
        let u = parse_uri(b"soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme, b"soap.beep");
        assert_eq!(u.params, b"//192.0.2.103:3002");
        assert!(!u.is_sip());
        assert!(parse_uri(b"urn:service:sos").is_ok());
    }

    #[test]
    fn malformed_uris() {
        for bad in [
            &b""[..],
            b"sip:",
            b"sip",
            b":foo",
            b"1sip:a@b",
            b"<sip:a@b>",
            b"sip:a@b c",
            b" sip:a@b",
            b"sip:@host",
            b"sip:user@",
            b"sip:user@host:",
            b"sip:user@host:65536",
            b"sip:user@host:99999999999999999999",
            b"sip:us%G1er@host",
            b"sip:user%4@host",
            b"sip:user@host;p=%",
            b"sip:user@host junk",
            b"sip:user@ho\0st",
            b"sip:user@host,x",
            b"sip:us\"er@host",
            b"tel:",
            b"tel:;x",
            b"mailto:a b",
        ] {
            assert!(parse_uri(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    // ---- name-addr

    #[test]
    fn name_addr_forms() {
        let n =
            parse_name_addr(b"\"Bob \\\"B\\\" Smith\" <sip:bob@biloxi.com>;tag=a6c85cf").unwrap();
        assert_eq!(n.display, Some(&b"Bob \\\"B\\\" Smith"[..]));
        assert_eq!(n.uri_raw, b"sip:bob@biloxi.com");
        assert_eq!(n.tag, Some(&b"a6c85cf"[..]));
        assert_eq!(n.params, b";tag=a6c85cf");
        let n = parse_name_addr(b"A. G. Bell <sip:agb@bell-telephone.com> ;tag=a48s").unwrap();
        assert_eq!(n.display, Some(&b"A. G. Bell"[..]));
        assert_eq!(n.tag, Some(&b"a48s"[..]));
        let n = parse_name_addr(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some(&b"caller"[..]));
        let n = parse_name_addr(b"<sip:+12125551212@server.phone2net.com>;tag=887s").unwrap();
        assert_eq!(n.display, None);
        assert_eq!(n.uri.user, Some(&b"+12125551212"[..]));
        let n = parse_name_addr(b"sip:+12125551212@phone2net.com;tag=887s;user=phone").unwrap();
        assert_eq!(n.uri.params, b"");
        assert_eq!(n.params, b";tag=887s;user=phone");
        assert_eq!(n.tag, Some(&b"887s"[..]));
        let n = parse_name_addr(b"sip:a@b\r\n ;\r\n  tag = x1").unwrap();
        assert_eq!(n.tag, Some(&b"x1"[..]));
        let n = parse_name_addr(b"<sip:a@b;lr>").unwrap();
        assert_eq!(n.uri.params, b";lr");
        assert_eq!(n.tag, None);
        let n = parse_name_addr(b"\"\" <tel:+15551234>").unwrap();
        assert_eq!(n.display, Some(&b""[..]));
    }

    #[test]
    fn name_addr_malformed() {
        for bad in [
            &b""[..],
            b"\"Mr. J. User <sip:j.user@example.com>",
            b"\"Watson, Thomas\" < sip:t.watson@example.org >",
            b"<sip:a@b >",
            b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            b"<sip:a@b",
            b"<sip:a@b> junk",
            b"<sip:a@b>;",
            b"<sip:a@b>;tag=",
            b"\"x\" sip:a@b",
            b"sip:a@b, sip:c@d",
            b"name",
            b"<>",
            b"\"a\\\r\n\" <sip:a@b>",
        ] {
            assert!(
                parse_name_addr(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn name_addr_lists() {
        let v = b"<sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr> , \"PAI\" <tel:+15551234>";
        let all: Vec<_> = name_addrs(v).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].uri.host, b"p1.example.com");
        assert_eq!(all[0].uri.param(b"lr"), Some(None));
        assert_eq!(all[2].uri.user, Some(&b"+15551234"[..]));
        let bad: Vec<_> = name_addrs(b"<sip:a@b>, ").collect();
        assert_eq!(bad.len(), 2);
        assert!(bad[1].is_err());
        let bad: Vec<_> = name_addrs(b"<sip:a@b> x").collect();
        assert_eq!(bad, vec![Err(HeaderError::Malformed("name-addr"))]);
        assert_eq!(name_addrs(b"").count(), 1);
    }

    // ---- CSeq, numbers

    #[test]
    fn cseq() {
        let c = parse_cseq(b"4711 INVITE").unwrap();
        assert_eq!(
            (c.seq, c.method, c.method_raw),
            (4711, Method::Invite, &b"INVITE"[..])
        );
        let c = parse_cseq(b"0009\r\n  INVITE").unwrap();
        assert_eq!(c.seq, 9);
        let c = parse_cseq(b"4294967295 NEWMETHOD").unwrap();
        assert_eq!((c.seq, c.method), (u32::MAX, Method::Other));
        for bad in [
            &b""[..],
            b"INVITE",
            b"1",
            b"1INVITE",
            b"-1 INVITE",
            b"4294967296 INVITE",
            b"36893488147419103232 REGISTER",
            b"1 INVITE x",
            b"1 INV,TE",
        ] {
            assert!(parse_cseq(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn u32_values() {
        assert_eq!(parse_u32(b" 70 "), Some(70));
        assert_eq!(parse_u32(b"0068"), Some(68));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(
            parse_u32(b"1000000000000000000000000000000000000000000000000"),
            None
        );
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"1 2"), None);
        assert_eq!(parse_u32(b"\0"), None);
    }

    // ---- Contact

    #[test]
    fn contact_star() {
        assert_eq!(parse_contacts(b"*"), Ok(Contacts::Star));
        assert_eq!(parse_contacts(b" * "), Ok(Contacts::Star));
        assert!(parse_contacts(b"*, <sip:a@b>").is_err());
        assert!(parse_contacts(b"<sip:a@b>, *").is_err());
        assert!(parse_contacts(b"").is_err());
    }

    #[test]
    fn contact_lists_and_expires() {
        let l = list(
            parse_contacts(
                b"\"Mr. Watson\" <sip:watson@worcester.bell-telephone.com>;q=0.7; expires=3600,\r\n \"Mr. Watson\" <mailto:watson@bell-telephone.com> ;q=0.1, sip:w@192.0.2.4;expires=0",
            )
            .unwrap(),
        );
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].expires, Some(3600));
        assert_eq!(l[0].addr.uri.host, b"worcester.bell-telephone.com");
        assert_eq!(l[1].expires, None);
        assert_eq!(l[1].addr.uri.scheme, b"mailto");
        assert_eq!(l[2].expires, Some(0));
        assert_eq!(l[2].addr.uri.host, b"192.0.2.4");
        let l = list(parse_contacts(b"<sip:a@b>;expires=280297596632815").unwrap());
        assert_eq!(l[0].expires, Some(u32::MAX));
        let l = list(parse_contacts(b"<sip:a@b>;expires=soon").unwrap());
        assert_eq!(l[0].expires, None);
        // commas inside quotes and brackets do not split
        let l = list(parse_contacts(b"\"a, b\" <sip:x@y;p=1>;x=\"q,r\"").unwrap());
        assert_eq!(l.len(), 1);
        assert!(parse_contacts(b"<sip:a@b>,").is_err());
        assert!(parse_contacts(b"<sip:a@b>;;;;").is_err());
    }

    #[test]
    fn contacts_across_headers() {
        let buf = b"REGISTER sip:r SIP/2.0\r\nContact: <sip:a@h1>;expires=60\r\nm: sip:b@h2, <sip:c@h3>\r\n\r\n";
        let msg = scan(buf).unwrap();
        let l = list(contacts(&msg).unwrap());
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].expires, Some(60));
        assert_eq!(l[2].addr.uri.host, b"h3");
        let buf = b"REGISTER sip:r SIP/2.0\r\nContact: *\r\n\r\n";
        assert_eq!(contacts(&scan(buf).unwrap()), Ok(Contacts::Star));
        let buf = b"REGISTER sip:r SIP/2.0\r\nContact: *\r\nContact: <sip:a@b>\r\n\r\n";
        assert!(contacts(&scan(buf).unwrap()).is_err());
        let buf = b"REGISTER sip:r SIP/2.0\r\n\r\n";
        assert_eq!(list(contacts(&scan(buf).unwrap()).unwrap()).len(), 0);
    }

    // ---- Digest

    #[test]
    fn digest_quoted_and_unquoted() {
        let d = parse_digest_credentials(
            b"Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:bob@biloxi.com\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", algorithm=MD5",
        )
        .unwrap();
        assert_eq!(d.username, b"bob");
        assert_eq!(d.realm, b"biloxi.com");
        assert_eq!(d.nonce, b"dcd98b7102dd2f0e8b11d0f600bfb0c093");
        assert_eq!(d.uri, b"sip:bob@biloxi.com");
        assert_eq!(d.response, b"6629fae49393a05397450978507c4ef1");
        assert_eq!(d.qop, Some(&b"auth"[..]));
        assert_eq!(d.nc, Some(&b"00000001"[..]));
        assert_eq!(d.cnonce, Some(&b"0a4f113b"[..]));
        assert_eq!(d.opaque, Some(&b"5ccc069c403ebaf9f0171e9517f40e41"[..]));
        assert_eq!(d.algorithm, Some(&b"MD5"[..]));
    }

    #[test]
    fn digest_odd_spacing_case_and_folds() {
        let d = parse_digest_credentials(
            b"digest   USERNAME = \"alice\" ,realm=\"a.example\",,\r\n  nonce= \"n1\"\t,uri =\"sip:a.example\" ,  response=\"abc\",algorithm=SHA-256 ,opaque=\"\", x-ext=\"ignored, really\"",
        )
        .unwrap();
        assert_eq!(d.username, b"alice");
        assert_eq!(d.nonce, b"n1");
        assert_eq!(d.uri, b"sip:a.example");
        assert_eq!(d.algorithm, Some(&b"SHA-256"[..]));
        assert_eq!(d.opaque, Some(&b""[..]));
        assert_eq!(d.qop, None);
        // escaped quote stays escaped; unquoted uri tolerated
        let d = parse_digest_credentials(
            b"Digest username=\"a\\\"b\",realm=r,nonce=n,uri=sip:x@y,response=r1",
        )
        .unwrap();
        assert_eq!(d.username, b"a\\\"b");
        assert_eq!(d.uri, b"sip:x@y");
    }

    #[test]
    fn digest_malformed() {
        for bad in [
            &b""[..],
            b"Digest",
            b"Digest ",
            b"Basic dXNlcjpwYXNz",
            b"NoOneKnowsThisScheme opaque-data=here",
            b"Digestusername=\"a\"",
            b"Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\"",
            b"Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x",
            b"Digest username=\"a\" realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            b"Digest username=\"a\", username=\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            b"Digest username=, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            b"Digest =\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            b"Digest username",
        ] {
            assert!(parse_digest_credentials(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    // ---- find_param, dates, Call-ID

    #[test]
    fn params() {
        let p = b";tag=abc ; Expires = 60;lr;q=\"0.5\"";
        assert_eq!(find_param(p, b"tag"), Some(Some(&b"abc"[..])));
        assert_eq!(find_param(p, b"expires"), Some(Some(&b"60"[..])));
        assert_eq!(find_param(p, b"lr"), Some(None));
        assert_eq!(find_param(p, b"q"), Some(Some(&b"0.5"[..])));
        assert_eq!(find_param(p, b"none"), None);
        assert_eq!(find_param(b"", b"x"), None);
        assert_eq!(find_param(b";;x=1", b"x"), None);
    }

    #[test]
    fn dates() {
        assert!(is_sip_date(b"Sat, 13 Nov 2010 23:29:00 GMT"));
        assert!(is_sip_date(b"Sat, 15 Oct 2005 04:44:56 GMT"));
        assert!(!is_sip_date(b"Fri, 01 Jan 2010 16:00:00 EST"));
        assert!(!is_sip_date(b"Fri, 1 Jan 2010 16:00:00 GMT"));
        assert!(!is_sip_date(b"Foo, 01 Jan 2010 16:00:00 GMT"));
        assert!(!is_sip_date(b"Fri, 01 Jam 2010 16:00:00 GMT"));
        assert!(!is_sip_date(b""));
    }

    #[test]
    fn call_ids() {
        assert!(is_call_id(b"a84b4c76e66710@pc33.atlanta.com"));
        assert!(is_call_id(b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"));
        assert!(!is_call_id(b""));
        assert!(!is_call_id(b"a b"));
        assert!(!is_call_id(b"a\0b"));
        assert!(!is_call_id(b"a\r\n b"));
    }

    // ---- request_headers / response_headers

    const INVITE: &[u8] = b"INVITE sip:+15551234567@sbc.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK74bf9;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=9fxced76sl\r\n\
To: <sip:+15551234567@sbc.example.com>\r\n\
Call-ID: 3848276298220188511@198.51.100.7\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@198.51.100.7:5060>\r\n\
Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn with(replace: &str, by: &str) -> Vec<u8> {
        let s = std::str::from_utf8(INVITE).unwrap();
        assert!(s.contains(replace), "{replace}");
        s.replacen(replace, by, 1).into_bytes()
    }

    fn check(buf: &[u8]) -> Result<RequestHeaders<'_>, HeaderError> {
        request_headers(&scan(buf).unwrap())
    }

    #[test]
    fn request_headers_good() {
        let msg = scan(INVITE).unwrap();
        let r = request_headers(&msg).unwrap();
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.user, Some(&b"+15551234567"[..]));
        assert_eq!(r.uri.params, b";user=phone");
        assert_eq!(r.via.host, b"198.51.100.7");
        assert_eq!(r.via.rport, Some(None));
        assert_eq!(r.from.display, Some(&b"Alice"[..]));
        assert_eq!(r.from.tag, Some(&b"9fxced76sl"[..]));
        assert_eq!(r.to.tag, None);
        assert_eq!(r.call_id, b"3848276298220188511@198.51.100.7");
        assert_eq!(r.cseq.seq, 314159);
        assert_eq!(r.max_forwards, Some(70));
        assert_eq!(r.content_length, Some(4));
    }

    #[test]
    fn request_headers_refusals() {
        let cases: &[(&str, &str, HeaderError)] = &[
            ("SIP/2.0\r\nVia", "SIP/3.0\r\nVia", HeaderError::Version),
            (
                "INVITE sip:+1555",
                "INVITE <sip:+1555",
                HeaderError::RequestUri,
            ),
            (
                ";user=phone SIP",
                ";user=phone?Route=x SIP",
                HeaderError::RequestUri,
            ),
            (
                "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK74bf9;rport\r\n",
                "",
                HeaderError::Missing("Via"),
            ),
            (
                "Call-ID: 3848276298220188511@198.51.100.7\r\n",
                "",
                HeaderError::Missing("Call-ID"),
            ),
            ("CSeq: 314159 INVITE\r\n", "", HeaderError::Missing("CSeq")),
            (
                "To: <sip",
                "t: <sip:x@y>\r\nTo: <sip",
                HeaderError::Duplicate("To"),
            ),
            (
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\r\nMax-Forwards: 69\r\n",
                HeaderError::Duplicate("Max-Forwards"),
            ),
            (
                "Content-Length: 4\r\n",
                "l: 4\r\nContent-Length: 4\r\n",
                HeaderError::Duplicate("Content-Length"),
            ),
            (
                "CSeq: 314159 INVITE",
                "CSeq: 314159 ACK",
                HeaderError::CSeqMismatch,
            ),
            (
                "CSeq: 314159 INVITE",
                "CSeq: 314159 invite",
                HeaderError::CSeqMismatch,
            ),
            (
                "CSeq: 314159 INVITE",
                "CSeq: 99999999999 INVITE",
                HeaderError::Malformed("CSeq"),
            ),
            (
                "Max-Forwards: 70",
                "Max-Forwards: 256",
                HeaderError::Malformed("Max-Forwards"),
            ),
            (
                "Max-Forwards: 70",
                "Max-Forwards: seventy",
                HeaderError::Malformed("Max-Forwards"),
            ),
            (
                "Call-ID: 3848",
                "Call-ID: 38 48",
                HeaderError::Malformed("Call-ID"),
            ),
            (
                "Via: SIP/2.0/UDP 198.51.100.7:5060",
                "Via: SIP/2.0/UDP 198.51.100.7:5060;;",
                HeaderError::Malformed("Via"),
            ),
            (
                "From: \"Alice\"",
                "From: \"Alice",
                HeaderError::Malformed("From"),
            ),
            (
                "To: <sip:+1555",
                "To: < sip:+1555",
                HeaderError::Malformed("To"),
            ),
            (
                "Contact: <sip:alice@198.51.100.7:5060>",
                "Contact: sip:a@b?x=y",
                HeaderError::Malformed("Contact"),
            ),
            ("GMT", "EST", HeaderError::Malformed("Date")),
        ];
        for (from, to, want) in cases {
            let buf = with(from, to);
            assert_eq!(check(&buf).err(), Some(*want), "{from} -> {to}");
        }
        // a response is not a request
        let buf = b"SIP/2.0 200 OK\r\n\r\n";
        assert_eq!(
            request_headers(&scan(buf).unwrap()).err(),
            Some(HeaderError::Malformed("Request-Line"))
        );
    }

    #[test]
    fn request_headers_tolerances() {
        // Max-Forwards absent (RFC 2543), lower-case version, extension method matching raw
        let buf = with("Max-Forwards: 70\r\n", "");
        assert_eq!(check(&buf).unwrap().max_forwards, None);
        let buf = with("SIP/2.0\r\nVia", "sip/2.0\r\nVia");
        assert!(check(&buf).is_ok());
        let buf = b"FOO sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h\r\nf: <sip:a@b>;tag=1\r\nt: sip:c@d\r\ni: x\r\nCSeq: 1 FOO\r\n\r\n";
        let r = check(buf).unwrap();
        assert_eq!(r.method, Method::Other);
        assert_eq!(r.cseq.method_raw, b"FOO");
    }

    #[test]
    fn response_headers_checks() {
        let buf = b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let r = response_headers(&scan(buf).unwrap()).unwrap();
        assert_eq!(r.code, 401);
        assert_eq!(r.cseq.method, Method::Register);
        assert_eq!(r.to.tag, Some(&b"2"[..]));
        assert_eq!(r.content_length, Some(0));
        assert_eq!(
            response_headers(&scan(INVITE).unwrap()).err(),
            Some(HeaderError::Malformed("Status-Line"))
        );
        let buf = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 9292394834772304023312 OPTIONS\r\n\r\n";
        assert_eq!(
            response_headers(&scan(buf).unwrap()).err(),
            Some(HeaderError::Malformed("CSeq"))
        );
    }
}
