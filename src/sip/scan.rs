//! Zero-copy SIP message scanner.
//!
//! Owns: turning one datagram (or one framed stream message) into a [`Message`] that borrows the
//! input: the start line and an index of header (name, value) slices kept in a stack-resident
//! SmallVec. It never copies or allocates (up to `INLINE_HEADERS` headers) and never panics.
//! Must not: interpret header values beyond what framing needs (that is `headers.rs`).

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
    /// Case-sensitive per RFC 3261 §7.1 (methods are case-sensitive tokens).
    pub fn parse(token: &[u8]) -> Method {
        todo!()
    }
    /// Upper-case name; `Other` -> "OTHER" (used as a metrics label).
    pub fn as_str(self) -> &'static str {
        todo!()
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
    pub fn parse(name: &[u8]) -> HeaderName {
        todo!()
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
    Request {
        method: Method,
        method_raw: &'a [u8],
        uri: &'a [u8],
    },
    Response {
        code: u16,
        reason: &'a [u8],
    },
}

#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub start: StartLine<'a>,
    pub headers: SmallVec<[Header<'a>; INLINE_HEADERS]>,
    /// Exactly Content-Length bytes when the header is present, else the rest of the datagram.
    pub body: &'a [u8],
    /// Bytes of the whole message (start line .. end of body); trailing datagram bytes beyond
    /// Content-Length are not part of it (RFC 3261 §18.3).
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

/// Scans one SIP message at the start of `buf`.
pub fn scan(buf: &[u8]) -> Result<Message<'_>, ScanError> {
    todo!()
}

impl<'a> Message<'a> {
    /// Value of the first header with this name.
    pub fn header(&self, name: HeaderName) -> Option<&'a [u8]> {
        todo!()
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
}
