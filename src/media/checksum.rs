//! Internet checksums (RFC 1071) for the headers the relay writes itself: the raw sender's and
//! the AF_XDP path's.

/// RFC 768's UDP checksum: the pseudo-header (`src`, `dst`, protocol, UDP length) and the
/// datagram given in `parts` (its header with the checksum field 0, then the payload; each part
/// but the last of even length). A computed 0 is sent as all ones: 0 means "no checksum".
pub fn udp(src: [u8; 4], dst: [u8; 4], parts: &[&[u8]]) -> u16 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut s = u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + libc::IPPROTO_UDP as u64
        + len as u64;
    for p in parts {
        s = add(p, s);
    }
    match !fold(s) {
        0 => 0xffff,
        c => c,
    }
}

/// The IPv4 header checksum of `header` (its checksum field 0).
pub fn ipv4_header(header: &[u8]) -> u16 {
    !fold(add(header, 0))
}

/// The big-endian 16-bit words of `bytes` (an odd last byte padded with zero) added to `s`,
/// not yet folded. Read four bytes at a time: the fold gives the same 16-bit sum.
fn add(bytes: &[u8], mut s: u64) -> u64 {
    let mut words = bytes.chunks_exact(4);
    for w in &mut words {
        s += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    s + u64::from(u32::from_be_bytes(tail))
}

/// One's-complement fold to 16 bits.
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}
