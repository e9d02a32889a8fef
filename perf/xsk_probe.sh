#!/bin/bash
# Issue 5 feasibility probe: what an AF_XDP packet path would cost per relayed packet, next to
# the kernel-socket forwarders and sipedge's relay, in one run on this machine.
#
# perf/raw/xsk_fwd.c forwards like perf/raw/udp_fwd_streams.c (every stream to port 40000, each
# packet on to its own stream's sink socket, 50000 + 2 * (SSRC - 0x10000)), but packets reach it
# through perf/raw/xsk_fwd.bpf.c, an XDP program on lo (generic mode, copy) that redirects UDP to
# port 40000 into an AF_XDP socket. It rewrites the UDP ports in place in the umem and sends
# through the TX ring with one sendto() kick per batch: no recvmmsg, no copy out, no UDP/IP
# output path. Not a product path: the probe has no neighbour/route handling and sets the UDP
# checksum to 0 (no checksum, valid for IPv4).
#
# Everything runs in a network namespace of its own (deleted on exit), so the XDP program never
# touches the host's lo. Inside it, lo gets route_localnet=1 and accept_local=1: a frame sent
# from an AF_XDP socket on lo re-enters IP input without the route a locally sent packet carries,
# and 127.0.0.1 -> 127.0.0.1 would otherwise be dropped as martian / local-source. Relays run on
# SUT_CPUS, the kit's blaster and sink (rtp_bench.py) on GEN_CPUS. Every step is bounded; every
# relay is stopped by its PID.
#
# usage: perf/xsk_probe.sh
# environment: SYSTEMS="raw raw-streams xsk sipedge sipedge-xdp" RATES="50000 100000 150000 200000" STEP_S=6
#   SESSIONS=4000 SUT_CPUS=0 GEN_CPUS=1 REF=/tmp/sipedge-ref
#   MEDIABENCH=target/release/sipedge-mediabench OUT=perf/results/xsk-<date>.jsonl
# needs: root, clang, libbpf-dev, libxdp-dev (installed with apt-get if missing), the kit in $REF
set -u
PERF=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$PERF")
SYSTEMS=${SYSTEMS:-"raw raw-streams xsk sipedge"}
RATES=${RATES:-"50000 100000 150000 200000"}
STEP_S=${STEP_S:-6}
N=${SESSIONS:-4000}
SUT_CPUS=${SUT_CPUS:-0}; GEN_CPUS=${GEN_CPUS:-1}
REF=${REF:-/tmp/sipedge-ref}
MB=${MEDIABENCH:-$ROOT/target/release/sipedge-mediabench}
OUT=${OUT:-$PERF/results/xsk-$(date +%Y%m%d-%H%M%S).jsonl}
log() { echo "== $(date +%H:%M:%S) $*"; }

if [ -z "${XSK_PROBE_NETNS:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "error: root needed (network namespace, XDP)"; exit 1; }
  [ -x "$REF/bin/udp_fwd" ] || { echo "error: $REF/bin/udp_fwd missing (see perf/README.md: copy the kit and run its install.sh)"; exit 1; }
  [ -x "$MB" ] || { echo "error: $MB missing (cargo build --release --bin sipedge-mediabench)"; exit 1; }
  if ! command -v clang >/dev/null || [ ! -f /usr/include/xdp/xsk.h ] || [ ! -f /usr/include/bpf/libbpf.h ]; then
    log "installing clang libbpf-dev libxdp-dev"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      clang libbpf-dev libxdp-dev >/dev/null || { echo "error: apt-get install failed"; exit 1; }
  fi
  W=$(mktemp -d /tmp/sipedge-xsk.XXXXXX)
  clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c "$PERF/raw/xsk_fwd.bpf.c" -o "$W/xsk_fwd.bpf.o" \
    && gcc -O2 -o "$W/xsk_fwd" "$PERF/raw/xsk_fwd.c" $(pkg-config --cflags --libs libxdp libbpf) \
    && gcc -O2 -o "$W/udp_fwd_streams" "$PERF/raw/udp_fwd_streams.c" || { echo "error: build failed"; exit 1; }
  NS=sipedge-xsk-$$
  ip netns add "$NS" || { echo "error: cannot create network namespace $NS"; exit 1; }
  trap 'ip netns del "$NS"; rm -rf "$W"' EXIT
  trap 'exit 130' INT TERM
  ip netns exec "$NS" sh -c "ip link set lo up && sysctl -qw net.ipv4.conf.lo.route_localnet=1 net.ipv4.conf.lo.accept_local=1 net.ipv4.conf.all.accept_local=1" \
    || { echo "error: cannot set up lo in $NS"; exit 1; }
  mkdir -p "$(dirname "$OUT")"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null)  kernel: $(uname -r)  cpus: SUT $SUT_CPUS, GEN $GEN_CPUS"
  echo "env: SYSTEMS='$SYSTEMS' RATES='$RATES' STEP_S=$STEP_S SESSIONS=$N MEDIABENCH=$MB"
  XSK_PROBE_NETNS=$NS XSK_WORK=$W OUT=$OUT MEDIABENCH=$MB ip netns exec "$NS" "$0" "$@"
  rc=$?
  echo "results: $OUT"
  exit $rc
fi

# Inside the namespace.
W=$XSK_WORK
PID=""
stop() { [ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; PID=""; }
trap stop EXIT
P40=$(python3 -c "print(','.join(['40000'] * $N))")
steps() { # label streams ports
  for r in $RATES; do
    (cd "$REF" && taskset -c "$GEN_CPUS" python3 rtp_bench.py --label "$1" --relay-pid "$PID" --dst-ports "$3" \
      --streams "$2" --pps "$r" --seconds "$STEP_S" --out "$OUT") | python3 -c "
import json, sys; r = json.loads(sys.stdin.read())
print(f\"{r['label']:12} {int(r['offered_pps']):7} pps offered  {r['recv_pps']:7} received  loss {r['loss_pct']} %  relay {r['relay_cpu_us_per_pkt']} µs/pkt\")"
  done
}
for sys in $SYSTEMS; do
  case $sys in
    raw) log "kit raw forwarder (1 socket, 1 sink)"
      taskset -c "$SUT_CPUS" "$REF/bin/udp_fwd" 40000 50000 600 600 >/dev/null & PID=$!; sleep 0.5
      steps raw-udp-fwd 1 40000 ;;
    raw-streams) log "raw forwarder to $N sink sockets"
      taskset -c "$SUT_CPUS" "$W/udp_fwd_streams" 40000 50000 "$N" 600 600 >/dev/null & PID=$!; sleep 0.5
      steps raw-fwd-streams "$N" "$P40" ;;
    xsk) log "AF_XDP forwarder (generic XDP on lo, copy mode) to $N sink sockets"
      taskset -c "$SUT_CPUS" "$W/xsk_fwd" "$W/xsk_fwd.bpf.o" 50000 "$N" 600 600 >"$W/xsk.log" 2>&1 & PID=$!; sleep 1
      grep -q ready "$W/xsk.log" || { echo "error: xsk_fwd did not start: $(cat "$W/xsk.log")"; exit 1; }
      steps xsk-fwd-streams "$N" "$P40" ;;
    sipedge|sipedge-xdp)
      # sipedge-xdp: the same relay with media.xdp_interface = lo (AF_XDP).
      XDP=(); LABEL=sipedge-m1
      [ "$sys" = sipedge-xdp ] && { XDP=(--xdp lo); LABEL=sipedge-xdp; }
      log "sipedge media relay, $N sessions ${XDP[*]}"
      taskset -c "$SUT_CPUS" "$MB" --sessions "$N" --workers 1 --port-min 10000 --seconds 600 "${XDP[@]}" >"$W/mb.log" 2>&1 & PID=$!
      for _ in $(seq 100); do grep -q ready "$W/mb.log" && break; sleep 0.2; done
      PORTS=$(sed -n 's/^ports //p' "$W/mb.log")
      [ -n "$PORTS" ] || { echo "error: sipedge-mediabench did not start"; exit 1; }
      steps "$LABEL" "$N" "$PORTS" ;;
    *) echo "error: unknown system $sys"; exit 1 ;;
  esac
  stop
done
