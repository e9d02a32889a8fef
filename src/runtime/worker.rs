//! One signalling worker: a pinned thread with its own SO_REUSEPORT socket, mio loop, registrar
//! shard, transaction table, source guard and stats.
//!
//! The loop: drain control and hand-off channels, drain the socket in recvmmsg batches, answer
//! what this shard owns, hand the rest to its owner, flush sendmmsg, run timers, park in
//! `poll` (or, under load, sleep `sip.coalesce_us` and go round again). Nothing here blocks
//! except `poll` and that sleep, and nothing allocates per message once warm (hand-off buffers
//! are pooled and returned).

use super::coalesce::{Coalescer, Next};
use super::udp::{RecvBatch, SendBatch, SendMeta};
use super::{Control, Handoff, Peer, PersistBatch, SecurityEvent};
use crate::call::Port;
use crate::registrar::owners::{self, Owner, Owners};
use crate::registrar::response::{write_answer, write_plain, Opaque};
use crate::registrar::{self, AccountKey, Answer, Registrar, Transport};
use crate::security::{Ban, SourceGuard};
use crate::sip::headers::{self, RequestHeaders};
use crate::sip::scan::{self, Header, HeaderName, Message, Method, StartLine};
use crate::sip::transaction::{ServerTransactions, TxnKey, TxnKeyHasher, TIMER_J_UDP_MS};
use crate::sip::write::response_destination;
use crate::stats::{DropReason, WorkerStats};
use crate::store::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token};
use smallvec::SmallVec;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod calls;

pub const SOCKET: Token = Token(0);
pub const WAKER: Token = Token(1);
pub const CORE_SOCKET: Token = Token(2);

/// Recipes of answers kept for retransmissions (see `sip::transaction`).
#[derive(Clone, Copy, Debug)]
enum Recipe {
    Register(Answer),
    Plain(u16),
    /// An INVITE refused by policy (SPEC §3.3–3.5).
    Refused(crate::call::desk::Refusal),
    /// 407 to an INVITE.
    ProxyChallenge(Answer),
}

/// Per-iteration bounds so hand-offs, control messages and timers are never starved.
const MAX_RECV_BATCHES_PER_TURN: usize = 16;
const MAX_HANDOFFS_PER_TURN: usize = 1024;
const TIMER_PERIOD_MS: u64 = 100;
/// Completed transactions forgotten per loop turn at most (Timer J).
const MAX_TXN_EXPIRY_PER_TURN: usize = 256;
const PERSIST_PERIOD_MS: u64 = 1000;
/// Completed transactions kept per worker at most (~80 B each: a 64-byte ring entry and 16 B of
/// index at half load, ~160 MB at the cap). Timer J's 32 s fill it at 62,500 completions/s, about
/// 31,000 registrations/s (two transactions each) on one worker; past that the oldest are
/// forgotten early (`ServerTransactions::new`).
const MAX_TRANSACTIONS: usize = 2_000_000;
/// A claimed slot moves to another worker only after this long without REGISTERs of it arriving
/// here (see `Worker::give_slot`).
const SLOT_QUIET_MS: u32 = 2_000;

pub struct Worker {
    pub id: usize,
    pub poll: Poll,
    pub socket: mio::net::UdpSocket,
    /// This worker's own port for legs facing the core (`call::Port::Core`).
    core_socket: mio::net::UdpSocket,
    pub peers: Arc<Vec<Peer>>,
    pub handoff_rx: Receiver<Handoff>,
    pub control_rx: Receiver<Control>,
    pub returns_rx: Receiver<Vec<u8>>,
    pub persist_tx: Sender<PersistBatch>,
    pub registrar: Registrar,
    pub guard: SourceGuard,
    pub shared_snapshot: Arc<ArcSwap<Snapshot>>,
    pub opaque: Arc<Opaque>,
    pub owners: Arc<Owners>,
    /// Which worker counts auth failures and throttles of an IP (see `security_event`).
    pub ip_owners: Arc<Owners>,
    desk: crate::call::desk::Desk,
    core: Arc<crate::routing::classify::CoreSources>,
    cdr: crate::cdr::CdrSender,
    /// A-leg hash -> (shard, until): where this worker sent INVITEs, for their CANCELs.
    cancel_routes: crate::fasthash::FastMap<u64, (u16, u64)>,
    outs: Vec<crate::call::Out>,
    /// Worker 0 pings the gateways; every worker reads `gateway_up`.
    qualify: Option<crate::routing::gateways::Qualify>,
    qualify_seq: u64,
    gateway_up: Arc<Vec<std::sync::atomic::AtomicBool>>,
    /// sipedge's advertised signalling address.
    local: SocketAddr,
    /// SIGTERM: new INVITEs get 503 Retry-After 30 while calls drain.
    shutting_down_calls: bool,
    media: Option<crate::media::Media>,
    media_timeout_s: u32,
    next_media_check_ms: u64,
    /// The hand-off being sent asks its owner for the slot.
    adopt_request: bool,
    /// The hand-off being handled asked for its slot, for this worker.
    adopt_for: Option<usize>,
    /// Per owner slot, when this worker last served an authenticated REGISTER of it that arrived
    /// on its own socket (ms, wrapping): a slot moves only once its PBX has gone quiet here.
    slot_seen_ms: Box<[u32]>,

    pub transport: Transport,
    // private state
    snap: Arc<Snapshot>,
    txns: ServerTransactions<Recipe>,
    hasher: TxnKeyHasher,
    stats: WorkerStats,
    tx: SendBatch,
    tx_core: SendBatch,
    /// The socket the datagram being handled came in on (answers go out of the same one).
    arrived: Port,
    out: Vec<u8>,
    pool: Vec<Vec<u8>>,
    wake_pending: u64,
    now_ms: u64,
    last_timer_ms: u64,
    last_persist_ms: u64,
    shutting_down: bool,
    /// The last receive batch was full: more is queued than this worker drains per batch.
    backlogged: bool,
    /// Datagrams read from the sockets in this loop turn.
    turn_received: usize,
    /// Whether to let the socket fill after a busy turn before reading again (`sip.coalesce_us`).
    coalescer: Coalescer,
}

/// Wall-clock time since the Unix epoch. `clock_gettime` straight from the vDSO: it is read per
/// message, and `SystemTime::duration_since` adds a checked `Timespec` subtraction to each read.
pub fn unix_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

pub struct WorkerParts {
    pub id: usize,
    pub socket: std::net::UdpSocket,
    pub core_socket: std::net::UdpSocket,
    pub poll: Poll,
    pub peers: Arc<Vec<Peer>>,
    pub handoff_rx: Receiver<Handoff>,
    pub control_rx: Receiver<Control>,
    pub returns_rx: Receiver<Vec<u8>>,
    pub persist_tx: Sender<PersistBatch>,
    pub registrar: Registrar,
    pub guard: SourceGuard,
    pub shared_snapshot: Arc<ArcSwap<Snapshot>>,
    pub opaque: Arc<Opaque>,
    pub owners: Arc<Owners>,
    pub ip_owners: Arc<Owners>,
    pub desk: crate::call::desk::Desk,
    pub core: Arc<crate::routing::classify::CoreSources>,
    pub cdr: crate::cdr::CdrSender,
    pub qualify: Option<crate::routing::gateways::Qualify>,
    pub gateway_up: Arc<Vec<std::sync::atomic::AtomicBool>>,
    pub local: SocketAddr,
    /// The media threads' handle (None: calls are not anchored).
    pub media: Option<crate::media::Media>,
    pub media_timeout_s: u32,
    /// `sip.coalesce_us`.
    pub coalesce: Duration,
}

impl Worker {
    pub fn new(p: WorkerParts) -> io::Result<Worker> {
        let mut socket = mio::net::UdpSocket::from_std(p.socket);
        p.poll
            .registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let mut core_socket = mio::net::UdpSocket::from_std(p.core_socket);
        p.poll
            .registry()
            .register(&mut core_socket, CORE_SOCKET, Interest::READABLE)?;
        let now_ms = unix_now().as_millis() as u64;
        let snap = p.shared_snapshot.load_full();
        Ok(Worker {
            id: p.id,
            poll: p.poll,
            socket,
            core_socket,
            peers: p.peers,
            handoff_rx: p.handoff_rx,
            control_rx: p.control_rx,
            returns_rx: p.returns_rx,
            persist_tx: p.persist_tx,
            registrar: p.registrar,
            guard: p.guard,
            shared_snapshot: p.shared_snapshot,
            opaque: p.opaque,
            owners: p.owners,
            ip_owners: p.ip_owners,
            desk: p.desk,
            core: p.core,
            cdr: p.cdr,
            cancel_routes: Default::default(),
            outs: Vec::new(),
            qualify: p.qualify,
            qualify_seq: 0,
            gateway_up: p.gateway_up,
            local: p.local,
            media: p.media,
            media_timeout_s: p.media_timeout_s,
            next_media_check_ms: now_ms,
            shutting_down_calls: false,
            adopt_request: false,
            adopt_for: None,
            slot_seen_ms: vec![0; owners::SLOTS].into_boxed_slice(),
            transport: Transport::Udp,
            snap,
            txns: ServerTransactions::new(MAX_TRANSACTIONS, TIMER_J_UDP_MS),
            hasher: TxnKeyHasher::default(),
            stats: WorkerStats::new(p.id),
            tx: SendBatch::new(),
            tx_core: SendBatch::new(),
            arrived: Port::Main,
            out: Vec::with_capacity(4096),
            pool: Vec::new(),
            wake_pending: 0,
            now_ms,
            last_timer_ms: now_ms,
            last_persist_ms: now_ms,
            shutting_down: false,
            backlogged: false,
            turn_received: 0,
            coalescer: Coalescer::new(p.coalesce),
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let me = self.peers[self.id].clone();
        let mut rx = RecvBatch::new();
        // mio registrations are edge-triggered: a socket is read until a receive batch comes back
        // short (then its queue was empty), and again only once `poll` reports it readable. An
        // idle socket thus costs no `recvmmsg` per loop turn.
        let (mut main_ready, mut core_ready) = (true, true);
        loop {
            self.now_ms = unix_now().as_millis() as u64;
            self.refresh_snapshot();
            self.drain_control();
            if self.shutting_down {
                break;
            }
            let more_handoffs = self.drain_handoffs();
            if main_ready {
                main_ready = self.drain_socket(&mut rx, Port::Main);
            }
            if core_ready {
                core_ready = self.drain_socket(&mut rx, Port::Core);
            }
            let more_socket = main_ready || core_ready;
            self.flush();
            // Timer J: a bounded slice per turn, so a busy worker never stalls on a backlog.
            let more_txns = self.txns.expire_some(self.now_ms, MAX_TXN_EXPIRY_PER_TURN);
            self.timers(false);

            // Coalesce, as a NIC moderates interrupts: under load, a turn finds several datagrams
            // queued, and parking now would wake again for the next single arrival. Each wake-up
            // costs an epoll_wait, a receive and a send batch, and a cold cache; sleeping a fixed
            // moment instead lets the socket fill, so one turn answers many (at 24k
            // registrations/s, 0.3 syscalls per registration instead of 1.9, a fifth less CPU;
            // RESULTS.md session 11). The price is at most `sip.coalesce_us` of added latency;
            // peers' hand-offs wait as long, as `parked` stays false. `Coalescer` says when.
            let received = std::mem::take(&mut self.turn_received);
            let busy = more_handoffs || more_socket || more_txns;
            if !busy {
                if let Next::Sleep(wait) = self.coalescer.after_turn(received) {
                    self.stats.coalesced += 1;
                    std::thread::sleep(wait);
                    (main_ready, core_ready) = (true, true);
                    continue;
                }
            }

            // Park. The flag tells peers to wake us; re-checking the channels after setting it
            // closes the race with a peer that pushed just before.
            me.parked.store(true, Ordering::SeqCst);
            let pending = !self.handoff_rx.is_empty() || !self.control_rx.is_empty();
            let timeout = if busy || pending {
                Duration::ZERO
            } else {
                let next_call = self
                    .desk
                    .poll_timeout()
                    .map_or(TIMER_PERIOD_MS, |at| at.saturating_sub(self.now_ms));
                Duration::from_millis(TIMER_PERIOD_MS.min(next_call).max(1))
            };
            let parked_at = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.id, "poll failed: {e}");
                }
                // Unknown readiness: read both sockets on the next turn.
                (main_ready, core_ready) = (true, true);
            }
            for ev in events.iter() {
                match ev.token() {
                    SOCKET => main_ready = true,
                    CORE_SOCKET => core_ready = true,
                    _ => {}
                }
            }
            me.parked.store(false, Ordering::SeqCst);
            if !(busy || pending) {
                self.coalescer.after_park(parked_at.elapsed());
            }
        }
        // Final persistence of what changed since the last tick.
        self.persist();
    }

    fn refresh_snapshot(&mut self) {
        let cur = self.shared_snapshot.load();
        if !Arc::ptr_eq(&cur, &self.snap) {
            self.snap = arc_swap::Guard::into_inner(cur);
            self.registrar.retain_provisioned(&self.snap);
        }
    }

    fn drain_control(&mut self) {
        while let Ok(c) = self.control_rx.try_recv() {
            match c {
                Control::Collect(reply) => {
                    self.stats.registrations_active = self.registrar.active_bindings() as u64;
                    self.stats.bans_active = self.guard.bans_active(self.now_ms) as u64;
                    self.stats.calls = self.desk.stats.clone();
                    let _ = reply.send(Box::new(self.stats.clone()));
                }
                Control::ListRegistrations(reply) => {
                    let now = self.now_ms;
                    let list = self
                        .registrar
                        .iter_bound()
                        .flat_map(|c| {
                            c.bindings
                                .iter()
                                .filter(move |b| b.expires_at_ms > now)
                                .map(move |b| super::RegistrationView {
                                    username: c.username.to_string(),
                                    realm: c.realm.to_string(),
                                    contact: b.contact.clone(),
                                    source: b.source.to_string(),
                                    transport: b.transport.as_str(),
                                    user_agent: b.user_agent.clone(),
                                    // whole seconds left, rounded down: never more
                                    // than was granted
                                    expires_in_s: b.expires_at_ms.saturating_sub(now) / 1000,
                                })
                        })
                        .collect();
                    let _ = reply.send(list);
                }
                Control::ListBans(reply) => {
                    let _ = reply.send(self.guard.bans(self.now_ms).copied().collect());
                }
                Control::ListCalls(reply) => {
                    let _ = reply.send(self.desk.calls.views().collect());
                }
                Control::HangUp(id, reply) => {
                    let found = self.desk.calls.find(&id);
                    if let Some(call) = found {
                        let mut outs = std::mem::take(&mut self.outs);
                        self.desk.calls.hang_up(
                            self.now_ms,
                            call,
                            crate::cdr::EndReason::Admin,
                            &mut outs,
                        );
                        self.desk.after(self.now_ms, &mut outs);
                        self.carry_out(&mut outs, Method::Bye, unix_now().as_nanos() as u64);
                        self.outs = outs;
                        self.flush();
                    }
                    let _ = reply.send(found.is_some());
                }
                Control::Drain => self.shutting_down_calls = true,
                Control::Shutdown => {
                    self.hang_up_all();
                    self.shutting_down = true
                }
            }
        }
    }

    fn drain_handoffs(&mut self) -> bool {
        for _ in 0..MAX_HANDOFFS_PER_TURN {
            let Ok(h) = self.handoff_rx.try_recv() else {
                return false;
            };
            match h {
                Handoff::Request {
                    data,
                    src,
                    arrived_ns,
                    from,
                    port,
                    adopt,
                } => {
                    self.arrived = port;
                    self.adopt_for = adopt.then_some(from);
                    self.on_datagram(&data, src, arrived_ns, true);
                    self.adopt_for = None;
                    // Give the buffer back to the worker that filled it.
                    let _ = self.peers[from].returns.try_send(data);
                }
                Handoff::Adopt(states) => self.registrar.adopt(states),
                Handoff::Security(ev) => self.on_security_event(ev),
                Handoff::Ban(ban) => self.guard.apply_ban(ban),
                Handoff::LiftBan(ip) => {
                    self.guard.lift_ban(ip);
                }
            }
            if self.tx.is_full() || self.tx_core.is_full() {
                self.flush();
            }
        }
        true
    }

    fn drain_socket(&mut self, rx: &mut RecvBatch, which: Port) -> bool {
        let fd = match which {
            Port::Main => self.socket.as_raw_fd(),
            Port::Core => self.core_socket.as_raw_fd(),
        };
        for _ in 0..MAX_RECV_BATCHES_PER_TURN {
            match rx.recv(fd) {
                Ok(0) => {
                    self.backlogged = false;
                    return false;
                }
                Ok(n) => {
                    self.turn_received += n;
                    let fallback_ns = unix_now().as_nanos() as u64;
                    for i in 0..n {
                        let d = rx.get(i);
                        if let Some(src) = d.src {
                            if d.truncated {
                                self.stats.messages += 1;
                                self.stats.malformed += 1;
                            } else {
                                self.arrived = which;
                                self.on_datagram(
                                    d.data,
                                    src,
                                    d.arrived_ns.unwrap_or(fallback_ns),
                                    false,
                                );
                            }
                        }
                        if self.tx.is_full() || self.tx_core.is_full() {
                            self.flush();
                        }
                    }
                    if which == Port::Main {
                        self.backlogged = n == super::udp::BATCH;
                    }
                    // Hand-offs wait for no more than one receive batch of our own.
                    self.drain_handoffs();
                    if n < super::udp::BATCH {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlogged = false;
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(worker = self.id, "recvmmsg failed: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// Everything a datagram goes through, in SPEC §3.2's order.
    fn on_datagram(&mut self, data: &[u8], src: SocketAddr, arrived_ns: u64, handed_over: bool) {
        // A fresh clock per message (vDSO, no syscall): a nonce minted late in a long loop turn,
        // or after the thread was descheduled, must still order after every nonce minted before
        // it on any worker (the registrar's nonce-count tracking relies on that order).
        self.now_ms = unix_now().as_millis() as u64;
        if !handed_over {
            if self.guard.is_banned(src.ip(), self.now_ms) {
                self.stats.dropped(DropReason::Banned);
                return;
            }
            // The core is trusted (SPEC §3.3) and carries every PBX's calls: not rate limited.
            if !self.guard.allow(src.ip(), self.now_ms) && !self.core.is_core(src.ip()) {
                self.stats.dropped(DropReason::SourceRate);
                return;
            }
        }
        self.stats.messages += 1;
        // Neither parse is moved out of a `Result`: for a ~1 KB `Message` or `RequestHeaders`
        // that is a memcpy per message.
        let mut scanned = Message::empty();
        let msg = match scan::scan_into(data, &mut scanned) {
            Ok(()) => &scanned,
            Err(_) => {
                self.stats.malformed += 1;
                self.answer_unparseable(data, src, arrived_ns);
                return;
            }
        };
        let StartLine::Request { method, uri, .. } = msg.start else {
            self.on_call_response(data, msg, src, arrived_ns, handed_over);
            return;
        };
        // A REGISTER's transaction lookup is a cache miss at a busy worker's table size: its
        // bucket starts loading now, and the parse below covers the wait.
        let early_via = match method {
            Method::Register => headers::top_via(msg).ok(),
            _ => None,
        };
        let early_key = early_via
            .as_ref()
            .and_then(|via| self.hasher.early_key(via, method));
        if let Some(key) = early_key {
            self.txns.prefetch(key);
        }
        let parsed = headers::request_headers_with(msg, early_via);
        let req = match &parsed {
            Ok(r) => r,
            Err(e) => {
                self.stats.malformed += 1;
                if let Ok(via) = headers::top_via(msg) {
                    self.stats.request(method);
                    self.bad_request(msg, &via, src, arrived_ns, method, e);
                }
                return;
            }
        };
        if !handed_over {
            self.stats.request(method);
            if let Some(ua) = msg.header(HeaderName::UserAgent) {
                if self.guard.is_scanner(ua) {
                    self.stats.dropped(DropReason::Scanner);
                    return;
                }
            }
        }
        match method {
            Method::Register => {
                // Only authenticated REGISTERs touch shard state; a challenge needs nothing but
                // the stateless nonce key, so an unhurried receiving worker answers it itself
                // (no hand-off, no wake-up). A backlogged one (its last receive batch was full:
                // one big source, or a flood) spreads challenges over their shards too, so a
                // single source still gets every core.
                let account = AccountKey::of_register(req, &self.snap);
                let authenticated = msg.header(HeaderName::Authorization).is_some();
                let owner_slot =
                    (authenticated || self.backlogged).then(|| owners::slot_of(account.key()));
                self.warm_register(&account, owner_slot, authenticated);
                if let Some(slot) = owner_slot {
                    let (owner, adopt) = self.register_owner(&account, slot);
                    // A request handed over here before its slot moved on follows the slot.
                    if owner != self.id {
                        self.adopt_request = adopt && !handed_over;
                        self.hand_over(owner, data, src, arrived_ns);
                        self.adopt_request = false;
                        return;
                    }
                    if !handed_over {
                        self.slot_seen_ms[slot] = self.now_ms as u32;
                    }
                }
                let key = early_key.unwrap_or_else(|| self.hasher.key(req, uri));
                debug_assert_eq!(key, self.hasher.key(req, uri));
                self.on_register(msg, req, key, src, arrived_ns, &account);
                if let Some(to) = self.adopt_for.take() {
                    self.give_slot(&account, to);
                }
            }
            Method::Invite if req.to.tag.is_none() => {
                self.on_invite(data, msg, req, uri, src, arrived_ns, handed_over)
            }
            Method::Options if req.to.tag.is_none() => {
                self.answer_plain(msg, req, uri, src, arrived_ns, 200)
            }
            //= https://www.rfc-editor.org/rfc/rfc3261#section-15.1.2
            //# If the BYE does not match an existing dialog, the UAS core SHOULD generate a 481
            //# (Call/Transaction Does Not Exist) response
            // (and likewise a CANCEL matching no transaction, §9.2): `on_call_request` does.
            Method::Cancel => {
                self.on_call_request(data, msg, req, uri, src, arrived_ns, handed_over)
            }
            _ if req.to.tag.is_some() => {
                self.on_call_request(data, msg, req, uri, src, arrived_ns, handed_over)
            }
            Method::Ack => {}
            Method::Bye => self.answer_plain(msg, req, uri, src, arrived_ns, 481),
            _ => self.answer_plain(msg, req, uri, src, arrived_ns, 501),
        }
    }

    /// The worker holding the state of this credential (in owner slot `slot`), and whether to
    /// ask it for the slot. A credential nobody owns yet becomes this worker's (its PBX's
    /// traffic lands here), unless this worker is backlogged: then it goes to its home shard, so
    /// one big source still spreads its credentials over every core. A slot follows its PBX's
    /// traffic to the worker it lands on (a restart restored it elsewhere, a NAT rebinding moved
    /// the PBX's 4-tuple), unless this worker is backlogged.
    fn register_owner(&self, account: &AccountKey, slot: usize) -> (usize, bool) {
        let key = account.key();
        match self.owners.lookup_slot(slot) {
            Owner::Worker(w) | Owner::Restored(w) => (w, w != self.id && !self.backlogged),
            Owner::Unclaimed => {
                let claimant = if self.backlogged {
                    registrar::shard_of(key, self.peers.len())
                } else {
                    self.id
                };
                (self.owners.owner_or_claim(key, claimant), false)
            }
        }
    }

    /// An authenticated REGISTER reads its owner slot, its credential (key, HA1s, username) and
    /// its registration state: cold lines at an edge server's table sizes, each lookup's miss
    /// waiting for the one before when taken in turn (a fifth of a registration's user time in
    /// a profile under sipp). Here they are asked for together. The owner slot and the
    /// credential are prefetches (the credential through its cached slot table); the state is a
    /// lookup in the registrar's index, which waits, then prefetches of the state's lines. The
    /// owner check, the transaction lookup and the digest cover the rest. A challenge reads the
    /// credential alone.
    fn warm_register(&self, account: &AccountKey, owner_slot: Option<usize>, state: bool) {
        if let Some(slot) = owner_slot {
            self.owners.prefetch(slot);
        }
        self.snap.credentials.prefetch(account.key());
        if state {
            self.registrar.prefetch(account.key());
        }
    }

    /// Worker `to` asked for this request's slot: its states go there first (through the
    /// hand-off channel, so they precede anything handed on later), then the slot. A slot
    /// restored here at start goes at once; one this worker claimed goes once its own socket has
    /// carried none of the slot's REGISTERs for [`SLOT_QUIET_MS`] (two PBXs sharing a credential
    /// from different workers then move it at most once per registration, not per message),
    /// and never while one of its accounts has calls up here (their limits live here).
    fn give_slot(&mut self, account: &AccountKey, to: usize) {
        let slot = owners::slot_of(account.key());
        let movable = match self.owners.lookup_slot(slot) {
            Owner::Restored(w) => w == self.id,
            Owner::Worker(w) => {
                w == self.id
                    && (self.now_ms as u32).wrapping_sub(self.slot_seen_ms[slot]) >= SLOT_QUIET_MS
            }
            Owner::Unclaimed => false,
        };
        if !movable
            || to >= self.peers.len()
            || self
                .registrar
                .slot_keys(slot)
                .any(|k| self.desk.has_calls(k))
        {
            return;
        }
        let states = self.registrar.take_slot(slot);
        if self.peers[to]
            .handoff
            .send_timeout(Handoff::Adopt(states), Duration::from_millis(100))
            .is_err()
        {
            // The states are lost to `to`; the slot stays here, empty, and refills on the
            // PBX's next registrations. Cannot happen short of a stuck worker.
            tracing::error!(worker = self.id, to, "could not hand a slot over");
            return;
        }
        self.wake_pending |= 1 << (to % 64);
        self.owners.move_slot(slot, self.id, to);
    }

    /// The To-tag of our answers: derived from the transaction key, so a retransmission gets
    /// the same one.
    fn to_tag(k: u64) -> [u8; 16] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = HEX[((k >> ((15 - i) * 4)) & 0xf) as usize];
        }
        out
    }

    fn on_register(
        &mut self,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        key: TxnKey,
        src: SocketAddr,
        arrived_ns: u64,
        account: &AccountKey,
    ) {
        let tag = Self::to_tag(key.low());
        let answer = match self.txns.lookup(key) {
            Some(Recipe::Register(a)) => a,
            Some(Recipe::Plain(code)) => {
                self.reply_plain(code, msg, req, src, &tag, arrived_ns);
                return;
            }
            // A REGISTER reusing an INVITE's transaction key: not a retransmission of it.
            Some(Recipe::Refused(_) | Recipe::ProxyChallenge(_)) => return,
            None => {
                let (answer, effects) = self.registrar.handle_register_for(
                    self.now_ms,
                    src,
                    self.transport,
                    msg,
                    req,
                    &self.snap,
                    account,
                );
                self.txns
                    .complete(key, Recipe::Register(answer), self.now_ms);
                if let Some(r) = effects.rejected {
                    self.stats.rejected(r);
                }
                if effects.auth_failure {
                    self.security_event(SecurityEvent::AuthFailure {
                        ip: src.ip(),
                        at_ms: self.now_ms,
                    });
                }
                if effects.throttled {
                    self.security_event(SecurityEvent::Throttled {
                        ip: src.ip(),
                        at_ms: self.now_ms,
                    });
                }
                answer
            }
        };
        write_answer(
            &mut self.out,
            &answer,
            &self.registrar,
            msg,
            req,
            account.realm(),
            src,
            &tag,
            &self.opaque,
            self.now_ms,
        );
        self.send(
            response_destination(src, &req.via),
            Method::Register,
            arrived_ns,
            answer.code(),
        );
    }

    fn answer_plain(
        &mut self,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        uri: &[u8],
        src: SocketAddr,
        arrived_ns: u64,
        code: u16,
    ) {
        let key = self.hasher.key(req, uri);
        let tag = Self::to_tag(key.low());
        if self.txns.lookup(key).is_none() {
            self.txns.complete(key, Recipe::Plain(code), self.now_ms);
        }
        self.reply_plain(code, msg, req, src, &tag, arrived_ns);
    }

    /// A response with no headers of its own beyond the copied ones.
    fn reply_plain(
        &mut self,
        code: u16,
        msg: &Message<'_>,
        req: &RequestHeaders<'_>,
        src: SocketAddr,
        tag: &[u8],
        arrived_ns: u64,
    ) {
        write_plain(
            &mut self.out,
            code,
            crate::sip::write::reason(code),
            msg,
            src,
            tag,
        );
        self.send(
            response_destination(src, &req.via),
            req.method,
            arrived_ns,
            code,
        );
    }

    fn bad_request(
        &mut self,
        msg: &Message<'_>,
        via: &headers::Via<'_>,
        src: SocketAddr,
        arrived_ns: u64,
        method: Method,
        err: &headers::HeaderError,
    ) {
        use std::io::Write as _;
        crate::sip::write::response_head(&mut self.out, 400, "Bad Request", msg, src, b"");
        let _ = write!(self.out, "Warning: 399 sipedge \"{err}\"\r\n");
        crate::sip::write::finish(&mut self.out);
        self.send(response_destination(src, via), method, arrived_ns, 400);
    }

    /// The start line or framing is broken; answer 400 only if a Via can be salvaged.
    fn answer_unparseable(&mut self, data: &[u8], src: SocketAddr, arrived_ns: u64) {
        let Some(msg) = salvage(data) else { return };
        let Ok(via) = headers::top_via(&msg) else {
            return;
        };
        crate::sip::write::response_head(&mut self.out, 400, "Bad Request", &msg, src, b"");
        crate::sip::write::finish(&mut self.out);
        self.send(
            response_destination(src, &via),
            Method::Other,
            arrived_ns,
            400,
        );
    }

    /// Queues `self.out` to `dest` (see `write::response_destination`).
    fn send(&mut self, dest: SocketAddr, method: Method, arrived_ns: u64, code: u16) {
        self.stats.response(code);
        let out = std::mem::take(&mut self.out);
        self.push_send(&out, dest, self.arrived, SendMeta { method, arrived_ns });
        self.out = out;
    }

    /// Queues a datagram on the batch of socket `port`, flushing first if that batch is full.
    fn push_send(&mut self, bytes: &[u8], dest: SocketAddr, port: Port, meta: SendMeta) {
        let full = match port {
            Port::Main => self.tx.is_full(),
            Port::Core => self.tx_core.is_full(),
        };
        if full {
            self.flush();
        }
        match port {
            Port::Main => self.tx.push(bytes, dest, meta),
            Port::Core => self.tx_core.push(bytes, dest, meta),
        }
    }

    fn flush(&mut self) {
        for port in [Port::Main, Port::Core] {
            let (tx, fd) = match port {
                Port::Main => (&mut self.tx, self.socket.as_raw_fd()),
                Port::Core => (&mut self.tx_core, self.core_socket.as_raw_fd()),
            };
            if tx.is_empty() {
                continue;
            }
            let f = tx.flush(fd);
            let dropped = f.dropped;
            let now_ns = unix_now().as_nanos() as u64;
            for m in f.meta {
                self.stats
                    .processing(m.method, now_ns.saturating_sub(m.arrived_ns));
            }
            tx.clear_meta();
            for _ in 0..dropped {
                self.stats.dropped(DropReason::Overload);
            }
        }
        self.wake_peers();
    }

    fn hand_over(&mut self, owner: usize, data: &[u8], src: SocketAddr, arrived_ns: u64) {
        while let Ok(b) = self.returns_rx.try_recv() {
            if self.pool.len() < 4096 {
                self.pool.push(b);
            }
        }
        let mut buf = self.pool.pop().unwrap_or_else(|| Vec::with_capacity(2048));
        buf.clear();
        buf.extend_from_slice(data);
        match self.peers[owner].handoff.try_send(Handoff::Request {
            data: buf,
            src,
            arrived_ns,
            from: self.id,
            port: self.arrived,
            adopt: self.adopt_request,
        }) {
            Ok(()) => {
                self.stats.handoffs += 1;
                self.wake_pending |= 1 << (owner % 64)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped(DropReason::Overload)
            }
        }
    }

    fn wake_peers(&mut self) {
        if self.wake_pending == 0 {
            return;
        }
        for (i, p) in self.peers.iter().enumerate() {
            if self.wake_pending & (1 << (i % 64)) != 0 && p.parked.load(Ordering::SeqCst) {
                let _ = p.waker.wake();
            }
        }
        self.wake_pending = 0;
    }

    /// Ban counters live on the IP's owner worker; the ban itself goes to everyone.
    fn security_event(&mut self, ev: SecurityEvent) {
        // The first worker to count a failure from this IP owns its counters: a source that keeps
        // its 4-tuple is counted and banned by the worker it lands on, at once.
        let owner = match ev.ip() {
            std::net::IpAddr::V4(v4) => self.ip_owners.owner_or_claim(&v4.octets(), self.id),
            std::net::IpAddr::V6(v6) => self.ip_owners.owner_or_claim(&v6.octets(), self.id),
        };
        if owner == self.id {
            self.on_security_event(ev);
        } else if self.peers[owner]
            .handoff
            .try_send(Handoff::Security(ev))
            .is_ok()
        {
            self.wake_pending |= 1 << (owner % 64);
        }
    }

    fn on_security_event(&mut self, ev: SecurityEvent) {
        let ban = match ev {
            SecurityEvent::AuthFailure { ip, at_ms } => self.guard.record_auth_failure(ip, at_ms),
            SecurityEvent::Throttled { ip, at_ms } => self.guard.record_throttle(ip, at_ms),
        };
        if let Some(ban) = ban {
            tracing::warn!(ip = %ban.ip, reason = ban.reason.as_str(), seconds = self.guard.config().ban_s, "source banned");
            self.broadcast_ban(ban);
        }
    }

    fn broadcast_ban(&mut self, ban: Ban) {
        for i in 0..self.peers.len() {
            if i != self.id && self.peers[i].handoff.try_send(Handoff::Ban(ban)).is_ok() {
                self.wake_pending |= 1 << (i % 64);
            }
        }
    }

    /// SPEC §5: calls still up at shutdown get BYE on both legs (CDR `shutdown`).
    fn hang_up_all(&mut self) {
        let mut outs = std::mem::take(&mut self.outs);
        for call in self.desk.calls.live_ids() {
            self.desk.calls.hang_up(
                self.now_ms,
                call,
                crate::cdr::EndReason::Shutdown,
                &mut outs,
            );
        }
        self.desk.after(self.now_ms, &mut outs);
        self.carry_out(&mut outs, Method::Bye, unix_now().as_nanos() as u64);
        self.outs = outs;
        self.flush();
    }

    fn timers(&mut self, force: bool) {
        self.call_timers_if_due();
        if !force && self.now_ms.saturating_sub(self.last_timer_ms) < TIMER_PERIOD_MS {
            return;
        }
        self.call_timers();
        self.last_timer_ms = self.now_ms;
        self.registrar.expire(self.now_ms);
        self.guard.sweep(self.now_ms, false);
        if self.now_ms.saturating_sub(self.last_persist_ms) >= PERSIST_PERIOD_MS {
            self.last_persist_ms = self.now_ms;
            self.persist();
        }
    }

    /// Sends the credentials whose bindings changed to the persister thread (one batch a second).
    fn persist(&mut self) {
        let mut batch: PersistBatch = Vec::new();
        self.registrar.drain_dirty(|d| {
            let rows = d
                .bindings
                .iter()
                .map(|b| crate::store::BindingRow {
                    username: d.username.to_string(),
                    realm: d.realm.to_string(),
                    contact: b.contact.clone(),
                    source_ip: b.source.ip().to_string(),
                    source_port: b.source.port(),
                    transport: b.transport.as_str().to_string(),
                    user_agent: b.user_agent.clone(),
                    call_id: b.call_id.clone(),
                    cseq: b.cseq,
                    registered_at_unix: b.registered_at_ms / 1000,
                    expires_at_unix: b.expires_at_ms.div_ceil(1000),
                })
                .collect();
            batch.push((d.username.to_string(), d.realm.to_string(), rows));
        });
        if !batch.is_empty() && self.persist_tx.send(batch).is_err() {
            tracing::error!(
                worker = self.id,
                "binding persister is gone; bindings will not survive a restart"
            );
        }
    }
}

impl SecurityEvent {
    fn ip(&self) -> std::net::IpAddr {
        match *self {
            SecurityEvent::AuthFailure { ip, .. } | SecurityEvent::Throttled { ip, .. } => ip,
        }
    }
}

/// A lenient pass over a message whose start line or framing failed: keeps the header lines that
/// look like `Name: value`, so a 400 can still echo Via, From, To, Call-ID and CSeq.
///
/// A message that starts like a response is never answered, however broken (RFC 3261 §8.1.3.1:
/// a malformed response is discarded).
fn salvage(data: &[u8]) -> Option<Message<'_>> {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    if data[start..].len() >= 4 && data[start..start + 4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let mut headers: SmallVec<[Header<'_>; scan::INLINE_HEADERS]> = SmallVec::new();
    let mut lines = data.split(|&b| b == b'\n').skip(1);
    for line in lines.by_ref().take(scan::MAX_HEADERS) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = crate::sip::write::trim(&line[..colon]);
        let value = crate::sip::write::trim(&line[colon + 1..]);
        let hn = HeaderName::parse(name);
        if matches!(
            hn,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            headers.push(Header {
                name: hn,
                raw_name: name,
                value,
            });
        }
    }
    if headers.is_empty() {
        return None;
    }
    Some(Message {
        start: StartLine::Response {
            code: 0,
            reason: b"",
        },
        headers,
        body: &[],
        len: data.len(),
    })
}
#[cfg(test)]
mod tests {
    use crate::sip::transaction::TxnKey;

    /// At tens of thousands of requests a second a worker remembers a million transactions
    /// (Timer J is 32 s): each byte of an entry is a megabyte of memory touched.
    #[test]
    fn a_remembered_transaction_stays_small() {
        assert!(std::mem::size_of::<(TxnKey, super::Recipe)>() <= 56);
    }
}
