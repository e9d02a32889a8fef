//! One media thread: the sockets of the blocks it owns, and the packet path between them.
//!
//! Packets arrive on the thread's steered socket (every port of its blocks, `steer`), or, where
//! steering is unavailable, on each port's own socket. Either is drained with `recvmmsg` into a
//! ring of buffers; each packet is checked against its leg's latch and counted, and what passes
//! is queued for the other leg's port. At the end of the loop turn the queue leaves from the
//! same buffers (no copy, no allocation): steered, IPv4 packets leave through one raw socket in
//! one `sendmmsg` (`raw`); otherwise each packet leaves through its port's socket, as io_uring
//! SENDMSG entries in one submission for the whole turn or, where io_uring is unavailable (an
//! old kernel, a seccomp profile, `io_uring_disabled`), one `sendmmsg` per socket. With a socket
//! per port a packet rarely shares a syscall with another on the same socket, so batching
//! across sockets is what saves syscalls (perf/RESULTS.md).
//! A packet's port (its original destination on the steered socket, the token of a port's own
//! socket) minus the range's base is its block and leg: the session is an index away.

use super::raw::RawSender;
use super::steer::Steering;
use super::xdp::{self, Xdp, Xsk};
use super::{Command, Leg, Shared, BLOCK_PORTS, LATCH_WINDOW_MS};
use crossbeam_channel::Receiver;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::SockAddr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const WAKER: Token = Token(usize::MAX);
const OWN: Token = Token(usize::MAX - 1);
const TICKER: Token = Token(usize::MAX - 2);
/// AF_XDP socket `k` is `Token(XSK - k)`.
const XSK: usize = usize::MAX - 3;
/// Frames taken from an AF_XDP socket's RX ring at a time; between two, the transmit is kicked
/// and lent frames come back.
const XSK_BATCH: u32 = 64;
/// Batches from each AF_XDP socket per loop turn before commands are looked at again.
const XSK_BATCHES: usize = 64;
const BATCH: usize = 32;
/// Buffers held by one loop turn's packets until they are sent.
const RING: usize = 256;
/// Room for one IP(V6)_ORIGDSTADDR control message (a sockaddr_in6 in a cmsghdr).
const CTRL_WORDS: usize = 8;
/// RTP over UDP stays well under this; a larger datagram is truncated and still relayed.
const MAX_PACKET: usize = 2048;
/// Batches per socket per readiness event, so one busy socket cannot starve the others.
const MAX_BATCHES: usize = 8;
/// Batches from the steered socket per loop turn before commands are looked at again.
const STEERED_BATCHES: usize = 64;

/// Where one endpoint's packets come from and go to (one per leg and per RTP/RTCP).
#[derive(Clone, Copy, Default)]
struct Latch {
    /// From its SDP.
    signalled: Option<SocketAddr>,
    /// The source its packets come from, once seen.
    latched: Option<SocketAddr>,
    /// Until then any source is taken (the newest wins): SDP just changed.
    open_until_ms: u64,
    /// The local address this endpoint's packets were sent to (steered sockets tell): where
    /// packets to it come from, as the endpoint expects on a host with several addresses.
    local: Option<std::net::IpAddr>,
    /// The MAC address the latched source's frames came from, when they came through AF_XDP:
    /// the next hop toward it, so frames to it can leave the same way (`xdp`).
    mac: Option<[u8; 6]>,
}

impl Latch {
    /// SPEC §3.8: accept the signalled IP, or any source within the window after the SDP
    /// changed (the newest wins); after that only the latched source.
    fn admit(&mut self, src: SocketAddr, now_ms: u64) -> bool {
        if now_ms < self.open_until_ms {
            self.latch(src);
            return true;
        }
        match self.latched {
            Some(l) => l == src,
            None if self.signalled.is_some_and(|s| s.ip() == src.ip()) => {
                self.latch(src);
                true
            }
            None => false,
        }
    }

    /// A new source forgets the next hop learned for the old one.
    fn latch(&mut self, src: SocketAddr) {
        if self.latched != Some(src) {
            self.latched = Some(src);
            self.mac = None;
        }
    }

    /// Where packets for this endpoint go.
    fn dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.signalled)
    }
}

/// One block's sockets and latches: index 0/1 = leg A RTP/RTCP, 2/3 = leg B RTP/RTCP.
struct Session {
    /// None when the block needs none: steered in, sent raw (see [`Relay::open`]).
    sockets: Option<[UdpSocket; 4]>,
    latches: [Latch; 4],
    /// False while the block is free (its sockets stay bound for its next call): what arrives
    /// is drained and dropped.
    active: bool,
    /// The io_uring fixed-file slot of socket 0 (1–3 follow), where registered: a send then
    /// skips the descriptor lookup.
    fixed: Option<u32>,
}

/// A thread's own socket, on one of the range's top ports, and the steering that feeds it
/// every port of the thread's blocks (None: each block's sockets are polled; the thread's socket
/// then only holds its port, and what reaches it is drained and counted). With XDP, also the
/// AF_XDP sockets of the interface queues the thread serves.
pub struct ThreadSocket {
    socket: UdpSocket,
    steering: Option<Arc<Steering>>,
    xdp: Option<(Arc<Xdp>, Vec<Xsk>)>,
}

impl ThreadSocket {
    pub fn new(
        socket: socket2::Socket,
        steering: Option<Arc<Steering>>,
        xdp: Option<(Arc<Xdp>, Vec<Xsk>)>,
    ) -> ThreadSocket {
        ThreadSocket {
            socket: UdpSocket::from_std(socket.into()),
            steering,
            xdp,
        }
    }
}

pub struct Relay {
    poll: Poll,
    /// This thread's index among the media threads, and how many there are.
    thread: u32,
    threads: u32,
    own: ThreadSocket,
    /// The thread's socket was left with packets queued: read it again without waiting.
    backlog: bool,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    /// Indexed by block; only this thread's blocks are ever Some.
    sessions: Vec<Option<Session>>,
    batch: Batch,
    /// Set while the thread sleeps with no session active: only then does a command wake it.
    parked: Arc<AtomicBool>,
    /// Sessions open.
    active: usize,
    /// AF_XDP sockets of the interface queues this thread serves (`xdp`); empty without XDP.
    xsks: Vec<Xsk>,
    /// An AF_XDP socket was left with frames ready: read again without waiting.
    xsk_backlog: bool,
    /// The next hop of every endpoint when the XDP interface is a loopback one (all MACs zero);
    /// None: learned per endpoint from its frames.
    any_next_hop: Option<[u8; 6]>,
    /// The XDP interface's MAC address: what frames for us are sent to, and relayed ones from.
    own_mac: [u8; 6],
    /// The XDP program stays attached while a thread holds it.
    _xdp: Option<Arc<Xdp>>,
    /// Wakes the thread every [`TICK`] while calls are up (None: the poll times out instead).
    ticker: Option<Ticker>,
}

/// A periodic timerfd in the thread's poll, running while calls are up.
///
/// Why not a poll timeout: each `epoll_wait` with a timeout arms and cancels a timer of its own,
/// at every sleep (4× the `hrtimer_start` calls at 50k packets/s, RESULTS.md session 10). A
/// periodic timer is armed once, whatever the packets do.
struct Ticker {
    fd: std::os::fd::OwnedFd,
    running: bool,
}

impl Ticker {
    fn new(poll: &Poll) -> io::Result<Ticker> {
        // SAFETY: timerfd_create(2); the descriptor is owned at once.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned by timerfd_create.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            TICKER,
            Interest::READABLE,
        )?;
        Ok(Ticker { fd, running: false })
    }

    /// Runs (every [`TICK`]) or stops the timer; a syscall only when that changes.
    fn run(&mut self, on: bool) {
        if on == self.running {
            return;
        }
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: if on {
                TICK.as_nanos() as libc::c_long
            } else {
                0
            },
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        // SAFETY: a valid itimerspec on our timerfd; the old value is not asked for.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            == 0
        {
            self.running = on;
        }
    }

    /// Takes the expirations counted so far (the timer fired).
    fn clear(&self) {
        let mut n = 0u64;
        // SAFETY: an 8-byte read into n from our non-blocking timerfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

/// How late a command may be picked up while calls are up: a new call's ports open within
/// this (its RTP follows the answer, normally seconds later).
const TICK: Duration = Duration::from_millis(5);
const IDLE_SLEEP: Duration = Duration::from_millis(500);

impl Relay {
    pub fn new(
        poll: Poll,
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        parked: Arc<AtomicBool>,
        thread: u32,
        threads: u32,
        mut own: ThreadSocket,
    ) -> io::Result<Relay> {
        let blocks = shared.blocks as usize;
        let mut batch = Batch::new(true);
        // Room for the sockets of every block this thread owns (block / threads, four each).
        batch.use_fixed_files(shared.blocks.div_ceil(threads) * u32::from(BLOCK_PORTS));
        poll.registry()
            .register(&mut own.socket, OWN, Interest::READABLE)?;
        if own.steering.is_some() {
            // With ports steered, sends leave through one raw socket as well (IPv4).
            match shared.bind {
                std::net::IpAddr::V4(v4) => batch.use_raw_sender(v4),
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                    batch.use_raw_sender(std::net::Ipv4Addr::UNSPECIFIED)
                }
                std::net::IpAddr::V6(_) => {}
            }
            if batch.raw.is_some() {
                shared.raw_sends.store(true, Ordering::Relaxed);
            }
        }
        // AF_XDP frames whose next hop is not known yet leave through the raw sender: without
        // one (or without blocks that need no sockets) the queues stay with the kernel.
        let mut xsks = Vec::new();
        let mut any_next_hop = None;
        let mut own_mac = [0; 6];
        let mut attached = None;
        if let Some((xdp, sockets)) = own.xdp.take() {
            any_next_hop = xdp.loopback.then_some([0; 6]);
            own_mac = xdp.mac;
            let usable = batch.raw.is_some() && shared.bind.is_ipv4();
            for mut xsk in sockets {
                let served = usable
                    && poll
                        .registry()
                        .register(
                            &mut mio::unix::SourceFd(&xsk.fd()),
                            Token(XSK - xsks.len()),
                            Interest::READABLE,
                        )
                        .is_ok()
                    && xdp.serve(xsk.queue, &xsk).is_ok();
                if served {
                    xsk.kick();
                    xsks.push(xsk);
                    shared.xdp_queues.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = xdp.unserve(xsk.queue);
                    tracing::warn!(
                        queue = xsk.queue,
                        "media queue left to the kernel: no raw sender"
                    );
                }
            }
            attached = Some(xdp);
        }
        Ok(Relay {
            poll,
            thread,
            threads,
            own,
            backlog: false,
            shared,
            commands,
            sessions: (0..blocks).map(|_| None).collect(),
            batch,
            parked,
            active: 0,
            xsks,
            xsk_backlog: false,
            any_next_hop,
            own_mac,
            _xdp: attached,
            ticker: None,
        })
        .map(|mut r| {
            r.ticker = Ticker::new(&r.poll)
                .map_err(|e| tracing::debug!("no timerfd ({e}): media polls with a timeout"))
                .ok();
            r
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            if !self.drain_commands() {
                break;
            }
            // Park; re-checking the queue after setting the flag closes the race with a sender
            // that looked just before.
            // With calls up, commands wait for the next tick (at most TICK): no wake-up per
            // command from the signalling workers. Idle, the thread sleeps long and asks to be
            // woken; re-checking the queue after setting the flag closes the race with a sender
            // that looked just before.
            if let Some(t) = self.ticker.as_mut() {
                t.run(self.active > 0);
            }
            let timeout = if !self.commands.is_empty() || self.backlog || self.xsk_backlog {
                Some(Duration::ZERO)
            } else if self.active > 0 {
                // The ticker wakes the thread within TICK.
                self.ticker.is_none().then_some(TICK)
            } else {
                self.parked.store(true, Ordering::SeqCst);
                if self.commands.is_empty() {
                    Some(IDLE_SLEEP)
                } else {
                    Some(Duration::ZERO)
                }
            };
            let polled = self.poll.poll(&mut events, timeout);
            self.parked.store(false, Ordering::SeqCst);
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("media poll failed: {e}");
                }
                continue;
            }
            let now_ms = crate::runtime::worker::unix_now().as_millis() as u64;
            let mut steered = std::mem::take(&mut self.backlog);
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    TICKER => {
                        if let Some(t) = &self.ticker {
                            t.clear();
                        }
                    }
                    OWN => steered = true,
                    Token(t) if t > XSK - self.xsks.len() && t <= XSK => {}
                    Token(t) => {
                        self.relay(t / BLOCK_PORTS as usize, t % BLOCK_PORTS as usize, now_ms)
                    }
                }
            }
            if steered {
                self.backlog = self.relay_steered(now_ms);
            }
            self.batch.flush();
            // Every turn: an empty RX ring costs one load to find out.
            self.xsk_backlog = false;
            for k in 0..self.xsks.len() {
                self.xsk_backlog |= self.relay_xsk(k, now_ms);
            }
        }
    }

    /// False on Shutdown.
    fn drain_commands(&mut self) -> bool {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Open { block } => self.open(block),
                Command::Remote {
                    block,
                    leg,
                    rtp,
                    at_ms,
                } => {
                    if let Some(s) = self
                        .sessions
                        .get_mut(block as usize)
                        .and_then(Option::as_mut)
                    {
                        let i = match leg {
                            Leg::A => 0,
                            Leg::B => 2,
                        };
                        let rtcp = rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)));
                        for (j, addr) in [(i, rtp), (i + 1, rtcp)] {
                            s.latches[j].signalled = addr;
                            s.latches[j].open_until_ms = at_ms + LATCH_WINDOW_MS;
                        }
                    }
                }
                Command::Close { block } => self.close(block),
                Command::Shutdown => return false,
            }
        }
        true
    }

    /// Ends a block's session; its sockets stay bound for the block's next call.
    fn close(&mut self, block: u32) {
        if let Some(Some(s)) = self.sessions.get_mut(block as usize) {
            if s.active {
                self.active -= 1;
            }
            s.active = false;
            s.latches = [Latch::default(); 4];
        }
    }

    fn open(&mut self, block: u32) {
        // A block used before: its sockets are bound and registered already.
        if let Some(Some(s)) = self.sessions.get_mut(block as usize) {
            if !s.active {
                self.active += 1;
            }
            s.active = true;
            s.latches = [Latch::default(); 4];
            return;
        }
        // Steered in and every send raw (an IPv4 media address): the block needs no sockets of
        // its own, owning it in the steering map is all. Its ports are the range's, sipedge's:
        // nobody else's socket on one of them gets its packets while the block is owned.
        let portless = self.batch.raw.is_some() && self.shared.bind.is_ipv4();
        if let Some(steering) = self.own.steering.as_ref().filter(|_| portless) {
            match steering.own(block, self.thread) {
                Ok(()) => {
                    self.insert(
                        block,
                        Session {
                            sockets: None,
                            latches: [Latch::default(); 4],
                            active: true,
                            fixed: None,
                        },
                    );
                    return;
                }
                Err(e) => tracing::warn!(block, "media steering refused a block: {e}"),
            }
        }
        let first = self.shared.base + (block * u32::from(BLOCK_PORTS)) as u16;
        let bind = |i: u16| -> io::Result<UdpSocket> {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(SocketAddr::new(self.shared.bind, 0)),
                socket2::Type::DGRAM,
                None,
            )?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::new(self.shared.bind, first + i).into())?;
            Ok(UdpSocket::from_std(s.into()))
        };
        let mut sockets = match (bind(0), bind(1), bind(2), bind(3)) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => [a, b, c, d],
            _ => {
                // Somebody else holds one of these ports: the call goes on without media; the
                // block's next call tries again.
                tracing::warn!(block, port = first, "media ports in use by another process");
                return;
            }
        };
        let slot = block / self.threads * u32::from(BLOCK_PORTS);
        let fixed = sockets
            .iter()
            .enumerate()
            .all(|(i, sock)| self.batch.fix(slot + i as u32, sock.as_raw_fd()))
            .then_some(slot);
        // Steered, the block's sockets hold its ports and send what the raw sender does not
        // (IPv6); should the map refuse the block, they are polled as well.
        let owned = !portless
            && self.own.steering.as_ref().is_some_and(|steering| {
                steering
                    .own(block, self.thread)
                    .map_err(|e| tracing::warn!(block, "media steering refused a block: {e}"))
                    .is_ok()
            });
        let token = block as usize * BLOCK_PORTS as usize;
        for (i, sock) in sockets.iter_mut().enumerate().filter(|_| !owned) {
            if let Err(e) =
                self.poll
                    .registry()
                    .register(sock, Token(token + i), Interest::READABLE)
            {
                tracing::warn!(block, "media socket registration failed: {e}");
            }
        }
        self.insert(
            block,
            Session {
                sockets: Some(sockets),
                latches: [Latch::default(); 4],
                active: true,
                fixed,
            },
        );
    }

    fn insert(&mut self, block: u32, s: Session) {
        if let Some(slot) = self.sessions.get_mut(block as usize) {
            *slot = Some(s);
            self.active += 1;
        }
    }

    /// Drains socket `idx` of `block`, relaying what its latch admits to the other leg.
    fn relay(&mut self, block: usize, idx: usize, now_ms: u64) {
        let Some(Some(s)) = self.sessions.get_mut(block) else {
            return;
        };
        let Some(sockets) = &s.sockets else {
            return;
        };
        // A (0, 1) <-> B (2, 3), RTP to RTP, RTCP to RTCP.
        let out = idx ^ 2;
        let counters = &self.shared.counters[block];
        let stats = &self.shared.stats;
        if !s.active {
            // A free block: late packets of its last call, or a scan. Drained, counted.
            for _ in 0..MAX_BATCHES {
                match self.batch.recv(sockets[idx].as_raw_fd()) {
                    Ok((_, n)) => {
                        stats
                            .dropped_no_session
                            .fetch_add(n as u64, Ordering::Relaxed);
                        if n < BATCH {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            return;
        }
        for _ in 0..MAX_BATCHES {
            let (first, n) = match self.batch.recv(sockets[idx].as_raw_fd()) {
                Ok(r) => r,
                Err(_) => return,
            };
            let dest = s.latches[out].dest();
            let mut keep = 0;
            let mut kept_bytes = 0u64;
            for i in first..first + n {
                let Some(src) = self.batch.source(i) else {
                    continue;
                };
                if !s.latches[idx].admit(src, now_ms) {
                    stats.dropped_stray.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                kept_bytes += self.batch.len(i) as u64;
                self.batch.keep(i);
                keep += 1;
            }
            if keep > 0 {
                counters.received(idx, keep as u64, kept_bytes, now_ms);
                match dest {
                    Some(d) => {
                        stats.packets.fetch_add(keep as u64, Ordering::Relaxed);
                        stats.bytes.fetch_add(kept_bytes, Ordering::Relaxed);
                        self.batch.queue(
                            sockets[out].as_raw_fd(),
                            s.fixed.map(|f| f + out as u32),
                            (
                                None,
                                self.shared.base + (block * BLOCK_PORTS as usize + out) as u16,
                            ),
                            d,
                        );
                    }
                    None => {
                        self.batch.unkeep();
                        stats
                            .dropped_no_session
                            .fetch_add(keep as u64, Ordering::Relaxed);
                    }
                }
            }
            if n < BATCH {
                return;
            }
        }
    }

    /// Drains the thread's socket: each packet's original port names its block and leg (a
    /// port outside the blocks, the socket's own, names none). True when packets may be left
    /// (the turn's share was used up).
    fn relay_steered(&mut self, now_ms: u64) -> bool {
        let fd = self.own.socket.as_raw_fd();
        let base = self.shared.base;
        let mut t = Tally::default();
        let mut more = false;
        for _ in 0..STEERED_BATCHES {
            let Ok((first, n)) = self.batch.recv(fd) else {
                break;
            };
            for i in first..first + n {
                let to = self.batch.original_dest(i);
                let off = to.map_or(usize::MAX, |d| usize::from(d.port().wrapping_sub(base)));
                let (block, idx) = (off / BLOCK_PORTS as usize, off % BLOCK_PORTS as usize);
                let session = self.sessions.get_mut(block).and_then(Option::as_mut);
                let (Some(s), Some(src)) = (session, self.batch.source(i)) else {
                    t.dead += 1;
                    continue;
                };
                if !s.active {
                    t.dead += 1;
                    continue;
                }
                if !s.latches[idx].admit(src, now_ms) {
                    t.stray += 1;
                    continue;
                }
                s.latches[idx].local = to.map(|d| d.ip());
                let len = self.batch.len(i) as u64;
                self.shared.counters[block].received(idx, 1, len, now_ms);
                // A (0, 1) <-> B (2, 3), RTP to RTP, RTCP to RTCP.
                let out = idx ^ 2;
                // Without sockets of its own a block sends raw, IPv4 only.
                match s.latches[out]
                    .dest()
                    .filter(|d| s.sockets.is_some() || d.is_ipv4())
                {
                    Some(d) => {
                        let fd = s.sockets.as_ref().map_or(-1, |k| k[out].as_raw_fd());
                        self.batch.keep(i);
                        self.batch.queue(
                            fd,
                            s.fixed.map(|f| f + out as u32),
                            (
                                s.latches[out].local,
                                base + (block * BLOCK_PORTS as usize + out) as u16,
                            ),
                            d,
                        );
                        t.relayed(len);
                    }
                    None => t.dead += 1,
                }
            }
            more = n == BATCH;
            if !more {
                break;
            }
        }
        t.flush(&self.shared.stats);
        more
    }
}

impl Relay {
    /// Relays what AF_XDP socket `k` received: each frame's destination port names its block
    /// and leg, as on the steered socket. A frame whose other leg's next hop is known leaves
    /// rewritten in place on the TX ring; otherwise its payload leaves through the raw sender.
    /// True when frames may be left (the turn's share was used up).
    fn relay_xsk(&mut self, k: usize, now_ms: u64) -> bool {
        let base = self.shared.base;
        let xsk = &mut self.xsks[k];
        let mut t = Tally::default();
        let mut more = false;
        for _ in 0..XSK_BATCHES {
            let (first, n) = xsk.received(XSK_BATCH);
            if n == 0 {
                // Frames the device was too busy for last time, and completions, even so.
                xsk.kick();
                break;
            }
            let mut room = xsk.tx_room();
            for i in first..first.wrapping_add(n) {
                let (addr, frame) = xsk.frame(i);
                // Not to us (a promiscuous interface hands over others' frames): not ours.
                let Some(p) = xdp::inbound(frame).filter(|p| p.to_mac == self.own_mac) else {
                    t.dead += 1;
                    xsk.recycle(addr);
                    continue;
                };
                let off = usize::from(p.dst.port().wrapping_sub(base));
                let (block, idx) = (off / BLOCK_PORTS as usize, off % BLOCK_PORTS as usize);
                let Some(s) = self
                    .sessions
                    .get_mut(block)
                    .and_then(Option::as_mut)
                    .filter(|s| s.active)
                else {
                    t.dead += 1;
                    xsk.recycle(addr);
                    continue;
                };
                let latch = &mut s.latches[idx];
                if !latch.admit(SocketAddr::V4(p.src), now_ms) {
                    t.stray += 1;
                    xsk.recycle(addr);
                    continue;
                }
                latch.local = Some(std::net::IpAddr::V4(*p.dst.ip()));
                latch.mac = Some(p.src_mac);
                self.shared.counters[block].received(idx, 1, p.payload as u64, now_ms);
                // A (0, 1) <-> B (2, 3), RTP to RTP, RTCP to RTCP.
                let out = &s.latches[idx ^ 2];
                let Some(SocketAddr::V4(to)) = out.dest() else {
                    t.dead += 1;
                    xsk.recycle(addr);
                    continue;
                };
                let local = match out.local {
                    Some(std::net::IpAddr::V4(a)) => a,
                    _ => *p.dst.ip(),
                };
                let from = SocketAddrV4::new(
                    local,
                    base + (block * BLOCK_PORTS as usize + (idx ^ 2)) as u16,
                );
                match (out.mac.or(self.any_next_hop), self.batch.raw.as_mut()) {
                    (Some(next_hop), _) if room > 0 => {
                        xdp::rewrite(frame, self.own_mac, next_hop, from, to);
                        xsk.send(addr, p.len as u32);
                        room -= 1;
                        t.framed += 1;
                    }
                    (_, Some(raw)) => {
                        let payload = frame[xdp::HEADERS..].as_ptr();
                        // SAFETY: the frame is held (not received into) until the kick after
                        // the raw sender's flush. The raw sender holds 256 packets, more than
                        // one batch, and is flushed after each.
                        unsafe { raw.queue(Some(local), from.port(), to, payload, p.payload) };
                        xsk.hold(addr);
                    }
                    // Not reached: a thread takes AF_XDP sockets only with a raw sender.
                    (_, None) => {
                        t.dead += 1;
                        xsk.recycle(addr);
                        continue;
                    }
                }
                t.relayed(p.payload as u64);
            }
            xsk.consumed(n);
            // Counted before they leave, as on the socket paths.
            t.flush(&self.shared.stats);
            if let Some(raw) = self.batch.raw.as_mut() {
                raw.flush();
            }
            xsk.kick();
            more = n == XSK_BATCH;
            if !more {
                break;
            }
        }
        more
    }
}

/// What a stretch of packets came to, added to the process-wide figures at once (one atomic
/// add per figure, not per packet).
#[derive(Default)]
struct Tally {
    relayed: u64,
    /// Of `relayed`, sent frame to frame through AF_XDP.
    framed: u64,
    bytes: u64,
    stray: u64,
    dead: u64,
}

impl Tally {
    fn relayed(&mut self, bytes: u64) {
        self.relayed += 1;
        self.bytes += bytes;
    }

    /// Adds the tally to `stats` and starts over.
    fn flush(&mut self, stats: &super::MediaStats) {
        for (counter, v) in [
            (&stats.packets, self.relayed),
            (&stats.xdp_packets, self.framed),
            (&stats.bytes, self.bytes),
            (&stats.dropped_stray, self.stray),
            (&stats.dropped_no_session, self.dead),
        ] {
            if v > 0 {
                counter.fetch_add(v, Ordering::Relaxed);
            }
        }
        *self = Tally::default();
    }
}

/// How a turn's queued packets leave.
enum Sender {
    /// One io_uring submission for all of them.
    Uring(Box<io_uring::IoUring>),
    /// One `sendmmsg` per run of packets for the same socket.
    Mmsg,
}

impl Sender {
    fn new(try_uring: bool) -> Sender {
        if !try_uring {
            return Sender::Mmsg;
        }
        match io_uring::IoUring::new(2 * RING as u32) {
            Ok(ring) => Sender::Uring(Box::new(ring)),
            Err(e) => {
                tracing::warn!("io_uring unavailable ({e}): media sends use sendmmsg");
                Sender::Mmsg
            }
        }
    }
}

/// recvmmsg into a ring of buffers; what is kept is queued and sent, at [`Batch::flush`], from
/// where it landed.
struct Batch {
    data: Vec<u8>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    /// Control messages: the original destination address on a steered socket.
    ctrl: Vec<[u64; CTRL_WORDS]>,
    hdrs: Vec<libc::mmsghdr>,
    /// Received length of each buffer.
    lens: [usize; RING],
    /// The first slot the next receive fills; slots before it hold this turn's packets.
    next: usize,
    /// Slots kept since the last [`Batch::queue`] (from `grouped` to `kept` in `order`).
    order: [usize; RING],
    kept: usize,
    grouped: usize,
    /// Queued packet `q`: its destination, iovec and header (each send carries its own).
    dests: Vec<libc::sockaddr_storage>,
    send_iov: Vec<libc::iovec>,
    send_hdrs: Vec<libc::mmsghdr>,
    queued: usize,
    /// (socket, first queued packet, count) per [`Batch::queue`] call; capacity [`RING`].
    groups: Vec<(i32, usize, usize)>,
    sender: Sender,
    /// Slots in the io_uring's fixed-file table (0: none registered).
    fixed_slots: u32,
    /// IPv4 packets leave here, all through one socket, when set.
    raw: Option<RawSender>,
}

// SAFETY: the raw pointers point into the Batch's own heap buffers, which never move (no vector
// here is resized after `new`); a Batch is moved into its thread once and never shared.
unsafe impl Send for Batch {}

impl Batch {
    fn new(try_uring: bool) -> Batch {
        let mut b = Batch {
            data: vec![0; RING * MAX_PACKET],
            // SAFETY (all the zeroed() here): plain C structs; all-zero is a valid empty value.
            iov: (0..RING).map(|_| unsafe { zeroed() }).collect(),
            names: (0..RING).map(|_| unsafe { zeroed() }).collect(),
            ctrl: vec![[0; CTRL_WORDS]; RING],
            hdrs: (0..RING).map(|_| unsafe { zeroed() }).collect(),
            lens: [0; RING],
            next: 0,
            order: [0; RING],
            kept: 0,
            grouped: 0,
            dests: (0..RING).map(|_| unsafe { zeroed() }).collect(),
            send_iov: (0..RING).map(|_| unsafe { zeroed() }).collect(),
            send_hdrs: (0..RING).map(|_| unsafe { zeroed() }).collect(),
            queued: 0,
            groups: Vec::with_capacity(RING),
            sender: Sender::new(try_uring),
            fixed_slots: 0,
            raw: None,
        };
        let base = b.data.as_mut_ptr();
        for i in 0..RING {
            b.iov[i] = libc::iovec {
                // SAFETY: i * MAX_PACKET + MAX_PACKET <= data.len().
                iov_base: unsafe { base.add(i * MAX_PACKET) }.cast(),
                iov_len: MAX_PACKET,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut b.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = b.ctrl[i].as_mut_ptr().cast();
            let h = &mut b.send_hdrs[i].msg_hdr;
            h.msg_name = (&mut b.dests[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut b.send_iov[i];
            h.msg_iovlen = 1;
        }
        b
    }

    /// Receives up to [`BATCH`] packets into the next free slots: (first slot, count). Sends
    /// what is queued first when the ring has no room for a whole batch.
    fn recv(&mut self, fd: i32) -> io::Result<(usize, usize)> {
        if self.next + BATCH > RING {
            self.flush();
        }
        let first = self.next;
        for m in &mut self.hdrs[first..first + BATCH] {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_controllen = CTRL_WORDS * 8;
            m.msg_hdr.msg_flags = 0;
        }
        // SAFETY: headers first..first+BATCH point at live buffers of the advertised sizes.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs[first..].as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = r as usize;
        for i in first..first + n {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(MAX_PACKET);
        }
        self.next += n;
        Ok((first, n))
    }

    fn source(&self, i: usize) -> Option<SocketAddr> {
        // SAFETY: the kernel filled names[i] with msg_namelen bytes of a sockaddr.
        unsafe { SockAddr::new(self.names[i], self.hdrs[i].msg_hdr.msg_namelen) }.as_socket()
    }

    fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// The address and port packet `i` was sent to (steered sockets report it).
    fn original_dest(&self, i: usize) -> Option<SocketAddr> {
        // SAFETY: the kernel filled header i's control buffer by the last receive.
        unsafe { super::steer::original_dest(&self.hdrs[i].msg_hdr) }
    }

    /// Slot `i` goes out with the next [`Batch::queue`].
    fn keep(&mut self, i: usize) {
        self.order[self.kept] = i;
        self.kept += 1;
    }

    /// Forgets the slots kept since the last [`Batch::queue`].
    fn unkeep(&mut self) {
        self.kept = self.grouped;
    }

    /// A sparse fixed-file table of `slots` entries for the sockets sends leave from (io_uring
    /// only; without one, or if the kernel refuses, sends name plain descriptors).
    fn use_fixed_files(&mut self, slots: u32) {
        if let Sender::Uring(ring) = &self.sender {
            match ring.submitter().register_files_sparse(slots) {
                Ok(()) => self.fixed_slots = slots,
                Err(e) => tracing::debug!("io_uring fixed files unavailable: {e}"),
            }
        }
    }

    /// Registers `fd` at fixed-file `slot`: true if sends may name the slot.
    fn fix(&mut self, slot: u32, fd: i32) -> bool {
        match &self.sender {
            Sender::Uring(ring) if slot < self.fixed_slots => {
                ring.submitter().register_files_update(slot, &[fd]).is_ok()
            }
            _ => false,
        }
    }

    /// IPv4 packets leave through one raw socket from `src`, where the kernel allows it.
    fn use_raw_sender(&mut self, src: std::net::Ipv4Addr) {
        match RawSender::open(src, RING) {
            Ok(r) => self.raw = Some(r),
            Err(e) => tracing::warn!(
                "raw media sends unavailable ({e}): each packet leaves through its port's socket"
            ),
        }
    }

    /// The slots kept since the last call go to `dest` from `(address, port)` at the next
    /// flush: through the raw sender for IPv4 where there is one (from the address given, else
    /// the media address), else through `fd` (registered at fixed-file slot `fixed`, if given),
    /// from its own address.
    fn queue(
        &mut self,
        fd: i32,
        fixed: Option<u32>,
        (from, port): (Option<std::net::IpAddr>, u16),
        dest: SocketAddr,
    ) {
        if let (Some(raw), SocketAddr::V4(d4)) = (&mut self.raw, dest) {
            let from = match from {
                Some(std::net::IpAddr::V4(a)) => Some(a),
                _ => None,
            };
            for k in self.grouped..self.kept {
                let i = self.order[k];
                // SAFETY: slot i's buffer is not received into again before the flush that
                // sends it (the ring flushes before it wraps). The raw sender holds RING
                // packets and at most RING are kept, so it is never full here.
                unsafe { raw.queue(from, port, d4, self.iov[i].iov_base.cast(), self.lens[i]) };
            }
            self.grouped = self.kept;
            return;
        }
        let d = SockAddr::from(dest);
        let first = self.queued;
        for k in self.grouped..self.kept {
            let i = self.order[k];
            let q = self.queued;
            // SAFETY: a SockAddr is at most a sockaddr_storage long.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    d.as_ptr().cast::<u8>(),
                    (&mut self.dests[q] as *mut libc::sockaddr_storage).cast::<u8>(),
                    d.len() as usize,
                );
            }
            self.send_iov[q] = libc::iovec {
                iov_base: self.iov[i].iov_base,
                iov_len: self.lens[i],
            };
            self.send_hdrs[q].msg_hdr.msg_namelen = d.len();
            if let Sender::Uring(ring) = &mut self.sender {
                let hdr = &self.send_hdrs[q].msg_hdr as *const libc::msghdr;
                let sqe = match fixed {
                    Some(slot) => io_uring::opcode::SendMsg::new(io_uring::types::Fixed(slot), hdr),
                    None => io_uring::opcode::SendMsg::new(io_uring::types::Fd(fd), hdr),
                }
                .flags(libc::MSG_DONTWAIT as u32)
                .build();
                // SAFETY: the header, its iovec, name and buffer stay untouched until the flush
                // that submits this entry. The queue holds 2·RING entries and at most RING
                // packets are queued, so the push cannot fail.
                let _ = unsafe { ring.submission().push(&sqe) };
            }
            self.queued += 1;
        }
        if self.queued > first {
            self.groups.push((fd, first, self.queued - first));
        }
        self.grouped = self.kept;
    }

    /// Sends everything queued and empties the ring. What the kernel refuses is lost (RTP
    /// tolerates loss better than delay).
    fn flush(&mut self) {
        if let Some(raw) = &mut self.raw {
            raw.flush();
        }
        if self.queued > 0 {
            match &mut self.sender {
                Sender::Uring(ring) => {
                    // MSG_DONTWAIT UDP sends complete inside the submit (copied into socket
                    // buffers, or failed with EAGAIN): the buffers are free once it returns.
                    if let Err(e) = ring.submit() {
                        tracing::warn!("io_uring submit failed: {e}");
                    }
                    for _ in ring.completion() {}
                }
                Sender::Mmsg => {
                    for &(fd, first, count) in &self.groups {
                        send_all(fd, &mut self.send_hdrs[first..first + count]);
                    }
                }
            }
        }
        self.groups.clear();
        self.queued = 0;
        self.next = 0;
        self.kept = 0;
        self.grouped = 0;
    }
}

/// `sendmmsg` until every header went out (skipping one the kernel refuses).
pub(super) fn send_all(fd: i32, hdrs: &mut [libc::mmsghdr]) {
    let mut sent = 0;
    while sent < hdrs.len() {
        // SAFETY: headers sent.. point at live buffers and destinations.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                hdrs[sent..].as_mut_ptr(),
                (hdrs.len() - sent) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r > 0 {
            sent += r as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_signalled_ip_latches_then_others_are_stray() {
        let mut l = Latch {
            signalled: Some(addr("192.0.2.1:4000")),
            ..Default::default()
        };
        assert!(!l.admit(addr("198.51.100.9:4000"), 10), "a stranger");
        assert!(
            l.admit(addr("192.0.2.1:5000"), 10),
            "signalled IP, any port"
        );
        assert_eq!(l.dest(), Some(addr("192.0.2.1:5000")));
        assert!(
            !l.admit(addr("192.0.2.1:4000"), 11),
            "latched: another port is stray"
        );
    }

    #[test]
    fn within_the_window_the_newest_source_wins() {
        let mut l = Latch {
            signalled: Some(addr("192.0.2.1:4000")),
            open_until_ms: 2_000,
            ..Default::default()
        };
        assert!(l.admit(addr("203.0.113.5:7000"), 100), "NAT: another IP");
        assert!(l.admit(addr("203.0.113.5:7002"), 1_900));
        assert_eq!(l.dest(), Some(addr("203.0.113.5:7002")));
        assert!(!l.admit(addr("203.0.113.5:7000"), 2_000), "window closed");
        assert!(l.admit(addr("203.0.113.5:7002"), 2_001));
    }

    /// Packets from two sockets, queued in one turn, reach the sink from the right socket with
    /// their bytes intact: through io_uring when the kernel offers it (one socket named by a
    /// plain descriptor, the other by a fixed-file slot), and through sendmmsg.
    #[test]
    fn a_turns_packets_leave_from_their_sockets_by_either_sender() {
        use std::net::UdpSocket as Std;
        for try_uring in [true, false] {
            let mut b = Batch::new(try_uring);
            if try_uring && matches!(b.sender, Sender::Mmsg) {
                eprintln!("io_uring unavailable here: both rounds test sendmmsg");
            }
            let peer = Std::bind("127.0.0.1:0").unwrap();
            let sink = Std::bind("127.0.0.1:0").unwrap();
            sink.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let ins = [
                Std::bind("127.0.0.1:0").unwrap(),
                Std::bind("127.0.0.1:0").unwrap(),
            ];
            let outs = [
                Std::bind("127.0.0.1:0").unwrap(),
                Std::bind("127.0.0.1:0").unwrap(),
            ];
            for (k, sock) in ins.iter().enumerate() {
                for j in 0..3u8 {
                    peer.send_to(&[k as u8, j, 0xAB], sock.local_addr().unwrap())
                        .unwrap();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            b.use_fixed_files(2);
            let fixed = b.fix(1, outs[1].as_raw_fd()).then_some(1);
            let uring = matches!(b.sender, Sender::Uring(_));
            assert_eq!(fixed.is_some(), uring, "fixed files with io_uring only");
            for (k, sock) in ins.iter().enumerate() {
                let (first, n) = b.recv(sock.as_raw_fd()).unwrap();
                assert_eq!(n, 3);
                for i in first..first + n {
                    assert_eq!(b.source(i), Some(peer.local_addr().unwrap()));
                    b.keep(i);
                }
                let slot = if k == 1 { fixed } else { None };
                let port = outs[k].local_addr().unwrap().port();
                b.queue(
                    outs[k].as_raw_fd(),
                    slot,
                    (None, port),
                    sink.local_addr().unwrap(),
                );
            }
            b.flush();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            for _ in 0..6 {
                let (len, from) = sink.recv_from(&mut buf).unwrap();
                let k = usize::from(buf[0]);
                assert_eq!(from, outs[k].local_addr().unwrap(), "uring: {try_uring}");
                got.push(buf[..len].to_vec());
            }
            got.sort();
            let want: Vec<Vec<u8>> = (0..2u8)
                .flat_map(|k| (0..3u8).map(move |j| vec![k, j, 0xAB]))
                .collect();
            assert_eq!(got, want, "uring: {try_uring}");
        }
    }

    #[test]
    fn nothing_heard_sends_to_the_signalled_address() {
        let l = Latch {
            signalled: Some(addr("192.0.2.1:4000")),
            ..Default::default()
        };
        assert_eq!(l.dest(), Some(addr("192.0.2.1:4000")));
    }
}
