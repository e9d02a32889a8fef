//! The AF_XDP relay's own work per frame (src/media/xdp.rs): read the headers of a received
//! 172-byte RTP frame, then rewrite them in place for the other leg (MACs, addresses, ports,
//! TTL, both checksums over the datagram). What the kernel does around it (the XDP program,
//! the rings, the transmit) is measured by perf/media.sh.
//! Run: `cargo bench --bench frame`.
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sipedge::media::frame::{inbound, rewrite, HEADERS};
use std::net::SocketAddrV4;

/// An Ethernet + IPv4 + UDP frame carrying `payload` bytes of RTP.
fn frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; HEADERS + payload];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
    f[20] = 0x40;
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 51, 100, 7]);
    f[30..34].copy_from_slice(&[192, 0, 2, 1]);
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&20_000u16.to_be_bytes());
    f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    f[HEADERS] = 0x80;
    f
}

fn bench_frame(c: &mut Criterion) {
    let from: SocketAddrV4 = "192.0.2.1:20002".parse().unwrap();
    let to: SocketAddrV4 = "203.0.113.50:31000".parse().unwrap();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    let mut f = frame(172);
    g.bench_function("inbound+rewrite 172-byte RTP", |b| {
        b.iter(|| {
            let p = inbound(black_box(&f)).unwrap();
            rewrite(&mut f, [2, 0, 0, 0, 0, 1], black_box(p.src_mac), from, to);
            black_box(&f);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_frame);
criterion_main!(benches);
