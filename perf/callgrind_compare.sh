#!/bin/bash
# User-space instructions per registration for the raw responder, Kamailio and sipedge, counted
# by callgrind (repeatable where wall-clock timing is not). For each system: run it under
# callgrind twice, once with N1 and once with N2 registrations from sipedge-loadgen at a low
# rate, stop it, sum the instructions of every process/thread it had, and report
# (total(N2) - total(N1)) / (N2 - N1): start-up, idle loops and shutdown cancel out.
# Loopback only; every process is bounded and stopped by PID.
#   usage: [SYSTEMS="raw kamailio sipedge"] [KEEP=1] [SIPEDGE=binary] perf/callgrind_compare.sh [N1=1000] [N2=4000] [RATE=400]
#   (KEEP=1 keeps the callgrind outputs for callgrind_annotate)
# Needs: valgrind, kamailio, and the reference kit's bin/sip_responder in $REF (default
# /tmp/sipedge-ref: copy ../shared/reference there and run its install.sh). Users come from
# perf/gen_users.py, the same for all three systems.
# Note: valgrind hides SHA-NI, so any SHA-256 counts as software here; "minus SHA" prints the
# figure without it. Since session 8 nonce tags are SipHash and the column equals the total
# (SHA-256 is left only for SHA-256 digest credentials and nonces with the old HMAC tag).
set -u
N1=${1:-1000}; N2=${2:-4000}; RATE=${3:-400}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REF=${REF:-/tmp/sipedge-ref}
LG=$ROOT/target/release/sipedge-loadgen
SE=${SIPEDGE:-$ROOT/target/release/sipedge}
command -v valgrind >/dev/null || { echo "error: valgrind is not installed"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin sipedge --bin sipedge-loadgen) || exit 1
W=$(mktemp -d /tmp/sipedge-cgc.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  wait 2>/dev/null; if [ -n "${KEEP:-}" ]; then echo "callgrind outputs kept in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
PORT=5470
python3 "$ROOT/perf/gen_users.py" --n 1000 --out "$W/users" >/dev/null

sum_ir() { # dir -> total Ir over all callgrind outputs
  local t=0
  for f in "$1"/cg.out*; do
    v=$(grep -m1 '^summary:' "$f" 2>/dev/null | awk '{print $2}')
    [ -z "$v" ] && v=$(grep -m1 '^totals:' "$f" 2>/dev/null | awk '{print $2}')
    t=$((t + ${v:-0}))
  done
  echo $t
}
sha_ir() { # dir -> Ir in sha2's software compress, inclusive (its inlined helpers are listed
  # under other source files in the exclusive view, so summing exclusive lines is unreliable)
  local t=0
  for f in "$1"/cg.out*; do
    v=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null \
      | grep 'soft.rs:sha2::sha256::soft::compress \[' | head -1 | awk '{gsub(",","",$1); print $1+0}')
    t=$((t + ${v:-0}))
  done
  echo $t
}

wait_up() { for _ in $(seq 1 120); do "$LG" --target 127.0.0.1:$PORT --rate 10 --count 1 --duration 1 --sockets 1 \
  --users "$W/users/users.csv" --domain sbc.test >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }

measure() { # system N -> total Ir of that run
  local sys=$1 n=$2 d=$W/$1-$2
  mkdir -p "$d"; cd "$d"
  case $sys in
    raw) valgrind --tool=callgrind --callgrind-out-file="$d/cg.out.%p" "$REF/bin/sip_responder" $PORT 600 >/dev/null 2>&1 & ;;
    kamailio)
      sed -e "s#@DATA@#$W/users#" -e "s#@CHILDREN@#2#" -e "s#5070#$PORT#g" "$REF/kamailio/registrar.cfg" > kam.cfg
      valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$d/cg.out.%p" \
        kamailio -DD -E -m 512 -M 16 -x tlsf -X tlsf -f kam.cfg -P "$d/kam.pid" >kam.log 2>&1 & ;;
    sipedge)
      sed -e "s/127.0.0.1:5070/127.0.0.1:$PORT/; s/127.0.0.1:8090/127.0.0.1:8470/" -e 's/^workers = 2 /workers = 1 /' \
        "$ROOT/perf/register.toml" > r.toml
      "$SE" credentials add --config r.toml --username probe --password probe-password >/dev/null 2>&1
      RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$d/cg.out.%p" "$SE" run --config r.toml >se.log 2>&1 &
      for _ in $(seq 1 120); do curl -sf 127.0.0.1:8470/health >/dev/null 2>&1 && break; sleep 0.5; done
      curl -sf -o /dev/null -H "Authorization: Bearer $(cat sipedge-perf/admin.token)" -H 'content-type: application/json' \
        --data @"$W/users/credentials.json" 127.0.0.1:8470/api/v1/credentials ;;
  esac
  PID=$!
  sleep 3
  "$LG" --target 127.0.0.1:$PORT --rate "$RATE" --count "$n" --duration 300 --sockets 1 \
    --users "$W/users/users.csv" --domain sbc.test > lg.json 2>&1
  sleep 2
  kill -TERM "$PID" 2>/dev/null
  # kamailio: valgrind's pid is the main process; its children exit with it
  for _ in $(seq 1 60); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
  wait "$PID" 2>/dev/null; PID=
  sleep 1
  local ok; ok=$(python3 -c "import json; print(json.load(open('lg.json'))['ok'])" 2>/dev/null || echo 0)
  echo "$(sum_ir "$d") $(sha_ir "$d") $ok"
}

printf "%-9s %12s %12s %14s %14s\n" system "Ir/reg" "minus SHA" "ok(N1)" "ok(N2)"
for sys in ${SYSTEMS:-raw kamailio sipedge}; do
  read -r a sa oka < <(measure $sys "$N1")
  read -r b sb okb < <(measure $sys "$N2")
  per=$(( (b - a) / (okb - oka) ))
  nosha=$(( (b - a - (sb - sa)) / (okb - oka) ))
  printf "%-9s %12d %12d %14s %14s\n" $sys $per $nosha "$oka" "$okb"
done
