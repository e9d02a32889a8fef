//! Per-source protection: bans, ban counters and the source rate limit (SPEC §2 `[security]`).
//!
//! Owns: the sans-IO decisions "drop this source?" and "does this failure ban it?". Every worker
//! keeps its own [`SourceGuard`]: the rate limit is enforced per worker (a source's datagrams
//! land on one worker by the kernel's 4-tuple hash), and ban *counters* for an IP live on the
//! one worker that owns the IP (the runtime's claimable directory: the first worker to count a
//! failure from it) so they are exact; the resulting ban is broadcast so every worker drops the
//! source. Time is unix milliseconds passed in.

use crate::config::SecurityConfig;
use crate::fasthash::FastMap;
use smallvec::SmallVec;
use std::net::IpAddr;

/// Matches User-Agents against `scanner_user_agents` (lower-cased substrings), case-insensitively
/// and without allocating. Every request with a User-Agent pays for this, so a short one (the
/// usual) is searched directly: only positions holding some pattern's first byte are compared.
/// A long one goes through `memmem` searchers, whose cost does not grow with repeated near
/// misses.
pub struct ScannerMatcher {
    patterns: Vec<Box<[u8]>>,
    finders: Vec<memchr::memmem::Finder<'static>>,
    /// First bytes of the patterns, in both cases.
    starts: [bool; 256],
}

/// User-Agents up to this long are searched position by position.
const SHORT_USER_AGENT: usize = 64;

impl ScannerMatcher {
    pub fn new(patterns: &[String]) -> ScannerMatcher {
        let patterns: Vec<Box<[u8]>> = patterns
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.to_ascii_lowercase().into_bytes().into_boxed_slice())
            .collect();
        let finders = patterns
            .iter()
            .map(|p| memchr::memmem::Finder::new(&p[..]).into_owned())
            .collect();
        let mut starts = [false; 256];
        for p in &patterns {
            if let Some(&b) = p.first() {
                starts[usize::from(b)] = true;
                starts[usize::from(b.to_ascii_uppercase())] = true;
            }
        }
        ScannerMatcher {
            patterns,
            finders,
            starts,
        }
    }

    pub fn matches(&self, user_agent: &[u8]) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        if user_agent.len() <= SHORT_USER_AGENT {
            // Position by position, folding case as we go: only positions whose byte starts a
            // pattern compare anything, so a typical User-Agent costs a table lookup per byte.
            for i in 0..user_agent.len() {
                if self.starts[usize::from(user_agent[i])]
                    && self
                        .patterns
                        .iter()
                        .any(|p| starts_with_folded(&user_agent[i..], p))
                {
                    return true;
                }
            }
            return false;
        }
        self.matches_long(user_agent)
    }

    /// Long User-Agents: lower-cased once into a stack buffer (checked on their first 256 bytes,
    /// where scanners put their name) and searched with memmem. Out of line, so the short path
    /// does not pay for the buffer.
    #[inline(never)]
    fn matches_long(&self, user_agent: &[u8]) -> bool {
        let mut buf = [0u8; 256];
        let n = user_agent.len().min(buf.len());
        for (d, s) in buf.iter_mut().zip(&user_agent[..n]) {
            *d = s.to_ascii_lowercase();
        }
        self.finders.iter().any(|f| f.find(&buf[..n]).is_some())
    }
}

/// `text` starts with the lower-case `pattern`, ignoring ASCII case; stops at the first
/// difference (near misses such as `sipedge` against `sipvicious` differ within a few bytes).
fn starts_with_folded(text: &[u8], pattern: &[u8]) -> bool {
    /// ASCII lower case by table: one load, where `to_ascii_lowercase` is a compare and a select.
    static LOWER: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = (i as u8).to_ascii_lowercase();
            i += 1;
        }
        t
    };
    if text.len() < pattern.len() {
        return false;
    }
    for (k, &p) in pattern.iter().enumerate() {
        if LOWER[usize::from(text[k])] != p {
            return false;
        }
    }
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    AuthFailures,
    Throttled,
    Manual,
}

impl BanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BanReason::AuthFailures => "auth_failures",
            BanReason::Throttled => "throttled",
            BanReason::Manual => "manual",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    pub ip: IpAddr,
    pub until_ms: u64,
    pub reason: BanReason,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

#[derive(Default)]
struct Counters {
    auth_failures: WindowCount,
    throttles: WindowCount,
}

/// Limits up to this are counted exactly over a sliding window; larger ones (configs that mean
/// "practically never") over fixed windows, so work and memory per source stay bounded.
const EXACT_LIMIT: u32 = 64;

/// Events of one kind from one source within `window_s`.
#[derive(Default)]
struct WindowCount {
    /// Event times, oldest first (exact mode).
    times: SmallVec<[u64; 16]>,
    /// Fixed-window mode: start of the current window and events in it.
    window_start_ms: u64,
    in_window: u32,
}

impl WindowCount {
    /// Counts an event at `now_ms`; true when it is the `limit`-th within the window.
    fn hit(&mut self, now_ms: u64, window_ms: u64, limit: u32) -> bool {
        if limit <= EXACT_LIMIT {
            self.forget_before(now_ms, window_ms);
            self.times.push(now_ms);
            self.times.len() >= limit as usize
        } else {
            if now_ms.saturating_sub(self.window_start_ms) >= window_ms {
                self.window_start_ms = now_ms;
                self.in_window = 0;
            }
            self.in_window += 1;
            self.in_window >= limit
        }
    }

    fn forget_before(&mut self, now_ms: u64, window_ms: u64) {
        let old = self
            .times
            .iter()
            .take_while(|t| now_ms.saturating_sub(**t) >= window_ms)
            .count();
        self.times.drain(..old);
        if now_ms.saturating_sub(self.window_start_ms) >= window_ms {
            self.in_window = 0;
        }
    }

    fn reset(&mut self) {
        self.times.clear();
        self.in_window = 0;
    }

    fn is_empty(&self) -> bool {
        self.times.is_empty() && self.in_window == 0
    }
}

/// Caps that keep a spoofed-source flood from growing the tables without bound.
const MAX_TRACKED_SOURCES: usize = 1 << 20;

pub struct SourceGuard {
    cfg: SecurityConfig,
    scanners: ScannerMatcher,
    bans: FastMap<IpAddr, Ban>,
    buckets: FastMap<IpAddr, Bucket>,
    counters: FastMap<IpAddr, Counters>,
    last_sweep_ms: u64,
}

impl SourceGuard {
    pub fn new(cfg: SecurityConfig) -> SourceGuard {
        SourceGuard {
            scanners: ScannerMatcher::new(&cfg.scanner_user_agents),
            cfg,
            bans: FastMap::default(),
            buckets: FastMap::default(),
            counters: FastMap::default(),
            last_sweep_ms: 0,
        }
    }

    /// The User-Agent names a scanner (dropped silently, SPEC §3.2).
    pub fn is_scanner(&self, user_agent: &[u8]) -> bool {
        self.scanners.matches(user_agent)
    }

    pub fn config(&self) -> &SecurityConfig {
        &self.cfg
    }

    pub fn is_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.bans.get(&ip).is_some_and(|b| b.until_ms > now_ms)
    }

    /// Token bucket of `source_rate_limit` per second with the same burst.
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        let rate = f64::from(self.cfg.source_rate_limit);
        if self.buckets.len() >= MAX_TRACKED_SOURCES && !self.buckets.contains_key(&ip) {
            self.sweep(now_ms, true);
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: rate,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a failed authentication; returns the ban when this one reaches the limit.
    pub fn record_auth_failure(&mut self, ip: IpAddr, now_ms: u64) -> Option<Ban> {
        let limit = self.cfg.auth_fail_limit;
        self.record(ip, now_ms, limit, BanReason::AuthFailures, |c| {
            &mut c.auth_failures
        })
    }

    /// Counts a throttled REGISTER; returns the ban when this one reaches the limit.
    pub fn record_throttle(&mut self, ip: IpAddr, now_ms: u64) -> Option<Ban> {
        let limit = self.cfg.throttle_ban_limit;
        self.record(ip, now_ms, limit, BanReason::Throttled, |c| {
            &mut c.throttles
        })
    }

    fn record(
        &mut self,
        ip: IpAddr,
        now_ms: u64,
        limit: u32,
        reason: BanReason,
        which: impl Fn(&mut Counters) -> &mut WindowCount,
    ) -> Option<Ban> {
        if self.is_banned(ip, now_ms) {
            return None;
        }
        if self.counters.len() >= MAX_TRACKED_SOURCES && !self.counters.contains_key(&ip) {
            self.sweep(now_ms, true);
        }
        let window_ms = u64::from(self.cfg.window_s) * 1000;
        let count = which(self.counters.entry(ip).or_default());
        if count.hit(now_ms, window_ms, limit) {
            count.reset();
            let ban = Ban {
                ip,
                until_ms: now_ms + u64::from(self.cfg.ban_s) * 1000,
                reason,
            };
            self.apply_ban(ban);
            return Some(ban);
        }
        None
    }

    pub fn apply_ban(&mut self, ban: Ban) {
        self.bans.insert(ban.ip, ban);
    }

    pub fn lift_ban(&mut self, ip: IpAddr) -> bool {
        self.counters.remove(&ip);
        self.bans.remove(&ip).is_some()
    }

    pub fn bans(&self, now_ms: u64) -> impl Iterator<Item = &Ban> {
        self.bans.values().filter(move |b| b.until_ms > now_ms)
    }

    pub fn bans_active(&self, now_ms: u64) -> usize {
        self.bans(now_ms).count()
    }

    /// Forgets expired bans, idle buckets and empty counters; cheap to call often (it runs at most
    /// once a second unless `force`).
    pub fn sweep(&mut self, now_ms: u64, force: bool) {
        if !force && now_ms.saturating_sub(self.last_sweep_ms) < 1000 {
            return;
        }
        self.last_sweep_ms = now_ms;
        self.bans.retain(|_, b| b.until_ms > now_ms);
        // A bucket idle for a full second is full again: forgetting it changes nothing.
        self.buckets
            .retain(|_, b| now_ms.saturating_sub(b.last_ms) < 1000);
        let window_ms = u64::from(self.cfg.window_s) * 1000;
        self.counters.retain(|_, c| {
            c.auth_failures.forget_before(now_ms, window_ms);
            c.throttles.forget_before(now_ms, window_ms);
            !(c.auth_failures.is_empty() && c.throttles.is_empty())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SecurityConfig {
        SecurityConfig {
            window_s: 60,
            auth_fail_limit: 3,
            throttle_ban_limit: 2,
            ban_s: 600,
            source_rate_limit: 5,
            drop_unknown: false,
            scanner_user_agents: vec!["friendly-scanner".into(), "sipvicious".into()],
        }
    }

    #[test]
    fn nth_failure_in_window_bans() {
        let mut g = SourceGuard::new(cfg());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(g.record_auth_failure(ip, 0), None);
        assert_eq!(g.record_auth_failure(ip, 1_000), None);
        let ban = g
            .record_auth_failure(ip, 2_000)
            .expect("third failure bans");
        assert_eq!(ban.until_ms, 602_000);
        assert!(g.is_banned(ip, 601_999));
        assert!(!g.is_banned(ip, 602_000));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut g = SourceGuard::new(cfg());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        g.record_auth_failure(ip, 0);
        g.record_auth_failure(ip, 1_000);
        assert_eq!(g.record_auth_failure(ip, 61_000), None);
        assert!(!g.is_banned(ip, 61_000));
    }

    #[test]
    fn throttle_ban_and_lift() {
        let mut g = SourceGuard::new(cfg());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(g.record_throttle(ip, 0), None);
        assert_eq!(
            g.record_throttle(ip, 10).map(|b| b.reason),
            Some(BanReason::Throttled)
        );
        assert_eq!(g.bans_active(10), 1);
        assert!(g.lift_ban(ip));
        assert!(!g.is_banned(ip, 11));
    }

    #[test]
    fn huge_limits_are_counted_in_bounded_space() {
        let mut g = SourceGuard::new(SecurityConfig {
            auth_fail_limit: 1_000_000,
            ..cfg()
        });
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        for i in 0..999_999u64 {
            assert_eq!(g.record_auth_failure(ip, i / 100), None);
        }
        assert!(
            g.record_auth_failure(ip, 10_000).is_some(),
            "the millionth failure in the window bans"
        );
    }

    #[test]
    fn rate_limit_is_a_token_bucket() {
        let mut g = SourceGuard::new(cfg());
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let allowed = (0..20).filter(|_| g.allow(ip, 1_000)).count();
        assert_eq!(allowed, 5);
        // 400 ms later two tokens are back
        let allowed = (0..20).filter(|_| g.allow(ip, 1_400)).count();
        assert_eq!(allowed, 2);
    }

    #[test]
    fn scanner_user_agents_match_case_insensitively() {
        let c = cfg();
        let m = ScannerMatcher::new(&c.scanner_user_agents);
        assert!(m.matches(b"Friendly-Scanner 1.0"));
        assert!(m.matches(b"x SIPVicious y"));
        assert!(!m.matches(b"Asterisk PBX 20"));
        assert!(!m.matches(b""));
        assert!(!ScannerMatcher::new(&[]).matches(b"sipvicious"));
        // near misses, a match at the very end, and the long (memmem) path both ways
        assert!(!m.matches(b"sipedge-loadgen sipviciou"));
        assert!(m.matches(b"Yealink sipvicious"));
        let long_hit = [&[b'x'; 100][..], b"SipVicious/1.8"].concat();
        assert!(m.matches(&long_hit));
        assert!(!m.matches(&[b's'; 300]));
    }
}
