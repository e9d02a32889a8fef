//! The registrar for one shard of credentials (SPEC §3.2; RFC 3261 §10.3).
//!
//! Owns: bindings and per-credential registration state (last accepted time, nonce-count
//! tracking) of the credentials whose key hashes to this shard, and the policy that answers a
//! REGISTER. Sans-IO: `handle_register(now, source, request)` returns an [`Answer`] (a small,
//! copyable recipe of the response) plus [`Effects`] for the security layer; the runtime writes
//! and sends. Time is unix milliseconds passed in; nothing here reads a clock.
//! Must not: touch sockets, the store, or other shards' state.

pub mod owners;
pub mod response;

use crate::config::{OnConflict, RegistrarConfig};
use crate::fasthash::{FastMap, InlineKey};
use crate::sip::digest::{self, Algorithm, Nonce, NonceCheck, NonceKey, Qop};
use crate::sip::headers::{self, Contacts, DigestCredentials, RequestHeaders};
use crate::sip::scan::{HeaderName, Message};
use crate::store::snapshot::{credential_key, CredentialAuth, Snapshot};
use crate::timer::TimerWheel;
use smallvec::SmallVec;
use std::net::SocketAddr;

/// RFC 3261 §10.2.1.1: a contact without an expiry asks for 3600 s.
const DEFAULT_REQUESTED_EXPIRES: u32 = 3600;
/// Nonces tracked per credential for the nonce-count replay check.
const TRACKED_NONCES: usize = 4;

/// A credential's home shard: stable across threads and restarts (FNV-1a of the key). Used to
/// spread restored bindings and a flood's first claims over the workers (see [`owners`]).
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % shards.max(1) as u64) as usize
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
    pub fn parse(s: &str) -> Transport {
        match s {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => Transport::Udp,
        }
    }
}

/// A bitmask over `RegistrarConfig::algorithms` positions (bit i = the i-th configured one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AlgMask(pub u8);

/// How a REGISTER is answered. Small and `Copy`: the transaction layer keeps it to answer
/// retransmissions by regenerating the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 401 with one WWW-Authenticate per algorithm in `algs`.
    Challenge {
        nonce: Nonce,
        stale: bool,
        algs: AlgMask,
    },
    /// 200 echoing the request's contacts with their granted expiry.
    Registered { expires: u32 },
    /// 200 after removing bindings (`Expires: 0`, `Contact: *`) or for a query: lists what remains.
    Bindings,
    /// 403 Forbidden: authentication failed.
    Forbidden,
    /// 403 "Credential in use": another PBX holds the credential (`on_conflict = "reject"`).
    InUse,
    /// 423 with Min-Expires.
    IntervalTooBrief { min: u32 },
    /// 429 (or the configured status) with Retry-After.
    Throttled { status: u16, retry_after: u32 },
    /// 400 with the reason phrase given.
    BadRequest(&'static str),
}

impl Answer {
    pub fn code(&self) -> u16 {
        match self {
            Answer::Challenge { .. } => 401,
            Answer::Registered { .. } | Answer::Bindings => 200,
            Answer::Forbidden | Answer::InUse => 403,
            Answer::IntervalTooBrief { .. } => 423,
            Answer::Throttled { status, .. } => *status,
            Answer::BadRequest(_) => 400,
        }
    }
}

/// Why a REGISTER was refused, as `sipedge_register_rejected_total{reason}` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    Auth,
    Throttled,
    Conflict,
    Interval,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::Auth,
        RejectReason::Throttled,
        RejectReason::Conflict,
        RejectReason::Interval,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Auth => "auth",
            RejectReason::Throttled => "throttled",
            RejectReason::Conflict => "conflict",
            RejectReason::Interval => "interval",
        }
    }
}

/// What the security layer must count about this request's source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub auth_failure: bool,
    pub throttled: bool,
    pub rejected: Option<RejectReason>,
}

/// One registered contact of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub contact: String,
    /// The observed source: requests to the PBX go here, not to the Contact host (NAT).
    pub source: SocketAddr,
    pub transport: Transport,
    pub user_agent: String,
    pub call_id: String,
    pub cseq: u32,
    pub registered_at_ms: u64,
    pub expires_at_ms: u64,
    /// The expiry the store holds for this binding (0: not stored yet).
    pub persisted_expires_at_ms: u64,
}

/// A nonce this credential has used, identified by its authenticated `(issued, salt)`.
#[derive(Clone, Copy, Debug, Default)]
struct NonceUse {
    /// `(0, 0)` = free slot.
    order: (u64, u32),
    last_nc: u32,
}

/// Per-credential registration state.
pub struct CredState {
    /// `username@realm` (realm lower-cased).
    pub key: Box<[u8]>,
    pub username: Box<str>,
    pub realm: Box<str>,
    pub bindings: SmallVec<[Binding; 1]>,
    last_accepted_ms: Option<u64>,
    nonces: [NonceUse; TRACKED_NONCES],
    /// Nonces at or below this were evicted from `nonces`: their counts are unknown, so they are
    /// refused (a fresh challenge) rather than risk accepting a replay.
    nonce_watermark: (u64, u32),
    dirty: bool,
}

impl CredState {
    fn new(username: &str, realm: &str) -> CredState {
        let mut key = SmallVec::<[u8; 128]>::new();
        credential_key(username.as_bytes(), realm.as_bytes(), &mut key);
        CredState {
            key: key.as_slice().into(),
            username: username.into(),
            realm: realm.to_ascii_lowercase().into(),
            bindings: SmallVec::new(),
            last_accepted_ms: None,
            nonces: [NonceUse::default(); TRACKED_NONCES],
            nonce_watermark: (0, 0),
            dirty: false,
        }
    }
}

/// A credential's bindings changed: the persister writes its whole current set.
pub struct DirtyCredential<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub bindings: &'a [Binding],
}

pub struct Registrar {
    cfg: RegistrarConfig,
    nonce_key: NonceKey,
    index: FastMap<InlineKey, u32>,
    /// `owners` slot -> this shard's credential states in it (a slot moves as a whole).
    by_slot: FastMap<u16, SmallVec<[u32; 1]>>,
    /// States given away (`take_slot`), reused by the next new credential.
    free: Vec<u32>,
    slots: Vec<CredState>,
    expiry: TimerWheel<u32>,
    expired_scratch: Vec<u32>,
    dirty: Vec<u32>,
    active: usize,
    ha2: digest::Ha2Memo,
}

impl Registrar {
    /// Every shard's registrar gets a clone of the same `nonce_key` (nonces are verifiable and
    /// ordered across shards).
    pub fn new(cfg: RegistrarConfig, nonce_key: NonceKey, now_ms: u64) -> Registrar {
        Registrar {
            cfg,
            nonce_key,
            index: FastMap::default(),
            by_slot: FastMap::default(),
            free: Vec::new(),
            slots: Vec::new(),
            expiry: TimerWheel::new(100, 1024, now_ms),
            expired_scratch: Vec::new(),
            dirty: Vec::new(),
            active: 0,
            ha2: digest::Ha2Memo::default(),
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// Live bindings in this shard.
    pub fn active_bindings(&self) -> usize {
        self.active
    }

    pub fn bindings_of(&self, username: &str, realm: &str) -> &[Binding] {
        let mut key = SmallVec::<[u8; 128]>::new();
        credential_key(username.as_bytes(), realm.as_bytes(), &mut key);
        match self.index.get(&key[..]) {
            Some(&slot) => &self.slots[slot as usize].bindings,
            None => &[],
        }
    }

    /// The binding an origination call for credential `key` goes to: the most recently
    /// registered one still live.
    pub fn live_binding(&self, key: &[u8], now_ms: u64) -> Option<&Binding> {
        let &slot = self.index.get(key)?;
        self.slots[slot as usize]
            .bindings
            .iter()
            .filter(|b| b.expires_at_ms > now_ms)
            .max_by_key(|b| b.registered_at_ms)
    }

    /// Every credential state with at least one binding.
    pub fn iter_bound(&self) -> impl Iterator<Item = &CredState> {
        self.slots.iter().filter(|c| !c.bindings.is_empty())
    }

    /// Nonces order by `(issued second, process-wide mint sequence)`, whichever worker mints
    /// them (see `NonceKey::next_salt`).
    fn mint_nonce(&mut self, now_ms: u64) -> Nonce {
        self.nonce_key
            .mint(now_ms / 1000, self.nonce_key.next_salt())
    }

    /// The algorithms to offer: configured ones the credential has hashes for (all configured
    /// ones for an unknown user, so that existence does not leak).
    fn offer(&self, cred: Option<&CredentialAuth>) -> AlgMask {
        let mut mask = 0u8;
        for (i, alg) in self.cfg.algorithms.iter().enumerate() {
            if cred.is_none_or(|c| c.hashes(*alg).is_some()) {
                mask |= 1 << i;
            }
        }
        AlgMask(mask)
    }

    fn challenge(&mut self, now_ms: u64, stale: bool, cred: Option<&CredentialAuth>) -> Answer {
        let mut algs = self.offer(cred);
        if algs.0 == 0 {
            // A credential with no hashes for any configured algorithm cannot authenticate; still
            // answer like for anyone else.
            algs = self.offer(None);
        }
        Answer::Challenge {
            nonce: self.mint_nonce(now_ms),
            stale,
            algs,
        }
    }

    /// Answers one REGISTER (SPEC §3.2, checks in its order after drop and parse).
    ///
    /// A REGISTER without Authorization touches no shard state (the nonce is stateless), so any
    /// shard's registrar may answer it; everything else must go to the credential's owner shard.
    pub fn handle_register(
        &mut self,
        now_ms: u64,
        source: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        snap: &Snapshot,
    ) -> (Answer, Effects) {
        let account = AccountKey::of_register(req, snap);
        self.handle_register_for(now_ms, source, transport, msg, req, snap, &account)
    }

    /// [`Registrar::handle_register`] with the request's account already worked out (the
    /// worker needs it first, to find the account's shard).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_register_for(
        &mut self,
        now_ms: u64,
        source: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        snap: &Snapshot,
        account: &AccountKey,
    ) -> (Answer, Effects) {
        let realm = account.realm();
        let cred = snap.credentials.get(account.key());
        let slot = match self.authenticate(
            now_ms,
            msg,
            HeaderName::Authorization,
            b"REGISTER",
            realm,
            cred.map(|c| (account.key(), c)),
        ) {
            Ok(slot) => slot,
            Err(refusal) => return refusal,
        };

        // -- unregister (200) --
        let contacts = match &req.contacts {
            Ok(c) => c,
            Err(_) => return (Answer::BadRequest("Bad Contact"), Effects::default()),
        };
        let header_expires = msg.header(HeaderName::Expires).and_then(headers::parse_u32);
        let list = match contacts {
            Contacts::Star => {
                //= https://www.rfc-editor.org/rfc/rfc3261#section-10.3
                //# If the request contains a Contact header field with "*", the request MUST
                //# contain an Expires header field with value 0 ... else ... 400
                if header_expires != Some(0) {
                    return (
                        Answer::BadRequest("Contact * needs Expires 0"),
                        Effects::default(),
                    );
                }
                self.remove_bindings(slot, |_| true);
                return (Answer::Bindings, Effects::default());
            }
            Contacts::List(list) => list,
        };
        if list.is_empty() {
            // A query: list the current bindings.
            return (Answer::Bindings, Effects::default());
        }
        let requested = |c: &headers::ContactEntry<'_>| {
            c.expires
                .or(header_expires)
                .unwrap_or(DEFAULT_REQUESTED_EXPIRES)
        };
        if list.iter().all(|c| requested(c) == 0) {
            self.remove_bindings(slot, |b| {
                list.iter()
                    .any(|c| same_uri(c.addr.uri_raw, b.contact.as_bytes()))
                    || b.source.ip() == source.ip()
            });
            return (Answer::Bindings, Effects::default());
        }

        // -- 423 --
        let min_requested = list
            .iter()
            .map(requested)
            .filter(|&e| e != 0)
            .min()
            .unwrap_or(DEFAULT_REQUESTED_EXPIRES);
        if min_requested < self.cfg.min_expires_s {
            return (
                Answer::IntervalTooBrief {
                    min: self.cfg.min_expires_s,
                },
                Effects {
                    rejected: Some(RejectReason::Interval),
                    ..Effects::default()
                },
            );
        }

        // -- conflict --
        self.expire_slot(slot, now_ms);
        let state = &self.slots[slot];
        let other_ips = state
            .bindings
            .iter()
            .filter(|b| b.source.ip() != source.ip())
            .count();
        let same_ip = state.bindings.len() - other_ips;
        let conflict = same_ip == 0 && other_ips >= self.cfg.max_contacts as usize;
        if conflict && self.cfg.on_conflict == OnConflict::Reject {
            return (
                Answer::InUse,
                Effects {
                    rejected: Some(RejectReason::Conflict),
                    ..Effects::default()
                },
            );
        }

        // -- 429 --
        if let Some(last) = state.last_accepted_ms {
            let next_allowed = last + u64::from(self.cfg.min_interval_s) * 1000;
            if now_ms < next_allowed {
                let retry_after = (next_allowed - now_ms).div_ceil(1000) as u32;
                return (
                    Answer::Throttled {
                        status: self.cfg.throttle_status,
                        retry_after: retry_after.max(1),
                    },
                    Effects {
                        throttled: true,
                        rejected: Some(RejectReason::Throttled),
                        ..Effects::default()
                    },
                );
            }
        }

        // -- accept --
        let granted = min_requested.min(self.cfg.max_expires_s);
        let user_agent = msg.header(HeaderName::UserAgent).unwrap_or_default();
        let first = &list[0];
        let expires_at_ms = now_ms + u64::from(granted) * 1000;
        let state = &mut self.slots[slot];
        let existing = state
            .bindings
            .iter()
            .position(|b| b.source.ip() == source.ip());
        let idx = match existing {
            Some(i) => i,
            None => {
                if state.bindings.len() >= self.cfg.max_contacts as usize {
                    // on_conflict = replace: the oldest binding gives way.
                    let oldest = (0..state.bindings.len())
                        .min_by_key(|&i| state.bindings[i].registered_at_ms)
                        .unwrap_or(0);
                    state.bindings.remove(oldest);
                    self.active -= 1;
                }
                state.bindings.push(Binding {
                    contact: String::new(),
                    source,
                    transport,
                    user_agent: String::new(),
                    call_id: String::new(),
                    cseq: 0,
                    registered_at_ms: now_ms,
                    expires_at_ms,
                    persisted_expires_at_ms: 0,
                });
                self.active += 1;
                state.bindings.len() - 1
            }
        };
        let b = &mut state.bindings[idx];
        let moved = existing.is_none()
            || b.contact.as_bytes() != first.addr.uri_raw
            || b.source != source
            || b.transport != transport;
        set_lossy(&mut b.contact, first.addr.uri_raw);
        set_lossy(&mut b.user_agent, user_agent);
        set_lossy(&mut b.call_id, req.call_id);
        b.cseq = req.cseq.seq;
        b.source = source;
        b.transport = transport;
        b.registered_at_ms = now_ms;
        b.expires_at_ms = expires_at_ms;
        // A pure refresh is persisted only once the stored expiry lags by more than half the
        // grant. A PBX that refreshes more often than that always refreshes before the stored
        // expiry, so after a restart no binding lapses early; and the store is not rewritten on
        // every refresh (it was the largest cost per registration under load).
        let stale =
            expires_at_ms.saturating_sub(b.persisted_expires_at_ms) > u64::from(granted) * 500;
        state.last_accepted_ms = Some(now_ms);
        if moved || stale {
            self.mark_dirty(slot);
        }
        self.expiry.insert(expires_at_ms, slot as u32);
        (Answer::Registered { expires: granted }, Effects::default())
    }

    /// Digest authentication of a request (SPEC §3.2 rules, shared by REGISTER's 401 and
    /// INVITE's 407): the credentials in `header` for `realm` must come from `cred` — the
    /// credential the request claims (the To user of a REGISTER, the digest user of an INVITE)
    /// — carry a nonce of ours within its TTL, a correct response for `method`, and a fresh
    /// nonce-count. Ok: the credential's state slot in this shard (created if need be). Err: the
    /// challenge or refusal to answer with, and what the security layer must count.
    pub fn authenticate(
        &mut self,
        now_ms: u64,
        msg: &Message<'_>,
        header: HeaderName,
        method: &[u8],
        realm: &[u8],
        cred: Option<(&[u8], &CredentialAuth)>,
    ) -> Result<usize, (Answer, Effects)> {
        // The credential's key (`user@realm`) comes along: its state slot is found by it.
        let (cred_key, cred) = match cred {
            Some((k, c)) => (k, Some(c)),
            None => (&[][..], None),
        };
        let Some(auth) = find_credentials(msg, header, realm) else {
            return Err((self.challenge(now_ms, false, cred), Effects::default()));
        };
        let auth_failed = Effects {
            auth_failure: true,
            throttled: false,
            rejected: Some(RejectReason::Auth),
        };
        let alg = match auth.algorithm {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(a) {
                Some(a) if self.cfg.algorithms.contains(&a) => a,
                _ => return Err((self.challenge(now_ms, false, cred), Effects::default())),
            },
        };
        let issued_s =
            match self
                .nonce_key
                .check(auth.nonce, now_ms / 1000, u64::from(self.cfg.nonce_ttl_s))
            {
                NonceCheck::Valid { issued } => issued,
                NonceCheck::Stale => {
                    return Err((self.challenge(now_ms, true, cred), Effects::default()))
                }
                // Not ours: a fresh challenge, not stale, and it counts against the source.
                NonceCheck::Forged => {
                    return Err((self.challenge(now_ms, false, cred), auth_failed))
                }
            };
        // The digest username is `user` (HA1) or `user@realm` (HA1b); either way it must name the
        // claimed credential, or one credential could act as another.
        let (digest_user, use_ha1b) = split_user_realm(auth.username, realm);
        let Some(cred) = cred.filter(|c| digest_user == c.username.as_bytes()) else {
            return Err((Answer::Forbidden, auth_failed));
        };
        let Some(hashes) = cred.hashes(alg) else {
            return Err((Answer::Forbidden, auth_failed));
        };
        let qop = match (auth.qop, auth.nc, auth.cnonce) {
            (Some(q), Some(nc), Some(cnonce)) if q.eq_ignore_ascii_case(b"auth") => {
                Some(Qop { qop: q, nc, cnonce })
            }
            (None, _, _) => None,
            _ => return Err((Answer::BadRequest("Bad Authorization"), Effects::default())),
        };
        let ha1 = if use_ha1b {
            hashes.ha1b.as_bytes()
        } else {
            hashes.ha1.as_bytes()
        };
        let ha2 = self.ha2.get(alg, method, auth.uri);
        if !digest::verify_with_ha2(alg, ha1, &ha2, auth.nonce, qop, auth.response) {
            return Err((Answer::Forbidden, auth_failed));
        }
        let nc = match qop {
            Some(q) => match digest::parse_nc(q.nc) {
                Some(nc) if nc > 0 => nc,
                _ => return Err((Answer::Forbidden, auth_failed)),
            },
            None => 1,
        };

        // Authenticated. From here on, state for this credential exists.
        let slot = self.slot_for(cred_key, cred);
        match self.slots[slot]
            .check_nonce_count(digest::nonce_order(auth.nonce).unwrap_or((issued_s, 0)), nc)
        {
            NonceUseCheck::Fresh => Ok(slot),
            NonceUseCheck::Replay if qop.is_some() => Err((Answer::Forbidden, auth_failed)),
            // Without qop there is no nonce-count: a reused nonce just gets a new one.
            NonceUseCheck::Replay | NonceUseCheck::TooOld => {
                Err((self.challenge(now_ms, true, Some(cred)), Effects::default()))
            }
        }
    }

    /// A challenge for a request that named no usable credentials (INVITE's 407 from an unknown
    /// source), offering every configured algorithm.
    pub fn challenge_anyone(&mut self, now_ms: u64) -> Answer {
        self.challenge(now_ms, false, None)
    }

    /// Looks credential `key`'s state up in the index and starts loading it, if it is here:
    /// the state and its first binding's strings, which a refresh compares.
    pub fn prefetch(&self, key: &[u8]) {
        let Some(state) = self
            .index
            .get(key)
            .and_then(|&i| self.slots.get(i as usize))
        else {
            return;
        };
        crate::prefetch::lines(state);
        if let Some(b) = state.bindings.first() {
            crate::prefetch::line(b.contact.as_bytes());
            crate::prefetch::line(b.user_agent.as_bytes());
            crate::prefetch::line(b.call_id.as_bytes());
        }
    }

    fn slot_for(&mut self, key: &[u8], cred: &CredentialAuth) -> usize {
        if let Some(&slot) = self.index.get(key) {
            return slot as usize;
        }
        let state = CredState::new(&cred.username, &cred.realm);
        self.insert_state(state)
    }

    fn insert_state(&mut self, state: CredState) -> usize {
        let owner_slot = owners::slot_of(&state.key) as u16;
        let key = InlineKey::from_slice(&state.key);
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = state;
                i as usize
            }
            None => {
                self.slots.push(state);
                self.slots.len() - 1
            }
        };
        self.index.insert(key, slot as u32);
        self.by_slot
            .entry(owner_slot)
            .or_default()
            .push(slot as u32);
        slot
    }

    /// The credential keys this shard holds in `owners` slot `owner_slot`.
    pub fn slot_keys(&self, owner_slot: usize) -> impl Iterator<Item = &[u8]> {
        self.by_slot
            .get(&(owner_slot as u16))
            .into_iter()
            .flatten()
            .map(|&i| &*self.slots[i as usize].key)
    }

    /// Takes every credential state of `owners` slot `owner_slot` out of this shard, to hand
    /// them to the worker the slot moves to ([`Registrar::adopt`]). Their bindings stay in the
    /// store; a change not yet persisted travels with them.
    pub fn take_slot(&mut self, owner_slot: usize) -> Vec<CredState> {
        let Some(list) = self.by_slot.remove(&(owner_slot as u16)) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(list.len());
        for i in list {
            let state = std::mem::replace(&mut self.slots[i as usize], CredState::new("", ""));
            self.index.remove(&state.key[..]);
            self.active -= state.bindings.len();
            if state.dirty {
                self.dirty.retain(|&d| d != i);
            }
            self.free.push(i);
            out.push(state);
        }
        out
    }

    /// Credential states handed over by their previous shard. A credential this shard already
    /// has (its PBX registered here between the slot's move and this hand-over) keeps its own,
    /// newer state, merged with the older one: bindings it does not know and nonce counts.
    pub fn adopt(&mut self, states: Vec<CredState>) {
        for mut state in states {
            if let Some(&slot) = self.index.get(&state.key[..]) {
                let slot = slot as usize;
                let was_dirty = self.slots[slot].dirty;
                let added = self.slots[slot].absorb(state);
                self.active += added.len();
                for at in added {
                    self.expiry.insert(at, slot as u32);
                }
                if !was_dirty && self.slots[slot].dirty {
                    self.slots[slot].dirty = false;
                    self.mark_dirty(slot);
                }
                continue;
            }
            let dirty = std::mem::take(&mut state.dirty);
            let expiries: SmallVec<[u64; 1]> =
                state.bindings.iter().map(|b| b.expires_at_ms).collect();
            self.active += state.bindings.len();
            let slot = self.insert_state(state);
            for at in expiries {
                self.expiry.insert(at, slot as u32);
            }
            if dirty {
                self.mark_dirty(slot);
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(slot as u32);
        }
    }

    fn remove_bindings(&mut self, slot: usize, pred: impl Fn(&Binding) -> bool) {
        let state = &mut self.slots[slot];
        let before = state.bindings.len();
        state.bindings.retain(|b| !pred(b));
        let removed = before - state.bindings.len();
        if removed > 0 {
            self.active -= removed;
            self.mark_dirty(slot);
        }
    }

    fn expire_slot(&mut self, slot: usize, now_ms: u64) {
        self.remove_bindings(slot, |b| b.expires_at_ms <= now_ms);
    }

    /// Drops expired bindings; call at least every few hundred milliseconds.
    pub fn expire(&mut self, now_ms: u64) {
        let mut due = std::mem::take(&mut self.expired_scratch);
        self.expiry.expire(now_ms, &mut due);
        for slot in due.drain(..) {
            self.expire_slot(slot as usize, now_ms);
        }
        self.expired_scratch = due;
    }

    /// Hands the credentials whose bindings changed since the last call to `f`, then forgets them.
    pub fn drain_dirty(&mut self, mut f: impl FnMut(DirtyCredential<'_>)) {
        for slot in self.dirty.drain(..) {
            let s = &mut self.slots[slot as usize];
            s.dirty = false;
            f(DirtyCredential {
                username: &s.username,
                realm: &s.realm,
                bindings: &s.bindings,
            });
            for b in s.bindings.iter_mut() {
                b.persisted_expires_at_ms = b.expires_at_ms;
            }
        }
    }

    /// Restores a persisted binding (start-up). Expired ones are ignored.
    pub fn restore(&mut self, username: &str, realm: &str, binding: Binding, now_ms: u64) {
        if binding.expires_at_ms <= now_ms {
            return;
        }
        let mut key = SmallVec::<[u8; 128]>::new();
        credential_key(username.as_bytes(), realm.as_bytes(), &mut key);
        let slot = match self.index.get(&key[..]) {
            Some(&s) => s as usize,
            None => self.insert_state(CredState::new(username, realm)),
        };
        let state = &mut self.slots[slot];
        let registered = binding.registered_at_ms;
        self.expiry.insert(binding.expires_at_ms, slot as u32);
        state.bindings.push(binding);
        state.last_accepted_ms = Some(
            state
                .last_accepted_ms
                .map_or(registered, |l| l.max(registered)),
        );
        self.active += 1;
    }

    /// After a provisioning change: bindings of credentials that no longer exist are dropped.
    pub fn retain_provisioned(&mut self, snap: &Snapshot) {
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if !s.bindings.is_empty() && !snap.credentials.contains_key(&s.key[..]) {
                self.remove_bindings(slot, |_| true);
                self.slots[slot].last_accepted_ms = None;
            }
        }
    }
}

enum NonceUseCheck {
    Fresh,
    Replay,
    /// At or below the eviction watermark: cannot prove it is not a replay.
    TooOld,
}

impl CredState {
    /// Merges an older state of the same credential into this one; returns the expiries of the
    /// bindings it added (contacts this state did not have).
    fn absorb(&mut self, older: CredState) -> SmallVec<[u64; 1]> {
        let mut added = SmallVec::new();
        for b in older.bindings {
            if !self.bindings.iter().any(|mine| mine.contact == b.contact) {
                added.push(b.expires_at_ms);
                self.bindings.push(b);
            }
        }
        self.last_accepted_ms = self.last_accepted_ms.max(older.last_accepted_ms);
        self.nonce_watermark = self.nonce_watermark.max(older.nonce_watermark);
        for u in older.nonces.iter().filter(|u| u.order != (0, 0)) {
            match self.nonces.iter_mut().find(|m| m.order == u.order) {
                Some(m) => m.last_nc = m.last_nc.max(u.last_nc),
                None if u.order > self.nonce_watermark => {
                    let victim = (0..TRACKED_NONCES)
                        .min_by_key(|&i| self.nonces[i].order)
                        .unwrap_or(0);
                    self.nonce_watermark = self.nonce_watermark.max(self.nonces[victim].order);
                    self.nonces[victim] = *u;
                }
                None => {}
            }
        }
        self.dirty |= older.dirty || !added.is_empty();
        added
    }

    //= https://www.rfc-editor.org/rfc/rfc7616#section-3.4
    //# The nc value ... allows the server to detect request replays by maintaining its own copy
    //# of this count -- if the same nc value is seen twice, then the request is a replay.
    fn check_nonce_count(&mut self, order: (u64, u32), nc: u32) -> NonceUseCheck {
        if let Some(u) = self.nonces.iter_mut().find(|u| u.order == order) {
            if nc <= u.last_nc {
                return NonceUseCheck::Replay;
            }
            u.last_nc = nc;
            return NonceUseCheck::Fresh;
        }
        if order <= self.nonce_watermark {
            return NonceUseCheck::TooOld;
        }
        // A free slot, else the oldest nonce gives way and raises the watermark.
        let victim = (0..TRACKED_NONCES)
            .min_by_key(|&i| self.nonces[i].order)
            .unwrap_or(0);
        self.nonce_watermark = self.nonce_watermark.max(self.nonces[victim].order);
        self.nonces[victim] = NonceUse { order, last_nc: nc };
        NonceUseCheck::Fresh
    }
}

/// The Authorization header for our realm (a request may carry several, RFC 3261 §22.4).
fn find_credentials<'a>(
    msg: &Message<'a>,
    header: HeaderName,
    realm: &[u8],
) -> Option<DigestCredentials<'a>> {
    let mut first = None;
    for value in msg.headers_named(header) {
        if let Ok(c) = headers::parse_digest_credentials(value) {
            if c.realm.eq_ignore_ascii_case(realm) {
                return Some(c);
            }
            first.get_or_insert(c);
        }
    }
    first
}

/// `user@realm` (HA1b form) -> (user, true); `user` -> (user, false).
fn split_user_realm<'a>(username: &'a [u8], realm: &[u8]) -> (&'a [u8], bool) {
    if let Some(at) = memchr::memrchr(b'@', username) {
        if username[at + 1..].eq_ignore_ascii_case(realm) {
            return (&username[..at], true);
        }
    }
    (username, false)
}

fn same_uri(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A REGISTER's account: the credential key `user@realm` (the To user in the realm its host
/// names), worked out once per request and used for the owner shard, the credential and the
/// state slot alike.
pub struct AccountKey {
    key: SmallVec<[u8; 128]>,
    realm_at: usize,
}

impl AccountKey {
    pub fn of_register(req: &RequestHeaders<'_>, snap: &Snapshot) -> AccountKey {
        let realm = snap.realm_for_host(req.to.uri.host);
        let user = req.to.uri.user.unwrap_or_default();
        let mut key = SmallVec::new();
        credential_key(user, realm, &mut key);
        AccountKey {
            key,
            realm_at: user.len() + 1,
        }
    }
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The realm, as the snapshot spells it (lower case).
    pub fn realm(&self) -> &[u8] {
        self.key.get(self.realm_at..).unwrap_or_default()
    }
}

/// Reuses the String's capacity (a refresh does not allocate), and leaves it alone when the
/// refresh carries the same bytes, as re-registrations nearly always do (no UTF-8 check).
fn set_lossy(s: &mut String, bytes: &[u8]) {
    if s.as_bytes() == bytes {
        return;
    }
    s.clear();
    match std::str::from_utf8(bytes) {
        Ok(t) => s.push_str(t),
        Err(_) => s.push_str(&String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests;

impl crate::call::desk::Bindings for Registrar {
    fn live(&self, key: &[u8], now_ms: u64) -> Option<&Binding> {
        self.live_binding(key, now_ms)
    }
}
