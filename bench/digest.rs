//! Digest hot path: what one authenticated REGISTER costs in sipedge::sip::digest.
//! Run: `cargo bench --bench digest`.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sipedge::sip::digest::{self, Algorithm, NonceKey, Qop};

fn bench_digest(c: &mut Criterion) {
    let key = NonceKey::from_secret([0x5a; 32]);
    let now = 1_790_000_000u64;
    let nonce = key.mint(now, 7).text();
    let uri: &[u8] = b"sip:sbc.test";
    let qop = Qop {
        qop: b"auth",
        nc: b"00000001",
        cnonce: b"6b8b4567327b23c6",
    };

    let ha1_md5 = digest::ha1(Algorithm::Md5, b"user00042", b"sbc.test", b"secretpassword");
    let resp_md5 = digest::response(
        Algorithm::Md5,
        ha1_md5.as_bytes(),
        b"REGISTER",
        uri,
        nonce.as_bytes(),
        Some(qop),
    );
    let ha1_sha = digest::ha1(
        Algorithm::Sha256,
        b"user00042",
        b"sbc.test",
        b"secretpassword",
    );
    let resp_sha = digest::response(
        Algorithm::Sha256,
        ha1_sha.as_bytes(),
        b"REGISTER",
        uri,
        nonce.as_bytes(),
        Some(qop),
    );

    c.bench_function("verify MD5 qop=auth", |b| {
        b.iter(|| {
            digest::verify(
                Algorithm::Md5,
                black_box(ha1_md5.as_bytes()),
                black_box(b"REGISTER"),
                black_box(uri),
                black_box(nonce.as_bytes()),
                Some(black_box(qop)),
                black_box(resp_md5.as_bytes()),
            )
        })
    });
    c.bench_function("verify SHA-256 qop=auth", |b| {
        b.iter(|| {
            digest::verify(
                Algorithm::Sha256,
                black_box(ha1_sha.as_bytes()),
                black_box(b"REGISTER"),
                black_box(uri),
                black_box(nonce.as_bytes()),
                Some(black_box(qop)),
                black_box(resp_sha.as_bytes()),
            )
        })
    });
    let mut salt = 0u32;
    c.bench_function("NonceKey::mint", |b| {
        b.iter(|| {
            salt = salt.wrapping_add(1);
            key.mint(black_box(now), black_box(salt))
        })
    });
    c.bench_function("NonceKey::check", |b| {
        b.iter(|| {
            key.check(
                black_box(nonce.as_bytes()),
                black_box(now + 10),
                black_box(300),
            )
        })
    });
    c.bench_function("ha1 MD5", |b| {
        b.iter(|| {
            digest::ha1(
                Algorithm::Md5,
                black_box(b"user00042"),
                black_box(b"sbc.test"),
                black_box(b"secretpassword"),
            )
        })
    });
}

criterion_group!(benches, bench_digest);
criterion_main!(benches);
