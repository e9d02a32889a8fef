#!/usr/bin/env python3
"""User time per registration at steady state: sipedge (one worker) under sipedge-loadgen for
TOTAL seconds at RATE registrations/s, user-mode CPU measured exactly (perf/usertime.py, eBPF)
over the window [START, START + WIN] s only, e.g. past Timer J's 32 s, when the transaction ring
and index have stopped growing. Prints one JSON line.

usage: perf/steady.py RATE TOTAL START WIN [SIPEDGE_BINARY]
  e.g. perf/steady.py 40000 80 45 30            (about 90 s; root, bpftrace)
Placement: sipedge on CPU SUT_CPU (0), the loadgen on CPU GEN_CPU (1). Loopback ports 5490
(SIP) and 8491 (admin); every process is started here, bounded, and stopped by its PID.
SIPEDGE_THP and other environment variables pass through to sipedge.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

PERF = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(PERF)
sys.path.insert(0, PERF)
from usertime import UserTime  # noqa: E402

if len(sys.argv) < 5:
    sys.exit(__doc__)
RATE, TOTAL, START, WIN = (int(x) for x in sys.argv[1:5])
BIN = sys.argv[5] if len(sys.argv) > 5 else f"{ROOT}/target/release/sipedge"
LG = f"{ROOT}/target/release/sipedge-loadgen"
SUT_CPU, GEN_CPU = os.environ.get("SUT_CPU", "0"), os.environ.get("GEN_CPU", "1")
if START + WIN > TOTAL:
    sys.exit("error: the window must end before the load does (START + WIN <= TOTAL)")

work = tempfile.mkdtemp(prefix="sipedge-steady.")
os.chdir(work)
subprocess.run(["python3", f"{PERF}/gen_users.py", "--n", "2000", "--out", f"{work}/users"],
               stdout=subprocess.DEVNULL, check=True)
cfg = open(f"{PERF}/register.toml").read()
cfg = cfg.replace("127.0.0.1:5070", "127.0.0.1:5490").replace("127.0.0.1:8090", "127.0.0.1:8491")
open("r.toml", "w").write(cfg.replace("workers = 2 ", "workers = 1 "))
se = subprocess.Popen(["taskset", "-c", SUT_CPU, BIN, "run", "--config", "r.toml"],
                      stdout=open("sipedge.log", "w"), stderr=subprocess.STDOUT,
                      env=dict(os.environ, RUST_LOG="warn"))
lg = None
try:
    for _ in range(120):
        try:
            urllib.request.urlopen("http://127.0.0.1:8491/health", timeout=1)
            break
        except OSError:
            time.sleep(0.25)
    else:
        sys.exit(f"error: sipedge did not come up (see {work}/sipedge.log)")
    token = open("sipedge-perf/admin.token").read().strip()
    req = urllib.request.Request("http://127.0.0.1:8491/api/v1/credentials",
                                 data=open("users/credentials.json", "rb").read(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "content-type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    lg = subprocess.Popen(["taskset", "-c", GEN_CPU, LG, "--target", "127.0.0.1:5490",
                           "--rate", str(RATE), "--count", str(RATE * TOTAL),
                           "--duration", str(TOTAL + 20), "--sockets", "8", "--window", "2000",
                           "--users", "users/users.csv"], stdout=subprocess.PIPE)
    time.sleep(START)

    def cpu_ticks(pid):
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])

    ut = UserTime([se.pid])
    ut.start()
    c0, t0 = cpu_ticks(se.pid), time.time()
    time.sleep(WIN)
    c1, t1 = cpu_ticks(se.pid), time.time()
    r = ut.stop()
    lg_out = lg.communicate(timeout=TOTAL + 60)[0].decode(errors="replace").strip().splitlines()
    lgr = json.loads(lg_out[-1]) if lg_out else {}
    if "user_s" not in r:
        sys.exit(f"error: {r}")
    n = RATE * (t1 - t0)  # paced: registrations in the window
    hz = os.sysconf("SC_CLK_TCK")
    print(json.dumps(dict(
        rate=RATE, window_s=[START, START + WIN], binary=BIN,
        thp=os.environ.get("SIPEDGE_THP", ""),
        cpu_us_per_reg=round((c1 - c0) / hz * 1e6 / n, 2),
        user_us_per_reg=round(r["user_corrected_s"] * 1e6 / n, 3),
        user_raw_us_per_reg=round(r["user_s"] * 1e6 / n, 3),
        syscalls_per_reg=round(r["syscalls"] / n, 2),
        loadgen_ok=lgr.get("ok"), loadgen_failed=lgr.get("failed"))))
finally:
    if lg is not None and lg.poll() is None:
        lg.kill()
    se.terminate()
    try:
        se.wait(timeout=30)
    except subprocess.TimeoutExpired:
        se.kill()
