//! The immutable provisioning snapshot workers read on the hot path.
//!
//! Owns: the in-memory, read-only view of provisioning built from the store: realms and
//! credentials for the registrar, trunks (with a longest-prefix table of their CIDRs) and numbers
//! for calls. The admin thread builds a new one after every committed write and publishes it
//! (`ArcSwap`); workers only ever read. Lookups take borrowed data and never allocate.

use crate::fasthash::{FastMap, FastSet};
use crate::routing::cidr::CidrTable;
use crate::routing::numbers::E164;
use crate::sip::digest::{Algorithm, Hex};
use std::net::IpAddr;

/// How long a resolved host name is reused across snapshots.
pub const DNS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The system resolver (getaddrinfo), first IPv4 address else first IPv6, with a small
/// process-wide cache: every provisioning change rebuilds the snapshot.
fn resolve_cached(name: &str) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    use std::sync::Mutex;
    use std::time::Instant;
    /// name -> (address, when resolved); a failure is cached too.
    type Cache = std::collections::HashMap<String, (Option<IpAddr>, Instant)>;
    static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
    let now = Instant::now();
    if let Ok(guard) = CACHE.lock() {
        if let Some(&(ip, at)) = guard.as_ref().and_then(|c| c.get(name)) {
            if now.duration_since(at) < DNS_TTL {
                return ip;
            }
        }
    }
    let addrs: Vec<IpAddr> = (name, 0)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let ip = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied();
    if let Ok(mut guard) = CACHE.lock() {
        guard
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), (ip, now));
    }
    ip
}

/// What a credential or trunk may do on calls beyond its limits (SPEC §3.4, §3.8).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountPolicy {
    /// Canonical codec names; empty: no restriction.
    pub codecs: Box<[Box<str>]>,
    /// Caller ids it may present besides its tenant's numbers; empty: only those.
    pub allowed_cli: Box<[E164]>,
}

/// A provisioned IP trunk (seed 004).
#[derive(Clone, Debug, PartialEq)]
pub struct TrunkPolicy {
    pub name: Box<str>,
    pub tenant: Option<Box<str>>,
    /// SIP URI that origination calls for its numbers go to.
    pub destination: Box<str>,
    pub max_calls: Option<u32>,
    pub max_cps: Option<f64>,
    pub policy: AccountPolicy,
}

/// Where an origination call for a number goes (SPEC §3.5).
#[derive(Clone, Debug, PartialEq)]
pub enum RouteTarget {
    /// The live binding of this credential: its [`credential_key`].
    Credential(Box<[u8]>),
    /// Index into [`Snapshot::trunks`].
    Trunk(u32),
    /// SIP URI template with `{number}`.
    Uri(Box<str>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberRoute {
    pub tenant: Option<Box<str>>,
    pub target: RouteTarget,
    /// Final `X-` names and values, added to the INVITE.
    pub headers: Box<[(Box<str>, Box<str>)]>,
}

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
    pub policy: AccountPolicy,
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
    let at = out.len();
    out.extend_from_slice(realm);
    out[at..].make_ascii_lowercase();
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
    pub credentials: super::credentials::Credentials,
    pub trunks: Vec<TrunkPolicy>,
    /// Trunk index by source address, longest prefix first (SPEC §3.3 step 2).
    pub trunk_sources: CidrTable<u32>,
    pub numbers: FastMap<E164, NumberRoute>,
    /// Host names in trunk destinations and URI routes, resolved when the snapshot was built
    /// (lower-cased; IPv4 preferred). Workers look names up here, never in DNS.
    pub hosts: FastMap<Box<str>, IpAddr>,
}

impl Snapshot {
    /// Resolves the host names the snapshot's routes name (A/AAAA through the system resolver,
    /// cached for [`DNS_TTL`]). Blocking: control plane only. A name that does not resolve is
    /// left out (its calls answer 503 "No route") and logged.
    pub fn resolve_hosts(&mut self) {
        let mut names: Vec<String> = Vec::new();
        for t in &self.trunks {
            names.extend(crate::routing::gateways::sip_target_host_name(
                &t.destination,
            ));
        }
        for r in self.numbers.values() {
            if let RouteTarget::Uri(template) = &r.target {
                let uri = template.replace("{number}", "0");
                names.extend(crate::routing::gateways::sip_target_host_name(&uri));
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            match resolve_cached(&name) {
                Some(ip) => {
                    self.hosts.insert(name.into(), ip);
                }
                None => tracing::warn!(host = %name, "route host name does not resolve"),
            }
        }
    }
    pub fn empty(default_realm: &str) -> Snapshot {
        let default_realm: Box<str> = default_realm.to_ascii_lowercase().into();
        let mut realms = FastSet::default();
        realms.insert(Box::<[u8]>::from(default_realm.as_bytes()));
        Snapshot {
            generation: 0,
            default_realm,
            realms,
            ..Snapshot::default()
        }
    }

    /// SPEC §3.2: the provisioned realm equal to the To host (case-insensitive), else the default.
    /// Returns the lower-cased realm.
    pub fn realm_for_host<'s>(&'s self, host: &[u8]) -> &'s [u8] {
        // The common case, without lower-casing and hashing; exact bytes first, since requests
        // nearly always spell the realm as configured (lower case).
        let default = self.default_realm.as_bytes();
        if host == default || self.realms.len() <= 1 || host.eq_ignore_ascii_case(default) {
            return default;
        }
        let mut lower = smallvec::SmallVec::<[u8; 128]>::new();
        lower.extend(host.iter().map(|b| b.to_ascii_lowercase()));
        match self.realms.get(&lower[..]) {
            Some(r) => r,
            None => self.default_realm.as_bytes(),
        }
    }

    /// The trunk whose CIDRs hold `ip` (the most specific one).
    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<(u32, &TrunkPolicy)> {
        let &i = self.trunk_sources.lookup(ip)?;
        self.trunks.get(i as usize).map(|t| (i, t))
    }

    /// SPEC §3.4: a caller id must be a number of the caller's tenant or in the credential's or
    /// trunk's `allowed_cli`.
    pub fn caller_id_allowed(
        &self,
        tenant: Option<&str>,
        policy: &AccountPolicy,
        cli: &E164,
    ) -> bool {
        policy.allowed_cli.contains(cli)
            || tenant
                .is_some_and(|t| self.numbers.get(cli).and_then(|n| n.tenant.as_deref()) == Some(t))
    }

    pub fn credential(&self, username: &[u8], realm: &[u8]) -> Option<&CredentialAuth> {
        let mut key = smallvec::SmallVec::<[u8; 128]>::new();
        credential_key(username, realm, &mut key);
        self.credentials.get(&key[..])
    }
}
