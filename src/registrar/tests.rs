//! Registrar policy, one SPEC §3.2 row at a time, with a fake clock and no sockets.

use super::*;
use crate::config::{OnConflict, RegistrarConfig};
use crate::sip::digest::{self, Algorithm, Hex, NonceKey, Qop};
use crate::sip::headers::request_headers;
use crate::sip::scan::scan;
use crate::store::snapshot::{CredentialAuth, HashPair, Snapshot};

const REALM: &str = "sbc.test";
const T0: u64 = 1_800_000_000_000;

fn cfg() -> RegistrarConfig {
    RegistrarConfig {
        realm: REALM.into(),
        min_interval_s: 100,
        throttle_status: 429,
        max_expires_s: 300,
        min_expires_s: 60,
        nonce_ttl_s: 300,
        max_contacts: 1,
        on_conflict: OnConflict::Replace,
        algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
    }
}

fn pair(alg: Algorithm, user: &str, pass: &str) -> HashPair {
    HashPair {
        ha1: digest::ha1(alg, user.as_bytes(), REALM.as_bytes(), pass.as_bytes()),
        ha1b: digest::ha1b(alg, user.as_bytes(), REALM.as_bytes(), pass.as_bytes()),
    }
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::empty(REALM);
    for (user, sha) in [("alice", true), ("bob", true), ("md5only", false)] {
        let mut key = smallvec::SmallVec::<[u8; 128]>::new();
        credential_key(user.as_bytes(), REALM.as_bytes(), &mut key);
        s.credentials.insert(
            crate::fasthash::InlineKey::from_slice(&key),
            CredentialAuth {
                id: 1,
                username: user.into(),
                realm: REALM.into(),
                tenant: None,
                md5: Some(pair(Algorithm::Md5, user, "secret-pw")),
                sha256: sha.then(|| pair(Algorithm::Sha256, user, "secret-pw")),
                max_calls: None,
                max_cps: None,
                policy: Default::default(),
            },
        );
    }
    s
}

struct Harness {
    reg: Registrar,
    snap: Snapshot,
    now: u64,
    cseq: u32,
    /// The Contact of requests that name none.
    contact: &'static str,
}

fn src(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Default, Clone)]
struct Req<'a> {
    user: &'a str,
    expires: Option<&'a str>,
    contact: Option<&'a str>,
    auth: Option<String>,
}

impl Harness {
    fn new(cfg: RegistrarConfig) -> Harness {
        Harness {
            reg: Registrar::new(cfg, NonceKey::from_secret([7; 32]), T0),
            snap: snapshot(),
            now: T0,
            cseq: 1,
            contact: "<sip:pbx@10.0.0.1:5060>",
        }
    }

    fn send(&mut self, from: &str, r: &Req<'_>) -> (Answer, Effects) {
        self.cseq += 1;
        let mut m = format!(
            "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{};rport\r\nFrom: <sip:{u}@{REALM}>;tag=1\r\nTo: <sip:{u}@{REALM}>\r\nCall-ID: c1\r\nCSeq: {} REGISTER\r\nMax-Forwards: 70\r\nUser-Agent: test-pbx\r\n",
            self.cseq,
            self.cseq,
            u = r.user
        );
        m.push_str(&format!(
            "Contact: {}\r\n",
            r.contact.unwrap_or(self.contact)
        ));
        if let Some(e) = r.expires {
            m.push_str(&format!("Expires: {e}\r\n"));
        }
        if let Some(a) = &r.auth {
            m.push_str(&format!("Authorization: {a}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        let msg = scan(m.as_bytes()).expect("scan");
        let req = request_headers(&msg).expect("headers");
        self.reg
            .handle_register(self.now, src(from), Transport::Udp, &msg, &req, &self.snap)
    }

    fn nonce(&mut self, from: &str, user: &str) -> String {
        match self
            .send(
                from,
                &Req {
                    user,
                    ..Default::default()
                },
            )
            .0
        {
            Answer::Challenge {
                nonce,
                stale: false,
                ..
            } => nonce.text().as_str().to_string(),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// REGISTER with a correct response for `pass` (or a wrong one).
    #[allow(clippy::too_many_arguments)]
    fn authed(
        &mut self,
        from: &str,
        user: &str,
        pass: &str,
        nonce: &str,
        nc: u32,
        alg: Algorithm,
        expires: Option<&str>,
    ) -> (Answer, Effects) {
        let ha1: Hex = digest::ha1(alg, user.as_bytes(), REALM.as_bytes(), pass.as_bytes());
        let nc_s = format!("{nc:08x}");
        let uri = format!("sip:{REALM}");
        let resp = digest::response(
            alg,
            ha1.as_bytes(),
            b"REGISTER",
            uri.as_bytes(),
            nonce.as_bytes(),
            Some(Qop {
                qop: b"auth",
                nc: nc_s.as_bytes(),
                cnonce: b"abc",
            }),
        );
        let auth = format!(
            "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm={}, qop=auth, nc={nc_s}, cnonce=\"abc\"",
            resp.as_str(),
            alg.name()
        );
        self.send(
            from,
            &Req {
                user,
                expires,
                auth: Some(auth),
                ..Default::default()
            },
        )
    }

    fn register(&mut self, from: &str, user: &str, expires: Option<&str>) -> (Answer, Effects) {
        let n = self.nonce(from, user);
        self.authed(from, user, "secret-pw", &n, 1, Algorithm::Md5, expires)
    }
}

const PBX: &str = "192.0.2.10:5060";

#[test]
fn no_authorization_is_challenged_per_algorithm_the_credential_has() {
    let mut h = Harness::new(cfg());
    let (a, e) = h.send(
        PBX,
        &Req {
            user: "alice",
            ..Default::default()
        },
    );
    assert!(
        matches!(
            a,
            Answer::Challenge {
                stale: false,
                algs: AlgMask(0b11),
                ..
            }
        ),
        "{a:?}"
    );
    assert_eq!(e, Effects::default());
    let (a, _) = h.send(
        PBX,
        &Req {
            user: "md5only",
            ..Default::default()
        },
    );
    assert!(
        matches!(
            a,
            Answer::Challenge {
                algs: AlgMask(0b01),
                ..
            }
        ),
        "{a:?}"
    );
    // an unknown user gets every configured algorithm: existence does not leak
    let (a, _) = h.send(
        PBX,
        &Req {
            user: "nobody",
            ..Default::default()
        },
    );
    assert!(
        matches!(
            a,
            Answer::Challenge {
                algs: AlgMask(0b11),
                ..
            }
        ),
        "{a:?}"
    );
}

#[test]
fn valid_md5_and_sha256_register_with_capped_expiry() {
    let mut h = Harness::new(cfg());
    let n = h.nonce(PBX, "alice");
    let (a, _) = h.authed(
        PBX,
        "alice",
        "secret-pw",
        &n,
        1,
        Algorithm::Md5,
        Some("3600"),
    );
    assert_eq!(a, Answer::Registered { expires: 300 });
    assert_eq!(h.reg.active_bindings(), 1);
    let b = &h.reg.bindings_of("alice", REALM)[0];
    assert_eq!(b.source, src(PBX));
    assert_eq!(b.contact, "sip:pbx@10.0.0.1:5060");
    assert_eq!(b.user_agent, "test-pbx");
    assert_eq!(b.expires_at_ms, T0 + 300_000);

    let n = h.nonce(PBX, "bob");
    let (a, _) = h.authed(
        PBX,
        "bob",
        "secret-pw",
        &n,
        1,
        Algorithm::Sha256,
        Some("120"),
    );
    assert_eq!(a, Answer::Registered { expires: 120 });
}

#[test]
fn ha1b_username_form_is_accepted() {
    let mut h = Harness::new(cfg());
    let n = h.nonce(PBX, "alice");
    let alg = Algorithm::Md5;
    let ha1b = digest::ha1b(alg, b"alice", REALM.as_bytes(), b"secret-pw");
    let uri = format!("sip:{REALM}");
    let resp = digest::response(
        alg,
        ha1b.as_bytes(),
        b"REGISTER",
        uri.as_bytes(),
        n.as_bytes(),
        None,
    );
    let auth = format!("Digest username=\"alice@{REALM}\", realm=\"{REALM}\", nonce=\"{n}\", uri=\"{uri}\", response=\"{}\"", resp.as_str());
    let (a, _) = h.send(
        PBX,
        &Req {
            user: "alice",
            auth: Some(auth),
            ..Default::default()
        },
    );
    assert_eq!(a, Answer::Registered { expires: 300 });
}

#[test]
fn wrong_password_and_unknown_user_are_forbidden_and_count_as_failures() {
    let mut h = Harness::new(cfg());
    let n = h.nonce(PBX, "alice");
    let (a, e) = h.authed(PBX, "alice", "wrong-pw", &n, 1, Algorithm::Md5, None);
    assert_eq!(a, Answer::Forbidden);
    assert!(e.auth_failure);
    assert_eq!(e.rejected, Some(RejectReason::Auth));
    let n = h.nonce(PBX, "nobody");
    let (a, e) = h.authed(PBX, "nobody", "secret-pw", &n, 1, Algorithm::Md5, None);
    assert_eq!(a, Answer::Forbidden);
    assert!(e.auth_failure);
    // a SHA-256 answer for a credential that only has MD5 hashes
    let n = h.nonce(PBX, "md5only");
    let (a, _) = h.authed(PBX, "md5only", "secret-pw", &n, 1, Algorithm::Sha256, None);
    assert_eq!(a, Answer::Forbidden);
    assert_eq!(h.reg.active_bindings(), 0);
}

#[test]
fn stale_nonce_gets_a_fresh_challenge_with_stale_true() {
    let mut h = Harness::new(cfg());
    let n = h.nonce(PBX, "alice");
    h.now += 301_000;
    let (a, e) = h.authed(PBX, "alice", "secret-pw", &n, 1, Algorithm::Md5, None);
    match a {
        Answer::Challenge {
            stale: true, nonce, ..
        } => assert_ne!(nonce.text().as_str(), n),
        other => panic!("{other:?}"),
    }
    assert!(!e.auth_failure);
}

#[test]
fn forged_nonce_is_challenged_not_stale_and_counts() {
    let mut h = Harness::new(cfg());
    let other = NonceKey::from_secret([9; 32]).mint(T0 / 1000, 1);
    let (a, e) = h.authed(
        PBX,
        "alice",
        "secret-pw",
        other.text().as_str(),
        1,
        Algorithm::Md5,
        None,
    );
    assert!(matches!(a, Answer::Challenge { stale: false, .. }), "{a:?}");
    assert!(e.auth_failure);
}

#[test]
fn nonce_count_replay_is_forbidden_higher_count_accepted() {
    let mut h = Harness::new(RegistrarConfig {
        min_interval_s: 0,
        ..cfg()
    });
    let n = h.nonce(PBX, "alice");
    assert_eq!(
        h.authed(PBX, "alice", "secret-pw", &n, 1, Algorithm::Md5, None)
            .0,
        Answer::Registered { expires: 300 }
    );
    let (a, e) = h.authed(PBX, "alice", "secret-pw", &n, 1, Algorithm::Md5, None);
    assert_eq!(a, Answer::Forbidden);
    assert!(e.auth_failure);
    assert_eq!(
        h.authed(PBX, "alice", "secret-pw", &n, 2, Algorithm::Md5, None)
            .0,
        Answer::Registered { expires: 300 }
    );
}

#[test]
fn re_register_sooner_than_min_interval_is_throttled_with_retry_after() {
    let mut h = Harness::new(cfg());
    assert_eq!(
        h.register(PBX, "alice", None).0,
        Answer::Registered { expires: 300 }
    );
    h.now += 40_500;
    let (a, e) = h.register(PBX, "alice", None);
    assert_eq!(
        a,
        Answer::Throttled {
            status: 429,
            retry_after: 60
        }
    );
    assert!(e.throttled);
    assert_eq!(e.rejected, Some(RejectReason::Throttled));
    h.now += 59_500;
    assert_eq!(
        h.register(PBX, "alice", None).0,
        Answer::Registered { expires: 300 }
    );
    // the operator may prefer 503
    let mut h = Harness::new(RegistrarConfig {
        throttle_status: 503,
        ..cfg()
    });
    h.register(PBX, "alice", None);
    assert!(matches!(
        h.register(PBX, "alice", None).0,
        Answer::Throttled { status: 503, .. }
    ));
}

#[test]
fn expiry_below_minimum_is_423() {
    let mut h = Harness::new(cfg());
    let (a, e) = h.register(PBX, "alice", Some("30"));
    assert_eq!(a, Answer::IntervalTooBrief { min: 60 });
    assert_eq!(e.rejected, Some(RejectReason::Interval));
    assert_eq!(h.reg.active_bindings(), 0);
    // a contact's own expires parameter counts too
    let n = h.nonce(PBX, "alice");
    let ha1 = digest::ha1(Algorithm::Md5, b"alice", REALM.as_bytes(), b"secret-pw");
    let resp = digest::response(
        Algorithm::Md5,
        ha1.as_bytes(),
        b"REGISTER",
        b"sip:sbc.test",
        n.as_bytes(),
        None,
    );
    let auth = format!("Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{n}\", uri=\"sip:sbc.test\", response=\"{}\"", resp.as_str());
    let r = Req {
        user: "alice",
        contact: Some("<sip:pbx@10.0.0.1>;expires=30"),
        expires: Some("3600"),
        auth: Some(auth),
    };
    assert_eq!(h.send(PBX, &r).0, Answer::IntervalTooBrief { min: 60 });
}

#[test]
fn unregister_removes_the_binding_and_is_never_throttled() {
    let mut h = Harness::new(cfg());
    h.register(PBX, "alice", None);
    assert_eq!(h.reg.active_bindings(), 1);
    h.now += 1_000;
    assert_eq!(h.register(PBX, "alice", Some("0")).0, Answer::Bindings);
    assert_eq!(h.reg.active_bindings(), 0);

    h.now += 200_000;
    h.register(PBX, "alice", None);
    h.now += 1_000;
    let n = h.nonce(PBX, "alice");
    let ha1 = digest::ha1(Algorithm::Md5, b"alice", REALM.as_bytes(), b"secret-pw");
    let resp = digest::response(
        Algorithm::Md5,
        ha1.as_bytes(),
        b"REGISTER",
        b"sip:sbc.test",
        n.as_bytes(),
        None,
    );
    let auth = format!("Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{n}\", uri=\"sip:sbc.test\", response=\"{}\"", resp.as_str());
    let (a, _) = h.send(
        PBX,
        &Req {
            user: "alice",
            contact: Some("*"),
            expires: Some("0"),
            auth: Some(auth),
        },
    );
    assert_eq!(a, Answer::Bindings);
    assert_eq!(h.reg.active_bindings(), 0);
}

#[test]
fn second_pbx_replaces_by_default() {
    let mut h = Harness::new(cfg());
    h.register(PBX, "alice", None);
    h.now += 101_000;
    assert_eq!(
        h.register("198.51.100.5:5060", "alice", None).0,
        Answer::Registered { expires: 300 }
    );
    let b = h.reg.bindings_of("alice", REALM);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].source, src("198.51.100.5:5060"));
    assert_eq!(h.reg.active_bindings(), 1);
}

#[test]
fn second_pbx_is_rejected_under_reject_but_nat_rebinding_is_not_a_conflict() {
    let mut h = Harness::new(RegistrarConfig {
        on_conflict: OnConflict::Reject,
        ..cfg()
    });
    h.register(PBX, "alice", None);
    h.now += 101_000;
    let (a, e) = h.register("198.51.100.5:5060", "alice", None);
    assert_eq!(a, Answer::InUse);
    assert!(!e.auth_failure);
    assert_eq!(e.rejected, Some(RejectReason::Conflict));
    // same IP, new port: the NAT rebound
    assert_eq!(
        h.register("192.0.2.10:40001", "alice", None).0,
        Answer::Registered { expires: 300 }
    );
    assert_eq!(
        h.reg.bindings_of("alice", REALM)[0].source,
        src("192.0.2.10:40001")
    );
    // once the binding expired, another PBX may take the credential
    h.now += 301_000;
    assert_eq!(
        h.register("198.51.100.5:5060", "alice", None).0,
        Answer::Registered { expires: 300 }
    );
}

#[test]
fn bindings_expire_on_time_and_are_reported_dirty() {
    let mut h = Harness::new(cfg());
    h.register(PBX, "alice", Some("60"));
    let mut dirty = Vec::new();
    h.reg
        .drain_dirty(|d| dirty.push((d.username.to_string(), d.bindings.len())));
    assert_eq!(dirty, vec![("alice".to_string(), 1)]);
    h.reg.expire(T0 + 59_900);
    assert_eq!(h.reg.active_bindings(), 1);
    h.reg.expire(T0 + 60_000);
    assert_eq!(h.reg.active_bindings(), 0);
    dirty.clear();
    h.reg
        .drain_dirty(|d| dirty.push((d.username.to_string(), d.bindings.len())));
    assert_eq!(dirty, vec![("alice".to_string(), 0)]);
}

#[test]
fn restored_bindings_count_and_keep_the_throttle() {
    let mut h = Harness::new(cfg());
    let b = Binding {
        contact: "sip:pbx@10.0.0.1".into(),
        source: src(PBX),
        transport: Transport::Udp,
        user_agent: "x".into(),
        call_id: "c".into(),
        cseq: 1,
        registered_at_ms: T0 - 10_000,
        expires_at_ms: T0 + 200_000,
        persisted_expires_at_ms: T0 + 200_000,
    };
    h.reg.restore("alice", REALM, b.clone(), T0);
    h.reg.restore(
        "bob",
        REALM,
        Binding {
            expires_at_ms: T0 - 1,
            ..b
        },
        T0,
    );
    assert_eq!(h.reg.active_bindings(), 1);
    assert!(matches!(
        h.register(PBX, "alice", None).0,
        Answer::Throttled { .. }
    ));
}

#[test]
fn deleted_credentials_lose_their_bindings() {
    let mut h = Harness::new(cfg());
    h.register(PBX, "alice", None);
    let mut snap = snapshot();
    snap.credentials.retain(|k, _| !k.starts_with(b"alice@"));
    h.reg.retain_provisioned(&snap);
    assert_eq!(h.reg.active_bindings(), 0);
}

#[test]
fn many_nonces_in_one_second_are_all_usable_and_evicted_ones_are_not_replayable() {
    let mut h = Harness::new(RegistrarConfig {
        min_interval_s: 0,
        ..cfg()
    });
    let mut used = Vec::new();
    for i in 0..10 {
        let n = h.nonce(PBX, "alice");
        assert_eq!(
            h.authed(PBX, "alice", "secret-pw", &n, 1, Algorithm::Md5, None)
                .0,
            Answer::Registered { expires: 300 },
            "nonce #{i}"
        );
        used.push(n);
        h.now += 1; // same second, next millisecond
    }
    // the first nonce was evicted from tracking: a higher nc on it cannot be proven fresh
    let (a, e) = h.authed(PBX, "alice", "secret-pw", &used[0], 2, Algorithm::Md5, None);
    assert!(matches!(a, Answer::Challenge { stale: true, .. }), "{a:?}");
    assert!(!e.auth_failure);
    // the newest is still tracked: replay refused, next count accepted
    assert_eq!(
        h.authed(PBX, "alice", "secret-pw", &used[9], 1, Algorithm::Md5, None)
            .0,
        Answer::Forbidden
    );
    assert_eq!(
        h.authed(PBX, "alice", "secret-pw", &used[9], 2, Algorithm::Md5, None)
            .0,
        Answer::Registered { expires: 300 }
    );
}

#[test]
fn pure_refreshes_are_persisted_only_when_the_stored_expiry_lags_half_a_grant() {
    let mut h = Harness::new(RegistrarConfig {
        min_interval_s: 0,
        ..cfg()
    });
    let mut dirty = 0;
    h.register(PBX, "alice", Some("300"));
    h.reg.drain_dirty(|_| dirty += 1);
    assert_eq!(dirty, 1, "a new binding is persisted");
    // refreshes every 100 s: stored expiry T0+300 s; the refresh at +100 s (expiry +400 s) lags
    // 100 s < 150 s: not written; at +200 s (expiry +500 s) it lags 200 s: written
    for (at_s, expect) in [(100u64, 0), (200, 1), (250, 0), (400, 1)] {
        h.now = T0 + at_s * 1000;
        assert_eq!(
            h.register(PBX, "alice", Some("300")).0,
            Answer::Registered { expires: 300 }
        );
        let mut n = 0;
        h.reg.drain_dirty(|_| n += 1);
        assert_eq!(n, expect, "refresh at +{at_s} s");
    }
    // a new contact or source is always written
    h.now += 1_000;
    h.register("192.0.2.10:6000", "alice", Some("300"));
    let mut n = 0;
    h.reg.drain_dirty(|_| n += 1);
    assert_eq!(n, 1, "NAT rebinding is persisted at once");
}

/// A slot moving between shards carries its states; a shard that already served the credential
/// in the meantime merges the older state into its own: both bindings, and the nonce counts
/// (a replay of a count the old shard accepted stays a replay).
#[test]
fn an_adopted_state_merges_into_a_newer_one() {
    let relaxed = || RegistrarConfig {
        min_interval_s: 0,
        ..cfg()
    };
    let mut old = Harness::new(relaxed());
    let mut new = Harness::new(relaxed());
    new.contact = "<sip:pbx@10.0.0.2:5060>";
    let n = old.nonce(PBX, "alice");
    let registered = Answer::Registered { expires: 300 };
    let ok = |h: &mut Harness, nonce: &str, nc| {
        h.authed(PBX, "alice", "secret-pw", nonce, nc, Algorithm::Md5, None)
            .0
    };
    assert_eq!(ok(&mut old, &n, 1), registered);
    assert_eq!(new.register(PBX, "alice", None).0, registered);

    let mut key = smallvec::SmallVec::<[u8; 128]>::new();
    credential_key(b"alice", REALM.as_bytes(), &mut key);
    let slot = owners::slot_of(&key);
    assert_eq!(
        old.reg.slot_keys(slot).collect::<Vec<_>>(),
        vec![key.as_slice()]
    );
    let states = old.reg.take_slot(slot);
    assert_eq!(old.reg.active_bindings(), 0, "the old shard keeps nothing");
    assert_eq!(old.reg.slot_keys(slot).count(), 0);
    new.reg.adopt(states);

    let contacts: Vec<&str> = new
        .reg
        .bindings_of("alice", REALM)
        .iter()
        .map(|b| b.contact.as_str())
        .collect();
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    assert_eq!(new.reg.active_bindings(), 2);
    assert_eq!(
        ok(&mut new, &n, 1),
        Answer::Forbidden,
        "replay stays a replay"
    );
    assert_eq!(ok(&mut new, &n, 2), registered);
}
