use super::*;
use crate::sip::digest::Algorithm;

// Computed independently: python3 hashlib over "alice:sipedge.local:secretpass" and
// "alice@sipedge.local:sipedge.local:secretpass".
const HA1_MD5: &str = "7d09fdf85d77e265892b5233ea856448";
const HA1B_MD5: &str = "79dfed047d61f523159605ad7b777fe4";
const HA1_SHA256: &str = "2432b47e0779277b440deca7a123108da592445552cac50c60761ada8077da33";
const HA1B_SHA256: &str = "29e7f625f23026e10743089b0ff4833b8fe6bddf90c2fb4f76d7f6efbe94497a";

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data/sipedge.db"), "SIPedge.local").unwrap();
    (dir, store)
}

fn alice() -> NewCredential {
    NewCredential {
        username: Some("alice".into()),
        password: Some("secretpass".into()),
        ..Default::default()
    }
}

fn field_of(e: StoreError) -> String {
    match e {
        StoreError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn open_creates_dir_schema_and_default_realm() {
    let (dir, store) = open();
    assert!(dir.path().join("data/sipedge.db").exists());
    assert_eq!(store.default_realm(), "sipedge.local");
    assert_eq!(
        store.list_realms().unwrap(),
        vec![Realm {
            name: "sipedge.local".into()
        }]
    );
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = store
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    drop(store);
    // Reopening is idempotent and keeps data.
    let store = Store::open(&dir.path().join("data/sipedge.db"), "sipedge.local").unwrap();
    assert_eq!(store.list_realms().unwrap().len(), 1);
    assert!(Store::open(&dir.path().join("x.db"), "bad realm").is_err());
}

#[test]
fn newer_schema_is_refused() {
    let (dir, store) = open();
    store
        .conn
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(store);
    let e = Store::open(&dir.path().join("data/sipedge.db"), "sipedge.local")
        .err()
        .unwrap();
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn password_is_hashed_never_stored() {
    let (dir, store) = open();
    let created = store.create_credential(alice()).unwrap();
    assert_eq!(created.password, None);
    let c = &created.credential;
    assert_eq!(
        (c.username.as_str(), c.realm.as_str()),
        ("alice", "sipedge.local")
    );
    assert_eq!(c.algorithms, ["MD5", "SHA-256"]);
    assert_eq!(c.created_at.len(), 20, "{}", c.created_at);
    let (a, b, c2, d): (String, String, String, String) = store
        .conn
        .query_row(
            "SELECT ha1_md5, ha1b_md5, ha1_sha256, ha1b_sha256 FROM credentials",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (a.as_str(), b.as_str(), c2.as_str(), d.as_str()),
        (HA1_MD5, HA1B_MD5, HA1_SHA256, HA1B_SHA256)
    );
    drop(store);
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"secretpass"));
    }
    let json = serde_json::to_string(&created).unwrap();
    assert!(
        !json.contains("secretpass") && !json.contains(HA1_MD5) && !json.contains("password"),
        "{json}"
    );
}

#[test]
fn md5_hashes_only() {
    let (_dir, store) = open();
    let new = NewCredential {
        username: Some("bob".into()),
        ha1: Some(HA1_MD5.to_uppercase()),
        ha1b: Some(HA1B_MD5.into()),
        ..Default::default()
    };
    let c = store.create_credential(new).unwrap();
    assert_eq!(c.credential.algorithms, ["MD5"]);
    assert_eq!(c.password, None);
    let snap = store.snapshot().unwrap();
    let auth = snap.credential(b"bob", b"sipedge.local").unwrap();
    assert_eq!(auth.md5.as_ref().unwrap().ha1.as_str(), HA1_MD5);
    assert!(auth.sha256.is_none());
    assert!(auth.hashes(Algorithm::Sha256).is_none());
}

#[test]
fn secrets_combinations_are_checked() {
    let (_dir, store) = open();
    let mk = |p: Option<&str>, a: Option<&str>, b: Option<&str>| NewCredential {
        username: Some("carol".into()),
        password: p.map(Into::into),
        ha1: a.map(Into::into),
        ha1b: b.map(Into::into),
        ..Default::default()
    };
    let h = Some(HA1_MD5);
    assert_eq!(
        field_of(store.create_credential(mk(None, h, None)).unwrap_err()),
        "ha1b"
    );
    assert_eq!(
        field_of(store.create_credential(mk(None, None, h)).unwrap_err()),
        "ha1"
    );
    assert_eq!(
        field_of(
            store
                .create_credential(mk(Some("secretpass"), h, h))
                .unwrap_err()
        ),
        "password"
    );
    assert_eq!(
        field_of(
            store
                .create_credential(mk(None, Some("xyz"), h))
                .unwrap_err()
        ),
        "ha1"
    );
    assert_eq!(
        field_of(
            store
                .create_credential(mk(None, h, Some(HA1_SHA256)))
                .unwrap_err()
        ),
        "ha1b"
    );
    assert_eq!(
        field_of(
            store
                .create_credential(mk(Some("short"), None, None))
                .unwrap_err()
        ),
        "password"
    );
    assert!(store.list_credentials(None).unwrap().is_empty());
}

#[test]
fn generated_username_and_password() {
    let (_dir, store) = open();
    let created = store.create_credential(NewCredential::default()).unwrap();
    let password = created.password.clone().unwrap();
    assert!(password.len() >= 20 && password.bytes().all(|b| b.is_ascii_alphanumeric()));
    let u = &created.credential.username;
    assert_eq!(u.len(), 12);
    assert!(u
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    // The generated password is the one hashed.
    let snap = store.snapshot().unwrap();
    let auth = snap.credential(u.as_bytes(), b"sipedge.local").unwrap();
    let expect = crate::sip::digest::ha1(
        Algorithm::Md5,
        u.as_bytes(),
        b"sipedge.local",
        password.as_bytes(),
    );
    assert_eq!(auth.md5.as_ref().unwrap().ha1, expect);
    let json = serde_json::to_value(&created).unwrap();
    assert_eq!(json["password"], password.as_str());
    assert_eq!(json["username"], u.as_str());
}

#[test]
fn realm_and_tenant_rules() {
    let (_dir, store) = open();
    let mut new = alice();
    new.realm = Some("other.example".into());
    assert_eq!(
        field_of(store.create_credential(new.clone()).unwrap_err()),
        "realm"
    );
    store.create_realm("Other.Example").unwrap();
    assert!(matches!(
        store.create_realm("other.example"),
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        field_of(store.create_realm("bad realm").unwrap_err()),
        "name"
    );
    new.tenant = Some("acme".into());
    assert_eq!(
        field_of(store.create_credential(new.clone()).unwrap_err()),
        "tenant"
    );
    store.create_tenant("acme").unwrap();
    assert!(matches!(
        store.create_tenant("acme"),
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(field_of(store.create_tenant("a b").unwrap_err()), "name");
    let c = store.create_credential(new).unwrap().credential;
    assert_eq!(c.realm, "other.example");
    assert_eq!(c.tenant.as_deref(), Some("acme"));
    assert_eq!(
        store.get_tenant("acme").unwrap(),
        Tenant {
            name: "acme".into()
        }
    );
    assert!(matches!(
        store.get_tenant("nope"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_tenants().unwrap().len(), 1);

    assert!(matches!(
        store.delete_tenant("acme"),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        store.delete_realm("other.example"),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        store.delete_realm("sipedge.local"),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        store.delete_realm("nope.example"),
        Err(StoreError::NotFound(_))
    ));
    store
        .delete_credential("alice", Some("OTHER.example"))
        .unwrap();
    store.delete_tenant("acme").unwrap();
    store.delete_realm("other.example").unwrap();
    assert!(matches!(
        store.delete_tenant("acme"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_realms().unwrap().len(), 1);
}

#[test]
fn duplicates_and_same_username_in_other_realm() {
    let (_dir, store) = open();
    store.create_credential(alice()).unwrap();
    let e = store.create_credential(alice()).unwrap_err();
    assert!(
        matches!(&e, StoreError::Duplicate(s) if s == "credential alice@sipedge.local"),
        "{e:?}"
    );
    store.create_realm("b.example").unwrap();
    let mut other = alice();
    other.realm = Some("B.example".into());
    store.create_credential(other).unwrap();
    assert_eq!(store.list_credentials(None).unwrap().len(), 2);
    assert_eq!(store.list_credentials(Some("b.example")).unwrap().len(), 1);
    assert_eq!(
        store.list_credentials(Some("sipedge.local")).unwrap().len(),
        1
    );
    assert!(matches!(
        store.list_credentials(Some("nope.example")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn field_validation() {
    let (_dir, store) = open();
    let cases: Vec<(NewCredential, &str)> = vec![
        (
            NewCredential {
                username: Some("a@b".into()),
                ..alice()
            },
            "username",
        ),
        (
            NewCredential {
                username: Some(String::new()),
                ..alice()
            },
            "username",
        ),
        (
            NewCredential {
                realm: Some("bad realm".into()),
                ..alice()
            },
            "realm",
        ),
        (
            NewCredential {
                max_calls: Some(0),
                ..alice()
            },
            "max_calls",
        ),
        (
            NewCredential {
                max_cps: Some(0.0),
                ..alice()
            },
            "max_cps",
        ),
        (
            NewCredential {
                max_cps: Some(f64::NAN),
                ..alice()
            },
            "max_cps",
        ),
        (
            NewCredential {
                codecs: Some(vec!["mp3".into()]),
                ..alice()
            },
            "codecs",
        ),
        (
            NewCredential {
                allowed_cli: Some(vec!["5551230000".into()]),
                ..alice()
            },
            "allowed_cli",
        ),
    ];
    for (new, field) in cases {
        assert_eq!(field_of(store.create_credential(new).unwrap_err()), field);
    }
    let ok = NewCredential {
        max_calls: Some(5),
        max_cps: Some(0.5),
        codecs: Some(vec!["pcmu".into(), "G722".into()]),
        allowed_cli: Some(vec!["+15551230000".into()]),
        ..alice()
    };
    let c = store.create_credential(ok).unwrap().credential;
    assert_eq!((c.max_calls, c.max_cps), (Some(5), Some(0.5)));
    assert_eq!(c.codecs, ["PCMU", "G722"]);
    assert_eq!(c.allowed_cli, ["+15551230000"]);
    assert_eq!(store.get_credential("alice", None).unwrap(), c);
}

#[test]
fn bulk_create_is_all_or_nothing() {
    let (_dir, store) = open();
    let batch = vec![
        alice(),
        NewCredential {
            username: Some("bob".into()),
            ..alice()
        },
    ];
    assert_eq!(store.create_credentials(batch).unwrap().len(), 2);
    let bad = vec![
        NewCredential {
            username: Some("carol".into()),
            ..alice()
        },
        NewCredential {
            username: Some("dave".into()),
            max_calls: Some(0),
            ..alice()
        },
    ];
    assert_eq!(
        field_of(store.create_credentials(bad).unwrap_err()),
        "[1].max_calls"
    );
    let dup = vec![
        NewCredential {
            username: Some("erin".into()),
            ..alice()
        },
        alice(),
    ];
    assert!(matches!(
        store.create_credentials(dup),
        Err(StoreError::Duplicate(_))
    ));
    let twice = vec![
        NewCredential {
            username: Some("frank".into()),
            ..alice()
        },
        NewCredential {
            username: Some("frank".into()),
            ..alice()
        },
    ];
    assert!(matches!(
        store.create_credentials(twice),
        Err(StoreError::Duplicate(_))
    ));
    let names: Vec<_> = store
        .list_credentials(None)
        .unwrap()
        .into_iter()
        .map(|c| c.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[test]
fn update_credential() {
    let (_dir, store) = open();
    store.create_credential(alice()).unwrap();
    store.create_tenant("acme").unwrap();
    let patch: CredentialPatch =
        serde_json::from_str(r#"{"tenant":"acme","max_calls":3,"max_cps":2.5,"codecs":["opus"]}"#)
            .unwrap();
    let c = store.update_credential("alice", None, patch).unwrap();
    assert_eq!(
        (c.tenant.as_deref(), c.max_calls, c.max_cps),
        (Some("acme"), Some(3), Some(2.5))
    );
    assert_eq!(c.codecs, ["opus"]);
    // null clears, absent keeps.
    let patch: CredentialPatch =
        serde_json::from_str(r#"{"tenant":null,"max_calls":null,"codecs":[]}"#).unwrap();
    let c = store.update_credential("alice", None, patch).unwrap();
    assert_eq!((c.tenant, c.max_calls, c.max_cps), (None, None, Some(2.5)));
    assert!(c.codecs.is_empty());
    // Hashes: MD5 only, then back to a password (all four).
    let patch = CredentialPatch {
        ha1: Some(HA1_MD5.into()),
        ha1b: Some(HA1B_MD5.into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_credential("alice", None, patch)
            .unwrap()
            .algorithms,
        ["MD5"]
    );
    let patch = CredentialPatch {
        password: Some("secretpass".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_credential("alice", None, patch)
            .unwrap()
            .algorithms,
        ["MD5", "SHA-256"]
    );
    let snap = store.snapshot().unwrap();
    assert_eq!(
        snap.credential(b"alice", b"sipedge.local")
            .unwrap()
            .sha256
            .as_ref()
            .unwrap()
            .ha1b
            .as_str(),
        HA1B_SHA256
    );
    // Bad input changes nothing.
    let patch = CredentialPatch {
        max_calls: Some(Some(5)),
        max_cps: Some(Some(-1.0)),
        ..Default::default()
    };
    assert_eq!(
        field_of(store.update_credential("alice", None, patch).unwrap_err()),
        "max_cps"
    );
    assert_eq!(store.get_credential("alice", None).unwrap().max_calls, None);
    let patch = CredentialPatch {
        tenant: Some(Some("nope".into())),
        ..Default::default()
    };
    assert_eq!(
        field_of(store.update_credential("alice", None, patch).unwrap_err()),
        "tenant"
    );
    assert!(matches!(
        store.update_credential("nobody", None, CredentialPatch::default()),
        Err(StoreError::NotFound(_))
    ));
    assert!(serde_json::from_str::<CredentialPatch>(r#"{"username":"x"}"#).is_err());
    assert!(serde_json::from_str::<NewCredential>(r#"{"bogus":1}"#).is_err());
}

#[test]
fn snapshot_contents() {
    let (_dir, store) = open();
    store.create_realm("B.Example").unwrap();
    store
        .create_credential(NewCredential {
            max_calls: Some(4),
            ..alice()
        })
        .unwrap();
    store
        .create_credential(NewCredential {
            realm: Some("b.example".into()),
            ..alice()
        })
        .unwrap();
    let snap = store.snapshot().unwrap();
    assert_eq!(
        snap.generation as i64,
        store.provisioning_version().unwrap()
    );
    assert_eq!(&*snap.default_realm, "sipedge.local");
    assert_eq!(snap.realms.len(), 2);
    assert_eq!(snap.realm_for_host(b"B.EXAMPLE"), b"b.example");
    assert_eq!(snap.realm_for_host(b"unknown.example"), b"sipedge.local");
    assert_eq!(snap.credentials.len(), 2);
    let a = snap.credential(b"alice", b"SIPEDGE.local").unwrap();
    assert_eq!(a.max_calls, Some(4));
    assert_eq!(a.md5.as_ref().unwrap().ha1.as_str(), HA1_MD5);
    assert_eq!(a.sha256.as_ref().unwrap().ha1.as_str(), HA1_SHA256);
    assert!(snap.credential(b"alice", b"b.example").is_some());
    assert!(snap.credential(b"Alice", b"sipedge.local").is_none());
}

fn binding(user: &str, contact: &str, expires: u64) -> BindingRow {
    BindingRow {
        username: user.into(),
        realm: "sipedge.local".into(),
        contact: contact.into(),
        source_ip: "203.0.113.5".into(),
        source_port: 5062,
        transport: "udp".into(),
        user_agent: "PBX 1.0".into(),
        call_id: "abc@pbx".into(),
        cseq: 7,
        registered_at_unix: 1_000,
        expires_at_unix: expires,
    }
}

#[test]
fn bindings_persist_expire_and_follow_credentials() {
    let (dir, store) = open();
    store.create_credential(alice()).unwrap();
    store
        .create_credential(NewCredential {
            username: Some("bob".into()),
            ..alice()
        })
        .unwrap();
    let rows = vec![
        binding("alice", "sip:a@203.0.113.5:5062", 2_000),
        binding("alice", "sip:a2@203.0.113.5:5062", 1_500),
        binding("bob", "sip:b@203.0.113.6", 2_000),
        binding("ghost", "sip:g@203.0.113.7", 2_000),
    ];
    store.save_bindings(&rows, &[]).unwrap();
    // Upsert replaces, removal removes.
    let mut again = binding("alice", "sip:a@203.0.113.5:5062", 3_000);
    again.cseq = 8;
    store
        .save_bindings(
            &[again.clone()],
            &[(
                "bob".into(),
                "sipedge.local".into(),
                "sip:b@203.0.113.6".into(),
            )],
        )
        .unwrap();
    drop(store);
    let store = Store::open(&dir.path().join("data/sipedge.db"), "sipedge.local").unwrap();
    let loaded = store.load_bindings(1_600).unwrap();
    // a2 expired, bob removed, ghost has no credential.
    assert_eq!(loaded, vec![again]);
    let left: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM bindings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
    store.delete_credential("alice", None).unwrap();
    assert!(store.load_bindings(0).unwrap().is_empty());
    assert!(matches!(
        store.delete_credential("alice", None),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_credential("bob", Some("nope.example")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn replace_bindings_sets_the_complete_set_per_credential() {
    let (_dir, store) = open();
    store.create_credential(alice()).unwrap();
    store
        .create_credential(NewCredential {
            username: Some("bob".into()),
            ..alice()
        })
        .unwrap();
    let a1 = binding("alice", "sip:a1@x", 2_000);
    let a2 = binding("alice", "sip:a2@x", 2_000);
    let b1 = binding("bob", "sip:b1@x", 2_000);
    store
        .replace_bindings(&[
            (
                "alice".into(),
                "sipedge.local".into(),
                vec![a1.clone(), a2.clone()],
            ),
            ("bob".into(), "sipedge.local".into(), vec![b1.clone()]),
        ])
        .unwrap();
    assert_eq!(store.load_bindings(0).unwrap(), vec![a1, a2.clone(), b1]);
    // alice now has only a2; bob has none; neither touches the other.
    store
        .replace_bindings(&[
            ("alice".into(), "sipedge.local".into(), vec![a2.clone()]),
            ("bob".into(), "sipedge.local".into(), vec![]),
        ])
        .unwrap();
    assert_eq!(store.load_bindings(0).unwrap(), vec![a2]);
}

#[test]
fn data_version_sees_other_connections() {
    let (dir, store) = open();
    let before = store.data_version().unwrap();
    let other = Store::open(&dir.path().join("data/sipedge.db"), "sipedge.local").unwrap();
    other.create_credential(alice()).unwrap();
    assert_ne!(store.data_version().unwrap(), before);
    assert_eq!(store.list_credentials(None).unwrap().len(), 1);
}

// ---- trunks and numbers --------------------------------------------------------------------

fn pbx_trunk(name: &str, cidrs: &[&str]) -> NewTrunk {
    NewTrunk {
        name: name.into(),
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        destination: "sip:pbx.example.com:5060;transport=udp".into(),
        ..Default::default()
    }
}

fn number_to(number: &str, route: NewRoute) -> NewNumber {
    NewNumber {
        number: number.into(),
        tenant: None,
        route,
        headers: None,
    }
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

#[test]
fn trunk_crud_and_cidr_rules() {
    let (_dir, store) = open();
    let before = store.provisioning_version().unwrap();
    let t = store
        .create_trunk(NewTrunk {
            max_calls: Some(30),
            codecs: Some(strings(&["pcmu", "PCMA"])),
            ..pbx_trunk(
                "acme-pbx",
                &["198.51.100.0/24", "203.0.113.7", "2001:db8::/32"],
            )
        })
        .unwrap();
    assert!(store.provisioning_version().unwrap() > before);
    assert_eq!(
        t.cidrs,
        strings(&["198.51.100.0/24", "203.0.113.7/32", "2001:db8::/32"])
    );
    assert_eq!(t.codecs, strings(&["PCMU", "PCMA"]));
    assert_eq!(t.max_calls, Some(30));
    assert_eq!(store.get_trunk("acme-pbx").unwrap(), t);
    assert_eq!(store.list_trunks().unwrap(), vec![t.clone()]);

    assert!(matches!(
        store.create_trunk(pbx_trunk("acme-pbx", &["192.0.2.1"])),
        Err(StoreError::Duplicate(_))
    ));
    // The same network cannot identify two trunks.
    let e = store
        .create_trunk(pbx_trunk("other", &["192.0.2.1", "203.0.113.7/32"]))
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(s) if s.starts_with("cidrs[1]: ") && s.contains("acme-pbx")),
        "{e:?}"
    );
    let bad: Vec<(NewTrunk, &str)> = vec![
        (pbx_trunk("a b", &["192.0.2.1"]), "name"),
        (pbx_trunk("x", &[]), "cidrs"),
        (pbx_trunk("x", &["192.0.2.1", "nonsense"]), "cidrs[1]"),
        (pbx_trunk("x", &["192.0.2.1/24"]), "cidrs[0]"),
        (pbx_trunk("x", &["192.0.2.0/33"]), "cidrs[0]"),
        (pbx_trunk("x", &["0.0.0.0/0"]), "cidrs[0]"),
        (pbx_trunk("x", &["192.0.2.1", "192.0.2.1/32"]), "cidrs[1]"),
        (
            NewTrunk {
                destination: "http://pbx.example.com".into(),
                ..pbx_trunk("x", &["192.0.2.1"])
            },
            "destination",
        ),
        (
            NewTrunk {
                tenant: Some("nobody".into()),
                ..pbx_trunk("x", &["192.0.2.1"])
            },
            "tenant",
        ),
        (
            NewTrunk {
                max_cps: Some(0.0),
                ..pbx_trunk("x", &["192.0.2.1"])
            },
            "max_cps",
        ),
        (
            NewTrunk {
                allowed_cli: Some(strings(&["5551230000"])),
                ..pbx_trunk("x", &["192.0.2.1"])
            },
            "allowed_cli",
        ),
    ];
    for (new, field) in bad {
        let e = store.create_trunk(new.clone()).unwrap_err();
        assert_eq!(field_of(e), field, "{new:?}");
    }
    assert_eq!(store.list_trunks().unwrap().len(), 1);

    store.create_tenant("acme").unwrap();
    let u = store
        .update_trunk(
            "acme-pbx",
            TrunkPatch {
                tenant: Some(Some("acme".into())),
                cidrs: Some(strings(&["198.51.100.0/25"])),
                max_calls: Some(None),
                allowed_cli: Some(strings(&["+15551230000"])),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(u.tenant.as_deref(), Some("acme"));
    assert_eq!(u.cidrs, strings(&["198.51.100.0/25"]));
    assert_eq!(u.max_calls, None);
    assert_eq!(u.codecs, strings(&["PCMU", "PCMA"]), "left alone");
    let e = store
        .update_trunk(
            "acme-pbx",
            TrunkPatch {
                destination: Some("sip:".into()),
                max_calls: Some(Some(5)),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(field_of(e), "destination");
    assert_eq!(
        store.get_trunk("acme-pbx").unwrap().max_calls,
        None,
        "nothing written"
    );
    assert!(matches!(
        store.update_trunk("nope", TrunkPatch::default()),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_tenant("acme"),
        Err(StoreError::InUse(_))
    ));

    store
        .create_number(number_to(
            "+15551230000",
            NewRoute::Trunk("acme-pbx".into()),
        ))
        .unwrap();
    assert!(matches!(
        store.delete_trunk("acme-pbx"),
        Err(StoreError::InUse(_))
    ));
    store.delete_number("+15551230000").unwrap();
    store.delete_trunk("acme-pbx").unwrap();
    assert!(matches!(
        store.delete_trunk("acme-pbx"),
        Err(StoreError::NotFound(_))
    ));
    store.delete_tenant("acme").unwrap();
}

#[test]
fn number_routes_headers_and_references() {
    let (_dir, store) = open();
    store.create_credential(alice()).unwrap();
    store.create_realm("b.example").unwrap();
    store
        .create_credential(NewCredential {
            username: Some("bob".into()),
            realm: Some("b.example".into()),
            ..alice()
        })
        .unwrap();
    store.create_tenant("acme").unwrap();

    let n = store
        .create_number(NewNumber {
            tenant: Some("acme".into()),
            headers: Some(vec![
                ("Account".into(), "42".into()),
                ("x-Trace".into(), "on; level=2".into()),
            ]),
            ..number_to(
                "+15551230000",
                NewRoute::Credential {
                    username: "alice".into(),
                    realm: None,
                },
            )
        })
        .unwrap();
    assert_eq!(
        n.route,
        Route::Credential {
            username: "alice".into(),
            realm: "sipedge.local".into()
        }
    );
    assert_eq!(
        n.headers.iter().collect::<Vec<_>>(),
        vec![
            (&"X-Account".to_string(), &"42".to_string()),
            (&"x-Trace".to_string(), &"on; level=2".to_string())
        ]
    );
    assert_eq!(
        serde_json::to_value(&n.route).unwrap(),
        serde_json::json!({"credential": "alice", "realm": "sipedge.local"})
    );
    assert_eq!(store.get_number("+15551230000").unwrap(), n);
    assert!(matches!(
        store.create_number(number_to(
            "+15551230000",
            NewRoute::Uri("sip:{number}@x.example".into())
        )),
        Err(StoreError::Duplicate(_))
    ));
    let uri = store
        .create_number(number_to(
            "+4930123456",
            NewRoute::Uri("sip:{number}@pbx.example.com:5061;transport=tls".into()),
        ))
        .unwrap();
    assert_eq!(
        serde_json::to_value(&uri.route).unwrap(),
        serde_json::json!({"uri": "sip:{number}@pbx.example.com:5061;transport=tls"})
    );
    store
        .create_number(number_to(
            "+4930123457",
            NewRoute::Credential {
                username: "bob".into(),
                realm: Some("B.example".into()),
            },
        ))
        .unwrap();
    assert_eq!(store.list_numbers().unwrap().len(), 3);

    let cred = |u: &str, r: Option<&str>| NewRoute::Credential {
        username: u.into(),
        realm: r.map(Into::into),
    };
    let long_value = "v".repeat(1000);
    let bad: Vec<(NewNumber, &str)> = vec![
        (number_to("15551230001", cred("alice", None)), "number"),
        (number_to("+1555", cred("alice", None)), "number"),
        (
            number_to("+15551230001", cred("carol", None)),
            "route.credential",
        ),
        (
            number_to("+15551230001", cred("bob", None)),
            "route.credential",
        ),
        (
            number_to("+15551230001", cred("bob", Some("nope.example"))),
            "route.realm",
        ),
        (
            number_to("+15551230001", NewRoute::Trunk("nope".into())),
            "route.trunk",
        ),
        (
            number_to("+15551230001", NewRoute::Uri("tel:{number}".into())),
            "route.uri",
        ),
        (
            number_to("+15551230001", NewRoute::Uri("sip:{num}@x.example".into())),
            "route.uri",
        ),
        (
            NewNumber {
                tenant: Some("nobody".into()),
                ..number_to("+15551230001", cred("alice", None))
            },
            "tenant",
        ),
        (
            NewNumber {
                headers: Some(vec![("Bad Name".into(), "v".into())]),
                ..number_to("+15551230001", cred("alice", None))
            },
            "headers.Bad Name",
        ),
        (
            NewNumber {
                headers: Some(vec![("Inject".into(), "v\r\nVia: evil".into())]),
                ..number_to("+15551230001", cred("alice", None))
            },
            "headers.Inject",
        ),
        (
            NewNumber {
                headers: Some(vec![("A".repeat(49), "v".into())]),
                ..number_to("+15551230001", cred("alice", None))
            },
            &*Box::leak(format!("headers.{}", "A".repeat(49)).into_boxed_str()),
        ),
        (
            NewNumber {
                headers: Some(vec![
                    ("A".into(), long_value.clone()),
                    ("B".into(), "x".repeat(20)),
                ]),
                ..number_to("+15551230001", cred("alice", None))
            },
            "headers",
        ),
        (
            NewNumber {
                headers: Some(vec![
                    ("Foo".into(), "1".into()),
                    ("x-foo".into(), "2".into()),
                ]),
                ..number_to("+15551230001", cred("alice", None))
            },
            "headers.x-foo",
        ),
    ];
    for (new, field) in bad {
        let e = store.create_number(new.clone()).unwrap_err();
        assert_eq!(field_of(e), field, "{new:?}");
    }
    assert_eq!(store.list_numbers().unwrap().len(), 3, "nothing written");

    // 48 + "X-" = 50 characters is the longest name; the lines may total exactly 1024 bytes.
    let exact = "v".repeat(1024 - 50 - 2);
    store
        .create_number(NewNumber {
            headers: Some(vec![("B".repeat(48), exact)]),
            ..number_to("+15551230002", cred("alice", None))
        })
        .unwrap();

    // References: a routed credential, its realm and the owning tenant cannot go.
    assert!(matches!(
        store.delete_credential("alice", None),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        store.delete_credential("bob", Some("b.example")),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        store.delete_tenant("acme"),
        Err(StoreError::InUse(_))
    ));

    let u = store
        .update_number(
            "+15551230000",
            NumberPatch {
                tenant: Some(None),
                route: Some(NewRoute::Uri("sips:{number}@pbx.example.com".into())),
                headers: Some(vec![]),
            },
        )
        .unwrap();
    assert_eq!(u.tenant, None);
    assert!(u.headers.is_empty());
    assert_eq!(u.route, Route::Uri("sips:{number}@pbx.example.com".into()));
    let e = store
        .update_number(
            "+15551230000",
            NumberPatch {
                tenant: Some(Some("acme".into())),
                route: Some(NewRoute::Trunk("nope".into())),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(field_of(e), "route.trunk");
    assert_eq!(
        store.get_number("+15551230000").unwrap().tenant,
        None,
        "nothing written"
    );
    assert!(matches!(
        store.update_number("+19999999999", NumberPatch::default()),
        Err(StoreError::NotFound(_))
    ));
    store.delete_tenant("acme").unwrap();
    store.delete_number("+15551230002").unwrap();
    store.delete_credential("alice", None).unwrap();
    store.delete_number("+4930123457").unwrap();
    store.delete_credential("bob", Some("b.example")).unwrap();
    store.delete_realm("b.example").unwrap();
    assert!(matches!(
        store.delete_number("+4930123457"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_numbers().unwrap().len(), 2);
}

#[test]
fn schema_v2_database_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // A database as version 2 left it, with a credential in it.
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(schema::MIGRATIONS[0]).unwrap();
        tx.execute_batch(schema::MIGRATIONS[1]).unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(&path, "sipedge.local").unwrap();
    store.create_credential(alice()).unwrap();
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let before = store.provisioning_version().unwrap();
    store
        .create_trunk(pbx_trunk("t", &["192.0.2.0/24"]))
        .unwrap();
    store
        .create_number(number_to("+15551230000", NewRoute::Trunk("t".into())))
        .unwrap();
    assert_eq!(store.provisioning_version().unwrap(), before + 2);
}

#[test]
fn snapshot_carries_the_call_view_trunks_numbers_and_caller_ids() {
    use crate::routing::numbers::E164;
    use snapshot::RouteTarget;
    let (_dir, store) = open();
    store.create_tenant("acme").unwrap();
    store
        .create_credential(NewCredential {
            tenant: Some("acme".into()),
            codecs: Some(vec!["PCMU".into(), "opus".into()]),
            allowed_cli: Some(vec!["+14155550100".into()]),
            ..alice()
        })
        .unwrap();
    let trunk = |name: &str, cidrs: &[&str]| NewTrunk {
        name: name.into(),
        tenant: Some("acme".into()),
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        destination: "sip:pbx.acme.example:5060".into(),
        max_calls: Some(10),
        max_cps: None,
        codecs: None,
        allowed_cli: None,
    };
    store
        .create_trunk(trunk("wide", &["198.51.100.0/24"]))
        .unwrap();
    store
        .create_trunk(trunk("narrow", &["198.51.100.128/25", "2001:db8::/32"]))
        .unwrap();
    let number = |n: &str, route: NewRoute| NewNumber {
        number: n.into(),
        tenant: Some("acme".into()),
        route,
        headers: None,
    };
    store
        .create_number(number(
            "+15551230001",
            NewRoute::Credential {
                username: "alice".into(),
                realm: None,
            },
        ))
        .unwrap();
    store
        .create_number(number("+15551230002", NewRoute::Trunk("narrow".into())))
        .unwrap();
    store
        .create_number(NewNumber {
            headers: Some(vec![("Account".into(), "42".into())]),
            ..number(
                "+15551230003",
                NewRoute::Uri("sip:{number}@pbx.example.com".into()),
            )
        })
        .unwrap();

    let snap = store.snapshot().unwrap();
    // longest prefix wins; v6 too; outside every CIDR: no trunk
    assert_eq!(
        snap.trunk_for_source("198.51.100.7".parse().unwrap())
            .map(|(_, t)| &*t.name),
        Some("wide")
    );
    assert_eq!(
        snap.trunk_for_source("198.51.100.200".parse().unwrap())
            .map(|(_, t)| &*t.name),
        Some("narrow")
    );
    assert_eq!(
        snap.trunk_for_source("2001:db8::5".parse().unwrap())
            .map(|(_, t)| &*t.name),
        Some("narrow")
    );
    assert!(snap
        .trunk_for_source("203.0.113.1".parse().unwrap())
        .is_none());

    let n1 = E164::parse("+15551230001").unwrap();
    let mut key = smallvec::SmallVec::<[u8; 128]>::new();
    snapshot::credential_key(b"alice", b"sipedge.local", &mut key);
    assert_eq!(
        snap.numbers[&n1].target,
        RouteTarget::Credential(Box::from(&key[..]))
    );
    let (narrow, _) = snap
        .trunk_for_source("198.51.100.200".parse().unwrap())
        .unwrap();
    assert_eq!(
        snap.numbers[&E164::parse("+15551230002").unwrap()].target,
        RouteTarget::Trunk(narrow)
    );
    let n3 = &snap.numbers[&E164::parse("+15551230003").unwrap()];
    assert_eq!(
        n3.target,
        RouteTarget::Uri("sip:{number}@pbx.example.com".into())
    );
    assert_eq!(&*n3.headers[0].0, "X-Account");

    let cred = snap.credential(b"alice", b"sipedge.local").unwrap();
    assert_eq!(
        &*cred.policy.codecs,
        &["PCMU".into(), "opus".into()] as &[Box<str>]
    );
    // caller ids: the tenant's numbers, plus allowed_cli; nothing else
    assert!(snap.caller_id_allowed(Some("acme"), &cred.policy, &n1));
    assert!(snap.caller_id_allowed(None, &cred.policy, &E164::parse("+14155550100").unwrap()));
    assert!(!snap.caller_id_allowed(
        Some("acme"),
        &cred.policy,
        &E164::parse("+14155550199").unwrap()
    ));
    assert!(!snap.caller_id_allowed(Some("other"), &cred.policy, &n1));
}

#[cfg(unix)]
#[test]
fn a_new_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    store.create_credential(alice()).unwrap(); // a write, so the WAL exists too
    let data = dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("sipedge.db")), 0o600);
    assert_eq!(mode(&data.join("sipedge.db-wal")), 0o600);
}
