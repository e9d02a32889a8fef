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

pub const SLOTS: usize = 1 << 16;
const UNCLAIMED: u16 = u16::MAX;
/// The owner holds the slot's state because it was restored there at start, not because its
/// PBX's traffic lands there: the first worker that needs the slot may ask for it
/// ([`Owners::move_slot`]).
const RESTORED: u16 = 0x8000;
const WORKER: u16 = 0x7fff;

/// The most workers a directory can name.
pub const MAX_OWNERS: usize = WORKER as usize;

/// What a slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Unclaimed,
    Worker(usize),
    /// Owned by this worker since start-up (restored bindings); movable.
    Restored(usize),
}

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
            return usize::from(cur & WORKER);
        }
        debug_assert!(me < self.workers);
        match slot.compare_exchange(UNCLAIMED, me as u16, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => me,
            // Another worker claimed it first: it owns the slot.
            Err(winner) => usize::from(winner & WORKER),
        }
    }

    /// The owner of `key`'s slot, if claimed.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        match self.lookup(key) {
            Owner::Unclaimed => None,
            Owner::Worker(w) | Owner::Restored(w) => Some(w),
        }
    }

    pub fn lookup(&self, key: &[u8]) -> Owner {
        self.lookup_slot(slot_of(key))
    }

    /// Starts loading slot `slot`'s cache line (the directory is 128 KiB, often cold).
    pub fn prefetch(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            crate::prefetch::line(s);
        }
    }

    /// What slot `slot` (from [`slot_of`]) says.
    pub fn lookup_slot(&self, slot: usize) -> Owner {
        match self.slots[slot].load(Ordering::Acquire) {
            UNCLAIMED => Owner::Unclaimed,
            v if v & RESTORED != 0 => Owner::Restored(usize::from(v & WORKER)),
            v => Owner::Worker(usize::from(v)),
        }
    }

    /// Start-up: `key`'s state is restored on `worker`; returns the slot's owner (another
    /// restored credential of the slot may have put it elsewhere first).
    pub fn claim_restored(&self, key: &[u8], worker: usize) -> usize {
        let slot = &self.slots[slot_of(key)];
        match slot.compare_exchange(
            UNCLAIMED,
            worker as u16 | RESTORED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => worker,
            Err(cur) => usize::from(cur & WORKER),
        }
    }

    /// The owner `from` (restored there or not) gives slot `slot` to `to`, after sending it the
    /// slot's state: false if `from` no longer owns the slot.
    pub fn move_slot(&self, slot: usize, from: usize, to: usize) -> bool {
        let cur = self.slots[slot].load(Ordering::Acquire);
        if cur == UNCLAIMED || usize::from(cur & WORKER) != from {
            return false;
        }
        self.slots[slot]
            .compare_exchange(cur, to as u16, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// FNV-1a of the key, folded to a slot: stable across threads and restarts.
pub fn slot_of(key: &[u8]) -> usize {
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
    fn a_restored_slot_moves_once_to_the_worker_that_asks() {
        let o = Owners::new(2);
        assert_eq!(o.claim_restored(b"carol@r", 1), 1);
        assert_eq!(o.lookup(b"carol@r"), Owner::Restored(1));
        assert_eq!(
            o.owner_or_claim(b"carol@r", 0),
            1,
            "restored slots are owned"
        );
        let slot = slot_of(b"carol@r");
        assert!(!o.move_slot(slot, 0, 1), "only the owner gives it away");
        assert!(o.move_slot(slot, 1, 0));
        assert_eq!(o.lookup(b"carol@r"), Owner::Worker(0));
        assert!(!o.move_slot(slot, 1, 0), "once");
    }

    #[test]
    fn a_claimed_slot_moves_and_moves_back() {
        let o = Owners::new(2);
        assert_eq!(o.owner_or_claim(b"dave@r", 0), 0);
        let slot = slot_of(b"dave@r");
        assert!(o.move_slot(slot, 0, 1));
        assert_eq!(o.lookup(b"dave@r"), Owner::Worker(1));
        assert!(o.move_slot(slot, 1, 0));
        assert_eq!(o.lookup(b"dave@r"), Owner::Worker(0));
        assert!(
            !o.move_slot(slot_of(b"nobody@r"), 0, 1),
            "an unclaimed slot has nobody to give it"
        );
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
