//! The B2BUA call table of one shard (SPEC §3.4, §3.5, §3.7; ARCHITECTURE.md "Calls"), sans-IO.
//!
//! Owns: the two legs of every call of the shard — the A leg toward the caller, the B leg toward
//! the callee, each with its own Call-ID, tags and CSeq space — and everything that crosses
//! between them: the initial INVITE and its responses, ACK, CANCEL, BYE and in-dialog requests
//! (re-INVITE, UPDATE, INFO, PRACK, ...) with their responses, the transactions that retransmit
//! and absorb retransmissions, and the one CDR per call. Must not: touch sockets or clocks (time
//! is `now_ms` passed in, on the clock CDR times use: unix milliseconds), classify, authenticate,
//! limit or route (the caller does that before [`Calls::start`] and on [`Out::Failed`]).
//!
//! Identifiers minted here carry the shard (`<shard>-<hex>`): the B-leg Call-ID, the B-leg
//! From-tag and the A-leg To-tag, so any in-dialog message finds its shard with
//! [`shard_of_call_id`] / [`shard_of_tag`] without shared state.
//!
//! Limits of this first cut (documented for the lead):
//! - every leg is UDP (transactions are created unreliable; TCP/TLS legs are not modelled);
//! - in-dialog requests go to the leg's observed address (A: the INVITE's source, B: the target
//!   given to `start`/`retry`); the remote Contact is used as Request-URI only;
//! - `RAck` of a PRACK is relayed as is (its CSeq number is not mapped between legs);
//! - outgoing messages are freshly allocated `Vec<u8>`s; per-message parsing does not allocate.

pub mod desk;
mod tombs;
mod wire;

#[cfg(test)]
mod tests;

use crate::cdr::{duration_s, CallRecord, Direction, EndReason};
use crate::fasthash::FastMap;
use crate::sip::client_transaction::{ClientAction, ClientTransaction, Kind, State as CtState};
use crate::sip::headers::{contacts, request_headers, response_headers, Contacts};
use crate::sip::headers::{RequestHeaders, ResponseHeaders};
use crate::sip::invite_server_transaction::{
    InviteServerTransaction, ServerAction, State as IstState,
};
use crate::sip::scan::{Message, Method, StartLine};
use crate::sip::transaction::TIMER_J_UDP_MS;
use crate::sip::write::{reason, response_destination};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// A call of this table; the shard is in the top 16 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl CallId {
    pub fn shard(self) -> u16 {
        (self.0 >> 48) as u16
    }
}

/// How long a call may ring (Timer C, RFC 3261 §16.6 step 11: "greater than 3 minutes").
pub const TIMER_C_MS: u64 = 180_000;

/// Which of the worker's sockets a message goes out of (and came in on).
///
/// `Main` is the shared SIP port (SO_REUSEPORT, the one PBXs register with and send to). `Core`
/// is the worker's own port for legs facing the carrier core: its address is in those legs' Via
/// and Contact, so the core's responses and in-dialog requests come back to the worker that owns
/// the call instead of wherever the core's 4-tuple hashes on the shared port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Main,
    Core,
}

/// An address and the socket to reach it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest {
    pub addr: SocketAddr,
    pub port: Port,
}

/// What the runtime must do.
#[derive(Debug)]
pub enum Out {
    /// Send these bytes over UDP to `to.addr`, from socket `to.port`.
    Send { to: Dest, bytes: Vec<u8> },
    /// The call's one CDR (SPEC §3.7).
    Cdr(CallRecord),
    /// The call ended: its capacity (limits, media) may be freed. Emitted with the CDR.
    Ended { call: CallId },
    /// Leg `leg`'s endpoint signalled where it wants RTP (its SDP passed through just now).
    Media {
        block: u32,
        leg: crate::media::Leg,
        rtp: Option<SocketAddr>,
    },
    /// The B leg failed with 408 (no answer, Timer B) or a 5xx and the call was started with
    /// `failover`: the caller either [`Calls::retry`]s with the next gateway or
    /// [`Calls::give_up`]s (SPEC §3.4, "503 No route"). The A leg keeps waiting meanwhile.
    Failed { call: CallId, code: u16 },
}

/// One live call as the API lists it (SPEC §4 calls).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CallView {
    pub id: String,
    pub direction: Direction,
    pub account: String,
    pub from: String,
    pub to: String,
    /// "setup" until answered, then "answered".
    pub state: &'static str,
    pub started: String,
    pub answered: Option<String>,
}

/// What the caller of [`Calls::start`] decided about the call.
#[derive(Clone, Copy, Debug)]
pub struct CallParams<'p> {
    /// Where the B-leg INVITE goes.
    pub target: SocketAddr,
    pub b_request_uri: &'p str,
    /// User parts of the B-leg From and To (E.164 or the raw user part).
    pub from_user: &'p str,
    pub to_user: &'p str,
    /// P-Asserted-Identity user, host = sipedge's address.
    pub asserted_user: Option<&'p str>,
    /// Added to the B-leg INVITE after the A leg's X-headers (a number's headers, SPEC §3.5).
    pub extra_headers: &'p [(String, String)],
    pub direction: Direction,
    pub tenant: Option<&'p str>,
    pub account: &'p str,
    /// 408/5xx/timeouts on B become [`Out::Failed`] instead of being relayed.
    pub failover: bool,
    /// The call's media ports (SPEC §3.8), or None: SDP relayed unchanged.
    pub media: Option<&'p CallMedia>,
}

/// A call's anchored media: the block the media threads relay it through, and the policy its
/// SDP is rewritten with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallMedia {
    pub block: u32,
    /// RTP port facing leg A (written into SDP sent to A); RTCP is the next one.
    pub a_port: u16,
    /// RTP port facing leg B.
    pub b_port: u16,
    pub advertise: IpAddr,
    /// Audio codecs the account allows (empty: any).
    pub codecs: Box<[Box<str>]>,
}

/// [`Calls::start`] refused the call before anything was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// Codec filtering left the offer without an audio codec (SPEC §3.8: 488).
    NoCodec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One leg's dialog as sipedge sees it.
#[derive(Debug)]
struct Leg {
    call_id: Vec<u8>,
    /// sipedge's From (B) / To (A) value, with sipedge's tag.
    local: Vec<u8>,
    local_tag: Vec<u8>,
    /// The far end's header value, with its tag once known.
    remote: Vec<u8>,
    remote_tag: Vec<u8>,
    /// Request-URI of in-dialog requests (the remote Contact once known).
    target_uri: Vec<u8>,
    /// Where requests on this leg go, and from which socket.
    dest: Dest,
    /// sipedge's address on this leg (Via, Contact, From/PAI host).
    me: SocketAddr,
    cseq: u32,
}

/// The server side of a request relayed from one leg: how to answer it there.
#[derive(Debug)]
struct Origin {
    branch: Vec<u8>,
    method: Method,
    cseq: u32,
    lines: Vec<u8>,
    /// Where responses go: the request's Via, from the socket it came in on.
    dest: Dest,
    /// INVITEs only: retransmission of the final response until the ACK.
    ist: Option<InviteServerTransaction>,
    /// The last response sent (resent on a retransmitted request).
    last: Vec<u8>,
    final_at: Option<u64>,
}

/// A request sipedge sent on leg `to` (relayed, or its own BYE/CANCEL when `origin` is None).
#[derive(Debug)]
struct Txn {
    to: Side,
    branch: Vec<u8>,
    method: Method,
    cseq: u32,
    request_uri: Vec<u8>,
    bytes: Vec<u8>,
    ct: ClientTransaction,
    /// The ACK sent for a 2xx, resent when the 2xx is retransmitted.
    ack: Option<Vec<u8>>,
    origin: Option<Origin>,
    /// The call's initial INVITE (B leg).
    initial: bool,
    /// Kept until then to re-ACK retransmitted 2xx (the 2xx retransmission window, 64·T1).
    keep_until: u64,
}

impl Txn {
    fn done(&self, now: u64) -> bool {
        now >= self.keep_until
            && self.ct.state() == CtState::Terminated
            && self.origin.as_ref().is_none_or(|o| match &o.ist {
                Some(ist) => ist.state() == IstState::Terminated,
                None => o.final_at.is_none_or(|t| now >= t + TIMER_J_UDP_MS),
            })
    }

    /// Nothing of this transaction needs the call any more: sipedge's request has its final
    /// answer, and sipedge's answer to the relayed request (if any) is sent and, for an INVITE,
    /// ACKed. What may still come (retransmitted answers or requests) a [`tombs::Tomb`] absorbs.
    fn settled(&self) -> bool {
        matches!(self.ct.state(), CtState::Completed | CtState::Terminated)
            && self.origin.as_ref().is_none_or(|o| match &o.ist {
                Some(ist) => matches!(ist.state(), IstState::Confirmed | IstState::Terminated),
                None => o.final_at.is_some(),
            })
    }

    fn next_timeout(&self) -> Option<u64> {
        let mut at = self.ct.poll_timeout();
        if let Some(o) = &self.origin {
            let o_at = match &o.ist {
                Some(ist) => ist.poll_timeout(),
                None => o
                    .final_at
                    .map(|t| t + TIMER_J_UDP_MS)
                    .filter(|_| at.is_none()),
            };
            at = min_opt(at, o_at);
        }
        if at.is_none() && self.keep_until > 0 {
            at = Some(self.keep_until);
        }
        at
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// What is needed to write the B-leg INVITE again for another gateway.
#[derive(Debug)]
struct InviteTemplate {
    from_user: String,
    to_user: String,
    asserted: Option<Vec<u8>>,
    max_forwards: u32,
    /// The A INVITE's passed headers and `extra_headers`, as header lines.
    headers: Vec<u8>,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Call {
    id: CallId,
    a: Leg,
    b: Leg,
    tmpl: InviteTemplate,
    txns: Vec<Txn>,
    /// B has sent a provisional for the current INVITE (a CANCEL may go out).
    b_provisional: bool,
    /// Ringing gives up at this instant (Timer C, from B's first provisional; 0 = not ringing).
    ring_until: u64,
    /// A CANCEL waits for B's first provisional (RFC 3261 §9.1).
    cancel_pending: bool,
    answered: bool,
    awaiting_retry: bool,
    failover: bool,
    record: CallRecord,
    media: Option<CallMedia>,
    ended: bool,
    /// The end has been counted out of [`Calls::active`].
    end_counted: bool,
    scheduled: Option<u64>,
}

struct Ctx {
    shard: u16,
    local: SocketAddr,
    /// This worker's core-facing address (see [`Port::Core`]).
    core_local: SocketAddr,
    rng: u64,
    /// Failover calls: a gateway silent this long after the INVITE is given up (0 = Timer B).
    gateway_timeout_ms: u64,
}

impl Ctx {
    fn next_u64(&mut self) -> u64 {
        // xorshift64*: identifiers need to be unique and unguessable enough for a dialog, not
        // cryptographic; the runtime seeds it from the OS.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `<shard>-<hex>`: Call-IDs and tags that route back to this shard.
    fn mint(&mut self) -> Vec<u8> {
        let r = self.next_u64();
        let mut id = Vec::with_capacity(24);
        crate::sip::write::push_u64(&mut id, u64::from(self.shard));
        id.push(b'-');
        crate::sip::write::push_hex_u64(&mut id, r);
        id
    }

    fn branch(&mut self) -> Vec<u8> {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-8.1.1.7
        //# The branch ID inserted by an element compliant with this specification MUST always
        //# begin with the characters "z9hG4bK".
        let r = self.next_u64();
        let mut branch = Vec::with_capacity(23);
        branch.extend_from_slice(b"z9hG4bK");
        crate::sip::write::push_hex_u64(&mut branch, r);
        branch
    }
}

/// The shard encoded in a Call-ID or tag minted by sipedge (`<shard>-<hex>`).
pub fn shard_of_call_id(id: &[u8]) -> Option<u16> {
    let dash = memchr::memchr(b'-', id)?;
    let digits = id.get(..dash)?;
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Same format as the Call-ID: the A-leg To-tag and B-leg From-tag carry the shard too.
pub fn shard_of_tag(tag: &[u8]) -> Option<u16> {
    shard_of_call_id(tag)
}

/// Every SDP body relayed from `from` toward the other leg passes through here (SPEC §3.8): its
/// addresses and ports become sipedge's media ports facing the receiving leg, its audio codecs
/// are narrowed to the account's, and the media threads learn where `from`'s endpoint wants RTP.
/// A call without media, an empty body or one that is not SDP passes unchanged; a filter that
/// would leave no codec on a later offer is not applied (only the first offer can still be
/// refused with 488, in [`Calls::start`]).
fn relay_sdp(call: &mut Call, from: Side, body: &[u8], out: &mut Vec<Out>) -> Vec<u8> {
    let Some(m) = call.media.as_ref() else {
        return body.to_vec();
    };
    let anchored = match anchor(m, from, body, true) {
        Err(StartError::NoCodec) => anchor(m, from, body, false).unwrap_or(None),
        Ok(a) => a,
    };
    emit_anchored(m, from, body, anchored, out)
}

/// An SDP rewritten for the leg opposite `from`, and the RTP address `from`'s endpoint named.
type Anchored = (Vec<u8>, Option<SocketAddr>);

/// `body` rewritten toward the other leg, with the account's codec filter when `filter`; None
/// for an empty body or one that is not SDP; `NoCodec` when the filter leaves no audio codec.
fn anchor(
    m: &CallMedia,
    from: Side,
    body: &[u8],
    filter: bool,
) -> Result<Option<Anchored>, StartError> {
    if body.is_empty() {
        return Ok(None);
    }
    let port = match from {
        Side::A => m.b_port,
        Side::B => m.a_port,
    };
    let allowed = (filter && !m.codecs.is_empty()).then_some(&m.codecs[..]);
    let mut rewritten = Vec::with_capacity(body.len() + 32);
    match crate::media::sdp::rewrite(body, m.advertise, &[port], allowed, &mut rewritten) {
        Ok(lines) => Ok(Some((rewritten, lines.first().and_then(|l| l.remote)))),
        Err(crate::media::sdp::SdpError::NoCodecLeft) => Err(StartError::NoCodec),
        Err(crate::media::sdp::SdpError::Malformed) => Ok(None),
    }
}

/// The body to relay: the rewritten one (telling the media threads about `from`'s endpoint), or
/// `body` unchanged when it could not be anchored.
fn emit_anchored(
    m: &CallMedia,
    from: Side,
    body: &[u8],
    anchored: Option<Anchored>,
    out: &mut Vec<Out>,
) -> Vec<u8> {
    let Some((rewritten, rtp)) = anchored else {
        return body.to_vec();
    };
    out.push(Out::Media {
        block: m.block,
        leg: match from {
            Side::A => crate::media::Leg::A,
            Side::B => crate::media::Leg::B,
        },
        rtp,
    });
    rewritten
}

/// The call table of one shard.
pub struct Calls {
    ctx: Ctx,
    calls: FastMap<CallId, Call>,
    /// A-leg (Call-ID, caller's tag) -> call.
    by_a: FastMap<Vec<u8>, CallId>,
    /// B-leg Call-ID (minted) -> call.
    by_b: FastMap<Vec<u8>, CallId>,
    timers: BTreeSet<(u64, CallId)>,
    /// Ended calls' legs, for the retransmissions that may follow the end.
    tombs: tombs::Tombs,
    next_id: u64,
    active: usize,
    key: Vec<u8>,
}

fn a_key(key: &mut Vec<u8>, call_id: &[u8], tag: &[u8]) {
    key.clear();
    key.extend_from_slice(call_id);
    key.push(0);
    key.extend_from_slice(tag);
}

impl Calls {
    /// `local` is sipedge's advertised signalling address (Via, Contact, From/PAI host) on the
    /// shared port, `core_local` the worker's own core-facing one ([`Port::Core`]); `seed` seeds
    /// the identifier generator (the runtime passes OS randomness, tests a constant).
    pub fn new(shard: u16, local: SocketAddr, core_local: SocketAddr, seed: u64) -> Calls {
        Calls {
            ctx: Ctx {
                shard,
                local,
                core_local,
                rng: seed | 1,
                gateway_timeout_ms: 0,
            },
            calls: FastMap::default(),
            by_a: FastMap::default(),
            by_b: FastMap::default(),
            timers: BTreeSet::new(),
            tombs: tombs::Tombs::new(TIMER_J_UDP_MS),
            next_id: 0,
            active: 0,
            key: Vec::new(),
        }
    }

    /// SPEC §2 `core.gateway_timeout_ms`: on calls started with `failover`, a B leg that has
    /// answered nothing at all (not even 100 Trying) this long after its INVITE fails with 408
    /// and [`Out::Failed`] (0 = wait for Timer B, 32 s).
    pub fn set_gateway_timeout(&mut self, ms: u64) {
        self.ctx.gateway_timeout_ms = ms;
    }

    /// Calls not yet ended (lingering ones excluded).
    pub fn active(&self) -> usize {
        self.active
    }

    /// True if this A-leg INVITE (by Call-ID and From-tag) already belongs to a call: the
    /// runtime then passes it to [`Calls::handle`] (a retransmission) instead of routing it.
    pub fn knows_a(&mut self, call_id: &[u8], from_tag: &[u8]) -> bool {
        a_key(&mut self.key, call_id, from_tag);
        self.by_a.contains_key(&self.key)
            || self
                .tombs
                .get(self.tombs.key_of_dialog(call_id, from_tag))
                .is_some()
    }

    /// Forgets ended calls' tombstones whose 64·T1 is over (the worker's timer tick).
    pub fn expire_tombs(&mut self, now: u64) {
        self.tombs.expire(now, 100_000);
    }

    /// Ended calls' legs still remembered (as tombstones).
    pub fn tombs(&self) -> usize {
        self.tombs.len()
    }

    /// A new INVITE, already classified, authenticated, limit-checked and routed by the caller:
    /// answers `100 Trying` on the A leg and sends the B-leg INVITE. Returns the call, or None
    /// when the INVITE was answered here without a call (a retransmission of a known INVITE, or
    /// `483` for Max-Forwards 0, which also writes the attempt's CDR). Refuses, having sent
    /// nothing, an offer whose codecs the account's filter removes entirely.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        now: u64,
        a_src: SocketAddr,
        arrived: Port,
        invite: &Message<'_>,
        req: &RequestHeaders<'_>,
        p: &CallParams<'_>,
        out: &mut Vec<Out>,
    ) -> Result<Option<CallId>, StartError> {
        let a_tag = req.from.tag.unwrap_or_default();
        if self.knows_a(req.call_id, a_tag) {
            self.handle_request(now, a_src, arrived, invite, req, out);
            return Ok(None);
        }
        // The offer is anchored (and codec-filtered) before anything exists: a 488 leaves no trace.
        let offer = match p.media {
            Some(m) => anchor(m, Side::A, invite.body, true)?,
            None => None,
        };
        let resp_dest = Dest {
            addr: response_destination(a_src, &req.via),
            port: arrived,
        };
        // The leg toward the carrier core uses this worker's own port; the PBX-facing one the
        // shared port (the one the PBX registered with: its NAT lets only that in).
        let (a_side, b_side) = match p.direction {
            Direction::Termination => (
                (self.ctx.local, Port::Main),
                (self.ctx.core_local, Port::Core),
            ),
            Direction::Origination => (
                (self.ctx.core_local, Port::Core),
                (self.ctx.local, Port::Main),
            ),
        };
        let local_a_tag = self.ctx.mint();
        let lines = wire::response_lines(invite, a_src, &local_a_tag);
        let record = CallRecord {
            id: String::from_utf8_lossy(&local_a_tag).into_owned(),
            direction: p.direction,
            tenant: p.tenant.map(str::to_owned),
            account: p.account.to_owned(),
            from: p.from_user.to_owned(),
            to: p.to_user.to_owned(),
            start: now,
            answer: None,
            end: now,
            duration_s: 0.0,
            final_code: 0,
            end_reason: EndReason::Failed,
            a_packets: 0,
            a_bytes: 0,
            b_packets: 0,
            b_bytes: 0,
            media_block: p.media.map(|m| m.block),
        };
        //= https://www.rfc-editor.org/rfc/rfc3261#section-16.3
        //# If the request does not contain a Max-Forwards header field, this check is passed. If
        //# the request contains a Max-Forwards header field with a field value of zero (0), the
        //# element MUST NOT forward the request.
        let max_forwards = match req.max_forwards {
            Some(0) => {
                let bytes = wire::response(483, b"Too Many Hops", &lines, None, None, b"");
                out.push(Out::Send {
                    to: resp_dest,
                    bytes,
                });
                let mut record = record;
                record.final_code = 483;
                record.end_reason = EndReason::Rejected;
                // No call: the caller gives the media block back, not the CDR's writer.
                record.media_block = None;
                out.push(Out::Cdr(record));
                return Ok(None);
            }
            Some(n) => n - 1,
            None => 70,
        };

        let id = CallId((u64::from(self.ctx.shard) << 48) | (self.next_id & ((1 << 48) - 1)));
        self.next_id += 1;

        // A leg: sipedge is the UAS; requests toward the caller go to its observed source.
        let a_target = match contacts(invite) {
            Ok(Contacts::List(l)) => l.first().map(|c| c.addr.uri_raw.to_vec()),
            _ => None,
        }
        .unwrap_or_else(|| req.from.uri_raw.to_vec());
        let a_to = invite
            .header(crate::sip::scan::HeaderName::To)
            .unwrap_or_default();
        let a = Leg {
            call_id: req.call_id.to_vec(),
            local: wire::with_tag(a_to, &local_a_tag),
            local_tag: local_a_tag,
            remote: invite
                .header(crate::sip::scan::HeaderName::From)
                .unwrap_or_default()
                .to_vec(),
            remote_tag: a_tag.to_vec(),
            target_uri: a_target,
            dest: Dest {
                addr: a_src,
                port: a_side.1,
            },
            me: a_side.0,
            cseq: 1,
        };

        let mut headers = Vec::new();
        wire::push_passed(&mut headers, invite);
        for (name, value) in p.extra_headers {
            crate::sip::write::header(&mut headers, name.as_bytes(), value.as_bytes());
        }
        let tmpl = InviteTemplate {
            from_user: p.from_user.to_owned(),
            to_user: p.to_user.to_owned(),
            asserted: p.asserted_user.map(|u| wire::name_addr(u, b_side.0)),
            max_forwards,
            headers,
            body: invite.body.to_vec(),
        };
        let b = self.new_b_leg(
            Dest {
                addr: p.target,
                port: b_side.1,
            },
            b_side.0,
            p.b_request_uri.as_bytes(),
            &tmpl,
        );

        // 100 Trying at once (RFC 3261 §17.2.1: the TU will not answer within 200 ms).
        let mut trying = Vec::with_capacity(256);
        crate::sip::write::response_head(&mut trying, 100, "Trying", invite, a_src, b"");
        crate::sip::write::finish(&mut trying);
        out.push(Out::Send {
            to: resp_dest,
            bytes: trying.clone(),
        });
        let origin = Origin {
            branch: req.via.branch.unwrap_or_default().to_vec(),
            method: Method::Invite,
            cseq: req.cseq.seq,
            lines,
            dest: resp_dest,
            ist: Some(InviteServerTransaction::new(false)),
            last: trying,
            final_at: None,
        };
        let mut call = Call {
            id,
            a,
            b,
            tmpl,
            txns: Vec::with_capacity(2),
            b_provisional: false,
            ring_until: 0,
            cancel_pending: false,
            answered: false,
            awaiting_retry: false,
            failover: p.failover,
            record,
            media: p.media.cloned(),
            ended: false,
            end_counted: false,
            scheduled: None,
        };
        let body = match p.media {
            Some(m) => emit_anchored(m, Side::A, invite.body, offer, out),
            None => invite.body.to_vec(),
        };
        let txn = self.b_invite(now, &mut call, Some(origin), &body);
        call.txns.push(txn);
        if let Some(t) = call.txns.last() {
            out.push(Out::Send {
                to: call.b.dest,
                bytes: t.bytes.clone(),
            });
        }

        a_key(&mut self.key, req.call_id, a_tag);
        self.by_a.insert(self.key.clone(), id);
        self.by_b.insert(call.b.call_id.clone(), id);
        self.calls.insert(id, call);
        self.active += 1;
        self.settle(now, id, false);
        Ok(Some(id))
    }

    fn new_b_leg(
        &mut self,
        target: Dest,
        me: SocketAddr,
        request_uri: &[u8],
        tmpl: &InviteTemplate,
    ) -> Leg {
        let tag = self.ctx.mint();
        Leg {
            call_id: self.ctx.mint(),
            local: wire::with_tag(&wire::name_addr(&tmpl.from_user, me), &tag),
            local_tag: tag,
            remote: wire::name_addr(&tmpl.to_user, target.addr),
            remote_tag: Vec::new(),
            target_uri: request_uri.to_vec(),
            dest: target,
            me,
            cseq: 1,
        }
    }

    /// The B-leg INVITE for the current B leg (RFC 3261 §8.1.1: new Call-ID, From-tag, CSeq).
    fn b_invite(&mut self, now: u64, call: &mut Call, origin: Option<Origin>, body: &[u8]) -> Txn {
        let branch = self.ctx.branch();
        let b = &call.b;
        let mut bytes = Vec::with_capacity(512 + call.tmpl.headers.len() + body.len());
        wire::request_start(
            &mut bytes,
            b"INVITE",
            &b.target_uri,
            b.me,
            &branch,
            call.tmpl.max_forwards,
            &b.local,
            &b.remote,
            &b.call_id,
            b.cseq,
        );
        wire::push_contact(&mut bytes, b.me);
        if let Some(pai) = &call.tmpl.asserted {
            crate::sip::write::header(&mut bytes, b"P-Asserted-Identity", pai);
        }
        bytes.extend_from_slice(&call.tmpl.headers);
        wire::finish_body(&mut bytes, body);
        let mut ct = ClientTransaction::new(Kind::Invite, now, false);
        if call.failover && self.ctx.gateway_timeout_ms > 0 {
            ct.give_up_unheard_at(now + self.ctx.gateway_timeout_ms);
        }
        Txn {
            to: Side::B,
            branch,
            method: Method::Invite,
            cseq: b.cseq,
            request_uri: b.target_uri.clone(),
            bytes,
            ct,
            ack: None,
            origin,
            initial: true,
            keep_until: 0,
        }
    }

    /// Failover: sends the INVITE again, to `target`, as a new B leg (new Call-ID, tag,
    /// branch). Only after [`Out::Failed`] and before the call ended; false otherwise.
    pub fn retry(
        &mut self,
        now: u64,
        call: CallId,
        target: SocketAddr,
        b_request_uri: &str,
        out: &mut Vec<Out>,
    ) -> bool {
        let Some(mut c) = self.calls.remove(&call) else {
            return false;
        };
        if !c.awaiting_retry || c.ended {
            self.calls.insert(call, c);
            return false;
        }
        self.by_b.remove(&c.b.call_id);
        let dest = Dest {
            addr: target,
            port: c.b.dest.port,
        };
        let me = c.b.me;
        c.b = self.new_b_leg(dest, me, b_request_uri.as_bytes(), &c.tmpl);
        self.by_b.insert(c.b.call_id.clone(), call);
        c.awaiting_retry = false;
        c.b_provisional = false;
        c.cancel_pending = false;
        let origin = c
            .txns
            .iter_mut()
            .find(|t| t.initial)
            .and_then(|t| t.origin.take());
        c.txns.retain(|t| !t.initial);
        let body = c.tmpl.body.clone();
        let body = relay_sdp(&mut c, Side::A, &body, out);
        let txn = self.b_invite(now, &mut c, origin, &body);
        out.push(Out::Send {
            to: c.b.dest,
            bytes: txn.bytes.clone(),
        });
        c.txns.push(txn);
        self.calls.insert(call, c);
        self.settle(now, call, false);
        true
    }

    /// No gateway left after [`Out::Failed`]: answers the caller with `code` (e.g. 503 with
    /// `reason_phrase` "No route") and ends the call as `failed`.
    pub fn give_up(
        &mut self,
        now: u64,
        call: CallId,
        code: u16,
        reason_phrase: &str,
        out: &mut Vec<Out>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.ended || !c.awaiting_retry {
            return;
        }
        c.awaiting_retry = false;
        answer_initial(c, now, code, reason_phrase.as_bytes(), out);
        end(c, now, code, EndReason::Failed, out);
        self.settle(now, call, false);
    }

    /// Ends a call from sipedge's side (admin, shutdown, media timeout): BYE on both legs when
    /// answered, else a final answer (487) to the caller and CANCEL toward the callee.
    pub fn hang_up(&mut self, now: u64, call: CallId, reason: EndReason, out: &mut Vec<Out>) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.ended {
            return;
        }
        if c.answered {
            send_own(&mut self.ctx, c, now, Side::A, Method::Bye, out);
            send_own(&mut self.ctx, c, now, Side::B, Method::Bye, out);
            let code = c.record.final_code;
            end(c, now, code, reason, out);
        } else {
            answer_initial(c, now, 487, b"Request Terminated", out);
            cancel_b(c, now, out);
            end(c, now, 487, reason, out);
        }
        self.settle(now, call, false);
    }

    /// When [`Calls::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|&(at, _)| at)
    }

    pub fn handle_timeout(&mut self, now: u64, out: &mut Vec<Out>) {
        // Bounded: every component's timer advances when it fires.
        for _ in 0..100_000 {
            let Some(&(at, id)) = self.timers.first() else {
                return;
            };
            if at > now {
                return;
            }
            self.timers.remove(&(at, id));
            if let Some(c) = self.calls.get_mut(&id) {
                c.scheduled = None;
                on_timer(&mut self.ctx, c, now, out);
            }
            self.settle(now, id, true);
        }
    }

    /// Any SIP message of a call of this shard (either leg, request or response). False when
    /// it matches no call (the runtime answers a stray request 481) or is malformed. The
    /// runtime, which has parsed the headers already, calls [`Calls::handle_request`] and
    /// [`Calls::handle_response`] directly.
    pub fn handle(
        &mut self,
        now: u64,
        src: SocketAddr,
        arrived: Port,
        msg: &Message<'_>,
        out: &mut Vec<Out>,
    ) -> bool {
        match msg.start {
            StartLine::Response { .. } => match response_headers(msg) {
                Ok(rh) => self.handle_response(now, msg, &rh, out),
                Err(_) => false,
            },
            StartLine::Request { .. } => match request_headers(msg) {
                Ok(rq) => self.handle_request(now, src, arrived, msg, &rq, out),
                Err(_) => false,
            },
        }
    }

    /// [`Calls::handle`] for a request whose headers the caller has already parsed.
    pub fn handle_request(
        &mut self,
        now: u64,
        src: SocketAddr,
        arrived: Port,
        msg: &Message<'_>,
        rq: &RequestHeaders<'_>,
        out: &mut Vec<Out>,
    ) -> bool {
        let Some((id, side)) = self.lookup(rq.call_id, rq.from.tag) else {
            return self.tomb_request(src, arrived, msg, rq, out);
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return false;
        };
        let src = Dest {
            addr: src,
            port: arrived,
        };
        on_request(&mut self.ctx, c, now, side, src, msg, rq, out);
        self.settle(now, id, false);
        true
    }

    /// [`Calls::handle`] for a response whose headers the caller has already parsed.
    pub fn handle_response(
        &mut self,
        now: u64,
        msg: &Message<'_>,
        rh: &ResponseHeaders<'_>,
        out: &mut Vec<Out>,
    ) -> bool {
        let Some((id, side)) = self.lookup(rh.call_id, rh.to.tag) else {
            return self.tomb_response(rh, out);
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return false;
        };
        on_response(&mut self.ctx, c, now, side, msg, rh, out);
        self.settle(now, id, false);
        true
    }

    /// The live calls of this shard, as `GET /api/v1/calls` shows them.
    pub fn views(&self) -> impl Iterator<Item = CallView> + '_ {
        self.calls.values().filter(|c| !c.ended).map(|c| CallView {
            id: c.record.id.clone(),
            direction: c.record.direction,
            account: c.record.account.clone(),
            from: c.record.from.clone(),
            to: c.record.to.clone(),
            state: if c.answered { "answered" } else { "setup" },
            started: crate::cdr::Rfc3339Ms::from_unix_ms(c.record.start)
                .as_str()
                .to_owned(),
            answered: c
                .record
                .answer
                .map(|a| crate::cdr::Rfc3339Ms::from_unix_ms(a).as_str().to_owned()),
        })
    }

    /// Every call not yet ended.
    pub fn live_ids(&self) -> Vec<CallId> {
        self.calls
            .values()
            .filter(|c| !c.ended)
            .map(|c| c.id)
            .collect()
    }

    /// Answered live calls with anchored media: (call, media block, answered at), for the media
    /// timeout (SPEC §3.7: no RTP either way for `media.timeout_s` ends the call).
    pub fn answered_media(&self) -> impl Iterator<Item = (CallId, u32, u64)> + '_ {
        self.calls
            .values()
            .filter_map(|c| match (&c.media, c.record.answer) {
                (Some(m), Some(at)) if !c.ended && c.answered => Some((c.id, m.block, at)),
                _ => None,
            })
    }

    /// The live call whose CDR id (the A-leg To-tag) is `id`.
    pub fn find(&self, id: &str) -> Option<CallId> {
        self.calls
            .values()
            .find(|c| !c.ended && c.record.id == id)
            .map(|c| c.id)
    }

    fn lookup(&mut self, call_id: &[u8], a_tag: Option<&[u8]>) -> Option<(CallId, Side)> {
        if let Some(&id) = self.by_b.get(call_id) {
            return Some((id, Side::B));
        }
        a_key(&mut self.key, call_id, a_tag?);
        self.by_a.get(&self.key).map(|&id| (id, Side::A))
    }

    /// The tomb of the leg a stray message names, if its call ended less than 64·T1 ago.
    fn tomb(&self, call_id: &[u8], tag: Option<&[u8]>) -> Option<&tombs::Tomb> {
        self.tombs
            .get(self.tombs.key_of_call_id(call_id))
            .or_else(|| self.tombs.get(self.tombs.key_of_dialog(call_id, tag?)))
    }

    /// A response for an ended call: absorbed; a retransmitted final answer to sipedge's INVITE
    /// gets its ACK again.
    fn tomb_response(&self, rh: &ResponseHeaders<'_>, out: &mut Vec<Out>) -> bool {
        let Some(t) = self.tomb(rh.call_id, rh.to.tag) else {
            return false;
        };
        if rh.cseq.method == Method::Invite && rh.code >= 200 {
            if let Some(ack) = t.ack() {
                out.push(Out::Send {
                    to: ack.to,
                    bytes: ack.bytes.clone(),
                });
            }
        }
        true
    }

    /// A request for an ended call: a retransmitted BYE or CANCEL gets its 200 again (the
    /// answer depends on nothing but the request), ACKs and the initial INVITE's retransmissions
    /// are absorbed; anything else is left to the caller's 481.
    fn tomb_request(
        &self,
        src: SocketAddr,
        arrived: Port,
        msg: &Message<'_>,
        rq: &RequestHeaders<'_>,
        out: &mut Vec<Out>,
    ) -> bool {
        if self.tomb(rq.call_id, rq.from.tag).is_none() {
            return false;
        }
        match rq.method {
            Method::Ack => true,
            Method::Invite => rq.to.tag.is_none(),
            Method::Bye | Method::Cancel => {
                let lines = wire::response_lines(msg, src, b"");
                out.push(Out::Send {
                    to: Dest {
                        addr: response_destination(src, &rq.via),
                        port: arrived,
                    },
                    bytes: wire::response(200, b"OK", &lines, None, None, b""),
                });
                true
            }
            _ => false,
        }
    }

    /// After any event of a call: counts its end, drops finished transactions, reschedules its
    /// timer, and retires the call to its tombstones once it has ended and no transaction needs
    /// it any more.
    fn settle(&mut self, now: u64, id: CallId, fired: bool) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.ended && !c.end_counted {
            self.active = self.active.saturating_sub(1);
            c.end_counted = true;
        }
        c.txns.retain(|t| !t.done(now));
        if c.ended && c.txns.iter().all(Txn::settled) {
            if let Some(at) = c.scheduled {
                self.timers.remove(&(at, id));
            }
            let Some(mut c) = self.calls.remove(&id) else {
                return;
            };
            a_key(&mut self.key, &c.a.call_id, &c.a.remote_tag);
            self.by_a.remove(&self.key);
            self.by_b.remove(&c.b.call_id);
            let a = self.tombs.key_of_dialog(&c.a.call_id, &c.a.remote_tag);
            let ack_a = last_ack(&mut c, Side::A, now);
            self.tombs.bury(now, a, ack_a);
            let b = self.tombs.key_of_call_id(&c.b.call_id);
            let ack_b = last_ack(&mut c, Side::B, now);
            self.tombs.bury(now, b, ack_b);
            return;
        }
        let mut next = None;
        for t in &c.txns {
            next = min_opt(next, t.next_timeout());
        }
        if c.ring_until > 0 && !c.answered && !c.ended {
            next = min_opt(next, Some(c.ring_until));
        }
        // A component whose deadline passed without progress must not spin the timer loop.
        if fired {
            next = next.map(|at| at.max(now + 1));
        }
        if next != c.scheduled || fired {
            if let Some(at) = c.scheduled {
                self.timers.remove(&(at, id));
            }
            if let Some(at) = next {
                self.timers.insert((at, id));
            }
            c.scheduled = next;
        }
    }
}

/// The ACK of sipedge's latest INVITE on `side` while its answer may still be retransmitted.
fn last_ack(c: &mut Call, side: Side, now: u64) -> Option<tombs::TombAck> {
    let to = leg(c, side).dest;
    let t = c
        .txns
        .iter_mut()
        .filter(|t| t.to == side && t.method == Method::Invite && t.keep_until > now)
        .max_by_key(|t| t.cseq)?;
    Some(tombs::TombAck {
        to,
        bytes: t.ack.take()?,
    })
}

fn leg(c: &mut Call, side: Side) -> &mut Leg {
    match side {
        Side::A => &mut c.a,
        Side::B => &mut c.b,
    }
}

/// Writes the call's CDR once and marks it ended.
fn end(c: &mut Call, now: u64, code: u16, reason: EndReason, out: &mut Vec<Out>) {
    if c.ended {
        return;
    }
    c.ended = true;
    c.record.end = now;
    c.record.final_code = code;
    c.record.end_reason = reason;
    c.record.duration_s = duration_s(c.record.answer, now);
    out.push(Out::Cdr(c.record.clone()));
    out.push(Out::Ended { call: c.id });
}

/// Final answer of sipedge's own to the caller's INVITE, if none was sent yet.
fn answer_initial(c: &mut Call, now: u64, code: u16, phrase: &[u8], out: &mut Vec<Out>) {
    let Some(o) = c
        .txns
        .iter_mut()
        .find(|t| t.initial)
        .and_then(|t| t.origin.as_mut())
    else {
        return;
    };
    let Some(ist) = o.ist.as_mut() else {
        return;
    };
    if ist.state() != IstState::Proceeding {
        return;
    }
    o.last = wire::response(code, phrase, &o.lines, None, None, b"");
    ist.on_final_sent(code, now);
    out.push(Out::Send {
        to: o.dest,
        bytes: o.last.clone(),
    });
}

/// CANCEL toward the callee for the pending INVITE, or once its first provisional arrives.
fn cancel_b(c: &mut Call, now: u64, out: &mut Vec<Out>) {
    let Some(t) = c.txns.iter().find(|t| t.initial) else {
        return;
    };
    if !matches!(t.ct.state(), CtState::Initial | CtState::Proceeding) {
        return;
    }
    if !c.b_provisional {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-9.1
        //# If no provisional response has been received, the CANCEL request MUST NOT be sent;
        //# rather, the client MUST wait for the arrival of a provisional response
        c.cancel_pending = true;
        return;
    }
    c.cancel_pending = false;
    //# The Request-URI, Call-ID, To, the numeric part of CSeq, and From header fields in the
    //# CANCEL request MUST be identical to those in the request being cancelled
    let (branch, cseq, ruri) = (t.branch.clone(), t.cseq, t.request_uri.clone());
    let b = &c.b;
    let mut bytes = Vec::with_capacity(384);
    let to = wire::name_addr(&c.tmpl.to_user, b.dest.addr);
    wire::request_start(
        &mut bytes, b"CANCEL", &ruri, b.me, &branch, 70, &b.local, &to, &b.call_id, cseq,
    );
    wire::finish_body(&mut bytes, b"");
    out.push(Out::Send {
        to: b.dest,
        bytes: bytes.clone(),
    });
    c.txns.push(Txn {
        to: Side::B,
        branch,
        method: Method::Cancel,
        cseq,
        request_uri: ruri,
        bytes,
        ct: ClientTransaction::new(Kind::NonInvite, now, false),
        ack: None,
        origin: None,
        initial: false,
        keep_until: 0,
    });
}

/// A request of sipedge's own (BYE) on a leg; its responses are absorbed.
fn send_own(ctx: &mut Ctx, c: &mut Call, now: u64, side: Side, method: Method, out: &mut Vec<Out>) {
    let branch = ctx.branch();
    let l = leg(c, side);
    l.cseq = l.cseq.wrapping_add(1);
    let mut bytes = Vec::with_capacity(384);
    wire::request_start(
        &mut bytes,
        method.as_str().as_bytes(),
        &l.target_uri,
        l.me,
        &branch,
        70,
        &l.local,
        &l.remote,
        &l.call_id,
        l.cseq,
    );
    wire::finish_body(&mut bytes, b"");
    out.push(Out::Send {
        to: l.dest,
        bytes: bytes.clone(),
    });
    let (cseq, ruri) = (l.cseq, l.target_uri.clone());
    c.txns.push(Txn {
        to: side,
        branch,
        method,
        cseq,
        request_uri: ruri,
        bytes,
        ct: ClientTransaction::new(Kind::NonInvite, now, false),
        ack: None,
        origin: None,
        initial: false,
        keep_until: 0,
    });
}

/// The ACK for a 2xx (RFC 3261 §13.2.2.4: a new transaction, CSeq of the INVITE) on `side`.
fn ack_2xx(ctx: &mut Ctx, c: &mut Call, side: Side, cseq: u32, body: &[u8]) -> Vec<u8> {
    let branch = ctx.branch();
    let l = leg(c, side);
    let mut bytes = Vec::with_capacity(384 + body.len());
    wire::request_start(
        &mut bytes,
        b"ACK",
        &l.target_uri,
        l.me,
        &branch,
        70,
        &l.local,
        &l.remote,
        &l.call_id,
        cseq,
    );
    if !body.is_empty() {
        bytes.extend_from_slice(b"Content-Type: application/sdp\r\n");
    }
    wire::finish_body(&mut bytes, body);
    bytes
}

/// The ACK for a 300-699 (RFC 3261 §17.1.1.3): same branch and Request-URI as the INVITE, the
/// response's To.
fn ack_error(c: &Call, t: &Txn, msg: &Message<'_>) -> Vec<u8> {
    let l = match t.to {
        Side::A => &c.a,
        Side::B => &c.b,
    };
    let to = msg
        .header(crate::sip::scan::HeaderName::To)
        .unwrap_or_default();
    let mut bytes = Vec::with_capacity(384);
    wire::request_start(
        &mut bytes,
        b"ACK",
        &t.request_uri,
        l.me,
        &t.branch,
        70,
        &l.local,
        to,
        &l.call_id,
        t.cseq,
    );
    wire::finish_body(&mut bytes, b"");
    bytes
}

fn learn_remote(c: &mut Call, side: Side, msg: &Message<'_>, rh: &ResponseHeaders<'_>) {
    let l = leg(c, side);
    if l.remote_tag.is_empty() {
        if let Some(tag) = rh.to.tag {
            l.remote_tag = tag.to_vec();
            l.remote = wire::with_tag(&l.remote, tag);
        }
    }
    if let Ok(Contacts::List(list)) = contacts(msg) {
        if let Some(first) = list.first() {
            l.target_uri = first.addr.uri_raw.to_vec();
        }
    }
}

/// Relays a response from leg `to` back to the request's origin.
fn relay_response(
    c: &mut Call,
    ti: usize,
    code: u16,
    now: u64,
    msg: &Message<'_>,
    out: &mut Vec<Out>,
) {
    let from = match c.txns.get(ti) {
        Some(t) => t.to,
        None => return,
    };
    let body = relay_sdp(c, from, msg.body, out);
    let me = leg(c, from.other()).me;
    let Some(o) = c.txns.get_mut(ti).and_then(|t| t.origin.as_mut()) else {
        return;
    };
    let phrase: &[u8] = match msg.start {
        StartLine::Response { reason, .. } => reason,
        StartLine::Request { .. } => b"",
    };
    // Topology hiding: sipedge's Contact replaces the far end's on dialog-forming answers.
    let contact = (code < 300).then_some(me);
    o.last = wire::response(code, phrase, &o.lines, contact, Some(msg), &body);
    out.push(Out::Send {
        to: o.dest,
        bytes: o.last.clone(),
    });
    if code >= 200 {
        match o.ist.as_mut() {
            Some(ist) => ist.on_final_sent(code, now),
            None => o.final_at = Some(now),
        }
    }
}

fn on_response(
    ctx: &mut Ctx,
    c: &mut Call,
    now: u64,
    side: Side,
    msg: &Message<'_>,
    rh: &ResponseHeaders<'_>,
    out: &mut Vec<Out>,
) {
    let code = rh.code;
    let Some(branch) = rh.via.branch else {
        return;
    };
    let Some(ti) = c.txns.iter().position(|t| {
        t.to == side && t.branch == branch && t.method == rh.cseq.method && t.cseq == rh.cseq.seq
    }) else {
        return;
    };
    let Some(t) = c.txns.get_mut(ti) else {
        return;
    };
    let is_invite = t.method == Method::Invite;
    let initial = t.initial;
    match t.ct.on_response(code, now) {
        ClientAction::Absorb => {
            // A retransmitted 2xx: the ACK went lost (RFC 3261 §13.2.2.4: ACK it again).
            if is_invite && (200..300).contains(&code) {
                if let Some(ack) = t.ack.clone() {
                    out.push(Out::Send {
                        to: leg(c, side).dest,
                        bytes: ack,
                    });
                }
            }
        }
        ClientAction::AckAndDeliver { first } => {
            let ack = ack_error(c, &c.txns[ti], msg);
            out.push(Out::Send {
                to: leg(c, side).dest,
                bytes: ack.clone(),
            });
            if !first {
                return;
            }
            // Kept for a tomb: the answer may be retransmitted after the call is gone (Timer D).
            c.txns[ti].ack = Some(ack);
            c.txns[ti].keep_until = now + TIMER_J_UDP_MS;
            if initial {
                initial_failed(c, now, code, Some(msg), out);
            } else {
                relay_response(c, ti, code, now, msg, out);
            }
        }
        ClientAction::Deliver => {
            if code < 200 {
                if initial {
                    if !c.b_provisional {
                        c.ring_until = now + TIMER_C_MS;
                    }
                    c.b_provisional = true;
                    if c.cancel_pending {
                        cancel_b(c, now, out);
                    }
                }
                if code == 100 || c.ended {
                    return;
                }
                if initial {
                    learn_remote(c, side, msg, rh);
                }
                relay_response(c, ti, code, now, msg, out);
                return;
            }
            if is_invite {
                learn_remote(c, side, msg, rh);
            }
            if !initial {
                relay_response(c, ti, code, now, msg, out);
                return;
            }
            if c.ended || c.awaiting_retry {
                // Answered after the caller went away (CANCEL race): ACK and hang up B.
                let cseq = c.txns[ti].cseq;
                let ack = ack_2xx(ctx, c, side, cseq, b"");
                out.push(Out::Send {
                    to: c.b.dest,
                    bytes: ack.clone(),
                });
                c.txns[ti].ack = Some(ack);
                c.txns[ti].keep_until = now + TIMER_J_UDP_MS;
                if let Some(o) = c.txns[ti].origin.as_mut() {
                    o.ist = None;
                }
                send_own(ctx, c, now, Side::B, Method::Bye, out);
                return;
            }
            c.answered = true;
            c.record.answer = Some(now);
            c.record.final_code = code;
            relay_response(c, ti, code, now, msg, out);
        }
        ClientAction::Retransmit | ClientAction::TimedOut | ClientAction::Terminated => {}
    }
}

/// The B leg's INVITE failed with `code` (None msg: Timer B).
fn initial_failed(
    c: &mut Call,
    now: u64,
    code: u16,
    msg: Option<&Message<'_>>,
    out: &mut Vec<Out>,
) {
    if c.ended {
        return;
    }
    if c.failover && (code == 408 || (500..600).contains(&code)) {
        c.awaiting_retry = true;
        out.push(Out::Failed { call: c.id, code });
        return;
    }
    match msg {
        Some(msg) => {
            if let Some(ti) = c.txns.iter().position(|t| t.initial) {
                relay_response(c, ti, code, now, msg, out);
            }
        }
        None => answer_initial(c, now, code, reason(code).as_bytes(), out),
    }
    end(c, now, code, EndReason::Failed, out);
}

#[allow(clippy::too_many_arguments)]
fn on_request(
    ctx: &mut Ctx,
    c: &mut Call,
    now: u64,
    side: Side,
    src: Dest,
    msg: &Message<'_>,
    rq: &RequestHeaders<'_>,
    out: &mut Vec<Out>,
) {
    // In-dialog requests must carry sipedge's tag of that leg (CANCEL and the initial INVITE's
    // retransmissions carry none on the A leg).
    let own_tag = &leg(c, side).local_tag;
    match rq.to.tag {
        Some(tag) if tag != own_tag.as_slice() => return,
        None if side == Side::B => return,
        _ => {}
    }
    let branch = rq.via.branch.unwrap_or_default();
    let dest = Dest {
        addr: response_destination(src.addr, &rq.via),
        port: src.port,
    };
    if rq.method == Method::Ack {
        on_ack(ctx, c, now, side, rq, msg, out);
        return;
    }
    // A retransmission of a request already relayed: the last answer again (RFC 3261 §17.2).
    for t in c.txns.iter_mut() {
        if t.to != side.other() {
            continue;
        }
        if let Some(o) = t.origin.as_mut() {
            if o.branch == branch && o.method == rq.method {
                let resend = !o.last.is_empty()
                    && o.ist.as_ref().is_none_or(|ist| {
                        ist.on_invite_retransmission() == ServerAction::ResendResponse
                    });
                if resend {
                    out.push(Out::Send {
                        to: o.dest,
                        bytes: o.last.clone(),
                    });
                }
                return;
            }
        }
    }
    let simple = |code: u16, phrase: &[u8], out: &mut Vec<Out>| {
        let lines = wire::response_lines(msg, src.addr, b"");
        out.push(Out::Send {
            to: dest,
            bytes: wire::response(code, phrase, &lines, None, None, b""),
        });
    };
    match rq.method {
        Method::Invite if rq.to.tag.is_none() => {} // a new INVITE reusing the dialog ids
        Method::Cancel => {
            if side != Side::A {
                return;
            }
            let matches = c
                .txns
                .iter()
                .any(|t| t.initial && t.origin.as_ref().is_some_and(|o| o.branch == branch));
            if !matches && !c.ended {
                simple(481, b"Call/Transaction Does Not Exist", out);
                return;
            }
            //= https://www.rfc-editor.org/rfc/rfc3261#section-9.2
            //# the UAS core generates a 200 (OK) response to the CANCEL ... If the original
            //# request was an INVITE, the UAS SHOULD immediately respond to the INVITE with a
            //# 487 (Request Terminated).
            simple(200, b"OK", out);
            if c.ended || c.answered {
                return;
            }
            answer_initial(c, now, 487, b"Request Terminated", out);
            cancel_b(c, now, out);
            end(c, now, 487, EndReason::Cancel, out);
        }
        Method::Bye => {
            simple(200, b"OK", out);
            if c.ended {
                return;
            }
            let reason = match side {
                Side::A => EndReason::CallerBye,
                Side::B => EndReason::CalleeBye,
            };
            if c.answered {
                let code = c.record.final_code;
                send_own(ctx, c, now, side.other(), Method::Bye, out);
                end(c, now, code, reason, out);
            } else if side == Side::A {
                answer_initial(c, now, 487, b"Request Terminated", out);
                cancel_b(c, now, out);
                end(c, now, 487, reason, out);
            } else {
                answer_initial(c, now, 480, b"Temporarily Unavailable", out);
                end(c, now, 480, reason, out);
            }
        }
        _ => relay_request(ctx, c, now, side, src, msg, rq, out),
    }
}

#[allow(clippy::too_many_arguments)]
fn relay_request(
    ctx: &mut Ctx,
    c: &mut Call,
    now: u64,
    side: Side,
    src: Dest,
    msg: &Message<'_>,
    rq: &RequestHeaders<'_>,
    out: &mut Vec<Out>,
) {
    let lines = wire::response_lines(msg, src.addr, b"");
    let dest = Dest {
        addr: response_destination(src.addr, &rq.via),
        port: src.port,
    };
    let to_side = side.other();
    if c.ended || leg(c, to_side).remote_tag.is_empty() {
        out.push(Out::Send {
            to: dest,
            bytes: wire::response(
                481,
                b"Call/Transaction Does Not Exist",
                &lines,
                None,
                None,
                b"",
            ),
        });
        return;
    }
    // Target refresh (RFC 3261 §12.2.2): the sender's new Contact.
    if matches!(rq.method, Method::Invite | Method::Update) {
        if let Ok(Contacts::List(list)) = contacts(msg) {
            if let Some(first) = list.first() {
                leg(c, side).target_uri = first.addr.uri_raw.to_vec();
            }
        }
    }
    let method_raw = match msg.start {
        StartLine::Request { method_raw, .. } => method_raw,
        StartLine::Response { .. } => return,
    };
    let body = relay_sdp(c, side, msg.body, out);
    let branch = ctx.branch();
    let max_forwards = match rq.max_forwards {
        Some(0) => {
            out.push(Out::Send {
                to: dest,
                bytes: wire::response(483, b"Too Many Hops", &lines, None, None, b""),
            });
            return;
        }
        Some(n) => n - 1,
        None => 70,
    };
    let l = leg(c, to_side);
    l.cseq = l.cseq.wrapping_add(1);
    let mut bytes = Vec::with_capacity(msg.len + 128);
    wire::request_start(
        &mut bytes,
        method_raw,
        &l.target_uri,
        ctx.local,
        &branch,
        max_forwards,
        &l.local,
        &l.remote,
        &l.call_id,
        l.cseq,
    );
    wire::push_contact(&mut bytes, ctx.local);
    wire::push_passed(&mut bytes, msg);
    wire::finish_body(&mut bytes, &body);
    out.push(Out::Send {
        to: l.dest,
        bytes: bytes.clone(),
    });
    let is_invite = rq.method == Method::Invite;
    // An INVITE server transaction answers 100 Trying at once (RFC 3261 §17.2.1); a
    // retransmitted re-INVITE gets it again.
    let mut last = Vec::new();
    if is_invite {
        last = wire::response(100, b"Trying", &lines, None, None, b"");
        out.push(Out::Send {
            to: dest,
            bytes: last.clone(),
        });
    }
    let txn = Txn {
        to: to_side,
        branch,
        method: rq.method,
        cseq: l.cseq,
        request_uri: l.target_uri.clone(),
        bytes,
        ct: ClientTransaction::new(
            if is_invite {
                Kind::Invite
            } else {
                Kind::NonInvite
            },
            now,
            false,
        ),
        ack: None,
        origin: Some(Origin {
            branch: rq.via.branch.unwrap_or_default().to_vec(),
            method: rq.method,
            cseq: rq.cseq.seq,
            lines,
            dest,
            ist: is_invite.then(|| InviteServerTransaction::new(false)),
            last,
            final_at: None,
        }),
        initial: false,
        keep_until: 0,
    };
    c.txns.push(txn);
}

fn on_ack(
    ctx: &mut Ctx,
    c: &mut Call,
    now: u64,
    side: Side,
    rq: &RequestHeaders<'_>,
    msg: &Message<'_>,
    out: &mut Vec<Out>,
) {
    let Some(ti) = c.txns.iter().position(|t| {
        t.to == side.other()
            && t.method == Method::Invite
            && t.origin.as_ref().is_some_and(|o| o.cseq == rq.cseq.seq)
    }) else {
        return;
    };
    let Some(ist) = c.txns[ti].origin.as_mut().and_then(|o| o.ist.as_mut()) else {
        return;
    };
    if ist.on_ack(now) != ServerAction::DeliverAck {
        return;
    }
    // The ACK for a relayed 2xx: sipedge ACKs the other leg's 2xx itself, with the SDP if any.
    let body = relay_sdp(c, side, msg.body, out);
    let cseq = c.txns[ti].cseq;
    let to = c.txns[ti].to;
    let ack = ack_2xx(ctx, c, to, cseq, &body);
    out.push(Out::Send {
        to: leg(c, to).dest,
        bytes: ack.clone(),
    });
    c.txns[ti].ack = Some(ack);
    c.txns[ti].keep_until = now + TIMER_J_UDP_MS;
}

fn on_timer(ctx: &mut Ctx, c: &mut Call, now: u64, out: &mut Vec<Out>) {
    if c.ring_until > 0 && now >= c.ring_until && !c.answered && !c.ended {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-16.8
        //# If timer C should fire, the proxy MUST either reset the timer with any value it
        //# chooses, or terminate the client transaction.
        // (A B2BUA's ringing limit, applied like a proxy's Timer C: CANCEL the callee, 408 to
        // the caller, CDR `failed`.)
        c.ring_until = 0;
        answer_initial(c, now, 408, b"Request Timeout", out);
        cancel_b(c, now, out);
        end(c, now, 408, EndReason::Failed, out);
    }
    let mut i = 0;
    while i < c.txns.len() {
        let (to, initial) = (c.txns[i].to, c.txns[i].initial);
        if c.txns[i].ct.poll_timeout().is_some_and(|at| at <= now) {
            match c.txns[i].ct.handle_timeout(now) {
                Some(ClientAction::Retransmit) => out.push(Out::Send {
                    to: leg(c, to).dest,
                    bytes: c.txns[i].bytes.clone(),
                }),
                Some(ClientAction::TimedOut) => {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
                    //# If the client transaction is still in the "Calling" state when timer B
                    //# fires, the client transaction SHOULD inform the TU that a timeout has
                    //# occurred.
                    if initial {
                        initial_failed(c, now, 408, None, out);
                    } else if let Some(o) = c.txns[i].origin.as_mut() {
                        if o.final_at.is_none() {
                            o.last =
                                wire::response(408, b"Request Timeout", &o.lines, None, None, b"");
                            match o.ist.as_mut() {
                                Some(ist) => ist.on_final_sent(408, now),
                                None => o.final_at = Some(now),
                            }
                            out.push(Out::Send {
                                to: o.dest,
                                bytes: o.last.clone(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        let mut ack_timeout = false;
        if let Some(o) = c.txns[i].origin.as_mut() {
            if let Some(ist) = o.ist.as_mut() {
                if ist.poll_timeout().is_some_and(|at| at <= now) {
                    match ist.handle_timeout(now) {
                        Some(ServerAction::ResendResponse) => out.push(Out::Send {
                            to: o.dest,
                            bytes: o.last.clone(),
                        }),
                        Some(ServerAction::AckTimeout) => ack_timeout = true,
                        _ => {}
                    }
                }
            }
        }
        if ack_timeout && initial && c.answered && !c.ended {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-13.3.1.4
            //# If the server retransmits the 2xx response for 64*T1 seconds without receiving
            //# an ACK, the dialog is confirmed, but the session SHOULD be terminated.
            send_own(ctx, c, now, Side::A, Method::Bye, out);
            send_own(ctx, c, now, Side::B, Method::Bye, out);
            end(c, now, 200, EndReason::Failed, out);
        }
        i += 1;
    }
}
