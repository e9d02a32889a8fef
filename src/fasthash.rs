//! Hash maps for the hot path: foldhash, seeded per process.
//!
//! std's SipHash-1-3 showed up in profiles of the per-message path (credential, realm, source
//! and transaction lookups). foldhash is several times faster on short keys and still keyed by a
//! random per-process seed, so remote peers cannot aim collisions at a table.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
