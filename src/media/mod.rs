//! Media anchoring (SPEC §3.8): every call's RTP/RTCP goes through sipedge.
//!
//! Owns: the media port range, cut into *blocks* of four consecutive ports (leg A's RTP/RTCP
//! pair, then leg B's), the media threads that relay packets between a block's sockets, and the
//! per-block counters that signalling reads back (CDR packet counts, media timeout).
//!
//! Why blocks: a call needs four ports that one thread owns (a packet in on leg A goes out of leg
//! B's socket without crossing threads). A block index names all four, so allocation is one pop
//! from a free list, the port tells the block (`(port - base) / 4`) and the block tells the
//! session: no hashing on the packet path.
//!
//! Signalling talks to media only through [`Media`]: `allocate` (a pop from the owning thread's
//! free list, no syscall on the worker), then commands over a bounded channel (`open`, `remote`,
//! `close`). The media thread takes the block's ports when it gets `open` (steers them to its
//! socket, or binds the block's sockets); RTP only flows after the answer, long after.

mod bpf;
mod checksum;
mod raw;
mod relay;
pub mod sdp;
mod steer;
mod xdp;

/// The AF_XDP path's per-frame work (reading a frame's headers, rewriting them in place), public
/// for `bench/frame.rs`.
pub mod frame {
    pub use super::xdp::{inbound, rewrite, Inbound, HEADERS};
}

use crate::config::MediaConfig;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Which leg a port belongs to: A faces the caller, B the callee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    A,
    B,
}

/// Ports per block: RTP and RTCP for each of the two legs.
pub const BLOCK_PORTS: u16 = 4;
/// A latch follows the newest source for this long after the SDP changes (SPEC §3.8).
pub const LATCH_WINDOW_MS: u64 = 2_000;

/// What a media thread is told.
#[derive(Debug)]
pub enum Command {
    /// Take the block's ports and start relaying.
    Open {
        block: u32,
    },
    /// Leg `leg`'s endpoint signalled this RTP address (its SDP changed at `at_ms`).
    Remote {
        block: u32,
        leg: Leg,
        rtp: Option<SocketAddr>,
        at_ms: u64,
    },
    /// Stop relaying, close the sockets and give the block back.
    Close {
        block: u32,
    },
    Shutdown,
}

/// Counters one block's thread writes and signalling reads (relaxed: figures, not locks).
#[derive(Default)]
#[repr(align(64))]
pub struct BlockCounters {
    pub a_packets: AtomicU64,
    pub a_bytes: AtomicU64,
    pub b_packets: AtomicU64,
    pub b_bytes: AtomicU64,
    /// Unix ms of the last packet relayed either way (0: none yet).
    pub last_rx_ms: AtomicU64,
}

impl BlockCounters {
    /// `packets` packets of `bytes` payload bytes arrived on port `idx` of the block (0–1: leg
    /// A, 2–3: leg B) at `now_ms`. Only the block's media thread writes these (signalling
    /// reads them, and resets them while the block is free), so a plain load and store does:
    /// no locked read-modify-write per packet.
    #[inline]
    fn received(&self, idx: usize, packets: u64, bytes: u64, now_ms: u64) {
        let (p, b) = if idx < 2 {
            (&self.a_packets, &self.a_bytes)
        } else {
            (&self.b_packets, &self.b_bytes)
        };
        p.store(p.load(Ordering::Relaxed) + packets, Ordering::Relaxed);
        b.store(b.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
        self.last_rx_ms.store(now_ms, Ordering::Relaxed);
    }

    fn reset(&self) {
        for c in [
            &self.a_packets,
            &self.a_bytes,
            &self.b_packets,
            &self.b_bytes,
            &self.last_rx_ms,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Process-wide media figures for `/metrics`.
#[derive(Default)]
pub struct MediaStats {
    pub sessions_active: AtomicI64,
    pub packets: AtomicU64,
    /// Of `packets`, those relayed frame to frame through AF_XDP.
    pub xdp_packets: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped_stray: AtomicU64,
    pub dropped_no_session: AtomicU64,
}

/// Packet and byte counts of one call's media (CDR `a_packets` ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCounts {
    pub a_packets: u64,
    pub a_bytes: u64,
    pub b_packets: u64,
    pub b_bytes: u64,
}

struct Shared {
    /// First port of block 0 (even).
    base: u16,
    blocks: u32,
    advertise: IpAddr,
    bind: IpAddr,
    counters: Box<[BlockCounters]>,
    stats: MediaStats,
    /// Set once steering is attached.
    steered: AtomicBool,
    /// Set once a media thread sends IPv4 through its raw socket.
    raw_sends: AtomicBool,
    /// Interface queues whose media frames reach a media thread through AF_XDP.
    xdp_queues: AtomicU32,
}

/// How a media thread receives its ports' packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receive {
    /// On one socket per thread, the kernel steering every port of the thread's opened blocks
    /// to it (`steer`); per port where steering cannot be attached.
    Steered,
    /// On each port's own socket, polled.
    PerPort,
}

/// The threads' own sockets, thread `t`'s on port `top - t`. They hold the range: a second
/// sipedge on the same range fails here, at start, with the port named.
fn thread_sockets(bind: IpAddr, threads: usize, top: u16) -> std::io::Result<Vec<socket2::Socket>> {
    (0..threads)
        .map(|t| {
            let port = top - t as u16;
            steer::thread_socket(bind, port, STEERED_RCVBUF).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "media port {port} (a media thread's own, at the top of \
                         media.port_min..media.port_max): {e}; is another sipedge using this range?"
                    ),
                )
            })
        })
        .collect()
}

/// The program that steers each thread's ports to its socket; None (per-port receiving) when
/// the kernel refuses, which is logged once.
fn steer(shared: &Arc<Shared>, sockets: &[socket2::Socket]) -> Option<Arc<steer::Steering>> {
    let fds: Vec<_> = sockets
        .iter()
        .map(std::os::fd::AsRawFd::as_raw_fd)
        .collect();
    match steer::Steering::attach(shared.base, shared.blocks, BLOCK_PORTS, shared.bind, &fds) {
        Ok(s) => {
            shared.steered.store(true, Ordering::Relaxed);
            tracing::info!(
                threads = sockets.len(),
                "media ports steered to one socket per media thread"
            );
            Some(Arc::new(s))
        }
        Err(e) => {
            tracing::warn!(
                "media port steering unavailable ({e}): each media port is polled on its own socket"
            );
            None
        }
    }
}

/// The XDP program on `interface`; None (logged once) when the kernel refuses.
fn attach_xdp(
    shared: &Arc<Shared>,
    interface: &str,
    threads: u32,
    steering: &steer::Steering,
) -> Option<Arc<xdp::Xdp>> {
    if !shared.bind.is_ipv4() {
        tracing::warn!("media.xdp_interface needs an IPv4 media.address: not used");
        return None;
    }
    let span = shared.blocks * u32::from(BLOCK_PORTS);
    match xdp::Xdp::attach(
        interface,
        shared.base,
        span,
        BLOCK_PORTS.trailing_zeros(),
        shared.bind,
        threads,
        steering.owners(),
    ) {
        Ok(x) => {
            tracing::info!(
                interface,
                queues = x.queues,
                mode = if x.native { "native" } else { "generic" },
                "media frames of {interface} through AF_XDP"
            );
            Some(Arc::new(x))
        }
        Err(e) => {
            tracing::warn!("AF_XDP on {interface} unavailable ({e}): media stays on sockets");
            None
        }
    }
}

/// AF_XDP sockets on the interface queues thread `t` of `threads` serves (queue q: thread
/// q % threads); a queue whose socket the kernel refuses stays with the kernel (logged).
fn open_xsks(x: &xdp::Xdp, t: usize, threads: usize) -> Vec<xdp::Xsk> {
    (0..x.queues)
        .filter(|&q| q as usize % threads == t)
        .filter_map(|q| match xdp::Xsk::open(x.ifindex, q) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    queue = q,
                    "AF_XDP socket refused ({e}): the queue's media frames stay with the kernel"
                );
                None
            }
        })
        .collect()
}

/// Receive buffer of a steered socket: the queue of every call on its thread (≈ 25 ms of
/// 250k packets/s of 172-byte RTP in kernel accounting).
const STEERED_RCVBUF: usize = 16 << 20;

/// The signalling side's handle: cheap to clone, one per worker.
#[derive(Clone)]
pub struct Media {
    shared: Arc<Shared>,
    /// Per media thread: blocks freed by ended calls, their ports still taken (reusing one
    /// costs no syscall), taken first, ...
    warm: Vec<(Sender<u32>, Receiver<u32>)>,
    /// ... then blocks never used yet (the thread takes their ports at `Open`). So sipedge
    /// holds ports for its peak of concurrent calls, never more.
    free: Vec<(Sender<u32>, Receiver<u32>)>,
    commands: Vec<Sender<Command>>,
    wakers: Vec<Arc<mio::Waker>>,
    /// Set while the thread sleeps with no call up: only then does a command pay for a wake-up
    /// (with calls up it picks commands up every few milliseconds).
    parked: Vec<Arc<AtomicBool>>,
}

/// A block allocated to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(pub u32);

impl Media {
    /// Starts `cfg.workers` media threads over `[port_min, port_max]`, thread `t` pinned to
    /// `pin[t]` when given; ports steered to one socket per thread where the kernel lets
    /// sipedge, unless `SIPEDGE_MEDIA_STEER=0`.
    pub fn start(
        cfg: &MediaConfig,
        advertise: IpAddr,
        pin: &[core_affinity::CoreId],
    ) -> std::io::Result<(Media, Vec<std::thread::JoinHandle<()>>)> {
        let receive = match std::env::var("SIPEDGE_MEDIA_STEER").as_deref() {
            Ok("0") => Receive::PerPort,
            _ => Receive::Steered,
        };
        Media::start_with(cfg, advertise, pin, receive)
    }

    /// [`Media::start`] with the way packets are received chosen by the caller.
    pub fn start_with(
        cfg: &MediaConfig,
        advertise: IpAddr,
        pin: &[core_affinity::CoreId],
        receive: Receive,
    ) -> std::io::Result<(Media, Vec<std::thread::JoinHandle<()>>)> {
        // A name that is not there is a typo to report, not a fallback to take quietly.
        if !cfg.xdp_interface.is_empty() && !xdp::interface_exists(&cfg.xdp_interface) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "media.xdp_interface: no interface {:?} in this network namespace",
                    cfg.xdp_interface
                ),
            ));
        }
        let bind: IpAddr = cfg.address.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let base = cfg.port_min + (cfg.port_min % 2);
        let span = u32::from(cfg.port_max.saturating_sub(base)) + 1;
        let threads = cfg.workers.max(1);
        // The top `threads` ports are the threads' steered sockets; blocks are cut below them.
        let blocks = span.saturating_sub(threads as u32) / u32::from(BLOCK_PORTS);
        let top = base as u32 + span - 1;
        let shared = Arc::new(Shared {
            base,
            blocks,
            advertise,
            bind,
            counters: (0..blocks).map(|_| BlockCounters::default()).collect(),
            stats: MediaStats::default(),
            steered: AtomicBool::new(false),
            raw_sends: AtomicBool::new(false),
            xdp_queues: AtomicU32::new(0),
        });
        let mut free = Vec::with_capacity(threads);
        let mut warm = Vec::with_capacity(threads);
        let mut commands = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        let mut parked = Vec::with_capacity(threads);
        let sockets = thread_sockets(bind, threads, top as u16)?;
        let steering = match receive {
            Receive::Steered => steer(&shared, &sockets),
            Receive::PerPort => None,
        };
        let xdp = match (&steering, cfg.xdp_interface.as_str()) {
            (_, "") => None,
            (Some(steering), name) => attach_xdp(&shared, name, threads as u32, steering),
            (None, _) => {
                tracing::warn!(
                    "media.xdp_interface is set but AF_XDP needs port steering: not used"
                );
                None
            }
        };
        for (t, socket) in sockets.into_iter().enumerate() {
            let owned: Vec<u32> = (0..blocks).filter(|b| *b as usize % threads == t).collect();
            let (ftx, frx) = bounded(owned.len().max(1));
            for b in &owned {
                let _ = ftx.try_send(*b);
            }
            let (ctx, crx) = bounded(64 * 1024);
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), relay::WAKER)?);
            let flag = Arc::new(AtomicBool::new(false));
            let (wtx, wrx) = bounded(owned.len().max(1));
            let relay = relay::Relay::new(
                poll,
                shared.clone(),
                crx,
                flag.clone(),
                t as u32,
                threads as u32,
                relay::ThreadSocket::new(
                    socket,
                    steering.clone(),
                    xdp.as_ref().map(|x| (x.clone(), open_xsks(x, t, threads))),
                ),
            )?;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("media-{t}"))
                    .spawn({
                        let core = pin.get(t).copied();
                        move || {
                            if let Some(core) = core {
                                core_affinity::set_for_current(core);
                            }
                            relay.run()
                        }
                    })?,
            );
            free.push((ftx, frx));
            warm.push((wtx, wrx));
            commands.push(ctx);
            wakers.push(waker);
            parked.push(flag);
        }
        Ok((
            Media {
                shared,
                warm,
                free,
                commands,
                wakers,
                parked,
            },
            handles,
        ))
    }

    /// A free block from the thread `hint` maps to (or any other), its sockets opening; None
    /// when every port is taken (SPEC §3.8: 503 "No media ports").
    pub fn allocate(&self, hint: u64) -> Option<Block> {
        let n = self.free.len();
        for i in 0..n {
            let t = (hint as usize + i) % n;
            if let Ok(b) = self.warm[t]
                .1
                .try_recv()
                .or_else(|_| self.free[t].1.try_recv())
            {
                self.shared.counters[b as usize].reset();
                self.shared
                    .stats
                    .sessions_active
                    .fetch_add(1, Ordering::Relaxed);
                self.send(b, Command::Open { block: b });
                return Some(Block(b));
            }
        }
        None
    }

    /// The first port of leg `leg` of `block` (RTP; RTCP is the next one).
    pub fn port(&self, block: Block, leg: Leg) -> u16 {
        let first = self.shared.base + (block.0 * u32::from(BLOCK_PORTS)) as u16;
        match leg {
            Leg::A => first,
            Leg::B => first + 2,
        }
    }

    /// The address written into SDP.
    pub fn advertise(&self) -> IpAddr {
        self.shared.advertise
    }

    pub fn set_remote(&self, block: Block, leg: Leg, rtp: Option<SocketAddr>, at_ms: u64) {
        self.send(
            block.0,
            Command::Remote {
                block: block.0,
                leg,
                rtp,
                at_ms,
            },
        );
    }

    /// Ends the block's session; its counts as they stand now (the CDR's). The block is free
    /// at once: its `Close` precedes, on the same queue, the `Open` of whoever takes it next.
    pub fn release(&self, block: Block) -> MediaCounts {
        let counts = self.counts(block);
        self.shared
            .stats
            .sessions_active
            .fetch_sub(1, Ordering::Relaxed);
        self.send(block.0, Command::Close { block: block.0 });
        let t = block.0 as usize % self.warm.len();
        let _ = self.warm[t].0.try_send(block.0);
        counts
    }

    pub fn counts(&self, block: Block) -> MediaCounts {
        let c = &self.shared.counters[block.0 as usize];
        MediaCounts {
            a_packets: c.a_packets.load(Ordering::Relaxed),
            a_bytes: c.a_bytes.load(Ordering::Relaxed),
            b_packets: c.b_packets.load(Ordering::Relaxed),
            b_bytes: c.b_bytes.load(Ordering::Relaxed),
        }
    }

    /// Unix ms of the block's last relayed packet (0: none yet).
    pub fn last_packet_ms(&self, block: Block) -> u64 {
        self.shared.counters[block.0 as usize]
            .last_rx_ms
            .load(Ordering::Relaxed)
    }

    /// Whether the threads receive on one steered socket each ([`Receive`]).
    pub fn steered(&self) -> bool {
        self.shared.steered.load(Ordering::Relaxed)
    }

    /// Interface queues whose media frames come to the threads through AF_XDP (`xdp`).
    pub fn xdp_queues(&self) -> u32 {
        self.shared.xdp_queues.load(Ordering::Relaxed)
    }

    /// Whether IPv4 packets leave through the threads' raw sockets (steered, CAP_NET_RAW).
    pub fn sends_raw(&self) -> bool {
        self.shared.raw_sends.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> &MediaStats {
        &self.shared.stats
    }

    /// Blocks in the range (calls that can have media at once).
    pub fn capacity(&self) -> u32 {
        self.shared.blocks
    }

    /// Stops every media thread (they close their sockets).
    pub fn shutdown(&self) {
        for (c, w) in self.commands.iter().zip(&self.wakers) {
            let _ = c.try_send(Command::Shutdown);
            let _ = w.wake();
        }
    }

    fn send(&self, block: u32, cmd: Command) {
        let t = block as usize % self.commands.len();
        match self.commands[t].try_send(cmd) {
            Ok(()) => {
                if self.parked[t].load(Ordering::SeqCst) {
                    let _ = self.wakers[t].wake();
                }
            }
            // 64k queued commands: the media thread is stuck; the call goes on without media
            // rather than stall a signalling worker.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                tracing::error!(thread = t, "media command queue full");
            }
        }
    }
}

impl crate::call::desk::MediaPorts for Media {
    fn allocate(&self, hint: u64) -> Option<crate::call::CallMedia> {
        let block = Media::allocate(self, hint)?;
        Some(crate::call::CallMedia {
            block: block.0,
            a_port: self.port(block, Leg::A),
            b_port: self.port(block, Leg::B),
            advertise: self.shared.advertise,
            codecs: Box::default(),
        })
    }

    fn release(&self, block: u32) {
        Media::release(self, Block(block));
    }
}
