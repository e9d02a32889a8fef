#!/bin/bash
# RTP relay benchmark: the reference raw recvmmsg/sendmmsg forwarder, the same forwarder
# delivering each stream to its own sink socket (perf/raw/udp_fwd_streams.c), rtpengine (userspace,
# sessions via ng) and sipedge's media relay (perf/mediabench: the `media` module `sipedge run`
# uses, sessions set up directly), measured in one run on this machine with the kit's blaster,
# sink and per-step CPU accounting (`rtp_bench.py`). 172-byte RTP, A -> relay -> B.
#
# sipedge-xdp is the same relay with `media.xdp_interface = "lo"` (`--xdp lo`): frames of its
# ports reach it through AF_XDP (src/media/xdp.rs). It runs only in a namespace of this script's
# own (DELIVERY=netns or rps), never on the host's lo.
#
# Every relay is started here and stopped by its PID; every step is bounded (packet count and
# time); all traffic is on 127.0.0.1.
#
# usage: perf/media.sh
# environment (defaults):
#   SYSTEMS="raw raw-streams rtpengine sipedge"  which relays to measure, in this order (add
#                                    sipedge-xdp with DELIVERY=netns or rps)
#   SESSIONS=4000                    streams for rtpengine and sipedge (raw: 1 socket, 1 stream)
#   RATES="50000 100000 150000 200000 0"   offered pps per step (0 = blaster flat out)
#   STEP_S=8                         seconds per step
#   MEDIA_WORKERS=1                  sipedge media threads (rtpengine: THREADS=2, as in the kit)
#   SKIP_BUILD=                      1: use target/release/sipedge-mediabench as it is
#   MEDIABENCH=target/release/sipedge-mediabench   the relay binary (e.g. target/pgo/sipedge-mediabench)
#   REF=/tmp/sipedge-ref             scratch copy of shared/reference (copied + installed if missing)
#   PLACEMENT=split                  split: the relay confined to SUT_CPUS, the blaster and the sink
#                                    (rtp_bench.py) to GEN_CPUS (taskset); free: no taskset (see
#                                    perf/README.md, "Placement")
#   SUT_CPUS=0 GEN_CPUS=1            the CPU lists for PLACEMENT=split
#   DELIVERY=loopback                loopback: the host's lo, where a send also delivers the packet
#                                    into its receiver's socket on the sender's CPU; rps: the whole
#                                    run inside a network namespace of its own whose lo steers every
#                                    received packet (RPS) to GEN_CPUS, so a relay pays for its
#                                    sends and not for the sink's receive path, as behind a NIC
#                                    (perf/README.md, "Delivery"; needs root); netns: like
#                                    loopback, but inside a namespace of its own (needs root), as
#                                    sipedge-xdp requires
#   OUT=perf/results/media-<date>.jsonl
set -u
PERF=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$PERF")
SYSTEMS=${SYSTEMS:-"raw raw-streams rtpengine sipedge"}
SESSIONS=${SESSIONS:-4000}
RATES=${RATES:-"50000 100000 150000 200000 0"}
STEP_S=${STEP_S:-8}
MEDIA_WORKERS=${MEDIA_WORKERS:-1}
THREADS=${THREADS:-2}
REF=${REF:-/tmp/sipedge-ref}
REF_SRC=${REF_SRC:-$ROOT/../shared/reference}
[ -d "$REF_SRC" ] || REF_SRC=/work/shared/reference
DELIVERY=${DELIVERY:-loopback}
STAMP=${STAMP:-$(date +%Y%m%d-%H%M%S)}
case $DELIVERY in
  loopback)
    case " $SYSTEMS " in *" sipedge-xdp "*)
      echo "error: sipedge-xdp attaches XDP to lo: run it with DELIVERY=netns (or rps), never on the host's lo"; exit 1 ;;
    esac ;;
  netns|rps)
    if [ -z "${SIPEDGE_MEDIA_NETNS:-}" ]; then
      # Re-run this script inside a namespace of its own, deleted when it ends.
      NS=sipedge-media-$$
      MASK=$(python3 -c "import sys; print(format(sum(1 << int(c) for p in sys.argv[1].split(',') for c in (range(int(p.split('-')[0]), int(p.split('-')[-1]) + 1))), 'x'))" "${GEN_CPUS:-1}") \
        || { echo "error: GEN_CPUS=${GEN_CPUS:-1} is not a CPU list"; exit 1; }
      ip netns add "$NS" || { echo "error: cannot create network namespace $NS (root needed)"; exit 1; }
      trap 'ip netns del "$NS"' EXIT
      trap 'exit 130' INT TERM
      [ "$DELIVERY" = rps ] || MASK=0
      # route_localnet/accept_local: AF_XDP frames sent on lo come back in without the route a
      # locally sent packet carries (src/media/xdp.rs); nothing else here depends on them.
      ip netns exec "$NS" sh -c "ip link set lo up && echo $MASK > /sys/class/net/lo/queues/rx-0/rps_cpus \
        && sysctl -qw net.ipv4.conf.lo.route_localnet=1 net.ipv4.conf.lo.accept_local=1 net.ipv4.conf.all.accept_local=1" \
        || { echo "error: cannot set up lo in $NS"; exit 1; }
      SIPEDGE_MEDIA_NETNS=$NS STAMP=$STAMP ip netns exec "$NS" "$0" "$@"
      exit $?
    fi ;;
  *) echo "error: DELIVERY must be loopback, netns or rps, got '$DELIVERY'"; exit 1 ;;
esac
OUT=${OUT:-$PERF/results/media-$STAMP.jsonl}
BENCH=${MEDIABENCH:-$ROOT/target/release/sipedge-mediabench}
WORK=$(mktemp -d /tmp/sipedge-media.XXXXXX)
mkdir -p "$(dirname "$OUT")"
. "$PERF/placement.sh"
placement_setup

PID=""
stop_relay() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    PID=""
  fi
}
trap 'stop_relay; echo "work dir (logs): $WORK"' EXIT
trap 'exit 130' INT TERM
log() { echo "== $(date +%H:%M:%S) [load $(cut -d' ' -f1 /proc/loadavg)] $*"; }

if [ ! -x "$REF/bin/udp_fwd" ] || ! command -v rtpengine >/dev/null; then
  log "reference kit missing: copying $REF_SRC to $REF and running its install.sh"
  [ -d "$REF" ] || cp -r "$REF_SRC" "$REF"
  (cd "$REF" && ./install.sh) || { echo "error: reference kit install failed"; exit 1; }
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  log "cargo build --release --bin sipedge-mediabench"
  (cd "$ROOT" && cargo build --release --bin sipedge-mediabench) || { echo "error: build failed"; exit 1; }
fi
{
  echo "date: $(date -Is)"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "kernel: $(uname -r)"
  echo "uptime: $(uptime)"
  echo "rtpengine: $(rtpengine --version 2>&1 | head -1)"
  H=$(cat "$ROOT/.git/HEAD" 2>/dev/null); R=${H#ref: }
  echo "commit: $( [ "$R" != "$H" ] && cat "$ROOT/.git/$R" 2>/dev/null || echo "$H")"
  echo "sipedge-mediabench binary: $BENCH ($(stat -c '%y, %s bytes' "$BENCH" 2>/dev/null || echo missing))"
  placement_meta
  echo "delivery: $DELIVERY$( [ "$DELIVERY" != loopback ] && echo " (namespace ${SIPEDGE_MEDIA_NETNS:-}, lo rps_cpus $(cat /sys/class/net/lo/queues/rx-0/rps_cpus))")"
  echo "env: SYSTEMS='$SYSTEMS' SESSIONS=$SESSIONS RATES='$RATES' STEP_S=$STEP_S MEDIA_WORKERS=$MEDIA_WORKERS THREADS=$THREADS"
} | tee -a "${OUT%.jsonl}.meta"

steps() { # label streams ports
  for R in $RATES; do
    log "$1: $R pps x ${STEP_S}s over $2 streams"
    (cd "$REF" && timeout $((STEP_S * 4 + 60)) "${GEN[@]}" python3 rtp_bench.py --label "$1" --relay-pid "$PID" \
      --dst-ports "$3" --streams "$2" --pps "$R" --seconds "$STEP_S" --out "$OUT")
    sleep 1
  done
}

for sys in $SYSTEMS; do
  case $sys in
    raw-streams)
      # Every stream to the forwarder's one port; it sends each to the stream's own sink port.
      log "raw forwarder (1 socket, batch 32) to $SESSIONS sink sockets"
      gcc -O2 -o "$WORK/udp_fwd_streams" "$PERF/raw/udp_fwd_streams.c" || { echo "error: gcc failed"; exit 1; }
      "${SUT[@]}" "$WORK/udp_fwd_streams" 40000 50000 "$SESSIONS" 900 900 >"$WORK/raw-streams.log" 2>&1 &
      PID=$!; sleep 0.5
      steps raw-fwd-streams "$SESSIONS" "$(python3 -c "print(','.join(['40000'] * $SESSIONS))")"
      ;;
    raw)
      log "raw forwarder (1 socket, batch 32)"
      "${SUT[@]}" "$REF/bin/udp_fwd" 40000 50000 900 900 >"$WORK/raw.log" 2>&1 &
      PID=$!; sleep 0.5
      steps raw-udp-fwd 1 40000
      ;;
    rtpengine)
      log "rtpengine userspace, $THREADS threads, $SESSIONS sessions"
      "${SUT[@]}" rtpengine --config-file=none --foreground --log-stderr --interface=127.0.0.1 \
        --listen-ng=127.0.0.1:22222 --port-min=10000 --port-max=29999 --table=-1 \
        --num-threads="$THREADS" --timeout=600 --log-level=5 2>"$WORK/rtpengine.log" &
      PID=$!; sleep 1.5
      PORTS=$(cd "$REF" && python3 rtpengine/ng.py 22222 "$SESSIONS") || { echo "error: ng offer/answer failed"; exit 1; }
      steps "rtpengine-t$THREADS" "$SESSIONS" "$PORTS"
      ;;
    sipedge|sipedge-xdp)
      XDP=(); LABEL="sipedge-m$MEDIA_WORKERS"
      [ "$sys" = sipedge-xdp ] && { XDP=(--xdp lo); LABEL="sipedge-xdp-m$MEDIA_WORKERS"; }
      log "sipedge media relay, $MEDIA_WORKERS media thread(s), $SESSIONS sessions ${XDP[*]}"
      MAX_S=$(( (STEP_S * 4 + 20) * 6 + 60 ))
      "${SUT[@]}" "$BENCH" --sessions "$SESSIONS" --workers "$MEDIA_WORKERS" --port-min 10000 --seconds "$MAX_S" \
        "${XDP[@]}" >"$WORK/$sys.out" 2>"$WORK/$sys.log" &
      PID=$!
      for _ in $(seq 100); do grep -q '^ready' "$WORK/$sys.out" 2>/dev/null && break; sleep 0.1; done
      PORTS=$(sed -n 's/^ports //p' "$WORK/$sys.out")
      [ -n "$PORTS" ] || { echo "error: sipedge-mediabench did not start (see $WORK)"; exit 1; }
      if [ "$sys" = sipedge-xdp ] && ! grep -q 'xdp_queues=[1-9]' "$WORK/$sys.out"; then
        echo "error: AF_XDP did not attach (see $WORK/$sys.log)"; exit 1
      fi
      steps "$LABEL" "$SESSIONS" "$PORTS"
      stop_relay
      grep '^relayed=' "$WORK/$sys.out" | sed "s/^/   $sys: /"
      ;;
    *) echo "unknown system: $sys"; exit 2 ;;
  esac
  stop_relay
done

python3 - "$OUT" <<'EOF' | tee "${OUT%.jsonl}.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'relay':<16}{'streams':>8}{'offered':>9}{'relayed pps':>12}{'loss %':>8}{'relay CPU %':>12}{'µs/pkt':>8}{'host %':>8}")
for r in rows:
    print(f"{r['label']:<16}{r['streams']:>8}{str(r['offered_pps']):>9}{r['recv_pps']:>12}{r['loss_pct']:>8}"
          f"{r['relay_cpu_pct']:>12}{str(r['relay_cpu_us_per_pkt']):>8}{r['host_busy_pct']:>8}")
EOF
echo "results: $OUT (+ .meta .txt)"
