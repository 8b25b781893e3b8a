#!/usr/bin/env bash
# Runs every test: the Swift suite on this kernel, then (kernel/) the QEMU
# guests that prove the kernel backend on a real EFD_MASK kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/install-deps.sh test
swift build --build-tests
echo "== swift test (this kernel: $(uname -r))"
swift test
echo "== all tests passed in $(( $(date +%s) - start )) s"
