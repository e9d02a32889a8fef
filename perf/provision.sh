#!/bin/bash
# Provision the users of gen_users.py into sipedge's store through its CLI, one process per user
# (`sipedge credentials add`), JOBS in parallel. Meant for up to ~2,000 users; for more use the
# bulk API (perf/register.sh tries it first: POST /api/v1/credentials with credentials.json).
# Run it from the directory sipedge runs in: a relative store.path resolves against the working dir.
# usage: provision.sh SIPEDGE_BIN CONFIG CREDENTIALS_TXT [JOBS=2]
# CREDENTIALS_TXT: `user password realm` per line (no spaces inside fields). Failed adds are retried
# once, one at a time (two SQLite writers can collide). Exit 1 if any user could not be added.
set -u
BIN=$1; CFG=$2; CREDS=$3; JOBS=${4:-2}
FAIL=$(mktemp /tmp/sipedge-provision-fail.XXXXXX)
trap 'rm -f "$FAIL" "$FAIL.2"' EXIT
T0=$(date +%s.%N)
# xargs -L 1 appends one line's words: $0=bin $1=config $2=user $3=password $4=realm
# shellcheck disable=SC2016
xargs -P "$JOBS" -L 1 bash -c '"$0" credentials add --config "$1" --username "$2" --password "$3" --realm "$4" \
  >/dev/null 2>&1 || echo "$2 $3 $4" >> '"$FAIL" "$BIN" "$CFG" < "$CREDS"
BAD=0
if [ -s "$FAIL" ]; then
  echo "provision: $(wc -l < "$FAIL") adds failed in parallel, retrying them one at a time" >&2
  while read -r u p r; do
    "$BIN" credentials add --config "$CFG" --username "$u" --password "$p" --realm "$r" </dev/null >/dev/null 2>>"$FAIL.2" \
      || { BAD=$((BAD + 1)); echo "provision: could not add $u: $(tail -1 "$FAIL.2")" >&2; }
  done < "$FAIL"
fi
N=$(wc -l < "$CREDS")
echo "provision: $((N - BAD))/$N credentials added via CLI in $(echo "$(date +%s.%N) - $T0" | bc 2>/dev/null || echo '?') s"
[ "$BAD" = 0 ]
