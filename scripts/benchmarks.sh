#!/usr/bin/env bash
# Runs the benchmarks against the peers and regenerates docs/benchmarks.md and
# docs/benchmarks.png from the raw result files it writes to docs/results/.
#
# usage: scripts/benchmarks.sh [--quick] [--report-only] [--no-guest] [--no-echobench]
#   (default)         full run, about 20-30 minutes warm (longer cold: see below; at worst
#                     about 50 minutes, as the two guest boots are capped at 15 and 20 minutes); every
#                     result file of the run is docs/results/bench-*-TAG.txt, where TAG is
#                     the run id, the UTC date and time of its start (e.g. 2026-11-29T0952)
#   --quick           a few minutes, fewer rounds and shorter windows; TAG ends in -quick,
#                     and the results and the page go to $USERPROTO_BENCH_OUT (default
#                     /tmp/userproto-bench-quick), never to docs/
#   --report-only     rebuild the page from the newest run's files (the tag of the newest
#                     bench-run-TAG.txt), run nothing; fails if a file of that run is missing
#   --no-guest        skip the QEMU guest (no kernel-backend numbers, no 100,000 masks for
#                     the emulation); the page says the guest sections were not run
#   --no-echobench    for development only: skip EchoBench; the page then says that
#                     section 4 (TCP echo against SwiftNIO) is missing
#   --with-echobench, --guest-100k
#                     accepted and ignored: EchoBench and the emulation at 100,000 are now
#                     part of every full run
#
# What runs, in one run (see docs/benchmarks.md for the method):
#   0. release builds, one product at a time: MaskFDBench PeerServers ScaleBench, then
#      EchoBench EchoServers echo-client echo-server-c; the C peers
#   1. MaskFDBench on this machine (mask fd transitions and wake latency vs eventfd)
#   2. PeerBench (Benchmarks/peers/peerbench.py): SP request/reply against NNG
#      rep0/req0 and a raw C floor; SP pub/sub against NNG pub0
#   3. ScaleBench on this machine (as many mask fds and sockets as RLIMIT_NOFILE allows),
#      then Benchmarks/peers/profile.sh: perf/strace profiles of the cells where we lose
#   4. EchoBench (the loop benchmarks' TCP echo against SwiftNIO)
#   5. kernel/test.sh, two boots of the EFD_MASK guest: (a) MaskFDBench twice and ScaleBench
#      for eventfd and kernel at 1,000 to 100,000; (b) ScaleBench for the emulation (pair,
#      full) at 1,000 to 100,000 (TCG: about 5 minutes)
#   6. bench-run-TAG.txt (machine, tag, limits, what was not run, durations), then
#      Benchmarks/peers/report.py --tag TAG: the page and the chart
# A cold run also builds SwiftNIO and the EFD_MASK guest kernel, which the durations of a
# warm run do not include; the run file records the durations of this run.
# Installs what it needs when missing: gcc, libnng-dev (apt), matplotlib (pip).
set -euo pipefail

ARGS=$(printf ' %s' "$@")
ARGS=${ARGS% }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
QUICK=0 REPORT_ONLY=0 GUEST=1 ECHO=1
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--report-only) REPORT_ONLY=1 ;;
	--no-guest) GUEST=0 ;;
	--no-echobench) ECHO=0 ;;
	--with-echobench | --guest-100k) echo "benchmarks.sh: $1 is now the default (ignored)" >&2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
	*) echo "benchmarks.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

# The run id: every file this run writes carries it, and the page is built from those only.
START=$(date -u +%Y-%m-%dT%H%M)
if [ "$QUICK" = 1 ]; then
	RESULTS=${USERPROTO_BENCH_OUT:-/tmp/userproto-bench-quick}
	PAGE=$RESULTS/benchmarks.md
	CHART=$RESULTS/benchmarks.png
	TAG=$START-quick
	QFLAG=--quick
else
	RESULTS=$ROOT/docs/results
	PAGE=$ROOT/docs/benchmarks.md
	CHART=$ROOT/docs/benchmarks.png
	TAG=$START
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

report() { # --tag TAG | --report-only
	python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib
	python3 "$ROOT/Benchmarks/peers/report.py" --results "$RESULTS" --page "$PAGE" --chart "$CHART" "$@"
}
if [ "$REPORT_ONLY" = 1 ]; then
	report --report-only
	exit 0
fi

if ls "$RESULTS"/bench-*-"$TAG".txt >/dev/null 2>&1; then
	echo "benchmarks.sh: files of run $TAG exist already in $RESULTS; start again in a minute" >&2
	exit 1
fi
log "run $TAG"
T_ALL=$(now)
DURATIONS=()
NOT_RUN=()     # "section (reason)", written to the run file; report.py states each on the page
INCOMPLETE=()  # sections that ran but failed part way; their files hold what did run

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
BUILD_STATE=warm
[ -d Benchmarks/.build/checkouts/swift-nio ] && [ -x "$BIN/MaskFDBench" ] || BUILD_STATE="cold (SwiftNIO and the products built from scratch)"
T=$(now)
PRODUCTS=(MaskFDBench PeerServers ScaleBench)
[ "$ECHO" = 0 ] || PRODUCTS+=(EchoBench EchoServers echo-client echo-server-c)
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
	rc=0
	Benchmarks/peers/profile.sh "$CBIN" "$BIN" "$RESULTS/bench-profile-$TAG.txt" || rc=$?
	if [ "$rc" != 0 ]; then
		log "profile.sh failed (status $rc); the page goes without profiles"
		rm -f "$RESULTS/bench-profile-$TAG.txt"
		NOT_RUN+=("profile (Benchmarks/peers/profile.sh failed with status $rc)")
	fi
	DURATIONS+=("profiles $(since "$T") s")
else
	log "perf or strace missing: no profiles (apt-get install linux-perf strace)"
	NOT_RUN+=("profile (perf or strace is not installed)")
fi

# ---- 4. EchoBench (the loop benchmarks' TCP echo against SwiftNIO), every run
if [ "$ECHO" = 1 ]; then
	T=$(now)
	log "EchoBench"
	"$BIN/EchoBench" $QFLAG >"$RESULTS/bench-echobench-$TAG.txt"
	DURATIONS+=("EchoBench $(since "$T") s")
else
	NOT_RUN+=("echobench (--no-echobench)")
fi

# ---- 5. The EFD_MASK guest
guest_sections() { # patched.log -> the output of our commands
	awk '/^USERPROTO-GUEST-RUN: .*\/opt\/b\//{on=1} on{print} /^USERPROTO-GUEST-EXIT: .*\/opt\/b\//{on=0}' "$1"
}
GUEST_KERNEL_BUILD=
run_guest() { # OUTFILE TIMEOUT SMP GUEST-CMD... -> status of kernel/test.sh; OUTFILE written either way
	local out=$1 timeout=$2 smp=$3 rc=0
	shift 3
	local args=()
	for c in "$@"; do args+=(--guest-cmd "$c"); done
	rm -f "$SCRATCH/kernel/patched.log"
	USERPROTO_KERNEL_OUT=$SCRATCH/kernel kernel/test.sh --no-stock --timeout "$timeout" --mem 6144 --smp "$smp" \
		--guest-elf "$BIN/MaskFDBench:/opt/b/MaskFDBench" --guest-elf "$BIN/ScaleBench:/opt/b/ScaleBench" \
		"${args[@]}" >"$SCRATCH/guest-test.txt" 2>&1 || rc=$?
	if [ "$rc" != 0 ]; then
		log "kernel/test.sh failed (status $rc); its output: $SCRATCH/guest-test.txt"
		tail -n 20 "$SCRATCH/guest-test.txt" >&2
	fi
	# Whatever the guest printed is kept, so that a timeout or a failure late in the boot
	# loses only what did not run; report.py names the cells that are missing and why.
	{
		grep -a -m1 '^USERPROTO-GUEST-BEGIN' "$SCRATCH/kernel/patched.log" 2>/dev/null || true
		grep -a '^USERPROTO-PROBE' "$SCRATCH/kernel/patched.log" 2>/dev/null || true
		[ ! -f "$SCRATCH/kernel/patched.log" ] || guest_sections "$SCRATCH/kernel/patched.log"
		grep -a -E '^----- (patched|timings)' "$SCRATCH/guest-test.txt" || true
		echo "USERPROTO-BENCH-GUEST-STATUS: kernel/test.sh exited with status $rc"
	} >"$out"
	local kb
	kb=$(grep -a -o 'patched kernel build [0-9.]* s' "$SCRATCH/guest-test.txt" | head -n 1 || true)
	[ -z "$kb" ] || GUEST_KERNEL_BUILD="${GUEST_KERNEL_BUILD:+$GUEST_KERNEL_BUILD, }$kb"
	return "$rc"
}
if [ "$GUEST" = 1 ]; then
	T=$(now)
	log "QEMU guest with the EFD_MASK kernel (TCG)"
	if [ "$QUICK" = 1 ]; then
		run_guest "$RESULTS/bench-guest-$TAG.txt" 600 2 \
			'USERPROTO_TIMEOUT=300 /opt/b/MaskFDBench --quick' \
			'USERPROTO_TIMEOUT=300 /opt/b/ScaleBench --backends eventfd,kernel --counts 1000,10000 --trials 100' ||
			INCOMPLETE+=("guest (kernel/test.sh failed; what ran is in bench-guest-$TAG.txt)")
	else
		# MaskFDBench twice: under TCG its quick run's ratios move by about 0.1 from run to run.
		run_guest "$RESULTS/bench-guest-$TAG.txt" 900 2 \
			'USERPROTO_TIMEOUT=300 /opt/b/MaskFDBench --quick' \
			'USERPROTO_TIMEOUT=300 /opt/b/MaskFDBench --quick' \
			'USERPROTO_TIMEOUT=400 /opt/b/ScaleBench --backends eventfd,kernel --counts 1000,10000,100000 --sockets --trials 300' ||
			INCOMPLETE+=("guest (kernel/test.sh failed; what ran is in bench-guest-$TAG.txt)")
	fi
	DURATIONS+=("guest $(since "$T") s")
	# The emulation in its own boot, 2 vCPUs like the kernel boot (the conformance test
	# run by kernel/test.sh needs 2: with 1 its SMP check is a skip, and --strict fails it).
	# With the guest kernel on SLUB (not tinyconfig's SLOB, whose first-fit search made
	# 100,000 masks take over 25 minutes) this boot takes about 5 minutes.
	T=$(now)
	log "QEMU guest: the emulation (pair, full) up to 100,000"
	if [ "$QUICK" = 1 ]; then
		run_guest "$RESULTS/bench-guest-emulation-$TAG.txt" 600 2 \
			'USERPROTO_TIMEOUT=500 /opt/b/ScaleBench --backends pair,full --counts 1000,10000 --sockets --trials 100' ||
			INCOMPLETE+=("guest, emulation (kernel/test.sh failed; what ran is in bench-guest-emulation-$TAG.txt)")
	else
		run_guest "$RESULTS/bench-guest-emulation-$TAG.txt" 1200 2 \
			'USERPROTO_TIMEOUT=1100 /opt/b/ScaleBench --backends pair,full --counts 1000,10000,100000 --sockets --trials 300' ||
			INCOMPLETE+=("guest, emulation (kernel/test.sh failed; what ran is in bench-guest-emulation-$TAG.txt)")
	fi
	DURATIONS+=("guest (emulation) $(since "$T") s")
else
	NOT_RUN+=("guest (--no-guest)")
fi

# ---- the run's facts
CAPEFF=$(awk '/^CapEff:/{print $2}' /proc/self/status)
{
	echo "tag: $TAG"
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC') (started $START)"
	echo "machine: $(uname -srm), $(nproc) vCPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "toolchain: $(swift --version 2>&1 | head -n 1), gcc $(gcc -dumpfullversion), release builds"
	echo "peers: NNG $(dpkg-query -W -f='${Version}' libnng-dev 2>/dev/null || echo '?') (libnng-dev), SwiftNIO $(grep -A6 '"identity" : "swift-nio"' Benchmarks/Package.resolved | grep -o '"version" : "[^"]*"' | cut -d'"' -f4), QEMU $(qemu-system-x86_64 --version 2>/dev/null | head -n1 | awk '{print $4}') TCG for the EFD_MASK guest (Linux 6.1.192)"
	echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' + uncommitted library changes')"
	echo "load before: $LOAD_BEFORE"
	echo "limits: ulimit -Hn $(ulimit -Hn), ulimit -Sn $(ulimit -Sn), fs.nr_open $(cat /proc/sys/fs/nr_open), CapEff $CAPEFF, CAP_SYS_RESOURCE $( (( 0x$CAPEFF >> 24 & 1 )) && echo yes || echo no)"
	echo "command: scripts/benchmarks.sh$ARGS"
	echo "durations: $(IFS=';'; echo "${DURATIONS[*]}" | sed 's/;/, /g'), total $(since "$T_ALL") s"
	echo "builds: $BUILD_STATE; release builds are the \"build\" duration; EFD_MASK guest kernel (kernel/test.sh): ${GUEST_KERNEL_BUILD:-not run}"
	for n in ${NOT_RUN[@]+"${NOT_RUN[@]}"}; do echo "not run: $n"; done
	for n in ${INCOMPLETE[@]+"${INCOMPLETE[@]}"}; do echo "incomplete: $n"; done
} >"$RESULTS/bench-run-$TAG.txt"

# ---- 6. the page
report --tag "$TAG"
log "done in $(since "$T_ALL") s: $PAGE"
