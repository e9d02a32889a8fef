#!/bin/bash
# User-space instructions per call for Kamailio (stateful proxy) and sipedge (B2BUA), counted by
# callgrind: repeatable where wall-clock CPU on this VM is not. The same call as perf/calls.sh
# (INVITE with SDP / 100 / 180 / 200 / ACK / BYE / 200, sipp UAC -> SUT -> sipp UAS). For each
# system: run it under callgrind twice, with N1 and with N2 calls at a low rate, stop it, sum the
# instructions of every process/thread, and report (total(N2) - total(N1)) / (N2 - N1), so
# start-up, idle loops and shutdown cancel out. Kernel time is not counted (callgrind sees user
# space only). Loopback only; every process is bounded and stopped by its PID.
#   usage: [SYSTEMS="kamailio sipedge"] [KEEP=1] [SIPEDGE=binary] perf/callgrind_calls.sh [N1=100] [N2=400] [RATE=50]
#   (KEEP=1 keeps the callgrind outputs for callgrind_annotate)
# Needs: valgrind, sipp, kamailio, and the reference kit in $REF (default /tmp/sipedge-ref).
set -u
N1=${1:-100}; N2=${2:-400}; RATE=${3:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REF=${REF:-/tmp/sipedge-ref}
command -v valgrind >/dev/null || { echo "error: valgrind is not installed"; exit 1; }
command -v sipp >/dev/null || { echo "error: sipp is not installed"; exit 1; }
[ -f "$REF/kamailio/proxy.cfg" ] || { echo "error: no reference kit at $REF (see perf/README.md)"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin sipedge) || exit 1
W=$(mktemp -d /tmp/sipedge-cgcalls.XXXXXX)
PID=; UAS=
cleanup() {
  [ -n "$UAS" ] && kill "$UAS" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  wait 2>/dev/null; if [ -n "${KEEP:-}" ]; then echo "callgrind outputs kept in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
PORT=5470; UAS_PORT=5490; ADMIN=127.0.0.1:8471

sum_ir() { # dir -> total Ir over all callgrind outputs
  local t=0
  for f in "$1"/cg.out*; do
    v=$(grep -m1 '^summary:' "$f" 2>/dev/null | awk '{print $2}')
    [ -z "$v" ] && v=$(grep -m1 '^totals:' "$f" 2>/dev/null | awk '{print $2}')
    t=$((t + ${v:-0}))
  done
  echo $t
}

api() { # method path json
  curl -sf -o /dev/null -X "$1" -H "Authorization: Bearer $(cat sipedge-calls/admin.token)" \
    -H 'content-type: application/json' --data "$3" "http://$ADMIN$2"
}

measure() { # system N -> "total_Ir successful_calls"
  local sys=$1 n=$2 d=$W/$1-$2 uac_ip=127.0.0.1 sf=$REF/sipp/call_uac.xml
  mkdir -p "$d"; cd "$d" || return
  sipp -sf "$REF/sipp/call_uas.xml" -i 127.0.0.1 -p $UAS_PORT -m "$n" -nostdin \
    -timeout $((n / RATE + 60))s >uas.log 2>&1 &
  UAS=$!
  case $sys in
    kamailio)
      sed -e "s#@CHILDREN@#2#" -e "s#5070#$PORT#g" -e "s#5090#$UAS_PORT#g" "$REF/kamailio/proxy.cfg" > kam.cfg
      valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$d/cg.out.%p" \
        kamailio -DD -E -m 512 -M 16 -x tlsf -X tlsf -f kam.cfg -P "$d/kam.pid" >kam.log 2>&1 &
      PID=$!
      sleep 8 ;;  # kamailio starts slowly under valgrind
    sipedge)
      sed -e "s/127.0.0.1:5070/127.0.0.1:$PORT/; s/127.0.0.1:5090/127.0.0.1:$UAS_PORT/" \
        -e "s/127.0.0.1:8091/$ADMIN/" -e 's/^workers = 2 /workers = 1 /' "$ROOT/perf/calls.toml" > c.toml
      RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$d/cg.out.%p" \
        "${SIPEDGE:-$ROOT/target/release/sipedge}" run --config c.toml >se.log 2>&1 &
      PID=$!
      for _ in $(seq 1 120); do curl -sf "http://$ADMIN/health" >/dev/null 2>&1 && break; sleep 0.5; done
      api POST /api/v1/tenants '{"name":"perf"}'
      api POST /api/v1/trunks '{"name":"perf-pbx","tenant":"perf","cidrs":["127.0.0.2/32"],"destination":"sip:127.0.0.2:5060","max_calls":1000000,"max_cps":1000000}'
      api POST /api/v1/numbers '{"number":"+15551230001","tenant":"perf","route":{"trunk":"perf-pbx"}}'
      uac_ip=127.0.0.2; sf=$ROOT/perf/sipp/call_uac_trunk.xml
      sleep 2 ;;
  esac
  sipp -sf "$sf" 127.0.0.1:$PORT -i $uac_ip -p 0 -s +4930123456 -m "$n" -r "$RATE" -nostdin \
    -recv_timeout 10000 -timeout $((n / RATE + 60))s -trace_stat -stf stat.csv >uac.log 2>&1
  # The UAS ends by itself after its N calls; a failed run must not leave it waiting.
  for _ in $(seq 1 40); do kill -0 "$UAS" 2>/dev/null || break; sleep 0.5; done
  kill "$UAS" 2>/dev/null; wait "$UAS" 2>/dev/null; UAS=
  kill -TERM "$PID" 2>/dev/null
  for _ in $(seq 1 60); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
  wait "$PID" 2>/dev/null; PID=
  sleep 1
  local ok
  ok=$(python3 - stat.csv <<'EOF'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
print(rows[-1][rows[0].index("SuccessfulCall(C)")] if len(rows) > 1 else 0)
EOF
)
  echo "$(sum_ir "$d") ${ok:-0}"
}

printf "%-9s %14s %10s %10s\n" system "Ir/call" "ok(N1)" "ok(N2)"
for sys in ${SYSTEMS:-kamailio sipedge}; do
  read -r a oka < <(measure $sys "$N1")
  read -r b okb < <(measure $sys "$N2")
  if [ "$okb" -gt "$oka" ] 2>/dev/null; then
    printf "%-9s %14d %10s %10s\n" $sys $(( (b - a) / (okb - oka) )) "$oka" "$okb"
  else
    printf "%-9s %14s %10s %10s   (calls failed: see %s)\n" $sys "-" "$oka" "$okb" "$W"
    trap - EXIT
  fi
done
