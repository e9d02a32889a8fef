#!/usr/bin/env python3
"""One bounded load step (sipp or sipedge-loadgen) with CPU accounting of the system under test.

usage: bench.py --system S --label L --rate R --calls N [--watch PID ...] [--peer PID ...]
                [--hold S] [--out FILE] [--scrape URL --scrape-at 0.6] -- COMMAND ARGS...

Derived from the reference kit's bench.py (shared/reference), extended for sipedge's perf/:
- user and system CPU apart: utime and stime are read separately from /proc/PID/stat, summed over
  each watched PID and all its descendants (threads are included in a process's stat), before and
  after the step;
- the generator is either sipp (its -trace_stat file gives ok/failed/retransmissions; -r/-m and the
  stat options are appended) or sipedge-loadgen (its one JSON line is read; give it --rate/--count
  yourself, --rate/--calls here only label the step);
- the 1-minute load average before the step (the machine is shared);
- optionally the CPU of peers (--peer, e.g. the sipp UAS of a call benchmark), user and system
  apart like the SUT's, reported separately (peer_*), and the call hold time (--hold: ok/s is then
  ok / (wall - hold), as in the reference kit);
- optionally the kernel's receive-buffer drops on UDP ports (--udp-port, e.g. the SUT's and the
  UAS's), summed over all sockets bound to the port (the drops column of /proc/net/udp);
- optionally (--usertime) the SUT's user-mode CPU measured exactly with eBPF (perf/usertime.py:
  bpftrace, root): user_bpf_us_per_ok with the tracing's per-syscall bias (calibrated in the same
  session) taken out, user_bpf_raw_us_per_ok without, and syscalls_per_ok; next to the
  tick-sampled utime, which under-counts on this VM;
- optionally scrapes a Prometheus endpoint part-way through the step (--scrape-at, a fraction of
  the expected step time) and keeps sipedge_processing_seconds{method="REGISTER"} quantiles.
The step is bounded by the generator's own limits (sipp -m/-timeout, loadgen --count/--duration);
bench.py also kills the generator if it runs longer than --max-s.
Prints one JSON line and appends it to --out.
"""
import argparse, glob, json, os, re, subprocess, sys, tempfile, threading, time, urllib.request

HZ = os.sysconf("SC_CLK_TCK")


def tree_cpu(root):
    """(utime_s, stime_s) of root and all its descendants."""
    kids, cpu = {}, {}
    for p in glob.glob("/proc/[0-9]*/stat"):
        try:
            s = open(p).read()
        except OSError:
            continue
        pid = int(p.split("/")[2])
        f = s[s.rfind(")") + 2:].split()
        kids.setdefault(int(f[1]), []).append(pid)
        cpu[pid] = (int(f[11]) / HZ, int(f[12]) / HZ)
    u = st = 0.0
    todo = [root]
    while todo:
        p = todo.pop()
        cu, cs = cpu.get(p, (0.0, 0.0))
        u += cu
        st += cs
        todo += kids.get(p, [])
    return u, st


def host_idle():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    # user/system are tick-sampled (under-count on this VM); idle is exact -> busy = ncpu*wall - idle
    return dict(idle=(f[3] + f[4]) / HZ, softirq=f[6] / HZ, steal=f[7] / HZ)


def udp_drops(ports):
    """{port: drops} summed over the IPv4 UDP sockets bound to each port (/proc/net/udp)."""
    out = {p: 0 for p in ports}
    try:
        lines = open("/proc/net/udp").read().splitlines()[1:]
    except OSError:
        return out
    for l in lines:
        f = l.split()
        port = int(f[1].split(":")[1], 16)
        if port in out:
            out[port] += int(f[-1])
    return out


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def sipp_stats(path):
    lines = [l.rstrip("\n;") for l in open(path) if l.strip()]
    hdr = lines[0].split(";")
    val = lines[-1].split(";")
    return dict(zip(hdr, val))


def scrape(url):
    """sipedge_processing_seconds{method="REGISTER",quantile=Q} -> {Q: microseconds}."""
    out = {}
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode(errors="replace")
    except Exception as e:  # noqa: BLE001 - a failed scrape is reported, not fatal
        return {"error": str(e)[:200]}
    for line in text.splitlines():
        if not line.startswith("sipedge_processing_seconds{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.index("}") + 1]))
        if labels.get("method") != "REGISTER" or "quantile" not in labels:
            continue
        try:
            out["q" + labels["quantile"]] = round(float(line.split()[-1]) * 1e6, 1)
        except ValueError:
            pass
    if not out:
        out["error"] = "no sipedge_processing_seconds{method=\"REGISTER\"} sample"
    return out


ap = argparse.ArgumentParser()
ap.add_argument("--system", required=True, help="raw | kamailio | sipedge ...")
ap.add_argument("--label", required=True)
ap.add_argument("--rate", type=float, required=True, help="offered rate (0 = flat out)")
ap.add_argument("--calls", type=int, required=True)
ap.add_argument("--watch", type=int, action="append", default=[])
ap.add_argument("--peer", type=int, action="append", default=[],
                help="other processes (e.g. the sipp UAS) whose CPU is reported apart (peer_*)")
ap.add_argument("--hold", type=float, default=0, help="call hold time, s: ok/s = ok / (wall - hold)")
ap.add_argument("--udp-port", type=int, action="append", default=[],
                help="report datagrams the kernel dropped on this local UDP port during the step")
ap.add_argument("--out", default="results/bench.jsonl")
ap.add_argument("--scrape", default="", help="metrics URL to scrape during the step")
ap.add_argument("--scrape-at", type=float, default=0.6, help="fraction of the expected step time")
ap.add_argument("--max-s", type=float, default=600)
ap.add_argument("--usertime", action="store_true",
                help="measure the SUT's user-mode time with eBPF (perf/usertime.py; needs bpftrace, root)")
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = [x for x in a.cmd if x != "--"]
if not cmd:
    ap.error("no command")
# The generator may run under a wrapper (perf/register.sh's `taskset -c CPUS ...`): the tool is
# the first word naming sipp or the loadgen.
prog = next((os.path.basename(x) for x in cmd if "loadgen" in os.path.basename(x) or os.path.basename(x) == "sipp"), "")
tool = "loadgen" if "loadgen" in prog else "sipp"
stf = None
if tool == "sipp":
    stf = tempfile.mktemp(suffix=".csv", dir="/tmp")
    cmd += ["-r", str(int(a.rate)), "-m", str(a.calls), "-trace_stat", "-stf", stf, "-fd", "1", "-nostdin"]

load0 = loadavg()
ut = None
if a.usertime:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from usertime import UserTime
    ut = UserTime(a.watch)
    ut.start()
c0 = [tree_cpu(p) for p in a.watch]
p0 = [tree_cpu(p) for p in a.peer]
d0 = udp_drops(a.udp_port)
h0 = host_idle()
t0 = time.time()
pr = subprocess.Popen(cmd, stdout=subprocess.PIPE if tool == "loadgen" else subprocess.DEVNULL,
                      stderr=subprocess.PIPE)
scraped = {}
if a.scrape:
    expect = a.calls / a.rate if a.rate > 0 else 5.0
    timer = threading.Timer(expect * a.scrape_at, lambda: scraped.update(scrape(a.scrape)))
    timer.daemon = True
    timer.start()
killer = threading.Timer(a.max_s, pr.kill)
killer.daemon = True
killer.start()
out_bytes, err_bytes = pr.communicate()
killer.cancel()
wall = time.time() - t0
ut_r = ut.stop() if ut else None
c1 = [tree_cpu(p) for p in a.watch]
p1 = [tree_cpu(p) for p in a.peer]
d1 = udp_drops(a.udp_port)
h1 = host_idle()
gen_cpu = None
if tool == "sipp":
    st = sipp_stats(stf)
    os.remove(stf)
    ok, failed = int(st["SuccessfulCall(C)"]), int(st["FailedCall(C)"])
    created = int(st["TotalCallCreated"])
    retrans = int(st.get("Retransmissions(C)", 0))
    created_rate = round(float(st["CallRate(C)"]), 1)
    attempted = a.calls
else:
    line = [l for l in out_bytes.decode(errors="replace").splitlines() if l.startswith("{")]
    if not line:
        print("loadgen printed no JSON; stderr:", err_bytes.decode(errors="replace")[-500:], file=sys.stderr)
        sys.exit(1)
    lg = json.loads(line[-1])
    ok, failed = lg["ok"], lg["failed"] + lg["abandoned"]
    created, retrans = lg["started"], lg["retrans"]
    created_rate = lg["started_per_s"]
    attempted = max(a.calls, created)
    gen_cpu = (lg["cpu_user_s"], lg["cpu_sys_s"])
    wall = lg["wall_s"]  # the generator's own active time (no process start-up)

# Generator CPU: sipp's comes from the child rusage of this process, the loadgen reports its own.
if gen_cpu is None:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = (r.ru_utime, r.ru_stime)  # bench.py runs exactly one child

sut_u = sum(b[0] - x[0] for b, x in zip(c1, c0))
sut_s = sum(b[1] - x[1] for b, x in zip(c1, c0))
ncpu = os.cpu_count()
r = dict(system=a.system, label=a.label, tool=tool, offered_rate=a.rate, calls=a.calls, created=created,
         ok=ok, failed=failed, fail_pct=round(100.0 * (attempted - ok) / attempted, 3) if attempted else None,
         created_rate=created_rate, ok_per_s=round(ok / max(wall - a.hold, 1e-9), 1), retrans=retrans,
         wall_s=round(wall, 2), rc=pr.returncode,
         sut_user_s=round(sut_u, 3), sut_sys_s=round(sut_s, 3),
         sut_cpu_pct=round(100 * (sut_u + sut_s) / wall, 1),
         sut_us_per_ok=round(1e6 * (sut_u + sut_s) / ok, 2) if ok else None,
         sut_user_us_per_ok=round(1e6 * sut_u / ok, 2) if ok else None,
         sut_sys_us_per_ok=round(1e6 * sut_s / ok, 2) if ok else None,
         gen_user_s=round(gen_cpu[0], 3), gen_sys_s=round(gen_cpu[1], 3),
         gen_cpu_pct=round(100 * (gen_cpu[0] + gen_cpu[1]) / wall, 1),
         host_busy_pct=round(100 * (ncpu - (h1["idle"] - h0["idle"]) / wall), 1),
         host_softirq_pct=round(100 * (h1["softirq"] - h0["softirq"]) / wall, 1),
         load1_before=load0, ncpu=ncpu, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
if a.peer:
    peer_u = sum(b[0] - x[0] for b, x in zip(p1, p0))
    peer_s = sum(b[1] - x[1] for b, x in zip(p1, p0))
    r.update(peer_user_s=round(peer_u, 3), peer_sys_s=round(peer_s, 3),
             peer_cpu_pct=round(100 * (peer_u + peer_s) / wall, 1))
if a.hold:
    r["hold_s"] = a.hold
if a.udp_port:
    r["udp_drops"] = {str(p): d1[p] - d0[p] for p in a.udp_port}
if tool == "loadgen":
    r.update(lat_p50_us=lg["p50_us"], lat_p99_us=lg["p99_us"], lat_p999_us=lg["p999_us"], codes=lg["codes"],
             stale_retries=lg.get("stale", 0), loadgen_sockets=lg["sockets"])
if ut_r is not None:
    if "user_s" in ut_r:
        r.update(user_bpf_s=round(ut_r["user_s"], 4), user_bpf_bias_ns=round(ut_r["bias_ns"], 1),
                 user_bpf_raw_us_per_ok=round(1e6 * ut_r["user_s"] / ok, 3) if ok else None,
                 user_bpf_us_per_ok=round(1e6 * ut_r["user_corrected_s"] / ok, 3) if ok else None,
                 syscalls_per_ok=round(ut_r["syscalls"] / ok, 2) if ok else None,
                 oncpu_bpf_probe_ns=round(ut_r["probe_ns"], 1),
                 oncpu_bpf_raw_us_per_ok=round(1e6 * ut_r["oncpu_s"] / ok, 3) if ok else None,
                 oncpu_bpf_us_per_ok=round(1e6 * ut_r["oncpu_corrected_s"] / ok, 3) if ok else None,
                 user_bpf_raw_us_by_thread={k: round(1e6 * v / ok, 3) for k, v in ut_r["by_thread_s"].items()}
                 if ok else None)
    else:
        r.update(ut_r)
if a.scrape:
    r["processing_us"] = scraped or {"error": "step ended before the scrape"}
print(json.dumps(r))
sys.stdout.flush()
os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
with open(a.out, "a") as f:
    f.write(json.dumps(r) + "\n")
err = err_bytes.decode(errors="replace").strip()
if err and tool == "sipp":
    print("sipp stderr:", err[-500:], file=sys.stderr)
