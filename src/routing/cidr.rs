//! Longest-prefix match of a source address against CIDRs (SPEC §3.3).
//!
//! Owns: [`CidrTable`], the structure behind "from a core gateway or `core.trusted` CIDR" and
//! "from a provisioned trunk's CIDR", and the strict [`parse_cidr`]. Must not: allocate or hash
//! more than once per present prefix length on lookup — every INVITE is classified through it.
//!
//! Layout: per address family, one hash map per prefix length that has entries, from the masked
//! network to the value, probed from the longest length down. A few thousand trunks use only a
//! handful of distinct lengths (/32, /29, /24 …), so a lookup is a few hash probes.

use crate::fasthash::FastMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A map from CIDR blocks to values, answering with the most specific block containing an
/// address.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), as a dual-stack socket
/// reports IPv4 peers, are the IPv4 address they carry: on lookup they match IPv4 entries, and an
/// entry inserted as `::ffff:a.b.c.d/96+n` is stored as `a.b.c.d/n`. Plain IPv6 entries never
/// match IPv4 sources (so `::/0` does not trust every IPv4 peer).
#[derive(Clone, Debug)]
pub struct CidrTable<T> {
    /// Present prefix lengths, longest first, each with its networks.
    v4: Vec<Level<u32, T>>,
    v6: Vec<Level<u128, T>>,
    len: usize,
}

#[derive(Clone, Debug)]
struct Level<K, T> {
    prefix_len: u8,
    mask: K,
    networks: FastMap<K, T>,
}

impl<T> Default for CidrTable<T> {
    fn default() -> Self {
        CidrTable::new()
    }
}

impl<T> CidrTable<T> {
    pub fn new() -> CidrTable<T> {
        CidrTable {
            v4: Vec::new(),
            v6: Vec::new(),
            len: 0,
        }
    }

    /// Adds `addr/prefix_len` -> `value`, returning the value it replaces for the same block.
    ///
    /// Host bits of `addr` are ignored (the block is masked); a `prefix_len` beyond the family's
    /// width (32 or 128) is taken as the full width. Use [`parse_cidr`] to reject such input
    /// with a message.
    pub fn insert(&mut self, addr: IpAddr, prefix_len: u8, value: T) -> Option<T> {
        let old = match canonical_entry(addr, prefix_len) {
            (IpAddr::V4(a), len) => {
                insert_level(&mut self.v4, u32::from(a), len, mask_v4(len), value)
            }
            (IpAddr::V6(a), len) => {
                insert_level(&mut self.v6, u128::from(a), len, mask_v6(len), value)
            }
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of the longest prefix containing `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match canonical(ip) {
            IpAddr::V4(a) => lookup_level(&self.v4, u32::from(a)),
            IpAddr::V6(a) => lookup_level(&self.v6, u128::from(a)),
        }
    }

    /// Whether any entry contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.lookup(ip).is_some()
    }

    /// Number of distinct blocks.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T> FromIterator<(IpAddr, u8, T)> for CidrTable<T> {
    fn from_iter<I: IntoIterator<Item = (IpAddr, u8, T)>>(iter: I) -> Self {
        let mut table = CidrTable::new();
        for (addr, len, value) in iter {
            table.insert(addr, len, value);
        }
        table
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The family and clamped length an entry is stored under (see [`CidrTable`] on mapped
/// addresses: only blocks within `::ffff:0:0/96` become IPv4 entries).
fn canonical_entry(addr: IpAddr, prefix_len: u8) -> (IpAddr, u8) {
    match addr {
        IpAddr::V4(_) => (addr, prefix_len.min(32)),
        IpAddr::V6(v6) => {
            let len = prefix_len.min(128);
            match v6.to_ipv4_mapped() {
                Some(v4) if len >= 96 => (IpAddr::V4(v4), len - 96),
                _ => (addr, len),
            }
        }
    }
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn insert_level<K, T>(
    levels: &mut Vec<Level<K, T>>,
    addr: K,
    len: u8,
    mask: K,
    value: T,
) -> Option<T>
where
    K: Copy + Eq + std::hash::Hash + std::ops::BitAnd<Output = K>,
{
    let at = match levels.iter().position(|l| l.prefix_len <= len) {
        Some(i) if levels[i].prefix_len == len => i,
        Some(i) => {
            levels.insert(i, Level::new(len, mask));
            i
        }
        None => {
            levels.push(Level::new(len, mask));
            levels.len() - 1
        }
    };
    levels[at].networks.insert(addr & mask, value)
}

impl<K, T> Level<K, T> {
    fn new(prefix_len: u8, mask: K) -> Self {
        Level {
            prefix_len,
            mask,
            networks: FastMap::default(),
        }
    }
}

fn lookup_level<K, T>(levels: &[Level<K, T>], addr: K) -> Option<&T>
where
    K: Copy + Eq + std::hash::Hash + std::ops::BitAnd<Output = K>,
{
    levels
        .iter()
        .find_map(|level| level.networks.get(&(addr & level.mask)))
}

/// A strict CIDR: `198.51.100.0/24`, `2001:db8::/32`, or a bare address (`/32`, `/128`).
///
/// Stricter than a plain address parse: host bits set below the prefix (`10.0.0.1/8`) are an
/// error, because such an entry usually means a typo in the prefix length, and silently masking
/// it would trust a different block than the operator read.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?}: prefix length must be a number"));
            }
            match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: prefix length must be at most {max}")),
            }
        }
    };
    let host_bits_set = match ip {
        IpAddr::V4(a) => u32::from(a) & !mask_v4(len) != 0,
        IpAddr::V6(a) => u128::from(a) & !mask_v6(len) != 0,
    };
    if host_bits_set {
        let network = match ip {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(len))),
        };
        return Err(format!(
            "{s:?}: host bits set below the /{len} prefix (did you mean {network}/{len}?)"
        ));
    }
    Ok((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table(entries: &[(&str, &'static str)]) -> CidrTable<&'static str> {
        entries
            .iter()
            .map(|(cidr, v)| {
                let (a, l) = parse_cidr(cidr).unwrap();
                (a, l, *v)
            })
            .collect()
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&[
            ("10.0.0.0/8", "eight"),
            ("10.1.0.0/16", "sixteen"),
            ("10.1.2.0/24", "twentyfour"),
            ("10.1.2.3", "host"),
        ]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&"host"));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&"twentyfour"));
        assert_eq!(t.lookup(ip("10.1.3.4")), Some(&"sixteen"));
        assert_eq!(t.lookup(ip("10.2.3.4")), Some(&"eight"));
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert!(!t.contains(ip("192.0.2.1")));
        // Insertion order does not matter.
        let r = table(&[
            ("10.1.2.3", "host"),
            ("10.0.0.0/8", "eight"),
            ("10.1.2.0/24", "twentyfour"),
            ("10.1.0.0/16", "sixteen"),
        ]);
        for a in ["10.1.2.3", "10.1.2.4", "10.1.3.4", "10.2.3.4", "11.0.0.1"] {
            assert_eq!(t.lookup(ip(a)), r.lookup(ip(a)), "{a}");
        }
    }

    #[test]
    fn default_route_and_odd_lengths() {
        let t = table(&[("0.0.0.0/0", "any"), ("198.51.100.16/29", "trunk")]);
        assert_eq!(t.lookup(ip("198.51.100.23")), Some(&"trunk"));
        assert_eq!(t.lookup(ip("198.51.100.24")), Some(&"any"));
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(&"any"));
        // /0 of IPv4 does not cover IPv6.
        assert_eq!(t.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn ipv6() {
        let t = table(&[
            ("2001:db8::/32", "doc"),
            ("2001:db8:1::/48", "site"),
            ("2001:db8:1::7", "host"),
            ("::/0", "any6"),
        ]);
        assert_eq!(t.lookup(ip("2001:db8:1::7")), Some(&"host"));
        assert_eq!(t.lookup(ip("2001:db8:1::8")), Some(&"site"));
        assert_eq!(t.lookup(ip("2001:db8:2::1")), Some(&"doc"));
        assert_eq!(t.lookup(ip("2001:db9::1")), Some(&"any6"));
        // IPv6 entries never match IPv4 sources, mapped or not.
        assert_eq!(t.lookup(ip("192.0.2.1")), None);
        assert_eq!(t.lookup(ip("::ffff:192.0.2.1")), None);
    }

    #[test]
    fn mapped_ipv4() {
        let mut t = table(&[("192.0.2.0/24", "v4"), ("203.0.113.9", "host")]);
        assert_eq!(t.lookup(ip("::ffff:192.0.2.77")), Some(&"v4"));
        assert_eq!(t.lookup(ip("::ffff:203.0.113.9")), Some(&"host"));
        assert_eq!(t.lookup(ip("::ffff:198.51.100.1")), None);
        // The deprecated IPv4-compatible form (::a.b.c.d) is a plain IPv6 address.
        assert_eq!(t.lookup(ip("::192.0.2.77")), None);
        // A mapped entry is an IPv4 entry.
        t.insert(ip("::ffff:198.51.100.0"), 120, "mapped");
        assert_eq!(t.lookup(ip("198.51.100.200")), Some(&"mapped"));
        assert_eq!(t.lookup(ip("::ffff:198.51.100.200")), Some(&"mapped"));
    }

    #[test]
    fn insert_masks_replaces_and_clamps() {
        let mut t = CidrTable::new();
        assert!(t.is_empty());
        assert_eq!(t.insert(ip("10.9.9.9"), 8, 1), None);
        assert_eq!(t.insert(ip("10.0.0.0"), 8, 2), Some(1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(ip("10.200.0.1")), Some(&2));
        assert_eq!(t.insert(ip("192.0.2.1"), 200, 3), None);
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&3));
        assert_eq!(t.lookup(ip("192.0.2.2")), None);
        assert_eq!(t.insert(ip("2001:db8::1"), 255, 4), None);
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(&4));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn many_entries() {
        let mut t = CidrTable::new();
        for i in 0..4000u32 {
            let a = Ipv4Addr::from(0x0a00_0000 | (i << 8));
            t.insert(IpAddr::V4(a), 24, i);
        }
        t.insert(ip("10.0.0.0"), 8, u32::MAX);
        assert_eq!(t.lookup(ip("10.0.17.5")), Some(&17));
        assert_eq!(t.lookup(ip("10.15.159.1")), Some(&3999));
        assert_eq!(t.lookup(ip("10.15.160.1")), Some(&u32::MAX));
    }

    #[test]
    fn parse() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap(), (ip("10.0.0.0"), 8));
        assert_eq!(parse_cidr("203.0.113.7").unwrap(), (ip("203.0.113.7"), 32));
        assert_eq!(parse_cidr("::1").unwrap(), (ip("::1"), 128));
        assert_eq!(parse_cidr("2001:db8::/32").unwrap(), (ip("2001:db8::"), 32));
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap(), (ip("0.0.0.0"), 0));
        assert_eq!(parse_cidr("::/0").unwrap(), (ip("::"), 0));
        let e = parse_cidr("10.0.0.1/8").unwrap_err();
        assert!(e.contains("host bits") && e.contains("10.0.0.0/8"), "{e}");
        let e = parse_cidr("2001:db8::1/32").unwrap_err();
        assert!(
            e.contains("host bits") && e.contains("2001:db8::/32"),
            "{e}"
        );
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "10.0.0/8",
            "2001:db8::/129",
            "example.com",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
