//! Batched UDP I/O: `recvmmsg` into a fixed ring of buffers (with the kernel's receive
//! timestamp per datagram), `sendmmsg` out of reused buffers. One syscall moves up to [`BATCH`]
//! datagrams each way; nothing here allocates after construction.

use socket2::SockAddr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

pub const BATCH: usize = 32;
/// Larger datagrams are truncated by the kernel, flagged, and dropped as malformed.
pub const MAX_DATAGRAM: usize = 16 * 1024;
const CMSG_SPACE: usize = 128;

pub struct Datagram<'a> {
    pub data: &'a [u8],
    pub src: Option<SocketAddr>,
    /// Kernel receive time (CLOCK_REALTIME, ns) from SO_TIMESTAMPNS, when available.
    pub arrived_ns: Option<u64>,
    pub truncated: bool,
}

pub struct RecvBatch {
    data: Vec<u8>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; CMSG_SPACE / 8]>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
}

// SAFETY: the raw pointers inside are re-pointed at our own buffers before every syscall and are
// never dereferenced across threads; the batch is moved into its worker thread once.
unsafe impl Send for RecvBatch {}
unsafe impl Send for SendBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        let mut b = RecvBatch {
            data: vec![0; BATCH * MAX_DATAGRAM],
            // SAFETY: plain C structs, all-zero is a valid (empty) value.
            iov: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            ctrl: vec![[0u64; CMSG_SPACE / 8]; BATCH],
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            n: BATCH,
        };
        // The vectors' heap buffers never move (none is resized after this), so the pointers
        // are set once; each receive only resets what the kernel wrote into the used headers.
        let base = b.data.as_mut_ptr();
        for i in 0..BATCH {
            b.iov[i] = libc::iovec {
                // SAFETY: i * MAX_DATAGRAM + MAX_DATAGRAM <= data.len().
                iov_base: unsafe { base.add(i * MAX_DATAGRAM) }.cast(),
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut b.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = b.ctrl[i].as_mut_ptr().cast();
        }
        b.reset_used();
        b
    }

    /// Restores the in/out fields of the headers the last receive used (the kernel shrinks the
    /// name and control lengths and sets flags and lengths only on those).
    fn reset_used(&mut self) {
        for m in &mut self.hdrs[..self.n] {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_controllen = CMSG_SPACE as _;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        self.n = 0;
    }

    /// Receives up to BATCH datagrams without blocking; `Err(WouldBlock)` when there are none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.reset_used();
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
            return Err(io::Error::last_os_error());
        }
        self.n = r as usize;
        Ok(self.n)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn get(&self, i: usize) -> Datagram<'_> {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(MAX_DATAGRAM);
        let data = &self.data[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len];
        // SAFETY: the kernel filled names[i] with msg_namelen bytes of a sockaddr.
        let src = unsafe { SockAddr::new(self.names[i], h.msg_hdr.msg_namelen) }.as_socket();
        Datagram {
            data,
            src,
            arrived_ns: timestamp(&h.msg_hdr),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }
}

fn timestamp(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: CMSG_* walk the control buffer the kernel filled, bounded by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Per datagram sent: what to record once it is on the wire.
#[derive(Clone, Copy, Debug)]
pub struct SendMeta {
    /// Index into `stats::METHODS` order is the caller's business; carried through untouched.
    pub method: crate::sip::scan::Method,
    pub arrived_ns: u64,
}

pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    names: Vec<SockAddr>,
    meta: Vec<SendMeta>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Flushed<'a> {
    pub sent: usize,
    pub dropped: usize,
    pub meta: &'a [SendMeta],
}

impl SendBatch {
    pub fn new() -> SendBatch {
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        SendBatch {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(2048)).collect(),
            names: (0..BATCH).map(|_| SockAddr::from(any)).collect(),
            meta: Vec::with_capacity(BATCH),
            iov: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            n: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Queues a copy of `bytes` for `dest`. The caller flushes when [`is_full`](Self::is_full).
    pub fn push(&mut self, bytes: &[u8], dest: SocketAddr, meta: SendMeta) {
        debug_assert!(self.n < BATCH);
        let b = &mut self.bufs[self.n];
        b.clear();
        b.extend_from_slice(bytes);
        self.names[self.n] = SockAddr::from(dest);
        self.meta.push(meta);
        self.n += 1;
    }

    /// Sends everything queued. Datagrams the kernel refuses (buffer full) are dropped and
    /// counted by the caller; UDP gives no better option without blocking the worker.
    pub fn flush(&mut self, fd: RawFd) -> Flushed<'_> {
        let n = self.n;
        for i in 0..n {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = self.names[i].as_ptr() as *mut libc::c_void;
            h.msg_namelen = self.names[i].len();
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut sent = 0;
        let mut dropped = 0;
        while sent + dropped < n {
            let start = sent + dropped;
            // SAFETY: headers start..n point at live buffers and addresses.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[start..].as_mut_ptr(),
                    (n - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
            } else {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // EAGAIN/ENOBUFS or an unreachable destination: skip this datagram.
                dropped += 1;
            }
        }
        self.n = 0;
        Flushed {
            sent,
            dropped,
            meta: &self.meta[..],
        }
    }

    /// Forget the metadata of the last flush (call after recording it).
    pub fn clear_meta(&mut self) {
        self.meta.clear();
    }
}

/// A UDP socket bound with SO_REUSEPORT (one per worker on the same address), non-blocking,
/// with large buffers and receive timestamps.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind(addr, true)
}

/// A worker's own UDP socket on `ip` and an ephemeral port (its core-facing port, see
/// `call::Port::Core`), set up like the shared ones.
pub fn bind_own(ip: std::net::IpAddr) -> io::Result<std::net::UdpSocket> {
    bind(SocketAddr::new(ip, 0), false)
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(reuse_port)?;
    sock.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max (see tuning.md).
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and an int option.
    unsafe {
        libc::setsockopt(
            sock_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

fn sock_fd(s: &socket2::Socket) -> RawFd {
    use std::os::fd::AsRawFd;
    s.as_raw_fd()
}

/// Resolves the port to share: a probe bind *without* SO_REUSEPORT fails if anyone holds the
/// address (another sipedge included, which SO_REUSEPORT alone would silently join), and turns
/// port 0 into a concrete ephemeral port.
pub fn probe_port(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = std::net::UdpSocket::bind(addr)?;
    probe.local_addr()
}
