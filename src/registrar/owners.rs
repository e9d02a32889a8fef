//! Which worker owns a credential's state: a directory of claimable slots.
//!
//! SO_REUSEPORT hashes a PBX's 4-tuple to one worker, and a PBX keeps its address between
//! registrations. A fixed `hash(credential) % workers` owner would send half of every PBX's
//! authenticated REGISTERs (on two workers) across threads, paying a queue hop and often an
//! eventfd wake-up of an idle peer. Instead each credential key hashes to one of 65,536 slots, and
//! a slot belongs to the first worker that needs it: the one its PBX's traffic lands on. Steady
//! PBXs are then served entirely by their receiving worker; a PBX whose traffic moves (NAT
//! rebinding, a restart that restored its bindings elsewhere) is still correct, its requests are
//! handed to the slot's owner as before.
//!
//! Credentials sharing a slot share an owner, which is harmless: ownership only has to be
//! consistent, not unique. Reading and claiming are single atomic operations: no lock, no
//! allocation, no syscall.

use std::sync::atomic::{AtomicU16, Ordering};

const SLOTS: usize = 1 << 16;
const UNCLAIMED: u16 = u16::MAX;

/// The most workers a directory can name (one value is kept for "unclaimed").
pub const MAX_OWNERS: usize = UNCLAIMED as usize;

pub struct Owners {
    slots: Box<[AtomicU16]>,
    workers: usize,
}

impl Owners {
    pub fn new(workers: usize) -> Owners {
        assert!(
            (1..=MAX_OWNERS).contains(&workers),
            "workers out of range: {workers}"
        );
        Owners {
            slots: (0..SLOTS).map(|_| AtomicU16::new(UNCLAIMED)).collect(),
            workers,
        }
    }

    /// The owner of `key`'s slot, claiming it for `me` if nobody owns it yet.
    pub fn owner_or_claim(&self, key: &[u8], me: usize) -> usize {
        let slot = &self.slots[slot_of(key)];
        let cur = slot.load(Ordering::Acquire);
        if cur != UNCLAIMED {
            return usize::from(cur);
        }
        debug_assert!(me < self.workers);
        match slot.compare_exchange(UNCLAIMED, me as u16, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => me,
            // Another worker claimed it first: it owns the slot.
            Err(winner) => usize::from(winner),
        }
    }

    /// The owner of `key`'s slot, if claimed.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        let cur = self.slots[slot_of(key)].load(Ordering::Acquire);
        (cur != UNCLAIMED).then_some(usize::from(cur))
    }

    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// FNV-1a of the key, folded to a slot: stable across threads and restarts.
fn slot_of(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    ((h ^ (h >> 32)) as usize) & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claimant_owns_a_slot_and_later_ones_are_told_so() {
        let o = Owners::new(4);
        assert_eq!(o.owner(b"alice@example.com"), None);
        assert_eq!(o.owner_or_claim(b"alice@example.com", 2), 2);
        assert_eq!(o.owner_or_claim(b"alice@example.com", 0), 2);
        assert_eq!(o.owner(b"alice@example.com"), Some(2));
        // another credential is independent
        assert_eq!(o.owner_or_claim(b"bob@example.com", 1), 1);
    }

    #[test]
    fn racing_claims_agree_on_one_owner() {
        let o = std::sync::Arc::new(Owners::new(8));
        let keys: Vec<String> = (0..2000).map(|i| format!("user{i}@realm")).collect();
        let keys = std::sync::Arc::new(keys);
        let results: Vec<Vec<usize>> = (0..8)
            .map(|me| {
                let (o, keys) = (o.clone(), keys.clone());
                std::thread::spawn(move || {
                    keys.iter()
                        .map(|k| o.owner_or_claim(k.as_bytes(), me))
                        .collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let settled = o.owner(k.as_bytes()).unwrap();
            assert!(results.iter().all(|r| r[i] == settled), "{k}");
        }
    }
}
