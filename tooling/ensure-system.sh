#!/usr/bin/env bash
# Make sure the system programs the stack and tests need are installed.
# Usage: tooling/ensure-system.sh redis-server redis-sentinel nginx [wrk]
# As root it installs what is missing from Debian's apt; otherwise it says what to install.
set -euo pipefail

declare -A package=([redis-server]=redis-server [redis-sentinel]=redis-sentinel [nginx]=nginx [wrk]=wrk
                    [promtool]=prometheus [node]=nodejs [ip]=iproute2)
missing=()
for prog in "$@"; do
  # podman's network helpers (netavark, aardvark-dns) live in /usr/lib/podman, off the PATH.
  if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$prog" ] && [ ! -x "/usr/lib/podman/$prog" ]; then
    missing+=("${package[$prog]:-$prog}")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]}" >&2
  echo "install them first, for example: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing from apt: ${missing[*]}" >&2
# Keep the packages' own init scripts from starting system-wide daemons on ports 80/6379:
# the stack and the tests start their own, on their own ports.
guard=/usr/sbin/policy-rc.d
made_guard=0
if [ ! -e "$guard" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard" && made_guard=1
fi
trap '[ "$made_guard" = 1 ] && rm -f "$guard"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
