//! AF_XDP: media frames from the network interface straight into a media thread's memory and
//! back out, past the kernel's IP and UDP layers.
//!
//! With steering (`steer`) a relayed packet still costs the socket path twice: the receive
//! (socket lookup, the sk_lookup program, enqueue, `recvmmsg` with its control message) and the
//! raw socket's send (route lookup, IP output). perf/RESULTS.md (session 9) measured a bare
//! AF_XDP forwarder at 0.80–0.95× the kit's raw forwarder, where sipedge's socket relay was
//! 1.22–1.37×. Here:
//! - an XDP program on `media.xdp_interface` hands an IPv4 UDP frame for a port of an *owned*
//!   block to the AF_XDP socket of the interface queue it arrived on, if that queue is served by
//!   the block's thread (queue `q` by thread `q % threads`); every other frame goes on to the
//!   kernel, and so to the steered socket, as without XDP;
//! - the media thread reads the frame from the socket's RX ring, checks the latch as always,
//!   rewrites the Ethernet, IP and UDP headers in place ([`rewrite`]) and puts the same frame on
//!   the TX ring: no copy, one `sendto` per loop turn to kick the transmit.
//!
//! The destination's MAC address is the one its own frames came from (the latch learns it):
//! the next hop toward that endpoint, its own address on the LAN or the router's. Until the
//! other leg's endpoint has sent a frame this way, packets to it leave through the raw socket
//! (`raw`), which asks the kernel's routing and neighbour tables.
//!
//! Needs CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW, Linux ≥ 5.9 (XDP links). The driver's native
//! XDP with zero copy is taken where the interface has it, generic XDP (copy) otherwise. On
//! `lo` (tests, benches) frames sent from an AF_XDP socket come back in without the route that
//! locally sent packets carry, so 127.0.0.0/8 needs `net.ipv4.conf.lo.route_localnet=1` and
//! `accept_local=1`; on a real interface neither applies.

use super::bpf::*;
use super::checksum;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

const XDP_PASS: i32 = 2;
/// `XDP_FLAGS_SKB_MODE` / `XDP_FLAGS_DRV_MODE` (uapi/linux/if_link.h).
const FLAGS_SKB_MODE: u32 = 1 << 1;
const FLAGS_DRV_MODE: u32 = 1 << 2;
/// `struct xdp_md` field offsets.
const CTX_DATA: i16 = 0;
const CTX_DATA_END: i16 = 4;
const CTX_RX_QUEUE: i16 = 16;

/// Ethernet + IPv4 without options + UDP.
pub const HEADERS: usize = 14 + 20 + 8;
/// One umem chunk per frame.
const CHUNK: u32 = 2048;
/// The kernel keeps this much headroom in front of a received frame (XDP_PACKET_HEADROOM).
const KERNEL_HEADROOM: u32 = 256;
/// Longer frames are left to the kernel: they would not fit a chunk.
const MAX_FRAME: u32 = CHUNK - KERNEL_HEADROOM;
const FRAMES: u32 = 4096;
const FILL_RING: u32 = FRAMES;
const COMP_RING: u32 = FRAMES;
const RX_RING: u32 = 2048;
const TX_RING: u32 = 2048;

/// The XDP program and the map of AF_XDP sockets it redirects to; dropping it detaches.
pub struct Xdp {
    /// Interface queue -> AF_XDP socket of the thread serving it.
    sockets: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    pub ifindex: u32,
    pub queues: u32,
    /// True when the driver runs the program (native XDP), false in generic mode.
    pub native: bool,
    /// A loopback interface: every frame's MAC addresses are zero, so every next hop is known.
    pub loopback: bool,
    /// The interface's own MAC address: frames to another (a promiscuous interface's) are not
    /// ours to relay, and relayed frames leave from it.
    pub mac: [u8; 6],
}

impl Xdp {
    /// Attaches to `interface` the program that sends frames for ports in
    /// `[base, base + span)` (on `bind`, any local address when unspecified) whose block
    /// (`(port - base) >> block_shift`) `owners` names (block -> thread + 1, `steer`'s map) to
    /// the AF_XDP socket of their queue, if `threads` puts that queue on the owner.
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        interface: &str,
        base: u16,
        span: u32,
        block_shift: u32,
        bind: IpAddr,
        threads: u32,
        owners: &OwnedFd,
    ) -> Result<Xdp, BpfError> {
        let ifindex = ifindex(interface).map_err(|source| BpfError::Sys {
            op: "finding the XDP interface",
            source,
        })?;
        let queues = rx_queues(interface);
        let sockets = map_create(MAP_XSKMAP, 4, 4, queues)?;
        let code = program(
            base,
            span,
            block_shift,
            bind,
            threads,
            owners.as_raw_fd(),
            sockets.as_raw_fd(),
        );
        let prog = prog_load("XDP", "sipedge_xdp", PROG_XDP, ATTACH_XDP, &code)?;
        // The driver's own hook where it has one (zero copy), else the generic one.
        let (link, native) = match link_create(
            "attaching the XDP program (native)",
            &prog,
            ifindex,
            ATTACH_XDP,
            FLAGS_DRV_MODE,
        ) {
            Ok(l) => (l, true),
            Err(_) => (
                link_create(
                    "attaching the XDP program",
                    &prog,
                    ifindex,
                    ATTACH_XDP,
                    FLAGS_SKB_MODE,
                )?,
                false,
            ),
        };
        Ok(Xdp {
            sockets,
            _prog: prog,
            _link: link,
            ifindex,
            queues,
            native,
            loopback: is_loopback(interface),
            mac: hardware_address(interface),
        })
    }

    /// Frames of `queue` go to `socket` from now on.
    pub fn serve(&self, queue: u32, socket: &Xsk) -> io::Result<()> {
        map_update(&self.sockets, queue, socket.fd.as_raw_fd() as u32)
    }

    /// Frames of `queue` go to the kernel again.
    pub fn unserve(&self, queue: u32) -> io::Result<()> {
        map_delete(&self.sockets, queue)
    }
}

fn ifindex(interface: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the name"))?;
    // SAFETY: a NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {interface:?}"),
        )),
        i => Ok(i),
    }
}

/// An interface ioctl: `request` on an `ifreq` naming `interface`, prepared by `fill`, on a
/// datagram socket of its own; the ifreq as the kernel left it, or None where it refused.
fn interface_ioctl(
    interface: &str,
    request: libc::c_ulong,
    fill: impl FnOnce(&mut libc::ifreq),
) -> Option<libc::ifreq> {
    // SAFETY: all-zero is a valid ifreq; the name (at most 15 bytes) stays NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(interface.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    fill(&mut req);
    // SAFETY: a socket only for the ioctl, closed below; req is a live ifreq, and whatever
    // `fill` pointed it at outlives the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let r = libc::ioctl(fd, request as _, &mut req);
        libc::close(fd);
        (r == 0).then_some(req)
    }
}

/// Whether the interface has IFF_LOOPBACK (false where it cannot be read).
fn is_loopback(interface: &str) -> bool {
    interface_ioctl(interface, libc::SIOCGIFFLAGS, |_| {}).is_some_and(|r| {
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        i32::from(unsafe { r.ifr_ifru.ifru_flags }) & libc::IFF_LOOPBACK != 0
    })
}

/// The interface's MAC address (zero where it has none, as lo).
fn hardware_address(interface: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    if let Some(r) = interface_ioctl(interface, libc::SIOCGIFHWADDR, |_| {}) {
        // SAFETY: SIOCGIFHWADDR filled the address member: a sockaddr whose data starts with
        // the MAC.
        let data = unsafe { r.ifr_ifru.ifru_hwaddr.sa_data };
        for (m, d) in mac.iter_mut().zip(data.iter()) {
            *m = *d as u8;
        }
    }
    mac
}

/// Whether `interface` exists in this network namespace.
pub fn interface_exists(interface: &str) -> bool {
    ifindex(interface).is_ok()
}

/// The interface's receive queues: its channels as ethtool reports them (receive-only plus
/// combined), else its sysfs queue directories, else 1.
fn rx_queues(interface: &str) -> u32 {
    /// `struct ethtool_channels` (uapi/linux/ethtool.h).
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let ethtool = interface_ioctl(interface, libc::SIOCETHTOOL, |req| {
        req.ifr_ifru.ifru_data = (&mut ch as *mut Channels).cast();
    })
    .is_some();
    if ethtool && ch.rx_count + ch.combined_count > 0 {
        return ch.rx_count + ch.combined_count;
    }
    std::fs::read_dir(format!("/sys/class/net/{interface}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(0)
        .max(1)
}

/// The XDP program: an IPv4 UDP frame without IP options or fragmentation, no longer than a
/// chunk, for a port in `[base, base + span)` on `bind`, whose block has an owner that serves
/// the frame's queue, goes to the queue's AF_XDP socket; anything else, or a queue without a
/// socket, to the kernel.
fn program(
    base: u16,
    span: u32,
    block_shift: u32,
    bind: IpAddr,
    threads: u32,
    owners: RawFd,
    sockets: RawFd,
) -> Vec<Insn> {
    let mut a = Asm::default();
    a.mov(R6, R1)
        .load32(R2, R6, CTX_DATA)
        .load32(R3, R6, CTX_DATA_END)
        .mov(R4, R2)
        .add_imm(R4, HEADERS as i32)
        .pass_if_gt_reg(R4, R3)
        .mov(R4, R2)
        .add_imm(R4, MAX_FRAME as i32)
        // Longer than a chunk holds: data + MAX_FRAME < data_end.
        .pass_if_gt_reg(R3, R4)
        // Ethertype IPv4 (0x0800, read little-endian), version 4 with a 20-byte header, UDP.
        .load16(R5, R2, 12)
        .pass_if_ne(R5, 0x0008)
        .load8(R5, R2, 14)
        .pass_if_ne(R5, 0x45)
        .load8(R5, R2, 23)
        .pass_if_ne(R5, libc::IPPROTO_UDP)
        // More-fragments flag and fragment offset (0x3fff in network order) must be clear.
        .load16(R5, R2, 20)
        .and_imm(R5, 0xff3f)
        .pass_if_ne(R5, 0);
    if let IpAddr::V4(v4) = bind {
        if !v4.is_unspecified() {
            a.load32(R5, R2, 30)
                .pass_if_ne32(R5, u32::from_le_bytes(v4.octets()));
        }
    }
    a.load16(R5, R2, 36)
        .be16(R5)
        .sub_imm(R5, i32::from(base))
        // Below base wraps to a huge value: one unsigned compare checks both ends.
        .pass_if_ge(R5, span as i32)
        .owner_of_block(R5, block_shift, owners)
        .load32(R3, R6, CTX_RX_QUEUE)
        .mov(R4, R3)
        .mod_imm(R4, threads.max(1) as i32)
        .pass_if_ne_reg(R2, R4)
        .map(R1, sockets)
        .mov(R2, R3)
        // The low bits of the flags are the verdict when the queue has no socket.
        .mov_imm(R3, XDP_PASS)
        .call(HELPER_REDIRECT_MAP)
        .exit();
    a.finish(XDP_PASS)
}

/// One ring shared with the kernel: a producer and a consumer index and `size` entries of `T`.
struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut T,
    mask: u32,
    /// This side's copy of the index it advances.
    local: u32,
    map: (*mut libc::c_void, usize),
}

impl<T> Ring<T> {
    /// Maps the ring at `pgoff` of `fd`, laid out as `off` says.
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, pgoff: u64, size: u32) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring; the kernel validates offset and length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = |o: u64| (p as usize + o as usize) as *mut u8;
        Ok(Ring {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            desc: at(off.desc).cast(),
            mask: size - 1,
            local: 0,
            map: (p, len),
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: inside the live mapping; the kernel's index is a naturally aligned u32.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for the producer.
        unsafe { &*self.consumer }
    }

    /// Entry `i` (any index; the ring wraps it).
    fn slot(&self, i: u32) -> *mut T {
        // SAFETY: (i & mask) < size, inside the mapping.
        unsafe { self.desc.add((i & self.mask) as usize) }
    }

    /// A consumer ring's entries ready to read: (first index, count up to `max`).
    fn peek(&self, max: u32) -> (u32, u32) {
        let ready = self
            .producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.local);
        (self.local, ready.min(max))
    }

    /// A consumer ring: `n` entries read, handed back to the kernel.
    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.consumer().store(self.local, Ordering::Release);
    }

    /// A producer ring's free entries.
    fn room(&self) -> u32 {
        let size = self.mask + 1;
        size - self
            .local
            .wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    /// A producer ring: entries from `local` to `local + n` written, handed to the kernel.
    fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.producer().store(self.local, Ordering::Release);
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: inside the live mapping.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.map.0, self.map.1) };
    }
}

/// One AF_XDP socket on one interface queue, with its own umem of [`FRAMES`] chunks.
pub struct Xsk {
    fd: OwnedFd,
    umem: (*mut u8, usize),
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    pub queue: u32,
    /// Frames put on the TX ring since the last kick.
    unsent: u32,
    /// Frames lent out until the next [`Xsk::kick`] (their bytes sent by another path).
    held: Vec<u64>,
}

// SAFETY: the raw pointers are the socket's own mappings; an Xsk is moved into its media thread
// once and used only there.
unsafe impl Send for Xsk {}

impl Xsk {
    /// An AF_XDP socket bound to `queue` of interface `ifindex` (zero copy where the driver
    /// allows, copy otherwise), its fill ring full.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<Xsk> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned by socket(2).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = (FRAMES * CHUNK) as usize;
        // SAFETY: a private anonymous mapping, owned by the Xsk until it drops.
        let umem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if umem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            let reg = libc::xdp_umem_reg {
                addr: umem as u64,
                len: len as u64,
                chunk_size: CHUNK,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setopt(&fd, libc::XDP_UMEM_REG, &reg)?;
            setopt(&fd, libc::XDP_UMEM_FILL_RING, &FILL_RING)?;
            setopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &COMP_RING)?;
            setopt(&fd, libc::XDP_RX_RING, &RX_RING)?;
            setopt(&fd, libc::XDP_TX_RING, &TX_RING)?;
            // SAFETY: all-zero is a valid xdp_mmap_offsets; the kernel fills it.
            let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
            let mut optlen = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
            // SAFETY: off is writable for optlen bytes.
            if unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_XDP,
                    libc::XDP_MMAP_OFFSETS,
                    (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                    &mut optlen,
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
            let raw = fd.as_raw_fd();
            let mut fill = Ring::map(raw, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING, FILL_RING)?;
            let comp = Ring::map(
                raw,
                &off.cr,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING,
                COMP_RING,
            )?;
            let rx = Ring::map(raw, &off.rx, libc::XDP_PGOFF_RX_RING as u64, RX_RING)?;
            let tx = Ring::map(raw, &off.tx, libc::XDP_PGOFF_TX_RING as u64, TX_RING)?;
            for f in 0..FRAMES {
                // SAFETY: a slot of the fill ring, which holds FRAMES entries.
                unsafe { *fill.slot(f) = u64::from(f * CHUNK) };
            }
            fill.submit(FRAMES);
            let addr = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                // Neither copy nor zero copy asked for: zero copy where the driver has it.
                sxdp_flags: libc::XDP_USE_NEED_WAKEUP,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: a sockaddr_xdp passed with its size.
            if unsafe {
                libc::bind(
                    raw,
                    (&addr as *const libc::sockaddr_xdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok((fill, comp, rx, tx))
        })();
        let (fill, comp, rx, tx) = match result {
            Ok(r) => r,
            Err(e) => {
                // SAFETY: the mapping made above, not used by anything after this.
                unsafe { libc::munmap(umem, len) };
                return Err(e);
            }
        };
        Ok(Xsk {
            fd,
            umem: (umem.cast(), len),
            fill,
            comp,
            rx,
            tx,
            queue,
            unsent: 0,
            held: Vec::with_capacity(RX_RING as usize),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Received frames ready: (first, count up to `max`); read each with [`Xsk::frame`] and
    /// hand each on ([`Xsk::send`], [`Xsk::recycle`], [`Xsk::hold`]) before [`Xsk::consumed`].
    pub fn received(&self, max: u32) -> (u32, u32) {
        self.rx.peek(max)
    }

    /// Received frame `i`: its address in the umem and its bytes.
    pub fn frame(&mut self, i: u32) -> (u64, &mut [u8]) {
        // SAFETY: an RX descriptor the kernel produced: it names bytes inside the umem.
        let d = unsafe { *self.rx.slot(i) };
        let len = (d.len as usize).min(CHUNK as usize);
        let off = (d.addr as usize).min(self.umem.1 - len);
        // SAFETY: off + len <= umem length; the frame is ours until it is handed back.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.umem.0.add(off), len) };
        (d.addr, bytes)
    }

    /// The `n` frames from [`Xsk::received`] were all handed on.
    pub fn consumed(&mut self, n: u32) {
        self.rx.release(n);
    }

    /// Room on the TX ring.
    pub fn tx_room(&self) -> u32 {
        self.tx.room() - self.unsent
    }

    /// Frame `addr` leaves with its first `len` bytes at the next [`Xsk::kick`]; the caller
    /// checked [`Xsk::tx_room`].
    pub fn send(&mut self, addr: u64, len: u32) {
        // SAFETY: a TX ring slot past the producer, which the caller made room for.
        unsafe {
            *self.tx.slot(self.tx.local.wrapping_add(self.unsent)) = libc::xdp_desc {
                addr,
                len,
                options: 0,
            }
        };
        self.unsent += 1;
    }

    /// Frame `addr` goes back to the kernel to receive into.
    pub fn recycle(&mut self, addr: u64) {
        // The fill ring holds every frame, so it always has room for one.
        // SAFETY: a fill ring slot past the producer.
        unsafe { *self.fill.slot(self.fill.local) = addr };
        self.fill.submit(1);
    }

    /// Frame `addr` is lent out until the next [`Xsk::kick`] (queued on another sender).
    pub fn hold(&mut self, addr: u64) {
        self.held.push(addr);
    }

    /// Hands the turn's frames to the kernel for transmission, takes back what it finished
    /// sending and what other senders are done with (call after they flushed).
    pub fn kick(&mut self) {
        if self.unsent > 0 {
            self.tx.submit(self.unsent);
            self.unsent = 0;
        }
        // In copy mode the send happens inside this call, at most 32 frames per call
        // (the kernel's TX_BATCH_SIZE): it is repeated while the ring drains. With zero
        // copy the driver asks for a call only when it has stopped polling the ring.
        for _ in 0..TX_RING / 32 {
            let before = self.tx.consumer().load(Ordering::Acquire);
            if before == self.tx.local || !self.tx.needs_wakeup() {
                break;
            }
            // SAFETY: sendto with no data on the socket: the AF_XDP transmit doorbell.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if self.tx.consumer().load(Ordering::Acquire) == before {
                break; // no progress: the device is busy, the next turn tries again
            }
        }
        let (first, n) = self.comp.peek(COMP_RING);
        for i in first..first.wrapping_add(n) {
            // SAFETY: completion entries the kernel produced; fill slots past its producer (the
            // fill ring holds every frame).
            unsafe {
                *self
                    .fill
                    .slot(self.fill.local.wrapping_add(i.wrapping_sub(first))) = *self.comp.slot(i)
            };
        }
        let held = self.held.len() as u32;
        for (k, &addr) in self.held.iter().enumerate() {
            // SAFETY: as above.
            unsafe { *self.fill.slot(self.fill.local.wrapping_add(n + k as u32)) = addr };
        }
        self.held.clear();
        if n + held > 0 {
            self.fill.submit(n + held);
            self.comp.release(n);
        }
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // SAFETY: the umem mapping, unmapped once; the kernel holds its own pin on the pages
        // until the socket (closed after this) lets go.
        unsafe { libc::munmap(self.umem.0.cast(), self.umem.1) };
    }
}

fn setopt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value is a T passed with its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one received frame is, read from its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The frame's destination MAC address.
    pub to_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub src_mac: [u8; 6],
    /// The UDP payload: offset [`HEADERS`], this long.
    pub payload: usize,
    /// The frame up to the end of its IP packet (without Ethernet padding).
    pub len: usize,
}

/// Reads an IPv4 UDP frame's addresses (the program let only those through; a frame whose
/// lengths disagree with its size is None).
pub fn inbound(frame: &[u8]) -> Option<Inbound> {
    let h = frame.get(..HEADERS)?;
    let ip_len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let udp_len = usize::from(u16::from_be_bytes([h[38], h[39]]));
    if h[14] != 0x45 || ip_len < 28 || 14 + ip_len > frame.len() || udp_len != ip_len - 20 {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]);
    let port = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
    Some(Inbound {
        to_mac: h[..6].try_into().ok()?,
        src: SocketAddrV4::new(ip(26), port(34)),
        dst: SocketAddrV4::new(ip(30), port(36)),
        src_mac: h[6..12].try_into().ok()?,
        payload: udp_len - 8,
        len: 14 + ip_len,
    })
}

/// Turns a received frame (checked by [`inbound`]) into the relayed one, in place: to `dst_mac`
/// from `src_mac`, to `to` from `from`, TTL 64, both checksums computed afresh.
///
/// The UDP checksum is computed over the whole datagram, not carried over from the old one:
/// a frame that came from a virtual interface (lo, veth, a VM's virtio) holds only the partial
/// sum its sender's checksum offload left there. A frame corrupted on the way in thus leaves
/// with a valid checksum, where the socket path would have dropped it; SRTP's authentication
/// still catches it end to end.
pub fn rewrite(
    frame: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    from: SocketAddrV4,
    to: SocketAddrV4,
) {
    let ip_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let (h, _) = frame.split_at_mut(14 + ip_len);
    h[0..6].copy_from_slice(&dst_mac);
    h[6..12].copy_from_slice(&src_mac);
    h[22] = 64;
    h[24..26].copy_from_slice(&[0, 0]);
    h[26..30].copy_from_slice(&from.ip().octets());
    h[30..34].copy_from_slice(&to.ip().octets());
    h[34..36].copy_from_slice(&from.port().to_be_bytes());
    h[36..38].copy_from_slice(&to.port().to_be_bytes());
    h[40..42].copy_from_slice(&[0, 0]);
    let ip = checksum::ipv4_header(&h[14..34]);
    h[24..26].copy_from_slice(&ip.to_be_bytes());
    let (src, dst) = (from.ip().octets(), to.ip().octets());
    let udp = checksum::udp(src, dst, &[&h[34..]]);
    h[40..42].copy_from_slice(&udp.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 768 checksum of a UDP datagram, the plain way: 16-bit words of the pseudo-header
    /// and the datagram, the checksum field taken as it is (0 to compute one, the sent value
    /// to verify: then a valid datagram sums to 0xffff).
    fn udp_sum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
        let mut words: Vec<u16> = Vec::new();
        for a in [src.octets(), dst.octets()] {
            words.push(u16::from_be_bytes([a[0], a[1]]));
            words.push(u16::from_be_bytes([a[2], a[3]]));
        }
        words.push(17);
        words.push(udp.len() as u16);
        for c in udp.chunks(2) {
            words.push(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        let mut s: u32 = 0;
        for w in words {
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn ip_sum(h: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in h.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], c[1]]));
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// A frame as a sender with checksum offload hands it over: UDP checksum field holding
    /// junk (a partial sum), `pad` bytes of Ethernet padding after the IP packet.
    fn frame(payload: &[u8], pad: usize) -> Vec<u8> {
        let mut f = vec![0u8; HEADERS];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]); // to us
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]); // from the next hop
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        f[20] = 0x40; // DF
        f[22] = 57;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 51, 100, 7]);
        f[30..34].copy_from_slice(&[192, 0, 2, 1]);
        f[34..36].copy_from_slice(&4000u16.to_be_bytes());
        f[36..38].copy_from_slice(&20_000u16.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f[40..42].copy_from_slice(&[0x12, 0x34]);
        f.extend_from_slice(payload);
        f.resize(f.len() + pad, 0xee);
        f
    }

    #[test]
    fn a_frame_reads_back_its_addresses_and_lengths() {
        let f = frame(&[0x80; 172], 0);
        let p = inbound(&f).unwrap();
        assert_eq!(p.src, "198.51.100.7:4000".parse().unwrap());
        assert_eq!(p.dst, "192.0.2.1:20000".parse().unwrap());
        assert_eq!(p.src_mac, [2, 0, 0, 0, 0, 9]);
        assert_eq!((p.payload, p.len), (172, f.len()));
        assert_eq!(p.to_mac, [2, 0, 0, 0, 0, 1]);
        // Ethernet padding is not part of the packet.
        let padded = frame(&[1, 2], 16);
        assert_eq!(inbound(&padded).unwrap().len, HEADERS + 2);
    }

    #[test]
    fn a_frame_whose_lengths_disagree_is_refused() {
        let f = frame(&[0x80; 40], 0);
        assert!(
            inbound(&f[..f.len() - 1]).is_none(),
            "IP length past the frame"
        );
        assert!(inbound(&f[..HEADERS - 1]).is_none(), "headers cut short");
        let mut g = f.clone();
        g[38..40].copy_from_slice(&100u16.to_be_bytes());
        assert!(inbound(&g).is_none(), "UDP length against IP length");
        let mut h = f.clone();
        h[14] = 0x46;
        assert!(inbound(&h).is_none(), "IP options");
    }

    #[test]
    fn a_rewritten_frame_carries_valid_checksums_and_its_payload_unchanged() {
        let from: SocketAddrV4 = "192.0.2.1:20002".parse().unwrap();
        let to: SocketAddrV4 = "203.0.113.50:31000".parse().unwrap();
        for len in [0usize, 1, 2, 3, 160, 171, 172, 1200] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut f = frame(&payload, 6);
            rewrite(&mut f, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 5], from, to);
            let p = inbound(&f).unwrap();
            assert_eq!((p.src, p.dst), (from, to));
            assert_eq!(&f[..6], &[2, 0, 0, 0, 0, 5], "to the next hop");
            assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 1], "from us");
            assert_eq!(f[22], 64, "TTL");
            assert_eq!(
                ip_sum(&f[14..34]),
                0xffff,
                "IP header checksum, {len} bytes"
            );
            let udp = &f[34..HEADERS + len];
            assert_ne!(&f[40..42], &[0, 0], "a checksum is set");
            assert_eq!(
                udp_sum(*from.ip(), *to.ip(), udp),
                0xffff,
                "UDP checksum, {len} bytes"
            );
            assert_eq!(&f[HEADERS..HEADERS + len], &payload[..], "payload");
        }
    }

    #[test]
    fn every_jump_lands_on_the_pass_exit() {
        for bind in ["0.0.0.0", "192.0.2.1"] {
            let code = program(20_000, 400, 2, bind.parse().unwrap(), 3, 5, 6);
            let exit = assert_jumps_land_on_the_exit(&code, XDP_PASS);
            // The redirect's own exit comes right before: nothing falls through into the pass.
            assert_eq!(code[exit - 1].code, 0x95);
            assert_eq!(code[exit - 2].imm, HELPER_REDIRECT_MAP);
        }
    }
}
