#!/usr/bin/env bash
# Runs every test: the Swift suite on this kernel, then (kernel/) the QEMU
# guests that prove the kernel backend on a real EFD_MASK kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/install-deps.sh test
# The interop suites must not skip here: a missing nngcat or nanocat fails.
export USERPROTO_REQUIRE_PEERS=1
# Nor the io_uring cases: a host refusing io_uring fails them instead of
# skipping them, so this command cannot pass without running the io_uring
# engine. Set USERPROTO_REQUIRE_IO_URING=0 to run on such a host anyway.
export USERPROTO_REQUIRE_IO_URING=${USERPROTO_REQUIRE_IO_URING:-1}
# Each test runs on a thread of its own (Tests/TestSupport/TestThreads.swift),
# so blocking tests cannot starve async ones on the two-thread global pool; at
# most 8 run at once, so the ones that measure time are not crowded out on a
# 2-core machine.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-8}
swift build --build-tests
echo "== swift test (this kernel: $(uname -r); loop tests run under io_uring and epoll)"
swift test
# The socket and example suites again on the other mask layout and with the
# epoll loop as the automatic choice, so every backend pair is exercised.
echo "== swift test: sockets and examples with MASKCORE_BACKEND=full USERPROTO_LOOP_BACKEND=epoll"
MASKCORE_BACKEND=full USERPROTO_LOOP_BACKEND=epoll swift test --skip-build --filter 'UserProtoTests|ExamplesTests'
# DocC: every catalog builds without a warning, every public symbol has a
# summary line (docs/documentation.md).
echo "== docs: DocC catalogs (warnings are errors)"
scripts/docs.sh
# The bounded soak (docs/reliability.md#soak): RSS and fds must not grow.
echo "== soak: 60 s of connection churn, pub/sub and timers"
scripts/soak.sh 60
# Faults in network namespaces (docs/reliability.md#faults): loss, delay,
# reordering, duplication, killed and stalled peers, half-open connections,
# EMFILE; every message accepted is delivered or counted.
echo "== faults: SP/TCP and UDP between two network namespaces"
swift build --product userproto-netfault
USERPROTO_NETFAULT="$(swift build --show-bin-path)/userproto-netfault" scripts/faults.sh
# ThreadSanitizer and AddressSanitizer: scripts/sanitizers.sh, run by hand
# for now (docs/reliability.md#sanitizers): one intermittent TSan report
# (io_uring rings mapped at a reused address) was answered with an
# annotation that has not had enough runs to be trusted in CI yet.
# libFuzzer: every target for 60 s (docs/reliability.md#fuzzing).
echo "== fuzz: every target for 60 s"
scripts/fuzz.sh 60
# kernel/: build the EFD_MASK kernel (cached), boot it and Debian's stock 6.1
# kernel (without and with the efd_mask module) under QEMU, run the C
# conformance test and the Swift suites there.
echo "== kernel/: the EFD_MASK kernel backend under QEMU"
# Five boots: patched 6.1 and 6.12 (kernel backend), stock 6.1 and 6.12 with
# efd_mask.ko (module backend), stock 6.1 alone (fallback).
# The socket filter names the first design's suites exactly: the pipe suites
# exceed their 2-minute limits under TCG on the stock+module guest. The leak
# test runs 2,000 connect/close cycles there instead of 10,000 (146 s of a
# 180 s boot under TCG).
bin=$(swift build --show-bin-path)
guest=/opt/upt
kernel/test.sh \
  --guest-elf "$bin/UserProtoPackageTests.xctest:$guest/UserProtoPackageTests.xctest" \
  --guest-elf "$bin/maskcore-inspect:$guest/maskcore-inspect" \
  --guest-elf "$bin/userproto-check:$guest/userproto-check" \
  --guest-cmd "MASKCORE_EXPECT_KERNEL=1 USERPROTO_TIMEOUT=900 $guest/UserProtoPackageTests.xctest --testing-library swift-testing --filter MaskCoreTests" \
  --guest-cmd "MASKCORE_BACKEND=kernel USERPROTO_TIMEOUT=900 USERPROTO_LEAK_CYCLES=2000 $guest/UserProtoPackageTests.xctest --testing-library swift-testing --filter '\.SocketTests|\.SocketFaultTests'" \
  --guest-cmd-stock "USERPROTO_TIMEOUT=900 $guest/UserProtoPackageTests.xctest --testing-library swift-testing --filter MaskCoreTests" \
  --guest-cmd-module "MASKCORE_BACKEND=module MASKCORE_EXPECT_MODULE=1 USERPROTO_TIMEOUT=900 $guest/UserProtoPackageTests.xctest --testing-library swift-testing --filter MaskCoreTests" \
  --guest-cmd-module "MASKCORE_BACKEND=module USERPROTO_TIMEOUT=900 USERPROTO_LEAK_CYCLES=2000 $guest/UserProtoPackageTests.xctest --testing-library swift-testing --filter '\.SocketTests|\.SocketFaultTests'" \
  --timeout 1200
echo "== all tests passed in $(( $(date +%s) - start )) s"
