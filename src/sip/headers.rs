//! Typed, zero-copy views of the header values the engine needs.
//!
//! Owns: parsing one header value (already located by `scan.rs`) into a struct of borrowed
//! slices, and the request-level validation of RFC 3261 §8.2 / SPEC §3.1 (mandatory headers,
//! CSeq method = start-line method). Never allocates, never panics.

use super::scan::{HeaderName, Message, Method, StartLine};
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
    /// The whole via-parm text, for copying into responses.
    pub raw: &'a [u8],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uri<'a> {
    /// b"sip", b"sips", b"tel", ... as written
    pub scheme: &'a [u8],
    pub user: Option<&'a [u8]>,
    pub password: Option<&'a [u8]>,
    /// Host without brackets for IPv6? No: as written, IPv6 references keep their brackets.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// Everything after the host[:port] (";param...?headers"), may be empty.
    pub params: &'a [u8],
}

/// From, To, Contact entries, P-Asserted-Identity: `[display] <uri>;params` or bare `uri;params`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameAddr<'a> {
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
    /// the `expires` contact param, if present and numeric
    pub expires: Option<u32>,
}

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
}

pub fn parse_via(value: &[u8]) -> Result<Via<'_>, HeaderError> {
    todo!()
}
/// The topmost via-parm of the first Via header (a comma list is split).
pub fn top_via<'a>(msg: &Message<'a>) -> Result<Via<'a>, HeaderError> {
    todo!()
}
pub fn parse_uri(value: &[u8]) -> Result<Uri<'_>, HeaderError> {
    todo!()
}
pub fn parse_name_addr(value: &[u8]) -> Result<NameAddr<'_>, HeaderError> {
    todo!()
}
pub fn parse_cseq(value: &[u8]) -> Result<CSeq<'_>, HeaderError> {
    todo!()
}
pub fn parse_contacts(value: &[u8]) -> Result<Contacts<'_>, HeaderError> {
    todo!()
}
/// Contacts of all Contact headers of the message together (`*` must stand alone).
pub fn contacts<'a>(msg: &Message<'a>) -> Result<Contacts<'a>, HeaderError> {
    todo!()
}
/// `Digest k=v, ...`; Err for another scheme or a missing username/realm/nonce/uri/response.
pub fn parse_digest_credentials(value: &[u8]) -> Result<DigestCredentials<'_>, HeaderError> {
    todo!()
}
/// Decimal u32 with surrounding whitespace allowed (Expires, Content-Length, Max-Forwards).
pub fn parse_u32(value: &[u8]) -> Option<u32> {
    todo!()
}
/// Validates a request and parses its mandatory headers (SPEC §3.1, RFC 4475 invalid cases).
/// Err for a response start line.
pub fn request_headers<'a>(msg: &Message<'a>) -> Result<RequestHeaders<'a>, HeaderError> {
    todo!()
}
