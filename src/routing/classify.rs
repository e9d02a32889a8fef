//! Who is calling (SPEC §3.3): an INVITE is classified by its source address alone, before any
//! authentication, in a fixed order — the core, then provisioned trunks, then everyone else
//! (who must authenticate with digest).

use super::cidr::{parse_cidr, CidrTable};
use super::gateways::Gateways;
use crate::config::CoreConfig;
use crate::store::Snapshot;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A core gateway or a `core.trusted` address: origination traffic, trusted as it is.
    Core,
    /// Termination by the trunk at this index of [`Snapshot::trunks`], without a challenge.
    Trunk(u32),
    /// Anyone else: a 407 challenge (or a silent drop under `security.drop_unknown`).
    Unknown,
}

/// The core's addresses: gateways (any port) and `core.trusted` CIDRs. Built from the config at
/// start and on SIGHUP; the trunks come from the provisioning snapshot.
#[derive(Clone, Debug)]
pub struct CoreSources {
    trusted: CidrTable<()>,
}

impl CoreSources {
    /// Errors name the config key (`core.trusted[i]`).
    pub fn new(core: &CoreConfig, gateways: &Gateways) -> Result<CoreSources, String> {
        let mut trusted = CidrTable::new();
        for (i, c) in core.trusted.iter().enumerate() {
            let (net, len) = parse_cidr(c).map_err(|p| format!("core.trusted[{i}]: {p}"))?;
            trusted.insert(net, len, ());
        }
        for i in 0..gateways.len() {
            let ip = gateways.addr(i).ip();
            trusted.insert(ip, if ip.is_ipv4() { 32 } else { 128 }, ());
        }
        Ok(CoreSources { trusted })
    }

    pub fn is_core(&self, ip: IpAddr) -> bool {
        self.trusted.contains(ip)
    }
}

pub fn classify(ip: IpAddr, core: &CoreSources, snap: &Snapshot) -> Caller {
    if core.is_core(ip) {
        return Caller::Core;
    }
    match snap.trunk_for_source(ip) {
        Some((i, _)) => Caller::Trunk(i),
        None => Caller::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Gateway};
    use crate::store::snapshot::{AccountPolicy, TrunkPolicy};

    fn setup() -> (CoreSources, Snapshot) {
        let mut core = Config::default().core;
        core.gateways = vec![Gateway {
            uri: "sip:192.0.2.20:5060;transport=udp".into(),
            priority: 1,
            weight: 1,
        }];
        core.trusted = vec!["203.0.113.0/28".into()];
        let gws = Gateways::new(&core.gateways).unwrap();
        let sources = CoreSources::new(&core, &gws).unwrap();
        let mut snap = Snapshot::empty("sbc.test");
        snap.trunks.push(TrunkPolicy {
            name: "acme".into(),
            tenant: None,
            destination: "sip:pbx.acme.example".into(),
            max_calls: None,
            max_cps: None,
            policy: AccountPolicy::default(),
        });
        // A trunk CIDR that overlaps the core: the core still wins (step 1 before step 2).
        snap.trunk_sources
            .insert("203.0.113.0".parse().unwrap(), 24, 0);
        (sources, snap)
    }

    #[test]
    fn core_then_trunk_then_unknown() {
        let (core, snap) = setup();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            classify(ip("192.0.2.20"), &core, &snap),
            Caller::Core,
            "a gateway, any port"
        );
        assert_eq!(
            classify(ip("203.0.113.5"), &core, &snap),
            Caller::Core,
            "core.trusted beats an overlapping trunk"
        );
        assert_eq!(classify(ip("203.0.113.77"), &core, &snap), Caller::Trunk(0));
        assert_eq!(classify(ip("198.51.100.1"), &core, &snap), Caller::Unknown);
    }

    #[test]
    fn bad_trusted_entries_name_their_key() {
        let mut core = Config::default().core;
        core.trusted = vec!["10.0.0.0/8".into(), "nonsense".into()];
        let gws = Gateways::new(&[]).unwrap();
        let err = CoreSources::new(&core, &gws).unwrap_err();
        assert!(err.starts_with("core.trusted[1]:"), "{err}");
    }
}
