#!/usr/bin/env bash
# Runs the Swift suites under ThreadSanitizer and/or AddressSanitizer (with
# LeakSanitizer): scripts/sanitizers.sh [thread|address|all] (default all).
#
# Each sanitizer builds into its own scratch path (.build-tsan, .build-asan),
# so the helper programs the tests launch (maskcore-inspect, userproto-check,
# the userproto CLI) are built with the same sanitizer. Every process writes
# its reports to <scratch>/sanitizer-reports/ (log_path), helpers included, so
# a report in a process whose stderr a test captured is not lost. Exits
# non-zero on any test failure or any sanitizer report.
set -uo pipefail
# As scripts/test.sh: at most 8 tests at once.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-8}
cd "$(dirname "$0")/.."
mode=${1:-all}
case $mode in
  thread) sanitizers=(thread) ;;
  address) sanitizers=(address) ;;
  all) sanitizers=(thread address) ;;
  *) echo "usage: $0 [thread|address|all]" >&2; exit 2 ;;
esac
suites=(MaskCoreTests UserProtoTests ExamplesTests)
if command -v nngcat >/dev/null && command -v nanocat >/dev/null; then
  export USERPROTO_REQUIRE_PEERS=1
fi
failed=0
for san in "${sanitizers[@]}"; do
  case $san in
    thread) scratch=.build-tsan ;;
    address) scratch=.build-asan ;;
  esac
  reports=$PWD/$scratch/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  # halt_on_error=0: report every race, not just the first; the exit code
  # (66) still marks the process. detect_leaks=1 is ASan's default on Linux;
  # it is spelled out because zero leaks is part of the contract.
  export TSAN_OPTIONS="halt_on_error=0 log_path=$reports/tsan"
  export ASAN_OPTIONS="detect_leaks=1 log_path=$reports/asan"
  export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp print_suppressions=0"
  start=$(date +%s)
  echo "== $san: build ($scratch)"
  if ! swift build --build-tests --sanitize="$san" --scratch-path "$scratch"; then
    echo "== $san: build failed" >&2
    failed=1
    continue
  fi
  built=$(date +%s)
  echo "== $san: built in $((built - start)) s"
  for suite in "${suites[@]}"; do
    log=$scratch/sanitizer-$san-$suite.log
    suiteStart=$(date +%s)
    swift test --skip-build --sanitize="$san" --scratch-path "$scratch" --filter "$suite" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    echo "== $san $suite: exit $rc in $(($(date +%s) - suiteStart)) s"
    if [ "$rc" -ne 0 ]; then failed=1; fi
    if grep -qE "WARNING: ThreadSanitizer|ERROR: AddressSanitizer|LeakSanitizer" "$log"; then
      echo "== $san $suite: sanitizer report in the output" >&2
      failed=1
    fi
  done
  count=$(find "$reports" -type f | wc -l)
  if [ "$count" -ne 0 ]; then
    failed=1
    echo "== $san: $count process(es) wrote sanitizer reports ($reports):" >&2
    grep -hE "^(WARNING: ThreadSanitizer|SUMMARY|ERROR: (Address|Leak)Sanitizer)" "$reports"/* | sort | uniq -c | sort -rn >&2
  fi
  echo "== $san: done in $(($(date +%s) - start)) s (build $((built - start)) s)"
done
exit $failed
