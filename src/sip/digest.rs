//! HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760): HA1 computation,
//! response verification, and stateless nonces.
//!
//! Owns: the arithmetic of digest. Knows nothing of credentials storage or policy (the registrar
//! decides what a failure means). Verification never allocates: hashes are streamed and hex is
//! written into fixed stack buffers.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

type HmacSha256 = Hmac<Sha256>;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Seconds a nonce may claim to come from the future (clock steps between workers/instances
/// sharing a secret) before it is treated as forged.
pub const NONCE_FUTURE_SKEW_S: u64 = 5;

/// Digest hash algorithms offered and accepted (RFC 8760). `-sess` variants are not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// "MD5" / "SHA-256", case-insensitive; anything else None.
    pub fn parse(name: &[u8]) -> Option<Algorithm> {
        if name.eq_ignore_ascii_case(b"MD5") {
            Some(Algorithm::Md5)
        } else if name.eq_ignore_ascii_case(b"SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }
    /// The token written in challenges: "MD5" or "SHA-256".
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
    /// Hex digest length: 32 or 64.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }
}

/// A lower-case hex digest in a fixed buffer (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex {
    buf: [u8; 64],
    len: u8,
}

impl Hex {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
    pub fn as_str(&self) -> &str {
        // Only ever filled by `from_digest` with ASCII hex digits.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// A stored hash (32 hex chars for MD5, 64 for SHA-256, either case), kept lower-case.
    pub fn from_hex_str(s: &str) -> Option<Hex> {
        let b = s.as_bytes();
        if !(b.len() == 32 || b.len() == 64) || !b.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut h = Hex {
            buf: [0u8; 64],
            len: b.len() as u8,
        };
        for (d, c) in h.buf.iter_mut().zip(b) {
            *d = c.to_ascii_lowercase();
        }
        Some(h)
    }

    /// Lower-case hex of a digest output (16 or 32 bytes).
    fn from_digest(bytes: &[u8]) -> Hex {
        let mut h = Hex {
            buf: [0u8; 64],
            len: 0,
        };
        let n = bytes.len().min(32);
        write_hex(&bytes[..n], &mut h.buf[..n * 2]);
        h.len = (n * 2) as u8;
        h
    }
}

/// Writes `src` as lower-case hex into `dst` (`dst.len() == 2 * src.len()`).
fn write_hex(src: &[u8], dst: &mut [u8]) {
    for (i, b) in src.iter().enumerate() {
        dst[2 * i] = HEX_DIGITS[(b >> 4) as usize];
        dst[2 * i + 1] = HEX_DIGITS[(b & 0x0f) as usize];
    }
}

/// Value of each lower-case hex digit; 0xff for upper case and anything else.
static LOWER_HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// H(p0 p1 ... pn), streamed. (Gathering the parts into one stack buffer first saves ~300
/// instructions a registration under callgrind, but `cargo bench --bench digest` measured it
/// 3-8 % slower: the buffer's zeroing and copies cost more than the per-part bookkeeping.)
fn hash_parts(alg: Algorithm, parts: &[&[u8]]) -> Hex {
    match alg {
        Algorithm::Md5 => {
            let mut d = Md5::new();
            for p in parts {
                d.update(p);
            }
            Hex::from_digest(&d.finalize())
        }
        Algorithm::Sha256 => {
            let mut d = Sha256::new();
            for p in parts {
                d.update(p);
            }
            Hex::from_digest(&d.finalize())
        }
    }
}

impl std::fmt::Debug for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HA1 = H(username:realm:password)
pub fn ha1(alg: Algorithm, username: &[u8], realm: &[u8], password: &[u8]) -> Hex {
    //= https://www.rfc-editor.org/rfc/rfc2617#section-3.2.2.2
    //# A1 = unq(username-value) ":" unq(realm-value) ":" passwd
    hash_parts(alg, &[username, b":", realm, b":", password])
}
/// HA1b = H(username@realm:realm:password) (seed 003's Hash1b)
pub fn ha1b(alg: Algorithm, username: &[u8], realm: &[u8], password: &[u8]) -> Hex {
    hash_parts(alg, &[username, b"@", realm, b":", realm, b":", password])
}

/// The `qop=auth` parameters of a response; absent for RFC 2069-style (no qop) responses.
#[derive(Clone, Copy, Debug)]
pub struct Qop<'a> {
    pub qop: &'a [u8],
    pub nc: &'a [u8],
    pub cnonce: &'a [u8],
}

/// request-digest = H(HA1:nonce[:nc:cnonce:qop]:HA2), HA2 = H(method:uri)
pub fn response(
    alg: Algorithm,
    ha1_hex: &[u8],
    method: &[u8],
    uri: &[u8],
    nonce: &[u8],
    qop: Option<Qop<'_>>,
) -> Hex {
    response_with_ha2(alg, ha1_hex, &ha2(alg, method, uri), nonce, qop)
}

/// HA2 = H(A2) with A2 = Method ":" digest-uri-value (RFC 2617 §3.2.2.3, qop=auth or none).
/// Every REGISTER of a realm hashes the same A2, so callers may keep it (see [`Ha2Memo`]).
pub fn ha2(alg: Algorithm, method: &[u8], uri: &[u8]) -> Hex {
    //= https://www.rfc-editor.org/rfc/rfc2617#section-3.2.2.3
    //# A2 = Method ":" digest-uri-value
    hash_parts(alg, &[method, b":", uri])
}

/// [`response`] with HA2 already computed.
pub fn response_with_ha2(
    alg: Algorithm,
    ha1_hex: &[u8],
    ha2: &Hex,
    nonce: &[u8],
    qop: Option<Qop<'_>>,
) -> Hex {
    //= https://www.rfc-editor.org/rfc/rfc2617#section-3.2.2.1
    //# request-digest = <"> < KD ( H(A1), unq(nonce-value) ":" nc-value ":" unq(cnonce-value)
    //#                      ":" unq(qop-value) ":" H(A2) ) <">
    match qop {
        Some(q) => hash_parts(
            alg,
            &[
                ha1_hex,
                b":",
                nonce,
                b":",
                q.nc,
                b":",
                q.cnonce,
                b":",
                q.qop,
                b":",
                ha2.as_bytes(),
            ],
        ),
        // RFC 2069 compatibility: KD(H(A1), nonce ":" H(A2))
        None => hash_parts(alg, &[ha1_hex, b":", nonce, b":", ha2.as_bytes()]),
    }
}

/// The last HA2 computed, with what it was computed from: a registrar sees the same method and
/// digest URI (`REGISTER`, `sip:<realm>`) in nearly every request, and a hit saves a hash.
#[derive(Default)]
pub struct Ha2Memo {
    /// (algorithm, method ++ uri, method length, HA2)
    last: Option<(Algorithm, SmallVec<[u8; 64]>, usize, Hex)>,
}

impl Ha2Memo {
    pub fn get(&mut self, alg: Algorithm, method: &[u8], uri: &[u8]) -> Hex {
        if let Some((a, key, split, h)) = &self.last {
            let (m, u) = key.split_at(*split);
            if *a == alg && m == method && u == uri {
                return *h;
            }
        }
        let h = ha2(alg, method, uri);
        let mut key = SmallVec::new();
        key.extend_from_slice(method);
        key.extend_from_slice(uri);
        self.last = Some((alg, key, method.len(), h));
        h
    }
}

/// Constant-time check of the client's response against the expected one (case-insensitive
/// hex), HA2 given.
pub fn verify_with_ha2(
    alg: Algorithm,
    ha1_hex: &[u8],
    ha2: &Hex,
    nonce: &[u8],
    qop: Option<Qop<'_>>,
    client_response: &[u8],
) -> bool {
    // The length is public (it is fixed by the algorithm), only the content must not leak.
    if client_response.len() != alg.hex_len() {
        return false;
    }
    let expected = response_with_ha2(alg, ha1_hex, ha2, nonce, qop);
    ct_eq_hex_ci(expected.as_bytes(), client_response)
}

/// Constant-time comparison of the expected response with the client's (case-insensitive hex).
pub fn verify(
    alg: Algorithm,
    ha1_hex: &[u8],
    method: &[u8],
    uri: &[u8],
    nonce: &[u8],
    qop: Option<Qop<'_>>,
    client_response: &[u8],
) -> bool {
    verify_with_ha2(
        alg,
        ha1_hex,
        &ha2(alg, method, uri),
        nonce,
        qop,
        client_response,
    )
}

/// Constant-time equality of lower-case `expected` with `client`, folding client A-F to a-f
/// without a data-dependent branch. Lengths must be equal (checked by the caller).
fn ct_eq_hex_ci(expected: &[u8], client: &[u8]) -> bool {
    if expected.len() != client.len() {
        return false;
    }
    let mut diff = 0u8;
    for (&e, &c) in expected.iter().zip(client.iter()) {
        // 1 when c is in 'A'..='F', else 0; computed arithmetically.
        let upper = (c.wrapping_sub(b'A') < 6) as u8;
        diff |= e ^ (c | (upper << 5));
    }
    std::hint::black_box(diff) == 0
}

/// Parses an `nc` value (8 hex digits per RFC 2617; accept 1..=8).
pub fn parse_nc(nc: &[u8]) -> Option<u32> {
    if nc.is_empty() || nc.len() > 8 {
        return None;
    }
    let mut v = 0u32;
    for &c in nc {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u32;
    }
    Some(v)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Minted by this key; `issued` is the unix second it was minted.
    Valid { issued: u64 },
    /// Minted by this key but older than the TTL.
    Stale,
    /// Not minted by this key (forged, corrupted, another instance's secret).
    Forged,
}

/// A minted nonce in its binary form (issued, salt, MAC: 24 bytes, half its text), so answers
/// remembered for retransmissions stay small. [`Nonce::text`] spells it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    raw: [u8; NONCE_RAW_LEN],
}

impl Nonce {
    /// The nonce as it appears on the wire (lower-case hex), no allocation.
    pub fn text(&self) -> NonceText {
        let mut t = NonceText { buf: [0u8; 48] };
        write_hex(&self.raw, &mut t.buf);
        t
    }
}

impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// Fixed-size nonce text (hex).
pub struct NonceText {
    buf: [u8; 2 * NONCE_RAW_LEN],
}

impl NonceText {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    pub fn as_str(&self) -> &str {
        // Only ever filled by `write_hex` with ASCII hex digits.
        std::str::from_utf8(&self.buf).unwrap_or("")
    }
}

/// Bytes of a decoded nonce: 8 issued + 4 salt + 12 MAC.
const NONCE_RAW_LEN: usize = 24;
const NONCE_MAC_LEN: usize = 12;

/// The salt's top bit names the tag: set, SipHash-2-4 (every nonce minted now); clear,
/// HMAC-SHA256 (nonces minted before the change, still accepted until they expire).
const SIPHASH_SALT_BIT: u32 = 0x8000_0000;

/// Stateless nonces: hex(issued_unix_s u64 BE || salt u32 || tag[..12]), the tag a MAC of
/// issued||salt keyed from the process's secret. Any worker can verify any nonce minted by a key
/// with the same secret.
///
/// The tag is SipHash-2-4 with a 128-bit output: a keyed PRF made for short inputs, as the
/// kernel's SYN cookies use it. Nothing else is needed of the tag than that nonces cannot be
/// minted without the key. HMAC-SHA256 had cost ~260 ns per registration (mint plus check, even
/// with SHA-NI), ~5 % of a worker's user time per registration. Nonces with the HMAC tag are
/// still verified (their salt's top bit is clear), so an upgrade does not turn every PBX's
/// current nonce into an authentication failure, which from a PBX with many accounts behind one
/// address would add up to a ban.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
    /// SipHash keys, derived from `secret` (HMAC-SHA256 of a label), not the secret's own bytes.
    sip: (u64, u64),
    /// The legacy tag: HMAC keyed with `secret`, inner/outer pads already absorbed, so each
    /// check clones it and hashes 12 bytes (2 SHA-256 blocks instead of 4).
    mac: HmacSha256,
    /// Shared by every clone (every worker's registrar): salts in minting order, process-wide.
    sequence: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl NonceKey {
    /// A fresh random secret (one per process).
    pub fn random() -> NonceKey {
        NonceKey::from_secret(rand::random::<[u8; 32]>())
    }
    pub fn from_secret(secret: [u8; 32]) -> NonceKey {
        // RFC 2104 zero-pads a key shorter than the block to the block size, so keying with the
        // padded 64-byte block is the same MAC, through the infallible fixed-size constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&secret);
        let mac = <HmacSha256 as hmac::digest::KeyInit>::new(&block.into());
        let mut derive = mac.clone();
        derive.update(b"sipedge nonce tag: SipHash-2-4 key");
        let k = derive.finalize().into_bytes();
        let half = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[i..i + 8]);
            u64::from_le_bytes(b)
        };
        NonceKey {
            secret,
            sip: (half(0), half(8)),
            mac,
            sequence: Default::default(),
        }
    }

    /// The next salt: a process-wide sequence, so `(issued, salt)` orders nonces by when they
    /// were minted whichever worker minted them (one atomic add per challenge; the registrar's
    /// nonce-count tracking evicts by that order). `mint` keeps its low 31 bits, so nonces' salts
    /// wrap after 2^31 challenges; `issued` keeps the order across the wrap except within its one
    /// second.
    pub fn next_salt(&self) -> u32 {
        self.sequence
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
    }

    /// The secret (for sharing it with other instances).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    fn sip_tag(&self, head: &[u8; 12]) -> [u8; 16] {
        use siphasher::sip128::{Hasher128, SipHasher24};
        use std::hash::Hasher;
        let mut h = SipHasher24::new_with_keys(self.sip.0, self.sip.1);
        h.write(head);
        h.finish128().as_bytes()
    }

    fn hmac_tag(&self, head: &[u8; 12]) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(head);
        m
    }

    /// `salt` makes nonces minted in the same second distinct (e.g. [`NonceKey::next_salt`]).
    /// Its top bit is set in the nonce: it marks the SipHash tag.
    pub fn mint(&self, now_unix_s: u64, salt: u32) -> Nonce {
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..8].copy_from_slice(&now_unix_s.to_be_bytes());
        raw[8..12].copy_from_slice(&(salt | SIPHASH_SALT_BIT).to_be_bytes());
        let mut head = [0u8; 12];
        head.copy_from_slice(&raw[..12]);
        raw[12..].copy_from_slice(&self.sip_tag(&head)[..NONCE_MAC_LEN]);
        Nonce { raw }
    }

    /// A nonce with the HMAC-SHA256 tag, as minted before SipHash: for the tests that show
    /// such nonces are still accepted.
    #[cfg(test)]
    fn mint_hmac(&self, now_unix_s: u64, salt: u32) -> Nonce {
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..8].copy_from_slice(&now_unix_s.to_be_bytes());
        raw[8..12].copy_from_slice(&(salt & !SIPHASH_SALT_BIT).to_be_bytes());
        let mut head = [0u8; 12];
        head.copy_from_slice(&raw[..12]);
        let tag = self.hmac_tag(&head).finalize().into_bytes();
        raw[12..].copy_from_slice(&tag[..NONCE_MAC_LEN]);
        Nonce { raw }
    }

    /// Never panics: any length or content that is not a nonce of this key is `Forged`. Only the
    /// lower-case form that `mint` writes is accepted, so one nonce has one spelling (replay
    /// tracking may key on the text). A nonce more than `NONCE_FUTURE_SKEW_S` in the future is
    /// `Forged`; one older than `ttl_s` is `Stale`.
    pub fn check(&self, nonce: &[u8], now_unix_s: u64, ttl_s: u64) -> NonceCheck {
        if nonce.len() != 2 * NONCE_RAW_LEN {
            return NonceCheck::Forged;
        }
        let mut raw = [0u8; NONCE_RAW_LEN];
        let mut bad = 0u8;
        for (r, pair) in raw.iter_mut().zip(nonce.chunks_exact(2)) {
            let (hi, lo) = (LOWER_HEX[pair[0] as usize], LOWER_HEX[pair[1] as usize]);
            bad |= hi | lo;
            *r = (hi << 4) | (lo & 0x0f);
        }
        // A non-digit is 0xff, so bit 4 (never set in a digit's value) flags it.
        if bad & 0x10 != 0 {
            return NonceCheck::Forged;
        }
        let mut head = [0u8; 12];
        head.copy_from_slice(&raw[..12]);
        // Tags are compared in constant time.
        let salt = u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let genuine = if salt & SIPHASH_SALT_BIT != 0 {
            let want = self.sip_tag(&head);
            let diff = want[..NONCE_MAC_LEN]
                .iter()
                .zip(&raw[12..])
                .fold(0u8, |d, (a, b)| d | (a ^ b));
            std::hint::black_box(diff) == 0
        } else {
            self.hmac_tag(&head)
                .verify_truncated_left(&raw[12..])
                .is_ok()
        };
        if !genuine {
            return NonceCheck::Forged;
        }
        let mut issued_be = [0u8; 8];
        issued_be.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(issued_be);
        if issued > now_unix_s.saturating_add(NONCE_FUTURE_SKEW_S) {
            return NonceCheck::Forged;
        }
        if now_unix_s.saturating_sub(issued) > ttl_s {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid { issued }
    }
}

/// The `(issued, salt)` a well-formed nonce carries, for ordering nonces of one credential
/// (call after [`NonceKey::check`] said it is valid). Minting with a salt that grows within the
/// second makes this order chronological.
pub fn nonce_order(nonce: &[u8]) -> Option<(u64, u32)> {
    let mut v: u128 = 0;
    for &c in nonce.get(..24)? {
        let d = LOWER_HEX[c as usize];
        if d > 0x0f {
            return None;
        }
        v = (v << 4) | u128::from(d);
    }
    Some(((v >> 32) as u64, v as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_key_is_the_same_hmac_as_the_short_key() {
        let secret = [0x5au8; 32];
        let mut short = <HmacSha256 as Mac>::new_from_slice(&secret).unwrap();
        let mut padded = NonceKey::from_secret(secret).mac.clone();
        short.update(b"issued+salt!");
        padded.update(b"issued+salt!");
        assert_eq!(
            short.finalize().into_bytes(),
            padded.finalize().into_bytes()
        );
    }

    #[test]
    fn nonce_order_reads_issued_and_salt() {
        let key = NonceKey::from_secret([1; 32]);
        let n = key.mint(1_700_000_000, 0xdead_beef).text();
        assert_eq!(
            nonce_order(n.as_bytes()),
            Some((1_700_000_000, 0xdead_beef))
        );
        assert_eq!(nonce_order(b"zz"), None);
    }

    fn auth<'a>(nc: &'a [u8], cnonce: &'a [u8]) -> Option<Qop<'a>> {
        Some(Qop {
            qop: b"auth",
            nc,
            cnonce,
        })
    }

    #[test]
    fn hex_from_stored_strings() {
        let h = Hex::from_hex_str("93152819B63A1DC050665E544E015EEC").expect("32 hex");
        assert_eq!(h.as_str(), "93152819b63a1dc050665e544e015eec");
        assert!(Hex::from_hex_str(&"a".repeat(64)).is_some());
        assert!(Hex::from_hex_str("abc").is_none());
        assert!(Hex::from_hex_str(&"g".repeat(32)).is_none());
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(Algorithm::parse(b"md5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse(b"MD5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse(b"sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse(b"MD5-sess"), None);
        assert_eq!(Algorithm::parse(b"SHA-512-256"), None);
        assert_eq!(Algorithm::parse(b""), None);
        assert_eq!(Algorithm::Md5.name(), "MD5");
        assert_eq!(Algorithm::Sha256.name(), "SHA-256");
        assert_eq!(Algorithm::Md5.hex_len(), 32);
        assert_eq!(Algorithm::Sha256.hex_len(), 64);
    }

    //= https://www.rfc-editor.org/rfc/rfc2617#section-3.5
    #[test]
    fn rfc2617_example() {
        let h = ha1(
            Algorithm::Md5,
            b"Mufasa",
            b"testrealm@host.com",
            b"Circle Of Life",
        );
        assert_eq!(h.as_str(), "939e7578ed9e3c518a452acee763bce9");
        let nonce = b"dcd98b7102dd2f0e8b11d0f600bfb0c093";
        let r = response(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
        );
        assert_eq!(r.as_str(), "6629fae49393a05397450978507c4ef1");
        assert!(verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b"6629fae49393a05397450978507c4ef1"
        ));
        // Clients may send upper-case hex.
        assert!(verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b"6629FAE49393A05397450978507C4EF1"
        ));
        // Wrong nc, wrong method, truncated, one digit off, non-hex.
        assert!(!verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000002", b"0a4f113b"),
            b"6629fae49393a05397450978507c4ef1"
        ));
        assert!(!verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"REGISTER",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b"6629fae49393a05397450978507c4ef1"
        ));
        assert!(!verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b"6629fae49393a05397450978507c4ef"
        ));
        assert!(!verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b"6629fae49393a05397450978507c4ef0"
        ));
        assert!(!verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b"6629fae49393a05397450978507c4e\x0f1"
        ));
        assert!(!verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b""
        ));
        // 'G'..'Z' are not folded into hex digits.
        assert!(!verify(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            nonce,
            auth(b"00000001", b"0a4f113b"),
            b"6629fae49393a05397450978507c4eG1"
        ));
    }

    //= https://www.rfc-editor.org/rfc/rfc7616#section-3.9.1
    const R7616_NONCE: &[u8] = b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const R7616_CNONCE: &[u8] = b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    #[test]
    fn rfc7616_sha256_example() {
        let h = ha1(
            Algorithm::Sha256,
            b"Mufasa",
            b"http-auth@example.org",
            b"Circle of Life",
        );
        assert_eq!(h.as_bytes().len(), 64);
        let r = response(
            Algorithm::Sha256,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            R7616_NONCE,
            auth(b"00000001", R7616_CNONCE),
        );
        assert_eq!(
            r.as_str(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(verify(
            Algorithm::Sha256,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            R7616_NONCE,
            auth(b"00000001", R7616_CNONCE),
            r.as_bytes()
        ));
        // An MD5-length answer to a SHA-256 challenge is wrong, not a panic.
        assert!(!verify(
            Algorithm::Sha256,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            R7616_NONCE,
            auth(b"00000001", R7616_CNONCE),
            &r.as_bytes()[..32]
        ));
    }

    #[test]
    fn rfc7616_md5_example() {
        let h = ha1(
            Algorithm::Md5,
            b"Mufasa",
            b"http-auth@example.org",
            b"Circle of Life",
        );
        let r = response(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            R7616_NONCE,
            auth(b"00000001", R7616_CNONCE),
        );
        assert_eq!(r.as_str(), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc2069_no_qop() {
        // KD(HA1, nonce:HA2) computed independently: md5("939e...:dcd9...:" + md5("GET:/dir/index.html"))
        let h = ha1(
            Algorithm::Md5,
            b"Mufasa",
            b"testrealm@host.com",
            b"Circle Of Life",
        );
        let ha2 = hash_parts(Algorithm::Md5, &[b"GET:/dir/index.html"]);
        let manual = hash_parts(
            Algorithm::Md5,
            &[
                h.as_bytes(),
                b":dcd98b7102dd2f0e8b11d0f600bfb0c093:",
                ha2.as_bytes(),
            ],
        );
        let r = response(
            Algorithm::Md5,
            h.as_bytes(),
            b"GET",
            b"/dir/index.html",
            b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
            None,
        );
        assert_eq!(r, manual);
        assert_eq!(ha2.as_str(), "39aff3a2bab6126f332b942af96d3366");
    }

    // Seed 003: Hash1 = md5("sipauthtest:realmname.<randomAccountHex>.auth.bandwidth.com:password").
    const SEED_USER: &[u8] = b"sipauthtest";
    const SEED_REALM: &[u8] = b"realmname.<randomAccountHex>.auth.bandwidth.com";

    #[test]
    fn seed003_hash1() {
        let h = ha1(Algorithm::Md5, SEED_USER, SEED_REALM, b"password");
        // `printf %s 'sipauthtest:realmname.<randomAccountHex>.auth.bandwidth.com:password' | md5sum`
        assert_eq!(h.as_str(), "2e1dabb8acfd6778d47992ef123896a4");
        // The seed prints 93152819b63a1dc050665e544e015eec for that string, but it is not the MD5 of
        // the literal text (the document substituted the placeholder after hashing a real account
        // hex). Checked literally, it does not match: the formula is what we implement.
        assert_ne!(h.as_str(), "93152819b63a1dc050665e544e015eec");
    }

    #[test]
    fn seed003_hash1b_shape() {
        let b = ha1b(Algorithm::Md5, SEED_USER, SEED_REALM, b"password");
        // `printf %s 'sipauthtest@R:R:password' | md5sum` with R = the seed realm.
        assert_eq!(b.as_str(), "722d6932c18fa44fe7457e8ce0bd849d");
        assert_eq!(b.as_bytes().len(), 32);
        assert!(b
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        // HA1b is HA1 of user "user@realm".
        let user_at = b"sipauthtest@realmname.<randomAccountHex>.auth.bandwidth.com";
        assert_eq!(b, ha1(Algorithm::Md5, user_at, SEED_REALM, b"password"));
        // SHA-256 forms: the same strings under SHA-256.
        let bs = ha1b(Algorithm::Sha256, SEED_USER, SEED_REALM, b"password");
        assert_eq!(bs, ha1(Algorithm::Sha256, user_at, SEED_REALM, b"password"));
        assert_eq!(bs.as_bytes().len(), 64);
        // Verifying against HA1b with a `user@realm` digest username works like HA1.
        let r = response(
            Algorithm::Md5,
            b.as_bytes(),
            b"REGISTER",
            b"sip:realm",
            b"n",
            auth(b"00000001", b"c"),
        );
        assert!(verify(
            Algorithm::Md5,
            b.as_bytes(),
            b"REGISTER",
            b"sip:realm",
            b"n",
            auth(b"00000001", b"c"),
            r.as_bytes()
        ));
    }

    #[test]
    fn nc_parsing() {
        assert_eq!(parse_nc(b"00000001"), Some(1));
        assert_eq!(parse_nc(b"0000000a"), Some(10));
        assert_eq!(parse_nc(b"0000000A"), Some(10));
        assert_eq!(parse_nc(b"ffffffff"), Some(u32::MAX));
        assert_eq!(parse_nc(b"1"), Some(1));
        assert_eq!(parse_nc(b"10"), Some(16));
        assert_eq!(parse_nc(b""), None);
        assert_eq!(parse_nc(b"000000001"), None);
        assert_eq!(parse_nc(b"0000000g"), None);
        assert_eq!(parse_nc(b"-1"), None);
        assert_eq!(parse_nc(b" 1"), None);
    }

    fn key(b: u8) -> NonceKey {
        NonceKey::from_secret([b; 32])
    }

    #[test]
    fn nonce_round_trip() {
        let k = key(7);
        let now = 1_790_000_000;
        let n = k.mint(now, 42).text();
        assert_eq!(n.as_bytes().len(), 48);
        assert!(n
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert!(n
            .as_str()
            .starts_with(&format!("{:016x}{:08x}", now, 42 | SIPHASH_SALT_BIT)));
        assert_eq!(
            k.check(n.as_bytes(), now, 300),
            NonceCheck::Valid { issued: now }
        );
        assert_eq!(
            k.check(n.as_bytes(), now + 300, 300),
            NonceCheck::Valid { issued: now }
        );
        // The same key from the same secret (another worker or instance) accepts it.
        assert_eq!(
            NonceKey::from_secret(*k.secret()).check(n.as_bytes(), now + 1, 300),
            NonceCheck::Valid { issued: now }
        );
        // Salt makes nonces of the same second distinct.
        assert_ne!(k.mint(now, 1), k.mint(now, 2));
        assert_eq!(k.mint(now, 1), k.mint(now, 1));
        // A random key mints nonces another random key rejects.
        let (a, b) = (NonceKey::random(), NonceKey::random());
        assert_eq!(
            b.check(a.mint(now, 0).text().as_bytes(), now, 300),
            NonceCheck::Forged
        );
        assert!(matches!(
            a.check(a.mint(now, 0).text().as_bytes(), now, 300),
            NonceCheck::Valid { .. }
        ));
    }

    /// Nonces minted with the HMAC-SHA256 tag (before SipHash) still verify, with the same
    /// stale and forgery rules; the salt bit cannot be flipped to move a tag to the other MAC.
    #[test]
    fn nonces_with_the_hmac_tag_are_still_accepted() {
        let k = key(5);
        let now = 1_790_000_000;
        let old = k.mint_hmac(now, 42).text();
        assert!(old.as_str().starts_with(&format!("{:016x}{:08x}", now, 42)));
        assert_eq!(
            k.check(old.as_bytes(), now + 10, 300),
            NonceCheck::Valid { issued: now }
        );
        assert_eq!(k.check(old.as_bytes(), now + 301, 300), NonceCheck::Stale);
        assert_eq!(key(6).check(old.as_bytes(), now, 300), NonceCheck::Forged);
        // The same issued/salt with the other tag kind's bit: forged either way.
        let new = k.mint(now, 42);
        let flip = |n: &str| {
            let mut b = n.as_bytes().to_vec();
            b[16] = if b[16] == b'8' { b'0' } else { b'8' };
            b
        };
        assert_eq!(
            k.check(&flip(new.text().as_str()), now, 300),
            NonceCheck::Forged
        );
        assert_eq!(k.check(&flip(old.as_str()), now, 300), NonceCheck::Forged);
        // Both kinds order by (issued, salt): a new nonce sorts after an old one of its second.
        assert!(nonce_order(new.text().as_bytes()) > nonce_order(old.as_bytes()));
    }

    /// The SipHash key is derived from the secret, not its bytes, and differs per secret.
    #[test]
    fn siphash_keys_are_derived_from_the_secret() {
        let (a, b) = (key(1), key(2));
        assert_ne!(a.sip, b.sip);
        let raw = u64::from_le_bytes([1; 8]);
        assert_ne!(a.sip, (raw, raw));
        assert_eq!(NonceKey::from_secret(*a.secret()).sip, a.sip);
    }

    #[test]
    fn nonce_stale() {
        let k = key(1);
        let n = k.mint(1000, 0).text();
        assert_eq!(k.check(n.as_bytes(), 1301, 300), NonceCheck::Stale);
        assert_eq!(k.check(n.as_bytes(), u64::MAX, 300), NonceCheck::Stale);
        assert_eq!(k.check(n.as_bytes(), 1001, 0), NonceCheck::Stale);
    }

    #[test]
    fn nonce_from_the_future() {
        let k = key(1);
        let n = k.mint(1000, 0).text();
        // Small clock skew between instances is tolerated ...
        assert_eq!(
            k.check(n.as_bytes(), 1000 - NONCE_FUTURE_SKEW_S, 300),
            NonceCheck::Valid { issued: 1000 }
        );
        // ... a nonce from further in the future was not minted by a sane clock.
        assert_eq!(
            k.check(n.as_bytes(), 1000 - NONCE_FUTURE_SKEW_S - 1, 300),
            NonceCheck::Forged
        );
        assert_eq!(k.check(n.as_bytes(), 0, 300), NonceCheck::Forged);
        let far = k.mint(u64::MAX, 0).text();
        assert_eq!(k.check(far.as_bytes(), 1000, u64::MAX), NonceCheck::Forged);
        assert_eq!(
            k.check(far.as_bytes(), u64::MAX, 0),
            NonceCheck::Valid { issued: u64::MAX }
        );
    }

    #[test]
    fn nonce_forged() {
        let k = key(3);
        let now = 5_000;
        let n = k.mint(now, 9).text();
        // Every single flipped hex digit (time, salt or MAC) is detected.
        for i in 0..48 {
            let mut b = [0u8; 48];
            b.copy_from_slice(n.as_bytes());
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            assert_eq!(
                k.check(&b, now, 300),
                NonceCheck::Forged,
                "flipped digit {i}"
            );
        }
        // Another secret.
        assert_eq!(key(4).check(n.as_bytes(), now, 300), NonceCheck::Forged);
        // Upper-case spelling of a valid nonce is not ours.
        let upper = n.as_str().to_ascii_uppercase();
        if upper != n.as_str() {
            assert_eq!(k.check(upper.as_bytes(), now, 300), NonceCheck::Forged);
        }
        // Wrong lengths, garbage, non-hex, non-ASCII.
        assert_eq!(k.check(b"", now, 300), NonceCheck::Forged);
        assert_eq!(k.check(&n.as_bytes()[..47], now, 300), NonceCheck::Forged);
        assert_eq!(k.check(&n.as_bytes()[..46], now, 300), NonceCheck::Forged);
        let mut longer = n.as_bytes().to_vec();
        longer.extend_from_slice(b"00");
        assert_eq!(k.check(&longer, now, 300), NonceCheck::Forged);
        assert_eq!(
            k.check(b"dcd98b7102dd2f0e8b11d0f600bfb0c093", now, 300),
            NonceCheck::Forged
        );
        assert_eq!(k.check(&[b'z'; 48], now, 300), NonceCheck::Forged);
        assert_eq!(k.check(&[0xffu8; 48], now, 300), NonceCheck::Forged);
        assert_eq!(k.check(&[0u8; 48], now, 300), NonceCheck::Forged);
        assert_eq!(k.check(&[b'0'; 48], now, 300), NonceCheck::Forged);
        let mut utf8 = [b'a'; 48];
        utf8[10..12].copy_from_slice("é".as_bytes());
        assert_eq!(k.check(&utf8, now, 300), NonceCheck::Forged);
        // A long pseudo-random sweep of arbitrary bytes never panics and is never valid.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            let mut buf = [0u8; 200];
            for b in buf.iter_mut().take(len) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = if x & 1 == 0 {
                    HEX_DIGITS[(x >> 8) as usize & 15]
                } else {
                    (x >> 16) as u8
                };
            }
            assert_eq!(k.check(&buf[..len], now, 300), NonceCheck::Forged);
        }
    }

    #[test]
    fn hex_from_str() {
        let h = ha1(
            Algorithm::Md5,
            b"Mufasa",
            b"testrealm@host.com",
            b"Circle Of Life",
        );
        assert_eq!(
            Hex::from_hex_str("939e7578ed9e3c518a452acee763bce9"),
            Some(h)
        );
        assert_eq!(
            Hex::from_hex_str("939E7578ED9E3C518A452ACEE763BCE9"),
            Some(h)
        );
        let s = ha1(Algorithm::Sha256, b"a", b"b", b"c");
        assert_eq!(Hex::from_hex_str(s.as_str()), Some(s));
        assert_eq!(Hex::from_hex_str(""), None);
        assert_eq!(Hex::from_hex_str("939e7578ed9e3c518a452acee763bce"), None);
        assert_eq!(Hex::from_hex_str("939e7578ed9e3c518a452acee763bcez"), None);
        assert_eq!(Hex::from_hex_str(&"a".repeat(48)), None);
        assert_eq!(Hex::from_hex_str(&"é".repeat(16)), None);
    }

    #[test]
    fn hex_debug_and_str() {
        let h = ha1(Algorithm::Md5, b"a", b"b", b"c");
        assert_eq!(format!("{h:?}"), h.as_str());
        let n = key(0).mint(1, 1);
        assert_eq!(format!("{n:?}"), n.text().as_str());
    }

    #[test]
    fn ha2_memo_answers_like_ha2() {
        let mut memo = Ha2Memo::default();
        let cases: [(Algorithm, &[u8], &[u8]); 6] = [
            (Algorithm::Md5, b"REGISTER", b"sip:sbc.test"),
            (Algorithm::Md5, b"REGISTER", b"sip:sbc.test"),
            // Same bytes run together, split elsewhere: a different A2.
            (Algorithm::Md5, b"REGISTERs", b"ip:sbc.test"),
            (Algorithm::Sha256, b"REGISTERs", b"ip:sbc.test"),
            (Algorithm::Md5, b"INVITE", b"sip:+15551234567@sbc.test"),
            (Algorithm::Md5, b"REGISTER", b"sip:sbc.test"),
        ];
        for (alg, method, uri) in cases {
            assert_eq!(memo.get(alg, method, uri), ha2(alg, method, uri));
        }
    }
}
