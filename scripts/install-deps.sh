#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
# Usage: scripts/install-deps.sh [build|test]   (default: build)
set -euo pipefail
profile=${1:-build}
packages=(liburing-dev pkg-config)
if [ "$profile" = test ]; then
  packages+=(nng-utils nanomsg-utils libnng-dev)
  # scripts/faults.sh: ip netns, veth, tc netem and ss (iproute2), and jq to
  # read the ends' JSON lines.
  packages+=(iproute2 jq)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
