//! The immutable provisioning snapshot workers read on the hot path.
//!
//! Owns: the in-memory, read-only view of realms and credentials built from the store. The admin
//! thread builds a new one after every committed write and publishes it (`ArcSwap`); workers only
//! ever read. Lookups take borrowed byte slices and never allocate.

use crate::fasthash::{FastMap, FastSet};
use crate::sip::digest::{Algorithm, Hex};

/// The digest secrets of one credential: HA1 and HA1b for each algorithm it has hashes for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashPair {
    pub ha1: Hex,
    pub ha1b: Hex,
}

#[derive(Clone, Debug)]
pub struct CredentialAuth {
    pub id: i64,
    pub username: Box<str>,
    pub realm: Box<str>,
    pub tenant: Option<Box<str>>,
    pub md5: Option<HashPair>,
    pub sha256: Option<HashPair>,
    pub max_calls: Option<u32>,
    pub max_cps: Option<f64>,
}

impl CredentialAuth {
    pub fn hashes(&self, alg: Algorithm) -> Option<&HashPair> {
        match alg {
            Algorithm::Md5 => self.md5.as_ref(),
            Algorithm::Sha256 => self.sha256.as_ref(),
        }
    }
}

/// Key of a credential: `username@realm` with the realm lower-cased.
pub fn credential_key(username: &[u8], realm: &[u8], out: &mut smallvec::SmallVec<[u8; 128]>) {
    out.clear();
    out.extend_from_slice(username);
    out.push(b'@');
    out.extend(realm.iter().map(|b| b.to_ascii_lowercase()));
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Bumped by every published change.
    pub generation: u64,
    /// Lower-cased.
    pub default_realm: Box<str>,
    /// Every provisioned realm, lower-cased (the default realm included).
    pub realms: FastSet<Box<[u8]>>,
    /// Keyed by [`credential_key`].
    pub credentials: FastMap<Box<[u8]>, CredentialAuth>,
}

impl Snapshot {
    pub fn empty(default_realm: &str) -> Snapshot {
        let default_realm: Box<str> = default_realm.to_ascii_lowercase().into();
        let mut realms = FastSet::default();
        realms.insert(Box::<[u8]>::from(default_realm.as_bytes()));
        Snapshot {
            generation: 0,
            default_realm,
            realms,
            credentials: FastMap::default(),
        }
    }

    /// SPEC §3.2: the provisioned realm equal to the To host (case-insensitive), else the default.
    /// Returns the lower-cased realm.
    pub fn realm_for_host<'s>(&'s self, host: &[u8]) -> &'s [u8] {
        // The common case, without lower-casing and hashing.
        if host.eq_ignore_ascii_case(self.default_realm.as_bytes()) || self.realms.len() <= 1 {
            return self.default_realm.as_bytes();
        }
        let mut lower = smallvec::SmallVec::<[u8; 128]>::new();
        lower.extend(host.iter().map(|b| b.to_ascii_lowercase()));
        match self.realms.get(&lower[..]) {
            Some(r) => r,
            None => self.default_realm.as_bytes(),
        }
    }

    pub fn credential(&self, username: &[u8], realm: &[u8]) -> Option<&CredentialAuth> {
        let mut key = smallvec::SmallVec::<[u8; 128]>::new();
        credential_key(username, realm, &mut key);
        self.credentials.get(&key[..])
    }
}
