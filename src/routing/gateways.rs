//! Core gateways: their addresses, the order to try them for a call, and qualify state
//! (SPEC §2 `[core]`, §3.4 "Route", §3.5 "matched by source IP, any port").
//!
//! Owns: parsing `core.gateways[i].uri` into an address and transport, the per-call try order
//! ([`Gateways::plan`]) and the OPTIONS-ping bookkeeping ([`Qualify`]). Must not: send, resolve
//! host names, read clocks or draw random numbers — the runtime passes `now` and a random `u32`,
//! so a test can replay any decision.

use crate::config::{Gateway, Transport};
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};

/// RFC 3261 §19.1.2: the default port of `sip:` URIs.
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// RFC 3261 §19.1.2: the default port of `sips:` URIs (and `transport=tls`).
pub const DEFAULT_SIPS_PORT: u16 = 5061;

/// A `core.gateways[i].uri` that cannot be used. Displays as `core.gateways[i].uri: problem`,
/// like config errors, so `check-config` and start-up report it the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("core.gateways[{index}].uri: {problem}")]
pub struct GatewayError {
    pub index: usize,
    pub problem: String,
}

impl GatewayError {
    /// The dotted config key, `core.gateways[i].uri`.
    pub fn key(&self) -> String {
        format!("core.gateways[{}].uri", self.index)
    }
}

/// Whether a gateway may be routed to, as qualify last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

#[derive(Clone, Debug)]
struct Entry {
    uri: String,
    addr: SocketAddr,
    transport: Transport,
    priority: u32,
    /// ≥ 1 (config.rs refuses 0; a 0 here would make a member unreachable, so it is raised).
    weight: u32,
    up: bool,
}

/// The configured core gateways, in config order; index `i` is `core.gateways[i]`.
#[derive(Clone, Debug)]
pub struct Gateways {
    entries: Vec<Entry>,
    /// Indices sorted by (priority, index): runs of equal priority are the weighted groups.
    by_priority: Vec<usize>,
}

impl Gateways {
    /// Parses every gateway URI. Host names are refused here: they are resolved (RFC 3263) off
    /// the workers, and the worker-side table holds only literal addresses.
    pub fn new(config: &[Gateway]) -> Result<Gateways, GatewayError> {
        let mut entries = Vec::with_capacity(config.len());
        for (index, gw) in config.iter().enumerate() {
            let (addr, transport) =
                parse_sip_target(&gw.uri).map_err(|problem| GatewayError { index, problem })?;
            entries.push(Entry {
                uri: gw.uri.clone(),
                addr,
                transport,
                priority: gw.priority,
                weight: gw.weight.max(1),
                up: true,
            });
        }
        let mut by_priority: Vec<usize> = (0..entries.len()).collect();
        by_priority.sort_by_key(|&i| (entries[i].priority, i));
        Ok(Gateways {
            entries,
            by_priority,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Fills `out` with the gateways to try for one call, first choice first (SPEC §3.4):
    /// ascending priority; within one priority a weighted random order in which each remaining
    /// member comes next with probability weight / remaining weight (the RFC 2782 SRV
    /// selection, repeated); gateways marked down are left out. Empty when all are down.
    ///
    /// `rand` is the only randomness: the same `rand` and state give the same order. `out` is
    /// cleared first; it stays on the stack up to 8 gateways, and a reused `out` that once
    /// spilled keeps its capacity, so steady state does not allocate.
    pub fn plan(&self, rand: u32, out: &mut SmallVec<[usize; 8]>) {
        out.clear();
        let mut rng = SplitMix64::new(rand);
        let order = &self.by_priority;
        let mut start = 0;
        while let Some(&first) = order.get(start) {
            let priority = self.entries[first].priority;
            let end = order[start..]
                .iter()
                .position(|&i| self.entries[i].priority != priority)
                .map_or(order.len(), |n| start + n);
            let group_start = out.len();
            out.extend(
                order[start..end]
                    .iter()
                    .copied()
                    .filter(|&i| self.entries[i].up),
            );
            self.weighted_order(&mut out[group_start..], &mut rng);
            start = end;
        }
    }

    /// Orders `group` in place by repeated weighted draws without replacement.
    fn weighted_order(&self, group: &mut [usize], rng: &mut SplitMix64) {
        let weight = |i: usize| u64::from(self.entries[i].weight);
        let mut total: u64 = group.iter().map(|&i| weight(i)).sum();
        for k in 0..group.len().saturating_sub(1) {
            let mut r = rng.next() % total.max(1);
            let mut chosen = group.len() - 1;
            for (j, &i) in group.iter().enumerate().skip(k) {
                if r < weight(i) {
                    chosen = j;
                    break;
                }
                r -= weight(i);
            }
            group.swap(k, chosen);
            total -= weight(group[k]);
        }
    }

    /// Qualify saw an answer: route to `i` again. Unknown indices are ignored.
    pub fn mark_up(&mut self, i: usize) {
        if let Some(e) = self.entries.get_mut(i) {
            e.up = true;
        }
    }

    /// Qualify saw no answer: skip `i` until it answers again. Unknown indices are ignored.
    pub fn mark_down(&mut self, i: usize) {
        if let Some(e) = self.entries.get_mut(i) {
            e.up = false;
        }
    }

    /// Applies a [`Qualify`] transition.
    pub fn set_health(&mut self, i: usize, health: Health) {
        match health {
            Health::Up => self.mark_up(i),
            Health::Down => self.mark_down(i),
        }
    }

    /// Gateways start up, so calls route before the first qualify round trip.
    pub fn is_up(&self, i: usize) -> bool {
        self.entries.get(i).is_some_and(|e| e.up)
    }

    /// Where to send to gateway `i`. Panics if `i >= len()`: indices come from [`Self::plan`].
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.entries[i].addr
    }

    /// The transport of gateway `i` (`transport=` param, or TLS for `sips:`). Panics if
    /// `i >= len()`.
    pub fn transport(&self, i: usize) -> Transport {
        self.entries[i].transport
    }

    /// The URI as configured, for logs and the Request-URI host. Panics if `i >= len()`.
    pub fn uri(&self, i: usize) -> &str {
        &self.entries[i].uri
    }

    /// SPEC §3.3/§3.5: traffic from any gateway's IP, any port, is the core. An IPv4-mapped
    /// IPv6 source (dual-stack socket) counts as its IPv4 address.
    pub fn is_core_source(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.entries
            .iter()
            .any(|e| e.addr.ip().to_canonical() == ip)
    }

    /// The gateway whose address is exactly `addr` (a response's source), if any.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        let ip = addr.ip().to_canonical();
        self.entries
            .iter()
            .position(|e| e.addr.port() == addr.port() && e.addr.ip().to_canonical() == ip)
    }
}

/// `sip:[user@]IP[:port][;params]` -> address and transport (gateway URIs, trunk destinations,
/// number URI routes). Only the transport parameter is
/// interpreted; others (`lr`, …) are carried in the configured URI untouched.
pub fn parse_sip_target(uri: &str) -> Result<(SocketAddr, Transport), String> {
    parse_sip_target_with(uri, |_| None)
}

/// The host part of a `sip:`/`sips:` URI, lower-cased, when it is a name rather than an IP
/// address (what [`parse_sip_target_with`] would ask its resolver for).
pub fn sip_target_host_name(uri: &str) -> Option<String> {
    let lower = uri.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("sips:")
        .or_else(|| lower.strip_prefix("sip:"))?;
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    let hostport = rest.split_once(';').map_or(rest, |(h, _)| h);
    let (host, _) = split_host_port(hostport).ok()?;
    (!host.is_empty() && host.parse::<IpAddr>().is_err()).then(|| host.to_string())
}

/// [`parse_sip_target`], with host names looked up by `resolve` (e.g. the snapshot's resolved
/// names: workers never query DNS themselves).
pub fn parse_sip_target_with(
    uri: &str,
    resolve: impl Fn(&str) -> Option<IpAddr>,
) -> Result<(SocketAddr, Transport), String> {
    let lower = uri.to_ascii_lowercase();
    let (secure, rest) = if let Some(r) = lower.strip_prefix("sips:") {
        (true, r)
    } else if let Some(r) = lower.strip_prefix("sip:") {
        (false, r)
    } else {
        return Err(format!("must be a sip: or sips: URI, got {uri:?}"));
    };
    // RFC 3261 §19.1.1: headers follow '?'; they do not address anything.
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    let (hostport, params) = rest.split_once(';').unwrap_or((rest, ""));

    let mut transport = if secure {
        Transport::Tls
    } else {
        Transport::Udp
    };
    for param in params.split(';') {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name != "transport" {
            continue;
        }
        transport = match (value, secure) {
            // RFC 3261 §26.2.2: sips means TLS hop by hop; transport=tcp is TLS over TCP.
            ("tls" | "tcp", true) => Transport::Tls,
            ("udp", true) => return Err(format!("sips: cannot use transport=udp, got {uri:?}")),
            ("udp", false) => Transport::Udp,
            ("tcp", false) => Transport::Tcp,
            ("tls", false) => Transport::Tls,
            _ => {
                return Err(format!(
                    "transport must be udp, tcp or tls, got {value:?} in {uri:?}"
                ))
            }
        };
    }

    let (host, port) = split_host_port(hostport).map_err(|p| format!("{p} in {uri:?}"))?;
    let ip: IpAddr = host
        .parse()
        .or_else(|_| resolve(host).ok_or(()))
        .map_err(|_| {
            if host.is_empty() {
                format!("missing host in {uri:?}")
            } else {
                format!(
                    "host must be an IP address, got {host:?} in {uri:?} (host names are resolved \
                 elsewhere)"
                )
            }
        })?;
    let default_port = if transport == Transport::Tls {
        DEFAULT_SIPS_PORT
    } else {
        DEFAULT_SIP_PORT
    };
    Ok((SocketAddr::new(ip, port.unwrap_or(default_port)), transport))
}

/// `1.2.3.4`, `1.2.3.4:5060`, `[2001:db8::1]`, `[2001:db8::1]:5060`.
fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in host".to_string())?;
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("unexpected {p:?} after host")),
            },
        }
    } else if hostport.matches(':').count() > 1 {
        return Err("an IPv6 host must be in brackets".to_string());
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("port must be 1-65535, got {p:?}")),
        },
    };
    Ok((host, port))
}

/// SplitMix64 (Steele et al., 2014): a well-mixed sequence from any seed, including 0, so that
/// consecutive `rand` values from the runtime give independent-looking orders.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u32) -> SplitMix64 {
        SplitMix64(u64::from(seed))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// RFC 3261 §17.1.2.2: Timer F = 64·T1 = 32 s, after which a non-INVITE client transaction
/// (an OPTIONS ping) has timed out.
pub const TIMER_F_MS: u64 = 32_000;

/// Sans-IO qualify: which gateways to OPTIONS-ping and when a missing answer marks one down
/// (SPEC §2 `core.qualify_s`, §3.4 "gateways marked down by qualify are skipped").
///
/// Drive it like the other cores: after any event call [`Qualify::poll_due`] (send an OPTIONS to
/// each index it yields) and [`Qualify::poll_expired`] (apply the transitions), then wake at
/// [`Qualify::poll_timeout`]. Report answers with [`Qualify::on_response`]; the transaction
/// layer may report its own Timer F with [`Qualify::on_timeout`]. Transitions come back as
/// `Some(Health)` for the caller to apply with [`Gateways::set_health`] and log once.
#[derive(Clone, Debug)]
pub struct Qualify {
    /// 0 = qualify off: nothing is ever due and every gateway stays up.
    interval_ms: u64,
    timeout_ms: u64,
    probes: Vec<Probe>,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    next_due_ms: u64,
    /// When the outstanding OPTIONS was sent; at most one per gateway.
    sent_ms: Option<u64>,
    up: bool,
}

impl Qualify {
    /// `gateways` gateways pinged every `qualify_s` seconds, the first round due at `now_ms`.
    /// Gateways start up. The answer timeout is Timer F (32 s), shortened to the interval when
    /// that is shorter, so a probe has always finished before the next is due.
    pub fn new(gateways: usize, qualify_s: u32, now_ms: u64) -> Qualify {
        let interval_ms = u64::from(qualify_s) * 1000;
        Qualify {
            interval_ms,
            timeout_ms: TIMER_F_MS.min(interval_ms).max(1),
            probes: vec![
                Probe {
                    next_due_ms: now_ms,
                    sent_ms: None,
                    up: true,
                };
                gateways
            ],
        }
    }

    /// A shorter answer timeout than Timer F; clamped to 1 ms ..= 32 s (a longer wait would
    /// outlive the OPTIONS transaction itself).
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Qualify {
        self.timeout_ms = timeout_ms.clamp(1, TIMER_F_MS);
        self
    }

    pub fn enabled(&self) -> bool {
        self.interval_ms > 0
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Appends to `out` the gateways to ping now and records the pings as sent. A gateway with
    /// an OPTIONS still outstanding is not pinged again.
    pub fn poll_due(&mut self, now_ms: u64, out: &mut SmallVec<[usize; 8]>) {
        if !self.enabled() {
            return;
        }
        for (i, p) in self.probes.iter_mut().enumerate() {
            if p.sent_ms.is_none() && p.next_due_ms <= now_ms {
                p.sent_ms = Some(now_ms);
                p.next_due_ms = now_ms + self.interval_ms;
                out.push(i);
            }
        }
    }

    /// Closes pings unanswered for `timeout_ms` and appends to `out` the gateways that went
    /// down because of it (those already down are closed silently).
    pub fn poll_expired(&mut self, now_ms: u64, out: &mut SmallVec<[usize; 8]>) {
        for i in 0..self.probes.len() {
            let expired = self.probes[i]
                .sent_ms
                .is_some_and(|sent| now_ms.saturating_sub(sent) >= self.timeout_ms);
            if expired && self.on_timeout(i, now_ms).is_some() {
                out.push(i);
            }
        }
    }

    /// The next instant at which [`Self::poll_due`] or [`Self::poll_expired`] has work, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        self.probes
            .iter()
            .map(|p| match p.sent_ms {
                Some(sent) => sent + self.timeout_ms,
                None => p.next_due_ms,
            })
            .min()
    }

    /// Any response to the OPTIONS, even 4xx/5xx, proves the gateway is alive (it answered):
    /// up. Returns `Some(Health::Up)` if that is a change.
    pub fn on_response(&mut self, i: usize, _now_ms: u64) -> Option<Health> {
        let p = self.probes.get_mut(i)?;
        p.sent_ms = None;
        let changed = !p.up;
        p.up = true;
        changed.then_some(Health::Up)
    }

    /// No response (Timer F or the shorter timeout): down. Returns `Some(Health::Down)` if that
    /// is a change. The next ping stays on its interval schedule.
    pub fn on_timeout(&mut self, i: usize, _now_ms: u64) -> Option<Health> {
        let p = self.probes.get_mut(i)?;
        p.sent_ms = None;
        let changed = p.up;
        p.up = false;
        changed.then_some(Health::Down)
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.probes.get(i).is_some_and(|p| p.up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(uri: &str, priority: u32, weight: u32) -> Gateway {
        Gateway {
            uri: uri.to_string(),
            priority,
            weight,
        }
    }

    fn plan(g: &Gateways, rand: u32) -> Vec<usize> {
        let mut out = SmallVec::new();
        g.plan(rand, &mut out);
        out.to_vec()
    }

    #[test]
    fn parses_uris() {
        let g = Gateways::new(&[
            gw("sip:198.51.100.20:5060;transport=udp", 1, 1),
            gw("sip:198.51.100.21", 1, 1),
            gw("SIP:198.51.100.22:5080;Transport=TCP;lr", 1, 1),
            gw("sips:[2001:db8::1]", 1, 1),
            gw("sip:core@[2001:db8::2]:5062;transport=tls", 1, 1),
            gw("sip:198.51.100.23;transport=tls", 1, 1),
            gw("sips:203.0.113.5:5071;transport=tcp?x=y", 1, 1),
        ])
        .unwrap();
        assert_eq!(g.len(), 7);
        let want: [(&str, Transport); 7] = [
            ("198.51.100.20:5060", Transport::Udp),
            ("198.51.100.21:5060", Transport::Udp),
            ("198.51.100.22:5080", Transport::Tcp),
            ("[2001:db8::1]:5061", Transport::Tls),
            ("[2001:db8::2]:5062", Transport::Tls),
            ("198.51.100.23:5061", Transport::Tls),
            ("203.0.113.5:5071", Transport::Tls),
        ];
        for (i, (addr, transport)) in want.iter().enumerate() {
            assert_eq!(g.addr(i), addr.parse().unwrap(), "{i}");
            assert_eq!(g.transport(i), *transport, "{i}");
        }
        assert_eq!(g.uri(0), "sip:198.51.100.20:5060;transport=udp");
    }

    #[test]
    fn rejects_bad_uris_naming_the_key() {
        let cases = [
            ("sips:core.example.net", "host must be an IP address"),
            ("sip:core.example.net:5060", "host must be an IP address"),
            ("http://198.51.100.20", "sip: or sips:"),
            ("sip:198.51.100.20:0", "port"),
            ("sip:198.51.100.20:70000", "port"),
            ("sip:198.51.100.20:+50", "port"),
            ("sip:198.51.100.20:", "port"),
            ("sip:2001:db8::1", "brackets"),
            ("sip:[2001:db8::1", "unclosed"),
            ("sip:[2001:db8::1]5060", "after host"),
            ("sip:198.51.100.20;transport=sctp", "transport must be"),
            ("sips:198.51.100.20;transport=udp", "transport=udp"),
            ("sip:", "missing host"),
            ("sip:;transport=udp", "missing host"),
        ];
        for (uri, problem) in cases {
            let e = Gateways::new(&[gw("sip:192.0.2.1", 1, 1), gw(uri, 1, 1)]).unwrap_err();
            assert_eq!(e.index, 1, "{uri}");
            assert_eq!(e.key(), "core.gateways[1].uri");
            let text = e.to_string();
            assert!(text.starts_with("core.gateways[1].uri: "), "{text}");
            assert!(text.contains(problem), "{uri}: {text}");
        }
    }

    #[test]
    fn priority_order() {
        let g = Gateways::new(&[
            gw("sip:192.0.2.3", 3, 1),
            gw("sip:192.0.2.1", 1, 1),
            gw("sip:192.0.2.2", 2, 1),
            gw("sip:192.0.2.0", 0, 1),
        ])
        .unwrap();
        for seed in 0..50 {
            assert_eq!(plan(&g, seed), [3, 1, 2, 0]);
        }
        assert!(Gateways::new(&[]).unwrap().is_empty());
        assert!(plan(&Gateways::new(&[]).unwrap(), 7).is_empty());
    }

    #[test]
    fn equal_priority_is_a_permutation_and_deterministic() {
        let g = Gateways::new(&[
            gw("sip:192.0.2.1", 1, 1),
            gw("sip:192.0.2.2", 1, 2),
            gw("sip:192.0.2.3", 1, 3),
            gw("sip:192.0.2.9", 9, 1),
        ])
        .unwrap();
        let mut firsts = [0u32; 3];
        for seed in 0..1000 {
            let p = plan(&g, seed);
            assert_eq!(p, plan(&g, seed), "same seed, same order");
            assert_eq!(p.len(), 4);
            let mut head = p[..3].to_vec();
            head.sort_unstable();
            assert_eq!(head, [0, 1, 2]);
            assert_eq!(p[3], 3, "the lower priority comes last");
            firsts[p[0]] += 1;
        }
        assert!(firsts.iter().all(|&n| n > 0), "{firsts:?}");
    }

    #[test]
    fn weights_are_roughly_proportional() {
        let g = Gateways::new(&[
            gw("sip:192.0.2.1", 5, 1),
            gw("sip:192.0.2.2", 5, 3),
            gw("sip:192.0.2.3", 5, 6),
        ])
        .unwrap();
        let n = 20_000u32;
        let mut firsts = [0u32; 3];
        for seed in 0..n {
            firsts[plan(&g, seed)[0]] += 1;
        }
        for (i, want) in [0.1, 0.3, 0.6].iter().enumerate() {
            let got = f64::from(firsts[i]) / f64::from(n);
            assert!((got - want).abs() < 0.02, "gateway {i}: {got} vs {want}");
        }
        // Second choice among {0, 1} once 2 went first: 1 : 3.
        let (mut zero, mut one) = (0u32, 0u32);
        for seed in 0..n {
            let p = plan(&g, seed);
            if p[0] == 2 {
                match p[1] {
                    0 => zero += 1,
                    _ => one += 1,
                }
            }
        }
        let share = f64::from(one) / f64::from(zero + one);
        assert!((share - 0.75).abs() < 0.03, "{share}");
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let g = Gateways::new(&[
            gw("sip:192.0.2.1", 1, u32::MAX),
            gw("sip:192.0.2.2", 1, u32::MAX),
            gw("sip:192.0.2.3", 1, 0),
        ])
        .unwrap();
        for seed in 0..100 {
            assert_eq!(plan(&g, seed).len(), 3);
        }
    }

    #[test]
    fn down_gateways_are_skipped() {
        let mut g = Gateways::new(&[
            gw("sip:192.0.2.1", 1, 1),
            gw("sip:192.0.2.2", 1, 1),
            gw("sip:192.0.2.3", 2, 1),
        ])
        .unwrap();
        assert!(g.is_up(0) && g.is_up(1) && g.is_up(2));
        g.mark_down(0);
        assert!(!g.is_up(0));
        for seed in 0..20 {
            assert_eq!(plan(&g, seed), [1, 2]);
        }
        g.mark_down(1);
        assert_eq!(plan(&g, 1), [2]);
        g.set_health(2, Health::Down);
        assert!(plan(&g, 1).is_empty(), "all down: no route");
        g.mark_up(1);
        assert_eq!(plan(&g, 1), [1]);
        g.mark_down(99);
        g.mark_up(99);
        assert!(!g.is_up(99));
    }

    #[test]
    fn plan_reuses_out_and_spills_past_eight() {
        let many: Vec<Gateway> = (0..12)
            .map(|i| gw(&format!("sip:192.0.2.{i}"), 1, 1))
            .collect();
        let g = Gateways::new(&many).unwrap();
        let mut out = SmallVec::new();
        out.push(42);
        g.plan(3, &mut out);
        assert_eq!(out.len(), 12);
        let mut sorted = out.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn core_source_by_ip_any_port() {
        let g = Gateways::new(&[
            gw("sip:198.51.100.20:5060", 1, 1),
            gw("sip:[2001:db8::5]:5070", 1, 1),
        ])
        .unwrap();
        assert!(g.is_core_source("198.51.100.20".parse().unwrap()));
        assert!(g.is_core_source("::ffff:198.51.100.20".parse().unwrap()));
        assert!(g.is_core_source("2001:db8::5".parse().unwrap()));
        assert!(!g.is_core_source("198.51.100.21".parse().unwrap()));
        assert_eq!(g.index_of("198.51.100.20:5060".parse().unwrap()), Some(0));
        assert_eq!(
            g.index_of("[::ffff:198.51.100.20]:5060".parse().unwrap()),
            Some(0)
        );
        assert_eq!(g.index_of("198.51.100.20:5061".parse().unwrap()), None);
        assert_eq!(g.index_of("[2001:db8::5]:5070".parse().unwrap()), Some(1));
    }

    fn due(q: &mut Qualify, now: u64) -> Vec<usize> {
        let mut out = SmallVec::new();
        q.poll_due(now, &mut out);
        out.to_vec()
    }

    fn expired(q: &mut Qualify, now: u64) -> Vec<usize> {
        let mut out = SmallVec::new();
        q.poll_expired(now, &mut out);
        out.to_vec()
    }

    #[test]
    fn qualify_schedule_and_state() {
        let mut q = Qualify::new(2, 60, 1_000);
        assert!(q.enabled());
        assert_eq!(q.timeout_ms(), TIMER_F_MS);
        assert_eq!(q.poll_timeout(), Some(1_000));
        assert_eq!(due(&mut q, 1_000), [0, 1]);
        assert!(
            due(&mut q, 1_500).is_empty(),
            "outstanding: not pinged again"
        );
        assert_eq!(q.poll_timeout(), Some(33_000));
        // Gateway 0 answers (a 404 is an answer too); gateway 1 stays silent.
        assert_eq!(q.on_response(0, 1_200), None, "already up: no change");
        assert!(expired(&mut q, 32_999).is_empty());
        assert_eq!(expired(&mut q, 33_000), [1]);
        assert!(q.is_up(0) && !q.is_up(1));
        assert!(expired(&mut q, 40_000).is_empty(), "closed once");
        assert_eq!(q.poll_timeout(), Some(61_000));
        assert!(due(&mut q, 60_999).is_empty());
        assert_eq!(due(&mut q, 61_000), [0, 1]);
        // Gateway 1 answers late in this round: back up.
        assert_eq!(q.on_response(1, 61_500), Some(Health::Up));
        assert!(q.is_up(1));
        // The transaction layer reports Timer F for gateway 0 itself.
        assert_eq!(q.on_timeout(0, 93_000), Some(Health::Down));
        assert_eq!(q.on_timeout(0, 93_000), None);
        assert_eq!(q.on_response(7, 0), None, "unknown index ignored");
        assert!(!q.is_up(7));
    }

    #[test]
    fn qualify_shorter_timeout_and_apply() {
        let mut g = Gateways::new(&[gw("sip:192.0.2.1", 1, 1)]).unwrap();
        let mut q = Qualify::new(1, 30, 0).with_timeout_ms(2_000);
        assert_eq!(q.timeout_ms(), 2_000);
        assert_eq!(due(&mut q, 0), [0]);
        assert_eq!(expired(&mut q, 2_000), [0]);
        g.set_health(0, Health::Down);
        assert!(plan(&g, 0).is_empty());
        assert_eq!(due(&mut q, 30_000), [0]);
        if let Some(h) = q.on_response(0, 30_010) {
            g.set_health(0, h);
        }
        assert_eq!(plan(&g, 0), [0]);
        // Clamped to Timer F and to at least 1 ms.
        assert_eq!(
            Qualify::new(1, 60, 0).with_timeout_ms(90_000).timeout_ms(),
            TIMER_F_MS
        );
        assert_eq!(Qualify::new(1, 60, 0).with_timeout_ms(0).timeout_ms(), 1);
        // An interval shorter than Timer F bounds the default timeout.
        assert_eq!(Qualify::new(1, 10, 0).timeout_ms(), 10_000);
    }

    #[test]
    fn qualify_off() {
        let mut q = Qualify::new(3, 0, 0);
        assert!(!q.enabled());
        assert_eq!(q.poll_timeout(), None);
        assert!(due(&mut q, 1_000_000).is_empty());
        assert!(expired(&mut q, 1_000_000).is_empty());
        assert!(q.is_up(0) && q.is_up(2));
    }
}

#[cfg(test)]
mod host_name_tests {
    use super::*;

    #[test]
    fn host_names_are_looked_up_by_the_resolver_given() {
        assert_eq!(
            sip_target_host_name("sip:+15551230009@PBX.Example.com:5080;transport=udp"),
            Some("pbx.example.com".to_string())
        );
        assert_eq!(sip_target_host_name("sip:192.0.2.1:5060"), None);
        assert_eq!(sip_target_host_name("sip:[2001:db8::1]"), None);
        assert!(parse_sip_target("sip:pbx.example.com").is_err());
        let resolve = |h: &str| (h == "pbx.example.com").then(|| "192.0.2.7".parse().unwrap());
        assert_eq!(
            parse_sip_target_with("sip:u@pbx.example.com:5080", resolve).map(|(a, _)| a),
            Ok("192.0.2.7:5080".parse().unwrap())
        );
        assert!(parse_sip_target_with("sip:other.example.com", resolve).is_err());
    }
}
