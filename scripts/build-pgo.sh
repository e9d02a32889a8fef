#!/bin/bash
# Profile-guided release build of sipedge (and of perf's sipedge-mediabench, which runs the same
# media relay code), for production and for the perf/ comparisons.
#
#   1. an instrumented build (-Cprofile-generate) into target/pgo-gen;
#   2. training runs of that build, on loopback only, each bounded in count and time and stopped
#      by PID by the script that starts it: registrations (perf/register.sh: one sipp step and
#      one loadgen step), calls through the B2BUA (perf/calls.sh: one step) and the RTP relay
#      (perf/media.sh: one step over 4,000 sessions, on sockets and, as root, through AF_XDP);
#   3. llvm-profdata merges the profiles (installs rustup's llvm-tools if missing);
#   4. the optimized build (-Cprofile-use) into target/pgo-use, copied to target/pgo/.
#
# Why: LLVM then lays the hot path out contiguously and inlines by measured call counts. On the
# registration path that is ~16 % fewer instructions than the plain release build (perf/RESULTS.md,
# session 9). Behaviour is identical: PGO changes code layout and inlining, never semantics, and
# the test suite covers the same source. Code the training runs never reach counts as cold: it
# is inlined less and placed away from the hot text, which is why the runs cover all three hot
# paths sipedge has (registrations, calls, media).
#
# Both builds name the target triple explicitly: with --target, RUSTFLAGS reach only sipedge's own
# crates and not build scripts, and symbol hashes match between the two builds (cargo's metadata
# hash includes it), which profile matching depends on.
#
# usage: scripts/build-pgo.sh        -> target/pgo/sipedge, target/pgo/sipedge-mediabench
# environment: PGO_STEP_S=8 (seconds per training step), KEEP_PROFILE=1 (also keep the raw
#   profiles and the training logs in target/pgo-data; target/pgo/sipedge.profdata is always kept)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STEP_S=${PGO_STEP_S:-8}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BINS=(--bin sipedge --bin sipedge-mediabench)
DATA=$ROOT/target/pgo-data
OUT=$ROOT/target/pgo
log() { echo "[$(date +%H:%M:%S)] build-pgo: $*"; }

PROFDATA=$(rustc --print sysroot)/lib/rustlib/$TRIPLE/bin/llvm-profdata
if [ ! -x "$PROFDATA" ]; then
  command -v rustup >/dev/null || { echo "error: $PROFDATA missing and no rustup to add llvm-tools with"; exit 1; }
  log "installing rustup component llvm-tools (for llvm-profdata)"
  rustup component add llvm-tools
fi
[ -x "$PROFDATA" ] || { echo "error: $PROFDATA missing (rustup component add llvm-tools)"; exit 1; }

log "plain release build of the load generator (not instrumented)"
cargo build --release --quiet --bin sipedge-loadgen

rm -rf "$DATA"; mkdir -p "$DATA" "$OUT"
log "instrumented build -> target/pgo-gen"
CARGO_TARGET_DIR=$ROOT/target/pgo-gen RUSTFLAGS="-Cprofile-generate=$DATA" \
  cargo build --release --quiet --target "$TRIPLE" "${BINS[@]}"
GEN=$ROOT/target/pgo-gen/$TRIPLE/release

# One bounded perf/ script run of the instrumented build: train NAME [VAR=VALUE ...] runs
# perf/NAME.sh with those variables, its log and JSON lines in $DATA.
train() {
  local name=$1; shift
  log "training: perf/$name.sh"
  env SYSTEMS=sipedge "$@" SKIP_BUILD=1 STEP_S="$STEP_S" OUT="$DATA/$name.jsonl" \
    LLVM_PROFILE_FILE="$DATA/%p-%m.profraw" "perf/$name.sh" > "$DATA/$name.log" 2>&1 \
    || { echo "error: training run failed, see $DATA/$name.log"; exit 1; }
}
train register SIPEDGE="$GEN/sipedge" RATES=16000 LG_RATES=32000 LAT_RATES=" "
train calls SIPEDGE="$GEN/sipedge" RATES=2000 MEM_STEP=0
# The AF_XDP relay (media.xdp_interface) too where the build may make a network namespace for it.
if [ "$(id -u)" -eq 0 ]; then
  train media MEDIABENCH="$GEN/sipedge-mediabench" RATES=100000 SYSTEMS="sipedge sipedge-xdp" DELIVERY=netns
else
  log "not root: the AF_XDP relay is not trained (it counts as cold code in this build)"
  train media MEDIABENCH="$GEN/sipedge-mediabench" RATES=100000
fi

n=$(find "$DATA" -name '*.profraw' | wc -l)
[ "$n" -gt 0 ] || { echo "error: the training runs wrote no profiles"; exit 1; }
log "merging $n profiles -> target/pgo/sipedge.profdata"
"$PROFDATA" merge -o "$OUT/sipedge.profdata" "$DATA"/*.profraw

log "optimized build -> target/pgo-use"
CARGO_TARGET_DIR=$ROOT/target/pgo-use RUSTFLAGS="-Cprofile-use=$OUT/sipedge.profdata" \
  cargo build --release --quiet --target "$TRIPLE" "${BINS[@]}"
cp "$ROOT/target/pgo-use/$TRIPLE/release/sipedge" "$ROOT/target/pgo-use/$TRIPLE/release/sipedge-mediabench" "$OUT/"
[ -n "${KEEP_PROFILE:-}" ] || rm -rf "$DATA"
log "done: $OUT/sipedge ($("$OUT/sipedge" --version 2>/dev/null || echo sipedge))"
