//! Registrar end to end (SPEC §3.1, §3.2, §4): one or more tests per row of the §3.2 table, each
//! against a real `sipedge run` over UDP on loopback. Digest responses are computed by the test's
//! own code (tests/common), never by the server's digest module.

mod common;

use common::digest::{self, Alg};
use common::*;
use std::time::{Duration, Instant};

const PW: &str = "s3cret-Pass.word";

fn gauge(s: &Server) -> f64 {
    s.metric("sipedge_registrations_active")
        .unwrap_or_else(|| panic!("sipedge_registrations_active missing:\n{}", s.metrics()))
}

fn algs(r: &Response) -> Vec<Alg> {
    r.challenges().iter().map(|c| c.alg()).collect()
}

/// Every challenge must be a complete RFC 7616/8760 digest challenge in the server's realm.
fn assert_complete_challenges(r: &Response, realm: &str) {
    assert_code(r, 401, "challenge");
    for c in r.challenges() {
        assert!(
            c.scheme.eq_ignore_ascii_case("Digest"),
            "scheme must be Digest: {}",
            c.raw
        );
        assert_eq!(c.param("realm"), Some(realm), "realm: {}", c.raw);
        assert!(!c.nonce().is_empty(), "nonce must be non-empty: {}", c.raw);
        assert!(
            c.param("opaque").is_some_and(|o| !o.is_empty()),
            "opaque missing: {}",
            c.raw
        );
        assert_eq!(
            c.param("qop"),
            Some("auth"),
            "qop must be \"auth\": {}",
            c.raw
        );
        assert!(
            c.raw.contains("qop=\"auth\""),
            "qop must be a quoted string: {}",
            c.raw
        );
        assert!(
            c.param("algorithm").is_some(),
            "algorithm must be explicit: {}",
            c.raw
        );
        assert!(!c.is_stale(), "a first challenge is not stale: {}", c.raw);
    }
}

/// Flips one significant character in the middle of a nonce (keeps its length and alphabet, so
/// only the server's MAC can tell).
fn tamper(nonce: &str) -> String {
    let mut b: Vec<char> = nonce.chars().collect();
    let i = b.len() / 2;
    b[i] = match b[i] {
        '0'..='8' => (b[i] as u8 + 1) as char,
        '9' => '0',
        'a'..='y' => (b[i] as u8 + 1) as char,
        'z' => 'a',
        'A'..='Y' => (b[i] as u8 + 1) as char,
        'Z' => 'A',
        _ => 'A',
    };
    b.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// 401: one WWW-Authenticate per algorithm
// ---------------------------------------------------------------------------------------------

#[test]
fn challenge_offers_one_www_authenticate_per_algorithm() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.add_credential_hashes(
        "hashonly",
        &digest::ha1(Alg::Md5, "hashonly", &realm, PW),
        &digest::ha1(Alg::Md5, &format!("hashonly@{realm}"), &realm, PW),
    );
    s.launch();
    let mut c = s.client();

    // A password credential has MD5 and SHA-256 hashes: both, in the configured default order.
    let r = c.challenge("alice", &realm);
    assert_complete_challenges(&r, &realm);
    assert_eq!(
        algs(&r),
        vec![Alg::Md5, Alg::Sha256],
        "password credential:\n{}",
        r.text()
    );

    // A credential given as MD5 hashes only answers MD5 challenges only.
    let r = c.challenge("hashonly", &realm);
    assert_complete_challenges(&r, &realm);
    assert_eq!(
        algs(&r),
        vec![Alg::Md5],
        "hashes-only credential:\n{}",
        r.text()
    );

    // An unknown user gets every configured algorithm, so existence does not leak.
    let r = c.challenge("nobody", &realm);
    assert_complete_challenges(&r, &realm);
    assert_eq!(
        algs(&r),
        vec![Alg::Md5, Alg::Sha256],
        "unknown user:\n{}",
        r.text()
    );

    assert!(s.metric_or_zero("sipedge_sip_responses_total{code=\"401\"}") >= 3.0);
    assert_eq!(
        s.metric("sipedge_sip_requests_total{method=\"REGISTER\"}"),
        Some(3.0)
    );
}

#[test]
fn challenge_follows_configured_algorithm_order() {
    let mut s = Server::prepare("[registrar]\nalgorithms = [\"SHA-256\", \"MD5\"]\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.add_credential_hashes(
        "hashonly",
        &digest::ha1(Alg::Md5, "hashonly", &realm, PW),
        &digest::ha1(Alg::Md5, &format!("hashonly@{realm}"), &realm, PW),
    );
    s.launch();
    let mut c = s.client();

    let r = c.challenge("alice", &realm);
    assert_complete_challenges(&r, &realm);
    assert_eq!(
        algs(&r),
        vec![Alg::Sha256, Alg::Md5],
        "configured order SHA-256, MD5:\n{}",
        r.text()
    );
    let r = c.challenge("hashonly", &realm);
    assert_eq!(
        algs(&r),
        vec![Alg::Md5],
        "hashes-only credential:\n{}",
        r.text()
    );
    let r = c.challenge("nobody", &realm);
    assert_eq!(
        algs(&r),
        vec![Alg::Sha256, Alg::Md5],
        "unknown user:\n{}",
        r.text()
    );

    // The SHA-256 challenge is usable.
    let r = c.register_with("alice", &realm, PW, Alg::Sha256, 120);
    assert_code(&r, 200, "SHA-256 registration");
}

// ---------------------------------------------------------------------------------------------
// 200: valid Authorization
// ---------------------------------------------------------------------------------------------

#[test]
fn register_md5_and_sha256_accepted_with_granted_expiry() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.add_credential("bob", PW, None);
    s.launch();

    // MD5, requested 120 <= max_expires_s (300): granted as requested.
    let mut a = s.client();
    let r = a.register_with("alice", &realm, PW, Alg::Md5, 120);
    assert_code(&r, 200, "MD5 registration");
    let contact = r
        .header("contact")
        .unwrap_or_else(|| panic!("200 without Contact:\n{}", r.text()));
    assert!(
        contact.contains(&format!("sip:alice@{}", a.local)),
        "Contact must echo the registered contact, got {contact}"
    );
    assert_eq!(
        r.contact_expires(),
        Some(120),
        "Contact ;expires=:\n{}",
        r.text()
    );
    assert_eq!(
        r.header_u64("expires"),
        Some(120),
        "Expires header:\n{}",
        r.text()
    );
    assert_eq!(r.header("call-id"), Some(a.call_id.as_str()));

    // SHA-256, requested 3600: granted min(3600, max_expires_s = 300).
    let mut b = s.client();
    let r = b.register_with("bob", &realm, PW, Alg::Sha256, 3600);
    assert_code(&r, 200, "SHA-256 registration");
    assert_eq!(
        r.contact_expires(),
        Some(300),
        "granted expiry is capped at max_expires_s:\n{}",
        r.text()
    );
    assert_eq!(
        r.header_u64("expires"),
        Some(300),
        "Expires header:\n{}",
        r.text()
    );

    assert_eq!(gauge(&s), 2.0, "two live bindings");
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        0.0
    );
}

#[test]
fn ha1b_digest_username_user_at_realm_is_accepted() {
    let mut s = Server::prepare("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    s.add_credential("carol", PW, None);
    s.add_credential_hashes(
        "dave",
        &digest::ha1(Alg::Md5, "dave", &realm, PW),
        &digest::ha1(Alg::Md5, &format!("dave@{realm}"), &realm, PW),
    );
    s.launch();
    let mut c = s.client();

    // Password credential: digest username `carol@realm` checks against HA1b, MD5 and SHA-256.
    for alg in [Alg::Md5, Alg::Sha256] {
        let r401 = c.challenge("carol", &realm);
        let ch = r401.challenge(alg);
        let req = c.register_answering("carol", &realm, &ch, &format!("carol@{realm}"), PW, 1, 120);
        let r = c.transact(&req);
        assert_code(&r, 200, &format!("HA1b ({}) registration", alg.name()));
    }

    // Hashes-only credential: HA1 (plain username) and HA1b (user@realm) both work.
    for digest_user in ["dave".to_string(), format!("dave@{realm}")] {
        let ch = c.challenge("dave", &realm).challenge(Alg::Md5);
        let req = c.register_answering("dave", &realm, &ch, &digest_user, PW, 1, 120);
        assert_code(
            &c.transact(&req),
            200,
            &format!("hashes-only credential, username {digest_user}"),
        );
    }

    // A wrong password under user@realm is still wrong.
    let r401 = c.challenge("carol", &realm);
    let ch = r401.challenge(Alg::Md5);
    let req = c.register_answering(
        "carol",
        &realm,
        &ch,
        &format!("carol@{realm}"),
        "wrong",
        1,
        120,
    );
    assert_code(&c.transact(&req), 403, "HA1b with a wrong password");
}

// ---------------------------------------------------------------------------------------------
// 403: unknown user or wrong response
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_password_and_unknown_user_get_403() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    let r = c.register_with("alice", &realm, "not-the-password", Alg::Md5, 120);
    assert_code(&r, 403, "wrong password");
    let r = c.register_with("alice", &realm, "not-the-password", Alg::Sha256, 120);
    assert_code(&r, 403, "wrong password (SHA-256)");
    let r = c.register_with("nobody", &realm, PW, Alg::Md5, 120);
    assert_code(&r, 403, "unknown user");

    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        3.0
    );
    assert_eq!(gauge(&s), 0.0, "no binding from failed authentication");
}

// ---------------------------------------------------------------------------------------------
// 401 stale / 401 forged nonce
// ---------------------------------------------------------------------------------------------

#[test]
fn stale_nonce_gets_401_with_stale_true_and_a_fresh_nonce() {
    let mut s = Server::prepare("[registrar]\nnonce_ttl_s = 1\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    let first = c.challenge("alice", &realm);
    let old = first.challenge(Alg::Md5);
    std::thread::sleep(Duration::from_millis(2200));
    let req = c.register_answering("alice", &realm, &old, "alice", PW, 1, 120);
    let r = c.transact(&req);
    assert_code(&r, 401, "correct credentials on an expired nonce");
    let chs = r.challenges();
    assert!(!chs.is_empty(), "401 without challenges");
    for ch in &chs {
        assert!(
            ch.is_stale(),
            "expired nonce must give stale=true: {}",
            ch.raw
        );
        assert_ne!(
            ch.nonce(),
            old.nonce(),
            "a stale answer carries a fresh nonce"
        );
    }
    // The fresh nonce works.
    let fresh = r.challenge(Alg::Md5);
    let req = c.register_answering("alice", &realm, &fresh, "alice", PW, 1, 120);
    assert_code(&c.transact(&req), 200, "answer to the fresh nonce");
    // A stale nonce is not an authentication failure.
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        0.0
    );
}

#[test]
fn forged_nonce_gets_401_not_stale_and_counts_as_auth_failure() {
    let mut s = Server::prepare("[security]\nauth_fail_limit = 3\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    let real = c.challenge("alice", &realm).challenge(Alg::Md5);
    let forged_nonces = [
        tamper(real.nonce()),
        format!("{}{}", rand_token(), rand_token()),
        "forged".to_string(),
    ];
    for (i, forged) in forged_nonces.iter().enumerate() {
        let mut ch = real.clone();
        ch.params.insert("nonce".into(), forged.clone());
        // Correct password: only the nonce is wrong.
        let req = c.register_answering("alice", &realm, &ch, "alice", PW, 1, 120);
        let r = c.transact(&req);
        assert_code(&r, 401, &format!("forged nonce #{} ({forged})", i + 1));
        for ch in r.challenges() {
            assert!(!ch.is_stale(), "a forged nonce is not stale: {}", ch.raw);
            assert_ne!(ch.nonce(), forged, "401 carries a fresh nonce");
        }
    }
    // Three forged nonces are three auth failures = auth_fail_limit: the source is now banned.
    let probe = c.options();
    c.assert_silence(
        &probe,
        SILENCE,
        "source banned after auth_fail_limit forged nonces",
    );
    assert_eq!(s.metric_or_zero("sipedge_bans_active"), 1.0);
    // Other sources are unaffected.
    let mut other = s.client_on("127.0.0.2");
    let probe = other.options();
    assert_code(&other.transact(&probe), 200, "OPTIONS from another IP");
}

// ---------------------------------------------------------------------------------------------
// 403 replay (nonce-count)
// ---------------------------------------------------------------------------------------------

#[test]
fn replayed_nonce_count_gets_403_and_higher_nc_is_accepted() {
    let mut s = Server::prepare("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();
    let uri = format!("sip:{realm}");

    let ch = c.challenge("alice", &realm).challenge(Alg::Md5);
    let auth1 = ch.authorization("alice", PW, "REGISTER", &uri, 1, "cnonce-one");
    let req = c
        .register("alice", &realm)
        .with("Expires", "120")
        .with("Authorization", &auth1);
    assert_code(&c.transact(&req), 200, "nc=1");

    // The same Authorization again in a new transaction: a replay.
    let req = c
        .register("alice", &realm)
        .with("Expires", "120")
        .with("Authorization", &auth1);
    assert_code(&c.transact(&req), 403, "replayed nc=1");
    // nc=1 with another cnonce is still not above the last accepted nc.
    let again = ch.authorization("alice", PW, "REGISTER", &uri, 1, "cnonce-two");
    let req = c
        .register("alice", &realm)
        .with("Expires", "120")
        .with("Authorization", &again);
    assert_code(&c.transact(&req), 403, "nc=1 with a new cnonce");

    // A higher nc on the same nonce is accepted, and again.
    for nc in [2u32, 3] {
        let auth = ch.authorization("alice", PW, "REGISTER", &uri, nc, &rand_token());
        let req = c
            .register("alice", &realm)
            .with("Expires", "120")
            .with("Authorization", &auth);
        assert_code(&c.transact(&req), 200, &format!("nc={nc}"));
    }
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        2.0
    );
}

// ---------------------------------------------------------------------------------------------
// 429 / throttle_status
// ---------------------------------------------------------------------------------------------

#[test]
fn register_sooner_than_min_interval_gets_429_with_retry_after() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    assert_code(
        &c.register_with("alice", &realm, PW, Alg::Md5, 120),
        200,
        "first registration",
    );
    let r = c.register_with("alice", &realm, PW, Alg::Md5, 120);
    assert_code(&r, 429, "re-REGISTER within min_interval_s (100)");
    let ra = r
        .header_u64("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After:\n{}", r.text()));
    assert!(
        (90..=100).contains(&ra),
        "Retry-After should be the seconds left of 100, got {ra}"
    );
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"throttled\"}"),
        1.0
    );
    assert_eq!(gauge(&s), 1.0, "the first binding stays");
}

#[test]
fn throttle_status_503_is_used_when_configured() {
    let mut s = Server::prepare("[registrar]\nthrottle_status = 503\nmin_interval_s = 50\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    assert_code(
        &c.register_with("alice", &realm, PW, Alg::Sha256, 120),
        200,
        "first registration",
    );
    let r = c.register_with("alice", &realm, PW, Alg::Sha256, 120);
    assert_code(&r, 503, "re-REGISTER with throttle_status = 503");
    let ra = r
        .header_u64("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After:\n{}", r.text()));
    assert!(
        (40..=50).contains(&ra),
        "Retry-After should be the seconds left of 50, got {ra}"
    );
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"throttled\"}"),
        1.0
    );
}

// ---------------------------------------------------------------------------------------------
// 423 Interval Too Brief
// ---------------------------------------------------------------------------------------------

#[test]
fn expiry_below_min_expires_gets_423_with_min_expires() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    // Expires header below min_expires_s (60).
    let r = c.register_with("alice", &realm, PW, Alg::Md5, 30);
    assert_code(&r, 423, "Expires: 30");
    assert_eq!(
        r.header_u64("min-expires"),
        Some(60),
        "Min-Expires:\n{}",
        r.text()
    );

    // The Contact's expires parameter is a requested expiry too (RFC 3261 §10.2.1.1).
    let ch = c.challenge("alice", &realm).challenge(Alg::Md5);
    let auth = ch.authorization(
        "alice",
        PW,
        "REGISTER",
        &format!("sip:{realm}"),
        1,
        &rand_token(),
    );
    let contact = format!("<sip:alice@{}>;expires=10", c.local);
    let req = c
        .register("alice", &realm)
        .without("Expires")
        .with("Contact", &contact)
        .with("Authorization", &auth);
    let r = c.transact(&req);
    assert_code(&r, 423, "Contact ;expires=10");
    assert_eq!(
        r.header_u64("min-expires"),
        Some(60),
        "Min-Expires:\n{}",
        r.text()
    );

    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"interval\"}"),
        2.0
    );
    assert_eq!(gauge(&s), 0.0);
    // 423 is not an accepted REGISTER: a valid one right after is not throttled.
    assert_code(
        &c.register_with("alice", &realm, PW, Alg::Md5, 60),
        200,
        "Expires: 60 after 423",
    );
}

// ---------------------------------------------------------------------------------------------
// Expires: 0 / Contact: *
// ---------------------------------------------------------------------------------------------

#[test]
fn unregister_removes_binding_and_is_never_throttled() {
    // Default min_interval_s = 100: an unregister right after registering must not get 429.
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.add_credential("bob", PW, None);
    s.launch();

    let mut a = s.client();
    assert_code(
        &a.register_with("alice", &realm, PW, Alg::Md5, 120),
        200,
        "alice registers",
    );
    assert_eq!(gauge(&s), 1.0);
    let r = a.register_with("alice", &realm, PW, Alg::Md5, 0);
    assert_code(&r, 200, "Expires: 0 right after registering");
    assert_eq!(gauge(&s), 0.0, "Expires: 0 removes the binding");

    let mut b = s.client();
    assert_code(
        &b.register_with("bob", &realm, PW, Alg::Sha256, 120),
        200,
        "bob registers",
    );
    assert_eq!(gauge(&s), 1.0);
    let ch = b.challenge("bob", &realm).challenge(Alg::Sha256);
    let auth = ch.authorization(
        "bob",
        PW,
        "REGISTER",
        &format!("sip:{realm}"),
        1,
        &rand_token(),
    );
    let req = b
        .register("bob", &realm)
        .with("Contact", "*")
        .with("Expires", "0")
        .with("Authorization", &auth);
    let r = b.transact(&req);
    assert_code(&r, 200, "Contact: * with Expires: 0");
    assert_eq!(gauge(&s), 0.0, "Contact: * removes the binding");

    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"throttled\"}"),
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// Conflict: another source IP while a binding exists
// ---------------------------------------------------------------------------------------------

#[test]
fn conflict_replace_moves_the_binding_to_the_new_source() {
    let mut s = Server::prepare("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();

    let mut first = s.client_on("127.0.0.1");
    assert_code(
        &first.register_with("alice", &realm, PW, Alg::Md5, 120),
        200,
        "from 127.0.0.1",
    );
    let mut second = s.client_on("127.0.0.2");
    let r = second.register_with("alice", &realm, PW, Alg::Md5, 120);
    assert_code(
        &r,
        200,
        "from 127.0.0.2 with on_conflict = replace (default)",
    );
    assert_eq!(
        gauge(&s),
        1.0,
        "max_contacts = 1: the old binding is replaced, not added"
    );

    // RFC 3261 §10.3: the 200 lists the current bindings: the new contact, not the old one.
    let contacts = r.headers_all("contact").join(", ");
    assert!(
        contacts.contains(&format!("sip:alice@{}", second.local)),
        "200 must list the new contact: {contacts}"
    );
    assert!(
        !contacts.contains(&format!("sip:alice@{}", first.local)),
        "the replaced contact must be gone: {contacts}"
    );
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"conflict\"}"),
        0.0
    );
}

#[test]
fn conflict_reject_answers_403_credential_in_use_but_allows_nat_rebinding() {
    let mut s = Server::prepare(
        "[registrar]\nmin_interval_s = 0\non_conflict = \"reject\"\n[security]\nauth_fail_limit = 2\n",
    );
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();

    let mut first = s.client_on("127.0.0.1");
    assert_code(
        &first.register_with("alice", &realm, PW, Alg::Md5, 120),
        200,
        "from 127.0.0.1",
    );

    // Another IP: rejected, every time (a conflict is not an auth failure: with
    // auth_fail_limit = 2, counting them would ban 127.0.0.2 at the second one).
    let mut other = s.client_on("127.0.0.2");
    for i in 1..=2 {
        let r = other.register_with("alice", &realm, PW, Alg::Md5, 120);
        assert_code(
            &r,
            403,
            &format!("conflicting REGISTER #{i} from 127.0.0.2"),
        );
        assert_eq!(
            r.reason,
            "Credential in use",
            "reason phrase:\n{}",
            r.text()
        );
    }
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"conflict\"}"),
        2.0
    );
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        0.0
    );
    assert_eq!(
        s.metric_or_zero("sipedge_bans_active"),
        0.0,
        "conflicts do not ban"
    );
    let probe = other.options();
    assert_code(&other.transact(&probe), 200, "127.0.0.2 is not banned");

    // A new port on the same IP is a NAT rebinding, not a conflict.
    let mut rebound = s.client_on("127.0.0.1");
    assert_ne!(rebound.local.port(), first.local.port());
    let r = rebound.register_with("alice", &realm, PW, Alg::Md5, 120);
    assert_code(&r, 200, "same IP, new port");
    assert_eq!(gauge(&s), 1.0);
}

// ---------------------------------------------------------------------------------------------
// Bans, scanners, source rate limit
// ---------------------------------------------------------------------------------------------

#[test]
fn auth_failures_ban_the_source_ip() {
    let mut s = Server::prepare("[security]\nauth_fail_limit = 3\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    for i in 1..=3 {
        let r = c.register_with("alice", &realm, "wrong", Alg::Md5, 120);
        assert_code(&r, 403, &format!("failure #{i}"));
    }
    // The 3rd failure banned 127.0.0.1: everything from it is dropped silently now.
    let probe = c.options();
    c.assert_silence(&probe, SILENCE, "banned source, OPTIONS");
    let reg = c.register("alice", &realm);
    c.assert_silence(&reg, SILENCE, "banned source, REGISTER");
    // Also from another port of the same IP (bans are per IP).
    let mut same_ip = s.client_on("127.0.0.1");
    let probe = same_ip.options();
    same_ip.assert_silence(&probe, SILENCE, "banned IP, other port");

    assert!(
        s.metric_or_zero("sipedge_dropped_total{reason=\"banned\"}") >= 3.0,
        "{}",
        s.metrics()
    );
    // Dropped before parsing: not counted as requests (only the 3 challenged + 3 failed REGISTERs).
    assert_eq!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"OPTIONS\"}"),
        0.0
    );
    assert_eq!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"REGISTER\"}"),
        6.0
    );
    assert_eq!(s.metric_or_zero("sipedge_bans_active"), 1.0);
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        3.0
    );

    let mut other = s.client_on("127.0.0.2");
    let probe = other.options();
    assert_code(&other.transact(&probe), 200, "another IP is not banned");
}

#[test]
fn throttled_registers_ban_the_source_ip() {
    let mut s = Server::prepare("[security]\nthrottle_ban_limit = 2\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    assert_code(
        &c.register_with("alice", &realm, PW, Alg::Md5, 120),
        200,
        "first registration",
    );
    for i in 1..=2 {
        let r = c.register_with("alice", &realm, PW, Alg::Md5, 120);
        assert_code(&r, 429, &format!("throttled #{i}"));
    }
    let probe = c.options();
    c.assert_silence(&probe, SILENCE, "banned after throttle_ban_limit 429s");
    assert_eq!(s.metric_or_zero("sipedge_bans_active"), 1.0);
    assert!(s.metric_or_zero("sipedge_dropped_total{reason=\"banned\"}") >= 1.0);
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"throttled\"}"),
        2.0
    );
}

#[test]
fn scanner_user_agents_are_dropped_silently_and_counted() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    let reg = c
        .register("alice", &realm)
        .with("User-Agent", "friendly-scanner");
    c.assert_silence(&reg, SILENCE, "User-Agent friendly-scanner");
    // Case-insensitive substring match.
    let opt = c.options().with("User-Agent", "SIPVicious/0.3.4 (probe)");
    c.assert_silence(&opt, SILENCE, "User-Agent containing sipvicious");

    assert_eq!(
        s.metric_or_zero("sipedge_dropped_total{reason=\"scanner\"}"),
        2.0,
        "{}",
        s.metrics()
    );
    // Scanner drops are parsed requests: they count in sipedge_sip_requests_total.
    assert_eq!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"REGISTER\"}"),
        1.0
    );
    assert_eq!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"OPTIONS\"}"),
        1.0
    );

    // A normal client is served.
    let mut ok = s.client_on("127.0.0.2");
    assert_code(&ok.challenge("alice", &realm), 401, "normal User-Agent");
}

#[test]
fn source_rate_limit_drops_the_excess() {
    let s = Server::start("[security]\nsource_rate_limit = 5\n");
    let mut c = s.client();

    let reqs: Vec<Request> = (0..20).map(|_| c.options()).collect();
    for r in &reqs {
        c.send(r);
    }
    let mut answered = 0;
    while let Some(r) = c.recv_timeout(Duration::from_millis(500)) {
        assert_code(&r, 200, "OPTIONS");
        answered += 1;
    }
    assert!(
        (5..=7).contains(&answered),
        "burst of 20 with source_rate_limit = 5 (bucket of 5): expected about 5 answers, got {answered}"
    );
    let dropped = s.metric_or_zero("sipedge_dropped_total{reason=\"source_rate\"}");
    assert_eq!(
        dropped,
        (20 - answered) as f64,
        "every excess request counted as source_rate"
    );
    // Requests dropped before parsing count only in sipedge_dropped_total.
    assert_eq!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"OPTIONS\"}"),
        answered as f64,
        "rate-limited requests must not count as parsed requests"
    );

    // Other sources have their own bucket.
    let mut other = s.client_on("127.0.0.2");
    let probe = other.options();
    assert_code(&other.transact(&probe), 200, "another IP");
    // And the bucket refills.
    std::thread::sleep(Duration::from_millis(600));
    let probe = c.options();
    assert_code(&c.transact(&probe), 200, "after refill");
}

// ---------------------------------------------------------------------------------------------
// Transactions, OPTIONS, malformed input, response routing (§3.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn retransmission_gets_identical_response_and_is_processed_once() {
    // min_interval_s = 100 (default): a second processing of the authenticated REGISTER would
    // give 429 (or 403 for the reused nc), so an identical 200 proves the transaction layer.
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    let req = c.register("alice", &realm);
    let branch = req.branch().unwrap();
    let bytes = c.send(&req);
    let r1 = c.recv_for(&branch, ANSWER).expect("401");
    assert_code(&r1, 401, "first REGISTER");
    c.send_raw(&bytes);
    let r2 = c
        .recv_for(&branch, ANSWER)
        .expect("response to the retransmitted REGISTER");
    assert_eq!(
        r2.text(),
        r1.text(),
        "a retransmission gets the same 401, byte for byte (same nonce)"
    );

    let ch = r1.challenge(Alg::Md5);
    let req = c.register_answering("alice", &realm, &ch, "alice", PW, 1, 120);
    let branch = req.branch().unwrap();
    let bytes = c.send(&req);
    let ok1 = c.recv_for(&branch, ANSWER).expect("200");
    assert_code(&ok1, 200, "authenticated REGISTER");
    c.send_raw(&bytes);
    let ok2 = c
        .recv_for(&branch, ANSWER)
        .expect("response to the retransmitted authenticated REGISTER");
    assert_eq!(
        ok2.text(),
        ok1.text(),
        "a retransmission gets the same 200, byte for byte"
    );
    assert!(
        c.recv_timeout(Duration::from_millis(300)).is_none(),
        "exactly one answer per retransmission"
    );

    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"throttled\"}"),
        0.0,
        "processed twice?"
    );
    assert_eq!(
        s.metric_or_zero("sipedge_register_rejected_total{reason=\"auth\"}"),
        0.0,
        "processed twice?"
    );
    assert_eq!(gauge(&s), 1.0);
    // Retransmissions are parsed requests too.
    assert_eq!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"REGISTER\"}"),
        4.0
    );
}

#[test]
fn options_is_answered_200_without_authentication() {
    let s = Server::start("");
    let mut c = s.client();
    let req = c.options();
    let r = c.transact(&req);
    assert_code(&r, 200, "OPTIONS");
    assert!(r.challenges().is_empty(), "no challenge on OPTIONS");
    assert_eq!(r.header("call-id"), req.header("call-id"));
    assert_eq!(r.header("cseq"), req.header("cseq"));
    // RFC 3581: rport filled with the source port, received with the source IP.
    let via = r.header("via").expect("Via");
    assert_eq!(
        header_param(via, "rport").as_deref(),
        Some(c.local.port().to_string().as_str()),
        "Via: {via}"
    );
    assert_eq!(
        header_param(via, "received").as_deref(),
        Some("127.0.0.1"),
        "Via: {via}"
    );
    assert_eq!(
        s.metric_or_zero("sipedge_sip_requests_total{method=\"OPTIONS\"}"),
        1.0
    );
    assert!(s.metric_or_zero("sipedge_sip_responses_total{code=\"200\"}") >= 1.0);
}

#[test]
fn response_goes_to_the_via_port_without_rport() {
    let s = Server::start("");
    let mut sender = s.client();
    let receiver = s.client();
    // No rport: RFC 3261 §18.2.2 sends to the source IP (received) and the Via sent-by port.
    let req = sender.options().with(
        "Via",
        &format!(
            "SIP/2.0/UDP {};branch=z9hG4bK{}",
            receiver.local,
            rand_token()
        ),
    );
    sender.send(&req);
    let r = receiver
        .recv_timeout(ANSWER)
        .expect("response at the Via sent-by port");
    assert_code(&r, 200, "OPTIONS without rport");
    assert!(
        sender.recv_timeout(Duration::from_millis(200)).is_none(),
        "nothing to the source port"
    );
    // With rport: back to the source port.
    let req = sender.options().with(
        "Via",
        &format!(
            "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
            receiver.local,
            rand_token()
        ),
    );
    assert_code(&sender.transact(&req), 200, "OPTIONS with rport");
}

#[test]
fn malformed_requests_get_400_or_are_dropped_and_are_counted() {
    let s = Server::start("");
    let mut c = s.client();
    let realm = s.realm.clone();

    // Unparseable CSeq, good Via -> 400.
    let bad_cseq = c.register("alice", &realm).with("CSeq", "abc REGISTER");
    let r = c.transact(&bad_cseq);
    assert_code(&r, 400, "CSeq: abc REGISTER");
    // CSeq method not matching the start line -> 400.
    let mismatch = c.options().with("CSeq", "7 INVITE");
    assert_code(
        &c.transact(&mismatch),
        400,
        "OPTIONS with CSeq method INVITE",
    );
    // Missing From -> 400.
    let no_from = c.options().without("From");
    assert_code(&c.transact(&no_from), 400, "OPTIONS without From");

    // Garbage without a Via: no answer at all.
    c.send_raw(b"hello sipedge, this is not SIP\r\n\r\n");
    c.send_raw(b"REGISTER sip:x SIP/2.0\r\nCSeq: 1 REGISTER\r\nCall-ID: a\r\n\r\n");
    c.send_raw(&[0xffu8, 0x00, 0x13, 0x37, b'\r', b'\n']);
    assert!(
        c.recv_timeout(SILENCE).is_none(),
        "no answer to messages without a parseable Via"
    );

    assert_eq!(
        s.metric_or_zero("sipedge_sip_malformed_total"),
        6.0,
        "{}",
        s.metrics()
    );
    assert!(s.metric_or_zero("sipedge_sip_responses_total{code=\"400\"}") >= 3.0);
    let probe = c.options();
    assert_code(&c.transact(&probe), 200, "still serving");
}

// ---------------------------------------------------------------------------------------------
// Binding lifetime
// ---------------------------------------------------------------------------------------------

#[test]
fn bindings_expire_within_one_second_of_their_expiry() {
    let mut s = Server::prepare("[registrar]\nmin_expires_s = 1\nmax_expires_s = 2\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    let r = c.register_with("alice", &realm, PW, Alg::Md5, 10);
    let t0 = Instant::now();
    assert_code(&r, 200, "register");
    assert_eq!(
        r.contact_expires(),
        Some(2),
        "granted min(10, max_expires_s = 2):\n{}",
        r.text()
    );
    assert_eq!(gauge(&s), 1.0);
    let left = s.wait_metric(
        "sipedge_registrations_active",
        Duration::from_millis(3300),
        |v| v == 0.0,
    );
    let gone_after = t0.elapsed();
    assert_eq!(
        left, 0.0,
        "binding with expires=2 still active {gone_after:?} after the 200"
    );
    assert!(
        gone_after >= Duration::from_millis(900),
        "binding vanished too early: {gone_after:?}"
    );
}

#[test]
fn bindings_and_their_timing_survive_a_restart() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    assert_code(
        &c.register_with("alice", &realm, PW, Alg::Md5, 300),
        200,
        "register",
    );
    assert_eq!(gauge(&s), 1.0);
    s.restart();
    c.retarget(s.sip);

    assert_eq!(gauge(&s), 1.0, "binding reloaded after restart");
    // The last-accepted time survived too: a re-REGISTER within min_interval_s is throttled.
    let r = c.register_with("alice", &realm, PW, Alg::Md5, 300);
    assert_code(&r, 429, "re-REGISTER within min_interval_s after restart");
    assert!(
        r.header_u64("retry-after").is_some(),
        "Retry-After:\n{}",
        r.text()
    );
}

#[test]
fn many_fresh_nonces_for_one_credential_are_all_accepted() {
    // Several PBX re-registrations (or several devices behind one NAT) in quick succession, each
    // with its own fresh nonce, well within nonce_ttl_s: none of them is stale.
    let mut s = Server::prepare("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();
    for i in 1..=6 {
        let r = c.register_with("alice", &realm, PW, Alg::Md5, 120);
        assert_code(&r, 200, &format!("registration #{i} with a fresh nonce"));
    }
    // The same from new source ports of the same IP (NAT rebindings: not a conflict), which the
    // kernel spreads over the workers, so nonces minted by different workers interleave.
    for i in 1..=10 {
        let mut c = s.client();
        let r = c.register_with("alice", &realm, PW, Alg::Md5, 120);
        assert_code(&r, 200, &format!("registration #{i} from a new port"));
    }
    // Two challenges taken before either is answered, answered in reverse order.
    let mut a = s.client();
    let mut b = s.client();
    let ch_a = a.challenge("alice", &realm).challenge(Alg::Md5);
    let ch_b = b.challenge("alice", &realm).challenge(Alg::Md5);
    let req_b = b.register_answering("alice", &realm, &ch_b, "alice", PW, 1, 120);
    assert_code(&b.transact(&req_b), 200, "later nonce answered first");
    let req_a = a.register_answering("alice", &realm, &ch_a, "alice", PW, 1, 120);
    assert_code(&a.transact(&req_a), 200, "earlier nonce answered second");
}

#[test]
fn registrations_api_lists_the_binding_source_across_replace_and_restart() {
    let mut s = Server::prepare("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();

    let mut first = s.client_on("127.0.0.1");
    let r = first.register_with("alice", &realm, PW, Alg::Md5, 120);
    assert_code(&r, 200, "from 127.0.0.1");
    let mut second = s.client_on("127.0.0.2");
    second.user_agent = "PBX-B/2.1".into();
    let r = second.register_with("alice", &realm, PW, Alg::Md5, 120);
    assert_code(&r, 200, "from 127.0.0.2 (replace)");

    let unauth = s.http_get("/api/v1/registrations", None);
    assert_eq!(
        unauth.status, 401,
        "/api without a bearer token: {}",
        unauth.body
    );

    for phase in ["before restart", "after restart"] {
        let (st, regs) = s.api_get("/api/v1/registrations");
        assert_eq!(st, 200, "GET /api/v1/registrations {phase}: {regs}");
        let list = regs
            .as_array()
            .unwrap_or_else(|| panic!("registrations must be a JSON array: {regs}"));
        let alice: Vec<_> = list.iter().filter(|r| r["username"] == "alice").collect();
        assert_eq!(alice.len(), 1, "one binding for alice {phase}: {regs}");
        let b = alice[0];
        assert_eq!(b["realm"], realm.as_str(), "{phase}: {regs}");
        assert_eq!(
            b["source"],
            second.local.to_string(),
            "binding at the new source {phase}: {regs}"
        );
        assert_eq!(
            b["transport"]
                .as_str()
                .map(|t| t.to_ascii_lowercase())
                .as_deref(),
            Some("udp"),
            "{regs}"
        );
        assert_eq!(b["user_agent"], "PBX-B/2.1", "{phase}: {regs}");
        assert!(
            b["contact"]
                .as_str()
                .is_some_and(|c| c.contains(&format!("sip:alice@{}", second.local))),
            "{phase}: {regs}"
        );
        let left = b["expires_in_s"].as_f64().unwrap_or(-1.0);
        assert!(
            (100.0..=120.0).contains(&left),
            "expires_in_s {left} {phase}: {regs}"
        );
        if phase == "before restart" {
            s.restart();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics and health (§4)
// ---------------------------------------------------------------------------------------------

#[test]
fn metrics_and_health_expose_the_contract_names() {
    let mut s = Server::prepare("");
    let realm = s.realm.clone();
    s.add_credential("alice", PW, None);
    s.launch();
    let mut c = s.client();

    let h = s.health();
    assert_eq!(h.status, 200, "/health: {}", h.body);
    let j: serde_json::Value =
        serde_json::from_str(&h.body).unwrap_or_else(|e| panic!("/health JSON: {e}: {}", h.body));
    assert_eq!(j["status"], "ok", "{}", h.body);
    assert_eq!(j["workers"], 2, "{}", h.body);
    assert!(j["uptime_s"].is_number(), "{}", h.body);

    let bad = c.register_with("alice", &realm, "wrong", Alg::Md5, 120); // 2 requests: 401, 403
    assert_code(&bad, 403, "wrong password");
    let good = c.register_with("alice", &realm, PW, Alg::Md5, 120); // 2 requests: 401, 200
    assert_code(&good, 200, "good password");

    let m = s.metrics();
    let get = |series: &str| {
        metric_value(&m, series).unwrap_or_else(|| panic!("series {series} missing:\n{m}"))
    };
    assert_eq!(get("sipedge_sip_requests_total{method=\"REGISTER\"}"), 4.0);
    assert_eq!(get("sipedge_sip_responses_total{code=\"401\"}"), 2.0);
    assert_eq!(get("sipedge_sip_responses_total{code=\"403\"}"), 1.0);
    assert_eq!(get("sipedge_sip_responses_total{code=\"200\"}"), 1.0);
    assert_eq!(get("sipedge_register_rejected_total{reason=\"auth\"}"), 1.0);
    assert_eq!(get("sipedge_registrations_active"), 1.0);
    assert_eq!(get("sipedge_sip_malformed_total"), 0.0);
    assert_eq!(get("sipedge_bans_active"), 0.0);

    let mut last = 0.0;
    for q in ["0.5", "0.9", "0.99", "0.999"] {
        let v = get(&format!(
            "sipedge_processing_seconds{{method=\"REGISTER\",quantile=\"{q}\"}}"
        ));
        assert!(
            (0.0..1.0).contains(&v),
            "processing_seconds quantile {q} = {v}: must be seconds, sane"
        );
        assert!(v >= last, "quantiles must be monotonic: {q} = {v} < {last}");
        last = v;
    }
    get("sipedge_worker_messages_total{worker=\"0\"}");
    get("sipedge_worker_messages_total{worker=\"1\"}");
    assert!(
        metric_sum(&m, "sipedge_worker_messages_total") >= 4.0,
        "workers handled the 4 REGISTERs:\n{m}"
    );
    for (name, ty) in [
        ("sipedge_sip_requests_total", "counter"),
        ("sipedge_sip_responses_total", "counter"),
        ("sipedge_sip_malformed_total", "counter"),
        ("sipedge_registrations_active", "gauge"),
        ("sipedge_register_rejected_total", "counter"),
        ("sipedge_dropped_total", "counter"),
        ("sipedge_bans_active", "gauge"),
        ("sipedge_processing_seconds", "summary"),
        ("sipedge_worker_messages_total", "counter"),
    ] {
        assert_eq!(
            metric_type(&m, name).as_deref(),
            Some(ty),
            "# TYPE of {name}:\n{m}"
        );
    }
}

/// A PBX that keeps its address is served wholly by the worker its datagrams land on: with two
/// workers and one client socket, forty credentials register without a single cross-worker
/// hand-off (a fixed hash-of-credential owner would hand about half of them over).
#[test]
fn a_steady_pbx_registers_without_cross_worker_handoffs() {
    let mut s = Server::prepare("[sip]\nworkers = 2\n");
    for i in 0..40 {
        s.add_credential(&format!("pbx{i}"), PW, None);
    }
    s.launch();
    let mut c = s.client();
    for i in 0..40 {
        let r = c.register_with(&format!("pbx{i}"), &s.realm, PW, Alg::Md5, 60);
        assert_code(&r, 200, "registration");
    }
    assert_eq!(gauge(&s), 40.0);
    let text = s.metrics();
    assert_eq!(
        metric_sum(&text, "sipedge_worker_handoffs_total"),
        0.0,
        "{text}"
    );
}

/// After a restart, bindings come back on their credential's home shard; the first REGISTER of
/// each PBX moves its credential's slot, state included, to the worker the PBX lands on. From
/// then on nothing is handed over, nothing is lost or counted twice.
#[test]
fn restored_credentials_follow_their_pbx_to_its_worker_after_a_restart() {
    let mut s = Server::prepare("[sip]\nworkers = 2\n[registrar]\nmin_interval_s = 0\n");
    for i in 0..40 {
        s.add_credential(&format!("pbx{i}"), PW, None);
    }
    s.launch();
    let realm = s.realm.clone();
    let mut c = s.client();
    let round = |c: &mut Client| {
        for i in 0..40 {
            let r = c.register_with(&format!("pbx{i}"), &realm, PW, Alg::Md5, 300);
            assert_code(&r, 200, "registration");
        }
    };
    round(&mut c);
    s.restart();
    c.retarget(s.sip);
    assert_eq!(gauge(&s), 40.0, "bindings restored");
    round(&mut c);
    let handoffs = || metric_sum(&s.metrics(), "sipedge_worker_handoffs_total");
    let moved = handoffs();
    // About half the 40 credentials were restored on the other worker (2^-40 odds of none).
    assert!(moved > 0.0, "the first round moved restored slots");
    round(&mut c);
    assert_eq!(handoffs(), moved, "no hand-off once the slots moved");
    assert_eq!(gauge(&s), 40.0, "each binding counted once");
    let (code, regs) = s.api_get("/api/v1/registrations");
    assert_eq!(code, 200);
    assert_eq!(regs.as_array().map(Vec::len), Some(40), "{regs}");
}

/// SIGTERM sent the moment sipedge says it is ready is a clean shutdown every time. The signal
/// handlers once came after the ready line, and under load a supervisor's early SIGTERM found
/// the default action (killed, nothing flushed): `restored_credentials_follow...` failed so. That
/// window was narrow, so this guards the path rather than reproducing the race every run.
#[test]
fn sigterm_right_after_ready_is_a_clean_exit() {
    for _ in 0..5 {
        let mut s = Server::start("");
        let st = s.terminate();
        assert_eq!(st.code(), Some(0), "{st:?}; stderr:\n{}", s.log());
    }
}

/// A PBX whose NAT rebinds it onto another worker is handed over at first, and its credential's
/// slot follows it once its old worker has not heard from it for a while (2 s): from then on
/// nothing is handed over.
#[test]
fn a_pbx_that_moves_to_another_worker_takes_its_credentials_along() {
    let mut s = Server::prepare("[sip]\nworkers = 2\n[registrar]\nmin_interval_s = 0\n");
    for i in 0..20 {
        s.add_credential(&format!("pbx{i}"), PW, None);
    }
    s.launch();
    let realm = s.realm.clone();
    let round = |c: &mut Client| {
        for i in 0..20 {
            let r = c.register_with(&format!("pbx{i}"), &realm, PW, Alg::Md5, 300);
            assert_code(&r, 200, "registration");
        }
    };
    let handoffs = || metric_sum(&s.metrics(), "sipedge_worker_handoffs_total");
    round(&mut s.client());
    assert_eq!(handoffs(), 0.0, "the first worker claimed every slot");
    // New source ports until one lands on the other worker (odds 2^-24 that none does).
    let mut moved = None;
    for _ in 0..24 {
        let mut c = s.client();
        let r = c.register_with("pbx0", &realm, PW, Alg::Md5, 300);
        assert_code(&r, 200, "registration from a new port");
        if handoffs() > 0.0 {
            moved = Some(c);
            break;
        }
    }
    let mut c = moved.expect("a client port that lands on the other worker");
    std::thread::sleep(Duration::from_millis(2_200));
    round(&mut c);
    let after_move = handoffs();
    assert!(
        after_move <= 21.0,
        "each slot handed over at most once more before it moved: {after_move}"
    );
    round(&mut c);
    round(&mut c);
    assert_eq!(handoffs(), after_move, "no hand-off once the slots moved");
    let (code, regs) = s.api_get("/api/v1/registrations");
    assert_eq!(code, 200);
    let from_new = regs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["source"].as_str() == Some(&c.local.to_string()))
        .count();
    assert_eq!(from_new, 20, "{regs}");
}

/// Sends bursts of unauthenticated REGISTERs from one socket until the worker has coalesced a
/// turn (at most `bursts`), and checks every one of them was answered with its own 401.
fn bursts_until_coalesced(s: &Server, bursts: usize) -> f64 {
    const BURST: usize = 40;
    let mut c = s.client();
    let coalesced = || metric_sum(&s.metrics(), "sipedge_worker_coalesced_total");
    for _ in 0..bursts {
        let mut branches = std::collections::HashSet::new();
        for i in 0..BURST {
            let req = c.register(&format!("burst{i}"), &s.realm);
            branches.insert(req.branch().expect("a branch"));
            c.send(&req);
        }
        while !branches.is_empty() {
            let r = c
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("{} of the burst unanswered", branches.len()));
            assert_code(&r, 401, "challenge");
            let branch = r.branch().expect("a branch");
            assert!(branches.remove(&branch), "one answer per request");
        }
        if coalesced() > 0.0 {
            break;
        }
    }
    coalesced()
}

/// Under a burst a worker finds several datagrams per turn and waits `sip.coalesce_us` for more
/// instead of waking for each (the counter moves); nothing is lost or answered twice on the way.
/// With `coalesce_us = 0` it always parks at once.
#[test]
fn a_burst_is_answered_in_coalesced_turns_and_zero_turns_it_off() {
    let conf = "[sip]\nworkers = 1\ncoalesce_us = 2000\n[security]\nsource_rate_limit = 100000\n";
    let s = Server::start(conf);
    assert!(
        bursts_until_coalesced(&s, 50) > 0.0,
        "no coalesced turn in 50 bursts of 40"
    );
    let off = Server::start(
        "[sip]\nworkers = 1\ncoalesce_us = 0\n[security]\nsource_rate_limit = 100000\n",
    );
    assert_eq!(bursts_until_coalesced(&off, 5), 0.0);
}
