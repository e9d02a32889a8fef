#!/bin/bash
# A/B of sipedge binaries by user time per registration (eBPF, perf/usertime.py): each binary
# runs the same short perf/register.sh steps with USERTIME=1, alternately, ROUNDS times, so
# that drift between runs (0.1-0.3 µs on the 2-vCPU VM) falls on both sides alike. Compare
# the pairs, not figures across separate runs.
#   usage: perf/ab.sh NAME=BINARY NAME=BINARY [...]
#   e.g.   perf/ab.sh old=/tmp/sipedge-before new=target/release/sipedge
#   BINARY may also be `raw` or `kamailio`: that system's steps then run in the rotation, so a
#   ratio to a reference system is taken from steps minutes apart, not a whole run apart.
# environment: ROUNDS=2, AB_RATES=24000 (sipp steps), AB_LG="32000 40000" (loadgen steps),
#   AB_STEP_S=10, OUTDIR=perf/results/ab-<date> (one JSON-lines file per binary and round);
#   register.sh's own knobs pass through (USERS, WARM_S)
set -u
PERF=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
OUTDIR=${OUTDIR:-$PERF/results/ab-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUTDIR"
for arg in "$@"; do
  bin=${arg#*=}
  case $bin in raw|kamailio) continue ;; esac
  [ -x "$bin" ] || { echo "error: $bin is not an executable (NAME=BINARY, raw or kamailio)"; exit 2; }
done
for round in $(seq "${ROUNDS:-2}"); do
  for arg in "$@"; do
    name=${arg%%=*}; bin=${arg#*=}; system=sipedge
    case $bin in raw|kamailio) system=$bin; bin= ;; *) bin=$(realpath "$bin") ;; esac
    out=$OUTDIR/$name-$round.jsonl
    SIPEDGE=$bin USERTIME=1 SYSTEMS=$system SKIP_BUILD=1 RATES="${AB_RATES:-24000}" \
      LG_RATES="${AB_LG:-32000 40000}" LAT_RATES=" " STEP_S=${AB_STEP_S:-10} OUT=$out \
      "$PERF/register.sh" > "$OUTDIR/$name-$round.log" 2>&1 || { echo "error: see $OUTDIR/$name-$round.log"; exit 1; }
    python3 - "$out" "$name" "$round" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(f"{sys.argv[2]:>12} round {sys.argv[3]}  {r['tool']:7} {int(r['offered_rate']):6}/s  "
          f"user {r.get('user_bpf_us_per_ok')} µs/reg  CPU {r.get('oncpu_bpf_us_per_ok')} µs/reg (eBPF), "
          f"{r['sut_us_per_ok']} (/proc)  "
          f"syscalls {r.get('syscalls_per_ok')}/reg")
PY
  done
done
echo "results: $OUTDIR"
