#!/usr/bin/env bash
# Syscalls per round trip of each echo server (strace -c -f attached to the
# server while echo-client runs), to explain EchoBench. strace slows every
# syscall, so only the counts matter here, not the times.
#
#   Benchmarks/strace-echo.sh [CONNECTIONS] [SIZE] [SECONDS]
#
# Needs a release build of the Benchmarks package.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-1}
size=${2:-64}
seconds=${3:-1}
bin=$(swift build -c release --package-path Benchmarks --show-bin-path)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {
  local name=$1
  shift
  # The server exits when this pipe's write end (fd 9) closes.
  mkfifo "$work/in"
  "$@" < "$work/in" > "$work/port" 2>/dev/null &
  local server=$!
  exec 9> "$work/in"
  rm "$work/in"
  for _ in $(seq 50); do [[ -s "$work/port" ]] && break; sleep 0.1; done
  local port
  port=$(cut -d' ' -f2 "$work/port")
  strace -c -f -p "$server" -o "$work/strace" &
  local tracer=$!
  sleep 0.5
  local line
  line=$("$bin/echo-client" 127.0.0.1 "$port" "$connections" "$size" "$seconds" 0.2 "$server")
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  exec 9>&-
  wait "$server" 2>/dev/null || true
  local trips
  trips=$(sed -E 's/.*trips=([0-9]+).*/\1/' <<< "$line")
  echo "### $name: $trips round trips under strace ($connections connections, $size B)"
  echo
  echo "| syscall | calls | per round trip |"
  echo "|---|---|---|"
  # Counts include the 0.2 s warm-up and the ramp; divide by the measured
  # trips plus the warm-up share (the client's rate is steady).
  awk -v trips="$trips" -v seconds="$seconds" '
    /^------/ { table = !table; next }
    table && NF >= 5 && $NF != "total" {
      calls = ($5 ~ /^[0-9]+$/) ? $4 : $4
      name = $NF
      n = $4
      printf "| %s | %d | %.2f |\n", name, n, n / (trips * (seconds + 0.2) / seconds)
    }' "$work/strace"
  echo
}

run "C blocking server" "$bin/echo-server-c"
run "SwiftNIO 2.101.3" "$bin/EchoServers" nio
run "loop raw ops, io_uring" "$bin/EchoServers" loop-raw --backend io_uring
run "loop raw ops, epoll" "$bin/EchoServers" loop-raw --backend epoll
run "ProtocolSocket, io_uring" "$bin/EchoServers" loop-socket --backend io_uring
run "ProtocolSocket, epoll" "$bin/EchoServers" loop-socket --backend epoll
