//! The worker's call path (SPEC §3.3–3.7): which shard a call message belongs to, the hand-off
//! to it, and carrying out what the shard's [`Desk`](crate::call::desk::Desk) decides.
//!
//! Routing without shared state (ARCHITECTURE.md "Calls"):
//! - a new INVITE goes to the shard owning its account (credential or trunk, via
//!   `registrar::owners`), where that account's limits and bindings live;
//! - in-dialog requests carry sipedge's minted tag in To, responses in From (`<shard>-<hex>`);
//! - a CANCEL carries neither: the worker that received the INVITE (the PBX's 4-tuple lands on it
//!   again) remembers where it sent it.

use super::{Recipe, Worker};
use crate::call::desk::{trunk_key, Caller, Refusal};
use crate::call::{shard_of_tag, Out};
use crate::registrar::{self, Answer};
use crate::routing::classify::{classify, Caller as Source};
use crate::sip::headers::{self, RequestHeaders};
use crate::sip::scan::{HeaderName, Message, Method};
use crate::sip::write::{finish, header_u64, response_destination, response_head};
use crate::store::snapshot::credential_key;
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// How long a worker remembers where it sent an INVITE, for the CANCEL (Timer B, 64·T1).
const CANCEL_ROUTE_MS: u64 = 32_000;
/// Qualify OPTIONS carry this Call-ID prefix (then the gateway index) and a From-tag minted for
/// shard 0, where qualify runs.
const QUALIFY_CALL_ID: &[u8] = b"qualify-";
/// How often answered calls are checked for silent media.
const MEDIA_CHECK_MS: u64 = 1_000;

impl Worker {
    /// A new INVITE (no To-tag).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_invite<'m>(
        &mut self,
        data: &[u8],
        msg: &Message<'m>,
        req: &RequestHeaders<'m>,
        uri: &[u8],
        src: SocketAddr,
        arrived_ns: u64,
        handed_over: bool,
    ) {
        let key = self.hasher.key(req, uri);
        let tag = Self::to_tag(key.low());
        // A retransmission of an INVITE refused or challenged here: the same answer again.
        match self.txns.lookup(key) {
            Some(Recipe::Refused(r)) => {
                return self.send_refusal(&r, msg, req, src, &tag, arrived_ns)
            }
            Some(Recipe::ProxyChallenge(a)) => {
                return self.send_proxy_challenge(&a, msg, req, src, &tag, arrived_ns)
            }
            _ => {}
        }
        // A retransmission of an INVITE that started a call here: the call answers it (before
        // authentication, whose nonce-count check would take the same credentials for a replay).
        if self
            .desk
            .calls
            .knows_a(req.call_id, req.from.tag.unwrap_or_default())
        {
            let mut outs = std::mem::take(&mut self.outs);
            self.desk
                .calls
                .handle_request(self.now_ms, src, self.arrived, msg, req, &mut outs);
            self.desk.after(self.now_ms, &mut outs);
            self.carry_out(&mut outs, Method::Invite, arrived_ns);
            self.outs = outs;
            return;
        }
        if self.shutting_down_calls {
            let r = Refusal {
                code: 503,
                phrase: "Service Unavailable",
                retry_after: Some(30),
            };
            self.txns.complete(key, Recipe::Refused(r), self.now_ms);
            return self.send_refusal(&r, msg, req, src, &tag, arrived_ns);
        }
        let snap = self.snap.clone();
        let source = classify(src.ip(), &self.core, &snap);
        let mut account = SmallVec::<[u8; 128]>::new();
        let has_account = match source {
            Source::Core => self.desk.origination_account(msg, req, &snap, &mut account),
            Source::Trunk(i) => match snap.trunks.get(i as usize) {
                Some(t) => {
                    trunk_key(&t.name, &mut account);
                    true
                }
                None => false,
            },
            Source::Unknown => {
                let Some(creds) = proxy_credentials(msg) else {
                    if self.guard.config().drop_unknown {
                        self.desk.stats.unknown_source();
                        return;
                    }
                    let answer = self.registrar.challenge_anyone(self.now_ms);
                    self.txns
                        .complete(key, Recipe::ProxyChallenge(answer), self.now_ms);
                    return self.send_proxy_challenge(&answer, msg, req, src, &tag, arrived_ns);
                };
                let realm = snap.realm_for_host(creds.realm);
                let user = split_user(creds.username, realm);
                credential_key(user, realm, &mut account);
                true
            }
        };

        // The call lives on its account's shard. An account nobody owns yet becomes this
        // worker's, except an origination to a credential: its bindings are where its owner is,
        // and without an owner it has no binding (480 here).
        if has_account && !handed_over {
            let owner = match source {
                Source::Core if !account.starts_with(b"trunk:") => {
                    self.owners.owner(&account).unwrap_or(self.id)
                }
                _ => self.owners.owner_or_claim(&account, self.id),
            };
            if owner != self.id {
                self.remember_cancel_route(req, owner);
                self.hand_over(owner, data, src, arrived_ns);
                return;
            }
        }

        let caller = match source {
            Source::Core => Caller::Core,
            Source::Trunk(i) => Caller::Trunk(i),
            Source::Unknown => {
                let realm = snap
                    .realm_for_host(proxy_credentials(msg).map(|c| c.realm).unwrap_or_default());
                let cred = snap.credentials.get(&account[..]);
                match self.registrar.authenticate(
                    self.now_ms,
                    msg,
                    HeaderName::ProxyAuthorization,
                    b"INVITE",
                    realm,
                    cred.map(|c| (&account[..], c)),
                ) {
                    Ok(_) => match cred {
                        Some(cred) => Caller::Credential {
                            key: &account,
                            cred,
                        },
                        None => return,
                    },
                    Err((answer, effects)) => {
                        if effects.auth_failure {
                            self.desk.stats.unknown_source();
                            self.security_event(super::SecurityEvent::AuthFailure {
                                ip: src.ip(),
                                at_ms: self.now_ms,
                            });
                        }
                        return match answer {
                            Answer::Challenge { .. } => {
                                self.txns.complete(
                                    key,
                                    Recipe::ProxyChallenge(answer),
                                    self.now_ms,
                                );
                                self.send_proxy_challenge(&answer, msg, req, src, &tag, arrived_ns)
                            }
                            other => {
                                let r = Refusal {
                                    code: other.code(),
                                    phrase: crate::sip::write::reason(other.code()),
                                    retry_after: None,
                                };
                                self.txns.complete(key, Recipe::Refused(r), self.now_ms);
                                self.send_refusal(&r, msg, req, src, &tag, arrived_ns)
                            }
                        };
                    }
                }
            }
        };
        let mut outs = std::mem::take(&mut self.outs);
        let admitted = self.desk.admit(
            self.now_ms,
            src,
            self.arrived,
            msg,
            req,
            caller,
            &snap,
            &self.registrar,
            &mut outs,
        );
        if let Err(r) = admitted {
            self.txns.complete(key, Recipe::Refused(r), self.now_ms);
            self.send_refusal(&r, msg, req, src, &tag, arrived_ns);
        }
        self.desk.after(self.now_ms, &mut outs);
        self.carry_out(&mut outs, Method::Invite, arrived_ns);
        self.outs = outs;
    }

    /// A request inside a dialog (To-tag present), or a CANCEL.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_call_request(
        &mut self,
        data: &[u8],
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        uri: &[u8],
        src: SocketAddr,
        arrived_ns: u64,
        handed_over: bool,
    ) {
        let method = req.method;
        let shard = match req.to.tag {
            Some(tag) => shard_of_tag(tag).map(usize::from),
            None => self.cancel_route(req),
        };
        if let Some(s) = shard.filter(|&s| s < self.peers.len()) {
            if s != self.id && !handed_over {
                self.hand_over(s, data, src, arrived_ns);
                return;
            }
        }
        let mut outs = std::mem::take(&mut self.outs);
        let known =
            self.desk
                .calls
                .handle_request(self.now_ms, src, self.arrived, msg, req, &mut outs);
        self.desk.after(self.now_ms, &mut outs);
        self.carry_out(&mut outs, method, arrived_ns);
        self.outs = outs;
        if !known && method != Method::Ack {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-12.2.2
            //# If the UAS wishes to reject the request because it does not wish to recreate the
            //# dialog, it MUST respond to the request with a 481 (Call/Transaction Does Not Exist)
            self.answer_plain(msg, req, uri, src, arrived_ns, 481);
        }
    }

    /// A response: to a request sipedge sent on a call leg, or to a qualify OPTIONS.
    pub(super) fn on_call_response(
        &mut self,
        data: &[u8],
        msg: &Message<'_>,
        src: SocketAddr,
        arrived_ns: u64,
        handed_over: bool,
    ) {
        let Ok(rh) = headers::response_headers(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let shard = rh.from.tag.and_then(shard_of_tag).map(usize::from);
        if let Some(s) = shard.filter(|&s| s < self.peers.len()) {
            if s != self.id && !handed_over {
                self.hand_over(s, data, src, arrived_ns);
                return;
            }
        }
        if let Some(rest) = rh.call_id.strip_prefix(QUALIFY_CALL_ID) {
            self.on_qualify_response(rest);
            return;
        }
        let mut outs = std::mem::take(&mut self.outs);
        self.desk
            .calls
            .handle_response(self.now_ms, msg, &rh, &mut outs);
        self.desk.after(self.now_ms, &mut outs);
        self.carry_out(&mut outs, rh.cseq.method, arrived_ns);
        self.outs = outs;
    }

    /// Sends, writes CDRs: everything the call core asked for (its Failed/Ended were settled by
    /// `Desk::after`).
    pub(super) fn carry_out(&mut self, outs: &mut Vec<Out>, method: Method, arrived_ns: u64) {
        for o in outs.drain(..) {
            match o {
                Out::Send { to, bytes } => {
                    self.push_send(
                        &bytes,
                        to.addr,
                        to.port,
                        super::SendMeta { method, arrived_ns },
                    );
                }
                Out::Cdr(mut rec) => {
                    // The call's media ends with its record: the counts go into the CDR and
                    // the ports back to the pool.
                    if let (Some(block), Some(media)) = (rec.media_block.take(), &self.media) {
                        let c = media.release(crate::media::Block(block));
                        (rec.a_packets, rec.a_bytes) = (c.a_packets, c.a_bytes);
                        (rec.b_packets, rec.b_bytes) = (c.b_packets, c.b_bytes);
                    }
                    if self.cdr.send(rec).is_err() {
                        self.stats.cdr_dropped += 1;
                    }
                }
                Out::Media { block, leg, rtp } => {
                    if let Some(media) = &self.media {
                        media.set_remote(crate::media::Block(block), leg, rtp, self.now_ms);
                    }
                }
                Out::Ended { .. } | Out::Failed { .. } => {}
            }
        }
    }

    /// Call timers (retransmissions, gateway timeouts): every loop turn, when due.
    pub(super) fn call_timers_if_due(&mut self) {
        if self.desk.poll_timeout().is_some_and(|at| at <= self.now_ms) {
            let mut outs = std::mem::take(&mut self.outs);
            self.desk.handle_timeout(self.now_ms, &mut outs);
            self.carry_out(&mut outs, Method::Other, unix_ns());
            self.outs = outs;
        }
    }

    /// Qualify, gateway health and forgetting old CANCEL routes: on the worker's timer tick.
    pub(super) fn call_timers(&mut self) {
        self.desk.expire_tombs(self.now_ms);
        if let Some(q) = self.qualify.as_mut() {
            let mut due = SmallVec::<[usize; 8]>::new();
            q.poll_due(self.now_ms, &mut due);
            let mut down = SmallVec::<[usize; 8]>::new();
            q.poll_expired(self.now_ms, &mut down);
            for i in due {
                self.send_qualify(i);
            }
            for i in down {
                self.gateway_up[i].store(false, Ordering::Relaxed);
                tracing::warn!(
                    gateway = self.desk.gateways().uri(i),
                    "gateway down: no answer to OPTIONS"
                );
            }
        }
        for i in 0..self.gateway_up.len() {
            let up = self.gateway_up[i].load(Ordering::Relaxed);
            self.desk.set_gateway_health(i, up);
        }
        let now = self.now_ms;
        self.cancel_routes.retain(|_, &mut (_, until)| until > now);
        if now >= self.next_media_check_ms {
            self.next_media_check_ms = now + MEDIA_CHECK_MS;
            self.media_timeouts();
        }
    }

    /// Ends answered calls whose media has been silent both ways for `media.timeout_s`
    /// (counted from the answer when no packet came at all): BYE on both legs.
    fn media_timeouts(&mut self) {
        let Some(media) = &self.media else {
            return;
        };
        let limit = u64::from(self.media_timeout_s) * 1000;
        let now = self.now_ms;
        let silent: SmallVec<[crate::call::CallId; 8]> = self
            .desk
            .calls
            .answered_media()
            .filter(|&(_, block, answered)| {
                let last = media
                    .last_packet_ms(crate::media::Block(block))
                    .max(answered);
                now.saturating_sub(last) >= limit
            })
            .map(|(id, _, _)| id)
            .collect();
        if silent.is_empty() {
            return;
        }
        let mut outs = std::mem::take(&mut self.outs);
        for id in silent {
            self.desk
                .calls
                .hang_up(now, id, crate::cdr::EndReason::MediaTimeout, &mut outs);
        }
        self.desk.after(now, &mut outs);
        self.carry_out(&mut outs, Method::Bye, unix_ns());
        self.outs = outs;
    }

    fn send_qualify(&mut self, i: usize) {
        use std::io::Write as _;
        let gw = self.desk.gateways().addr(i);
        let local = self.local;
        let n = self.qualify_seq;
        self.qualify_seq += 1;
        let mut b = std::mem::take(&mut self.out);
        b.clear();
        let _ = write!(
            b,
            "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKq{n:x}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:sipedge@{local}>;tag=0-q{n:x}\r\nTo: <sip:{gw}>\r\n\
             Call-ID: qualify-{i}-{n:x}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
            n = n + 1
        );
        self.push_send(
            &b,
            gw,
            crate::call::Port::Main,
            super::SendMeta {
                method: Method::Options,
                arrived_ns: unix_ns(),
            },
        );
        self.out = b;
    }

    fn on_qualify_response(&mut self, rest: &[u8]) {
        let Some(i) = rest
            .split(|&b| b == b'-')
            .next()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<usize>().ok())
        else {
            return;
        };
        let Some(q) = self.qualify.as_mut() else {
            return;
        };
        if q.on_response(i, self.now_ms).is_some() {
            tracing::info!(gateway = self.desk.gateways().uri(i), "gateway up");
        }
        if let Some(up) = self.gateway_up.get(i) {
            up.store(true, Ordering::Relaxed);
        }
    }

    fn remember_cancel_route(&mut self, req: &RequestHeaders<'_>, owner: usize) {
        let h = a_leg_hash(req);
        self.cancel_routes
            .insert(h, (owner as u16, self.now_ms + CANCEL_ROUTE_MS));
    }

    fn cancel_route(&self, req: &RequestHeaders<'_>) -> Option<usize> {
        if req.method != Method::Cancel {
            return None;
        }
        self.cancel_routes
            .get(&a_leg_hash(req))
            .map(|&(s, _)| usize::from(s))
    }

    fn send_refusal(
        &mut self,
        r: &Refusal,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        src: SocketAddr,
        tag: &[u8],
        arrived_ns: u64,
    ) {
        response_head(&mut self.out, r.code, r.phrase, msg, src, tag);
        if let Some(s) = r.retry_after {
            header_u64(&mut self.out, b"Retry-After", u64::from(s));
        }
        finish(&mut self.out);
        self.send(
            response_destination(src, &req.via),
            Method::Invite,
            arrived_ns,
            r.code,
        );
    }

    fn send_proxy_challenge(
        &mut self,
        answer: &Answer,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        src: SocketAddr,
        tag: &[u8],
        arrived_ns: u64,
    ) {
        let Answer::Challenge { nonce, stale, algs } = answer else {
            return;
        };
        let realm = self.snap.default_realm.clone();
        response_head(
            &mut self.out,
            407,
            "Proxy Authentication Required",
            msg,
            src,
            tag,
        );
        registrar::response::push_challenges(
            &mut self.out,
            b"Proxy-Authenticate",
            &self.registrar,
            realm.as_bytes(),
            nonce,
            *stale,
            *algs,
            &self.opaque,
        );
        finish(&mut self.out);
        self.send(
            response_destination(src, &req.via),
            Method::Invite,
            arrived_ns,
            407,
        );
    }
}

/// The caller's digest credentials on an INVITE, if any parse.
fn proxy_credentials<'a>(msg: &Message<'a>) -> Option<headers::DigestCredentials<'a>> {
    msg.headers_named(HeaderName::ProxyAuthorization)
        .find_map(|v| headers::parse_digest_credentials(v).ok())
}

/// `user@realm` (the HA1b form) names `user`.
fn split_user<'a>(username: &'a [u8], realm: &[u8]) -> &'a [u8] {
    match memchr::memrchr(b'@', username) {
        Some(at) if username[at + 1..].eq_ignore_ascii_case(realm) => &username[..at],
        _ => username,
    }
}

/// The A leg of a call attempt: Call-ID and the caller's From-tag.
fn a_leg_hash(req: &RequestHeaders<'_>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Fixed keys: only this worker's map uses it, and only for routing a CANCEL.
    let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    h.write(req.call_id);
    h.write_u8(0);
    h.write(req.from.tag.unwrap_or_default());
    h.finish()
}

fn unix_ns() -> u64 {
    super::unix_now().as_nanos() as u64
}
