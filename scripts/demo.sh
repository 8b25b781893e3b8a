#!/usr/bin/env bash
# Runs the demo on a fresh Debian 12 machine with the Swift toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
swift build --product userproto
exec .build/debug/userproto demo "$@"
