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
//! The program is 30-odd instructions assembled by `bpf`.

use super::bpf::*;
use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub use super::bpf::BpfError as SteerError;

const SK_PASS: i32 = 1;
/// `struct bpf_sk_lookup` field offsets (uapi/linux/bpf.h).
const CTX_PROTOCOL: i16 = 12;
const CTX_LOCAL_IP4: i16 = 40;
const CTX_LOCAL_IP6: i16 = 44;
const CTX_LOCAL_PORT: i16 = 60;

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
        let prog = prog_load(
            "sk_lookup",
            "sipedge_media",
            PROG_SK_LOOKUP,
            ATTACH_SK_LOOKUP,
            &code,
        )?;
        let netns =
            std::fs::File::open("/proc/thread-self/ns/net").map_err(|source| SteerError::Sys {
                op: "opening /proc/thread-self/ns/net",
                source,
            })?;
        let link = link_create(
            "attaching the sk_lookup program to the network namespace",
            &prog,
            netns.as_raw_fd() as u32,
            ATTACH_SK_LOOKUP,
            0,
        )?;
        Ok(Steering {
            owners,
            _sockets: socks,
            _prog: prog,
            _link: link,
        })
    }

    /// The map of block -> owning thread + 1, which the XDP program reads too.
    pub fn owners(&self) -> &OwnedFd {
        &self.owners
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
    a.owner_of_block(R2, block_shift, owners)
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
    a.finish(SK_PASS)
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
            assert_jumps_land_on_the_exit(&code, SK_PASS);
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
