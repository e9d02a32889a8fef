//! Steering: every port a media thread owns arrives on one socket of that thread.
//!
//! With a socket per port, each RTP packet costs its own readiness event and its own receive
//! syscall: at 50 packets/s per port a socket rarely holds a second packet when it is read. A
//! BPF `sk_lookup` program (Linux ≥ 5.9) attached to the network namespace chooses the socket
//! for an arriving UDP datagram before the kernel's port table does: for a port of a block that
//! a media thread has opened, it assigns that thread's one socket. One `recvmmsg` then takes up
//! to 32 packets of different calls, as the raw forwarder does with its one socket, and the
//! packet's original destination port (`IP_RECVORIGDSTADDR`) names the block.
//!
//! Only ports of opened blocks are steered (an array map, block -> thread + 1, written when a
//! block is first opened); anything else in the range is left to the kernel, so another
//! process's socket keeps its packets. Sends leave with the block's port as their source (the
//! far end sees the port it was given in SDP): through the raw sender, or the block's own
//! sockets where it has them.
//!
//! Attaching needs CAP_BPF and CAP_NET_ADMIN (root, or the capabilities granted). Where it fails
//! the relay polls one socket per port, as before; `SIPEDGE_MEDIA_STEER=0` asks for that.
//! The link is tied to a file descriptor: the program detaches when sipedge exits, however it
//! exits.
//!
//! The program is 30-odd instructions assembled here: a BPF toolchain (clang, bpf-linker) in the
//! build for this would cost every developer more than these lines do.

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("{op}: {source}")]
    Sys { op: &'static str, source: io::Error },
    #[error("the kernel refused the sk_lookup program: {source}; verifier: {log}")]
    Verifier { source: io::Error, log: String },
}

/// The attached program and its maps; dropping it detaches the program.
pub struct Steering {
    /// Block -> owning thread + 1 (0: not steered).
    owners: OwnedFd,
    /// Thread -> its socket.
    _sockets: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

impl Steering {
    /// Steers UDP for `blocks` blocks of `block_ports` ports from `base` on `bind` (any local
    /// address when unspecified) to `sockets[thread]`, once [`Steering::own`] names a block's
    /// thread. Each socket must be bound UDP with the original-destination option set.
    pub fn attach(
        base: u16,
        blocks: u32,
        block_ports: u16,
        bind: IpAddr,
        sockets: &[RawFd],
    ) -> Result<Steering, SteerError> {
        let owners = map_create(MAP_ARRAY, 4, 4, blocks.max(1))?;
        let socks = map_create(MAP_SOCKMAP, 4, 4, sockets.len().max(1) as u32)?;
        for (t, fd) in sockets.iter().enumerate() {
            map_update(&socks, t as u32, *fd as u32).map_err(|source| SteerError::Sys {
                op: "adding a media socket to the steering map",
                source,
            })?;
        }
        let span = blocks * u32::from(block_ports);
        let code = program(
            base,
            span,
            block_ports.trailing_zeros(),
            bind,
            owners.as_raw_fd(),
            socks.as_raw_fd(),
        );
        let prog = prog_load(&code)?;
        let netns = std::fs::File::open("/proc/self/ns/net").map_err(|source| SteerError::Sys {
            op: "opening /proc/self/ns/net",
            source,
        })?;
        let link = link_create(&prog, netns.as_raw_fd())?;
        Ok(Steering {
            owners,
            _sockets: socks,
            _prog: prog,
            _link: link,
        })
    }

    /// From now on `block`'s ports arrive on `thread`'s socket.
    pub fn own(&self, block: u32, thread: u32) -> io::Result<()> {
        map_update(&self.owners, block, thread + 1)
    }
}

/// A UDP socket on `bind`:`port` that reports each datagram's original destination address,
/// with a receive buffer for the packets of many calls (`rcvbuf` bytes where the kernel allows).
/// The kernel delivers to it only sockets that are bound, hence a port of the media range.
pub fn thread_socket(bind: IpAddr, port: u16, rcvbuf: usize) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(std::net::SocketAddr::new(bind, 0)),
        socket2::Type::DGRAM,
        None,
    )?;
    s.set_nonblocking(true)?;
    let fd = s.as_raw_fd();
    if bind.is_ipv6() {
        s.set_only_v6(!bind.is_unspecified())?;
        set_int(fd, libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, 1)?;
    }
    // Also on a dual-stack socket: IPv4 packets carry the IPv4 option's message.
    if bind.is_ipv4() || bind.is_unspecified() {
        set_int(fd, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)?;
    }
    // SO_RCVBUFFORCE passes net.core.rmem_max where the process may (CAP_NET_ADMIN).
    if set_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        rcvbuf as libc::c_int,
    )
    .is_err()
    {
        let _ = s.set_recv_buffer_size(rcvbuf);
    }
    s.bind(&std::net::SocketAddr::new(bind, port).into())?;
    Ok(s)
}

/// Sets an int-valued socket option (those socket2 has no setter for).
pub(super) fn set_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a c_int option value, passed by pointer with its size, on a descriptor the caller
    // owns.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The original destination (address and port) of a datagram, from its control messages.
///
/// # Safety
/// `msg` must be a header the kernel filled by a receive (its control pointer and length
/// describe live memory).
pub unsafe fn original_dest(msg: &libc::msghdr) -> Option<std::net::SocketAddr> {
    // SAFETY: the CMSG_* walk stays inside msg_control[..msg_controllen].
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: c points at a complete cmsghdr inside the control buffer.
        let h = unsafe { &*c };
        let data = unsafe { libc::CMSG_DATA(c) };
        if h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_ORIGDSTADDR {
            // SAFETY: the payload is a sockaddr_in.
            let a = unsafe { std::ptr::read_unaligned(data.cast::<libc::sockaddr_in>()) };
            let ip = std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            return Some((ip, u16::from_be(a.sin_port)).into());
        }
        if h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_ORIGDSTADDR {
            // SAFETY: the payload is a sockaddr_in6.
            let a = unsafe { std::ptr::read_unaligned(data.cast::<libc::sockaddr_in6>()) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            return Some((ip, u16::from_be(a.sin6_port)).into());
        }
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

const MAP_ARRAY: u32 = 2;
const MAP_SOCKMAP: u32 = 15;
const PROG_SK_LOOKUP: u32 = 30;
const ATTACH_SK_LOOKUP: u32 = 36;
const CMD_MAP_CREATE: libc::c_long = 0;
const CMD_MAP_UPDATE_ELEM: libc::c_long = 2;
const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_LINK_CREATE: libc::c_long = 28;

/// `struct bpf_sk_lookup` field offsets (uapi/linux/bpf.h).
const CTX_PROTOCOL: i16 = 12;
const CTX_LOCAL_IP4: i16 = 40;
const CTX_LOCAL_IP6: i16 = 44;
const CTX_LOCAL_PORT: i16 = 60;

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SK_RELEASE: i32 = 86;
const HELPER_SK_ASSIGN: i32 = 124;
const SK_PASS: i32 = 1;

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R6: u8 = 6;
const R7: u8 = 7;
const R10: u8 = 10;

/// A straight-line program whose conditional jumps all go to one exit that lets the kernel's
/// own lookup proceed.
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    to_pass: Vec<usize>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.code.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
        self
    }
    fn mov(&mut self, dst: u8, src: u8) -> &mut Self {
        self.op(0xbf, dst, src, 0, 0) // ALU64 | MOV | X
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0xb7, dst, 0, 0, imm) // ALU64 | MOV | K
    }
    fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x07, dst, 0, 0, imm) // ALU64 | ADD | K
    }
    fn sub_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x17, dst, 0, 0, imm) // ALU64 | SUB | K
    }
    fn rsh_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x77, dst, 0, 0, imm) // ALU64 | RSH | K
    }
    /// dst = *(u32 *)(src + off)
    fn load32(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.op(0x61, dst, src, off, 0) // LDX | MEM | W
    }
    /// *(u32 *)(dst + off) = src
    fn store32(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.op(0x63, dst, src, off, 0) // STX | MEM | W
    }
    /// dst = the map behind file descriptor `fd` (a two-slot load the kernel rewrites).
    fn map(&mut self, dst: u8, fd: RawFd) -> &mut Self {
        self.op(0x18, dst, 1, 0, fd).op(0, 0, 0, 0, 0) // LD | DW | IMM, BPF_PSEUDO_MAP_FD
    }
    fn call(&mut self, helper: i32) -> &mut Self {
        self.op(0x85, 0, 0, 0, helper)
    }
    fn pass_if(&mut self, code: u8, dst: u8, imm: i32) -> &mut Self {
        self.to_pass.push(self.code.len());
        self.op(code, dst, 0, 0, imm)
    }
    /// 64-bit `dst != imm`.
    fn pass_if_ne(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.pass_if(0x55, dst, imm) // JMP | JNE | K
    }
    /// 32-bit `dst != imm` (an address word, compared without sign extension).
    fn pass_if_ne32(&mut self, dst: u8, imm: u32) -> &mut Self {
        self.pass_if(0x56, dst, imm as i32) // JMP32 | JNE | K
    }
    fn pass_if_zero(&mut self, dst: u8) -> &mut Self {
        self.pass_if(0x15, dst, 0) // JMP | JEQ | K
    }
    /// Unsigned `dst >= imm`.
    fn pass_if_ge(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.pass_if(0x35, dst, imm) // JMP | JGE | K
    }
    /// The exit every `pass_if` jumps to: SK_PASS without a socket chosen.
    fn finish(mut self) -> Vec<Insn> {
        let pass = self.code.len();
        for &j in &self.to_pass {
            self.code[j].off = (pass - j - 1) as i16;
        }
        self.mov_imm(R0, SK_PASS).op(0x95, 0, 0, 0, 0); // JMP | EXIT
        self.code
    }
}

/// The sk_lookup program: a UDP datagram for a port in `[base, base + span)` on `bind` whose
/// block (`(port - base) >> block_shift`) has an owner goes to the owner's socket.
fn program(
    base: u16,
    span: u32,
    block_shift: u32,
    bind: IpAddr,
    owners: RawFd,
    sockets: RawFd,
) -> Vec<Insn> {
    let mut a = Asm::default();
    a.mov(R6, R1)
        .load32(R2, R6, CTX_PROTOCOL)
        .pass_if_ne(R2, libc::IPPROTO_UDP)
        .load32(R2, R6, CTX_LOCAL_PORT)
        .sub_imm(R2, i32::from(base))
        // Below base wraps to a huge value: one unsigned compare checks both ends.
        .pass_if_ge(R2, span as i32);
    if !bind.is_unspecified() {
        // The context holds addresses in network order; a little-endian load of the same bytes
        // gives the word to compare with.
        match bind {
            IpAddr::V4(v4) => {
                a.load32(R3, R6, CTX_LOCAL_IP4)
                    .pass_if_ne32(R3, u32::from_le_bytes(v4.octets()));
            }
            IpAddr::V6(v6) => {
                for (w, word) in v6.octets().chunks_exact(4).enumerate() {
                    a.load32(R3, R6, CTX_LOCAL_IP6 + 4 * w as i16)
                        .pass_if_ne32(R3, u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
                }
            }
        }
    }
    a.rsh_imm(R2, block_shift as i32)
        .store32(R10, -4, R2)
        .mov(R2, R10)
        .add_imm(R2, -4)
        .map(R1, owners)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .pass_if_zero(R0)
        .load32(R2, R0, 0)
        .pass_if_zero(R2)
        .sub_imm(R2, 1)
        .store32(R10, -8, R2)
        .mov(R2, R10)
        .add_imm(R2, -8)
        .map(R1, sockets)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .pass_if_zero(R0)
        // The socket is a counted reference: released after the assignment, on every path.
        .mov(R7, R0)
        .mov(R1, R6)
        .mov(R2, R7)
        .mov_imm(R3, 0)
        .call(HELPER_SK_ASSIGN)
        .mov(R1, R7)
        .call(HELPER_SK_RELEASE);
    a.finish()
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a prefix of `union bpf_attr` for `cmd`, fully initialised; the kernel
    // zero-fills the rest and reads only `size_of::<T>()` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a descriptor the bpf() syscall just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<OwnedFd, SteerError> {
    let attr = MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
    };
    bpf(CMD_MAP_CREATE, &attr)
        .map(owned)
        .map_err(|source| SteerError::Sys {
            op: "creating a BPF map",
            source,
        })
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn map_update(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: (&key as *const u32) as u64,
        value: (&value as *const u32) as u64,
        flags: 0, // BPF_ANY
    };
    bpf(CMD_MAP_UPDATE_ELEM, &attr).map(|_| ())
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

fn prog_load(code: &[Insn]) -> Result<OwnedFd, SteerError> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"sipedge_media");
    let mut attr = ProgLoad {
        prog_type: PROG_SK_LOOKUP,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: ATTACH_SK_LOOKUP,
    };
    match bpf(CMD_PROG_LOAD, &attr) {
        Ok(fd) => Ok(owned(fd)),
        // Permissions and missing support need no verifier log; a rejected program does.
        Err(e)
            if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::EACCES) =>
        {
            Err(SteerError::Sys {
                op: "loading the sk_lookup program",
                source: e,
            })
        }
        Err(source) => {
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(CMD_PROG_LOAD, &attr).map(owned);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(SteerError::Verifier {
                source,
                log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            })
        }
    }
}

#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

fn link_create(prog: &OwnedFd, netns: RawFd) -> Result<OwnedFd, SteerError> {
    let attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: netns as u32,
        attach_type: ATTACH_SK_LOOKUP,
        flags: 0,
    };
    bpf(CMD_LINK_CREATE, &attr)
        .map(owned)
        .map_err(|source| SteerError::Sys {
            op: "attaching the sk_lookup program to the network namespace",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    #[test]
    fn every_jump_lands_on_the_pass_exit() {
        for bind in ["0.0.0.0", "127.0.0.1", "::1"] {
            let code = program(20_000, 400, 2, bind.parse().unwrap(), 3, 4);
            let exit = code.len() - 2;
            for (i, insn) in code.iter().enumerate() {
                if matches!(insn.code, 0x55 | 0x56 | 0x15 | 0x35) {
                    assert_eq!(
                        i as i64 + 1 + i64::from(insn.off),
                        exit as i64,
                        "jump at {i}"
                    );
                }
            }
            assert_eq!(code[exit].imm, SK_PASS);
            assert_eq!(code[exit + 1].code, 0x95);
        }
    }

    /// Loads and attaches for real where the process may (root in CI and on the bench machine):
    /// a datagram to an owned port arrives on the thread socket with its original port; one to
    /// a port nobody owns is left to the kernel's own lookup.
    #[test]
    fn an_owned_port_arrives_on_the_thread_socket_with_its_port() {
        // A zone of its own: 64990-64999, above the ephemeral range and every other test's.
        let base = 64_990;
        let bind: IpAddr = "127.0.0.1".parse().unwrap();
        let sock = thread_socket(bind, base + 9, 1 << 20).unwrap();
        let steering = match Steering::attach(base, 2, 4, bind, &[sock.as_raw_fd()]) {
            Ok(s) => s,
            // No permission (capabilities, seccomp) or no sk_lookup in this kernel: nothing
            // to test here. A program the verifier rejects is a bug and fails.
            Err(SteerError::Sys { op, source }) => {
                eprintln!("skipped: {op}: {source}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        steering.own(1, 0).unwrap();
        let plain = UdpSocket::bind(("127.0.0.1", base + 1)).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"steered", ("127.0.0.1", base + 6)).unwrap();
        peer.send_to(b"not ours", ("127.0.0.1", base + 1)).unwrap();

        let sock: std::net::UdpSocket = sock.into();
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut ctrl = [0u64; 8];
        // SAFETY: a zeroed msghdr, filled in below with live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 8]>();
        // SAFETY: msg points at live buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        assert_eq!(&buf[..n as usize], b"steered");
        assert_eq!(
            unsafe { original_dest(&msg) },
            Some(SocketAddr::from(([127, 0, 0, 1], base + 6)))
        );

        let mut b2 = [0u8; 64];
        let (n, from) = plain.recv_from(&mut b2).unwrap();
        assert_eq!(&b2[..n], b"not ours");
        assert_eq!(from, peer.local_addr().unwrap());
        let _: SocketAddr = from;
        drop(steering);
        // Detached: the next datagram to the owned port finds no socket (nothing arrives).
        peer.send_to(b"after", ("127.0.0.1", base + 6)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(sock.recv_from(&mut buf).is_err());
    }
}
