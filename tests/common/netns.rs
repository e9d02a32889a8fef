//! Network namespaces of a test thread's own, for what must not touch the host's interfaces:
//! XDP programs on lo, veth pairs. `unshare(CLONE_NEWNET)` moves only the calling thread; its
//! sockets, the threads it spawns and the processes it starts (a `sipedge run`, `ip`) live in
//! the new namespace, the rest of the test process stays where it was. The namespace goes away
//! with the last of them.
#![allow(dead_code)]

/// Whether capability `bit` is in this process's effective set.
pub fn has_cap(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << bit) != 0
}

/// Whether the process may make network namespaces (CAP_SYS_ADMIN, and no seccomp profile
/// refusing `unshare`, tried on a throwaway thread) and attach XDP in them (CAP_BPF,
/// CAP_NET_ADMIN): root in CI and on the bench machine.
pub fn may_run() -> bool {
    has_cap(21)
        && has_cap(39)
        && has_cap(12)
        // SAFETY: unshare(2) on a thread that ends right after.
        && std::thread::spawn(|| unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0)
            .join()
            .unwrap_or(false)
}

/// Moves the calling thread into a new network namespace with lo up.
pub fn enter() {
    // SAFETY: unshare(2) with CLONE_NEWNET affects the calling thread only.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    // SAFETY: an ifreq for "lo", read and written back by ioctl on a socket closed after.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req), 0);
        libc::close(fd);
    }
}

/// [`enter`], with lo ready for AF_XDP: frames an AF_XDP socket sends on lo come back in
/// without the route a locally sent packet carries, so 127.0.0.0/8 must be routable and
/// accepted as a source there (src/media/xdp.rs).
pub fn enter_for_xdp_on_lo() {
    enter();
    for (path, v) in [
        ("/proc/sys/net/ipv4/conf/lo/route_localnet", "1"),
        ("/proc/sys/net/ipv4/conf/lo/accept_local", "1"),
        ("/proc/sys/net/ipv4/conf/all/accept_local", "1"),
    ] {
        // /proc/sys/net is the opening thread's namespace's.
        std::fs::write(path, v).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// Runs `body` on a thread of its own, re-raising its panic.
pub fn on_thread<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(body)
        .join()
        .map_err(std::panic::resume_unwind)
        .unwrap()
}

/// Runs `ip ARGS` in the calling thread's network namespace (a child inherits it).
pub fn ip(args: &str) {
    let out = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
