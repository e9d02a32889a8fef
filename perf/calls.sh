#!/bin/bash
# Call benchmark: INVITE(SDP)/100/180/200/ACK/BYE/200, hold ~0, through Kamailio as a stateful
# proxy (the reference kit's proxy.cfg: tm + record_route, 2 children, tlsf) and through sipedge
# (a B2BUA: two legs, a trunk caller, caller-ID check, a core gateway), measured on the same
# machine in the same run with the same sipp peers: a sipp UAC on :5060 and the kit's sipp UAS on
# 127.0.0.1:5090, the system under test (SUT) on 127.0.0.1:5070. Every step is bounded (sipp -m/
# -timeout, bench.py --max-s); every daemon is started here in the background and stopped by its
# PID on exit. Everything runs on 127.0.0.0/8 only.
#
# Kamailio: the kit's call_uac.xml from 127.0.0.1:5060 -> 127.0.0.1:5070 -> UAS (as run_proxy.sh).
# sipedge: every 127.0.0.1 source is "core" (the gateway's address, SPEC §3.3), so the UAC binds
# 127.0.0.2 and is provisioned through the REST API as trunk perf-pbx (127.0.0.2/32) of tenant
# perf, which owns +15551230001, the caller ID of perf/sipp/call_uac_trunk.xml; it calls
# +4930123456, which sipedge routes to its only gateway, the UAS (perf/calls.toml).
#
# Per step (one JSON line each, then a table): offered calls/s, ok calls/s, failed % (not completed:
# no 200 within sipp's 5 s -recv_timeout, or a wrong final answer), sipp's retransmissions, SUT CPU
# (all its processes/threads, /proc/PID/stat, user and sys apart) as % of one core and per ok call,
# the UAC's and the UAS's CPU, host busy (of 100 x nproc), datagrams the kernel dropped on the SUT's,
# UAS's and UAC's ports (full socket buffers: who could not keep up). "sustained" = best step with
# 0 failed calls, "clean" = also 0 retransmissions.
#
# usage: perf/calls.sh               (from anywhere)
# environment (defaults):
#   SYSTEMS="kamailio sipedge"       which systems to measure, in this order
#   RATES="2000 4000 6000 8000 10000"  offered calls/s per step (calls = rate * STEP_S)
#   STEP_S=10                        seconds per step
#   HOLD_MS=0                        call hold time (sipp -d)
#   MEM_STEP=1                       1: a final sipedge step on a fresh process holding MEM_CALLS
#                                    calls up at once; RSS (/proc/PID/status) before and while they
#                                    are up, with /metrics sipedge_calls_active -> bytes per call
#   MEM_CALLS=1000 MEM_RATE=500 MEM_HOLD_MS=20000   that step (hold < sipedge's media timeout 60 s)
#   SKIP_BUILD=1                     1 (default here): use target/release/sipedge as it is;
#                                    empty: cargo build --release --bin sipedge first
#   REF=/tmp/sipedge-ref             scratch copy of shared/reference (copied + installed if missing)
#   PLACEMENT=split                  split: the system under test confined to SUT_CPUS, both sipp
#                                    peers to GEN_CPUS (taskset), sipedge with one worker per SUT
#                                    CPU; free: no taskset, perf/calls.toml's pinned workers (see
#                                    perf/README.md, "Placement")
#   SUT_CPUS=0 GEN_CPUS=1            the CPU lists for PLACEMENT=split
#   OUT=perf/results/calls-<date>.jsonl
set -u
PERF=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$PERF")
SYSTEMS=${SYSTEMS:-"kamailio sipedge"}
RATES=${RATES:-"2000 4000 6000 8000 10000"}
STEP_S=${STEP_S:-10}
HOLD_MS=${HOLD_MS:-0}
MEM_STEP=${MEM_STEP:-1}
MEM_CALLS=${MEM_CALLS:-1000}
MEM_RATE=${MEM_RATE:-500}
MEM_HOLD_MS=${MEM_HOLD_MS:-20000}
SKIP_BUILD=${SKIP_BUILD-1}
REF=${REF:-/tmp/sipedge-ref}
REF_SRC=${REF_SRC:-$ROOT/../shared/reference}
[ -d "$REF_SRC" ] || REF_SRC=/work/shared/reference
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$PERF/results/calls-$STAMP.jsonl}
SIPEDGE=${SIPEDGE:-$ROOT/target/release/sipedge}
PORT=5070      # SUT
UAS_PORT=5090  # sipp UAS (the callee; sipedge's core gateway)
UAC_PORT=5060  # sipp UAC (127.0.0.1 toward Kamailio, 127.0.0.2 toward sipedge)
ADMIN=127.0.0.1:8091
CALLER=+15551230001
CALLED=+4930123456
WORK=$(mktemp -d /tmp/sipedge-calls.XXXXXX)
mkdir -p "$(dirname "$OUT")"
. "$PERF/placement.sh"
placement_setup "$PERF/calls.toml"
HOLD_S=$(awk "BEGIN{print $HOLD_MS/1000}")
NRATES=$(echo $RATES | wc -w)
# the UAS lives through all steps of one system (+ smoke, memory step, pauses)
UAS_TIMEOUT=$((NRATES * (STEP_S * 3 + 30) + MEM_HOLD_MS / 1000 + 180))

DAEMON_PID=""
UAS_PID=""
stop_pid() { # pid: TERM, up to 5 s, then KILL
  kill "$1" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}
stop_daemon() { [ -n "$DAEMON_PID" ] && stop_pid "$DAEMON_PID"; DAEMON_PID=""; }
stop_uas() { [ -n "$UAS_PID" ] && stop_pid "$UAS_PID"; UAS_PID=""; }
cleanup() { stop_daemon; stop_uas; echo "work dir (logs): $WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $(date +%H:%M:%S) [load $(cut -d' ' -f1 /proc/loadavg)] $*"; }
# a UDP socket on 127.0.0.1:port or the wildcard (other loopback addresses are someone else's)
port_busy() { # port
  ss -Hluan "sport = :$1" 2>/dev/null | awk '{print $4}' | grep -Eq "^(127\.0\.0\.1|0\.0\.0\.0|\*|\[::\]):$1\$"
}
wait_port() { # pid port: until something listens on port (and pid lives), 15 s at most
  for _ in $(seq 150); do
    kill -0 "$1" 2>/dev/null || return 1
    port_busy "$2" && return 0
    sleep 0.1
  done
  return 1
}

# ---- prerequisites -------------------------------------------------------------------------
if [ ! -f "$REF/sipp/call_uas.xml" ] || ! command -v sipp >/dev/null || ! command -v kamailio >/dev/null; then
  log "reference kit missing: copying $REF_SRC to $REF and running its install.sh (apt-get, gcc)"
  [ -d "$REF" ] || cp -r "$REF_SRC" "$REF"
  (cd "$REF" && ./install.sh) || { echo "error: reference kit install failed"; exit 1; }
fi
if [ -z "$SKIP_BUILD" ]; then
  log "cargo build --release (sipedge)"
  (cd "$ROOT" && cargo build --release --bin sipedge) || { echo "error: build failed"; exit 1; }
fi
for p in $UAC_PORT $UAS_PORT $PORT; do
  port_busy $p && { echo "error: udp 127.0.0.1:$p already in use: $(ss -Hluanp "sport = :$p")"; exit 1; }
done

{
  echo "date: $(date -Is)"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "kernel: $(uname -r)"
  echo "uptime: $(uptime)"
  echo "sipp: $(sipp -v 2>&1 | grep -o 'SIPp v[0-9.]*' | head -1)  kamailio: $(kamailio -v 2>/dev/null | head -1)"
  # the commit without running git: .git/HEAD -> ref file (or a detached hash)
  H=$(cat "$ROOT/.git/HEAD" 2>/dev/null); R=${H#ref: }
  echo "commit: $( [ "$R" != "$H" ] && cat "$ROOT/.git/$R" 2>/dev/null || echo "$H")"
  echo "sipedge binary: $(stat -c '%y %s bytes' "$SIPEDGE" 2>/dev/null)"
  placement_meta
  echo "env: SYSTEMS='$SYSTEMS' RATES='$RATES' STEP_S=$STEP_S HOLD_MS=$HOLD_MS MEM_STEP=$MEM_STEP MEM_CALLS=$MEM_CALLS MEM_RATE=$MEM_RATE MEM_HOLD_MS=$MEM_HOLD_MS"
} | tee -a "${OUT%.jsonl}.meta"

# ---- the sipp peers ------------------------------------------------------------------------
# Per system: the UAC's scenario, its local address and the called user (sipp -s).
uac_args() { # system
  case $1 in
    kamailio) echo "-sf $REF/sipp/call_uac.xml -s service -i 127.0.0.1" ;;
    sipedge) echo "-sf $PERF/sipp/call_uac_trunk.xml -s $CALLED -i 127.0.0.2" ;;
  esac
}
# the kit's UAC options (run_proxy.sh), plus the unexpected messages into an error file
UAC_OPTS="-p $UAC_PORT -l 19000 -recv_timeout 5000 -default_behaviors all,-abortunexp -buff_size 4194304 -trace_err -max_log_size 20000000"

start_uas() { # exactly the kit's UAS (run_proxy.sh), bounded by -timeout; its CPU is the "peer"
  "${GEN[@]}" sipp -sf "$REF/sipp/call_uas.xml" -i 127.0.0.1 -p $UAS_PORT -nostdin -timeout ${UAS_TIMEOUT}s \
    -buff_size 4194304 >/dev/null 2>"$WORK/uas-$1.err" &
  UAS_PID=$!
  if ! wait_port "$UAS_PID" $UAS_PORT; then
    echo "error: sipp UAS did not start:"; tail -5 "$WORK/uas-$1.err"; stop_uas; return 1
  fi
  log "sipp UAS started on 127.0.0.1:$UAS_PORT, pid $UAS_PID (timeout ${UAS_TIMEOUT}s)"
}
start_checked() { # name logfile cmd... (sets DAEMON_PID)
  local name=$1 logf=$2; shift 2
  if port_busy $PORT; then echo "error: udp 127.0.0.1:$PORT already in use: $(ss -Hluanp "sport = :$PORT" | grep -E '(127\.0\.0\.1|0\.0\.0\.0|\*|\[::\]):'"$PORT ")"; return 1; fi
  "$@" >"$logf" 2>&1 &
  DAEMON_PID=$!
  if ! wait_port "$DAEMON_PID" $PORT; then
    echo "error: $name did not start; last log lines:"; tail -5 "$logf"; stop_daemon; return 1
  fi
  log "$name started, pid $DAEMON_PID"
}
smoke() { # system logfile: one call must go through before measuring
  local sys=$1 logf=$2 rc
  # shellcheck disable=SC2046
  (cd "$WORK" && "${GEN[@]}" sipp $(uac_args "$sys") 127.0.0.1:$PORT $UAC_OPTS -error_file "$WORK/smoke-$sys.err" \
    -trace_msg -message_file "$WORK/smoke-$sys.msg" -d "$HOLD_MS" -m 1 -timeout 15s -nostdin \
    >/dev/null 2>"$WORK/smoke-$sys.stderr")
  rc=$?
  if [ $rc = 0 ]; then echo "smoke: 1 call through $sys: ok"; return 0; fi
  echo "error: $sys smoke test failed (sipp exit $rc): one call did not complete"
  echo "-- sipp stderr:"; tail -5 "$WORK/smoke-$sys.stderr"
  echo "-- sipp's first unexpected message (all: $WORK/smoke-$sys.err, every message: $WORK/smoke-$sys.msg):"
  head -16 "$WORK/smoke-$sys.err" 2>/dev/null
  echo; echo "-- $sys log tail ($logf):"; tail -20 "$logf" | sed 's/\x1b\[[0-9;]*m//g'
  return 1
}
summary() { # the last line of $OUT, one readable line
  python3 - "$OUT" <<'EOF'
import json, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
g = lambda k: "-" if r.get(k) is None else r[k]
d = r.get("udp_drops") or {}
print(f"   {r['system']}: offered {r['offered_rate']:.0f} cps -> ok {r['ok_per_s']:.0f} calls/s, failed {r['fail_pct']} %, "
      f"retrans {r['retrans']}, SUT CPU {r['sut_cpu_pct']} %, {g('sut_us_per_ok')} µs/call "
      f"(user {g('sut_user_us_per_ok')}, sys {g('sut_sys_us_per_ok')}); UAC {r['gen_cpu_pct']} %, "
      f"UAS {g('peer_cpu_pct')} %, host {r['host_busy_pct']} %; kernel drops SUT/UAS/UAC "
      f"{d.get('5070', '-')}/{d.get('5090', '-')}/{d.get('5060', '-')}")
EOF
}

# ---- steps ---------------------------------------------------------------------------------
call_steps() { # system pid
  local R
  for R in $RATES; do
    log "$1: sipp $R calls/s x ${STEP_S}s (hold ${HOLD_MS} ms)"
    # shellcheck disable=SC2046
    (cd "$WORK" && python3 "$PERF/bench.py" --system "$1" --label "$1-hold${HOLD_MS}ms" --rate "$R" \
      --calls $((R * STEP_S)) --hold "$HOLD_S" --watch "$2" --peer "$UAS_PID" --out "$OUT" \
      --udp-port $PORT --udp-port $UAS_PORT --udp-port $UAC_PORT --max-s $((STEP_S * 3 + 60)) -- \
      "${GEN[@]}" sipp $(uac_args "$1") 127.0.0.1:$PORT $UAC_OPTS -error_file "$WORK/$1-$R.err" -d "$HOLD_MS" \
      -timeout $((STEP_S * 3 + 20))s)
    summary
    sleep 3
  done
}

run_kamailio() {
  local cfg=$WORK/kamailio-proxy.cfg
  # exactly the kit's run_proxy.sh proxy 2: proxy.cfg with 2 children, -m 1024 -M 16, tlsf
  sed -e "s#@CHILDREN@#2#" "$REF/kamailio/proxy.cfg" > "$cfg"
  start_uas kamailio || return 1
  start_checked kamailio "$WORK/kamailio.log" \
    "${SUT[@]}" kamailio -DD -E -m 1024 -M 16 -x tlsf -X tlsf -f "$cfg" -P "$WORK/kamailio.pid" || { stop_uas; return 1; }
  sleep 2
  smoke kamailio "$WORK/kamailio.log" || { stop_daemon; stop_uas; return 1; }
  call_steps kamailio "$DAEMON_PID"
  stop_daemon
  stop_uas
}

start_sipedge() {
  start_checked sipedge "$WORK/sipedge-$1.log" \
    "${SUT[@]}" bash -c "cd '$WORK/sipedge' && exec '$SIPEDGE' run --config '$SIPEDGE_CONFIG'"
}
api_post() { # token resource json
  local code
  code=$(curl -s -m 10 -o "$WORK/api.out" -w '%{http_code}' -X POST -H "Authorization: Bearer $1" \
    -H 'Content-Type: application/json' --data "$3" "http://$ADMIN/api/v1/$2")
  log "POST /api/v1/$2: HTTP $code $(head -c 200 "$WORK/api.out")"
  [ "$code" = 201 ] || [ "$code" = 200 ]
}
provision_api() { # the caller: tenant perf, trunk perf-pbx (the UAC's address), its number
  local tok
  tok=$(cat "$WORK/sipedge/sipedge-calls/admin.token" 2>/dev/null) || { echo "error: no admin.token"; return 1; }
  api_post "$tok" tenants '{"name":"perf"}' &&
  api_post "$tok" trunks '{"name":"perf-pbx","tenant":"perf","cidrs":["127.0.0.2/32"],"destination":"sip:127.0.0.2:5060","max_calls":1000000,"max_cps":1000000}' &&
  api_post "$tok" numbers "{\"number\":\"$CALLER\",\"tenant\":\"perf\",\"route\":{\"trunk\":\"perf-pbx\"}}"
}
metric_sum() { # name: sum over its label sets from /metrics
  curl -s -m 5 "http://$ADMIN/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2; n++} END {if (n) printf "%d", s; else print "?"}'
}
rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }

mem_step() { # on a fresh sipedge: RSS before, and while MEM_CALLS calls are up
  start_sipedge mem || return 1
  sleep 1.5
  smoke sipedge "$WORK/sipedge-mem.log" || { stop_daemon; return 1; }
  local pid=$DAEMON_PID rss0 anon0 act0 act1 rss2 bpid n rss anon max_rss=0 max_anon=0 samples=""
  act0=$(metric_sum sipedge_calls_active)
  # Warm-up with short calls at low concurrency: code paths and buffers allocated on first use
  # belong in the baseline; per-call tables are not grown by it (a few calls up at a time).
  # shellcheck disable=SC2046
  (cd "$WORK" && "${GEN[@]}" sipp $(uac_args sipedge) 127.0.0.1:$PORT $UAC_OPTS -error_file "$WORK/sipedge-warm.err" \
    -d 0 -r 100 -m 200 -timeout 30s -nostdin >/dev/null 2>&1) || echo "warning: warm-up calls failed"
  sleep 3
  # No /metrics scrape between the baseline and the last RSS sample: rendering /metrics clones one
  # HdrHistogram (1 ns..60 s, 3 digits, ~0.5 MB) per method and merges them, several MB of
  # temporaries that can stay in the allocator's RSS and would be counted as call memory.
  rss0=$(rss_kb "$pid" VmRSS); anon0=$(rss_kb "$pid" RssAnon)
  log "sipedge memory step: $MEM_CALLS calls at $MEM_RATE/s held ${MEM_HOLD_MS} ms; before: VmRSS $rss0 kB, RssAnon $anon0 kB, calls_active $act0 (after the smoke call)"
  # shellcheck disable=SC2046
  (cd "$WORK" && python3 "$PERF/bench.py" --system sipedge-mem --label "sipedge-mem$MEM_CALLS" \
    --rate "$MEM_RATE" --calls "$MEM_CALLS" --hold "$(awk "BEGIN{print $MEM_HOLD_MS/1000}")" \
    --watch "$pid" --peer "$UAS_PID" --out "$WORK/mem-step.jsonl" \
    --max-s $((MEM_CALLS / MEM_RATE + MEM_HOLD_MS / 1000 + 60)) -- \
    "${GEN[@]}" sipp $(uac_args sipedge) 127.0.0.1:$PORT $UAC_OPTS -error_file "$WORK/sipedge-mem.err" \
    -d "$MEM_HOLD_MS" -l "$MEM_CALLS" -timeout $((MEM_CALLS / MEM_RATE + MEM_HOLD_MS / 1000 + 40))s) \
    > "$WORK/mem-step.out" 2>&1 &
  bpid=$!
  # RSS every second while the calls are up: from when all should be set up (MEM_CALLS/MEM_RATE
  # + 1 s) until ~3 s before the first BYE; then calls_active once, with the calls still up
  sleep $((MEM_CALLS / MEM_RATE + 1))
  n=$((MEM_HOLD_MS / 1000 - MEM_CALLS / MEM_RATE - 3)); [ "$n" -ge 1 ] || n=1
  for n in $(seq "$n"); do
    rss=$(rss_kb "$pid" VmRSS); anon=$(rss_kb "$pid" RssAnon)
    samples="$samples $rss"
    [ "${rss:-0}" -gt "$max_rss" ] && max_rss=$rss
    [ "${anon:-0}" -gt "$max_anon" ] && max_anon=$anon
    sleep 1
  done
  act1=$(metric_sum sipedge_calls_active)
  echo "   VmRSS kB every 1 s with the calls up:$samples; then sipedge_calls_active $act1"
  wait "$bpid"
  cat "$WORK/mem-step.out"
  sleep 2
  rss2=$(rss_kb "$pid" VmRSS)
  echo "   after the calls ended: VmRSS $rss2 kB, calls_active $(metric_sum sipedge_calls_active)"
  python3 - "$OUT" "$WORK/mem-step.jsonl" "$rss0" "$anon0" "$act0" "$max_rss" "$max_anon" "$act1" \
    "$MEM_CALLS" "$MEM_RATE" "$MEM_HOLD_MS" "$rss2" "$rss" "$samples" <<'EOF'
import json, statistics, sys, time
out, stepf = sys.argv[1], sys.argv[2]
rss0, anon0, act0, rss1, anon1, act1, calls, rate, hold, rss2, rss_last = sys.argv[3:14]
# The median sample: the allocator returns a ramp's transient growth within seconds, so the
# peak sample overstates what the calls themselves hold.
rss_median = str(int(statistics.median([int(x) for x in sys.argv[14].split()]))) if sys.argv[14].split() else ""
step = {}
try:
    step = json.loads(open(stepf).read().splitlines()[-1])
except Exception:  # noqa: BLE001 - reported as missing
    pass
i = lambda v: int(v) if v.isdigit() else None
act = (i(act1) or 0) - (i(act0) or 0)
per = lambda a, b: round((i(b) - i(a)) * 1024 / act) if act > 0 and i(a) and i(b) else None
r = dict(system="sipedge", kind="memory", label=f"sipedge-mem{calls}", calls=int(calls), rate=float(rate),
         hold_ms=int(hold), vmrss_before_kb=i(rss0), vmrss_during_kb=i(rss1), vmrss_last_kb=i(rss_last),
         rssanon_before_kb=i(anon0), rssanon_during_kb=i(anon1), vmrss_after_kb=i(rss2),
         calls_active_before=i(act0), calls_active_during=i(act1),
         bytes_per_call=per(rss0, rss1), bytes_per_call_last=per(rss0, rss_last), anon_bytes_per_call=per(anon0, anon1),
         bytes_per_call_median=per(rss0, rss_median),
         ok=step.get("ok"), failed=step.get("failed"), retrans=step.get("retrans"),
         time=time.strftime("%Y-%m-%dT%H:%M:%S"))
print(json.dumps(r))
with open(out, "a") as f:
    f.write(json.dumps(r) + "\n")
print(f"memory per active call: {r['bytes_per_call']} bytes (RSS delta / active calls: peak VmRSS {rss0} -> {rss1} kB "
      f"with {act} calls up; median sample {r['bytes_per_call_median']}, last sample {r['bytes_per_call_last']} bytes/call; "
      f"RssAnon {r['anon_bytes_per_call']} bytes/call)")
EOF
  stop_daemon
}

run_sipedge() {
  [ -x "$SIPEDGE" ] || { echo "error: $SIPEDGE missing"; return 1; }
  mkdir -p "$WORK/sipedge"
  (cd "$WORK/sipedge" && "$SIPEDGE" check-config "$SIPEDGE_CONFIG") || { echo "error: $SIPEDGE_CONFIG rejected"; return 1; }
  start_uas sipedge || return 1
  start_sipedge 1 || { stop_uas; return 1; }
  sleep 1
  provision_api || { echo "error: provisioning over the API failed"; stop_daemon; stop_uas; return 1; }
  sleep 1.5 # "take effect within 1 s"
  smoke sipedge "$WORK/sipedge-1.log" || { stop_daemon; stop_uas; return 1; }
  call_steps sipedge "$DAEMON_PID"
  { echo "# sipedge after the call steps"; curl -s -m 5 "http://$ADMIN/metrics" \
    | grep -E '^sipedge_(calls_|sip_responses_total|dropped_total|processing_seconds\{method="INVITE"|worker_messages_total|media_sessions)'; } \
    > "${OUT%.jsonl}.metrics.txt"
  log "sipedge after the steps: calls_active $(metric_sum sipedge_calls_active) (sipp has ended all its calls), calls_rejected $(metric_sum sipedge_calls_rejected_total), dropped $(metric_sum sipedge_dropped_total)"
  stop_daemon
  if [ "$MEM_STEP" = 1 ]; then
    sleep 2
    mem_step || echo "!! sipedge memory step failed (see above)"
  fi
  stop_uas
}

for S in $SYSTEMS; do
  log "=== $S"
  case $S in
    kamailio) run_kamailio ;;
    sipedge) run_sipedge ;;
    *) echo "unknown system $S" ;;
  esac || echo "!! $S: not measured (see above)"
  sleep 2
done

# ---- report --------------------------------------------------------------------------------
report() { # [--markdown]
  python3 - "$OUT" "$@" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
mem = [r for r in rows if r.get("kind") == "memory"]
rows = [r for r in rows if r.get("kind") != "memory"]
md = "--markdown" in sys.argv
hdr = ["system", "offered cps", "ok calls/s", "fail %", "retrans", "SUT CPU %", "µs/call", "user µs", "sys µs",
       "UAC %", "UAS %", "host %", "drops SUT/UAS/UAC", "load1"]
drops = lambda d: "/".join(str(d.get(p, "-")) for p in ("5070", "5090", "5060")) if d else "-"
f = lambda v, nd=1: "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))
out = [[r["system"], f(int(r["offered_rate"])), f(r["ok_per_s"], 0), f(r["fail_pct"], 3), f(r["retrans"]),
        f(r["sut_cpu_pct"]), f(r["sut_us_per_ok"]), f(r["sut_user_us_per_ok"]), f(r["sut_sys_us_per_ok"]),
        f(r["gen_cpu_pct"]), f(r.get("peer_cpu_pct")), f(r["host_busy_pct"]), drops(r.get("udp_drops")),
        f(r["load1_before"], 2)] for r in rows]
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
print()
# per system: the best sustained step (0 failed calls) and the best clean one (also 0 retransmissions)
for name, clean in (("sustained", False), ("clean", True)):
    best = {}
    for r in rows:
        if r["ok"] and r["fail_pct"] == 0 and (not clean or r["retrans"] == 0):
            if r["system"] not in best or r["ok_per_s"] > best[r["system"]]["ok_per_s"]:
                best[r["system"]] = r
    for s in sorted({r["system"] for r in rows}):
        r = best.get(s)
        line = (f"{name} {s:9s}: {r['ok_per_s']:7.0f} calls/s (offered {r['offered_rate']:.0f}, {r['retrans']} retrans), "
                f"{r['sut_us_per_ok']} µs/call (user {r['sut_user_us_per_ok']}, sys {r['sut_sys_us_per_ok']}), "
                f"SUT CPU {r['sut_cpu_pct']} %" if r else
                f"{name} {s:9s}: no step with 0 failed calls" + (" and 0 retransmissions" if clean else ""))
        print(("- " if md else "") + line)
for m in mem:
    print(("- " if md else "") + f"memory per active call: {m['bytes_per_call']} bytes (RSS delta / active calls: "
          f"peak VmRSS {m['vmrss_before_kb']} -> {m['vmrss_during_kb']} kB, {m['calls_active_during']} calls up; "
          f"median sample {m.get('bytes_per_call_median')}, last sample {m.get('bytes_per_call_last')}, "
          f"RssAnon {m['anon_bytes_per_call']} bytes/call; "
          f"{m['calls']} calls at {m['rate']:.0f}/s held {m['hold_ms']} ms: {m['ok']} ok, {m['failed']} failed)")
EOF
}
echo
[ -s "$OUT" ] || { echo "no results in $OUT"; exit 1; }
report | tee "${OUT%.jsonl}.txt"
report --markdown > "${OUT%.jsonl}.md"
echo "results: $OUT (+ .meta .txt .md)"
