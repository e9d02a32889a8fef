//! One media thread: the sockets of the blocks it owns, and the packet path between them.
//!
//! A readable socket is drained with `recvmmsg` into a fixed ring of buffers; each packet is
//! checked against its leg's latch, counted, and the whole batch leaves through the paired
//! socket of the other leg with one `sendmmsg`, from the same buffers (no copy, no allocation).
//! The socket's token is its port offset, so the session is an index away.

use super::{Command, Leg, Shared, BLOCK_PORTS, LATCH_WINDOW_MS};
use crossbeam_channel::Receiver;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::SockAddr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const WAKER: Token = Token(usize::MAX);
const BATCH: usize = 32;
/// RTP over UDP stays well under this; a larger datagram is truncated and still relayed.
const MAX_PACKET: usize = 2048;
/// Batches per socket per readiness event, so one busy socket cannot starve the others.
const MAX_BATCHES: usize = 8;

/// Where one endpoint's packets come from and go to (one per leg and per RTP/RTCP).
#[derive(Clone, Copy, Default)]
struct Latch {
    /// From its SDP.
    signalled: Option<SocketAddr>,
    /// The source its packets come from, once seen.
    latched: Option<SocketAddr>,
    /// Until then any source is taken (the newest wins): SDP just changed.
    open_until_ms: u64,
}

impl Latch {
    /// SPEC §3.8: accept the signalled IP, or any source within the window after the SDP
    /// changed (the newest wins); after that only the latched source.
    fn admit(&mut self, src: SocketAddr, now_ms: u64) -> bool {
        if now_ms < self.open_until_ms {
            self.latched = Some(src);
            return true;
        }
        match self.latched {
            Some(l) => l == src,
            None if self.signalled.is_some_and(|s| s.ip() == src.ip()) => {
                self.latched = Some(src);
                true
            }
            None => false,
        }
    }

    /// Where packets for this endpoint go.
    fn dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.signalled)
    }
}

/// One block's sockets and latches: index 0/1 = leg A RTP/RTCP, 2/3 = leg B RTP/RTCP.
struct Session {
    sockets: [UdpSocket; 4],
    latches: [Latch; 4],
    /// False while the block is free (its sockets stay bound for its next call): what arrives
    /// is drained and dropped.
    active: bool,
}

pub struct Relay {
    poll: Poll,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    /// Indexed by block; only this thread's blocks are ever Some.
    sessions: Vec<Option<Session>>,
    batch: Batch,
    /// Set while the thread sleeps with no session active: only then does a command wake it.
    parked: Arc<AtomicBool>,
    /// Sessions open.
    active: usize,
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
    ) -> Relay {
        let blocks = shared.blocks as usize;
        Relay {
            poll,
            shared,
            commands,
            sessions: (0..blocks).map(|_| None).collect(),
            batch: Batch::new(),
            parked,
            active: 0,
        }
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
            let timeout = if !self.commands.is_empty() {
                Duration::ZERO
            } else if self.active > 0 {
                TICK
            } else {
                self.parked.store(true, Ordering::SeqCst);
                if self.commands.is_empty() {
                    IDLE_SLEEP
                } else {
                    Duration::ZERO
                }
            };
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.parked.store(false, Ordering::SeqCst);
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("media poll failed: {e}");
                }
                continue;
            }
            let now_ms = crate::runtime::worker::unix_now().as_millis() as u64;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let t = ev.token().0;
                self.relay(t / BLOCK_PORTS as usize, t % BLOCK_PORTS as usize, now_ms);
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
        let sockets = match (bind(0), bind(1), bind(2), bind(3)) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => [a, b, c, d],
            _ => {
                // Somebody else holds one of these ports: the call goes on without media; the
                // block's next call tries again.
                tracing::warn!(block, port = first, "media ports in use by another process");
                return;
            }
        };
        let mut s = Session {
            sockets,
            latches: [Latch::default(); 4],
            active: true,
        };
        let token = block as usize * BLOCK_PORTS as usize;
        for (i, sock) in s.sockets.iter_mut().enumerate() {
            if let Err(e) =
                self.poll
                    .registry()
                    .register(sock, Token(token + i), Interest::READABLE)
            {
                tracing::warn!(block, "media socket registration failed: {e}");
            }
        }
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
        // A (0, 1) <-> B (2, 3), RTP to RTP, RTCP to RTCP.
        let out = idx ^ 2;
        let counters = &self.shared.counters[block];
        let (packets, bytes) = if idx < 2 {
            (&counters.a_packets, &counters.a_bytes)
        } else {
            (&counters.b_packets, &counters.b_bytes)
        };
        let stats = &self.shared.stats;
        if !s.active {
            // A free block: late packets of its last call, or a scan. Drained, counted.
            for _ in 0..MAX_BATCHES {
                match self.batch.recv(s.sockets[idx].as_raw_fd()) {
                    Ok(n) => {
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
            let n = match self.batch.recv(s.sockets[idx].as_raw_fd()) {
                Ok(n) => n,
                Err(_) => return,
            };
            let dest = s.latches[out].dest();
            let mut keep = 0;
            let mut kept_bytes = 0u64;
            for i in 0..n {
                let Some(src) = self.batch.source(i) else {
                    continue;
                };
                if !s.latches[idx].admit(src, now_ms) {
                    stats.dropped_stray.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                kept_bytes += self.batch.len(i) as u64;
                self.batch.keep(i, keep);
                keep += 1;
            }
            if keep > 0 {
                // Single writer per block: plain adds, no contention.
                packets.fetch_add(keep as u64, Ordering::Relaxed);
                bytes.fetch_add(kept_bytes, Ordering::Relaxed);
                counters.last_rx_ms.store(now_ms, Ordering::Relaxed);
                match dest {
                    Some(d) => {
                        stats.packets.fetch_add(keep as u64, Ordering::Relaxed);
                        stats.bytes.fetch_add(kept_bytes, Ordering::Relaxed);
                        self.batch.send(s.sockets[out].as_raw_fd(), keep, d);
                    }
                    None => {
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
}

/// recvmmsg/sendmmsg over one fixed set of buffers: packets are sent from where they landed.
struct Batch {
    data: Vec<u8>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
    /// Received length of each buffer.
    lens: [usize; BATCH],
    /// Packet `i` of the send list is buffer `order[i]`.
    order: [usize; BATCH],
    dest: SockAddr,
    /// Headers (and iovecs) the last receive or send changed: the next receive restores only
    /// these, so a one-packet batch costs one header's set-up, not [`BATCH`].
    dirty: usize,
}

// SAFETY: the raw pointers are re-pointed at our own buffers before every syscall; a Batch is
// moved into its thread once and never shared.
unsafe impl Send for Batch {}

impl Batch {
    fn new() -> Batch {
        Batch {
            data: vec![0; BATCH * MAX_PACKET],
            // SAFETY: plain C structs; all-zero is a valid empty value.
            iov: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            lens: [0; BATCH],
            order: [0; BATCH],
            dest: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            dirty: BATCH,
        }
    }

    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        let base = self.data.as_mut_ptr();
        for i in 0..self.dirty {
            self.iov[i] = libc::iovec {
                // SAFETY: i * MAX_PACKET + MAX_PACKET <= data.len().
                iov_base: unsafe { base.add(i * MAX_PACKET) }.cast(),
                iov_len: MAX_PACKET,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers of the advertised sizes.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.dirty = 0;
            return Err(io::Error::last_os_error());
        }
        let n = r as usize;
        self.dirty = n;
        for i in 0..n {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(MAX_PACKET);
        }
        Ok(n)
    }

    fn source(&self, i: usize) -> Option<SocketAddr> {
        // SAFETY: the kernel filled names[i] with msg_namelen bytes of a sockaddr.
        unsafe { SockAddr::new(self.names[i], self.hdrs[i].msg_hdr.msg_namelen) }.as_socket()
    }

    fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// Buffer `i` is the `pos`-th packet to send.
    fn keep(&mut self, i: usize, pos: usize) {
        self.order[pos] = i;
    }

    /// Sends the first `n` kept packets to `dest` through `fd`; what the kernel refuses is lost
    /// (RTP tolerates loss better than delay).
    fn send(&mut self, fd: i32, n: usize, dest: SocketAddr) {
        self.dest = SockAddr::from(dest);
        self.dirty = self.dirty.max(n);
        let base = self.data.as_mut_ptr();
        for pos in 0..n {
            let i = self.order[pos];
            self.iov[pos] = libc::iovec {
                // SAFETY: i < BATCH, so the buffer is inside `data`.
                iov_base: unsafe { base.add(i * MAX_PACKET) }.cast(),
                iov_len: self.lens[i],
            };
            let h = &mut self.hdrs[pos].msg_hdr;
            h.msg_name = self.dest.as_ptr() as *mut libc::c_void;
            h.msg_namelen = self.dest.len();
            h.msg_iov = &mut self.iov[pos];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: headers sent..n point at live buffers and the destination.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
            } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // Buffer full or unreachable: skip one and go on.
                sent += 1;
            }
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

    #[test]
    fn nothing_heard_sends_to_the_signalled_address() {
        let l = Latch {
            signalled: Some(addr("192.0.2.1:4000")),
            ..Default::default()
        };
        assert_eq!(l.dest(), Some(addr("192.0.2.1:4000")));
    }
}
