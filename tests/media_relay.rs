//! The media threads over real loopback sockets: RTP relayed both ways through a block's ports,
//! latching to the source an endpoint really sends from, strays dropped and counted, and blocks
//! coming back to the pool when calls end (no leak over 10,000 sessions).
//!
//! Each test runs three times: with the ports steered to one socket per media thread (where the
//! process may attach the BPF program, as root in CI), with a socket polled per port, and with
//! frames through AF_XDP (`media.xdp_interface = "lo"`, one media thread) in a network namespace
//! of the test's own thread, so the XDP program never sees the host's lo.
//! Each run takes its own port range (at most 128 ports) in a zone no other test uses, so tests
//! run in parallel.

#[path = "common/netns.rs"]
mod netns;

use netns::{has_cap, ip};
use sipedge::config::MediaConfig;
use sipedge::media::{Block, Leg, Media, Receive};
use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Media threads over `ports` ports (at most 128) in 62400–65471: above the kernel's ephemeral
/// range and the other tests' media ports; tests of this process take distinct slots.
fn media(ports: u16, receive: Receive) -> Media {
    media_on("127.0.0.1", ports, receive)
}

/// [`media`] with the media threads on `address`.
fn media_on(address: &str, ports: u16, receive: Receive) -> Media {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let slot = (std::process::id().wrapping_mul(7) + n) % 24;
    let base = 62_400 + slot as u16 * 128;
    let xdp = XDP.with(Cell::get);
    let cfg = MediaConfig {
        address: address.into(),
        advertise: String::new(),
        port_min: base,
        port_max: base + ports - 1,
        workers: if xdp { 1 } else { 2 },
        timeout_s: 60,
        xdp_interface: if xdp { "lo".into() } else { String::new() },
    };
    let (m, _threads) =
        Media::start_with(&cfg, "127.0.0.1".parse().unwrap(), &[], receive).expect("media threads");
    let steered = receive == Receive::Steered && may_attach_bpf();
    assert_eq!(m.steered(), steered, "steering as asked for");
    if xdp && !address.contains(':') {
        assert_eq!(m.xdp_queues(), 1, "lo's one queue through AF_XDP");
        STARTED.with(|v| v.borrow_mut().push(m.clone()));
    }
    // Raw sends come with steering, for an IPv4 media address, given CAP_NET_RAW (13).
    if !address.contains(':') {
        assert_eq!(
            m.sends_raw(),
            steered && has_cap(13),
            "raw sends as expected"
        );
    }
    m
}

/// Whether this process holds CAP_BPF (39) and CAP_NET_ADMIN (12), which steering needs.
fn may_attach_bpf() -> bool {
    has_cap(39) && has_cap(12)
}

thread_local! {
    /// Set on a test thread that runs in its own network namespace: media goes through AF_XDP.
    static XDP: Cell<bool> = const { Cell::new(false) };
    /// The media instances started there, to check that frames really took that path.
    static STARTED: RefCell<Vec<Media>> = const { RefCell::new(Vec::new()) };
}

/// Runs `body` on a thread in a network namespace of its own (lo up, and lo's 127.0.0.0/8
/// accepted back from an AF_XDP socket: `media::xdp` says why), with AF_XDP media, and checks
/// that every IPv4 media instance it started relayed packets that way. False when the process
/// may not (no CAP_SYS_ADMIN for the namespace, no CAP_BPF/CAP_NET_ADMIN for XDP).
fn in_own_netns(body: impl FnOnce() + Send + 'static) -> bool {
    if !netns::may_run() {
        eprintln!("skipped: no capabilities for a network namespace with XDP");
        return false;
    }
    netns::on_thread(move || {
        netns::enter_for_xdp_on_lo();
        XDP.with(|x| x.set(true));
        body();
        STARTED.with(|v| {
            use std::sync::atomic::Ordering::Relaxed;
            for m in v.borrow().iter() {
                // A packet in flight while its block is being opened may pass the XDP program
                // just before the block is owned and the steering program just after: it takes
                // the socket path. Every other one leaves frame to frame (on lo every next hop
                // is known). `xdp_frames_and_sockets_split_by_thread` counts exactly.
                let (all, framed) = (
                    m.stats().packets.load(Relaxed),
                    m.stats().xdp_packets.load(Relaxed),
                );
                assert!(
                    all == 0 || framed > 0,
                    "none of {all} relayed through AF_XDP"
                );
            }
        });
    });
    true
}

/// Runs a test body once per way of receiving.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn steered() {
                super::$name(sipedge::media::Receive::Steered)
            }
            #[test]
            fn per_port() {
                super::$name(sipedge::media::Receive::PerPort)
            }
            #[test]
            fn xdp() {
                super::in_own_netns(|| super::$name(sipedge::media::Receive::Steered));
            }
        }
    )*};
}

both!(
    rtp_is_relayed_both_ways_and_counted,
    a_wildcard_media_address_relays_both_ways,
    an_endpoint_sending_from_another_port_than_its_sdp_still_gets_audio,
    a_stray_source_is_not_latched,
    ports_are_freed_when_calls_end,
    a_reused_block_relays_for_its_new_call_only,
    a_call_opened_while_another_is_up_relays_at_once,
);

fn endpoint(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// A 172-byte RTP packet with sequence number `seq`.
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Sends until the relay answers at `to` (the block's sockets open asynchronously).
fn send_until_heard(
    from: &UdpSocket,
    port: u16,
    to: &UdpSocket,
    seq: u16,
) -> (Vec<u8>, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(3);
    to.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        from.send_to(&rtp(seq), ("127.0.0.1", port)).unwrap();
        if let Ok((n, src)) = to.recv_from(&mut buf) {
            to.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            return (buf[..n].to_vec(), src);
        }
    }
    panic!(
        "nothing relayed from {:?} via port {port}",
        from.local_addr()
    );
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, src)| (buf[..n].to_vec(), src))
}

/// A call on a fresh block between `a` (leg A) and `b` (leg B), both signalled in SDP that
/// changed at `at_ms`: the block and each leg's RTP port.
fn call(m: &Media, a: &UdpSocket, b: &UdpSocket, at_ms: u64) -> (Block, u16, u16) {
    let block = m.allocate(0).expect("a block");
    m.set_remote(block, Leg::A, Some(a.local_addr().unwrap()), at_ms);
    m.set_remote(block, Leg::B, Some(b.local_addr().unwrap()), at_ms);
    (block, m.port(block, Leg::A), m.port(block, Leg::B))
}

fn rtp_is_relayed_both_ways_and_counted(receive: Receive) {
    let m = media(16, receive);
    let (caller, callee) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let t = now_ms();
    let (block, pa, pb) = call(&m, &caller, &callee, t);
    assert_eq!(pa % 2, 0, "RTP on an even port");
    assert_eq!(pb, pa + 2, "four ports per call");

    let (pkt, src) = send_until_heard(&caller, pa, &callee, 1);
    assert_eq!(pkt, rtp(1), "relayed byte for byte");
    assert_eq!(
        src,
        SocketAddr::from(([127, 0, 0, 1], pb)),
        "from leg B's port"
    );
    callee.send_to(&rtp(2), ("127.0.0.1", pb)).unwrap();
    let (pkt, src) = recv(&caller).expect("callee's packet reaches the caller");
    assert_eq!(pkt, rtp(2));
    assert_eq!(
        src,
        SocketAddr::from(([127, 0, 0, 1], pa)),
        "from leg A's port"
    );

    // RTCP on the next port pair, latched on its own (the window after the SDP is open).
    let (caller_rtcp, callee_rtcp) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    callee_rtcp.send_to(&rtp(3), ("127.0.0.1", pb + 1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    caller_rtcp.send_to(&rtp(4), ("127.0.0.1", pa + 1)).unwrap();
    assert_eq!(recv(&callee_rtcp).map(|p| p.0), Some(rtp(4)), "RTCP A -> B");
    callee_rtcp.send_to(&rtp(5), ("127.0.0.1", pb + 1)).unwrap();
    assert_eq!(recv(&caller_rtcp).map(|p| p.0), Some(rtp(5)), "RTCP B -> A");

    let counts = m.counts(block);
    assert!(counts.a_packets >= 2 && counts.b_packets >= 2, "{counts:?}");
    assert_eq!(counts.a_bytes, counts.a_packets * 172);
    assert!(m.last_packet_ms(block) >= t);
    let at_end = m.release(block);
    assert_eq!(at_end.a_packets, counts.a_packets);
}

/// An endpoint behind NAT sends from another address than its SDP names: within the window
/// after the SDP, its real source is latched and gets the other side's audio.
fn an_endpoint_sending_from_another_port_than_its_sdp_still_gets_audio(receive: Receive) {
    let m = media(16, receive);
    let (natted, callee) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let block = m.allocate(1).expect("a block");
    let (pa, pb) = (m.port(block, Leg::A), m.port(block, Leg::B));
    let t = now_ms();
    // The SDP names a port nobody listens on.
    m.set_remote(block, Leg::A, Some("127.0.0.1:9".parse().unwrap()), t);
    m.set_remote(block, Leg::B, Some(callee.local_addr().unwrap()), t);
    send_until_heard(&natted, pa, &callee, 1);
    callee.send_to(&rtp(2), ("127.0.0.1", pb)).unwrap();
    let (pkt, _) = recv(&natted).expect("audio back to the latched source");
    assert_eq!(pkt, rtp(2));
    m.release(block);
}

/// Once the window has passed, only the latched source is relayed; others are dropped and
/// counted as strays.
fn a_stray_source_is_not_latched(receive: Receive) {
    let m = media(16, receive);
    let (caller, callee, stray) = (
        endpoint("127.0.0.1"),
        endpoint("127.0.0.1"),
        endpoint("127.0.0.2"),
    );
    // The SDP changed long ago: the window is closed.
    let (block, pa, pb) = call(&m, &caller, &callee, now_ms() - 10_000);
    send_until_heard(&caller, pa, &callee, 1);

    let strays = m
        .stats()
        .dropped_stray
        .load(std::sync::atomic::Ordering::Relaxed);
    for seq in 0..5 {
        stray.send_to(&rtp(100 + seq), ("127.0.0.1", pa)).unwrap();
    }
    callee
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = callee.recv_from(&mut buf) {
        assert_eq!(&buf[..n], &rtp(1)[..], "only the latched caller's packets");
    }
    assert_eq!(
        m.stats()
            .dropped_stray
            .load(std::sync::atomic::Ordering::Relaxed)
            - strays,
        5
    );
    // The callee still reaches the latched caller, not the stray.
    callee.send_to(&rtp(7), ("127.0.0.1", pb)).unwrap();
    assert_eq!(recv(&caller).map(|p| p.0), Some(rtp(7)));
    stray
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(recv(&stray).is_none());
    m.release(block);
}

/// Every block comes back when its call ends: 10,000 sessions through 31 blocks, and at the end
/// every block can be taken at once again.
fn ports_are_freed_when_calls_end(receive: Receive) {
    let m = media(128, receive);
    // The top two ports are the two media threads' own sockets.
    assert_eq!(m.capacity(), 31);
    let mut taken = Vec::new();
    for i in 0..10_000u64 {
        let deadline = Instant::now() + Duration::from_secs(2);
        let b = loop {
            if let Some(b) = m.allocate(i) {
                break b;
            }
            assert!(
                Instant::now() < deadline,
                "pool exhausted after {i} sessions"
            );
            std::thread::yield_now();
        };
        taken.push(b);
        if taken.len() == 16 {
            for b in taken.drain(..) {
                m.release(b);
            }
        }
    }
    for b in taken.drain(..) {
        m.release(b);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut all = Vec::new();
    while all.len() < 31 && Instant::now() < deadline {
        match m.allocate(all.len() as u64) {
            Some(b) => all.push(b),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    assert_eq!(all.len(), 31, "every block back in the pool");
    assert!(m.allocate(0).is_none(), "and no more than that");
    assert_eq!(
        m.stats()
            .sessions_active
            .load(std::sync::atomic::Ordering::Relaxed),
        31
    );
}

/// With a call up, the media thread sleeps until packets or its periodic tick: a second call
/// on the same thread (no packet can reach it before its ports are taken) is picked up at the
/// next tick, so its media flows well within a second.
fn a_call_opened_while_another_is_up_relays_at_once(receive: Receive) {
    let m = media(16, receive);
    let (a1, b1) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let (first, pa1, _) = call(&m, &a1, &b1, now_ms());
    send_until_heard(&a1, pa1, &b1, 1);
    std::thread::sleep(Duration::from_millis(50));
    let (a2, b2) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let started = Instant::now();
    // `call` allocates from thread 0 while it has blocks: both calls are its.
    let (second, pa2, _) = call(&m, &a2, &b2, now_ms());
    let (pkt, _) = send_until_heard(&a2, pa2, &b2, 2);
    assert_eq!(pkt, rtp(2));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "picked up after {:?}",
        started.elapsed()
    );
    m.release(first);
    m.release(second);
}

/// A block freed by one call is reused by the next with its sockets still bound: it relays for
/// the new call's endpoints, and the old call's late packets are not relayed to them.
fn a_reused_block_relays_for_its_new_call_only(receive: Receive) {
    let m = media(6, receive);
    assert_eq!(m.capacity(), 1);
    let (old_a, old_b) = (endpoint("127.0.0.3"), endpoint("127.0.0.3"));
    let (block, pa, pb) = call(&m, &old_a, &old_b, now_ms());
    send_until_heard(&old_a, pa, &old_b, 1);
    m.release(block);

    let deadline = Instant::now() + Duration::from_secs(2);
    let again = loop {
        if let Some(b) = m.allocate(0) {
            break b;
        }
        assert!(Instant::now() < deadline, "the block did not come back");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!((m.port(again, Leg::A), m.port(again, Leg::B)), (pa, pb));
    assert_eq!(m.counts(again).a_packets, 0, "fresh counters");
    let (new_a, new_b) = (endpoint("127.0.0.4"), endpoint("127.0.0.4"));
    let past = now_ms() - 10_000;
    m.set_remote(again, Leg::A, Some(new_a.local_addr().unwrap()), past);
    m.set_remote(again, Leg::B, Some(new_b.local_addr().unwrap()), past);
    send_until_heard(&new_a, pa, &new_b, 2);
    old_a.send_to(&rtp(9), ("127.0.0.1", pa)).unwrap();
    new_b
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = new_b.recv_from(&mut buf) {
        assert_ne!(&buf[..n], &rtp(9)[..], "the old call's packet was relayed");
    }
    m.release(again);
}

/// Steered with raw sends, a call's ports belong to the range, not to sockets: another socket
/// bound on one of them (which the per-port mode's own socket would have refused) does not get
/// the call's packets, and the call's media still flows.
#[test]
fn a_steered_call_keeps_its_packets_from_a_socket_bound_on_its_port() {
    let m = media(16, Receive::Steered);
    if !m.steered() {
        eprintln!("skipped: steering unavailable here");
        return;
    }
    let (caller, callee) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let (block, pa, pb) = call(&m, &caller, &callee, now_ms());
    send_until_heard(&caller, pa, &callee, 1);
    // Where the block has no sockets of its own (an IPv4 media address, raw sends allowed),
    // the port is free to bind; elsewhere the block's socket holds it.
    let Ok(squatter) = UdpSocket::bind(("127.0.0.1", pa)) else {
        eprintln!("skipped: the block's own socket holds its port here");
        return;
    };
    squatter
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    caller.send_to(&rtp(2), ("127.0.0.1", pa)).unwrap();
    assert_eq!(recv(&callee).map(|p| p.0), Some(rtp(2)), "still relayed");
    assert!(
        recv(&squatter).is_none(),
        "the squatter got the call's packet"
    );
    callee.send_to(&rtp(3), ("127.0.0.1", pb)).unwrap();
    assert_eq!(recv(&caller).map(|p| p.0), Some(rtp(3)));
    m.release(block);
}

/// The default `media.address` is 0.0.0.0: every local address's ports are the call's (the
/// steering program checks no address; raw sends come from the address the receiving endpoint
/// sends to, once it has sent, else from the kernel's choice with the UDP checksum at 0), and
/// packets still arrive byte for byte from the call's ports.
fn a_wildcard_media_address_relays_both_ways(receive: Receive) {
    let m = media_on("0.0.0.0", 16, receive);
    let (caller, callee) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let (block, pa, pb) = call(&m, &caller, &callee, now_ms());
    let (pkt, src) = send_until_heard(&caller, pa, &callee, 1);
    assert_eq!(pkt, rtp(1));
    assert_eq!(src, SocketAddr::from(([127, 0, 0, 1], pb)));
    // The callee talks to another of the host's addresses: sent raw, what it gets comes from
    // that address, as it expects (a socket bound to 0.0.0.0 lets the route pick instead).
    callee.send_to(&rtp(2), ("127.0.0.3", pb)).unwrap();
    let (pkt, src) = recv(&caller).expect("callee's packet reaches the caller");
    assert_eq!(pkt, rtp(2));
    assert_eq!(src, SocketAddr::from(([127, 0, 0, 1], pa)));
    caller.send_to(&rtp(3), ("127.0.0.1", pa)).unwrap();
    let (pkt, src) = recv(&callee).expect("caller's packet reaches the callee");
    assert_eq!(pkt, rtp(3));
    let from = if m.sends_raw() {
        [127, 0, 0, 3]
    } else {
        [127, 0, 0, 1]
    };
    assert_eq!(src, SocketAddr::from((from, pb)));
    m.release(block);
}

/// A second instance on the same range fails at start, naming the port it could not take,
/// instead of relaying nothing (steered, the first instance's blocks hold no sockets that a
/// second one's binds would collide with).
#[test]
fn a_second_instance_on_the_same_range_fails_at_start() {
    for receive in [Receive::Steered, Receive::PerPort] {
        let m = media(16, receive);
        let first = m.port(Block(0), Leg::A);
        let cfg = MediaConfig {
            address: "127.0.0.1".into(),
            advertise: String::new(),
            port_min: first,
            port_max: first + 15,
            workers: 2,
            timeout_s: 60,
            xdp_interface: String::new(),
        };
        let err = Media::start_with(&cfg, "127.0.0.1".parse().unwrap(), &[], receive)
            .err()
            .expect("the second instance refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("media port {}", first + 15)),
            "{text}"
        );
        assert!(text.contains("another sipedge"), "{text}");
        drop(m);
    }
}

/// With AF_XDP on lo (one queue) and two media threads, thread 0 serves the queue: its blocks'
/// packets leave frame to frame, thread 1's take the steered socket and the raw sender, and both
/// calls' media flows byte for byte from the right ports.
#[test]
fn xdp_frames_and_sockets_split_by_thread() {
    in_own_netns(|| {
        use std::sync::atomic::Ordering::Relaxed;
        let base = 62_400;
        let cfg = MediaConfig {
            address: "127.0.0.1".into(),
            advertise: String::new(),
            port_min: base,
            port_max: base + 63,
            workers: 2,
            timeout_s: 60,
            xdp_interface: "lo".into(),
        };
        let (m, _threads) =
            Media::start_with(&cfg, "127.0.0.1".parse().unwrap(), &[], Receive::Steered).unwrap();
        assert_eq!(m.xdp_queues(), 1);
        let pairs: Vec<_> = (0..2)
            .map(|_| (endpoint("127.0.0.1"), endpoint("127.0.0.1")))
            .collect();
        // One call on each thread (block b is thread b % 2's).
        let calls: Vec<_> = pairs
            .iter()
            .enumerate()
            .map(|(t, (a, b))| {
                let block = m.allocate(t as u64).expect("a block");
                assert_eq!(block.0 as usize % 2, t);
                m.set_remote(block, Leg::A, Some(a.local_addr().unwrap()), now_ms());
                m.set_remote(block, Leg::B, Some(b.local_addr().unwrap()), now_ms());
                (block, m.port(block, Leg::A), m.port(block, Leg::B))
            })
            .collect();
        for ((a, b), (_, pa, _)) in pairs.iter().zip(&calls) {
            send_until_heard(a, *pa, b, 1);
        }
        std::thread::sleep(Duration::from_millis(50));
        let (all0, framed0) = (
            m.stats().packets.load(Relaxed),
            m.stats().xdp_packets.load(Relaxed),
        );
        for ((a, b), (_, pa, pb)) in pairs.iter().zip(&calls) {
            for seq in 10..20 {
                a.send_to(&rtp(seq), ("127.0.0.1", *pa)).unwrap();
                let (pkt, src) = recv(b).expect("A -> B");
                assert_eq!(
                    (pkt, src),
                    (rtp(seq), SocketAddr::from(([127, 0, 0, 1], *pb)))
                );
                b.send_to(&rtp(seq + 100), ("127.0.0.1", *pb)).unwrap();
                let (pkt, src) = recv(a).expect("B -> A");
                assert_eq!(
                    (pkt, src),
                    (rtp(seq + 100), SocketAddr::from(([127, 0, 0, 1], *pa)))
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        let all = m.stats().packets.load(Relaxed) - all0;
        let framed = m.stats().xdp_packets.load(Relaxed) - framed0;
        assert_eq!(all, 40, "both calls, both ways ({framed} frame to frame)");
        assert_eq!(
            framed, 20,
            "thread 0's call frame to frame, thread 1's through sockets"
        );
    });
}

/// Behind an interface with real MAC addresses (one end of a veth pair; the endpoints behind
/// the other end, in a second namespace): a packet to an endpoint that has not sent yet leaves
/// through the raw socket (the kernel resolves its MAC); once the endpoint's frames came through
/// AF_XDP its next hop is known and packets to it leave frame to frame, with checksums the
/// receiving kernel accepts and the payload byte for byte.
#[test]
fn behind_a_veth_the_next_hop_is_learned_from_the_endpoints_frames() {
    if !netns::may_run() {
        eprintln!("skipped: no capabilities for network namespaces with XDP");
        return;
    }
    netns::on_thread(|| {
        use std::sync::atomic::Ordering::Relaxed;
        netns::enter();
        ip("link add sx0 type veth peer name sx1");
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            netns::enter();
            // SAFETY: gettid(2) has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            go_rx.recv().unwrap();
            ip("addr add 192.0.2.2/24 dev sx1");
            ip("addr add 192.0.2.3/24 dev sx1");
            ip("link set sx1 up");
            (endpoint("192.0.2.2"), endpoint("192.0.2.3"))
        });
        let tid = tid_rx.recv().unwrap();
        ip(&format!("link set sx1 netns {tid}"));
        ip("addr add 192.0.2.1/24 dev sx0");
        ip("link set sx0 up");
        go_tx.send(()).unwrap();
        let (caller, callee) = peer.join().unwrap();

        let cfg = MediaConfig {
            address: "192.0.2.1".into(),
            advertise: String::new(),
            port_min: 20_000,
            port_max: 20_063,
            workers: 1,
            timeout_s: 60,
            xdp_interface: "sx0".into(),
        };
        let (m, _threads) =
            Media::start_with(&cfg, "192.0.2.1".parse().unwrap(), &[], Receive::Steered).unwrap();
        // veth has a queue per CPU; each gets a socket.
        assert!(m.xdp_queues() >= 1, "sx0's queues through AF_XDP");
        let block = m.allocate(0).unwrap();
        m.set_remote(block, Leg::A, Some(caller.local_addr().unwrap()), now_ms());
        m.set_remote(block, Leg::B, Some(callee.local_addr().unwrap()), now_ms());
        let (pa, pb) = (m.port(block, Leg::A), m.port(block, Leg::B));
        let framed = || m.stats().xdp_packets.load(Relaxed);

        // Until the callee has sent, its next hop is not known: the kernel sends.
        let deadline = Instant::now() + Duration::from_secs(5);
        let heard = loop {
            caller.send_to(&rtp(1), ("192.0.2.1", pa)).unwrap();
            if let Some(p) = recv(&callee) {
                break p;
            }
            assert!(Instant::now() < deadline, "nothing relayed to the callee");
        };
        assert_eq!(heard, (rtp(1), SocketAddr::from(([192, 0, 2, 1], pb))));
        // One more from the caller now its block is surely open: a packet in flight while the
        // block was being opened may have taken the socket path, which teaches no next hop.
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(&rtp(1), ("192.0.2.1", pa)).unwrap();
        assert_eq!(recv(&callee).map(|p| p.0), Some(rtp(1)));
        assert_eq!(framed(), 0, "no next hop known yet: the raw socket sent it");

        // The callee's frame teaches its next hop; the caller's was learned from its frames.
        callee.send_to(&rtp(2), ("192.0.2.1", pb)).unwrap();
        let got = recv(&caller).expect("the callee's packet reaches the caller");
        assert_eq!(got, (rtp(2), SocketAddr::from(([192, 0, 2, 1], pa))));
        assert_eq!(framed(), 1, "to the caller frame to frame");
        for seq in 3..13 {
            caller.send_to(&rtp(seq), ("192.0.2.1", pa)).unwrap();
            let got = recv(&callee).expect("the caller's packet reaches the callee");
            assert_eq!(got, (rtp(seq), SocketAddr::from(([192, 0, 2, 1], pb))));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            framed(),
            11,
            "to the callee frame to frame, once its next hop was known"
        );
        m.release(block);
    });
}
