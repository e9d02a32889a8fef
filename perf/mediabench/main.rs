//! sipedge-mediabench: sipedge's media relay (the same `media` module `sipedge run` uses) with N
//! sessions set up directly, no SIP, so `perf/media.sh` can blast RTP through it exactly as the
//! reference kit does through rtpengine (whose sessions its `ng.py` creates).
//!
//! Session i: leg A signalled at 127.0.0.1:(A_BASE+2i), leg B at 127.0.0.1:(B_BASE+2i). Prints
//! `ports P1,P2,...` (the A-leg ports a blaster sends to) and `ready`, relays for `--seconds`,
//! prints the relay's counters and exits; SIGTERM or SIGINT end it the same way, early (so an
//! instrumented build for scripts/build-pgo.sh writes its profile when perf/media.sh stops it).
//!
//! usage: sipedge-mediabench [--sessions 4000] [--workers 1] [--port-min 10000]
//!                           [--a-base 30000] [--b-base 50000] [--seconds 120] [--xdp IFACE]

use sipedge::config::MediaConfig;
use sipedge::media::{Leg, Media};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        })
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sessions = arg(&args, "--sessions", 4000) as usize;
    let workers = arg(&args, "--workers", 1) as usize;
    let port_min = arg(&args, "--port-min", 10_000) as u16;
    let a_base = arg(&args, "--a-base", 30_000) as u16;
    let b_base = arg(&args, "--b-base", 50_000) as u16;
    let seconds = arg(&args, "--seconds", 120);
    let blocks_needed = sessions as u32 * 4;
    let cfg = MediaConfig {
        address: "127.0.0.1".into(),
        advertise: String::new(),
        port_min,
        port_max: (u32::from(port_min) + blocks_needed + 3).min(65_535) as u16,
        workers,
        timeout_s: 60,
        xdp_interface: args
            .iter()
            .position(|a| a == "--xdp")
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default(),
    };
    // Warnings (steering or AF_XDP refused) go to stderr, as `sipedge run` logs them.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .try_init();
    let (media, threads) =
        Media::start(&cfg, "127.0.0.1".parse().unwrap(), &[]).expect("media threads");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut ports = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let b = media
            .allocate(i as u64)
            .unwrap_or_else(|| panic!("no block for session {i}"));
        let a: SocketAddr = ([127, 0, 0, 1], a_base + 2 * i as u16).into();
        let bb: SocketAddr = ([127, 0, 0, 1], b_base + 2 * i as u16).into();
        // SDP "changed" long ago: latching follows the strict rule (signalled IP), as in a call.
        media.set_remote(b, Leg::A, Some(a), now.saturating_sub(10_000));
        media.set_remote(b, Leg::B, Some(bb), now.saturating_sub(10_000));
        ports.push(media.port(b, Leg::A).to_string());
    }
    // Let the media threads bind every socket before anyone sends.
    std::thread::sleep(Duration::from_millis(200 + sessions as u64 / 10));
    println!(
        "steered={} raw_sends={} xdp_queues={}",
        media.steered(),
        media.sends_raw(),
        media.xdp_queues()
    );
    println!("ports {}", ports.join(","));
    println!("ready");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).expect("signal handler");
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline && !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = media.stats();
    println!(
        "relayed={} xdp={} bytes={} stray={} no_session={}",
        s.packets.load(Relaxed),
        s.xdp_packets.load(Relaxed),
        s.bytes.load(Relaxed),
        s.dropped_stray.load(Relaxed),
        s.dropped_no_session.load(Relaxed)
    );
    media.shutdown();
    for t in threads {
        let _ = t.join();
    }
}
