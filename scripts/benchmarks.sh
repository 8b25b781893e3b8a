#!/usr/bin/env bash
# Runs the benchmarks against the peers and regenerates docs/benchmarks.md and
# docs/benchmarks.png from the raw result files it writes to docs/results/.
#
# usage: scripts/benchmarks.sh [--quick] [--report-only] [--no-guest]
#                              [--with-echobench] [--guest-100k]
#   (default)         full run, about 15 minutes: results in docs/results/bench-*-DATE.txt
#   --quick           a few minutes, fewer rounds and shorter windows; results and the
#                     page go to $USERPROTO_BENCH_OUT (default /tmp/userproto-bench-quick),
#                     never to docs/
#   --report-only     rebuild the page from the newest result files, run nothing
#   --no-guest        skip the QEMU guest (no kernel-backend numbers)
#   --with-echobench  rerun EchoBench (otherwise its newest result file is used
#                     when it is at most 7 days old, and it runs when there is none)
#   --guest-100k      also boot the guest for the emulation at 100,000 masks (slow
#                     under TCG: creation is O(N^2), about 10 more minutes)
#
# What runs, in one run (see docs/benchmarks.md for the method):
#   1. MaskFDBench on this machine (mask fd transitions and wake latency vs eventfd)
#   2. PeerBench (Benchmarks/peers/peerbench.py): SP request/reply against NNG
#      rep0/req0 and a raw C floor; SP pub/sub against NNG pub0
#   3. ScaleBench on this machine (as many mask fds and sockets as RLIMIT_NOFILE allows),
#      then Benchmarks/peers/profile.sh: perf/strace profiles of the cells where we lose
#   4. EchoBench (the loop benchmarks' TCP echo against SwiftNIO), when stale
#   5. kernel/test.sh: MaskFDBench and ScaleBench (1,000 to 100,000) in the
#      EFD_MASK guest, where the kernel backend is in use
#   6. Benchmarks/peers/report.py: the page and the chart
# Installs what it needs when missing: gcc, libnng-dev (apt), matplotlib (pip).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
QUICK=0 REPORT_ONLY=0 GUEST=1 ECHO=auto GUEST100K=0
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--report-only) REPORT_ONLY=1 ;;
	--no-guest) GUEST=0 ;;
	--with-echobench) ECHO=yes ;;
	--guest-100k) GUEST100K=1 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
	*) echo "benchmarks.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

DATE=$(date -u +%F)
if [ "$QUICK" = 1 ]; then
	RESULTS=${USERPROTO_BENCH_OUT:-/tmp/userproto-bench-quick}
	PAGE=$RESULTS/benchmarks.md
	CHART=$RESULTS/benchmarks.png
	TAG=$DATE-quick
	QFLAG=--quick
else
	RESULTS=$ROOT/docs/results
	PAGE=$ROOT/docs/benchmarks.md
	CHART=$ROOT/docs/benchmarks.png
	TAG=$DATE
	QFLAG=
fi
mkdir -p "$RESULTS"
SCRATCH=${TMPDIR:-/tmp}/userproto-bench-scratch
mkdir -p "$SCRATCH"
BIN=$ROOT/Benchmarks/.build/release
CBIN=$ROOT/Benchmarks/.build/peers
log() { echo "benchmarks.sh: $*" >&2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$1" "$(now)"; }

report() {
	python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib
	python3 "$ROOT/Benchmarks/peers/report.py" --results "$RESULTS" --page "$PAGE" --chart "$CHART" \
		--echo-results "$ROOT/docs/results" \
		$([ "$REPORT_ONLY" = 1 ] || echo "--tag $TAG")
}
if [ "$REPORT_ONLY" = 1 ]; then
	report
	exit 0
fi

T_ALL=$(now)
DURATIONS=()

# ---- dependencies
need=()
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/nng/nng.h ] || need+=(libnng-dev)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib

# ---- builds (release; one product at a time, never two builds at once)
T=$(now)
PRODUCTS=(MaskFDBench PeerServers ScaleBench)
for p in "${PRODUCTS[@]}"; do
	swift build -c release --package-path Benchmarks --product "$p" 2>&1 | tail -n 1 >&2
done
mkdir -p "$CBIN"
for p in rr_client floor_server sp_sub autobind_scale; do
	gcc -O2 -Wall -Wextra -Werror -o "$CBIN/${p//_/-}" "Benchmarks/c/peers/$p.c" -lpthread
done
for p in nng_rep nng_req nng_pub; do
	gcc -O2 -Wall -Wextra -Werror -o "$CBIN/${p//_/-}" "Benchmarks/c/peers/$p.c" -lnng -lpthread
done
DURATIONS+=("build $(since "$T") s")

wait_idle() {
	python3 - <<'EOF'
import time
def snap():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return v[3] + v[4], sum(v)
deadline = time.time() + 30
while True:
    i0, t0 = snap(); time.sleep(0.5); i1, t1 = snap()
    idle = (i1 - i0) / max(1, t1 - t0)
    if idle >= 0.9 or time.time() > deadline:
        print(f"{idle:.0%}")
        break
EOF
}
LOAD_BEFORE="CPU idle $(wait_idle) before the first benchmark, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- 1. MaskFDBench on this machine
T=$(now)
log "MaskFDBench"
"$BIN/MaskFDBench" $QFLAG >"$RESULTS/bench-maskfd-host-$TAG.txt"
DURATIONS+=("MaskFDBench $(since "$T") s")

# ---- 2. PeerBench
T=$(now)
log "PeerBench (request/reply, pub/sub)"
python3 Benchmarks/peers/peerbench.py --c-bin "$CBIN" --swift-bin "$BIN" $QFLAG \
	--out "$RESULTS/bench-peers-$TAG.txt" >/dev/null
DURATIONS+=("PeerBench $(since "$T") s")

# ---- 3. ScaleBench on this machine
T=$(now)
log "ScaleBench (host)"
"$BIN/ScaleBench" $QFLAG --sockets --counts 1000,100000 \
	>"$RESULTS/bench-scale-host-$TAG.txt"
for n in 1000 9000; do
	for bp in "0 0" "1 0" "1 1"; do
		# shellcheck disable=SC2086
		"$CBIN/autobind-scale" $n $bp
	done
done >"$RESULTS/bench-autobind-$TAG.txt"
DURATIONS+=("ScaleBench (host) $(since "$T") s")

# ---- 3b. profiles of the cells where we lose (perf, strace)
if command -v perf >/dev/null && command -v strace >/dev/null; then
	T=$(now)
	log "profiles (perf, strace)"
	Benchmarks/peers/profile.sh "$CBIN" "$BIN" "$RESULTS/bench-profile-$TAG.txt" ||
		log "profile.sh failed; the page goes without profiles"
	DURATIONS+=("profiles $(since "$T") s")
else
	log "perf or strace missing: no profiles (apt-get install linux-perf strace)"
fi

# ---- 4. EchoBench (the other benchmark page's), only when stale
if [ "$QUICK" = 0 ]; then
	newest_echo=$(ls "$RESULTS"/echobench-*.txt "$RESULTS"/bench-echobench-*.txt 2>/dev/null | grep -v quick |
		grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}' | sort | tail -n 1 || true)
	age_days=999
	if [ -n "$newest_echo" ]; then
		age_days=$(( ($(date -u +%s) - $(date -u -d "$newest_echo" +%s)) / 86400 ))
	fi
	if [ "$ECHO" = yes ] || [ "$age_days" -gt 7 ]; then
		T=$(now)
		log "EchoBench (newest result is $age_days days old)"
		for p in EchoBench EchoServers echo-client echo-server-c; do
			swift build -c release --package-path Benchmarks --product "$p" 2>&1 | tail -n 1 >&2
		done
		"$BIN/EchoBench" >"$RESULTS/bench-echobench-$TAG.txt"
		DURATIONS+=("EchoBench $(since "$T") s")
	else
		DURATIONS+=("EchoBench not rerun (newest result $newest_echo)")
	fi
fi

# ---- 5. The EFD_MASK guest
guest_sections() { # patched.log -> the output of our commands
	awk '/^USERPROTO-GUEST-RUN: .*\/opt\/b\//{on=1} on{print} /^USERPROTO-GUEST-EXIT: .*\/opt\/b\//{on=0}' "$1"
}
run_guest() { # OUTFILE TIMEOUT GUEST-CMD...
	local out=$1 timeout=$2
	shift 2
	local args=()
	for c in "$@"; do args+=(--guest-cmd "$c"); done
	USERPROTO_KERNEL_OUT=$SCRATCH/kernel kernel/test.sh --no-stock --timeout "$timeout" --mem 6144 --smp 2 \
		--guest-elf "$BIN/MaskFDBench:/opt/b/MaskFDBench" --guest-elf "$BIN/ScaleBench:/opt/b/ScaleBench" \
		"${args[@]}" >"$SCRATCH/guest-test.txt" 2>&1 || {
		log "kernel/test.sh failed; its output: $SCRATCH/guest-test.txt"
		tail -n 20 "$SCRATCH/guest-test.txt" >&2
		return 1
	}
	{
		grep -a -m1 '^USERPROTO-GUEST-BEGIN' "$SCRATCH/kernel/patched.log"
		grep -a '^USERPROTO-PROBE' "$SCRATCH/kernel/patched.log" || true
		guest_sections "$SCRATCH/kernel/patched.log"
		grep -a -E '^----- (patched|timings)' "$SCRATCH/guest-test.txt" || true
	} >"$out"
}
if [ "$GUEST" = 1 ]; then
	T=$(now)
	log "QEMU guest with the EFD_MASK kernel (TCG)"
	if [ "$QUICK" = 1 ]; then
		run_guest "$RESULTS/bench-guest-$TAG.txt" 600 \
			'USERPROTO_TIMEOUT=300 /opt/b/MaskFDBench --quick' \
			'USERPROTO_TIMEOUT=300 /opt/b/ScaleBench --backends eventfd,kernel,pair --counts 1000,10000 --trials 100'
	else
		# MaskFDBench twice: under TCG its quick run's ratios move by about 0.1 from run to run.
		run_guest "$RESULTS/bench-guest-$TAG.txt" 900 \
			'USERPROTO_TIMEOUT=300 /opt/b/MaskFDBench --quick' \
			'USERPROTO_TIMEOUT=300 /opt/b/MaskFDBench --quick' \
			'USERPROTO_TIMEOUT=400 /opt/b/ScaleBench --backends eventfd,kernel --counts 1000,10000,100000 --sockets --trials 300' \
			'USERPROTO_TIMEOUT=400 /opt/b/ScaleBench --backends pair,full --counts 1000,10000 --trials 300'
	fi
	DURATIONS+=("guest $(since "$T") s")
	if [ "$GUEST100K" = 1 ]; then
		T=$(now)
		log "QEMU guest: the emulation at 100,000 masks"
		run_guest "$RESULTS/bench-guest100k-$TAG.txt" 1800 \
			'USERPROTO_TIMEOUT=1700 /opt/b/ScaleBench --backends pair --counts 100000 --trials 300'
		DURATIONS+=("guest, emulation at 100,000 $(since "$T") s")
	fi
fi

# ---- the run's facts
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $(uname -srm), $(nproc) vCPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "toolchain: $(swift --version 2>&1 | head -n 1), gcc $(gcc -dumpfullversion), release builds"
	echo "peers: NNG $(dpkg-query -W -f='${Version}' libnng-dev 2>/dev/null || echo '?') (libnng-dev), SwiftNIO $(grep -A6 '"identity" : "swift-nio"' Benchmarks/Package.resolved | grep -o '"version" : "[^"]*"' | cut -d'"' -f4), QEMU $(qemu-system-x86_64 --version 2>/dev/null | head -n1 | awk '{print $4}') TCG for the EFD_MASK guest (Linux 6.1.192)"
	echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' + uncommitted library changes')"
	echo "load before: $LOAD_BEFORE"
	echo "command: scripts/benchmarks.sh $QFLAG"
	echo "durations: $(IFS=';'; echo "${DURATIONS[*]}" | sed 's/;/, /g'), total $(since "$T_ALL") s"
} >"$RESULTS/bench-run-$TAG.txt"

# ---- 6. the page
report
log "done in $(since "$T_ALL") s: $PAGE"
