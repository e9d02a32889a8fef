#!/bin/bash
# Server-side processing latency at a given REGISTER rate: starts sipedge (release) with
# perf/register.toml on 127.0.0.1:5170 (admin :8190), provisions the users of perf/gen_users.py,
# drives sipedge-loadgen at RATE for 12 s over SOCKETS sockets, and prints the loadgen summary and
# `sipedge_processing_seconds{method="REGISTER"}` quantiles. Loopback only, bounded, stopped by PID.
#   usage: perf/latency.sh [WORKERS=2] [RATE=30000] [SOCKETS=8]
set -eu
W=${1:-2}; R=${2:-30000}; S=${3:-8}; N=$((R * 12))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --release --quiet --bin sipedge --bin sipedge-loadgen)
D=$(mktemp -d /tmp/sipedge-lat.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
cd "$D"
python3 "$ROOT/perf/gen_users.py" --n 10000 --out "$D/users" >/dev/null
sed -e 's/127.0.0.1:5070/127.0.0.1:5170/; s/127.0.0.1:8090/127.0.0.1:8190/' -e "s/^workers = 2 /workers = $W /" \
  "$ROOT/perf/register.toml" > r.toml
RUST_LOG=warn "$ROOT/target/release/sipedge" run --config r.toml > sipedge.log 2>&1 &
PID=$!
for _ in $(seq 1 50); do curl -sf 127.0.0.1:8190/health >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf -o /dev/null -H "Authorization: Bearer $(cat sipedge-perf/admin.token)" -H 'content-type: application/json' \
  --data @"$D/users/credentials.json" 127.0.0.1:8190/api/v1/credentials
"$ROOT/target/release/sipedge-loadgen" --target 127.0.0.1:5170 --rate "$R" --count "$N" --duration 20 --sockets "$S" \
  --users "$D/users/users.csv" --domain sbc.test | python3 -c 'import json,sys; d=json.load(sys.stdin); print("workers='"$W"' rate='"$R"' ok", d["ok"], "failed", d["failed"], "retrans", d["retrans"], "client p99 us", d["p99_us"])'
curl -s 127.0.0.1:8190/metrics | grep -E 'sipedge_processing_seconds\{method="REGISTER",quantile'
