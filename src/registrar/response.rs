//! Writes a registrar [`Answer`] as SIP bytes. Deterministic in (answer, request, source): a
//! retransmitted request regenerates the identical response.

use super::{AlgMask, Answer, Registrar};
use crate::sip::digest::Nonce;
use crate::sip::headers::{self, Contacts, RequestHeaders};
use crate::sip::scan::{HeaderName, Message};
use crate::sip::write::{self, finish, header, header_u64, push_u64, response_head};
use std::net::SocketAddr;

/// Constant per process; RFC 7616 lets the server choose it, and clients echo it.
pub struct Opaque(pub [u8; 16]);

#[allow(clippy::too_many_arguments)]
pub fn write_answer(
    out: &mut Vec<u8>,
    answer: &Answer,
    reg: &Registrar,
    msg: &Message<'_>,
    req: &RequestHeaders<'_>,
    realm: &[u8],
    src: SocketAddr,
    to_tag: &[u8],
    opaque: &Opaque,
    now_ms: u64,
) {
    let code = answer.code();
    let phrase = match answer {
        Answer::InUse => "Credential in use",
        Answer::BadRequest(r) => r,
        _ => write::reason(code),
    };
    response_head(out, code, phrase, msg, src, to_tag);
    match answer {
        Answer::Challenge { nonce, stale, algs } => push_challenges(
            out,
            b"WWW-Authenticate",
            reg,
            realm,
            nonce,
            *stale,
            *algs,
            opaque,
        ),
        Answer::Registered { expires } => {
            let header_expires = msg.header(HeaderName::Expires).and_then(headers::parse_u32);
            if let Ok(Contacts::List(list)) = &req.contacts {
                for c in list.iter() {
                    let requested = c.expires.or(header_expires).unwrap_or(*expires);
                    let granted = requested.min(reg.config().max_expires_s);
                    out.extend_from_slice(b"Contact: <");
                    out.extend_from_slice(c.addr.uri_raw);
                    out.extend_from_slice(b">;expires=");
                    push_u64(out, u64::from(granted));
                    out.extend_from_slice(b"\r\n");
                }
            }
            header_u64(out, b"Expires", u64::from(*expires));
        }
        Answer::Bindings => {
            // The current bindings, with their remaining time (RFC 3261 §10.3 step 8).
            let user = std::str::from_utf8(req.to.uri.user.unwrap_or_default()).unwrap_or("");
            let realm = std::str::from_utf8(realm).unwrap_or("");
            for b in reg.bindings_of(user, realm) {
                let left = b.expires_at_ms.saturating_sub(now_ms).div_ceil(1000);
                out.extend_from_slice(b"Contact: <");
                out.extend_from_slice(b.contact.as_bytes());
                out.extend_from_slice(b">;expires=");
                push_u64(out, left);
                out.extend_from_slice(b"\r\n");
            }
        }
        Answer::IntervalTooBrief { min } => header_u64(out, b"Min-Expires", u64::from(*min)),
        Answer::Throttled { retry_after, .. } => {
            header_u64(out, b"Retry-After", u64::from(*retry_after))
        }
        Answer::Forbidden | Answer::InUse | Answer::BadRequest(_) => {}
    }
    finish(out);
}

/// One `header: Digest ...` line per algorithm in `algs` (`WWW-Authenticate` for REGISTER's 401,
/// `Proxy-Authenticate` for INVITE's 407).
#[allow(clippy::too_many_arguments)]
pub fn push_challenges(
    out: &mut Vec<u8>,
    header: &[u8],
    reg: &Registrar,
    realm: &[u8],
    nonce: &Nonce,
    stale: bool,
    algs: AlgMask,
    opaque: &Opaque,
) {
    for (i, alg) in reg.config().algorithms.iter().enumerate() {
        if algs.0 & (1 << i) == 0 {
            continue;
        }
        out.extend_from_slice(header);
        out.extend_from_slice(b": Digest realm=\"");
        out.extend_from_slice(realm);
        out.extend_from_slice(b"\", nonce=\"");
        out.extend_from_slice(nonce.text().as_bytes());
        out.extend_from_slice(b"\", opaque=\"");
        out.extend_from_slice(&opaque.0);
        out.extend_from_slice(b"\", qop=\"auth\", algorithm=");
        out.extend_from_slice(alg.name().as_bytes());
        if stale {
            out.extend_from_slice(b", stale=true");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A plain response with no extra headers (OPTIONS 200, 400, 501, ...).
pub fn write_plain(
    out: &mut Vec<u8>,
    code: u16,
    phrase: &str,
    msg: &Message<'_>,
    src: SocketAddr,
    to_tag: &[u8],
) {
    response_head(out, code, phrase, msg, src, to_tag);
    if code == 200 {
        header(
            out,
            b"Allow",
            b"REGISTER, OPTIONS, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, PRACK",
        );
        header(out, b"Accept", b"application/sdp");
    }
    finish(out);
}
