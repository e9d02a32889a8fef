//! The I/O shell: sockets, pinned worker threads, the hand-off fabric between them, the binding
//! persister thread, the admin thread, and signals.
//!
//! Owns: everything that touches the OS. The protocol decisions live in `sip`, `registrar` and
//! `security`; this module feeds them bytes and time and carries out what they return.

pub mod coalesce;
pub mod udp;
pub mod worker;

use crate::config::{Config, Transport as ListenTransport};
use crate::registrar::owners::Owners;
use crate::registrar::response::Opaque;
use crate::registrar::{shard_of, Binding, Registrar, Transport};
use crate::security::{Ban, SourceGuard};
use crate::sip::digest::NonceKey;
use crate::stats::WorkerStats;
use crate::store::snapshot::credential_key;
use crate::store::{BindingRow, Store};
use anyhow::{anyhow, bail, Context as _};
use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Sender};
use mio::{Poll, Waker};
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use worker::{unix_now, Worker, WorkerParts, WAKER};

/// Messages for a worker from the control plane.
pub enum Control {
    /// Reply with a copy of the worker's stats (a scrape).
    Collect(Sender<Box<WorkerStats>>),
    /// Reply with the shard's live bindings.
    ListRegistrations(Sender<Vec<RegistrationView>>),
    /// Reply with the bans this worker enforces.
    ListBans(Sender<Vec<Ban>>),
    /// Reply with the shard's live calls.
    ListCalls(Sender<Vec<crate::call::CallView>>),
    /// End the call with this id if it lives here (`DELETE /api/v1/calls/{id}`); replies
    /// whether it did.
    HangUp(String, Sender<bool>),
    /// Refuse new INVITEs (503, Retry-After 30) while calls drain (SPEC §5).
    Drain,
    Shutdown,
}

/// One live binding as the API shows it (SPEC §4 registrations).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RegistrationView {
    pub username: String,
    pub realm: String,
    pub contact: String,
    /// `ip:port` as observed
    pub source: String,
    pub transport: &'static str,
    pub user_agent: String,
    pub expires_in_s: u64,
}

/// Messages between workers (and ban changes from the control plane).
pub enum Handoff {
    /// A datagram whose state this worker owns, received by another worker.
    Request {
        data: Vec<u8>,
        src: SocketAddr,
        arrived_ns: u64,
        from: usize,
        /// The socket it came in on.
        port: crate::call::Port,
        /// The sender asks for the request's restored slot (see `registrar::owners`).
        adopt: bool,
    },
    /// A slot's credential states, given to the worker its PBX's traffic now lands on.
    Adopt(Vec<crate::registrar::CredState>),
    /// Counted by the IP's owner worker.
    Security(SecurityEvent),
    Ban(Ban),
    LiftBan(IpAddr),
}

#[derive(Clone, Copy, Debug)]
pub enum SecurityEvent {
    AuthFailure { ip: IpAddr, at_ms: u64 },
    Throttled { ip: IpAddr, at_ms: u64 },
}

/// How to reach a worker.
#[derive(Clone)]
pub struct Peer {
    pub handoff: Sender<Handoff>,
    pub control: Sender<Control>,
    /// Hand-off buffers coming home to be reused.
    pub returns: Sender<Vec<u8>>,
    pub waker: Arc<Waker>,
    /// Set while the worker sleeps in `poll`: only then does a sender pay for a wake-up.
    pub parked: Arc<AtomicBool>,
}

impl Peer {
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Credentials whose bindings changed: (username, realm, the complete current set).
pub type PersistBatch = Vec<(String, String, Vec<BindingRow>)>;

const HANDOFF_QUEUE: usize = 16 * 1024;
/// SPEC §5: how long calls may drain after SIGTERM.
const DRAIN_S: u64 = 30;
const CONTROL_QUEUE: usize = 64;

/// What the admin thread needs to reach the workers.
pub struct Shared {
    pub peers: Arc<Vec<Peer>>,
    pub started: Instant,
    pub config: Config,
    pub snapshot: Arc<ArcSwap<crate::store::Snapshot>>,
    /// The bearer token every `/api` request must carry.
    pub token: String,
    /// The media threads (their figures for `/metrics`).
    pub media: Option<crate::media::Media>,
}

impl Shared {
    /// Asks every worker a question over its control channel and gathers the answers (a worker
    /// that does not answer within a second is left out).
    fn ask<T: Send + 'static>(&self, make: impl Fn(Sender<T>) -> Control) -> Vec<T> {
        let (tx, rx) = bounded(self.peers.len());
        for p in self.peers.iter() {
            if p.control.send(make(tx.clone())).is_ok() {
                p.wake();
            }
        }
        drop(tx);
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        let mut out = Vec::with_capacity(self.peers.len());
        while out.len() < self.peers.len() {
            match rx.recv_deadline(deadline) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    /// Every live binding, sorted by realm and username.
    pub fn registrations(&self) -> Vec<RegistrationView> {
        let mut all: Vec<RegistrationView> = self
            .ask(Control::ListRegistrations)
            .into_iter()
            .flatten()
            .collect();
        all.sort_by(|a, b| {
            (&a.realm, &a.username, &a.contact).cmp(&(&b.realm, &b.username, &b.contact))
        });
        all
    }

    /// Every live call, oldest first.
    pub fn calls(&self) -> Vec<crate::call::CallView> {
        let mut all: Vec<crate::call::CallView> =
            self.ask(Control::ListCalls).into_iter().flatten().collect();
        all.sort_by(|a, b| (&a.started, &a.id).cmp(&(&b.started, &b.id)));
        all
    }

    /// Ends call `id` (its shard is in the id, `<shard>-<hex>`); false if no such live call.
    pub fn hang_up(&self, id: &str) -> bool {
        let Some(shard) = crate::call::shard_of_tag(id.as_bytes()).map(usize::from) else {
            return false;
        };
        let Some(p) = self.peers.get(shard) else {
            return false;
        };
        let (tx, rx) = bounded(1);
        if p.control.send(Control::HangUp(id.to_owned(), tx)).is_err() {
            return false;
        }
        p.wake();
        rx.recv_timeout(std::time::Duration::from_secs(1))
            .unwrap_or(false)
    }

    /// Active bans (every worker enforces the same set; the latest expiry per IP wins).
    pub fn bans(&self) -> Vec<Ban> {
        let mut by_ip: std::collections::HashMap<IpAddr, Ban> = std::collections::HashMap::new();
        for ban in self.ask(Control::ListBans).into_iter().flatten() {
            by_ip
                .entry(ban.ip)
                .and_modify(|b| {
                    if ban.until_ms > b.until_ms {
                        *b = ban
                    }
                })
                .or_insert(ban);
        }
        let mut v: Vec<Ban> = by_ip.into_values().collect();
        v.sort_by_key(|b| b.ip);
        v
    }

    /// Bans `ip` on every worker.
    pub fn ban(&self, ban: Ban) {
        self.broadcast(|| Handoff::Ban(ban));
    }

    /// Lifts a ban (and the IP's failure counters) on every worker.
    pub fn lift_ban(&self, ip: IpAddr) {
        self.broadcast(|| Handoff::LiftBan(ip));
    }

    fn broadcast(&self, make: impl Fn() -> Handoff) {
        for p in self.peers.iter() {
            // The control plane may wait: a full hand-off queue means a busy worker, not a dead one.
            if p.handoff
                .send_timeout(make(), std::time::Duration::from_secs(1))
                .is_ok()
            {
                p.wake();
            }
        }
    }

    /// Makes a provisioning snapshot visible to every worker (they pick it up on their next loop
    /// turn), unless a newer one is already out: generations are the store's provisioning
    /// counter, so concurrent publishers (the API, the store watcher) can never go backwards.
    pub fn publish(&self, snapshot: crate::store::Snapshot) -> bool {
        publish_if_newer(&self.snapshot, snapshot) && {
            for p in self.peers.iter() {
                p.wake();
            }
            true
        }
    }

    /// Every worker's stats; a worker that does not answer within a second is left out.
    pub fn collect_stats(&self) -> Vec<WorkerStats> {
        let mut out: Vec<WorkerStats> =
            self.ask(Control::Collect).into_iter().map(|b| *b).collect();
        out.sort_by_key(|s| s.worker);
        out
    }
}

fn worker_count(cfg: &Config) -> usize {
    if cfg.sip.workers > 0 {
        return cfg.sip.workers;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs the SBC until SIGTERM/SIGINT. Start-up failures come back as one error naming the cause.
pub fn run(config: Config) -> anyhow::Result<()> {
    // First of all: a SIGTERM from here on is held until the shutdown below handles it. Installed
    // after the ready line, a supervisor's SIGTERM sent right on it could still find the default
    // action (killed, bindings and CDRs not flushed); tests saw that under load.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;
    let workers = worker_count(&config);

    // --- everything that can fail at start, before anything is printed ---
    let udp: Vec<SocketAddr> = config
        .sip
        .listen
        .iter()
        .filter(|l| l.transport == ListenTransport::Udp)
        .map(|l| l.addr)
        .collect();
    if let Some(l) = config
        .sip
        .listen
        .iter()
        .find(|l| l.transport != ListenTransport::Udp)
    {
        bail!(
            "sip.listen: {:?} listener {} is not supported yet (UDP only in this version)",
            l.transport,
            l.addr
        );
    }
    let [sip_addr] = udp[..] else {
        bail!("sip.listen: exactly one udp listener is supported in this version");
    };
    let store = Store::open(&config.store.path, &config.registrar.realm)
        .map_err(|e| anyhow!("cannot open store {}: {e}", config.store.path.display()))?;
    let snapshot = store
        .snapshot()
        .map_err(|e| anyhow!("cannot read store {}: {e}", config.store.path.display()))?;
    let now_ms = unix_now().as_millis() as u64;
    let restored = store.load_bindings(now_ms / 1000).map_err(|e| {
        anyhow!(
            "cannot read bindings from {}: {e}",
            config.store.path.display()
        )
    })?;

    let sip_addr =
        udp::probe_port(sip_addr).with_context(|| format!("cannot bind udp {sip_addr}"))?;
    let mut sockets = Vec::with_capacity(workers);
    let mut core_sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        sockets.push(
            udp::bind_reuseport(sip_addr).with_context(|| format!("cannot bind udp {sip_addr}"))?,
        );
        let own = udp::bind_own(sip_addr.ip()).with_context(|| {
            format!(
                "cannot bind a worker's core-facing udp port on {}",
                sip_addr.ip()
            )
        })?;
        let port = own.local_addr()?.port();
        core_sockets.push((own, port));
    }
    let core_ports = core_sockets
        .iter()
        .map(|(_, p)| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let gateways = crate::routing::gateways::Gateways::new(&config.core.gateways)
        .map_err(|e| anyhow!("{e}"))?;
    let core_sources = Arc::new(
        crate::routing::classify::CoreSources::new(&config.core, &gateways)
            .map_err(|e| anyhow!("{e}"))?,
    );
    let local = advertised(&config, sip_addr);
    let (cdr_writer, cdr_sender) =
        crate::cdr::CdrWriter::spawn(&config.cdr.path).map_err(|e| anyhow!("cdr.path: {e}"))?;
    let admin_listener = std::net::TcpListener::bind(config.admin.listen)
        .with_context(|| format!("cannot listen on admin {}", config.admin.listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let token = crate::admin::token::load_or_create(&config)?;

    // --- shared state ---
    let shared_snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let nonce_key = NonceKey::random();
    let opaque = Arc::new(Opaque(random_hex16()));

    let mut registrars: Vec<Registrar> = (0..workers)
        .map(|_| Registrar::new(config.registrar.clone(), nonce_key.clone(), now_ms))
        .collect();
    let owners = Arc::new(Owners::new(workers));
    let ip_owners = Arc::new(Owners::new(workers));
    let mut restored_count = 0usize;
    for row in restored {
        let Ok(ip) = row.source_ip.parse::<IpAddr>() else {
            continue;
        };
        let mut key = SmallVec::<[u8; 128]>::new();
        credential_key(row.username.as_bytes(), row.realm.as_bytes(), &mut key);
        // Marked as restored: the worker the PBX's next REGISTER lands on takes the slot over.
        let shard = owners.claim_restored(&key, shard_of(&key, workers));
        let binding = Binding {
            contact: row.contact,
            source: SocketAddr::new(ip, row.source_port),
            transport: Transport::parse(&row.transport),
            user_agent: row.user_agent,
            call_id: row.call_id,
            cseq: row.cseq,
            registered_at_ms: row.registered_at_unix * 1000,
            expires_at_ms: row.expires_at_unix * 1000,
            persisted_expires_at_ms: row.expires_at_unix * 1000,
        };
        registrars[shard].restore(&row.username, &row.realm, binding, now_ms);
        restored_count += 1;
    }

    // --- the fabric between workers ---
    let mut polls = Vec::with_capacity(workers);
    let mut peers = Vec::with_capacity(workers);
    let mut receivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let poll = Poll::new().context("cannot create the event loop")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("cannot create a waker")?);
        let (handoff_tx, handoff_rx) = bounded(HANDOFF_QUEUE);
        let (control_tx, control_rx) = bounded(CONTROL_QUEUE);
        let (returns_tx, returns_rx) = bounded(HANDOFF_QUEUE);
        peers.push(Peer {
            handoff: handoff_tx,
            control: control_tx,
            returns: returns_tx,
            waker,
            parked: Arc::new(AtomicBool::new(false)),
        });
        receivers.push((handoff_rx, control_rx, returns_rx));
        polls.push(poll);
    }
    let peers = Arc::new(peers);

    // --- threads ---
    let stop = Arc::new(AtomicBool::new(false));
    let (persist_tx, persist_rx) = crossbeam_channel::unbounded::<PersistBatch>();
    let persister = std::thread::Builder::new()
        .name("persister".into())
        .spawn(move || {
            for batch in persist_rx.iter() {
                if let Err(e) = store.replace_bindings(&batch) {
                    tracing::error!("cannot persist bindings: {e}");
                }
            }
        })?;

    let gateway_up: Arc<Vec<AtomicBool>> =
        Arc::new((0..gateways.len()).map(|_| AtomicBool::new(true)).collect());
    let desk_config = crate::call::desk::DeskConfig::new(&config);
    // SPEC §3.8: every call's media through sipedge, on threads of its own.
    let media_advertise: IpAddr = if config.media.advertise.is_empty() {
        local.ip()
    } else {
        config.media.advertise.parse().map_err(|_| {
            anyhow::anyhow!(
                "media.advertise: must be an IP address, got {:?}",
                config.media.advertise
            )
        })?
    };
    raise_open_files_limit();
    limit_huge_pages();
    // Workers pin to cores 0..workers; media threads to the cores after them (wrapping).
    let cores = if std::env::var("SIPEDGE_NO_PIN").as_deref() == Ok("1") {
        Vec::new()
    } else {
        core_affinity::get_core_ids().unwrap_or_default()
    };
    let media_cores: Vec<core_affinity::CoreId> = (0..config.media.workers)
        .filter_map(|t| cores.get((workers + t) % cores.len().max(1)).copied())
        .collect();
    let (media, media_threads) =
        crate::media::Media::start(&config.media, media_advertise, &media_cores)
            .context("cannot start the media threads")?;
    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
    let parts = sockets
        .into_iter()
        .zip(core_sockets)
        .zip(polls)
        .zip(receivers.into_iter().zip(registrars));
    for (id, (((socket, (core_socket, core_port)), poll), (channels, registrar))) in
        parts.enumerate()
    {
        let (handoff_rx, control_rx, returns_rx) = channels;
        let core_local = SocketAddr::new(local.ip(), core_port);
        let w = Worker::new(WorkerParts {
            id,
            socket,
            core_socket,
            poll,
            peers: peers.clone(),
            handoff_rx,
            control_rx,
            returns_rx,
            persist_tx: persist_tx.clone(),
            registrar,
            guard: SourceGuard::new(config.security.clone()),
            shared_snapshot: shared_snapshot.clone(),
            opaque: opaque.clone(),
            owners: owners.clone(),
            ip_owners: ip_owners.clone(),
            desk: {
                let mut desk = crate::call::desk::Desk::new(
                    crate::call::Calls::new(id as u16, local, core_local, rand::random()),
                    desk_config.clone(),
                    gateways.clone(),
                    rand::random(),
                );
                desk.set_media(Box::new(media.clone()));
                desk
            },
            core: core_sources.clone(),
            cdr: cdr_sender.clone(),
            // Worker 0 pings the gateways for everyone.
            qualify: (id == 0 && !gateways.is_empty()).then(|| {
                crate::routing::gateways::Qualify::new(
                    gateways.len(),
                    config.core.qualify_s,
                    now_ms,
                )
            }),
            gateway_up: gateway_up.clone(),
            local,
            media: Some(media.clone()),
            media_timeout_s: config.media.timeout_s,
            coalesce: std::time::Duration::from_micros(config.sip.coalesce_us.into()),
        })
        .context("cannot start a worker")?;
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[id % cores.len()])
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("sip-worker-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    w.run();
                })?,
        );
    }
    drop(persist_tx);

    let watcher = spawn_snapshot_watcher(&config, shared_snapshot.clone(), stop.clone())?;

    if let Some(path) = &token.generated_at {
        // Printed once, at the start that generated it (SPEC §2); later starts read the file.
        println!(
            "admin token (saved to {}, mode 0600): {}",
            path.display(),
            token.value
        );
    }
    let shared = Arc::new(Shared {
        token: token.value,
        peers: peers.clone(),
        started: Instant::now(),
        config: config.clone(),
        snapshot: shared_snapshot.clone(),
        media: Some(media.clone()),
    });
    let admin = crate::admin::spawn(admin_listener, shared.clone())?;

    tracing::info!("ready sip=udp:{sip_addr} admin={admin_addr} workers={workers} bindings_restored={restored_count} core_ports={core_ports}");

    // --- wait for a signal ---
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            tracing::info!("SIGHUP: configuration reload is not implemented yet; ignoring");
            continue;
        }
        tracing::info!("signal {sig}: shutting down");
        break;
    }
    drain_calls(&shared);
    for p in peers.iter() {
        let _ = p.control.send(Control::Shutdown);
        p.wake();
    }
    for h in handles {
        let _ = h.join();
    }
    media.shutdown();
    for h in media_threads {
        let _ = h.join();
    }
    drop(cdr_sender);
    cdr_writer.shutdown();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watcher.join();
    drop(shared);
    drop(admin);
    // Workers sent their last bindings before exiting; the persister ends when the queue does.
    let _ = persister.join();
    tracing::info!("stopped");
    Ok(())
}

/// SPEC §5: new INVITEs get 503 (Retry-After 30) while the calls up finish, for at most 30 s;
/// the workers then hang up what is left (CDR `shutdown`) as they stop.
fn drain_calls(shared: &Shared) {
    for p in shared.peers.iter() {
        let _ = p.control.send(Control::Drain);
        p.wake();
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(DRAIN_S);
    let mut up = shared.calls().len();
    if up > 0 {
        tracing::info!(calls = up, "draining calls for up to {DRAIN_S} s");
    }
    while up > 0 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        up = shared.calls().len();
    }
    if up > 0 {
        tracing::info!(calls = up, "drain time is over: hanging up the calls left");
    }
}

/// Publishes a new snapshot whenever the store changes (a CLI write, later the REST API), so
/// provisioning reaches every worker within a second without a restart. SQLite's `data_version`
/// moves when another connection commits (checking it is one cheap pragma); the provisioning
/// counter then tells a provisioning change from a binding write.
fn spawn_snapshot_watcher(
    config: &Config,
    target: Arc<ArcSwap<crate::store::Snapshot>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    let store = Store::open(&config.store.path, &config.registrar.realm)
        .map_err(|e| anyhow!("cannot open store {}: {e}", config.store.path.display()))?;
    Ok(std::thread::Builder::new()
        .name("provisioning".into())
        .spawn(move || {
            let mut seen_data = store.data_version().unwrap_or(0);
            let mut seen_prov = store.provisioning_version().unwrap_or(0);
            let mut resolved_at = std::time::Instant::now();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(250));
                if resolved_at.elapsed() >= crate::store::snapshot::DNS_TTL {
                    resolved_at = std::time::Instant::now();
                    refresh_hosts(&target);
                }
                // data_version moves on any other connection's commit (binding writes included);
                // the provisioning counter says whether provisioning changed.
                let Ok(v) = store.data_version() else {
                    continue;
                };
                if v == seen_data {
                    continue;
                }
                let Ok(p) = store.provisioning_version() else {
                    continue;
                };
                seen_data = v;
                if p == seen_prov {
                    continue;
                }
                seen_prov = p;
                match store.snapshot() {
                    Ok(s) => {
                        let (generation, credentials) = (s.generation, s.credentials.len());
                        if publish_if_newer(&target, s) {
                            tracing::info!(
                                generation,
                                credentials,
                                "provisioning snapshot published"
                            );
                        }
                    }
                    Err(e) => tracing::error!("cannot rebuild the provisioning snapshot: {e}"),
                }
            }
        })?)
}

/// Re-resolves the live snapshot's route host names (their DNS may have changed without any
/// provisioning change) and installs the result if a name now points elsewhere and no newer
/// provisioning was published meanwhile.
fn refresh_hosts(target: &ArcSwap<crate::store::Snapshot>) {
    let live = target.load_full();
    let mut fresh = (*live).clone();
    fresh.hosts.clear();
    fresh.resolve_hosts();
    if fresh.hosts == live.hosts {
        return;
    }
    let fresh = Arc::new(fresh);
    target.rcu(|now| {
        if now.generation == fresh.generation {
            fresh.clone()
        } else {
            now.clone()
        }
    });
    tracing::info!("route host names re-resolved");
}

/// Installs `snapshot` unless the live one is as new or newer.
fn publish_if_newer(
    target: &ArcSwap<crate::store::Snapshot>,
    snapshot: crate::store::Snapshot,
) -> bool {
    let generation = snapshot.generation;
    let new = Arc::new(snapshot);
    let mut installed = false;
    target.rcu(|live| {
        installed = generation > live.generation;
        if installed {
            new.clone()
        } else {
            live.clone()
        }
    });
    installed
}

/// sipedge's own signalling address for Via, Contact and the B leg's From (SPEC §2
/// `sip.advertise`: an IP or IP:port; default the listen address).
fn advertised(config: &Config, listen: SocketAddr) -> SocketAddr {
    let adv = config.sip.advertise.trim();
    if let Ok(a) = adv.parse::<SocketAddr>() {
        return a;
    }
    if let Ok(ip) = adv.parse::<IpAddr>() {
        return SocketAddr::new(ip, listen.port());
    }
    if !adv.is_empty() {
        tracing::warn!(
            advertise = adv,
            "sip.advertise is not an IP address; the listen address is used"
        );
    }
    if listen.ip().is_unspecified() {
        if let Some(ip) = default_route_source(listen.ip()) {
            tracing::warn!(
                "sip.listen is a wildcard address and sip.advertise is empty: advertising {ip} \
                 (the source address of the default route) in Via, Contact and SDP; set \
                 sip.advertise if peers reach sipedge at another address"
            );
            return SocketAddr::new(ip, listen.port());
        }
        tracing::warn!(
            "sip.listen is a wildcard address and sip.advertise is empty: set sip.advertise to the \
             address peers reach sipedge at, or calls will carry {listen} in Via and Contact"
        );
    }
    listen
}

/// The address this host sends from toward the rest of the network: `connect` on a UDP socket
/// picks the route and source without sending anything (the destination is a documentation
/// address, RFC 5737 / RFC 3849). None without a default route.
fn default_route_source(family: IpAddr) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if family.is_ipv4() {
        (([0, 0, 0, 0], 0).into(), ([192, 0, 2, 1], 5060).into())
    } else {
        (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            ("2001:db8::1".parse::<std::net::Ipv6Addr>().ok()?, 5060).into(),
        )
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(probe).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn random_hex16() -> [u8; 16] {
    use rand::Rng;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::thread_rng();
    let mut out = [0u8; 16];
    for o in out.iter_mut() {
        *o = HEX[rng.gen_range(0..16)];
    }
    out
}

/// Transparent huge pages off for this process (tuning.md "Memory") except where a table asks
/// for them (`hugemem`), unless `SIPEDGE_THP=1`. With THP on for the allocator's arenas (a
/// system setting of `always`; mimalloc itself is built not to ask), each first touch of one
/// zeroes 2 MB inside the fault, and whenever memory is given back and touched again that
/// repeats. Measured under perf/calls.sh at 6,000 calls/s:
/// `clear_page_erms` was a quarter of sipedge's CPU, and the registration p99.9 at 64k/s went
/// from 4 ms to 55 ms with huge pages on. The transaction index is the exception: large, long
/// lived, read at random. Kernels before 6.18 lack the exception; there everything gets 4 KB
/// pages.
fn limit_huge_pages() {
    if std::env::var("SIPEDGE_THP").as_deref() == Ok("1") {
        return;
    }
    /// `PR_THP_DISABLE_EXCEPT_ADVISED` (linux/prctl.h, 6.18): advised mappings keep THP.
    const EXCEPT_ADVISED: libc::c_ulong = 1 << 1;
    // SAFETY: prctl with an integer option and integer arguments; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, EXCEPT_ADVISED, 0, 0) };
    if rc == 0 {
        return;
    }
    // SAFETY: as above.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!("cannot turn transparent huge pages off for this process");
    }
}

/// Each call with media holds four sockets: the soft limit on open files (often 1,024) would cap
/// sipedge at ~250 calls. Raise it to the hard limit the operator allows.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("cannot raise the open files limit");
            }
        }
    }
}
