#!/bin/bash
# User-space instructions per registration, counted by callgrind: repeatable on a noisy machine
# (timings here vary 2x run to run; instruction counts do not). Runs sipedge (1 worker) under
# callgrind, provisions the users, zeroes the counters, sends N registrations with
# sipedge-loadgen at a low rate, dumps, and divides. Loopback only; every process is bounded and
# stopped by PID.
#   usage: perf/callgrind.sh [N=5000] [RATE=500]
# Note: valgrind hides SHA-NI, so the nonce HMAC shows as software SHA-256 (~3.5k instructions
# per compression, 4 per registration); on the real CPU it is a few hundred.
set -eu
N=${1:-5000}; RATE=${2:-500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "error: valgrind is not installed (apt-get install valgrind)"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin sipedge --bin sipedge-loadgen)
W=$(mktemp -d /tmp/sipedge-cg.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; cp "$(ls -t "$W"/cg.out.* | head -1)" "$KEEP"' EXIT
cd "$W"
sed -e 's/127.0.0.1:5070/127.0.0.1:5370/; s/127.0.0.1:8090/127.0.0.1:8390/' -e 's/^workers = 2 /workers = 1 /' \
  "$ROOT/perf/register.toml" > r.toml
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" \
  "$ROOT/target/release/sipedge" run --config r.toml > sipedge.log 2>&1 &
PID=$!
for _ in $(seq 1 120); do curl -sf 127.0.0.1:8390/health >/dev/null 2>&1 && break; sleep 0.5; done
python3 -c "import json; print(json.dumps([{'username':'user%05d'%i,'password':'password'} for i in range(1000)]))" > creds.json
curl -sf -o /dev/null -H "Authorization: Bearer $(cat sipedge-perf/admin.token)" -H 'content-type: application/json' \
  --data @creds.json 127.0.0.1:8390/api/v1/credentials
# one warm-up pass: every user gets its binding (first bindings are persisted; refreshes mostly not)
"$ROOT/target/release/sipedge-loadgen" --target 127.0.0.1:5370 --rate "$RATE" --count 1000 --duration 30 \
  --sockets 1 --gen-users 1000 --password password > warm.json
sleep 1.5
callgrind_control -z "$PID" >/dev/null
"$ROOT/target/release/sipedge-loadgen" --target 127.0.0.1:5370 --rate "$RATE" --count "$N" --duration 120 \
  --sockets 1 --gen-users 1000 --password password > run.json
sleep 1.5   # let the once-a-second persistence batch land inside the measurement
callgrind_control -d "$PID" >/dev/null
sleep 0.5
OK=$(python3 -c "import json; print(json.load(open('run.json'))['ok'])")
DUMP=$(ls -t "$W"/cg.out.* | head -1)
TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "sipedge user-space instructions: total $TOTAL for $OK registrations = $((TOTAL / OK)) per registration (all threads, idle loop included, rate $RATE/s)"
echo "top functions (inclusive):"
callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null | grep -E "sipedge::|sqlite3_step|sha2::|md5::" | head -25 | \
  sed -E 's/ \[[^]]*\]$//; s/^ *([0-9,]+) \([^)]*\) +[^:]*:/\1 /' | \
  awk -v ok="$OK" '{n=$1; gsub(",","",n); $1=""; printf "  %8d %s\n", n/ok, $0}'
