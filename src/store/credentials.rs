//! The snapshot's credentials by key: a table whose lookups can be prefetched.
//!
//! A REGISTER's credential is a cold line at an edge server's table sizes. A std `HashMap` can
//! only look it up, waiting: its buckets hold ~430-byte entries, so it spans megabytes and the
//! key compare misses (a fifth of `on_datagram`'s time in a profile at sipp 8k/s, RESULTS.md
//! session 13). Here the entries sit in a `Vec`, and an open-addressing table of 8-byte slots
//! (a tag from the key's hash and the entry's index) finds them. The slots stay small enough to
//! be cached (256 KiB at 10,000 credentials: at most half full), so [`Credentials::prefetch`] reads the slot and
//! starts loading the entry without waiting for it.

use super::snapshot::CredentialAuth;
use crate::fasthash::InlineKey;
use std::hash::BuildHasher;

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The high half of the key's hash: most slots that are not the key fail on it.
    tag: u32,
    entry: u32,
}

const FREE: Slot = Slot {
    tag: 0,
    entry: EMPTY,
};

#[derive(Clone, Debug, Default)]
pub struct Credentials {
    entries: Vec<(InlineKey, CredentialAuth)>,
    /// Linear probing, at most half full; a power of two long (or empty).
    slots: Box<[Slot]>,
    hasher: foldhash::fast::RandomState,
}

impl Credentials {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The first slot of `h`'s probe, its tag, and the mask.
    fn home(&self, h: u64) -> (usize, u32, usize) {
        let mask = self.slots.len() - 1;
        (h as usize & mask, (h >> 32) as u32, mask)
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let (mut i, tag, mask) = self.home(self.hash(key));
        loop {
            let s = self.slots[i];
            if s.entry == EMPTY {
                return None;
            }
            if s.tag == tag && self.entries[s.entry as usize].0[..] == *key {
                return Some(s.entry as usize);
            }
            i = (i + 1) & mask;
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&CredentialAuth> {
        self.find(key).map(|e| &self.entries[e].1)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// Starts loading credential `key`'s entry, if its home slot names one with its tag, and
    /// returns without waiting for it (the slot itself is usually cached).
    pub fn prefetch(&self, key: &[u8]) {
        if self.slots.is_empty() {
            return;
        }
        let (i, tag, _) = self.home(self.hash(key));
        let s = self.slots[i];
        if s.entry != EMPTY && s.tag == tag {
            crate::prefetch::lines(&self.entries[s.entry as usize]);
        }
    }

    /// Adds or replaces the credential of `key`; the replaced one is returned.
    pub fn insert(&mut self, key: InlineKey, cred: CredentialAuth) -> Option<CredentialAuth> {
        if let Some(e) = self.find(&key) {
            return Some(std::mem::replace(&mut self.entries[e].1, cred));
        }
        self.entries.push((key, cred));
        if self.entries.len() * 2 > self.slots.len() {
            self.reindex((self.slots.len() * 2).max(16));
        } else {
            self.place(self.entries.len() - 1);
        }
        None
    }

    /// Keeps the credentials `keep` says to.
    pub fn retain(&mut self, mut keep: impl FnMut(&InlineKey, &mut CredentialAuth) -> bool) {
        self.entries.retain_mut(|(k, c)| keep(k, c));
        self.reindex(self.slots.len());
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn place(&mut self, entry: usize) {
        let (mut i, tag, mask) = self.home(self.hash(&self.entries[entry].0));
        while self.slots[i].entry != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            tag,
            entry: entry as u32,
        };
    }

    fn reindex(&mut self, len: usize) {
        self.slots = vec![FREE; len].into_boxed_slice();
        for e in 0..self.entries.len() {
            self.place(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::snapshot::AccountPolicy;

    fn cred(id: i64) -> CredentialAuth {
        CredentialAuth {
            id,
            username: format!("u{id}").into(),
            realm: "sbc.test".into(),
            tenant: None,
            md5: None,
            sha256: None,
            max_calls: None,
            max_cps: None,
            policy: AccountPolicy::default(),
        }
    }

    fn key(id: i64) -> InlineKey {
        InlineKey::from_slice(format!("u{id}@sbc.test").as_bytes())
    }

    #[test]
    fn finds_what_was_inserted_through_growth_and_nothing_else() {
        let mut c = Credentials::default();
        assert!(c.get(b"u1@sbc.test").is_none());
        c.prefetch(b"u1@sbc.test");
        for id in 0..5000 {
            assert!(c.insert(key(id), cred(id)).is_none());
        }
        assert_eq!(c.len(), 5000);
        for id in 0..5000 {
            c.prefetch(&key(id));
            assert_eq!(c.get(&key(id)).map(|x| x.id), Some(id));
        }
        assert!(!c.contains_key(b"u5000@sbc.test"));
        assert!(!c.contains_key(b"u1@other.test"));
        assert!(c.slots.len() >= 2 * c.len(), "at most half full");
    }

    #[test]
    fn insert_replaces_and_retain_removes() {
        let mut c = Credentials::default();
        for id in 0..100 {
            c.insert(key(id), cred(id));
        }
        let mut again = cred(7);
        again.max_calls = Some(3);
        assert_eq!(c.insert(key(7), again).map(|x| x.max_calls), Some(None));
        assert_eq!(c.get(&key(7)).and_then(|x| x.max_calls), Some(3));
        assert_eq!(c.len(), 100);
        c.retain(|_, x| x.id % 2 == 0);
        assert_eq!(c.len(), 50);
        for id in 0..100 {
            assert_eq!(c.contains_key(&key(id)), id % 2 == 0, "credential {id}");
        }
    }
}
