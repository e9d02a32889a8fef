#!/usr/bin/env python3
"""Print the REGISTER benchmark table from bench.py JSON lines.
usage: report.py RESULTS.jsonl [--markdown]
CPU-µs/reg = SUT CPU (all processes/threads of the system under test) / successful registrations,
user and system apart (/proc, tick-sampled). With --usertime (bench.py): user µs and CPU µs measured
exactly with eBPF (perf/usertime.py). gen% = the load generator's CPU (% of one core), host% = machine busy (max 100*ncpu)."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
md = "--markdown" in sys.argv
hdr = ["system", "tool", "offered", "ok/s", "fail %", "retrans", "SUT CPU %", "µs/reg", "user µs", "sys µs",
       "gen %", "host %", "load1", "p99 µs (full reg)", "server p99 µs", "user µs (eBPF)", "CPU µs (eBPF)",
       "syscalls/reg"]


def f(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


out = []
for r in rows:
    proc = r.get("processing_us") or {}
    out.append([r["system"], r["tool"], "max" if not r["offered_rate"] else f(int(r["offered_rate"])),
                f(r["ok_per_s"], 0), f(r["fail_pct"], 3), f(r["retrans"]), f(r["sut_cpu_pct"]),
                f(r["sut_us_per_ok"]), f(r["sut_user_us_per_ok"]), f(r["sut_sys_us_per_ok"]), f(r["gen_cpu_pct"]),
                f(r["host_busy_pct"]), f(r["load1_before"], 2), f(r.get("lat_p99_us")),
                f(proc.get("q0.99")) if "q0.99" in proc else ("-" if not proc else "n/a"),
                f(r.get("user_bpf_us_per_ok"), 2), f(r.get("oncpu_bpf_us_per_ok"), 2),
                f(r.get("syscalls_per_ok"), 2)])
if md:
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for o in out:
        print("| " + " | ".join(o) + " |")
else:
    w = [max(len(h), *(len(o[i]) for o in out)) if out else len(h) for i, h in enumerate(hdr)]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    for o in out:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(o)))

# Summary: per system, the best sustained step (0 failures, 0 retransmissions) per tool and its µs/reg.
print()
best = {}
for r in rows:
    if r["ok"] and r["fail_pct"] == 0 and r["retrans"] == 0:
        k = (r["system"], r["tool"])
        if k not in best or r["ok_per_s"] > best[k]["ok_per_s"]:
            best[k] = r
for (s, t), r in sorted(best.items()):
    print(f"sustained {s:9s} via {t:7s}: {r['ok_per_s']:9.0f} reg/s, {r['sut_us_per_ok']} µs/reg "
          f"(user {r['sut_user_us_per_ok']}, sys {r['sut_sys_us_per_ok']})")
