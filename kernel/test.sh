#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The one entry point for the kernel tests (CI calls this).
#
#  1. for each series, 6.1 and 6.12: builds (or takes from the cache) the
#     EFD_MASK-patched kernel (kernel/build.sh --version V), fetches Debian's
#     stock kernel (kernel/build.sh --stock --version V) and builds the
#     efd_mask module for it (kernel/module/build.sh --version V);
#  2. compiles the static guest programs (kernel/guest/*.c, gcc -static,
#     -Wall -Wextra -Werror);
#  3. boots each patched kernel: efd_mask_conformance --strict (all checks
#     must pass, none skipped) and the probe (must choose the kernel backend);
#  4. boots the stock 6.1 kernel: efd_mask_conformance --expect-fallback
#     --strict and the probe (must choose the fallback);
#  4b. boots each stock kernel with the efd_mask module: efd_mask_load
#     (finit_module, /dev/efd_mask 0666, unload refused while a mask fd is
#     open), efd_mask_conformance --device /dev/efd_mask --strict and the
#     probe (must choose the module);
#  5. prints the guests' summary lines and exits non-zero on any failure.
#     The last line is "kernel: N passed, M failed, K skipped; Swift: R suite
#     runs, T tests, F runs failed" (the guests' checks added up, plus one
#     failure per failed boot and per failed Swift suite run).
#
# usage: kernel/test.sh [options]
#   --guest-elf SRC[:DEST]    add a (dynamically linked) program and the shared
#                             libraries ldd finds for it to both guests
#   --guest-file SRC:DEST     add a file or directory to both guests
#   --guest-cmd 'LINE'        run LINE in the patched-kernel guests
#   --guest-cmd-stock 'LINE'  run LINE in the stock-kernel guest (no module)
#   --guest-cmd-module 'LINE' run LINE in the stock-kernel guests with the
#                             efd_mask module loaded
#   --no-stock                skip the stock-kernel boots (with and without
#                             the module)
#   --no-module               skip the stock-kernel boots with the module
#   --no-6.12                 only the 6.1 boots (default: 6.1 and 6.12)
#   --timeout SECS            hard limit per boot (default 180)
#   --mem MB                  guest memory (default 512; 2048 with a payload)
#   --smp N                   guest CPUs (default 2; the conformance test's
#                             SMP stress counts 1 CPU as a skip, which
#                             --strict turns into a failure)
#
# The same through the environment (lists are whitespace-separated, command
# lists newline-separated; arguments add to them):
#   USERPROTO_GUEST_ELF, USERPROTO_GUEST_FILES, USERPROTO_GUEST_CMDS,
#   USERPROTO_GUEST_CMDS_STOCK, USERPROTO_GUEST_CMDS_MODULE,
#   USERPROTO_GUEST_TIMEOUT, USERPROTO_GUEST_MEM,
#   USERPROTO_GUEST_SMP
# Other environment:
#   USERPROTO_KERNEL_OPTIONAL=1  when QEMU, the kernel source or the stock
#                                kernel cannot be installed, print
#                                "SKIPPED: <reason>" and exit 0.  Without it
#                                that is a failure (exit 1) whose message
#                                names the missing packages.
#   USERPROTO_KERNEL_OUT         logs and guest binaries (default
#                                ${TMPDIR:-/tmp}/userproto-kernel-test)
#   USERPROTO_KERNEL_CACHE       see kernel/build.sh
#   USERPROTO_QEMU_ACCEL         auto|tcg|kvm, see kernel/boot.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=test.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"

OUT=${USERPROTO_KERNEL_OUT:-${TMPDIR:-/tmp}/userproto-kernel-test}
TIMEOUT=${USERPROTO_GUEST_TIMEOUT:-180}
MEM=${USERPROTO_GUEST_MEM:-}
SMP=${USERPROTO_GUEST_SMP:-2}
STOCK=1
MODULE=1
SERIES=(6.1 6.12)
ELFS=()
FILES=()
CMDS=()
CMDS_STOCK=()
CMDS_MODULE=()
read -r -a ELFS <<<"${USERPROTO_GUEST_ELF:-}"
read -r -a FILES <<<"${USERPROTO_GUEST_FILES:-}"
if [ -n "${USERPROTO_GUEST_CMDS:-}" ]; then mapfile -t CMDS <<<"$USERPROTO_GUEST_CMDS"; fi
if [ -n "${USERPROTO_GUEST_CMDS_STOCK:-}" ]; then mapfile -t CMDS_STOCK <<<"$USERPROTO_GUEST_CMDS_STOCK"; fi
if [ -n "${USERPROTO_GUEST_CMDS_MODULE:-}" ]; then mapfile -t CMDS_MODULE <<<"$USERPROTO_GUEST_CMDS_MODULE"; fi

while [ $# -gt 0 ]; do
	case $1 in
	--guest-elf) ELFS+=("${2:?}"); shift 2 ;;
	--guest-file) FILES+=("${2:?}"); shift 2 ;;
	--guest-cmd) CMDS+=("${2:?}"); shift 2 ;;
	--guest-cmd-stock) CMDS_STOCK+=("${2:?}"); shift 2 ;;
	--guest-cmd-module) CMDS_MODULE+=("${2:?}"); shift 2 ;;
	--no-stock) STOCK=0; shift ;;
	--no-module) MODULE=0; shift ;;
	--no-6.12) SERIES=(6.1); shift ;;
	--timeout) TIMEOUT=${2:?}; shift 2 ;;
	--mem) MEM=${2:?}; shift 2 ;;
	--smp) SMP=${2:?}; shift 2 ;;
	-h | --help) sed -n '3,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
if [ -z "$MEM" ]; then
	if [ ${#ELFS[@]} -gt 0 ] || [ ${#FILES[@]} -gt 0 ]; then MEM=2048; else MEM=512; fi
fi

# Drop empty command lines (e.g. a trailing newline in the environment).
nonempty() { local l; for l in "$@"; do [ -n "${l//[[:space:]]/}" ] && printf '%s\n' "$l"; done; true; }
mapfile -t CMDS < <(nonempty ${CMDS[@]+"${CMDS[@]}"})
mapfile -t CMDS_STOCK < <(nonempty ${CMDS_STOCK[@]+"${CMDS_STOCK[@]}"})
mapfile -t CMDS_MODULE < <(nonempty ${CMDS_MODULE[@]+"${CMDS_MODULE[@]}"})
[ "$STOCK" = 1 ] || MODULE=0

# A prerequisite is missing.  The kernel tests are not optional unless the
# caller says so: fail, naming what is missing and how to skip deliberately.
skip_or_die() {
	if [ "${USERPROTO_KERNEL_OPTIONAL:-0}" = 1 ]; then
		echo "SKIPPED: kernel tests not run: $1"
		echo "kernel: SKIPPED (USERPROTO_KERNEL_OPTIONAL=1)"
		exit 0
	fi
	printf '%s: ERROR: %s\n' "$LOG_TAG" "$1" >&2
	printf '%s: ERROR: the kernel tests cannot run without it. Install it, or set USERPROTO_KERNEL_OPTIONAL=1 to skip the kernel tests deliberately (they then print SKIPPED and exit 0).\n' "$LOG_TAG" >&2
	exit 1
}

now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

T_ALL=$(now)
# bc is used for the timings above, before build.sh would install it.
try_ensure_pkgs bc qemu-system-x86 cpio gzip gcc libc6-dev ||
	skip_or_die "QEMU or the C toolchain for the guest programs: $PKG_FAILURE"
try_ensure_pkgs "${SERIES[@]/#/linux-source-}" build-essential flex bison bc libelf-dev libssl-dev dwarves xz-utils kmod ||
	skip_or_die "the kernel source or its build dependencies: $PKG_FAILURE"

rm -rf "$OUT"
mkdir -p "$OUT"
log "output directory: $OUT"

# 1. the kernels and the module, per series
declare -A IMG STOCK_IMG MODULE_KO T_BUILD T_STOCK_FETCH T_MODULE_BUILD
for v in "${SERIES[@]}"; do
	T=$(now)
	IMG[$v]=$("$HERE/build.sh" --version "$v" | tail -n 1) || die "building the patched $v kernel failed"
	T_BUILD[$v]=$(since "$T")
	log "patched $v kernel: ${IMG[$v]} (${T_BUILD[$v]} s)"
	if [ "$STOCK" = 1 ]; then
		T=$(now)
		if ! STOCK_IMG[$v]=$("$HERE/build.sh" --stock --version "$v" | tail -n 1); then
			skip_or_die "cannot fetch Debian's stock $v kernel (the linux-image-$v.*-amd64 package; see build.sh's message above), and none is cached"
		fi
		T_STOCK_FETCH[$v]=$(since "$T")
		log "stock $v kernel: ${STOCK_IMG[$v]} (${T_STOCK_FETCH[$v]} s)"
	fi
	if [ "$MODULE" = 1 ]; then
		T=$(now)
		MODULE_KO[$v]=$("$HERE/module/build.sh" --version "$v" | tail -n 1) ||
			die "building efd_mask.ko for the stock $v kernel failed"
		T_MODULE_BUILD[$v]=$(since "$T")
		log "efd_mask module for $v: ${MODULE_KO[$v]} (${T_MODULE_BUILD[$v]} s)"
	fi
done

# 2. the guest programs
for prog in init efd_mask_conformance efd_mask_load; do
	gcc -static -O2 -Wall -Wextra -Werror -o "$OUT/$prog" "$HERE/guest/$prog.c" ||
		die "compiling guest/$prog.c failed"
done

PAYLOAD=()
for e in ${ELFS[@]+"${ELFS[@]}"}; do PAYLOAD+=(--add-elf "$e"); done
for f in ${FILES[@]+"${FILES[@]}"}; do PAYLOAD+=(--add "$f"); done
COMMON=(--add "$OUT/efd_mask_conformance:/bin/efd_mask_conformance" --timeout "$TIMEOUT" --mem "$MEM" --smp "$SMP")

FAILED_BOOTS=0
BOOTS=()
declare -A BOOT_RESULT BOOT_TIME BOOT_LABEL

run_boot() {
	local name=$1 label=$2 img=$3
	shift 3
	local t rc=0
	BOOTS+=("$name")
	BOOT_LABEL[$name]=$label
	t=$(now)
	log "=== boot: $name ($label) ==="
	"$HERE/boot.sh" "$img" "$OUT/init" "${COMMON[@]}" ${PAYLOAD[@]+"${PAYLOAD[@]}"} "$@" \
		--log "$OUT/$name.log" >/dev/null || rc=$?
	BOOT_TIME[$name]=$(since "$t")
	if [ "$rc" = 0 ]; then
		BOOT_RESULT[$name]=PASS
	else
		BOOT_RESULT[$name]="FAIL (boot.sh status $rc)"
		FAILED_BOOTS=$((FAILED_BOOTS + 1))
	fi
}

# The 6.1 boots keep their old log names (patched.log, stock.log).
suffix() { [ "$1" = 6.1 ] || printf -- '-%s' "$1"; }

# " --no-memcg-v1" when the image's kernel config (the config file next to
# it, as build.sh leaves it) says CONFIG_MEMCG_V1 is not set: that kernel has
# no cgroup v1 memory controller, so the conformance test checks its absence
# instead of skipping the cgroup.event_control checks.
memcg_flag() {
	local cfg
	cfg=$(dirname "$1")/config
	[ -f "$cfg" ] || die "no kernel config next to $1"
	if grep -qx '# CONFIG_MEMCG_V1 is not set' "$cfg"; then printf ' --no-memcg-v1'; fi
}

for v in "${SERIES[@]}"; do
	# 3. patched kernel: the kernel backend must be in use
	PATCHED_TESTS=(--test "/bin/efd_mask_conformance --strict$(memcg_flag "${IMG[$v]}")"
		--test "/bin/efd_mask_conformance --probe --expect-kernel")
	for c in ${CMDS[@]+"${CMDS[@]}"}; do PATCHED_TESTS+=(--test "$c"); done
	run_boot "patched$(suffix "$v")" "patched $v kernel" "${IMG[$v]}" "${PATCHED_TESTS[@]}"

	# 4. stock kernel: the fallback must be detected (6.1 only: the module
	#    boot of each series shows the stock kernel's eventfd2 refusing EFD_MASK)
	if [ "$STOCK" = 1 ] && [ "$v" = 6.1 ]; then
		STOCK_TESTS=(--test "/bin/efd_mask_conformance --expect-fallback --strict$(memcg_flag "${STOCK_IMG[$v]}")"
			--test "/bin/efd_mask_conformance --probe --expect-fallback")
		for c in ${CMDS_STOCK[@]+"${CMDS_STOCK[@]}"}; do STOCK_TESTS+=(--test "$c"); done
		run_boot stock "stock $v kernel" "${STOCK_IMG[$v]}" "${STOCK_TESTS[@]}"
	fi

	# 4b. stock kernel with the efd_mask module: the module backend must be in use
	if [ "$MODULE" = 1 ]; then
		MODULE_TESTS=(--add "$OUT/efd_mask_load:/bin/efd_mask_load" --add "${MODULE_KO[$v]}:/lib/modules/efd_mask.ko"
			--test "/bin/efd_mask_load /lib/modules/efd_mask.ko"
			--test "/bin/efd_mask_conformance --device /dev/efd_mask --strict$(memcg_flag "${STOCK_IMG[$v]}")"
			--test "/bin/efd_mask_conformance --probe --device /dev/efd_mask --expect-module")
		for c in ${CMDS_MODULE[@]+"${CMDS_MODULE[@]}"}; do MODULE_TESTS+=(--test "$c"); done
		run_boot "stock$(suffix "$v")-module" "stock $v kernel + efd_mask module" "${STOCK_IMG[$v]}" "${MODULE_TESTS[@]}"
	fi
done

# 5. summary
PASSED=0 FAILED=0 SKIPPED=0 SWIFT_RUNS=0 SWIFT_TESTS=0 SWIFT_FAILED=0
SUMMARY_RE='^[A-Za-z][A-Za-z0-9_.-]*: [0-9]+ passed, [0-9]+ failed'
for name in "${BOOTS[@]}"; do
	echo "----- ${BOOT_LABEL[$name]}: ${BOOT_RESULT[$name]} in ${BOOT_TIME[$name]} s (log: $OUT/$name.log)"
	grep -a -E "^USERPROTO-GUEST-BEGIN:|^USERPROTO-PROBE:|^probe: |$SUMMARY_RE|^not ok |^USERPROTO-GUEST-EXIT:|^USERPROTO-GUEST-RESULT:|^init: [0-9]+ command|Test run with|backend in use|Suite \"(Kernel|Module) backend\"|^✘" \
		"$OUT/$name.log" || echo "(no guest output)"
	while read -r p f s; do
		PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) SKIPPED=$((SKIPPED + s))
	done < <(grep -E "$SUMMARY_RE" "$OUT/$name.log" |
		sed -E 's/^[^:]*: ([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?.*/\1 \2 \4/' |
		awk '{ print $1, $2, ($3 == "" ? 0 : $3) }')
	# Swift Testing's last line per suite run: "Test run with N tests in M
	# suites passed|failed ...".
	while read -r n verdict; do
		SWIFT_RUNS=$((SWIFT_RUNS + 1)) SWIFT_TESTS=$((SWIFT_TESTS + n))
		[ "$verdict" = passed ] || SWIFT_FAILED=$((SWIFT_FAILED + 1))
	done < <(grep -a -E 'Test run with [0-9]+ tests? in [0-9]+ suites? (passed|failed)' "$OUT/$name.log" |
		sed -E 's/.*Test run with ([0-9]+) tests? in [0-9]+ suites? (passed|failed).*/\1 \2/')
done
FAILED=$((FAILED + FAILED_BOOTS + SWIFT_FAILED))
TIMINGS=
for v in "${SERIES[@]}"; do
	TIMINGS+="$v: patched kernel build ${T_BUILD[$v]} s, stock kernel fetch ${T_STOCK_FETCH[$v]:-n/a} s, module build ${T_MODULE_BUILD[$v]:-n/a} s; "
done
for name in "${BOOTS[@]}"; do TIMINGS+="$name boot ${BOOT_TIME[$name]} s, "; done
echo "----- timings: ${TIMINGS}total $(since "$T_ALL") s"
if [ "$FAILED_BOOTS" -gt 0 ]; then
	echo "test.sh: $FAILED_BOOTS boot(s) failed; see the logs in $OUT"
fi
echo "kernel: $PASSED passed, $FAILED failed, $SKIPPED skipped; Swift: $SWIFT_RUNS suite runs, $SWIFT_TESTS tests, $SWIFT_FAILED runs failed"
[ "$FAILED_BOOTS" = 0 ] && [ "$FAILED" = 0 ]
