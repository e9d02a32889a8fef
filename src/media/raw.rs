//! IPv4 sends through one raw socket per media thread.
//!
//! A UDP send from a port's own socket touches that socket (its file, its `sock`, its buffer
//! accounting), cold among thousands, for every packet. A raw `IPPROTO_RAW` socket writes the
//! IP and UDP headers itself, so every packet of a loop turn leaves through one socket in one
//! `sendmmsg`, whatever its source port: the sends of the turn cost what the raw forwarder's
//! cost. The payload goes out from the receive buffer it landed in (an iovec of header +
//! payload, no copy). An `IPPROTO_RAW` socket only sends: the kernel delivers nothing to it.
//!
//! The header: IPv4 without options, DF set, TTL 64, the kernel filling the identification and
//! the header checksum (and the source address when it is left 0: a wildcard media address
//! before the endpoint has sent anything, so the relay has not learned which local address it
//! talks to). The UDP checksum is computed when the source address is known and left 0 (no
//! checksum, which IPv4 allows) when the kernel picks it. Needs CAP_NET_RAW.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const HEADER: usize = 28;

pub struct RawSender {
    fd: OwnedFd,
    /// Written into every header; unspecified lets the kernel pick by route.
    src: [u8; 4],
    hdr: Box<[[u8; HEADER]]>,
    iov: Box<[[libc::iovec; 2]]>,
    dests: Box<[libc::sockaddr_in]>,
    msgs: Box<[libc::mmsghdr]>,
    queued: usize,
}

// SAFETY: the raw pointers point into the sender's own boxed slices, which never move; a sender
// is moved into its thread once and never shared.
unsafe impl Send for RawSender {}

impl RawSender {
    /// A raw socket for up to `capacity` packets per flush, from `src`.
    pub fn open(src: Ipv4Addr, capacity: usize) -> io::Result<RawSender> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A turn's packets are in the send buffer at once until the device takes them (without
        // CAP_NET_ADMIN the default buffer serves, with more EAGAIN drops at peaks).
        let _ = super::steer::set_int(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            4 << 20,
        );
        let mut s = RawSender {
            fd,
            src: src.octets(),
            hdr: vec![[0; HEADER]; capacity].into_boxed_slice(),
            // SAFETY (the zeroed() here): plain C structs; all-zero is a valid empty value.
            iov: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            dests: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            msgs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            queued: 0,
        };
        for i in 0..capacity {
            s.iov[i][0] = libc::iovec {
                iov_base: s.hdr[i].as_mut_ptr().cast(),
                iov_len: HEADER,
            };
            let h = &mut s.msgs[i].msg_hdr;
            h.msg_name = (&mut s.dests[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = s.iov[i].as_mut_ptr();
            h.msg_iovlen = 2;
        }
        Ok(s)
    }

    /// Queues `len` bytes at `payload` from `src` (else the sender's own address) port
    /// `src_port` to `dest`; false when full.
    ///
    /// # Safety
    /// `payload..payload + len` must stay valid and unchanged until the next [`RawSender::flush`].
    pub unsafe fn queue(
        &mut self,
        src: Option<Ipv4Addr>,
        src_port: u16,
        dest: SocketAddrV4,
        payload: *const u8,
        len: usize,
    ) -> bool {
        let q = self.queued;
        if q == self.hdr.len() {
            return false;
        }
        // SAFETY: the caller vouches for the payload.
        let body = unsafe { std::slice::from_raw_parts(payload, len) };
        let src = src.map_or(self.src, |a| a.octets());
        write_header(&mut self.hdr[q], src, src_port, dest, body);
        self.iov[q][1] = libc::iovec {
            iov_base: payload as *mut libc::c_void,
            iov_len: len,
        };
        self.dests[q] = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dest.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        self.queued += 1;
        true
    }

    /// Sends what is queued. What the kernel refuses is lost (RTP tolerates loss better than
    /// delay).
    pub fn flush(&mut self) {
        if self.queued > 0 {
            super::relay::send_all(self.fd.as_raw_fd(), &mut self.msgs[..self.queued]);
            self.queued = 0;
        }
    }
}

/// The IPv4 + UDP header of a `body.len()`-byte datagram.
fn write_header(h: &mut [u8; HEADER], src: [u8; 4], sport: u16, dest: SocketAddrV4, body: &[u8]) {
    let udp_len = (8 + body.len()) as u16;
    let dst = dest.ip().octets();
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&(udp_len + 20).to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]); // identification: the kernel's
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    h[8] = 64;
    h[9] = libc::IPPROTO_UDP as u8;
    h[10..12].copy_from_slice(&[0, 0]); // header checksum: the kernel's
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    h[20..22].copy_from_slice(&sport.to_be_bytes());
    h[22..24].copy_from_slice(&dest.port().to_be_bytes());
    h[24..26].copy_from_slice(&udp_len.to_be_bytes());
    h[26..28].copy_from_slice(&[0, 0]);
    if src != [0; 4] {
        let sum = super::checksum::udp(src, dst, &[&h[20..28], body]);
        h[26..28].copy_from_slice(&sum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// RFC 1071: the ones'-complement sum of the pseudo-header and the datagram, checksum in
    /// place, is 0xffff; the header fields sit where RFC 791 and RFC 768 put them.
    #[test]
    fn the_header_and_checksum_are_well_formed() {
        let src = [192, 168, 0, 1];
        let dst = [192, 168, 0, 2];
        let mut h = [0u8; HEADER];
        write_header(
            &mut h,
            src,
            1234,
            "192.168.0.2:5678".parse().unwrap(),
            b"hello",
        );
        assert_eq!(&h[20..26], &[0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0d]);
        // Summing the whole datagram with its checksum in place gives 0xffff.
        let mut check = [0u8; 8];
        check.copy_from_slice(&h[20..28]);
        let mut sum: u32 = 0;
        for pair in [&src[..2], &src[2..], &dst[..2], &dst[2..]] {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        sum += 17 + 13;
        let mut all = check.to_vec();
        all.extend_from_slice(b"hello\0");
        for w in all.chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(&h[..2], &[0x45, 0]);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 33);
    }

    /// Packets queued from two source addresses and ports reach a real socket from those, with
    /// their bytes and a checksum the kernel accepted (a bad one is dropped before the socket).
    #[test]
    fn queued_packets_arrive_from_the_ports_written() {
        let mut raw = match RawSender::open(Ipv4Addr::LOCALHOST, 4) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: no CAP_NET_RAW here");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let SocketAddr::V4(dest) = sink.local_addr().unwrap() else {
            unreachable!()
        };
        let bodies: [&[u8]; 2] = [b"first packet", b"second, odd"];
        // SAFETY: the bodies are statics.
        unsafe {
            assert!(raw.queue(None, 64_001, dest, bodies[0].as_ptr(), bodies[0].len()));
            let other = Some(Ipv4Addr::new(127, 0, 0, 2));
            assert!(raw.queue(other, 64_003, dest, bodies[1].as_ptr(), bodies[1].len()));
        }
        raw.flush();
        let mut buf = [0u8; 64];
        for (body, from_addr) in bodies
            .iter()
            .zip([([127, 0, 0, 1], 64_001), ([127, 0, 0, 2], 64_003)])
        {
            let (n, from) = sink.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], *body);
            assert_eq!(from, SocketAddr::from(from_addr));
        }
    }
}
