//! Per-worker counters and latency histograms, merged on scrape.
//!
//! Owns: the numbers behind SPEC §4's metrics. A worker owns its [`WorkerStats`] outright (plain
//! integers, no atomics, no sharing in the hot loop); on a scrape the admin thread asks every
//! worker for a copy over its control channel and merges the copies here.

use crate::registrar::RejectReason;
use crate::sip::scan::Method;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

pub const METHODS: [Method; 15] = Method::ALL;

fn method_index(m: Method) -> usize {
    METHODS
        .iter()
        .position(|x| *x == m)
        .unwrap_or(METHODS.len() - 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Banned,
    Scanner,
    SourceRate,
    Overload,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::Banned,
        DropReason::Scanner,
        DropReason::SourceRate,
        DropReason::Overload,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Banned => "banned",
            DropReason::Scanner => "scanner",
            DropReason::SourceRate => "source_rate",
            DropReason::Overload => "overload",
        }
    }
}

/// `sipedge_calls_rejected_total{reason}` (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectMetric {
    Cps,
    Channels,
    CallerId,
    Number,
    NoRoute,
    Codec,
    MediaPorts,
    UnknownSource,
}

impl RejectMetric {
    pub const ALL: [RejectMetric; 8] = [
        RejectMetric::Cps,
        RejectMetric::Channels,
        RejectMetric::CallerId,
        RejectMetric::Number,
        RejectMetric::NoRoute,
        RejectMetric::Codec,
        RejectMetric::MediaPorts,
        RejectMetric::UnknownSource,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RejectMetric::Cps => "cps",
            RejectMetric::Channels => "channels",
            RejectMetric::CallerId => "callerid",
            RejectMetric::Number => "number",
            RejectMetric::NoRoute => "no_route",
            RejectMetric::Codec => "codec",
            RejectMetric::MediaPorts => "media_ports",
            RejectMetric::UnknownSource => "unknown_source",
        }
    }
}

const DIRECTIONS: [crate::cdr::Direction; 2] = [
    crate::cdr::Direction::Termination,
    crate::cdr::Direction::Origination,
];
const RESULTS: [&str; 3] = ["answered", "failed", "rejected"];

fn dir_index(d: crate::cdr::Direction) -> usize {
    match d {
        crate::cdr::Direction::Termination => 0,
        crate::cdr::Direction::Origination => 1,
    }
}

/// One shard's call counters (SPEC §4 `sipedge_calls_*`).
#[derive(Clone, Debug, Default)]
pub struct CallStats {
    pub active: [u64; 2],
    /// [direction][answered, failed, rejected]
    pub total: [[u64; 3]; 2],
    pub rejected: [u64; 8],
}

impl CallStats {
    pub fn started(&mut self, d: crate::cdr::Direction) {
        self.active[dir_index(d)] += 1;
    }
    pub fn ended(&mut self, d: crate::cdr::Direction) {
        let a = &mut self.active[dir_index(d)];
        *a = a.saturating_sub(1);
    }
    pub fn finished(&mut self, d: crate::cdr::Direction, answered: bool) {
        self.total[dir_index(d)][if answered { 0 } else { 1 }] += 1;
    }
    /// Refused by sipedge's policy (an attempt's CDR says `rejected`).
    pub fn rejected(&mut self, d: crate::cdr::Direction, why: RejectMetric) {
        self.total[dir_index(d)][2] += 1;
        self.rejected[why as usize] += 1;
    }
    /// Every gateway failed: the call ends `failed` (counted when its CDR is out), and the
    /// reason is counted here.
    pub fn no_route(&mut self, _d: crate::cdr::Direction) {
        self.rejected[RejectMetric::NoRoute as usize] += 1;
    }
    /// An INVITE with wrong credentials, or dropped under `drop_unknown`: not an attempt.
    pub fn unknown_source(&mut self) {
        self.rejected[RejectMetric::UnknownSource as usize] += 1;
    }
}

/// Longest latency the histograms resolve (60 s, in nanoseconds); longer values are clamped.
const HIST_MAX_NS: u64 = 60_000_000_000;

#[derive(Clone)]
pub struct WorkerStats {
    pub worker: usize,
    pub requests: [u64; METHODS.len()],
    /// Index = code - 100, for 100..=699.
    pub responses: Vec<u64>,
    pub malformed: u64,
    pub dropped: [u64; 4],
    pub register_rejected: [u64; 4],
    pub messages: u64,
    /// Requests this worker passed to the worker owning their state.
    pub handoffs: u64,
    /// Loop turns that slept `sip.coalesce_us` to let the socket fill instead of parking.
    pub coalesced: u64,
    pub calls: CallStats,
    /// CDRs the writer's queue refused (full or closed).
    pub cdr_dropped: u64,
    pub registrations_active: u64,
    pub bans_active: u64,
    /// Per method, nanoseconds from a datagram's arrival to its answer being sent.
    pub processing: Vec<Histogram<u64>>,
}

impl WorkerStats {
    pub fn new(worker: usize) -> WorkerStats {
        let processing = METHODS
            .iter()
            .map(|_| {
                Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
                    .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist()))
            })
            .collect();
        WorkerStats {
            worker,
            requests: [0; METHODS.len()],
            responses: vec![0; 600],
            malformed: 0,
            dropped: [0; 4],
            register_rejected: [0; 4],
            messages: 0,
            handoffs: 0,
            coalesced: 0,
            calls: CallStats::default(),
            cdr_dropped: 0,
            registrations_active: 0,
            bans_active: 0,
            processing,
        }
    }

    #[inline]
    pub fn request(&mut self, m: Method) {
        self.requests[method_index(m)] += 1;
    }

    #[inline]
    pub fn response(&mut self, code: u16) {
        if let Some(c) = self.responses.get_mut(usize::from(code).wrapping_sub(100)) {
            *c += 1;
        }
    }

    #[inline]
    pub fn dropped(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }

    #[inline]
    pub fn rejected(&mut self, r: RejectReason) {
        self.register_rejected[r as usize] += 1;
    }

    #[inline]
    pub fn processing(&mut self, m: Method, ns: u64) {
        let _ = self.processing[method_index(m)].record(ns.clamp(1, HIST_MAX_NS));
    }
}

fn unreachable_hist() -> Histogram<u64> {
    // new(3) only fails for sigfig > 5; kept total to avoid a panic path.
    Histogram::new(2).unwrap_or_else(|_| unreachable_hist())
}

/// Process-wide values the admin thread adds to the workers' numbers.
pub struct ProcessInfo {
    pub uptime_s: u64,
    pub workers: usize,
}

/// Renders merged worker stats in the Prometheus text format (SPEC §4 names).
pub fn render(stats: &[WorkerStats]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let sum = |f: &dyn Fn(&WorkerStats) -> u64| stats.iter().map(f).sum::<u64>();

    out.push_str("# HELP sipedge_sip_requests_total SIP requests parsed, retransmissions and scanner drops included.\n# TYPE sipedge_sip_requests_total counter\n");
    for (i, m) in METHODS.iter().enumerate() {
        let _ = writeln!(
            out,
            "sipedge_sip_requests_total{{method=\"{}\"}} {}",
            m.as_str(),
            sum(&|s| s.requests[i])
        );
    }
    out.push_str("# HELP sipedge_sip_responses_total SIP responses sent by sipedge.\n# TYPE sipedge_sip_responses_total counter\n");
    for code in 100..700usize {
        let n = sum(&|s| s.responses[code - 100]);
        if n > 0 {
            let _ = writeln!(out, "sipedge_sip_responses_total{{code=\"{code}\"}} {n}");
        }
    }
    out.push_str("# HELP sipedge_sip_malformed_total Malformed SIP messages (answered 400 or dropped).\n# TYPE sipedge_sip_malformed_total counter\n");
    let _ = writeln!(out, "sipedge_sip_malformed_total {}", sum(&|s| s.malformed));
    out.push_str("# HELP sipedge_registrations_active Live registration bindings.\n# TYPE sipedge_registrations_active gauge\n");
    let _ = writeln!(
        out,
        "sipedge_registrations_active {}",
        sum(&|s| s.registrations_active)
    );
    out.push_str("# HELP sipedge_register_rejected_total REGISTERs refused by policy.\n# TYPE sipedge_register_rejected_total counter\n");
    for r in RejectReason::ALL {
        let _ = writeln!(
            out,
            "sipedge_register_rejected_total{{reason=\"{}\"}} {}",
            r.as_str(),
            sum(&|s| s.register_rejected[r as usize])
        );
    }
    out.push_str("# HELP sipedge_calls_active Calls up (set up or answered).\n# TYPE sipedge_calls_active gauge\n");
    for d in DIRECTIONS {
        let i = dir_index(d);
        let _ = writeln!(
            out,
            "sipedge_calls_active{{direction=\"{}\"}} {}",
            d.as_str(),
            sum(&|s| s.calls.active[i])
        );
    }
    out.push_str("# HELP sipedge_calls_total Call attempts by outcome.\n# TYPE sipedge_calls_total counter\n");
    for d in DIRECTIONS {
        let i = dir_index(d);
        for (j, r) in RESULTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "sipedge_calls_total{{direction=\"{}\",result=\"{r}\"}} {}",
                d.as_str(),
                sum(&|s| s.calls.total[i][j])
            );
        }
    }
    out.push_str("# HELP sipedge_calls_rejected_total INVITEs refused by sipedge's policy.\n# TYPE sipedge_calls_rejected_total counter\n");
    for r in RejectMetric::ALL {
        let _ = writeln!(
            out,
            "sipedge_calls_rejected_total{{reason=\"{}\"}} {}",
            r.as_str(),
            sum(&|s| s.calls.rejected[r as usize])
        );
    }
    out.push_str("# HELP sipedge_dropped_total Datagrams dropped without an answer.\n# TYPE sipedge_dropped_total counter\n");
    for r in DropReason::ALL {
        let _ = writeln!(
            out,
            "sipedge_dropped_total{{reason=\"{}\"}} {}",
            r.as_str(),
            sum(&|s| s.dropped[r as usize])
        );
    }
    out.push_str("# HELP sipedge_bans_active Source IPs currently banned.\n# TYPE sipedge_bans_active gauge\n");
    let _ = writeln!(
        out,
        "sipedge_bans_active {}",
        stats.iter().map(|s| s.bans_active).max().unwrap_or(0)
    );
    /// A per-worker counter: name, help, value.
    type Counter = (&'static str, &'static str, fn(&WorkerStats) -> u64);
    let per_worker: [Counter; 3] = [
        (
            "sipedge_worker_messages_total",
            "Messages handled per signalling worker.",
            |s| s.messages,
        ),
        (
            "sipedge_worker_handoffs_total",
            "Requests a worker passed to the worker owning their state.",
            |s| s.handoffs,
        ),
        (
            "sipedge_worker_coalesced_total",
            "Loop turns in which a worker waited sip.coalesce_us for more datagrams instead of waking per arrival.",
            |s| s.coalesced,
        ),
    ];
    for (name, help, value) in per_worker {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in stats {
            let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", s.worker, value(s));
        }
    }
    out.push_str("# HELP sipedge_processing_seconds From a datagram's arrival to sipedge's response or forwarded request being sent.\n# TYPE sipedge_processing_seconds summary\n");
    for (i, m) in METHODS.iter().enumerate() {
        let mut merged: Option<Histogram<u64>> = None;
        for s in stats {
            match merged.as_mut() {
                None => merged = Some(s.processing[i].clone()),
                Some(h) => {
                    let _ = h.add(&s.processing[i]);
                }
            }
        }
        let Some(h) = merged.filter(|h| !h.is_empty()) else {
            continue;
        };
        for q in [0.5, 0.9, 0.99, 0.999] {
            let _ = writeln!(
                out,
                "sipedge_processing_seconds{{method=\"{}\",quantile=\"{q}\"}} {:.9}",
                m.as_str(),
                h.value_at_quantile(q) as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "sipedge_processing_seconds_sum{{method=\"{}\"}} {:.9}",
            m.as_str(),
            h.mean() * h.len() as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "sipedge_processing_seconds_count{{method=\"{}\"}} {}",
            m.as_str(),
            h.len()
        );
    }
    out
}

/// SPEC §4's media metrics, from the media threads' shared counters.
pub fn render_media(m: &crate::media::MediaStats, out: &mut String) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(
        out,
        "# HELP sipedge_media_sessions_active Calls with media ports allocated.\n# TYPE sipedge_media_sessions_active gauge\nsipedge_media_sessions_active {}",
        m.sessions_active.load(Relaxed).max(0)
    );
    let _ = writeln!(
        out,
        "# HELP sipedge_media_packets_total RTP/RTCP packets relayed.\n# TYPE sipedge_media_packets_total counter\nsipedge_media_packets_total {}",
        m.packets.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP sipedge_media_xdp_packets_total Of those, packets relayed frame to frame through AF_XDP (media.xdp_interface).\n# TYPE sipedge_media_xdp_packets_total counter\nsipedge_media_xdp_packets_total {}",
        m.xdp_packets.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP sipedge_media_bytes_total RTP/RTCP bytes relayed.\n# TYPE sipedge_media_bytes_total counter\nsipedge_media_bytes_total {}",
        m.bytes.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP sipedge_media_dropped_total Media packets not relayed.\n# TYPE sipedge_media_dropped_total counter\nsipedge_media_dropped_total{{reason=\"stray\"}} {}\nsipedge_media_dropped_total{{reason=\"no_session\"}} {}",
        m.dropped_stray.load(Relaxed),
        m.dropped_no_session.load(Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_workers() {
        let mut a = WorkerStats::new(0);
        let mut b = WorkerStats::new(1);
        a.request(Method::Register);
        b.request(Method::Register);
        b.response(401);
        a.dropped(DropReason::Scanner);
        a.processing(Method::Register, 10_000);
        b.processing(Method::Register, 30_000);
        a.registrations_active = 2;
        b.registrations_active = 3;
        let text = render(&[a, b]);
        assert!(
            text.contains("sipedge_sip_requests_total{method=\"REGISTER\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("sipedge_sip_responses_total{code=\"401\"} 1\n"));
        assert!(text.contains("sipedge_dropped_total{reason=\"scanner\"} 1\n"));
        assert!(text.contains("sipedge_registrations_active 5\n"));
        assert!(text.contains("sipedge_processing_seconds_count{method=\"REGISTER\"} 2\n"));
        assert!(
            text.contains(
                "sipedge_processing_seconds{method=\"REGISTER\",quantile=\"0.99\"} 0.0000300"
            ),
            "{text}"
        );
        assert!(text.contains("sipedge_worker_messages_total{worker=\"1\"} 0\n"));
    }
}
