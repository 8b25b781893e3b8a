#!/usr/bin/env bash
# Runs every test: the Swift suite on this kernel, then (kernel/) the QEMU
# guests that prove the kernel backend on a real EFD_MASK kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/install-deps.sh test
swift build --build-tests
echo "== swift test (this kernel: $(uname -r); loop tests run under io_uring and epoll)"
swift test
# The socket and example suites again on the other mask layout and with the
# epoll loop as the automatic choice, so every backend pair is exercised.
echo "== swift test: sockets and examples with MASKCORE_BACKEND=full USERPROTO_LOOP_BACKEND=epoll"
MASKCORE_BACKEND=full USERPROTO_LOOP_BACKEND=epoll swift test --skip-build --filter 'UserProtoTests|ExamplesTests'
echo "== all tests passed in $(( $(date +%s) - start )) s"
