//! Hash maps for the hot path: foldhash, seeded per process.
//!
//! std's SipHash-1-3 showed up in profiles of the per-message path (credential, realm, source
//! and transaction lookups). foldhash is several times faster on short keys and still keyed by a
//! random per-process seed, so remote peers cannot aim collisions at a table.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A map key of up to 48 bytes held inside the map's own entry (longer ones go to the heap).
/// A lookup compares it where the probe already is instead of following a pointer: at an edge
/// server's size an account's entry is cold when its REGISTER arrives, and a boxed key was one
/// more cache miss per lookup (perf/RESULTS.md, session 8). `user@realm` keys fit.
pub type InlineKey = smallvec::SmallVec<[u8; 48]>;
