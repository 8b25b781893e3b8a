#!/usr/bin/env bash
# The bounded soak (docs/reliability.md#soak): builds userproto-soak in release, runs it for
# SECONDS, keeps its one-a-second samples, and fails when the process's resident memory or its
# open fd count grows past the bounds below, or when userproto-soak itself fails.
#
# usage: scripts/soak.sh [SECONDS]     (default 600; CI runs 60; at least 20)
#   SOAK_OUT=FILE    where the samples go (default .build/soak-samples.txt); the verdict is
#                    appended to the file as `# soak.sh:` lines
#   SOAK_PLOT=1      also draw the curve (scripts/soak_plot.py) to docs/soak.png, or to
#                    $SOAK_PLOT_OUT; matplotlib is installed with pip when missing, and if that
#                    fails an ASCII plot is printed instead (and no PNG written)
#   SOAK_REJUDGE=1   build and run nothing: judge (and plot) the samples already in $SOAK_OUT,
#                    taking userproto-soak's outcome from its `# result:` line
#
# What runs (Sources/UserProtoSoak): connection churn (a REQ socket per cycle dials a REP echo
# server over TCP or IPC, one request and reply, then closed, aborted or dropped), a publisher
# at 5,000 messages a second with a fast, a slow and a vanishing subscriber, and short and far
# loop timers scheduled and cancelled. Each second it prints
#   t=SECONDS rss_kb=VmRSS fds=OPEN_FDS churn=N pub_sent=N fast_recv=N slow_recv=N drops=N timers=N ...
# userproto-soak itself fails (exit 1) on a worker's unexpected error or stall, on a count that
# must hold (each timer ran or was cancelled, never both; the REP and PUB counted nothing
# impossible), and unless the fd count at the end, with every socket and loop closed, is exactly
# the count at the start.
#
# How growth is judged: the median of the last 25% of the samples against the median of the
# samples from 10% to 35% of the run. The first 10% is warm-up (allocator arenas, queues and
# kernel buffers filling to their bounds); medians, not single samples, so that one sample taken
# mid-burst (a churn socket open, a dropped socket not yet finished) moves nothing.
set -euo pipefail

# ---- the bounds
# RSS growth at most 16 MiB. Everything the soak keeps is bounded by design: the receive and
# send queues (256 KiB each by default, 16 KiB for the slow subscriber, 64 KiB per publisher
# pipe), one churn socket and one vanishing subscriber at a time, 256 far timers, 32 failure
# reasons per SP socket. What is left to move once those are full is the allocator (glibc keeps
# an arena per thread and does not return every freed page), a few MiB at most after warm-up.
# A leak does not stay under 16 MiB: 30,000 churn cycles between the two windows (a 60 s run
# makes more) leaking 600 bytes each cross it; soak.sh prints the per-cycle size this run could
# have caught.
RSS_GROWTH_BOUND_KB=$((16 * 1024))
# fd growth at most 8. A sample counts the fds in flight at that instant: the churn's REQ
# socket (its mask fd and its connection) and the echo server's side of it, the vanishing
# subscriber and the publisher's side of it, and dropped sockets whose abort the loop has not
# run yet: a few, and the median of a window smooths them. A leak of one fd per 1,000 cycles
# grows by dozens between the windows. userproto-soak also checks the exact count at the end.
FD_GROWTH_BOUND=8

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "soak.sh: $*" >&2; }

DURATION=${1:-600}
if ! [[ $DURATION =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 20 ] || [ "$DURATION" -gt 604800 ]; then
	echo "usage: scripts/soak.sh [SECONDS]   (20 to 604800; default 600)" >&2
	exit 2
fi
OUT=${SOAK_OUT:-.build/soak-samples.txt}
PLOT_OUT=${SOAK_PLOT_OUT:-docs/soak.png}
mkdir -p "$(dirname "$OUT")"

if [ "${SOAK_REJUDGE:-0}" = 1 ]; then
	[ -s "$OUT" ] || { log "SOAK_REJUDGE=1: no samples in $OUT"; exit 2; }
	sed -i '/^# soak\.sh: /d' "$OUT" # the previous verdict
	if grep -q '^# result: ok' "$OUT"; then status=0; else status=1; fi
else
	log "building userproto-soak (release)"
	swift build -c release --product userproto-soak
	BIN="$(swift build -c release --show-bin-path)/userproto-soak"

	log "running for $DURATION s; samples to $OUT"
	set +e
	# The teardown (graceful closes linger up to 5 s, the fd count settles up to 10 s) fits
	# well in the extra 120 s; past that the run is hung, and killed.
	timeout -k 10 $((DURATION + 120)) "$BIN" "$DURATION" | tee "$OUT"
	status=${PIPESTATUS[0]}
	set -e
fi

verdict() { # the line to stderr and to the samples file
	log "$*"
	echo "# soak.sh: $*" >>"$OUT"
}
failures=()
case $status in
0) ;;
124 | 137) failures+=("userproto-soak did not finish within $((DURATION + 120)) s (killed)") ;;
*) failures+=("userproto-soak exited $status (its error: lines say why)") ;;
esac

# The values of KEY on the sample lines, in order (t=0.000, taken before the workers start,
# is left out).
values() {
	awk -v key="$1" '/^t=/ && $1 != "t=0.000" {
		for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] }
	}' "$OUT"
}
# The median of the values on stdin from line FROM to line TO (1-based, inclusive).
median() {
	sed -n "$1,$2p" | sort -n | awk '{ v[NR] = $1 }
		END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

n=$(values rss_kb | wc -l)
early_from=$((n * 10 / 100 + 1))
early_to=$((n * 35 / 100))
late_from=$((n * 75 / 100 + 1))
late_to=$n
if [ "$n" -lt 20 ]; then
	failures+=("only $n samples: too few to judge growth")
else
	rss_early=$(values rss_kb | median "$early_from" "$early_to")
	rss_late=$(values rss_kb | median "$late_from" "$late_to")
	fds_early=$(values fds | median "$early_from" "$early_to")
	fds_late=$(values fds | median "$late_from" "$late_to")
	rss_growth=$((rss_late - rss_early))
	fds_growth=$((fds_late - fds_early))
	verdict "$n samples; windows: samples $early_from-$early_to and $late_from-$late_to"
	verdict "RSS: median $rss_early KiB, then $rss_late KiB: growth $rss_growth KiB (bound $RSS_GROWTH_BOUND_KB KiB)"
	verdict "fds: median $fds_early, then $fds_late: growth $fds_growth (bound $FD_GROWTH_BOUND)"
	[ "$rss_growth" -le "$RSS_GROWTH_BOUND_KB" ] || failures+=("RSS grew by $rss_growth KiB, over the bound of $RSS_GROWTH_BOUND_KB KiB")
	[ "$fds_growth" -le "$FD_GROWTH_BOUND" ] || failures+=("the fd count grew by $fds_growth, over the bound of $FD_GROWTH_BOUND")
	# The smallest leak per churn cycle the RSS bound would have caught in this run: the bound
	# over the cycles between the middles of the two windows.
	churn_early=$(values churn | sed -n "$(((early_from + early_to) / 2))p")
	churn_late=$(values churn | sed -n "$(((late_from + late_to) / 2))p")
	cycles=$((churn_late - churn_early))
	if [ "$cycles" -gt 0 ]; then
		verdict "churn: $cycles cycles between the windows' middles; a leak of $((RSS_GROWTH_BOUND_KB * 1024 / cycles)) bytes a cycle would cross the RSS bound"
	fi
fi
end=$(grep '^# end ' "$OUT" | tail -n 1 || true)
[ -z "$end" ] || verdict "totals: ${end#\# end }"
fds_end=$(grep '^# fds_start=' "$OUT" | tail -n 1 || true)
[ -z "$fds_end" ] || verdict "${fds_end#\# }"

if [ "${SOAK_PLOT:-0}" = 1 ]; then
	if python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib; then
		python3 scripts/soak_plot.py "$OUT" --png "$PLOT_OUT" --rss-bound-kb "$RSS_GROWTH_BOUND_KB" --fd-bound "$FD_GROWTH_BOUND"
		log "plot: $PLOT_OUT"
	else
		log "matplotlib is missing and pip could not install it: ASCII plot only, no $PLOT_OUT"
		python3 scripts/soak_plot.py "$OUT" --ascii --rss-bound-kb "$RSS_GROWTH_BOUND_KB" --fd-bound "$FD_GROWTH_BOUND"
	fi
fi

if [ ${#failures[@]} -gt 0 ]; then
	for f in "${failures[@]}"; do verdict "FAIL: $f"; done
	exit 1
fi
verdict "PASS"
