//! Hot-path discipline, asserted: once warm, answering a REGISTER — scan, header views,
//! transaction lookup, registrar policy (challenge, digest verification, binding refresh) and
//! response writing — performs no heap allocation. A counting global allocator watches.

use sipedge::config::{OnConflict, RegistrarConfig};
use sipedge::registrar::response::{write_answer, Opaque};
use sipedge::registrar::{Answer, Registrar, Transport};
use sipedge::sip::digest::{self, Algorithm, NonceKey, Qop};
use sipedge::sip::headers::request_headers;
use sipedge::sip::scan::scan;
use sipedge::sip::transaction::{ServerTransactions, TxnKeyHasher, TIMER_J_UDP_MS};
use sipedge::store::snapshot::{credential_key, CredentialAuth, HashPair, Snapshot};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REALM: &str = "sbc.test";

fn register(buf: &mut Vec<u8>, branch: u64, cseq: u32, auth: Option<(&str, &str)>) {
    use std::io::Write;
    buf.clear();
    let _ = write!(
        buf,
        "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch:x};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{REALM}>;tag=1928301774\r\nTo: <sip:alice@{REALM}>\r\nCall-ID: a84b4c76e66710@pbx\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@10.0.0.1:5060>\r\nExpires: 3600\r\nUser-Agent: Asterisk PBX 20.5\r\n"
    );
    if let Some((nonce, response)) = auth {
        let _ = write!(buf, "Authorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:{REALM}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\"\r\n");
    }
    let _ = write!(buf, "Content-Length: 0\r\n\r\n");
}

#[test]
fn answering_registers_does_not_allocate_once_warm() {
    let cfg = RegistrarConfig {
        realm: REALM.into(),
        min_interval_s: 0,
        throttle_status: 429,
        max_expires_s: 300,
        min_expires_s: 60,
        nonce_ttl_s: 300,
        max_contacts: 1,
        on_conflict: OnConflict::Replace,
        algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
    };
    let mut snap = Snapshot::empty(REALM);
    let mut key = smallvec::SmallVec::<[u8; 128]>::new();
    credential_key(b"alice", REALM.as_bytes(), &mut key);
    let pair = |alg| HashPair {
        ha1: digest::ha1(alg, b"alice", REALM.as_bytes(), b"pw-123456"),
        ha1b: digest::ha1b(alg, b"alice", REALM.as_bytes(), b"pw-123456"),
    };
    snap.credentials.insert(
        key.as_slice().into(),
        CredentialAuth {
            id: 1,
            username: "alice".into(),
            realm: REALM.into(),
            tenant: None,
            md5: Some(pair(Algorithm::Md5)),
            sha256: Some(pair(Algorithm::Sha256)),
            max_calls: None,
            max_cps: None,
            policy: Default::default(),
        },
    );
    let t0 = 1_800_000_000_000u64;
    let mut reg = Registrar::new(cfg, NonceKey::from_secret([3; 32]), t0);
    let mut txns = ServerTransactions::new(100_000, TIMER_J_UDP_MS);
    let hasher = TxnKeyHasher::default();
    let opaque = Opaque(*b"0123456789abcdef");
    let src: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let mut req_buf = Vec::with_capacity(2048);
    let mut out = Vec::with_capacity(2048);
    let ha1 = digest::ha1(Algorithm::Md5, b"alice", REALM.as_bytes(), b"pw-123456");

    let mut req2 = Vec::with_capacity(2048);
    let mut round = |i: u64,
                     now: u64,
                     req_buf: &mut Vec<u8>,
                     req2: &mut Vec<u8>,
                     out: &mut Vec<u8>|
     -> (u16, u16) {
        // 1. no Authorization -> 401
        register(req_buf, 2 * i, 1, None);
        let msg = scan(req_buf).expect("scan");
        let req = request_headers(&msg).expect("headers");
        let k = hasher.key(&req, b"sip:sbc.test");
        assert!(txns.lookup(k).is_none());
        let (a, _) = reg.handle_register(now, src, Transport::Udp, &msg, &req, &snap);
        txns.complete(k, a, now);
        write_answer(
            out,
            &a,
            &reg,
            &msg,
            &req,
            REALM.as_bytes(),
            src,
            b"totag",
            &opaque,
            now,
        );
        let Answer::Challenge { nonce, .. } = a else {
            panic!("{a:?}")
        };
        let first = a.code();
        // 2. with Authorization -> 200 (binding refreshed)
        let resp = digest::response(
            Algorithm::Md5,
            ha1.as_bytes(),
            b"REGISTER",
            b"sip:sbc.test",
            nonce.text().as_bytes(),
            Some(Qop {
                qop: b"auth",
                nc: b"00000001",
                cnonce: b"0a4f113b",
            }),
        );
        register(
            req2,
            2 * i + 1,
            2,
            Some((nonce.text().as_str(), resp.as_str())),
        );
        let msg = scan(req2).expect("scan");
        let req = request_headers(&msg).expect("headers");
        let k = hasher.key(&req, b"sip:sbc.test");
        let (a, _) = reg.handle_register(now, src, Transport::Udp, &msg, &req, &snap);
        txns.complete(k, a, now);
        write_answer(
            out,
            &a,
            &reg,
            &msg,
            &req,
            REALM.as_bytes(),
            src,
            b"totag",
            &opaque,
            now,
        );
        // a retransmission is answered from the transaction's recipe
        let again = txns.lookup(k).expect("completed transaction");
        write_answer(
            out,
            &again,
            &reg,
            &msg,
            &req,
            REALM.as_bytes(),
            src,
            b"totag",
            &opaque,
            now,
        );
        // what the worker's timer tick does: expire bindings and transactions, and hand the
        // changed bindings to persistence (whose batch is built once a second, off this path)
        reg.expire(now);
        txns.expire(now);
        reg.drain_dirty(|_| {});
        (first, a.code())
    };

    // warm up past one binding lifetime (300 s at one round a second): the expiry wheel, the
    // transaction table and the buffers reach their working size
    for i in 0..1_000 {
        assert_eq!(
            round(i, t0 + i * 1_000, &mut req_buf, &mut req2, &mut out),
            (401, 200)
        );
    }
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let mut codes = (0, 0);
    for i in 1_000..3_000 {
        codes = round(i, t0 + i * 1_000, &mut req_buf, &mut req2, &mut out);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(codes, (401, 200));
    let allocs = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations while answering 4,000 REGISTERs"
    );
}
