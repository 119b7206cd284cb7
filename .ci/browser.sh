#!/usr/bin/env bash
# Browser test of the dashboard: drives Debian's headless Chromium against an
# in-process demo (backends, proxy, admin listener) on loopback. Installs
# Chromium with apt-get when it is missing; running it again installs nothing.
# Screenshots go to $SHADOWPROXY_ARTIFACTS (default /tmp/shadowproxy-artifacts).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  # Another apt run (unattended upgrades, a parallel job) may hold the lock:
  # wait for it rather than fail.
  apt_get() { $sudo apt-get -o DPkg::Lock::Timeout=300 "$@" >>"$log" 2>&1; }
  ok=0
  for attempt in 1 2 3; do
    if apt_get update -qq && apt_get install -y -qq chromium; then
      ok=1
      break
    fi
    echo "apt-get failed (attempt $attempt); retrying in 10s"
    sleep 10
  done
  if [ "$ok" != 1 ]; then
    cat "$log"
    exit 1
  fi
  rm -f "$log"
fi
dpkg-query -W -f='chromium ${Version}\n' chromium

echo "== browser test"
export SHADOWPROXY_ARTIFACTS="${SHADOWPROXY_ARTIFACTS:-/tmp/shadowproxy-artifacts}"
go test -tags browser -count=1 -timeout 5m -run Browser -v ./internal/admin/
