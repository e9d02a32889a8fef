//! The call front desk of one shard (SPEC §3.3–3.5), sans-IO: admits or refuses a new INVITE
//! and drives the shard's [`Calls`] through failover, limits and the end of every call.
//!
//! Phases, each a decision (STYLE.md, pingora): the runtime has classified the source and, for a
//! credential, authenticated it; then the desk checks numbers (484, 404), caller ID (403),
//! limits (503 / 486), picks the route (gateway plan, binding, trunk, URI), and starts the call.
//! Refusals come back as a [`Refusal`] for the runtime to answer from its transaction table
//! (retransmissions get the same bytes) — each is also an attempt's CDR and counted.
//!
//! Owns: the shard's [`Calls`], the limits of the accounts whose calls live here, and each
//! call's route state (gateway plan and position, account). Must not: touch sockets, clocks or
//! other shards.

use super::{CallId, CallMedia, CallParams, Calls, Out, Port, StartError};
use crate::cdr::{CallRecord, Direction, EndReason};
use crate::config::{Config, LimitsConfig};
use crate::fasthash::FastMap;
use crate::limits::{AccountLimits, LimitRejection};
use crate::registrar::Binding;
use crate::routing::gateways::{parse_sip_target_with, Gateways, Health};
use crate::routing::numbers::{Dialled, NumberPlan, E164};
use crate::sip::headers::{parse_name_addr, RequestHeaders};
use crate::sip::scan::{HeaderName, Message};
use crate::stats::{CallStats, RejectMetric};
use crate::store::snapshot::{AccountPolicy, NumberRoute, RouteTarget, Snapshot};
use smallvec::SmallVec;
use std::net::SocketAddr;

/// Who the caller of a new INVITE turned out to be (SPEC §3.3), after authentication.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'s> {
    /// Termination by a credential that authenticated (its `username@realm` key).
    Credential {
        key: &'s [u8],
        cred: &'s crate::store::snapshot::CredentialAuth,
    },
    /// Termination by the trunk at this index of the snapshot.
    Trunk(u32),
    /// Origination from the core.
    Core,
}

/// A new INVITE refused by policy: the runtime answers it (and its retransmissions) with this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub phrase: &'static str,
    /// `Retry-After` seconds (the CPS limit).
    pub retry_after: Option<u16>,
}

impl Refusal {
    const fn new(code: u16, phrase: &'static str) -> Refusal {
        Refusal {
            code,
            phrase,
            retry_after: None,
        }
    }
}

/// The origination target's state the desk needs from the registrar (the shard's bindings).
pub trait Bindings {
    /// Live bindings of the credential `key` (`username@realm`).
    fn live(&self, key: &[u8], now_ms: u64) -> Option<&Binding>;
}

/// Settings from the config that the desk applies; rebuilt on start (and SIGHUP, later).
#[derive(Clone, Debug)]
pub struct DeskConfig {
    pub numbers: NumberPlan,
    pub called_from: Vec<CalledFrom>,
    pub defaults: LimitsConfig,
    pub gateway_timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalledFrom {
    RequestUri,
    To,
    PCalledPartyId,
}

impl DeskConfig {
    pub fn new(config: &Config) -> DeskConfig {
        DeskConfig {
            numbers: NumberPlan::new(&config.numbers),
            called_from: config
                .core
                .called_number_from
                .iter()
                .filter_map(|s| match s.as_str() {
                    "request-uri" => Some(CalledFrom::RequestUri),
                    "to" => Some(CalledFrom::To),
                    "p-called-party-id" => Some(CalledFrom::PCalledPartyId),
                    _ => None,
                })
                .collect(),
            defaults: config.limits.clone(),
            gateway_timeout_ms: u64::from(config.core.gateway_timeout_ms),
        }
    }
}

/// Per-call routing state.
#[derive(Debug)]
struct Route {
    /// Key into `limits` (and the CDR's account); empty for URI routes, which have none.
    account: Box<[u8]>,
    direction: Direction,
    /// Gateways still to try, in order (termination only).
    plan: SmallVec<[usize; 8]>,
    next: usize,
    /// The called number, for the next gateway's Request-URI.
    to_user: Box<str>,
}

/// Account limits with the provisioned values they were built from (re-provisioning adjusts).
#[derive(Debug)]
struct Account {
    limits: AccountLimits,
    max_calls: u32,
    max_cps: f64,
}

/// Where a call's media ports come from (the runtime's media threads). Allocation must not
/// block: it is a pop from a free list.
pub trait MediaPorts: Send {
    /// A block of four ports for a new call (`codecs` left empty); None when none is free.
    fn allocate(&self, hint: u64) -> Option<CallMedia>;
    /// Gives back a block whose call never started.
    fn release(&self, block: u32);
}

/// How [`Desk::start_anchored`] went.
enum Started {
    Call(CallId),
    /// A retransmission or a 483: no call, nothing to keep.
    Absorbed,
    Refused(RejectMetric, Refusal),
}

pub struct Desk {
    pub calls: Calls,
    /// None: calls are not anchored (SDP relayed unchanged).
    media: Option<Box<dyn MediaPorts>>,
    cfg: DeskConfig,
    gateways: Gateways,
    accounts: FastMap<Box<[u8]>, Account>,
    routes: FastMap<CallId, Route>,
    pub stats: CallStats,
    rng: u64,
}

/// The limits key of a trunk: `trunk:<name>` cannot collide with a `username@realm`.
pub fn trunk_key(name: &str, out: &mut SmallVec<[u8; 128]>) {
    out.clear();
    out.extend_from_slice(b"trunk:");
    out.extend_from_slice(name.as_bytes());
}

impl Desk {
    pub fn new(calls: Calls, cfg: DeskConfig, gateways: Gateways, seed: u64) -> Desk {
        let mut calls = calls;
        calls.set_gateway_timeout(cfg.gateway_timeout_ms);
        Desk {
            calls,
            media: None,
            cfg,
            gateways,
            accounts: FastMap::default(),
            routes: FastMap::default(),
            stats: CallStats::default(),
            rng: seed | 1,
        }
    }

    /// Anchors every call's media from now on (SPEC §3.8).
    pub fn set_media(&mut self, media: Box<dyn MediaPorts>) {
        self.media = Some(media);
    }

    /// Starts the call with media ports from the pool (and the account's codec filter), or
    /// says why not: no free ports (503), or no codec left in the offer (488).
    #[allow(clippy::too_many_arguments)]
    fn start_anchored(
        &mut self,
        now: u64,
        src: SocketAddr,
        arrived: Port,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        p: CallParams<'_>,
        codecs: &[Box<str>],
        out: &mut Vec<Out>,
    ) -> Started {
        let media = match &self.media {
            None => None,
            Some(pool) => match pool.allocate(self.rng) {
                Some(mut m) => {
                    m.codecs = codecs.into();
                    Some(m)
                }
                None => {
                    return Started::Refused(
                        RejectMetric::MediaPorts,
                        Refusal::new(503, "No media ports"),
                    )
                }
            },
        };
        let p = CallParams {
            media: media.as_ref(),
            ..p
        };
        let started = self.calls.start(now, src, arrived, msg, req, &p, out);
        let give_back = |desk: &Self| {
            if let (Some(pool), Some(m)) = (&desk.media, &media) {
                pool.release(m.block);
            }
        };
        match started {
            Ok(Some(id)) => Started::Call(id),
            Ok(None) => {
                give_back(self);
                Started::Absorbed
            }
            Err(StartError::NoCodec) => {
                give_back(self);
                Started::Refused(
                    RejectMetric::Codec,
                    Refusal::new(488, "Not Acceptable Here"),
                )
            }
        }
    }

    /// Qualify's view of gateway `i` (the runtime passes it on from the qualifying worker).
    pub fn set_gateway_health(&mut self, i: usize, up: bool) {
        if self.gateways.is_up(i) != up {
            self.gateways
                .set_health(i, if up { Health::Up } else { Health::Down });
        }
    }

    pub fn gateways(&self) -> &Gateways {
        &self.gateways
    }

    fn rand(&mut self) -> u32 {
        // xorshift64: spreads equal-priority gateways by weight; not a secret.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 32) as u32
    }

    /// A new INVITE whose caller is known. Returns Err when refused by policy: the runtime
    /// answers with it. Ok(None): a retransmission of a call already up (handled).
    #[allow(clippy::too_many_arguments)]
    pub fn admit<'m>(
        &mut self,
        now: u64,
        src: SocketAddr,
        arrived: Port,
        msg: &Message<'m>,
        req: &RequestHeaders<'m>,
        caller: Caller<'_>,
        snap: &Snapshot,
        bindings: &dyn Bindings,
        out: &mut Vec<Out>,
    ) -> Result<Option<CallId>, Refusal> {
        if self
            .calls
            .knows_a(req.call_id, req.from.tag.unwrap_or_default())
        {
            self.calls.handle_request(now, src, arrived, msg, req, out);
            return Ok(None);
        }
        match caller {
            Caller::Core => self.originate(now, src, arrived, msg, req, snap, bindings, out),
            Caller::Credential { key, cred } => {
                let account = Account::name_of_credential(cred);
                self.terminate(
                    now,
                    src,
                    arrived,
                    msg,
                    req,
                    snap,
                    key,
                    &account,
                    cred.tenant.as_deref(),
                    &cred.policy,
                    (cred.max_calls, cred.max_cps),
                    out,
                )
            }
            Caller::Trunk(i) => {
                let Some(t) = snap.trunks.get(i as usize) else {
                    return Err(Refusal::new(403, "Forbidden"));
                };
                let mut key = SmallVec::<[u8; 128]>::new();
                trunk_key(&t.name, &mut key);
                self.terminate(
                    now,
                    src,
                    arrived,
                    msg,
                    req,
                    snap,
                    &key,
                    &t.name,
                    t.tenant.as_deref(),
                    &t.policy,
                    (t.max_calls, t.max_cps),
                    out,
                )
            }
        }
    }

    /// SPEC §3.4.
    #[allow(clippy::too_many_arguments)]
    fn terminate<'m>(
        &mut self,
        now: u64,
        src: SocketAddr,
        arrived: Port,
        msg: &Message<'m>,
        req: &RequestHeaders<'m>,
        snap: &Snapshot,
        key: &[u8],
        account: &str,
        tenant: Option<&str>,
        policy: &AccountPolicy,
        provisioned: (Option<u32>, Option<f64>),
        out: &mut Vec<Out>,
    ) -> Result<Option<CallId>, Refusal> {
        let dir = Direction::Termination;
        let raw_to = req.uri.user.unwrap_or_default();
        let to = match self.cfg.numbers.normalise(raw_to) {
            Dialled::E164(n) => n.as_str().to_owned(),
            Dialled::ShortCode(c) => c.to_owned(),
            Dialled::Invalid => {
                let rec = attempt(
                    now,
                    dir,
                    tenant,
                    account,
                    &lossy(caller_user(msg, req)),
                    &lossy(raw_to),
                );
                return Err(self.refuse(
                    rec,
                    RejectMetric::Number,
                    Refusal::new(484, "Address Incomplete"),
                    out,
                ));
            }
        };
        let raw_from = caller_user(msg, req);
        let cli = match self.cfg.numbers.normalise(raw_from) {
            Dialled::E164(n) => Some(n),
            _ => None,
        };
        let from = cli.map_or_else(|| lossy(raw_from), |n| n.as_str().to_owned());
        if !cli.is_some_and(|n| snap.caller_id_allowed(tenant, policy, &n)) {
            let rec = attempt(now, dir, tenant, account, &from, &to);
            return Err(self.refuse(
                rec,
                RejectMetric::CallerId,
                Refusal::new(403, "Caller ID not allowed"),
                out,
            ));
        }
        if let Err(why) = self.with_account(key, provisioned, now, |l| l.check(now)) {
            let refusal = match why {
                LimitRejection::Cps => Refusal {
                    code: 503,
                    phrase: why.reason_phrase(),
                    retry_after: Some(1),
                },
                LimitRejection::Channels => Refusal::new(503, why.reason_phrase()),
            };
            let metric = match why {
                LimitRejection::Cps => RejectMetric::Cps,
                LimitRejection::Channels => RejectMetric::Channels,
            };
            let rec = attempt(now, dir, tenant, account, &from, &to);
            return Err(self.refuse(rec, metric, refusal, out));
        }
        let mut plan = SmallVec::<[usize; 8]>::new();
        let r = self.rand();
        self.gateways.plan(r, &mut plan);
        let Some(&first) = plan.first() else {
            self.release(key);
            let rec = attempt(now, dir, tenant, account, &from, &to);
            return Err(self.refuse(
                rec,
                RejectMetric::NoRoute,
                Refusal::new(503, "No route"),
                out,
            ));
        };
        let target = self.gateways.addr(first);
        let ruri = gateway_ruri(&to, target);
        let p = CallParams {
            target,
            b_request_uri: &ruri,
            from_user: &from,
            to_user: &to,
            asserted_user: Some(&from),
            extra_headers: &[],
            direction: dir,
            tenant,
            account,
            failover: true,
            media: None,
        };
        match self.start_anchored(now, src, arrived, msg, req, p, &policy.codecs, out) {
            Started::Call(id) => {
                self.routes.insert(
                    id,
                    Route {
                        account: key.into(),
                        direction: dir,
                        plan,
                        next: 1,
                        to_user: to.into(),
                    },
                );
                self.stats.started(dir);
                Ok(Some(id))
            }
            Started::Absorbed => {
                // Answered without a call (483): its CDR is out; the capacity goes back.
                self.release(key);
                Ok(None)
            }
            Started::Refused(metric, refusal) => {
                self.release(key);
                let rec = attempt(now, dir, tenant, account, &from, &to);
                Err(self.refuse(rec, metric, refusal, out))
            }
        }
    }

    /// SPEC §3.5.
    #[allow(clippy::too_many_arguments)]
    fn originate<'m>(
        &mut self,
        now: u64,
        src: SocketAddr,
        arrived: Port,
        msg: &Message<'m>,
        req: &RequestHeaders<'m>,
        snap: &Snapshot,
        bindings: &dyn Bindings,
        out: &mut Vec<Out>,
    ) -> Result<Option<CallId>, Refusal> {
        let dir = Direction::Origination;
        let from = {
            let raw = caller_user(msg, req);
            match self.cfg.numbers.normalise(raw) {
                Dialled::E164(n) => n.as_str().to_owned(),
                _ => lossy(raw),
            }
        };
        let Some((number, route)) = called_number(&self.cfg, msg, req, snap) else {
            let to = lossy(req.uri.user.unwrap_or_default());
            let rec = attempt(now, dir, None, "", &from, &to);
            return Err(self.refuse(
                rec,
                RejectMetric::Number,
                Refusal::new(404, "Not Found"),
                out,
            ));
        };
        let to = number.as_str().to_owned();
        let tenant = route.tenant.as_deref();
        let mut key = SmallVec::<[u8; 128]>::new();
        // The target account's codec filter applies to the core's offer.
        let mut codecs: Box<[Box<str>]> = Box::default();
        let (target, ruri, account, provisioned): (Option<SocketAddr>, String, String, _) =
            match &route.target {
                RouteTarget::Credential(k) => {
                    key.extend_from_slice(k);
                    let cred = snap.credentials.get(&k[..]);
                    if let Some(c) = cred {
                        codecs = c.policy.codecs.clone();
                    }
                    let account = lossy(k);
                    match bindings.live(k, now) {
                        Some(b) => (
                            Some(b.source),
                            b.contact.clone(),
                            account,
                            cred.map_or((None, None), |c| (c.max_calls, c.max_cps)),
                        ),
                        None => {
                            let rec = attempt(now, dir, tenant, &account, &from, &to);
                            return Err(self.refuse(
                                rec,
                                RejectMetric::NoRoute,
                                Refusal::new(480, "Temporarily Unavailable"),
                                out,
                            ));
                        }
                    }
                }
                RouteTarget::Trunk(i) => {
                    let Some(t) = snap.trunks.get(*i as usize) else {
                        return Err(Refusal::new(404, "Not Found"));
                    };
                    trunk_key(&t.name, &mut key);
                    codecs = t.policy.codecs.clone();
                    let target =
                        parse_sip_target_with(&t.destination, |h| snap.hosts.get(h).copied())
                            .ok()
                            .map(|(a, _)| a);
                    (
                        target,
                        t.destination.to_string(),
                        t.name.to_string(),
                        (t.max_calls, t.max_cps),
                    )
                }
                RouteTarget::Uri(template) => {
                    let uri = template.replace("{number}", number.as_str());
                    let target = parse_sip_target_with(&uri, |h| snap.hosts.get(h).copied())
                        .ok()
                        .map(|(a, _)| a);
                    (target, uri, String::new(), (None, None))
                }
            };
        let Some(target) = target else {
            // A host name that did not resolve when the snapshot was built (A/AAAA only: the
            // NAPTR/SRV steps of RFC 3263 are not built).
            let rec = attempt(now, dir, tenant, &account, &from, &to);
            return Err(self.refuse(
                rec,
                RejectMetric::NoRoute,
                Refusal::new(503, "No route"),
                out,
            ));
        };
        if !key.is_empty() {
            if let Err(why) = self.with_account(&key, provisioned, now, |l| l.check_inbound()) {
                let rec = attempt(now, dir, tenant, &account, &from, &to);
                let metric = match why {
                    LimitRejection::Cps => RejectMetric::Cps,
                    LimitRejection::Channels => RejectMetric::Channels,
                };
                return Err(self.refuse(rec, metric, Refusal::new(486, "Busy Here"), out));
            }
        }
        let extra: SmallVec<[(String, String); 4]> = route
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let asserted = msg
            .header(HeaderName::PAssertedIdentity)
            .and_then(|v| parse_name_addr(v).ok())
            .and_then(|na| na.uri.user)
            .map(lossy);
        let p = CallParams {
            target,
            b_request_uri: &ruri,
            from_user: &from,
            to_user: &to,
            asserted_user: asserted.as_deref(),
            extra_headers: &extra,
            direction: dir,
            tenant,
            account: &account,
            failover: false,
            media: None,
        };
        match self.start_anchored(now, src, arrived, msg, req, p, &codecs, out) {
            Started::Call(id) => {
                self.routes.insert(
                    id,
                    Route {
                        account: key.as_slice().into(),
                        direction: dir,
                        plan: SmallVec::new(),
                        next: 0,
                        to_user: to.into(),
                    },
                );
                self.stats.started(dir);
                Ok(Some(id))
            }
            Started::Absorbed => {
                if !key.is_empty() {
                    self.release(&key);
                }
                Ok(None)
            }
            Started::Refused(metric, refusal) => {
                if !key.is_empty() {
                    self.release(&key);
                }
                let rec = attempt(now, dir, tenant, &account, &from, &to);
                Err(self.refuse(rec, metric, refusal, out))
            }
        }
    }

    /// Runs `f` on the limits of `key`, created from its provisioned values (or the `[limits]`
    /// defaults) on first use and adjusted when provisioning changed them.
    fn with_account<R>(
        &mut self,
        key: &[u8],
        (max_calls, max_cps): (Option<u32>, Option<f64>),
        now: u64,
        f: impl FnOnce(&mut AccountLimits) -> R,
    ) -> R {
        let max_calls = max_calls.unwrap_or(self.cfg.defaults.max_calls);
        let max_cps = max_cps.unwrap_or(self.cfg.defaults.max_cps);
        match self.accounts.get_mut(key) {
            Some(a) => {
                if a.max_calls != max_calls || a.max_cps != max_cps {
                    a.limits.reconfigure(max_calls, max_cps, now);
                    a.max_calls = max_calls;
                    a.max_cps = max_cps;
                }
                f(&mut a.limits)
            }
            None => {
                let mut a = Account {
                    limits: AccountLimits::new(max_calls, max_cps),
                    max_calls,
                    max_cps,
                };
                let r = f(&mut a.limits);
                self.accounts.insert(key.into(), a);
                r
            }
        }
    }

    /// Whether account `key` has calls up on this shard: its limits cannot move elsewhere then.
    pub fn has_calls(&self, key: &[u8]) -> bool {
        self.accounts
            .get(key)
            .is_some_and(|a| a.limits.channels.active() > 0)
    }

    fn release(&mut self, key: &[u8]) {
        if let Some(a) = self.accounts.get_mut(key) {
            a.limits.release();
        }
    }

    /// A refusal after classification is an attempt: one CDR (`rejected`) and its counters.
    fn refuse(
        &mut self,
        mut rec: CallRecord,
        metric: RejectMetric,
        refusal: Refusal,
        out: &mut Vec<Out>,
    ) -> Refusal {
        rec.final_code = refusal.code;
        rec.end_reason = EndReason::Rejected;
        self.stats.rejected(rec.direction, metric);
        out.push(Out::Cdr(rec));
        refusal
    }

    /// Everything [`Calls`] asked for that concerns routing and capacity; the runtime passes every
    /// `Out` through here and carries out the rest (sends, CDRs). Failovers add their own outputs
    /// (settled here too) at the end of `out`.
    pub fn after(&mut self, now: u64, out: &mut Vec<Out>) {
        let mut added = Vec::new();
        out.retain(|o| match *o {
            Out::Failed { call, .. } => {
                added.push(call);
                false
            }
            _ => true,
        });
        for o in out.iter() {
            self.settle(o);
        }
        for call in added {
            let mut more = Vec::new();
            self.failover(now, call, &mut more);
            self.after(now, &mut more);
            out.append(&mut more);
        }
    }

    /// Capacity and counters for one output.
    fn settle(&mut self, o: &Out) {
        match o {
            Out::Ended { call } => {
                if let Some(r) = self.routes.remove(call) {
                    if !r.account.is_empty() {
                        self.release(&r.account);
                    }
                    self.stats.ended(r.direction);
                }
            }
            // Policy refusals were counted when refused.
            Out::Cdr(rec) if rec.end_reason != EndReason::Rejected => {
                self.stats.finished(rec.direction, rec.answer.is_some());
            }
            _ => {}
        }
    }

    /// The next gateway for a call whose B leg failed with 408 or 5xx, or 503 "No route".
    fn failover(&mut self, now: u64, call: CallId, out: &mut Vec<Out>) {
        let next = self.routes.get_mut(&call).and_then(|r| {
            let gw = r.plan.get(r.next).copied();
            r.next += 1;
            gw.map(|g| (g, r.to_user.clone()))
        });
        match next {
            Some((g, to)) => {
                let target = self.gateways.addr(g);
                let ruri = gateway_ruri(&to, target);
                if !self.calls.retry(now, call, target, &ruri, out) {
                    self.calls.give_up(now, call, 503, "No route", out);
                }
            }
            None => {
                if let Some(r) = self.routes.get(&call) {
                    self.stats.no_route(r.direction);
                }
                self.calls.give_up(now, call, 503, "No route", out);
            }
        }
    }

    /// The account an origination INVITE would be charged to — the routed credential's key or
    /// the trunk's — written to `key`; false for unknown numbers and URI routes (no account).
    /// The runtime runs the call on that account's shard.
    pub fn origination_account(
        &self,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        snap: &Snapshot,
        key: &mut SmallVec<[u8; 128]>,
    ) -> bool {
        key.clear();
        match called_number(&self.cfg, msg, req, snap).map(|(_, r)| &r.target) {
            Some(RouteTarget::Credential(k)) => {
                key.extend_from_slice(k);
                true
            }
            Some(RouteTarget::Trunk(i)) => match snap.trunks.get(*i as usize) {
                Some(t) => {
                    trunk_key(&t.name, key);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.calls.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: u64, out: &mut Vec<Out>) {
        self.calls.handle_timeout(now, out);
        self.after(now, out);
    }

    pub fn active(&self) -> usize {
        self.calls.active()
    }

    /// Forgets ended calls whose retransmission window is over (on the worker's timer tick).
    pub fn expire_tombs(&mut self, now: u64) {
        self.calls.expire_tombs(now);
    }
}

impl Account {
    fn name_of_credential(cred: &crate::store::snapshot::CredentialAuth) -> String {
        format!("{}@{}", cred.username, cred.realm)
    }
}

/// The caller's number as written: the P-Asserted-Identity user, else the From user.
fn caller_user<'a>(msg: &Message<'a>, req: &RequestHeaders<'a>) -> &'a [u8] {
    msg.header(HeaderName::PAssertedIdentity)
        .and_then(|v| parse_name_addr(v).ok())
        .and_then(|na| na.uri.user)
        .or(req.from.uri.user)
        .unwrap_or_default()
}

/// SPEC §3.5: the first configured header that yields a number decides; that number must be
/// provisioned (no fall-through to the next header).
fn called_number<'s>(
    cfg: &DeskConfig,
    msg: &Message<'_>,
    req: &RequestHeaders<'_>,
    snap: &'s Snapshot,
) -> Option<(E164, &'s NumberRoute)> {
    for from in &cfg.called_from {
        let user = match from {
            CalledFrom::RequestUri => req.uri.user,
            CalledFrom::To => req.to.uri.user,
            CalledFrom::PCalledPartyId => msg
                .header(HeaderName::PCalledPartyId)
                .and_then(|v| parse_name_addr(v).ok())
                .and_then(|na| na.uri.user),
        };
        let Some(user) = user else { continue };
        if let Dialled::E164(n) = cfg.numbers.normalise(user) {
            return snap.numbers.get(&n).map(|r| (n, r));
        }
    }
    None
}

fn gateway_ruri(to: &str, gw: SocketAddr) -> String {
    let mut uri = Vec::with_capacity(to.len() + 32);
    uri.extend_from_slice(b"sip:");
    uri.extend_from_slice(to.as_bytes());
    uri.push(b'@');
    crate::sip::write::push_socket_addr(&mut uri, gw);
    // Only ASCII was written: a number, '@', digits, dots, brackets, hex and colons.
    String::from_utf8(uri).unwrap_or_default()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn attempt(
    now: u64,
    direction: Direction,
    tenant: Option<&str>,
    account: &str,
    from: &str,
    to: &str,
) -> CallRecord {
    CallRecord {
        id: format!("r-{now:x}-{:x}", rand_id()),
        direction,
        tenant: tenant.map(str::to_owned),
        account: account.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        start: now,
        answer: None,
        end: now,
        duration_s: 0.0,
        final_code: 0,
        end_reason: EndReason::Rejected,
        a_packets: 0,
        a_bytes: 0,
        b_packets: 0,
        b_bytes: 0,
        media_block: None,
    }
}

/// A refusal's CDR id only needs to be unique: a process-wide counter.
fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
