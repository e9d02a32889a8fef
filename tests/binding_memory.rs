//! SPEC §5: at most 1 KiB per registration binding. Measured exactly: live heap bytes (a counting
//! allocator) after registering many credentials through the real path (challenge, digest
//! verification, accept). The registrar's per-credential state lives in its slot `Vec`, so it is
//! part of the heap figure, growth slack included. Provisioning data (the snapshot) is allocated
//! before the measurement starts and is not part of a binding; nor are completed transactions
//! (per request, gone after Timer J).

use sipedge::config::{OnConflict, RegistrarConfig};
use sipedge::registrar::{Answer, Registrar, Transport};
use sipedge::sip::digest::{self, Algorithm, NonceKey, Qop};
use sipedge::sip::headers::request_headers;
use sipedge::sip::scan::scan;
use sipedge::store::snapshot::{credential_key, CredentialAuth, HashPair, Snapshot};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

struct Counting;
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REALM: &str = "sbc.test";
const N: usize = 20_000;

#[test]
fn a_binding_costs_less_than_one_kib() {
    let cfg = RegistrarConfig {
        realm: REALM.into(),
        min_interval_s: 0,
        throttle_status: 429,
        max_expires_s: 300,
        min_expires_s: 60,
        nonce_ttl_s: 300,
        max_contacts: 1,
        on_conflict: OnConflict::Replace,
        algorithms: vec![Algorithm::Md5],
    };
    let ha1 = digest::ha1(Algorithm::Md5, b"x", REALM.as_bytes(), b"pw");
    let mut snap = Snapshot::empty(REALM);
    for i in 0..N {
        let user = format!("pbx{i:06}");
        let mut key = smallvec::SmallVec::<[u8; 128]>::new();
        credential_key(user.as_bytes(), REALM.as_bytes(), &mut key);
        let h = HashPair {
            ha1: digest::ha1(Algorithm::Md5, user.as_bytes(), REALM.as_bytes(), b"pw"),
            ha1b: ha1,
        };
        snap.credentials.insert(
            key.as_slice().into(),
            CredentialAuth {
                id: i as i64,
                username: user.as_str().into(),
                realm: REALM.into(),
                tenant: None,
                md5: Some(h),
                sha256: None,
                max_calls: None,
                max_cps: None,
                policy: Default::default(),
            },
        );
    }
    let t0 = 1_800_000_000_000u64;
    let mut reg = Registrar::new(cfg, NonceKey::from_secret([9; 32]), t0);
    let mut buf = Vec::with_capacity(2048);
    let before = LIVE.load(Ordering::SeqCst);
    for i in 0..N {
        let user = format!("pbx{i:06}");
        let src: SocketAddr = format!("10.{}.{}.{}:5060", i >> 16, (i >> 8) & 255, i & 255)
            .parse()
            .unwrap();
        let register = |buf: &mut Vec<u8>, auth: Option<String>| {
            use std::io::Write;
            buf.clear();
            let _ = write!(buf, "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK{i}x;rport\r\nFrom: <sip:{user}@{REALM}>;tag=98asjd8\r\nTo: <sip:{user}@{REALM}>\r\nCall-ID: 843817637684230@998sdasdh09-{i}\r\nCSeq: 2 REGISTER\r\nContact: <sip:{user}@{src};transport=udp>\r\nExpires: 3600\r\nUser-Agent: Asterisk PBX 20.5.2\r\n");
            if let Some(a) = auth {
                let _ = write!(buf, "Authorization: {a}\r\n");
            }
            let _ = write!(buf, "Content-Length: 0\r\n\r\n");
        };
        register(&mut buf, None);
        let nonce = {
            let msg = scan(&buf).unwrap();
            let req = request_headers(&msg).unwrap();
            match reg
                .handle_register(t0, src, Transport::Udp, &msg, &req, &snap)
                .0
            {
                Answer::Challenge { nonce, .. } => nonce,
                other => panic!("{other:?}"),
            }
        };
        let user_ha1 = digest::ha1(Algorithm::Md5, user.as_bytes(), REALM.as_bytes(), b"pw");
        let resp = digest::response(
            Algorithm::Md5,
            user_ha1.as_bytes(),
            b"REGISTER",
            b"sip:sbc.test",
            nonce.text().as_bytes(),
            Some(Qop {
                qop: b"auth",
                nc: b"00000001",
                cnonce: b"c",
            }),
        );
        register(
            &mut buf,
            Some(format!("Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{}\", uri=\"sip:sbc.test\", response=\"{}\", qop=auth, nc=00000001, cnonce=\"c\"", nonce.text().as_str(), resp.as_str())),
        );
        let msg = scan(&buf).unwrap();
        let req = request_headers(&msg).unwrap();
        assert_eq!(
            reg.handle_register(t0, src, Transport::Udp, &msg, &req, &snap)
                .0,
            Answer::Registered { expires: 300 }
        );
    }
    reg.drain_dirty(|_| {});
    let per_binding = (LIVE.load(Ordering::SeqCst) - before) as f64 / N as f64;
    assert_eq!(reg.active_bindings(), N);
    println!(
        "per binding: {per_binding:.0} bytes of heap (state of {} bytes inline per credential)",
        std::mem::size_of::<sipedge::registrar::CredState>()
    );
    assert!(per_binding <= 1024.0, "{per_binding:.0} bytes per binding");
}
