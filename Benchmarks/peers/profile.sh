#!/usr/bin/env bash
# Profiles the cells where PeerBench shows us behind, and writes one text file:
#   1. request/reply end to end, 1 connection, 64 B: context switches and CPU
#      per round trip of each client (perf stat), syscalls of our REQ socket
#      client (strace -c -f), and where its CPU goes (perf record -g, cpu-clock);
#   2. pub/sub, 64 subscribers, 4 KiB: where each publisher's CPU goes.
# Same pinning as PeerBench (servers on CPU 1, clients on CPU 0).
#
#   Benchmarks/peers/profile.sh C_BIN_DIR SWIFT_BIN_DIR OUT_FILE
set -euo pipefail
CBIN=$1 SBIN=$2 OUT=$3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
command -v perf >/dev/null || { echo "profile.sh: perf is not installed" >&2; exit 1; }
command -v strace >/dev/null || { echo "profile.sh: strace is not installed" >&2; exit 1; }

exec 3< <(sleep 600)   # servers exit when this pipe closes (at our exit)
start_server() {       # NAME ARGV... -> sets PORT and PID
	taskset -c 1 "$@" <&3 >"$TMP/server.out" 2>/dev/null &
	PID=$!
	for _ in $(seq 100); do
		grep -q '^PORT ' "$TMP/server.out" 2>/dev/null && break
		sleep 0.05
	done
	PORT=$(awk '/^PORT /{print $2; exit}' "$TMP/server.out")
}
per_trip() { # perf-stat CSV file, trips -> "N context switches, C us CPU per round trip"
	python3 - "$1" "$2" <<'EOF'
import sys
vals = {}
for line in open(sys.argv[1]):
    p = line.strip().split(",")
    if len(p) > 2 and p[0] and not line.startswith("#"):
        vals[p[2]] = float(p[0])
t = max(1, int(sys.argv[2]))
print(f"{vals.get('context-switches', 0) / t:.2f} context switches and "
      f"{vals.get('task-clock', 0) * 1000 / t:.1f} us of client CPU per round trip")
EOF
}
{
	echo "# profile.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs"
	echo
	echo "## 1. Request/reply, 1 connection, 64 B, client on CPU 0, server on CPU 1"
	start_server "$SBIN/PeerServers" echo-server
	OURS_PORT=$PORT OURS_PID=$PID
	start_server "$CBIN/nng-rep" 32
	NNG_PORT=$PORT NNG_PID=$PID
	for c in "ours end to end (REQ sockets + epoll)|$SBIN/PeerServers req-client --port $OURS_PORT --connections 1 --size 64 --seconds 3 --warmup 0.3 --server-pid $OURS_PID" \
		"NNG end to end (req0)|$CBIN/nng-req 127.0.0.1 $NNG_PORT 1 64 3 0.3 $NNG_PID" \
		"C SP client -> our REP echo server|$CBIN/rr-client sp 127.0.0.1 $OURS_PORT 1 64 3 0.3 $OURS_PID"; do
		name=${c%%|*} cmd=${c#*|}
		# shellcheck disable=SC2086
		line=$(taskset -c 0 perf stat -x, -e task-clock,context-switches -o "$TMP/stat.csv" $cmd 2>/dev/null)
		trips=$(sed -E 's/.*trips=([0-9]+).*/\1/' <<<"$line")
		echo "- $name: $line"
		echo "  whole client process (warm-up included): $(per_trip "$TMP/stat.csv" "$trips")"
	done
	echo
	echo "### Syscalls of our REQ socket client (strace -c -f, 2 s; strace slows it down)"
	echo '```'
	taskset -c 0 strace -c -f -o "$TMP/strace.txt" "$SBIN/PeerServers" req-client --port "$OURS_PORT" --connections 1 \
		--size 64 --seconds 2 --warmup 0.1 --server-pid "$OURS_PID" 2>/dev/null
	head -n 20 "$TMP/strace.txt"
	echo '```'
	echo
	echo "### Where our REQ socket client's CPU goes (perf record -e cpu-clock -g, 3 s)"
	echo '```'
	taskset -c 0 perf record -q -e cpu-clock -g -o "$TMP/req.data" "$SBIN/PeerServers" req-client --port "$OURS_PORT" \
		--connections 1 --size 64 --seconds 3 --warmup 0.1 --server-pid "$OURS_PID" >/dev/null 2>&1
	perf report -i "$TMP/req.data" --no-children --sort comm,dso,symbol --stdio -g none --percent-limit 1 2>/dev/null |
		grep -E '^ +[0-9]+\.[0-9]+%' | cut -c1-200 | head -n 30 || true
	echo
	echo "callers of the top symbol:"
	perf report -i "$TMP/req.data" --no-children --sort comm,symbol --stdio -G --percent-limit 10 2>/dev/null |
		grep -v '^#' | grep -v '^$' | cut -c1-200 | head -n 60 || true
	echo '```'
	echo
	echo "## 2. Pub/sub, 64 subscribers, 4 KiB: where each publisher's CPU goes (perf record -e cpu-clock -g)"
	for pub in ours nng; do
		if [ $pub = ours ]; then
			taskset -c 1 perf record -q -e cpu-clock -g -o "$TMP/pub.data" "$SBIN/PeerServers" publisher --size 4096 \
				--seconds 2 --subscribers 64 --drain 1 <&3 >"$TMP/pub.out" 2>/dev/null &
		else
			taskset -c 1 perf record -q -e cpu-clock -g -o "$TMP/pub.data" "$CBIN/nng-pub" 4096 2 64 1 \
				<&3 >"$TMP/pub.out" 2>/dev/null &
		fi
		ppid=$!
		for _ in $(seq 100); do grep -q '^PORT ' "$TMP/pub.out" 2>/dev/null && break; sleep 0.05; done
		port=$(awk '/^PORT /{print $2; exit}' "$TMP/pub.out")
		sub=$(taskset -c 0 "$CBIN/sp-sub" 127.0.0.1 "$port" 64 60 | tail -n 1)
		wait $ppid || true
		echo
		echo "### $pub: $(head -n 1 "$TMP/pub.out"); subscribers: $sub"
		echo '```'
		perf report -i "$TMP/pub.data" --no-children --sort comm,dso,symbol --stdio -g none --percent-limit 1 2>/dev/null |
			grep -E '^ +[0-9]+\.[0-9]+%' | cut -c1-200 | head -n 30 || true
		echo '```'
	done
} >"$OUT"
echo "profile.sh: wrote $OUT" >&2
