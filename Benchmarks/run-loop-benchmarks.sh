#!/usr/bin/env bash
# Builds the loop benchmarks (release) and runs LoopBench, SocketOverhead and
# EchoBench one after the other, each only once the machine is idle (other
# work on 2 vCPUs skews everything), saving each output under docs/results/.
#
#   Benchmarks/run-loop-benchmarks.sh [--quick] [--no-save]
#
# Full run: about 4 minutes of measurement (LoopBench ~60 s, SocketOverhead
# ~20 s, EchoBench ~130 s) plus the build and any wait for an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
save=1
for arg in "$@"; do
  case "$arg" in
    --quick) quick=(--quick) ;;
    --no-save) save=0 ;;
    *) echo "usage: $0 [--quick] [--no-save]" >&2; exit 2 ;;
  esac
done

swift build -c release --package-path Benchmarks >&2
bin=$(swift build -c release --package-path Benchmarks --show-bin-path)

# Waits (up to 10 minutes) until the CPUs were at least 90% idle over 2 s.
wait_for_idle() {
  local tries=0
  while :; do
    read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ < /proc/stat
    sleep 2
    read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ < /proc/stat
    local busy=$(( (u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1) ))
    local idle=$(( (i2 + w2) - (i1 + w1) ))
    local percent=$(( 100 * idle / (busy + idle + 1) ))
    if (( percent >= 90 )); then return 0; fi
    if (( tries++ >= 120 )); then
      echo "warning: the machine is still busy (${percent}% idle); measuring anyway" >&2
      return 0
    fi
    echo "waiting for an idle machine (${percent}% idle)..." >&2
    sleep 3
  done
}

date=$(date -u +%Y-%m-%d)
suffix=""
if (( ${#quick[@]} )); then suffix="-quick"; fi
mkdir -p docs/results
for bench in LoopBench SocketOverhead EchoBench; do
  wait_for_idle
  echo "== $bench ${quick[*]:-}" >&2
  if (( save )); then
    name=$(echo "$bench" | tr '[:upper:]' '[:lower:]')
    "$bin/$bench" "${quick[@]}" | tee "docs/results/$name-$date$suffix.txt"
  else
    "$bin/$bench" "${quick[@]}"
  fi
done
