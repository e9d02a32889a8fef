//! What is left of a call once it is over: enough to answer the retransmissions a peer may still
//! send after the end, for 64·T1, in a few dozen bytes instead of the whole call.
//!
//! RFC 3261 has a UA retransmit a request until it hears the answer (a BYE whose 200 went lost)
//! and a final INVITE response until its ACK (an ACK that went lost), so a B2BUA must still
//! recognise a dialog for Timer J / Timer D (32 s over UDP) after the call ended. Keeping the
//! whole call for that long cost ~4 KB per call: at 6,000 calls/s, 800 MB of dead calls whose
//! growth (rehashing, fresh pages) was the largest CPU item of a call. A call now keeps its state
//! only while one of its transactions still needs it; then it retires to one tombstone per leg,
//! keyed by a hash of the leg's dialog identifier, holding only the ACK to send again.
//!
//! Owns: the tombstones of one shard and their expiry. Sans-IO: time is passed in.

use super::Dest;
use crate::fasthash::FastMap;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// A leg of an ended call.
#[derive(Debug)]
pub struct Tomb {
    until: u64,
    ack: Option<Box<TombAck>>,
}

/// The ACK sipedge sent for the leg's last final answer to its INVITE, sent again if that answer
/// is retransmitted (RFC 3261 §13.2.2.4 for a 2xx, §17.1.1.2 Timer D for the others).
#[derive(Debug)]
pub struct TombAck {
    pub to: Dest,
    pub bytes: Vec<u8>,
}

impl Tomb {
    pub fn ack(&self) -> Option<&TombAck> {
        self.ack.as_deref()
    }
}

/// Ended calls' legs, forgotten `ttl_ms` after the call retired.
pub struct Tombs {
    hasher: foldhash::fast::RandomState,
    map: FastMap<u64, Tomb>,
    /// (until, key) in insertion order, which is expiry order: every tomb lives `ttl_ms`.
    queue: VecDeque<(u64, u64)>,
    ttl_ms: u64,
}

impl Tombs {
    pub fn new(ttl_ms: u64) -> Tombs {
        Tombs {
            hasher: foldhash::fast::RandomState::default(),
            map: FastMap::default(),
            queue: VecDeque::new(),
            ttl_ms,
        }
    }

    /// The key of a leg sipedge minted the Call-ID of (the B leg).
    pub fn key_of_call_id(&self, call_id: &[u8]) -> u64 {
        self.hasher.hash_one(call_id)
    }

    /// The key of a leg known by the peer's Call-ID and tag (the A leg).
    pub fn key_of_dialog(&self, call_id: &[u8], tag: &[u8]) -> u64 {
        self.hasher.hash_one((call_id, tag))
    }

    pub fn bury(&mut self, now: u64, key: u64, ack: Option<TombAck>) {
        let until = now + self.ttl_ms;
        self.map.insert(
            key,
            Tomb {
                until,
                ack: ack.map(Box::new),
            },
        );
        self.queue.push_back((until, key));
    }

    pub fn get(&self, key: u64) -> Option<&Tomb> {
        self.map.get(&key)
    }

    /// Forgets tombs whose time is up, at most `max` of them.
    pub fn expire(&mut self, now: u64, max: usize) {
        for _ in 0..max {
            match self.queue.front() {
                Some(&(until, key)) if until <= now => {
                    self.queue.pop_front();
                    // A key buried again later has a later `until`: that tomb stays.
                    if self.map.get(&key).is_some_and(|t| t.until == until) {
                        self.map.remove(&key);
                    }
                }
                _ => return,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Port;

    #[test]
    fn a_tomb_is_small_and_lives_its_ttl() {
        // The point of a tomb: a few words per ended leg, not the call's kilobytes.
        assert!(std::mem::size_of::<Tomb>() <= 16);
        let mut t = Tombs::new(32_000);
        let a = t.key_of_dialog(b"c1@pbx", b"atag");
        let b = t.key_of_call_id(b"7-abc");
        assert_ne!(a, t.key_of_dialog(b"c1@pbx", b"other"));
        t.bury(1_000, a, None);
        t.bury(
            1_000,
            b,
            Some(TombAck {
                to: Dest {
                    addr: "192.0.2.1:5060".parse().unwrap(),
                    port: Port::Core,
                },
                bytes: b"ACK".to_vec(),
            }),
        );
        assert!(t.get(a).unwrap().ack().is_none());
        assert_eq!(t.get(b).unwrap().ack().unwrap().bytes, b"ACK");
        t.expire(32_999, usize::MAX);
        assert_eq!(t.len(), 2);
        t.expire(33_000, usize::MAX);
        assert!(t.len() == 0 && t.queue.is_empty());
    }

    #[test]
    fn a_leg_buried_again_keeps_its_newer_tomb() {
        let mut t = Tombs::new(10);
        t.bury(0, 1, None);
        t.bury(5, 1, None);
        t.expire(10, usize::MAX);
        assert!(t.get(1).is_some());
        t.expire(15, usize::MAX);
        assert!(t.get(1).is_none());
    }
}
