//! Per-account call limits: calls per second and concurrent channels (SPEC §2 `[limits]`, §3.4).
//!
//! Owns: the token bucket, the channel counter and the order in which an account's limits are
//! checked. Must not: know about SIP (pingora's split: the call layer maps a
//! [`LimitRejection`] to `503` + reason, or to `486` for inbound calls), read clocks (callers
//! pass `now_ms`), or allocate.

/// Why a new call was refused. The call layer turns it into SPEC §3.4's `503` and a
/// `sipedge_calls_rejected_total{reason}` label (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitRejection {
    /// The account's CPS bucket is empty.
    #[error("CPS limit")]
    Cps,
    /// The account has `max_calls` calls up.
    #[error("Channel limit")]
    Channels,
}

impl LimitRejection {
    /// The reason phrase SPEC §3.4 prescribes for the `503`.
    pub fn reason_phrase(self) -> &'static str {
        match self {
            LimitRejection::Cps => "CPS limit",
            LimitRejection::Channels => "Channel limit",
        }
    }

    /// The `reason` label of `sipedge_calls_rejected_total` (SPEC §4).
    pub fn metric_reason(self) -> &'static str {
        match self {
            LimitRejection::Cps => "cps",
            LimitRejection::Channels => "channels",
        }
    }
}

/// Tokens within this of a whole token count as one: refill is computed in `f64`, and
/// `0.1 * 10` steps must not leave a call waiting on `0.9999999999`.
const EPSILON: f64 = 1e-9;

/// A token bucket refilled continuously at `rate` tokens per second, holding at most
/// `max(1, rate)` (SPEC §2 `max_cps`: "token bucket refilled at max_cps/s, size max(1, max_cps)"),
/// full at creation (SPEC §3.4 "the CPS bucket starts full").
///
/// A size of at least 1 is what lets fractional rates work at all: `max_cps = 0.5` admits one
/// call, then one every 2 s.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_ms: f64,
    size: f64,
    tokens: f64,
    /// The instant `tokens` was last brought up to date; `None` until first used, so a bucket
    /// created at any clock value starts full.
    last_ms: Option<u64>,
}

impl TokenBucket {
    /// `rate` tokens per second. A rate that is not a positive finite number (config.rs refuses
    /// those) gives a bucket of one token that never refills, which fails safe: one call.
    pub fn new(rate: f64) -> TokenBucket {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        let size = rate.max(1.0);
        TokenBucket {
            rate_per_ms: rate / 1000.0,
            size,
            tokens: size,
            last_ms: None,
        }
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate_per_ms * 1000.0
    }

    /// The burst: `max(1, rate)`.
    pub fn size(&self) -> f64 {
        self.size
    }

    /// Changes the rate (re-provisioning) keeping the tokens already earned, capped at the new
    /// size.
    pub fn set_rate(&mut self, rate: f64, now_ms: u64) {
        self.refill(now_ms);
        let fresh = TokenBucket::new(rate);
        self.rate_per_ms = fresh.rate_per_ms;
        self.size = fresh.size;
        self.tokens = self.tokens.min(self.size);
    }

    fn refill(&mut self, now_ms: u64) {
        let last = *self.last_ms.get_or_insert(now_ms);
        // A clock that steps back earns nothing and does not move `last` back.
        if now_ms > last {
            let earned = (now_ms - last) as f64 * self.rate_per_ms;
            self.tokens = (self.tokens + earned).min(self.size);
            self.last_ms = Some(now_ms);
        }
    }

    /// Whether a token is available at `now_ms`, without taking it.
    pub fn can_take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.tokens >= 1.0 - EPSILON
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        if self.can_take(now_ms) {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Whole seconds until a token is available, rounded up; 0 if one is available now. For a
    /// rate of 0 (never refills) this is `u32::MAX`.
    ///
    /// SPEC §3.4 writes `Retry-After: 1` on a CPS rejection; at `max_cps` ≥ 1 this is always 1,
    /// below 1 it is the honest wait (2 at 0.5/s), and the call layer chooses what to send.
    pub fn retry_after_s(&mut self, now_ms: u64) -> u32 {
        if self.can_take(now_ms) {
            return 0;
        }
        if self.rate_per_ms <= 0.0 {
            return u32::MAX;
        }
        let wait_ms = (1.0 - self.tokens) / self.rate_per_ms;
        let secs = (wait_ms / 1000.0 - EPSILON).ceil();
        if secs >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            (secs as u32).max(1)
        }
    }
}

/// Concurrent calls of one account against `max_calls` (SPEC §3.4: both directions together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channels {
    max: u32,
    active: u32,
}

impl Channels {
    pub fn new(max: u32) -> Channels {
        Channels { max, active: 0 }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn active(&self) -> u32 {
        self.active
    }

    /// Whether one more call fits.
    pub fn has_room(&self) -> bool {
        self.active < self.max
    }

    /// Takes a channel if one is free.
    pub fn try_acquire(&mut self) -> bool {
        if self.has_room() {
            self.active += 1;
            true
        } else {
            false
        }
    }

    /// Frees a channel at the end of a call. Never goes below 0, so a double release (a BYE
    /// racing a media timeout) cannot mint capacity.
    pub fn release(&mut self) {
        self.active = self.active.saturating_sub(1);
    }

    /// Re-provisioning: calls already up stay up even above a lowered `max`; new ones wait
    /// until `active` drops below it.
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
    }
}

/// The limits of one credential or trunk.
#[derive(Clone, Debug)]
pub struct AccountLimits {
    pub cps: TokenBucket,
    pub channels: Channels,
}

impl AccountLimits {
    pub fn new(max_calls: u32, max_cps: f64) -> AccountLimits {
        AccountLimits {
            cps: TokenBucket::new(max_cps),
            channels: Channels::new(max_calls),
        }
    }

    /// Admits a new outbound (termination) call, or says why not.
    ///
    /// Order (SPEC §3.4 lists CPS first): an empty CPS bucket answers [`LimitRejection::Cps`]
    /// even when the channels are full too; otherwise full channels answer
    /// [`LimitRejection::Channels`]. Both are checked before either is taken, so a rejected
    /// call uses no capacity ("Rejected calls use no capacity"): no token is spent on a call
    /// refused for channels. On `Ok` one token and one channel are taken; call
    /// [`Self::release`] when the call ends, however it ends. The token is not returned — it
    /// counts a call attempt admitted, not a call answered.
    pub fn check(&mut self, now_ms: u64) -> Result<(), LimitRejection> {
        if !self.cps.can_take(now_ms) {
            return Err(LimitRejection::Cps);
        }
        if !self.channels.has_room() {
            return Err(LimitRejection::Channels);
        }
        self.cps.try_take(now_ms);
        self.channels.try_acquire();
        Ok(())
    }

    /// Admits an inbound (origination) call: only `max_calls` applies (SPEC §3.5; the call
    /// layer answers `486 Busy Here` on [`LimitRejection::Channels`]).
    pub fn check_inbound(&mut self) -> Result<(), LimitRejection> {
        if self.channels.try_acquire() {
            Ok(())
        } else {
            Err(LimitRejection::Channels)
        }
    }

    /// The call admitted by [`Self::check`] or [`Self::check_inbound`] has ended.
    pub fn release(&mut self) {
        self.channels.release();
    }

    /// Re-provisioning of `max_calls`/`max_cps` keeps calls up and tokens earned.
    pub fn reconfigure(&mut self, max_calls: u32, max_cps: f64, now_ms: u64) {
        self.channels.set_max(max_calls);
        self.cps.set_rate(max_cps, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls admitted by `bucket` at each ms from `from` to `to` inclusive, trying once per ms.
    fn admitted(bucket: &mut TokenBucket, from: u64, to: u64) -> u32 {
        (from..=to).filter(|&t| bucket.try_take(t)).count() as u32
    }

    #[test]
    fn half_a_call_per_second() {
        let mut b = TokenBucket::new(0.5);
        assert_eq!(b.size(), 1.0);
        let t0 = 1_700_000_000_000;
        assert!(b.try_take(t0), "starts full");
        assert!(!b.try_take(t0));
        assert_eq!(b.retry_after_s(t0), 2);
        assert!(!b.try_take(t0 + 1_999));
        assert_eq!(b.retry_after_s(t0 + 1_000), 1);
        assert!(b.try_take(t0 + 2_000));
        // Idle for a minute: still only one token (size max(1, 0.5) = 1).
        assert!(b.try_take(t0 + 62_000));
        assert!(!b.try_take(t0 + 62_000));
        // Over 20 s of trying every ms: 10 calls.
        assert_eq!(admitted(&mut b, t0 + 62_001, t0 + 82_000), 10);
    }

    #[test]
    fn one_call_per_second() {
        let mut b = TokenBucket::new(1.0);
        assert_eq!(b.size(), 1.0);
        assert!(b.try_take(0));
        assert!(!b.try_take(999));
        assert_eq!(b.retry_after_s(1), 1);
        assert!(b.try_take(1_000));
        assert_eq!(admitted(&mut b, 1_001, 11_000), 10);
    }

    #[test]
    fn ten_per_second_bursts_ten() {
        let mut b = TokenBucket::new(10.0);
        assert_eq!(b.size(), 10.0);
        assert_eq!(admitted(&mut b, 5_000, 5_000), 1);
        for _ in 0..9 {
            assert!(b.try_take(5_000));
        }
        assert!(!b.try_take(5_000), "burst of 10");
        assert_eq!(b.retry_after_s(5_000), 1);
        assert!(!b.try_take(5_099));
        assert!(b.try_take(5_100), "one every 100 ms");
        // Steady state: 10 a second.
        assert_eq!(admitted(&mut b, 5_101, 15_100), 100);
        assert_eq!(b.retry_after_s(100_000), 0, "full again");
    }

    #[test]
    fn fractional_refill_accumulates() {
        // 0.1 per 100 ms steps must add up to a whole token, float error included.
        let mut b = TokenBucket::new(1.0);
        assert!(b.try_take(0));
        for t in (100..1_000).step_by(100) {
            assert!(!b.try_take(t), "{t}");
        }
        assert!(b.try_take(1_000));
        let mut c = TokenBucket::new(3.0);
        assert_eq!(admitted(&mut c, 0, 0) + admitted(&mut c, 0, 0), 2);
        assert!(c.try_take(0));
        assert!(!c.try_take(0));
        assert!(!c.try_take(333));
        assert!(c.try_take(334));
    }

    #[test]
    fn clock_steps_back_and_odd_rates() {
        let mut b = TokenBucket::new(1.0);
        assert!(b.try_take(10_000));
        assert!(!b.try_take(5_000), "earlier time earns nothing");
        assert!(!b.try_take(10_999));
        assert!(b.try_take(11_000));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut z = TokenBucket::new(bad);
            assert!(z.try_take(0), "{bad}");
            assert!(!z.try_take(1_000_000_000), "{bad}");
            assert_eq!(z.retry_after_s(0), u32::MAX);
        }
    }

    #[test]
    fn set_rate_keeps_earned_tokens() {
        let mut b = TokenBucket::new(10.0);
        assert!(b.try_take(0));
        b.set_rate(2.0, 0);
        assert_eq!(b.rate(), 2.0);
        assert!(b.try_take(0) && b.try_take(0), "capped to the new size 2");
        assert!(!b.try_take(0));
        assert!(b.try_take(500));
    }

    #[test]
    fn channels_acquire_release() {
        let mut c = Channels::new(2);
        assert_eq!((c.max(), c.active()), (2, 0));
        assert!(c.try_acquire());
        assert!(c.try_acquire());
        assert!(!c.try_acquire());
        assert_eq!(c.active(), 2);
        c.release();
        assert!(c.try_acquire());
        c.release();
        c.release();
        c.release();
        c.release();
        assert_eq!(c.active(), 0, "never below 0");
        assert!(c.try_acquire() && c.try_acquire() && !c.try_acquire());
        c.set_max(1);
        assert_eq!(c.active(), 2, "calls up stay up");
        c.release();
        assert!(!c.try_acquire());
        c.release();
        assert!(c.try_acquire());
        assert!(!Channels::new(0).has_room());
    }

    #[test]
    fn check_order_and_no_capacity_on_rejection() {
        let mut a = AccountLimits::new(1, 1.0);
        assert_eq!(a.check(0), Ok(()));
        assert_eq!(a.channels.active(), 1);
        // Both exhausted: CPS is reported first.
        assert_eq!(a.check(0), Err(LimitRejection::Cps));
        // Token back, channels still full: Channels, and the token is not spent.
        assert_eq!(a.check(1_000), Err(LimitRejection::Channels));
        assert_eq!(a.check(1_000), Err(LimitRejection::Channels));
        a.release();
        assert_eq!(a.check(1_000), Ok(()), "the token survived the rejections");
        assert_eq!(a.check(1_000), Err(LimitRejection::Cps));
        assert_eq!(a.channels.active(), 1, "a CPS rejection took no channel");
        a.release();
        a.release();
        assert_eq!(a.channels.active(), 0);
    }

    #[test]
    fn cps_rejection_leaves_channels_free() {
        let mut a = AccountLimits::new(100, 2.0);
        assert_eq!(a.check(0), Ok(()));
        assert_eq!(a.check(0), Ok(()));
        for _ in 0..10 {
            assert_eq!(a.check(0), Err(LimitRejection::Cps));
        }
        assert_eq!(a.channels.active(), 2);
        assert_eq!(a.cps.retry_after_s(0), 1);
        assert_eq!(a.check(500), Ok(()));
    }

    #[test]
    fn inbound_counts_against_the_same_channels() {
        let mut a = AccountLimits::new(2, 1.0);
        assert_eq!(a.check_inbound(), Ok(()));
        assert_eq!(a.check(0), Ok(()));
        assert_eq!(a.check_inbound(), Err(LimitRejection::Channels));
        assert_eq!(a.check(5_000), Err(LimitRejection::Channels));
        a.release();
        assert_eq!(a.check_inbound(), Ok(()));
        // Inbound calls spend no CPS token.
        let mut b = AccountLimits::new(10, 1.0);
        for _ in 0..5 {
            assert_eq!(b.check_inbound(), Ok(()));
        }
        assert_eq!(b.check(0), Ok(()));
    }

    #[test]
    fn reconfigure_keeps_calls() {
        let mut a = AccountLimits::new(5, 5.0);
        for _ in 0..3 {
            assert_eq!(a.check(0), Ok(()));
        }
        a.reconfigure(2, 1.0, 0);
        assert_eq!(a.channels.active(), 3);
        assert_eq!(a.check(10_000), Err(LimitRejection::Channels));
    }

    #[test]
    fn rejection_texts() {
        assert_eq!(LimitRejection::Cps.reason_phrase(), "CPS limit");
        assert_eq!(LimitRejection::Channels.reason_phrase(), "Channel limit");
        assert_eq!(LimitRejection::Cps.metric_reason(), "cps");
        assert_eq!(LimitRejection::Channels.metric_reason(), "channels");
        assert_eq!(LimitRejection::Cps.to_string(), "CPS limit");
    }
}
