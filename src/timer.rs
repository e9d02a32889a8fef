//! A hashed timing wheel: O(1) insert, amortised O(1) expiry, no allocation once warm.
//!
//! Owns: "wake me at time T with this item". Items are plain data (slot ids with generations), so
//! cancellation is lazy: the owner checks on expiry whether the item is still current. Time is
//! passed in (milliseconds on any monotonic-enough scale), never read here.

pub struct TimerWheel<T> {
    tick_ms: u64,
    slots: Vec<Vec<(u64, T)>>,
    /// The last tick whose slot has been processed.
    current: u64,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// `tick_ms` is the resolution; `slots` the number of ticks per revolution (deadlines further
    /// away stay in their slot across revolutions until due).
    pub fn new(tick_ms: u64, slots: usize, now_ms: u64) -> TimerWheel<T> {
        let tick_ms = tick_ms.max(1);
        let slots = slots.max(1);
        TimerWheel {
            tick_ms,
            slots: (0..slots).map(|_| Vec::new()).collect(),
            current: now_ms / tick_ms,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Schedules `item` at `deadline_ms`; a deadline in the past fires on the next `expire`.
    pub fn insert(&mut self, deadline_ms: u64, item: T) {
        let tick = (deadline_ms.div_ceil(self.tick_ms)).max(self.current + 1);
        let n = self.slots.len() as u64;
        self.slots[(tick % n) as usize].push((deadline_ms, item));
        self.len += 1;
    }

    /// Moves every item due at `now_ms` into `out` (in no particular order).
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<T>) {
        let now_tick = now_ms / self.tick_ms;
        if now_tick <= self.current {
            return;
        }
        let n = self.slots.len() as u64;
        // A jump longer than one revolution visits every slot once.
        let steps = (now_tick - self.current).min(n);
        for step in 1..=steps {
            let idx = ((self.current + step) % n) as usize;
            let slot = &mut self.slots[idx];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].0 <= now_ms {
                    let (_, item) = slot.swap_remove(i);
                    out.push(item);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.current = now_tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = TimerWheel::new(10, 64, 1_000);
        w.insert(1_055, "a");
        w.insert(1_020, "b");
        let mut out = Vec::new();
        w.expire(1_019, &mut out);
        assert!(out.is_empty());
        w.expire(1_020, &mut out);
        assert_eq!(out, vec!["b"]);
        out.clear();
        w.expire(1_054, &mut out);
        assert!(out.is_empty());
        w.expire(1_060, &mut out);
        assert_eq!(out, vec!["a"]);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_one_revolution_wait_their_turn() {
        let mut w = TimerWheel::new(10, 8, 0);
        w.insert(1_000, 1u32); // 100 ticks away on an 8-slot wheel
        let mut out = Vec::new();
        for t in (0..1_000).step_by(7) {
            w.expire(t, &mut out);
            assert!(out.is_empty(), "fired early at {t}");
        }
        w.expire(1_000, &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn past_deadline_fires_on_next_expire_and_long_jumps_catch_everything() {
        let mut w = TimerWheel::new(100, 16, 5_000);
        w.insert(10, 'x');
        for i in 0..50u64 {
            w.insert(5_000 + i * 37, 'y');
        }
        let mut out = Vec::new();
        w.expire(5_100, &mut out);
        assert!(out.contains(&'x'));
        out.clear();
        w.expire(1_000_000, &mut out);
        assert_eq!(out.len(), 50 - 3); // 5000, 5037, 5074 fired at 5100 already
        assert!(w.is_empty());
    }
}
