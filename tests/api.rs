//! The provisioning API end to end (SPEC §4; seeds 000, 003, 004): a real `sipedge run` on
//! loopback, driven over HTTP/1.1 by the tests' own client, with SIP REGISTERs from the tests'
//! own UAC (tests/common) to prove that provisioning reaches live traffic.
//!
//! Every answer the tests get through `api_common::Api` is held to `src/admin/openapi.json`:
//! its (path template, method, status) must be documented and its JSON must match the documented
//! schema (`api_common::validate`).

mod api_common;
mod common;

use api_common::{conforms, http, openapi, operation, template_of, validate, Api, Reply};
use common::digest::{self, Alg};
use common::{assert_code, parse_ready_line, Client, Server, ADMIN_TOKEN, BIN, SILENCE};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PW: &str = "s3cret-Pass.word";

fn start(extra: &str) -> (Server, Api) {
    let s = Server::start(extra);
    let api = Api::new(s.admin, ADMIN_TOKEN);
    (s, api)
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// Polls `f` every 20 ms until it holds or `within` passes; returns whether it held.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn usernames(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a JSON list: {list}"))
        .iter()
        .map(|c| c["username"].as_str().unwrap().to_string())
        .collect()
}

/// The seed 003 pair for (user, realm, password): HA1 and HA1b, MD5.
fn md5_hashes(user: &str, realm: &str, password: &str) -> (String, String) {
    (
        digest::ha1(Alg::Md5, user, realm, password),
        digest::h(Alg::Md5, &format!("{user}@{realm}:{realm}:{password}")),
    )
}

/// Asserts that none of `secrets` appears in the server's log or in any file of its data
/// directory (the SQLite database, its WAL and shared-memory files included).
#[track_caller]
fn assert_secrets_absent(s: &Server, secrets: &[String]) {
    let log = s.log();
    let mut files = Vec::new();
    for e in std::fs::read_dir(s.data_dir()).unwrap() {
        let p = e.unwrap().path();
        files.push((p.clone(), std::fs::read(&p).unwrap()));
    }
    assert!(
        files
            .iter()
            .any(|(p, _)| p.file_name().unwrap() == "sipedge.db"),
        "the store file exists"
    );
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !log.contains(secret.as_str()),
            "a password appears in the server log"
        );
        for (p, bytes) in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a password appears in {}",
                p.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tenants and realms
// ---------------------------------------------------------------------------------------------

#[test]
fn tenants_and_realms_crud_and_errors() {
    let (_s, api) = start("");
    let t = "/api/v1/tenants";
    assert_eq!(
        api.expect("POST", t, Some(json!({"name": "acme"})), 201),
        json!({"name": "acme"})
    );
    let dup = api.post(t, json!({"name": "acme"}));
    assert_eq!(dup.status, 409, "{}", dup.body);
    assert!(dup.error().contains("acme"), "{}", dup.body);
    api.expect_bad("POST", t, json!({"name": "a b"}), "name");
    api.expect_bad("POST", t, json!({}), "name");
    api.expect_bad("POST", t, json!({"name": 5}), "name");
    api.expect_bad("POST", t, json!({"name": "x", "colour": "red"}), "colour");
    api.expect_bad("POST", t, json!(["acme"]), "body");
    for malformed in [Some("{\"name\": "), Some("name=acme"), None] {
        let r = api.call_raw("POST", t, malformed);
        assert_eq!(r.status, 400, "{malformed:?}: {}", r.body);
        assert!(r.error().starts_with("body: "), "{malformed:?}: {}", r.body);
    }
    api.expect("POST", t, Some(json!({"name": "globex"})), 201);
    assert_eq!(
        api.expect("GET", t, None, 200),
        json!([{"name": "acme"}, {"name": "globex"}])
    );
    assert_eq!(
        api.expect("GET", "/api/v1/tenants/acme", None, 200),
        json!({"name": "acme"})
    );
    let missing = api.get("/api/v1/tenants/nobody");
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("nobody"), "{}", missing.body);
    let q = api.get("/api/v1/tenants?colour=red");
    assert_eq!(q.status, 400);
    assert!(q.error().starts_with("colour: "), "{}", q.body);

    let r = "/api/v1/realms";
    assert_eq!(
        api.expect("POST", r, Some(json!({"name": "PBX.Example.com"})), 201),
        json!({"name": "pbx.example.com"}),
        "realms are lower-cased"
    );
    assert_eq!(api.post(r, json!({"name": "pbx.EXAMPLE.com"})).status, 409);
    api.expect_bad("POST", r, json!({"name": "bad realm"}), "name");
    api.expect_bad(
        "POST",
        r,
        json!({"name": "x.example", "default": true}),
        "default",
    );
    assert_eq!(
        api.expect("GET", r, None, 200),
        json!([{"name": "pbx.example.com"}, {"name": "sipedge.local"}])
    );
    assert_eq!(
        api.expect("GET", "/api/v1/realms/PBX.example.COM", None, 200),
        json!({"name": "pbx.example.com"})
    );
    api.expect("GET", "/api/v1/realms/none.example", None, 404);

    // A realm in use, the default realm and a tenant that owns something cannot go.
    api.expect(
        "POST",
        "/api/v1/credentials",
        Some(json!({"username": "alice", "password": PW, "realm": "pbx.example.com", "tenant": "acme"})),
        201,
    );
    let in_use = api.delete("/api/v1/realms/pbx.example.com");
    assert_eq!(in_use.status, 409, "{}", in_use.body);
    api.expect("DELETE", "/api/v1/realms/sipedge.local", None, 409);
    let owns = api.delete("/api/v1/tenants/acme");
    assert_eq!(owns.status, 409, "{}", owns.body);
    assert!(owns.error().contains("credentials"), "{}", owns.body);
    api.expect(
        "DELETE",
        "/api/v1/credentials/alice?realm=pbx.example.com",
        None,
        204,
    );
    api.expect("DELETE", "/api/v1/realms/pbx.example.com", None, 204);
    api.expect("DELETE", "/api/v1/realms/pbx.example.com", None, 404);
    api.expect("DELETE", "/api/v1/tenants/acme", None, 204);
    api.expect("DELETE", "/api/v1/tenants/acme", None, 404);
    assert_eq!(api.expect("GET", t, None, 200), json!([{"name": "globex"}]));
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

#[test]
fn credentials_crud_errors_and_password_secrecy() {
    let (mut s, api) = start("");
    let realm = s.realm.clone();
    let c = "/api/v1/credentials";
    api.expect(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "acme"})),
        201,
    );

    // Seed 000: username and password generated, the password shown once.
    let gen = api.expect("POST", c, Some(json!({"tenant": "acme"})), 201);
    let user = gen["username"].as_str().unwrap().to_string();
    let pw = gen["password"].as_str().unwrap().to_string();
    assert!(pw.len() >= 20, "generated password {} chars", pw.len());
    assert_eq!(gen["tenant"], "acme");
    assert_eq!(gen["realm"], realm.as_str());
    assert_eq!(gen["algorithms"], json!(["MD5", "SHA-256"]));
    let one = api.get(&format!("{c}/{user}"));
    assert_eq!(one.status, 200, "{}", one.body);
    for secret_field in ["password", "ha1", "ha1b", "ha1_sha256", "hash"] {
        assert!(one.json.get(secret_field).is_none(), "{}", one.body);
    }
    assert!(!one.body.contains(&pw), "GET shows the password");
    let list = api.get(c);
    assert!(!list.body.contains(&pw), "the list shows the password");
    assert!(list
        .json
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x.get("password").is_none()));

    // A supplied password is not echoed; supplied hashes (seed 003) give MD5 only.
    let bob = api.expect(
        "POST",
        c,
        Some(json!({"username": "bob", "password": "correct-horse-battery"})),
        201,
    );
    assert!(bob.get("password").is_none(), "{bob}");
    let (ha1, ha1b) = md5_hashes("carol", &realm, "carol-secret");
    let carol = api.expect(
        "POST",
        c,
        Some(json!({"username": "carol", "ha1": ha1, "ha1b": ha1b})),
        201,
    );
    assert_eq!(carol["algorithms"], json!(["MD5"]));
    assert!(carol.get("password").is_none(), "{carol}");

    // Bad input: 400 naming the field; nothing created.
    let bad: Vec<(Value, &str)> = vec![
        (json!({"username": "a@b"}), "username"),
        (json!({"username": ""}), "username"),
        (json!({"username": "dave", "password": "short"}), "password"),
        (json!({"username": "dave", "ha1": ha1}), "ha1b"),
        (
            json!({"username": "dave", "ha1": "xyz", "ha1b": ha1b}),
            "ha1",
        ),
        (
            json!({"username": "dave", "password": "long-enough", "ha1": ha1, "ha1b": ha1b}),
            "password",
        ),
        (
            json!({"username": "dave", "realm": "nowhere.example"}),
            "realm",
        ),
        (json!({"username": "dave", "tenant": "nobody"}), "tenant"),
        (json!({"username": "dave", "max_calls": 0}), "max_calls"),
        (json!({"username": "dave", "max_calls": "ten"}), "max_calls"),
        (json!({"username": "dave", "max_cps": -1}), "max_cps"),
        (json!({"username": "dave", "codecs": ["mp3"]}), "codecs"),
        (
            json!({"username": "dave", "codecs": ["PCMU", 8]}),
            "codecs[1]",
        ),
        (
            json!({"username": "dave", "allowed_cli": ["5551230000"]}),
            "allowed_cli",
        ),
        (json!({"username": "dave", "secret": "x"}), "secret"),
        (json!("dave"), "body"),
    ];
    for (body, field) in bad {
        api.expect_bad("POST", c, body, field);
    }
    api.expect("GET", &format!("{c}/dave"), None, 404);
    let dup = api.post(
        c,
        json!({"username": "bob", "password": "another-password"}),
    );
    assert_eq!(dup.status, 409, "{}", dup.body);

    // Seed 003: a list creates many at once, all or nothing.
    let (e3_ha1, e3_ha1b) = md5_hashes("e3", &realm, "e3-secret");
    api.expect_bad(
        "POST",
        c,
        json!([
            {"username": "e1", "password": "password-1"},
            {"username": "e2"},
            {"username": "e3", "ha1": e3_ha1}
        ]),
        "[2].ha1b",
    );
    api.expect_bad(
        "POST",
        c,
        json!([{"username": "e1"}, {"username": "e2", "realm": 7}]),
        "[1].realm",
    );
    let clash = api.post(
        c,
        json!([{"username": "e1", "password": "password-1"}, {"username": "bob"}]),
    );
    assert_eq!(clash.status, 409, "{}", clash.body);
    api.expect("GET", &format!("{c}/e1"), None, 404);
    api.expect_bad("POST", c, json!([]), "body");
    let many = api.expect(
        "POST",
        c,
        Some(json!([
            {"username": "e1", "password": "password-1"},
            {"username": "e2"},
            {"username": "e3", "ha1": e3_ha1, "ha1b": e3_ha1b}
        ])),
        201,
    );
    let many = many.as_array().unwrap();
    assert_eq!(many.len(), 3);
    assert_eq!(many[0]["username"], "e1");
    assert!(many[0].get("password").is_none());
    let e2_pw = many[1]["password"].as_str().unwrap().to_string();
    assert!(e2_pw.len() >= 20);
    assert_eq!(many[2]["algorithms"], json!(["MD5"]));

    // Query and path rules.
    api.expect("GET", &format!("{c}?realm=nowhere.example"), None, 404);
    let in_realm = api.expect("GET", &format!("{c}?realm={realm}"), None, 200);
    assert_eq!(
        usernames(&in_realm),
        [user.as_str(), "bob", "carol", "e1", "e2", "e3"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let q = api.get(&format!("{c}?colour=red"));
    assert_eq!(q.status, 400);
    assert!(q.error().starts_with("colour: "), "{}", q.body);
    api.expect("GET", &format!("{c}/nobody"), None, 404);
    api.expect("GET", &format!("{c}/bob?realm=nowhere.example"), None, 404);
    api.expect("GET", &format!("{c}/bob?realm={realm}"), None, 200);
    // A `+` in a path is literal; `%2B` is the same; a space is not.
    api.expect(
        "POST",
        c,
        Some(json!({"username": "a+b", "password": "plus-password"})),
        201,
    );
    assert_eq!(
        api.expect("GET", &format!("{c}/a+b"), None, 200)["username"],
        "a+b"
    );
    assert_eq!(
        api.expect("GET", &format!("{c}/a%2Bb"), None, 200)["username"],
        "a+b"
    );
    api.expect("GET", &format!("{c}/a%20b"), None, 404);

    // PATCH.
    let p = api.expect(
        "PATCH",
        &format!("{c}/bob"),
        Some(json!({"tenant": "acme", "max_calls": 5, "codecs": ["pcma"], "allowed_cli": ["+15551230000"]})),
        200,
    );
    assert_eq!(p["tenant"], "acme");
    assert_eq!(p["max_calls"], 5);
    assert_eq!(p["codecs"], json!(["PCMA"]));
    assert_eq!(p["allowed_cli"], json!(["+15551230000"]));
    let p = api.expect(
        "PATCH",
        &format!("{c}/bob"),
        Some(json!({"max_calls": null, "codecs": null, "password": "new-password-1"})),
        200,
    );
    assert_eq!(p["max_calls"], Value::Null);
    assert_eq!(p["codecs"], json!([]));
    assert_eq!(p["tenant"], "acme", "left alone");
    assert!(p.get("password").is_none());
    api.expect_bad(
        "PATCH",
        &format!("{c}/bob"),
        json!({"username": "robert"}),
        "username",
    );
    api.expect_bad(
        "PATCH",
        &format!("{c}/bob"),
        json!({"tenant": "nobody"}),
        "tenant",
    );
    api.expect_bad("PATCH", &format!("{c}/bob"), json!({"colour": 1}), "colour");
    api.expect_bad("PATCH", &format!("{c}/bob"), json!({"ha1": ha1}), "ha1b");
    api.expect(
        "PATCH",
        &format!("{c}/nobody"),
        Some(json!({"max_calls": 1})),
        404,
    );

    // DELETE.
    api.expect("DELETE", &format!("{c}/bob"), None, 204);
    api.expect("GET", &format!("{c}/bob"), None, 404);
    api.expect("DELETE", &format!("{c}/bob"), None, 404);

    // The generated passwords are nowhere but in their create answers.
    let secrets = vec![pw, e2_pw];
    assert_secrets_absent(&s, &secrets);
    let st = s.terminate();
    assert_eq!(st.code(), Some(0));
    assert_secrets_absent(&s, &secrets);
}

// ---------------------------------------------------------------------------------------------
// Trunks (seed 004)
// ---------------------------------------------------------------------------------------------

#[test]
fn trunks_crud_and_errors() {
    let (_s, api) = start("");
    let t = "/api/v1/trunks";
    api.expect(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "acme"})),
        201,
    );
    let created = api.expect(
        "POST",
        t,
        Some(json!({
            "name": "acme-pbx", "tenant": "acme",
            "cidrs": ["198.51.100.0/24", "203.0.113.7"],
            "destination": "sip:198.51.100.10:5060;transport=udp",
            "max_calls": 30, "max_cps": 2.5, "codecs": ["pcmu", "PCMA"],
            "allowed_cli": ["+15551230000"]
        })),
        201,
    );
    assert_eq!(
        created["cidrs"],
        json!(["198.51.100.0/24", "203.0.113.7/32"])
    );
    assert_eq!(created["codecs"], json!(["PCMU", "PCMA"]));
    assert_eq!(created["max_cps"], 2.5);
    assert_eq!(created["tenant"], "acme");
    assert_eq!(
        api.expect("GET", &format!("{t}/acme-pbx"), None, 200),
        created
    );
    assert_eq!(api.expect("GET", t, None, 200), json!([created]));

    let ok = |extra: Value| {
        let mut b =
            json!({"name": "x", "cidrs": ["192.0.2.0/24"], "destination": "sip:pbx.example.com"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let bad: Vec<(Value, &str)> = vec![
        (ok(json!({"cidrs": ["192.0.2.0/24", "nope"]})), "cidrs[1]"),
        (ok(json!({"cidrs": ["192.0.2.1/24"]})), "cidrs[0]"),
        (
            ok(json!({"cidrs": ["192.0.2.0/24", "192.0.2.0/24"]})),
            "cidrs[1]",
        ),
        (ok(json!({"cidrs": ["0.0.0.0/0"]})), "cidrs[0]"),
        (ok(json!({"cidrs": []})), "cidrs"),
        (ok(json!({"cidrs": "192.0.2.0/24"})), "cidrs"),
        (ok(json!({"cidrs": [7]})), "cidrs[0]"),
        (
            json!({"name": "x", "destination": "sip:pbx.example.com"}),
            "cidrs",
        ),
        (
            json!({"name": "x", "cidrs": ["192.0.2.0/24"]}),
            "destination",
        ),
        (
            ok(json!({"destination": "http://pbx.example.com"})),
            "destination",
        ),
        (
            ok(json!({"destination": "sip:pbx.example.com:99999"})),
            "destination",
        ),
        (
            json!({"cidrs": ["192.0.2.0/24"], "destination": "sip:pbx.example.com"}),
            "name",
        ),
        (ok(json!({"name": "a/b"})), "name"),
        (ok(json!({"tenant": "nobody"})), "tenant"),
        (ok(json!({"max_calls": -1})), "max_calls"),
        (ok(json!({"codecs": ["mp3"]})), "codecs"),
        (ok(json!({"password": "x"})), "password"),
    ];
    for (body, field) in bad {
        api.expect_bad("POST", t, body, field);
    }
    assert_eq!(
        api.get(t).json.as_array().unwrap().len(),
        1,
        "nothing created"
    );
    let dup = api.post(t, ok(json!({"name": "acme-pbx"})));
    assert_eq!(dup.status, 409, "{}", dup.body);
    // A source network must say which trunk is calling.
    let clash = api.post(t, ok(json!({"name": "other", "cidrs": ["203.0.113.7/32"]})));
    assert_eq!(clash.status, 409, "{}", clash.body);
    assert!(
        clash.error().starts_with("cidrs[0]: ") && clash.error().contains("acme-pbx"),
        "{}",
        clash.body
    );

    let p = api.expect(
        "PATCH",
        &format!("{t}/acme-pbx"),
        Some(json!({"cidrs": ["198.51.100.0/25"], "max_calls": null, "tenant": null})),
        200,
    );
    assert_eq!(p["cidrs"], json!(["198.51.100.0/25"]));
    assert_eq!(p["max_calls"], Value::Null);
    assert_eq!(p["tenant"], Value::Null);
    assert_eq!(p["codecs"], json!(["PCMU", "PCMA"]), "left alone");
    api.expect_bad(
        "PATCH",
        &format!("{t}/acme-pbx"),
        json!({"name": "new"}),
        "name",
    );
    api.expect_bad(
        "PATCH",
        &format!("{t}/acme-pbx"),
        json!({"cidrs": ["x"]}),
        "cidrs[0]",
    );
    api.expect_bad(
        "PATCH",
        &format!("{t}/acme-pbx"),
        json!({"destination": "pbx.example.com"}),
        "destination",
    );
    api.expect(
        "PATCH",
        &format!("{t}/nope"),
        Some(json!({"max_calls": 1})),
        404,
    );
    api.expect(
        "POST",
        t,
        Some(ok(json!({"name": "other", "cidrs": ["203.0.113.7"]}))),
        201,
    );
    let clash = api.patch(&format!("{t}/other"), json!({"cidrs": ["198.51.100.0/25"]}));
    assert_eq!(clash.status, 409, "{}", clash.body);

    // A trunk a number routes to cannot go.
    api.expect(
        "POST",
        "/api/v1/numbers",
        Some(json!({"number": "+15551230000", "route": {"trunk": "acme-pbx"}})),
        201,
    );
    let routed = api.delete(&format!("{t}/acme-pbx"));
    assert_eq!(routed.status, 409, "{}", routed.body);
    api.expect("DELETE", "/api/v1/numbers/+15551230000", None, 204);
    api.expect("DELETE", &format!("{t}/acme-pbx"), None, 204);
    api.expect("GET", &format!("{t}/acme-pbx"), None, 404);
    api.expect("DELETE", &format!("{t}/acme-pbx"), None, 404);
    api.expect("DELETE", "/api/v1/tenants/acme", None, 204);
}

// ---------------------------------------------------------------------------------------------
// Numbers (seeds 000, 002, 004)
// ---------------------------------------------------------------------------------------------

#[test]
fn numbers_routes_headers_and_plus_in_paths() {
    let (s, api) = start("");
    let realm = s.realm.clone();
    let n = "/api/v1/numbers";
    api.expect(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "acme"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/credentials",
        Some(json!({"username": "alice", "password": PW, "tenant": "acme"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/realms",
        Some(json!({"name": "b.example"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/credentials",
        Some(json!({"username": "bob", "password": PW, "realm": "b.example"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/trunks",
        Some(json!({"name": "t1", "cidrs": ["192.0.2.0/24"], "destination": "sip:192.0.2.10"})),
        201,
    );

    let alice_num = api.expect(
        "POST",
        n,
        Some(json!({
            "number": "+15551230000", "tenant": "acme",
            "route": {"credential": "alice"},
            "headers": {"Account": "42", "X-Trace": "on"}
        })),
        201,
    );
    assert_eq!(
        alice_num["route"],
        json!({"credential": "alice", "realm": realm})
    );
    assert_eq!(
        alice_num["headers"],
        json!({"X-Account": "42", "X-Trace": "on"})
    );
    api.expect(
        "POST",
        n,
        Some(
            json!({"number": "+15551230001", "route": {"credential": "bob", "realm": "B.example"}}),
        ),
        201,
    );
    api.expect(
        "POST",
        n,
        Some(json!({"number": "+15551230002", "route": {"trunk": "t1"}})),
        201,
    );
    let uri = api.expect(
        "POST",
        n,
        Some(json!({"number": "+4930123456", "route": {"uri": "sip:{number}@pbx.example.com:5061;transport=tls"}})),
        201,
    );
    assert_eq!(
        uri["route"],
        json!({"uri": "sip:{number}@pbx.example.com:5061;transport=tls"})
    );

    // `+` and `%2B` name the same number; a space (what a form decoder makes of `+`) does not.
    assert_eq!(
        api.expect("GET", &format!("{n}/+15551230000"), None, 200),
        alice_num
    );
    assert_eq!(
        api.expect("GET", &format!("{n}/%2B15551230000"), None, 200),
        alice_num
    );
    let p = api.expect(
        "PATCH",
        &format!("{n}/%2B15551230000"),
        Some(json!({"headers": {"Account": "43"}})),
        200,
    );
    assert_eq!(p["headers"], json!({"X-Account": "43"}));
    assert_eq!(
        api.expect("GET", &format!("{n}/+15551230000"), None, 200)["headers"],
        json!({"X-Account": "43"})
    );
    for not_e164 in ["15551230000", "%2015551230000", "+1555"] {
        let r = api.get(&format!("{n}/{not_e164}"));
        assert_eq!(r.status, 400, "{not_e164}: {}", r.body);
        assert!(r.error().starts_with("number: "), "{}", r.body);
    }
    api.expect("GET", &format!("{n}/+15559999999"), None, 404);

    let num = |route: Value| json!({"number": "+15551239999", "route": route});
    let with_headers =
        |h: Value| json!({"number": "+15551239999", "route": {"trunk": "t1"}, "headers": h});
    let bad: Vec<(Value, &str)> = vec![
        (
            json!({"number": "5551230000", "route": {"trunk": "t1"}}),
            "number",
        ),
        (json!({"number": "+15551239999"}), "route"),
        (num(json!({})), "route"),
        (num(json!("alice")), "route"),
        (num(json!({"credential": "alice", "trunk": "t1"})), "route"),
        (
            num(json!({"trunk": "t1", "realm": "b.example"})),
            "route.realm",
        ),
        (num(json!({"credential": "nobody"})), "route.credential"),
        (num(json!({"credential": "bob"})), "route.credential"),
        (
            num(json!({"credential": "bob", "realm": "nowhere.example"})),
            "route.realm",
        ),
        (num(json!({"trunk": "nope"})), "route.trunk"),
        (num(json!({"uri": "tel:{number}"})), "route.uri"),
        (
            num(json!({"uri": "sip:{user}@pbx.example.com"})),
            "route.uri",
        ),
        (num(json!({"carrier": "x"})), "route.carrier"),
        (with_headers(json!({"Bad Name": "v"})), "headers.Bad Name"),
        (
            with_headers(json!({"Inject": "v\r\nVia: SIP/2.0/UDP evil.example"})),
            "headers.Inject",
        ),
        (with_headers(json!({"Num": 5})), "headers.Num"),
        (with_headers(json!(["X-A: 1"])), "headers"),
        (
            with_headers(json!({"Foo": "1", "X-Foo": "2"})),
            "headers.X-Foo",
        ),
        (with_headers(json!({"A": "v".repeat(1020)})), "headers"),
        (
            json!({"number": "+15551239999", "route": {"trunk": "t1"}, "tenant": "nobody"}),
            "tenant",
        ),
        (
            json!({"number": "+15551239999", "route": {"trunk": "t1"}, "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in bad {
        api.expect_bad("POST", n, body, field);
    }
    let long_name = "N".repeat(49);
    api.expect_bad(
        "POST",
        n,
        with_headers(json!({ long_name.clone(): "v" })),
        &format!("headers.{long_name}"),
    );
    api.expect("GET", &format!("{n}/+15551239999"), None, 404);
    // The limits are inclusive: a 50-character name, and lines of exactly 1024 bytes
    // (`X-NNN…N: v` is 53 bytes, `X-A: ` 5 more).
    let full = api.expect(
        "POST",
        n,
        Some(with_headers(
            json!({ "N".repeat(48): "v", "A": "v".repeat(1024 - 53 - 5) }),
        )),
        201,
    );
    let bytes: usize = full["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| k.len() + 2 + v.as_str().unwrap().len())
        .sum();
    assert_eq!(bytes, 1024);
    let dup = api.post(
        n,
        json!({"number": "+15551230000", "route": {"trunk": "t1"}}),
    );
    assert_eq!(dup.status, 409, "{}", dup.body);

    // What a number routes to, and a tenant that owns numbers, cannot go.
    for (path, why) in [
        ("/api/v1/credentials/alice".to_string(), "routed credential"),
        (
            "/api/v1/credentials/bob?realm=b.example".to_string(),
            "routed credential",
        ),
        ("/api/v1/trunks/t1".to_string(), "routed trunk"),
        ("/api/v1/tenants/acme".to_string(), "tenant owning"),
        ("/api/v1/realms/b.example".to_string(), "realm in use"),
    ] {
        let r = api.delete(&path);
        assert_eq!(r.status, 409, "{why}: {}", r.body);
    }

    let p = api.expect(
        "PATCH",
        &format!("{n}/+15551230000"),
        Some(json!({"route": {"uri": "sips:{number}@pbx.example.com"}, "tenant": null, "headers": null})),
        200,
    );
    assert_eq!(p["route"], json!({"uri": "sips:{number}@pbx.example.com"}));
    assert_eq!(p["tenant"], Value::Null);
    assert_eq!(p["headers"], json!({}));
    api.expect_bad(
        "PATCH",
        &format!("{n}/+15551230000"),
        json!({"number": "+15551230009"}),
        "number",
    );
    api.expect_bad(
        "PATCH",
        &format!("{n}/+15551230000"),
        json!({"route": {"trunk": "nope"}}),
        "route.trunk",
    );
    api.expect(
        "PATCH",
        &format!("{n}/+15559999999"),
        Some(json!({"tenant": null})),
        404,
    );
    // No longer routed to: alice can go now.
    api.expect("DELETE", "/api/v1/credentials/alice", None, 204);
    api.expect("DELETE", &format!("{n}/%2B15551230000"), None, 204);
    api.expect("GET", &format!("{n}/+15551230000"), None, 404);
    api.expect("DELETE", &format!("{n}/+15551230000"), None, 404);
    let list = api.expect("GET", n, None, 200);
    let numbers: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["number"].as_str().unwrap())
        .collect();
    assert_eq!(
        numbers,
        [
            "+15551230001",
            "+15551230002",
            "+15551239999",
            "+4930123456"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The bearer token
// ---------------------------------------------------------------------------------------------

#[test]
fn every_api_path_needs_the_bearer_token() {
    let (s, api) = start("");
    let probes: [(&str, &str, Option<&str>); 12] = [
        ("GET", "/api/v1/tenants", None),
        ("POST", "/api/v1/tenants", Some(r#"{"name":"sneaky"}"#)),
        ("GET", "/api/v1/credentials", None),
        ("POST", "/api/v1/credentials", Some("{}")),
        ("DELETE", "/api/v1/credentials/alice", None),
        ("GET", "/api/v1/numbers/+15551230000", None),
        ("GET", "/api/v1/registrations", None),
        ("GET", "/api/v1/openapi.json", None),
        ("DELETE", "/api/v1/bans/192.0.2.1", None),
        ("PUT", "/api/v1/tenants", None),
        ("GET", "/api/v1/no-such-thing", None),
        ("GET", "/api", None),
    ];
    let wrong = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(ADMIN_TOKEN.to_string()),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some("Bearer".to_string()),
    ];
    for auth in &wrong {
        for (method, path, body) in probes {
            let r = http(s.admin, method, path, auth.as_deref(), body);
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {}", r.body);
            assert!(!r.error().is_empty(), "{}", r.body);
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{:?}",
                r.headers
            );
            if template_of(path).is_some_and(|t| operation(&t, method).is_some()) {
                conforms(method, path, &r).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            }
        }
    }
    assert_eq!(api.expect("GET", "/api/v1/tenants", None, 200), json!([]));
    assert_eq!(
        api.expect("GET", "/api/v1/credentials", None, 200),
        json!([]),
        "nothing was created without the token"
    );
    // The scheme is case-insensitive (RFC 7235 §2.1).
    let r = http(
        s.admin,
        "GET",
        "/api/v1/tenants",
        Some(&format!("bearer {ADMIN_TOKEN}")),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Health and metrics are not /api.
    assert_eq!(http(s.admin, "GET", "/health", None, None).status, 200);
    assert_eq!(http(s.admin, "GET", "/metrics", None, None).status, 200);
}

/// A `sipedge run` started by hand, to see its stdout (the harness discards it).
struct Run {
    child: Option<Child>,
    admin: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Run {
    fn start(config: &std::path::Path, dir: &std::path::Path) -> Run {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipedge");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        for (pipe, buf) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            std::thread::spawn(move || {
                let mut r = BufReader::new(pipe);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    buf.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let mut run = Run {
            child: Some(child),
            admin: "0.0.0.0:0".parse().unwrap(),
            stdout,
            stderr,
        };
        let ready = eventually(Duration::from_secs(20), || {
            let log = run.stderr.lock().unwrap().clone();
            match log.lines().find_map(parse_ready_line) {
                Some((_, admin)) => {
                    run.admin = admin;
                    true
                }
                None => false,
            }
        });
        assert!(
            ready,
            "no ready line; stderr:\n{}",
            run.stderr.lock().unwrap()
        );
        run
    }

    /// SIGTERM; asserts exit 0; returns (stdout, stderr).
    fn stop(mut self) -> (String, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "{}", self.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_missing_token_is_generated_once_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::prepare("[admin]\ntoken = \"\"\n");
    let file = s.data_dir().join("admin.token");
    assert!(!file.exists());

    let run = Run::start(&s.config_path, s.dir());
    let printed = run.stdout.lock().unwrap().clone();
    let line = printed
        .lines()
        .find(|l| l.contains("admin token"))
        .unwrap_or_else(|| panic!("the first start prints the token on stdout: {printed:?}"));
    let token = line.split_whitespace().last().unwrap().to_string();
    assert!(token.len() >= 20, "{line}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} mode {mode:o}", file.display());
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let api = Api::new(run.admin, &token);
    api.expect(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "acme"})),
        201,
    );
    let other = http(run.admin, "GET", "/api/v1/tenants", Some(&bearer()), None);
    assert_eq!(other.status, 401, "another token is refused");
    let (out1, err1) = run.stop();

    // A restart reuses it and prints nothing.
    let run = Run::start(&s.config_path, s.dir());
    let api = Api::new(run.admin, &token);
    assert_eq!(
        api.expect("GET", "/api/v1/tenants", None, 200),
        json!([{"name": "acme"}])
    );
    let (out2, err2) = run.stop();
    assert_eq!(out1.matches(token.as_str()).count(), 1, "{out1}");
    assert!(!out2.contains(&token), "printed again: {out2}");
    assert!(
        !err1.contains(&token) && !err2.contains(&token),
        "the token must not be logged"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
}

// ---------------------------------------------------------------------------------------------
// Provisioning reaches live traffic
// ---------------------------------------------------------------------------------------------

/// REGISTER (challenge, then answer with `alg`) until 200 or `within` passes; the final code.
fn register_within(
    c: &mut Client,
    user: &str,
    realm: &str,
    password: &str,
    alg: Alg,
    within: Duration,
) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let r = c.register_with(user, realm, password, alg, 120);
        if r.code == 200 || Instant::now() >= deadline {
            return r.code;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn registered(api: &Api, user: &str) -> Option<Value> {
    api.expect("GET", "/api/v1/registrations", None, 200)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["username"] == user)
        .cloned()
}

#[test]
fn api_credentials_take_effect_live_and_deletes_drop_bindings() {
    let (s, api) = start("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    let gen = api.expect("POST", "/api/v1/credentials", Some(json!({})), 201);
    let (user, pw) = (
        gen["username"].as_str().unwrap().to_string(),
        gen["password"].as_str().unwrap().to_string(),
    );
    let mut c = s.client();
    let t0 = Instant::now();
    let code = register_within(
        &mut c,
        &user,
        &realm,
        &pw,
        Alg::Sha256,
        Duration::from_secs(1),
    );
    assert_eq!(code, 200, "a created credential registers within 1 s");
    assert!(t0.elapsed() < Duration::from_millis(1500));

    // Seed 003: a credential from MD5 hashes answers MD5 challenges.
    let (ha1, ha1b) = md5_hashes("carol", &realm, "carol-secret");
    api.expect(
        "POST",
        "/api/v1/credentials",
        Some(json!({"username": "carol", "ha1": ha1, "ha1b": ha1b})),
        201,
    );
    let mut carol = s.client();
    let code = register_within(
        &mut carol,
        "carol",
        &realm,
        "carol-secret",
        Alg::Md5,
        Duration::from_secs(1),
    );
    assert_eq!(code, 200);

    let b = registered(&api, &user).expect("the binding is listed");
    assert_eq!(b["source"], c.local.to_string());
    assert_eq!(b["realm"], realm.as_str());
    assert!(b["contact"].as_str().unwrap().contains(&user), "{b}");
    assert_eq!(
        s.wait_metric(
            "sipedge_registrations_active",
            Duration::from_secs(1),
            |v| v == 2.0
        ),
        2.0
    );

    // A PATCHed password applies at once.
    api.expect(
        "PATCH",
        "/api/v1/credentials/carol",
        Some(json!({"password": "carol-new-secret"})),
        200,
    );
    let code = register_within(
        &mut carol,
        "carol",
        &realm,
        "carol-new-secret",
        Alg::Sha256,
        Duration::from_secs(1),
    );
    assert_eq!(
        code, 200,
        "the new password (now with SHA-256 hashes) works"
    );

    // Deleting a credential drops its binding, and its next REGISTER is refused.
    api.expect("DELETE", &format!("/api/v1/credentials/{user}"), None, 204);
    assert!(
        eventually(Duration::from_secs(1), || registered(&api, &user).is_none()),
        "the binding is gone from the list within 1 s"
    );
    assert_eq!(
        s.wait_metric(
            "sipedge_registrations_active",
            Duration::from_secs(1),
            |v| v == 1.0
        ),
        1.0
    );
    let r = c.register_with(&user, &realm, &pw, Alg::Sha256, 120);
    assert_code(&r, 403, "REGISTER of a deleted credential");
    assert!(registered(&api, "carol").is_some(), "others stay");
}

#[test]
fn provisioning_survives_a_restart() {
    let (mut s, mut api) = start("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    api.expect(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "acme"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/realms",
        Some(json!({"name": "pbx.example.com"})),
        201,
    );
    let gen = api.expect(
        "POST",
        "/api/v1/credentials",
        Some(json!({"tenant": "acme", "max_calls": 2, "codecs": ["PCMU"]})),
        201,
    );
    let (user, pw) = (
        gen["username"].as_str().unwrap().to_string(),
        gen["password"].as_str().unwrap().to_string(),
    );
    api.expect(
        "POST",
        "/api/v1/credentials",
        Some(json!({"username": "other", "password": PW, "realm": "pbx.example.com"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/trunks",
        Some(json!({"name": "t1", "tenant": "acme", "cidrs": ["192.0.2.0/24"], "destination": "sip:192.0.2.10"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/numbers",
        Some(json!({"number": "+15551230000", "tenant": "acme", "route": {"credential": user}, "headers": {"A": "1"}})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/numbers",
        Some(json!({"number": "+15551230001", "route": {"trunk": "t1"}})),
        201,
    );
    let lists = [
        "/api/v1/tenants",
        "/api/v1/realms",
        "/api/v1/credentials",
        "/api/v1/trunks",
        "/api/v1/numbers",
    ];
    let before: Vec<Value> = lists
        .iter()
        .map(|p| api.expect("GET", p, None, 200))
        .collect();
    s.restart();
    api.addr = s.admin;
    let after: Vec<Value> = lists
        .iter()
        .map(|p| api.expect("GET", p, None, 200))
        .collect();
    assert_eq!(before, after);
    let mut c = s.client();
    let code = register_within(
        &mut c,
        &user,
        &realm,
        &pw,
        Alg::Sha256,
        Duration::from_secs(1),
    );
    assert_eq!(code, 200, "the API's credential works after a restart");
    let mut o = s.client();
    let code = register_within(
        &mut o,
        "other",
        "pbx.example.com",
        PW,
        Alg::Md5,
        Duration::from_secs(1),
    );
    assert_eq!(code, 200, "in its own realm too");
}

// ---------------------------------------------------------------------------------------------
// Bans, calls, registrations
// ---------------------------------------------------------------------------------------------

#[test]
fn bans_by_hand() {
    let (s, api) = start("");
    let b = "/api/v1/bans";
    assert_eq!(api.expect("GET", b, None, 200), json!([]));
    let ban = api.expect(
        "POST",
        b,
        Some(json!({"ip": "127.0.0.5", "seconds": 120})),
        201,
    );
    assert_eq!(ban["ip"], "127.0.0.5");
    assert_eq!(ban["reason"], "manual");
    let left = ban["expires_in_s"].as_u64().unwrap();
    assert!((119..=120).contains(&left), "{ban}");
    let list = api.expect("GET", b, None, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["ip"], "127.0.0.5");
    assert_eq!(list[0]["reason"], "manual");

    // The banned source gets silence; once lifted, answers.
    let mut c = s.client_on("127.0.0.5");
    let probe = c.options();
    c.assert_silence(&probe, SILENCE, "banned by hand");
    api.expect("DELETE", &format!("{b}/127.0.0.5"), None, 204);
    assert_eq!(api.expect("GET", b, None, 200), json!([]));
    let probe = c.options();
    let r = c.transact(&probe);
    assert_code(&r, 200, "OPTIONS after the ban is lifted");
    api.expect("DELETE", &format!("{b}/127.0.0.5"), None, 404);

    for (body, field) in [
        (json!({"ip": "nope"}), "ip"),
        (json!({"ip": "192.0.2.1", "seconds": 0}), "seconds"),
        (json!({"ip": "192.0.2.1", "seconds": -5}), "seconds"),
        (json!({"ip": "192.0.2.1", "seconds": 40_000_000}), "seconds"),
        (json!({"seconds": 5}), "ip"),
        (json!({"ip": "0.0.0.0"}), "ip"),
        (json!({"ip": "192.0.2.1", "reason": "manual"}), "reason"),
    ] {
        api.expect_bad("POST", b, body, field);
    }
    let r = api.delete(&format!("{b}/nope"));
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("ip: "), "{}", r.body);
    // Without seconds: security.ban_s (600); IPv6 works.
    let v6 = api.expect("POST", b, Some(json!({"ip": "2001:db8::1"})), 201);
    assert!(
        (599..=600).contains(&v6["expires_in_s"].as_u64().unwrap()),
        "{v6}"
    );
    api.expect("DELETE", &format!("{b}/2001:db8::1"), None, 204);
    assert_eq!(api.expect("GET", b, None, 200), json!([]));
}

// ---------------------------------------------------------------------------------------------
// openapi.json is the contract
// ---------------------------------------------------------------------------------------------

#[test]
fn the_server_serves_exactly_what_openapi_json_documents() {
    let (s, api) = start("");
    let doc = api.expect("GET", "/api/v1/openapi.json", None, 200);
    assert_eq!(&doc, openapi(), "the served document is the repository's");

    let sample = |template: &str| {
        template
            .replace("{name}", "probe-x")
            .replace("{username}", "probe-x")
            .replace("{number}", "+15550000000")
            .replace("{id}", "probe-x")
            .replace("{ip}", "192.0.2.77")
    };
    let paths = openapi()["paths"].as_object().unwrap();
    let mut served = 0;
    for (template, item) in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let path = sample(template);
            let body = matches!(method, "POST" | "PUT" | "PATCH").then_some("{}");
            let r = http(s.admin, method, &path, Some(&bearer()), body);
            if item.get(method.to_ascii_lowercase()).is_some() {
                assert!(
                    r.status != 405 && !r.error().starts_with("no such path"),
                    "documented {method} {template} is not served: {} {}",
                    r.status,
                    r.body
                );
                conforms(method, &path, &r)
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}: {} {}", r.status, r.body));
                served += 1;
            } else {
                assert_eq!(
                    r.status, 405,
                    "undocumented {method} {template} must not be served: {}",
                    r.body
                );
            }
        }
    }
    assert!(served >= 30, "{served} operations");
    for path in [
        "/",
        "/healthz",
        "/api",
        "/api/v1",
        "/api/v2/tenants",
        "/api/v1/tenant",
        "/api/v1/tenants/a/b",
        "/api/v1/registrations/x",
        "/api/v1/calls/x/y",
        "/api/v1/bans/192.0.2.1/x",
        "/api/v1/openapi.yaml",
    ] {
        let r = http(s.admin, "GET", path, Some(&bearer()), None);
        assert_eq!(r.status, 404, "{path} must not be served: {}", r.body);
        assert!(template_of(path).is_none(), "{path}");
    }

    // Calls are read only and there are none yet; registrations are read only.
    assert_eq!(api.expect("GET", "/api/v1/calls", None, 200), json!([]));
    let r = api.delete("/api/v1/calls/abc");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("abc"), "{}", r.body);
    assert_eq!(
        api.expect("GET", "/api/v1/registrations", None, 200),
        json!([])
    );
    let r = http(
        s.admin,
        "POST",
        "/api/v1/registrations",
        Some(&bearer()),
        Some("{}"),
    );
    assert_eq!(r.status, 405);
}

#[test]
fn the_schema_validator_catches_violations() {
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let cred = json!({
        "username": "alice", "realm": "sipedge.local", "tenant": null, "max_calls": null,
        "max_cps": 1.5, "codecs": ["PCMU"], "allowed_cli": [], "algorithms": ["MD5"],
        "created_at": "2025-01-01T00:00:00Z"
    });
    validate(&schema("Credential"), &cred, "$").unwrap();
    let with = |k: &str, v: Value| {
        let mut c = cred.clone();
        c[k] = v;
        c
    };
    for (bad, why) in [
        (with("password", json!("x")), "a password in a GET"),
        (with("ha1", json!("x")), "a hash in a GET"),
        (with("max_calls", json!("x")), "wrong type"),
        (with("max_calls", json!(0)), "below minimum"),
        (with("username", Value::Null), "null where not nullable"),
        (with("algorithms", json!(["SHA1"])), "not in the enum"),
        (with("codecs", json!("PCMU")), "not an array"),
    ] {
        assert!(validate(&schema("Credential"), &bad, "$").is_err(), "{why}");
    }
    let mut missing = cred.clone();
    missing.as_object_mut().unwrap().remove("realm");
    assert!(validate(&schema("Credential"), &missing, "$").is_err());
    let created = with("password", json!("short"));
    assert!(
        validate(&schema("CreatedCredential"), &created, "$").is_err(),
        "minLength 20"
    );
    let route = schema("Route");
    validate(&route, &json!({"credential": "a", "realm": "r"}), "$").unwrap();
    validate(&route, &json!({"uri": "sip:{number}@x"}), "$").unwrap();
    for bad in [
        json!({}),
        json!({"trunk": "t", "uri": "u"}),
        json!({"realm": "r"}),
    ] {
        assert!(validate(&route, &bad, "$").is_err(), "{bad}");
    }
    let number = json!({"number": "+15551230000", "tenant": null, "route": {"trunk": "t"},
        "headers": {"X-A": "1"}, "created_at": "x"});
    validate(&schema("Number"), &number, "$").unwrap();
    let mut bad_header = number.clone();
    bad_header["headers"]["X-B"] = json!(2);
    assert!(validate(&schema("Number"), &bad_header, "$").is_err());
    // Answers: an undocumented status or an undocumented body shape is caught.
    let reply = |status: u16, body: Value| Reply {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string(),
        json: body,
    };
    assert!(conforms(
        "GET",
        "/api/v1/tenants",
        &reply(200, json!([{"name": "a"}]))
    )
    .is_ok());
    assert!(conforms("GET", "/api/v1/tenants", &reply(200, json!([{"name": 1}]))).is_err());
    assert!(conforms("GET", "/api/v1/tenants", &reply(418, json!({"error": "x"}))).is_err());
    assert!(conforms("PUT", "/api/v1/tenants", &reply(200, json!([]))).is_err());
    assert!(conforms("GET", "/api/v1/nothing", &reply(200, json!([]))).is_err());
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/// One REGISTER with digest: the challenge and the answer's final code (None: no answer).
fn register_once(c: &mut Client, user: &str, realm: &str, password: &str) -> (u16, Option<u16>) {
    let req = c.register(user, realm);
    let Some(ch) = c.try_transact(&req, Duration::from_secs(2)) else {
        return (0, None);
    };
    if ch.code != 401 {
        return (ch.code, None);
    }
    let auth = c.register_answering(
        user,
        realm,
        &ch.challenge(Alg::Sha256),
        user,
        password,
        1,
        120,
    );
    let r = c.try_transact(&auth, Duration::from_secs(2));
    (401, r.map(|r| r.code))
}

#[test]
fn a_thousand_parallel_creates_while_pbxs_register() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 125;
    let (s, api) = start("[registrar]\nmin_interval_s = 0\n");
    let realm = s.realm.clone();
    let pbxs: Vec<String> = (0..4).map(|i| format!("pbx{i}")).collect();
    for u in &pbxs {
        api.expect(
            "POST",
            "/api/v1/credentials",
            Some(json!({"username": u, "password": PW})),
            201,
        );
    }

    // PBXs re-register their existing credentials at a steady 50 REGISTERs a second.
    let stop = Arc::new(AtomicBool::new(false));
    let registrar = {
        let stop = stop.clone();
        let (sip, realm, pbxs) = (s.sip, realm.clone(), pbxs.clone());
        std::thread::spawn(move || {
            let mut clients: Vec<Client> = pbxs
                .iter()
                .map(|_| Client::bind("127.0.0.1", sip))
                .collect();
            let mut outcomes = Vec::new();
            let period = Duration::from_millis(20);
            let mut next = Instant::now();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let k = i % pbxs.len();
                outcomes.push(register_once(&mut clients[k], &pbxs[k], &realm, PW));
                i += 1;
                next += period;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            outcomes
        })
    };

    let t0 = Instant::now();
    let creators: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                (0..PER_CLIENT)
                    .map(|i| {
                        let user = format!("bulk-{t}-{i}");
                        let r = api.post("/api/v1/credentials", json!({"username": user}));
                        (
                            user,
                            r.status,
                            r.json["password"].as_str().map(String::from),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut created = Vec::new();
    for h in creators {
        created.extend(h.join().expect("creator thread"));
    }
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let outcomes = registrar.join().expect("registering thread");

    let failed: Vec<_> = created.iter().filter(|(_, st, _)| *st != 201).collect();
    assert!(
        failed.is_empty(),
        "creates that did not get 201: {failed:?}"
    );
    assert_eq!(created.len(), CLIENTS * PER_CLIENT);
    let listed = usernames(&api.expect("GET", "/api/v1/credentials", None, 200));
    assert_eq!(
        listed.len(),
        CLIENTS * PER_CLIENT + pbxs.len(),
        "nothing lost or extra"
    );
    for (user, _, _) in &created {
        assert!(listed.contains(user), "{user} missing from the list");
    }
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|o| **o != (401, Some(200)))
        .collect();
    assert!(
        wrong.is_empty(),
        "REGISTERs answered wrongly during the creates ({} of {}): {wrong:?}",
        wrong.len(),
        outcomes.len()
    );
    assert!(
        outcomes.len() as f64 >= took.as_secs_f64() * 50.0 * 0.5,
        "the registrations kept a steady rate: {} in {took:?}",
        outcomes.len()
    );
    // Some of the new credentials register too.
    for (user, _, pw) in created.iter().step_by(250) {
        let mut c = s.client();
        let code = register_within(
            &mut c,
            user,
            &realm,
            pw.as_deref().unwrap(),
            Alg::Sha256,
            Duration::from_secs(1),
        );
        assert_eq!(code, 200, "{user}");
    }
}
