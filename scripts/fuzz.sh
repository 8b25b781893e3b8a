#!/usr/bin/env bash
# Runs every libFuzzer target of the Fuzz package for a bounded time:
# scripts/fuzz.sh [seconds] (default 60, per target).
#
# The package builds into its own scratch path (.build-fuzz) with
# `--sanitize=fuzzer --sanitize=address`: SwiftPM instruments every module
# for coverage and ASan, links libFuzzer (which brings `main`, so SwiftPM
# leaves the executables' entry point alone), and builds debug, where
# `@testable import` works. Each target starts from a working copy of its
# committed seeds (Fuzz/Corpus/<target>, never written to) in
# .build-fuzz/fuzz/<target>/corpus, and writes what it finds to
# .build-fuzz/fuzz/<target>/artifacts (crash-*, leak-*, timeout-*, oom-*),
# its log next to them. Exits non-zero on a crash, a leak, a timeout or an
# out-of-memory in any target; prints per target its executions per second
# (libFuzzer's final stats), corpus size and artifacts. docs/reliability.md
# says how a crash becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;;
esac
# One input may take this long before libFuzzer calls it a hang (inputs
# take milliseconds; the margin is for a loaded 2-core machine).
input_timeout=${FUZZ_TIMEOUT:-10}
targets=(SPFramesFuzzer URLFuzzer SocketAddressFuzzer CatOptionsFuzzer SocketHandlerFuzzer)
scratch=$PWD/.build-fuzz
scripts/install-deps.sh build

echo "== build (Fuzz, $scratch)"
start=$(date +%s)
# gold warns once per ASan symbol it cannot export ("Cannot export local
# symbol"): noise of the sanitizer runtime's symbol list, not of our code.
set +e
swift build --package-path Fuzz -c debug --sanitize=fuzzer --sanitize=address --scratch-path "$scratch" 2>&1 \
  | grep -v "Cannot export local symbol"
built=${PIPESTATUS[0]}
set -e
if [ "$built" -ne 0 ]; then
  echo "== build failed" >&2
  exit 1
fi
bin=$(swift build --package-path Fuzz -c debug --sanitize=fuzzer --sanitize=address --scratch-path "$scratch" --show-bin-path)
echo "== built in $(($(date +%s) - start)) s"

# The Swift runtime's backtracer would take over a crashing process (and
# wait for its own timeout): off, so libFuzzer's handler reports the crash
# and saves the input. Leaks: checked after inputs that end with more
# allocations than frees, and at exit. LSan's exit code (23) marks a leak
# found at exit; libFuzzer's own (77) a crash or a leak it attributed to an
# input, 70 a timeout.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="detect_leaks=1"
export LSAN_OPTIONS="print_suppressions=0"
failed=0
summary=()
for target in "${targets[@]}"; do
  work=$scratch/fuzz/$target
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp Fuzz/Corpus/"$target"/* "$work/corpus/"
  seeds=$(find "$work/corpus" -type f | wc -l)
  options=(
    -max_total_time="$seconds" -timeout="$input_timeout" -rss_limit_mb=2048 -max_len=4096
    -detect_leaks=1 -print_final_stats=1 -artifact_prefix="$work/artifacts/"
  )
  if [ -f "Fuzz/Dictionaries/$target.dict" ]; then options+=(-dict="Fuzz/Dictionaries/$target.dict"); fi
  log=$work/fuzz.log
  echo "== $target: $seconds s from $seeds seeds"
  set +e
  # A hard bound as well, in case a hang stops libFuzzer's own watchdog.
  timeout --kill-after=30 $((seconds + 300)) "$bin/$target" "${options[@]}" "$work/corpus" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  units=$(find "$work/corpus" -type f | wc -l)
  bytes=$(du -sb "$work/corpus" | cut -f1)
  artifacts=$(find "$work/artifacts" -type f | wc -l)
  status=ok
  if [ "$rc" -ne 0 ] || [ "$artifacts" -ne 0 ] || grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$log"; then
    status="FAILED (exit $rc)"
    failed=1
    # What went wrong, from the log: the sanitizer's or libFuzzer's error,
    # the Swift trap (a property's message, an overflow...).
    grep -E "(==ERROR|^SUMMARY|Fatal error|Swift runtime failure|fuzz property violated)" "$log" | head -20 || true
  fi
  line="$target: $status, ${execs:-?} exec/s (${runs:-?} runs), corpus $seeds -> $units inputs ($bytes bytes)"
  if [ "$artifacts" -ne 0 ]; then line+=", artifacts: $work/artifacts/ ($(ls "$work/artifacts" | tr '\n' ' '))"; fi
  echo "== $line (log: $log)"
  summary+=("$line")
done

echo "== summary ($seconds s per target)"
printf '%s\n' "${summary[@]}"
# A crash reproduces with: $bin/<target> <artifact> (docs/reliability.md).
exit $failed
