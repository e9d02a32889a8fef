//! One whole registration in user space, as a worker does it, without sockets: for each of the
//! two REGISTERs (the challenge round and the authenticated one) scan, validate, look the
//! transaction up, run the registrar (nonce mint and check, digest verification, binding
//! refresh), complete the transaction and write the response. What the kernel does around it
//! (receive, send, wake-ups) is not here; `perf/register.sh` measures the whole.
//!
//! `cargo bench --bench register`. The client's side (building the requests, computing the
//! digest response: two MD5s) runs inside the timed loop too and is measured apart as
//! `register/client_only`, so the server's share is the difference.
//!
//! Every iteration is a new transaction (a new branch), so the transaction table fills up to
//! its cap and then churns as in a loaded worker: its cache misses are part of the figure.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sipedge::config::{OnConflict, RegistrarConfig};
use sipedge::registrar::response::{write_answer, Opaque};
use sipedge::registrar::{Answer, Registrar, Transport};
use sipedge::sip::digest::{self, Algorithm, NonceKey, Qop};
use sipedge::sip::headers::request_headers;
use sipedge::sip::scan::scan;
use sipedge::sip::transaction::{ServerTransactions, TxnKeyHasher, TIMER_J_UDP_MS};
use sipedge::store::snapshot::{credential_key, CredentialAuth, HashPair, Snapshot};
use std::io::Write;
use std::net::SocketAddr;

const REALM: &str = "sbc.test";
/// Users registering in turn: enough that their states do not all sit in L1.
const USERS: u64 = 2_000;
/// A worker's cap (`MAX_TRANSACTIONS` in runtime/worker.rs).
const TXNS: usize = 2_000_000;

fn user(i: u64) -> String {
    format!("user{:05}", i % USERS)
}

/// The loadgen's REGISTER (perf/loadgen), optionally with credentials.
fn request(buf: &mut Vec<u8>, seq: u64, cseq: u32, auth: Option<(&str, &str)>) {
    let u = user(seq);
    buf.clear();
    let _ = write!(
        buf,
        "REGISTER sip:{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:40000;rport;branch=z9hG4bK-1f-{seq}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{u}@{REALM}>;tag=lg{seq}\r\n\
         To: <sip:{u}@{REALM}>\r\n\
         Call-ID: lg{seq}@sipedge-loadgen\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{u}@127.0.0.1:40000>\r\n\
         Expires: 3600\r\n\
         User-Agent: sipedge-loadgen\r\n"
    );
    if let Some((nonce, response)) = auth {
        let _ = write!(
            buf,
            "Authorization: Digest username=\"{u}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
             uri=\"sip:{REALM}\", response=\"{response}\", algorithm=MD5, qop=auth, \
             nc=00000001, cnonce=\"0a4f113b\"\r\n"
        );
    }
    let _ = write!(buf, "Content-Length: 0\r\n\r\n");
}

fn password(i: u64) -> String {
    format!("pw{:05}x", i % USERS)
}

fn snapshot() -> Snapshot {
    let mut snap = Snapshot::empty(REALM);
    for i in 0..USERS {
        let (u, pw) = (user(i), password(i));
        let mut key = smallvec::SmallVec::<[u8; 128]>::new();
        credential_key(u.as_bytes(), REALM.as_bytes(), &mut key);
        let pair = |alg| HashPair {
            ha1: digest::ha1(alg, u.as_bytes(), REALM.as_bytes(), pw.as_bytes()),
            ha1b: digest::ha1b(alg, u.as_bytes(), REALM.as_bytes(), pw.as_bytes()),
        };
        snap.credentials.insert(
            key.as_slice().into(),
            CredentialAuth {
                id: i as i64 + 1,
                username: u.as_str().into(),
                realm: REALM.into(),
                tenant: None,
                md5: Some(pair(Algorithm::Md5)),
                sha256: None,
                max_calls: None,
                max_cps: None,
                policy: Default::default(),
            },
        );
    }
    snap
}

/// The client's digest response for `seq`'s user to `nonce`.
fn answer(ha1: &digest::Hex, ruri: &str, nonce: &str) -> digest::Hex {
    digest::response(
        Algorithm::Md5,
        ha1.as_str().as_bytes(),
        b"REGISTER",
        ruri.as_bytes(),
        nonce.as_bytes(),
        Some(Qop {
            qop: b"auth",
            nc: b"00000001",
            cnonce: b"0a4f113b",
        }),
    )
}

/// A worker's registration state, and the client's, without sockets.
struct Bench {
    reg: Registrar,
    txns: ServerTransactions<Answer>,
    hasher: TxnKeyHasher,
    snap: Snapshot,
    opaque: Opaque,
    src: SocketAddr,
    ha1s: Vec<digest::Hex>,
    ruri: String,
    req: Vec<u8>,
    out: Vec<u8>,
    nonce: String,
    t0: u64,
}

impl Bench {
    fn new() -> Bench {
        let cfg = RegistrarConfig {
            realm: REALM.into(),
            min_interval_s: 0,
            throttle_status: 429,
            max_expires_s: 3600,
            min_expires_s: 60,
            nonce_ttl_s: 300,
            max_contacts: 1,
            on_conflict: OnConflict::Replace,
            algorithms: vec![Algorithm::Md5],
        };
        let ha1s = (0..USERS)
            .map(|i| {
                let (u, pw) = (user(i), password(i));
                digest::ha1(
                    Algorithm::Md5,
                    u.as_bytes(),
                    REALM.as_bytes(),
                    pw.as_bytes(),
                )
            })
            .collect();
        let t0 = 1_800_000_000_000u64;
        Bench {
            reg: Registrar::new(cfg, NonceKey::from_secret([3; 32]), t0),
            txns: ServerTransactions::new(TXNS, TIMER_J_UDP_MS),
            hasher: TxnKeyHasher::default(),
            snap: snapshot(),
            opaque: Opaque(*b"0123456789abcdef"),
            src: "127.0.0.1:40000".parse().expect("address"),
            ha1s,
            ruri: format!("sip:{REALM}"),
            req: Vec::with_capacity(2048),
            out: Vec::with_capacity(2048),
            nonce: String::with_capacity(64),
            t0,
        }
    }

    /// The client's share alone: both requests and the digest response.
    fn client_only(&mut self, seq: u64) -> usize {
        request(&mut self.req, seq, 1, None);
        let nonce = "00000000691f2c40000000005a5a5a5a5a5a5a5a5a5a5a5a";
        let resp = answer(&self.ha1s[(seq % USERS) as usize], &self.ruri, nonce);
        request(&mut self.req, seq, 2, Some((nonce, resp.as_str())));
        self.req.len()
    }

    /// Registration `seq`: REGISTER, 401, REGISTER with credentials, 200. The status codes.
    fn registration(&mut self, seq: u64) -> [u16; 2] {
        let now = self.t0 + seq / 50; // 50,000 registrations a second of simulated time
        let mut codes = [0u16; 2];
        for (round, code) in codes.iter_mut().enumerate() {
            if round == 0 {
                request(&mut self.req, seq, 1, None);
            } else {
                let resp = answer(&self.ha1s[(seq % USERS) as usize], &self.ruri, &self.nonce);
                request(&mut self.req, seq, 2, Some((&self.nonce, resp.as_str())));
            }
            let Ok(msg) = scan(&self.req) else { break };
            let Ok(rh) = request_headers(&msg) else { break };
            let key = self.hasher.key(&rh, self.ruri.as_bytes());
            let a = match self.txns.lookup(key) {
                Some(a) => a,
                None => {
                    let snap = &self.snap;
                    let (a, _) =
                        self.reg
                            .handle_register(now, self.src, Transport::Udp, &msg, &rh, snap);
                    self.txns.complete(key, a, now);
                    a
                }
            };
            let realm = self.snap.realm_for_host(rh.to.uri.host);
            write_answer(
                &mut self.out,
                &a,
                &self.reg,
                &msg,
                &rh,
                realm,
                self.src,
                b"totag",
                &self.opaque,
                now,
            );
            if let Answer::Challenge { nonce, .. } = a {
                self.nonce.clear();
                self.nonce.push_str(nonce.text().as_str());
            }
            *code = a.code();
        }
        self.txns.expire_some(now, 4);
        codes
    }
}

fn benches(c: &mut Criterion) {
    let mut b = Bench::new();
    let mut seq = 0u64;
    let mut g = c.benchmark_group("register");
    g.bench_function("client_only", |i| {
        i.iter(|| {
            seq += 1;
            b.client_only(black_box(seq))
        })
    });
    g.bench_function("challenge_and_register", |i| {
        i.iter(|| {
            seq += 1;
            black_box(b.registration(seq))
        })
    });
    g.finish();
    // The bench measured what it claims: a 401 and then a 200.
    assert_eq!(b.registration(seq + 1), [401, 200]);
}

criterion_group!(register_benches, benches);
criterion_main!(register_benches);
