//! When a worker sleeps to let its socket fill, and when it parks (`sip.coalesce_us`).
//!
//! A turn that found several datagrams says more are on their way; sleeping a moment lets one
//! turn answer many, as a NIC moderates interrupts. A run of such sleeps ends when a sleep
//! gathers less than [`MIN_DATAGRAMS`]. That last sleep was wasted, and on a VM a timer wake-up
//! costs the sleeper twice what a packet wake-up does (perf/RESULTS.md, session 12), so the
//! coalescer learns the length of the runs: the next run parks after as many sleeps as the last
//! one found datagrams in. Bursty peers (sipp sends a burst of new transactions every few
//! milliseconds) then pay no wasted sleep per burst. If a run was cut and datagrams came before
//! a sleep would have ended, the traffic had not paused: the cut was early, and the run goes on
//! with twice the room.
//!
//! Sans-IO: the worker reports what its turns found and how long its parks waited.

use std::time::Duration;

/// Datagrams a turn must find for the worker to sleep: one alone says arrivals are sparser than
/// a turn, and a wait would mostly be idle.
pub const MIN_DATAGRAMS: usize = 2;

/// What the worker does after a turn with nothing left to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Sleep(Duration),
    Park,
}

#[derive(Debug)]
pub struct Coalescer {
    wait: Duration,
    /// Sleeps in the current run.
    run: u32,
    /// Sleeps a run makes before it parks: learned from the last run that ended by itself.
    limit: u32,
    /// The current run was cut at `limit`; the park that follows tells whether too early.
    cut: bool,
}

impl Coalescer {
    /// `wait` zero: never sleep.
    pub fn new(wait: Duration) -> Self {
        Self {
            wait,
            run: 0,
            limit: u32::MAX,
            cut: false,
        }
    }

    /// A turn with nothing left to do found `received` datagrams.
    pub fn after_turn(&mut self, received: usize) -> Next {
        if self.wait.is_zero() {
            return Next::Park;
        }
        if received < MIN_DATAGRAMS {
            if self.run > 0 {
                // The run's last sleep found (next to) nothing: one fewer would have done.
                self.limit = (self.run - 1).max(1);
            }
            self.run = 0;
            return Next::Park;
        }
        if self.run >= self.limit {
            self.cut = true;
            return Next::Park;
        }
        self.run += 1;
        Next::Sleep(self.wait)
    }

    /// A park (after [`Next::Park`]) returned after `waited`.
    pub fn after_park(&mut self, waited: Duration) {
        if std::mem::take(&mut self.cut) && waited < self.wait {
            // Datagrams came sooner than the sleep would have ended: the run goes on.
            self.limit = self.limit.saturating_mul(2);
            return;
        }
        self.run = 0;
    }

    /// Sleeps the next run makes at most (tests, diagnostics).
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_micros(200);
    const LONG: Duration = Duration::from_millis(3);
    const SHORT: Duration = Duration::from_micros(20);

    /// Feeds one burst's turns (the first after a park, each other after a sleep) until the
    /// coalescer parks; that park returns after `waited`. Returns the sleeps it made.
    fn burst(c: &mut Coalescer, turns: &[usize], waited: Duration) -> u32 {
        let mut sleeps = 0;
        for &n in turns {
            match c.after_turn(n) {
                Next::Sleep(d) => {
                    assert_eq!(d, WAIT);
                    sleeps += 1;
                }
                Next::Park => {
                    c.after_park(waited);
                    return sleeps;
                }
            }
        }
        sleeps
    }

    #[test]
    fn a_burst_pattern_is_learned_and_its_wasted_sleep_dropped() {
        let mut c = Coalescer::new(WAIT);
        // sipp at 8k registrations/s: 18 datagrams wake the worker, two sleeps find 32 and 14,
        // a third finds nothing.
        assert_eq!(burst(&mut c, &[18, 32, 14, 0], LONG), 3);
        assert_eq!(c.limit(), 2);
        // The next burst parks after the 14: no sleep that finds nothing.
        assert_eq!(burst(&mut c, &[18, 32, 14], LONG), 2);
        assert_eq!(
            c.limit(),
            2,
            "a cut run whose park waited long keeps its limit"
        );
        assert_eq!(burst(&mut c, &[17, 31, 15], LONG), 2);
    }

    #[test]
    fn a_cut_run_whose_traffic_went_on_continues_with_twice_the_room() {
        let mut c = Coalescer::new(WAIT);
        burst(&mut c, &[10, 10, 0], LONG);
        assert_eq!(c.limit(), 1);
        // Steady traffic: the cut is early, datagrams arrive within the wait.
        assert_eq!(c.after_turn(10), Next::Sleep(WAIT));
        assert_eq!(c.after_turn(10), Next::Park);
        c.after_park(SHORT);
        assert_eq!(c.limit(), 2);
        // The run goes on from where it was: one sleep more, then another cut.
        assert_eq!(c.after_turn(3), Next::Sleep(WAIT));
        assert_eq!(c.after_turn(10), Next::Park);
        c.after_park(SHORT);
        assert_eq!(c.limit(), 4);
        // Under steady load the limit soon stops mattering.
        for _ in 0..2 {
            assert_eq!(c.after_turn(10), Next::Sleep(WAIT));
        }
        assert_eq!(c.after_turn(10), Next::Park);
        c.after_park(SHORT);
        assert_eq!(c.limit(), 8);
    }

    #[test]
    fn sparse_traffic_never_sleeps_and_zero_wait_turns_it_off() {
        let mut c = Coalescer::new(WAIT);
        for _ in 0..10 {
            assert_eq!(c.after_turn(1), Next::Park);
            c.after_park(LONG);
            assert_eq!(c.after_turn(0), Next::Park);
            c.after_park(SHORT);
        }
        assert_eq!(c.limit(), u32::MAX, "runs that never slept teach nothing");
        let mut off = Coalescer::new(Duration::ZERO);
        assert_eq!(off.after_turn(1000), Next::Park);
    }

    #[test]
    fn a_single_datagram_ends_a_run_and_the_limit_never_falls_below_one() {
        let mut c = Coalescer::new(WAIT);
        assert_eq!(burst(&mut c, &[5, 1], LONG), 1);
        assert_eq!(c.limit(), 1);
        assert_eq!(burst(&mut c, &[5, 4, 3], LONG), 1);
        assert_eq!(c.limit(), 1);
    }
}
