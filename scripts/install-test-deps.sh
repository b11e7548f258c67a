#!/usr/bin/env bash
# Installs the system packages the test suite needs, only when they are missing.
set -euo pipefail
need=()
# capnp turns on the check that the committed generated tunnel schema code is current.
# (nginx, haproxy and wrk are only for bench/run.sh, which installs them itself.)
command -v capnp >/dev/null 2>&1 || need+=(capnproto)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]} and not root; tests that need them will skip or fail" >&2
  fi
fi
