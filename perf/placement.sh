# Sourced by perf/register.sh, calls.sh and media.sh: who runs on which CPU (perf/README.md,
# "Placement"). Reads PLACEMENT (split | free), SUT_CPUS, GEN_CPUS and WORK; sets the taskset
# prefixes SUT (systems under test) and GEN (load generators), empty for free placement.
#   placement_setup [sipedge.toml]
# With a config, also sets SIPEDGE_CONFIG: the config itself for free placement, else a copy
# in $WORK whose `workers = 2` becomes one worker per SUT CPU.
PLACEMENT=${PLACEMENT:-split}
SUT_CPUS=${SUT_CPUS:-0}
GEN_CPUS=${GEN_CPUS:-1}
placement_setup() {
  SUT=(); GEN=()
  SIPEDGE_CONFIG=${1:-}
  case $PLACEMENT in
    split)
      SUT=(taskset -c "$SUT_CPUS"); GEN=(taskset -c "$GEN_CPUS")
      local n
      n=$(taskset -c "$SUT_CPUS" nproc) || { echo "error: SUT_CPUS=$SUT_CPUS is not a CPU list"; exit 1; }
      taskset -c "$GEN_CPUS" true || { echo "error: GEN_CPUS=$GEN_CPUS is not a CPU list"; exit 1; }
      if [ -n "${1:-}" ]; then
        SIPEDGE_CONFIG=$WORK/$(basename "$1")
        sed -e "s/^workers = 2 /workers = $n /" "$1" > "$SIPEDGE_CONFIG"
      fi ;;
    free) ;;
    *) echo "error: PLACEMENT must be split or free, got '$PLACEMENT'"; exit 1 ;;
  esac
}
# One line for the .meta files.
placement_meta() {
  echo "placement: $PLACEMENT$( [ "$PLACEMENT" = split ] && echo " (systems under test on CPUs $SUT_CPUS, generators on CPUs $GEN_CPUS)")"
}
