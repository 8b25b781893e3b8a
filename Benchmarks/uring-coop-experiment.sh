#!/usr/bin/env bash
# Experiment: the loop's io_uring ring is created with no setup flags. This
# runs the raw-ops echo server under io_uring as is, under io_uring with
# IORING_SETUP_COOP_TASKRUN added through an LD_PRELOAD shim
# (c/experiments/uring_setup_flags.c), and under epoll, driven by echo-client,
# rounds interleaved, server on CPU 1 and client on CPU 0.
#
#   Benchmarks/uring-coop-experiment.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
seconds=${2:-1.5}
bin=$(swift build -c release --package-path Benchmarks --show-bin-path)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -shared -fPIC -o "$work/flags.so" Benchmarks/c/experiments/uring_setup_flags.c -ldl

# Prints the client line for one server variant and workload.
measure() {
  local variant=$1 connections=$2 size=$3
  local env=()
  local backend=io_uring
  case "$variant" in
    io_uring) ;;
    io_uring+COOP_TASKRUN) env=(UP_URING_SETUP_FLAGS=0x100 LD_PRELOAD="$work/flags.so") ;;
    epoll) backend=epoll ;;
  esac
  mkfifo "$work/in"
  env "${env[@]}" taskset -c 1 "$bin/EchoServers" loop-raw --backend "$backend" \
    < "$work/in" > "$work/port" 2>>"$work/server.log" &
  local server=$!
  exec 9> "$work/in"
  rm "$work/in"
  for _ in $(seq 50); do [[ -s "$work/port" ]] && break; sleep 0.1; done
  local port
  port=$(cut -d' ' -f2 "$work/port")
  taskset -c 0 "$bin/echo-client" 127.0.0.1 "$port" "$connections" "$size" "$seconds" 0.3 "$server"
  exec 9>&-
  wait "$server" 2>/dev/null || true
  : > "$work/port"
}

variants=(io_uring io_uring+COOP_TASKRUN epoll)
for workload in "1 64" "16 64" "16 4096"; do
  read -r connections size <<< "$workload"
  for round in $(seq "$rounds"); do
    for variant in "${variants[@]}"; do
      echo "$connections $size $variant $(measure "$variant" "$connections" "$size")"
    done
  done
done > "$work/lines"
grep -m1 COOP "$work/server.log" >&2 || true
grep -c "flags 0x100" "$work/server.log" >&2 || true

echo "# io_uring setup flags experiment ($rounds rounds of $seconds s, medians)"
echo
echo "| workload | server | round trips/s | p50 us | p99 us | server CPU us/rt |"
echo "|---|---|---|---|---|---|"
python3 - "$work/lines" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    c, s, variant, rest = line.split(" ", 3)
    f = dict(kv.split("=") for kv in rest.split())
    rows.setdefault((int(c), int(s), variant), []).append(f)
for (c, s, variant), fs in rows.items():
    m = lambda k: statistics.median(float(x[k]) for x in fs)
    print(f"| {c} conn, {s} B | {variant} | {m('rate'):.0f} | {m('p50_us'):.1f} | {m('p99_us'):.1f} | {m('cpu_us_per_trip'):.2f} |")
print()
print("Per round:")
for (c, s, variant), fs in rows.items():
    print(f"- {c} conn, {s} B, {variant}: rate " + " ".join(x['rate'] for x in fs) + "; cpu/rt " + " ".join(x['cpu_us_per_trip'] for x in fs))
EOF
