#!/usr/bin/env bash
# Runs every test of sipedge. Installs what the tests need first (sipp from Debian's
# sip-tester package), then formatting and lint checks, then `cargo test` over all targets.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
# `ip`: the AF_XDP media test builds a veth pair between two network namespaces.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# Integration tests start their own sipedge on ephemeral loopback ports; they run in parallel.
cargo test --all-targets "$@"
